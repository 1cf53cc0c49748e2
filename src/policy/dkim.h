/*
 * dkim - DomainKeys Identified Mail signing and verification on OpenSSL 3
 * EVP, streaming over the message (header section, then body chunks: a
 * message is never held whole; only its header section, capped).
 *
 * Exports:
 *   enum dkim_result, dkim_result_str      per-signature outcome (RFC 8601)
 *   enum dkim_alg, dkim_alg_str            rsa-sha256, ed25519-sha256, rsa-sha1
 *   enum dkim_canon, dkim_canon_str        simple, relaxed
 *   enum dkim_l_policy, dkim_l_policy_str  what a partial l= signature gets
 *   dkim_sig_parse                         strict DKIM-Signature tag parser
 *   dkim_key_parse / dkim_key_clear        strict key TXT record parser
 *   dkim_canon_header                      one header field, simple/relaxed
 *   dkim_body_new/write/finish/free        streaming body canonicalizer+hash
 *   dkim_sign_load                         load keys of <dir>/<domain>/<sel>.*
 *   dkim_sign_new/write/finish/free        streaming signer -> header text
 *   dkim_verify_new/write/start/free       streaming verifier, async key fetch
 *   dkim_fetch_dns / dkim_cancel_dns       fetcher on Tern's dns_txt_lookup
 *   dkim_result_ar                         Authentication-Results resinfo
 *
 * Key layout (signing): <dkim_key_dir>/<domain>/<selector>.rsa.pem and
 * <dkim_key_dir>/<domain>/<selector>.ed25519.pem, PEM (PKCS#8) private keys,
 * mode 0600 (written by `ternctl dkim keygen`). Either or both may exist;
 * with both the message gets two signatures (RFC 8463 section 4 advice).
 *
 * Policy (RFC 8301): rsa-sha1 -> permerror (never pass); RSA verify keys
 * < 1024 bits -> permerror; we sign only with RSA >= 2048 bits.
 * l= (body length): the signature covers only the first l canonical body
 * octets. By default (DKIM_L_STRICT) a signature whose body has MORE than
 * l canonical octets FAILS: unsigned appended content must never be shown
 * as signed. DKIM_L_LENIENT passes it but the result's l_partial is set so
 * Authentication-Results can note it. The signer never uses l=.
 *
 * Input line ends may be CRLF or bare LF (both are taken as CRLF): the
 * SMTP layer already refuses lone LF on the wire, and a stored copy may
 * use LF; dkimpy and OpenDKIM treat LF the same way.
 * A header section over DKIM_HEADER_MAX: the signer fails; the verifier
 * reports no signatures (n = 0), i.e. dkim=none. Only the first
 * DKIM_SIGS_MAX signatures are evaluated.
 * Trusts: nothing in the message or DNS; all tag values are parsed with
 * length caps; keys on disk are trusted (the admin's).
 * Standards: RFC 6376, RFC 8463, RFC 8301, RFC 8601 (result names).
 */
#ifndef TERN_POLICY_DKIM_H
#define TERN_POLICY_DKIM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/buf.h"
#include "dns/dns.h"

#define DKIM_HEADER_MAX (256 * 1024) /* header section kept for hashing */
#define DKIM_FIELDS_MAX 1000         /* header fields considered */
#define DKIM_SIGS_MAX 8              /* DKIM-Signature fields verified */
#define DKIM_H_MAX 64                /* names in h= */
#define DKIM_DOMAIN_MAX 255
#define DKIM_SELECTOR_MAX 128
#define DKIM_B_MAX 1024              /* decoded signature bytes */
#define DKIM_KEY_MAX 4096            /* decoded public key bytes */

enum dkim_result {
	DKIM_NONE,
	DKIM_PASS,
	DKIM_FAIL,
	DKIM_NEUTRAL,
	DKIM_TEMPERROR,
	DKIM_PERMERROR,
};
const char *dkim_result_str(enum dkim_result r);

enum dkim_alg {
	DKIM_ALG_RSA_SHA256,
	DKIM_ALG_ED25519_SHA256,
	DKIM_ALG_RSA_SHA1, /* parsed only to refuse it (RFC 8301) */
};
const char *dkim_alg_str(enum dkim_alg a);

enum dkim_canon { DKIM_CANON_SIMPLE, DKIM_CANON_RELAXED };
const char *dkim_canon_str(enum dkim_canon c);

enum dkim_l_policy { DKIM_L_STRICT, DKIM_L_LENIENT };
const char *dkim_l_policy_str(enum dkim_l_policy p);

struct dkim_sig {
	enum dkim_alg alg;
	enum dkim_canon hcanon, bcanon;
	char d[DKIM_DOMAIN_MAX + 1];   /* lower-cased */
	char s[DKIM_SELECTOR_MAX + 1];
	char i[DKIM_DOMAIN_MAX + 66];  /* AUID, "" if absent */
	char h[DKIM_H_MAX][80];        /* signed header names, lower-cased */
	size_t nh;
	unsigned char bh[64];
	size_t bhlen;
	unsigned char b[DKIM_B_MAX];
	size_t blen;
	char b_prefix[16];             /* first b= chars, for header.b */
	int has_l, has_t, has_x;
	uint64_t l, t, x;
};

