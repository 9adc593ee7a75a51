#pragma once
// Where a deployed binary finds the files it ships with (migrations/, web/):
// no path of the source tree is compiled in.
#include <filesystem>
#include <string_view>

namespace alou {

// The directory of the running executable (/proc/self/exe), or empty.
std::filesystem::path executable_dir();

// `name` (a directory) as given when it is absolute or exists relative to
// the working directory; else next to the executable (<exe dir>/<name>),
// else in <exe dir>/../share/alou/<name> (an installed layout). Returns the
// first that exists, or `name` unchanged (the caller reports it missing).
std::filesystem::path find_resource_dir(const std::filesystem::path& name);

}  // namespace alou
