#pragma once
// Provider kind `gemini`: the gateway's canonical OpenAI chat JSON
// translated to Google's generateContent / streamGenerateContent (v1beta)
// and back. Pure functions, no I/O.
#include "alou/core/error.hpp"
#include "upstream_util.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace alou::gateway::gemini {

// The model part of {base}/models/{model}:generateContent, without a
// leading "models/"; 400 when it could escape that path segment.
Result<std::string> model_path(std::string_view model);

// An OpenAI chat request -> a GenerateContentRequest: system prompts as
// systemInstruction, roles user/model (consecutive same roles merged), tools
// as functionDeclarations, tool calls and results as functionCall /
// functionResponse parts, data: images as inlineData, and generationConfig.
// 400 (invalid_request) for what Gemini cannot express: http image URLs,
// unknown roles or parts, a tool result that answers no earlier tool call.
Result<nlohmann::json> to_generate_request(const nlohmann::json& openai);

// An OpenAI embeddings request -> a BatchEmbedContentsRequest for
// models/`model`: `input` a string or an array of strings, `dimensions` as
// outputDimensionality. 400 (invalid_request) for token-id inputs, which
// Gemini cannot take, and for an encoding_format other than float/base64.
Result<nlohmann::json> to_batch_embed_request(const nlohmann::json& openai, const std::string& model);

// A BatchEmbedContentsResponse -> the OpenAI embeddings response text, each
// vector as floats or, with encoding_format "base64" (what the openai SDKs
// ask for by default), as base64 of little-endian float32. Gemini reports
// no usage here: prompt_tokens is estimated as ceil(characters / 4).
// nullopt when it is not such a response (or has another count of vectors).
std::optional<std::string> to_openai_embeddings(const nlohmann::json& response, const nlohmann::json& openai);

// Gemini finishReason -> OpenAI finish_reason (`called`: the candidate
// called a function, which Gemini reports as STOP).
const char* finish_reason(std::string_view reason, bool called);

// usageMetadata -> OpenAI usage (cached_tokens, reasoning_tokens).
nlohmann::json openai_usage(const nlohmann::json& usage_metadata);

// Ids of what Gemini does not name: the completion (when there is no
// responseId) and each tool call ("call_<seed>_<n>").
struct ReplyIds {
  std::string seed;
  std::int64_t created = 0;
};

// A GenerateContentResponse -> the OpenAI chat.completion JSON text;
// `model` is used when the response has no modelVersion. nullopt when it is
// not a response.
std::optional<std::string> to_chat_completion(const nlohmann::json& response, const std::string& model,
                                              const ReplyIds& ids);

// streamGenerateContent?alt=sse: every event is a GenerateContentResponse
// (or Google's {"error":{code,message,status}}) -> OpenAI chunks; the usage
// chunk (no choices) when the body ends.
class ChunkTranslator final : public EventTranslator {
 public:
  ChunkTranslator(std::string provider, std::string model, ReplyIds ids)
      : provider_(std::move(provider)), model_(std::move(model)), ids_(std::move(ids)) {}
  std::optional<UpstreamFailure> on_event(const SseMessage& m, std::vector<std::string>& out) override;
  std::optional<UpstreamFailure> on_end(std::vector<std::string>& out) override;

 private:
  std::string provider_;
  std::string model_;
  ReplyIds ids_;
  std::string id_;
  bool started_ = false;
  bool finished_ = false;
  int calls_ = 0;                       // tool calls so far (their ids and indices)
  std::set<int> role_sent_;             // candidates whose role chunk went out
  std::set<int> called_;                // candidates that called a function
  nlohmann::json usage_;                // the latest usageMetadata
};

}  // namespace alou::gateway::gemini
