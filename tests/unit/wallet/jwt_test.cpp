#include "alou/wallet/jwt.hpp"

#include "alou/wallet/crypto.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

namespace alou::wallet {
namespace {

constexpr std::int64_t kNow = 1'700'000'000;
const std::string kSecret(40, 'k');

TokenClaims claims() {
  return {.sub = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23", .chain = Chain::kEthereum, .iat = kNow,
          .exp = kNow + 3600, .jti = "jti123", .iss = "alou"};
}

std::string b64(std::string_view s) { return base64url_encode(s); }

std::string sign_raw(const std::string& header, const std::string& payload, const std::string& secret) {
  const std::string input = b64(header) + "." + b64(payload);
  const Hash32 mac = hmac_sha256(secret, input);
  return input + "." + base64url_encode(std::string_view(reinterpret_cast<const char*>(mac.data()), mac.size()));
}

std::string payload() {
  return nlohmann::json{{"sub", "0xabc"}, {"chain", "ethereum"}, {"iat", kNow}, {"exp", kNow + 60}, {"jti", "j"},
                        {"iss", "alou"}}
      .dump();
}

void expect_invalid(const Result<TokenClaims>& r, std::string_view code = "invalid_token") {
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status, 401);
  EXPECT_EQ(r.error().code, code);
}

TEST(Jwt, SignsAndVerifies) {
  Jwt jwt(kSecret, "alou");
  const std::string token = jwt.sign(claims());
  EXPECT_EQ(token.substr(0, 3), "eyJ");
  auto c = jwt.verify(token, kNow + 10);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->sub, claims().sub);
  EXPECT_EQ(c->chain, Chain::kEthereum);
  EXPECT_EQ(c->exp, kNow + 3600);
  EXPECT_EQ(c->jti, "jti123");
  const auto header = base64url_decode(token.substr(0, token.find('.')));
  EXPECT_EQ(nlohmann::json::parse(*header)["alg"], "HS256");
}

TEST(Jwt, RefusesAlgNone) {
  Jwt jwt(kSecret, "alou");
  expect_invalid(jwt.verify(b64(R"({"alg":"none","typ":"JWT"})") + "." + b64(payload()) + ".", kNow));
  expect_invalid(jwt.verify(b64(R"({"alg":"none"})") + "." + b64(payload()) + "." + b64("x"), kNow));
  // Case games are not HS256 either.
  expect_invalid(jwt.verify(sign_raw(R"({"alg":"hs256"})", payload(), kSecret), kNow));
}

TEST(Jwt, RefusesOtherAlgorithmsEvenWithAValidMac) {
  Jwt jwt(kSecret, "alou");
  for (const char* alg : {"HS384", "HS512", "RS256", "ES256", "EdDSA"}) {
    expect_invalid(jwt.verify(sign_raw(std::string(R"({"alg":")") + alg + R"("})", payload(), kSecret), kNow));
  }
  EXPECT_TRUE(jwt.verify(sign_raw(R"({"alg":"HS256"})", payload(), kSecret), kNow));
}

TEST(Jwt, RefusesWrongSecretAndTampering) {
  Jwt jwt(kSecret, "alou");
  expect_invalid(jwt.verify(sign_raw(R"({"alg":"HS256"})", payload(), std::string(40, 'x')), kNow));
  std::string token = jwt.sign(claims());
  const auto dot1 = token.find('.');
  const auto dot2 = token.rfind('.');
  // Payload swapped for another sub, signature kept.
  std::string forged = token.substr(0, dot1 + 1) +
                       b64(R"({"sub":"0xevil","chain":"ethereum","iat":1,"exp":9999999999,"jti":"j","iss":"alou"})") +
                       token.substr(dot2);
  expect_invalid(jwt.verify(forged, kNow));
  std::string flipped = token;
  flipped.back() = flipped.back() == 'A' ? 'B' : 'A';
  expect_invalid(jwt.verify(flipped, kNow));
  expect_invalid(jwt.verify(token.substr(0, dot2), kNow));
  expect_invalid(jwt.verify(token + ".x", kNow));
  expect_invalid(jwt.verify("not a token", kNow));
  expect_invalid(jwt.verify("", kNow));
  expect_invalid(jwt.verify("..", kNow));
}

TEST(Jwt, RefusesExpired) {
  Jwt jwt(kSecret, "alou");
  const std::string token = jwt.sign(claims());
  expect_invalid(jwt.verify(token, kNow + 3600), "token_expired");
  expect_invalid(jwt.verify(token, kNow + 7200), "token_expired");
}

TEST(Jwt, RefusesWrongIssuerAndMissingClaims) {
  Jwt jwt(kSecret, "alou");
  Jwt other(kSecret, "someone-else");
  expect_invalid(other.verify(jwt.sign(claims()), kNow));
  expect_invalid(jwt.verify(sign_raw(R"({"alg":"HS256"})", R"({"sub":"0xabc","exp":9999999999})", kSecret), kNow));
  expect_invalid(jwt.verify(sign_raw(R"({"alg":"HS256"})", "[1,2]", kSecret), kNow));
  expect_invalid(jwt.verify(sign_raw(R"({"alg":"HS256","crit":["b64"]})", payload(), kSecret), kNow));
}

class JwtSecret : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("alou-jwt-" + std::to_string(::getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

std::optional<std::string> no_env(const char*) { return std::nullopt; }
std::optional<std::string> short_env(const char*) { return std::string("short"); }
std::optional<std::string> good_env(const char*) { return std::string(48, 's'); }

TEST_F(JwtSecret, GeneratedOnceWithMode0600) {
  auto a = load_jwt_secret("ALOU_JWT_SECRET", dir_, &no_env);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->size(), 64u);
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "jwt.secret").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto b = load_jwt_secret("ALOU_JWT_SECRET", dir_, &no_env);
  ASSERT_TRUE(b);
  EXPECT_EQ(*a, *b);
}

TEST_F(JwtSecret, EnvironmentWinsAndMustBeLongEnough) {
  auto a = load_jwt_secret("ALOU_JWT_SECRET", dir_, &good_env);
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, std::string(48, 's'));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "jwt.secret"));
  auto b = load_jwt_secret("ALOU_JWT_SECRET", dir_, &short_env);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, "config_invalid");
}

TEST_F(JwtSecret, RefusesAFileOthersCanRead) {
  ASSERT_TRUE(load_jwt_secret("", dir_, &no_env));
  std::filesystem::permissions(dir_ / "jwt.secret", std::filesystem::perms::others_read,
                               std::filesystem::perm_options::add);
  auto r = load_jwt_secret("", dir_, &no_env);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "config_invalid");
}

}  // namespace
}  // namespace alou::wallet
