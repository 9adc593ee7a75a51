#pragma once
// The cryptographic building blocks of wallet login. Pure functions, safe to
// call from any thread; none of them allocates more than its output.
//
// Keccak-256 and Base58 are written by hand: OpenSSL 3.0 has no Keccak (its
// SHA3-256 pads differently) and no Debian library offers Base58.
// secp256k1 recovery is libsecp256k1's, Ed25519 is libsodium's.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace alou::wallet {

using Bytes = std::vector<std::uint8_t>;
using Hash32 = std::array<std::uint8_t, 32>;

// Keccak-256 as Ethereum uses it (original Keccak padding 0x01, not SHA3's 0x06).
Hash32 keccak256(std::string_view data);

std::string to_hex(const std::uint8_t* data, std::size_t n);  // lowercase, no 0x
// Strict hex: an even number of [0-9a-fA-F]; nullopt otherwise.
std::optional<Bytes> from_hex(std::string_view hex);

// Bitcoin-alphabet Base58. decode: nullopt on a character outside the alphabet.
std::string base58_encode(const Bytes& data);
std::optional<Bytes> base58_decode(std::string_view text);

// Standard (with or without padding) and URL-safe unpadded Base64.
std::optional<Bytes> base64_decode(std::string_view text);
std::string base64url_encode(std::string_view data);
std::optional<std::string> base64url_decode(std::string_view text);

// EIP-55: "0x" + the 40 hex digits with the checksum capitalisation.
// `address` is "0x" + 40 hex digits in any case; nullopt if it is not.
std::optional<std::string> eip55_checksum(std::string_view address);
// true if `address` is "0x" + 40 hex digits capitalised exactly per EIP-55.
bool is_eip55(std::string_view address);

// EIP-191 personal_sign digest: keccak256("\x19Ethereum Signed Message:\n" + len + message).
Hash32 eip191_hash(std::string_view message);

enum class RecoverError { kBadLength, kBadRecoveryId, kHighS, kInvalid };
struct Recovered {
  std::optional<std::string> address;  // EIP-55 form when recovered
  RecoverError error = RecoverError::kInvalid;
};
// Recovers the signer's address from a 65-byte r||s||v signature of `digest`
// (v: 27/28 or 0/1). Refuses high-s signatures (EIP-2).
Recovered ecrecover(const Hash32& digest, const Bytes& signature);

// Ed25519 detached signature check (libsodium): 32-byte key, 64-byte signature.
bool ed25519_verify(const Bytes& public_key, const Bytes& signature, std::string_view message);

// HMAC-SHA256 (OpenSSL).
Hash32 hmac_sha256(std::string_view key, std::string_view data);
// Constant-time equality of equal-length buffers (false if lengths differ).
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace alou::wallet
