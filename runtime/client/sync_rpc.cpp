#include "runtime/client/sync_rpc.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime/capnp_framing.hpp"
#include "runtime/channel_preface.hpp"
#include "schema/gateway.capnp.h"

namespace shoal::client {

namespace {

using capnp::word;
namespace rpc = capnp::rpc;

[[noreturn]] void fail(kj::Exception::Type type, std::string text) {
  throw kj::Exception(type, __FILE__, __LINE__, kj::heapString(text.c_str()));
}

/// What kj's RpcSystem makes of a remote exception, so callers translate both alike.
[[noreturn]] void remote_failure(rpc::Exception::Reader e) {
  auto type = kj::Exception::Type::FAILED;
  switch (e.getType()) {
    case rpc::Exception::Type::OVERLOADED: type = kj::Exception::Type::OVERLOADED; break;
    case rpc::Exception::Type::DISCONNECTED: type = kj::Exception::Type::DISCONNECTED; break;
    case rpc::Exception::Type::UNIMPLEMENTED: type = kj::Exception::Type::UNIMPLEMENTED; break;
    default: break;
  }
  throw kj::Exception(type, "(remote)", 0, kj::str("remote exception: ", e.getReason()));
}

std::string errno_text(int err) {
  char buf[128];
  return ::strerror_r(err, buf, sizeof buf);
}

/// Waits for `events` on `fd` until `deadline`; false on timeout.
bool wait_for(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0)
      return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0)
      return true;
    if (n < 0 && errno != EINTR)
      return false;
  }
}

/// A connected, blocking stream socket to `address`; throws DISCONNECTED.
int connect_to(const std::string& address, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto try_connect = [&](int family, const sockaddr* sa, socklen_t len) -> int {
    int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
      return -1;
    int rc = ::connect(fd, sa, len);
    if (rc < 0 && errno == EINPROGRESS && wait_for(fd, POLLOUT, deadline)) {
      int err = 0;
      socklen_t n = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &n);
      rc = err == 0 ? 0 : -1;
    }
    if (rc < 0) {
      ::close(fd);
      return -1;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    if (family != AF_UNIX) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
  };
  if (address.rfind("unix:", 0) == 0) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    auto path = address.substr(5);
    if (path.size() >= sizeof sa.sun_path)
      fail(kj::Exception::Type::FAILED, "unix socket path too long: " + path);
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    int fd = try_connect(AF_UNIX, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    if (fd < 0)
      fail(kj::Exception::Type::DISCONNECTED, "connect(" + address + "): " + errno_text(errno));
    return fd;
  }
  auto colon = address.rfind(':');
  if (colon == std::string::npos)
    fail(kj::Exception::Type::FAILED, "address without a port: " + address);
  auto host = address.substr(0, colon);
  auto port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0)
    fail(kj::Exception::Type::FAILED, "cannot resolve " + address + ": " + ::gai_strerror(rc));
  int fd = -1;
  int err = 0;
  for (auto* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = try_connect(a->ai_family, a->ai_addr, a->ai_addrlen);
    err = errno;
  }
  ::freeaddrinfo(found);
  if (fd < 0)
    fail(kj::Exception::Type::DISCONNECTED, "connect(" + address + "): " + errno_text(err));
  return fd;
}

std::atomic<int> pollers{0};

} // namespace

// --- reply_poll -----------------------------------------------------------------------------------

int64_t reply_poll::budget_ns() const noexcept {
  if (limit_ns_ <= 0 || typical_ns_ > limit_ns_)
    return 0;
  if (typical_ns_ == 0)
    return limit_ns_; // no reply yet: assume a quick one
  return std::min(limit_ns_, 2 * typical_ns_);
}

void reply_poll::replied(int64_t waited_ns) noexcept {
  // One long wait (a blocking get) counts as a few limits, so quick replies win back polling soon.
  auto sample = std::min(std::max<int64_t>(waited_ns, 1), 4 * std::max<int64_t>(limit_ns_, 1));
  typical_ns_ = typical_ns_ == 0 ? sample : typical_ns_ + (sample - typical_ns_) / 4;
}

int reply_poll::slots() noexcept {
  // None on a single core: the server needs that core to answer.
  static const int n = static_cast<int>(std::thread::hardware_concurrency() / 2);
  return n;
}

bool reply_poll::try_enter() noexcept {
  int now = pollers.load(std::memory_order_relaxed);
  while (now < slots())
    if (pollers.compare_exchange_weak(now, now + 1, std::memory_order_acquire))
      return true;
  return false;
}

