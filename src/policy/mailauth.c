/*
 * mailauth - SPF, DKIM and DMARC for one message, DKIM signing, the
 * Authentication-Results field and forged-field detection. See
 * mailauth.h for the interface and the policy.
 *
 * Exports: mailauth_new, mailauth_set_qid, mailauth_write,
 * mailauth_finish, mailauth_free, mailauth_sign_content.
 *
 * Flow: mailauth_new starts SPF (verify). mailauth_write feeds every byte
 * to the DKIM verifier, buffers the header section (capped) and, when the
 * empty line ends it, reads the From domain, looks for forged A-R fields,
 * starts the DMARC policy lookup and sets up the signer (which then gets
 * the buffered header and every later byte). mailauth_finish signs, starts
 * the DKIM key lookups and arms one timer: the deadline while anything is
 * pending, then an immediate one when all is in, so the callback always
 * runs from the event loop. A lookup still pending at the deadline is
 * cancelled and counts as a temperror.
 *
 * Trusts: nothing in the message (header parsing is dmarc.c's and
 * authres.c's, bounded), nor DNS; the configuration and key files.
 * Standards: RFC 7489 6.6 (order of evaluation), RFC 8601 (result field,
 * 5: forged fields), RFC 6376 and RFC 7208 through dkim.c and spf.c.
 */
#include "policy/mailauth.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/str.h"
#include "core/xalloc.h"
#include "dns/dns.h"
#include "policy/authres.h"
#include "policy/dmarc.h"
#include "policy/spf.h"
#include "smtp/smtp_reply.h"

struct mailauth {
	/* configuration (copied) */
	struct event_base *base;
	struct dns *dns;
	char *authserv_id, *key_dir, *selector;
	int verify, enforce, sign;
	unsigned timeout_ms;
	unsigned (*random100)(void *ctx);
	void *random_ctx;
	/* the transaction */
	char *ip, *helo, *mail_from;
	char qid[64];
	char spf_domain[DMARC_DOMAIN_MAX + 1]; /* MAIL FROM domain (HELO for <>); "" */
	/* the header section */
	struct strbuf hdr;
	int hdr_done, hdr_over, bol, bol_cr;
	int from_rc;                            /* dmarc_from_domain's */
	char from_domain[DMARC_DOMAIN_MAX + 1];
	char from_err[128];
	/* SPF */
	struct spf_check *spf;
	int spf_pending;
	enum spf_result spf_result;
	/* DKIM verification */
	struct dkim_verify *dv;
	struct dkim_fetcher fetcher;
	int dkim_pending, dkim_timeout;
	struct dkim_sig_result dres[DKIM_SIGS_MAX];
	size_t ndres;
	/* DMARC */
	struct dmarc_fetcher dfetcher;
	struct dmarc_lookup *dl;
	int dmarc_pending, dmarc_started;
	struct dmarc_discovery disc;
	/* signing */
	struct dkim_signkeys *keys;
	struct dkim_sign *signer;
	char sign_domain[DMARC_DOMAIN_MAX + 1];
	char sign_err[256];
	struct strbuf sigs;
	/* the end */
	int finishing, all_in, completed;
	struct event *ev;
	mailauth_cb cb;
	void *cb_arg;
	struct mailauth_result res;
};

static void mailauth_spf_cb(void *arg, enum spf_result r, const char *explanation);

/* mailauth_domain_of - normalized domain of an address (after the last
 * '@') or of a bare name into out; 0 or -1 */
static int mailauth_domain_of(const char *s, char *out, size_t outlen)
{
	const char *at = strrchr(s, '@');
	const char *d = at ? at + 1 : s;
	return dmarc_domain_normalize(d, strlen(d), out, outlen) == 0 ? 0 : -1;
}

