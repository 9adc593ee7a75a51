#include "alou/core/paths.hpp"

#include <system_error>

namespace alou {

std::filesystem::path executable_dir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : exe.parent_path();
}

std::filesystem::path find_resource_dir(const std::filesystem::path& name) {
  std::error_code ec;
  if (name.is_absolute() || std::filesystem::is_directory(name, ec)) return name;
  const auto dir = executable_dir();
  if (dir.empty()) return name;
  for (const auto& candidate : {dir / name, dir.parent_path() / "share" / "alou" / name}) {
    if (std::filesystem::is_directory(candidate, ec)) return candidate;
  }
  return name;
}

}  // namespace alou
