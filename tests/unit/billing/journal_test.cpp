// The settlement journal: a settlement is durable once its record is
// written, applied to the tables a moment later, replayed after a crash
// (a forked child that dies with the database thread stuck), never applied
// twice, a torn tail dropped, retried when applying fails, and owned by one
// process.
#include "alou/billing/ledger.hpp"

#include "alou/storage/database.hpp"
#include "io_runner.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <sstream>
#include <thread>

namespace alou::billing {
namespace {

using storage::testing::IoRunner;
using storage::testing::TempDir;

struct Journaled {
  TempDir dir;
  std::unique_ptr<storage::Database> db;
  std::unique_ptr<Ledger> ledger;

  Journaled() { open(); }
  ~Journaled() { shut(); }
  std::filesystem::path journal() const { return dir.path() / "ledger.journal"; }
  Result<std::unique_ptr<Ledger>> open_ledger() {
    return Ledger::open(*db, LedgerOptions{.key_file = dir.path() / "ledger.key",
                                           .checkpoint_every = 1000,
                                           .release_stale_holds = true,
                                           .metrics = nullptr,
                                           .journal_file = journal(),
                                           .journal_sync = false});
  }
  void open() {
    auto d = storage::Database::open_file(dir.path() / "alou.db");
    ASSERT_TRUE(d) << d.error().message;
    db = std::move(*d);
    auto m = db->migrate(storage::default_migrations_dir());
    ASSERT_TRUE(m) << m.error().message;
    auto l = open_ledger();
    ASSERT_TRUE(l) << l.error().message;
    ledger = std::move(*l);
  }
  void shut() {
    ledger.reset();
    db.reset();
  }
  std::int64_t count(const std::string& sql) {
    return db->run_sync([&](SQLite::Database& c) { return c.execAndGet(sql).getInt64(); });
  }
  std::uintmax_t journal_size() const { return std::filesystem::file_size(journal()); }
  // The records the file holds (both halves), as a start would read them.
  std::vector<JournalRecord> records() const {
    std::ifstream in(journal(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    std::vector<JournalRecord> out;
    for (const std::size_t from : {std::size_t{0}, kJournalHalfBytes}) {
      if (from >= text.size()) continue;
      std::size_t valid = 0;
      for (auto& r : decode_journal(std::string_view(text).substr(from), valid)) out.push_back(std::move(r));
    }
    return out;
  }
};

// What a gateway settlement writes: the charge, its usage, its events and
// the end of its hold.
Batch settlement(int i, std::int64_t cost) {
  Batch b;
  const std::string rid = "req-" + std::to_string(i);
  b.transfers.push_back(Transfer{"charge", "key:a", std::string(kRevenue), cost, rid, "", R"({"model":"m"})"});
  b.usage = UsageRow{rid, "key:a", "m", "p", 10, 5, 2, cost, false};
  b.events.push_back(EventRow{rid, "key:a", "request", R"({"model":"m"})", 0});
  b.events.push_back(EventRow{rid, "key:a", "usage", R"({"cost_nanos":1})", 0});
  b.holds_ended.push_back({"hold-" + std::to_string(i), "key:a", cost * 2});
  return b;
}

Batch credit(const std::string& account, std::int64_t amount) {
  Batch b;
  b.transfers.push_back(Transfer{"credit", std::string(kCredits), account, amount, "", "", ""});
  return b;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Journal, RecordsRoundTripAndATornOrCorruptTailEndsThem) {
  Batch b = settlement(7, 1234);
  b.ts_ms = 1'700'000'000'123;
  b.hold_inserts.push_back(HoldRow{"h", "key:a", 9, "req-7", "m"});
  b.events[0].data = std::string("bytes \0 and \xff", 13);
  const auto one = encode_journal_record(1, b);
  const auto two = encode_journal_record(2, settlement(8, 1));
  std::size_t valid = 0;
  auto recs = decode_journal(one + two, valid);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(valid, one.size() + two.size());
  const auto& r = recs[0];
  EXPECT_EQ(r.id, 1);
  EXPECT_EQ(r.batch.ts_ms, 1'700'000'000'123);
  ASSERT_EQ(r.batch.transfers.size(), 1u);
  EXPECT_EQ(r.batch.transfers[0].kind, "charge");
  EXPECT_EQ(r.batch.transfers[0].debit, "key:a");
  EXPECT_EQ(r.batch.transfers[0].credit, std::string(kRevenue));
  EXPECT_EQ(r.batch.transfers[0].amount_nanos, 1234);
  EXPECT_EQ(r.batch.transfers[0].request_id, "req-7");
  EXPECT_EQ(r.batch.transfers[0].meta, R"({"model":"m"})");
  ASSERT_TRUE(r.batch.usage);
  EXPECT_EQ(r.batch.usage->prompt_tokens, 10);
  EXPECT_EQ(r.batch.usage->completion_tokens, 5);
  EXPECT_EQ(r.batch.usage->cached_tokens, 2);
  EXPECT_EQ(r.batch.usage->cost_nanos, 1234);
  ASSERT_EQ(r.batch.events.size(), 2u);
  EXPECT_EQ(r.batch.events[0].data, std::string("bytes \0 and \xff", 13));
  EXPECT_EQ(r.batch.events[1].kind, "usage");
  ASSERT_EQ(r.batch.hold_inserts.size(), 1u);
  EXPECT_EQ(r.batch.hold_inserts[0].amount_nanos, 9);
  ASSERT_EQ(r.batch.holds_ended.size(), 1u);
  EXPECT_EQ(r.batch.holds_ended[0].id, "hold-7");
  EXPECT_EQ(r.batch.holds_ended[0].amount_nanos, 2468);
  EXPECT_EQ(recs[1].id, 2);

  // Cut anywhere inside the second record: only the first is read.
  for (std::size_t cut = 1; cut < two.size(); ++cut) {
    const auto text = one + two.substr(0, cut);
    EXPECT_EQ(decode_journal(text, valid).size(), 1u) << cut;
    EXPECT_EQ(valid, one.size());
  }
  // One flipped bit anywhere in the second record: the CRC (or the frame)
  // refuses it.
  for (std::size_t at = 0; at < two.size(); ++at) {
    auto bad = two;
    bad[at] = static_cast<char>(bad[at] ^ 0x10);
    EXPECT_EQ(decode_journal(one + bad, valid).size(), 1u) << at;
  }
}

TEST(Journal, ASettlementIsDurableBeforeItIsAppliedAndSyncWaitsForIt) {
  Journaled f;
  ASSERT_TRUE(f.ledger->commit_sync(credit("key:a", 1000)));
  // The credit's group commit may still be looking for more work on the
  // database thread: let it finish first.
  f.db->run_sync([](SQLite::Database&) { return 0; });
  // Hold the database thread: the settlement cannot reach the tables.
  std::promise<void> release;
  auto released = release.get_future().share();
  f.db->post([released](SQLite::Database&) { released.wait(); });
  IoRunner io(1);
  auto r = io.await(f.ledger->commit_durable(settlement(1, 100)));
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(f.records().size(), 1u);  // durable: in the journal
  EXPECT_EQ(f.records()[0].batch.transfers.at(0).amount_nanos, 100);
  EXPECT_EQ(f.ledger->funds("key:a").balance_nanos, 1000);  // not applied yet
  auto synced = std::async(std::launch::async, [&] { return io.await(f.ledger->sync()); });
  EXPECT_EQ(synced.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  release.set_value();
  ASSERT_TRUE(synced.get());
  EXPECT_EQ(f.ledger->funds("key:a").balance_nanos, 900);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge'"), 1);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records"), 1);
  EXPECT_EQ(f.count("SELECT applied FROM ledger_journal"), 1);
  // With nothing on its way, sync completes at once.
  ASSERT_TRUE(io.await(f.ledger->sync()));
  // A clean stop leaves a journal that reads as empty.
  f.ledger->close();
  EXPECT_TRUE(f.records().empty());
  EXPECT_EQ(f.journal_size(), 2 * kJournalHalfBytes);
}

// The process dies (no close, no destructor) after its settlements were
// delivered but before the database thread wrote them; the next start
// applies them, once.
TEST(Journal, SettlementsLeftByACrashAreAppliedAtTheNextStartOnce) {
  Journaled f;
  ASSERT_TRUE(f.ledger->commit_sync(credit("key:a", 10'000)));
  f.shut();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto d = storage::Database::open_file(f.dir.path() / "alou.db");
    if (!d) _exit(2);
    auto l = Ledger::open(**d, LedgerOptions{.key_file = f.dir.path() / "ledger.key",
                                             .checkpoint_every = 1000,
                                             .release_stale_holds = true,
                                             .metrics = nullptr,
                                             .journal_file = f.journal(),
                                             .journal_sync = false});
    if (!l) _exit(3);
    (*d)->post([](SQLite::Database&) { pause(); });  // the tables never get them
    IoRunner io(1);
    for (int i = 1; i <= 5; ++i) {
      if (!io.await((*l)->commit_durable(settlement(i, 100 * i)))) _exit(4);
    }
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(f.records().size(), 5u);

  // A CLI opening the database meanwhile sees a sound ledger without them.
  f.open();
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge'"), 5);
  EXPECT_EQ(f.count("SELECT SUM(amount_nanos) FROM ledger_entries WHERE kind = 'charge'"), 1500);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records"), 5);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM events"), 5);  // packed: two events each
  EXPECT_EQ(f.count("SELECT applied FROM ledger_journal"), 5);
  EXPECT_EQ(f.ledger->funds("key:a").balance_nanos, 10'000 - 1500);
  EXPECT_TRUE(f.ledger->verify_sync().ok);
  EXPECT_TRUE(f.records().empty());  // all applied: written over from the start

  // A journal whose records are all applied (a crash after the commit,
  // before the journal started over) is not applied again.
  const auto before = f.count("SELECT COUNT(*) FROM ledger_entries");
  IoRunner io(1);
  ASSERT_TRUE(io.await(f.ledger->commit_durable(settlement(6, 1))));
  ASSERT_TRUE(io.await(f.ledger->sync()));
  const auto kept = read_file(f.journal());
  ASSERT_FALSE(kept.empty());
  f.shut();
  {
    std::ofstream out(f.journal(), std::ios::binary | std::ios::trunc);
    out << kept;
  }
  f.open();
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_entries"), before + 1);
  EXPECT_TRUE(f.ledger->verify_sync().ok);
}

TEST(Journal, ATornLastRecordIsDroppedAndTheRestApplied) {
  Journaled f;
  f.shut();
  {
    std::ofstream out(f.journal(), std::ios::binary | std::ios::trunc);
    out << encode_journal_record(1, credit("key:a", 50)) << encode_journal_record(2, credit("key:a", 7));
    const auto torn = encode_journal_record(3, credit("key:a", 1000));
    out << torn.substr(0, torn.size() - 3);
  }
  f.open();
  EXPECT_EQ(f.ledger->funds("key:a").balance_nanos, 57);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_entries"), 2);
  EXPECT_TRUE(f.records().empty());
  EXPECT_EQ(f.journal_size(), 2 * kJournalHalfBytes);
  // New records follow the applied ones.
  IoRunner io(1);
  ASSERT_TRUE(io.await(f.ledger->commit_durable(settlement(1, 5))));
  ASSERT_TRUE(io.await(f.ledger->sync()));
  EXPECT_EQ(f.count("SELECT applied FROM ledger_journal"), 3);
  EXPECT_TRUE(f.ledger->verify_sync().ok);
}

// storage.sqlite_synchronous = FULL: each round is synced (msync) before
// its settlements complete, and goes through the journal thread.
TEST(Journal, SyncedJournalRecordsAndAppliesToo) {
  Journaled f;
  f.ledger.reset();
  auto l = Ledger::open(*f.db, LedgerOptions{.key_file = f.dir.path() / "ledger.key",
                                             .checkpoint_every = 1000,
                                             .release_stale_holds = true,
                                             .metrics = nullptr,
                                             .journal_file = f.journal(),
                                             .journal_sync = true});
  ASSERT_TRUE(l) << l.error().message;
  f.ledger = std::move(*l);
  IoRunner io(2);
  for (int i = 1; i <= 20; ++i) ASSERT_TRUE(io.await(f.ledger->commit_durable(settlement(i, 3))));
  EXPECT_EQ(f.records().size(), 20u);
  ASSERT_TRUE(io.await(f.ledger->sync()));
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records"), 20);
  EXPECT_EQ(f.ledger->funds("key:a").balance_nanos, -60);
}

// Both halves full of records the writer has not applied (it is held): the
// next settlement waits for it on the journal thread, never on the io
// thread that settles, and completes once the writer catches up.
TEST(Journal, AnIoThreadNeverWaitsForTheWriter) {
  Journaled f;
  std::promise<void> release;
  auto released = release.get_future().share();
  f.db->post([released](SQLite::Database&) { released.wait(); });
  IoRunner io(1);
  const auto padded = [](int i) {
    Batch b = settlement(i, 1);
    b.events[0].data = "{\"pad\":\"" + std::string(900, 'x') + "\"}";
    return b;
  };
  const auto record = encode_journal_record(99999, padded(99999)).size();
  const int per_half = static_cast<int>(kJournalHalfBytes / record);
  int i = 1;
  for (; i <= 2 * per_half - 4; ++i) ASSERT_TRUE(io.await(f.ledger->commit_durable(padded(i)))) << i;
  // Past both halves now: these must wait for the writer.
  std::vector<std::future<Result<std::int64_t>>> waiting;
  for (int k = 0; k < 100; ++k, ++i) {
    waiting.push_back(std::async(std::launch::async, [&f, &io, b = padded(i)]() mutable {
      return io.await(f.ledger->commit_durable(std::move(b)));
    }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::size_t done = 0;
  for (auto& w : waiting) done += w.wait_for(std::chrono::seconds(0)) == std::future_status::ready ? 1 : 0;
  EXPECT_LT(done, waiting.size()) << "the journal did not fill up";
  // The io thread is free meanwhile.
  const auto t0 = std::chrono::steady_clock::now();
  io.await([]() -> boost::asio::awaitable<void> { co_return; }());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));
  release.set_value();
  for (auto& w : waiting) {
    auto r = w.get();
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
  }
  ASSERT_TRUE(io.await(f.ledger->sync()));
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records"), i - 1);
  EXPECT_EQ(f.count("SELECT applied FROM ledger_journal"), i - 1);
  EXPECT_TRUE(f.ledger->verify_sync().ok);
}

// Both halves full and the writer stuck past the journal's patience (5 s):
// the settlement fails with ledger_unavailable and nothing of it is
// written; what was recorded before is applied once the writer is back.
TEST(Journal, AStuckWriterFailsTheSettlementAndWritesNothing) {
  Journaled f;
  std::promise<void> release;
  auto released = release.get_future().share();
  f.db->post([released](SQLite::Database&) { released.wait(); });
  IoRunner io(1);
  const auto padded = [](int i) {
    Batch b = settlement(i, 1);
    b.events[0].data = "{\"pad\":\"" + std::string(900, 'x') + "\"}";
    return b;
  };
  const auto record = encode_journal_record(99999, padded(99999)).size();
  const int per_half = static_cast<int>(kJournalHalfBytes / record);
  int i = 1;
  for (; i <= 2 * per_half - 4; ++i) ASSERT_TRUE(io.await(f.ledger->commit_durable(padded(i)))) << i;
  const auto before = f.records().size();
  Result<std::int64_t> r = Error::internal("unset");
  for (;; ++i) {  // the next records fill what is left of the half, then one does not fit
    r = io.await(f.ledger->commit_durable(padded(i)));
    if (!r) break;
    ASSERT_LT(i, 2 * per_half + 200);  // records of small ids are a few bytes shorter
  }
  EXPECT_EQ(r.error().status, 503);
  EXPECT_EQ(r.error().code, "ledger_unavailable");
  const auto recorded = f.records();
  EXPECT_EQ(recorded.size(), before + static_cast<std::size_t>(i - (2 * per_half - 4) - 1));
  for (const auto& rec : recorded) EXPECT_NE(rec.batch.usage->request_id, "req-" + std::to_string(i));
  release.set_value();
  ASSERT_TRUE(io.await(f.ledger->sync()));
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records"), i - 1);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records WHERE request_id = 'req-" + std::to_string(i) + "'"), 0);
  EXPECT_TRUE(f.ledger->verify_sync().ok);
}

TEST(Journal, OnlyOneProcessMayUseIt) {
  Journaled f;
  auto second = f.open_ledger();
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, "ledger_unavailable");
  EXPECT_NE(second.error().message.find("in use by another process"), std::string::npos);
  // Released by close: the next owner opens it.
  f.ledger->close();
  EXPECT_TRUE(f.open_ledger());
}

// A settlement was delivered: if the tables refuse it for a while, it is
// retried until they take it, never dropped.
TEST(Journal, ASettlementTheTablesRefuseIsRetriedUntilApplied) {
  Journaled f;
  f.db->run_sync([](SQLite::Database& c) {
    c.exec("CREATE TABLE refuse (x INTEGER)");
    c.exec("INSERT INTO refuse VALUES (1)");
    c.exec("CREATE TRIGGER refuse_usage BEFORE INSERT ON usage_records WHEN EXISTS (SELECT 1 FROM refuse)"
           " BEGIN SELECT RAISE(ABORT, 'refused for the test'); END");
  });
  IoRunner io(1);
  ASSERT_TRUE(io.await(f.ledger->commit_durable(settlement(1, 40))));
  std::this_thread::sleep_for(std::chrono::milliseconds(250));  // a few failed rounds
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_entries"), 0);
  EXPECT_EQ(f.count("SELECT applied FROM ledger_journal"), 0);
  f.db->run_sync([](SQLite::Database& c) { c.exec("DELETE FROM refuse"); });
  ASSERT_TRUE(io.await(f.ledger->sync()));
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'charge'"), 1);
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records"), 1);
  EXPECT_EQ(f.count("SELECT applied FROM ledger_journal"), 1);
  EXPECT_EQ(f.ledger->funds("key:a").balance_nanos, -40);
}

TEST(Journal, ItFillsOneHalfThenTheOtherAndStaysTheSameSize) {
  Journaled f;
  IoRunner io(2);
  // ~1 KB records, 12 MB of them: many times both halves, so writing goes
  // round and round; the file stays the same size.
  for (int i = 1; i <= 12'000; ++i) {
    Batch b = settlement(i, 1);
    b.events[0].data = "{\"pad\":\"" + std::string(900, 'x') + "\"}";
    ASSERT_TRUE(io.await(f.ledger->commit_durable(std::move(b))));
  }
  EXPECT_EQ(f.journal_size(), 2 * kJournalHalfBytes);
  // What a start would read now: the latest records, ids increasing, the
  // last one the last written.
  const auto recs = f.records();
  ASSERT_GT(recs.size(), 500u);
  std::int64_t last = 0;
  for (const auto& r : recs) last = std::max(last, r.id);
  EXPECT_EQ(last, 12'000);
  ASSERT_TRUE(io.await(f.ledger->sync()));
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records"), 12'000);
  EXPECT_EQ(f.count("SELECT applied FROM ledger_journal"), 12'000);
  // A crash now (simulated: the file as it is, reopened) applies nothing
  // twice.
  const auto kept = read_file(f.journal());
  f.shut();
  {
    std::ofstream out(f.journal(), std::ios::binary | std::ios::trunc);
    out << kept;
  }
  f.open();
  EXPECT_EQ(f.count("SELECT COUNT(*) FROM usage_records"), 12'000);
  EXPECT_TRUE(f.ledger->verify_sync().ok);
}

}  // namespace
}  // namespace alou::billing
