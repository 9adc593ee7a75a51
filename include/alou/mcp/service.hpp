#pragma once
// The MCP module: clients of the configured MCP servers ([[mcp_servers]],
// stdio and Streamable HTTP), the registered tools, the catalogue over both,
// and the routes: GET /api/mcp/servers, GET /api/tools, POST /api/tools,
// POST /api/tools/{name}/call, and Alou's own MCP endpoint POST/GET/DELETE
// /mcp. See docs/mcp.md.
#include "alou/core/config.hpp"
#include "alou/core/error.hpp"
#include "alou/mcp/catalogue.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include <memory>

namespace alou::http {
class Router;
}
namespace alou::metrics {
class Registry;
}
namespace alou::storage {
class Database;
class Kv;
}

namespace alou::mcp {

struct ServiceDeps {
  const Settings& settings;
  boost::asio::any_io_executor executor;   // the server's io_context
  storage::Database& db;
  storage::Kv& kv;                          // /mcp sessions
  metrics::Registry& metrics;
};

class Service {
 public:
  // Loads the registered tools from SQLite (blocking: start-up only).
  static Result<std::unique_ptr<Service>> create(ServiceDeps deps);
  virtual ~Service() = default;

  virtual void add_routes(http::Router& router) = 0;
  // Starts connecting to the configured servers (in the background: a
  // server that fails to start is retried with backoff and never blocks
  // the others or Alou). Call once the io threads run.
  virtual void start() = 0;
  // Ends command tools still running (SIGTERM, then SIGKILL after 2 s; a
  // later call answers 503 shutting_down), then stops the servers (SIGTERM,
  // then SIGKILL for stdio; DELETE of the session over HTTP) and fails calls
  // still in flight. Every child is reaped when it completes. Idempotent.
  virtual boost::asio::awaitable<void> shutdown() = 0;
  // One object per configured server, as GET /api/mcp/servers shows it.
  virtual nlohmann::json servers_status() const = 0;
  virtual ToolCatalogue& catalogue() = 0;
};

}  // namespace alou::mcp
