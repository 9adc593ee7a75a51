#pragma once
// Runs an io_context on a few threads for the duration of a test and
// awaits coroutines from the test's thread.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace alou::storage::testing {

class IoRunner final {
 public:
  explicit IoRunner(int threads = 2) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { ctx_.run(); });
  }
  ~IoRunner() { join(); }
  IoRunner(const IoRunner&) = delete;
  IoRunner& operator=(const IoRunner&) = delete;

  boost::asio::any_io_executor executor() { return ctx_.get_executor(); }
  boost::asio::io_context& context() { return ctx_; }

  // Lets run() return once the queued work is done, and waits for it.
  void join() {
    guard_.reset();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  template <class T>
  T await(boost::asio::awaitable<T> a) {
    return boost::asio::co_spawn(ctx_, std::move(a), boost::asio::use_future).get();
  }

 private:
  boost::asio::io_context ctx_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{ctx_.get_executor()};
  std::vector<std::thread> threads_;
};

// A fresh directory under the system temp dir, removed at the end.
class TempDir final {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path_ = std::filesystem::temp_directory_path() /
            ("alou-storage-test-" + std::to_string(stamp) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace alou::storage::testing
