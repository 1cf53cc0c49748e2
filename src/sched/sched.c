/*
 * sched - the queue manager: every queued message in memory, routed,
 * delivered by worker threads, retried with backoff. See sched.h.
 *
 * Threads: the event loop thread owns every struct sched_msg. A delivery
 * is handed to a worker as a self-contained struct sched_job (copies of
 * every string it needs), so a worker never touches scheduler state; it
 * delivers, records each outcome durably (queue_rcpt_record: fdatasync off
 * the loop), removes the message when it is finished, and hands the job
 * back through a done list and a pipe the loop watches. Fast path: when a
 * job finishes every recipient still pending and no DSN is owed, nothing
 * is recorded; the message is simply removed (see sched_job_run). A
 * message has at most one job at a time (msg->busy); at most 2 x
 * delivery_workers jobs are out at once, so a large queue never floods the
 * pool.
 *
 * Timing: one timer for the earliest next attempt. Each wake-up (timer,
 * finished job, operator action) runs one pass over the messages in
 * arrival order: O(messages) a pass, fine for the queue sizes of a small
 * site; a heap keyed by next attempt can replace the scan later.
 *
 * Remote delivery plugs in through sched_set_remote; without it a remote
 * recipient is deferred ("remote delivery not available yet").
 *
 * DSNs (bounces, delay warnings, success reports) are composed by a
 * worker (deliver/bounce.c reads the original), queued from the loop as
 * new messages from <>, and submitted like any mail; the order that keeps
 * a crash from losing one is described above sched_dsn_start. A local
 * recipient whose name cannot be a Maildir fails permanently (5.1.1).
 * Local delivery uses maildir_deliver_once, checking for an earlier copy
 * only for messages recovered at start-up.
 *
 * Exports: see sched.h (sched_new ... sched_remote_done).
 * Trusts: envelopes come from the queue, which parsed them as untrusted;
 * remote diagnostics are untrusted text and are escaped when listed.
 */
#include "sched/sched.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/log.h"
#include "core/str.h"
#include "core/xalloc.h"
#include "deliver/bounce.h"
#include "deliver/maildir.h"

#define SCHED_HEADERS_MAX (64 * 1024)
#define SCHED_ERR_MAX 512

enum sched_item_kind {
	SCHED_ITEM_LOCAL,  /* the worker delivers into the Maildir */
	SCHED_ITEM_PRESET, /* outcome already known (remote): only record it */
};

/* one recipient inside a job: input from the loop, output from the worker */
struct sched_item {
	size_t idx;
	enum sched_item_kind kind;
	char *addr;
	unsigned notify;            /* the recipient's enum env_notify bits */
	unsigned attempts;          /* in: so far; out: after this attempt */
	enum sched_result result;   /* PRESET: in; LOCAL: out */
	char *text;                 /* diagnostic (owned) */
	/* out */
	enum env_rcpt_state state;
	time_t next_attempt;
	int expired;
	char *record_err;           /* queue_rcpt_record failed: why */
};

/* where a pending recipient is right now */
enum sched_inflight {
	SCHED_INFLIGHT_NONE,   /* waiting for its next attempt */
	SCHED_INFLIGHT_JOB,    /* in a worker job, or its remote outcome awaits recording */
	SCHED_INFLIGHT_REMOTE, /* with the remote delivery hook */
};

struct sched_msg;

/* per recipient in struct sched_msg.dsn: which notifications are done */
enum sched_dsn_flag {
	SCHED_DSN_FINAL = 1, /* failure/success DSN queued, or not owed */
	SCHED_DSN_DELAY = 2, /* delay warning queued, or not owed */
	SCHED_DSN_BUSY = 4,  /* in a DSN being composed or committed */
};

/* one recipient a DSN reports on (copies: a worker composes it) */
struct sched_dsn_rcpt {
	size_t idx;
	enum bounce_action action;
	char *addr;
	char *orcpt;
	char *text;   /* the recorded diagnostic, may be NULL */
};

/* a DSN job: the worker reads the original and composes the message */
struct sched_dsn {
	char *to;             /* the original sender, or the postmaster */
	char *envid;
	enum env_ret ret;
	int postmaster_copy;  /* the original is itself a bounce that failed */
	time_t retry_until;   /* for delayed recipients */
	struct sched_dsn_rcpt *r;
	size_t n;
	/* out */
	struct strbuf text;
	int eightbit;
	int ok;
};

struct sched_job {
	struct sched_job *next;
	struct sched_msg *msg;      /* for the loop only; workers never use it */
	char qid[QUEUE_ID_MAX];
	char *sender;
	char *mail_dir;
	char *hostname;
	time_t arrival;
	uint64_t retry_min, retry_max, lifetime;
	int remove_when_final;      /* no recipient outside this job is pending */
	int all_local;              /* every recipient of the message is local */
	int removed;                /* out: the worker removed the message */
	int recovered;              /* found at start-up: a delivery may have happened unrecorded */
	struct sched_item *items;
	size_t n;
	size_t cap;
	struct sched_dsn *dsn;      /* set: a DSN job, items is empty */
};

/* a DSN whose queue commit is in flight; the commit callback's argument */
struct sched_dsn_commit {
	struct sched_dsn_commit *prev, *next; /* s->commits */
	struct sched *s;                      /* NULL once the scheduler is freed */
	char qid[QUEUE_ID_MAX];               /* the original message */
	struct envelope env;                  /* the DSN's own envelope */
	size_t *idx;                          /* recipients of the original it covers */
	unsigned char *flag;                  /* SCHED_DSN_FINAL or _DELAY, per idx */
	size_t n;
};

struct sched_msg {
	struct envelope env;
	struct sched_msg *hnext;          /* hash chain */
	struct sched_msg *prev, *next;    /* arrival order, for listing and fairness */
	unsigned char *inflight;          /* per recipient: enum sched_inflight */
	int busy;                         /* a job for it is queued or running */
	size_t remote_out;                /* recipients handed to the remote hook */
	int flush;                        /* due now regardless of next_attempt */
	int deleted;                      /* operator deleted it while busy */
	struct sched_item *preset;        /* remote outcomes waiting to be recorded */
	size_t npreset, cappreset;
	unsigned char *dsn;               /* per recipient: enum sched_dsn_flag bits */
	size_t dsn_out;                   /* DSN commits in flight */
	time_t dsn_retry;                 /* a DSN could not be queued: not before this */
	int recovered;                    /* loaded by sched_recover */
};

struct sched {
	struct event_base *base;
	const struct conf *conf;
	struct queue *q;
	/* the messages: hash by qid plus an arrival-ordered list */
	struct sched_msg **buckets;
	size_t nbuckets;
	size_t nmsgs;
	struct sched_msg *head, *tail;
	struct event *ev_kick;
	struct event *ev_timer;
	struct event *ev_done;
	int done_pipe[2];
	/* worker pool */
	pthread_t *threads;
	size_t nthreads;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct sched_job *todo_head, *todo_tail; /* guarded by mu */
	struct sched_job *done_head;             /* guarded by mu */
	int stopping;                            /* guarded by mu */
	size_t jobs_out;                         /* loop thread: jobs given out */
	int draining;
	int drained;
	/* remote seam */
	sched_remote_fn remote_fn;
	void *remote_arg;
	/* DSN commits in flight (their callbacks may outlive us) */
	struct sched_dsn_commit *commits;
	/* counters for stats */
	unsigned long long n_delivered, n_deferred, n_failed, n_expired, n_removed, n_bounces;
};

static void sched_kick(struct sched *s);

const char *sched_result_str(enum sched_result r)
{
	switch (r) {
	case SCHED_RESULT_OK: return "ok";
	case SCHED_RESULT_TEMPFAIL: return "tempfail";
	case SCHED_RESULT_PERMFAIL: return "permfail";
	}
	return "unknown";
}

/* ---------------------------------------------------------------- map */

/* sched_hash - FNV-1a of a queue ID */
static size_t sched_hash(const char *qid)
{
	uint64_t h = 1469598103934665603ULL;
	for (const unsigned char *p = (const unsigned char *)qid; *p; p++) {
		h ^= *p;
		h *= 1099511628211ULL;
	}
	return (size_t)h;
}

