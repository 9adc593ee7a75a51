// The wire translations of the mock upstream, without sockets.
#include "alou/mock/wire.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <string>
#include <vector>

namespace alou::mock::wire {
namespace {

using json = nlohmann::json;

const Ids kIds{.id = "chatcmpl-mock-7", .call_id = "call_mock_7", .created = 1700000000};

std::vector<json> data_of(const std::vector<Event>& events) {
  std::vector<json> out;
  for (const auto& e : events) {
    if (e.data != "[DONE]") out.push_back(json::parse(e.data));
  }
  return out;
}

TEST(MockWire, OpenAiParsesMessagesAndToolCalls) {
  const auto req = parse_openai_chat(R"({
    "model": "gpt-x", "stream": true, "stream_options": {"include_usage": true},
    "messages": [
      {"role": "developer", "content": "rules"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}},
                                   {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null,
       "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{\"x\":1}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "3"}
    ]})");
  ASSERT_TRUE(req) << req.error().message;
  EXPECT_EQ(req->model, "gpt-x");
  EXPECT_TRUE(req->stream);
  EXPECT_TRUE(req->include_usage);
  ASSERT_EQ(req->messages.size(), 4u);
  EXPECT_EQ(req->messages[0].role, "system");
  EXPECT_EQ(req->messages[1].content, "a\nb");
  ASSERT_EQ(req->messages[2].tool_calls.size(), 1u);
  EXPECT_EQ(req->messages[2].tool_calls[0].name, "add");
  EXPECT_EQ(req->messages[2].tool_calls[0].arguments, "{\"x\":1}");
  EXPECT_EQ(req->messages[3].tool_call_id, "call_1");
  EXPECT_EQ(respond(req->messages).text, "tool add returned: 3");
}

TEST(MockWire, OpenAiRejectsBadBodies) {
  const auto not_json = parse_openai_chat("{nope");
  ASSERT_FALSE(not_json);
  EXPECT_EQ(not_json.error().status, 400);
  EXPECT_EQ(not_json.error().code, "invalid_json");
  const auto no_messages = parse_openai_chat(R"({"model":"m"})");
  ASSERT_FALSE(no_messages);
  EXPECT_EQ(no_messages.error().code, "invalid_request");
  EXPECT_FALSE(parse_openai_chat(R"({"messages":[{"content":"x"}]})"));
  EXPECT_FALSE(parse_openai_chat(R"({"messages":[{"role":"user","content":5}]})"));
  EXPECT_FALSE(parse_openai_chat("[]"));
}

TEST(MockWire, OpenAiCompletionShape) {
  const auto req = parse_openai_chat(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})");
  ASSERT_TRUE(req);
  const auto body = json::parse(openai_completion(*req, respond(req->messages), kIds));
  EXPECT_EQ(body["id"], "chatcmpl-mock-7");
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["model"], "m");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "echo: hi");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["usage"]["prompt_tokens"], 1);
  EXPECT_EQ(body["usage"]["completion_tokens"], 2);
  EXPECT_EQ(body["usage"]["total_tokens"], 3);
}

TEST(MockWire, OpenAiToolCallShape) {
  const auto req = parse_openai_chat(R"({"messages":[{"role":"user","content":"/tool add {\"a\":1,\"b\":2}"}]})");
  ASSERT_TRUE(req);
  const Reply reply = respond(req->messages);
  const auto body = json::parse(openai_completion(*req, reply, kIds));
  const auto& msg = body["choices"][0]["message"];
  EXPECT_TRUE(msg["content"].is_null());
  EXPECT_EQ(msg["tool_calls"][0]["id"], "call_mock_7");
  EXPECT_EQ(msg["tool_calls"][0]["type"], "function");
  EXPECT_EQ(msg["tool_calls"][0]["function"]["name"], "add");
  EXPECT_EQ(msg["tool_calls"][0]["function"]["arguments"], "{\"a\":1,\"b\":2}");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "tool_calls");

  // Streamed: the first delta names the call, the next ones carry the arguments.
  const auto chunks = data_of(openai_stream(*req, reply, kIds));
  ASSERT_GE(chunks.size(), 3u);
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["tool_calls"][0]["id"], "call_mock_7");
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "add");
  std::string args;
  for (std::size_t i = 1; i + 1 < chunks.size(); ++i) {
    const auto& tc = chunks[i]["choices"][0]["delta"]["tool_calls"][0];
    EXPECT_EQ(tc["index"], 0);
    args += tc["function"]["arguments"].get<std::string>();
  }
  EXPECT_EQ(args, "{\"a\":1,\"b\":2}");
  EXPECT_EQ(chunks.back()["choices"][0]["finish_reason"], "tool_calls");
}

