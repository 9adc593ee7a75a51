#include "alou/http/server.hpp"

#include "alou/core/fd.hpp"
#include "alou/core/metrics.hpp"
#include "alou/core/random.hpp"
#include "alou/http/exchange.hpp"
#include "alou/http/websocket.hpp"
#include "connection.hpp"
#include "wire.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <mutex>
#include <optional>
#include <unordered_set>

namespace alou::http {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace ws = beast::websocket;
using tcp = net::ip::tcp;

namespace {

constexpr auto kAwait = net::as_tuple(net::use_awaitable);
constexpr std::chrono::seconds kWriteTimeout{30};

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

class SessionBase : public std::enable_shared_from_this<SessionBase> {
 public:
  virtual ~SessionBase() = default;
  virtual net::any_io_executor session_executor() = 0;
  virtual void begin_shutdown() = 0;  // on the session's strand
  virtual void force_close() = 0;     // on the session's strand
};

// State shared by the listener and every session.
struct Shared {
  Shared(const ServerSettings& s, Router router, std::vector<std::shared_ptr<Filter>> filters,
         metrics::Registry& m)
      : settings(s),
        pipeline(std::move(router), std::move(filters)),
        connections_gauge(m.gauge("alou_http_connections", "Open client connections")),
        in_flight(m.gauge("alou_http_requests_in_flight", "Requests being handled")),
        rejected(m.counter("alou_http_connections_rejected_total",
                           "Connections closed at once because max_connections was reached")),
        bad_requests(m.counter("alou_http_bad_requests_total",
                               "Requests refused before routing (malformed, too large, timed out)")) {}

  const ServerSettings settings;
  Pipeline pipeline;
  metrics::Gauge& connections_gauge;
  metrics::Gauge& in_flight;
  metrics::Counter& rejected;
  metrics::Counter& bad_requests;
  std::optional<net::ssl::context> ssl;

  std::mutex mu;
  std::unordered_set<SessionBase*> sessions;
  std::atomic<std::size_t> count{0};
  std::atomic<bool> stopping{false};

  void add(SessionBase* s) {
    std::lock_guard lock(mu);
    sessions.insert(s);
    count.fetch_add(1);
    connections_gauge.add(1);
  }
  void remove(SessionBase* s) {
    std::lock_guard lock(mu);
    sessions.erase(s);
    count.fetch_sub(1);
    connections_gauge.add(-1);
  }
  // Posts fn(session) to each live session's strand.
  template <class Fn>
  void for_each_session(Fn fn) {
    // Take references under the lock, post outside it: dropping the last
    // reference runs ~Session, which locks `mu` itself.
    std::vector<std::shared_ptr<SessionBase>> live;
    {
      std::lock_guard lock(mu);
      live.reserve(sessions.size());
      for (auto* s : sessions) {
        if (auto sp = s->weak_from_this().lock()) live.push_back(std::move(sp));
      }
    }
    for (auto& sp : live) {
      auto ex = sp->session_executor();
      net::post(ex, [sp, fn] { fn(*sp); });
    }
  }
};

template <class Stream>
constexpr bool kIsTls = std::is_same_v<Stream, TlsStream>;

template <class Stream>
class WebSocketImpl;

template <class Stream>
class Session final : public SessionBase, public Connection {
 public:
  template <class... Args>
  Session(std::shared_ptr<Shared> shared, tcp::endpoint remote, Args&&... args)
      : owner_(std::move(shared)), shared_(*owner_), stream_(std::forward<Args>(args)...), remote_(std::move(remote)) {
    shared_.add(this);
  }
  ~Session() override { shared_.remove(this); }

