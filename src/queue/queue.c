/*
 * queue - the durable store: directories, queue IDs, reading committed
 * messages, the recipient state log, removal and start-up recovery.
 * Writing and committing new messages is in queue_commit.c, the text
 * formats in queue_env.c.
 *
 * Exports (see queue.h):
 *   queue_open/queue_close     directories, dir fds, the commit threads
 *   queue_id_valid             syntax of a queue ID
 *   queue_id_new               a fresh ID (queue_int.h)
 *   queue_msg_load             envelope + state of msg/QID
 *   queue_msg_content          fd, offset and length of the content
 *   queue_rcpt_record          append a recipient outcome to state/QID
 *   queue_msg_hold             append a hold record to state/QID
 *   queue_msg_remove           msg/QID then state/QID
 *   queue_msg_finish           the same for a finished message (fast path),
 *                              its file kept in free/ for reuse
 *   queue_pool_get/_put        the free/ pool (queue_int.h)
 *   queue_scan                 recovery: tmp/, corrupt files, orphans
 * Trusts: nothing on disk (every file is parsed as hostile); queue IDs
 * from callers are checked with queue_id_valid before they name a file.
 * Every path is opened relative to a directory fd with a validated name,
 * so no ID can reach outside queue_dir.
 */
#include "queue/queue_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/log.h"
#include "core/xalloc.h"

static const char queue_b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* queue_b32_ok - a Crockford base32 digit as we write them (upper case) */
static int queue_b32_ok(char c)
{
	return c != '\0' && strchr(queue_b32, c) != NULL;
}

int queue_id_valid(const char *qid)
{
	if (qid == NULL)
		return 0;
	for (size_t i = 0; i < QUEUE_ID_LEN; i++)
		if (!queue_b32_ok(qid[i]))
			return 0;
	return qid[QUEUE_ID_LEN] == '\0';
}

/* queue_id_new - 11 digits of microseconds since the epoch (55 bits, good
 * for a thousand years), then 5 digits: a 15-bit per-process counter and
 * 10 bits of the pid. IDs of one process strictly increase, so name order
 * is arrival order; the pid bits make two processes (ternd, an injecting
 * ternctl) unlikely to collide, and O_EXCL catches it when they do. */
void queue_id_new(struct queue *q, char out[QUEUE_ID_MAX])
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	uint64_t us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
	pthread_mutex_lock(&q->id_mu);
	q->id_counter = (q->id_counter + 1) & 0x7fff;
	if (us <= q->id_last_us) {
		/* same microsecond or the clock stepped back: stay ordered */
		us = q->id_last_us;
		if (q->id_counter == 0)
			us++;
	}
	q->id_last_us = us;
	uint64_t low = ((uint64_t)q->id_counter << 10) | ((uint64_t)getpid() & 0x3ff);
	pthread_mutex_unlock(&q->id_mu);
	for (int i = 0; i < 11; i++)
		out[i] = queue_b32[(us >> (5 * (10 - i))) & 31];
	for (int i = 0; i < 5; i++)
		out[11 + i] = queue_b32[(low >> (5 * (4 - i))) & 31];
	out[QUEUE_ID_LEN] = '\0';
}

