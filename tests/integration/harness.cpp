#include "harness.hpp"

#include "alou/auth/keys.hpp"
#include "alou/core/log.hpp"
#include "alou/core/metrics.hpp"
#include "alou/http/exchange.hpp"
#include "alou/http/router.hpp"
#include "alou/http/sse.hpp"
#include "alou/http/websocket.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace alou::itest {

namespace {

int int_param(const alou::http::Exchange& ex, std::string_view name, int fallback) {
  const auto v = ex.query_param(name);
  if (!v) return fallback;
  try {
    return std::stoi(*v);
  } catch (const std::exception&) {
    return fallback;
  }
}

void init_logging_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    LogSettings ls;
    ls.level = "warn";
    std::string error;
    if (!log::init(ls, &error)) ADD_FAILURE() << error;
  });
}

}  // namespace

// ---------------------------------------------------------------- probe routes

void add_probe_routes(alou::http::Router& router, std::shared_ptr<Probe> probe) {
  using alou::http::Access;
  using alou::http::Exchange;
  using alou::http::Response;
  const alou::http::RouteOptions public_route{.access = Access::kPublic};

  router.get(
      "/test/slow",
      [probe](Exchange& ex) -> net::awaitable<Response> {
        const int ms = int_param(ex, "ms", 100);
        net::steady_timer t(co_await net::this_coro::executor);
        t.expires_after(std::chrono::milliseconds(ms));
        co_await t.async_wait(net::use_awaitable);
        probe->slow_done.fetch_add(1);
        co_return ex.json(alou::http::Status::ok, "{\"slept\":" + std::to_string(ms) + "}");
      },
      public_route);

  router.get(
      "/test/sse",
      [probe](Exchange& ex) -> net::awaitable<Response> {
        const int n = int_param(ex, "n", 3);
        const int ms = int_param(ex, "ms", 10);
        probe->sse_started.fetch_add(1);
        // A named std::function and named options: no class temporaries in
        // the co_await expression below (GCC 12 destroys those twice).
        std::function<net::awaitable<void>(alou::http::SseWriter&)> producer =
            [probe, n, ms](alou::http::SseWriter& w) -> net::awaitable<void> {
          try {
            net::steady_timer t(co_await net::this_coro::executor);
            for (int i = 0; i < n; ++i) {
              if (i > 0) {
                t.expires_after(std::chrono::milliseconds(ms));
                co_await t.async_wait(net::use_awaitable);
              }
              const std::string data = "{\"i\":" + std::to_string(i) + "}";
              const std::string id = std::to_string(i);
              const alou::http::SseEvent ev{.event = "tick", .data = data, .id = id};
              const bool ok = co_await w.send(ev);
              if (!ok) {
                probe->sse_cancelled = true;
                co_return;
              }
              probe->sse_sent.fetch_add(1);
            }
            probe->sse_finished = true;
          } catch (const boost::system::system_error&) {
            probe->sse_cancelled = true;
            throw;
          }
        };
        alou::http::SseOptions options;
        co_await ex.stream_sse(std::move(producer), std::move(options));
        co_return Exchange::streamed();
      },
      public_route);

  router.get(
      "/test/ws",
      [probe](Exchange& ex) -> net::awaitable<Response> {
        const alou::http::WebSocketOptions options{.max_message_bytes = 1024, .idle_timeout = std::chrono::seconds(5)};
        auto ws = co_await ex.accept_websocket(options);
        if (!ws) {
          co_return ex.error(Error::bad_request("this route expects a WebSocket upgrade", "websocket_required"));
        }
        for (;;) {
          auto msg = co_await ws->read();
          if (!msg) {
            if (msg.error().code == "ws_too_large") probe->ws_too_large = true;
            break;
          }
          const std::string_view data = msg->data;
          auto written = co_await ws->write(data, msg->binary);
          if (!written) break;
          probe->ws_echoed.fetch_add(1);
        }
        probe->ws_ended = true;
        co_return Exchange::streamed();
      },
      public_route);

  router.get(
      "/test/whoami",
      [](Exchange& ex) -> net::awaitable<Response> {
        nlohmann::json body = {{"id", ex.principal ? ex.principal->id : ""},
                               {"name", ex.principal ? ex.principal->name : ""},
                               {"owner", ex.principal && ex.principal->is_owner()}};
        co_return ex.json(alou::http::Status::ok, body.dump());
      },
      {.access = Access::kAuthenticated});
}

