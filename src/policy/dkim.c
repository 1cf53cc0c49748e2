/*
 * dkim - DKIM signing and verification (RFC 6376, RFC 8463, RFC 8301).
 * See dkim.h for the API, the key layout and the l= policy.
 */
#include "policy/dkim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/str.h"
#include "core/xalloc.h"

/* dkim_result_str - RFC 8601 result keyword */
const char *dkim_result_str(enum dkim_result r)
{
	switch (r) {
	case DKIM_NONE: return "none";
	case DKIM_PASS: return "pass";
	case DKIM_FAIL: return "fail";
	case DKIM_NEUTRAL: return "neutral";
	case DKIM_TEMPERROR: return "temperror";
	case DKIM_PERMERROR: return "permerror";
	}
	return "?";
}

/* dkim_alg_str - the a= value */
const char *dkim_alg_str(enum dkim_alg a)
{
	switch (a) {
	case DKIM_ALG_RSA_SHA256: return "rsa-sha256";
	case DKIM_ALG_ED25519_SHA256: return "ed25519-sha256";
	case DKIM_ALG_RSA_SHA1: return "rsa-sha1";
	}
	return "?";
}

/* dkim_canon_str - the c= word */
const char *dkim_canon_str(enum dkim_canon c)
{
	return c == DKIM_CANON_RELAXED ? "relaxed" : "simple";
}

/* dkim_l_policy_str - for logs */
const char *dkim_l_policy_str(enum dkim_l_policy p)
{
	return p == DKIM_L_LENIENT ? "lenient" : "strict";
}

static int dkim_is_wsp(char c) { return c == ' ' || c == '\t'; }
static int dkim_is_fws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* dkim_b64_decode - strict base64 (FWS ignored); -1 on bad input/overflow */
static int dkim_b64_decode(const char *p, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
	unsigned acc = 0;
	int bits = 0, pad = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		int v;
		if (dkim_is_fws(c))
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		if (pad)
			return -1; /* data after padding */
		if (c >= 'A' && c <= 'Z') v = c - 'A';
		else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
		else if (c >= '0' && c <= '9') v = c - '0' + 52;
		else if (c == '+') v = 62;
		else if (c == '/') v = 63;
		else return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (pad > 2 || bits >= 6)
		return -1;
	*outlen = o;
	return 0;
}

/* dkim_b64_encode - base64 of n bytes into sb */
static void dkim_b64_encode(const unsigned char *p, size_t n, struct strbuf *sb)
{
	unsigned char *tmp = xmalloc(4 * ((n + 2) / 3) + 1);
	int len = EVP_EncodeBlock(tmp, p, (int)n);
	strbuf_add(sb, tmp, (size_t)len);
	free(tmp);
}

/* --- tag lists (RFC 6376 3.2) --- */

struct dkim_tag {
	const char *name, *val;
	size_t nlen, vlen;
};
#define DKIM_TAGS_MAX 32

/* dkim_tags_split - split "a=b; c=d" strictly; -1 on syntax error or
 * duplicate tag (3.2: "MUST be treated as an error") */
static int dkim_tags_split(const char *p, size_t n, struct dkim_tag *t, size_t *nt, char *err, size_t errlen)
{
	size_t i = 0, k = 0;
	while (i < n) {
		size_t s = i, e;
		while (i < n && p[i] != ';')
			i++;
		e = i;
		if (i < n)
			i++; /* ';' */
		while (s < e && dkim_is_fws(p[s]))
			s++;
		while (e > s && dkim_is_fws(p[e - 1]))
			e--;
		if (s == e) {
			if (i >= n)
				break; /* trailing ';' allowed */
			snprintf(err, errlen, "empty tag");
			return -1;
		}
		size_t eq = s;
		while (eq < e && p[eq] != '=')
			eq++;
		if (eq == e) {
			snprintf(err, errlen, "tag without '='");
			return -1;
		}
		size_t ne = eq;
		while (ne > s && dkim_is_fws(p[ne - 1]))
			ne--;
		if (ne == s) {
			snprintf(err, errlen, "empty tag name");
			return -1;
		}
		for (size_t j = s; j < ne; j++) {
			char c = p[j];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) {
				snprintf(err, errlen, "bad tag name");
				return -1;
			}
		}
		size_t vs = eq + 1;
		while (vs < e && dkim_is_fws(p[vs]))
			vs++;
		for (size_t j = 0; j < k; j++)
			if (t[j].nlen == ne - s && memcmp(t[j].name, p + s, ne - s) == 0) {
				snprintf(err, errlen, "duplicate tag %.*s", (int)(ne - s), p + s);
				return -1;
			}
		if (k >= DKIM_TAGS_MAX) {
			snprintf(err, errlen, "too many tags");
			return -1;
		}
		t[k].name = p + s;
		t[k].nlen = ne - s;
		t[k].val = p + vs;
		t[k].vlen = e - vs;
		k++;
	}
	*nt = k;
	return 0;
}

/* dkim_tag_get - tag named name, or NULL */
static const struct dkim_tag *dkim_tag_get(const struct dkim_tag *t, size_t nt, const char *name)
{
	size_t l = strlen(name);
	for (size_t i = 0; i < nt; i++)
		if (t[i].nlen == l && memcmp(t[i].name, name, l) == 0)
			return &t[i];
	return NULL;
}

/* dkim_tag_eq - value equals word (case-insensitive) */
static int dkim_tag_eq(const struct dkim_tag *t, const char *word)
{
	return t->vlen == strlen(word) && str_ncasecmp_ascii(t->val, word, t->vlen) == 0;
}

/* dkim_copy_domain - copy a domain value lower-cased, checking charset */
static int dkim_copy_domain(const char *p, size_t n, char *out, size_t cap)
{
	if (n == 0 || n >= cap)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '.' || c == '_'))
			return -1;
		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
	}
	out[n] = '\0';
	if (out[0] == '.' || out[n - 1] == '.' || strstr(out, ".."))
		return -1;
	return 0;
}

/* dkim_parse_num - decimal up to 20 digits */
static int dkim_parse_num(const struct dkim_tag *t, uint64_t *out)
{
	if (t->vlen == 0 || t->vlen > 20)
		return -1;
	return str_parse_u64(t->val, t->vlen, out);
}

