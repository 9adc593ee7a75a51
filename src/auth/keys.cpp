#include "alou/auth/keys.hpp"

#include "alou/core/random.hpp"
#include "alou/core/sha256.hpp"
#include "alou/storage/database.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>
#include <openssl/crypto.h>

#include <sstream>

namespace alou::auth {
namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::optional<std::int64_t> opt_int(const SQLite::Column& c) {
  if (c.isNull()) return std::nullopt;
  return c.getInt64();
}

void bind_opt(SQLite::Statement& st, int i, const std::optional<std::int64_t>& v) {
  if (v) {
    st.bind(i, *v);
  } else {
    st.bind(i);
  }
}

constexpr const char* kColumns =
    "id, name, prefix, role, models, rpm, tpm, budget_nanos, created_at_ms, revoked_at_ms, max_concurrency, tools";
constexpr int kColumnCount = 12;  // the index of the first column selected after kColumns

ApiKey row_to_key(SQLite::Statement& st) {
  ApiKey k;
  k.id = st.getColumn(0).getString();
  k.name = st.getColumn(1).getString();
  k.prefix = st.getColumn(2).getString();
  k.role = st.getColumn(3).getString() == "owner" ? Role::kOwner : Role::kMember;
  k.models = split(st.getColumn(4).getString());
  k.rpm = opt_int(st.getColumn(5));
  k.tpm = opt_int(st.getColumn(6));
  k.budget_nanos = opt_int(st.getColumn(7));
  k.created_at_ms = st.getColumn(8).getInt64();
  k.revoked_at_ms = opt_int(st.getColumn(9));
  k.max_concurrency = opt_int(st.getColumn(10));
  k.tools = split(st.getColumn(11).getString());
  return k;
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_' || c == '.' || c == '@';
    if (!ok) return false;
  }
  return true;
}

// An exposed tool name (^[a-zA-Z0-9_-]{1,64}$, as the MCP module exposes
// them) or "<server>__*".
bool valid_tool_entry(std::string_view t) {
  if (t.ends_with("__*")) t.remove_suffix(1);
  if (t.empty() || t.size() > 64) return false;
  for (const char c : t) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  return t.find_first_not_of('_') != std::string_view::npos;
}

}  // namespace

std::string hash_secret(std::string_view secret) { return sha256_hex(secret); }

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Principal principal_of(const ApiKey& key) {
  Principal p;
  p.kind = Principal::Kind::kApiKey;
  p.id = key.id;
  p.name = key.name;
  p.role = key.role;
  p.models = key.models;
  p.rpm = key.rpm;
  p.tpm = key.tpm;
  p.max_concurrency = key.max_concurrency;
  p.budget_nanos = key.budget_nanos;
  p.tools = key.tools;
  return p;
}

KeyStore::KeyStore(storage::Database& db, std::chrono::milliseconds cache_ttl, std::optional<std::string> admin_key)
    : db_(db), cache_ttl_(cache_ttl) {
  if (admin_key && !admin_key->empty()) admin_hash_ = hash_secret(*admin_key);
}

Result<std::pair<ApiKey, std::string>> KeyStore::create(const NewKey& nk) {
  if (!valid_name(nk.name)) {
    return Error::bad_request("key name must be 1-64 characters of letters, digits, - _ . @", "invalid_name");
  }
  if ((nk.rpm && *nk.rpm <= 0) || (nk.tpm && *nk.tpm <= 0) || (nk.max_concurrency && *nk.max_concurrency <= 0)) {
    return Error::bad_request("rpm, tpm and concurrency must be positive", "invalid_limit");
  }
  if (nk.budget_nanos && *nk.budget_nanos < 0) return Error::bad_request("budget must not be negative", "invalid_budget");
  for (const auto& t : nk.tools) {
    if (!valid_tool_entry(t)) {
      return Error::bad_request("tool \"" + t + "\" is neither a tool name ([a-zA-Z0-9_-], at most 64) nor SERVER__*",
                                "invalid_tools");
    }
  }
  ApiKey k;
  const std::string secret = std::string(kKeyPrefix) + random_alnum(40);
  k.id = "key_" + random_alnum(16);
  k.name = nk.name;
  k.prefix = secret.substr(0, 12);
  k.role = nk.role;
  k.models = nk.models;
  k.rpm = nk.rpm;
  k.tpm = nk.tpm;
  k.max_concurrency = nk.max_concurrency;
  k.budget_nanos = nk.budget_nanos;
  k.tools = nk.tools;
  k.created_at_ms = now_ms();
  const std::string hash = hash_secret(secret);
  try {
    const bool inserted = db_.run_sync([&](SQLite::Database& c) {
      SQLite::Statement exists(c, "SELECT 1 FROM api_keys WHERE name = ?");
      exists.bind(1, k.name);
      if (exists.executeStep()) return false;
      SQLite::Statement st(c,
                           "INSERT INTO api_keys (id, name, secret_hash, prefix, role, models, rpm, tpm, "
                           "budget_nanos, created_at_ms, max_concurrency, tools) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)");
      st.bind(1, k.id);
      st.bind(2, k.name);
      st.bind(3, hash);
      st.bind(4, k.prefix);
      st.bind(5, role_name(k.role));
      st.bind(6, join(k.models));
      bind_opt(st, 7, k.rpm);
      bind_opt(st, 8, k.tpm);
      bind_opt(st, 9, k.budget_nanos);
      st.bind(10, k.created_at_ms);
      bind_opt(st, 11, k.max_concurrency);
      st.bind(12, join(k.tools));
      st.exec();
      return true;
    });
    if (!inserted) return Error::conflict("a key named \"" + k.name + "\" already exists", "name_taken");
  } catch (const std::exception& e) {
    return Error::internal(std::string("cannot store the key: ") + e.what(), "storage_error");
  }
  return std::make_pair(std::move(k), secret);
}

