#include "alou/http/client.hpp"

#include "alou/core/metrics.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <variant>
#include <vector>

namespace alou::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ServerRequest = bhttp::request<bhttp::string_body>;

// A blocking HTTP server on 127.0.0.1:0: one thread accepts, one thread per
// connection runs the handler. Handlers end a connection with shutdown(),
// never close(), so that the destructor can unblock them safely.
class TestServer {
 public:
  using Handler = std::function<void(tcp::socket&, int index)>;

  explicit TestServer(Handler handler)
      : handler_(std::move(handler)), acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
  }

  ~TestServer() {
    stop_ = true;
    {
      tcp::socket wake(ioc_);
      error_code ec;
      wake.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port_), ec);
    }
    accept_thread_.join();
    {
      const std::lock_guard lock(mu_);
      for (auto& s : sockets_) {
        error_code ec;
        s->shutdown(tcp::socket::shutdown_both, ec);
      }
    }
    for (auto& t : workers_) t.join();
  }

  std::uint16_t port() const { return port_; }
  int accepted() const { return accepted_.load(); }
  std::string url(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
  }

 private:
  void accept_loop() {
    for (;;) {
      auto sock = std::make_shared<tcp::socket>(ioc_);
      error_code ec;
      acceptor_.accept(*sock, ec);
      if (ec || stop_) return;
      const int index = accepted_++;
      const std::lock_guard lock(mu_);
      sockets_.push_back(sock);
      workers_.emplace_back([this, sock, index] {
        handler_(*sock, index);
        error_code ignored;
        sock->shutdown(tcp::socket::shutdown_both, ignored);
      });
    }
  }

  Handler handler_;
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<std::shared_ptr<tcp::socket>> sockets_;
  std::vector<std::thread> workers_;
};

template <class Stream>
bool read_request(Stream& s, beast::flat_buffer& buffer, ServerRequest& req) {
  req = {};
  error_code ec;
  bhttp::read(s, buffer, req, ec);
  return !ec;
}

template <class Stream>
void write_raw(Stream& s, std::string_view text) {
  error_code ec;
  net::write(s, net::buffer(text), ec);
}

std::string ok_response(std::string_view body, int status = 200, std::string_view reason = "OK") {
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
         "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
         std::string(body);
}

// Blocks until the peer closes the connection (or the server shuts down).
void wait_for_close(tcp::socket& s) {
  char buf[256];
  error_code ec;
  while (!ec) s.read_some(net::buffer(buf), ec);
}

// Serves every request on the connection with `body`.
TestServer::Handler serve(std::string body) {
  return [body = std::move(body)](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    while (read_request(s, buffer, req)) write_raw(s, ok_response(body));
  };
}

template <class T>
T run(net::io_context& ioc, net::awaitable<T> a) {
  auto fut = net::co_spawn(ioc, std::move(a), net::use_future);
  ioc.restart();
  ioc.run();
  return fut.get();
}

ClientRequest get(std::string url) {
  ClientRequest r;
  r.method = Verb::get;
  r.url = std::move(url);
  return r;
}

ClientOptions fast_options() {
  ClientOptions o;
  o.connect_timeout = 2s;
  o.first_byte_timeout = 5s;
  o.idle_read_timeout = 5s;
  o.total_timeout = 10s;
  return o;
}

TEST(Client, BufferedGetWithContentLength) {
  std::mutex mu;
  std::vector<ServerRequest> seen;
  TestServer server([&](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    while (read_request(s, buffer, req)) {
      {
        const std::lock_guard lock(mu);
        seen.push_back(req);
      }
      write_raw(s, ok_response("hello"));
    }
  });
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());
  ClientRequest req = get(server.url("/v1/models?limit=2"));
  req.headers.emplace_back("x-test", "1");
  const Result<ClientResponse> r = run(ioc, client.request(req));

  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
  EXPECT_EQ(r->headers[bhttp::field::content_type], "text/plain");
  const std::lock_guard lock(mu);
  ASSERT_EQ(seen.size(), 1U);
  EXPECT_EQ(seen[0].method(), Verb::get);
  EXPECT_EQ(seen[0].target(), "/v1/models?limit=2");
  EXPECT_EQ(seen[0][bhttp::field::host], "127.0.0.1:" + std::to_string(server.port()));
  EXPECT_EQ(seen[0][bhttp::field::user_agent], "alou/0.1");
  EXPECT_EQ(seen[0]["x-test"], "1");
}

