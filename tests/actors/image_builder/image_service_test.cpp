// image_service: ids, the cache, build steps in real crun build containers (on a busybox tree
// added as a file layer, so no debootstrap is needed), trees, and concurrent builds.

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "actors/image_builder/image_service.hpp"
#include "fs/layer.hpp"
#include "runtime/container/crun_runtime.hpp"
#include "runtime/container/host_cgroups.hpp"
#include "runtime/container/overlay_rootfs.hpp"
#include "runtime/errc.hpp"
#include "storage/key.hpp"
#include "storage/store.hpp"
#include "tests/container/busybox_image.hpp"
#include "tests/support/temp_dir.hpp"

namespace {

namespace stdfs = std::filesystem;
using namespace shoal;
using namespace shoal::images;

/// Records what a build reports.
struct recorder final : build_progress {
  std::mutex m;
  std::vector<step_result> steps;
  std::vector<std::string> lines;
  void step(const step_result& r) override {
    std::lock_guard<std::mutex> g{m};
    steps.push_back(r);
  }
  void line(uint32_t, std::string text) override {
    std::lock_guard<std::mutex> g{m};
    lines.push_back(std::move(text));
  }
  bool saw_line(const std::string& needle) {
    std::lock_guard<std::mutex> g{m};
    for (const auto& l : lines)
      if (l.find(needle) != std::string::npos)
        return true;
    return false;
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A state dir with a store, a chunk store, crun, and a busybox tree uploaded as a blob.
class fixture {
public:
  fixture() {
    auto db = storage::store::open(tmp_.sub("db"));
    REQUIRE(db);
    db_ = std::move(*db);
    auto chunks = fs::chunk_store::open(tmp_.sub("chunks"));
    REQUIRE(chunks);
    chunks_ = std::move(*chunks);
    stdfs::create_directories(tmp_.sub("crun-state"));
    container::crun_options copts;
    copts.state_root = tmp_.sub("crun-state");
    runtime_ = std::make_unique<container::crun_runtime>(copts);
    image_service_options opts;
    opts.state_dir = tmp_.sub("state");
    service_ = std::make_unique<image_service>(*db_, chunks_, *runtime_, opts);
    // The busybox tree as an uploaded tar blob.
    test::make_busybox_image(tmp_.sub("busybox"));
    busybox_blob_ = put_blob_of_dir(tmp_.sub("busybox"));
  }

  /// Tars `dir` and stores it in the blobs table as the SDK's upload would; returns its hash.
  std::string put_blob_of_dir(const std::string& dir) {
    auto tar = tmp_.sub("upload.tar");
    auto cmd = "tar -C '" + dir + "' --numeric-owner -cf '" + tar + "' .";
    REQUIRE(std::system(cmd.c_str()) == 0);
    auto bytes = read_file(tar);
    auto hash = fs::hash_chunk(bytes).hex();
    storage::write_batch batch;
    batch.put(storage::table::blobs, storage::key{}.str(hash).bytes(), bytes);
    REQUIRE_FALSE(db_->write(batch, true));
    return hash;
  }

  image_step step(std::string kind, std::vector<std::string> args = {}, std::string blob = {}) {
    image_step s;
    s.kind = std::move(kind);
    s.args = std::move(args);
    s.blob = std::move(blob);
    return s;
  }

  /// scratch → busybox files → `extra`.
  image_spec busybox_spec(std::vector<image_step> extra = {}) {
    image_spec spec;
    spec.steps.push_back(step("scratch"));
    spec.steps.push_back(step("add_files", {"/"}, busybox_blob_));
    for (auto& s : extra)
      spec.steps.push_back(std::move(s));
    return spec;
  }

  image_service& service() { return *service_; }
  const std::string& busybox_blob() const { return busybox_blob_; }
  test::temp_dir& tmp() { return tmp_; }

private:
  test::temp_dir tmp_;
  std::unique_ptr<storage::store> db_;
  std::shared_ptr<fs::chunk_store> chunks_;
  std::unique_ptr<container::crun_runtime> runtime_;
  std::unique_ptr<image_service> service_;
  std::string busybox_blob_;
};

} // namespace

TEST_CASE("image ids hash the parent and the canonical step, never secrets or labels") {
  image_step a;
  a.kind = "run_commands";
  a.args = {"echo hi"};
  auto ca = canonical_step(a, 1);
  REQUIRE(ca);
  image_step b = a;
  b.env = {{"TOKEN", "s3cret"}};
  b.label = "RUN echo hi";
  b.force_build = true;
  auto cb = canonical_step(b, 1);
  REQUIRE(cb);
  CHECK(*ca == *cb);
  CHECK(ca->find("s3cret") == std::string::npos);
  CHECK(image_id_of("im-parent", *ca) == image_id_of("im-parent", *cb));
  CHECK(image_id_of("im-parent", *ca) != image_id_of("im-other", *ca));
  CHECK(image_id_of("", *ca).size() == 3 + 32);

  image_step c = a;
  c.args = {"echo hi", ""};
  CHECK(*canonical_step(c, 1) != *ca); // arguments are length-prefixed: no ambiguity

  image_step files;
  files.kind = "add_files";
  files.args = {"/"};
  files.blob = "aa";
  image_step files2 = files;
  files2.blob = "bb";
  CHECK(*canonical_step(files, 1) != *canonical_step(files2, 1));

  image_step fn;
  fn.kind = "run_function";
  fn.args = {"source-hash"};
  fn.blob = "pickle-1";
  image_step fn2 = fn;
  fn2.blob = "pickle-2"; // pickles differ between runs; the source hash names the function
  CHECK(*canonical_step(fn, 1) == *canonical_step(fn2, 1));
}

TEST_CASE("malformed specs are refused with the step named") {
  image_step apt;
  apt.kind = "apt_install";
  apt.args = {"curl"};
  auto first = canonical_step(apt, 0);
  REQUIRE_FALSE(first);
  CHECK(message_of(first.error()).find("step 1") != std::string::npos);
  CHECK(message_of(first.error()).find("starts with a base") != std::string::npos);

  image_step slim;
  slim.kind = "debian_slim";
  slim.args = {"3.12"};
  auto py = canonical_step(slim, 0);
  REQUIRE_FALSE(py);
  CHECK(code_of(py.error()) == errc::invalid_argument);
  CHECK(message_of(py.error()).find("offers Python 3.11") != std::string::npos);

  image_step base_later;
  base_later.kind = "scratch";
  CHECK_FALSE(canonical_step(base_later, 2));

  image_step unknown;
  unknown.kind = "frobnicate";
  auto u = canonical_step(unknown, 3);
  REQUIRE_FALSE(u);
  CHECK(message_of(u.error()).find("frobnicate") != std::string::npos);

  image_step wd;
  wd.kind = "workdir";
  wd.args = {"relative/dir"};
  CHECK_FALSE(canonical_step(wd, 1));
}

TEST_CASE("a spec of files and metadata builds once, then every step is cached") {
  fixture f;
  std::vector<image_step> extra;
  extra.push_back(f.step("env", {"GREETING=hello", "MODE=test"}));
  extra.push_back(f.step("workdir", {"/work"}));
  auto spec = f.busybox_spec(std::move(extra));

  auto first_progress = std::make_shared<recorder>();
  auto first = f.service().build(spec, first_progress);
  REQUIRE(first);
  REQUIRE(first->steps.size() == 4);
  for (const auto& s : first->steps)
    CHECK(s.status == step_status::built);
  CHECK(first->steps[1].layer_bytes > 0);
  CHECK(first->steps[0].reason == "no cached layer for this step (it or an input changed)");
  CHECK(first->steps[1].reason == "its parent was rebuilt");

  auto second_progress = std::make_shared<recorder>();
  auto second = f.service().build(spec, second_progress);
  REQUIRE(second);
  CHECK(second->image_id == first->image_id);
  for (const auto& s : second->steps) {
    CHECK(s.status == step_status::cached);
    CHECK(s.reason.empty());
  }

  auto rec = f.service().record(first->image_id);
  REQUIRE(rec);
  CHECK(rec->config.workdir == "/work");
  REQUIRE(rec->config.env.size() == 2);
  CHECK(rec->config.env[0] == std::make_pair(std::string{"GREETING"}, std::string{"hello"}));
  CHECK(rec->layers.size() == 1); // metadata steps add no layer
  CHECK(rec->python.empty());     // busybox has no Python

  auto tree = f.service().tree(first->image_id);
  REQUIRE(tree);
  CHECK(stdfs::exists(*tree + "/bin/busybox"));
  CHECK(stdfs::is_symlink(*tree + "/bin/sh"));
  CHECK(read_file(*tree + "/etc/image-marker") == "busybox test image\n");
  // The parent (files only) has the same layers and so the same tree.
  auto parent_tree = f.service().tree(first->steps[1].image_id);
  REQUIRE(parent_tree);
  CHECK(*parent_tree == *tree);
}

TEST_CASE("a command step runs in a crun build container and its changes become a layer") {
  fixture f;
  auto spec = f.busybox_spec({f.step("run_commands", {"echo built > /made", "busybox rm /etc/image-marker",
                                                      "mkdir -p /opt/tool && echo v1 > /opt/tool/version"})});
  auto progress = std::make_shared<recorder>();
  auto built = f.service().build(spec, progress);
  REQUIRE(built);
  CHECK(progress->saw_line("$ echo built > /made"));
  auto tree = f.service().tree(built->image_id);
  REQUIRE(tree);
  CHECK(read_file(*tree + "/made") == "built\n");
  CHECK(read_file(*tree + "/opt/tool/version") == "v1\n");
  CHECK_FALSE(stdfs::exists(*tree + "/etc/image-marker")); // the whiteout removed it
  CHECK(stdfs::exists(*tree + "/bin/busybox"));

  // The step's layer holds the step's work, not crun's mount points.
  auto rec = f.service().record(built->image_id);
  REQUIRE(rec);
  REQUIRE(rec->layers.size() == 2);
  auto digest = fs::chunk_id::from_hex(rec->layers[1]);
  REQUIRE(digest);
  auto layer = fs::load_layer(*f.service().chunks(), *digest);
  REQUIRE(layer);
  for (const auto& e : layer->entries) {
    INFO(e.path);
    CHECK(e.path.rfind("proc", 0) != 0);
    CHECK(e.path.rfind("shoal/build", 0) != 0);
    CHECK(e.path.rfind("dev", 0) != 0);
  }
  bool whiteout = false;
  for (const auto& e : layer->entries)
    whiteout |= e.path == "etc/image-marker" && e.kind == fs::entry_kind::whiteout;
  CHECK(whiteout);
}

TEST_CASE("a failing step names the step and quotes its output") {
  fixture f;
  auto failing = f.step("run_commands", {"echo about to fail", "echo oops >&2; exit 3"});
  failing.label = "RUN the broken thing";
  auto progress = std::make_shared<recorder>();
  auto built = f.service().build(f.busybox_spec({failing}), progress);
  REQUIRE_FALSE(built);
  auto msg = message_of(built.error());
  CHECK(code_of(built.error()) == errc::invalid_argument);
  CHECK(msg.find("step 3 (RUN the broken thing)") != std::string::npos);
  CHECK(msg.find("oops") != std::string::npos);
  CHECK(progress->saw_line("about to fail"));
  REQUIRE_FALSE(progress->steps.empty());
  CHECK(progress->steps.back().status == step_status::failed);
  // Nothing was recorded for the failed step: the next build tries again.
  auto again = f.service().build(f.busybox_spec({failing}), nullptr);
  CHECK_FALSE(again);
}

TEST_CASE("changing a step rebuilds from there on; force_build says so") {
  fixture f;
  auto v1 = f.busybox_spec({f.step("run_commands", {"echo one > /a"}),
                            f.step("run_commands", {"echo two > /b"})});
  REQUIRE(f.service().build(v1, nullptr));

  auto v2 = f.busybox_spec({f.step("run_commands", {"echo ONE > /a"}),
                            f.step("run_commands", {"echo two > /b"})});
  auto r2 = f.service().build(v2, nullptr);
  REQUIRE(r2);
  CHECK(r2->steps[0].status == step_status::cached);
  CHECK(r2->steps[1].status == step_status::cached);
  CHECK(r2->steps[2].status == step_status::built);
  CHECK(r2->steps[2].reason == "no cached layer for this step (it or an input changed)");
  CHECK(r2->steps[3].status == step_status::built);
  CHECK(r2->steps[3].reason == "its parent was rebuilt");
  auto tree = f.service().tree(r2->image_id);
  REQUIRE(tree);
  CHECK(read_file(*tree + "/a") == "ONE\n");
  CHECK(read_file(*tree + "/b") == "two\n");

  auto forced = v2;
  forced.steps[2].force_build = true;
  auto r3 = f.service().build(forced, nullptr);
  REQUIRE(r3);
  CHECK(r3->steps[1].status == step_status::cached);
  CHECK(r3->steps[2].reason == "forced (force_build=True)");
  CHECK(r3->steps[3].reason == "its parent was rebuilt");
  CHECK(r3->image_id == r2->image_id); // the same spec is the same image

  auto ignore = v2;
  ignore.ignore_cache = true;
  auto r4 = f.service().build(ignore, nullptr);
  REQUIRE(r4);
  CHECK(r4->steps[0].reason == "SHOAL_IGNORE_CACHE is set");
}

TEST_CASE("concurrent builds of the same image run each step once") {
  fixture f;
  auto spec = f.busybox_spec({f.step("run_commands", {"sleep 1", "echo ran-the-step"})});
  auto a = std::make_shared<recorder>();
  auto b = std::make_shared<recorder>();
  caf::expected<build_result> ra{caf::error{}};
  caf::expected<build_result> rb{caf::error{}};
  std::thread ta{[&] { ra = f.service().build(spec, a); }};
  std::thread tb{[&] { rb = f.service().build(spec, b); }};
  ta.join();
  tb.join();
  REQUIRE(ra);
  REQUIRE(rb);
  CHECK(ra->image_id == rb->image_id);
  // Exactly one of the two saw the command run.
  CHECK(a->saw_line("ran-the-step") != b->saw_line("ran-the-step"));
}

TEST_CASE("an image another image is built on cannot be removed") {
  fixture f;
  auto built = f.service().build(f.busybox_spec({f.step("env", {"A=1"})}), nullptr);
  REQUIRE(built);
  auto parent = built->steps[1].image_id;
  auto refused = f.service().remove(parent);
  REQUIRE(refused);
  CHECK(code_of(refused) == errc::invalid_argument);
  CHECK(message_of(refused).find(built->image_id) != std::string::npos);
  CHECK_FALSE(f.service().remove(built->image_id));
  CHECK_FALSE(f.service().remove(parent));
  auto gone = f.service().record(parent);
  REQUIRE_FALSE(gone);
  CHECK(code_of(gone.error()) == errc::not_found);
  auto listed = f.service().list();
  REQUIRE(listed);
  CHECK(listed->size() == 1); // the scratch base is left
}

TEST_CASE("garbage collection frees a removed image's tree and chunks, keeping a mounted tree") {
  fixture f;
  auto a = f.service().build(
    f.busybox_spec({f.step("run_commands", {"dd if=/dev/urandom of=/a bs=1M count=3 2>/dev/null"})}),
    nullptr);
  auto b = f.service().build(
    f.busybox_spec({f.step("run_commands", {"dd if=/dev/urandom of=/b bs=1M count=3 2>/dev/null"})}),
    nullptr);
  REQUIRE(a);
  REQUIRE(b);
  auto tree_a = f.service().tree(a->image_id);
  auto tree_b = f.service().tree(b->image_id);
  REQUIRE(tree_a);
  REQUIRE(tree_b);
  auto b_content = read_file(*tree_b + "/b");
  REQUIRE(b_content.size() == 3u << 20);
  auto chunks_before = f.service().chunks()->stats().chunks;

  // Nothing removed yet: nothing to collect.
  auto idle = f.service().collect_garbage();
  REQUIRE(idle);
  CHECK(idle->images == 4); // scratch, busybox files, a, b
  CHECK(idle->trees_removed == 0);
  CHECK(idle->chunks_removed == 0);

  REQUIRE_FALSE(f.service().remove(a->image_id));
  {
    // A container still runs on a's tree: the tree stays, its chunks go.
    auto overlay = container::overlay_rootfs::mount(std::vector<std::string>{*tree_a},
                                                    f.tmp().sub("bundle"));
    REQUIRE(overlay);
    auto busy = f.service().collect_garbage();
    REQUIRE(busy);
    CHECK(busy->images == 3);
    CHECK(busy->trees_removed == 0);
    REQUIRE(busy->trees_in_use.size() == 1);
    CHECK(*tree_a == f.tmp().sub("state") + "/images/trees/" + busy->trees_in_use[0]);
    CHECK(busy->chunks_removed == 4); // a's 3 MiB file (3 chunks) and its layer manifest
    CHECK(busy->chunk_bytes_removed > 3u << 20);
    CHECK(f.service().chunks()->stats().chunks == chunks_before - 4);
    CHECK(read_file(overlay->rootfs() + "/a").size() == 3u << 20); // the mounted tree still works
  }
  auto later = f.service().collect_garbage();
  REQUIRE(later);
  CHECK(later->trees_removed == 1);
  CHECK(later->trees_in_use.empty());
  CHECK(later->chunks_removed == 0);
  CHECK_FALSE(stdfs::exists(*tree_a));
  CHECK_FALSE(stdfs::exists(*tree_a + ".done"));

  // b is whole: its tree materialises again from the chunks that were kept.
  stdfs::remove(*tree_b + ".done");
  stdfs::remove_all(*tree_b);
  auto again = f.service().tree(b->image_id);
  REQUIRE(again);
  CHECK(read_file(*again + "/b") == b_content);
  CHECK(stdfs::exists(*again + "/bin/busybox"));
  // a builds again from scratch (its record is gone, so nothing is cached).
  auto rebuilt = f.service().build(
    f.busybox_spec({f.step("run_commands", {"dd if=/dev/urandom of=/a bs=1M count=3 2>/dev/null"})}),
    nullptr);
  REQUIRE(rebuilt);
  CHECK(rebuilt->image_id == a->image_id);
  CHECK(rebuilt->steps.back().status == step_status::built);
}
