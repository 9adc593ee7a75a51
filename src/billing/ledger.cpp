#include "alou/billing/ledger.hpp"

#include "alou/core/crc32c.hpp"
#include "alou/core/json_text.hpp"
#include "alou/core/sha256.hpp"
#include "alou/storage/database.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <fcntl.h>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <future>
#include <thread>
#include <map>
#include <unordered_set>

namespace alou::billing {
namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(n * 2, '\0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[p[i] >> 4];
    out[2 * i + 1] = kDigits[p[i] & 15];
  }
  return out;
}

std::optional<std::string> unhex(std::string_view s) {
  if (s.size() % 2) return std::nullopt;
  std::string out(s.size() / 2, '\0');
  std::size_t bin_len = 0;
  if (sodium_hex2bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), s.data(), s.size(), nullptr, &bin_len,
                     nullptr) != 0 ||
      bin_len != out.size()) {
    return std::nullopt;
  }
  return out;
}

void netstring(std::string& out, std::string_view v) {
  out += std::to_string(v.size());
  out += ':';
  out += v;
  out += ',';
}

std::string checkpoint_message(std::int64_t seq, const std::string& hash) {
  return "alou-ledger-checkpoint\n" + std::to_string(seq) + "\n" + hash;
}

// Loads the Ed25519 seed, or creates it (mode 0600) on first use.
Result<std::string> load_or_create_seed(const std::filesystem::path& file) {
  std::error_code ec;
  if (std::filesystem::exists(file, ec)) {
    std::ifstream in(file);
    std::string text;
    std::getline(in, text);
    auto seed = unhex(text);
    if (!seed || seed->size() != crypto_sign_SEEDBYTES) {
      return Error::internal(file.string() + " is not a 64-digit hex Ed25519 seed", "ledger_key_invalid");
    }
    return *seed;
  }
  std::filesystem::create_directories(file.parent_path(), ec);
  std::string seed(crypto_sign_SEEDBYTES, '\0');
  randombytes_buf(seed.data(), seed.size());
  const auto old = ::umask(077);
  std::ofstream out(file, std::ios::trunc);
  ::umask(old);
  out << hex(reinterpret_cast<const unsigned char*>(seed.data()), seed.size()) << "\n";
  out.close();
  if (!out) return Error::internal("cannot write " + file.string(), "ledger_key_invalid");
  std::filesystem::permissions(file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write, ec);
  spdlog::info("created the ledger signing key {}", file.string());
  return seed;
}

// ---- the journal's encoding: little-endian integers, length-prefixed strings

// Reads what Writer wrote; `ok` turns false (and stays) past the end.
struct Reader {
  std::string_view in;
  bool ok = true;

  std::uint64_t uint(int bytes) {
    if (!ok || in.size() < static_cast<std::size_t>(bytes)) {
      ok = false;
      return 0;
    }
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
    in.remove_prefix(static_cast<std::size_t>(bytes));
    return v;
  }
  std::uint32_t u32() { return static_cast<std::uint32_t>(uint(4)); }
  std::int64_t i64() { return static_cast<std::int64_t>(uint(8)); }
  std::string str() {
    const auto n = u32();
    if (!ok || in.size() < n) {
      ok = false;
      return {};
    }
    std::string v(in.substr(0, n));
    in.remove_prefix(n);
    return v;
  }
  // A count of items each at least `min_bytes` long (so a corrupt count
  // cannot make a huge allocation).
  std::size_t count(std::size_t min_bytes) {
    const auto n = u32();
    if (!ok || static_cast<std::uint64_t>(n) * min_bytes > in.size()) {
      ok = false;
      return 0;
    }
    return n;
  }
};

constexpr std::string_view kJournalMagic = "ALJ1";
constexpr std::size_t kJournalHeader = 12;  // magic, length, CRC-32C

// Writes a record's fields at a cursor sized exactly beforehand
// (payload_size): no capacity checks, no growth.
struct Writer {
  char* p;
  void u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) *p++ = static_cast<char>((v >> (8 * i)) & 0xff);
  }
  void i64(std::int64_t value) {
    const auto v = static_cast<std::uint64_t>(value);
    for (int i = 0; i < 8; ++i) *p++ = static_cast<char>((v >> (8 * i)) & 0xff);
  }
  void str(std::string_view v) {
    u32(static_cast<std::uint32_t>(v.size()));
    std::memcpy(p, v.data(), v.size());
    p += v.size();
  }
};

std::size_t payload_size(const Batch& b) {
  std::size_t n = 8 + 8 + 4;
  for (const auto& t : b.transfers) {
    n += 5 * 4 + 8 + t.kind.size() + t.debit.size() + t.credit.size() + t.request_id.size() + t.memo.size() + t.meta.size() + 4;
  }
  n += 4;
  if (b.usage) {
    const auto& u = *b.usage;
    n += 4 * 4 + u.request_id.size() + u.account.size() + u.model.size() + u.provider.size() + 4 * 8 + 4;
  }
  n += 4;
  for (const auto& e : b.events) n += 4 * 4 + e.subject.size() + e.account.size() + e.kind.size() + e.data.size() + 8;
  n += 4;
  for (const auto& h : b.hold_inserts) n += 4 * 4 + h.id.size() + h.account.size() + h.request_id.size() + h.model.size() + 8;
  n += 4;
  for (const auto& h : b.holds_ended) n += 2 * 4 + h.id.size() + h.account.size() + 8;
  return n;
}

}  // namespace

std::string encode_journal_record(std::int64_t id, const Batch& b) {
  std::string out;
  append_journal_record(out, id, b);
  return out;
}

void append_journal_record(std::string& out, std::int64_t id, const Batch& b) {
  const auto len = payload_size(b);
  const auto at = out.size();
  out.resize(at + kJournalHeader + len);
  char* base = out.data() + at;
  Writer w{base + kJournalHeader};
  w.i64(id);
  w.i64(b.ts_ms);
  w.u32(static_cast<std::uint32_t>(b.transfers.size()));
  for (const auto& t : b.transfers) {
    w.str(t.kind);
    w.str(t.debit);
    w.str(t.credit);
    w.i64(t.amount_nanos);
    w.str(t.request_id);
    w.str(t.memo);
    w.str(t.meta);
  }
  w.u32(b.usage ? 1 : 0);
  if (b.usage) {
    const auto& u = *b.usage;
    w.str(u.request_id);
    w.str(u.account);
    w.str(u.model);
    w.str(u.provider);
    w.i64(u.prompt_tokens);
    w.i64(u.completion_tokens);
    w.i64(u.cached_tokens);
    w.i64(u.cost_nanos);
    w.u32(u.estimated ? 1 : 0);
  }
  w.u32(static_cast<std::uint32_t>(b.events.size()));
  for (const auto& e : b.events) {
    w.str(e.subject);
    w.str(e.account);
    w.str(e.kind);
    w.str(e.data);
    w.i64(e.ts_ms);
  }
  w.u32(static_cast<std::uint32_t>(b.hold_inserts.size()));
  for (const auto& h : b.hold_inserts) {
    w.str(h.id);
    w.str(h.account);
    w.i64(h.amount_nanos);
    w.str(h.request_id);
    w.str(h.model);
  }
  w.u32(static_cast<std::uint32_t>(b.holds_ended.size()));
  for (const auto& h : b.holds_ended) {
    w.str(h.id);
    w.str(h.account);
    w.i64(h.amount_nanos);
  }
  Writer head{base};
  std::memcpy(head.p, kJournalMagic.data(), 4);
  head.p += 4;
  head.u32(static_cast<std::uint32_t>(len));
  head.u32(crc32c(std::string_view(base + kJournalHeader, len)));
}

