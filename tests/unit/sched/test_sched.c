/*
 * test_sched - the scheduler against a real queue and real Maildir
 * delivery in a temporary directory: delivery, deferral and backoff,
 * failure then recovery after a fix, hold/release/delete, crash recovery
 * delivering exactly once, listing and showing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "core/log.h"
#include "event/control.h"
#include "queue/queue.h"
#include "sched/sched.h"

struct fx {
	char dir[64];
	char qdir[128];
	char mdir[128];
	struct conf conf;
	struct event_base *base;
	struct event *tick;
	struct queue *q;
	struct sched *s;
};

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

static void rm_rf(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		if (d) {
			struct dirent *de;
			while ((de = readdir(d)) != NULL) {
				if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
					continue;
				char sub[1024];
				snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
				rm_rf(sub);
			}
			closedir(d);
		}
		rmdir(path);
	} else {
		unlink(path);
	}
}

/* fx_setup_x - temp dirs, conf from /dev/null plus overrides (and the
 * NULL-terminated extra ones), queue, sched */
static struct fx *fx_setup_x(const char *retry_min, const char *lifetime, const char *const *extra)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/tern-sched-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->qdir, sizeof(f->qdir), "%s/queue", f->dir);
	snprintf(f->mdir, sizeof(f->mdir), "%s/mail", f->dir);
	char o_q[256], o_m[256], o_r[64], o_l[64], o_c[256];
	snprintf(o_q, sizeof(o_q), "queue_dir=%s", f->qdir);
	snprintf(o_m, sizeof(o_m), "mail_dir=%s", f->mdir);
	snprintf(o_r, sizeof(o_r), "retry_min=%s", retry_min);
	snprintf(o_l, sizeof(o_l), "queue_lifetime=%s", lifetime);
	snprintf(o_c, sizeof(o_c), "control_socket=%s/run/ctl.sock", f->dir);
	char *ov[16] = {"hostname=mx.example.test", "local_domains=example.test, other.test", o_q, o_m,
			o_r, "retry_max=1h", o_l, "delivery_workers=2", o_c};
	size_t nov = 9;
	for (size_t i = 0; extra && extra[i] && nov < 16; i++)
		ov[nov++] = (char *)extra[i];
	struct strbuf errs;
	strbuf_init(&errs);
	int r = conf_load(&f->conf, "/dev/null", ov, nov, &errs);
	if (r < 0)
		fprintf(stderr, "%s", errs.s);
	assert_int_equal(r, 0);
	strbuf_free(&errs);
	f->base = event_base_new();
	assert_non_null(f->base);
	/* a periodic tick so EVLOOP_ONCE never blocks for long */
	f->tick = event_new(f->base, -1, EV_PERSIST, tick_cb, NULL);
	struct timeval tv = {0, 20000};
	event_add(f->tick, &tv);
	char err[256] = "";
	f->q = queue_open(f->qdir, f->base, err, sizeof(err));
	if (f->q == NULL)
		fprintf(stderr, "queue_open: %s\n", err);
	assert_non_null(f->q);
	f->s = sched_new(f->base, &f->conf, f->q);
	assert_non_null(f->s);
	return f;
}

static struct fx *fx_setup_with(const char *retry_min, const char *lifetime)
{
	return fx_setup_x(retry_min, lifetime, NULL);
}

static struct fx *fx_setup(void)
{
	return fx_setup_with("60s", "5d");
}

static void fx_teardown(struct fx *f)
{
	if (f->s)
		sched_free(f->s);
	queue_close(f->q);
	event_free(f->tick);
	event_base_free(f->base);
	conf_free(&f->conf);
	rm_rf(f->dir);
	free(f);
}

/* fx_restart - simulate a crash: drop scheduler and queue, open again */
static void fx_restart(struct fx *f)
{
	sched_free(f->s);
	queue_close(f->q);
	char err[256] = "";
	f->q = queue_open(f->qdir, f->base, err, sizeof(err));
	assert_non_null(f->q);
	f->s = sched_new(f->base, &f->conf, f->q);
	assert_non_null(f->s);
}

/* run_for - run the loop for ms milliseconds */
static void run_for(struct fx *f, int ms)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		event_base_loop(f->base, EVLOOP_ONCE);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= ms)
			return;
	}
}

typedef int (*pred_fn)(struct fx *f, const void *arg);

/* run_until - run the loop until pred holds; fail after 10 s */
static void run_until(struct fx *f, pred_fn pred, const void *arg)
{
	time_t end = time(NULL) + 10;
	while (!pred(f, arg)) {
		assert_true(time(NULL) < end);
		event_base_loop(f->base, EVLOOP_ONCE);
	}
}

static int pred_empty(struct fx *f, const void *arg)
{
	return sched_pending(f->s) == 0;
}

struct commit_wait {
	int done;
	int status;
};

static void commit_done(void *arg, int status, const char *reason)
{
	struct commit_wait *w = arg;
	w->done = 1;
	w->status = status;
}

static int pred_committed(struct fx *f, const void *arg)
{
	return ((const struct commit_wait *)arg)->done;
}

/* make_msg - commit a message with the given recipients (NULL-terminated);
 * fills env (caller frees) */
static void make_msg(struct fx *f, struct envelope *env, const char *sender, const char *const *rcpts)
{
	env_init(env);
	env->sender = strdup(sender);
	env->arrival = time(NULL);
	for (size_t i = 0; rcpts[i]; i++)
		env_rcpt_add(env, rcpts[i], NULL, 0);
	char err[256] = "";
	struct queue_file *qf = queue_file_create(f->q, env, err, sizeof(err));
	if (qf == NULL)
		fprintf(stderr, "queue_file_create: %s\n", err);
	assert_non_null(qf);
	static const char body[] = "From: Sender <s@example.net>\r\n"
				   "\tfolded\r\n"
				   "Subject: hello\r\n"
				   "X-Evil: a\x1b[31mred\r\n"
				   "\r\n"
				   "body line\r\n";
	assert_int_equal(queue_file_write(qf, body, sizeof(body) - 1), 0);
	struct commit_wait w = {0, -2};
	queue_file_commit(qf, commit_done, &w);
	run_until(f, pred_committed, &w);
	assert_int_equal(w.status, 0);
	assert_int_equal(strlen(env->qid), 16);
	assert_true(queue_id_valid(env->qid));
}

