// The Redis KV: hiredis' async API with Asio as its event loop.
//
// Threading: every hiredis call, hook and reply callback runs on one strand
// (strand_). Callers' coroutines are resumed by posting to their own
// executor. Each call is an Op shared between the hiredis callback list and
// its deadline timer; whichever fires first completes it, the other finds it
// done, so a late reply after a timeout is harmless.
#include "alou/storage/kv.hpp"

#include "redis_url.hpp"

#include "alou/core/fd.hpp"

#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <csignal>
#include <cstdlib>
#include <future>
#include <mutex>
#include <vector>

namespace alou::storage {

namespace asio = boost::asio;

// ---------------------------------------------------------------- URL

namespace {

std::optional<std::string> percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return std::nullopt;
    unsigned value = 0;
    auto [end, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, value, 16);
    if (ec != std::errc() || end != in.data() + i + 3) return std::nullopt;
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return out;
}

Error bad_url(std::string_view why) {
  return Error::internal("storage.redis_url: " + std::string(why) +
                             " (expected redis://[:password@]host:port[/db])",
                         "invalid_config");
}

}  // namespace

Result<RedisUrl> parse_redis_url(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme) return bad_url("unsupported scheme");
  auto rest = url.substr(kScheme.size());
  RedisUrl out;
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    auto db = rest.substr(slash + 1);
    if (!db.empty()) {
      auto [end, ec] = std::from_chars(db.data(), db.data() + db.size(), out.db);
      if (ec != std::errc() || end != db.data() + db.size() || out.db < 0) return bad_url("bad database number");
    }
  }
  // The password may itself contain '@' when not percent-encoded; the last
  // '@' separates it from the host.
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    auto userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    auto colon = userinfo.find(':');
    auto user = percent_decode(userinfo.substr(0, colon));
    if (!user) return bad_url("bad percent-encoding in the user name");
    out.user = std::move(*user);
    if (colon != std::string_view::npos) {
      auto password = percent_decode(userinfo.substr(colon + 1));
      if (!password) return bad_url("bad percent-encoding in the password");
      out.password = std::move(*password);
    } else {
      // redis://secret@host: a lone userinfo is the password (as redis-cli reads it).
      out.password = std::move(out.user);
      out.user.clear();
    }
  }
  std::string_view host;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return bad_url("unterminated IPv6 address");
    host = authority.substr(1, close - 1);
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad_url("bad port");
      port = after.substr(1);
    }
  } else {
    auto colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (host.empty()) return bad_url("missing host");
  out.host = std::string(host);
  if (!port.empty()) {
    int p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || end != port.data() + port.size() || p <= 0 || p > 65535) return bad_url("bad port");
    out.port = std::string(port);
  }
  return out;
}

namespace {

// ---------------------------------------------------------------- replies

// Result<T> cannot be built implicitly from an arithmetic T: C++20 lets
// the aggregate Error be constructed from one, which disables the implicit
// value constructor. Spell the value case out.
template <class T>
Result<T> ok(T value) {
  return Result<T>(boost::system::in_place_value, std::move(value));
}


// An owned copy: hiredis frees its reply as soon as the callback returns.
struct Reply {
  int type = REDIS_REPLY_NIL;
  long long integer = 0;
  std::string str;
  std::vector<Reply> elements;

