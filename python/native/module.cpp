/// `shoal._native`: the Python binding of the C++ client core (runtime/client). Every blocking
/// call releases the GIL, so other Python threads run while a call waits on the network.

#include <pybind11/pybind11.h>
#include <pybind11/eval.h>
#include <pybind11/stl.h>

#include "runtime/client/client.hpp"

namespace py = pybind11;
using shoal::client::actor_info;
using shoal::client::cluster_info;
using shoal::client::connection;
using shoal::client::rpc_error;
using shoal::client::token_info;

namespace {

py::dict to_dict(const cluster_info& c) {
  py::dict d;
  d["version"] = c.version;
  d["node_id"] = c.node_id;
  d["roles"] = c.roles;
  d["listen_address"] = c.listen_address;
  d["state_dir"] = c.state_dir;
  d["pid"] = c.pid;
  d["started_at_ms"] = c.started_at_ms;
  d["environment"] = c.environment;
  d["schema_version"] = c.schema_version;
  d["actor_count"] = c.actor_count;
  return d;
}

py::dict to_dict(const actor_info& a) {
  py::dict d;
  d["name"] = a.name;
  d["kind"] = a.kind;
  d["state"] = a.state;
  d["mailbox_depth"] = a.mailbox_depth;
  py::dict counters;
  for (const auto& [k, v] : a.counters)
    counters[py::str(k)] = v;
  d["counters"] = counters;
  py::dict details;
  for (const auto& [k, v] : a.details)
    details[py::str(k)] = v;
  d["details"] = details;
  return d;
}

py::dict to_dict(const token_info& t) {
  py::dict d;
  d["token_id"] = t.token_id;
  d["environment"] = t.environment;
  d["label"] = t.label;
  d["created_at_ms"] = t.created_at_ms;
  return d;
}

/// The Python-facing client: a connection that can be closed explicitly or by the GC.
class client {
public:
  client(const std::string& address, const std::string& token, const std::string& version) {
    shoal::client::connect_options opts;
    opts.client_version = version;
    py::gil_scoped_release release;
    conn_ = connection::open(address, token, opts);
  }

  py::dict info() {
    cluster_info c;
    {
      py::gil_scoped_release release;
      c = live().info();
    }
    return to_dict(c);
  }

  py::list list_actors() {
    std::vector<actor_info> actors;
    {
      py::gil_scoped_release release;
      actors = live().list_actors();
    }
    py::list out;
    for (const auto& a : actors)
      out.append(to_dict(a));
    return out;
  }

  py::dict inspect_actor(const std::string& name) {
    actor_info a;
    {
      py::gil_scoped_release release;
      a = live().inspect_actor(name);
    }
    return to_dict(a);
  }

  py::tuple create_token(const std::string& environment, const std::string& label) {
    std::pair<std::string, token_info> minted;
    {
      py::gil_scoped_release release;
      minted = live().create_token(environment, label);
    }
    return py::make_tuple(minted.first, to_dict(minted.second));
  }

  py::list list_tokens() {
    std::vector<token_info> tokens;
    {
      py::gil_scoped_release release;
      tokens = live().list_tokens();
    }
    py::list out;
    for (const auto& t : tokens)
      out.append(to_dict(t));
    return out;
  }

  void revoke_token(const std::string& token_id) {
    py::gil_scoped_release release;
    live().revoke_token(token_id);
  }

  void close() {
    py::gil_scoped_release release;
    if (conn_)
      conn_->close();
  }

private:
  connection& live() {
    if (!conn_)
      throw rpc_error("unavailable", "the client is closed");
    return *conn_;
  }

  std::unique_ptr<connection> conn_;
};

} // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "Shoal's native client core (Cap'n Proto on its own thread).";

  py::dict ns;
  py::exec(R"(
class RpcError(Exception):
    """A call to shoald failed. `code` is Shoal's error name ("not_found", "unauthenticated",
    "unavailable", ...); `message` is a sentence for the user."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):
        return (type(self), (self.code, self.message))
)",
           py::globals(), ns);
  py::object rpc_error_type = ns["RpcError"];
  rpc_error_type.attr("__module__") = "shoal._native";
  m.attr("RpcError") = rpc_error_type;

  static py::object error_type = rpc_error_type; // lives as long as the interpreter
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p)
        std::rethrow_exception(p);
    } catch (const rpc_error& e) {
      PyErr_SetObject(error_type.ptr(), py::make_tuple(e.code(), e.message()).ptr());
    }
  });

  py::class_<client>(m, "Client")
    .def(py::init<const std::string&, const std::string&, const std::string&>(),
         py::arg("address"), py::arg("token"), py::arg("client_version") = "0.1.0",
         "Connects to shoald at 'host:port' and authenticates.")
    .def("info", &client::info)
    .def("list_actors", &client::list_actors)
    .def("inspect_actor", &client::inspect_actor, py::arg("name"))
    .def("create_token", &client::create_token, py::arg("environment"), py::arg("label"))
    .def("list_tokens", &client::list_tokens)
    .def("revoke_token", &client::revoke_token, py::arg("token_id"))
    .def("close", &client::close);
}
