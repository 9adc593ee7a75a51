// The embedded KV: a mutex-guarded map, written behind to the `kv` table.
//
// Expiry uses the system clock in milliseconds since the epoch, because the
// deadlines are persisted and must keep their meaning across a restart.
#include "alou/storage/database.hpp"
#include "alou/storage/kv.hpp"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace alou::storage {
namespace {

namespace asio = boost::asio;

// Result<T> cannot be built implicitly from an arithmetic T: C++20 lets
// the aggregate Error be constructed from one, which disables the implicit
// value constructor. Spell the value case out.
template <class T>
Result<T> ok(T value) {
  return Result<T>(boost::system::in_place_value, std::move(value));
}

// Out of line: GCC 12 at -O1 warns (-Wmaybe-uninitialized, falsely) when a
// Result<void> temporary is built inside a coroutine here.
[[gnu::noinline]] Result<void> success() { return {}; }

// How often the flush loop also drops expired keys from memory.
constexpr std::int64_t kSweepEveryMs = 1000;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t deadline_for(Ms ttl, std::int64_t now) { return ttl.count() > 0 ? now + ttl.count() : 0; }

struct Entry {
  std::string value;
  std::int64_t expires_at_ms = 0;  // 0: never

  bool expired(std::int64_t now) const { return expires_at_ms != 0 && expires_at_ms <= now; }
};

// Token-bucket state lives in the map as an ordinary value so it is
// persisted and expires like any other key.
struct Bucket {
  double tokens = 0;
  std::int64_t refilled_at_ms = 0;
};

// "<tokens> <refilled_at_ms>": the shortest text that reads back as the
// same double (std::to_chars; printf's %.17g cost more than the bucket
// arithmetic on every rate-limited request).
std::string encode_bucket(const Bucket& b) {
  char buf[64];
  char* p = std::to_chars(buf, buf + 40, b.tokens).ptr;
  *p++ = ' ';
  p = std::to_chars(p, buf + sizeof buf, b.refilled_at_ms).ptr;
  return std::string(buf, p);
}

std::optional<Bucket> decode_bucket(const std::string& text) {
  Bucket b;
  const char* end = text.data() + text.size();
  auto r = std::from_chars(text.data(), end, b.tokens);
  if (r.ec != std::errc() || r.ptr == end || *r.ptr != ' ' || !std::isfinite(b.tokens)) return std::nullopt;
  auto r2 = std::from_chars(r.ptr + 1, end, b.refilled_at_ms);
  if (r2.ec != std::errc() || r2.ptr != end) return std::nullopt;
  return b;
}

std::optional<std::int64_t> parse_int(const std::string& text) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

Error kv_error(std::string message) { return Error::internal(std::move(message), "kv_error"); }

// Shared between the Kv object and its flush loop, so the loop can outlive
// the object by one period without dangling.
class State final {
 public:
  explicit State(Database& db) : db_(db) {}

  Database& db() { return db_; }
  std::atomic<bool> stopped_{false};  // set by the Kv object; read by the flush loop

  template <class F>
  auto locked(F f) {
    std::lock_guard lock(mu_);
    return f(map_, dirty_);
  }

