#include "alou/mock/upstream.hpp"

#include "alou/http/exchange.hpp"
#include "alou/http/sse.hpp"
#include "alou/mock/model.hpp"
#include "alou/mock/wire.hpp"


#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <utility>

namespace alou::mock {
namespace {

namespace net = boost::asio;
constexpr auto kAwait = net::as_tuple(net::use_awaitable);

// After the last event of a cut stream: long enough for the SSE writer (on
// the same strand) to flush what was queued before the connection drops.
constexpr int kCutSettleMs = 50;

enum class Api { kOpenAi, kAnthropic, kGemini };

std::atomic<std::uint64_t> g_counter{0};

wire::Ids next_ids(Api api) {
  const auto n = std::to_string(g_counter.fetch_add(1) + 1);
  wire::Ids ids;
  ids.created = static_cast<std::int64_t>(std::time(nullptr));
  switch (api) {
    case Api::kOpenAi:
      ids.id = "chatcmpl-mock-" + n;
      ids.call_id = "call_mock_" + n;
      break;
    case Api::kAnthropic:
      ids.id = "msg_mock_" + n;
      ids.call_id = "toolu_mock_" + n;
      break;
    case Api::kGemini:
      ids.id = "mock-" + n;
      break;
  }
  return ids;
}

http::Response error_response(http::Exchange& ex, Api api, const Error& e) {
  if (api == Api::kGemini) return ex.json(static_cast<http::Status>(e.status), wire::gemini_error(e.status, e.message));
  return ex.error(e);  // OpenAI or Anthropic: the route's format
}

// The final SSE event when the server shuts down mid-stream, per API.
std::string shutdown_event(Api api) {
  switch (api) {
    case Api::kOpenAi:
      return "data: {\"error\":{\"message\":\"the server is shutting down\",\"type\":\"server_error\","
             "\"param\":null,\"code\":\"server_shutdown\"}}\n\n";
    case Api::kAnthropic:
      return "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
             "\"message\":\"the server is shutting down\"}}\n\n";
    case Api::kGemini:
      return "data: " + wire::gemini_error(503, "the server is shutting down") + "\n\n";
  }
  return {};
}

// Waits `ms` on the caller's executor; false if the wait was cancelled.
net::awaitable<bool> pause(int ms) {
  if (ms <= 0) co_return true;
  net::steady_timer timer(co_await net::this_coro::executor);
  timer.expires_after(std::chrono::milliseconds(ms));
  auto [ec] = co_await timer.async_wait(kAwait);
  co_return !ec;
}

// What to send for one request, rendered up front.
struct Answer {
  Api api = Api::kOpenAi;
  bool sse = false;
  std::string body;                 // !sse
  std::vector<wire::Event> events;  // sse; never empty
};

// Applies /slow, /fail and /cut, then answers with the body or the stream.
net::awaitable<http::Response> deliver(http::Exchange& ex, const Reply& reply, const Answer& answer) {
  if (!answer.sse || reply.fail_status) {
    const bool waited = co_await pause(reply.slow_ms);
    if (!waited) co_return http::Exchange::streamed();  // cancelled: the client went away
    if (reply.fail_status) {
      const int code = *reply.fail_status;
      const Error e{code, "mock_failure", "mock failure requested with /fail " + std::to_string(code)};
      co_return error_response(ex, answer.api, e);
    }
    if (reply.cut_after) {
      ex.abort();
      co_return http::Exchange::streamed();
    }
    co_return ex.json(http::Status::ok, answer.body);
  }

  const int slow = reply.slow_ms;
  const std::optional<int> cut = reply.cut_after;
  http::Exchange* exp = &ex;
  auto producer = [&answer, slow, cut, exp](http::SseWriter& w) -> net::awaitable<void> {
    std::size_t limit = answer.events.size();
    if (cut) limit = std::min(static_cast<std::size_t>(*cut), limit - 1);
    for (std::size_t i = 0; i < limit; ++i) {
      const bool waited = co_await pause(slow);
      if (!waited) co_return;
      const http::SseEvent ev{.event = answer.events[i].name, .data = answer.events[i].data, .id = {}};
      const bool sent = co_await w.send(ev);
      if (!sent) co_return;
    }
    if (cut) {
      // Drop the socket at once (the client sees a truncated chunked body
      // and EOF), then end the producer abnormally so that stream_sse does
      // not try to write the final chunk and the session closes.
      co_await pause(kCutSettleMs);
      exp->abort();
      throw boost::system::system_error(net::error::connection_aborted);
    }
  };
  http::SseOptions options;
  options.shutdown_event = shutdown_event(answer.api);
  std::function<net::awaitable<void>(http::SseWriter&)> fn = std::move(producer);
  co_await ex.stream_sse(std::move(fn), std::move(options));
  co_return http::Exchange::streamed();
}

net::awaitable<http::Response> openai_chat(http::Exchange& ex) {
  auto req = wire::parse_openai_chat(ex.request().body());
  if (!req) co_return ex.error(req.error());
  const Reply reply = respond(req->messages, req->max_tokens);
  const wire::Ids ids = next_ids(Api::kOpenAi);
  Answer answer{.api = Api::kOpenAi, .sse = req->stream, .body = {}, .events = {}};
  if (req->stream) {
    answer.events = wire::openai_stream(*req, reply, ids);
  } else {
    answer.body = wire::openai_completion(*req, reply, ids);
  }
  co_return co_await deliver(ex, reply, answer);
}

net::awaitable<http::Response> anthropic_messages(http::Exchange& ex) {
  auto req = wire::parse_anthropic(ex.request().body());
  if (!req) co_return ex.error(req.error());
  const Reply reply = respond(req->messages, req->max_tokens);
  const wire::Ids ids = next_ids(Api::kAnthropic);
  Answer answer{.api = Api::kAnthropic, .sse = req->stream, .body = {}, .events = {}};
  if (req->stream) {
    answer.events = wire::anthropic_stream(*req, reply, ids);
  } else {
    answer.body = wire::anthropic_message(*req, reply, ids);
  }
  co_return co_await deliver(ex, reply, answer);
}

// "/v1beta/models/{model_action}": the router matches whole segments, so
// "gemini-2.0-flash:generateContent" arrives as one parameter.
net::awaitable<http::Response> gemini(http::Exchange& ex) {
  const std::string_view model_action = ex.param("model_action");
  const auto colon = model_action.rfind(':');
  const std::string_view model = model_action.substr(0, colon);
  const std::string_view action = colon == std::string_view::npos ? std::string_view{} : model_action.substr(colon + 1);
  if (!model.empty() && action == "batchEmbedContents") {
    auto out = wire::gemini_embeddings(ex.request().body());
    if (!out) co_return error_response(ex, Api::kGemini, out.error());
    co_return ex.json(http::Status::ok, std::move(*out));
  }
  if (model.empty() || (action != "generateContent" && action != "streamGenerateContent")) {
    const Error e = Error::not_found("unknown model action \"" + std::string(model_action) +
                                     "\": use MODEL:generateContent, MODEL:streamGenerateContent or"
                                     " MODEL:batchEmbedContents");
    co_return error_response(ex, Api::kGemini, e);
  }
  auto req = wire::parse_gemini(ex.request().body(), model);
  if (!req) co_return error_response(ex, Api::kGemini, req.error());
  const Reply reply = respond(req->messages, req->max_tokens);
  const wire::Ids ids = next_ids(Api::kGemini);
  Answer answer{.api = Api::kGemini, .sse = false, .body = {}, .events = {}};
  if (action == "generateContent") {
    answer.body = wire::gemini_response(*req, reply, ids);
  } else if (ex.query_param("alt") == "sse") {
    answer.sse = true;
    answer.events = wire::gemini_stream(*req, reply, ids);
  } else {
    // Without alt=sse Google streams one JSON array; sent here in one piece.
    std::string body = "[";
    for (const auto& ev : wire::gemini_stream(*req, reply, ids)) {
      if (body.size() > 1) body += ',';
      body += ev.data;
    }
    body += ']';
    answer.body = std::move(body);
  }
  co_return co_await deliver(ex, reply, answer);
}

net::awaitable<http::Response> openai_embeddings(http::Exchange& ex) {
  auto body = wire::openai_embeddings(ex.request().body());
  if (!body) co_return ex.error(body.error());
  co_return ex.json(http::Status::ok, std::move(*body));
}

// Azure OpenAI: "/openai/deployments/{deployment}/chat/completions" (and
// /embeddings) with a required api-version query parameter; the body is
// OpenAI's. The deployment stands for the model.
bool azure_version_given(const http::Exchange& ex) {
  const auto v = ex.query_param("api-version");
  return v && !v->empty();
}

net::awaitable<http::Response> azure_chat(http::Exchange& ex) {
  if (!azure_version_given(ex)) {
    co_return ex.error(Error::bad_request("Missing API version: add ?api-version=...", "missing_api_version"));
  }
  auto res = co_await openai_chat(ex);
  co_return res;
}

net::awaitable<http::Response> azure_embeddings(http::Exchange& ex) {
  if (!azure_version_given(ex)) {
    co_return ex.error(Error::bad_request("Missing API version: add ?api-version=...", "missing_api_version"));
  }
  auto res = co_await openai_embeddings(ex);
  co_return res;
}

net::awaitable<http::Response> openai_models(http::Exchange& ex) {
  co_return ex.json(http::Status::ok, wire::openai_models());
}

}  // namespace

void add_upstream_routes(http::Router& router) {
  const http::RouteOptions openai{.access = http::Access::kPublic, .format = http::ErrorFormat::kOpenAi};
  const http::RouteOptions openai_gen{
      .access = http::Access::kPublic, .format = http::ErrorFormat::kOpenAi, .watch_client = true};
  const http::RouteOptions anthropic_gen{
      .access = http::Access::kPublic, .format = http::ErrorFormat::kAnthropic, .watch_client = true};
  const http::RouteOptions gemini_gen{
      .access = http::Access::kPublic, .format = http::ErrorFormat::kAlou, .watch_client = true};
  router.post("/v1/chat/completions", openai_chat, openai_gen);
  router.post("/v1/embeddings", openai_embeddings, openai);
  router.get("/v1/models", openai_models, openai);
  router.post("/v1/messages", anthropic_messages, anthropic_gen);
  router.post("/v1beta/models/{model_action}", gemini, gemini_gen);
  router.post("/openai/deployments/{deployment}/chat/completions", azure_chat, openai_gen);
  router.post("/openai/deployments/{deployment}/embeddings", azure_embeddings, openai);
}

}  // namespace alou::mock
