// A thin shim over Linux calls that Swift's Glibc module does not import (or imports awkwardly).
// Every function returns 0 / a non-negative count on success and -errno on failure, so Swift never
// has to read the thread-local errno after a call that may have been interleaved with others.
#pragma once

#include <stdint.h>
#include <sys/types.h>

/// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): deallocate, reads return zeros.
int cairn_punch_hole(int fd, uint64_t offset, uint64_t length);

/// fallocate(FALLOC_FL_ZERO_RANGE): allocated zeros, extending the file like a write would.
int cairn_zero_range(int fd, uint64_t offset, uint64_t length);

/// fallocate(0): reserve space (extends the file when past EOF).
int cairn_allocate(int fd, uint64_t offset, uint64_t length);

/// One copy_file_range() call; returns bytes copied (may be short) or -errno.
int64_t cairn_copy_file_range(int fd_in, uint64_t off_in, int fd_out, uint64_t off_out, uint64_t length);

/// ioctl(FICLONERANGE): share the source extent (reflink). Offsets/length must be fs-block aligned.
int cairn_clone_range(int src_fd, uint64_t src_offset, uint64_t length, int dst_fd, uint64_t dst_offset);

/// pwritev2(RWF_DSYNC) of one buffer: the write is durable when this returns. Returns bytes or -errno.
int64_t cairn_pwrite_dsync(int fd, const void *buffer, uint64_t length, uint64_t offset);

/// preadv2(RWF_NOWAIT) of one buffer: reads only what is already in the page cache and never blocks;
/// -EAGAIN when the data would have to come from the disk. Returns bytes (maybe short) or -errno.
int64_t cairn_pread_nowait(int fd, void *buffer, uint64_t length, uint64_t offset);

/// pread()/pwrite() returning -errno instead of setting errno.
int64_t cairn_pread(int fd, void *buffer, uint64_t length, uint64_t offset);
int64_t cairn_pwrite(int fd, const void *buffer, uint64_t length, uint64_t offset);

/// lseek(SEEK_DATA / SEEK_HOLE). Returns the offset, or -ENXIO past the last data / end of file.
int64_t cairn_seek_data(int fd, uint64_t offset);
int64_t cairn_seek_hole(int fd, uint64_t offset);

/// open(path, O_RDWR | O_CLOEXEC | O_DIRECT): the descriptor, or -errno (-EINVAL where the filesystem
/// does not support direct I/O, e.g. tmpfs). O_DIRECT needs _GNU_SOURCE, which Swift's Glibc lacks.
int cairn_open_direct(const char *path);

/// fdatasync() / fsync() returning -errno.
int cairn_fdatasync(int fd);
int cairn_fsync(int fd);

/// sync_file_range(): start writeback of [offset, offset + length) (`wait` = 0), or also wait for the
/// writeback already started on it to end (`wait` = 1). Returns -errno. Not a durability point: the
/// caller still fdatasyncs; this only spreads the writeback over the time the data is produced.
int cairn_start_writeback(int fd, uint64_t offset, uint64_t length, int wait);

/// flock(LOCK_EX | LOCK_NB): 0, or -EWOULDBLOCK when another process holds it.
int cairn_lock_exclusive(int fd);

/// Allocated bytes of an open file (st_blocks * 512).
int64_t cairn_allocated_bytes(int fd);

/// pthread_setname_np(pthread_self(), name): names the calling thread (at most 15 bytes), for top -H.
void cairn_set_thread_name(const char *name);

/// mallopt(M_MMAP_THRESHOLD and M_TRIM_THRESHOLD, bytes): heap blocks up to `bytes` come from and return to
/// the heap instead of fresh mmaps. Returns 0 on failure.
int cairn_retain_heap_blocks(int bytes);
