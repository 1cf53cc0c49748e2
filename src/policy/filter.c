/*
 * filter - milters and mail authentication for one SMTP connection, at
 * every stage and at the end of each message. See filter.h for the path
 * of a message and which messages are verified or signed.
 *
 * Exports (one line each; prototypes in filter.h):
 *   filter_env_new/_ref/_unref  shared per configuration: the milter chain
 *   filter_new / filter_free    one per connection
 *   filter_stage                ops->stage_check
 *   filter_write                the content tee
 *   filter_commit               ops->msg_commit: end of message to 250
 *   filter_txn_end              ops->txn_end
 *   filter_busy                 the session waits for the filter
 *   filter_backlog              content queued toward the milters
 *
 * How it never blocks: milter stages and mail authentication answer
 * through callbacks; every callback only records what it got and
 * schedules the filter's own event (filter_kick), whose handler takes the
 * next step and, when the session is answered, calls the owner's resume
 * last (the owner may free the filter there, never from inside a milter,
 * DNS or queue callback). Writing a message anew after edits copies a
 * slice (FILTER_COPY_SLICE) per loop turn. Re-signing an edited message
 * and the quarantine hold (an fsync) run on the worker pool.
 *
 * The end of a message (filter_commit):
 *   1. milter end-of-message and mailauth_finish, in parallel;
 *   2. a milter's refusal or discard, then the milters' envelope changes
 *      (CHGFROM, ADDRCPT, DELRCPT; no recipient left: discard), then
 *      mail authentication's refusal (DMARC p=reject);
 *   3. if anything must change in the stored message (envelope, header
 *      edits, a new body, forged A-R fields to remove): queue_file_restart
 *      and a copy of the old content through filter_edit;
 *   4. if the message is signed and its content changed: sign the final
 *      content (mailauth_sign_content, on a worker thread, reading it back
 *      after a second restart, then copied again unchanged);
 *   5. queue_file_prepend(A-R + signatures), queue_file_commit, the hold
 *      of a quarantined message, then smtp_session_commit_done.
 *
 * Trusts: see filter.h.
 * Implements: milter modifications as Sendmail and Postfix apply them;
 * RFC 8601 5; RFC 6376 (signing the final content).
 */
#include "policy/filter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/log.h"
#include "core/str.h"
#include "event/worker.h"
#include "policy/filter_edit.h"
#include "policy/mailauth.h"
#include "policy/milter.h"
#include "queue/queue.h"

#define FILTER_COPY_SLICE (256 * 1024) /* octets copied per loop turn */

struct filter_env {
	int refs;
	struct event_base *base;
	const struct conf *conf;
	struct dns *dns;
	struct queue *queue;
	struct worker_pool *workers;
	struct milter_chain *chain; /* NULL without milters */
};

/* one RCPT as the client gave it, and the envelope recipients it added */
struct filter_rcpt {
	char *addr;
	size_t first, n;
};

/* a milter modification, copied out of the end-of-message callback */
struct filter_mod {
	enum milter_mod_kind kind;
	unsigned index;
	char *name, *value, *milter;
};

/* what a job on the worker pool does and returns */
enum filter_job_kind { FILTER_JOB_SIGN, FILTER_JOB_HOLD };

struct filter_job {
	struct filter *f; /* NULL once the filter is gone: the result is dropped */
	enum filter_job_kind kind;
	/* sign */
	struct mailauth_conf mconf;
	char domain[256];
	int fd;
	off_t off, len;
	struct strbuf out;
	/* hold */
	struct queue *queue;
	char qid[QUEUE_ID_MAX];
	int rc;
	char err[256];
};

/* per message (MAIL to its end) */
struct filter_txn {
	int active;             /* the MAIL stage ran */
	int eom;                /* filter_commit ran: the end of message is ours */
	int milter;             /* the milters are in this transaction */
	int milter_done;        /* their end of message ran (no ABORT owed) */
	int qid_set;            /* the queue id went to milters and mailauth */
	int verify, sign;
	struct mailauth_conf mconf;
	struct mailauth *ma;
	struct filter_rcpt *rcpts;
	size_t nrcpts;
	int rcpt_noted;         /* the RCPT being checked is the last note */
	/* end of message */
	struct queue_file *qf;  /* ours until committed or aborted */
	int eom_wait;           /* callbacks still to come */
	struct smtp_verdict mverdict;
	struct filter_mod *mods;
	size_t nmods;
	int body_replaced;
	struct strbuf body;
	int have_auth;
	struct smtp_verdict averdict;
	struct strbuf prepend;
	int auth_quarantine, forged_ar;
	char sign_domain[256];
	char summary[256];
	int quarantine;
	char quarantine_why[256];
	int env_changed;
	int hdr_mods;
	/* writing the content anew */
	int old_fd;
	off_t old_len, copy_pos, old_off;
	int edited;             /* headers or body differ from what was received */
	int resigning;          /* the second copy, after signing, runs */
	int resigned;
	struct strbuf sigs;
	size_t ar_removed;
	struct strbuf actions;  /* for the log line: "addheader,chgfrom,..." */
	/* the commit */
	int commit_status, commit_errno;
	char commit_reason[128];
};

