// Provider keys stored through the admin API (encrypted under
// ALOU_MASTER_KEY): the endpoints, their errors (nothing written), and a
// provider without an environment key that works after its key is stored
// and the server restarted, against a mock upstream over real sockets.
#include "harness.hpp"
#include "mock_upstream.hpp"

#include "alou/core/log.hpp"
#include "alou/core/metrics.hpp"
#include "alou/http/exchange.hpp"
#include "alou/http/filter.hpp"
#include "alou/http/router.hpp"
#include "alou/http/server.hpp"
#include "alou/mock/upstream.hpp"
#include "alou/storage/database.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <mutex>
#include <thread>

namespace alou::itest {
namespace {

using json = nlohmann::json;

constexpr const char* kKeyEnv = "ALOU_TEST_PROVIDER_KEY_UNSET";
constexpr const char* kMasterHex = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
constexpr const char* kUpstreamKey = "sk-upstream-stored-0123456789abcdef";

// Remembers the Authorization header of the chats that reach the upstream.
class AuthRecorder final : public alou::http::Filter {
 public:
  net::awaitable<std::optional<alou::http::Response>> on_request(alou::http::Exchange& ex) override {
    if (ex.path() == "/v1/chat/completions") {
      std::lock_guard lock(mu);
      seen.emplace_back(ex.request()[bhttp::field::authorization]);
    }
    co_return std::nullopt;
  }
  std::mutex mu;
  std::vector<std::string> seen;
};

// The mock upstream, with a AuthRecorder in front.
struct Upstream : MockUpstream {
  std::shared_ptr<AuthRecorder> recorder = std::make_shared<AuthRecorder>();
  bool start() { return MockUpstream::start(recorder); }
};

json parse(const std::string& s) { return json::parse(s, nullptr, false); }

void expect_error(const Res& r, int status, std::string_view code) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  const json b = parse(r.body());
  ASSERT_TRUE(b.is_object() && b.contains("error")) << r.body();
  EXPECT_EQ(b["error"]["code"], code) << r.body();
}

class ProviderKeysTest : public AppTest {
 protected:
  void SetUp() override {
    ::unsetenv(kKeyEnv);
    if (with_master_) {
      ::setenv("ALOU_MASTER_KEY", kMasterHex, 1);
    } else {
      ::unsetenv("ALOU_MASTER_KEY");
    }
    ASSERT_TRUE(upstream_.start());
    AppTest::SetUp();
  }
  void TearDown() override {
    AppTest::TearDown();
    upstream_.stop();
    ::unsetenv("ALOU_MASTER_KEY");
  }
  void configure(Settings& s) override {
    const std::string up = "http://127.0.0.1:" + std::to_string(upstream_.port()) + "/v1";
    s.providers = {
        ProviderSettings{.name = "mock", .kind = "mock", .base_url = {}, .api_key_env = {}, .extra = {}},
        ProviderSettings{.name = "keyed", .kind = "openai", .base_url = up, .api_key_env = kKeyEnv, .extra = {}},
    };
    ModelSettings m;
    m.name = "ghost";
    m.routes = {RouteSettings{.provider = "keyed", .model = "gpt-x", .weight = 1}};
    s.models = {m};
  }

  Headers admin_json() const {
    Headers h = bearer(kAdminKey);
    h.emplace_back("Content-Type", "application/json");
    return h;
  }
  Res put_key(std::string_view provider, std::string body, Headers h = {}) {
    if (h.empty()) h = admin_json();
    return request(bhttp::verb::put, "/api/admin/providers/" + std::string(provider) + "/key", h, std::move(body));
  }
  Res chat_ghost() {
    json b = {{"model", "ghost"}, {"messages", json::array({{{"role", "user"}, {"content", "hello"}}})}};
    return request(bhttp::verb::post, "/v1/chat/completions", admin_json(), b.dump());
  }
  json providers() {
    const Res r = get("/api/admin/providers", bearer(kAdminKey));
    EXPECT_EQ(r.result_int(), 200) << r.body();
    EXPECT_EQ(r.body().find(kUpstreamKey), std::string::npos);
    json out = json::object();
    const json body = parse(r.body());
    if (!body.contains("data")) return out;
    for (const auto& p : body["data"]) out[p["name"].get<std::string>()] = p;
    return out;
  }
  int stored_rows() {
    return app_->db().run_sync(
        [](SQLite::Database& c) { return c.execAndGet("SELECT COUNT(*) FROM provider_keys").getInt(); });
  }
  void restart() {
    app_->stop();
    app_.reset();
    boot();
  }

