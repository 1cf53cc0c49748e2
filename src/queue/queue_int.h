/*
 * queue_int - what queue.c, queue_commit.c and queue_env.c share; not for
 * other modules (they use queue.h).
 *
 * Exports:
 *   struct queue                    the open store: directory fds, ID state,
 *                                   the commit threads and their lists
 *   queue_commit_start/_stop        the commit threads and their loop event
 *   queue_id_new                    a fresh, time-ordered queue ID
 *   queue_pool_get/_put             files kept for reuse (free/)
 *   queue_env_parse_hdr             the parser, telling "need more" apart,
 *                                   and the file's format version
 *   queue_trailer_check             validate the end marker against the size
 * Trusts: nothing from disk.
 */
#ifndef TERN_QUEUE_QUEUE_INT_H
#define TERN_QUEUE_QUEUE_INT_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "queue/queue.h"

/* a header (envelope text) larger than this is refused as hostile */
#define QUEUE_HDR_MAX (4u << 20)
/* the write-through buffer of a message being received */
#define QUEUE_WBUF_SIZE (64u * 1024)
#define QUEUE_REASON_MAX 256

/* free/: finished queue files kept (up to QUEUE_POOL_MAX) to be written
 * by new messages instead of allocating and freeing an inode per message;
 * a file over QUEUE_POOL_FILE_MAX bytes is removed instead (freeing its
 * blocks costs the same either way). A kept file of at most
 * QUEUE_POOL_KEEP_MAX bytes keeps its blocks too, while the pool holds at
 * most QUEUE_POOL_KEEP_BYTES so (the next message overwrites them: no block
 * freed, discarded and allocated again per message); others are emptied.
 * The pool is as large as a burst's backlog, so that the files a burst
 * made are kept when it drains: every one removed would free an inode,
 * which on ext4 without a journal the next allocations in its group scan
 * past for minutes (recently_deleted) */
#define QUEUE_POOL_MAX 4096
#define QUEUE_POOL_FILE_MAX (256u * 1024)
#define QUEUE_POOL_KEEP_MAX (64u * 1024)
#define QUEUE_POOL_KEEP_BYTES (16u << 20)
/* commit threads: each makes one file durable at a time, so the flushes
 * of several messages are in flight together (the block layer merges
 * them; one thread would wait for each in turn) */
#define QUEUE_COMMIT_THREADS 8

struct queue {
	char *dir;
	int dir_fd, tmp_fd, msg_fd, state_fd, corrupt_fd, free_fd;

	/* names in free/ we may take (a stack; any thread), each with the
	 * bytes it kept; pool_kept is their sum */
	pthread_mutex_t pool_mu;
	struct queue_pooled {
		char name[QUEUE_ID_MAX];
		uint64_t kept;
	} *pool;
	size_t npool;
	uint64_t pool_kept;
	size_t pool_max;          /* QUEUE_POOL_MAX (a test may set less) */
	uint64_t pool_keep_bytes; /* QUEUE_POOL_KEEP_BYTES (likewise) */
	struct event_base *base; /* NULL: synchronous commits */

	pthread_mutex_t id_mu;
	uint64_t id_last_us;
	unsigned id_counter;

	/* commits: pending is filled by queue_file_commit and emptied a file
	 * at a time by the commit threads; done is filled by them and emptied
	 * on the loop thread when the eventfd fires */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct queue_file *pending, **pending_tail;
	struct queue_file *done, **done_tail;
	int stop;
	size_t nthreads;
	pthread_t threads[QUEUE_COMMIT_THREADS];
	int efd;
	struct event *ev;

	/* the shared fsync of msg/ (group commit): fsyncs started and the
	 * number of the last one finished with its errno */
	pthread_mutex_t ds_mu;
	pthread_cond_t ds_cv;
	int ds_running;
	uint64_t ds_started, ds_done;
	int ds_err;
};

int queue_commit_start(struct queue *q, char *err, size_t errlen);
/* queue_pool_get - a name in free/ to take (1), or 0 when the pool is empty */
int queue_pool_get(struct queue *q, char out[QUEUE_ID_MAX]);
/* queue_pool_put - keep dir/name (a finished or abandoned queue file) in
 * free/ for reuse: 0 kept (the name is gone from dir), -1 not (pool full,
 * too large, not a plain file: the caller removes it) */
int queue_pool_put(struct queue *q, int dir_fd, const char *name);
void queue_commit_stop(struct queue *q);
void queue_id_new(struct queue *q, char out[QUEUE_ID_MAX]);

/* queue_env_parse_hdr - as queue_env_parse, but -2 when p[0..n) ends
 * before the "content" line (read more and retry); *version (may be NULL)
 * is the file's format version (1 or 2) on success */
int queue_env_parse_hdr(const char *p, size_t n, struct envelope *env, size_t *hdr_len, int *version,
			char *err, size_t errlen);

/* the space a version 2 file reserves between the header and the content
 * for queue_file_prepend; a longer prepend is copied at commit. It is also
 * the largest gap a reader accepts. */
#define QUEUE_RESERVE 4096u

/* the end marker: version 1 "\nTERN-END <content-length>\n", version 2
 * "\nTERN-END <gap> <content-length>\n" */
#define QUEUE_TRAILER_TAG "\nTERN-END "
#define QUEUE_TRAILER_MAX (sizeof(QUEUE_TRAILER_TAG) - 1 + 20 + 1 + 20 + 1)

/* queue_trailer_check - tail = the last tail_len bytes of a file of
 * file_size bytes whose header is hdr_len bytes, in format version: 0,
 * *gap (bytes between header and content, NUL; always 0 in version 1) and
 * *content_len when the end marker is present and its numbers account for
 * every byte of the file */
int queue_trailer_check(const char *tail, size_t tail_len, uint64_t file_size, uint64_t hdr_len, int version,
			uint64_t *gap, uint64_t *content_len);

#endif
