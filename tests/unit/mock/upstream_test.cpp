// `alou mock-upstream` over real sockets: an http::Server on 127.0.0.1:0
// with only the mock routes, called by a small Beast client with a deadline.
#include "alou/mock/upstream.hpp"

#include "alou/core/config.hpp"
#include "alou/core/metrics.hpp"
#include "alou/http/server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace alou::mock {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using json = nlohmann::json;
using namespace std::chrono_literals;
constexpr auto kAwait = net::as_tuple(net::use_awaitable);

struct HttpResult {
  boost::system::error_code ec;  // of the read; end_of_stream: closed before any response
  int status = 0;
  std::string body;
  bool complete = false;         // the whole message arrived
  std::chrono::milliseconds elapsed{0};
};

struct SseEvent {
  std::string event;
  std::string data;
};

// Sends one request on a fresh connection and reads one response (or what
// arrived of it before the server dropped the connection).
HttpResult call(const net::ip::tcp::endpoint& ep, std::string target, std::string body,
            bhttp::verb method = bhttp::verb::post) {
  net::io_context ioc;
  HttpResult out;
  const auto t0 = std::chrono::steady_clock::now();
  auto run = [&]() -> net::awaitable<void> {
    beast::tcp_stream stream(co_await net::this_coro::executor);
    stream.expires_after(5s);
    auto [cec] = co_await stream.async_connect(ep, kAwait);
    if (cec) {
      out.ec = cec;
      co_return;
    }
    bhttp::request<bhttp::string_body> req{method, target, 11};
    req.set(bhttp::field::host, "127.0.0.1");
    req.set(bhttp::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    auto [wec, wn] = co_await bhttp::async_write(stream, req, kAwait);
    if (wec) {
      out.ec = wec;
      co_return;
    }
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    auto [rec, rn] = co_await bhttp::async_read(stream, buffer, parser, kAwait);
    out.ec = rec;
    out.complete = parser.is_done();
    if (parser.is_header_done()) out.status = parser.get().result_int();
    out.body = parser.get().body();
  };
  net::co_spawn(ioc, run(), net::detached);
  ioc.run();
  out.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  return out;
}

std::vector<SseEvent> parse_sse(const std::string& body) {
  std::vector<SseEvent> out;
  std::size_t pos = 0;
  while (pos < body.size()) {
    auto end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    const std::string block = body.substr(pos, end - pos);
    pos = end + 2;
    SseEvent ev;
    bool any = false;
    std::size_t lp = 0;
    while (lp < block.size()) {
      auto nl = block.find('\n', lp);
      if (nl == std::string::npos) nl = block.size();
      const std::string line = block.substr(lp, nl - lp);
      lp = nl + 1;
      if (line.starts_with("event: ")) {
        ev.event = line.substr(7);
        any = true;
      } else if (line.starts_with("data: ")) {
        ev.data += line.substr(6);
        any = true;
      }
    }
    if (any) out.push_back(std::move(ev));
  }
  return out;
}

json user_chat(std::string text, bool stream = false) {
  return {{"model", "mock"}, {"stream", stream}, {"messages", json::array({{{"role", "user"}, {"content", text}}})}};
}

json anthropic(std::string text, bool stream = false) {
  return {{"model", "claude-mock"},
          {"max_tokens", 100},
          {"stream", stream},
          {"messages", json::array({{{"role", "user"}, {"content", text}}})}};
}

json gemini(std::string text) {
  return {{"contents", json::array({{{"role", "user"}, {"parts", json::array({{{"text", text}}})}}})}};
}

class MockUpstream : public ::testing::Test {
 protected:
  void SetUp() override {
    http::Router router;
    add_upstream_routes(router);
    ServerSettings settings;
    settings.listen = "127.0.0.1:0";
    auto server = http::Server::create(ioc_, settings, std::move(router), {}, metrics_);
    ASSERT_TRUE(server) << server.error().message;
    server_ = std::move(*server);
    server_->start();
    ep_ = server_->endpoint();
    thread_ = std::thread([this] { ioc_.run(); });
  }

  void TearDown() override {
    if (server_) net::co_spawn(ioc_, server_->shutdown(1s), net::use_future).get();
    guard_.reset();
    ioc_.stop();
    if (thread_.joinable()) thread_.join();
  }

  HttpResult post(std::string target, const json& body) { return call(ep_, std::move(target), body.dump()); }

  net::io_context ioc_;
  net::executor_work_guard<net::io_context::executor_type> guard_{ioc_.get_executor()};
  metrics::Registry metrics_;
  std::unique_ptr<http::Server> server_;
  net::ip::tcp::endpoint ep_;
  std::thread thread_;
};

// ---------------------------------------------------------------- OpenAI

TEST_F(MockUpstream, OpenAiEcho) {
  const auto r = post("/v1/chat/completions", user_chat("hi there"));
  ASSERT_EQ(r.status, 200) << r.body;
  const auto j = json::parse(r.body);
  EXPECT_TRUE(j["id"].get<std::string>().starts_with("chatcmpl-mock-"));
  EXPECT_EQ(j["choices"][0]["message"]["content"], "echo: hi there");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 2);
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
}

