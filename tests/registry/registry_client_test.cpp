#include "fs/registry/registry_client.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "fs/chunk_store.hpp"
#include "fs/layer.hpp"
#include "fs/tree.hpp"
#include "runtime/errc.hpp"
#include "tests/registry/registry_fixture.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal;
using namespace shoal::registry;
using shoal::test::temp_dir;

namespace {

std::unique_ptr<fs::chunk_store> open_store(const std::string& dir) {
  fs::chunk_store_options o;
  o.sync = false;
  auto s = fs::chunk_store::open(dir, o);
  if (!s)
    FAIL("chunk_store::open(" << dir << "): " << message_of(s.error()));
  return std::move(*s);
}

image_reference ref_of(const std::string& text) {
  auto r = parse_reference(text, "");
  if (!r)
    FAIL("parse_reference(" << text << "): " << message_of(r.error()));
  return *r;
}

struct pull_result {
  caf::expected<pulled_image> image;
  std::vector<std::string> lines;
};

pull_result pull(const registry_client& client, const std::string& ref, fs::chunk_store& store,
                 const registry_credentials& creds = {}) {
  std::vector<std::string> lines;
  auto image = client.pull(ref_of(ref), creds, store,
                           [&lines](std::string_view l) { lines.emplace_back(l); });
  return {std::move(image), std::move(lines)};
}

pulled_image pull_ok(const registry_client& client, const std::string& ref, fs::chunk_store& store,
                     const registry_credentials& creds = {}) {
  auto r = pull(client, ref, store, creds);
  if (!r.image)
    FAIL("pull " << ref << ": [" << to_string(code_of(r.image.error())) << "] "
                 << message_of(r.image.error()));
  return std::move(*r.image);
}

fs::layer merged(const fs::chunk_store& store, const pulled_image& img) {
  std::vector<fs::layer> layers;
  for (const auto& id : img.layers) {
    auto l = fs::load_layer(store, id);
    if (!l)
      FAIL("load_layer " << id.hex() << ": " << message_of(l.error()));
    layers.push_back(std::move(*l));
  }
  return fs::merge(layers);
}

const fs::entry* find(const fs::layer& l, const std::string& path) {
  for (const auto& e : l.entries)
    if (e.path == path)
      return &e;
  return nullptr;
}

std::string content(const fs::chunk_store& store, const fs::entry& e) {
  std::vector<fs::chunk_id> ids;
  for (const auto& c : e.chunks)
    ids.push_back(c.id);
  auto chunks = store.get(ids);
  if (!chunks)
    FAIL("reading " << e.path << ": " << message_of(chunks.error()));
  std::string out;
  for (const auto& c : *chunks)
    out += c;
  return out;
}

bool any_line_contains(const std::vector<std::string>& lines, const std::string& text) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.find(text) != std::string::npos; });
}

/// The busybox image's files, as every pull of it must show them.
void check_busybox_tree(const fs::chunk_store& store, const pulled_image& img) {
  fs::layer tree = merged(store, img);
  const fs::entry* busybox = find(tree, "bin/busybox");
  REQUIRE(busybox != nullptr);
  CHECK(busybox->kind == fs::entry_kind::file);
  CHECK((busybox->mode & 0111) != 0);
  CHECK(content(store, *busybox) == test::read_text("/bin/busybox"));
  const fs::entry* sh = find(tree, "bin/sh");
  REQUIRE(sh != nullptr);
  CHECK(sh->kind == fs::entry_kind::symlink);
  CHECK(sh->link_target == "busybox");
  const fs::entry* motd = find(tree, "etc/motd");
  REQUIRE(motd != nullptr);
  CHECK(content(store, *motd) == test::busybox_motd);
  const fs::entry* two = find(tree, "data/two.txt");
  REQUIRE(two != nullptr);
  CHECK(content(store, *two) == "two\n");
  CHECK(find(tree, "gone.txt") == nullptr); // removed by layer 2's whiteout
  for (const auto& e : tree.entries)
    CHECK(e.kind != fs::entry_kind::whiteout);
}

} // namespace

