// Real containers: crun with a busybox-static image, the whole sequence a supervisor runs
// (overlay, config, start, read output, wait, OOM check, remove, cgroup cleanup, release).
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <glob.h>
#include <iostream>
#include <poll.h>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/container/crun_runtime.hpp"
#include "runtime/container/overlay_rootfs.hpp"
#include "runtime/errc.hpp"
#include "tests/container/busybox_image.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::container;
using shoal::test::temp_dir;
namespace fs = std::filesystem;

namespace {

/// Mount points under `dir` in this process's mount namespace.
std::vector<std::string> mounts_under(const std::string& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    fields >> id >> parent >> devno >> root >> mount_point;
    if (mount_point.rfind(dir, 0) == 0)
      out.push_back(mount_point);
  }
  return out;
}

/// Paths matching /sys/fs/cgroup/*/<cgroups_path>.
std::vector<std::string> cgroup_dirs_of(const std::string& cgroups_path) {
  std::vector<std::string> out;
  glob_t g{};
  auto pattern = "/sys/fs/cgroup/*" + cgroups_path;
  if (::glob(pattern.c_str(), 0, nullptr, &g) == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i)
      out.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  pattern = "/sys/fs/cgroup" + cgroups_path; // pure v2
  if (fs::exists(pattern))
    out.push_back(pattern);
  return out;
}

/// Reads both pipes to EOF without letting either fill up.
void drain(int out_fd, int err_fd, std::string& out, std::string& err) {
  struct pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  std::string* sinks[2] = {&out, &err};
  int open_count = 2;
  while (open_count > 0) {
    if (::poll(fds, 2, 30'000) <= 0)
      break; // a hung container: the test's timeout or the checks will say so
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0)
        continue;
      char buf[4096];
      auto n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else {
        fds[i].fd = -1;
        --open_count;
      }
    }
  }
}

struct run_result {
  std::string id;
  std::string bundle;
  exit_status status;
  std::string out;
  std::string err;
  /// Every cleanup step succeeded and nothing of the container remains.
  bool cleaned_up = false;
  std::string cleanup_report;
};

/// One test's containers: a busybox image, a private crun state root, unique ids.
class crun_fixture {
public:
  crun_fixture() {
    auto layout = prepare_host_for_crun();
    if (!layout)
      FAIL("prepare_host_for_crun: " << shoal::message_of(layout.error()));
    shoal::test::make_busybox_image(image_dir());
    fs::create_directories(tmp_.sub("code"));
    std::ofstream(tmp_.sub("code") + "/app.py") << "print('hello')\n";
    fs::create_directories(tmp_.sub("crun-state"));
    crun_options options;
    options.state_root = tmp_.sub("crun-state");
    runtime_ = std::make_unique<crun_runtime>(options);
  }

  std::string image_dir() const { return tmp_.sub("image"); }
  std::string code_dir() const { return tmp_.sub("code"); }
  crun_runtime& runtime() { return *runtime_; }

  std::string next_id() {
    static int counter = 0;
    return "shoal-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
  }

  /// A spec for `args` in bundle `bundle`, as the supervisor would write it.
  container_spec spec_for(const std::string& id, std::vector<std::string> args) {
    container_spec spec;
    spec.id = id;
    spec.args = std::move(args);
    spec.env = {"PATH=/bin", "SHOAL_CONTAINER_ID=" + id};
    spec.hostname = id;
    spec.mounts = standard_mounts(64ull << 20);
    spec.mounts.push_back(code_mount(code_dir()));
    spec.cgroups_path = cgroups_path_for(id);
    return spec;
  }

