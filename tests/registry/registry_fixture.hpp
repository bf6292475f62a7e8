#pragma once
/// Test helpers around a real registry: start Debian's `docker-registry` on a free loopback port
/// (optionally with htpasswd auth), build OCI images with `umoci`, push them with `skopeo`, and
/// PUT manifest lists with `curl`. Every helper throws std::runtime_error with the command's
/// output when a tool fails, so a broken environment fails the test loudly.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace shoal::test {

/// Single-quotes `s` for sh.
inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

struct command_result {
  int status = -1;     ///< exit status (-1: did not exit normally)
  std::string output;  ///< stdout and stderr
};

/// Runs `cmd` with sh, capturing stdout and stderr.
inline command_result run_command(const std::string& cmd) {
  command_result out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr)
    throw std::runtime_error("popen failed for: " + cmd);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    out.output.append(buf, n);
  int status = ::pclose(p);
  out.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

/// Runs `cmd`; throws with its output unless it exits 0. Returns the output.
inline std::string must_run(const std::string& cmd) {
  auto r = run_command(cmd);
  if (r.status != 0)
    throw std::runtime_error("command failed (exit " + std::to_string(r.status) + "): " + cmd
                             + "\n" + r.output);
  return r.output;
}

/// A loopback TCP port nobody listened on a moment ago.
inline int free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0
      || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("cannot find a free loopback port");
  ::close(fd);
  return ntohs(a.sin_port);
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream f{path, std::ios::binary | std::ios::trunc};
  f << text;
  if (!f)
    throw std::runtime_error("cannot write " + path);
}

