#pragma once
// What an Exchange may do with its connection (implemented by the session,
// which is templated on the stream type: plain TCP or TLS).
#include "alou/core/config.hpp"
#include "alou/http/exchange.hpp"
#include "alou/http/filter.hpp"
#include "alou/http/websocket.hpp"
#include "alou/http/types.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>

#include <functional>
#include <memory>
#include <vector>

namespace alou::http {

class WebSocket;
class Pipeline;

// Lets the server ask a streaming response to end (graceful shutdown).
class StreamControl {
 public:
  virtual ~StreamControl() = default;
  virtual void shutdown() = 0;
};

class Connection {
 public:
  virtual ~Connection() = default;
  virtual boost::asio::any_io_executor executor() = 0;
  virtual Pipeline& pipeline() = 0;
  virtual const ServerSettings& settings() const = 0;
  // Writes the head of `res` (which must be chunked or have a length) and,
  // if `first_chunk` is not empty, the body's first chunk in the same write
  // (chunked framing added here).
  virtual boost::asio::awaitable<boost::system::error_code> write_head(Response& res,
                                                                        std::string_view first_chunk) = 0;
  virtual boost::asio::awaitable<boost::system::error_code> write_buffers(
      const std::vector<boost::asio::const_buffer>& buffers) = 0;
  // Reads whatever the client sends (kept for the next request) until an
  // error or EOF: used to notice a client going away mid-response.
  virtual boost::asio::awaitable<boost::system::error_code> watch_read() = 0;
  // The cheaper way to watch (RouteOptions::watch_client): arms one read
  // on the socket while a handler runs. If the client goes away (EOF, reset)
  // before disarm_watch(), `on_gone` is called on the connection's strand.
  // The read stays armed after the handler: it becomes the read of the next
  // request, so a watched request costs no extra read and no cancellation.
  virtual void arm_watch(std::function<void()> on_gone) = 0;
  virtual void disarm_watch() = 0;
  // Cancels (terminal) what the connection's coroutine waits on: from an
  // arm_watch callback, the handler, wherever it waits. The coroutine then
  // resets its cancellation state (this_coro::reset_cancellation_state).
  virtual void interrupt() = 0;
  // Closes the socket at once (aborts pending operations).
  virtual void abort() = 0;
  virtual boost::asio::awaitable<std::unique_ptr<WebSocket>> upgrade(Request& req,
                                                                      const WebSocketOptions& options) = 0;
  // Registers the stream that shutdown() should end (null: none).
  virtual void set_stream_control(StreamControl* control) = 0;
  virtual bool shutting_down() const = 0;
  // After this response the connection closes (stream ended abnormally).
  virtual void close_after_response() = 0;
};

// The filter chain and the router, shared by all connections.
class Pipeline {
 public:
  Pipeline(Router router, std::vector<std::shared_ptr<Filter>> filters)
      : router_(std::move(router)), filters_(std::move(filters)) {}
  // Runs the filters and the handler; never throws (500 on an exception).
  boost::asio::awaitable<Response> handle(Exchange& ex);
  // Every filter's on_response, in reverse order.
  void finish_head(Exchange& ex, Response& res);
  void complete(Exchange& ex);
  const Router& router() const { return router_; }

 private:
  Router router_;
  std::vector<std::shared_ptr<Filter>> filters_;
};

}  // namespace alou::http
