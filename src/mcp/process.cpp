#include "process.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

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

// ---- async-signal-safe helpers, for the time between fork and exec ----

void set_limit(int resource, std::uint64_t soft, std::uint64_t hard) {
  struct rlimit rl;
  rl.rlim_cur = static_cast<rlim_t>(soft);
  rl.rlim_max = static_cast<rlim_t>(hard);
  ::setrlimit(resource, &rl);
}

// A descriptor about to be dup2'ed onto 0-2 must not be one of 0-2 itself
// (Alou started with a standard stream closed gets pipes there): the dup2
// of another would close it, and dup2(fd, fd) would keep its CLOEXEC.
// Returns the descriptor, moved to 3 or above (CLOEXEC) if it was below; -1
// on failure.
int lift(int fd) noexcept { return fd >= 3 ? fd : ::fcntl(fd, F_DUPFD_CLOEXEC, 3); }

bool close_span(unsigned lo, unsigned hi) noexcept { return lo > hi || ::close_range(lo, hi, 0) == 0; }

// Closes every descriptor from 3 up except `keep` (-1: none). close_range(2)
// needs Linux 5.9; before it, the numbers /proc/self/fd lists, else every
// number below RLIMIT_NOFILE.
void close_inherited(int keep) noexcept {
  const bool done = keep >= 3 ? close_span(3, static_cast<unsigned>(keep) - 1) &&
                                    close_span(static_cast<unsigned>(keep) + 1, ~0U)
                              : close_span(3, ~0U);
  if (done) return;
  const int dir = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    alignas(struct dirent64) char buf[4096];
    for (;;) {
      const ssize_t n = ::getdents64(dir, buf, sizeof buf);
      if (n <= 0) break;
      for (ssize_t off = 0; off < n;) {
        const auto* d = reinterpret_cast<const struct dirent64*>(buf + off);
        off += d->d_reclen;
        int fd = 0;
        const char* c = d->d_name;
        if (*c < '0' || *c > '9') continue;  // "." and ".."
        for (; *c >= '0' && *c <= '9'; ++c) fd = fd * 10 + (*c - '0');
        if (fd >= 3 && fd != keep && fd != dir) ::close(fd);
      }
    }
    ::close(dir);
    return;
  }
  struct rlimit rl;
  const rlim_t top = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                         ? std::min<rlim_t>(rl.rlim_cur, 1 << 20)
                         : 1 << 16;
  for (int fd = 3; fd < static_cast<int>(top); ++fd) {
    if (fd != keep) ::close(fd);
  }
}

// One guard record, "+ 1234\n" or "- 1234\n": one write(2) of fewer than
// PIPE_BUF bytes, so records of several writers never interleave.
void put_record(int fd, char op, pid_t pid) noexcept {
  char buf[32];
  std::size_t n = sizeof buf;
  buf[--n] = '\n';
  auto v = static_cast<unsigned long>(pid);
  do {
    buf[--n] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  buf[--n] = ' ';
  buf[--n] = op;
  ssize_t r = 0;
  do {
    r = ::write(fd, buf + n, sizeof buf - n);
  } while (r < 0 && errno == EINTR);
}

// ---- the child guard (see process.hpp) ----

// Run by /bin/sh (builtins only). The set is a string of " PGID " entries.
constexpr const char* kGuardScript = R"(trap '' INT HUP
g=' '
while read -r op p; do
  case $p in ''|*[!0-9]*) continue ;; esac
  case $op in
    +) case $g in *" $p "*) ;; *) g="$g$p " ;; esac ;;
    -) case $g in *" $p "*) g="${g%% $p *} ${g#* $p }" ;; esac ;;
  esac
done
for p in $g; do kill -s KILL -- "-$p" 2>/dev/null; done
)";

class Guard {
 public:
  static Guard& instance() {
    static Guard g;
    return g;
  }

