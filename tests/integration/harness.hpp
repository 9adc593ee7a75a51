#pragma once
// The integration harness: boots the real gateway in-process on
// 127.0.0.1:0 (temp data_dir, real SQLite, embedded KV or Redis) with a few
// probe routes, and a blocking client that drives it from the test thread.
//
// The client runs every operation on its own io_context with a deadline
// (beast::tcp_stream::expires_after), so a server that never answers fails
// the test instead of hanging it.
#include "alou/app/app.hpp"
#include "alou/core/config.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace alou::itest {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using Res = bhttp::response<bhttp::string_body>;
using Req = bhttp::request<bhttp::string_body>;
using ResParser = bhttp::response_parser<bhttp::string_body>;
using Headers = std::vector<std::pair<std::string, std::string>>;
using namespace std::chrono_literals;

// Deadline on every client operation unless a test says otherwise.
inline constexpr std::chrono::milliseconds kIo{5000};
// The admin key the fixture puts in ALOU_ADMIN_KEY.
inline constexpr std::string_view kAdminKey = "itest-admin-key-0123456789abcdef";

// What the probe routes observed (shared with the io threads).
struct Probe {
  std::atomic<int> sse_started{0};
  std::atomic<int> sse_sent{0};
  std::atomic<bool> sse_cancelled{false};  // an await threw or send() returned false
  std::atomic<bool> sse_finished{false};   // the producer sent all its events
  std::atomic<int> slow_done{0};
  std::atomic<int> ws_echoed{0};
  std::atomic<bool> ws_too_large{false};   // read() reported ws_too_large
  std::atomic<bool> ws_ended{false};       // the echo loop returned
};

// The probe routes (all public, except /test/whoami which needs a key):
//   GET /test/slow?ms=N       sleeps N ms, then 200 {"slept":N}
//   GET /test/sse?n=N&ms=M    N events ("tick", data {"i":k}, id k), M ms apart
//   GET /test/ws              WebSocket echo, max_message_bytes = 1024
//   GET /test/whoami          authenticated: {"id","name","owner"}
void add_probe_routes(alou::http::Router& router, std::shared_ptr<Probe> probe);

Req make_request(bhttp::verb method, std::string_view target, const Headers& headers = {},
                 std::string body = {});

class Client {
 public:
  // Connects (ADD_FAILURE and an unusable client if it cannot).
  explicit Client(const tcp::endpoint& ep, std::chrono::milliseconds deadline = kIo);
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Connect only: the error (connection_refused once the server stopped).
  static error_code try_connect(const tcp::endpoint& ep, std::chrono::milliseconds deadline = 1000ms);

  bool connected() const { return connected_; }

  error_code send(Req req, std::chrono::milliseconds deadline = kIo);
  error_code send_raw(std::string_view bytes, std::chrono::milliseconds deadline = kIo);
  error_code read(Res& out, std::chrono::milliseconds deadline = kIo);
  // send + read; a failure is reported (ADD_FAILURE) and an empty 0 response returned.
  Res request(bhttp::verb method, std::string_view target, const Headers& headers = {}, std::string body = {});
  Res get(std::string_view target, const Headers& headers = {}) { return request(bhttp::verb::get, target, headers); }

  // Streaming reads into a parser (SSE).
  error_code read_header(ResParser& p, std::chrono::milliseconds deadline = kIo);
  error_code read_some(ResParser& p, std::chrono::milliseconds deadline = kIo);
  error_code read_rest(ResParser& p, std::chrono::milliseconds deadline = kIo);

  // Raw bytes: whatever arrives next (also what the parser buffered).
  std::pair<error_code, std::string> read_raw_some(std::chrono::milliseconds deadline = kIo);
  // Everything until the peer closes: eof / connection_reset means closed,
  // beast::error::timeout means the peer kept the connection open.
  std::pair<error_code, std::string> read_until_closed(std::chrono::milliseconds deadline = kIo);

  void close();
  beast::tcp_stream& stream() { return stream_; }

 private:
  template <class Start>
  error_code run(std::chrono::milliseconds deadline, Start&& start);

  net::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  bool connected_ = false;
};

// true: the error means the peer closed the connection.
bool is_closed(const error_code& ec);

// Polls `pred` every 5 ms until it holds or `within` passed.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds within = 2000ms);

std::string header(const Res& r, std::string_view name);

// Builds settings rooted in a fresh temp dir, boots the app with the probe
// routes and starts it; stop() in TearDown. Derived fixtures adjust the
// settings in configure().
class AppTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  virtual void configure(Settings&) {}
  // Creates and starts the app (called by SetUp unless a fixture skips).
  void boot();
  bool booted() const { return app_ != nullptr; }

  tcp::endpoint ep() const { return app_->endpoint(); }
  Res get(std::string_view target, const Headers& headers = {});
  Res request(bhttp::verb method, std::string_view target, const Headers& headers = {}, std::string body = {});
  static Headers bearer(std::string_view secret);
  // A new key's secret (ADD_FAILURE on error).
  std::string create_key(std::string name, bool owner = false, std::optional<std::int64_t> rpm = std::nullopt);
  double gauge(std::string_view name);
  // A counter's value (labels in registration order).
  std::uint64_t counter(std::string_view name, const Headers& labels = {});
  std::string metrics_text();

  std::filesystem::path dir_;
  Settings settings_;
  std::shared_ptr<Probe> probe_ = std::make_shared<Probe>();
  std::unique_ptr<app::App> app_;
  bool boot_in_setup_ = true;
};

// For fixtures parameterized over the KV ("embedded" or "redis"): the
// Redis URL to configure ("" for the embedded KV). Wanting Redis without
// ALOU_TEST_REDIS_URL skips the test (fails it with
// ALOU_TEST_REQUIRE_REDIS=1); the caller's SetUp then returns when
// IsSkipped() or HasFailure().
std::string redis_url_for(std::string_view kv);

// A unique name for keys and temp dirs (pid + counter + clock).
std::string unique_name(std::string_view prefix);
// A fresh temp directory under $TMPDIR (or /tmp).
std::filesystem::path make_temp_dir();

}  // namespace alou::itest
