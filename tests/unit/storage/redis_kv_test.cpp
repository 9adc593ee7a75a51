// Redis-specific behaviour: URLs, deadlines, late replies, reconnects.
#include "alou/storage/kv.hpp"

#include "io_runner.hpp"
#include "storage/redis_url.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <cstdlib>
#include <future>
#include <thread>

namespace alou::storage {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;
using testing::IoRunner;

TEST(RedisUrl, HostPortAndDefaults) {
  auto u = parse_redis_url("redis://127.0.0.1:6390").value();
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, "6390");
  EXPECT_EQ(u.password, "");
  EXPECT_EQ(u.db, 0);
  auto d = parse_redis_url("redis://cache").value();
  EXPECT_EQ(d.host, "cache");
  EXPECT_EQ(d.port, "6379");
}

TEST(RedisUrl, PasswordUserAndDatabase) {
  auto u = parse_redis_url("redis://:p%40ss:w@redis.local:7000/3").value();
  EXPECT_EQ(u.host, "redis.local");
  EXPECT_EQ(u.port, "7000");
  EXPECT_EQ(u.user, "");
  EXPECT_EQ(u.password, "p@ss:w");
  EXPECT_EQ(u.db, 3);
  auto acl = parse_redis_url("redis://alice:secret@[::1]:7001/0").value();
  EXPECT_EQ(acl.user, "alice");
  EXPECT_EQ(acl.password, "secret");
  EXPECT_EQ(acl.host, "::1");
  EXPECT_EQ(acl.port, "7001");
}

TEST(RedisUrl, ErrorsNeverContainThePassword) {
  for (const char* url : {"redis://:hunter2@host:notaport", "redis://:hunter2@host:1/x", "rediss://:hunter2@host",
                          "redis://:hunter2@:1"}) {
    auto r = parse_redis_url(url);
    ASSERT_FALSE(r) << url;
    EXPECT_EQ(r.error().message.find("hunter2"), std::string::npos) << r.error().message;
  }
}

TEST(RedisKv, BadUrlIsRejectedAtCreation) {
  IoRunner io;
  StorageSettings s;
  s.redis_url = "http://localhost";
  EXPECT_FALSE(make_redis_kv(io.executor(), s));
  io.join();
}

unsigned short closed_port() {
  asio::io_context ctx;
  asio::ip::tcp::acceptor acceptor(ctx, {asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();  // closed again when acceptor goes
}

TEST(RedisKv, ClosedPortFailsFastWithKvUnavailable) {
  IoRunner io;
  StorageSettings s;
  s.redis_url = "redis://127.0.0.1:" + std::to_string(closed_port());
  s.redis_timeout_ms = 1000;
  auto kv = make_redis_kv(io.executor(), s).value();
  for (int i = 0; i < 3; ++i) {  // the first connect, then attempts after back-off
    auto start = std::chrono::steady_clock::now();
    auto r = io.await(kv->get("k"));
    auto elapsed = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().status, 503);
    EXPECT_EQ(r.error().code, "kv_unavailable");
    EXPECT_LT(elapsed, 1500ms);
  }
  auto p = io.await(kv->ping());
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, "kv_unavailable");
  kv.reset();
  io.join();
}

// A server that accepts and reads but answers only when told to.
class SilentServer final {
 public:
  SilentServer() : acceptor_(ctx_, {asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] { serve(); });
  }
  ~SilentServer() {
    release_.set_value();
    thread_.join();
  }
  unsigned short port() const { return acceptor_.local_endpoint().port(); }
  // Sends `late` for the first command and `next` for the second.
  void answer(std::string late, std::string next) {
    late_ = std::move(late);
    next_ = std::move(next);
    go_.set_value();
  }

 private:
  void serve() {
    boost::system::error_code ec;
    asio::ip::tcp::socket s(ctx_);
    acceptor_.accept(s, ec);
    if (ec) return;
    char buf[4096];
    s.read_some(asio::buffer(buf), ec);
    auto go = go_.get_future();
    auto release = release_.get_future();
    while (go.wait_for(10ms) != std::future_status::ready) {
      if (release.wait_for(0ms) == std::future_status::ready) return;
    }
    asio::write(s, asio::buffer(late_), ec);
    s.read_some(asio::buffer(buf), ec);
    asio::write(s, asio::buffer(next_), ec);
    release.wait();
  }

  asio::io_context ctx_;
  asio::ip::tcp::acceptor acceptor_;
  std::promise<void> go_;
  std::promise<void> release_;
  std::string late_;
  std::string next_;
  std::thread thread_;
};

