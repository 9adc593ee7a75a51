#include "alou/wallet/siwe.hpp"

#include <gtest/gtest.h>

namespace alou::wallet {
namespace {

constexpr const char* kAddr = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";

// Produced by the npm `siwe` package (SiweMessage.prepareMessage) with every field set.
constexpr const char* kSiwePackageFull =
    "example.com wants you to sign in with your Ethereum account:\n"
    "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23\n\n"
    "Sign in to Example: https://example.com/tos\n\n"
    "URI: https://example.com/login\nVersion: 1\nChain ID: 1\nNonce: abcDEF12345678\n"
    "Issued At: 2024-05-01T12:00:00.000Z\nExpiration Time: 2024-05-01T12:10:00Z\n"
    "Not Before: 2024-05-01T11:59:00+00:00\nRequest ID: req-1\nResources:\n"
    "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n"
    "- https://example.com/my-web2-claim.json";
// The same package with a scheme and no statement (two empty lines).
constexpr const char* kSiwePackageMinimal =
    "http://localhost:8080 wants you to sign in with your Ethereum account:\n"
    "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23\n\n\n"
    "URI: http://localhost:8080\nVersion: 1\nChain ID: 1\nNonce: abcDEF12345678\n"
    "Issued At: 2024-05-01T12:00:00.000Z";

TEST(Siwe, ParsesTheSiwePackagesFullMessage) {
  auto m = parse_siwe(kSiwePackageFull);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_FALSE(m->scheme);
  EXPECT_EQ(m->domain, "example.com");
  EXPECT_EQ(m->address, kAddr);
  EXPECT_EQ(m->statement, "Sign in to Example: https://example.com/tos");
  EXPECT_EQ(m->uri, "https://example.com/login");
  EXPECT_EQ(m->chain_id, "1");
  EXPECT_EQ(m->nonce, "abcDEF12345678");
  EXPECT_EQ(m->issued_at_ms, 1714564800000);
  EXPECT_EQ(m->expiration_ms, 1714565400000);
  EXPECT_EQ(m->not_before_ms, 1714564740000);
  EXPECT_EQ(m->request_id, "req-1");
  ASSERT_TRUE(m->resources);
  EXPECT_EQ(m->resources->size(), 2u);
  EXPECT_EQ(format_message(*m), kSiwePackageFull);
}

TEST(Siwe, ParsesSchemeAndAbsentStatement) {
  auto m = parse_siwe(kSiwePackageMinimal);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->scheme, "http");
  EXPECT_EQ(m->domain, "localhost:8080");
  EXPECT_FALSE(m->statement);
  EXPECT_FALSE(m->expiration_time);
  EXPECT_FALSE(m->resources);
  EXPECT_EQ(format_message(*m), kSiwePackageMinimal);
}

TEST(Siwe, AcceptsEmptyResourcesUserinfoAndIpv6) {
  std::string t = kSiwePackageMinimal;
  t.replace(0, std::string("http://localhost:8080").size(), "me@[::1]:8080");
  EXPECT_TRUE(parse_siwe(t + "\nResources:")) << t;
}

std::string replace(std::string s, std::string_view from, std::string_view to) {
  const auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

void expect_invalid(const std::string& text, std::string_view mentions) {
  auto m = parse_siwe(text);
  ASSERT_FALSE(m) << text;
  EXPECT_EQ(m.error().status, 400);
  EXPECT_EQ(m.error().code, "invalid_message");
  EXPECT_NE(m.error().message.find(mentions), std::string::npos) << m.error().message;
}

// One refusal per grammar rule.
TEST(SiweGrammar, Header) {
  expect_invalid(replace(kSiwePackageFull, "Ethereum account:", "Ethereum account"), "line 1");
  expect_invalid(replace(kSiwePackageFull, "example.com wants", " wants"), "line 1");
  expect_invalid(replace(kSiwePackageFull, "example.com wants", "exa mple.com wants"), "authority");
  expect_invalid(replace(kSiwePackageFull, "example.com wants", "1http://example.com wants"), "scheme");
  expect_invalid(replace(kSiwePackageFull, "example.com wants", "example.com:80x wants"), "authority");
  expect_invalid(replace(kSiwePackageFull, "wants you", "Wants you"), "line 1");
}

TEST(SiweGrammar, Address) {
  expect_invalid(replace(kSiwePackageFull, kAddr, "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"), "EIP-55");
  expect_invalid(replace(kSiwePackageFull, kAddr, "0x2c7536E3605D9C16a7a3D7b1898e529396a65c2"), "40 hex");
  expect_invalid(replace(kSiwePackageFull, kAddr, "0x2c7536E3605D9C16a7a3D7b1898e529396a65c2g"), "40 hex");
  expect_invalid(replace(kSiwePackageFull, kAddr, "2c7536E3605D9C16a7a3D7b1898e529396a65c2300"), "40 hex");
}

TEST(SiweGrammar, BlankLinesAndStatement) {
  expect_invalid(replace(kSiwePackageFull, "65c23\n\n", "65c23\n"), "line 3");
  expect_invalid(replace(kSiwePackageFull, "/tos\n\n", "/tos\n"), "line 5");
  expect_invalid(replace(kSiwePackageFull, "Sign in to Example", "Sign in \"to\" Example"), "statement");
  expect_invalid(replace(kSiwePackageFull, "Sign in to Example", "Sign in to 100% Example"), "statement");
  expect_invalid(replace(kSiwePackageFull, "Sign in to Example", "Sign in to Ex\xc3\xa4mple"), "statement");
  expect_invalid(replace(kSiwePackageMinimal, "\n\n\nURI", "\n\nURI"), "line 5");
}

TEST(SiweGrammar, RequiredFieldsInOrder) {
  expect_invalid(replace(kSiwePackageFull, "URI: https://example.com/login\nVersion: 1\n",
                         "Version: 1\nURI: https://example.com/login\n"),
                 "expected \"URI: \"");
  expect_invalid(replace(kSiwePackageFull, "Chain ID: 1\n", ""), "Chain ID");
  expect_invalid(replace(kSiwePackageFull, "Nonce: abcDEF12345678\n", ""), "Nonce");
  expect_invalid(replace(kSiwePackageMinimal, "\nIssued At: 2024-05-01T12:00:00.000Z", ""), "Issued At");
  expect_invalid(replace(kSiwePackageFull, "URI: ", "Uri: "), "URI");
  expect_invalid(replace(kSiwePackageFull, "Version: 1", "Version:  1"), "Version");
}

TEST(SiweGrammar, FieldValues) {
  expect_invalid(replace(kSiwePackageFull, "URI: https://example.com/login", "URI: example.com/login"), "RFC 3986");
  expect_invalid(replace(kSiwePackageFull, "URI: https://example.com/login", "URI: https://example.com/lo gin"), "RFC 3986");
  expect_invalid(replace(kSiwePackageFull, "URI: https://example.com/login", "URI: https://example.com/%zz"), "RFC 3986");
  expect_invalid(replace(kSiwePackageFull, "Version: 1", "Version: 2"), "Version");
  expect_invalid(replace(kSiwePackageFull, "Chain ID: 1", "Chain ID: 0x1"), "Chain ID");
  expect_invalid(replace(kSiwePackageFull, "Chain ID: 1", "Chain ID: "), "Chain ID");
  expect_invalid(replace(kSiwePackageFull, "Nonce: abcDEF12345678", "Nonce: abc1234"), "Nonce");
  expect_invalid(replace(kSiwePackageFull, "Nonce: abcDEF12345678", "Nonce: abcDEF-12345678"), "Nonce");
  expect_invalid(replace(kSiwePackageFull, "2024-05-01T12:00:00.000Z", "2024-02-30T12:00:00Z"), "Issued At");
  expect_invalid(replace(kSiwePackageFull, "2024-05-01T12:00:00.000Z", "2024-05-01 12:00:00Z"), "Issued At");
  expect_invalid(replace(kSiwePackageFull, "2024-05-01T12:00:00.000Z", "2024-05-01T12:00:00"), "Issued At");
  expect_invalid(replace(kSiwePackageFull, "2024-05-01T12:10:00Z", "tomorrow"), "Expiration Time");
  expect_invalid(replace(kSiwePackageFull, "2024-05-01T11:59:00+00:00", "2024-05-01T11:59:00+0000"), "Not Before");
  expect_invalid(replace(kSiwePackageFull, "Request ID: req-1", "Request ID: req 1"), "Request ID");
  expect_invalid(replace(kSiwePackageFull, "- https://example.com/my-web2-claim.json", "- not a uri"), "resource");
}

TEST(SiweGrammar, OptionalFieldsInOrderAndNothingAfter) {
  expect_invalid(replace(kSiwePackageFull, "Expiration Time: 2024-05-01T12:10:00Z\nNot Before: 2024-05-01T11:59:00+00:00",
                         "Not Before: 2024-05-01T11:59:00+00:00\nExpiration Time: 2024-05-01T12:10:00Z"),
                 "unexpected");
  expect_invalid(std::string(kSiwePackageFull) + "\n", "unexpected");
  expect_invalid(std::string(kSiwePackageMinimal) + "\nFoo: bar", "unexpected");
  expect_invalid(replace(kSiwePackageFull, "\n", "\r\n"), "line");
}

TEST(SiweGrammar, RefusesHugeAndEmptyMessages) {
  expect_invalid("", "line 1");
  auto m = parse_siwe(std::string(kMaxMessageBytes + 1, 'a'));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().status, 400);
}

constexpr const char* kSolAddr = "7S3P4HxJpyyigGzodYwHtCxZyUQe9JiBMHyRWXArAaKv";

std::string siws_message() {
  return std::string("example.com wants you to sign in with your Solana account:\n") + kSolAddr +
         "\n\nSign in to Example — with UTF-8.\n\nURI: https://example.com\nVersion: 1\nChain ID: mainnet\n"
         "Nonce: abcDEF12345678\nIssued At: 2024-05-01T12:00:00.000Z\nExpiration Time: 2024-05-01T12:10:00.000Z";
}

TEST(Siws, ParsesAndRoundTrips) {
  auto m = parse_siws(siws_message());
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->chain, Chain::kSolana);
  EXPECT_EQ(m->address, kSolAddr);
  EXPECT_EQ(m->chain_id, "mainnet");
  EXPECT_EQ(format_message(*m), siws_message());
}

