#include "runtime/kj_bridge.hpp"

#include <kj/string.h>

namespace shoal::bridge {

kj::Exception to_kj_exception(errc code, const std::string& message) {
  auto type = code == errc::unavailable ? kj::Exception::Type::OVERLOADED
                                        : kj::Exception::Type::FAILED;
  // Built directly, not with KJ_EXCEPTION: that macro would put the expression text in the message.
  return kj::Exception(type, __FILE__, __LINE__,
                       kj::str("[", to_string(code).data(), "] ", message.c_str()));
}

kj::Exception to_kj_exception(const caf::error& err) {
  return to_kj_exception(code_of(err), message_of(err));
}

} // namespace shoal::bridge
