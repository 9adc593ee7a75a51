#pragma once
// Where rate-limit state lives: the KV (Redis, so that every instance shares
// one limit; or the embedded KV), and, while the KV does not answer, a
// bucket and slot table in this process's memory. A limit then still holds,
// per instance, instead of letting everything through: with N instances on
// one Redis that is down, a key may get up to N times its limit until Redis
// is back. /api/status shows which is in use (status()).
//
// Thread-safety: every method may be called from any thread.
#include "alou/storage/kv.hpp"

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json_fwd.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace alou::metrics {
class Counter;
class Registry;
}  // namespace alou::metrics

namespace alou::auth {

// A slot taken by acquire_slot: give it back with release_slot.
struct Slot {
  bool acquired = false;
  std::int64_t in_use = 0;
  bool local = false;  // taken in memory (the KV was down): given back there
};

class LimitStore {
 public:
  // How long after the last KV failure the store says it is "local".
  static constexpr std::chrono::seconds kDegradedFor{30};

  // `kv` must outlive the store; `now` is injectable for tests (steady ms).
  LimitStore(storage::Kv& kv, metrics::Registry& metrics, std::int64_t (*now_ms)() = nullptr);
  ~LimitStore();
  LimitStore(const LimitStore&) = delete;
  LimitStore& operator=(const LimitStore&) = delete;

  // As Kv::take_tokens / Kv::debit_tokens, on the KV or (when it fails) in memory.
  boost::asio::awaitable<storage::BucketResult> take_tokens(std::string key, double capacity, double refill_per_s,
                                                            double cost);
  boost::asio::awaitable<storage::BucketResult> debit_tokens(std::string key, double capacity, double refill_per_s,
                                                             double cost);
  boost::asio::awaitable<Slot> acquire_slot(std::string key, std::int64_t limit, storage::Ms ttl);
  boost::asio::awaitable<void> release_slot(std::string key, const Slot& slot, storage::Ms ttl);

  // True while the KV failed in the last kDegradedFor.
  bool local() const;
  // {"mode": "shared"|"local", "backend", "kv_failures", "last_failure_ms_ago"?}.
  nlohmann::json status() const;

 private:
  struct Local;
  void failed();
  storage::Kv& kv_;
  std::unique_ptr<Local> local_;
  metrics::Counter& kv_errors_;
  std::int64_t (*now_ms_)();
  std::atomic<std::int64_t> last_failure_ms_{0};
  std::atomic<std::uint64_t> failures_{0};
};

}  // namespace alou::auth