  net::awaitable<void> run() {
    auto& lowest = beast::get_lowest_layer(stream_);
    const auto& s = shared_.settings;
    if constexpr (kIsTls<Stream>) {
      lowest.expires_after(std::chrono::milliseconds(s.header_timeout_ms));
      auto [ec] = co_await stream_.async_handshake(net::ssl::stream_base::server, kAwait);
      if (ec) co_return;
    }
    bool first = true;
    while (!shutting_down_) {
      // Wait for the first byte with the idle timeout, then give the client
      // header_timeout_ms for the whole head: a slow client holds only its
      // own connection, never a thread.
      if (watch_.armed || watch_.completed) {
        // The read armed to watch the last request is this request's read.
        if (watch_.armed) {
          state_ = State::kIdle;
          if (!co_await wait_watch(first ? s.header_timeout_ms : s.idle_timeout_ms)) break;
        }
        watch_.completed = false;
        if (watch_.ec) break;
      } else if (buffer_.size() == 0) {
        state_ = State::kIdle;
        // An idle keep-alive connection keeps only a small buffer: 10k idle
        // clients must not pin 10k request-sized buffers.
        buffer_.shrink_to_fit();
        lowest.expires_after(std::chrono::milliseconds(first ? s.header_timeout_ms : s.idle_timeout_ms));
        auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(first ? 4096 : 512), kAwait);
        if (ec) break;
        buffer_.commit(n);
      }
      state_ = State::kReading;
      bhttp::request_parser<bhttp::string_body> parser;
      parser.header_limit(s.max_header_bytes);
      parser.body_limit(s.max_body_bytes);
      lowest.expires_after(std::chrono::milliseconds(s.header_timeout_ms));
      // Errors are built into `refusal` and sent after the branch: no class
      // temporaries inside co_await expressions (GCC 12 destroys them twice).
      std::optional<Error> refusal;
      std::string target;
      {
        auto [ec, n] = co_await bhttp::async_read_header(stream_, buffer_, parser, kAwait);
        if (ec) {
          if (ec == bhttp::error::header_limit) {
            refusal = Error{431, "headers_too_large", "request headers exceed the limit"};
          } else if (ec == bhttp::error::body_limit) {
            // Beast checks a declared Content-Length against the body
            // limit while parsing the head.
            refusal = Error{413, "body_too_large",
                            "request body exceeds max_body_bytes (" + std::to_string(s.max_body_bytes) + ")"};
          } else if (ec == beast::error::timeout) {
            // The stream closed the socket when the deadline fired: the
            // client only sees the connection close.
          } else if (ec != bhttp::error::end_of_stream && ec != net::error::eof &&
                     ec != net::error::operation_aborted && ec != net::error::connection_reset) {
            refusal = Error::bad_request("malformed HTTP request: " + ec.message(), "bad_http");
          }
          if (refusal) co_await refuse(*refusal, target);
          break;
        }
      }
      const auto& head = parser.get();
      target = std::string(head.target());
      if (const auto len = parser.content_length(); len && *len > s.max_body_bytes) {
        refusal = Error{413, "body_too_large",
                        "request body of " + std::to_string(*len) + " bytes exceeds max_body_bytes (" +
                            std::to_string(s.max_body_bytes) + ")"};
        co_await refuse(*refusal, target);
        break;
      }
      if (!parser.is_done()) {
        if (beast::iequals(head[bhttp::field::expect], "100-continue")) {
          static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
          lowest.expires_after(kWriteTimeout);
          auto [ec, n] = co_await net::async_write(stream_, net::buffer(kContinue), kAwait);
          if (ec) break;
        }
        lowest.expires_after(std::chrono::milliseconds(s.body_timeout_ms));
        auto [ec, n] = co_await bhttp::async_read(stream_, buffer_, parser, kAwait);
        if (ec) {
          if (ec == bhttp::error::body_limit) {
            refusal = Error{413, "body_too_large", "request body exceeds max_body_bytes"};
          } else if (ec == beast::error::timeout) {
            // Socket already closed by the deadline (see above).
          } else if (ec != net::error::eof && ec != net::error::operation_aborted) {
            refusal = Error::bad_request("malformed request body: " + ec.message(), "bad_http");
          }
          if (refusal) co_await refuse(*refusal, target);
          break;
        }
      }
      lowest.expires_never();
      state_ = State::kBusy;
      Request req = parser.release();
      Exchange ex(req, *this, remote_);
      shared_.in_flight.add(1);
      Response res = co_await shared_.pipeline.handle(ex);
      shared_.in_flight.add(-1);
      if (upgraded_) {
        shared_.pipeline.complete(ex);
        co_return;
      }
      if (Exchange::is_streamed(res)) {
        shared_.pipeline.complete(ex);
        if (!req.keep_alive() || close_after_ || shutting_down_) break;
      } else {
        const bool keep = req.keep_alive() && !close_after_ && !shutting_down_;
        res.keep_alive(keep);
        if (req.method() == Verb::head) {
          res.prepare_payload();
          res.body().clear();
        } else {
          res.prepare_payload();
        }
        // Head and body in one gather write (see wire.hpp).
        std::string res_head;
        res_head.reserve(256);
        wire::append_response_head(res_head, res);
        const std::array<net::const_buffer, 2> out{net::buffer(res_head), net::buffer(res.body())};
        lowest.expires_after(kWriteTimeout);
        auto [ec, n] = co_await net::async_write(stream_, out, kAwait);
        ex.sent_status = res.result_int();
        ex.sent_bytes = n;
        shared_.pipeline.complete(ex);
        if (ec || !keep) break;
      }
      first = false;
    }
    if (watch_.armed) {
      // Nothing may still read into buffer_ once this coroutine is gone.
      beast::get_lowest_layer(stream_).socket().cancel();
      co_await wait_watch(2000);
    }
    co_await close_gracefully();
  }

