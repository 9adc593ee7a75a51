// Provider kinds anthropic and gemini: each translation direction against
// its golden JSON fixture (tests/unit/gateway/fixtures), and the error paths.
#include "gateway/anthropic_upstream.hpp"
#include "gateway/gemini.hpp"
#include "gateway/providers.hpp"
#include "gateway/upstream_util.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

namespace {

using nlohmann::json;
namespace anthropic = alou::gateway::anthropic;
namespace gemini = alou::gateway::gemini;
using alou::gateway::SseMessage;
using alou::gateway::UpstreamFailure;

constexpr std::int64_t kCreated = 1700000000;

json fixture(const std::string& name) {
  std::ifstream in(std::string(ALOU_FIXTURES_DIR) + "/" + name);
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  std::stringstream ss;
  ss << in.rdbuf();
  const json j = json::parse(ss.str(), nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << name << " is not valid JSON";
  return j;
}

SseMessage event(const std::string& name, const json& data) { return SseMessage{name, data.dump(), {}}; }

// Feeds every event, then the end of the body; the chunks parsed.
json run_stream(alou::gateway::EventTranslator& t, const json& events, std::optional<UpstreamFailure>* failure = nullptr) {
  std::vector<std::string> out;
  for (const auto& e : events) {
    auto f = t.on_event(event(e.value("event", ""), e["data"]), out);
    if (f) {
      if (failure) *failure = f;
      break;
    }
  }
  if (!failure || !*failure) {
    auto f = t.on_end(out);
    if (failure) *failure = f;
  }
  json chunks = json::array();
  for (const auto& c : out) chunks.push_back(json::parse(c));
  return chunks;
}

// ---------------------------------------------------------------- anthropic

TEST(AnthropicUpstream, RequestMatchesFixture) {
  const json f = fixture("anthropic_request.json");
  auto out = anthropic::to_messages_request(f["openai"], {});
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(*out, f["anthropic"]) << out->dump(2);
}

TEST(AnthropicUpstream, MaxTokensDefaultsToTheProviderSetting) {
  const json in = {{"model", "m"}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
  auto out = anthropic::to_messages_request(in, {.default_max_tokens = 77});
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ((*out)["max_tokens"], 77);
  EXPECT_FALSE(out->contains("system"));
  EXPECT_FALSE(out->contains("stream"));
  EXPECT_EQ((*out)["messages"], json::array({{{"role", "user"}, {"content", "hi"}}}));
}

TEST(AnthropicUpstream, HttpImageBecomesUrlSource) {
  const json in = {{"model", "m"},
                   {"messages", json::array({{{"role", "user"},
                                              {"content", json::array({{{"type", "image_url"},
                                                                        {"image_url", {{"url", "https://x.test/a.png"}}}}})}}})}};
  auto out = anthropic::to_messages_request(in, {});
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ((*out)["messages"][0]["content"][0],
            json({{"type", "image"}, {"source", {{"type", "url"}, {"url", "https://x.test/a.png"}}}}));
}

void expect_invalid(const json& in, const std::string& needle) {
  auto out = anthropic::to_messages_request(in, {});
  ASSERT_FALSE(out.has_value()) << out->dump();
  EXPECT_EQ(out.error().status, 400);
  EXPECT_EQ(out.error().code, "invalid_request");
  EXPECT_NE(out.error().message.find(needle), std::string::npos) << out.error().message;
}

TEST(AnthropicUpstream, RejectsWhatAnthropicCannotExpress) {
  const json user = {{"role", "user"}, {"content", "hi"}};
  expect_invalid({{"model", "m"}, {"n", 2}, {"messages", json::array({user})}}, "n other than 1");
  expect_invalid({{"model", "m"}, {"messages", json::array({{{"role", "function"}, {"content", "x"}}})}}, "role");
  expect_invalid({{"model", "m"},
                  {"messages", json::array({user,
                                            {{"role", "assistant"},
                                             {"tool_calls", json::array({{{"id", "c"},
                                                                          {"type", "function"},
                                                                          {"function", {{"name", "f"}, {"arguments", "[1"}}}}})}}})}},
                 "not a JSON object");
  expect_invalid({{"model", "m"}, {"messages", json::array({{{"role", "system"}, {"content", "only"}}})}},
                 "at least one");
  expect_invalid({{"model", "m"},
                  {"messages", json::array({{{"role", "user"},
                                             {"content", json::array({{{"type", "input_audio"}}})}}})}},
                 "input_audio");
  expect_invalid({{"model", "m"}, {"max_tokens", 0}, {"messages", json::array({user})}}, "max_tokens");
  expect_invalid({{"model", "m"}, {"tools", json::array({{{"type", "function"}, {"function", {{"name", "f"}}}}})},
                  {"tool_choice", "sometimes"}, {"messages", json::array({user})}},
                 "tool_choice");
}

TEST(AnthropicUpstream, ResponsesMatchFixture) {
  const json f = fixture("anthropic_response.json");
  for (const auto& c : f["cases"]) {
    auto out = anthropic::to_chat_completion(c["anthropic"], kCreated);
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(json::parse(*out), c["openai"]) << *out;
  }
}

TEST(AnthropicUpstream, NotAMessageIsRejected) {
  EXPECT_FALSE(anthropic::to_chat_completion(json::parse(R"({"type":"error"})"), kCreated).has_value());
  EXPECT_FALSE(anthropic::to_chat_completion(json::array(), kCreated).has_value());
}

TEST(AnthropicUpstream, StopReasons) {
  EXPECT_STREQ(anthropic::finish_reason("end_turn"), "stop");
  EXPECT_STREQ(anthropic::finish_reason("stop_sequence"), "stop");
  EXPECT_STREQ(anthropic::finish_reason("max_tokens"), "length");
  EXPECT_STREQ(anthropic::finish_reason("tool_use"), "tool_calls");
  EXPECT_STREQ(anthropic::finish_reason("refusal"), "content_filter");
}

TEST(AnthropicUpstream, StreamMatchesFixture) {
  const json f = fixture("anthropic_stream.json");
  anthropic::ChunkTranslator t("claude", kCreated);
  std::optional<UpstreamFailure> failure;
  const json chunks = run_stream(t, f["events"], &failure);
  EXPECT_FALSE(failure.has_value()) << failure->error.message;
  EXPECT_EQ(chunks, f["chunks"]) << chunks.dump(1);
}

TEST(AnthropicUpstream, OverloadedErrorEventIsRetryable503) {
  anthropic::ChunkTranslator t("claude", kCreated);
  std::vector<std::string> out;
  const json err = {{"type", "error"}, {"error", {{"type", "overloaded_error"}, {"message", "Overloaded"}}}};
  auto f = t.on_event(event("error", err), out);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->error.status, 503);
  EXPECT_EQ(f->error.code, "upstream_overloaded");
  EXPECT_TRUE(f->retryable);
  EXPECT_EQ(f->error.message, "upstream claude: Overloaded");
  EXPECT_TRUE(out.empty());
}

TEST(AnthropicUpstream, StreamWithoutMessageStopEndedEarly) {
  const json f = fixture("anthropic_stream.json");
  json events = f["events"];
  events.erase(events.size() - 1);  // no message_stop
  anthropic::ChunkTranslator t("claude", kCreated);
  std::optional<UpstreamFailure> failure;
  const json chunks = run_stream(t, events, &failure);
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->error.status, 502);
  EXPECT_EQ(failure->error.code, "upstream_disconnected");
  EXPECT_EQ(chunks.size(), f["chunks"].size() - 1);  // everything but the usage chunk
}

TEST(AnthropicUpstream, EventBeforeMessageStartIsAProtocolError) {
  anthropic::ChunkTranslator t("claude", kCreated);
  std::vector<std::string> out;
  auto f = t.on_event(event("content_block_delta", {{"type", "content_block_delta"}, {"index", 0}}), out);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->error.code, "upstream_protocol");
  EXPECT_FALSE(f->retryable);
  auto g = t.on_event(SseMessage{"message_start", "not json", {}}, out);
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->error.code, "upstream_protocol");
}