/* dkim_sig_parse - see dkim.h */
int dkim_sig_parse(const char *val, size_t len, struct dkim_sig *sig, char *err, size_t errlen)
{
	struct dkim_tag t[DKIM_TAGS_MAX];
	size_t nt;
	const struct dkim_tag *x;

	memset(sig, 0, sizeof(*sig));
	if (dkim_tags_split(val, len, t, &nt, err, errlen) < 0)
		return -1;
	static const char *const req[] = {"v", "a", "b", "bh", "d", "h", "s"};
	for (size_t i = 0; i < sizeof(req) / sizeof(req[0]); i++)
		if (!dkim_tag_get(t, nt, req[i])) {
			snprintf(err, errlen, "missing %s= tag", req[i]);
			return -1;
		}
	if (!dkim_tag_eq(dkim_tag_get(t, nt, "v"), "1")) {
		snprintf(err, errlen, "bad v= (must be 1)");
		return -1;
	}
	x = dkim_tag_get(t, nt, "a");
	if (dkim_tag_eq(x, "rsa-sha256"))
		sig->alg = DKIM_ALG_RSA_SHA256;
	else if (dkim_tag_eq(x, "ed25519-sha256"))
		sig->alg = DKIM_ALG_ED25519_SHA256;
	else if (dkim_tag_eq(x, "rsa-sha1"))
		sig->alg = DKIM_ALG_RSA_SHA1;
	else {
		snprintf(err, errlen, "unknown a= algorithm");
		return -1;
	}
	sig->hcanon = sig->bcanon = DKIM_CANON_SIMPLE;
	if ((x = dkim_tag_get(t, nt, "c")) != NULL) {
		size_t sl = 0;
		while (sl < x->vlen && x->val[sl] != '/')
			sl++;
		struct dkim_tag h = {0}, b = {0};
		h.val = x->val;
		h.vlen = sl;
		b.val = x->val + sl + 1;
		b.vlen = sl < x->vlen ? x->vlen - sl - 1 : 0;
		if (dkim_tag_eq(&h, "relaxed"))
			sig->hcanon = DKIM_CANON_RELAXED;
		else if (!dkim_tag_eq(&h, "simple")) {
			snprintf(err, errlen, "bad c= header canonicalization");
			return -1;
		}
		if (sl < x->vlen) {
			if (dkim_tag_eq(&b, "relaxed"))
				sig->bcanon = DKIM_CANON_RELAXED;
			else if (!dkim_tag_eq(&b, "simple")) {
				snprintf(err, errlen, "bad c= body canonicalization");
				return -1;
			}
		}
	}
	if ((x = dkim_tag_get(t, nt, "q")) != NULL && !dkim_tag_eq(x, "dns/txt")) {
		snprintf(err, errlen, "unsupported q=");
		return -1;
	}
	x = dkim_tag_get(t, nt, "d");
	if (dkim_copy_domain(x->val, x->vlen, sig->d, sizeof(sig->d)) < 0) {
		snprintf(err, errlen, "bad d= domain");
		return -1;
	}
	x = dkim_tag_get(t, nt, "s");
	if (dkim_copy_domain(x->val, x->vlen, sig->s, sizeof(sig->s)) < 0) {
		snprintf(err, errlen, "bad s= selector");
		return -1;
	}
	x = dkim_tag_get(t, nt, "h");
	{
		size_t i = 0;
		int from = 0;
		while (i <= x->vlen) {
			size_t s = i;
			while (i < x->vlen && x->val[i] != ':')
				i++;
			size_t e = i;
			i++;
			while (s < e && dkim_is_fws(x->val[s]))
				s++;
			while (e > s && dkim_is_fws(x->val[e - 1]))
				e--;
			if (e == s || e - s >= sizeof(sig->h[0]) || sig->nh >= DKIM_H_MAX) {
				snprintf(err, errlen, "bad h= list");
				return -1;
			}
			for (size_t j = s; j < e; j++) {
				char c = x->val[j];
				if (c <= ' ' || c > '~' || c == ':') {
					snprintf(err, errlen, "bad h= header name");
					return -1;
				}
				sig->h[sig->nh][j - s] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
			}
			sig->h[sig->nh][e - s] = '\0';
			if (strcmp(sig->h[sig->nh], "from") == 0)
				from = 1;
			sig->nh++;
		}
		if (!from) {
			snprintf(err, errlen, "h= does not sign From");
			return -1;
		}
	}
	x = dkim_tag_get(t, nt, "bh");
	if (dkim_b64_decode(x->val, x->vlen, sig->bh, sizeof(sig->bh), &sig->bhlen) < 0 || sig->bhlen == 0) {
		snprintf(err, errlen, "bad bh= base64");
		return -1;
	}
	x = dkim_tag_get(t, nt, "b");
	if (dkim_b64_decode(x->val, x->vlen, sig->b, sizeof(sig->b), &sig->blen) < 0 || sig->blen == 0) {
		snprintf(err, errlen, "bad b= base64");
		return -1;
	}
	{
		size_t o = 0;
		for (size_t i = 0; i < x->vlen && o < 8; i++)
			if (!dkim_is_fws(x->val[i]))
				sig->b_prefix[o++] = x->val[i];
		sig->b_prefix[o] = '\0';
	}
	if ((x = dkim_tag_get(t, nt, "i")) != NULL) {
		size_t at = 0;
		while (at < x->vlen && x->val[at] != '@')
			at++;
		char dom[DKIM_DOMAIN_MAX + 1];
		if (at == x->vlen || x->vlen >= sizeof(sig->i) ||
		    dkim_copy_domain(x->val + at + 1, x->vlen - at - 1, dom, sizeof(dom)) < 0) {
			snprintf(err, errlen, "bad i= identity");
			return -1;
		}
		size_t dl = strlen(dom), sl = strlen(sig->d);
		/* i= must be d= or a subdomain of it (3.5) */
		if (!(dl == sl && strcmp(dom, sig->d) == 0) &&
		    !(dl > sl && dom[dl - sl - 1] == '.' && strcmp(dom + dl - sl, sig->d) == 0)) {
			snprintf(err, errlen, "i= domain outside d=");
			return -1;
		}
		for (size_t j = 0; j < at; j++)
			if ((unsigned char)x->val[j] <= ' ' || (unsigned char)x->val[j] > '~') {
				snprintf(err, errlen, "bad i= local part");
				return -1;
			}
		memcpy(sig->i, x->val, x->vlen);
		sig->i[x->vlen] = '\0';
	}
	if ((x = dkim_tag_get(t, nt, "l")) != NULL) {
		if (dkim_parse_num(x, &sig->l) < 0) {
			snprintf(err, errlen, "bad l=");
			return -1;
		}
		sig->has_l = 1;
	}
	if ((x = dkim_tag_get(t, nt, "t")) != NULL) {
		if (dkim_parse_num(x, &sig->t) < 0) {
			snprintf(err, errlen, "bad t=");
			return -1;
		}
		sig->has_t = 1;
	}
	if ((x = dkim_tag_get(t, nt, "x")) != NULL) {
		if (dkim_parse_num(x, &sig->x) < 0 || (sig->has_t && sig->x < sig->t)) {
			snprintf(err, errlen, "bad x=");
			return -1;
		}
		sig->has_x = 1;
	}
	return 0;
}

