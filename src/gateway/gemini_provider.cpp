// Provider kind `gemini`: Google's Gemini API (v1beta generateContent and
// streamGenerateContent?alt=sse), translated from and to the gateway's
// OpenAI chat JSON by gemini.hpp. The key travels in the x-goog-api-key
// header, never in the URL, so that it cannot reach a log line.
#include "gemini.hpp"
#include "providers.hpp"
#include "upstream_util.hpp"

#include "alou/core/log.hpp"
#include "alou/core/random.hpp"
#include "alou/http/client.hpp"

#include <boost/beast/http/field.hpp>
#include <nlohmann/json.hpp>

namespace alou::gateway {
namespace {

using nlohmann::json;

constexpr const char* kDefaultBase = "https://generativelanguage.googleapis.com";

UpstreamFailure bad_request(const Error& e) { return UpstreamFailure{e, false, {}}; }

// Google answers an invalid key with 400 INVALID_ARGUMENT (reason
// API_KEY_INVALID): that is the gateway's credential, not the client's
// request.
int effective_status(int status, std::string_view body) {
  return status == 400 && body.find("API_KEY_INVALID") != std::string_view::npos ? 401 : status;
}

class GeminiProvider final : public Provider {
 public:
  GeminiProvider(const ProviderSettings& s, std::string api_key, std::shared_ptr<http::Client> client)
      : name_(s.name), base_(api_base(s.base_url.empty() ? kDefaultBase : s.base_url, "/v1beta")), key_(std::move(api_key)),
        client_(std::move(client)) {
  }

  const std::string& name() const override { return name_; }
  std::string_view kind() const override { return "gemini"; }
  bool set_api_key(std::string key) override { return key_.set(std::move(key)); }

  boost::asio::awaitable<UpResult<std::string>> chat(const json& body) override {
    auto req = make_request(body, false);
    if (!req) co_return bad_request(req.error());
    auto res = co_await send_buffered(*client_, std::move(*req), name_, &effective_status);
    if (!res) co_return res.error();
    const json r = json::parse(res->body, nullptr, false);
    auto out = gemini::to_chat_completion(r, body.value("model", ""), gemini::ReplyIds{random_hex(8), unix_now()});
    if (!out) co_return protocol_failure(name_, "sent a response that is not a GenerateContentResponse");
    co_return std::move(*out);
  }

  boost::asio::awaitable<UpResult<std::unique_ptr<ChatStream>>> chat_stream(const json& body) override {
    auto req = make_request(body, true);
    if (!req) co_return bad_request(req.error());
    auto opened = co_await open_stream(*client_, std::move(*req), name_, &effective_status);
    if (!opened) co_return opened.error();
    auto& s = *opened;
    auto translator = std::make_unique<gemini::ChunkTranslator>(name_, body.value("model", ""),
                                                                gemini::ReplyIds{random_hex(8), unix_now()});
    std::unique_ptr<ChatStream> out = std::make_unique<TranslatedStream>(std::move(s), std::move(translator), name_);
    co_return out;
  }

  // batchEmbedContents; Gemini reports no usage for it, so prompt tokens
  // are estimated from the input's length (marked nowhere else: the
  // response carries OpenAI's usage shape).
  boost::asio::awaitable<UpResult<std::string>> embeddings(const json& body) override {
    auto model = gemini::model_path(body.value("model", ""));
    if (!model) co_return bad_request(model.error());
    auto translated = gemini::to_batch_embed_request(body, *model);
    if (!translated) co_return bad_request(translated.error());
    http::ClientRequest req;
    req.method = http::Verb::post;
    req.url = base_ + "/models/" + *model + ":batchEmbedContents";
    if (std::string key = key_.get(); !key.empty()) req.headers.emplace_back("x-goog-api-key", std::move(key));
    req.headers.emplace_back("content-type", "application/json");
    req.body = translated->dump();
    auto res = co_await send_buffered(*client_, std::move(req), name_, &effective_status);
    if (!res) co_return res.error();
    const json r = json::parse(res->body, nullptr, false);
    auto out = gemini::to_openai_embeddings(r, body);
    if (!out) co_return protocol_failure(name_, "sent a response that is not a BatchEmbedContentsResponse");
    co_return std::move(*out);
  }

 private:
  Result<http::ClientRequest> make_request(const json& body, bool stream) const {
    auto model = gemini::model_path(body.value("model", ""));
    if (!model) return model.error();
    auto translated = gemini::to_generate_request(body);
    if (!translated) return translated.error();
    http::ClientRequest req;
    req.method = http::Verb::post;
    req.url = base_ + "/models/" + *model + (stream ? ":streamGenerateContent?alt=sse" : ":generateContent");
    if (std::string key = key_.get(); !key.empty()) req.headers.emplace_back("x-goog-api-key", std::move(key));
    req.headers.emplace_back("content-type", "application/json");
    req.body = translated->dump();
    return req;
  }

  std::string name_;
  std::string base_;
  KeySlot key_;
  std::shared_ptr<http::Client> client_;
};

}  // namespace

std::unique_ptr<Provider> make_gemini_provider(const ProviderSettings& s, std::string api_key,
                                               std::shared_ptr<http::Client> client) {
  // Redacted from every log line and upstream error message from now on.
  log::add_secret(api_key);
  return std::make_unique<GeminiProvider>(s, std::move(api_key), std::move(client));
}

}  // namespace alou::gateway
