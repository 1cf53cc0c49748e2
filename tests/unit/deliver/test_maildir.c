/*
 * test_maildir - Maildir delivery: layout, headers, CRLF -> LF, S= size,
 * nothing left in tmp/, unique names across threads, refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "deliver/maildir.h"

struct tmpdir {
	char path[256];
};

/* rm_rf - remove a test tree (small, no symlinks) */
static void rm_rf(const char *path)
{
	DIR *d = opendir(path);
	if (d == NULL) {
		unlink(path);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char sub[1024];
		snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
		struct stat st;
		if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
			chmod(sub, 0700);
			rm_rf(sub);
		} else {
			unlink(sub);
		}
	}
	closedir(d);
	rmdir(path);
}

static int setup(void **state)
{
	struct tmpdir *t = calloc(1, sizeof(*t));
	snprintf(t->path, sizeof(t->path), "/tmp/tern-maildir-XXXXXX");
	if (mkdtemp(t->path) == NULL)
		return -1;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tmpdir *t = *state;
	chmod(t->path, 0700);
	rm_rf(t->path);
	free(t);
	return 0;
}

/* content_fd - an unlinked temp file holding prefix + body + suffix */
static int content_fd(const char *dir, const char *prefix, const char *body, size_t blen, const char *suffix)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/content-XXXXXX", dir);
	int fd = mkstemp(p);
	assert_true(fd >= 0);
	unlink(p);
	assert_int_equal(write(fd, prefix, strlen(prefix)), (ssize_t)strlen(prefix));
	assert_int_equal(write(fd, body, blen), (ssize_t)blen);
	assert_int_equal(write(fd, suffix, strlen(suffix)), (ssize_t)strlen(suffix));
	return fd;
}

/* list_dir - the names in a directory (up to max); returns the count */
static size_t list_dir(const char *path, char names[][512], size_t max)
{
	DIR *d = opendir(path);
	if (d == NULL)
		return 0;
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (n < max)
			snprintf(names[n], 512, "%s", e->d_name);
		n++;
	}
	closedir(d);
	return n;
}

/* read_all - a whole file into a new buffer */
static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)n + 1);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	b[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return b;
}

/* check_name - "<secs>.M<usec>P<pid>Q<n>R<hex>.<host>,S=<size>" with S= the real size */
static void check_name(const char *name, size_t size, const char *host)
{
	long long secs;
	long usec, pid;
	unsigned long q;
	char rnd[17];
	int used = 0;
	assert_int_equal(sscanf(name, "%lld.M%ldP%ldQ%luR%16[0-9a-f].%n", &secs, &usec, &pid, &q, rnd, &used), 5);
	assert_int_equal(pid, (long)getpid());
	assert_true(usec >= 0 && usec < 1000000);
	const char *rest = name + used;
	assert_int_equal(strncmp(rest, host, strlen(host)), 0);
	char want[64];
	snprintf(want, sizeof(want), ",S=%zu", size);
	assert_string_equal(rest + strlen(host), want);
}