TEST_CASE("an image pushed to a local registry pulls into layers that merge to its files") {
  temp_dir dir;
  test::local_registry reg{dir.sub("registry")};
  auto img = test::make_busybox_image(dir.sub("image"), "1");
  test::push_image(img, reg.address(), "shoal/busybox", "1");
  auto store = open_store(dir.sub("chunks"));

  registry_client client;
  auto r = pull(client, reg.address() + "/shoal/busybox:1", *store);
  REQUIRE(r.image);
  const pulled_image& got = *r.image;
  REQUIRE(got.layers.size() == 2);
  CHECK(got.layers_downloaded == 2);
  check_busybox_tree(*store, got);

  // The second layer holds the whiteout itself.
  auto top = fs::load_layer(*store, got.layers[1]);
  REQUIRE(top);
  const fs::entry* wh = find(*top, "gone.txt");
  REQUIRE(wh != nullptr);
  CHECK(wh->kind == fs::entry_kind::whiteout);

  CHECK(got.config.env
        == std::vector<std::pair<std::string, std::string>>{{"A", "1"}, {"B", "two words"}});
  CHECK(got.config.workdir == "/w");
  CHECK(got.config.entrypoint == std::vector<std::string>{"/bin/sh", "-c"});
  CHECK(got.config.cmd == std::vector<std::string>{"echo hi"});

  std::string raw = test::raw_manifest(reg.address(), "shoal/busybox", "1");
  CHECK(got.manifest_digest == test::sha256_of(dir.path(), raw));
  CHECK(got.index_digest == got.manifest_digest);
  CHECK(got.compressed_bytes > 500000); // busybox, gzip-compressed

  CHECK(any_line_contains(r.lines, "pulling " + reg.address() + "/shoal/busybox:1 (2 layers, "));
  CHECK(any_line_contains(r.lines, " done"));
}

TEST_CASE("a second pull of the same image downloads and imports nothing") {
  temp_dir dir;
  test::local_registry reg{dir.sub("registry")};
  auto img = test::make_busybox_image(dir.sub("image"), "1");
  test::push_image(img, reg.address(), "busybox", "1");
  test::push_image(img, reg.address(), "busybox", "again"); // same blobs, another tag
  auto store = open_store(dir.sub("chunks"));
  registry_client client;

  auto first = pull_ok(client, reg.address() + "/busybox:1", *store);
  CHECK(first.layers_downloaded == 2);
  auto puts_before = store->stats().puts;

  auto second = pull(client, reg.address() + "/busybox:again", *store);
  REQUIRE(second.image);
  CHECK(second.image->layers == first.layers);
  CHECK(second.image->layers_downloaded == 0);
  CHECK(store->stats().puts == puts_before);
  CHECK(any_line_contains(second.lines, "cached"));
  check_busybox_tree(*store, *second.image);

  // The cache survives the store being reopened (it is a file beside the packs).
  std::string cache = test::read_text(layer_cache_path(*store));
  CHECK(cache.find(first.layers[0].hex()) != std::string::npos);
  store.reset();
  store = open_store(dir.sub("chunks"));
  auto third = pull_ok(client, reg.address() + "/busybox:1", *store);
  CHECK(third.layers_downloaded == 0);
  CHECK(third.layers == first.layers);
}

