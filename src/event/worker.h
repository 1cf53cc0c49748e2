/*
 * worker - a small thread pool for blocking work (password hashing) that
 * must not stall the event loop. work() runs on a pool thread; done() runs
 * later on the loop thread, in submission order per pool.
 *
 * Exports:
 *   worker_pool_new/free   threads plus a pipe registered with libevent
 *   worker_submit          queue a job; -1 if the pool is stopping
 * Trusts: its callers; work() must not touch loop-owned state.
 */
#ifndef TERN_EVENT_WORKER_H
#define TERN_EVENT_WORKER_H

#include <stddef.h>

struct event_base;
struct worker_pool;

typedef void (*worker_fn)(void *arg);

struct worker_pool *worker_pool_new(struct event_base *base, size_t nthreads);
/* worker_pool_free - waits for running jobs; done() is not called for the rest */
void worker_pool_free(struct worker_pool *p);
int worker_submit(struct worker_pool *p, worker_fn work, worker_fn done, void *arg);

#endif