// ---------------------------------------------------------------- client

Req make_request(bhttp::verb method, std::string_view target, const Headers& headers, std::string body) {
  Req req{method, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  req.set(bhttp::field::user_agent, "alou-itest");
  for (const auto& [k, v] : headers) req.set(k, v);
  if (!body.empty() || method == bhttp::verb::post || method == bhttp::verb::put) {
    req.body() = std::move(body);
    req.prepare_payload();
  }
  return req;
}

Client::Client(const tcp::endpoint& ep, std::chrono::milliseconds deadline) : stream_(ioc_) {
  const auto ec = run(deadline, [&](auto handler) { stream_.async_connect(ep, std::move(handler)); });
  connected_ = !ec;
  if (ec) ADD_FAILURE() << "connect to " << ep << " failed: " << ec.message();
}

error_code Client::try_connect(const tcp::endpoint& ep, std::chrono::milliseconds deadline) {
  net::io_context ioc;
  beast::tcp_stream s(ioc);
  error_code result = net::error::would_block;
  s.expires_after(deadline);
  s.async_connect(ep, [&](error_code ec) { result = ec; });
  ioc.run();
  return result;
}

template <class Start>
error_code Client::run(std::chrono::milliseconds deadline, Start&& start) {
  error_code result = net::error::would_block;
  bool done = false;
  stream_.expires_after(deadline);
  start([&](error_code ec, auto&&...) {
    result = ec;
    done = true;
  });
  ioc_.restart();
  ioc_.run();
  if (!done) return net::error::would_block;
  return result;
}

error_code Client::send(Req req, std::chrono::milliseconds deadline) {
  return run(deadline, [&](auto handler) { bhttp::async_write(stream_, req, std::move(handler)); });
}

error_code Client::send_raw(std::string_view bytes, std::chrono::milliseconds deadline) {
  return run(deadline, [&](auto handler) { net::async_write(stream_, net::buffer(bytes), std::move(handler)); });
}

error_code Client::read(Res& out, std::chrono::milliseconds deadline) {
  return run(deadline, [&](auto handler) { bhttp::async_read(stream_, buffer_, out, std::move(handler)); });
}

Res Client::request(bhttp::verb method, std::string_view target, const Headers& headers, std::string body) {
  Res res;
  if (!connected_) return res;
  if (auto ec = send(make_request(method, target, headers, std::move(body)))) {
    ADD_FAILURE() << "write " << target << ": " << ec.message();
    return res;
  }
  if (auto ec = read(res)) {
    ADD_FAILURE() << "read " << target << ": " << ec.message();
    res = Res{};
  }
  return res;
}

error_code Client::read_header(ResParser& p, std::chrono::milliseconds deadline) {
  return run(deadline, [&](auto handler) { bhttp::async_read_header(stream_, buffer_, p, std::move(handler)); });
}

error_code Client::read_some(ResParser& p, std::chrono::milliseconds deadline) {
  return run(deadline, [&](auto handler) { bhttp::async_read_some(stream_, buffer_, p, std::move(handler)); });
}

error_code Client::read_rest(ResParser& p, std::chrono::milliseconds deadline) {
  return run(deadline, [&](auto handler) { bhttp::async_read(stream_, buffer_, p, std::move(handler)); });
}

std::pair<error_code, std::string> Client::read_raw_some(std::chrono::milliseconds deadline) {
  std::string out = beast::buffers_to_string(buffer_.data());
  buffer_.consume(buffer_.size());
  if (!out.empty()) return {error_code{}, out};
  char buf[4096];
  std::size_t got = 0;
  const auto ec = run(deadline, [&](auto handler) {
    stream_.async_read_some(net::buffer(buf), [&, h = std::move(handler)](error_code e, std::size_t n) mutable {
      got = n;
      h(e, n);
    });
  });
  out.append(buf, got);
  return {ec, out};
}

std::pair<error_code, std::string> Client::read_until_closed(std::chrono::milliseconds deadline) {
  std::string all = beast::buffers_to_string(buffer_.data());
  buffer_.consume(buffer_.size());
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left <= 0ms) return {beast::error::timeout, all};
    auto [ec, data] = read_raw_some(left);
    all += data;
    if (ec) return {ec, all};
  }
}