TEST(Siws, StatementIsOptionalWithOneBlankLine) {
  const std::string t = replace(siws_message(), "Sign in to Example — with UTF-8.\n\n", "");
  auto m = parse_siws(t);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_FALSE(m->statement);
  EXPECT_EQ(format_message(*m), t);
  EXPECT_TRUE(parse_siws(replace(siws_message(), "Chain ID: mainnet", "Chain ID: solana:devnet")));
}

TEST(Siws, RefusesMalformedParts) {
  for (const auto& bad : {replace(siws_message(), "Solana account", "Ethereum account"),
                          replace(siws_message(), kSolAddr, "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"),
                          replace(siws_message(), kSolAddr, "7S3P4HxJpyyigGzodYwHtCxZyUQe9JiBMHyRWXArAa0v"),
                          replace(siws_message(), "\nVersion: 1", ""),
                          replace(siws_message(), "Nonce: abcDEF12345678", "Nonce: short"),
                          replace(siws_message(), "Chain ID: mainnet", "Chain ID: main net"),
                          replace(siws_message(), "UTF-8.\n\n", "UTF-8.\n"), siws_message() + "\n"}) {
    auto m = parse_siws(bad);
    ASSERT_FALSE(m) << bad;
    EXPECT_EQ(m.error().code, "invalid_message");
  }
}

TEST(Rfc3339, ParsesOffsetsFractionsAndFormats) {
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339("1970-01-01T01:00:00+01:00"), 0);
  EXPECT_EQ(parse_rfc3339("2024-02-29T23:59:59.5z"), 1709251199500);
  EXPECT_EQ(parse_rfc3339("2016-12-31T23:59:60Z"), 1483228799999);
  EXPECT_FALSE(parse_rfc3339("2023-02-29T00:00:00Z"));
  EXPECT_FALSE(parse_rfc3339("2024-13-01T00:00:00Z"));
  EXPECT_FALSE(parse_rfc3339("2024-01-01T24:00:00Z"));
  EXPECT_FALSE(parse_rfc3339("2024-01-01T00:00:00.Z"));
  EXPECT_FALSE(parse_rfc3339("2024-01-01T00:00:00+01"));
  EXPECT_EQ(format_rfc3339(1714564800123), "2024-05-01T12:00:00.123Z");
  EXPECT_EQ(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
}

}  // namespace
}  // namespace alou::wallet
