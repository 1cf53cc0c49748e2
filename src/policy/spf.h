/*
 * spf - Sender Policy Framework checker (RFC 7208), asynchronous on
 * Tern's DNS module (dns/dns.h), with a pure record parser and macro
 * expander underneath.
 *
 * Exports:
 *   enum spf_result, spf_result_str   the seven check_host() results
 *   spf_check_start / spf_check_cancel  one check_host() run for a client
 *   spf_record_parse                  pure: "v=spf1 ..." text -> terms
 *   spf_macro_expand                  pure: macro-string -> text (RFC 7208 7)
 *   spf_name_escape / spf_name_unescape  pure: target text <-> the DNS
 *                                     presentation form dns_query_raw takes
 *   spf_received_header               pure: a Received-SPF field (9.1)
 *
 * Trusts nothing: records, names and explanations come from DNS and are
 * hostile; every expansion is bounded by the caller's buffer and every
 * record by SPF_TERMS_MAX. The DNS lookup limit (10), the void lookup
 * limit (2), the MX target limit (10) and the PTR name limit (10) of
 * RFC 7208 4.6.4 are enforced. Names in the Received-SPF field are
 * sanitized (no CR, LF or controls; quoted where not a dot-atom).
 * Standards: RFC 7208 (check_host, sections 2.3, 4, 5, 6, 7; 9.1).
 */
#ifndef TERN_POLICY_SPF_H
#define TERN_POLICY_SPF_H

#include <stddef.h>

struct dns;
struct spf_check;
struct strbuf;

enum spf_result {
	SPF_NONE,
	SPF_NEUTRAL,
	SPF_PASS,
	SPF_FAIL,
	SPF_SOFTFAIL,
	SPF_TEMPERROR,
	SPF_PERMERROR,
};

/* spf_result_str - "none", "neutral", "pass", ... as in Received-SPF */
const char *spf_result_str(enum spf_result r);

/* the callback: explanation is non-NULL only for SPF_FAIL with exp= */
typedef void (*spf_done_cb)(void *arg, enum spf_result r, const char *explanation);

/*
 * spf_check_start - check_host() for client ip (text "192.0.2.1" or
 * "2001:db8::1"). mailfrom is the MAIL FROM address without brackets;
 * "" means the null path, and the HELO identity postmaster@helo is checked
 * instead. receiver is our host name for %{r} (NULL: "unknown").
 * done runs exactly once, later, from the event loop, unless cancelled.
 * NULL: bad ip text or out of memory (done will not run).
 */
struct spf_check *spf_check_start(struct dns *dns, const char *ip, const char *mailfrom,
				  const char *helo, const char *receiver, spf_done_cb done,
				  void *arg);
/* spf_check_cancel - abandon a check; done is never called */
void spf_check_cancel(struct spf_check *c);

/* ---- pure parts, exported for tests and fuzzing ---- */

#define SPF_TERMS_MAX 64   /* mechanisms per record; more is a permerror */
#define SPF_DOMAIN_MAX 253 /* expanded target names are cut to this */

enum spf_mech {
	SPF_MECH_ALL,
	SPF_MECH_INCLUDE,
	SPF_MECH_A,
	SPF_MECH_MX,
	SPF_MECH_PTR,
	SPF_MECH_IP4,
	SPF_MECH_IP6,
	SPF_MECH_EXISTS,
};
const char *spf_mech_str(enum spf_mech m);

struct spf_term {
	enum spf_mech mech;
	enum spf_result qual;     /* SPF_PASS, _FAIL, _SOFTFAIL, _NEUTRAL */
	const char *spec;         /* domain-spec (into the record), or NULL */
	size_t speclen;
	int cidr4, cidr6;         /* prefix lengths (32 / 128 when absent) */
	unsigned char addr[16];   /* ip4 / ip6 network */
};

struct spf_record {
	struct spf_term terms[SPF_TERMS_MAX];
	size_t nterms;
	const char *redirect;     /* modifier values (into the record) or NULL */
	size_t redirectlen;
	const char *exp;
	size_t explen;
};

/*
 * spf_record_parse - parse a whole record (starting "v=spf1"). Pointers in
 * rec point into txt. 0 ok, -1 syntax error (a permerror).
 */
int spf_record_parse(const char *txt, size_t len, struct spf_record *rec);

struct spf_macro_ctx {
	const char *sender;        /* s: local@domain */
	const char *local;         /* l */
	const char *sender_domain; /* o */
	const char *domain;        /* d: current domain */
	const char *ip;            /* c: client address, text */
	int ipv6;                  /* family of ipbytes */
	unsigned char ipbytes[16]; /* i, v */
	const char *helo;          /* h */
	const char *ptr_name;      /* p: validated client name; NULL "unknown" */
	const char *receiver;      /* r */
	long long timestamp;       /* t */
};

/*
 * spf_macro_expand - expand in[0..len) into out (NUL-ended). exp: 1 for an
 * explanation string (c, r, t allowed; any visible text), 0 for a
 * domain-spec. Returns the length, -1 syntax error, -2 out too small.
 */
long spf_macro_expand(const char *in, size_t len, const struct spf_macro_ctx *ctx, int exp,
		      char *out, size_t outlen);

/*
 * spf_name_escape - target text (any octets; '.' separates labels) into
 * DNS presentation form: [A-Za-z0-9_-] and '.' as themselves, '\' as
 * "\\", every other octet as \DDD (as dns_parse_name writes names).
 * 0 ok, -1 out too small.
 */
int spf_name_escape(const char *raw, char *out, size_t outlen);
/*
 * spf_name_unescape - presentation form back into text; -1 when an escape
 * is malformed, decodes to a '.' inside a label or to a byte outside
 * %x21-7E, or out is too small.
 */
int spf_name_unescape(const char *name, char *out, size_t outlen);

/*
 * spf_received_header - append to out a complete Received-SPF header
 * field (RFC 7208 9.1), folded, ending in CRLF, e.g.
 *   Received-SPF: pass (mx.example: domain of a@b.example designates
 *   \t192.0.2.1 as permitted sender) client-ip=192.0.2.1;
 *   \tenvelope-from="a@b.example"; helo=h.example; receiver=mx.example;
 *   \tidentity=mailfrom
 * ip/mailfrom/helo/receiver as given to spf_check_start (NULL = ""):
 * mailfrom "" means the HELO identity (postmaster@helo) was checked. Each
 * value is cut to 255 bytes, bytes outside %x20-7E become '?', and values
 * that are not dot-atoms are quoted-strings.
 */
void spf_received_header(enum spf_result r, const char *ip, const char *mailfrom, const char *helo,
			 const char *receiver, struct strbuf *out);

#endif