/* make_msg_ex - like make_msg, one recipient, with DSN parameters */
static void make_msg_ex(struct fx *f, struct envelope *env, const char *sender, const char *rcpt, const char *orcpt,
			unsigned notify, enum env_ret ret, const char *envid)
{
	env_init(env);
	env->sender = strdup(sender);
	env->arrival = time(NULL);
	env->ret = ret;
	env->envid = envid ? strdup(envid) : NULL;
	env_rcpt_add(env, rcpt, orcpt, notify);
	char err[256] = "";
	struct queue_file *qf = queue_file_create(f->q, env, err, sizeof(err));
	assert_non_null(qf);
	static const char body[] = "From: Sender <s@example.test>\r\n"
				   "Subject: original subject\r\n"
				   "\r\n"
				   "original body\r\n";
	assert_int_equal(queue_file_write(qf, body, sizeof(body) - 1), 0);
	struct commit_wait w = {0, -2};
	queue_file_commit(qf, commit_done, &w);
	run_until(f, pred_committed, &w);
	assert_int_equal(w.status, 0);
}

/* maildir_count - messages in <mail_dir>/<domain>/<local>/new */
static int maildir_count(struct fx *f, const char *domain, const char *local)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s/%s/new", f->mdir, domain, local);
	DIR *d = opendir(p);
	if (d == NULL)
		return 0;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* in_queue - whether the queue still holds the message */
static int in_queue(struct fx *f, const char *qid, struct envelope *out)
{
	struct envelope e;
	char err[256];
	env_init(&e);
	int r = queue_msg_load(f->q, qid, &e, err, sizeof(err));
	if (r == 0 && out)
		*out = e;
	else
		env_free(&e);
	return r == 0;
}

struct attempts_arg {
	const char *qid;
	unsigned attempts;
};

static int pred_attempts(struct fx *f, const void *arg)
{
	const struct attempts_arg *a = arg;
	struct envelope e;
	if (!in_queue(f, a->qid, &e))
		return 0;
	int ok = e.nrcpts > 0 && e.rcpts[0].attempts >= a->attempts;
	env_free(&e);
	return ok;
}

static void test_local_two_rcpts(void **state)
{
	struct fx *f = fx_setup();
	struct envelope env;
	const char *r[] = {"alice@example.test", "bob@other.test", NULL};
	make_msg(f, &env, "s@example.net", r);
	sched_submit(f->s, &env);
	/* submitting the same qid twice is ignored, not delivered twice */
	sched_submit(f->s, &env);
	assert_int_equal(sched_pending(f->s), 1);
	run_until(f, pred_empty, NULL);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 1);
	assert_int_equal(maildir_count(f, "other.test", "bob"), 1);
	assert_false(in_queue(f, env.qid, NULL));
	run_for(f, 100);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 1);
	env_free(&env);
	fx_teardown(f);
}

static void test_remote_deferred_backoff(void **state)
{
	struct fx *f = fx_setup();
	struct envelope env;
	const char *r[] = {"carol@remote.test", NULL};
	make_msg(f, &env, "", r);
	sched_submit(f->s, &env);
	struct attempts_arg a = {env.qid, 1};
	run_until(f, pred_attempts, &a);
	struct envelope e1;
	assert_true(in_queue(f, env.qid, &e1));
	assert_int_equal(e1.rcpts[0].state, ENV_RCPT_PENDING);
	assert_int_equal(e1.rcpts[0].attempts, 1);
	assert_non_null(e1.rcpts[0].last_error);
	assert_non_null(strstr(e1.rcpts[0].last_error, "remote delivery not available yet"));
	time_t now = time(NULL);
	assert_true(e1.rcpts[0].next_attempt >= now + 55 && e1.rcpts[0].next_attempt <= now + 61);
	run_for(f, 100);
	assert_int_equal(sched_pending(f->s), 1);

	sched_flush(f->s, env.qid);
	a.attempts = 2;
	run_until(f, pred_attempts, &a);
	struct envelope e2;
	assert_true(in_queue(f, env.qid, &e2));
	assert_int_equal(e2.rcpts[0].attempts, 2);
	/* the delay doubled: 60 s then 120 s */
	assert_true(e2.rcpts[0].next_attempt >= e1.rcpts[0].next_attempt + 55);
	assert_true(e2.rcpts[0].next_attempt <= time(NULL) + 121);
	run_for(f, 100);
	assert_int_equal(sched_pending(f->s), 1);

	/* the listing shows the message, the recipient and the deferral */
	struct strbuf out;
	strbuf_init(&out);
	sched_list(f->s, &out);
	if (getenv("TEST_LOG"))
		fprintf(stderr, "%s", out.s);
	assert_non_null(strstr(out.s, env.qid));
	assert_non_null(strstr(out.s, "  carol@remote.test  pending  attempts=2 next="));
	assert_null(strstr(out.s, "next=now"));
	assert_non_null(strstr(out.s, "last=\"remote delivery not available yet\""));
	assert_non_null(strstr(out.s, "<>"));
	strbuf_reset(&out);
	sched_stats(f->s, &out);
	assert_non_null(strstr(out.s, "queued=1 "));
	assert_non_null(strstr(out.s, "deferred=2 "));
	strbuf_free(&out);
	env_free(&e1);
	env_free(&e2);
	env_free(&env);
	fx_teardown(f);
}

static unsigned rcpt0_attempts(struct fx *f, const char *qid)
{
	struct envelope e;
	assert_true(in_queue(f, qid, &e));
	unsigned n = e.rcpts[0].attempts;
	env_free(&e);
	return n;
}

