#include "alou/core/config.hpp"

#include <gtest/gtest.h>

#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace alou {
namespace {

constexpr const char* kSource = "conf/alou.toml";

// The fake process environment seen by parse_settings.
std::map<std::string, std::string>& fake_vars() {
  static std::map<std::string, std::string> vars;
  return vars;
}

std::optional<std::string> fake_env(const char* name) {
  const auto it = fake_vars().find(name);
  if (it == fake_vars().end()) return std::nullopt;
  return it->second;
}

class Config : public ::testing::Test {
 protected:
  void SetUp() override { fake_vars().clear(); }
  void TearDown() override { fake_vars().clear(); }

  static Result<Settings> parse(std::string_view toml) { return parse_settings(toml, kSource, &fake_env); }

  // Parses `toml`, expects a config_invalid error whose message contains
  // every one of `parts`.
  static void expect_invalid(std::string_view toml, std::initializer_list<std::string_view> parts) {
    const auto r = parse(toml);
    ASSERT_FALSE(r.has_value()) << "parsed without error:\n" << toml;
    EXPECT_EQ(r.error().status, 400);
    EXPECT_EQ(r.error().code, "config_invalid");
    for (const auto part : parts) {
      EXPECT_NE(r.error().message.find(part), std::string::npos)
          << "message: " << r.error().message << "\nmissing: " << part;
    }
  }
};

// DESIGN.md's example, plus a few settings that are not at their defaults.
constexpr std::string_view kFull = R"(
[server]
listen = "127.0.0.1:8080"
threads = 0                        # 0: one per core
max_body_bytes = 10485760
cors_origins = ["https://a.example", "*"]

[storage]
data_dir = "data"
redis_url = ""                     # empty: the embedded KV
sqlite_synchronous = "FULL"

[log]
level = "debug"
format = "json"
access_log = false

[auth]
admin_key_env = "ALOU_ADMIN_KEY"   # bootstrap owner key, optional

[wallet]
domain = "localhost:8080"
uri = "http://localhost:8080"
nonce_ttl_s = 300
token_ttl_s = 86400

[sessions]
ttl_s = 86400
max_messages = 50

[agent]
model = "mock"
max_steps = 8

[[providers]]
name = "deepseek"
kind = "openai"
base_url = "https://api.deepseek.com/v1"
api_key_env = "DEEPSEEK_API_KEY"

[[providers]]
name = "mock"
kind = "mock"

[[providers]]
name = "az"
kind = "azure"
api_version = "2024-06-01"

[[models]]
name = "deepseek-chat"
routes = [{ provider = "deepseek", model = "deepseek-chat", weight = 1 },
          { provider = "az", model = "gpt-4o", weight = 3 }]
fallbacks = ["mock"]
price = { input_per_mtok = 0.27, output_per_mtok = 1.10, cached_input_per_mtok = 0.07 }

[[models]]
name = "mock"
routes = [{ provider = "mock", model = "echo" }]
price = { input_per_mtok = 1, output_per_mtok = 2 }

[[mcp_servers]]
name = "everything"
transport = "stdio"
command = ["npx", "-y", "@modelcontextprotocol/server-everything"]
env = ["PATH"]

[[mcp_servers]]
name = "remote"
transport = "http"
url = "http://127.0.0.1:9000/mcp"
)";