TEST(UpstreamFailure, StatusesMapToCodes) {
  const std::string anthropic_body = R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})";
  auto f = alou::gateway::failure_from_response("a", 529, anthropic_body, "");
  EXPECT_EQ(f.error.status, 503);
  EXPECT_EQ(f.error.code, "upstream_overloaded");
  EXPECT_TRUE(f.retryable);
  EXPECT_EQ(f.error.message, "upstream a: Overloaded");
  const std::string google_body = R"({"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}})";
  auto g = alou::gateway::failure_from_response("g", 429, google_body, "7");
  EXPECT_EQ(g.error.status, 429);
  EXPECT_EQ(g.error.code, "upstream_rate_limited");
  EXPECT_EQ(g.error.message, "upstream g: Quota exceeded");
  EXPECT_EQ(g.retry_after, std::chrono::seconds(7));
  auto h = alou::gateway::failure_from_response("g", 401, "{}", "");
  EXPECT_EQ(h.error.status, 502);
  EXPECT_EQ(h.error.code, "upstream_auth_failed");
  EXPECT_FALSE(h.retryable);
}

// ---------------------------------------------------------------- gemini

TEST(GeminiUpstream, RequestMatchesFixture) {
  const json f = fixture("gemini_request.json");
  auto out = gemini::to_generate_request(f["openai"]);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(*out, f["gemini"]) << out->dump(2);
}