/* sched_msg_find - the message with this queue ID, or NULL */
static struct sched_msg *sched_msg_find(const struct sched *s, const char *qid)
{
	for (struct sched_msg *m = s->buckets[sched_hash(qid) & (s->nbuckets - 1)]; m; m = m->hnext)
		if (strcmp(m->env.qid, qid) == 0)
			return m;
	return NULL;
}

/* sched_map_grow - double the bucket array when the load passes 1 */
static void sched_map_grow(struct sched *s)
{
	size_t nb = s->nbuckets * 2;
	struct sched_msg **b = xcalloc(nb, sizeof(*b));
	for (size_t i = 0; i < s->nbuckets; i++) {
		struct sched_msg *m = s->buckets[i];
		while (m) {
			struct sched_msg *nx = m->hnext;
			size_t k = sched_hash(m->env.qid) & (nb - 1);
			m->hnext = b[k];
			b[k] = m;
			m = nx;
		}
	}
	free(s->buckets);
	s->buckets = b;
	s->nbuckets = nb;
}

/* sched_msg_insert - add to the hash and the tail of the list */
static void sched_msg_insert(struct sched *s, struct sched_msg *m)
{
	if (s->nmsgs + 1 > s->nbuckets)
		sched_map_grow(s);
	size_t k = sched_hash(m->env.qid) & (s->nbuckets - 1);
	m->hnext = s->buckets[k];
	s->buckets[k] = m;
	m->prev = s->tail;
	m->next = NULL;
	if (s->tail)
		s->tail->next = m;
	else
		s->head = m;
	s->tail = m;
	s->nmsgs++;
}

/* sched_item_clear - free an item's strings */
static void sched_item_clear(struct sched_item *it)
{
	free(it->addr);
	free(it->text);
	free(it->record_err);
}

/* sched_msg_free - unlink from the map and list and release */
static void sched_msg_free(struct sched *s, struct sched_msg *m)
{
	struct sched_msg **pp = &s->buckets[sched_hash(m->env.qid) & (s->nbuckets - 1)];
	while (*pp && *pp != m)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = m->hnext;
	if (m->prev)
		m->prev->next = m->next;
	else
		s->head = m->next;
	if (m->next)
		m->next->prev = m->prev;
	else
		s->tail = m->prev;
	s->nmsgs--;
	for (size_t i = 0; i < m->npreset; i++)
		sched_item_clear(&m->preset[i]);
	free(m->preset);
	free(m->inflight);
	free(m->dsn);
	env_free(&m->env);
	free(m);
}

/* ------------------------------------------------------------- worker */

/* sched_backoff - retry_min doubled per earlier attempt, capped at retry_max */
static uint64_t sched_backoff(uint64_t rmin, uint64_t rmax, unsigned attempts)
{
	uint64_t d = rmin ? rmin : 1;
	for (unsigned i = 1; i < attempts && d < rmax; i++)
		d = d > UINT64_MAX / 2 ? UINT64_MAX : d * 2;
	return d < rmax ? d : rmax;
}

/* sched_item_outcome - turn a result into the state to record */
static void sched_item_outcome(const struct sched_job *j, struct sched_item *it, time_t now)
{
	it->attempts++;
	it->next_attempt = 0;
	switch (it->result) {
	case SCHED_RESULT_OK:
		it->state = ENV_RCPT_DELIVERED;
		return;
	case SCHED_RESULT_PERMFAIL:
		it->state = ENV_RCPT_FAILED;
		return;
	case SCHED_RESULT_TEMPFAIL:
		break;
	}
	if (now >= j->arrival && (uint64_t)(now - j->arrival) >= j->lifetime) {
		/* too old to keep trying: final failure (the bounce comes later) */
		char buf[SCHED_ERR_MAX];
		snprintf(buf, sizeof(buf), "expired: %s", it->text ? it->text : "temporary failure");
		free(it->text);
		it->text = xstrdup(buf);
		it->state = ENV_RCPT_FAILED;
		it->expired = 1;
		return;
	}
	uint64_t d = sched_backoff(j->retry_min, j->retry_max, it->attempts);
	if (d > (uint64_t)INT32_MAX)
		d = INT32_MAX;
	it->state = ENV_RCPT_PENDING;
	it->next_attempt = now + (time_t)d;
}

/* sched_account_ok - whether a local recipient can name a mailbox at all,
 * by maildir's own rules (a path component each side of the last '@': not
 * empty, no leading '.', no '/' or control byte). A name that can never be
 * delivered is a permanent failure (5.1.1), not something to retry for
 * queue_lifetime: maildir_deliver reports every failure as temporary. */
