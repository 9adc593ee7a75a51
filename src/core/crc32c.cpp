#include "alou/core/crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace alou {
namespace {

constexpr std::uint32_t kPoly = 0x82F63B78;  // 0x1EDC6F41 reflected

constexpr std::array<std::uint32_t, 256> make_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}

constexpr auto kTable = make_table();

}  // namespace

std::uint32_t crc32c_table(std::string_view data) noexcept {
  std::uint32_t c = 0xFFFFFFFF;
  for (const char ch : data) c = kTable[(c ^ static_cast<unsigned char>(ch)) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFF;
}

#if defined(__x86_64__)
bool crc32c_hardware_available() noexcept {
  static const bool yes = __builtin_cpu_supports("sse4.2");
  return yes;
}

__attribute__((target("sse4.2"))) std::uint32_t crc32c_hardware(std::string_view data) noexcept {
  std::uint64_t c = 0xFFFFFFFF;
  const char* p = data.data();
  std::size_t n = data.size();
  while (n >= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<std::uint32_t>(c);
  while (n > 0) {
    c32 = _mm_crc32_u8(c32, static_cast<unsigned char>(*p++));
    --n;
  }
  return c32 ^ 0xFFFFFFFF;
}
#else
bool crc32c_hardware_available() noexcept { return false; }
std::uint32_t crc32c_hardware(std::string_view data) noexcept { return crc32c_table(data); }
#endif

std::uint32_t crc32c(std::string_view data) noexcept {
  return crc32c_hardware_available() ? crc32c_hardware(data) : crc32c_table(data);
}

}  // namespace alou
