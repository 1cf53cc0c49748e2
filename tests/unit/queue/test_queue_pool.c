/*
 * test_queue_pool - queue_msg_finish and the free/ pool: a finished
 * message's file is reused by the next one (no new inode) and cut to the
 * new size (kept empty meanwhile); aborted files are reused too; the start-up scan takes free/
 * into the pool and leaves alone (or removes) what it must not reuse: a
 * name also in msg/ (a removal a crash undid half), a second link, an
 * oversized file, a stray name; the pool's size is bounded.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/log.h"
#include "queue/queue.h"
#include "qfixture.h"
#include "queue/queue_int.h"

static void make_env(struct envelope *e)
{
	env_init(e);
	e->sender = strdup("sender@example.org");
	env_rcpt_add(e, "rcpt@example.test", NULL, 0);
}

static void on_done(void *arg, int status, const char *reason)
{
	(void)reason;
	*(int *)arg = status;
}

/* commit_msg - content of n bytes of c, committed; returns the env */
static void commit_msg(struct fixture *fx, struct envelope *e, char c, size_t n)
{
	char err[256];
	make_env(e);
	struct queue_file *f = queue_file_create(fx->q, e, err, sizeof(err));
	assert_non_null(f);
	char *b = malloc(n + 1);
	memset(b, c, n);
	assert_int_equal(queue_file_write(f, b, n), 0);
	free(b);
	int st = -2;
	queue_file_commit(f, on_done, &st);
	assert_int_equal(st, 0);
}

/* expect_content - n bytes of c */
static void expect_content(struct fixture *fx, const char *qid, char c, size_t n)
{
	int fd;
	off_t off, len;
	char err[256];
	assert_int_equal(queue_msg_content(fx->q, qid, &fd, &off, &len, err, sizeof(err)), 0);
	assert_int_equal(len, n);
	char *b = malloc(n + 1);
	assert_int_equal(pread(fd, b, n, off), (ssize_t)n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(b[i], c);
	free(b);
	close(fd);
}

/* free_bytes - the sum of the sizes of the files in free/ */
static uint64_t free_bytes(struct fixture *fx)
{
	char p[200];
	qpath(fx, p, sizeof(p), "free", "");
	DIR *d = opendir(p);
	assert_non_null(d);
	uint64_t sum = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		if (e->d_name[0] != '.' && fstatat(dirfd(d), e->d_name, &st, 0) == 0)
			sum += (uint64_t)st.st_size;
	}
	closedir(d);
	return sum;
}

