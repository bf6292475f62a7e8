#include "runtime/errc.hpp"

#include <array>

#include <caf/atom.hpp>
#include <caf/deep_to_string.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace shoal {

namespace {

constexpr std::array<std::string_view, 14> names = {
  "none",           "invalid_argument", "not_found",        "already_exists",
  "unauthenticated", "permission_denied", "unavailable",     "storage_failure",
  "incompatible_state", "state_dir_locked", "resource_exhausted", "timeout",
  "cancelled",      "internal",
};

} // namespace

std::string_view to_string(errc code) noexcept {
  auto i = static_cast<size_t>(code);
  return i < names.size() ? names[i] : std::string_view{"internal"};
}

std::optional<errc> errc_from_string(std::string_view name) noexcept {
  for (size_t i = 1; i < names.size(); ++i)
    if (names[i] == name)
      return static_cast<errc>(i);
  return std::nullopt;
}

caf::error make_error(errc code, std::string message) {
  return caf::error{static_cast<uint8_t>(code), caf::atom("shoal"),
                    caf::make_message(std::move(message))};
}

errc code_of(const caf::error& err) noexcept {
  if (!err)
    return errc::none;
  if (err.category() != caf::atom("shoal"))
    return err.category() == caf::atom("system")
               && err.code() == static_cast<uint8_t>(caf::sec::request_timeout)
             ? errc::timeout
             : errc::internal;
  return static_cast<errc>(err.code());
}

std::string message_of(const caf::error& err) {
  if (!err)
    return {};
  const auto& ctx = err.context();
  if (err.category() == caf::atom("shoal") && ctx.match_elements<std::string>())
    return ctx.get_as<std::string>(0);
  // Errors from CAF itself: render code and context without an actor system at hand.
  std::string out = err.category() == caf::atom("system")
                      ? caf::to_string(static_cast<caf::sec>(err.code()))
                      : caf::to_string(err.category()) + " error " + std::to_string(err.code());
  if (!ctx.empty()) {
    out += ": ";
    out += caf::deep_to_string(ctx);
  }
  return out;
}

} // namespace shoal
