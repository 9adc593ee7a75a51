// The LLM gateway end to end: /v1/chat/completions and /v1/models over the
// in-process mock provider and over real sockets to a mock upstream
// (mock::add_upstream_routes on its own http::Server), with retries,
// fallbacks, mid-stream failures, client disconnects and the OpenAI error
// shapes of DESIGN.md ("Contract").
#include "harness.hpp"
#include "mock_upstream.hpp"

#include "alou/auth/keys.hpp"
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

#include <algorithm>
#include <cstdlib>
#include <map>
#include <sstream>
#include <thread>

namespace alou::itest {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kUnsetKeyEnv = "ALOU_TEST_UNSET_KEY_XYZ";

// Counts the chat requests that reach the mock upstream.
class CountingFilter final : public alou::http::Filter {
 public:
  net::awaitable<std::optional<alou::http::Response>> on_request(alou::http::Exchange& ex) override {
    if (ex.path() == "/v1/chat/completions") chats.fetch_add(1);
    co_return std::nullopt;
  }
  std::atomic<int> chats{0};
};

// The mock upstream, with a CountingFilter in front.
struct Upstream : MockUpstream {
  std::shared_ptr<CountingFilter> counter = std::make_shared<CountingFilter>();
  bool start() { return MockUpstream::start(counter); }
};

json chat_body(std::string_view model, std::string_view content, bool stream = false) {
  json body = {{"model", model}, {"messages", json::array({{{"role", "user"}, {"content", content}}})}};
  if (stream) body["stream"] = true;
  return body;
}

json parse(const std::string& text) { return json::parse(text, nullptr, false); }

// {"error":{"message","type","param","code"}}, exactly (DESIGN.md, Errors).
void expect_openai_error(const Res& r, int status, std::string_view code) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  EXPECT_FALSE(header(r, "x-request-id").empty());
  const json j = parse(r.body());
  ASSERT_TRUE(j.is_object()) << r.body();
  ASSERT_EQ(j.size(), 1u) << r.body();
  ASSERT_TRUE(j.contains("error") && j["error"].is_object()) << r.body();
  const json& e = j["error"];
  EXPECT_EQ(e.size(), 4u) << r.body();
  EXPECT_TRUE(e.contains("message") && e["message"].is_string() && !e["message"].get<std::string>().empty())
      << r.body();
  EXPECT_TRUE(e.contains("type") && e["type"].is_string()) << r.body();
  EXPECT_TRUE(e.contains("param") && e["param"].is_null()) << r.body();
  ASSERT_TRUE(e.contains("code") && e["code"].is_string()) << r.body();
  EXPECT_EQ(e["code"].get<std::string>(), code) << r.body();
}

// A chat.completion: its one choice's message and finish_reason, and usage.
void expect_completion(const json& j, std::string_view content, std::int64_t prompt, std::int64_t completion) {
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("object", ""), "chat.completion") << j;
  EXPECT_TRUE(j.contains("id") && j["id"].is_string()) << j;
  ASSERT_TRUE(j.contains("choices") && j["choices"].is_array() && j["choices"].size() == 1u) << j;
  const json& c = j["choices"][0];
  EXPECT_EQ(c.value("index", -1), 0) << j;
  EXPECT_EQ(c["message"].value("role", ""), "assistant") << j;
  EXPECT_EQ(c["message"].value("content", ""), content) << j;
  EXPECT_EQ(c.value("finish_reason", ""), "stop") << j;
  ASSERT_TRUE(j.contains("usage") && j["usage"].is_object()) << j;
  EXPECT_EQ(j["usage"].value("prompt_tokens", -1), prompt) << j;
  EXPECT_EQ(j["usage"].value("completion_tokens", -1), completion) << j;
  EXPECT_EQ(j["usage"].value("total_tokens", -1), prompt + completion) << j;
}

// The "data: " payloads of an SSE body, in order.
std::vector<std::string> data_events(const std::string& body) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < body.size()) {
    auto end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    std::istringstream event(body.substr(pos, end - pos));
    std::string line;
    while (std::getline(event, line)) {
      if (line.rfind("data: ", 0) == 0) out.push_back(line.substr(6));
    }
    pos = end + 2;
  }
  return out;
}

// Text deltas concatenated.
std::string content_of(const std::vector<std::string>& events) {
  std::string out;
  for (const auto& d : events) {
    const json j = parse(d);
    if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array()) continue;
    for (const auto& c : j["choices"]) {
      if (c.contains("delta") && c["delta"].contains("content") && c["delta"]["content"].is_string()) {
        out += c["delta"]["content"].get<std::string>();
      }
    }
  }
  return out;
}

bool has_usage_object(const std::string& data) {
  const json j = parse(data);
  return j.is_object() && j.contains("usage") && j["usage"].is_object();
}

// The value of `series` (name{labels} exactly as rendered) in /metrics, or -1.
double scrape(const std::string& text, std::string_view series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return -1;
}

struct Streamed {
  int status = 0;
  std::string content_type;
  std::string body;
  std::vector<std::string> data;
};

class GatewayTest : public AppTest {
 protected:
  void SetUp() override {
    ::unsetenv(kUnsetKeyEnv);
    ASSERT_TRUE(upstream_.start());
    AppTest::SetUp();
  }

  void TearDown() override {
    AppTest::TearDown();
    upstream_.stop();
  }

