// shoal-container-shim: see container_shim.hpp.
#include "runtime/container/container_shim.hpp"

int main(int argc, char** argv) {
  return shoal::container::container_shim_main(argc, argv);
}