/* dkim_tag_list_has - a colon-separated tag value (h=, s=, t= of a key
 * record) holds word a or word b (b may be NULL); FWS around items ignored */
static int dkim_tag_list_has(const struct dkim_tag *x, const char *a, const char *b)
{
	size_t i = 0;
	while (i < x->vlen) {
		size_t s = i;
		while (i < x->vlen && x->val[i] != ':')
			i++;
		struct dkim_tag w = {0};
		w.val = x->val + s;
		w.vlen = i - s;
		while (w.vlen && dkim_is_fws(w.val[0])) {
			w.val++;
			w.vlen--;
		}
		while (w.vlen && dkim_is_fws(w.val[w.vlen - 1]))
			w.vlen--;
		if (dkim_tag_eq(&w, a) || (b != NULL && dkim_tag_eq(&w, b)))
			return 1;
		i++;
	}
	return 0;
}

/* dkim_key_parse - see dkim.h */
int dkim_key_parse(const char *txt, size_t len, struct dkim_key *key, char *err, size_t errlen)
{
	struct dkim_tag t[DKIM_TAGS_MAX];
	size_t nt;
	const struct dkim_tag *x;

	memset(key, 0, sizeof(*key));
	if (dkim_tags_split(txt, len, t, &nt, err, errlen) < 0)
		return -1;
	if ((x = dkim_tag_get(t, nt, "v")) != NULL && (x != &t[0] || !dkim_tag_eq(x, "DKIM1"))) {
		snprintf(err, errlen, "bad key v= (must be first and DKIM1)");
		return -1;
	}
	if ((x = dkim_tag_get(t, nt, "k")) != NULL) {
		if (dkim_tag_eq(x, "ed25519"))
			key->k_ed25519 = 1;
		else if (!dkim_tag_eq(x, "rsa")) {
			snprintf(err, errlen, "unknown key type k=");
			return -1;
		}
	}
	if ((x = dkim_tag_get(t, nt, "h")) != NULL && !dkim_tag_list_has(x, "sha256", NULL)) {
		/* the acceptable hashes: sha256 must be among them */
		snprintf(err, errlen, "key h= excludes sha256");
		return -1;
	}
	if ((x = dkim_tag_get(t, nt, "s")) != NULL && !dkim_tag_list_has(x, "*", "email")) {
		snprintf(err, errlen, "key s= not for email");
		return -1;
	}
	if ((x = dkim_tag_get(t, nt, "t")) != NULL) {
		key->testing = dkim_tag_list_has(x, "y", NULL);
		key->strict = dkim_tag_list_has(x, "s", NULL);
	}
	if ((x = dkim_tag_get(t, nt, "p")) == NULL) {
		snprintf(err, errlen, "key without p=");
		return -1;
	}
	if (x->vlen == 0) {
		key->revoked = 1;
		return 0;
	}
	if (dkim_b64_decode(x->val, x->vlen, key->p, sizeof(key->p), &key->plen) < 0 || key->plen == 0) {
		snprintf(err, errlen, "bad key p= base64");
		return -1;
	}
	return 0;
}

/* --- canonicalization (RFC 6376 3.4) --- */

/* dkim_canon_header - see dkim.h */
void dkim_canon_header(enum dkim_canon c, const char *f, size_t n, struct strbuf *out)
{
	if (c == DKIM_CANON_SIMPLE) {
		strbuf_add(out, f, n);
		strbuf_add(out, "\r\n", 2);
		return;
	}
	size_t colon = 0;
	while (colon < n && f[colon] != ':')
		colon++;
	size_t ne = colon;
	while (ne > 0 && dkim_is_wsp(f[ne - 1]))
		ne--;
	for (size_t i = 0; i < ne; i++) {
		char ch = f[i];
		strbuf_addc(out, (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch);
	}
	strbuf_addc(out, ':');
	int wsp = 0, any = 0;
	for (size_t i = colon + 1; i < n; i++) {
		char ch = f[i];
		if (ch == '\r' || ch == '\n')
			continue; /* unfold */
		if (dkim_is_wsp(ch)) {
			wsp = 1;
			continue;
		}
		if (wsp && any)
			strbuf_addc(out, ' ');
		wsp = 0;
		any = 1;
		strbuf_addc(out, ch);
	}
	strbuf_add(out, "\r\n", 2);
}

struct dkim_body {
	enum dkim_canon c;
	EVP_MD_CTX *md;
	uint64_t limit, total;
	uint64_t crlf;   /* pending empty line ends */
	int wsp;         /* relaxed: pending whitespace */
	int cr;          /* a CR seen, waiting for LF */
	int line;        /* current line has content */
	int any;         /* any content emitted */
};

/* dkim_body_new - see dkim.h */
struct dkim_body *dkim_body_new(enum dkim_canon c, const char *md, uint64_t limit)
{
	struct dkim_body *b = xcalloc(1, sizeof(*b));
	b->c = c;
	b->limit = limit;
	b->md = EVP_MD_CTX_new();
	if (!b->md || !EVP_DigestInit_ex(b->md, EVP_get_digestbyname(md), NULL)) {
		EVP_MD_CTX_free(b->md);
		free(b);
		return NULL;
	}
	return b;
}

/* dkim_body_emit - canonical bytes: counted, hashed up to the limit */
static void dkim_body_emit(struct dkim_body *b, const char *p, size_t n)
{
	if (b->total < b->limit) {
		uint64_t room = b->limit - b->total;
		EVP_DigestUpdate(b->md, p, n < room ? n : (size_t)room);
	}
	b->total += n;
}

/* dkim_body_char - one content character (not a line end) */
static void dkim_body_char(struct dkim_body *b, char c)
{
	if (b->c == DKIM_CANON_RELAXED && dkim_is_wsp(c)) {
		b->wsp = 1;
		return;
	}
	for (; b->crlf; b->crlf--)
		dkim_body_emit(b, "\r\n", 2);
	if (b->wsp)
		dkim_body_emit(b, " ", 1);
	b->wsp = 0;
	dkim_body_emit(b, &c, 1);
	b->line = 1;
	b->any = 1;
}

/* dkim_body_eol - a line end: trailing WSP dropped, CRLF held back so
 * trailing empty lines can be ignored */
static void dkim_body_eol(struct dkim_body *b)
{
	b->wsp = 0;
	b->line = 0;
	b->crlf++;
}

/* dkim_body_write - see dkim.h */
void dkim_body_write(struct dkim_body *b, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (b->cr) {
			b->cr = 0;
			if (c == '\n') {
				dkim_body_eol(b);
				continue;
			}
			dkim_body_char(b, '\r');
		}
		if (c == '\r')
			b->cr = 1;
		else if (c == '\n')
			dkim_body_eol(b);
		else
			dkim_body_char(b, c);
	}
}

