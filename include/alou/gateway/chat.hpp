#pragma once
// The chat service: the gateway's transport-neutral heart. Every caller of
// a model goes through it — the /v1/chat/completions, /v1/messages and
// /v1/embeddings handlers (thin adapters that parse, frame and answer
// HTTP), and in-process callers (the agent, the tunnel hub), never HTTP to
// itself. One call is:
//
//   plan (routes, fallbacks the caller may use, circuit breakers)
//   -> usage policy (RPM, TPM, concurrency, budget, balance: UsagePolicy)
//   -> hold (with the output cap it covers, sent upstream)
//   -> attempts (retries and fallbacks, before the first byte only)
//   -> the answer: buffered, or streamed chunk by chunk
//   -> settle (exactly once, durable before the answer's end goes out)
//   -> audit (the request's timeline).
//
// Errors are values: the gateway's error table (400, 402, 403, 404, 429
// with retry_after, 502/503/504) for the caller to render in its format.
#include "alou/core/error.hpp"
#include "alou/core/metering.hpp"
#include "alou/core/principal.hpp"

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace alou::gateway {

// One model call.
struct ChatCall {
  const Principal* principal = nullptr;  // required: its limits and its account apply
  std::string_view request_id;           // the audit subject (the caller keeps it alive)
  std::string_view endpoint;             // for the audit trail ("/v1/chat/completions", "agent", ...)
  // An OpenAI Chat Completions request (or an embeddings request for
  // embed()); "model" names a [[models]] entry. The service sets "model",
  // the output cap and, for streams, "stream"/"stream_options" per attempt.
  nlohmann::json body;
  // The client's own text of `body` (an OpenAI request), when it has one:
  // forwarded as it came to OpenAI-format upstreams where that is safe.
  std::string_view raw;
  // The caller's request as it came, in whatever format, for the prompt
  // estimate of the hold (empty: `raw`, else body's serialisation).
  std::string_view request_text;
  // Out: the caller's rate-limit state (x-ratelimit-* headers for HTTP).
  std::vector<std::pair<std::string, std::string>> limit_headers;
};

// Why a call failed, for the caller to answer.
struct ChatFailure {
  Error error;
  std::chrono::milliseconds retry_after{0};  // with a 429
};

template <class T>
using ChatResult = boost::system::result<T, ChatFailure>;

[[noreturn]] inline void throw_exception_from_error(const ChatFailure& f, const boost::source_location&) {
  throw ErrorException(f.error);
}

// A buffered answer, settled.
struct ChatAnswer {
  std::string body;         // the OpenAI chat.completion (or embeddings) JSON text
  Usage usage;
  std::int64_t cost_nanos = 0;
  std::string provider;     // who answered
  std::string model;        // the [[models]] entry that served it (a fallback's own name)
};

// One chunk of a streamed answer: an OpenAI chat.completion.chunk JSON text.
struct StreamChunk {
  std::string json;
  bool usage_only = false;  // the usage chunk (no choices): a client that did not ask for usage skips it
};

// A streamed answer, committed: its first chunk has arrived (no more
// retries or fallbacks). The caller reads it to the end (next() gives
// nullopt), then calls finish(), which settles and must succeed before the
// stream's final event goes out, then delivered() once that event is out.
// Destroying it before finish() (the consumer left) charges what was
// produced, in the background. One coroutine drives it.
class ChatAnswerStream {
 public:
  virtual ~ChatAnswerStream() = default;
  virtual const std::string& provider() const = 0;
  virtual const std::string& model() const = 0;  // the [[models]] entry that serves it
  // The next chunk; nullopt at the end. An error means the upstream died
  // mid-stream: what was streamed is settled at once (finish() is then not
  // called) and the error goes to the consumer as the stream's last event.
  virtual boost::asio::awaitable<ChatResult<std::optional<StreamChunk>>> next() = 0;
  // Settles the whole answer; the error is 503 ledger_unavailable when the
  // charge could not be made durable (the final event must not go out).
  virtual boost::asio::awaitable<Result<std::int64_t>> finish() = 0;
  // The stream's last event reached the consumer (its outcome is "ok").
  virtual void delivered() = 0;
  // The usage settled or to be settled (the upstream's, else an estimate
  // from what was streamed).
  virtual Usage usage() const = 0;
};

class ChatService {
 public:
  virtual ~ChatService() = default;
  // `call` must outlive the awaited call (the service rewrites its body
  // per attempt and fills its limit_headers).
  // A buffered chat completion.
  virtual boost::asio::awaitable<ChatResult<ChatAnswer>> complete(ChatCall& call) = 0;
  // A streamed one: returns once its first chunk is in (or every attempt failed).
  virtual boost::asio::awaitable<ChatResult<std::unique_ptr<ChatAnswerStream>>> stream(ChatCall& call) = 0;
  // Embeddings, routed and billed like chat.
  virtual boost::asio::awaitable<ChatResult<ChatAnswer>> embed(ChatCall& call) = 0;
};

}  // namespace alou::gateway
