// The real Python guest (`python3 -m shoal._guest`) as a plain child process (no container),
// driven through the guest hub. Definitions and arguments are made by tests/guest/guest_helper.py
// with the SDK's own helpers (shoal._definition).

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "runtime/errc.hpp"
#include "runtime/guest/guest_frame.hpp"
#include "runtime/guest/guest_hub.hpp"
#include "tests/guest/guest_test_support.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::guest;
using namespace shoal::guest::test;
using shoal::errc;
using shoal::test::temp_dir;
/// Spelled out: `shutdown` alone is ambiguous with ::shutdown(2) from <sys/socket.h>.
using shutdown_frame = shoal::guest::shutdown;

namespace {

const std::string source_dir = SHOAL_SOURCE_DIR;
const std::string python = "/usr/bin/python3";
const std::string helper = source_dir + "/tests/guest/guest_helper.py";
const std::string container_id = "ct-cpptest";

constexpr const char* test_module = R"PY(
import os

import shoal._partial as sp
from shoal._guest import client


def square(x):
    return x * x


def noop():
    return None


async def anoop():
    return None


class Model:
    k = sp.parameter(default=2)

    @sp.enter()
    def load(self):
        self.loaded = True

    @sp.exit()
    def bye(self):
        with open(os.environ["GUEST_MARKER"], "w") as f:
            f.write("exit hook ran")

    @sp.method()
    def mul(self, x):
        return self.k * x

    @sp.method()
    def boom(self, x):
        raise ValueError(f"boom {x}")

    @sp.method()
    def count(self, n):
        yield from range(n)

    @sp.method()
    def nested(self, x):
        return client.call("function.call", b"request-%d" % x).decode()
)PY";

std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A hub channel, a code dir with `guestmod.py`, and the guest process once spawned.
struct python_guest {
  temp_dir tmp;
  std::string code_dir = tmp.sub("code");
  std::string marker = tmp.sub("marker");
  std::string log_path = tmp.sub("guest.log");
  inbox box; // declared first so it outlives the hub, whose callbacks write into it
  std::unique_ptr<guest_hub> hub;
  channel_id id = 0;
  std::unique_ptr<child_process> proc;

  python_guest() {
    ::mkdir(code_dir.c_str(), 0755);
    std::ofstream{code_dir + "/guestmod.py"} << test_module;
    auto started = guest_hub::start();
    REQUIRE(started);
    hub = std::move(*started);
    auto listening = hub->listen(tmp.sub("guest.sock"), box.handlers());
    REQUIRE(listening);
    id = *listening;
  }

  std::vector<std::string> env() const {
    return {
      "PATH=/usr/bin:/bin",
      "PYTHONPATH=" + source_dir + "/python",
      "PYTHONUNBUFFERED=1",
      "SHOAL_GUEST_SOCKET=" + tmp.sub("guest.sock"),
      "SHOAL_CODE_DIR=" + code_dir,
      "SHOAL_CONTAINER_ID=" + container_id,
      "SHOAL_FUNCTION_NAME=f",
      "SHOAL_APP_NAME=guest-test",
      "GUEST_MARKER=" + marker,
    };
  }

  std::string run_helper(std::vector<std::string> args) const {
    args.insert(args.begin(), {python, helper});
    return run_capture(args, env());
  }

  std::string function_definition(const std::string& qualname) const {
    return run_helper({"function", code_dir, "guestmod", qualname});
  }

  std::string args(const std::string& method, const std::string& args_literal) const {
    return run_helper({"args", method, args_literal});
  }

  /// repr() of a pickled value, "Type: message" for an exception.
  std::string decode(const std::string& data) const {
    auto path = tmp.sub("value.pickle");
    std::ofstream{path, std::ios::binary} << data;
    return run_helper({"decode", path});
  }

  void spawn() {
    int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(log >= 0);
    proc = std::make_unique<child_process>(
      std::vector<std::string>{python, "-m", "shoal._guest"}, env(), log, log);
    ::close(log);
  }

  std::string log() const { return read_file(log_path); }