static void test_flush_busy_or_held(void **state)
{
	struct fx *f = fx_setup();
	char err[256];
	struct envelope env;
	const char *r[] = {"carol@remote.test", NULL};
	make_msg(f, &env, "s@example.net", r);
	sched_submit(f->s, &env);
	event_base_loop(f->base, EVLOOP_NONBLOCK); /* a worker has it now */
	sched_flush(f->s, env.qid);                /* the running attempt is the retry */
	sched_flush(f->s, NULL);
	struct attempts_arg a = {env.qid, 1};
	run_until(f, pred_attempts, &a);
	run_for(f, 300);
	assert_int_equal(rcpt0_attempts(f, env.qid), 1);
	/* a flush while held is not kept for after the release */
	assert_int_equal(sched_hold(f->s, env.qid, 1, err, sizeof(err)), 0);
	sched_flush(f->s, NULL);
	run_for(f, 100);
	assert_int_equal(sched_hold(f->s, env.qid, 0, err, sizeof(err)), 0);
	run_for(f, 300);
	assert_int_equal(rcpt0_attempts(f, env.qid), 1);
	/* after the release a flush works again */
	sched_flush(f->s, NULL);
	a.attempts = 2;
	run_until(f, pred_attempts, &a);
	env_free(&env);
	fx_teardown(f);
}

static void test_remote_expires(void **state)
{
	struct fx *f = fx_setup_with("60s", "0s");
	struct envelope env;
	const char *r[] = {"carol@remote.test", "dave@example.test", NULL};
	make_msg(f, &env, "s@example.net", r);
	sched_submit(f->s, &env);
	run_until(f, pred_empty, NULL);
	/* the local one is delivered, the remote one expired: message gone */
	assert_int_equal(maildir_count(f, "example.test", "dave"), 1);
	assert_false(in_queue(f, env.qid, NULL));
	env_free(&env);
	fx_teardown(f);
}

static void test_local_failure_then_fixed(void **state)
{
	struct fx *f = fx_setup();
	/* mail_dir is a regular file: every delivery fails temporarily */
	int fd = open(f->mdir, O_CREAT | O_WRONLY | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	struct envelope env;
	const char *r[] = {"alice@example.test", NULL};
	make_msg(f, &env, "s@example.net", r);
	sched_submit(f->s, &env);
	struct attempts_arg a = {env.qid, 1};
	run_until(f, pred_attempts, &a);
	struct envelope e1;
	assert_true(in_queue(f, env.qid, &e1));
	assert_int_equal(e1.rcpts[0].state, ENV_RCPT_PENDING);
	assert_non_null(e1.rcpts[0].last_error);
	assert_true(e1.rcpts[0].next_attempt > time(NULL) + 30);
	run_for(f, 100);
	assert_int_equal(sched_pending(f->s), 1);

	/* the operator fixes the cause and flushes */
	assert_int_equal(unlink(f->mdir), 0);
	sched_flush(f->s, NULL);
	run_until(f, pred_empty, NULL);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 1);
	assert_false(in_queue(f, env.qid, NULL));
	env_free(&e1);
	env_free(&env);
	fx_teardown(f);
}

static void test_hold_release_delete(void **state)
{
	struct fx *f = fx_setup();
	char err[256];
	struct envelope env;
	const char *r[] = {"alice@example.test", NULL};
	make_msg(f, &env, "s@example.net", r);
	sched_submit(f->s, &env);
	/* held before the loop dispatches it: nothing is delivered */
	assert_int_equal(sched_hold(f->s, env.qid, 1, err, sizeof(err)), 0);
	sched_flush(f->s, NULL);
	run_for(f, 300);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 0);
	assert_int_equal(sched_pending(f->s), 1);
	struct envelope he;
	assert_true(in_queue(f, env.qid, &he));
	assert_int_equal(he.held, 1);
	env_free(&he);
	struct strbuf out;
	strbuf_init(&out);
	sched_list(f->s, &out);
	assert_non_null(strstr(out.s, "(held)"));
	assert_non_null(strstr(out.s, "next=held"));
	strbuf_free(&out);

	/* a held message survives a restart held */
	fx_restart(f);
	assert_int_equal(sched_recover(f->s, err, sizeof(err)), 0);
	assert_int_equal(sched_pending(f->s), 1);
	run_for(f, 200);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 0);

	assert_int_equal(sched_hold(f->s, env.qid, 0, err, sizeof(err)), 0);
	run_until(f, pred_empty, NULL);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 1);

	/* delete an idle (deferred) message */
	struct envelope env2;
	const char *r2[] = {"carol@remote.test", NULL};
	make_msg(f, &env2, "s@example.net", r2);
	sched_submit(f->s, &env2);
	struct attempts_arg a = {env2.qid, 1};
	run_until(f, pred_attempts, &a);
	run_for(f, 100);
	assert_int_equal(sched_delete(f->s, env2.qid, err, sizeof(err)), 0);
	assert_int_equal(sched_pending(f->s), 0);
	assert_false(in_queue(f, env2.qid, NULL));
	/* unknown and repeated operations fail cleanly */
	assert_int_equal(sched_delete(f->s, env2.qid, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no such message"));
	assert_int_equal(sched_hold(f->s, "0123456789ABCDEF", 1, err, sizeof(err)), -1);
	assert_int_equal(sched_has(f->s, env2.qid), 0);

	/* delete while a worker holds it: it goes when the worker returns */
	struct envelope env3;
	const char *r3[] = {"erin@example.test", NULL};
	make_msg(f, &env3, "s@example.net", r3);
	sched_submit(f->s, &env3);
	event_base_loop(f->base, EVLOOP_NONBLOCK); /* dispatch to a worker */
	assert_int_equal(sched_delete(f->s, env3.qid, err, sizeof(err)), 0);
	assert_int_equal(sched_pending(f->s), 0);
	assert_int_equal(sched_delete(f->s, env3.qid, err, sizeof(err)), -1);
	run_for(f, 300);
	assert_false(in_queue(f, env3.qid, NULL));
	strbuf_init(&out);
	sched_list(f->s, &out);
	assert_int_equal(out.len, 0);
	strbuf_free(&out);

	env_free(&env);
	env_free(&env2);
	env_free(&env3);
	fx_teardown(f);
}

static void test_recover_exactly_once(void **state)
{
	struct fx *f = fx_setup();
	char err[256] = "";
	/* three messages left by a "crashed" ternd: untouched, half done,
	 * and fully done but not yet removed */
	struct envelope e1, e2, e3;
	const char *r1[] = {"alice@example.test", NULL};
	const char *r2[] = {"alice@example.test", "bob@example.test", NULL};
	const char *r3[] = {"bob@example.test", NULL};
	make_msg(f, &e1, "s@example.net", r1);
	make_msg(f, &e2, "s@example.net", r2);
	make_msg(f, &e3, "s@example.net", r3);
	assert_int_equal(queue_rcpt_record(f->q, e2.qid, 0, ENV_RCPT_DELIVERED, 1, 0, "delivered", err,
					   sizeof(err)), 0);
	assert_int_equal(queue_rcpt_record(f->q, e3.qid, 0, ENV_RCPT_DELIVERED, 1, 0, "delivered", err,
					   sizeof(err)), 0);
	fx_restart(f);
	assert_int_equal(sched_recover(f->s, err, sizeof(err)), 0);
	/* the scan may drop the finished e3 itself, or hand it to us */
	assert_true(sched_pending(f->s) == 2 || sched_pending(f->s) == 3);
	run_until(f, pred_empty, NULL);
	/* e1 to alice; e2 to bob only (alice was recorded); e3 nothing */
	assert_int_equal(maildir_count(f, "example.test", "alice"), 1);
	assert_int_equal(maildir_count(f, "example.test", "bob"), 1);
	assert_false(in_queue(f, e1.qid, NULL));
	assert_false(in_queue(f, e2.qid, NULL));
	assert_false(in_queue(f, e3.qid, NULL));

	/* a second start finds nothing to deliver again */
	fx_restart(f);
	assert_int_equal(sched_recover(f->s, err, sizeof(err)), 0);
	assert_int_equal(sched_pending(f->s), 0);
	run_for(f, 200);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 1);
	assert_int_equal(maildir_count(f, "example.test", "bob"), 1);
	env_free(&e1);
	env_free(&e2);
	env_free(&e3);
	fx_teardown(f);
}

