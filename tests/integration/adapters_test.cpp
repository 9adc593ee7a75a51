// Provider kinds anthropic and gemini over real sockets against the mock
// upstream (mock::add_upstream_routes, which speaks Anthropic's Messages API
// and Gemini's generateContent / streamGenerateContent): both client formats
// (/v1/chat/completions and /v1/messages), streamed and not, tool calls and
// tool results, and the faults /fail 500, /fail 429, /slow, /cut and an
// upstream that is down.
#include "harness.hpp"

#include "alou/mock/wire.hpp"
#include "mock_upstream.hpp"

#include "alou/core/metrics.hpp"
#include "alou/http/exchange.hpp"
#include "alou/http/filter.hpp"
#include "alou/http/router.hpp"
#include "alou/http/server.hpp"
#include "alou/mock/upstream.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

namespace alou::itest {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kAnthropicKeyEnv = "ALOU_TEST_ANTHROPIC_KEY";
constexpr const char* kGeminiKeyEnv = "ALOU_TEST_GEMINI_KEY";
constexpr const char* kAnthropicKey = "sk-ant-itest-secret-0123456789";
constexpr const char* kGeminiKey = "AIza-itest-secret-0123456789";
constexpr const char* kAzureKeyEnv = "ALOU_TEST_AZURE_KEY";
constexpr const char* kAzureKey = "azure-itest-secret-0123456789";

// What reached the mock upstream: requests per API, and the last request's
// target and credential headers.
class Recorder final : public alou::http::Filter {
 public:
  net::awaitable<std::optional<alou::http::Response>> on_request(alou::http::Exchange& ex) override {
    const std::string path(ex.path());
    if (path == "/v1/messages") anthropic.fetch_add(1);
    if (path.rfind("/v1beta/models/", 0) == 0) gemini.fetch_add(1);
    std::lock_guard lock(mu_);
    target_ = std::string(ex.request().target());
    const auto h = [&ex](const char* name) { return std::string(ex.request()[name]); };
    headers_ = {{"x-api-key", h("x-api-key")},
                {"anthropic-version", h("anthropic-version")},
                {"x-goog-api-key", h("x-goog-api-key")},
                {"authorization", h("authorization")},
                {"api-key", h("api-key")}};
    body_ = ex.request().body();
    co_return std::nullopt;
  }
  std::string target() {
    std::lock_guard lock(mu_);
    return target_;
  }
  std::string header(const std::string& name) {
    std::lock_guard lock(mu_);
    return headers_[name];
  }
  json body() {
    std::lock_guard lock(mu_);
    return json::parse(body_, nullptr, false);
  }
  std::string body_text() {
    std::lock_guard lock(mu_);
    return body_;
  }
  std::atomic<int> anthropic{0};
  std::atomic<int> gemini{0};

 private:
  std::mutex mu_;
  std::string target_;
  std::map<std::string, std::string> headers_;
  std::string body_;
};

// The mock upstream, with a Recorder in front.
struct Upstream : MockUpstream {
  std::shared_ptr<Recorder> recorder = std::make_shared<Recorder>();
  bool start() { return MockUpstream::start(recorder); }
};

// One provider kind under test: the model routed to it and its provider name.
struct Kind {
  const char* kind;
  const char* model;     // client-facing model, routed to the kind
  const char* provider;  // provider name
};
constexpr Kind kKinds[] = {{"anthropic", "claude", "claude"}, {"gemini", "gemini", "gem"}};

json parse(const std::string& text) { return json::parse(text, nullptr, false); }

json chat_body(std::string_view model, std::string_view content, bool stream = false) {
  json body = {{"model", model}, {"messages", json::array({{{"role", "user"}, {"content", content}}})}};
  if (stream) body["stream"] = true;
  return body;
}

json anthropic_body(std::string_view model, std::string_view content, bool stream = false) {
  json body = chat_body(model, content, stream);
  body["max_tokens"] = 256;
  return body;
}

const json kWeatherTool = {{"type", "function"},
                           {"function",
                            {{"name", "get_weather"},
                             {"description", "Current weather of a city"},
                             {"parameters",
                              {{"type", "object"},
                               {"properties", {{"city", {{"type", "string"}}}}},
                               {"required", json::array({"city"})}}}}}};

// {"error":{"message","type","param","code"}} with `code`.
void expect_openai_error(const Res& r, int status, std::string_view code) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  const json j = parse(r.body());
  ASSERT_TRUE(j.is_object() && j.contains("error") && j["error"].is_object()) << r.body();
  EXPECT_EQ(j["error"].value("code", ""), code) << r.body();
  EXPECT_TRUE(j["error"]["message"].is_string()) << r.body();
  EXPECT_TRUE(j["error"].contains("param")) << r.body();
  EXPECT_TRUE(j["error"]["type"].is_string()) << r.body();
}

