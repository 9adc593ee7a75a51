// The KV session store on both backends: TTL, message cap, ownership.
#include "alou/sessions/sessions.hpp"

#include "alou/storage/database.hpp"
#include "alou/storage/kv.hpp"
#include "unit/storage/io_runner.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <future>
#include <thread>

namespace alou::sessions {
namespace {

using namespace std::chrono_literals;
using storage::testing::IoRunner;
using storage::testing::TempDir;

struct Embedded {
  TempDir dir;
  std::unique_ptr<storage::Database> db;
  std::optional<std::string> unavailable() { return std::nullopt; }
  Result<std::unique_ptr<storage::Kv>> make(boost::asio::any_io_executor ex) {
    StorageSettings s;
    s.data_dir = dir.path().string();
    auto opened = storage::Database::open(s);
    if (!opened) return opened.error();
    db = std::move(*opened);
    auto migrated = db->migrate(storage::default_migrations_dir());
    if (!migrated) return migrated.error();
    return storage::make_embedded_kv(ex, *db, s);
  }
};

struct Redis {
  std::optional<std::string> unavailable() {
    const char* url = std::getenv("ALOU_TEST_REDIS_URL");
    if (url == nullptr || *url == '\0') return "ALOU_TEST_REDIS_URL is not set";
    return std::nullopt;
  }
  Result<std::unique_ptr<storage::Kv>> make(boost::asio::any_io_executor ex) {
    StorageSettings s;
    s.redis_url = std::getenv("ALOU_TEST_REDIS_URL");
    return storage::make_redis_kv(ex, s);
  }
};

template <class Backend>
class SessionStore : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = backend_.unavailable()) {
      const char* req = std::getenv("ALOU_TEST_REQUIRE_REDIS");
      if (req && std::string(req) == "1") FAIL() << *why;
      GTEST_SKIP() << *why;
    }
    auto kv = backend_.make(io_.executor());
    ASSERT_TRUE(kv) << kv.error().message;
    kv_ = std::move(*kv);
    settings_.ttl_s = 100;
    settings_.max_messages = 3;
    store_ = make_kv_store(*kv_, settings_, [this] { return now_.load(); });
  }
  void TearDown() override {
    store_.reset();
    if (kv_) kv_->flush();
    kv_.reset();
    io_.join();
  }
  template <class T>
  T await(boost::asio::awaitable<T> a) {
    return io_.await(std::move(a));
  }
  std::optional<storage::Ms> ttl(const std::string& id) {
    auto r = await(kv_->ttl("session:" + id));
    EXPECT_TRUE(r);
    return r ? *r : std::nullopt;
  }

  Backend backend_;
  IoRunner io_;
  std::unique_ptr<storage::Kv> kv_;
  SessionsSettings settings_;
  std::unique_ptr<Store> store_;
  std::atomic<std::int64_t> now_{1'700'000'000'000};
};

using Backends = ::testing::Types<Embedded, Redis>;
TYPED_TEST_SUITE(SessionStore, Backends);

TYPED_TEST(SessionStore, CreateThenReadWithExpiry) {
  auto s = this->await(this->store_->create("key:a", "hello"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->id.substr(0, 5), "sess_");
  EXPECT_EQ(s->created_ms, this->now_.load());
  EXPECT_EQ(s->expires_ms, this->now_.load() + 100'000);
  auto r = this->await(this->store_->get("key:a", s->id));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->title, "hello");
  EXPECT_TRUE(r->messages.empty());
  const auto left = this->ttl(s->id);
  ASSERT_TRUE(left);
  EXPECT_GT(*left, 90s);
  EXPECT_LE(*left, 100s);
}

TYPED_TEST(SessionStore, ReadsAndAppendsSlideTheTtl) {
  auto s = this->await(this->store_->create("key:a", ""));
  ASSERT_TRUE(s);
  ASSERT_TRUE(this->await(this->kv_->expire("session:" + s->id, 5s)).value());
  EXPECT_LE(*this->ttl(s->id), 5s);
  this->now_ += 1000;
  auto r = this->await(this->store_->get("key:a", s->id));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->expires_ms, this->now_.load() + 100'000);
  EXPECT_GT(*this->ttl(s->id), 90s);
  ASSERT_TRUE(this->await(this->kv_->expire("session:" + s->id, 5s)).value());
  ASSERT_TRUE(this->await(this->store_->append("key:a", s->id, Message{"user", "hi", "", 0})));
  EXPECT_GT(*this->ttl(s->id), 90s);
}

TYPED_TEST(SessionStore, ExpiredSessionIsGone) {
  auto s = this->await(this->store_->create("key:a", ""));
  ASSERT_TRUE(s);
  ASSERT_TRUE(this->await(this->kv_->expire("session:" + s->id, 1ms)).value());
  std::this_thread::sleep_for(20ms);  // the KV's own clock: the only way to let a real TTL run out
  auto r = this->await(this->store_->get("key:a", s->id));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status, 404);
  EXPECT_EQ(r.error().code, "session_not_found");
  auto a = this->await(this->store_->append("key:a", s->id, Message{"user", "late", "", 0}));
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, "session_not_found");
  EXPECT_FALSE(this->ttl(s->id));  // the append did not resurrect it
}

