// Billing end to end: credits, holds and settlements through the real app
// (in-process mock provider, real SQLite), the balance and ledger
// endpoints, the audit timeline, and tamper detection.
#include "harness.hpp"

#include "alou/auth/keys.hpp"
#include "alou/storage/database.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <nlohmann/json.hpp>

#include <sstream>

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

class BillingTest : public AppTest {
 protected:
  void configure(Settings& s) override {
    s.providers = {
        ProviderSettings{.name = "mock", .kind = "mock", .base_url = {}, .api_key_env = {}, .extra = {}},
        ProviderSettings{
            .name = "dead", .kind = "openai", .base_url = "http://127.0.0.1:1/v1", .api_key_env = {}, .extra = {}},
    };
    auto model = [](std::string name, std::string provider, std::vector<std::string> fallbacks) {
      ModelSettings m;
      m.name = std::move(name);
      m.routes = {RouteSettings{.provider = std::move(provider), .model = "mock", .weight = 1}};
      m.fallbacks = std::move(fallbacks);
      m.price.input_per_mtok = 2;
      m.price.output_per_mtok = 4;
      return m;
    };
    s.models = {model("paid", "mock", {}), model("flaky", "dead", {"paid"})};
    s.billing.default_max_output_tokens = 100;
  }

  struct Key {
    std::string id;
    std::string secret;
    std::string account() const { return "key:" + id; }
  };

