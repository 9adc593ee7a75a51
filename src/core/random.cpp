#include "alou/core/random.hpp"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace alou {
namespace {
void ensure_sodium() {
  static const int rc = sodium_init();
  if (rc < 0) throw std::runtime_error("libsodium failed to initialise");
}

// Bytes from libsodium's CSPRNG, drawn 256 at a time per thread:
// randombytes_buf is one getrandom(2) per call, and every request draws a
// request id and, when billed, a hold id. A byte handed out is wiped from
// the pool, so the pool never holds a byte someone already has.
class Pool {
 public:
  void take(unsigned char* out, std::size_t n) {
    while (n > 0) {
      if (pos_ == sizeof buf_) {
        ensure_sodium();
        randombytes_buf(buf_, sizeof buf_);
        pos_ = 0;
      }
      const std::size_t k = std::min(n, sizeof buf_ - pos_);
      std::memcpy(out, buf_ + pos_, k);
      sodium_memzero(buf_ + pos_, k);
      pos_ += k;
      out += k;
      n -= k;
    }
  }

 private:
  unsigned char buf_[256] = {};
  std::size_t pos_ = sizeof buf_;
};

thread_local Pool pool;

// Larger draws (keys, signing secrets) go to libsodium directly.
constexpr std::size_t kPooledMax = 32;
}  // namespace

std::string random_alnum(std::size_t n) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  ensure_sodium();
  std::string out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(kAlphabet[randombytes_uniform(62)]);
  return out;
}

std::string random_hex(std::size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  unsigned char small[kPooledMax];
  std::string bytes;
  unsigned char* src = small;
  if (n <= kPooledMax) {
    pool.take(small, n);
  } else {
    ensure_sodium();
    bytes.resize(n);
    src = reinterpret_cast<unsigned char*>(bytes.data());
    randombytes_buf(src, n);
  }
  std::string out(n * 2, '\0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[src[i] >> 4];
    out[2 * i + 1] = kHex[src[i] & 0xf];
  }
  sodium_memzero(src, n);
  return out;
}

std::uint32_t random_uniform(std::uint32_t n) {
  if (n < 2) return 0;
  // Rejection sampling: values below 2^32 mod n would make the low
  // residues likelier.
  const std::uint32_t reject_below = (0U - n) % n;
  for (;;) {
    std::uint32_t r = 0;
    pool.take(reinterpret_cast<unsigned char*>(&r), sizeof r);
    if (r >= reject_below) return r % n;
  }
}

}  // namespace alou
