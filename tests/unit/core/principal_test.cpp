#include "alou/core/principal.hpp"

#include <gtest/gtest.h>

namespace alou {
namespace {

TEST(Principal, AnEmptyToolListAllowsEveryTool) {
  Principal p;
  EXPECT_TRUE(p.may_use_tool("everything__echo"));
  EXPECT_TRUE(p.may_use_tool("spin"));
}

TEST(Principal, ToolNamesMatchExactly) {
  Principal p;
  p.tools = {"everything__echo", "spin"};
  EXPECT_TRUE(p.may_use_tool("everything__echo"));
  EXPECT_TRUE(p.may_use_tool("spin"));
  EXPECT_FALSE(p.may_use_tool("everything__echo2"));
  EXPECT_FALSE(p.may_use_tool("everything__ech"));
  EXPECT_FALSE(p.may_use_tool("spinner"));
  EXPECT_FALSE(p.may_use_tool(""));
}

TEST(Principal, ServerPatternsMatchEveryToolOfThatServerOnly) {
  Principal p;
  p.tools = {"fs__*"};
  EXPECT_TRUE(p.may_use_tool("fs__read_text_file"));
  EXPECT_TRUE(p.may_use_tool("fs__x"));
  EXPECT_FALSE(p.may_use_tool("fs__"));
  EXPECT_FALSE(p.may_use_tool("fs2__read"));
  EXPECT_FALSE(p.may_use_tool("f__read"));
  EXPECT_FALSE(p.may_use_tool("fs_read"));
  // A "*" anywhere else is a literal name, not a pattern.
  p.tools = {"fs*"};
  EXPECT_FALSE(p.may_use_tool("fs__read"));
  EXPECT_TRUE(p.may_use_tool("fs*"));
}

}  // namespace
}  // namespace alou
