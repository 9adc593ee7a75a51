#include "mock_upstream.hpp"

#include "alou/mock/upstream.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

namespace alou::itest {

bool MockUpstream::start(std::shared_ptr<http::Filter> filter) {
  http::Router router;
  mock::add_upstream_routes(router);
  ServerSettings ss;
  ss.listen = "127.0.0.1:0";
  ss.shutdown_timeout_ms = 1000;
  std::vector<std::shared_ptr<http::Filter>> filters;
  if (filter) filters.push_back(std::move(filter));
  auto created = http::Server::create(ioc_, ss, std::move(router), std::move(filters), registry_);
  if (!created) {
    ADD_FAILURE() << "mock upstream: " << created.error().message;
    return false;
  }
  server_ = std::move(*created);
  server_->start();
  thread_ = std::thread([this] { ioc_.run(); });
  return true;
}

void MockUpstream::stop() {
  if (!server_) return;
  auto done = boost::asio::co_spawn(ioc_, server_->shutdown(std::chrono::milliseconds(1000)), boost::asio::use_future);
  done.wait();
  work_.reset();
  ioc_.stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

std::uint16_t MockUpstream::port() const { return server_->endpoint().port(); }

double MockUpstream::in_flight() { return registry_.gauge("alou_http_requests_in_flight", "").value(); }

}  // namespace alou::itest
