// Per-key tokens-per-minute and max-concurrency limits through the real
// gateway (in-process mock provider), on the embedded KV and on Redis
// (ALOU_TEST_REDIS_URL).
#include "harness.hpp"

#include "alou/auth/keys.hpp"
#include "alou/storage/kv.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>

namespace alou::itest {
namespace {

using json = nlohmann::json;

void expect_error(const Res& r, int status, std::string_view code) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  const json b = json::parse(r.body(), nullptr, false);
  ASSERT_TRUE(b.is_object() && b.contains("error")) << r.body();
  EXPECT_EQ(b["error"]["code"], code) << r.body();
}

class UsageLimits : public AppTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    redis_url_ = redis_url_for(GetParam());
    if (IsSkipped() || HasFailure()) return;
    AppTest::SetUp();
  }

  void configure(Settings& s) override {
    s.storage.redis_url = redis_url_;
    s.providers = {ProviderSettings{.name = "mock", .kind = "mock", .base_url = {}, .api_key_env = {}, .extra = {}}};
    ModelSettings m;
    m.name = "mock";
    m.routes = {RouteSettings{.provider = "mock", .model = "mock", .weight = 1}};
    s.models = {m};
  }

  struct Created {
    std::string id;
    std::string secret;
  };
  Created key(std::optional<std::int64_t> tpm, std::optional<std::int64_t> concurrency) {
    auth::NewKey nk;
    nk.name = unique_name("limits");
    nk.tpm = tpm;
    nk.max_concurrency = concurrency;
    auto created = app_->keys().create(nk);
    if (!created) {
      ADD_FAILURE() << created.error().message;
      return {};
    }
    return {created->first.id, created->second};
  }

  static std::string chat_body(std::string_view content, bool stream = false) {
    json b = {{"model", "mock"}, {"messages", json::array({{{"role", "user"}, {"content", content}}})}};
    if (stream) b["stream"] = true;
    return b.dump();
  }
  static Headers headers(const std::string& secret) {
    Headers h = bearer(secret);
    h.emplace_back("Content-Type", "application/json");
    return h;
  }
  Res chat(const std::string& secret, std::string_view content) {
    return request(bhttp::verb::post, "/v1/chat/completions", headers(secret), chat_body(content));
  }

  std::optional<std::string> kv_get(std::string key) {
    auto f = net::co_spawn(ctx_, app_->kv().get(std::move(key)), net::use_future);
    ctx_.run();
    ctx_.restart();
    auto r = f.get();
    if (!r) return std::nullopt;
    return *r;
  }

  net::io_context ctx_;
  std::string redis_url_;
};

TEST_P(UsageLimits, TpmBucketIsDebitedAfterTheResponseThenRefuses) {
  const auto k = key(20, std::nullopt);
  // A full bucket: the first request passes whatever it will cost.
  const Res first = chat(k.secret, "one two three four five six seven eight nine ten eleven twelve thirteen");
  ASSERT_EQ(first.result_int(), 200) << first.body();
  EXPECT_EQ(header(first, "x-ratelimit-limit-tokens"), "20");
  EXPECT_EQ(header(first, "x-ratelimit-remaining-tokens"), "20");
  EXPECT_FALSE(header(first, "x-ratelimit-reset-tokens").empty());
  const json usage = json::parse(first.body())["usage"];
  const std::int64_t used = usage["prompt_tokens"].get<std::int64_t>() + usage["completion_tokens"].get<std::int64_t>();
  ASSERT_GT(used, 20) << usage;

  // Its tokens were debited (settle is awaited before the response): the
  // bucket owes used - 20 tokens, refilled at 20/60 per second.
  const Res second = chat(k.secret, "hi");
  expect_error(second, 429, "tokens_rate_limit_exceeded");
  EXPECT_EQ(header(second, "x-ratelimit-limit-tokens"), "20");
  EXPECT_EQ(header(second, "x-ratelimit-remaining-tokens"), "0");
  const std::string reset = header(second, "x-ratelimit-reset-tokens");
  ASSERT_FALSE(reset.empty());
  EXPECT_EQ(reset.back(), 's');
  EXPECT_GT(std::stod(reset), 60.0);  // more than a full minute of refill: there is a debt
  const std::string retry = header(second, "retry-after");
  ASSERT_FALSE(retry.empty());
  const double debt_s = static_cast<double>(used - 20) * 3.0;
  EXPECT_GE(std::stoi(retry), static_cast<int>(debt_s) - 2);
  EXPECT_LE(std::stoi(retry), static_cast<int>(debt_s) + 2);
  EXPECT_EQ(counter("alou_ratelimit_rejected_total", {{"limit", "tpm"}}), 1u);
  EXPECT_EQ(counter("alou_ratelimit_kv_errors_total"), 0u);

  // Another key, and keys without a limit, are not affected.
  const auto other = key(20, std::nullopt);
  EXPECT_EQ(chat(other.secret, "hi").result_int(), 200);
  const Res admin = chat(std::string(kAdminKey), "hi");
  EXPECT_EQ(admin.result_int(), 200);
  EXPECT_TRUE(header(admin, "x-ratelimit-limit-tokens").empty());
}