TEST(GeminiUpstream, JsonSchemaResponseFormatAndToolChoiceModes) {
  const json in = {{"model", "g"},
                   {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
                   {"tools", json::array({{{"type", "function"}, {"function", {{"name", "f"}}}}})},
                   {"tool_choice", "none"},
                   {"n", 2},
                   {"response_format",
                    {{"type", "json_schema"}, {"json_schema", {{"name", "x"}, {"schema", {{"type", "object"}}}}}}}};
  auto out = gemini::to_generate_request(in);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ((*out)["toolConfig"], json({{"functionCallingConfig", {{"mode", "NONE"}}}}));
  EXPECT_EQ((*out)["generationConfig"], json({{"candidateCount", 2},
                                             {"responseMimeType", "application/json"},
                                             {"responseJsonSchema", {{"type", "object"}}}}));
}

void expect_gemini_invalid(const json& in, const std::string& needle) {
  auto out = gemini::to_generate_request(in);
  ASSERT_FALSE(out.has_value()) << out->dump();
  EXPECT_EQ(out.error().status, 400);
  EXPECT_EQ(out.error().code, "invalid_request");
  EXPECT_NE(out.error().message.find(needle), std::string::npos) << out.error().message;
}

TEST(GeminiUpstream, RejectsWhatGeminiCannotExpress) {
  expect_gemini_invalid({{"messages", json::array({{{"role", "user"},
                                                     {"content", json::array({{{"type", "image_url"},
                                                                               {"image_url", {{"url", "https://x/a.png"}}}}})}}})}},
                        "data:");
  expect_gemini_invalid({{"messages", json::array({{{"role", "user"}, {"content", "q"}},
                                                   {{"role", "tool"}, {"tool_call_id", "nope"}, {"content", "r"}}})}},
                        "answers no earlier tool call");
  expect_gemini_invalid({{"messages", json::array({{{"role", "function"}, {"content", "x"}}})}}, "role");
  expect_gemini_invalid({{"messages", json::array({{{"role", "user"}, {"content", "q"}}})},
                         {"response_format", {{"type", "yaml"}}}},
                        "response_format");
  expect_gemini_invalid({{"messages", json::array()}}, "at least one");
}

TEST(GeminiUpstream, ModelPathStaysInItsSegment) {
  auto a = gemini::model_path("models/gemini-2.0-flash");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, "gemini-2.0-flash");
  for (const char* bad : {"", "../secrets", "gemini?key=x", "a/b", "g:generateContent"}) {
    auto r = gemini::model_path(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().status, 400);
    EXPECT_EQ(r.error().code, "invalid_request");
  }
}

TEST(GeminiUpstream, ResponsesMatchFixture) {
  const json f = fixture("gemini_response.json");
  for (const auto& c : f["cases"]) {
    auto out = gemini::to_chat_completion(c["gemini"], "gemini-2.0-flash", {"seed", kCreated});
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(json::parse(*out), c["openai"]) << *out;
  }
  EXPECT_FALSE(gemini::to_chat_completion(json::object(), "g", {"seed", kCreated}).has_value());
}

