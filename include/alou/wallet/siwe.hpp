#pragma once
// Sign-In with Ethereum (EIP-4361) and Sign-In with Solana messages: strict
// parsers and the formatter the nonce endpoint uses. Parsing checks syntax
// only (the grammar); the checks against configuration, the nonce and the
// clock are the caller's (wallet::Verifier).
#include "alou/core/error.hpp"
#include "alou/core/time.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace alou::wallet {

enum class Chain { kEthereum, kSolana };
const char* chain_name(Chain c);
std::optional<Chain> parse_chain(std::string_view name);

struct SignInMessage {
  Chain chain = Chain::kEthereum;
  std::optional<std::string> scheme;     // SIWE's optional "scheme://" before the domain
  std::string domain;
  std::string address;                   // EIP-55 hex (Ethereum) or base58 public key (Solana)
  std::optional<std::string> statement;
  std::string uri;
  std::string version = "1";
  std::string chain_id;                  // decimal (EIP-155) or a Solana cluster ("mainnet", ...)
  std::string nonce;
  std::string issued_at;                 // RFC 3339 text as signed
  std::optional<std::string> expiration_time;
  std::optional<std::string> not_before;
  std::optional<std::string> request_id;
  std::optional<std::vector<std::string>> resources;

  // Unix milliseconds of the parsed times (set by the parsers).
  std::int64_t issued_at_ms = 0;
  std::optional<std::int64_t> expiration_ms;
  std::optional<std::int64_t> not_before_ms;
};

// The largest message either parser accepts.
inline constexpr std::size_t kMaxMessageBytes = 8192;

// EIP-4361 ABNF, exactly: field order, LF line breaks, optional fields, an
// EIP-55 checksummed address, 8+ alphanumeric nonce, RFC 3339 times, RFC 3986
// URIs. Error code "invalid_message" (400) naming the offending part.
Result<SignInMessage> parse_siwe(std::string_view text);

// Sign-In with Solana text as wallets build it (the Solana wallet standard's
// createSignInMessageText): the header, the base58 address, an optional
// statement, then the optional fields in SIWE's order. Fields Alou needs
// (URI, Version, Chain ID, Nonce, Issued At) must be present.
Result<SignInMessage> parse_siws(std::string_view text);

// The text a wallet signs; parse_siwe/parse_siws(format(m)) round-trips.
std::string format_message(const SignInMessage& m);

}  // namespace alou::wallet
