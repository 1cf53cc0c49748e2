/*
 * test_queue_prepend - queue_file_prepend and queue_file_restart, and the
 * version 2 file layout they rely on: a prepend that fits the reserve (no
 * copy), one that does not (copied at commit, synchronously and on the
 * commit thread), empty and replaced prepends, a restart with a changed
 * envelope, torn and doctored files with a gap, version 1 files still read,
 * and crashes (kill -9 of a child process) between the steps.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "core/log.h"
#include "queue/queue.h"
#include "qfixture.h"
#include "queue/queue_int.h"

static void make_env(struct envelope *e, int nrcpts)
{
	env_init(e);
	e->sender = strdup("sender@example.org");
	char a[64];
	for (int i = 0; i < nrcpts; i++) {
		snprintf(a, sizeof(a), "rcpt%d@example.test", i);
		env_rcpt_add(e, a, NULL, ENV_NOTIFY_FAILURE);
	}
}

struct done_rec {
	int calls;
	int status;
	struct event_base *base;
};

static void on_done(void *arg, int status, const char *reason)
{
	(void)reason;
	struct done_rec *d = arg;
	d->calls++;
	d->status = status;
	if (d->base)
		event_base_loopbreak(d->base);
}

/* commit_sync - commit f on the synchronous queue; it must succeed */
static void commit_sync(struct queue_file *f)
{
	struct done_rec d = {0};
	queue_file_commit(f, on_done, &d);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.status, 0);
}

/* content_of - the committed content of qid, malloc'd; *n its length */
static char *content_of(struct queue *q, const char *qid, size_t *n)
{
	int fd;
	off_t off, len;
	char err[256];
	if (queue_msg_content(q, qid, &fd, &off, &len, err, sizeof(err)) < 0)
		fail_msg("queue_msg_content %s: %s", qid, err);
	char *b = malloc((size_t)len + 1);
	assert_int_equal(pread(fd, b, (size_t)len, off), len);
	close(fd);
	b[len] = '\0';
	*n = (size_t)len;
	return b;
}

/* expect_content - the committed content is exactly a then b */
static void expect_content(struct queue *q, const char *qid, const char *a, size_t an, const char *b, size_t bn)
{
	size_t n;
	char *c = content_of(q, qid, &n);
	assert_int_equal(n, an + bn);
	assert_memory_equal(c, a, an);
	assert_memory_equal(c + an, b, bn);
	free(c);
}

static char *read_whole(const char *p, size_t *n)
{
	int fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	char *b = malloc((size_t)st.st_size + 1);
	assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
	close(fd);
	*n = (size_t)st.st_size;
	return b;
}

static void write_whole(const char *p, const char *b, size_t n)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b, n), (ssize_t)n);
	close(fd);
}

/* pattern - n bytes of header-like text, different for each seed */
static char *pattern(size_t n, unsigned seed)
{
	char *p = malloc(n + 1);
	for (size_t i = 0; i < n; i++)
		p[i] = (char)('A' + (i * 7 + seed) % 26);
	if (n >= 2) {
		p[n - 2] = '\r';
		p[n - 1] = '\n';
	}
	p[n] = '\0';
	return p;
}

static const char body[] = "From: a@example.org\r\nSubject: prepend\r\n\r\nbody line\r\n";

