#pragma once
// `alou mock-upstream`'s routes on their own http::Server, io_context and
// thread, on 127.0.0.1:0: the provider that integration tests talk to over
// real sockets. A test may put one filter in front (to count or record the
// requests that reach it).
#include "alou/core/metrics.hpp"
#include "alou/http/filter.hpp"
#include "alou/http/server.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <memory>
#include <thread>

namespace alou::itest {

class MockUpstream {
 public:
  MockUpstream() = default;
  MockUpstream(const MockUpstream&) = delete;
  MockUpstream& operator=(const MockUpstream&) = delete;
  ~MockUpstream() { stop(); }

  // ADD_FAILURE and false if it cannot listen.
  bool start(std::shared_ptr<http::Filter> filter = nullptr);
  void stop();
  std::uint16_t port() const;
  // Requests the upstream is handling now.
  double in_flight();

 private:
  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ =
      boost::asio::make_work_guard(ioc_);
  metrics::Registry registry_;
  std::unique_ptr<http::Server> server_;
  std::thread thread_;
};

}  // namespace alou::itest