struct filter {
	struct filter_env *fe;
	char addr[64];
	unsigned short port;
	char *name;
	char session_id[32];
	int local;
	filter_resume_cb resume;
	void *resume_arg;
	struct smtp_session *s;
	struct milter_sess *ms;  /* after CONNECT, with milters */
	struct event *ev;        /* runs next */
	void (*next)(struct filter *f);
	int busy;                /* the session waits for an answer */
	int in_call;             /* inside filter_stage / filter_commit */
	int committing;          /* queue_file_commit in flight */
	int freed;               /* filter_free came while committing */
	struct filter_job *job;  /* on the worker pool */
	enum smtp_stage stage;
	struct smtp_verdict stage_verdict;
	struct filter_txn t;
};

static void filter_destroy(struct filter *f);

/* ------------------------------------------------------------- the env */

/* filter_env_new - see filter.h */
struct filter_env *filter_env_new(const struct filter_env_conf *c, char *err, size_t errlen)
{
	struct filter_env *fe = calloc(1, sizeof(*fe));
	if (fe == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	fe->refs = 1;
	fe->base = c->base;
	fe->conf = c->conf;
	fe->dns = c->dns;
	fe->queue = c->queue;
	fe->workers = c->workers;
	const struct conf *cf = c->conf;
	if (cf->milters.n > 0) {
		struct milter_chain_conf mc = {
			.addrs = (const char *const *)cf->milters.v,
			.n = cf->milters.n,
			.connect_timeout = (unsigned)cf->milter_connect_timeout,
			.cmd_timeout = (unsigned)cf->milter_command_timeout,
			.eom_timeout = (unsigned)cf->milter_eom_timeout,
			.on_error = strcmp(cf->milter_default_action, "accept") == 0 ? MILTER_DEFAULT_ACCEPT
										 : MILTER_DEFAULT_TEMPFAIL,
			.hostname = cf->hostname,
			.max_body = (size_t)cf->max_message_size + 65536,
		};
		char e[400];
		fe->chain = milter_chain_new(c->base, &mc, e, sizeof(e));
		if (fe->chain == NULL) {
			snprintf(err, errlen, "milters: %s", e);
			free(fe);
			return NULL;
		}
	}
	return fe;
}

/* filter_env_ref - one more user */
void filter_env_ref(struct filter_env *fe)
{
	fe->refs++;
}

/* filter_env_unref - the last user frees the milter chain */
void filter_env_unref(struct filter_env *fe)
{
	if (fe == NULL || --fe->refs > 0)
		return;
	if (fe->chain)
		milter_chain_free(fe->chain);
	free(fe);
}

/* ------------------------------------------------------------- helpers */

/* filter_log_start - a line with the connection's fields (and qid) */
static void filter_log_start(const struct filter *f, struct log_line *l, enum log_level lvl,
			     const char *event)
{
	log_begin(l, lvl, event);
	log_kv(l, "session", f->session_id);
	log_kv(l, "client", f->addr);
	if (f->s && smtp_session_envelope(f->s)->qid[0])
		log_kv(l, "qid", smtp_session_envelope(f->s)->qid);
}

/* filter_kick - run f->next from the event loop, soon */
static void filter_kick(struct filter *f, void (*next)(struct filter *f))
{
	f->next = next;
	event_active(f->ev, EV_TIMEOUT, 1);
}

/* filter_on_event - the filter's own event: one step */
static void filter_on_event(evutil_socket_t fd, short what, void *arg)
{
	struct filter *f = arg;
	(void)fd;
	(void)what;
	void (*next)(struct filter *) = f->next;
	f->next = NULL;
	if (next)
		next(f); /* may answer the session and resume: f may be gone */
}

/* filter_resumed - after answering the session: the owner's turn, last */
static void filter_resumed(struct filter *f)
{
	if (!f->in_call && f->resume)
		f->resume(f->resume_arg); /* may free f */
}

/* mods_free - the copied modifications */
static void mods_free(struct filter_txn *t)
{
	for (size_t i = 0; i < t->nmods; i++) {
		free(t->mods[i].name);
		free(t->mods[i].value);
		free(t->mods[i].milter);
	}
	free(t->mods);
	t->mods = NULL;
	t->nmods = 0;
}

/* txn_clear - forget the message (a queue file still ours is aborted) */
static void txn_clear(struct filter *f)
{
	struct filter_txn *t = &f->t;
	if (t->qf)
		queue_file_abort(t->qf);
	if (t->ma)
		mailauth_free(t->ma);
	for (size_t i = 0; i < t->nrcpts; i++)
		free(t->rcpts[i].addr);
	free(t->rcpts);
	mods_free(t);
	strbuf_free(&t->body);
	strbuf_free(&t->prepend);
	strbuf_free(&t->sigs);
	strbuf_free(&t->actions);
	memset(t, 0, sizeof(*t));
	t->old_fd = -1;
}

/* action_note - one word for the log line's milter= list */
static void action_note(struct filter_txn *t, const char *word)
{
	if (t->actions.len)
		strbuf_addc(&t->actions, ',');
	strbuf_adds(&t->actions, word);
}

/* ------------------------------------------------------ the connection */

/* filter_new - see filter.h */
struct filter *filter_new(struct filter_env *fe, const struct filter_client *ci,
			  filter_resume_cb resume, void *arg)
{
	struct filter *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return NULL;
	f->ev = event_new(fe->base, -1, 0, filter_on_event, f);
	f->name = ci->name ? strdup(ci->name) : NULL;
	if (f->ev == NULL || (ci->name && f->name == NULL)) {
		if (f->ev)
			event_free(f->ev);
		free(f->name);
		free(f);
		return NULL;
	}
	filter_env_ref(fe);
	f->fe = fe;
	snprintf(f->addr, sizeof(f->addr), "%s", ci->addr ? ci->addr : "unknown");
	snprintf(f->session_id, sizeof(f->session_id), "%s", ci->session_id ? ci->session_id : "-");
	f->port = ci->port;
	f->local = ci->local;
	f->resume = resume;
	f->resume_arg = arg;
	f->t.old_fd = -1;
	return f;
}

/* filter_destroy - release everything; nothing can call back any more */
static void filter_destroy(struct filter *f)
{
	if (f->job)
		f->job->f = NULL; /* its done() frees it and drops the result */
	txn_clear(f);
	if (f->ms)
		milter_sess_free(f->ms);
	event_free(f->ev);
	filter_env_unref(f->fe);
	free(f->name);
	free(f);
}

/* filter_free - see filter.h; a commit in flight keeps the memory until
 * its callback (the queue calls it exactly once) */
void filter_free(struct filter *f)
{
	if (f == NULL)
		return;
	if (f->busy) {
		struct log_line l;
		filter_log_start(f, &l, LOG_LEVEL_CRIT, "filter_free_busy");
		log_end(&l);
	}
	f->resume = NULL;
	if (f->committing) {
		f->freed = 1;
		f->s = NULL;
		return;
	}
	filter_destroy(f);
}

/* filter_busy - see filter.h */
int filter_busy(const struct filter *f)
{
	return f->busy;
}

/* filter_backlog - see filter.h */
size_t filter_backlog(const struct filter *f)
{
	return f->ms ? milter_sess_backlog(f->ms) : 0;
}

/* --------------------------------------------------------------- stages */

/* stage_answer - hand the stage's verdict to the session */
static void stage_answer(struct filter *f)
{
	struct filter_txn *t = &f->t;
	enum smtp_verdict_kind k = f->stage_verdict.kind;
	if (f->stage == SMTP_STAGE_RCPT && k != SMTP_VERDICT_CONTINUE && k != SMTP_VERDICT_DISCARD &&
	    t->rcpt_noted && t->nrcpts > 0) {
		/* the session takes the refused RCPT's recipients out again:
		 * their indexes will be reused, so forget the note */
		free(t->rcpts[--t->nrcpts].addr);
	}
	f->busy = 0;
	smtp_session_stage_done(f->s, &f->stage_verdict);
	filter_resumed(f);
}

/* stage_milter_cb - a milter stage decided: answer from our own event */
static void stage_milter_cb(void *arg, const struct smtp_verdict *v)
{
	struct filter *f = arg;
	f->stage_verdict = *v;
	if (v->kind != SMTP_VERDICT_CONTINUE && f->stage_verdict.why[0] == '\0')
		snprintf(f->stage_verdict.why, sizeof(f->stage_verdict.why), "milter");
	filter_kick(f, stage_answer);
}

/* txn_begin - the MAIL stage: which checks this message gets */
static void txn_begin(struct filter *f, struct smtp_session *s)
{
	txn_clear(f);
	struct filter_txn *t = &f->t;
	const struct conf *c = f->fe->conf;
	const struct smtp_client_info *ci = smtp_session_client(s);
	const char *user = smtp_session_auth_user(s);
	t->active = 1;
	t->verify = c->mail_auth && f->fe->dns != NULL && !f->local && ci->kind == SMTP_LISTENER_MX &&
		    !ci->trusted && user == NULL;
	t->sign = c->dkim_sign && (user != NULL || ci->trusted || f->local);
	t->mconf = (struct mailauth_conf){
		.base = f->fe->base,
		.dns = f->fe->dns,
		.authserv_id = c->hostname,
		.verify = t->verify,
		.dmarc_enforce = (int)c->dmarc_enforce,
		.dkim_key_dir = c->dkim_key_dir,
		.dkim_selector = c->dkim_selector,
		.sign = t->sign,
	};
	if (t->verify || t->sign) {
		const struct envelope *env = smtp_session_envelope(s);
		t->ma = mailauth_new(&t->mconf, f->addr, smtp_session_helo(s), env->sender ? env->sender : "");
		if (t->ma == NULL) {
			struct log_line l;
			filter_log_start(f, &l, LOG_LEVEL_ERR, "mailauth_failed");
			log_kv(&l, "error", "cannot start mail authentication");
			log_end(&l);
		}
	}
}

/* rcpt_note - remember the RCPT as given and the recipients it added */
static void rcpt_note(struct filter *f, struct smtp_session *s)
{
	struct filter_txn *t = &f->t;
	size_t first = 0, n = 0;
	const char *a = smtp_session_rcpt(s, &first, &n);
	t->rcpt_noted = 0;
	struct filter_rcpt *v = realloc(t->rcpts, (t->nrcpts + 1) * sizeof(*v));
	if (v == NULL)
		return; /* DELRCPT then matches envelope addresses only */
	t->rcpts = v;
	v[t->nrcpts].addr = strdup(a);
	v[t->nrcpts].first = first;
	v[t->nrcpts].n = n;
	if (v[t->nrcpts].addr) {
		t->nrcpts++;
		t->rcpt_noted = 1;
	}
}

/* filter_stage - see filter.h */
void filter_stage(struct filter *f, enum smtp_stage stage, struct smtp_session *s)
{
	f->s = s;
	f->stage = stage;
	f->busy = 1;
	f->in_call++;
	smtp_verdict_set(&f->stage_verdict, SMTP_VERDICT_CONTINUE, NULL, NULL);
	struct milter_macros m = {0};
	const struct envelope *env = smtp_session_envelope(s);
	m.auth_user = smtp_session_auth_user(s);
	m.mail_addr = env->sender;
	int asked = 0;
	switch (stage) {
	case SMTP_STAGE_CONNECT:
		if (f->fe->chain) {
			const struct smtp_client_info *ci = smtp_session_client(s);
			struct milter_conninfo mi = {
				/* a local submission looks like Postfix's: localhost */
				.client_addr = f->local ? "127.0.0.1" : f->addr,
				.client_port = f->port,
				.client_name = f->local ? "localhost" : f->name,
				.tls = ci->tls,
				.session_id = f->session_id,
			};
			f->ms = milter_sess_new(f->fe->chain, &mi);
			milter_sess_connect(f->ms, stage_milter_cb, f);
			asked = 1;
		}
		break;
	case SMTP_STAGE_HELO:
		if (f->ms) {
			milter_sess_helo(f->ms, smtp_session_helo(s), stage_milter_cb, f);
			asked = 1;
		}
		break;
	case SMTP_STAGE_MAIL:
		txn_begin(f, s);
		if (f->ms) {
			f->t.milter = 1;
			milter_sess_mail(f->ms, env->sender ? env->sender : "", smtp_session_esmtp_args(s), &m,
					 stage_milter_cb, f);
			asked = 1;
		}
		break;
	case SMTP_STAGE_RCPT:
		rcpt_note(f, s);
		if (f->ms && f->t.milter) {
			m.rcpt_addr = smtp_session_rcpt(s, NULL, NULL);
			milter_sess_rcpt(f->ms, m.rcpt_addr, smtp_session_esmtp_args(s), &m, stage_milter_cb, f);
			asked = 1;
		}
		break;
	case SMTP_STAGE_DATA:
		if (f->ms && f->t.milter) {
			milter_sess_data(f->ms, stage_milter_cb, f);
			asked = 1;
		}
		break;
	}
	f->in_call--;
	if (!asked) {
		/* nothing to wait for: answer within the call */
		f->in_call++;
		stage_answer(f);
		f->in_call--;
	}
}

/* filter_write - see filter.h */
void filter_write(struct filter *f, const char *p, size_t n)
{
	struct filter_txn *t = &f->t;
	if (!t->qid_set && f->s && smtp_session_envelope(f->s)->qid[0]) {
		/* the queue file exists now: {i} for the milters, qid= in logs */
		const char *qid = smtp_session_envelope(f->s)->qid;
		t->qid_set = 1;
		if (t->milter && f->ms)
			milter_sess_set_qid(f->ms, qid);
		if (t->ma)
			mailauth_set_qid(t->ma, qid);
	}
	if (t->milter && f->ms && !t->milter_done)
		milter_sess_content(f->ms, p, n);
	if (t->ma)
		mailauth_write(t->ma, p, n);
}

/* filter_txn_end - see filter.h */
void filter_txn_end(struct filter *f)
{
	if (f->busy && f->t.eom) {
		/* never while the end of message runs: the session waits for it */
		struct log_line l;
		filter_log_start(f, &l, LOG_LEVEL_CRIT, "filter_txn_end_busy");
		log_end(&l);
		return;
	}
	if (f->ms && f->t.milter && !f->t.milter_done)
		milter_sess_abort(f->ms);
	txn_clear(f);
}

/* ------------------------------------------------------- end of message */

static void eom_apply(struct filter *f);
static void copy_begin(struct filter *f);
static void copy_step(struct filter *f);
static void eom_answer(struct filter *f);

/* eom_log - the one line per message: outcome, authentication, milters */
static void eom_log(struct filter *f, const char *result, const char *why)
{
	struct filter_txn *t = &f->t;
	const struct envelope *env = smtp_session_envelope(f->s);
	struct log_line l;
	filter_log_start(f, &l, LOG_LEVEL_INFO, "filter");
	log_kv(&l, "result", result);
	log_kv(&l, "from", env->sender ? env->sender : "");
	log_kvi(&l, "nrcpt", (long long)env->nrcpts);
	if (t->have_auth && t->summary[0])
		log_kv(&l, "auth", t->summary);
	if (t->have_auth && t->sign_domain[0])
		log_kv(&l, "signed", t->sign_domain);
	if (t->resigned)
		log_kvi(&l, "resigned", 1);
	if (t->actions.len)
		log_kv(&l, "milter", t->actions.s);
	if (t->quarantine)
		log_kv(&l, "quarantine", t->quarantine_why[0] ? t->quarantine_why : "yes");
	if (t->ar_removed)
		log_kvi(&l, "ar_removed", (long long)t->ar_removed);
	if (why && why[0])
		log_kv(&l, "why", why);
	log_end(&l);
}

/* eom_verdict - the message is refused or discarded: abort, answer */
static void eom_verdict(struct filter *f, const struct smtp_verdict *v)
{
	struct filter_txn *t = &f->t;
	if (t->qf) {
		queue_file_abort(t->qf);
		t->qf = NULL;
	}
	eom_log(f, smtp_verdict_kind_str(v->kind), v->why);
	f->busy = 0;
	smtp_session_commit_verdict(f->s, v);
	filter_resumed(f);
}

/* eom_fail - a local failure at the end of message: 451, logged */
static void eom_fail(struct filter *f, const char *why, int err)
{
	struct log_line l;
	filter_log_start(f, &l, LOG_LEVEL_ERR, "filter_error");
	log_kv(&l, "error", why);
	if (err)
		log_kv(&l, "errno", strerror(err));
	log_end(&l);
	struct smtp_verdict v;
	smtp_verdict_set(&v, SMTP_VERDICT_TEMPFAIL, NULL, why);
	eom_verdict(f, &v);
}

/* eom_milter_cb - the milters' end of message: keep verdict and edits */
static void eom_milter_cb(void *arg, const struct smtp_verdict *v, const struct milter_mods *mods)
{
	struct filter *f = arg;
	struct filter_txn *t = &f->t;
	t->mverdict = *v;
	if (v->kind != SMTP_VERDICT_CONTINUE && t->mverdict.why[0] == '\0')
		snprintf(t->mverdict.why, sizeof(t->mverdict.why), "milter");
	if (v->kind == SMTP_VERDICT_CONTINUE && mods != NULL) {
		t->mods = calloc(mods->n ? mods->n : 1, sizeof(*t->mods));
		if (t->mods == NULL && mods->n) {
			smtp_verdict_set(&t->mverdict, SMTP_VERDICT_TEMPFAIL, NULL, "out of memory");
		} else {
			for (size_t i = 0; i < mods->n; i++) {
				const struct milter_mod *m = &mods->v[i];
				struct filter_mod *c = &t->mods[t->nmods++];
				c->kind = m->kind;
				c->index = m->index;
				c->name = m->name ? strdup(m->name) : NULL;
				c->value = strdup(m->value ? m->value : "");
				c->milter = m->milter ? strdup(m->milter) : NULL;
				if (c->value == NULL || (m->name && c->name == NULL))
					smtp_verdict_set(&t->mverdict, SMTP_VERDICT_TEMPFAIL, NULL, "out of memory");
				if (m->kind == MILTER_MOD_ADDHEADER || m->kind == MILTER_MOD_INSHEADER ||
				    m->kind == MILTER_MOD_CHGHEADER)
					t->hdr_mods = 1;
			}
		}
		if (mods->body_replaced) {
			t->body_replaced = 1;
			strbuf_add(&t->body, mods->body.s ? mods->body.s : "", mods->body.len);
			action_note(t, "replbody");
		}
	}
	if (--t->eom_wait == 0)
		filter_kick(f, eom_apply);
}

/* eom_auth_cb - mail authentication's result */
static void eom_auth_cb(void *arg, struct mailauth_result *r)
{
	struct filter *f = arg;
	struct filter_txn *t = &f->t;
	t->have_auth = 1;
	t->averdict = r->verdict;
	if (r->verdict.kind != SMTP_VERDICT_CONTINUE && t->averdict.why[0] == '\0')
		snprintf(t->averdict.why, sizeof(t->averdict.why), "mailauth");
	strbuf_add(&t->prepend, r->prepend.s ? r->prepend.s : "", r->prepend.len);
	t->auth_quarantine = r->quarantine;
	t->forged_ar = r->forged_ar;
	snprintf(t->sign_domain, sizeof(t->sign_domain), "%s", r->sign_domain);
	snprintf(t->summary, sizeof(t->summary), "%s", r->summary);
	if (--t->eom_wait == 0)
		filter_kick(f, eom_apply);
}

/* filter_commit - see filter.h */
void filter_commit(struct filter *f, struct queue_file *qf, struct smtp_session *s)
{
	struct filter_txn *t = &f->t;
	f->s = s;
	f->busy = 1;
	t->qf = qf;
	t->eom = 1;
	f->in_call++;
	smtp_verdict_set(&t->mverdict, SMTP_VERDICT_CONTINUE, NULL, NULL);
	int milters = t->milter && f->ms != NULL;
	t->eom_wait = milters + (t->ma != NULL);
	if (milters) {
		t->milter_done = 1; /* the milters' transaction ends with it: no ABORT */
		milter_sess_eom(f->ms, eom_milter_cb, f);
	}
	if (t->ma)
		mailauth_finish(t->ma, eom_auth_cb, f);
	if (t->eom_wait == 0)
		eom_apply(f);
	f->in_call--;
}

/* str_eq_addr - two addresses, ASCII case-insensitive */
static int str_eq_addr(const char *a, const char *b)
{
	return a && b && str_casecmp_ascii(a, b) == 0;
}

/* envelope_mods - CHGFROM, DELRCPT, ADDRCPT, QUARANTINE into the envelope
 * (recipients removed before any are added); -1 when the message ended
 * here (no recipient left: discarded) */
static int envelope_mods(struct filter *f)
{
	struct filter_txn *t = &f->t;
	struct envelope *env = smtp_session_envelope(f->s);
	size_t n0 = env->nrcpts;
	unsigned char *del = calloc(n0 ? n0 : 1, 1);
	if (del == NULL) {
		eom_fail(f, "out of memory", ENOMEM);
		return -1;
	}
	size_t ndel = 0;
	for (size_t i = 0; i < t->nmods; i++) {
		const struct filter_mod *m = &t->mods[i];
		if (m->kind != MILTER_MOD_DELRCPT)
			continue;
		action_note(t, "delrcpt");
		/* the RCPT as the client gave it: every recipient it expanded to */
		for (size_t k = 0; k < t->nrcpts; k++)
			if (str_eq_addr(t->rcpts[k].addr, m->value))
				for (size_t j = t->rcpts[k].first; j < t->rcpts[k].first + t->rcpts[k].n && j < n0; j++)
					del[j] = 1;
		for (size_t j = 0; j < n0; j++)
			if (str_eq_addr(env->rcpts[j].addr, m->value))
				del[j] = 1;
	}
	size_t k = 0;
	for (size_t j = 0; j < n0; j++) {
		if (del[j]) {
			free(env->rcpts[j].addr);
			free(env->rcpts[j].orcpt);
			free(env->rcpts[j].last_error);
			ndel++;
			continue;
		}
		env->rcpts[k++] = env->rcpts[j];
	}
	env->nrcpts = k;
	free(del);
	if (ndel)
		t->env_changed = 1;
	for (size_t i = 0; i < t->nmods; i++) {
		const struct filter_mod *m = &t->mods[i];
		switch (m->kind) {
		case MILTER_MOD_CHGFROM: {
			char *v = strdup(m->value);
			if (v == NULL) {
				eom_fail(f, "out of memory", ENOMEM);
				return -1;
			}
			free(env->sender);
			env->sender = v;
			t->env_changed = 1;
			action_note(t, "chgfrom");
			break;
		}
		case MILTER_MOD_ADDRCPT:
			if (m->value[0] && env_rcpt_find(env, m->value) < 0) {
				env_rcpt_add(env, m->value, NULL, 0);
				t->env_changed = 1;
			}
			action_note(t, "addrcpt");
			break;
		case MILTER_MOD_QUARANTINE:
			t->quarantine = 1;
			snprintf(t->quarantine_why, sizeof(t->quarantine_why), "%s",
				 m->value[0] ? m->value : "milter");
			action_note(t, "quarantine");
			break;
		default:
			break;
		}
	}
	if (env->nrcpts == 0) {
		struct smtp_verdict v;
		smtp_verdict_set(&v, SMTP_VERDICT_DISCARD, NULL, "milter removed every recipient");
		eom_verdict(f, &v);
		return -1;
	}
	return 0;
}

/* eom_prepend_commit - A-R and signatures before the content, commit */
static void eom_prepend_commit(struct filter *f);

/* eom_apply - both answers are in: refuse, or edit, sign and commit */
static void eom_apply(struct filter *f)
{
	struct filter_txn *t = &f->t;
	if (t->mverdict.kind != SMTP_VERDICT_CONTINUE) {
		eom_verdict(f, &t->mverdict);
		return;
	}
	if (envelope_mods(f) < 0)
		return;
	if (t->have_auth && t->averdict.kind != SMTP_VERDICT_CONTINUE) {
		eom_verdict(f, &t->averdict);
		return;
	}
	if (t->have_auth && t->auth_quarantine && f->fe->conf->dmarc_enforce && !t->quarantine) {
		t->quarantine = 1;
		snprintf(t->quarantine_why, sizeof(t->quarantine_why), "dmarc");
	}
	if (t->hdr_mods || t->body_replaced || t->env_changed || (t->have_auth && t->forged_ar)) {
		copy_begin(f);
		return;
	}
	eom_prepend_commit(f);
}

/* ------------------------------------------------- writing it anew */

/* read_at - n octets of the old content at pos; -1 with errno */
static int read_at(int fd, char *buf, size_t n, off_t pos)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, buf + got, n - got, pos + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = EIO; /* the file is shorter than the queue said */
			return -1;
		}
		got += (size_t)r;
	}
	return 0;
}

