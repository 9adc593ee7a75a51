#pragma once
// Factories of the provider adapters (filled in by src/gateway/gateway.cpp,
// in one list you can read top to bottom).
#include "alou/core/config.hpp"
#include "alou/gateway/provider.hpp"

#include <memory>
#include <string>

namespace alou::http {
class Client;
}

namespace alou::gateway {

// kind "openai" and "azure".
std::unique_ptr<Provider> make_openai_provider(const ProviderSettings& s, std::string api_key,
                                               std::shared_ptr<http::Client> client);
// kind "mock": the deterministic model of DESIGN.md, in process.
std::unique_ptr<Provider> make_mock_provider(const ProviderSettings& s);

}  // namespace alou::gateway