/* queue_subdir - create (0700) and open one subdirectory */
static int queue_subdir(struct queue *q, const char *name, char *err, size_t errlen)
{
	if (mkdirat(q->dir_fd, name, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "mkdir %s/%s: %s", q->dir, name, strerror(errno));
		return -1;
	}
	int fd = openat(q->dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		snprintf(err, errlen, "open %s/%s: %s", q->dir, name, strerror(errno));
	return fd;
}

struct queue *queue_open(const char *dir, struct event_base *base, char *err, size_t errlen)
{
	if (fs_mkdir_p(dir, 0700, err, errlen) < 0)
		return NULL;
	struct queue *q = xcalloc(1, sizeof(*q));
	q->dir = xstrdup(dir);
	q->base = base;
	q->dir_fd = q->tmp_fd = q->msg_fd = q->state_fd = q->corrupt_fd = q->free_fd = q->efd = -1;
	pthread_mutex_init(&q->id_mu, NULL);
	pthread_mutex_init(&q->pool_mu, NULL);
	q->pool_max = QUEUE_POOL_MAX;
	q->pool_keep_bytes = QUEUE_POOL_KEEP_BYTES;
	q->pool = xcalloc(q->pool_max, sizeof(*q->pool));
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	pthread_mutex_init(&q->ds_mu, NULL);
	pthread_cond_init(&q->ds_cv, NULL);
	q->pending_tail = &q->pending;
	q->done_tail = &q->done;
	q->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (q->dir_fd < 0) {
		snprintf(err, errlen, "open %s: %s", dir, strerror(errno));
		goto fail;
	}
	if ((q->tmp_fd = queue_subdir(q, "tmp", err, errlen)) < 0 ||
	    (q->msg_fd = queue_subdir(q, "msg", err, errlen)) < 0 ||
	    (q->state_fd = queue_subdir(q, "state", err, errlen)) < 0 ||
	    (q->corrupt_fd = queue_subdir(q, "corrupt", err, errlen)) < 0 ||
	    (q->free_fd = queue_subdir(q, "free", err, errlen)) < 0)
		goto fail;
	/* the subdirectories' own entries must survive a crash before any
	 * message is acknowledged inside them */
	if (fsync(q->dir_fd) < 0) {
		snprintf(err, errlen, "fsync %s: %s", dir, strerror(errno));
		goto fail;
	}
	if (base && queue_commit_start(q, err, errlen) < 0)
		goto fail;
	return q;
fail:
	queue_close(q);
	return NULL;
}

void queue_close(struct queue *q)
{
	if (q == NULL)
		return;
	queue_commit_stop(q);
	int fds[] = {q->dir_fd, q->tmp_fd, q->msg_fd, q->state_fd, q->corrupt_fd, q->free_fd};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	pthread_mutex_destroy(&q->id_mu);
	pthread_mutex_destroy(&q->pool_mu);
	free(q->pool);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	pthread_mutex_destroy(&q->ds_mu);
	pthread_cond_destroy(&q->ds_cv);
	free(q->dir);
	free(q);
}

/* queue_bad_id - the common refusal of a queue ID from outside */
static int queue_bad_id(const char *qid, char *err, size_t errlen)
{
	if (queue_id_valid(qid))
		return 0;
	snprintf(err, errlen, "invalid queue id");
	errno = EINVAL;
	return -1;
}

/* queue_read_at - pread exactly n bytes (a short file is an error) */
static int queue_read_at(int fd, void *p, size_t n, off_t off)
{
	char *c = p;
	while (n > 0) {
		ssize_t r = pread(fd, c, n, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			errno = EBADMSG;
			return -1;
		}
		c += r;
		n -= (size_t)r;
		off += r;
	}
	return 0;
}

/* queue_gap_check - the gap[hdr_len, hdr_len + gap) between header and
 * content holds only NUL bytes (what create reserved and commit did not
 * fill): with the marker's numbers it pins down where the content starts.
 * hdr[0..have) is what was read already. 0, or -1 with errno (EBADMSG) */
static int queue_gap_check(int fd, const char *hdr, size_t have, size_t hdr_len, size_t gap)
{
	char buf[QUEUE_RESERVE];
	const char *g = hdr + hdr_len;
	if (gap > sizeof(buf)) {
		errno = EBADMSG;
		return -1;
	}
	if (hdr_len + gap > have) {
		if (queue_read_at(fd, buf, gap, (off_t)hdr_len) < 0)
			return -1;
		g = buf;
	}
	static const char zeros[256];
	for (size_t i = 0; i < gap; i += sizeof(zeros)) {
		size_t n = gap - i < sizeof(zeros) ? gap - i : sizeof(zeros);
		if (memcmp(g + i, zeros, n) != 0) {
			errno = EBADMSG;
			return -1;
		}
	}
	return 0;
}

/* queue_msg_open - open msg/QID, parse and validate it completely.
 * errno on failure: ENOENT (no such message), EBADMSG (corrupt: torn,
 * unparseable, wrong qid; to be set aside) or an I/O error. */
static int queue_msg_open(struct queue *q, const char *qid, struct envelope *env, int *fdp, off_t *hdr_off,
			  char *err, size_t errlen)
{
	int fd = openat(q->msg_fd, qid, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "open msg/%s: %s", qid, strerror(e));
		errno = e == ELOOP ? EBADMSG : e;
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		snprintf(err, errlen, "stat msg/%s: %s", qid, strerror(e));
		close(fd);
		errno = e;
		return -1;
	}
	char *hdr = NULL;
	int e = EBADMSG;
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "msg/%s is not a regular file", qid);
		goto fail;
	}
	uint64_t size = (uint64_t)st.st_size;
	/* read the header in growing chunks: a message is mostly content */
	size_t cap = 16384, have = 0, hdr_len = 0;
	int version = 0;
	for (;;) {
		size_t want = size < cap ? (size_t)size : cap;
		hdr = xrealloc(hdr, want ? want : 1);
		if (want > have && queue_read_at(fd, hdr + have, want - have, (off_t)have) < 0) {
			e = errno;
			snprintf(err, errlen, "read msg/%s: %s", qid, strerror(e));
			goto fail;
		}
		have = want;
		int r = queue_env_parse_hdr(hdr, have, env, &hdr_len, &version, err, errlen);
		if (r == 0)
			break;
		if (r == -2 && have < size && cap < QUEUE_HDR_MAX) {
			cap *= 4;
			continue;
		}
		goto fail; /* err says why */
	}
	char tail[QUEUE_TRAILER_MAX];
	size_t tn = size < sizeof(tail) ? (size_t)size : sizeof(tail);
	uint64_t clen, gap;
	if (queue_read_at(fd, tail, tn, (off_t)(size - tn)) < 0) {
		e = errno;
		snprintf(err, errlen, "read msg/%s: %s", qid, strerror(e));
		env_free(env);
		goto fail;
	}
	if (queue_trailer_check(tail, tn, size, hdr_len, version, &gap, &clen) < 0) {
		snprintf(err, errlen, "no valid end marker (torn file)");
		env_free(env);
		goto fail;
	}
	if (gap > 0 && queue_gap_check(fd, hdr, have, hdr_len, (size_t)gap) < 0) {
		e = errno;
		snprintf(err, errlen, "%s", e == EBADMSG ? "gap before the content is not empty" : strerror(e));
		env_free(env);
		goto fail;
	}
	if (strcmp(env->qid, qid) != 0) {
		snprintf(err, errlen, "file holds qid %s", env->qid);
		env_free(env);
		goto fail;
	}
	env->content_size = clen;
	free(hdr);
	*fdp = fd;
	*hdr_off = (off_t)(hdr_len + gap);
	return 0;
