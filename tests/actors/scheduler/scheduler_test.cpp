#include "actors/scheduler/scheduler.hpp"

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <catch2/catch.hpp>

#include "runtime/errc.hpp"
#include "storage/store.hpp"
#include "storage/writer.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal;
using namespace shoal::scheduler;
using shoal::test::temp_dir;

namespace {

/// Only bounds how long a broken scheduler can hang a test; nothing waits for it to pass.
constexpr auto reply_timeout = std::chrono::seconds(30);
const std::string env = "main";

using strings = std::vector<std::string>;

/// What a fake actor or sink saw, in order, for the test thread to wait on.
class recorder {
public:
  void add(std::string event) {
    std::lock_guard<std::mutex> guard{mutex_};
    events_.push_back(std::move(event));
    changed_.notify_all();
  }

  /// Waits until `n` events were recorded (bounded by `reply_timeout`); returns them.
  strings wait_for(size_t n) {
    std::unique_lock<std::mutex> lock{mutex_};
    changed_.wait_for(lock, reply_timeout, [&] { return events_.size() >= n; });
    return events_;
  }

  strings events() {
    std::lock_guard<std::mutex> guard{mutex_};
    return events_;
  }

private:
  std::mutex mutex_;
  std::condition_variable changed_;
  strings events_;
};

/// A node agent that starts nothing: it records "start <id>" and "stop <id>"; the test plays the
/// containers' supervisors by sending their messages to the scheduler itself.
node_agent::node_agent_actor spawn_fake_node(caf::actor_system& sys, std::shared_ptr<recorder> seen) {
  return sys.spawn([seen]() -> node_agent::node_agent_actor::behavior_type {
    return {
      [seen](node_agent::start_container_atom, node_agent::container_request& req) {
        seen->add("start " + req.container_id);
      },
      [seen](node_agent::stop_container_atom, const std::string& id) { seen->add("stop " + id); },
      [](node_agent::drain_atom) { return uint32_t{0}; },
      [](inspect_atom) { return actor_snapshot{}; },
    };
  });
}

/// Records "line <text>" per log line and "end".
class recording_log_sink final : public log_sink {
public:
  explicit recording_log_sink(std::shared_ptr<recorder> seen) : seen_(std::move(seen)) {}
  void lines(std::vector<log_line> batch) override {
    for (const auto& l : batch)
      seen_->add("line " + l.text);
  }
  void end() override { seen_->add("end"); }
  bool alive() const override { return true; }

private:
  std::shared_ptr<recorder> seen_;
};

struct fixture {
  temp_dir tmp;
  std::unique_ptr<storage::store> db;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  storage::writer_actor writer;
  std::shared_ptr<recorder> node_seen = std::make_shared<recorder>();
  node_agent::node_agent_actor node;
  scheduler_actor scheduler;

  fixture() {
    auto opened = storage::store::open(tmp.path());
    if (!opened)
      FAIL("store::open failed: " << message_of(opened.error()));
    db = std::move(*opened);
    cfg.set("scheduler.max-threads", 2);
    sys = std::make_unique<caf::actor_system>(cfg);
    writer = storage::spawn_writer(
      *sys, [this](const storage::write_batch& b) { return db->write(b, /*sync=*/false); });
    node = spawn_fake_node(*sys, node_seen);
    scheduler_config sc;
    sc.node_id = "node-test";
    scheduler = spawn_scheduler(*sys, *db, writer, node, sc);
  }

