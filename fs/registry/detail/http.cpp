#include "fs/registry/detail/http.hpp"

#include <algorithm>
#include <map>
#include <cctype>
#include <cstring>
#include <mutex>

#include <curl/curl.h>

#include "runtime/errc.hpp"

namespace shoal::registry::detail {

std::optional<std::string> http_response::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name)
      return v;
  return std::nullopt;
}

std::vector<std::string> http_response::headers_named(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : headers)
    if (k == name)
      out.push_back(v);
  return out;
}

void init_curl() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

namespace {

/// The longest error body kept from a non-2xx response.
constexpr size_t max_error_body = 64 << 10;

/// Adds one raw header line to `headers` (reset at each status line, so only the final
/// response's headers remain after redirects).
void collect_header(std::vector<std::pair<std::string, std::string>>& headers, const char* data,
                    size_t n) {
  std::string_view line{data, n};
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n'))
    line.remove_suffix(1);
  if (line.substr(0, 5) == "HTTP/") {
    headers.clear();
    return;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos)
    return;
  std::string name{line.substr(0, colon)};
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
    value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
    value.remove_suffix(1);
  headers.emplace_back(std::move(name), std::string{value});
}

/// Options shared by buffered and streamed requests. `errbuf` must outlive the transfer.
curl_slist* setup(CURL* curl, const http_request& r, char* errbuf, bool streamed) {
  curl_easy_setopt(curl, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#endif
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "shoal-registry-client/1");
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, std::min(r.timeout_s, 30L));
  if (streamed) {
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, r.timeout_s);
  } else {
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, r.timeout_s);
  }
  if (!r.username.empty()) {
    curl_easy_setopt(curl, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
    curl_easy_setopt(curl, CURLOPT_USERNAME, r.username.c_str());
    curl_easy_setopt(curl, CURLOPT_PASSWORD, r.password.c_str());
  }
  curl_slist* list = nullptr;
  for (const auto& h : r.headers)
    list = curl_slist_append(list, h.c_str());
  if (list != nullptr)
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  return list;
}

caf::error transport_error(const http_request& r, CURLcode code, const char* errbuf) {
  std::string msg = errbuf[0] != '\0' ? std::string{errbuf} : curl_easy_strerror(code);
  std::string what = "cannot reach " + r.server_label + " (GET " + r.url + "): " + msg;
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
      return make_error(errc::timeout, what + "; the registry is slow or unreachable, retry later");
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
      return make_error(errc::unavailable,
                        what + "; TLS failed — if the registry serves plain HTTP, list it in the "
                               "insecure registries, otherwise install its CA certificate");
    case CURLE_COULDNT_RESOLVE_HOST:
      return make_error(errc::unavailable, what + "; check the host name in the image reference");
    case CURLE_COULDNT_CONNECT:
      return make_error(errc::unavailable, what + "; is the registry running at that address?");
    default:
      return make_error(errc::unavailable, what);
  }
}

struct buffered_sink {
  std::string body;
  size_t max = 0;
  bool too_big = false;
  std::vector<std::pair<std::string, std::string>> headers;
};

size_t buffered_write(char* data, size_t size, size_t nmemb, void* user) {
  auto* sink = static_cast<buffered_sink*>(user);
  size_t n = size * nmemb;
  if (sink->body.size() + n > sink->max) {
    sink->too_big = true;
    return 0; // aborts the transfer
  }
  sink->body.append(data, n);
  return n;
}

size_t buffered_header(char* data, size_t size, size_t nmemb, void* user) {
  collect_header(static_cast<buffered_sink*>(user)->headers, data, size * nmemb);
  return size * nmemb;
}

} // namespace

caf::expected<http_response> http_get(const http_request& request, size_t max_body_bytes) {
  init_curl();
  CURL* curl = curl_easy_init();
  if (curl == nullptr)
    return make_error(errc::internal, "curl_easy_init failed");
  char errbuf[CURL_ERROR_SIZE] = {0};
  buffered_sink sink;
  sink.max = max_body_bytes;
  curl_slist* list = setup(curl, request, errbuf, false);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, buffered_write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, buffered_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &sink);
  CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  curl_slist_free_all(list);
  if (sink.too_big)
    return make_error(errc::resource_exhausted,
                      request.server_label + " answered GET " + request.url + " with more than "
                        + std::to_string(max_body_bytes) + " bytes, more than a "
                        + "manifest, config or token can be");
  if (rc != CURLE_OK)
    return transport_error(request, rc, errbuf);
  http_response out;
  out.status = status;
  out.headers = std::move(sink.headers);
  out.body = std::move(sink.body);
  return out;
}


