// The ledger against a real SQLite file: the chain, group commit, the
// balances, the append-only triggers, tampering, checkpoints, a second
// writer, and holds left by a crash.
#include "alou/billing/ledger.hpp"

#include "alou/storage/database.hpp"
#include "io_runner.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>

#include <set>
#include <thread>

namespace alou::billing {
namespace {

using storage::testing::IoRunner;
using storage::testing::TempDir;

struct Fixture {
  TempDir dir;
  std::unique_ptr<storage::Database> db;
  std::unique_ptr<Ledger> ledger;

  explicit Fixture(std::int64_t checkpoint_every = 1000, bool release = true) {
    open_db();
    open_ledger(checkpoint_every, release);
  }
  ~Fixture() {
    ledger.reset();
    db.reset();
  }
  void open_db() {
    auto d = storage::Database::open_file(dir.path() / "alou.db");
    EXPECT_TRUE(d) << d.error().message;
    db = std::move(*d);
    auto m = db->migrate(storage::default_migrations_dir());
    EXPECT_TRUE(m) << m.error().message;
  }
  void open_ledger(std::int64_t checkpoint_every = 1000, bool release = true) {
    auto l = Ledger::open(*db, LedgerOptions{dir.path() / "ledger.key", checkpoint_every, release});
    EXPECT_TRUE(l) << l.error().message;
    ledger = std::move(*l);
  }
  void reopen(std::int64_t checkpoint_every = 1000, bool release = true) {
    ledger.reset();
    db.reset();
    open_db();
    open_ledger(checkpoint_every, release);
  }
  std::int64_t count(const std::string& sql) {
    return db->run_sync([&](SQLite::Database& c) { return c.execAndGet(sql).getInt64(); });
  }
  void exec(const std::string& sql) {
    db->run_sync([&](SQLite::Database& c) { return c.exec(sql); });
  }
};

Batch transfer(std::string kind, std::string from, std::string to, std::int64_t amount) {
  Batch b;
  b.transfers.push_back(Transfer{std::move(kind), std::move(from), std::move(to), amount, "req-1", "", ""});
  return b;
}

Batch credit(const std::string& account, std::int64_t amount) {
  return transfer("credit", std::string(kCredits), account, amount);
}

// The published format (docs/billing.md, "Verify it yourself"), computed
// independently (sha256sum over the netstrings): a change of the encoding
// breaks every verifier out there, so it must fail here first.
TEST(LedgerHash, KnownAnswerVectors) {
  Entry credit;
  credit.seq = 1;
  credit.ts_ms = 1700000000000;
  credit.kind = "credit";
  credit.debit = "system:credits";
  credit.credit = "key:k1";
  credit.amount_nanos = 5'000'000'000;
  credit.memo = "welcome";
  credit.prev_hash = kGenesisHash;
  EXPECT_EQ(entry_hash(credit), "259cb8c4a09c5ff146d55056ae0b48cdd5c8ea640c185a9b69e54655cba1a77a");
  Entry charge;
  charge.seq = 2;
  charge.ts_ms = 1700000000123;
  charge.kind = "charge";
  charge.debit = "key:k1";
  charge.credit = "system:revenue";
  charge.amount_nanos = 26'000;
  charge.request_id = "req-1";
  charge.meta = R"({"model":"m","provider":"p"})";
  charge.prev_hash = entry_hash(credit);
  EXPECT_EQ(entry_hash(charge), "32bcff245b6d56f2da614f4ef874f90184dd1f12ee97e25ea9319dc2205b6f32");
}

TEST(LedgerHash, CoversEveryFieldAndIsUnambiguous) {
  Entry e;
  e.seq = 1;
  e.ts_ms = 1700000000000;
  e.kind = "credit";
  e.debit = "system:credits";
  e.credit = "key:a";
  e.amount_nanos = 5;
  e.prev_hash = kGenesisHash;
  const auto base = entry_hash(e);
  EXPECT_EQ(base.size(), 64u);
  EXPECT_EQ(base, entry_hash(e));  // deterministic
  std::set<std::string> seen{base};
  auto changed = [&](auto mutate) {
    Entry x = e;
    mutate(x);
    return seen.insert(entry_hash(x)).second;
  };
  EXPECT_TRUE(changed([](Entry& x) { x.seq = 2; }));
  EXPECT_TRUE(changed([](Entry& x) { x.ts_ms += 1; }));
  EXPECT_TRUE(changed([](Entry& x) { x.kind = "charge"; }));
  EXPECT_TRUE(changed([](Entry& x) { x.debit = "key:b"; }));
  EXPECT_TRUE(changed([](Entry& x) { x.credit = "key:b"; }));
  EXPECT_TRUE(changed([](Entry& x) { x.amount_nanos = 6; }));
  EXPECT_TRUE(changed([](Entry& x) { x.request_id = "r"; }));
  EXPECT_TRUE(changed([](Entry& x) { x.memo = "m"; }));
  EXPECT_TRUE(changed([](Entry& x) { x.meta = "{}"; }));
  EXPECT_TRUE(changed([](Entry& x) { x.prev_hash = std::string(64, '1'); }));
  // Moving a character from one field to the next changes the hash
  // (netstrings, not plain concatenation).
  Entry a = e, b = e;
  a.request_id = "ab";
  a.memo = "c";
  b.request_id = "a";
  b.memo = "bc";
  EXPECT_NE(entry_hash(a), entry_hash(b));
}

TEST(Ledger, CreditAndChargeKeepDoubleEntryBalances) {
  Fixture f;
  ASSERT_TRUE(f.ledger->commit_sync(credit("key:a", 1000)));
  ASSERT_TRUE(f.ledger->commit_sync(transfer("charge", "key:a", std::string(kRevenue), 300)));
  EXPECT_EQ(f.ledger->funds("key:a").balance_nanos, 700);
  EXPECT_EQ(f.ledger->funds(std::string(kRevenue)).balance_nanos, 300);
  EXPECT_EQ(f.ledger->funds(std::string(kCredits)).balance_nanos, -1000);
  const auto r = f.ledger->verify_sync();
  EXPECT_TRUE(r.ok) << r.to_json().dump();
  EXPECT_EQ(r.entries, 2);
  EXPECT_EQ(r.accounts, 3);
  // Balances survive a restart (recomputed from the entries).
  f.reopen();
  EXPECT_EQ(f.ledger->funds("key:a").balance_nanos, 700);
  EXPECT_EQ(f.ledger->tip_seq(), 2);
}

// A batch's events of one subject are one packed row; read back, they are
// the same events with their own ids, in order, continuing across rows and
// restarts.
TEST(Ledger, EventsOfOneSubjectArePackedAndReadBackInOrder) {
  Fixture f;
  Batch b;
  b.events.push_back(EventRow{"req-9", "key:a", "request", R"({"model":"m"})", 10});
  b.events.push_back(EventRow{"req-9", "key:a", "route", R"({"provider":"p","note":"a \"quoted\" word"})", 11});
  b.events.push_back(EventRow{"req-9", "key:a", "usage", R"({"cost_nanos":5})", 0});
  b.events.push_back(EventRow{"task-1", "", "tool_call", R"({"name":"t"})", 12});
  ASSERT_TRUE(f.ledger->commit_sync(std::move(b)));
  Batch late;
  late.events.push_back(EventRow{"req-9", "key:a", "completion", R"({"outcome":"ok"})", 13});
  ASSERT_TRUE(f.ledger->commit_sync(std::move(late)));
  // Three rows for five events: the packed one holds ids 1-3 and is id 3.
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM events"), 3);
  EXPECT_EQ(f.count("SELECT id FROM events WHERE kind = '*'"), 3);
  EXPECT_EQ(f.count("SELECT id FROM events WHERE kind = 'tool_call'"), 4);
  EXPECT_EQ(f.count("SELECT id FROM events WHERE kind = 'completion'"), 5);

  const auto read = [&f](const std::string& subject) {
    return f.db->run_sync([&](SQLite::Database& c) {
      SQLite::Statement st(c, "SELECT id, ts_ms, kind, data, account FROM events WHERE subject = ? ORDER BY id");
      st.bind(1, subject);
      auto out = nlohmann::json::array();
      while (st.executeStep()) {
        append_stored_events(out, st.getColumn(0).getInt64(), st.getColumn(1).getInt64(), st.getColumn(2).getString(),
                             st.getColumn(3).getString(), st.getColumn(4).getString());
      }
      return out;
    });
  };
  const auto events = read("req-9");
  ASSERT_EQ(events.size(), 4u) << events.dump();
  EXPECT_EQ(events[0], (nlohmann::json{{"id", 1}, {"ts_ms", 10}, {"kind", "request"},
                                       {"data", {{"model", "m"}}}, {"account", "key:a"}}));
  EXPECT_EQ(events[1]["id"], 2);
  EXPECT_EQ(events[1]["data"]["note"], "a \"quoted\" word");
  EXPECT_EQ(events[2]["id"], 3);
  EXPECT_EQ(events[2]["kind"], "usage");
  EXPECT_GT(events[2]["ts_ms"].get<std::int64_t>(), 1'000'000'000'000);  // no time given: the commit's
  EXPECT_EQ(events[3]["id"], 5);
  EXPECT_EQ(events[3]["kind"], "completion");
  EXPECT_EQ(read("task-1").size(), 1u);

  // After a restart the next id follows the packed row's range.
  f.reopen();
  Batch more;
  more.events.push_back(EventRow{"req-10", "key:a", "request", "{}", 20});
  more.events.push_back(EventRow{"req-10", "key:a", "usage", "{}", 21});
  ASSERT_TRUE(f.ledger->commit_sync(std::move(more)));
  const auto next = read("req-10");
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[0]["id"], 6);
  EXPECT_EQ(next[1]["id"], 7);
}

TEST(Ledger, RejectsInvalidTransfersAndWritesNothing) {
  Fixture f;
  for (auto b : {credit("key:a", 0), credit("key:a", -5), transfer("x", "key:a", "key:a", 5), credit("", 5)}) {
    auto r = f.ledger->commit_sync(std::move(b));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, "invalid_transfer");
  }
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_entries"), 0);
}