/* dkim_body_finish - see dkim.h */
size_t dkim_body_finish(struct dkim_body *b, unsigned char *out, uint64_t *total)
{
	unsigned len = 0;
	if (b->cr) {
		b->cr = 0;
		dkim_body_char(b, '\r');
	}
	/* simple: always exactly one final CRLF (an empty body is CRLF);
	 * relaxed: a CRLF only after a non-empty body (3.4.3, 3.4.4) */
	if (b->c == DKIM_CANON_SIMPLE || b->any)
		dkim_body_emit(b, "\r\n", 2);
	EVP_DigestFinal_ex(b->md, out, &len);
	if (total)
		*total = b->total;
	return len;
}

/* dkim_body_free - release */
void dkim_body_free(struct dkim_body *b)
{
	if (!b)
		return;
	EVP_MD_CTX_free(b->md);
	free(b);
}

/* --- header section collection, shared by signer and verifier --- */

struct dkim_hdrs {
	struct strbuf raw;   /* CRLF-normalized header section */
	int done, over, cr;
	size_t fs[DKIM_FIELDS_MAX], fl[DKIM_FIELDS_MAX]; /* field offsets, lengths w/o CRLF */
	size_t nf;
};

/* dkim_hdrs_write - feed bytes; returns how many were header bytes (the
 * rest are body); sets done at the blank line */
static size_t dkim_hdrs_write(struct dkim_hdrs *h, const char *p, size_t n)
{
	size_t i;
	for (i = 0; i < n && !h->done; i++) {
		char c = p[i];
		if (c == '\n') {
			if (h->raw.len < DKIM_HEADER_MAX)
				strbuf_add(&h->raw, "\r\n", 2);
			else
				h->over = 1;
			if (h->raw.len == 2 || (h->raw.len >= 4 && memcmp(h->raw.s + h->raw.len - 4, "\r\n\r\n", 4) == 0))
				h->done = 1;
			continue;
		}
		if (c == '\r')
			continue; /* CRLF and LF are both line ends; lone CR dropped */
		if (h->raw.len < DKIM_HEADER_MAX)
			strbuf_addc(&h->raw, c);
		else
			h->over = 1;
	}
	return i;
}

/* dkim_hdrs_split - index the fields of the collected section */
static void dkim_hdrs_split(struct dkim_hdrs *h)
{
	const char *s = h->raw.s ? h->raw.s : "";
	size_t n = h->raw.len, i = 0;
	h->nf = 0;
	while (i < n) {
		size_t st = i;
		if (s[i] == '\r')
			break; /* blank line */
		for (;;) {
			char *e = memmem(s + i, n - i, "\r\n", 2);
			if (!e) {
				i = n;
				break;
			}
			i = (size_t)(e - s) + 2;
			if (i >= n || !dkim_is_wsp(s[i]))
				break;
		}
		size_t len = i - st;
		if (len >= 2 && s[st + len - 1] == '\n')
			len -= 2;
		if (h->nf < DKIM_FIELDS_MAX && memchr(s + st, ':', len)) {
			h->fs[h->nf] = st;
			h->fl[h->nf] = len;
			h->nf++;
		}
	}
}

/* dkim_field_is - field i has the given name (case-insensitive) */
static int dkim_field_is(const struct dkim_hdrs *h, size_t i, const char *name)
{
	const char *f = h->raw.s + h->fs[i];
	size_t l = strlen(name), c = 0;
	while (c < h->fl[i] && f[c] != ':')
		c++;
	while (c > 0 && dkim_is_wsp(f[c - 1]))
		c--;
	return c == l && str_ncasecmp_ascii(f, name, l) == 0;
}

/* dkim_hdrs_select - canonical form of the fields named in h (bottom-up,
 * each instance used once; missing names contribute nothing, 5.4.2) */
static void dkim_hdrs_select(const struct dkim_hdrs *h, char (*names)[80], size_t nn, enum dkim_canon c,
			     struct strbuf *out)
{
	unsigned char used[DKIM_FIELDS_MAX] = {0};
	for (size_t k = 0; k < nn; k++) {
		for (size_t i = h->nf; i-- > 0;) {
			if (!used[i] && dkim_field_is(h, i, names[k])) {
				used[i] = 1;
				dkim_canon_header(c, h->raw.s + h->fs[i], h->fl[i], out);
				break;
			}
		}
	}
}

