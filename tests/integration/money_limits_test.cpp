// Money and limits that hold on every path: the hold is a real upper bound
// (the gateway sends the upstream an output cap the hold covers), key
// budgets, fallbacks priced and permitted per model, and rate limits that
// stay in force, per instance, while the KV is down.
#include "harness.hpp"
#include "mock_upstream.hpp"

#include "alou/auth/keys.hpp"
#include "alou/http/exchange.hpp"
#include "alou/storage/database.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <nlohmann/json.hpp>

#include <mutex>
#include <thread>

namespace alou::itest {
namespace {

using json = nlohmann::json;

// $2 / $4 per million tokens: 2,000 and 4,000 nanos per token.
constexpr std::int64_t kIn = 2000;
constexpr std::int64_t kOut = 4000;

json chat_body(std::string_view model, std::string_view content, bool stream = false) {
  json body = {{"model", model}, {"messages", json::array({{{"role", "user"}, {"content", content}}})}};
  if (stream) body["stream"] = true;
  return body;
}

void expect_error(const Res& r, int status, std::string_view code) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  const json b = json::parse(r.body(), nullptr, false);
  ASSERT_TRUE(b.is_object() && b.contains("error")) << r.body();
  EXPECT_EQ(b["error"]["code"], code) << r.body();
}

// The bodies that reach the mock upstream.
class Recorder final : public http::Filter {
 public:
  net::awaitable<std::optional<http::Response>> on_request(http::Exchange& ex) override {
    std::lock_guard lock(mu_);
    bodies_.push_back(ex.request().body());
    co_return std::nullopt;
  }
  json last() {
    std::lock_guard lock(mu_);
    return bodies_.empty() ? json() : json::parse(bodies_.back(), nullptr, false);
  }
  std::string last_text() {
    std::lock_guard lock(mu_);
    return bodies_.empty() ? std::string() : bodies_.back();
  }
  std::size_t count() {
    std::lock_guard lock(mu_);
    return bodies_.size();
  }

 private:
  std::mutex mu_;
  std::vector<std::string> bodies_;
};

std::string long_text(std::size_t words) {
  std::string out;
  for (std::size_t i = 0; i < words; ++i) out += (i ? " w" : "w") + std::to_string(i % 10);
  return out;
}

class MoneyTest : public AppTest {
 protected:
  void SetUp() override {
    recorder_ = std::make_shared<Recorder>();
    ASSERT_TRUE(upstream_.start(recorder_));
    AppTest::SetUp();
  }
  void TearDown() override {
    AppTest::TearDown();
    upstream_.stop();
  }

  void configure(Settings& s) override {
    const std::string base = "http://127.0.0.1:" + std::to_string(upstream_.port()) + "/v1";
    s.providers = {
        ProviderSettings{.name = "mock", .kind = "mock", .base_url = {}, .api_key_env = {}, .extra = {}},
        ProviderSettings{.name = "wire", .kind = "openai", .base_url = base, .api_key_env = {}, .extra = {}},
        ProviderSettings{.name = "wire-new",
                         .kind = "openai",
                         .base_url = base,
                         .api_key_env = {},
                         .extra = {{"max_tokens_field", "max_completion_tokens"}}},
        ProviderSettings{
            .name = "dead", .kind = "openai", .base_url = "http://127.0.0.1:1/v1", .api_key_env = {}, .extra = {}},
    };
    auto model = [](std::string name, std::string provider, double in, double out,
                    std::vector<std::string> fallbacks = {}) {
      ModelSettings m;
      m.name = std::move(name);
      m.routes = {RouteSettings{.provider = std::move(provider), .model = "mock", .weight = 1}};
      m.fallbacks = std::move(fallbacks);
      m.price.input_per_mtok = in;
      m.price.output_per_mtok = out;
      return m;
    };
    s.models = {model("paid", "mock", 2, 4),
                model("wired", "wire", 2, 4),
                model("wired-new", "wire-new", 2, 4),
                model("free", "wire", 0, 0),
                model("dear", "mock", 20, 40),
                model("flaky", "dead", 2, 4, {"dear"})};
    s.models[0].max_output_tokens = 8;
    s.billing.default_max_output_tokens = 100;
  }

