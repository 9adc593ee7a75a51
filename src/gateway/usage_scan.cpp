#include "alou/gateway/usage_scan.hpp"

#include <algorithm>

namespace alou::gateway {

std::size_t usage_object_at(std::string_view text) {
  auto pos = text.rfind("\"usage\"");
  if (pos == std::string_view::npos) return pos;
  pos += 7;
  while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\n' || text[pos] == '\r' || text[pos] == '\t')) ++pos;
  if (pos >= text.size() || text[pos] != ':') return std::string_view::npos;
  ++pos;
  while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\n' || text[pos] == '\r' || text[pos] == '\t')) ++pos;
  return pos < text.size() && text[pos] == '{' ? pos : std::string_view::npos;
}

std::size_t object_end(std::string_view text, std::size_t at) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = at; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{') {
      ++depth;
    } else if (c == '}' && --depth == 0) {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// Adds the escaped length of every string value of `key` in `text`.
std::size_t string_values(std::string_view text, std::string_view key) {
  std::size_t total = 0;
  std::size_t pos = 0;
  while ((pos = text.find(key, pos)) != std::string_view::npos) {
    pos += key.size();
    while (pos < text.size() && is_space(text[pos])) ++pos;
    if (pos >= text.size() || text[pos] != ':') continue;
    ++pos;
    while (pos < text.size() && is_space(text[pos])) ++pos;
    if (pos >= text.size() || text[pos] != '"') continue;
    const auto start = ++pos;
    while (pos < text.size() && text[pos] != '"') pos += text[pos] == '\\' ? 2 : 1;
    total += std::min(pos, text.size()) - start;
  }
  return total;
}

}  // namespace

std::size_t delta_chars(std::string_view text) {
  return string_values(text, "\"content\"") + string_values(text, "\"arguments\"");
}

}  // namespace alou::gateway
