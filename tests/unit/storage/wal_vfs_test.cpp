// The "alou" VFS: a WAL commit reaches the file in one write, other
// connections and processes see exactly the committed data, a crash after
// the commit keeps it, and a spilled then rolled-back transaction leaves
// nothing behind.
#include "alou/storage/wal_vfs.hpp"

#include "alou/storage/database.hpp"
#include "io_runner.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

namespace alou::storage {
namespace {

using testing::TempDir;

std::int64_t count(SQLite::Database& c) { return c.execAndGet("SELECT COUNT(*) FROM t").getInt64(); }

void insert_rows(SQLite::Database& c, int from, int n) {
  SQLite::Statement ins(c, "INSERT INTO t (id, v) VALUES (?, ?)");
  for (int i = from; i < from + n; ++i) {
    ins.bind(1, i);
    ins.bind(2, std::string(200, static_cast<char>('a' + i % 26)));
    ins.exec();
    ins.reset();
  }
}

TEST(WalVfs, IsTheDefaultOnceADatabaseIsOpened) {
  TempDir dir;
  auto db = Database::open_file(dir.path() / "a.db");
  ASSERT_TRUE(db);
  ASSERT_NE(sqlite3_vfs_find(nullptr), nullptr);
  EXPECT_STREQ(sqlite3_vfs_find(nullptr)->zName, "alou");
}

TEST(WalVfs, EachCommitIsOneWriteAndOthersSeeItAtOnce) {
  TempDir dir;
  ASSERT_TRUE(Database::open_file(dir.path() / "a.db"));  // installs the VFS, sets WAL
  SQLite::Database w(dir.path() / "a.db", SQLite::OPEN_READWRITE);
  SQLite::Database r(dir.path() / "a.db", SQLite::OPEN_READONLY);
  w.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)");
  w.exec("CREATE INDEX t_v ON t (v)");
  EXPECT_EQ(count(r), 0);
  for (int round = 0; round < 3; ++round) {
    const auto before = wal_vfs_writes();
    {
      SQLite::Transaction tx(w);
      insert_rows(w, round * 100, 100);  // ~50 KB: a dozen pages in two B-trees
      tx.commit();
    }
    EXPECT_EQ(wal_vfs_writes() - before, 1U) << "round " << round;
    EXPECT_EQ(count(r), (round + 1) * 100);
  }
  // A commit larger than one write's worth: in 120 KiB pieces, all there.
  const auto before = wal_vfs_writes();
  {
    SQLite::Transaction tx(w);
    insert_rows(w, 10'000, 3'000);  // ~1.4 MB
    tx.commit();
  }
  EXPECT_GE(wal_vfs_writes() - before, 8U);
  EXPECT_LE(wal_vfs_writes() - before, 16U);
  EXPECT_EQ(count(r), 3 * 100 + 3'000);
  EXPECT_EQ(w.execAndGet("PRAGMA integrity_check").getString(), "ok");
  EXPECT_EQ(r.execAndGet("PRAGMA integrity_check").getString(), "ok");
}

TEST(WalVfs, ACommitSurvivesTheProcessDyingRightAfterIt) {
  TempDir dir;
  const std::string file = (dir.path() / "a.db").string();
  {
    auto db = Database::open_file(file);
    ASSERT_TRUE(db);
    (*db)->run_sync([](SQLite::Database& c) { c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"); });
  }
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // No destructors, no close: the process ends the moment the commit returns.
    sqlite3* c = nullptr;
    if (sqlite3_open_v2(file.c_str(), &c, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) _exit(2);
    if (sqlite3_exec(c, "PRAGMA synchronous=NORMAL; BEGIN; INSERT INTO t (v) SELECT 'x' FROM"
                        " (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)"
                        " SELECT i FROM n); COMMIT;",
                     nullptr, nullptr, nullptr) != SQLITE_OK) {
      _exit(3);
    }
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  SQLite::Database c(file, SQLite::OPEN_READWRITE);
  EXPECT_EQ(count(c), 300);
  EXPECT_EQ(c.execAndGet("PRAGMA integrity_check").getString(), "ok");
}

TEST(WalVfs, ASpilledTransactionRolledBackLeavesNothing) {
  TempDir dir;
  ASSERT_TRUE(Database::open_file(dir.path() / "a.db"));
  SQLite::Database w(dir.path() / "a.db", SQLite::OPEN_READWRITE);
  SQLite::Database r(dir.path() / "a.db", SQLite::OPEN_READONLY);
  w.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)");
  {
    SQLite::Transaction tx(w);
    insert_rows(w, 0, 100);
    tx.commit();
  }
  w.exec("PRAGMA cache_size=2");  // a tiny cache: the next transaction spills pages to the WAL
  {
    SQLite::Transaction tx(w);
    insert_rows(w, 1000, 2000);
    EXPECT_EQ(count(r), 100);  // the reader sees none of it
  }  // rolled back
  EXPECT_EQ(count(w), 100);
  EXPECT_EQ(count(r), 100);
  {
    SQLite::Transaction tx(w);
    insert_rows(w, 5000, 50);
    tx.commit();
  }
  EXPECT_EQ(count(r), 150);
  EXPECT_EQ(r.execAndGet("SELECT COUNT(*) FROM t WHERE id >= 1000 AND id < 3000").getInt64(), 0);
  EXPECT_EQ(w.execAndGet("PRAGMA integrity_check").getString(), "ok");
  w.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  EXPECT_EQ(count(r), 150);
  EXPECT_EQ(r.execAndGet("PRAGMA integrity_check").getString(), "ok");
}

}  // namespace
}  // namespace alou::storage
