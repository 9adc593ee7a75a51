#pragma once
// Randomness from libsodium's CSPRNG.
#include <cstddef>
#include <string>

namespace alou {

// `n` characters from [A-Za-z0-9], uniformly (rejection sampling).
std::string random_alnum(std::size_t n);
// `n` random bytes as lowercase hex (2n characters).
std::string random_hex(std::size_t n);

}  // namespace alou
