#pragma once
/// Running helper programs (crun, debootstrap) from a multi-threaded daemon.
///
/// Children are started with posix_spawn: every signal back to its default disposition, an empty
/// signal mask (shoald blocks SIGTERM/SIGINT in all threads for `sigwait`, and a mask survives
/// exec), stdin on /dev/null, and no descriptor of the daemon beyond 0-2 (closefrom). Safe to call
/// from any thread, concurrently.

#include <functional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

#include <caf/expected.hpp>

namespace shoal::container::detail {

/// Receives one line of a child's output, without the trailing newline.
using line_callback = std::function<void(std::string_view line)>;

/// Descriptors a spawned child gets as its 0, 1, 2 and (optionally) 3. -1 means /dev/null for
/// 0-2 and "not passed" for `fd3`. The caller keeps ownership of what it passes.
struct child_stdio {
  int stdout_fd = -1;
  int stderr_fd = -1;
  int fd3 = -1;
};

/// Spawns `argv` (argv[0] is an absolute path or looked up in PATH) and returns its pid without
/// waiting. The caller must reap it with waitpid.
[[nodiscard]] caf::expected<pid_t> spawn_process(const std::vector<std::string>& argv,
                                                 const child_stdio& stdio);

/// The outcome of a finished child: its wait status and everything it wrote (stdout and stderr
/// interleaved, as one stream).
struct process_output {
  int wait_status = 0;
  std::string output;
  /// True when the child exited normally with code 0.
  bool ok() const noexcept;
  /// "exited with code 2" / "killed by signal 9".
  std::string describe() const;
};

/// Runs `argv` to completion, streaming its merged stdout+stderr line by line to `on_line` (may be
/// empty) and keeping at most `keep_bytes` of the output's tail in the result. Fails only when the
/// child cannot be started; a non-zero exit is reported through `wait_status`.
[[nodiscard]] caf::expected<process_output> run_process(const std::vector<std::string>& argv,
                                                        const line_callback& on_line = {},
                                                        size_t keep_bytes = 16 * 1024);

/// `errno` as text ("No such file or directory").
std::string errno_text(int err);

} // namespace shoal::container::detail
