#include "alou/http/exchange.hpp"

#include "connection.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/system/system_error.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace alou::http {
namespace {

// Marks a Response as "already answered through the connection".
constexpr auto kStreamedField = "x-alou-streamed";

const char* openai_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 402: return "insufficient_quota";
    case 403: return "permission_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

const char* anthropic_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

}  // namespace

Exchange::Exchange(Request& req, Connection& conn, boost::asio::ip::tcp::endpoint remote)
    : req_(req), conn_(conn), remote_(std::move(remote)) {
  const std::string_view target = req_.target();
  const auto q = target.find('?');
  path_ = target.substr(0, q);
  if (q != std::string_view::npos) query_ = target.substr(q + 1);
}

std::optional<std::string> Exchange::query_param(std::string_view name) const {
  std::string_view rest = query_;
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const auto part = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    const auto eq = part.find('=');
    std::string key;
    if (!percent_decode(part.substr(0, eq), key, true) || key != name) continue;
    std::string value;
    if (eq != std::string_view::npos && !percent_decode(part.substr(eq + 1), value, true)) return std::nullopt;
    return value;
  }
  return std::nullopt;
}

std::string_view Exchange::param(std::string_view name) const {
  for (const auto& [k, v] : match.params) {
    if (k == name) return v;
  }
  return {};
}

Response Exchange::error(const Error& e) const {
  return make_error_response(format, e, request_id, req_.version());
}

Response Exchange::json(Status status, std::string body) const {
  Response res{status, req_.version()};
  res.set(bhttp::field::content_type, "application/json");
  res.body() = std::move(body);
  return res;
}

void Exchange::abort() { conn_.abort(); }

Response Exchange::streamed() {
  Response r;
  r.set(kStreamedField, "1");
  return r;
}

bool Exchange::is_streamed(const Response& r) { return r.count(kStreamedField) != 0; }

boost::asio::awaitable<std::unique_ptr<WebSocket>> Exchange::accept_websocket(WebSocketOptions options) {
  co_return co_await conn_.upgrade(req_, options);
}

Response make_error_response(ErrorFormat format, const Error& e, std::string_view request_id, unsigned version) {
  nlohmann::json body;
  switch (format) {
    case ErrorFormat::kOpenAi:
      body = {{"error",
               {{"message", e.message}, {"type", openai_type(e.status)}, {"param", nullptr}, {"code", e.code}}}};
      break;
    case ErrorFormat::kAnthropic:
      body = {{"type", "error"}, {"error", {{"type", anthropic_type(e.status)}, {"message", e.message}}}};
      break;
    case ErrorFormat::kAlou:
      body = {{"error", {{"code", e.code}, {"message", e.message}, {"request_id", request_id}}}};
      break;
  }
  Response res{static_cast<Status>(e.status), version};
  res.set(bhttp::field::content_type, "application/json");
  if (!request_id.empty()) res.set("x-request-id", request_id);
  res.body() = body.dump();
  return res;
}

ErrorFormat format_for_path(std::string_view path) {
  if (path == "/v1/messages" || path.starts_with("/v1/messages/")) return ErrorFormat::kAnthropic;
  if (path.starts_with("/v1/")) return ErrorFormat::kOpenAi;
  return ErrorFormat::kAlou;
}

namespace {

// Runs the handler and turns whatever it throws into a response: a handler
// never throws into the `||` below (Asio's `||` waits for a *successful*
// branch, so a throwing handler would wait for the client instead).
boost::asio::awaitable<Response> run_handler(Exchange& ex) {
  std::optional<Response> res;
  try {
    res = co_await ex.route()->handler(ex);
  } catch (const ErrorException& e) {
    res = ex.error(e.error());
  } catch (const boost::system::system_error& e) {
    // A handler cancelled because its client went away (watch_client)
    // ends here: the pipeline sends nothing, and it is not a failure.
    if (e.code() != boost::asio::error::operation_aborted) {
      spdlog::error("[{}] handler failed: {}", ex.request_id, e.what());
    } else {
      spdlog::debug("[{}] handler cancelled: {}", ex.request_id, e.what());
    }
    if (ex.head_sent) ex.connection().close_after_response();
    res = ex.head_sent ? Exchange::streamed() : ex.error(Error::internal("internal error"));
  } catch (const std::exception& e) {
    if (ex.head_sent) {
      // Mid-stream: nothing more can be said in HTTP; close the connection.
      ex.connection().close_after_response();
      res = Exchange::streamed();
    } else {
      spdlog::error("[{}] handler failed: {}", ex.request_id, e.what());
      res = ex.error(Error::internal("internal error"));
    }
  }
  co_return std::move(*res);
}

}  // namespace

boost::asio::awaitable<Response> Pipeline::handle(Exchange& ex) {
  using namespace boost::asio::experimental::awaitable_operators;
  ex.match = router_.match(ex.request().method(), ex.path());
  ex.format = ex.route() ? ex.route()->options.format : format_for_path(ex.path());
  std::optional<Response> res;
  try {
    for (auto& f : filters_) {
      res = co_await f->on_request(ex);
      if (res) break;
    }
  } catch (const ErrorException& e) {
    res = ex.error(e.error());
  } catch (const std::exception& e) {
    spdlog::error("[{}] filter failed: {}", ex.request_id, e.what());
    res = ex.error(Error::internal("internal error"));
  }
  if (!res) {
    if (!ex.route()) {
      if (ex.match.allow.empty()) {
        res = ex.error(Error::not_found("no route for " + std::string(ex.path())));
      } else {
        res = ex.error(Error{405, "method_not_allowed",
                             std::string(bhttp::to_string(ex.request().method())) + " is not allowed on " +
                                 std::string(ex.path())});
        res->set(bhttp::field::allow, ex.match.allow);
      }
    } else if (ex.route()->options.watch_client) {
      // If the client goes away, the connection's watch read interrupts
      // the connection's coroutine: the handler is cancelled where it waits
      // (it runs in that coroutine; no coroutine of its own).
      auto& conn = ex.connection();
      bool gone = false;
      conn.arm_watch([&gone, &conn] {
        gone = true;
        conn.interrupt();
      });
      Response r = co_await run_handler(ex);
      conn.disarm_watch();
      if (!gone) {
        res = std::move(r);
      } else {
        // The client went away: the handler was cancelled; nothing to send.
        // The cancellation is spent: later waits of this coroutine go on.
        co_await boost::asio::this_coro::reset_cancellation_state();
        conn.close_after_response();
        if (ex.sent_status == 0) ex.sent_status = 499;
        res = Exchange::streamed();
      }
    } else {
      res = co_await run_handler(ex);
    }
  }
  for (auto& f : ex.before_send) {
    try {
      co_await f();
    } catch (const std::exception& e) {
      spdlog::warn("[{}] before-send step failed: {}", ex.request_id, e.what());
    }
  }
  ex.before_send.clear();
  if (!Exchange::is_streamed(*res)) finish_head(ex, *res);
  co_return std::move(*res);
}

void Pipeline::finish_head(Exchange& ex, Response& res) {
  for (const auto& [k, v] : ex.response_headers) res.set(k, v);
  for (auto it = filters_.rbegin(); it != filters_.rend(); ++it) (*it)->on_response(ex, res);
}

void Pipeline::complete(Exchange& ex) {
  for (auto& f : filters_) f->on_complete(ex);
}

}  // namespace alou::http
