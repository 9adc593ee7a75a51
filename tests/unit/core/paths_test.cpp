#include "alou/core/paths.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace alou {
namespace {

namespace fs = std::filesystem;

TEST(Paths, TheExecutableDirIsWhereThisTestRuns) {
  const auto dir = executable_dir();
  ASSERT_FALSE(dir.empty());
  EXPECT_TRUE(fs::exists(dir / "alou_unit_core"));
}

TEST(Paths, AResourceIsFoundNextToTheBinaryWhateverTheWorkingDirectory) {
  const std::string name = "alou-paths-test-" + std::to_string(::getpid());
  const auto beside = executable_dir() / name;
  fs::create_directory(beside);
  const auto cwd = fs::current_path();
  fs::current_path(fs::temp_directory_path());
  EXPECT_EQ(find_resource_dir(name), beside);
  // In the working directory, it wins.
  fs::create_directory(name);
  EXPECT_EQ(find_resource_dir(name), fs::path(name));
  fs::remove(name);
  // Absolute paths and names found nowhere come back as given.
  EXPECT_EQ(find_resource_dir("/no/such/dir"), fs::path("/no/such/dir"));
  EXPECT_EQ(find_resource_dir(name + "-missing"), fs::path(name + "-missing"));
  fs::current_path(cwd);
  fs::remove(beside);
}

}  // namespace
}  // namespace alou