TEST(Client, BufferedPostWithChunkedResponse) {
  std::mutex mu;
  std::vector<ServerRequest> seen;
  TestServer server([&](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    while (read_request(s, buffer, req)) {
      {
        const std::lock_guard lock(mu);
        seen.push_back(req);
      }
      write_raw(s,
                "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                "3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    }
  });
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());
  ClientRequest req;
  req.url = server.url("/v1/chat/completions");
  req.headers.emplace_back("content-type", "application/json");
  req.body = R"({"a":1})";
  const Result<ClientResponse> r = run(ioc, client.request(req));

  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, "abcdefg");
  const std::lock_guard lock(mu);
  ASSERT_EQ(seen.size(), 1U);
  EXPECT_EQ(seen[0].method(), Verb::post);
  EXPECT_EQ(seen[0][bhttp::field::content_length], "7");
  EXPECT_EQ(seen[0].body(), R"({"a":1})");
}

TEST(Client, BodyDelimitedByCloseIsReadAndConnectionNotPooled) {
  TestServer server([](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    if (read_request(s, buffer, req)) write_raw(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc");
  });
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());
  for (int i = 0; i < 2; ++i) {
    const Result<ClientResponse> r = run(ioc, client.request(get(server.url("/"))));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->body, "abc");
  }
  EXPECT_EQ(server.accepted(), 2);
}

TEST(Client, KeepAliveConnectionIsReused) {
  TestServer server(serve("pong"));
  net::io_context ioc;
  metrics::Registry registry;
  Client client(ioc.get_executor(), fast_options(), &registry);
  for (int i = 0; i < 5; ++i) {
    const Result<ClientResponse> r = run(ioc, client.request(get(server.url("/ping"))));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->body, "pong");
  }
  EXPECT_EQ(server.accepted(), 1);
  EXPECT_EQ(registry.counter("alou_upstream_connections_opened_total", "", {{"scheme", "http"}}).value(), 1U);
  EXPECT_EQ(registry.counter("alou_upstream_pool_reuse_total", "").value(), 4U);
}

TEST(Client, ConnectionClosedByServerWhileIdleIsReplaced) {
  TestServer server([](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    if (read_request(s, buffer, req)) write_raw(s, ok_response("once"));
    // Returning shuts the keep-alive connection down.
  });
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());
  for (int i = 0; i < 2; ++i) {
    const Result<ClientResponse> r = run(ioc, client.request(get(server.url("/"))));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->body, "once");
  }
  EXPECT_EQ(server.accepted(), 2);
}

TEST(Client, PooledConnectionFailingBeforeResponseIsRetriedOnFreshOne) {
  std::atomic<int> requests{0};
  TestServer server([&](tcp::socket& s, int index) {
    beast::flat_buffer buffer;
    ServerRequest req;
    if (index == 0) {
      if (read_request(s, buffer, req)) write_raw(s, ok_response("first"));
      // Looks alive in the pool, then drops the next request unanswered.
      if (read_request(s, buffer, req)) ++requests;
      return;
    }
    while (read_request(s, buffer, req)) {
      ++requests;
      write_raw(s, ok_response("second"));
    }
  });
  net::io_context ioc;
  metrics::Registry registry;
  Client client(ioc.get_executor(), fast_options(), &registry);
  ClientRequest req;
  req.url = server.url("/v1/chat/completions");
  req.body = "{}";
  const Result<ClientResponse> first = run(ioc, client.request(req));
  ASSERT_TRUE(first.has_value()) << first.error().message;
  const Result<ClientResponse> second = run(ioc, client.request(req));
  ASSERT_TRUE(second.has_value()) << second.error().message;
  EXPECT_EQ(second->body, "second");
  EXPECT_EQ(server.accepted(), 2);
  EXPECT_EQ(requests.load(), 2);  // the dropped one and its retry
  EXPECT_EQ(registry.counter("alou_upstream_pool_reuse_total", "").value(), 1U);
}

