#include "fs/registry/detail/json.hpp"

#include <cstdlib>
#include <string>

#include "runtime/errc.hpp"

namespace shoal::registry::detail {

double json_value::as_double() const noexcept {
  if (kind_ != kind::number)
    return 0;
  return std::strtod(text_.c_str(), nullptr);
}

std::optional<uint64_t> json_value::as_uint64() const noexcept {
  if (kind_ != kind::number || text_.empty() || text_.size() > 20)
    return std::nullopt;
  uint64_t v = 0;
  for (char c : text_) {
    if (c < '0' || c > '9')
      return std::nullopt; // negative, fraction or exponent
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10)
      return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

const json_value* json_value::find(std::string_view key) const noexcept {
  const json_value* found = nullptr;
  for (const auto& [k, v] : members_)
    if (k == key)
      found = &v;
  return found;
}

std::string json_value::string_at(std::string_view key) const {
  const json_value* v = find(key);
  return v != nullptr && v->is_string() ? v->text_ : std::string{};
}

json_value json_value::make_bool(bool b) {
  json_value v;
  v.kind_ = kind::boolean;
  v.bool_ = b;
  return v;
}

json_value json_value::make_number(std::string text) {
  json_value v;
  v.kind_ = kind::number;
  v.text_ = std::move(text);
  return v;
}

json_value json_value::make_string(std::string s) {
  json_value v;
  v.kind_ = kind::string;
  v.text_ = std::move(s);
  return v;
}

json_value json_value::make_array(std::vector<json_value> items) {
  json_value v;
  v.kind_ = kind::array;
  v.items_ = std::move(items);
  return v;
}

json_value json_value::make_object(std::vector<std::pair<std::string, json_value>> members) {
  json_value v;
  v.kind_ = kind::object;
  v.members_ = std::move(members);
  return v;
}

namespace {

/// Deeper documents are rejected: the parser recurses once per level.
constexpr int max_depth = 256;

class parser {
public:
  explicit parser(std::string_view text) : s_(text) {}

  bool parse_document(json_value& out) {
    skip_ws();
    if (!parse_value(out, 0))
      return false;
    skip_ws();
    if (pos_ != s_.size())
      return fail("unexpected characters after the value");
    return true;
  }

  const std::string& reason() const { return reason_; }
  size_t pos() const { return pos_; }

private:
  bool fail(const char* why) {
    if (reason_.empty())
      reason_ = why;
    return false;
  }

  void skip_ws() {
    while (pos_ < s_.size()
           && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }

  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word)
      return fail("invalid literal");
    pos_ += word.size();
    return true;
  }

  bool parse_value(json_value& out, int depth) {
    if (depth > max_depth)
      return fail("nesting too deep");
    if (pos_ >= s_.size())
      return fail("unexpected end of input");
    switch (s_[pos_]) {
      case '{':
        return parse_object(out, depth);
      case '[':
        return parse_array(out, depth);
      case '"': {
        std::string str;
        if (!parse_string(str))
          return false;
        out = json_value::make_string(std::move(str));
        return true;
      }
      case 't':
        if (!literal("true"))
          return false;
        out = json_value::make_bool(true);
        return true;
      case 'f':
        if (!literal("false"))
          return false;
        out = json_value::make_bool(false);
        return true;
      case 'n':
        if (!literal("null"))
          return false;
        out = json_value::make_null();
        return true;
      default:
        return parse_number(out);
    }
  }

  bool parse_object(json_value& out, int depth) {
    ++pos_; // '{'
    std::vector<std::pair<std::string, json_value>> members;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      out = json_value::make_object({});
      return true;
    }
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"')
        return fail("expected a string key");
      std::string key;
      if (!parse_string(key))
        return false;
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':')
        return fail("expected ':'");
      ++pos_;
      skip_ws();
      json_value v;
      if (!parse_value(v, depth + 1))
        return false;
      members.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (pos_ >= s_.size())
        return fail("unexpected end of input in an object");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == '}') {
        ++pos_;
        break;
      }
      return fail("expected ',' or '}'");
    }
    out = json_value::make_object(std::move(members));
    return true;
  }

  bool parse_array(json_value& out, int depth) {
    ++pos_; // '['
    std::vector<json_value> items;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      out = json_value::make_array({});
      return true;
    }
    for (;;) {
      skip_ws();
      json_value v;
      if (!parse_value(v, depth + 1))
        return false;
      items.push_back(std::move(v));
      skip_ws();
      if (pos_ >= s_.size())
        return fail("unexpected end of input in an array");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == ']') {
        ++pos_;
        break;
      }
      return fail("expected ',' or ']'");
    }
    out = json_value::make_array(std::move(items));
    return true;
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  bool parse_number(json_value& out) {
    size_t start = pos_;
    if (pos_ < s_.size() && s_[pos_] == '-')
      ++pos_;
    if (pos_ >= s_.size() || !is_digit(s_[pos_]))
      return fail("invalid value");
    if (s_[pos_] == '0') {
      ++pos_;
    } else {
      while (pos_ < s_.size() && is_digit(s_[pos_]))
        ++pos_;
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (pos_ >= s_.size() || !is_digit(s_[pos_]))
        return fail("expected a digit after '.'");
      while (pos_ < s_.size() && is_digit(s_[pos_]))
        ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-'))
        ++pos_;
      if (pos_ >= s_.size() || !is_digit(s_[pos_]))
        return fail("expected a digit in the exponent");
      while (pos_ < s_.size() && is_digit(s_[pos_]))
        ++pos_;
    }
    out = json_value::make_number(std::string{s_.substr(start, pos_ - start)});
    return true;
  }

  bool hex4(uint32_t& out) {
    if (s_.size() - pos_ < 4)
      return fail("truncated \\u escape");
    out = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_++];
      out <<= 4;
      if (c >= '0' && c <= '9')
        out |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        out |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        out |= static_cast<uint32_t>(c - 'A' + 10);
      else
        return fail("invalid hex digit in a \\u escape");
    }
    return true;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  bool parse_string(std::string& out) {
    ++pos_; // opening quote
    for (;;) {
      if (pos_ >= s_.size())
        return fail("unterminated string");
      char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20)
        return fail("control character in a string");
      if (c != '\\') {
        out += c;
        ++pos_;
        continue;
      }
      ++pos_;
      if (pos_ >= s_.size())
        return fail("unterminated escape");
      char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = 0;
          if (!hex4(cp))
            return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate: joined with a following low surrogate, else U+FFFD.
            if (s_.substr(pos_, 2) == "\\u") {
              size_t save = pos_;
              pos_ += 2;
              uint32_t lo = 0;
              if (!hex4(lo))
                return false;
              if (lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
              } else {
                pos_ = save; // the next escape is decoded on its own
                cp = 0xFFFD;
              }
            } else {
              cp = 0xFFFD;
            }
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            cp = 0xFFFD;
          }
          append_utf8(out, cp);
          break;
        }
        default:
          return fail("invalid escape");
      }
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
  std::string reason_;
};

} // namespace

caf::expected<json_value> parse_json(std::string_view text, std::string_view what) {
  parser p{text};
  json_value out;
  if (!p.parse_document(out))
    return make_error(errc::invalid_argument, std::string{what} + " is not valid JSON: "
                                                + p.reason() + " at byte "
                                                + std::to_string(p.pos()));
  return out;
}

} // namespace shoal::registry::detail
