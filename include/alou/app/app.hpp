#pragma once
// The composition root: the only place that names concrete classes. It
// opens storage, wires modules, filters and routes, and owns the io threads.
#include "alou/core/config.hpp"
#include "alou/core/error.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

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
namespace alou::auth {
class KeyStore;
}
namespace alou::mcp {
class Service;
}

namespace alou::app {

inline constexpr const char* kVersion = "0.1.0";

struct AppOptions {
  // Extra routes (tests mount probes here); added after the built-in ones.
  std::function<void(http::Router&)> extra_routes;
};

class App {
 public:
  // Opens SQLite (and migrates), the KV, binds the listener. Nothing runs
  // until start(). Errors name what failed.
  static Result<std::unique_ptr<App>> create(Settings settings, AppOptions options = {});
  virtual ~App() = default;

  virtual boost::asio::ip::tcp::endpoint endpoint() const = 0;
  virtual std::string url() const = 0;
  // Starts server.threads io threads (0: one per core).
  virtual void start() = 0;
  // Graceful stop: stop accepting, finish in-flight requests up to
  // server.shutdown_timeout_ms, end streams, flush storage. Blocking,
  // idempotent, not from an io thread.
  virtual void stop() = 0;
  // start(), wait for SIGINT/SIGTERM, stop(). Returns the exit code.
  virtual int run_until_signal() = 0;

  virtual metrics::Registry& metrics() = 0;
  virtual storage::Database& db() = 0;
  virtual storage::Kv& kv() = 0;
  virtual auth::KeyStore& keys() = 0;
  virtual mcp::Service& mcp() = 0;
};

// The command line (DESIGN.md): serve, migrate, keys, version, ...
int run_cli(int argc, char** argv);

}  // namespace alou::app
