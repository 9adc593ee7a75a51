// The Anthropic Messages <-> OpenAI chat translations of POST /v1/messages.
#include "gateway/anthropic.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using nlohmann::json;
namespace anthropic = alou::gateway::anthropic;

json translate(const json& body) {
  auto r = anthropic::to_openai_request(body);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  return r ? *r : json();
}

TEST(AnthropicRequest, SystemBlocksImagesToolsAndToolChoice) {
  const json in = {
      {"model", "m"},
      {"max_tokens", 10},
      {"system", json::array({{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}})},
      {"top_p", 0.9},
      {"stop_sequences", json::array({"X"})},
      {"tools", json::array({{{"name", "f"}, {"description", "d"}, {"input_schema", {{"type", "object"}}}}})},
      {"tool_choice", {{"type", "tool"}, {"name", "f"}}},
      {"messages",
       json::array({{{"role", "user"},
                     {"content", json::array({{{"type", "text"}, {"text", "look"}},
                                              {{"type", "image"},
                                               {"source", {{"type", "base64"}, {"media_type", "image/png"}, {"data", "AAA="}}}}})}},
                    {{"role", "assistant"},
                     {"content", json::array({{{"type", "tool_use"}, {"id", "t1"}, {"name", "f"}, {"input", {{"x", 1}}}}})}},
                    {{"role", "user"},
                     {"content", json::array({{{"type", "tool_result"},
                                              {"tool_use_id", "t1"},
                                              {"content", json::array({{{"type", "text"}, {"text", "ok"}}})}},
                                             {{"type", "text"}, {"text", "thanks"}}})}}})}};
  const json out = translate(in);
  EXPECT_EQ(out["max_tokens"], 10);
  EXPECT_EQ(out["top_p"], 0.9);
  EXPECT_EQ(out["stop"], json::array({"X"}));
  EXPECT_EQ(out["stream"], false);
  EXPECT_EQ(out["tools"], json::parse(R"([{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"}}}])"));
  EXPECT_EQ(out["tool_choice"], json::parse(R"({"type":"function","function":{"name":"f"}})"));
  const json& m = out["messages"];
  ASSERT_EQ(m.size(), 5u) << m;
  EXPECT_EQ(m[0], json::parse(R"({"role":"system","content":"a\nb"})"));
  EXPECT_EQ(m[1]["content"][1], json::parse(R"({"type":"image_url","image_url":{"url":"data:image/png;base64,AAA="}})"));
  EXPECT_TRUE(m[2]["content"].is_null()) << m[2];
  EXPECT_EQ(m[2]["tool_calls"][0], json::parse(R"({"id":"t1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}})"));
  EXPECT_EQ(m[3], json::parse(R"({"role":"tool","tool_call_id":"t1","content":"ok"})"));
  EXPECT_EQ(m[4], json::parse(R"({"role":"user","content":"thanks"})"));
}

TEST(AnthropicRequest, ToolChoiceKinds) {
  for (const auto& [type, expected] : {std::pair{"auto", json("auto")}, std::pair{"any", json("required")},
                                       std::pair{"none", json("none")}}) {
    const json in = {{"model", "m"},
                     {"max_tokens", 1},
                     {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
                     {"tool_choice", {{"type", type}}}};
    EXPECT_EQ(translate(in)["tool_choice"], expected) << type;
  }
}

TEST(AnthropicRequest, Rejections) {
  const json ok = {{"model", "m"}, {"max_tokens", 1}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
  EXPECT_TRUE(anthropic::to_openai_request(ok));
  for (const char* patch : {R"([{"op":"remove","path":"/max_tokens"}])", R"([{"op":"replace","path":"/max_tokens","value":0}])",
                            R"([{"op":"replace","path":"/messages","value":[]}])",
                            R"([{"op":"replace","path":"/messages/0/role","value":"system"}])",
                            R"([{"op":"replace","path":"/messages/0/content","value":[{"type":"document"}]}])",
                            R"([{"op":"add","path":"/stream","value":"yes"}])"}) {
    const auto r = anthropic::to_openai_request(ok.patch(json::parse(patch)));
    ASSERT_FALSE(r) << patch;
    EXPECT_EQ(r.error().status, 400) << patch;
  }
}

TEST(AnthropicResponse, TextAndToolUse) {
  const std::string completion = R"({"id":"abc","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"let me check","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}},{"id":"c2","type":"function","function":{"name":"g","arguments":"not json"}}]}}],"usage":{"prompt_tokens":3,"completion_tokens":7}})";
  const json m = json::parse(anthropic::to_anthropic_message(completion, "alias"));
  EXPECT_EQ(m["id"], "msg_abc");
  EXPECT_EQ(m["model"], "alias");
  EXPECT_EQ(m["stop_reason"], "tool_use");
  EXPECT_EQ(m["content"], json::parse(R"([{"type":"text","text":"let me check"},
    {"type":"tool_use","id":"c1","name":"f","input":{"x":1}},{"type":"tool_use","id":"c2","name":"g","input":{}}])"));
  EXPECT_EQ(m["usage"], json::parse(R"({"input_tokens":3,"output_tokens":7})"));
  EXPECT_STREQ(anthropic::stop_reason("length"), "max_tokens");
  EXPECT_STREQ(anthropic::stop_reason("stop"), "end_turn");
  EXPECT_STREQ(anthropic::stop_reason("content_filter"), "end_turn");
}

TEST(AnthropicStream, TextThenTwoToolCalls) {
  anthropic::StreamRelay relay("alias");
  anthropic::StreamRelay::Events ev;
  const char* chunks[] = {
      R"({"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})",
      R"({"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}]})",
      R"({"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":""}}]}}]})",
      R"({"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]})",
      R"({"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"c2","type":"function","function":{"name":"g","arguments":"{\"a\":2}"}}]}}]})",
      R"({"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})",
      R"({"id":"x","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":9}})"};
  for (const char* c : chunks) relay.on_chunk(json::parse(c), ev);
  relay.finish(ev);
  std::vector<std::string> names;
  for (const auto& [n, d] : ev) names.push_back(n + ":" + std::to_string(d.value("index", -1)));
  EXPECT_EQ(names, (std::vector<std::string>{"message_start:-1", "content_block_start:0", "content_block_delta:0",
                                             "content_block_stop:0", "content_block_start:1", "content_block_delta:1",
                                             "content_block_stop:1", "content_block_start:2", "content_block_delta:2",
                                             "content_block_stop:2", "message_delta:-1", "message_stop:-1"}));
  EXPECT_EQ(ev[0].second["message"]["id"], "msg_x");
  EXPECT_EQ(ev[7].second["content_block"]["name"], "g");
  EXPECT_EQ(ev[8].second["delta"]["partial_json"], "{\"a\":2}");
  EXPECT_EQ(ev[10].second["delta"]["stop_reason"], "tool_use");
  EXPECT_EQ(ev[10].second["usage"]["output_tokens"], 9);
  EXPECT_EQ(ev[10].second["usage"]["input_tokens"], 4);
}

}  // namespace