/* set_immutable - chattr +i / -i on queue/msg/QID; 0, or -1 where the
 * file system (or the user) cannot */
static int set_immutable(struct fx *f, const char *qid, int on)
{
	char p[300];
	snprintf(p, sizeof(p), "%s/msg/%s", f->qdir, qid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int flags = 0, r = ioctl(fd, FS_IOC_GETFLAGS, &flags);
	if (r == 0) {
		flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
		r = ioctl(fd, FS_IOC_SETFLAGS, &flags);
	}
	close(fd);
	return r;
}

/* test_fast_path_removal_fails - every recipient delivered, but the
 * message cannot be removed: its outcomes go on record, and a restart
 * does not deliver it again */
static void test_fast_path_removal_fails(void **state)
{
	(void)state;
	struct fx *f = fx_setup();
	char err[256] = "";
	struct envelope env;
	const char *r[] = {"alice@example.test", NULL};
	make_msg(f, &env, "s@example.net", r);
	if (set_immutable(f, env.qid, 1) < 0) {
		env_free(&env);
		fx_teardown(f);
		skip(); /* no immutable flag here (not root, or tmpfs) */
	}
	sched_submit(f->s, &env);
	run_until(f, pred_empty, NULL);
	run_for(f, 100);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 1);
	struct envelope got;
	assert_true(in_queue(f, env.qid, &got));
	assert_int_equal(got.rcpts[0].state, ENV_RCPT_DELIVERED);
	env_free(&got);
	assert_int_equal(set_immutable(f, env.qid, 0), 0);
	fx_restart(f);
	assert_int_equal(sched_recover(f->s, err, sizeof(err)), 0);
	run_for(f, 300);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 1);
	assert_false(in_queue(f, env.qid, NULL));
	env_free(&env);
	fx_teardown(f);
}

static void test_show(void **state)
{
	struct fx *f = fx_setup();
	char err[256] = "";
	struct envelope env;
	const char *r[] = {"carol@remote.test", "dan@remote.test", NULL};
	make_msg(f, &env, "s@example.net", r);
	sched_submit(f->s, &env);
	struct strbuf out;
	strbuf_init(&out);
	assert_int_equal(sched_show(f->s, env.qid, &out, err, sizeof(err)), 0);
	assert_non_null(strstr(out.s, env.qid));
	assert_non_null(strstr(out.s, "sender: <s@example.net>"));
	assert_non_null(strstr(out.s, "  carol@remote.test  pending"));
	assert_non_null(strstr(out.s, "  dan@remote.test  pending"));
	assert_non_null(strstr(out.s, "\nFrom: Sender <s@example.net>\n\tfolded\nSubject: hello\n"));
	/* the escape byte of a hostile header never reaches the terminal */
	assert_null(strchr(out.s, '\x1b'));
	assert_non_null(strstr(out.s, "X-Evil: a\\x1b[31mred\n"));
	assert_null(strstr(out.s, "body line"));
	strbuf_reset(&out);
	assert_int_equal(sched_show(f->s, "0123456789ABCDEF", &out, err, sizeof(err)), -1);
	strbuf_free(&out);
	run_for(f, 100);
	env_free(&env);
	fx_teardown(f);
}

/* remote hook: records the calls and answers as told */
struct fake_remote {
	int calls;
	size_t nidx;
	char qid[QUEUE_ID_MAX];
	enum sched_result answer;
	int sync;
	const char *text; /* NULL: "250 2.0.0 ok" */
};

static void fake_remote_fn(void *arg, struct sched *s, const struct envelope *env, const size_t *idx, size_t n)
{
	struct fake_remote *fr = arg;
	fr->calls++;
	fr->nidx = n;
	memcpy(fr->qid, env->qid, sizeof(fr->qid));
	if (fr->sync)
		for (size_t i = 0; i < n; i++)
			sched_remote_done(s, env->qid, idx[i], fr->answer, fr->text ? fr->text : "250 2.0.0 ok");
}