static int sched_account_ok(const char *addr)
{
	const char *at = strrchr(addr, '@');
	size_t ll = at ? (size_t)(at - addr) : strlen(addr);
	const char *dom = at ? at + 1 : NULL;
	if (ll == 0 || addr[0] == '.' || (dom && (dom[0] == '\0' || dom[0] == '.')))
		return 0;
	for (const unsigned char *p = (const unsigned char *)addr; *p; p++)
		if (*p == '/' || *p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

/* sched_dsn_run - compose a DSN job's message from the original (worker) */
static void sched_dsn_run(struct sched *s, struct sched_job *j)
{
	struct sched_dsn *d = j->dsn;
	int fd = -1;
	off_t off = 0, len = 0;
	char err[SCHED_ERR_MAX] = "";
	struct bounce_fd bf;
	struct bounce_rcpt *br = xcalloc(d->n, sizeof(*br));
	char (*status)[16] = xcalloc(d->n, sizeof(*status));
	char (*mta)[256] = xcalloc(d->n, sizeof(*mta));
	char (*diag)[SCHED_ERR_MAX] = xcalloc(d->n, sizeof(*diag));
	time_t now = time(NULL);
	for (size_t i = 0; i < d->n; i++) {
		const struct sched_dsn_rcpt *r = &d->r[i];
		const char *t = r->text;
		int is_smtp = 0, expired = 0;
		if (t && strncmp(t, "expired: ", 9) == 0) {
			t += 9;
			expired = 1;
		}
		const char *def = r->action == BOUNCE_ACTION_FAILED	 ? "5.0.0"
				  : r->action == BOUNCE_ACTION_DELAYED ? "4.0.0"
								       : "2.0.0";
		bounce_diag_parse(t, def, status[i], sizeof(status[i]), mta[i], sizeof(mta[i]), diag[i],
				  sizeof(diag[i]), &is_smtp);
		if (expired)
			/* RFC 3463: 4.4.7 delivery time expired */
			snprintf(status[i], sizeof(status[i]), "4.4.7");
		br[i].addr = r->addr;
		br[i].orcpt = r->orcpt;
		br[i].action = r->action;
		br[i].status = status[i];
		br[i].remote_mta = mta[i][0] ? mta[i] : NULL;
		br[i].diag_type = is_smtp ? "smtp" : "x-unix";
		br[i].diag = r->action == BOUNCE_ACTION_DELIVERED && !is_smtp ? NULL : (diag[i][0] ? diag[i] : NULL);
		br[i].last_attempt = r->action == BOUNCE_ACTION_DELAYED ? 0 : now;
		br[i].retry_until = r->action == BOUNCE_ACTION_DELAYED ? d->retry_until : 0;
	}
	struct bounce_req req = {
		.hostname = j->hostname,
		.to = d->to,
		.orig_qid = j->qid,
		.envid = d->envid,
		.arrival = j->arrival,
		.now = now,
		.ret = d->ret,
		.postmaster_copy = d->postmaster_copy,
		.rcpts = br,
		.nrcpts = d->n,
	};
	if (queue_msg_content(s->q, j->qid, &fd, &off, &len, err, sizeof(err)) == 0) {
		bf.fd = fd;
		bf.off = off;
		req.read = bounce_read_fd;
		req.read_arg = &bf;
		req.content_len = len > 0 ? (uint64_t)len : 0;
	}
	/* without the content the DSN still goes out and says so */
	d->ok = bounce_compose(&req, &d->text, &d->eightbit, err, sizeof(err)) == 0;
	if (fd >= 0)
		close(fd);
	free(br);
	free(status);
	free(mta);
	free(diag);
}

/* sched_item_record - the outcome durably in the state log (worker) */
static void sched_item_record(struct sched *s, const struct sched_job *j, struct sched_item *it)
{
	char rerr[SCHED_ERR_MAX] = "";
	if (queue_rcpt_record(s->q, j->qid, it->idx, it->state, it->attempts, it->next_attempt, it->text, rerr,
			      sizeof(rerr)) < 0)
		it->record_err = xstrdup(rerr[0] ? rerr : "cannot record recipient state");
}

/* sched_job_run - deliver and record one job (worker thread) */
static void sched_job_run(struct sched *s, struct sched_job *j)
{
	if (j->dsn) {
		sched_dsn_run(s, j);
		return;
	}
	int fd = -1;
	off_t off = 0, len = 0;
	int content_tried = 0;
	char cerr[SCHED_ERR_MAX] = "";
	int all_final = 1;

	for (size_t i = 0; i < j->n; i++) {
		struct sched_item *it = &j->items[i];
		if (it->kind == SCHED_ITEM_LOCAL) {
			if (!content_tried) {
				content_tried = 1;
				if (queue_msg_content(s->q, j->qid, &fd, &off, &len, cerr, sizeof(cerr)) < 0) {
					fd = -1;
					if (cerr[0] == '\0')
						snprintf(cerr, sizeof(cerr), "cannot open message content");
				}
			}
			char id[QUEUE_ID_MAX + 24];
			snprintf(id, sizeof(id), "%s.%zu", j->qid, it->idx);
			if (!sched_account_ok(it->addr)) {
				it->result = SCHED_RESULT_PERMFAIL;
				it->text = xstrdup("5.1.1 invalid mailbox name");
			} else if (fd < 0) {
				it->result = SCHED_RESULT_TEMPFAIL;
				it->text = xstrdup(cerr);
			} else {
				char err[SCHED_ERR_MAX] = "";
				/* a fixed name per (qid, recipient): after a crash the
				 * delivery may already be in the Maildir, unrecorded */
				if (maildir_deliver_once(j->mail_dir, j->hostname, it->addr, fd, off, len, j->sender,
							 j->arrival, id, j->recovered, err, sizeof(err)) == 0) {
					it->result = SCHED_RESULT_OK;
					it->text = xstrdup("delivered to maildir");
				} else {
					it->result = SCHED_RESULT_TEMPFAIL;
					it->text = xstrdup(err[0] ? err : "maildir delivery failed");
				}
			}
		}
		sched_item_outcome(j, it, time(NULL));
		if (it->state == ENV_RCPT_PENDING)
			all_final = 0;
		/* a failure may owe a bounce (a success, a success DSN): the
		 * loop decides, queues it, and only then removes the message */
		if (it->state == ENV_RCPT_FAILED || (it->state == ENV_RCPT_DELIVERED && (it->notify & ENV_NOTIFY_SUCCESS)))
			all_final = 0;
		/* a job that may finish the message records at the end (below);
		 * any other records each outcome at once */
		if (!j->remove_when_final)
			sched_item_record(s, j, it);
	}
	if (fd >= 0)
		close(fd);
	if (!j->remove_when_final)
		return;
	if (!all_final) {
		/* something stays: every outcome durable before it is acted on
		 * (a crash before this repeats at most this job's deliveries,
		 * idempotent for local ones: see maildir_deliver_once) */
		for (size_t i = 0; i < j->n; i++)
			sched_item_record(s, j, &j->items[i]);
		return;
	}
	/*
	 * The fast path: every recipient is delivered and no DSN is owed, so
	 * there is no state to keep: no record, the message just goes.
	 * Crashes: before the removal, msg/QID is found at start-up and
	 * delivered again. A local delivery is exactly-once even so (the
	 * fixed Maildir name per qid and recipient, checked for messages
	 * recovered at start-up). A remote recipient whose 250 came before the
	 * crash is sent again: the accepted at-least-once window of SMTP
	 * (RFC 5321 6.1), the same window as between the 250 and a durable
	 * record before. Removal of a message with only local recipients is
	 * not fsync'd either: if a power loss brings msg/QID back, the
	 * redelivery finds the Maildir copy (not if the user deleted it in
	 * between: then it comes again). With a remote recipient the removal
	 * is made durable, so the window stays as short as it was.
	 */
	if (queue_msg_finish(s->q, j->qid, !j->all_local) == 0) {
		j->removed = 1;
		return;
	}
	/* not removed (and the loop's later attempt may fail too): the
	 * outcomes go on record, so a restart does not deliver again */
	for (size_t i = 0; i < j->n; i++)
		sched_item_record(s, j, &j->items[i]);
}

/* sched_worker - take jobs until told to stop */
static void *sched_worker(void *arg)
{
	struct sched *s = arg;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->stopping && s->todo_head == NULL)
			pthread_cond_wait(&s->cv, &s->mu);
		if (s->stopping)
			break;
		struct sched_job *j = s->todo_head;
		s->todo_head = j->next;
		if (s->todo_head == NULL)
			s->todo_tail = NULL;
		pthread_mutex_unlock(&s->mu);

		sched_job_run(s, j);

		pthread_mutex_lock(&s->mu);
		j->next = s->done_head;
		s->done_head = j;
		/* wake the loop; a full pipe already means a wake-up is pending */
		char c = 1;
		ssize_t w = write(s->done_pipe[1], &c, 1);
		(void)w;
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ------------------------------------------------------- loop thread */

/* sched_dsn_free - release a DSN job's request and result */
static void sched_dsn_free(struct sched_dsn *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->n; i++) {
		free(d->r[i].addr);
		free(d->r[i].orcpt);
		free(d->r[i].text);
	}
	free(d->r);
	free(d->to);
	free(d->envid);
	strbuf_free(&d->text);
	free(d);
}

/* sched_job_free - release a job and its items */
static void sched_job_free(struct sched_job *j)
{
	sched_dsn_free(j->dsn);
	for (size_t i = 0; i < j->n; i++)
		sched_item_clear(&j->items[i]);
	free(j->items);
	free(j->sender);
	free(j->mail_dir);
	free(j->hostname);
	free(j);
}

/* sched_job_add - append an item (addr copied; text left NULL) */
static struct sched_item *sched_job_add(struct sched_job *j, size_t idx, enum sched_item_kind kind,
					const char *addr, unsigned attempts)
{
	if (j->n == j->cap) {
		j->cap = j->cap ? j->cap * 2 : 4;
		j->items = xrealloc(j->items, j->cap * sizeof(*j->items));
	}
	struct sched_item *it = &j->items[j->n++];
	memset(it, 0, sizeof(*it));
	it->idx = idx;
	it->kind = kind;
	it->addr = xstrdup(addr);
	it->attempts = attempts;
	it->notify = idx < j->msg->env.nrcpts ? j->msg->env.rcpts[idx].notify : 0;
	return it;
}

/* sched_rcpt_is_local - route by the domain after the last '@' */
static int sched_rcpt_is_local(const struct sched *s, const char *addr)
{
	const char *at = strrchr(addr, '@');
	if (at == NULL)
		return 1; /* a bare local part can only mean a local mailbox */
	return conf_is_local_domain(s->conf, at + 1, strlen(at + 1));
}

/* sched_msg_log - one log line about a recipient outcome */
static void sched_log_item(struct sched *s, const char *qid, const struct sched_item *it)
{
	struct log_line l;
	const char *event;
	enum log_level lvl = LOG_LEVEL_INFO;
	if (it->state == ENV_RCPT_DELIVERED) {
		event = "delivered";
		s->n_delivered++;
	} else if (it->expired) {
		event = "expired";
		lvl = LOG_LEVEL_WARN;
		s->n_expired++;
	} else if (it->state == ENV_RCPT_FAILED) {
		event = "failed";
		lvl = LOG_LEVEL_WARN;
		s->n_failed++;
	} else {
		event = "deferred";
		s->n_deferred++;
	}
	log_begin(&l, lvl, event);
	log_kv(&l, "qid", qid);
	log_kv(&l, "to", it->addr);
	log_kv(&l, "relay", it->kind == SCHED_ITEM_LOCAL ? "local" : "remote");
	log_kv(&l, "status", it->state == ENV_RCPT_DELIVERED ? "sent"
			     : it->state == ENV_RCPT_FAILED ? (it->expired ? "expired" : "bounced")
							    : "deferred");
	log_kvi(&l, "attempts", it->attempts);
	if (it->state == ENV_RCPT_PENDING)
		log_kvi(&l, "delay", (long long)(it->next_attempt - time(NULL)));
	if (it->state != ENV_RCPT_DELIVERED && it->text)
		log_kv(&l, "reason", it->text);
	log_end(&l);
	if (it->record_err) {
		log_begin(&l, LOG_LEVEL_ERR, "record_failed");
		log_kv(&l, "qid", qid);
		log_kv(&l, "to", it->addr);
		log_kv(&l, "reason", it->record_err);
		log_end(&l);
	}
}

/* sched_msg_finish - the message leaves memory (and the queue, if still there) */
static void sched_msg_finish(struct sched *s, struct sched_msg *m, int removed, const char *why)
{
	if (!removed)
		(void)queue_msg_remove(s->q, m->env.qid);
	struct log_line l;
	log_begin(&l, LOG_LEVEL_INFO, "removed");
	log_kv(&l, "qid", m->env.qid);
	log_kv(&l, "reason", why);
	log_end(&l);
	s->n_removed++;
	sched_msg_free(s, m);
}

/* sched_msg_all_final - no recipient is pending any more */
static int sched_msg_all_final(const struct sched_msg *m)
{
	for (size_t i = 0; i < m->env.nrcpts; i++)
		if (m->env.rcpts[i].state == ENV_RCPT_PENDING)
			return 0;
	return 1;
}

/* ---------------------------------------------------------------- DSN */

/*
 * Delivery status notifications. Order, so that a crash loses no bounce
 * (at worst one is sent twice):
 *   1. the worker records the recipient's outcome (FAILED, or DELIVERED
 *      with NOTIFY=SUCCESS) durably, and then does NOT remove the message;
 *   2. when the message is quiet (no job, no remote attempt, no outcome
 *      waiting to be recorded), a DSN job composes one notification for
 *      every recipient that owes one (one bounce per round);
 *   3. the loop queues it as a new message (sender <>) and commits it;
 *   4. only when that commit is durable are the recipients marked done
 *      and may the original leave the queue.
 * A crash after 1 or 3 leaves the original with final recipients and no
 * record that their DSN was sent: the next start sends it (again).
 * The "done" marks live in memory only (the queue has no record kind for
 * them yet), so a restart also repeats the DSNs of recipients that
 * failed in earlier rounds of a message still queued.
 */

static struct sched_job *sched_job_new(struct sched *s, struct sched_msg *m);
static void sched_job_submit(struct sched *s, struct sched_job *j);

/* sched_postmaster - where notices about failed bounces go */
static const char *sched_postmaster(const struct sched *s, char *buf, size_t n)
{
	if (s->conf->postmaster && s->conf->postmaster[0])
		return s->conf->postmaster;
	snprintf(buf, n, "postmaster@%s", s->conf->hostname ? s->conf->hostname : "localhost");
	return buf;
}

/* sched_is_postmaster - the configured postmaster, or any postmaster@ */
static int sched_is_postmaster(const struct sched *s, const char *addr)
{
	char pm[QUEUE_VALUE_MAX + 16];
	if (str_casecmp_ascii(addr, sched_postmaster(s, pm, sizeof(pm))) == 0)
		return 1;
	const char *at = strrchr(addr, '@');
	size_t ll = at ? (size_t)(at - addr) : strlen(addr);
	return ll == 10 && str_ncasecmp_ascii(addr, "postmaster", 10) == 0;
}

/* sched_log_suppressed - a failure that gets no bounce, once, and why */
static void sched_log_suppressed(const struct sched_msg *m, const char *to, const char *why)
{
	struct log_line l;
	log_begin(&l, LOG_LEVEL_INFO, "bounce_suppressed");
	log_kv(&l, "qid", m->env.qid);
	log_kv(&l, "to", to);
	log_kv(&l, "reason", why);
	log_end(&l);
}

/* sched_dsn_owed - whether recipient i owes a DSN now (*act says which);
 * a final recipient that owes none is marked done here. A delay warning
 * due later lowers *wake to its time. */
static int sched_dsn_owed(const struct sched *s, struct sched_msg *m, size_t i, time_t now,
			  enum bounce_action *act, time_t *wake)
{
	const struct env_rcpt *r = &m->env.rcpts[i];
	unsigned char *f = &m->dsn[i];
	int null_sender = m->env.sender == NULL || m->env.sender[0] == '\0';
	if (*f & SCHED_DSN_BUSY)
		return 0;
	if (r->state == ENV_RCPT_FAILED) {
		if (*f & SCHED_DSN_FINAL)
			return 0;
		const char *why = NULL;
		/* never bounce a bounce: a failed one goes to the postmaster,
		 * once; when that fails too it is only logged */
		if (null_sender && sched_is_postmaster(s, r->addr))
			why = "null sender; recipient is the postmaster";
		else if (!null_sender && (r->notify & ENV_NOTIFY_NEVER))
			why = "NOTIFY=NEVER";
		else if (!null_sender && r->notify && !(r->notify & ENV_NOTIFY_FAILURE))
			why = "NOTIFY without FAILURE";
		if (why) {
			*f |= SCHED_DSN_FINAL;
			sched_log_suppressed(m, r->addr, why);
			return 0;
		}
		*act = BOUNCE_ACTION_FAILED;
		return 1;
	}
	if (null_sender) {
		/* no success or delay reports about a bounce; a delivered
		 * recipient owes nothing (else a bounce recovered at start with
		 * every recipient delivered would never leave the queue) */
		if (r->state == ENV_RCPT_DELIVERED)
			*f |= SCHED_DSN_FINAL;
		return 0;
	}
	if (r->state == ENV_RCPT_DELIVERED) {
		if (*f & SCHED_DSN_FINAL)
			return 0;
		/* remote: the next hop got NOTIFY and reports itself (RFC 3461
		 * 5.2.2); "relayed" needs the client to say it could not */
		if ((r->notify & ENV_NOTIFY_SUCCESS) && sched_rcpt_is_local(s, r->addr)) {
			*act = BOUNCE_ACTION_DELIVERED;
			return 1;
		}
		*f |= SCHED_DSN_FINAL;
		return 0;
	}
	/* pending: a delay warning once, when configured and not refused
	 * (NOTIFY absent means FAILURE,DELAY: RFC 3461 4.1) */
	uint64_t dw = s->conf->delay_warning;
	if (dw == 0 || (*f & SCHED_DSN_DELAY) || (r->notify & ENV_NOTIFY_NEVER) ||
	    (r->notify && !(r->notify & ENV_NOTIFY_DELAY)))
		return 0;
	if (dw > (uint64_t)INT32_MAX)
		dw = INT32_MAX;
	time_t due = m->env.arrival + (time_t)dw;
	if (due > now) {
		if (*wake == 0 || due < *wake)
			*wake = due;
		return 0;
	}
	*act = BOUNCE_ACTION_DELAYED;
	return 1;
}

/* sched_msg_dsn_pending - a final recipient whose DSN is not settled yet */
static int sched_msg_dsn_pending(const struct sched_msg *m)
{
	for (size_t i = 0; i < m->env.nrcpts; i++) {
		if (m->dsn[i] & SCHED_DSN_BUSY)
			return 1;
		if (m->env.rcpts[i].state != ENV_RCPT_PENDING && !(m->dsn[i] & SCHED_DSN_FINAL))
			return 1;
	}
	return 0;
}

/* sched_dsn_start - start a DSN job for what the message owes: 1 started,
 * 0 nothing owed, -1 owed but not now (message busy, held, or an earlier
 * DSN could not be queued and waits for dsn_retry) */
static int sched_dsn_start(struct sched *s, struct sched_msg *m, time_t now, time_t *wake)
{
	/* while draining no job may start: the workers are gone */
	if (m->busy || m->remote_out || m->npreset || m->deleted || m->dsn_out || s->draining)
		return -1;
	size_t *idx = xcalloc(m->env.nrcpts ? m->env.nrcpts : 1, sizeof(*idx));
	enum bounce_action *act = xcalloc(m->env.nrcpts ? m->env.nrcpts : 1, sizeof(*act));
	size_t n = 0;
	for (size_t i = 0; i < m->env.nrcpts; i++)
		if (sched_dsn_owed(s, m, i, now, &act[n], wake))
			idx[n++] = i;
	int r = 0;
	if (n && (m->env.held || m->dsn_retry > now)) {
		if (!m->env.held && (*wake == 0 || m->dsn_retry < *wake))
			*wake = m->dsn_retry;
		r = -1;
	} else if (n) {
		int null_sender = m->env.sender == NULL || m->env.sender[0] == '\0';
		char pm[QUEUE_VALUE_MAX + 16];
		struct sched_job *j = sched_job_new(s, m);
		struct sched_dsn *d = xcalloc(1, sizeof(*d));
		strbuf_init(&d->text);
		d->to = xstrdup(null_sender ? sched_postmaster(s, pm, sizeof(pm)) : m->env.sender);
		d->envid = m->env.envid ? xstrdup(m->env.envid) : NULL;
		/* the postmaster gets the failed bounce's headers, not its copy
		 * of someone's message */
		d->ret = null_sender ? ENV_RET_HDRS : m->env.ret;
		d->postmaster_copy = null_sender;
		uint64_t lt = s->conf->queue_lifetime > (uint64_t)INT32_MAX ? INT32_MAX : s->conf->queue_lifetime;
		d->retry_until = m->env.arrival + (time_t)lt;
		d->r = xcalloc(n, sizeof(*d->r));
		d->n = n;
		for (size_t k = 0; k < n; k++) {
			const struct env_rcpt *er = &m->env.rcpts[idx[k]];
			d->r[k].idx = idx[k];
			d->r[k].action = act[k];
			d->r[k].addr = xstrdup(er->addr);
			d->r[k].orcpt = er->orcpt ? xstrdup(er->orcpt) : NULL;
			d->r[k].text = er->last_error ? xstrdup(er->last_error) : NULL;
			m->dsn[idx[k]] |= SCHED_DSN_BUSY;
		}
		j->dsn = d;
		sched_job_submit(s, j);
		r = 1;
	}
	free(idx);
	free(act);
	return r;
}

/* sched_dsn_unbusy - the DSN for these recipients did not happen */
static void sched_dsn_unbusy(struct sched_msg *m, const size_t *idx, size_t n)
{
	for (size_t k = 0; k < n; k++)
		if (idx[k] < m->env.nrcpts)
			m->dsn[idx[k]] &= (unsigned char)~SCHED_DSN_BUSY;
}

/* sched_dsn_postpone - queueing a DSN failed: retry after retry_min */
static void sched_dsn_postpone(struct sched *s, struct sched_msg *m, const char *why)
{
	uint64_t d = s->conf->retry_min ? s->conf->retry_min : 60;
	if (d > 3600)
		d = 3600;
	m->dsn_retry = time(NULL) + (time_t)d;
	struct log_line l;
	log_begin(&l, LOG_LEVEL_ERR, "bounce_failed");
	log_kv(&l, "qid", m->env.qid);
	log_kv(&l, "reason", why);
	log_kvi(&l, "retry", (long long)d);
	log_end(&l);
}

static void sched_msg_settle(struct sched *s, struct sched_msg *m, int removed);

/* sched_dsn_committed - the DSN is durable (or failed): submit it, mark
 * the original's recipients done, let the original go (loop thread) */
static void sched_dsn_committed(void *arg, int status, const char *reason)
{
	struct sched_dsn_commit *c = arg;
	struct sched *s = c->s;
	if (s) {
		if (c->prev)
			c->prev->next = c->next;
		else
			s->commits = c->next;
		if (c->next)
			c->next->prev = c->prev;
	}
	/* with the scheduler gone the DSN, if committed, is in the queue and
	 * the next start delivers it */
	struct sched_msg *m = s ? sched_msg_find(s, c->qid) : NULL;
	if (s && status != 0) {
		if (m) {
			m->dsn_out--;
			sched_dsn_unbusy(m, c->idx, c->n);
			sched_dsn_postpone(s, m, reason ? reason : "cannot commit the DSN");
			sched_msg_settle(s, m, 0);
		}
		sched_kick(s);
	} else if (s) {
		struct log_line l;
		log_begin(&l, LOG_LEVEL_INFO, "bounce");
		log_kv(&l, "qid", c->qid);
		log_kv(&l, "bounce_qid", c->env.qid);
		log_kv(&l, "to", c->env.rcpts[0].addr);
		log_kvi(&l, "nrcpt", (long long)c->n);
		log_kv(&l, "kind", c->flag[0] == SCHED_DSN_DELAY ? "delay" : "dsn");
		log_end(&l);
		s->n_bounces++;
		sched_submit(s, &c->env);
		if (m) {
			m->dsn_out--;
			for (size_t k = 0; k < c->n; k++) {
				if (c->idx[k] >= m->env.nrcpts)
					continue;
				m->dsn[c->idx[k]] &= (unsigned char)~SCHED_DSN_BUSY;
				m->dsn[c->idx[k]] |= c->flag[k];
				/* the DSN is durable; now record that it was sent (a crash
				 * before this line costs a duplicate DSN, never a lost one) */
				char derr[256];
				if (queue_rcpt_dsn(s->q, c->qid, c->idx[k], c->flag[k], derr, sizeof(derr)) < 0)
					log_event(LOG_LEVEL_WARN, "record_failed", "qid %s: %s", c->qid, derr);
			}
			sched_msg_settle(s, m, 0);
		}
		sched_kick(s);
	}
	env_free(&c->env);
	free(c->idx);
	free(c->flag);
	free(c);
}

/* sched_dsn_apply - a DSN job came back composed: queue it as a new
 * message from <> (loop thread: queue files are created here) */
static void sched_dsn_apply(struct sched *s, struct sched_job *j)
{
	struct sched_msg *m = j->msg;
	struct sched_dsn *d = j->dsn;
	size_t *idx = xcalloc(d->n, sizeof(*idx));
	for (size_t k = 0; k < d->n; k++)
		idx[k] = d->r[k].idx;
	if (m->deleted || !d->ok) {
		/* the operator deleted the original: its DSN goes with it */
		sched_dsn_unbusy(m, idx, d->n);
		if (!d->ok)
			sched_dsn_postpone(s, m, "cannot compose the DSN");
		free(idx);
		return;
	}
	struct sched_dsn_commit *c = xcalloc(1, sizeof(*c));
	env_init(&c->env);
	c->env.sender = xstrdup("");
	c->env.arrival = time(NULL);
	c->env.body = d->eightbit ? ENV_BODY_8BITMIME : ENV_BODY_7BIT;
	env_rcpt_add(&c->env, d->to, NULL, 0);
	char err[SCHED_ERR_MAX] = "";
	struct queue_file *qf = queue_file_create(s->q, &c->env, err, sizeof(err));
	if (qf && queue_file_write(qf, d->text.s ? d->text.s : "", d->text.len) < 0) {
		snprintf(err, sizeof(err), "write DSN: %s", strerror(queue_file_errno(qf)));
		queue_file_abort(qf);
		qf = NULL;
	}
	if (qf == NULL) {
		sched_dsn_unbusy(m, idx, d->n);
		sched_dsn_postpone(s, m, err[0] ? err : "cannot create the DSN");
		env_free(&c->env);
		free(c);
		free(idx);
		return;
	}
	c->s = s;
	memcpy(c->qid, m->env.qid, sizeof(c->qid));
	c->idx = idx;
	c->n = d->n;
	c->flag = xcalloc(d->n, 1);
	for (size_t k = 0; k < d->n; k++)
		c->flag[k] = d->r[k].action == BOUNCE_ACTION_DELAYED ? SCHED_DSN_DELAY : SCHED_DSN_FINAL;
	c->next = s->commits;
	if (s->commits)
		s->commits->prev = c;
	s->commits = c;
	m->dsn_out++;
	queue_file_commit(qf, sched_dsn_committed, c);
}

/* sched_msg_settle - nothing of the message is running: send what DSNs
 * it owes, or let it leave the queue when it is finished (may free m) */
static void sched_msg_settle(struct sched *s, struct sched_msg *m, int removed)
{
	if (m->busy || m->remote_out || m->dsn_out)
		return;
	if (m->deleted) {
		sched_msg_finish(s, m, removed, "deleted");
		return;
	}
	if (m->npreset)
		return; /* the next pass records those first */
	time_t wake = 0;
	if (sched_dsn_start(s, m, time(NULL), &wake) != 0)
		return;
	if (sched_msg_all_final(m))
		sched_msg_finish(s, m, removed, "done");
}

/* sched_job_apply - a job came back: update memory, log, finish */
static void sched_job_apply(struct sched *s, struct sched_job *j)
{
	struct sched_msg *m = j->msg;
	m->busy = 0;
	s->jobs_out--;
	if (j->dsn) {
		sched_dsn_apply(s, j);
		sched_job_free(j);
		sched_msg_settle(s, m, 0);
		return;
	}
	for (size_t i = 0; i < j->n; i++) {
		struct sched_item *it = &j->items[i];
		if (it->idx >= m->env.nrcpts)
			continue;
		struct env_rcpt *r = &m->env.rcpts[it->idx];
		r->state = it->state;
		r->attempts = it->attempts;
		r->next_attempt = it->next_attempt;
		free(r->last_error);
		r->last_error = it->text ? xstrdup(it->text) : NULL;
		m->inflight[it->idx] = SCHED_INFLIGHT_NONE;
		sched_log_item(s, m->env.qid, it);
	}
	int removed = j->removed;
	sched_job_free(j);
	sched_msg_settle(s, m, removed);
}

/* sched_done_cb - workers finished jobs: collect them (loop thread) */
static void sched_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sched *s = arg;
	char drain[256];
	while (read(fd, drain, sizeof(drain)) > 0)
		;
	pthread_mutex_lock(&s->mu);
	struct sched_job *list = s->done_head;
	s->done_head = NULL;
	pthread_mutex_unlock(&s->mu);
	while (list) {
		struct sched_job *nx = list->next;
		sched_job_apply(s, list);
		list = nx;
	}
	sched_kick(s);
}