TEST(Ledger, TriggersRefuseUpdateAndDelete) {
  Fixture f;
  ASSERT_TRUE(f.ledger->commit_sync(credit("key:a", 10)));
  EXPECT_THROW(f.exec("UPDATE ledger_entries SET amount_nanos = 11"), SQLite::Exception);
  EXPECT_THROW(f.exec("DELETE FROM ledger_entries"), SQLite::Exception);
  EXPECT_EQ(f.count("SELECT amount_nanos FROM ledger_entries"), 10);
}

TEST(Ledger, GroupCommitFromManyThreadsKeepsOneChain) {
  Fixture f;
  IoRunner io(2);
  constexpr int kN = 1000;
  std::vector<std::future<Result<std::int64_t>>> done;
  done.reserve(kN);
  for (int i = 0; i < kN; ++i) {
    done.push_back(boost::asio::co_spawn(io.context(), f.ledger->commit(credit("key:" + std::to_string(i % 7), 3)),
                                         boost::asio::use_future));
  }
  std::set<std::int64_t> seqs;
  for (auto& d : done) {
    auto r = d.get();
    ASSERT_TRUE(r) << r.error().message;
    seqs.insert(*r);
  }
  EXPECT_EQ(seqs.size(), static_cast<std::size_t>(kN));
  EXPECT_EQ(*seqs.begin(), 1);
  EXPECT_EQ(*seqs.rbegin(), kN);
  // Fewer transactions than commits: the groups batched them (each
  // transaction updates ledger_balances' last_seq once per account).
  const auto r = f.ledger->verify_sync();
  EXPECT_TRUE(r.ok) << r.to_json().dump();
  EXPECT_EQ(r.entries, kN);
  std::int64_t total = 0;
  for (int k = 0; k < 7; ++k) total += f.ledger->funds("key:" + std::to_string(k)).balance_nanos;
  EXPECT_EQ(total, 3 * kN);
}