std::vector<JournalRecord> decode_journal(std::string_view text, std::size_t& valid_bytes) {
  std::vector<JournalRecord> out;
  valid_bytes = 0;
  std::size_t at = 0;
  while (text.size() - at >= kJournalHeader) {
    if (text.substr(at, 4) != kJournalMagic) break;
    Reader head{text.substr(at + 4, 8)};
    const auto len = head.u32();
    const auto crc = head.u32();
    if (text.size() - at - kJournalHeader < len) break;  // torn: cut short by a crash
    const auto payload = text.substr(at + kJournalHeader, len);
    if (crc32c(payload) != crc) break;
    Reader r{payload};
    JournalRecord rec;
    rec.id = r.i64();
    auto& b = rec.batch;
    b.ts_ms = r.i64();
    for (auto n = r.count(36); n > 0 && r.ok; --n) {
      Transfer t;
      t.kind = r.str();
      t.debit = r.str();
      t.credit = r.str();
      t.amount_nanos = r.i64();
      t.request_id = r.str();
      t.memo = r.str();
      t.meta = r.str();
      b.transfers.push_back(std::move(t));
    }
    if (r.u32() == 1) {
      UsageRow u;
      u.request_id = r.str();
      u.account = r.str();
      u.model = r.str();
      u.provider = r.str();
      u.prompt_tokens = r.i64();
      u.completion_tokens = r.i64();
      u.cached_tokens = r.i64();
      u.cost_nanos = r.i64();
      u.estimated = r.u32() == 1;
      b.usage = std::move(u);
    }
    for (auto n = r.count(24); n > 0 && r.ok; --n) {
      EventRow e;
      e.subject = r.str();
      e.account = r.str();
      e.kind = r.str();
      e.data = r.str();
      e.ts_ms = r.i64();
      b.events.push_back(std::move(e));
    }
    for (auto n = r.count(24); n > 0 && r.ok; --n) {
      HoldRow h;
      h.id = r.str();
      h.account = r.str();
      h.amount_nanos = r.i64();
      h.request_id = r.str();
      h.model = r.str();
      b.hold_inserts.push_back(std::move(h));
    }
    for (auto n = r.count(16); n > 0 && r.ok; --n) {
      Batch::Ended h;
      h.id = r.str();
      h.account = r.str();
      h.amount_nanos = r.i64();
      b.holds_ended.push_back(std::move(h));
    }
    // A valid CRC over a payload that is not one; or ids not increasing
    // (older records after the tail) end the journal too.
    if (!r.ok || !r.in.empty() || rec.id <= (out.empty() ? 0 : out.back().id)) break;
    out.push_back(std::move(rec));
    at += kJournalHeader + len;
    valid_bytes = at;
  }
  return out;
}

std::string pack_events(std::span<const EventRow> events, std::int64_t ts_ms) {
  std::string out = "[";
  for (const auto& ev : events) {
    if (out.size() > 1) out += ',';
    out += JsonObject{}
               .str("kind", ev.kind)
               .num("ts_ms", ev.ts_ms > 0 ? ev.ts_ms : ts_ms)
               .raw("data", ev.data.empty() ? std::string_view("null") : std::string_view(ev.data))
               .done();
  }
  out += ']';
  return out;
}

void append_stored_events(nlohmann::json& out, std::int64_t id, std::int64_t ts_ms, std::string_view kind,
                          std::string_view data, std::string_view account) {
  auto parsed = nlohmann::json::parse(data, nullptr, false);
  if (kind != kPackedEvents) {
    out.push_back({{"id", id}, {"ts_ms", ts_ms}, {"kind", kind}, {"data", std::move(parsed)}, {"account", account}});
    return;
  }
  if (!parsed.is_array()) return;  // not written by pack_events: nothing to show
  auto event_id = id - static_cast<std::int64_t>(parsed.size()) + 1;
  for (auto& ev : parsed) {
    const auto k = ev.find("kind");
    const auto t = ev.find("ts_ms");
    const auto d = ev.find("data");
    out.push_back({{"id", event_id++},
                   {"ts_ms", t != ev.end() && t->is_number_integer() ? t->get<std::int64_t>() : ts_ms},
                   {"kind", k != ev.end() && k->is_string() ? k->get<std::string>() : std::string()},
                   {"data", d != ev.end() ? std::move(*d) : nlohmann::json()},
                   {"account", account}});
  }
}

std::string entry_hash(const Entry& e) {
  std::string buf;
  buf.reserve(256 + e.meta.size());
  netstring(buf, std::to_string(e.seq));
  netstring(buf, std::to_string(e.ts_ms));
  netstring(buf, e.kind);
  netstring(buf, e.debit);
  netstring(buf, e.credit);
  netstring(buf, std::to_string(e.amount_nanos));
  netstring(buf, e.request_id);
  netstring(buf, e.memo);
  netstring(buf, e.meta);
  netstring(buf, e.prev_hash);
  return sha256_hex(buf);
}

nlohmann::json VerifyReport::to_json() const {
  nlohmann::json j = {{"ok", ok},           {"entries", entries},     {"accounts", accounts},
                      {"checkpoints", checkpoints}, {"tip_hash", tip_hash}, {"problems", problems}};
  j["first_bad_seq"] = bad_seq ? nlohmann::json(*bad_seq) : nlohmann::json(nullptr);
  return j;
}

Ledger::Ledger(storage::Database& db, LedgerOptions options) : db_(db), options_(std::move(options)) {
  if (auto* m = options_.metrics) {
    commits_ = &m->counter("alou_ledger_group_commits_total", "Ledger group commits (one SQLite transaction each)");
    batches_ = &m->counter("alou_ledger_batches_committed_total",
                           "Batches (a settlement with its usage and audit rows, a credit, ...) those commits carried");
    commit_seconds_ = &m->histogram("alou_ledger_group_commit_seconds",
                                    "Time to write and commit one group, on the database thread");
  }
}

Ledger::~Ledger() { close(); }

