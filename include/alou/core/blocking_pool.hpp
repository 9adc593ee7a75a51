#pragma once
// The one audited way to run blocking work (SQLite, files, heavy crypto) off
// the io threads: `co_await pool.run([&]{ ... })` executes the callable on a
// pool thread and resumes the caller on its own executor. Exceptions thrown
// by the callable propagate to the awaiting coroutine.
//
// Thread-safety: run() may be called from any thread. Cancellation: the
// callable itself is not interrupted; the caller resumes once it finishes.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstddef>
#include <type_traits>
#include <utility>

namespace alou {

class BlockingPool final {
 public:
  explicit BlockingPool(std::size_t threads) : pool_(threads) {}
  ~BlockingPool() { join(); }
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  template <class F>
  boost::asio::awaitable<std::invoke_result_t<F>> run(F f) {
    using R = std::invoke_result_t<F>;
    // Named, not a temporary inside co_await: GCC 12 destroys such
    // temporaries twice.
    auto task = [f = std::move(f)]() mutable -> boost::asio::awaitable<R> { co_return f(); };
    co_return co_await boost::asio::co_spawn(pool_.get_executor(), std::move(task), boost::asio::use_awaitable);
  }

  boost::asio::thread_pool::executor_type executor() { return pool_.get_executor(); }

  // Waits for queued work to finish; idempotent.
  void join() {
    if (!joined_) {
      joined_ = true;
      pool_.join();
    }
  }

 private:
  boost::asio::thread_pool pool_;
  bool joined_ = false;
};

}  // namespace alou
