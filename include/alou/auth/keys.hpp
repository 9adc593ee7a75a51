#pragma once
// API keys (sk-alou-...): only a SHA-256 of the secret is stored, in the
// `api_keys` table; the secret is shown once, at creation. Lookups on the
// request path are cached in memory for auth.key_cache_ms (so a revoked key
// stops working within that time on every instance sharing the database).
#include "alou/core/error.hpp"
#include "alou/core/principal.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace alou::storage {
class Database;
}
namespace SQLite {
class Database;
}

namespace alou::auth {

inline constexpr std::string_view kKeyPrefix = "sk-alou-";

struct ApiKey {
  std::string id;
  std::string name;
  std::string prefix;  // the secret's first 12 characters, for display
  Role role = Role::kMember;
  std::vector<std::string> models;
  std::optional<std::int64_t> rpm;
  std::optional<std::int64_t> tpm;
  std::optional<std::int64_t> max_concurrency;
  std::optional<std::int64_t> budget_nanos;
  std::vector<std::string> tools;  // tool allow-list (names, "<server>__*"); empty: every tool
  std::int64_t created_at_ms = 0;
  std::optional<std::int64_t> revoked_at_ms;
};

struct NewKey {
  std::string name;
  Role role = Role::kMember;
  std::vector<std::string> models;
  std::optional<std::int64_t> rpm;
  std::optional<std::int64_t> tpm;
  std::optional<std::int64_t> max_concurrency;
  std::optional<std::int64_t> budget_nanos;
  std::vector<std::string> tools;  // see ApiKey::tools
};

// Hex SHA-256 of a secret.
std::string hash_secret(std::string_view secret);
// Compares two equal-length strings without an early exit.
bool constant_time_equal(std::string_view a, std::string_view b);
Principal principal_of(const ApiKey& key);

class KeyStore final {
 public:
  KeyStore(storage::Database& db, std::chrono::milliseconds cache_ttl, std::optional<std::string> admin_key);

  // Blocking (CLI and admin). Errors: 400 bad input (invalid_name, invalid_limit,
  // invalid_budget, invalid_tools), 409 name taken, 404.
  Result<std::pair<ApiKey, std::string>> create(const NewKey& key);
  Result<std::vector<ApiKey>> list();
  // By id or name; revoking twice is a 409.
  Result<ApiKey> revoke(std::string_view id_or_name);

  // By id or name (revoked keys too); nullopt if there is none.
  boost::asio::awaitable<std::optional<ApiKey>> find(std::string id_or_name);
  std::optional<ApiKey> find_blocking(const std::string& id_or_name);  // CLI

  // The request path: the principal for a secret, or nullopt. Runs the
  // SQLite lookup on the database thread; cached.
  boost::asio::awaitable<std::optional<Principal>> authenticate(std::string secret);

 private:
  static std::optional<ApiKey> find_sync(SQLite::Database& c, const std::string& id_or_name);
  struct Cached {
    std::optional<Principal> principal;
    std::chrono::steady_clock::time_point expires;
  };
  storage::Database& db_;
  std::chrono::milliseconds cache_ttl_;
  std::optional<std::string> admin_hash_;
  std::mutex mu_;
  std::unordered_map<std::string, Cached> cache_;
};

}  // namespace alou::auth