static void test_remote_hook(void **state)
{
	struct fx *f = fx_setup();
	struct fake_remote fr = {0};
	fr.answer = SCHED_RESULT_OK;
	fr.sync = 1;
	sched_set_remote(f->s, fake_remote_fn, &fr);
	struct envelope env;
	const char *r[] = {"carol@remote.test", "alice@example.test", "dan@remote.test", NULL};
	make_msg(f, &env, "s@example.net", r);
	sched_submit(f->s, &env);
	run_until(f, pred_empty, NULL);
	assert_int_equal(fr.calls, 1);
	assert_int_equal(fr.nidx, 2);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 1);
	assert_false(in_queue(f, env.qid, NULL));
	env_free(&env);

	/* asynchronous: a permanent failure reported later is final */
	fr.sync = 0;
	fr.calls = 0;
	const char *r2[] = {"carol@remote.test", "dan@remote.test", NULL};
	/* a local sender: carol's bounce is delivered here, not through the hook */
	make_msg(f, &env, "s@example.test", r2);
	sched_submit(f->s, &env);
	run_for(f, 100);
	assert_int_equal(fr.calls, 1);
	assert_int_equal(fr.nidx, 2);
	assert_int_equal(sched_pending(f->s), 1);
	/* hostile reports are ignored: unknown qid, index out of range */
	sched_remote_done(f->s, "0123456789ABCDEF", 0, SCHED_RESULT_OK, NULL);
	sched_remote_done(f->s, env.qid, 7, SCHED_RESULT_OK, NULL);
	sched_remote_done(f->s, env.qid, 0, SCHED_RESULT_PERMFAIL, "550 5.1.1 no such user");
	sched_remote_done(f->s, env.qid, 0, SCHED_RESULT_OK, NULL); /* twice: ignored */
	run_for(f, 200);
	/* dan is still out: the message stays, carol's failure is recorded */
	assert_int_equal(sched_pending(f->s), 1);
	struct envelope e;
	assert_true(in_queue(f, env.qid, &e));
	assert_int_equal(e.rcpts[0].state, ENV_RCPT_FAILED);
	assert_int_equal(e.rcpts[1].state, ENV_RCPT_PENDING);
	env_free(&e);
	sched_remote_done(f->s, env.qid, 1, SCHED_RESULT_TEMPFAIL, "451 4.3.0 try later");
	run_for(f, 200);
	assert_true(in_queue(f, env.qid, &e));
	assert_int_equal(e.rcpts[1].state, ENV_RCPT_PENDING);
	assert_int_equal(e.rcpts[1].attempts, 1);
	assert_string_equal(e.rcpts[1].last_error, "451 4.3.0 try later");
	env_free(&e);
	/* retried through the hook; this time it succeeds */
	fr.sync = 1;
	fr.answer = SCHED_RESULT_OK;
	sched_flush(f->s, env.qid);
	run_until(f, pred_empty, NULL);
	assert_int_equal(fr.calls, 2);
	assert_int_equal(fr.nidx, 1);
	assert_false(in_queue(f, env.qid, NULL));
	/* one bounce for carol, none for dan */
	assert_int_equal(maildir_count(f, "example.test", "s"), 1);
	env_free(&env);
	fx_teardown(f);
}

/* maildir_read - the content of the only message in <domain>/<local>/new
 * (malloc'd, NUL-terminated), NULL when there is none */
static char *maildir_read(struct fx *f, const char *domain, const char *local)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s/%s/new", f->mdir, domain, local);
	DIR *d = opendir(p);
	if (d == NULL)
		return NULL;
	char *out = NULL;
	struct dirent *de;
	while ((de = readdir(d)) != NULL && out == NULL) {
		if (de->d_name[0] == '.')
			continue;
		char fp[1024];
		snprintf(fp, sizeof(fp), "%s/%s", p, de->d_name);
		FILE *fh = fopen(fp, "rb");
		assert_non_null(fh);
		out = calloc(1, 1 << 20);
		size_t n = fread(out, 1, (1 << 20) - 1, fh);
		out[n] = '\0';
		fclose(fh);
	}
	closedir(d);
	return out;
}

static int pred_s_has_mail(struct fx *f, const void *arg)
{
	return maildir_count(f, "example.test", arg) > 0;
}

static const char *const pm_ok[] = {"postmaster=pm@example.test", NULL};

static void test_bounce_local_permfail(void **state)
{
	struct fx *f = fx_setup_x("60s", "5d", pm_ok);
	struct envelope env;
	/* a name no Maildir can have: a permanent failure, not a retry */
	const char *r[] = {".bad@example.test", "alice@example.test", NULL};
	make_msg(f, &env, "s@example.test", r);
	sched_submit(f->s, &env);
	run_until(f, pred_empty, NULL);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 1);
	assert_int_equal(maildir_count(f, "example.test", "s"), 1);
	assert_int_equal(maildir_count(f, "example.test", "pm"), 0);
	assert_false(in_queue(f, env.qid, NULL));
	char *b = maildir_read(f, "example.test", "s");
	assert_non_null(b);
	if (getenv("TEST_LOG"))
		fprintf(stderr, "%s", b);
	assert_non_null(strstr(b, "Return-Path: <>\n"));
	assert_non_null(strstr(b, "\nFrom: \"Mail Delivery System\" <MAILER-DAEMON@mx.example.test>\n"));
	assert_non_null(strstr(b, "\nTo: <s@example.test>\n"));
	assert_non_null(strstr(b, "\nSubject: Undelivered Mail Returned to Sender\n"));
	assert_non_null(strstr(b, "\nAuto-Submitted: auto-replied\n"));
	assert_non_null(strstr(b, "Content-Type: multipart/report; report-type=delivery-status;"));
	assert_non_null(strstr(b, "\nReporting-MTA: dns; mx.example.test\n"));
	assert_non_null(strstr(b, "\nArrival-Date: "));
	assert_non_null(strstr(b, "\nFinal-Recipient: rfc822; .bad@example.test\nAction: failed\nStatus: 5.1.1\n"
				  "Diagnostic-Code: x-unix; invalid mailbox name\n"));
	assert_null(strstr(b, "Final-Recipient: rfc822; alice@example.test"));
	assert_non_null(strstr(b, "Content-Type: text/rfc822-headers\n\nFrom: Sender <s@example.net>\n"));
	assert_null(strstr(b, "body line"));
	free(b);
	struct strbuf out;
	strbuf_init(&out);
	sched_stats(f->s, &out);
	assert_non_null(strstr(out.s, " bounces=1"));
	strbuf_free(&out);
	env_free(&env);
	fx_teardown(f);
}

