/*
 * queue_commit - receiving a message into the queue and making it durable.
 *
 * A message is written to tmp/QID (created O_EXCL) through a 64 KiB
 * buffer, then committed: the end marker is appended and flushed, the file
 * is fdatasync'd, renamed to msg/QID and msg/ is fsync'd. Only then is
 * done(arg, 0, NULL) called and may the client hear 250. The fsync steps
 * run on a commit thread that takes every file waiting at that moment and
 * shares one fsync of msg/ among them (group commit); it hands results back
 * to the event loop through an eventfd, so done() always runs on the loop
 * thread and never inside queue_file_commit (no re-entry into the caller).
 * With no event base everything runs in the caller's thread.
 *
 * Exports: queue_file_create, queue_file_write, queue_file_errno,
 *          queue_file_commit, queue_file_abort (queue.h);
 *          queue_commit_start, queue_commit_stop (queue_int.h)
 * Trusts: the envelope is checked (queue_env_check) before it is written.
 */
#include "queue/queue_int.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/xalloc.h"

struct queue_file {
	struct queue *q;
	struct envelope *env; /* the caller's, valid until commit or abort */
	char qid[QUEUE_ID_MAX];
	int fd;
	char *buf;
	size_t blen;
	uint64_t content_len;
	int err;     /* errno of the first failure, 0 while all is well */
	int renamed; /* msg/QID exists (undo it if the directory sync fails) */
	char reason[QUEUE_REASON_MAX];
	queue_commit_done done;
	void *arg;
	struct queue_file *next;
};

/* qf_fail - remember the first failure and its reason */
static void qf_fail(struct queue_file *f, int e, const char *what)
{
	if (f->err)
		return;
	f->err = e ? e : EIO;
	snprintf(f->reason, sizeof(f->reason), "%s %s: %s", what, f->qid, strerror(f->err));
}

/* qf_free - release a file's memory and descriptor (not its name) */
static void qf_free(struct queue_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	free(f->buf);
	free(f);
}

/* qf_flush - write the buffer through to tmp/QID */
static int qf_flush(struct queue_file *f)
{
	if (f->err)
		return -1;
	if (f->blen && fs_write_all(f->fd, f->buf, f->blen) < 0) {
		qf_fail(f, errno, "write tmp/");
		return -1;
	}
	f->blen = 0;
	return 0;
}

/* qf_put - buffered write of n bytes; large writes bypass the buffer */
static int qf_put(struct queue_file *f, const void *p, size_t n)
{
	if (f->err)
		return -1;
	if (n <= QUEUE_WBUF_SIZE - f->blen) {
		memcpy(f->buf + f->blen, p, n);
		f->blen += n;
		return f->blen == QUEUE_WBUF_SIZE ? qf_flush(f) : 0;
	}
	if (qf_flush(f) < 0)
		return -1;
	if (n >= QUEUE_WBUF_SIZE) {
		if (fs_write_all(f->fd, p, n) < 0) {
			qf_fail(f, errno, "write tmp/");
			return -1;
		}
		return 0;
	}
	memcpy(f->buf, p, n);
	f->blen = n;
	return 0;
}