  bool is_error() const { return type == REDIS_REPLY_ERROR; }
  bool is_nil() const { return type == REDIS_REPLY_NIL; }
};

Reply copy_reply(const redisReply* r) {
  Reply out;
  out.type = r->type;
  out.integer = r->integer;
  if (r->str != nullptr) out.str.assign(r->str, r->len);
  if (r->type == REDIS_REPLY_ARRAY) {
    out.elements.reserve(r->elements);
    for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(copy_reply(r->element[i]));
  }
  return out;
}

Error unavailable(std::string message) { return Error::unavailable(std::move(message), "kv_unavailable"); }

Error from_error_reply(const std::string& message) {
  // Errors that say "the server cannot serve you right now" are
  // unavailability; anything else (WRONGTYPE, script errors) is a bug.
  for (std::string_view transient : {"NOAUTH", "WRONGPASS", "LOADING", "READONLY", "MASTERDOWN", "BUSY",
                                     "CLUSTERDOWN", "TRYAGAIN", "NOPERM"}) {
    if (message.compare(0, transient.size(), transient) == 0) return unavailable("redis: " + message);
  }
  return Error::internal("redis: " + message, "kv_error");
}

// ---------------------------------------------------------------- client

class Client;

// One redisAsyncContext and the Asio descriptor that watches its socket.
// hiredis owns the fd: the descriptor is released (never closed) in the
// cleanup hook, which hiredis calls just before it closes the socket.
struct Conn final : std::enable_shared_from_this<Conn> {
  Conn(asio::strand<asio::any_io_executor> strand, redisAsyncContext* context, Client* client)
      : ac(context), owner(client), sd(strand), connect_timer(strand) {}
  ~Conn() {
    if (sd.is_open()) sd.release();
  }

  redisAsyncContext* ac;  // null once hiredis has freed it
  Client* owner;          // alive while ac is non-null
  asio::posix::stream_descriptor sd;
  asio::steady_timer connect_timer;
  bool connected = false;
  bool want_read = false;
  bool want_write = false;
  bool read_pending = false;
  bool write_pending = false;

  void arm_read() {
    if (read_pending || ac == nullptr || !want_read) return;
    read_pending = true;
    sd.async_wait(asio::posix::stream_descriptor::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
      self->read_pending = false;
      if (ec || self->ac == nullptr || !self->want_read) return;
      redisAsyncHandleRead(self->ac);
      self->arm_read();
    });
  }

  void arm_write() {
    if (write_pending || ac == nullptr || !want_write) return;
    write_pending = true;
    sd.async_wait(asio::posix::stream_descriptor::wait_write,
                  [self = shared_from_this()](boost::system::error_code ec) {
                    self->write_pending = false;
                    if (ec || self->ac == nullptr || !self->want_write) return;
                    redisAsyncHandleWrite(self->ac);
                    self->arm_write();
                  });
  }
};

struct Op {
  Op(asio::strand<asio::any_io_executor> strand, std::vector<std::string> a)
      : args(std::move(a)), timer(strand) {}
  virtual ~Op() = default;

  std::vector<std::string> args;
  asio::steady_timer timer;
  bool done = false;  // strand only

  void finish(Result<Reply> r) {
    if (done) return;
    done = true;
    timer.cancel();
    complete(std::move(r));
  }

 private:
  virtual void complete(Result<Reply> r) = 0;
};

template <class Handler>
struct OpImpl final : Op {
  OpImpl(asio::strand<asio::any_io_executor> strand, std::vector<std::string> a, Handler h)
      : Op(strand, std::move(a)), work(asio::make_work_guard(h)), handler(std::move(h)) {}

  asio::executor_work_guard<asio::associated_executor_t<Handler>> work;
  Handler handler;

  void complete(Result<Reply> r) override {
    auto ex = work.get_executor();
    asio::post(ex, [h = std::move(handler), r = std::move(r)]() mutable { std::move(h)(std::move(r)); });
    work.reset();
  }
};

constexpr std::chrono::milliseconds kFirstBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{5000};

class Client final : public std::enable_shared_from_this<Client> {
 public:
  using Strand = asio::strand<asio::any_io_executor>;

  Client(asio::any_io_executor ex, RedisUrl url, std::chrono::milliseconds timeout)
      : ex_(ex),
        strand_(asio::make_strand(ex)),
        url_(std::move(url)),
        timeout_(timeout),
        resolver_(strand_),
        reconnect_timer_(strand_) {}

  ~Client() {
    // Only reached with a live context if the io threads stopped without
    // flush(); free it so the socket is not leaked.
    if (conn_ && conn_->ac != nullptr) redisAsyncFree(conn_->ac);
  }

  std::string where() const { return url_.host + ":" + url_.port; }