void expect_anthropic_error(const Res& r, int status, std::string_view type) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  const json j = parse(r.body());
  ASSERT_TRUE(j.is_object()) << r.body();
  EXPECT_EQ(j.value("type", ""), "error") << r.body();
  ASSERT_TRUE(j.contains("error") && j["error"].is_object()) << r.body();
  EXPECT_EQ(j["error"].value("type", ""), type) << r.body();
  EXPECT_FALSE(j["error"].value("message", "").empty()) << r.body();
}

struct Sse {
  int status = 0;
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> events;  // (event, data)
};

Sse parse_sse(int status, std::string content_type, std::string body) {
  Sse out{status, std::move(content_type), std::move(body), {}};
  std::size_t pos = 0;
  while (pos < out.body.size()) {
    auto end = out.body.find("\n\n", pos);
    if (end == std::string::npos) end = out.body.size();
    std::istringstream event(out.body.substr(pos, end - pos));
    std::string line;
    std::pair<std::string, std::string> e;
    while (std::getline(event, line)) {
      if (line.rfind("event: ", 0) == 0) e.first = line.substr(7);
      if (line.rfind("data: ", 0) == 0) e.second += line.substr(6);
    }
    if (!e.first.empty() || !e.second.empty()) out.events.push_back(std::move(e));
    pos = end + 2;
  }
  return out;
}

// Text deltas of OpenAI chunks, concatenated.
std::string chunk_text(const Sse& s) {
  std::string out;
  for (const auto& [name, data] : s.events) {
    const json j = parse(data);
    if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array()) continue;
    for (const auto& c : j["choices"]) {
      if (c.contains("delta") && c["delta"].contains("content") && c["delta"]["content"].is_string()) {
        out += c["delta"]["content"].get<std::string>();
      }
    }
  }
  return out;
}

std::string finish_of(const Sse& s) {
  std::string out;
  for (const auto& [name, data] : s.events) {
    const json j = parse(data);
    if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array()) continue;
    for (const auto& c : j["choices"]) {
      if (c.contains("finish_reason") && c["finish_reason"].is_string()) out = c["finish_reason"];
    }
  }
  return out;
}

class AdaptersTest : public AppTest {
 protected:
  void SetUp() override {
    ::setenv(kAnthropicKeyEnv, kAnthropicKey, 1);
    ::setenv(kGeminiKeyEnv, kGeminiKey, 1);
    ::setenv(kAzureKeyEnv, kAzureKey, 1);
    ASSERT_TRUE(upstream_.start());
    AppTest::SetUp();
  }

  void TearDown() override {
    AppTest::TearDown();
    upstream_.stop();
    ::unsetenv(kAnthropicKeyEnv);
    ::unsetenv(kGeminiKeyEnv);
    ::unsetenv(kAzureKeyEnv);
  }

  void configure(Settings& s) override {
    const std::string base = "http://127.0.0.1:" + std::to_string(upstream_.port());
    s.providers = {
        ProviderSettings{.name = "claude", .kind = "anthropic", .base_url = base + "/v1",
                         .api_key_env = kAnthropicKeyEnv, .extra = {}},
        ProviderSettings{.name = "gem", .kind = "gemini", .base_url = base + "/v1beta",
                         .api_key_env = kGeminiKeyEnv, .extra = {}},
        ProviderSettings{.name = "claude-dead", .kind = "anthropic", .base_url = "http://127.0.0.1:1/v1",
                         .api_key_env = {}, .extra = {}},
        ProviderSettings{.name = "gem-dead", .kind = "gemini", .base_url = "http://127.0.0.1:1/v1beta",
                         .api_key_env = {}, .extra = {}},
        ProviderSettings{.name = "claude-bad", .kind = "anthropic", .base_url = base + "/v1", .api_key_env = {},
                         .extra = {{"default_max_tokens", "lots"}}},
        ProviderSettings{.name = "az", .kind = "azure", .base_url = base, .api_key_env = kAzureKeyEnv,
                         .extra = {{"api_version", "2024-10-21"}}},
    };
    const auto model = [](std::string name, std::string provider, std::string upstream_model,
                          std::vector<std::string> fallbacks) {
      ModelSettings m;
      m.name = std::move(name);
      m.routes = {RouteSettings{.provider = std::move(provider), .model = std::move(upstream_model), .weight = 1}};
      m.fallbacks = std::move(fallbacks);
      return m;
    };
    s.models = {model("claude", "claude", "claude-x", {}),
                model("gemini", "gem", "gemini-x", {}),
                model("claude-flaky", "claude-dead", "claude-x", {"gemini"}),
                model("gemini-flaky", "gem-dead", "gemini-x", {"claude"}),
                model("claude-down", "claude-dead", "claude-x", {}),
                model("gemini-down", "gem-dead", "gemini-x", {}),
                model("claude-bad", "claude-bad", "claude-x", {}),
                model("azure", "az", "gpt-deploy", {}),
                model("gpt-deploy", "az", "gpt-deploy", {})};
  }

  int upstream_calls(const Kind& k) const {
    return std::string_view(k.kind) == "anthropic" ? upstream_.recorder->anthropic.load()
                                                   : upstream_.recorder->gemini.load();
  }

