// The Idempotency-Key store on the embedded KV: claims, replays, the
// fingerprint, abandoning, streams kept when committed, and answers too
// large to keep.
#include "alou/gateway/idempotency.hpp"

#include "alou/storage/database.hpp"
#include "alou/storage/kv.hpp"
#include "unit/storage/io_runner.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace alou::gateway {
namespace {

using storage::testing::IoRunner;
using storage::testing::TempDir;
using Kind = IdempotencyStart::Kind;

class IdempotencyStore : public ::testing::Test {
 protected:
  void SetUp() override {
    StorageSettings s;
    s.data_dir = dir_.path().string();
    auto opened = storage::Database::open(s);
    ASSERT_TRUE(opened) << opened.error().message;
    db_ = std::move(*opened);
    ASSERT_TRUE(db_->migrate(storage::default_migrations_dir()));
    auto kv = storage::make_embedded_kv(io_.executor(), *db_, s);
    ASSERT_TRUE(kv) << kv.error().message;
    kv_ = std::move(*kv);
    IdempotencyOptions opts;
    opts.max_body = 64;
    idem_ = std::make_unique<Idempotency>(*kv_, io_.executor(), opts);
  }
  void TearDown() override {
    idem_.reset();
    // Claims destroyed unfinished left KV work in the background: let it
    // run before the KV goes (each await is one more trip through the queue).
    for (int i = 0; i < 3; ++i) {
      io_.await([]() -> boost::asio::awaitable<void> { co_return; }());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (kv_) kv_->flush();
    kv_.reset();  // its timers keep the io_context busy
    io_.join();
    db_.reset();
  }

  IdempotencyStart begin(std::string key, std::string body, std::string who = "key_a") {
    return io_.await(idem_->begin(std::move(who), std::move(key), "/v1/chat/completions", body));
  }
  template <class F>
  void on_io(F f) {
    io_.await([](F g) -> boost::asio::awaitable<void> { co_await g(); }(std::move(f)));
  }
  // Background work (a claim destroyed unfinished) lands shortly.
  template <class P>
  static bool eventually(P p) {
    for (int i = 0; i < 200; ++i) {
      if (p()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  TempDir dir_;
  IoRunner io_{1};
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<storage::Kv> kv_;
  std::unique_ptr<Idempotency> idem_;
};

TEST_F(IdempotencyStore, KeysAreValidatedLikeTheHeader) {
  EXPECT_TRUE(Idempotency::valid_key("a"));
  EXPECT_TRUE(Idempotency::valid_key(std::string(255, 'x')));
  EXPECT_FALSE(Idempotency::valid_key(""));
  EXPECT_FALSE(Idempotency::valid_key(std::string(256, 'x')));
  EXPECT_FALSE(Idempotency::valid_key("has space"));
  EXPECT_FALSE(Idempotency::valid_key("tab\there"));
}

TEST_F(IdempotencyStore, ClaimThenReplayThenMismatch) {
  auto first = begin("k", "{\"a\":1}");
  ASSERT_EQ(first.kind, Kind::kClaimed);
  EXPECT_EQ(begin("k", "{\"a\":1}").kind, Kind::kError);  // in progress
  EXPECT_EQ(begin("k", "{\"a\":1}").error.code, "idempotency_in_progress");
  auto claim = first.claim;
  on_io([claim] { return claim->complete(200, "application/json", "{\"ok\":true}"); });
  const auto replay = begin("k", "{\"a\":1}");
  ASSERT_EQ(replay.kind, Kind::kReplay);
  EXPECT_EQ(replay.status, 200);
  EXPECT_EQ(replay.content_type, "application/json");
  EXPECT_EQ(replay.body, "{\"ok\":true}");
  const auto other = begin("k", "{\"a\":2}");
  ASSERT_EQ(other.kind, Kind::kError);
  EXPECT_EQ(other.error.status, 422);
  EXPECT_EQ(other.error.code, "idempotency_key_reused");
  // Another caller's key of the same name is its own.
  EXPECT_EQ(begin("k", "{\"a\":2}", "key_b").kind, Kind::kClaimed);
}

TEST_F(IdempotencyStore, AnAbandonedOrDroppedClaimFreesTheKey) {
  auto first = begin("k", "x");
  ASSERT_EQ(first.kind, Kind::kClaimed);
  auto claim = first.claim;
  on_io([claim] { return claim->abandon(); });
  first.claim.reset();
  claim.reset();
  auto again = begin("k", "x");
  ASSERT_EQ(again.kind, Kind::kClaimed);
  again.claim.reset();  // destroyed unfinished, uncommitted: removed in the background
  EXPECT_TRUE(eventually([&] { return begin("k", "x").kind == Kind::kClaimed; }));
}

TEST_F(IdempotencyStore, ACommittedStreamKeepsWhatItSentEvenIfCut) {
  auto first = begin("s", "x");
  ASSERT_EQ(first.kind, Kind::kClaimed);
  first.claim->commit();
  first.claim->tape("data: a\n\n");
  first.claim->tape("data: b\n\n");
  first.claim.reset();  // cut: kept in the background
  IdempotencyStart replay;
  ASSERT_TRUE(eventually([&] {
    replay = begin("s", "x");
    return replay.kind == Kind::kReplay;
  }));
  EXPECT_EQ(replay.content_type, "text/event-stream");
  EXPECT_EQ(replay.body, "data: a\n\ndata: b\n\n");
}

TEST_F(IdempotencyStore, AnAnswerTooLargeToKeepIsRefusedOnReplay) {
  auto first = begin("big", "x");
  ASSERT_EQ(first.kind, Kind::kClaimed);
  auto claim = first.claim;
  on_io([claim] { return claim->complete(200, "application/json", std::string(100, 'z')); });  // > 64
  const auto replay = begin("big", "x");
  ASSERT_EQ(replay.kind, Kind::kError);
  EXPECT_EQ(replay.error.status, 409);
  EXPECT_EQ(replay.error.code, "idempotency_response_not_kept");
  // A stream's tape past the limit too.
  auto s = begin("big-stream", "x");
  ASSERT_EQ(s.kind, Kind::kClaimed);
  s.claim->commit();
  for (int i = 0; i < 10; ++i) s.claim->tape("data: 0123456789\n\n");
  auto sc = s.claim;
  on_io([sc] { return sc->complete_tape(); });
  EXPECT_EQ(begin("big-stream", "x").error.code, "idempotency_response_not_kept");
}

}  // namespace
}  // namespace alou::gateway
