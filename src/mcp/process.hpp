#pragma once
// Child processes without a shell: fork/exec of an argv with pipes for
// stdin/stdout/stderr, a complete (scrubbed) environment, a working
// directory and rlimits, in a process group of its own so that the whole
// tree (npx → sh → node …) can be signalled at once. Used for stdio MCP
// servers and command tools.
//
// A child never outlives Alou, however Alou ends (docs/operations.md):
// - it inherits no descriptor of Alou's but its three pipes: everything else
//   is closed in the child before exec (so it cannot hold the listening
//   socket, a connection or the journal);
// - it gets SIGKILL when Alou dies (PR_SET_PDEATHSIG; a parent that died
//   before that call is caught by comparing getppid() with Alou's pid);
// - its process group (the grandchildren, which pdeathsig does not cover)
//   is killed by the child guard: a small /bin/sh process, started with the
//   first child, that reads "+ PGID" / "- PGID" records from a pipe whose
//   only writer is Alou and, at end of input (Alou is gone, even by
//   kill -9), sends SIGKILL to every group still listed. A grandchild that
//   leaves its group (setsid, setpgid) escapes it.
#include "alou/core/error.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace alou::mcp {

struct Rlimits {
  std::optional<std::uint64_t> cpu_s;         // RLIMIT_CPU (SIGXCPU, then SIGKILL a second later)
  std::optional<std::uint64_t> memory_bytes;  // RLIMIT_AS
  std::optional<std::uint64_t> fsize_bytes;   // RLIMIT_FSIZE
  std::optional<std::uint64_t> nproc;         // RLIMIT_NPROC (counted per user, as the kernel does)
};

struct SpawnSpec {
  std::vector<std::string> argv;   // argv[0] is looked up in PATH when it has no '/'
  std::vector<std::string> env;    // the child's whole environment, "NAME=value"
  std::string cwd;                 // empty: Alou's
  Rlimits limits;
};

struct ChildProcess {
  pid_t pid = -1;                  // also the process group id
  int stdin_fd = -1;               // ours: write end
  int stdout_fd = -1;              // ours: read end
  int stderr_fd = -1;              // ours: read end
};

// Starts the process. Errors (500 spawn_failed) name argv[0] and errno's
// text: not found, not executable, a cwd that does not exist. Blocks only
// for fork/exec itself (the exec status comes back through a CLOEXEC pipe).
// Starts the child guard first if it is not running (a warning is logged,
// once, if it cannot start; the child still starts).
//
// PR_SET_PDEATHSIG fires when the *thread* that forked exits, not only the
// process: call this from threads that live as long as the children do
// (Alou's io threads, joined only after every child was ended).
Result<ChildProcess> spawn_process(const SpawnSpec& spec);

// The environment for a child: PATH (so that argv[0] and interpreters
// resolve), then every name in `allow` that Alou's environment has.
std::vector<std::string> allowed_env(const std::vector<std::string>& allow);

// Signals the process group (ignores errors: it may be gone).
void kill_group(pid_t pid, int sig);

class RunningChildren;

// Waits for the process to exit without blocking the thread (waitpid
// WNOHANG on a short timer); after `grace` sends SIGKILL to its group. Once
// the leader is reaped, SIGKILL goes to whatever is left of its group and
// the group is struck from the child guard's list. `runs`, if given, is the
// set the child was added to: it leaves it as it is reaped. Returns the wait
// status (0 if the process was not a child of ours).
boost::asio::awaitable<int> reap(pid_t pid, std::chrono::milliseconds grace, RunningChildren* runs = nullptr);

// "exit code 3", "killed by signal 9 (Killed)".
std::string describe_status(int status);

// Ignores SIGPIPE process-wide (once): a child that closed its stdin must
// not kill Alou on our next write.
void ignore_sigpipe();

// The children of one owner that are running now (command tools in flight),
// so that its shutdown can end them and wait until each is reaped.
// Thread-safe.
class RunningChildren {
 public:
  // Records a started child; false once close() was called (the caller
  // then ends and reaps the child itself).
  bool add(pid_t pid);
  // From now on add() refuses.
  void close();
  bool closed() const;
  std::size_t size() const;
  // Signals the group of every child recorded.
  void signal_all(int sig);
  // waitpid(WNOHANG) under the lock, so that signal_all never reaches a
  // pid that was reaped (and may be reused); a reaped child leaves the set.
  pid_t wait_nohang(pid_t pid, int* status);

 private:
  mutable std::mutex mu_;
  std::vector<pid_t> pids_;
  bool closed_ = false;
};

// Ends every child in `runs`: close(), SIGTERM to each group, SIGKILL to
// those still running after `grace`, then waits (up to 2 s more) until each
// is reaped by whoever started it.
boost::asio::awaitable<void> end_children(RunningChildren& runs, std::chrono::milliseconds grace);

}  // namespace alou::mcp