static void test_bounce_suppressed(void **state)
{
	struct fx *f = fx_setup_x("60s", "5d", pm_ok);
	struct envelope env;
	/* NOTIFY=NEVER: nothing to anyone */
	make_msg_ex(f, &env, "s@example.test", ".bad@example.test", NULL, ENV_NOTIFY_NEVER, ENV_RET_DEFAULT, NULL);
	sched_submit(f->s, &env);
	run_until(f, pred_empty, NULL);
	assert_false(in_queue(f, env.qid, NULL));
	env_free(&env);
	/* NOTIFY=SUCCESS alone: no failure report either */
	make_msg_ex(f, &env, "s@example.test", ".bad@example.test", NULL, ENV_NOTIFY_SUCCESS, ENV_RET_DEFAULT,
		    NULL);
	sched_submit(f->s, &env);
	run_until(f, pred_empty, NULL);
	env_free(&env);
	run_for(f, 100);
	assert_int_equal(maildir_count(f, "example.test", "s"), 0);
	assert_int_equal(maildir_count(f, "example.test", "pm"), 0);

	/* a bounce that fails (sender <>) is never bounced: the postmaster
	 * gets one notice */
	make_msg_ex(f, &env, "", ".bad@example.test", NULL, 0, ENV_RET_DEFAULT, NULL);
	sched_submit(f->s, &env);
	run_until(f, pred_empty, NULL);
	assert_false(in_queue(f, env.qid, NULL));
	assert_int_equal(maildir_count(f, "example.test", "pm"), 1);
	char *b = maildir_read(f, "example.test", "pm");
	assert_non_null(b);
	assert_non_null(strstr(b, "\nSubject: Postmaster Copy: Undelivered Mail Returned to Sender\n"));
	assert_non_null(strstr(b, "\nTo: <pm@example.test>\n"));
	assert_non_null(strstr(b, "Final-Recipient: rfc822; .bad@example.test"));
	free(b);
	env_free(&env);
	fx_teardown(f);
}

static void test_bounce_no_loop(void **state)
{
	/* the postmaster address itself cannot be delivered: the notice
	 * fails, and that failure is only logged */
	static const char *const pm_bad[] = {"postmaster=.pm@example.test", NULL};
	struct fx *f = fx_setup_x("60s", "5d", pm_bad);
	struct envelope env;
	make_msg_ex(f, &env, "", ".bad@example.test", NULL, 0, ENV_RET_DEFAULT, NULL);
	sched_submit(f->s, &env);
	run_until(f, pred_empty, NULL);
	run_for(f, 300);
	assert_int_equal(sched_pending(f->s), 0);
	struct strbuf out;
	strbuf_init(&out);
	sched_stats(f->s, &out);
	/* exactly one notice was made, for the first failure */
	assert_non_null(strstr(out.s, " bounces=1"));
	assert_non_null(strstr(out.s, "failed=2 "));
	strbuf_free(&out);
	env_free(&env);
	fx_teardown(f);
}

static void test_bounce_success_notify(void **state)
{
	struct fx *f = fx_setup_x("60s", "5d", pm_ok);
	struct envelope env;
	make_msg_ex(f, &env, "s@example.test", "alice@example.test", "rfc822;Alice+2Bx@example.test",
		    ENV_NOTIFY_SUCCESS | ENV_NOTIFY_FAILURE, ENV_RET_FULL, "ENVID42");
	sched_submit(f->s, &env);
	run_until(f, pred_empty, NULL);
	assert_int_equal(maildir_count(f, "example.test", "alice"), 1);
	assert_int_equal(maildir_count(f, "example.test", "s"), 1);
	char *b = maildir_read(f, "example.test", "s");
	assert_non_null(b);
	assert_non_null(strstr(b, "\nSubject: Successful Mail Delivery Report\n"));
	assert_non_null(strstr(b, "\nOriginal-Envelope-Id: ENVID42\n"));
	assert_non_null(strstr(b, "\nOriginal-Recipient: rfc822;Alice+x@example.test\n"
				  "Final-Recipient: rfc822; alice@example.test\nAction: delivered\nStatus: 2.0.0\n"));
	/* RET=FULL is for failures: a success report has the headers only */
	assert_non_null(strstr(b, "Content-Type: text/rfc822-headers\n"));
	assert_null(strstr(b, "original body"));
	free(b);
	assert_false(in_queue(f, env.qid, NULL));
	env_free(&env);
	fx_teardown(f);
}

static void test_bounce_expired(void **state)
{
	struct fx *f = fx_setup_x("60s", "0s", pm_ok);
	struct envelope env;
	make_msg_ex(f, &env, "s@example.test", "carol@remote.test", NULL, 0, ENV_RET_FULL, NULL);
	sched_submit(f->s, &env);
	run_until(f, pred_empty, NULL);
	assert_false(in_queue(f, env.qid, NULL));
	char *b = maildir_read(f, "example.test", "s");
	assert_non_null(b);
	assert_non_null(strstr(b, "Final-Recipient: rfc822; carol@remote.test\nAction: failed\nStatus: 4.4.7\n"));
	assert_non_null(strstr(b, "Diagnostic-Code: x-unix; remote delivery not available yet\n"));
	assert_non_null(strstr(b, "Content-Type: message/rfc822\n"));
	assert_non_null(strstr(b, "\noriginal body\n"));
	free(b);
	env_free(&env);
	fx_teardown(f);
}

static void test_bounce_remote_permfail(void **state)
{
	struct fx *f = fx_setup_x("60s", "5d", pm_ok);
	struct fake_remote fr = {0};
	fr.answer = SCHED_RESULT_PERMFAIL;
	fr.sync = 1;
	fr.text = "5.1.1 host mx.remote.test[192.0.2.1] said: 550 5.1.1 no such user\r\nX-Injected: 1 (in reply to "
		  "RCPT TO command)";
	sched_set_remote(f->s, fake_remote_fn, &fr);
	struct envelope env;
	make_msg_ex(f, &env, "s@example.test", "carol@remote.test", "rfc822;carol@remote.test", 0, ENV_RET_HDRS,
		    NULL);
	sched_submit(f->s, &env);
	run_until(f, pred_empty, NULL);
	assert_int_equal(fr.calls, 1);
	char *b = maildir_read(f, "example.test", "s");
	assert_non_null(b);
	assert_non_null(strstr(b, "\nOriginal-Recipient: rfc822;carol@remote.test\n"
				  "Final-Recipient: rfc822; carol@remote.test\nAction: failed\nStatus: 5.1.1\n"
				  "Remote-MTA: dns; mx.remote.test\n"
				  "Diagnostic-Code: smtp; 550 5.1.1 no such user X-Injected: 1\n"));
	assert_null(strstr(b, "\nX-Injected"));
	free(b);
	env_free(&env);
	fx_teardown(f);
}

