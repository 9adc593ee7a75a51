#include "upstream_util.hpp"

#include "alou/core/log.hpp"
#include "alou/http/client.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>

namespace alou::gateway {

bool KeySlot::set(std::string key) {
  log::add_secret(key);
  const std::lock_guard lock(mu_);
  key_ = std::move(key);
  return true;
}

using nlohmann::json;

UpstreamFailure failure_from_response(std::string_view provider, int status, std::string_view body,
                                      std::string_view retry_after) {
  std::string message;
  const auto j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error")) {
    const auto& e = j["error"];
    if (e.is_object() && e.contains("message") && e["message"].is_string()) {
      message = e["message"].get<std::string>();
    } else if (e.is_string()) {
      message = e.get<std::string>();
    }
  }
  if (message.empty()) message = "HTTP " + std::to_string(status);
  message = "upstream " + std::string(provider) + ": " + log::redact(message);
  UpstreamFailure f;
  f.retryable = status == 429 || status >= 500;
  if (!retry_after.empty()) {
    try {
      f.retry_after = std::chrono::seconds(std::stoi(std::string(retry_after)));
    } catch (const std::exception&) {
    }
  }
  if (status == 429) {
    f.error = Error{429, "upstream_rate_limited", message};
  } else if (status == 401 || status == 403) {
    // The gateway's own credentials were refused: the client can do
    // nothing about it, so it is a bad gateway, not a 401.
    f.error = Error{502, "upstream_auth_failed", message};
  } else if (status == 529) {
    // Anthropic: "overloaded", temporary by definition.
    f.error = Error{503, "upstream_overloaded", message};
  } else if (status >= 500) {
    f.error = Error{502, "upstream_error", message};
  } else {
    f.error = Error{status, "upstream_bad_request", message};
  }
  return f;
}

UpstreamFailure failure_from_error(std::string_view provider, const Error& e) {
  spdlog::warn("upstream {}: {}", provider, e.message);
  UpstreamFailure f;
  f.error = e;
  std::string what = "failed";
  if (e.code == "upstream_timeout") {
    what = "timed out";
  } else if (e.code == "upstream_unreachable") {
    what = "is unreachable";
  } else if (e.code == "upstream_protocol") {
    what = "sent a malformed response";
  }
  f.error.message = "upstream " + std::string(provider) + " " + what;
  // Connect errors and timeouts: another attempt may do better.
  f.retryable = e.status == 502 || e.status == 503 || e.status == 504;
  return f;
}

UpstreamFailure protocol_failure(std::string_view provider, std::string_view what) {
  UpstreamFailure f;
  f.error = Error{502, "upstream_protocol", "upstream " + std::string(provider) + " " + std::string(what)};
  return f;
}

std::optional<std::string> plain_text(const json& content) {
  if (content.is_null()) return std::string();
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return std::nullopt;
  std::string out;
  for (const auto& p : content) {
    if (!p.is_object() || p.value("type", "") != "text" || !p.contains("text") || !p["text"].is_string()) {
      return std::nullopt;
    }
    if (!out.empty()) out += '\n';
    out += p["text"].get<std::string>();
  }
  return out;
}

boost::asio::awaitable<UpResult<http::ClientResponse>> send_buffered(http::Client& client, http::ClientRequest req,
                                                                     std::string_view provider, StatusOf status_of) {
  auto res = co_await client.request(std::move(req));
  if (!res) co_return failure_from_error(provider, res.error());
  if (res->status != 200) {
    const int status = status_of ? status_of(res->status, res->body) : res->status;
    co_return failure_from_response(provider, status, res->body, res->headers[http::bhttp::field::retry_after]);
  }
  co_return std::move(*res);
}

