#include "alou/wallet/siwe.hpp"

#include "alou/core/time.hpp"
#include "alou/wallet/crypto.hpp"

#include <array>
#include <cstdio>

namespace alou::wallet {
namespace {

constexpr std::string_view kEthHeader = " wants you to sign in with your Ethereum account:";
constexpr std::string_view kSolHeader = " wants you to sign in with your Solana account:";

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_unreserved(char c) { return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~'; }
bool is_sub_delim(char c) { return std::string_view("!$&'()*+,;=").find(c) != std::string_view::npos; }
bool is_gen_delim(char c) { return std::string_view(":/?#[]@").find(c) != std::string_view::npos; }

// Walks `s` accepting characters for which `ok` holds and "%" HEXDIG HEXDIG.
template <class Pred>
bool all_chars(std::string_view s, Pred ok, bool pct_allowed = true) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && pct_allowed) {
      if (i + 2 >= s.size()) return false;
      if (!is_hex(s[i + 1]) || !is_hex(s[i + 2])) return false;
      i += 2;
      continue;
    }
    if (!ok(s[i])) return false;
  }
  return true;
}

bool is_pchar(char c) { return is_unreserved(c) || is_sub_delim(c) || c == ':' || c == '@'; }

bool valid_scheme(std::string_view s) {
  if (s.empty() || !is_alpha(s[0])) return false;
  for (char c : s) {
    if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.') return false;
  }
  return true;
}

// RFC 3986 authority = [ userinfo "@" ] host [ ":" port ], with a non-empty host.
bool valid_authority(std::string_view a) {
  if (const auto at = a.find('@'); at != std::string_view::npos) {
    const auto userinfo = a.substr(0, at);
    if (!all_chars(userinfo, [](char c) { return is_unreserved(c) || is_sub_delim(c) || c == ':'; })) return false;
    a.remove_prefix(at + 1);
  }
  std::string_view host;
  if (!a.empty() && a[0] == '[') {
    const auto close = a.find(']');
    if (close == std::string_view::npos || close < 2) return false;
    const auto lit = a.substr(1, close - 1);
    if (!all_chars(
            lit, [](char c) { return is_hex(c) || c == ':' || c == '.' || c == 'v' || c == 'V' || is_unreserved(c) || is_sub_delim(c); },
            false)) {
      return false;
    }
    host = a.substr(0, close + 1);
    a.remove_prefix(close + 1);
  } else {
    const auto colon = a.find(':');
    host = a.substr(0, colon);
    if (!all_chars(host, [](char c) { return is_unreserved(c) || is_sub_delim(c); })) return false;
    a.remove_prefix(host.size());
  }
  if (host.empty()) return false;
  if (!a.empty()) {
    if (a[0] != ':') return false;
    for (char c : a.substr(1)) {
      if (!is_digit(c)) return false;
    }
  }
  return true;
}

// RFC 3986 URI = scheme ":" hier-part [ "?" query ] [ "#" fragment ].
bool valid_uri(std::string_view u) {
  const auto colon = u.find(':');
  if (colon == std::string_view::npos || !valid_scheme(u.substr(0, colon))) return false;
  std::string_view rest = u.substr(colon + 1);
  const auto hash = rest.find('#');
  if (hash != std::string_view::npos) {
    if (!all_chars(rest.substr(hash + 1), [](char c) { return is_pchar(c) || c == '/' || c == '?'; })) return false;
    rest = rest.substr(0, hash);
  }
  const auto q = rest.find('?');
  if (q != std::string_view::npos) {
    if (!all_chars(rest.substr(q + 1), [](char c) { return is_pchar(c) || c == '/' || c == '?'; })) return false;
    rest = rest.substr(0, q);
  }
  if (rest.substr(0, 2) == "//") {
    rest.remove_prefix(2);
    const auto slash = rest.find('/');
    if (!valid_authority(rest.substr(0, slash))) return false;
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  }
  return all_chars(rest, [](char c) { return is_pchar(c) || c == '/'; });
}

bool valid_siwe_statement(std::string_view s) {
  return all_chars(s, [](char c) { return is_unreserved(c) || is_gen_delim(c) || is_sub_delim(c) || c == ' '; }, false);
}

// Sign-In with Solana statements are free text on one line (UTF-8 allowed).
bool valid_siws_statement(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return false;
  }
  return !s.empty();
}