  void configure(Settings& s) override {
    const std::string up_url = "http://127.0.0.1:" + std::to_string(upstream_.port()) + "/v1";
    s.providers = {
        ProviderSettings{.name = "mock", .kind = "mock", .base_url = {}, .api_key_env = {}, .extra = {}},
        ProviderSettings{.name = "up", .kind = "openai", .base_url = up_url, .api_key_env = {}, .extra = {}},
        ProviderSettings{
            .name = "dead", .kind = "openai", .base_url = "http://127.0.0.1:1/v1", .api_key_env = {}, .extra = {}},
        ProviderSettings{.name = "keyed", .kind = "openai", .base_url = up_url, .api_key_env = kUnsetKeyEnv, .extra = {}},
    };
    const auto model = [](std::string name, std::string provider, std::string upstream_model,
                          std::vector<std::string> fallbacks) {
      ModelSettings m;
      m.name = std::move(name);
      m.routes = {RouteSettings{.provider = std::move(provider), .model = std::move(upstream_model), .weight = 1}};
      m.fallbacks = std::move(fallbacks);
      return m;
    };
    s.models = {model("mock", "mock", "mock", {}), model("remote", "up", "gpt-x", {}),
                model("flaky", "dead", "gpt-x", {"remote"}), model("ghost", "keyed", "gpt-x", {}),
                model("broken", "dead", "gpt-x", {})};
  }

  Headers admin() const { return bearer(kAdminKey); }

  Res chat(const json& body, const Headers& auth) {
    Headers h = auth;
    h.emplace_back("Content-Type", "application/json");
    return request(bhttp::verb::post, "/v1/chat/completions", h, body.dump());
  }
  Res chat(const json& body) { return chat(body, admin()); }
  Res embed(const json& body) {
    Headers h = admin();
    h.emplace_back("Content-Type", "application/json");
    return request(bhttp::verb::post, "/v1/embeddings", h, body.dump());
  }

  // A whole stream (the head, then the body until its last chunk).
  Streamed chat_stream(const json& body) {
    Streamed out;
    Client c(ep());
    Headers h = admin();
    h.emplace_back("Content-Type", "application/json");
    EXPECT_FALSE(c.send(make_request(bhttp::verb::post, "/v1/chat/completions", h, body.dump())));
    ResParser p;
    p.body_limit(boost::none);
    auto ec = c.read_header(p);
    EXPECT_FALSE(ec) << ec.message();
    if (ec) return out;
    ec = c.read_rest(p);
    EXPECT_FALSE(ec) << ec.message();
    out.status = p.get().result_int();
    out.content_type = std::string(p.get()[bhttp::field::content_type]);
    out.body = p.get().body();
    out.data = data_events(out.body);
    return out;
  }

  std::uint64_t requests(std::string_view model, std::string_view provider, std::string_view outcome) {
    return counter("alou_gateway_requests_total", {{"model", std::string(model)},
                                                    {"provider", std::string(provider)},
                                                    {"outcome", std::string(outcome)}});
  }

  std::string member_key(std::vector<std::string> models) {
    auth::NewKey nk;
    nk.name = unique_name("gw-member");
    nk.role = Role::kMember;
    nk.models = std::move(models);
    auto created = app_->keys().create(nk);
    if (!created) {
      ADD_FAILURE() << "create key: " << created.error().message;
      return {};
    }
    return created->second;
  }

  // POST /v1/messages with an Anthropic client's headers (x-api-key).
  Res messages(const json& body, std::string_view key = kAdminKey) {
    Headers h{{"x-api-key", std::string(key)}, {"anthropic-version", "2023-06-01"}, {"Content-Type", "application/json"}};
    return request(bhttp::verb::post, "/v1/messages", h, body.dump());
  }

  // A whole /v1/messages stream as (event, data) pairs.
  std::vector<std::pair<std::string, std::string>> messages_stream(const json& body, int* status = nullptr) {
    std::vector<std::pair<std::string, std::string>> out;
    Client c(ep());
    Headers h{{"x-api-key", std::string(kAdminKey)}, {"anthropic-version", "2023-06-01"},
              {"Content-Type", "application/json"}};
    EXPECT_FALSE(c.send(make_request(bhttp::verb::post, "/v1/messages", h, body.dump())));
    ResParser p;
    p.body_limit(boost::none);
    auto ec = c.read_header(p);
    EXPECT_FALSE(ec) << ec.message();
    if (ec) return out;
    ec = c.read_rest(p);
    EXPECT_FALSE(ec) << ec.message();
    if (status) *status = p.get().result_int();
    EXPECT_EQ(std::string(p.get()[bhttp::field::content_type]), "text/event-stream");
    const std::string text = p.get().body();
    std::size_t pos = 0;
    while (pos < text.size()) {
      auto end = text.find("\n\n", pos);
      if (end == std::string::npos) end = text.size();
      std::istringstream event(text.substr(pos, end - pos));
      std::string line;
      std::pair<std::string, std::string> e;
      while (std::getline(event, line)) {
        if (line.rfind("event: ", 0) == 0) e.first = line.substr(7);
        if (line.rfind("data: ", 0) == 0) e.second += line.substr(6);
      }
      if (!e.first.empty() || !e.second.empty()) out.push_back(std::move(e));
      pos = end + 2;
    }
    return out;
  }

  Upstream upstream_;
};

// ---------------------------------------------------------------- 1, 2: non-stream

TEST_F(GatewayTest, InProcessMockEchoesWithUsage) {
  const Res r = chat(chat_body("mock", "hello world"));
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_NE(header(r, "content-type").find("application/json"), std::string::npos);
  // prompt = ceil(11/4) = 3, completion = ceil(len("echo: hello world")=17 / 4) = 5.
  expect_completion(parse(r.body()), "echo: hello world", 3, 5);
  EXPECT_EQ(upstream_.counter->chats.load(), 0);
  EXPECT_EQ(requests("mock", "mock", "ok"), 1u);
}

TEST_F(GatewayTest, RemoteModelOverRealSockets) {
  const Res r = chat(chat_body("remote", "hello world"));
  ASSERT_EQ(r.result_int(), 200) << r.body();
  expect_completion(parse(r.body()), "echo: hello world", 3, 5);
  EXPECT_EQ(upstream_.counter->chats.load(), 1);
  EXPECT_EQ(requests("remote", "up", "ok"), 1u);
  EXPECT_EQ(counter("alou_gateway_tokens_total", {{"model", "remote"}, {"direction", "in"}}), 3u);
  EXPECT_EQ(counter("alou_gateway_tokens_total", {{"model", "remote"}, {"direction", "out"}}), 5u);
}

