// The listener speaking TLS (a self-signed certificate made with the openssl
// command line), and a TLS configuration that cannot be loaded.
#include "harness.hpp"

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>

namespace alou::itest {
namespace {

namespace ssl = net::ssl;

bool make_self_signed(const std::filesystem::path& dir) {
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -keyout '" + (dir / "key.pem").string() +
                          "' -out '" + (dir / "cert.pem").string() +
                          "' -days 1 -subj /CN=localhost >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

class Tls : public AppTest {
 protected:
  void configure(Settings& s) override {
    ASSERT_TRUE(make_self_signed(dir_)) << "openssl req failed";
    s.server.tls_cert = (dir_ / "cert.pem").string();
    s.server.tls_key = (dir_ / "key.pem").string();
  }
};

template <class Start>
error_code drive(net::io_context& ioc, Start&& start) {
  error_code result = net::error::would_block;
  start([&](error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

TEST_F(Tls, HealthOverTls) {
  ASSERT_TRUE(booted());
  EXPECT_TRUE(app_->url().starts_with("https://")) << app_->url();
  net::io_context ioc;
  ssl::context ctx(ssl::context::tls_client);
  ctx.set_verify_mode(ssl::verify_none);
  beast::ssl_stream<beast::tcp_stream> s(ioc, ctx);
  beast::get_lowest_layer(s).expires_after(kIo);
  const tcp::endpoint endpoint = ep();
  ASSERT_FALSE(drive(ioc, [&](auto h) { beast::get_lowest_layer(s).async_connect(endpoint, std::move(h)); }));
  ASSERT_FALSE(drive(ioc, [&](auto h) { s.async_handshake(ssl::stream_base::client, std::move(h)); }));
  Req req = make_request(bhttp::verb::get, "/api/health");
  ASSERT_FALSE(drive(ioc, [&](auto h) { bhttp::async_write(s, req, std::move(h)); }));
  beast::flat_buffer buf;
  Res res;
  const auto ec = drive(ioc, [&](auto h) { bhttp::async_read(s, buf, res, std::move(h)); });
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(nlohmann::json::parse(res.body(), nullptr, false), nlohmann::json({{"status", "ok"}}));
  EXPECT_FALSE(header(res, "x-request-id").empty());
}

TEST_F(Tls, PlainHttpToTlsListenerIsDropped) {
  ASSERT_TRUE(booted());
  Client c(ep());
  ASSERT_FALSE(c.send(make_request(bhttp::verb::get, "/api/health")));
  const auto [ec, data] = c.read_until_closed(2000ms);
  EXPECT_TRUE(is_closed(ec)) << ec.message();
  EXPECT_EQ(data.find("HTTP/1.1 200"), std::string::npos);
}

class TlsConfig : public AppTest {
 protected:
  void SetUp() override {
    boot_in_setup_ = false;
    AppTest::SetUp();
  }
};

TEST_F(TlsConfig, MissingCertificateIsTlsInvalid) {
  settings_.server.tls_cert = (dir_ / "no-such-cert.pem").string();
  settings_.server.tls_key = (dir_ / "no-such-key.pem").string();
  auto created = app::App::create(settings_);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, "tls_invalid");
  EXPECT_NE(created.error().message.find("no-such-cert.pem"), std::string::npos) << created.error().message;
}

TEST_F(TlsConfig, KeyNotMatchingCertificateIsTlsInvalid) {
  ASSERT_TRUE(make_self_signed(dir_));
  const auto other = dir_ / "other";
  std::filesystem::create_directories(other);
  ASSERT_TRUE(make_self_signed(other));
  settings_.server.tls_cert = (dir_ / "cert.pem").string();
  settings_.server.tls_key = (other / "key.pem").string();
  auto created = app::App::create(settings_);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, "tls_invalid");
}

}  // namespace
}  // namespace alou::itest
