#include "runtime/log.hpp"

#include <atomic>
#include <chrono>
#include <ctime>
#include <mutex>

namespace shoal::log {

namespace {

std::atomic<level> min_level{level::info};
std::atomic<std::FILE*> sink_file{nullptr};
std::mutex write_mutex;

constexpr std::string_view level_names[] = {"debug", "info", "warn", "error"};

bool needs_quotes(std::string_view v) {
  if (v.empty())
    return true;
  for (char c : v)
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20)
      return true;
  return false;
}

void append_value(std::string& out, std::string_view v) {
  if (!needs_quotes(v)) {
    out.append(v);
    return;
  }
  out.push_back('"');
  for (char c : v) {
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\t': out.append("\\t"); break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out.push_back('?');
        else
          out.push_back(c);
    }
  }
  out.push_back('"');
}

std::string timestamp() {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto secs = time_point_cast<seconds>(now);
  auto micros = duration_cast<microseconds>(now - secs).count();
  std::time_t t = system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long>(micros));
  return buf;
}

} // namespace

void set_min_level(level lvl) noexcept { min_level = lvl; }

void set_sink(std::FILE* sink) noexcept { sink_file = sink; }

bool parse_level(std::string_view text, level& out) noexcept {
  for (size_t i = 0; i < std::size(level_names); ++i)
    if (level_names[i] == text) {
      out = static_cast<level>(i);
      return true;
    }
  return false;
}

event::event(level lvl, std::string_view name) : enabled_(lvl >= min_level.load()) {
  if (!enabled_)
    return;
  line_.reserve(128);
  line_ += "ts=";
  line_ += timestamp();
  line_ += " level=";
  line_ += level_names[static_cast<size_t>(lvl)];
  line_ += " event=";
  append_value(line_, name);
}

event& event::kv(std::string_view key, std::string_view value) {
  if (enabled_) {
    line_.push_back(' ');
    line_.append(key);
    line_.push_back('=');
    append_value(line_, value);
  }
  return *this;
}

event::~event() {
  if (!enabled_)
    return;
  line_.push_back('\n');
  std::FILE* out = sink_file.load();
  if (out == nullptr)
    out = stderr;
  std::lock_guard<std::mutex> guard{write_mutex};
  std::fwrite(line_.data(), 1, line_.size(), out);
  std::fflush(out);
}

} // namespace shoal::log
