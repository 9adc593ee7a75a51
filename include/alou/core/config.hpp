#pragma once
// Typed, immutable settings parsed once from TOML (config/alou.toml) with
// ALOU_<SECTION>_<KEY> environment overrides. Secrets are never stored here:
// settings only name the environment variable that holds them.
#include "alou/core/error.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace alou {

struct ServerSettings {
  std::string listen = "127.0.0.1:8080";
  int threads = 0;                                // 0: one per core
  std::uint64_t max_body_bytes = 10 * 1024 * 1024;
  std::uint32_t max_header_bytes = 16 * 1024;
  std::uint32_t max_connections = 20000;
  std::uint32_t header_timeout_ms = 10'000;       // to receive a full request head
  std::uint32_t body_timeout_ms = 60'000;         // to receive the body
  std::uint32_t idle_timeout_ms = 75'000;         // keep-alive between requests
  std::uint32_t shutdown_timeout_ms = 10'000;     // grace for in-flight work
  std::uint32_t sse_heartbeat_ms = 15'000;
  std::uint32_t sse_queue_events = 256;
  std::uint32_t ws_max_message_bytes = 1024 * 1024;
  std::string tls_cert;                           // both set: the listener speaks TLS
  std::string tls_key;
  std::vector<std::string> cors_origins;          // empty: no CORS headers; "*" allowed
  std::string web_dir = "web";                    // static pages (/login); relative to the working dir
  std::uint32_t busy_poll_us = 50;                // io threads poll this long before sleeping (0: never)

  // The io threads `threads` asks for (0: one per core, at least one).
  unsigned io_threads() const;
};

struct StorageSettings {
  std::string data_dir = "data";
  std::string redis_url;                          // empty: the embedded KV
  std::string sqlite_synchronous = "NORMAL";      // NORMAL or FULL
  std::uint32_t redis_timeout_ms = 2000;          // deadline on every Redis call
  std::uint32_t kv_flush_ms = 50;                 // embedded KV write-behind period
};

struct LogSettings {
  std::string level = "info";
  std::string format = "text";                    // text or json
  bool access_log = true;
};

struct AuthSettings {
  std::string admin_key_env = "ALOU_ADMIN_KEY";
  std::uint32_t key_cache_ms = 5000;              // how long a key lookup is cached
};

struct WalletSettings {
  std::string domain = "localhost:8080";
  std::string uri = "http://localhost:8080";
  std::uint32_t nonce_ttl_s = 300;
  std::uint32_t token_ttl_s = 86400;
  std::vector<std::uint64_t> chain_ids = {1};     // EIP-155 chain ids accepted in SIWE messages
  std::vector<std::string> solana_chains = {"mainnet"};  // SIWS Chain ID values accepted
  std::string jwt_secret_env = "ALOU_JWT_SECRET"; // else <data_dir>/jwt.secret (0600)
  std::uint32_t nonce_per_minute = 30;            // nonces issued per client IP per minute
  std::uint32_t clock_skew_s = 60;                // tolerated for Issued At / Not Before
};

struct SessionsSettings {
  std::uint32_t ttl_s = 86400;
  std::uint32_t max_messages = 50;
};

struct AgentSettings {
  std::string model = "mock";
  std::uint32_t max_steps = 8;                   // model calls per run
  std::uint32_t workers = 4;                     // runs at once; more wait in the queue
  std::uint32_t queue_max = 1000;                // runs waiting; past it: 503 queue_full
  std::uint32_t tool_timeout_s = 30;             // each tool call of a run
  std::uint32_t approval_ttl_s = 86400;          // a pending approval expires after this
  std::uint32_t max_tool_output_bytes = 65536;   // a tool result past this is truncated (and says so)
  // Risk class overrides by exposed tool name or "<server>__*":
  // read | write | external_write ("read_only" = read).
  std::map<std::string, std::string> tool_risk;
};

struct BillingSettings {
  std::uint32_t default_max_output_tokens = 4096;  // the hold when a request sets no max_tokens
  std::uint32_t checkpoint_every = 1000;           // ledger entries between signed checkpoints
};

struct ProviderSettings {
  std::string name;
  std::string kind;                               // mock, openai, anthropic, gemini, azure, bedrock
  std::string base_url;
  std::string api_key_env;
  std::map<std::string, std::string> extra;       // kind-specific string options
};

struct RouteSettings {
  std::string provider;
  std::string model;
  std::uint32_t weight = 1;
};

struct PriceSettings {
  double input_per_mtok = 0;
  double output_per_mtok = 0;
  std::optional<double> cached_input_per_mtok;
};

struct ModelSettings {
  std::string name;
  std::vector<RouteSettings> routes;
  std::vector<std::string> fallbacks;
  PriceSettings price;
  // The most output a request may produce when it sets no limit of its own
  // (the cap the gateway sends upstream and the hold covers); 0: the
  // billing default_max_output_tokens.
  std::uint32_t max_output_tokens = 0;
};

struct McpServerSettings {
  std::string name;
  std::string transport;                          // stdio or http
  std::vector<std::string> command;
  std::string url;
  std::vector<std::string> env;                   // names allowed through
  std::string cwd;
  std::uint32_t timeout_ms = 30'000;              // deadline of every request to the server
  std::uint32_t ping_interval_ms = 30'000;        // health ping; a missed ping restarts it
};

struct Settings {
  std::string source;                             // the file it came from
  ServerSettings server;
  StorageSettings storage;
  LogSettings log;
  AuthSettings auth;
  WalletSettings wallet;
  SessionsSettings sessions;
  AgentSettings agent;
  BillingSettings billing;
  std::vector<ProviderSettings> providers;
  std::vector<ModelSettings> models;
  std::vector<McpServerSettings> mcp_servers;
};

// Where the environment comes from (injectable for tests).
using EnvLookup = std::optional<std::string> (*)(const char* name);
std::optional<std::string> process_env(const char* name);

// Parses TOML text. `source` names the file in error messages. Errors name
// the file, the key and what is wrong ("config/alou.toml: server.threads:
// expected an integer >= 0, got \"x\"").
Result<Settings> parse_settings(std::string_view toml_text, std::string source,
                                EnvLookup env = &process_env);
// Reads and parses a file; a missing file is an error.
Result<Settings> load_settings(const std::string& path, EnvLookup env = &process_env);

}  // namespace alou