  Res post(std::string_view path, const json& body) {
    Headers h = bearer(kAdminKey);
    h.emplace_back("Content-Type", "application/json");
    return request(bhttp::verb::post, path, h, body.dump());
  }
  Res chat(const json& body) { return post("/v1/chat/completions", body); }
  Res messages(const json& body) {
    Headers h{{"x-api-key", std::string(kAdminKey)}, {"anthropic-version", "2023-06-01"},
              {"Content-Type", "application/json"}};
    return request(bhttp::verb::post, "/v1/messages", h, body.dump());
  }

  Sse stream(std::string_view path, const json& body) {
    Client c(ep());
    Headers h{{"x-api-key", std::string(kAdminKey)}, {"anthropic-version", "2023-06-01"},
              {"Authorization", "Bearer " + std::string(kAdminKey)}, {"Content-Type", "application/json"}};
    EXPECT_FALSE(c.send(make_request(bhttp::verb::post, path, h, body.dump())));
    ResParser p;
    p.body_limit(boost::none);
    auto ec = c.read_header(p);
    EXPECT_FALSE(ec) << ec.message();
    if (ec) return {};
    ec = c.read_rest(p);
    EXPECT_FALSE(ec) << ec.message();
    return parse_sse(p.get().result_int(), std::string(p.get()[bhttp::field::content_type]), p.get().body());
  }

  std::uint64_t requests(std::string_view model, std::string_view provider, std::string_view outcome) {
    return counter("alou_gateway_requests_total", {{"model", std::string(model)},
                                                    {"provider", std::string(provider)},
                                                    {"outcome", std::string(outcome)}});
  }

  Upstream upstream_;
};

// ---------------------------------------------------------------- OpenAI client format

TEST_F(AdaptersTest, ChatCompletionWithUsageAndProviderHeaders) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    const Res r = chat(chat_body(k.model, "hello world"));
    ASSERT_EQ(r.result_int(), 200) << r.body();
    const json j = parse(r.body());
    EXPECT_EQ(j.value("object", ""), "chat.completion") << r.body();
    EXPECT_EQ(j["choices"][0]["message"].value("content", ""), "echo: hello world") << r.body();
    EXPECT_EQ(j["choices"][0]["message"].value("role", ""), "assistant") << r.body();
    EXPECT_EQ(j["choices"][0].value("finish_reason", ""), "stop") << r.body();
    // prompt = ceil(11/4) = 3, completion = ceil(17/4) = 5.
    EXPECT_EQ(j["usage"].value("prompt_tokens", -1), 3) << r.body();
    EXPECT_EQ(j["usage"].value("completion_tokens", -1), 5) << r.body();
    EXPECT_EQ(j["usage"].value("total_tokens", -1), 8) << r.body();
    EXPECT_EQ(upstream_calls(k), 1);
    EXPECT_EQ(requests(k.model, k.provider, "ok"), 1u);
    EXPECT_EQ(counter("alou_gateway_tokens_total", {{"model", k.model}, {"direction", "in"}}), 3u);
    EXPECT_EQ(counter("alou_gateway_tokens_total", {{"model", k.model}, {"direction", "out"}}), 5u);
    if (std::string_view(k.kind) == "anthropic") {
      EXPECT_EQ(upstream_.recorder->target(), "/v1/messages");
      EXPECT_EQ(upstream_.recorder->header("x-api-key"), kAnthropicKey);
      EXPECT_EQ(upstream_.recorder->header("anthropic-version"), "2023-06-01");
      const json sent = upstream_.recorder->body();
      EXPECT_EQ(sent.value("model", ""), "claude-x") << sent;
      EXPECT_EQ(sent.value("max_tokens", 0), 4096) << sent;
    } else {
      EXPECT_EQ(upstream_.recorder->target(), "/v1beta/models/gemini-x:generateContent");
      EXPECT_EQ(upstream_.recorder->header("x-goog-api-key"), kGeminiKey);
    }
    EXPECT_EQ(upstream_.recorder->header("authorization"), "");
  }
}

TEST_F(AdaptersTest, StreamStripsUsageUnlessAsked) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    for (const bool include_usage : {false, true}) {
      json body = chat_body(k.model, "hi there", true);
      if (include_usage) body["stream_options"] = {{"include_usage", true}};
      const Sse s = stream("/v1/chat/completions", body);
      ASSERT_EQ(s.status, 200) << s.body;
      EXPECT_EQ(s.content_type, "text/event-stream");
      ASSERT_GE(s.events.size(), 4u) << s.body;
      EXPECT_EQ(chunk_text(s), "echo: hi there") << s.body;
      EXPECT_EQ(finish_of(s), "stop") << s.body;
      EXPECT_EQ(s.events.back().second, "[DONE]");
      const json first = parse(s.events.front().second);
      EXPECT_EQ(first["choices"][0]["delta"].value("role", ""), "assistant") << s.body;
      int usage_chunks = 0;
      for (const auto& [name, data] : s.events) {
        const json j = parse(data);
        if (j.is_object() && j.contains("usage") && j["usage"].is_object()) {
          ++usage_chunks;
          EXPECT_EQ(j["choices"], json::array()) << data;
          // prompt ceil(8/4) = 2, completion ceil(14/4) = 4.
          EXPECT_EQ(j["usage"].value("prompt_tokens", -1), 2) << data;
          EXPECT_EQ(j["usage"].value("completion_tokens", -1), 4) << data;
        }
      }
      EXPECT_EQ(usage_chunks, include_usage ? 1 : 0) << s.body;
    }
    // Billing saw the usage of both streams.
    EXPECT_EQ(counter("alou_gateway_tokens_total", {{"model", k.model}, {"direction", "out"}}), 8u);
    EXPECT_EQ(std::string_view(k.kind) == "anthropic" ? upstream_.recorder->target()
                                                      : upstream_.recorder->target(),
              std::string_view(k.kind) == "anthropic" ? "/v1/messages"
                                                      : "/v1beta/models/gemini-x:streamGenerateContent?alt=sse");
  }
}

