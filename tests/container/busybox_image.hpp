#pragma once
/// Test support: a tiny image tree made of the host's busybox-static (Debian package
/// busybox-static), fast enough to build in every test.

#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace shoal::test {

/// Creates `dir` with bin/busybox, one symlink per applet the tests use, and the empty dirs a
/// root file system needs. Throws when busybox is missing.
inline void make_busybox_image(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string busybox = "/bin/busybox";
  if (!fs::exists(busybox))
    throw std::runtime_error("busybox-static is not installed (apt-get install busybox-static)");
  for (auto sub : {"bin", "etc", "proc", "dev", "sys", "tmp", "shoal/code", "shoal/guest"})
    fs::create_directories(dir + "/" + sub);
  fs::copy_file(busybox, dir + "/bin/busybox", fs::copy_options::overwrite_existing);
  for (auto applet : {"sh",   "true",  "false", "echo", "cat", "hostname", "dd",  "sleep",
                      "seq",  "touch", "ls",    "grep", "wc",  "mkdir",    "id",  "head"}) {
    std::error_code ec;
    fs::create_symlink("busybox", dir + "/bin/" + applet, ec);
  }
  std::FILE* f = std::fopen((dir + "/etc/image-marker").c_str(), "w");
  if (f) {
    std::fputs("busybox test image\n", f);
    std::fclose(f);
  }
}

} // namespace shoal::test
