#include "alou/wallet/jwt.hpp"

#include "alou/core/random.hpp"
#include "alou/wallet/crypto.hpp"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace alou::wallet {
namespace {

using json = nlohmann::json;

constexpr std::string_view kHeader = R"({"alg":"HS256","typ":"JWT"})";

Error invalid_token(std::string why) { return Error::unauthorized("invalid wallet token: " + why, "invalid_token"); }

std::string signature_of(const std::string& secret, std::string_view signing_input) {
  const Hash32 mac = hmac_sha256(secret, signing_input);
  return base64url_encode(std::string_view(reinterpret_cast<const char*>(mac.data()), mac.size()));
}

}  // namespace

std::string Jwt::sign(const TokenClaims& c) const {
  const json payload = {{"sub", c.sub}, {"chain", chain_name(c.chain)}, {"iat", c.iat},
                        {"exp", c.exp}, {"jti", c.jti},                 {"iss", issuer_}};
  std::string input = base64url_encode(kHeader) + "." + base64url_encode(payload.dump());
  std::string sig = signature_of(secret_, input);
  return input + "." + sig;
}

Result<TokenClaims> Jwt::verify(std::string_view token, std::int64_t now_s) const {
  const auto dot1 = token.find('.');
  const auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return invalid_token("not a JWS compact token");
  }
  const auto header_text = base64url_decode(token.substr(0, dot1));
  if (!header_text) return invalid_token("malformed header");
  const json header = json::parse(*header_text, nullptr, false);
  if (!header.is_object() || !header.contains("alg") || !header["alg"].is_string()) {
    return invalid_token("malformed header");
  }
  if (header["alg"].get<std::string>() != "HS256") return invalid_token("only HS256 is accepted");
  if (header.contains("crit")) return invalid_token("unsupported critical header");
  if (header.contains("typ") && header["typ"] != "JWT") return invalid_token("typ must be JWT");

  // The canonical unpadded base64url of the MAC, compared in constant time.
  const std::string expected = signature_of(secret_, token.substr(0, dot2));
  if (!constant_time_equal(token.substr(dot2 + 1), expected)) return invalid_token("bad signature");

  const auto payload_text = base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  if (!payload_text) return invalid_token("malformed payload");
  const json p = json::parse(*payload_text, nullptr, false);
  if (!p.is_object()) return invalid_token("malformed payload");
  auto str = [&](const char* k) -> const std::string* {
    auto it = p.find(k);
    return it != p.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
  };
  auto num = [&](const char* k) -> std::optional<std::int64_t> {
    auto it = p.find(k);
    if (it == p.end() || !it->is_number_integer()) return std::nullopt;
    return it->get<std::int64_t>();
  };
  const auto* sub = str("sub");
  const auto* chain = str("chain");
  const auto* jti = str("jti");
  const auto* iss = str("iss");
  const auto iat = num("iat");
  const auto exp = num("exp");
  if (!sub || !chain || !jti || !iss || !iat || !exp) return invalid_token("missing claims");
  if (*iss != issuer_) return invalid_token("wrong issuer");
  const auto c = parse_chain(*chain);
  if (!c) return invalid_token("unknown chain");
  if (*exp <= now_s) return Error::unauthorized("wallet token expired; sign in again", "token_expired");
  return TokenClaims{.sub = *sub, .chain = *c, .iat = *iat, .exp = *exp, .jti = *jti, .iss = *iss};
}

Result<std::string> load_jwt_secret(const std::string& env_name, const std::filesystem::path& data_dir,
                                    EnvLookup env) {
  if (!env_name.empty()) {
    if (auto v = env(env_name.c_str())) {
      if (v->size() < 32) {
        return Error::bad_request(env_name + " must be at least 32 characters", "config_invalid");
      }
      return *v;
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  const auto path = data_dir / "jwt.secret";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    const std::string secret = random_hex(32);
    const bool ok = ::write(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size());
    ::close(fd);
    if (!ok) return Error::internal("cannot write " + path.string(), "config_invalid");
    return secret;
  }
  if (errno != EEXIST) {
    return Error::internal("cannot create " + path.string() + ": " + std::strerror(errno), "config_invalid");
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Error::internal("cannot stat " + path.string(), "config_invalid");
  if ((st.st_mode & 077) != 0) {
    return Error::bad_request(path.string() + " must not be readable by group or others (chmod 600)",
                              "config_invalid");
  }
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  std::string secret = buf.str();
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.size() < 32) return Error::bad_request(path.string() + " holds fewer than 32 characters", "config_invalid");
  return secret;
}

}  // namespace alou::wallet