/* mailauth_new - see mailauth.h */
struct mailauth *mailauth_new(const struct mailauth_conf *c, const char *client_ip, const char *helo,
			      const char *mail_from)
{
	struct mailauth *m = xcalloc(1, sizeof(*m));
	m->base = c->base;
	m->dns = c->dns;
	m->authserv_id = xstrdup(c->authserv_id && c->authserv_id[0] ? c->authserv_id : "localhost");
	m->key_dir = xstrdup(c->dkim_key_dir ? c->dkim_key_dir : "");
	m->selector = xstrdup(c->dkim_selector ? c->dkim_selector : "");
	m->verify = c->verify && c->dns;
	m->enforce = c->dmarc_enforce;
	m->sign = c->sign && m->key_dir[0] && m->selector[0];
	m->timeout_ms = c->timeout_ms ? c->timeout_ms : MAILAUTH_TIMEOUT_DEFAULT_MS;
	m->random100 = c->random100;
	m->random_ctx = c->random_ctx;
	m->ip = xstrdup(client_ip ? client_ip : "");
	m->helo = xstrdup(helo ? helo : "");
	m->mail_from = xstrdup(mail_from ? mail_from : "");
	m->bol = 1;
	m->from_rc = -1;
	strbuf_init(&m->hdr);
	strbuf_init(&m->sigs);
	strbuf_init(&m->res.prepend);
	m->spf_result = SPF_NONE;
	m->disc.status = DMARC_DISC_NONE;
	/* the domain SPF speaks for (RFC 7489 3.1.2): MAIL FROM's; HELO's only
	 * for a sender with no domain (the null path). A MAIL FROM domain we
	 * cannot use for alignment (8-bit, say) aligns with nothing: SPF
	 * checked it, not the HELO name */
	if (strchr(m->mail_from, '@')) {
		if (mailauth_domain_of(m->mail_from, m->spf_domain, sizeof(m->spf_domain)) < 0)
			m->spf_domain[0] = '\0';
	} else if (mailauth_domain_of(m->helo, m->spf_domain, sizeof(m->spf_domain)) < 0) {
		m->spf_domain[0] = '\0';
	}
	if (m->verify) {
		m->spf_pending = 1;
		m->spf = spf_check_start(m->dns, m->ip, m->mail_from, m->helo, m->authserv_id, mailauth_spf_cb, m);
		if (!m->spf)
			m->spf_pending = 0; /* not an IP address: SPF none */
		m->dv = dkim_verify_new(DKIM_L_STRICT, time(NULL));
		m->fetcher = (struct dkim_fetcher){dkim_fetch_dns, dkim_cancel_dns, m->dns};
		m->dfetcher = (struct dmarc_fetcher){dkim_fetch_dns, dkim_cancel_dns, m->dns};
	}
	return m;
}

/* mailauth_set_qid - see mailauth.h */
void mailauth_set_qid(struct mailauth *m, const char *qid)
{
	snprintf(m->qid, sizeof(m->qid), "%s", qid ? qid : "");
}

/* mailauth_check_done - when the end of data came and nothing is
 * pending, complete from the event loop (a zero timer) */
static void mailauth_check_done(struct mailauth *m)
{
	if (!m->finishing || m->all_in || m->spf_pending || m->dkim_pending || m->dmarc_pending)
		return;
	m->all_in = 1;
	struct timeval tv = {0, 0};
	evtimer_add(m->ev, &tv);
}

/* mailauth_spf_cb - the SPF result */
static void mailauth_spf_cb(void *arg, enum spf_result r, const char *explanation)
{
	struct mailauth *m = arg;
	(void)explanation;
	m->spf = NULL;
	m->spf_pending = 0;
	m->spf_result = r;
	mailauth_check_done(m);
}

/* mailauth_dmarc_cb - the DMARC policy discovery */
static void mailauth_dmarc_cb(void *arg, const struct dmarc_discovery *d)
{
	struct mailauth *m = arg;
	m->disc = *d;
	m->dmarc_pending = 0;
	mailauth_check_done(m);
}

