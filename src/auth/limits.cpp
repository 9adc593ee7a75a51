#include "alou/auth/limits.hpp"

#include "alou/core/metrics.hpp"
#include "alou/core/time.hpp"
#include "alou/http/exchange.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/beast/http/field.hpp>
#include <spdlog/spdlog.h>

#include <cmath>

namespace alou::auth {
namespace {

namespace net = boost::asio;

std::string rpm_key(const std::string& id) { return "rl:rpm:" + id; }
std::string tpm_key(const std::string& id) { return "rl:tpm:" + id; }
std::string concurrency_key(const std::string& id) { return "rl:conc:" + id; }

std::int64_t retry_seconds(storage::Ms after) {
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(std::chrono::duration<double>(after).count())));
}

double tokens_of(const Usage& u) { return static_cast<double>(u.prompt_tokens + u.completion_tokens); }

// What a model call owes after its hold ends: its tokens to the TPM bucket
// (when the key has a TPM limit) and its in-flight slot (when it took one).
struct Debts {
  LimitStore& limits;
  net::any_io_executor ex;
  std::string id;                 // the key's id
  std::optional<std::int64_t> tpm;
  std::optional<Slot> slot;

  net::awaitable<void> debit(double tokens) {
    if (!tpm || !(tokens > 0)) co_return;
    const auto cap = static_cast<double>(*tpm);
    co_await limits.debit_tokens(tpm_key(id), cap, cap / 60.0, tokens);
  }
  net::awaitable<void> release() {
    if (!slot) co_return;
    const Slot s = *std::exchange(slot, std::nullopt);
    co_await limits.release_slot(concurrency_key(id), s, kConcurrencyTtl);
  }
  // Not awaited (a detached settlement, a dropped hold).
  void in_background(double tokens);
};

net::awaitable<void> pay(Debts d, double tokens) {
  co_await d.debit(tokens);
  co_await d.release();
}

void Debts::in_background(double tokens) {
  if ((!tpm || !(tokens > 0)) && !slot) return;
  try {
    net::co_spawn(ex, pay(Debts{limits, ex, id, tpm, std::exchange(slot, std::nullopt)}, tokens), net::detached);
  } catch (const std::exception& e) {
    spdlog::error("usage policy: background debit not started: {}", e.what());
  }
}

class PolicyHold final : public Hold {
 public:
  PolicyHold(std::unique_ptr<Hold> inner, Debts debts) : inner_(std::move(inner)), debts_(std::move(debts)) {}
  ~PolicyHold() override { debts_.in_background(0); }

  std::int64_t amount_nanos() const override { return inner_->amount_nanos(); }
  std::int64_t output_cap() const override { return inner_->output_cap(); }
  void priced_as(std::string model) override { inner_->priced_as(std::move(model)); }

  net::awaitable<Result<std::int64_t>> settle(Usage usage, std::string provider) override {
    auto r = co_await inner_->settle(usage, std::move(provider));
    // Debited whatever the ledger said: the upstream produced the tokens.
    co_await debts_.debit(tokens_of(usage));
    // Given back before the answer goes out: a client that has its answer
    // may send its next call at once without meeting its own slot.
    co_await debts_.release();
    co_return r;
  }
  void settle_detached(Usage usage, std::string provider) override {
    inner_->settle_detached(usage, std::move(provider));
    debts_.in_background(tokens_of(usage));
  }
  void release() override {
    inner_->release();
    debts_.in_background(0);
  }
  void event(std::string kind, std::string data) override { inner_->event(std::move(kind), std::move(data)); }

 private:
  std::unique_ptr<Hold> inner_;
  Debts debts_;
};

class Policy final : public UsagePolicy {
 public:
  Policy(Meter& meter, LimitStore& limits, metrics::Registry& m, net::any_io_executor ex)
      : meter_(meter),
        limits_(limits),
        ex_(std::move(ex)),
        rpm_limited_(m.counter("alou_ratelimit_rejected_total", "Requests refused by a rate limit", {{"limit", "rpm"}})),
        tpm_limited_(m.counter("alou_ratelimit_rejected_total", "Requests refused by a rate limit", {{"limit", "tpm"}})),
        concurrency_limited_(m.counter("alou_ratelimit_rejected_total", "Requests refused by a rate limit",
                                       {{"limit", "concurrency"}})) {}

  Meter& meter() override { return meter_; }

  net::awaitable<Admission> admit_request(const Principal& p) override {
    Admission a;
    if (p.rpm) co_await check_rpm(p, a);
    co_return a;
  }