// ---------------------------------------------------------------- 3: streams

TEST_F(GatewayTest, RemoteStreamWithoutUsage) {
  const Streamed s = chat_stream(chat_body("remote", "hi there", true));
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_EQ(s.content_type, "text/event-stream");
  ASSERT_FALSE(s.data.empty()) << s.body;
  EXPECT_EQ(s.data.back(), "[DONE]") << s.body;
  EXPECT_EQ(std::count(s.data.begin(), s.data.end(), "[DONE]"), 1) << s.body;
  EXPECT_EQ(content_of(s.data), "echo: hi there") << s.body;
  for (std::size_t i = 0; i + 1 < s.data.size(); ++i) {
    const json j = parse(s.data[i]);
    ASSERT_TRUE(j.is_object()) << s.data[i];
    EXPECT_EQ(j.value("object", ""), "chat.completion.chunk") << s.data[i];
    EXPECT_FALSE(has_usage_object(s.data[i])) << "usage chunk without include_usage: " << s.data[i];
    EXPECT_FALSE(j["choices"].empty()) << s.data[i];
  }
  // The gateway still asked the upstream for usage (billing) and counted it:
  // prompt ceil(8/4) = 2, completion ceil(14/4) = 4.
  EXPECT_EQ(counter("alou_gateway_tokens_total", {{"model", "remote"}, {"direction", "in"}}), 2u);
  EXPECT_EQ(counter("alou_gateway_tokens_total", {{"model", "remote"}, {"direction", "out"}}), 4u);
  EXPECT_TRUE(eventually([&] { return requests("remote", "up", "ok") == 1u; }, 1000ms));
}

TEST_F(GatewayTest, RemoteStreamWithUsage) {
  json body = chat_body("remote", "hi there", true);
  body["stream_options"] = {{"include_usage", true}};
  const Streamed s = chat_stream(body);
  ASSERT_EQ(s.status, 200) << s.body;
  ASSERT_GE(s.data.size(), 2u) << s.body;
  EXPECT_EQ(s.data.back(), "[DONE]") << s.body;
  EXPECT_EQ(content_of(s.data), "echo: hi there") << s.body;
  std::vector<std::size_t> usage_at;
  for (std::size_t i = 0; i < s.data.size(); ++i) {
    if (has_usage_object(s.data[i])) usage_at.push_back(i);
  }
  ASSERT_EQ(usage_at.size(), 1u) << s.body;
  EXPECT_EQ(usage_at[0], s.data.size() - 2) << "the usage chunk comes last before [DONE]: " << s.body;
  const json u = parse(s.data[usage_at[0]]);
  EXPECT_TRUE(u["choices"].is_array() && u["choices"].empty()) << u;
  EXPECT_EQ(u["usage"].value("prompt_tokens", -1), 2) << u;
  EXPECT_EQ(u["usage"].value("completion_tokens", -1), 4) << u;
  EXPECT_EQ(u["usage"].value("total_tokens", -1), 6) << u;
}

TEST_F(GatewayTest, InProcessMockStream) {
  const Streamed s = chat_stream(chat_body("mock", "hi there", true));
  ASSERT_EQ(s.status, 200) << s.body;
  ASSERT_FALSE(s.data.empty()) << s.body;
  EXPECT_EQ(s.data.back(), "[DONE]") << s.body;
  EXPECT_EQ(content_of(s.data), "echo: hi there") << s.body;
  for (const auto& d : s.data) EXPECT_FALSE(has_usage_object(d)) << d;
}

// ---------------------------------------------------------------- 4: tools

TEST_F(GatewayTest, ToolCallThenToolResult) {
  const json first = chat_body("remote", "/tool get_weather {\"city\":\"Paris\"}");
  const Res r = chat(first);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  const json j = parse(r.body());
  ASSERT_TRUE(j.is_object()) << r.body();
  const json& choice = j["choices"][0];
  EXPECT_EQ(choice.value("finish_reason", ""), "tool_calls") << r.body();
  const json& msg = choice["message"];
  EXPECT_EQ(msg.value("role", ""), "assistant");
  ASSERT_TRUE(msg.contains("tool_calls") && msg["tool_calls"].is_array() && msg["tool_calls"].size() == 1u)
      << r.body();
  const json& call = msg["tool_calls"][0];
  EXPECT_EQ(call.value("type", ""), "function") << r.body();
  ASSERT_TRUE(call.contains("id") && call["id"].is_string()) << r.body();
  EXPECT_EQ(call["function"].value("name", ""), "get_weather") << r.body();
  ASSERT_TRUE(call["function"]["arguments"].is_string()) << r.body();
  EXPECT_EQ(parse(call["function"]["arguments"].get<std::string>()), json({{"city", "Paris"}})) << r.body();

  json second = first;
  second["messages"].push_back(msg);
  second["messages"].push_back(
      {{"role", "tool"}, {"tool_call_id", call["id"]}, {"content", "{\"temp_c\":18,\"sky\":\"clear\"}"}});
  const Res r2 = chat(second);
  ASSERT_EQ(r2.result_int(), 200) << r2.body();
  const json j2 = parse(r2.body());
  EXPECT_EQ(j2["choices"][0]["message"].value("content", ""),
            "tool get_weather returned: {\"temp_c\":18,\"sky\":\"clear\"}")
      << r2.body();
  EXPECT_EQ(j2["choices"][0].value("finish_reason", ""), "stop") << r2.body();
}

