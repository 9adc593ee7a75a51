#pragma once
// The KV store behind sessions, nonces, rate-limit counters and caches, with
// two implementations: Redis (hiredis; shared by several Alou instances) and
// the embedded one (in-process, TTL-aware, persisted to SQLite). Both pass
// the same typed test suite (tests/unit/storage/kv_suite_test.cpp).
//
// Every call is asynchronous and never blocks an io thread. Errors are
// values: code "kv_unavailable" (status 503) when the backend cannot be
// reached or a call misses its deadline. A ttl of zero means "no expiry".
// Thread-safety: every method may be called concurrently from any thread.
#include "alou/core/config.hpp"
#include "alou/core/error.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace alou::storage {

class Database;

using Ms = std::chrono::milliseconds;

struct BucketResult {
  bool allowed = false;
  double remaining = 0;        // tokens left after this call
  Ms retry_after{0};           // when refused: time until `cost` tokens are available
  Ms reset_after{0};           // time until the bucket is full again
};

struct SlotResult {
  bool acquired = false;
  std::int64_t in_use = 0;  // slots taken after this call
};

// The token-bucket step both in-process buckets share (the embedded KV's,
// and the rate limits' own while the KV is down): refills a bucket of
// `capacity` at `refill_per_s` since `refilled_at_ms` (a bucket that did not
// exist starts full), then takes `cost` if there is that much, or with
// `debit` subtracts it whatever is left. Updates tokens/refilled_at_ms.
BucketResult apply_bucket(double& tokens, std::int64_t& refilled_at_ms, std::int64_t now_ms, bool existed,
                          double capacity, double refill_per_s, double cost, bool debit);

class Kv {
 public:
  virtual ~Kv() = default;

  virtual std::string_view backend() const = 0;  // "redis" or "embedded"

  virtual boost::asio::awaitable<Result<std::optional<std::string>>> get(std::string key) = 0;
  virtual boost::asio::awaitable<Result<void>> set(std::string key, std::string value, Ms ttl = Ms{0}) = 0;
  // SET NX: true if it was stored (the key did not exist).
  virtual boost::asio::awaitable<Result<bool>> set_if_absent(std::string key, std::string value,
                                                            Ms ttl = Ms{0}) = 0;
  // true if a key was removed.
  virtual boost::asio::awaitable<Result<bool>> del(std::string key) = 0;
  // Atomic add; the key is created at 0 first. When the key is created by
  // this call and ttl > 0, the expiry is set (a fixed window).
  virtual boost::asio::awaitable<Result<std::int64_t>> incr(std::string key, std::int64_t by = 1,
                                                           Ms ttl = Ms{0}) = 0;
  // Deletes the key only if its value equals `expected`; true if deleted.
  virtual boost::asio::awaitable<Result<bool>> compare_and_delete(std::string key,
                                                                 std::string expected) = 0;
  // GETDEL: returns the value and removes the key atomically (single use).
  virtual boost::asio::awaitable<Result<std::optional<std::string>>> take(std::string key) = 0;
  // Sets a new expiry on an existing key (sliding TTL); false if absent.
  virtual boost::asio::awaitable<Result<bool>> expire(std::string key, Ms ttl) = 0;
  // Remaining time to live: nullopt if absent, Ms{0} if it never expires.
  virtual boost::asio::awaitable<Result<std::optional<Ms>>> ttl(std::string key) = 0;
  // Token bucket (for rate limits): `capacity` tokens, refilled continuously
  // at `refill_per_s`; takes `cost` tokens if available. Atomic per key
  // (a Lua script on Redis), so several instances share one bucket.
  virtual boost::asio::awaitable<Result<BucketResult>> take_tokens(std::string key, double capacity,
                                                                  double refill_per_s, double cost) = 0;
  // Token bucket for a cost known only afterwards (tokens per minute):
  // refilled like take_tokens', then `cost` is subtracted unconditionally,
  // so the bucket may go negative (a debt the refill pays back first); cost
  // 0 only reads it. `allowed`: more than 0 tokens are left; when not,
  // retry_after is the time until there are. Atomic per key, like
  // take_tokens; a key holds one kind of bucket.
  virtual boost::asio::awaitable<Result<BucketResult>> debit_tokens(std::string key, double capacity,
                                                                   double refill_per_s, double cost) = 0;
  // A counting semaphore (requests in flight per key): takes a slot if
  // fewer than `limit` (> 0) are taken. Atomic. On Redis the count expires
  // `ttl` after its last change, a safety net for slots that a crashed
  // instance never gave back; the embedded KV keeps counts in memory only
  // (they die with the requests they count) and ignores ttl. Slot keys are
  // only for acquire_slot/release_slot.
  virtual boost::asio::awaitable<Result<SlotResult>> acquire_slot(std::string key, std::int64_t limit, Ms ttl) = 0;
  // Gives one slot back (never below zero); returns the slots still taken.
  virtual boost::asio::awaitable<Result<std::int64_t>> release_slot(std::string key, Ms ttl) = 0;
  // Round trip to the backend (status page latency).
  virtual boost::asio::awaitable<Result<void>> ping() = 0;
  // Persist what is pending (embedded) / close connections (Redis). Blocking;
  // called once at shutdown after the io threads stopped.
  virtual void flush() = 0;
};

// Embedded KV: state in memory, written behind to the `kv` table of `db`
// every settings.kv_flush_ms and at flush(); loaded from it at creation, so
// a restart loses nothing. Expired keys are dropped lazily and by a sweep.
Result<std::unique_ptr<Kv>> make_embedded_kv(boost::asio::any_io_executor ex, Database& db,
                                             const StorageSettings& settings);

// Redis KV over hiredis' async API driven by Asio (no blocking call on the
// io threads); reconnects on failure; every call has a deadline of
// settings.redis_timeout_ms. redis_url: redis://[:password@]host:port[/db].
Result<std::unique_ptr<Kv>> make_redis_kv(boost::asio::any_io_executor ex,
                                          const StorageSettings& settings);

}  // namespace alou::storage