/* dkim_strip_b - the signature field with the b= value removed (3.7) */
static void dkim_strip_b(const char *f, size_t n, struct strbuf *out)
{
	size_t colon = 0;
	while (colon < n && f[colon] != ':')
		colon++;
	strbuf_add(out, f, colon < n ? colon + 1 : n);
	size_t i = colon + 1;
	while (i < n) {
		size_t s = i;
		while (i < n && f[i] != ';')
			i++;
		size_t e = i; /* segment [s, e) */
		size_t eq = s;
		while (eq < e && f[eq] != '=')
			eq++;
		size_t ns = s, ne = eq;
		while (ns < ne && dkim_is_fws(f[ns]))
			ns++;
		while (ne > ns && dkim_is_fws(f[ne - 1]))
			ne--;
		if (eq < e && ne - ns == 1 && f[ns] == 'b')
			strbuf_add(out, f + s, eq + 1 - s);
		else
			strbuf_add(out, f + s, e - s);
		if (i < n) {
			strbuf_addc(out, ';');
			i++;
		}
	}
}

/* --- signing --- */

struct dkim_signkeys {
	char domain[DKIM_DOMAIN_MAX + 1];
	char selector[DKIM_SELECTOR_MAX + 1];
	EVP_PKEY *rsa, *ed;
};

/* dkim_load_pem - private key from path; NULL if absent/unreadable */
static EVP_PKEY *dkim_load_pem(const char *path, int *exists)
{
	FILE *f = fopen(path, "r");
	*exists = f != NULL || errno != ENOENT;
	if (!f)
		return NULL;
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	return k;
}

/* dkim_sign_load - see dkim.h */
struct dkim_signkeys *dkim_sign_load(const char *dir, const char *domain, const char *selector, char *err,
				     size_t errlen)
{
	struct dkim_signkeys *k = xcalloc(1, sizeof(*k));
	char path[4096];
	int ex1, ex2;
	if (dkim_copy_domain(domain, strlen(domain), k->domain, sizeof(k->domain)) < 0 ||
	    dkim_copy_domain(selector, strlen(selector), k->selector, sizeof(k->selector)) < 0) {
		snprintf(err, errlen, "bad domain or selector");
		free(k);
		return NULL;
	}
	snprintf(path, sizeof(path), "%s/%s/%s.rsa.pem", dir, k->domain, k->selector);
	k->rsa = dkim_load_pem(path, &ex1);
	if (ex1 && (!k->rsa || EVP_PKEY_get_base_id(k->rsa) != EVP_PKEY_RSA || EVP_PKEY_get_bits(k->rsa) < 2048)) {
		/* RFC 8301 3.2: signers MUST use >= 1024; we require 2048 */
		snprintf(err, errlen, "%s: unreadable, not RSA, or under 2048 bits", path);
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/%s/%s.ed25519.pem", dir, k->domain, k->selector);
	k->ed = dkim_load_pem(path, &ex2);
	if (ex2 && (!k->ed || EVP_PKEY_get_base_id(k->ed) != EVP_PKEY_ED25519)) {
		snprintf(err, errlen, "%s: unreadable or not Ed25519", path);
		goto fail;
	}
	if (!k->rsa && !k->ed) {
		snprintf(err, errlen, "no key %s/%s/%s.{rsa,ed25519}.pem", dir, k->domain, k->selector);
		goto fail;
	}
	return k;
fail:
	dkim_signkeys_free(k);
	return NULL;
}

/* dkim_signkeys_free - release */
void dkim_signkeys_free(struct dkim_signkeys *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->rsa);
	EVP_PKEY_free(k->ed);
	free(k);
}

struct dkim_sign {
	const struct dkim_signkeys *k;
	time_t now;
	struct dkim_hdrs h;
	struct dkim_body *body;
};

/* dkim_sign_new - signer for one message */
struct dkim_sign *dkim_sign_new(const struct dkim_signkeys *k, time_t now)
{
	struct dkim_sign *s = xcalloc(1, sizeof(*s));
	s->k = k;
	s->now = now;
	strbuf_init(&s->h.raw);
	s->body = dkim_body_new(DKIM_CANON_RELAXED, "sha256", UINT64_MAX);
	if (!s->body) {
		free(s);
		return NULL;
	}
	return s;
}

/* dkim_sign_write - see dkim.h */
int dkim_sign_write(struct dkim_sign *s, const char *p, size_t n)
{
	size_t used = s->h.done ? 0 : dkim_hdrs_write(&s->h, p, n);
	if (s->h.over)
		return -1;
	if (used < n)
		dkim_body_write(s->body, p + used, n - used);
	return 0;
}

static const char *const dkim_signed_names[] = {
	"from", "subject", "date", "to", "cc", "message-id", "reply-to", "in-reply-to", "references",
	"mime-version", "content-type", "content-transfer-encoding",
};

/* dkim_sign_one - build one signature field with key pk into out */
static int dkim_sign_one(struct dkim_sign *s, EVP_PKEY *pk, int ed, const char *bh64, char (*names)[80],
			 size_t nn, struct strbuf *out, char *err, size_t errlen)
{
	struct strbuf f, data;
	strbuf_init(&f);
	strbuf_init(&data);
	strbuf_addf(&f, "DKIM-Signature: v=1; a=%s; c=relaxed/relaxed; d=%s; s=%s;\r\n\tt=%lld; h=",
		    ed ? "ed25519-sha256" : "rsa-sha256", s->k->domain, s->k->selector, (long long)s->now);
	size_t linelen = 0;
	for (size_t i = 0; i < nn; i++) {
		size_t l = strlen(names[i]);
		if (linelen + l > 60) {
			strbuf_add(&f, "\r\n\t", 3);
			linelen = 0;
		}
		if (i)
			strbuf_addc(&f, ':');
		strbuf_adds(&f, names[i]);
		linelen += l + 1;
	}
	strbuf_addf(&f, ";\r\n\tbh=%s;\r\n\tb=", bh64);
	dkim_hdrs_select(&s->h, names, nn, DKIM_CANON_RELAXED, &data);
	dkim_canon_header(DKIM_CANON_RELAXED, f.s, f.len, &data);
	data.len -= 2; /* the signature field is hashed without its CRLF (3.7) */

	unsigned char sig[DKIM_B_MAX], dg[32];
	size_t siglen = sizeof(sig);
	int ok = 0;
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	if (ed) {
		/* RFC 8463 3: Ed25519 (pure) over the SHA-256 of the data */
		unsigned dl = 0;
		ok = EVP_Digest(data.s, data.len, dg, &dl, EVP_sha256(), NULL) && mc &&
		     EVP_DigestSignInit(mc, NULL, NULL, NULL, pk) == 1 &&
		     EVP_DigestSign(mc, sig, &siglen, dg, dl) == 1;
	} else {
		ok = mc && EVP_DigestSignInit(mc, NULL, EVP_sha256(), NULL, pk) == 1 &&
		     EVP_DigestSign(mc, NULL, &siglen, (unsigned char *)data.s, data.len) == 1 &&
		     siglen <= sizeof(sig) &&
		     EVP_DigestSign(mc, sig, &siglen, (unsigned char *)data.s, data.len) == 1;
	}
	EVP_MD_CTX_free(mc);
	strbuf_free(&data);
	if (!ok) {
		snprintf(err, errlen, "%s signing failed", ed ? "ed25519" : "rsa");
		strbuf_free(&f);
		return -1;
	}
	struct strbuf b64;
	strbuf_init(&b64);
	dkim_b64_encode(sig, siglen, &b64);
	for (size_t i = 0; i < b64.len; i += 72) {
		if (i)
			strbuf_add(&f, "\r\n\t ", 4);
		strbuf_add(&f, b64.s + i, b64.len - i < 72 ? b64.len - i : 72);
	}
	strbuf_add(&f, "\r\n", 2);
	strbuf_add(out, f.s, f.len);
	strbuf_free(&b64);
	strbuf_free(&f);
	return 0;
}