  template <class Token>
  auto async_command(std::vector<std::string> args, Token&& token) {
    return asio::async_initiate<Token, void(Result<Reply>)>(
        [self = shared_from_this()](auto handler, std::vector<std::string> a) {
          using H = std::decay_t<decltype(handler)>;
          auto op = std::make_shared<OpImpl<H>>(self->strand_, std::move(a), std::move(handler));
          asio::post(self->strand_, [self, op] { self->submit(op); });
        },
        token, std::move(args));
  }

  // Closes on the strand; used while the io threads run.
  void close_async() {
    asio::post(strand_, [self = shared_from_this()] { self->close_once(); });
  }

  // Closes and waits. Called at shutdown, normally after the io threads
  // stopped, in which case nothing else can touch hiredis and we close
  // here directly.
  void close_blocking() {
    if (!io_running()) {
      close_once();
      return;
    }
    auto done = std::make_shared<std::promise<void>>();
    auto fut = done->get_future();
    asio::post(strand_, [self = shared_from_this(), done] {
      self->close_once();
      done->set_value();
    });
    if (fut.wait_for(timeout_) == std::future_status::ready) return;
    // The io threads did not get to it: either they are stopping (close
    // here) or the posted close already started (wait for it).
    if (!close_once()) fut.wait();
  }

 private:
  bool io_running() const {
    if (const auto* io = ex_.target<asio::io_context::executor_type>()) return !io->context().stopped();
    return true;  // unknown kind of executor: assume it runs, close_blocking() waits a bounded time
  }

  // true if this call did the closing.
  bool close_once() {
    if (close_claimed_.exchange(true)) return false;
    closed_ = true;
    reconnect_timer_.cancel();
    resolver_.cancel();
    fail_waiting("redis client closed");
    if (conn_ && conn_->ac != nullptr) redisAsyncFree(conn_->ac);  // fails its pending calls
    conn_.reset();
    return true;
  }

