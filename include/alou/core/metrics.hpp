#pragma once
// Prometheus metrics: counters, gauges and histograms held in a Registry and
// rendered in the text exposition format, version 0.0.4
// (Content-Type: text/plain; version=0.0.4; charset=utf-8).
//
// Hot paths (Counter::inc, Gauge::set/add, Histogram::observe) touch only
// atomics; looking a metric up in the Registry takes a lock, so callers on hot
// paths look it up once and keep the reference.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace alou::metrics {

// Label name/value pairs, rendered in the order given.
using Labels = std::vector<std::pair<std::string, std::string>>;

// Content-Type of Registry::render()'s output.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// A monotonically increasing count. Thread-safe, lock-free.
class Counter final {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

// A value that goes up and down. Thread-safe, lock-free.
class Gauge final {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(double d) noexcept;
  double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into buckets with inclusive upper bounds (`le`), plus
// their sum and count. Thread-safe, lock-free. A NaN observation lands in the
// +Inf bucket and makes the sum NaN (as in the reference client).
class Histogram final {
 public:
  // `bounds`: strictly increasing, finite upper bounds; a trailing +Inf is
  // dropped (the +Inf bucket is implicit). Throws std::invalid_argument
  // otherwise.
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void observe(double v) noexcept;

  const std::vector<double>& bounds() const noexcept { return bounds_; }
  // Non-cumulative count of bucket i; i == bounds().size() is the +Inf bucket.
  std::uint64_t bucket_count(std::size_t i) const noexcept;
  // Sum of all bucket counts, so it always equals the cumulative +Inf bucket.
  std::uint64_t count() const noexcept;
  double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0.0};
};

// Default request-latency buckets, in seconds:
// 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60.
std::vector<double> latency_buckets();

// Formats a sample value as the text format expects: integral values without
// an exponent ("1000000"), others in the shortest form that round-trips
// ("0.25", "1e-05"), and "+Inf", "-Inf", "NaN".
std::string format_value(double v);

// Metric families keyed by name, each with children keyed by their labels.
//
// Names must match [a-zA-Z_:][a-zA-Z0-9_:]* and label names
// [a-zA-Z_][a-zA-Z0-9_]* without the reserved "__" prefix (and not "le" on a
// histogram), and a label name may appear once per set; otherwise the call
// throws std::invalid_argument. A family's type, help text and (histograms)
// buckets are fixed by the first call that creates it: a later call with
// another type throws std::logic_error, a different help or buckets is
// ignored. References stay valid for the registry's lifetime. All member
// functions are thread-safe.
class Registry final {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
  Histogram& histogram(std::string_view name, std::string_view help, const Labels& labels = {},
                       const std::vector<double>& buckets = latency_buckets());

  // A gauge computed at scrape time (uptime, open connections). A later call
  // with the same name and labels replaces the function. A family holds
  // either these or gauge() children, not both (std::logic_error). `fn` runs
  // inside render() under the registry's lock: it must be thread-safe and
  // must not call back into this registry. If it throws, the sample is NaN.
  void gauge_fn(std::string_view name, std::string_view help, std::function<double()> fn,
                const Labels& labels = {});

  // The whole registry in text format 0.0.4: for each family, sorted by
  // name, "# HELP" and "# TYPE" lines, then its children in creation order.
  // Histograms render cumulative _bucket{le="..."} lines ending with
  // le="+Inf" (equal to _count), then _sum and _count.
  std::string render() const;

 private:
  enum class Kind { kCounter, kGauge, kGaugeFn, kHistogram };
  struct Child;
  struct Family;

  Child& child(std::string_view name, std::string_view help, Kind kind, const Labels& labels,
               const std::vector<double>* buckets);

  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_;
};

}  // namespace alou::metrics