/* dkim_sign_finish - see dkim.h */
int dkim_sign_finish(struct dkim_sign *s, struct strbuf *out, char *err, size_t errlen)
{
	unsigned char bh[64];
	size_t bhl = dkim_body_finish(s->body, bh, NULL);
	struct strbuf bh64;
	char names[DKIM_H_MAX][80];
	size_t nn = 0;
	int rc = 0;

	if (s->h.over) {
		snprintf(err, errlen, "header section too large");
		return -1;
	}
	dkim_hdrs_split(&s->h);
	int from = 0;
	for (size_t i = 0; i < s->h.nf && nn < DKIM_H_MAX - 1; i++) {
		const char *fp = s->h.raw.s + s->h.fs[i];
		size_t c = 0;
		while (c < s->h.fl[i] && fp[c] != ':' && !dkim_is_wsp(fp[c]))
			c++;
		if (c == 0 || c >= 80)
			continue;
		int want = str_has_prefix_ci(fp, c, "list-");
		for (size_t j = 0; !want && j < sizeof(dkim_signed_names) / sizeof(dkim_signed_names[0]); j++)
			want = strlen(dkim_signed_names[j]) == c && str_ncasecmp_ascii(fp, dkim_signed_names[j], c) == 0;
		if (!want)
			continue;
		for (size_t j = 0; j < c; j++)
			names[nn][j] = (fp[j] >= 'A' && fp[j] <= 'Z') ? (char)(fp[j] + 32) : fp[j];
		names[nn][c] = '\0';
		if (strcmp(names[nn], "from") == 0)
			from = 1;
		nn++;
	}
	if (!from) {
		snprintf(err, errlen, "message has no From field");
		return -1;
	}
	/* oversign From: a From added later cannot slip in unsigned */
	strcpy(names[nn++], "from");
	strbuf_init(&bh64);
	dkim_b64_encode(bh, bhl, &bh64);
	strbuf_addc(&bh64, '\0');
	/* Ed25519 first: RFC 8463 suggests both; order does not matter */
	if (s->k->ed)
		rc = dkim_sign_one(s, s->k->ed, 1, bh64.s, names, nn, out, err, errlen);
	if (rc == 0 && s->k->rsa)
		rc = dkim_sign_one(s, s->k->rsa, 0, bh64.s, names, nn, out, err, errlen);
	strbuf_free(&bh64);
	return rc;
}

/* dkim_sign_free - release */
void dkim_sign_free(struct dkim_sign *s)
{
	if (!s)
		return;
	strbuf_free(&s->h.raw);
	dkim_body_free(s->body);
	free(s);
}

/* --- verification --- */

struct dkim_vsig {
	struct dkim_verify *v;
	struct dkim_sig sig;
	size_t field;            /* index of its header field */
	struct dkim_body *body;  /* NULL when already decided */
	void *handle;            /* pending fetch */
	int pending;
};

struct dkim_verify {
	enum dkim_l_policy lp;
	time_t now;
	struct dkim_hdrs h;
	int started, body_started;
	struct dkim_vsig vs[DKIM_SIGS_MAX];
	struct dkim_sig_result res[DKIM_SIGS_MAX];
	size_t ns;
	int npending;
	const struct dkim_fetcher *f;
	dkim_verify_cb cb;
	void *cb_arg;
};

/* dkim_verify_new - verifier for one message */
struct dkim_verify *dkim_verify_new(enum dkim_l_policy lp, time_t now)
{
	struct dkim_verify *v = xcalloc(1, sizeof(*v));
	v->lp = lp;
	v->now = now;
	strbuf_init(&v->h.raw);
	return v;
}

/* dkim_verify_headers_done - parse the DKIM-Signature fields, set up one
 * body hasher per signature (each has its own c= and l=) */
static void dkim_verify_headers_done(struct dkim_verify *v)
{
	v->body_started = 1;
	if (v->h.over)
		return; /* oversized header section: no result (see dkim.h) */
	dkim_hdrs_split(&v->h);
	for (size_t i = 0; i < v->h.nf && v->ns < DKIM_SIGS_MAX; i++) {
		if (!dkim_field_is(&v->h, i, "dkim-signature"))
			continue;
		struct dkim_vsig *vs = &v->vs[v->ns];
		struct dkim_sig_result *r = &v->res[v->ns];
		const char *fp = v->h.raw.s + v->h.fs[i];
		const char *colon = memchr(fp, ':', v->h.fl[i]);
		vs->v = v;
		vs->field = i;
		v->ns++;
		if (dkim_sig_parse(colon + 1, v->h.fl[i] - (size_t)(colon + 1 - fp), &vs->sig, r->reason,
				   sizeof(r->reason)) < 0) {
			r->result = DKIM_PERMERROR;
			continue;
		}
		r->alg = vs->sig.alg;
		memcpy(r->domain, vs->sig.d, sizeof(r->domain));
		memcpy(r->selector, vs->sig.s, sizeof(r->selector));
		memcpy(r->b_prefix, vs->sig.b_prefix, sizeof(r->b_prefix));
		r->has_l = vs->sig.has_l;
		r->l = vs->sig.l;
		if (vs->sig.alg == DKIM_ALG_RSA_SHA1) {
			r->result = DKIM_PERMERROR; /* RFC 8301 3.1 */
			snprintf(r->reason, sizeof(r->reason), "rsa-sha1 is not accepted (RFC 8301)");
			continue;
		}
		if (vs->sig.has_x && (uint64_t)v->now > vs->sig.x) {
			r->result = DKIM_PERMERROR;
			snprintf(r->reason, sizeof(r->reason), "signature expired (x=)");
			continue;
		}
		vs->body = dkim_body_new(vs->sig.bcanon, "sha256", vs->sig.has_l ? vs->sig.l : UINT64_MAX);
		if (!vs->body) {
			r->result = DKIM_TEMPERROR;
			snprintf(r->reason, sizeof(r->reason), "out of memory");
		}
	}
}

