// format_seconds3: the x-ratelimit-reset-* form, as printf's "%.3fs" wrote it.
#include "alou/core/time.hpp"

#include <gtest/gtest.h>

#include <cstdio>

namespace alou {
namespace {

TEST(Time, SecondsWithThreeDecimalsAsPrintfWroteThem) {
  for (const double s : {0.0, 0.0005, 0.0015, 0.06, 0.25, 1.0, 59.9994, 59.9996, 3600.125, 86400.0}) {
    char want[64];
    std::snprintf(want, sizeof want, "%.3fs", s);
    EXPECT_EQ(format_seconds3(s), want) << s;
  }
  EXPECT_EQ(format_seconds3(0.06), "0.060s");
}

}  // namespace
}  // namespace alou
