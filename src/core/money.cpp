#include "alou/core/money.hpp"

#include <limits>

namespace alou {

std::optional<std::int64_t> parse_money(std::string_view text) {
  if (text.empty()) return std::nullopt;
  bool negative = false;
  if (text.front() == '-' || text.front() == '+') {
    negative = text.front() == '-';
    text.remove_prefix(1);
  }
  const auto dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  const std::string_view frac = dot == std::string_view::npos ? std::string_view{} : text.substr(dot + 1);
  if (whole.empty() && frac.empty()) return std::nullopt;
  if (dot != std::string_view::npos && frac.empty()) return std::nullopt;
  if (frac.size() > 9) return std::nullopt;
  // The magnitude may reach INT64_MAX, or INT64_MAX + 1 for a negative amount.
  const std::uint64_t limit =
      static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + (negative ? 1 : 0);
  constexpr auto kNanos = static_cast<std::uint64_t>(kNanosPerUnit);
  std::uint64_t units = 0;
  for (const char c : whole) {
    if (c < '0' || c > '9') return std::nullopt;
    if (units > limit / kNanos) return std::nullopt;
    units = units * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (units > limit / kNanos) return std::nullopt;
  std::uint64_t nanos = 0;
  std::uint64_t scale = kNanos / 10;
  for (const char c : frac) {
    if (c < '0' || c > '9') return std::nullopt;
    nanos += static_cast<std::uint64_t>(c - '0') * scale;
    scale /= 10;
  }
  const std::uint64_t total = units * kNanos + nanos;
  if (total > limit) return std::nullopt;
  // Modular conversion (C++20): 0 - 2^63 becomes INT64_MIN.
  return static_cast<std::int64_t>(negative ? 0 - total : total);
}

std::string format_money(std::int64_t nanos) {
  const bool negative = nanos < 0;
  // Work in unsigned to handle INT64_MIN.
  std::uint64_t abs = negative ? static_cast<std::uint64_t>(-(nanos + 1)) + 1 : static_cast<std::uint64_t>(nanos);
  std::uint64_t micros = abs / 1000;
  if (abs % 1000 >= 500) ++micros;
  const std::uint64_t units = micros / 1'000'000;
  const std::uint64_t frac = micros % 1'000'000;
  std::string f = std::to_string(frac);
  std::string out = negative && micros != 0 ? "-" : "";
  out += std::to_string(units);
  out += '.';
  out.append(6 - f.size(), '0');
  out += f;
  return out;
}

}  // namespace alou