/* header_mods - the milters' header edits in the order received; one a
 * milter got wrong (checked again here) is logged and left out */
static void header_mods(struct filter *f, struct filter_edit *e)
{
	struct filter_txn *t = &f->t;
	for (size_t i = 0; i < t->nmods; i++) {
		const struct filter_mod *m = &t->mods[i];
		int r;
		switch (m->kind) {
		case MILTER_MOD_ADDHEADER:
			r = filter_edit_add(e, m->name ? m->name : "", m->value);
			break;
		case MILTER_MOD_INSHEADER:
			r = filter_edit_insert(e, m->index, m->name ? m->name : "", m->value);
			break;
		case MILTER_MOD_CHGHEADER:
			r = filter_edit_change(e, m->index, m->name ? m->name : "", m->value);
			break;
		default:
			continue;
		}
		if (r < 0) {
			struct log_line l;
			filter_log_start(f, &l, LOG_LEVEL_WARN, "milter_edit_refused");
			log_kv(&l, "edit", milter_mod_kind_str(m->kind));
			log_kv(&l, "name", m->name ? m->name : "-");
			log_kv(&l, "milter", m->milter ? m->milter : "-");
			log_end(&l);
			continue;
		}
		action_note(t, milter_mod_kind_str(m->kind));
	}
}