TEST(Ledger, VerifyNamesATamperedEntry) {
  Fixture f;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(f.ledger->commit_sync(credit("key:a", 100)));
  ASSERT_TRUE(f.ledger->verify_sync().ok);
  // What an attacker with the file would do: drop the guard, edit a row.
  f.exec("DROP TRIGGER ledger_entries_no_update");
  f.exec("UPDATE ledger_entries SET amount_nanos = 1 WHERE seq = 3");
  const auto r = f.ledger->verify_sync();
  EXPECT_FALSE(r.ok);
  ASSERT_TRUE(r.bad_seq);
  EXPECT_EQ(*r.bad_seq, 3);
  ASSERT_FALSE(r.problems.empty());
  EXPECT_NE(r.problems.front().find("entry 3"), std::string::npos) << r.problems.front();
}

TEST(Ledger, VerifyCatchesARecomputedHashThroughTheChain) {
  Fixture f;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(f.ledger->commit_sync(credit("key:a", 100)));
  // Re-hashing the edited entry breaks the next entry's prev_hash.
  Entry e;
  f.db->run_sync([&](SQLite::Database& c) {
    SQLite::Statement st(c, "SELECT seq, ts_ms, kind, debit, credit, request_id, memo, meta, prev_hash"
                            " FROM ledger_entries WHERE seq = 2");
    st.executeStep();
    e.seq = 2;
    e.ts_ms = st.getColumn(1).getInt64();
    e.kind = st.getColumn(2).getString();
    e.debit = st.getColumn(3).getString();
    e.credit = st.getColumn(4).getString();
    e.request_id = st.getColumn(5).getString();
    e.memo = st.getColumn(6).getString();
    e.meta = st.getColumn(7).getString();
    e.prev_hash = st.getColumn(8).getString();
    return 0;
  });
  e.amount_nanos = 5;
  f.exec("DROP TRIGGER ledger_entries_no_update");
  f.exec("UPDATE ledger_entries SET amount_nanos = 5, hash = '" + entry_hash(e) + "' WHERE seq = 2");
  const auto r = f.ledger->verify_sync();
  EXPECT_FALSE(r.ok);
  ASSERT_TRUE(r.bad_seq);
  EXPECT_EQ(*r.bad_seq, 3);  // its prev_hash no longer matches
}

