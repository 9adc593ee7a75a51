#pragma once
// Chat sessions: a title and a bounded message history per owner, kept in
// the KV (Redis or embedded) so every Alou instance sees the same sessions.
//
// - Sliding TTL: every read or append pushes the expiry to now + sessions.ttl_s.
// - At most sessions.max_messages messages: appending past the cap drops the
//   oldest (Session::dropped counts them).
// - Owned: a session belongs to the principal that created it; for anyone
//   else it does not exist (404 "session_not_found", never 403, so ids leak
//   nothing).
//
// Errors are values: 404 "session_not_found", 503 "kv_unavailable", 409
// "session_busy" when an append could not take the session's lock in time.
// Thread-safety: every method may be called concurrently from any thread and
// from several instances (appends are serialised by a lock key in the KV).
#include "alou/core/config.hpp"
#include "alou/core/error.hpp"
#include "alou/core/principal.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace alou::storage {
class Kv;
}
namespace alou::http {
class Router;
}

namespace alou::sessions {

struct Message {
  std::string role;        // "user", "assistant", "tool", "system"
  std::string content;
  std::string meta_json;   // optional JSON object text (tool calls, ids); empty: none
  std::int64_t at_ms = 0;  // set by append() when 0
};

struct Session {
  std::string id;
  std::string owner;
  std::string title;
  std::int64_t created_ms = 0;
  std::int64_t expires_ms = 0;
  std::vector<Message> messages;  // oldest first
  std::uint64_t dropped = 0;      // messages dropped by the cap
};

// Unix milliseconds (injectable for tests).
using Clock = std::function<std::int64_t()>;

class Store {
 public:
  virtual ~Store() = default;
  virtual boost::asio::awaitable<Result<Session>> create(std::string owner, std::string title) = 0;
  // Reads and slides the TTL.
  virtual boost::asio::awaitable<Result<Session>> get(std::string owner, std::string id) = 0;
  // Appends, drops the oldest past the cap, slides the TTL; returns the session.
  virtual boost::asio::awaitable<Result<Session>> append(std::string owner, std::string id, Message message) = 0;
  virtual boost::asio::awaitable<Result<void>> remove(std::string owner, std::string id) = 0;
};

std::unique_ptr<Store> make_kv_store(storage::Kv& kv, const SessionsSettings& settings, Clock now = {});

// The owner string of a principal ("key:<id>", "admin", "wallet:<address>").
std::string owner_of(const Principal& p);

// POST /api/session {title?} → 201 {id, title, created_at, expires_at}
// GET /api/session/{id} → {id, title, created_at, expires_at, messages, dropped}
// DELETE /api/session/{id} → {deleted: true}
// `store` must outlive the router.
void add_routes(http::Router& router, Store& store);

}  // namespace alou::sessions
