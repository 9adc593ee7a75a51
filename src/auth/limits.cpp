#include "alou/auth/limits.hpp"

#include "alou/core/metrics.hpp"
#include "alou/core/time.hpp"
#include "alou/http/exchange.hpp"
#include "alou/storage/kv.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/beast/http/field.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>

namespace alou::auth {
namespace {

namespace net = boost::asio;

std::string tpm_key(const std::string& id) { return "rl:tpm:" + id; }
std::string concurrency_key(const std::string& id) { return "rl:conc:" + id; }

metrics::Counter& kv_errors_counter(metrics::Registry& m) {
  return m.counter("alou_ratelimit_kv_errors_total", "Rate-limit checks skipped because the KV did not answer");
}

net::awaitable<void> release_slot(storage::Kv& kv, std::string key) {
  auto r = co_await kv.release_slot(key, kConcurrencyTtl);
  if (!r) spdlog::warn("concurrency slot of {} not released (the KV expiry will): {}", key, r.error().message);
}

// Gives a concurrency slot back when the exchange that holds it is
// destroyed: after the response or stream, or when the connection dies.
class SlotGuard final {
 public:
  SlotGuard(storage::Kv& kv, std::string key, net::any_io_executor ex)
      : kv_(kv), key_(std::move(key)), ex_(std::move(ex)) {}
  SlotGuard(const SlotGuard&) = delete;
  SlotGuard& operator=(const SlotGuard&) = delete;
  // Normally called (and awaited) before the response is written.
  net::awaitable<void> release() {
    if (released_) co_return;
    released_ = true;
    co_await release_slot(kv_, key_);
  }
  // If the exchange ended another way (the connection died): in the background.
  ~SlotGuard() {
    if (released_) return;
    try {
      net::co_spawn(ex_, release_slot(kv_, std::move(key_)), net::detached);
    } catch (const std::exception& e) {
      spdlog::error("concurrency slot not released: {}", e.what());
    }
  }

 private:
  bool released_ = false;
  storage::Kv& kv_;
  std::string key_;
  net::any_io_executor ex_;
};

class UsageLimitFilter final : public http::Filter {
 public:
  UsageLimitFilter(storage::Kv& kv, metrics::Registry& m, net::any_io_executor ex)
      : kv_(kv),
        ex_(std::move(ex)),
        tpm_limited_(m.counter("alou_ratelimit_rejected_total", "Requests refused by a rate limit", {{"limit", "tpm"}})),
        concurrency_limited_(m.counter("alou_ratelimit_rejected_total", "Requests refused by a rate limit",
                                       {{"limit", "concurrency"}})),
        kv_errors_(kv_errors_counter(m)) {}

  net::awaitable<std::optional<http::Response>> on_request(http::Exchange& ex) override {
    if (!ex.principal) co_return std::nullopt;
    if (ex.principal->tpm) {
      auto refused = co_await check_tpm(ex);
      if (refused) co_return refused;
    }
    if (ex.principal->max_concurrency) {
      const std::int64_t limit = *ex.principal->max_concurrency;
      std::string key = concurrency_key(ex.principal->id);
      auto r = co_await kv_.acquire_slot(key, limit, kConcurrencyTtl);
      if (!r) {
        kv_errors_.inc();
        spdlog::warn("[{}] concurrency limit skipped: {}", ex.request_id, r.error().message);
        co_return std::nullopt;
      }
      if (!r->acquired) {
        concurrency_limited_.inc();
        auto res = ex.error(Error{429, "concurrency_limit_exceeded",
                                  "this key already has " + std::to_string(limit) +
                                      " requests in flight (its max_concurrency); retry when one has finished"});
        res.set(http::bhttp::field::retry_after, "1");
        co_return res;
      }
      auto guard = std::make_shared<SlotGuard>(kv_, std::move(key), ex_);
      ex.attachments.push_back(guard);
      // Given back before the answer goes out: a client that has its answer
      // may send its next request at once without meeting its own slot.
      ex.before_send.push_back([guard]() { return guard->release(); });
    }
    co_return std::nullopt;
  }