  /// Spawn, HELLO, INIT, READY.
  ready start(const std::string& definition, uint32_t max_inputs) {
    spawn();
    auto h = box.next_frame<hello>();
    INFO(log());
    CHECK(h.protocol == protocol_version);
    CHECK(h.cloudpickle_version == "2.2.0");
    CHECK(h.python_version.rfind("3.", 0) == 0);
    hub->send(id, encode(init{definition, max_inputs}));
    return box.next_frame<ready>();
  }

  /// Outputs of the inputs `ids` until each has its terminal one; `on_call` answers CALLs.
  std::vector<output> collect(std::vector<uint64_t> open,
                              const std::function<reply(const call&)>& on_call = {}) {
    std::vector<output> got;
    while (!open.empty()) {
      auto e = box.next();
      INFO(log());
      REQUIRE(e);
      if (!e->f)
        FAIL("the channel closed: " << shoal::message_of(e->closed));
      if (auto* c = std::get_if<call>(&*e->f)) {
        REQUIRE(on_call);
        hub->send(id, encode(on_call(*c)));
        continue;
      }
      auto* outs = std::get_if<outputs>(&*e->f);
      REQUIRE(outs);
      for (auto& out : outs->items) {
        if (out.status != output_status::item)
          open.erase(std::remove(open.begin(), open.end(), out.id), open.end());
        got.push_back(std::move(out));
      }
    }
    return got;
  }

  std::vector<output> run(uint64_t input_id, const std::string& args_blob,
                          const std::function<reply(const call&)>& on_call = {}) {
    hub->send(id, encode(inputs{{{input_id, args_blob}}}));
    return collect({input_id}, on_call);
  }
};

} // namespace

TEST_CASE("the python guest runs a function input and returns its value") {
  python_guest g;
  CHECK(g.start(g.function_definition("square"), 1).max_inputs == 1);
  auto outs = g.run(1, g.args("-", "(7,)"));
  REQUIRE(outs.size() == 1);
  CHECK(outs[0].id == 1);
  CHECK(outs[0].status == output_status::success);
  CHECK(outs[0].error.empty());
  CHECK(g.decode(outs[0].data) == "49");
}

TEST_CASE("the python guest runs a class: values, exceptions, generators, nested calls, exit hooks") {
  python_guest g;
  auto definition = g.run_helper({"class", g.code_dir, "guestmod", "Model", "{'k': 3}"});
  CHECK(g.start(definition, 4).max_inputs == 4);

  SECTION("a method returns its value; an exception comes back with its traceback") {
    auto value = g.run(1, g.args("mul", "(5,)"));
    REQUIRE(value.size() == 1);
    CHECK(g.decode(value[0].data) == "15");

    auto failure = g.run(2, g.args("boom", "(4,)"));
    REQUIRE(failure.size() == 1);
    CHECK(failure[0].status == output_status::failure);
    CHECK(failure[0].error.rfind("Traceback (most recent call last, in container " + container_id
                                   + "):\n",
                                 0)
          == 0);
    CHECK(failure[0].error.find("in boom") != std::string::npos);
    CHECK(failure[0].error.find("ValueError: boom 4") != std::string::npos);
    CHECK(g.decode(failure[0].data) == "ValueError: boom 4");
  }

  SECTION("a generator streams its items, then done") {
    auto outs = g.run(3, g.args("count", "(3,)"));
    REQUIRE(outs.size() == 4);
    for (int i = 0; i < 3; ++i) {
      CHECK(outs[i].status == output_status::item);
      CHECK(g.decode(outs[i].data) == std::to_string(i));
    }
    CHECK(outs[3].status == output_status::done);
    CHECK(outs[3].data.empty());
  }

  SECTION("a nested call goes out as CALL and the REPLY comes back to the waiting input") {
    std::vector<call> calls;
    auto outs = g.run(4, g.args("nested", "(7,)"), [&](const call& c) {
      calls.push_back(c);
      return reply{c.request_id, errc::none, "answer-to-" + c.body, ""};
    });
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].method == "function.call");
    CHECK(calls[0].body == "request-7");
    REQUIRE(outs.size() == 1);
    CHECK(outs[0].status == output_status::success);
    CHECK(g.decode(outs[0].data) == "'answer-to-request-7'");
  }

  // Every section ends the same way: SHUTDOWN runs the exit hook, the guest exits 0 and hangs up.
  g.hub->send(g.id, encode(shutdown_frame{}));
  auto code = g.proc->wait();
  INFO(g.log());
  REQUIRE(code);
  CHECK(*code == 0);
  CHECK(read_file(g.marker) == "exit hook ran");
  auto closed = g.box.next();
  REQUIRE(closed);
  CHECK_FALSE(closed->f);
  CHECK(shoal::code_of(closed->closed) == errc::unavailable);
}

