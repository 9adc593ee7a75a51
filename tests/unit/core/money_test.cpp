#include "alou/core/money.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>

namespace alou {
namespace {

constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();

TEST(Money, ParsesWholeUnits) {
  EXPECT_EQ(parse_money("12"), 12 * kNanosPerUnit);
  EXPECT_EQ(parse_money("0"), 0);
}

TEST(Money, ParsesFraction) {
  EXPECT_EQ(parse_money("12.5"), 12'500'000'000);
  EXPECT_EQ(parse_money("0.27"), 270'000'000);
}

TEST(Money, ParsesOneNano) { EXPECT_EQ(parse_money("0.000000001"), 1); }

TEST(Money, ParsesNineDecimals) { EXPECT_EQ(parse_money("1.123456789"), 1'123'456'789); }

TEST(Money, ParsesNegative) {
  EXPECT_EQ(parse_money("-3.25"), -3'250'000'000);
  EXPECT_EQ(parse_money("-0"), 0);
}

TEST(Money, AcceptsExplicitPlus) { EXPECT_EQ(parse_money("+1"), kNanosPerUnit); }

// The code's choice: a fraction without a whole part is accepted, a dot
// without a fraction is not.
TEST(Money, AcceptsLeadingDot) {
  EXPECT_EQ(parse_money(".5"), 500'000'000);
  EXPECT_EQ(parse_money("-.5"), -500'000'000);
}

TEST(Money, RejectsTrailingDot) {
  EXPECT_EQ(parse_money("1."), std::nullopt);
  EXPECT_EQ(parse_money("."), std::nullopt);
}

TEST(Money, RejectsJunk) {
  for (const char* text : {"", "-", "+", " 1", "1 ", "1x", "x1", "$1", "1.2.3", "1e3", "--1", "+-1", "1,5",
                           "0x10", "1.-5", "1.5 ", "1\n", "inf", "nan"}) {
    EXPECT_EQ(parse_money(text), std::nullopt) << '"' << text << '"';
  }
}

TEST(Money, RejectsTenDecimals) {
  EXPECT_EQ(parse_money("0.0000000001"), std::nullopt);
  EXPECT_EQ(parse_money("1.0000000000"), std::nullopt);
}

TEST(Money, ParsesInt64Edges) {
  EXPECT_EQ(parse_money("9223372036.854775807"), kMax);
  EXPECT_EQ(parse_money("-9223372036.854775808"), kMin);
  EXPECT_EQ(parse_money("9223372036"), 9'223'372'036 * kNanosPerUnit);
}

TEST(Money, RejectsOverflow) {
  EXPECT_EQ(parse_money("9223372036.854775808"), std::nullopt);
  EXPECT_EQ(parse_money("-9223372036.854775809"), std::nullopt);
  EXPECT_EQ(parse_money("9223372037"), std::nullopt);
  EXPECT_EQ(parse_money("99999999999999999999"), std::nullopt);
  EXPECT_EQ(parse_money("18446744073.709551616"), std::nullopt);  // 2^64 nanos would wrap
}

TEST(Money, LeadingZerosDoNotCountTowardsOverflow) {
  EXPECT_EQ(parse_money("00000000000000000000012"), 12 * kNanosPerUnit);
}

TEST(Money, FormatsSixDecimals) {
  EXPECT_EQ(format_money(12'500'000'000), "12.500000");
  EXPECT_EQ(format_money(1'234'567'000), "1.234567");
  EXPECT_EQ(format_money(5 * kNanosPerUnit), "5.000000");
}

TEST(Money, FormatsZero) { EXPECT_EQ(format_money(0), "0.000000"); }

TEST(Money, FormatsNegative) {
  EXPECT_EQ(format_money(-3'250'000'000), "-3.250000");
  EXPECT_EQ(format_money(-1000), "-0.000001");
}

TEST(Money, RoundsHalfAwayFromZeroAtSeventhDecimal) {
  EXPECT_EQ(format_money(499), "0.000000");
  EXPECT_EQ(format_money(500), "0.000001");
  EXPECT_EQ(format_money(1'000'001'499), "1.000001");
  EXPECT_EQ(format_money(1'000'001'500), "1.000002");
  EXPECT_EQ(format_money(-500), "-0.000001");
  EXPECT_EQ(format_money(-1'000'001'500), "-1.000002");
}

TEST(Money, RoundingCarriesIntoUnits) {
  EXPECT_EQ(format_money(1'999'999'500), "2.000000");
  EXPECT_EQ(format_money(-1'999'999'500), "-2.000000");
}

TEST(Money, NegativeThatRoundsToZeroHasNoSign) {
  EXPECT_EQ(format_money(-499), "0.000000");
  EXPECT_EQ(format_money(-1), "0.000000");
}

TEST(Money, FormatsInt64Extremes) {
  EXPECT_EQ(format_money(kMax), "9223372036.854776");
  EXPECT_EQ(format_money(kMin), "-9223372036.854776");
}

TEST(Money, FormatThenParseRoundTripsWholeMicros) {
  for (const std::int64_t v : {std::int64_t{0}, std::int64_t{1000}, std::int64_t{-1000}, std::int64_t{12'345'678'000},
                               std::int64_t{-987'654'321'000}}) {
    EXPECT_EQ(parse_money(format_money(v)), v) << v;
  }
}

}  // namespace
}  // namespace alou