fail:
	free(hdr);
	close(fd);
	errno = e;
	return -1;
}

/* queue_state_load - apply state/QID to env; a missing file is no progress */
static int queue_state_load(struct queue *q, const char *qid, struct envelope *env, char *err, size_t errlen)
{
	/* a log this large is hostile or pathological: read its newest part */
	const off_t state_max = 64 << 20;
	int fd = openat(q->state_fd, qid, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "open state/%s: %s", qid, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "state/%s is not a readable file", qid);
		close(fd);
		errno = EIO;
		return -1;
	}
	off_t start = st.st_size > state_max ? st.st_size - state_max : 0;
	size_t n = (size_t)(st.st_size - start);
	char *p = xmalloc(n ? n : 1);
	if (queue_read_at(fd, p, n, start) < 0) {
		int e = errno;
		snprintf(err, errlen, "read state/%s: %s", qid, strerror(e));
		free(p);
		close(fd);
		errno = e == EBADMSG ? EIO : e;
		return -1;
	}
	close(fd);
	size_t skip = 0;
	if (start > 0) {
		/* we began mid-line: drop the partial first record */
		const char *nl = memchr(p, '\n', n);
		skip = nl ? (size_t)(nl - p) + 1 : n;
	}
	queue_state_apply(p + skip, n - skip, env);
	free(p);
	return 0;
}

