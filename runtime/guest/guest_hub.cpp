#include "runtime/guest/guest_hub.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime/errc.hpp"
#include "runtime/log.hpp"

namespace shoal::guest {

namespace {

// epoll tags: 0 is the wakeup eventfd; a channel's listening socket is id*2, its connection id*2+1.
constexpr uint64_t wake_tag = 0;
uint64_t listen_tag(channel_id id) noexcept { return id << 1; }
uint64_t conn_tag(channel_id id) noexcept { return (id << 1) | 1; }

constexpr size_t read_chunk_bytes = 64 * 1024;
/// At most this many reads per channel per wakeup, so one busy guest cannot starve the others
/// (epoll is level-triggered: the rest is read on the next round).
constexpr int reads_per_wakeup = 16;
constexpr size_t max_iov = IOV_MAX < 1024 ? IOV_MAX : 1024;
constexpr int max_events = 64;

std::string errno_text(int e) { return std::error_code(e, std::generic_category()).message(); }

struct channel {
  channel_id id = 0;
  std::string path;  // the socket file, empty once removed
  dev_t file_dev = 0; // identity of the socket file we created, so we never remove another one
  ino_t file_ino = 0;
  int listen_fd = -1;
  int fd = -1;  // the accepted connection
  channel_handlers handlers;
  frame_decoder decoder;
  std::deque<std::string> out;  // encoded frames not fully written, oldest first
  size_t out_offset = 0;        // bytes of out.front() already written
  bool want_write = false;      // EPOLLOUT registered

  explicit channel(size_t max_payload_bytes) : decoder(max_payload_bytes) {}

  /// Removes the socket file if it is still the one this channel created.
  void remove_socket_file() {
    if (path.empty())
      return;
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && st.st_dev == file_dev && st.st_ino == file_ino)
      ::unlink(path.c_str());
    path.clear();
  }
};

struct command {
  enum class kind : uint8_t { add, send, close, stop };
  kind what = kind::send;
  channel_id id = 0;
  std::string data;            // send
  std::unique_ptr<channel> ch; // add
};

} // namespace

struct guest_hub::state {
  guest_hub_config cfg;
  int epfd = -1;
  int wakefd = -1;
  std::thread thread;
  std::mutex join_mu; // serializes concurrent stop() calls
  std::atomic<channel_id> next_id{1};

  std::mutex mu;
  std::vector<command> pending; // guarded by mu
  bool wake_pending = false;    // guarded by mu: an eventfd write is outstanding
  bool stopping = false;        // guarded by mu: no command is accepted any more

  std::atomic<uint64_t> frames_in{0}, frames_out{0}, bytes_in{0}, bytes_out{0},
    channels_open{0}, sends_dropped{0};

  // Hub thread only.
  std::unordered_map<channel_id, std::unique_ptr<channel>> channels;
  std::vector<channel_id> dirty; // channels with frames to write
  std::vector<command> taken;
  std::vector<char> read_buf = std::vector<char>(read_chunk_bytes);
  bool stop_requested = false;

  ~state() {
    if (epfd >= 0)
      ::close(epfd);
    if (wakefd >= 0)
      ::close(wakefd);
  }

  /// Enqueues `c`; false (and `c` untouched) once stopping.
  bool post(command& c) {
    bool wake = false;
    {
      std::lock_guard<std::mutex> guard{mu};
      if (stopping)
        return false;
      if (c.what == command::kind::stop)
        stopping = true;
      pending.push_back(std::move(c));
      if (!wake_pending) {
        wake_pending = true;
        wake = true;
      }
    }
    if (wake) {
      uint64_t one = 1;
      // The counter cannot overflow (at most one write per drain), so this cannot fail.
      [[maybe_unused]] auto n = ::write(wakefd, &one, sizeof one);
    }
    return true;
  }

