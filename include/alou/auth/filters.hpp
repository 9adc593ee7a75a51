#pragma once
// Bearer authentication and the rate-limit hook of the filter chain.
#include "alou/core/principal.hpp"
#include "alou/http/filter.hpp"

#include <boost/asio/awaitable.hpp>

#include <memory>
#include <optional>
#include <string_view>
#include <vector>

namespace alou::storage {
class Kv;
}
namespace alou::metrics {
class Registry;
}

namespace alou::auth {

class KeyStore;

// Turns a bearer credential into a principal (API keys now; wallet JWTs
// plug in here later). nullopt: not this resolver's credential / invalid.
class CredentialResolver {
 public:
  virtual ~CredentialResolver() = default;
  virtual boost::asio::awaitable<std::optional<Principal>> resolve(std::string_view credential) = 0;
};

std::shared_ptr<CredentialResolver> make_key_resolver(KeyStore& keys);

// Reads `Authorization: Bearer <credential>` (and `x-api-key` on routes
// answering in Anthropic's format), sets Exchange::principal, and enforces
// the route's Access: 401 missing/invalid credentials, 403 owner-only.
std::shared_ptr<http::Filter> make_auth_filter(std::vector<std::shared_ptr<CredentialResolver>> resolvers);

}  // namespace alou::auth
