/*
 * test_queue_store - the queue on disk: commit (synchronous and through the
 * commit thread), torn files, the state log, removal, start-up recovery,
 * hostile queue IDs and a write error (EFBIG standing in for ENOSPC).
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
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "core/log.h"
#include "queue/queue.h"
#include "qfixture.h"

static void make_env(struct envelope *e, int nrcpts)
{
	env_init(e);
	e->sender = strdup("sender@example.org");
	char a[64];
	for (int i = 0; i < nrcpts; i++) {
		snprintf(a, sizeof(a), "\"rcpt %d\"@example.test", i);
		env_rcpt_add(e, a, NULL, ENV_NOTIFY_FAILURE);
	}
}

struct done_rec {
	int calls;
	int status;
	int err;
	char reason[256];
	pthread_t thread;
	struct event_base *base;
	int *outstanding;
};

static void on_done(void *arg, int status, const char *reason)
{
	struct done_rec *d = arg;
	d->calls++;
	d->status = status;
	d->err = errno;
	d->thread = pthread_self();
	snprintf(d->reason, sizeof(d->reason), "%s", reason ? reason : "");
	if (d->outstanding && --*d->outstanding == 0)
		event_base_loopbreak(d->base);
}

/* commit_msg - a message with content, committed synchronously */
static void commit_msg(struct fixture *fx, struct envelope *e, const char *content, size_t n)
{
	char err[256];
	struct queue_file *f = queue_file_create(fx->q, e, err, sizeof(err));
	assert_non_null(f);
	assert_true(queue_id_valid(e->qid));
	assert_true(exists(fx, "tmp", e->qid));
	assert_int_equal(queue_file_write(f, content, n), 0);
	struct done_rec d = {0};
	queue_file_commit(f, on_done, &d);
	/* synchronous mode: done has run before commit returns */
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.status, 0);
	assert_int_equal(e->content_size, n);
}

/* read_file - whole file into a malloc'd buffer */
static char *read_file(const char *p, size_t *n)
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

static void write_file(const char *p, const char *b, size_t n)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b, n), (ssize_t)n);
	close(fd);
}

static void test_sync_commit(void **state)
{
	struct fixture *fx = *state;
	struct envelope e;
	make_env(&e, 3);
	const char content[] = "Subject: hi\r\n\r\nbody\r\n";
	commit_msg(fx, &e, content, sizeof(content) - 1);
	assert_int_equal(count(fx, "tmp"), 0);
	assert_true(exists(fx, "msg", e.qid));

	struct envelope l;
	char err[256];
	assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), 0);
	assert_string_equal(l.qid, e.qid);
	assert_string_equal(l.sender, "sender@example.org");
	assert_int_equal(l.nrcpts, 3);
	assert_string_equal(l.rcpts[2].addr, "\"rcpt 2\"@example.test");
	assert_int_equal(l.content_size, sizeof(content) - 1);
	assert_true(l.arrival > 0);
	env_free(&l);

	int fd;
	off_t off, len;
	assert_int_equal(queue_msg_content(fx->q, e.qid, &fd, &off, &len, err, sizeof(err)), 0);
	assert_int_equal(len, sizeof(content) - 1);
	char buf[64];
	assert_int_equal(pread(fd, buf, (size_t)len, off), len);
	assert_memory_equal(buf, content, (size_t)len);
	close(fd);
	env_free(&e);
}

static void test_empty_and_large_content(void **state)
{
	struct fixture *fx = *state;
	struct envelope e;
	make_env(&e, 1);
	commit_msg(fx, &e, "", 0);
	int fd;
	off_t off, len;
	char err[256];
	assert_int_equal(queue_msg_content(fx->q, e.qid, &fd, &off, &len, err, sizeof(err)), 0);
	assert_int_equal(len, 0);
	close(fd);
	env_free(&e);

	/* bigger than the write buffer, written in odd-sized pieces */
	make_env(&e, 1);
	struct queue_file *f = queue_file_create(fx->q, &e, err, sizeof(err));
	assert_non_null(f);
	size_t total = 0;
	char chunk[7001];
	for (int i = 0; i < 50; i++) {
		memset(chunk, 'a' + i % 26, sizeof(chunk));
		size_t n = i == 10 ? sizeof(chunk) : (size_t)(i * 131 % 7001);
		assert_int_equal(queue_file_write(f, chunk, n), 0);
		total += n;
	}
	char *big = calloc(1, 200000);
	assert_int_equal(queue_file_write(f, big, 200000), 0);
	total += 200000;
	free(big);
	struct done_rec d = {0};
	queue_file_commit(f, on_done, &d);
	assert_int_equal(d.status, 0);
	assert_int_equal(queue_msg_content(fx->q, e.qid, &fd, &off, &len, err, sizeof(err)), 0);
	assert_int_equal((size_t)len, total);
	close(fd);
	env_free(&e);
}