struct queue_file *queue_file_create(struct queue *q, struct envelope *env, char *err, size_t errlen)
{
	if (queue_env_check(env, err, errlen) < 0) {
		errno = EINVAL;
		return NULL;
	}
	if (env->arrival == 0)
		env->arrival = time(NULL);
	int fd = -1;
	char qid[QUEUE_ID_MAX];
	for (int tries = 0; fd < 0; tries++) {
		if (tries == 100) {
			snprintf(err, errlen, "no unused queue id after 100 tries");
			errno = EEXIST;
			return NULL;
		}
		queue_id_new(q, qid);
		/* O_EXCL: two receivers can never share a file */
		fd = openat(q->tmp_fd, qid, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST) {
			int e = errno;
			snprintf(err, errlen, "create %s/tmp/%s: %s", q->dir, qid, strerror(e));
			errno = e;
			return NULL;
		}
		/* and the name must be new in msg/ too (IDs of another process,
		 * a clock stepped back): the rename must never replace a message */
		if (fd >= 0 && faccessat(q->msg_fd, qid, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
			close(fd);
			unlinkat(q->tmp_fd, qid, 0);
			fd = -1;
		}
	}
	memcpy(env->qid, qid, sizeof(qid));
	struct queue_file *f = xcalloc(1, sizeof(*f));
	f->q = q;
	f->env = env;
	f->fd = fd;
	memcpy(f->qid, qid, sizeof(qid));
	f->buf = xmalloc(QUEUE_WBUF_SIZE);
	struct strbuf hdr;
	strbuf_init(&hdr);
	queue_env_format(env, &hdr);
	int r = qf_put(f, hdr.s, hdr.len);
	strbuf_free(&hdr);
	if (r < 0) {
		int e = f->err;
		snprintf(err, errlen, "%s", f->reason);
		queue_file_abort(f);
		errno = e;
		return NULL;
	}
	return f;
}

int queue_file_write(struct queue_file *f, const void *p, size_t n)
{
	f->content_len += n;
	if (qf_put(f, p, n) < 0) {
		errno = f->err;
		return -1;
	}
	return 0;
}

int queue_file_errno(const struct queue_file *f)
{
	return f->err;
}

void queue_file_abort(struct queue_file *f)
{
	if (f == NULL)
		return;
	/* never acknowledged: nothing to keep (and queue_scan would remove it) */
	unlinkat(f->q->tmp_fd, f->qid, 0);
	qf_free(f);
}

/* qf_batch_commit - make every file of a batch durable, one msg/ fsync for
 * all; a file that fails anywhere is removed and keeps its reason */
static void qf_batch_commit(struct queue *q, struct queue_file *batch)
{
	int renamed = 0;
	for (struct queue_file *f = batch; f; f = f->next) {
		if (f->err)
			goto drop;
		/* the content (and the size that makes it readable) must be on
		 * disk before the name that promises a complete message */
		if (fdatasync(f->fd) < 0) {
			qf_fail(f, errno, "fdatasync tmp/");
			goto drop;
		}
		/* close can report a deferred write error (NFS and friends) */
		int r = close(f->fd);
		f->fd = -1;
		if (r < 0) {
			qf_fail(f, errno, "close tmp/");
			goto drop;
		}
		/* atomic publication: msg/QID is either absent or complete.
		 * NOREPLACE: a committed message is never overwritten. tmp/ is
		 * not synced: if the old name survives a crash next to the new
		 * one, queue_scan removes it from tmp/ and msg/ keeps the inode. */
		r = renameat2(q->tmp_fd, f->qid, q->msg_fd, f->qid, RENAME_NOREPLACE);
		if (r < 0 && (errno == EINVAL || errno == ENOSYS))
			r = renameat(q->tmp_fd, f->qid, q->msg_fd, f->qid);
		if (r < 0) {
			qf_fail(f, errno, "rename to msg/");
			goto drop;
		}
		f->renamed = 1;
		renamed++;
		continue;
drop:
		unlinkat(q->tmp_fd, f->qid, 0);
	}
	if (renamed == 0)
		return;
	/* the rename is durable only once msg/ is synced; until then a crash
	 * could lose the message after the client heard 250. One fsync covers
	 * every rename of the batch: that is the point of group commit. */
	if (fsync(q->msg_fd) == 0)
		return;
	int e = errno;
	for (struct queue_file *f = batch; f; f = f->next) {
		if (!f->renamed)
			continue;
		/* state unknown: tell the client 4xx and do not deliver a
		 * message it will send again */
		qf_fail(f, e, "fsync msg/ for");
		unlinkat(q->msg_fd, f->qid, 0);
	}
}

/* qf_done_run - call done() for each file of a list, then free them */
static void qf_done_run(struct queue_file *list)
{
	while (list) {
		struct queue_file *f = list;
		list = f->next;
		/* the caller may read errno to choose 452 (ENOSPC) or 451 */
		errno = f->err;
		if (f->done)
			f->done(f->arg, f->err ? -1 : 0, f->err ? f->reason : NULL);
		qf_free(f);
	}
}

/* qf_done_take - the finished list, emptied */
static struct queue_file *qf_done_take(struct queue *q)
{
	pthread_mutex_lock(&q->mu);
	struct queue_file *list = q->done;
	q->done = NULL;
	q->done_tail = &q->done;
	pthread_mutex_unlock(&q->mu);
	return list;
}

/* qf_on_notify - loop thread: the commit thread finished some files */
static void qf_on_notify(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	uint64_t v;
	ssize_t r = read(fd, &v, sizeof(v));
	(void)r;
	qf_done_run(qf_done_take(arg));
}

/* qf_done_push - hand finished files to the loop thread */
static void qf_done_push(struct queue *q, struct queue_file *list)
{
	if (list == NULL)
		return;
	pthread_mutex_lock(&q->mu);
	*q->done_tail = list;
	while (list->next)
		list = list->next;
	q->done_tail = &list->next;
	pthread_mutex_unlock(&q->mu);
	uint64_t one = 1;
	ssize_t r = write(q->efd, &one, sizeof(one));
	(void)r; /* EAGAIN means a wake-up is already pending */
}

/* qf_thread - the commit thread: take everything waiting, commit it as one
 * batch, repeat; on stop, finish what is queued first */
static void *qf_thread(void *arg)
{
	struct queue *q = arg;
	pthread_mutex_lock(&q->mu);
	for (;;) {
		while (q->pending == NULL && !q->stop)
			pthread_cond_wait(&q->cv, &q->mu);
		if (q->pending == NULL)
			break;
		struct queue_file *batch = q->pending;
		q->pending = NULL;
		q->pending_tail = &q->pending;
		pthread_mutex_unlock(&q->mu);
		qf_batch_commit(q, batch);
		qf_done_push(q, batch);
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

int queue_commit_start(struct queue *q, char *err, size_t errlen)
{
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		return -1;
	}
	q->ev = event_new(q->base, q->efd, EV_READ | EV_PERSIST, qf_on_notify, q);
	if (q->ev == NULL || event_add(q->ev, NULL) < 0) {
		snprintf(err, errlen, "cannot register the queue commit event");
		return -1;
	}
	/* signals belong to the loop thread: the commit thread blocks them */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = pthread_create(&q->thread, NULL, qf_thread, q);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		snprintf(err, errlen, "commit thread: %s", strerror(r));
		return -1;
	}
	q->thread_started = 1;
	return 0;
}

/* queue_commit_stop - finish queued commits, then run their callbacks here
 * (queue_close is called on the loop thread) */
void queue_commit_stop(struct queue *q)
{
	if (q->thread_started) {
		pthread_mutex_lock(&q->mu);
		q->stop = 1;
		pthread_cond_signal(&q->cv);
		pthread_mutex_unlock(&q->mu);
		pthread_join(q->thread, NULL);
		q->thread_started = 0;
	}
	qf_done_run(qf_done_take(q));
	if (q->ev) {
		event_free(q->ev);
		q->ev = NULL;
	}
	if (q->efd >= 0) {
		close(q->efd);
		q->efd = -1;
	}
}

void queue_file_commit(struct queue_file *f, queue_commit_done done, void *arg)
{
	struct queue *q = f->q;
	f->done = done;
	f->arg = arg;
	if (f->err == 0) {
		/* the end marker goes last: a file without it is torn */
		char trailer[QUEUE_TRAILER_MAX + 1];
		int n = snprintf(trailer, sizeof(trailer), QUEUE_TRAILER_TAG "%llu\n",
				 (unsigned long long)f->content_len);
		if (qf_put(f, trailer, (size_t)n) == 0)
			qf_flush(f);
	}
	if (f->env)
		f->env->content_size = f->content_len;
	f->env = NULL;
	f->next = NULL;
	if (q->base == NULL) {
		qf_batch_commit(q, f);
		qf_done_run(f);
		return;
	}
	if (f->err) {
		/* already failed: no disk work, but still answer from the loop */
		unlinkat(q->tmp_fd, f->qid, 0);
		qf_done_push(q, f);
		return;
	}
	pthread_mutex_lock(&q->mu);
	*q->pending_tail = f;
	q->pending_tail = &f->next;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}