  struct Key {
    std::string id;
    std::string secret;
    std::string account() const { return "key:" + id; }
  };

  Key member(std::optional<std::int64_t> budget = std::nullopt, std::vector<std::string> models = {}) {
    auth::NewKey nk;
    nk.name = unique_name("money");
    nk.budget_nanos = budget;
    nk.models = std::move(models);
    auto created = app_->keys().create(nk);
    if (!created) {
      ADD_FAILURE() << created.error().message;
      return {};
    }
    return {created->first.id, created->second};
  }

  Res post_json(std::string_view target, const json& body, std::string_view secret = kAdminKey) {
    Headers h = bearer(secret);
    h.emplace_back("Content-Type", "application/json");
    return request(bhttp::verb::post, target, h, body.dump());
  }
  Res credit(const std::string& id, std::string amount) {
    return post_json("/api/admin/credit", {{"account", id}, {"amount", amount}, {"memo", "test"}});
  }
  json balance(const Key& k) {
    const Res r = get("/api/billing/balance", bearer(k.secret));
    EXPECT_EQ(r.result_int(), 200) << r.body();
    return json::parse(r.body(), nullptr, false);
  }
  std::int64_t count(const std::string& sql) {
    const Res synced = get("/api/billing/balance", bearer(kAdminKey));
    EXPECT_EQ(synced.result_int(), 200) << synced.body();
    return app_->db().run_sync([&](SQLite::Database& c) { return c.execAndGet(sql).getInt64(); });
  }
  // The hold of a request, from its audit timeline.
  std::int64_t hold_of(const Res& r, const Key& k) {
    const Res t = get("/api/audit/timeline/" + header(r, "x-request-id"), bearer(k.secret));
    EXPECT_EQ(t.result_int(), 200) << t.body();
    const json timeline = json::parse(t.body());
    for (const auto& e : timeline["events"]) {
      if (e["kind"] == "request") return e["data"]["hold_nanos"].get<std::int64_t>();
    }
    ADD_FAILURE() << "no request event: " << t.body();
    return -1;
  }