TEST_F(MockUpstream, OpenAiStreamEndsWithDone) {
  auto body = user_chat("hi there", true);
  body["stream_options"] = {{"include_usage", true}};
  const auto r = post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(r.complete) << r.ec.message();
  const auto events = parse_sse(r.body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back().data, "[DONE]");
  std::string text;
  for (std::size_t i = 0; i + 2 < events.size(); ++i) {
    const auto c = json::parse(events[i].data);
    text += c["choices"][0]["delta"].value("content", "");
  }
  EXPECT_EQ(text, "echo: hi there");
  const auto usage = json::parse(events[events.size() - 2].data);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 6);
}

TEST_F(MockUpstream, OpenAiStreamWithoutUsageHasNoUsageChunk) {
  const auto r = post("/v1/chat/completions", user_chat("hi", true));
  const auto events = parse_sse(r.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back().data, "[DONE]");
  const auto last = json::parse(events[events.size() - 2].data);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(last.contains("usage"));
}

TEST_F(MockUpstream, OpenAiToolCallRoundTrip) {
  const auto first = post("/v1/chat/completions", user_chat("/tool add {\"a\":1,\"b\":2}"));
  ASSERT_EQ(first.status, 200) << first.body;
  const auto j = json::parse(first.body);
  const auto& msg = j["choices"][0]["message"];
  ASSERT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
  const auto call_id = msg["tool_calls"][0]["id"].get<std::string>();
  EXPECT_TRUE(call_id.starts_with("call_mock_"));

  json next = user_chat("/tool add {\"a\":1,\"b\":2}");
  next["messages"].push_back(msg);
  next["messages"].push_back({{"role", "tool"}, {"tool_call_id", call_id}, {"content", "3"}});
  const auto second = post("/v1/chat/completions", next);
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(json::parse(second.body)["choices"][0]["message"]["content"], "tool add returned: 3");
}

TEST_F(MockUpstream, OpenAiStreamedToolCall) {
  const auto r = post("/v1/chat/completions", user_chat("/tool add {\"a\":1,\"b\":2}", true));
  const auto events = parse_sse(r.body);
  std::string args;
  std::string finish;
  for (const auto& e : events) {
    if (e.data == "[DONE]") continue;
    const auto c = json::parse(e.data);
    const auto& choice = c["choices"][0];
    if (choice["delta"].contains("tool_calls")) {
      args += choice["delta"]["tool_calls"][0]["function"]["arguments"].get<std::string>();
    }
    if (choice["finish_reason"].is_string()) finish = choice["finish_reason"].get<std::string>();
  }
  EXPECT_EQ(args, "{\"a\":1,\"b\":2}");
  EXPECT_EQ(finish, "tool_calls");
}