/* dkim_verify_write - see dkim.h */
int dkim_verify_write(struct dkim_verify *v, const char *p, size_t n)
{
	if (v->started)
		return -1;
	size_t used = v->h.done ? 0 : dkim_hdrs_write(&v->h, p, n);
	if (v->h.over)
		return -1;
	if (v->h.done && !v->body_started)
		dkim_verify_headers_done(v);
	if (used < n)
		for (size_t i = 0; i < v->ns; i++)
			if (v->vs[i].body)
				dkim_body_write(v->vs[i].body, p + used, n - used);
	return 0;
}

/* dkim_verify_done_one - one signature decided; the callback after the last */
static void dkim_verify_done_one(struct dkim_verify *v)
{
	if (--v->npending == 0)
		v->cb(v->res, v->ns, v->cb_arg);
}

/* dkim_verify_check - verify one signature with a parsed key */
static void dkim_verify_check(struct dkim_vsig *vs, const struct dkim_key *key, struct dkim_sig_result *r)
{
	struct dkim_verify *v = vs->v;
	const struct dkim_sig *sig = &vs->sig;
	EVP_PKEY *pk = NULL;
	const unsigned char *pp = key->p;

	r->testing = key->testing;
	if (key->revoked) {
		r->result = DKIM_PERMERROR;
		snprintf(r->reason, sizeof(r->reason), "key revoked (empty p=)");
		return;
	}
	if (key->k_ed25519 != (sig->alg == DKIM_ALG_ED25519_SHA256)) {
		r->result = DKIM_PERMERROR;
		snprintf(r->reason, sizeof(r->reason), "key type does not match a=");
		return;
	}
	if (key->strict && sig->i[0]) {
		const char *at = strrchr(sig->i, '@');
		if (!at || str_casecmp_ascii(at + 1, sig->d) != 0) {
			r->result = DKIM_PERMERROR;
			snprintf(r->reason, sizeof(r->reason), "key t=s forbids i= subdomain");
			return;
		}
	}
	if (key->k_ed25519) {
		if (key->plen != 32) {
			r->result = DKIM_PERMERROR;
			snprintf(r->reason, sizeof(r->reason), "bad ed25519 key length");
			return;
		}
		pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key->p, 32);
	} else {
		pk = d2i_PUBKEY(NULL, &pp, (long)key->plen);
		if (!pk) {
			pp = key->p; /* some publish the bare RSAPublicKey */
			pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &pp, (long)key->plen);
		}
		if (pk && EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
			EVP_PKEY_free(pk);
			pk = NULL;
		}
		if (pk && EVP_PKEY_get_bits(pk) < 1024) {
			EVP_PKEY_free(pk);
			r->result = DKIM_PERMERROR; /* RFC 8301 3.2 */
			snprintf(r->reason, sizeof(r->reason), "RSA key under 1024 bits");
			return;
		}
	}
	if (!pk) {
		r->result = DKIM_PERMERROR;
		snprintf(r->reason, sizeof(r->reason), "unusable public key");
		return;
	}
	/* body hash */
	unsigned char bh[64];
	uint64_t total = 0;
	size_t bhl = dkim_body_finish(vs->body, bh, &total);
	dkim_body_free(vs->body);
	vs->body = NULL;
	r->body_len = total;
	if (sig->has_l && sig->l > total) {
		r->result = DKIM_FAIL;
		snprintf(r->reason, sizeof(r->reason), "l= larger than the body");
		goto out;
	}
	if (bhl != sig->bhlen || memcmp(bh, sig->bh, bhl) != 0) {
		r->result = DKIM_FAIL;
		snprintf(r->reason, sizeof(r->reason), "body hash mismatch");
		goto out;
	}
	/* header hash */
	struct strbuf data;
	strbuf_init(&data);
	dkim_hdrs_select(&v->h, (char (*)[80])sig->h, sig->nh, sig->hcanon, &data);
	{
		struct strbuf stripped;
		strbuf_init(&stripped);
		dkim_strip_b(v->h.raw.s + v->h.fs[vs->field], v->h.fl[vs->field], &stripped);
		dkim_canon_header(sig->hcanon, stripped.s, stripped.len, &data);
		data.len -= 2;
		strbuf_free(&stripped);
	}
	int ok;
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	if (key->k_ed25519) {
		unsigned char dg[32];
		unsigned dl = 0;
		ok = mc && EVP_Digest(data.s, data.len, dg, &dl, EVP_sha256(), NULL) &&
		     EVP_DigestVerifyInit(mc, NULL, NULL, NULL, pk) == 1 &&
		     EVP_DigestVerify(mc, sig->b, sig->blen, dg, dl) == 1;
	} else {
		ok = mc && EVP_DigestVerifyInit(mc, NULL, EVP_sha256(), NULL, pk) == 1 &&
		     EVP_DigestVerify(mc, sig->b, sig->blen, (unsigned char *)data.s, data.len) == 1;
	}
	EVP_MD_CTX_free(mc);
	strbuf_free(&data);
	if (!ok) {
		r->result = DKIM_FAIL;
		snprintf(r->reason, sizeof(r->reason), "signature did not verify");
		goto out;
	}
	if (sig->has_l && total > sig->l) {
		/* content after l= octets is unsigned: see dkim.h policy */
		r->l_partial = 1;
		if (v->lp == DKIM_L_STRICT) {
			r->result = DKIM_FAIL;
			snprintf(r->reason, sizeof(r->reason), "%llu unsigned octets after l=%llu",
				 (unsigned long long)(total - sig->l), (unsigned long long)sig->l);
			goto out;
		}
		snprintf(r->reason, sizeof(r->reason), "signature covers only l=%llu of %llu octets",
			 (unsigned long long)sig->l, (unsigned long long)total);
	}
	r->result = DKIM_PASS;