static void test_deliver_basic(void **state)
{
	struct tmpdir *t = *state;
	char mail_dir[512];
	snprintf(mail_dir, sizeof(mail_dir), "%s/mail", t->path);
	/* content sits in the middle of a queue file: prefix and suffix must not be copied */
	const char body[] = "Subject: hi\r\nX: a\rb\r\n\r\nline\r\n\r\r\nend\r";
	int fd = content_fd(t->path, "ENVELOPE\n", body, sizeof(body) - 1, "TRAILER");
	char err[512] = "";
	int r = maildir_deliver(mail_dir, "mx.example.test", "alice@example.test", fd, 9, (off_t)(sizeof(body) - 1),
				"bob@remote.test", err, sizeof(err));
	if (r != 0)
		fprintf(stderr, "err: %s\n", err);
	assert_int_equal(r, 0);

	char box[600], sub[700];
	snprintf(box, sizeof(box), "%s/example.test/alice", mail_dir);
	const char *subs[] = {"cur", "new", "tmp"};
	for (int i = 0; i < 3; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", box, subs[i]);
		struct stat st;
		assert_int_equal(stat(sub, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		assert_int_equal(st.st_mode & 0777, 0700);
	}
	char names[4][512];
	snprintf(sub, sizeof(sub), "%s/tmp", box);
	assert_int_equal(list_dir(sub, names, 4), 0);
	snprintf(sub, sizeof(sub), "%s/new", box);
	assert_int_equal(list_dir(sub, names, 4), 1);

	char file[1300];
	snprintf(file, sizeof(file), "%s/%s", sub, names[0]);
	size_t len;
	char *got = read_all(file, &len);
	const char want[] = "Return-Path: <bob@remote.test>\n"
			    "Delivered-To: alice@example.test\n"
			    "Subject: hi\nX: a\rb\n\nline\n\r\nend\r";
	assert_int_equal(len, sizeof(want) - 1);
	assert_memory_equal(got, want, len);
	check_name(names[0], len, "mx.example.test");
	struct stat st;
	assert_int_equal(stat(file, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	free(got);

	/* second delivery, null sender, into the existing mailbox */
	r = maildir_deliver(mail_dir, "mx.example.test", "alice@example.test", fd, 9, 0, "", err, sizeof(err));
	assert_int_equal(r, 0);
	assert_int_equal(list_dir(sub, names, 4), 2);
	close(fd);
}

/* test_deliver_completes_mailbox - a mailbox missing tmp/ (or new/) is
 * completed by the delivery, which then succeeds; a huge return path
 * (header fields longer than the copy buffer) is written whole */
static void test_deliver_completes_mailbox(void **state)
{
	struct tmpdir *t = *state;
	char mail_dir[512], box[600], sub[700], names[4][512];
	snprintf(mail_dir, sizeof(mail_dir), "%s/mail", t->path);
	snprintf(box, sizeof(box), "%s/example.test/carol", mail_dir);
	const char body[] = "Subject: x\r\n\r\nbody\r\n";
	int fd = content_fd(t->path, "", body, sizeof(body) - 1, "");
	char err[512] = "";
	assert_int_equal(maildir_deliver(mail_dir, "mx", "carol@example.test", fd, 0, (off_t)(sizeof(body) - 1),
					 "a@b.test", err, sizeof(err)),
			 0);
	const char *gone[] = {"tmp", "new"};
	for (int i = 0; i < 2; i++) {
		snprintf(sub, sizeof(sub), "%s/new", box);
		int n = list_dir(sub, names, 4);
		for (int j = 0; j < n; j++) {
			char f[4096];
			snprintf(f, sizeof(f), "%s/%s", sub, names[j]);
			assert_int_equal(unlink(f), 0);
		}
		snprintf(sub, sizeof(sub), "%s/%s", box, gone[i]);
		assert_int_equal(rmdir(sub), 0);
		assert_int_equal(maildir_deliver(mail_dir, "mx", "carol@example.test", fd, 0,
						 (off_t)(sizeof(body) - 1), "a@b.test", err, sizeof(err)),
				 0);
		struct stat st;
		assert_int_equal(stat(sub, &st), 0);
		snprintf(sub, sizeof(sub), "%s/new", box);
		assert_int_equal(list_dir(sub, names, 4), 1);
	}
	/* return path of 40,000 bytes: more than the 32 KiB buffer */
	size_t n = 40000;
	char *rp = malloc(n + 1);
	memset(rp, 'r', n);
	rp[n] = '\0';
	assert_int_equal(maildir_deliver(mail_dir, "mx", "carol@example.test", fd, 0, (off_t)(sizeof(body) - 1), rp,
					 err, sizeof(err)),
			 0);
	snprintf(sub, sizeof(sub), "%s/new", box);
	assert_int_equal(list_dir(sub, names, 4), 2);
	size_t total = 0;
	for (int j = 0; j < 2; j++) {
		char f[4096];
		snprintf(f, sizeof(f), "%s/%s", sub, names[j]);
		size_t len;
		char *got = read_all(f, &len);
		if (len > n) {
			assert_memory_equal(got, "Return-Path: <", 14);
			assert_memory_equal(got + 14, rp, n);
			assert_non_null(strstr(got, ">\nDelivered-To: carol@example.test\nSubject: x\n\nbody\n"));
		}
		total += len;
		free(got);
	}
	assert_true(total > n);
	free(rp);
	close(fd);
}

static void test_deliver_crlf_boundaries(void **state)
{
	struct tmpdir *t = *state;
	char mail_dir[512];
	snprintf(mail_dir, sizeof(mail_dir), "%s/mail", t->path);
	/* 200 KB with CRLFs at every offset around the read-buffer edges */
	size_t n = 200000;
	char *body = malloc(n);
	char *want = malloc(n + 100);
	size_t wn = 0;
	unsigned seed = 7;
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		unsigned k = (seed >> 16) % 7;
		body[i] = k == 0 ? '\r' : k == 1 ? '\n' : (char)('a' + k);
	}
	/* put CRLF exactly across likely buffer boundaries */
	for (size_t b = 4096; b + 1 < n; b += 4096) {
		body[b - 1] = '\r';
		body[b] = '\n';
	}
	body[n - 1] = '\r';
	for (size_t i = 0; i < n; i++) {
		if (body[i] == '\r' && i + 1 < n && body[i + 1] == '\n')
			continue;
		want[wn++] = body[i];
	}
	int fd = content_fd(t->path, "", body, n, "");
	char err[512];
	assert_int_equal(maildir_deliver(mail_dir, "h", "big@example.test", fd, 0, (off_t)n, "s@x.test", err,
					 sizeof(err)),
			 0);
	char sub[700], names[2][512], file[1300];
	snprintf(sub, sizeof(sub), "%s/example.test/big/new", mail_dir);
	assert_int_equal(list_dir(sub, names, 2), 1);
	snprintf(file, sizeof(file), "%s/%s", sub, names[0]);
	size_t len;
	char *got = read_all(file, &len);
	const char *hdr = "Return-Path: <s@x.test>\nDelivered-To: big@example.test\n";
	size_t hl = strlen(hdr);
	assert_int_equal(len, hl + wn);
	assert_memory_equal(got, hdr, hl);
	assert_memory_equal(got + hl, want, wn);
	check_name(names[0], len, "h");
	free(got);
	free(body);
	free(want);
	close(fd);
}

static void test_deliver_hostname_escape(void **state)
{
	struct tmpdir *t = *state;
	char mail_dir[512];
	snprintf(mail_dir, sizeof(mail_dir), "%s/mail", t->path);
	int fd = content_fd(t->path, "", "x\r\n", 3, "");
	char err[512];
	assert_int_equal(maildir_deliver(mail_dir, "a/b:c", "u@d.test", fd, 0, 3, "", err, sizeof(err)), 0);
	char sub[700], names[2][512];
	snprintf(sub, sizeof(sub), "%s/d.test/u/new", mail_dir);
	assert_int_equal(list_dir(sub, names, 2), 1);
	assert_non_null(strstr(names[0], ".a\\057b\\072c,S="));
	assert_null(strchr(names[0], ':'));
	close(fd);
}

static void test_deliver_refused(void **state)
{
	struct tmpdir *t = *state;
	char mail_dir[512];
	snprintf(mail_dir, sizeof(mail_dir), "%s/mail", t->path);
	int fd = content_fd(t->path, "", "x\r\n", 3, "");
	const char *bad[] = {
		"alice",          "@example.test", "alice@",        "../x@example.test", "..@example.test",
		".x@example.test", "a/b@example.test", "alice@..",   "alice@.example.test", "alice@a/b",
		"a\nb@example.test", "alice@example.test\r\nX: y", "", "a@b/../../etc",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char err[512] = "";
		assert_int_equal(maildir_deliver(mail_dir, "h", bad[i], fd, 0, 3, "", err, sizeof(err)), -1);
		assert_true(err[0] != '\0');
	}
	char err[512] = "";
	assert_int_equal(maildir_deliver(mail_dir, "h", NULL, fd, 0, 3, "", err, sizeof(err)), -1);
	assert_int_equal(maildir_deliver(mail_dir, "h", "ok@example.test", fd, 0, 3, "a\r\nb", err, sizeof(err)), -1);
	assert_int_equal(maildir_deliver(mail_dir, "h", "ok@example.test", fd, -1, 3, "", err, sizeof(err)), -1);
	assert_int_equal(maildir_deliver("", "h", "ok@example.test", fd, 0, 3, "", err, sizeof(err)), -1);
	/* nothing at all was created for the refused names */
	char names[4][512];
	assert_int_equal(list_dir(mail_dir, names, 4), 0);
	/* content shorter than promised: temporary failure, nothing in new/ */
	err[0] = '\0';
	assert_int_equal(maildir_deliver(mail_dir, "h", "ok@example.test", fd, 0, 100, "", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/tmp/"));
	char sub[700];
	snprintf(sub, sizeof(sub), "%s/example.test/ok/new", mail_dir);
	assert_int_equal(list_dir(sub, names, 4), 0);
	snprintf(sub, sizeof(sub), "%s/example.test/ok/tmp", mail_dir);
	assert_int_equal(list_dir(sub, names, 4), 0);
	/* a bad fd */
	assert_int_equal(maildir_deliver(mail_dir, "h", "ok@example.test", -1, 0, 3, "", err, sizeof(err)), -1);
	assert_int_equal(list_dir(sub, names, 4), 0);
	close(fd);
}

static void test_deliver_unwritable(void **state)
{
	struct tmpdir *t = *state;
	if (geteuid() == 0) {
		/* root ignores directory permissions; nothing to test */
		skip();
	}
	char mail_dir[512];
	snprintf(mail_dir, sizeof(mail_dir), "%s/ro", t->path);
	assert_int_equal(mkdir(mail_dir, 0500), 0);
	int fd = content_fd(t->path, "", "x\r\n", 3, "");
	char err[512] = "";
	assert_int_equal(maildir_deliver(mail_dir, "h", "u@example.test", fd, 0, 3, "", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "Permission denied"));
	/* an existing mailbox whose tmp/ is read-only */
	chmod(mail_dir, 0700);
	assert_int_equal(maildir_deliver(mail_dir, "h", "u@example.test", fd, 0, 3, "", err, sizeof(err)), 0);
	char tmp[700];
	snprintf(tmp, sizeof(tmp), "%s/example.test/u/tmp", mail_dir);
	chmod(tmp, 0500);
	err[0] = '\0';
	assert_int_equal(maildir_deliver(mail_dir, "h", "u@example.test", fd, 0, 3, "", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "Permission denied"));
	chmod(tmp, 0700);
	close(fd);
}

static void test_deliver_disk_full(void **state)
{
	struct tmpdir *t = *state;
	char mail_dir[512];
	snprintf(mail_dir, sizeof(mail_dir), "%s/mail", t->path);
	size_t n = 100000;
	char *body = malloc(n);
	memset(body, 'x', n);
	int fd = content_fd(t->path, "", body, n, "");
	free(body);
	char err[512] = "";
	/* prepare the mailbox first, so the failure is in the write */
	assert_int_equal(maildir_deliver(mail_dir, "h", "u@example.test", fd, 0, 10, "", err, sizeof(err)), 0);
	/* a file size limit makes write fail with EFBIG, like a full disk, even as root */
	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 50000;
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	int r = maildir_deliver(mail_dir, "h", "u@example.test", fd, 0, (off_t)n, "", err, sizeof(err));
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(r, -1);
	assert_non_null(strstr(err, "/tmp/"));
	char sub[700], names[4][512];
	snprintf(sub, sizeof(sub), "%s/example.test/u/new", mail_dir);
	assert_int_equal(list_dir(sub, names, 4), 1); /* only the first, small one */
	snprintf(sub, sizeof(sub), "%s/example.test/u/tmp", mail_dir);
	assert_int_equal(list_dir(sub, names, 4), 0);

	/* mail_dir that is a file: a clear error, also as root */
	char file_dir[600];
	snprintf(file_dir, sizeof(file_dir), "%s/afile", t->path);
	int f = open(file_dir, O_WRONLY | O_CREAT, 0600);
	close(f);
	err[0] = '\0';
	assert_int_equal(maildir_deliver(file_dir, "h", "u@example.test", fd, 0, 10, "", err, sizeof(err)), -1);
	assert_true(err[0] != '\0');
	/* a mailbox name that exists as a file */
	snprintf(file_dir, sizeof(file_dir), "%s/example.test/plain", mail_dir);
	f = open(file_dir, O_WRONLY | O_CREAT, 0600);
	close(f);
	assert_int_equal(maildir_deliver(mail_dir, "h", "plain@example.test", fd, 0, 10, "", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plain"));
	close(fd);
}

struct worker {
	const char *mail_dir;
	int fd;
	int fails;
};

#define THREADS 8
#define PER_THREAD 50

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < PER_THREAD; i++) {
		char err[512];
		const char *acct = (i % 2) ? "shared@example.test" : "other@example.test";
		if (maildir_deliver(w->mail_dir, "mx.example.test", acct, w->fd, 0, 6, "s@x.test", err, sizeof(err)) != 0)
			w->fails++;
	}
	return NULL;
}

static void test_deliver_threads(void **state)
{
	struct tmpdir *t = *state;
	char mail_dir[512];
	snprintf(mail_dir, sizeof(mail_dir), "%s/mail", t->path);
	int fd = content_fd(t->path, "", "hello\n", 6, "");
	pthread_t th[THREADS];
	struct worker w[THREADS];
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){.mail_dir = mail_dir, .fd = fd};
		assert_int_equal(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].fails, 0);
	}
	char sub[700];
	static char names[THREADS * PER_THREAD][512];
	snprintf(sub, sizeof(sub), "%s/example.test/shared/new", mail_dir);
	assert_int_equal(list_dir(sub, names, THREADS * PER_THREAD), THREADS * PER_THREAD / 2);
	snprintf(sub, sizeof(sub), "%s/example.test/other/new", mail_dir);
	assert_int_equal(list_dir(sub, names, THREADS * PER_THREAD), THREADS * PER_THREAD / 2);
	snprintf(sub, sizeof(sub), "%s/example.test/shared/tmp", mail_dir);
	assert_int_equal(list_dir(sub, names, THREADS * PER_THREAD), 0);
	close(fd);
}

/* test_deliver_once - a repeated delivery after a crash is recognised by
 * its fixed name, in new/ and after a reader moved it to cur/ */
static void test_deliver_once(void **state)
{
	struct tmpdir *t = *state;
	char mail_dir[512];
	snprintf(mail_dir, sizeof(mail_dir), "%s/mail", t->path);
	const char body[] = "Subject: once\r\n\r\nbody\r\n";
	int fd = content_fd(t->path, "", body, sizeof(body) - 1, "");
	char err[512] = "";
	assert_int_equal(maildir_deliver_once(mail_dir, "mx", "alice@example.test", fd, 0, sizeof(body) - 1, "",
					      1700000000, "1K0ABCDEFGHJKMNP.0", 1, err, sizeof(err)),
			 0);
	char newdir[600], curdir[600], names[4][512];
	snprintf(newdir, sizeof(newdir), "%s/example.test/alice/new", mail_dir);
	snprintf(curdir, sizeof(curdir), "%s/example.test/alice/cur", mail_dir);
	assert_int_equal(list_dir(newdir, names, 4), 1);
	assert_non_null(strstr(names[0], "1700000000.T1K0ABCDEFGHJKMNP.0.mx,S="));
	/* the retry after a crash: found, nothing written */
	assert_int_equal(maildir_deliver_once(mail_dir, "mx", "alice@example.test", fd, 0, sizeof(body) - 1, "",
					      1700000000, "1K0ABCDEFGHJKMNP.0", 1, err, sizeof(err)),
			 0);
	assert_int_equal(list_dir(newdir, names, 4), 1);
	/* a reader (Dovecot) moved it to cur/ with flags: still found */
	char from[1200], to[1200];
	snprintf(from, sizeof(from), "%s/%s", newdir, names[0]);
	snprintf(to, sizeof(to), "%s/%s:2,S", curdir, names[0]);
	assert_int_equal(rename(from, to), 0);
	assert_int_equal(maildir_deliver_once(mail_dir, "mx", "alice@example.test", fd, 0, sizeof(body) - 1, "",
					      1700000000, "1K0ABCDEFGHJKMNP.0", 1, err, sizeof(err)),
			 0);
	assert_int_equal(list_dir(newdir, names, 4), 0);
	/* another recipient index is another delivery */
	assert_int_equal(maildir_deliver_once(mail_dir, "mx", "alice@example.test", fd, 0, sizeof(body) - 1, "",
					      1700000000, "1K0ABCDEFGHJKMNP.1", 1, err, sizeof(err)),
			 0);
	assert_int_equal(list_dir(newdir, names, 4), 1);
	/* ids cannot carry path components */
	assert_int_equal(maildir_deliver_once(mail_dir, "mx", "alice@example.test", fd, 0, sizeof(body) - 1, "",
					      1700000000, "../../x", 1, err, sizeof(err)),
			 -1);
	close(fd);
}

/* test_deliver_once_replaces_leftover - a fixed name's file left in tmp/
 * by a crash mid-write (never delivered) is replaced, not kept */
static void test_deliver_once_replaces_leftover(void **state)
{
	struct tmpdir *t = *state;
	char mail_dir[512], p[1200], names[4][512];
	snprintf(mail_dir, sizeof(mail_dir), "%s/mail", t->path);
	const char body[] = "Subject: left\r\n\r\nwhole\r\n";
	int fd = content_fd(t->path, "", body, sizeof(body) - 1, "");
	char err[512] = "";
	/* the mailbox, made by a first delivery */
	assert_int_equal(maildir_deliver(mail_dir, "mx", "dave@example.test", fd, 0, sizeof(body) - 1, "", err,
					 sizeof(err)),
			 0);
	snprintf(p, sizeof(p), "%s/example.test/dave/tmp/1700000000.T1K0LEFTOVER0000.0.mx", mail_dir);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs("torn", f);
	fclose(f);
	assert_int_equal(maildir_deliver_once(mail_dir, "mx", "dave@example.test", fd, 0, sizeof(body) - 1, "",
					      1700000000, "1K0LEFTOVER0000.0", 0, err, sizeof(err)),
			 0);
	snprintf(p, sizeof(p), "%s/example.test/dave/tmp", mail_dir);
	assert_int_equal(list_dir(p, names, 4), 0);
	snprintf(p, sizeof(p), "%s/example.test/dave/new", mail_dir);
	int n = list_dir(p, names, 4);
	assert_int_equal(n, 2);
	int found = 0;
	for (int i = 0; i < n; i++) {
		if (strstr(names[i], "1700000000.T1K0LEFTOVER0000.0.mx,S=") == NULL)
			continue;
		char file[4096];
		snprintf(file, sizeof(file), "%s/%s", p, names[i]);
		size_t len;
		char *got = read_all(file, &len);
		assert_non_null(strstr(got, "Subject: left\n\nwhole\n"));
		free(got);
		found = 1;
	}
	assert_true(found);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_deliver_basic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_completes_mailbox, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_crlf_boundaries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_hostname_escape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_unwritable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_disk_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_once_replaces_leftover, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
