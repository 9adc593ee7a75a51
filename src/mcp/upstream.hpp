#pragma once
// A client of one configured MCP server, over stdio or Streamable HTTP: the
// initialize handshake, requests with a deadline each, the server's tools,
// resources and prompts (re-listed on list_changed), health pings and
// reconnection with exponential backoff. All of an upstream's state lives on
// its own strand; the public members may be called from any thread.
#include "alou/core/config.hpp"
#include "alou/core/error.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace alou::metrics {
class Registry;
}

namespace alou::mcp {

using json = nlohmann::json;

// What the server offers, as it listed it (MCP objects, unmodified).
struct ServerLists {
  json tools = json::array();
  json resources = json::array();
  json resource_templates = json::array();
  json prompts = json::array();
};

class Upstream {
 public:
  // Called (from the upstream's strand) whenever its lists or state change.
  using OnChange = std::function<void()>;

  static std::shared_ptr<Upstream> make_stdio(const McpServerSettings& s, boost::asio::any_io_executor ex,
                                              metrics::Registry& metrics, OnChange on_change);
  // Owns a pooled http::Client whose deadlines are the server's timeout_ms.
  static std::shared_ptr<Upstream> make_http(const McpServerSettings& s, boost::asio::any_io_executor ex,
                                             metrics::Registry& metrics, OnChange on_change);
  virtual ~Upstream() = default;

  virtual void start() = 0;
  // Stops for good: fails calls in flight, ends the process / session.
  virtual boost::asio::awaitable<void> shutdown() = 0;

  // One request once the server is ready; resolves on the caller's executor.
  // Errors: 503 mcp_server_unavailable (not ready, or the connection died
  // during the call), 504 tool_timeout (the configured timeout_ms; the server
  // is sent notifications/cancelled), 502 mcp_upstream_error (a JSON-RPC
  // error: its code and message). On cancellation of the caller the server
  // is sent notifications/cancelled.
  virtual boost::asio::awaitable<Result<json>> request(std::string method, json params) = 0;

  virtual const std::string& name() const = 0;
  virtual const McpServerSettings& settings() const = 0;
  // {name, transport, state, protocol_version, server_info, tools, restarts, last_error}
  virtual json status() const = 0;
  virtual ServerLists lists() const = 0;
};

}  // namespace alou::mcp