  /// Runs a container to completion through the documented sequence.
  run_result run(std::vector<std::string> args,
                 const std::function<void(container_spec&)>& configure = {}) {
    run_result r;
    r.id = next_id();
    r.bundle = tmp_.sub("bundles/" + r.id);
    fs::create_directories(r.bundle + "/guest");
    auto spec = spec_for(r.id, std::move(args));
    spec.mounts.push_back(guest_mount(r.bundle + "/guest"));
    if (configure)
      configure(spec);

    auto rootfs = overlay_rootfs::mount(image_dir(), r.bundle);
    REQUIRE(rootfs);
    REQUIRE_FALSE(write_bundle_config(r.bundle, spec));

    int out[2], err[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
    auto pid = runtime().start(r.bundle, r.id, out[1], err[1]);
    ::close(out[1]);
    ::close(err[1]);
    if (!pid) {
      ::close(out[0]);
      ::close(err[0]);
      FAIL("start failed: " << shoal::message_of(pid.error()));
    }
    drain(out[0], err[0], r.out, r.err);
    ::close(out[0]);
    ::close(err[0]);
    int status = 0;
    REQUIRE(::waitpid(*pid, &status, 0) == *pid);
    auto oom = runtime().was_oom_killed(r.id);
    REQUIRE(oom);
    r.status = decode_wait_status(status, *oom);
    r.cleaned_up = cleanup(r.id, r.bundle, *rootfs, r.cleanup_report);
    return r;
  }

  /// remove → remove_cgroup_parents → release, then checks that nothing is left.
  bool cleanup(const std::string& id, const std::string& bundle, overlay_rootfs& rootfs,
               std::string& report) {
    bool ok = true;
    if (auto e = runtime().remove(id)) {
      report += "remove: " + shoal::message_of(e) + "\n";
      ok = false;
    }
    if (auto e = runtime().remove_cgroup_parents(cgroups_path_for(id))) {
      report += "remove_cgroup_parents: " + shoal::message_of(e) + "\n";
      ok = false;
    }
    if (auto e = rootfs.release()) {
      report += "release: " + shoal::message_of(e) + "\n";
      ok = false;
    }
    for (const auto& m : mounts_under(bundle)) {
      report += "mount left: " + m + "\n";
      ok = false;
    }
    for (const auto& d : cgroup_dirs_of(cgroups_path_for(id))) {
      report += "cgroup dir left: " + d + "\n";
      ok = false;
    }
    return ok;
  }

private:
  temp_dir tmp_;
  std::unique_ptr<crun_runtime> runtime_;
};

} // namespace

TEST_CASE("a container's exit code passes through to the waiting caller") {
  crun_fixture f;
  auto seven = f.run({"/bin/sh", "-c", "exit 7"});
  CHECK(seven.status.exit_code == 7);
  CHECK(seven.status.signal == 0);
  CHECK_FALSE(seven.status.oom_killed);
  CHECK(seven.cleaned_up);
  INFO(seven.cleanup_report);

  auto ok = f.run({"/bin/true"});
  CHECK(ok.status.success());
  CHECK(ok.cleaned_up);
}

TEST_CASE("a container's stdout and stderr arrive through the caller's pipes") {
  crun_fixture f;
  auto r = f.run({"/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2; echo $SHOAL_CONTAINER_ID"});
  CHECK(r.out == "to-stdout\n" + r.id + "\n");
  CHECK(r.err == "to-stderr\n");
  CHECK(r.status.success());
  CHECK(r.cleaned_up);
}

TEST_CASE("a container runs in its own pid, uts and network namespaces") {
  crun_fixture f;
  auto r = f.run({"/bin/sh", "-c",
                  "echo pid=$$; echo host=$(hostname); "
                  "tail=$(cat /proc/net/dev | while read a b; do echo $a; done); echo $tail; "
                  "ls /proc | grep -c '^[0-9]'"});
  INFO(r.out << r.err);
  std::istringstream lines(r.out);
  std::string pid_line, host_line, ifaces, process_count;
  std::getline(lines, pid_line);
  std::getline(lines, host_line);
  std::getline(lines, ifaces);
  std::getline(lines, process_count);
  CHECK(pid_line == "pid=1");
  CHECK(host_line == "host=" + r.id);
  // /proc/net/dev: two header lines, then one line per interface: only lo.
  CHECK(ifaces == "Inter-| face lo:");
  // sh, the subshell of $(...), ls and grep at most: not the host's processes.
  CHECK(std::stoi(process_count) <= 5);
  CHECK(r.status.success());
  CHECK(r.cleaned_up);
}

TEST_CASE("a container that allocates past its 32 MiB memory limit is OOM-killed and reported") {
  crun_fixture f;
  auto limit = [](container_spec& spec) { spec.limits.memory_bytes = 32ull << 20; };
  // dd with a 100 MiB block allocates and fills a 100 MiB buffer.
  auto hog = f.run({"/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"}, limit);
  INFO(hog.err);
  CHECK(hog.status.signal == SIGKILL);
  CHECK(hog.status.oom_killed);
  CHECK(hog.status.describe() == "killed by signal 9 (SIGKILL) after running out of memory");
  CHECK(hog.cleaned_up);

  // The same program within the limit is not.
  auto small = f.run({"/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=4M", "count=1"}, limit);
  INFO(small.err);
  CHECK(small.status.success());
  CHECK_FALSE(small.status.oom_killed);
  CHECK(small.cleaned_up);
}

