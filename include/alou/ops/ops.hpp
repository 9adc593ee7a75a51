#pragma once
// Operations endpoints: GET /api/health (liveness, public), GET /api/status
// (owner: version, uptime, SQLite and KV with their latency) and
// GET /metrics (Prometheus text format, public like most exporters; put it
// behind the network's own controls in production).
#include "alou/http/router.hpp"

#include <chrono>
#include <nlohmann/json_fwd.hpp>
#include <functional>
#include <string>

namespace alou::storage {
class Database;
class Kv;
}
namespace alou::metrics {
class Registry;
}

namespace alou::ops {

struct StatusSources {
  std::string version;
  std::chrono::steady_clock::time_point started;
  storage::Database& db;
  storage::Kv& kv;
  metrics::Registry& metrics;
  std::function<std::size_t()> connections;
  std::function<nlohmann::json()> providers;  // the gateway's providers and their state
  std::function<nlohmann::json()> mcp_servers;  // the MCP servers and their state
  std::function<nlohmann::json()> rate_limits;  // where rate limits are kept (shared KV or local memory)
};

// Registers the three routes and the process gauges (uptime, build info,
// storage latency histograms).
void add_routes(http::Router& router, StatusSources sources);

}  // namespace alou::ops