  Key member() {
    auth::NewKey nk;
    nk.name = unique_name("bill");
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

  Res credit(const std::string& account, std::string amount) {
    return post_json("/api/admin/credit", {{"account", account}, {"amount", amount}, {"memo", "test"}});
  }

  json balance(const Key& k) {
    const Res r = get("/api/billing/balance", bearer(k.secret));
    EXPECT_EQ(r.result_int(), 200) << r.body();
    return json::parse(r.body(), nullptr, false);
  }

  // Reads the tables as the API does: once every settlement already
  // delivered is in them (the balance endpoint waits for the settlement
  // journal to be applied, Ledger::sync).
  std::int64_t count(const std::string& sql) {
    const Res synced = get("/api/billing/balance", bearer(kAdminKey));
    EXPECT_EQ(synced.result_int(), 200) << synced.body();
    return app_->db().run_sync([&](SQLite::Database& c) { return c.execAndGet(sql).getInt64(); });
  }

  // The whole body of a stream.
  std::string stream(const json& body, std::string_view secret) {
    Client c(ep());
    Headers h = bearer(secret);
    h.emplace_back("Content-Type", "application/json");
    EXPECT_FALSE(c.send(make_request(bhttp::verb::post, "/v1/chat/completions", h, body.dump())));
    ResParser p;
    p.body_limit(boost::none);
    EXPECT_FALSE(c.read_header(p));
    EXPECT_FALSE(c.read_rest(p));
    return p.get().body();
  }
};

TEST_F(BillingTest, CreditThenChatChargesExactlyTheUsage) {
  const Key k = member();
  const Res c = credit(k.id, "1.5");
  ASSERT_EQ(c.result_int(), 201) << c.body();
  EXPECT_EQ(json::parse(c.body())["account"], k.account());
  EXPECT_EQ(balance(k)["balance_nanos"], 1'500'000'000);

  const Res r = post_json("/v1/chat/completions", chat_body("paid", "hello world"), k.secret);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  const json usage = json::parse(r.body())["usage"];
  const std::int64_t cost = usage["prompt_tokens"].get<std::int64_t>() * kIn +
                            usage["completion_tokens"].get<std::int64_t>() * kOut;
  ASSERT_GT(cost, 0);
  const json b = balance(k);
  EXPECT_EQ(b["balance_nanos"], 1'500'000'000 - cost);
  EXPECT_EQ(b["held_nanos"], 0);
  EXPECT_EQ(b["available"], b["balance"]);

  const Res u = get("/api/usage?group_by=model", bearer(k.secret));
  ASSERT_EQ(u.result_int(), 200) << u.body();
  const json data = json::parse(u.body())["data"];
  ASSERT_EQ(data.size(), 1u) << u.body();
  EXPECT_EQ(data[0]["group"], "paid");
  EXPECT_EQ(data[0]["requests"], 1);
  EXPECT_EQ(data[0]["cost_nanos"], cost);

  const Res l = get("/api/billing/ledger", bearer(k.secret));
  ASSERT_EQ(l.result_int(), 200) << l.body();
  const json entries = json::parse(l.body())["data"];
  ASSERT_EQ(entries.size(), 2u) << l.body();
  EXPECT_EQ(entries[0]["kind"], "credit");
  EXPECT_EQ(entries[1]["kind"], "charge");
  EXPECT_EQ(entries[1]["amount_nanos"], cost);
  EXPECT_EQ(entries[1]["request_id"], header(r, "x-request-id"));
  EXPECT_EQ(entries[1]["meta"]["price_nanos_per_mtok"]["input"], kIn * 1'000'000);

  const Res v = get("/api/ledger/verify", bearer(k.secret));
  ASSERT_EQ(v.result_int(), 200);
  EXPECT_TRUE(json::parse(v.body())["ok"].get<bool>()) << v.body();
}

TEST_F(BillingTest, NoCreditIs402AndNothingIsWritten) {
  const Key k = member();
  const Res r = post_json("/v1/chat/completions", chat_body("paid", "hello"), k.secret);
  EXPECT_EQ(r.result_int(), 402) << r.body();
  const json j = json::parse(r.body());
  EXPECT_EQ(j["error"]["code"], "insufficient_balance");
  EXPECT_TRUE(j["error"]["param"].is_null());
  // Anthropic clients get their own shape.
  Headers h{{"x-api-key", k.secret}, {"anthropic-version", "2023-06-01"}, {"Content-Type", "application/json"}};
  const json m = {{"model", "paid"}, {"max_tokens", 50}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
  const Res a = request(bhttp::verb::post, "/v1/messages", h, m.dump());
  EXPECT_EQ(a.result_int(), 402) << a.body();
  EXPECT_EQ(json::parse(a.body())["error"]["type"], "billing_error") << a.body();
  const Res s = post_json("/v1/chat/completions", chat_body("paid", "hello", true), k.secret);
  EXPECT_EQ(s.result_int(), 402) << s.body();
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_entries"), 0);
  EXPECT_EQ(count("SELECT COUNT(*) FROM usage_records"), 0);
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_holds"), 0);
  EXPECT_EQ(balance(k)["held_nanos"], 0);
}

TEST_F(BillingTest, AStreamIsChargedBeforeItsLastEvent) {
  const Key k = member();
  ASSERT_EQ(credit(k.id, "1").result_int(), 201);
  const std::string body = stream(chat_body("paid", "one two three", true), k.secret);
  ASSERT_NE(body.find("data: [DONE]"), std::string::npos) << body;
  EXPECT_EQ(body.find("\"usage\":{"), std::string::npos) << "the client did not ask for usage";
  // Charged by the time [DONE] arrived (durable in the settlement journal;
  // count() reads the tables once they hold it).
  EXPECT_EQ(count("SELECT COUNT(*) FROM usage_records"), 1);
  EXPECT_EQ(count("SELECT estimated FROM usage_records"), 0);
  const auto cost = count("SELECT cost_nanos FROM usage_records");
  EXPECT_GT(cost, 0);
  EXPECT_EQ(balance(k)["balance_nanos"], 1'000'000'000 - cost);
  EXPECT_EQ(balance(k)["held_nanos"], 0);
}

TEST_F(BillingTest, ACancelledStreamIsChargedItsEstimatedPartialUsage) {
  const Key k = member();
  ASSERT_EQ(credit(k.id, "1").result_int(), 201);
  Client c(ep());
  Headers h = bearer(k.secret);
  h.emplace_back("Content-Type", "application/json");
  const json body = chat_body("paid", "/slow 150 alpha beta gamma delta epsilon zeta eta theta", true);
  ASSERT_FALSE(c.send(make_request(bhttp::verb::post, "/v1/chat/completions", h, body.dump())));
  ResParser p;
  p.body_limit(boost::none);
  ASSERT_FALSE(c.read_header(p));
  while (p.get().body().find("alpha") == std::string::npos) ASSERT_FALSE(c.read_some(p, 3000ms));
  c.close();
  ASSERT_TRUE(eventually([&] { return count("SELECT COUNT(*) FROM usage_records") == 1; }, 3000ms));
  EXPECT_EQ(count("SELECT estimated FROM usage_records"), 1);
  const auto completion = count("SELECT completion_tokens FROM usage_records");
  EXPECT_GE(completion, 1);
  EXPECT_LT(completion, 15);  // not the whole reply
  const auto cost = count("SELECT cost_nanos FROM usage_records");
  EXPECT_GT(cost, 0);
  EXPECT_TRUE(eventually([&] { return balance(k)["balance_nanos"] == 1'000'000'000 - cost; }));
  EXPECT_EQ(balance(k)["held_nanos"], 0);
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge' AND memo = 'estimated usage'"), 1);
}

TEST_F(BillingTest, AnUpstreamCutChargesWhatWasStreamed) {
  const Key k = member();
  ASSERT_EQ(credit(k.id, "1").result_int(), 201);
  const std::string body = stream(chat_body("paid", "/cut 2 a b c d e f", true), k.secret);
  EXPECT_NE(body.find("upstream_disconnected"), std::string::npos) << body;
  EXPECT_EQ(count("SELECT COUNT(*) FROM usage_records"), 1);
  EXPECT_EQ(count("SELECT estimated FROM usage_records"), 1);
  EXPECT_EQ(balance(k)["held_nanos"], 0);
}

TEST_F(BillingTest, AFailedRequestChargesNothing) {
  const Key k = member();
  ASSERT_EQ(credit(k.id, "1").result_int(), 201);
  const Res r = post_json("/v1/chat/completions", chat_body("paid", "/fail 500"), k.secret);
  EXPECT_EQ(r.result_int(), 502) << r.body();
  EXPECT_TRUE(eventually([&] { return count("SELECT COUNT(*) FROM ledger_holds") == 0; }));
  EXPECT_EQ(count("SELECT COUNT(*) FROM usage_records"), 0);
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge'"), 0);
  EXPECT_EQ(balance(k)["balance_nanos"], 1'000'000'000);
  EXPECT_EQ(balance(k)["held_nanos"], 0);
}

TEST_F(BillingTest, AFallbackIsChargedOnceAndAudited) {
  const Key k = member();
  ASSERT_EQ(credit(k.id, "1").result_int(), 201);
  const Res r = post_json("/v1/chat/completions", chat_body("flaky", "hello"), k.secret);
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge'"), 1);
  EXPECT_EQ(count("SELECT COUNT(*) FROM usage_records"), 1);
  const std::string id = header(r, "x-request-id");
  const Res t = get("/api/audit/timeline/" + id, bearer(k.secret));
  ASSERT_EQ(t.result_int(), 200) << t.body();
  std::vector<std::string> kinds;
  std::vector<std::string> reasons;
  const json timeline = json::parse(t.body());
  for (const auto& e : timeline["events"]) {
    kinds.push_back(e["kind"]);
    if (e["kind"] == "route") reasons.push_back(e["data"]["reason"]);
  }
  ASSERT_GE(kinds.size(), 5u) << t.body();
  EXPECT_EQ(kinds.front(), "request");
  EXPECT_EQ(kinds.back(), "usage");
  EXPECT_EQ(reasons.front(), "first");
  EXPECT_EQ(reasons.back(), "fallback");
  // Someone else's key sees nothing of it.
  const Key other = member();
  EXPECT_EQ(get("/api/audit/timeline/" + id, bearer(other.secret)).result_int(), 404);
}

TEST_F(BillingTest, CreditErrorsWriteNothing) {
  const Key k = member();
  const Res forbidden = post_json("/api/admin/credit", {{"account", k.id}, {"amount", "1"}}, k.secret);
  EXPECT_EQ(forbidden.result_int(), 403);
  const Res bad_amount = credit(k.id, "-1");
  EXPECT_EQ(bad_amount.result_int(), 400);
  EXPECT_EQ(json::parse(bad_amount.body())["error"]["code"], "invalid_amount");
  EXPECT_EQ(credit(k.id, "1.0000000001").result_int(), 400);  // 10 decimals
  const Res unknown = credit("nobody-at-all", "1");
  EXPECT_EQ(unknown.result_int(), 404);
  EXPECT_EQ(json::parse(unknown.body())["error"]["code"], "account_not_found");
  const Res system = credit("system:revenue", "1");
  EXPECT_EQ(system.result_int(), 400);
  const Res junk = request(bhttp::verb::post, "/api/admin/credit", bearer(kAdminKey), "{nope");
  EXPECT_EQ(junk.result_int(), 400);
  EXPECT_EQ(count("SELECT COUNT(*) FROM ledger_entries"), 0);
}

TEST_F(BillingTest, ACreditByKeyNameOrWalletAddress) {
  auth::NewKey nk;
  nk.name = unique_name("named");
  auto created = app_->keys().create(nk);
  ASSERT_TRUE(created);
  EXPECT_EQ(credit(nk.name, "2").result_int(), 201);
  EXPECT_EQ(credit("0x52908400098527886E0F7030069857D2E4169EE7", "3").result_int(), 201);
  const Res b = get("/api/billing/balance?account=0x52908400098527886E0F7030069857D2E4169EE7", bearer(kAdminKey));
  ASSERT_EQ(b.result_int(), 200) << b.body();
  EXPECT_EQ(json::parse(b.body())["balance"], "3.000000");
  // A member may not read another account.
  const Key k = member();
  EXPECT_EQ(get("/api/billing/balance?account=" + nk.name, bearer(k.secret)).result_int(), 403);
}

TEST_F(BillingTest, LedgerPagesAndCsv) {
  const Key k = member();
  for (const char* a : {"1", "2", "3"}) ASSERT_EQ(credit(k.id, a).result_int(), 201);
  const Res page = get("/api/billing/ledger?limit=2", bearer(k.secret));
  ASSERT_EQ(page.result_int(), 200);
  const json p = json::parse(page.body());
  ASSERT_EQ(p["data"].size(), 2u);
  const auto next = p["next_after"].get<std::int64_t>();
  const json rest = json::parse(get("/api/billing/ledger?after=" + std::to_string(next), bearer(k.secret)).body());
  ASSERT_EQ(rest["data"].size(), 1u);
  EXPECT_EQ(rest["data"][0]["amount"], "3.000000");
  EXPECT_TRUE(rest["next_after"].is_null());
  Headers csv = bearer(k.secret);
  csv.emplace_back("Accept", "text/csv");
  const Res c = get("/api/billing/ledger", csv);
  ASSERT_EQ(c.result_int(), 200);
  EXPECT_EQ(header(c, "content-type"), "text/csv; charset=utf-8");
  std::istringstream lines(c.body());
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) ++n;
  EXPECT_EQ(n, 4);  // header + 3
  EXPECT_EQ(get("/api/billing/ledger?limit=0", bearer(k.secret)).result_int(), 400);
  EXPECT_EQ(get("/api/billing/ledger?since=yesterday", bearer(k.secret)).result_int(), 400);
}

TEST_F(BillingTest, PriceOverridesApplyToTheNextRequest) {
  const Key k = member();
  ASSERT_EQ(credit(k.id, "1").result_int(), 201);
  Headers h = bearer(kAdminKey);
  h.emplace_back("Content-Type", "application/json");
  const json price = {{"model", "paid"}, {"input_per_mtok", "20"}, {"output_per_mtok", 40}};
  const Res put = request(bhttp::verb::put, "/api/admin/prices", h, price.dump());
  ASSERT_EQ(put.result_int(), 200) << put.body();
  const Res bad = request(bhttp::verb::put, "/api/admin/prices", h,
                          json{{"model", "paid"}, {"input_per_mtok", "-1"}, {"output_per_mtok", "1"}}.dump());
  EXPECT_EQ(bad.result_int(), 400);
  const Res unknown = request(bhttp::verb::put, "/api/admin/prices", h,
                              json{{"model", "nope"}, {"input_per_mtok", "1"}, {"output_per_mtok", "1"}}.dump());
  EXPECT_EQ(unknown.result_int(), 404);
  const Res list = get("/api/admin/prices", bearer(kAdminKey));
  ASSERT_EQ(list.result_int(), 200);
  bool overridden = false;
  const json prices = json::parse(list.body());
  for (const auto& p : prices["data"]) {
    if (p["model"] == "paid") overridden = p["source"] == "override" && p["input_per_mtok"] == "20.000000";
  }
  EXPECT_TRUE(overridden) << list.body();
  const Res r = post_json("/v1/chat/completions", chat_body("paid", "hello world"), k.secret);
  ASSERT_EQ(r.result_int(), 200);
  const json usage = json::parse(r.body())["usage"];
  const std::int64_t cost = usage["prompt_tokens"].get<std::int64_t>() * 20'000 +
                            usage["completion_tokens"].get<std::int64_t>() * 40'000;
  EXPECT_EQ(count("SELECT cost_nanos FROM usage_records"), cost);
  EXPECT_EQ(get("/api/admin/prices", bearer(k.secret)).result_int(), 403);
}

TEST_F(BillingTest, VerifyNamesATamperedEntryAndThePublicKeyIsPublic) {
  const Key k = member();
  for (const char* a : {"1", "2", "3"}) ASSERT_EQ(credit(k.id, a).result_int(), 201);
  const Res pk = get("/api/ledger/pubkey");
  ASSERT_EQ(pk.result_int(), 200);
  EXPECT_EQ(json::parse(pk.body())["public_key"].get<std::string>().size(), 64u);
  app_->db().run_sync([](SQLite::Database& c) {
    c.exec("DROP TRIGGER ledger_entries_no_update");
    return c.exec("UPDATE ledger_entries SET amount_nanos = 7 WHERE seq = 2");
  });
  const Res v = get("/api/ledger/verify", bearer(k.secret));
  ASSERT_EQ(v.result_int(), 200);
  const json j = json::parse(v.body());
  EXPECT_FALSE(j["ok"].get<bool>());
  EXPECT_EQ(j["first_bad_seq"], 2) << v.body();
}

}  // namespace
}  // namespace alou::itest
