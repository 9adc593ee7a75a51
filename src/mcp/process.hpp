#pragma once
// Child processes without a shell: fork/exec of an argv with pipes for
// stdin/stdout/stderr, a complete (scrubbed) environment, a working
// directory and rlimits, in a process group of its own so that the whole
// tree (npx → node → …) can be signalled at once. Used for stdio MCP servers
// and command tools.
#include "alou/core/error.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
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
Result<ChildProcess> spawn_process(const SpawnSpec& spec);

// The environment for a child: PATH (so that argv[0] and interpreters
// resolve), then every name in `allow` that Alou's environment has.
std::vector<std::string> allowed_env(const std::vector<std::string>& allow);

// Signals the process group (ignores errors: it may be gone).
void kill_group(pid_t pid, int sig);

// Waits for the process to exit without blocking the thread (waitpid
// WNOHANG on a short timer); after `grace` sends SIGKILL to its group.
// Returns the wait status.
boost::asio::awaitable<int> reap(pid_t pid, std::chrono::milliseconds grace);

// "exit code 3", "killed by signal 9 (Killed)".
std::string describe_status(int status);

// Ignores SIGPIPE process-wide (once): a child that closed its stdin must
// not kill Alou on our next write.
void ignore_sigpipe();

}  // namespace alou::mcp
