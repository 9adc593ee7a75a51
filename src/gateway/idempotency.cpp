#include "alou/gateway/idempotency.hpp"

#include "alou/core/random.hpp"
#include "alou/storage/kv.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <nlohmann/json.hpp>
#include <sodium.h>
#include <spdlog/spdlog.h>

namespace alou::gateway {
namespace net = boost::asio;
using json = nlohmann::json;

namespace {

std::string sha256_hex(std::string_view a, std::string_view b = {}) {
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  // Netstring-like framing: ("ab","c") and ("a","bc") hash differently.
  const std::string len = std::to_string(a.size()) + ":";
  crypto_hash_sha256_update(&st, reinterpret_cast<const unsigned char*>(len.data()), len.size());
  crypto_hash_sha256_update(&st, reinterpret_cast<const unsigned char*>(a.data()), a.size());
  crypto_hash_sha256_update(&st, reinterpret_cast<const unsigned char*>(b.data()), b.size());
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&st, digest);
  std::string hex(crypto_hash_sha256_BYTES * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), digest, sizeof digest);
  hex.pop_back();
  return hex;
}

IdempotencyStart error(Error e) {
  IdempotencyStart s;
  s.kind = IdempotencyStart::Kind::kError;
  s.error = std::move(e);
  return s;
}

Error unavailable(const Error& cause) {
  return Error::unavailable("the Idempotency-Key store did not answer (" + cause.message + "); the request was not sent",
                            "idempotency_unavailable");
}

}  // namespace

Idempotency::Idempotency(storage::Kv& kv, net::any_io_executor ex, IdempotencyOptions opts)
    : kv_(kv), ex_(std::move(ex)), opts_(opts) {}

bool Idempotency::valid_key(std::string_view key) {
  if (key.empty() || key.size() > 255) return false;
  for (const char c : key) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

net::awaitable<IdempotencyStart> Idempotency::begin(std::string principal, std::string key, std::string_view path,
                                                    std::string_view body) {
  std::string record_key = "idem:" + principal + ":" + sha256_hex(key);
  std::string fingerprint = sha256_hex(path, body);
  // Two tries: a record can vanish between a failed claim and its read (the
  // first request failed and removed it).
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string pending = json{{"s", "p"}, {"fp", fingerprint}, {"n", random_hex(8)}}.dump();
    auto claimed = co_await kv_.set_if_absent(record_key, pending, opts_.pending_ttl);
    if (!claimed) co_return error(unavailable(claimed.error()));
    if (*claimed) {
      IdempotencyStart s;
      s.kind = IdempotencyStart::Kind::kClaimed;
      s.claim = std::make_shared<IdempotencyClaim>(*this, std::move(record_key), std::move(fingerprint),
                                                   std::move(pending));
      co_return s;
    }
    auto found = co_await kv_.get(record_key);
    if (!found) co_return error(unavailable(found.error()));
    if (!*found) continue;
    const json rec = json::parse(**found, nullptr, false);
    if (!rec.is_object() || !rec.contains("s") || !rec.contains("fp")) {
      co_return error(Error::internal("unreadable Idempotency-Key record", "idempotency_corrupt"));
    }
    if (rec["fp"] != fingerprint) {
      co_return error(Error{422, "idempotency_key_reused",
                            "this Idempotency-Key was already used for a different request (another path or body)"});
    }
    const std::string state = rec["s"].get<std::string>();
    if (state == "p") {
      co_return error(Error::conflict("a request with this Idempotency-Key is still in progress; retry later",
                                      "idempotency_in_progress"));
    }
    if (state == "x") {
      co_return error(Error::conflict(
          "the request with this Idempotency-Key was answered and charged, but its response was too large to keep",
          "idempotency_response_not_kept"));
    }
    IdempotencyStart s;
    s.kind = IdempotencyStart::Kind::kReplay;
    s.status = rec.value("st", 200);
    s.content_type = rec.value("ct", "application/json");
    s.body = rec.value("b", "");
    co_return s;
  }
  co_return error(Error::conflict("the Idempotency-Key record changed while it was read; retry", "idempotency_in_progress"));
}

IdempotencyClaim::IdempotencyClaim(Idempotency& owner, std::string record_key, std::string fingerprint,
                                   std::string pending)
    : owner_(owner),
      record_key_(std::move(record_key)),
      fingerprint_(std::move(fingerprint)),
      pending_(std::move(pending)) {}

std::string IdempotencyClaim::done_record(int status, std::string_view content_type, std::string_view body) const {
  if (overflow_ || body.size() > owner_.opts_.max_body) return json{{"s", "x"}, {"fp", fingerprint_}}.dump();
  // Responses are UTF-8 JSON or SSE text; invalid bytes are replaced rather
  // than failing the dump.
  return json{{"s", "d"}, {"fp", fingerprint_}, {"st", status}, {"ct", content_type}, {"b", body}}.dump(
      -1, ' ', false, json::error_handler_t::replace);
}

net::awaitable<void> IdempotencyClaim::complete(int status, std::string content_type, std::string body) {
  if (finished_) co_return;
  finished_ = true;
  std::string record = done_record(status, content_type, body);
  auto r = co_await owner_.kv_.set(record_key_, std::move(record), owner_.opts_.done_ttl);
  if (!r) spdlog::warn("Idempotency-Key answer not stored: {}", r.error().message);
}

void IdempotencyClaim::tape(std::string_view bytes) {
  if (finished_ || overflow_) return;
  if (tape_.size() + bytes.size() > owner_.opts_.max_body) {
    overflow_ = true;
    tape_.clear();
    tape_.shrink_to_fit();
    return;
  }
  tape_.append(bytes);
}

net::awaitable<void> IdempotencyClaim::complete_tape() {
  std::string body = std::move(tape_);
  co_await complete(200, "text/event-stream", std::move(body));
}

net::awaitable<void> IdempotencyClaim::abandon() {
  if (finished_) co_return;
  finished_ = true;
  auto r = co_await owner_.kv_.compare_and_delete(record_key_, pending_);
  if (!r) spdlog::warn("Idempotency-Key record not removed (it expires by itself): {}", r.error().message);
}

IdempotencyClaim::~IdempotencyClaim() {
  if (finished_) return;
  storage::Kv& kv = owner_.kv_;
  if (committed_) {
    // A stream that was charged and then ended early (client gone or
    // cancelled): what it sent is its answer.
    std::string record = done_record(200, "text/event-stream", tape_);
    net::co_spawn(owner_.ex_, kv.set(record_key_, std::move(record), owner_.opts_.done_ttl), net::detached);
    return;
  }
  // Nothing was charged: free the key for a retry (only our own record).
  net::co_spawn(owner_.ex_, kv.compare_and_delete(record_key_, pending_), net::detached);
}

}  // namespace alou::gateway