int queue_msg_load(struct queue *q, const char *qid, struct envelope *env, char *err, size_t errlen)
{
	env_init(env);
	if (queue_bad_id(qid, err, errlen) < 0)
		return -1;
	int fd;
	off_t off;
	if (queue_msg_open(q, qid, env, &fd, &off, err, errlen) < 0)
		return -1;
	close(fd);
	if (queue_state_load(q, qid, env, err, errlen) < 0) {
		int e = errno;
		env_free(env);
		errno = e;
		return -1;
	}
	return 0;
}

int queue_msg_content(struct queue *q, const char *qid, int *fd, off_t *off, off_t *len, char *err,
		      size_t errlen)
{
	if (queue_bad_id(qid, err, errlen) < 0)
		return -1;
	struct envelope env;
	if (queue_msg_open(q, qid, &env, fd, off, err, errlen) < 0)
		return -1;
	*len = (off_t)env.content_size;
	env_free(&env);
	return 0;
}

/* queue_state_append - one record line to state/QID, durable on return */
static int queue_state_append(struct queue *q, const char *qid, const char *line, size_t n, char *err,
			      size_t errlen)
{
	if (queue_bad_id(qid, err, errlen) < 0)
		return -1;
	int created = 1;
	int fd = openat(q->state_fd, qid, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST) {
		created = 0;
		fd = openat(q->state_fd, qid, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "open state/%s: %s", qid, strerror(e));
		errno = e;
		return -1;
	}
	/* one write(2) of a whole line with O_APPEND: a crash leaves at most
	 * a torn last line, which queue_state_apply ignores */
	const char *what = "write";
	if (fs_write_all(fd, line, n) < 0)
		goto fail;
	/* the outcome must be on disk before the caller acts on it
	 * (e.g. removes the message), or a crash would repeat a delivery */
	what = "fdatasync";
	if (fdatasync(fd) < 0)
		goto fail;
	what = "close";
	int r = close(fd);
	fd = -1;
	if (r < 0)
		goto fail;
	/* a new file's name lives in state/: without this fsync the whole
	 * log could vanish in a crash although its data was synced */
	what = "fsync state/";
	if (created && fsync(q->state_fd) < 0)
		goto fail;
	return 0;
fail:;
	int e = errno;
	snprintf(err, errlen, "%s state/%s: %s", what, qid, strerror(e));
	if (fd >= 0)
		close(fd);
	errno = e;
	return -1;
}

int queue_rcpt_record(struct queue *q, const char *qid, size_t idx, enum env_rcpt_state state,
		      unsigned attempts, time_t next_attempt, const char *text, char *err, size_t errlen)
{
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_addf(&sb, "%zu %s %u %lld ", idx, env_rcpt_state_str(state), attempts,
		    (long long)(next_attempt < 0 ? 0 : next_attempt));
	/* the text comes from remote servers: one line, bounded */
	size_t tn = text ? strlen(text) : 0;
	if (tn > QUEUE_VALUE_MAX) {
		tn = QUEUE_VALUE_MAX;
		while (tn > 0 && ((unsigned char)text[tn] & 0xc0) == 0x80)
			tn--; /* do not cut a UTF-8 sequence */
	}
	for (size_t i = 0; i < tn; i++) {
		unsigned char c = (unsigned char)text[i];
		strbuf_addc(&sb, c < ' ' || c == 0x7f ? ' ' : (char)c);
	}
	strbuf_addc(&sb, '\n');
	int r = queue_state_append(q, qid, sb.s, sb.len, err, errlen);
	strbuf_free(&sb);
	return r;
}

int queue_msg_hold(struct queue *q, const char *qid, int held, char *err, size_t errlen)
{
	return queue_state_append(q, qid, held ? "hold 1\n" : "hold 0\n", 7, err, errlen);
}

int queue_rcpt_dsn(struct queue *q, const char *qid, size_t idx, unsigned kind, char *err, size_t errlen)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "dsn %zu %s\n", idx, kind == ENV_DSN_DELAY ? "delay" : "final");
	return queue_state_append(q, qid, line, (size_t)n, err, errlen);
}

