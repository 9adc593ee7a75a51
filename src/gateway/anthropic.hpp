#pragma once
// POST /v1/messages: the Anthropic Messages format translated to and from
// the gateway's canonical OpenAI chat JSON (DESIGN.md, Contract). Pure
// functions, no I/O.
#include "alou/core/error.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace alou::gateway::anthropic {

// An Anthropic Messages request -> an OpenAI chat request (same "model").
// 400 errors for a request Anthropic would reject (max_tokens missing,
// unknown roles or content blocks...).
Result<nlohmann::json> to_openai_request(const nlohmann::json& body);

// An OpenAI chat.completion JSON text -> an Anthropic message JSON text;
// `model` is the model the client asked for.
std::string to_anthropic_message(const std::string& completion, const std::string& model);

// OpenAI finish_reason -> Anthropic stop_reason.
const char* stop_reason(const std::string& finish_reason);

// Relays OpenAI chat.completion.chunk objects as Anthropic SSE events
// (message_start, content_block_start/delta/stop, message_delta,
// message_stop).
class StreamRelay {
 public:
  using Events = std::vector<std::pair<std::string, nlohmann::json>>;  // (event name, data)

  explicit StreamRelay(std::string model) : model_(std::move(model)) {}
  void on_chunk(const nlohmann::json& chunk, Events& out);
  // The end of the upstream stream: closes the open block, then
  // message_delta and message_stop.
  void finish(Events& out);

 private:
  enum class Open { kNone, kText, kTool };
  void start(const std::string& upstream_id, Events& out);
  void close_block(Events& out);

  std::string model_;
  bool started_ = false;
  Open open_ = Open::kNone;
  int block_ = -1;       // index of the current (or last) content block
  int tool_index_ = -1;  // OpenAI tool_calls index of the open tool_use block
  std::string finish_;
  std::int64_t input_tokens_ = 0;
  std::int64_t output_tokens_ = 0;
};

}  // namespace alou::gateway::anthropic
