#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <sys/stat.h>

#include "runtime/container/oci_spec.hpp"
#include "runtime/errc.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::container;
using shoal::test::temp_dir;

namespace {

/// Runs Debian's python3 on the config at `path`: `expr` sees the parsed document as `c`.
/// Returns what it printed, or "PARSE ERROR..." when json.load rejected the file.
std::string python_eval(const std::string& path, const std::string& expr) {
  auto expr_path = path + ".expr";
  std::ofstream(expr_path) << expr;
  std::string cmd = "/usr/bin/python3 -c 'import json,sys\n"
                    "try:\n c=json.load(open(sys.argv[1]))\n"
                    "except Exception as e:\n print(\"PARSE ERROR\", e); sys.exit(0)\n"
                    "print(eval(open(sys.argv[2]).read()))' "
                    + path + " " + expr_path + " 2>&1";
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[512];
    while (auto n = std::fread(buf, 1, sizeof(buf), p))
      out.append(buf, n);
    ::pclose(p);
  }
  while (!out.empty() && out.back() == '\n')
    out.pop_back();
  return out;
}

container_spec sample_spec() {
  container_spec spec;
  spec.id = "ct-0123abcd";
  spec.args = {"/usr/bin/python3", "-m", "shoal._guest"};
  spec.env = {"PATH=/usr/bin:/bin", "QUOTED=say \"hi\"\\now", "MULTI=line1\nline2\ttab\x01"};
  spec.cwd = "/shoal/code";
  spec.hostname = "ct-0123abcd";
  spec.mounts = standard_mounts(16 << 20);
  spec.mounts.push_back(code_mount("/var/lib/shoal/code/fu-1"));
  spec.mounts.push_back(guest_mount("/var/lib/shoal/bundles/ct-0123abcd/guest"));
  spec.limits.memory_bytes = 64ull << 20;
  spec.limits.cpu_millis = 500;
  spec.limits.pids_max = 128;
  spec.cgroups_path = cgroups_path_for(spec.id);
  spec.open_files_max = 4096;
  return spec;
}

} // namespace

TEST_CASE("an OCI config parses as JSON and carries the container spec's fields") {
  temp_dir tmp;
  auto spec = sample_spec();
  REQUIRE_FALSE(write_bundle_config(tmp.path(), spec));
  auto path = tmp.sub("config.json");

  CHECK(python_eval(path, "c['ociVersion']") == "1.0.2");
  CHECK(python_eval(path, "c['process']['args']") == "['/usr/bin/python3', '-m', 'shoal._guest']");
  CHECK(python_eval(path, "c['process']['env'][1] == 'QUOTED=say \"hi\"\\\\now'") == "True");
  CHECK(python_eval(path, "c['process']['env'][2] == 'MULTI=line1\\nline2\\ttab\\x01'") == "True");
  CHECK(python_eval(path, "c['process']['cwd'], c['process']['terminal']")
        == "('/shoal/code', False)");
  CHECK(python_eval(path, "c['process']['noNewPrivileges']") == "True");
  CHECK(python_eval(path, "c['process']['rlimits']")
        == "[{'type': 'RLIMIT_NOFILE', 'hard': 4096, 'soft': 4096}]");
  CHECK(python_eval(path, "sorted(set(map(len, c['process']['capabilities'].values())))") == "[0]");
  CHECK(python_eval(path, "c['root']") == "{'path': 'rootfs', 'readonly': False}");
  CHECK(python_eval(path, "c['hostname']") == "ct-0123abcd");
  CHECK(python_eval(path, "c['linux']['cgroupsPath']") == "/shoal/ct-0123abcd");
  CHECK(python_eval(path, "c['linux']['resources']['memory']")
        == "{'limit': 67108864, 'swap': 67108864}");
  CHECK(python_eval(path, "c['linux']['resources']['cpu']") == "{'quota': 50000, 'period': 100000}");
  CHECK(python_eval(path, "c['linux']['resources']['pids']") == "{'limit': 128}");
  CHECK(python_eval(path, "[n['type'] for n in c['linux']['namespaces']]")
        == "['pid', 'mount', 'uts', 'ipc', 'network']");
  CHECK(python_eval(path, "[m for m in c['mounts'] if m['destination'] == '/shoal/code']")
        == "[{'destination': '/shoal/code', 'type': 'bind', 'source': '/var/lib/shoal/code/fu-1', "
           "'options': ['rbind', 'ro', 'nosuid', 'nodev']}]");
  CHECK(python_eval(path, "[m['source'] for m in c['mounts'] if m['destination'] == "
                          "'/shoal/guest']")
        == "['/var/lib/shoal/bundles/ct-0123abcd/guest']");
  CHECK(python_eval(path, "[(m['type'], m['options']) for m in c['mounts'] if m['destination'] "
                          "== '/tmp']")
        == "[('tmpfs', ['nosuid', 'nodev', 'mode=1777', 'size=16777216'])]");
  CHECK(python_eval(path, "[m['type'] for m in c['mounts'] if m['destination'] in "
                          "('/proc', '/dev')]")
        == "['proc', 'tmpfs']");
  CHECK(python_eval(path, "c['linux']['resources']['devices'][0]")
        == "{'allow': False, 'access': 'rwm'}");

  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600); // env may carry secrets
}

