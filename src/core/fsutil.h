/*
 * fsutil - the file-system steps durability is built from.
 *
 * Exports:
 *   fs_write_all      write every byte, retrying short writes and EINTR
 *   fs_fsync_dir      fsync a directory so a rename or link in it is durable
 *   fs_mkdir_p        create a directory and its parents with a mode
 * Errors are reported into the caller's buffer (errbuf, errlen) with the
 * path and strerror; the caller logs once.
 */
#ifndef TERN_CORE_FSUTIL_H
#define TERN_CORE_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

int fs_write_all(int fd, const void *p, size_t n);
int fs_fsync_dir(const char *dir, char *errbuf, size_t errlen);
int fs_mkdir_p(const char *path, mode_t mode, char *errbuf, size_t errlen);

#endif
