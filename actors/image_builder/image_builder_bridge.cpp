#include "actors/image_builder/image_builder_bridge.hpp"

#include <atomic>
#include <chrono>
#include <memory>

#include <caf/actor_system.hpp>

#include "runtime/kj_bridge.hpp"
#include "runtime/kj_mailbox.hpp"
#include "runtime/log.hpp"
#include "schema/images.capnp.h"

namespace shoal::images {

namespace {

/// Builds may take as long as a debootstrap or a large pip install.
constexpr auto build_timeout = std::chrono::hours{6};
/// A collection waits for running builds, then may move gigabytes of chunks.
constexpr auto gc_timeout = std::chrono::hours{6};

wire::StepStatus to_wire(step_status s) {
  switch (s) {
    case step_status::cached: return wire::StepStatus::CACHED;
    case step_status::building: return wire::StepStatus::BUILDING;
    case step_status::built: return wire::StepStatus::BUILT;
    case step_status::failed: return wire::StepStatus::FAILED;
  }
  return wire::StepStatus::FAILED;
}

void fill(wire::StepResult::Builder out, const step_result& r) {
  out.setIndex(r.index);
  out.setImageId(r.image_id);
  out.setStatus(to_wire(r.status));
  out.setReason(r.reason);
  out.setDurationMs(r.duration_ms);
  out.setLayerBytes(r.layer_bytes);
}

void fill(wire::ImageInfo::Builder out, const image_record& rec) {
  out.setImageId(rec.id);
  out.setParentId(rec.parent);
  out.setStep(rec.label.empty() ? rec.kind : rec.label);
  out.setCreatedAtMs(rec.created_at_ms);
  auto layers = out.initLayers(static_cast<unsigned>(rec.layers.size()));
  for (unsigned i = 0; i < rec.layers.size(); ++i)
    layers.set(i, rec.layers[i]);
  out.setContentBytes(rec.content_bytes);
  auto env = out.initEnv(static_cast<unsigned>(rec.config.env.size()));
  for (unsigned i = 0; i < rec.config.env.size(); ++i) {
    env[i].setKey(rec.config.env[i].first);
    env[i].setValue(rec.config.env[i].second);
  }
  out.setWorkdir(rec.config.workdir);
  out.setUser(rec.config.user);
  auto ep = out.initEntrypoint(static_cast<unsigned>(rec.config.entrypoint.size()));
  for (unsigned i = 0; i < rec.config.entrypoint.size(); ++i)
    ep.set(i, rec.config.entrypoint[i]);
  auto cmd = out.initCmd(static_cast<unsigned>(rec.config.cmd.size()));
  for (unsigned i = 0; i < rec.config.cmd.size(); ++i)
    cmd.set(i, rec.config.cmd[i]);
  out.setPython(rec.python);
}

/// kj side: sends progress to the client; a broken client only stops the progress, not the build.
class progress_relay final : private kj::TaskSet::ErrorHandler {
public:
  explicit progress_relay(wire::BuildProgress::Client client)
    : client_(kj::mv(client)), tasks_(*this) {}

  void step(const step_result& r) {
    if (broken_)
      return;
    auto req = client_.stepRequest();
    fill(req.initResult(), r);
    tasks_.add(req.send());
  }

  void line(uint32_t index, const std::string& text) {
    if (broken_)
      return;
    auto req = client_.lineRequest();
    req.setIndex(index);
    req.setText(text);
    tasks_.add(req.send());
  }

  kj::Promise<void> drained() { return tasks_.onEmpty(); }

private:
  void taskFailed(kj::Exception&&) override { broken_ = true; }

  wire::BuildProgress::Client client_;
  kj::TaskSet tasks_;
  bool broken_ = false;
};

/// CAF side: called from the building thread, posts to the kj thread.
class kj_build_progress final : public build_progress {
public:
  kj_build_progress(std::shared_ptr<kj_mailbox> mailbox, std::weak_ptr<progress_relay> relay)
    : mailbox_(std::move(mailbox)), relay_(std::move(relay)) {}

  void step(const step_result& r) override {
    mailbox_->post([relay = relay_, r] {
      if (auto p = relay.lock())
        p->step(r);
    });
  }

  void line(uint32_t index, std::string text) override {
    mailbox_->post([relay = relay_, index, text = std::move(text)] {
      if (auto p = relay.lock())
        p->line(index, text);
    });
  }

private:
  std::shared_ptr<kj_mailbox> mailbox_;
  std::weak_ptr<progress_relay> relay_;
};

image_step from_wire(wire::ImageStep::Reader s) {
  image_step out;
  out.kind = s.getKind();
  for (auto a : s.getArgs())
    out.args.emplace_back(a);
  out.blob = s.getBlob();
  for (auto kv : s.getEnv())
    out.env.emplace_back(kv.getKey(), kv.getValue());
  out.force_build = s.getForceBuild();
  if (s.hasRegistryAuth()) {
    out.registry_user = s.getRegistryAuth().getKey();
    out.registry_password = s.getRegistryAuth().getValue();
  }
  out.label = s.getLabel();
  return out;
}

class images_impl final : public wire::Images::Server {
public:
  images_impl(rpc_context& ctx, caf::actor_system& sys, image_builder_actor builder,
              std::string environment, bool admin)
    : ctx_(ctx),
      sys_(sys),
      builder_(std::move(builder)),
      environment_(std::move(environment)),
      admin_(admin) {}

