// The id randomness: the per-thread pool, hex formatting and unbiased ranges.
#include "alou/core/random.hpp"

#include <gtest/gtest.h>

#include <array>
#include <set>
#include <string>
#include <thread>
#include <vector>

TEST(Random, HexHasTheLengthAndAlphabetAsked) {
  for (std::size_t n : {1U, 4U, 8U, 16U, 32U, 33U, 64U}) {
    const auto h = alou::random_hex(n);
    ASSERT_EQ(h.size(), 2 * n) << n;
    EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos) << h;
  }
  EXPECT_EQ(alou::random_hex(0), "");
}

TEST(Random, IdsDoNotRepeatAcrossPoolRefillsAndThreads) {
  // 8-byte ids: 20,000 per thread, across many 256-byte refills.
  std::vector<std::string> a;
  std::vector<std::string> b;
  std::thread t([&] {
    for (int i = 0; i < 20'000; ++i) b.push_back(alou::random_hex(8));
  });
  for (int i = 0; i < 20'000; ++i) a.push_back(alou::random_hex(8));
  t.join();
  std::set<std::string> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 40'000U);  // two threads never share pool bytes
}

TEST(Random, EveryHexDigitIsAboutEquallyLikely) {
  std::array<int, 16> seen{};
  const int draws = 4000;  // 8 bytes each: 64,000 digits, 4,000 expected per digit
  for (int i = 0; i < draws; ++i) {
    for (char c : alou::random_hex(8)) ++seen[static_cast<std::size_t>(c <= '9' ? c - '0' : c - 'a' + 10)];
  }
  for (int count : seen) {
    EXPECT_GT(count, 3600);
    EXPECT_LT(count, 4400);
  }
}

TEST(Random, UniformStaysInRangeAndCoversIt) {
  EXPECT_EQ(alou::random_uniform(0), 0U);
  EXPECT_EQ(alou::random_uniform(1), 0U);
  std::array<int, 3> seen{};
  for (int i = 0; i < 30'000; ++i) {
    const auto r = alou::random_uniform(3);
    ASSERT_LT(r, 3U);
    ++seen[r];
  }
  for (int count : seen) {
    EXPECT_GT(count, 9'000);  // 10,000 expected
    EXPECT_LT(count, 11'000);
  }
  // A range that is not a power of two and near 2^32 stays unbiased enough
  // to land in both halves.
  const std::uint32_t big = 3'000'000'000U;
  int high = 0;
  for (int i = 0; i < 2'000; ++i) {
    const auto r = alou::random_uniform(big);
    ASSERT_LT(r, big);
    high += r >= big / 2 ? 1 : 0;
  }
  EXPECT_GT(high, 850);
  EXPECT_LT(high, 1'150);
}