  bool with_master_ = true;
  Upstream upstream_;
};

TEST_F(ProviderKeysTest, AStoredKeyIsUsedAtOnceAndAfterARestart) {
  // No key in the environment: the provider waits for one.
  EXPECT_EQ(providers()["keyed"]["key_source"], "none");
  EXPECT_EQ(providers()["mock"]["key_source"], "none");
  expect_error(chat_ghost(), 503, "no_provider");

  const Res put = put_key("keyed", json{{"api_key", kUpstreamKey}}.dump());
  ASSERT_EQ(put.result_int(), 200) << put.body();
  EXPECT_EQ(put.body().find(kUpstreamKey), std::string::npos);
  EXPECT_EQ(parse(put.body())["key_source"], "stored");
  EXPECT_EQ(parse(put.body())["restart_required"], false);
  EXPECT_EQ(log::redact(std::string("upstream said ") + kUpstreamKey), "upstream said [redacted]");
  json listed = providers();
  EXPECT_EQ(listed["keyed"]["key_source"], "stored");
  EXPECT_EQ(listed["keyed"]["restart_required"], false);
  EXPECT_EQ(listed["keyed"]["api_key_env"], kKeyEnv);
  // Encrypted at rest: the row does not contain the key.
  const std::string sealed = app_->db().run_sync([](SQLite::Database& c) {
    auto col = c.execAndGet("SELECT sealed FROM provider_keys WHERE provider = 'keyed'");
    return std::string(static_cast<const char*>(col.getBlob()), static_cast<std::size_t>(col.getBytes()));
  });
  EXPECT_GT(sealed.size(), 40u);
  EXPECT_EQ(sealed.find("sk-upstream"), std::string::npos);

  // In use now, without a restart.
  const auto expect_served_with = [&](const std::string& key) {
    const Res ok = chat_ghost();
    ASSERT_EQ(ok.result_int(), 200) << ok.body();
    EXPECT_EQ(parse(ok.body())["choices"][0]["message"]["content"], "echo: hello");
    std::lock_guard lock(upstream_.recorder->mu);
    ASSERT_FALSE(upstream_.recorder->seen.empty());
    EXPECT_EQ(upstream_.recorder->seen.back(), "Bearer " + key);
  };
  expect_served_with(kUpstreamKey);
  const Res st = get("/api/status", bearer(kAdminKey));
  ASSERT_EQ(st.result_int(), 200);
  const json status = parse(st.body());  // named: a range-for over a temporary's member is dangling
  for (const auto& p : status["providers"]) {
    if (p["name"] == "keyed") {
      EXPECT_EQ(p["enabled"], true) << st.body();
    }
  }

  // Replaced: the next request carries the new key.
  const std::string rotated = std::string(kUpstreamKey) + "-rotated";
  ASSERT_EQ(put_key("keyed", json{{"api_key", rotated}}.dump()).result_int(), 200);
  expect_served_with(rotated);

  // And after a restart, from the database.
  restart();
  EXPECT_EQ(providers()["keyed"]["restart_required"], false);
  expect_served_with(rotated);

  // Deleted: gone from the listing and from the provider at once.
  const Res del = request(bhttp::verb::delete_, "/api/admin/providers/keyed/key", bearer(kAdminKey));
  ASSERT_EQ(del.result_int(), 200) << del.body();
  EXPECT_EQ(parse(del.body())["restart_required"], false);
  EXPECT_EQ(stored_rows(), 0);
  EXPECT_EQ(providers()["keyed"]["key_source"], "none");
  expect_error(chat_ghost(), 503, "no_provider");
  expect_error(request(bhttp::verb::delete_, "/api/admin/providers/keyed/key", bearer(kAdminKey)), 404,
               "provider_key_not_found");
  restart();
  expect_error(chat_ghost(), 503, "no_provider");
}

TEST_F(ProviderKeysTest, EnvironmentKeyWinsOverTheStoredOne) {
  ASSERT_EQ(put_key("keyed", json{{"api_key", kUpstreamKey}}.dump()).result_int(), 200);
  ::setenv(kKeyEnv, "sk-from-the-environment-000", 1);
  restart();
  EXPECT_EQ(providers()["keyed"]["key_source"], "env");
  ASSERT_EQ(chat_ghost().result_int(), 200);
  std::lock_guard lock(upstream_.recorder->mu);
  EXPECT_EQ(upstream_.recorder->seen.back(), "Bearer sk-from-the-environment-000");
  ::unsetenv(kKeyEnv);
}

TEST_F(ProviderKeysTest, ErrorsWriteNothing) {
  const std::string member = create_key(unique_name("pk-member"));
  Headers mh = bearer(member);
  mh.emplace_back("Content-Type", "application/json");
  expect_error(put_key("keyed", json{{"api_key", kUpstreamKey}}.dump(), mh), 403, "owner_only");
  expect_error(request(bhttp::verb::delete_, "/api/admin/providers/keyed/key", bearer(member)), 403, "owner_only");
  expect_error(get("/api/admin/providers", bearer(member)), 403, "owner_only");
  expect_error(put_key("keyed", json{{"api_key", kUpstreamKey}}.dump(), {{"Content-Type", "application/json"}}), 401,
               "missing_credentials");

  for (const std::string& bad : {std::string("not json"), std::string("[]"), json{{"key", kUpstreamKey}}.dump(),
                                json{{"api_key", 42}}.dump(), json{{"api_key", ""}}.dump(),
                                json{{"api_key", "short"}}.dump(), json{{"api_key", "sk-has\nnewline-000"}}.dump(),
                                json{{"api_key", std::string(5000, 'k')}}.dump()}) {
    expect_error(put_key("keyed", bad), 400, "invalid_body");
  }
  expect_error(put_key("nope", json{{"api_key", kUpstreamKey}}.dump()), 404, "provider_not_found");
  expect_error(request(bhttp::verb::delete_, "/api/admin/providers/nope/key", bearer(kAdminKey)), 404,
               "provider_not_found");
  expect_error(request(bhttp::verb::delete_, "/api/admin/providers/keyed/key", bearer(kAdminKey)), 404,
               "provider_key_not_found");
  EXPECT_EQ(stored_rows(), 0);
  EXPECT_EQ(providers()["keyed"]["key_source"], "none");
}

class ProviderKeysNoMaster : public ProviderKeysTest {
 protected:
  ProviderKeysNoMaster() { with_master_ = false; }
};

TEST_F(ProviderKeysNoMaster, PutIs503AndWritesNothing) {
  const Res r = put_key("keyed", json{{"api_key", kUpstreamKey}}.dump());
  expect_error(r, 503, "master_key_missing");
  EXPECT_EQ(r.body().find(kUpstreamKey), std::string::npos);
  EXPECT_EQ(stored_rows(), 0);
  const Res list = get("/api/admin/providers", bearer(kAdminKey));
  ASSERT_EQ(list.result_int(), 200);
  EXPECT_EQ(parse(list.body())["master_key"], false);
}

// A key stored under one master key, read at start under another: the
// provider stays disabled (logged), the server starts, nothing leaks.
TEST_F(ProviderKeysTest, WrongMasterKeyAtStartDisablesTheProvider) {
  ASSERT_EQ(put_key("keyed", json{{"api_key", kUpstreamKey}}.dump()).result_int(), 200);
  ::setenv("ALOU_MASTER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", 1);
  restart();
  expect_error(chat_ghost(), 503, "no_provider");
  EXPECT_EQ(stored_rows(), 1);  // kept: the right master key can still read it
}

TEST_F(ProviderKeysTest, MalformedMasterKeyRefusesToStart) {
  app_->stop();
  app_.reset();
  ::setenv("ALOU_MASTER_KEY", "too-short", 1);
  auto created = app::App::create(settings_);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, "master_key_invalid");
  EXPECT_EQ(created.error().message.find("too-short"), std::string::npos);
}

}  // namespace
}  // namespace alou::itest