/* queue_msg_remove - the message file goes first and that removal is made
 * durable before the state log goes: a crash in between leaves an orphan
 * state file (queue_scan removes it); the other order could leave a
 * message without its progress and deliver it again. */
int queue_msg_remove(struct queue *q, const char *qid)
{
	char err[64];
	if (queue_bad_id(qid, err, sizeof(err)) < 0)
		return -1;
	if (unlinkat(q->msg_fd, qid, 0) < 0) {
		if (errno != ENOENT)
			return -1;
	} else if (fsync(q->msg_fd) < 0) {
		return -1;
	}
	if (unlinkat(q->state_fd, qid, 0) < 0 && errno != ENOENT)
		return -1;
	return 0;
}

/* queue_pool_reusable - dir/name is a plain file with one link, small
 * enough to keep; *size is its size */
static int queue_pool_reusable(int dir_fd, const char *name, off_t *size)
{
	struct stat st;
	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
	    st.st_size > (off_t)QUEUE_POOL_FILE_MAX)
		return 0;
	*size = st.st_size;
	return 1;
}

/* queue_pool_push - remember a name now in free/ holding kept bytes: 0,
 * or -1 when full */
static int queue_pool_push(struct queue *q, const char *name, uint64_t kept)
{
	pthread_mutex_lock(&q->pool_mu);
	int full = q->npool >= q->pool_max;
	if (!full) {
		snprintf(q->pool[q->npool].name, QUEUE_ID_MAX, "%s", name);
		q->pool[q->npool++].kept = kept;
		q->pool_kept += kept;
	}
	pthread_mutex_unlock(&q->pool_mu);
	return full ? -1 : 0;
}

int queue_pool_get(struct queue *q, char out[QUEUE_ID_MAX])
{
	pthread_mutex_lock(&q->pool_mu);
	int have = q->npool > 0;
	if (have) {
		struct queue_pooled *e = &q->pool[--q->npool];
		memcpy(out, e->name, QUEUE_ID_MAX);
		q->pool_kept -= e->kept;
	}
	pthread_mutex_unlock(&q->pool_mu);
	return have;
}

/* queue_pool_keep - may a file of size bytes keep its blocks in the pool? */
static int queue_pool_keep(struct queue *q, off_t size)
{
	pthread_mutex_lock(&q->pool_mu);
	int keep = size <= (off_t)QUEUE_POOL_KEEP_MAX && q->pool_kept + (uint64_t)size <= q->pool_keep_bytes;
	pthread_mutex_unlock(&q->pool_mu);
	return keep;
}

/* queue_pool_admit - take free/name (size bytes) into the pool: a small
 * file keeps its blocks for the next message to overwrite (within the
 * pool's byte budget, so that a full disk gets little back from the pool);
 * a larger one is emptied, the pool then keeps its inode, not its disk
 * space. 0, or -1 (full, or it could not be emptied: the caller removes
 * it) */
static int queue_pool_admit(struct queue *q, const char *name, off_t size)
{
	if (size > 0 && !queue_pool_keep(q, size)) {
		int fd = openat(q->free_fd, name, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || close(fd) < 0)
			return -1;
		size = 0;
	}
	return queue_pool_push(q, name, (uint64_t)size);
}

int queue_pool_put(struct queue *q, int dir_fd, const char *name)
{
	pthread_mutex_lock(&q->pool_mu);
	int full = q->npool >= q->pool_max;
	pthread_mutex_unlock(&q->pool_mu);
	off_t size = 0;
	if (full || !queue_id_valid(name) || !queue_pool_reusable(dir_fd, name, &size))
		return -1;
	/* NOREPLACE: a name already in free/ (another process's) stays; a
	 * reused file given back unused is there already */
	if (dir_fd != q->free_fd && renameat2(dir_fd, name, q->free_fd, name, RENAME_NOREPLACE) < 0)
		return -1;
	if (queue_pool_admit(q, name, size) < 0)
		unlinkat(q->free_fd, name, 0); /* (or filled up meanwhile) */
	return 0;
}

