#include "alou/gateway/gateway.hpp"

#include "alou/gateway/chat.hpp"

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

#include <algorithm>
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
  const std::string* served;       // the [[models]] name this route serves (priced as)
  const std::string* cap_field;    // where this provider takes an output cap
};

// The request field that carries an output cap to a provider: OpenAI's own
// API (and Azure's) wants max_completion_tokens (its reasoning models refuse
// max_tokens); other OpenAI-compatible servers (DeepSeek, Ollama, vLLM...)
// and the translating adapters read max_tokens. `max_tokens_field` overrides.
std::string cap_field_of(const ProviderSettings& p) {
  if (const auto it = p.extra.find("max_tokens_field"); it != p.extra.end()) return it->second;
  if (p.kind == "azure") return "max_completion_tokens";
  if (p.kind == "openai" && p.base_url.find("api.openai.com") != std::string::npos) return "max_completion_tokens";
  return "max_tokens";
}

// An upper estimate of a request's prompt tokens from its body, for its
// hold: tokenizers give about 4 ASCII characters a token, but a token per
// 1-3 bytes of other scripts (CJK), so bytes above 0x7f count double.
std::int64_t prompt_upper_estimate(std::string_view body) {
  std::size_t high = 0;
  for (const char c : body) high += static_cast<unsigned char>(c) >> 7;
  return static_cast<std::int64_t>((body.size() - high + 3) / 4 + (high + 1) / 2);
}

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

// ... and no limits either.
class FreePolicy final : public UsagePolicy {
 public:
  net::awaitable<Admission> admit(const HoldRequest& req) override {
    Admission a;
    auto h = meter_.hold(req);
    a.hold = std::move(*h);
    co_return a;
  }
  net::awaitable<Admission> admit_request(const Principal&) override { co_return Admission{}; }
  Meter& meter() override { return meter_; }

 private:
  FreeMeter meter_;
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

class GatewayImpl final : public Gateway, public ChatService {
 public:
  GatewayImpl(const Settings& s, net::any_io_executor ex, metrics::Registry& m, UsagePolicy* policy,
              const std::map<std::string, std::string>& stored_keys, storage::Kv* kv)
      : metrics_(m), policy_(policy ? policy : &free_policy_) {
    if (kv) idempotency_.emplace(*kv, ex);
    http::ClientOptions opts;
    client_ = std::make_shared<http::Client>(ex, opts, &m);
    // The provider registry, filled here in one readable list.
    for (const auto& p : s.providers) {
      cap_fields_.emplace(p.name, cap_field_of(p));
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
    models_.reserve(s.models.size());
    for (const auto& ms : s.models) {
      auto& e = models_.emplace(ms.name, ModelEntry{ms.name, {}, ms.fallbacks}).first->second;
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
        e.routes.push_back(Target{it->second.get(), ready_.at(r.provider).get(), upstream_model, r.weight, &breaker,
                                  &gauge, &e.name, &cap_fields_.at(r.provider)});
      }
    }
    for (const auto& st : states_) {
      if (!st.enabled) spdlog::info("provider {} ({}) disabled: {}", st.name, st.kind, st.reason);
    }
  }