  void submit(const std::shared_ptr<Op>& op) {
    if (closed_) {
      op->finish(unavailable("redis client closed"));
      return;
    }
    op->timer.expires_after(timeout_);
    op->timer.async_wait([op, where = where()](boost::system::error_code ec) {
      if (!ec) op->finish(unavailable("redis at " + where + " did not answer in time"));
    });
    if (conn_) {
      issue(op);
      return;
    }
    waiting_.push_back(op);
    if (resolving_) return;
    auto now = std::chrono::steady_clock::now();
    if (now >= next_connect_at_) {
      start_connect();
    } else if (!reconnect_armed_) {
      // In back-off: the call waits (within its own deadline) for the next
      // attempt instead of failing at once.
      reconnect_armed_ = true;
      reconnect_timer_.expires_at(next_connect_at_);
      reconnect_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        self->reconnect_armed_ = false;
        if (ec || self->closed_ || self->conn_ || self->resolving_) return;
        std::erase_if(self->waiting_, [](const auto& w) { return w->done; });
        if (!self->waiting_.empty()) self->start_connect();
      });
    }
  }

  void issue(const std::shared_ptr<Op>& op) {
    if (op->done) return;
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    argv.reserve(op->args.size());
    lens.reserve(op->args.size());
    for (const auto& a : op->args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* holder = new std::shared_ptr<Op>(op);
    if (redisAsyncCommandArgv(conn_->ac, &Client::on_reply, holder, static_cast<int>(argv.size()), argv.data(),
                              lens.data()) != REDIS_OK) {
      delete holder;
      op->finish(unavailable("redis at " + where() + ": connection is closing"));
    }
  }

  void fail_waiting(const std::string& why) {
    auto waiting = std::move(waiting_);
    waiting_.clear();
    for (auto& op : waiting) op->finish(unavailable(why));
  }

  void note_failure() {
    next_connect_at_ = std::chrono::steady_clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, kMaxBackoff);
  }

  void start_connect() {
    resolving_ = true;
    resolver_.async_resolve(
        url_.host, url_.port,
        [self = shared_from_this()](boost::system::error_code ec, asio::ip::tcp::resolver::results_type results) {
          self->resolving_ = false;
          if (self->closed_) return;
          if (ec || results.empty()) {
            self->note_failure();
            self->fail_waiting("redis at " + self->where() + ": cannot resolve host: " + ec.message());
            return;
          }
          self->open_context(results.begin()->endpoint());
        });
  }

  void open_context(const asio::ip::tcp::endpoint& endpoint) {
    auto ip = endpoint.address().to_string();
    redisAsyncContext* ac = redisAsyncConnect(ip.c_str(), endpoint.port());
    if (ac == nullptr || ac->err != 0) {
      std::string why = ac != nullptr ? ac->errstr : "out of memory";
      if (ac != nullptr) redisAsyncFree(ac);
      note_failure();
      spdlog::warn("redis at {}: cannot connect: {}", where(), why);
      fail_waiting("redis at " + where() + ": " + why);
      return;
    }
    set_cloexec(ac->c.fd);  // hiredis opens its socket without SOCK_CLOEXEC
    auto conn = std::make_shared<Conn>(strand_, ac, this);
    boost::system::error_code ec;
    conn->sd.assign(ac->c.fd, ec);
    if (ec) {
      conn->ac = nullptr;
      redisAsyncFree(ac);
      note_failure();
      fail_waiting("redis at " + where() + ": " + ec.message());
      return;
    }
    ac->data = conn.get();
    ac->ev.data = conn.get();
    ac->ev.addRead = &Client::ev_add_read;
    ac->ev.delRead = &Client::ev_del_read;
    ac->ev.addWrite = &Client::ev_add_write;
    ac->ev.delWrite = &Client::ev_del_write;
    ac->ev.cleanup = &Client::ev_cleanup;
    redisAsyncSetConnectCallback(ac, &Client::on_connect);
    redisAsyncSetDisconnectCallback(ac, &Client::on_disconnect);
    conn_ = conn;

    // hiredis has no connect timeout of its own.
    conn->connect_timer.expires_after(timeout_);
    conn->connect_timer.async_wait([conn](boost::system::error_code timer_ec) {
      if (timer_ec || conn->connected || conn->ac == nullptr) return;
      redisAsyncFree(conn->ac);
    });

    // Pipelined ahead of every waiting command, so they run authenticated
    // and in the right database.
    if (!url_.password.empty()) {
      std::vector<std::string> auth{"AUTH"};
      if (!url_.user.empty()) auth.push_back(url_.user);
      auth.push_back(url_.password);
      send_setup(auth);
    }
    if (url_.db != 0) send_setup({"SELECT", std::to_string(url_.db)});

    auto waiting = std::move(waiting_);
    waiting_.clear();
    for (auto& op : waiting) issue(op);
  }

  void send_setup(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    redisAsyncCommandArgv(conn_->ac, &Client::on_setup_reply, nullptr, static_cast<int>(argv.size()), argv.data(),
                          lens.data());
  }

  void on_conn_gone(Conn& conn) {
    conn.connect_timer.cancel();
    if (conn_.get() != &conn) return;
    conn_.reset();
    if (closed_) return;
    if (conn.connected) {
      // A connection that worked is retried at once; repeated failures back off.
      backoff_ = kFirstBackoff;
      next_connect_at_ = std::chrono::steady_clock::now();
    } else {
      note_failure();
    }
  }

  // ---- hiredis hooks and callbacks (all on the strand)

  static Conn& conn_of(void* p) { return *static_cast<Conn*>(p); }

  static void ev_add_read(void* p) {
    auto& c = conn_of(p);
    c.want_read = true;
    c.arm_read();
  }
  static void ev_del_read(void* p) { conn_of(p).want_read = false; }
  static void ev_add_write(void* p) {
    auto& c = conn_of(p);
    c.want_write = true;
    c.arm_write();
  }
  static void ev_del_write(void* p) { conn_of(p).want_write = false; }

  static void ev_cleanup(void* p) {
    auto keep = conn_of(p).shared_from_this();  // the owner may drop its reference below
    auto& c = *keep;
    c.ac = nullptr;
    c.want_read = c.want_write = false;
    if (c.sd.is_open()) c.sd.release();  // cancels the waits; hiredis closes the fd
    c.owner->on_conn_gone(c);
  }

  static void on_connect(const redisAsyncContext* ac, int status) {
    auto& c = conn_of(ac->data);
    if (status == REDIS_OK) {
      c.connected = true;
      c.connect_timer.cancel();
      c.owner->backoff_ = kFirstBackoff;
    } else {
      spdlog::warn("redis at {}: cannot connect: {}", c.owner->where(), ac->errstr != nullptr ? ac->errstr : "");
    }
  }

  static void on_disconnect(const redisAsyncContext* ac, int status) {
    if (status != REDIS_OK) {
      spdlog::warn("redis at {}: connection lost: {}", conn_of(ac->data).owner->where(),
                   ac->errstr != nullptr ? ac->errstr : "");
    }
  }

  static void on_setup_reply(redisAsyncContext* ac, void* r, void*) {
    auto* reply = static_cast<redisReply*>(r);
    if (reply == nullptr || reply->type != REDIS_REPLY_ERROR) return;
    // The reply is the server's text (e.g. WRONGPASS ...); it never echoes
    // the password. The commands queued behind fail with NOAUTH, and the
    // next call reconnects after a back-off.
    spdlog::error("redis at {}: connection setup failed: {}", conn_of(ac->data).owner->where(),
                  std::string(reply->str, reply->len));
    redisAsyncDisconnect(ac);
  }

  static void on_reply(redisAsyncContext*, void* r, void* privdata) {
    std::unique_ptr<std::shared_ptr<Op>> holder(static_cast<std::shared_ptr<Op>*>(privdata));
    auto& op = **holder;
    if (r == nullptr) {
      op.finish(unavailable("redis: connection lost"));
    } else {
      op.finish(copy_reply(static_cast<redisReply*>(r)));
    }
  }

  asio::any_io_executor ex_;
  Strand strand_;
  RedisUrl url_;
  std::chrono::milliseconds timeout_;
  asio::ip::tcp::resolver resolver_;
  asio::steady_timer reconnect_timer_;
  std::atomic<bool> close_claimed_{false};

  // Strand only:
  std::shared_ptr<Conn> conn_;
  std::vector<std::shared_ptr<Op>> waiting_;
  bool resolving_ = false;
  bool reconnect_armed_ = false;
  bool closed_ = false;
  std::chrono::milliseconds backoff_ = kFirstBackoff;
  std::chrono::steady_clock::time_point next_connect_at_{};
};