  void arm_watch(std::function<void()> on_gone) override {
    watch_.on_gone = std::move(on_gone);
    watch_.watching = true;
    if (!watch_.armed && !watch_.completed) start_watch_read();
  }

  void disarm_watch() override {
    watch_.watching = false;
    watch_.on_gone = nullptr;
  }

  void interrupt() override { interrupt_.emit(net::cancellation_type::terminal); }
  // Bound to the session's coroutine (spawn): what interrupt() cancels.
  net::cancellation_slot interrupt_slot() { return interrupt_.slot(); }

  // ---- SessionBase
  net::any_io_executor session_executor() override { return stream_.get_executor(); }

  void begin_shutdown() override {
    shutting_down_ = true;
    if (state_ == State::kIdle || state_ == State::kReading) beast::get_lowest_layer(stream_).cancel();
    if (stream_control_) stream_control_->shutdown();
    if (ws_socket_) ws_socket_->close();
  }

  void force_close() override {
    boost::system::error_code ec;
    if (ws_socket_) ws_socket_->close(ec);
    beast::get_lowest_layer(stream_).socket().close(ec);
  }

  // ---- Connection
  net::any_io_executor executor() override { return stream_.get_executor(); }
  Pipeline& pipeline() override { return shared_.pipeline; }
  const ServerSettings& settings() const override { return shared_.settings; }

  net::awaitable<boost::system::error_code> write_head(Response& res, std::string_view first_chunk) override {
    std::string head;
    head.reserve(256);
    wire::append_response_head(head, res);
    if (!first_chunk.empty()) {
      char size[20];
      const auto r = std::to_chars(size, size + sizeof size, first_chunk.size(), 16);
      head.append(size, r.ptr).append("\r\n");
    }
    const std::array<net::const_buffer, 3> out{
        net::buffer(head), net::buffer(first_chunk),
        net::buffer(first_chunk.empty() ? std::string_view() : std::string_view("\r\n"))};
    beast::get_lowest_layer(stream_).expires_after(kWriteTimeout);
    auto [ec, n] = co_await net::async_write(stream_, out, kAwait);
    beast::get_lowest_layer(stream_).expires_never();
    co_return ec;
  }

  net::awaitable<boost::system::error_code> write_buffers(const std::vector<net::const_buffer>& bufs) override {
    auto [ec, n] = co_await net::async_write(stream_, bufs, kAwait);
    co_return ec;
  }

  // One read with a plain completion handler (no coroutine frame): data is
  // kept for the next request; an error while a handler runs means the
  // client left.
  void start_watch_read() {
    watch_.armed = true;
    watch_.completed = false;
    watch_.ec = {};
    if (buffer_.size() > shared_.settings.max_header_bytes) {
      on_watch(net::error::no_buffer_space, 0);
      return;
    }
    auto self = std::static_pointer_cast<Session>(shared_from_this());
    stream_.async_read_some(buffer_.prepare(4096), [self](boost::system::error_code ec, std::size_t n) {
      self->on_watch(ec, n);
    });
  }

  void on_watch(boost::system::error_code ec, std::size_t n) {
    watch_.armed = false;
    watch_.completed = true;
    watch_.ec = ec;
    if (!ec) buffer_.commit(n);
    if (ec && watch_.watching && watch_.on_gone) {
      auto gone = std::move(watch_.on_gone);
      watch_.on_gone = nullptr;
      gone();
    }
    if (watch_.waiter) watch_.waiter->cancel();
  }

