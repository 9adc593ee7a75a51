#include "alou/storage/database.hpp"

#include "io_runner.hpp"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace alou::storage {
namespace {

using testing::IoRunner;
using testing::TempDir;

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::unique_ptr<Database> open_db(const TempDir& dir) {
  StorageSettings settings;
  settings.data_dir = (dir.path() / "data").string();
  auto db = Database::open(settings);
  if (!db) ADD_FAILURE() << db.error().message;
  return db ? std::move(*db) : nullptr;
}

int count_rows(Database& db, const std::string& sql) {
  return db.run_sync([&](SQLite::Database& c) { return c.execAndGet(sql).getInt(); });
}

bool table_exists(Database& db, const std::string& name) {
  return db.run_sync([&](SQLite::Database& c) { return c.tableExists(name); });
}

TEST(Database, OpenCreatesDataDirAndWalDatabase) {
  TempDir dir;
  auto db = open_db(dir);
  ASSERT_NE(db, nullptr);
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "data" / "alou.db"));
  EXPECT_EQ(db->path(), dir.path() / "data" / "alou.db");
  auto pragmas = db->run_sync([](SQLite::Database& c) {
    return std::make_tuple(c.execAndGet("PRAGMA journal_mode").getString(),
                           c.execAndGet("PRAGMA synchronous").getInt(), c.execAndGet("PRAGMA foreign_keys").getInt(),
                           c.execAndGet("PRAGMA busy_timeout").getInt());
  });
  EXPECT_EQ(std::get<0>(pragmas), "wal");
  EXPECT_EQ(std::get<1>(pragmas), 1);  // NORMAL
  EXPECT_EQ(std::get<2>(pragmas), 1);
  // Busy waits go through the writer's own handler (retrying every 100 µs
  // for 5 s), so SQLite's busy_timeout reads 0; a write lock held by
  // another connection for a while is waited for.
  EXPECT_EQ(std::get<3>(pragmas), 0);
  db->run_sync([](SQLite::Database& c) { c.exec("CREATE TABLE w (x INTEGER)"); });
  SQLite::Database other(db->path(), SQLite::OPEN_READWRITE);
  other.exec("BEGIN IMMEDIATE");
  std::thread release([&other] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    other.exec("COMMIT");
  });
  const auto n = db->run_sync([](SQLite::Database& c) { return c.exec("INSERT INTO w (x) VALUES (1)"); });
  release.join();
  EXPECT_EQ(n, 1);
}

TEST(Database, SynchronousFullIsApplied) {
  TempDir dir;
  auto db = Database::open_file(dir.path() / "x.db", "FULL");
  ASSERT_TRUE(db) << db.error().message;
  EXPECT_EQ((*db)->run_sync([](SQLite::Database& c) { return c.execAndGet("PRAGMA synchronous").getInt(); }), 2);
}

TEST(Database, RejectsUnknownSynchronousMode) {
  TempDir dir;
  auto db = Database::open_file(dir.path() / "x.db", "OFF");
  ASSERT_FALSE(db);
  EXPECT_NE(db.error().message.find("OFF"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "x.db"));
}

TEST(Database, MigrateAppliesFilesInOrderAndRecordsThem) {
  TempDir dir;
  auto migrations = dir.path() / "migrations";
  std::filesystem::create_directories(migrations);
  // 0002 depends on 0001: applying them out of order would fail.
  write_file(migrations / "0002_second.sql", "ALTER TABLE a ADD COLUMN y INTEGER;");
  write_file(migrations / "0001_first.sql", "CREATE TABLE a (x INTEGER);");
  write_file(migrations / "0010_tenth.sql", "CREATE TABLE c (x INTEGER); CREATE TABLE d (x INTEGER);");
  write_file(migrations / "notes.txt", "not a migration");
  write_file(migrations / "3_bad_name.sql", "syntax error here");
  auto db = open_db(dir);
  ASSERT_NE(db, nullptr);

  auto status = db->migrate(migrations);
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_EQ(status->applied, (std::vector<std::string>{"0001_first.sql", "0002_second.sql", "0010_tenth.sql"}));
  EXPECT_EQ(status->version, 10);
  EXPECT_TRUE(table_exists(*db, "d"));
  auto rows = db->run_sync([](SQLite::Database& c) {
    std::vector<std::pair<int, std::string>> out;
    SQLite::Statement q(c, "SELECT version, name FROM schema_migrations ORDER BY version");
    while (q.executeStep()) out.emplace_back(q.getColumn(0).getInt(), q.getColumn(1).getString());
    return out;
  });
  EXPECT_EQ(rows, (std::vector<std::pair<int, std::string>>{{1, "0001_first.sql"}, {2, "0002_second.sql"},
                                                            {10, "0010_tenth.sql"}}));
}

