#include "alou/auth/limit_store.hpp"

#include "alou/core/metrics.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <mutex>
#include <unordered_map>

namespace alou::auth {
namespace {

std::int64_t steady_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Past this many buckets the full ones are dropped (a full bucket is the
// same as none), so that a flood of keys cannot grow the table for ever.
constexpr std::size_t kPruneAt = 100'000;

}  // namespace

// The in-memory twin of the KV's buckets and slots.
struct LimitStore::Local {
  struct Bucket {
    double tokens = 0;
    std::int64_t refilled_at_ms = 0;
    std::int64_t full_at_ms = 0;
  };
  std::mutex mu;
  std::unordered_map<std::string, Bucket> buckets;
  std::unordered_map<std::string, std::int64_t> slots;

  storage::BucketResult bucket(const std::string& key, std::int64_t now, double capacity, double refill_per_s,
                               double cost, bool debit) {
    std::lock_guard lock(mu);
    if (buckets.size() >= kPruneAt) std::erase_if(buckets, [now](const auto& kv) { return kv.second.full_at_ms <= now; });
    auto [it, created] = buckets.try_emplace(key);
    auto& b = it->second;
    const auto r = storage::apply_bucket(b.tokens, b.refilled_at_ms, now, !created, capacity, refill_per_s, cost, debit);
    b.full_at_ms = now + r.reset_after.count();
    return r;
  }
};

LimitStore::LimitStore(storage::Kv& kv, metrics::Registry& metrics, std::int64_t (*now_ms)())
    : kv_(kv),
      local_(std::make_unique<Local>()),
      kv_errors_(metrics.counter("alou_ratelimit_kv_errors_total",
                                 "Rate-limit checks the KV did not answer (then enforced per instance, in memory)")),
      now_ms_(now_ms ? now_ms : &steady_now_ms) {}

LimitStore::~LimitStore() = default;

void LimitStore::failed() {
  kv_errors_.inc();
  failures_.fetch_add(1, std::memory_order_relaxed);
  const auto now = now_ms_();
  if (!local()) spdlog::warn("rate limits: the KV does not answer; limits are enforced per instance, in memory");
  last_failure_ms_.store(now, std::memory_order_relaxed);
}

bool LimitStore::local() const {
  const auto last = last_failure_ms_.load(std::memory_order_relaxed);
  return last != 0 && now_ms_() - last < std::chrono::duration_cast<std::chrono::milliseconds>(kDegradedFor).count();
}

nlohmann::json LimitStore::status() const {
  nlohmann::json out = {{"mode", local() ? "local" : "shared"},
                        {"backend", std::string(kv_.backend())},
                        {"kv_failures", failures_.load(std::memory_order_relaxed)}};
  if (const auto last = last_failure_ms_.load(std::memory_order_relaxed); last != 0) {
    out["last_failure_ms_ago"] = now_ms_() - last;
  }
  return out;
}

boost::asio::awaitable<storage::BucketResult> LimitStore::take_tokens(std::string key, double capacity,
                                                                      double refill_per_s, double cost) {
  auto r = co_await kv_.take_tokens(key, capacity, refill_per_s, cost);
  if (r) co_return *r;
  spdlog::debug("take_tokens {}: {}", key, r.error().message);
  failed();
  co_return local_->bucket(key, now_ms_(), capacity, refill_per_s, cost, false);
}

boost::asio::awaitable<storage::BucketResult> LimitStore::debit_tokens(std::string key, double capacity,
                                                                       double refill_per_s, double cost) {
  auto r = co_await kv_.debit_tokens(key, capacity, refill_per_s, cost);
  if (r) co_return *r;
  spdlog::debug("debit_tokens {}: {}", key, r.error().message);
  failed();
  co_return local_->bucket(key, now_ms_(), capacity, refill_per_s, cost, true);
}

boost::asio::awaitable<Slot> LimitStore::acquire_slot(std::string key, std::int64_t limit, storage::Ms ttl) {
  auto r = co_await kv_.acquire_slot(key, limit, ttl);
  if (r) co_return Slot{r->acquired, r->in_use, false};
  spdlog::debug("acquire_slot {}: {}", key, r.error().message);
  failed();
  std::lock_guard lock(local_->mu);
  auto& n = local_->slots[key];
  Slot s{false, 0, true};
  if (n < limit) {
    ++n;
    s.acquired = true;
  }
  s.in_use = n;
  if (n == 0) local_->slots.erase(key);
  co_return s;
}

boost::asio::awaitable<void> LimitStore::release_slot(std::string key, const Slot& slot, storage::Ms ttl) {
  if (!slot.acquired) co_return;
  if (slot.local) {
    std::lock_guard lock(local_->mu);
    if (auto it = local_->slots.find(key); it != local_->slots.end() && --it->second <= 0) local_->slots.erase(it);
    co_return;
  }
  auto r = co_await kv_.release_slot(key, ttl);
  if (!r) {
    failed();
    spdlog::warn("concurrency slot of {} not released (the KV expiry will): {}", key, r.error().message);
  }
}

}  // namespace alou::auth
