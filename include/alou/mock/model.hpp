#pragma once
// The deterministic mock model (DESIGN.md, "The mock provider and
// `alou mock-upstream`"): pure functions, no I/O, safe to call from any
// thread. The in-process `mock` provider and `alou mock-upstream` both
// answer with respond().
//
// Rules, applied to the conversation:
// - If the last message is a tool result (role "tool"), the reply is
//   `tool NAME returned: R`: R is that message's content verbatim; NAME is
//   its `name`, else the name of the assistant tool call whose id equals its
//   `tool_call_id`, else "unknown".
// - Otherwise M is the content of the last message with role "user" ("" if
//   there is none). Unless M is a directive (below), the reply is `echo: M`,
//   with M verbatim.
//
// Directives. M is trimmed of ASCII whitespace (space, \t, \r, \n); it is a
// directive when its first word is exactly one of /fail /slow /cut /tool
// (any other "/word" is echoed like plain text). Arguments are separated by
// runs of ASCII whitespace; numbers are plain decimal digits, no sign.
//   /fail CODE         CODE in 400..599 and nothing after it: the upstream
//                      answers HTTP CODE in the API's error shape.
//   /slow MS REST      MS in 0..60000: wait MS before each stream chunk
//                      (before the response when not streaming), then
//                      answer as if the message were REST.
//   /cut N REST        N in 0..10000: a stream is dropped after N chunks
//                      (N SSE events, never its terminating event); a
//                      non-stream request is closed without a response.
//                      Then answer as if the message were REST.
//   /tool NAME [JSON]  NAME matches [A-Za-z0-9_.-]{1,64}; JSON (the rest of
//                      the message, "{}" when absent) must be a JSON object:
//                      one tool call of NAME with those arguments,
//                      re-serialised compactly (nlohmann dump()).
// /slow and /cut may be chained, each at most once, and may precede any
// other directive or text: "/slow 50 /cut 3 hello" echoes "echo: hello" with
// a 50 ms pause before each chunk and drops the stream after 3 chunks; the
// echo is of REST, so "/slow 50" alone replies "echo: ". A malformed
// directive (bad number, out of range, invalid or non-object JSON, a
// repeated /slow or /cut) is not an error: the reply is the text
// `mock: ` followed by what is wrong, so a test sees why.
//
// Usage. "Characters" are Unicode code points of the UTF-8 text (each byte
// that is not a continuation byte 10xxxxxx counts as one, so malformed
// UTF-8 is counted leniently instead of rejected).
//   prompt_tokens     = ceil(characters of every message's content / 4)
//                       (all roles, system included; tool call arguments
//                       of assistant messages and tool names do not count)
//   completion_tokens = ceil(characters of the reply text / 4), or of the
//                       tool call's arguments text; 0 for /fail.
//
// Output limit. As a real model does, a text reply stops at the request's
// output limit (`max_tokens` / `max_completion_tokens`, Anthropic's
// `max_tokens`, Gemini's `generationConfig.maxOutputTokens`): given a limit
// L > 0, the text keeps its first 4 x L characters, completion_tokens is then
// at most L, and the reply is `truncated` (finish_reason "length", Anthropic
// stop_reason "max_tokens", Gemini finishReason "MAX_TOKENS"). Tool calls
// are not cut.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace alou::mock {

struct ToolCall {
  std::string id{};
  std::string name{};
  std::string arguments{};  // JSON text
};

struct Message {
  std::string role{};          // system | user | assistant | tool
  std::string content{};
  std::string tool_call_id{};  // tool results
  std::string name{};          // tool results: the tool's name when the wire format carries it
  std::vector<ToolCall> tool_calls{};  // assistant messages
};

struct Directive {
  enum Kind { kNone, kFail, kSlow, kCut, kTool };
  Kind kind = kNone;
  int code = 0;                // kFail
  int ms = 0;                  // kSlow
  int n = 0;                   // kCut
  std::string tool_name;       // kTool
  std::string arguments;       // kTool: compact JSON object text
  std::string_view rest;       // kSlow, kCut: the trimmed text after the number (views the input)
  std::string error;           // not empty: looked like `kind` but is malformed (kind is then kNone)
};

// Parses the directive at the start of `text` (see the rules above).
Directive parse_directive(std::string_view text);

struct Reply {
  std::string text;                  // empty when tool_call or fail_status is set
  std::optional<ToolCall> tool_call; // id left empty: the wire format assigns one
  // Streaming pieces: the text split word by word (each piece is a run of
  // whitespace followed by a run of non-whitespace; the first piece has no
  // leading whitespace unless the text starts with it; trailing whitespace
  // stays with the last piece), or a tool call's arguments split into at
  // most 3 pieces of about equal code points. Concatenated they are exactly
  // `text` (or the arguments). Empty for /fail.
  std::vector<std::string> pieces;
  std::optional<int> fail_status;    // /fail CODE
  int slow_ms = 0;                   // /slow MS
  std::optional<int> cut_after;      // /cut N
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  bool truncated = false;            // the text stopped at the output limit
};

// Decides the reply to a conversation (see the rules above); `max_tokens`
// > 0: the output limit.
Reply respond(const std::vector<Message>& messages, std::int64_t max_tokens = 0);

// Code points of UTF-8 text, as counted for usage.
std::int64_t count_chars(std::string_view utf8);
// ceil(chars / 4).
std::int64_t tokens_for_chars(std::int64_t chars);
// The word-by-word pieces of Reply::pieces.
std::vector<std::string> split_words(std::string_view text);
// At most `parts` pieces of about equal code points, split on code point
// boundaries; one empty piece for empty text.
std::vector<std::string> split_even(std::string_view text, std::size_t parts = 3);

}  // namespace alou::mock
