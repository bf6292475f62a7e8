#include "runtime/daemon_config.hpp"

#include "runtime/errc.hpp"

namespace shoal {

std::vector<std::string> daemon_config::roles() const {
  std::vector<std::string> out;
  if (control)
    out.emplace_back("control");
  if (worker)
    out.emplace_back("worker");
  return out;
}

std::string usage() {
  return R"(shoald — the Shoal daemon: hosts the service actors and serves Cap'n Proto RPC.

Usage: shoald --state-dir DIR [--roles all|control|worker] [--listen HOST:PORT]
              [--log-level debug|info|warn|error] [--threads N] [--drain-timeout-ms MS]
              [--busy-poll-us US]

Options:
  --state-dir DIR         where this node keeps its state (RocksDB, lock, admin token). Required.
                          One shoald per state dir: a second one refuses to start.
  --roles ROLES           which actors to host: all (default), control, worker, or control,worker.
  --listen HOST:PORT      RPC address (default 127.0.0.1:7650, loopback only). Port 0 picks a free
                          port; the bound address is written to DIR/shoald.addr.
  --log-level LEVEL       debug, info (default), warn or error. Logs are logfmt lines on stderr.
  --threads N             actor scheduler threads (default: one per core).
  --sdk-dir DIR           directory holding the `shoal` Python package that containers run
                          (default: $SHOAL_SDK_DIR, else the source tree shoald was built from).
  --drain-timeout-ms MS   on SIGTERM/SIGINT, how long to wait for in-flight calls (default 5000).
  --busy-poll-us US       after a request, how long the RPC thread polls for the next one before
                          it sleeps (default 250; 0 = sleep at once). Saves the wake-up (tens of
                          µs on a VM) for clients that call back to back; costs at most this much
                          CPU per burst of requests.
  -h, --help              this text.
  --version               print the version.

On first start in an empty state dir shoald creates an admin token for environment "main" and
writes it to DIR/admin.token (mode 0600). Most users never run shoald by hand: `shoal cluster up`
starts one for the embedded local cluster.

Examples:
  shoald --state-dir /var/lib/shoal
  shoald --roles control --listen 10.0.0.5:7650 --state-dir /var/lib/shoal
)";
}

caf::expected<parsed_args> parse_args(const std::vector<std::string>& args) {
  parsed_args out;
  auto& cfg = out.config;
  auto bad = [](std::string message) { return make_error(errc::invalid_argument, std::move(message)); };
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    std::string value;
    bool has_inline = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline = true;
    }
    auto take = [&](const char* what) -> caf::expected<std::string> {
      if (has_inline)
        return value;
      if (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0)
        return bad(arg + " needs a value (" + what + ")");
      return args[++i];
    };
    if (arg == "-h" || arg == "--help") {
      out.what = parsed_args::action::help;
      return out;
    }
    if (arg == "--version") {
      out.what = parsed_args::action::version;
      return out;
    }
    if (arg == "--state-dir") {
      auto v = take("a directory");
      if (!v)
        return v.error();
      cfg.state_dir = *v;
    } else if (arg == "--sdk-dir") {
      auto v = take("a directory");
      if (!v)
        return v.error();
      cfg.sdk_dir = *v;
    } else if (arg == "--listen") {
      auto v = take("HOST:PORT");
      if (!v)
        return v.error();
      cfg.listen = *v;
    } else if (arg == "--roles") {
      auto v = take("all, control or worker");
      if (!v)
        return v.error();
      cfg.control = cfg.worker = false;
      std::string rest = *v;
      while (!rest.empty()) {
        auto comma = rest.find(',');
        auto role = rest.substr(0, comma);
        rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
        if (role == "all")
          cfg.control = cfg.worker = true;
        else if (role == "control")
          cfg.control = true;
        else if (role == "worker")
          cfg.worker = true;
        else
          return bad("unknown role '" + role + "'; use all, control, worker or control,worker");
      }
      if (!cfg.control && !cfg.worker)
        return bad("--roles is empty; use all, control, worker or control,worker");
    } else if (arg == "--log-level") {
      auto v = take("debug, info, warn or error");
      if (!v)
        return v.error();
      if (!log::parse_level(*v, cfg.log_level))
        return bad("unknown log level '" + *v + "'; use debug, info, warn or error");
    } else if (arg == "--threads" || arg == "--drain-timeout-ms" || arg == "--busy-poll-us") {
      auto v = take("a number");
      if (!v)
        return v.error();
      size_t n = 0;
      try {
        size_t used = 0;
        if (v->empty() || (*v)[0] < '0' || (*v)[0] > '9') // stoul would take "-5" as 2^64-5
          throw std::invalid_argument("not a digit");
        n = std::stoul(*v, &used);
        if (used != v->size())
          throw std::invalid_argument("trailing");
      } catch (...) {
        return bad(arg + " needs a whole number, got '" + *v + "'");
      }
      if (arg == "--threads")
        cfg.scheduler_threads = n;
      else if (arg == "--busy-poll-us")
        cfg.busy_poll = std::chrono::microseconds(n);
      else
        cfg.drain_timeout = std::chrono::milliseconds(n);
    } else {
      return bad("unknown argument '" + args[i] + "'; see shoald --help");
    }
  }
  if (cfg.state_dir.empty())
    return bad("--state-dir is required (for example --state-dir ~/.shoal/state)");
  return out;
}

} // namespace shoal
