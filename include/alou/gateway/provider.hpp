#pragma once
// A model provider as the gateway sees it. The gateway's canonical format
// is OpenAI Chat Completions JSON: adapters translate to and from their
// provider's own format (DESIGN.md, [[providers]] kind).
#include "alou/core/error.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>
#include <nlohmann/json_fwd.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace alou::gateway {

// Why an upstream attempt failed, and whether another attempt (a retry or
// a fallback) may succeed: connect errors, timeouts, 429 and 5xx may.
struct UpstreamFailure {
  Error error;
  bool retryable = false;
  std::chrono::milliseconds retry_after{0};  // from the upstream's Retry-After
};

[[noreturn]] inline void throw_exception_from_error(const UpstreamFailure& f, const boost::source_location&) {
  throw ErrorException(f.error);
}

template <class T>
using UpResult = boost::system::result<T, UpstreamFailure>;

// OpenAI chat.completion.chunk JSON texts, in order.
class ChatStream {
 public:
  virtual ~ChatStream() = default;
  // The next chunk's JSON text; nullopt at the end of the stream. An error
  // after the first chunk means the upstream died mid-stream.
  virtual boost::asio::awaitable<UpResult<std::optional<std::string>>> next() = 0;
};

class Provider {
 public:
  virtual ~Provider() = default;
  virtual const std::string& name() const = 0;
  virtual std::string_view kind() const = 0;
  // `body` is an OpenAI chat request whose "model" is the upstream model.
  // Returns the OpenAI chat.completion JSON text.
  virtual boost::asio::awaitable<UpResult<std::string>> chat(const nlohmann::json& body) = 0;
  // The same, given also `raw`: the client's own text of `body` (which then
  // holds the very same request). A provider speaking OpenAI's format sends
  // it as it came instead of serialising `body` again; the others ignore it.
  virtual boost::asio::awaitable<UpResult<std::string>> chat_raw(const nlohmann::json& body, std::string_view raw) {
    (void)raw;
    return chat(body);
  }
  // Same, streamed (the gateway sets stream and stream_options).
  virtual boost::asio::awaitable<UpResult<std::unique_ptr<ChatStream>>> chat_stream(const nlohmann::json& body) = 0;
  // OpenAI embeddings request -> the OpenAI embeddings response JSON text.
  virtual boost::asio::awaitable<UpResult<std::string>> embeddings(const nlohmann::json& body) = 0;
  // Replaces the API key sent upstream from the next request on (a key
  // stored or deleted through the admin API while running). False: this
  // kind sends no key.
  virtual bool set_api_key(std::string key) {
    (void)key;
    return false;
  }
};

}  // namespace alou::gateway