// An upstream that reads one request and closes without answering.
void read_one_and_close(tcp::socket& s, int) {
  beast::flat_buffer buffer;
  ServerRequest req;
  read_request(s, buffer, req);
}

TEST(Client, FreshConnectionClosedWithoutResponseIsNotRetried) {
  TestServer server(read_one_and_close);
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());
  const Result<ClientResponse> r = run(ioc, client.request(get(server.url("/"))));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().status, 502);
  EXPECT_EQ(r.error().code, "upstream_unreachable");
  EXPECT_EQ(server.accepted(), 1);
}

// A header value with a line break would forge fields (or a second request)
// upstream: refused before anything is sent, and the value (maybe a key) is
// not repeated in the error.
TEST(Client, HeaderWithLineBreakIsRefusedAndNothingIsSent) {
  TestServer server(read_one_and_close);
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"authorization", "Bearer sk-secret\r\nX-Injected: 1"}, {"x-bad\nname", "v"}, {"x-lf", "a\nb"}}) {
    ClientRequest req = get(server.url("/"));
    req.headers.emplace_back(name, value);
    const Result<ClientResponse> r = run(ioc, client.request(req));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().status, 500);
    EXPECT_EQ(r.error().code, "invalid_upstream_header");
    EXPECT_EQ(r.error().message.find("secret"), std::string::npos);
  }
  EXPECT_EQ(server.accepted(), 0);
}

net::awaitable<std::vector<std::string>> read_all(Client& client, ClientRequest req,
                                                  std::promise<void>* after_first) {
  Result<std::unique_ptr<ClientStream>> s = co_await client.stream(std::move(req));
  if (!s) co_return std::vector<std::string>{"error: " + s.error().code};
  std::vector<std::string> pieces;
  pieces.push_back(std::to_string((*s)->status()));
  for (;;) {
    const Result<std::string> piece = co_await (*s)->next();
    if (!piece) {
      pieces.push_back("error: " + piece.error().code);
      break;
    }
    pieces.push_back(*piece);
    if (piece->empty()) break;
    if (pieces.size() == 2 && after_first != nullptr) after_first->set_value();
  }
  co_return pieces;
}

TEST(Client, StreamDeliversEachChunkBeforeTheServerFinishes) {
  std::promise<void> first_received;
  std::shared_future<void> first = first_received.get_future().share();
  std::atomic<bool> server_waited{false};
  TestServer server([&](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    if (!read_request(s, buffer, req)) return;
    write_raw(s,
              "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5;foo=bar\r\nhello\r\n");
    // The rest is sent only once the client has the first chunk.
    if (first.wait_for(5s) != std::future_status::ready) return;
    server_waited = true;
    write_raw(s, "6\r\n world\r\n0\r\n\r\n");
  });
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());
  const std::vector<std::string> pieces =
      run(ioc, read_all(client, get(server.url("/stream")), &first_received));

  const std::vector<std::string> expected{"200", "hello", " world", ""};
  EXPECT_EQ(pieces, expected);
  EXPECT_TRUE(server_waited.load());
}

TEST(Client, StreamWithContentLengthEndsWithEmptyPiece) {
  TestServer server(serve("0123456789"));
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());
  const std::vector<std::string> pieces = run(ioc, read_all(client, get(server.url("/")), nullptr));
  const std::vector<std::string> expected{"200", "0123456789", ""};
  EXPECT_EQ(pieces, expected);
}

// Reads the stream's first piece, calls finish() if asked, and drops the
// stream (its destructor runs before this coroutine returns).
net::awaitable<std::string> read_first_then_drop(Client& client, ClientRequest req, bool finish) {
  Result<std::unique_ptr<ClientStream>> s = co_await client.stream(std::move(req));
  if (!s) co_return "error: " + s.error().code;
  const Result<std::string> piece = co_await (*s)->next();
  if (!piece) co_return "error: " + piece.error().code;
  if (finish) (*s)->finish();
  co_return *piece;
}