static void test_torn_every_offset(void **state)
{
	struct fixture *fx = *state;
	struct envelope e;
	make_env(&e, 2);
	const char content[] = "From: a@b\r\nSubject: torn\r\n\r\nline 1\r\nline 2\r\n";
	commit_msg(fx, &e, content, sizeof(content) - 1);
	char p[200];
	qpath(fx, p, sizeof(p), "msg", e.qid);
	size_t n;
	char *whole = read_file(p, &n);
	char err[256];
	struct envelope l;
	/* from the end down, so truncate alone makes each prefix; inside the
	 * run of NUL bytes reserved before the content every 61st offset */
	for (size_t k = n; k-- > 0;) {
		int in_gap = k > 0 && k + 1 < n && whole[k - 1] == '\0' && whole[k] == '\0' && whole[k + 1] == '\0';
		if (in_gap && k % 61)
			continue;
		assert_int_equal(truncate(p, (off_t)k), 0);
		errno = 0;
		assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), -1);
		assert_int_equal(errno, EBADMSG);
		int fd;
		off_t off, len;
		assert_int_equal(queue_msg_content(fx->q, e.qid, &fd, &off, &len, err, sizeof(err)), -1);
	}
	/* one byte too many, or a byte of the marker changed, is torn too */
	char *more = malloc(n + 1);
	memcpy(more, whole, n);
	more[n] = '\n';
	write_file(p, more, n + 1);
	assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), -1);
	memcpy(more, whole, n);
	more[n - 3] ^= 1;
	write_file(p, more, n);
	assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), -1);
	/* the intact file is accepted again */
	write_file(p, whole, n);
	assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), 0);
	env_free(&l);
	/* a file renamed to another qid is refused */
	char other[] = "00000000000000AA";
	char p2[200];
	qpath(fx, p2, sizeof(p2), "msg", other);
	write_file(p2, whole, n);
	assert_int_equal(queue_msg_load(fx->q, other, &l, err, sizeof(err)), -1);
	assert_int_equal(errno, EBADMSG);
	free(more);
	free(whole);
	env_free(&e);
}

static void test_async_commit(void **state)
{
	struct fixture *fx = *state;
	struct event_base *base = event_base_new();
	char err[256], qdir[160];
	snprintf(qdir, sizeof(qdir), "%s/queue", fx->dir);
	struct queue *q = queue_open(qdir, base, err, sizeof(err));
	assert_non_null(q);
	enum { N = 25 };
	struct envelope envs[N];
	struct done_rec d[N];
	struct queue_file *f[N];
	int outstanding = N;
	memset(d, 0, sizeof(d));
	for (int i = 0; i < N; i++) {
		make_env(&envs[i], 1 + i % 3);
		f[i] = queue_file_create(q, &envs[i], err, sizeof(err));
		assert_non_null(f[i]);
		assert_int_equal(queue_file_write(f[i], "hello\r\n", 7), 0);
		d[i].base = base;
		d[i].outstanding = &outstanding;
	}
	/* all receiving at once: they are committed together in batches */
	for (int i = 0; i < N; i++) {
		queue_file_commit(f[i], on_done, &d[i]);
		assert_int_equal(d[i].calls, 0); /* never from inside commit */
	}
	event_base_dispatch(base);
	assert_int_equal(outstanding, 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].status, 0);
		assert_true(pthread_equal(d[i].thread, pthread_self()));
		assert_true(exists(fx, "msg", envs[i].qid));
		for (int j = 0; j < i; j++)
			assert_string_not_equal(envs[i].qid, envs[j].qid);
		env_free(&envs[i]);
	}
	assert_int_equal(count(fx, "msg"), N);
	assert_int_equal(count(fx, "tmp"), 0);

	/* a file committed just before close still gets its answer */
	struct envelope e;
	make_env(&e, 1);
	struct queue_file *g = queue_file_create(q, &e, err, sizeof(err));
	assert_non_null(g);
	struct done_rec dg = {0};
	queue_file_commit(g, on_done, &dg);
	queue_close(q);
	assert_int_equal(dg.calls, 1);
	assert_int_equal(dg.status, 0);
	assert_true(exists(fx, "msg", e.qid));
	env_free(&e);
	event_base_free(base);
}

