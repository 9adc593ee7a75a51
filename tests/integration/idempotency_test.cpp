// Idempotency-Key on the model endpoints, through the real app (in-process
// mock provider, real SQLite, the embedded KV and Redis): a replay returns
// the first answer and is charged nothing; misuse gets 400/409/422 and
// writes nothing.
#include "harness.hpp"

#include "alou/auth/keys.hpp"
#include "alou/storage/database.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <thread>

namespace alou::itest {
namespace {

using json = nlohmann::json;

json chat_body(std::string_view content, bool stream = false) {
  json body = {{"model", "paid"}, {"messages", json::array({{{"role", "user"}, {"content", content}}})}};
  if (stream) body["stream"] = true;
  return body;
}

class Idempotency : public AppTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    redis_url_ = redis_url_for(GetParam());
    if (IsSkipped() || HasFailure()) return;
    AppTest::SetUp();
    if (!booted()) return;
    auth::NewKey nk;
    nk.name = unique_name("idem");
    auto created = app_->keys().create(nk);
    ASSERT_TRUE(created) << created.error().message;
    key_id_ = created->first.id;
    secret_ = created->second;
    const Res c = post("/api/admin/credit", {{"account", key_id_}, {"amount", "1"}}, kAdminKey);
    ASSERT_EQ(c.result_int(), 201) << c.body();
  }

  void configure(Settings& s) override {
    s.storage.redis_url = redis_url_;
    s.providers = {ProviderSettings{.name = "mock", .kind = "mock", .base_url = {}, .api_key_env = {}, .extra = {}}};
    ModelSettings m;
    m.name = "paid";
    m.routes = {RouteSettings{.provider = "mock", .model = "mock", .weight = 1}};
    m.price.input_per_mtok = 2;
    m.price.output_per_mtok = 4;
    s.models = {m};
    s.billing.default_max_output_tokens = 100;
  }

  Res post(std::string_view target, const json& body, std::string_view secret, std::string_view idem = {}) {
    Headers h = bearer(secret);
    h.emplace_back("Content-Type", "application/json");
    if (!idem.empty()) h.emplace_back("Idempotency-Key", std::string(idem));
    return request(bhttp::verb::post, target, h, body.dump());
  }

  // Reads the tables as the API does: once every settlement already
  // delivered is in them (the balance endpoint waits for the settlement
  // journal to be applied, Ledger::sync).
  std::int64_t count(const std::string& sql) {
    const Res synced = get("/api/billing/balance", bearer(kAdminKey));
    EXPECT_EQ(synced.result_int(), 200) << synced.body();
    return app_->db().run_sync([&](SQLite::Database& c) { return c.execAndGet(sql).getInt64(); });
  }
  std::int64_t charges() { return count("SELECT COUNT(*) FROM usage_records"); }
  std::int64_t balance() {
    const Res r = get("/api/billing/balance", bearer(secret_));
    EXPECT_EQ(r.result_int(), 200) << r.body();
    return json::parse(r.body())["balance_nanos"].get<std::int64_t>();
  }

  // The whole streamed response of one request with an Idempotency-Key.
  Res stream_with_key(std::string_view target, Headers h, const json& body, const std::string& idem) {
    Client c(ep());
    h.emplace_back("Content-Type", "application/json");
    h.emplace_back("Idempotency-Key", idem);
    EXPECT_FALSE(c.send(make_request(bhttp::verb::post, target, h, body.dump())));
    ResParser p;
    p.body_limit(boost::none);
    EXPECT_FALSE(c.read_header(p));
    EXPECT_FALSE(c.read_rest(p));
    return p.release();
  }
  Res stream_chat(const json& body, const std::string& idem) {
    return stream_with_key("/v1/chat/completions", bearer(secret_), body, idem);
  }

  // Each test run uses its own keys (Redis is shared between runs).
  std::string fresh(std::string_view what) { return unique_name(what); }

  std::string redis_url_;
  std::string key_id_;
  std::string secret_;
};

void expect_error(const Res& r, int status, std::string_view code) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  const json j = json::parse(r.body(), nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.body();
  EXPECT_EQ(j["error"]["code"], code) << r.body();
}

TEST_P(Idempotency, AReplayReturnsTheFirstAnswerAndIsChargedOnce) {
  const std::string idem = fresh("k");
  const Res first = post("/v1/chat/completions", chat_body("hello there"), secret_, idem);
  ASSERT_EQ(first.result_int(), 200) << first.body();
  EXPECT_EQ(header(first, "Idempotent-Replayed"), "");
  const std::int64_t after_first = balance();
  ASSERT_EQ(charges(), 1);

  const Res again = post("/v1/chat/completions", chat_body("hello there"), secret_, idem);
  ASSERT_EQ(again.result_int(), 200) << again.body();
  EXPECT_EQ(header(again, "Idempotent-Replayed"), "true");
  EXPECT_EQ(again.body(), first.body());
  EXPECT_EQ(header(again, "Content-Type"), "application/json");
  EXPECT_EQ(charges(), 1);
  EXPECT_EQ(balance(), after_first);

  // Without the key, the same body is a new request, charged again.
  ASSERT_EQ(post("/v1/chat/completions", chat_body("hello there"), secret_).result_int(), 200);
  EXPECT_EQ(charges(), 2);
}