// Serves each request on the connection with a chunked "hello", then (after
// 20 ms) `tail` and the last chunk, as an SSE upstream sends [DONE] before
// its body ends.
TestServer::Handler hello_then_tail(std::string tail) {
  return [tail = std::move(tail)](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    while (read_request(s, buffer, req)) {
      write_raw(s, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "5\r\nhello\r\n");
      std::this_thread::sleep_for(20ms);
      write_raw(s, tail + "0\r\n\r\n");
    }
  };
}

// Two streams in a row against hello_then_tail(tail), each dropped after
// its first piece (finish() called first if asked): the connections the
// server accepted and the pool reuses counted.
struct TwoStreams {
  int accepted = 0;
  std::uint64_t reused = 0;
};
TwoStreams two_streams(std::string tail, bool finish) {
  TestServer server(hello_then_tail(std::move(tail)));
  net::io_context ioc;
  metrics::Registry registry;
  Client client(ioc.get_executor(), fast_options(), &registry);
  // run() returns once the io_context is out of work: a background drain
  // included.
  EXPECT_EQ(run(ioc, read_first_then_drop(client, get(server.url("/a")), finish)), "hello");
  EXPECT_EQ(run(ioc, read_first_then_drop(client, get(server.url("/b")), finish)), "hello");
  return {server.accepted(), registry.counter("alou_upstream_pool_reuse_total", "").value()};
}

TEST(Client, FinishedStreamIsDrainedAndItsConnectionReused) {
  const TwoStreams r = two_streams("", true);
  EXPECT_EQ(r.accepted, 1);
  EXPECT_EQ(r.reused, 1U);
}

TEST(Client, StreamDroppedBeforeItsEndWithoutFinishIsNotReused) {
  const TwoStreams r = two_streams("", false);
  EXPECT_EQ(r.accepted, 2);
  EXPECT_EQ(r.reused, 0U);
}

TEST(Client, FinishedStreamWithMoreThanTheDrainBudgetIsClosed) {
  // After the caller's end, more than kFinishBytes still to come.
  std::string tail;
  const std::string piece(8 * 1024, 'x');
  for (std::size_t sent = 0; sent <= ClientStream::kFinishBytes; sent += piece.size()) {
    tail += "2000\r\n" + piece + "\r\n";
  }
  const TwoStreams r = two_streams(tail, true);
  EXPECT_EQ(r.accepted, 2);
  EXPECT_EQ(r.reused, 0U);
}

TEST(Client, FirstByteTimeoutIsUpstreamTimeout) {
  TestServer server([](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    if (read_request(s, buffer, req)) wait_for_close(s);
  });
  net::io_context ioc;
  ClientOptions opts = fast_options();
  opts.first_byte_timeout = 200ms;
  Client client(ioc.get_executor(), opts);
  const auto start = Clock::now();
  const Result<ClientResponse> r = run(ioc, client.request(get(server.url("/slow"))));
  const auto elapsed = Clock::now() - start;

  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().status, 504);
  EXPECT_EQ(r.error().code, "upstream_timeout");
  EXPECT_GE(elapsed, 150ms);
  EXPECT_LT(elapsed, 2s);
}

TEST(Client, IdleReadTimeoutMidStreamIsUpstreamTimeout) {
  TestServer server([](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    if (!read_request(s, buffer, req)) return;
    write_raw(s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n");
    wait_for_close(s);
  });
  net::io_context ioc;
  ClientOptions opts = fast_options();
  opts.idle_read_timeout = 200ms;
  Client client(ioc.get_executor(), opts);
  const auto start = Clock::now();
  const std::vector<std::string> pieces = run(ioc, read_all(client, get(server.url("/")), nullptr));
  const std::vector<std::string> expected{"200", "hi", "error: upstream_timeout"};
  EXPECT_EQ(pieces, expected);
  EXPECT_LT(Clock::now() - start, 2s);
}

TEST(Client, ConnectionRefusedIsUnreachable) {
  std::uint16_t port = 0;
  {
    net::io_context tmp;
    tcp::acceptor a(tmp, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    port = a.local_endpoint().port();
  }
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());
  const auto start = Clock::now();
  const Result<ClientResponse> r =
      run(ioc, client.request(get("http://127.0.0.1:" + std::to_string(port) + "/")));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().status, 502);
  EXPECT_EQ(r.error().code, "upstream_unreachable");
  EXPECT_LT(Clock::now() - start, 1s);
}

