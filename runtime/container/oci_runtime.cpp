#include "runtime/container/oci_runtime.hpp"

#include <cstring>
#include <sys/wait.h>

namespace shoal::container {

std::string exit_status::describe() const {
  std::string out;
  if (signal != 0) {
    out = "killed by signal " + std::to_string(signal);
    if (const char* abbrev = ::sigabbrev_np(signal))
      out += std::string{" (SIG"} + abbrev + ")";
  } else {
    out = "exited with code " + std::to_string(exit_code);
  }
  if (oom_killed)
    out += " after running out of memory";
  return out;
}

exit_status decode_wait_status(int wait_status, bool oom_killed) {
  exit_status out;
  out.oom_killed = oom_killed;
  if (WIFEXITED(wait_status)) {
    out.exit_code = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    out.signal = WTERMSIG(wait_status);
  }
  return out;
}

} // namespace shoal::container
