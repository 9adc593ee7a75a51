#include "alou/gateway/gateway.hpp"

#include "alou/core/json_text.hpp"
#include "alou/core/metrics.hpp"
#include "alou/core/random.hpp"
#include "alou/gateway/idempotency.hpp"
#include "alou/gateway/provider.hpp"
#include "alou/gateway/usage_scan.hpp"
#include "alou/http/client.hpp"
#include "alou/http/exchange.hpp"
#include "alou/http/sse.hpp"
#include "anthropic.hpp"
#include "providers.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <functional>
#include <optional>
#include <mutex>
#include <atomic>
#include <deque>
#include <utility>
#include <unordered_map>

namespace alou::gateway {
namespace {

using nlohmann::json;
namespace net = boost::asio;

constexpr int kTriesPerTarget = 2;  // one retry of the same route
constexpr std::size_t kMaxTargets = 6;

constexpr int kBreakerThreshold = 5;                       // consecutive failures that open it
constexpr std::chrono::milliseconds kBreakerCooldown{30'000};  // open, then one probe
constexpr std::chrono::milliseconds kProbeTimeout{10'000};     // a probe slot not used expires

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A circuit breaker per route: closed; open after kBreakerThreshold
// consecutive upstream failures (connect errors, timeouts, 5xx — not 4xx
// or 429, which say nothing about the route's health); after the cooldown
// one request at a time probes it (half-open); a success closes it.
// Lock-free: read on every request by every io thread.
class Breaker {
 public:
  enum class State { kClosed, kOpen, kHalfOpen };

  State state(std::int64_t now) const {
    const auto until = open_until_.load(std::memory_order_relaxed);
    if (until == 0) return State::kClosed;
    return now < until ? State::kOpen : State::kHalfOpen;
  }
  // May this request use the route? Takes the probe slot when half-open.
  bool allow(std::int64_t now) {
    switch (state(now)) {
      case State::kClosed: return true;
      case State::kOpen: return false;
      case State::kHalfOpen: {
        auto at = probe_at_.load();
        return now - at > kProbeTimeout.count() && probe_at_.compare_exchange_strong(at, now);
      }
    }
    return true;
  }
  // Returns true when this call changed the state (for metrics).
  bool success() {
    failures_.store(0);
    probe_at_.store(0);
    return open_until_.exchange(0) != 0;
  }
  bool failure(std::int64_t now) {
    const bool was_open = open_until_.load() != 0;
    if (was_open || failures_.fetch_add(1) + 1 >= kBreakerThreshold) {
      open_until_.store(now + kBreakerCooldown.count());
      probe_at_.store(0);
      return !was_open;
    }
    return false;
  }
  int failures() const { return failures_.load(); }

 private:
  std::atomic<int> failures_{0};
  std::atomic<std::int64_t> open_until_{0};
  std::atomic<std::int64_t> probe_at_{0};
};

const char* state_name(Breaker::State s) {
  switch (s) {
    case Breaker::State::kClosed: return "closed";
    case Breaker::State::kOpen: return "open";
    case Breaker::State::kHalfOpen: return "half_open";
  }
  return "closed";
}

struct Target {
  Provider* provider;
  const std::atomic<bool>* ready;  // false while its provider waits for a key
  std::string model;
  std::uint32_t weight;
  Breaker* breaker;
  metrics::Gauge* open_gauge;
};

struct ModelEntry {
  std::string name;
  std::vector<Target> routes;  // enabled routes only
  std::vector<std::string> fallbacks;
};

struct ProviderState {
  std::string name;
  std::string kind;
  bool enabled = false;
  std::string reason;
};

// When no meter is wired in (gateway-only tests): nothing is charged.
class FreeHold final : public Hold {
 public:
  std::int64_t amount_nanos() const override { return 0; }
  net::awaitable<Result<std::int64_t>> settle(Usage, std::string) override {
    co_return Result<std::int64_t>(boost::system::in_place_value, 0);
  }
  void settle_detached(Usage, std::string) override {}
  void release() override {}
  void event(std::string, std::string) override {}
};

class FreeMeter final : public Meter {
 public:
  Result<std::unique_ptr<Hold>> hold(const HoldRequest&) override { return std::unique_ptr<Hold>(new FreeHold); }
  void audit(const std::string&, const Principal*, std::string, const json&) override {}
};

std::int64_t int_field(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? std::max<std::int64_t>(0, it->get<std::int64_t>()) : 0;
}

// An OpenAI usage object as the ledger counts it.
Usage usage_of(const json& u) {
  Usage out;
  out.prompt_tokens = int_field(u, "prompt_tokens");
  out.completion_tokens = int_field(u, "completion_tokens");
  if (const auto d = u.find("prompt_tokens_details"); d != u.end() && d->is_object()) {
    out.cached_tokens = int_field(*d, "cached_tokens");
  }
  return out;
}

std::int64_t tokens_of_chars(std::size_t chars) { return static_cast<std::int64_t>((chars + 3) / 4); }

// What a stream has produced, for its settlement however it ends: the
// upstream's usage when it came, else an estimate from the streamed text.
// Settled at most once; if the stream is abandoned (the client left and
// the handler was cancelled) the destructor settles in the background.
struct StreamBill {
  Hold& hold;
  std::string provider;
  std::int64_t prompt_estimate = 0;
  std::optional<Usage> usage;
  std::size_t chars = 0;
  bool done = false;

  void see(std::string_view chunk) { chars += delta_chars(chunk); }
  Usage current() const {
    if (usage) return *usage;
    return Usage{prompt_estimate, tokens_of_chars(chars), 0, true};
  }
  net::awaitable<Result<std::int64_t>> settle() {
    done = true;
    auto r = co_await hold.settle(current(), provider);
    co_return r;
  }
  ~StreamBill() {
    if (!done) hold.settle_detached(current(), provider);
  }
};

// Forwards to the client's writer and tapes what was sent, for an
// Idempotency-Key replay.
class TapWriter final : public http::SseWriter {
 public:
  TapWriter(http::SseWriter& inner, IdempotencyClaim& claim) : inner_(inner), claim_(claim) {}
  net::awaitable<bool> send(const http::SseEvent& ev) override {
    std::string text = http::encode_sse(ev);
    const bool ok = co_await inner_.send_raw(text);
    if (ok) claim_.tape(text);
    co_return ok;
  }
  net::awaitable<bool> send_raw(std::string_view raw) override {
    const bool ok = co_await inner_.send_raw(raw);
    if (ok) claim_.tape(raw);
    co_return ok;
  }
  bool closed() const override { return inner_.closed(); }

 private:
  http::SseWriter& inner_;
  IdempotencyClaim& claim_;
};

class GatewayImpl final : public Gateway {
 public:
  GatewayImpl(const Settings& s, net::any_io_executor ex, metrics::Registry& m, Meter* meter,
              const std::map<std::string, std::string>& stored_keys, storage::Kv* kv)
      : metrics_(m), meter_(meter ? meter : &free_meter_) {
    if (kv) idempotency_.emplace(*kv, ex);
    http::ClientOptions opts;
    client_ = std::make_shared<http::Client>(ex, opts, &m);
    // The provider registry, filled here in one readable list.
    for (const auto& p : s.providers) {
      ProviderState st{p.name, p.kind, false, {}};
      std::string key;
      const auto stored = stored_keys.find(p.name);
      // A provider whose key variable is unset and that has no stored key
      // is built but waits: a key stored through the admin API enables it.
      bool waiting = false;
      if (!p.api_key_env.empty()) {
        needs_key_.emplace(p.name, p.api_key_env);
        if (auto v = process_env(p.api_key_env.c_str()); v && !v->empty()) {
          key = *v;
        } else if (stored != stored_keys.end()) {
          key = stored->second;
        } else {
          st.reason = p.api_key_env + " is not set";
          waiting = true;
        }
      } else if (stored != stored_keys.end()) {
        key = stored->second;
      }
      std::unique_ptr<Provider> impl;
      if (p.kind == "mock") {
        impl = make_mock_provider(p);
      } else if (p.kind == "openai" || p.kind == "azure") {
        if (p.base_url.empty()) {
          st.reason = "base_url is not set";
        } else {
          impl = make_openai_provider(p, key, client_);
        }
      } else if (p.kind == "anthropic") {
        if (auto made = make_anthropic_provider(p, key, client_)) {
          impl = std::move(*made);
        } else {
          st.reason = made.error().message;
        }
      } else if (p.kind == "gemini") {
        impl = make_gemini_provider(p, key, client_);
      } else {
        st.reason = "provider kind \"" + p.kind + "\" is not supported by this build yet";
      }
      st.enabled = impl != nullptr && !waiting;
      states_.push_back(st);
      if (impl) {
        ready_.emplace(p.name, std::make_unique<std::atomic<bool>>(st.enabled));
        // Created up front: the hot path only touches atomics.
        latency_[p.name] = &m.histogram("alou_gateway_upstream_seconds",
                                        "Upstream call time: a whole buffered answer, or a stream's first chunk",
                                        {{"provider", p.name}});
        providers_.emplace(p.name, std::move(impl));
      }
    }
    for (const auto& ms : s.models) {
      ModelEntry e{ms.name, {}, ms.fallbacks};
      for (const auto& r : ms.routes) {
        auto it = providers_.find(r.provider);
        if (it == providers_.end() || r.weight == 0) continue;
        const std::string upstream_model = r.model.empty() ? ms.name : r.model;
        // One breaker per (provider, upstream model), shared by every model
        // routed there: the route's health does not depend on the alias.
        auto& slot = breaker_index_[r.provider + '\x1f' + upstream_model];
        if (!slot) slot = &breakers_.emplace_back();
        auto& breaker = *slot;
        auto& gauge = m.gauge("alou_gateway_breaker_open", "1 while a route's circuit breaker is open",
                              {{"provider", r.provider}, {"model", upstream_model}});
        e.routes.push_back(
            Target{it->second.get(), ready_.at(r.provider).get(), upstream_model, r.weight, &breaker, &gauge});
      }
      models_.emplace(ms.name, std::move(e));
    }
    for (const auto& st : states_) {
      if (!st.enabled) spdlog::info("provider {} ({}) disabled: {}", st.name, st.kind, st.reason);
    }
  }

  void add_routes(http::Router& router) override {
    const http::RouteOptions openai{.access = http::Access::kAuthenticated,
                                    .format = http::ErrorFormat::kOpenAi,
                                    .watch_client = true};
    router.post("/v1/chat/completions", [this](http::Exchange& ex) { return chat(ex); }, openai);
    const http::RouteOptions anthropic_route{.access = http::Access::kAuthenticated,
                                             .format = http::ErrorFormat::kAnthropic,
                                             .watch_client = true};
    router.post("/v1/messages", [this](http::Exchange& ex) { return messages(ex); }, anthropic_route);
    const http::RouteOptions listing{.access = http::Access::kAuthenticated, .format = http::ErrorFormat::kOpenAi};
    router.post("/v1/embeddings", [this](http::Exchange& ex) { return embeddings(ex); }, openai);
    router.get("/v1/models", [this](http::Exchange& ex) { return list_models(ex); }, listing);
    router.get("/v1/models/{model}", [this](http::Exchange& ex) { return get_model(ex); }, listing);
  }

  bool set_provider_key(const std::string& name, std::string key) override {
    const auto it = providers_.find(name);
    if (it == providers_.end()) return false;
    const bool removed = key.empty();
    if (!it->second->set_api_key(std::move(key))) return false;
    const auto needs = needs_key_.find(name);
    const bool ready = !removed || needs == needs_key_.end();
    ready_.at(name)->store(ready);
    {
      const std::lock_guard lock(state_mu_);
      for (auto& st : states_) {
        if (st.name != name) continue;
        st.enabled = ready;
        st.reason = ready ? std::string() : needs->second + " is not set";
      }
    }
    spdlog::info("provider {}: API key {} (in effect now){}", name, removed ? "removed" : "replaced",
                 ready ? "" : "; the provider is disabled until a key is set");
    return true;
  }

  json status() const override {
    json out = json::array();
    const auto now = steady_ms();
    const std::lock_guard lock(state_mu_);
    for (const auto& st : states_) {
      json p = {{"name", st.name}, {"kind", st.kind}, {"enabled", st.enabled}};
      if (!st.enabled) p["reason"] = st.reason;
      json routes = json::array();
      for (const auto& [name, e] : models_) {
        for (const auto& t : e.routes) {
          if (t.provider->name() != st.name) continue;
          routes.push_back({{"model", name},
                            {"upstream_model", t.model},
                            {"breaker", state_name(t.breaker->state(now))},
                            {"consecutive_failures", t.breaker->failures()}});
        }
      }
      if (st.enabled) p["routes"] = routes;
      out.push_back(p);
    }
    return out;
  }

 private:
  bool available(const std::string& name, int depth = 0) const {
    auto it = models_.find(name);
    if (it == models_.end() || depth > 4) return false;
    for (const auto& t : it->second.routes) {
      if (t.ready->load(std::memory_order_relaxed)) return true;
    }
    for (const auto& f : it->second.fallbacks) {
      if (available(f, depth + 1)) return true;
    }
    return false;
  }

  static json model_object(const std::string& id) {
    return {{"id", id}, {"object", "model"}, {"created", 0}, {"owned_by", "alou"}};
  }

  net::awaitable<http::Response> list_models(http::Exchange& ex) {
    json data = json::array();
    std::vector<std::string> names;
    for (const auto& [name, e] : models_) {
      if (available(name) && ex.principal && ex.principal->may_use_model(name)) names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    for (const auto& n : names) data.push_back(model_object(n));
    json body = {{"object", "list"}, {"data", data}};
    co_return ex.json(http::Status::ok, body.dump());
  }

  net::awaitable<http::Response> get_model(http::Exchange& ex) {
    const std::string name(ex.param("model"));
    if (!available(name) || !ex.principal || !ex.principal->may_use_model(name)) {
      co_return ex.error(Error::not_found("The model `" + name + "` does not exist or you do not have access to it.",
                                          "model_not_found"));
    }
    co_return ex.json(http::Status::ok, model_object(name).dump());
  }

  // The order in which targets are tried: a weighted pick among the
  // model's routes, its other routes, then each fallback model likewise.
  std::vector<const Target*> plan(const ModelEntry& m) const {
    std::vector<const Target*> out;
    const auto now = steady_ms();
    std::vector<const ModelEntry*> chain{&m};
    for (const auto& f : m.fallbacks) {
      auto it = models_.find(f);
      if (it != models_.end()) chain.push_back(&it->second);
    }
    for (const auto* e : chain) {
      std::vector<const Target*> pool;
      for (const auto& t : e->routes) {
        if (t.ready->load(std::memory_order_relaxed) && t.breaker->allow(now)) pool.push_back(&t);
      }
      while (!pool.empty() && out.size() < kMaxTargets) {
        std::uint32_t total = 0;
        for (const auto* t : pool) total += t->weight;
        std::uint32_t pick = random_uniform(total);
        std::size_t i = 0;
        while (pick >= pool[i]->weight) pick -= pool[i++]->weight;
        bool seen = false;
        for (const auto* o : out) seen = seen || (o->provider == pool[i]->provider && o->model == pool[i]->model);
        if (!seen) out.push_back(pool[i]);
        pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(i));
      }
    }
    return out;
  }

  // True once the client went away (RouteOptions::watch_client cancels the
  // handler): an upstream call that failed then was cut by us.
  static net::awaitable<bool> client_gone() {
    const auto cs = co_await net::this_coro::cancellation_state;
    co_return cs.cancelled() != net::cancellation_type::none;
  }

  static net::awaitable<void> backoff(int attempt, std::chrono::milliseconds retry_after) {
    auto delay = std::chrono::milliseconds(100 << attempt) + std::chrono::milliseconds(random_uniform(50));
    if (retry_after > delay) delay = std::min(retry_after, std::chrono::milliseconds(2000));
    net::steady_timer t(co_await net::this_coro::executor);
    t.expires_after(delay);
    co_await t.async_wait(net::use_awaitable);
  }

  // Registry lookups build label vectors; the hot path caches the result.
  metrics::Counter& cached(const std::string& key, const std::function<metrics::Counter&()>& make) {
    std::lock_guard lock(metrics_mu_);
    auto it = counters_.find(key);
    if (it != counters_.end()) return *it->second;
    auto& c = make();
    counters_.emplace(key, &c);
    return c;
  }

  metrics::Counter& outcome(const std::string& model, const std::string& provider, const char* result) {
    std::string key = "o\x1f" + model + "\x1f" + provider + "\x1f" + result;
    return cached(key, [&]() -> metrics::Counter& {
      return metrics_.counter("alou_gateway_requests_total", "Chat requests by model, provider and outcome",
                              {{"model", model}, {"provider", provider}, {"outcome", result}});
    });
  }

  // Upstream failures by provider and kind (the error's code:
  // upstream_timeout, upstream_unreachable, rate_limited, upstream_error,
  // upstream_disconnected, ...).
  metrics::Counter& errors(const std::string& provider, const std::string& kind) {
    return cached("e\x1f" + provider + "\x1f" + kind, [&]() -> metrics::Counter& {
      return metrics_.counter("alou_gateway_upstream_errors_total", "Upstream failures by provider and kind",
                              {{"provider", provider}, {"kind", kind}});
    });
  }

  // The whole request as the client sees it (a stream: until its end), by
  // model; observed however the request ends, a client leaving included.
  metrics::Histogram& duration(const std::string& model) {
    std::lock_guard lock(metrics_mu_);
    auto it = durations_.find(model);
    if (it != durations_.end()) return *it->second;
    auto& h = metrics_.histogram("alou_gateway_request_seconds",
                                 "Model requests from arrival to the last byte (streams included), by model",
                                 {{"model", model}});
    durations_.emplace(model, &h);
    return h;
  }
  struct DurationTimer {
    metrics::Histogram& h;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    ~DurationTimer() { h.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()); }
  };

  metrics::Counter& retries(const std::string& provider) {
    return cached("r\x1f" + provider, [&]() -> metrics::Counter& {
      return metrics_.counter("alou_gateway_retries_total", "Retries of an upstream route", {{"provider", provider}});
    });
  }

  metrics::Counter& fallbacks(const std::string& model) {
    return cached("f\x1f" + model, [&]() -> metrics::Counter& {
      return metrics_.counter("alou_gateway_fallbacks_total", "Moves to the next route or fallback model",
                              {{"model", model}});
    });
  }

  void record_usage(const std::string& model, const json& usage) {
    if (!usage.is_object()) return;
    const auto number = [&](const char* k) -> std::int64_t {
      const auto it = usage.find(k);
      return it != usage.end() && it->is_number_integer() ? std::max<std::int64_t>(0, it->get<std::int64_t>()) : 0;
    };
    for (const char* dir : {"in", "out"}) {
      std::string key = std::string("t\x1f") + model + "\x1f" + dir;
      auto& c = cached(key, [&]() -> metrics::Counter& {
        return metrics_.counter("alou_gateway_tokens_total", "Tokens by model and direction",
                                {{"model", model}, {"direction", dir}});
      });
      c.inc(static_cast<std::uint64_t>(number(dir[0] == 'i' ? "prompt_tokens" : "completion_tokens")));
    }
  }

  net::awaitable<http::Response> chat(http::Exchange& ex) {
    auto body = json::parse(ex.request().body(), nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      co_return ex.error(Error::bad_request("the request body is not a JSON object", "invalid_json"));
    }
    if (!body.contains("model") || !body["model"].is_string()) {
      co_return ex.error(Error::bad_request("you must provide a model parameter", "missing_model"));
    }
    if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty()) {
      co_return ex.error(Error::bad_request("messages must be a non-empty array", "invalid_messages"));
    }
    if (body.contains("stream") && !body["stream"].is_boolean() && !body["stream"].is_null()) {
      co_return ex.error(Error::bad_request("stream must be a boolean", "invalid_stream"));
    }
    const std::string model = body["model"].get<std::string>();
    auto targets = targets_for(ex, model);
    if (!targets) co_return ex.error(targets.error());
    const DurationTimer timer{duration(model)};
    if (body.contains("stream_options") && !body["stream_options"].is_null()) {
      const auto& so = body["stream_options"];
      if (!so.is_object() || (so.contains("include_usage") && !so["include_usage"].is_boolean())) {
        co_return ex.error(Error::bad_request("stream_options.include_usage must be a boolean", "invalid_stream_options"));
      }
    }
    const bool stream = body.contains("stream") && body["stream"].is_boolean() && body["stream"].get<bool>();
    std::shared_ptr<IdempotencyClaim> claim;
    std::optional<http::Response> early;
    if (!ex.request()["Idempotency-Key"].empty()) early = co_await claim_idempotency_key(ex, claim);
    if (early) co_return std::move(*early);
    auto hold = open_hold(ex, model, body, stream);
    if (!hold) {
      if (claim) co_await claim->abandon();
      co_return ex.error(hold.error());
    }
    if (!stream) {
      auto res = co_await call_once(ex, body, model, *targets, **hold, &Provider::chat, nullptr, claim.get(),
                                    forwardable(ex.request().body(), model));
      co_return res;
    }
    auto res = co_await chat_streamed(ex, body, model, *targets, **hold, false, claim.get());
    co_return res;
  }

  // POST /v1/messages: Anthropic Messages, translated to the canonical
  // OpenAI request and routed exactly like chat (the anthropic-version
  // header is accepted and ignored).
  net::awaitable<http::Response> messages(http::Exchange& ex) {
    const auto in = json::parse(ex.request().body(), nullptr, false);
    if (in.is_discarded() || !in.is_object()) {
      co_return ex.error(Error::bad_request("the request body is not a JSON object", "invalid_json"));
    }
    auto body = anthropic::to_openai_request(in);
    if (!body) co_return ex.error(body.error());
    const std::string model = (*body)["model"].get<std::string>();
    auto targets = targets_for(ex, model);
    if (!targets) co_return ex.error(targets.error());
    const DurationTimer timer{duration(model)};
    const bool stream = (*body)["stream"].get<bool>();
    body->erase("stream");
    std::shared_ptr<IdempotencyClaim> claim;
    std::optional<http::Response> early;
    if (!ex.request()["Idempotency-Key"].empty()) early = co_await claim_idempotency_key(ex, claim);
    if (early) co_return std::move(*early);
    auto hold = open_hold(ex, model, *body, stream);
    if (!hold) {
      if (claim) co_await claim->abandon();
      co_return ex.error(hold.error());
    }
    if (!stream) {
      const Transform to_message = [&model](const std::string& completion) {
        return anthropic::to_anthropic_message(completion, model);
      };
      auto res = co_await call_once(ex, *body, model, *targets, **hold, &Provider::chat, &to_message, claim.get());
      co_return res;
    }
    auto res = co_await chat_streamed(ex, *body, model, *targets, **hold, true, claim.get());
    co_return res;
  }

  // Reserves the most this request may cost (402 if the balance is short)
  // and opens its audit trail.
  Result<std::unique_ptr<Hold>> open_hold(const http::Exchange& ex, const std::string& model, const json& body,
                                          bool stream, std::int64_t max_output = 0) {
    HoldRequest r;
    r.request_id = ex.request_id;
    r.principal = ex.principal ? &*ex.principal : nullptr;
    r.model = model;
    r.prompt_tokens = tokens_of_chars(ex.request().body().size());
    r.max_output_tokens = max_output;
    if (max_output == 0) {
      for (const char* k : {"max_completion_tokens", "max_tokens"}) {
        if (const auto v = int_field(body, k); v > 0) {
          r.max_output_tokens = v;
          break;
        }
      }
    }
    auto h = meter_->hold(r);
    if (h) {
      (*h)->event("request", JsonObject{}
                                 .str("endpoint", ex.path())
                                 .num("hold_nanos", (*h)->amount_nanos())
                                 .str("model", model)
                                 .str("principal", ex.principal ? std::string_view(ex.principal->id) : "")
                                 .boolean("stream", stream)
                                 .done());
    }
    return h;
  }

  // The key may use the model, it exists, something serves it, and the
  // targets to try in order.
  Result<std::vector<const Target*>> targets_for(const http::Exchange& ex, const std::string& model) const {
    if (!ex.principal || !ex.principal->may_use_model(model)) {
      return Error::forbidden("this key may not use model `" + model + "`", "model_not_allowed");
    }
    auto it = models_.find(model);
    if (it == models_.end()) {
      return Error::not_found("The model `" + model + "` does not exist or you do not have access to it.",
                              "model_not_found");
    }
    if (!available(model)) return Error::unavailable("no enabled provider serves model `" + model + "`", "no_provider");
    auto targets = plan(it->second);
    if (targets.empty()) {
      return Error::unavailable("every route of model `" + model + "` failed repeatedly (circuit open); retry shortly",
                                "circuit_open");
    }
    return targets;
  }

  // POST /v1/embeddings: routed like chat (same models, keys, retries,
  // fallbacks and breakers).
  net::awaitable<http::Response> embeddings(http::Exchange& ex) {
    auto body = json::parse(ex.request().body(), nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      co_return ex.error(Error::bad_request("the request body is not a JSON object", "invalid_json"));
    }
    if (!body.contains("model") || !body["model"].is_string()) {
      co_return ex.error(Error::bad_request("you must provide a model parameter", "missing_model"));
    }
    const auto input = body.find("input");
    if (input == body.end() || !(input->is_string() || (input->is_array() && !input->empty()))) {
      co_return ex.error(Error::bad_request("input must be a string or a non-empty array", "invalid_input"));
    }
    const std::string model = body["model"].get<std::string>();
    auto targets = targets_for(ex, model);
    if (!targets) co_return ex.error(targets.error());
    const DurationTimer timer{duration(model)};
    std::shared_ptr<IdempotencyClaim> claim;
    std::optional<http::Response> early;
    if (!ex.request()["Idempotency-Key"].empty()) early = co_await claim_idempotency_key(ex, claim);
    if (early) co_return std::move(*early);
    auto hold = open_hold(ex, model, body, false, 1);
    if (!hold) {
      if (claim) co_await claim->abandon();
      co_return ex.error(hold.error());
    }
    auto res = co_await call_once(ex, body, model, *targets, **hold, &Provider::embeddings, nullptr, claim.get());
    co_return res;
  }

  // Idempotency-Key: claims the key for this request (`claim` set), or
  // answers at once with the first request's response (a replay, charged
  // nothing) or an error. No header: nothing to do.
  net::awaitable<std::optional<http::Response>> claim_idempotency_key(http::Exchange& ex,
                                                                      std::shared_ptr<IdempotencyClaim>& claim) {
    const auto header = ex.request()["Idempotency-Key"];
    if (header.empty()) co_return std::nullopt;
    const std::string key(header);
    if (!Idempotency::valid_key(key)) {
      co_return ex.error(
          Error::bad_request("Idempotency-Key must be 1-255 visible ASCII characters", "invalid_idempotency_key"));
    }
    if (!idempotency_) co_return std::nullopt;
    std::string scope = ex.principal ? ex.principal->id : std::string();
    IdempotencyStart start;
    start = co_await idempotency_->begin(std::move(scope), key, ex.path(), ex.request().body());
    if (start.kind == IdempotencyStart::Kind::kClaimed) {
      claim = std::move(start.claim);
      co_return std::nullopt;
    }
    if (start.kind == IdempotencyStart::Kind::kError) {
      auto res = ex.error(start.error);
      if (start.error.status == 409) res.set(http::bhttp::field::retry_after, "1");
      co_return res;
    }
    http::Response res{static_cast<http::Status>(start.status), ex.request().version()};
    res.set(http::bhttp::field::content_type, start.content_type);
    res.set("Idempotent-Replayed", "true");
    res.body() = std::move(start.body);
    co_return res;
  }

  using Call = net::awaitable<UpResult<std::string>> (Provider::*)(const json&);
  // Rewrites a successful upstream body for the client (e.g. OpenAI -> Anthropic).
  using Transform = std::function<std::string(const std::string&)>;

  // The client's chat body as it came, and where its model's name is, when
  // that text may go to an OpenAI-format upstream as is (or with only the
  // model's value replaced, for a route that renames it). Only if no
  // upstream can read another model than the one authorised and priced
  // here: exactly one "model" key, spelled plainly (a key with an escaped
  // letter, "mod\\u0065l", would be a second one this search cannot see,
  // and parsers differ on which of duplicate keys they keep), whose value
  // is `model` itself.
  struct RawBody {
    std::string_view text;
    std::size_t value_at = 0;   // the value's opening quote
    std::size_t value_len = 0;  // through its closing quote
  };
  static std::optional<RawBody> forwardable(std::string_view raw, std::string_view model) {
    constexpr std::string_view kKey = "\"model\"";
    const auto first = raw.find(kKey);
    if (first == std::string_view::npos || raw.find(kKey, first + 1) != std::string_view::npos) return std::nullopt;
    for (auto p = raw.find("\\u00"); p != std::string_view::npos; p = raw.find("\\u00", p + 1)) {
      // \\u0040 to \\u007f: escaped ASCII letters (and a few signs), which no
      // encoder needs to escape.
      if (p + 4 < raw.size() && raw[p + 4] >= '4' && raw[p + 4] <= '7') return std::nullopt;
    }
    const auto ws = [&](std::size_t i) {
      while (i < raw.size() && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r')) ++i;
      return i;
    };
    std::size_t i = ws(first + kKey.size());
    if (i >= raw.size() || raw[i] != ':') return std::nullopt;  // a value "model", not the key
    i = ws(i + 1);
    if (i >= raw.size() || raw[i] != '"') return std::nullopt;
    const std::size_t at = i++;
    while (i < raw.size() && raw[i] != '"' && raw[i] != '\\') ++i;
    if (i >= raw.size() || raw[i] != '"') return std::nullopt;  // escapes in the name: serialise instead
    if (raw.substr(at + 1, i - at - 1) != model) return std::nullopt;
    return RawBody{raw, at, i + 1 - at};
  }

  // `raw` with the model's value replaced by `upstream_model`.
  static std::string renamed(const RawBody& raw, std::string_view upstream_model) {
    std::string out;
    out.reserve(raw.text.size() + upstream_model.size() + 8);
    out.append(raw.text.substr(0, raw.value_at));
    append_json_string(out, upstream_model);
    out.append(raw.text.substr(raw.value_at + raw.value_len));
    return out;
  }

  // One buffered upstream call with retries and fallbacks (chat or
  // embeddings). `raw`: the client's text of `body` (chat), forwarded as is
  // to a target whose upstream model is `model` itself.
  net::awaitable<http::Response> call_once(http::Exchange& ex, json& body, const std::string& model,
                                           const std::vector<const Target*>& targets, Hold& hold, Call call,
                                           const Transform* transform = nullptr, IdempotencyClaim* claim = nullptr,
                                           std::optional<RawBody> raw = std::nullopt) {
    UpstreamFailure last{Error::unavailable("no provider answered", "no_provider")};
    for (std::size_t ti = 0; ti < targets.size(); ++ti) {
      const Target& t = *targets[ti];
      body["model"] = t.model;
      for (int attempt = 0; attempt < kTriesPerTarget; ++attempt) {
        if (attempt > 0) {
          retries(t.provider->name()).inc();
          co_await backoff(attempt - 1, last.retry_after);
        }
        hold.event("route", route_event(t, ti, attempt, last));
        const auto started = std::chrono::steady_clock::now();
        const bool as_sent = raw && call == &Provider::chat;
        std::optional<UpResult<std::string>> sent;
        if (as_sent && t.model == model) {
          sent.emplace(co_await t.provider->chat_raw(body, raw->text));
        } else if (as_sent) {
          const std::string text = renamed(*raw, t.model);
          sent.emplace(co_await t.provider->chat_raw(body, text));
        } else {
          sent.emplace(co_await (t.provider->*call)(body));
        }
        auto r = std::move(*sent);
        if (!r && co_await client_gone()) {
          // The client left (its cancellation ended the call): not the
          // route's fault, so no breaker count, no retry; nothing charged.
          co_return failed(ex, hold, r.error());
        }
        observe_latency(t, started);
        if (r) {
          note(t, nullptr);
        } else {
          const UpstreamFailure f = r.error();
          note(t, &f);
        }
        if (r) {
          outcome(model, t.provider->name(), "ok").inc();
          // Only the usage object is parsed, not the (possibly long) reply.
          std::optional<Usage> usage;
          if (const auto at = usage_object_at(*r); at != std::string_view::npos) {
            if (const auto end = object_end(*r, at); end != std::string_view::npos) {
              const auto u = json::parse(std::string_view(*r).substr(at, end - at), nullptr, false);
              if (u.is_object()) {
                record_usage(model, u);
                usage = usage_of(u);
              }
            }
          }
          if (!usage) {
            usage = Usage{tokens_of_chars(ex.request().body().size()), tokens_of_chars(delta_chars(*r)), 0, true};
          }
          hold.event("completion", JsonObject{}.str("outcome", "ok").str("provider", t.provider->name()).done());
          // Delivered only once the charge is durable.
          auto charged = co_await hold.settle(*usage, t.provider->name());
          if (!charged) co_return ex.error(charged.error());
          std::string out = transform ? (*transform)(*r) : std::move(*r);
          // Kept before it is sent: a replay that follows finds it.
          if (claim) co_await claim->complete(200, "application/json", out);
          co_return ex.json(http::Status::ok, std::move(out));
        }
        last = r.error();
        outcome(model, t.provider->name(), "error").inc();
        errors(t.provider->name(), last.error.code).inc();
        spdlog::warn("[{}] {} via {}: {} ({})", ex.request_id, model, t.provider->name(), last.error.message,
                     last.retryable ? "retryable" : "final");
        if (!last.retryable) break;
      }
      if (!last.retryable) break;
      if (ti + 1 < targets.size()) {
        fallbacks(model).inc();
      }
    }
    // Nothing was charged: the key is free for a retry.
    if (claim) co_await claim->abandon();
    co_return failed(ex, hold, last);
  }

  // Nothing was delivered: the hold is released, nothing is charged.
  static http::Response failed(http::Exchange& ex, Hold& hold, const UpstreamFailure& f) {
    hold.event("completion",
               JsonObject{}.str("code", f.error.code).str("outcome", "error").num("status", f.error.status).done());
    hold.release();
    return failure_response(ex, f);
  }

  static std::string route_event(const Target& t, std::size_t ti, int attempt, const UpstreamFailure& last) {
    JsonObject j;
    if (attempt > 0 || ti > 0) j.str("after", last.error.code);
    j.num("attempt", attempt + 1).str("provider", t.provider->name());
    j.str("reason", attempt > 0 ? "retry" : (ti > 0 ? "fallback" : "first"));
    j.str("upstream_model", t.model);
    return j.done();
  }

  void observe_latency(const Target& t, std::chrono::steady_clock::time_point started) const {
    const auto it = latency_.find(t.provider->name());
    if (it != latency_.end()) {
      it->second->observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
  }

  // Feeds the route's breaker: only failures that say the route is unwell.
  static void note(const Target& t, const UpstreamFailure* f) {
    if (!f) {
      if (t.breaker->success()) t.open_gauge->set(0);
      return;
    }
    if (!f->retryable || f->error.status == 429) return;
    if (t.breaker->failure(steady_ms())) {
      t.open_gauge->set(1);
      spdlog::warn("circuit open: {} / {} after {} consecutive failures", t.provider->name(), t.model,
                   kBreakerThreshold);
    }
  }

  // A 429 always carries Retry-After (DESIGN.md), the upstream's or 1 s.
  static http::Response failure_response(http::Exchange& ex, const UpstreamFailure& f) {
    auto res = ex.error(f.error);
    if (f.error.status == 429) {
      const auto secs = std::max<std::int64_t>(
          1, std::chrono::duration_cast<std::chrono::seconds>(f.retry_after + std::chrono::milliseconds(999)).count());
      res.set(http::bhttp::field::retry_after, std::to_string(secs));
    }
    return res;
  }

  net::awaitable<http::Response> chat_streamed(http::Exchange& ex, json& body, const std::string& model,
                                               const std::vector<const Target*>& targets, Hold& hold,
                                               bool anthropic_events = false, IdempotencyClaim* claim = nullptr) {
    // Usage is always asked of the upstream (billing needs it); the client
    // gets the usage chunk only if it asked for it.
    bool client_wants_usage = false;
    if (body.contains("stream_options") && body["stream_options"].is_object() &&
        body["stream_options"].contains("include_usage")) {
      client_wants_usage = body["stream_options"]["include_usage"].get<bool>();  // validated in chat()
    }
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};

    UpstreamFailure last{Error::unavailable("no provider answered", "no_provider")};
    std::unique_ptr<ChatStream> upstream;
    std::optional<std::string> first;
    const Target* used = nullptr;
    // Fallbacks and retries happen only until the first chunk: after that
    // the client has bytes and the answer is committed.
    for (std::size_t ti = 0; ti < targets.size() && !used; ++ti) {
      const Target& t = *targets[ti];
      body["model"] = t.model;
      for (int attempt = 0; attempt < kTriesPerTarget && !used; ++attempt) {
        if (attempt > 0) {
          retries(t.provider->name()).inc();
          co_await backoff(attempt - 1, last.retry_after);
        }
        hold.event("route", route_event(t, ti, attempt, last));
        const auto started = std::chrono::steady_clock::now();
        auto s = co_await t.provider->chat_stream(body);
        if (!s && co_await client_gone()) co_return failed(ex, hold, s.error());
        if (s) {
          auto f = co_await (*s)->next();
          if (!f && co_await client_gone()) co_return failed(ex, hold, f.error());
          observe_latency(t, started);
          if (f) {
            note(t, nullptr);
          } else {
            const UpstreamFailure failure = f.error();
            note(t, &failure);
          }
          if (f) {
            upstream = std::move(*s);
            first = std::move(*f);
            used = &t;
            break;
          }
          last = f.error();
        } else {
          last = s.error();
          note(t, &last);
        }
        outcome(model, t.provider->name(), "error").inc();
        errors(t.provider->name(), last.error.code).inc();
        spdlog::warn("[{}] {} via {}: {} ({})", ex.request_id, model, t.provider->name(), last.error.message,
                     last.retryable ? "retryable" : "final");
        if (!last.retryable) break;
      }
      if (!used && !last.retryable) break;
      if (!used && ti + 1 < targets.size()) {
        fallbacks(model).inc();
      }
    }
    if (!used) {
      if (claim) co_await claim->abandon();
      co_return failed(ex, hold, last);
    }
    // From here the stream is charged (in full, or what it produced if it
    // is cut), so its Idempotency-Key keeps what it sent.
    if (claim) claim->commit();
    StreamBill bill{hold, used->provider->name(), tokens_of_chars(ex.request().body().size()), std::nullopt};

    // Recorded however the stream ends, including when the client goes away
    // and this coroutine is cancelled mid-await.
    struct Record {
      GatewayImpl& g;
      const std::string& model;
      const std::string& provider;
      bool failed = false;
      bool completed = false;
      Hold& hold;
      ~Record() {
        const char* o = failed ? "error" : (completed ? "ok" : "cancelled");
        g.outcome(model, provider, o).inc();
        hold.event("completion", JsonObject{}.str("outcome", o).str("provider", provider).done());
      }
    } rec{*this, model, used->provider->name(), false, false, hold};
    // One upstream chunk: its usage is noted and billed; the SSE frame to
    // send, or nothing (a usage-only chunk the client did not ask for).
    auto frame_of = [&](const std::string& chunk) -> std::optional<std::string> {
      bool forward = true;
      // Chunks say "usage":null until the last one: parse only that one.
      if (usage_object_at(chunk) != std::string_view::npos) {
        auto j = json::parse(chunk, nullptr, false);
        if (j.is_object() && j.contains("usage") && j["usage"].is_object()) {
          record_usage(model, j["usage"]);
          bill.usage = usage_of(j["usage"]);
          const bool usage_only = !j.contains("choices") || (j["choices"].is_array() && j["choices"].empty());
          if (!client_wants_usage && usage_only) forward = false;
        }
      }
      if (!bill.usage) bill.see(chunk);
      if (!forward) return std::nullopt;
      std::string frame;
      frame.reserve(chunk.size() + 8);
      frame.append("data: ").append(chunk).append("\n\n");
      return frame;
    };
    // The first chunk is already here: it goes out in the same write as the
    // response head (one packet, one wake-up of the client, sooner).
    http::SseOptions opts;
    const bool first_with_head = !anthropic_events;
    if (first_with_head) {
      if (auto f = frame_of(*first)) {
        if (claim) claim->tape(*f);
        opts.first = std::move(*f);
      }
    }
    auto producer = [&](http::SseWriter& client) -> net::awaitable<void> {
      std::optional<TapWriter> tap;
      if (claim) tap.emplace(client, *claim);
      http::SseWriter& w = tap ? static_cast<http::SseWriter&>(*tap) : client;
      std::optional<std::string> chunk = std::move(first);
      bool handled = first_with_head;  // the first chunk went with the head
      while (chunk) {
        if (!std::exchange(handled, false)) {
          std::optional<std::string> frame;
          frame = frame_of(*chunk);
          if (frame && !co_await w.send_raw(*frame)) co_return;
        }
        auto n = co_await upstream->next();
        if (!n) {
          rec.failed = true;
          errors(used->provider->name(), n.error().error.code).inc();
          // What was streamed is charged (the upstream's usage if it came).
          co_await bill.settle();
          const json err = {{"error",
                             {{"message", n.error().error.message},
                              {"type", "server_error"},
                              {"param", nullptr},
                              {"code", n.error().error.code}}}};
          std::string frame = "data: " + err.dump() + "\n\n";
          co_await w.send_raw(frame);
          co_return;
        }
        chunk = std::move(*n);
      }
      // The final event goes out only once the charge is durable.
      auto charged = co_await bill.settle();
      if (!charged) {
        rec.failed = true;
        const json err = {{"error",
                           {{"message", charged.error().message},
                            {"type", "server_error"},
                            {"param", nullptr},
                            {"code", charged.error().code}}}};
        std::string frame = "data: " + err.dump() + "\n\n";
        co_await w.send_raw(frame);
        co_return;
      }
      std::string done = "data: [DONE]\n\n";
      if (claim) {
        claim->tape(done);
        co_await claim->complete_tape();
      }
      rec.completed = co_await w.send_raw(done);
    };
    // The same stream as Anthropic events (POST /v1/messages).
    auto anthropic_producer = [&](http::SseWriter& client) -> net::awaitable<void> {
      std::optional<TapWriter> tap;
      if (claim) tap.emplace(client, *claim);
      http::SseWriter& w = tap ? static_cast<http::SseWriter&>(*tap) : client;
      anthropic::StreamRelay relay(model);
      anthropic::StreamRelay::Events events;
      std::optional<std::string> chunk = std::move(first);
      while (chunk) {
        const auto j = json::parse(*chunk, nullptr, false);
        if (j.is_object()) {
          if (j.contains("usage") && j["usage"].is_object()) {
            record_usage(model, j["usage"]);
            bill.usage = usage_of(j["usage"]);
          }
          relay.on_chunk(j, events);
        }
        if (!bill.usage) bill.see(*chunk);
        for (const auto& [name, data] : events) {
          const std::string text = data.dump();
          if (!co_await w.send(http::SseEvent{.event = name, .data = text, .id = {}})) co_return;
        }
        events.clear();
        auto n = co_await upstream->next();
        if (!n) {
          rec.failed = true;
          errors(used->provider->name(), n.error().error.code).inc();
          co_await bill.settle();
          const json err = {{"type", "error"}, {"error", {{"type", "api_error"}, {"message", n.error().error.message}}}};
          const std::string text = err.dump();
          co_await w.send(http::SseEvent{.event = "error", .data = text, .id = {}});
          co_return;
        }
        chunk = std::move(*n);
      }
      auto charged = co_await bill.settle();
      if (!charged) {
        rec.failed = true;
        const json err = {{"type", "error"}, {"error", {{"type", "api_error"}, {"message", charged.error().message}}}};
        const std::string text = err.dump();
        co_await w.send(http::SseEvent{.event = "error", .data = text, .id = {}});
        co_return;
      }
      relay.finish(events);
      if (claim) {
        for (const auto& [name, data] : events) {
          const std::string text = data.dump();
          claim->tape(http::encode_sse(http::SseEvent{.event = name, .data = text, .id = {}}));
        }
        co_await claim->complete_tape();
      }
      bool ok = true;
      for (const auto& [name, data] : events) {
        const std::string text = data.dump();
        ok = co_await w.send(http::SseEvent{.event = name, .data = text, .id = {}});
        if (!ok) break;
      }
      rec.completed = ok;
    };
    if (anthropic_events) {
      const json anthropic_err = {{"type", "error"},
                                  {"error", {{"type", "api_error"}, {"message", "the gateway is shutting down"}}}};
      http::SseOptions aopts;
      aopts.shutdown_event = "event: error\ndata: " + anthropic_err.dump() + "\n\n";
      co_await ex.stream_sse(anthropic_producer, std::move(aopts));
      co_return http::Exchange::streamed();
    }
    const json shutdown_err = {{"error",
                                {{"message", "the gateway is shutting down"},
                                 {"type", "server_error"},
                                 {"param", nullptr},
                                 {"code", "server_shutdown"}}}};
    opts.shutdown_event = "data: " + shutdown_err.dump() + "\n\n";
    co_await ex.stream_sse(producer, std::move(opts));
    co_return http::Exchange::streamed();
  }

  metrics::Registry& metrics_;
  FreeMeter free_meter_;
  Meter* meter_;
  std::optional<Idempotency> idempotency_;
  std::mutex metrics_mu_;
  std::unordered_map<std::string, metrics::Counter*> counters_;
  std::unordered_map<std::string, metrics::Histogram*> durations_;
  std::shared_ptr<http::Client> client_;
  std::unordered_map<std::string, std::unique_ptr<Provider>> providers_;
  mutable std::mutex state_mu_;  // guards states_' enabled and reason
  std::vector<ProviderState> states_;
  std::unordered_map<std::string, std::unique_ptr<std::atomic<bool>>> ready_;  // by provider
  std::unordered_map<std::string, std::string> needs_key_;  // provider -> its api_key_env
  std::unordered_map<std::string, ModelEntry> models_;
  std::unordered_map<std::string, metrics::Histogram*> latency_;  // by provider
  std::deque<Breaker> breakers_;  // stable addresses
  std::unordered_map<std::string, Breaker*> breaker_index_;
};

}  // namespace

Result<std::unique_ptr<Gateway>> Gateway::create(const Settings& settings, net::any_io_executor ex,
                                                 metrics::Registry& metrics, Meter* meter,
                                                 const std::map<std::string, std::string>& stored_keys,
                                                 storage::Kv* kv) {
  if (sodium_init() < 0) return Error::internal("libsodium failed to initialise");
  return std::unique_ptr<Gateway>(new GatewayImpl(settings, std::move(ex), metrics, meter, stored_keys, kv));
}

}  // namespace alou::gateway
