#include "alou/core/metrics.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <system_error>

namespace alou::metrics {
namespace {

// std::atomic<double>::fetch_add exists in C++20 but not in every standard
// library we build with; a relaxed CAS loop is what it compiles to anyway.
void atomic_add(std::atomic<double>& target, double d) noexcept {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + d, std::memory_order_relaxed)) {
  }
}

bool is_alpha(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

bool valid_metric_name(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (!(is_alpha(c) || c == '_' || c == ':' || (i > 0 && is_digit(c)))) return false;
  }
  return true;
}

bool valid_label_name(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (!(is_alpha(c) || c == '_' || (i > 0 && is_digit(c)))) return false;
  }
  return true;
}

void validate_labels(std::string_view metric, const Labels& labels, bool histogram) {
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const std::string& name = labels[i].first;
    if (!valid_label_name(name)) {
      throw std::invalid_argument("metric " + std::string(metric) + ": invalid label name \"" + name + "\"");
    }
    if (name.starts_with("__")) {
      throw std::invalid_argument("metric " + std::string(metric) + ": label name \"" + name +
                                  "\" is reserved (\"__\" prefix)");
    }
    if (histogram && name == "le") {
      throw std::invalid_argument("metric " + std::string(metric) + ": label \"le\" is reserved on histograms");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (labels[j].first == name) {
        throw std::invalid_argument("metric " + std::string(metric) + ": duplicate label \"" + name + "\"");
      }
    }
  }
}

void append_escaped_label_value(std::string& out, std::string_view v) {
  for (const char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
}

void append_escaped_help(std::string& out, std::string_view v) {
  for (const char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
}

// `{a="1",b="2"}`, with an optional trailing `le` label; nothing when empty.
void append_labels(std::string& out, const Labels& labels, std::string_view le = {}) {
  if (labels.empty() && le.empty()) return;
  out += '{';
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first) out += ',';
    first = false;
    out += name;
    out += "=\"";
    append_escaped_label_value(out, value);
    out += '"';
  }
  if (!le.empty()) {
    if (!first) out += ',';
    out += "le=\"";
    out += le;
    out += '"';
  }
  out += '}';
}

void append_sample(std::string& out, std::string_view name, std::string_view suffix, const Labels& labels,
                   std::string_view value, std::string_view le = {}) {
  out += name;
  out += suffix;
  append_labels(out, labels, le);
  out += ' ';
  out += value;
  out += '\n';
}

std::vector<double> normalize_bounds(std::vector<double> bounds) {
  if (!bounds.empty() && std::isinf(bounds.back()) && bounds.back() > 0) bounds.pop_back();
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) throw std::invalid_argument("histogram bucket bounds must be finite");
    if (i > 0 && !(bounds[i - 1] < bounds[i])) {
      throw std::invalid_argument("histogram bucket bounds must be strictly increasing");
    }
  }
  return bounds;
}

}  // namespace

void Gauge::add(double d) noexcept { atomic_add(value_, d); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(normalize_bounds(std::move(bounds))),
      counts_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::observe(double v) noexcept {
  // Linear scan: bucket lists are short (~16) and mostly hit early; a binary
  // search would not pay for its branches.
  std::size_t i = 0;
  while (i < bounds_.size() && !(v <= bounds_[i])) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, v);
}

std::uint64_t Histogram::bucket_count(std::size_t i) const noexcept {
  return i <= bounds_.size() ? counts_[i].load(std::memory_order_relaxed) : 0;
}

std::uint64_t Histogram::count() const noexcept {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) total += counts_[i].load(std::memory_order_relaxed);
  return total;
}

std::vector<double> latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == 0) return "0";  // also folds -0
  // Large enough for any double in fixed notation below 1e21.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<std::size_t>(res.ptr - buf));
  int exponent = 0;
  const auto e = sci.find('e');
  std::from_chars(sci.data() + e + (sci[e + 1] == '+' ? 2 : 1), sci.data() + sci.size(), exponent);
  // Like Go's strconv 'g' (what Prometheus itself emits) but keeps values
  // up to 1e21, integral ones in particular, in plain digits.
  if (exponent < -4 || exponent >= 21) return std::string(sci);
  res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  return std::string(buf, res.ptr);
}

struct Registry::Child {
  Labels labels;
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Gauge> gauge;
  std::unique_ptr<Histogram> histogram;
  std::function<double()> fn;
};