static void test_finish_reuses_the_file(void **state)
{
	struct fixture *fx = *state;
	struct envelope a, b, c;
	commit_msg(fx, &a, 'a', 20000);
	ino_t ino = inode(fx, "msg", a.qid);
	char err[256];
	/* a state log from an earlier pass goes with it */
	assert_int_equal(queue_rcpt_record(fx->q, a.qid, 0, ENV_RCPT_PENDING, 1, 0, "x", err, sizeof(err)), 0);
	assert_int_equal(queue_msg_finish(fx->q, a.qid, 0), 0);
	assert_false(exists(fx, "msg", a.qid));
	assert_false(exists(fx, "state", a.qid));
	assert_true(exists(fx, "free", a.qid));
	/* a small file keeps its blocks: the next message overwrites them
	 * (nothing freed, discarded and allocated again) */
	char p[200];
	struct stat st;
	qpath(fx, p, sizeof(p), "free", a.qid);
	assert_int_equal(stat(p, &st), 0);
	assert_true(st.st_size > 20000);
	assert_true(st.st_blocks > 0);
	/* the next message is written into it: same inode, shorter, cut */
	commit_msg(fx, &b, 'b', 100);
	assert_int_equal(inode(fx, "msg", b.qid), ino);
	assert_int_equal(count(fx, "free"), 0);
	expect_content(fx, b.qid, 'b', 100);
	struct envelope l;
	assert_int_equal(queue_msg_load(fx->q, b.qid, &l, err, sizeof(err)), 0);
	assert_int_equal(l.content_size, 100);
	env_free(&l);
	/* and longer again, synced removal this time */
	assert_int_equal(queue_msg_finish(fx->q, b.qid, 1), 0);
	commit_msg(fx, &c, 'c', 70000);
	assert_int_equal(inode(fx, "msg", c.qid), ino);
	expect_content(fx, c.qid, 'c', 70000);
	/* over QUEUE_POOL_KEEP_MAX: kept emptied, the pool holds its inode,
	 * not its disk space */
	assert_int_equal(queue_msg_finish(fx->q, c.qid, 0), 0);
	qpath(fx, p, sizeof(p), "free", c.qid);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(st.st_blocks, 0);
	env_free(&c);
	commit_msg(fx, &c, 'c', 50000);
	assert_int_equal(inode(fx, "msg", c.qid), ino);
	expect_content(fx, c.qid, 'c', 50000);
	/* with the pool empty a new file is made */
	struct envelope d;
	commit_msg(fx, &d, 'd', 10);
	assert_true(inode(fx, "msg", d.qid) != ino);
	/* finishing something gone or invalid */
	assert_int_equal(queue_msg_finish(fx->q, "0000000000000000", 0), 0);
	assert_int_equal(queue_msg_finish(fx->q, "../x", 0), -1);
	env_free(&a);
	env_free(&b);
	env_free(&c);
	env_free(&d);
}

static void test_abort_and_large(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	struct envelope a, b, big;
	make_env(&a);
	struct queue_file *f = queue_file_create(fx->q, &a, err, sizeof(err));
	assert_non_null(f);
	ino_t ino = inode(fx, "tmp", a.qid);
	assert_int_equal(queue_file_write(f, "partial", 7), 0);
	queue_file_abort(f);
	assert_int_equal(count(fx, "tmp"), 0);
	assert_int_equal(count(fx, "free"), 1);
	commit_msg(fx, &b, 'b', 3);
	assert_int_equal(inode(fx, "msg", b.qid), ino);
	expect_content(fx, b.qid, 'b', 3);
	/* a file larger than the pool keeps is removed, not kept */
	commit_msg(fx, &big, 'x', QUEUE_POOL_FILE_MAX + 1);
	assert_int_equal(queue_msg_finish(fx->q, big.qid, 0), 0);
	assert_int_equal(count(fx, "free"), 0);
	assert_int_equal(count(fx, "msg"), 1);
	/* the pool is bounded (smaller bounds than the daemon's, same code) */
	assert_true(fx->q->pool_max >= 4096 && fx->q->pool_keep_bytes >= (16u << 20));
	fx->q->pool_max = 200;
	fx->q->pool_keep_bytes = 2u << 20;
	struct envelope *many = calloc(205, sizeof(*many));
	for (int i = 0; i < 205; i++)
		commit_msg(fx, &many[i], 'm', 10);
	for (int i = 0; i < 205; i++) {
		assert_int_equal(queue_msg_finish(fx->q, many[i].qid, 0), 0);
		env_free(&many[i]);
	}
	assert_int_equal(count(fx, "free"), 200);
	free(many);
	/* the blocks it keeps are bounded too (pool_keep_bytes) */
	struct envelope mid[60];
	for (int i = 0; i < 60; i++)
		commit_msg(fx, &mid[i], 'k', 60000);
	for (int i = 0; i < 60; i++) {
		assert_int_equal(queue_msg_finish(fx->q, mid[i].qid, 0), 0);
		env_free(&mid[i]);
	}
	assert_true(free_bytes(fx) <= fx->q->pool_keep_bytes);
	assert_true(free_bytes(fx) >= fx->q->pool_keep_bytes - 2 * QUEUE_POOL_KEEP_MAX);
	env_free(&a);
	env_free(&b);
	env_free(&big);
}

