#define _GNU_SOURCE
#include "cairn_io.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef RWF_DSYNC
#define RWF_DSYNC 0x00000002
#endif

static int result_of(int rc) { return rc < 0 ? -errno : rc; }
static int64_t result64_of(int64_t rc) { return rc < 0 ? -(int64_t)errno : rc; }

int cairn_punch_hole(int fd, uint64_t offset, uint64_t length) {
    return result_of(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length));
}

int cairn_zero_range(int fd, uint64_t offset, uint64_t length) {
    return result_of(fallocate(fd, FALLOC_FL_ZERO_RANGE, (off_t)offset, (off_t)length));
}

int cairn_allocate(int fd, uint64_t offset, uint64_t length) {
    return result_of(fallocate(fd, 0, (off_t)offset, (off_t)length));
}

int64_t cairn_copy_file_range(int fd_in, uint64_t off_in, int fd_out, uint64_t off_out, uint64_t length) {
    loff_t in = (loff_t)off_in;
    loff_t out = (loff_t)off_out;
    return result64_of(copy_file_range(fd_in, &in, fd_out, &out, (size_t)length, 0));
}

int cairn_clone_range(int src_fd, uint64_t src_offset, uint64_t length, int dst_fd, uint64_t dst_offset) {
    struct file_clone_range range = {
        .src_fd = src_fd,
        .src_offset = src_offset,
        .src_length = length,
        .dest_offset = dst_offset,
    };
    return result_of(ioctl(dst_fd, FICLONERANGE, &range));
}

int64_t cairn_pwrite_dsync(int fd, const void *buffer, uint64_t length, uint64_t offset) {
    struct iovec iov = {.iov_base = (void *)buffer, .iov_len = (size_t)length};
    return result64_of(pwritev2(fd, &iov, 1, (off_t)offset, RWF_DSYNC));
}

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

int64_t cairn_pread_nowait(int fd, void *buffer, uint64_t length, uint64_t offset) {
    struct iovec iov = {.iov_base = buffer, .iov_len = (size_t)length};
    return result64_of(preadv2(fd, &iov, 1, (off_t)offset, RWF_NOWAIT));
}

int64_t cairn_pread(int fd, void *buffer, uint64_t length, uint64_t offset) {
    return result64_of(pread(fd, buffer, (size_t)length, (off_t)offset));
}

int64_t cairn_pwrite(int fd, const void *buffer, uint64_t length, uint64_t offset) {
    return result64_of(pwrite(fd, buffer, (size_t)length, (off_t)offset));
}

int64_t cairn_seek_data(int fd, uint64_t offset) { return result64_of(lseek(fd, (off_t)offset, SEEK_DATA)); }

int64_t cairn_seek_hole(int fd, uint64_t offset) { return result64_of(lseek(fd, (off_t)offset, SEEK_HOLE)); }

int cairn_fdatasync(int fd) { return result_of(fdatasync(fd)); }

int cairn_start_writeback(int fd, uint64_t offset, uint64_t length, int wait) {
    unsigned int flags = SYNC_FILE_RANGE_WRITE;
    if (wait) flags |= SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WAIT_AFTER;
    return result_of(sync_file_range(fd, (off64_t)offset, (off64_t)length, flags));
}

int cairn_fsync(int fd) { return result_of(fsync(fd)); }

int cairn_lock_exclusive(int fd) { return result_of(flock(fd, LOCK_EX | LOCK_NB)); }

int64_t cairn_allocated_bytes(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0) return -(int64_t)errno;
    return (int64_t)st.st_blocks * 512;
}

#include <pthread.h>

void cairn_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

#include <malloc.h>

int cairn_retain_heap_blocks(int bytes) {
    return mallopt(M_MMAP_THRESHOLD, bytes) && mallopt(M_TRIM_THRESHOLD, bytes);
}

int cairn_open_direct(const char *path) {
    int fd = open(path, O_RDWR | O_CLOEXEC | O_DIRECT);
    return fd < 0 ? -errno : fd;
}
