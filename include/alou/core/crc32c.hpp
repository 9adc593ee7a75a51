#pragma once
// CRC-32C (Castagnoli, the iSCSI polynomial 0x1EDC6F41, reflected), the
// checksum of the ledger's settlement journal. Computed with the SSE4.2
// crc32 instruction where the CPU has it (8 bytes per instruction), else
// with a table; both give the same value (RFC 3720 B.4's vectors are the
// tests), so a journal can move between machines.
#include <cstdint>
#include <string_view>

namespace alou {

std::uint32_t crc32c(std::string_view data) noexcept;

// The two ways, for tests.
std::uint32_t crc32c_table(std::string_view data) noexcept;
bool crc32c_hardware_available() noexcept;
std::uint32_t crc32c_hardware(std::string_view data) noexcept;  // only if available

}  // namespace alou