static void test_abort(void **state)
{
	struct fixture *fx = *state;
	struct envelope e;
	make_env(&e, 1);
	char err[256];
	struct queue_file *f = queue_file_create(fx->q, &e, err, sizeof(err));
	assert_non_null(f);
	assert_int_equal(queue_file_write(f, "x", 1), 0);
	assert_int_equal(count(fx, "tmp"), 1);
	queue_file_abort(f);
	assert_int_equal(count(fx, "tmp"), 0);
	assert_int_equal(count(fx, "msg"), 0);
	env_free(&e);

	/* an envelope with CR/LF in a value is refused at create */
	make_env(&e, 1);
	free(e.sender);
	e.sender = strdup("a@b\r\nrcpt 0 - evil@x");
	assert_null(queue_file_create(fx->q, &e, err, sizeof(err)));
	assert_int_equal(count(fx, "tmp"), 0);
	env_free(&e);
}

static void test_state_records(void **state)
{
	struct fixture *fx = *state;
	struct envelope e, l;
	make_env(&e, 3);
	commit_msg(fx, &e, "x\r\n", 3);
	char err[256];
	assert_false(exists(fx, "state", e.qid));
	assert_int_equal(queue_rcpt_record(fx->q, e.qid, 0, ENV_RCPT_PENDING, 1, 1800000000,
					   "451 4.7.1 try\r\nlater\x01", err, sizeof(err)),
			 0);
	assert_true(exists(fx, "state", e.qid));
	assert_int_equal(queue_rcpt_record(fx->q, e.qid, 1, ENV_RCPT_DELIVERED, 1, 0, NULL, err, sizeof(err)), 0);
	char longtext[3000];
	memset(longtext, 'z', sizeof(longtext) - 1);
	longtext[sizeof(longtext) - 1] = '\0';
	assert_int_equal(queue_rcpt_record(fx->q, e.qid, 2, ENV_RCPT_FAILED, 2, 0, longtext, err, sizeof(err)), 0);
	assert_int_equal(queue_msg_hold(fx->q, e.qid, 1, err, sizeof(err)), 0);
	assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), 0);
	assert_int_equal(l.rcpts[0].state, ENV_RCPT_PENDING);
	assert_int_equal(l.rcpts[0].attempts, 1);
	assert_int_equal(l.rcpts[0].next_attempt, 1800000000);
	assert_string_equal(l.rcpts[0].last_error, "451 4.7.1 try  later ");
	assert_int_equal(l.rcpts[1].state, ENV_RCPT_DELIVERED);
	assert_null(l.rcpts[1].last_error);
	assert_int_equal(l.rcpts[2].state, ENV_RCPT_FAILED);
	assert_int_equal(strlen(l.rcpts[2].last_error), QUEUE_VALUE_MAX);
	assert_int_equal(l.held, 1);
	env_free(&l);

	/* a torn record appended by a crash changes nothing */
	char p[200];
	qpath(fx, p, sizeof(p), "state", e.qid);
	int fd = open(p, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "0 delivered 2 0 25", 18), 18);
	close(fd);
	assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), 0);
	assert_int_equal(l.rcpts[0].state, ENV_RCPT_PENDING);
	env_free(&l);

	/* remove: message and state both gone */
	assert_int_equal(queue_msg_remove(fx->q, e.qid), 0);
	assert_false(exists(fx, "msg", e.qid));
	assert_false(exists(fx, "state", e.qid));
	assert_int_equal(queue_msg_load(fx->q, e.qid, &l, err, sizeof(err)), -1);
	assert_int_equal(errno, ENOENT);
	env_free(&e);
}