TEST_F(GatewayTest, StreamedToolCallArgumentDeltas) {
  const Streamed s = chat_stream(chat_body("remote", "/tool get_weather {\"city\":\"Paris\"}", true));
  ASSERT_EQ(s.status, 200) << s.body;
  ASSERT_FALSE(s.data.empty()) << s.body;
  EXPECT_EQ(s.data.back(), "[DONE]") << s.body;
  std::string name;
  std::string arguments;
  std::string finish;
  int argument_deltas = 0;
  for (const auto& d : s.data) {
    const json j = parse(d);
    if (!j.is_object() || !j.contains("choices")) continue;
    for (const auto& c : j["choices"]) {
      if (c.contains("finish_reason") && c["finish_reason"].is_string()) finish = c["finish_reason"];
      if (!c.contains("delta") || !c["delta"].contains("tool_calls")) continue;
      for (const auto& tc : c["delta"]["tool_calls"]) {
        EXPECT_EQ(tc.value("index", -1), 0) << d;
        if (!tc.contains("function")) continue;
        if (tc["function"].contains("name")) name += tc["function"]["name"].get<std::string>();
        if (tc["function"].contains("arguments")) {
          arguments += tc["function"]["arguments"].get<std::string>();
          ++argument_deltas;
        }
      }
    }
  }
  EXPECT_EQ(name, "get_weather") << s.body;
  EXPECT_GE(argument_deltas, 2) << s.body;
  EXPECT_EQ(parse(arguments), json({{"city", "Paris"}})) << s.body;
  EXPECT_EQ(finish, "tool_calls") << s.body;
}

// ---------------------------------------------------------------- 5: fallback

TEST_F(GatewayTest, FallbackToRemoteWhenRouteIsDead) {
  const Res r = chat(chat_body("flaky", "hello world"));
  ASSERT_EQ(r.result_int(), 200) << r.body();
  expect_completion(parse(r.body()), "echo: hello world", 3, 5);
  EXPECT_EQ(upstream_.counter->chats.load(), 1);
  const Res m = get("/metrics");
  ASSERT_EQ(m.result_int(), 200);
  EXPECT_GE(scrape(m.body(), "alou_gateway_fallbacks_total{model=\"flaky\"}"), 1.0) << m.body();
  EXPECT_EQ(requests("flaky", "dead", "error"), 2u);  // tried and retried before falling back
  EXPECT_EQ(requests("flaky", "up", "ok"), 1u);
}

TEST_F(GatewayTest, StreamFallbackToRemoteWhenRouteIsDead) {
  const Streamed s = chat_stream(chat_body("flaky", "hi there", true));
  ASSERT_EQ(s.status, 200) << s.body;
  ASSERT_FALSE(s.data.empty()) << s.body;
  EXPECT_EQ(s.data.back(), "[DONE]") << s.body;
  EXPECT_EQ(content_of(s.data), "echo: hi there") << s.body;
  EXPECT_GE(counter("alou_gateway_fallbacks_total", {{"model", "flaky"}}), 1u);
}

// POST /v1/embeddings is routed like chat: in process and over the wire,
// the same deterministic vectors; bad input and unknown models as for chat.
// Upstream time per provider: buffered calls and a stream's first chunk.
TEST_F(GatewayTest, UpstreamLatencyIsObservedPerProvider) {
  ASSERT_EQ(chat(chat_body("remote", "hello")).result_int(), 200);
  const Streamed s = chat_stream(chat_body("mock", "hi there", true));
  ASSERT_EQ(s.status, 200) << s.body;
  const Res m = get("/metrics");
  EXPECT_EQ(scrape(m.body(), "alou_gateway_upstream_seconds_count{provider=\"up\"}"), 1.0) << m.body();
  EXPECT_EQ(scrape(m.body(), "alou_gateway_upstream_seconds_count{provider=\"mock\"}"), 1.0) << m.body();
}

TEST_F(GatewayTest, EmbeddingsAreRoutedLikeChat) {
  const Res local = embed({{"model", "mock"}, {"input", "hello"}});
  ASSERT_EQ(local.result_int(), 200) << local.body();
  const Res remote = embed({{"model", "remote"}, {"input", "hello"}});
  ASSERT_EQ(remote.result_int(), 200) << remote.body();
  const json l = parse(local.body());
  const json r = parse(remote.body());
  ASSERT_TRUE(l["data"].is_array() && l["data"].size() == 1u) << local.body();
  EXPECT_EQ(l["data"][0]["embedding"], r["data"][0]["embedding"]);
  EXPECT_GT(l["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_EQ(upstream_.counter->chats.load(), 0);  // the upstream counts chats only
  expect_openai_error(embed({{"model", "mock"}}), 400, "invalid_input");
  expect_openai_error(embed({{"model", "nope"}, {"input", "x"}}), 404, "model_not_found");
  // A dead route falls back like chat does.
  const Res fb = embed({{"model", "flaky"}, {"input", "hello"}});
  ASSERT_EQ(fb.result_int(), 200) << fb.body();
  EXPECT_EQ(parse(fb.body())["data"][0]["embedding"], l["data"][0]["embedding"]);
}

// A dead route opens its breaker after 5 consecutive failures: later
// requests fail fast with 503 circuit_open (no connect attempt), fallbacks
// skip it, and /api/status and /metrics show it open.
TEST_F(GatewayTest, BreakerOpensAfterRepeatedFailuresAndFailsFast) {
  for (int i = 0; i < 3; ++i) {  // two tries each: 6 failures
    const Res r = chat(chat_body("broken", "hi"));
    EXPECT_EQ(r.result_int(), 502) << r.body();
  }
  const auto tried = requests("broken", "dead", "error");
  EXPECT_EQ(tried, 6u);
  const auto t0 = std::chrono::steady_clock::now();
  expect_openai_error(chat(chat_body("broken", "hi")), 503, "circuit_open");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));
  EXPECT_EQ(requests("broken", "dead", "error"), tried);  // no new attempt
  // "flaky" shares the dead route: it now goes straight to its fallback.
  const Res f = chat(chat_body("flaky", "hello world"));
  ASSERT_EQ(f.result_int(), 200) << f.body();
  EXPECT_EQ(requests("flaky", "dead", "error"), 0u);
  const Res m = get("/metrics");
  EXPECT_EQ(scrape(m.body(), "alou_gateway_breaker_open{provider=\"dead\",model=\"gpt-x\"}"), 1.0) << m.body();
  const Res st = get("/api/status", admin());
  ASSERT_EQ(st.result_int(), 200) << st.body();
  const json status = parse(st.body());
  bool seen_open = false;
  for (const auto& p : status["providers"]) {
    if (p["name"] != "dead") continue;
    for (const auto& r : p["routes"]) seen_open = seen_open || r["breaker"] == "open";
  }
  EXPECT_TRUE(seen_open) << st.body();
}