  void add_routes(http::Router& router) override {
    const http::RouteOptions openai{.access = http::Access::kAuthenticated,
                                    .format = http::ErrorFormat::kOpenAi,
                                    .watch_client = true,
                                    .metered = true};
    router.post("/v1/chat/completions", [this](http::Exchange& ex) { return http_chat(ex); }, openai);
    const http::RouteOptions anthropic_route{.access = http::Access::kAuthenticated,
                                             .format = http::ErrorFormat::kAnthropic,
                                             .watch_client = true,
                                             .metered = true};
    router.post("/v1/messages", [this](http::Exchange& ex) { return http_messages(ex); }, anthropic_route);
    const http::RouteOptions listing{.access = http::Access::kAuthenticated, .format = http::ErrorFormat::kOpenAi};
    router.post("/v1/embeddings", [this](http::Exchange& ex) { return http_embeddings(ex); }, openai);
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
  // Something enabled serves `name` for `who`: one of its routes, or a
  // fallback `who` may use.
  bool available(const std::string& name, const Principal& who, int depth = 0) const {
    auto it = models_.find(name);
    if (it == models_.end() || depth > 4) return false;
    for (const auto& t : it->second.routes) {
      if (t.ready->load(std::memory_order_relaxed)) return true;
    }
    for (const auto& f : it->second.fallbacks) {
      if (who.may_use_model(f) && available(f, who, depth + 1)) return true;
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
      if (ex.principal && ex.principal->may_use_model(name) && available(name, *ex.principal)) names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    for (const auto& n : names) data.push_back(model_object(n));
    json body = {{"object", "list"}, {"data", data}};
    co_return ex.json(http::Status::ok, body.dump());
  }

  net::awaitable<http::Response> get_model(http::Exchange& ex) {
    const std::string name(ex.param("model"));
    if (!ex.principal || !ex.principal->may_use_model(name) || !available(name, *ex.principal)) {
      co_return ex.error(Error::not_found("The model `" + name + "` does not exist or you do not have access to it.",
                                          "model_not_found"));
    }
    co_return ex.json(http::Status::ok, model_object(name).dump());
  }

  // The order in which targets are tried: a weighted pick among the
  // model's routes, its other routes, then each fallback model likewise.
  // Fallback models the caller may not use are skipped.
  std::vector<const Target*> plan(const ModelEntry& m, const Principal& who) const {
    std::vector<const Target*> out;
    const auto now = steady_ms();
    std::vector<const ModelEntry*> chain{&m};
    for (const auto& f : m.fallbacks) {
      auto it = models_.find(f);
      if (it != models_.end() && who.may_use_model(f)) chain.push_back(&it->second);
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

  // What the hold of a call is for: the most it may cost.
  static HoldRequest hold_request(const ChatCall& call, const std::string& model,
                                  const std::vector<const Target*>& targets, std::int64_t max_output) {
    const json& body = call.body;
    HoldRequest r;
    r.request_id = std::string(call.request_id);
    r.principal = call.principal;
    r.model = model;
    for (const auto* t : targets) {
      if (*t->served != model &&
          std::find(r.fallback_models.begin(), r.fallback_models.end(), *t->served) == r.fallback_models.end()) {
        r.fallback_models.push_back(*t->served);
      }
    }
    r.prompt_tokens = prompt_upper_estimate(!call.request_text.empty() ? call.request_text
                                            : !call.raw.empty()         ? call.raw
                                                                        : std::string_view(body.dump()));
    r.max_output_tokens = max_output;
    if (max_output == 0) {
      for (const char* k : {"max_completion_tokens", "max_tokens"}) {
        if (const auto v = int_field(body, k); v > 0) {
          r.max_output_tokens = v;
          break;
        }
      }
    }
    return r;
  }

  // The key may use the model, it exists, something serves it, and the
  // targets to try in order.
  Result<std::vector<const Target*>> targets_for(const Principal& who, const std::string& model) const {
    if (!who.may_use_model(model)) {
      return Error::forbidden("this key may not use model `" + model + "`", "model_not_allowed");
    }
    auto it = models_.find(model);
    if (it == models_.end()) {
      return Error::not_found("The model `" + model + "` does not exist or you do not have access to it.",
                              "model_not_found");
    }
    if (!available(model, who)) return Error::unavailable("no enabled provider serves model `" + model + "`", "no_provider");
    auto targets = plan(it->second, who);
    if (targets.empty()) {
      return Error::unavailable("every route of model `" + model + "` failed repeatedly (circuit open); retry shortly",
                                "circuit_open");
    }
    return targets;
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

  // The hold's output cap in the request, in the field the target's
  // provider reads (the request set no cap of its own: Hold::output_cap).
  static void apply_cap(json& body, const Target& t, std::int64_t cap) {
    body.erase("max_tokens");
    body.erase("max_completion_tokens");
    body[*t.cap_field] = cap;
  }
  // The same on the client's text: the field goes first in its object.
  // (The text has no plain "max_tokens" key: the client set no cap;
  // forwardable() refused texts with escaped letters.)
  static std::string with_cap(std::string_view text, const Target& t, std::int64_t cap) {
    const auto open = text.find('{');
    std::string out;
    out.reserve(text.size() + 48);
    out.append(text.substr(0, open + 1));
    append_json_string(out, *t.cap_field);
    out.push_back(':');
    out.append(std::to_string(cap));
    // An empty object ("{}") takes no comma.
    const auto next = text.find_first_not_of(" \t\r\n", open + 1);
    if (next != std::string_view::npos && text[next] != '}') out.push_back(',');
    out.append(text.substr(open + 1));
    return out;
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

  // ================================================================ the chat service
  // (include/alou/gateway/chat.hpp): plan -> usage policy -> hold ->
  // attempts -> answer -> settle -> audit, for every caller.

  ChatService& chat_service() override { return *this; }

  // What every call has once it may start its first attempt.
  struct Prepared {
    std::string model;
    std::vector<const Target*> targets;
    std::unique_ptr<Hold> hold;
  };

  net::awaitable<ChatResult<Prepared>> prepare(ChatCall& call, bool stream, std::int64_t max_output) {
    if (!call.principal) co_return ChatFailure{Error::unauthorized("no credentials", "invalid_api_key"), {}};
    const auto m = call.body.find("model");
    if (m == call.body.end() || !m->is_string()) {
      co_return ChatFailure{Error::bad_request("you must provide a model parameter", "missing_model"), {}};
    }
    Prepared p;
    p.model = m->get<std::string>();
    auto targets = targets_for(*call.principal, p.model);
    if (!targets) co_return ChatFailure{targets.error(), {}};
    p.targets = std::move(*targets);
    // The caller's usage policy (rate limits, concurrency, budget and
    // balance: 429 or 402) and the hold, then the request's audit trail.
    auto a = co_await policy_->admit(hold_request(call, p.model, p.targets, max_output));
    for (auto& h : a.headers) call.limit_headers.push_back(std::move(h));
    if (a.error) co_return ChatFailure{*a.error, std::chrono::seconds(a.retry_after_s)};
    p.hold = std::move(a.hold);
    p.hold->event("request", JsonObject{}
                                 .str("endpoint", call.endpoint)
                                 .num("hold_nanos", p.hold->amount_nanos())
                                 .str("model", p.model)
                                 .str("principal", std::string_view(call.principal->id))
                                 .boolean("stream", stream)
                                 .done());
    co_return p;
  }

  // Nothing was delivered: the hold is released, nothing is charged.
  static ChatFailure failed(Hold& hold, const UpstreamFailure& f) {
    hold.event("completion",
               JsonObject{}.str("code", f.error.code).str("outcome", "error").num("status", f.error.status).done());
    hold.release();
    return ChatFailure{f.error, f.retry_after};
  }

  // (Not coroutines themselves: one coroutine frame less per call.)
  net::awaitable<ChatResult<ChatAnswer>> complete(ChatCall& call) override { return buffered(call, &Provider::chat); }
  net::awaitable<ChatResult<ChatAnswer>> embed(ChatCall& call) override {
    return buffered(call, &Provider::embeddings);
  }

  using Call = net::awaitable<UpResult<std::string>> (Provider::*)(const json&);

  // One buffered call with retries and fallbacks (chat or embeddings). The
  // caller's text (call.raw) is forwarded as is to a target whose upstream
  // model is the requested one (renamed for the others, with the output cap
  // spliced in when the hold sets one).
  net::awaitable<ChatResult<ChatAnswer>> buffered(ChatCall& call, Call fn) {
    const bool is_chat = fn == &Provider::chat;
    auto prep = co_await prepare(call, false, is_chat ? 0 : 1);
    if (!prep) co_return prep.error();
    const std::string& model = prep->model;
    const DurationTimer timer{duration(model)};
    Hold& hold = *prep->hold;
    json& body = call.body;
    const auto cap = is_chat ? hold.output_cap() : 0;
    std::optional<RawBody> raw;
    // A text that names a cap field already (`"max_tokens": null`) would
    // carry two of them once the cap is spliced in, and upstreams differ on
    // which one wins: such a body is serialised instead.
    if (is_chat && !call.raw.empty() &&
        (cap == 0 || (call.raw.find("\"max_tokens\"") == std::string_view::npos &&
                      call.raw.find("\"max_completion_tokens\"") == std::string_view::npos))) {
      raw = forwardable(call.raw, model);
    }
    UpstreamFailure last{Error::unavailable("no provider answered", "no_provider")};
    const auto& targets = prep->targets;
    for (std::size_t ti = 0; ti < targets.size(); ++ti) {
      const Target& t = *targets[ti];
      body["model"] = t.model;
      if (cap > 0) apply_cap(body, t, cap);
      for (int attempt = 0; attempt < kTriesPerTarget; ++attempt) {
        if (attempt > 0) {
          retries(t.provider->name()).inc();
          co_await backoff(attempt - 1, last.retry_after);
        }
        hold.event("route", route_event(t, ti, attempt, last));
        const auto started = std::chrono::steady_clock::now();
        std::optional<UpResult<std::string>> sent;
        if (raw && t.model == model && cap == 0) {
          sent.emplace(co_await t.provider->chat_raw(body, raw->text));
        } else if (raw) {
          std::string text = t.model == model ? std::string(raw->text) : renamed(*raw, t.model);
          if (cap > 0) text = with_cap(text, t, cap);
          sent.emplace(co_await t.provider->chat_raw(body, text));
        } else {
          sent.emplace(co_await (t.provider->*fn)(body));
        }
        auto r = std::move(*sent);
        if (!r && co_await client_gone()) {
          // The caller left (its cancellation ended the call): not the
          // route's fault, so no breaker count, no retry; nothing charged.
          co_return failed(hold, r.error());
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
          if (!usage) usage = Usage{prompt_estimate(call), tokens_of_chars(delta_chars(*r)), 0, true};
          hold.event("completion", JsonObject{}.str("outcome", "ok").str("provider", t.provider->name()).done());
          hold.priced_as(*t.served);
          // Delivered only once the charge is durable.
          auto charged = co_await hold.settle(*usage, t.provider->name());
          if (!charged) co_return ChatFailure{charged.error(), {}};
          co_return ChatAnswer{std::move(*r), *usage, *charged, t.provider->name(), *t.served};
        }
        last = r.error();
        outcome(model, t.provider->name(), "error").inc();
        errors(t.provider->name(), last.error.code).inc();
        spdlog::warn("[{}] {} via {}: {} ({})", call.request_id, model, t.provider->name(), last.error.message,
                     last.retryable ? "retryable" : "final");
        if (!last.retryable) break;
      }
      if (!last.retryable) break;
      if (ti + 1 < targets.size()) fallbacks(model).inc();
    }
    co_return failed(hold, last);
  }

  // The prompt estimate of a charge whose usage never came (bytes / 4).
  static std::int64_t prompt_estimate(const ChatCall& call) {
    return tokens_of_chars(!call.request_text.empty() ? call.request_text.size() : call.raw.size());
  }

  // A committed stream (ChatAnswerStream): settled once however it ends,
  // and its outcome recorded.
  class Committed final : public ChatAnswerStream {
   public:
    // `first`: the chunk that committed it (nullopt: the upstream's stream
    // was empty).
    Committed(GatewayImpl& g, Prepared prep, std::unique_ptr<ChatStream> upstream, std::optional<std::string> first,
              const Target& used, std::int64_t prompt_estimate, std::unique_ptr<DurationTimer> timer)
        : g_(g),
          model_(std::move(prep.model)),
          hold_(std::move(prep.hold)),
          upstream_(std::move(upstream)),
          first_(std::move(first)),
          ended_(!first_),
          provider_(used.provider->name()),
          served_(*used.served),
          prompt_estimate_(prompt_estimate),
          timer_(std::move(timer)) {}
    Committed(const Committed&) = delete;
    Committed& operator=(const Committed&) = delete;

    ~Committed() override {
      const char* o = failed_ ? "error" : (delivered_ ? "ok" : "cancelled");
      g_.outcome(model_, provider_, o).inc();
      hold_->event("completion", JsonObject{}.str("outcome", o).str("provider", provider_).done());
      // Abandoned (the consumer left): what was produced, in the background.
      if (!settled_) hold_->settle_detached(usage(), provider_);
    }

    const std::string& provider() const override { return provider_; }
    const std::string& model() const override { return served_; }

    net::awaitable<ChatResult<std::optional<StreamChunk>>> next() override {
      StreamChunk c;
      if (ended_) co_return std::optional<StreamChunk>();
      if (first_) {
        c.json = std::move(*first_);
        first_.reset();
      } else {
        auto n = co_await upstream_->next();
        if (!n) {
          failed_ = true;
          g_.errors(provider_, n.error().error.code).inc();
          // What was streamed is charged (the upstream's usage if it came).
          settled_ = true;
          co_await hold_->settle(usage(), provider_);
          co_return ChatFailure{n.error().error, n.error().retry_after};
        }
        if (!*n) {
          ended_ = true;
          co_return std::optional<StreamChunk>();
        }
        c.json = std::move(**n);
      }
      // Chunks say "usage":null until the last one: parse only that one.
      if (usage_object_at(c.json) != std::string_view::npos) {
        const auto j = json::parse(c.json, nullptr, false);
        if (j.is_object() && j.contains("usage") && j["usage"].is_object()) {
          g_.record_usage(model_, j["usage"]);
          usage_ = usage_of(j["usage"]);
          c.usage_only = !j.contains("choices") || (j["choices"].is_array() && j["choices"].empty());
        }
      }
      if (!usage_) chars_ += delta_chars(c.json);
      co_return std::optional<StreamChunk>(std::move(c));
    }

    net::awaitable<Result<std::int64_t>> finish() override {
      settled_ = true;
      auto r = co_await hold_->settle(usage(), provider_);
      if (!r) failed_ = true;
      co_return r;
    }

    void delivered() override { delivered_ = !failed_; }

    Usage usage() const override {
      if (usage_) return *usage_;
      return Usage{prompt_estimate_, tokens_of_chars(chars_), 0, true};
    }

   private:
    GatewayImpl& g_;
    std::string model_;
    std::unique_ptr<Hold> hold_;
    std::unique_ptr<ChatStream> upstream_;
    std::optional<std::string> first_;
    bool ended_;
    std::string provider_;
    std::string served_;
    std::int64_t prompt_estimate_;
    std::optional<Usage> usage_;
    std::size_t chars_ = 0;
    bool settled_ = false;
    bool failed_ = false;
    bool delivered_ = false;
    std::unique_ptr<DurationTimer> timer_;  // observed when the stream ends
  };

  net::awaitable<ChatResult<std::unique_ptr<ChatAnswerStream>>> stream(ChatCall& call) override {
    auto prep = co_await prepare(call, true, 0);
    if (!prep) co_return prep.error();
    const std::string& model = prep->model;
    auto timer = std::make_unique<DurationTimer>(duration(model));
    Hold& hold = *prep->hold;
    json& body = call.body;
    // Usage is always asked of the upstream (billing needs it).
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    UpstreamFailure last{Error::unavailable("no provider answered", "no_provider")};
    std::unique_ptr<ChatStream> upstream;
    std::optional<std::string> first;
    const Target* used = nullptr;
    const auto cap = hold.output_cap();
    const auto& targets = prep->targets;
    // Fallbacks and retries happen only until the first chunk: after that
    // the caller has bytes and the answer is committed.
    for (std::size_t ti = 0; ti < targets.size() && !used; ++ti) {
      const Target& t = *targets[ti];
      body["model"] = t.model;
      if (cap > 0) apply_cap(body, t, cap);
      for (int attempt = 0; attempt < kTriesPerTarget && !used; ++attempt) {
        if (attempt > 0) {
          retries(t.provider->name()).inc();
          co_await backoff(attempt - 1, last.retry_after);
        }
        hold.event("route", route_event(t, ti, attempt, last));
        const auto started = std::chrono::steady_clock::now();
        auto s = co_await t.provider->chat_stream(body);
        if (!s && co_await client_gone()) co_return failed(hold, s.error());
        if (s) {
          auto f = co_await (*s)->next();
          if (!f && co_await client_gone()) co_return failed(hold, f.error());
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
        spdlog::warn("[{}] {} via {}: {} ({})", call.request_id, model, t.provider->name(), last.error.message,
                     last.retryable ? "retryable" : "final");
        if (!last.retryable) break;
      }
      if (!used && !last.retryable) break;
      if (!used && ti + 1 < targets.size()) fallbacks(model).inc();
    }
    if (!used) co_return failed(hold, last);
    hold.priced_as(*used->served);
    const auto estimate = prompt_estimate(call);
    co_return std::unique_ptr<ChatAnswerStream>(
        new Committed(*this, std::move(*prep), std::move(upstream), std::move(first), *used, estimate, std::move(timer)));
  }

  // ================================================================ HTTP adapters

  // The call's rate-limit headers on the answer, and the answer to a failure.
  static http::Response failure_response(http::Exchange& ex, const ChatFailure& f) {
    auto res = ex.error(f.error);
    if (f.error.status == 429) {
      const auto secs = std::max<std::int64_t>(
          1, std::chrono::duration_cast<std::chrono::seconds>(f.retry_after + std::chrono::milliseconds(999)).count());
      res.set(http::bhttp::field::retry_after, std::to_string(secs));
    }
    return res;
  }
  static void take_headers(http::Exchange& ex, ChatCall& call) {
    for (auto& h : call.limit_headers) ex.response_headers.push_back(std::move(h));
    call.limit_headers.clear();
  }
  static ChatCall call_of(const http::Exchange& ex, json body, std::string_view raw) {
    ChatCall c;
    c.principal = ex.principal ? &*ex.principal : nullptr;
    c.request_id = ex.request_id;
    c.endpoint = ex.path();
    c.body = std::move(body);
    c.raw = raw;
    c.request_text = ex.request().body();
    return c;
  }

  // A buffered answer (or its failure) to the client, through its
  // Idempotency-Key claim if it has one.
  static net::awaitable<http::Response> answer(http::Exchange& ex, ChatCall& call, ChatResult<ChatAnswer> a,
                                               IdempotencyClaim* claim) {
    take_headers(ex, call);
    if (!a) {
      // Nothing was charged: the key is free for a retry.
      if (claim) co_await claim->abandon();
      co_return failure_response(ex, a.error());
    }
    // Kept before it is sent: a replay that follows finds it.
    if (claim) co_await claim->complete(200, "application/json", a->body);
    co_return ex.json(http::Status::ok, std::move(a->body));
  }

  // POST /v1/chat/completions.
  net::awaitable<http::Response> http_chat(http::Exchange& ex) {
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
    bool wants_usage = false;
    if (body.contains("stream_options") && !body["stream_options"].is_null()) {
      const auto& so = body["stream_options"];
      if (!so.is_object() || (so.contains("include_usage") && !so["include_usage"].is_boolean())) {
        co_return ex.error(Error::bad_request("stream_options.include_usage must be a boolean", "invalid_stream_options"));
      }
      wants_usage = so.contains("include_usage") && so["include_usage"].get<bool>();
    }
    const bool streamed = body.contains("stream") && body["stream"].is_boolean() && body["stream"].get<bool>();
    std::shared_ptr<IdempotencyClaim> claim;
    std::optional<http::Response> early;
    if (!ex.request()["Idempotency-Key"].empty()) early = co_await claim_idempotency_key(ex, claim);
    if (early) co_return std::move(*early);
    ChatCall call = call_of(ex, std::move(body), ex.request().body());
    if (!streamed) co_return co_await answer(ex, call, co_await complete(call), claim.get());
    auto s = co_await stream(call);
    take_headers(ex, call);
    if (!s) {
      if (claim) co_await claim->abandon();
      co_return failure_response(ex, s.error());
    }
    // From here the stream is charged (in full, or what it produced if it
    // is cut), so its Idempotency-Key keeps what it sent.
    if (claim) claim->commit();
    co_return co_await relay_openai(ex, **s, wants_usage, claim.get());
  }

  static std::string openai_error_frame(const Error& e) {
    const json err = {{"error", {{"message", e.message}, {"type", "server_error"}, {"param", nullptr}, {"code", e.code}}}};
    return "data: " + err.dump() + "\n\n";
  }

  // A committed stream as OpenAI chunks. The first chunk goes out in the
  // same write as the response head (one packet, one wake-up of the
  // client, sooner).
  net::awaitable<http::Response> relay_openai(http::Exchange& ex, ChatAnswerStream& s, bool wants_usage,
                                              IdempotencyClaim* claim) {
    const auto frame_of = [wants_usage](const StreamChunk& c) -> std::optional<std::string> {
      if (c.usage_only && !wants_usage) return std::nullopt;
      std::string frame;
      frame.reserve(c.json.size() + 8);
      frame.append("data: ").append(c.json).append("\n\n");
      return frame;
    };
    http::SseOptions opts;
    auto first = co_await s.next();  // the chunk that committed it: already here
    const bool ended = first && !*first;  // an empty stream
    if (first && *first) {
      if (auto f = frame_of(**first)) {
        if (claim) claim->tape(*f);
        opts.first = std::move(*f);
      }
    }
    auto producer = [&](http::SseWriter& client) -> net::awaitable<void> {
      std::optional<TapWriter> tap;
      if (claim) tap.emplace(client, *claim);
      http::SseWriter& w = tap ? static_cast<http::SseWriter&>(*tap) : client;
      if (!first) {
        co_await w.send_raw(openai_error_frame(first.error().error));
        co_return;
      }
      while (!ended) {
        auto n = co_await s.next();
        if (!n) {
          co_await w.send_raw(openai_error_frame(n.error().error));
          co_return;
        }
        if (!*n) break;
        if (auto frame = frame_of(**n); frame && !co_await w.send_raw(*frame)) co_return;
      }
      // The final event goes out only once the charge is durable.
      auto charged = co_await s.finish();
      if (!charged) {
        co_await w.send_raw(openai_error_frame(charged.error()));
        co_return;
      }
      std::string done = "data: [DONE]\n\n";
      if (claim) {
        claim->tape(done);
        co_await claim->complete_tape();
      }
      if (co_await w.send_raw(done)) s.delivered();
    };
    opts.shutdown_event = openai_error_frame(Error{503, "server_shutdown", "the gateway is shutting down"});
    co_await ex.stream_sse(producer, std::move(opts));
    co_return http::Exchange::streamed();
  }

  // POST /v1/messages: Anthropic Messages, translated to the canonical
  // OpenAI request and served exactly like chat (the anthropic-version
  // header is accepted and ignored).
  net::awaitable<http::Response> http_messages(http::Exchange& ex) {
    const auto in = json::parse(ex.request().body(), nullptr, false);
    if (in.is_discarded() || !in.is_object()) {
      co_return ex.error(Error::bad_request("the request body is not a JSON object", "invalid_json"));
    }
    auto body = anthropic::to_openai_request(in);
    if (!body) co_return ex.error(body.error());
    const std::string model = (*body)["model"].get<std::string>();
    const bool streamed = (*body)["stream"].get<bool>();
    body->erase("stream");
    std::shared_ptr<IdempotencyClaim> claim;
    std::optional<http::Response> early;
    if (!ex.request()["Idempotency-Key"].empty()) early = co_await claim_idempotency_key(ex, claim);
    if (early) co_return std::move(*early);
    ChatCall call = call_of(ex, std::move(*body), {});
    if (!streamed) {
      auto a = co_await complete(call);
      if (a) a->body = anthropic::to_anthropic_message(a->body, model);
      co_return co_await answer(ex, call, std::move(a), claim.get());
    }
    auto s = co_await stream(call);
    take_headers(ex, call);
    if (!s) {
      if (claim) co_await claim->abandon();
      co_return failure_response(ex, s.error());
    }
    if (claim) claim->commit();
    co_return co_await relay_anthropic(ex, **s, model, claim.get());
  }

  static http::SseEvent anthropic_error_event(const Error& e, std::string& text) {
    const json err = {{"type", "error"}, {"error", {{"type", "api_error"}, {"message", e.message}}}};
    text = err.dump();
    return http::SseEvent{.event = "error", .data = text, .id = {}};
  }

  // A committed stream as Anthropic's events.
  net::awaitable<http::Response> relay_anthropic(http::Exchange& ex, ChatAnswerStream& s, const std::string& model,
                                                 IdempotencyClaim* claim) {
    auto producer = [&](http::SseWriter& client) -> net::awaitable<void> {
      std::optional<TapWriter> tap;
      if (claim) tap.emplace(client, *claim);
      http::SseWriter& w = tap ? static_cast<http::SseWriter&>(*tap) : client;
      anthropic::StreamRelay relay(model);
      anthropic::StreamRelay::Events events;
      std::string text;
      for (;;) {
        auto n = co_await s.next();
        if (!n) {
          co_await w.send(anthropic_error_event(n.error().error, text));
          co_return;
        }
        if (!*n) break;
        const auto j = json::parse((*n)->json, nullptr, false);
        if (j.is_object()) relay.on_chunk(j, events);
        for (const auto& [name, data] : events) {
          text = data.dump();
          if (!co_await w.send(http::SseEvent{.event = name, .data = text, .id = {}})) co_return;
        }
        events.clear();
      }
      auto charged = co_await s.finish();
      if (!charged) {
        co_await w.send(anthropic_error_event(charged.error(), text));
        co_return;
      }
      relay.finish(events);
      if (claim) {
        for (const auto& [name, data] : events) {
          text = data.dump();
          claim->tape(http::encode_sse(http::SseEvent{.event = name, .data = text, .id = {}}));
        }
        co_await claim->complete_tape();
      }
      bool ok = true;
      for (const auto& [name, data] : events) {
        text = data.dump();
        ok = co_await w.send(http::SseEvent{.event = name, .data = text, .id = {}});
        if (!ok) break;
      }
      if (ok) s.delivered();
    };
    std::string text;
    const auto ev = anthropic_error_event(Error{503, "server_shutdown", "the gateway is shutting down"}, text);
    http::SseOptions opts;
    opts.shutdown_event = http::encode_sse(ev);
    co_await ex.stream_sse(producer, std::move(opts));
    co_return http::Exchange::streamed();
  }

  // POST /v1/embeddings: routed like chat (same models, keys, retries,
  // fallbacks and breakers).
  net::awaitable<http::Response> http_embeddings(http::Exchange& ex) {
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
    std::shared_ptr<IdempotencyClaim> claim;
    std::optional<http::Response> early;
    if (!ex.request()["Idempotency-Key"].empty()) early = co_await claim_idempotency_key(ex, claim);
    if (early) co_return std::move(*early);
    ChatCall call = call_of(ex, std::move(body), {});
    co_return co_await answer(ex, call, co_await embed(call), claim.get());
  }

  metrics::Registry& metrics_;
  FreePolicy free_policy_;
  UsagePolicy* policy_;
  std::optional<Idempotency> idempotency_;
  std::mutex metrics_mu_;
  std::unordered_map<std::string, metrics::Counter*> counters_;
  std::unordered_map<std::string, metrics::Histogram*> durations_;
  std::shared_ptr<http::Client> client_;
  std::unordered_map<std::string, std::string> cap_fields_;  // provider -> its output cap field
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
                                                 metrics::Registry& metrics, UsagePolicy* policy,
                                                 const std::map<std::string, std::string>& stored_keys,
                                                 storage::Kv* kv) {
  if (sodium_init() < 0) return Error::internal("libsodium failed to initialise");
  return std::unique_ptr<Gateway>(new GatewayImpl(settings, std::move(ex), metrics, policy, stored_keys, kv));
}

}  // namespace alou::gateway