TEST_CASE("zstd and Docker schema 2 images pull to the same layers as the OCI gzip image") {
  temp_dir dir;
  test::local_registry reg{dir.sub("registry")};
  auto img = test::make_busybox_image(dir.sub("image"), "1");
  // zstd first: pushed after the gzip blobs, skopeo would reuse those instead of recompressing.
  test::push_image(img, reg.address(), "busybox", "zstd", {"", "zstd", ""});
  test::push_image(img, reg.address(), "busybox", "gzip");
  test::push_image(img, reg.address(), "busybox", "docker", {"", "", "v2s2"});
  std::string zstd_manifest = test::raw_manifest(reg.address(), "busybox", "zstd");
  REQUIRE(zstd_manifest.find("application/vnd.oci.image.layer.v1.tar+zstd") != std::string::npos);
  std::string docker_manifest = test::raw_manifest(reg.address(), "busybox", "docker");
  REQUIRE(docker_manifest.find("application/vnd.docker.image.rootfs.diff.tar.gzip")
          != std::string::npos);

  auto store = open_store(dir.sub("chunks"));
  registry_client client;
  auto gzip = pull_ok(client, reg.address() + "/busybox:gzip", *store);
  auto zstd = pull_ok(client, reg.address() + "/busybox:zstd", *store);
  auto docker = pull_ok(client, reg.address() + "/busybox:docker", *store);
  CHECK(zstd.layers_downloaded == 2); // other blobs, so downloaded ...
  CHECK(zstd.layers == gzip.layers);  // ... and the same tar inside
  CHECK(docker.layers == gzip.layers);
  CHECK(docker.config.workdir == "/w");
  check_busybox_tree(*store, zstd);
}

TEST_CASE("a manifest list resolves to the image of the requested platform") {
  temp_dir dir;
  test::local_registry reg{dir.sub("registry")};
  auto amd = test::make_files_image(dir.sub("image"), "amd", {{"arch.txt", "amd64\n"}});
  auto arm = test::make_files_image(dir.sub("image"), "arm", {{"arch.txt", "arm64 v8\n"}});
  auto arm7 = test::make_files_image(dir.sub("image"), "arm7", {{"arch.txt", "arm v7\n"}});
  for (auto* img : {&amd, &arm, &arm7}) {
    test::push_image(*img, reg.address(), "multi", img->tag + "-docker", {"", "", "v2s2"});
    test::push_image(*img, reg.address(), "multi", img->tag + "-oci");
  }
  // arm64 first, so taking the first entry would be wrong.
  std::string list_digest = test::put_manifest_list(
    dir.path(), reg.address(), "multi", "list",
    {{"arm-docker", "linux", "arm64", "v8"},
     {"arm7-docker", "linux", "arm", "v7"},
     {"amd-docker", "linux", "amd64", ""}});
  test::put_manifest_list(dir.path(), reg.address(), "multi", "index",
                          {{"arm-oci", "linux", "arm64", "v8"}, {"amd-oci", "linux", "amd64", ""}},
                          true);

  auto store = open_store(dir.sub("chunks"));
  auto arch_of = [&](const pulled_image& img) {
    fs::layer tree = merged(*store, img);
    const fs::entry* e = find(tree, "arch.txt");
    REQUIRE(e != nullptr);
    return content(*store, *e);
  };

  registry_client client; // linux/amd64
  auto r = pull(client, reg.address() + "/multi:list", *store);
  REQUIRE(r.image);
  CHECK(arch_of(*r.image) == "amd64\n");
  CHECK(r.image->index_digest == list_digest);
  CHECK(r.image->manifest_digest
        == test::sha256_of(dir.path(), test::raw_manifest(reg.address(), "multi", "amd-docker")));
  CHECK(any_line_contains(r.lines, "linux/amd64"));

  CHECK(arch_of(pull_ok(client, reg.address() + "/multi:index", *store)) == "amd64\n");
  // Pinned by the list's digest.
  CHECK(arch_of(pull_ok(client, reg.address() + "/multi@" + list_digest, *store)) == "amd64\n");

  registry_client::options arm_opts;
  arm_opts.platform_arch = "arm";
  arm_opts.platform_variant = "v7";
  CHECK(arch_of(pull_ok(registry_client{arm_opts}, reg.address() + "/multi:list", *store))
        == "arm v7\n");
  arm_opts.platform_arch = "arm64";
  arm_opts.platform_variant = "";
  CHECK(arch_of(pull_ok(registry_client{arm_opts}, reg.address() + "/multi:index", *store))
        == "arm64 v8\n");

  registry_client::options s390;
  s390.platform_arch = "s390x";
  auto none = pull(registry_client{s390}, reg.address() + "/multi:list", *store);
  REQUIRE(!none.image);
  CHECK(code_of(none.image.error()) == errc::not_found);
  CHECK_THAT(message_of(none.image.error()),
             Catch::Contains("no linux/s390x variant") && Catch::Contains("linux/arm64/v8")
               && Catch::Contains("linux/amd64"));
}

