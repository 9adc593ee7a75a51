#include "alou/ops/ops.hpp"

#include "alou/core/metrics.hpp"
#include "alou/http/exchange.hpp"
#include "alou/storage/database.hpp"
#include "alou/storage/kv.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <boost/beast/http/field.hpp>
#include <nlohmann/json.hpp>

#include <memory>

namespace alou::ops {
namespace {

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

void add_routes(http::Router& router, StatusSources src) {
  auto s = std::make_shared<StatusSources>(std::move(src));
  auto& m = s->metrics;
  m.gauge("alou_build_info", "Build information", {{"version", s->version}}).set(1);
  m.gauge_fn("alou_uptime_seconds", "Seconds since the process started", [s] { return since(s->started); });
  auto* sqlite_latency = &m.histogram("alou_storage_latency_seconds", "Round trip of a storage health probe",
                                      {{"backend", "sqlite"}});
  auto* kv_latency = &m.histogram("alou_storage_latency_seconds", "Round trip of a storage health probe",
                                  {{"backend", std::string(s->kv.backend())}});

  router.get(
      "/api/health",
      [](http::Exchange& ex) -> boost::asio::awaitable<http::Response> {
        co_return ex.json(http::Status::ok, R"({"status":"ok"})");
      },
      {.access = http::Access::kPublic});

  router.get(
      "/metrics",
      [s](http::Exchange& ex) -> boost::asio::awaitable<http::Response> {
        http::Response res{http::Status::ok, ex.request().version()};
        res.set(http::bhttp::field::content_type, metrics::kContentType);
        res.body() = s->metrics.render();
        co_return res;
      },
      {.access = http::Access::kPublic});

  router.get(
      "/api/status",
      [s, sqlite_latency, kv_latency](http::Exchange& ex) -> boost::asio::awaitable<http::Response> {
        nlohmann::json sqlite = {{"path", s->db.path().string()}};
        auto t0 = std::chrono::steady_clock::now();
        try {
          auto probe = [](SQLite::Database& c) {
            return c.execAndGet("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").getInt();
          };
          const auto version = co_await s->db.run(std::move(probe));
          const double secs = since(t0);
          sqlite_latency->observe(secs);
          sqlite["ok"] = true;
          sqlite["schema_version"] = version;
          sqlite["latency_ms"] = secs * 1000.0;
        } catch (const std::exception& e) {
          sqlite["ok"] = false;
          sqlite["error"] = e.what();
        }
        nlohmann::json kv = {{"backend", s->kv.backend()}};
        t0 = std::chrono::steady_clock::now();
        auto ping = co_await s->kv.ping();
        const double kv_secs = since(t0);
        if (ping) {
          kv_latency->observe(kv_secs);
          kv["ok"] = true;
          kv["latency_ms"] = kv_secs * 1000.0;
        } else {
          kv["ok"] = false;
          kv["error"] = ping.error().message;
        }
        const bool ok = sqlite["ok"].get<bool>() && kv["ok"].get<bool>();
        nlohmann::json body = {{"status", ok ? "ok" : "degraded"},
                               {"version", s->version},
                               {"uptime_s", since(s->started)},
                               {"connections", s->connections ? s->connections() : 0},
                               {"sqlite", sqlite},
                               {"kv", kv},
                               {"providers", s->providers ? s->providers() : nlohmann::json::array()},
                               {"mcp_servers", s->mcp_servers ? s->mcp_servers() : nlohmann::json::array()},
                               {"rate_limits", s->rate_limits ? s->rate_limits() : nlohmann::json::object()}};
        co_return ex.json(ok ? http::Status::ok : http::Status::service_unavailable, body.dump());
      },
      {.access = http::Access::kOwner});
}

}  // namespace alou::ops
