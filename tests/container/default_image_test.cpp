// default_image with a fake debootstrap: the once-only, marker and partial-dir logic. The real
// debootstrap (about 60 s) is exercised by the end-to-end tests.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "runtime/container/default_image.hpp"
#include "runtime/errc.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::container;
using shoal::test::temp_dir;
namespace fs = std::filesystem;

namespace {

void touch(const std::string& path, const std::string& text = "x") {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

/// A debootstrap stand-in: records its calls, prints two progress lines and creates a tiny tree
/// (with apt caches) at the target, which is argv[argv.size() - 2].
struct fake_debootstrap {
  std::mutex mutex;
  std::vector<std::vector<std::string>> calls;
  std::atomic<int> running{0};
  std::atomic<int> max_running{0};
  bool fail = false;
  std::chrono::milliseconds delay{0};

  command_runner runner() {
    return [this](const std::vector<std::string>& argv, const progress_callback& on_line) {
      int now = ++running;
      int prev = max_running.load();
      while (now > prev && !max_running.compare_exchange_weak(prev, now)) {
      }
      {
        std::lock_guard<std::mutex> guard(mutex);
        calls.push_back(argv);
      }
      std::this_thread::sleep_for(delay);
      auto target = argv[argv.size() - 2];
      if (on_line) {
        on_line("I: Retrieving InRelease");
        on_line("I: Base system installed successfully.");
      }
      touch(target + "/usr/bin/python3", "#!fake");
      touch(target + "/var/cache/apt/archives/python3_3.11.deb");
      touch(target + "/var/cache/apt/pkgcache.bin");
      touch(target + "/var/lib/apt/lists/deb.example.org_dists_bookworm_InRelease");
      --running;
      if (fail)
        return shoal::make_error(shoal::errc::unavailable, "debootstrap exited with code 1");
      return caf::error{};
    };
  }
  size_t call_count() {
    std::lock_guard<std::mutex> guard(mutex);
    return calls.size();
  }
};

default_image_options options_with(fake_debootstrap& fake) {
  default_image_options opts;
  opts.mirror = "http://deb.example.org/debian";
  opts.runner = fake.runner();
  return opts;
}

} // namespace

TEST_CASE("the default image is built once with debootstrap and then served from its marker") {
  temp_dir state;
  fake_debootstrap fake;
  std::vector<std::string> lines;
  default_image image(state.path(), {}, options_with(fake));
  CHECK_FALSE(image.ready());

  auto rootfs = image.prepare([&](std::string_view line) { lines.emplace_back(line); });
  REQUIRE(rootfs);
  CHECK(*rootfs == state.path() + "/images/default/rootfs");
  CHECK(fs::exists(*rootfs + "/usr/bin/python3"));
  CHECK(image.ready());
  CHECK(lines == std::vector<std::string>{"I: Retrieving InRelease",
                                          "I: Base system installed successfully."});
  REQUIRE(fake.call_count() == 1);
  CHECK(fake.calls[0]
        == std::vector<std::string>{"/usr/bin/env",
                                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                    "/usr/sbin/debootstrap", "--variant=minbase",
                                    "--include=python3,python3-cloudpickle", "bookworm",
                                    state.path() + "/images/default.partial/rootfs",
                                    "http://deb.example.org/debian"});
  CHECK_FALSE(fs::exists(state.path() + "/images/default.partial"));

  // A second object for the same state dir (a restarted daemon) finds it built.
  default_image again(state.path(), {}, options_with(fake));
  CHECK(again.prepare() == *rootfs);
  CHECK(fake.call_count() == 1);
}

TEST_CASE("the default image build removes apt's downloaded packages and lists") {
  temp_dir state;
  fake_debootstrap fake;
  default_image image(state.path(), {}, options_with(fake));
  auto rootfs = image.prepare();
  REQUIRE(rootfs);
  CHECK_FALSE(fs::exists(*rootfs + "/var/cache/apt/archives/python3_3.11.deb"));
  CHECK_FALSE(fs::exists(*rootfs + "/var/cache/apt/pkgcache.bin"));
  CHECK_FALSE(fs::exists(*rootfs + "/var/lib/apt/lists/deb.example.org_dists_bookworm_InRelease"));
  CHECK(fs::exists(*rootfs + "/usr/bin/python3"));
}

TEST_CASE("concurrent callers of one process build the default image once") {
  temp_dir state;
  fake_debootstrap fake;
  fake.delay = std::chrono::milliseconds(200);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      default_image image(state.path(), {}, options_with(fake));
      if (auto rootfs = image.prepare(); rootfs && fs::exists(*rootfs + "/usr/bin/python3"))
        ++ok;
    });
  for (auto& t : threads)
    t.join();
  CHECK(ok == 4);
  CHECK(fake.call_count() == 1);
  CHECK(fake.max_running == 1);
}

