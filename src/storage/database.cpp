#include "alou/storage/database.hpp"

#include "alou/core/paths.hpp"
#include "alou/storage/wal_vfs.hpp"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>
#include <sqlite3.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>

namespace alou::storage {
namespace {

constexpr int kBusyTimeoutMs = 5000;
// Pages kept in memory per connection (negative: KiB): the right-hand
// B-tree pages every group commit touches stay cached.
constexpr int kCacheKiB = 16 * 1024;

// Process-wide SQLite settings, before the first connection: no memory
// statistics (each allocation would take a global mutex for them).
void configure_sqlite_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    // WAL commits in one write each (wal_vfs.hpp).
    install_wal_vfs();
  });
}

Error storage_error(std::string message) { return Error::internal(std::move(message), "storage_error"); }

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::optional<std::string> normalize_synchronous(const std::string& value) {
  std::string upper;
  upper.reserve(value.size());
  for (char ch : value) upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(ch))));
  if (upper == "NORMAL" || upper == "FULL") return upper;
  return std::nullopt;
}

// ^[0-9]{4}_[A-Za-z0-9_]+\.sql$, without <regex> (slow to build, noisy
// under GCC's -Wmaybe-uninitialized).
bool is_migration_name(std::string_view name) {
  constexpr std::string_view kExt = ".sql";
  if (name.size() < 4 + 1 + 1 + kExt.size() || !name.ends_with(kExt)) return false;
  for (std::size_t i = 0; i < 4; ++i) {
    if (std::isdigit(static_cast<unsigned char>(name[i])) == 0) return false;
  }
  if (name[4] != '_') return false;
  for (std::size_t i = 5; i < name.size() - kExt.size(); ++i) {
    auto ch = static_cast<unsigned char>(name[i]);
    if (std::isalnum(ch) == 0 && ch != '_') return false;
  }
  return true;
}

struct MigrationFile {
  int version = 0;
  std::string name;
  std::filesystem::path path;
};

Result<std::vector<MigrationFile>> list_migrations(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return storage_error("migrations folder not found: " + dir.string());
  }
  std::map<int, MigrationFile> by_version;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file()) continue;
    auto name = entry.path().filename().string();
    if (!is_migration_name(name)) continue;
    int version = std::stoi(name.substr(0, 4));
    auto [it, inserted] = by_version.try_emplace(version, MigrationFile{version, name, entry.path()});
    if (!inserted) {
      // Two files with one number would apply in an arbitrary order on
      // different machines; refuse rather than guess.
      return storage_error("duplicate migration number " + name.substr(0, 4) + ": " + it->second.name +
                           " and " + name);
    }
  }
  if (ec) return storage_error("cannot read migrations folder " + dir.string() + ": " + ec.message());
  std::vector<MigrationFile> files;
  files.reserve(by_version.size());
  for (auto& [version, file] : by_version) files.push_back(std::move(file));
  return files;
}

Result<std::string> read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return storage_error("cannot read migration " + path.filename().string());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

// Runs PASSIVE checkpoints on its own connection and thread when the
// writer's WAL hook says the WAL has grown by kCheckpointFrames. A passive
// checkpoint never blocks the writer nor readers; under a steady stream of
// commits it may never find the WAL entirely copied, so the WAL would never
// start over: past kWriterCheckpointFrames the writer runs a RESTART
// checkpoint itself between two transactions (short by then: the pages are
// mostly copied), as SQLite's own autocheckpoint did every 1000 frames.
struct Database::Checkpointer {
  explicit Checkpointer(const std::filesystem::path& file)
      : conn(file, SQLite::OPEN_READWRITE | SQLite::OPEN_NOMUTEX, kBusyTimeoutMs), thread([this] { run(); }) {}
  ~Checkpointer() {
    {
      std::lock_guard lock(mu);
      stop = true;
    }
    cv.notify_one();
    thread.join();
  }
  void poke() {
    {
      std::lock_guard lock(mu);
      if (wanted) return;
      wanted = true;
    }
    cv.notify_one();
  }
  void run() {
    for (;;) {
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [this] { return stop || wanted; });
        if (stop) return;
        wanted = false;
      }
      int log = 0;
      int done = 0;
      // A connection opens the WAL at its first read; until then a
      // checkpoint does nothing (log and done come back -1).
      if (!opened) {
        try {
          conn.exec("SELECT COUNT(*) FROM sqlite_master");
          opened = true;
        } catch (const std::exception& e) {
          spdlog::warn("storage: the checkpointer cannot read {}: {}", conn.getFilename(), e.what());
          continue;
        }
      }
      if (writer_restart.load(std::memory_order_relaxed)) continue;  // the writer is at it
      const int rc = sqlite3_wal_checkpoint_v2(conn.getHandle(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
      if (rc == SQLITE_OK && done >= 0) backfilled.store(done, std::memory_order_relaxed);
      if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        spdlog::warn("storage: background checkpoint of {} failed: {}", conn.getFilename(),
                     sqlite3_errstr(rc));
      }
    }
  }

  SQLite::Database conn;
  std::mutex mu;
  std::condition_variable cv;
  bool wanted = false;
  bool stop = false;
  bool opened = false;  // the checkpointer thread's own
  std::atomic<int> backfilled{0};  // WAL frames copied by the last checkpoint
  std::atomic<bool> writer_restart{false};  // the writer is restarting the WAL
  std::chrono::steady_clock::time_point next_restart{};  // the writer's own (after a failed try)
  std::thread thread;  // last: starts once the rest exists
};

