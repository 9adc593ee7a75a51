#include "alou/storage/wal_vfs.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace alou::storage {
namespace {

// A WAL frame header is written as one 24-byte write, followed by the page
// as another (walWriteOneFrame). Bytes 4..7 of the header, big-endian: the
// database size in pages after a commit frame, zero on other frames.
constexpr int kFrameHeaderBytes = 24;
// Past this, what is buffered is written even before the commit's end.
constexpr std::size_t kMaxBuffered = 8 * 1024 * 1024;

std::atomic<std::uint64_t> g_writes{0};
sqlite3_vfs* g_real = nullptr;
sqlite3_vfs g_vfs{};

// Our part of a WAL file's sqlite3_file; the real VFS's file follows it.
struct WalFile {
  sqlite3_file base;       // base.pMethods: &kWalMethods (null if the open failed)
  sqlite3_file* real;      // the real VFS's file, right after this struct
  unsigned char* buf;      // malloc'ed; writes not yet handed to the real file
  std::size_t len;
  std::size_t cap;
  sqlite3_int64 off;       // file offset of buf[0]
  bool commit_page_next;   // the last write was a commit frame's header
};

constexpr std::size_t header_size() { return (sizeof(WalFile) + 15) & ~std::size_t{15}; }

WalFile* wal(sqlite3_file* f) { return reinterpret_cast<WalFile*>(f); }

int flush(WalFile* f) {
  // The unix VFS writes at most `n & 0x1ffff` bytes per pwrite (and fails a
  // write whose masked size is 0): hand it pieces it takes whole.
  constexpr std::size_t kPiece = 0x1e000;  // 120 KiB
  int rc = SQLITE_OK;
  for (std::size_t done = 0; done < f->len && rc == SQLITE_OK; done += kPiece) {
    const std::size_t n = std::min(kPiece, f->len - done);
    rc = f->real->pMethods->xWrite(f->real, f->buf + done, static_cast<int>(n),
                                   f->off + static_cast<sqlite3_int64>(done));
    g_writes.fetch_add(1, std::memory_order_relaxed);
  }
  f->len = 0;
  return rc;
}

int append(WalFile* f, const void* data, int amt, sqlite3_int64 off) {
  const auto n = static_cast<std::size_t>(amt);
  if (f->len + n > f->cap) {
    std::size_t cap = f->cap == 0 ? 64 * 1024 : f->cap;
    while (cap < f->len + n) cap *= 2;
    auto* grown = static_cast<unsigned char*>(std::realloc(f->buf, cap));
    if (grown == nullptr) return SQLITE_IOERR_NOMEM;
    f->buf = grown;
    f->cap = cap;
  }
  if (f->len == 0) f->off = off;
  std::memcpy(f->buf + f->len, data, n);
  f->len += n;
  return SQLITE_OK;
}

int wal_write(sqlite3_file* file, const void* data, int amt, sqlite3_int64 off) {
  WalFile* f = wal(file);
  if (f->len > 0 && off != f->off + static_cast<sqlite3_int64>(f->len)) {
    if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  }
  const bool commit_page = f->commit_page_next;
  f->commit_page_next = false;
  if (amt == kFrameHeaderBytes) {
    const auto* h = static_cast<const unsigned char*>(data);
    f->commit_page_next = (h[4] | h[5] | h[6] | h[7]) != 0;
  }
  if (const int rc = append(f, data, amt, off); rc != SQLITE_OK) {
    // Out of memory: write it through instead (after what is buffered).
    if (const int frc = flush(f); frc != SQLITE_OK) return frc;
    g_writes.fetch_add(1, std::memory_order_relaxed);
    return f->real->pMethods->xWrite(f->real, data, amt, off);
  }
  if (commit_page || f->len >= kMaxBuffered) return flush(f);
  return SQLITE_OK;
}

int wal_close(sqlite3_file* file) {
  WalFile* f = wal(file);
  const int frc = flush(f);
  const int rc = f->real->pMethods->xClose(f->real);
  std::free(f->buf);
  f->buf = nullptr;
  f->cap = 0;
  return frc != SQLITE_OK ? frc : rc;
}

int wal_read(sqlite3_file* file, void* out, int amt, sqlite3_int64 off) {
  WalFile* f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xRead(f->real, out, amt, off);
}

int wal_truncate(sqlite3_file* file, sqlite3_int64 size) {
  WalFile* f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xTruncate(f->real, size);
}

int wal_sync(sqlite3_file* file, int flags) {
  WalFile* f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xSync(f->real, flags);
}

int wal_file_size(sqlite3_file* file, sqlite3_int64* size) {
  WalFile* f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xFileSize(f->real, size);
}

int wal_lock(sqlite3_file* file, int lock) { return wal(file)->real->pMethods->xLock(wal(file)->real, lock); }
int wal_unlock(sqlite3_file* file, int lock) { return wal(file)->real->pMethods->xUnlock(wal(file)->real, lock); }
int wal_check_reserved(sqlite3_file* file, int* out) {
  return wal(file)->real->pMethods->xCheckReservedLock(wal(file)->real, out);
}
int wal_file_control(sqlite3_file* file, int op, void* arg) {
  WalFile* f = wal(file);
  if (const int rc = flush(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xFileControl(f->real, op, arg);
}
int wal_sector_size(sqlite3_file* file) { return wal(file)->real->pMethods->xSectorSize(wal(file)->real); }
int wal_device_characteristics(sqlite3_file* file) {
  return wal(file)->real->pMethods->xDeviceCharacteristics(wal(file)->real);
}

// Version 1: a WAL file is never memory-mapped nor used for shared memory
// (both belong to the database file).
const sqlite3_io_methods kWalMethods = {
    1,
    wal_close,
    wal_read,
    wal_write,
    wal_truncate,
    wal_sync,
    wal_file_size,
    wal_lock,
    wal_unlock,
    wal_check_reserved,
    wal_file_control,
    wal_sector_size,
    wal_device_characteristics,
    nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
};

int vfs_open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags, int* out_flags) {
  if ((flags & SQLITE_OPEN_WAL) == 0) {
    // Everything but WAL files: the real VFS's own file, in place.
    return g_real->xOpen(g_real, name, file, flags, out_flags);
  }
  WalFile* f = wal(file);
  std::memset(f, 0, sizeof(WalFile));
  f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + header_size());
  const int rc = g_real->xOpen(g_real, name, f->real, flags, out_flags);
  if (rc != SQLITE_OK) {
    // SQLite calls xClose only if pMethods is set: ours stays null, and a
    // real file left half-open is closed here.
    if (f->real->pMethods != nullptr) f->real->pMethods->xClose(f->real);
    f->base.pMethods = nullptr;
    return rc;
  }
  f->base.pMethods = &kWalMethods;
  return SQLITE_OK;
}

// The rest goes to the real VFS, called as itself (it may use its pAppData).
int vfs_delete(sqlite3_vfs*, const char* name, int sync_dir) { return g_real->xDelete(g_real, name, sync_dir); }
int vfs_access(sqlite3_vfs*, const char* name, int flags, int* out) {
  return g_real->xAccess(g_real, name, flags, out);
}
int vfs_full_pathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return g_real->xFullPathname(g_real, name, n, out);
}
void* vfs_dl_open(sqlite3_vfs*, const char* name) { return g_real->xDlOpen(g_real, name); }
void vfs_dl_error(sqlite3_vfs*, int n, char* out) { g_real->xDlError(g_real, n, out); }
void (*vfs_dl_sym(sqlite3_vfs*, void* h, const char* sym))(void) { return g_real->xDlSym(g_real, h, sym); }
void vfs_dl_close(sqlite3_vfs*, void* h) { g_real->xDlClose(g_real, h); }
int vfs_randomness(sqlite3_vfs*, int n, char* out) { return g_real->xRandomness(g_real, n, out); }
int vfs_sleep(sqlite3_vfs*, int us) { return g_real->xSleep(g_real, us); }
int vfs_current_time(sqlite3_vfs*, double* out) { return g_real->xCurrentTime(g_real, out); }
int vfs_get_last_error(sqlite3_vfs*, int n, char* out) {
  return g_real->xGetLastError != nullptr ? g_real->xGetLastError(g_real, n, out) : 0;
}
int vfs_current_time_int64(sqlite3_vfs*, sqlite3_int64* out) { return g_real->xCurrentTimeInt64(g_real, out); }
int vfs_set_system_call(sqlite3_vfs*, const char* name, sqlite3_syscall_ptr p) {
  return g_real->xSetSystemCall(g_real, name, p);
}
sqlite3_syscall_ptr vfs_get_system_call(sqlite3_vfs*, const char* name) { return g_real->xGetSystemCall(g_real, name); }
const char* vfs_next_system_call(sqlite3_vfs*, const char* name) { return g_real->xNextSystemCall(g_real, name); }

}  // namespace

