#include "alou/wallet/wallet.hpp"

#include "alou/auth/filters.hpp"
#include "alou/core/blocking_pool.hpp"
#include "alou/core/log.hpp"
#include "alou/core/paths.hpp"
#include "alou/core/random.hpp"
#include "alou/http/exchange.hpp"
#include "alou/storage/database.hpp"
#include "alou/storage/kv.hpp"
#include "alou/wallet/crypto.hpp"
#include "alou/wallet/jwt.hpp"
#include "alou/wallet/siwe.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <boost/beast/http/field.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <fstream>
#include <map>
#include <sstream>

namespace alou::wallet {
namespace {

using json = nlohmann::json;
using Ms = std::chrono::milliseconds;
namespace net = boost::asio;

constexpr std::string_view kStatement = "Sign in to Alou.";
constexpr std::size_t kNonceLength = 24;

// KV keys (several instances share them on Redis).
std::string nonce_key(std::string_view nonce) { return "wallet:nonce:" + std::string(nonce); }
std::string spent_key(std::string_view nonce) { return "wallet:nonce-spent:" + std::string(nonce); }
std::string revoked_key(std::string_view jti) { return "wallet:revoked:" + std::string(jti); }
std::string rate_key(std::string_view ip) { return "wallet:nonce-rate:" + std::string(ip); }

// The address in the form it is signed and stored: EIP-55 for Ethereum (any
// input case accepted), the canonical base58 key for Solana.
Result<std::string> canonical_address(Chain chain, std::string_view address) {
  if (chain == Chain::kEthereum) {
    auto sum = eip55_checksum(address);
    if (!sum) return Error::bad_request("an Ethereum address is 0x followed by 40 hex digits", "invalid_address");
    const bool one_case = std::none_of(address.begin() + 2, address.end(), [](char c) { return c >= 'A' && c <= 'F'; }) ||
                          std::none_of(address.begin() + 2, address.end(), [](char c) { return c >= 'a' && c <= 'f'; });
    if (!one_case && *sum != address) return Error::bad_request("address has a wrong EIP-55 checksum", "invalid_address");
    return *sum;
  }
  const auto key = address.size() <= 64 ? base58_decode(address) : std::nullopt;
  if (!key || key->size() != 32 || base58_encode(*key) != address) {
    return Error::bad_request("a Solana address is a base58 Ed25519 public key (32 bytes)", "invalid_address");
  }
  return std::string(address);
}

std::string origin_scheme(const std::string& uri) {
  const auto colon = uri.find("://");
  return colon == std::string::npos ? std::string() : uri.substr(0, colon);
}

// URI is wallet.uri itself or something under it (a path, query or fragment).
bool uri_matches(std::string_view uri, std::string_view base) {
  if (uri == base) return true;
  if (uri.size() <= base.size() || uri.substr(0, base.size()) != base) return false;
  const char next = uri[base.size()];
  return base.back() == '/' || next == '/' || next == '?' || next == '#';
}

struct UserRow {
  std::string address;
  std::string chain;
  std::int64_t first_seen_ms = 0;
  std::int64_t last_login_ms = 0;
};

class JwtResolver final : public auth::CredentialResolver {
 public:
  JwtResolver(std::shared_ptr<const Jwt> jwt, storage::Kv& kv, Clock now) : jwt_(std::move(jwt)), kv_(kv), now_(std::move(now)) {}

  net::awaitable<std::optional<Principal>> resolve(std::string_view credential) override {
    // API keys and anything else that is not a JWS skip the work below.
    if (credential.substr(0, 3) != "eyJ" || std::count(credential.begin(), credential.end(), '.') != 2) {
      co_return std::nullopt;
    }
    auto claims = jwt_->verify(credential, now_() / 1000);
    if (!claims) co_return std::nullopt;
    // Fail closed: a token whose revocation cannot be checked is refused.
    std::string key = revoked_key(claims->jti);
    auto revoked = co_await kv_.get(std::move(key));
    if (!revoked || revoked->has_value()) co_return std::nullopt;
    Principal p;
    p.kind = Principal::Kind::kWallet;
    p.id = claims->sub;
    p.name = claims->sub;
    p.role = Role::kMember;
    co_return p;
  }

