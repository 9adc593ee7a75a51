#include "mcp/schema.hpp"

#include <gtest/gtest.h>

namespace alou::mcp {
namespace {

using json = nlohmann::json;

TEST(InputSchema, ValidatesAndListsEveryProblemAsAPointer) {
  auto s = InputSchema::compile(json::parse(R"({
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"a": {"type": "number"}, "items": {"type": "array", "items": {"type": "string"}}},
    "required": ["a", "b"]})"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_TRUE((*s)->validate(json{{"a", 1}, {"b", true}}).empty());
  const auto problems = (*s)->validate(json{{"a", "x"}, {"items", {"ok", 2}}});
  ASSERT_EQ(problems.size(), 3u);
  std::string all;
  for (const auto& p : problems) all += p + "\n";
  EXPECT_NE(all.find("/a: "), std::string::npos) << all;
  EXPECT_NE(all.find("/items/1: "), std::string::npos) << all;
  EXPECT_NE(all.find("'b'"), std::string::npos) << all;
}

TEST(InputSchema, RefusesUnusableSchemas) {
  auto not_object = InputSchema::compile(json::array());
  ASSERT_FALSE(not_object);
  EXPECT_EQ(not_object.error().code, "invalid_schema");
  auto remote = InputSchema::compile(json{{"$ref", "https://example.com/schema.json"}});
  ASSERT_FALSE(remote);
  EXPECT_EQ(remote.error().code, "invalid_schema");
}

}  // namespace
}  // namespace alou::mcp