TEST_P(Idempotency, AKeyReusedForAnotherBodyIs422AndWritesNothing) {
  const std::string idem = fresh("k");
  ASSERT_EQ(post("/v1/chat/completions", chat_body("one"), secret_, idem).result_int(), 200);
  const std::int64_t before = balance();
  expect_error(post("/v1/chat/completions", chat_body("two"), secret_, idem), 422, "idempotency_key_reused");
  // The same body on another endpoint is another request too.
  const json anthropic = {{"model", "paid"},
                          {"max_tokens", 10},
                          {"messages", json::array({{{"role", "user"}, {"content", "one"}}})}};
  Headers h = {{"x-api-key", secret_}, {"anthropic-version", "2023-06-01"}, {"Content-Type", "application/json"},
               {"Idempotency-Key", idem}};
  const Res a = request(bhttp::verb::post, "/v1/messages", h, anthropic.dump());
  EXPECT_EQ(a.result_int(), 422) << a.body();
  const json aj = json::parse(a.body(), nullptr, false);
  EXPECT_EQ(aj["type"], "error") << a.body();  // the Anthropic error shape
  EXPECT_EQ(charges(), 1);
  EXPECT_EQ(balance(), before);
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_holds"), 0);
}

TEST_P(Idempotency, AnInvalidKeyIs400AndNothingIsSent) {
  expect_error(post("/v1/chat/completions", chat_body("x"), secret_, std::string(256, 'a')), 400,
               "invalid_idempotency_key");
  expect_error(post("/v1/chat/completions", chat_body("x"), secret_, "has space"), 400, "invalid_idempotency_key");
  EXPECT_EQ(charges(), 0);
  EXPECT_EQ(count("SELECT COUNT(*) FROM events"), 0);
}

TEST_P(Idempotency, ASecondRequestWhileTheFirstRunsIs409) {
  const std::string idem = fresh("k");
  const json body = chat_body("/slow 300 a b c", true);
  std::thread slow([&] {
    Client c(ep());
    Headers h = bearer(secret_);
    h.emplace_back("Content-Type", "application/json");
    h.emplace_back("Idempotency-Key", idem);
    ASSERT_FALSE(c.send(make_request(bhttp::verb::post, "/v1/chat/completions", h, body.dump())));
    ResParser p;
    p.body_limit(boost::none);
    ASSERT_FALSE(c.read_header(p));
    ASSERT_FALSE(c.read_rest(p));
  });
  // Wait until the first request holds the key (its hold is placed after the claim).
  ASSERT_TRUE(eventually([&] { return count("SELECT COUNT(*) FROM ledger_holds") == 1; }, 3000ms));
  const Res busy = post("/v1/chat/completions", body, secret_, idem);
  expect_error(busy, 409, "idempotency_in_progress");
  EXPECT_EQ(header(busy, "Retry-After"), "1");
  slow.join();
  EXPECT_EQ(charges(), 1);
}

