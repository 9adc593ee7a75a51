#pragma once
// The ledger: an append-only, hash-chained, double-entry journal in SQLite
// (migrations/0002_ledger.sql), written by one group-committing writer on
// the database thread, with the balances and holds of every account kept
// in memory for the request path.
//
// Accounts are strings: "key:<key id>", "wallet:<address>", and the system
// accounts "system:revenue", "system:credits" (the source of credit given)
// and "system:admin" (the bootstrap admin key, which may overdraw).
#include "alou/core/error.hpp"
#include "alou/core/metrics.hpp"

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <thread>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace SQLite {
class Database;
class Statement;
}
namespace alou::storage {
class Database;
}

namespace alou::billing {

inline constexpr std::string_view kRevenue = "system:revenue";
inline constexpr std::string_view kCredits = "system:credits";
inline constexpr std::string_view kAdmin = "system:admin";

// One movement: `amount_nanos` (> 0) from `debit` to `credit`.
struct Transfer {
  std::string kind;  // "credit", "charge", ...
  std::string debit;
  std::string credit;
  std::int64_t amount_nanos = 0;
  std::string request_id;
  std::string memo;
  std::string meta;  // JSON text (model, tokens, the prices used), or empty
};

struct Entry : Transfer {
  std::int64_t seq = 0;
  std::int64_t ts_ms = 0;
  std::string prev_hash;
  std::string hash;
};

// The columns of ledger_entries in the order entry_from_row reads them.
inline constexpr const char* kEntryColumns =
    "seq, ts_ms, kind, debit, credit, amount_nanos, request_id, memo, meta, prev_hash, hash";
// The entry at a statement's current row, selected with kEntryColumns.
Entry entry_from_row(SQLite::Statement& st);

// The hash of the entry before the first.
inline const std::string kGenesisHash(64, '0');

// Hex SHA-256 over the entry's canonical encoding: each of seq, ts_ms,
// kind, debit, credit, amount_nanos, request_id, memo, meta and prev_hash
// as a netstring ("<byte length>:<bytes>,"), integers in decimal.
std::string entry_hash(const Entry& e);

struct UsageRow {
  std::string request_id;
  std::string account;
  std::string model;
  std::string provider;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;
  std::int64_t cost_nanos = 0;
  bool estimated = false;
};

struct EventRow {
  std::string subject;
  std::string account;
  std::string kind;
  std::string data;  // JSON text
  std::int64_t ts_ms = 0;
};

// Events of one subject committed together (a request's `request`,
// `route`, `completion` and `usage`) are stored as one `events` row: kind
// kPackedEvents, data a JSON array of {"kind","ts_ms","data"} objects, and
// the row's id the id of its last event (they take the ids just below it,
// so ids stay unique and ordered and MAX(id) + 1 is the next free one).
// One row and one index entry instead of one per event: the background
// audit writes were a tenth of the gateway's throughput.
inline constexpr std::string_view kPackedEvents = "*";

// The packed row's data for `events` (an event without a time gets `ts_ms`).
std::string pack_events(std::span<const EventRow> events, std::int64_t ts_ms);

// Appends the events of one stored row to `out` (a JSON array) as
// {"id","ts_ms","kind","data","account"}; a packed row gives each of its
// events. `data` is the row's JSON text.
void append_stored_events(nlohmann::json& out, std::int64_t id, std::int64_t ts_ms, std::string_view kind,
                          std::string_view data, std::string_view account);

struct HoldRow {
  std::string id;
  std::string account;
  std::int64_t amount_nanos = 0;
  std::string request_id;
  std::string model;
};

// What one commit writes, atomically (it joins a group of others).
struct Batch {
  std::vector<Transfer> transfers;
  std::optional<UsageRow> usage;  // its ledger_seq: the batch's last transfer
  std::vector<EventRow> events;
  std::vector<HoldRow> hold_inserts;
  // Holds this batch ends: their rows are deleted and, once durable, their
  // amounts are no longer held in memory.
  struct Ended {
    std::string id;
    std::string account;
    std::int64_t amount_nanos = 0;
  };
  std::vector<Ended> holds_ended;
  // When it happened (ms since the epoch): the journal sets it, so that a
  // settlement applied later (or replayed after a crash) keeps its time.
  // 0: the time of its commit.
  std::int64_t ts_ms = 0;
};

// The settlement journal's records (docs/billing.md): "ALJ1", the payload's
// length and CRC-32C (4 bytes each, little-endian), then the payload: the
// record's id and the batch. Exposed for tests.
std::string encode_journal_record(std::int64_t id, const Batch& batch);
void append_journal_record(std::string& out, std::int64_t id, const Batch& batch);
struct JournalRecord {
  std::int64_t id = 0;
  Batch batch;
};
// The valid records at the start of `text`; `valid_bytes` is where they end
// (a torn or corrupt record ends the journal).
std::vector<JournalRecord> decode_journal(std::string_view text, std::size_t& valid_bytes);
// The journal file is two halves of this size: records fill one, then the
// other (once the tables hold all of its records), and so on. ~800
// settlements each; the writer is a group commit (~1 ms) behind.
inline constexpr std::size_t kJournalHalfBytes = 1u << 20;

struct Funds {
  std::int64_t balance_nanos = 0;
  std::int64_t held_nanos = 0;
  std::int64_t spent_nanos = 0;  // charged so far ("charge" entries debited), for budgets
  std::int64_t available() const { return balance_nanos - held_nanos; }
};

// What a reservation may take: the most of [min, max] that the account's
// available balance (unless `overdraft`) and, with a `budget`, what is left
// of it (budget - spent - held) cover.
struct ReserveAsk {
  std::int64_t min = 0;
  std::int64_t max = 0;
  bool overdraft = false;
  std::optional<std::int64_t> budget;
};
struct Reserved {
  enum class Refused { kNone, kBalance, kBudget };
  Refused refused = Refused::kNone;  // not kNone: nothing was reserved
  std::int64_t amount = 0;           // reserved, in [min, max]
  std::int64_t covered = 0;          // when refused: what the limit that refused still covers (>= 0)
};

struct VerifyReport {
  bool ok = true;
  std::int64_t entries = 0;
  std::int64_t accounts = 0;
  std::int64_t checkpoints = 0;
  std::string tip_hash = kGenesisHash;
  std::optional<std::int64_t> bad_seq;  // the first entry that fails
  std::vector<std::string> problems;
  nlohmann::json to_json() const;
};

struct LedgerOptions {
  std::filesystem::path key_file;        // Ed25519 seed (hex), created 0600
  std::int64_t checkpoint_every = 1000;  // entries between signed checkpoints
  // Serve only: holds left in the table are from a crashed run. A CLI
  // opening the same database beside a running server must keep them.
  bool release_stale_holds = false;
  // Group-commit metrics (alou_ledger_*) go here when set.
  metrics::Registry* metrics = nullptr;
  // Serve only: the settlement journal (data_dir/ledger.journal). Empty: a
  // settlement is durable when its group commits. Replayed at open; locked
  // so that only one process uses it.
  std::filesystem::path journal_file{};
  // fdatasync each journal write (storage.sqlite_synchronous = FULL).
  bool journal_sync = false;
};

class Ledger final {
 public:
  // Blocking (start-up, CLI): loads balances, releases holds left by a
  // crash, loads or creates the signing key.
  static Result<std::unique_ptr<Ledger>> open(storage::Database& db, LedgerOptions options);
  ~Ledger();

