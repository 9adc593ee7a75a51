#include "alou/auth/filters.hpp"

#include "alou/auth/keys.hpp"
#include "alou/core/metrics.hpp"
#include "alou/core/time.hpp"
#include "alou/http/exchange.hpp"
#include "alou/storage/kv.hpp"

#include <boost/beast/http/field.hpp>
#include <spdlog/spdlog.h>

#include <cmath>

namespace alou::auth {
namespace {

class KeyResolver final : public CredentialResolver {
 public:
  explicit KeyResolver(KeyStore& keys) : keys_(keys) {}
  boost::asio::awaitable<std::optional<Principal>> resolve(std::string_view credential) override {
    std::string secret(credential);
    auto principal = co_await keys_.authenticate(std::move(secret));
    co_return principal;
  }

 private:
  KeyStore& keys_;
};

std::string_view bearer_token(std::string_view header) {
  constexpr std::string_view kBearer = "bearer ";
  if (header.size() <= kBearer.size()) return {};
  for (std::size_t i = 0; i < kBearer.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(header[i])) != kBearer[i]) return {};
  }
  auto token = header.substr(kBearer.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  return token;
}

class AuthFilter final : public http::Filter {
 public:
  explicit AuthFilter(std::vector<std::shared_ptr<CredentialResolver>> resolvers) : resolvers_(std::move(resolvers)) {}

  boost::asio::awaitable<std::optional<http::Response>> on_request(http::Exchange& ex) override {
    const auto* route = ex.route();
    if (!route || route->options.access == http::Access::kPublic) co_return std::nullopt;
    std::string_view credential = bearer_token(ex.request()[http::bhttp::field::authorization]);
    if (credential.empty() && route->options.format == http::ErrorFormat::kAnthropic) {
      credential = ex.request()["x-api-key"];
    }
    if (credential.empty()) {
      co_return ex.error(Error::unauthorized(
          "missing credentials: send Authorization: Bearer <API key or wallet token>", "missing_credentials"));
    }
    if (credential.size() > 4096) co_return ex.error(Error::unauthorized("invalid credentials", "invalid_api_key"));
    for (const auto& r : resolvers_) {
      // Assigned, not declared in the if: GCC 12 coroutines mis-handle a
      // condition variable initialised by co_await.
      std::optional<Principal> p;
      p = co_await r->resolve(credential);
      if (p) {
        ex.principal = std::move(*p);
        break;
      }
    }
    if (!ex.principal) co_return ex.error(Error::unauthorized("invalid or revoked credentials", "invalid_api_key"));
    if (route->options.access == http::Access::kOwner && !ex.principal->is_owner()) {
      co_return ex.error(Error::forbidden("this endpoint needs an owner key", "owner_only"));
    }
    co_return std::nullopt;
  }

 private:
  std::vector<std::shared_ptr<CredentialResolver>> resolvers_;
};

}  // namespace

std::shared_ptr<CredentialResolver> make_key_resolver(KeyStore& keys) { return std::make_shared<KeyResolver>(keys); }

std::shared_ptr<http::Filter> make_auth_filter(std::vector<std::shared_ptr<CredentialResolver>> resolvers) {
  return std::make_shared<AuthFilter>(std::move(resolvers));
}

}  // namespace alou::auth
