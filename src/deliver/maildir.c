/*
 * maildir - local delivery into a Maildir (cr.yp.to/proto/maildir.html),
 * the layout Dovecot reads with mail_location = maildir:<mail_dir>/%d/%n.
 *
 * Exports:
 *   maildir_deliver   content[off, off+len) of a queue file into the mailbox
 *                     of "local@domain": 0 delivered and durable, -1
 *                     temporary failure with "path: reason" in err
 *
 * The steps, each for durability: create tmp/<unique> (O_EXCL), write
 * Return-Path, Delivered-To and the content with CRLF turned into LF, fsync
 * the file, rename it into new/<unique>,S=<size>, fsync new/. Only then is
 * the message delivered; on any failure the tmp file is removed, so new/
 * never holds a partial message (a reader only ever looks in new/ and cur/).
 * (Not O_TMPFILE + linkat: the file's inode would be synced with no link,
 * and on ext4 without a journal the fsync of new/ does not write the
 * linked inode again, so a power loss could leave a name pointing at a
 * "deleted" inode; a second fsync of the file would cost what it saves.)
 *
 * The fsync of new/ is shared: deliveries into the same directory that
 * wait at the same time are covered by one fsync that started after their
 * link (group commit, maildir_sync_dir), so concurrent deliveries to one
 * mailbox do not each pay a directory flush.
 *
 * Thread-safe: several delivery workers call it at once. Unique names come
 * from time, pid, a process-wide atomic counter and random bits, so two
 * threads (or two processes) never pick the same name.
 *
 * Trusts: account came from users_file but is checked again so that no
 * path component can leave mail_dir; return_path and account must not hold
 * control characters (they become header lines).
 */
#include "deliver/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/fsutil.h"

#define MAILDIR_IO_BUF 32768 /* two of these live on a worker thread's stack */
#define MAILDIR_HOST_MAX 255

static atomic_ulong maildir_counter;

/* one directory being synced for several deliveries (maildir_sync_dir) */
struct maildir_dsync {
	struct maildir_dsync *next;
	dev_t dev;
	ino_t ino;
	int refs;          /* threads using the entry */
	int running;       /* an fsync is in progress */
	uint64_t started;  /* fsyncs started */
	uint64_t done;     /* the number of the last one finished */
	int err;           /* its errno, 0 for success */
};
static pthread_mutex_t maildir_ds_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t maildir_ds_cv = PTHREAD_COND_INITIALIZER;
static struct maildir_dsync *maildir_ds_list;

/*
 * maildir_sync_dir - make everything done in the directory dfd so far
 * durable: wait for an fsync of it that starts after this call, running
 * it here when none is running. Threads that arrive while one runs share
 * the next. 0, or -1 with errno of the fsync that covered us (the latest
 * one: a later success covers all earlier changes).
 */
