#include "alou/core/log.hpp"

#include "alou/core/json_text.hpp"

#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <utility>
#include <vector>

namespace alou::log {
namespace {

constexpr std::string_view kRedacted = "[redacted]";
constexpr std::string_view kStars = "***";

// ---------------------------------------------------------------- secrets

struct SecretStore {
  std::mutex mutex;
  // Copy-on-write so redact() only holds the lock to copy a pointer.
  std::shared_ptr<const std::vector<std::string>> values = std::make_shared<std::vector<std::string>>();
};

SecretStore& secret_store() {
  // Leaked on purpose: loggers may run during static destruction.
  static auto* store = new SecretStore;
  return *store;
}

std::shared_ptr<const std::vector<std::string>> current_secrets() {
  SecretStore& s = secret_store();
  const std::lock_guard lock(s.mutex);
  return s.values;
}

// ---------------------------------------------------------------- redaction

char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
bool is_alnum(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_key_char(char c) noexcept { return is_alnum(c) || c == '_' || c == '-'; }
// RFC 6750 b64token.
bool is_bearer_char(char c) noexcept {
  return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=';
}
bool is_param_name_char(char c) noexcept { return is_key_char(c) || c == '.'; }
bool ends_value(char c) noexcept {
  return is_space(c) || c == '&' || c == '"' || c == '\'' || c == '#' || c == ',' || c == ';' || c == ')' ||
         c == ']' || c == '}' || c == '<' || c == '>';
}
bool ends_authority(char c) noexcept {
  return is_space(c) || c == '/' || c == '?' || c == '#' || c == '"' || c == '\'' || c == '<' || c == '>';
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return lower(x) == lower(y);
         });
}

void replace_secrets(std::string& s, const std::vector<std::string>& secrets) {
  for (const std::string& secret : secrets) {
    for (auto pos = s.find(secret); pos != std::string::npos; pos = s.find(secret, pos + kRedacted.size())) {
      s.replace(pos, secret.size(), kRedacted);
    }
  }
}

std::string redact_bearer(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  std::size_t i = 0;
  while (i < in.size()) {
    const bool word_start = i == 0 || !is_alnum(in[i - 1]);
    if (word_start && i + 6 < in.size() && iequals(in.substr(i, 6), "bearer") && is_space(in[i + 6])) {
      std::size_t j = i + 6;
      while (j < in.size() && (in[j] == ' ' || in[j] == '\t')) ++j;
      std::size_t k = j;
      while (k < in.size() && is_bearer_char(in[k])) ++k;
      if (k > j) {
        out.append(in.substr(i, j - i));
        out.append(kRedacted);
        i = k;
        continue;
      }
    }
    out += in[i++];
  }
  return out;
}

std::string redact_api_keys(std::string_view in) {
  static constexpr std::size_t kKeep = 8;
  std::string out;
  out.reserve(in.size());
  std::size_t i = 0;
  while (i < in.size()) {
    const bool word_start = i == 0 || !is_key_char(in[i - 1]);
    if (word_start && in.substr(i, 3) == "sk-") {
      std::size_t end = i + 3;
      while (end < in.size() && is_key_char(in[end])) ++end;
      if (end - i > kKeep) {
        out.append(in.substr(i, kKeep));
        out.append("\u2026");  // …
        out.append(kRedacted);
        i = end;
        continue;
      }
    }
    out += in[i++];
  }
  return out;
}

bool is_secret_param(std::string_view name) {
  std::string n(name);
  std::transform(n.begin(), n.end(), n.begin(), lower);
  return n.ends_with("key") || n == "token" || n == "access_token" || n == "password" || n == "secret";
}

std::string redact_params(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  std::size_t copied = 0;
  for (std::size_t eq = in.find('='); eq != std::string_view::npos; eq = in.find('=', eq + 1)) {
    std::size_t start = eq;
    while (start > copied && is_param_name_char(in[start - 1])) --start;
    if (start == eq || !is_secret_param(in.substr(start, eq - start))) continue;
    std::size_t end = eq + 1;
    while (end < in.size() && !ends_value(in[end])) ++end;
    if (end == eq + 1 || in.substr(eq + 1, end - eq - 1) == kStars) continue;
    out.append(in.substr(copied, eq + 1 - copied));
    out.append(kStars);
    copied = end;
    eq = end - 1;
  }
  out.append(in.substr(copied));
  return out;
}

std::string redact_url_passwords(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  std::size_t copied = 0;
  for (std::size_t sep = in.find("://"); sep != std::string_view::npos; sep = in.find("://", sep + 3)) {
    const std::size_t host = sep + 3;
    std::size_t end = host;
    while (end < in.size() && !ends_authority(in[end])) ++end;
    const std::string_view authority = in.substr(host, end - host);
    const std::size_t at = authority.rfind('@');
    if (at == std::string_view::npos) continue;
    const std::size_t colon = authority.substr(0, at).find(':');
    if (colon == std::string_view::npos || colon + 1 == at) continue;
    if (authority.substr(colon + 1, at - colon - 1) == kStars) continue;
    out.append(in.substr(copied, host + colon + 1 - copied));
    out.append(kStars);
    copied = host + at;
  }
  out.append(in.substr(copied));
  return out;
}

// ---------------------------------------------------------------- formatting

void put(spdlog::memory_buf_t& dest, std::string_view s) { dest.append(s.data(), s.data() + s.size()); }

std::string_view level_name(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace: return "trace";
    case spdlog::level::debug: return "debug";
    case spdlog::level::info: return "info";
    case spdlog::level::warn: return "warn";
    case spdlog::level::err: return "error";
    case spdlog::level::critical: return "critical";
    default: return "off";
  }
}