static void test_prepend_fits(void **state)
{
	struct fixture *fx = *state;
	struct envelope e;
	make_env(&e, 2);
	char err[256];
	struct queue_file *f = queue_file_create(fx->q, &e, err, sizeof(err));
	assert_non_null(f);
	ino_t ino = inode(fx, "tmp", e.qid);
	assert_int_equal(queue_file_write(f, body, sizeof(body) - 1), 0);
	const char ar[] = "Authentication-Results: mx.example.org; spf=pass\r\n";
	assert_int_equal(queue_file_prepend(f, ar, sizeof(ar) - 1), 0);
	commit_sync(f);
	/* written in place: the committed file is the one created */
	assert_int_equal(inode(fx, "msg", e.qid), ino);
	assert_int_equal(e.content_size, sizeof(ar) - 1 + sizeof(body) - 1);
	expect_content(fx->q, e.qid, ar, sizeof(ar) - 1, body, sizeof(body) - 1);
	struct envelope l;
	assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), 0);
	assert_int_equal(l.content_size, sizeof(ar) - 1 + sizeof(body) - 1);
	env_free(&l);
	/* the layout: version 2, the gap is what the prepend left of the reserve */
	char p[200];
	size_t n;
	qpath(fx, p, sizeof(p), "msg", e.qid);
	char *whole = read_whole(p, &n);
	assert_memory_equal(whole, "TERN-QUEUE 2\n", 13);
	char tail[64];
	snprintf(tail, sizeof(tail), "\nTERN-END %u %zu\n", QUEUE_RESERVE - (unsigned)(sizeof(ar) - 1),
		 sizeof(ar) - 1 + sizeof(body) - 1);
	assert_true(n > strlen(tail));
	assert_memory_equal(whole + n - strlen(tail), tail, strlen(tail));
	free(whole);
	env_free(&e);

	/* exactly the reserve still fits (gap 0, no copy), with content larger
	 * than the write buffer written around it */
	make_env(&e, 1);
	f = queue_file_create(fx->q, &e, err, sizeof(err));
	assert_non_null(f);
	ino = inode(fx, "tmp", e.qid);
	char *big = pattern(300000, 3);
	assert_int_equal(queue_file_write(f, big, 300000), 0);
	char *pre = pattern(QUEUE_RESERVE, 1);
	assert_int_equal(queue_file_prepend(f, pre, QUEUE_RESERVE), 0);
	commit_sync(f);
	assert_int_equal(inode(fx, "msg", e.qid), ino);
	expect_content(fx->q, e.qid, pre, QUEUE_RESERVE, big, 300000);
	free(pre);
	free(big);
	env_free(&e);
}

static void test_prepend_copy(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	/* one byte over the reserve, a large prepend, with small and large content */
	const size_t pre_sizes[] = {QUEUE_RESERVE + 1, 200000};
	const size_t content_sizes[] = {0, sizeof(body) - 1, 150000};
	for (size_t i = 0; i < 2; i++) {
		for (size_t j = 0; j < 3; j++) {
			struct envelope e;
			make_env(&e, 3);
			struct queue_file *f = queue_file_create(fx->q, &e, err, sizeof(err));
			assert_non_null(f);
			ino_t ino = inode(fx, "tmp", e.qid);
			char *content = j == 1 ? strdup(body) : pattern(content_sizes[j], 5);
			assert_int_equal(queue_file_write(f, content, content_sizes[j]), 0);
			char *pre = pattern(pre_sizes[i], 9);
			assert_int_equal(queue_file_prepend(f, pre, pre_sizes[i]), 0);
			commit_sync(f);
			assert_true(inode(fx, "msg", e.qid) != ino); /* copied */
			assert_int_equal(count(fx, "tmp"), 0);
			assert_int_equal(e.content_size, pre_sizes[i] + content_sizes[j]);
			expect_content(fx->q, e.qid, pre, pre_sizes[i], content, content_sizes[j]);
			struct envelope l;
			assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), 0);
			assert_int_equal(l.nrcpts, 3);
			assert_string_equal(l.sender, "sender@example.org");
			env_free(&l);
			free(pre);
			free(content);
			env_free(&e);
		}
	}
}

/* test_prepend_async - both paths through the commit thread */
static void test_prepend_async(void **state)
{
	struct fixture *fx = *state;
	struct event_base *base = event_base_new();
	char err[256];
	struct queue *q = queue_open(fx->qdir, base, err, sizeof(err));
	assert_non_null(q);
	const size_t sizes[] = {100, QUEUE_RESERVE + 100};
	for (size_t i = 0; i < 2; i++) {
		struct envelope e;
		make_env(&e, 1);
		struct queue_file *f = queue_file_create(q, &e, err, sizeof(err));
		assert_non_null(f);
		assert_int_equal(queue_file_write(f, body, sizeof(body) - 1), 0);
		char *pre = pattern(sizes[i], 2);
		assert_int_equal(queue_file_prepend(f, pre, sizes[i]), 0);
		struct done_rec d = {.base = base};
		queue_file_commit(f, on_done, &d);
		assert_int_equal(d.calls, 0);
		event_base_dispatch(base);
		assert_int_equal(d.calls, 1);
		assert_int_equal(d.status, 0);
		expect_content(q, e.qid, pre, sizes[i], body, sizeof(body) - 1);
		free(pre);
		env_free(&e);
	}
	assert_int_equal(count(fx, "tmp"), 0);
	queue_close(q);
	event_base_free(base);
}