static int maildir_sync_dir(int dfd)
{
	struct stat st;
	if (fstat(dfd, &st) < 0)
		return -1;
	pthread_mutex_lock(&maildir_ds_mu);
	struct maildir_dsync *e = maildir_ds_list;
	while (e && (e->dev != st.st_dev || e->ino != st.st_ino))
		e = e->next;
	if (e == NULL) {
		e = calloc(1, sizeof(*e));
		if (e == NULL) {
			pthread_mutex_unlock(&maildir_ds_mu);
			return fsync(dfd);
		}
		e->dev = st.st_dev;
		e->ino = st.st_ino;
		e->next = maildir_ds_list;
		maildir_ds_list = e;
	}
	e->refs++;
	uint64_t need = e->started + 1; /* one that starts after our change */
	while (e->done < need) {
		if (e->running) {
			pthread_cond_wait(&maildir_ds_cv, &maildir_ds_mu);
			continue;
		}
		e->running = 1;
		uint64_t mine = ++e->started;
		pthread_mutex_unlock(&maildir_ds_mu);
		int r = fsync(dfd) < 0 ? errno : 0;
		pthread_mutex_lock(&maildir_ds_mu);
		e->running = 0;
		e->done = mine;
		e->err = r;
		pthread_cond_broadcast(&maildir_ds_cv);
	}
	int err = e->err;
	if (--e->refs == 0) {
		struct maildir_dsync **pp = &maildir_ds_list;
		while (*pp != e)
			pp = &(*pp)->next;
		*pp = e->next;
		free(e);
	}
	pthread_mutex_unlock(&maildir_ds_mu);
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

/*
 * maildir_name_ok - a path component we may create under mail_dir: not
 * empty, no leading '.' (hides "..", ".", and Maildir++ folders), no '/',
 * no control bytes, not longer than a file name can be.
 */
static int maildir_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > NAME_MAX || s[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '/' || c == '\0' || c < 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

/* maildir_text_ok - no CR, LF or other control bytes (header injection) */
static int maildir_text_ok(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

/* maildir_dir_ensure - mkdir one level; *created tells whether it was new */
static int maildir_dir_ensure(const char *path, int *created, char *err, size_t errlen)
{
	if (mkdir(path, 0700) == 0) {
		*created = 1;
		return 0;
	}
	if (errno == EEXIST) {
		struct stat st;
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return 0;
		snprintf(err, errlen, "%s: not a directory", path);
		return -1;
	}
	snprintf(err, errlen, "%s: %s", path, strerror(errno));
	return -1;
}

/*
 * maildir_prepare - make <box>/{cur,new,tmp}. A directory we create is
 * made durable by syncing its parent, or a crash could lose the mailbox
 * (and the mail in it) after we reported delivery.
 */
static int maildir_prepare(const char *mail_dir, const char *domain_dir, const char *box, char *err,
			   size_t errlen)
{
	char p[PATH_MAX + 8];
	struct stat st;
	static const char *const subs[] = {"cur", "new", "tmp"};
	size_t have = 0;
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", box, subs[i]);
		have += stat(p, &st) == 0 && S_ISDIR(st.st_mode);
	}
	if (have == 3)
		return 0;

	int c_dom = 0, c_box = 0, c_sub = 0;
	if (fs_mkdir_p(mail_dir, 0700, err, errlen) < 0)
		return -1;
	if (maildir_dir_ensure(domain_dir, &c_dom, err, errlen) < 0)
		return -1;
	if (maildir_dir_ensure(box, &c_box, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", box, subs[i]);
		if (maildir_dir_ensure(p, &c_sub, err, errlen) < 0)
			return -1;
	}
	if (c_sub && fs_fsync_dir(box, err, errlen) < 0)
		return -1;
	if (c_box && fs_fsync_dir(domain_dir, err, errlen) < 0)
		return -1;
	if (c_dom && fs_fsync_dir(mail_dir, err, errlen) < 0)
		return -1;
	return 0;
}

/*
 * maildir_unique - "<secs>.M<usec>P<pid>Q<counter>R<random>.<host>", the
 * Maildir spec's name with Dovecot's fields; '/' and ':' in the host are
 * written \057 and \072 as the spec asks.
 */
static void maildir_host(char *host, size_t cap, const char *hostname);

static void maildir_unique(char *out, size_t cap, const char *hostname)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	unsigned long q = atomic_fetch_add(&maildir_counter, 1) + 1;
	uint64_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = ((uint64_t)tv.tv_usec << 32) ^ (uint64_t)(uintptr_t)&rnd ^ q;
	char host[MAILDIR_HOST_MAX * 4 + 1];
	maildir_host(host, sizeof(host), hostname);
	snprintf(out, cap, "%lld.M%ldP%ldQ%luR%016llx.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
		 (long)getpid(), q, (unsigned long long)rnd, host);
}

/* maildir_put - buffered write; -1 with errno */
static int maildir_put(int fd, char *buf, size_t *blen, const char *p, size_t n, off_t *total)
{
	if (*blen > 0 && *blen + n > MAILDIR_IO_BUF) {
		if (fs_write_all(fd, buf, *blen) < 0)
			return -1;
		*blen = 0;
	}
	if (n > MAILDIR_IO_BUF) {
		if (fs_write_all(fd, p, n) < 0)
			return -1;
		*total += (off_t)n;
		return 0;
	}
	memcpy(buf + *blen, p, n);
	*blen += n;
	*total += (off_t)n;
	return 0;
}

/*
 * maildir_copy - head (hlen bytes, the added header fields) then
 * content[off, off+len) of in into out with CRLF -> LF, through one
 * buffer (a small message is one write).
 * A CR at the end of one read is held back until the next byte is known,
 * so a CRLF split across reads is still converted; a lone CR is kept.
 * -1 with errno (EIO for a file shorter than promised).
 */
static int maildir_copy(const char *head, size_t hlen, int in, off_t off, off_t len, int out, off_t *total)
{
	static const char cr = '\r';
	char ibuf[MAILDIR_IO_BUF];
	char obuf[MAILDIR_IO_BUF];
	size_t olen = 0;
	if (maildir_put(out, obuf, &olen, head, hlen, total) < 0)
		return -1;
	int held_cr = 0;
	off_t done = 0;
	while (done < len) {
		size_t want = (size_t)(len - done < (off_t)sizeof(ibuf) ? len - done : (off_t)sizeof(ibuf));
		ssize_t r = pread(in, ibuf, want, off + done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			errno = EIO; /* the queue file is shorter than the envelope says */
			return -1;
		}
		done += r;
		size_t start = 0;
		if (held_cr) {
			held_cr = 0;
			if (ibuf[0] != '\n' && maildir_put(out, obuf, &olen, &cr, 1, total) < 0)
				return -1;
		}
		/* jump from CR to CR (memchr): a CR followed by LF is dropped, any
		 * other CR kept; one at the end waits for the next read */
		const char *c;
		while ((c = memchr(ibuf + start, '\r', (size_t)r - start)) != NULL) {
			size_t i = (size_t)(c - ibuf);
			if (i > start && maildir_put(out, obuf, &olen, ibuf + start, i - start, total) < 0)
				return -1;
			if (i + 1 == (size_t)r) {
				held_cr = 1;
				start = (size_t)r;
				break;
			}
			start = ibuf[i + 1] == '\n' ? i + 1 : i;
			if (start == i) {
				if (maildir_put(out, obuf, &olen, &cr, 1, total) < 0)
					return -1;
				start = i + 1;
			}
		}
		if ((size_t)r > start && maildir_put(out, obuf, &olen, ibuf + start, (size_t)r - start, total) < 0)
			return -1;
	}
	if (held_cr && maildir_put(out, obuf, &olen, &cr, 1, total) < 0)
		return -1;
	if (olen > 0 && fs_write_all(out, obuf, olen) < 0)
		return -1;
	return 0;
}

/* maildir_host - the host part of a name: '/', ':' and ',' escaped as the
 * spec asks (',' would be read as the start of ",S=") */
static void maildir_host(char *host, size_t cap, const char *hostname)
{
	size_t h = 0;
	if (hostname == NULL || hostname[0] == '\0')
		hostname = "localhost";
	for (size_t i = 0; hostname[i] && i < MAILDIR_HOST_MAX && h + 5 < cap; i++) {
		unsigned char c = (unsigned char)hostname[i];
		if (c == '/' || c == ':' || c < 0x20 || c == 0x7f || c == ',')
			h += (size_t)snprintf(host + h, cap - h, "\\%03o", c);
		else
			host[h++] = (char)c;
	}
	host[h] = '\0';
}

/* maildir_find - is a file whose name starts with base followed by ',' or
 * ':' in dir (new/ or cur/, where a reader may have moved it)? */
static int maildir_find(const char *dir, const char *base)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	size_t n = strlen(base);
	struct dirent *de;
	int found = 0;
	while (!found && (de = readdir(d)) != NULL)
		found = strncmp(de->d_name, base, n) == 0 && (de->d_name[n] == ',' || de->d_name[n] == ':');
	closedir(d);
	return found;
}

static int maildir_deliver_named(const char *mail_dir, const char *hostname, const char *account, int fd,
				 off_t off, off_t len, const char *return_path, const char *fixed_name,
				 int check_existing, char *err, size_t errlen);

int maildir_deliver(const char *mail_dir, const char *hostname, const char *account, int fd, off_t off,
		    off_t len, const char *return_path, char *err, size_t errlen)
{
	return maildir_deliver_named(mail_dir, hostname, account, fd, off, len, return_path, NULL, 0, err,
				     errlen);
}

int maildir_deliver_once(const char *mail_dir, const char *hostname, const char *account, int fd, off_t off,
			 off_t len, const char *return_path, time_t arrival, const char *id,
			 int check_existing, char *err, size_t errlen)
{
	char host[MAILDIR_HOST_MAX * 4 + 1];
	char name[MAILDIR_HOST_MAX * 4 + 160];
	for (const char *p = id; *p; p++) {
		if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      *p == '.' || *p == '_' || *p == '-')) {
			snprintf(err, errlen, "maildir: bad delivery id");
			return -1;
		}
	}
	maildir_host(host, sizeof(host), hostname);
	snprintf(name, sizeof(name), "%lld.T%.100s.%s", (long long)arrival, id, host);
	return maildir_deliver_named(mail_dir, hostname, account, fd, off, len, return_path, name,
				     check_existing, err, errlen);
}

