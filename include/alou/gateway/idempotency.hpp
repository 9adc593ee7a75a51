#pragma once
// Idempotency-Key on the model endpoints (draft-ietf-httpapi-idempotency-
// key-header): a client that sends a POST again with the same key gets the
// first response again, and is charged once.
//
// Records live in the KV (so every instance on one Redis shares them),
// scoped by the caller (key id, wallet address or "admin"):
//   idem:<principal>:<sha256(key)> = {"s":"p","fp":...}          in flight
//                                  = {"s":"d","fp":...,"st":200,"ct":...,"b":...}  answered
// The fingerprint is SHA-256 over the path and the body, so a key reused
// for a different request is refused (422) instead of replaying the wrong
// answer. A second request while the first is in flight gets 409 (retry
// later). A request that fails before anything was charged removes its
// record, so the client may retry it with the same key. A stream that
// started is charged (in full, or its partial usage if it was cut), so what
// it delivered is kept and replayed.
#include "alou/core/error.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace alou::storage {
class Kv;
}

namespace alou::gateway {

class IdempotencyClaim;

struct IdempotencyOptions {
  std::chrono::milliseconds done_ttl{std::chrono::hours(24)};
  // Longer than a request may run (the upstream's total deadline is 10
  // minutes): a crashed instance's record expires after this.
  std::chrono::milliseconds pending_ttl{std::chrono::minutes(15)};
  std::size_t max_body = 8u << 20;  // larger answers are charged but not kept
};

// What begin() found.
struct IdempotencyStart {
  enum class Kind { kClaimed, kReplay, kError };
  Kind kind = Kind::kError;
  Error error;                              // kError
  int status = 0;                           // kReplay
  std::string content_type;                 // kReplay
  std::string body;                         // kReplay
  std::shared_ptr<IdempotencyClaim> claim;  // kClaimed
};

class Idempotency {
 public:
  Idempotency(storage::Kv& kv, boost::asio::any_io_executor ex, IdempotencyOptions opts = {});

  // A header value is 1-255 visible ASCII characters.
  static bool valid_key(std::string_view key);

  // Claims `key` for this request, or finds its earlier answer. Errors: 409
  // idempotency_in_progress, 422 idempotency_key_reused, 409
  // idempotency_response_not_kept (answered, too large to keep), 503
  // idempotency_unavailable (the KV did not answer: the request is not
  // sent, since it could not be protected).
  boost::asio::awaitable<IdempotencyStart> begin(std::string principal, std::string key, std::string_view path,
                                                 std::string_view body);

 private:
  friend class IdempotencyClaim;
  storage::Kv& kv_;
  boost::asio::any_io_executor ex_;
  IdempotencyOptions opts_;
};

// Held by the request that claimed a key. Destroyed without complete():
// the record is removed (nothing was charged), or, once commit() was
// called, what was taped is kept as the answer (a stream that was charged).
// Both happen in the background, since a destructor cannot wait.
class IdempotencyClaim {
 public:
  IdempotencyClaim(Idempotency& owner, std::string record_key, std::string fingerprint, std::string pending);
  ~IdempotencyClaim();
  IdempotencyClaim(const IdempotencyClaim&) = delete;
  IdempotencyClaim& operator=(const IdempotencyClaim&) = delete;

  // Stores the answer; replays return it from now on.
  boost::asio::awaitable<void> complete(int status, std::string content_type, std::string body);
  // The answer is being delivered and charged: from now on it is kept
  // whatever happens.
  void commit() { committed_ = true; }
  // Appends bytes sent to the client (a stream's frames).
  void tape(std::string_view bytes);
  // complete() with what was taped, as text/event-stream.
  boost::asio::awaitable<void> complete_tape();
  // Nothing was charged: removes the record so the client may retry.
  boost::asio::awaitable<void> abandon();

 private:
  std::string done_record(int status, std::string_view content_type, std::string_view body) const;

  Idempotency& owner_;
  std::string record_key_;
  std::string fingerprint_;
  std::string pending_;
  std::string tape_;
  bool overflow_ = false;
  bool committed_ = false;
  bool finished_ = false;
};

}  // namespace alou::gateway