TEST(Client, InvalidUrlIsRefused) {
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());
  const Result<ClientResponse> r = run(ioc, client.request(get("ftp://example.com/x")));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, "invalid_upstream_url");
}

TEST(Client, ErrorsNeverContainThePathOrQuery) {
  TestServer server([](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    if (read_request(s, buffer, req)) wait_for_close(s);
  });
  net::io_context ioc;
  ClientOptions opts = fast_options();
  opts.first_byte_timeout = 100ms;
  Client client(ioc.get_executor(), opts);
  ClientRequest req = get(server.url("/v1/models?key=SECRET1"));
  req.headers.emplace_back("authorization", "Bearer SECRET2");
  const Result<ClientResponse> r = run(ioc, client.request(req));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message.find("SECRET"), std::string::npos) << r.error().message;
}

net::awaitable<std::string> read_one_then_cancel(Client& client, ClientRequest req) {
  Result<std::unique_ptr<ClientStream>> s = co_await client.stream(std::move(req));
  if (!s) co_return "error: " + s.error().code;
  const Result<std::string> piece = co_await (*s)->next();
  if (!piece) co_return "error: " + piece.error().code;
  (*s)->cancel();
  const Result<std::string> after = co_await (*s)->next();
  co_return *piece + (after ? std::string(" then data") : std::string(" then ") + after.error().code);
}

TEST(Client, CancelMidStreamClosesTheUpstreamConnection) {
  std::promise<void> closed;
  auto closed_future = closed.get_future();
  TestServer server([&](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    if (!read_request(s, buffer, req)) return;
    write_raw(s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndata\r\n");
    wait_for_close(s);
    closed.set_value();
  });
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());
  const std::string out = run(ioc, read_one_then_cancel(client, get(server.url("/"))));
  EXPECT_EQ(out, "data then upstream_unreachable");
  EXPECT_EQ(closed_future.wait_for(5s), std::future_status::ready);
}

net::awaitable<int> request_or_timer(Client& client, ClientRequest req) {
  using namespace net::experimental::awaitable_operators;
  net::steady_timer timer(co_await net::this_coro::executor, 100ms);
  auto request = client.request(std::move(req));
  auto wait = timer.async_wait(net::use_awaitable);
  const auto winner = co_await (std::move(request) || std::move(wait));
  co_return static_cast<int>(winner.index());
}

TEST(Client, CancellingTheAwaitingCoroutineAbortsTheRequest) {
  std::promise<void> closed;
  auto closed_future = closed.get_future();
  TestServer server([&](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    if (!read_request(s, buffer, req)) return;
    wait_for_close(s);
    closed.set_value();
  });
  net::io_context ioc;
  Client client(ioc.get_executor(), ClientOptions{});  // 60 s first-byte timeout
  const auto start = Clock::now();
  const int winner = run(ioc, request_or_timer(client, get(server.url("/"))));
  EXPECT_EQ(winner, 1);
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_EQ(closed_future.wait_for(5s), std::future_status::ready);
}

TEST(Client, BodyAboveLimitWithContentLengthIsRejected) {
  TestServer server(serve(std::string(2000, 'x')));
  net::io_context ioc;
  ClientOptions opts = fast_options();
  opts.max_response_bytes = 1000;
  Client client(ioc.get_executor(), opts);
  const Result<ClientResponse> r = run(ioc, client.request(get(server.url("/"))));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().status, 502);
  EXPECT_EQ(r.error().code, "upstream_protocol");
}

