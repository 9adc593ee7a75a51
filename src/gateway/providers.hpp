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
// kind "anthropic": the Messages API at {base_url}/messages; base_url
// defaults to https://api.anthropic.com (an origin alone gets /v1). Settings: anthropic_version (default
// 2023-06-01), default_max_tokens (default 4096); a bad one is an error.
Result<std::unique_ptr<Provider>> make_anthropic_provider(const ProviderSettings& s, std::string api_key,
                                                          std::shared_ptr<http::Client> client);
// kind "gemini": {base_url}/models/{m}:generateContent and
// :streamGenerateContent?alt=sse; base_url defaults to
// https://generativelanguage.googleapis.com (an origin alone gets /v1beta).
// Embeddings answer 400 embeddings_not_supported (both kinds).
std::unique_ptr<Provider> make_gemini_provider(const ProviderSettings& s, std::string api_key,
                                               std::shared_ptr<http::Client> client);
// kind "mock": the deterministic model of DESIGN.md, in process.
std::unique_ptr<Provider> make_mock_provider(const ProviderSettings& s);

}  // namespace alou::gateway