TEST_F(Config, FullExampleParsesIntoTypedValues) {
  const auto r = parse(kFull);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  const Settings& s = *r;
  EXPECT_EQ(s.source, kSource);
  EXPECT_EQ(s.server.listen, "127.0.0.1:8080");
  EXPECT_EQ(s.server.threads, 0);
  EXPECT_EQ(s.server.max_body_bytes, 10485760u);
  EXPECT_EQ(s.server.cors_origins, (std::vector<std::string>{"https://a.example", "*"}));
  EXPECT_EQ(s.storage.sqlite_synchronous, "FULL");
  EXPECT_EQ(s.log.level, "debug");
  EXPECT_EQ(s.log.format, "json");
  EXPECT_FALSE(s.log.access_log);
  EXPECT_EQ(s.wallet.nonce_ttl_s, 300u);
  EXPECT_EQ(s.sessions.max_messages, 50u);
  EXPECT_EQ(s.agent.max_steps, 8u);

  ASSERT_EQ(s.providers.size(), 3u);
  EXPECT_EQ(s.providers[0].name, "deepseek");
  EXPECT_EQ(s.providers[0].kind, "openai");
  EXPECT_EQ(s.providers[0].base_url, "https://api.deepseek.com/v1");
  EXPECT_EQ(s.providers[0].api_key_env, "DEEPSEEK_API_KEY");
  EXPECT_TRUE(s.providers[0].extra.empty());
  EXPECT_EQ(s.providers[1].kind, "mock");
  EXPECT_EQ(s.providers[2].extra, (std::map<std::string, std::string>{{"api_version", "2024-06-01"}}));

  ASSERT_EQ(s.models.size(), 2u);
  const auto& m = s.models[0];
  EXPECT_EQ(m.name, "deepseek-chat");
  ASSERT_EQ(m.routes.size(), 2u);
  EXPECT_EQ(m.routes[0].provider, "deepseek");
  EXPECT_EQ(m.routes[0].model, "deepseek-chat");
  EXPECT_EQ(m.routes[0].weight, 1u);
  EXPECT_EQ(m.routes[1].provider, "az");
  EXPECT_EQ(m.routes[1].model, "gpt-4o");
  EXPECT_EQ(m.routes[1].weight, 3u);
  EXPECT_EQ(m.fallbacks, std::vector<std::string>{"mock"});
  EXPECT_DOUBLE_EQ(m.price.input_per_mtok, 0.27);
  EXPECT_DOUBLE_EQ(m.price.output_per_mtok, 1.10);
  ASSERT_TRUE(m.price.cached_input_per_mtok.has_value());
  EXPECT_DOUBLE_EQ(*m.price.cached_input_per_mtok, 0.07);

  // A route without a weight weighs 1; integer prices are numbers too.
  const auto& mock = s.models[1];
  ASSERT_EQ(mock.routes.size(), 1u);
  EXPECT_EQ(mock.routes[0].weight, 1u);
  EXPECT_TRUE(mock.fallbacks.empty());
  EXPECT_DOUBLE_EQ(mock.price.input_per_mtok, 1.0);
  EXPECT_DOUBLE_EQ(mock.price.output_per_mtok, 2.0);
  EXPECT_FALSE(mock.price.cached_input_per_mtok.has_value());

  ASSERT_EQ(s.mcp_servers.size(), 2u);
  EXPECT_EQ(s.mcp_servers[0].name, "everything");
  EXPECT_EQ(s.mcp_servers[0].transport, "stdio");
  EXPECT_EQ(s.mcp_servers[0].command,
            (std::vector<std::string>{"npx", "-y", "@modelcontextprotocol/server-everything"}));
  EXPECT_EQ(s.mcp_servers[0].env, std::vector<std::string>{"PATH"});
  EXPECT_EQ(s.mcp_servers[1].transport, "http");
  EXPECT_EQ(s.mcp_servers[1].url, "http://127.0.0.1:9000/mcp");
}