TYPED_TEST(SessionStore, CapDropsTheOldestMessages) {
  auto s = this->await(this->store_->create("key:a", ""));
  ASSERT_TRUE(s);
  for (int i = 1; i <= 5; ++i) {
    this->now_ += 1;
    auto r = this->await(this->store_->append("key:a", s->id, Message{"user", "m" + std::to_string(i), "", 0}));
    ASSERT_TRUE(r) << r.error().message;
  }
  auto r = this->await(this->store_->get("key:a", s->id));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->messages.size(), 3u);
  EXPECT_EQ(r->messages[0].content, "m3");
  EXPECT_EQ(r->messages[2].content, "m5");
  EXPECT_EQ(r->messages[2].at_ms, this->now_.load());
  EXPECT_EQ(r->dropped, 2u);
}

TYPED_TEST(SessionStore, ConcurrentAppendsLoseNothing) {
  this->settings_.max_messages = 100;
  this->store_ = make_kv_store(*this->kv_, this->settings_);
  auto s = this->await(this->store_->create("key:a", ""));
  ASSERT_TRUE(s);
  std::vector<std::future<Result<Session>>> pending;
  for (int i = 0; i < 20; ++i) {
    pending.push_back(boost::asio::co_spawn(
        this->io_.context(), this->store_->append("key:a", s->id, Message{"user", std::to_string(i), "", 0}),
        boost::asio::use_future));
  }
  for (auto& f : pending) EXPECT_TRUE(f.get());
  auto r = this->await(this->store_->get("key:a", s->id));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->messages.size(), 20u);
}

TYPED_TEST(SessionStore, OtherOwnersSeeNothing) {
  auto s = this->await(this->store_->create("key:a", "mine"));
  ASSERT_TRUE(s);
  for (const char* other : {"key:b", "wallet:0xabc", "admin"}) {
    auto r = this->await(this->store_->get(other, s->id));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, "session_not_found");
    auto a = this->await(this->store_->append(other, s->id, Message{"user", "intrude", "", 0}));
    ASSERT_FALSE(a);
    EXPECT_EQ(a.error().code, "session_not_found");
    auto d = this->await(this->store_->remove(other, s->id));
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().code, "session_not_found");
  }
  auto r = this->await(this->store_->get("key:a", s->id));
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->messages.empty());  // nothing was written by the others
}

TYPED_TEST(SessionStore, DeleteRemoves) {
  auto s = this->await(this->store_->create("key:a", ""));
  ASSERT_TRUE(s);
  ASSERT_TRUE(this->await(this->store_->remove("key:a", s->id)));
  auto r = this->await(this->store_->get("key:a", s->id));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "session_not_found");
  auto again = this->await(this->store_->remove("key:a", s->id));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, "session_not_found");
}

TYPED_TEST(SessionStore, MalformedIdsAreNotFound) {
  for (const char* id : {"", "sess_", "nope", "sess_../../etc", "sess_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}) {
    auto r = this->await(this->store_->get("key:a", id));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, "session_not_found");
  }
}

TEST(SessionOwner, KindsDoNotCollide) {
  Principal key, wallet, admin;
  key.kind = Principal::Kind::kApiKey;
  key.id = "x";
  wallet.kind = Principal::Kind::kWallet;
  wallet.id = "x";
  admin.kind = Principal::Kind::kAdminKey;
  admin.id = "admin";
  EXPECT_EQ(owner_of(key), "key:x");
  EXPECT_EQ(owner_of(wallet), "wallet:x");
  EXPECT_EQ(owner_of(admin), "admin");
}

}  // namespace
}  // namespace alou::sessions