  MockUpstream upstream_;
  std::shared_ptr<Recorder> recorder_;
};

TEST_F(MoneyTest, ARequestWithoutACapGetsTheModelsMaximumAndIsHeldForIt) {
  const Key k = member();
  ASSERT_EQ(credit(k.id, "1").result_int(), 201);
  // The mock model echoes; 8 tokens of output (its max_output_tokens) are 32 characters.
  const Res r = post_json("/v1/chat/completions", chat_body("paid", long_text(60)), k.secret);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  const json j = json::parse(r.body());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length") << r.body();
  EXPECT_EQ(j["usage"]["completion_tokens"], 8) << r.body();
  EXPECT_EQ(j["choices"][0]["message"]["content"].get<std::string>().size(), 32u);
  const auto hold = hold_of(r, k);
  const std::int64_t prompt = j["usage"]["prompt_tokens"];
  const auto cost = prompt * kIn + 8 * kOut;
  EXPECT_GE(hold, cost);
  EXPECT_EQ(balance(k)["spent_nanos"], cost);

  // A request with its own cap keeps it (and is held for it).
  const json own = {{"model", "paid"},
                    {"max_tokens", 3},
                    {"messages", json::array({{{"role", "user"}, {"content", long_text(60)}}})}};
  const Res capped = post_json("/v1/chat/completions", own, k.secret);
  ASSERT_EQ(capped.result_int(), 200) << capped.body();
  EXPECT_EQ(json::parse(capped.body())["usage"]["completion_tokens"], 3);
}

TEST_F(MoneyTest, TheCapReachesTheWireInTheProvidersField) {
  const Key k = member();
  ASSERT_EQ(credit(k.id, "1").result_int(), 201);
  // Forwarded as the client sent it, with the cap spliced in (OpenAI-compatible servers read max_tokens).
  const Res r = post_json("/v1/chat/completions", chat_body("wired", long_text(300)), k.secret);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  json sent = recorder_->last();
  EXPECT_EQ(sent["max_tokens"], 100) << sent.dump();
  EXPECT_FALSE(sent.contains("max_completion_tokens"));
  EXPECT_EQ(sent["model"], "mock");
  EXPECT_EQ(json::parse(r.body())["usage"]["completion_tokens"], 100);
  // Streams too.
  Client c(ep());
  Headers h = bearer(k.secret);
  h.emplace_back("Content-Type", "application/json");
  ASSERT_FALSE(c.send(make_request(bhttp::verb::post, "/v1/chat/completions", h, chat_body("wired", "hi", true).dump())));
  ResParser p;
  ASSERT_FALSE(c.read_header(p));
  ASSERT_FALSE(c.read_rest(p));
  EXPECT_EQ(recorder_->last()["max_tokens"], 100);
  // A provider that wants max_completion_tokens (OpenAI's own API) gets that field.
  const Res n = post_json("/v1/chat/completions", chat_body("wired-new", "hello"), k.secret);
  ASSERT_EQ(n.result_int(), 200) << n.body();
  sent = recorder_->last();
  EXPECT_EQ(sent["max_completion_tokens"], 100) << sent.dump();
  EXPECT_FALSE(sent.contains("max_tokens"));
  // A body that names the field already (null: "no limit") gets exactly one, the cap.
  const json nulled = {{"model", "wired"},
                       {"max_tokens", nullptr},
                       {"messages", json::array({{{"role", "user"}, {"content", "hello"}}})}};
  ASSERT_EQ(post_json("/v1/chat/completions", nulled, k.secret).result_int(), 200);
  EXPECT_EQ(recorder_->last()["max_tokens"], 100);
  EXPECT_EQ(recorder_->last_text().find("max_tokens"), recorder_->last_text().rfind("max_tokens"))
      << recorder_->last_text();
  // Output that costs nothing needs no cap: the request goes as it came.
  const Res f = post_json("/v1/chat/completions", chat_body("free", "hello"), k.secret);
  ASSERT_EQ(f.result_int(), 200) << f.body();
  sent = recorder_->last();
  EXPECT_FALSE(sent.contains("max_tokens")) << sent.dump();
  EXPECT_FALSE(sent.contains("max_completion_tokens")) << sent.dump();
}

TEST_F(MoneyTest, ASmallBalanceLowersTheCapToWhatItCovers) {
  const Key k = member();
  // 0.0004 USD: the prompt below (~350 bytes, ~88 tokens, 176,000 nanos
  // held) leaves room for about 56 output tokens, fewer than the model's 100.
  ASSERT_EQ(credit(k.id, "0.0004").result_int(), 201);
  const Res r = post_json("/v1/chat/completions", chat_body("wired", long_text(100)), k.secret);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  const json sent = recorder_->last();
  ASSERT_TRUE(sent.contains("max_tokens")) << sent.dump();
  const std::int64_t cap = sent["max_tokens"];
  EXPECT_LT(cap, 100);
  EXPECT_GE(cap, 16);
  const auto hold = hold_of(r, k);
  EXPECT_LE(hold, 400'000);
  const json b = balance(k);
  EXPECT_GE(b["balance_nanos"].get<std::int64_t>(), 0) << b.dump();
  EXPECT_EQ(b["held_nanos"], 0);
  EXPECT_LE(b["spent_nanos"].get<std::int64_t>(), hold);
  // Too little left for even 16 output tokens: 402, and nothing written.
  const auto entries = count("SELECT COUNT(*) FROM ledger_entries");
  const auto usage = count("SELECT COUNT(*) FROM usage_records");
  const auto sent_before = recorder_->count();
  const Res poor = post_json("/v1/chat/completions", chat_body("wired", long_text(100)), k.secret);
  expect_error(poor, 402, "insufficient_balance");
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_entries"), entries);
  EXPECT_EQ(count("SELECT COUNT(*) FROM usage_records"), usage);
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_holds"), 0);
  EXPECT_EQ(recorder_->count(), sent_before);
}

TEST_F(MoneyTest, ManyConcurrentLongAnswersNeverOverdrawASmallBalance) {
  const Key k = member();
  ASSERT_EQ(credit(k.id, "0.002").result_int(), 201);  // 2,000,000 nanos
  constexpr int kClients = 12;
  constexpr int kEach = 4;
  std::atomic<int> ok{0};
  std::atomic<int> refused{0};
  std::atomic<int> other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      Client c(ep(), 10s);
      Headers h = bearer(k.secret);
      h.emplace_back("Content-Type", "application/json");
      for (int i = 0; i < kEach; ++i) {
        // Each answer would be ~300 tokens uncapped: 1.2M nanos of output alone.
        const bool stream = (t + i) % 2 == 1;
        Req req = make_request(bhttp::verb::post, "/v1/chat/completions", h,
                               chat_body("wired", long_text(240), stream).dump());
        if (c.send(req)) {
          ++other;
          return;
        }
        ResParser p;
        p.body_limit(boost::none);
        if (c.read_header(p) || c.read_rest(p)) {
          ++other;
          return;
        }
        const int status = p.get().result_int();
        if (status == 200) {
          ++ok;
        } else if (status == 402) {
          ++refused;
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(refused.load(), 0);
  // The documented bound: a balance that may not overdraw never goes below zero.
  const json b = balance(k);
  EXPECT_GE(b["balance_nanos"].get<std::int64_t>(), 0) << b.dump();
  EXPECT_EQ(b["held_nanos"], 0) << b.dump();
  EXPECT_EQ(b["spent_nanos"].get<std::int64_t>(), 2'000'000 - b["balance_nanos"].get<std::int64_t>());
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge'"), ok.load());
  EXPECT_EQ(count("SELECT COALESCE(SUM(amount_nanos), 0) FROM ledger_entries WHERE kind = 'charge'"),
            b["spent_nanos"].get<std::int64_t>());
  const Res v = get("/api/ledger/verify", bearer(kAdminKey));
  ASSERT_EQ(v.result_int(), 200) << v.body();
  EXPECT_TRUE(json::parse(v.body())["ok"].get<bool>()) << v.body();
}

TEST_F(MoneyTest, AKeysBudgetIsEnforcedWithTheHoldAndShown) {
  // 0.0005 USD of budget on a key credited 1 USD.
  const Key k = member(500'000);
  ASSERT_EQ(credit(k.id, "1").result_int(), 201);
  json b = balance(k);
  EXPECT_EQ(b["budget_nanos"], 500'000) << b.dump();
  EXPECT_EQ(b["budget_left_nanos"], 500'000);
  int served = 0;
  Res last;
  for (int i = 0; i < 50; ++i) {
    last = post_json("/v1/chat/completions", chat_body("paid", long_text(40)), k.secret);
    if (last.result_int() != 200) break;
    ++served;
  }
  ASSERT_GT(served, 0);
  ASSERT_LT(served, 50);
  expect_error(last, 402, "budget_exceeded");
  b = balance(k);
  const auto spent = b["spent_nanos"].get<std::int64_t>();
  EXPECT_LE(spent, 500'000) << b.dump();
  EXPECT_EQ(b["budget_left_nanos"].get<std::int64_t>(), 500'000 - spent);
  EXPECT_EQ(b["balance_nanos"].get<std::int64_t>(), 1'000'000'000 - spent);
  // The refusal wrote nothing.
  EXPECT_EQ(count("SELECT COUNT(*) FROM usage_records"), served);
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge'"), served);
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_holds"), 0);
  EXPECT_EQ(b["held_nanos"], 0);
  // The budget survives a restart: spending is read back from the ledger.
  app_->stop();
  app_.reset();
  boot();
  expect_error(post_json("/v1/chat/completions", chat_body("paid", long_text(40)), k.secret), 402,
               "budget_exceeded");
}

TEST_F(MoneyTest, AFallbackIsPricedAtItsOwnPriceAndOnlyIfTheKeyMayUseIt) {
  // flaky (dead upstream, $2/$4) falls back to dear ($20/$40).
  const Key both = member(std::nullopt, {"flaky", "dear"});
  ASSERT_EQ(credit(both.id, "1").result_int(), 201);
  const Res r = post_json("/v1/chat/completions", chat_body("flaky", "hello there"), both.secret);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  const json u = json::parse(r.body())["usage"];
  const std::int64_t want = u["prompt_tokens"].get<std::int64_t>() * 20'000 + u["completion_tokens"].get<std::int64_t>() * 40'000;
  EXPECT_EQ(balance(both)["spent_nanos"], want);
  EXPECT_EQ(count("SELECT COUNT(*) FROM usage_records WHERE model = 'dear' AND cost_nanos = " + std::to_string(want)), 1);
  // The hold covered the dearer model.
  EXPECT_GE(hold_of(r, both), want);

  // A key that may use flaky but not dear: the fallback is not tried.
  const Key only = member(std::nullopt, {"flaky"});
  ASSERT_EQ(credit(only.id, "1").result_int(), 201);
  const auto usage = count("SELECT COUNT(*) FROM usage_records");
  const Res refused = post_json("/v1/chat/completions", chat_body("flaky", "hello there"), only.secret);
  EXPECT_GE(refused.result_int(), 500) << refused.body();
  EXPECT_LE(refused.result_int(), 504) << refused.body();
  EXPECT_EQ(count("SELECT COUNT(*) FROM usage_records"), usage);
  EXPECT_EQ(balance(only)["spent_nanos"], 0);
  EXPECT_EQ(balance(only)["held_nanos"], 0);
}

// Rate limits with the KV down: enforced in this process's memory, and said so.
class LimitsKvDown : public AppTest {
 protected:
  void configure(Settings& s) override {
    s.storage.redis_url = "redis://127.0.0.1:1";
    s.storage.redis_timeout_ms = 300;
    s.providers = {ProviderSettings{.name = "mock", .kind = "mock", .base_url = {}, .api_key_env = {}, .extra = {}}};
    ModelSettings m;
    m.name = "mock";
    m.routes = {RouteSettings{.provider = "mock", .model = "mock", .weight = 1}};
    s.models = {m};
  }
};

TEST_F(LimitsKvDown, RpmAndConcurrencyHoldInMemoryAndStatusSaysSo) {
  const Res before = get("/api/status", bearer(kAdminKey));
  EXPECT_EQ(json::parse(before.body())["rate_limits"]["mode"], "shared") << before.body();
  const std::string key = create_key(unique_name("kvdown"), false, 2);
  Headers h = bearer(key);
  h.emplace_back("Content-Type", "application/json");
  const std::string body = chat_body("mock", "hi").dump();
  EXPECT_EQ(request(bhttp::verb::post, "/v1/chat/completions", h, body).result_int(), 200);
  const Res second = request(bhttp::verb::post, "/v1/chat/completions", h, body);
  EXPECT_EQ(second.result_int(), 200) << second.body();
  EXPECT_EQ(header(second, "x-ratelimit-remaining-requests"), "0");
  const Res third = request(bhttp::verb::post, "/v1/chat/completions", h, body);
  expect_error(third, 429, "rate_limit_exceeded");
  EXPECT_FALSE(header(third, "retry-after").empty());
  // Other routes meet the same bucket (the rate-limit filter).
  expect_error(get("/v1/models", bearer(key)), 429, "rate_limit_exceeded");
  EXPECT_GE(counter("alou_ratelimit_kv_errors_total"), 3u);
  const Res status = get("/api/status", bearer(kAdminKey));
  const json st = json::parse(status.body());
  EXPECT_EQ(st["rate_limits"]["mode"], "local") << status.body();
  EXPECT_GE(st["rate_limits"]["kv_failures"].get<int>(), 3);
}

}  // namespace
}  // namespace alou::itest