TEST_F(Config, AbsentSectionsKeepDefaults) {
  const auto r = parse("[server]\nthreads = 3\n");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  const Settings& s = *r;
  const ServerSettings server_defaults;
  EXPECT_EQ(s.server.threads, 3);
  EXPECT_EQ(s.server.listen, server_defaults.listen);
  EXPECT_EQ(s.server.max_body_bytes, server_defaults.max_body_bytes);
  EXPECT_EQ(s.server.idle_timeout_ms, server_defaults.idle_timeout_ms);
  EXPECT_TRUE(s.server.cors_origins.empty());
  EXPECT_TRUE(s.server.tls_cert.empty());
  EXPECT_EQ(s.storage.data_dir, "data");
  EXPECT_EQ(s.storage.redis_url, "");
  EXPECT_EQ(s.storage.sqlite_synchronous, "NORMAL");
  EXPECT_EQ(s.log.level, "info");
  EXPECT_EQ(s.log.format, "text");
  EXPECT_TRUE(s.log.access_log);
  EXPECT_EQ(s.auth.admin_key_env, "ALOU_ADMIN_KEY");
  EXPECT_EQ(s.wallet.token_ttl_s, 86400u);
  EXPECT_EQ(s.sessions.ttl_s, 86400u);
  EXPECT_EQ(s.agent.model, "mock");
  EXPECT_TRUE(s.providers.empty());
  EXPECT_TRUE(s.models.empty());
  EXPECT_TRUE(s.mcp_servers.empty());
}

TEST_F(Config, EmptyFileIsAllDefaults) {
  const auto r = parse("");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->server.listen, "127.0.0.1:8080");
  EXPECT_EQ(r->server.threads, 0);
}

TEST_F(Config, EnvOverridesFile) {
  fake_vars() = {{"ALOU_SERVER_LISTEN", "0.0.0.0:9999"},
                 {"ALOU_SERVER_THREADS", "7"},
                 {"ALOU_STORAGE_REDIS_URL", "redis://127.0.0.1:6379/2"},
                 {"ALOU_LOG_ACCESS_LOG", "false"},
                 {"ALOU_SERVER_CORS_ORIGINS", "a,b"}};
  const auto r = parse(R"(
[server]
listen = "127.0.0.1:8080"
threads = 2
cors_origins = ["https://file.example"]
[storage]
redis_url = "redis://file"
[log]
access_log = true
)");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->server.listen, "0.0.0.0:9999");
  EXPECT_EQ(r->server.threads, 7);
  EXPECT_EQ(r->storage.redis_url, "redis://127.0.0.1:6379/2");
  EXPECT_FALSE(r->log.access_log);
  EXPECT_EQ(r->server.cors_origins, (std::vector<std::string>{"a", "b"}));
}

TEST_F(Config, EnvOverridesDefaultsWithoutASection) {
  fake_vars() = {{"ALOU_AGENT_MAX_STEPS", "3"}, {"ALOU_LOG_FORMAT", "json"}};
  const auto r = parse("");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->agent.max_steps, 3u);
  EXPECT_EQ(r->log.format, "json");
}

TEST_F(Config, UnsetEnvLeavesFileValue) {
  fake_vars() = {{"ALOU_SERVER_LISTENER", "0.0.0.0:1"}};  // not a setting: ignored
  const auto r = parse("[server]\nlisten = \"10.0.0.1:81\"\n");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->server.listen, "10.0.0.1:81");
}

TEST_F(Config, SyntaxErrorNamesFileAndLine) {
  expect_invalid("[server]\nthreads = 1\nlisten = \n", {"conf/alou.toml:3:"});
}

TEST_F(Config, UnknownSectionIsRejected) {
  expect_invalid("[servre]\nthreads = 1\n", {"conf/alou.toml: servre: unknown section"});
}

TEST_F(Config, UnknownKeyIsRejected) {
  expect_invalid("[server]\nlisen = \"127.0.0.1:1\"\n", {"conf/alou.toml: server.lisen: unknown setting"});
}

TEST_F(Config, UnknownKeyInAProviderIsRejected) {
  expect_invalid("[[providers]]\nname = \"a\"\nkind = \"mock\"\napi_key = \"sk-secret\"\n",
                 {"conf/alou.toml: providers[0].api_key: unknown setting"});
}

TEST_F(Config, WrongTypeIsRejected) {
  expect_invalid("[server]\nthreads = \"x\"\n",
                 {"conf/alou.toml: server.threads: ", "expected a non-negative integer", "got \"x\""});
}

