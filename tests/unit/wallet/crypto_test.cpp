#include "alou/wallet/crypto.hpp"

#include <gtest/gtest.h>
#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sodium.h>

namespace alou::wallet {
namespace {

std::string hex(const Hash32& h) { return to_hex(h.data(), h.size()); }

// Published Keccak-256 vectors (the Keccak team's / Ethereum's): the empty
// string, "abc", and the pangram.
TEST(Keccak256, EmptyString) {
  EXPECT_EQ(hex(keccak256("")), "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
}

TEST(Keccak256, Abc) {
  EXPECT_EQ(hex(keccak256("abc")), "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45");
}

TEST(Keccak256, QuickBrownFox) {
  EXPECT_EQ(hex(keccak256("The quick brown fox jumps over the lazy dog")),
            "4d741b6f1eb29cb2a9b9911c82f56fa8d73b04959d3d9d222895df6c0b28aa15");
}

// Around the 136-byte rate and several blocks (cross-checked with ethers' keccak256).
TEST(Keccak256, BlockBoundariesAndLongInput) {
  EXPECT_EQ(hex(keccak256(std::string(135, 'a'))), "34367dc248bbd832f4e3e69dfaac2f92638bd0bbd18f2912ba4ef454919cf446");
  EXPECT_EQ(hex(keccak256(std::string(136, 'a'))), "a6c4d403279fe3e0af03729caada8374b5ca54d8065329a3ebcaeb4b60aa386e");
  EXPECT_EQ(hex(keccak256(std::string(137, 'a'))), "d869f639c7046b4929fc92a4d988a8b22c55fbadb802c0c66ebcd484f1915f39");
  EXPECT_EQ(hex(keccak256(std::string(1000, 'a'))), "b6a4ac1f51884d71f30fa397a5e155de3099e11fc0edef5d08b646e621e19de9");
}

// The examples of EIP-55 itself.
TEST(Eip55, SpecExamples) {
  for (const char* a : {"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
                        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
                        "0x52908400098527886E0F7030069857D2E4169EE7", "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
                        "0xde709f2102306220921060314715629080e2fb77", "0x27b1fdb04752bbc536007a920d24acb045561c26"}) {
    EXPECT_TRUE(is_eip55(a)) << a;
    std::string lower = a;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_EQ(eip55_checksum(lower), std::string(a));
  }
}

TEST(Eip55, RefusesWrongChecksumAndShapes) {
  EXPECT_FALSE(is_eip55("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"));  // last letter's case flipped
  EXPECT_FALSE(is_eip55("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"));  // all lower, but letters need caps
  EXPECT_FALSE(eip55_checksum("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed00"));
  EXPECT_FALSE(eip55_checksum("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA"));
  EXPECT_FALSE(eip55_checksum("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg"));
}

// Bitcoin Core's base58_encode_decode.json vectors.
TEST(Base58, BitcoinVectors) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},
      {"61", "2g"},
      {"626262", "a3gV"},
      {"636363", "aPEr"},
      {"73696d706c792061206c6f6e6720737472696e67", "2cFupjhnEsSn59qHXstmK2ffpLv2"},
      {"00eb15231dfceb60925886b67d065299925915aeb172c06647", "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L"},
      {"516b6fcd0f", "ABnLTmg"},
      {"bf4f89001e670274dd", "3SEo3LWLoPntC"},
      {"572e4794", "3EFU7m"},
      {"ecac89cad93923c02321", "EJDM8drfXA6uyA"},
      {"10c8511e", "Rt5zm"},
      {"00000000000000000000", "1111111111"},
      {"000111d38e5fc9071ffcd20b4a763cc9ae4f252bb4e48fd66a835e252ada93ff480d6dd43dc62a641155a5",
       "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"},
  };
  for (const auto& [h, b58] : vectors) {
    const Bytes raw = *from_hex(h);
    EXPECT_EQ(base58_encode(raw), b58) << h;
    const auto back = base58_decode(b58);
    ASSERT_TRUE(back) << b58;
    EXPECT_EQ(*back, raw) << b58;
  }
}

TEST(Base58, RefusesCharactersOutsideTheAlphabet) {
  for (const char* bad : {"0", "O", "I", "l", "abc+", "2g "}) {
    EXPECT_FALSE(base58_decode(bad)) << bad;
  }
  EXPECT_FALSE(base58_decode(std::string_view("2g\0", 3)));
}

TEST(Hex, StrictDecoding) {
  EXPECT_EQ(*from_hex("00ffAb"), (Bytes{0x00, 0xff, 0xab}));
  EXPECT_FALSE(from_hex("0"));
  EXPECT_FALSE(from_hex("zz"));
  EXPECT_FALSE(from_hex("0x00"));
}

TEST(Base64, UrlAndStandard) {
  EXPECT_EQ(base64url_encode("\xfb\xff"), "-_8");
  EXPECT_EQ(*base64url_decode("-_8"), "\xfb\xff");
  EXPECT_FALSE(base64url_decode("+/8"));
  EXPECT_FALSE(base64url_decode("-_8="));
  EXPECT_EQ(*base64_decode("+/8="), (Bytes{0xfb, 0xff}));
  EXPECT_EQ(*base64_decode("+/8"), (Bytes{0xfb, 0xff}));
  EXPECT_FALSE(base64_decode("-_8"));
}