static void test_prepend_empty_and_replaced(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	struct envelope e;
	/* no prepend at all, and an empty one: the content alone */
	for (int k = 0; k < 2; k++) {
		make_env(&e, 1);
		struct queue_file *f = queue_file_create(fx->q, &e, err, sizeof(err));
		assert_non_null(f);
		assert_int_equal(queue_file_write(f, body, sizeof(body) - 1), 0);
		if (k == 1)
			assert_int_equal(queue_file_prepend(f, "", 0), 0);
		commit_sync(f);
		assert_int_equal(e.content_size, sizeof(body) - 1);
		expect_content(fx->q, e.qid, "", 0, body, sizeof(body) - 1);
		env_free(&e);
	}
	/* a later call replaces the text; a long one replaced by a short one
	 * is written in place; n = 0 removes it */
	make_env(&e, 1);
	struct queue_file *f = queue_file_create(fx->q, &e, err, sizeof(err));
	assert_non_null(f);
	ino_t ino = inode(fx, "tmp", e.qid);
	char *longp = pattern(QUEUE_RESERVE * 3, 4);
	assert_int_equal(queue_file_prepend(f, longp, QUEUE_RESERVE * 3), 0);
	assert_int_equal(queue_file_write(f, body, 10), 0);
	assert_int_equal(queue_file_prepend(f, "X-First: 1\r\n", 12), 0);
	assert_int_equal(queue_file_write(f, body + 10, sizeof(body) - 1 - 10), 0);
	assert_int_equal(queue_file_prepend(f, "X-Second: 2\r\n", 13), 0);
	commit_sync(f);
	assert_int_equal(inode(fx, "msg", e.qid), ino);
	expect_content(fx->q, e.qid, "X-Second: 2\r\n", 13, body, sizeof(body) - 1);
	free(longp);
	env_free(&e);

	make_env(&e, 1);
	f = queue_file_create(fx->q, &e, err, sizeof(err));
	assert_non_null(f);
	assert_int_equal(queue_file_prepend(f, "X-Gone: 1\r\n", 11), 0);
	assert_int_equal(queue_file_write(f, body, sizeof(body) - 1), 0);
	assert_int_equal(queue_file_prepend(f, NULL, 0), 0);
	commit_sync(f);
	expect_content(fx->q, e.qid, "", 0, body, sizeof(body) - 1);
	env_free(&e);
}

/* read_old - the old content through the descriptor restart gave */
static char *read_old(int fd, off_t off, off_t len)
{
	char *b = malloc((size_t)len + 1);
	assert_int_equal(pread(fd, b, (size_t)len, off), len);
	b[len] = '\0';
	return b;
}

