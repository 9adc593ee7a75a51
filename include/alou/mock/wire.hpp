#pragma once
// The wire formats of the mock upstream: requests in OpenAI, Anthropic and
// Gemini shapes become a Message list; a Reply becomes a response body or
// the SSE events of a stream. Pure functions (no I/O), so the translations
// are unit-tested without sockets; upstream.cpp only adds the timing
// (/slow), the failures (/fail) and the dropped connections (/cut).
#include "alou/core/error.hpp"
#include "alou/mock/model.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace alou::mock::wire {

struct Request {
  std::vector<Message> messages{};
  std::string model{};          // as the client named it ("mock" when absent)
  bool stream = false;
  bool include_usage = false;   // OpenAI stream_options.include_usage
  std::int64_t max_tokens = 0;  // the output limit (0: none)
};

// One SSE event: `name` is the "event:" line (omitted when empty).
struct Event {
  std::string name{};
  std::string data{};
};

// Identifiers of one response, made by the caller (deterministic counter).
struct Ids {
  std::string id{};       // chatcmpl-mock-N / msg_mock_N / mock-N
  std::string call_id{};  // call_mock_N / toolu_mock_N (tool calls only)
  std::int64_t created = 0;
};

// Errors: 400 "invalid_json" (not JSON) or "invalid_request" (wrong shape).
Result<Request> parse_openai_chat(std::string_view body);
Result<Request> parse_anthropic(std::string_view body);
// `model` comes from the path.
Result<Request> parse_gemini(std::string_view body, std::string_view model);

// A chat.completion object.
std::string openai_completion(const Request& req, const Reply& reply, const Ids& ids);
// chat.completion.chunk events: role chunk, content (or tool call argument)
// deltas, the finish_reason chunk, the usage chunk when include_usage, and
// "[DONE]" last.
std::vector<Event> openai_stream(const Request& req, const Reply& reply, const Ids& ids);

// A message object (text or tool_use block).
std::string anthropic_message(const Request& req, const Reply& reply, const Ids& ids);
// message_start, content_block_start, content_block_delta..., content_block_stop,
// message_delta, message_stop.
std::vector<Event> anthropic_stream(const Request& req, const Reply& reply, const Ids& ids);

// A GenerateContentResponse.
std::string gemini_response(const Request& req, const Reply& reply, const Ids& ids);
// One GenerateContentResponse per text piece (a tool call is one chunk); the
// last carries finishReason and usageMetadata.
std::vector<Event> gemini_stream(const Request& req, const Reply& reply, const Ids& ids);
// Google's error shape {"error":{"code","message","status"}}.
std::string gemini_error(int status, std::string_view message);

// POST /v1/embeddings: the response body. `input` is a string, an array of
// strings, an array of token ids or an array of such arrays; `dimensions`
// 1..4096 (default 8); `encoding_format` "float" (default) or "base64"
// (little-endian float32). Errors as for parse_*.
Result<std::string> openai_embeddings(std::string_view body);
// POST /v1beta/models/{m}:batchEmbedContents: {"requests":[{"model",
// "content":{"parts":[{"text"}]},"outputDimensionality"?}]} ->
// {"embeddings":[{"values":[...]}]}, the same vectors as openai_embeddings
// for the same texts and dimensions (Google reports no token usage here).
Result<std::string> gemini_embeddings(std::string_view body);
// The unit vector of `input` (deterministic: derived from its FNV-1a hash),
// values rounded to 6 decimals.
std::vector<double> embedding(std::string_view input, int dims);

// GET /v1/models.
std::string openai_models();

}  // namespace alou::mock::wire
