/*
 * fsutil - durable file-system steps. See fsutil.h.
 */
#include "core/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fs_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* fs_fsync_dir - a rename is durable only once its directory is synced */
int fs_fsync_dir(const char *dir, char *errbuf, size_t errlen)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(errbuf, errlen, "open %s: %s", dir, strerror(errno));
		return -1;
	}
	if (fsync(fd) < 0) {
		snprintf(errbuf, errlen, "fsync %s: %s", dir, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int fs_mkdir_p(const char *path, mode_t mode, char *errbuf, size_t errlen)
{
	char tmp[4096];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(tmp)) {
		snprintf(errbuf, errlen, "mkdir %s: bad path length", path);
		return -1;
	}
	memcpy(tmp, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		char c = tmp[i];
		tmp[i] = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST) {
			snprintf(errbuf, errlen, "mkdir %s: %s", tmp, strerror(errno));
			return -1;
		}
		tmp[i] = c;
	}
	return 0;
}
