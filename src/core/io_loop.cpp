#include "alou/core/io_loop.hpp"

#include <sched.h>

namespace alou {

std::size_t run_io(boost::asio::io_context& ioc, std::chrono::microseconds busy_poll) {
  if (busy_poll.count() <= 0) return ioc.run();
  using Clock = std::chrono::steady_clock;
  std::size_t handlers = 0;
  while (!ioc.stopped()) {
    // Everything ready now (each poll also asks epoll, without waiting).
    if (const auto n = ioc.poll(); n > 0) {
      handlers += n;
      continue;
    }
    if (ioc.stopped()) break;
    // Nothing ready: poll a while before going to sleep.
    const auto until = Clock::now() + busy_poll;
    std::size_t got = 0;
    while (got == 0 && !ioc.stopped() && Clock::now() < until) {
      got = ioc.poll_one();
      // A thread waiting for this core (the upstream, the database
      // thread) runs first: polling only uses what nobody else wants.
      if (got == 0) sched_yield();
    }
    if (got > 0) {
      handlers += got;
      continue;
    }
    if (ioc.stopped()) break;
    // Sleep until the next event (or return: out of work, or stopped).
    const auto n = ioc.run_one();
    if (n == 0) break;
    handlers += n;
  }
  return handlers;
}

}  // namespace alou
