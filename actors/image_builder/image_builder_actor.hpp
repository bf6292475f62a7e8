#pragma once
/// `image_builder`: the actor face of images (docs/images.md). It answers list and inspect from
/// the `images` table, and runs each build in a detached helper that calls `image_service`
/// (builds block for seconds to minutes), so the actor's mailbox never waits on one.
///
///     request ──build──► RUNNING (one helper per build; many at once) ──► answered
///                                      │ same image id as a running build
///                                      └─► the helper waits inside image_service (built once)

#include <string>
#include <vector>

#include <caf/typed_actor.hpp>

#include "actors/image_builder/image_types.hpp"
#include "runtime/inspect.hpp"

namespace shoal::images {

class image_service;

using build_atom = caf::atom_constant<caf::atom("im_build")>;
using list_atom = caf::atom_constant<caf::atom("im_list")>;
using get_atom = caf::atom_constant<caf::atom("im_get")>;
using remove_atom = caf::atom_constant<caf::atom("im_remove")>;
using gc_atom = caf::atom_constant<caf::atom("im_gc")>;

using image_builder_actor = caf::typed_actor<
  /// Builds what the spec lacks; progress goes to the sink (may be null).
  caf::replies_to<build_atom, image_spec, build_progress_ptr>::with<build_result>,
  caf::replies_to<list_atom>::with<std::vector<image_record>>,
  caf::replies_to<get_atom, std::string>::with<image_record>,
  caf::replies_to<remove_atom, std::string>::with<void>,
  /// Frees what removed images held (image_service::collect_garbage), on a detached helper.
  caf::replies_to<gc_atom>::with<gc_result>,
  inspect_handler>;

/// `service` must outlive the actor (the composition root owns both).
image_builder_actor spawn_image_builder(caf::actor_system& sys, image_service& service);

} // namespace shoal::images
