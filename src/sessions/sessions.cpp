#include "alou/sessions/sessions.hpp"

#include "alou/core/random.hpp"
#include "alou/core/time.hpp"
#include "alou/storage/kv.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

namespace alou::sessions {
namespace {

namespace net = boost::asio;
using json = nlohmann::json;
using Ms = std::chrono::milliseconds;

constexpr int kLockAttempts = 200;          // x 10 ms: an append waits at most ~2 s for the lock
constexpr Ms kLockTtl{5000};                // a crashed holder releases it after this

std::string data_key(std::string_view id) { return "session:" + std::string(id); }
std::string lock_key(std::string_view id) { return "session-lock:" + std::string(id); }

Error not_found() { return Error::not_found("no such session (or it expired)", "session_not_found"); }

// Session ids are ours ("sess_" + 24 alphanumerics); anything else cannot exist.
bool plausible_id(std::string_view id) {
  if (id.size() != 29 || id.substr(0, 5) != "sess_") return false;
  for (char c : id.substr(5)) {
    if (!std::isalnum(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

json to_json(const Session& s) {
  json msgs = json::array();
  for (const auto& m : s.messages) {
    json j = {{"role", m.role}, {"content", m.content}, {"at_ms", m.at_ms}};
    if (!m.meta_json.empty()) j["meta"] = m.meta_json;
    msgs.push_back(std::move(j));
  }
  return {{"id", s.id},           {"owner", s.owner},      {"title", s.title},
          {"created_ms", s.created_ms}, {"messages", std::move(msgs)}, {"dropped", s.dropped}};
}

std::optional<Session> from_json(std::string_view text) {
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  try {
    Session s;
    s.id = j.at("id").get<std::string>();
    s.owner = j.at("owner").get<std::string>();
    s.title = j.at("title").get<std::string>();
    s.created_ms = j.at("created_ms").get<std::int64_t>();
    s.dropped = j.at("dropped").get<std::uint64_t>();
    for (const auto& m : j.at("messages")) {
      s.messages.push_back(Message{m.at("role").get<std::string>(), m.at("content").get<std::string>(),
                                   m.value("meta", std::string()), m.at("at_ms").get<std::int64_t>()});
    }
    return s;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

class KvStore final : public Store {
 public:
  KvStore(storage::Kv& kv, const SessionsSettings& s, Clock now)
      : kv_(kv), ttl_(std::int64_t{s.ttl_s} * 1000), max_(s.max_messages), now_(now ? std::move(now) : Clock(&now_unix_ms)) {}

  net::awaitable<Result<Session>> create(std::string owner, std::string title) override {
    Session s;
    s.id = "sess_" + random_alnum(24);
    s.owner = std::move(owner);
    s.title = std::move(title);
    s.created_ms = now_();
    s.expires_ms = s.created_ms + ttl_.count();
    std::string key = data_key(s.id);
    std::string value = to_json(s).dump();
    auto stored = co_await kv_.set(std::move(key), std::move(value), ttl_);
    if (!stored) co_return stored.error();
    co_return s;
  }

  net::awaitable<Result<Session>> get(std::string owner, std::string id) override {
    auto s = co_await load(owner, id);
    if (!s) co_return s.error();
    // Sliding TTL; if the key vanished in between, the session is gone.
    std::string key = data_key(id);
    auto slid = co_await kv_.expire(std::move(key), ttl_);
    if (!slid) co_return slid.error();
    if (!*slid) co_return not_found();
    s->expires_ms = now_() + ttl_.count();
    co_return s;
  }

  net::awaitable<Result<Session>> append(std::string owner, std::string id, Message message) override {
    if (!plausible_id(id)) co_return not_found();
    auto token = co_await lock(id);
    if (!token) co_return token.error();
    auto s = co_await load(owner, id);
    if (s) {
      if (message.at_ms == 0) message.at_ms = now_();
      s->messages.push_back(std::move(message));
      while (s->messages.size() > max_) {
        s->messages.erase(s->messages.begin());
        ++s->dropped;
      }
      s->expires_ms = now_() + ttl_.count();
      std::string key = data_key(id);
      std::string value = to_json(*s).dump();
      auto stored = co_await kv_.set(std::move(key), std::move(value), ttl_);
      if (!stored) s = stored.error();
    }
    co_await unlock(id, *token);
    co_return s;
  }

  net::awaitable<Result<void>> remove(std::string owner, std::string id) override {
    if (!plausible_id(id)) co_return not_found();
    auto token = co_await lock(id);
    if (!token) co_return token.error();
    Result<void> out;
    auto s = co_await load(owner, id);
    if (!s) {
      out = s.error();
    } else {
      std::string key = data_key(id);
      auto d = co_await kv_.del(std::move(key));
      if (!d) out = d.error();
    }
    co_await unlock(id, *token);
    co_return out;
  }

 private:
  net::awaitable<Result<Session>> load(const std::string& owner, const std::string& id) {
    if (!plausible_id(id)) co_return not_found();
    std::string key = data_key(id);
    auto raw = co_await kv_.get(std::move(key));
    if (!raw) co_return raw.error();
    if (!raw->has_value()) co_return not_found();
    auto s = from_json(**raw);
    if (!s) co_return Error::internal("a stored session is corrupt", "session_corrupt");
    if (s->owner != owner) co_return not_found();
    co_return *s;
  }

  // A lock key per session (SET NX with a TTL) serialises read-modify-write
  // across threads and instances; released only by its holder's token.
  net::awaitable<Result<std::string>> lock(const std::string& id) {
    std::string token = random_alnum(16);
    auto ex = co_await net::this_coro::executor;
    net::steady_timer timer(ex);
    for (int i = 0; i < kLockAttempts; ++i) {
      std::string key = lock_key(id);
      auto got = co_await kv_.set_if_absent(std::move(key), token, kLockTtl);
      if (!got) co_return got.error();
      if (*got) co_return token;
      timer.expires_after(Ms(10));
      co_await timer.async_wait(net::use_awaitable);
    }
    co_return Error::conflict("the session is busy; retry", "session_busy");
  }

  net::awaitable<void> unlock(const std::string& id, const std::string& token) {
    std::string key = lock_key(id);
    auto r = co_await kv_.compare_and_delete(std::move(key), token);
    (void)r;  // if it failed the lock expires on its own after kLockTtl
  }

  storage::Kv& kv_;
  Ms ttl_;
  std::size_t max_;
  Clock now_;
};

}  // namespace

std::unique_ptr<Store> make_kv_store(storage::Kv& kv, const SessionsSettings& settings, Clock now) {
  return std::make_unique<KvStore>(kv, settings, std::move(now));
}

std::string owner_of(const Principal& p) {
  switch (p.kind) {
    case Principal::Kind::kAdminKey: return "admin";
    case Principal::Kind::kWallet: return "wallet:" + p.id;
    case Principal::Kind::kApiKey: break;
  }
  return "key:" + p.id;
}

}  // namespace alou::sessions