/* mailauth_dkim_cb - every DKIM signature decided */
static void mailauth_dkim_cb(const struct dkim_sig_result *res, size_t n, void *arg)
{
	struct mailauth *m = arg;
	m->ndres = n < DKIM_SIGS_MAX ? n : DKIM_SIGS_MAX;
	memcpy(m->dres, res, m->ndres * sizeof(*res));
	m->dkim_pending = 0;
	mailauth_check_done(m);
}

/* mailauth_key_exists - a key file of domain may be there (either kind):
 * only "no such file" says no, so that a key directory we may not read
 * (EACCES) is loaded, fails and is reported instead of signing nothing
 * in silence */
static int mailauth_key_exists(const char *dir, const char *domain, const char *selector)
{
	char p[4096];
	struct stat st;
	snprintf(p, sizeof(p), "%s/%s/%s.rsa.pem", dir, domain, selector);
	if (stat(p, &st) == 0 || (errno != ENOENT && errno != ENOTDIR))
		return 1;
	snprintf(p, sizeof(p), "%s/%s/%s.ed25519.pem", dir, domain, selector);
	return stat(p, &st) == 0 || (errno != ENOENT && errno != ENOTDIR);
}

/* mailauth_sign_keys - keys of the first candidate domain that has some:
 * the From domain, its organisational domain, then the MAIL FROM domain.
 * The From domains are candidates only when they share the MAIL FROM
 * domain's organisational domain (or there is no MAIL FROM domain): the
 * sender was checked against MAIL FROM, not against From, so a user of
 * one hosted domain must not get mail signed for another.
 * NULL: none has keys (err "") or loading failed (err set) */
static struct dkim_signkeys *mailauth_sign_keys(const char *dir, const char *selector, const char *from_domain,
						 const char *mf_domain, char *used, size_t usedlen, char *err,
						 size_t errlen)
{
	char cand[3][DMARC_DOMAIN_MAX + 1];
	size_t nc = 0;
	err[0] = '\0';
	int from_ok = 1;
	if (from_domain && from_domain[0] && mf_domain && mf_domain[0]) {
		char fo[DMARC_DOMAIN_MAX + 1], mo[DMARC_DOMAIN_MAX + 1];
		dmarc_org_domain(from_domain, fo, sizeof(fo));
		dmarc_org_domain(mf_domain, mo, sizeof(mo));
		from_ok = strcmp(fo, mo) == 0;
	}
	if (from_ok && from_domain && from_domain[0]) {
		snprintf(cand[nc++], sizeof(cand[0]), "%s", from_domain);
		dmarc_org_domain(from_domain, cand[nc], sizeof(cand[0]));
		if (strcmp(cand[nc], cand[0]) != 0)
			nc++;
	}
	if (mf_domain && mf_domain[0])
		snprintf(cand[nc++], sizeof(cand[0]), "%s", mf_domain);
	for (size_t i = 0; i < nc; i++) {
		int dup = 0;
		for (size_t j = 0; j < i; j++)
			dup |= strcmp(cand[i], cand[j]) == 0;
		if (dup || !mailauth_key_exists(dir, cand[i], selector))
			continue;
		struct dkim_signkeys *k = dkim_sign_load(dir, cand[i], selector, err, errlen);
		if (k) {
			snprintf(used, usedlen, "%.253s", cand[i]);
			return k;
		}
		return NULL; /* a key is there but unusable: the admin must know */
	}
	return NULL;
}

/* mailauth_hdr_scan - forged Authentication-Results fields in the
 * buffered header section */
static int mailauth_hdr_scan(const char *h, size_t len, const char *authserv_id)
{
	size_t i = 0;
	while (i < len) {
		if (h[i] == '\n' || (h[i] == '\r' && i + 1 < len && h[i + 1] == '\n'))
			break;
		size_t start = i;
		for (;;) {
			const char *nl = memchr(h + i, '\n', len - i);
			i = nl ? (size_t)(nl - h) + 1 : len;
			if (i >= len || (h[i] != ' ' && h[i] != '\t'))
				break;
		}
		if (authres_field_is_ours(h + start, i - start, authserv_id))
			return 1;
	}
	return 0;
}