TEST_CASE("a python guest whose module fails to import sends FATAL and exits 1") {
  python_guest g;
  std::ofstream{g.code_dir + "/broken.py"} << "import os\n\nraise ImportError('no module weights')\n";
  g.spawn();
  g.box.next_frame<hello>();
  g.hub->send(g.id, encode(init{g.run_helper({"ref", "broken", "f"}), 1}));
  auto f = g.box.next_frame<fatal>();
  CHECK(f.error.rfind("Traceback (most recent call last, in container " + container_id + "):\n",
                      0)
        == 0);
  CHECK(f.error.find("broken.py\", line 3, in <module>") != std::string::npos);
  CHECK(f.error.find("ImportError: no module weights") != std::string::npos);
  auto code = g.proc->wait();
  REQUIRE(code);
  CHECK(*code == 1);
}

TEST_CASE("an input round trip through the hub and the python guest is fast") {
  // Measures one INPUTS -> OUTPUTS round trip of a no-op (median of 1000) and the throughput of
  // batches of 100 no-op inputs; prints both. The bounds only catch a broken path (a sleep, a
  // missed wakeup), not a slow machine.
  python_guest g;
  g.start(g.function_definition("noop"), 1);
  auto noop_args = g.args("-", "()");
  using clock = std::chrono::steady_clock;
  auto round_trip = [&](uint64_t i) {
    auto t0 = clock::now();
    g.hub->send(g.id, encode(inputs{{{i, noop_args}}}));
    auto out = g.box.next_frame<outputs>();
    auto t1 = clock::now();
    REQUIRE(out.items.size() == 1);
    REQUIRE(out.items[0].id == i);
    REQUIRE(out.items[0].status == output_status::success);
    return std::chrono::duration<double, std::micro>(t1 - t0).count();
  };
  for (uint64_t i = 0; i < 100; ++i)
    round_trip(i); // warm up
  std::vector<double> us;
  for (uint64_t i = 0; i < 1000; ++i)
    us.push_back(round_trip(1000 + i));
  std::sort(us.begin(), us.end());
  double median = us[us.size() / 2];
  double p99 = us[us.size() * 99 / 100];

  auto throughput = [&](const std::string& qualname) {
    python_guest t;
    t.start(t.function_definition(qualname), 100);
    auto a = t.args("-", "()");
    constexpr uint64_t batch = 100;
    constexpr uint64_t batches = 100;
    size_t frames = 0;
    auto t0 = clock::now();
    for (uint64_t b = 0; b < batches; ++b) {
      inputs in;
      std::vector<uint64_t> ids;
      for (uint64_t k = 0; k < batch; ++k) {
        in.items.push_back({b * batch + k, a});
        ids.push_back(b * batch + k);
      }
      t.hub->send(t.id, encode(in));
      size_t before = t.hub->counters().frames_in;
      REQUIRE(t.collect(ids).size() == batch);
      frames += t.hub->counters().frames_in - before;
    }
    double seconds = std::chrono::duration<double>(clock::now() - t0).count();
    double rate = batches * batch / seconds;
    std::printf("  %s: %.0f inputs/s in batches of %llu (max_inputs 100), %.1f outputs per "
                "OUTPUTS frame\n",
                qualname.c_str(), rate, static_cast<unsigned long long>(batch),
                static_cast<double>(batches * batch) / static_cast<double>(std::max<size_t>(frames, 1)));
    return rate;
  };
  std::printf("guest round trip (no-op, max_inputs 1): median %.0f us, p99 %.0f us\n", median,
              p99);
  double sync_rate = throughput("noop");
  double async_rate = throughput("anoop");
  std::fflush(stdout);
  CHECK(median < 20'000);
  CHECK(sync_rate > 500);
  CHECK(async_rate > 500);
}
