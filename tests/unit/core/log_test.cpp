#include "alou/core/log.hpp"

#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>
#include <string>

namespace alou::log {
namespace {

// A logger writing through make_formatter(format) into a string stream.
struct Capture {
  explicit Capture(std::string_view format) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    sink->set_formatter(make_formatter(format));
    logger = std::make_shared<spdlog::logger>("test", std::move(sink));
    logger->set_level(spdlog::level::trace);
  }
  std::string text() const { return out.str(); }

  std::ostringstream out;
  std::shared_ptr<spdlog::logger> logger;
};

// True if `s` is a UTC timestamp like 2026-11-25T12:00:00.123Z.
bool is_timestamp(std::string_view s) {
  constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd.dddZ";
  if (s.size() != kShape.size()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (kShape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != kShape[i]) return false;
  }
  return true;
}

// The JSON line with its timestamp replaced by "TS", after checking its shape.
std::string strip_ts(const std::string& line) {
  constexpr std::string_view kHead = "{\"ts\":\"";
  constexpr std::size_t kTsLen = 24;
  if (!line.starts_with(kHead) || line.size() < kHead.size() + kTsLen ||
      !is_timestamp(std::string_view(line).substr(kHead.size(), kTsLen))) {
    ADD_FAILURE() << "no timestamp: " << line;
    return line;
  }
  return std::string(kHead) + "TS" + line.substr(kHead.size() + kTsLen);
}

// The text line with its leading timestamp and space removed, after checking its shape.
std::string strip_text_ts(const std::string& line) {
  constexpr std::size_t kTsLen = 24;
  if (line.size() <= kTsLen || !is_timestamp(std::string_view(line).substr(0, kTsLen)) || line[kTsLen] != ' ') {
    ADD_FAILURE() << "no timestamp: " << line;
    return line;
  }
  return line.substr(kTsLen + 1);
}

TEST(Log, TextFormatKeepsRequestIdPrefix) {
  Capture c("text");
  c.logger->info("[req-42] upstream answered {}", 200);
  c.logger->warn("disk low");
  c.logger->error("two\nlines");
  std::istringstream lines(c.text());
  std::string line;
  std::getline(lines, line);
  EXPECT_EQ(strip_text_ts(line), "info  [req-42] upstream answered 200");
  std::getline(lines, line);
  EXPECT_EQ(strip_text_ts(line), "warn  disk low");
  std::getline(lines, line);
  EXPECT_EQ(strip_text_ts(line), "error two\\nlines");
  EXPECT_FALSE(std::getline(lines, line));
}

TEST(Log, JsonMovesRequestIdIntoField) {
  Capture c("json");
  c.logger->info("[req-42] upstream answered {}", 200);
  EXPECT_EQ(strip_ts(c.text()),
            "{\"ts\":\"TS\",\"level\":\"info\",\"msg\":\"upstream answered 200\",\"request_id\":\"req-42\"}\n");
}

TEST(Log, JsonWithoutPrefixHasNoRequestId) {
  Capture c("json");
  c.logger->debug("[not an id] hello");
  c.logger->critical("[] empty");
  c.logger->warn("[abc]no space");
  std::istringstream lines(c.text());
  std::string line;
  std::getline(lines, line);
  EXPECT_EQ(strip_ts(line), "{\"ts\":\"TS\",\"level\":\"debug\",\"msg\":\"[not an id] hello\"}");
  std::getline(lines, line);
  EXPECT_EQ(strip_ts(line), "{\"ts\":\"TS\",\"level\":\"critical\",\"msg\":\"[] empty\"}");
  std::getline(lines, line);
  EXPECT_EQ(strip_ts(line), "{\"ts\":\"TS\",\"level\":\"warn\",\"msg\":\"[abc]no space\"}");
}

TEST(Log, JsonEscapesStrings) {
  Capture c("json");
  const std::string msg = std::string("q\"b\\s/ nl\n cr\r tab\t bell\x07 nul") + '\0' + " esc\x1b del\x7f";
  c.logger->info("{}", msg);
  EXPECT_EQ(strip_ts(c.text()),
            "{\"ts\":\"TS\",\"level\":\"info\",\"msg\":\"q\\\"b\\\\s/ nl\\n cr\\r tab\\t bell\\u0007 nul\\u0000 "
            "esc\\u001b del\x7f\"}\n");
}

TEST(Log, JsonPassesValidUtf8AndReplacesInvalid) {
  Capture c("json");
  c.logger->info("{}", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");  // é € 😀
  c.logger->info("{}", "bad \xff \xc3( \xed\xa0\x80 \xc0\xaf end\xe2\x82");  // stray, truncated, surrogate, overlong
  std::istringstream lines(c.text());
  std::string line;
  std::getline(lines, line);
  EXPECT_EQ(strip_ts(line), "{\"ts\":\"TS\",\"level\":\"info\",\"msg\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}");
  std::getline(lines, line);
  EXPECT_EQ(strip_ts(line),
            "{\"ts\":\"TS\",\"level\":\"info\",\"msg\":\"bad \\ufffd \\ufffd( \\ufffd\\ufffd\\ufffd "
            "\\ufffd\\ufffd end\\ufffd\\ufffd\"}");
}

TEST(Log, JsonRedactsMessageAndEscapesRequestId) {
  add_secret("hunter2-admin-key");
  Capture c("json");
  c.logger->info("[r1] admin key hunter2-admin-key used");
  c.logger->info("[a\"b\\c] x");
  std::istringstream lines(c.text());
  std::string line;
  std::getline(lines, line);
  EXPECT_EQ(strip_ts(line),
            "{\"ts\":\"TS\",\"level\":\"info\",\"msg\":\"admin key [redacted] used\",\"request_id\":\"r1\"}");
  std::getline(lines, line);
  EXPECT_EQ(strip_ts(line), "{\"ts\":\"TS\",\"level\":\"info\",\"msg\":\"x\",\"request_id\":\"a\\\"b\\\\c\"}");
}

TEST(Log, TextFormatterRedacts) {
  Capture c("text");
  c.logger->info("[r2] calling with Authorization: Bearer abc.def-ghi");
  EXPECT_NE(c.text().find(" info  [r2] calling with Authorization: Bearer [redacted]\n"), std::string::npos)
      << c.text();
}

TEST(Log, FormatterCloneBehavesTheSame) {
  auto f = make_formatter("json");
  ASSERT_NE(f, nullptr);
  auto copy = f->clone();
  ASSERT_NE(copy, nullptr);
  spdlog::details::log_msg msg("n", spdlog::level::err, "[id] x");
  spdlog::memory_buf_t a;
  spdlog::memory_buf_t b;
  f->format(msg, a);
  copy->format(msg, b);
  EXPECT_EQ(std::string(a.data(), a.size()), std::string(b.data(), b.size()));
  EXPECT_EQ(make_formatter("xml"), nullptr);
}

TEST(Redact, RegisteredSecret) {
  add_secret("s3cr3t-value");
  add_secret("");  // ignored
  EXPECT_EQ(redact("key s3cr3t-value and s3cr3t-value."), "key [redacted] and [redacted].");
  EXPECT_EQ(redact("nothing here"), "nothing here");
}

TEST(Redact, LongerSecretWins) {
  add_secret("abcd1234");
  add_secret("abcd1234efgh5678");
  EXPECT_EQ(redact("x abcd1234efgh5678 y abcd1234 z"), "x [redacted] y [redacted] z");
}

TEST(Redact, ApiKeys) {
  EXPECT_EQ(redact("key sk-alou-0123456789abcdef ok"), "key sk-alou-\u2026[redacted] ok");
  EXPECT_EQ(redact("sk-ant-api03-AbC_dEf-123"), "sk-ant-a\u2026[redacted]");
  EXPECT_EQ(redact("\"sk-proj-ZZZZZZZZZZZZ\","), "\"sk-proj-\u2026[redacted]\",");
  EXPECT_EQ(redact("sk-1234567890"), "sk-12345\u2026[redacted]");
  // Not keys: inside a word, or too short to hide anything.
  EXPECT_EQ(redact("task-list disk-usage"), "task-list disk-usage");
  EXPECT_EQ(redact("sk-short"), "sk-short");
}

TEST(Redact, Bearer) {
  EXPECT_EQ(redact("Authorization: Bearer eyJhbGciOi.eyJzdWIi.sig_-+/= next"),
            "Authorization: Bearer [redacted] next");
  EXPECT_EQ(redact("authorization: bearer   sk-alou-abcdefghijkl"), "authorization: bearer   [redacted]");
  EXPECT_EQ(redact("the bearer of bad news"), "the bearer [redacted] bad news");
  EXPECT_EQ(redact("Bearer"), "Bearer");
  EXPECT_EQ(redact("forbearer x"), "forbearer x");
}

TEST(Redact, QueryKeys) {
  EXPECT_EQ(redact("GET /v1beta/models?key=AIzaSyA-123&alt=sse"), "GET /v1beta/models?key=***&alt=sse");
  EXPECT_EQ(redact("https://h/p?api_key=abc123#frag"), "https://h/p?api_key=***#frag");
  EXPECT_EQ(redact("a=1&x-api-key=zz&token=tt&password=pp end"), "a=1&x-api-key=***&token=***&password=*** end");
  EXPECT_EQ(redact("model=gpt&max_tokens=5&key="), "model=gpt&max_tokens=5&key=");
}

TEST(Redact, UrlPasswords) {
  EXPECT_EQ(redact("redis://:pass@host:6379/0"), "redis://:***@host:6379/0");
  EXPECT_EQ(redact("connecting to redis://user:p%40ss@10.0.0.1 ok"), "connecting to redis://user:***@10.0.0.1 ok");
  EXPECT_EQ(redact("postgres://u:a@b@db/x"), "postgres://u:***@db/x");
  EXPECT_EQ(redact("a http://user@host/ b https://host:8080/p@q c"), "a http://user@host/ b https://host:8080/p@q c");
  EXPECT_EQ(redact("two redis://:a@x and redis://:b@y"), "two redis://:***@x and redis://:***@y");
}

TEST(Log, ParsesLevels) {
  EXPECT_EQ(parse_level("trace"), spdlog::level::trace);
  EXPECT_EQ(parse_level("debug"), spdlog::level::debug);
  EXPECT_EQ(parse_level("INFO"), spdlog::level::info);
  EXPECT_EQ(parse_level("warn"), spdlog::level::warn);
  EXPECT_EQ(parse_level("warning"), spdlog::level::warn);
  EXPECT_EQ(parse_level("error"), spdlog::level::err);
  EXPECT_EQ(parse_level("critical"), spdlog::level::critical);
  EXPECT_EQ(parse_level("off"), spdlog::level::off);
  EXPECT_EQ(parse_level("verbose"), std::nullopt);
  EXPECT_EQ(parse_level(""), std::nullopt);
}

TEST(Log, InitRejectsBadSettingsAndKeepsLogger) {
  const auto before = spdlog::default_logger();
  std::string error;
  EXPECT_FALSE(init({.level = "loud", .format = "text", .access_log = true}, &error));
  EXPECT_NE(error.find("log.level"), std::string::npos) << error;
  EXPECT_NE(error.find("\"loud\""), std::string::npos) << error;
  error.clear();
  EXPECT_FALSE(init({.level = "info", .format = "xml", .access_log = true}, &error));
  EXPECT_NE(error.find("log.format"), std::string::npos) << error;
  EXPECT_FALSE(init({.level = "nope", .format = "text", .access_log = true}, nullptr));  // null error is fine
  EXPECT_EQ(spdlog::default_logger(), before);
}

TEST(Log, InitInstallsDefaultLogger) {
  const auto before = spdlog::default_logger();
  std::string error;
  ASSERT_TRUE(init({.level = "warn", .format = "json", .access_log = false}, &error)) << error;
  const auto now = spdlog::default_logger();
  EXPECT_NE(now, before);
  EXPECT_EQ(now->level(), spdlog::level::warn);
  spdlog::set_default_logger(before);
}

}  // namespace
}  // namespace alou::log
