#pragma once
// Wall-clock time as Unix milliseconds and its RFC 3339 text form.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace alou {

std::int64_t now_unix_ms();

// RFC 3339 date-time to Unix milliseconds (offsets applied; a leap second
// 60 is read as 59.999). nullopt if malformed or out of range.
std::optional<std::int64_t> parse_rfc3339(std::string_view text);
// Unix milliseconds as "2024-05-01T12:00:00.000Z" (JavaScript's toISOString).
std::string format_rfc3339(std::int64_t unix_ms);
// Seconds as "0.250s" (three decimals and an "s", OpenAI's
// x-ratelimit-reset-* form); std::to_chars, not printf.
std::string format_seconds3(double seconds);

}  // namespace alou