/* sched_job_new - a job for a message, with the strings a worker needs */
static struct sched_job *sched_job_new(struct sched *s, struct sched_msg *m)
{
	struct sched_job *j = xcalloc(1, sizeof(*j));
	j->msg = m;
	memcpy(j->qid, m->env.qid, sizeof(j->qid));
	j->sender = xstrdup(m->env.sender ? m->env.sender : "");
	j->mail_dir = xstrdup(s->conf->mail_dir ? s->conf->mail_dir : "var/mail");
	j->hostname = xstrdup(s->conf->hostname ? s->conf->hostname : "localhost");
	j->arrival = m->env.arrival;
	j->retry_min = s->conf->retry_min;
	j->retry_max = s->conf->retry_max;
	j->lifetime = s->conf->queue_lifetime;
	j->recovered = m->recovered;
	return j;
}

/* sched_job_submit - hand a job to the pool */
static void sched_job_submit(struct sched *s, struct sched_job *j)
{
	j->msg->busy = 1;
	s->jobs_out++;
	pthread_mutex_lock(&s->mu);
	j->next = NULL;
	if (s->todo_tail)
		s->todo_tail->next = j;
	else
		s->todo_head = j;
	s->todo_tail = j;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* sched_msg_dispatch - start what is due for one message; returns the
 * earliest future attempt time of what is left (0 for none) */
static time_t sched_msg_dispatch(struct sched *s, struct sched_msg *m, time_t now)
{
	struct envelope *e = &m->env;
	time_t wake = 0;
	struct sched_job *j = NULL;
	size_t *remote_idx = NULL;
	size_t nremote = 0;
	int dsn_owed = 0;

	/* DSNs owed go out before anything new starts (a quiet message) */
	if (m->npreset == 0 && m->remote_out == 0) {
		int r = sched_dsn_start(s, m, now, &wake);
		if (r > 0)
			return 0; /* the DSN job's return runs another pass */
		dsn_owed = r < 0 || sched_msg_dsn_pending(m);
	} else {
		dsn_owed = 1;
	}

	/* remote outcomes reported since the last job are recorded first */
	if (m->npreset) {
		j = sched_job_new(s, m);
		for (size_t i = 0; i < m->npreset; i++) {
			struct sched_item *p = &m->preset[i];
			struct sched_item *it = sched_job_add(j, p->idx, SCHED_ITEM_PRESET, p->addr, p->attempts);
			it->result = p->result;
			it->text = p->text;
			p->text = NULL;
			sched_item_clear(p);
		}
		m->npreset = 0;
	}
	/* a held message still records what the remote side reported, but
	 * starts nothing new */
	for (size_t i = 0; i < e->nrcpts && !e->held; i++) {
		struct env_rcpt *r = &e->rcpts[i];
		if (r->state != ENV_RCPT_PENDING || m->inflight[i])
			continue;
		if (!m->flush && r->next_attempt > now) {
			if (wake == 0 || r->next_attempt < wake)
				wake = r->next_attempt;
			continue;
		}
		if (!sched_rcpt_is_local(s, r->addr) && s->remote_fn) {
			m->inflight[i] = SCHED_INFLIGHT_REMOTE;
			if (remote_idx == NULL)
				remote_idx = xcalloc(e->nrcpts, sizeof(*remote_idx));
			remote_idx[nremote++] = i;
			continue;
		}
		if (j == NULL)
			j = sched_job_new(s, m);
		m->inflight[i] = SCHED_INFLIGHT_JOB;
		if (sched_rcpt_is_local(s, r->addr)) {
			sched_job_add(j, i, SCHED_ITEM_LOCAL, r->addr, r->attempts);
		} else {
			/* the seam: no remote delivery yet, so a remote
			 * recipient is deferred and retried like any other */
			struct sched_item *it = sched_job_add(j, i, SCHED_ITEM_PRESET, r->addr, r->attempts);
			it->result = SCHED_RESULT_TEMPFAIL;
			it->text = xstrdup("remote delivery not available yet");
		}
	}
	m->flush = 0;
	if (nremote) {
		m->remote_out += nremote;
		s->remote_fn(s->remote_arg, s, e, remote_idx, nremote);
	}
	free(remote_idx);
	if (j == NULL && m->remote_out == 0 && m->npreset == 0 && !dsn_owed && sched_msg_all_final(m))
		j = sched_job_new(s, m); /* nothing left: a job only to remove it */
	if (j) {
		int others_pending = m->remote_out > 0 || m->npreset > 0;
		for (size_t i = 0; i < e->nrcpts && !others_pending; i++) {
			if (e->rcpts[i].state != ENV_RCPT_PENDING)
				continue;
			int in_job = 0;
			for (size_t k = 0; k < j->n; k++)
				if (j->items[k].idx == i)
					in_job = 1;
			if (!in_job)
				others_pending = 1;
		}
		/* a DSN still owed keeps the message until it is queued */
		j->remove_when_final = !others_pending && !dsn_owed && !sched_msg_dsn_pending(m);
		j->all_local = 1;
		for (size_t i = 0; i < e->nrcpts; i++)
			if (!sched_rcpt_is_local(s, e->rcpts[i].addr))
				j->all_local = 0;
		sched_job_submit(s, j);
	}
	return wake;
}

/* sched_pass - dispatch every due message, then arm the timer */
static void sched_pass(struct sched *s)
{
	if (s->draining)
		return;
	time_t now = time(NULL);
	time_t wake = 0;
	size_t cap = s->nthreads * 2;
	for (struct sched_msg *m = s->head; m; m = m->next) {
		if (m->busy || m->deleted || (m->env.held && m->npreset == 0))
			continue;
		if (s->jobs_out >= cap) {
			/* a finishing job kicks another pass */
			break;
		}
		time_t w = sched_msg_dispatch(s, m, now);
		if (w && (wake == 0 || w < wake))
			wake = w;
	}
	evtimer_del(s->ev_timer);
	if (wake) {
		struct timeval tv = {.tv_sec = wake > now ? wake - now : 0, .tv_usec = 0};
		evtimer_add(s->ev_timer, &tv);
	}
}

/* sched_kick_cb - run a pass (coalesced: many kicks, one pass) */
static void sched_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	sched_pass(arg);
}