TEST_CASE("pulling by digest verifies the manifest, and an unknown digest is not_found") {
  temp_dir dir;
  test::local_registry reg{dir.sub("registry")};
  auto img = test::make_files_image(dir.sub("image"), "1", {{"hello.txt", "hello\n"}});
  test::push_image(img, reg.address(), "pinned", "1");
  std::string digest =
    test::sha256_of(dir.path(), test::raw_manifest(reg.address(), "pinned", "1"));
  auto store = open_store(dir.sub("chunks"));
  registry_client client;

  auto got = pull_ok(client, reg.address() + "/pinned@" + digest, *store);
  CHECK(got.manifest_digest == digest);
  REQUIRE(got.layers.size() == 1);

  std::string other = "sha256:" + std::string(64, 'e');
  auto missing = pull(client, reg.address() + "/pinned@" + other, *store);
  REQUIRE(!missing.image);
  CHECK(code_of(missing.image.error()) == errc::not_found);
  CHECK_THAT(message_of(missing.image.error()), Catch::Contains(other));
}

TEST_CASE("a missing tag or repository is not_found with a message naming the image") {
  temp_dir dir;
  test::local_registry reg{dir.sub("registry")};
  auto img = test::make_files_image(dir.sub("image"), "1", {{"hello.txt", "hello\n"}});
  test::push_image(img, reg.address(), "present", "1");
  auto store = open_store(dir.sub("chunks"));
  registry_client client;

  auto no_tag = pull(client, reg.address() + "/present:nope", *store);
  REQUIRE(!no_tag.image);
  CHECK(code_of(no_tag.image.error()) == errc::not_found);
  CHECK_THAT(message_of(no_tag.image.error()),
             Catch::Contains("no image '" + reg.address() + "/present:nope' in the registry")
               && Catch::Contains("skopeo list-tags docker://" + reg.address() + "/present"));

  auto no_repo = pull(client, reg.address() + "/absent/thing:1", *store);
  REQUIRE(!no_repo.image);
  CHECK(code_of(no_repo.image.error()) == errc::not_found);
  CHECK_THAT(message_of(no_repo.image.error()), Catch::Contains(reg.address() + "/absent/thing:1"));
}

TEST_CASE("a registry with htpasswd auth takes the right credentials and names the problem "
          "otherwise") {
  temp_dir dir;
  test::local_registry reg{dir.sub("registry"), {"shoaluser", "s3cret-pass"}};
  auto img = test::make_busybox_image(dir.sub("image"), "1");
  test::push_image(img, reg.address(), "private/busybox", "1", {"shoaluser:s3cret-pass", "", ""});
  auto store = open_store(dir.sub("chunks"));
  registry_client client;
  const std::string ref = reg.address() + "/private/busybox:1";

  auto anonymous = pull(client, ref, *store);
  REQUIRE(!anonymous.image);
  CHECK(code_of(anonymous.image.error()) == errc::permission_denied);
  CHECK_THAT(message_of(anonymous.image.error()),
             Catch::Contains("the registry " + reg.address() + " requires a login")
               && Catch::Contains("REGISTRY_USERNAME") && Catch::Contains("REGISTRY_PASSWORD"));

  auto wrong = pull(client, ref, *store, {"shoaluser", "wrong-pass"});
  REQUIRE(!wrong.image);
  CHECK(code_of(wrong.image.error()) == errc::permission_denied);
  std::string msg = message_of(wrong.image.error());
  CHECK_THAT(msg, Catch::Contains("the registry " + reg.address()
                                  + " rejected the credentials for user 'shoaluser' (HTTP 401)"));
  CHECK(msg.find("wrong-pass") == std::string::npos);

  auto right = pull(client, ref, *store, {"shoaluser", "s3cret-pass"});
  REQUIRE(right.image);
  check_busybox_tree(*store, *right.image);
  for (const auto& line : right.lines)
    CHECK(line.find("s3cret-pass") == std::string::npos);
}