TEST_CASE("a container's pids limit stops it from starting more processes") {
  crun_fixture f;
  const std::vector<std::string> forker = {
    "/bin/sh", "-c", "for i in $(seq 1 20); do sleep 1 & done; echo all-started; wait"};
  auto limited = f.run(forker, [](container_spec& spec) { spec.limits.pids_max = 8; });
  INFO(limited.out << limited.err << limited.cleanup_report);
  CHECK(limited.out.find("all-started") == std::string::npos);
  CHECK_FALSE(limited.status.success());
  CHECK(limited.cleaned_up);

  auto roomy = f.run(forker, [](container_spec& spec) { spec.limits.pids_max = 64; });
  INFO(roomy.out << roomy.err << roomy.cleanup_report);
  CHECK(roomy.out == "all-started\n");
  CHECK(roomy.status.success());
  CHECK(roomy.cleaned_up);
}

TEST_CASE("the code mount is read-only inside the container") {
  crun_fixture f;
  auto r = f.run({"/bin/sh", "-c",
                  "cat /shoal/code/app.py; touch /shoal/code/new 2>/dev/null && echo wrote; "
                  "echo x > /shoal/code/app.py 2>/dev/null && echo overwrote; "
                  "touch /tmp/ok && touch /shoal/guest/ok && echo tmp-and-guest-writable"});
  CHECK(r.out == "print('hello')\ntmp-and-guest-writable\n");
  CHECK_FALSE(fs::exists(f.code_dir() + "/new"));
  std::ifstream app(f.code_dir() + "/app.py");
  std::string line;
  std::getline(app, line);
  CHECK(line == "print('hello')");
  CHECK(fs::exists(r.bundle + "/guest/ok")); // the guest dir is the host's
  CHECK(r.cleaned_up);
}

TEST_CASE("a container writes into its overlay upper and never into the image") {
  crun_fixture f;
  auto r = f.run({"/bin/sh", "-c",
                  "echo changed > /etc/image-marker && mkdir -p /var/data && echo ok"});
  CHECK(r.out == "ok\n");
  CHECK(r.status.success());
  std::ifstream marker(f.image_dir() + "/etc/image-marker");
  std::string line;
  std::getline(marker, line);
  CHECK(line == "busybox test image");
  CHECK_FALSE(fs::exists(f.image_dir() + "/var/data"));
  CHECK(r.cleaned_up);
}

TEST_CASE("after cleanup no mount under the bundle and no cgroup dir of the container remain") {
  crun_fixture f;
  auto r = f.run({"/bin/sh", "-c", "sleep 0.2"}, [](container_spec& spec) {
    spec.limits.memory_bytes = 64ull << 20;
    spec.limits.pids_max = 32;
    spec.limits.cpu_millis = 500;
  });
  INFO(r.cleanup_report);
  CHECK(r.status.success());
  CHECK(r.cleaned_up);
  CHECK(mounts_under(r.bundle).empty());
  CHECK(cgroup_dirs_of(cgroups_path_for(r.id)).empty());
  CHECK_FALSE(fs::exists(r.bundle + "/rootfs"));
  // Cleanup is idempotent: running it again finds nothing to do.
  CHECK_FALSE(f.runtime().remove(r.id));
  CHECK_FALSE(f.runtime().remove_cgroup_parents(cgroups_path_for(r.id)));
  // And the OOM counter is gone with the cgroup.
  auto oom = f.runtime().was_oom_killed(r.id);
  REQUIRE_FALSE(oom);
  CHECK(shoal::code_of(oom.error()) == shoal::errc::not_found);
}

TEST_CASE("kill stops a running container and the waiting caller sees the signal") {
  crun_fixture f;
  temp_dir tmp;
  auto id = f.next_id();
  auto bundle = tmp.sub(id);
  auto rootfs = overlay_rootfs::mount(f.image_dir(), bundle);
  REQUIRE(rootfs);
  REQUIRE_FALSE(write_bundle_config(bundle, f.spec_for(id, {"/bin/sleep", "30"})));
  auto started = std::chrono::steady_clock::now();
  auto pid = f.runtime().start(bundle, id, -1, -1);
  REQUIRE(pid);
  int status = 0;
  CHECK(::waitpid(*pid, &status, WNOHANG) == 0); // still running
  REQUIRE_FALSE(f.runtime().kill(id, SIGKILL));
  REQUIRE(::waitpid(*pid, &status, 0) == *pid);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(10));
  auto ex = decode_wait_status(status, false);
  CHECK(ex.signal == SIGKILL);
  auto oom = f.runtime().was_oom_killed(id);
  REQUIRE(oom);
  CHECK_FALSE(*oom);
  // A stopped container cannot be signalled.
  auto again = f.runtime().kill(id, SIGTERM);
  CHECK(shoal::code_of(again) == shoal::errc::not_found);
  std::string report;
  CHECK(f.cleanup(id, bundle, *rootfs, report));
  INFO(report);
}