// ---------------------------------------------------------------- 6: upstream failures

TEST_F(GatewayTest, Upstream400IsNotRetried) {
  const auto errors0 = requests("remote", "up", "error");
  const Res r = chat(chat_body("remote", "/fail 400"));
  expect_openai_error(r, 400, "upstream_bad_request");
  EXPECT_EQ(upstream_.counter->chats.load(), 1);
  EXPECT_EQ(requests("remote", "up", "error") - errors0, 1u);
  EXPECT_EQ(counter("alou_gateway_retries_total", {{"provider", "up"}}), 0u);
}

TEST_F(GatewayTest, Upstream500IsRetriedThen502) {
  const auto errors0 = requests("remote", "up", "error");
  const Res r = chat(chat_body("remote", "/fail 500"));
  expect_openai_error(r, 502, "upstream_error");
  EXPECT_EQ(upstream_.counter->chats.load(), 2);
  EXPECT_EQ(requests("remote", "up", "error") - errors0, 2u);
  EXPECT_EQ(counter("alou_gateway_retries_total", {{"provider", "up"}}), 1u);
  EXPECT_EQ(counter("alou_gateway_upstream_errors_total", {{"provider", "up"}, {"kind", "upstream_error"}}), 2u);
  // The request's whole time is observed once, under its model.
  const Res m = get("/metrics");
  EXPECT_EQ(scrape(m.body(), "alou_gateway_request_seconds_count{model=\"remote\"}"), 1.0) << m.body();
}

TEST_F(GatewayTest, Upstream429IsRetriedThen429) {
  const auto errors0 = requests("remote", "up", "error");
  const Res r = chat(chat_body("remote", "/fail 429"));
  expect_openai_error(r, 429, "upstream_rate_limited");
  EXPECT_EQ(upstream_.counter->chats.load(), 2);
  EXPECT_EQ(requests("remote", "up", "error") - errors0, 2u);
}

// DESIGN.md, Errors: "429 rate limited (with `Retry-After`)".
TEST_F(GatewayTest, Upstream429CarriesRetryAfter) {
  const Res r = chat(chat_body("remote", "/fail 429"));
  ASSERT_EQ(r.result_int(), 429) << r.body();
  EXPECT_FALSE(header(r, "retry-after").empty()) << "a 429 without Retry-After";
}

TEST_F(GatewayTest, StreamUpstream500BeforeFirstByteIsJson502) {
  const Streamed s = chat_stream(chat_body("remote", "/fail 500", true));
  EXPECT_EQ(s.status, 502) << s.body;
  EXPECT_NE(s.content_type.find("application/json"), std::string::npos) << s.content_type;
  const json j = parse(s.body);
  ASSERT_TRUE(j.is_object()) << s.body;
  EXPECT_EQ(j["error"].value("code", ""), "upstream_error") << s.body;
  EXPECT_EQ(upstream_.counter->chats.load(), 2);
}

// ---------------------------------------------------------------- 7: mid-stream failure

void expect_cut_stream(const Streamed& s) {
  ASSERT_EQ(s.status, 200) << s.body;
  ASSERT_EQ(s.data.size(), 3u) << s.body;
  for (std::size_t i = 0; i < 2; ++i) {
    const json c = parse(s.data[i]);
    ASSERT_TRUE(c.is_object()) << s.data[i];
    EXPECT_EQ(c.value("object", ""), "chat.completion.chunk") << s.data[i];
  }
  const json e = parse(s.data[2]);
  ASSERT_TRUE(e.is_object() && e.contains("error") && e["error"].is_object()) << s.data[2];
  EXPECT_TRUE(e["error"]["message"].is_string()) << s.data[2];
  EXPECT_TRUE(e["error"]["type"].is_string()) << s.data[2];
  EXPECT_TRUE(e["error"].contains("param")) << s.data[2];
  ASSERT_TRUE(e["error"]["code"].is_string()) << s.data[2];
  EXPECT_FALSE(e["error"]["code"].get<std::string>().empty()) << s.data[2];
  EXPECT_EQ(s.body.find("[DONE]"), std::string::npos) << s.body;
}

TEST_F(GatewayTest, RemoteCutMidStreamEndsWithErrorEvent) {
  const Streamed s = chat_stream(chat_body("remote", "/cut 2 a b c d", true));
  expect_cut_stream(s);
  EXPECT_EQ(upstream_.counter->chats.load(), 1);  // no retry after the first byte
  EXPECT_TRUE(eventually([&] { return requests("remote", "up", "error") == 1u; }, 1000ms));
}

TEST_F(GatewayTest, InProcessCutMidStreamEndsWithErrorEvent) {
  const Streamed s = chat_stream(chat_body("mock", "/cut 2 a b c d", true));
  expect_cut_stream(s);
}

// ---------------------------------------------------------------- 8: client disconnect

TEST_F(GatewayTest, ClientDisconnectCancelsUpstreamStream) {
  Client c(ep());
  Headers h = admin();
  h.emplace_back("Content-Type", "application/json");
  const json body = chat_body("remote", "/slow 200 a b c d e f g h", true);
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
  EXPECT_EQ(gauge("alou_http_requests_in_flight"), 1.0);
  EXPECT_EQ(upstream_.in_flight(), 1.0);
  c.close();
  const auto t0 = Clock::now();
  // The whole stream would take 10 chunks x 200 ms: both ends must let go
  // well before that.
  EXPECT_TRUE(eventually([&] { return gauge("alou_http_requests_in_flight") == 0.0; }, 1000ms))
      << "the gateway still handles the request after its client left";
  EXPECT_TRUE(eventually([&] { return upstream_.in_flight() == 0.0; }, 1000ms))
      << "the upstream request was not cancelled";
  EXPECT_LT(Clock::now() - t0, 1000ms);
  EXPECT_EQ(upstream_.counter->chats.load(), 1);
  EXPECT_EQ(get("/api/health").result_int(), 200);
}

