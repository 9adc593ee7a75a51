// Every Kv behaviour, run against both backends.
#include "alou/storage/kv.hpp"

#include "alou/storage/database.hpp"
#include "io_runner.hpp"

#include <SQLiteCpp/Database.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <future>
#include <random>
#include <thread>

namespace alou::storage {
namespace {

using namespace std::chrono_literals;
using testing::IoRunner;
using testing::TempDir;

bool redis_required() {
  const char* v = std::getenv("ALOU_TEST_REQUIRE_REDIS");
  return v != nullptr && std::string(v) == "1";
}

struct EmbeddedBackend {
  TempDir dir;
  std::unique_ptr<Database> db;

  std::optional<std::string> unavailable_reason() { return std::nullopt; }

  Result<std::unique_ptr<Kv>> make(boost::asio::any_io_executor ex) {
    StorageSettings settings;
    settings.data_dir = dir.path().string();
    settings.kv_flush_ms = 20;
    if (!db) {
      auto opened = Database::open(settings);
      if (!opened) return opened.error();
      db = std::move(*opened);
      auto migrated = db->migrate(default_migrations_dir());
      if (!migrated) return migrated.error();
    }
    return make_embedded_kv(ex, *db, settings);
  }
};

struct RedisBackend {
  std::optional<std::string> unavailable_reason() {
    const char* url = std::getenv("ALOU_TEST_REDIS_URL");
    if (url == nullptr || *url == '\0') return "ALOU_TEST_REDIS_URL is not set";
    return std::nullopt;
  }

  Result<std::unique_ptr<Kv>> make(boost::asio::any_io_executor ex) {
    StorageSettings settings;
    settings.redis_url = std::getenv("ALOU_TEST_REDIS_URL");
    settings.redis_timeout_ms = 2000;
    return make_redis_kv(ex, settings);
  }
};

template <class Backend>
class KvSuite : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = backend_.unavailable_reason()) {
      if (redis_required()) FAIL() << *reason << " and ALOU_TEST_REQUIRE_REDIS=1";
      GTEST_SKIP() << *reason;
    }
    auto kv = backend_.make(io_.executor());
    ASSERT_TRUE(kv) << kv.error().message;
    kv_ = std::move(*kv);
    std::random_device rd;
    prefix_ = "alou-test:" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + ":" +
              std::to_string(rd()) + ":";
  }

  void TearDown() override {
    kv_.reset();
    io_.join();
  }

  std::string key(const std::string& name) const { return prefix_ + name; }

  template <class T>
  T await(boost::asio::awaitable<T> a) {
    return io_.await(std::move(a));
  }

  Kv& kv() { return *kv_; }

  Backend backend_;
  IoRunner io_;
  std::unique_ptr<Kv> kv_;
  std::string prefix_;
};

using Backends = ::testing::Types<EmbeddedBackend, RedisBackend>;

class BackendNames {
 public:
  template <class T>
  static std::string GetName(int) {
    return std::is_same_v<T, EmbeddedBackend> ? "Embedded" : "Redis";
  }
};

TYPED_TEST_SUITE(KvSuite, Backends, BackendNames);

TYPED_TEST(KvSuite, GetOfMissingKeyIsEmpty) {
  auto r = this->await(this->kv().get(this->key("missing")));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, std::nullopt);
}

TYPED_TEST(KvSuite, SetThenGetAndOverwrite) {
  auto k = this->key("a");
  ASSERT_TRUE(this->await(this->kv().set(k, "one")));
  EXPECT_EQ(this->await(this->kv().get(k)).value(), "one");
  ASSERT_TRUE(this->await(this->kv().set(k, "two")));
  EXPECT_EQ(this->await(this->kv().get(k)).value(), "two");
}

TYPED_TEST(KvSuite, ValuesAreBinarySafe) {
  auto k = this->key("bin");
  std::string value("a\0b\r\nc\xff", 7);
  ASSERT_TRUE(this->await(this->kv().set(k, value)));
  EXPECT_EQ(this->await(this->kv().get(k)).value(), value);
  std::string spaced_key = this->key("with space\r\n\0x");
  spaced_key.push_back('\0');
  ASSERT_TRUE(this->await(this->kv().set(spaced_key, "v")));
  EXPECT_EQ(this->await(this->kv().get(spaced_key)).value(), "v");
}

