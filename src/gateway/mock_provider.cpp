// Provider kind `mock`: DESIGN.md's deterministic model, in process. The
// same model and wire formats serve `alou mock-upstream` over HTTP.
#include "providers.hpp"

#include "alou/mock/model.hpp"
#include "alou/mock/wire.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>

namespace alou::gateway {
namespace {

namespace net = boost::asio;
namespace wire = mock::wire;

std::atomic<std::uint64_t> g_counter{0};

wire::Ids next_ids() {
  const auto n = ++g_counter;
  wire::Ids ids;
  ids.id = "chatcmpl-mock-" + std::to_string(n);
  ids.call_id = "call_mock_" + std::to_string(n);
  ids.created = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                    .count();
  return ids;
}

net::awaitable<void> sleep_ms(int ms) {
  if (ms <= 0) co_return;
  net::steady_timer t(co_await net::this_coro::executor);
  t.expires_after(std::chrono::milliseconds(ms));
  co_await t.async_wait(net::use_awaitable);
}

UpstreamFailure fail(int status) {
  UpstreamFailure f;
  f.retryable = status == 429 || status >= 500;
  const std::string msg = "upstream mock: /fail " + std::to_string(status);
  if (status == 429) {
    f.error = Error{429, "upstream_rate_limited", msg};
  } else if (status >= 500) {
    f.error = Error{502, "upstream_error", msg};
  } else {
    f.error = Error{status, "upstream_bad_request", msg};
  }
  return f;
}

class MockStream final : public ChatStream {
 public:
  MockStream(std::vector<wire::Event> events, int slow_ms, std::optional<int> cut_after)
      : events_(std::move(events)), slow_ms_(slow_ms), cut_after_(cut_after) {}

  net::awaitable<UpResult<std::optional<std::string>>> next() override {
    if (cut_after_ && sent_ >= static_cast<std::size_t>(*cut_after_)) {
      UpstreamFailure f{Error{502, "upstream_disconnected", "upstream mock ended the stream early (/cut)"}};
      co_return f;
    }
    if (i_ >= events_.size() || events_[i_].data == "[DONE]") co_return std::optional<std::string>{};
    co_await sleep_ms(slow_ms_);
    ++sent_;
    co_return std::optional<std::string>{std::move(events_[i_++].data)};
  }

 private:
  std::vector<wire::Event> events_;
  int slow_ms_;
  std::optional<int> cut_after_;
  std::size_t i_ = 0;
  std::size_t sent_ = 0;
};

class MockProvider final : public Provider {
 public:
  explicit MockProvider(const ProviderSettings& s) : name_(s.name) {}
  const std::string& name() const override { return name_; }
  std::string_view kind() const override { return "mock"; }

  net::awaitable<UpResult<std::string>> chat(const nlohmann::json& body) override {
    auto req = wire::parse_openai_chat(body.dump());
    if (!req) co_return UpstreamFailure{req.error()};
    const mock::Reply reply = mock::respond(req->messages, req->max_tokens);
    if (reply.fail_status) co_return fail(*reply.fail_status);
    co_await sleep_ms(reply.slow_ms);
    if (reply.cut_after) {
      UpstreamFailure f{Error{502, "upstream_disconnected", "upstream mock dropped the connection (/cut)"}, true};
      co_return f;
    }
    co_return wire::openai_completion(*req, reply, next_ids());
  }

  net::awaitable<UpResult<std::string>> embeddings(const nlohmann::json& body) override {
    auto r = wire::openai_embeddings(body.dump());
    if (!r) co_return UpstreamFailure{r.error()};
    co_return std::move(*r);
  }

  net::awaitable<UpResult<std::unique_ptr<ChatStream>>> chat_stream(const nlohmann::json& body) override {
    auto req = wire::parse_openai_chat(body.dump());
    if (!req) co_return UpstreamFailure{req.error()};
    req->stream = true;
    const mock::Reply reply = mock::respond(req->messages, req->max_tokens);
    if (reply.fail_status) co_return fail(*reply.fail_status);
    std::unique_ptr<ChatStream> s =
        std::make_unique<MockStream>(wire::openai_stream(*req, reply, next_ids()), reply.slow_ms, reply.cut_after);
    co_return s;
  }

 private:
  std::string name_;
};

}  // namespace

std::unique_ptr<Provider> make_mock_provider(const ProviderSettings& s) { return std::make_unique<MockProvider>(s); }

}  // namespace alou::gateway