TEST(Database, MigrateTwiceAppliesNothingTheSecondTime) {
  TempDir dir;
  auto migrations = dir.path() / "migrations";
  std::filesystem::create_directories(migrations);
  write_file(migrations / "0001_first.sql", "CREATE TABLE a (x INTEGER);");
  auto db = open_db(dir);
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->migrate(migrations));
  auto again = db->migrate(migrations);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_TRUE(again->applied.empty());
  EXPECT_EQ(again->version, 1);

  // A new file is picked up on the next run.
  write_file(migrations / "0002_more.sql", "CREATE TABLE b (x INTEGER);");
  auto third = db->migrate(migrations);
  ASSERT_TRUE(third);
  EXPECT_EQ(third->applied, std::vector<std::string>{"0002_more.sql"});
  EXPECT_EQ(count_rows(*db, "SELECT COUNT(*) FROM schema_migrations"), 2);
}

TEST(Database, BrokenMigrationRollsBackAndNamesTheFile) {
  TempDir dir;
  auto migrations = dir.path() / "migrations";
  std::filesystem::create_directories(migrations);
  write_file(migrations / "0001_ok.sql", "CREATE TABLE a (x INTEGER);");
  // The first statement succeeds before the second fails: it must vanish.
  write_file(migrations / "0002_broken.sql", "CREATE TABLE b (x INTEGER);\nCREATE TABLE oops (;");
  write_file(migrations / "0003_after.sql", "CREATE TABLE c (x INTEGER);");
  auto db = open_db(dir);
  ASSERT_NE(db, nullptr);

  auto status = db->migrate(migrations);
  ASSERT_FALSE(status);
  EXPECT_NE(status.error().message.find("0002_broken.sql"), std::string::npos) << status.error().message;
  EXPECT_NE(status.error().message.find("syntax error"), std::string::npos) << status.error().message;
  EXPECT_TRUE(table_exists(*db, "a"));
  EXPECT_FALSE(table_exists(*db, "b"));
  EXPECT_FALSE(table_exists(*db, "c"));
  EXPECT_EQ(count_rows(*db, "SELECT COUNT(*) FROM schema_migrations WHERE version >= 2"), 0);
  EXPECT_EQ(count_rows(*db, "SELECT COUNT(*) FROM schema_migrations"), 1);
}

TEST(Database, DuplicateMigrationNumbersAreAnError) {
  TempDir dir;
  auto migrations = dir.path() / "migrations";
  std::filesystem::create_directories(migrations);
  write_file(migrations / "0001_a.sql", "CREATE TABLE a (x INTEGER);");
  write_file(migrations / "0001_b.sql", "CREATE TABLE b (x INTEGER);");
  auto db = open_db(dir);
  ASSERT_NE(db, nullptr);
  auto status = db->migrate(migrations);
  ASSERT_FALSE(status);
  EXPECT_NE(status.error().message.find("duplicate"), std::string::npos);
  EXPECT_FALSE(table_exists(*db, "a"));
  EXPECT_FALSE(table_exists(*db, "schema_migrations"));
}

TEST(Database, RepositoryMigrationsApply) {
  TempDir dir;
  auto db = open_db(dir);
  ASSERT_NE(db, nullptr);
  auto status = db->migrate(default_migrations_dir());
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_GE(status->version, 1);
  EXPECT_TRUE(table_exists(*db, "kv"));
  EXPECT_TRUE(table_exists(*db, "api_keys"));
  // The role CHECK constraint holds.
  EXPECT_THROW(db->run_sync([](SQLite::Database& c) {
    c.exec("INSERT INTO api_keys (id, name, secret_hash, prefix, role, created_at_ms) "
           "VALUES ('k1', 'n', 'h', 'p', 'admin', 0)");
  }),
               SQLite::Exception);
}

TEST(Database, RunExecutesOffTheCallerThreadAndResumesOnIt) {
  TempDir dir;
  auto db = open_db(dir);
  ASSERT_NE(db, nullptr);
  IoRunner io(1);
  auto ids = io.await([](Database& d) -> boost::asio::awaitable<std::array<std::thread::id, 3>> {
    auto before = std::this_thread::get_id();
    auto inside = co_await d.run([](SQLite::Database&) { return std::this_thread::get_id(); });
    co_return std::array<std::thread::id, 3>{before, inside, std::this_thread::get_id()};
  }(*db));
  EXPECT_NE(ids[0], ids[1]);
  EXPECT_EQ(ids[0], ids[2]);
}