  void run() {
    pthread_setname_np(pthread_self(), "shoal-guesthub");
    epoll_event events[max_events];
    while (!stop_requested) {
      int n = epoll_wait(epfd, events, max_events, -1);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        auto err = make_error(errc::internal, "guest hub: epoll_wait failed: " + errno_text(errno));
        log::error("guest_hub_failed").kv("error", message_of(err));
        close_all(&err);
        return;
      }
      for (int i = 0; i < n; ++i)
        dispatch(events[i]);
      flush_dirty();
    }
    close_all(nullptr);
  }

  void dispatch(const epoll_event& ev) {
    uint64_t tag = ev.data.u64;
    if (tag == wake_tag) {
      uint64_t count;
      [[maybe_unused]] auto r = ::read(wakefd, &count, sizeof count);
      {
        std::lock_guard<std::mutex> guard{mu};
        taken.swap(pending);
        wake_pending = false;
      }
      for (auto& c : taken)
        apply(c);
      taken.clear();
      return;
    }
    channel_id id = tag >> 1;
    auto it = channels.find(id);
    if (it == channels.end())
      return; // torn down earlier in this round
    channel& c = *it->second;
    if ((tag & 1) == 0) {
      if (c.listen_fd >= 0)
        accept_one(c);
      return;
    }
    if (c.fd < 0)
      return;
    if (ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
      if (!read_some(c))
        return; // channel gone
    }
    if (ev.events & EPOLLOUT) {
      if (auto err = flush(c))
        teardown(id, &err);
    }
  }

  void apply(command& cmd) {
    switch (cmd.what) {
      case command::kind::add: {
        channel_id id = cmd.ch->id;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = listen_tag(id);
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, cmd.ch->listen_fd, &ev) != 0) {
          auto err = make_error(errc::unavailable, "guest hub cannot watch " + cmd.ch->path + ": "
                                                     + errno_text(errno));
          channels.emplace(id, std::move(cmd.ch));
          teardown(id, &err);
          return;
        }
        channels.emplace(id, std::move(cmd.ch));
        return;
      }
      case command::kind::send: {
        auto it = channels.find(cmd.id);
        if (it == channels.end()) {
          sends_dropped.fetch_add(1, std::memory_order_relaxed);
          return;
        }
        channel& c = *it->second;
        bool was_empty = c.out.empty();
        c.out.push_back(std::move(cmd.data));
        if (was_empty && c.fd >= 0 && !c.want_write)
          dirty.push_back(c.id);
        return;
      }
      case command::kind::close: {
        auto it = channels.find(cmd.id);
        if (it == channels.end())
          return;
        if (it->second->fd >= 0) {
          // Deliberately ignored: closing anyway, a failed last write changes nothing.
          [[maybe_unused]] auto err = flush(*it->second);
        }
        teardown(cmd.id, nullptr);
        return;
      }
      case command::kind::stop:
        stop_requested = true;
        return;
    }
  }

  void accept_one(channel& c) {
    int fd = ::accept4(c.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
        return;
      auto err = make_error(errc::unavailable,
                            "accepting on guest socket " + c.path + " failed: " + errno_text(errno));
      teardown(c.id, &err);
      return;
    }
    // Exactly one connection per channel: nobody else may connect after the guest.
    ::close(c.listen_fd);
    c.listen_fd = -1;
    c.remove_socket_file();
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = conn_tag(c.id);
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      auto err = make_error(errc::unavailable,
                            "guest hub cannot watch a guest connection: " + errno_text(errno));
      teardown(c.id, &err);
      return;
    }
    c.fd = fd;
    if (!c.out.empty())
      dirty.push_back(c.id);
  }

  /// Reads what is there and delivers complete frames; false if the channel was torn down.
  bool read_some(channel& c) {
    channel_id id = c.id;
    for (int i = 0; i < reads_per_wakeup; ++i) {
      ssize_t r = ::read(c.fd, read_buf.data(), read_buf.size());
      if (r < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          return true;
        auto err = make_error(errc::unavailable,
                              "reading from the guest channel failed: " + errno_text(errno));
        teardown(id, &err);
        return false;
      }
      if (r == 0) {
        std::string msg = "the guest closed its channel";
        if (c.decoder.buffered_bytes() > 0)
          msg += " in the middle of a frame (" + std::to_string(c.decoder.buffered_bytes())
                 + " bytes of it received)";
        auto err = make_error(errc::unavailable, std::move(msg));
        teardown(id, &err);
        return false;
      }
      bytes_in.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
      c.decoder.feed(read_buf.data(), static_cast<size_t>(r));
      if (!deliver(c))
        return false;
      if (static_cast<size_t>(r) < read_buf.size())
        return true; // drained; level-triggered epoll reports anything that arrives later
    }
    return true;
  }

  bool deliver(channel& c) {
    for (;;) {
      auto next = c.decoder.next();
      if (!next) {
        auto err = next.error();
        teardown(c.id, &err);
        return false;
      }
      if (!*next)
        return true;
      frame& f = **next;
      if (!sent_by_guest(type_of(f))) {
        auto err = make_error(errc::invalid_argument,
                              "the guest sent " + std::string{to_string(type_of(f))}
                                + ", a frame only the supervisor sends");
        teardown(c.id, &err);
        return false;
      }
      frames_in.fetch_add(1, std::memory_order_relaxed);
      if (c.handlers.on_frame)
        c.handlers.on_frame(c.id, std::move(f));
    }
  }

  /// Writes as much of `c.out` as the socket takes, many frames per sendmsg.
  [[nodiscard]] caf::error flush(channel& c) {
    iovec iov[max_iov];
    while (!c.out.empty()) {
      size_t k = 0;
      for (auto it = c.out.begin(); it != c.out.end() && k < max_iov; ++it, ++k) {
        size_t off = k == 0 ? c.out_offset : 0;
        iov[k].iov_base = const_cast<char*>(it->data() + off);
        iov[k].iov_len = it->size() - off;
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = k;
      ssize_t w = ::sendmsg(c.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          watch_writable(c, true);
          return {};
        }
        return make_error(errc::unavailable,
                          "writing to the guest channel failed: " + errno_text(errno));
      }
      bytes_out.fetch_add(static_cast<uint64_t>(w), std::memory_order_relaxed);
      auto left = static_cast<size_t>(w);
      while (!c.out.empty() && left >= c.out.front().size() - c.out_offset) {
        left -= c.out.front().size() - c.out_offset;
        c.out.pop_front();
        c.out_offset = 0;
        frames_out.fetch_add(1, std::memory_order_relaxed);
      }
      c.out_offset += left;
    }
    watch_writable(c, false);
    return {};
  }

  void watch_writable(channel& c, bool on) {
    if (c.want_write == on)
      return;
    epoll_event ev{};
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
    ev.data.u64 = conn_tag(c.id);
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c.fd, &ev) == 0)
      c.want_write = on;
  }

  void flush_dirty() {
    for (size_t i = 0; i < dirty.size(); ++i) {
      auto it = channels.find(dirty[i]);
      if (it == channels.end() || it->second->fd < 0)
        continue;
      if (auto err = flush(*it->second))
        teardown(dirty[i], &err);
    }
    dirty.clear();
  }

  /// Closes the channel's sockets, removes its socket file, forgets it; then, if `reason`,
  /// tells its owner.
  void teardown(channel_id id, caf::error* reason) {
    auto it = channels.find(id);
    if (it == channels.end())
      return;
    auto ch = std::move(it->second);
    channels.erase(it);
    if (ch->listen_fd >= 0)
      ::close(ch->listen_fd); // closing also removes it from the epoll set
    if (ch->fd >= 0)
      ::close(ch->fd);
    ch->remove_socket_file();
    channels_open.fetch_sub(1, std::memory_order_relaxed);
    if (reason && ch->handlers.on_closed)
      ch->handlers.on_closed(id, std::move(*reason));
  }

  void close_all(caf::error* reason) {
    std::vector<channel_id> ids;
    ids.reserve(channels.size());
    for (auto& [id, ch] : channels) {
      ids.push_back(id);
      if (ch->fd >= 0) {
        // Deliberately ignored: the hub is going away, a failed last write changes nothing.
        [[maybe_unused]] auto err = flush(*ch);
      }
    }
    for (auto id : ids) {
      if (reason) {
        caf::error copy = *reason;
        teardown(id, &copy);
      } else {
        teardown(id, nullptr);
      }
    }
    // Anything posted after the stop command is dropped; adds own sockets that must go.
    std::lock_guard<std::mutex> guard{mu};
    stopping = true;
    for (auto& c : pending) {
      if (c.what == command::kind::add) {
        ::close(c.ch->listen_fd);
        c.ch->remove_socket_file();
        channels_open.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    pending.clear();
  }
};

guest_hub::guest_hub(std::unique_ptr<state> st) : state_(std::move(st)) {}

guest_hub::~guest_hub() { stop(); }

caf::expected<std::unique_ptr<guest_hub>> guest_hub::start(guest_hub_config cfg) {
  auto st = std::make_unique<state>();
  st->cfg = cfg;
  st->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (st->epfd < 0)
    return make_error(errc::unavailable, "guest hub: epoll_create1 failed: " + errno_text(errno));
  st->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (st->wakefd < 0)
    return make_error(errc::unavailable, "guest hub: eventfd failed: " + errno_text(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = wake_tag;
  if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, st->wakefd, &ev) != 0)
    return make_error(errc::unavailable, "guest hub: epoll_ctl failed: " + errno_text(errno));
  state* raw = st.get();
  st->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<guest_hub>(new guest_hub(std::move(st)));
}

caf::expected<channel_id> guest_hub::listen(const std::string& path, channel_handlers handlers) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    return make_error(errc::invalid_argument,
                      "guest socket path '" + path + "' is " + std::to_string(path.size())
                        + " bytes; a Unix socket path holds 1 to "
                        + std::to_string(sizeof addr.sun_path - 1));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());

  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return make_error(errc::already_exists,
                        "cannot create guest socket " + path + ": a file that is not a socket is there");
    ::unlink(path.c_str()); // a stale socket from an earlier run
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return make_error(errc::unavailable, "cannot create guest socket: " + errno_text(errno));
  auto fail = [&](const char* what) {
    auto err = make_error(errc::unavailable, std::string{"cannot "} + what + " guest socket "
                                               + path + ": " + errno_text(errno));
    ::close(fd);
    return err;
  };
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return fail("bind");
  if (::chmod(path.c_str(), static_cast<mode_t>(state_->cfg.socket_mode)) != 0) {
    auto err = fail("chmod");
    ::unlink(path.c_str());
    return err;
  }
  if (::listen(fd, 1) != 0) {
    auto err = fail("listen on");
    ::unlink(path.c_str());
    return err;
  }

  if (::lstat(path.c_str(), &st) != 0) {
    auto err = fail("stat");
    ::unlink(path.c_str());
    return err;
  }
  auto ch = std::make_unique<channel>(state_->cfg.max_payload_bytes);
  ch->id = state_->next_id.fetch_add(1, std::memory_order_relaxed);
  ch->path = path;
  ch->file_dev = st.st_dev;
  ch->file_ino = st.st_ino;
  ch->listen_fd = fd;
  ch->handlers = std::move(handlers);
  channel_id id = ch->id;
  state_->channels_open.fetch_add(1, std::memory_order_relaxed);
  command cmd;
  cmd.what = command::kind::add;
  cmd.ch = std::move(ch);
  if (!state_->post(cmd)) {
    state_->channels_open.fetch_sub(1, std::memory_order_relaxed);
    ::close(fd);
    cmd.ch->remove_socket_file();
    return make_error(errc::unavailable, "the guest hub is stopped");
  }
  return id;
}