static void test_delay_warning(void **state)
{
	static const char *const dw[] = {"postmaster=pm@example.test", "delay_warning=1s", NULL};
	struct fx *f = fx_setup_x("60s", "5d", dw);
	struct envelope env, env2;
	make_msg_ex(f, &env, "s@example.test", "carol@remote.test", NULL, 0, ENV_RET_FULL, NULL);
	sched_submit(f->s, &env);
	/* NOTIFY without DELAY: no warning for this one */
	make_msg_ex(f, &env2, "s@other.test", "dan@remote.test", NULL, ENV_NOTIFY_FAILURE, ENV_RET_FULL, NULL);
	sched_submit(f->s, &env2);
	run_until(f, pred_s_has_mail, "s");
	char *b = maildir_read(f, "example.test", "s");
	assert_non_null(b);
	assert_non_null(strstr(b, "\nSubject: Delayed Mail (still being retried)\n"));
	assert_non_null(strstr(b, "Final-Recipient: rfc822; carol@remote.test\nAction: delayed\nStatus: 4.0.0\n"));
	assert_non_null(strstr(b, "\nWill-Retry-Until: "));
	assert_non_null(strstr(b, "Content-Type: text/rfc822-headers\n"));
	free(b);
	/* once only; the message itself stays queued */
	run_for(f, 1500);
	assert_int_equal(maildir_count(f, "example.test", "s"), 1);
	assert_int_equal(maildir_count(f, "other.test", "s"), 0);
	assert_true(in_queue(f, env.qid, NULL));
	assert_int_equal(sched_pending(f->s), 2);
	env_free(&env);
	env_free(&env2);
	fx_teardown(f);
}

static void test_qid_valid(void **state)
{
	assert_true(queue_id_valid("0123456789ABCDEF"));
	assert_true(queue_id_valid("ZZZZZZZZZZZZZZZZ"));
	assert_false(queue_id_valid(NULL));
	assert_false(queue_id_valid(""));
	assert_false(queue_id_valid("0123456789ABCDE"));
	assert_false(queue_id_valid("0123456789ABCDEFG"));
	assert_false(queue_id_valid("0123456789abcdef"));
	assert_false(queue_id_valid("0123456789ABCDEI"));
	assert_false(queue_id_valid("0123456789ABCDEL"));
	assert_false(queue_id_valid("0123456789ABCDEO"));
	assert_false(queue_id_valid("0123456789ABCDEU"));
	assert_false(queue_id_valid("../../etc/passwd"));
	assert_false(queue_id_valid("0123456789ABCD/F"));
}

/* ctl_request - one request over the socket, pumping the loop; the reply */
static char *ctl_request(struct fx *f, const char *path, const char *req, size_t n)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	assert_true(strlen(path) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, path, strlen(path) + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	size_t off = 0;
	while (off < n) {
		ssize_t w = send(fd, req + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w > 0)
			off += (size_t)w;
		else if (w < 0 && errno != EAGAIN)
			break; /* the server may already have answered and closed */
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	}
	struct strbuf out;
	strbuf_init(&out);
	time_t end = time(NULL) + 5;
	for (;;) {
		assert_true(time(NULL) < end);
		char buf[4096];
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r > 0) {
			strbuf_add(&out, buf, (size_t)r);
			continue;
		}
		if (r == 0 || (r < 0 && errno != EAGAIN))
			break;
		event_base_loop(f->base, EVLOOP_ONCE);
	}
	close(fd);
	strbuf_addc(&out, '\0');
	return strbuf_detach(&out);
}