static int maildir_deliver_named(const char *mail_dir, const char *hostname, const char *account, int fd,
				 off_t off, off_t len, const char *return_path, const char *fixed_name,
				 int check_existing, char *err, size_t errlen)
{
	char dummy[1];
	if (err == NULL || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	if (mail_dir == NULL || mail_dir[0] == '\0' || account == NULL || off < 0 || len < 0) {
		snprintf(err, errlen, "maildir: bad arguments");
		return -1;
	}
	if (return_path == NULL)
		return_path = "";
	const char *at = strrchr(account, '@');
	if (at == NULL || !maildir_text_ok(account) ||
	    !maildir_name_ok(account, (size_t)(at - account)) || !maildir_name_ok(at + 1, strlen(at + 1))) {
		snprintf(err, errlen, "%.300s: account not usable as a mailbox name", account);
		return -1;
	}
	if (!maildir_text_ok(return_path)) {
		snprintf(err, errlen, "return path has control characters");
		return -1;
	}

	char uniq[MAILDIR_HOST_MAX * 4 + 128];
	char domain_dir[PATH_MAX], box[PATH_MAX], newdir[PATH_MAX + 8];
	char tmp[PATH_MAX + sizeof(uniq) + 8], dst[PATH_MAX + sizeof(uniq) + 40];
	if ((size_t)snprintf(domain_dir, sizeof(domain_dir), "%s/%s", mail_dir, at + 1) >= sizeof(domain_dir) ||
	    (size_t)snprintf(box, sizeof(box), "%s/%.*s", domain_dir, (int)(at - account), account) >=
		    sizeof(box)) {
		snprintf(err, errlen, "%.300s: path too long", mail_dir);
		return -1;
	}
	snprintf(newdir, sizeof(newdir), "%s/new", box);
	/* the mailbox usually exists: look for it (and make it) only when
	 * new/ or tmp/ is missing */
	int ndfd = open(newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int prepared = 0;
	if (ndfd < 0 && errno == ENOENT) {
		if (maildir_prepare(mail_dir, domain_dir, box, err, errlen) < 0)
			return -1;
		prepared = 1;
		ndfd = open(newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (ndfd < 0) {
		snprintf(err, errlen, "%s: %s", newdir, strerror(errno));
		return -1;
	}
	if (fixed_name) {
		snprintf(uniq, sizeof(uniq), "%s", fixed_name);
		if (check_existing) {
			/* a crash may have come after the rename into new/ but before
			 * the queue recorded the delivery: then it is already there */
			char curdir[PATH_MAX + 8];
			snprintf(curdir, sizeof(curdir), "%s/cur", box);
			if (maildir_find(newdir, uniq) || maildir_find(curdir, uniq)) {
				close(ndfd);
				return 0;
			}
		}
	} else {
		maildir_unique(uniq, sizeof(uniq), hostname);
	}
	snprintf(tmp, sizeof(tmp), "%s/tmp/%s", box, uniq);
	/* O_EXCL: never write into someone else's file, even on a name clash;
	 * a fixed name's own leftover from a crash mid-write (never delivered)
	 * is removed and the create tried once more */
	int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0 && errno == EEXIST && fixed_name && unlink(tmp) == 0)
		out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0 && errno == ENOENT && !prepared) {
		/* tmp/ missing: complete the mailbox, once */
		if (maildir_prepare(mail_dir, domain_dir, box, err, errlen) < 0) {
			close(ndfd);
			return -1;
		}
		out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (out < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		close(ndfd);
		return -1;
	}
	off_t total = 0;
	const char *step = tmp;
	char *head = NULL;
	int hlen = asprintf(&head, "Return-Path: <%s>\nDelivered-To: %s\n", return_path, account);
	if (hlen < 0) {
		errno = ENOMEM;
		goto fail;
	}
	int r = maildir_copy(head, (size_t)hlen, fd, off, len, out, &total);
	free(head);
	if (r < 0)
		goto fail;
	/* the file must be on disk before its name appears in new/ */
	if (fsync(out) < 0)
		goto fail;
	if (close(out) < 0) {
		out = -1;
		goto fail;
	}
	out = -1;
	snprintf(dst, sizeof(dst), "%s/%s,S=%lld", newdir, uniq, (long long)total);
	if (rename(tmp, dst) < 0) {
		step = dst;
		goto fail;
	}
	/* the rename is durable only once new/ is synced (one fsync shared
	 * with the deliveries into new/ waiting with us); if that fails, take
	 * the message back out so the retry does not deliver it twice */
	if (maildir_sync_dir(ndfd) < 0) {
		snprintf(err, errlen, "fsync %s: %s", newdir, strerror(errno));
		unlink(dst);
		close(ndfd);
		return -1;
	}
	close(ndfd);
	return 0;

fail:;
	int e = errno;
	if (out >= 0)
		close(out);
	unlink(tmp);
	close(ndfd);
	snprintf(err, errlen, "%s: %s", step, strerror(e));
	return -1;
}