/* sched_kick - schedule a pass on the next loop iteration */
static void sched_kick(struct sched *s)
{
	if (!s->draining)
		event_active(s->ev_kick, EV_TIMEOUT, 0);
}

struct sched *sched_new(struct event_base *base, const struct conf *conf, struct queue *q)
{
	struct sched *s = xcalloc(1, sizeof(*s));
	s->base = base;
	s->conf = conf;
	s->q = q;
	s->nbuckets = 64;
	s->buckets = xcalloc(s->nbuckets, sizeof(*s->buckets));
	/* results come back through a pipe so the loop never needs
	 * libevent's own thread support */
	if (pipe2(s->done_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		free(s->buckets);
		free(s);
		return NULL;
	}
	s->ev_done = event_new(base, s->done_pipe[0], EV_READ | EV_PERSIST, sched_done_cb, s);
	s->ev_kick = event_new(base, -1, 0, sched_kick_cb, s);
	s->ev_timer = evtimer_new(base, sched_kick_cb, s);
	event_add(s->ev_done, NULL);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->nthreads = conf->delivery_workers ? (size_t)conf->delivery_workers : 1;
	s->threads = xcalloc(s->nthreads, sizeof(*s->threads));
	for (size_t i = 0; i < s->nthreads; i++) {
		if (pthread_create(&s->threads[i], NULL, sched_worker, s) != 0) {
			s->nthreads = i;
			break;
		}
	}
	if (s->nthreads == 0) {
		log_event(LOG_LEVEL_CRIT, "sched", "cannot start any delivery worker");
		sched_free(s);
		return NULL;
	}
	return s;
}

void sched_set_conf(struct sched *s, const struct conf *conf)
{
	/* jobs copy what they need, so a running job keeps the old values */
	s->conf = conf;
	sched_kick(s);
}

void sched_set_remote(struct sched *s, sched_remote_fn fn, void *arg)
{
	s->remote_fn = fn;
	s->remote_arg = arg;
	sched_kick(s);
}

void sched_remote_done(struct sched *s, const char *qid, size_t idx, enum sched_result r, const char *text)
{
	struct sched_msg *m = sched_msg_find(s, qid);
	/* only an answer to a question we asked counts, and only once */
	if (m == NULL || idx >= m->env.nrcpts || m->inflight[idx] != SCHED_INFLIGHT_REMOTE)
		return;
	m->inflight[idx] = SCHED_INFLIGHT_JOB;
	m->remote_out--;
	if (m->deleted) {
		if (m->remote_out == 0 && !m->busy && !m->dsn_out)
			sched_msg_finish(s, m, 0, "deleted");
		return;
	}
	if (m->npreset == m->cappreset) {
		m->cappreset = m->cappreset ? m->cappreset * 2 : 4;
		m->preset = xrealloc(m->preset, m->cappreset * sizeof(*m->preset));
	}
	struct sched_item *p = &m->preset[m->npreset++];
	memset(p, 0, sizeof(*p));
	p->idx = idx;
	p->kind = SCHED_ITEM_PRESET;
	p->addr = xstrdup(m->env.rcpts[idx].addr);
	p->attempts = m->env.rcpts[idx].attempts;
	p->result = r;
	p->text = text ? xstrndup(text, strnlen(text, SCHED_ERR_MAX)) : NULL;
	sched_kick(s);
}

void sched_submit(struct sched *s, const struct envelope *env)
{
	if (sched_msg_find(s, env->qid)) {
		log_event(LOG_LEVEL_WARN, "sched", "qid %s submitted twice; ignored", env->qid);
		return;
	}
	struct sched_msg *m = xcalloc(1, sizeof(*m));
	env_copy(&m->env, env);
	m->inflight = xcalloc(env->nrcpts ? env->nrcpts : 1, 1);
	m->dsn = xcalloc(env->nrcpts ? env->nrcpts : 1, 1);
	/* notifications already queued before a restart (queue "dsn" records) */
	for (size_t i = 0; i < env->nrcpts; i++)
		m->dsn[i] = (unsigned char)(env->rcpts[i].dsn_sent & (SCHED_DSN_FINAL | SCHED_DSN_DELAY));
	sched_msg_insert(s, m);
	sched_kick(s);
}

/* sched_recover_found - one message from queue_scan: due now */
static void sched_recover_found(void *arg, struct envelope *env)
{
	struct sched *s = arg;
	for (size_t i = 0; i < env->nrcpts; i++)
		env->rcpts[i].next_attempt = 0;
	sched_submit(s, env);
	struct sched_msg *m = sched_msg_find(s, env->qid);
	if (m)
		m->recovered = 1;
}

int sched_recover(struct sched *s, char *err, size_t errlen)
{
	return queue_scan(s->q, sched_recover_found, s, err, errlen);
}

void sched_flush(struct sched *s, const char *qid)
{
	/* a running attempt already is the retry, and a held message waits
	 * for its release: neither keeps a flush for later */
	if (qid) {
		struct sched_msg *m = sched_msg_find(s, qid);
		if (m && !m->busy && !m->env.held)
			m->flush = 1;
	} else {
		for (struct sched_msg *m = s->head; m; m = m->next)
			if (!m->busy && !m->env.held)
				m->flush = 1;
	}
	sched_kick(s);
}

int sched_hold(struct sched *s, const char *qid, int hold, char *err, size_t errlen)
{
	struct sched_msg *m = sched_msg_find(s, qid);
	if (m == NULL || m->deleted) {
		snprintf(err, errlen, "no such message: %s", qid);
		return -1;
	}
	if (queue_msg_hold(s->q, qid, hold ? 1 : 0, err, errlen) < 0)
		return -1;
	m->env.held = hold ? 1 : 0;
	struct log_line l;
	log_begin(&l, LOG_LEVEL_INFO, hold ? "held" : "released");
	log_kv(&l, "qid", qid);
	log_end(&l);
	if (!hold)
		sched_kick(s);
	return 0;
}

int sched_delete(struct sched *s, const char *qid, char *err, size_t errlen)
{
	struct sched_msg *m = sched_msg_find(s, qid);
	if (m == NULL || m->deleted) {
		snprintf(err, errlen, "no such message: %s", qid);
		return -1;
	}
	if (m->busy || m->remote_out || m->dsn_out) {
		/* a worker, the remote client or a DSN commit holds it: finish on return */
		m->deleted = 1;
		return 0;
	}
	if (queue_msg_remove(s->q, qid) < 0) {
		snprintf(err, errlen, "cannot remove %s from the queue", qid);
		return -1;
	}
	sched_msg_finish(s, m, 1, "deleted");
	return 0;
}

/* sched_fmt_dur - a compact duration: 45s, 4m05s, 3h12m, 2d05h */
static void sched_fmt_dur(char *out, size_t n, long long secs)
{
	if (secs < 0)
		secs = 0;
	if (secs < 60)
		snprintf(out, n, "%llds", secs);
	else if (secs < 3600)
		snprintf(out, n, "%lldm%02llds", secs / 60, secs % 60);
	else if (secs < 86400)
		snprintf(out, n, "%lldh%02lldm", secs / 3600, (secs % 3600) / 60);
	else
		snprintf(out, n, "%lldd%02lldh", secs / 86400, (secs % 86400) / 3600);
}

/* sched_add_escaped - untrusted text for a terminal: controls as \xHH
 * (a tab is kept outside quotes: folded header lines start with one) */
static void sched_add_escaped(struct strbuf *out, const char *p, size_t n, int quote)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if ((c < 0x20 && (quote || c != '\t')) || c == 0x7f || (quote && (c == '"' || c == '\\')))
			strbuf_addf(out, "\\x%02x", c);
		else
			strbuf_addc(out, (char)c);
	}
}

