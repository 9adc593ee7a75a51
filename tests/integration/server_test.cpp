// The HTTP server as a client sees it: request ids, error shapes, metrics,
// keep-alive, timeouts, graceful shutdown, the connection cap, CORS and
// startup errors.
#include "harness.hpp"

#include "alou/http/filters.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <thread>

namespace alou::itest {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::chrono::milliseconds since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t);
}

json body_json(const Res& r) { return json::parse(r.body(), nullptr, false); }

// Short timeouts so the timeout tests run in well under a second.
class Server : public AppTest {
 protected:
  void configure(Settings& s) override {
    s.server.header_timeout_ms = 300;
    s.server.idle_timeout_ms = 200;
  }
};

TEST_F(Server, HealthAnswersOkWithRequestId) {
  const Res r = get("/api/health");
  EXPECT_EQ(r.result_int(), 200);
  EXPECT_EQ(body_json(r), json({{"status", "ok"}}));
  EXPECT_EQ(header(r, "content-type"), "application/json");
  const std::string rid = header(r, "x-request-id");
  EXPECT_FALSE(rid.empty());
  EXPECT_TRUE(alou::http::valid_request_id(rid)) << rid;
}

TEST_F(Server, EchoesWellFormedClientRequestId) {
  const Res r = get("/api/health", {{"x-request-id", "abc-123"}});
  EXPECT_EQ(r.result_int(), 200);
  EXPECT_EQ(header(r, "x-request-id"), "abc-123");
}

TEST_F(Server, ReplacesMalformedRequestId) {
  for (const std::string& bad : {std::string("bad id!"), std::string(200, 'a')}) {
    const Res r = get("/api/health", {{"x-request-id", bad}});
    EXPECT_EQ(r.result_int(), 200);
    const std::string rid = header(r, "x-request-id");
    EXPECT_NE(rid, bad);
    EXPECT_FALSE(rid.empty());
    EXPECT_TRUE(alou::http::valid_request_id(rid)) << rid;
  }
}

TEST_F(Server, MetricsCountRequestsByRoute) {
  ASSERT_EQ(get("/api/health").result_int(), 200);
  const std::string counter = R"(alou_http_requests_total{route="/api/health",method="GET",status="200"} 1)";
  const std::string histogram = R"(alou_http_request_duration_seconds_count{route="/api/health"} 1)";
  Res last;
  // The counter is bumped after the response is written: poll.
  const bool seen = eventually([&] {
    last = get("/metrics");
    return last.body().find(counter) != std::string::npos && last.body().find(histogram) != std::string::npos;
  });
  EXPECT_TRUE(seen) << last.body();
  EXPECT_EQ(last.result_int(), 200);
  EXPECT_TRUE(header(last, "content-type").starts_with("text/plain; version=0.0.4")) << header(last, "content-type");
  EXPECT_NE(last.body().find(R"(alou_http_request_duration_seconds_bucket{route="/api/health",le="+Inf"} 1)"),
            std::string::npos);
  EXPECT_FALSE(header(last, "x-request-id").empty());
}

TEST_F(Server, UnknownPathIs404InAlouShape) {
  const Res r = get("/nope");
  EXPECT_EQ(r.result_int(), 404);
  const json b = body_json(r);
  ASSERT_TRUE(b.contains("error")) << r.body();
  EXPECT_EQ(b["error"]["code"], "not_found");
  EXPECT_TRUE(b["error"]["message"].is_string());
  ASSERT_TRUE(b["error"]["request_id"].is_string());
  EXPECT_FALSE(header(r, "x-request-id").empty());
  EXPECT_EQ(b["error"]["request_id"].get<std::string>(), header(r, "x-request-id"));
}

TEST_F(Server, UnknownV1PathIs404InOpenAiShape) {
  const Res r = get("/v1/nope");
  EXPECT_EQ(r.result_int(), 404);
  const json b = body_json(r);
  ASSERT_TRUE(b.contains("error")) << r.body();
  const json& e = b["error"];
  EXPECT_TRUE(e["message"].is_string());
  EXPECT_EQ(e["type"], "invalid_request_error");
  EXPECT_TRUE(e.contains("param") && e["param"].is_null());
  EXPECT_EQ(e["code"], "not_found");
  EXPECT_FALSE(e.contains("request_id"));
  EXPECT_FALSE(header(r, "x-request-id").empty());
}

