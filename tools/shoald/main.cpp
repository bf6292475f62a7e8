/// shoald: parse the command line, start the daemon, wait for SIGTERM/SIGINT, stop in order.
/// Exit codes: 0 after a clean stop, 1 when the daemon cannot start or run, 2 for usage errors.

#include <csignal>
#include <cstdio>
#include <iostream>
#include <pthread.h>
#include <string>
#include <vector>

#include <jemalloc/jemalloc.h>

#include "runtime/container/host_cgroups.hpp"
#include "runtime/daemon.hpp"
#include "runtime/errc.hpp"
#include "runtime/log.hpp"

namespace {

std::string jemalloc_version() {
  const char* version = nullptr;
  size_t size = sizeof(version);
  if (mallctl("version", &version, &size, nullptr, 0) != 0 || version == nullptr)
    return "unknown";
  return version;
}

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = shoal::parse_args(args);
  if (!parsed) {
    std::cerr << "shoald: " << shoal::message_of(parsed.error()) << "\n"
              << "Run `shoald --help` for usage.\n";
    return 2;
  }
  if (parsed->what == shoal::parsed_args::action::help) {
    std::cout << shoal::usage();
    return 0;
  }
  if (parsed->what == shoal::parsed_args::action::version) {
    std::cout << "shoald " << shoal::shoal_version << "\n";
    return 0;
  }

  // crun refuses hybrid cgroup hosts unless the unified mount is hidden in our mount namespace;
  // that must happen before any thread exists (PLATFORM.md §9).
  if (parsed->config.worker) {
    auto layout = shoal::container::prepare_host_for_crun();
    if (!layout) {
      std::cerr << "shoald: cannot prepare this host for containers: "
                << shoal::message_of(layout.error())
                << " (run with --roles control to host no containers)\n";
      return 1;
    }
  }

  // Block the stop signals before any thread exists, so every thread inherits the mask and only
  // the sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto daemon = shoal::daemon::start(parsed->config);
  if (!daemon) {
    std::cerr << "shoald: " << shoal::message_of(daemon.error()) << "\n";
    return 1;
  }
  shoal::log::debug("allocator").kv("jemalloc", jemalloc_version());

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  shoal::log::info("signal_received").kv("signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  (*daemon)->stop();
  return 0;
}