/* sched_list_rcpt - one indented recipient line */
static void sched_list_rcpt(const struct sched_msg *m, size_t i, time_t now, struct strbuf *out)
{
	const struct env_rcpt *r = &m->env.rcpts[i];
	strbuf_adds(out, "  ");
	sched_add_escaped(out, r->addr, strlen(r->addr), 0);
	strbuf_addf(out, "  %s  attempts=%u", env_rcpt_state_str(r->state), r->attempts);
	if (r->state == ENV_RCPT_PENDING) {
		if (m->inflight[i])
			strbuf_adds(out, " next=running");
		else if (m->env.held)
			strbuf_adds(out, " next=held");
		else if (r->next_attempt <= now || m->flush)
			strbuf_adds(out, " next=now");
		else {
			char d[32];
			sched_fmt_dur(d, sizeof(d), (long long)(r->next_attempt - now));
			strbuf_addf(out, " next=%s", d);
		}
	}
	if (r->last_error) {
		strbuf_adds(out, " last=\"");
		sched_add_escaped(out, r->last_error, strlen(r->last_error), 1);
		strbuf_adds(out, "\"");
	}
	strbuf_addc(out, '\n');
}

/* sched_list_msg - "QID  size  age  <sender>" and the recipients */
static void sched_list_msg(const struct sched_msg *m, time_t now, struct strbuf *out)
{
	char age[32];
	sched_fmt_dur(age, sizeof(age), (long long)(now - m->env.arrival));
	strbuf_addf(out, "%s  %llu  %s  <", m->env.qid, (unsigned long long)m->env.content_size, age);
	const char *snd = m->env.sender ? m->env.sender : "";
	sched_add_escaped(out, snd, strlen(snd), 0);
	strbuf_adds(out, ">");
	if (m->env.held)
		strbuf_adds(out, "  (held)");
	strbuf_addc(out, '\n');
	for (size_t i = 0; i < m->env.nrcpts; i++)
		sched_list_rcpt(m, i, now, out);
}