static void test_bad_ids(void **state)
{
	struct fixture *fx = *state;
	static const char *const bad[] = {"../x", "../../../../tmp/x", "", "0123456789abcdef",
					  "0123456789ABCDE", "0123456789ABCDEF0", "0123456789ABCDE/"};
	char err[256];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct envelope l;
		int fd;
		off_t off, len;
		assert_int_equal(queue_msg_load(fx->q, bad[i], &l, err, sizeof(err)), -1);
		assert_int_equal(queue_msg_content(fx->q, bad[i], &fd, &off, &len, err, sizeof(err)), -1);
		assert_int_equal(queue_rcpt_record(fx->q, bad[i], 0, ENV_RCPT_DELIVERED, 1, 0, "x", err, sizeof(err)),
				 -1);
		assert_int_equal(queue_msg_hold(fx->q, bad[i], 1, err, sizeof(err)), -1);
		assert_int_equal(queue_msg_remove(fx->q, bad[i]), -1);
	}
	assert_int_equal(count(fx, "state"), 0);
	char p[200];
	snprintf(p, sizeof(p), "%s/queue/x", fx->dir);
	assert_int_equal(access(p, F_OK), -1);
}

struct rec_job {
	struct queue *q;
	char qid[QUEUE_ID_MAX];
	int failures;
};

/* rec_thread - 40 records for one message, as a delivery worker would */
static void *rec_thread(void *arg)
{
	struct rec_job *j = arg;
	char err[256];
	for (unsigned i = 1; i <= 40; i++)
		if (queue_rcpt_record(j->q, j->qid, i % 2, i == 40 ? ENV_RCPT_DELIVERED : ENV_RCPT_PENDING, i, 1000 + i,
				      "451 busy", err, sizeof(err)) < 0)
			j->failures++;
	return NULL;
}

static void test_concurrent_records(void **state)
{
	struct fixture *fx = *state;
	enum { T = 8 };
	struct envelope e[T];
	struct rec_job jobs[T];
	pthread_t th[T];
	for (int i = 0; i < T; i++) {
		make_env(&e[i], 2);
		commit_msg(fx, &e[i], "x", 1);
		jobs[i].q = fx->q;
		memcpy(jobs[i].qid, e[i].qid, QUEUE_ID_MAX);
		jobs[i].failures = 0;
	}
	for (int i = 0; i < T; i++)
		assert_int_equal(pthread_create(&th[i], NULL, rec_thread, &jobs[i]), 0);
	for (int i = 0; i < T; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < T; i++) {
		assert_int_equal(jobs[i].failures, 0);
		struct envelope l;
		char err[256];
		assert_int_equal(queue_msg_load(fx->q, e[i].qid, &l, err, sizeof(err)), 0);
		assert_int_equal(l.rcpts[0].state, ENV_RCPT_DELIVERED);
		assert_int_equal(l.rcpts[0].attempts, 40);
		assert_int_equal(l.rcpts[1].state, ENV_RCPT_PENDING);
		assert_int_equal(l.rcpts[1].attempts, 39);
		assert_int_equal(l.rcpts[1].next_attempt, 1039);
		env_free(&l);
		env_free(&e[i]);
	}
}

struct found_rec {
	char qids[16][QUEUE_ID_MAX];
	int n;
};

static void on_found(void *arg, struct envelope *env)
{
	struct found_rec *r = arg;
	assert_true(r->n < 16);
	memcpy(r->qids[r->n++], env->qid, QUEUE_ID_MAX);
}