Result<std::unique_ptr<Ledger>> Ledger::open(storage::Database& db, LedgerOptions options) {
  if (sodium_init() < 0) return Error::internal("libsodium failed to initialise");
  if (options.checkpoint_every < 1) options.checkpoint_every = 1;
  std::unique_ptr<Ledger> l(new Ledger(db, std::move(options)));
  auto seed = load_or_create_seed(l->options_.key_file);
  if (!seed) return seed.error();
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  l->secret_key_.assign(crypto_sign_SECRETKEYBYTES, '\0');
  crypto_sign_seed_keypair(pk, reinterpret_cast<unsigned char*>(l->secret_key_.data()),
                           reinterpret_cast<const unsigned char*>(seed->data()));
  sodium_memzero(seed->data(), seed->size());
  l->public_key_hex_ = hex(pk, sizeof pk);

  auto loaded = db.run_sync([&l](SQLite::Database& c) -> Result<void> {
    try {
      SQLite::Statement tip(c, "SELECT seq, hash FROM ledger_entries ORDER BY seq DESC LIMIT 1");
      if (tip.executeStep()) {
        l->tip_seq_ = tip.getColumn(0).getInt64();
        l->tip_hash_ = tip.getColumn(1).getString();
      }
      SQLite::Statement cp(c, "SELECT COALESCE(MAX(seq), 0) FROM ledger_checkpoints");
      if (cp.executeStep()) l->checkpoint_seq_ = cp.getColumn(0).getInt64();
      // Balances from the entries themselves (not from the cached table,
      // which verify compares).
      SQLite::Statement b(c,
                          "SELECT account, SUM(delta) FROM ("
                          " SELECT credit AS account, amount_nanos AS delta FROM ledger_entries"
                          " UNION ALL SELECT debit, -amount_nanos FROM ledger_entries) GROUP BY account");
      while (b.executeStep()) l->funds_[b.getColumn(0).getString()].balance_nanos = b.getColumn(1).getInt64();
      // What each account was charged over its life (key budgets).
      SQLite::Statement spent(c, "SELECT debit, SUM(amount_nanos) FROM ledger_entries WHERE kind = 'charge' GROUP BY debit");
      while (spent.executeStep()) l->funds_[spent.getColumn(0).getString()].spent_nanos = spent.getColumn(1).getInt64();
      // Holds left by a crash: the requests they covered were never
      // settled, so nothing was delivered for them (a response goes out
      // only once its charge is durable). Release them.
      const int released = l->options_.release_stale_holds ? c.exec("DELETE FROM ledger_holds") : 0;
      if (released > 0) spdlog::warn("ledger: released {} hold(s) left by an unclean stop", released);
    } catch (const std::exception& e) {
      return Error::internal(std::string("cannot load the ledger: ") + e.what(), "ledger_unavailable");
    }
    return {};
  });
  if (!loaded) return loaded.error();
  if (!l->options_.journal_file.empty()) {
    if (auto j = l->open_journal(); !j) return j.error();
  }
  return l;
}

std::int64_t Ledger::journal_applied() const {
  std::lock_guard lock(mu_);
  return journal_applied_;
}

// The settlement journal, at open: lock it (one process only), apply the
// records the tables do not hold yet, map it, start the thread.
Result<void> Ledger::open_journal() {
  const auto& path = options_.journal_file;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Error::internal("cannot open the ledger journal " + path.string() + ": " + std::strerror(errno),
                           "ledger_unavailable");
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return Error::internal("the ledger journal " + path.string() +
                               " is in use by another process (another alou serve on this data_dir?)",
                           "ledger_unavailable");
  }
  // The whole file (an older, appended journal may be longer than two
  // halves): its records from the start, and from the second half's.
  std::string text;
  {
    char buf[1 << 16];
    for (;;) {
      const auto n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(text.size()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        ::close(fd);
        return Error::internal("cannot read the ledger journal: " + std::string(std::strerror(errno)),
                               "ledger_unavailable");
      }
      if (n == 0) break;
      text.append(buf, static_cast<std::size_t>(n));
    }
  }
  std::map<std::int64_t, Batch> records;  // by id: each half, in order
  for (const std::size_t from : {std::size_t{0}, kJournalHalfBytes}) {
    if (from >= text.size()) continue;
    std::size_t valid = 0;
    for (auto& r : decode_journal(std::string_view(text).substr(from), valid)) records.emplace(r.id, std::move(r.batch));
  }
  auto applied = db_.run_sync([](SQLite::Database& c) -> Result<std::int64_t> {
    try {
      return Result<std::int64_t>(boost::system::in_place_value,
                                  c.execAndGet("SELECT applied FROM ledger_journal WHERE id = 1").getInt64());
    } catch (const std::exception& e) {
      return Error::internal(std::string("cannot read the journal's state: ") + e.what(), "ledger_unavailable");
    }
  });
  if (!applied) {
    ::close(fd);
    return applied.error();
  }
  {
    std::lock_guard lock(mu_);
    journal_applied_ = *applied;
  }
  journal_fd_ = fd;
  journal_last_id_ = *applied;
  std::vector<std::future<Result<std::int64_t>>> replayed;
  for (auto& [id, batch] : records) {
    journal_last_id_ = std::max(journal_last_id_, id);
    if (id <= *applied) continue;
    auto p = std::make_shared<std::promise<Result<std::int64_t>>>();
    replayed.push_back(p->get_future());
    enqueue(Pending{std::move(batch), [p](Result<std::int64_t> res) { p->set_value(std::move(res)); }, true, id});
  }
  for (auto& f : replayed) {
    if (auto r = f.get(); !r) {
      return Error::internal("cannot apply the ledger journal: " + r.error().message, "ledger_unavailable");
    }
  }
  if (!replayed.empty()) {
    spdlog::warn("ledger: applied {} settlement(s) from the journal (the last stop was unclean)", replayed.size());
  }
  // Everything in the file is applied now: it is written over from the
  // start. Two halves of kJournalHalfBytes, allocated on disk up front (a full
  // disk cannot fault a write later) and mapped: a record is a memcpy.
  if (text.size() > 2 * kJournalHalfBytes && ::ftruncate(fd, static_cast<off_t>(2 * kJournalHalfBytes)) != 0) {
    return Error::internal("cannot resize the ledger journal: " + std::string(std::strerror(errno)),
                           "ledger_unavailable");
  }
  if (const int e = ::posix_fallocate(fd, 0, static_cast<off_t>(2 * kJournalHalfBytes)); e != 0) {
    return Error::internal("cannot allocate the ledger journal: " + std::string(std::strerror(e)),
                           "ledger_unavailable");
  }
  // Not populated up front: a page is faulted in at its first record
  // (once), and an idle server does not carry the whole file in its RSS.
  void* map = ::mmap(nullptr, 2 * kJournalHalfBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    return Error::internal("cannot map the ledger journal: " + std::string(std::strerror(errno)), "ledger_unavailable");
  }
  journal_map_ = static_cast<char*>(map);
  // Stale (applied) records may follow where writing resumes: a reader
  // stops at them, their ids being lower. Clearing each half's first
  // magic makes the file read as empty until then.
  std::memset(journal_map_, 0, 4);
  std::memset(journal_map_ + kJournalHalfBytes, 0, 4);
  journal_half_ = 0;
  journal_offset_ = 0;
  journal_half_last_[0] = journal_half_last_[1] = 0;
  journal_thread_ = std::thread([this] { journal_loop(); });
  return {};
}

