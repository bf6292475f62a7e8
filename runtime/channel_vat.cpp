#include "runtime/channel_vat.hpp"

#include <algorithm>
#include <cstring>

#include <capnp/serialize.h>

#include "runtime/buffered_stream.hpp"
#include "runtime/capnp_framing.hpp"
#include "runtime/log.hpp"

namespace shoal {

namespace {

using capnp::word;
namespace rpc = capnp::rpc;

/// capnp's own limit for a message an RPC peer may send (ReaderOptions' default).
constexpr uint64_t max_message_words = 8 * 1024 * 1024;

rpc::Exception::Type wire_type(kj::Exception::Type type) {
  switch (type) {
    case kj::Exception::Type::OVERLOADED: return rpc::Exception::Type::OVERLOADED;
    case kj::Exception::Type::DISCONNECTED: return rpc::Exception::Type::DISCONNECTED;
    case kj::Exception::Type::UNIMPLEMENTED: return rpc::Exception::Type::UNIMPLEMENTED;
    default: return rpc::Exception::Type::FAILED;
  }
}

kj::StringPtr name_of(rpc::Message::Which which) {
  switch (which) {
    case rpc::Message::RESOLVE: return "Resolve";
    case rpc::Message::RETURN: return "Return";
    case rpc::Message::DISEMBARGO: return "Disembargo";
    case rpc::Message::PROVIDE: return "Provide";
    case rpc::Message::ACCEPT: return "Accept";
    case rpc::Message::JOIN: return "Join";
    default: return "this kind of";
  }
}

} // namespace

channel_vat::channel_vat(kj::Own<buffered_stream> stream, capnp::Capability::Client bootstrap,
                         capnp::CapabilityServerSet<capnp::Capability>& servers)
  : stream_(kj::mv(stream)), bootstrap_(kj::mv(bootstrap)), servers_(servers) {
  in_.resize(2048);
}

channel_vat::~channel_vat() = default;

kj::Promise<void> channel_vat::run() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  done_ = kj::mv(paf.fulfiller);
  tasks_.add(read_more());
  return kj::mv(paf.promise);
}

// --- input ----------------------------------------------------------------------------------------

kj::Promise<void> channel_vat::read_more() {
  size_t have_words = in_bytes_ / sizeof(word);
  size_t need_words =
    have_words == 0 ? 1 : capnp::expectedSizeInWordsFromPrefix(kj::arrayPtr(in_.begin(), have_words));
  if (need_words > max_message_words) {
    abort(kj::str("a message of ", need_words * sizeof(word), " bytes is larger than the limit of ",
                  max_message_words * sizeof(word)));
    return kj::READY_NOW;
  }
  // Room for the rest of this message, or a good chunk of the next ones.
  size_t want_bytes = std::max(need_words * sizeof(word), in_bytes_ + 16384);
  if (in_.size() * sizeof(word) < want_bytes)
    in_.resize((want_bytes + sizeof(word) - 1) / sizeof(word));
  auto* bytes = reinterpret_cast<kj::byte*>(in_.begin());
  return stream_->tryRead(bytes + in_bytes_, 1, in_.size() * sizeof(word) - in_bytes_)
    .then([this](size_t n) -> kj::Promise<void> {
      if (n == 0) { // the peer closed
        end();
        return kj::READY_NOW;
      }
      in_bytes_ += n;
      handle_buffered();
      if (ended_)
        return kj::READY_NOW;
      return read_more();
    });
}

void channel_vat::handle_buffered() {
  size_t at = 0; // words consumed
  while (!ended_) {
    size_t have_words = (in_bytes_ - at * sizeof(word)) / sizeof(word);
    if (have_words == 0)
      break;
    auto rest = kj::arrayPtr(in_.begin() + at, have_words);
    size_t need_words = capnp::expectedSizeInWordsFromPrefix(rest);
    if (need_words > have_words)
      break;
    capnp::ReaderOptions options;
    options.traversalLimitInWords = max_message_words;
    {
      capnp::FlatArrayMessageReader reader(kj::arrayPtr(rest.begin(), need_words), options);
      KJ_IF_MAYBE (ex, kj::runCatchingExceptions([&] { handle(reader.getRoot<rpc::Message>()); })) {
        abort(kj::str("a message could not be handled: ", ex->getDescription()));
      }
    }
    at += need_words;
  }
  size_t left = in_bytes_ - at * sizeof(word);
  if (at > 0 && left > 0)
    std::memmove(in_.begin(), in_.begin() + at, left);
  in_bytes_ = left;
}