TEST_F(Config, SectionThatIsNotATableIsRejected) {
  expect_invalid("server = 1\n", {"conf/alou.toml: server: expected a table"});
}

TEST_F(Config, OutOfRangeIsRejected) {
  expect_invalid("[server]\nthreads = 1000\n",
                 {"conf/alou.toml: server.threads: ", "expected an integer in [0, 256], got 1000"});
}

TEST_F(Config, BusyPollDefaultsTo50AndIsBounded) {
  const auto d = parse("");
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(d->server.busy_poll_us, 50u);
  const auto off = parse("[server]\nbusy_poll_us = 0\n");
  ASSERT_TRUE(off.has_value()) << off.error().message;
  EXPECT_EQ(off->server.busy_poll_us, 0u);
  expect_invalid("[server]\nbusy_poll_us = 100001\n",
                 {"conf/alou.toml: server.busy_poll_us: ", "expected an integer in [0, 100000], got 100001"});
  fake_vars() = {{"ALOU_SERVER_BUSY_POLL_US", "fast"}};
  expect_invalid("", {"ALOU_SERVER_BUSY_POLL_US", "expected a non-negative integer", "got \"fast\""});
}

TEST_F(Config, NegativeIntegerIsRejected) {
  expect_invalid("[sessions]\nmax_messages = -1\n", {"conf/alou.toml: sessions.max_messages: ", "got -1"});
}

TEST_F(Config, BadEnumIsRejected) {
  expect_invalid("[log]\nformat = \"xml\"\n",
                 {"conf/alou.toml: log.format: ", "expected one of text, json", "got \"xml\""});
}

TEST_F(Config, EnvNonIntegerIsRejected) {
  fake_vars() = {{"ALOU_SERVER_THREADS", "4x"}};
  expect_invalid("[server]\nthreads = 2\n",
                 {"conf/alou.toml: ", "ALOU_SERVER_THREADS", "expected a non-negative integer", "got \"4x\""});
}

TEST_F(Config, EnvOutOfRangeIsRejected) {
  fake_vars() = {{"ALOU_SERVER_THREADS", "-1"}};
  expect_invalid("", {"ALOU_SERVER_THREADS", "expected an integer in [0, 256], got -1"});
}

TEST_F(Config, EnvBadBoolIsRejected) {
  fake_vars() = {{"ALOU_LOG_ACCESS_LOG", "no"}};
  expect_invalid("", {"ALOU_LOG_ACCESS_LOG", "expected true or false", "got \"no\""});
}

TEST_F(Config, EnvBadEnumIsRejected) {
  fake_vars() = {{"ALOU_LOG_FORMAT", "xml"}};
  expect_invalid("", {"ALOU_LOG_FORMAT", "expected one of text, json"});
}

TEST_F(Config, RouteNamingUnknownProviderIsRejected) {
  expect_invalid(R"(
[[providers]]
name = "a"
kind = "mock"
[[models]]
name = "m"
routes = [{ provider = "a", model = "x" }, { provider = "nope", model = "x" }]
)",
                 {"conf/alou.toml: models[0].routes[1].provider: ", "no provider named \"nope\""});
}

TEST_F(Config, RouteWithoutProviderIsRejected) {
  expect_invalid("[[models]]\nname = \"m\"\nroutes = [{ model = \"x\" }]\n",
                 {"conf/alou.toml: models[0].routes[0].provider: is required"});
}

TEST_F(Config, DuplicateProviderIsRejected) {
  expect_invalid(R"(
[[providers]]
name = "a"
kind = "mock"
[[providers]]
name = "a"
kind = "openai"
)",
                 {"conf/alou.toml: providers[1].name: ", "duplicate provider \"a\""});
}

TEST_F(Config, DuplicateModelIsRejected) {
  expect_invalid("[[models]]\nname = \"m\"\n[[models]]\nname = \"m\"\n",
                 {"conf/alou.toml: models[1].name: ", "duplicate model \"m\""});
}

