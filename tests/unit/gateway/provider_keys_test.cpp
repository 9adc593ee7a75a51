// Provider keys at rest: the master key's formats and secretbox round trips.
#include "alou/gateway/provider_keys.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace alou::gateway {
namespace {

constexpr const char* kHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
// The same 32 bytes in base64.
constexpr const char* kBase64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

MasterKey key_of(unsigned char fill) {
  std::array<unsigned char, 32> b{};
  b.fill(fill);
  return MasterKey::from_bytes(b);
}

TEST(MasterKey, HexAndBase64OfTheSameBytesAreTheSameKey) {
  auto hex = MasterKey::parse(kHex);
  ASSERT_TRUE(hex) << hex.error().message;
  auto b64 = MasterKey::parse(std::string(kBase64) + "\n");
  ASSERT_TRUE(b64) << b64.error().message;
  auto unpadded = MasterKey::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
  ASSERT_TRUE(unpadded) << unpadded.error().message;
  const std::string sealed = hex->seal("openai", "sk-upstream-secret");
  EXPECT_EQ(b64->open("openai", sealed).value(), "sk-upstream-secret");
  EXPECT_EQ(unpadded->open("openai", sealed).value(), "sk-upstream-secret");
}

TEST(MasterKey, RejectsWrongLengthsAndGarbageWithoutEchoingThem) {
  const std::vector<std::string> bads = {"",
                                        "00",
                                        std::string(kHex).substr(2),
                                        std::string(kHex) + "00",
                                        std::string("zz") + std::string(kHex).substr(2),
                                        "AAECAwQFBgcICQoLDA0ODw==",
                                        "not a key at all, certainly not 32 bytes"};
  for (const auto& bad : bads) {
    auto r = MasterKey::parse(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, "master_key_invalid");
    EXPECT_EQ(r.error().status, 400);
    if (bad.size() > 4) {
      EXPECT_EQ(r.error().message.find(bad), std::string::npos);
    }
  }
}

TEST(MasterKey, SealOpenRoundTripWithFreshNonces) {
  const auto k = key_of(7);
  const std::string a = k.seal("anthropic", "sk-ant-0123456789");
  const std::string b = k.seal("anthropic", "sk-ant-0123456789");
  EXPECT_NE(a, b);  // a new nonce each time
  EXPECT_EQ(a.find("sk-ant-0123456789"), std::string::npos);
  EXPECT_EQ(k.open("anthropic", a).value(), "sk-ant-0123456789");
  EXPECT_EQ(k.open("anthropic", b).value(), "sk-ant-0123456789");
}

TEST(MasterKey, WrongMasterKeyFailsCleanly) {
  const std::string sealed = key_of(1).seal("openai", "sk-secret-value");
  auto r = key_of(2).open("openai", sealed);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "provider_key_undecryptable");
  EXPECT_EQ(r.error().message.find("sk-secret-value"), std::string::npos);
}

TEST(MasterKey, AnotherProvidersBlobDoesNotOpen) {
  const auto k = key_of(3);
  const std::string sealed = k.seal("openai", "sk-secret-value");
  EXPECT_FALSE(k.open("azure", sealed));
  EXPECT_FALSE(k.open("open", sealed));
  EXPECT_FALSE(k.open("openai2", sealed));
}

TEST(MasterKey, TamperedOrTruncatedDataFails) {
  const auto k = key_of(4);
  std::string sealed = k.seal("p", "sk-secret-value");
  std::string flipped = sealed;
  flipped.back() = static_cast<char>(flipped.back() ^ 1);
  EXPECT_FALSE(k.open("p", flipped));
  EXPECT_FALSE(k.open("p", sealed.substr(0, 20)));
  EXPECT_FALSE(k.open("p", ""));
  EXPECT_TRUE(k.open("p", sealed));
}

}  // namespace
}  // namespace alou::gateway
