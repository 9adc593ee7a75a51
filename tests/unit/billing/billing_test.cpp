// Prices, holds and settlements: the arithmetic, and the invariant that
// concurrent requests never overshoot a balance by more than one hold.
#include "alou/billing/billing.hpp"

#include "alou/core/metrics.hpp"
#include "alou/storage/database.hpp"
#include "io_runner.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace alou::billing {
namespace {

using storage::testing::IoRunner;
using storage::testing::TempDir;

TEST(Price, ConfigDollarsBecomeNanosPerMillion) {
  EXPECT_EQ(nanos_per_mtok(0.27), 270'000'000);
  EXPECT_EQ(nanos_per_mtok(1.10), 1'100'000'000);
  EXPECT_EQ(nanos_per_mtok(15), 15'000'000'000);
  EXPECT_EQ(nanos_per_mtok(0), 0);
}

TEST(Price, CostIsRoundedHalfUpOncePerRequest) {
  const Price p{1'500'000, 0, std::nullopt};  // 1.5 nanos per token... per 1e6
  // 1 token x 1,500,000 / 1e6 = 1.5 -> 2 (half up).
  EXPECT_EQ(cost_nanos(p, 1, 0, 0), 2);
  const Price q{1'400'000, 0, std::nullopt};
  EXPECT_EQ(cost_nanos(q, 1, 0, 0), 1);  // 1.4 -> 1
  const Price r{500'000, 0, std::nullopt};
  EXPECT_EQ(cost_nanos(r, 1, 0, 0), 1);  // 0.5 -> 1
  const Price s{499'999, 0, std::nullopt};
  EXPECT_EQ(cost_nanos(s, 1, 0, 0), 0);
  // Summed before rounding: 3 x 0.5 = 1.5 -> 2, not 3 x round(0.5) = 3.
  EXPECT_EQ(cost_nanos(r, 3, 0, 0), 2);
}

TEST(Price, CachedAndOutputTokensUseTheirPrices) {
  // $3 in, $15 out, $0.30 cached, per million tokens.
  const Price p{3'000'000'000, 15'000'000'000, 300'000'000};
  // 1000 prompt (400 cached), 200 completion:
  // 600 x 3000 + 400 x 300 + 200 x 15000 = 1,800,000 + 120,000 + 3,000,000 nanos.
  EXPECT_EQ(cost_nanos(p, 1000, 400, 200), 4'920'000);
  // No cached price: cached tokens cost the input price.
  const Price q{3'000'000'000, 15'000'000'000, std::nullopt};
  EXPECT_EQ(cost_nanos(q, 1000, 400, 200), 6'000'000);
  // Cached tokens beyond the prompt are capped; negatives count as zero.
  EXPECT_EQ(cost_nanos(p, 10, 50, -3), 3'000);
}

TEST(Price, HugeCountsDoNotOverflow) {
  const Price p{1'000'000'000'000, 1'000'000'000'000, std::nullopt};  // $1000 per token-million
  EXPECT_EQ(cost_nanos(p, 1'000'000'000, 0, 0), 1'000'000'000'000'000);
  EXPECT_EQ(hold_nanos(p, std::numeric_limits<std::int64_t>::max(), 1), std::numeric_limits<std::int64_t>::max());
}

TEST(Price, HoldsRoundUp) {
  const Price p{1, 1, std::nullopt};
  EXPECT_EQ(hold_nanos(p, 1, 0), 1);  // 1e-6 nano -> 1
  EXPECT_EQ(hold_nanos(p, 0, 0), 0);
  EXPECT_EQ(hold_nanos(Price{2'000'000, 3'000'000, std::nullopt}, 10, 5), 35);
}

TEST(Accounts, PrincipalsAndAddresses) {
  Principal k;
  k.kind = Principal::Kind::kApiKey;
  k.id = "k1";
  EXPECT_EQ(account_of(k), "key:k1");
  Principal w;
  w.kind = Principal::Kind::kWallet;
  w.id = "0xabc";
  EXPECT_EQ(account_of(w), "wallet:0xabc");
  Principal a;
  a.kind = Principal::Kind::kAdminKey;
  EXPECT_EQ(account_of(a), std::string(kAdmin));
  EXPECT_EQ(wallet_account("0x52908400098527886E0F7030069857D2E4169EE7"),
            "wallet:0x52908400098527886E0F7030069857D2E4169EE7");
  EXPECT_FALSE(wallet_account("0x5290840009852788"));
  EXPECT_FALSE(wallet_account("0xZZ908400098527886E0F7030069857D2E4169EE7"));
  EXPECT_TRUE(wallet_account("7EcDhSYGxXyscszYEp35KHN8vvw3svAuLKTzXwCFLtV"));
  EXPECT_FALSE(wallet_account("alice"));
  EXPECT_TRUE(is_account_id("key:x"));
  EXPECT_FALSE(is_account_id("x"));
}

struct BillingFixture {
  TempDir dir;
  std::unique_ptr<storage::Database> db;
  std::unique_ptr<Ledger> ledger;
  metrics::Registry metrics;
  std::unique_ptr<Billing> billing;
  Principal key;

  BillingFixture() {
    db = std::move(*storage::Database::open_file(dir.path() / "alou.db"));
    EXPECT_TRUE(db->migrate(storage::default_migrations_dir()));
    ledger = std::move(*Ledger::open(*db, LedgerOptions{dir.path() / "ledger.key", 1000, true}));
    Settings s;
    ModelSettings m;
    m.name = "priced";
    m.price.input_per_mtok = 1;   // 1,000 nanos per token
    m.price.output_per_mtok = 2;  // 2,000 nanos per token
    s.models.push_back(m);
    s.billing.default_max_output_tokens = 100;
    billing = std::make_unique<Billing>(s, *ledger, *db, metrics, nullptr);
    key.kind = Principal::Kind::kApiKey;
    key.id = "k1";
  }
  ~BillingFixture() {
    billing.reset();
    ledger.reset();
    db.reset();
  }
  void credit(std::int64_t nanos) {
    Batch b;
    b.transfers.push_back(Transfer{"credit", std::string(kCredits), "key:k1", nanos, "", "", ""});
    ASSERT_TRUE(ledger->commit_sync(std::move(b)));
  }
  HoldRequest req(std::int64_t prompt = 10, std::int64_t max_out = 0) {
    return HoldRequest{"req-" + std::to_string(++n), &key, "priced", prompt, max_out};
  }
  std::int64_t count(const std::string& sql) {
    return db->run_sync([&](SQLite::Database& c) { return c.execAndGet(sql).getInt64(); });
  }
  int n = 0;
};

TEST(Billing, InsufficientBalanceIs402AndWritesNothing) {
  BillingFixture f;
  f.credit(100);
  // 10 x 1,000 + 100 (default cap) x 2,000 = 210,000 > 100.
  auto h = f.billing->hold(f.req());
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().status, 402);
  EXPECT_EQ(h.error().code, "insufficient_balance");
  f.ledger->close();
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_holds"), 0);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records"), 0);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_entries"), 1);  // the credit only
}

TEST(Billing, SettleChargesTheUsageAndReleasesTheRest) {
  BillingFixture f;
  IoRunner io;
  f.credit(1'000'000);
  auto h = f.billing->hold(f.req(10, 50));
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ((*h)->amount_nanos(), 10 * 1000 + 50 * 2000);
  EXPECT_EQ(f.ledger->funds("key:k1").held_nanos, 110'000);
  (*h)->event("route", R"({"provider":"p"})");
  auto cost = io.await((*h)->settle(Usage{12, 7, 0, false}, "p"));
  ASSERT_TRUE(cost);
  EXPECT_EQ(*cost, 12 * 1000 + 7 * 2000);
  const auto funds = f.ledger->funds("key:k1");
  EXPECT_EQ(funds.balance_nanos, 1'000'000 - 26'000);
  EXPECT_EQ(funds.held_nanos, 0);
  h->reset();  // destroying a settled hold does nothing more
  f.ledger->close();
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_holds"), 0);
  EXPECT_EQ(f.count("SELECT cost_nanos FROM usage_records"), 26'000);
  // route and usage, packed in one row (Ledger.EventsOfOneSubjectArePacked...)
  EXPECT_EQ(f.count("SELECT json_array_length(data) FROM events WHERE subject = 'req-1' AND kind = '*'"), 2);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM events WHERE subject = 'req-1'"), 1);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge'"), 1);
  EXPECT_TRUE(f.ledger->verify_sync().ok);
}

TEST(Billing, ReleaseChargesNothing) {
  BillingFixture f;
  f.credit(1'000'000);
  {
    auto h = f.billing->hold(f.req());
    ASSERT_TRUE(h);
    (*h)->release();
  }
  {
    auto h = f.billing->hold(f.req());
    ASSERT_TRUE(h);
  }  // destroyed unsettled: released
  f.ledger->close();
  EXPECT_EQ(f.ledger->funds("key:k1").balance_nanos, 1'000'000);
  EXPECT_EQ(f.ledger->funds("key:k1").held_nanos, 0);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_holds"), 0);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records"), 0);
}

TEST(Billing, ConcurrentRequestsNeverOvershootBeyondOneHold) {
  BillingFixture f;
  IoRunner io(2);
  // Each request holds 10 x 1,000 + 20 x 2,000 = 50,000 and uses 30,000.
  constexpr std::int64_t kBalance = 1'000'000;
  f.credit(kBalance);
  constexpr int kN = 1000;
  std::atomic<int> refused{0};
  std::atomic<std::int64_t> charged{0};
  std::vector<std::thread> threads;
  std::vector<std::future<Result<std::int64_t>>> settles;
  std::mutex mu;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kN / 4; ++i) {
        HoldRequest r;
        {
          std::lock_guard lock(mu);
          r = f.req(10, 20);
        }
        auto h = f.billing->hold(r);
        if (!h) {
          EXPECT_EQ(h.error().status, 402);
          ++refused;
          continue;
        }
        std::shared_ptr<Hold> held(std::move(*h));
        auto settle = [held]() -> boost::asio::awaitable<Result<std::int64_t>> {
          auto c = co_await held->settle(Usage{10, 10, 0, false}, "p");
          co_return c;
        };
        auto fut = boost::asio::co_spawn(io.context(), settle(), boost::asio::use_future);
        auto c = fut.get();
        ASSERT_TRUE(c);
        charged += *c;
      }
    });
  }
  for (auto& t : threads) t.join();
  const auto funds = f.ledger->funds("key:k1");
  EXPECT_EQ(funds.held_nanos, 0);
  EXPECT_EQ(funds.balance_nanos, kBalance - charged.load());
  EXPECT_GE(funds.balance_nanos, 0);  // holds (50,000) exceed each charge (30,000)
  EXPECT_GT(refused.load(), 0);
  EXPECT_EQ(charged.load() % 30'000, 0);
  EXPECT_EQ(charged.load() / 30'000 + refused.load(), kN);
  f.ledger->close();
  EXPECT_EQ(f.count("SELECT COALESCE(SUM(cost_nanos), 0) FROM usage_records"), charged.load());
  EXPECT_TRUE(f.ledger->verify_sync().ok);
}

TEST(Billing, AdminMayOverdraw) {
  BillingFixture f;
  IoRunner io;
  Principal admin;
  admin.kind = Principal::Kind::kAdminKey;
  admin.id = "admin";
  auto h = f.billing->hold(HoldRequest{"r", &admin, "priced", 10, 0});
  ASSERT_TRUE(h);
  EXPECT_EQ((*h)->output_cap(), 0);  // nothing to bound: no cap is sent upstream
  auto c = io.await((*h)->settle(Usage{1, 1, 0, false}, "p"));
  ASSERT_TRUE(c);
  EXPECT_EQ(f.ledger->funds(std::string(kAdmin)).balance_nanos, -3000);
  // Charged in full even beyond its hold.
  auto big = f.billing->hold(HoldRequest{"r2", &admin, "priced", 10, 0});
  ASSERT_TRUE(big);
  const auto held = (*big)->amount_nanos();
  auto c2 = io.await((*big)->settle(Usage{10, 1000, 0, false}, "p"));
  ASSERT_TRUE(c2);
  EXPECT_EQ(*c2, 10 * 1000 + 1000 * 2000);
  EXPECT_GT(*c2, held);
}

TEST(Billing, UnpricedModelsAreFree) {
  BillingFixture f;
  IoRunner io;
  auto h = f.billing->hold(HoldRequest{"r", &f.key, "free-model", 10, 0});
  ASSERT_TRUE(h);
  EXPECT_EQ((*h)->amount_nanos(), 0);
  auto c = io.await((*h)->settle(Usage{100, 100, 0, false}, "p"));
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, 0);
  f.ledger->close();
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_entries"), 0);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records"), 1);
}

