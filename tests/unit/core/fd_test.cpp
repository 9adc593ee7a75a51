#include "alou/core/fd.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace alou {
namespace {

TEST(SetCloexec, MarksADescriptorOpenedWithoutIt) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::fcntl(fds[0], F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_TRUE(set_cloexec(fds[0]));
  EXPECT_NE(::fcntl(fds[0], F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_EQ(::fcntl(fds[1], F_GETFD) & FD_CLOEXEC, 0);  // only the one asked for
  EXPECT_TRUE(set_cloexec(fds[0]));                      // already set: still true
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(SetCloexec, FailsOnAClosedDescriptor) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ::close(fds[0]);
  ::close(fds[1]);
  errno = 0;
  EXPECT_FALSE(set_cloexec(fds[0]));
  EXPECT_EQ(errno, EBADF);
}

}  // namespace
}  // namespace alou