namespace {
// The writer's busy handler: SQLite's default sleeps 1, 2, 5, 10... ms
// between tries, far longer than the RESTART checkpoint it usually waits
// for; this one retries every 100 µs, for the same 5 s in all.
thread_local bool t_restarting_wal = false;  // the writer's WAL restart, below

int retry_soon(void*, int tries) {
  // A WAL restart waiting on readers gives up after 20 ms (and is tried
  // again a second later): a long read in another process must not stall
  // every commit.
  if (tries >= (t_restarting_wal ? 200 : kBusyTimeoutMs * 10)) return 0;
  std::this_thread::sleep_for(std::chrono::microseconds(100));
  return 1;
}

// The writer connection's WAL hook: after each commit, with the WAL's size.
int on_wal_commit(void* self, sqlite3* db, const char* name, int frames) {
  auto* cp = static_cast<Database::Checkpointer*>(self);
  if (frames >= Database::kWriterCheckpointFrames) {
    // The WAL must start over. A passive checkpoint may never find it all
    // copied under a steady stream of commits, and a RESTART from the
    // checkpointer may never find the writer between two transactions: the
    // writer does it itself, between two of its transactions (the rest is
    // mostly copied by then).
    const auto now = std::chrono::steady_clock::now();
    if (now < cp->next_restart) return SQLITE_OK;
    cp->writer_restart.store(true, std::memory_order_relaxed);  // no new background round meanwhile
    t_restarting_wal = true;
    int done = -1;
    const int rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_RESTART, nullptr, &done);
    t_restarting_wal = false;
    if (rc == SQLITE_BUSY && done < 0) {
      // A background round holds the checkpoint lock (SQLite does not wait
      // for it): it ends soon and no other starts, so the next commit tries
      // again.
      return SQLITE_OK;
    }
    cp->writer_restart.store(false, std::memory_order_relaxed);
    // Readers of old frames held it past the busy handler's 20 ms: go on,
    // and try again a second later.
    if (rc != SQLITE_OK) cp->next_restart = now + std::chrono::seconds(1);
    if (done >= 0) cp->backfilled.store(done, std::memory_order_relaxed);
    return SQLITE_OK;
  }
  // Frames not yet copied (a WAL that started over has fewer frames than
  // were copied of the old one): a checkpoint per kCheckpointFrames of them.
  const int copied = cp->backfilled.load(std::memory_order_relaxed);
  if (frames - (frames >= copied ? copied : 0) >= Database::kCheckpointFrames) cp->poke();
  return SQLITE_OK;
}
}  // namespace

Database::Database(std::unique_ptr<SQLite::Database> conn, std::filesystem::path path)
    : conn_(std::move(conn)), path_(std::move(path)) {
  try {
    checkpointer_ = std::make_unique<Checkpointer>(path_);
    sqlite3_wal_hook(conn_->getHandle(), on_wal_commit, checkpointer_.get());
    sqlite3_busy_handler(conn_->getHandle(), retry_soon, nullptr);
  } catch (const std::exception& e) {
    // Without it, SQLite's own autocheckpoint (left on) does the work.
    spdlog::warn("storage: no background checkpoints for {}: {}", path_.string(), e.what());
    checkpointer_.reset();
  }
}