void Ledger::journal_loop() {
  std::unique_lock lock(jmu_);
  for (;;) {
    // One round at a time: not while a caller writes one itself (submit).
    jcv_.wait(lock, [this] { return !jbusy_ && (jstop_ || !jqueue_.empty()); });
    if (jqueue_.empty()) return;  // stopping, and everything is handed on
    std::vector<Pending> items;
    items.swap(jqueue_);
    jbusy_ = true;
    lock.unlock();
    journal_round(items);
    lock.lock();
    jbusy_ = false;
  }
}

// Copies each record into the mapping; then each settlement is durable:
// its waiter completes and the batch goes to the writer's queue, to be
// applied with the next (background, lingering) group.
void Ledger::journal_round(std::vector<Pending>& items, bool may_wait) {
  thread_local std::string rec;
  const auto ts = now_ms();
  const std::size_t first_offset = journal_offset_;
  const int first_half = journal_half_;
  bool switched = false;
  for (auto& p : items) {
    if (p.barrier) continue;
    if (p.batch.ts_ms == 0) p.batch.ts_ms = ts;
    rec.clear();
    append_journal_record(rec, journal_last_id_ + 1, p.batch);
    if (rec.size() > kJournalHalfBytes) {
      // Too big for the journal (never a settlement in practice): it is
      // committed directly, and completes when that commit does.
      p.journal_id = -1;
      continue;
    }
    if (journal_offset_ + rec.size() > kJournalHalfBytes) {
      // This half is full: on to the other, once the tables hold its
      // records (written a half ago, so at once unless the writer is far
      // behind; then an awaited batch ends its linger and this waits).
      const int other = 1 - journal_half_;
      if (!may_wait && journal_applied() < journal_half_last_[other]) {
        p.journal_id = -2;  // an io thread does not wait: the journal thread will
        continue;
      }
      if (journal_applied() < journal_half_last_[other]) {
        auto caught_up = std::make_shared<std::promise<void>>();
        auto f = caught_up->get_future();
        enqueue(Pending{Batch{}, [caught_up](Result<std::int64_t>) { caught_up->set_value(); }, true});
        f.wait_for(std::chrono::seconds(5));
      }
      if (journal_applied() < journal_half_last_[other]) {
        p.journal_id = 0;  // fails below: the writer is stuck
        continue;
      }
      journal_half_ = other;
      journal_offset_ = 0;
      journal_half_last_[other] = 0;
      switched = true;
    }
    p.journal_id = ++journal_last_id_;
    std::memcpy(journal_map_ + static_cast<std::size_t>(journal_half_) * kJournalHalfBytes + journal_offset_, rec.data(),
                rec.size());
    journal_offset_ += rec.size();
    journal_half_last_[journal_half_] = p.journal_id;
  }
  bool synced = true;
  if (options_.journal_sync) {
    // storage.sqlite_synchronous = FULL: on disk before anyone is told.
    const auto sync_range = [this](int half, std::size_t from, std::size_t to) {
      const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
      const auto start = (static_cast<std::size_t>(half) * kJournalHalfBytes + from) / page * page;
      const auto end = static_cast<std::size_t>(half) * kJournalHalfBytes + to;
      return end <= start || ::msync(journal_map_ + start, end - start, MS_SYNC) == 0;
    };
    synced = switched ? sync_range(first_half, first_offset, kJournalHalfBytes) && sync_range(journal_half_, 0, journal_offset_)
                      : sync_range(journal_half_, first_offset, journal_offset_);
    // The records are in the page cache either way (they survive the
    // process) and will be applied: they are delivered, with this error.
    if (!synced) spdlog::error("ledger: cannot sync the journal (settlements not safe from a power loss): {}", std::strerror(errno));
  }
  for (auto& p : items) {
    if (p.barrier) {
      // After everything before it: completes once those are applied.
      submit(Batch{}, std::move(p.done), true);
      continue;
    }
    if (p.journal_id == -2) {
      std::lock_guard lock(jmu_);
      jqueue_.push_back(std::move(p));  // the caller notifies the thread when it ends its round
      continue;
    }
    if (p.journal_id < 0) {
      enqueue(Pending{std::move(p.batch), std::move(p.done), true});
      continue;
    }
    if (p.journal_id == 0) {
      // Not written (the writer is stuck): not durable, not delivered.
      spdlog::error("ledger: the journal is full and the writer is not catching up");
      p.done(Error::unavailable("the ledger could not record this", "ledger_unavailable"));
      continue;
    }
    auto done = std::move(p.done);
    enqueue(Pending{std::move(p.batch),
                    [](Result<std::int64_t> r) {
                      if (!r) spdlog::error("ledger: a journaled settlement was not applied: {}", r.error().message);
                    },
                    false, p.journal_id});
    done(Result<std::int64_t>(boost::system::in_place_value, 0));
  }
}

// Hands on what is queued, stops the thread; the writer's queue is then
// drained by close().
void Ledger::close_journal() {
  if (!journal_thread_.joinable()) return;
  {
    std::lock_guard lock(jmu_);
    jstop_ = true;
  }
  jcv_.notify_all();
  journal_thread_.join();
}

std::int64_t Ledger::tip_seq() const {
  std::lock_guard lock(mu_);
  return tip_seq_;
}

Funds Ledger::funds(const std::string& account) const {
  std::lock_guard lock(mu_);
  const auto it = funds_.find(account);
  return it == funds_.end() ? Funds{} : it->second;
}

bool Ledger::try_reserve(const std::string& account, std::int64_t amount, bool overdraft) {
  if (amount <= 0) return true;
  std::lock_guard lock(mu_);
  auto& f = funds_[account];
  if (!overdraft && f.available() < amount) return false;
  f.held_nanos += amount;
  return true;
}

Reserved Ledger::reserve(const std::string& account, const ReserveAsk& ask) {
  Reserved out;
  const auto max = std::max<std::int64_t>(0, ask.max);
  const auto min = std::clamp<std::int64_t>(ask.min, 0, max);
  std::lock_guard lock(mu_);
  auto& f = funds_[account];
  std::int64_t room = max;
  if (!ask.overdraft && f.available() < room) room = std::max<std::int64_t>(0, f.available());
  if (room < min) {
    out.refused = Reserved::Refused::kBalance;
    out.covered = room;
    return out;
  }
  if (ask.budget) {
    const auto left = std::max<std::int64_t>(0, *ask.budget - f.spent_nanos - f.held_nanos);
    if (left < min) {
      out.refused = Reserved::Refused::kBudget;
      out.covered = left;
      return out;
    }
    room = std::min(room, left);
  }
  f.held_nanos += room;
  out.amount = room;
  return out;
}

void Ledger::unreserve(const std::string& account, std::int64_t amount) {
  if (amount <= 0) return;
  std::lock_guard lock(mu_);
  auto& f = funds_[account];
  f.held_nanos = std::max<std::int64_t>(0, f.held_nanos - amount);
}

