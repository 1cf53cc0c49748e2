/*
 * queue_int - what queue.c, queue_commit.c and queue_env.c share; not for
 * other modules (they use queue.h).
 *
 * Exports:
 *   struct queue                    the open store: directory fds, ID state,
 *                                   the commit thread and its lists
 *   queue_commit_start/_stop        the commit thread and its loop event
 *   queue_id_new                    a fresh, time-ordered queue ID
 *   queue_env_parse_hdr             the parser, telling "need more" apart
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

struct queue {
	char *dir;
	int dir_fd, tmp_fd, msg_fd, state_fd, corrupt_fd;
	struct event_base *base; /* NULL: synchronous commits */

	pthread_mutex_t id_mu;
	uint64_t id_last_us;
	unsigned id_counter;

	/* group commit: pending is filled by queue_file_commit, emptied in
	 * one go by the commit thread; done is filled by the commit thread and
	 * emptied on the loop thread when the eventfd fires */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct queue_file *pending, **pending_tail;
	struct queue_file *done, **done_tail;
	int stop;
	int thread_started;
	pthread_t thread;
	int efd;
	struct event *ev;
};

int queue_commit_start(struct queue *q, char *err, size_t errlen);
void queue_commit_stop(struct queue *q);
void queue_id_new(struct queue *q, char out[QUEUE_ID_MAX]);

/* queue_env_parse_hdr - as queue_env_parse, but -2 when p[0..n) ends
 * before the "content" line (read more and retry) */
int queue_env_parse_hdr(const char *p, size_t n, struct envelope *env, size_t *hdr_len, char *err,
			size_t errlen);

/* the end marker: "\nTERN-END <content-length>\n" */
#define QUEUE_TRAILER_TAG "\nTERN-END "
#define QUEUE_TRAILER_MAX (sizeof(QUEUE_TRAILER_TAG) - 1 + 20 + 1)

/* queue_trailer_check - tail = the last tail_len bytes of a file of
 * file_size bytes whose header is hdr_len bytes: 0 and *content_len when
 * the end marker is present and its length accounts for every byte */
int queue_trailer_check(const char *tail, size_t tail_len, uint64_t file_size, uint64_t hdr_len,
			uint64_t *content_len);

#endif
