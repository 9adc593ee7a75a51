#include "alou/core/metrics.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

namespace alou::metrics {
namespace {

TEST(Metrics, RendersSmallRegistryExactly) {
  Registry r;
  // Registered out of name order: families render sorted, children in creation order.
  auto& h = r.histogram("alou_request_duration_seconds", "Request latency.", {{"route", "/v1/chat"}},
                        {0.05, 0.1, 0.5, 1});
  r.counter("alou_requests_total", "Requests served.", {{"method", "post"}, {"code", "200"}}).inc(1027);
  r.counter("alou_requests_total", "ignored", {{"method", "post"}, {"code", "400"}}).inc(3);
  r.gauge("alou_in_flight", "Requests in flight.").set(2.5);

  h.observe(0.01);  // le=0.05
  h.observe(0.05);  // boundary: le is inclusive -> 0.05
  h.observe(0.1);   // boundary -> 0.1
  h.observe(0.3);   // -> 0.5
  h.observe(2);     // -> +Inf only

  EXPECT_EQ(r.render(),
            "# HELP alou_in_flight Requests in flight.\n"
            "# TYPE alou_in_flight gauge\n"
            "alou_in_flight 2.5\n"
            "# HELP alou_request_duration_seconds Request latency.\n"
            "# TYPE alou_request_duration_seconds histogram\n"
            "alou_request_duration_seconds_bucket{route=\"/v1/chat\",le=\"0.05\"} 2\n"
            "alou_request_duration_seconds_bucket{route=\"/v1/chat\",le=\"0.1\"} 3\n"
            "alou_request_duration_seconds_bucket{route=\"/v1/chat\",le=\"0.5\"} 4\n"
            "alou_request_duration_seconds_bucket{route=\"/v1/chat\",le=\"1\"} 4\n"
            "alou_request_duration_seconds_bucket{route=\"/v1/chat\",le=\"+Inf\"} 5\n"
            "alou_request_duration_seconds_sum{route=\"/v1/chat\"} 2.46\n"
            "alou_request_duration_seconds_count{route=\"/v1/chat\"} 5\n"
            "# HELP alou_requests_total Requests served.\n"
            "# TYPE alou_requests_total counter\n"
            "alou_requests_total{method=\"post\",code=\"200\"} 1027\n"
            "alou_requests_total{method=\"post\",code=\"400\"} 3\n");
}

TEST(Metrics, EmptyRegistryRendersNothing) { EXPECT_EQ(Registry().render(), ""); }

TEST(Metrics, GetOrCreateReturnsSameChild) {
  Registry r;
  Counter& a = r.counter("c_total", "h", {{"k", "v"}});
  Counter& b = r.counter("c_total", "h", {{"k", "v"}});
  Counter& other = r.counter("c_total", "h", {{"k", "w"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &other);
  a.inc();
  b.inc(2);
  EXPECT_EQ(a.value(), 3u);
  EXPECT_EQ(other.value(), 0u);
}

TEST(Metrics, EscapesLabelValuesAndHelp) {
  Registry r;
  r.gauge("msdos_file_access_time_seconds", "Help with \\ backslash\nand \"quotes\".",
          {{"path", "C:\\DIR\\FILE.TXT"}, {"error", "Cannot find file:\n\"FILE.TXT\""}})
      .set(1.458255915e9);
  // The label line is the spec's own example; HELP escapes only \ and newline.
  EXPECT_EQ(r.render(),
            "# HELP msdos_file_access_time_seconds Help with \\\\ backslash\\nand \"quotes\".\n"
            "# TYPE msdos_file_access_time_seconds gauge\n"
            "msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find "
            "file:\\n\\\"FILE.TXT\\\"\"} 1458255915\n");
}

TEST(Metrics, FormatsValues) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(-0.0), "0");
  EXPECT_EQ(format_value(1), "1");
  EXPECT_EQ(format_value(-3), "-3");
  EXPECT_EQ(format_value(1e6), "1000000");
  EXPECT_EQ(format_value(123456789012.0), "123456789012");
  EXPECT_EQ(format_value(0.1), "0.1");
  EXPECT_EQ(format_value(0.0005), "0.0005");
  EXPECT_EQ(format_value(2.5), "2.5");
  EXPECT_EQ(format_value(1e-5), "1e-05");
  EXPECT_EQ(format_value(1e22), "1e+22");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(Metrics, RendersSpecialValuesAndUnlabelledHistogram) {
  Registry r;
  r.gauge("weird", "w", {{"problem", "division by zero"}}).set(std::numeric_limits<double>::infinity());
  r.gauge("weird", "w", {{"problem", "negative"}}).set(-std::numeric_limits<double>::infinity());
  r.gauge("weird", "w", {{"problem", "nan"}}).set(std::numeric_limits<double>::quiet_NaN());
  auto& h = r.histogram("lat", "l", {}, {1, 2, std::numeric_limits<double>::infinity()});
  h.observe(1);
  h.observe(3);
  EXPECT_EQ(r.render(),
            "# HELP lat l\n"
            "# TYPE lat histogram\n"
            "lat_bucket{le=\"1\"} 1\n"
            "lat_bucket{le=\"2\"} 1\n"
            "lat_bucket{le=\"+Inf\"} 2\n"
            "lat_sum 4\n"
            "lat_count 2\n"
            "# HELP weird w\n"
            "# TYPE weird gauge\n"
            "weird{problem=\"division by zero\"} +Inf\n"
            "weird{problem=\"negative\"} -Inf\n"
            "weird{problem=\"nan\"} NaN\n");
}

TEST(Metrics, DefaultLatencyBuckets) {
  Registry r;
  auto& h = r.histogram("d_seconds", "d");
  EXPECT_EQ(h.bounds(), latency_buckets());
  ASSERT_EQ(h.bounds().size(), 16u);
  h.observe(0.0005);  // first boundary, inclusive
  h.observe(60.0001);
  EXPECT_EQ(h.bucket_count(0), 1u);
  EXPECT_EQ(h.bucket_count(16), 1u);
  EXPECT_EQ(h.count(), 2u);
  const std::string text = r.render();
  EXPECT_NE(text.find("d_seconds_bucket{le=\"0.0005\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"60\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos) << text;
}

TEST(Metrics, GaugeAddAndGaugeFn) {
  Registry r;
  Gauge& g = r.gauge("g", "g");
  g.add(1.5);
  g.add(-0.5);
  EXPECT_DOUBLE_EQ(g.value(), 1.0);

  int calls = 0;
  r.gauge_fn("up_seconds", "Uptime.", [&calls] { return static_cast<double>(++calls) * 10; }, {{"node", "a"}});
  r.gauge_fn("broken", "Throws.", []() -> double { throw std::runtime_error("boom"); });
  EXPECT_EQ(r.render(),
            "# HELP broken Throws.\n# TYPE broken gauge\nbroken NaN\n"
            "# HELP g g\n# TYPE g gauge\ng 1\n"
            "# HELP up_seconds Uptime.\n# TYPE up_seconds gauge\nup_seconds{node=\"a\"} 10\n");
  EXPECT_NE(r.render().find("up_seconds{node=\"a\"} 20\n"), std::string::npos);  // computed per scrape
  r.gauge_fn("up_seconds", "Uptime.", [] { return 7.0; }, {{"node", "a"}});   // replaces
  EXPECT_NE(r.render().find("up_seconds{node=\"a\"} 7\n"), std::string::npos);
}

TEST(Metrics, RejectsInvalidNames) {
  Registry r;
  EXPECT_THROW(r.counter("", "h"), std::invalid_argument);
  EXPECT_THROW(r.counter("1abc", "h"), std::invalid_argument);
  EXPECT_THROW(r.counter("a-b", "h"), std::invalid_argument);
  EXPECT_THROW(r.counter("a b", "h"), std::invalid_argument);
  EXPECT_THROW(r.counter("ok", "h", {{"", "v"}}), std::invalid_argument);
  EXPECT_THROW(r.counter("ok", "h", {{"a:b", "v"}}), std::invalid_argument);  // ':' only in metric names
  EXPECT_THROW(r.counter("ok", "h", {{"9x", "v"}}), std::invalid_argument);
  EXPECT_THROW(r.counter("ok", "h", {{"__name", "v"}}), std::invalid_argument);
  EXPECT_THROW(r.counter("ok", "h", {{"a", "1"}, {"a", "2"}}), std::invalid_argument);
  EXPECT_THROW(r.histogram("hist", "h", {{"le", "1"}}), std::invalid_argument);
  EXPECT_THROW(r.histogram("hist", "h", {}, {1, 1}), std::invalid_argument);
  EXPECT_THROW(r.histogram("hist", "h", {}, {2, 1}), std::invalid_argument);
  EXPECT_THROW(r.histogram("hist", "h", {}, {std::nan("")}), std::invalid_argument);
  EXPECT_EQ(r.render(), "");  // nothing was registered by the failed calls

  EXPECT_NO_THROW(r.counter("a:b_c:1", "h", {{"_x9", "any \xe2\x9c\x93 value"}}));
  EXPECT_NO_THROW(r.counter("_under", "h"));
  EXPECT_NO_THROW(r.gauge("le_is_fine_on_gauges", "h", {{"le", "1"}}));
}

TEST(Metrics, TypeConflictThrowsLogicError) {
  Registry r;
  r.counter("x", "h");
  EXPECT_THROW(r.gauge("x", "h"), std::logic_error);
  EXPECT_THROW(r.histogram("x", "h"), std::logic_error);
  EXPECT_THROW(r.gauge_fn("x", "h", [] { return 1.0; }), std::logic_error);
  r.gauge("y", "h");
  EXPECT_THROW(r.gauge_fn("y", "h", [] { return 1.0; }), std::logic_error);
  EXPECT_THROW(r.counter("y", "h"), std::logic_error);
  EXPECT_EQ(r.render(), "# HELP x h\n# TYPE x counter\nx 0\n# HELP y h\n# TYPE y gauge\ny 0\n");
}

TEST(Metrics, HistogramBucketsFixedByFirstCall) {
  Registry r;
  auto& a = r.histogram("h", "h", {{"k", "a"}}, {1, 2});
  auto& b = r.histogram("h", "h", {{"k", "b"}}, {5, 6, 7});
  EXPECT_EQ(a.bounds(), (std::vector<double>{1, 2}));
  EXPECT_EQ(b.bounds(), (std::vector<double>{1, 2}));
}

TEST(Metrics, ConcurrentIncrementsAreExact) {
  Registry r;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&r] {
      Counter& c = r.counter("hits_total", "h");  // concurrent get-or-create
      Histogram& h = r.histogram("obs", "h", {}, {0.5});
      Gauge& g = r.gauge("sum", "h");
      for (int i = 0; i < kPerThread; ++i) {
        c.inc();
        h.observe(1);
        g.add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(r.counter("hits_total", "h").value(), std::uint64_t{kThreads} * kPerThread);
  const auto& h = r.histogram("obs", "h", {}, {0.5});
  EXPECT_EQ(h.count(), std::uint64_t{kThreads} * kPerThread);
  EXPECT_DOUBLE_EQ(h.sum(), double{kThreads} * kPerThread);
  EXPECT_DOUBLE_EQ(r.gauge("sum", "h").value(), double{kThreads} * kPerThread);
}

}  // namespace
}  // namespace alou::metrics