std::vector<auth_challenge> parse_www_authenticate(std::string_view h) {
  std::vector<auth_challenge> out;
  size_t i = 0;
  auto skip = [&] {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t' || h[i] == ','))
      ++i;
  };
  auto token = [&] {
    size_t start = i;
    while (i < h.size() && h[i] != ' ' && h[i] != '\t' && h[i] != ',' && h[i] != '=')
      ++i;
    return std::string{h.substr(start, i - start)};
  };
  auto lower = [](std::string s) {
    for (auto& c : s)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  while (true) {
    skip();
    if (i >= h.size())
      break;
    std::string word = token();
    if (word.empty()) {
      ++i;
      continue;
    }
    if (i < h.size() && h[i] == '=' && !out.empty()) {
      // A parameter of the current challenge.
      ++i;
      std::string value;
      if (i < h.size() && h[i] == '"') {
        ++i;
        while (i < h.size() && h[i] != '"') {
          if (h[i] == '\\' && i + 1 < h.size())
            ++i;
          value += h[i++];
        }
        ++i; // closing quote
      } else {
        size_t start = i;
        while (i < h.size() && h[i] != ',')
          ++i;
        value = std::string{h.substr(start, i - start)};
        while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
          value.pop_back();
      }
      out.back().params[lower(word)] = value;
    } else {
      out.push_back(auth_challenge{lower(word), {}});
    }
  }
  return out;
}

// -- streamed ---------------------------------------------------------------------------------

struct http_stream::state {
  http_request request;
  size_t buffer_bytes = 0;
  char errbuf[CURL_ERROR_SIZE] = {0};
  CURL* curl = nullptr;

  // Touched by the curl thread only.
  bool body_started = false;
  std::vector<std::pair<std::string, std::string>> raw_headers;

  std::mutex mtx;
  std::condition_variable cv;
  // Guarded by mtx.
  bool status_known = false;
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string pending;     ///< 2xx body bytes not yet taken by next()
  std::string error_body;  ///< non-2xx body (capped)
  bool finished = false;
  CURLcode result = CURLE_OK;
  bool cancelled = false;

  /// Publishes the status and headers of the final response (called with mtx held).
  void publish_status() {
    if (status_known)
      return;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    headers = raw_headers;
    status_known = true;
    cv.notify_all();
  }

  static size_t on_header(char* data, size_t size, size_t nmemb, void* user) {
    auto* s = static_cast<state*>(user);
    if (!s->body_started) // ignore trailers: the reader may already look at the headers
      collect_header(s->raw_headers, data, size * nmemb);
    return size * nmemb;
  }

  static size_t on_write(char* data, size_t size, size_t nmemb, void* user) {
    auto* s = static_cast<state*>(user);
    size_t n = size * nmemb;
    std::unique_lock<std::mutex> lock{s->mtx};
    if (!s->body_started) {
      s->body_started = true;
      s->publish_status();
    }
    if (s->cancelled)
      return 0;
    if (s->status < 200 || s->status > 299) {
      if (s->error_body.size() < max_error_body)
        s->error_body.append(data, std::min(n, max_error_body - s->error_body.size()));
      return n;
    }
    s->cv.wait(lock, [s] { return s->pending.size() < s->buffer_bytes || s->cancelled; });
    if (s->cancelled)
      return 0;
    s->pending.append(data, n);
    s->cv.notify_all();
    return n;
  }
};

http_stream::http_stream(std::unique_ptr<state> s) : state_(std::move(s)) {}

caf::expected<std::unique_ptr<http_stream>> http_stream::open(http_request request,
                                                              size_t buffer_bytes) {
  init_curl();
  auto s = std::make_unique<state>();
  s->request = std::move(request);
  s->buffer_bytes = std::max<size_t>(buffer_bytes, 64 << 10);
  s->curl = curl_easy_init();
  if (s->curl == nullptr)
    return make_error(errc::internal, "curl_easy_init failed");
  std::unique_ptr<http_stream> out{new http_stream(std::move(s))};
  state* st = out->state_.get();
  out->thread_ = std::thread{[st] {
    curl_slist* list = setup(st->curl, st->request, st->errbuf, true);
    curl_easy_setopt(st->curl, CURLOPT_WRITEFUNCTION, &state::on_write);
    curl_easy_setopt(st->curl, CURLOPT_WRITEDATA, st);
    curl_easy_setopt(st->curl, CURLOPT_HEADERFUNCTION, &state::on_header);
    curl_easy_setopt(st->curl, CURLOPT_HEADERDATA, st);
    CURLcode rc = curl_easy_perform(st->curl);
    std::lock_guard<std::mutex> lock{st->mtx};
    st->publish_status();
    st->result = rc;
    st->finished = true;
    st->cv.notify_all();
    curl_slist_free_all(list);
  }};
  std::unique_lock<std::mutex> lock{st->mtx};
  st->cv.wait(lock, [st] { return st->status_known || st->finished; });
  if (st->finished && st->result != CURLE_OK && !st->body_started)
    return transport_error(st->request, st->result, st->errbuf);
  out->status_ = st->status;
  out->head_.status = st->status;
  out->head_.headers = st->headers;
  return out;
}

http_stream::~http_stream() {
  cancel();
  if (thread_.joinable())
    thread_.join();
  if (state_ && state_->curl != nullptr)
    curl_easy_cleanup(state_->curl);
}

void http_stream::cancel() {
  std::lock_guard<std::mutex> lock{state_->mtx};
  state_->cancelled = true;
  state_->cv.notify_all();
}

caf::expected<std::string_view> http_stream::next() {
  state* st = state_.get();
  std::unique_lock<std::mutex> lock{st->mtx};
  st->cv.wait(lock, [st] { return !st->pending.empty() || st->finished || st->cancelled; });
  if (!st->pending.empty()) {
    current_.clear();
    current_.swap(st->pending);
    st->cv.notify_all();
    return std::string_view{current_};
  }
  if (st->cancelled && !st->finished)
    return make_error(errc::cancelled, "the download of " + st->request.url + " was cancelled");
  if (st->result != CURLE_OK)
    return transport_error(st->request, st->result, st->errbuf);
  return std::string_view{};
}

std::string http_stream::error_body() {
  state* st = state_.get();
  std::unique_lock<std::mutex> lock{st->mtx};
  st->cv.wait(lock, [st] { return st->finished; });
  return st->error_body;
}

} // namespace shoal::registry::detail
