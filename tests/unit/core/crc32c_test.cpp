// CRC-32C against published vectors (RFC 3720 B.4 and the classic check
// value), both the table and the SSE4.2 instruction, which must agree.
#include "alou/core/crc32c.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace alou {
namespace {

std::string bytes(std::initializer_list<int> v) {
  std::string s;
  for (int b : v) s.push_back(static_cast<char>(b));
  return s;
}

struct Vector {
  std::string data;
  std::uint32_t crc;
};

std::vector<Vector> vectors() {
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(static_cast<char>(i));
    descending.push_back(static_cast<char>(31 - i));
  }
  // RFC 3720 B.4: an iSCSI read command PDU.
  const std::string iscsi = bytes({0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                   0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
                                   0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
                                   0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00});
  return {
      {"", 0x00000000},
      {"123456789", 0xE3069283},
      {std::string(32, '\0'), 0x8A9136AA},
      {std::string(32, '\xff'), 0x62A8AB43},
      {ascending, 0x46DD794E},
      {descending, 0x113FDB5C},
      {iscsi, 0xD9963A56},
  };
}

TEST(Crc32c, PublishedVectors) {
  for (const auto& v : vectors()) {
    EXPECT_EQ(crc32c_table(v.data), v.crc) << v.data.size();
    EXPECT_EQ(crc32c(v.data), v.crc) << v.data.size();
    if (crc32c_hardware_available()) {
      EXPECT_EQ(crc32c_hardware(v.data), v.crc) << v.data.size();
    }
  }
}

TEST(Crc32c, TheInstructionAndTheTableAgreeAtEveryLengthAndOffset) {
  if (!crc32c_hardware_available()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  std::mt19937 rng(7);
  std::string buf(2100, '\0');
  for (auto& c : buf) c = static_cast<char>(rng());
  for (std::size_t off = 0; off < 9; ++off) {
    for (std::size_t len = 0; len + off <= buf.size(); len += (len < 64 ? 1 : 97)) {
      const std::string_view s(buf.data() + off, len);
      ASSERT_EQ(crc32c_hardware(s), crc32c_table(s)) << off << " " << len;
    }
  }
}

}  // namespace
}  // namespace alou
