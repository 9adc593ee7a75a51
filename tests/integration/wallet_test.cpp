// Wallet login end to end in-process: nonce → sign (libsecp256k1 / libsodium
// here, as a wallet would) → verify → token → me / API use → logout; every
// refusal with its status and code, and that a refused attempt spends
// nothing. Sessions over HTTP. Runs on the embedded KV and on Redis.
#include "harness.hpp"

#include "alou/storage/database.hpp"
#include "alou/storage/kv.hpp"
#include "alou/wallet/crypto.hpp"
#include "alou/wallet/jwt.hpp"
#include "alou/wallet/siwe.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <nlohmann/json.hpp>
#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sodium.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>

#include <fstream>
#include <functional>
#include <thread>

namespace alou::itest {
namespace {

using json = nlohmann::json;
using namespace alou::wallet;

json body_json(const Res& r) { return json::parse(r.body(), nullptr, false); }

void expect_error(const Res& r, int status, std::string_view code) {
  EXPECT_EQ(r.result_int(), status) << r.body();
  const json b = body_json(r);
  ASSERT_TRUE(b.is_object() && b.contains("error")) << r.body();
  EXPECT_EQ(b["error"]["code"], code) << r.body();
  EXPECT_FALSE(b["error"]["message"].get<std::string>().empty());
}

// An Ethereum account signing as a wallet does (EIP-191 personal_sign).
struct EthKey {
  std::array<std::uint8_t, 32> secret{};
  std::string address;

  explicit EthKey(std::uint8_t seed) {
    for (std::size_t i = 0; i < 32; ++i) secret[i] = static_cast<std::uint8_t>(seed + i);
    auto* ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    secp256k1_pubkey pub;
    EXPECT_EQ(secp256k1_ec_pubkey_create(ctx, &pub, secret.data()), 1);
    std::uint8_t raw[65];
    std::size_t len = 65;
    secp256k1_ec_pubkey_serialize(ctx, raw, &len, &pub, SECP256K1_EC_UNCOMPRESSED);
    secp256k1_context_destroy(ctx);
    const Hash32 h = keccak256(std::string_view(reinterpret_cast<const char*>(raw + 1), 64));
    address = *eip55_checksum("0x" + to_hex(h.data() + 12, 20));
  }

  Bytes sign_raw(std::string_view message) const {
    auto* ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    const Hash32 digest = eip191_hash(message);
    secp256k1_ecdsa_recoverable_signature rs;
    EXPECT_EQ(secp256k1_ecdsa_sign_recoverable(ctx, &rs, digest.data(), secret.data(), nullptr, nullptr), 1);
    Bytes sig(65);
    int recid = 0;
    secp256k1_ecdsa_recoverable_signature_serialize_compact(ctx, sig.data(), &recid, &rs);
    secp256k1_context_destroy(ctx);
    sig[64] = static_cast<std::uint8_t>(27 + recid);
    return sig;
  }
  std::string sign(std::string_view message) const {
    const Bytes s = sign_raw(message);
    return "0x" + to_hex(s.data(), s.size());
  }
};

struct SolKey {
  Bytes pk = Bytes(crypto_sign_PUBLICKEYBYTES);
  Bytes sk = Bytes(crypto_sign_SECRETKEYBYTES);
  std::string address;
  SolKey() {
    EXPECT_GE(sodium_init(), 0);
    crypto_sign_keypair(pk.data(), sk.data());
    address = base58_encode(pk);
  }
  Bytes sign_raw(std::string_view message) const {
    Bytes sig(crypto_sign_BYTES);
    crypto_sign_detached(sig.data(), nullptr, reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                         sk.data());
    return sig;
  }
};

class Wallet : public AppTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    redis_url_ = redis_url_for(GetParam());
    if (IsSkipped() || HasFailure()) return;
    AppTest::SetUp();
  }
  void configure(Settings& s) override {
    s.storage.redis_url = redis_url_;
    s.wallet.jwt_secret_env = "";  // always the generated <data_dir>/jwt.secret (secret_file() reads it)
    s.wallet.nonce_per_minute = 1'000'000;
    s.wallet.chain_ids = {1, 10};
    s.wallet.solana_chains = {"mainnet", "devnet"};
    s.sessions.max_messages = 3;
  }