/* mailauth_hdr_complete - the header section is in: From, forged A-R,
 * the DMARC lookup, the signer */
static void mailauth_hdr_complete(struct mailauth *m)
{
	m->hdr_done = 1;
	if (m->hdr_over) {
		m->from_rc = -1;
		snprintf(m->from_err, sizeof(m->from_err), "header section over %d octets", MAILAUTH_HEADER_MAX);
		m->res.forged_ar = 1; /* unseen fields: let the filter look at each */
	} else {
		m->from_rc = dmarc_from_domain(m->hdr.s, m->hdr.len, m->from_domain, sizeof(m->from_domain), m->from_err,
					       sizeof(m->from_err));
		if (m->from_rc != 0 && m->from_rc != 1)
			m->from_domain[0] = '\0';
		m->res.forged_ar = mailauth_hdr_scan(m->hdr.s, m->hdr.len, m->authserv_id);
	}
	if (m->verify && m->from_rc == 0) {
		m->dmarc_started = 1;
		m->dmarc_pending = 1;
		m->dl = dmarc_lookup_start(&m->dfetcher, m->from_domain, mailauth_dmarc_cb, m);
		if (!m->dl) {
			m->dmarc_pending = 0;
			m->disc.status = DMARC_DISC_TEMPERROR;
			snprintf(m->disc.why, sizeof(m->disc.why), "lookup failed to start");
		}
	}
	if (m->sign) {
		char mf[DMARC_DOMAIN_MAX + 1] = "";
		if (strchr(m->mail_from, '@'))
			mailauth_domain_of(m->mail_from, mf, sizeof(mf));
		if (m->hdr_over) {
			snprintf(m->sign_err, sizeof(m->sign_err), "header section too large to sign");
			return;
		}
		m->keys = mailauth_sign_keys(m->key_dir, m->selector, m->from_rc == 0 ? m->from_domain : "", mf,
					     m->sign_domain, sizeof(m->sign_domain), m->sign_err, sizeof(m->sign_err));
		if (!m->keys)
			return;
		m->signer = dkim_sign_new(m->keys, time(NULL));
		if (!m->signer || dkim_sign_write(m->signer, m->hdr.s, m->hdr.len) < 0) {
			snprintf(m->sign_err, sizeof(m->sign_err), "signer failed on the header section");
			dkim_sign_free(m->signer);
			m->signer = NULL;
		}
	}
}

/* mailauth_write - see mailauth.h */
void mailauth_write(struct mailauth *m, const char *p, size_t n)
{
	if (m->finishing || n == 0)
		return;
	if (m->dv)
		dkim_verify_write(m->dv, p, n); /* -1 past DKIM_HEADER_MAX: dkim=none */
	size_t used = 0;
	if (!m->hdr_done) {
		size_t end = 0;
		for (size_t i = 0; i < n && !end; i++) {
			char c = p[i];
			if (m->bol_cr) {
				m->bol_cr = 0;
				if (c == '\n')
					end = i + 1;
			} else if (m->bol) {
				if (c == '\n') {
					end = i + 1;
				} else if (c == '\r') {
					m->bol_cr = 1;
					m->bol = 0;
					continue;
				}
			}
			m->bol = c == '\n';
		}
		used = end ? end : n;
		size_t room = MAILAUTH_HEADER_MAX - m->hdr.len;
		if (used > room)
			m->hdr_over = 1;
		strbuf_add(&m->hdr, p, used < room ? used : room);
		if (end)
			mailauth_hdr_complete(m);
	}
	if (m->signer && used < n && dkim_sign_write(m->signer, p + used, n - used) < 0) {
		snprintf(m->sign_err, sizeof(m->sign_err), "signer failed");
		dkim_sign_free(m->signer);
		m->signer = NULL;
	}
}

