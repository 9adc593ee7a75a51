#include "upstream.hpp"

#include "process.hpp"

#include "alou/core/metrics.hpp"
#include "alou/http/client.hpp"
#include "alou/mcp/jsonrpc.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <signal.h>

#include <deque>
#include <mutex>
#include <unordered_map>

namespace alou::mcp {
namespace net = boost::asio;
using namespace std::chrono_literals;
using Ms = std::chrono::milliseconds;

namespace {

constexpr std::size_t kMaxLineBytes = 16 * 1024 * 1024;  // one JSON-RPC message from a server
constexpr std::size_t kMaxStderrLine = 8 * 1024;
constexpr std::size_t kMaxPages = 100;                    // of one paginated list
constexpr Ms kFirstBackoff{250};
constexpr Ms kMaxBackoff{30'000};
constexpr Ms kStableAfter{30'000};                        // up this long: backoff starts over

std::string clip(std::string_view s, std::size_t n = 300) {
  if (s.size() <= n) return std::string(s);
  return std::string(s.substr(0, n)) + "…";
}

// Result<json> cannot be built implicitly: json converts from anything.
Result<json> ok(json j) { return Result<json>(boost::system::in_place_value, std::move(j)); }

Error unavailable(const std::string& server, const std::string& why) {
  return Error{503, "mcp_server_unavailable", "MCP server \"" + server + "\" is unavailable: " + why};
}

// The base: the supervision loop, the lists, the status. Transports
// implement the connection.
class UpstreamBase : public Upstream, public std::enable_shared_from_this<UpstreamBase> {
 public:
  UpstreamBase(const McpServerSettings& s, net::any_io_executor ex, metrics::Registry& m, OnChange on_change)
      : settings_(s),
        strand_(net::make_strand(ex)),
        on_change_(std::move(on_change)),
        wake_(strand_),
        restarts_metric_(m.counter("alou_mcp_server_restarts_total", "Reconnections of an MCP server after it failed",
                                   {{"server", s.name}})),
        malformed_metric_(m.counter("alou_mcp_malformed_messages_total",
                                    "Messages from an MCP server that were not valid JSON-RPC",
                                    {{"server", s.name}})),
        up_metric_(m.gauge("alou_mcp_server_up", "1 when the MCP server is initialized and answering",
                           {{"server", s.name}})) {}

  void start() override {
    auto self = shared_from_this();
    auto loop = [self]() -> net::awaitable<void> { co_await self->supervise(); };
    net::co_spawn(strand_, std::move(loop), net::detached);
  }

  net::awaitable<void> shutdown() override {
    auto self = shared_from_this();
    auto task = [self]() -> net::awaitable<void> {
      self->stopping_ = true;
      self->wake_.cancel();
      self->on_stop();
      net::steady_timer t(self->strand_);
      for (int i = 0; i < 500 && !self->finished_; ++i) {
        t.expires_after(10ms);
        co_await t.async_wait(net::as_tuple(net::use_awaitable));
      }
      if (!self->finished_) spdlog::warn("mcp {}: did not stop within 5 s", self->settings_.name);
    };
    co_await net::co_spawn(strand_, std::move(task), net::use_awaitable);
  }

  net::awaitable<Result<json>> request(std::string method, json params) override {
    auto self = shared_from_this();
    auto task = [self, method = std::move(method), params = std::move(params)]() mutable
        -> net::awaitable<Result<json>> {
      if (!self->ready_) {
        co_return unavailable(self->settings_.name,
                              self->last_error_.empty() ? std::string("not connected yet") : self->last_error_);
      }
      auto r = co_await self->raw_request(std::move(method), std::move(params), Ms(self->settings_.timeout_ms));
      co_return r;
    };
    auto r = co_await net::co_spawn(strand_, std::move(task), net::use_awaitable);
    co_return r;
  }

  const std::string& name() const override { return settings_.name; }
  const McpServerSettings& settings() const override { return settings_; }

  json status() const override {
    std::lock_guard lock(mu_);
    json j = {{"name", settings_.name},
              {"transport", settings_.transport},
              {"state", state_},
              {"tools", lists_.tools.size()},
              {"resources", lists_.resources.size()},
              {"prompts", lists_.prompts.size()},
              {"restarts", restarts_},
              {"last_error", last_error_copy_.empty() ? json(nullptr) : json(last_error_copy_)},
              {"protocol_version", protocol_version_.empty() ? json(nullptr) : json(protocol_version_)},
              {"server_info", server_info_}};
    return j;
  }

  ServerLists lists() const override {
    std::lock_guard lock(mu_);
    return lists_;
  }

 protected:
  // --- the transport (all on the strand) ---
  virtual net::awaitable<Result<void>> connect_once() = 0;
  // A request without the readiness check (the handshake uses it).
  virtual net::awaitable<Result<json>> raw_request(std::string method, json params, Ms timeout) = 0;
  virtual net::awaitable<void> raw_notify(std::string method, json params) = 0;
  // Waits up to `d`; true if the connection went down meanwhile.
  virtual net::awaitable<bool> wait_down(Ms d) = 0;
  virtual net::awaitable<void> disconnect() = 0;
  virtual void on_stop() {}

  // A message the server sent on its own (notification or request).
  void handle_incoming(const Message& m) {
    if (m.kind == Message::Kind::kNotification) {
      if (m.method == "notifications/tools/list_changed" || m.method == "notifications/resources/list_changed" ||
          m.method == "notifications/prompts/list_changed") {
        if (ready_) schedule_refresh();
      } else if (m.method == "notifications/message") {
        spdlog::info("mcp {}: {}", settings_.name, clip(m.params.dump(), 2000));
      }
      return;
    }
    if (m.kind == Message::Kind::kRequest) {
      // Alou offers no client features (roots, sampling, elicitation).
      if (m.method == "ping") {
        reply(make_result(m.id, json::object()));
      } else {
        reply(make_error(m.id, kMethodNotFound, "Alou does not support " + m.method));
      }
    }
  }
  virtual void reply(json msg) = 0;

  void malformed(std::string_view what, std::string_view text) {
    malformed_metric_.inc();
    spdlog::warn("mcp {}: ignored a malformed message ({}): {}", settings_.name, what, clip(text));
  }

  void set_state(std::string s, std::string error = {}) {
    {
      std::lock_guard lock(mu_);
      state_ = std::move(s);
      if (!error.empty()) last_error_copy_ = error;
    }
    if (!error.empty()) last_error_ = std::move(error);
  }

  McpServerSettings settings_;
  net::strand<net::any_io_executor> strand_;
  OnChange on_change_;
  net::steady_timer wake_;        // backoff sleeps; cancelled by shutdown
  bool stopping_ = false;
  bool ready_ = false;
  bool finished_ = false;
  std::string last_error_;        // strand copy
  std::string protocol_version_strand_;

 private:
  net::awaitable<Result<void>> handshake() {
    json params = {{"protocolVersion", kProtocolVersion},
                   {"capabilities", json::object()},
                   {"clientInfo", {{"name", "alou"}, {"version", "0.1.0"}}}};
    auto r = co_await raw_request("initialize", std::move(params), Ms(settings_.timeout_ms));
    if (!r) co_return r.error();
    const json& res = *r;
    const std::string v = res.is_object() ? res.value("protocolVersion", "") : "";
    if (!is_supported_version(v)) {
      co_return Error{502, "mcp_protocol_version",
                      "MCP server \"" + settings_.name + "\" answered protocol version \"" + v +
                          "\", which Alou does not speak"};
    }
    capabilities_ = res.value("capabilities", json::object());
    protocol_version_strand_ = v;
    {
      std::lock_guard lock(mu_);
      protocol_version_ = v;
      server_info_ = res.value("serverInfo", json(nullptr));
    }
    co_await raw_notify("notifications/initialized", nullptr);
    co_return Result<void>{};
  }

  // Every page of one list method.
  net::awaitable<Result<json>> list_all(const char* method, const char* key) {
    json all = json::array();
    std::string cursor;
    for (std::size_t page = 0; page < kMaxPages; ++page) {
      json params = json::object();
      if (!cursor.empty()) params["cursor"] = cursor;
      auto r = co_await raw_request(method, std::move(params), Ms(settings_.timeout_ms));
      if (!r) co_return r.error();
      if (!r->is_object() || !(*r)[key].is_array()) {
        co_return Error{502, "mcp_upstream_error",
                        "MCP server \"" + settings_.name + "\": " + method + " returned no " + key + " array"};
      }
      for (auto& t : (*r)[key]) all.push_back(std::move(t));
      auto next = r->find("nextCursor");
      if (next == r->end() || !next->is_string() || next->get<std::string>().empty()) co_return ok(std::move(all));
      cursor = next->get<std::string>();
    }
    spdlog::warn("mcp {}: {} has more than {} pages; the rest is ignored", settings_.name, method, kMaxPages);
    co_return ok(std::move(all));
  }

  net::awaitable<Result<void>> refresh_lists() {
    ServerLists l;
    if (capabilities_.contains("tools")) {
      auto t = co_await list_all("tools/list", "tools");
      if (!t) co_return t.error();
      l.tools = std::move(*t);
    }
    // Resources and prompts are optional extras: a failure there is logged,
    // not fatal.
    if (capabilities_.contains("resources")) {
      auto r = co_await list_all("resources/list", "resources");
      if (r) l.resources = std::move(*r);
      else spdlog::warn("mcp {}: {}", settings_.name, r.error().message);
      auto rt = co_await list_all("resources/templates/list", "resourceTemplates");
      if (rt) l.resource_templates = std::move(*rt);
    }
    if (capabilities_.contains("prompts")) {
      auto p = co_await list_all("prompts/list", "prompts");
      if (p) l.prompts = std::move(*p);
      else spdlog::warn("mcp {}: {}", settings_.name, p.error().message);
    }
    {
      std::lock_guard lock(mu_);
      lists_ = std::move(l);
    }
    if (on_change_) on_change_();
    co_return Result<void>{};
  }

  void schedule_refresh() {
    if (refreshing_) {
      refresh_again_ = true;
      return;
    }
    refreshing_ = true;
    auto self = shared_from_this();
    auto task = [self]() -> net::awaitable<void> {
      do {
        self->refresh_again_ = false;
        auto r = co_await self->refresh_lists();
        if (!r) spdlog::warn("mcp {}: re-listing failed: {}", self->settings_.name, r.error().message);
      } while (self->refresh_again_ && self->ready_);
      self->refreshing_ = false;
    };
    net::co_spawn(strand_, std::move(task), net::detached);
  }

  net::awaitable<void> supervise() {
    Ms backoff = kFirstBackoff;
    bool first = true;
    while (!stopping_) {
      if (!first) {
        restarts_metric_.inc();
        std::lock_guard lock(mu_);
        ++restarts_;
      }
      first = false;
      set_state("starting");
      auto ok = co_await connect_once();
      if (ok) ok = co_await handshake();
      if (ok) ok = co_await refresh_lists();
      if (ok && !stopping_) {
        ready_ = true;
        up_metric_.set(1);
        set_state("ready");
        spdlog::info("mcp {}: ready ({} tools, protocol {})", settings_.name, lists().tools.size(),
                     protocol_version_strand_);
        const auto up_since = std::chrono::steady_clock::now();
        while (!stopping_) {
          const bool down = co_await wait_down(Ms(settings_.ping_interval_ms));
          if (down || stopping_) {
            if (down && !stopping_) set_state("restarting", "the server went away");
            break;
          }
          auto p = co_await raw_request("ping", json::object(), std::min(Ms(settings_.timeout_ms), Ms(10'000)));
          if (!p && p.error().code != "mcp_upstream_error") {
            set_state("restarting", "health ping failed: " + p.error().message);
            break;
          }
        }
        if (std::chrono::steady_clock::now() - up_since > kStableAfter) backoff = kFirstBackoff;
      } else if (!ok) {
        spdlog::warn("mcp {}: {}", settings_.name, ok.error().message);
        set_state("restarting", ok.error().message);
      }
      ready_ = false;
      up_metric_.set(0);
      co_await disconnect();
      if (on_change_) on_change_();
      if (stopping_) break;
      spdlog::info("mcp {}: reconnecting in {} ms", settings_.name, backoff.count());
      wake_.expires_after(backoff);
      co_await wake_.async_wait(net::as_tuple(net::use_awaitable));
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
    set_state("stopped");
    finished_ = true;
  }

  json capabilities_ = json::object();
  bool refreshing_ = false;
  bool refresh_again_ = false;
  metrics::Counter& restarts_metric_;
  metrics::Counter& malformed_metric_;
  metrics::Gauge& up_metric_;

  mutable std::mutex mu_;  // what other threads read
  std::string state_ = "starting";
  std::string last_error_copy_;
  std::string protocol_version_;
  json server_info_ = nullptr;
  std::uint64_t restarts_ = 0;
  ServerLists lists_;
};

// ---------------------------------------------------------------- stdio --

class StdioUpstream final : public UpstreamBase {
 public:
  using UpstreamBase::UpstreamBase;

  ~StdioUpstream() override {
    if (proc_) kill_group(proc_->pid, SIGKILL);
  }

 protected:
  struct Proc {
    Proc(net::any_io_executor ex, const ChildProcess& c)
        : pid(c.pid), in(ex, c.stdin_fd), out(ex, c.stdout_fd), err(ex, c.stderr_fd) {}
    pid_t pid;
    net::posix::stream_descriptor in, out, err;
    bool reader_done = false;
    std::string exit_reason;
  };
  struct Pending {
    net::steady_timer* timer = nullptr;
    std::optional<Result<json>> result;
  };

  net::awaitable<Result<void>> connect_once() override {
    SpawnSpec spec{.argv = settings_.command, .env = allowed_env(settings_.env), .cwd = settings_.cwd, .limits = {}};
    auto child = spawn_process(spec);
    if (!child) co_return child.error();
    proc_ = std::make_shared<Proc>(strand_, *child);
    spdlog::info("mcp {}: started {} (pid {})", settings_.name, settings_.command[0], proc_->pid);
    auto self = std::static_pointer_cast<StdioUpstream>(shared_from_this());
    auto p = proc_;
    auto reader = [self, p]() -> net::awaitable<void> { co_await self->read_loop(p); };
    auto errors = [self, p]() -> net::awaitable<void> { co_await self->stderr_loop(p); };
    net::co_spawn(strand_, std::move(reader), net::detached);
    net::co_spawn(strand_, std::move(errors), net::detached);
    co_return Result<void>{};
  }

  net::awaitable<Result<json>> raw_request(std::string method, json params, Ms timeout) override {
    if (!proc_ || proc_->reader_done) co_return unavailable(settings_.name, "the server is not running");
    const std::int64_t id = next_id_++;
    net::steady_timer timer(strand_, timeout);
    Pending p{.timer = &timer, .result = std::nullopt};
    pending_[id] = &p;
    send(make_request(id, method, std::move(params)));
    co_await timer.async_wait(net::as_tuple(net::use_awaitable));
    pending_.erase(id);
    if (p.result) co_return std::move(*p.result);
    const bool timed_out = std::chrono::steady_clock::now() >= timer.expiry();
    send(make_notification("notifications/cancelled",
                           {{"requestId", id}, {"reason", timed_out ? "timeout" : "the caller went away"}}));
    if (timed_out) {
      co_return Error{504, "tool_timeout",
                      "MCP server \"" + settings_.name + "\" did not answer " + method + " within " +
                          std::to_string(timeout.count()) + " ms"};
    }
    co_return Error{499, "cancelled", "the call was cancelled"};
  }

  net::awaitable<void> raw_notify(std::string method, json params) override {
    send(make_notification(method, std::move(params)));
    co_return;
  }

  void reply(json msg) override { send(std::move(msg)); }

  net::awaitable<bool> wait_down(Ms d) override {
    if (!proc_ || proc_->reader_done) co_return true;
    wake_.expires_after(d);
    co_await wake_.async_wait(net::as_tuple(net::use_awaitable));
    co_return !proc_ || proc_->reader_done;
  }

  void on_stop() override {
    if (proc_ && !proc_->reader_done) kill_group(proc_->pid, SIGTERM);
  }

  net::awaitable<void> disconnect() override {
    if (!proc_) co_return;
    auto p = proc_;
    if (!p->reader_done) kill_group(p->pid, SIGTERM);
    const int st = co_await reap(p->pid, Ms(2000));
    // The group is dead: the reader sees EOF (or is cancelled here).
    boost::system::error_code ignored;
    p->out.cancel(ignored);
    p->err.cancel(ignored);
    net::steady_timer t(strand_);
    for (int i = 0; i < 200 && !p->reader_done; ++i) {
      t.expires_after(5ms);
      co_await t.async_wait(net::as_tuple(net::use_awaitable));
    }
    fail_pending(p->exit_reason.empty() ? describe_status(st) : p->exit_reason);
    spdlog::info("mcp {}: process {} ended ({})", settings_.name, p->pid, describe_status(st));
    p->in.close(ignored);
    p->out.close(ignored);
    p->err.close(ignored);
    outq_.clear();
    if (proc_ == p) proc_.reset();
  }

 private:
  void send(const json& msg) {
    if (!proc_ || proc_->reader_done) return;
    outq_.push_back(msg.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
    if (writing_) return;
    writing_ = true;
    auto self = std::static_pointer_cast<StdioUpstream>(shared_from_this());
    auto p = proc_;
    auto writer = [self, p]() -> net::awaitable<void> {
      while (!self->outq_.empty() && self->proc_ == p) {
        std::string line = std::move(self->outq_.front());
        self->outq_.pop_front();
        auto [ec, n] = co_await net::async_write(p->in, net::buffer(line), net::as_tuple(net::use_awaitable));
        if (ec) {
          spdlog::warn("mcp {}: write to the server failed: {}", self->settings_.name, ec.message());
          self->outq_.clear();
          break;
        }
      }
      self->writing_ = false;
    };
    net::co_spawn(strand_, std::move(writer), net::detached);
  }

  void fail_pending(const std::string& why) {
    for (auto& [id, p] : pending_) {
      if (!p->result) {
        p->result = unavailable(settings_.name, "the server exited during the call (" + why + "); it is being restarted");
      }
      p->timer->cancel();
    }
  }

  net::awaitable<void> read_loop(std::shared_ptr<Proc> p) {
    std::string buf;
    for (;;) {
      auto dyn = net::dynamic_buffer(buf, kMaxLineBytes);
      auto [ec, n] = co_await net::async_read_until(p->out, dyn, '\n', net::as_tuple(net::use_awaitable));
      if (ec) {
        if (ec == net::error::not_found) {
          p->exit_reason = "a message above " + std::to_string(kMaxLineBytes) + " bytes";
          spdlog::error("mcp {}: {}; stopping the server", settings_.name, p->exit_reason);
          kill_group(p->pid, SIGKILL);
        }
        break;
      }
      std::string line = buf.substr(0, n - 1);
      buf.erase(0, n);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      on_line(line);
    }
    p->reader_done = true;
    if (p == proc_) {
      fail_pending(p->exit_reason.empty() ? "its output closed" : p->exit_reason);
      wake_.cancel();
    }
  }

  void on_line(const std::string& line) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) return malformed("not JSON", line);
    auto m = parse_message(j);
    if (!m) return malformed(m.error().message, line);
    if (m->kind != Message::Kind::kResponse) return handle_incoming(*m);
    if (!m->id.is_number_integer()) return malformed("a response to an id Alou never sent", line);
    auto it = pending_.find(m->id.get<std::int64_t>());
    if (it == pending_.end()) return;  // late answer to a call that timed out or was cancelled
    if (m->error) {
      it->second->result = Error{502, "mcp_upstream_error",
                                 "MCP server \"" + settings_.name + "\" answered error " +
                                     std::to_string(m->error->code) + ": " + clip(m->error->message, 1000)};
    } else {
      it->second->result = ok(std::move(m->result));
    }
    it->second->timer->cancel();
  }

  net::awaitable<void> stderr_loop(std::shared_ptr<Proc> p) {
    std::string buf;
    for (;;) {
      auto dyn = net::dynamic_buffer(buf, kMaxStderrLine);
      auto [ec, n] = co_await net::async_read_until(p->err, dyn, '\n', net::as_tuple(net::use_awaitable));
      if (ec == net::error::not_found) {
        spdlog::info("mcp {} stderr: {}", settings_.name, clip(buf, kMaxStderrLine));
        buf.clear();
        continue;
      }
      if (ec) break;
      std::string line = buf.substr(0, n - 1);
      buf.erase(0, n);
      if (!line.empty()) spdlog::info("mcp {} stderr: {}", settings_.name, line);
    }
  }

  std::shared_ptr<Proc> proc_;
  std::unordered_map<std::int64_t, Pending*> pending_;
  std::int64_t next_id_ = 1;
  std::deque<std::string> outq_;
  bool writing_ = false;
};

// ---------------------------------------------------------------- HTTP --

class HttpUpstream final : public UpstreamBase {
 public:
  HttpUpstream(const McpServerSettings& s, net::any_io_executor ex, metrics::Registry& m, OnChange on_change)
      : UpstreamBase(s, ex, m, std::move(on_change)),
        client_(ex,
                http::ClientOptions{.connect_timeout = std::min(Ms(s.timeout_ms), Ms(5000)),
                                    .first_byte_timeout = Ms(s.timeout_ms),
                                    .idle_read_timeout = Ms(s.timeout_ms),
                                    .total_timeout = Ms(s.timeout_ms),
                                    .max_idle_per_host = 16,
                                    .max_response_bytes = kMaxLineBytes,
                                    .dns_ttl = std::chrono::seconds(60),
                                    .ca_file = {},
                                    .verify_peer = true},
                &m) {}

 protected:
  net::awaitable<Result<void>> connect_once() override {
    session_id_.clear();
    co_return Result<void>{};
  }

  net::awaitable<Result<json>> raw_request(std::string method, json params, Ms timeout) override {
    const std::int64_t id = next_id_++;
    const json msg = make_request(id, method, params);
    auto r = co_await post(msg, timeout);
    if (r && (r->status == 404 || r->status == 400) && !session_id_.empty() && method != "initialize") {
      // The server forgot the session (404 per the spec; some servers, such
      // as the reference ones, answer 400): initialize again, retry once.
      spdlog::info("mcp {}: session expired; initializing again", settings_.name);
      session_id_.clear();
      auto again = co_await reinitialize();
      if (!again) co_return again.error();
      r = co_await post(msg, timeout);
    }
    if (!r) co_return r.error();
    auto out = co_await read_response(*r, id, method, timeout);
    co_return out;
  }

  net::awaitable<void> raw_notify(std::string method, json params) override {
    auto r = co_await post(make_notification(method, std::move(params)), Ms(settings_.timeout_ms));
    if (r && r->status >= 300) spdlog::warn("mcp {}: {} answered HTTP {}", settings_.name, method, r->status);
  }

  void reply(json msg) override {
    auto self = std::static_pointer_cast<HttpUpstream>(shared_from_this());
    auto task = [self, msg = std::move(msg)]() -> net::awaitable<void> {
      co_await self->post(msg, Ms(self->settings_.timeout_ms));
    };
    net::co_spawn(strand_, std::move(task), net::detached);
  }

  net::awaitable<bool> wait_down(Ms d) override {
    wake_.expires_after(d);
    co_await wake_.async_wait(net::as_tuple(net::use_awaitable));
    co_return false;
  }

  net::awaitable<void> disconnect() override {
    if (session_id_.empty()) co_return;
    http::ClientRequest req{.method = http::Verb::delete_, .url = settings_.url, .headers = headers(), .body = {}};
    session_id_.clear();
    auto r = co_await client_.request(std::move(req));
    if (!r) spdlog::info("mcp {}: DELETE of the session failed: {}", settings_.name, r.error().message);
  }

 private:
  std::vector<std::pair<std::string, std::string>> headers() const {
    std::vector<std::pair<std::string, std::string>> h = {{"Content-Type", "application/json"},
                                                          {"Accept", "application/json, text/event-stream"}};
    if (!protocol_version_strand_.empty()) h.emplace_back("MCP-Protocol-Version", protocol_version_strand_);
    if (!session_id_.empty()) h.emplace_back("Mcp-Session-Id", session_id_);
    return h;
  }

  net::awaitable<Result<http::ClientResponse>> post(const json& msg, Ms timeout) {
    http::ClientRequest req{.method = http::Verb::post, .url = settings_.url, .headers = headers(), .body = msg.dump()};
    (void)timeout;  // the client's deadlines are the server's timeout_ms
    auto r = co_await client_.request(std::move(req));
    if (!r) {
      if (r.error().code == "upstream_timeout") {
        co_return Error{504, "tool_timeout", "MCP server \"" + settings_.name + "\" did not answer in time"};
      }
      co_return unavailable(settings_.name, r.error().message);
    }
    if (auto sid = r->headers.find("mcp-session-id"); sid != r->headers.end()) {
      session_id_ = std::string(sid->value());
    }
    co_return r;
  }

  net::awaitable<Result<void>> reinitialize() {
    json params = {{"protocolVersion", kProtocolVersion},
                   {"capabilities", json::object()},
                   {"clientInfo", {{"name", "alou"}, {"version", "0.1.0"}}}};
    const std::int64_t id = next_id_++;
    auto r = co_await post(make_request(id, "initialize", params), Ms(settings_.timeout_ms));
    if (!r) co_return r.error();
    auto res = co_await read_response(*r, id, "initialize", Ms(settings_.timeout_ms));
    if (!res) co_return res.error();
    co_await raw_notify("notifications/initialized", nullptr);
    co_return Result<void>{};
  }

  // The response to request `id` from a JSON or SSE body; other messages in
  // an SSE body (notifications, server requests) are handled on the way.
  net::awaitable<Result<json>> read_response(const http::ClientResponse& r, std::int64_t id, const std::string& method,
                                             Ms) {
    if (r.status == 404) co_return unavailable(settings_.name, "HTTP 404 (session not found)");
    if (r.status < 200 || r.status >= 300) {
      // Not a JSON-RPC answer: the server is broken or gone (a failed ping
      // then reconnects).
      co_return unavailable(settings_.name, "HTTP " + std::to_string(r.status) + " to " + method);
    }
    std::vector<std::string> payloads;
    std::string ctype;
    if (auto ct = r.headers.find(http::bhttp::field::content_type); ct != r.headers.end()) ctype = ct->value();
    if (ctype.find("text/event-stream") != std::string::npos) {
      std::string data;
      std::size_t pos = 0;
      const std::string& b = r.body;
      while (pos <= b.size()) {
        auto end = b.find('\n', pos);
        if (end == std::string::npos) end = b.size();
        std::string line = b.substr(pos, end - pos);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) {
          if (!data.empty()) payloads.push_back(std::move(data));
          data.clear();
        } else if (line.rfind("data:", 0) == 0) {
          std::string v = line.substr(5);
          if (!v.empty() && v[0] == ' ') v.erase(0, 1);
          if (!data.empty()) data += '\n';
          data += v;
        }
        pos = end + 1;
      }
      if (!data.empty()) payloads.push_back(std::move(data));
    } else {
      payloads.push_back(r.body);
    }
    for (const auto& text : payloads) {
      json j = json::parse(text, nullptr, false);
      if (j.is_discarded()) {
        malformed("not JSON", text);
        continue;
      }
      auto m = parse_message(j);
      if (!m) {
        malformed(m.error().message, text);
        continue;
      }
      if (m->kind != Message::Kind::kResponse) {
        handle_incoming(*m);
        continue;
      }
      if (!(m->id.is_number_integer() && m->id.get<std::int64_t>() == id)) continue;
      if (m->error) {
        co_return Error{502, "mcp_upstream_error",
                        "MCP server \"" + settings_.name + "\" answered error " + std::to_string(m->error->code) +
                            ": " + clip(m->error->message, 1000)};
      }
      co_return ok(std::move(m->result));
    }
    co_return Error{502, "mcp_upstream_error",
                    "MCP server \"" + settings_.name + "\" sent no response to " + method};
  }

  http::Client client_;
  std::string session_id_;
  std::int64_t next_id_ = 1;
};

}  // namespace

std::shared_ptr<Upstream> Upstream::make_stdio(const McpServerSettings& s, net::any_io_executor ex,
                                               metrics::Registry& metrics, OnChange on_change) {
  ignore_sigpipe();
  return std::make_shared<StdioUpstream>(s, std::move(ex), metrics, std::move(on_change));
}

std::shared_ptr<Upstream> Upstream::make_http(const McpServerSettings& s, net::any_io_executor ex,
                                              metrics::Registry& metrics, OnChange on_change) {
  return std::make_shared<HttpUpstream>(s, std::move(ex), metrics, std::move(on_change));
}

}  // namespace alou::mcp