void sched_list(struct sched *s, struct strbuf *out)
{
	time_t now = time(NULL);
	for (struct sched_msg *m = s->head; m; m = m->next)
		if (!m->deleted)
			sched_list_msg(m, now, out);
}

/* sched_show_headers - the header section of the content, capped */
static void sched_show_headers(struct sched *s, const char *qid, struct strbuf *out)
{
	int fd;
	off_t off, len;
	char err[SCHED_ERR_MAX] = "";
	if (queue_msg_content(s->q, qid, &fd, &off, &len, err, sizeof(err)) < 0) {
		strbuf_adds(out, "(content unreadable: ");
		sched_add_escaped(out, err, strlen(err), 0);
		strbuf_adds(out, ")\n");
		return;
	}
	size_t want = len < SCHED_HEADERS_MAX ? (size_t)len : SCHED_HEADERS_MAX;
	char *p = xmalloc(want + 1);
	size_t got = 0;
	while (got < want) {
		ssize_t r = pread(fd, p + got, want - got, off + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	/* the header section ends at the first empty line */
	size_t end = got;
	int complete = 0;
	for (size_t i = 0; i < got; i++) {
		if (p[i] != '\n')
			continue;
		size_t k = i + 1;
		if (k < got && p[k] == '\n') {
			end = k;
			complete = 1;
			break;
		}
		if (k + 1 < got && p[k] == '\r' && p[k + 1] == '\n') {
			end = k;
			complete = 1;
			break;
		}
	}
	/* headers are untrusted: keep line ends, escape other controls */
	size_t ls = 0;
	for (size_t i = 0; i < end; i++) {
		if (p[i] == '\n') {
			size_t le = i;
			if (le > ls && p[le - 1] == '\r')
				le--;
			sched_add_escaped(out, p + ls, le - ls, 0);
			strbuf_addc(out, '\n');
			ls = i + 1;
		}
	}
	if (ls < end) {
		sched_add_escaped(out, p + ls, end - ls, 0);
		strbuf_addc(out, '\n');
	}
	if (!complete && got == SCHED_HEADERS_MAX)
		strbuf_adds(out, "(headers truncated at 64 KiB)\n");
	free(p);
}

/* sched_show_field - "name: value" when value is set */
static void sched_show_field(struct strbuf *out, const char *name, const char *v)
{
	if (v == NULL)
		return;
	strbuf_addf(out, "%s: ", name);
	sched_add_escaped(out, v, strlen(v), 0);
	strbuf_addc(out, '\n');
}

int sched_show(struct sched *s, const char *qid, struct strbuf *out, char *err, size_t errlen)
{
	struct sched_msg *m = sched_msg_find(s, qid);
	if (m == NULL || m->deleted) {
		snprintf(err, errlen, "no such message: %s", qid);
		return -1;
	}
	const struct envelope *e = &m->env;
	time_t now = time(NULL);
	struct tm tm;
	char ts[64], age[32];
	gmtime_r(&e->arrival, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	sched_fmt_dur(age, sizeof(age), (long long)(now - e->arrival));
	strbuf_addf(out, "qid: %s\n", e->qid);
	strbuf_addf(out, "arrival: %s (%s ago)\n", ts, age);
	strbuf_addf(out, "size: %llu\n", (unsigned long long)e->content_size);
	strbuf_adds(out, "sender: <");
	sched_add_escaped(out, e->sender ? e->sender : "", e->sender ? strlen(e->sender) : 0, 0);
	strbuf_adds(out, ">\n");
	strbuf_addf(out, "body: %s\n", env_body_str(e->body));
	if (e->smtputf8)
		strbuf_adds(out, "smtputf8: yes\n");
	sched_show_field(out, "envid", e->envid);
	sched_show_field(out, "client", e->client_addr);
	sched_show_field(out, "helo", e->helo);
	sched_show_field(out, "auth", e->auth_user);
	strbuf_addf(out, "held: %s\n", e->held ? "yes" : "no");
	strbuf_adds(out, "recipients:\n");
	for (size_t i = 0; i < e->nrcpts; i++)
		sched_list_rcpt(m, i, now, out);
	strbuf_adds(out, "headers:\n");
	sched_show_headers(s, qid, out);
	return 0;
}

size_t sched_pending(const struct sched *s)
{
	size_t n = 0;
	for (const struct sched_msg *m = s->head; m; m = m->next)
		if (!m->deleted)
			n++;
	return n;
}

void sched_stats(struct sched *s, struct strbuf *out)
{
	size_t held = 0, rcpts = 0;
	for (const struct sched_msg *m = s->head; m; m = m->next) {
		if (m->deleted)
			continue;
		held += m->env.held ? 1 : 0;
		for (size_t i = 0; i < m->env.nrcpts; i++)
			rcpts += m->env.rcpts[i].state == ENV_RCPT_PENDING;
	}
	strbuf_addf(out,
		    "queued=%zu held=%zu pending_rcpts=%zu running=%zu workers=%zu delivered=%llu "
		    "deferred=%llu failed=%llu expired=%llu removed=%llu bounces=%llu\n",
		    sched_pending(s), held, rcpts, s->jobs_out, s->nthreads, s->n_delivered, s->n_deferred,
		    s->n_failed, s->n_expired, s->n_removed, s->n_bounces);
}

void sched_drain(struct sched *s)
{
	if (s->drained)
		return;
	s->draining = 1;
	s->drained = 1;
	evtimer_del(s->ev_timer);
	event_del(s->ev_kick);
	pthread_mutex_lock(&s->mu);
	s->stopping = 1;
	/* jobs not yet started are dropped: their messages stay in the
	 * queue untouched and are retried at the next start */
	struct sched_job *todo = s->todo_head;
	s->todo_head = s->todo_tail = NULL;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	for (size_t i = 0; i < s->nthreads; i++)
		pthread_join(s->threads[i], NULL);
	while (todo) {
		struct sched_job *nx = todo->next;
		todo->msg->busy = 0;
		s->jobs_out--;
		for (size_t i = 0; i < todo->n; i++)
			todo->msg->inflight[todo->items[i].idx] = SCHED_INFLIGHT_NONE;
		sched_job_free(todo);
		todo = nx;
	}
	/* apply what finished, so the log says what was delivered */
	sched_done_cb(s->done_pipe[0], EV_READ, s);
}

void sched_free(struct sched *s)
{
	if (s == NULL)
		return;
	sched_drain(s);
	/* commits still in flight finish in queue_close: their callbacks
	 * must not reach back into a freed scheduler */
	for (struct sched_dsn_commit *c = s->commits; c; c = c->next)
		c->s = NULL;
	s->commits = NULL;
	while (s->head)
		sched_msg_free(s, s->head);
	event_free(s->ev_done);
	event_free(s->ev_kick);
	event_free(s->ev_timer);
	close(s->done_pipe[0]);
	close(s->done_pipe[1]);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s->threads);
	free(s->buckets);
	free(s);
}

int sched_has(const struct sched *s, const char *qid)
{
	const struct sched_msg *m = sched_msg_find(s, qid);
	return m != NULL && !m->deleted;
}