  net::awaitable<Admission> admit(const HoldRequest& req) override {
    Admission a;
    if (!req.principal) {
      a.error = Error::unauthorized("no credentials");
      co_return a;
    }
    const Principal& p = *req.principal;
    if (p.rpm && !co_await check_rpm(p, a)) co_return a;
    if (p.tpm && !co_await check_tpm(p, a)) co_return a;
    Debts debts{limits_, ex_, p.id, p.tpm, std::nullopt};
    if (p.max_concurrency) {
      const std::int64_t limit = *p.max_concurrency;
      auto slot = co_await limits_.acquire_slot(concurrency_key(p.id), limit, kConcurrencyTtl);
      if (!slot.acquired) {
        concurrency_limited_.inc();
        a.error = Error{429, "concurrency_limit_exceeded",
                        "this key already has " + std::to_string(limit) +
                            " requests in flight (its max_concurrency); retry when one has finished"};
        a.retry_after_s = 1;
        co_return a;
      }
      debts.slot = slot;
    }
    auto h = meter_.hold(req);
    if (!h) {
      a.error = h.error();
      co_await debts.release();
      co_return a;
    }
    if (!p.tpm && !debts.slot) {
      a.hold = std::move(*h);
    } else {
      a.hold = std::make_unique<PolicyHold>(std::move(*h), std::move(debts));
    }
    co_return a;
  }

 private:
  // False: refused (a.error set). Only for principals with an rpm.
  net::awaitable<bool> check_rpm(const Principal& p, Admission& a) {
    const auto rpm = static_cast<double>(*p.rpm);
    const auto r = co_await limits_.take_tokens(rpm_key(p.id), rpm, rpm / 60.0, 1.0);
    a.headers.emplace_back("x-ratelimit-limit-requests", std::to_string(*p.rpm));
    a.headers.emplace_back("x-ratelimit-remaining-requests",
                           std::to_string(static_cast<std::int64_t>(std::floor(r.remaining))));
    a.headers.emplace_back("x-ratelimit-reset-requests",
                           format_seconds3(std::chrono::duration<double>(r.reset_after).count()));
    if (r.allowed) co_return true;
    rpm_limited_.inc();
    a.retry_after_s = retry_seconds(r.retry_after);
    a.error = Error{429, "rate_limit_exceeded",
                    "rate limit of " + std::to_string(*p.rpm) + " requests per minute reached; retry in " +
                        std::to_string(a.retry_after_s) + " s"};
    co_return false;
  }

  net::awaitable<bool> check_tpm(const Principal& p, Admission& a) {
    const std::int64_t tpm = *p.tpm;
    const auto capacity = static_cast<double>(tpm);
    const auto r = co_await limits_.debit_tokens(tpm_key(p.id), capacity, capacity / 60.0, 0.0);
    a.headers.emplace_back("x-ratelimit-limit-tokens", std::to_string(tpm));
    a.headers.emplace_back("x-ratelimit-remaining-tokens",
                           std::to_string(std::max<std::int64_t>(0, static_cast<std::int64_t>(std::floor(r.remaining)))));
    a.headers.emplace_back("x-ratelimit-reset-tokens",
                           format_seconds3(std::chrono::duration<double>(r.reset_after).count()));
    if (r.allowed) co_return true;
    tpm_limited_.inc();
    a.retry_after_s = retry_seconds(r.retry_after);
    a.error = Error{429, "tokens_rate_limit_exceeded",
                    "token rate limit of " + std::to_string(tpm) + " tokens per minute reached; retry in " +
                        std::to_string(a.retry_after_s) + " s"};
    co_return false;
  }

  Meter& meter_;
  LimitStore& limits_;
  net::any_io_executor ex_;
  metrics::Counter& rpm_limited_;
  metrics::Counter& tpm_limited_;
  metrics::Counter& concurrency_limited_;
};

class RateLimitFilter final : public http::Filter {
 public:
  explicit RateLimitFilter(UsagePolicy& policy) : policy_(policy) {}

  net::awaitable<std::optional<http::Response>> on_request(http::Exchange& ex) override {
    if (!ex.principal || !ex.principal->rpm) co_return std::nullopt;
    // Model calls meet the whole policy in their handler.
    if (const auto* route = ex.route(); route && route->options.metered) co_return std::nullopt;
    auto a = co_await policy_.admit_request(*ex.principal);
    for (auto& h : a.headers) ex.response_headers.push_back(std::move(h));
    if (!a.error) co_return std::nullopt;
    auto res = ex.error(*a.error);
    res.set(http::bhttp::field::retry_after, std::to_string(a.retry_after_s));
    co_return res;
  }

 private:
  UsagePolicy& policy_;
};

}  // namespace

std::unique_ptr<UsagePolicy> make_usage_policy(Meter& meter, LimitStore& limits, metrics::Registry& metrics,
                                               net::any_io_executor ex) {
  return std::make_unique<Policy>(meter, limits, metrics, std::move(ex));
}

std::shared_ptr<http::Filter> make_rate_limit_filter(UsagePolicy& policy) {
  return std::make_shared<RateLimitFilter>(policy);
}

}  // namespace alou::auth
