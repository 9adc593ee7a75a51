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

// Writes `s` JSON-escaped (without quotes) at `dst`, which has room for
// 6 * s.size() bytes; returns the end. ASCII runs are copied as they are.
char* write_json_escaped(char* dst, std::string_view s) noexcept;

// Appends `s` as a quoted JSON string to `out` (a std::string, or any
// buffer with append(const char*, const char*), e.g. spdlog's).
template <class Out>
void append_json_string(Out& out, std::string_view s) {
  std::string text(2 + 6 * s.size(), '\0');
  char* end = text.data();
  *end++ = '"';
  end = write_json_escaped(end, s);
  *end++ = '"';
  if constexpr (std::is_same_v<Out, std::string>) {
    out.append(text.data(), static_cast<std::size_t>(end - text.data()));
  } else {
    out.append(text.data(), end);
  }
}

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