TEST_F(Config, TlsCertWithoutKeyIsRejected) {
  expect_invalid("[server]\ntls_cert = \"cert.pem\"\n",
                 {"conf/alou.toml: server.tls_key: ", "tls_cert and tls_key must be set together"});
}

TEST_F(Config, TlsCertAndKeyTogetherAreAccepted) {
  const auto r = parse("[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->server.tls_cert, "cert.pem");
  EXPECT_EQ(r->server.tls_key, "key.pem");
}

TEST_F(Config, MissingProviderNameIsRejected) {
  expect_invalid("[[providers]]\nkind = \"mock\"\n", {"conf/alou.toml: providers[0].name: is required"});
}

TEST_F(Config, BadProviderKindIsRejected) {
  expect_invalid("[[providers]]\nname = \"a\"\nkind = \"openia\"\n",
                 {"conf/alou.toml: providers[0].kind: ", "got \"openia\""});
}

TEST_F(Config, NegativePriceIsRejected) {
  expect_invalid("[[models]]\nname = \"m\"\nprice = { input_per_mtok = -1, output_per_mtok = 1 }\n",
                 {"conf/alou.toml: models[0].price: prices must not be negative"});
}

TEST_F(Config, NegativeCachedPriceIsRejected) {
  expect_invalid(
      "[[models]]\nname = \"m\"\nprice = { input_per_mtok = 1, output_per_mtok = 1, cached_input_per_mtok = -0.5 }\n",
      {"conf/alou.toml: models[0].price: prices must not be negative"});
}

TEST_F(Config, StdioMcpServerWithoutCommandIsRejected) {
  expect_invalid("[[mcp_servers]]\nname = \"x\"\ntransport = \"stdio\"\n",
                 {"conf/alou.toml: mcp_servers[0].command: is required for stdio"});
}

TEST_F(Config, McpServerTimeoutsAreRead) {
  const auto r = parse("[[mcp_servers]]\nname = \"x\"\ntransport = \"http\"\nurl = \"http://h/mcp\"\n"
                       "timeout_ms = 1500\nping_interval_ms = 200\n");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->mcp_servers[0].timeout_ms, 1500u);
  EXPECT_EQ(r->mcp_servers[0].ping_interval_ms, 200u);
  const auto d = parse("[[mcp_servers]]\nname = \"x\"\ntransport = \"http\"\nurl = \"http://h/mcp\"\n");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->mcp_servers[0].timeout_ms, 30000u);
}

TEST_F(Config, McpServerNamesMustPrefixToolNames) {
  expect_invalid("[[mcp_servers]]\nname = \"a__b\"\ntransport = \"http\"\nurl = \"http://h\"\n",
                 {"mcp_servers[0].name: ", "without \"__\""});
  expect_invalid("[[mcp_servers]]\nname = \"a.b\"\ntransport = \"http\"\nurl = \"http://h\"\n",
                 {"mcp_servers[0].name: "});
  expect_invalid("[[mcp_servers]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://h\"\n"
                 "[[mcp_servers]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://h\"\n",
                 {"mcp_servers[1].name: duplicate MCP server \"a\""});
  expect_invalid("[[mcp_servers]]\nname = \"a\"\nurl = \"http://h\"\n", {"mcp_servers[0].transport: is required"});
  expect_invalid("[[mcp_servers]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://h\"\ntimeout_ms = 0\n",
                 {"mcp_servers[0].timeout_ms"});
}

TEST_F(Config, ListenWithoutPortIsRejected) {
  expect_invalid("[server]\nlisten = \"localhost\"\n", {"conf/alou.toml: server.listen: ", "HOST:PORT"});
}

TEST_F(Config, MissingFileIsAnError) {
  const auto r = load_settings("/nonexistent/alou-config-test.toml", &fake_env);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, "config_invalid");
  EXPECT_NE(r.error().message.find("/nonexistent/alou-config-test.toml"), std::string::npos);
}

