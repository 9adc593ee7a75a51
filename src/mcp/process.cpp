#include "process.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/as_tuple.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>

extern char** environ;

namespace alou::mcp {
namespace net = boost::asio;

namespace {

struct Pipe {
  int r = -1;
  int w = -1;
  bool open() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    r = fds[0];
    w = fds[1];
    return true;
  }
  void close_all() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
    r = w = -1;
  }
};

void set_limit(int resource, std::uint64_t soft, std::uint64_t hard) {
  struct rlimit rl;
  rl.rlim_cur = static_cast<rlim_t>(soft);
  rl.rlim_max = static_cast<rlim_t>(hard);
  ::setrlimit(resource, &rl);
}

}  // namespace

void ignore_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] { std::signal(SIGPIPE, SIG_IGN); });
}

std::vector<std::string> allowed_env(const std::vector<std::string>& allow) {
  std::vector<std::string> out;
  auto add = [&out](const std::string& name) {
    for (const auto& e : out) {
      if (e.compare(0, name.size() + 1, name + "=") == 0) return;
    }
    if (const char* v = std::getenv(name.c_str())) out.push_back(name + "=" + v);
  };
  add("PATH");
  for (const auto& n : allow) add(n);
  return out;
}

Result<ChildProcess> spawn_process(const SpawnSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) return Error::internal("empty command", "spawn_failed");
  // Everything the child touches is prepared before fork: after it, only
  // async-signal-safe calls.
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const char* cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  const bool search = spec.argv[0].find('/') == std::string::npos;
  // PATH lookup uses the child's PATH, as a shell would.
  std::string path_value = "/usr/local/bin:/usr/bin:/bin";
  for (const auto& e : spec.env) {
    if (e.rfind("PATH=", 0) == 0) path_value = e.substr(5);
  }
  std::vector<std::string> candidates;
  if (search) {
    std::size_t start = 0;
    while (start <= path_value.size()) {
      auto end = path_value.find(':', start);
      if (end == std::string::npos) end = path_value.size();
      std::string dir = path_value.substr(start, end - start);
      candidates.push_back((dir.empty() ? std::string(".") : dir) + "/" + spec.argv[0]);
      start = end + 1;
    }
  } else {
    candidates.push_back(spec.argv[0]);
  }
  std::vector<const char*> cand;
  for (const auto& c : candidates) cand.push_back(c.c_str());

  Pipe in, out, err, status;
  if (!in.open() || !out.open() || !err.open() || !status.open()) {
    const int e = errno;
    in.close_all();
    out.close_all();
    err.close_all();
    status.close_all();
    return Error::internal(std::string("pipe: ") + std::strerror(e), "spawn_failed");
  }
  const Rlimits lim = spec.limits;
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    in.close_all();
    out.close_all();
    err.close_all();
    status.close_all();
    return Error::internal(std::string("fork: ") + std::strerror(e), "spawn_failed");
  }
  if (pid == 0) {
    // The child.
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(in.r, 0);
    ::dup2(out.w, 1);
    ::dup2(err.w, 2);
    int code = 0;
    if (cwd && ::chdir(cwd) != 0) code = errno;
    if (code == 0) {
      if (lim.cpu_s) set_limit(RLIMIT_CPU, *lim.cpu_s, *lim.cpu_s + 1);
      if (lim.memory_bytes) set_limit(RLIMIT_AS, *lim.memory_bytes, *lim.memory_bytes);
      if (lim.fsize_bytes) set_limit(RLIMIT_FSIZE, *lim.fsize_bytes, *lim.fsize_bytes);
      if (lim.nproc) set_limit(RLIMIT_NPROC, *lim.nproc, *lim.nproc);
      code = ENOENT;
      for (const char* c : cand) {
        ::execve(c, argv.data(), envp.data());
        if (errno != ENOENT && errno != ENOTDIR) code = errno;
      }
    }
    const int tag = cwd && code != 0 && ::access(cwd, X_OK) != 0 ? 1 : 0;
    const int msg[2] = {tag, code};
    [[maybe_unused]] auto n = ::write(status.w, msg, sizeof msg);
    ::_exit(127);
  }
  // The parent.
  ::setpgid(pid, pid);  // also here, so the group exists before we signal it
  ::close(in.r);
  ::close(out.w);
  ::close(err.w);
  ::close(status.w);
  int msg[2] = {0, 0};
  ssize_t n = 0;
  do {
    n = ::read(status.r, msg, sizeof msg);
  } while (n < 0 && errno == EINTR);
  ::close(status.r);
  if (n == static_cast<ssize_t>(sizeof msg)) {
    int st = 0;
    ::waitpid(pid, &st, 0);
    ::close(in.w);
    ::close(out.r);
    ::close(err.r);
    const std::string what = msg[0] == 1 ? "cannot enter working directory " + spec.cwd : "cannot run " + spec.argv[0];
    return Error::internal(what + ": " + std::strerror(msg[1]), "spawn_failed");
  }
  return ChildProcess{.pid = pid, .stdin_fd = in.w, .stdout_fd = out.r, .stderr_fd = err.r};
}

void kill_group(pid_t pid, int sig) {
  if (pid > 0) ::kill(-pid, sig);
}

net::awaitable<int> reap(pid_t pid, std::chrono::milliseconds grace) {
  net::steady_timer timer(co_await net::this_coro::executor);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  bool killed = false;
  auto delay = std::chrono::milliseconds(1);
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      // The leader is gone; take any of its group still around with it.
      kill_group(pid, SIGKILL);
      co_return st;
    }
    if (r < 0 && errno != EINTR) co_return 0;  // not our child (already reaped)
    if (!killed && std::chrono::steady_clock::now() >= deadline) {
      kill_group(pid, SIGKILL);
      killed = true;
    }
    timer.expires_after(delay);
    co_await timer.async_wait(net::as_tuple(net::use_awaitable));
    delay = std::min(delay * 2, std::chrono::milliseconds(20));
  }
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int s = WTERMSIG(status);
    const char* name = ::strsignal(s);
    return "killed by signal " + std::to_string(s) + " (" + (name ? name : "?") + ")";
  }
  return "status " + std::to_string(status);
}

}  // namespace alou::mcp