TEST(RedisKv, CallMissingItsDeadlineFailsAndTheLateReplyIsIgnored) {
  SilentServer server;
  IoRunner io;
  StorageSettings s;
  s.redis_url = "redis://127.0.0.1:" + std::to_string(server.port());
  s.redis_timeout_ms = 300;
  auto kv = make_redis_kv(io.executor(), s).value();

  auto start = std::chrono::steady_clock::now();
  auto r = io.await(kv->get("k"));
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "kv_unavailable");
  EXPECT_GE(elapsed, 250ms);
  EXPECT_LT(elapsed, 1500ms);

  // The reply to the timed-out call arrives now; it must go nowhere, and
  // the next call must get its own reply.
  server.answer("$4\r\nlate\r\n", "$3\r\nnew\r\n");
  auto second = io.await(kv->get("k2"));
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(*second, "new");
  kv.reset();
  io.join();
}

// ---------------------------------------------------------------- real Redis

std::optional<std::string> redis_url() {
  const char* url = std::getenv("ALOU_TEST_REDIS_URL");
  if (url == nullptr || *url == '\0') return std::nullopt;
  return url;
}

#define ALOU_REQUIRE_REDIS()                                                   \
  do {                                                                         \
    if (!redis_url()) {                                                        \
      const char* req = std::getenv("ALOU_TEST_REQUIRE_REDIS");                \
      if (req != nullptr && std::string(req) == "1") FAIL() << "no Redis";     \
      GTEST_SKIP() << "ALOU_TEST_REDIS_URL is not set";                        \
    }                                                                          \
  } while (false)

// Sends one raw RESP command on a fresh connection and returns the reply line.
std::string raw_command(const std::string& resp) {
  auto url = parse_redis_url(*redis_url()).value();
  asio::io_context ctx;
  asio::ip::tcp::socket s(ctx);
  asio::ip::tcp::resolver resolver(ctx);
  asio::connect(s, resolver.resolve(url.host, url.port));
  std::string cmd;
  if (!url.password.empty()) {
    cmd += "*2\r\n$4\r\nAUTH\r\n$" + std::to_string(url.password.size()) + "\r\n" + url.password + "\r\n";
  }
  cmd += resp;
  asio::write(s, asio::buffer(cmd));
  std::string reply(256, '\0');
  std::this_thread::sleep_for(50ms);
  auto n = s.read_some(asio::buffer(reply));
  reply.resize(n);
  return reply;
}

TEST(RedisKvLive, ReconnectsAfterTheServerDropsTheConnection) {
  ALOU_REQUIRE_REDIS();
  IoRunner io;
  StorageSettings s;
  s.redis_url = *redis_url();
  auto kv = make_redis_kv(io.executor(), s).value();
  ASSERT_TRUE(io.await(kv->set("alou-test:reconnect", "v", 10'000ms)));

  auto killed = raw_command(
      "*6\r\n$6\r\nCLIENT\r\n$4\r\nKILL\r\n$4\r\nTYPE\r\n$6\r\nnormal\r\n$6\r\nSKIPME\r\n$3\r\nyes\r\n");
  ASSERT_NE(killed.find(":"), std::string::npos) << killed;
  std::this_thread::sleep_for(100ms);

  auto r = io.await(kv->get("alou-test:reconnect"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "v");
  kv.reset();
  io.join();
}

TEST(RedisKvLive, ScriptsSurviveAScriptCacheFlush) {
  ALOU_REQUIRE_REDIS();
  IoRunner io;
  StorageSettings s;
  s.redis_url = *redis_url();
  auto kv = make_redis_kv(io.executor(), s).value();
  ASSERT_EQ(io.await(kv->incr("alou-test:script", 1, 1000ms)).value(), 1);
  raw_command("*2\r\n$6\r\nSCRIPT\r\n$5\r\nFLUSH\r\n");
  EXPECT_EQ(io.await(kv->incr("alou-test:script", 1, 1000ms)).value(), 2);
  ASSERT_TRUE(io.await(kv->del("alou-test:script")));
  kv.reset();
  io.join();
}

TEST(RedisKvLive, FlushClosesTheConnectionAfterTheIoThreadsStopped) {
  ALOU_REQUIRE_REDIS();
  IoRunner io;
  StorageSettings s;
  s.redis_url = *redis_url();
  auto kv = make_redis_kv(io.executor(), s).value();
  ASSERT_TRUE(io.await(kv->ping()));
  io.context().stop();
  io.join();
  kv->flush();
  kv.reset();
}

}  // namespace
}  // namespace alou::storage
