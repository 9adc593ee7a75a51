// Server-Sent Events and WebSockets through the real server: heads,
// framing, heartbeats, client disconnects, shutdown mid-stream, limits.
#include "harness.hpp"

#include <boost/asio/connect.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <thread>

namespace alou::itest {
namespace {

namespace ws = beast::websocket;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::size_t count_of(std::string_view text, std::string_view needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string_view::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

class Sse : public AppTest {
 protected:
  void configure(Settings& s) override { s.server.sse_heartbeat_ms = 50; }

  // Sends the request and reads the head.
  void open(Client& c, ResParser& p, std::string_view target) {
    p.body_limit(boost::none);
    ASSERT_FALSE(c.send(make_request(bhttp::verb::get, target)));
    const auto ec = c.read_header(p);
    ASSERT_FALSE(ec) << ec.message();
  }

  // Reads until the body holds `n` data lines.
  void read_events(Client& c, ResParser& p, std::size_t n) {
    const auto until = Clock::now() + 3s;
    while (count_of(p.get().body(), "data: ") < n && Clock::now() < until) {
      const auto ec = c.read_some(p, 1000ms);
      ASSERT_FALSE(ec) << ec.message();
    }
    ASSERT_GE(count_of(p.get().body(), "data: "), n) << p.get().body();
  }
};

TEST_F(Sse, StreamHeadIsEventStream) {
  Client c(ep());
  ResParser p;
  open(c, p, "/test/sse?n=3&ms=10");
  const auto& head = p.get();
  EXPECT_EQ(head.result_int(), 200);
  EXPECT_EQ(head[bhttp::field::content_type], "text/event-stream");
  EXPECT_EQ(head[bhttp::field::cache_control], "no-cache");
  EXPECT_TRUE(p.chunked());
  EXPECT_FALSE(head["x-request-id"].empty());
}

TEST_F(Sse, WholeStreamThenConnectionIsReused) {
  Client c(ep());
  ResParser p;
  open(c, p, "/test/sse?n=3&ms=10");
  const auto ec = c.read_rest(p);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_TRUE(p.is_done());  // the terminating zero-length chunk arrived
  const std::string body = p.get().body();
  EXPECT_EQ(count_of(body, "event: tick\n"), 3u) << body;
  EXPECT_NE(body.find("id: 0\nevent: tick\ndata: {\"i\":0}\n\n"), std::string::npos) << body;
  EXPECT_NE(body.find("data: {\"i\":2}\n\n"), std::string::npos) << body;
  EXPECT_TRUE(probe_->sse_finished);
  EXPECT_FALSE(probe_->sse_cancelled);
  // The request is over on the server once the stream ended, without the
  // client having to send anything more.
  EXPECT_TRUE(eventually([&] { return gauge("alou_http_requests_in_flight") == 0.0; }, 1000ms))
      << "the stream handler still runs after its last byte";
  const Res r = c.get("/api/health");
  EXPECT_EQ(r.result_int(), 200);
  EXPECT_TRUE(r.keep_alive());
}

TEST_F(Sse, ClientGoingAwayCancelsProducer) {
  Client c(ep());
  ResParser p;
  open(c, p, "/test/sse?n=1000&ms=20");
  EXPECT_EQ(p.get().result_int(), 200);
  read_events(c, p, 3);
  EXPECT_EQ(gauge("alou_http_requests_in_flight"), 1.0);
  c.close();
  EXPECT_TRUE(eventually([&] { return probe_->sse_cancelled.load(); }, 1000ms));
  EXPECT_FALSE(probe_->sse_finished);
  EXPECT_TRUE(eventually([&] { return gauge("alou_http_requests_in_flight") == 0.0; }, 1000ms));
  EXPECT_TRUE(eventually([&] { return gauge("alou_http_connections") == 0.0; }, 1000ms));
  EXPECT_EQ(get("/api/health").result_int(), 200);
}

TEST_F(Sse, IdleStreamSendsHeartbeats) {
  Client c(ep());
  ResParser p;
  open(c, p, "/test/sse?n=2&ms=300");
  const auto ec = c.read_rest(p);
  ASSERT_FALSE(ec) << ec.message();
  const std::string body = p.get().body();
  EXPECT_GE(count_of(body, ": ping\n\n"), 2u) << body;
  EXPECT_EQ(count_of(body, "data: "), 2u) << body;
}

// Shutdown ends an open stream with a final error event, promptly.
TEST_F(Sse, ShutdownEndsStreamWithErrorEvent) {
  Client c(ep());
  ResParser p;
  open(c, p, "/test/sse?n=1000&ms=20");
  read_events(c, p, 1);
  const auto t0 = Clock::now();
  std::atomic<long> took_ms{-1};
  std::thread stopper([&] {
    app_->stop();
    took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  });
  // A regression could deadlock stop(): fail fast instead of hanging the run.
  std::thread deadlock_guard([&] {
    if (!eventually([&] { return took_ms.load() >= 0; }, 8000ms)) {
      std::fprintf(stderr, "FATAL: App::stop() deadlocked during SSE shutdown (server.cpp for_each_session)\n");
      std::abort();
    }
  });
  // The final event and the end of the stream arrive while stop() runs.
  const auto ec = c.read_rest(p, 2000ms);
  const auto ended_after = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
  stopper.join();
  deadlock_guard.join();
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(p.is_done());
  EXPECT_LT(ended_after.count(), 500) << "the stream did not end promptly on shutdown";
  EXPECT_LT(took_ms.load(), 1000) << "stop() waited for the stream's connection instead of closing it";
  const std::string body = p.get().body();
  const auto at = body.rfind("event: error\n");
  ASSERT_NE(at, std::string::npos) << body;
  EXPECT_NE(body.find("server_shutdown", at), std::string::npos) << body.substr(at);
  EXPECT_TRUE(body.ends_with("\n\n"));
  EXPECT_TRUE(probe_->sse_cancelled);
  EXPECT_FALSE(probe_->sse_finished);
  const auto [closed_ec, rest] = c.read_until_closed(1000ms);
  EXPECT_TRUE(is_closed(closed_ec)) << closed_ec.message();
}

// ---------------------------------------------------------------- WebSocket

// A client WebSocket driven on its own io_context with a deadline.
class WsClient {
 public:
  explicit WsClient(const tcp::endpoint& ep) : ws_(ioc_) {
    error_code ec;
    beast::get_lowest_layer(ws_).connect(ep, ec);
    if (ec) {
      ADD_FAILURE() << "connect: " << ec.message();
      return;
    }
    ws::stream_base::timeout t{};
    t.handshake_timeout = std::chrono::seconds(3);
    t.idle_timeout = std::chrono::seconds(3);
    t.keep_alive_pings = false;
    ws_.set_option(t);
    const std::string host = "127.0.0.1:" + std::to_string(ep.port());
    ec = run([&](auto h) { ws_.async_handshake(host, "/test/ws", std::move(h)); });
    if (ec) ADD_FAILURE() << "handshake: " << ec.message();
    ok_ = !ec;
  }

  bool ok() const { return ok_; }

  error_code write(std::string_view text) {
    ws_.text(true);
    return run([&](auto h) { ws_.async_write(net::buffer(text), std::move(h)); });
  }

  std::pair<error_code, std::string> read() {
    beast::flat_buffer buf;
    const auto ec = run([&](auto h) { ws_.async_read(buf, std::move(h)); });
    return {ec, beast::buffers_to_string(buf.data())};
  }

  error_code close() {
    return run([&](auto h) { ws_.async_close(ws::close_code::normal, std::move(h)); });
  }

  ws::close_reason reason() const { return ws_.reason(); }

 private:
  template <class Start>
  error_code run(Start&& start) {
    // run_one until this operation completed: the stream's own idle timer
    // stays pending, so run() would only return when it fires.
    error_code result = net::error::would_block;
    bool done = false;
    start([&](error_code ec, auto&&...) {
      result = ec;
      done = true;
    });
    ioc_.restart();
    while (!done && ioc_.run_one() != 0) {
    }
    return result;
  }

  net::io_context ioc_;
  ws::stream<tcp::socket> ws_;
  bool ok_ = false;
};

using WebSocket = AppTest;

TEST_F(WebSocket, EchoesMessages) {
  WsClient c(ep());
  ASSERT_TRUE(c.ok());
  for (const std::string& text : {std::string("hello"), std::string("second message")}) {
    ASSERT_FALSE(c.write(text));
    const auto [ec, got] = c.read();
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(got, text);
  }
  EXPECT_FALSE(c.close());
  EXPECT_TRUE(eventually([&] { return probe_->ws_ended.load(); }));
  EXPECT_EQ(probe_->ws_echoed.load(), 2);
  EXPECT_FALSE(probe_->ws_too_large);
  EXPECT_TRUE(eventually([&] { return gauge("alou_http_connections") == 0.0; }));
}

TEST_F(WebSocket, OversizedMessageClosesConnection) {
  WsClient c(ep());
  ASSERT_TRUE(c.ok());
  ASSERT_FALSE(c.write(std::string(4096, 'x')));
  const auto [ec, got] = c.read();
  ASSERT_TRUE(ec) << "expected the server to close, got a message of " << got.size() << " bytes";
  EXPECT_TRUE(ec == ws::error::closed || is_closed(ec) || ec == net::error::not_connected) << ec.message();
  if (ec == ws::error::closed) {
    EXPECT_EQ(c.reason().code, ws::close_code::too_big);
  }
  EXPECT_TRUE(eventually([&] { return probe_->ws_too_large.load(); }));
  EXPECT_TRUE(eventually([&] { return probe_->ws_ended.load(); }));
  EXPECT_EQ(probe_->ws_echoed.load(), 0);
  EXPECT_TRUE(eventually([&] { return gauge("alou_http_connections") == 0.0; }));
}

TEST_F(WebSocket, PlainGetIs400WebSocketRequired) {
  Client c(ep());
  const Res r = c.get("/test/ws");
  EXPECT_EQ(r.result_int(), 400);
  const json b = json::parse(r.body(), nullptr, false);
  EXPECT_EQ(b["error"]["code"], "websocket_required") << r.body();
  // An ordinary error response: the connection stays usable.
  EXPECT_EQ(c.get("/api/health").result_int(), 200);
}

TEST_F(WebSocket, PlainGet400CarriesRequestId) {
  const Res r = get("/test/ws", {{"x-request-id", "ws-req-1"}});
  EXPECT_EQ(r.result_int(), 400);
  EXPECT_EQ(header(r, "x-request-id"), "ws-req-1");
  const json b = json::parse(r.body(), nullptr, false);
  EXPECT_EQ(b["error"]["request_id"], "ws-req-1") << r.body();
}

TEST_F(WebSocket, PlainGet400IsCountedAs400) {
  ASSERT_EQ(get("/test/ws").result_int(), 400);
  const std::string line = R"(alou_http_requests_total{route="/test/ws",method="GET",status="400"} 1)";
  EXPECT_TRUE(eventually([&] { return metrics_text().find(line) != std::string::npos; }, 1000ms))
      << metrics_text();
}

}  // namespace
}  // namespace alou::itest