TEST_F(AdaptersTest, ToolCallThenToolResult) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    json body = chat_body(k.model, "/tool get_weather {\"city\":\"Paris\"}");
    body["tools"] = json::array({kWeatherTool});
    body["tool_choice"] = "auto";
    const Res r = chat(body);
    ASSERT_EQ(r.result_int(), 200) << r.body();
    const json j = parse(r.body());
    const json& msg = j["choices"][0]["message"];
    EXPECT_EQ(j["choices"][0].value("finish_reason", ""), "tool_calls") << r.body();
    ASSERT_TRUE(msg.contains("tool_calls") && msg["tool_calls"].size() == 1u) << r.body();
    const json& call = msg["tool_calls"][0];
    EXPECT_EQ(call.value("type", ""), "function");
    EXPECT_FALSE(call.value("id", "").empty()) << r.body();
    EXPECT_EQ(call["function"].value("name", ""), "get_weather") << r.body();
    ASSERT_TRUE(call["function"]["arguments"].is_string()) << r.body();
    EXPECT_EQ(parse(call["function"]["arguments"].get<std::string>()), json({{"city", "Paris"}})) << r.body();

    json second = body;
    second["messages"].push_back(msg);
    second["messages"].push_back({{"role", "tool"}, {"tool_call_id", call["id"]}, {"content", "18C, clear"}});
    const Res r2 = chat(second);
    ASSERT_EQ(r2.result_int(), 200) << r2.body();
    const json j2 = parse(r2.body());
    EXPECT_EQ(j2["choices"][0]["message"].value("content", ""), "tool get_weather returned: 18C, clear") << r2.body();
    EXPECT_EQ(j2["choices"][0].value("finish_reason", ""), "stop") << r2.body();
  }
}

TEST_F(AdaptersTest, StreamedToolCallDeltas) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    json body = chat_body(k.model, "/tool get_weather {\"city\":\"Paris\",\"unit\":\"C\"}", true);
    body["tools"] = json::array({kWeatherTool});
    const Sse s = stream("/v1/chat/completions", body);
    ASSERT_EQ(s.status, 200) << s.body;
    std::string id;
    std::string name;
    std::string args;
    for (const auto& [event, data] : s.events) {
      const json j = parse(data);
      if (!j.is_object() || !j.contains("choices") || j["choices"].empty()) continue;
      const json& d = j["choices"][0]["delta"];
      if (!d.contains("tool_calls")) continue;
      for (const auto& tc : d["tool_calls"]) {
        EXPECT_EQ(tc.value("index", -1), 0) << data;
        if (tc.contains("id")) {
          EXPECT_TRUE(id.empty()) << "the id is sent once: " << data;
          id = tc["id"];
          name = tc["function"].value("name", "");
        }
        args += tc["function"].value("arguments", "");
      }
    }
    EXPECT_FALSE(id.empty()) << s.body;
    EXPECT_EQ(name, "get_weather") << s.body;
    EXPECT_EQ(parse(args), json({{"city", "Paris"}, {"unit", "C"}})) << args;
    EXPECT_EQ(finish_of(s), "tool_calls") << s.body;
    EXPECT_EQ(s.events.back().second, "[DONE]");
  }
}

// ---------------------------------------------------------------- Anthropic client format

TEST_F(AdaptersTest, MessagesOverBothKinds) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    const Res r = messages(anthropic_body(k.model, "hello world"));
    ASSERT_EQ(r.result_int(), 200) << r.body();
    const json j = parse(r.body());
    EXPECT_EQ(j.value("type", ""), "message") << r.body();
    EXPECT_EQ(j.value("model", ""), k.model) << r.body();
    EXPECT_EQ(j.value("id", "").rfind("msg_", 0), 0u) << r.body();
    EXPECT_EQ(j.value("id", "").rfind("msg_msg_", 0), std::string::npos) << r.body();
    EXPECT_EQ(j["content"], json::array({{{"type", "text"}, {"text", "echo: hello world"}}})) << r.body();
    EXPECT_EQ(j.value("stop_reason", ""), "end_turn") << r.body();
    EXPECT_EQ(j["usage"], json({{"input_tokens", 3}, {"output_tokens", 5}})) << r.body();
    if (std::string_view(k.kind) == "anthropic") {
      EXPECT_EQ(upstream_.recorder->body().value("max_tokens", 0), 256);  // the client's, not the default
    }
  }
}