// Clients that leave before the answer (a load tester stopping, a user's
// stop button) cancel the upstream call: that is not the route failing, so
// the breaker stays closed and the next request is served.
TEST_F(GatewayTest, ClientsLeavingDoNotOpenTheBreaker) {
  for (int i = 0; i < 7; ++i) {
    for (const bool stream : {false, true}) {
      Client c(ep());
      Headers h = admin();
      h.emplace_back("Content-Type", "application/json");
      const json body = chat_body("remote", "/slow 300 a b c", stream);
      ASSERT_FALSE(c.send(make_request(bhttp::verb::post, "/v1/chat/completions", h, body.dump())));
      ASSERT_TRUE(eventually([&] { return upstream_.in_flight() == 1.0; }, 2000ms));
      c.close();
      ASSERT_TRUE(eventually([&] { return gauge("alou_http_requests_in_flight") == 0.0; }, 2000ms));
    }
  }
  const Res m = get("/metrics");
  EXPECT_EQ(scrape(m.body(), "alou_gateway_breaker_open{provider=\"up\",model=\"gpt-x\"}"), 0.0) << m.body();
  EXPECT_EQ(requests("remote", "up", "error"), 0u);
  EXPECT_LE(scrape(m.body(), "alou_gateway_upstream_errors_total{provider=\"up\",kind=\"upstream_unreachable\"}"), 0.0);
  // Each request that left is still timed (when its handler has unwound).
  EXPECT_TRUE(eventually([&] {
    return scrape(get("/metrics").body(), "alou_gateway_request_seconds_count{model=\"remote\"}") == 14.0;
  })) << get("/metrics").body();
  const Res r = chat(chat_body("remote", "hello"));
  EXPECT_EQ(r.result_int(), 200) << r.body();
}

// ---------------------------------------------------------------- 9: errors and models

TEST_F(GatewayTest, InvalidJsonIs400) {
  Headers h = admin();
  h.emplace_back("Content-Type", "application/json");
  const Res r = request(bhttp::verb::post, "/v1/chat/completions", h, "{\"model\": \"mock\", ");
  expect_openai_error(r, 400, "invalid_json");
}

TEST_F(GatewayTest, MissingModelIs400) {
  const json body = {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
  const Res r = chat(body);
  EXPECT_EQ(r.result_int(), 400) << r.body();
  expect_openai_error(r, 400, "missing_model");
}

TEST_F(GatewayTest, UnknownModelIs404) {
  expect_openai_error(chat(chat_body("no-such-model", "hi")), 404, "model_not_found");
}

// OpenAI clients send "stream": null for "not set"; chat() explicitly lets
// null through its validation (gateway.cpp:216), so it must mean false.
TEST_F(GatewayTest, NullStreamMeansNotStreamed) {
  json body = chat_body("mock", "hello world");
  body["stream"] = nullptr;
  const Res r = chat(body);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  expect_completion(parse(r.body()), "echo: hello world", 3, 5);
}

// Bad input is a 400 (DESIGN.md, Errors), never a 500.
TEST_F(GatewayTest, NonBooleanIncludeUsageIs400) {
  json body = chat_body("mock", "hi", true);
  body["stream_options"] = {{"include_usage", "yes"}};
  const Res r = chat(body);
  EXPECT_EQ(r.result_int(), 400) << r.body();
  const json j = parse(r.body());
  EXPECT_TRUE(j.is_object() && j.contains("error") && j["error"].contains("code")) << r.body();
}

TEST_F(GatewayTest, NonBooleanStreamIs400) {
  json body = chat_body("mock", "hi");
  body["stream"] = "yes";
  expect_openai_error(chat(body), 400, "invalid_stream");
}

TEST_F(GatewayTest, ModelWithoutEnabledProviderIs503) {
  expect_openai_error(chat(chat_body("ghost", "hi")), 503, "no_provider");
}

TEST_F(GatewayTest, MemberKeyLimitedToItsModels) {
  const std::string key = member_key({"mock"});
  ASSERT_FALSE(key.empty());
  expect_openai_error(chat(chat_body("remote", "hi"), bearer(key)), 403, "model_not_allowed");
  EXPECT_EQ(upstream_.counter->chats.load(), 0);
  const Res ok = chat(chat_body("mock", "hello world"), bearer(key));
  ASSERT_EQ(ok.result_int(), 200) << ok.body();
  expect_completion(parse(ok.body()), "echo: hello world", 3, 5);

  const Res list = get("/v1/models", bearer(key));
  ASSERT_EQ(list.result_int(), 200) << list.body();
  const json j = parse(list.body());
  EXPECT_EQ(j.value("object", ""), "list") << list.body();
  ASSERT_TRUE(j["data"].is_array() && j["data"].size() == 1u) << list.body();
  EXPECT_EQ(j["data"][0].value("id", ""), "mock");
  expect_openai_error(get("/v1/models/remote", bearer(key)), 404, "model_not_found");
  EXPECT_EQ(get("/v1/models/mock", bearer(key)).result_int(), 200);
}

TEST_F(GatewayTest, AdminListsEnabledModels) {
  const Res list = get("/v1/models", admin());
  ASSERT_EQ(list.result_int(), 200) << list.body();
  const json j = parse(list.body());
  ASSERT_TRUE(j.is_object()) << list.body();
  EXPECT_EQ(j.value("object", ""), "list");
  std::vector<std::string> ids;
  for (const auto& m : j["data"]) {
    EXPECT_EQ(m.value("object", ""), "model") << m;
    EXPECT_TRUE(m.contains("created") && m["created"].is_number_integer()) << m;
    EXPECT_TRUE(m.contains("owned_by") && m["owned_by"].is_string()) << m;
    ids.push_back(m.value("id", ""));
  }
  // "ghost": its only provider is disabled and it has no fallback.
  EXPECT_EQ(ids, (std::vector<std::string>{"broken", "flaky", "mock", "remote"})) << list.body();

  const Res one = get("/v1/models/remote", admin());
  ASSERT_EQ(one.result_int(), 200) << one.body();
  const json m = parse(one.body());
  EXPECT_EQ(m.value("id", ""), "remote");
  EXPECT_EQ(m.value("object", ""), "model");
  expect_openai_error(get("/v1/models/ghost", admin()), 404, "model_not_found");
  expect_openai_error(get("/v1/models/no-such-model", admin()), 404, "model_not_found");
}

TEST_F(GatewayTest, StatusNamesDisabledProvider) {
  const Res r = get("/api/status", admin());
  ASSERT_EQ(r.result_int(), 200) << r.body();
  const json j = parse(r.body());
  ASSERT_TRUE(j.is_object() && j["providers"].is_array()) << r.body();
  std::map<std::string, json> by_name;
  for (const auto& p : j["providers"]) by_name[p.value("name", "")] = p;
  ASSERT_EQ(by_name.size(), 4u) << r.body();
  ASSERT_TRUE(by_name.count("keyed")) << r.body();
  const json& keyed = by_name["keyed"];
  EXPECT_EQ(keyed.value("enabled", true), false) << keyed;
  EXPECT_NE(keyed.value("reason", "").find(kUnsetKeyEnv), std::string::npos) << keyed;
  for (const char* name : {"mock", "up", "dead"}) {
    EXPECT_EQ(by_name[name].value("enabled", false), true) << by_name[name];
  }
  EXPECT_EQ(by_name["up"].value("kind", ""), "openai");
  // Members may not read it.
  EXPECT_EQ(get("/api/status", bearer(member_key({}))).result_int(), 403);
}

// ---------------------------------------------------------------- 10: auth

TEST_F(GatewayTest, NoAuthIs401InOpenAiShape) {
  Headers h{{"Content-Type", "application/json"}};
  const Res r = request(bhttp::verb::post, "/v1/chat/completions", h, chat_body("mock", "hi").dump());
  ASSERT_EQ(r.result_int(), 401) << r.body();
  const json j = parse(r.body());
  ASSERT_TRUE(j.is_object() && j.contains("error")) << r.body();
  EXPECT_EQ(j.size(), 1u) << r.body();
  EXPECT_EQ(j["error"].size(), 4u) << r.body();
  EXPECT_TRUE(j["error"]["message"].is_string()) << r.body();
  EXPECT_TRUE(j["error"]["type"].is_string()) << r.body();
  EXPECT_TRUE(j["error"]["param"].is_null()) << r.body();
  EXPECT_TRUE(j["error"]["code"].is_string()) << r.body();
  EXPECT_EQ(get("/v1/models").result_int(), 401);
  EXPECT_EQ(request(bhttp::verb::post, "/v1/chat/completions", bearer("sk-alou-wrong"), "{}").result_int(), 401);
}

}  // namespace
}  // namespace alou::itest

