#pragma once
// What the gateway (and later the agent) needs from billing, as an
// interface in core so that neither module depends on the other: place a
// hold before calling an upstream, settle the actual usage once, or release
// the hold when nothing was delivered; and an audit trail of each request.
//
// The billing module implements it (src/billing); app wires it in.
#include "alou/core/error.hpp"
#include "alou/core/principal.hpp"

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace alou {

// Token counts of one request. `estimated`: counted by the gateway from the
// streamed text because the upstream's own usage never arrived (a client
// cancel, an upstream cut).
struct Usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;  // part of prompt_tokens read from a cache
  bool estimated = false;
};

// What a hold is for.
struct HoldRequest {
  std::string request_id;
  const Principal* principal = nullptr;
  std::string model;                   // the model the client asked for
  std::int64_t prompt_tokens = 0;      // estimate
  std::int64_t max_output_tokens = 0;  // the request's cap, 0: the default
};

// A reservation of funds; settle or release it exactly once. Destroying an
// unsettled hold releases it.
class Hold {
 public:
  virtual ~Hold() = default;
  virtual std::int64_t amount_nanos() const = 0;
  // Charges `usage` at the model's price and releases the rest. Returns when
  // the charge is durable (a response must not be delivered before). The
  // error is a 503 `ledger_unavailable` if it could not be written.
  virtual boost::asio::awaitable<Result<std::int64_t>> settle(Usage usage, std::string provider) = 0;
  // The same, not awaited (a cancelled stream's partial usage).
  virtual void settle_detached(Usage usage, std::string provider) = 0;
  // Nothing was delivered: nothing is charged.
  virtual void release() = 0;
  // An audit event of this request, written with its settlement or release
  // (one write per request). `data` is a JSON object's text (see JsonObject
  // in json_text.hpp): events are written on the hot path, without trees.
  virtual void event(std::string kind, std::string data) = 0;
};

class Meter {
 public:
  virtual ~Meter() = default;
  // 402 `insufficient_balance` if the caller's available balance does not
  // cover the estimate. Never blocks (in-memory).
  virtual Result<std::unique_ptr<Hold>> hold(const HoldRequest& req) = 0;
  // Appends to the audit timeline of `subject` (a request or conversation
  // id); written in the background, batched.
  virtual void audit(const std::string& subject, const Principal* principal, std::string kind,
                     const nlohmann::json& data) = 0;
};

}  // namespace alou