static void test_control_socket(void **state)
{
	struct fx *f = fx_setup();
	char err[256] = "";
	char path[256];
	snprintf(path, sizeof(path), "%s/run/ctl.sock", f->dir);
	struct envelope env;
	const char *r[] = {"carol@remote.test", NULL};
	make_msg(f, &env, "s@example.net", r);
	sched_submit(f->s, &env);

	/* a stale socket from a crashed ternd is replaced */
	char rundir[256];
	snprintf(rundir, sizeof(rundir), "%s/run", f->dir);
	assert_int_equal(mkdir(rundir, 0700), 0);
	int stale = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	assert_true(strlen(path) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(stale, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(stale);

	struct control *c = control_start(f->base, path, f->s, err, sizeof(err));
	if (c == NULL)
		fprintf(stderr, "control_start: %s\n", err);
	assert_non_null(c);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	/* a second server on the same live socket is refused */
	assert_null(control_start(f->base, path, f->s, err, sizeof(err)));
	assert_non_null(strstr(err, "in use"));

	char *rep = ctl_request(f, path, "ping\n", 5);
	assert_string_equal(rep, "OK\npong\n");
	free(rep);
	rep = ctl_request(f, path, "ping\r\n", 6);
	assert_string_equal(rep, "OK\npong\n");
	free(rep);
	rep = ctl_request(f, path, "queue list\n", 11);
	assert_true(strncmp(rep, "OK\n", 3) == 0);
	assert_non_null(strstr(rep, env.qid));
	assert_non_null(strstr(rep, "carol@remote.test"));
	free(rep);
	rep = ctl_request(f, path, "stats\n", 6);
	assert_true(strncmp(rep, "OK\nqueued=1 ", 12) == 0);
	free(rep);

	char line[128];
	snprintf(line, sizeof(line), "queue show %s\n", env.qid);
	rep = ctl_request(f, path, line, strlen(line));
	assert_true(strncmp(rep, "OK\n", 3) == 0);
	assert_non_null(strstr(rep, "Subject: hello"));
	free(rep);
	snprintf(line, sizeof(line), "queue hold %s\n", env.qid);
	rep = ctl_request(f, path, line, strlen(line));
	assert_true(strncmp(rep, "OK\n", 3) == 0);
	free(rep);
	rep = ctl_request(f, path, "queue list\n", 11);
	assert_non_null(strstr(rep, "(held)"));
	free(rep);
	snprintf(line, sizeof(line), "queue release %s\n", env.qid);
	rep = ctl_request(f, path, line, strlen(line));
	assert_true(strncmp(rep, "OK\n", 3) == 0);
	free(rep);
	snprintf(line, sizeof(line), "queue flush %s\n", env.qid);
	rep = ctl_request(f, path, line, strlen(line));
	assert_true(strncmp(rep, "OK\n", 3) == 0);
	free(rep);
	rep = ctl_request(f, path, "queue flush\n", 12);
	assert_true(strncmp(rep, "OK\n", 3) == 0);
	free(rep);
	run_for(f, 100);
	snprintf(line, sizeof(line), "queue delete %s\n", env.qid);
	rep = ctl_request(f, path, line, strlen(line));
	assert_true(strncmp(rep, "OK\n", 3) == 0);
	free(rep);
	run_until(f, pred_empty, NULL);
	rep = ctl_request(f, path, line, strlen(line));
	assert_true(strncmp(rep, "ERR no such message", 19) == 0);
	free(rep);

	/* hostile and malformed requests get ERR, never a crash */
	static const char *const bad[] = {
		"bogus\n", "\n", "   \n", "ping extra\n", "queue show\n", "queue show ../../etc/passwd\n",
		"queue show 0123456789abcdef\n", "queue show 0123456789ABCDEF\n",
		"queue delete 0123456789ABCDEFX\n", "queue hold\n", "queue frobnicate X\n",
		"queue show 0123456789ABCDEF extra\n", "queue list all\n", "a b c d e f g\n",
		"ping\x01\n", "ping\xff\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		rep = ctl_request(f, path, bad[i], strlen(bad[i]));
		if (strncmp(rep, "ERR ", 4) != 0)
			fprintf(stderr, "request %zu: %s\n", i, rep);
		assert_true(strncmp(rep, "ERR ", 4) == 0);
		assert_non_null(strchr(rep, '\n'));
		free(rep);
	}
	/* a NUL inside the line */
	rep = ctl_request(f, path, "ping\0x\n", 7);
	assert_true(strncmp(rep, "ERR ", 4) == 0);
	free(rep);
	/* over the cap, with and without a line end */
	char *big = malloc(4000);
	memset(big, 'q', 4000);
	big[3999] = '\n';
	rep = ctl_request(f, path, big, 4000);
	assert_string_equal(rep, "ERR request too long\n");
	free(rep);
	rep = ctl_request(f, path, big, CONTROL_REQUEST_MAX);
	assert_string_equal(rep, "ERR request too long\n");
	free(rep);
	free(big);
	/* a request without a line end before EOF still gets an answer */
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(send(fd, "ping", 4, 0), 4);
	shutdown(fd, SHUT_WR);
	char buf[64] = "";
	time_t end = time(NULL) + 5;
	ssize_t got = 0;
	while (got <= 0 && time(NULL) < end) {
		event_base_loop(f->base, EVLOOP_ONCE);
		got = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	}
	close(fd);
	assert_string_equal(buf, "OK\npong\n");
	/* a client that connects and says nothing is cleaned up by stop */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	run_for(f, 50);

	control_stop(c);
	close(fd);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(errno, ENOENT);

	/* a non-socket at the path is never unlinked */
	int rf = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(rf >= 0);
	close(rf);
	assert_null(control_start(f->base, path, f->s, err, sizeof(err)));
	assert_int_equal(stat(path, &st), 0);
	/* an over-long path is refused */
	char longp[300];
	memset(longp, 'a', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = '\0';
	assert_null(control_start(f->base, longp, f->s, err, sizeof(err)));
	env_free(&env);
	fx_teardown(f);
}

static void test_control_handle(void **state)
{
	struct fx *f = fx_setup();
	struct strbuf out;
	strbuf_init(&out);
	control_handle(f->s, "ping", 4, &out);
	assert_string_equal(out.s, "OK\npong\n");
	strbuf_reset(&out);
	control_handle(f->s, "queue", 5, &out);
	assert_string_equal(out.s, "OK\n");
	strbuf_reset(&out);
	control_handle(f->s, "queue  list", 11, &out); /* repeated spaces tolerated */
	assert_string_equal(out.s, "OK\n");
	strbuf_reset(&out);
	char big[CONTROL_REQUEST_MAX + 10];
	memset(big, 'x', sizeof(big));
	control_handle(f->s, big, sizeof(big), &out);
	assert_string_equal(out.s, "ERR request too long\n");
	strbuf_reset(&out);
	control_handle(f->s, "queue\tlist", 10, &out);
	assert_true(strncmp(out.s, "ERR ", 4) == 0);
	strbuf_free(&out);
	fx_teardown(f);
}

int main(void)
{
	log_init("test_sched", getenv("TEST_LOG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qid_valid),
		cmocka_unit_test(test_local_two_rcpts),
		cmocka_unit_test(test_remote_deferred_backoff),
		cmocka_unit_test(test_flush_busy_or_held),
		cmocka_unit_test(test_remote_expires),
		cmocka_unit_test(test_local_failure_then_fixed),
		cmocka_unit_test(test_hold_release_delete),
		cmocka_unit_test(test_recover_exactly_once),
		cmocka_unit_test(test_fast_path_removal_fails),
		cmocka_unit_test(test_show),
		cmocka_unit_test(test_remote_hook),
		cmocka_unit_test(test_control_handle),
		cmocka_unit_test(test_control_socket),
		cmocka_unit_test(test_bounce_local_permfail),
		cmocka_unit_test(test_bounce_suppressed),
		cmocka_unit_test(test_bounce_no_loop),
		cmocka_unit_test(test_bounce_success_notify),
		cmocka_unit_test(test_bounce_expired),
		cmocka_unit_test(test_bounce_remote_permfail),
		cmocka_unit_test(test_delay_warning),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