/* copy_begin - start the content over and write its header section
 * (edited) now; the body follows in slices (copy_step) */
static void copy_begin(struct filter *f)
{
	struct filter_txn *t = &f->t;
	int fd;
	off_t off, len;
	if (queue_file_restart(t->qf, &fd, &off, &len) < 0) {
		int e = errno;
		eom_fail(f, e == EINVAL ? "the milters' envelope cannot be stored" : "queue restart failed", e);
		return;
	}
	t->old_fd = fd;
	t->old_off = off;
	t->old_len = len;
	t->copy_pos = 0;
	if (t->resigning) {
		filter_kick(f, copy_step); /* the signed content back, as it is */
		return;
	}
	size_t want = (uint64_t)len < FILTER_EDIT_HDR_MAX ? (size_t)len : FILTER_EDIT_HDR_MAX;
	char *buf = malloc(want ? want : 1);
	if (buf == NULL || read_at(fd, buf, want, off) < 0) {
		int e = buf ? errno : ENOMEM;
		free(buf);
		eom_fail(f, "cannot read the message back", e);
		return;
	}
	struct filter_edit e;
	filter_edit_init(&e);
	size_t body_off = 0;
	if (filter_edit_parse(&e, buf, want, (off_t)want == len, &body_off) < 0) {
		free(buf);
		filter_edit_free(&e);
		if (!t->hdr_mods && !t->body_replaced && !(t->have_auth && t->forged_ar)) {
			/* only the envelope changed: the content goes back as it is */
			filter_kick(f, copy_step);
			return;
		}
		struct smtp_verdict v;
		smtp_verdict_set(&v, SMTP_VERDICT_REJECT, "552 5.3.4 Message header section too large",
				 "header section too large to edit");
		eom_verdict(f, &v);
		return;
	}
	/* the fields end at a line that is no field, not at the empty line:
	 * readers disagree on where such a header section ends (mailauth
	 * looked for forged fields up to the empty line) */
	int no_empty_line = body_off < want && buf[body_off] != '\n' &&
			    !(buf[body_off] == '\r' && body_off + 1 < want && buf[body_off + 1] == '\n');
	free(buf);
	header_mods(f, &e);
	int split = 0;
	if (t->have_auth && t->forged_ar) {
		t->ar_removed = filter_edit_drop_ours(&e, f->fe->conf->hostname);
		/* a forged field beyond such a line is made body for every
		 * reader: an empty line goes before it */
		split = no_empty_line && !t->body_replaced;
	}
	t->edited = e.changed || t->body_replaced || split;
	struct strbuf out;
	strbuf_init(&out);
	filter_edit_write(&e, &out);
	filter_edit_free(&e);
	if (split)
		strbuf_add(&out, "\r\n", 2);
	if (t->body_replaced) {
		strbuf_add(&out, "\r\n", 2);
		strbuf_add(&out, t->body.s ? t->body.s : "", t->body.len);
		t->copy_pos = len; /* nothing of the old body */
	} else {
		t->copy_pos = (off_t)body_off;
	}
	int r = out.len ? queue_file_write(t->qf, out.s, out.len) : 0;
	strbuf_free(&out);
	if (r < 0) {
		eom_fail(f, "queue write failed", queue_file_errno(t->qf));
		return;
	}
	filter_kick(f, copy_step);
}