Result<std::vector<ApiKey>> KeyStore::list() {
  try {
    return db_.run_sync([](SQLite::Database& c) {
      std::vector<ApiKey> out;
      SQLite::Statement st(c, std::string("SELECT ") + kColumns + " FROM api_keys ORDER BY created_at_ms, id");
      while (st.executeStep()) out.push_back(row_to_key(st));
      return out;
    });
  } catch (const std::exception& e) {
    return Error::internal(std::string("cannot list keys: ") + e.what(), "storage_error");
  }
}

std::optional<ApiKey> KeyStore::find_sync(SQLite::Database& c, const std::string& id_or_name) {
  SQLite::Statement st(c, std::string("SELECT ") + kColumns + " FROM api_keys WHERE id = ? OR name = ?");
  st.bind(1, id_or_name);
  st.bind(2, id_or_name);
  if (!st.executeStep()) return std::nullopt;
  return row_to_key(st);
}

boost::asio::awaitable<std::optional<ApiKey>> KeyStore::find(std::string id_or_name) {
  try {
    // Named first: GCC 12 destroys a lambda temporary of a co_await twice.
    auto lookup = [id_or_name](SQLite::Database& c) { return find_sync(c, id_or_name); };
    auto r = co_await db_.run(std::move(lookup));
    co_return r;
  } catch (const std::exception& e) {
    spdlog::error("keys: {}", e.what());
    co_return std::nullopt;
  }
}

std::optional<ApiKey> KeyStore::find_blocking(const std::string& id_or_name) {
  return db_.run_sync([&](SQLite::Database& c) { return find_sync(c, id_or_name); });
}

Result<ApiKey> KeyStore::revoke(std::string_view id_or_name) {
  try {
    struct Outcome {
      ApiKey key;
      bool revoked_now = false;
    };
    auto found = db_.run_sync([&](SQLite::Database& c) -> std::optional<Outcome> {
      SQLite::Statement st(c, std::string("SELECT ") + kColumns + " FROM api_keys WHERE id = ? OR name = ?");
      st.bind(1, std::string(id_or_name));
      st.bind(2, std::string(id_or_name));
      if (!st.executeStep()) return std::nullopt;
      Outcome o{row_to_key(st)};
      if (!o.key.revoked_at_ms) {
        o.key.revoked_at_ms = now_ms();
        SQLite::Statement up(c, "UPDATE api_keys SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL");
        up.bind(1, *o.key.revoked_at_ms);
        up.bind(2, o.key.id);
        o.revoked_now = up.exec() == 1;
      }
      return o;
    });
    if (!found) return Error::not_found("no key with id or name \"" + std::string(id_or_name) + "\"", "key_not_found");
    if (!found->revoked_now) return Error::conflict("key " + found->key.id + " is already revoked", "already_revoked");
    std::lock_guard lock(mu_);
    cache_.clear();
    return found->key;
  } catch (const std::exception& e) {
    return Error::internal(std::string("cannot revoke the key: ") + e.what(), "storage_error");
  }
}

boost::asio::awaitable<std::optional<Principal>> KeyStore::authenticate(std::string secret) {
  const std::string hash = hash_secret(secret);
  if (admin_hash_ && constant_time_equal(hash, *admin_hash_)) {
    Principal p;
    p.kind = Principal::Kind::kAdminKey;
    p.id = "admin";
    p.name = "admin";
    p.role = Role::kOwner;
    co_return p;
  }
  if (!secret.starts_with(kKeyPrefix)) co_return std::nullopt;
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    if (auto it = cache_.find(hash); it != cache_.end() && it->second.expires > now) co_return it->second.principal;
  }
  std::optional<Principal> result;
  try {
    // Returns a Principal with an empty id when there is no such live key:
    // GCC 12 mis-handles a std::optional<Principal> (a class with vectors)
    // carried back through the database thread's awaitable (UBSan saw its
    // engaged flag uninitialised), so the optional is made here instead.
    auto lookup = [hash](SQLite::Database& c) -> Principal {
      SQLite::Statement st(c, std::string("SELECT ") + kColumns + ", secret_hash FROM api_keys WHERE secret_hash = ?");
      st.bind(1, hash);
      if (!st.executeStep()) return {};
      // The index lookup found the row; the stored hash is still compared
      // in constant time so no timing depends on how much of it matched.
      if (!constant_time_equal(st.getColumn(kColumnCount).getString(), hash)) return {};
      ApiKey k = row_to_key(st);
      if (k.revoked_at_ms) return {};
      return principal_of(k);
    };
    // Named first: GCC 12 destroys lambda temporaries in co_await twice.
    Principal found = co_await db_.run(std::move(lookup));
    if (!found.id.empty()) result = std::move(found);
  } catch (const std::exception&) {
    co_return std::nullopt;
  }
  std::lock_guard lock(mu_);
  // Bounded: a flood of random keys must not grow memory without limit.
  if (cache_.size() > 100'000) cache_.clear();
  // Unknown keys are remembered briefly only, so a new key works at once.
  const auto ttl = result ? cache_ttl_ : std::min(cache_ttl_, std::chrono::milliseconds(1000));
  cache_[hash] = Cached{result, now + ttl};
  co_return result;
}

}  // namespace alou::auth