static void test_restart(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	struct envelope e;
	make_env(&e, 3);
	struct queue_file *f = queue_file_create(fx->q, &e, err, sizeof(err));
	assert_non_null(f);
	char qid[QUEUE_ID_MAX];
	memcpy(qid, e.qid, sizeof(qid));
	ino_t ino = inode(fx, "tmp", qid);
	const char first[] = "Authentication-Results: mx.example.org; forged\r\nSubject: a\r\n\r\nold body\r\n";
	assert_int_equal(queue_file_write(f, first, sizeof(first) - 1), 0);
	assert_int_equal(queue_file_prepend(f, "X-Kept: yes\r\n", 13), 0);

	/* a changed envelope that cannot be stored is refused, nothing changes */
	char *sender = e.sender;
	e.sender = strdup("evil\r\nrcpt 0 - x@y");
	int ofd = -1;
	off_t ooff = -1, olen = -1;
	errno = 0;
	assert_int_equal(queue_file_restart(f, &ofd, &ooff, &olen), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(ofd, -1);
	assert_int_equal(inode(fx, "tmp", qid), ino);
	free(e.sender);
	e.sender = sender;

	/* milter edits: CHGFROM, DELRCPT (rcpt1), ADDRCPT; a scribbled qid */
	free(e.sender);
	e.sender = strdup("changed@example.org");
	struct envelope n;
	env_init(&n);
	for (size_t i = 0; i < e.nrcpts; i++)
		if (i != 1)
			env_rcpt_add(&n, e.rcpts[i].addr, e.rcpts[i].orcpt, e.rcpts[i].notify);
	env_rcpt_add(&n, "added@example.test", "rfc822;added@example.test", ENV_NOTIFY_SUCCESS);
	for (size_t i = 0; i < e.nrcpts; i++) {
		free(e.rcpts[i].addr);
		free(e.rcpts[i].orcpt);
	}
	free(e.rcpts);
	e.rcpts = n.rcpts;
	e.nrcpts = n.nrcpts;
	e.cap_rcpts = n.cap_rcpts;
	memcpy(e.qid, "0000000000000000", 17);
	assert_int_equal(queue_file_restart(f, &ofd, &ooff, &olen), 0);
	assert_string_equal(e.qid, qid);
	assert_true(ofd >= 0);
	assert_int_equal(olen, sizeof(first) - 1);
	char *old = read_old(ofd, ooff, olen);
	assert_string_equal(old, first);
	/* a new file under the same name; the old one has no name left */
	assert_true(inode(fx, "tmp", qid) != ino);
	assert_int_equal(count(fx, "tmp"), 1);
	struct stat st;
	assert_int_equal(fstat(ofd, &st), 0);
	assert_int_equal(st.st_nlink, 0);

	/* the filter's copy: the old content without the forged field */
	const char *keep = strstr(old, "Subject:");
	assert_int_equal(queue_file_write(f, keep, strlen(keep) - 6), 0);
	/* still readable while the new content is written */
	char *again = read_old(ofd, ooff, olen);
	assert_string_equal(again, first);
	free(again);
	/* a second restart: the old content is now the copy so far */
	int ofd2;
	off_t ooff2, olen2;
	assert_int_equal(queue_file_restart(f, &ofd2, &ooff2, &olen2), 0);
	assert_int_equal(olen2, (off_t)strlen(keep) - 6);
	char *old2 = read_old(ofd2, ooff2, olen2);
	assert_memory_equal(old2, keep, (size_t)olen2);
	free(old2);
	assert_int_equal(fcntl(ofd, F_GETFD), -1); /* the first one is closed */
	assert_int_equal(queue_file_write(f, keep, strlen(keep)), 0);
	commit_sync(f);
	assert_int_equal(count(fx, "tmp"), 0);

	struct envelope l;
	assert_int_equal(queue_msg_load(fx->q, qid, &l, err, sizeof(err)), 0);
	assert_string_equal(l.qid, qid);
	assert_string_equal(l.sender, "changed@example.org");
	assert_int_equal(l.nrcpts, 3);
	assert_string_equal(l.rcpts[0].addr, "rcpt0@example.test");
	assert_string_equal(l.rcpts[1].addr, "rcpt2@example.test");
	assert_string_equal(l.rcpts[2].addr, "added@example.test");
	assert_string_equal(l.rcpts[2].orcpt, "rfc822;added@example.test");
	assert_int_equal(l.rcpts[2].notify, ENV_NOTIFY_SUCCESS);
	env_free(&l);
	/* the prepend survived the restarts */
	expect_content(fx->q, qid, "X-Kept: yes\r\n", 13, keep, strlen(keep));
	free(old);
	env_free(&e);
}

/* test_restart_abort - abort after a restart leaves nothing behind */
static void test_restart_abort(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	struct envelope e;
	make_env(&e, 1);
	struct queue_file *f = queue_file_create(fx->q, &e, err, sizeof(err));
	assert_non_null(f);
	char *big = pattern(100000, 1);
	assert_int_equal(queue_file_write(f, big, 100000), 0);
	int ofd;
	off_t ooff, olen;
	assert_int_equal(queue_file_restart(f, &ofd, &ooff, &olen), 0);
	assert_int_equal(olen, 100000);
	char *old = read_old(ofd, ooff, olen);
	assert_memory_equal(old, big, 100000);
	free(old);
	assert_int_equal(queue_file_write(f, big, 10), 0);
	queue_file_abort(f);
	assert_int_equal(count(fx, "tmp"), 0);
	assert_int_equal(count(fx, "msg"), 0);
	free(big);
	env_free(&e);
}

/* torn_check - every prefix of the file at p, and the whole file with one
 * more byte, is refused as corrupt; the intact file is accepted */
static void torn_check(struct fixture *fx, const char *qid, const char *p)
{
	size_t n;
	char *whole = read_whole(p, &n);
	char err[256];
	struct envelope l;
	/* cut short at every offset, from the end down (so truncate alone
	 * makes each prefix); inside the run of NUL bytes of the gap every
	 * 61st offset is enough */
	for (size_t k = n; k-- > 0;) {
		int in_gap = k > 0 && k + 1 < n && whole[k - 1] == '\0' && whole[k] == '\0' && whole[k + 1] == '\0';
		if (in_gap && k % 61)
			continue;
		assert_int_equal(truncate(p, (off_t)k), 0);
		errno = 0;
		assert_int_equal(queue_msg_load(fx->q, qid, &l, err, sizeof(err)), -1);
		assert_int_equal(errno, EBADMSG);
	}
	char *more = malloc(n + 1);
	memcpy(more, whole, n);
	more[n] = '\n';
	write_whole(p, more, n + 1);
	assert_int_equal(queue_msg_load(fx->q, qid, &l, err, sizeof(err)), -1);
	free(more);
	write_whole(p, whole, n);
	assert_int_equal(queue_msg_load(fx->q, qid, &l, err, sizeof(err)), 0);
	env_free(&l);
	free(whole);
}

static void test_torn_with_gap(void **state)
{
	struct fixture *fx = *state;
	char err[256], p[200];
	const size_t pre_sizes[] = {0, 60, QUEUE_RESERVE + 10};
	for (size_t i = 0; i < 3; i++) {
		struct envelope e;
		make_env(&e, 2);
		struct queue_file *f = queue_file_create(fx->q, &e, err, sizeof(err));
		assert_non_null(f);
		assert_int_equal(queue_file_write(f, body, sizeof(body) - 1), 0);
		char *pre = pattern(pre_sizes[i], 7);
		assert_int_equal(queue_file_prepend(f, pre, pre_sizes[i]), 0);
		commit_sync(f);
		qpath(fx, p, sizeof(p), "msg", e.qid);
		torn_check(fx, e.qid, p);
		free(pre);
		env_free(&e);
	}

	/* doctored files with a gap: a byte in the gap, numbers that move the
	 * content start into the gap or into the header */
	struct envelope e;
	make_env(&e, 1);
	struct queue_file *f = queue_file_create(fx->q, &e, err, sizeof(err));
	assert_non_null(f);
	assert_int_equal(queue_file_write(f, "abc\r\n", 5), 0);
	assert_int_equal(queue_file_prepend(f, "X: 1\r\n", 6), 0);
	commit_sync(f);
	qpath(fx, p, sizeof(p), "msg", e.qid);
	size_t n;
	char *whole = read_whole(p, &n);
	char tail[64];
	int tl = snprintf(tail, sizeof(tail), "\nTERN-END %u 11\n", QUEUE_RESERVE - 6);
	assert_memory_equal(whole + n - (size_t)tl, tail, (size_t)tl);
	size_t gap_at = n - (size_t)tl - 11 - (QUEUE_RESERVE - 6);
	assert_memory_equal(whole + gap_at - 8, "content\n", 8);
	struct envelope l;
	char *bad = malloc(n + 64);
	/* a stray byte anywhere in the gap */
	const size_t spots[] = {0, 1, 2000, QUEUE_RESERVE - 7};
	for (size_t i = 0; i < 4; i++) {
		memcpy(bad, whole, n);
		bad[gap_at + spots[i]] = 'x';
		write_whole(p, bad, n);
		errno = 0;
		assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), -1);
		assert_int_equal(errno, EBADMSG);
	}
	/* the marker rewritten to other numbers of the same total (the start
	 * moved into the prepend), non-canonical or the version 1 form. (A
	 * coordinated edit moving the start back into the gap cannot be told
	 * from content that begins with NUL bytes.) */
	const char *const markers[] = {"\nTERN-END 4091 10\n", "\nTERN-END 4100 1\n", "\nTERN-END 4097 10\n",
				       "\nTERN-END 4090 011\n", "\nTERN-END 04090 11\n", "\nTERN-END 11\n"};
	for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++) {
		size_t ml = strlen(markers[i]);
		memcpy(bad, whole, n - (size_t)tl);
		memcpy(bad + n - (size_t)tl, markers[i], ml);
		write_whole(p, bad, n - (size_t)tl + ml);
		errno = 0;
		assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), -1);
		assert_int_equal(errno, EBADMSG);
	}
	/* as a version 1 file the gap makes it corrupt */
	memcpy(bad, whole, n);
	bad[11] = '1';
	write_whole(p, bad, n);
	assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), -1);
	write_whole(p, whole, n);
	expect_content(fx->q, e.qid, "X: 1\r\n", 6, "abc\r\n", 5);
	free(bad);
	free(whole);
	env_free(&e);
}