/* mailauth_ar_dkim - the dkim resinfos */
static void mailauth_ar_dkim(struct mailauth *m, struct authres *a)
{
	if (m->ndres == 0) {
		authres_method(a, "dkim", m->dkim_timeout ? "temperror" : "none");
		if (m->dkim_timeout)
			authres_comment(a, "key lookup timed out");
		return;
	}
	for (size_t i = 0; i < m->ndres; i++) {
		const struct dkim_sig_result *r = &m->dres[i];
		char c[200];
		authres_method(a, "dkim", dkim_result_str(r->result));
		if (r->l_partial) {
			snprintf(c, sizeof(c), "signature covers only l=%llu of %llu body octets", (unsigned long long)r->l,
				 (unsigned long long)r->body_len);
			authres_comment(a, c);
		} else if (r->result != DKIM_PASS && r->reason[0]) {
			authres_comment(a, r->reason);
		}
		if (r->domain[0]) {
			authres_prop(a, "header.d", r->domain);
			if (r->selector[0])
				authres_prop(a, "header.s", r->selector);
			authres_prop(a, "header.a", dkim_alg_str(r->alg));
		}
		if (r->b_prefix[0])
			authres_prop(a, "header.b", r->b_prefix);
	}
}

/* mailauth_dkim_summary - one word for the summary: pass if any passed */
static const char *mailauth_dkim_summary(const struct mailauth *m)
{
	if (m->ndres == 0)
		return m->dkim_timeout ? "temperror" : "none";
	for (size_t i = 0; i < m->ndres; i++)
		if (m->dres[i].result == DKIM_PASS)
			return "pass";
	return dkim_result_str(m->dres[0].result);
}