TEST_F(AdaptersTest, MessagesStreamOverBothKinds) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    const Sse s = stream("/v1/messages", anthropic_body(k.model, "hi there", true));
    ASSERT_EQ(s.status, 200) << s.body;
    std::vector<std::string> names;
    std::string text;
    for (const auto& [name, data] : s.events) {
      if (names.empty() || names.back() != name) names.push_back(name);
      const json j = parse(data);
      ASSERT_TRUE(j.is_object()) << data;
      if (name == "content_block_delta") text += j["delta"].value("text", "");
    }
    EXPECT_EQ(names, (std::vector<std::string>{"message_start", "content_block_start", "content_block_delta",
                                               "content_block_stop", "message_delta", "message_stop"}))
        << s.body;
    EXPECT_EQ(text, "echo: hi there");
    const json delta = parse(s.events[s.events.size() - 2].second);
    EXPECT_EQ(delta["delta"].value("stop_reason", ""), "end_turn") << s.body;
    EXPECT_EQ(delta["usage"].value("input_tokens", -1), 2) << s.body;
    EXPECT_EQ(delta["usage"].value("output_tokens", -1), 4) << s.body;
  }
}

TEST_F(AdaptersTest, MessagesToolUseRoundTripStreamed) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    json body = anthropic_body(k.model, "/tool get_weather {\"city\":\"Paris\"}", true);
    body["tools"] = json::array({{{"name", "get_weather"},
                                  {"input_schema", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}}}}});
    const Sse s = stream("/v1/messages", body);
    ASSERT_EQ(s.status, 200) << s.body;
    std::string id;
    std::string partial;
    for (const auto& [name, data] : s.events) {
      const json j = parse(data);
      if (name == "content_block_start") {
        EXPECT_EQ(j["content_block"].value("type", ""), "tool_use") << data;
        EXPECT_EQ(j["content_block"].value("name", ""), "get_weather") << data;
        id = j["content_block"].value("id", "");
      }
      if (name == "content_block_delta") partial += j["delta"].value("partial_json", "");
      if (name == "message_delta") {
        EXPECT_EQ(j["delta"].value("stop_reason", ""), "tool_use") << data;
      }
    }
    ASSERT_FALSE(id.empty()) << s.body;
    EXPECT_EQ(parse(partial), json({{"city", "Paris"}})) << partial;

    json second = body;
    second["stream"] = false;
    second["messages"].push_back(
        {{"role", "assistant"},
         {"content", json::array({{{"type", "tool_use"}, {"id", id}, {"name", "get_weather"}, {"input", parse(partial)}}})}});
    second["messages"].push_back(
        {{"role", "user"}, {"content", json::array({{{"type", "tool_result"}, {"tool_use_id", id}, {"content", "18C"}}})}});
    const Res r = messages(second);
    ASSERT_EQ(r.result_int(), 200) << r.body();
    EXPECT_EQ(parse(r.body())["content"], json::array({{{"type", "text"}, {"text", "tool get_weather returned: 18C"}}}))
        << r.body();
  }
}

// ---------------------------------------------------------------- faults

TEST_F(AdaptersTest, Fail500IsRetriedThen502InBothFormats) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    const int before = upstream_calls(k);
    expect_openai_error(chat(chat_body(k.model, "/fail 500")), 502, "upstream_error");
    EXPECT_EQ(upstream_calls(k) - before, 2);
    EXPECT_EQ(counter("alou_gateway_retries_total", {{"provider", k.provider}}), 1u);
    // Streamed: still before the first byte, so a JSON error.
    const Sse s = stream("/v1/chat/completions", chat_body(k.model, "/fail 500", true));
    EXPECT_EQ(s.status, 502) << s.body;
    EXPECT_EQ(parse(s.body)["error"].value("code", ""), "upstream_error") << s.body;
    EXPECT_EQ(upstream_calls(k) - before, 4);
  }
}

// A separate test: a fifth consecutive failure would open the route's breaker.
TEST_F(AdaptersTest, Fail500InAnthropicFormat) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    const int before = upstream_calls(k);
    expect_anthropic_error(messages(anthropic_body(k.model, "/fail 500")), 502, "api_error");
    const Sse s = stream("/v1/messages", anthropic_body(k.model, "/fail 500", true));
    EXPECT_EQ(s.status, 502) << s.body;
    EXPECT_EQ(parse(s.body)["error"].value("type", ""), "api_error") << s.body;
    EXPECT_EQ(upstream_calls(k) - before, 4);
  }
}

TEST_F(AdaptersTest, Fail429IsRetriedThen429WithRetryAfter) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    const int before = upstream_calls(k);
    const Res r = chat(chat_body(k.model, "/fail 429"));
    expect_openai_error(r, 429, "upstream_rate_limited");
    EXPECT_FALSE(header(r, "retry-after").empty());
    EXPECT_EQ(upstream_calls(k) - before, 2);
    expect_anthropic_error(messages(anthropic_body(k.model, "/fail 429")), 429, "rate_limit_error");
  }
}