Database::~Database() { close(); }

void Database::close() {
  if (closed_) return;
  closed_ = true;
  thread_.join();
  if (checkpointer_) {
    sqlite3_wal_hook(conn_->getHandle(), nullptr, nullptr);
    checkpointer_.reset();
  }
  conn_.reset();
}

Result<std::unique_ptr<Database>> Database::open(const StorageSettings& settings) {
  std::filesystem::path dir(settings.data_dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return storage_error("cannot create data_dir " + dir.string() + ": " + ec.message());
  return open_file(dir / "alou.db", settings.sqlite_synchronous);
}

Result<std::unique_ptr<Database>> Database::open_file(const std::filesystem::path& file,
                                                      const std::string& synchronous) {
  auto sync = normalize_synchronous(synchronous);
  if (!sync) {
    return Error::internal("storage.sqlite_synchronous: expected NORMAL or FULL, got \"" + synchronous + "\"",
                           "invalid_config");
  }
  try {
    if (file.has_parent_path()) {
      std::error_code ec;
      std::filesystem::create_directories(file.parent_path(), ec);
      if (ec) return storage_error("cannot create " + file.parent_path().string() + ": " + ec.message());
    }
    configure_sqlite_once();
    // NOMUTEX: the connection is only ever used by one thread at a time
    // (the database thread, or the opener before it starts), so SQLite's
    // per-call connection mutex is pure cost.
    auto conn = std::make_unique<SQLite::Database>(
        file, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_NOMUTEX, kBusyTimeoutMs);
    auto mode = conn->execAndGet("PRAGMA journal_mode=WAL").getString();
    if (mode != "wal") return storage_error("cannot enable WAL on " + file.string() + " (mode " + mode + ")");
    conn->exec("PRAGMA synchronous=" + *sync);
    conn->exec("PRAGMA foreign_keys=ON");
    conn->exec("PRAGMA busy_timeout=" + std::to_string(kBusyTimeoutMs));
    conn->exec("PRAGMA cache_size=-" + std::to_string(kCacheKiB));
    return std::unique_ptr<Database>(new Database(std::move(conn), file));
  } catch (const std::exception& e) {
    return storage_error("cannot open database " + file.string() + ": " + e.what());
  }
}

Result<MigrationStatus> Database::migrate(const std::filesystem::path& migrations_dir) {
  auto files = list_migrations(migrations_dir);
  if (!files) return files.error();
  // Read every file before touching the database so an unreadable one
  // cannot leave the schema half-way between versions.
  std::vector<std::string> sources;
  for (const auto& f : *files) {
    auto text = read_text(f.path);
    if (!text) return text.error();
    sources.push_back(std::move(*text));
  }
  return run_sync([&](SQLite::Database& db) -> Result<MigrationStatus> {
    MigrationStatus status;
    try {
      db.exec(
          "CREATE TABLE IF NOT EXISTS schema_migrations ("
          "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)");
      std::set<int> done;
      {
        SQLite::Statement q(db, "SELECT version FROM schema_migrations");
        while (q.executeStep()) done.insert(q.getColumn(0).getInt());
      }
      for (std::size_t i = 0; i < files->size(); ++i) {
        const auto& f = (*files)[i];
        if (done.count(f.version) != 0) continue;
        try {
          SQLite::Transaction tx(db);
          db.exec(sources[i]);
          SQLite::Statement ins(db, "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)");
          ins.bind(1, f.version);
          ins.bind(2, f.name);
          ins.bind(3, static_cast<int64_t>(now_ms()));
          ins.exec();
          tx.commit();
        } catch (const std::exception& e) {
          return storage_error("migration " + f.name + " failed: " + e.what());
        }
        status.applied.push_back(f.name);
        done.insert(f.version);
      }
      status.version = done.empty() ? 0 : *done.rbegin();
    } catch (const std::exception& e) {
      return storage_error(std::string("migrations: ") + e.what());
    }
    return status;
  });
}

std::filesystem::path default_migrations_dir() {
  if (const char* env = std::getenv("ALOU_MIGRATIONS_DIR"); env != nullptr && *env != '\0') return env;
  std::error_code ec;
  return std::filesystem::absolute(find_resource_dir("migrations"), ec);
}

}  // namespace alou::storage
