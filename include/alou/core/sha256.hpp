#pragma once
// SHA-256 for the hot paths (API key lookups, ledger entry hashes):
// OpenSSL's implementation (SHA-NI where the CPU has it) with the algorithm
// fetched once per thread. OpenSSL 3's one-shot SHA256() looks the
// algorithm up in its provider registry on every call, which costs more
// than hashing a key.
#include <array>
#include <string>
#include <string_view>

namespace alou {

using Sha256Digest = std::array<unsigned char, 32>;

Sha256Digest sha256(std::string_view data);

// Lowercase hex of the digest (64 characters).
std::string sha256_hex(std::string_view data);

}  // namespace alou