/* test_reuse_refuses_linked - a pooled file that gained a second name
 * (nothing we do makes one; a crash and a file system check could) is not
 * written: a new file is made and the other name keeps its inode */
static void test_reuse_refuses_linked(void **state)
{
	struct fixture *fx = *state;
	struct envelope a, b;
	commit_msg(fx, &a, 'a', 10);
	assert_int_equal(queue_msg_finish(fx->q, a.qid, 0), 0);
	char p[200], p2[200];
	qpath(fx, p, sizeof(p), "free", a.qid);
	snprintf(p2, sizeof(p2), "%s/second-name", fx->dir);
	assert_int_equal(link(p, p2), 0);
	ino_t ino = inode(fx, "free", a.qid);
	struct stat st;
	assert_int_equal(stat(p2, &st), 0);
	off_t size = st.st_size;
	commit_msg(fx, &b, 'b', 10);
	assert_true(inode(fx, "msg", b.qid) != ino);
	expect_content(fx, b.qid, 'b', 10);
	/* the other name's file is as it was: not written */
	assert_int_equal(stat(p2, &st), 0);
	assert_int_equal(st.st_size, size);
	assert_int_equal(st.st_ino, ino);
	env_free(&a);
	env_free(&b);
}

static int found_n;
static void on_found(void *arg, struct envelope *env)
{
	(void)arg;
	(void)env;
	found_n++;
}

static void test_scan_free(void **state)
{
	struct fixture *fx = *state;
	char err[256], p[200], p2[200];
	struct envelope a, b, c, d, e, g;
	commit_msg(fx, &a, 'a', 10);
	commit_msg(fx, &b, 'b', 10);
	/* over QUEUE_POOL_KEEP_MAX: emptied when finished */
	commit_msg(fx, &c, 'c', QUEUE_POOL_KEEP_MAX + 1);
	commit_msg(fx, &e, 'e', 10);
	commit_msg(fx, &g, 'g', 10);
	assert_int_equal(queue_msg_finish(fx->q, a.qid, 0), 0);
	assert_int_equal(queue_msg_finish(fx->q, b.qid, 0), 0);
	/* b's removal undone half by a crash: the name is in msg/ as well */
	qpath(fx, p, sizeof(p), "free", b.qid);
	qpath(fx, p2, sizeof(p2), "msg", b.qid);
	assert_int_equal(link(p, p2), 0);
	/* a second link elsewhere, an oversized file, a stray name */
	qpath(fx, p, sizeof(p), "free", a.qid);
	snprintf(p2, sizeof(p2), "%s/other-link", fx->dir);
	assert_int_equal(link(p, p2), 0);
	qpath(fx, p, sizeof(p), "free", "0000000000000001");
	int fd = open(p, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, QUEUE_POOL_FILE_MAX + 1), 0);
	close(fd);
	qpath(fx, p, sizeof(p), "free", "stray.txt");
	fd = open(p, O_WRONLY | O_CREAT, 0600);
	close(fd);
	qpath(fx, p, sizeof(p), "free", "0000000000000002");
	fd = open(p, O_WRONLY | O_CREAT, 0600);
	assert_int_equal(write(fd, "old", 3), 3);
	close(fd);
	ino_t good = inode(fx, "free", "0000000000000002");

	/* c's removal undone whole (the emptied file back in msg/), with its
	 * state log */
	assert_int_equal(queue_rcpt_record(fx->q, c.qid, 0, ENV_RCPT_PENDING, 1, 0, "x", err, sizeof(err)), 0);
	assert_int_equal(queue_msg_finish(fx->q, c.qid, 0), 0);
	qpath(fx, p, sizeof(p), "free", c.qid);
	qpath(fx, p2, sizeof(p2), "msg", c.qid);
	assert_int_equal(rename(p, p2), 0);
	qpath(fx, p, sizeof(p), "state", c.qid);
	fd = open(p, O_WRONLY | O_CREAT, 0600);
	close(fd);
	/* g's (a small file, kept whole) undone as well: the message is back,
	 * found and delivered again (queue_msg_finish without sync says so) */
	assert_int_equal(queue_msg_finish(fx->q, g.qid, 0), 0);
	qpath(fx, p, sizeof(p), "free", g.qid);
	qpath(fx, p2, sizeof(p2), "msg", g.qid);
	assert_int_equal(rename(p, p2), 0);

	found_n = 0;
	assert_int_equal(queue_scan(fx->q, on_found, NULL, err, sizeof(err)), 0);
	/* e, g and b (whole in msg/, delivered again): the emptied c is
	 * removed from msg/ (nothing to deliver), not set aside as corrupt */
	assert_int_equal(found_n, 3);
	expect_content(fx, g.qid, 'g', 10);
	expect_content(fx, b.qid, 'b', 10);
	assert_false(exists(fx, "msg", c.qid));
	assert_false(exists(fx, "state", c.qid));
	assert_false(exists(fx, "corrupt", c.qid));
	assert_false(exists(fx, "corrupt", b.qid));
	/* b's free/ name (the same inode) set aside, untouched; the others
	 * removed but one */
	char aside[64];
	snprintf(aside, sizeof(aside), "%s.free", b.qid);
	assert_true(exists(fx, "corrupt", aside));
	assert_int_equal(count(fx, "free"), 1);
	assert_true(exists(fx, "free", "0000000000000002"));
	/* the one kept is reused */
	commit_msg(fx, &d, 'd', 5);
	assert_int_equal(inode(fx, "msg", d.qid), good);
	expect_content(fx, d.qid, 'd', 5);
	expect_content(fx, e.qid, 'e', 10);
	env_free(&e);
	env_free(&g);
	env_free(&a);
	env_free(&b);
	env_free(&c);
	env_free(&d);
}