/* mailauth_verified - DMARC evaluation, the A-R field, the verdict */
static void mailauth_verified(struct mailauth *m, const char **dmarc_word)
{
	struct mailauth_result *r = &m->res;
	struct dmarc_outcome o;
	struct dmarc_eval e = {
		.from_domain = m->from_domain,
		.spf = m->spf_result,
		.spf_domain = m->spf_domain,
		.dkim = m->dres,
		.ndkim = m->ndres,
		.disc = &m->disc,
		.roll = m->random100 ? m->random100(m->random_ctx) % 100 : arc4random_uniform(100),
	};
	const char *override = NULL;
	char comment[200] = "";

	memset(&o, 0, sizeof(o));
	if (m->from_rc == 0) {
		dmarc_evaluate(&e, &o);
	} else {
		o.result = m->from_rc == 1 ? DMARC_RESULT_NONE : DMARC_RESULT_PERMERROR;
		snprintf(comment, sizeof(comment), "%s",
			 m->from_rc == 1 ? "non-ASCII From domain not evaluated" : m->from_err);
	}
	if (m->from_rc == 0 && m->disc.status == DMARC_DISC_FOUND) {
		const struct dmarc_record *rec = &m->disc.rec;
		size_t k = (size_t)snprintf(comment, sizeof(comment), "p=%s sp=%s", dmarc_p_str(rec->p), dmarc_p_str(rec->sp));
		if (rec->pct < 100)
			k += (size_t)snprintf(comment + k, sizeof(comment) - k, " pct=%u", rec->pct);
		snprintf(comment + k, sizeof(comment) - k, " dis=%s%s", dmarc_p_str(o.disposition),
			 o.sampled_out ? " sampled_out" : "");
	} else if (m->from_rc == 0 && m->disc.status != DMARC_DISC_NONE) {
		snprintf(comment, sizeof(comment), "%.190s", m->disc.why);
	}

	/* the verdict */
	smtp_verdict_set(&r->verdict, SMTP_VERDICT_CONTINUE, NULL, NULL);
	if (m->from_rc < 0 && m->enforce) {
		char t[300];
		snprintf(t, sizeof(t), "Message refused: %s (RFC 5322 3.6, RFC 7489 6.6.1)", m->from_err);
		struct strbuf s;
		strbuf_init(&s);
		smtp_reply_add_custom(&s, 550, "5.7.1", t);
		while (s.len && (s.s[s.len - 1] == '\n' || s.s[s.len - 1] == '\r'))
			s.s[--s.len] = '\0';
		smtp_verdict_set(&r->verdict, SMTP_VERDICT_REJECT, s.s, "dmarc");
		strbuf_free(&s);
	} else if (o.result == DMARC_RESULT_FAIL && o.disposition == DMARC_P_REJECT) {
		if (m->enforce) {
			char t[400];
			snprintf(t, sizeof(t), "Unauthenticated email from %s is not accepted due to its DMARC policy (%s=reject)",
				 m->from_domain, m->disc.at_org ? "sp" : "p");
			struct strbuf s;
			strbuf_init(&s);
			smtp_reply_add_custom(&s, 550, "5.7.1", t);
			while (s.len && (s.s[s.len - 1] == '\n' || s.s[s.len - 1] == '\r'))
				s.s[--s.len] = '\0';
			smtp_verdict_set(&r->verdict, SMTP_VERDICT_REJECT, s.s, "dmarc");
			strbuf_free(&s);
		} else {
			r->quarantine = 1; /* dmarc_enforce = no: marked, not refused */
			override = "local_policy";
		}
	} else if (o.result == DMARC_RESULT_FAIL && o.disposition == DMARC_P_QUARANTINE) {
		r->quarantine = 1;
	}

	/* Authentication-Results */
	struct authres a;
	authres_begin(&a, &r->prepend, m->authserv_id);
	authres_method(&a, "spf", spf_result_str(m->spf_result));
	if (m->mail_from[0])
		authres_prop(&a, "smtp.mailfrom", m->mail_from);
	else if (m->helo[0])
		authres_prop(&a, "smtp.helo", m->helo);
	mailauth_ar_dkim(m, &a);
	authres_method(&a, "dmarc", dmarc_result_str(o.result));
	if (comment[0])
		authres_comment(&a, comment);
	if (m->from_rc == 0)
		authres_prop(&a, "header.from", m->from_domain);
	authres_end(&a);

	if (m->from_rc == 0)
		dmarc_log_report(m->qid, m->ip, &e, &o, override);
	*dmarc_word = dmarc_result_str(o.result);
}

/* mailauth_complete - build the result and hand it over */
static void mailauth_complete(struct mailauth *m)
{
	struct mailauth_result *r = &m->res;
	const char *dmarc_word = "off";
	m->completed = 1;
	smtp_verdict_set(&r->verdict, SMTP_VERDICT_CONTINUE, NULL, NULL);
	if (m->verify)
		mailauth_verified(m, &dmarc_word);
	if (m->sigs.len)
		strbuf_add(&r->prepend, m->sigs.s, m->sigs.len);
	snprintf(r->sign_domain, sizeof(r->sign_domain), "%s", m->sigs.len ? m->sign_domain : "");
	if (m->verify)
		snprintf(r->summary, sizeof(r->summary), "spf=%s dkim=%s dmarc=%s from=%.150s%s%s%s",
			 spf_result_str(m->spf_result), mailauth_dkim_summary(m), dmarc_word,
			 m->from_rc == 0 ? m->from_domain : "?", r->quarantine ? " quarantine=1" : "",
			 r->forged_ar ? " forged_ar=1" : "", r->verdict.kind == SMTP_VERDICT_REJECT ? " reject=1" : "");
	else
		snprintf(r->summary, sizeof(r->summary), "verify=no dkim_sign=%.200s%s",
			 r->sign_domain[0] ? r->sign_domain : "none", r->forged_ar ? " forged_ar=1" : "");
	if (m->sign && !m->sigs.len && m->sign_err[0]) {
		struct log_line l;
		log_begin(&l, LOG_LEVEL_WARN, "dkim_sign_failed");
		if (m->qid[0])
			log_kv(&l, "qid", m->qid);
		log_kv(&l, "reason", m->sign_err);
		log_end(&l);
	}
	m->cb(m->cb_arg, r); /* may free m */
}

