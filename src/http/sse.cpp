#include "alou/http/sse.hpp"

#include "alou/http/exchange.hpp"
#include "connection.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/field.hpp>
#include <spdlog/spdlog.h>

#include <deque>

namespace alou::http {
namespace net = boost::asio;

namespace {

constexpr auto kAwait = net::as_tuple(net::use_awaitable);
// A write that makes no progress for this long means the client is gone.
constexpr std::chrono::seconds kWriteStall{60};

}  // namespace

std::string encode_sse(const SseEvent& ev) {
  std::string out;
  out.reserve(ev.data.size() + ev.event.size() + ev.id.size() + 32);
  if (!ev.id.empty()) out.append("id: ").append(ev.id).append("\n");
  if (!ev.event.empty()) out.append("event: ").append(ev.event).append("\n");
  std::string_view rest = ev.data;
  do {
    const auto nl = rest.find('\n');
    out.append("data: ").append(rest.substr(0, nl)).append("\n");
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
  } while (!rest.empty());
  out.append("\n");
  return out;
}

namespace {

class Writer final : public SseWriter, public StreamControl {
 public:
  Writer(Connection& conn, const ServerSettings& s, std::string shutdown_event)
      : conn_(conn),
        max_queue_(s.sse_queue_events),
        heartbeat_(s.sse_heartbeat_ms),
        shutdown_event_(std::move(shutdown_event)),
        wake_writer_(conn.executor()),
        wake_producer_(conn.executor()),
        watchdog_(conn.executor()),
        stop_(conn.executor()) {}

  // No `co_return co_await push(temporary)`: GCC 12 miscompiles that form
  // (the resumed frame trapped with SIGILL); the text is a named local and
  // push takes it by reference.
  net::awaitable<bool> send(const SseEvent& ev) override {
    std::string text = encode_sse(ev);
    const bool ok = co_await push(text);
    co_return ok;
  }
  net::awaitable<bool> send_raw(std::string_view raw) override {
    std::string text(raw);
    const bool ok = co_await push(text);
    co_return ok;
  }
  bool closed() const override { return closed_; }

  void shutdown() override {
    shutdown_ = true;
    wake_writer_.cancel();
  }

  // Asio's `||` waits for the first operation that *succeeds* (a failure
  // does not cancel the others), so every branch of the stream's group
  // completes normally: failures are recorded in flags instead.
  net::awaitable<void> run_producer(const std::function<net::awaitable<void>(SseWriter&)>& producer) {
    try {
      co_await producer(*this);
    } catch (const boost::system::system_error& e) {
      if (e.code() != net::error::operation_aborted) producer_error_ = e.what();
    } catch (const std::exception& e) {
      producer_error_ = e.what();
    }
    producer_done_ = true;
    wake_writer_.cancel();
  }

  // Completes when the writer has ended the stream (client gone, write
  // error, shutdown): its `||` partner, the producer, is then cancelled.
  net::awaitable<void> wait_stop() {
    stop_.expires_at(net::steady_timer::time_point::max());
    while (!stopped_) {
      co_await stop_.async_wait(kAwait);
      const auto cs = co_await net::this_coro::cancellation_state;
      if (cs.cancelled() != net::cancellation_type::none) co_return;
    }
  }