  kj::Promise<void> build(BuildContext ctx) override {
    auto pass = ctx_.gate.enter();
    auto params = ctx.getParams();
    image_spec spec;
    for (auto s : params.getSpec().getSteps())
      spec.steps.push_back(from_wire(s));
    spec.ignore_cache = params.getSpec().getIgnoreCache();
    spec.environment = environment_;
    // shared_ptr: the CAF-side sink holds a weak reference; this promise chain owns it.
    std::shared_ptr<progress_relay> relay;
    build_progress_ptr sink;
    if (params.hasProgress()) {
      relay = std::make_shared<progress_relay>(params.getProgress());
      sink = std::make_shared<kj_build_progress>(ctx_.mailbox, relay);
    }
    return bridge::ask<build_result>(sys_, builder_, build_timeout, build_atom::value,
                                     std::move(spec), sink)
      .then([ctx, relay](build_result r) mutable -> kj::Promise<void> {
        auto res = ctx.getResults();
        res.setImageId(r.image_id);
        auto steps = res.initSteps(static_cast<unsigned>(r.steps.size()));
        for (unsigned i = 0; i < r.steps.size(); ++i)
          fill(steps[i], r.steps[i]);
        // Deliver the progress sent so far before the answer.
        if (relay)
          return relay->drained().then([relay] {});
        return kj::READY_NOW;
      },
      [relay](kj::Exception&& e) -> kj::Promise<void> {
        if (relay)
          // The continuation holds the relay: its task set must outlive the drain.
          return relay->drained().then([relay, e = kj::mv(e)]() mutable -> kj::Promise<void> {
            return kj::mv(e);
          });
        return kj::mv(e);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> list(ListContext ctx) override {
    auto pass = ctx_.gate.enter();
    return bridge::ask<std::vector<image_record>>(sys_, builder_, bridge::default_timeout,
                                                  list_atom::value)
      .then([ctx](std::vector<image_record> all) mutable {
        auto out = ctx.getResults().initImages(static_cast<unsigned>(all.size()));
        for (unsigned i = 0; i < all.size(); ++i)
          fill(out[i], all[i]);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> inspect(InspectContext ctx) override {
    auto pass = ctx_.gate.enter();
    return bridge::ask<image_record>(sys_, builder_, bridge::default_timeout, get_atom::value,
                                     std::string{ctx.getParams().getImageId()})
      .then([ctx](image_record rec) mutable {
        fill(ctx.getResults().initImage(), rec);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> remove(RemoveContext ctx) override {
    auto pass = ctx_.gate.enter();
    return bridge::ask<void>(sys_, builder_, bridge::default_timeout, remove_atom::value,
                             std::string{ctx.getParams().getImageId()})
      .attach(kj::mv(pass));
  }

  kj::Promise<void> collectGarbage(CollectGarbageContext ctx) override {
    if (!admin_)
      kj::throwFatalException(bridge::to_kj_exception(
        errc::permission_denied, "collecting image garbage frees disk for every environment and "
                                 "needs an admin token (admin.token)"));
    auto pass = ctx_.gate.enter();
    return bridge::ask<gc_result>(sys_, builder_, gc_timeout, gc_atom::value)
      .then([ctx](gc_result r) mutable {
        auto out = ctx.getResults().initReport();
        out.setImages(r.images);
        out.setTreesRemoved(r.trees_removed);
        auto in_use = out.initTreesInUse(static_cast<unsigned>(r.trees_in_use.size()));
        for (size_t i = 0; i < r.trees_in_use.size(); ++i)
          in_use.set(static_cast<unsigned>(i), r.trees_in_use[i]);
        out.setChunksRemoved(r.chunks_removed);
        out.setChunkBytesRemoved(r.chunk_bytes_removed);
        out.setPacksRewritten(r.packs_rewritten);
        out.setPacksRemoved(r.packs_removed);
        out.setChunksMoved(r.chunks_moved);
        out.setBytesMoved(r.bytes_moved);
        out.setDiskBytesFreed(r.disk_bytes_freed);
      })
      .attach(kj::mv(pass));
  }

private:
  rpc_context& ctx_;
  caf::actor_system& sys_;
  image_builder_actor builder_;
  std::string environment_;
  bool admin_;
};

} // namespace

capnp::Capability::Client make_images(rpc_context& ctx, caf::actor_system& sys,
                                      image_builder_actor builder, std::string environment,
                                      bool admin) {
  return kj::heap<images_impl>(ctx, sys, std::move(builder), std::move(environment), admin);
}

} // namespace shoal::images
