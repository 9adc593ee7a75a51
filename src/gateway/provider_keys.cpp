#include "alou/gateway/provider_keys.hpp"

#include "alou/core/log.hpp"
#include "alou/http/exchange.hpp"
#include "alou/http/router.hpp"
#include "alou/storage/database.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <nlohmann/json.hpp>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <chrono>

namespace alou::gateway {
namespace {

namespace net = boost::asio;
using json = nlohmann::json;

constexpr std::size_t kMinKeyBytes = 8;
constexpr std::size_t kMaxKeyBytes = 4096;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

Error undecryptable() {
  return Error::internal("the stored provider key cannot be decrypted with this master key", "provider_key_undecryptable");
}

}  // namespace

// ---------------------------------------------------------------- MasterKey

Result<MasterKey> MasterKey::parse(std::string_view text) {
  if (sodium_init() < 0) return Error::internal("libsodium failed to initialise");
  text = trim(text);
  std::array<unsigned char, 32> bytes{};
  std::size_t len = 0;
  bool ok = false;
  if (text.size() == 64) {
    ok = sodium_hex2bin(bytes.data(), bytes.size(), text.data(), text.size(), nullptr, &len, nullptr) == 0 &&
         len == bytes.size();
  }
  if (!ok) {
    for (const int variant : {sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
                              sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING}) {
      len = 0;
      if (sodium_base642bin(bytes.data(), bytes.size(), text.data(), text.size(), nullptr, &len, nullptr, variant) ==
              0 &&
          len == bytes.size()) {
        ok = true;
        break;
      }
    }
  }
  if (!ok) {
    sodium_memzero(bytes.data(), bytes.size());
    return Error::bad_request(std::string(kMasterKeyEnv) + " must be 32 bytes as 64 hex digits or base64",
                              "master_key_invalid");
  }
  auto key = from_bytes(bytes);
  sodium_memzero(bytes.data(), bytes.size());
  return key;
}

MasterKey MasterKey::from_bytes(const std::array<unsigned char, 32>& bytes) {
  static_assert(crypto_secretbox_KEYBYTES == 32);
  MasterKey k;
  k.key_ = bytes;
  return k;
}

MasterKey::~MasterKey() { sodium_memzero(key_.data(), key_.size()); }

// The plaintext is context '\0' secret, so opening checks the context too.
std::string MasterKey::seal(std::string_view context, std::string_view plaintext) const {
  std::string message;
  message.reserve(context.size() + 1 + plaintext.size());
  message.append(context).push_back('\0');
  message.append(plaintext);
  std::string out(crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + message.size(), '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(out.data());
  randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);
  crypto_secretbox_easy(nonce + crypto_secretbox_NONCEBYTES, reinterpret_cast<const unsigned char*>(message.data()),
                        message.size(), nonce, key_.data());
  sodium_memzero(message.data(), message.size());
  return out;
}

Result<std::string> MasterKey::open(std::string_view context, std::string_view sealed) const {
  if (sealed.size() < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES) return undecryptable();
  const auto* nonce = reinterpret_cast<const unsigned char*>(sealed.data());
  const std::size_t cipher_len = sealed.size() - crypto_secretbox_NONCEBYTES;
  std::string message(cipher_len - crypto_secretbox_MACBYTES, '\0');
  if (crypto_secretbox_open_easy(reinterpret_cast<unsigned char*>(message.data()), nonce + crypto_secretbox_NONCEBYTES,
                                 cipher_len, nonce, key_.data()) != 0) {
    return undecryptable();
  }
  if (message.size() <= context.size() || std::string_view(message).substr(0, context.size()) != context ||
      message[context.size()] != '\0') {
    sodium_memzero(message.data(), message.size());
    return undecryptable();
  }
  std::string secret = message.substr(context.size() + 1);
  sodium_memzero(message.data(), message.size());
  return secret;
}

// ---------------------------------------------------------------- ProviderKeys

ProviderKeys::ProviderKeys(const Settings& settings, storage::Database& db, std::optional<MasterKey> master,
                           EnvLookup env)
    : db_(db), master_(std::move(master)), env_(env) {
  for (const auto& p : settings.providers) providers_.emplace(p.name, Provider{p.kind, p.api_key_env});
}

bool ProviderKeys::env_has_key(const Provider& p) const {
  if (p.api_key_env.empty()) return false;
  const auto v = env_(p.api_key_env.c_str());
  return v && !v->empty();
}

Result<std::map<std::string, std::string>> ProviderKeys::load_blocking() {
  struct Row {
    std::string provider;
    std::string sealed;
    std::int64_t updated_at_ms = 0;
  };
  std::vector<Row> rows;
  try {
    rows = db_.run_sync([](SQLite::Database& c) {
      std::vector<Row> out;
      SQLite::Statement st(c, "SELECT provider, sealed, updated_at_ms FROM provider_keys ORDER BY provider");
      while (st.executeStep()) {
        auto blob = st.getColumn(1);
        out.push_back(Row{st.getColumn(0).getString(),
                          std::string(static_cast<const char*>(blob.getBlob()), static_cast<std::size_t>(blob.getBytes())),
                          st.getColumn(2).getInt64()});
      }
      return out;
    });
  } catch (const std::exception& e) {
    return Error::internal(std::string("cannot read stored provider keys: ") + e.what(), "storage_error");
  }
  std::map<std::string, std::string> keys;
  std::lock_guard lock(mu_);
  for (const auto& row : rows) {
    loaded_[row.provider] = row.updated_at_ms;
    const auto p = providers_.find(row.provider);
    if (p == providers_.end() || env_has_key(p->second)) continue;
    if (!master_) {
      spdlog::error("provider {}: a key is stored but {} is not set: the provider has no key", row.provider,
                    kMasterKeyEnv);
      continue;
    }
    auto secret = master_->open(row.provider, row.sealed);
    if (!secret) {
      spdlog::error("provider {}: the stored key cannot be decrypted with {} (another master key?): the provider "
                    "has no key",
                    row.provider, kMasterKeyEnv);
      continue;
    }
    log::add_secret(*secret);
    keys.emplace(row.provider, std::move(*secret));
  }
  return keys;
}

void ProviderKeys::add_routes(http::Router& router) {
  const http::RouteOptions owner{.access = http::Access::kOwner};

  router.get(
      "/api/admin/providers",
      [this](http::Exchange& ex) -> net::awaitable<http::Response> {
        auto read = [](SQLite::Database& c) {
          std::map<std::string, std::int64_t> out;
          SQLite::Statement st(c, "SELECT provider, updated_at_ms FROM provider_keys");
          while (st.executeStep()) out.emplace(st.getColumn(0).getString(), st.getColumn(1).getInt64());
          return out;
        };
        std::map<std::string, std::int64_t> stored;
        try {
          stored = co_await db_.run(std::move(read));
        } catch (const std::exception& e) {
          spdlog::error("[{}] cannot list provider keys: {}", ex.request_id, e.what());
          co_return ex.error(Error::internal("cannot read stored provider keys", "storage_error"));
        }
        json data = json::array();
        std::lock_guard lock(mu_);
        for (const auto& [name, p] : providers_) {
          const auto s = stored.find(name);
          const bool env = env_has_key(p);
          const char* source = env ? "env" : s != stored.end() ? "stored" : "none";
          const auto l = loaded_.find(name);
          const bool same_as_start = (s == stored.end() && l == loaded_.end()) ||
                                     (s != stored.end() && l != loaded_.end() && s->second == l->second);
          json j = {{"name", name},
                    {"kind", p.kind},
                    {"api_key_env", p.api_key_env.empty() ? json(nullptr) : json(p.api_key_env)},
                    {"key_source", source},
                    {"restart_required", !env && !same_as_start}};
          if (s != stored.end()) j["key_updated_at_ms"] = s->second;
          data.push_back(std::move(j));
        }
        json body = {{"object", "list"}, {"data", std::move(data)}, {"master_key", master_.has_value()}};
        co_return ex.json(http::Status::ok, body.dump());
      },
      owner);

  router.put(
      "/api/admin/providers/{name}/key",
      [this](http::Exchange& ex) -> net::awaitable<http::Response> {
        const std::string name(ex.param("name"));
        if (!providers_.count(name)) {
          co_return ex.error(Error::not_found("no provider named \"" + name + "\" is configured", "provider_not_found"));
        }
        if (!master_) {
          co_return ex.error(Error::unavailable(std::string(kMasterKeyEnv) +
                                                    " is not set: provider keys cannot be stored encrypted",
                                                "master_key_missing"));
        }
        const auto in = json::parse(ex.request().body(), nullptr, false);
        const bool shaped = in.is_object() && in.contains("api_key") && in["api_key"].is_string();
        const std::string key = shaped ? in["api_key"].get<std::string>() : std::string();
        // Short values are refused: registered as log secrets they would
        // redact ordinary words from every log line.
        bool printable = key.size() >= kMinKeyBytes && key.size() <= kMaxKeyBytes;
        for (const unsigned char c : key) printable = printable && c >= 0x20 && c != 0x7f;
        if (!printable) {
          co_return ex.error(Error::bad_request(
              "expected {\"api_key\": \"...\"}: a string of 8 to 4096 printable characters", "invalid_body"));
        }
        log::add_secret(key);
        const auto at = now_ms();
        auto write = [name, sealed = master_->seal(name, key), at](SQLite::Database& c) {
          SQLite::Statement st(c,
                               "INSERT INTO provider_keys (provider, sealed, updated_at_ms) VALUES (?,?,?)"
                               " ON CONFLICT(provider) DO UPDATE SET sealed = excluded.sealed,"
                               " updated_at_ms = excluded.updated_at_ms");
          st.bind(1, name);
          st.bind(2, sealed.data(), static_cast<int>(sealed.size()));
          st.bind(3, at);
          st.exec();
        };
        try {
          co_await db_.run(std::move(write));
        } catch (const std::exception& e) {
          spdlog::error("[{}] cannot store the key of provider {}: {}", ex.request_id, name, e.what());
          co_return ex.error(Error::internal("cannot store the provider key", "storage_error"));
        }
        const bool env = env_has_key(providers_.at(name));
        // The running gateway takes it at once (unless the environment's wins).
        const bool applied = !env && apply_ && apply_(name, key);
        if (applied) {
          const std::lock_guard lock(mu_);
          loaded_[name] = at;
        }
        spdlog::info("[{}] key of provider {} stored (encrypted); {}", ex.request_id, name,
                     env ? "the environment's key stays in use" : applied ? "in use now" : "used from the next start");
        json body = {{"provider", name},
                     {"key_source", env ? "env" : "stored"},
                     {"restart_required", !env && !applied}};
        co_return ex.json(http::Status::ok, body.dump());
      },
      owner);

  router.del(
      "/api/admin/providers/{name}/key",
      [this](http::Exchange& ex) -> net::awaitable<http::Response> {
        const std::string name(ex.param("name"));
        if (!providers_.count(name)) {
          co_return ex.error(Error::not_found("no provider named \"" + name + "\" is configured", "provider_not_found"));
        }
        auto erase = [name](SQLite::Database& c) {
          SQLite::Statement st(c, "DELETE FROM provider_keys WHERE provider = ?");
          st.bind(1, name);
          return st.exec() > 0;
        };
        bool deleted = false;
        try {
          deleted = co_await db_.run(std::move(erase));
        } catch (const std::exception& e) {
          spdlog::error("[{}] cannot delete the key of provider {}: {}", ex.request_id, name, e.what());
          co_return ex.error(Error::internal("cannot delete the provider key", "storage_error"));
        }
        if (!deleted) {
          co_return ex.error(Error::not_found("provider \"" + name + "\" has no stored key", "provider_key_not_found"));
        }
        const bool env = env_has_key(providers_.at(name));
        const bool applied = !env && apply_ && apply_(name, std::string());
        if (applied) {
          const std::lock_guard lock(mu_);
          loaded_.erase(name);
        }
        spdlog::info("[{}] stored key of provider {} deleted{}", ex.request_id, name, applied ? " (in effect now)" : "");
        json body = {{"provider", name}, {"key_source", env ? "env" : "none"}, {"restart_required", !env && !applied}};
        co_return ex.json(http::Status::ok, body.dump());
      },
      owner);
}

}  // namespace alou::gateway