TEST_F(Server, MessagesPathErrorsInAnthropicShape) {
  // An unrouted path under /v1/messages/ (POST /v1/messages itself exists).
  const Res r = get("/v1/messages/nope");
  EXPECT_EQ(r.result_int(), 404);
  const json b = body_json(r);
  EXPECT_EQ(b["type"], "error") << r.body();
  EXPECT_EQ(b["error"]["type"], "not_found_error");
  EXPECT_TRUE(b["error"]["message"].is_string());
  EXPECT_FALSE(header(r, "x-request-id").empty());
  // The wrong method on /v1/messages: 405, still Anthropic's shape.
  const Res m = get("/v1/messages");
  EXPECT_EQ(m.result_int(), 405);
  EXPECT_EQ(body_json(m)["type"], "error") << m.body();
}

TEST_F(Server, WrongMethodIs405WithAllow) {
  const Res r = request(bhttp::verb::post, "/api/health", {}, "{}");
  EXPECT_EQ(r.result_int(), 405);
  EXPECT_EQ(header(r, "allow"), "GET");
  EXPECT_EQ(body_json(r)["error"]["code"], "method_not_allowed");
  EXPECT_FALSE(header(r, "x-request-id").empty());
}

TEST_F(Server, KeepAliveServesTwoRequestsOnOneSocket) {
  Client c(ep());
  const Res a = c.get("/api/health");
  const Res b = c.get("/api/health");
  EXPECT_EQ(a.result_int(), 200);
  EXPECT_EQ(b.result_int(), 200);
  EXPECT_TRUE(a.keep_alive());
  EXPECT_TRUE(b.keep_alive());
  EXPECT_NE(header(a, "x-request-id"), header(b, "x-request-id"));
  EXPECT_EQ(gauge("alou_http_connections"), 1.0);
  EXPECT_EQ(counter("alou_http_connections_rejected_total"), 0u);
}

TEST_F(Server, ConnectionCloseIsHonoured) {
  Client c(ep());
  const Res r = c.get("/api/health", {{"Connection", "close"}});
  EXPECT_EQ(r.result_int(), 200);
  EXPECT_FALSE(r.keep_alive());
  const auto [ec, rest] = c.read_until_closed(1000ms);
  EXPECT_TRUE(is_closed(ec)) << ec.message();
  EXPECT_TRUE(rest.empty()) << rest;
  EXPECT_TRUE(eventually([&] { return gauge("alou_http_connections") == 0.0; }));
}

TEST_F(Server, SlowHeadersDoNotBlockOthers) {
  Client slow(ep());
  const auto t0 = Clock::now();
  ASSERT_FALSE(slow.send_raw("GET /api/health HTTP/1.1\r\nHost: x\r\n"));
  for (int i = 0; i < 20; ++i) {
    const auto start = Clock::now();
    const Res r = get("/api/health");
    EXPECT_EQ(r.result_int(), 200);
    EXPECT_LT(since(start).count(), 200) << "request " << i;
  }
  const auto [ec, data] = slow.read_until_closed(1500ms);
  EXPECT_TRUE(is_closed(ec)) << ec.message();
  EXPECT_LT(since(t0).count(), 1000);
  // The deadline closes the socket: the client sees the connection close.
  EXPECT_TRUE(data.empty()) << data;
  EXPECT_EQ(get("/api/health").result_int(), 200);
}

TEST_F(Server, IdleKeepAliveConnectionIsClosed) {
  Client c(ep());
  ASSERT_EQ(c.get("/api/health").result_int(), 200);
  const auto t0 = Clock::now();
  const auto [ec, data] = c.read_until_closed(1500ms);
  EXPECT_TRUE(is_closed(ec)) << ec.message();
  EXPECT_TRUE(data.empty()) << data;
  EXPECT_LT(since(t0).count(), 1000);
  EXPECT_GE(since(t0).count(), 150);
}

TEST_F(Server, GracefulStopFinishesInFlightRequest) {
  const tcp::endpoint endpoint = ep();
  Res slow;
  error_code slow_ec;
  std::thread client([&] {
    Client c(endpoint);
    slow_ec = c.send(make_request(bhttp::verb::get, "/test/slow?ms=600"));
    if (!slow_ec) slow_ec = c.read(slow);
  });
  EXPECT_TRUE(eventually([&] { return gauge("alou_http_requests_in_flight") == 1.0; }));
  const auto t0 = Clock::now();
  app_->stop();
  const auto stop_took = since(t0);
  client.join();
  EXPECT_FALSE(slow_ec) << slow_ec.message();
  EXPECT_EQ(slow.result_int(), 200);
  EXPECT_EQ(slow.body(), R"({"slept":600})");
  EXPECT_FALSE(slow.keep_alive()) << "a response during shutdown must carry Connection: close";
  EXPECT_EQ(probe_->slow_done.load(), 1);
  EXPECT_LT(stop_took.count(), 2000);  // well under shutdown_timeout_ms (3000)
  EXPECT_EQ(Client::try_connect(endpoint), net::error::connection_refused);
}