TEST_CASE("a corrupted layer blob is an error naming the blob and is not cached") {
  temp_dir dir;
  test::local_registry reg{dir.sub("registry")};
  auto img = test::make_files_image(dir.sub("image"), "1",
                                    {{"a.txt", std::string(100000, 'a')}, {"b.txt", "b\n"}});
  test::push_image(img, reg.address(), "corrupt", "1");
  std::string manifest = test::raw_manifest(reg.address(), "corrupt", "1");
  // The one layer's digest: the second "sha256:" in the manifest (the first is the config).
  size_t layers = manifest.find("\"layers\"");
  REQUIRE(layers != std::string::npos);
  size_t at = manifest.find("sha256:", layers);
  REQUIRE(at != std::string::npos);
  std::string layer_digest = manifest.substr(at, 71);

  // Flip one byte in the middle of the registry's copy; the registry serves it as is.
  std::string path = reg.blob_path(layer_digest);
  std::string bytes = test::read_text(path);
  REQUIRE(bytes.size() > 100);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x55);
  test::write_text(path, bytes);

  auto store = open_store(dir.sub("chunks"));
  registry_client client;
  auto r = pull(client, reg.address() + "/corrupt:1", *store);
  REQUIRE(!r.image);
  CHECK(code_of(r.image.error()) == errc::storage_failure);
  CHECK_THAT(message_of(r.image.error()),
             Catch::Contains("blob " + layer_digest) && Catch::Contains("does not match"));
  CHECK(test::read_text(layer_cache_path(*store)).find(layer_digest) == std::string::npos);
}

TEST_CASE("a registry nobody listens on is unavailable, naming the host") {
  temp_dir dir;
  auto store = open_store(dir.sub("chunks"));
  std::string address = "127.0.0.1:" + std::to_string(test::free_loopback_port());
  registry_client::options opts;
  opts.timeout_s = 10;
  auto r = pull(registry_client{opts}, address + "/nothing:1", *store);
  REQUIRE(!r.image);
  CHECK(code_of(r.image.error()) == errc::unavailable);
  CHECK_THAT(message_of(r.image.error()), Catch::Contains("the registry " + address));
}

TEST_CASE("a registry that speaks plain http is refused over https unless it is insecure") {
  temp_dir dir;
  test::local_registry reg{dir.sub("registry")};
  auto img = test::make_files_image(dir.sub("image"), "1", {{"hello.txt", "hello\n"}});
  test::push_image(img, reg.address(), "plain", "1");
  auto store = open_store(dir.sub("chunks"));

  registry_client::options strict;
  strict.insecure_loopback = false;
  strict.timeout_s = 20;
  auto refused = pull(registry_client{strict}, reg.address() + "/plain:1", *store);
  REQUIRE(!refused.image);
  CHECK(code_of(refused.image.error()) == errc::unavailable);
  CHECK_THAT(message_of(refused.image.error()), Catch::Contains(reg.address()));

  registry_client::options listed = strict;
  listed.insecure_registries = {reg.address()};
  CHECK(pull_ok(registry_client{listed}, reg.address() + "/plain:1", *store).layers.size() == 1);
}