static void copy_done(struct filter *f);

/* copy_step - one slice of the old content into the new */
static void copy_step(struct filter *f)
{
	struct filter_txn *t = &f->t;
	off_t left = t->old_len - t->copy_pos;
	if (left > 0) {
		size_t take = left < FILTER_COPY_SLICE ? (size_t)left : FILTER_COPY_SLICE;
		char *buf = malloc(take);
		if (buf == NULL || read_at(t->old_fd, buf, take, t->old_off + t->copy_pos) < 0) {
			int e = buf ? errno : ENOMEM;
			free(buf);
			eom_fail(f, "cannot read the message back", e);
			return;
		}
		int r = queue_file_write(t->qf, buf, take);
		free(buf);
		if (r < 0) {
			eom_fail(f, "queue write failed", queue_file_errno(t->qf));
			return;
		}
		t->copy_pos += (off_t)take;
	}
	if (t->copy_pos < t->old_len) {
		filter_kick(f, copy_step);
		return;
	}
	copy_done(f);
}

/* ------------------------------------------------------- worker jobs */

/* job_work - on a pool thread: sign, or record the hold (fsync) */
static void job_work(void *arg)
{
	struct filter_job *j = arg;
	if (j->kind == FILTER_JOB_HOLD) {
		j->rc = queue_msg_hold(j->queue, j->qid, 1, j->err, sizeof(j->err));
		return;
	}
	/* the From domain of the final content first; the domain mail
	 * authentication chose when that one has no key */
	j->rc = mailauth_sign_content(&j->mconf, NULL, j->fd, j->off, j->len, &j->out, j->err,
				      sizeof(j->err));
	if (j->rc == 1 && j->domain[0])
		j->rc = mailauth_sign_content(&j->mconf, j->domain, j->fd, j->off, j->len, &j->out, j->err,
					      sizeof(j->err));
}

