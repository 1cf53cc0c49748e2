/*
 * sched - the queue manager: decides what to deliver when.
 *
 * Every committed message enters the scheduler (sched_submit, or
 * sched_recover at start-up). Each pending recipient is routed: a local
 * domain goes to Maildir delivery on a worker thread (disk work never runs
 * on the event loop); another domain goes to remote delivery (until that
 * exists, it stays queued and is retried). Outcomes are recorded durably in
 * the queue (queue_rcpt_record) before they are acted on; temporary
 * failures are retried with exponential backoff (retry_min doubling to
 * retry_max); a message whose recipients are all final leaves the queue.
 *
 * Exports:
 *   sched_new/sched_free     the scheduler, its timers and worker threads
 *   sched_submit             a newly committed message (envelope copied)
 *   sched_recover            load every message the queue holds
 *   sched_flush              retry now (one message, or all when qid NULL)
 *   sched_hold/release/delete  operator actions (ternctl queue ...)
 *   sched_list               text listing for `ternctl queue`
 *   sched_pending            messages still queued (for tests and metrics)
 *   sched_drain              stop taking work; wait for running deliveries
 * Trusts: envelopes come from the queue, which parsed them as untrusted.
 */
#ifndef TERN_SCHED_SCHED_H
#define TERN_SCHED_SCHED_H

#include <stddef.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "queue/envelope.h"
#include "queue/queue.h"

struct event_base;
struct sched;
struct lookup_tables;

struct sched *sched_new(struct event_base *base, const struct conf *conf, struct queue *q);
void sched_free(struct sched *s);
/* sched_set_conf - after SIGHUP: new configuration (pointer kept) */
void sched_set_conf(struct sched *s, const struct conf *conf);

void sched_submit(struct sched *s, const struct envelope *env);
int sched_recover(struct sched *s, char *err, size_t errlen);
void sched_flush(struct sched *s, const char *qid);
int sched_hold(struct sched *s, const char *qid, int hold, char *err, size_t errlen);
int sched_delete(struct sched *s, const char *qid, char *err, size_t errlen);
/* sched_list - one block per message: qid, age, size, sender, then each
 * recipient with state, attempts, next attempt and last error */
void sched_list(struct sched *s, struct strbuf *out);
/* sched_show - envelope and headers of one message */
int sched_show(struct sched *s, const char *qid, struct strbuf *out, char *err, size_t errlen);
size_t sched_pending(const struct sched *s);
void sched_drain(struct sched *s);

#endif
