// Authentication, roles, key revocation and the per-key rate limit, against
// real SQLite and the embedded KV (and Redis when ALOU_TEST_REDIS_URL is set).
#include "harness.hpp"

#include "alou/auth/keys.hpp"

#include <nlohmann/json.hpp>

#include <cstdlib>

namespace alou::itest {
namespace {

using json = nlohmann::json;

json body_json(const Res& r) { return json::parse(r.body(), nullptr, false); }

void expect_error(const Res& r, int status, std::string_view code) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  const json b = body_json(r);
  ASSERT_TRUE(b.is_object() && b.contains("error")) << r.body();
  EXPECT_EQ(b["error"]["code"], code) << r.body();
  EXPECT_TRUE(b["error"]["message"].is_string());
  EXPECT_FALSE(header(r, "x-request-id").empty());
  EXPECT_EQ(b["error"]["request_id"], header(r, "x-request-id"));
}

using Auth = AppTest;

TEST_F(Auth, StatusWithoutCredentialsIs401) {
  expect_error(get("/api/status"), 401, "missing_credentials");
}

TEST_F(Auth, StatusWithWrongKeyIs401) {
  expect_error(get("/api/status", bearer("sk-alou-thisisnotarealkey0000000000000000000000")), 401,
               "invalid_api_key");
  expect_error(get("/api/status", bearer("not-even-a-key")), 401, "invalid_api_key");
}

TEST_F(Auth, StatusWithMemberKeyIs403) {
  const std::string member = create_key(unique_name("member"));
  expect_error(get("/api/status", bearer(member)), 403, "owner_only");
}

TEST_F(Auth, StatusWithAdminKeyReportsComponents) {
  const Res r = get("/api/status", bearer(kAdminKey));
  ASSERT_EQ(r.result_int(), 200) << r.body();
  const json b = body_json(r);
  EXPECT_EQ(b["status"], "ok");
  EXPECT_EQ(b["version"], app::kVersion);
  EXPECT_EQ(b["sqlite"]["ok"], true) << r.body();
  EXPECT_GE(b["sqlite"]["schema_version"].get<int>(), 1);
  EXPECT_EQ(b["kv"]["backend"], "embedded");
  EXPECT_EQ(b["kv"]["ok"], true);
  EXPECT_GE(b["connections"].get<int>(), 1);
}

TEST_F(Auth, CreatedOwnerKeyReachesStatus) {
  const std::string owner = create_key(unique_name("owner"), /*owner=*/true);
  EXPECT_EQ(get("/api/status", bearer(owner)).result_int(), 200);
}

TEST_F(Auth, MemberKeyWorksUntilRevoked) {
  const std::string name = unique_name("rev");
  const std::string member = create_key(name);
  const Res who = get("/test/whoami", bearer(member));
  ASSERT_EQ(who.result_int(), 200) << who.body();
  EXPECT_EQ(body_json(who)["name"], name);
  EXPECT_EQ(body_json(who)["owner"], false);
  expect_error(get("/api/status", bearer(member)), 403, "owner_only");

  auto revoked = app_->keys().revoke(name);
  ASSERT_TRUE(revoked) << revoked.error().message;

  expect_error(get("/test/whoami", bearer(member)), 401, "invalid_api_key");
  expect_error(get("/api/status", bearer(member)), 401, "invalid_api_key");
  // Revoking again is a conflict, not a crash.
  auto again = app_->keys().revoke(name);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, "already_revoked");
}

// The default key cache (5 s) must not keep a revoked key alive:
// KeyStore::revoke clears it.
class AuthCached : public AppTest {
 protected:
  void configure(Settings& s) override { s.auth.key_cache_ms = 60'000; }
};

TEST_F(AuthCached, RevocationBypassesTheCache) {
  const std::string name = unique_name("cached");
  const std::string member = create_key(name);
  ASSERT_EQ(get("/test/whoami", bearer(member)).result_int(), 200);
  ASSERT_TRUE(app_->keys().revoke(name));
  expect_error(get("/test/whoami", bearer(member)), 401, "invalid_api_key");
}

// ---------------------------------------------------------------- rate limit

class RateLimit : public AppTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    redis_url_ = redis_url_for(GetParam());
    if (IsSkipped() || HasFailure()) return;
    AppTest::SetUp();
  }
  void configure(Settings& s) override { s.storage.redis_url = redis_url_; }

  std::string redis_url_;
};

TEST_P(RateLimit, ThirdRequestInAMinuteIs429) {
  const std::string key = create_key(unique_name("rl"), false, 2);
  Client c(ep());
  const Res first = c.get("/test/whoami", bearer(key));
  EXPECT_EQ(first.result_int(), 200) << first.body();
  EXPECT_EQ(header(first, "x-ratelimit-limit-requests"), "2");
  EXPECT_EQ(header(first, "x-ratelimit-remaining-requests"), "1");
  EXPECT_FALSE(header(first, "x-ratelimit-reset-requests").empty());
  const Res second = c.get("/test/whoami", bearer(key));
  EXPECT_EQ(second.result_int(), 200) << second.body();
  EXPECT_EQ(header(second, "x-ratelimit-remaining-requests"), "0");

  const Res third = c.get("/test/whoami", bearer(key));
  expect_error(third, 429, "rate_limit_exceeded");
  const std::string retry = header(third, "retry-after");
  ASSERT_FALSE(retry.empty());
  EXPECT_GE(std::stoi(retry), 1);
  EXPECT_LE(std::stoi(retry), 60);
  EXPECT_EQ(header(third, "x-ratelimit-limit-requests"), "2");
  EXPECT_EQ(header(third, "x-ratelimit-remaining-requests"), "0");
  EXPECT_EQ(counter("alou_ratelimit_rejected_total", {{"limit", "rpm"}}), 1u);
  EXPECT_EQ(counter("alou_ratelimit_kv_errors_total"), 0u);

  // Keys without a limit, and other keys, are not affected.
  EXPECT_EQ(c.get("/test/whoami", bearer(kAdminKey)).result_int(), 200);
  const std::string other = create_key(unique_name("rl-other"), false, 2);
  EXPECT_EQ(c.get("/test/whoami", bearer(other)).result_int(), 200);

  const Res status = c.get("/api/status", bearer(kAdminKey));
  ASSERT_EQ(status.result_int(), 200) << status.body();
  EXPECT_EQ(body_json(status)["kv"]["backend"], GetParam());
}

INSTANTIATE_TEST_SUITE_P(Kv, RateLimit, ::testing::Values(std::string("embedded"), std::string("redis")),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace alou::itest