bool valid_nonce(std::string_view n) {
  if (n.size() < 8) return false;
  for (char c : n) {
    if (!is_alpha(c) && !is_digit(c)) return false;
  }
  return true;
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (true) {
    const auto nl = text.find('\n', start);
    if (nl == std::string_view::npos) {
      lines.push_back(text.substr(start));
      return lines;
    }
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
}

Error invalid(const char* grammar, std::size_t line, const std::string& what) {
  return Error::bad_request(std::string("invalid ") + grammar + " message: line " + std::to_string(line + 1) + ": " +
                                what,
                            "invalid_message");
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// The "URI: ... Resources:" block shared by both grammars, from line `i`.
std::optional<Error> parse_fields(const char* grammar, const std::vector<std::string_view>& lines, std::size_t i,
                                  SignInMessage& m) {
  auto take = [&](std::string_view label, bool required, std::optional<std::string>& out) -> std::optional<Error> {
    if (i < lines.size() && starts_with(lines[i], label)) {
      out = std::string(lines[i].substr(label.size()));
      ++i;
      return std::nullopt;
    }
    if (required) {
      return invalid(grammar, i, "expected \"" + std::string(label) + "\"" + (i < lines.size() ? "" : " (message ends)"));
    }
    return std::nullopt;
  };
  std::optional<std::string> uri, version, chain_id, nonce, issued, expiration, not_before, request_id;
  const std::size_t uri_line = i;
  if (auto e = take("URI: ", true, uri)) return e;
  if (!valid_uri(*uri)) return invalid(grammar, uri_line, "URI is not an RFC 3986 URI");
  if (auto e = take("Version: ", true, version)) return e;
  if (*version != "1") return invalid(grammar, i - 1, "Version must be 1");
  if (auto e = take("Chain ID: ", true, chain_id)) return e;
  const bool eth = m.chain == Chain::kEthereum;
  bool chain_ok = !chain_id->empty() && chain_id->size() <= (eth ? 20 : 64);
  for (char c : *chain_id) {
    chain_ok = chain_ok && (eth ? is_digit(c) : (is_alpha(c) || is_digit(c) || c == ':' || c == '-'));
  }
  if (!chain_ok) return invalid(grammar, i - 1, eth ? "Chain ID must be decimal digits" : "malformed Chain ID");
  if (auto e = take("Nonce: ", true, nonce)) return e;
  if (!valid_nonce(*nonce)) return invalid(grammar, i - 1, "Nonce must be at least 8 letters or digits");
  if (auto e = take("Issued At: ", true, issued)) return e;
  const auto issued_ms = parse_rfc3339(*issued);
  if (!issued_ms) return invalid(grammar, i - 1, "Issued At is not an RFC 3339 date-time");
  if (auto e = take("Expiration Time: ", false, expiration)) return e;
  if (expiration) {
    m.expiration_ms = parse_rfc3339(*expiration);
    if (!m.expiration_ms) return invalid(grammar, i - 1, "Expiration Time is not an RFC 3339 date-time");
  }
  if (auto e = take("Not Before: ", false, not_before)) return e;
  if (not_before) {
    m.not_before_ms = parse_rfc3339(*not_before);
    if (!m.not_before_ms) return invalid(grammar, i - 1, "Not Before is not an RFC 3339 date-time");
  }
  if (auto e = take("Request ID: ", false, request_id)) return e;
  if (request_id && !all_chars(*request_id, is_pchar)) return invalid(grammar, i - 1, "malformed Request ID");
  if (i < lines.size() && lines[i] == "Resources:") {
    ++i;
    m.resources.emplace();
    while (i < lines.size() && starts_with(lines[i], "- ")) {
      const auto r = lines[i].substr(2);
      if (!valid_uri(r)) return invalid(grammar, i, "resource is not an RFC 3986 URI");
      m.resources->emplace_back(r);
      ++i;
    }
  }
  if (i < lines.size()) return invalid(grammar, i, "unexpected text after the last field");
  m.uri = std::move(*uri);
  m.version = std::move(*version);
  m.chain_id = std::move(*chain_id);
  m.nonce = std::move(*nonce);
  m.issued_at = std::move(*issued);
  m.issued_at_ms = *issued_ms;
  m.expiration_time = std::move(expiration);
  m.not_before = std::move(not_before);
  m.request_id = std::move(request_id);
  return std::nullopt;
}

}  // namespace

const char* chain_name(Chain c) { return c == Chain::kEthereum ? "ethereum" : "solana"; }

std::optional<Chain> parse_chain(std::string_view name) {
  if (name == "ethereum") return Chain::kEthereum;
  if (name == "solana") return Chain::kSolana;
  return std::nullopt;
}

Result<SignInMessage> parse_siwe(std::string_view text) {
  constexpr const char* kGrammar = "SIWE";
  if (text.size() > kMaxMessageBytes) return Error::bad_request("message too large", "invalid_message");
  const auto lines = split_lines(text);
  SignInMessage m;
  m.chain = Chain::kEthereum;
  const auto header = lines[0];
  if (header.size() <= kEthHeader.size() || header.substr(header.size() - kEthHeader.size()) != kEthHeader) {
    return invalid(kGrammar, 0, "expected \"<domain> wants you to sign in with your Ethereum account:\"");
  }
  std::string_view domain = header.substr(0, header.size() - kEthHeader.size());
  if (const auto sep = domain.find("://"); sep != std::string_view::npos) {
    if (!valid_scheme(domain.substr(0, sep))) return invalid(kGrammar, 0, "malformed scheme");
    m.scheme = std::string(domain.substr(0, sep));
    domain.remove_prefix(sep + 3);
  }
  if (!valid_authority(domain)) return invalid(kGrammar, 0, "domain is not an RFC 3986 authority");
  m.domain = std::string(domain);
  if (lines.size() < 2) return invalid(kGrammar, 1, "expected the address");
  const auto address = lines[1];
  if (address.size() != 42 || !starts_with(address, "0x") || !from_hex(address.substr(2))) {
    return invalid(kGrammar, 1, "address must be 0x followed by 40 hex digits");
  }
  if (!is_eip55(address)) return invalid(kGrammar, 1, "address is not EIP-55 checksummed");
  m.address = std::string(address);
  if (lines.size() < 4 || !lines[2].empty()) return invalid(kGrammar, 2, "expected an empty line");
  std::size_t i = 3;
  if (!lines[3].empty()) {
    if (!valid_siwe_statement(lines[3])) {
      return invalid(kGrammar, 3, "statement may only hold RFC 3986 reserved/unreserved characters and spaces");
    }
    m.statement = std::string(lines[3]);
    if (lines.size() < 5 || !lines[4].empty()) return invalid(kGrammar, 4, "expected an empty line after the statement");
    i = 5;
  } else {
    i = 4;
  }
  if (auto e = parse_fields(kGrammar, lines, i, m)) return *e;
  return m;
}

Result<SignInMessage> parse_siws(std::string_view text) {
  constexpr const char* kGrammar = "Sign-In with Solana";
  if (text.size() > kMaxMessageBytes) return Error::bad_request("message too large", "invalid_message");
  const auto lines = split_lines(text);
  SignInMessage m;
  m.chain = Chain::kSolana;
  const auto header = lines[0];
  if (header.size() <= kSolHeader.size() || header.substr(header.size() - kSolHeader.size()) != kSolHeader) {
    return invalid(kGrammar, 0, "expected \"<domain> wants you to sign in with your Solana account:\"");
  }
  const auto domain = header.substr(0, header.size() - kSolHeader.size());
  if (!valid_authority(domain)) return invalid(kGrammar, 0, "domain is not an RFC 3986 authority");
  m.domain = std::string(domain);
  if (lines.size() < 2) return invalid(kGrammar, 1, "expected the address");
  const auto key = base58_decode(lines[1]);
  if (!key || key->size() != 32 || base58_encode(*key) != lines[1]) {
    return invalid(kGrammar, 1, "address must be a base58 Ed25519 public key (32 bytes)");
  }
  m.address = std::string(lines[1]);
  if (lines.size() < 4 || !lines[2].empty()) return invalid(kGrammar, 2, "expected an empty line");
  std::size_t i = 3;
  if (!starts_with(lines[3], "URI: ")) {
    if (!valid_siws_statement(lines[3])) return invalid(kGrammar, 3, "malformed statement");
    m.statement = std::string(lines[3]);
    if (lines.size() < 5 || !lines[4].empty()) return invalid(kGrammar, 4, "expected an empty line after the statement");
    i = 5;
  }
  if (auto e = parse_fields(kGrammar, lines, i, m)) return *e;
  return m;
}

std::string format_message(const SignInMessage& m) {
  const bool eth = m.chain == Chain::kEthereum;
  std::string out;
  if (m.scheme) out += *m.scheme + "://";
  out += m.domain;
  out += eth ? kEthHeader : kSolHeader;
  out += "\n" + m.address + "\n\n";
  if (m.statement) out += *m.statement + "\n\n";
  else if (eth) out += "\n";
  out += "URI: " + m.uri + "\nVersion: " + m.version + "\nChain ID: " + m.chain_id + "\nNonce: " + m.nonce +
         "\nIssued At: " + m.issued_at;
  if (m.expiration_time) out += "\nExpiration Time: " + *m.expiration_time;
  if (m.not_before) out += "\nNot Before: " + *m.not_before;
  if (m.request_id) out += "\nRequest ID: " + *m.request_id;
  if (m.resources) {
    out += "\nResources:";
    for (const auto& r : *m.resources) out += "\n- " + r;
  }
  return out;
}

}  // namespace alou::wallet