TEST_P(Idempotency, AFailedRequestFreesItsKeyAndChargesNothing) {
  const std::string idem = fresh("k");
  const json body = chat_body("/fail 500");
  expect_error(post("/v1/chat/completions", body, secret_, idem), 502, "upstream_error");
  // The key is free again: the retry reaches the upstream (and fails the same way), not 409/422.
  expect_error(post("/v1/chat/completions", body, secret_, idem), 502, "upstream_error");
  EXPECT_EQ(charges(), 0);
  EXPECT_EQ(balance(), 1'000'000'000);
  // 402 before the upstream: nothing charged, key free.
  auth::NewKey nk;
  nk.name = unique_name("broke");
  auto broke = app_->keys().create(nk);
  ASSERT_TRUE(broke);
  expect_error(post("/v1/chat/completions", chat_body("hi"), broke->second, idem), 402, "insufficient_balance");
  ASSERT_EQ(post("/api/admin/credit", {{"account", broke->first.id}, {"amount", "1"}}, kAdminKey).result_int(), 201);
  EXPECT_EQ(post("/v1/chat/completions", chat_body("hi"), broke->second, idem).result_int(), 200);
}

TEST_P(Idempotency, KeysAreScopedToTheCaller) {
  const std::string idem = fresh("k");
  ASSERT_EQ(post("/v1/chat/completions", chat_body("mine"), secret_, idem).result_int(), 200);
  // Another key may use the same Idempotency-Key for another body: no 422, no replay of someone else's answer.
  const Res other = post("/v1/chat/completions", chat_body("theirs"), kAdminKey, idem);
  EXPECT_EQ(other.result_int(), 200) << other.body();
  EXPECT_EQ(header(other, "Idempotent-Replayed"), "");
}

TEST_P(Idempotency, AStreamIsReplayedAsItWasSent) {
  const std::string idem = fresh("k");
  const json body = chat_body("one two three", true);
  auto stream = [&]() { return stream_chat(body, idem); };
  const Res first = stream();
  ASSERT_EQ(first.result_int(), 200);
  ASSERT_NE(first.body().find("data: [DONE]"), std::string::npos) << first.body();
  const Res again = stream();
  ASSERT_EQ(again.result_int(), 200);
  EXPECT_EQ(header(again, "Idempotent-Replayed"), "true");
  EXPECT_EQ(header(again, "Content-Type"), "text/event-stream");
  EXPECT_EQ(again.body(), first.body());
  EXPECT_EQ(charges(), 1);
}

TEST_P(Idempotency, AnAnthropicStreamIsReplayedToo) {
  const std::string idem = fresh("k");
  const json body = {{"model", "paid"},
                     {"max_tokens", 50},
                     {"stream", true},
                     {"messages", json::array({{{"role", "user"}, {"content", "four five six"}}})}};
  auto send = [&]() {
    return stream_with_key("/v1/messages", {{"x-api-key", secret_}, {"anthropic-version", "2023-06-01"}}, body, idem);
  };
  const Res first = send();
  ASSERT_EQ(first.result_int(), 200);
  ASSERT_NE(first.body().find("event: message_stop"), std::string::npos) << first.body();
  const Res again = send();
  EXPECT_EQ(header(again, "Idempotent-Replayed"), "true");
  EXPECT_EQ(again.body(), first.body());
  EXPECT_EQ(charges(), 1);
}

TEST_P(Idempotency, ACutStreamIsKeptAsDeliveredAndNotChargedAgain) {
  const std::string idem = fresh("k");
  const json body = chat_body("/cut 2 a b c d e f", true);
  auto send = [&]() { return stream_chat(body, idem); };
  const Res first = send();
  ASSERT_NE(first.body().find("upstream_disconnected"), std::string::npos) << first.body();
  ASSERT_EQ(charges(), 1);
  // Kept in the background once the stream ended.
  Res again;
  ASSERT_TRUE(eventually([&] {
    again = send();
    return header(again, "Idempotent-Replayed") == "true";
  }, 3000ms)) << again.body();
  EXPECT_EQ(again.body(), first.body());
  EXPECT_EQ(charges(), 1);
}

TEST_P(Idempotency, EmbeddingsAreReplayedToo) {
  const std::string idem = fresh("k");
  const json body = {{"model", "paid"}, {"input", "some text"}};
  const Res first = post("/v1/embeddings", body, secret_, idem);
  ASSERT_EQ(first.result_int(), 200) << first.body();
  const Res again = post("/v1/embeddings", body, secret_, idem);
  EXPECT_EQ(header(again, "Idempotent-Replayed"), "true");
  EXPECT_EQ(again.body(), first.body());
  EXPECT_EQ(charges(), 1);
}

INSTANTIATE_TEST_SUITE_P(Kv, Idempotency, ::testing::Values(std::string("embedded"), std::string("redis")),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace alou::itest

namespace alou::itest {
namespace {

// The KV does not answer (Redis configured, nothing listening): a request
// with an Idempotency-Key is refused with 503 rather than sent unprotected,
// and nothing is charged or sent upstream; without the header it is served.
class IdempotencyKvDown : public AppTest {
 protected:
  void configure(Settings& s) override {
    s.storage.redis_url = "redis://127.0.0.1:1";
    s.providers = {ProviderSettings{.name = "mock", .kind = "mock", .base_url = {}, .api_key_env = {}, .extra = {}}};
    ModelSettings m;
    m.name = "mock";
    m.routes = {RouteSettings{.provider = "mock", .model = "mock", .weight = 1}};
    s.models = {m};
  }
};

TEST_F(IdempotencyKvDown, AKeyedRequestIs503AndNothingIsWritten) {
  const json body = {{"model", "mock"}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
  Headers h = bearer(kAdminKey);
  h.emplace_back("Content-Type", "application/json");
  h.emplace_back("Idempotency-Key", "k-1");
  const Res r = request(bhttp::verb::post, "/v1/chat/completions", h, body.dump());
  EXPECT_EQ(r.result_int(), 503) << r.body();
  const json j = json::parse(r.body(), nullptr, false);
  EXPECT_EQ(j["error"]["code"], "idempotency_unavailable") << r.body();
  const auto rows = [&](const char* sql) {
    return app_->db().run_sync([&](SQLite::Database& c) { return c.execAndGet(sql).getInt64(); });
  };
  EXPECT_EQ(rows("SELECT COUNT(*) FROM usage_records"), 0);
  EXPECT_EQ(rows("SELECT COUNT(*) FROM events"), 0);
  EXPECT_EQ(counter("alou_gateway_requests_total", {{"model", "mock"}, {"provider", "mock"}, {"outcome", "ok"}}), 0u);
  // Without the header the same request is served.
  h.pop_back();
  EXPECT_EQ(request(bhttp::verb::post, "/v1/chat/completions", h, body.dump()).result_int(), 200);
}

}  // namespace
}  // namespace alou::itest