void Ledger::submit(Batch batch, Done done, bool awaited, Route route) {
  for (const auto& t : batch.transfers) {
    if (t.amount_nanos <= 0 || t.debit.empty() || t.credit.empty() || t.debit == t.credit) {
      done(Error::bad_request("a transfer needs two different accounts and a positive amount", "invalid_transfer"));
      return;
    }
  }
  if (route != Route::kCommit && journal_fd_ >= 0) {
    std::unique_lock lock(jmu_);
    const bool idle = !jbusy_ && jqueue_.empty();
    if (!jstop_ && route == Route::kJournal && idle && !options_.journal_sync) {
      // The journal idle: this thread writes the record itself (a copy into
      // the journal's mapping, no system call), sparing two thread hops.
      jbusy_ = true;
      lock.unlock();
      std::vector<Pending> items;
      items.push_back(Pending{std::move(batch), std::move(done), awaited, 0, false});
      journal_round(items, false);
      lock.lock();
      jbusy_ = false;
      // Whatever queued meanwhile (or a stop) waits for the thread.
      if (!jqueue_.empty() || jstop_) jcv_.notify_one();
      return;
    }
    // A barrier with nothing on its way through the journal: the writer's
    // queue alone decides (below).
    if (!jstop_ && !(route == Route::kBarrier && idle)) {
      jqueue_.push_back(Pending{std::move(batch), std::move(done), awaited, 0, route == Route::kBarrier});
      jcv_.notify_one();
      return;
    }
  }
  if (route == Route::kBarrier) {
    std::lock_guard lock(mu_);
    if (!flushing_ && queue_.empty()) {
      // Everything durable is applied already.
      done(Result<std::int64_t>(boost::system::in_place_value, 0));
      return;
    }
  }
  enqueue(Pending{std::move(batch), std::move(done), awaited});
}

void Ledger::enqueue(Pending p) {
  bool start = false;
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (closed_) {
      p.done(Error::unavailable("the ledger is closed", "ledger_unavailable"));
      return;
    }
    const bool awaited = p.awaited;
    queue_.push_back(std::move(p));
    if (awaited) ++awaited_queued_;
    if (!flushing_) flushing_ = start = true;
    wake = awaited || queue_.size() >= kLingerBatches;
  }
  // A writer lingering for more background batches goes at once.
  if (wake) linger_cv_.notify_one();
  if (start) db_.post([this](SQLite::Database& c) { flush(c); });
}

bool Ledger::closed_now() const {
  std::lock_guard lock(mu_);
  return closed_;
}

void Ledger::persist_hold(HoldRow row) {
  std::lock_guard lock(mu_);
  if (closed_) return;
  lazy_holds_.push_back(LazyHold{std::move(row), std::chrono::steady_clock::now()});
}

bool Ledger::has_old_lazy_holds() const {
  std::lock_guard lock(mu_);
  return !lazy_holds_.empty() &&
         std::chrono::steady_clock::now() - lazy_holds_.front().since > kHoldRowAge;
}

void Ledger::commit_detached(Batch batch) {
  submit(
      std::move(batch),
      [](Result<std::int64_t> r) {
        if (!r) spdlog::error("ledger: a background commit failed: {}", r.error().message);
      },
      false);
}

Result<std::int64_t> Ledger::commit_sync(Batch batch) {
  auto p = std::make_shared<std::promise<Result<std::int64_t>>>();
  auto f = p->get_future();
  submit(std::move(batch), [p](Result<std::int64_t> r) { p->set_value(std::move(r)); }, true);
  return f.get();
}


Entry entry_from_row(SQLite::Statement& st) {
  Entry e;
  e.seq = st.getColumn(0).getInt64();
  e.ts_ms = st.getColumn(1).getInt64();
  e.kind = st.getColumn(2).getString();
  e.debit = st.getColumn(3).getString();
  e.credit = st.getColumn(4).getString();
  e.amount_nanos = st.getColumn(5).getInt64();
  e.request_id = st.getColumn(6).getString();
  e.memo = st.getColumn(7).getString();
  e.meta = st.getColumn(8).getString();
  e.prev_hash = st.getColumn(9).getString();
  e.hash = st.getColumn(10).getString();
  return e;
}

// The writer's statements, prepared once and kept for the life of the
// ledger (on the database thread only; finalized by close()).
struct Ledger::Stmts {
  explicit Stmts(SQLite::Database& c)
      : ins(c,
            "INSERT INTO ledger_entries (seq, ts_ms, kind, debit, credit, amount_nanos, request_id,"
            " memo, meta, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?)"),
        usage(c,
              "INSERT INTO usage_records (ts_ms, request_id, account, model, provider, prompt_tokens,"
              " completion_tokens, cached_tokens, cost_nanos, estimated, ledger_seq)"
              " VALUES (?,?,?,?,?,?,?,?,?,?,?)"),
        event(c, "INSERT INTO events (id, subject, account, ts_ms, kind, data) VALUES (?,?,?,?,?,?)"),
        max_event(c, "SELECT COALESCE(MAX(id), 0) FROM events"),
        hold_ins(c,
                 "INSERT INTO ledger_holds (id, account, amount_nanos, request_id, model,"
                 " created_at_ms) VALUES (?,?,?,?,?,?)"),
        hold_del(c, "DELETE FROM ledger_holds WHERE id = ?"),
        bal(c,
            "INSERT INTO ledger_balances (account, balance_nanos, last_seq) VALUES (?,?,?)"
            " ON CONFLICT(account) DO UPDATE SET balance_nanos = balance_nanos +"
            " excluded.balance_nanos, last_seq = excluded.last_seq"),
        tip(c, "SELECT seq, hash FROM ledger_entries ORDER BY seq DESC LIMIT 1") {}
  SQLite::Statement ins, usage, event, max_event, hold_ins, hold_del, bal, tip;
  std::optional<SQLite::Statement> journal_applied;  // prepared on first use (only serve has a journal)

  std::int64_t max_event_id() {
    max_event.reset();
    max_event.executeStep();
    const auto v = max_event.getColumn(0).getInt64();
    max_event.reset();
    return v;
  }
};

