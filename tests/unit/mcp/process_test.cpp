#include "mcp/process.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

namespace alou::mcp {
namespace {

namespace net = boost::asio;
using namespace std::chrono_literals;

// Reads one line from `fd` (blocking, up to `timeout`); "" on EOF or timeout.
std::string read_line(int fd, std::chrono::milliseconds timeout = 10s) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char c = 0;
    if (::read(fd, &c, 1) != 1) break;
    if (c == '\n') return line;
    line += c;
  }
  return "";
}

// fd number -> readlink of /proc/PID/fd/N.
std::map<int, std::string> descriptors_of(pid_t pid) {
  std::map<int, std::string> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char target[512];
    const ssize_t n = ::readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
    out[std::atoi(e->d_name)] = n > 0 ? std::string(target, static_cast<std::size_t>(n)) : "?";
  }
  ::closedir(d);
  return out;
}

std::string pipe_name(int fd) {
  struct stat st {};
  ::fstat(fd, &st);
  return "pipe:[" + std::to_string(st.st_ino) + "]";
}

int reap_now(pid_t pid, std::chrono::milliseconds grace) {
  net::io_context ioc;
  auto done = net::co_spawn(ioc, reap(pid, grace), net::use_future);
  ioc.run();
  return done.get();
}

// Waits, without polling, until `pid` has exited (a zombie counts): its
// pidfd becomes readable. False if it still runs after `timeout`.
bool exited_within(pid_t pid, std::chrono::milliseconds timeout) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;  // gone already
  pollfd p{fd, POLLIN, 0};
  int r = 0;
  do {
    r = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (r < 0 && errno == EINTR);
  ::close(fd);
  return r == 1;
}

// Waits for a child of ours (an orphan handed to us as subreaper) to end:
// its wait status, or -1 if it still runs after `timeout`.
int wait_for(pid_t pid, std::chrono::milliseconds timeout) {
  if (!exited_within(pid, timeout)) return -1;
  int st = 0;
  return ::waitpid(pid, &st, 0) == pid ? st : -1;
}

// The one-letter state in /proc/PID/stat ('Z': zombie); 0 if there is none.
char state_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');
  return close == std::string::npos || close + 2 >= all.size() ? 0 : all[close + 2];
}

// The pid of the child guard that `parent` started (its argv[0] says so).
pid_t guard_of(pid_t parent) {
  DIR* d = ::opendir("/proc");
  pid_t found = -1;
  while (const dirent* e = d ? ::readdir(d) : nullptr) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream stat(std::string("/proc/") + e->d_name + "/stat");
    std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto close = all.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(all.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid != parent) continue;
    std::ifstream cmd(std::string("/proc/") + e->d_name + "/cmdline");
    std::string argv0;
    std::getline(cmd, argv0, '\0');
    if (argv0 == "alou-child-guard") found = std::atoi(e->d_name);
  }
  if (d) ::closedir(d);
  return found;
}

TEST(SpawnProcess, AChildHoldsNoDescriptorOfItsParentButItsThreePipes) {
  // Opened without CLOEXEC, as Asio opens sockets and accepts connections.
  const int file = ::open("/dev/null", O_RDONLY);
  const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(file, 0);
  ASSERT_GE(sock, 0);
  ASSERT_EQ(::fcntl(sock, F_GETFD) & FD_CLOEXEC, 0);
  auto child = spawn_process({.argv = {"cat"}, .env = allowed_env({}), .cwd = {}, .limits = {}});
  ASSERT_TRUE(child) << child.error().message;
  // An echoed line: cat runs (the exec is done).
  ASSERT_EQ(::write(child->stdin_fd, "x\n", 2), 2);
  ASSERT_EQ(read_line(child->stdout_fd), "x");
  const auto fds = descriptors_of(child->pid);
  const std::map<int, std::string> want{
      {0, pipe_name(child->stdin_fd)}, {1, pipe_name(child->stdout_fd)}, {2, pipe_name(child->stderr_fd)}};
  EXPECT_EQ(fds, want);
  ::close(child->stdin_fd);
  const int st = reap_now(child->pid, 5s);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << describe_status(st);
  ::close(child->stdout_fd);
  ::close(child->stderr_fd);
  ::close(file);
  ::close(sock);
}

// Forks an intermediate process that spawns `argv` and reports the child's
// pid and the first line the child prints; the test then kills it.
struct Intermediate {
  pid_t pid = -1;
  pid_t child = -1;
  std::string first_line;
};