// ---------------------------------------------------------------- scripts

struct Script {
  std::string text;
  std::string sha;
};

Script make_script(std::string text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), digest, &len, EVP_sha1(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string sha;
  for (unsigned int i = 0; i < len; ++i) {
    sha.push_back(kHex[digest[i] >> 4]);
    sha.push_back(kHex[digest[i] & 0xf]);
  }
  return {std::move(text), std::move(sha)};
}

// Creates the key at 0, adds, and sets the expiry only if this call created
// it (a fixed window that later increments do not extend).
const Script& incr_script() {
  static const Script s = make_script(R"lua(
local existed = redis.call('EXISTS', KEYS[1])
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
)lua");
  return s;
}

const Script& compare_and_delete_script() {
  static const Script s = make_script(R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
)lua");
  return s;
}

// For servers older than 6.2, which lack GETDEL.
const Script& take_script() {
  static const Script s = make_script(R"lua(
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v
)lua");
  return s;
}

const Script& persist_script() {
  static const Script s = make_script(R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PERSIST', KEYS[1])
  return 1
end
return 0
)lua");
  return s;
}

// Token bucket in a hash {tokens, ts}. The server's clock (TIME) is used so
// that every gateway instance sharing the bucket agrees on "now". The key
// expires when the bucket would be full again, which is the same as having
// no key at all. Tokens go back as a string: Lua numbers become integers in
// replies.
const Script& bucket_script() {
  static const Script s = make_script(R"lua(
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate / 1000)
  ts = now
end
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = math.ceil((cost - tokens) * 1000 / rate)
end
local reset = math.ceil((capacity - tokens) * 1000 / rate)
if reset > 0 then
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', tostring(ts))
  redis.call('PEXPIRE', KEYS[1], reset)
else
  redis.call('DEL', KEYS[1])
end
return {allowed, string.format('%.17g', tokens), retry, reset}
)lua");
  return s;
}