boost::asio::awaitable<UpResult<std::unique_ptr<http::ClientStream>>> open_stream(http::Client& client,
                                                                                 http::ClientRequest req,
                                                                                 std::string_view provider,
                                                                                 StatusOf status_of) {
  auto res = co_await client.stream(std::move(req));
  if (!res) co_return failure_from_error(provider, res.error());
  auto& s = *res;
  if (s->status() != 200) {
    const std::string err = co_await read_error_body(*s);
    const std::string retry_after(s->headers()[http::bhttp::field::retry_after]);
    const int status = status_of ? status_of(s->status(), err) : s->status();
    co_return failure_from_response(provider, status, err, retry_after);
  }
  co_return std::move(s);
}

boost::asio::awaitable<std::string> read_error_body(http::ClientStream& s) {
  std::string err;
  for (int i = 0; i < 64 && err.size() < 65536; ++i) {
    auto piece = co_await s.next();
    if (!piece || piece->empty()) break;
    err += *piece;
  }
  co_return err;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string api_base(std::string base_url, std::string_view default_path) {
  while (!base_url.empty() && base_url.back() == '/') base_url.pop_back();
  const auto scheme = base_url.find("://");
  const auto host = scheme == std::string::npos ? 0 : scheme + 3;
  if (base_url.find('/', host) == std::string::npos) base_url += default_path;
  return base_url;
}

std::string make_chunk(const std::string& id, std::int64_t created, const std::string& model, int index,
                       const json& delta, const char* finish_reason) {
  const json c = {{"id", id},
                  {"object", "chat.completion.chunk"},
                  {"created", created},
                  {"model", model},
                  {"choices", json::array({{{"index", index},
                                            {"delta", delta},
                                            {"logprobs", nullptr},
                                            {"finish_reason", finish_reason ? json(finish_reason) : json(nullptr)}}})}};
  return c.dump();
}

std::string make_usage_chunk(const std::string& id, std::int64_t created, const std::string& model, const json& usage) {
  const json c = {{"id", id},
                  {"object", "chat.completion.chunk"},
                  {"created", created},
                  {"model", model},
                  {"choices", json::array()},
                  {"usage", usage}};
  return c.dump();
}

TranslatedStream::TranslatedStream(std::unique_ptr<http::ClientStream> s, std::unique_ptr<EventTranslator> t,
                                   std::string provider)
    : stream_(std::move(s)), translator_(std::move(t)), provider_(std::move(provider)) {}

TranslatedStream::~TranslatedStream() = default;

boost::asio::awaitable<UpResult<std::optional<std::string>>> TranslatedStream::next() {
  for (;;) {
    if (!ready_.empty()) {
      std::string c = std::move(ready_.front());
      ready_.pop_front();
      co_return std::optional<std::string>{std::move(c)};
    }
    // Chunks translated before a failure are delivered first.
    if (failed_) co_return *failed_;
    if (ended_) co_return std::optional<std::string>{};
    auto piece = co_await stream_->next();
    std::vector<std::string> out;
    if (!piece) {
      spdlog::warn("upstream {}: {}", provider_, piece.error().message);
      ended_ = true;
      // A connection lost after the upstream said the answer was complete
      // loses nothing: end normally (on_end fails when it was not).
      if (translator_->on_end(out)) {
        failed_ = UpstreamFailure{
            Error{502, "upstream_disconnected", "upstream " + provider_ + " ended the stream early"}};
        continue;
      }
      for (auto& c : out) ready_.push_back(std::move(c));
      continue;
    }
    if (piece->empty()) {
      ended_ = true;
      if (auto f = translator_->on_end(out)) failed_ = std::move(*f);
    } else {
      std::vector<SseMessage> events;
      if (!parser_.feed(*piece, events)) {
        ended_ = true;
        failed_ = protocol_failure(provider_, "sent an oversized event");
        continue;
      }
      for (const auto& m : events) {
        if (auto f = translator_->on_event(m, out)) {
          ended_ = true;
          failed_ = std::move(*f);
          break;
        }
      }
    }
    for (auto& c : out) ready_.push_back(std::move(c));
  }
}

}  // namespace alou::gateway
