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
 * Delivery status notifications (RFC 3464, composed by deliver/bounce.h):
 * recipients that failed (permanently, or by expiry after queue_lifetime:
 * status 4.4.7) get one bounce per round to the sender, unless NOTIFY
 * excludes FAILURE; a message from <> that fails is never bounced: the
 * postmaster (conf postmaster, default postmaster@hostname) gets one
 * notice, and a failure of that is only logged (event=bounce_suppressed).
 * Local deliveries with NOTIFY=SUCCESS get a "delivered" report; pending
 * recipients older than delay_warning (0 = off) get one delay warning
 * when NOTIFY is absent or includes DELAY. Each DSN is a new queued
 * message from <>, logged as event=bounce qid= bounce_qid= to= nrcpt=,
 * and is durable before the original leaves the queue.
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
 *   sched_show               envelope and headers of one message
 *   sched_stats              counters for `ternctl stats`
 *   sched_set_remote         plug in remote delivery (the SMTP client)
 *   sched_remote_done        remote delivery reports one recipient's outcome
 *   sched_has                whether a message is queued (for replies)
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
/* sched_list - one block per message, in arrival order:
 *   "QID  SIZE  AGE  <SENDER>[  (held)]"
 *   "  ADDR  STATE  attempts=N[ next=WHEN][ last=\"ERROR\"]"  per recipient
 * WHEN is now, running, held or a delay (45s, 4m05s, 3h12m, 2d05h);
 * untrusted text has control bytes (and in ERROR '"' and '\\') as \xHH */
void sched_list(struct sched *s, struct strbuf *out);
/* sched_show - envelope fields ("name: value" lines), the recipients as in
 * sched_list, then "headers:" and the header section (at most 64 KiB) */
int sched_show(struct sched *s, const char *qid, struct strbuf *out, char *err, size_t errlen);
size_t sched_pending(const struct sched *s);
void sched_drain(struct sched *s);
/* sched_stats - "key=value" counters, one line (bounces= counts DSNs queued) */
void sched_stats(struct sched *s, struct strbuf *out);
/* sched_has - 1 when the message is in the scheduler (and not deleted) */
int sched_has(const struct sched *s, const char *qid);

/* The seam remote delivery plugs into. Until a hook is set, a remote
 * recipient is a temporary failure "remote delivery not available yet".
 * The hook runs on the event loop with the message's envelope (valid only
 * during the call) and the indexes of the recipients to attempt; it must
 * later call sched_remote_done once per index, on the loop thread (it may
 * do so before it returns). Outcomes are then recorded durably by a worker
 * before they are acted on. */
enum sched_result {
	SCHED_RESULT_OK,       /* delivered */
	SCHED_RESULT_TEMPFAIL, /* retry with backoff (until queue_lifetime) */
	SCHED_RESULT_PERMFAIL, /* final failure (bounce) */
};
const char *sched_result_str(enum sched_result r);
typedef void (*sched_remote_fn)(void *arg, struct sched *s, const struct envelope *env, const size_t *idx,
				size_t n);
void sched_set_remote(struct sched *s, sched_remote_fn fn, void *arg);
/* sched_remote_done - text: the diagnostic (remote reply), may be NULL */
void sched_remote_done(struct sched *s, const char *qid, size_t idx, enum sched_result r, const char *text);

#endif