// The group commit: everything queued goes into one transaction. Runs on
// the database thread (posted by submit), until the queue is empty.
void Ledger::flush(SQLite::Database& c) {
  try {
    // Prepared once for the life of the ledger: parsing SQL is not paid per
    // group commit.
    if (!stmts_) stmts_ = std::make_unique<Stmts>(c);
    auto& ins = stmts_->ins;
    auto& usage = stmts_->usage;
    auto& event = stmts_->event;
    auto& hold_ins = stmts_->hold_ins;
    auto& hold_del = stmts_->hold_del;
    auto& bal = stmts_->bal;
    for (;;) {
      std::vector<Pending> group;
      std::vector<LazyHold> lazy;
      {
        std::unique_lock lock(mu_);
        // Only background batches (usage and audit rows of requests that
        // do not wait): linger up to kLinger for more, so that one commit
        // carries many. Each commit rewrites the same right-hand B-tree
        // pages, so fewer, larger commits write far fewer pages per
        // request. An awaited batch, or enough of them, ends it at once.
        const auto lingering = [this] {
          return !closed_ && awaited_queued_ == 0 && !queue_.empty() && queue_.size() < kLingerBatches;
        };
        if (lingering()) linger_cv_.wait_for(lock, kLinger, [&] { return !lingering(); });
        if (queue_.empty()) {
          flushing_ = false;
          return;
        }
        group.swap(queue_);
        awaited_queued_ = 0;
        lazy.swap(lazy_holds_);
      }
      // A hold that ends in this round before its row was written is never
      // written (nor deleted). One younger than kHoldRowAge waits for a
      // later round: most requests settle well within it, so under load a
      // hold costs no row at all (rounds come every few hundred µs, far
      // sooner than requests end).
      std::unordered_set<std::string_view> skip;
      std::vector<LazyHold> young;
      if (!lazy.empty()) {
        std::unordered_set<std::string_view> ended;
        for (const auto& p : group) {
          for (const auto& h : p.batch.holds_ended) ended.insert(h.id);
        }
        const auto now = std::chrono::steady_clock::now();
        const bool closing = closed_now();
        std::vector<LazyHold> due;
        for (auto& l : lazy) {
          const bool ends_now = ended.contains(l.row.id);
          if (ends_now || closing || now - l.since >= kHoldRowAge) {
            due.push_back(std::move(l));
          } else {
            young.push_back(std::move(l));
          }
        }
        lazy = std::move(due);
        for (const auto& l : lazy) {
          if (ended.contains(l.row.id)) skip.insert(l.row.id);
        }
      }
      if (!young.empty()) {
        // Back at the front (they are older than anything queued since).
        std::lock_guard lock(mu_);
        lazy_holds_.insert(lazy_holds_.begin(), std::make_move_iterator(young.begin()),
                           std::make_move_iterator(young.end()));
      }
      std::vector<std::int64_t> last_seq(group.size(), 0);
      std::map<std::string, std::int64_t> deltas;
      std::int64_t seq = 0;
      std::string hash;
      std::int64_t checkpoint_seq = 0;
      std::map<std::string, std::int64_t> foreign;  // balances changed by another writer
      std::string failure;
      std::int64_t applied_upto = 0;  // the journal records this round applied
      try {
        // A failed group may have left a statement mid-step.
        for (auto* st : {&ins, &usage, &event, &stmts_->max_event, &hold_ins, &hold_del, &bal, &stmts_->tip}) {
          st->tryReset();
        }
        std::int64_t next_event_id = 0;  // read in the transaction, on the first event
        const auto round_started = std::chrono::steady_clock::now();
        SQLite::Transaction tx(c, SQLite::TransactionBehavior::IMMEDIATE);
        {
          std::lock_guard lock(mu_);
          seq = tip_seq_;
          hash = tip_hash_;
          checkpoint_seq = checkpoint_seq_;
        }
        // Another process (`alou credit`) may have appended since: chain
        // onto the real tip and learn its balance changes.
        read_foreign(c, seq, hash, foreign, &stmts_->tip);
        const auto ts = now_ms();
        const auto insert_hold = [&hold_ins, ts](const HoldRow& h) {
          hold_ins.bind(1, h.id);
          hold_ins.bind(2, h.account);
          hold_ins.bind(3, h.amount_nanos);
          hold_ins.bind(4, h.request_id);
          hold_ins.bind(5, h.model);
          hold_ins.bind(6, ts);
          hold_ins.exec();
          hold_ins.reset();
        };
        for (const auto& l : lazy) {
          if (!skip.contains(l.row.id)) insert_hold(l.row);
        }
        std::int64_t journal_upto = 0;
        for (std::size_t i = 0; i < group.size(); ++i) {
          auto& b = group[i].batch;
          journal_upto = std::max(journal_upto, group[i].journal_id);
          const auto bts = b.ts_ms > 0 ? b.ts_ms : ts;  // a journaled batch keeps its time
          std::int64_t batch_last = 0;
          for (const auto& t : b.transfers) {
            Entry e;
            static_cast<Transfer&>(e) = t;  // copied: a failed round is retried
            e.seq = ++seq;
            e.ts_ms = bts;
            e.prev_hash = hash;
            e.hash = entry_hash(e);
            ins.bind(1, e.seq);
            ins.bind(2, e.ts_ms);
            ins.bind(3, e.kind);
            ins.bind(4, e.debit);
            ins.bind(5, e.credit);
            ins.bind(6, e.amount_nanos);
            ins.bind(7, e.request_id);
            ins.bind(8, e.memo);
            ins.bind(9, e.meta);
            ins.bind(10, e.prev_hash);
            ins.bind(11, e.hash);
            ins.exec();
            ins.reset();
            deltas[e.debit] -= e.amount_nanos;
            deltas[e.credit] += e.amount_nanos;
            hash = std::move(e.hash);
            batch_last = e.seq;
          }
          last_seq[i] = batch_last;
          for (const auto& h : b.hold_inserts) insert_hold(h);
          for (const auto& h : b.holds_ended) {
            if (skip.contains(h.id)) continue;
            hold_del.bind(1, h.id);
            hold_del.exec();
            hold_del.reset();
          }
          if (b.usage) {
            const auto& u = *b.usage;
            usage.bind(1, bts);
            usage.bind(2, u.request_id);
            usage.bind(3, u.account);
            usage.bind(4, u.model);
            usage.bind(5, u.provider);
            usage.bind(6, u.prompt_tokens);
            usage.bind(7, u.completion_tokens);
            usage.bind(8, u.cached_tokens);
            usage.bind(9, u.cost_nanos);
            usage.bind(10, u.estimated ? 1 : 0);
            if (batch_last > 0) {
              usage.bind(11, batch_last);
            } else {
              usage.bind(11);
            }
            usage.exec();
            usage.reset();
          }
          // Consecutive events of one subject (a request's request, route,
          // completion and usage) go in one packed row: one row and one
          // index entry instead of four (see pack_events).
          for (std::size_t at = 0; at < b.events.size();) {
            std::size_t n = 1;
            while (at + n < b.events.size() && b.events[at + n].subject == b.events[at].subject &&
                   b.events[at + n].account == b.events[at].account) {
              ++n;
            }
            const auto& first = b.events[at];
            if (next_event_id == 0) next_event_id = stmts_->max_event_id() + 1;
            // A row of n events takes the ids up to its own: the last id
            // is the row's, so max(id) + 1 is always the next free one.
            event.bind(1, next_event_id + static_cast<std::int64_t>(n) - 1);
            event.bind(2, first.subject);
            event.bind(3, first.account);
            event.bind(4, first.ts_ms > 0 ? first.ts_ms : bts);
            if (n == 1) {
              event.bind(5, first.kind);
              event.bind(6, first.data);
            } else {
              event.bind(5, std::string(kPackedEvents));
              event.bind(6, pack_events(std::span(b.events).subspan(at, n), bts));
            }
            event.exec();
            event.reset();
            next_event_id += static_cast<std::int64_t>(n);
            at += n;
          }
        }
        if (!deltas.empty()) {
          for (const auto& [account, delta] : deltas) {
            bal.bind(1, account);
            bal.bind(2, delta);
            bal.bind(3, seq);
            bal.exec();
            bal.reset();
          }
        }
        if (journal_upto > 0) {
          // The journal's records up to here are in the tables, in this
          // same transaction: replayed never again.
          auto& up = stmts_->journal_applied;
          if (!up) up.emplace(c, "UPDATE ledger_journal SET applied = MAX(applied, ?) WHERE id = 1");
          up->reset();
          up->bind(1, journal_upto);
          up->exec();
        }
        if (seq - checkpoint_seq >= options_.checkpoint_every) {
          write_checkpoint(c, seq, hash);
          checkpoint_seq = seq;
        }
        tx.commit();
        applied_upto = journal_upto;
        if (commits_ != nullptr) {
          commits_->inc();
          batches_->inc(group.size());
          commit_seconds_->observe(
              std::chrono::duration<double>(std::chrono::steady_clock::now() - round_started).count());
        }
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (!failure.empty()) {
        spdlog::error("ledger: a group of {} commit(s) failed: {}", group.size(), failure);
        // A journaled settlement was delivered: it is not dropped but
        // retried (first, before anything queued since) until it is
        // applied; at a stop it stays in the journal for the next start.
        std::vector<Pending> again;
        for (auto& p : group) {
          if (p.journal_id > 0) {
            again.push_back(std::move(p));
          } else {
            p.done(Error::unavailable("the ledger could not record this", "ledger_unavailable"));
          }
        }
        if (!again.empty()) {
          std::unique_lock lock(mu_);
          if (!closed_) {
            queue_.insert(queue_.begin(), std::make_move_iterator(again.begin()), std::make_move_iterator(again.end()));
            // The round resumes in 100 ms; the database thread serves
            // readers meanwhile (flushing_ stays set: nobody else starts one).
            db_.post_after(std::chrono::milliseconds(100), [this](SQLite::Database& conn) { flush(conn); });
            return;
          }
        }
        for (auto& p : again) p.done(Error::unavailable("the ledger could not record this", "ledger_unavailable"));
        continue;
      }
      {
        std::lock_guard lock(mu_);
        if (tip_seq_ > seq) {
          // The poller caught up with those foreign entries meanwhile.
          foreign.clear();
        }
        for (const auto& [account, d] : foreign) funds_[account].balance_nanos += d;
        for (const auto& [account, d] : deltas) funds_[account].balance_nanos += d;
        for (const auto& p : group) {
          for (const auto& t : p.batch.transfers) {
            if (t.kind == "charge") funds_[t.debit].spent_nanos += t.amount_nanos;
          }
          for (const auto& h : p.batch.holds_ended) {
            auto& f = funds_[h.account];
            f.held_nanos = std::max<std::int64_t>(0, f.held_nanos - h.amount_nanos);
          }
        }
        tip_seq_ = seq;
        tip_hash_ = hash;
        checkpoint_seq_ = checkpoint_seq;
        journal_applied_ = std::max(journal_applied_, applied_upto);
      }
      for (std::size_t i = 0; i < group.size(); ++i) {
        group[i].done(Result<std::int64_t>(boost::system::in_place_value, last_seq[i]));
      }
    }
  } catch (const std::exception& e) {
    // Preparing failed (the database is unusable): fail what is queued.
    spdlog::error("ledger: the writer cannot prepare its statements: {}", e.what());
    std::vector<Pending> group;
    {
      std::lock_guard lock(mu_);
      group.swap(queue_);
      awaited_queued_ = 0;
      flushing_ = false;
    }
    for (auto& p : group) p.done(Error::unavailable("the ledger could not record this", "ledger_unavailable"));
  }
}

void Ledger::read_foreign(SQLite::Database& c, std::int64_t& seq, std::string& hash,
                          std::map<std::string, std::int64_t>& deltas, SQLite::Statement* prepared_tip) {
  std::optional<SQLite::Statement> own;
  if (!prepared_tip) own.emplace(c, "SELECT seq, hash FROM ledger_entries ORDER BY seq DESC LIMIT 1");
  SQLite::Statement& tip = prepared_tip ? *prepared_tip : *own;
  // Reset on every way out: a kept statement must not hold its read open.
  struct Reset {
    SQLite::Statement& st;
    ~Reset() { st.tryReset(); }
  } reset{tip};
  if (!tip.executeStep() || tip.getColumn(0).getInt64() <= seq) return;
  SQLite::Statement news(c, "SELECT debit, credit, amount_nanos FROM ledger_entries WHERE seq > ?");
  news.bind(1, static_cast<std::int64_t>(seq));
  while (news.executeStep()) {
    const auto amount = news.getColumn(2).getInt64();
    deltas[news.getColumn(0).getString()] -= amount;
    deltas[news.getColumn(1).getString()] += amount;
  }
  seq = tip.getColumn(0).getInt64();
  hash = tip.getColumn(1).getString();
}

void Ledger::catch_up(SQLite::Database& c) {
  std::int64_t seq = 0;
  std::string hash;
  {
    std::lock_guard lock(mu_);
    if (flushing_) return;  // the writer catches up itself, in its transaction
    seq = tip_seq_;
    hash = tip_hash_;
  }
  std::map<std::string, std::int64_t> foreign;
  try {
    read_foreign(c, seq, hash, foreign);
  } catch (const std::exception& e) {
    spdlog::warn("ledger: cannot read new entries: {}", e.what());
    return;
  }
  if (foreign.empty()) return;
  std::lock_guard lock(mu_);
  if (flushing_ || seq <= tip_seq_) return;
  for (const auto& [account, d] : foreign) funds_[account].balance_nanos += d;
  tip_seq_ = seq;
  tip_hash_ = hash;
}

void Ledger::start_polling(std::chrono::milliseconds every) {
  poller_ = std::thread([this, every] {
    std::unique_lock lock(poll_mu_);
    while (!poll_cv_.wait_for(lock, every, [this] { return stop_polling_; })) {
      db_.post([this](SQLite::Database& c) { catch_up(c); });
      if (has_old_lazy_holds()) commit_detached(Batch{});  // a round that writes them
    }
  });
}

void Ledger::write_checkpoint(SQLite::Database& c, std::int64_t seq, const std::string& hash) const {
  const auto msg = checkpoint_message(seq, hash);
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(msg.data()), msg.size(),
                       reinterpret_cast<const unsigned char*>(secret_key_.data()));
  SQLite::Statement cp(c,
                       "INSERT OR IGNORE INTO ledger_checkpoints (seq, hash, ts_ms, public_key, signature)"
                       " VALUES (?,?,?,?,?)");
  cp.bind(1, seq);
  cp.bind(2, hash);
  cp.bind(3, now_ms());
  cp.bind(4, public_key_hex_);
  cp.bind(5, hex(sig, sizeof sig));
  cp.exec();
}