TEST(GeminiUpstream, FinishReasons) {
  EXPECT_STREQ(gemini::finish_reason("STOP", false), "stop");
  EXPECT_STREQ(gemini::finish_reason("STOP", true), "tool_calls");
  EXPECT_STREQ(gemini::finish_reason("MAX_TOKENS", false), "length");
  EXPECT_STREQ(gemini::finish_reason("SAFETY", false), "content_filter");
  EXPECT_STREQ(gemini::finish_reason("RECITATION", false), "content_filter");
  EXPECT_STREQ(gemini::finish_reason("PROHIBITED_CONTENT", false), "content_filter");
}

TEST(GeminiUpstream, StreamMatchesFixture) {
  const json f = fixture("gemini_stream.json");
  gemini::ChunkTranslator t("gem", "gemini-2.0-flash", {"seed", kCreated});
  std::optional<UpstreamFailure> failure;
  const json chunks = run_stream(t, f["events"], &failure);
  EXPECT_FALSE(failure.has_value()) << failure->error.message;
  EXPECT_EQ(chunks, f["chunks"]) << chunks.dump(1);
}

TEST(GeminiUpstream, ErrorEventIsAFailureWithItsCode) {
  gemini::ChunkTranslator t("gem", "g", {"seed", kCreated});
  std::vector<std::string> out;
  const json err = {{"error", {{"code", 503}, {"message", "The model is overloaded."}, {"status", "UNAVAILABLE"}}}};
  auto f = t.on_event(event("", err), out);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->error.status, 502);
  EXPECT_EQ(f->error.code, "upstream_error");
  EXPECT_TRUE(f->retryable);
  EXPECT_EQ(f->error.message, "upstream gem: The model is overloaded.");
}

TEST(GeminiUpstream, StreamWithoutFinishReasonEndedEarly) {
  const json f = fixture("gemini_stream.json");
  json events = json::array({f["events"][0]});
  gemini::ChunkTranslator t("gem", "g", {"seed", kCreated});
  std::optional<UpstreamFailure> failure;
  const json chunks = run_stream(t, events, &failure);
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->error.code, "upstream_disconnected");
  EXPECT_EQ(chunks.size(), 2u);  // role, "Checking"
  std::vector<std::string> out;
  gemini::ChunkTranslator u("gem", "g", {"seed", kCreated});
  auto g = u.on_event(SseMessage{"", "[1,2]", {}}, out);
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->error.code, "upstream_protocol");
}

}  // namespace

namespace {

TEST(UpstreamUtil, ApiBaseAppendsTheDefaultPathToAnOriginOnly) {
  using alou::gateway::api_base;
  EXPECT_EQ(api_base("https://api.anthropic.com", "/v1"), "https://api.anthropic.com/v1");
  EXPECT_EQ(api_base("https://api.anthropic.com/", "/v1"), "https://api.anthropic.com/v1");
  EXPECT_EQ(api_base("https://api.anthropic.com/v1/", "/v1"), "https://api.anthropic.com/v1");
  EXPECT_EQ(api_base("http://127.0.0.1:9000/proxy/v1beta", "/v1beta"), "http://127.0.0.1:9000/proxy/v1beta");
  EXPECT_EQ(api_base("http://127.0.0.1:9000", "/v1beta"), "http://127.0.0.1:9000/v1beta");
}

}  // namespace