bool install_wal_vfs() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    g_real = sqlite3_vfs_find(nullptr);
    if (g_real == nullptr) return;
    g_vfs = sqlite3_vfs{};
    g_vfs.iVersion = g_real->iVersion < 3 ? g_real->iVersion : 3;
    g_vfs.szOsFile = static_cast<int>(header_size()) + g_real->szOsFile;
    g_vfs.mxPathname = g_real->mxPathname;
    g_vfs.zName = "alou";
    g_vfs.xOpen = vfs_open;
    g_vfs.xDelete = vfs_delete;
    g_vfs.xAccess = vfs_access;
    g_vfs.xFullPathname = vfs_full_pathname;
    g_vfs.xDlOpen = g_real->xDlOpen != nullptr ? vfs_dl_open : nullptr;
    g_vfs.xDlError = g_real->xDlError != nullptr ? vfs_dl_error : nullptr;
    g_vfs.xDlSym = g_real->xDlSym != nullptr ? vfs_dl_sym : nullptr;
    g_vfs.xDlClose = g_real->xDlClose != nullptr ? vfs_dl_close : nullptr;
    g_vfs.xRandomness = vfs_randomness;
    g_vfs.xSleep = vfs_sleep;
    g_vfs.xCurrentTime = vfs_current_time;
    g_vfs.xGetLastError = vfs_get_last_error;
    if (g_vfs.iVersion >= 2) g_vfs.xCurrentTimeInt64 = vfs_current_time_int64;
    if (g_vfs.iVersion >= 3) {
      g_vfs.xSetSystemCall = vfs_set_system_call;
      g_vfs.xGetSystemCall = vfs_get_system_call;
      g_vfs.xNextSystemCall = vfs_next_system_call;
    }
    ok = sqlite3_vfs_register(&g_vfs, 1) == SQLITE_OK;
  });
  return ok;
}

std::uint64_t wal_vfs_writes() { return g_writes.load(std::memory_order_relaxed); }

}  // namespace alou::storage
