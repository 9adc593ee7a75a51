#pragma once
// Process-wide logging over spdlog, with secrets redacted from every line.
//
// Convention: a line about a request starts with "[<request-id>] ", e.g.
//   spdlog::info("[{}] upstream {} answered {}", request_id, provider, status);
// The text format keeps that prefix; the JSON format moves it into the
// "request_id" field.
//
// Formats (one line per message, UTC timestamps with milliseconds):
//   text: 2026-11-25T12:00:00.123Z info  [req-1] message
//         (level padded to 5 columns; CR and LF in the message are written
//         as "\r" and "\n" so a message cannot forge extra lines)
//   json: {"ts":"2026-11-25T12:00:00.123Z","level":"info","msg":"message","request_id":"req-1"}
//         ("request_id" only when the message has the prefix; strings are
//         JSON-escaped, control characters as \u00XX, valid UTF-8 passes
//         through, invalid bytes become U+FFFD)
// Level names: trace, debug, info, warn, error, critical.
#include "alou/core/config.hpp"

#include <spdlog/common.h>
#include <spdlog/formatter.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace alou::log {

// Parses "trace", "debug", "info", "warn" (or "warning"), "error",
// "critical", "off", case-insensitively; nullopt for anything else.
std::optional<spdlog::level::level_enum> parse_level(std::string_view name);

// A formatter for format "text" or "json" (nullptr for anything else) that
// applies redact() to every message. Use it on any sink, e.g. an
// ostream_sink in tests.
std::unique_ptr<spdlog::formatter> make_formatter(std::string_view format);

// Replaces the default spdlog logger with one writing to stderr, at
// `settings.level`, in `settings.format`. On a bad level or format returns
// false, sets *error (if non-null) to a message naming the key, and leaves
// the current logger untouched. Call once at startup, before other threads
// log. (`settings.access_log` is read by the HTTP layer, not here.)
bool init(const alou::LogSettings& settings, std::string* error);

// Registers a secret value (e.g. the admin key read from the environment) to
// be replaced by "[redacted]" in every later log line. Empty values are
// ignored. Thread-safe.
void add_secret(std::string value);

// Returns `text` with secrets removed. Thread-safe. In order:
//  - registered secrets -> "[redacted]" (longest first);
//  - "Bearer <token>" (any case) -> "Bearer [redacted]";
//  - API keys: a word starting with "sk-" (sk-alou-…, sk-ant-…, sk-proj-…)
//    longer than 8 characters keeps its first 8 then "…[redacted]";
//  - query/form values of parameters whose name ends in "key" (key=,
//    api_key=, x-api-key=) or is token, access_token, password or secret
//    -> "name=***";
//  - URL passwords: scheme://user:pass@host -> scheme://user:***@host.
std::string redact(std::string_view text);

}  // namespace alou::log
