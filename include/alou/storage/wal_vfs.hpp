#pragma once
// A SQLite VFS, "alou", over the platform's default one, that writes each
// WAL commit with one write(2) instead of two per page.
//
// SQLite appends a commit to the WAL as frames: for every dirty page a
// 24-byte frame header and the page, each its own pwrite. A group commit of
// the ledger is ~30 frames, so ~60 system calls, each also paying the file
// system's per-call work; on this project's machine they were a third of
// the database thread's time. The VFS keeps a WAL file's contiguous writes
// in memory and hands them to the real file in one write as soon as the
// page of the commit frame (the frame whose header carries the database
// size) is written, so the commit is in the file before SQLite publishes
// it in the WAL index, exactly as before. Every other operation on the WAL
// file (read, sync, truncate, size, close, file control) writes what is
// buffered first; a transaction that spills pages before committing has
// them written with its commit, or before any read. Database and journal
// files are the real VFS's own, untouched.
#include <cstdint>

namespace alou::storage {

// Registers the VFS as SQLite's default (once; later calls do nothing).
// Returns false if SQLite has no default VFS to wrap.
bool install_wal_vfs();

// Writes handed to the real VFS for WAL files since start (for tests and
// metrics): one per commit (per 120 KiB of it), plus one per write that was
// not contiguous.
std::uint64_t wal_vfs_writes();

}  // namespace alou::storage