// ---------------------------------------------------------------- Anthropic Messages (/v1/messages)

namespace alou::itest {
namespace {

json anthropic_body(std::string_view model, std::string_view content) {
  return {{"model", model}, {"max_tokens", 64}, {"messages", json::array({{{"role", "user"}, {"content", content}}})}};
}

// {"type":"error","error":{"type","message"}}, exactly.
void expect_anthropic_error(const Res& r, int status, std::string_view type) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  const json j = parse(r.body());
  ASSERT_TRUE(j.is_object()) << r.body();
  EXPECT_EQ(j.size(), 2u) << r.body();
  EXPECT_EQ(j.value("type", ""), "error") << r.body();
  ASSERT_TRUE(j.contains("error") && j["error"].is_object()) << r.body();
  EXPECT_EQ(j["error"].size(), 2u) << r.body();
  EXPECT_EQ(j["error"].value("type", ""), type) << r.body();
  EXPECT_FALSE(j["error"].value("message", "").empty()) << r.body();
}

TEST_F(GatewayTest, MessagesEchoInProcessAndRemote) {
  for (const char* model : {"mock", "remote"}) {
    const Res r = messages(anthropic_body(model, "hello world"));
    ASSERT_EQ(r.result_int(), 200) << model << ": " << r.body();
    const json j = parse(r.body());
    ASSERT_TRUE(j.is_object()) << r.body();
    EXPECT_EQ(j.value("type", ""), "message") << r.body();
    EXPECT_EQ(j.value("role", ""), "assistant") << r.body();
    EXPECT_EQ(j.value("model", ""), model) << r.body();
    EXPECT_EQ(j.value("id", "").rfind("msg_", 0), 0u) << r.body();
    EXPECT_EQ(j["content"], json::array({{{"type", "text"}, {"text", "echo: hello world"}}})) << r.body();
    EXPECT_EQ(j.value("stop_reason", ""), "end_turn") << r.body();
    EXPECT_TRUE(j.contains("stop_sequence") && j["stop_sequence"].is_null()) << r.body();
    EXPECT_EQ(j["usage"], json({{"input_tokens", 3}, {"output_tokens", 5}})) << r.body();
  }
  EXPECT_EQ(upstream_.counter->chats.load(), 1);
  EXPECT_EQ(requests("remote", "up", "ok"), 1u);
}

TEST_F(GatewayTest, MessagesSystemPromptAndMultiTurn) {
  json body = {{"model", "remote"},
               {"max_tokens", 100},
               {"system", json::array({{{"type", "text"}, {"text", "be brief"}}})},
               {"temperature", 0.5},
               {"stop_sequences", json::array({"END"})},
               {"messages", json::array({{{"role", "user"}, {"content", "first"}},
                                         {{"role", "assistant"}, {"content", json::array({{{"type", "text"}, {"text", "echo: first"}}})}},
                                         {{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "second"}}})}}})}};
  const Res r = messages(body);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  const json j = parse(r.body());
  EXPECT_EQ(j["content"][0].value("text", ""), "echo: second") << r.body();
  // prompt: "be brief" (8) + "first" (5) + "echo: first" (11) + "second" (6) = 30 chars -> 8 tokens.
  EXPECT_EQ(j["usage"].value("input_tokens", -1), 8) << r.body();
}