// 2026-11-25T12:00:00.123Z
void put_timestamp(spdlog::memory_buf_t& dest, spdlog::log_clock::time_point tp) {
  const auto secs = std::chrono::floor<std::chrono::seconds>(tp);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(tp - secs).count();
  const std::time_t t = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::array<char, 40> buf{};
  const int n = std::snprintf(buf.data(), buf.size(), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  if (n > 0) put(dest, std::string_view(buf.data(), static_cast<std::size_t>(n)));
}


// Splits "[<id>] rest" into id and rest. An id is 1..128 printable ASCII
// characters without spaces or ']'.
bool split_request_id(std::string_view msg, std::string_view& id, std::string_view& rest) {
  static constexpr std::size_t kMaxId = 128;
  if (msg.size() < 4 || msg[0] != '[') return false;
  std::size_t i = 1;
  while (i < msg.size() && i <= kMaxId && msg[i] > ' ' && msg[i] < 0x7F && msg[i] != ']') ++i;
  if (i == 1 || i + 1 >= msg.size() || msg[i] != ']' || msg[i + 1] != ' ') return false;
  id = msg.substr(1, i - 1);
  rest = msg.substr(i + 2);
  return true;
}

class Formatter final : public spdlog::formatter {
 public:
  explicit Formatter(bool json) : json_(json) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string text = redact(std::string_view(msg.payload.data(), msg.payload.size()));
    if (json_) {
      format_json(msg, text, dest);
    } else {
      format_text(msg, text, dest);
    }
  }

  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<Formatter>(json_); }

 private:
  static void format_text(const spdlog::details::log_msg& msg, std::string_view text, spdlog::memory_buf_t& dest) {
    put_timestamp(dest, msg.time);
    dest.push_back(' ');
    const std::string_view level = level_name(msg.level);
    put(dest, level);
    for (std::size_t pad = level.size(); pad < 5; ++pad) dest.push_back(' ');
    dest.push_back(' ');
    for (const char c : text) {
      if (c == '\n') {
        put(dest, "\\n");
      } else if (c == '\r') {
        put(dest, "\\r");
      } else {
        dest.push_back(c);
      }
    }
    dest.push_back('\n');
  }

  static void format_json(const spdlog::details::log_msg& msg, std::string_view text, spdlog::memory_buf_t& dest) {
    std::string_view id;
    std::string_view rest = text;
    const bool has_id = split_request_id(text, id, rest);
    put(dest, "{\"ts\":\"");
    put_timestamp(dest, msg.time);
    put(dest, "\",\"level\":\"");
    put(dest, level_name(msg.level));
    put(dest, "\",\"msg\":");
    append_json_string(dest, rest);
    if (has_id) {
      put(dest, ",\"request_id\":");
      append_json_string(dest, id);
    }
    put(dest, "}\n");
  }

  bool json_;
};

}  // namespace

std::optional<spdlog::level::level_enum> parse_level(std::string_view name) {
  static constexpr std::pair<std::string_view, spdlog::level::level_enum> kLevels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},     {"info", spdlog::level::info},
      {"warn", spdlog::level::warn},   {"warning", spdlog::level::warn},    {"error", spdlog::level::err},
      {"critical", spdlog::level::critical}, {"off", spdlog::level::off},
  };
  for (const auto& [n, level] : kLevels) {
    if (iequals(n, name)) return level;
  }
  return std::nullopt;
}

std::unique_ptr<spdlog::formatter> make_formatter(std::string_view format) {
  if (format == "text") return std::make_unique<Formatter>(false);
  if (format == "json") return std::make_unique<Formatter>(true);
  return nullptr;
}

bool init(const alou::LogSettings& settings, std::string* error) {
  const auto fail = [error](std::string message) {
    if (error != nullptr) *error = std::move(message);
    return false;
  };
  const auto level = parse_level(settings.level);
  if (!level) {
    return fail("log.level: expected one of trace, debug, info, warn, error, critical, off; got \"" +
                settings.level + "\"");
  }
  auto formatter = make_formatter(settings.format);
  if (!formatter) return fail("log.format: expected \"text\" or \"json\"; got \"" + settings.format + "\"");

  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  sink->set_formatter(std::move(formatter));
  auto logger = std::make_shared<spdlog::logger>("alou", std::move(sink));
  logger->set_level(*level);
  spdlog::set_default_logger(std::move(logger));
  return true;
}

void add_secret(std::string value) {
  if (value.empty()) return;
  SecretStore& s = secret_store();
  const std::lock_guard lock(s.mutex);
  if (std::find(s.values->begin(), s.values->end(), value) != s.values->end()) return;
  auto next = std::make_shared<std::vector<std::string>>(*s.values);
  next->push_back(std::move(value));
  // Longest first, so a secret that contains another is removed whole.
  std::stable_sort(next->begin(), next->end(), [](const std::string& a, const std::string& b) {
    return a.size() > b.size();
  });
  s.values = std::move(next);
}

std::string redact(std::string_view text) {
  std::string s(text);
  if (const auto secrets = current_secrets(); !secrets->empty()) replace_secrets(s, *secrets);
  s = redact_bearer(s);
  s = redact_api_keys(s);
  s = redact_params(s);
  return redact_url_passwords(s);
}

}  // namespace alou::log
