#include "alou/wallet/crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace alou::wallet {
namespace {

// ---- Keccak-f[1600] (FIPS 202 permutation), sponge with rate 136 bytes.
constexpr std::uint64_t kRoundConstants[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL};
// Rotation offsets and the pi lane order, walking the lanes from (1,0).
constexpr int kRho[24] = {1, 3, 6, 10, 15, 21, 28, 36, 45, 55, 2, 14, 27, 41, 56, 8, 25, 43, 62, 18, 39, 61, 20, 44};
constexpr int kPi[24] = {10, 7, 11, 17, 18, 3, 5, 16, 8, 21, 24, 4, 15, 23, 19, 13, 12, 2, 20, 14, 22, 9, 6, 1};

std::uint64_t rotl(std::uint64_t x, int n) { return (x << n) | (x >> (64 - n)); }

void keccak_f(std::uint64_t a[25]) {
  for (int round = 0; round < 24; ++round) {
    std::uint64_t c[5];
    for (int x = 0; x < 5; ++x) c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
    for (int x = 0; x < 5; ++x) {
      const std::uint64_t d = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1);
      for (int y = 0; y < 25; y += 5) a[y + x] ^= d;
    }
    std::uint64_t t = a[1];
    for (int i = 0; i < 24; ++i) {
      const int j = kPi[i];
      const std::uint64_t next = a[j];
      a[j] = rotl(t, kRho[i]);
      t = next;
    }
    for (int y = 0; y < 25; y += 5) {
      std::uint64_t row[5];
      for (int x = 0; x < 5; ++x) row[x] = a[y + x];
      for (int x = 0; x < 5; ++x) a[y + x] = row[x] ^ (~row[(x + 1) % 5] & row[(x + 2) % 5]);
    }
    a[0] ^= kRoundConstants[round];
  }
}

void absorb_block(std::uint64_t state[25], const std::uint8_t* block) {
  for (int i = 0; i < 136 / 8; ++i) {
    std::uint64_t lane = 0;
    for (int b = 7; b >= 0; --b) lane = (lane << 8) | block[i * 8 + b];  // little-endian lanes
    state[i] ^= lane;
  }
  keccak_f(state);
}

const secp256k1_context* secp_ctx() {
  static secp256k1_context* ctx = [] {
    auto* c = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    if (c == nullptr) throw std::runtime_error("libsecp256k1 context creation failed");
    return c;
  }();
  return ctx;
}

// secp256k1 group order n, halved (EIP-2: s must be <= n/2).
constexpr std::uint8_t kHalfOrder[32] = {0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0xff, 0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4,
                                         0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0};

constexpr char kBase58Alphabet[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

void ensure_sodium() {
  static const int rc = sodium_init();
  if (rc < 0) throw std::runtime_error("libsodium failed to initialise");
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Hash32 keccak256(std::string_view data) {
  std::uint64_t state[25] = {};
  const auto* p = reinterpret_cast<const std::uint8_t*>(data.data());
  std::size_t n = data.size();
  while (n >= 136) {
    absorb_block(state, p);
    p += 136;
    n -= 136;
  }
  std::uint8_t last[136] = {};
  std::memcpy(last, p, n);
  last[n] ^= 0x01;
  last[135] ^= 0x80;
  absorb_block(state, last);
  Hash32 out{};
  for (int i = 0; i < 32; ++i) out[i] = static_cast<std::uint8_t>(state[i / 8] >> (8 * (i % 8)));
  return out;
}

std::string to_hex(const std::uint8_t* data, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 15]);
  }
  return out;
}

std::optional<Bytes> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  Bytes out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = hex_value(hex[2 * i]);
    const int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

std::string base58_encode(const Bytes& data) {
  std::size_t zeros = 0;
  while (zeros < data.size() && data[zeros] == 0) ++zeros;
  // Base-256 to base-58 by repeated multiply-add; log(256)/log(58) < 1.37.
  std::vector<std::uint8_t> digits((data.size() - zeros) * 138 / 100 + 1, 0);
  std::size_t used = 0;
  for (std::size_t i = zeros; i < data.size(); ++i) {
    int carry = data[i];
    std::size_t k = 0;
    for (auto it = digits.rbegin(); (carry != 0 || k < used) && it != digits.rend(); ++it, ++k) {
      carry += 256 * *it;
      *it = static_cast<std::uint8_t>(carry % 58);
      carry /= 58;
    }
    used = k;
  }
  std::string out(zeros, '1');
  for (std::size_t i = digits.size() - used; i < digits.size(); ++i) out.push_back(kBase58Alphabet[digits[i]]);
  return out;
}

