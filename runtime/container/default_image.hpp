#pragma once
/// `default_image`: a Debian root file system made with debootstrap from this machine's configured
/// mirror. The image service (actors/image_builder) runs it in a scratch dir for the
/// `debian_slim` base step and stores the tree as that image's layer.
///
///     <state_dir>/images/default/rootfs       the tree (overlay_rootfs's lower dir)
///     <state_dir>/images/default/image.spec   marker: the build spec it was made from
///     <state_dir>/images/default.partial/     a build in progress; never used
///
/// prepare() returns at once when the marker matches the current spec. Otherwise it builds into
/// default.partial (removing a leftover one from a crash first), cleans apt's caches, writes the
/// marker, and only then renames default.partial to default; a failed build leaves no default/.
/// A changed spec (suite, variant, packages) rebuilds; the mirror is not part of the spec, since
/// another mirror serves the same packages.
///
/// Threads: prepare() may be called concurrently from many threads of one process; builds are
/// serialized by one process-wide mutex, so concurrent callers build once and the others wait
/// for that build. Other processes are kept away by the state dir's lock (state_dir.hpp).
/// Do not rebuild while containers run on the old tree (it is their overlay's lower dir).
///

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "runtime/container/apt_sources.hpp"

namespace shoal::container {

/// Receives one line of build output (debootstrap's "I: Retrieving ..." lines).
using progress_callback = std::function<void(std::string_view line)>;

/// Runs `argv` to completion, passing each output line to `on_line`; an error when it cannot be
/// started or does not exit with 0 (the message quotes the end of its output). Injectable so
/// that tests can replace debootstrap.
using command_runner =
  std::function<caf::error(const std::vector<std::string>& argv, const progress_callback& on_line)>;

/// The real runner: spawns argv[0] (PATH lookup) with merged stdout/stderr.
caf::error run_command(const std::vector<std::string>& argv, const progress_callback& on_line);

/// What the image is made of.
struct image_spec {
  std::string suite = "bookworm";
  std::string variant = "minbase";
  std::vector<std::string> packages = {"python3", "python3-cloudpickle"};

  /// One line identifying the build; the marker's content.
  std::string key() const;
};

struct default_image_options {
  /// The Debian mirror; empty means find_debian_mirror(spec.suite, apt).
  std::string mirror;
  apt_source_paths apt;
  /// Empty means run_command.
  command_runner runner;
  /// An absolute directory where debootstrap keeps the .deb files it downloaded, so that a
  /// rebuild (or another state dir's build) does not fetch them again. Empty: none.
  std::string cache_dir;
  /// The debootstrap program.
  std::string debootstrap = "/usr/sbin/debootstrap";
  /// PATH for debootstrap, which needs chroot, mount and friends from the sbin dirs that a
  /// daemon started by a user's shell may not have on its own PATH. Run through /usr/bin/env.
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
};

class default_image {
public:
  explicit default_image(std::string state_dir, image_spec spec = {},
                         default_image_options options = {});

  /// The rootfs path, building it first unless the marker says it is current. Build output goes
  /// to `progress` (may be empty). Errors: errc::not_found (no mirror configured),
  /// errc::unavailable (debootstrap failed; its output's end is quoted), errc::storage_failure.
  [[nodiscard]] caf::expected<std::string> prepare(const progress_callback& progress = {});

  /// True when a build for the current spec is in place.
  bool ready() const;

  /// `<state_dir>/images/default`.
  const std::string& dir() const noexcept { return dir_; }
  /// `dir()/rootfs`.
  std::string rootfs() const { return dir_ + "/rootfs"; }
  /// `dir()/image.spec`.
  std::string marker() const { return dir_ + "/image.spec"; }

private:
  caf::error build(const progress_callback& progress);

  std::string dir_;
  image_spec spec_;
  default_image_options options_;
};

/// Removes what apt leaves in a freshly bootstrapped tree and no container needs: downloaded
/// .deb files, the package caches (*.bin) and the package lists. Best effort.
void clean_apt_caches(const std::string& rootfs);

} // namespace shoal::container
