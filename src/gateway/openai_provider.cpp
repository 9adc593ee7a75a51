// Provider kinds `openai` (any OpenAI-compatible server: OpenAI, DeepSeek,
// Ollama, vLLM, alou mock-upstream) and `azure` (deployments, api-version,
// api-key header). The gateway's canonical format is OpenAI's, so requests
// and responses pass through untranslated.
#include "providers.hpp"
#include "upstream_util.hpp"

#include "alou/core/log.hpp"
#include "alou/gateway/sse_parser.hpp"
#include "alou/http/client.hpp"

#include <boost/beast/http/field.hpp>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <deque>

namespace alou::gateway {
namespace {

using nlohmann::json;

class OpenAiStream final : public ChatStream {
 public:
  OpenAiStream(std::unique_ptr<http::ClientStream> s, std::string provider)
      : stream_(std::move(s)), provider_(std::move(provider)) {}

  boost::asio::awaitable<UpResult<std::optional<std::string>>> next() override {
    for (;;) {
      while (!ready_.empty()) {
        SseMessage m = std::move(ready_.front());
        ready_.pop_front();
        if (m.data == "[DONE]") {
          done_ = true;
          // The body's last chunk usually follows: read it in the
          // background and keep the connection for the next request.
          stream_->finish();
          co_return std::optional<std::string>{};
        }
        if (m.data.empty()) continue;
        co_return std::optional<std::string>{std::move(m.data)};
      }
      if (done_) co_return std::optional<std::string>{};
      auto piece = co_await stream_->next();
      if (!piece) {
        spdlog::warn("upstream {}: {}", provider_, piece.error().message);
        done_ = true;
        UpstreamFailure f{Error{502, "upstream_disconnected", "upstream " + provider_ + " ended the stream early"}};
        co_return f;
      }
      if (piece->empty()) {
        // The body ended without [DONE]: the upstream died mid-stream.
        done_ = true;
        UpstreamFailure f{Error{502, "upstream_disconnected", "upstream " + provider_ + " ended the stream early"}};
        co_return f;
      }
      std::vector<SseMessage> out;
      if (!parser_.feed(*piece, out)) {
        UpstreamFailure f{Error{502, "upstream_protocol", "upstream " + provider_ + " sent an oversized event"}};
        co_return f;
      }
      for (auto& m : out) ready_.push_back(std::move(m));
    }
  }

 private:
  std::unique_ptr<http::ClientStream> stream_;
  std::string provider_;
  SseParser parser_;
  std::deque<SseMessage> ready_;
  bool done_ = false;
};

class OpenAiProvider final : public Provider {
 public:
  OpenAiProvider(const ProviderSettings& s, std::string api_key, std::shared_ptr<http::Client> client)
      : name_(s.name), kind_(s.kind), base_(s.base_url), key_(std::move(api_key)), client_(std::move(client)) {
    while (!base_.empty() && base_.back() == '/') base_.pop_back();
    if (kind_ == "azure") {
      const auto v = s.extra.find("api_version");
      api_version_ = v != s.extra.end() ? v->second : "2024-10-21";
    }
  }

  const std::string& name() const override { return name_; }
  std::string_view kind() const override { return kind_; }
  bool set_api_key(std::string key) override { return key_.set(std::move(key)); }

  boost::asio::awaitable<UpResult<std::string>> embeddings(const json& body) override {
    auto r = co_await post(body, "embeddings");
    co_return r;
  }

  boost::asio::awaitable<UpResult<std::string>> chat(const json& body) override {
    auto r = co_await post(body, "chat/completions");
    co_return r;
  }

  boost::asio::awaitable<UpResult<std::string>> chat_raw(const json& body, std::string_view raw) override {
    auto req = make_request(body, "chat/completions", raw);
    auto res = co_await send_buffered(*client_, std::move(req), name_);
    if (!res) co_return res.error();
    co_return std::move(res->body);
  }

  boost::asio::awaitable<UpResult<std::unique_ptr<ChatStream>>> chat_stream(const json& body) override {
    auto s = co_await open_stream(*client_, make_request(body), name_);
    if (!s) co_return s.error();
    std::unique_ptr<ChatStream> out = std::make_unique<OpenAiStream>(std::move(*s), name_);
    co_return out;
  }

 private:
  // One buffered POST of an OpenAI operation; the body back, or a failure.
  boost::asio::awaitable<UpResult<std::string>> post(const json& body, std::string_view op) {
    auto res = co_await send_buffered(*client_, make_request(body, op), name_);
    if (!res) co_return res.error();
    co_return std::move(res->body);
  }

  // `raw`, when given, is sent as the body (the client's text of `body`).
  http::ClientRequest make_request(const json& body, std::string_view op = "chat/completions",
                                   std::string_view raw = {}) const {
    http::ClientRequest req;
    req.method = http::Verb::post;
    const std::string key = key_.get();
    if (kind_ == "azure") {
      const std::string deployment = body.value("model", "");
      req.url = base_ + "/openai/deployments/" + deployment + "/" + std::string(op) + "?api-version=" + api_version_;
      if (!key.empty()) req.headers.emplace_back("api-key", key);
    } else {
      req.url = base_ + "/" + std::string(op);
      if (!key.empty()) req.headers.emplace_back("authorization", "Bearer " + key);
    }
    req.headers.emplace_back("content-type", "application/json");
    req.body = raw.empty() ? body.dump() : std::string(raw);
    return req;
  }

  std::string name_;
  std::string kind_;
  std::string base_;
  KeySlot key_;
  std::string api_version_;
  std::shared_ptr<http::Client> client_;
};

}  // namespace

std::unique_ptr<Provider> make_openai_provider(const ProviderSettings& s, std::string api_key,
                                               std::shared_ptr<http::Client> client) {
  // Redacted from every log line and upstream error message from now on.
  log::add_secret(api_key);
  return std::make_unique<OpenAiProvider>(s, std::move(api_key), std::move(client));
}

}  // namespace alou::gateway