VerifyReport Ledger::verify_sync() {
  const std::string key = public_key_hex_;
  return db_.run_sync([&key](SQLite::Database& c) { return verify_on(c, key); });
}

boost::asio::awaitable<VerifyReport> Ledger::verify() {
  const std::string key = public_key_hex_;
  // Named first: GCC 12 destroys a lambda temporary of a co_await twice.
  auto walk = [key](SQLite::Database& c) { return verify_on(c, key); };
  auto r = co_await db_.run(std::move(walk));
  co_return r;
}

VerifyReport Ledger::verify_on(SQLite::Database& c, const std::string& own_key) {
  {
    VerifyReport r;
    auto fail = [&r](std::int64_t seq, std::string why) {
      r.ok = false;
      if (!r.bad_seq) r.bad_seq = seq;
      if (r.problems.size() < 20) r.problems.push_back("entry " + std::to_string(seq) + ": " + std::move(why));
    };
    try {
      SQLite::Transaction read(c);  // one consistent snapshot
      std::map<std::string, std::int64_t> balances;
      std::map<std::int64_t, std::string> hashes_at;  // for checkpoints
      std::map<std::int64_t, bool> wanted;
      SQLite::Statement cps(c, "SELECT seq FROM ledger_checkpoints");
      while (cps.executeStep()) wanted[cps.getColumn(0).getInt64()] = true;

      SQLite::Statement st(c, std::string("SELECT ") + kEntryColumns + " FROM ledger_entries ORDER BY seq");
      std::int64_t expected = 1;
      std::string prev = kGenesisHash;
      while (st.executeStep()) {
        const Entry e = entry_from_row(st);
        ++r.entries;
        if (e.seq != expected) fail(e.seq, "expected sequence number " + std::to_string(expected));
        expected = e.seq + 1;
        if (e.prev_hash != prev) fail(e.seq, "prev_hash does not match the previous entry's hash");
        if (entry_hash(e) != e.hash) fail(e.seq, "hash does not match the entry's contents");
        if (e.amount_nanos <= 0) fail(e.seq, "amount is not positive");
        if (e.debit == e.credit) fail(e.seq, "debit and credit are the same account");
        balances[e.debit] -= e.amount_nanos;
        balances[e.credit] += e.amount_nanos;
        prev = e.hash;
        if (wanted.count(e.seq)) hashes_at[e.seq] = e.hash;
      }
      r.tip_hash = prev;
      r.accounts = static_cast<std::int64_t>(balances.size());
      std::int64_t sum = 0;
      for (const auto& [a, b] : balances) sum += b;
      if (sum != 0) {
        r.ok = false;
        r.problems.push_back("balances sum to " + std::to_string(sum) + " nanos, not zero");
      }
      SQLite::Statement cached(c, "SELECT account, balance_nanos FROM ledger_balances");
      std::int64_t cached_n = 0;
      while (cached.executeStep()) {
        ++cached_n;
        const auto account = cached.getColumn(0).getString();
        const auto value = cached.getColumn(1).getInt64();
        const auto it = balances.find(account);
        const std::int64_t real = it == balances.end() ? 0 : it->second;
        if (real != value) {
          r.ok = false;
          r.problems.push_back("account " + account + ": stored balance " + std::to_string(value) +
                               " but its entries sum to " + std::to_string(real));
        }
      }
      if (cached_n != static_cast<std::int64_t>(balances.size())) {
        r.ok = false;
        r.problems.push_back("the stored balances do not list every account of the entries");
      }
      SQLite::Statement cp(c, "SELECT seq, hash, public_key, signature FROM ledger_checkpoints ORDER BY seq");
      while (cp.executeStep()) {
        ++r.checkpoints;
        const auto seq = cp.getColumn(0).getInt64();
        const auto hash = cp.getColumn(1).getString();
        const auto pk = unhex(cp.getColumn(2).getString());
        const auto sig = unhex(cp.getColumn(3).getString());
        const auto msg = checkpoint_message(seq, hash);
        const auto at = hashes_at.find(seq);
        if (at == hashes_at.end() || at->second != hash) {
          fail(seq, "checkpoint hash does not match the entry");
        } else if (cp.getColumn(2).getString() != own_key) {
          fail(seq, "checkpoint signed by an unknown key");
        } else if (!pk || !sig || pk->size() != crypto_sign_PUBLICKEYBYTES || sig->size() != crypto_sign_BYTES ||
                   crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig->data()),
                                               reinterpret_cast<const unsigned char*>(msg.data()), msg.size(),
                                               reinterpret_cast<const unsigned char*>(pk->data())) != 0) {
          fail(seq, "checkpoint signature is invalid");
        }
      }
    } catch (const std::exception& e) {
      r.ok = false;
      r.problems.push_back(std::string("cannot read the ledger: ") + e.what());
    }
    return r;
  }
}

