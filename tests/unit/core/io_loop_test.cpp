// run_io: the io loop that polls briefly before sleeping.
#include "alou/core/io_loop.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <thread>

namespace net = boost::asio;
using namespace std::chrono_literals;

namespace {
// CPU time the calling thread has used.
std::chrono::nanoseconds thread_cpu() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}
}  // namespace

TEST(IoLoop, RunsHandlersAndTimersAndReturnsWhenOutOfWork) {
  for (auto busy : {0us, 50us}) {
    net::io_context ioc(1);
    int ran = 0;
    net::steady_timer t(ioc, 5ms);
    t.async_wait([&](auto) { ++ran; });
    for (int i = 0; i < 10; ++i) net::post(ioc, [&] { ++ran; });
    EXPECT_EQ(alou::run_io(ioc, busy), 11U);
    EXPECT_EQ(ran, 11);
  }
}

TEST(IoLoop, PicksUpWorkPostedFromAnotherThreadAndStopsOnStop) {
  net::io_context ioc(1);
  auto guard = net::make_work_guard(ioc);
  std::atomic<int> ran{0};
  std::size_t handlers = 0;
  double cpu_share = 1.0;
  std::thread loop([&] {
    const auto cpu0 = thread_cpu();
    const auto wall0 = std::chrono::steady_clock::now();
    handlers = alou::run_io(ioc, 50us);
    cpu_share = std::chrono::duration<double>(thread_cpu() - cpu0).count() /
                std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  });
  for (int i = 0; i < 100; ++i) {
    net::post(ioc, [&] { ran.fetch_add(1); });
    if (i % 10 == 0) std::this_thread::sleep_for(1ms);  // some land while it sleeps
  }
  while (ran.load() < 100) std::this_thread::sleep_for(1ms);
  // Idle with work outstanding: it must sleep, not spin.
  std::this_thread::sleep_for(300ms);
  ioc.stop();
  loop.join();
  EXPECT_EQ(ran.load(), 100);
  EXPECT_EQ(handlers, 100U);
  EXPECT_LT(cpu_share, 0.25) << "an idle loop kept polling";
}
