#pragma once
// JSON text written directly, without building a document tree: for the
// small objects the hot path emits (audit events, settlement metadata),
// where nlohmann::json's tree and its sorted-map nodes cost more than the
// rest of the request.
//
// Strings are escaped as JSON requires (quote, backslash, control characters
// as \u00XX); valid UTF-8 passes through; an invalid byte becomes U+FFFD, so
// the output is always valid JSON in valid UTF-8.
//
//   std::string data = JsonObject{}.str("provider", name).num("attempt", 2).boolean("stream", true).done();
//   // {"provider":"openai","attempt":2,"stream":true}
#include <algorithm>
#include <charconv>
#include <cstring>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

namespace alou {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not one
// (overlong forms, surrogates and code points above U+10FFFF are invalid).
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept;

// Appends `s` as a quoted JSON string to `out` (a std::string or any buffer
// with append(const char*, const char*) and push_back(char)).
template <class Out>
void append_json_string(Out& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto put = [&out](std::string_view t) {
    if constexpr (std::is_same_v<Out, std::string>) {
      out.append(t.data(), t.size());  // not the iterator overload (a temporary string)
    } else {
      out.append(t.data(), t.data() + t.size());
    }
  };
  out.push_back('"');
  std::size_t i = 0;
  std::size_t run = 0;  // start of the pending run of bytes copied as they are
  const auto flush = [&] {
    if (i > run) put(s.substr(run, i - run));
  };
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      const std::size_t len = utf8_sequence_length(s, i);
      if (len != 0) {
        i += len;
        continue;
      }
      flush();
      put("\\ufffd");
      run = ++i;
      continue;
    }
    flush();
    switch (c) {
      case '"': put("\\\""); break;
      case '\\': put("\\\\"); break;
      case '\n': put("\\n"); break;
      case '\r': put("\\r"); break;
      case '\t': put("\\t"); break;
      case '\b': put("\\b"); break;
      case '\f': put("\\f"); break;
      default: {
        const char esc[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        put(std::string_view(esc, sizeof esc));
      }
    }
    run = ++i;
  }
  flush();
  out.push_back('"');
}

// Writes `s` JSON-escaped (without quotes) at `dst`, which has room for
// 6 * s.size() bytes; returns the end. ASCII runs are copied as they are.
char* write_json_escaped(char* dst, std::string_view s) noexcept;

// One JSON object, written member by member in the order given. Keys are
// written as given: they must be plain ASCII names (no quote, backslash or
// control character). Values are escaped.
class JsonObject {
 public:
  JsonObject() {
    out_.resize(192);
    out_[0] = '{';
  }

  JsonObject& str(std::string_view key, std::string_view value) {
    char* p = name(key, 2 + 6 * value.size());
    *p++ = '"';
    p = write_json_escaped(p, value);
    *p++ = '"';
    len_ = static_cast<std::size_t>(p - out_.data());
    return *this;
  }
  JsonObject& num(std::string_view key, std::int64_t value) {
    char* p = name(key, 24);
    p = std::to_chars(p, p + 24, value).ptr;
    len_ = static_cast<std::size_t>(p - out_.data());
    return *this;
  }
  JsonObject& boolean(std::string_view key, bool value) { return raw(key, value ? "true" : "false"); }
  JsonObject& null(std::string_view key) { return raw(key, "null"); }
  // `json` must be valid JSON text (e.g. another JsonObject's result).
  JsonObject& raw(std::string_view key, std::string_view json) {
    char* p = name(key, json.size());
    std::memcpy(p, json.data(), json.size());
    len_ = static_cast<std::size_t>(p + json.size() - out_.data());
    return *this;
  }

  // The text; the object is spent.
  std::string done() {
    reserve(1);
    out_[len_++] = '}';
    out_.resize(len_);
    return std::move(out_);
  }

 private:
  void reserve(std::size_t n) {
    if (len_ + n > out_.size()) out_.resize(std::max(2 * out_.size(), len_ + n));
  }
  // Writes `,"key":` and returns where the value goes, with room for `value_room` bytes.
  char* name(std::string_view key, std::size_t value_room) {
    reserve(key.size() + 4 + value_room);
    char* p = out_.data() + len_;
    if (len_ > 1) *p++ = ',';
    *p++ = '"';
    std::memcpy(p, key.data(), key.size());
    p += key.size();
    *p++ = '"';
    *p++ = ':';
    return p;
  }

  std::string out_;  // sized ahead; the first len_ bytes are written
  std::size_t len_ = 1;
};

}  // namespace alou