TEST(MockWire, OpenAiStreamWithUsage) {
  auto req = parse_openai_chat(
      R"({"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi there"}]})");
  ASSERT_TRUE(req);
  const auto events = openai_stream(*req, respond(req->messages), kIds);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().data, "[DONE]");
  const auto chunks = data_of(events);
  std::string text;
  for (const auto& c : chunks) {
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    ASSERT_TRUE(c.contains("usage"));
    if (!c["choices"].empty()) {
      EXPECT_TRUE(c["usage"].is_null());
      text += c["choices"][0]["delta"].value("content", "");
    }
  }
  EXPECT_EQ(text, "echo: hi there");
  EXPECT_TRUE(chunks.back()["choices"].empty());
  EXPECT_EQ(chunks.back()["usage"]["prompt_tokens"], 2);
  EXPECT_EQ(chunks.back()["usage"]["completion_tokens"], 4);
  EXPECT_EQ(chunks[chunks.size() - 2]["choices"][0]["finish_reason"], "stop");

  req->include_usage = false;
  for (const auto& c : data_of(openai_stream(*req, respond(req->messages), kIds))) EXPECT_FALSE(c.contains("usage"));
}

TEST(MockWire, AnthropicParsesBlocks) {
  const auto req = parse_anthropic(R"({
    "model": "claude-x", "system": [{"type": "text", "text": "be nice"}],
    "messages": [
      {"role": "user", "content": "/tool search {\"q\":\"x\"}"},
      {"role": "assistant", "content": [{"type": "text", "text": "looking"},
                                        {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "x"}}]},
      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                    "content": [{"type": "text", "text": "found it"}]}]}
    ]})");
  ASSERT_TRUE(req) << req.error().message;
  ASSERT_EQ(req->messages.size(), 4u);
  EXPECT_EQ(req->messages[0].role, "system");
  EXPECT_EQ(req->messages[0].content, "be nice");
  EXPECT_EQ(req->messages[2].tool_calls.at(0).arguments, "{\"q\":\"x\"}");
  EXPECT_EQ(req->messages[3].role, "tool");
  EXPECT_EQ(respond(req->messages).text, "tool search returned: found it");
}

TEST(MockWire, AnthropicMessageAndStream) {
  const auto req = parse_anthropic(R"({"messages":[{"role":"user","content":"/tool f {\"k\":1}"}]})");
  ASSERT_TRUE(req);
  const Reply reply = respond(req->messages);
  const Ids ids{.id = "msg_mock_1", .call_id = "toolu_mock_1", .created = 0};
  const auto body = json::parse(anthropic_message(*req, reply, ids));
  EXPECT_EQ(body["type"], "message");
  EXPECT_EQ(body["stop_reason"], "tool_use");
  EXPECT_EQ(body["content"][0]["type"], "tool_use");
  EXPECT_EQ(body["content"][0]["id"], "toolu_mock_1");
  EXPECT_EQ(body["content"][0]["input"], json({{"k", 1}}));
  EXPECT_EQ(body["usage"]["output_tokens"], reply.completion_tokens);

  const auto events = anthropic_stream(*req, reply, ids);
  std::vector<std::string> names;
  std::string partial;
  for (const auto& e : events) {
    names.push_back(e.name);
    const auto d = json::parse(e.data);
    EXPECT_EQ(d["type"], e.name);
    if (e.name == "content_block_delta") {
      EXPECT_EQ(d["delta"]["type"], "input_json_delta");
      partial += d["delta"]["partial_json"].get<std::string>();
    }
  }
  EXPECT_EQ(partial, "{\"k\":1}");
  EXPECT_EQ(names.front(), "message_start");
  EXPECT_EQ(names[1], "content_block_start");
  EXPECT_EQ(names[names.size() - 3], "content_block_stop");
  EXPECT_EQ(names[names.size() - 2], "message_delta");
  EXPECT_EQ(names.back(), "message_stop");
}

TEST(MockWire, GeminiParsesPartsAndFunctionResponses) {
  const auto req = parse_gemini(R"({
    "systemInstruction": {"parts": [{"text": "sys"}]},
    "contents": [
      {"role": "user", "parts": [{"text": "/tool time {}"}]},
      {"role": "model", "parts": [{"functionCall": {"name": "time", "args": {}}}]},
      {"role": "user", "parts": [{"functionResponse": {"name": "time", "response": {"result": "noon"}}}]}
    ]})",
                                "gemini-x");
  ASSERT_TRUE(req) << req.error().message;
  EXPECT_EQ(req->model, "gemini-x");
  ASSERT_EQ(req->messages.size(), 4u);
  EXPECT_EQ(req->messages[2].role, "assistant");
  EXPECT_EQ(req->messages[3].role, "tool");
  EXPECT_EQ(respond(req->messages).text, "tool time returned: noon");
  EXPECT_FALSE(parse_gemini(R"({"contents":"x"})", "m"));
}