/* test_version1 - files written before the gap are read as before */
static void test_version1(void **state)
{
	struct fixture *fx = *state;
	const char qid[] = "01HZZZZZZZZZZZZZ";
	char p[200], err[256];
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_adds(&sb, "TERN-QUEUE 1\nqid ");
	strbuf_adds(&sb, qid);
	strbuf_adds(&sb, "\narrival 1700000000\nsender a@b\nbody 8BITMIME\nsmtputf8 0\nret\nenvid\nclient 192.0.2.1\n"
			 "helo h\nauth\nrcpt 4 - c@d\ncontent\n");
	strbuf_add(&sb, body, sizeof(body) - 1);
	strbuf_addf(&sb, "\nTERN-END %zu\n", sizeof(body) - 1);
	qpath(fx, p, sizeof(p), "msg", qid);
	write_whole(p, sb.s, sb.len);
	struct envelope l;
	assert_int_equal(queue_msg_load(fx->q, qid, &l, err, sizeof(err)), 0);
	assert_string_equal(l.sender, "a@b");
	assert_int_equal(l.content_size, sizeof(body) - 1);
	env_free(&l);
	expect_content(fx->q, qid, "", 0, body, sizeof(body) - 1);
	torn_check(fx, qid, p);
	/* a version 2 marker on a version 1 file is torn */
	struct strbuf b2;
	strbuf_init(&b2);
	strbuf_add(&b2, sb.s, sb.len);
	char *m = strstr(b2.s + b2.len - 20, "TERN-END ");
	assert_non_null(m);
	b2.len = (size_t)(m - b2.s);
	strbuf_addf(&b2, "TERN-END 0 %zu\n", sizeof(body) - 1);
	write_whole(p, b2.s, b2.len);
	assert_int_equal(queue_msg_load(fx->q, qid, &l, err, sizeof(err)), -1);
	/* the scan hands the intact one over */
	write_whole(p, sb.s, sb.len);
	strbuf_free(&b2);
	strbuf_free(&sb);
}

