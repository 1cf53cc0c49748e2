/*
 * mailauth - mail authentication of one message: SPF (started at MAIL
 * FROM), DKIM verification and DMARC (at the end of data), DKIM signing,
 * the Authentication-Results field, and the detection of forged
 * Authentication-Results fields. Everything that waits for DNS is
 * asynchronous: nothing here blocks the event loop (the only file reads
 * are the admin's signing keys and, in mailauth_sign_content, the message).
 *
 * Exports:
 *   struct mailauth_conf              what the daemon configures
 *   mailauth_new                      a transaction's authentication
 *   mailauth_set_qid                  the queue id, for the log lines
 *   mailauth_write                    the content as stored, any chunking
 *   mailauth_finish                   end of data: the result, later
 *   mailauth_free                     cancel and release
 *   mailauth_sign_content             sign content read from a file
 *
 * Verification (c->verify, mail from the Internet): SPF of the client
 * address for the MAIL FROM domain (HELO for <>), every DKIM-Signature
 * (up to DKIM_SIGS_MAX; a body over l= fails), and DMARC for the
 * RFC5322.From domain (dmarc.h). The verdict:
 *   - DMARC fail with the disposition reject (p= or sp=, after pct=):
 *     REJECT "550 5.7.1 Unauthenticated email from <domain> is not
 *     accepted due to its DMARC policy (p=reject)" when dmarc_enforce;
 *     without dmarc_enforce it is marked as quarantined instead;
 *   - DMARC fail with the disposition quarantine: quarantine = 1;
 *   - no From field, several From fields, or a From without exactly one
 *     address domain (RFC 7489 6.6.1), or a header section over
 *     MAILAUTH_HEADER_MAX: dmarc=permerror and, when dmarc_enforce, REJECT
 *     "550 5.7.1 Message refused: <why> (RFC 5322 3.6, RFC 7489 6.6.1)",
 *     as Gmail does for messages that are not RFC 5322 compliant;
 *   - a temperror (DNS failure, the c->timeout_ms deadline) never rejects.
 * The Authentication-Results field names spf, dkim (one per signature)
 * and dmarc; a "dmarc_report" log line holds what an aggregate report row
 * needs (reports are not sent).
 *
 * Signing (c->sign, independent of verification): the signing domain is
 * the first of the From domain, its organisational domain and the MAIL
 * FROM domain that has keys <dkim_key_dir>/<domain>/<dkim_selector>.
 * {rsa,ed25519}.pem; with both keys two signatures (Ed25519 and RSA). They
 * cover the content as stored: dkim.c signs a fixed list of fields (From
 * oversigned, Subject, Date, To, Cc, Message-ID, MIME fields, List-*),
 * never our Received field, so the signature survives the prepend.
 *
 * Trusts: nothing in the message or DNS; the configuration and the key
 * files are the admin's.
 * Standards: RFC 7208 (via spf.c), RFC 6376/8463 (via dkim.c), RFC 7489
 * (via dmarc.c), RFC 8601 (authres.c; 5: forged fields).
 */
#ifndef TERN_POLICY_MAILAUTH_H
#define TERN_POLICY_MAILAUTH_H

#include <stddef.h>
#include <sys/types.h>

#include "core/buf.h"
#include "policy/dkim.h"
#include "smtp/smtp_server.h"

struct dns;
struct event_base;

#define MAILAUTH_HEADER_MAX DKIM_HEADER_MAX /* header section kept */
#define MAILAUTH_TIMEOUT_DEFAULT_MS 20000

struct mailauth_conf {
	struct event_base *base;   /* the loop the callbacks run from (required) */
	struct dns *dns;           /* for SPF, DKIM keys, DMARC (required with verify) */
	const char *authserv_id;   /* our host name, in Authentication-Results */
	int verify;                /* SPF + DKIM + DMARC on this message */
	int dmarc_enforce;         /* act on DMARC fail / 6.6.1: reject (p=reject) */
	const char *dkim_key_dir, *dkim_selector;
	int sign;                  /* sign (authenticated / trusted senders) */
	unsigned timeout_ms;       /* end-of-data wait for DNS; 0: the default */
	/* pct= sampling: uniform 0..99; NULL: arc4random_uniform(100) */
	unsigned (*random100)(void *ctx);
	void *random_ctx;
};

struct mailauth;

struct mailauth_result {
	struct smtp_verdict verdict; /* CONTINUE, or REJECT "550 5.7.1 ..." */
	struct strbuf prepend;       /* Authentication-Results (verify) then the
					DKIM-Signature field(s) (sign), CRLF-ended
					fields for queue_file_prepend; may be empty */
	int quarantine;              /* DMARC disposition quarantine (or a reject
					not enforced): the filter marks / holds */
	int forged_ar;               /* Authentication-Results fields claiming
					our authserv-id are present: remove them
					(authres_field_is_ours on each field) */
	char sign_domain[256];       /* d= of our signature(s), "" if unsigned */
	char summary[256];           /* "spf=pass dkim=pass dmarc=pass from=..." */
};

/* the result belongs to the mailauth and lives until mailauth_free; the
 * callee may take r->prepend (strbuf_detach) */
typedef void (*mailauth_cb)(void *arg, struct mailauth_result *r);

/* mailauth_new - at MAIL FROM: copies c's strings; starts SPF when
 * c->verify. client_ip is text ("192.0.2.1"), helo the HELO name (may be
 * NULL), mail_from the address without brackets ("" for <>). */
struct mailauth *mailauth_new(const struct mailauth_conf *c, const char *client_ip, const char *helo,
			      const char *mail_from);
/* mailauth_set_qid - the queue id for log lines (qid=) */
void mailauth_set_qid(struct mailauth *m, const char *qid);
/* mailauth_write - content as stored (our Received field first), CRLF */
void mailauth_write(struct mailauth *m, const char *p, size_t n);
/* mailauth_finish - end of data: cb runs exactly once, later, from the
 * event loop (never inside this call), unless mailauth_free comes first */
void mailauth_finish(struct mailauth *m, mailauth_cb cb, void *arg);
/* mailauth_free - cancel pending lookups (no callback after) and release */
void mailauth_free(struct mailauth *m);

/* mailauth_sign_content - DKIM-sign content read from fd (bytes off ..
 * off+len, the message as stored after milter edits) with c's keys and
 * append the DKIM-Signature field(s) to out. domain NULL or "": the From
 * domain of the content (then its organisational domain). 0 signed, 1
 * nothing to sign with: no key for the domain, or (domain NULL) no usable
 * From domain, err then says so (nothing appended), -1 error (err set).
 * Blocking file reads: meant for a worker thread (thread-safe) */
int mailauth_sign_content(const struct mailauth_conf *c, const char *domain, int fd, off_t off, off_t len,
			  struct strbuf *out, char *err, size_t errlen);

#endif