void reply_poll::leave() noexcept { pollers.fetch_sub(1, std::memory_order_release); }

// --- sync_rpc -------------------------------------------------------------------------------------

sync_rpc::sync_rpc(const std::string& address, const std::string& token,
                   const std::string& client_version, const std::string& environment,
                   std::chrono::milliseconds timeout, std::chrono::microseconds reply_poll_limit)
  : poll_(reply_poll_limit) {
  fd_ = connect_to(address, timeout);
  try {
    handshake(token, client_version, environment, timeout, true);
  } catch (const kj::Exception& ex) {
    ::close(fd_);
    fd_ = -1;
    if (ex.getType() != kj::Exception::Type::DISCONNECTED && !aborted_)
      throw;
    // A server that does not know the preface aborts or closes at once: speak plain capnp to it.
    aborted_ = false;
    next_question_ = 0;
    finish_pending_ = -1;
    caps_ = {};
    out_.clear();
    reader_.reset();
    in_bytes_ = 0;
    consumed_words_ = 0;
    fd_ = connect_to(address, timeout);
    try {
      handshake(token, client_version, environment, timeout, false);
    } catch (...) {
      ::close(fd_);
      fd_ = -1;
      throw;
    }
  }
}

void sync_rpc::handshake(const std::string& token, const std::string& client_version,
                         const std::string& environment, std::chrono::milliseconds timeout,
                         bool preface) {
  // The handshake must not hang on a server that accepts but does not answer.
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  if (preface) // shoald serves this connection with its channel_vat
    out_.insert(out_.end(), channel_preface, channel_preface + channel_preface_size);
  // Bootstrap, with authenticate pipelined on its answer.
  uint32_t bootstrap = next_question_++;
  {
    capnp::MallocMessageBuilder message(scratch_span());
    message.initRoot<rpc::Message>().initBootstrap().setQuestionId(bootstrap);
    queue_message(message);
  }
  uint32_t auth = next_question_++;
  {
    capnp::MallocMessageBuilder message(scratch_span());
    auto call = message.initRoot<rpc::Message>().initCall();
    call.setQuestionId(auth);
    call.initTarget().initPromisedAnswer().setQuestionId(bootstrap);
    call.setInterfaceId(capnp::typeId<wire::Gateway>());
    call.setMethodId(0); // authenticate @0
    auto p = call.initParams().initContent().initAs<wire::Gateway::AuthenticateParams>();
    p.setToken(token);
    p.setClientVersion(client_version);
    p.setEnvironment(environment);
    queue_message(message);
  }
  flush();
  (void)await_return(bootstrap);
  queue_finish(bootstrap, true); // the Gateway is not needed again
  auto auth_results = await_return(auth);
  (void)auth_results;
  caps_.session = only_cap(reader_->getRoot<rpc::Message>().getReturn().getResults(), "session");
  queue_finish(auth, false); // keep the Session imported for the connection's life

  caps_.queues = call<wire::Session::QueuesParams, wire::Session::QueuesResults>(
    caps_.session, capnp::typeId<wire::Session>(), 7 /* queues @7 */, [](auto) {},
    [this](auto) {
      return only_cap(reader_->getRoot<rpc::Message>().getReturn().getResults(), "queues");
    });
  // Keep the Queues capability: its Finish (sent with the next call) must not release it.
  finish_pending_ = -1;
  queue_finish(next_question_ - 1, false);

  timeval none{0, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
}

sync_rpc::~sync_rpc() {
  if (fd_ >= 0)
    ::close(fd_); // the server drops this connection's session and imports with it
}

void sync_rpc::queue_message(capnp::MessageBuilder& message) { append_framed(out_, message); }

void sync_rpc::queue_finish(uint32_t question, bool release_result_caps) {
  capnp::MallocMessageBuilder message(scratch_span());
  auto finish = message.initRoot<rpc::Message>().initFinish();
  finish.setQuestionId(question);
  finish.setReleaseResultCaps(release_result_caps);
  queue_message(message);
}

void sync_rpc::flush() {
  size_t sent = 0;
  while (sent < out_.size()) {
    auto n = ::send(fd_, out_.data() + sent, out_.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      lost("send", errno);
    }
    sent += static_cast<size_t>(n);
  }
  out_.clear();
}

capnp::AnyPointer::Reader sync_rpc::await_return(uint32_t question) {
  for (;;) {
    // Drop the message handed out last time.
    if (consumed_words_ > 0) {
      reader_.reset();
      size_t rest = in_bytes_ - consumed_words_ * sizeof(word);
      if (rest > 0)
        std::memmove(in_.data(), in_.data() + consumed_words_, rest);
      in_bytes_ = rest;
      consumed_words_ = 0;
    }
    size_t have_words = in_bytes_ / sizeof(word);
    size_t need_words = have_words == 0
                          ? 1
                          : capnp::expectedSizeInWordsFromPrefix(kj::arrayPtr(in_.data(), have_words));
    if (have_words >= need_words && have_words > 0) {
      capnp::ReaderOptions options;
      options.traversalLimitInWords = uint64_t{1} << 30;
      reader_.emplace(kj::arrayPtr(in_.data(), need_words), options);
      consumed_words_ = need_words;
      auto message = reader_->getRoot<rpc::Message>();
      if (message.isReturn() && message.getReturn().getAnswerId() == question) {
        auto ret = message.getReturn();
        switch (ret.which()) {
          case rpc::Return::RESULTS:
            return ret.getResults().getContent();
          case rpc::Return::EXCEPTION:
            remote_failure(ret.getException());
          default:
            fail(kj::Exception::Type::FAILED, "unexpected kind of return from the server");
        }
      }
      handle_other(message);
      flush(); // answers handle_other queued (a Release, an Unimplemented)
      continue;
    }
    // Room for at least the rest of this message (or a good chunk of the next ones).
    size_t want_bytes = std::max(need_words * sizeof(word), in_bytes_ + 16384);
    if (in_.size() * sizeof(word) < want_bytes)
      in_.resize((want_bytes + sizeof(word) - 1) / sizeof(word));
    auto* bytes = reinterpret_cast<char*>(in_.data());
    auto n = receive(bytes + in_bytes_, in_.size() * sizeof(word) - in_bytes_);
    if (n > 0) {
      in_bytes_ += static_cast<size_t>(n);
      continue;
    }
    if (n == 0)
      fail(kj::Exception::Type::DISCONNECTED, "the server closed the connection");
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      fail(kj::Exception::Type::DISCONNECTED, "the server did not answer the handshake in time");
    lost("recv", errno);
  }
}

long sync_rpc::receive(void* into, size_t size) {
  if (poll_until_ns_ != 0) {
    if (reply_poll::try_enter()) {
      long n;
      do {
        n = ::recv(fd_, into, size, MSG_DONTWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
          break;
      } while (steady_ns() < poll_until_ns_);
      reply_poll::leave();
      if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        return n;
    }
    poll_until_ns_ = 0; // the rest of this wait sleeps
  }
  return ::recv(fd_, into, size, 0);
}

void sync_rpc::handle_other(rpc::Message::Reader message) {
  switch (message.which()) {
    case rpc::Message::ABORT:
      aborted_ = true;
      remote_failure(message.getAbort());
    case rpc::Message::UNIMPLEMENTED:
      fail(kj::Exception::Type::FAILED, "the server does not implement a message this client sent");
    case rpc::Message::RESOLVE: {
      // A promise we imported resolved. We keep calling the promise (the server forwards), so
      // release a capability the resolution gave us.
      auto r = message.getResolve();
      if (r.isCap()) {
        auto cap = r.getCap();
        if (cap.isSenderHosted() || cap.isSenderPromise()) {
          capnp::MallocMessageBuilder out(scratch_span());
          auto release = out.initRoot<rpc::Message>().initRelease();
          release.setId(cap.isSenderHosted() ? cap.getSenderHosted() : cap.getSenderPromise());
          release.setReferenceCount(1);
          queue_message(out);
        }
      }
      return;
    }
    case rpc::Message::CALL:
    case rpc::Message::BOOTSTRAP: {
      // This client exports nothing.
      capnp::MallocMessageBuilder out;
      out.initRoot<rpc::Message>().setUnimplemented(message);
      queue_message(out);
      return;
    }
    default:
      return; // Return of an earlier question, Release, Finish, Disembargo: nothing to do.
  }
}

uint32_t sync_rpc::only_cap(rpc::Payload::Reader payload, const char* what) {
  auto table = payload.getCapTable();
  if (table.size() != 1)
    fail(kj::Exception::Type::FAILED, std::string{"the server's answer has no "} + what);
  auto cap = table[0];
  if (cap.isSenderHosted())
    return cap.getSenderHosted();
  if (cap.isSenderPromise())
    return cap.getSenderPromise();
  fail(kj::Exception::Type::FAILED, std::string{"unsupported capability kind for "} + what);
}

void sync_rpc::lost(const char* doing, int err) {
  fail(kj::Exception::Type::DISCONNECTED, std::string{doing} + ": " + errno_text(err));
}

} // namespace shoal::client