 private:
  net::awaitable<std::optional<http::Response>> check_tpm(http::Exchange& ex) {
    const std::int64_t tpm = *ex.principal->tpm;
    const auto capacity = static_cast<double>(tpm);
    auto r = co_await kv_.debit_tokens(tpm_key(ex.principal->id), capacity, capacity / 60.0, 0.0);
    if (!r) {
      kv_errors_.inc();
      spdlog::warn("[{}] token rate limit skipped: {}", ex.request_id, r.error().message);
      co_return std::nullopt;
    }

    ex.response_headers.emplace_back("x-ratelimit-limit-tokens", std::to_string(tpm));
    ex.response_headers.emplace_back(
        "x-ratelimit-remaining-tokens",
        std::to_string(std::max<std::int64_t>(0, static_cast<std::int64_t>(std::floor(r->remaining)))));
    ex.response_headers.emplace_back("x-ratelimit-reset-tokens", format_seconds3(std::chrono::duration<double>(r->reset_after).count()));
    if (r->allowed) co_return std::nullopt;
    tpm_limited_.inc();
    const auto retry_s = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(std::ceil(std::chrono::duration<double>(r->retry_after).count())));
    auto res = ex.error(Error{429, "tokens_rate_limit_exceeded",
                              "token rate limit of " + std::to_string(tpm) +
                                  " tokens per minute reached; retry in " + std::to_string(retry_s) + " s"});
    res.set(http::bhttp::field::retry_after, std::to_string(retry_s));
    co_return res;
  }

  storage::Kv& kv_;
  net::any_io_executor ex_;
  metrics::Counter& tpm_limited_;
  metrics::Counter& concurrency_limited_;
  metrics::Counter& kv_errors_;
};

net::awaitable<void> debit(storage::Kv& kv, std::string key, double tpm, double tokens, metrics::Counter& errors) {
  if (!(tokens > 0)) co_return;
  auto r = co_await kv.debit_tokens(std::move(key), tpm, tpm / 60.0, tokens);
  if (!r) {
    errors.inc();
    spdlog::warn("token rate limit: debit of {} tokens lost: {}", tokens, r.error().message);
  }
}

double tokens_of(const Usage& u) { return static_cast<double>(u.prompt_tokens + u.completion_tokens); }

class TpmHold final : public Hold {
 public:
  TpmHold(std::unique_ptr<Hold> inner, storage::Kv& kv, std::string key, double tpm, net::any_io_executor ex,
          metrics::Counter& errors)
      : inner_(std::move(inner)), kv_(kv), key_(std::move(key)), tpm_(tpm), ex_(std::move(ex)), errors_(errors) {}

  std::int64_t amount_nanos() const override { return inner_->amount_nanos(); }

  net::awaitable<Result<std::int64_t>> settle(Usage usage, std::string provider) override {
    auto r = co_await inner_->settle(usage, std::move(provider));
    // Debited whatever the ledger said: the upstream produced the tokens.
    co_await debit(kv_, key_, tpm_, tokens_of(usage), errors_);
    co_return r;
  }

  void settle_detached(Usage usage, std::string provider) override {
    inner_->settle_detached(usage, std::move(provider));
    net::co_spawn(ex_, debit(kv_, key_, tpm_, tokens_of(usage), errors_), net::detached);
  }

  void release() override { inner_->release(); }
  void event(std::string kind, std::string data) override { inner_->event(std::move(kind), std::move(data)); }

 private:
  std::unique_ptr<Hold> inner_;
  storage::Kv& kv_;
  std::string key_;
  double tpm_;
  net::any_io_executor ex_;
  metrics::Counter& errors_;
};

class TpmMeter final : public Meter {
 public:
  TpmMeter(Meter& inner, storage::Kv& kv, metrics::Registry& m, net::any_io_executor ex)
      : inner_(inner), kv_(kv), ex_(std::move(ex)), errors_(kv_errors_counter(m)) {}

  Result<std::unique_ptr<Hold>> hold(const HoldRequest& req) override {
    auto h = inner_.hold(req);
    if (!h || req.principal == nullptr || !req.principal->tpm) return h;
    return std::unique_ptr<Hold>(std::make_unique<TpmHold>(std::move(*h), kv_, tpm_key(req.principal->id),
                                                           static_cast<double>(*req.principal->tpm), ex_, errors_));
  }

  void audit(const std::string& subject, const Principal* principal, std::string kind,
             const nlohmann::json& data) override {
    inner_.audit(subject, principal, std::move(kind), data);
  }

 private:
  Meter& inner_;
  storage::Kv& kv_;
  net::any_io_executor ex_;
  metrics::Counter& errors_;
};

}  // namespace

std::shared_ptr<http::Filter> make_usage_limit_filter(storage::Kv& kv, metrics::Registry& metrics,
                                                      net::any_io_executor ex) {
  return std::make_shared<UsageLimitFilter>(kv, metrics, std::move(ex));
}

std::unique_ptr<Meter> make_tpm_meter(Meter& inner, storage::Kv& kv, metrics::Registry& metrics,
                                      net::any_io_executor ex) {
  return std::make_unique<TpmMeter>(inner, kv, metrics, std::move(ex));
}

}  // namespace alou::auth
