/*
 * queue_commit - receiving a message into the queue and making it durable.
 *
 * A message is written through a 64 KiB buffer: the envelope header,
 * QUEUE_RESERVE NUL bytes reserved for text to prepend
 * (queue_file_prepend), then the content. The file is one of the free/
 * pool, written in place under its old name (no inode allocated or freed
 * per message, its blocks overwritten, no rename before the commit), or
 * else tmp/QID created O_EXCL. At commit the prepend is written
 * right-aligned into the reserve (so it joins the content), the end marker
 * with the gap and the length is appended and flushed, a reused file is
 * cut to size if it was longer, the file is fdatasync'd, renamed to
 * msg/QID and msg/ is fsync'd. Only then is done(arg, 0, NULL) called
 * and may the client hear 250. The fsync steps run on QUEUE_COMMIT_THREADS commit threads, each
 * taking one waiting file at a time, so the flushes of concurrent messages
 * are in flight together; the fsync of msg/ is shared by every rename that
 * waits for it at the same moment (group commit). Results go back to the
 * event loop through an eventfd, so done() always runs on the loop thread
 * and never inside queue_file_commit (no re-entry into the caller).
 *
 * A prepend longer than the reserve is handled by copying: the commit
 * thread writes a new tmp/QID (header, prepend, content, gap 0) from the
 * old one's descriptor. queue_file_restart replaces tmp/QID by a new file
 * with a fresh header; the old one's name goes at once (a crash leaves
 * nothing of it), its descriptor stays open for the caller to read the old
 * content.
 * With no event base everything runs in the caller's thread.
 *
 * Exports: queue_file_create, queue_file_write, queue_file_errno,
 *          queue_file_prepend, queue_file_restart,
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
#include <sys/param.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/xalloc.h"

struct queue_file {
	struct queue *q;
	struct envelope *env; /* the caller's, valid until commit or abort */
	char qid[QUEUE_ID_MAX];
	int fd;      /* the file, read-write (the copy path reads it back) */
	int dfd;     /* where it is: tmp/ (as QID) or free/ (a reused file, */
	char name[QUEUE_ID_MAX]; /* under its old name) */
	int old_fd;  /* content before the last restart, or -1 */
	char *buf;
	size_t blen;
	off_t boff;  /* file offset of buf[0] */
	uint64_t hdr_len, cstart; /* header length; content offset (after the reserve) */
	uint64_t content_len;
	char *pre;   /* queue_file_prepend text, pre_len bytes */
	size_t pre_len;
	int copy;    /* the prepend does not fit: the commit thread copies */
	off_t old_size; /* bytes a file from free/ had: cut to size at commit */
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
	if (f->old_fd >= 0)
		close(f->old_fd);
	free(f->pre);
	free(f->buf);
	free(f);
}

/* qf_flush - write the buffer through to tmp/QID */
static int qf_flush(struct queue_file *f)
{
	if (f->err)
		return -1;
	if (f->blen && fs_write_all(f->fd, f->buf, f->blen) < 0) {
		qf_fail(f, errno, "write queue file");
		return -1;
	}
	f->boff += (off_t)f->blen;
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
			qf_fail(f, errno, "write queue file");
			return -1;
		}
		f->boff += (off_t)n;
		return 0;
	}
	memcpy(f->buf, p, n);
	f->blen = n;
	return 0;
}

/* qf_start - the envelope header and the reserve at the start of an empty
 * f->fd; the content follows */
static int qf_start(struct queue_file *f)
{
	static const char zeros[QUEUE_RESERVE];
	struct strbuf hdr;
	strbuf_init(&hdr);
	queue_env_format(f->env, &hdr);
	f->hdr_len = hdr.len;
	f->cstart = hdr.len + QUEUE_RESERVE;
	f->content_len = 0;
	int r = qf_put(f, hdr.s, hdr.len);
	strbuf_free(&hdr);
	return r < 0 ? -1 : qf_put(f, zeros, sizeof(zeros));
}

/* qf_reuse - a file from free/, written where it is (free/NAME, its name
 * in *name) and open for writing from the start (empty, or its old bytes
 * overwritten and the rest cut off at commit: *size is how many it had):
 * no inode to allocate now nor to free later, no rename until the commit.
 * A crash while it is written leaves it in free/, where queue_scan takes
 * it back. -1 when the pool has none. */
static int qf_reuse(struct queue *q, char name[QUEUE_ID_MAX], off_t *size)
{
	while (queue_pool_get(q, name)) {
		int fd = openat(q->free_fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		struct stat st;
		if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1) {
			*size = st.st_size;
			return fd;
		}
		if (fd >= 0)
			close(fd);
		if (fd >= 0 || errno != ENOENT)
			unlinkat(q->free_fd, name, 0);
	}
	return -1;
}

