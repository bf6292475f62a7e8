#pragma once
/// A small JSON reader (RFC 8259) for registry manifests, image configs and token answers.
/// Values are immutable trees; strings are UTF-8 (`\u` escapes decoded, surrogate pairs joined,
/// a lone surrogate becomes U+FFFD). Numbers keep their source text so sizes stay exact.
/// Untrusted input: nesting is limited and every error names the byte offset.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

namespace shoal::registry::detail {

class json_value {
public:
  enum class kind : uint8_t { null, boolean, number, string, array, object };

  json_value() = default;

  kind type() const noexcept { return kind_; }
  bool is_null() const noexcept { return kind_ == kind::null; }
  bool is_bool() const noexcept { return kind_ == kind::boolean; }
  bool is_number() const noexcept { return kind_ == kind::number; }
  bool is_string() const noexcept { return kind_ == kind::string; }
  bool is_array() const noexcept { return kind_ == kind::array; }
  bool is_object() const noexcept { return kind_ == kind::object; }

  /// false unless a boolean true.
  bool as_bool() const noexcept { return kind_ == kind::boolean && bool_; }
  /// The decoded string; empty for other kinds.
  const std::string& as_string() const noexcept { return text_; }
  /// A number as double; 0 for other kinds.
  double as_double() const noexcept;
  /// A non-negative integral number (exact up to 2^64-1); nullopt otherwise.
  std::optional<uint64_t> as_uint64() const noexcept;
  /// Array elements (empty for other kinds).
  const std::vector<json_value>& items() const noexcept { return items_; }
  /// Object members in document order (empty for other kinds).
  const std::vector<std::pair<std::string, json_value>>& members() const noexcept {
    return members_;
  }
  /// The member `key` of an object (the last one if repeated); nullptr when absent or not an
  /// object.
  const json_value* find(std::string_view key) const noexcept;
  /// The string member `key`, or "" when absent or not a string.
  std::string string_at(std::string_view key) const;

  /// Builders (used by the parser and by tests).
  static json_value make_null() { return {}; }
  static json_value make_bool(bool b);
  static json_value make_number(std::string text);
  static json_value make_string(std::string s);
  static json_value make_array(std::vector<json_value> items);
  static json_value make_object(std::vector<std::pair<std::string, json_value>> members);

private:
  kind kind_ = kind::null;
  bool bool_ = false;
  std::string text_;  ///< string value, or a number's source text
  std::vector<json_value> items_;
  std::vector<std::pair<std::string, json_value>> members_;
};

/// Parses one JSON document (surrounding whitespace allowed, nothing else after it). Errors:
/// errc::invalid_argument "`what` is not valid JSON: <reason> at byte N".
[[nodiscard]] caf::expected<json_value> parse_json(std::string_view text,
                                                  std::string_view what = "document");

} // namespace shoal::registry::detail