TYPED_TEST(KvSuite, KeysExpireAfterTheirTtl) {
  auto k = this->key("ttl");
  ASSERT_TRUE(this->await(this->kv().set(k, "v", 150ms)));
  EXPECT_EQ(this->await(this->kv().get(k)).value(), "v");
  std::this_thread::sleep_for(250ms);
  EXPECT_EQ(this->await(this->kv().get(k)).value(), std::nullopt);
  EXPECT_EQ(this->await(this->kv().ttl(k)).value(), std::nullopt);
}

TYPED_TEST(KvSuite, SetWithoutTtlClearsAnEarlierTtl) {
  auto k = this->key("persist");
  ASSERT_TRUE(this->await(this->kv().set(k, "v", 150ms)));
  ASSERT_TRUE(this->await(this->kv().set(k, "w")));
  EXPECT_EQ(this->await(this->kv().ttl(k)).value(), Ms{0});
}

TYPED_TEST(KvSuite, SetIfAbsentStoresOnlyOnce) {
  auto k = this->key("nx");
  EXPECT_TRUE(this->await(this->kv().set_if_absent(k, "first")).value());
  EXPECT_FALSE(this->await(this->kv().set_if_absent(k, "second")).value());
  EXPECT_EQ(this->await(this->kv().get(k)).value(), "first");
}

TYPED_TEST(KvSuite, SetIfAbsentSucceedsAfterExpiry) {
  auto k = this->key("nx-ttl");
  EXPECT_TRUE(this->await(this->kv().set_if_absent(k, "first", 150ms)).value());
  std::this_thread::sleep_for(250ms);
  EXPECT_TRUE(this->await(this->kv().set_if_absent(k, "second")).value());
  EXPECT_EQ(this->await(this->kv().get(k)).value(), "second");
}

TYPED_TEST(KvSuite, DelReportsWhetherAKeyWasRemoved) {
  auto k = this->key("del");
  ASSERT_TRUE(this->await(this->kv().set(k, "v")));
  EXPECT_TRUE(this->await(this->kv().del(k)).value());
  EXPECT_FALSE(this->await(this->kv().del(k)).value());
  EXPECT_EQ(this->await(this->kv().get(k)).value(), std::nullopt);
}

TYPED_TEST(KvSuite, IncrCreatesAtZeroAndAdds) {
  auto k = this->key("n");
  EXPECT_EQ(this->await(this->kv().incr(k)).value(), 1);
  EXPECT_EQ(this->await(this->kv().incr(k, 5)).value(), 6);
  EXPECT_EQ(this->await(this->kv().incr(k, -10)).value(), -4);
  EXPECT_EQ(this->await(this->kv().get(k)).value(), "-4");
  EXPECT_EQ(this->await(this->kv().ttl(k)).value(), Ms{0});
}

TYPED_TEST(KvSuite, IncrSetsTtlOnlyWhenItCreatesTheKey) {
  auto k = this->key("window");
  EXPECT_EQ(this->await(this->kv().incr(k, 1, 150ms)).value(), 1);
  auto first_ttl = this->await(this->kv().ttl(k)).value();
  ASSERT_TRUE(first_ttl.has_value());
  EXPECT_GT(*first_ttl, Ms{0});
  EXPECT_LE(*first_ttl, 150ms);
  std::this_thread::sleep_for(60ms);
  // A later increment must not extend the window.
  EXPECT_EQ(this->await(this->kv().incr(k, 1, 150ms)).value(), 2);
  auto second_ttl = this->await(this->kv().ttl(k)).value();
  ASSERT_TRUE(second_ttl.has_value());
  EXPECT_LE(*second_ttl, 100ms);
  std::this_thread::sleep_for(150ms);
  // Window over: the counter starts again.
  EXPECT_EQ(this->await(this->kv().incr(k, 1, 150ms)).value(), 1);
}

TYPED_TEST(KvSuite, IncrOfANonIntegerIsAnError) {
  auto k = this->key("text");
  ASSERT_TRUE(this->await(this->kv().set(k, "abc")));
  auto r = this->await(this->kv().incr(k));
  ASSERT_FALSE(r);
  EXPECT_EQ(this->await(this->kv().get(k)).value(), "abc");
}

TYPED_TEST(KvSuite, CompareAndDeleteOnlyOnMatch) {
  auto k = this->key("cad");
  ASSERT_TRUE(this->await(this->kv().set(k, "token")));
  EXPECT_FALSE(this->await(this->kv().compare_and_delete(k, "other")).value());
  EXPECT_EQ(this->await(this->kv().get(k)).value(), "token");
  EXPECT_TRUE(this->await(this->kv().compare_and_delete(k, "token")).value());
  EXPECT_EQ(this->await(this->kv().get(k)).value(), std::nullopt);
  EXPECT_FALSE(this->await(this->kv().compare_and_delete(k, "token")).value());
}

