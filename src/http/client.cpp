#include "alou/http/client.hpp"

#include "alou/core/fd.hpp"
#include "alou/core/metrics.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>

namespace alou::http {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

constexpr auto kAwait = net::as_tuple(net::use_awaitable);
constexpr std::size_t kPieceBytes = 16 * 1024;
constexpr std::size_t kReadBytes = 8 * 1024;
constexpr std::uint32_t kHeaderLimit = 64 * 1024;
// Upstreams close idle keep-alive connections after a while; older pooled
// connections are dropped rather than risked.
constexpr std::chrono::seconds kMaxIdleAge{90};
constexpr std::chrono::seconds kPeekAfterIdle{1};
constexpr std::string_view kUserAgent = "alou/0.1";

using Parser = bhttp::response_parser<bhttp::buffer_body>;

struct Origin {
  bool tls = false;
  std::string host;         // name or IP address, decoded, without brackets
  std::uint16_t port = 0;
  std::string host_header;  // host[:port] as written in the URL
  std::string target;       // path and query
  std::string key;          // scheme://host:port: the pool key and the name errors use
};

Error invalid_url(std::string message) { return {500, "invalid_upstream_url", std::move(message)}; }

Result<Origin> parse_url(std::string_view url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return invalid_url("upstream URL does not parse");
  const boost::urls::url_view& u = *parsed;
  Origin o;
  if (u.scheme_id() == boost::urls::scheme::https) {
    o.tls = true;
  } else if (u.scheme_id() != boost::urls::scheme::http) {
    return invalid_url("upstream URL scheme is not http or https");
  }
  o.host = u.host_address();
  if (o.host.empty()) return invalid_url("upstream URL has no host");
  o.port = u.has_port() && u.port_number() != 0 ? u.port_number() : (o.tls ? 443 : 80);
  const auto hp = u.encoded_host_and_port();
  o.host_header.assign(hp.data(), hp.size());
  const auto t = u.encoded_target();
  o.target.assign(t.data(), t.size());
  if (o.target.empty() || o.target.front() != '/') o.target.insert(0, "/");
  const bool ipv6 = u.host_type() == boost::urls::host_type::ipv6;
  o.key = std::string(o.tls ? "https://" : "http://") + (ipv6 ? "[" + o.host + "]" : o.host) + ":" +
          std::to_string(o.port);
  return o;
}

// The request as it goes on the wire: one head string and the body, sent
// in one gather write (see wire.hpp).
struct OutMessage {
  std::string head;
  std::string body;
};

bool has_header(const ClientRequest& req, std::string_view name) {
  for (const auto& [k, v] : req.headers) {
    if (beast::iequals(k, name)) return true;
  }
  return false;
}

bool has_line_break(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

Result<OutMessage> build_request(ClientRequest& req, const Origin& o) {
  OutMessage m;
  const auto method = bhttp::to_string(req.method);
  m.head.reserve(256 + o.target.size());
  m.head.append(method.data(), method.size()).append(" ").append(o.target).append(" HTTP/1.1\r\n");
  for (const auto& [name, value] : req.headers) {
    // A line break would end the field early and let the rest forge
    // fields or a second request: refused (never with the value, which may
    // be a key).
    if (name.empty() || has_line_break(name) || has_line_break(value)) {
      return Error{500, "invalid_upstream_header", "an upstream request header has a line break"};
    }
    m.head.append(name).append(": ").append(value).append("\r\n");
  }
  if (!has_header(req, "host")) m.head.append("Host: ").append(o.host_header).append("\r\n");
  if (!has_header(req, "user-agent")) m.head.append("User-Agent: ").append(kUserAgent).append("\r\n");
  const bool payload_method = req.method == Verb::post || req.method == Verb::put || req.method == Verb::patch;
  if (payload_method || !req.body.empty()) {
    m.head.append("Content-Length: ").append(std::to_string(req.body.size())).append("\r\n");
  }
  m.head.append("\r\n");
  m.body = std::move(req.body);
  return m;
}

const boost::system::error_category& http_category() {
  static const boost::system::error_category& c = make_error_code(bhttp::error::bad_version).category();
  return c;
}

// Never names the path, query or headers: they may carry credentials.
Error io_error(std::string_view key, error_code ec, std::string_view during) {
  std::string where = "upstream " + std::string(key);
  if (ec == beast::error::timeout) {
    return {504, "upstream_timeout", where + " timed out " + std::string(during)};
  }
  if (ec == net::error::operation_aborted) {
    return {502, "upstream_unreachable", where + ": cancelled " + std::string(during)};
  }
  if (ec.category() == http_category() && ec != bhttp::error::end_of_stream) {
    return {502, "upstream_protocol",
            where + ": malformed response (" + ec.message() + ") " + std::string(during)};
  }
  return {502, "upstream_unreachable", where + ": " + ec.message() + " " + std::string(during)};
}

}  // namespace

// One upstream connection; used by one request at a time.
struct Connection {
  Connection(const net::any_io_executor& ex, ssl::context* ctx) {
    if (ctx != nullptr) {
      tls.emplace(ex, *ctx);
    } else {
      plain.emplace(ex);
    }
    // Beast reads at most the buffer's free capacity (512 bytes for an empty
    // one): a typical response head and body, or a burst of stream chunks,
    // in one recv rather than several (and a recv that fills its buffer
    // makes the next one on the socket a speculative EAGAIN).
    buffer.reserve(kReadBytes);
  }
  beast::tcp_stream& tcp() { return tls ? beast::get_lowest_layer(*tls) : *plain; }

  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  // Where response bodies are read into, piece by piece: allocated once per
  // connection (not per request) and never zero-filled.
  std::unique_ptr<char[]> piece{new char[kPieceBytes]};
  Clock::time_point idle_since;
};

namespace {

// An idle pooled connection is usable if the peer has neither closed it nor
// sent anything (a close_notify, garbage): a non-blocking peek would block.
bool still_usable(Connection& c) {
  const auto idle = Clock::now() - c.idle_since;
  if (idle > kMaxIdleAge) return false;
  auto& sock = c.tcp().socket();
  if (!sock.is_open()) return false;
  // Back in use within a second (the busy case): not peeked, which would
  // cost a syscall per request. Had the upstream closed it meanwhile, the
  // request fails before any byte of an answer and open() sends it again
  // on a fresh connection.
  if (idle < kPeekAfterIdle) return true;
  // One recv(MSG_PEEK | MSG_DONTWAIT) on the descriptor: no mode switches
  // (each a syscall) on the hot path.
  char byte = 0;
  const ssize_t n = ::recv(sock.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

struct Client::Impl {
  Impl(net::any_io_executor e, ClientOptions o, metrics::Registry* m)
      : ex(std::move(e)), opts(std::move(o)) {
    ssl_ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                        ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    error_code ec;
    if (opts.ca_file.empty()) {
      ssl_ctx.set_default_verify_paths(ec);
    } else {
      ssl_ctx.load_verify_file(opts.ca_file, ec);
    }
    if (ec) {
      tls_error = Error{500, "upstream_tls_config", "cannot load CA certificates: " + ec.message()};
    }
    if (m != nullptr) {
      constexpr std::string_view kOpened = "alou_upstream_connections_opened_total";
      constexpr std::string_view kOpenedHelp = "Upstream connections opened";
      opened_http = &m->counter(kOpened, kOpenedHelp, {{"scheme", "http"}});
      opened_https = &m->counter(kOpened, kOpenedHelp, {{"scheme", "https"}});
      reused = &m->counter("alou_upstream_pool_reuse_total",
                           "Upstream requests sent on a pooled keep-alive connection");
    }
  }

  // The parsed URL, from a small cache (the same few URLs come back on
  // every request).
  Result<std::shared_ptr<const Origin>> origin_of(const std::string& url);
  std::unique_ptr<Connection> take_idle(const std::string& key);
  void put_idle(const std::string& key, std::unique_ptr<Connection> c);
  net::awaitable<Result<tcp::resolver::results_type>> resolve(const Origin& o,
                                                              Clock::time_point deadline);
  net::awaitable<Result<std::unique_ptr<Connection>>> connect(const Origin& o,
                                                              Clock::time_point total_deadline);
  net::awaitable<Result<std::unique_ptr<ClientStream::State>>> open(
      const std::shared_ptr<Impl>& self, ClientRequest& req);
  net::awaitable<Result<std::unique_ptr<ClientStream::State>>> open_guarded(
      const std::shared_ptr<Impl>& self, ClientRequest& req);

  const net::any_io_executor ex;
  const ClientOptions opts;
  ssl::context ssl_ctx{ssl::context::tls_client};
  std::optional<Error> tls_error;
  metrics::Counter* opened_http = nullptr;
  metrics::Counter* opened_https = nullptr;
  metrics::Counter* reused = nullptr;

  struct DnsEntry {
    tcp::resolver::results_type results;
    Clock::time_point expires;
  };
  std::mutex mu;  // guards idle, dns and origins; never held across an await
  std::unordered_map<std::string, std::vector<std::unique_ptr<Connection>>> idle;
  std::unordered_map<std::string, DnsEntry> dns;
  std::unordered_map<std::string, std::shared_ptr<const Origin>> origins;  // emptied past kMaxOrigins
};

Result<std::shared_ptr<const Origin>> Client::Impl::origin_of(const std::string& url) {
  constexpr std::size_t kMaxOrigins = 256;
  {
    const std::lock_guard lock(mu);
    if (const auto it = origins.find(url); it != origins.end()) return it->second;
  }
  Result<Origin> parsed = parse_url(url);
  if (!parsed) return parsed.error();
  auto o = std::make_shared<const Origin>(std::move(*parsed));
  const std::lock_guard lock(mu);
  if (origins.size() >= kMaxOrigins) origins.clear();
  origins.emplace(url, o);
  return o;
}

struct ClientStream::State {
  State(std::shared_ptr<Client::Impl> i, std::string k, std::unique_ptr<Connection> c,
        Clock::time_point d, bool head)
      : impl(std::move(i)), key(std::move(k)), conn(std::move(c)), deadline(d) {
    parser.header_limit(kHeaderLimit);
    parser.body_limit(boost::none);  // streams may be long; request() applies its own limit
    if (head) parser.skip(true);
  }

  std::shared_ptr<Client::Impl> impl;
  std::string key;
  std::unique_ptr<Connection> conn;
  Clock::time_point deadline;
  Parser parser;
  bool done = false;
  bool finish = false;  // finish() called: drain the rest, then pool
  std::optional<Error> failed;
};

std::unique_ptr<Connection> Client::Impl::take_idle(const std::string& key) {
  for (;;) {
    std::unique_ptr<Connection> c;
    {
      const std::lock_guard lock(mu);
      const auto it = idle.find(key);
      if (it == idle.end() || it->second.empty()) return nullptr;
      c = std::move(it->second.back());
      it->second.pop_back();
    }
    if (still_usable(*c)) return c;
    // A dead one is closed here, outside the lock.
  }
}

void Client::Impl::put_idle(const std::string& key, std::unique_ptr<Connection> c) {
  const auto now = Clock::now();
  c->idle_since = now;
  std::vector<std::unique_ptr<Connection>> evicted;  // closed after the lock is released
  {
    const std::lock_guard lock(mu);
    auto& list = idle[key];
    // Oldest first: drop the ones too old to trust.
    auto keep = list.begin();
    while (keep != list.end() && now - (*keep)->idle_since > kMaxIdleAge) ++keep;
    std::move(list.begin(), keep, std::back_inserter(evicted));
    list.erase(list.begin(), keep);
    if (list.size() < opts.max_idle_per_host) {
      list.push_back(std::move(c));
    } else {
      evicted.push_back(std::move(c));
    }
  }
}

net::awaitable<Result<tcp::resolver::results_type>> Client::Impl::resolve(
    const Origin& o, Clock::time_point deadline) {
  const auto now = Clock::now();
  {
    const std::lock_guard lock(mu);
    const auto it = dns.find(o.key);
    if (it != dns.end() && it->second.expires > now) co_return it->second.results;
  }
  const auto executor = co_await net::this_coro::executor;
  // The resolver has no deadline of its own: a timer cancels it. (Asio runs
  // getaddrinfo on a helper thread, so a lookup already under way still
  // finishes first; the deadline bounds the wait for a queued one.)
  auto resolver = std::make_shared<tcp::resolver>(executor);
  net::steady_timer timer(executor, deadline);
  std::weak_ptr<tcp::resolver> weak = resolver;
  auto on_deadline = [weak](error_code ec) {
    if (ec) return;
    if (auto r = weak.lock()) r->cancel();
  };
  timer.async_wait(std::move(on_deadline));
  const std::string port = std::to_string(o.port);
  const auto [ec, results] = co_await resolver->async_resolve(o.host, port, kAwait);
  timer.cancel();
  if (ec == net::error::operation_aborted && Clock::now() >= deadline) {
    co_return io_error(o.key, beast::error::timeout, "while resolving");
  }
  if (ec) co_return io_error(o.key, ec, "while resolving");
  {
    const std::lock_guard lock(mu);
    dns[o.key] = DnsEntry{results, Clock::now() + opts.dns_ttl};
  }
  co_return results;
}

net::awaitable<Result<std::unique_ptr<Connection>>> Client::Impl::connect(
    const Origin& o, Clock::time_point total_deadline) {
  if (o.tls && tls_error) co_return *tls_error;
  const auto deadline = std::min(Clock::now() + opts.connect_timeout, total_deadline);
  const Result<tcp::resolver::results_type> endpoints = co_await resolve(o, deadline);
  if (!endpoints) co_return endpoints.error();

  auto conn = std::make_unique<Connection>(ex, o.tls ? &ssl_ctx : nullptr);
  beast::tcp_stream& stream = conn->tcp();
  stream.expires_at(deadline);
  const auto [ec, endpoint] = co_await stream.async_connect(*endpoints, kAwait);
  stream.expires_never();
  (void)endpoint;
  if (ec) co_return io_error(o.key, ec, "while connecting");
  set_cloexec(stream.socket().native_handle());  // Asio opens sockets without SOCK_CLOEXEC
  error_code ignored;
  stream.socket().set_option(tcp::no_delay(true), ignored);
  if (auto* opened = o.tls ? opened_https : opened_http) opened->inc();

  if (o.tls) {
    auto& tls = *conn->tls;
    error_code not_ip;
    net::ip::make_address(o.host, not_ip);
    if (not_ip && SSL_set_tlsext_host_name(tls.native_handle(), o.host.c_str()) != 1) {
      co_return Error{502, "upstream_unreachable", "upstream " + o.key + ": cannot set SNI"};
    }
    if (opts.verify_peer) {
      tls.set_verify_mode(ssl::verify_peer);
      tls.set_verify_callback(ssl::host_name_verification(o.host));
    } else {
      tls.set_verify_mode(ssl::verify_none);
    }
    stream.expires_at(deadline);
    const auto [hec] = co_await tls.async_handshake(ssl::stream_base::client, kAwait);
    stream.expires_never();
    if (hec) {
      Error e = io_error(o.key, hec, "during the TLS handshake");
      const long verify = SSL_get_verify_result(tls.native_handle());
      if (opts.verify_peer && verify != X509_V_OK) {
        e.message += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
      }
      co_return e;
    }
  }
  co_return std::move(conn);
}

net::awaitable<Result<std::unique_ptr<ClientStream::State>>> Client::Impl::open(
    const std::shared_ptr<Impl>& self, ClientRequest& req) {
  const Result<std::shared_ptr<const Origin>> origin = origin_of(req.url);
  if (!origin) co_return origin.error();
  const Origin& o = **origin;
  const auto deadline = Clock::now() + opts.total_timeout;
  const bool head = req.method == Verb::head;
  const Result<OutMessage> built = build_request(req, o);
  if (!built) co_return built.error();
  const OutMessage& msg = *built;

  // A pooled connection the upstream closed meanwhile fails on the write or
  // before the first response byte: only then is the request sent again, once,
  // on a fresh connection (the upstream cannot have answered it).
  for (bool first = true;; first = false) {
    std::unique_ptr<Connection> conn = first ? take_idle(o.key) : nullptr;
    const bool pooled = conn != nullptr;
    if (pooled) {
      if (reused != nullptr) reused->inc();
    } else {
      Result<std::unique_ptr<Connection>> fresh = co_await connect(o, deadline);
      if (!fresh) co_return fresh.error();
      conn = std::move(*fresh);
    }
    auto state = std::make_unique<ClientStream::State>(self, o.key, std::move(conn), deadline, head);
    Connection& c = *state->conn;
    c.buffer.clear();
    c.tcp().expires_at(std::min(Clock::now() + opts.first_byte_timeout, deadline));
    // The TLS and plain branches are written out here rather than in helper
    // coroutines: each nested coroutine is a frame allocated, resumed and
    // freed per operation on the hot path.
    const std::array<net::const_buffer, 2> out{net::buffer(msg.head), net::buffer(msg.body)};
    error_code wec;
    if (c.tls) {
      auto [ec, sent] = co_await net::async_write(*c.tls, out, kAwait);
      wec = ec;
    } else {
      auto [ec, sent] = co_await net::async_write(*c.plain, out, kAwait);
      wec = ec;
    }
    if (wec) {
      c.tcp().expires_never();
      if (pooled && wec != beast::error::timeout && wec != net::error::operation_aborted) continue;
      co_return io_error(o.key, wec, "while sending the request");
    }
    error_code rec;
    std::size_t n = 0;
    if (c.tls) {
      auto [ec, got] = co_await bhttp::async_read_header(*c.tls, c.buffer, state->parser, kAwait);
      rec = ec;
      n = got;
    } else {
      auto [ec, got] = co_await bhttp::async_read_header(*c.plain, c.buffer, state->parser, kAwait);
      rec = ec;
      n = got;
    }
    c.tcp().expires_never();
    if (rec) {
      const bool nothing_received = n == 0 && c.buffer.size() == 0 && !state->parser.got_some();
      if (pooled && nothing_received && rec != beast::error::timeout &&
          rec != net::error::operation_aborted) {
        continue;
      }
      co_return io_error(o.key, rec, "waiting for the response head");
    }
    state->done = state->parser.is_done();
    co_return std::move(state);
  }
}

net::awaitable<Result<std::unique_ptr<ClientStream::State>>> Client::Impl::open_guarded(
    const std::shared_ptr<Impl>& self, ClientRequest& req) {
  // A cancelled coroutine throws at its next await (asio's throw_if_cancelled);
  // the connection in flight has been closed by then.
  std::optional<Error> thrown;
  try {
    co_return co_await open(self, req);
  } catch (const boost::system::system_error& e) {
    thrown = io_error("request", e.code(), "");
  }
  co_return *thrown;
}

// ---- ClientStream

ClientStream::ClientStream(std::unique_ptr<State> state) : state_(std::move(state)) {}

ClientStream::~ClientStream() {
  if (!state_) return;  // moved into drain()
  State& s = *state_;
  if (s.finish && !s.done && !s.failed && s.conn && s.conn->tcp().socket().is_open()) {
    auto ex = s.conn->tcp().get_executor();
    net::co_spawn(std::move(ex), drain(std::move(state_)), net::detached);
    return;
  }
  if (s.done && !s.failed && s.conn && s.parser.keep_alive() && s.conn->buffer.size() == 0 &&
      s.conn->tcp().socket().is_open()) {
    s.impl->put_idle(s.key, std::move(s.conn));
  }
}

int ClientStream::status() const noexcept { return static_cast<int>(state_->parser.get().result_int()); }

const bhttp::fields& ClientStream::headers() const noexcept { return state_->parser.get().base(); }

bool ClientStream::done() const noexcept { return state_->done; }

void ClientStream::finish() noexcept { state_->finish = true; }

net::awaitable<void> ClientStream::drain(std::unique_ptr<State> state) {
  state->finish = false;
  state->deadline = std::min(state->deadline, Clock::now() + kFinishTime);
  // Its destructor pools the connection if the body ended cleanly.
  ClientStream rest(std::move(state));
  std::string sink;
  while (!rest.done() && sink.size() <= kFinishBytes) {
    std::optional<Error> failed = co_await rest.next_into(sink);
    if (failed) co_return;  // closed, not pooled
  }
  if (!rest.done()) rest.cancel();  // more than kFinishBytes after the caller's end
}

void ClientStream::cancel() noexcept {
  State& s = *state_;
  if (!s.failed) {
    s.failed = Error{502, "upstream_unreachable", "upstream " + s.key + ": request cancelled"};
  }
  if (s.conn) {
    // Closing (not destroying) the socket completes a pending read at once.
    error_code ignored;
    auto& sock = s.conn->tcp().socket();
    sock.shutdown(tcp::socket::shutdown_both, ignored);
    sock.close(ignored);
  }
}

net::awaitable<Result<std::string>> ClientStream::next() {
  std::string out;
  std::optional<Error> error;
  error = co_await next_into(out);
  if (error) co_return std::move(*error);
  co_return std::move(out);
}

net::awaitable<std::optional<Error>> ClientStream::next_into(std::string& out) {
  State& s = *state_;
  if (s.failed) co_return s.failed;
  if (s.done) co_return std::nullopt;
  Connection& c = *s.conn;
  std::optional<Error> error;
  try {
    for (;;) {
      const auto now = Clock::now();
      if (now >= s.deadline) {
        error = io_error(s.key, beast::error::timeout, "reading the response body");
        break;
      }
      auto& body = s.parser.get().body();
      body.data = c.piece.get();
      body.size = kPieceBytes;
      c.tcp().expires_at(std::min(now + s.impl->opts.idle_read_timeout, s.deadline));
      error_code ec;
      if (c.tls) {
        auto [e, got] = co_await bhttp::async_read_some(*c.tls, c.buffer, s.parser, kAwait);
        ec = e;
      } else {
        auto [e, got] = co_await bhttp::async_read_some(*c.plain, c.buffer, s.parser, kAwait);
        ec = e;
      }
      c.tcp().expires_never();
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec == ssl::error::stream_truncated && s.parser.need_eof()) {
        // A body delimited by the close, from a server that skipped close_notify.
        ec = {};
        s.parser.put_eof(ec);
      }
      if (ec) {
        error = io_error(s.key, ec, "reading the response body");
        break;
      }
      const std::size_t got = kPieceBytes - body.size;
      s.done = s.parser.is_done();
      if (got > 0) {
        out.append(c.piece.get(), got);
        co_return std::nullopt;
      }
      if (s.done) co_return std::nullopt;
    }
  } catch (const boost::system::system_error& e) {
    error = io_error(s.key, e.code(), "reading the response body");
  }
  if (!s.failed) s.failed = std::move(*error);  // cancel() may have set it first
  error_code ignored;
  c.tcp().socket().close(ignored);
  co_return s.failed;
}

// ---- Client

Client::Client(net::any_io_executor ex, ClientOptions opts, metrics::Registry* metrics)
    : impl_(std::make_shared<Impl>(std::move(ex), std::move(opts), metrics)) {}

Client::~Client() = default;

net::awaitable<Result<std::unique_ptr<ClientStream>>> Client::stream(ClientRequest req) {
  const std::shared_ptr<Impl> impl = impl_;
  Result<std::unique_ptr<ClientStream::State>> opened = co_await impl->open_guarded(impl, req);
  if (!opened) co_return opened.error();
  std::unique_ptr<ClientStream> s(new ClientStream(std::move(*opened)));
  co_return std::move(s);
}

net::awaitable<Result<ClientResponse>> Client::request(ClientRequest req) {
  const std::shared_ptr<Impl> impl = impl_;
  Result<std::unique_ptr<ClientStream::State>> opened = co_await impl->open_guarded(impl, req);
  if (!opened) co_return opened.error();
  ClientStream s(std::move(*opened));
  const std::size_t limit = impl->opts.max_response_bytes;
  auto too_large = [&] {
    s.cancel();
    return Error{502, "upstream_protocol",
                 "upstream " + s.state_->key + ": response body exceeds " + std::to_string(limit) +
                     " bytes"};
  };
  if (const auto length = s.state_->parser.content_length(); length && *length > limit) {
    co_return too_large();
  }
  ClientResponse response;
  response.status = s.status();
  if (const auto length = s.state_->parser.content_length()) response.body.reserve(*length);
  // The body is read straight into the response (no piece copied twice).
  while (!s.done()) {
    std::optional<Error> failed;
    failed = co_await s.next_into(response.body);
    if (failed) co_return std::move(*failed);
    if (response.body.size() > limit) co_return too_large();
  }
  // The parser is done with its header: moved, not copied.
  response.headers = std::move(s.state_->parser.get().base());
  co_return std::move(response);
}

}  // namespace alou::http
