/*
 * dmarc - Domain-based Message Authentication, Reporting and Conformance
 * (RFC 7489): the policy record parser, organisational domains (Public
 * Suffix List, libpsl), identifier alignment, the RFC5322.From domain of a
 * header section, asynchronous policy discovery, and the evaluation that
 * turns SPF and DKIM results into a DMARC result and a disposition.
 *
 * Exports:
 *   enum dmarc_p, dmarc_p_str                 none / quarantine / reject
 *   enum dmarc_align, dmarc_align_str         relaxed / strict
 *   enum dmarc_rec_status, _str               record parse outcome
 *   enum dmarc_disc, dmarc_disc_str           policy discovery outcome
 *   enum dmarc_result, dmarc_result_str       RFC 8601 dmarc= result
 *   dmarc_record_parse                        strict TXT record parser
 *   dmarc_domain_normalize                    lower-case, check, no dot
 *   dmarc_org_domain                          organisational domain (PSL)
 *   dmarc_aligned                             relaxed / strict alignment
 *   dmarc_from_value                          address domain of one From
 *   dmarc_from_domain                         From domain of a header section
 *   dmarc_lookup_start / dmarc_lookup_cancel  policy discovery (6.6.3)
 *   dmarc_evaluate                            result + disposition (6.6.2, 6.6.4)
 *   dmarc_log_report                          the aggregate-report log line
 *
 * Record parsing (RFC 7489 6.3, 6.4, 6.6.3; tag-list syntax of RFC 6376
 * 3.2): "v=DMARC1" (exact) must be the first tag, else the record is not a
 * DMARC record (discarded). A broken tag-list (bad tag name, missing '=',
 * a byte outside VALCHAR, a duplicate tag) makes the record INVALID: no
 * policy (dmarc=permerror, never a rejection). A missing or bad p= (or a bad
 * sp=) is INVALID too, unless rua= holds a syntactically valid URI: then
 * the record is taken as p=none (6.6.3 step 6). Bad adkim/aspf/pct/fo/ri
 * values fall back to their defaults (6.3: "discarded in favor of default
 * values"). Unknown tags are ignored. Keywords are case-insensitive.
 * The one leniency: empty elements between semicolons (";;") are skipped.
 *
 * Organisational domain: libpsl's registrable domain (psl_latest(NULL),
 * i.e. the newer of the built-in list and the distribution's file, else
 * psl_builtin()), ICANN and PRIVATE sections, wildcard and exception rules
 * (*.kawasaki.jp, !city.kawasaki.jp). A domain that is itself a public
 * suffix is its own organisational domain. Unknown TLDs use the default
 * "*" rule (example.test -> example.test).
 *
 * RFC5322.From (6.6.1): the header section must hold exactly one From
 * field whose mailbox list (groups allowed) names exactly one address
 * domain (several mailboxes of one domain are fine). Display names,
 * comments (nested), quoted strings, encoded words and folding are
 * handled; an address literal, an empty list, an unparsable list or
 * several domains is refused (-1 with the reason): the caller reports
 * dmarc=permerror and, like Gmail ("550 5.7.1 ... not RFC 5322
 * compliant"), refuses the message.
 *
 * Trusts nothing: records come from DNS and From fields from the
 * network; every value is bounded (DMARC_URI_MAX, DMARC_DOMAIN_MAX).
 * Standards: RFC 7489 (3.1 alignment, 3.2 organisational domain, 6.3,
 * 6.4, 6.6.1-6.6.4), RFC 5322 3.4 / 3.6.2 and 4.4 (obs-), RFC 2047 (encoded
 * words are display text), RFC 6376 3.2 (tag-list).
 */
#ifndef TERN_POLICY_DMARC_H
#define TERN_POLICY_DMARC_H

#include <stddef.h>

#include "policy/dkim.h"
#include "policy/spf.h"

#define DMARC_DOMAIN_MAX 253  /* presentation form, no final dot */
#define DMARC_URI_MAX 512     /* rua= / ruf= text kept; longer is dropped */
#define DMARC_FROM_ADDRS_MAX 64 /* mailboxes in one From field */

enum dmarc_p { DMARC_P_NONE, DMARC_P_QUARANTINE, DMARC_P_REJECT };
const char *dmarc_p_str(enum dmarc_p p);

enum dmarc_align { DMARC_ALIGN_RELAXED, DMARC_ALIGN_STRICT };
const char *dmarc_align_str(enum dmarc_align a);

enum dmarc_rec_status {
	DMARC_REC_OK,        /* a usable policy record */
	DMARC_REC_NOT_DMARC, /* does not start with v=DMARC1: discarded */
	DMARC_REC_INVALID,   /* a DMARC record with a syntax error: no policy */
};
const char *dmarc_rec_status_str(enum dmarc_rec_status s);

struct dmarc_record {
	enum dmarc_p p;
	enum dmarc_p sp;           /* = p when absent */
	int has_sp;
	int p_fallback;            /* p= missing/bad, rua= valid: p=none (6.6.3) */
	enum dmarc_align adkim, aspf;
	unsigned pct;              /* 0..100, default 100 */
	unsigned long ri;          /* default 86400 */
	char fo[16];               /* default "0" */
	char rua[DMARC_URI_MAX + 1];  /* as published (reports are not sent) */
	char ruf[DMARC_URI_MAX + 1];
	unsigned defaulted;        /* count of bad values replaced by defaults */
};

/* dmarc_record_parse - parse one TXT record; on DMARC_REC_INVALID err says
 * why (and on NOT_DMARC too) */
