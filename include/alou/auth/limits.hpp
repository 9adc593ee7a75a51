#pragma once
// The usage policy: every per-key limit of a caller, checked in one place
// (DESIGN.md: plan -> usage policy -> hold -> attempts -> settle).
//
// - RPM: a token bucket of `rpm` requests refilled at rpm/60 per second;
//   429 `rate_limit_exceeded` with Retry-After.
// - TPM: a token bucket of `tpm` tokens refilled at tpm/60 per second. The
//   cost of a model call is only known once it is done, so a call is
//   refused (429 `tokens_rate_limit_exceeded`) only while the bucket is
//   empty (<= 0), and its actual tokens (prompt + completion) are debited
//   after its settlement, which may take the bucket below zero: the debt is
//   paid back by the refill before the next call passes.
// - Concurrency: `max_concurrency` model calls in flight; 429
//   `concurrency_limit_exceeded`. The slot is given back when the call's
//   hold is settled or released (before its answer goes out), or destroyed.
// - Budget and balance: the hold (Meter::hold), 402 `budget_exceeded` /
//   `insufficient_balance`.
// Buckets and slots live in the KV (shared by every instance on Redis); if
// the KV does not answer, in this process's memory (LimitStore).
#include "alou/auth/limit_store.hpp"
#include "alou/core/metering.hpp"
#include "alou/http/filter.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <memory>

namespace alou::metrics {
class Registry;
}

namespace alou::auth {

// How long an in-flight count survives its last change on Redis: a safety
// net for slots of an instance that died before giving them back.
inline constexpr std::chrono::milliseconds kConcurrencyTtl = std::chrono::minutes(10);

// `meter` and `limits` must outlive the policy; `ex` runs the background
// work of detached settlements and dropped holds.
std::unique_ptr<UsagePolicy> make_usage_policy(Meter& meter, LimitStore& limits, metrics::Registry& metrics,
                                               boost::asio::any_io_executor ex);

// The HTTP side of the policy for routes that are not model calls (whose
// handlers call UsagePolicy::admit themselves: RouteOptions::metered):
// requests per minute, with x-ratelimit-*-requests headers on the answer.
std::shared_ptr<http::Filter> make_rate_limit_filter(UsagePolicy& policy);

}  // namespace alou::auth