// debit_tokens: the same bucket, but the cost is subtracted whatever is
// left (it may go negative) and "allowed" means more than 0 is left.
const Script& debit_script() {
  static const Script s = make_script(R"lua(
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate / 1000)
  ts = now
end
tokens = tokens - cost
local allowed = 0
local retry = 0
if tokens > 0 then
  allowed = 1
else
  retry = math.floor(-tokens * 1000 / rate) + 1
end
local reset = math.ceil((capacity - tokens) * 1000 / rate)
if reset > 0 then
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', tostring(ts))
  redis.call('PEXPIRE', KEYS[1], reset)
else
  redis.call('DEL', KEYS[1])
end
return {allowed, string.format('%.17g', tokens), retry, reset}
)lua");
  return s;
}

// acquire_slot: INCR only below the limit, so a refusal never counts; every
// change pushes the safety-net expiry back.
const Script& acquire_slot_script() {
  static const Script s = make_script(R"lua(
local limit = tonumber(ARGV[1])
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= limit then return {0, n} end
n = redis.call('INCR', KEYS[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, n}
)lua");
  return s;
}

const Script& release_slot_script() {
  static const Script s = make_script(R"lua(
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n <= 1 then
  redis.call('DEL', KEYS[1])
  return 0
end
n = redis.call('DECR', KEYS[1])
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
)lua");
  return s;
}

std::string format_double(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(v);
}

// Builds an argv. (GCC 12 miscompiles braced string lists inside
// coroutines: "array used as initializer".)
template <class... A>
std::vector<std::string> cmd(A&&... a) {
  std::vector<std::string> v;
  v.reserve(sizeof...(a));
  (v.emplace_back(std::forward<A>(a)), ...);
  return v;
}

Error unexpected(const char* what) { return Error::internal(std::string("redis: unexpected reply to ") + what, "kv_error"); }

// ---------------------------------------------------------------- Kv

class RedisKv final : public Kv {
 public:
  explicit RedisKv(std::shared_ptr<Client> client) : client_(std::move(client)) {}
  ~RedisKv() override { client_->close_async(); }

  std::string_view backend() const override { return "redis"; }

  asio::awaitable<Result<std::optional<std::string>>> get(std::string key) override {
    auto r = co_await call(cmd("GET", std::move(key)));
    if (!r) co_return r.error();
    if (r->is_nil()) co_return std::nullopt;
    if (r->type != REDIS_REPLY_STRING) co_return unexpected("GET");
    co_return std::move(r->str);
  }

  asio::awaitable<Result<void>> set(std::string key, std::string value, Ms ttl) override {
    auto args = cmd("SET", std::move(key), std::move(value));
    add_ttl(args, ttl);
    auto r = co_await call(std::move(args));
    if (!r) co_return r.error();
    co_return Result<void>(boost::system::in_place_value);
  }

  asio::awaitable<Result<bool>> set_if_absent(std::string key, std::string value, Ms ttl) override {
    auto args = cmd("SET", std::move(key), std::move(value), "NX");
    add_ttl(args, ttl);
    auto r = co_await call(std::move(args));
    if (!r) co_return r.error();
    co_return ok(!r->is_nil());
  }

  asio::awaitable<Result<bool>> del(std::string key) override {
    co_return integer_to_bool(co_await call(cmd("DEL", std::move(key))), "DEL");
  }

  asio::awaitable<Result<std::int64_t>> incr(std::string key, std::int64_t by, Ms ttl) override {
    auto r = co_await eval(incr_script(), cmd(std::move(key)),
                           cmd(std::to_string(by), std::to_string(std::max<std::int64_t>(0, ttl.count()))));
    if (!r) co_return r.error();
    if (r->type != REDIS_REPLY_INTEGER) co_return unexpected("INCRBY");
    co_return ok(static_cast<std::int64_t>(r->integer));
  }

  asio::awaitable<Result<bool>> compare_and_delete(std::string key, std::string expected) override {
    co_return integer_to_bool(co_await eval(compare_and_delete_script(), cmd(std::move(key)), cmd(std::move(expected))),
                              "compare_and_delete");
  }

  asio::awaitable<Result<std::optional<std::string>>> take(std::string key) override {
    Result<Reply> r = Reply{};
    if (has_getdel_.load()) {
      auto raw = co_await client_->async_command(cmd("GETDEL", key), asio::use_awaitable);
      if (raw && raw->is_error() && raw->str.starts_with("ERR unknown command")) {
        has_getdel_.store(false);
      } else {
        r = check(std::move(raw));
      }
    }
    if (!has_getdel_.load()) r = co_await eval(take_script(), cmd(std::move(key)), cmd());
    if (!r) co_return r.error();
    if (r->is_nil()) co_return std::nullopt;
    if (r->type != REDIS_REPLY_STRING) co_return unexpected("GETDEL");
    co_return std::move(r->str);
  }

  asio::awaitable<Result<bool>> expire(std::string key, Ms ttl) override {
    if (ttl.count() <= 0) co_return integer_to_bool(co_await eval(persist_script(), cmd(std::move(key)), cmd()), "PERSIST");
    co_return integer_to_bool(co_await call(cmd("PEXPIRE", std::move(key), std::to_string(ttl.count()))), "PEXPIRE");
  }

  asio::awaitable<Result<std::optional<Ms>>> ttl(std::string key) override {
    auto r = co_await call(cmd("PTTL", std::move(key)));
    if (!r) co_return r.error();
    if (r->type != REDIS_REPLY_INTEGER) co_return unexpected("PTTL");
    if (r->integer == -2) co_return std::nullopt;
    if (r->integer == -1) co_return Ms{0};
    // 0 means "no expiry" in this interface; a key about to expire has 1 ms.
    co_return Ms{std::max<long long>(1, r->integer)};
  }

  asio::awaitable<Result<BucketResult>> take_tokens(std::string key, double capacity, double refill_per_s,
                                                    double cost) override {
    if (!(capacity > 0) || !(refill_per_s > 0) || !(cost >= 0)) {
      co_return Error::internal("take_tokens: capacity and refill must be > 0 and cost >= 0", "kv_error");
    }
    auto r = co_await bucket(bucket_script(), std::move(key), capacity, refill_per_s, cost);
    co_return r;
  }

  asio::awaitable<Result<BucketResult>> debit_tokens(std::string key, double capacity, double refill_per_s,
                                                     double cost) override {
    if (!(capacity > 0) || !(refill_per_s > 0) || !(cost >= 0)) {
      co_return Error::internal("debit_tokens: capacity and refill must be > 0 and cost >= 0", "kv_error");
    }
    auto r = co_await bucket(debit_script(), std::move(key), capacity, refill_per_s, cost);
    co_return r;
  }

  asio::awaitable<Result<SlotResult>> acquire_slot(std::string key, std::int64_t limit, Ms ttl) override {
    if (limit <= 0) co_return Error::internal("acquire_slot: limit must be > 0", "kv_error");
    auto r = co_await eval(acquire_slot_script(), cmd(std::move(key)),
                           cmd(std::to_string(limit), std::to_string(std::max<std::int64_t>(0, ttl.count()))));
    if (!r) co_return r.error();
    if (r->type != REDIS_REPLY_ARRAY || r->elements.size() != 2) co_return unexpected("acquire_slot");
    SlotResult out;
    out.acquired = r->elements[0].integer == 1;
    out.in_use = r->elements[1].integer;
    co_return out;
  }

  asio::awaitable<Result<std::int64_t>> release_slot(std::string key, Ms ttl) override {
    auto r = co_await eval(release_slot_script(), cmd(std::move(key)),
                           cmd(std::to_string(std::max<std::int64_t>(0, ttl.count()))));
    if (!r) co_return r.error();
    if (r->type != REDIS_REPLY_INTEGER) co_return unexpected("release_slot");
    co_return ok(static_cast<std::int64_t>(r->integer));
  }

  asio::awaitable<Result<void>> ping() override {
    auto r = co_await call(cmd("PING"));
    if (!r) co_return r.error();
    co_return Result<void>(boost::system::in_place_value);
  }

  void flush() override { client_->close_blocking(); }

 private:
  static void add_ttl(std::vector<std::string>& args, Ms ttl) {
    if (ttl.count() > 0) {
      args.emplace_back("PX");
      args.push_back(std::to_string(ttl.count()));
    }
  }

  static Result<Reply> check(Result<Reply> r) {
    if (r && r->is_error()) return from_error_reply(r->str);
    return r;
  }

  static Result<bool> integer_to_bool(Result<Reply> r, const char* what) {
    if (!r) return r.error();
    if (r->type != REDIS_REPLY_INTEGER) return unexpected(what);
    return ok(r->integer > 0);
  }

  asio::awaitable<Result<BucketResult>> bucket(const Script& script, std::string key, double capacity,
                                               double refill_per_s, double cost) {
    auto r = co_await eval(script, cmd(std::move(key)),
                           cmd(format_double(capacity), format_double(refill_per_s), format_double(cost)));
    if (!r) co_return r.error();
    if (r->type != REDIS_REPLY_ARRAY || r->elements.size() != 4) co_return unexpected("token bucket");
    BucketResult out;
    out.allowed = r->elements[0].integer == 1;
    out.remaining = std::strtod(r->elements[1].str.c_str(), nullptr);
    out.retry_after = Ms{r->elements[2].integer};
    out.reset_after = Ms{r->elements[3].integer};
    co_return out;
  }

  asio::awaitable<Result<Reply>> call(std::vector<std::string> args) {
    co_return check(co_await client_->async_command(std::move(args), asio::use_awaitable));
  }

  // EVALSHA first (the common case: a short command); EVAL when the server
  // does not have the script yet, which also caches it there.
  asio::awaitable<Result<Reply>> eval(const Script& script, std::vector<std::string> keys,
                                      std::vector<std::string> args) {
    auto argv = cmd("EVALSHA", script.sha, std::to_string(keys.size()));
    for (auto& k : keys) argv.push_back(std::move(k));
    for (auto& a : args) argv.push_back(std::move(a));
    auto r = co_await client_->async_command(argv, asio::use_awaitable);
    if (r && r->is_error() && r->str.starts_with("NOSCRIPT")) {
      argv[0] = "EVAL";
      argv[1] = script.text;
      r = co_await client_->async_command(std::move(argv), asio::use_awaitable);
    }
    co_return check(std::move(r));
  }

  std::shared_ptr<Client> client_;
  std::atomic<bool> has_getdel_{true};
};

}  // namespace

Result<std::unique_ptr<Kv>> make_redis_kv(asio::any_io_executor ex, const StorageSettings& settings) {
  auto url = parse_redis_url(settings.redis_url);
  if (!url) return url.error();
  // hiredis writes with write(2): a peer that went away would raise SIGPIPE
  // and kill the process instead of returning EPIPE.
  static std::once_flag ignore_sigpipe;
  std::call_once(ignore_sigpipe, [] { std::signal(SIGPIPE, SIG_IGN); });
  auto timeout = std::chrono::milliseconds(std::max<std::uint32_t>(1, settings.redis_timeout_ms));
  auto client = std::make_shared<Client>(std::move(ex), std::move(*url), timeout);
  return std::unique_ptr<Kv>(std::make_unique<RedisKv>(std::move(client)));
}

}  // namespace alou::storage