TEST_F(AdaptersTest, Fail400IsNotRetried) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    const int before = upstream_calls(k);
    expect_openai_error(chat(chat_body(k.model, "/fail 400")), 400, "upstream_bad_request");
    EXPECT_EQ(upstream_calls(k) - before, 1);
  }
}

TEST_F(AdaptersTest, UpstreamAuthFailureIs502WithoutTheKey) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    const Res r = chat(chat_body(k.model, "/fail 401"));
    expect_openai_error(r, 502, "upstream_auth_failed");
    EXPECT_EQ(r.body().find(kAnthropicKey), std::string::npos) << r.body();
    EXPECT_EQ(r.body().find(kGeminiKey), std::string::npos) << r.body();
  }
}

TEST_F(AdaptersTest, SlowUpstreamStillAnswers) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    const auto t0 = Clock::now();
    const Res r = chat(chat_body(k.model, "/slow 100 a b"));
    ASSERT_EQ(r.result_int(), 200) << r.body();
    EXPECT_GE(Clock::now() - t0, 100ms);
    const Sse s = stream("/v1/chat/completions", chat_body(k.model, "/slow 30 a b c", true));
    ASSERT_EQ(s.status, 200) << s.body;
    EXPECT_EQ(chunk_text(s), "echo: a b c") << s.body;
    EXPECT_EQ(s.events.back().second, "[DONE]");
  }
}

TEST_F(AdaptersTest, CutMidStreamEndsWithAnErrorEventInTheClientFormat) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    const int before = upstream_calls(k);
    const Sse s = stream("/v1/chat/completions", chat_body(k.model, "/cut 2 one two three four five", true));
    ASSERT_EQ(s.status, 200) << s.body;
    ASSERT_GE(s.events.size(), 2u) << s.body;
    for (std::size_t i = 0; i + 1 < s.events.size(); ++i) {
      EXPECT_EQ(parse(s.events[i].second).value("object", ""), "chat.completion.chunk") << s.events[i].second;
    }
    const json e = parse(s.events.back().second);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << s.body;
    EXPECT_EQ(e["error"].value("code", ""), "upstream_disconnected") << s.body;
    EXPECT_EQ(s.body.find("[DONE]"), std::string::npos) << s.body;
    EXPECT_EQ(upstream_calls(k) - before, 1);  // no retry after the first byte
    EXPECT_TRUE(eventually([&] { return requests(k.model, k.provider, "error") == 1u; }, 1000ms));

    const Sse a = stream("/v1/messages", anthropic_body(k.model, "/cut 2 one two three four five", true));
    ASSERT_EQ(a.status, 200) << a.body;
    ASSERT_FALSE(a.events.empty());
    EXPECT_EQ(a.events.front().first, "message_start") << a.body;
    EXPECT_EQ(a.events.back().first, "error") << a.body;
    EXPECT_EQ(parse(a.events.back().second)["error"].value("type", ""), "api_error") << a.body;
  }
}

TEST_F(AdaptersTest, ClientDisconnectCancelsTheUpstreamStream) {
  for (const auto& k : kKinds) {
    SCOPED_TRACE(k.kind);
    Client c(ep());
    Headers h = bearer(kAdminKey);
    h.emplace_back("Content-Type", "application/json");
    const json body = chat_body(k.model, "/slow 200 a b c d e f g h", true);
    ASSERT_FALSE(c.send(make_request(bhttp::verb::post, "/v1/chat/completions", h, body.dump())));
    ResParser p;
    p.body_limit(boost::none);
    ASSERT_FALSE(c.read_header(p));
    ASSERT_EQ(p.get().result_int(), 200);
    const auto until = Clock::now() + 3s;
    while (p.get().body().find("data: ") == std::string::npos && Clock::now() < until) {
      const auto ec = c.read_some(p, 1000ms);
      ASSERT_FALSE(ec) << ec.message();
    }
    ASSERT_NE(p.get().body().find("data: "), std::string::npos);
    EXPECT_EQ(upstream_.in_flight(), 1.0);
    c.close();
    const auto t0 = Clock::now();
    // The whole stream would take 10 chunks x 200 ms: both ends let go well before.
    EXPECT_TRUE(eventually([&] { return gauge("alou_http_requests_in_flight") == 0.0; }, 1000ms));
    EXPECT_TRUE(eventually([&] { return upstream_.in_flight() == 0.0; }, 1000ms))
        << "the upstream request was not cancelled";
    EXPECT_LT(Clock::now() - t0, 1000ms);
    EXPECT_EQ(requests(k.model, k.provider, "ok"), 0u);
  }
}