TEST(Client, ChunkedBodyAboveLimitIsRejected) {
  TestServer server([](tcp::socket& s, int) {
    beast::flat_buffer buffer;
    ServerRequest req;
    if (!read_request(s, buffer, req)) return;
    write_raw(s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    const std::string chunk = "200\r\n" + std::string(0x200, 'y') + "\r\n";
    for (int i = 0; i < 4; ++i) write_raw(s, chunk);
    write_raw(s, "0\r\n\r\n");
  });
  net::io_context ioc;
  ClientOptions opts = fast_options();
  opts.max_response_bytes = 1000;
  Client client(ioc.get_executor(), opts);
  const Result<ClientResponse> r = run(ioc, client.request(get(server.url("/"))));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, "upstream_protocol");
}

// ---- TLS

class ClientTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                     ("alou-client-test-" + std::to_string(::getpid())));
    std::filesystem::create_directories(*dir_);
    const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -keyout '" + key() + "' -out '" +
                            cert() +
                            "' -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost "
                            ">/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(*dir_, ec);
    delete dir_;
    dir_ = nullptr;
  }
  static std::string key() { return (*dir_ / "k.pem").string(); }
  static std::string cert() { return (*dir_ / "c.pem").string(); }

  // An HTTPS server answering every request with "secure".
  static TestServer::Handler tls_handler() {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    ctx->use_certificate_chain_file(cert());
    ctx->use_private_key_file(key(), ssl::context::pem);
    return [ctx](tcp::socket& s, int) {
      ssl::stream<tcp::socket&> tls(s, *ctx);
      error_code ec;
      tls.handshake(ssl::stream_base::server, ec);
      if (ec) return;
      beast::flat_buffer buffer;
      ServerRequest req;
      while (read_request(tls, buffer, req)) write_raw(tls, ok_response("secure"));
    };
  }

  static std::filesystem::path* dir_;
};

std::filesystem::path* ClientTls::dir_ = nullptr;

TEST_F(ClientTls, VerifiedAgainstGivenCaSucceeds) {
  TestServer server(tls_handler());
  net::io_context ioc;
  metrics::Registry registry;
  ClientOptions opts = fast_options();
  opts.ca_file = cert();
  Client client(ioc.get_executor(), opts, &registry);
  const std::string url = "https://localhost:" + std::to_string(server.port()) + "/v1/models";
  for (int i = 0; i < 2; ++i) {
    const Result<ClientResponse> r = run(ioc, client.request(get(url)));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "secure");
  }
  EXPECT_EQ(server.accepted(), 1);
  EXPECT_EQ(registry.counter("alou_upstream_connections_opened_total", "", {{"scheme", "https"}}).value(), 1U);
}

TEST_F(ClientTls, UnknownCaIsAVerificationError) {
  TestServer server(tls_handler());
  net::io_context ioc;
  Client client(ioc.get_executor(), fast_options());  // system CA store
  const std::string url = "https://localhost:" + std::to_string(server.port()) + "/";
  const Result<ClientResponse> r = run(ioc, client.request(get(url)));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().status, 502);
  EXPECT_EQ(r.error().code, "upstream_unreachable");
  EXPECT_NE(r.error().message.find("certificate"), std::string::npos) << r.error().message;
}

TEST_F(ClientTls, HostNameMismatchIsAVerificationError) {
  TestServer server(tls_handler());
  net::io_context ioc;
  ClientOptions opts = fast_options();
  opts.ca_file = cert();
  Client client(ioc.get_executor(), opts);
  // The certificate names localhost only.
  const std::string url = "https://127.0.0.1:" + std::to_string(server.port()) + "/";
  const Result<ClientResponse> r = run(ioc, client.request(get(url)));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, "upstream_unreachable");
}

TEST_F(ClientTls, UnreadableCaFileIsAConfigError) {
  net::io_context ioc;
  ClientOptions opts = fast_options();
  opts.ca_file = (*dir_ / "missing.pem").string();
  Client client(ioc.get_executor(), opts);
  const Result<ClientResponse> r = run(ioc, client.request(get("https://localhost:1/")));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, "upstream_tls_config");
}

}  // namespace
}  // namespace alou::http