TEST_F(MockUpstream, OpenAiFail429) {
  const auto r = post("/v1/chat/completions", user_chat("/fail 429"));
  EXPECT_EQ(r.status, 429);
  const auto j = json::parse(r.body);
  EXPECT_EQ(j["error"]["type"], "rate_limit_error");
  EXPECT_EQ(j["error"]["code"], "mock_failure");
  EXPECT_TRUE(j["error"].contains("param"));
  EXPECT_TRUE(j["error"]["message"].is_string());
}

TEST_F(MockUpstream, OpenAiFailAlsoWhenStreaming) {
  const auto r = post("/v1/chat/completions", user_chat("/fail 503", true));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(json::parse(r.body)["error"]["type"], "server_error");
}

TEST_F(MockUpstream, OpenAiInvalidJsonIs400) {
  const auto r = call(ep_, "/v1/chat/completions", "{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "invalid_json");
}

TEST_F(MockUpstream, OpenAiCutStreamIsIncomplete) {
  const auto r = post("/v1/chat/completions", user_chat("/cut 2 hi there you", true));
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.complete);
  EXPECT_TRUE(r.ec) << "the stream should end abnormally";
  const auto events = parse_sse(r.body);
  ASSERT_EQ(events.size(), 2u) << r.body;
  EXPECT_EQ(json::parse(events[1].data)["choices"][0]["delta"]["content"], "echo:");
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
}

TEST_F(MockUpstream, OpenAiCutBeyondTheStreamStillDropsTheEnd) {
  const auto r = post("/v1/chat/completions", user_chat("/cut 100 hi", true));
  EXPECT_FALSE(r.complete);
  const auto events = parse_sse(r.body);
  ASSERT_FALSE(events.empty());
  EXPECT_NE(events.back().data, "[DONE]");
  EXPECT_EQ(json::parse(events.back().data)["choices"][0]["finish_reason"], "stop");
}

TEST_F(MockUpstream, OpenAiCutWithoutStreamClosesWithoutResponse) {
  const auto r = post("/v1/chat/completions", user_chat("/cut 1 hi"));
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(r.ec);
  EXPECT_TRUE(r.body.empty());
}

TEST_F(MockUpstream, SlowWaitsBeforeAnswering) {
  const auto r = post("/v1/chat/completions", user_chat("/slow 150 hi"));
  ASSERT_EQ(r.status, 200);
  EXPECT_GE(r.elapsed, 150ms);
  EXPECT_EQ(json::parse(r.body)["choices"][0]["message"]["content"], "echo: hi");
}

TEST_F(MockUpstream, SlowWaitsBeforeEachChunk) {
  // role chunk, "echo:", " hi", finish chunk, [DONE]: 5 events, 40 ms each.
  const auto r = post("/v1/chat/completions", user_chat("/slow 40 hi", true));
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(parse_sse(r.body).size(), 5u);
  EXPECT_GE(r.elapsed, 200ms);
}

TEST_F(MockUpstream, Embeddings) {
  const json body = {{"model", "mock-embedding"}, {"input", json::array({"a", "b"})}};
  const auto r = post("/v1/embeddings", body);
  ASSERT_EQ(r.status, 200) << r.body;
  const auto j = json::parse(r.body);
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0]["embedding"].size(), 8u);
  EXPECT_NE(j["data"][0]["embedding"], j["data"][1]["embedding"]);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 1);
  EXPECT_EQ(post("/v1/embeddings", body).body, r.body);  // deterministic
}

TEST_F(MockUpstream, Models) {
  const auto r = call(ep_, "/v1/models", "", bhttp::verb::get);
  ASSERT_EQ(r.status, 200);
  const auto j = json::parse(r.body);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], "mock");
}

// ---------------------------------------------------------------- Anthropic

