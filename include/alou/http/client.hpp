#pragma once
// The upstream HTTP/1.1 client the provider adapters use to reach OpenAI,
// Anthropic, Gemini, Azure, OpenAI-compatible servers and the mock upstream.
//
// - http:// and https:// URLs; TLS verifies the peer against the system CA
//   store (or ClientOptions::ca_file) and checks the host name, with SNI.
// - Keep-alive connections are pooled per scheme://host:port (at most
//   max_idle_per_host idle ones). A pooled connection that fails on the write
//   or before the first response byte is retried once on a fresh connection;
//   no other failure is retried.
// - Resolver results are cached for dns_ttl.
// - Every await has a deadline: connect_timeout (resolve + connect + TLS
//   handshake), first_byte_timeout (request written -> response head),
//   idle_read_timeout (between body reads) and total_timeout (the whole
//   exchange, for a stream from request() to the last next()).
//
// Errors (alou::Error):
//   502 upstream_unreachable  resolve/connect/TLS failure (including a peer
//                              certificate that does not verify), connection
//                              lost, cancelled
//   504 upstream_timeout      any deadline above
//   502 upstream_protocol     malformed response, body above
//                              max_response_bytes (buffered requests)
//   500 invalid_upstream_url  the URL does not parse or is not http(s)
//   500 upstream_tls_config   ClientOptions::ca_file could not be loaded
// Messages name the origin (scheme://host:port) only: never the path or
// query (Gemini puts its key there) nor any request header.
//
// Threads and executors: a Client may be used by many coroutines at once, on
// several io threads of one io_context (the pool and DNS cache are guarded by
// a mutex that is never held across an await). Each coroutine must run on a
// strand or a single-threaded executor, as the server's sessions do, because
// a connection's timer and I/O completions run on the caller's executor.
//
// Cancellation: a terminal cancellation of the awaiting coroutine (e.g. the
// losing side of awaitable operators `||`) aborts the operation in flight at
// once; the connection is then closed, never pooled.
#include "alou/core/error.hpp"
#include "alou/http/types.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/fields.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace alou::metrics {
class Registry;
}

namespace alou::http {

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds first_byte_timeout{60000};  // request sent -> response head
  std::chrono::milliseconds idle_read_timeout{60000};   // between body reads
  std::chrono::milliseconds total_timeout{600000};
  std::size_t max_idle_per_host = 64;                 // pooled keep-alive connections per origin
  std::size_t max_response_bytes = 64 * 1024 * 1024;  // buffered bodies only
  std::chrono::seconds dns_ttl{60};
  std::string ca_file;  // empty: the system default verify paths
  bool verify_peer = true;
};

struct ClientRequest {
  Verb method = Verb::post;
  std::string url;
  // Sent as given. Host and User-Agent (alou/0.1) are added when absent;
  // Content-Length is always computed from `body` (for POST, PUT and PATCH,
  // and for any other method with a non-empty body).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct ClientResponse {
  int status = 0;
  bhttp::fields headers;
  std::string body;
};

class Client;

// A response whose body is read piece by piece as it arrives (chunked,
// Content-Length or read-until-close), chunk extensions stripped and nothing
// buffered beyond what arrived. Obtained from Client::stream().
//
// Use it from one coroutine at a time, on the executor that called stream();
// cancel() may also be called (on that executor) while next() is pending.
// Do not destroy it while next() is pending.
class ClientStream final {
 public:
  ~ClientStream();
  ClientStream(const ClientStream&) = delete;
  ClientStream& operator=(const ClientStream&) = delete;

  int status() const noexcept;
  const bhttp::fields& headers() const noexcept;

  // The next piece of the body (at most 16 KiB, never empty), or an empty
  // string once the body is complete (and on every later call). On failure,
  // a timeout or after cancel(): an Error, and the same Error on every later
  // call. Deadlines: idle_read_timeout per call and the request's
  // total_timeout.
  boost::asio::awaitable<Result<std::string>> next();
  // The same, appending the piece to `out` instead of returning a new
  // string (nothing appended at the end of the body); nullopt or the Error.
  boost::asio::awaitable<std::optional<Error>> next_into(std::string& out);

  // Closes the upstream connection at once (the caller went away); a pending
  // next() completes with an error. The connection is never pooled.
  void cancel() noexcept;

  // True once next() has returned the end of the body.
  bool done() const noexcept;

  // The caller has what it needs although the body has not ended (an SSE
  // stream's `data: [DONE]` arrives before the chunked body's last chunk).
  // When this object is destroyed, the rest of the body is read in the
  // background (at most kFinishBytes within kFinishTime) and the connection
  // goes back to the pool once it ends; otherwise it is closed. Without
  // finish(), a stream dropped before its end closes its connection.
  void finish() noexcept;
  static constexpr std::size_t kFinishBytes = 64 * 1024;
  static constexpr std::chrono::milliseconds kFinishTime{1000};

  struct State;  // private to client.cpp

 private:
  friend class Client;
  explicit ClientStream(std::unique_ptr<State> state);
  static boost::asio::awaitable<void> drain(std::unique_ptr<State> state);

  std::unique_ptr<State> state_;
};

class Client final {
 public:
  // `ex`: the executor new connections are bound to (the server's
  // io_context). `metrics` (may be null) must outlive the Client; it gets
  // alou_upstream_connections_opened_total{scheme} and
  // alou_upstream_pool_reuse_total. Never fails: a ca_file that cannot be
  // loaded makes every https request fail with upstream_tls_config.
  Client(boost::asio::any_io_executor ex, ClientOptions opts, metrics::Registry* metrics = nullptr);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends the request and reads the whole response (any status) into memory,
  // up to max_response_bytes.
  boost::asio::awaitable<Result<ClientResponse>> request(ClientRequest req);

  // Sends the request and returns once the response head has arrived (any
  // status); the body is then read with ClientStream::next(). Streams may
  // outlive the Client.
  boost::asio::awaitable<Result<std::unique_ptr<ClientStream>>> stream(ClientRequest req);

  struct Impl;  // private to client.cpp

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace alou::http