TEST_P(UsageLimits, TpmStreamIsDebitedToo) {
  const auto k = key(10, std::nullopt);
  Client c(ep());
  ASSERT_FALSE(c.send(make_request(bhttp::verb::post, "/v1/chat/completions", headers(k.secret),
                                   chat_body("alpha beta gamma delta epsilon zeta eta theta iota kappa", true))));
  ResParser p;
  p.body_limit(boost::none);
  ASSERT_FALSE(c.read_header(p));
  EXPECT_EQ(p.get().result_int(), 200);
  EXPECT_EQ(std::string(p.get()["x-ratelimit-limit-tokens"]), "10");
  ASSERT_FALSE(c.read_rest(p));
  EXPECT_NE(p.get().body().find("[DONE]"), std::string::npos);
  expect_error(chat(k.secret, "hi"), 429, "tokens_rate_limit_exceeded");
}

TEST_P(UsageLimits, ConcurrencyLimitRefusesWhileSlotsAreTakenAndFreesThemAfterStreams) {
  const auto k = key(std::nullopt, 1);
  // A slow stream holds the only slot (5 chunks, 200 ms apart).
  Client streaming(ep());
  ASSERT_FALSE(streaming.send(make_request(bhttp::verb::post, "/v1/chat/completions", headers(k.secret),
                                           chat_body("/slow 200 a b c d e", true))));
  ResParser p;
  p.body_limit(boost::none);
  ASSERT_FALSE(streaming.read_header(p));
  ASSERT_EQ(p.get().result_int(), 200);

  const Res refused = chat(k.secret, "hi");
  expect_error(refused, 429, "concurrency_limit_exceeded");
  EXPECT_EQ(header(refused, "retry-after"), "1");
  EXPECT_EQ(counter("alou_ratelimit_rejected_total", {{"limit", "concurrency"}}), 1u);
  // The refusal took no slot: once the stream ends, a request passes.
  ASSERT_FALSE(streaming.read_rest(p));
  EXPECT_TRUE(eventually([&] { return chat(k.secret, "hi").result_int() == 200; }));
  // And the count goes back to nothing (no key left behind on Redis; the
  // embedded KV keeps counts outside its map).
  if (GetParam() == "redis") {
    EXPECT_TRUE(eventually([&] { return !kv_get("rl:conc:" + k.id).has_value(); }));
  }
}

TEST_P(UsageLimits, ConcurrencySlotIsReleasedWhenTheClientGoesAway) {
  const auto k = key(std::nullopt, 1);
  {
    Client streaming(ep());
    ASSERT_FALSE(streaming.send(make_request(bhttp::verb::post, "/v1/chat/completions", headers(k.secret),
                                             chat_body("/slow 1000 a b c d e f g h", true))));
    ResParser p;
    p.body_limit(boost::none);
    ASSERT_FALSE(streaming.read_header(p));
    ASSERT_EQ(p.get().result_int(), 200);
    expect_error(chat(k.secret, "hi"), 429, "concurrency_limit_exceeded");
    streaming.close();  // the client leaves mid-stream
  }
  // Well before the stream would have ended (8 s), the slot is back.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually([&] { return chat(k.secret, "hi").result_int() == 200; }, 3000ms));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4000ms);
}

TEST_P(UsageLimits, ConcurrencySlotIsReleasedAfterAnErrorAnswer) {
  const auto k = key(std::nullopt, 1);
  // A 400 (no model) and a 404 still give their slot back.
  for (int i = 0; i < 3; ++i) {
    const Res bad = request(bhttp::verb::post, "/v1/chat/completions", headers(k.secret), "{}");
    EXPECT_EQ(bad.result_int(), 400) << bad.body();
    EXPECT_TRUE(eventually([&] { return chat(k.secret, "hi").result_int() == 200; })) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Kv, UsageLimits, ::testing::Values(std::string("embedded"), std::string("redis")),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace alou::itest
