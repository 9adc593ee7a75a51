#pragma once
// Pieces shared by the HTTP provider adapters (openai, azure, anthropic,
// gemini): mapping upstream failures to errors a client can act on, and a
// ChatStream that turns an upstream SSE body into OpenAI chunks through a
// per-format EventTranslator.
#include "alou/gateway/provider.hpp"
#include "alou/gateway/sse_parser.hpp"
#include "alou/http/client.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace alou::gateway {

// A provider's API key, replaceable while requests read it.
class KeySlot {
 public:
  explicit KeySlot(std::string key) : key_(std::move(key)) {}
  std::string get() const {
    const std::lock_guard lock(mu_);
    return key_;
  }
  // Registers the key as a log secret too. Returns true.
  bool set(std::string key);

 private:
  mutable std::mutex mu_;
  std::string key_;
};

// A non-200 upstream answer -> a failure: the upstream's own message
// (redacted; read from {"error":{"message"}}, which OpenAI, Anthropic and
// Google all use) but never its headers. 429 and 5xx (Anthropic's 529
// "overloaded" included) are retryable; 401/403 become 502
// upstream_auth_failed (the gateway's key was refused, not the client's).
UpstreamFailure failure_from_response(std::string_view provider, int status, std::string_view body,
                                      std::string_view retry_after);

// A transport failure (connect, timeout, protocol) -> a failure that names
// the provider and the kind of failure, never the upstream address.
UpstreamFailure failure_from_error(std::string_view provider, const Error& e);

// A malformed upstream answer (502 upstream_protocol, not retryable).
UpstreamFailure protocol_failure(std::string_view provider, std::string_view what);

// An OpenAI message content that is a string or an array of text parts,
// as one string (parts joined by newlines; null is ""); nullopt for any
// other part. Used by the translators of system prompts and tool results.
std::optional<std::string> plain_text(const nlohmann::json& content);

// The (small) body of a non-200 streamed answer, at most 64 KiB.
boost::asio::awaitable<std::string> read_error_body(http::ClientStream& s);

// The status a failed answer stands for (Gemini reports some errors with
// another status than their body's); null: the HTTP status.
using StatusOf = int (*)(int status, std::string_view body);

// One buffered upstream request: the 200 answer, or the failure (transport
// errors and non-200 answers, mapped as above).
boost::asio::awaitable<UpResult<http::ClientResponse>> send_buffered(http::Client& client, http::ClientRequest req,
                                                                     std::string_view provider,
                                                                     StatusOf status_of = nullptr);
// One streamed upstream request: the 200 stream, or the failure (the error
// body of a non-200 answer is read for its message).
boost::asio::awaitable<UpResult<std::unique_ptr<http::ClientStream>>> open_stream(http::Client& client,
                                                                                 http::ClientRequest req,
                                                                                 std::string_view provider,
                                                                                 StatusOf status_of = nullptr);

// Current UNIX time in seconds (the "created" of generated completions).
std::int64_t unix_now();

// `base_url` without trailing slashes; when it is an origin only
// (scheme://host[:port]), `default_path` (e.g. "/v1") is appended, so that
// both https://api.anthropic.com and https://api.anthropic.com/v1 work.
std::string api_base(std::string base_url, std::string_view default_path);

// One upstream format's streaming events -> OpenAI chat.completion.chunk
// JSON texts. Pure (no I/O), so each format is unit tested against fixtures.
class EventTranslator {
 public:
  virtual ~EventTranslator() = default;
  // One SSE event; appends chunks to `out`. A failure for an upstream error
  // event or a malformed one (the stream then ends).
  virtual std::optional<UpstreamFailure> on_event(const SseMessage& m, std::vector<std::string>& out) = 0;
  // The upstream body ended: appends the final chunks (usage), or a
  // failure when the upstream never said the answer was complete.
  virtual std::optional<UpstreamFailure> on_end(std::vector<std::string>& out) = 0;
};

// An OpenAI chat.completion.chunk JSON text.
std::string make_chunk(const std::string& id, std::int64_t created, const std::string& model, int index,
                       const nlohmann::json& delta, const char* finish_reason);
// The final usage-only chunk (empty choices), as OpenAI sends it with
// stream_options.include_usage.
std::string make_usage_chunk(const std::string& id, std::int64_t created, const std::string& model,
                             const nlohmann::json& usage);

// Reads an upstream SSE body and yields the translator's chunks one by one.
class TranslatedStream final : public ChatStream {
 public:
  TranslatedStream(std::unique_ptr<http::ClientStream> s, std::unique_ptr<EventTranslator> t, std::string provider);
  ~TranslatedStream() override;
  boost::asio::awaitable<UpResult<std::optional<std::string>>> next() override;

 private:
  std::unique_ptr<http::ClientStream> stream_;
  std::unique_ptr<EventTranslator> translator_;
  std::string provider_;
  SseParser parser_;
  std::deque<std::string> ready_;
  std::optional<UpstreamFailure> failed_;
  bool ended_ = false;
};

}  // namespace alou::gateway