  // Waits for the armed watch read; false if it did not complete in time
  // (the socket is then closed).
  net::awaitable<bool> wait_watch(std::uint32_t timeout_ms) {
    if (!watch_.armed) co_return true;
    if (!watch_.waiter) watch_.waiter.emplace(stream_.get_executor());
    watch_.waiter->expires_after(std::chrono::milliseconds(timeout_ms));
    co_await watch_.waiter->async_wait(kAwait);  // cancelled when the read completes
    if (watch_.armed) {
      // Timed out (or shut down): stop the read and let it finish.
      boost::system::error_code ignored;
      beast::get_lowest_layer(stream_).socket().close(ignored);
      watch_.waiter->expires_after(std::chrono::seconds(5));
      while (watch_.armed) {
        auto [ec2] = co_await watch_.waiter->async_wait(kAwait);
        if (!ec2) break;  // should not happen: the close completes the read
      }
      co_return false;
    }
    co_return true;
  }

  net::awaitable<boost::system::error_code> watch_read() override {
    // Whatever arrives (a pipelined request) is kept for the next request;
    // past the header limit we stop reading and treat the client as gone.
    for (;;) {
      if (buffer_.size() > shared_.settings.max_header_bytes) co_return net::error::no_buffer_space;
      auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(4096), kAwait);
      if (ec) co_return ec;
      buffer_.commit(n);
    }
  }

  void abort() override {
    boost::system::error_code ec;
    beast::get_lowest_layer(stream_).socket().close(ec);
  }

  net::awaitable<std::unique_ptr<WebSocket>> upgrade(Request& req, const WebSocketOptions& opts) override;

  void set_stream_control(StreamControl* c) override { stream_control_ = c; }
  bool shutting_down() const override { return shutting_down_; }
  void close_after_response() override { close_after_ = true; }

  void set_ws_socket(tcp::socket* s) { ws_socket_ = s; }

 private:
  enum class State { kIdle, kReading, kBusy };

  // Answers an error before routing, then the connection closes.
  net::awaitable<void> refuse(const Error& e, std::string_view target) {
    shared_.bad_requests.inc();
    const std::string rid = random_hex(8);
    Response res = make_error_response(format_for_path(target.substr(0, target.find('?'))), e, rid);
    res.keep_alive(false);
    res.prepare_payload();
    beast::get_lowest_layer(stream_).expires_after(kWriteTimeout);
    co_await bhttp::async_write(stream_, res, kAwait);
  }

  net::awaitable<void> close_gracefully() {
    auto& lowest = beast::get_lowest_layer(stream_);
    if (!lowest.socket().is_open()) co_return;
    if constexpr (kIsTls<Stream>) {
      lowest.expires_after(std::chrono::seconds(2));
      co_await stream_.async_shutdown(kAwait);
    }
    boost::system::error_code ec;
    lowest.socket().shutdown(tcp::socket::shutdown_send, ec);
    lowest.socket().close(ec);
  }

  std::shared_ptr<Shared> owner_;  // a session may outlive the Server object
  Shared& shared_;
  Stream stream_;
  tcp::endpoint remote_;
  beast::flat_buffer buffer_;
  State state_ = State::kIdle;
  struct Watch {
    bool armed = false;      // a watch read is pending
    bool completed = false;  // it completed and its result is not consumed yet
    bool watching = false;   // a handler runs: an error means the client left
    boost::system::error_code ec;
    std::function<void()> on_gone;
    std::optional<net::steady_timer> waiter;  // cancelled when the read completes
  } watch_;
  bool shutting_down_ = false;
  bool close_after_ = false;
  bool upgraded_ = false;
  StreamControl* stream_control_ = nullptr;
  tcp::socket* ws_socket_ = nullptr;
  net::cancellation_signal interrupt_;  // see interrupt()
};

template <class Stream>
class WebSocketImpl final : public WebSocket {
 public:
  WebSocketImpl(Session<Stream>& owner, Stream&& stream) : owner_(owner), ws_(std::move(stream)) {
    owner_.set_ws_socket(&beast::get_lowest_layer(ws_).socket());
  }
  ~WebSocketImpl() override { owner_.set_ws_socket(nullptr); }

  ws::stream<Stream>& stream() { return ws_; }

