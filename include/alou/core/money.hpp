#pragma once
// Money is an int64 count of nano-units (1 USD = 1,000,000,000). Never a
// double: amounts from users are parsed from their decimal text.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace alou {

inline constexpr std::int64_t kNanosPerUnit = 1'000'000'000;

// "12", "12.5", "0.000000001", "-3.25" -> nanos. More than 9 decimals, junk
// or overflow -> nullopt.
std::optional<std::int64_t> parse_money(std::string_view text);
// nanos -> "12.500000" (6 decimals, rounded half away from zero).
std::string format_money(std::int64_t nanos);

}  // namespace alou