void Ledger::close() {
  close_journal();
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
  }
  linger_cv_.notify_all();  // a lingering writer commits what it has now
  if (poller_.joinable()) {
    {
      std::lock_guard lock(poll_mu_);
      stop_polling_ = true;
    }
    poll_cv_.notify_all();
    poller_.join();
  }
  // Holds still waiting for a round are written now (they are released at
  // the next start, like any hold a stop leaves).
  bool lazy = false;
  {
    std::lock_guard lock(mu_);
    lazy = !lazy_holds_.empty();
  }
  if (lazy) {
    std::lock_guard lock(mu_);
    queue_.push_back(Pending{Batch{}, [](Result<std::int64_t>) {}});
    if (!flushing_) {
      flushing_ = true;
      db_.post([this](SQLite::Database& c) { flush(c); });
    }
  }
  // Drain: a commit queued after everything else completes after it.
  auto p = std::make_shared<std::promise<void>>();
  auto f = p->get_future();
  db_.post([p](SQLite::Database&) { p->set_value(); });
  f.wait();
  for (;;) {
    bool idle = false;
    {
      std::lock_guard lock(mu_);
      idle = !flushing_ && queue_.empty();
    }
    if (idle) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // A final checkpoint, so that the whole chain is signed; the writer's
  // statements are finalized on the database thread.
  db_.run_sync([this](SQLite::Database& c) {
    stmts_.reset();
    std::lock_guard lock(mu_);
    if (tip_seq_ <= checkpoint_seq_) return;
    try {
      write_checkpoint(c, tip_seq_, tip_hash_);
      checkpoint_seq_ = tip_seq_;
    } catch (const std::exception& e) {
      spdlog::error("ledger: cannot write the final checkpoint: {}", e.what());
    }
  });
  if (journal_fd_ >= 0) {
    if (journal_map_ != nullptr) {
      // A clean stop (every record applied) leaves a journal that reads as
      // empty.
      if (journal_applied() >= journal_last_id_) {
        std::memset(journal_map_, 0, 4);
        std::memset(journal_map_ + kJournalHalfBytes, 0, 4);
      }
      ::munmap(journal_map_, 2 * kJournalHalfBytes);
    }
    ::close(journal_fd_);  // and unlocks it; journal_fd_ keeps its value: submit reads it unlocked
  }
}

}  // namespace alou::billing
