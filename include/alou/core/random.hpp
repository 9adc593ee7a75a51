#pragma once
// Randomness from libsodium's CSPRNG, and the hex digits of time-ordered ids.
// Draws of up to 32 bytes come from a per-thread pool refilled 256 bytes at
// a time (one getrandom(2) per refill, not per id).
#include <cstddef>
#include <cstdint>
#include <string>

namespace alou {

// `n` characters from [A-Za-z0-9], uniformly (rejection sampling).
std::string random_alnum(std::size_t n);
// `n` random bytes as lowercase hex (2n characters).
std::string random_hex(std::size_t n);
// Uniform in [0, n) (0 when n < 2), without modulo bias.
std::uint32_t random_uniform(std::uint32_t n);

// Writes the low `digits` hex digits of `value` (lowercase, zero-padded) at
// `dst`: the time and counter parts of ids, without snprintf.
inline void put_hex(char* dst, std::size_t digits, std::uint64_t value) noexcept {
  static constexpr char kHex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < digits; ++i) dst[digits - 1 - i] = kHex[(value >> (4 * i)) & 0xf];
}

}  // namespace alou