struct Registry::Family {
  Kind kind;
  std::string help;
  std::vector<double> buckets;
  std::vector<std::unique_ptr<Child>> children;  // creation order
  std::map<Labels, Child*> by_labels;
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Child& Registry::child(std::string_view name, std::string_view help, Kind kind, const Labels& labels,
                                 const std::vector<double>* buckets) {
  if (!valid_metric_name(name)) throw std::invalid_argument("invalid metric name \"" + std::string(name) + "\"");
  validate_labels(name, labels, kind == Kind::kHistogram);

  const std::lock_guard lock(mutex_);
  auto it = families_.find(name);
  if (it == families_.end()) {
    auto family = std::make_unique<Family>();
    family->kind = kind;
    family->help = std::string(help);
    // Validate the bounds before the family exists, so a bad call leaves no trace.
    if (buckets != nullptr) family->buckets = normalize_bounds(*buckets);
    it = families_.emplace(std::string(name), std::move(family)).first;
  } else if (it->second->kind != kind) {
    throw std::logic_error("metric " + std::string(name) + " already registered with another type");
  }
  Family& family = *it->second;
  if (const auto found = family.by_labels.find(labels); found != family.by_labels.end()) return *found->second;

  auto c = std::make_unique<Child>();
  c->labels = labels;
  switch (kind) {
    case Kind::kCounter: c->counter = std::make_unique<Counter>(); break;
    case Kind::kGauge: c->gauge = std::make_unique<Gauge>(); break;
    case Kind::kHistogram: c->histogram = std::make_unique<Histogram>(family.buckets); break;
    case Kind::kGaugeFn: break;
  }
  Child& ref = *c;
  family.children.push_back(std::move(c));
  family.by_labels.emplace(labels, &ref);
  return ref;
}

Counter& Registry::counter(std::string_view name, std::string_view help, const Labels& labels) {
  return *child(name, help, Kind::kCounter, labels, nullptr).counter;
}

Gauge& Registry::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  return *child(name, help, Kind::kGauge, labels, nullptr).gauge;
}

Histogram& Registry::histogram(std::string_view name, std::string_view help, const Labels& labels,
                               const std::vector<double>& buckets) {
  return *child(name, help, Kind::kHistogram, labels, &buckets).histogram;
}

void Registry::gauge_fn(std::string_view name, std::string_view help, std::function<double()> fn,
                        const Labels& labels) {
  Child& c = child(name, help, Kind::kGaugeFn, labels, nullptr);
  const std::lock_guard lock(mutex_);  // render() reads `fn` under the same lock
  c.fn = std::move(fn);
}

std::string Registry::render() const {
  std::string out;
  const std::lock_guard lock(mutex_);
  for (const auto& [name, family] : families_) {
    out += "# HELP ";
    out += name;
    out += ' ';
    append_escaped_help(out, family->help);
    out += "\n# TYPE ";
    out += name;
    switch (family->kind) {
      case Kind::kCounter: out += " counter\n"; break;
      case Kind::kGauge:
      case Kind::kGaugeFn: out += " gauge\n"; break;
      case Kind::kHistogram: out += " histogram\n"; break;
    }
    for (const auto& c : family->children) {
      switch (family->kind) {
        case Kind::kCounter: append_sample(out, name, "", c->labels, std::to_string(c->counter->value())); break;
        case Kind::kGauge: append_sample(out, name, "", c->labels, format_value(c->gauge->value())); break;
        case Kind::kGaugeFn: {
          double v = std::numeric_limits<double>::quiet_NaN();
          try {
            if (c->fn) v = c->fn();
          } catch (...) {  // a broken probe must not break the scrape
          }
          append_sample(out, name, "", c->labels, format_value(v));
          break;
        }
        case Kind::kHistogram: {
          const Histogram& h = *c->histogram;
          // Read each bucket once and derive +Inf and _count from the same
          // reads, so the scrape is self-consistent under concurrent observes.
          std::uint64_t cumulative = 0;
          for (std::size_t i = 0; i < h.bounds().size(); ++i) {
            cumulative += h.bucket_count(i);
            append_sample(out, name, "_bucket", c->labels, std::to_string(cumulative),
                          format_value(h.bounds()[i]));
          }
          cumulative += h.bucket_count(h.bounds().size());
          const std::string total = std::to_string(cumulative);
          append_sample(out, name, "_bucket", c->labels, total, "+Inf");
          append_sample(out, name, "_sum", c->labels, format_value(h.sum()));
          append_sample(out, name, "_count", c->labels, total);
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace alou::metrics