/* mailauth_timer_cb - all results in, or the deadline passed */
static void mailauth_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mailauth *m = arg;
	(void)fd;
	(void)what;
	if (!m->all_in) {
		struct log_line l;
		log_begin(&l, LOG_LEVEL_WARN, "mailauth_timeout");
		if (m->qid[0])
			log_kv(&l, "qid", m->qid);
		log_kvi(&l, "spf_pending", m->spf_pending);
		log_kvi(&l, "dkim_pending", m->dkim_pending);
		log_kvi(&l, "dmarc_pending", m->dmarc_pending);
		log_end(&l);
		if (m->spf_pending) {
			spf_check_cancel(m->spf);
			m->spf = NULL;
			m->spf_pending = 0;
			m->spf_result = SPF_TEMPERROR;
		}
		if (m->dkim_pending) {
			/* what was decided stands; a signature still waiting for
			 * its key is a temperror, which DMARC never acts on when
			 * its d= is aligned (a timeout must not refuse) */
			m->ndres = dkim_verify_so_far(m->dv, m->dres, DKIM_SIGS_MAX);
			dkim_verify_free(m->dv); /* cancels the key lookups */
			m->dv = NULL;
			m->dkim_pending = 0;
			m->dkim_timeout = 1;
		}
		if (m->dmarc_pending) {
			dmarc_lookup_cancel(m->dl);
			m->dl = NULL;
			m->dmarc_pending = 0;
			m->disc.status = DMARC_DISC_TEMPERROR;
			snprintf(m->disc.why, sizeof(m->disc.why), "policy lookup timed out");
		}
		m->all_in = 1;
	}
	mailauth_complete(m);
}

/* mailauth_finish - see mailauth.h */
void mailauth_finish(struct mailauth *m, mailauth_cb cb, void *arg)
{
	if (m->finishing)
		return;
	m->cb = cb;
	m->cb_arg = arg;
	if (!m->hdr_done)
		mailauth_hdr_complete(m); /* a message without a body */
	if (m->signer) {
		char err[200];
		if (dkim_sign_finish(m->signer, &m->sigs, err, sizeof(err)) < 0) {
			snprintf(m->sign_err, sizeof(m->sign_err), "%s", err);
			strbuf_reset(&m->sigs);
		}
		dkim_sign_free(m->signer);
		m->signer = NULL;
	}
	m->ev = evtimer_new(m->base, mailauth_timer_cb, m);
	struct timeval tv = {m->timeout_ms / 1000, (m->timeout_ms % 1000) * 1000};
	evtimer_add(m->ev, &tv);
	m->finishing = 1;
	if (m->dv) {
		m->dkim_pending = 1;
		if (dkim_verify_start(m->dv, &m->fetcher, mailauth_dkim_cb, m) < 0)
			m->dkim_pending = 0;
	}
	mailauth_check_done(m);
}

/* mailauth_free - see mailauth.h */
void mailauth_free(struct mailauth *m)
{
	if (!m)
		return;
	if (m->spf_pending)
		spf_check_cancel(m->spf);
	dkim_verify_free(m->dv);
	dmarc_lookup_cancel(m->dl);
	dkim_sign_free(m->signer);
	dkim_signkeys_free(m->keys);
	if (m->ev)
		event_free(m->ev);
	strbuf_free(&m->hdr);
	strbuf_free(&m->sigs);
	strbuf_free(&m->res.prepend);
	free(m->authserv_id);
	free(m->key_dir);
	free(m->selector);
	free(m->ip);
	free(m->helo);
	free(m->mail_from);
	free(m);
}