TEST(Ledger, VerifyComparesTheStoredBalances) {
  Fixture f;
  ASSERT_TRUE(f.ledger->commit_sync(credit("key:a", 100)));
  f.exec("UPDATE ledger_balances SET balance_nanos = 1000 WHERE account = 'key:a'");
  const auto r = f.ledger->verify_sync();
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.bad_seq);  // the entries are fine; the cache is not
}

TEST(Ledger, CheckpointsAreSignedAndVerified) {
  Fixture f(/*checkpoint_every=*/3);
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(f.ledger->commit_sync(credit("key:a", 1)));
  EXPECT_GE(f.count("SELECT COUNT(*) FROM ledger_checkpoints"), 2);
  f.ledger->close();  // a final checkpoint at the tip
  EXPECT_EQ(f.count("SELECT MAX(seq) FROM ledger_checkpoints"), 7);
  auto r = f.ledger->verify_sync();
  EXPECT_TRUE(r.ok) << r.to_json().dump();
  EXPECT_GE(r.checkpoints, 3);
  EXPECT_EQ(f.ledger->public_key().size(), 64u);
  // A forged signature is caught.
  f.exec("UPDATE ledger_checkpoints SET signature = '" + std::string(128, 'a') + "' WHERE seq = 3");
  r = f.ledger->verify_sync();
  EXPECT_FALSE(r.ok);
  ASSERT_TRUE(r.bad_seq);
  EXPECT_EQ(*r.bad_seq, 3);
}

TEST(Ledger, TheSigningKeyIsKeptAcrossRestarts) {
  Fixture f;
  const auto pk = f.ledger->public_key();
  f.reopen();
  EXPECT_EQ(f.ledger->public_key(), pk);
  const auto perms = std::filesystem::status(f.dir.path() / "ledger.key").permissions();
  EXPECT_EQ(perms & (std::filesystem::perms::group_all | std::filesystem::perms::others_all),
            std::filesystem::perms::none);
}

TEST(Ledger, ASecondWriterIsChainedOnto) {
  Fixture f;
  ASSERT_TRUE(f.ledger->commit_sync(credit("key:a", 100)));
  // `alou credit` beside a running server: another connection, another ledger.
  auto db2 = storage::Database::open_file(f.dir.path() / "alou.db");
  ASSERT_TRUE(db2);
  {
    auto other = Ledger::open(**db2, LedgerOptions{f.dir.path() / "ledger.key", 1000, false});
    ASSERT_TRUE(other);
    ASSERT_TRUE((*other)->commit_sync(credit("key:a", 50)));
  }
  (*db2)->close();
  // The first writer learns the new balance at its next commit and chains on.
  ASSERT_TRUE(f.ledger->commit_sync(transfer("charge", "key:a", std::string(kRevenue), 30)));
  EXPECT_EQ(f.ledger->funds("key:a").balance_nanos, 120);
  const auto r = f.ledger->verify_sync();
  EXPECT_TRUE(r.ok) << r.to_json().dump();
  EXPECT_EQ(r.entries, 3);
}