TEST_F(GatewayTest, MessagesToolUseRoundTrip) {
  json body = anthropic_body("remote", "/tool get_weather {\"city\":\"Paris\"}");
  body["tools"] = json::array({{{"name", "get_weather"},
                                {"description", "Current weather of a city"},
                                {"input_schema", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}}}}});
  body["tool_choice"] = {{"type", "auto"}};
  const Res r = messages(body);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  const json j = parse(r.body());
  EXPECT_EQ(j.value("stop_reason", ""), "tool_use") << r.body();
  ASSERT_TRUE(j["content"].is_array() && j["content"].size() == 1u) << r.body();
  const json& block = j["content"][0];
  EXPECT_EQ(block.value("type", ""), "tool_use") << r.body();
  EXPECT_EQ(block.value("name", ""), "get_weather") << r.body();
  EXPECT_EQ(block["input"], json({{"city", "Paris"}})) << r.body();
  ASSERT_FALSE(block.value("id", "").empty()) << r.body();

  json second = body;
  second["messages"].push_back({{"role", "assistant"}, {"content", j["content"]}});
  second["messages"].push_back(
      {{"role", "user"},
       {"content", json::array({{{"type", "tool_result"}, {"tool_use_id", block["id"]}, {"content", "18C, clear"}}})}});
  const Res r2 = messages(second);
  ASSERT_EQ(r2.result_int(), 200) << r2.body();
  const json j2 = parse(r2.body());
  EXPECT_EQ(j2["content"], json::array({{{"type", "text"}, {"text", "tool get_weather returned: 18C, clear"}}}))
      << r2.body();
  EXPECT_EQ(j2.value("stop_reason", ""), "end_turn") << r2.body();
}

TEST_F(GatewayTest, MessagesStreamEvents) {
  for (const char* model : {"remote", "mock"}) {
    json body = anthropic_body(model, "hi there");
    body["stream"] = true;
    int status = 0;
    const auto events = messages_stream(body, &status);
    ASSERT_EQ(status, 200);
    ASSERT_GE(events.size(), 6u);
    std::vector<std::string> names;
    std::string text;
    for (const auto& [name, data] : events) {
      if (names.empty() || names.back() != name) names.push_back(name);
      const json j = parse(data);
      ASSERT_TRUE(j.is_object()) << data;
      EXPECT_EQ(j.value("type", ""), name) << data;
      if (name == "content_block_delta") {
        EXPECT_EQ(j["delta"].value("type", ""), "text_delta") << data;
        text += j["delta"].value("text", "");
      }
    }
    EXPECT_EQ(names, (std::vector<std::string>{"message_start", "content_block_start", "content_block_delta",
                                               "content_block_stop", "message_delta", "message_stop"}))
        << model;
    EXPECT_EQ(text, "echo: hi there") << model;
    const json start = parse(events.front().second);
    EXPECT_EQ(start["message"].value("model", ""), model);
    EXPECT_EQ(start["message"]["content"], json::array());
    const json delta = parse(events[events.size() - 2].second);
    EXPECT_EQ(delta["delta"].value("stop_reason", ""), "end_turn");
    // "echo: hi there" = 14 chars -> 4 tokens.
    EXPECT_EQ(delta["usage"].value("output_tokens", -1), 4);
  }
}

TEST_F(GatewayTest, MessagesStreamToolUse) {
  json body = anthropic_body("remote", "/tool get_weather {\"city\":\"Paris\"}");
  body["stream"] = true;
  const auto events = messages_stream(body);
  ASSERT_FALSE(events.empty());
  std::string partial;
  bool started = false;
  for (const auto& [name, data] : events) {
    const json j = parse(data);
    if (name == "content_block_start") {
      EXPECT_EQ(j["content_block"].value("type", ""), "tool_use") << data;
      EXPECT_EQ(j["content_block"].value("name", ""), "get_weather") << data;
      started = true;
    }
    if (name == "content_block_delta") partial += j["delta"].value("partial_json", "");
    if (name == "message_delta") {
      EXPECT_EQ(j["delta"].value("stop_reason", ""), "tool_use") << data;
    }
  }
  EXPECT_TRUE(started);
  EXPECT_EQ(parse(partial), json({{"city", "Paris"}})) << partial;
  EXPECT_EQ(events.back().first, "message_stop");
}

TEST_F(GatewayTest, MessagesStreamMidStreamFailureIsAnErrorEvent) {
  json body = anthropic_body("remote", "/cut 2 one two three four five six");
  body["stream"] = true;
  const auto events = messages_stream(body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().first, "message_start");
  EXPECT_EQ(events.back().first, "error");
  const json e = parse(events.back().second);
  EXPECT_EQ(e.value("type", ""), "error") << events.back().second;
  EXPECT_EQ(e["error"].value("type", ""), "api_error") << events.back().second;
}

TEST_F(GatewayTest, MessagesErrorsInAnthropicShape) {
  json no_max = anthropic_body("mock", "hi");
  no_max.erase("max_tokens");
  expect_anthropic_error(messages(no_max), 400, "invalid_request_error");
  expect_anthropic_error(messages(anthropic_body("nope", "hi")), 404, "not_found_error");
  expect_anthropic_error(messages(anthropic_body("mock", "hi"), "wrong-key-0123456789"), 401, "authentication_error");
  Headers h{{"x-api-key", std::string(kAdminKey)}, {"Content-Type", "application/json"}};
  expect_anthropic_error(request(bhttp::verb::post, "/v1/messages", h, "{not json"), 400, "invalid_request_error");
}

}  // namespace
}  // namespace alou::itest