enum dmarc_rec_status dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *r, char *err,
					 size_t errlen);

/* dmarc_domain_normalize - copy in[0..len) lower-cased, without a final
 * dot, into out (>= DMARC_DOMAIN_MAX + 1); 0 if it is a syntactically
 * valid ASCII domain name (LDH labels of 1..63, '_' allowed), 1 if it is
 * valid but holds 8-bit bytes (an EAI name: out set, no DMARC lookup),
 * -1 if invalid */
int dmarc_domain_normalize(const char *in, size_t len, char *out, size_t outlen);

/* dmarc_org_domain - organisational domain of a normalized domain into out;
 * 0, or -1 (no PSL data / bad input: out = the domain itself) */
int dmarc_org_domain(const char *domain, char *out, size_t outlen);

/* dmarc_aligned - 1 when the authenticated domain a is aligned with the
 * From domain f: strict = equal, relaxed = same organisational domain
 * (both normalized; case-insensitive anyway) */
int dmarc_aligned(const char *f, const char *a, enum dmarc_align mode);

/* dmarc_from_value - the one address domain of a From field value (after
 * the colon, folding allowed) into dom (normalized); 0, or -1 with err */
int dmarc_from_value(const char *val, size_t len, char *dom, size_t domlen, char *err, size_t errlen);

/* dmarc_from_domain - the RFC5322.From domain of a header section (the
 * message's first bytes; parsing stops at the empty line): exactly one
 * From field with one address domain. 0, 1 for an EAI (8-bit) domain, or
 * -1 with err ("no From field", "2 From fields", ...) */
int dmarc_from_domain(const char *hdr, size_t len, char *dom, size_t domlen, char *err, size_t errlen);

/* ---- policy discovery (RFC 7489 6.6.3) ---- */

enum dmarc_disc {
	DMARC_DISC_FOUND,     /* one valid record */
	DMARC_DISC_NONE,      /* no DMARC record at the From or org domain */
	DMARC_DISC_INVALID,   /* several records, or a broken one: no policy */
	DMARC_DISC_TEMPERROR, /* DNS failure */
};
const char *dmarc_disc_str(enum dmarc_disc d);

struct dmarc_discovery {
	enum dmarc_disc status;
	struct dmarc_record rec;              /* valid on FOUND */
	char domain[DMARC_DOMAIN_MAX + 1];    /* where the record was found */
	int at_org;           /* found at the org domain of a subdomain: sp= applies */
	char why[320];
};

/* TXT fetcher (the shape of struct dkim_fetcher: dkim_fetch_dns and
 * dkim_cancel_dns fit it); must call cb exactly once unless cancelled */
struct dmarc_fetcher {
	int (*fetch)(void *ctx, const char *name, dns_txt_cb cb, void *arg, void **handle);
	void (*cancel)(void *handle);
	void *ctx;
};

struct dmarc_lookup;
typedef void (*dmarc_lookup_cb)(void *arg, const struct dmarc_discovery *d);
/* dmarc_lookup_start - _dmarc.<from_domain>, then _dmarc.<org domain> when
 * the first has no DMARC record. from_domain must be normalized. cb runs
 * once (inside this call only if the fetcher answers synchronously);
 * NULL if the first fetch could not start (cb not called). */
struct dmarc_lookup *dmarc_lookup_start(const struct dmarc_fetcher *f, const char *from_domain,
					dmarc_lookup_cb cb, void *arg);
/* dmarc_lookup_cancel - abandon (cb never runs) or free after cb */
void dmarc_lookup_cancel(struct dmarc_lookup *l);

/* ---- evaluation (RFC 7489 6.6.2, 6.6.4) ---- */

enum dmarc_result {
	DMARC_RESULT_NONE,
	DMARC_RESULT_PASS,
	DMARC_RESULT_FAIL,
	DMARC_RESULT_TEMPERROR,
	DMARC_RESULT_PERMERROR,
};
const char *dmarc_result_str(enum dmarc_result r);

struct dmarc_eval {
	const char *from_domain;           /* normalized */
	enum spf_result spf;
	const char *spf_domain;            /* MAIL FROM domain, or HELO for <> */
	const struct dkim_sig_result *dkim;
	size_t ndkim;
	const struct dmarc_discovery *disc;
	unsigned roll;                     /* uniform 0..99, for pct= sampling */
};

struct dmarc_outcome {
	enum dmarc_result result;
	enum dmarc_p policy;         /* p= (or sp= for a subdomain) requested */
	enum dmarc_p disposition;    /* what applies to this message */
	int sampled_out;             /* pct= left it out: policy lowered a step */
	int spf_aligned;             /* SPF passed for an aligned domain */
	int dkim_aligned;            /* a DKIM signature passed for an aligned d= */
	char dkim_domain[DMARC_DOMAIN_MAX + 1]; /* the aligned d= (pass) or "" */
};

/* dmarc_evaluate - combine the results (pure) */
void dmarc_evaluate(const struct dmarc_eval *in, struct dmarc_outcome *out);

/* dmarc_log_report - one "dmarc_report" log line with what an aggregate
 * report row needs: qid, source_ip, header_from, policy_domain, p, sp,
 * pct, spf result/domain/aligned, dkim results/domains, dkim_aligned,
 * dmarc result and disposition (+ override when local policy lowered it) */
void dmarc_log_report(const char *qid, const char *source_ip, const struct dmarc_eval *in,
		      const struct dmarc_outcome *out, const char *override);

#endif