TEST(Ledger, ReservationsRespectTheAvailableBalance) {
  Fixture f;
  ASSERT_TRUE(f.ledger->commit_sync(credit("key:a", 100)));
  EXPECT_TRUE(f.ledger->try_reserve("key:a", 60, false));
  EXPECT_FALSE(f.ledger->try_reserve("key:a", 50, false));
  EXPECT_TRUE(f.ledger->try_reserve("key:a", 40, false));
  EXPECT_EQ(f.ledger->funds("key:a").available(), 0);
  EXPECT_TRUE(f.ledger->try_reserve("key:a", 10, true));  // overdraft allowed
  f.ledger->unreserve("key:a", 50);
  EXPECT_EQ(f.ledger->funds("key:a").held_nanos, 60);
}

TEST(Ledger, HoldsLeftByACrashAreReleasedAtStartOnly) {
  Fixture f;
  Batch b;
  b.hold_inserts.push_back(HoldRow{"hold_1", "key:a", 10, "req", "m"});
  ASSERT_TRUE(f.ledger->commit_sync(std::move(b)));
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_holds"), 1);
  f.reopen(1000, /*release=*/false);  // a CLI beside the server keeps them
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_holds"), 1);
  f.reopen(1000, /*release=*/true);  // `alou serve` after a crash
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_holds"), 0);
}

TEST(Ledger, AHoldEndedBeforeItsRowIsDueIsNeverWritten) {
  Fixture f;
  f.ledger->persist_hold(HoldRow{"hold_a", "key:a", 10, "req-a", "m"});
  Batch end;
  end.holds_ended.push_back({"hold_a", "key:a", 10});
  ASSERT_TRUE(f.ledger->commit_sync(std::move(end)));
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_holds"), 0);
  // A young one outlives a round unwritten (most requests end within
  // 100 ms); once older, the next round writes it, and it is deleted when
  // it ends.
  f.ledger->persist_hold(HoldRow{"hold_b", "key:a", 10, "req-b", "m"});
  ASSERT_TRUE(f.ledger->commit_sync(Batch{}));
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_holds WHERE id = 'hold_b'"), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(130));
  ASSERT_TRUE(f.ledger->commit_sync(Batch{}));
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_holds WHERE id = 'hold_b'"), 1);
  Batch end_b;
  end_b.holds_ended.push_back({"hold_b", "key:a", 10});
  ASSERT_TRUE(f.ledger->commit_sync(std::move(end_b)));
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_holds"), 0);
}

TEST(Ledger, ThePollerWritesAHoldThatLives) {
  Fixture f;
  f.ledger->start_polling(std::chrono::milliseconds(20));
  f.ledger->persist_hold(HoldRow{"hold_c", "key:a", 10, "req-c", "m"});
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (f.count("SELECT COUNT(*) FROM ledger_holds") == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_holds WHERE id = 'hold_c' AND request_id = 'req-c'"), 1);
}

TEST(Ledger, EndingAHoldReleasesItOnceDurable) {
  Fixture f;
  ASSERT_TRUE(f.ledger->commit_sync(credit("key:a", 100)));
  ASSERT_TRUE(f.ledger->try_reserve("key:a", 40, false));
  Batch settle = transfer("charge", "key:a", std::string(kRevenue), 25);
  settle.holds_ended.push_back({"hold_x", "key:a", 40});
  ASSERT_TRUE(f.ledger->commit_sync(std::move(settle)));
  const auto funds = f.ledger->funds("key:a");
  EXPECT_EQ(funds.balance_nanos, 75);
  EXPECT_EQ(funds.held_nanos, 0);
}

TEST(Ledger, ClosedLedgerRefusesCommits) {
  Fixture f;
  f.ledger->close();
  auto r = f.ledger->commit_sync(credit("key:a", 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "ledger_unavailable");
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_entries"), 0);
}

}  // namespace
}  // namespace alou::billing