  // Commits `batch` with the next group; the last entry's seq (0 if the
  // batch had no transfer) once durable. Completion runs on the caller's
  // executor.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto commit(Batch batch, Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(Result<std::int64_t>)>(
        [this](auto handler, Batch b) { submit(std::move(b), completion(std::move(handler)), true); }, token,
        std::move(batch));
  }
  // Makes `batch` durable and completes (with 0: its entries get their seq
  // when applied): appended to the settlement journal when there is one,
  // then applied to the ledger's tables a moment later in a larger group;
  // without a journal, committed like commit(). A settlement's path.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto commit_durable(Batch batch, Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(Result<std::int64_t>)>(
        [this](auto handler, Batch b) { submit(std::move(b), completion(std::move(handler)), true, Route::kJournal); },
        token, std::move(batch));
  }
  // Completes once everything made durable before the call is in the
  // ledger's tables and in the balances: readers of those call it first.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto sync(Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(Result<std::int64_t>)>(
        [this](auto handler) { submit(Batch{}, completion(std::move(handler)), true, Route::kBarrier); }, token);
  }
  // Not awaited; a failure is logged.
  void commit_detached(Batch batch);
  // Persists a hold's row with the next group commit, or not at all if the
  // hold ends in that same group (a request answered before the writer's
  // next round never costs a row written and deleted). The poller of
  // start_polling forces a round for holds older than 100 ms, so a hold
  // that lives is on disk within a few hundred ms. Holds move no money: a
  // crash before the row is written loses nothing.
  void persist_hold(HoldRow row);
  // Blocking (CLI, tests).
  Result<std::int64_t> commit_sync(Batch batch);

  // In memory, for the request path.
  Funds funds(const std::string& account) const;
  // Reserves `amount` if the account's available balance covers it (or
  // always, with `overdraft`). False: insufficient.
  bool try_reserve(const std::string& account, std::int64_t amount, bool overdraft);
  // Atomically reserves the most of [ask.min, ask.max] that the account's
  // balance and budget cover (ReserveAsk), or nothing.
  Reserved reserve(const std::string& account, const ReserveAsk& ask);
  // Undoes a reservation that never reached the database.
  void unreserve(const std::string& account, std::int64_t amount);

  // Recomputes the chain, every balance and the zero-sum invariant, and
  // checks the checkpoints' signatures. Blocking (runs on the database
  // thread; callers off the io threads).
  VerifyReport verify_sync();
  boost::asio::awaitable<VerifyReport> verify();

  // Hex Ed25519 public key of the checkpoints.
  const std::string& public_key() const { return public_key_hex_; }
  std::int64_t tip_seq() const;

  // Learns, every `every`, the entries another process appended (`alou
  // credit` beside a running server), so that new credit is usable at once
  // rather than at this process's next commit. Stopped by close().
  void start_polling(std::chrono::milliseconds every);

  // Waits for queued commits and writes a final checkpoint. Idempotent.
  void close();

 private:
  using Done = std::function<void(Result<std::int64_t>)>;
  struct Pending {
    Batch batch;
    Done done;
    bool awaited = false;        // someone waits for it (a settlement before its answer)
    std::int64_t journal_id = 0;  // its journal record (0: none)
    bool barrier = false;         // sync(): nothing to write
  };
  // A handler completed on its own executor.
  template <class Handler>
  static Done completion(Handler handler) {
    auto h = std::make_shared<Handler>(std::move(handler));
    return [h](Result<std::int64_t> r) mutable {
      auto ex = boost::asio::get_associated_executor(*h);
      boost::asio::post(ex, [h, r = std::move(r)]() mutable { (*h)(std::move(r)); });
    };
  }
  enum class Route { kCommit, kJournal, kBarrier };
  Ledger(storage::Database& db, LedgerOptions options);
  void submit(Batch batch, Done done, bool awaited, Route route = Route::kCommit);
  void enqueue(Pending p);  // to the writer's queue
  Result<void> open_journal();  // at open: lock, replay, start the journal thread
  void journal_loop();          // the journal thread
  // `may_wait`: false on an io thread, whose record then goes to the
  // journal thread rather than wait for the writer (see journal_round).
  void journal_round(std::vector<Pending>& items, bool may_wait = true);
  void close_journal();
  std::int64_t journal_applied() const;
  void flush(SQLite::Database& c);  // on the database thread
  void write_checkpoint(SQLite::Database& c, std::int64_t seq, const std::string& hash) const;
  static VerifyReport verify_on(SQLite::Database& c, const std::string& own_key);
  static void read_foreign(SQLite::Database& c, std::int64_t& seq, std::string& hash,
                           std::map<std::string, std::int64_t>& deltas, SQLite::Statement* prepared_tip = nullptr);
  void catch_up(SQLite::Database& c);  // on the database thread
  bool has_old_lazy_holds() const;
  // The writer waits up to kLinger for kLingerBatches background batches
  // before committing only background work (see flush()).
  static constexpr std::size_t kLingerBatches = 64;
  static constexpr std::chrono::microseconds kLinger{1000};
  // A hold's row is written once the hold is this old (see flush()); the
  // poller forces a round for such holds (has_old_lazy_holds).
  static constexpr std::chrono::milliseconds kHoldRowAge{100};
  bool closed_now() const;

  struct Stmts;
  std::unique_ptr<Stmts> stmts_;  // the writer's, on the database thread
  metrics::Counter* commits_ = nullptr;       // group commits (transactions)
  metrics::Counter* batches_ = nullptr;       // batches they carried
  metrics::Histogram* commit_seconds_ = nullptr;

  std::thread poller_;
  std::mutex poll_mu_;
  std::condition_variable poll_cv_;
  bool stop_polling_ = false;

  storage::Database& db_;
  LedgerOptions options_;
  std::string secret_key_;  // 64 bytes (libsodium's sk)
  std::string public_key_hex_;

  mutable std::mutex mu_;  // guards everything below
  std::unordered_map<std::string, Funds> funds_;
  std::vector<Pending> queue_;
  struct LazyHold {
    HoldRow row;
    std::chrono::steady_clock::time_point since;
  };
  std::vector<LazyHold> lazy_holds_;
  bool flushing_ = false;
  std::size_t awaited_queued_ = 0;      // awaited batches in queue_
  std::condition_variable linger_cv_;  // with mu_: the writer's linger ends
  bool closed_ = false;
  std::int64_t tip_seq_ = 0;  // as known to this process
  std::string tip_hash_ = kGenesisHash;
  std::int64_t checkpoint_seq_ = 0;
  std::int64_t journal_applied_ = 0;  // the last journal record in the tables

  // The settlement journal (when options_.journal_file is set).
  int journal_fd_ = -1;
  std::thread journal_thread_;
  std::mutex jmu_;  // guards the four below; taken before mu_, never after
  std::condition_variable jcv_;
  std::vector<Pending> jqueue_;
  bool jstop_ = false;
  bool jbusy_ = false;  // a round is being written and handed on
  // Whoever writes a round (jbusy_), and open/close:
  std::int64_t journal_last_id_ = 0;
  char* journal_map_ = nullptr;  // the file, mapped: two halves
  int journal_half_ = 0;         // the half being written
  std::size_t journal_offset_ = 0;
  std::int64_t journal_half_last_[2] = {0, 0};  // the last id in each half
};

}  // namespace alou::billing