/* mailauth_pread - read exactly n bytes at off (EINTR and short reads);
 * 0 or -1 */
static int mailauth_pread(int fd, char *buf, size_t n, off_t off)
{
	while (n > 0) {
		ssize_t r = pread(fd, buf, n, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = EIO; /* the file is shorter than told */
			return -1;
		}
		buf += r;
		n -= (size_t)r;
		off += r;
	}
	return 0;
}

/* mailauth_sign_content - see mailauth.h */
int mailauth_sign_content(const struct mailauth_conf *c, const char *domain, int fd, off_t off, off_t len,
			  struct strbuf *out, char *err, size_t errlen)
{
	enum { CHUNK = 65536 };
	char dom[DMARC_DOMAIN_MAX + 1], used[DMARC_DOMAIN_MAX + 1];
	char *buf;
	off_t pos;
	int rc = -1;

	err[0] = '\0';
	if (!c->dkim_key_dir || !c->dkim_key_dir[0] || !c->dkim_selector || !c->dkim_selector[0]) {
		snprintf(err, errlen, "no dkim_key_dir or dkim_selector");
		return -1;
	}
	if (len < 0 || off < 0) {
		snprintf(err, errlen, "bad content range");
		return -1;
	}
	buf = xmalloc(CHUNK);
	if (domain && domain[0]) {
		if (dmarc_domain_normalize(domain, strlen(domain), dom, sizeof(dom)) != 0) {
			snprintf(err, errlen, "bad signing domain");
			goto out;
		}
	} else {
		/* the From domain of the content's header section */
		struct strbuf h;
		strbuf_init(&h);
		for (pos = 0; pos < len && h.len < MAILAUTH_HEADER_MAX;) {
			size_t n = (size_t)(len - pos < CHUNK ? len - pos : CHUNK);
			if (mailauth_pread(fd, buf, n, off + pos) < 0) {
				snprintf(err, errlen, "read: %s", strerror(errno));
				strbuf_free(&h);
				goto out;
			}
			strbuf_add(&h, buf, n);
			pos += (off_t)n;
			if (memmem(h.s, h.len, "\n\r\n", 3) || memmem(h.s, h.len, "\n\n", 2))
				break;
		}
		char why[128];
		int fr = dmarc_from_domain(h.s ? h.s : "", h.len, dom, sizeof(dom), why, sizeof(why));
		strbuf_free(&h);
		if (fr != 0) {
			/* nothing to sign for: 1, so the caller may name a domain */
			snprintf(err, errlen, "no From domain to sign for: %s", fr == 1 ? "non-ASCII domain" : why);
			rc = 1;
			goto out;
		}
	}
	struct dkim_signkeys *k = mailauth_sign_keys(c->dkim_key_dir, c->dkim_selector, dom, "", used, sizeof(used),
						     err, errlen);
	if (!k) {
		rc = err[0] ? -1 : 1;
		goto out;
	}
	struct dkim_sign *s = dkim_sign_new(k, time(NULL));
	if (s == NULL) {
		snprintf(err, errlen, "cannot start a signature");
		dkim_signkeys_free(k);
		rc = -1;
		goto out;
	}
	rc = 0;
	for (pos = 0; pos < len && rc == 0;) {
		size_t n = (size_t)(len - pos < CHUNK ? len - pos : CHUNK);
		if (mailauth_pread(fd, buf, n, off + pos) < 0) {
			snprintf(err, errlen, "read: %s", strerror(errno));
			rc = -1;
		} else if (dkim_sign_write(s, buf, n) < 0) {
			snprintf(err, errlen, "header section too large to sign");
			rc = -1;
		}
		pos += (off_t)n;
	}
	if (rc == 0 && dkim_sign_finish(s, out, err, errlen) < 0)
		rc = -1;
	dkim_sign_free(s);
	dkim_signkeys_free(k);
out:
	free(buf);
	return rc;
}