void channel_vat::handle(rpc::Message::Reader message) {
  switch (message.which()) {
    case rpc::Message::BOOTSTRAP: return on_bootstrap(message.getBootstrap());
    case rpc::Message::CALL: return on_call(message.getCall());
    case rpc::Message::FINISH: return on_finish(message.getFinish());
    case rpc::Message::RELEASE: return on_release(message.getRelease());
    case rpc::Message::UNIMPLEMENTED: return; // an echo of something we sent; nothing to undo
    case rpc::Message::ABORT:
      log::debug("channel_aborted_by_peer").kv("reason", message.getAbort().getReason().cStr());
      return end();
    default:
      return abort(kj::str("a thread channel does not take ", name_of(message.which()),
                           " messages; use an ordinary Cap'n Proto connection"));
  }
}

void channel_vat::on_bootstrap(rpc::Bootstrap::Reader bootstrap) {
  auto question = bootstrap.getQuestionId();
  send_results(question, [this](capnp::AnyPointer::Builder content) {
    content.setAs<capnp::Capability>(bootstrap_);
  });
  if (auto a = answer_exports_.find(question); a != answer_exports_.end() && !a->second.empty())
    bootstrap_answers_[question] = a->second.front();
}

void channel_vat::on_call(rpc::Call::Reader call) {
  auto question = call.getQuestionId();
  auto target = call.getTarget();
  export_entry* callee = nullptr;
  if (target.isImportedCap()) {
    if (auto e = exports_.find(target.getImportedCap()); e != exports_.end())
      callee = &e->second;
  } else {
    auto promised = target.getPromisedAnswer();
    auto b = bootstrap_answers_.find(promised.getQuestionId());
    if (b == bootstrap_answers_.end() || promised.getTransform().size() != 0)
      return abort("a thread channel may pipeline only on its Bootstrap");
    if (auto e = exports_.find(b->second); e != exports_.end())
      callee = &e->second;
  }
  if (callee == nullptr)
    return send_exception(question, KJ_EXCEPTION(FAILED, "the call's target capability was released"));
  auto params = call.getParams();
  if (params.getCapTable().size() != 0)
    return abort("a thread channel's calls may not carry capabilities");
  if (!call.getSendResultsTo().isCaller())
    return abort("a thread channel's results go to the caller only");

  auto interface_id = call.getInterfaceId();
  auto method_id = call.getMethodId();
  auto answer = [this, question](kj::Promise<direct_server::results_writer> results) {
    tasks_.add(results.then(
      [this, question](direct_server::results_writer write) {
        send_results(question, [&](capnp::AnyPointer::Builder content) { write(content); });
      },
      [this, question](kj::Exception&& ex) { send_exception(question, ex); }));
  };
  KJ_IF_MAYBE (ex, kj::runCatchingExceptions([&] {
                 if (callee->direct != nullptr) {
                   KJ_IF_MAYBE (started,
                                callee->direct->call_direct(interface_id, method_id, params.getContent())) {
                     return answer(kj::mv(*started));
                   }
                 }
                 auto size = params.getContent().targetSize();
                 auto request = callee->cap.typelessRequest(
                   interface_id, method_id, capnp::MessageSize{size.wordCount + 4, size.capCount});
                 request.set(params.getContent());
                 answer(request.send().then([](capnp::Response<capnp::AnyPointer>&& response) {
                   auto held = kj::heap(kj::mv(response));
                   return direct_server::results_writer(
                     [held = kj::mv(held)](capnp::AnyPointer::Builder content) { content.set(*held); });
                 }));
               })) {
    send_exception(question, *ex);
  }
}

void channel_vat::on_finish(rpc::Finish::Reader finish) {
  auto question = finish.getQuestionId();
  bootstrap_answers_.erase(question);
  auto a = answer_exports_.find(question);
  if (a == answer_exports_.end())
    return;
  if (finish.getReleaseResultCaps())
    for (auto id : a->second)
      release_export(id, 1);
  answer_exports_.erase(a);
}