  json nonce(const std::string& address, const std::string& chain = "ethereum") {
    const Res r = get("/api/wallet/nonce/" + address + "?chain=" + chain);
    EXPECT_EQ(r.result_int(), 200) << r.body();
    return body_json(r);
  }
  Res verify(const std::string& chain, const std::string& message, const std::string& signature) {
    return request(bhttp::verb::post, "/api/wallet/verify", {{"content-type", "application/json"}},
                   json{{"chain", chain}, {"message", message}, {"signature", signature}}.dump());
  }
  // A message built around a nonce the server issued for `address`.
  SignInMessage issued(const std::string& address) {
    auto m = parse_siwe(nonce(address)["message"].get<std::string>());
    EXPECT_TRUE(m);
    return m ? *m : SignInMessage{};
  }
  std::string login(const EthKey& k) {
    const std::string msg = nonce(k.address)["message"];
    const Res r = verify("ethereum", msg, k.sign(msg));
    EXPECT_EQ(r.result_int(), 200) << r.body();
    return body_json(r)["token"];
  }
  // After a refusal: the nonce is still there, unspent, and still works.
  void expect_nonce_still_usable(const EthKey& k, const SignInMessage& m) {
    SignInMessage fresh = m;
    fresh.scheme.reset();
    fresh.domain = settings_.wallet.domain;
    fresh.uri = settings_.wallet.uri;
    fresh.chain_id = "1";
    fresh.issued_at = format_rfc3339(now_unix_ms());
    fresh.issued_at_ms = 0;
    fresh.expiration_time.reset();
    fresh.not_before.reset();
    const std::string text = format_message(fresh);
    const Res r = verify("ethereum", text, k.sign(text));
    EXPECT_EQ(r.result_int(), 200) << r.body();
  }
  // Rows in `users` for an address: refusals must not create one.
  int user_rows(const std::string& address) {
    auto count = [address](SQLite::Database& c) {
      SQLite::Statement q(c, "SELECT COUNT(*) FROM users WHERE address = ?");
      q.bind(1, address);
      q.executeStep();
      return q.getColumn(0).getInt();
    };
    return app_->db().run_sync(count);
  }
  std::string secret_file() {
    std::ifstream in(std::filesystem::path(settings_.storage.data_dir) / "jwt.secret");
    std::string s;
    std::getline(in, s);
    return s;
  }

  std::string redis_url_;
};

