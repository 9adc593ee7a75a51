#include "alou/gateway/usage_scan.hpp"

#include <gtest/gtest.h>

#include <string>

using alou::gateway::object_end;
using alou::gateway::usage_object_at;

namespace {
std::string usage_of(const std::string& text) {
  const auto at = usage_object_at(text);
  if (at == std::string::npos) return "<none>";
  const auto end = object_end(text, at);
  if (end == std::string::npos) return "<unterminated>";
  return text.substr(at, end - at);
}
}  // namespace

TEST(UsageScan, FindsTheUsageObject) {
  EXPECT_EQ(usage_of(R"({"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}})"),
            R"({"prompt_tokens":3,"completion_tokens":5})");
  EXPECT_EQ(usage_of("{\"usage\" :\n {\"a\":{\"b\":1}} }"), R"({"a":{"b":1}})");
}

TEST(UsageScan, NullOrAbsentUsageIsNone) {
  EXPECT_EQ(usage_of(R"({"choices":[{"delta":{"content":"hi"}}],"usage":null})"), "<none>");
  EXPECT_EQ(usage_of(R"({"choices":[]})"), "<none>");
  EXPECT_EQ(usage_of(R"({"usage")"), "<none>");
}

TEST(UsageScan, IgnoresUsageInsideStringsAndBracesInStrings) {
  // The reply text mentions "usage" and braces: escaped, so not a key.
  const std::string text =
      R"({"choices":[{"message":{"content":"see \"usage\": {\"x\"} }"}}],"usage":{"note":"a } b","n":1}})";
  EXPECT_EQ(usage_of(text), R"({"note":"a } b","n":1})");
}

TEST(UsageScan, UnterminatedObjectIsReported) {
  EXPECT_EQ(usage_of(R"({"usage":{"prompt_tokens":3)"), "<unterminated>");
}
