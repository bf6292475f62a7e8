#include "actors/image_builder/image_builder_actor.hpp"

#include <cstdint>
#include <map>

#include <caf/actor_system.hpp>
#include <caf/blocking_actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/image_builder/image_service.hpp"
#include "runtime/errc.hpp"

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(caf::expected<shoal::images::build_result>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(caf::expected<shoal::images::gc_result>)

namespace shoal::images {

namespace {

using done_atom = caf::atom_constant<caf::atom("im_done")>;

using impl_actor = caf::typed_actor<
  caf::replies_to<build_atom, image_spec, build_progress_ptr>::with<build_result>,
  caf::replies_to<list_atom>::with<std::vector<image_record>>,
  caf::replies_to<get_atom, std::string>::with<image_record>,
  caf::replies_to<remove_atom, std::string>::with<void>,
  caf::replies_to<gc_atom>::with<gc_result>, inspect_handler,
  caf::reacts_to<done_atom, uint64_t, caf::expected<build_result>>,
  caf::reacts_to<done_atom, uint64_t, caf::expected<gc_result>>>;

struct builder_state {
  image_service* service = nullptr;
  uint64_t next_job = 1;
  std::map<uint64_t, caf::typed_response_promise<build_result>> jobs;
  std::map<uint64_t, caf::typed_response_promise<gc_result>> collections;
  uint64_t failed = 0;
  static inline const char* name = "image_builder";
};

using self_ptr = impl_actor::stateful_pointer<builder_state>;

impl_actor::behavior_type builder_impl(self_ptr self, image_service* service) {
  self->state.service = service;
  return {
    [self](build_atom, image_spec& spec, build_progress_ptr& progress) -> caf::result<build_result> {
      auto& st = self->state;
      auto job = st.next_job++;
      auto rp = self->make_response_promise<build_result>();
      st.jobs.emplace(job, rp);
      auto* svc = st.service;
      auto me = caf::actor_cast<impl_actor>(self);
      self->system().spawn<caf::detached>(
        [svc, me, job, spec = std::move(spec), progress = std::move(progress)](caf::blocking_actor*) {
          caf::anon_send(me, done_atom::value, job, svc->build(spec, progress));
        });
      return rp;
    },
    [self](done_atom, uint64_t job, caf::expected<build_result>& result) {
      auto& st = self->state;
      auto i = st.jobs.find(job);
      if (i == st.jobs.end())
        return;
      if (result)
        i->second.deliver(std::move(*result));
      else {
        ++st.failed;
        i->second.deliver(result.error());
      }
      st.jobs.erase(i);
    },
    [self](gc_atom) -> caf::result<gc_result> {
      auto& st = self->state;
      auto job = st.next_job++;
      auto rp = self->make_response_promise<gc_result>();
      st.collections.emplace(job, rp);
      auto* svc = st.service;
      auto me = caf::actor_cast<impl_actor>(self);
      self->system().spawn<caf::detached>([svc, me, job](caf::blocking_actor*) {
        caf::anon_send(me, done_atom::value, job, svc->collect_garbage());
      });
      return rp;
    },
    [self](done_atom, uint64_t job, caf::expected<gc_result>& result) {
      auto& st = self->state;
      auto i = st.collections.find(job);
      if (i == st.collections.end())
        return;
      if (result)
        i->second.deliver(std::move(*result));
      else
        i->second.deliver(result.error());
      st.collections.erase(i);
    },
    [self](list_atom) -> caf::result<std::vector<image_record>> {
      auto all = self->state.service->list();
      if (!all)
        return all.error();
      return std::move(*all);
    },
    [self](get_atom, const std::string& id) -> caf::result<image_record> {
      auto rec = self->state.service->record(id);
      if (!rec)
        return rec.error();
      return std::move(*rec);
    },
    [self](remove_atom, const std::string& id) -> caf::result<void> {
      if (auto err = self->state.service->remove(id))
        return err;
      return caf::unit;
    },
    [self](inspect_atom) {
      auto& st = self->state;
      auto s = snapshot_of(self, "image_builder", "image_builder",
                           st.jobs.empty() ? "idle" : "building");
      auto c = st.service->stats();
      auto chunks = st.service->chunks()->stats();
      s.counter("builds_running", static_cast<int64_t>(st.jobs.size()))
        .counter("builds", static_cast<int64_t>(c.builds))
        .counter("builds_failed", static_cast<int64_t>(st.failed))
        .counter("steps_built", static_cast<int64_t>(c.steps_built))
        .counter("steps_cached", static_cast<int64_t>(c.steps_cached))
        .counter("trees_materialised", static_cast<int64_t>(c.trees_materialised))
        .counter("chunks", static_cast<int64_t>(chunks.chunks))
        .counter("chunk_bytes", static_cast<int64_t>(chunks.bytes))
        .counter("chunks_deduplicated", static_cast<int64_t>(chunks.deduplicated));
      return s;
    },
  };
}

} // namespace

image_builder_actor spawn_image_builder(caf::actor_system& sys, image_service& service) {
  return caf::actor_cast<image_builder_actor>(sys.spawn(builder_impl, &service));
}

} // namespace shoal::images