TEST_F(AdaptersTest, UpstreamDownFallsBackToTheOtherKind) {
  const Res r = chat(chat_body("claude-flaky", "hello"));
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(parse(r.body())["choices"][0]["message"].value("content", ""), "echo: hello");
  EXPECT_EQ(upstream_.recorder->gemini.load(), 1);
  EXPECT_EQ(counter("alou_gateway_fallbacks_total", {{"model", "claude-flaky"}}), 1u);

  const Sse s = stream("/v1/chat/completions", chat_body("gemini-flaky", "hello", true));
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_EQ(chunk_text(s), "echo: hello");
  EXPECT_EQ(upstream_.recorder->anthropic.load(), 1);
}

TEST_F(AdaptersTest, UpstreamDownIs502Unreachable) {
  for (const char* model : {"claude-down", "gemini-down"}) {
    SCOPED_TRACE(model);
    const Res r = chat(chat_body(model, "hello"));
    expect_openai_error(r, 502, "upstream_unreachable");
    EXPECT_EQ(r.body().find("127.0.0.1"), std::string::npos) << "the upstream address leaked: " << r.body();
    expect_anthropic_error(messages(anthropic_body(model, "hello")), 502, "api_error");
  }
}

// ---------------------------------------------------------------- what the adapters refuse

TEST_F(AdaptersTest, UntranslatableRequestIs400WithoutAnUpstreamCall) {
  json gem = chat_body("gemini", "x");
  gem["messages"][0]["content"] = json::array({{{"type", "image_url"}, {"image_url", {{"url", "https://x.test/a.png"}}}}});
  expect_openai_error(chat(gem), 400, "invalid_request");
  json claude = chat_body("claude", "x");
  claude["n"] = 2;
  expect_openai_error(chat(claude), 400, "invalid_request");
  EXPECT_EQ(upstream_.recorder->gemini.load(), 0);
  EXPECT_EQ(upstream_.recorder->anthropic.load(), 0);
}

// Anthropic has no embeddings API: 400 without an upstream call. Gemini's
// batchEmbedContents gives the same vectors mock-upstream's OpenAI route
// gives for the same texts, as floats or base64.
TEST_F(AdaptersTest, EmbeddingsOverGeminiAndNotOverAnthropic) {
  expect_openai_error(post("/v1/embeddings", {{"model", "claude"}, {"input", "hello"}}), 400,
                      "embeddings_not_supported");
  EXPECT_EQ(upstream_.recorder->anthropic.load(), 0);

  const json req = {{"model", "gemini"}, {"input", json::array({"hello", "world!"})}, {"dimensions", 4}};
  const Res r = post("/v1/embeddings", req);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(upstream_.recorder->target(), "/v1beta/models/gemini-x:batchEmbedContents");
  EXPECT_EQ(upstream_.recorder->header("x-goog-api-key"), kGeminiKey);
  const json got = parse(r.body());
  auto same_texts = alou::mock::wire::openai_embeddings(
      json{{"model", "x"}, {"input", json::array({"hello", "world!"})}, {"dimensions", 4}}.dump());
  ASSERT_TRUE(same_texts);
  const json want = parse(*same_texts);
  ASSERT_EQ(got["data"].size(), 2u) << r.body();
  EXPECT_EQ(got["data"][0]["embedding"], want["data"][0]["embedding"]);
  EXPECT_EQ(got["data"][1]["embedding"], want["data"][1]["embedding"]);
  EXPECT_EQ(got["usage"]["prompt_tokens"], 3);  // ceil(11 / 4), estimated: Gemini reports none

  json b64 = req;
  b64["encoding_format"] = "base64";
  const Res rb = post("/v1/embeddings", b64);
  ASSERT_EQ(rb.result_int(), 200) << rb.body();
  EXPECT_TRUE(parse(rb.body())["data"][0]["embedding"].is_string()) << rb.body();

  // Token ids cannot be sent to Gemini: 400 before any upstream call.
  const auto before = upstream_.recorder->gemini.load();
  expect_openai_error(post("/v1/embeddings", {{"model", "gemini"}, {"input", json::array({json::array({1, 2})})}}),
                      400, "invalid_request");
  EXPECT_EQ(upstream_.recorder->gemini.load(), before);
}

TEST_F(AdaptersTest, StatusShowsABadProviderSettingAsDisabled) {
  const Res r = get("/api/status", bearer(kAdminKey));
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_NE(r.body().find("default_max_tokens must be a positive integer"), std::string::npos) << r.body();
  expect_openai_error(chat(chat_body("claude-bad", "hi")), 503, "no_provider");
}

}  // namespace
}  // namespace alou::itest