/* queue_msg_finish - see queue.h. The file goes to free/ (or is removed);
 * the state log, if any, goes only after msg/QID. Without sync a power
 * loss may bring back the message and lose its log, and every recipient
 * is delivered again (hence only for idempotent deliveries); it may also
 * leave the file under both names, which queue_scan_free notices by the
 * link count and does not reuse. */
int queue_msg_finish(struct queue *q, const char *qid, int sync)
{
	char err[64];
	if (queue_bad_id(qid, err, sizeof(err)) < 0)
		return -1;
	if (queue_pool_put(q, q->msg_fd, qid) < 0 && unlinkat(q->msg_fd, qid, 0) < 0 && errno != ENOENT)
		return -1;
	if (sync && fsync(q->msg_fd) < 0)
		return -1;
	if (unlinkat(q->state_fd, qid, 0) < 0 && errno != ENOENT)
		return -1;
	return 0;
}

/* queue_log - one event line about a queue file */
static void queue_log(enum log_level lvl, const char *event, const char *key, const char *name,
		      const char *reason)
{
	struct log_line l;
	log_begin(&l, lvl, event);
	log_kv(&l, key, name);
	if (reason)
		log_kv(&l, "reason", reason);
	log_end(&l);
}

/* queue_set_aside - move dir/name to corrupt/name (or name.<usec> when
 * that is taken): never delivered, never deleted, kept for a human */
static void queue_set_aside(struct queue *q, int from_fd, const char *name, const char *suffix)
{
	char to[NAME_MAX + 64];
	snprintf(to, sizeof(to), "%s%s", name, suffix);
	if (renameat2(from_fd, name, q->corrupt_fd, to, RENAME_NOREPLACE) == 0)
		return;
	if (errno == EEXIST) {
		struct timeval tv;
		gettimeofday(&tv, NULL);
		snprintf(to, sizeof(to), "%s%s.%lld%06ld", name, suffix, (long long)tv.tv_sec,
			 (long)tv.tv_usec);
	}
	if (renameat(from_fd, name, q->corrupt_fd, to) < 0)
		queue_log(LOG_LEVEL_ERR, "queue_set_aside_failed", "file", name, strerror(errno));
}