static void resign_done(struct filter *f, struct filter_job *j);
static void hold_done(struct filter *f, struct filter_job *j);

/* job_done - back on the loop thread */
static void job_done(void *arg)
{
	struct filter_job *j = arg;
	struct filter *f = j->f;
	if (f != NULL) {
		f->job = NULL;
		if (j->kind == FILTER_JOB_HOLD)
			hold_done(f, j);
		else
			resign_done(f, j);
	}
	strbuf_free(&j->out);
	free(j);
}

static void job_step(struct filter *f);

/* job_run - on the pool, or here without one (its done() then runs from
 * the filter's event, as it would from the pool's) */
static void job_run(struct filter *f, struct filter_job *j)
{
	j->f = f;
	f->job = j;
	if (f->fe->workers && worker_submit(f->fe->workers, job_work, job_done, j) == 0)
		return;
	job_work(j);
	filter_kick(f, job_step);
}

/* job_step - finish a job run without the pool */
static void job_step(struct filter *f)
{
	if (f->job)
		job_done(f->job);
}

/* ----------------------------------------------------------- signing */

/* copy_done - the content is written anew; sign it if it changed */
static void copy_done(struct filter *f)
{
	struct filter_txn *t = &f->t;
	if (t->resigning) {
		t->resigning = 0;
		t->resigned = 1;
		eom_prepend_commit(f);
		return;
	}
	/* only a message mail authentication found a key for (sign_domain)
	 * is signed again: without one there is nothing to redo */
	if (!(t->sign && t->edited && t->have_auth && t->sign_domain[0])) {
		eom_prepend_commit(f);
		return;
	}
	/* the signatures mail authentication made cover what was received:
	 * read the final content back (a second restart) and sign that */
	int fd;
	off_t off, len;
	if (queue_file_restart(t->qf, &fd, &off, &len) < 0) {
		eom_fail(f, "queue restart failed", errno);
		return;
	}
	t->old_fd = fd;
	t->old_off = off;
	t->old_len = len;
	struct filter_job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		eom_fail(f, "out of memory", ENOMEM);
		return;
	}
	j->kind = FILTER_JOB_SIGN;
	j->mconf = t->mconf;
	snprintf(j->domain, sizeof(j->domain), "%s", t->sign_domain);
	j->fd = fd;
	j->off = off;
	j->len = len;
	strbuf_init(&j->out);
	job_run(f, j);
}

