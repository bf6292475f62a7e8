// Function records on disk (table::functions): version 2 added `function_def::files` (the image's
// copy=False files); a scheduler still reads version 1 records written before it.

#include <chrono>
#include <memory>
#include <string>

#include <caf/all.hpp>
#include <catch2/catch.hpp>

#include "actors/scheduler/scheduler.hpp"
#include "runtime/binary_codec.hpp"
#include "runtime/errc.hpp"
#include "storage/key.hpp"
#include "storage/store.hpp"
#include "storage/writer.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal;
using namespace shoal::scheduler;
using shoal::test::temp_dir;

namespace {

constexpr auto reply_timeout = std::chrono::seconds(30);
const std::string env = "main";
const std::string blob_hash(64, 'a');

/// A node agent that starts nothing (deployed apps here have no warm containers).
node_agent::node_agent_actor spawn_idle_node(caf::actor_system& sys) {
  return sys.spawn([]() -> node_agent::node_agent_actor::behavior_type {
    return {
      [](node_agent::start_container_atom, node_agent::container_request&) {},
      [](node_agent::stop_container_atom, const std::string&) {},
      [](node_agent::drain_atom) { return uint32_t{0}; },
      [](inspect_atom) { return actor_snapshot{}; },
    };
  });
}

/// One scheduler over `db`, as one run of shoald has it; stopped (and joined) on destruction.
struct scheduler_run {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  storage::writer_actor writer;
  node_agent::node_agent_actor node;
  scheduler_actor scheduler;

  explicit scheduler_run(storage::store& db) {
    cfg.set("scheduler.max-threads", 2);
    sys = std::make_unique<caf::actor_system>(cfg);
    writer = storage::spawn_writer(
      *sys, [&db](const storage::write_batch& b) { return db.write(b, /*sync=*/false); });
    node = spawn_idle_node(*sys);
    scheduler = spawn_scheduler(*sys, db, writer, node, scheduler_config{});
  }

  ~scheduler_run() {
    for (auto a : {caf::actor_cast<caf::actor>(scheduler), caf::actor_cast<caf::actor>(node),
                   caf::actor_cast<caf::actor>(writer)})
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    scheduler = nullptr;
    node = nullptr;
    writer = nullptr;
    sys.reset();
  }

  caf::expected<app_created> create(app_request req) {
    caf::expected<app_created> out = make_error(errc::internal, "no reply");
    caf::scoped_actor self{*sys};
    self->request(scheduler, reply_timeout, create_app_atom::value, req)
      .receive([&](app_created& created) { out = std::move(created); },
               [&](caf::error& err) { out = std::move(err); });
    return out;
  }

  caf::expected<function_def> lookup(const std::string& app, const std::string& name) {
    caf::expected<function_def> out = make_error(errc::internal, "no reply");
    caf::scoped_actor self{*sys};
    self->request(scheduler, reply_timeout, lookup_atom::value, env, app, name)
      .receive([&](function_def& def) { out = std::move(def); },
               [&](caf::error& err) { out = std::move(err); });
    return out;
  }
};

app_request deployed_app(std::vector<code_file> files) {
  app_request req;
  req.name = "records";
  req.environment = env;
  req.mode = app_mode::deployed;
  function_def fn;
  fn.name = "f";
  fn.files = std::move(files);
  req.functions.push_back(fn);
  return req;
}

} // namespace

TEST_CASE("a function's copy=False files survive a restart, and version 1 records still load") {
  temp_dir tmp;
  auto opened = storage::store::open(tmp.path());
  REQUIRE(opened);
  auto& db = **opened;
  storage::write_batch blobs;
  blobs.put(storage::table::blobs, storage::key{}.str(blob_hash).bytes(), "content");
  REQUIRE(!db.write(blobs, /*sync=*/false));

  std::string app_id;
  {
    scheduler_run first{db};
    auto created = first.create(deployed_app({code_file{"srv/data/a.txt", blob_hash, 0640}}));
    REQUIRE(created);
    app_id = created->app.app_id;
    // A function written by a shoald from before `files` (record version 1), in the same app.
    function_def old;
    old.function_id = "fu-0000000000000001";
    old.app_id = app_id;
    old.app_name = "records";
    old.environment = env;
    old.name = "old";
    old.image = "im-old";
    storage::write_batch batch;
    batch.put(storage::table::functions, storage::key{}.str(old.function_id).bytes(),
              encode_record(1, function_def_v1{old}));
    REQUIRE(!db.write(batch, /*sync=*/false));
  }

  scheduler_run second{db};
  auto f = second.lookup("records", "f");
  REQUIRE(f);
  REQUIRE(f->files.size() == 1);
  CHECK(f->files[0].path == "srv/data/a.txt");
  CHECK(f->files[0].sha256 == blob_hash);
  CHECK(f->files[0].mode == 0640);
  auto old = second.lookup("records", "old");
  REQUIRE(old);
  CHECK(old->image == "im-old");
  CHECK(old->files.empty());
}

TEST_CASE("an app whose copy=False files were not uploaded or leave the root is refused") {
  temp_dir tmp;
  auto opened = storage::store::open(tmp.path());
  REQUIRE(opened);
  scheduler_run run{**opened};
  auto missing = run.create(deployed_app({code_file{"srv/a.txt", std::string(64, 'b'), 0644}}));
  REQUIRE(!missing);
  CHECK(code_of(missing.error()) == errc::invalid_argument);
  CHECK(message_of(missing.error()).find("the content of /srv/a.txt") != std::string::npos);
  auto escaping = run.create(deployed_app({code_file{"../etc/passwd", blob_hash, 0644}}));
  REQUIRE(!escaping);
  CHECK(message_of(escaping.error()).find("'../etc/passwd'") != std::string::npos);
}
