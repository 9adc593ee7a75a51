#include "alou/core/sha256.hpp"

#include <openssl/evp.h>

#include <memory>
#include <stdexcept>

namespace alou {
namespace {

struct Hasher {
  Hasher() : md(EVP_MD_fetch(nullptr, "SHA256", nullptr)), ctx(EVP_MD_CTX_new()) {
    if (md == nullptr || ctx == nullptr) throw std::runtime_error("OpenSSL has no SHA-256");
  }
  ~Hasher() {
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(md);
  }
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  EVP_MD* md;
  EVP_MD_CTX* ctx;
};

}  // namespace

Sha256Digest sha256(std::string_view data) {
  thread_local Hasher h;
  Sha256Digest out{};
  unsigned int len = 0;
  if (EVP_DigestInit_ex2(h.ctx, h.md, nullptr) != 1 || EVP_DigestUpdate(h.ctx, data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(h.ctx, out.data(), &len) != 1 || len != out.size()) {
    throw std::runtime_error("SHA-256 failed");
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto d = sha256(data);
  std::string out(d.size() * 2, '\0');
  for (std::size_t i = 0; i < d.size(); ++i) {
    out[2 * i] = kHex[d[i] >> 4];
    out[2 * i + 1] = kHex[d[i] & 0xf];
  }
  return out;
}

}  // namespace alou