Intermediate start_intermediate(std::vector<std::string> argv) {
  int report[2];
  if (::pipe(report) != 0) return {};
  const pid_t mid = ::fork();
  if (mid == 0) {
    ::close(report[0]);
    auto c = spawn_process({.argv = std::move(argv), .env = allowed_env({}), .cwd = {}, .limits = {}});
    if (!c) ::_exit(1);
    const std::string msg = std::to_string(c->pid) + "\n" + read_line(c->stdout_fd) + "\n";
    if (::write(report[1], msg.data(), msg.size()) < 0) ::_exit(1);
    for (;;) ::pause();
  }
  ::close(report[1]);
  Intermediate m{.pid = mid, .child = -1, .first_line = {}};
  m.child = std::atoi(read_line(report[0]).c_str());
  m.first_line = read_line(report[0]);
  ::close(report[0]);
  return m;
}

// Orphans are handed to the test process, so that it can wait for them.
class Subreaper : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0); }
  void TearDown() override { ::prctl(PR_SET_CHILD_SUBREAPER, 0); }
};

TEST_F(Subreaper, AChildDiesWithItsParentWithoutTheGuard) {
  const Intermediate m = start_intermediate({"sh", "-c", "echo up; exec sleep 60"});
  ASSERT_GT(m.pid, 0);
  ASSERT_GT(m.child, 0);
  ASSERT_EQ(m.first_line, "up");
  // Without the guard only the child's own pdeathsig can end it.
  const pid_t guard = guard_of(m.pid);
  ASSERT_GT(guard, 0) << "the intermediate started no child guard";
  ASSERT_EQ(::kill(guard, SIGKILL), 0);
  ASSERT_TRUE(exited_within(guard, 2s));
  ASSERT_EQ(state_of(guard), 'Z');
  ASSERT_EQ(::kill(m.pid, SIGKILL), 0);
  ASSERT_EQ(::waitpid(m.pid, nullptr, 0), m.pid);
  wait_for(guard, 1s);  // the zombie, handed to us with the intermediate's death
  const int st = wait_for(m.child, 1s);
  ASSERT_NE(st, -1) << "the child outlived its parent";
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << describe_status(st);
}

TEST_F(Subreaper, TheChildsWholeGroupDiesWithItsParent) {
  // sh is the child (its pdeathsig covers it); the backgrounded sleep is a
  // grandchild in its group, which only the guard can reach.
  const Intermediate m = start_intermediate({"sh", "-c", "sleep 60 & echo $!; wait"});
  ASSERT_GT(m.pid, 0);
  ASSERT_GT(m.child, 0);
  const pid_t grandchild = std::atoi(m.first_line.c_str());
  ASSERT_GT(grandchild, 0) << m.first_line;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(m.pid, SIGKILL), 0);
  ASSERT_EQ(::waitpid(m.pid, nullptr, 0), m.pid);
  const int child_st = wait_for(m.child, 1s);
  const int grandchild_st = wait_for(grandchild, 1s);
  EXPECT_NE(child_st, -1) << "the child outlived its parent";
  EXPECT_NE(grandchild_st, -1) << "the grandchild outlived the child's parent";
  EXPECT_TRUE(WIFSIGNALED(grandchild_st) && WTERMSIG(grandchild_st) == SIGKILL) << describe_status(grandchild_st);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  if (child_st == -1) ::kill(m.child, SIGKILL);
  if (grandchild_st == -1) ::kill(grandchild, SIGKILL);
}

TEST(SpawnProcess, AFailedExecIsAnErrorAndLeavesNoChild) {
  auto child = spawn_process({.argv = {"alou-no-such-program"}, .env = allowed_env({}), .cwd = {}, .limits = {}});
  ASSERT_FALSE(child);
  EXPECT_EQ(child.error().code, "spawn_failed");
  EXPECT_NE(child.error().message.find("alou-no-such-program"), std::string::npos) << child.error().message;
}

TEST(RunningChildren, ShutdownEndsEveryRunAndRefusesNewOnes) {
  auto runs = std::make_shared<RunningChildren>();
  auto child = spawn_process({.argv = {"sleep", "60"}, .env = allowed_env({}), .cwd = {}, .limits = {}});
  ASSERT_TRUE(child) << child.error().message;
  ASSERT_TRUE(runs->add(child->pid));
  net::io_context ioc;
  // The run's own reaper, as a command tool has one.
  auto reaped = net::co_spawn(ioc, reap(child->pid, 60s, runs.get()), net::use_future);
  auto ended = net::co_spawn(ioc, end_children(*runs, 2s), net::use_future);
  const auto t0 = std::chrono::steady_clock::now();
  ioc.run();
  ended.get();
  const int st = reaped.get();
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM) << describe_status(st);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(runs->size(), 0u);
  EXPECT_FALSE(runs->add(12345));
  ::close(child->stdin_fd);
  ::close(child->stdout_fd);
  ::close(child->stderr_fd);
}

}  // namespace
}  // namespace alou::mcp
