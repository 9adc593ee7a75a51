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
#include <optional>
#include <string>
#include <utility>
#include <vector>

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
  std::int64_t prompt_tokens = 0;      // an upper estimate
  std::int64_t max_output_tokens = 0;  // the request's own cap, 0: none (the hold picks one: output_cap())
  // The other models that may serve it (its fallbacks the caller may use),
  // in order: the hold covers the dearest of them all.
  std::vector<std::string> fallback_models = {};
};

// A reservation of funds; settle or release it exactly once. Destroying an
// unsettled hold releases it.
class Hold {
 public:
  virtual ~Hold() = default;
  virtual std::int64_t amount_nanos() const = 0;
  // For a request that set no output limit of its own: the output tokens
  // this hold covers, which the caller must send upstream as the request's
  // cap (max_tokens) so that the charge cannot outgrow the hold. It is the
  // model's maximum output, or less when the balance or budget covers less.
  // 0: no cap is needed (the request set its own, output is free, or the
  // account may overdraw: the bootstrap admin key).
  virtual std::int64_t output_cap() const { return 0; }
  // The request is served by `model`, one of HoldRequest::fallback_models:
  // it is charged at that model's price (call before settle).
  virtual void priced_as(std::string model) { (void)model; }
  // Charges `usage` at the model's price and releases the rest; the charge
  // never exceeds the hold (an account that may not overdraw is charged at
  // most amount_nanos(); what usage priced beyond it is recorded, not charged). Returns when
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
  // cover the estimate (with the request's own output cap, or the least
  // useful one when it set none), 402 `budget_exceeded` if what is left of
  // its key's budget does not. Never blocks (in-memory).
  virtual Result<std::unique_ptr<Hold>> hold(const HoldRequest& req) = 0;
  // Appends to the audit timeline of `subject` (a request or conversation
  // id); written in the background, batched.
  virtual void audit(const std::string& subject, const Principal* principal, std::string kind,
                     const nlohmann::json& data) = 0;
};

// What a call was admitted with, or why not.
struct Admission {
  std::unique_ptr<Hold> hold;   // null when refused
  std::optional<Error> error;   // 402 insufficient_balance / budget_exceeded, 429 *_limit_exceeded
  std::int64_t retry_after_s = 0;  // with a 429: when to try again
  // Rate-limit state for an HTTP caller to send back (x-ratelimit-*).
  std::vector<std::pair<std::string, std::string>> headers;
};

// Every limit of a caller in one place, for every caller of a model (the
// /v1 handlers, the agent, the tunnel): requests per minute, tokens per
// minute, requests in flight, the key's budget and the balance.
class UsagePolicy {
 public:
  virtual ~UsagePolicy() = default;
  // A model call: the limits in that order, then the hold (Meter::hold).
  // The hold returned also owes what comes after the call: its settlement
  // debits the tokens used from the caller's TPM bucket, and settling,
  // releasing or destroying it gives the in-flight slot back.
  virtual boost::asio::awaitable<Admission> admit(const HoldRequest& req) = 0;
  // Any other call of an authenticated caller (the /api routes): requests
  // per minute only. `hold` stays null.
  virtual boost::asio::awaitable<Admission> admit_request(const Principal& principal) = 0;
  virtual Meter& meter() = 0;
};

}  // namespace alou