TEST_F(MockUpstream, AnthropicMessage) {
  json body = anthropic("hello");
  body["system"] = "be terse";
  const auto r = post("/v1/messages", body);
  ASSERT_EQ(r.status, 200) << r.body;
  const auto j = json::parse(r.body);
  EXPECT_EQ(j["type"], "message");
  EXPECT_TRUE(j["id"].get<std::string>().starts_with("msg_mock_"));
  EXPECT_EQ(j["content"][0]["text"], "echo: hello");
  EXPECT_EQ(j["stop_reason"], "end_turn");
  EXPECT_EQ(j["usage"]["input_tokens"], 4);  // "hello" + "be terse" = 13 -> 4
  EXPECT_EQ(j["usage"]["output_tokens"], 3);  // "echo: hello" = 11 -> 3
}

TEST_F(MockUpstream, AnthropicStreamEventSequence) {
  const auto r = post("/v1/messages", anthropic("hi there", true));
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(r.complete);
  const auto events = parse_sse(r.body);
  std::vector<std::string> names;
  std::string text;
  for (const auto& e : events) {
    names.push_back(e.event);
    const auto d = json::parse(e.data);
    if (e.event == "content_block_delta") text += d["delta"]["text"].get<std::string>();
    if (e.event == "message_delta") {
      EXPECT_EQ(d["delta"]["stop_reason"], "end_turn");
      EXPECT_EQ(d["usage"]["output_tokens"], 4);
    }
  }
  EXPECT_EQ(names, (std::vector<std::string>{"message_start", "content_block_start", "content_block_delta",
                                             "content_block_delta", "content_block_delta", "content_block_stop",
                                             "message_delta", "message_stop"}));
  EXPECT_EQ(text, "echo: hi there");
}

TEST_F(MockUpstream, AnthropicToolUseRoundTrip) {
  const auto first = post("/v1/messages", anthropic("/tool search {\"q\":\"cats\"}"));
  ASSERT_EQ(first.status, 200) << first.body;
  const auto j = json::parse(first.body);
  EXPECT_EQ(j["stop_reason"], "tool_use");
  const auto& block = j["content"][0];
  EXPECT_EQ(block["type"], "tool_use");
  EXPECT_EQ(block["input"]["q"], "cats");

  json next = anthropic("/tool search {\"q\":\"cats\"}");
  next["messages"].push_back({{"role", "assistant"}, {"content", j["content"]}});
  next["messages"].push_back(
      {{"role", "user"},
       {"content", json::array({{{"type", "tool_result"}, {"tool_use_id", block["id"]}, {"content", "3 cats"}}})}});
  const auto second = post("/v1/messages", next);
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(json::parse(second.body)["content"][0]["text"], "tool search returned: 3 cats");
}