/* test_reuse_in_place_and_crash - a reused file is written where it is
 * (free/, nothing in tmp/) and only then renamed to msg/QID; a crash while
 * it is written (the queue closed with neither commit nor abort) leaves it
 * in free/, from where the next start takes it back: nothing delivered,
 * nothing lost, the inode reused */
static void test_reuse_in_place_and_crash(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	struct envelope a, b, c;
	commit_msg(fx, &a, 'a', 9000);
	ino_t ino = inode(fx, "msg", a.qid);
	assert_int_equal(queue_msg_finish(fx->q, a.qid, 0), 0);
	/* the "crash": a child process writes it and dies */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		make_env(&b);
		struct queue_file *f = queue_file_create(fx->q, &b, err, sizeof(err));
		char body[3000];
		memset(body, 'b', sizeof(body));
		int ok = f && count(fx, "tmp") == 0 && count(fx, "free") == 1 && inode(fx, "free", a.qid) == ino &&
			 queue_file_write(f, body, sizeof(body)) == 0;
		_exit(ok ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	queue_close(fx->q);
	fx->q = queue_open(fx->qdir, NULL, err, sizeof(err));
	assert_non_null(fx->q);
	found_n = 0;
	assert_int_equal(queue_scan(fx->q, on_found, NULL, err, sizeof(err)), 0);
	assert_int_equal(found_n, 0);
	assert_int_equal(count(fx, "msg"), 0);
	assert_int_equal(count(fx, "free"), 1);
	/* and the next message takes it, cut to its own size */
	commit_msg(fx, &c, 'c', 100);
	assert_int_equal(inode(fx, "msg", c.qid), ino);
	expect_content(fx, c.qid, 'c', 100);
	assert_int_equal(count(fx, "free"), 0);
	env_free(&a);
	env_free(&c);
}

int main(void)
{
	log_init("test_queue_pool", LOG_LEVEL_CRIT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_finish_reuses_the_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_and_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reuse_refuses_linked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_free, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reuse_in_place_and_crash, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