void guest_hub::send(channel_id id, std::string encoded) {
  if (encoded.empty())
    return;
  command cmd;
  cmd.what = command::kind::send;
  cmd.id = id;
  cmd.data = std::move(encoded);
  if (!state_->post(cmd))
    state_->sends_dropped.fetch_add(1, std::memory_order_relaxed);
}

void guest_hub::close(channel_id id) {
  command cmd;
  cmd.what = command::kind::close;
  cmd.id = id;
  // Deliberately ignored: after stop every channel is closed already.
  [[maybe_unused]] bool posted = state_->post(cmd);
}

void guest_hub::stop() {
  if (!state_)
    return;
  command cmd;
  cmd.what = command::kind::stop;
  // Deliberately ignored: false means another stop() was first; joining below is still right.
  [[maybe_unused]] bool posted = state_->post(cmd);
  std::lock_guard<std::mutex> guard{state_->join_mu};
  if (state_->thread.joinable() && state_->thread.get_id() != std::this_thread::get_id())
    state_->thread.join();
}

guest_hub_counters guest_hub::counters() const noexcept {
  guest_hub_counters out;
  out.frames_in = state_->frames_in.load(std::memory_order_relaxed);
  out.frames_out = state_->frames_out.load(std::memory_order_relaxed);
  out.bytes_in = state_->bytes_in.load(std::memory_order_relaxed);
  out.bytes_out = state_->bytes_out.load(std::memory_order_relaxed);
  out.channels_open = state_->channels_open.load(std::memory_order_relaxed);
  out.sends_dropped = state_->sends_dropped.load(std::memory_order_relaxed);
  return out;
}

} // namespace shoal::guest