TEST(MockWire, GeminiResponseAndStream) {
  const auto req = parse_gemini(R"({"contents":[{"parts":[{"text":"hi there"}]}]})", "gemini-x");
  ASSERT_TRUE(req);
  const Reply reply = respond(req->messages);
  const Ids ids{.id = "mock-3", .call_id = {}, .created = 0};
  const auto body = json::parse(gemini_response(*req, reply, ids));
  EXPECT_EQ(body["candidates"][0]["content"]["role"], "model");
  EXPECT_EQ(body["candidates"][0]["content"]["parts"][0]["text"], "echo: hi there");
  EXPECT_EQ(body["candidates"][0]["finishReason"], "STOP");
  EXPECT_EQ(body["usageMetadata"]["promptTokenCount"], 2);
  EXPECT_EQ(body["usageMetadata"]["candidatesTokenCount"], 4);
  EXPECT_EQ(body["usageMetadata"]["totalTokenCount"], 6);

  const auto chunks = data_of(gemini_stream(*req, reply, ids));
  ASSERT_EQ(chunks.size(), 3u);
  std::string text;
  for (const auto& c : chunks) text += c["candidates"][0]["content"]["parts"][0]["text"].get<std::string>();
  EXPECT_EQ(text, "echo: hi there");
  EXPECT_FALSE(chunks[0]["candidates"][0].contains("finishReason"));
  EXPECT_EQ(chunks.back()["candidates"][0]["finishReason"], "STOP");
  EXPECT_EQ(chunks.back()["usageMetadata"]["totalTokenCount"], 6);
}

TEST(MockWire, GeminiFunctionCall) {
  const auto req = parse_gemini(R"({"contents":[{"parts":[{"text":"/tool add {\"a\":2}"}]}]})", "g");
  ASSERT_TRUE(req);
  const auto body = json::parse(gemini_response(*req, respond(req->messages), Ids{}));
  const auto& call = body["candidates"][0]["content"]["parts"][0]["functionCall"];
  EXPECT_EQ(call["name"], "add");
  EXPECT_EQ(call["args"], json({{"a", 2}}));
}

TEST(MockWire, GeminiErrorShape) {
  const auto e = json::parse(gemini_error(429, "slow down"));
  EXPECT_EQ(e["error"]["code"], 429);
  EXPECT_EQ(e["error"]["message"], "slow down");
  EXPECT_EQ(e["error"]["status"], "RESOURCE_EXHAUSTED");
}

TEST(MockWire, EmbeddingsAreDeterministicUnitVectors) {
  const auto a = embedding("hello", 8);
  ASSERT_EQ(a.size(), 8u);
  EXPECT_EQ(a, embedding("hello", 8));
  EXPECT_NE(a, embedding("hello!", 8));
  double norm = 0;
  for (const double x : a) norm += x * x;
  EXPECT_NEAR(norm, 1.0, 1e-5);
}

TEST(MockWire, EmbeddingsResponse) {
  const auto body = openai_embeddings(R"({"model":"e","input":["abcd","efgh ij"]})");
  ASSERT_TRUE(body);
  const auto j = json::parse(*body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][1]["index"], 1);
  EXPECT_EQ(j["data"][0]["embedding"].size(), 8u);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);  // 11 chars -> 3
  EXPECT_EQ(j["model"], "e");

  const auto b64 = openai_embeddings(R"({"input":"x","encoding_format":"base64","dimensions":3})");
  ASSERT_TRUE(b64);
  EXPECT_EQ(json::parse(*b64)["data"][0]["embedding"].get<std::string>().size(), 16u);  // 12 bytes
  EXPECT_FALSE(openai_embeddings(R"({"input":[]})"));
  EXPECT_FALSE(openai_embeddings(R"({"input":"x","dimensions":0})"));
}

TEST(MockWire, OutputLimitsAreReadInEachFormatAndTruncationIsReported) {
  auto o = parse_openai_chat(R"({"max_tokens": 3, "messages": [{"role": "user", "content": "a b c d e f g"}]})");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->max_tokens, 3);
  o = parse_openai_chat(R"({"max_completion_tokens": 4, "max_tokens": 9, "messages": []})");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->max_tokens, 4);
  const auto a = parse_anthropic(R"({"max_tokens": 5, "messages": []})");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->max_tokens, 5);
  const auto g = parse_gemini(R"({"generationConfig": {"maxOutputTokens": 6}, "contents": []})", "m");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->max_tokens, 6);

  auto req = parse_openai_chat(R"({"max_tokens": 2, "messages": [{"role": "user", "content": "a long message here"}]})");
  ASSERT_TRUE(req);
  const Reply r = respond(req->messages, req->max_tokens);
  EXPECT_EQ(json::parse(openai_completion(*req, r, kIds))["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(data_of(openai_stream(*req, r, kIds)).back()["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(json::parse(anthropic_message(*req, r, kIds))["stop_reason"], "max_tokens");
  EXPECT_EQ(json::parse(gemini_response(*req, r, kIds))["candidates"][0]["finishReason"], "MAX_TOKENS");
  const Reply full = respond(req->messages);
  EXPECT_EQ(json::parse(openai_completion(*req, full, kIds))["choices"][0]["finish_reason"], "stop");
}

}  // namespace
}  // namespace alou::mock::wire
