#include "alou/mock/model.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>

namespace alou::mock {
namespace {

constexpr int kMaxSlowMs = 60'000;
constexpr int kMaxCut = 10'000;
constexpr std::size_t kMaxToolName = 64;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Splits off the first whitespace-delimited word; `s` keeps the trimmed rest.
std::string_view next_word(std::string_view& s) {
  std::size_t i = 0;
  while (i < s.size() && !is_space(s[i])) ++i;
  const auto word = s.substr(0, i);
  s = trim(s.substr(i));
  return word;
}

// A plain decimal number in [lo, hi]; no sign, at most 6 digits.
std::optional<int> parse_number(std::string_view word, int lo, int hi) {
  if (word.empty() || word.size() > 6) return std::nullopt;
  if (!std::all_of(word.begin(), word.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  int v = 0;
  std::from_chars(word.data(), word.data() + word.size(), v);
  if (v < lo || v > hi) return std::nullopt;
  return v;
}

bool valid_tool_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxToolName) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
  });
}

std::string_view last_user_content(const std::vector<Message>& messages) {
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    if (it->role == "user") return it->content;
  }
  return {};
}

std::string tool_name_for(const std::vector<Message>& messages, const Message& result) {
  if (!result.name.empty()) return result.name;
  if (!result.tool_call_id.empty()) {
    for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
      for (const auto& call : it->tool_calls) {
        if (call.id == result.tool_call_id) return call.name;
      }
    }
  }
  return "unknown";
}

void set_text(Reply& r, std::string text) {
  r.text = std::move(text);
  r.pieces = split_words(r.text);
  r.completion_tokens = tokens_for_chars(count_chars(r.text));
}

}  // namespace

std::int64_t count_chars(std::string_view utf8) {
  std::int64_t n = 0;
  for (const char c : utf8) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

std::int64_t tokens_for_chars(std::int64_t chars) { return chars <= 0 ? 0 : (chars + 3) / 4; }

std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  std::size_t run = 0;    // where the current whitespace run began
  bool has_word = false;  // the current piece holds a non-space character
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (is_space(text[i])) {
      if (i == 0 || !is_space(text[i - 1])) run = i;
      continue;
    }
    if (has_word && is_space(text[i - 1])) {
      out.emplace_back(text.substr(start, run - start));
      start = run;
    }
    has_word = true;
  }
  out.emplace_back(text.substr(start));
  return out;
}

std::vector<std::string> split_even(std::string_view text, std::size_t parts) {
  const auto chars = static_cast<std::size_t>(count_chars(text));
  if (parts == 0) parts = 1;
  const std::size_t per = std::max<std::size_t>(1, (chars + parts - 1) / parts);
  std::vector<std::string> out;
  std::size_t start = 0;
  std::size_t seen = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) continue;  // inside a code point
    if (seen > 0 && seen % per == 0) {
      out.emplace_back(text.substr(start, i - start));
      start = i;
    }
    ++seen;
  }
  out.emplace_back(text.substr(start));
  return out;
}

Directive parse_directive(std::string_view text) {
  Directive d;
  std::string_view rest = trim(text);
  if (rest.empty() || rest.front() != '/') return d;
  const auto word = next_word(rest);
  if (word == "/fail") {
    const auto code = next_word(rest);
    const auto v = parse_number(code, 400, 599);
    if (!v || !rest.empty()) {
      d.error = "/fail expects exactly one status code 400..599, e.g. \"/fail 503\"";
      return d;
    }
    d.kind = Directive::kFail;
    d.code = *v;
  } else if (word == "/slow") {
    const auto v = parse_number(next_word(rest), 0, kMaxSlowMs);
    if (!v) {
      d.error = "/slow expects milliseconds 0..60000, e.g. \"/slow 200 hello\"";
      return d;
    }
    d.kind = Directive::kSlow;
    d.ms = *v;
    d.rest = rest;
  } else if (word == "/cut") {
    const auto v = parse_number(next_word(rest), 0, kMaxCut);
    if (!v) {
      d.error = "/cut expects a chunk count 0..10000, e.g. \"/cut 2 hello\"";
      return d;
    }
    d.kind = Directive::kCut;
    d.n = *v;
    d.rest = rest;
  } else if (word == "/tool") {
    const auto name = next_word(rest);
    if (!valid_tool_name(name)) {
      d.error = "/tool expects a tool name of 1..64 characters [A-Za-z0-9_.-], e.g. /tool get_time {}";
      return d;
    }
    const std::string_view json_text = rest.empty() ? std::string_view{"{}"} : rest;
    const auto args = nlohmann::json::parse(json_text, nullptr, false);
    if (args.is_discarded()) {
      d.error = "/tool " + std::string(name) + ": the arguments are not valid JSON";
      return d;
    }
    if (!args.is_object()) {
      d.error = "/tool " + std::string(name) + ": the arguments must be a JSON object";
      return d;
    }
    d.kind = Directive::kTool;
    d.tool_name = std::string(name);
    d.arguments = args.dump();
  }
  return d;
}

namespace {

// The first `chars` code points of `text`.
std::string first_chars(const std::string& text, std::int64_t chars) {
  std::int64_t seen = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80 && seen++ == chars) return text.substr(0, i);
  }
  return text;
}

Reply decide(const std::vector<Message>& messages);

}  // namespace

Reply respond(const std::vector<Message>& messages, std::int64_t max_tokens) {
  Reply r = decide(messages);
  if (max_tokens > 0 && !r.tool_call && !r.fail_status && r.completion_tokens > max_tokens) {
    set_text(r, first_chars(r.text, max_tokens * 4));
    r.truncated = true;
  }
  return r;
}

namespace {

Reply decide(const std::vector<Message>& messages) {
  Reply r;
  std::int64_t prompt_chars = 0;
  for (const auto& m : messages) prompt_chars += count_chars(m.content);
  r.prompt_tokens = tokens_for_chars(prompt_chars);

  if (!messages.empty() && messages.back().role == "tool") {
    const auto& result = messages.back();
    set_text(r, "tool " + tool_name_for(messages, result) + " returned: " + result.content);
    return r;
  }

  std::string_view m = last_user_content(messages);
  bool slow_seen = false;
  bool cut_seen = false;
  for (;;) {
    Directive d = parse_directive(m);
    if (!d.error.empty()) {
      set_text(r, "mock: " + d.error);
      return r;
    }
    switch (d.kind) {
      case Directive::kNone:
        set_text(r, "echo: " + std::string(m));
        return r;
      case Directive::kFail:
        r.fail_status = d.code;
        return r;
      case Directive::kTool:
        r.tool_call = ToolCall{.id = {}, .name = std::move(d.tool_name), .arguments = std::move(d.arguments)};
        r.pieces = split_even(r.tool_call->arguments);
        r.completion_tokens = tokens_for_chars(count_chars(r.tool_call->arguments));
        return r;
      case Directive::kSlow:
        if (slow_seen) {
          set_text(r, "mock: /slow given twice");
          return r;
        }
        slow_seen = true;
        r.slow_ms = d.ms;
        m = d.rest;
        break;
      case Directive::kCut:
        if (cut_seen) {
          set_text(r, "mock: /cut given twice");
          return r;
        }
        cut_seen = true;
        r.cut_after = d.n;
        m = d.rest;
        break;
    }
  }
}

}  // namespace

}  // namespace alou::mock