  net::awaitable<Result<WsMessage>> read() override {
    beast::flat_buffer buf;
    auto [ec, n] = co_await ws_.async_read(buf, kAwait);
    if (ec == ws::error::message_too_big) co_return Error{413, "ws_too_large", "WebSocket message too large"};
    if (ec) co_return Error{499, "ws_closed", ec.message()};
    co_return WsMessage{beast::buffers_to_string(buf.data()), !ws_.got_text()};
  }

  net::awaitable<Result<void>> write(std::string_view data, bool binary) override {
    ws_.binary(binary);
    auto [ec, n] = co_await ws_.async_write(net::buffer(data), kAwait);
    if (ec) co_return Error{499, "ws_closed", ec.message()};
    co_return Result<void>{};
  }

  net::awaitable<void> close(std::uint16_t code, std::string_view reason) override {
    if (!ws_.is_open()) co_return;
    co_await ws_.async_close(ws::close_reason(static_cast<ws::close_code>(code), reason), kAwait);
  }

 private:
  Session<Stream>& owner_;
  ws::stream<Stream> ws_;
};

template <class Stream>
net::awaitable<std::unique_ptr<WebSocket>> Session<Stream>::upgrade(Request& req, const WebSocketOptions& opts) {
  // Not an upgrade: the handler answers (through the pipeline, with the
  // request id and CORS headers like any response).
  if (!ws::is_upgrade(req)) co_return nullptr;
  upgraded_ = true;
  beast::get_lowest_layer(stream_).expires_never();
  auto impl = std::make_unique<WebSocketImpl<Stream>>(*this, std::move(stream_));
  auto& w = impl->stream();
  ws::stream_base::timeout t{};
  t.handshake_timeout = std::chrono::seconds(10);
  t.idle_timeout = opts.idle_timeout;
  t.keep_alive_pings = true;
  w.set_option(t);
  w.read_message_max(opts.max_message_bytes);
  auto [ec] = co_await w.async_accept(req, kAwait);
  if (ec) co_return nullptr;
  co_return impl;
}

class ServerImpl final : public Server {
 public:
  ServerImpl(net::io_context& ioc, std::shared_ptr<Shared> shared, tcp::acceptor acceptor)
      : ioc_(ioc), shared_(std::move(shared)), acceptor_(std::move(acceptor)) {
    endpoint_ = acceptor_.local_endpoint();
  }

  tcp::endpoint endpoint() const override { return endpoint_; }
  bool tls() const override { return shared_->ssl.has_value(); }
  std::size_t connections() const override { return shared_->count.load(); }

  void start() override {
    net::co_spawn(acceptor_.get_executor(), accept_loop(), net::detached);
  }

  net::awaitable<void> shutdown(std::chrono::milliseconds grace) override {
    shared_->stopping = true;
    net::post(acceptor_.get_executor(), [this] {
      boost::system::error_code ec;
      acceptor_.close(ec);
    });
    shared_->for_each_session([](SessionBase& s) { s.begin_shutdown(); });
    net::steady_timer t(co_await net::this_coro::executor);
    const auto deadline = std::chrono::steady_clock::now() + grace;
    while (shared_->count.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      t.expires_after(std::chrono::milliseconds(10));
      co_await t.async_wait(kAwait);
    }
    if (shared_->count.load() > 0) {
      spdlog::warn("shutdown: closing {} connection(s) still busy after {} ms", shared_->count.load(),
                   grace.count());
      shared_->for_each_session([](SessionBase& s) { s.force_close(); });
      const auto hard = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      while (shared_->count.load() > 0 && std::chrono::steady_clock::now() < hard) {
        t.expires_after(std::chrono::milliseconds(10));
        co_await t.async_wait(kAwait);
      }
    }
  }

  Shared& shared() { return *shared_; }

