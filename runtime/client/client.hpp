#pragma once
/// The C++ client core: one authenticated connection to a shoald, used by the Python extension
/// (`shoal._native`) and by C++ programs and tests.
///
/// Threading: the connection owns a kj thread that runs Cap'n Proto. Every method may be called
/// from any thread (including several at once); it hands the call to the kj thread and blocks the
/// caller until the reply arrives. No kj or capnp type appears in this header.
///
/// Errors: every failure throws `rpc_error` whose `code` is an errc name ("not_found",
/// "unauthenticated", ...). A connection that cannot be made or is lost is "unavailable".

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace shoal::client {

class rpc_error : public std::runtime_error {
public:
  rpc_error(std::string code, std::string message)
    : std::runtime_error(message), code_(std::move(code)), message_(std::move(message)) {}
  const std::string& code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

private:
  std::string code_;
  std::string message_;
};

/// Splits a capnp exception description "remote exception: [code] message" into its parts.
/// Descriptions without a code become {fallback_code, description}.
std::pair<std::string, std::string> parse_error(const std::string& description,
                                                const std::string& fallback_code);

struct cluster_info {
  std::string version;
  std::string node_id;
  std::vector<std::string> roles;
  std::string listen_address;
  std::string state_dir;
  uint32_t pid = 0;
  int64_t started_at_ms = 0;
  std::string environment;
  uint32_t schema_version = 0;
  uint32_t actor_count = 0;
};

struct actor_info {
  std::string name;
  std::string kind;
  std::string state;
  uint64_t mailbox_depth = 0;
  std::vector<std::pair<std::string, int64_t>> counters;
  std::vector<std::pair<std::string, std::string>> details;
};

struct token_info {
  std::string token_id;
  std::string environment;
  std::string label;
  int64_t created_at_ms = 0;
};

struct connect_options {
  std::chrono::milliseconds connect_timeout{10000};
  std::string client_version = "0.1.0";
};

class connection {
public:
  /// Connects to "host:port" and authenticates with `token`.
  static std::unique_ptr<connection> open(const std::string& address, const std::string& token,
                                          connect_options opts = {});
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  /// What `authenticate` returned.
  const cluster_info& hello() const noexcept;

  cluster_info info();
  std::vector<actor_info> list_actors();
  actor_info inspect_actor(const std::string& name);
  /// Returns the secret token (shown once) and its public record.
  std::pair<std::string, token_info> create_token(const std::string& environment,
                                                  const std::string& label);
  std::vector<token_info> list_tokens();
  void revoke_token(const std::string& token_id);

  /// Disconnects and joins the kj thread; idempotent. Later calls throw "unavailable".
  void close();

  struct impl;

private:
  explicit connection(std::unique_ptr<impl> self);
  std::unique_ptr<impl> impl_;
};

} // namespace shoal::client