TEST_F(Config, AnthropicProviderSettings) {
  const auto r = parse(
      "[[providers]]\nname = \"claude\"\nkind = \"anthropic\"\napi_key_env = \"K\"\n"
      "anthropic_version = \"2023-06-01\"\ndefault_max_tokens = 1024\n");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  ASSERT_EQ(r->providers.size(), 1u);
  EXPECT_EQ(r->providers[0].extra, (std::map<std::string, std::string>{{"anthropic_version", "2023-06-01"},
                                                                      {"default_max_tokens", "1024"}}));
  expect_invalid("[[providers]]\nname = \"c\"\nkind = \"anthropic\"\ndefault_max_tokens = 0\n",
                 {"default_max_tokens"});
  expect_invalid("[[providers]]\nname = \"c\"\nkind = \"anthropic\"\ndefault_max_tokens = \"many\"\n",
                 {"default_max_tokens"});
}

}  // namespace
}  // namespace alou

// Wallet settings (issue 5): integer lists, from the file and the environment.
namespace alou {
namespace {

TEST(ConfigWallet, ChainIdsAndWebDirParse) {
  const auto r = parse_settings(
      "[server]\nweb_dir = \"/srv/web\"\n[wallet]\nchain_ids = [1, 10, 8453]\nsolana_chains = [\"devnet\"]\n"
      "jwt_secret_env = \"MY_SECRET\"\nnonce_per_minute = 5\nclock_skew_s = 0\n",
      "w.toml", [](const char*) -> std::optional<std::string> { return std::nullopt; });
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->server.web_dir, "/srv/web");
  EXPECT_EQ(r->wallet.chain_ids, (std::vector<std::uint64_t>{1, 10, 8453}));
  EXPECT_EQ(r->wallet.solana_chains, (std::vector<std::string>{"devnet"}));
  EXPECT_EQ(r->wallet.jwt_secret_env, "MY_SECRET");
  EXPECT_EQ(r->wallet.nonce_per_minute, 5u);
  EXPECT_EQ(r->wallet.clock_skew_s, 0u);
}

TEST(ConfigWallet, DefaultsAreMainnets) {
  const auto r = parse_settings("", "w.toml", [](const char*) -> std::optional<std::string> { return std::nullopt; });
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->wallet.chain_ids, (std::vector<std::uint64_t>{1}));
  EXPECT_EQ(r->wallet.solana_chains, (std::vector<std::string>{"mainnet"}));
  EXPECT_EQ(r->server.web_dir, "web");
}

TEST(ConfigWallet, ChainIdsMustBeNonNegativeIntegers) {
  auto none = [](const char*) -> std::optional<std::string> { return std::nullopt; };
  for (const char* bad : {"chain_ids = [-1]", "chain_ids = [\"1\"]", "chain_ids = 1", "chain_ids = [1.5]"}) {
    const auto r = parse_settings(std::string("[wallet]\n") + bad + "\n", "w.toml", none);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_NE(r.error().message.find("wallet.chain_ids: expected an array of non-negative integers"),
              std::string::npos)
        << r.error().message;
  }
}

TEST(ConfigWallet, ChainIdsFromTheEnvironment) {
  auto env_ok = [](const char* n) -> std::optional<std::string> {
    if (std::string_view(n) == "ALOU_WALLET_CHAIN_IDS") return std::string("1,137");
    return std::nullopt;
  };
  const auto r = parse_settings("", "w.toml", env_ok);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->wallet.chain_ids, (std::vector<std::uint64_t>{1, 137}));
  auto env_bad = [](const char* n) -> std::optional<std::string> {
    if (std::string_view(n) == "ALOU_WALLET_CHAIN_IDS") return std::string("1,x");
    return std::nullopt;
  };
  const auto bad = parse_settings("", "w.toml", env_bad);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("ALOU_WALLET_CHAIN_IDS"), std::string::npos) << bad.error().message;
}

}  // namespace
}  // namespace alou