TEST_F(Server, StopClosesIdleConnectionsAtOnce) {
  Client c(ep());
  ASSERT_EQ(c.get("/api/health").result_int(), 200);
  const auto t0 = Clock::now();
  app_->stop();
  EXPECT_LT(since(t0).count(), 500);
  const auto [ec, data] = c.read_until_closed(500ms);
  EXPECT_TRUE(is_closed(ec)) << ec.message();
}

class ConnectionCap : public AppTest {
 protected:
  void configure(Settings& s) override { s.server.max_connections = 2; }
};

TEST_F(ConnectionCap, ThirdConnectionIsClosedAtOnce) {
  Client a(ep());
  Client b(ep());
  ASSERT_EQ(a.get("/api/health").result_int(), 200);
  ASSERT_EQ(b.get("/api/health").result_int(), 200);
  Client c(ep());
  ASSERT_TRUE(c.connected());
  const auto [ec, data] = c.read_until_closed(1000ms);
  EXPECT_TRUE(is_closed(ec)) << ec.message();
  EXPECT_TRUE(data.empty()) << data;
  EXPECT_EQ(a.get("/api/health").result_int(), 200);
  EXPECT_EQ(b.get("/api/health").result_int(), 200);
  EXPECT_EQ(counter("alou_http_connections_rejected_total"), 1u);
  EXPECT_EQ(gauge("alou_http_connections"), 2.0);
}

class Cors : public AppTest {
 protected:
  void configure(Settings& s) override { s.server.cors_origins = {"https://app.example"}; }
};

TEST_F(Cors, PreflightFromAllowedOriginIs204) {
  const Res r = request(bhttp::verb::options, "/api/status",
                        {{"Origin", "https://app.example"},
                         {"Access-Control-Request-Method", "GET"},
                         {"Access-Control-Request-Headers", "authorization"}});
  EXPECT_EQ(r.result_int(), 204);
  EXPECT_EQ(header(r, "access-control-allow-origin"), "https://app.example");
  EXPECT_NE(header(r, "access-control-allow-methods").find("GET"), std::string::npos);
  EXPECT_EQ(header(r, "access-control-allow-headers"), "authorization");
  EXPECT_FALSE(header(r, "x-request-id").empty());
}

TEST_F(Cors, SimpleRequestFromAllowedOriginGetsAllowOrigin) {
  const Res r = get("/api/health", {{"Origin", "https://app.example"}});
  EXPECT_EQ(r.result_int(), 200);
  EXPECT_EQ(header(r, "access-control-allow-origin"), "https://app.example");
  EXPECT_EQ(header(r, "vary"), "Origin");
  EXPECT_NE(header(r, "access-control-expose-headers").find("x-request-id"), std::string::npos);
  // Error responses carry it too (a browser must be able to read them).
  const Res e = get("/api/status", {{"Origin", "https://app.example"}});
  EXPECT_EQ(e.result_int(), 401);
  EXPECT_EQ(header(e, "access-control-allow-origin"), "https://app.example");
}

TEST_F(Cors, ForeignOriginGetsNoCorsHeaders) {
  const Res r = get("/api/health", {{"Origin", "https://evil.example"}});
  EXPECT_EQ(r.result_int(), 200);
  EXPECT_EQ(r.find("access-control-allow-origin"), r.end());
  const Res p = request(bhttp::verb::options, "/api/health",
                        {{"Origin", "https://evil.example"}, {"Access-Control-Request-Method", "GET"}});
  EXPECT_EQ(p.result_int(), 204);
  EXPECT_EQ(p.find("access-control-allow-origin"), p.end());
  EXPECT_EQ(p.find("access-control-allow-methods"), p.end());
}

// Startup failures: App::create returns an error value, nothing crashes.
class Startup : public AppTest {
 protected:
  void SetUp() override {
    boot_in_setup_ = false;
    AppTest::SetUp();
  }
};

TEST_F(Startup, UnusableDataDirIsAnError) {
  const auto file = dir_ / "plain-file";
  std::ofstream(file) << "not a directory";
  settings_.storage.data_dir = (file / "data").string();
  auto created = app::App::create(settings_);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, "storage_error");
  EXPECT_NE(created.error().message.find("data_dir"), std::string::npos) << created.error().message;
}

TEST_F(Startup, BadListenAddressIsAnError) {
  settings_.server.listen = "127.0.0.1:notaport";
  auto created = app::App::create(settings_);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, "listen_failed");
}

TEST_F(Startup, ShortAdminKeyIsRefused) {
  ::setenv("ALOU_ADMIN_KEY", "short", 1);
  auto created = app::App::create(settings_);
  ::setenv("ALOU_ADMIN_KEY", std::string(kAdminKey).c_str(), 1);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, "config_invalid");
}

}  // namespace
}  // namespace alou::itest
