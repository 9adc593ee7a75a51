#pragma once
// The filter chain: request id -> access log -> limits -> CORS -> auth ->
// rate limit, then the handler. A filter continues (nullopt) or stops the
// chain by returning the response to send. Every filter then sees the
// outgoing response head in reverse order, and on_complete once the
// response (or stream) has been fully sent.
//
// Filters are shared by all io threads: they must be thread-safe.
#include "alou/http/types.hpp"

#include <boost/asio/awaitable.hpp>

#include <optional>

namespace alou::http {

class Exchange;

class Filter {
 public:
  virtual ~Filter() = default;
  virtual boost::asio::awaitable<std::optional<Response>> on_request(Exchange&) { co_return std::nullopt; }
  virtual void on_response(Exchange&, Response&) {}
  virtual void on_complete(Exchange&) {}
};

}  // namespace alou::http
