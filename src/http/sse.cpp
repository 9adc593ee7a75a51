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

std::string encode_event(const SseEvent& ev) {
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

class Writer final : public SseWriter, public StreamControl {
 public:
  Writer(Connection& conn, const ServerSettings& s, std::string shutdown_event)
      : conn_(conn),
        max_queue_(s.sse_queue_events),
        heartbeat_(s.sse_heartbeat_ms),
        shutdown_event_(std::move(shutdown_event)),
        wake_writer_(conn.executor()),
        wake_producer_(conn.executor()),
        watchdog_(conn.executor()) {}

  net::awaitable<bool> send(const SseEvent& ev) override { co_return co_await push(encode_event(ev)); }
  net::awaitable<bool> send_raw(std::string_view text) override { co_return co_await push(std::string(text)); }
  bool closed() const override { return closed_; }

  void shutdown() override {
    shutdown_ = true;
    wake_writer_.cancel();
  }

  net::awaitable<void> run_producer(const std::function<net::awaitable<void>(SseWriter&)>& producer) {
    co_await producer(*this);
    producer_done_ = true;
    wake_writer_.cancel();
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
        if (ec && (co_await net::this_coro::cancellation_state).cancelled() != net::cancellation_type::none) {
          throw boost::system::system_error(net::error::operation_aborted);
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
      co_await write(bufs);
    }
    bufs.clear();
    bufs.emplace_back("0\r\n\r\n", 5);
    co_await write(bufs);
    if (ended_by_shutdown_) throw boost::system::system_error(net::error::shut_down);
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
  }

  bool ended_by_shutdown() const { return ended_by_shutdown_; }

 private:
  net::awaitable<bool> push(std::string text) {
    while (!closed_ && queue_.size() >= max_queue_) {
      wake_producer_.expires_at(net::steady_timer::time_point::max());
      co_await wake_producer_.async_wait(kAwait);
      if ((co_await net::this_coro::cancellation_state).cancelled() != net::cancellation_type::none) {
        throw boost::system::system_error(net::error::operation_aborted);
      }
    }
    if (closed_ || shutdown_) co_return false;
    queue_.push_back(std::move(text));
    wake_writer_.cancel();
    co_return true;
  }

  net::awaitable<void> write(const std::vector<net::const_buffer>& bufs) {
    writing_ = true;
    write_started_ = std::chrono::steady_clock::now();
    auto ec = co_await conn_.write_buffers(bufs);
    writing_ = false;
    if (ec) {
      mark_closed();
      throw boost::system::system_error(ec);
    }
  }

  Connection& conn_;
  std::size_t max_queue_;
  std::chrono::milliseconds heartbeat_;
  std::string shutdown_event_;
  std::deque<std::string> queue_;
  net::steady_timer wake_writer_;
  net::steady_timer wake_producer_;
  net::steady_timer watchdog_;
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
  if (auto ec = co_await conn_.write_head(head)) {
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
  try {
    // The route may already watch the client (RouteOptions::watch_client):
    // then one reader is enough and it cancels this whole group.
    if (route() && route()->options.watch_client) {
      co_await ((w.run_producer(producer) && w.run_writer()) || w.run_watchdog());
    } else {
      auto r = co_await ((w.run_producer(producer) && w.run_writer()) || w.run_watchdog() || conn_.watch_read());
      if (r.index() != 0) {
        w.mark_closed();
        conn_.close_after_response();
      }
    }
  } catch (const boost::system::system_error& e) {
    // The client went away, a write stalled or the server shut down.
    w.mark_closed();
    conn_.close_after_response();
    if (!w.ended_by_shutdown() && e.code() != net::error::operation_aborted) {
      spdlog::debug("[{}] stream ended: {}", request_id, e.code().message());
    }
  }
}

}  // namespace alou::http