INSTANTIATE_TEST_SUITE_P(Kv, Wallet, ::testing::Values(std::string("embedded"), std::string("redis")),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

TEST_P(Wallet, EthereumLoginMeApiAndLogout) {
  const EthKey k(1);
  const json n = nonce(k.address);
  EXPECT_GE(n["nonce"].get<std::string>().size(), 16u);
  EXPECT_EQ(n["address"], k.address);
  const std::string msg = n["message"];
  EXPECT_NE(msg.find("localhost:8080 wants you to sign in with your Ethereum account:\n" + k.address), std::string::npos);
  EXPECT_NE(msg.find("Nonce: " + n["nonce"].get<std::string>()), std::string::npos);

  const Res v = verify("ethereum", msg, k.sign(msg));
  ASSERT_EQ(v.result_int(), 200) << v.body();
  const json vb = body_json(v);
  EXPECT_EQ(vb["address"], k.address);
  EXPECT_EQ(vb["chain"], "ethereum");
  EXPECT_TRUE(parse_rfc3339(vb["expires_at"].get<std::string>()));
  const std::string token = vb["token"];

  const Res me = get("/api/wallet/me", bearer(token));
  ASSERT_EQ(me.result_int(), 200) << me.body();
  EXPECT_EQ(body_json(me)["address"], k.address);
  EXPECT_EQ(body_json(me)["chain"], "ethereum");
  EXPECT_EQ(body_json(me)["expires_at"], vb["expires_at"]);
  EXPECT_TRUE(parse_rfc3339(body_json(me)["first_seen"].get<std::string>()));

  // A wallet token is a member credential on the rest of the API.
  const Res who = get("/test/whoami", bearer(token));
  ASSERT_EQ(who.result_int(), 200) << who.body();
  EXPECT_EQ(body_json(who)["id"], k.address);
  EXPECT_EQ(body_json(who)["owner"], false);
  expect_error(get("/api/status", bearer(token)), 403, "owner_only");

  const Res out = request(bhttp::verb::post, "/api/wallet/logout", bearer(token));
  ASSERT_EQ(out.result_int(), 200) << out.body();
  expect_error(get("/api/wallet/me", bearer(token)), 401, "invalid_api_key");
  expect_error(get("/test/whoami", bearer(token)), 401, "invalid_api_key");
}

TEST_P(Wallet, LowercaseAddressGetsTheChecksummedMessage) {
  const EthKey k(2);
  std::string lower = k.address;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const json n = nonce(lower);
  EXPECT_EQ(n["address"], k.address);
  const std::string msg = n["message"];
  EXPECT_EQ(verify("ethereum", msg, k.sign(msg)).result_int(), 200);
}

TEST_P(Wallet, SecondLoginKeepsFirstSeen) {
  const EthKey k(3);
  const std::string t1 = login(k);
  const json me1 = body_json(get("/api/wallet/me", bearer(t1)));
  std::this_thread::sleep_for(5ms);
  const std::string t2 = login(k);
  const json me2 = body_json(get("/api/wallet/me", bearer(t2)));
  EXPECT_EQ(me1["first_seen"], me2["first_seen"]);
  EXPECT_GT(me2["last_login"].get<std::string>(), me1["last_login"].get<std::string>());
  EXPECT_NE(t1, t2);
}

TEST_P(Wallet, ReplayIs409) {
  const EthKey k(4);
  const std::string msg = nonce(k.address)["message"];
  const std::string sig = k.sign(msg);
  ASSERT_EQ(verify("ethereum", msg, sig).result_int(), 200);
  expect_error(verify("ethereum", msg, sig), 409, "nonce_used");
  expect_error(verify("ethereum", msg, sig), 409, "nonce_used");
}

TEST_P(Wallet, NonceOfAnotherAddressIs401AndNotSpent) {
  const EthKey a(5), b(6);
  SignInMessage m = issued(b.address);  // b's nonce
  m.address = a.address;                // used by a
  const std::string text = format_message(m);
  expect_error(verify("ethereum", text, a.sign(text)), 401, "nonce_address_mismatch");
  SignInMessage mine = m;
  mine.address = b.address;
  expect_nonce_still_usable(b, mine);
}

TEST_P(Wallet, UnknownNonceIs401) {
  const EthKey k(7);
  SignInMessage m = issued(k.address);
  m.nonce = "neverissued12345678";
  const std::string text = format_message(m);
  expect_error(verify("ethereum", text, k.sign(text)), 401, "nonce_unknown");
}

// The nonce is checked before any signature work: an unknown nonce with a
// signature that is not even well formed is refused for the nonce (no
// recovery attempted), and a bad signature leaves a good nonce usable.
TEST_P(Wallet, TheNonceIsCheckedBeforeTheSignature) {
  const EthKey k(8);
  SignInMessage m = issued(k.address);
  m.nonce = "neverissued87654321";
  const std::string text = format_message(m);
  expect_error(verify("ethereum", text, "0x1234"), 401, "nonce_unknown");
  SignInMessage good = issued(k.address);
  const std::string good_text = format_message(good);
  expect_error(verify("ethereum", good_text, "0x1234"), 400, "invalid_signature");
  expect_nonce_still_usable(k, good);
}

TEST_P(Wallet, WrongDomainUriChainAndTimesAre401AndSpendNothing) {
  const EthKey k(8);
  const std::int64_t now = now_unix_ms();
  struct Case {
    const char* code;
    std::function<void(SignInMessage&)> change;
  };
  const Case cases[] = {
      {"domain_mismatch", [](SignInMessage& m) { m.domain = "evil.example"; }},
      {"domain_mismatch", [](SignInMessage& m) { m.scheme = "https"; }},
      {"uri_mismatch", [](SignInMessage& m) { m.uri = "http://evil.example"; }},
      {"uri_mismatch", [](SignInMessage& m) { m.uri = "http://localhost:80800"; }},
      {"chain_not_allowed", [](SignInMessage& m) { m.chain_id = "5"; }},
      {"message_expired", [now](SignInMessage& m) { m.expiration_time = format_rfc3339(now - 1000); }},
      {"message_not_yet_valid", [now](SignInMessage& m) { m.not_before = format_rfc3339(now + 3'600'000); }},
      {"issued_in_future", [now](SignInMessage& m) { m.issued_at = format_rfc3339(now + 3'600'000); }},
  };
  for (const auto& c : cases) {
    SignInMessage m = issued(k.address);
    c.change(m);
    const std::string text = format_message(m);
    expect_error(verify("ethereum", text, k.sign(text)), 401, c.code);
    if (&c == &cases[0]) {
      EXPECT_EQ(user_rows(k.address), 0);  // before any success
    }
    expect_nonce_still_usable(k, m);
  }
}

TEST_P(Wallet, AllowedSecondChainAndUriBelowTheBaseAreAccepted) {
  const EthKey k(9);
  SignInMessage m = issued(k.address);
  m.chain_id = "10";
  m.uri = settings_.wallet.uri + "/login";
  m.statement.reset();
  const std::string text = format_message(m);
  EXPECT_EQ(verify("ethereum", text, k.sign(text)).result_int(), 200);
}

TEST_P(Wallet, ForgedSignaturesAre401) {
  const EthKey k(10), other(11);
  SignInMessage m = issued(k.address);
  const std::string text = format_message(m);
  expect_error(verify("ethereum", text, other.sign(text)), 401, "signature_mismatch");
  // Tampered: signed one statement, sent another.
  SignInMessage t = m;
  t.statement = "Something else.";
  expect_error(verify("ethereum", format_message(t), k.sign(text)), 401, "signature_mismatch");
  EXPECT_EQ(user_rows(k.address), 0);
  EXPECT_EQ(user_rows(other.address), 0);
  expect_nonce_still_usable(k, m);
  EXPECT_EQ(user_rows(k.address), 1);
}

TEST_P(Wallet, MalformedInputsAre400) {
  const EthKey k(12);
  SignInMessage m = issued(k.address);
  const std::string text = format_message(m);
  const std::string good = k.sign(text);
  expect_error(verify("ethereum", text, "0x" + std::string(130, 'z')), 400, "invalid_signature");
  expect_error(verify("ethereum", text, good.substr(0, good.size() - 2)), 400, "invalid_signature");
  expect_error(verify("ethereum", text, good + "00"), 400, "invalid_signature");
  expect_error(verify("ethereum", text, std::string(100'000, 'a')), 400, "invalid_signature");
  Bytes bad_v = k.sign_raw(text);
  bad_v[64] = 31;
  expect_error(verify("ethereum", text, "0x" + to_hex(bad_v.data(), bad_v.size())), 400, "invalid_signature");
  // High s (EIP-2): n - s with the recovery id flipped verifies mathematically but is refused.
  static constexpr std::uint8_t kOrder[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                              0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48,
                                              0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41};
  Bytes high = k.sign_raw(text);
  int borrow = 0;
  for (int i = 31; i >= 0; --i) {
    const int d = kOrder[i] - high[32 + i] - borrow;
    borrow = d < 0;
    high[32 + i] = static_cast<std::uint8_t>(d + (borrow ? 256 : 0));
  }
  high[64] = high[64] == 27 ? 28 : 27;
  expect_error(verify("ethereum", text, "0x" + to_hex(high.data(), high.size())), 400, "invalid_signature");

  expect_error(verify("ethereum", std::string(100'000, 'x'), good), 400, "invalid_message");
  expect_error(verify("ethereum", text + "\nExtra: 1", good), 400, "invalid_message");
  expect_error(verify("solana", text, good), 400, "invalid_message");
  expect_error(verify("bitcoin", text, good), 400, "invalid_chain");
  expect_error(request(bhttp::verb::post, "/api/wallet/verify", {}, "{not json"), 400, "invalid_json");
  expect_error(request(bhttp::verb::post, "/api/wallet/verify", {}, R"({"chain":"ethereum","message":1})"), 400,
               "invalid_request");
  expect_error(get("/api/wallet/nonce/0x1234"), 400, "invalid_address");
  expect_error(get("/api/wallet/nonce/" + std::string(5000, 'a')), 400, "invalid_address");
  std::string wrong_case = k.address;
  for (auto& c : wrong_case) {
    if (std::isalpha(static_cast<unsigned char>(c)) && c != 'x') {
      c = std::isupper(static_cast<unsigned char>(c)) ? static_cast<char>(std::tolower(c)) : static_cast<char>(std::toupper(c));
      break;
    }
  }
  expect_error(get("/api/wallet/nonce/" + wrong_case), 400, "invalid_address");
  expect_error(get("/api/wallet/nonce/" + k.address + "?chain=dogecoin"), 400, "invalid_chain");
  expect_error(get("/api/wallet/nonce/" + k.address + "?chain=solana"), 400, "invalid_address");
  // None of it spent the nonce or recorded a user.
  EXPECT_EQ(user_rows(k.address), 0);
  EXPECT_EQ(verify("ethereum", text, good).result_int(), 200);
}

TEST_P(Wallet, SolanaLoginWithBase58AndBase64Signatures) {
  const SolKey k;
  for (bool base58 : {true, false}) {
    const json n = nonce(k.address, "solana");
    const std::string msg = n["message"];
    EXPECT_NE(msg.find("wants you to sign in with your Solana account:\n" + k.address), std::string::npos);
    const Bytes sig = k.sign_raw(msg);
    std::string encoded;
    if (base58) {
      encoded = base58_encode(sig);
    } else {
      std::string b64(sodium_base64_ENCODED_LEN(sig.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
      sodium_bin2base64(b64.data(), b64.size(), sig.data(), sig.size(), sodium_base64_VARIANT_ORIGINAL);
      encoded = b64.c_str();
    }
    const Res v = verify("solana", msg, encoded);
    ASSERT_EQ(v.result_int(), 200) << v.body();
    const std::string token = body_json(v)["token"];
    const Res me = get("/api/wallet/me", bearer(token));
    EXPECT_EQ(body_json(me)["address"], k.address);
    EXPECT_EQ(body_json(me)["chain"], "solana");
    expect_error(verify("solana", msg, encoded), 409, "nonce_used");
  }
}

TEST_P(Wallet, SolanaForgeriesAreRefused) {
  const SolKey k, other;
  const std::string msg = nonce(k.address, "solana")["message"];
  expect_error(verify("solana", msg, base58_encode(other.sign_raw(msg))), 401, "signature_mismatch");
  auto m = parse_siws(msg);
  ASSERT_TRUE(m);
  m->domain = "evil.example";
  const std::string evil = format_message(*m);
  expect_error(verify("solana", evil, base58_encode(k.sign_raw(evil))), 401, "domain_mismatch");
  m->domain = settings_.wallet.domain;
  m->chain_id = "testnet";
  const std::string wrong_chain = format_message(*m);
  expect_error(verify("solana", wrong_chain, base58_encode(k.sign_raw(wrong_chain))), 401, "chain_not_allowed");
  expect_error(verify("solana", msg, "not base58 or base64!"), 400, "invalid_signature");
  expect_error(verify("solana", msg, base58_encode(Bytes(63, 1))), 400, "invalid_signature");
  EXPECT_EQ(verify("solana", msg, base58_encode(k.sign_raw(msg))).result_int(), 200);
}

TEST_P(Wallet, ForgedTokensAre401) {
  const EthKey k(13);
  const std::string token = login(k);
  const auto dot1 = token.find('.');
  const auto dot2 = token.rfind('.');
  const std::string none = base64url_encode(R"({"alg":"none","typ":"JWT"})") + token.substr(dot1, dot2 - dot1) + ".";
  expect_error(get("/api/wallet/me", bearer(none)), 401, "invalid_api_key");
  std::string flipped = token;
  flipped[dot2 + 3] = flipped[dot2 + 3] == 'a' ? 'b' : 'a';
  expect_error(get("/api/wallet/me", bearer(flipped)), 401, "invalid_api_key");
  // Properly signed with the server's own secret, but expired.
  Jwt jwt(secret_file(), "alou");
  const std::int64_t now = now_unix_ms() / 1000;
  const std::string expired = jwt.sign({.sub = k.address, .chain = Chain::kEthereum, .iat = now - 100, .exp = now - 1,
                                        .jti = "old", .iss = "alou"});
  expect_error(get("/api/wallet/me", bearer(expired)), 401, "invalid_api_key");
  const std::string fresh = jwt.sign({.sub = k.address, .chain = Chain::kEthereum, .iat = now, .exp = now + 60,
                                      .jti = "fresh", .iss = "alou"});
  EXPECT_EQ(get("/api/wallet/me", bearer(fresh)).result_int(), 200);
  Jwt other(std::string(64, 'x'), "alou");
  const std::string foreign = other.sign({.sub = k.address, .chain = Chain::kEthereum, .iat = now, .exp = now + 60,
                                          .jti = "f", .iss = "alou"});
  expect_error(get("/api/wallet/me", bearer(foreign)), 401, "invalid_api_key");
}

TEST_P(Wallet, MeAndLogoutNeedAWalletToken) {
  const std::string member = create_key(unique_name("member"));
  expect_error(get("/api/wallet/me", bearer(member)), 403, "wallet_token_required");
  expect_error(request(bhttp::verb::post, "/api/wallet/logout", bearer(member)), 403, "wallet_token_required");
  expect_error(get("/api/wallet/me"), 401, "missing_credentials");
}

TEST_P(Wallet, NonceIssuanceIsRateLimitedPerClientIp) {
  app_->stop();
  app_.reset();
  settings_.wallet.nonce_per_minute = 3;
  boot();
  // Redis outlives test runs: start this IP's window from zero.
  boost::asio::thread_pool pool(1);
  auto cleared = boost::asio::co_spawn(pool, app_->kv().del("wallet:nonce-rate:127.0.0.1"), boost::asio::use_future);
  ASSERT_TRUE(cleared.get());
  const EthKey k(14);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(get("/api/wallet/nonce/" + k.address).result_int(), 200);
  const Res r = get("/api/wallet/nonce/" + k.address);
  expect_error(r, 429, "rate_limit_exceeded");
  const std::string retry = header(r, "retry-after");
  ASSERT_FALSE(retry.empty());
  EXPECT_GE(std::stoi(retry), 1);
  EXPECT_LE(std::stoi(retry), 60);
}

TEST_P(Wallet, LoginPageIsServed) {
  const Res page = get("/login");
  ASSERT_EQ(page.result_int(), 200) << page.body();
  EXPECT_EQ(header(page, "content-type"), "text/html; charset=utf-8");
  EXPECT_NE(page.body().find("Sign in with Ethereum"), std::string::npos);
  EXPECT_NE(page.body().find("Sign in with Solana"), std::string::npos);
  EXPECT_FALSE(header(page, "content-security-policy").empty());
  const Res js = get("/login/login.js");
  ASSERT_EQ(js.result_int(), 200);
  EXPECT_EQ(header(js, "content-type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(get("/login/login.css").result_int(), 200);
  expect_error(get("/login/..%2Falou.db"), 404, "not_found");
  expect_error(get("/login/jwt.secret"), 404, "not_found");
}

// ---------------------------------------------------------------- sessions

TEST_P(Wallet, SessionsCreateReadDeleteOwnerScoped) {
  const std::string alice = create_key(unique_name("alice"));
  const std::string bob = create_key(unique_name("bob"));
  const Res c = request(bhttp::verb::post, "/api/session", bearer(alice), R"({"title":"first chat"})");
  ASSERT_EQ(c.result_int(), 201) << c.body();
  const json cb = body_json(c);
  const std::string id = cb["id"];
  EXPECT_TRUE(parse_rfc3339(cb["created_at"].get<std::string>()));
  EXPECT_GT(*parse_rfc3339(cb["expires_at"].get<std::string>()), *parse_rfc3339(cb["created_at"].get<std::string>()));

  const Res r = get("/api/session/" + id, bearer(alice));
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(body_json(r)["title"], "first chat");
  EXPECT_TRUE(body_json(r)["messages"].is_array());

  expect_error(get("/api/session/" + id, bearer(bob)), 404, "session_not_found");
  expect_error(request(bhttp::verb::delete_, "/api/session/" + id, bearer(bob)), 404, "session_not_found");
  const std::string wallet_token = login(EthKey(15));
  expect_error(get("/api/session/" + id, bearer(wallet_token)), 404, "session_not_found");
  EXPECT_EQ(get("/api/session/" + id, bearer(alice)).result_int(), 200);  // bob's delete did nothing

  EXPECT_EQ(request(bhttp::verb::delete_, "/api/session/" + id, bearer(alice)).result_int(), 200);
  expect_error(get("/api/session/" + id, bearer(alice)), 404, "session_not_found");
  expect_error(get("/api/session/" + id), 401, "missing_credentials");
}

TEST_P(Wallet, WalletUsersOwnSessionsToo) {
  const std::string token = login(EthKey(16));
  const Res c = request(bhttp::verb::post, "/api/session", bearer(token));
  ASSERT_EQ(c.result_int(), 201) << c.body();
  const std::string id = body_json(c)["id"];
  EXPECT_EQ(get("/api/session/" + id, bearer(token)).result_int(), 200);
  const std::string other = login(EthKey(17));
  expect_error(get("/api/session/" + id, bearer(other)), 404, "session_not_found");
}

TEST_P(Wallet, SessionBadBodiesAre400) {
  const std::string key = create_key(unique_name("s"));
  expect_error(request(bhttp::verb::post, "/api/session", bearer(key), "[1]"), 400, "invalid_json");
  expect_error(request(bhttp::verb::post, "/api/session", bearer(key), R"({"title":5})"), 400, "invalid_request");
  expect_error(request(bhttp::verb::post, "/api/session", bearer(key), json{{"title", std::string(201, 't')}}.dump()),
               400, "invalid_request");
  expect_error(get("/api/session/nope", bearer(key)), 404, "session_not_found");
}

// ---------------------------------------------------------------- KV down

// Redis unreachable: every wallet and session path answers 503
// kv_unavailable, and wallet tokens fail closed (their revocation cannot be
// checked).
class WalletKvDown : public AppTest {
 protected:
  void configure(Settings& s) override {
    s.storage.redis_url = "redis://127.0.0.1:1";
    s.storage.redis_timeout_ms = 300;
    s.wallet.jwt_secret_env = "";
  }
};

TEST_F(WalletKvDown, NonceVerifySessionsAre503AndTokensFailClosed) {
  const EthKey k(20);
  expect_error(get("/api/wallet/nonce/" + k.address), 503, "kv_unavailable");

  SignInMessage m;
  m.domain = settings_.wallet.domain;
  m.address = k.address;
  m.uri = settings_.wallet.uri;
  m.chain_id = "1";
  m.nonce = "abcdefgh12345678";
  m.issued_at = format_rfc3339(now_unix_ms());
  const std::string text = format_message(m);
  const Res v = request(bhttp::verb::post, "/api/wallet/verify", {{"content-type", "application/json"}},
                        json{{"chain", "ethereum"}, {"message", text}, {"signature", k.sign(text)}}.dump());
  expect_error(v, 503, "kv_unavailable");

  std::ifstream in(std::filesystem::path(settings_.storage.data_dir) / "jwt.secret");
  std::string secret;
  std::getline(in, secret);
  const std::int64_t now = now_unix_ms() / 1000;
  const std::string token = Jwt(secret, "alou").sign(
      {.sub = k.address, .chain = Chain::kEthereum, .iat = now, .exp = now + 60, .jti = "j", .iss = "alou"});
  expect_error(get("/test/whoami", bearer(token)), 401, "invalid_api_key");

  const std::string key = create_key(unique_name("kvdown"));
  expect_error(request(bhttp::verb::post, "/api/session", bearer(key)), 503, "kv_unavailable");
  expect_error(get("/api/session/sess_aaaaaaaaaaaaaaaaaaaaaaaa", bearer(key)), 503, "kv_unavailable");
}

}  // namespace
}  // namespace alou::itest
