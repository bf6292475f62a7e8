#pragma once
/// The Cap'n Proto face of the image builder: `Images` (schema/images.capnp), one per session.
/// `build` forwards to the actor and relays its progress to the client's `BuildProgress`
/// capability through the kj mailbox. kj thread only.

#include <string>

#include <capnp/capability.h>
#include <caf/fwd.hpp>

#include "actors/image_builder/image_builder_actor.hpp"
#include "runtime/rpc_server.hpp"

namespace shoal::images {

/// An `Images` capability; builds read named secrets of `environment`; `admin`: the session's
/// token is an admin token (collectGarbage). `ctx` must outlive it.
capnp::Capability::Client make_images(rpc_context& ctx, caf::actor_system& sys,
                                      image_builder_actor builder, std::string environment,
                                      bool admin);

} // namespace shoal::images