  // Under lock(): the write end of the running guard's pipe, starting the
  // guard if needed; -1 if it cannot run.
  int ensure() {
    if (owner_ != ::getpid()) {
      // A fork of Alou's (a test's intermediate process): the guard and the
      // groups are the parent's, not ours.
      if (fd_ >= 0) ::close(fd_);
      fd_ = -1;
      pid_ = -1;
      groups_.clear();
      owner_ = ::getpid();
    }
    if (pid_ > 0) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == 0) return fd_;
      spdlog::warn("the child guard (pid {}) is gone; starting another", pid_);
      ::close(fd_);
      fd_ = -1;
      pid_ = -1;
    }
    start();
    return fd_;
  }

  void add(pid_t pgid) { groups_.insert(pgid); }

  // The group's leader was reaped: nothing of it is left to guard.
  void forget(pid_t pgid) {
    std::lock_guard l(mu_);
    if (owner_ != ::getpid()) return;
    groups_.erase(pgid);
    if (fd_ >= 0) put_record(fd_, '-', pgid);
  }

  std::unique_lock<std::mutex> lock() { return std::unique_lock(mu_); }

 private:
  void start() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail(errno);
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int e = errno;
      ::close(fds[0]);
      ::close(fds[1]);
      return fail(e);
    }
    if (pid == 0) {
      // Its own group: a signal to Alou's group (a terminal's Ctrl-C) must
      // not end it before Alou. No pdeathsig: it has to outlive Alou.
      ::setpgid(0, 0);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      const int in = lift(fds[0]);
      const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
      if (in < 0 || null < 0 || ::dup2(in, 0) < 0 || ::dup2(null, 1) < 0 || ::dup2(null, 2) < 0) ::_exit(127);
      close_inherited(-1);
      const char* argv[] = {"alou-child-guard", "-c", kGuardScript, nullptr};
      const char* envp[] = {"PATH=/usr/bin:/bin", nullptr};
      ::execve("/bin/sh", const_cast<char* const*>(argv), const_cast<char* const*>(envp));
      ::_exit(127);
    }
    ::close(fds[0]);
    // Never block an io thread on a full pipe (it holds thousands of
    // records; the guard reads them as they come).
    ::fcntl(fds[1], F_SETFL, ::fcntl(fds[1], F_GETFL) | O_NONBLOCK);
    pid_ = pid;
    fd_ = fds[1];
    for (const pid_t g : groups_) put_record(fd_, '+', g);
    spdlog::debug("child guard started (pid {})", pid_);
  }

  void fail(int e) {
    if (!warned_) spdlog::warn("cannot start the child guard ({}): grandchildren may outlive a crash", std::strerror(e));
    warned_ = true;
  }

  std::mutex mu_;
  pid_t owner_ = ::getpid();
  pid_t pid_ = -1;
  int fd_ = -1;
  std::set<pid_t> groups_;  // re-sent to a guard that replaces a dead one
  bool warned_ = false;
};

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
  // The guard's pipe and a closed child stdin must not raise SIGPIPE in Alou.
  ignore_sigpipe();
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
  const pid_t parent = ::getpid();
  // Held across fork: the guard's descriptor stays the one the child copies.
  Guard& guard = Guard::instance();
  auto guard_lock = guard.lock();
  const int guard_fd = guard.ensure();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    guard_lock.unlock();
    in.close_all();
    out.close_all();
    err.close_all();
    status.close_all();
    return Error::internal(std::string("fork: ") + std::strerror(e), "spawn_failed");
  }
  if (pid == 0) {
    // The child. First its life is tied to Alou's: SIGKILL when the thread
    // that forked (an io thread, which lives as long as Alou) exits; had
    // Alou died before this call, the child is an orphan already.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::setpgid(0, 0);
    // Listed before exec: no instant in which a grandchild could exist
    // unguarded.
    if (guard_fd >= 0) put_record(guard_fd, '+', ::getpid());
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    int code = 0;
    const int child_in = lift(in.r), child_out = lift(out.w), child_err = lift(err.w), status_w = lift(status.w);
    if (child_in < 0 || child_out < 0 || child_err < 0 || status_w < 0 || ::dup2(child_in, 0) < 0 ||
        ::dup2(child_out, 1) < 0 || ::dup2(child_err, 2) < 0) {
      code = errno;
    }
    // Nothing of Alou's but the three pipes: not the listening socket, a
    // connection, the journal, the guard's pipe. The status pipe is
    // CLOEXEC: exec closes it.
    close_inherited(status_w);
    if (code == 0 && cwd && ::chdir(cwd) != 0) code = errno;
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
    [[maybe_unused]] auto n = ::write(status_w, msg, sizeof msg);
    ::_exit(127);
  }
  // The parent.
  guard.add(pid);
  guard_lock.unlock();
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
    guard.forget(pid);
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

net::awaitable<int> reap(pid_t pid, std::chrono::milliseconds grace, RunningChildren* runs) {
  net::steady_timer timer(co_await net::this_coro::executor);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  bool killed = false;
  auto delay = std::chrono::milliseconds(1);
  for (;;) {
    int st = 0;
    const pid_t r = runs ? runs->wait_nohang(pid, &st) : ::waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      // The leader is gone; take any of its group still around with it.
      kill_group(pid, SIGKILL);
      Guard::instance().forget(pid);
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

// ---- RunningChildren ----

bool RunningChildren::add(pid_t pid) {
  std::lock_guard l(mu_);
  if (closed_) return false;
  pids_.push_back(pid);
  return true;
}

void RunningChildren::close() {
  std::lock_guard l(mu_);
  closed_ = true;
}

bool RunningChildren::closed() const {
  std::lock_guard l(mu_);
  return closed_;
}

std::size_t RunningChildren::size() const {
  std::lock_guard l(mu_);
  return pids_.size();
}

void RunningChildren::signal_all(int sig) {
  std::lock_guard l(mu_);
  for (const pid_t p : pids_) kill_group(p, sig);
}

pid_t RunningChildren::wait_nohang(pid_t pid, int* status) {
  std::lock_guard l(mu_);
  const pid_t r = ::waitpid(pid, status, WNOHANG);
  const int e = errno;
  if (r == pid || (r < 0 && e == ECHILD)) std::erase(pids_, pid);
  errno = e;
  return r;
}

net::awaitable<void> end_children(RunningChildren& runs, std::chrono::milliseconds grace) {
  runs.close();
  if (runs.size() == 0) co_return;
  spdlog::info("ending {} command run(s) still in flight", runs.size());
  runs.signal_all(SIGTERM);
  net::steady_timer t(co_await net::this_coro::executor);
  const auto wait_until = [&](std::chrono::steady_clock::time_point deadline) -> net::awaitable<void> {
    while (runs.size() > 0 && std::chrono::steady_clock::now() < deadline) {
      t.expires_after(std::chrono::milliseconds(10));
      co_await t.async_wait(net::as_tuple(net::use_awaitable));
    }
  };
  co_await wait_until(std::chrono::steady_clock::now() + grace);
  if (runs.size() == 0) co_return;
  runs.signal_all(SIGKILL);
  co_await wait_until(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  if (runs.size() > 0) spdlog::warn("{} command run(s) not reaped at shutdown", runs.size());
}

}  // namespace alou::mcp