inline std::string read_text(const std::string& path) {
  std::ifstream f{path, std::ios::binary};
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// A `docker-registry` process serving `<dir>/data` on 127.0.0.1:<free port>; killed (and
/// waited for) when the object dies. With a username, it demands htpasswd (Basic) auth.
class local_registry {
public:
  struct options {
    std::string username;  ///< empty: no auth
    std::string password;
  };

  explicit local_registry(const std::string& dir) : local_registry(dir, options{}) {}

  local_registry(const std::string& dir, const options& opts) : dir_(dir) {
    must_run("mkdir -p " + shell_quote(dir_ + "/data"));
    int port = free_loopback_port();
    address_ = "127.0.0.1:" + std::to_string(port);
    std::string config = "version: 0.1\n"
                         "log:\n  level: warn\n"
                         "storage:\n  filesystem:\n    rootdirectory: "
                         + dir_ + "/data\n  delete:\n    enabled: true\n"
                         + "http:\n  addr: " + address_ + "\n";
    if (!opts.username.empty()) {
      must_run("htpasswd -Bbn " + shell_quote(opts.username) + " " + shell_quote(opts.password)
               + " > " + shell_quote(dir_ + "/htpasswd"));
      config += "auth:\n  htpasswd:\n    realm: shoal\n    path: " + dir_ + "/htpasswd\n";
    }
    write_text(dir_ + "/config.yml", config);
    std::string log = dir_ + "/registry.log";
    pid_ = ::fork();
    if (pid_ < 0)
      throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      FILE* f = std::fopen(log.c_str(), "w");
      if (f != nullptr) {
        ::dup2(fileno(f), 1);
        ::dup2(fileno(f), 2);
      }
      std::string cfg = dir_ + "/config.yml";
      ::execl("/usr/bin/docker-registry", "docker-registry", "serve", cfg.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Ready when GET /v2/ answers (200, or 401 with auth).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      auto r = run_command("curl -s -o /dev/null -w '%{http_code}' http://" + address_ + "/v2/");
      if (r.output == "200" || r.output == "401")
        break;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("docker-registry exited at start:\n" + read_text(log));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        stop();
        throw std::runtime_error("docker-registry did not answer on " + address_ + ":\n"
                                 + read_text(log));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  ~local_registry() { stop(); }
  local_registry(const local_registry&) = delete;
  local_registry& operator=(const local_registry&) = delete;

  /// "127.0.0.1:PORT"
  const std::string& address() const noexcept { return address_; }
  /// The registry's storage root (blobs under docker/registry/v2/blobs/sha256/xx/<hex>/data).
  std::string data_dir() const { return dir_ + "/data"; }
  /// Where the registry keeps the bytes of `digest` ("sha256:…").
  std::string blob_path(const std::string& digest) const {
    std::string hex = digest.substr(7);
    return data_dir() + "/docker/registry/v2/blobs/sha256/" + hex.substr(0, 2) + "/" + hex
           + "/data";
  }

  void stop() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

private:
  std::string dir_;
  std::string address_;
  pid_t pid_ = -1;
};

/// An OCI image layout built with umoci: `layout()` + `:tag`.
struct oci_image {
  std::string layout;
  std::string tag;
  std::string ref() const { return layout + ":" + tag; }
};

/// The text of etc/motd in make_busybox_image's images.
inline const std::string busybox_motd = "hello from a shoal test image\n";

/// Builds a two-layer image in `<dir>/layout`:
///   layer 1: bin/busybox (a copy of /bin/busybox), bin/sh -> busybox, etc/motd, gone.txt,
///            plus `extra_files` (relative path -> content);
///   layer 2: deletes gone.txt (an OCI whiteout) and adds data/two.txt ("two\n").
/// Config: `env` ("K=V"), WorkingDir /w, Entrypoint ["/bin/sh", "-c"], Cmd ["echo hi"].
inline oci_image make_busybox_image(const std::string& dir, const std::string& tag,
                                    const std::vector<std::string>& env = {"A=1", "B=two words"},
                                    const std::vector<std::pair<std::string, std::string>>&
                                      extra_files = {}) {
  oci_image img{dir + "/layout", tag};
  std::string bundle = dir + "/bundle-" + tag;
  std::string rootless = ::geteuid() == 0 ? "" : " --rootless";
  auto q = shell_quote;
  if (run_command("test -f " + q(img.layout + "/index.json")).status != 0)
    must_run("umoci init --layout " + q(img.layout));
  must_run("umoci new --image " + q(img.ref()));
  must_run("umoci unpack" + rootless + " --image " + q(img.ref()) + " " + q(bundle));
  std::string root = bundle + "/rootfs";
  must_run("mkdir -p " + q(root + "/bin") + " " + q(root + "/etc") + " && cp /bin/busybox "
           + q(root + "/bin/busybox") + " && ln -s busybox " + q(root + "/bin/sh"));
  write_text(root + "/etc/motd", busybox_motd);
  write_text(root + "/gone.txt", "this file is deleted by layer 2\n");
  for (const auto& [path, content] : extra_files) {
    std::string full = root + "/" + path;
    must_run("mkdir -p \"$(dirname " + q(full) + ")\"");
    write_text(full, content);
  }
  must_run("umoci repack --refresh-bundle --image " + q(img.ref()) + " " + q(bundle));
  must_run("rm " + q(root + "/gone.txt") + " && mkdir -p " + q(root + "/data"));
  write_text(root + "/data/two.txt", "two\n");
  must_run("umoci repack --image " + q(img.ref()) + " " + q(bundle));
  std::string cfg = "umoci config --image " + q(img.ref())
                    + " --config.workingdir /w --config.entrypoint /bin/sh"
                      " --config.entrypoint -c --config.cmd 'echo hi'";
  for (const auto& kv : env)
    cfg += " --config.env " + q(kv);
  must_run(cfg);
  must_run("rm -rf " + q(bundle));
  return img;
}

/// Builds a one-layer image holding only `files` (relative path -> content).
inline oci_image make_files_image(const std::string& dir, const std::string& tag,
                                  const std::vector<std::pair<std::string, std::string>>& files) {
  oci_image img{dir + "/layout", tag};
  std::string bundle = dir + "/bundle-" + tag;
  std::string rootless = ::geteuid() == 0 ? "" : " --rootless";
  auto q = shell_quote;
  if (run_command("test -f " + q(img.layout + "/index.json")).status != 0)
    must_run("umoci init --layout " + q(img.layout));
  must_run("umoci new --image " + q(img.ref()));
  must_run("umoci unpack" + rootless + " --image " + q(img.ref()) + " " + q(bundle));
  for (const auto& [path, content] : files) {
    std::string full = bundle + "/rootfs/" + path;
    must_run("mkdir -p \"$(dirname " + q(full) + ")\"");
    write_text(full, content);
  }
  must_run("umoci repack --image " + q(img.ref()) + " " + q(bundle));
  must_run("rm -rf " + q(bundle));
  return img;
}

struct push_options {
  std::string creds;        ///< "user:pass" for an auth registry
  std::string compression;  ///< "" (gzip, as built), or "zstd" / "gzip" to recompress
  std::string format;       ///< "" (OCI, as built), or "v2s2" (Docker schema 2)
};

/// `skopeo copy oci:LAYOUT:TAG docker://REGISTRY/NAME:DEST_TAG`.
inline void push_image(const oci_image& img, const std::string& registry, const std::string& name,
                       const std::string& dest_tag, const push_options& opts = {}) {
  std::string cmd = "skopeo copy --quiet --dest-tls-verify=false";
  if (!opts.creds.empty())
    cmd += " --dest-creds " + shell_quote(opts.creds);
  if (!opts.compression.empty())
    cmd += " --dest-compress --dest-compress-format " + shell_quote(opts.compression);
  if (!opts.format.empty())
    cmd += " --format " + shell_quote(opts.format);
  cmd += " " + shell_quote("oci:" + img.ref()) + " "
         + shell_quote("docker://" + registry + "/" + name + ":" + dest_tag);
  must_run(cmd);
}

/// The raw manifest bytes of REGISTRY/NAME:REF as the registry stores them.
inline std::string raw_manifest(const std::string& registry, const std::string& name,
                                const std::string& ref, const std::string& creds = "") {
  std::string cmd = "skopeo inspect --raw --tls-verify=false";
  if (!creds.empty())
    cmd += " --creds " + shell_quote(creds);
  return must_run(cmd + " " + shell_quote("docker://" + registry + "/" + name + ":" + ref));
}

/// "sha256:<hex>" of `bytes` (sha256sum).
inline std::string sha256_of(const std::string& dir, const std::string& bytes) {
  std::string path = dir + "/sha256-input";
  write_text(path, bytes);
  std::string out = must_run("sha256sum " + shell_quote(path));
  return "sha256:" + out.substr(0, 64);
}

/// One entry of a manifest list: a pushed manifest and the platform it claims.
struct platform_entry {
  std::string tag;           ///< a tag already pushed to the same repository
  std::string os = "linux";
  std::string architecture;
  std::string variant;
};

/// PUTs a manifest list (Docker `manifest.list.v2`, or an OCI index when `oci`) naming the
/// manifests of `entries` as REGISTRY/NAME:TAG; returns its digest. The entries must have been
/// pushed in the matching format (v2s2 for a Docker list, OCI for an index).
inline std::string put_manifest_list(const std::string& dir, const std::string& registry,
                                     const std::string& name, const std::string& tag,
                                     const std::vector<platform_entry>& entries, bool oci = false) {
  std::string list_type = oci ? "application/vnd.oci.image.index.v1+json"
                              : "application/vnd.docker.distribution.manifest.list.v2+json";
  std::string entry_type = oci ? "application/vnd.oci.image.manifest.v1+json"
                               : "application/vnd.docker.distribution.manifest.v2+json";
  std::string json = "{\"schemaVersion\":2,\"mediaType\":\"" + list_type + "\",\"manifests\":[";
  for (size_t i = 0; i < entries.size(); ++i) {
    std::string raw = raw_manifest(registry, name, entries[i].tag);
    json += (i == 0 ? "" : ",");
    json += "{\"mediaType\":\"" + entry_type + "\",\"digest\":\"" + sha256_of(dir, raw)
            + "\",\"size\":" + std::to_string(raw.size()) + ",\"platform\":{\"architecture\":\""
            + entries[i].architecture + "\",\"os\":\"" + entries[i].os + "\""
            + (entries[i].variant.empty() ? "" : ",\"variant\":\"" + entries[i].variant + "\"")
            + "}}";
  }
  json += "]}";
  std::string path = dir + "/manifest-list.json";
  write_text(path, json);
  std::string code = must_run("curl -s -o " + shell_quote(dir + "/put-answer") + " -w '%{http_code}'"
                              + " -X PUT -H " + shell_quote("Content-Type: " + list_type)
                              + " --data-binary @" + shell_quote(path) + " "
                              + shell_quote("http://" + registry + "/v2/" + name + "/manifests/"
                                            + tag));
  if (code != "201")
    throw std::runtime_error("PUT of the manifest list answered " + code + ": "
                             + read_text(dir + "/put-answer"));
  return sha256_of(dir, json);
}

} // namespace shoal::test
