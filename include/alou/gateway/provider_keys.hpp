#pragma once
// Upstream provider keys stored through the admin API, encrypted at rest
// with libsodium's secretbox (XSalsa20-Poly1305) under a 32-byte master key
// from the environment (ALOU_MASTER_KEY, hex or base64).
//
// A provider takes its key from the environment variable named by its
// `api_key_env` when that is set; otherwise from the stored key, read and
// decrypted at start; a key stored or deleted while running is handed to
// the running gateway through on_change (other instances take it at their
// next start: the listing says `restart_required`). Keys never appear in
// responses, errors or logs: each one is registered with log::add_secret as
// soon as it is seen.
//
// Routes (owner only):
//   GET    /api/admin/providers             name, kind, api_key_env, key_source (env|stored|none)
//   PUT    /api/admin/providers/{name}/key  {"api_key": "..."}; 503 master_key_missing without a master key
//   DELETE /api/admin/providers/{name}/key
#include "alou/core/config.hpp"
#include "alou/core/error.hpp"

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace alou::storage {
class Database;
}
namespace alou::http {
class Router;
}

namespace alou::gateway {

inline constexpr const char* kMasterKeyEnv = "ALOU_MASTER_KEY";

// A secretbox key. Zeroed when destroyed.
class MasterKey final {
 public:
  // 32 bytes as 64 hex digits or as base64 (standard or URL-safe alphabet,
  // padded or not); surrounding whitespace is ignored. Error 400
  // `master_key_invalid` (the message never contains the text).
  static Result<MasterKey> parse(std::string_view text);
  static MasterKey from_bytes(const std::array<unsigned char, 32>& bytes);
  ~MasterKey();
  MasterKey(const MasterKey&) = default;
  MasterKey& operator=(const MasterKey&) = default;

  // A fresh random nonce followed by the ciphertext of `plaintext` bound to
  // `context` (the provider's name: a blob copied to another provider's row
  // does not open).
  std::string seal(std::string_view context, std::string_view plaintext) const;
  // Error 500 `provider_key_undecryptable` on a wrong master key, altered or
  // truncated data, or another context.
  Result<std::string> open(std::string_view context, std::string_view sealed) const;

 private:
  MasterKey() = default;
  std::array<unsigned char, 32> key_{};
};

class ProviderKeys final {
 public:
  // `master`: nullopt when ALOU_MASTER_KEY is not set (stored keys are then
  // unusable and PUT answers 503). `env` looks up api_key_env variables.
  ProviderKeys(const Settings& settings, storage::Database& db, std::optional<MasterKey> master,
               EnvLookup env = &process_env);

  // Start-up, blocking: the decrypted stored keys of the providers that
  // have no key in the environment, by provider name. A key that cannot be
  // decrypted (wrong master key) or read (no master key) is left out with
  // an error log naming the provider, which the gateway then disables.
  Result<std::map<std::string, std::string>> load_blocking();

  void add_routes(http::Router& router);
  // Called when a key is stored (the key) or deleted (""), unless the
  // provider's environment variable holds a key (it wins); returns whether
  // the running gateway applied it (Gateway::set_provider_key). Without
  // it, or when it returns false, changes wait for a restart.
  using Apply = std::function<bool(const std::string& provider, std::string key)>;
  void on_change(Apply apply) { apply_ = std::move(apply); }

 private:
  struct Provider {
    std::string kind;
    std::string api_key_env;
  };
  bool env_has_key(const Provider& p) const;

  storage::Database& db_;
  std::optional<MasterKey> master_;
  EnvLookup env_;
  std::map<std::string, Provider> providers_;
  // What load_blocking found stored (provider -> updated_at_ms), to tell
  // which changes wait for a restart.
  std::mutex mu_;
  std::map<std::string, std::int64_t> loaded_;
  Apply apply_;
};

}  // namespace alou::gateway
