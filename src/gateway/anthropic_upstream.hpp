#pragma once
// Provider kind `anthropic`: the gateway's canonical OpenAI chat JSON
// translated to Anthropic's Messages API and back (the other direction of
// anthropic.hpp, which serves Anthropic clients). Pure functions, no I/O.
#include "alou/core/error.hpp"
#include "upstream_util.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace alou::gateway::anthropic {

struct UpstreamOptions {
  // Anthropic requires max_tokens: used when the client sent neither
  // max_tokens nor max_completion_tokens.
  std::int64_t default_max_tokens = 4096;
};

// An OpenAI chat request (its "model" already the upstream one) -> an
// Anthropic Messages request: system prompts pulled out, consecutive
// same-role turns merged, tool calls and results as tool_use / tool_result
// blocks, data: images as base64 sources. 400 (invalid_request) for what
// Anthropic cannot express: n > 1, an unknown role or content part,
// tool-call arguments that are not a JSON object.
Result<nlohmann::json> to_messages_request(const nlohmann::json& openai, const UpstreamOptions& options);

// Anthropic stop_reason -> OpenAI finish_reason.
const char* finish_reason(std::string_view stop_reason);

// Anthropic usage -> OpenAI usage: prompt_tokens counts cached and
// cache-creation input too; cached_tokens = cache_read_input_tokens.
nlohmann::json openai_usage(const nlohmann::json& usage);

// An Anthropic message (the Messages response body) -> the OpenAI
// chat.completion JSON text; nullopt when it is not a message.
std::optional<std::string> to_chat_completion(const nlohmann::json& message, std::int64_t created);

// Anthropic's SSE events (message_start, content_block_start/delta/stop,
// message_delta, message_stop, ping, error) -> OpenAI chunks: the role
// chunk, content deltas, tool_calls deltas (index, id and name first, then
// argument fragments), the finish chunk, then a usage chunk with no choices.
class ChunkTranslator final : public EventTranslator {
 public:
  ChunkTranslator(std::string provider, std::int64_t created) : provider_(std::move(provider)), created_(created) {}
  std::optional<UpstreamFailure> on_event(const SseMessage& m, std::vector<std::string>& out) override;
  std::optional<UpstreamFailure> on_end(std::vector<std::string>& out) override;

 private:
  std::string chunk(const nlohmann::json& delta, const char* finish = nullptr) const;

  std::string provider_;
  std::int64_t created_;
  std::string id_;
  std::string model_;
  bool started_ = false;
  bool stopped_ = false;
  std::map<int, int> tool_index_;  // content block index -> OpenAI tool_calls index
  nlohmann::json usage_ = nlohmann::json::object();  // Anthropic usage, merged
};

}  // namespace alou::gateway::anthropic