static void test_scan(void **state)
{
	struct fixture *fx = *state;
	char err[256], p[200];
	struct envelope good[3], corrupt, done, tmpmsg;
	for (int i = 0; i < 3; i++) {
		make_env(&good[i], 2);
		commit_msg(fx, &good[i], "hello\r\n", 7);
	}
	/* a message with one recipient done and one pending stays */
	assert_int_equal(queue_rcpt_record(fx->q, good[1].qid, 0, ENV_RCPT_DELIVERED, 1, 0, "ok", err, sizeof(err)), 0);
	/* a finished message is handed over too: it may still owe a bounce */
	make_env(&done, 2);
	commit_msg(fx, &done, "bye\r\n", 5);
	assert_int_equal(queue_rcpt_record(fx->q, done.qid, 0, ENV_RCPT_DELIVERED, 1, 0, "ok", err, sizeof(err)), 0);
	assert_int_equal(queue_rcpt_record(fx->q, done.qid, 1, ENV_RCPT_FAILED, 3, 0, "550", err, sizeof(err)), 0);
	assert_int_equal(queue_rcpt_dsn(fx->q, done.qid, 1, ENV_DSN_FINAL, err, sizeof(err)), 0);
	/* a torn message is set aside with its state */
	make_env(&corrupt, 1);
	commit_msg(fx, &corrupt, "torn content\r\n", 14);
	assert_int_equal(queue_msg_hold(fx->q, corrupt.qid, 1, err, sizeof(err)), 0);
	qpath(fx, p, sizeof(p), "msg", corrupt.qid);
	assert_int_equal(truncate(p, 100), 0);
	/* a message never committed */
	make_env(&tmpmsg, 1);
	struct queue_file *f = queue_file_create(fx->q, &tmpmsg, err, sizeof(err));
	assert_non_null(f);
	assert_int_equal(queue_file_write(f, "partial", 7), 0);
	/* orphan state, a stray file in msg/ and one in state/ */
	qpath(fx, p, sizeof(p), "state", "00000000000000AB");
	write_file(p, "0 delivered 1 0 x\n", 18);
	qpath(fx, p, sizeof(p), "msg", "..stray");
	write_file(p, "junk", 4);
	qpath(fx, p, sizeof(p), "state", "junk.txt");
	write_file(p, "junk", 4);

	struct found_rec r = {0};
	assert_int_equal(queue_scan(fx->q, on_found, &r, err, sizeof(err)), 0);
	assert_int_equal(r.n, 4);
	for (int i = 0; i < 3; i++)
		assert_string_equal(r.qids[i], good[i].qid);
	assert_string_equal(r.qids[3], done.qid);
	assert_true(strcmp(good[0].qid, good[1].qid) < 0 && strcmp(good[1].qid, good[2].qid) < 0);
	assert_int_equal(count(fx, "tmp"), 0);
	assert_int_equal(count(fx, "msg"), 4);
	/* the dsn record comes back with the envelope */
	struct envelope back;
	assert_int_equal(queue_msg_load(fx->q, done.qid, &back, err, sizeof(err)), 0);
	assert_int_equal(back.rcpts[1].dsn_sent, ENV_DSN_FINAL);
	assert_int_equal(back.rcpts[0].dsn_sent, 0);
	env_free(&back);
	assert_int_equal(queue_msg_remove(fx->q, done.qid), 0);
	assert_true(exists(fx, "corrupt", corrupt.qid));
	char sname[64];
	snprintf(sname, sizeof(sname), "%s.state", corrupt.qid);
	assert_true(exists(fx, "corrupt", sname));
	assert_true(exists(fx, "corrupt", "..stray"));
	assert_int_equal(count(fx, "state"), 1); /* good[1]'s */
	assert_true(exists(fx, "state", good[1].qid));
	queue_file_abort(f); /* its file is already gone: harmless */

	/* a second scan finds the same and changes nothing */
	memset(&r, 0, sizeof(r));
	assert_int_equal(queue_scan(fx->q, on_found, &r, err, sizeof(err)), 0);
	assert_int_equal(r.n, 3);
	assert_int_equal(count(fx, "corrupt"), 3);
	for (int i = 0; i < 3; i++)
		env_free(&good[i]);
	env_free(&done);
	env_free(&corrupt);
	env_free(&tmpmsg);
}

static void test_write_error(void **state)
{
	struct fixture *fx = *state;
	/* RLIMIT_FSIZE makes write fail with EFBIG: the same path as ENOSPC */
	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 100000;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	struct envelope e;
	make_env(&e, 1);
	char err[256];
	struct queue_file *f = queue_file_create(fx->q, &e, err, sizeof(err));
	assert_non_null(f);
	char chunk[4096];
	memset(chunk, 'x', sizeof(chunk));
	int failed = 0;
	for (int i = 0; i < 100 && !failed; i++)
		failed = queue_file_write(f, chunk, sizeof(chunk)) < 0;
	assert_true(failed);
	assert_int_equal(errno, EFBIG);
	assert_int_equal(queue_file_errno(f), EFBIG);
	assert_int_equal(queue_file_write(f, "y", 1), -1); /* stays failed */
	struct done_rec d = {0};
	queue_file_commit(f, on_done, &d);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, oldsig);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.status, -1);
	assert_int_equal(d.err, EFBIG);
	assert_non_null(strstr(d.reason, e.qid));
	assert_int_equal(count(fx, "tmp"), 0);
	assert_int_equal(count(fx, "msg"), 0);
	env_free(&e);
}

int main(void)
{
	log_init("test_queue_store", LOG_LEVEL_CRIT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sync_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_and_large_content, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_every_offset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_ids, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