  // Drains the queue into chunks; heartbeats when idle; ends the chunked body.
  net::awaitable<void> run_writer() {
    std::vector<net::const_buffer> bufs;
    std::vector<std::string> batch;
    for (;;) {
      if (queue_.empty()) {
        if (producer_done_) break;
        if (shutdown_) {
          queue_.push_back(shutdown_event_);
          producer_done_ = true;
          ended_by_shutdown_ = true;
          continue;
        }
        wake_writer_.expires_after(heartbeat_);
        auto [ec] = co_await wake_writer_.async_wait(kAwait);
        if (!ec && queue_.empty() && !producer_done_ && !shutdown_) queue_.push_back(": ping\n\n");
        // Named: GCC 12 miscompiles a co_await result used as a temporary
        // in a condition (the coroutine trapped with SIGILL on resume).
        const auto cs = co_await net::this_coro::cancellation_state;
        if (ec && cs.cancelled() != net::cancellation_type::none) {
          mark_closed();
          co_return;
        }
        continue;
      }
      // Everything queued goes out as one chunk: one syscall per burst.
      batch.clear();
      std::size_t total = 0;
      while (!queue_.empty() && batch.size() < 64) {
        total += queue_.front().size();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      wake_producer_.cancel();
      char head[24];
      const int hn = std::snprintf(head, sizeof head, "%zx\r\n", total);
      bufs.clear();
      bufs.emplace_back(head, static_cast<std::size_t>(hn));
      for (const auto& b : batch) bufs.emplace_back(b.data(), b.size());
      bufs.emplace_back("\r\n", 2);
      const bool ok = co_await write(bufs);
      if (!ok) co_return;
    }
    bufs.clear();
    bufs.emplace_back("0\r\n\r\n", 5);
    const bool ok = co_await write(bufs);
    if (!ok) co_return;
    stop();
  }

  // Closes the socket when a write stalls (a client that stopped reading).
  net::awaitable<void> run_watchdog() {
    for (;;) {
      watchdog_.expires_after(std::chrono::seconds(5));
      auto [ec] = co_await watchdog_.async_wait(kAwait);
      if (ec) co_return;
      if (writing_ && std::chrono::steady_clock::now() - write_started_ > kWriteStall) {
        conn_.abort();
        co_return;
      }
    }
  }

  void mark_closed() {
    closed_ = true;
    wake_producer_.cancel();
    stop();
  }

  void stop() {
    stopped_ = true;
    stop_.cancel();
  }

  const std::string& producer_error() const { return producer_error_; }

  bool ended_by_shutdown() const { return ended_by_shutdown_; }

 private:
  net::awaitable<bool> push(std::string& text) {
    while (!closed_ && queue_.size() >= max_queue_) {
      wake_producer_.expires_at(net::steady_timer::time_point::max());
      co_await wake_producer_.async_wait(kAwait);
      const auto cs = co_await net::this_coro::cancellation_state;
      if (cs.cancelled() != net::cancellation_type::none) co_return false;
    }
    if (closed_ || shutdown_) co_return false;
    queue_.push_back(std::move(text));
    wake_writer_.cancel();
    co_return true;
  }

  net::awaitable<bool> write(const std::vector<net::const_buffer>& bufs) {
    writing_ = true;
    write_started_ = std::chrono::steady_clock::now();
    const auto ec = co_await conn_.write_buffers(bufs);
    writing_ = false;
    if (ec) mark_closed();
    co_return !ec;
  }

  Connection& conn_;
  std::size_t max_queue_;
  std::chrono::milliseconds heartbeat_;
  std::string shutdown_event_;
  std::deque<std::string> queue_;
  net::steady_timer wake_writer_;
  net::steady_timer wake_producer_;
  net::steady_timer watchdog_;
  net::steady_timer stop_;
  std::string producer_error_;
  bool stopped_ = false;
  bool producer_done_ = false;
  bool closed_ = false;
  bool shutdown_ = false;
  bool ended_by_shutdown_ = false;
  bool writing_ = false;
  std::chrono::steady_clock::time_point write_started_;
};

}  // namespace

net::awaitable<void> Exchange::stream_sse(std::function<net::awaitable<void>(SseWriter&)> producer,
                                          SseOptions options) {
  using namespace net::experimental::awaitable_operators;
  Response head{Status::ok, req_.version()};
  head.set(bhttp::field::content_type, "text/event-stream");
  head.set(bhttp::field::cache_control, "no-cache");
  head.set("x-accel-buffering", "no");
  for (auto& [k, v] : options.headers) head.set(k, v);
  head.chunked(true);
  head.keep_alive(req_.keep_alive());
  conn_.pipeline().finish_head(*this, head);
  if (auto ec = co_await conn_.write_head(head, options.first)) {
    conn_.close_after_response();
    co_return;
  }
  head_sent = true;
  sent_status = 200;

  if (options.shutdown_event.empty()) {
    options.shutdown_event =
        "event: error\ndata: {\"error\":{\"code\":\"server_shutdown\",\"message\":\"the server is shutting "
        "down\"}}\n\n";
  }
  Writer w(conn_, conn_.settings(), std::move(options.shutdown_event));
  conn_.set_stream_control(&w);
  struct Unregister {
    Connection& c;
    ~Unregister() { c.set_stream_control(nullptr); }
  } unregister{conn_};
  if (conn_.shutting_down()) w.shutdown();
  // The producer runs until it returns or the writer stops the stream; the
  // writer drains the queue; the watchdog closes stalled writes; the
  // watcher notices a client that goes away. The route may already watch
  // the client (RouteOptions::watch_client): then one reader is enough.
  try {
    if (route() && route()->options.watch_client) {
      co_await (((w.run_producer(producer) || w.wait_stop()) && w.run_writer()) || w.run_watchdog());
    } else {
      auto r = co_await (((w.run_producer(producer) || w.wait_stop()) && w.run_writer()) || w.run_watchdog() ||
                         conn_.watch_read());
      if (r.index() != 0) w.mark_closed();
    }
  } catch (const std::exception& e) {
    w.mark_closed();
    spdlog::debug("[{}] stream ended: {}", request_id, e.what());
  }
  if (!w.producer_error().empty()) spdlog::error("[{}] stream producer failed: {}", request_id, w.producer_error());
  // A stream that did not end with its terminating chunk leaves the
  // connection unusable; after a shutdown it closes anyway.
  if (w.closed() || w.ended_by_shutdown()) conn_.close_after_response();
}

}  // namespace alou::http