/* ---- crashes: a child process killed at random moments ---- */

struct child_rec {
	char qid[QUEUE_ID_MAX];
	uint32_t pre_len, content_len, seed;
};

/* child_fill - deterministic bytes of one message part */
static void child_fill(char *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)('a' + (seed + i * 13) % 26);
}

/* child_run - receive messages for ever with prepends and restarts of
 * random sizes; report each one whose commit succeeded (as a client
 * would hear 250) on fd. Never returns. */
static void child_run(const char *qdir, int fd, unsigned seed)
{
	char err[256];
	struct queue *q = queue_open(qdir, NULL, err, sizeof(err));
	if (q == NULL)
		_exit(2);
	srand(seed);
	static char buf[QUEUE_RESERVE * 3 + 70000];
	for (uint32_t k = 0;; k++) {
		struct envelope e;
		make_env(&e, 1 + k % 3);
		struct queue_file *f = queue_file_create(q, &e, err, sizeof(err));
		if (f == NULL)
			_exit(3);
		struct child_rec r = {0};
		r.seed = (uint32_t)rand();
		r.content_len = (uint32_t)(rand() % 70000);
		r.pre_len = (uint32_t)(k % 4 == 3 ? QUEUE_RESERVE + (unsigned)rand() % QUEUE_RESERVE
						  : (unsigned)rand() % 300);
		if (k % 2) {
			/* something first, then a restart with another envelope */
			child_fill(buf, 5000, ~r.seed);
			queue_file_write(f, buf, 5000);
			env_rcpt_add(&e, "added@example.test", NULL, 0);
			int ofd;
			off_t ooff, olen;
			if (queue_file_restart(f, &ofd, &ooff, &olen) < 0)
				_exit(4);
		}
		child_fill(buf, r.content_len, r.seed);
		queue_file_write(f, buf, r.content_len);
		child_fill(buf, r.pre_len, r.seed + 1);
		queue_file_prepend(f, buf, r.pre_len);
		struct done_rec d = {0};
		queue_file_commit(f, on_done, &d);
		if (d.status != 0)
			_exit(5);
		memcpy(r.qid, e.qid, sizeof(r.qid));
		if (write(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(6);
		env_free(&e);
	}
}

struct found_all {
	int n;
};

static void on_found(void *arg, struct envelope *env)
{
	(void)env;
	((struct found_all *)arg)->n++;
}

static void test_crash_between_steps(void **state)
{
	struct fixture *fx = *state;
	static char want[QUEUE_RESERVE * 3 + 70000];
	int acked = 0;
	for (unsigned round = 0; round < 8; round++) {
		int pfd[2];
		assert_int_equal(pipe(pfd), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(pfd[0]);
			child_run(fx->qdir, pfd[1], round + 1);
		}
		close(pfd[1]);
		/* let it get somewhere, then kill -9 in the middle of whatever */
		struct timespec ts = {0, (long)(20 + round * 17) * 1000000L};
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		int st;
		waitpid(pid, &st, 0);
		assert_true(WIFSIGNALED(st));
		/* recovery: tmp/ emptied, nothing set aside as corrupt */
		struct found_all fa = {0};
		char err[256];
		assert_int_equal(queue_scan(fx->q, on_found, &fa, err, sizeof(err)), 0);
		assert_int_equal(count(fx, "tmp"), 0);
		assert_int_equal(count(fx, "corrupt"), 0);
		/* every acknowledged message is there, whole, with its prepend */
		struct child_rec r;
		int n = 0;
		while (read(pfd[0], &r, sizeof(r)) == (ssize_t)sizeof(r)) {
			size_t len;
			char *c = content_of(fx->q, r.qid, &len);
			assert_int_equal(len, r.pre_len + r.content_len);
			child_fill(want, r.pre_len, r.seed + 1);
			assert_memory_equal(c, want, r.pre_len);
			child_fill(want, r.content_len, r.seed);
			assert_memory_equal(c + r.pre_len, want, r.content_len);
			free(c);
			assert_int_equal(queue_msg_remove(fx->q, r.qid), 0);
			n++;
		}
		close(pfd[0]);
		/* at most one message was committed but not yet reported (it is
		 * complete: nothing went to corrupt/) */
		assert_true(fa.n - n >= 0 && fa.n - n <= 1);
		acked += n;
		queue_close(fx->q);
		nftw(fx->qdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
		fx->q = queue_open(fx->qdir, NULL, err, sizeof(err));
		assert_non_null(fx->q);
	}
	/* the rounds did real work */
	assert_true(acked > 0);
}

int main(void)
{
	log_init("test_queue_prepend", LOG_LEVEL_CRIT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_prepend_fits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prepend_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prepend_async, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prepend_empty_and_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_with_gap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_version1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_between_steps, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
