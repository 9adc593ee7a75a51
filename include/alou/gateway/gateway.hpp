#pragma once
// The LLM gateway: OpenAI-compatible endpoints over configured providers,
// with weighted routing, retries and fallbacks before the first byte, and
// streaming relayed chunk by chunk through the shared SSE writer.
#include "alou/core/config.hpp"
#include "alou/core/error.hpp"
#include "alou/core/metering.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json_fwd.hpp>

#include <map>
#include <memory>
#include <string>

namespace alou::http {
class Router;
}
namespace alou::metrics {
class Registry;
}
namespace alou::storage {
class Kv;
}

namespace alou::gateway {

class ChatService;

class Gateway {
 public:
  virtual ~Gateway() = default;
  // Builds providers from settings.providers (a provider whose api_key_env
  // is named but unset is disabled) and the model table from
  // settings.models. Errors: a model routed only to unknown kinds.
  // `policy` (which must outlive the gateway) applies every limit of the
  // caller and holds, settles and audits every request through its meter;
  // null: nothing is limited or charged (tests). `stored_keys`
  // (provider name -> key, from ProviderKeys) are used by providers whose
  // api_key_env is empty or unset. `kv` (which must outlive the gateway)
  // keeps Idempotency-Key records; null: the header is validated but not
  // honoured (tests).
  static Result<std::unique_ptr<Gateway>> create(const Settings& settings, boost::asio::any_io_executor ex,
                                                 metrics::Registry& metrics, UsagePolicy* policy = nullptr,
                                                 const std::map<std::string, std::string>& stored_keys = {},
                                                 storage::Kv* kv = nullptr);
  // POST /v1/chat/completions, GET /v1/models.
  virtual void add_routes(http::Router& router) = 0;
  // Replaces a provider's API key at once (stored or deleted through the
  // admin API). An empty key disables a provider that has an api_key_env
  // until a key is set again. False: no such provider, or its kind takes no
  // key (the change then waits for a restart).
  virtual bool set_provider_key(const std::string& provider, std::string key) = 0;
  // For /api/status: providers and their state.
  virtual nlohmann::json status() const = 0;
  // The transport-neutral chat service (chat.hpp) for in-process callers
  // (the agent, the tunnel hub); the /v1 handlers are its HTTP adapters.
  virtual ChatService& chat_service() = 0;
};

}  // namespace alou::gateway
