// The /api/session routes over a sessions::Store.
#include "alou/sessions/sessions.hpp"

#include "alou/core/time.hpp"
#include "alou/http/exchange.hpp"
#include "alou/http/router.hpp"

#include <nlohmann/json.hpp>

namespace alou::sessions {
namespace {

namespace net = boost::asio;
using json = nlohmann::json;

constexpr std::size_t kMaxTitle = 200;

json session_json(const Session& s, bool with_messages) {
  json out = {{"id", s.id},
              {"title", s.title},
              {"created_at", format_rfc3339(s.created_ms)},
              {"expires_at", format_rfc3339(s.expires_ms)}};
  if (with_messages) {
    json msgs = json::array();
    for (const auto& m : s.messages) {
      json j = {{"role", m.role}, {"content", m.content}, {"at", format_rfc3339(m.at_ms)}};
      if (!m.meta_json.empty()) {
        json meta = json::parse(m.meta_json, nullptr, false);
        if (!meta.is_discarded()) j["meta"] = std::move(meta);
      }
      msgs.push_back(std::move(j));
    }
    out["messages"] = std::move(msgs);
    out["dropped"] = s.dropped;
  }
  return out;
}

net::awaitable<http::Response> create(Store& store, http::Exchange& ex) {
  std::string title;
  const auto& body = ex.request().body();
  if (!body.empty()) {
    const json j = json::parse(body, nullptr, false);
    if (!j.is_object()) co_return ex.error(Error::bad_request("body must be a JSON object", "invalid_json"));
    if (auto it = j.find("title"); it != j.end() && !it->is_null()) {
      if (!it->is_string()) co_return ex.error(Error::bad_request("title must be a string", "invalid_request"));
      title = it->get<std::string>();
      if (title.size() > kMaxTitle) {
        co_return ex.error(Error::bad_request("title is longer than 200 bytes", "invalid_request"));
      }
    }
  }
  std::string owner = owner_of(*ex.principal);
  auto s = co_await store.create(std::move(owner), std::move(title));
  if (!s) co_return ex.error(s.error());
  co_return ex.json(http::Status::created, session_json(*s, false).dump());
}

net::awaitable<http::Response> read(Store& store, http::Exchange& ex) {
  std::string owner = owner_of(*ex.principal);
  std::string id(ex.param("id"));
  auto s = co_await store.get(std::move(owner), std::move(id));
  if (!s) co_return ex.error(s.error());
  co_return ex.json(http::Status::ok, session_json(*s, true).dump());
}

net::awaitable<http::Response> remove(Store& store, http::Exchange& ex) {
  std::string owner = owner_of(*ex.principal);
  std::string id(ex.param("id"));
  auto r = co_await store.remove(std::move(owner), std::move(id));
  if (!r) co_return ex.error(r.error());
  co_return ex.json(http::Status::ok, R"({"deleted":true})");
}

}  // namespace

void add_routes(http::Router& router, Store& store) {
  Store* s = &store;
  router.post("/api/session", [s](http::Exchange& ex) { return create(*s, ex); });
  router.get("/api/session/{id}", [s](http::Exchange& ex) { return read(*s, ex); });
  router.del("/api/session/{id}", [s](http::Exchange& ex) { return remove(*s, ex); });
}

}  // namespace alou::sessions
