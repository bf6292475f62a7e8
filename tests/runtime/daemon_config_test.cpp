#include <catch2/catch.hpp>

#include "runtime/daemon_config.hpp"
#include "runtime/errc.hpp"

using shoal::parse_args;

TEST_CASE("shoald defaults to all roles on loopback") {
  auto parsed = parse_args({"--state-dir", "/tmp/x"});
  REQUIRE(parsed);
  CHECK(parsed->config.control);
  CHECK(parsed->config.worker);
  CHECK(parsed->config.listen == "127.0.0.1:7650");
  CHECK(parsed->config.state_dir == "/tmp/x");
  CHECK(parsed->config.busy_poll == std::chrono::microseconds{250});
}

TEST_CASE("shoald --busy-poll-us sets the RPC thread's polling window; 0 turns it off") {
  auto off = parse_args({"--state-dir", "/s", "--busy-poll-us", "0"});
  REQUIRE(off);
  CHECK(off->config.busy_poll == std::chrono::microseconds{0});
  auto longer = parse_args({"--state-dir", "/s", "--busy-poll-us=1000"});
  REQUIRE(longer);
  CHECK(longer->config.busy_poll == std::chrono::microseconds{1000});
  auto bad = parse_args({"--state-dir", "/s", "--busy-poll-us", "-5"});
  REQUIRE_FALSE(bad);
  CHECK(shoal::message_of(bad.error()).find("--busy-poll-us") != std::string::npos);
  CHECK(shoal::usage().find("--busy-poll-us") != std::string::npos);
}

TEST_CASE("shoald accepts each role and the key=value spelling") {
  auto control = parse_args({"--roles=control", "--state-dir=/s", "--listen=127.0.0.1:0"});
  REQUIRE(control);
  CHECK(control->config.control);
  CHECK_FALSE(control->config.worker);
  CHECK(control->config.listen == "127.0.0.1:0");
  auto worker = parse_args({"--roles", "worker", "--state-dir", "/s"});
  REQUIRE(worker);
  CHECK_FALSE(worker->config.control);
  CHECK(worker->config.worker);
  CHECK(worker->config.roles() == std::vector<std::string>{"worker"});
}

TEST_CASE("shoald rejects bad arguments with a sentence that names them") {
  auto missing_dir = parse_args({});
  REQUIRE_FALSE(missing_dir);
  CHECK(shoal::message_of(missing_dir.error()).find("--state-dir") != std::string::npos);

  auto bad_role = parse_args({"--roles", "boss", "--state-dir", "/s"});
  REQUIRE_FALSE(bad_role);
  CHECK(shoal::code_of(bad_role.error()) == shoal::errc::invalid_argument);
  CHECK(shoal::message_of(bad_role.error()).find("'boss'") != std::string::npos);

  auto unknown = parse_args({"--state-dir", "/s", "--frobnicate"});
  REQUIRE_FALSE(unknown);
  CHECK(shoal::message_of(unknown.error()).find("--frobnicate") != std::string::npos);

  auto no_value = parse_args({"--state-dir"});
  REQUIRE_FALSE(no_value);
  CHECK(shoal::message_of(no_value.error()).find("needs a value") != std::string::npos);

  auto bad_number = parse_args({"--state-dir", "/s", "--threads", "two"});
  REQUIRE_FALSE(bad_number);
  CHECK(shoal::message_of(bad_number.error()).find("'two'") != std::string::npos);
}

TEST_CASE("shoald --help asks for the usage text and --version for the version") {
  auto only_help = parse_args({"--help"});
  REQUIRE(only_help);
  CHECK(only_help->what == shoal::parsed_args::action::help);
  CHECK(shoal::usage().find("--state-dir") != std::string::npos);
  auto version = parse_args({"--version"});
  REQUIRE(version);
  CHECK(version->what == shoal::parsed_args::action::version);
}