out:
	EVP_PKEY_free(pk);
}

/* dkim_verify_key_cb - key TXT answer for one signature */
static void dkim_verify_key_cb(const struct dns_txt_result *res, void *arg)
{
	struct dkim_vsig *vs = arg;
	struct dkim_sig_result *r = &vs->v->res[vs - vs->v->vs];
	vs->pending = 0;
	vs->handle = NULL;
	if (res->status == DNS_TEMPFAIL || res->status == DNS_BADDATA) {
		r->result = DKIM_TEMPERROR;
		snprintf(r->reason, sizeof(r->reason), "key lookup: %s", dns_status_str(res->status));
	} else if (res->status != DNS_OK || res->ntxts == 0) {
		r->result = DKIM_PERMERROR;
		snprintf(r->reason, sizeof(r->reason), "no key record");
	} else {
		struct dkim_key *key = xmalloc(sizeof(*key));
		char err[128] = "";
		size_t i, first = SIZE_MAX;
		int want_ed = vs->sig.alg == DKIM_ALG_ED25519_SHA256;
		/* several records: the first of the signature's key type, else
		 * the first that parses (RFC 6376 leaves this undefined) */
		for (i = 0; i < res->ntxts; i++)
			if (dkim_key_parse(res->txts[i].data, res->txts[i].len, key, err, sizeof(err)) == 0) {
				if (first == SIZE_MAX)
					first = i;
				if (key->k_ed25519 == want_ed)
					break;
			}
		if (i == res->ntxts && first != SIZE_MAX) {
			i = first;
			dkim_key_parse(res->txts[i].data, res->txts[i].len, key, err, sizeof(err));
		}
		if (i == res->ntxts) {
			r->result = DKIM_PERMERROR;
			snprintf(r->reason, sizeof(r->reason), "key record: %s", err);
		} else {
			dkim_verify_check(vs, key, r);
		}
		free(key);
	}
	dkim_verify_done_one(vs->v);
}

/* dkim_verify_start - see dkim.h */
int dkim_verify_start(struct dkim_verify *v, const struct dkim_fetcher *f, dkim_verify_cb cb, void *arg)
{
	if (v->started)
		return -1;
	v->started = 1;
	if (!v->body_started)
		dkim_verify_headers_done(v); /* message without a body */
	v->f = f;
	v->cb = cb;
	v->cb_arg = arg;
	v->npending = 1; /* held until every fetch is launched (sync fetchers) */
	for (size_t i = 0; i < v->ns; i++) {
		struct dkim_vsig *vs = &v->vs[i];
		if (v->res[i].result != DKIM_NONE)
			continue;
		char name[DKIM_SELECTOR_MAX + DKIM_DOMAIN_MAX + 16];
		snprintf(name, sizeof(name), "%s._domainkey.%s", vs->sig.s, vs->sig.d);
		v->npending++;
		vs->pending = 1;
		if (f->fetch(f->ctx, name, dkim_verify_key_cb, vs, &vs->handle) < 0) {
			vs->pending = 0;
			v->res[i].result = DKIM_TEMPERROR;
			snprintf(v->res[i].reason, sizeof(v->res[i].reason), "key lookup failed to start");
			v->npending--;
		}
	}
	dkim_verify_done_one(v);
	return 0;
}

/* dkim_verify_so_far - see dkim.h */
size_t dkim_verify_so_far(const struct dkim_verify *v, struct dkim_sig_result *out, size_t max)
{
	size_t n = v->ns < max ? v->ns : max;
	for (size_t i = 0; i < n; i++) {
		out[i] = v->res[i];
		if (v->vs[i].pending) {
			out[i].result = DKIM_TEMPERROR;
			snprintf(out[i].reason, sizeof(out[i].reason), "key lookup timed out");
		}
	}
	return n;
}

/* dkim_verify_free - release, cancelling pending fetches */
void dkim_verify_free(struct dkim_verify *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->ns; i++) {
		if (v->vs[i].pending && v->f && v->f->cancel)
			v->f->cancel(v->vs[i].handle);
		dkim_body_free(v->vs[i].body);
	}
	strbuf_free(&v->h.raw);
	free(v);
}

/* dkim_fetch_dns - fetcher on struct dns */
int dkim_fetch_dns(void *ctx, const char *name, dns_txt_cb cb, void *arg, void **handle)
{
	struct dns_query *q = dns_txt_lookup(ctx, name, cb, arg);
	*handle = q;
	return q ? 0 : -1;
}

/* dkim_cancel_dns - cancel a dkim_fetch_dns lookup */
void dkim_cancel_dns(void *handle)
{
	dns_cancel(handle);
}

/* dkim_result_ar - RFC 8601 resinfo for one result, e.g. "dkim=pass
 * header.d=example.com header.s=sel header.a=rsa-sha256 header.b=abcd1234"
 * plus a comment when the signature covered only part of the body */
void dkim_result_ar(const struct dkim_sig_result *r, struct strbuf *out)
{
	strbuf_addf(out, "dkim=%s", dkim_result_str(r->result));
	if (r->l_partial)
		strbuf_addf(out, " (signature covers only l=%llu of %llu body octets)", (unsigned long long)r->l,
			    (unsigned long long)r->body_len);
	else if (r->result != DKIM_PASS && r->reason[0]) {
		strbuf_adds(out, " (");
		for (const char *p = r->reason; *p; p++)
			strbuf_addc(out, (*p == '(' || *p == ')' || *p == '\\' || *p < ' ' || *p > '~') ? '_' : *p);
		strbuf_addc(out, ')');
	}
	if (r->domain[0])
		strbuf_addf(out, " header.d=%s header.s=%s header.a=%s", r->domain, r->selector, dkim_alg_str(r->alg));
	if (r->b_prefix[0])
		strbuf_addf(out, " header.b=\"%s\"", r->b_prefix);
}
