// Provider kind `anthropic`: Anthropic's Messages API (POST {base}/messages,
// x-api-key and anthropic-version headers), translated from and to the
// gateway's OpenAI chat JSON by anthropic_upstream.hpp.
#include "anthropic_upstream.hpp"
#include "providers.hpp"
#include "upstream_util.hpp"

#include "alou/core/log.hpp"
#include "alou/http/client.hpp"

#include <boost/beast/http/field.hpp>
#include <nlohmann/json.hpp>

namespace alou::gateway {
namespace {

using nlohmann::json;

constexpr const char* kDefaultBase = "https://api.anthropic.com";
constexpr const char* kDefaultVersion = "2023-06-01";

UpstreamFailure bad_request(const Error& e) { return UpstreamFailure{e, false, {}}; }

class AnthropicProvider final : public Provider {
 public:
  AnthropicProvider(const ProviderSettings& s, std::string api_key, std::shared_ptr<http::Client> client,
                    anthropic::UpstreamOptions options)
      : name_(s.name),
        base_(api_base(s.base_url.empty() ? kDefaultBase : s.base_url, "/v1")),
        key_(std::move(api_key)),
        options_(options),
        client_(std::move(client)) {
    const auto v = s.extra.find("anthropic_version");
    version_ = v != s.extra.end() && !v->second.empty() ? v->second : kDefaultVersion;
  }

  const std::string& name() const override { return name_; }
  std::string_view kind() const override { return "anthropic"; }
  bool set_api_key(std::string key) override { return key_.set(std::move(key)); }

  boost::asio::awaitable<UpResult<std::string>> chat(const json& body) override {
    auto req = make_request(body, false);
    if (!req) co_return bad_request(req.error());
    auto res = co_await send_buffered(*client_, std::move(*req), name_);
    if (!res) co_return res.error();
    const json message = json::parse(res->body, nullptr, false);
    auto out = anthropic::to_chat_completion(message, unix_now());
    if (!out) co_return protocol_failure(name_, "sent a response that is not a message");
    co_return std::move(*out);
  }

  boost::asio::awaitable<UpResult<std::unique_ptr<ChatStream>>> chat_stream(const json& body) override {
    auto req = make_request(body, true);
    if (!req) co_return bad_request(req.error());
    auto s = co_await open_stream(*client_, std::move(*req), name_);
    if (!s) co_return s.error();
    std::unique_ptr<ChatStream> out = std::make_unique<TranslatedStream>(
        std::move(*s), std::make_unique<anthropic::ChunkTranslator>(name_, unix_now()), name_);
    co_return out;
  }

  boost::asio::awaitable<UpResult<std::string>> embeddings(const json&) override {
    co_return bad_request(Error::bad_request("embeddings are not supported by provider " + name_ + " (kind anthropic)",
                                             "embeddings_not_supported"));
  }

 private:
  Result<http::ClientRequest> make_request(const json& body, bool stream) const {
    json in = body;
    in["stream"] = stream;
    auto translated = anthropic::to_messages_request(in, options_);
    if (!translated) return translated.error();
    http::ClientRequest req;
    req.method = http::Verb::post;
    req.url = base_ + "/messages";
    if (std::string key = key_.get(); !key.empty()) req.headers.emplace_back("x-api-key", std::move(key));
    req.headers.emplace_back("anthropic-version", version_);
    req.headers.emplace_back("content-type", "application/json");
    req.body = translated->dump();
    return req;
  }

  std::string name_;
  std::string base_;
  KeySlot key_;
  std::string version_;
  anthropic::UpstreamOptions options_;
  std::shared_ptr<http::Client> client_;
};

}  // namespace

Result<std::unique_ptr<Provider>> make_anthropic_provider(const ProviderSettings& s, std::string api_key,
                                                          std::shared_ptr<http::Client> client) {
  // Redacted from every log line and upstream error message from now on.
  log::add_secret(api_key);
  anthropic::UpstreamOptions options;
  if (const auto it = s.extra.find("default_max_tokens"); it != s.extra.end()) {
    try {
      std::size_t used = 0;
      options.default_max_tokens = std::stoll(it->second, &used);
      if (used != it->second.size() || options.default_max_tokens < 1) throw std::invalid_argument("range");
    } catch (const std::exception&) {
      return Error::bad_request("default_max_tokens must be a positive integer, got \"" + it->second + "\"",
                                "invalid_provider_setting");
    }
  }
  std::unique_ptr<Provider> p = std::make_unique<AnthropicProvider>(s, std::move(api_key), std::move(client), options);
  return p;
}

}  // namespace alou::gateway