namespace alou::itest {
namespace {

// Azure OpenAI: the deployment in the URL, api-version in the query, the
// key in `api-key` (never `Authorization`); chat, streams and embeddings.
TEST_F(AdaptersTest, AzureUsesDeploymentsApiVersionAndApiKey) {
  const Res r = chat(chat_body("azure", "hello world"));
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(parse(r.body())["choices"][0]["message"]["content"], "echo: hello world");
  EXPECT_EQ(upstream_.recorder->target(), "/openai/deployments/gpt-deploy/chat/completions?api-version=2024-10-21");
  EXPECT_EQ(upstream_.recorder->header("api-key"), kAzureKey);
  EXPECT_EQ(upstream_.recorder->header("authorization"), "");

  json body = chat_body("azure", "one two three");
  body["stream"] = true;
  const Sse s = stream("/v1/chat/completions", body);
  std::string text;
  for (const auto& [name, data] : s.events) {
    const json j = parse(data);
    if (!j.is_object() || !j.contains("choices") || j["choices"].empty()) continue;
    const auto& d = j["choices"][0]["delta"];
    if (d.contains("content") && d["content"].is_string()) text += d["content"].get<std::string>();
  }
  EXPECT_EQ(text, "echo: one two three");

  const Res e = post("/v1/embeddings", {{"model", "azure"}, {"input", "hello"}});
  ASSERT_EQ(e.result_int(), 200) << e.body();
  EXPECT_EQ(upstream_.recorder->target(), "/openai/deployments/gpt-deploy/embeddings?api-version=2024-10-21");
  // The key never appears in what the client sees.
  EXPECT_EQ(r.body().find(kAzureKey), std::string::npos);
}

// A chat body whose model keeps its name upstream goes to an OpenAI-format
// upstream exactly as the client wrote it (spacing, key order, unknown
// fields); a renamed model only has its value replaced; a body naming
// "model" twice (plainly or with an escaped letter) is serialised again.
TEST_F(AdaptersTest, ChatBodyIsForwardedAsSentUnlessItMustChange) {
  Headers h = bearer(kAdminKey);
  h.emplace_back("Content-Type", "application/json");
  const std::string as_sent =
      R"({ "messages" : [ {"role":"user","content":"hello world"} ],"zeta": 1.50, "model":"gpt-deploy" })";
  const Res r = request(bhttp::verb::post, "/v1/chat/completions", h, as_sent);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(parse(r.body())["choices"][0]["message"]["content"], "echo: hello world");
  EXPECT_EQ(upstream_.recorder->body_text(), as_sent);

  // Renamed on the way (azure -> gpt-deploy): the same text, only the
  // model's value replaced.
  const std::string renamed = R"({"model" :  "azure","messages":[{"role":"user","content":"hello world"}], "x":[]})";
  ASSERT_EQ(request(bhttp::verb::post, "/v1/chat/completions", h, renamed).result_int(), 200);
  EXPECT_EQ(upstream_.recorder->body_text(),
            R"({"model" :  "gpt-deploy","messages":[{"role":"user","content":"hello world"}], "x":[]})");

  // A key spelled with an escaped letter is a "model" too: serialised again,
  // so that the upstream reads only the model routed and priced here (the
  // last, as parsed), whichever of the two its own parser would keep.
  for (const std::string escaped :
       {R"({"model":"gpt-deploy","mod\u0065l":"azure","messages":[{"role":"user","content":"hi"}]})",
        R"({"mod\u0065l":"gpt-deploy","model":"azure","messages":[{"role":"user","content":"hi"}]})",
        // Parsed as gpt-deploy, a route that keeps the name: as sent, a
        // parser keeping the first key would have read "azure".
        R"({"model":"azure","mod\u0065l":"gpt-deploy","messages":[{"role":"user","content":"hi"}]})"}) {
    ASSERT_EQ(request(bhttp::verb::post, "/v1/chat/completions", h, escaped).result_int(), 200) << escaped;
    const std::string sent = upstream_.recorder->body_text();
    EXPECT_EQ(sent.find("\\u00"), std::string::npos) << sent;
    EXPECT_EQ(sent.find("\"model\""), sent.rfind("\"model\"")) << sent;
    EXPECT_EQ(upstream_.recorder->body().value("model", ""), "gpt-deploy") << sent;
  }
  // A message whose text is "model" (a value, not the key) and a model
  // name with an escape: serialised again, still the right model.
  for (const std::string odd :
       {R"({"messages":[{"role":"user","content":"model"}],"mod\u0065l":"azure"})",
        R"({"model":"azur\u0065","messages":[{"role":"user","content":"hi"}]})"}) {
    ASSERT_EQ(request(bhttp::verb::post, "/v1/chat/completions", h, odd).result_int(), 200) << odd;
    EXPECT_NE(upstream_.recorder->body_text(), odd);
    EXPECT_EQ(upstream_.recorder->body().value("model", ""), "gpt-deploy") << upstream_.recorder->body_text();
  }

  // "model" twice: the upstream gets one, the one routed and priced here
  // (the last, as parsed), whatever its own parser would have kept.
  const std::string twice =
      R"({"model":"azure","model":"gpt-deploy","messages":[{"role":"user","content":"hello world"}]})";
  ASSERT_EQ(request(bhttp::verb::post, "/v1/chat/completions", h, twice).result_int(), 200);
  const std::string sent = upstream_.recorder->body_text();
  EXPECT_EQ(sent.find("\"model\""), sent.rfind("\"model\"")) << sent;
  EXPECT_EQ(upstream_.recorder->body().value("model", ""), "gpt-deploy") << sent;
}

}  // namespace
}  // namespace alou::itest
