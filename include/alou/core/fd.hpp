#pragma once
// Descriptors that must not reach the processes Alou starts. Asio opens and
// accepts sockets without SOCK_CLOEXEC, and hiredis connects without it;
// whoever opens such a descriptor marks it here right away. (The spawn code
// also closes every inherited descriptor in the child, so a descriptor
// opened by another thread in the instant before it is marked still never
// reaches a child; this is the second fence, for any other exec.)
namespace alou {

// Sets FD_CLOEXEC on `fd`. False (errno kept) if fcntl fails, e.g. EBADF.
// Thread-safe; async-signal-safe.
bool set_cloexec(int fd) noexcept;

}  // namespace alou
