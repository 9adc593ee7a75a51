#pragma once
// Runs an io_context on the calling thread, polling for up to `busy_poll`
// after the last handler before sleeping in the kernel.
//
// With nothing to do, io_context::run() sleeps in epoll_wait, and the next
// event (a client's request, an upstream's answer a few tens of µs later)
// must wake the thread: on a virtual machine an idle vCPU's wake-up costs
// tens of µs, paid twice per proxied request. Polling (epoll_wait with a
// zero timeout) for a short window after the last event catches those
// events without a wake-up. An idle thread still sleeps: it polls only for
// `busy_poll` after the last handler ran. `busy_poll` of zero is run().
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>

namespace alou {

// Returns when the io_context is stopped or runs out of work; the number
// of handlers run.
std::size_t run_io(boost::asio::io_context& ioc, std::chrono::microseconds busy_poll);

}  // namespace alou