struct queue_file *queue_file_create(struct queue *q, struct envelope *env, char *err, size_t errlen)
{
	if (queue_env_check(env, err, errlen) < 0) {
		errno = EINVAL;
		return NULL;
	}
	if (env->arrival == 0)
		env->arrival = time(NULL);
	off_t old_size = 0;
	char qid[QUEUE_ID_MAX], name[QUEUE_ID_MAX];
	int fd = qf_reuse(q, name, &old_size), reused = fd >= 0;
	for (int tries = 0;; tries++) {
		if (tries == 100) {
			if (fd >= 0)
				close(fd); /* (a reused file stays in free/ for the next start) */
			snprintf(err, errlen, "no unused queue id after 100 tries");
			errno = EEXIST;
			return NULL;
		}
		queue_id_new(q, qid);
		/* the ID must be new in msg/ (IDs of another process, a clock
		 * stepped back); the commit's rename never replaces a message
		 * anyway */
		if (faccessat(q->msg_fd, qid, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
			continue;
		if (reused)
			break;
		/* O_EXCL: two receivers can never share a file */
		fd = openat(q->tmp_fd, qid, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0)
			break;
		if (errno != EEXIST) {
			int e = errno;
			snprintf(err, errlen, "create %s/tmp/%s: %s", q->dir, qid, strerror(e));
			errno = e;
			return NULL;
		}
	}
	memcpy(env->qid, qid, sizeof(qid));
	struct queue_file *f = xcalloc(1, sizeof(*f));
	f->q = q;
	f->env = env;
	f->fd = fd;
	f->dfd = reused ? q->free_fd : q->tmp_fd;
	memcpy(f->name, reused ? name : qid, QUEUE_ID_MAX);
	f->old_size = old_size;
	f->old_fd = -1;
	memcpy(f->qid, qid, sizeof(qid));
	f->buf = xmalloc(QUEUE_WBUF_SIZE);
	if (qf_start(f) < 0) {
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

int queue_file_prepend(struct queue_file *f, const char *p, size_t n)
{
	if (f->err) {
		errno = f->err;
		return -1;
	}
	free(f->pre);
	f->pre = NULL;
	f->pre_len = n;
	if (n) {
		f->pre = xmalloc(n);
		memcpy(f->pre, p, n);
	}
	return 0;
}

int queue_file_restart(struct queue_file *f, int *old_fd, off_t *old_off, off_t *old_len)
{
	struct queue *q = f->q;
	char err[QUEUE_REASON_MAX];
	if (f->err) {
		errno = f->err;
		return -1;
	}
	/* the ID is the file's, whatever the caller did to env */
	memcpy(f->env->qid, f->qid, sizeof(f->qid));
	if (queue_env_check(f->env, err, sizeof(err)) < 0) {
		errno = EINVAL;
		return -1;
	}
	/* everything written must be readable through the old descriptor */
	if (qf_flush(f) < 0) {
		errno = f->err;
		return -1;
	}
	/* the old name goes first: tmp/QID is then always the current file,
	 * and a crash leaves at most it (removed at start-up, never delivered) */
	if (unlinkat(f->dfd, f->name, 0) < 0 && errno != ENOENT) {
		qf_fail(f, errno, "unlink queue file");
		errno = f->err;
		return -1;
	}
	int fd = openat(q->tmp_fd, f->qid, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		qf_fail(f, errno, "create tmp/");
		errno = f->err;
		return -1;
	}
	if (f->old_fd >= 0)
		close(f->old_fd);
	f->old_fd = f->fd;
	*old_fd = f->fd;
	f->dfd = q->tmp_fd;
	memcpy(f->name, f->qid, QUEUE_ID_MAX);
	*old_off = (off_t)f->cstart;
	*old_len = (off_t)f->content_len;
	f->fd = fd;
	f->old_size = 0;
	f->boff = 0;
	f->blen = 0;
	if (qf_start(f) < 0) {
		errno = f->err;
		return -1;
	}
	return 0;
}

void queue_file_abort(struct queue_file *f)
{
	if (f == NULL)
		return;
	/* never acknowledged: nothing to keep (and queue_scan would remove
	 * it); the file itself may serve the next message */
	if (f->fd >= 0 && (f->err || queue_pool_put(f->q, f->dfd, f->name) < 0))
		unlinkat(f->dfd, f->name, 0);
	qf_free(f);
}

/* qf_copy_range - n bytes of from at off to the end of to (in the kernel
 * when it can) */
static int qf_copy_range(int from, off_t off, int to, uint64_t n)
{
	int kernel = 1;
	char buf[65536];
	while (n > 0) {
		size_t chunk = n < (1u << 30) ? (size_t)n : (1u << 30);
		ssize_t r;
		if (kernel) {
			r = copy_file_range(from, &off, to, NULL, chunk, 0);
			if (r < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
				kernel = 0;
				continue;
			}
		} else {
			r = pread(from, buf, MIN(chunk, sizeof(buf)), off);
			if (r > 0 && fs_write_all(to, buf, (size_t)r) < 0)
				return -1;
			if (r > 0)
				off += r;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			errno = EIO; /* the file we wrote is shorter than we know */
			return -1;
		}
		n -= (uint64_t)r;
	}
	return 0;
}

/* qf_copy - commit thread: the prepend did not fit the reserve. A new
 * tmp/QID gets the old header, the prepend, the content and the end marker
 * (gap 0); the old file's name goes first, its descriptor is the source. */
static int qf_copy(struct queue *q, struct queue_file *f)
{
	if (unlinkat(f->dfd, f->name, 0) < 0 && errno != ENOENT) {
		qf_fail(f, errno, "unlink queue file");
		return -1;
	}
	int fd = openat(q->tmp_fd, f->qid, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		qf_fail(f, errno, "create tmp/");
		return -1;
	}
	char trailer[QUEUE_TRAILER_MAX + 1];
	int tn = snprintf(trailer, sizeof(trailer), QUEUE_TRAILER_TAG "0 %llu\n",
			  (unsigned long long)(f->pre_len + f->content_len));
	if (qf_copy_range(f->fd, 0, fd, f->hdr_len) < 0 || fs_write_all(fd, f->pre, f->pre_len) < 0 ||
	    qf_copy_range(f->fd, (off_t)f->cstart, fd, f->content_len) < 0 ||
	    fs_write_all(fd, trailer, (size_t)tn) < 0) {
		qf_fail(f, errno, "copy tmp/");
		close(fd);
		return -1;
	}
	close(f->fd);
	f->fd = fd;
	f->dfd = q->tmp_fd;
	memcpy(f->name, f->qid, QUEUE_ID_MAX);
	f->old_size = 0;
	return 0;
}

/* qf_sync_msg_dir - make every rename into msg/ so far durable: wait for
 * an fsync of msg/ that starts after this call, running it here when none
 * runs. Commits finishing together share one (group commit). 0, or -1
 * with errno of the latest fsync (a later success covers all before it). */
static int qf_sync_msg_dir(struct queue *q)
{
	pthread_mutex_lock(&q->ds_mu);
	uint64_t need = q->ds_started + 1;
	while (q->ds_done < need) {
		if (q->ds_running) {
			pthread_cond_wait(&q->ds_cv, &q->ds_mu);
			continue;
		}
		q->ds_running = 1;
		uint64_t mine = ++q->ds_started;
		pthread_mutex_unlock(&q->ds_mu);
		int r = fsync(q->msg_fd) < 0 ? errno : 0;
		pthread_mutex_lock(&q->ds_mu);
		q->ds_running = 0;
		q->ds_done = mine;
		q->ds_err = r;
		pthread_cond_broadcast(&q->ds_cv);
	}
	int e = q->ds_err;
	pthread_mutex_unlock(&q->ds_mu);
	if (e) {
		errno = e;
		return -1;
	}
	return 0;
}

/* qf_commit_one - make one file durable and publish it as msg/QID; on
 * failure anywhere it is removed and keeps its reason */
static void qf_commit_one(struct queue *q, struct queue_file *f)
{
	if (f->err)
		goto drop;
	if (f->copy && qf_copy(q, f) < 0)
		goto drop;
	/* a reused file may be longer than this message: cut the rest (a
	 * file as long stays as it is: no metadata to write) */
	if (f->old_size > f->boff && ftruncate(f->fd, f->boff) < 0) {
		qf_fail(f, errno, "truncate queue file");
		goto drop;
	}
	/* the content (and the size that makes it readable) must be on disk
	 * before the name that promises a complete message */
	if (fdatasync(f->fd) < 0) {
		qf_fail(f, errno, "fdatasync queue file");
		goto drop;
	}
	/* close can report a deferred write error (NFS and friends) */
	int r = close(f->fd);
	f->fd = -1;
	if (r < 0) {
		qf_fail(f, errno, "close queue file");
		goto drop;
	}
	/* atomic publication: msg/QID is either absent or complete.
	 * NOREPLACE: a committed message is never overwritten. The source
	 * directory (tmp/ or free/) is not synced: if the old name survives a
	 * crash next to the new one (two links once a file system check has
	 * counted them), queue_scan removes it from tmp/ or, in free/, does
	 * not reuse it (its link count), and msg/ keeps the inode. */
	r = renameat2(f->dfd, f->name, q->msg_fd, f->qid, RENAME_NOREPLACE);
	if (r < 0 && (errno == EINVAL || errno == ENOSYS))
		r = renameat(f->dfd, f->name, q->msg_fd, f->qid);
	if (r < 0) {
		qf_fail(f, errno, "rename to msg/");
		goto drop;
	}
	f->renamed = 1;
	/* the rename is durable only once msg/ is synced; until then a crash
	 * could lose the message after the client heard 250 */
	if (qf_sync_msg_dir(q) == 0)
		return;
	/* state unknown: tell the client 4xx and do not deliver a message it
	 * will send again */
	qf_fail(f, errno, "fsync msg/ for");
	unlinkat(q->msg_fd, f->qid, 0);
	return;
drop:
	unlinkat(f->dfd, f->name, 0);
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

/* qf_on_notify - loop thread: commit threads finished some files */
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

/* qf_thread - a commit thread: take the oldest file waiting, make it
 * durable, hand it back, repeat; on stop, finish what is queued first */
static void *qf_thread(void *arg)
{
	struct queue *q = arg;
	pthread_mutex_lock(&q->mu);
	for (;;) {
		while (q->pending == NULL && !q->stop)
			pthread_cond_wait(&q->cv, &q->mu);
		if (q->pending == NULL)
			break;
		struct queue_file *f = q->pending;
		q->pending = f->next;
		if (q->pending == NULL)
			q->pending_tail = &q->pending;
		pthread_mutex_unlock(&q->mu);
		f->next = NULL;
		qf_commit_one(q, f);
		qf_done_push(q, f);
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
	/* signals belong to the loop thread: the commit threads block them */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = 0;
	while (q->nthreads < QUEUE_COMMIT_THREADS &&
	       (r = pthread_create(&q->threads[q->nthreads], NULL, qf_thread, q)) == 0)
		q->nthreads++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (q->nthreads == 0) {
		snprintf(err, errlen, "commit thread: %s", strerror(r));
		return -1;
	}
	return 0;
}

/* queue_commit_stop - finish queued commits, then run their callbacks here
 * (queue_close is called on the loop thread) */
void queue_commit_stop(struct queue *q)
{
	if (q->nthreads) {
		pthread_mutex_lock(&q->mu);
		q->stop = 1;
		pthread_cond_broadcast(&q->cv);
		pthread_mutex_unlock(&q->mu);
		for (size_t i = 0; i < q->nthreads; i++)
			pthread_join(q->threads[i], NULL);
		q->nthreads = 0;
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

/* qf_place_prepend - the prepend, right-aligned in the reserve so that it
 * ends where the content begins: into the buffer when that still holds the
 * place, else written in the file */
static void qf_place_prepend(struct queue_file *f)
{
	if (f->pre_len == 0)
		return;
	off_t at = (off_t)(f->cstart - f->pre_len);
	if (at >= f->boff) {
		memcpy(f->buf + (at - f->boff), f->pre, f->pre_len);
		return;
	}
	if (qf_flush(f) < 0)
		return;
	const char *p = f->pre;
	size_t n = f->pre_len;
	while (n > 0) {
		ssize_t r = pwrite(f->fd, p, n, at);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			qf_fail(f, r < 0 ? errno : EIO, "write queue file");
			return;
		}
		p += r;
		n -= (size_t)r;
		at += r;
	}
}

void queue_file_commit(struct queue_file *f, queue_commit_done done, void *arg)
{
	struct queue *q = f->q;
	f->done = done;
	f->arg = arg;
	if (f->err == 0 && f->pre_len > QUEUE_RESERVE) {
		/* too long for the reserve: the commit thread copies */
		f->copy = 1;
		qf_flush(f);
	} else if (f->err == 0) {
		qf_place_prepend(f);
		/* the end marker goes last: a file without it is torn */
		char trailer[QUEUE_TRAILER_MAX + 1];
		int n = snprintf(trailer, sizeof(trailer), QUEUE_TRAILER_TAG "%u %llu\n",
				 (unsigned)(QUEUE_RESERVE - f->pre_len),
				 (unsigned long long)(f->pre_len + f->content_len));
		if (qf_put(f, trailer, (size_t)n) == 0)
			qf_flush(f);
	}
	if (f->env)
		f->env->content_size = f->pre_len + f->content_len;
	f->env = NULL;
	f->next = NULL;
	if (q->base == NULL) {
		qf_commit_one(q, f);
		qf_done_run(f);
		return;
	}
	if (f->err) {
		/* already failed: no disk work, but still answer from the loop */
		unlinkat(f->dfd, f->name, 0);
		qf_done_push(q, f);
		return;
	}
	pthread_mutex_lock(&q->mu);
	*q->pending_tail = f;
	q->pending_tail = &f->next;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}