TEST(Billing, WithoutItsOwnCapARequestIsHeldForTheModelsMaximumAndTold) {
  BillingFixture f;
  f.credit(1'000'000);
  auto h = f.billing->hold(f.req(10, 0));
  ASSERT_TRUE(h) << h.error().message;
  // default_max_output_tokens = 100: 10 x 1,000 + 100 x 2,000.
  EXPECT_EQ((*h)->amount_nanos(), 210'000);
  EXPECT_EQ((*h)->output_cap(), 100);
  // A request with its own cap needs none from the hold.
  auto own = f.billing->hold(f.req(10, 30));
  ASSERT_TRUE(own);
  EXPECT_EQ((*own)->output_cap(), 0);
  EXPECT_EQ((*own)->amount_nanos(), 70'000);
  f.ledger->close();
}

TEST(Billing, ASmallBalanceGetsASmallerCapThatItCoversExactly) {
  BillingFixture f;
  f.credit(100'000);
  auto h = f.billing->hold(f.req(10, 0));
  ASSERT_TRUE(h) << h.error().message;
  // (100,000 - 10 x 1,000) / 2,000 = 45 output tokens.
  EXPECT_EQ((*h)->output_cap(), 45);
  EXPECT_EQ((*h)->amount_nanos(), 100'000);
  EXPECT_EQ(f.ledger->funds("key:k1").held_nanos, 100'000);
  // Nothing left for another: 402, nothing held.
  auto next = f.billing->hold(f.req(10, 0));
  ASSERT_FALSE(next);
  EXPECT_EQ(next.error().code, "insufficient_balance");
  EXPECT_EQ(f.ledger->funds("key:k1").held_nanos, 100'000);
  (*h)->release();
  f.ledger->close();
}

TEST(Billing, AChargeNeverExceedsItsHold) {
  BillingFixture f;
  IoRunner io;
  f.credit(100'000);
  auto h = f.billing->hold(f.req(10, 0));
  ASSERT_TRUE(h);
  const auto held = (*h)->amount_nanos();
  // The upstream ignored the cap and the prompt was longer than estimated.
  auto c = io.await((*h)->settle(Usage{50, 500, 0, false}, "p"));
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, held);
  EXPECT_EQ(f.ledger->funds("key:k1").balance_nanos, 100'000 - held);
  EXPECT_GE(f.ledger->funds("key:k1").balance_nanos, 0);
  EXPECT_EQ(f.metrics.counter("alou_billing_uncharged_nanos_total", "").value(),
            static_cast<std::uint64_t>(50 * 1000 + 500 * 2000 - held));
  f.ledger->close();
  EXPECT_EQ(f.count("SELECT cost_nanos FROM usage_records"), held);
  EXPECT_EQ(f.count("SELECT completion_tokens FROM usage_records"), 500);
  EXPECT_TRUE(f.ledger->verify_sync().ok);
}

TEST(Billing, ABudgetIsCheckedLikeABalanceAndSurvivesAReopen) {
  BillingFixture f;
  IoRunner io;
  f.credit(10'000'000);
  f.key.budget_nanos = 100'000;
  // Held within the budget: the cap shrinks to it.
  auto h = f.billing->hold(f.req(10, 0));
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ((*h)->amount_nanos(), 100'000);
  EXPECT_EQ((*h)->output_cap(), 45);
  auto c = io.await((*h)->settle(Usage{10, 40, 0, false}, "p"));
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, 90'000);
  // Settled: 90,000 spent, 10,000 left, less than the least useful hold (42,000).
  ASSERT_TRUE(io.await(f.ledger->sync()));
  EXPECT_EQ(f.ledger->funds("key:k1").spent_nanos, 90'000);
  auto refused = f.billing->hold(f.req(10, 0));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().status, 402);
  EXPECT_EQ(refused.error().code, "budget_exceeded");
  EXPECT_EQ(f.ledger->funds("key:k1").held_nanos, 0);
  // A request with its own cap is held in full or refused: 1,000 + 5 x
  // 2,000 = 11,000 is more than the 10,000 left; 9,000 is not.
  auto own = f.billing->hold(f.req(1, 5));
  ASSERT_FALSE(own);
  EXPECT_EQ(own.error().code, "budget_exceeded");
  auto fits = f.billing->hold(f.req(1, 4));
  ASSERT_TRUE(fits) << fits.error().message;
  EXPECT_EQ((*fits)->amount_nanos(), 9'000);
  (*fits)->release();
  f.ledger->close();
}

TEST(Billing, AFallbackIsHeldAtTheDearestPriceAndChargedAtItsOwn) {
  TempDir dir;
  auto db = std::move(*storage::Database::open_file(dir.path() / "alou.db"));
  ASSERT_TRUE(db->migrate(storage::default_migrations_dir()));
  auto ledger = std::move(*Ledger::open(*db, LedgerOptions{dir.path() / "ledger.key", 1000, true}));
  metrics::Registry metrics;
  Settings s;
  ModelSettings cheap;
  cheap.name = "cheap";
  cheap.price.input_per_mtok = 1;
  cheap.price.output_per_mtok = 1;
  ModelSettings dear;
  dear.name = "dear";
  dear.price.input_per_mtok = 3;
  dear.price.output_per_mtok = 5;
  dear.max_output_tokens = 200;
  s.models = {cheap, dear};
  s.billing.default_max_output_tokens = 100;
  Billing billing(s, *ledger, *db, metrics, nullptr);
  Batch b;
  b.transfers.push_back(Transfer{"credit", std::string(kCredits), "key:k1", 10'000'000, "", "", ""});
  ASSERT_TRUE(ledger->commit_sync(std::move(b)));
  Principal key;
  key.id = "k1";
  IoRunner io;
  HoldRequest r{"r1", &key, "cheap", 10, 0, {"dear"}};
  auto h = billing.hold(r);
  ASSERT_TRUE(h) << h.error().message;
  // 10 x 3,000 + 200 (dear's maximum) x 5,000.
  EXPECT_EQ((*h)->amount_nanos(), 1'030'000);
  EXPECT_EQ((*h)->output_cap(), 200);
  (*h)->priced_as("dear");
  auto c = io.await((*h)->settle(Usage{10, 20, 0, false}, "p"));
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, 10 * 3000 + 20 * 5000);
  // A model that is not among its fallbacks does not change the price.
  auto h2 = billing.hold(HoldRequest{"r2", &key, "cheap", 10, 5, {}});
  ASSERT_TRUE(h2);
  (*h2)->priced_as("dear");
  auto c2 = io.await((*h2)->settle(Usage{10, 5, 0, false}, "p"));
  ASSERT_TRUE(c2);
  EXPECT_EQ(*c2, 15 * 1000);
  ledger->close();
  EXPECT_EQ(db->run_sync([](SQLite::Database& conn) {
    return conn.execAndGet("SELECT COUNT(*) FROM usage_records WHERE model = 'dear'").getInt64();
  }), 1);
}

TEST(Ledger, ReserveTakesTheMostThatBalanceAndBudgetCover) {
  BillingFixture f;
  f.credit(1000);
  auto r = f.ledger->reserve("key:k1", ReserveAsk{.min = 100, .max = 5000, .overdraft = false, .budget = std::nullopt});
  EXPECT_EQ(r.refused, Reserved::Refused::kNone);
  EXPECT_EQ(r.amount, 1000);
  r = f.ledger->reserve("key:k1", ReserveAsk{.min = 1, .max = 5000, .overdraft = false, .budget = std::nullopt});
  EXPECT_EQ(r.refused, Reserved::Refused::kBalance);
  EXPECT_EQ(r.covered, 0);
  f.ledger->unreserve("key:k1", 1000);
  r = f.ledger->reserve("key:k1", ReserveAsk{.min = 100, .max = 5000, .overdraft = false, .budget = 300});
  EXPECT_EQ(r.amount, 300);
  r = f.ledger->reserve("key:k1", ReserveAsk{.min = 100, .max = 5000, .overdraft = false, .budget = 300});
  EXPECT_EQ(r.refused, Reserved::Refused::kBudget);
  EXPECT_EQ(f.ledger->funds("key:k1").held_nanos, 300);
  // Overdraft: the balance does not limit it.
  r = f.ledger->reserve("system:admin", ReserveAsk{.min = 10, .max = 5000, .overdraft = true, .budget = std::nullopt});
  EXPECT_EQ(r.amount, 5000);
  f.ledger->close();
}

}  // namespace
}  // namespace alou::billing