/* dkim_sig_parse - parse a DKIM-Signature value (after the colon); 0 or -1
 * with err set (a permerror). Checks RFC 6376 3.5 required tags, v=1,
 * h contains from, i= within d=, t <= x. */
int dkim_sig_parse(const char *val, size_t len, struct dkim_sig *sig, char *err, size_t errlen);

struct dkim_key {
	int k_ed25519;     /* else rsa */
	int revoked;       /* p= empty */
	int testing;       /* t=y */
	int strict;        /* t=s: i= domain must equal d= */
	unsigned char p[DKIM_KEY_MAX];
	size_t plen;
};
/* dkim_key_parse - parse a key TXT record; 0 or -1 with err set */
int dkim_key_parse(const char *txt, size_t len, struct dkim_key *key, char *err, size_t errlen);

/* dkim_canon_header - append one header field (name:value, with its folding
 * CRLFs, no final CRLF) in canonical form + CRLF to out */
void dkim_canon_header(enum dkim_canon c, const char *field, size_t len, struct strbuf *out);

struct dkim_body;
/* dkim_body_new - body canonicalizer hashing with md ("sha256"/"sha1"),
 * covering at most limit octets (UINT64_MAX for all) */
struct dkim_body *dkim_body_new(enum dkim_canon c, const char *md, uint64_t limit);
void dkim_body_write(struct dkim_body *b, const char *p, size_t n);
/* dkim_body_finish - digest to out (>= 64 bytes); returns its length, and
 * the total canonical body length in *total */
size_t dkim_body_finish(struct dkim_body *b, unsigned char *out, uint64_t *total);
void dkim_body_free(struct dkim_body *b);

struct dkim_signkeys;
/* dkim_sign_load - keys of domain/selector under dir; NULL with err if
 * none usable (missing both, unreadable, RSA < 2048 bits) */
struct dkim_signkeys *dkim_sign_load(const char *dir, const char *domain, const char *selector,
				     char *err, size_t errlen);
void dkim_signkeys_free(struct dkim_signkeys *k);

struct dkim_sign;
struct dkim_sign *dkim_sign_new(const struct dkim_signkeys *k, time_t now);
/* dkim_sign_write - raw message bytes (header section then body), any
 * chunking; -1 if the header section exceeds DKIM_HEADER_MAX */
int dkim_sign_write(struct dkim_sign *s, const char *p, size_t n);
/* dkim_sign_finish - append the DKIM-Signature field(s), folded, each line
 * ending in CRLF, to prepend to the message. 0 or -1 with err. */
int dkim_sign_finish(struct dkim_sign *s, struct strbuf *out, char *err, size_t errlen);
void dkim_sign_free(struct dkim_sign *s);

struct dkim_sig_result {
	enum dkim_result result;
	enum dkim_alg alg;
	char domain[DKIM_DOMAIN_MAX + 1];    /* d=, "" if unparsable */
	char selector[DKIM_SELECTOR_MAX + 1];
	char b_prefix[16];
	int has_l;        /* l= present */
	int l_partial;    /* body had more octets than l= (LENIENT pass) */
	uint64_t l, body_len;
	int testing;      /* key t=y */
	char reason[160];
};

/* key fetcher: name is "<s>._domainkey.<d>"; must call cb exactly once
 * (possibly synchronously) unless cancelled; *handle for cancel */
struct dkim_fetcher {
	int (*fetch)(void *ctx, const char *name, dns_txt_cb cb, void *arg, void **handle);
	void (*cancel)(void *handle);
	void *ctx;
};
/* dkim_fetch_dns - fetcher for struct dns (ctx = struct dns *) */
int dkim_fetch_dns(void *ctx, const char *name, dns_txt_cb cb, void *arg, void **handle);
void dkim_cancel_dns(void *handle);

struct dkim_verify;
typedef void (*dkim_verify_cb)(const struct dkim_sig_result *res, size_t n, void *arg);
struct dkim_verify *dkim_verify_new(enum dkim_l_policy lp, time_t now);
int dkim_verify_write(struct dkim_verify *v, const char *p, size_t n);
/* dkim_verify_start - end of message: fetch keys, then cb once with one
 * result per DKIM-Signature (n = 0: none). -1 if already started. */
int dkim_verify_start(struct dkim_verify *v, const struct dkim_fetcher *f, dkim_verify_cb cb, void *arg);
/* dkim_verify_free - also cancels pending fetches (cb not called) */
void dkim_verify_free(struct dkim_verify *v);
/* dkim_verify_so_far - the results decided so far into out (at most max),
 * a signature whose key lookup has not answered as DKIM_TEMPERROR (a
 * deadline passed); the number written */
size_t dkim_verify_so_far(const struct dkim_verify *v, struct dkim_sig_result *out, size_t max);

/* dkim_result_ar - append the RFC 8601 resinfo for r ("dkim=pass
 * header.d=... header.s=... header.a=... header.b=\"...\""), with a
 * comment noting l= partial coverage or the failure reason */
void dkim_result_ar(const struct dkim_sig_result *r, struct strbuf *out);

#endif