 private:
  std::shared_ptr<const Jwt> jwt_;
  storage::Kv& kv_;
  Clock now_;
};

class ServiceImpl final : public Service {
 public:
  ServiceImpl(const Settings& settings, storage::Database& db, storage::Kv& kv, Clock now, std::string secret,
              std::map<std::string, std::pair<std::string, std::string>> pages, BlockingPool* crypto)
      : crypto_(crypto),
        ws_(settings.wallet),
        db_(db),
        kv_(kv),
        now_(std::move(now)),
        jwt_(std::make_shared<const Jwt>(std::move(secret), "alou")),
        pages_(std::move(pages)) {}

  void add_routes(http::Router& router) override {
    auto self = this;
    const http::RouteOptions pub{.access = http::Access::kPublic};
    router.get("/api/wallet/nonce/{address}",
               [self](http::Exchange& ex) { return self->nonce(ex); }, pub);
    router.post("/api/wallet/verify", [self](http::Exchange& ex) { return self->verify(ex); }, pub);
    router.get("/api/wallet/me", [self](http::Exchange& ex) { return self->me(ex); });
    router.post("/api/wallet/logout", [self](http::Exchange& ex) { return self->logout(ex); });
    router.get("/login", [self](http::Exchange& ex) { return self->page(ex, "login.html"); }, pub);
    router.get("/login/{file}", [self](http::Exchange& ex) { return self->page(ex, std::string(ex.param("file"))); },
               pub);
  }

  std::shared_ptr<auth::CredentialResolver> resolver() override {
    return std::make_shared<JwtResolver>(jwt_, kv_, now_);
  }

 private:
  BlockingPool* crypto_;  // signature checks off the io threads (null: inline)
  // GET /api/wallet/nonce/{address}?chain=ethereum|solana
  net::awaitable<http::Response> nonce(http::Exchange& ex) {
    const auto chain_param = ex.query_param("chain").value_or("ethereum");
    const auto chain = parse_chain(chain_param);
    if (!chain) co_return ex.error(Error::bad_request("chain must be ethereum or solana", "invalid_chain"));
    if (*chain == Chain::kEthereum && ws_.chain_ids.empty()) {
      co_return ex.error(Error::bad_request("Ethereum sign-in is disabled (wallet.chain_ids is empty)", "invalid_chain"));
    }
    if (*chain == Chain::kSolana && ws_.solana_chains.empty()) {
      co_return ex.error(Error::bad_request("Solana sign-in is disabled (wallet.solana_chains is empty)", "invalid_chain"));
    }
    auto address = canonical_address(*chain, ex.param("address"));
    if (!address) co_return ex.error(address.error());

    auto refused = co_await rate_limit(ex);
    if (refused) co_return std::move(*refused);

    const std::int64_t now = now_();
    SignInMessage m;
    m.chain = *chain;
    m.domain = ws_.domain;
    m.address = *address;
    m.statement = std::string(kStatement);
    m.uri = ws_.uri;
    m.chain_id = *chain == Chain::kEthereum ? std::to_string(ws_.chain_ids.front()) : ws_.solana_chains.front();
    m.nonce = random_alnum(kNonceLength);
    m.issued_at = format_rfc3339(now);
    const std::int64_t expires = now + std::int64_t{ws_.nonce_ttl_s} * 1000;
    m.expiration_time = format_rfc3339(expires);

    std::string key = nonce_key(m.nonce);
    std::string binding = std::string(chain_name(*chain)) + "|" + *address;
    auto stored = co_await kv_.set(std::move(key), std::move(binding), Ms(std::int64_t{ws_.nonce_ttl_s} * 1000));
    if (!stored) co_return ex.error(stored.error());
    const json body = {{"nonce", m.nonce},
                       {"message", format_message(m)},
                       {"issued_at", m.issued_at},
                       {"expires_at", *m.expiration_time},
                       {"address", *address},
                       {"chain", chain_name(*chain)}};
    co_return ex.json(http::Status::ok, body.dump());
  }