TEST_CASE("an OCI config runs the process as the spec's user and its supplementary groups") {
  temp_dir tmp;
  auto spec = sample_spec();
  REQUIRE_FALSE(write_bundle_config(tmp.path(), spec));
  CHECK(python_eval(tmp.sub("config.json"), "c['process']['user']") == "{'uid': 0, 'gid': 0}");
  spec.uid = 1000;
  spec.gid = 100;
  spec.additional_gids = {27, 999};
  REQUIRE_FALSE(write_bundle_config(tmp.path(), spec));
  CHECK(python_eval(tmp.sub("config.json"), "c['process']['user']")
        == "{'uid': 1000, 'gid': 100, 'additionalGids': [27, 999]}");
}

TEST_CASE("an OCI config without limits has no resource entries besides devices") {
  temp_dir tmp;
  auto spec = sample_spec();
  spec.limits = {};
  spec.hostname.clear();
  spec.cgroups_path.clear();
  spec.open_files_max = 0;
  REQUIRE_FALSE(write_bundle_config(tmp.path(), spec));
  auto path = tmp.sub("config.json");
  CHECK(python_eval(path, "sorted(c['linux']['resources'])") == "['devices']");
  CHECK(python_eval(path, "'hostname' in c, 'cgroupsPath' in c['linux'], 'rlimits' in c['process']")
        == "(False, False, False)");
}

TEST_CASE("json_quote escapes quotes, backslashes and control characters") {
  CHECK(json_quote("plain") == "\"plain\"");
  CHECK(json_quote("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(json_quote("\n\r\t\b\f") == "\"\\n\\r\\t\\b\\f\"");
  CHECK(json_quote(std::string("\x01\x1f\x7f", 3)) == "\"\\u0001\\u001f\\u007f\"");
  CHECK(json_quote("h\xc3\xa9") == "\"h\xc3\xa9\""); // UTF-8 passes through
}

TEST_CASE("validate rejects bad ids, empty args, bad env entries and relative paths") {
  auto spec = sample_spec();
  CHECK_FALSE(validate(spec));

  auto bad = spec;
  bad.id = "../etc";
  CHECK(shoal::code_of(validate(bad)) == shoal::errc::invalid_argument);
  bad = spec;
  bad.id = "a/b";
  CHECK(validate(bad));
  bad = spec;
  bad.args.clear();
  CHECK(validate(bad));
  bad = spec;
  bad.env.push_back("NOEQUALS");
  CHECK(validate(bad));
  bad = spec;
  bad.cwd = "relative";
  CHECK(validate(bad));
  bad = spec;
  bad.mounts.push_back({"relative/dest", "/x", "bind", {"rbind"}});
  CHECK(shoal::message_of(validate(bad)).find("relative/dest") != std::string::npos);
  bad = spec;
  bad.limits.cpu_millis = 5; // 0.5 ms per 100 ms period
  CHECK(validate(bad));

  temp_dir tmp;
  bad = spec;
  bad.id = "";
  CHECK(write_bundle_config(tmp.path(), bad));
  std::ifstream missing(tmp.sub("config.json"));
  CHECK_FALSE(missing.good()); // nothing written for an invalid spec
}
