#include "alou/mcp/jsonrpc.hpp"

#include <gtest/gtest.h>

namespace alou::mcp {
namespace {

TEST(JsonRpc, ClassifiesRequestsNotificationsAndResponses) {
  auto req = parse_message(json::parse(R"({"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"3"}})"));
  ASSERT_TRUE(req);
  EXPECT_EQ(req->kind, Message::Kind::kRequest);
  EXPECT_EQ(req->id, 7);
  EXPECT_EQ(req->params["cursor"], "3");
  auto note = parse_message(json::parse(R"({"jsonrpc":"2.0","method":"notifications/initialized"})"));
  ASSERT_TRUE(note);
  EXPECT_EQ(note->kind, Message::Kind::kNotification);
  auto res = parse_message(json::parse(R"({"jsonrpc":"2.0","id":"a","result":{}})"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->kind, Message::Kind::kResponse);
  EXPECT_FALSE(res->error);
  auto err = parse_message(json::parse(R"({"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}})"));
  ASSERT_TRUE(err);
  ASSERT_TRUE(err->error);
  EXPECT_EQ(err->error->code, -32602);
  EXPECT_EQ(err->error->message, "bad");
}

TEST(JsonRpc, RefusesWhatIsNotJsonRpc) {
  for (const char* bad : {R"([])", R"({"id":1,"method":"x"})", R"({"jsonrpc":"1.0","id":1,"method":"x"})",
                          R"({"jsonrpc":"2.0","id":1.5,"method":"x"})", R"({"jsonrpc":"2.0","id":1,"method":3})",
                          R"({"jsonrpc":"2.0","id":1})", R"({"jsonrpc":"2.0"})",
                          R"({"jsonrpc":"2.0","id":1,"method":"x","params":"s"})"}) {
    auto m = parse_message(json::parse(bad));
    ASSERT_FALSE(m) << bad;
    EXPECT_EQ(m.error().code, "invalid_jsonrpc") << bad;
  }
}

TEST(JsonRpc, BuildsMessages) {
  EXPECT_EQ(make_request(1, "ping").dump(), R"({"id":1,"jsonrpc":"2.0","method":"ping"})");
  EXPECT_EQ(make_error(nullptr, kParseError, "Parse error").dump(),
            R"({"error":{"code":-32700,"message":"Parse error"},"id":null,"jsonrpc":"2.0"})");
  EXPECT_EQ(text_result("x", true)["isError"], true);
}

TEST(JsonRpc, ToolNamesFollowTheClientRule) {
  EXPECT_TRUE(is_valid_tool_name("everything__get-sum"));
  EXPECT_TRUE(is_valid_tool_name(std::string(64, 'a')));
  EXPECT_FALSE(is_valid_tool_name(std::string(65, 'a')));
  EXPECT_FALSE(is_valid_tool_name(""));
  EXPECT_FALSE(is_valid_tool_name("a.b"));
  EXPECT_FALSE(is_valid_tool_name("a b"));
  EXPECT_EQ(exposed_name("fs", "read_file"), "fs__read_file");
}

TEST(JsonRpc, SupportedVersions) {
  EXPECT_TRUE(is_supported_version("2025-11-25"));
  EXPECT_TRUE(is_supported_version("2025-06-18"));
  EXPECT_TRUE(is_supported_version("2025-03-26"));
  EXPECT_FALSE(is_supported_version("2024-11-05"));
}

}  // namespace
}  // namespace alou::mcp
