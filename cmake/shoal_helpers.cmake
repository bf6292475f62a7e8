# shoal_add_component(<name> SOURCES ... DEPENDS ...)
#   A static library `shoal_<name>` with the alias `shoal::<name>`. Include paths are rooted at the
#   source tree, so code writes `#include "storage/store.hpp"`.
function(shoal_add_component name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPENDS" ${ARGN})
  add_library(shoal_${name} STATIC ${ARG_SOURCES})
  add_library(shoal::${name} ALIAS shoal_${name})
  target_include_directories(shoal_${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_compile_options(shoal_${name} PRIVATE -Wall -Wextra -Wno-unused-parameter -Wno-maybe-uninitialized)
  target_link_libraries(shoal_${name} PUBLIC ${ARG_DEPENDS})
endfunction()

# shoal_add_test(<name> SOURCES ... DEPENDS ...)
#   A Catch2 executable; each TEST_CASE becomes one ctest entry with a timeout.
function(shoal_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPENDS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE -Wall -Wextra -Wno-unused-parameter -Wno-maybe-uninitialized)
  target_link_libraries(${name} PRIVATE shoal_test_main ${ARG_DEPENDS})
  catch_discover_tests(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT})
endfunction()