/* resign_done - signatures over the final content; copy it back */
static void resign_done(struct filter *f, struct filter_job *j)
{
	struct filter_txn *t = &f->t;
	if (j->rc < 0 || j->rc == 1) {
		/* mail still goes out, unsigned: log why */
		struct log_line l;
		filter_log_start(f, &l, LOG_LEVEL_WARN, "dkim_sign_failed");
		log_kv(&l, "error", j->rc == 1 ? "no key for the From domain of the edited message" : j->err);
		log_end(&l);
		t->sign_domain[0] = '\0';
	}
	strbuf_reset(&t->sigs);
	strbuf_add(&t->sigs, j->out.s ? j->out.s : "", j->out.len);
	t->resigning = 1;
	t->copy_pos = 0;
	filter_kick(f, copy_step);
}

/* without_signatures - the fields of text except DKIM-Signature */
static void without_signatures(const struct strbuf *text, struct strbuf *out)
{
	struct filter_edit e;
	filter_edit_init(&e);
	size_t body_off;
	if (text->len && filter_edit_parse(&e, text->s, text->len, 1, &body_off) == 0)
		while (filter_edit_change(&e, 1, "DKIM-Signature", "") == 0 && e.changed)
			e.changed = 0;
	filter_edit_write(&e, out);
	filter_edit_free(&e);
}

