// The image builder tests run real crun containers: on this hybrid cgroup host the process must
// move into its own mount namespace (prepare_host_for_crun) before any thread exists, so this
// main does that first, as shoald's main does.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <iostream>

#include "runtime/container/host_cgroups.hpp"
#include "runtime/errc.hpp"

int main(int argc, char** argv) {
  auto layout = shoal::container::prepare_host_for_crun();
  if (!layout) {
    std::cerr << "prepare_host_for_crun: " << shoal::message_of(layout.error()) << "\n";
    return 1;
  }
  return Catch::Session().run(argc, argv);
}