TYPED_TEST(KvSuite, TakeReturnsTheValueOnce) {
  auto k = this->key("take");
  ASSERT_TRUE(this->await(this->kv().set(k, "nonce")));
  EXPECT_EQ(this->await(this->kv().take(k)).value(), "nonce");
  EXPECT_EQ(this->await(this->kv().take(k)).value(), std::nullopt);
  EXPECT_EQ(this->await(this->kv().get(k)).value(), std::nullopt);
}

TYPED_TEST(KvSuite, ConcurrentTakesHandTheValueToExactlyOne) {
  auto k = this->key("race");
  ASSERT_TRUE(this->await(this->kv().set(k, "prize")));
  std::vector<std::future<Result<std::optional<std::string>>>> results;
  for (int i = 0; i < 50; ++i) {
    results.push_back(
        boost::asio::co_spawn(this->io_.context(), this->kv().take(k), boost::asio::use_future));
  }
  int winners = 0;
  for (auto& f : results) {
    auto r = f.get();
    ASSERT_TRUE(r) << r.error().message;
    if (r->has_value()) {
      EXPECT_EQ(**r, "prize");
      ++winners;
    }
  }
  EXPECT_EQ(winners, 1);
}

TYPED_TEST(KvSuite, ExpireAndTtl) {
  auto k = this->key("exp");
  EXPECT_FALSE(this->await(this->kv().expire(k, 1000ms)).value());
  ASSERT_TRUE(this->await(this->kv().set(k, "v")));
  EXPECT_EQ(this->await(this->kv().ttl(k)).value(), Ms{0});
  EXPECT_TRUE(this->await(this->kv().expire(k, 10'000ms)).value());
  auto t = this->await(this->kv().ttl(k)).value();
  ASSERT_TRUE(t.has_value());
  EXPECT_GT(*t, 9'000ms);
  EXPECT_LE(*t, 10'000ms);
  // A ttl of zero removes the expiry.
  EXPECT_TRUE(this->await(this->kv().expire(k, Ms{0})).value());
  EXPECT_EQ(this->await(this->kv().ttl(k)).value(), Ms{0});
  EXPECT_TRUE(this->await(this->kv().expire(k, 150ms)).value());
  std::this_thread::sleep_for(250ms);
  EXPECT_EQ(this->await(this->kv().get(k)).value(), std::nullopt);
}

TYPED_TEST(KvSuite, TokenBucketAllowsCapacityThenRefuses) {
  auto k = this->key("bucket");
  for (int i = 0; i < 3; ++i) {
    auto r = this->await(this->kv().take_tokens(k, 3, 10, 1));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_TRUE(r->allowed) << i;
    EXPECT_NEAR(r->remaining, 2 - i, 0.2);
  }
  auto refused = this->await(this->kv().take_tokens(k, 3, 10, 1)).value();
  EXPECT_FALSE(refused.allowed);
  EXPECT_GT(refused.retry_after, Ms{0});
  EXPECT_LE(refused.retry_after, 100ms);
  EXPECT_GT(refused.reset_after, 200ms);
  EXPECT_LE(refused.reset_after, 300ms);
}

TYPED_TEST(KvSuite, TokenBucketRefills) {
  auto k = this->key("refill");
  // 20 tokens/s: one every 50 ms.
  ASSERT_TRUE(this->await(this->kv().take_tokens(k, 2, 20, 2)).value().allowed);
  EXPECT_FALSE(this->await(this->kv().take_tokens(k, 2, 20, 1)).value().allowed);
  std::this_thread::sleep_for(120ms);
  auto r = this->await(this->kv().take_tokens(k, 2, 20, 2)).value();
  EXPECT_TRUE(r.allowed);
  EXPECT_NEAR(r.remaining, 0, 0.5);
}

TYPED_TEST(KvSuite, TokenBucketsAreIndependentPerKey) {
  ASSERT_TRUE(this->await(this->kv().take_tokens(this->key("b1"), 1, 1, 1)).value().allowed);
  EXPECT_FALSE(this->await(this->kv().take_tokens(this->key("b1"), 1, 1, 1)).value().allowed);
  EXPECT_TRUE(this->await(this->kv().take_tokens(this->key("b2"), 1, 1, 1)).value().allowed);
}

TYPED_TEST(KvSuite, DebitBucketGoesIntoDebtAndRefusesUntilRepaid) {
  auto k = this->key("debit");
  // A fresh bucket is full: a read (cost 0) is allowed and leaves it full.
  auto fresh = this->await(this->kv().debit_tokens(k, 100, 100, 0));
  ASSERT_TRUE(fresh) << fresh.error().message;
  EXPECT_TRUE(fresh->allowed);
  EXPECT_NEAR(fresh->remaining, 100, 1);
  // A debit larger than what is left is taken anyway: the bucket owes 50.
  auto debt = this->await(this->kv().debit_tokens(k, 100, 100, 150)).value();
  EXPECT_FALSE(debt.allowed);
  EXPECT_NEAR(debt.remaining, -50, 5);
  // 100 tokens/s: about 500 ms until it is positive again, 1.5 s until full.
  EXPECT_GT(debt.retry_after, 400ms);
  EXPECT_LE(debt.retry_after, 510ms);
  EXPECT_GT(debt.reset_after, 1400ms);
  EXPECT_LE(debt.reset_after, 1500ms);
  auto read = this->await(this->kv().debit_tokens(k, 100, 100, 0)).value();
  EXPECT_FALSE(read.allowed);
  EXPECT_LT(read.remaining, 0);
}

TYPED_TEST(KvSuite, DebitBucketRefills) {
  auto k = this->key("debit-refill");
  // 20 tokens/s; empty it exactly: 0 left is refused.
  auto empty = this->await(this->kv().debit_tokens(k, 2, 20, 2)).value();
  EXPECT_FALSE(empty.allowed);
  std::this_thread::sleep_for(120ms);
  auto r = this->await(this->kv().debit_tokens(k, 2, 20, 0)).value();
  EXPECT_TRUE(r.allowed);
  EXPECT_GT(r.remaining, 1.5);
}

TYPED_TEST(KvSuite, DebitRejectsBadArguments) {
  auto r = this->await(this->kv().debit_tokens(this->key("bad"), 0, 1, 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "kv_error");
  EXPECT_EQ(this->await(this->kv().get(this->key("bad"))).value(), std::nullopt);
}

TYPED_TEST(KvSuite, SlotsCountUpToTheLimitAndBack) {
  auto k = this->key("slots");
  auto a = this->await(this->kv().acquire_slot(k, 2, 60'000ms));
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_TRUE(a->acquired);
  EXPECT_EQ(a->in_use, 1);
  EXPECT_TRUE(this->await(this->kv().acquire_slot(k, 2, 60'000ms)).value().acquired);
  auto full = this->await(this->kv().acquire_slot(k, 2, 60'000ms)).value();
  EXPECT_FALSE(full.acquired);
  EXPECT_EQ(full.in_use, 2);  // a refusal takes nothing
  EXPECT_EQ(this->await(this->kv().release_slot(k, 60'000ms)).value(), 1);
  EXPECT_TRUE(this->await(this->kv().acquire_slot(k, 2, 60'000ms)).value().acquired);
  EXPECT_EQ(this->await(this->kv().release_slot(k, 60'000ms)).value(), 1);
  EXPECT_EQ(this->await(this->kv().release_slot(k, 60'000ms)).value(), 0);
  // Never below zero.
  EXPECT_EQ(this->await(this->kv().release_slot(k, 60'000ms)).value(), 0);
  EXPECT_EQ(this->await(this->kv().acquire_slot(k, 1, 60'000ms)).value().in_use, 1);
  EXPECT_FALSE(this->await(this->kv().acquire_slot(k, 0, 60'000ms)));
}

TYPED_TEST(KvSuite, ConcurrentAcquiresNeverExceedTheLimit) {
  auto k = this->key("slot-race");
  std::vector<std::future<Result<SlotResult>>> results;
  for (int i = 0; i < 40; ++i) {
    results.push_back(boost::asio::co_spawn(this->io_.context(), this->kv().acquire_slot(k, 5, 60'000ms),
                                            boost::asio::use_future));
  }
  int acquired = 0;
  for (auto& f : results) {
    auto r = f.get();
    ASSERT_TRUE(r) << r.error().message;
    if (r->acquired) ++acquired;
    EXPECT_LE(r->in_use, 5);
  }
  EXPECT_EQ(acquired, 5);
}

TYPED_TEST(KvSuite, Ping) {
  auto r = this->await(this->kv().ping());
  EXPECT_TRUE(r) << r.error().message;
}

TYPED_TEST(KvSuite, BackendName) {
  EXPECT_EQ(this->kv().backend(), (std::is_same_v<TypeParam, EmbeddedBackend> ? "embedded" : "redis"));
}

// ---------------------------------------------------------------- embedded only

class EmbeddedKvPersistence : public ::testing::Test {
 protected:
  TempDir dir_;

  StorageSettings settings() const {
    StorageSettings s;
    s.data_dir = dir_.path().string();
    s.kv_flush_ms = 20;
    return s;
  }

  std::unique_ptr<Database> open_db() {
    auto db = Database::open(settings());
    EXPECT_TRUE(db);
    EXPECT_TRUE((*db)->migrate(default_migrations_dir()));
    return std::move(*db);
  }

  int kv_rows(Database& db) {
    return db.run_sync([](SQLite::Database& c) { return c.execAndGet("SELECT COUNT(*) FROM kv").getInt(); });
  }
};

TEST_F(EmbeddedKvPersistence, FlushedStateSurvivesAReopen) {
  std::string binary("x\0y\r\n", 5);
  {
    auto db = open_db();
    IoRunner io;
    auto kv = make_embedded_kv(io.executor(), *db, settings()).value();
    ASSERT_TRUE(io.await(kv->set("plain", "1")));
    ASSERT_TRUE(io.await(kv->set("binary", binary)));
    ASSERT_TRUE(io.await(kv->set("long", "v", 60'000ms)));
    ASSERT_TRUE(io.await(kv->set("short", "v", 150ms)));
    ASSERT_TRUE(io.await(kv->set("deleted", "v")));
    ASSERT_TRUE(io.await(kv->del("deleted")));
    ASSERT_TRUE(io.await(kv->take_tokens("bucket", 5, 1, 3)).value().allowed);
    kv->flush();
    kv.reset();
    io.join();
  }
  std::this_thread::sleep_for(250ms);  // "short" expires while we are down
  auto db = open_db();
  IoRunner io;
  auto kv = make_embedded_kv(io.executor(), *db, settings()).value();
  EXPECT_EQ(io.await(kv->get("plain")).value(), "1");
  EXPECT_EQ(io.await(kv->get("binary")).value(), binary);
  EXPECT_EQ(io.await(kv->get("short")).value(), std::nullopt);
  EXPECT_EQ(io.await(kv->get("deleted")).value(), std::nullopt);
  auto ttl = io.await(kv->ttl("long")).value();
  ASSERT_TRUE(ttl.has_value());
  EXPECT_GT(*ttl, 50'000ms);
  EXPECT_LE(*ttl, 60'000ms);
  EXPECT_EQ(io.await(kv->ttl("plain")).value(), Ms{0});
  // The bucket kept its 2 remaining tokens (plus a little refill), not a fresh 5.
  auto bucket = io.await(kv->take_tokens("bucket", 5, 1, 0)).value();
  EXPECT_LT(bucket.remaining, 3.5);
  // The expired row was dropped from the table at load.
  EXPECT_EQ(kv_rows(*db), 4);
  kv.reset();
  io.join();
}

TEST_F(EmbeddedKvPersistence, WritesBehindWithoutAnExplicitFlush) {
  auto db = open_db();
  IoRunner io;
  auto kv = make_embedded_kv(io.executor(), *db, settings()).value();
  ASSERT_TRUE(io.await(kv->set("a", "1")));
  ASSERT_TRUE(io.await(kv->set("b", "2")));
  // The flush period is 20 ms; poll rather than assume a schedule.
  for (int i = 0; i < 100 && kv_rows(*db) != 2; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(kv_rows(*db), 2);
  ASSERT_TRUE(io.await(kv->del("a")));
  for (int i = 0; i < 100 && kv_rows(*db) != 1; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(kv_rows(*db), 1);
  kv.reset();
  io.join();
}

TEST_F(EmbeddedKvPersistence, CreationFailsWithoutTheKvTable) {
  auto db = Database::open(settings());
  ASSERT_TRUE(db);
  IoRunner io;
  auto kv = make_embedded_kv(io.executor(), **db, settings());
  ASSERT_FALSE(kv);
  EXPECT_EQ(kv.error().code, "storage_error");
  io.join();
}

}  // namespace
}  // namespace alou::storage