 private:
  net::awaitable<void> accept_loop() {
    net::steady_timer backoff(acceptor_.get_executor());
    while (!shared_->stopping) {
      // A strand per connection only where several threads run the
      // io_context: with one, its handlers already run one at a time.
      net::any_io_executor conn_ex = single_thread_ ? net::any_io_executor(ioc_.get_executor())
                                                    : net::any_io_executor(net::make_strand(ioc_));
      auto [ec, sock] = co_await acceptor_.async_accept(conn_ex, kAwait);
      if (ec) {
        if (shared_->stopping || ec == net::error::operation_aborted || !acceptor_.is_open()) co_return;
        // Out of descriptors and the like: back off instead of spinning.
        spdlog::warn("accept failed: {}", ec.message());
        backoff.expires_after(std::chrono::milliseconds(50));
        co_await backoff.async_wait(kAwait);
        continue;
      }
      if (shared_->count.load() >= shared_->settings.max_connections) {
        shared_->rejected.inc();
        boost::system::error_code ignored;
        sock.close(ignored);
        continue;
      }
      set_cloexec(sock.native_handle());  // Asio accepts without SOCK_CLOEXEC
      boost::system::error_code ignored;
      sock.set_option(tcp::no_delay(true), ignored);
      auto remote = sock.remote_endpoint(ignored);
      if (shared_->ssl) {
        spawn(std::make_shared<Session<TlsStream>>(shared_, remote, std::move(sock), *shared_->ssl));
      } else {
        spawn(std::make_shared<Session<PlainStream>>(shared_, remote, std::move(sock)));
      }
    }
  }

  template <class S>
  static void spawn(std::shared_ptr<S> s) {
    auto ex = s->session_executor();
    // The session's coroutine carries a cancellation slot: interrupt()
    // cancels a watched handler in place (no coroutine of its own per
    // request). The completion keeps the session (and its signal) alive
    // until the coroutine is wholly done with the slot.
    net::co_spawn(
        ex, [s]() -> net::awaitable<void> { co_await s->run(); },
        net::bind_cancellation_slot(s->interrupt_slot(), [s](std::exception_ptr e) {
          if (!e) return;
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& err) {
            spdlog::error("connection failed: {}", err.what());
          }
        }));
  }

  net::io_context& ioc_;
  std::shared_ptr<Shared> shared_;
  const bool single_thread_ = shared_->settings.io_threads() == 1;
  tcp::acceptor acceptor_;
  tcp::endpoint endpoint_;
};

Result<tcp::endpoint> parse_listen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) return Error::bad_request("listen must be HOST:PORT", "listen_failed");
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(listen.substr(colon + 1), &used);
    if (used != listen.size() - colon - 1 || port > 65535) throw std::out_of_range("port");
  } catch (const std::exception&) {
    return Error::bad_request("bad port in listen address \"" + listen + "\"", "listen_failed");
  }
  boost::system::error_code ec;
  auto addr = net::ip::make_address(host, ec);
  if (ec) return Error::bad_request("bad host in listen address \"" + listen + "\" (use an IP address)", "listen_failed");
  return tcp::endpoint(addr, static_cast<unsigned short>(port));
}

}  // namespace

Result<std::unique_ptr<Server>> Server::create(net::io_context& ioc, const ServerSettings& settings, Router router,
                                               std::vector<std::shared_ptr<Filter>> filters,
                                               metrics::Registry& metrics) {
  auto ep = parse_listen(settings.listen);
  if (!ep) return ep.error();
  auto shared = std::make_shared<Shared>(settings, std::move(router), std::move(filters), metrics);
  if (!settings.tls_cert.empty()) {
    try {
      shared->ssl.emplace(net::ssl::context::tls_server);
      shared->ssl->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                               net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                               net::ssl::context::no_tlsv1_1 | net::ssl::context::single_dh_use);
      shared->ssl->use_certificate_chain_file(settings.tls_cert);
      shared->ssl->use_private_key_file(settings.tls_key, net::ssl::context::pem);
    } catch (const std::exception& e) {
      return Error{400, "tls_invalid",
                   "cannot load server.tls_cert/tls_key (" + settings.tls_cert + "): " + e.what()};
    }
  }
  tcp::acceptor acceptor(ioc);
  boost::system::error_code ec;
  acceptor.open(ep->protocol(), ec);
  // No process Alou starts may hold the listening socket (a crashed Alou's
  // orphan would keep the port); SO_REUSEADDR lets a restart bind at once
  // while connections of the old process sit in TIME_WAIT.
  if (!ec && !set_cloexec(acceptor.native_handle())) ec.assign(errno, boost::system::system_category());
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(*ep, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return Error{500, "listen_failed", "cannot listen on " + settings.listen + ": " + ec.message()};
  return std::unique_ptr<Server>(new ServerImpl(ioc, std::move(shared), std::move(acceptor)));
}

}  // namespace alou::http
