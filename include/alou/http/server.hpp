#pragma once
// The HTTP/1.1 listener: keep-alive, limits and timeouts, optional TLS,
// the filter chain and the router, SSE and WebSocket upgrades, and a
// graceful shutdown. See docs/architecture.md for the life of a request.
#include "alou/core/config.hpp"
#include "alou/core/error.hpp"
#include "alou/http/filter.hpp"
#include "alou/http/router.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <memory>
#include <vector>

namespace alou::metrics {
class Registry;
}

namespace alou::http {

class Server {
 public:
  virtual ~Server() = default;

  // Binds settings.listen (port 0: any free port) and loads TLS files when
  // configured. Errors: "listen_failed", "tls_invalid".
  static Result<std::unique_ptr<Server>> create(boost::asio::io_context& ioc, const ServerSettings& settings,
                                                Router router, std::vector<std::shared_ptr<Filter>> filters,
                                                metrics::Registry& metrics);

  virtual boost::asio::ip::tcp::endpoint endpoint() const = 0;
  virtual bool tls() const = 0;
  // Starts accepting on the io_context.
  virtual void start() = 0;
  // Stops accepting, lets in-flight requests finish (idle keep-alive
  // connections close at once, SSE streams get a final event) and returns
  // once every connection is gone or `grace` has passed (then the remaining
  // ones are closed). Thread-safe; may be awaited on any executor.
  virtual boost::asio::awaitable<void> shutdown(std::chrono::milliseconds grace) = 0;
  virtual std::size_t connections() const = 0;
};

}  // namespace alou::http