  ~fixture() {
    caf::anon_send_exit(scheduler, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
    scheduler = nullptr;
    node = nullptr;
    writer = nullptr;
    sys.reset();
  }

  template <class... Ts>
  void ask_void(Ts... xs) {
    caf::scoped_actor self{*sys};
    self->request(scheduler, reply_timeout, xs...)
      .receive([] {}, [&](caf::error& err) { FAIL("request failed: " << message_of(err)); });
  }

  /// An ephemeral app whose one function keeps `containers` warm: they are asked for at once.
  /// Returns the ids of those containers (requested from the node, never ready).
  strings create_app(const std::string& name, uint32_t containers) {
    app_request req;
    req.name = name;
    req.environment = env;
    function_def fn;
    fn.name = "f";
    fn.min_containers = containers;
    req.functions.push_back(fn);
    auto before = node_seen->events().size();
    caf::scoped_actor self{*sys};
    self->request(scheduler, reply_timeout, create_app_atom::value, req)
      .receive([](app_created&) {},
               [&](caf::error& err) { FAIL("create_app failed: " << message_of(err)); });
    auto seen = node_seen->wait_for(before + containers);
    strings ids;
    for (const auto& e : seen)
      if (e.rfind("start ", 0) == 0)
        ids.push_back(e.substr(6));
    REQUIRE(ids.size() >= containers);
    return strings(ids.end() - containers, ids.end());
  }

  std::shared_ptr<recorder> follow_logs(const std::string& app, bool follow = true) {
    auto seen = std::make_shared<recorder>();
    log_sink_ptr sink = std::make_shared<recording_log_sink>(seen);
    ask_void(logs_atom::value, env, app, sink, follow);
    return seen;
  }

  /// What a container's supervisor sends: lines, in order, from one sender.
  void print(const std::string& container_id, const strings& texts) {
    std::vector<log_line> lines;
    for (const auto& t : texts)
      lines.push_back(log_line{1, container_id, 1, t});
    caf::anon_send(scheduler, log_atom::value, container_id, std::move(lines));
  }

  void exit(const std::string& container_id) {
    container_exit exit;
    exit.requested = true;
    exit.reason = "stopped";
    caf::anon_send(scheduler, exited_atom::value, container_id, exit);
  }

  /// A round trip through the scheduler: every message sent to it before has been handled.
  void settle() {
    caf::scoped_actor self{*sys};
    self->request(scheduler, reply_timeout, inspect_atom::value)
      .receive([](actor_snapshot&) {}, [&](caf::error& err) { FAIL(message_of(err)); });
  }
};

} // namespace

TEST_CASE("a followed log stream ends only after the last line of the app's last container") {
  fixture f;
  auto ids = f.create_app("logs", 2);
  auto seen = f.follow_logs("logs");
  f.print(ids[0], {"working"});
  f.ask_void(stop_app_atom::value, env, std::string{"logs"});
  CHECK(f.node_seen->wait_for(4).size() == 4); // both containers were asked to stop
  f.settle();
  CHECK(seen->events() == strings{"line working"});

  // Exit hooks print while the containers stop; one exits, the other is still going.
  f.print(ids[0], {"first says goodbye"});
  f.exit(ids[0]);
  f.settle();
  CHECK(seen->events() == strings{"line working", "line first says goodbye"});

  f.print(ids[1], {"second says goodbye", "really the last line"});
  f.exit(ids[1]);
  CHECK(seen->wait_for(5) == strings{"line working", "line first says goodbye",
                                     "line second says goodbye", "line really the last line",
                                     "end"});
  f.settle();
  CHECK(seen->events().size() == 5); // one end, nothing after it
}

TEST_CASE("following a stopped app's logs replays them, then ends (a one-shot read has no end)") {
  fixture f;
  auto ids = f.create_app("done", 1);
  f.print(ids[0], {"hello"});
  f.ask_void(stop_app_atom::value, env, std::string{"done"});
  f.exit(ids[0]);
  f.settle();

  CHECK(f.follow_logs("done")->wait_for(2) == strings{"line hello", "end"});
  auto once = f.follow_logs("done", /*follow=*/false);
  f.settle();
  CHECK(once->events() == strings{"line hello"});
}

TEST_CASE("a running app's followed log stream does not end when a container goes away") {
  fixture f;
  auto ids = f.create_app("busy", 1);
  auto seen = f.follow_logs("busy");
  f.print(ids[0], {"scaled down soon"});
  f.exit(ids[0]); // e.g. scale down: the app keeps running
  f.settle();
  CHECK(seen->events() == strings{"line scaled down soon"});
}