void channel_vat::on_release(rpc::Release::Reader release) {
  release_export(release.getId(), release.getReferenceCount());
}

// --- exports --------------------------------------------------------------------------------------

uint32_t channel_vat::add_export(capnp::Capability::Client cap) {
  auto id = next_export_++;
  auto& entry = exports_.emplace(id, export_entry{kj::mv(cap), 1, nullptr}).first->second;
  tasks_.add(servers_.getLocalServer(entry.cap).then([this, id](kj::Maybe<capnp::Capability::Server&> server) {
    auto e = exports_.find(id);
    KJ_IF_MAYBE (s, server) {
      if (e != exports_.end())
        e->second.direct = dynamic_cast<direct_server*>(s);
    }
  }));
  return id;
}

void channel_vat::release_export(uint32_t id, uint32_t count) {
  auto e = exports_.find(id);
  if (e == exports_.end())
    return;
  if (e->second.refs <= count)
    exports_.erase(e);
  else
    e->second.refs -= count;
}

// --- output ---------------------------------------------------------------------------------------

void channel_vat::send_results(uint32_t question,
                               kj::FunctionParam<void(capnp::AnyPointer::Builder)> fill) {
  if (ended_)
    return;
  capnp::MallocMessageBuilder message;
  auto ret = message.initRoot<rpc::Message>().initReturn();
  ret.setAnswerId(question);
  auto payload = ret.initResults();
  capnp::BuilderCapabilityTable caps;
  fill(caps.imbue(payload.initContent()));
  auto table = caps.getTable();
  if (table.size() > 0) {
    auto out = payload.initCapTable(static_cast<unsigned>(table.size()));
    auto& ids = answer_exports_[question];
    for (unsigned i = 0; i < table.size(); ++i) {
      KJ_IF_MAYBE (hook, table[i]) {
        auto id = add_export(capnp::Capability::Client((*hook)->addRef()));
        out[i].setSenderHosted(id);
        ids.push_back(id);
      } else {
        out[i].setNone();
      }
    }
  }
  send(message);
}

void channel_vat::send_exception(uint32_t question, const kj::Exception& exception) {
  if (ended_)
    return;
  capnp::MallocMessageBuilder message;
  auto ret = message.initRoot<rpc::Message>().initReturn();
  ret.setAnswerId(question);
  auto e = ret.initException();
  e.setReason(exception.getDescription());
  e.setType(wire_type(exception.getType()));
  send(message);
}

void channel_vat::abort(kj::StringPtr why) {
  if (ended_)
    return;
  log::warn("channel_aborted").kv("reason", why.cStr());
  capnp::MallocMessageBuilder message;
  auto e = message.initRoot<rpc::Message>().initAbort();
  e.setReason(why);
  e.setType(rpc::Exception::Type::FAILED);
  send(message);
  ended_ = true;
  // The Abort leaves with the next flush; then the vat is done.
  tasks_.add(kj::evalLast([this] { return flush(); })
               .then([this] { return stream_->flushed(); })
               .then([this] { end(); }));
}

void channel_vat::send(capnp::MessageBuilder& message) {
  append_framed(out_, message);
  schedule_flush();
}

void channel_vat::schedule_flush() {
  if (flush_scheduled_ || writing_)
    return; // a running flush picks up what was appended
  flush_scheduled_ = true;
  tasks_.add(kj::evalLast([this] {
    flush_scheduled_ = false;
    return flush();
  }));
}

kj::Promise<void> channel_vat::flush() {
  if (writing_ || out_.empty())
    return kj::READY_NOW;
  writing_ = true;
  auto data = kj::heap<std::vector<uint8_t>>(std::move(out_));
  out_.clear();
  auto written = stream_->write(data->data(), data->size());
  return written.attach(kj::mv(data)).then([this]() -> kj::Promise<void> {
    writing_ = false;
    return flush();
  });
}

void channel_vat::task_errors::taskFailed(kj::Exception&& exception) {
  // A failed read or write: the connection is gone.
  log::debug("channel_closed").kv("error", exception.getDescription().cStr());
  vat_.end();
}

void channel_vat::end() {
  ended_ = true;
  if (done_ && done_->isWaiting())
    done_->fulfill();
}

} // namespace shoal
