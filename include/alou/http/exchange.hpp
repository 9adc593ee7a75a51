#pragma once
// One request/response exchange as filters and handlers see it: the parsed
// request, its id, route and parameters, the authenticated principal, and
// the ways to answer beyond a plain Response (SSE, WebSocket upgrade).
//
// An Exchange lives on its connection's strand for the duration of one
// request; it is not thread-safe and must not outlive the handler call.
#include "alou/core/error.hpp"
#include "alou/core/principal.hpp"
#include "alou/http/router.hpp"
#include "alou/http/types.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace alou::http {

class SseWriter;
class WebSocket;
class Connection;

struct SseOptions {
  std::vector<std::pair<std::string, std::string>> headers;  // extra response headers
  // The event sent when the server shuts down mid-stream (raw SSE text,
  // e.g. "event: error\ndata: {...}\n\n"); empty: a default Alou error event.
  std::string shutdown_event;
  // Raw SSE text written in the same write as the response head (the
  // stream's first event when it is already at hand): the client gets both
  // in one packet.
  std::string first;
};

struct WebSocketOptions {
  std::size_t max_message_bytes = 1024 * 1024;
  std::chrono::seconds idle_timeout{30};  // pings are sent at half of it
};

class Exchange final {
 public:
  Exchange(Request& req, Connection& conn, boost::asio::ip::tcp::endpoint remote);

  Request& request() { return req_; }
  const Request& request() const { return req_; }
  std::string_view path() const { return path_; }    // without the query string
  std::string_view query() const { return query_; }  // without '?'
  // A query parameter, percent-decoded; the first if repeated.
  std::optional<std::string> query_param(std::string_view name) const;
  // A path parameter of the matched route ("" if absent).
  std::string_view param(std::string_view name) const;
  const boost::asio::ip::tcp::endpoint& remote() const { return remote_; }

  std::string request_id;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  RouteMatch match;                     // set by the server before the filters run
  ErrorFormat format = ErrorFormat::kAlou;
  std::optional<Principal> principal;   // set by the auth filter

  const Route* route() const { return match.route; }

  // Builds an error response in this exchange's format (DESIGN.md, Errors).
  Response error(const Error& e) const;
  // A JSON response with the right headers.
  Response json(Status status, std::string body) const;

  // Answers with an SSE stream: sends the head (200, text/event-stream,
  // chunked) and runs `producer` while a writer drains its bounded queue to
  // the socket, sending comment heartbeats when idle. If the client goes
  // away the producer is cancelled (its pending await ends with
  // operation_aborted) and SseWriter::send returns false. Returns when the
  // producer has returned and everything queued was written. The handler
  // then returns streamed().
  boost::asio::awaitable<void> stream_sse(std::function<boost::asio::awaitable<void>(SseWriter&)> producer,
                                          SseOptions options = {});

  // Accepts a WebSocket upgrade of this request. Null if the request is not
  // an upgrade (the handler then answers normally, e.g. 400
  // websocket_required) or if the handshake failed (the connection is
  // gone). On success the handler owns the socket until it returns, then
  // returns streamed().
  boost::asio::awaitable<std::unique_ptr<WebSocket>> accept_websocket(WebSocketOptions options = {});

  // What a handler returns once it answered through stream_sse or a WebSocket.
  static Response streamed();
  static bool is_streamed(const Response& r);

  // Headers a filter wants on this exchange's response (added to the head
  // by the pipeline, streamed or not).
  std::vector<std::pair<std::string, std::string>> response_headers;

  // Objects a filter keeps for the life of this exchange (RAII guards, e.g.
  // a concurrency slot): destroyed with it, however the request ended.
  std::vector<std::shared_ptr<void>> attachments;
  // Work a filter wants done, and awaited, once the handler has returned and
  // before the response is written (e.g. giving a concurrency slot back, so
  // that a client that got its answer may send the next request at once).
  std::vector<std::function<boost::asio::awaitable<void>()>> before_send;

  // Set once a response head went out (stream or WebSocket).
  bool head_sent = false;
  int sent_status = 0;
  std::uint64_t sent_bytes = 0;

  Connection& connection() { return conn_; }
  // Drops the connection at once (no response, no terminating chunk): for
  // fault injection (mock upstream /cut) and broken streams.
  void abort();

 private:
  Request& req_;
  Connection& conn_;
  boost::asio::ip::tcp::endpoint remote_;
  std::string_view path_;
  std::string_view query_;
};

// Renders an error body+status in a format; used by Exchange::error and by
// the server for errors before a route is known.
Response make_error_response(ErrorFormat format, const Error& e, std::string_view request_id,
                             unsigned version = 11);
// The format implied by a path when no route matched (/v1/messages:
// Anthropic, other /v1/: OpenAI, else Alou's).
ErrorFormat format_for_path(std::string_view path);

}  // namespace alou::http
