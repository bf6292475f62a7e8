#pragma once
/// A thin libcurl wrapper for the registry client: buffered GETs (manifests, configs, tokens)
/// and streamed GETs (layer blobs) whose body is handed, block by block, to the caller's thread.
/// Redirects are followed; credentials and custom Authorization headers are not sent to another
/// host after a redirect (libcurl's default).

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

namespace shoal::registry::detail {

struct http_request {
  std::string url;
  std::vector<std::string> headers;  ///< "Name: value"
  /// Basic auth when `username` is not empty. Never logged.
  std::string username;
  std::string password;
  /// Names the server in error messages ("the registry 127.0.0.1:5000").
  std::string server_label;
  /// Buffered requests: the whole exchange. Streamed requests: the longest stall (less than one
  /// byte per second for this long aborts the transfer).
  long timeout_s = 300;
};

struct http_response {
  long status = 0;
  /// The final response's headers, names lowercase, in order.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  /// The first header named `name` (lowercase).
  std::optional<std::string> header(std::string_view name) const;
  /// Every header named `name` (lowercase).
  std::vector<std::string> headers_named(std::string_view name) const;
};

/// One challenge of a `WWW-Authenticate` header.
struct auth_challenge {
  std::string scheme;                         ///< lowercase: "bearer", "basic"
  std::map<std::string, std::string> params;  ///< names lowercase, values unquoted
};

/// Parses `Scheme k=v, k="quoted, \"v\"", …`; one header may hold several challenges (a new
/// one starts where a token is not followed by '=').
std::vector<auth_challenge> parse_www_authenticate(std::string_view header);

/// Initialises libcurl once per process (idempotent, thread-safe).
void init_curl();

/// GET `request.url` into memory; a body longer than `max_body_bytes` is an error
/// (errc::resource_exhausted). Transport failures: errc::unavailable (errc::timeout when the
/// deadline passed) naming `server_label` and curl's message. Any HTTP status is a response.
[[nodiscard]] caf::expected<http_response> http_get(const http_request& request,
                                                   size_t max_body_bytes);

/// A GET whose body the caller reads with next() while libcurl runs on a thread of its own.
/// At most `buffer_bytes` are buffered between the two; the transfer waits for the reader.
/// Destroying the stream (or cancel()) aborts an unfinished transfer and joins the thread.
class http_stream {
public:
  /// Starts the transfer and returns once the final response's status is known.
  static caf::expected<std::unique_ptr<http_stream>> open(http_request request,
                                                          size_t buffer_bytes = 8u << 20);
  ~http_stream();
  http_stream(const http_stream&) = delete;
  http_stream& operator=(const http_stream&) = delete;

  long status() const noexcept { return status_; }
  /// Response headers (final response); complete once the status is known.
  const http_response& head() const noexcept { return head_; }

  /// The next block of the body (valid until the next call); an empty view at the end. A
  /// transport failure is an error as in http_get(). Only for a 2xx status.
  caf::expected<std::string_view> next();
  /// For a non-2xx status: waits for the end and returns the (capped) body.
  std::string error_body();
  /// Aborts the transfer (idempotent).
  void cancel();

  struct state;

private:
  explicit http_stream(std::unique_ptr<state> s);
  std::unique_ptr<state> state_;
  std::thread thread_;
  long status_ = 0;
  http_response head_;
  std::string current_;
};

} // namespace shoal::registry::detail