/* queue_dir_list - names in a subdirectory (not "." and ".."), sorted */
static char **queue_dir_list(int dfd, size_t *np, char *err, size_t errlen)
{
	int fd = dup(dfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (d == NULL) {
		snprintf(err, errlen, "opendir: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	rewinddir(d);
	char **v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	*np = n;
	return v ? v : xcalloc(1, sizeof(*v));
}

static int queue_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void queue_list_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* queue_scan_tmp - tmp/ holds only messages never acknowledged: drop all */
static int queue_scan_tmp(struct queue *q, char *err, size_t errlen)
{
	size_t n;
	char **v = queue_dir_list(q->tmp_fd, &n, err, errlen);
	if (v == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (unlinkat(q->tmp_fd, v[i], 0) == 0)
			queue_log(LOG_LEVEL_INFO, "queue_tmp_removed", "qid", v[i], "never acknowledged");
		else
			queue_log(LOG_LEVEL_WARN, "queue_tmp_remove_failed", "file", v[i], strerror(errno));
	}
	queue_list_free(v, n);
	return 0;
}


/* queue_scan_msg - load every message in qid (= arrival) order */
static int queue_scan_msg(struct queue *q, queue_scan_found found, void *arg, char *err, size_t errlen)
{
	size_t n;
	char **v = queue_dir_list(q->msg_fd, &n, err, errlen);
	if (v == NULL)
		return -1;
	qsort(v, n, sizeof(*v), queue_name_cmp);
	for (size_t i = 0; i < n; i++) {
		const char *qid = v[i];
		if (!queue_id_valid(qid)) {
			queue_log(LOG_LEVEL_WARN, "queue_corrupt", "file", qid, "not a queue id");
			queue_set_aside(q, q->msg_fd, qid, "");
			continue;
		}
		/* empty: never a committed message (those are synced whole
		 * before their name appears) but a finished one emptied for the
		 * pool whose removal a crash undid: nothing to deliver */
		struct stat st;
		if (fstatat(q->msg_fd, qid, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) && st.st_size == 0 &&
		    unlinkat(q->msg_fd, qid, 0) == 0) {
			queue_log(LOG_LEVEL_INFO, "queue_empty_removed", "qid", qid, "finished, emptied for reuse");
			if (faccessat(q->state_fd, qid, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
				unlinkat(q->state_fd, qid, 0);
			continue;
		}
		struct envelope env;
		char why[256] = "";
		if (queue_msg_load(q, qid, &env, why, sizeof(why)) < 0) {
			if (errno == EBADMSG) {
				queue_log(LOG_LEVEL_ERR, "queue_corrupt", "qid", qid, why);
				queue_set_aside(q, q->msg_fd, qid, "");
				if (faccessat(q->state_fd, qid, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
					queue_set_aside(q, q->state_fd, qid, ".state");
			} else {
				/* an I/O error is not proof of corruption: keep it */
				queue_log(LOG_LEVEL_ERR, "queue_load_failed", "qid", qid, why);
			}
			continue;
		}
		/* a message whose recipients are all final may still owe its
		 * bounce (a crash came before the bounce was committed): the
		 * scheduler decides, from the "dsn" records, and removes it */
		found(arg, &env);
		env_free(&env);
	}
	queue_list_free(v, n);
	return 0;
}

/* queue_scan_state - a state log without its message is left from a crash
 * inside queue_msg_remove (or a set-aside message): remove it */
static int queue_scan_state(struct queue *q, char *err, size_t errlen)
{
	size_t n;
	char **v = queue_dir_list(q->state_fd, &n, err, errlen);
	if (v == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (queue_id_valid(v[i]) && faccessat(q->msg_fd, v[i], F_OK, AT_SYMLINK_NOFOLLOW) == 0)
			continue;
		if (unlinkat(q->state_fd, v[i], 0) == 0)
			queue_log(LOG_LEVEL_INFO, "queue_orphan_state_removed", "qid", v[i], NULL);
	}
	queue_list_free(v, n);
	return 0;
}

/* queue_scan_free - take free/ into the pool; what cannot be reused (a
 * name also left in msg/ by a crash: two links; too many, too large,
 * not a plain file) is removed */
static int queue_scan_free(struct queue *q, char *err, size_t errlen)
{
	size_t n;
	char **v = queue_dir_list(q->free_fd, &n, err, errlen);
	if (v == NULL)
		return -1;
	pthread_mutex_lock(&q->pool_mu);
	q->npool = 0;
	q->pool_kept = 0;
	pthread_mutex_unlock(&q->pool_mu);
	for (size_t i = 0; i < n; i++) {
		if (queue_id_valid(v[i]) && faccessat(q->msg_fd, v[i], F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
			/* the same name in msg/: a removal a crash undid half. The
			 * two may share an inode whose link count a file system
			 * check has not fixed: touch neither, keep it for a human */
			queue_log(LOG_LEVEL_WARN, "queue_free_conflict", "qid", v[i], "also in msg/");
			queue_set_aside(q, q->free_fd, v[i], ".free");
			continue;
		}
		off_t size = 0;
		if (queue_id_valid(v[i]) && queue_pool_reusable(q->free_fd, v[i], &size) &&
		    queue_pool_admit(q, v[i], size) == 0)
			continue;
		unlinkat(q->free_fd, v[i], 0);
	}
	queue_list_free(v, n);
	return 0;
}

int queue_scan(struct queue *q, queue_scan_found found, void *arg, char *err, size_t errlen)
{
	if (queue_scan_tmp(q, err, errlen) < 0 || queue_scan_free(q, err, errlen) < 0 ||
	    queue_scan_msg(q, found, arg, err, errlen) < 0 || queue_scan_state(q, err, errlen) < 0)
		return -1;
	/* make the moves to corrupt/ stick so a set-aside file is not met again */
	if (fsync(q->msg_fd) < 0 || fsync(q->corrupt_fd) < 0) {
		snprintf(err, errlen, "fsync %s: %s", q->dir, strerror(errno));
		return -1;
	}
	return 0;
}