std::optional<Bytes> base58_decode(std::string_view text) {
  std::size_t ones = 0;
  while (ones < text.size() && text[ones] == '1') ++ones;
  std::vector<std::uint8_t> bytes((text.size() - ones) * 733 / 1000 + 1, 0);  // log(58)/log(256)
  std::size_t used = 0;
  for (std::size_t i = ones; i < text.size(); ++i) {
    const char* pos = std::strchr(kBase58Alphabet, text[i]);
    if (text[i] == '\0' || pos == nullptr) return std::nullopt;
    int carry = static_cast<int>(pos - kBase58Alphabet);
    std::size_t k = 0;
    for (auto it = bytes.rbegin(); (carry != 0 || k < used) && it != bytes.rend(); ++it, ++k) {
      carry += 58 * *it;
      *it = static_cast<std::uint8_t>(carry % 256);
      carry /= 256;
    }
    used = k;
  }
  Bytes out(ones, 0);
  out.insert(out.end(), bytes.end() - static_cast<std::ptrdiff_t>(used), bytes.end());
  return out;
}

std::optional<Bytes> base64_decode(std::string_view text) {
  ensure_sodium();
  Bytes out(text.size() * 3 / 4 + 3);
  std::size_t len = 0;
  const char* end = nullptr;
  const int variant = text.find('=') != std::string_view::npos ? sodium_base64_VARIANT_ORIGINAL
                                                                : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
  if (sodium_base642bin(out.data(), out.size(), text.data(), text.size(), nullptr, &len, &end, variant) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

std::string base64url_encode(std::string_view data) {
  ensure_sodium();
  const int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_ENCODED_LEN(data.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(data.data()), data.size(),
                    variant);
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  ensure_sodium();
  std::string out(text.size() * 3 / 4 + 3, '\0');
  std::size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(), text.size(), nullptr,
                        &len, &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

std::optional<std::string> eip55_checksum(std::string_view address) {
  if (address.size() != 42 || address[0] != '0' || address[1] != 'x') return std::nullopt;
  std::string lower(address.substr(2));
  for (auto& c : lower) {
    if (hex_value(c) < 0) return std::nullopt;
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  const Hash32 h = keccak256(lower);
  std::string out = "0x";
  for (std::size_t i = 0; i < 40; ++i) {
    const int nibble = (i % 2 == 0) ? h[i / 2] >> 4 : h[i / 2] & 15;
    const char c = lower[i];
    out.push_back(nibble >= 8 ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c);
  }
  return out;
}

bool is_eip55(std::string_view address) {
  const auto sum = eip55_checksum(address);
  return sum && *sum == address;
}

Hash32 eip191_hash(std::string_view message) {
  std::string data = "\x19" "Ethereum Signed Message:\n" + std::to_string(message.size());
  data.append(message);
  return keccak256(data);
}

Recovered ecrecover(const Hash32& digest, const Bytes& signature) {
  Recovered r;
  if (signature.size() != 65) {
    r.error = RecoverError::kBadLength;
    return r;
  }
  int v = signature[64];
  if (v >= 27) v -= 27;
  if (v != 0 && v != 1) {
    r.error = RecoverError::kBadRecoveryId;
    return r;
  }
  if (std::memcmp(signature.data() + 32, kHalfOrder, 32) > 0) {
    r.error = RecoverError::kHighS;
    return r;
  }
  secp256k1_ecdsa_recoverable_signature sig;
  secp256k1_pubkey pub;
  if (secp256k1_ecdsa_recoverable_signature_parse_compact(secp_ctx(), &sig, signature.data(), v) != 1 ||
      secp256k1_ecdsa_recover(secp_ctx(), &pub, &sig, digest.data()) != 1) {
    return r;
  }
  std::uint8_t raw[65];
  std::size_t len = sizeof raw;
  secp256k1_ec_pubkey_serialize(secp_ctx(), raw, &len, &pub, SECP256K1_EC_UNCOMPRESSED);
  const Hash32 h = keccak256(std::string_view(reinterpret_cast<const char*>(raw + 1), 64));
  r.address = eip55_checksum("0x" + to_hex(h.data() + 12, 20));
  return r;
}

bool ed25519_verify(const Bytes& public_key, const Bytes& signature, std::string_view message) {
  ensure_sodium();
  if (public_key.size() != crypto_sign_PUBLICKEYBYTES || signature.size() != crypto_sign_BYTES) return false;
  return crypto_sign_verify_detached(signature.data(), reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(), public_key.data()) == 0;
}

Hash32 hmac_sha256(std::string_view key, std::string_view data) {
  Hash32 out{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out.data(), &len);
  return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace alou::wallet