  // A fixed one-minute window per client IP bounds the nonces anyone can
  // park in the KV: 429 with Retry-After beyond wallet.nonce_per_minute.
  net::awaitable<std::optional<http::Response>> rate_limit(http::Exchange& ex) {
    const std::string counter = rate_key(ex.remote().address().to_string());
    auto count = co_await kv_.incr(counter, 1, Ms(60'000));
    if (!count) co_return ex.error(count.error());
    if (*count <= static_cast<std::int64_t>(ws_.nonce_per_minute)) co_return std::nullopt;
    auto left = co_await kv_.ttl(counter);
    std::int64_t retry_s = 60;
    if (left && *left && left->value().count() > 0) retry_s = (left->value().count() + 999) / 1000;
    auto res = ex.error(Error{429, "rate_limit_exceeded",
                              "too many sign-in nonces from your IP address; retry in " + std::to_string(retry_s) + " s"});
    res.set(http::bhttp::field::retry_after, std::to_string(retry_s));
    co_return res;
  }

  // The checks of a parsed message against configuration and the clock.
  std::optional<Error> check_message(const SignInMessage& m, std::int64_t now) const {
    if (m.domain != ws_.domain || (m.scheme && *m.scheme != origin_scheme(ws_.uri))) {
      return Error::unauthorized("message domain \"" + (m.scheme ? *m.scheme + "://" : "") + m.domain +
                                     "\" is not this service (" + ws_.domain + ")",
                                 "domain_mismatch");
    }
    if (!uri_matches(m.uri, ws_.uri)) {
      return Error::unauthorized("message URI \"" + m.uri + "\" is not under " + ws_.uri, "uri_mismatch");
    }
    bool chain_ok = false;
    if (m.chain == Chain::kEthereum) {
      std::uint64_t id = 0;
      const auto [p, ec] = std::from_chars(m.chain_id.data(), m.chain_id.data() + m.chain_id.size(), id);
      chain_ok = ec == std::errc{} && p == m.chain_id.data() + m.chain_id.size() &&
                 std::find(ws_.chain_ids.begin(), ws_.chain_ids.end(), id) != ws_.chain_ids.end();
    } else {
      std::string_view id = m.chain_id;
      if (id.substr(0, 7) == "solana:") id.remove_prefix(7);
      chain_ok = std::find(ws_.solana_chains.begin(), ws_.solana_chains.end(), id) != ws_.solana_chains.end();
    }
    if (!chain_ok) return Error::unauthorized("chain id " + m.chain_id + " is not accepted here", "chain_not_allowed");
    const std::int64_t skew = std::int64_t{ws_.clock_skew_s} * 1000;
    if (m.issued_at_ms > now + skew) return Error::unauthorized("message Issued At is in the future", "issued_in_future");
    if (m.expiration_ms && *m.expiration_ms <= now) return Error::unauthorized("message has expired", "message_expired");
    if (m.not_before_ms && *m.not_before_ms > now + skew) {
      return Error::unauthorized("message is not valid yet (Not Before)", "message_not_yet_valid");
    }
    return std::nullopt;
  }

  static std::optional<Error> check_signature(const SignInMessage& m, const std::string& text, std::string_view sig) {
    if (sig.size() > 512) return Error::bad_request("signature too long", "invalid_signature");
    if (m.chain == Chain::kEthereum) {
      if (sig.substr(0, 2) == "0x") sig.remove_prefix(2);
      const auto raw = from_hex(sig);
      if (!raw || raw->size() != 65) {
        return Error::bad_request("an Ethereum signature is 0x followed by 130 hex digits", "invalid_signature");
      }
      const auto rec = ecrecover(eip191_hash(text), *raw);
      if (!rec.address) {
        switch (rec.error) {
          case RecoverError::kBadRecoveryId:
            return Error::bad_request("signature v must be 27, 28, 0 or 1", "invalid_signature");
          case RecoverError::kHighS:
            return Error::bad_request("signature s is not canonical (high s, EIP-2)", "invalid_signature");
          default: return Error::unauthorized("signature does not verify", "signature_mismatch");
        }
      }
      if (*rec.address != m.address) return Error::unauthorized("signature is not by " + m.address, "signature_mismatch");
      return std::nullopt;
    }
    auto raw = base58_decode(sig);
    if (!raw || raw->size() != 64) raw = base64_decode(sig);
    if (!raw || raw->size() != 64) {
      return Error::bad_request("a Solana signature is 64 bytes in base58 or base64", "invalid_signature");
    }
    if (!ed25519_verify(*base58_decode(m.address), *raw, text)) {
      return Error::unauthorized("signature is not by " + m.address, "signature_mismatch");
    }
    return std::nullopt;
  }

  // The nonce was issued for this address and is not spent yet (read only:
  // a bad signature must not burn someone else's nonce).
  net::awaitable<std::optional<Error>> check_nonce(const SignInMessage& m) {
    const std::string key = nonce_key(m.nonce);
    auto bound = co_await kv_.get(key);  // key is a named local (GCC 12: no temporaries in co_await)
    if (!bound) co_return bound.error();
    if (!bound->has_value()) {
      std::string marker = spent_key(m.nonce);
      auto spent = co_await kv_.get(std::move(marker));
      if (!spent) co_return spent.error();
      if (spent->has_value()) co_return Error::conflict("this nonce was already used; request a new one", "nonce_used");
      co_return Error::unauthorized("unknown or expired nonce; request a new one", "nonce_unknown");
    }
    if (**bound != std::string(chain_name(m.chain)) + "|" + m.address) {
      co_return Error::unauthorized("this nonce was issued for another address", "nonce_address_mismatch");
    }
    co_return std::nullopt;
  }

  // The signature, off the io threads when there is a pool for it.
  net::awaitable<std::optional<Error>> verify_signature(const SignInMessage& m, const std::string& text,
                                                        const std::string& sig) {
    if (!crypto_) co_return check_signature(m, text, sig);
    auto work = [&m, &text, &sig] { return check_signature(m, text, sig); };
    co_return co_await crypto_->run(std::move(work));
  }

  // Single use, atomically: SET NX of the spent marker decides the one winner.
  net::awaitable<std::optional<Error>> consume_nonce(const SignInMessage& m) {
    if (auto e = co_await check_nonce(m)) co_return e;
    const std::string key = nonce_key(m.nonce);
    const Ms ttl(std::int64_t{ws_.nonce_ttl_s} * 1000);
    std::string marker = spent_key(m.nonce);
    std::string one = "1";
    auto won = co_await kv_.set_if_absent(std::move(marker), std::move(one), ttl);
    if (!won) co_return won.error();
    if (!*won) co_return Error::conflict("this nonce was already used; request a new one", "nonce_used");
    auto removed = co_await kv_.del(key);
    if (!removed) spdlog::warn("wallet: nonce spent but not deleted: {}", removed.error().message);
    co_return std::nullopt;
  }

  // POST /api/wallet/verify {chain, message, signature}
  net::awaitable<http::Response> verify(http::Exchange& ex) {
    const json body = json::parse(ex.request().body(), nullptr, false);
    if (!body.is_object()) co_return ex.error(Error::bad_request("body must be a JSON object", "invalid_json"));
    auto field = [&](const char* k) -> const std::string* {
      auto it = body.find(k);
      return it != body.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
    };
    const auto* chain_s = field("chain");
    const auto* text = field("message");
    const auto* sig = field("signature");
    if (!chain_s || !text || !sig) {
      co_return ex.error(Error::bad_request("chain, message and signature are required strings", "invalid_request"));
    }
    const auto chain = parse_chain(*chain_s);
    if (!chain) co_return ex.error(Error::bad_request("chain must be ethereum or solana", "invalid_chain"));
    auto parsed = *chain == Chain::kEthereum ? parse_siwe(*text) : parse_siws(*text);
    if (!parsed) co_return ex.error(parsed.error());
    const std::int64_t now = now_();
    if (auto e = check_message(*parsed, now)) co_return ex.error(*e);
    // The cheap checks first: a message whose nonce is unknown, spent or
    // someone else's costs no signature recovery.
    if (auto e = co_await check_nonce(*parsed)) co_return ex.error(*e);
    if (auto e = co_await verify_signature(*parsed, *text, *sig)) co_return ex.error(*e);
    auto used = co_await consume_nonce(*parsed);
    if (used) co_return ex.error(*used);

    auto user = co_await record_login(parsed->address, *chain, now);
    if (!user) co_return ex.error(user.error());
    TokenClaims claims{.sub = parsed->address,
                       .chain = *chain,
                       .iat = now / 1000,
                       .exp = now / 1000 + ws_.token_ttl_s,
                       .jti = random_alnum(24),
                       .iss = jwt_->issuer()};
    const json out = {{"token", jwt_->sign(claims)},
                      {"address", parsed->address},
                      {"chain", chain_name(*chain)},
                      {"expires_at", format_rfc3339(claims.exp * 1000)}};
    co_return ex.json(http::Status::ok, out.dump());
  }

  // The bearer wallet token of a request the auth filter already accepted.
  Result<TokenClaims> bearer_claims(http::Exchange& ex) const {
    if (!ex.principal || ex.principal->kind != Principal::Kind::kWallet) {
      return Error::forbidden("this endpoint needs a wallet token (sign in at /login)", "wallet_token_required");
    }
    std::string_view h = ex.request()[http::bhttp::field::authorization];
    const auto sp = h.find(' ');
    h = sp == std::string_view::npos ? std::string_view{} : h.substr(sp + 1);
    while (!h.empty() && h.front() == ' ') h.remove_prefix(1);
    while (!h.empty() && h.back() == ' ') h.remove_suffix(1);
    return jwt_->verify(h, now_() / 1000);
  }

  net::awaitable<http::Response> me(http::Exchange& ex) {
    auto claims = bearer_claims(ex);
    if (!claims) co_return ex.error(claims.error());
    auto user = co_await find_user(claims->sub);
    if (!user) co_return ex.error(user.error());
    const json out = {{"address", user->address},
                      {"chain", user->chain},
                      {"first_seen", format_rfc3339(user->first_seen_ms)},
                      {"last_login", format_rfc3339(user->last_login_ms)},
                      {"expires_at", format_rfc3339(claims->exp * 1000)}};
    co_return ex.json(http::Status::ok, out.dump());
  }

  net::awaitable<http::Response> logout(http::Exchange& ex) {
    auto claims = bearer_claims(ex);
    if (!claims) co_return ex.error(claims.error());
    const std::int64_t left_ms = claims->exp * 1000 - now_();
    std::string key = revoked_key(claims->jti);
    std::string one = "1";
    auto r = co_await kv_.set(std::move(key), std::move(one), Ms(std::max<std::int64_t>(left_ms, 1000)));
    if (!r) co_return ex.error(r.error());
    co_return ex.json(http::Status::ok, json{{"revoked", true}}.dump());
  }

  // `name` by value: the coroutine starts after the caller's temporaries are gone.
  net::awaitable<http::Response> page(http::Exchange& ex, std::string name) {
    auto it = pages_.find(name);
    if (it == pages_.end()) co_return ex.error(Error::not_found("no such page: /login/" + name, "not_found"));
    http::Response res{http::Status::ok, ex.request().version()};
    res.set(http::bhttp::field::content_type, it->second.first);
    res.set(http::bhttp::field::cache_control, "no-cache");
    res.set("x-content-type-options", "nosniff");
    if (name == "login.html") {
      res.set("content-security-policy",
              "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
              "frame-ancestors 'none'");
      res.set("x-frame-options", "DENY");
    }
    res.body() = it->second.second;
    co_return res;
  }

  // SQL stays here: plain statements PostgreSQL accepts too (ON CONFLICT upsert).
  net::awaitable<Result<UserRow>> record_login(std::string address, Chain chain, std::int64_t now) {
    std::string chain_s = chain_name(chain);
    auto work = [address, chain_s, now](SQLite::Database& c) -> UserRow {
      SQLite::Statement up(c,
                           "INSERT INTO users (address, chain, first_seen_ms, last_login_ms, logins) VALUES (?, ?, ?, ?, 1) "
                           "ON CONFLICT (address) DO UPDATE SET last_login_ms = excluded.last_login_ms, "
                           "logins = users.logins + 1");
      up.bind(1, address);
      up.bind(2, chain_s);
      up.bind(3, static_cast<std::int64_t>(now));
      up.bind(4, static_cast<std::int64_t>(now));
      up.exec();
      return UserRow{address, chain_s, now, now};
    };
    std::optional<UserRow> row;
    try {
      row = co_await db_.run(std::move(work));
    } catch (const std::exception& e) {
      spdlog::error("wallet: recording a login failed: {}", e.what());
      co_return Error::internal("could not record the login");
    }
    co_return *row;
  }

  net::awaitable<Result<UserRow>> find_user(std::string address) {
    auto work = [address](SQLite::Database& c) -> std::optional<UserRow> {
      SQLite::Statement q(c, "SELECT address, chain, first_seen_ms, last_login_ms FROM users WHERE address = ?");
      q.bind(1, address);
      if (!q.executeStep()) return std::nullopt;
      return UserRow{q.getColumn(0).getString(), q.getColumn(1).getString(), q.getColumn(2).getInt64(),
                     q.getColumn(3).getInt64()};
    };
    std::optional<UserRow> row;
    try {
      row = co_await db_.run(std::move(work));
    } catch (const std::exception& e) {
      spdlog::error("wallet: reading a user failed: {}", e.what());
      co_return Error::internal("could not read the user");
    }
    if (!row) co_return Error::not_found("no user " + address, "user_not_found");
    co_return *row;
  }

  const WalletSettings ws_;
  storage::Database& db_;
  storage::Kv& kv_;
  Clock now_;
  std::shared_ptr<const Jwt> jwt_;
  std::map<std::string, std::pair<std::string, std::string>> pages_;  // file -> (content type, body)
};

// Reads the login page's files once at start (a restart picks up edits).
std::map<std::string, std::pair<std::string, std::string>> load_pages(const std::string& web_dir) {
  // Relative: from the working directory, else next to the binary.
  const std::filesystem::path dir = find_resource_dir(web_dir);
  const std::pair<const char*, const char*> files[] = {
      {"login.html", "text/html; charset=utf-8"},
      {"login.css", "text/css; charset=utf-8"},
      {"login.js", "text/javascript; charset=utf-8"},
  };
  std::map<std::string, std::pair<std::string, std::string>> pages;
  for (const auto& [name, type] : files) {
    std::ifstream in(dir / name, std::ios::binary);
    if (!in) continue;
    std::stringstream buf;
    buf << in.rdbuf();
    pages[name] = {type, buf.str()};
  }
  if (pages.count("login.html") == 0) {
    spdlog::warn("wallet: no login page in {} (server.web_dir): GET /login answers 404", web_dir);
  }
  return pages;
}

}  // namespace

std::int64_t system_now_ms() { return now_unix_ms(); }

Result<std::unique_ptr<Service>> Service::create(const Settings& settings, storage::Database& db, storage::Kv& kv,
                                                 Clock now, BlockingPool* crypto) {
  const auto& w = settings.wallet;
  if (w.domain.empty() || w.uri.empty()) return Error::bad_request("wallet.domain and wallet.uri must be set", "config_invalid");
  SignInMessage probe;
  probe.domain = w.domain;
  probe.address = "0x0000000000000000000000000000000000000000";
  probe.uri = w.uri;
  probe.chain_id = "1";
  probe.nonce = "abcdefgh";
  probe.issued_at = "2024-01-01T00:00:00.000Z";
  if (auto p = parse_siwe(format_message(probe)); !p) {
    return Error::bad_request("wallet.domain or wallet.uri cannot appear in a SIWE message: " + p.error().message,
                              "config_invalid");
  }
  for (const auto& c : w.solana_chains) {
    if (c.empty() || c.size() > 64) return Error::bad_request("wallet.solana_chains: bad entry", "config_invalid");
  }
  auto secret = load_jwt_secret(w.jwt_secret_env, settings.storage.data_dir);
  if (!secret) return secret.error();
  log::add_secret(*secret);
  return std::unique_ptr<Service>(
      new ServiceImpl(settings, db, kv, std::move(now), std::move(*secret), load_pages(settings.server.web_dir), crypto));
}

}  // namespace alou::wallet
