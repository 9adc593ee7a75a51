#pragma once
// Per-key limits beyond requests per minute: tokens per minute (TPM) and
// requests in flight (max concurrency), both kept in the KV so that every
// instance sharing Redis enforces one limit.
//
// TPM is a token bucket of `tpm` tokens refilled at tpm/60 per second. The
// cost of a request is only known once it is done, so the filter refuses a
// request only when the bucket is empty (<= 0), and the request's actual
// tokens (prompt + completion) are debited after its settlement, which may
// take the bucket below zero: the debt is paid back by the refill before
// the next request passes.
//
// If the KV does not answer, requests are let through (and counted in
// alou_ratelimit_kv_errors_total): availability first, as for RPM.
#include "alou/core/metering.hpp"
#include "alou/http/filter.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <memory>

namespace alou::storage {
class Kv;
}
namespace alou::metrics {
class Registry;
}

namespace alou::auth {

// How long an in-flight count survives its last change on Redis: a safety
// net for slots of an instance that died before giving them back.
inline constexpr std::chrono::milliseconds kConcurrencyTtl = std::chrono::minutes(10);

// For keys with a `tpm`: 429 `tokens_rate_limit_exceeded` with Retry-After
// while the bucket is empty; x-ratelimit-{limit,remaining,reset}-tokens on
// every answer. For keys with a `max_concurrency`: 429
// `concurrency_limit_exceeded` while that many requests of the key are in
// flight; the slot is given back when the exchange ends, however it ends
// (answered, streamed, client gone). `ex` runs those releases.
std::shared_ptr<http::Filter> make_usage_limit_filter(storage::Kv& kv, metrics::Registry& metrics,
                                                      boost::asio::any_io_executor ex);

// Decorates `inner` (which, like kv, must outlive the result): the holds of
// keys with a `tpm` debit the key's TPM bucket by prompt + completion tokens
// once settled (awaited by settle(), in the background for
// settle_detached()). Other holds are inner's, untouched.
std::unique_ptr<Meter> make_tpm_meter(Meter& inner, storage::Kv& kv, metrics::Registry& metrics,
                                      boost::asio::any_io_executor ex);

}  // namespace alou::auth