TEST_CASE("start fails with crun's message for a missing program and leaves nothing behind") {
  crun_fixture f;
  temp_dir tmp;
  auto id = f.next_id();
  auto bundle = tmp.sub(id);
  auto rootfs = overlay_rootfs::mount(f.image_dir(), bundle);
  REQUIRE(rootfs);
  REQUIRE_FALSE(write_bundle_config(bundle, f.spec_for(id, {"/bin/no-such-program"})));
  int err[2];
  REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
  auto pid = f.runtime().start(bundle, id, -1, err[1]);
  ::close(err[1]);
  std::string out, err_text;
  int dummy[2];
  REQUIRE(::pipe2(dummy, O_CLOEXEC) == 0);
  ::close(dummy[1]);
  drain(dummy[0], err[0], out, err_text);
  ::close(dummy[0]);
  ::close(err[0]);
  if (pid) {
    // crun may only notice when pid 1 execs: then the container exits with a failure.
    int status = 0;
    REQUIRE(::waitpid(*pid, &status, 0) == *pid);
    CHECK_FALSE(decode_wait_status(status).success());
    CHECK(err_text.find("no-such-program") != std::string::npos);
  } else {
    INFO(shoal::message_of(pid.error()));
    CHECK(shoal::message_of(pid.error()).find("no-such-program") != std::string::npos);
    CHECK(shoal::message_of(pid.error()).find(id) != std::string::npos);
  }
  std::string report;
  CHECK(f.cleanup(id, bundle, *rootfs, report));
  INFO(report);
}

TEST_CASE("a busybox true container runs start to exit in well under a second (median of 10)") {
  crun_fixture f;
  std::vector<double> start_to_exit_ms, full_cycle_ms, start_ms;
  for (int i = 0; i < 10; ++i) {
    temp_dir tmp;
    auto id = f.next_id();
    auto bundle = tmp.sub(id);
    auto cycle_start = std::chrono::steady_clock::now();
    auto rootfs = overlay_rootfs::mount(f.image_dir(), bundle);
    REQUIRE(rootfs);
    auto spec = f.spec_for(id, {"/bin/true"});
    spec.limits.memory_bytes = 64ull << 20;
    spec.limits.pids_max = 64;
    REQUIRE_FALSE(write_bundle_config(bundle, spec));
    auto started = std::chrono::steady_clock::now();
    auto pid = f.runtime().start(bundle, id, -1, -1);
    REQUIRE(pid);
    auto running = std::chrono::steady_clock::now();
    int status = 0;
    REQUIRE(::waitpid(*pid, &status, 0) == *pid);
    auto exited = std::chrono::steady_clock::now();
    start_ms.push_back(std::chrono::duration<double, std::milli>(running - started).count());
    REQUIRE(f.runtime().was_oom_killed(id));
    CHECK(decode_wait_status(status).success());
    std::string report;
    CHECK(f.cleanup(id, bundle, *rootfs, report));
    auto done = std::chrono::steady_clock::now();
    start_to_exit_ms.push_back(std::chrono::duration<double, std::milli>(exited - started).count());
    full_cycle_ms.push_back(std::chrono::duration<double, std::milli>(done - cycle_start).count());
  }
  std::sort(start_to_exit_ms.begin(), start_to_exit_ms.end());
  std::sort(full_cycle_ms.begin(), full_cycle_ms.end());
  std::sort(start_ms.begin(), start_ms.end());
  auto median = [](const std::vector<double>& v) { return (v[4] + v[5]) / 2; };
  std::cout << "busybox true, median of 10: start->exit " << median(start_to_exit_ms)
            << " ms (min " << start_to_exit_ms.front() << ", max " << start_to_exit_ms.back()
            << "), of which start() " << median(start_ms) << " ms; mount+start+exit+cleanup " << median(full_cycle_ms) << " ms\n";
  CHECK(median(start_to_exit_ms) < 1000);
}