TEST_F(MockUpstream, AnthropicFail429) {
  const auto r = post("/v1/messages", anthropic("/fail 429"));
  EXPECT_EQ(r.status, 429);
  const auto j = json::parse(r.body);
  EXPECT_EQ(j["type"], "error");
  EXPECT_EQ(j["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(j["error"]["message"].is_string());
}

TEST_F(MockUpstream, AnthropicInvalidJsonIs400) {
  const auto r = call(ep_, "/v1/messages", "nope");
  EXPECT_EQ(r.status, 400);
  const auto j = json::parse(r.body);
  EXPECT_EQ(j["type"], "error");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
}

TEST_F(MockUpstream, AnthropicCutStreamIsIncomplete) {
  const auto r = post("/v1/messages", anthropic("/cut 2 hi there", true));
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.complete);
  const auto events = parse_sse(r.body);
  ASSERT_EQ(events.size(), 2u) << r.body;
  EXPECT_EQ(events[0].event, "message_start");
  EXPECT_EQ(events[1].event, "content_block_start");
}

// ---------------------------------------------------------------- Gemini

TEST_F(MockUpstream, GeminiGenerateContent) {
  const auto r = post("/v1beta/models/gemini-2.0-flash:generateContent", gemini("hi there"));
  ASSERT_EQ(r.status, 200) << r.body;
  const auto j = json::parse(r.body);
  EXPECT_EQ(j["candidates"][0]["content"]["parts"][0]["text"], "echo: hi there");
  EXPECT_EQ(j["candidates"][0]["finishReason"], "STOP");
  EXPECT_EQ(j["usageMetadata"]["promptTokenCount"], 2);
  EXPECT_EQ(j["usageMetadata"]["candidatesTokenCount"], 4);
  EXPECT_EQ(j["usageMetadata"]["totalTokenCount"], 6);
  EXPECT_EQ(j["modelVersion"], "gemini-2.0-flash");
}

TEST_F(MockUpstream, GeminiStreamGenerateContentSse) {
  const auto r = post("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", gemini("hi there"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.complete);
  const auto events = parse_sse(r.body);
  ASSERT_EQ(events.size(), 3u);
  std::string text;
  for (const auto& e : events) {
    text += json::parse(e.data)["candidates"][0]["content"]["parts"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, "echo: hi there");
  EXPECT_EQ(json::parse(events.back().data)["usageMetadata"]["totalTokenCount"], 6);
}

TEST_F(MockUpstream, GeminiStreamWithoutSseIsAJsonArray) {
  const auto r = post("/v1beta/models/g:streamGenerateContent", gemini("hi there"));
  ASSERT_EQ(r.status, 200) << r.body;
  const auto j = json::parse(r.body);
  ASSERT_TRUE(j.is_array());
  EXPECT_EQ(j.size(), 3u);
}

TEST_F(MockUpstream, GeminiFunctionCallRoundTrip) {
  const auto first = post("/v1beta/models/g:generateContent", gemini("/tool now {\"tz\":\"UTC\"}"));
  ASSERT_EQ(first.status, 200) << first.body;
  const auto call = json::parse(first.body)["candidates"][0]["content"]["parts"][0]["functionCall"];
  EXPECT_EQ(call["name"], "now");
  EXPECT_EQ(call["args"]["tz"], "UTC");

  json next = gemini("/tool now {\"tz\":\"UTC\"}");
  next["contents"].push_back({{"role", "model"}, {"parts", json::array({{{"functionCall", call}}})}});
  next["contents"].push_back(
      {{"role", "user"},
       {"parts", json::array({{{"functionResponse", {{"name", "now"}, {"response", {{"time", "12:00"}}}}}}})}});
  const auto second = post("/v1beta/models/g:generateContent", next);
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(json::parse(second.body)["candidates"][0]["content"]["parts"][0]["text"], "tool now returned: 12:00");
}

TEST_F(MockUpstream, GeminiFail429) {
  const auto r = post("/v1beta/models/g:generateContent", gemini("/fail 429"));
  EXPECT_EQ(r.status, 429);
  const auto j = json::parse(r.body);
  EXPECT_EQ(j["error"]["code"], 429);
  EXPECT_EQ(j["error"]["status"], "RESOURCE_EXHAUSTED");
}

TEST_F(MockUpstream, GeminiInvalidJsonAndUnknownAction) {
  const auto bad = call(ep_, "/v1beta/models/g:generateContent", "{");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(json::parse(bad.body)["error"]["status"], "INVALID_ARGUMENT");
  const auto unknown = post("/v1beta/models/g:countTokens", gemini("x"));
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(json::parse(unknown.body)["error"]["status"], "NOT_FOUND");
}

TEST_F(MockUpstream, GeminiCutStreamIsIncomplete) {
  const auto r = post("/v1beta/models/g:streamGenerateContent?alt=sse", gemini("/cut 1 a b c"));
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.complete);
  const auto events = parse_sse(r.body);
  ASSERT_EQ(events.size(), 1u) << r.body;
  EXPECT_FALSE(json::parse(events[0].data)["candidates"][0].contains("finishReason"));
}

}  // namespace
}  // namespace alou::mock