void Client::close() {
  error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.socket().close(ec);
}

bool is_closed(const error_code& ec) {
  return ec == net::error::eof || ec == bhttp::error::end_of_stream || ec == net::error::connection_reset ||
         ec == net::error::connection_aborted || ec == net::error::broken_pipe;
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds within) {
  const auto until = std::chrono::steady_clock::now() + within;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(5ms);
  }
}

std::string header(const Res& r, std::string_view name) {
  const auto it = r.find(name);
  return it == r.end() ? std::string() : std::string(it->value());
}

namespace {
// GTEST_SKIP returns from the function it is in: a void one.
void redis_url_into(std::string_view kv, std::string& out) {
  if (kv != "redis") return;
  const char* url = std::getenv("ALOU_TEST_REDIS_URL");
  if (url == nullptr || *url == '\0') {
    const char* require = std::getenv("ALOU_TEST_REQUIRE_REDIS");
    if (require != nullptr && std::string_view(require) == "1") {
      ADD_FAILURE() << "ALOU_TEST_REQUIRE_REDIS=1 but ALOU_TEST_REDIS_URL is not set";
      return;
    }
    GTEST_SKIP() << "set ALOU_TEST_REDIS_URL to run against Redis";
  }
  out = url;
}
}  // namespace

std::string redis_url_for(std::string_view kv) {
  std::string out;
  redis_url_into(kv, out);
  return out;
}

std::string unique_name(std::string_view prefix) {
  static std::atomic<int> counter{0};
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  return std::string(prefix) + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1)) + "-" +
         std::to_string(now % 1'000'000'007);
}

std::filesystem::path make_temp_dir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/alou-itest-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    return {};
  }
  return pattern;
}

// ---------------------------------------------------------------- fixture

void AppTest::SetUp() {
  init_logging_once();
  dir_ = make_temp_dir();
  ::setenv("ALOU_ADMIN_KEY", std::string(kAdminKey).c_str(), 1);
  settings_.server.listen = "127.0.0.1:0";
  settings_.server.threads = 2;
  settings_.server.shutdown_timeout_ms = 3000;
  settings_.storage.data_dir = (dir_ / "data").string();
  settings_.log.level = "warn";
  settings_.auth.key_cache_ms = 0;
  settings_.server.web_dir = ALOU_TEST_WEB_DIR;
  configure(settings_);
  if (boot_in_setup_) boot();
}

void AppTest::boot() {
  app::AppOptions options;
  auto probe = probe_;
  options.extra_routes = [probe](alou::http::Router& r) { add_probe_routes(r, probe); };
  auto created = app::App::create(settings_, std::move(options));
  ASSERT_TRUE(created) << created.error().code << ": " << created.error().message;
  app_ = std::move(*created);
  app_->start();
}

void AppTest::TearDown() {
  if (app_) app_->stop();
  app_.reset();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

Res AppTest::get(std::string_view target, const Headers& headers) {
  Client c(ep());
  return c.get(target, headers);
}

Res AppTest::request(bhttp::verb method, std::string_view target, const Headers& headers, std::string body) {
  Client c(ep());
  return c.request(method, target, headers, std::move(body));
}

Headers AppTest::bearer(std::string_view secret) { return {{"Authorization", "Bearer " + std::string(secret)}}; }

std::string AppTest::create_key(std::string name, bool owner, std::optional<std::int64_t> rpm) {
  auth::NewKey nk;
  nk.name = std::move(name);
  nk.role = owner ? Role::kOwner : Role::kMember;
  nk.rpm = rpm;
  auto created = app_->keys().create(nk);
  if (!created) {
    ADD_FAILURE() << "create key: " << created.error().message;
    return {};
  }
  return created->second;
}

double AppTest::gauge(std::string_view name) { return app_->metrics().gauge(name, "").value(); }

std::uint64_t AppTest::counter(std::string_view name, const Headers& labels) {
  return app_->metrics().counter(name, "", labels).value();
}

std::string AppTest::metrics_text() { return app_->metrics().render(); }

}  // namespace alou::itest
