#pragma once
// Wallet session tokens: JWS compact serialisation, HS256 only (RFC 7519 /
// RFC 7515). Any other `alg`, `none` included, is refused; the signature is
// compared in constant time. Immutable after construction: thread-safe.
#include "alou/core/config.hpp"
#include "alou/core/error.hpp"
#include "alou/wallet/siwe.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace alou::wallet {

struct TokenClaims {
  std::string sub;          // the wallet address
  Chain chain = Chain::kEthereum;
  std::int64_t iat = 0;     // Unix seconds
  std::int64_t exp = 0;
  std::string jti;
  std::string iss;
};

class Jwt final {
 public:
  // `secret`: at least 32 bytes.
  Jwt(std::string secret, std::string issuer) : secret_(std::move(secret)), issuer_(std::move(issuer)) {}

  std::string sign(const TokenClaims& claims) const;
  // Errors (401): "invalid_token" (malformed, wrong alg, bad signature,
  // wrong issuer, missing claims), "token_expired" (exp <= now_s).
  Result<TokenClaims> verify(std::string_view token, std::int64_t now_s) const;

  const std::string& issuer() const { return issuer_; }

 private:
  std::string secret_;
  std::string issuer_;
};

// The signing secret: the environment variable `env_name` when set (at
// least 32 bytes), else <data_dir>/jwt.secret, generated once (32 random
// bytes, hex) with mode 0600. A secret file readable by group or others is
// refused ("config_invalid").
Result<std::string> load_jwt_secret(const std::string& env_name, const std::filesystem::path& data_dir,
                                    EnvLookup env = &process_env);

}  // namespace alou::wallet