  // Runs on the database thread. Taking the dirty set there (not on the
  // io thread) keeps write order: each batch reflects the map as of the
  // moment it is written, and batches run one after another.
  void write_dirty(SQLite::Database& conn) {
    std::vector<std::pair<std::string, std::optional<Entry>>> batch;
    {
      std::lock_guard lock(mu_);
      if (dirty_.empty()) return;
      auto now = now_ms();
      batch.reserve(dirty_.size());
      for (const auto& key : dirty_) {
        auto it = map_.find(key);
        if (it == map_.end() || it->second.expired(now)) {
          batch.emplace_back(key, std::nullopt);
        } else {
          batch.emplace_back(key, it->second);
        }
      }
      dirty_.clear();
    }
    try {
      SQLite::Transaction tx(conn);
      SQLite::Statement upsert(conn,
                               "INSERT INTO kv (key, value, expires_at_ms) VALUES (?, ?, ?) "
                               "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                               "expires_at_ms = excluded.expires_at_ms");
      SQLite::Statement remove(conn, "DELETE FROM kv WHERE key = ?");
      for (const auto& [key, entry] : batch) {
        if (entry) {
          upsert.bind(1, key);
          upsert.bind(2, entry->value.data(), static_cast<int>(entry->value.size()));
          if (entry->expires_at_ms != 0) {
            upsert.bind(3, static_cast<int64_t>(entry->expires_at_ms));
          } else {
            upsert.bind(3);
          }
          upsert.exec();
          upsert.reset();
        } else {
          remove.bind(1, key);
          remove.exec();
          remove.reset();
        }
      }
      tx.commit();
    } catch (...) {
      // Nothing was written: mark the batch dirty again so the next period
      // retries it (keys changed meanwhile are dirty already).
      std::lock_guard lock(mu_);
      for (const auto& item : batch) dirty_.insert(item.first);
      throw;
    }
  }

  bool has_dirty() {
    std::lock_guard lock(mu_);
    return !dirty_.empty();
  }

  void sweep() {
    std::lock_guard lock(mu_);
    auto now = now_ms();
    for (auto it = map_.begin(); it != map_.end();) {
      if (it->second.expired(now)) {
        dirty_.insert(it->first);
        it = map_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void load(std::unordered_map<std::string, Entry> map) {
    std::lock_guard lock(mu_);
    map_ = std::move(map);
  }

 private:
  Database& db_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> map_;
  std::unordered_set<std::string> dirty_;
};

using Map = std::unordered_map<std::string, Entry>;
using Dirty = std::unordered_set<std::string>;

// Looks a key up, dropping it if it has expired.
Entry* find_live(Map& map, Dirty& dirty, const std::string& key, std::int64_t now) {
  auto it = map.find(key);
  if (it == map.end()) return nullptr;
  if (it->second.expired(now)) {
    map.erase(it);
    dirty.insert(key);
    return nullptr;
  }
  return &it->second;
}

asio::awaitable<void> flush_loop(std::shared_ptr<State> state, std::uint32_t period_ms) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer timer(ex);
  std::int64_t next_sweep = now_ms() + kSweepEveryMs;
  // Polling `stopped` once per short period avoids cancelling the timer
  // from another thread, which Asio's timers do not allow.
  while (!state->stopped_.load()) {
    timer.expires_after(std::chrono::milliseconds(period_ms));
    co_await timer.async_wait(asio::use_awaitable);
    if (state->stopped_.load()) break;
    if (now_ms() >= next_sweep) {
      state->sweep();
      next_sweep = now_ms() + kSweepEveryMs;
    }
    if (!state->has_dirty()) continue;
    try {
      // A named callable: see Database::run on GCC 12 and co_await temporaries.
      auto write = [state](SQLite::Database& conn) { state->write_dirty(conn); };
      co_await state->db().run(std::move(write));
    } catch (const std::exception& e) {
      spdlog::warn("embedded kv: write-behind failed, will retry: {}", e.what());
    }
  }
}

class EmbeddedKv final : public Kv {
 public:
  explicit EmbeddedKv(std::shared_ptr<State> state) : state_(std::move(state)) {}
  ~EmbeddedKv() override { state_->stopped_.store(true); }

  std::string_view backend() const override { return "embedded"; }

  asio::awaitable<Result<std::optional<std::string>>> get(std::string key) override {
    co_return state_->locked([&](Map& map, Dirty& dirty) -> std::optional<std::string> {
      auto* e = find_live(map, dirty, key, now_ms());
      if (e == nullptr) return std::nullopt;
      return e->value;
    });
  }

  asio::awaitable<Result<void>> set(std::string key, std::string value, Ms ttl) override {
    state_->locked([&](Map& map, Dirty& dirty) {
      map.insert_or_assign(key, Entry{std::move(value), deadline_for(ttl, now_ms())});
      dirty.insert(std::move(key));
    });
    co_return success();
  }

  asio::awaitable<Result<bool>> set_if_absent(std::string key, std::string value, Ms ttl) override {
    co_return ok(state_->locked([&](Map& map, Dirty& dirty) {
      auto now = now_ms();
      if (find_live(map, dirty, key, now) != nullptr) return false;
      map.insert_or_assign(key, Entry{std::move(value), deadline_for(ttl, now)});
      dirty.insert(std::move(key));
      return true;
    }));
  }

  asio::awaitable<Result<bool>> del(std::string key) override {
    co_return ok(state_->locked([&](Map& map, Dirty& dirty) {
      if (find_live(map, dirty, key, now_ms()) == nullptr) return false;
      map.erase(key);
      dirty.insert(std::move(key));
      return true;
    }));
  }

  asio::awaitable<Result<std::int64_t>> incr(std::string key, std::int64_t by, Ms ttl) override {
    co_return state_->locked([&](Map& map, Dirty& dirty) -> Result<std::int64_t> {
      auto now = now_ms();
      auto* e = find_live(map, dirty, key, now);
      std::int64_t current = 0;
      if (e != nullptr) {
        auto v = parse_int(e->value);
        if (!v) return kv_error("incr: value of the key is not an integer");
        current = *v;
      }
      std::int64_t next = 0;
      if (__builtin_add_overflow(current, by, &next)) return kv_error("incr: overflow");
      if (e != nullptr) {
        e->value = std::to_string(next);
      } else {
        map.insert_or_assign(key, Entry{std::to_string(next), deadline_for(ttl, now)});
      }
      dirty.insert(std::move(key));
      return ok(next);
    });
  }

  asio::awaitable<Result<bool>> compare_and_delete(std::string key, std::string expected) override {
    co_return ok(state_->locked([&](Map& map, Dirty& dirty) {
      auto* e = find_live(map, dirty, key, now_ms());
      if (e == nullptr || e->value != expected) return false;
      map.erase(key);
      dirty.insert(std::move(key));
      return true;
    }));
  }

  asio::awaitable<Result<std::optional<std::string>>> take(std::string key) override {
    co_return state_->locked([&](Map& map, Dirty& dirty) -> std::optional<std::string> {
      auto* e = find_live(map, dirty, key, now_ms());
      if (e == nullptr) return std::nullopt;
      std::string value = std::move(e->value);
      map.erase(key);
      dirty.insert(std::move(key));
      return value;
    });
  }

  asio::awaitable<Result<bool>> expire(std::string key, Ms ttl) override {
    co_return ok(state_->locked([&](Map& map, Dirty& dirty) {
      auto now = now_ms();
      auto* e = find_live(map, dirty, key, now);
      if (e == nullptr) return false;
      e->expires_at_ms = deadline_for(ttl, now);
      dirty.insert(std::move(key));
      return true;
    }));
  }

  asio::awaitable<Result<std::optional<Ms>>> ttl(std::string key) override {
    co_return state_->locked([&](Map& map, Dirty& dirty) -> std::optional<Ms> {
      auto now = now_ms();
      auto* e = find_live(map, dirty, key, now);
      if (e == nullptr) return std::nullopt;
      if (e->expires_at_ms == 0) return Ms{0};
      return Ms{e->expires_at_ms - now};
    });
  }

  asio::awaitable<Result<BucketResult>> take_tokens(std::string key, double capacity, double refill_per_s,
                                                    double cost) override {
    if (!(capacity > 0) || !(refill_per_s > 0) || !(cost >= 0)) {
      co_return kv_error("take_tokens: capacity and refill must be > 0 and cost >= 0");
    }
    co_return bucket(std::move(key), capacity, refill_per_s, cost, /*debit=*/false);
  }

  asio::awaitable<Result<BucketResult>> debit_tokens(std::string key, double capacity, double refill_per_s,
                                                     double cost) override {
    if (!(capacity > 0) || !(refill_per_s > 0) || !(cost >= 0)) {
      co_return kv_error("debit_tokens: capacity and refill must be > 0 and cost >= 0");
    }
    co_return bucket(std::move(key), capacity, refill_per_s, cost, /*debit=*/true);
  }

  asio::awaitable<Result<SlotResult>> acquire_slot(std::string key, std::int64_t limit, Ms) override {
    if (limit <= 0) co_return kv_error("acquire_slot: limit must be > 0");
    std::lock_guard lock(slots_mu_);
    auto& n = slots_[key];
    SlotResult r;
    if (n < limit) {
      ++n;
      r.acquired = true;
    }
    r.in_use = n;
    co_return r;
  }

  asio::awaitable<Result<std::int64_t>> release_slot(std::string key, Ms) override {
    std::lock_guard lock(slots_mu_);
    auto it = slots_.find(key);
    if (it == slots_.end()) co_return ok<std::int64_t>(0);
    if (--it->second <= 0) {
      slots_.erase(it);
      co_return ok<std::int64_t>(0);
    }
    co_return ok(it->second);
  }

  asio::awaitable<Result<void>> ping() override { co_return success(); }

  void flush() override {
    state_->stopped_.store(true);
    try {
      state_->db().run_sync([state = state_](SQLite::Database& conn) { state->write_dirty(conn); });
    } catch (const std::exception& e) {
      spdlog::error("embedded kv: final flush failed: {}", e.what());
    }
  }

 private:
  // Both token buckets: take `cost` if there is that much (take_tokens), or
  // subtract it whatever is left (debit_tokens).
  Result<BucketResult> bucket(std::string key, double capacity, double refill_per_s, double cost, bool debit) {
    return state_->locked([&](Map& map, Dirty& dirty) -> Result<BucketResult> {
      auto now = now_ms();
      Bucket b{capacity, now};
      const auto* e = find_live(map, dirty, key, now);
      if (e != nullptr) {
        auto decoded = decode_bucket(e->value);
        if (!decoded) return kv_error("token bucket: key holds a value that is not a token bucket");
        b = *decoded;
      }
      const BucketResult r = apply_bucket(b.tokens, b.refilled_at_ms, now, e != nullptr, capacity, refill_per_s, cost,
                                          debit);
      if (r.reset_after.count() > 0) {
        // Expire once full: a full bucket is the same as no bucket.
        map.insert_or_assign(key, Entry{encode_bucket(b), now + r.reset_after.count()});
      } else {
        map.erase(key);
      }
      dirty.insert(std::move(key));
      return r;
    });
  }

  std::shared_ptr<State> state_;
  // In-flight counts: in memory only (see Kv::acquire_slot).
  std::mutex slots_mu_;
  std::unordered_map<std::string, std::int64_t> slots_;
};

}  // namespace

Result<std::unique_ptr<Kv>> make_embedded_kv(asio::any_io_executor ex, Database& db,
                                             const StorageSettings& settings) {
  auto state = std::make_shared<State>(db);
  try {
    auto loaded = db.run_sync([](SQLite::Database& conn) {
      auto now = now_ms();
      conn.exec("DELETE FROM kv WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= " + std::to_string(now));
      Map map;
      SQLite::Statement q(conn, "SELECT key, value, expires_at_ms FROM kv");
      while (q.executeStep()) {
        auto value = q.getColumn(1);
        auto expires = q.getColumn(2);
        map.insert_or_assign(
            q.getColumn(0).getString(),
            Entry{std::string(static_cast<const char*>(value.getBlob()), static_cast<std::size_t>(value.getBytes())),
                  expires.isNull() ? 0 : expires.getInt64()});
      }
      return map;
    });
    state->load(std::move(loaded));
  } catch (const std::exception& e) {
    return Error::internal(std::string("embedded kv: cannot load the kv table: ") + e.what(), "storage_error");
  }
  asio::co_spawn(ex, flush_loop(state, std::max<std::uint32_t>(1, settings.kv_flush_ms)), asio::detached);
  return std::unique_ptr<Kv>(std::make_unique<EmbeddedKv>(std::move(state)));
}

BucketResult apply_bucket(double& tokens, std::int64_t& refilled_at_ms, std::int64_t now_ms, bool existed,
                          double capacity, double refill_per_s, double cost, bool debit) {
  if (!existed) {
    tokens = capacity;
    refilled_at_ms = now_ms;
  } else {
    // A clock step backwards must not mint tokens, so elapsed is >= 0.
    const auto elapsed = std::max<std::int64_t>(0, now_ms - refilled_at_ms);
    tokens = std::min(capacity, tokens + static_cast<double>(elapsed) * refill_per_s / 1000.0);
    refilled_at_ms = std::max(now_ms, refilled_at_ms);
  }
  BucketResult r;
  if (debit) {
    tokens -= cost;
    r.allowed = tokens > 0;
    if (!r.allowed) r.retry_after = Ms{static_cast<std::int64_t>(std::floor(-tokens * 1000.0 / refill_per_s)) + 1};
  } else if (tokens >= cost) {
    tokens -= cost;
    r.allowed = true;
  } else {
    r.retry_after = Ms{static_cast<std::int64_t>(std::ceil((cost - tokens) * 1000.0 / refill_per_s))};
  }
  r.remaining = tokens;
  r.reset_after = Ms{static_cast<std::int64_t>(std::ceil((capacity - tokens) * 1000.0 / refill_per_s))};
  return r;
}

}  // namespace alou::storage
