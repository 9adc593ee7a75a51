// SHA-256 against the published FIPS 180-2 examples.
#include "alou/core/sha256.hpp"

#include <gtest/gtest.h>

#include <string>
#include <thread>

TEST(Sha256, PublishedVectors) {
  EXPECT_EQ(alou::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(alou::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(alou::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(alou::sha256_hex(std::string(1'000'000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, ReusedAndPerThreadStateGivesTheSameDigests) {
  const auto first = alou::sha256_hex("abc");
  EXPECT_EQ(alou::sha256_hex("abc"), first);  // the thread's context, reused
  std::string other;
  std::thread t([&] { other = alou::sha256_hex("abc"); });
  t.join();
  EXPECT_EQ(other, first);
  const auto d = alou::sha256("abc");
  EXPECT_EQ(d[0], 0xba);
  EXPECT_EQ(d[31], 0xad);
}
