#include "alou/http/filters.hpp"

#include "alou/core/metrics.hpp"
#include "alou/core/random.hpp"
#include "alou/http/exchange.hpp"

#include <boost/beast/http/field.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <unordered_map>

namespace alou::http {
namespace {

// Request ids need to be unique, not secret, and they are keys of the
// ledger's and the audit trail's indexes: time-ordered ids append at the
// right edge of those B-trees instead of dirtying a random page each (which
// cost a 4 KB WAL write per request). 24 hex digits: milliseconds since the
// epoch (11), a per-thread counter (5), a per-thread random tag (8).
std::string fast_request_id() {
  struct State {
    std::uint32_t tag;
    std::uint32_t n = 0;
  };
  thread_local State st = [] {
    State s{};
    s.tag = static_cast<std::uint32_t>(std::stoull(random_hex(4), nullptr, 16));
    return s;
  }();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  // 11 hex digits of milliseconds, 5 of a per-thread counter, 8 of the
  // thread's random tag (written by hand: snprintf costs more than the
  // rest of the filter).
  std::string out(24, '0');
  put_hex(out.data(), 11, static_cast<std::uint64_t>(ms));
  put_hex(out.data() + 11, 5, ++st.n);
  put_hex(out.data() + 16, 8, st.tag);
  return out;
}

class RequestIdFilter final : public Filter {
 public:
  boost::asio::awaitable<std::optional<Response>> on_request(Exchange& ex) override {
    const auto given = ex.request()["x-request-id"];
    ex.request_id = valid_request_id(given) ? std::string(given) : fast_request_id();
    co_return std::nullopt;
  }
  void on_response(Exchange& ex, Response& res) override { res.set("x-request-id", ex.request_id); }
};

class ObservabilityFilter final : public Filter {
 public:
  ObservabilityFilter(metrics::Registry& registry, const Router& router, bool access_log)
      : registry_(registry), access_log_(access_log) {
    // One latency histogram per route, created up front so the hot path
    // only touches atomics.
    for (const auto& r : router.routes()) {
      latency_.push_back(&registry.histogram("alou_http_request_duration_seconds",
                                             "Time from request head to the end of the response",
                                             {{"route", r->pattern}}));
    }
    unmatched_latency_ = &registry.histogram("alou_http_request_duration_seconds",
                                             "Time from request head to the end of the response",
                                             {{"route", "unmatched"}});
  }

  void on_complete(Exchange& ex) override {
    const auto elapsed = std::chrono::steady_clock::now() - ex.started;
    const double seconds = std::chrono::duration<double>(elapsed).count();
    const auto* route = ex.route();
    (route ? latency_[route->index] : unmatched_latency_)->observe(seconds);
    counter(route ? static_cast<int>(route->index) : -1, ex.request().method(), ex.sent_status).inc();
    if (access_log_) {
      spdlog::info("[{}] {} {} {} {}B {:.3f}ms {}", ex.request_id, bhttp::to_string(ex.request().method()),
                   ex.path(), ex.sent_status, ex.sent_bytes, seconds * 1000.0,
                   ex.remote().address().to_string());
    }
  }

 private:
  metrics::Counter& counter(int route, Verb method, int status) {
    const std::uint64_t key = (static_cast<std::uint64_t>(route + 1) << 32) |
                              (static_cast<std::uint64_t>(method) << 16) | static_cast<std::uint64_t>(status);
    std::lock_guard lock(mu_);
    auto it = counters_.find(key);
    if (it != counters_.end()) return *it->second;
    auto& c = registry_.counter("alou_http_requests_total", "HTTP requests by route, method and status",
                                {{"route", route >= 0 ? route_pattern(route) : "unmatched"},
                                 {"method", std::string(bhttp::to_string(method))},
                                 {"status", std::to_string(status)}});
    counters_.emplace(key, &c);
    return c;
  }

  std::string route_pattern(int index) const {
    // The histogram labels hold the patterns; keep a copy for counters.
    return patterns_.at(static_cast<std::size_t>(index));
  }

 public:
  void set_patterns(const Router& router) {
    for (const auto& r : router.routes()) patterns_.push_back(r->pattern);
  }

 private:
  metrics::Registry& registry_;
  bool access_log_;
  std::vector<metrics::Histogram*> latency_;
  metrics::Histogram* unmatched_latency_ = nullptr;
  std::vector<std::string> patterns_;
  std::mutex mu_;
  std::unordered_map<std::uint64_t, metrics::Counter*> counters_;
};

class CorsFilter final : public Filter {
 public:
  explicit CorsFilter(std::vector<std::string> origins) : origins_(std::move(origins)) {}

  boost::asio::awaitable<std::optional<Response>> on_request(Exchange& ex) override {
    const auto origin = ex.request()[bhttp::field::origin];
    if (ex.request().method() != Verb::options || origin.empty() ||
        ex.request()[bhttp::field::access_control_request_method].empty()) {
      co_return std::nullopt;
    }
    Response res{Status::no_content, ex.request().version()};
    if (allowed(origin)) {
      res.set(bhttp::field::access_control_allow_methods, "GET, POST, PUT, DELETE, OPTIONS");
      const std::string_view req_headers = ex.request()[bhttp::field::access_control_request_headers];
      res.set(bhttp::field::access_control_allow_headers,
              req_headers.empty() ? std::string_view("authorization, content-type, x-api-key") : req_headers);
      res.set(bhttp::field::access_control_max_age, "600");
    }
    co_return res;
  }

  void on_response(Exchange& ex, Response& res) override {
    const auto origin = ex.request()[bhttp::field::origin];
    if (origin.empty() || !allowed(origin)) return;
    res.set(bhttp::field::access_control_allow_origin, origin);
    res.set(bhttp::field::vary, "Origin");
    res.set(bhttp::field::access_control_expose_headers,
            "x-request-id, retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, "
            "x-ratelimit-reset-requests");
  }

 private:
  bool allowed(std::string_view origin) const {
    for (const auto& o : origins_) {
      if (o == "*" || o == origin) return true;
    }
    return false;
  }
  std::vector<std::string> origins_;
};

}  // namespace

bool valid_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (const char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::shared_ptr<Filter> make_request_id_filter() { return std::make_shared<RequestIdFilter>(); }

std::shared_ptr<Filter> make_observability_filter(metrics::Registry& registry, const Router& router,
                                                  bool access_log) {
  auto f = std::make_shared<ObservabilityFilter>(registry, router, access_log);
  f->set_patterns(router);
  return f;
}

std::shared_ptr<Filter> make_cors_filter(std::vector<std::string> origins) {
  return std::make_shared<CorsFilter>(std::move(origins));
}

}  // namespace alou::http
