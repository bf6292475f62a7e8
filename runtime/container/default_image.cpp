#include "runtime/container/default_image.hpp"

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "runtime/container/detail/subprocess.hpp"
#include "runtime/errc.hpp"
#include "runtime/log.hpp"

namespace shoal::container {

namespace fs = std::filesystem;

namespace {

/// Serializes every build of this process (builds are rare, and concurrent callers for the same
/// dir must build once: the second finds the first one's marker).
std::mutex build_mutex;

/// The outcome of the latest build, guarded by build_mutex: callers that waited for a build of
/// the same dir share its failure instead of repeating a build that just failed.
/// `generation` counts finished builds and is read without the lock, before waiting for it.
struct last_build {
  std::atomic<uint64_t> generation{0};
  std::string dir;
  caf::error error;
} latest;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string joined(const std::vector<std::string>& items, char sep) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty())
      out += sep;
    out += item;
  }
  return out;
}

} // namespace

caf::error run_command(const std::vector<std::string>& argv, const progress_callback& on_line) {
  auto out = detail::run_process(argv, on_line, 4096);
  if (!out)
    return out.error();
  if (out->ok())
    return {};
  auto tail = out->output;
  while (!tail.empty() && tail.back() == '\n')
    tail.pop_back();
  if (tail.size() > 1500)
    tail = "..." + tail.substr(tail.size() - 1500);
  return make_error(errc::unavailable, argv[0] + " " + out->describe()
                                         + (tail.empty() ? "" : "; its output ended with: " + tail));
}

std::string image_spec::key() const {
  return "shoal-default-image/1 suite=" + suite + " variant=" + variant
         + " include=" + joined(packages, ',');
}

default_image::default_image(std::string state_dir, image_spec spec,
                             default_image_options options)
  : dir_(std::move(state_dir) + "/images/default"),
    spec_(std::move(spec)),
    options_(std::move(options)) {
  if (!options_.runner)
    options_.runner = run_command;
}

bool default_image::ready() const {
  std::error_code ec;
  return fs::is_directory(rootfs(), ec) && read_text(marker()) == spec_.key() + "\n";
}

caf::expected<std::string> default_image::prepare(const progress_callback& progress) {
  if (ready())
    return rootfs();
  uint64_t seen_generation = latest.generation.load();
  std::lock_guard<std::mutex> guard(build_mutex);
  if (ready()) // another caller built it while we waited
    return rootfs();
  if (latest.generation != seen_generation && latest.dir == dir_ && latest.error)
    return latest.error; // the build we waited for failed just now
  auto err = build(progress);
  latest.dir = dir_;
  latest.error = err;
  ++latest.generation;
  if (err)
    return err;
  return rootfs();
}

caf::error default_image::build(const progress_callback& progress) {
  auto partial = dir_ + ".partial";
  auto stale = dir_ + ".stale";
  std::error_code ec;
  fs::remove_all(partial, ec); // a build interrupted by a crash
  if (ec)
    return make_error(errc::storage_failure,
                      "cannot remove the unfinished image build " + partial + ": " + ec.message());
  fs::remove_all(stale, ec);

  auto mirror = options_.mirror;
  if (mirror.empty()) {
    auto found = find_debian_mirror(spec_.suite, options_.apt);
    if (!found)
      return found.error();
    mirror = *found;
  }
  auto target = partial + "/rootfs";
  fs::create_directories(partial, ec);
  if (ec)
    return make_error(errc::storage_failure, "cannot create " + partial + ": " + ec.message());

  std::vector<std::string> argv{"/usr/bin/env", "PATH=" + options_.path, options_.debootstrap,
                                "--variant=" + spec_.variant};
  if (!spec_.packages.empty())
    argv.push_back("--include=" + joined(spec_.packages, ','));
  if (!options_.cache_dir.empty()) {
    fs::create_directories(options_.cache_dir, ec);
    if (!ec)
      argv.push_back("--cache-dir=" + options_.cache_dir);
  }
  argv.insert(argv.end(), {spec_.suite, target, mirror});
  log::info("image_build_started")
    .kv("image", "default")
    .kv("spec", spec_.key())
    .kv("mirror", mirror)
    .kv("dir", dir_);
  if (auto err = options_.runner(argv, progress)) {
    fs::remove_all(partial, ec);
    return make_error(code_of(err) == errc::internal ? errc::internal : errc::unavailable,
                      "building the default image (" + spec_.key() + ") from " + mirror
                        + " failed: " + message_of(err));
  }
  if (!fs::is_directory(target, ec)) {
    fs::remove_all(partial, ec);
    return make_error(errc::internal,
                      options_.debootstrap + " succeeded but left no tree at " + target);
  }
  if (!fs::is_directory(target + "/usr", ec)) {
    fs::remove_all(partial, ec);
    return make_error(errc::internal, options_.debootstrap
                                        + " succeeded but the tree at " + target + " has no /usr");
  }
  clean_apt_caches(target);

  {
    std::ofstream marker_out(partial + "/image.spec", std::ios::trunc);
    marker_out << spec_.key() << "\n";
    marker_out.flush();
    if (!marker_out) {
      fs::remove_all(partial, ec);
      return make_error(errc::storage_failure, "cannot write " + partial + "/image.spec");
    }
  }
  // Publish: move an outdated image aside, rename the new one into place, drop the old one.
  if (fs::exists(dir_, ec)) {
    fs::rename(dir_, stale, ec);
    if (ec)
      return make_error(errc::storage_failure,
                        "cannot move the outdated image " + dir_ + " aside: " + ec.message());
  }
  fs::rename(partial, dir_, ec);
  if (ec)
    return make_error(errc::storage_failure,
                      "cannot rename " + partial + " to " + dir_ + ": " + ec.message());
  fs::remove_all(stale, ec);
  log::info("image_build_finished").kv("image", "default").kv("rootfs", rootfs());
  return {};
}

void clean_apt_caches(const std::string& rootfs) {
  std::error_code ec;
  auto remove_files = [&](const std::string& dir, auto&& wanted) {
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code ec2;
      if (it->is_regular_file(ec2) && wanted(it->path()))
        fs::remove(it->path(), ec2);
    }
    ec.clear();
  };
  remove_files(rootfs + "/var/cache/apt/archives",
               [](const fs::path& p) { return p.extension() == ".deb"; });
  remove_files(rootfs + "/var/cache/apt/archives/partial", [](const fs::path&) { return true; });
  remove_files(rootfs + "/var/cache/apt", [](const fs::path& p) { return p.extension() == ".bin"; });
  remove_files(rootfs + "/var/lib/apt/lists",
               [](const fs::path& p) { return p.filename() != "lock"; });
  remove_files(rootfs + "/var/lib/apt/lists/partial", [](const fs::path&) { return true; });
}

} // namespace shoal::container
