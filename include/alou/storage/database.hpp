#pragma once
// The SQLite database at <data_dir>/alou.db (WAL). All SQLite work runs on
// one dedicated thread owned by this object, never on an io thread:
//
//   auto n = co_await db.run([](SQLite::Database& c) { return c.execAndGet("...").getInt(); });
//
// run() resumes the caller on its own executor; exceptions thrown inside
// (SQLite::Exception, ...) propagate to the awaiting coroutine, so module
// edges catch and convert them. run_sync() is for the CLI and start-up only.
#include "alou/core/config.hpp"
#include "alou/core/error.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>

#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace SQLite {
class Database;
}

namespace alou::storage {

struct MigrationStatus {
  std::vector<std::string> applied;  // names applied by this call, in order
  int version = 0;                   // highest version now recorded
};

class Database final {
 public:
  // Opens (creating the directory and file if needed) and sets WAL and the
  // synchronous mode. Does not migrate.
  static Result<std::unique_ptr<Database>> open(const StorageSettings& settings);
  // For tests: a database at an explicit file path.
  static Result<std::unique_ptr<Database>> open_file(const std::filesystem::path& file,
                                                     const std::string& synchronous = "NORMAL");
  ~Database();

  template <class F>
  boost::asio::awaitable<std::invoke_result_t<F, SQLite::Database&>> run(F f) {
    using R = std::invoke_result_t<F, SQLite::Database&>;
    // Named, not a temporary inside the co_await: GCC 12 destroys closure
    // temporaries of a co_await expression twice (a double release of
    // whatever `f` captured).
    auto task = [this, f = std::move(f)]() mutable -> boost::asio::awaitable<R> { co_return f(*conn_); };
    auto op = boost::asio::co_spawn(thread_.get_executor(), std::move(task), boost::asio::use_awaitable);
    co_return co_await std::move(op);
  }

  template <class F>
  std::invoke_result_t<F, SQLite::Database&> run_sync(F f) {
    using R = std::invoke_result_t<F, SQLite::Database&>;
    std::packaged_task<R()> task([this, &f] { return f(*conn_); });
    auto fut = task.get_future();
    boost::asio::post(thread_.get_executor(), [&task] { task(); });
    return fut.get();
  }

  // Queues `f` on the database thread without waiting (a writer that
  // completes its own callers, e.g. the ledger's group commit). `f` must
  // not throw.
  void post(std::function<void(SQLite::Database&)> f) {
    boost::asio::post(thread_.get_executor(), [this, f = std::move(f)] { f(*conn_); });
  }
  // The same, `delay` from now (a writer retrying after a failure, without
  // holding the thread meanwhile).
  void post_after(std::chrono::milliseconds delay, std::function<void(SQLite::Database&)> f) {
    auto timer = std::make_shared<boost::asio::steady_timer>(thread_.get_executor(), delay);
    timer->async_wait([this, timer, f = std::move(f)](const boost::system::error_code&) { f(*conn_); });
  }

  // Applies every migrations/NNNN_name.sql not yet recorded in
  // schema_migrations, each in its own transaction, in order. Blocking
  // (start-up and `alou migrate` only).
  Result<MigrationStatus> migrate(const std::filesystem::path& migrations_dir);

  const std::filesystem::path& path() const { return path_; }

  // Waits for queued work; further run() calls are invalid. Idempotent.
  void close();

  // WAL checkpoints run on a thread of their own (`Checkpointer` in
  // database.cpp), not after the commit that crossed the threshold: a
  // checkpoint's fsyncs used to stall the writer (and every request
  // waiting on a settlement) for milliseconds, dozens of times a second.
  static constexpr int kCheckpointFrames = 1000;   // WAL frames that start a background checkpoint
  static constexpr int kWriterCheckpointFrames = 16000;  // then the writer restarts the WAL (~64 MB)
  struct Checkpointer;

 private:
  Database(std::unique_ptr<SQLite::Database> conn, std::filesystem::path path);
  std::unique_ptr<SQLite::Database> conn_;
  std::filesystem::path path_;
  std::unique_ptr<Checkpointer> checkpointer_;
  boost::asio::thread_pool thread_{1};
  bool closed_ = false;
};

// Finds the migrations folder: $ALOU_MIGRATIONS_DIR, else ./migrations,
// else next to the binary (<exe dir>/migrations, <exe dir>/../share/alou/
// migrations: find_resource_dir). The build tree links both next to `alou`.
std::filesystem::path default_migrations_dir();

}  // namespace alou::storage