TEST_CASE("a failed default image build leaves nothing behind and the next call builds again") {
  temp_dir state;
  fake_debootstrap fake;
  fake.fail = true;
  default_image image(state.path(), {}, options_with(fake));
  auto failed = image.prepare();
  REQUIRE_FALSE(failed);
  CHECK(shoal::code_of(failed.error()) == shoal::errc::unavailable);
  CHECK(shoal::message_of(failed.error()).find("debootstrap exited with code 1")
        != std::string::npos);
  CHECK_FALSE(fs::exists(state.path() + "/images/default"));
  CHECK_FALSE(fs::exists(state.path() + "/images/default.partial"));

  fake.fail = false;
  CHECK(image.prepare());
  CHECK(fake.call_count() == 2);
}

TEST_CASE("a leftover partial build from a crash is discarded, never used") {
  temp_dir state;
  touch(state.path() + "/images/default.partial/rootfs/half-written");
  touch(state.path() + "/images/default.partial/image.spec",
        image_spec{}.key() + "\n"); // even with a marker, .partial is not trusted
  fake_debootstrap fake;
  default_image image(state.path(), {}, options_with(fake));
  CHECK_FALSE(image.ready());
  auto rootfs = image.prepare();
  REQUIRE(rootfs);
  CHECK(fake.call_count() == 1);
  CHECK_FALSE(fs::exists(*rootfs + "/half-written"));
  CHECK_FALSE(fs::exists(state.path() + "/images/default.partial"));
}

TEST_CASE("a changed image spec rebuilds the default image, a changed mirror does not") {
  temp_dir state;
  fake_debootstrap fake;
  {
    default_image image(state.path(), {}, options_with(fake));
    REQUIRE(image.prepare());
    touch(image.rootfs() + "/old-build");
  }
  {
    auto opts = options_with(fake);
    opts.mirror = "http://other.example.org/debian";
    default_image image(state.path(), {}, opts);
    REQUIRE(image.prepare());
    CHECK(fake.call_count() == 1);
  }
  image_spec with_numpy;
  with_numpy.packages.push_back("python3-numpy");
  default_image image(state.path(), with_numpy, options_with(fake));
  CHECK_FALSE(image.ready());
  auto rootfs = image.prepare();
  REQUIRE(rootfs);
  CHECK(fake.call_count() == 2);
  CHECK(fake.calls[1][4] == "--include=python3,python3-cloudpickle,python3-numpy");
  CHECK_FALSE(fs::exists(*rootfs + "/old-build"));
  std::ifstream marker(image.marker());
  std::string text;
  std::getline(marker, text);
  CHECK(text == with_numpy.key());
  CHECK_FALSE(fs::exists(state.path() + "/images/default.stale"));
}

TEST_CASE("the default image reads its mirror from the apt sources when none is configured") {
  temp_dir state;
  temp_dir etc;
  fs::create_directories(etc.sub("sources.list.d"));
  std::ofstream(etc.sub("sources.list.d") + "/debian.sources")
    << "Types: deb\nURIs: http://apt.example.org/debian/\nSuites: bookworm\nComponents: main\n";
  fake_debootstrap fake;
  default_image_options opts;
  opts.runner = fake.runner();
  opts.apt = apt_source_paths{etc.sub("sources.list.d"), etc.sub("sources.list")};
  default_image image(state.path(), {}, opts);
  REQUIRE(image.prepare());
  REQUIRE(fake.call_count() == 1);
  CHECK(fake.calls[0].back() == "http://apt.example.org/debian");

  temp_dir empty_etc;
  opts.apt = apt_source_paths{empty_etc.sub("none.d"), empty_etc.sub("sources.list")};
  temp_dir state2;
  default_image unconfigured(state2.path(), {}, opts);
  auto failed = unconfigured.prepare();
  REQUIRE_FALSE(failed);
  CHECK(shoal::code_of(failed.error()) == shoal::errc::not_found);
  CHECK(fake.call_count() == 1);
}

TEST_CASE("run_command streams a program's output lines and reports a non-zero exit") {
  std::vector<std::string> lines;
  auto err = run_command({"/bin/sh", "-c", "echo one; echo two >&2; printf three"},
                         [&](std::string_view line) { lines.emplace_back(line); });
  CHECK_FALSE(err);
  CHECK(lines == std::vector<std::string>{"one", "two", "three"});

  auto failed = run_command({"/bin/sh", "-c", "echo boom; exit 3"}, {});
  REQUIRE(failed);
  CHECK(shoal::message_of(failed).find("exited with code 3") != std::string::npos);
  CHECK(shoal::message_of(failed).find("boom") != std::string::npos);

  CHECK(run_command({"/nonexistent/debootstrap"}, {}));
}