namespace {

// An upstream that echoes the gateway's key in an error message: the
// factories register provider keys as log secrets, so it never reaches the
// client or a log line.
TEST(UpstreamFailure, ProviderKeysAreRedactedFromUpstreamMessages) {
  const std::string anthropic_key = "sk-ant-unit-9f8e7d6c5b4a";
  const std::string gemini_key = "AIzaUnitKey-1a2b3c4d5e6f";
  const alou::ProviderSettings a{.name = "claude", .kind = "anthropic", .base_url = {}, .api_key_env = {}, .extra = {}};
  const alou::ProviderSettings g{.name = "gem", .kind = "gemini", .base_url = {}, .api_key_env = {}, .extra = {}};
  ASSERT_TRUE(alou::gateway::make_anthropic_provider(a, anthropic_key, nullptr).has_value());
  ASSERT_NE(alou::gateway::make_gemini_provider(g, gemini_key, nullptr), nullptr);
  for (const auto& key : {anthropic_key, gemini_key}) {
    const json body = {{"error", {{"message", "API key " + key + " is not valid"}}}};
    const auto f = alou::gateway::failure_from_response("p", 401, body.dump(), "");
    EXPECT_EQ(f.error.message.find(key), std::string::npos) << f.error.message;
    EXPECT_NE(f.error.message.find("[redacted]"), std::string::npos) << f.error.message;
    EXPECT_EQ(f.error.code, "upstream_auth_failed");
  }
}

TEST(AnthropicUpstream, BadDefaultMaxTokensIsAnError) {
  const alou::ProviderSettings a{
      .name = "claude", .kind = "anthropic", .base_url = {}, .api_key_env = {}, .extra = {{"default_max_tokens", "0"}}};
  auto p = alou::gateway::make_anthropic_provider(a, "", nullptr);
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.error().status, 400);
  EXPECT_EQ(p.error().code, "invalid_provider_setting");
}

}  // namespace

namespace {

TEST(GeminiUpstream, EmbeddingsRequestAndResponse) {
  const json req = {{"model", "text-embedding-004"}, {"input", json::array({"ab", "cdef"})}, {"dimensions", 2}};
  auto batch = gemini::to_batch_embed_request(req, "text-embedding-004");
  ASSERT_TRUE(batch) << batch.error().message;
  const json expected = json::parse(R"({"requests":[
    {"model":"models/text-embedding-004","content":{"parts":[{"text":"ab"}]},"outputDimensionality":2},
    {"model":"models/text-embedding-004","content":{"parts":[{"text":"cdef"}]},"outputDimensionality":2}]})");
  EXPECT_EQ(*batch, expected);

  const json resp = json::parse(R"({"embeddings":[{"values":[1.0,0.0]},{"values":[-2.0,0.5]}]})");
  auto out = gemini::to_openai_embeddings(resp, req);
  ASSERT_TRUE(out);
  const json o = json::parse(*out);
  EXPECT_EQ(o["object"], "list");
  EXPECT_EQ(o["model"], "text-embedding-004");
  EXPECT_EQ(o["data"][1]["index"], 1);
  EXPECT_EQ(o["data"][1]["embedding"], json::array({-2.0, 0.5}));
  // 6 characters: ceil(6 / 4) = 2 estimated prompt tokens.
  EXPECT_EQ(o["usage"]["prompt_tokens"], 2);
  EXPECT_EQ(o["usage"]["total_tokens"], 2);

  // base64: little-endian float32 (1.0f = 00 00 80 3F, -2.0f = 00 00 00 C0, 0.5f = 00 00 00 3F).
  json b64 = req;
  b64["encoding_format"] = "base64";
  const json ob = json::parse(*gemini::to_openai_embeddings(resp, b64));
  EXPECT_EQ(ob["data"][0]["embedding"], "AACAPwAAAAA=");
  EXPECT_EQ(ob["data"][1]["embedding"], "AAAAwAAAAD8=");
}

TEST(GeminiUpstream, EmbeddingsRefuseWhatGeminiCannotTake) {
  const auto code = [](const json& req) {
    auto r = gemini::to_batch_embed_request(req, "m");
    return r ? std::string("ok") : r.error().code;
  };
  EXPECT_EQ(code({{"input", json::array({json::array({1, 2, 3})})}}), "invalid_request");  // token ids
  EXPECT_EQ(code({{"input", "x"}, {"encoding_format", "int8"}}), "invalid_request");
  EXPECT_EQ(code({{"input", "x"}, {"dimensions", 0}}), "invalid_request");
  EXPECT_EQ(code({{"input", json::array()}}), "invalid_input");
  // A response with another count of vectors is not an answer to this request.
  const json resp = json::parse(R"({"embeddings":[{"values":[1.0]}]})");
  EXPECT_FALSE(gemini::to_openai_embeddings(resp, {{"input", json::array({"a", "b"})}}));
  EXPECT_FALSE(gemini::to_openai_embeddings(json::parse(R"({"error":{}})"), {{"input", "a"}}));
}

}  // namespace