TEST(Database, RunPropagatesExceptions) {
  TempDir dir;
  auto db = open_db(dir);
  ASSERT_NE(db, nullptr);
  IoRunner io;
  auto caught = io.await([](Database& d) -> boost::asio::awaitable<bool> {
    try {
      co_await d.run([](SQLite::Database& c) { c.exec("SELECT * FROM missing_table"); });
    } catch (const SQLite::Exception&) {
      co_return true;
    }
    co_return false;
  }(*db));
  EXPECT_TRUE(caught);
}

}  // namespace
}  // namespace alou::storage

namespace alou::storage {
namespace {

using namespace std::chrono_literals;

// Commits `n` transactions of ~4 pages each on the database thread.
void commit_pages(Database& db, int n, int& next_id) {
  db.run_sync([&](SQLite::Database& c) {
    SQLite::Statement ins(c, "INSERT INTO big (id, v) VALUES (?, ?)");
    for (int t = 0; t < n; ++t) {
      c.exec("BEGIN");
      for (int i = 0; i < 12; ++i) {
        ins.bind(1, next_id++);
        ins.bind(2, std::string(1200, 'x'));
        ins.exec();
        ins.reset();
      }
      c.exec("COMMIT");
    }
  });
}

std::uintmax_t size_of(const std::filesystem::path& p) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(p, ec);
  return ec ? 0 : n;
}

TEST(Database, CheckpointsRunInTheBackgroundAndTheWalStaysBounded) {
  TempDir dir;
  auto db = Database::open_file(dir.path() / "c.db");
  ASSERT_TRUE(db);
  (*db)->run_sync([](SQLite::Database& c) { c.exec("CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"); });
  const auto file = dir.path() / "c.db";
  const auto before = size_of(file);
  int next_id = 0;
  // ~1,600 WAL frames: past kCheckpointFrames, far below the writer's own limit.
  commit_pages(**db, 400, next_id);
  // The pages reach the database file without the writer checkpointing.
  for (int i = 0; i < 200 && size_of(file) < before + 1'000'000; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GE(size_of(file), before + 1'000'000) << "no background checkpoint copied the WAL";
  // Far more than the writer's limit: the WAL starts over instead of growing.
  // ~80,000 frames (330 MB had the WAL kept growing).
  commit_pages(**db, 15'000, next_id);
  const auto frame = 4096 + 24;
  // Bounded: the writer's limit plus what one background round lets pass.
  EXPECT_LE(size_of(dir.path() / "c.db-wal"), static_cast<std::uintmax_t>(3 * Database::kWriterCheckpointFrames) * frame);
  // Everything is there, and the file is sound.
  (*db)->run_sync([&](SQLite::Database& c) {
    EXPECT_EQ(c.execAndGet("SELECT COUNT(*) FROM big").getInt(), next_id);
    EXPECT_EQ(c.execAndGet("PRAGMA integrity_check").getString(), "ok");
  });
  (*db)->close();
  SQLite::Database again(file, SQLite::OPEN_READONLY);
  EXPECT_EQ(again.execAndGet("SELECT COUNT(*) FROM big").getInt(), next_id);
}

TEST(Database, AReaderHoldingTheWalDoesNotStallTheWriter) {
  TempDir dir;
  auto db = Database::open_file(dir.path() / "r.db");
  ASSERT_TRUE(db);
  (*db)->run_sync([](SQLite::Database& c) { c.exec("CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"); });
  int next_id = 0;
  // Another connection (another process, e.g. `alou ledger verify`) keeps a
  // read transaction open: the WAL cannot start over meanwhile.
  SQLite::Database reader(dir.path() / "r.db", SQLite::OPEN_READONLY);
  reader.exec("BEGIN");
  EXPECT_EQ(reader.execAndGet("SELECT COUNT(*) FROM big").getInt(), 0);
  // Past the writer's limit (~22,000 frames): no commit waits long on it.
  auto slowest = std::chrono::steady_clock::duration::zero();
  for (int i = 0; i < 40; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    commit_pages(**db, 100, next_id);
    slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
  }
  EXPECT_LT(slowest, 1s) << "a commit round waited on the reader";
  reader.exec("COMMIT");
  // Once it is gone (and the writer's second between tries has passed),
  // the WAL starts over again.
  std::this_thread::sleep_for(1100ms);
  commit_pages(**db, 6'000, next_id);
  (*db)->run_sync([&](SQLite::Database& c) {
    EXPECT_EQ(c.execAndGet("SELECT COUNT(*) FROM big").getInt(), next_id);
    // Frames in the WAL now (~55,000 had it not started over since).
    SQLite::Statement q(c, "PRAGMA wal_checkpoint(PASSIVE)");
    ASSERT_TRUE(q.executeStep());
    EXPECT_LT(q.getColumn(1).getInt(), 3 * Database::kWriterCheckpointFrames);
  });
}

}  // namespace
}  // namespace alou::storage