// ethers: new Wallet("0x4c0883a6…2318").signMessageSync("hello").
constexpr const char* kKeyAddress = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";
constexpr const char* kHelloSig =
    "a5d58782075bdf09490159d634d1aae66a8f6777c7247d2f233e9511cfd7c64c34f288cdbcea5370e4863fdbe9f4d86654c2ba1d86589e9ebb64494c649008591b";

TEST(Ecrecover, Eip191HashMatchesEthers) {
  EXPECT_EQ(hex(eip191_hash("hello")), "50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750");
}

TEST(Ecrecover, RecoversTheSignerOfAKnownSignature) {
  const auto r = ecrecover(eip191_hash("hello"), *from_hex(kHelloSig));
  ASSERT_TRUE(r.address);
  EXPECT_EQ(*r.address, kKeyAddress);
}

TEST(Ecrecover, AcceptsVAsZeroOrOne) {
  Bytes sig = *from_hex(kHelloSig);
  sig[64] -= 27;
  const auto r = ecrecover(eip191_hash("hello"), sig);
  ASSERT_TRUE(r.address);
  EXPECT_EQ(*r.address, kKeyAddress);
}

TEST(Ecrecover, OtherMessageRecoversAnotherAddress) {
  const auto r = ecrecover(eip191_hash("hello!"), *from_hex(kHelloSig));
  EXPECT_NE(r.address.value_or(""), kKeyAddress);
}

TEST(Ecrecover, RefusesHighS) {
  // s' = n - s with the recovery id flipped is the same signature's malleable twin.
  static constexpr std::uint8_t kOrder[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                              0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48,
                                              0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41};
  Bytes sig = *from_hex(kHelloSig);
  int borrow = 0;
  for (int i = 31; i >= 0; --i) {
    int d = kOrder[i] - sig[32 + i] - borrow;
    borrow = d < 0;
    sig[32 + i] = static_cast<std::uint8_t>(d + (borrow ? 256 : 0));
  }
  sig[64] = sig[64] == 27 ? 28 : 27;
  const auto r = ecrecover(eip191_hash("hello"), sig);
  EXPECT_FALSE(r.address);
  EXPECT_EQ(r.error, RecoverError::kHighS);
}

TEST(Ecrecover, RefusesBadLengthAndRecoveryId) {
  Bytes sig = *from_hex(kHelloSig);
  EXPECT_EQ(ecrecover(eip191_hash("hello"), Bytes(sig.begin(), sig.end() - 1)).error, RecoverError::kBadLength);
  sig[64] = 29;
  EXPECT_EQ(ecrecover(eip191_hash("hello"), sig).error, RecoverError::kBadRecoveryId);
}

TEST(Ecrecover, RoundTripsWithLibsecp256k1Signing) {
  auto* ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
  std::uint8_t key[32];
  for (int i = 0; i < 32; ++i) key[i] = static_cast<std::uint8_t>(i + 1);
  const Hash32 digest = eip191_hash("round trip");
  secp256k1_ecdsa_recoverable_signature rs;
  ASSERT_EQ(secp256k1_ecdsa_sign_recoverable(ctx, &rs, digest.data(), key, nullptr, nullptr), 1);
  Bytes sig(65);
  int recid = 0;
  secp256k1_ecdsa_recoverable_signature_serialize_compact(ctx, sig.data(), &recid, &rs);
  sig[64] = static_cast<std::uint8_t>(27 + recid);
  secp256k1_pubkey pub;
  ASSERT_EQ(secp256k1_ec_pubkey_create(ctx, &pub, key), 1);
  std::uint8_t raw[65];
  std::size_t len = 65;
  secp256k1_ec_pubkey_serialize(ctx, raw, &len, &pub, SECP256K1_EC_UNCOMPRESSED);
  const Hash32 h = keccak256(std::string_view(reinterpret_cast<const char*>(raw + 1), 64));
  const auto expected = eip55_checksum("0x" + to_hex(h.data() + 12, 20));
  secp256k1_context_destroy(ctx);
  const auto r = ecrecover(digest, sig);
  ASSERT_TRUE(r.address);
  EXPECT_EQ(r.address, expected);
}

TEST(Ed25519, VerifiesLibsodiumSignaturesOnly) {
  ASSERT_GE(sodium_init(), 0);
  Bytes pk(crypto_sign_PUBLICKEYBYTES), sk(crypto_sign_SECRETKEYBYTES), sig(crypto_sign_BYTES);
  crypto_sign_keypair(pk.data(), sk.data());
  const std::string msg = "sign in";
  crypto_sign_detached(sig.data(), nullptr, reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), sk.data());
  EXPECT_TRUE(ed25519_verify(pk, sig, msg));
  EXPECT_FALSE(ed25519_verify(pk, sig, "sign in!"));
  Bytes bad = sig;
  bad[10] ^= 1;
  EXPECT_FALSE(ed25519_verify(pk, bad, msg));
  EXPECT_FALSE(ed25519_verify(Bytes(31), sig, msg));
  EXPECT_FALSE(ed25519_verify(pk, Bytes(63), msg));
}

TEST(Hmac, Rfc4231Case2) {
  const Hash32 mac = hmac_sha256("Jefe", "what do ya want for nothing?");
  EXPECT_EQ(hex(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(ConstantTimeEqual, ComparesContentAndLength) {
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "abcd"));
}

}  // namespace
}  // namespace alou::wallet