/* ------------------------------------------------------------ commit */

static void eom_commit_cb(void *arg, int status, const char *reason);

/* eom_prepend_commit - A-R and signatures before the content, commit */
static void eom_prepend_commit(struct filter *f)
{
	struct filter_txn *t = &f->t;
	struct strbuf pre;
	strbuf_init(&pre);
	if (t->have_auth) {
		if (t->resigned) {
			without_signatures(&t->prepend, &pre);
			strbuf_add(&pre, t->sigs.s ? t->sigs.s : "", t->sigs.len);
		} else {
			strbuf_add(&pre, t->prepend.s ? t->prepend.s : "", t->prepend.len);
		}
	}
	if (pre.len && queue_file_prepend(t->qf, pre.s, pre.len) < 0) {
		/* the file already failed: the commit reports it */
		struct log_line l;
		filter_log_start(f, &l, LOG_LEVEL_WARN, "queue_prepend_failed");
		log_kv(&l, "error", strerror(errno));
		log_end(&l);
	}
	strbuf_free(&pre);
	struct queue_file *qf = t->qf;
	t->qf = NULL; /* the commit's now */
	f->committing = 1;
	queue_file_commit(qf, eom_commit_cb, f);
}

/* eom_commit_cb - the queue's answer (never inside queue_file_commit) */
static void eom_commit_cb(void *arg, int status, const char *reason)
{
	struct filter *f = arg;
	int e = errno;
	f->committing = 0;
	if (f->freed) {
		filter_destroy(f);
		return;
	}
	struct filter_txn *t = &f->t;
	t->commit_status = status;
	t->commit_errno = status == 0 ? 0 : (e ? e : EIO);
	snprintf(t->commit_reason, sizeof(t->commit_reason), "%s", reason ? reason : "");
	if (status == 0 && t->quarantine) {
		/* durably held before the 250: the scheduler never sees it
		 * deliverable (a crash right after the commit loses the hold) */
		struct filter_job *j = calloc(1, sizeof(*j));
		if (j != NULL) {
			j->kind = FILTER_JOB_HOLD;
			j->queue = f->fe->queue;
			snprintf(j->qid, sizeof(j->qid), "%s", smtp_session_envelope(f->s)->qid);
			strbuf_init(&j->out);
			job_run(f, j);
			return;
		}
	}
	filter_kick(f, eom_answer);
}

/* hold_done - the hold is recorded (or not: the scheduler still holds it
 * until a restart) */
static void hold_done(struct filter *f, struct filter_job *j)
{
	if (j->rc < 0) {
		struct log_line l;
		filter_log_start(f, &l, LOG_LEVEL_ERR, "hold_failed");
		log_kv(&l, "error", j->err);
		log_end(&l);
	}
	filter_kick(f, eom_answer);
}

/* eom_answer - the commit's outcome to the session: 250 or 451/452 */
static void eom_answer(struct filter *f)
{
	struct filter_txn *t = &f->t;
	struct envelope *env = smtp_session_envelope(f->s);
	f->busy = 0;
	if (t->commit_status == 0) {
		if (t->quarantine)
			env->held = 1;
		eom_log(f, "queued", NULL);
		smtp_session_commit_done(f->s, 0, 0, NULL);
	} else {
		eom_log(f, "failed", t->commit_reason);
		smtp_session_commit_done(f->s, -1, t->commit_errno, t->commit_reason[0] ? t->commit_reason : NULL);
	}
	filter_resumed(f);
}
