#pragma once
// Wallet login: nonces, Sign-In with Ethereum / Solana verification, HS256
// session tokens, the `users` table, and the /login page.
//
// Routes (docs/api.md, "Wallet login"):
//   GET  /api/wallet/nonce/{address}?chain=ethereum|solana   public, rate-limited per client IP
//   POST /api/wallet/verify   {chain, message, signature}     public
//   GET  /api/wallet/me                                       wallet token
//   POST /api/wallet/logout                                   wallet token
//   GET  /login, /login/{file}                                public, static files from server.web_dir
//
// State: nonces, spent-nonce markers, revoked token ids and the nonce rate
// counters live in the KV (shared by every instance on Redis); users in SQLite.
// Thread-safety: the service is immutable once built; every method may run
// concurrently on any io thread.
#include "alou/core/config.hpp"
#include "alou/core/error.hpp"

#include <cstdint>
#include <functional>
#include <memory>

namespace alou::http {
class Router;
}
namespace alou::storage {
class Database;
class Kv;
}
namespace alou::auth {
class CredentialResolver;
}

namespace alou {
class BlockingPool;
}

namespace alou::wallet {

// Unix milliseconds (injectable for tests).
using Clock = std::function<std::int64_t()>;
std::int64_t system_now_ms();

class Service {
 public:
  virtual ~Service() = default;

  // Loads the JWT secret (wallet.jwt_secret_env, else <data_dir>/jwt.secret)
  // and checks the wallet settings. Errors: "config_invalid".
  // Signature checks (secp256k1 recovery, Ed25519) run on `crypto`, off the
  // io threads; null: inline (tests, the CLI).
  static Result<std::unique_ptr<Service>> create(const Settings& settings, storage::Database& db, storage::Kv& kv,
                                                 Clock now = &system_now_ms, BlockingPool* crypto = nullptr);

  virtual void add_routes(http::Router& router) = 0;
  // Bearer wallet tokens → Principal{kind: kWallet, id: address, role: member};
  // nullopt for anything else, an invalid, expired or revoked token.
  virtual std::shared_ptr<auth::CredentialResolver> resolver() = 0;
};

}  // namespace alou::wallet
