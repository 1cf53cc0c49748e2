/*
 * dmarc - DMARC (RFC 7489): record parser, organisational domains,
 * alignment, RFC5322.From extraction, policy discovery and evaluation.
 * See dmarc.h for the interface and the parsing rules.
 *
 * Exports: dmarc_p_str, dmarc_align_str, dmarc_rec_status_str,
 * dmarc_disc_str, dmarc_result_str, dmarc_record_parse,
 * dmarc_domain_normalize, dmarc_org_domain, dmarc_aligned,
 * dmarc_from_value, dmarc_from_domain, dmarc_lookup_start,
 * dmarc_lookup_cancel, dmarc_evaluate, dmarc_log_report.
 *
 * Trusts nothing: TXT records (DNS) and header fields (network) are
 * parsed with every length checked; the From tokenizer bounds comment
 * nesting and mailbox counts. The PSL data on disk (Debian's publicsuffix
 * package, or libpsl's built-in copy) is trusted.
 * Standards: RFC 7489 3.1, 3.2, 6.3, 6.4, 6.6.1-6.6.4; RFC 5322 3.2-3.4,
 * 3.6.2, 4.4; RFC 2047 (encoded words); RFC 6376 3.2 (tag-list).
 */
#include "policy/dmarc.h"

#include <libpsl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/str.h"
#include "core/xalloc.h"

/* dmarc_p_str - policy keyword */
const char *dmarc_p_str(enum dmarc_p p)
{
	switch (p) {
	case DMARC_P_NONE: return "none";
	case DMARC_P_QUARANTINE: return "quarantine";
	case DMARC_P_REJECT: return "reject";
	}
	return "unknown";
}

/* dmarc_align_str - alignment mode keyword */
const char *dmarc_align_str(enum dmarc_align a)
{
	return a == DMARC_ALIGN_STRICT ? "s" : "r";
}

/* dmarc_rec_status_str - for logs */
const char *dmarc_rec_status_str(enum dmarc_rec_status s)
{
	switch (s) {
	case DMARC_REC_OK: return "ok";
	case DMARC_REC_NOT_DMARC: return "not_dmarc";
	case DMARC_REC_INVALID: return "invalid";
	}
	return "unknown";
}

/* dmarc_disc_str - for logs */
const char *dmarc_disc_str(enum dmarc_disc d)
{
	switch (d) {
	case DMARC_DISC_FOUND: return "found";
	case DMARC_DISC_NONE: return "none";
	case DMARC_DISC_INVALID: return "invalid";
	case DMARC_DISC_TEMPERROR: return "temperror";
	}
	return "unknown";
}

/* dmarc_result_str - RFC 8601 result keyword */
const char *dmarc_result_str(enum dmarc_result r)
{
	switch (r) {
	case DMARC_RESULT_NONE: return "none";
	case DMARC_RESULT_PASS: return "pass";
	case DMARC_RESULT_FAIL: return "fail";
	case DMARC_RESULT_TEMPERROR: return "temperror";
	case DMARC_RESULT_PERMERROR: return "permerror";
	}
	return "unknown";
}

/* ------------------------------------------------------------- records */

static int dmarc_is_wsp(char c) { return c == ' ' || c == '\t'; }
static int dmarc_is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int dmarc_is_digit(char c) { return c >= '0' && c <= '9'; }
/* VALCHAR of RFC 6376 3.2: %x21-3A / %x3C-7E */
static int dmarc_is_valchar(char c) { return (c >= 0x21 && c <= 0x3a) || (c >= 0x3c && c <= 0x7e); }

/* dmarc_skip_fws - FWS = [*WSP CRLF] 1*WSP (a CRLF only before WSP) */
static size_t dmarc_skip_fws(const char *s, size_t i, size_t n)
{
	while (i < n) {
		if (dmarc_is_wsp(s[i]))
			i++;
		else if (s[i] == '\r' && i + 2 < n && s[i + 1] == '\n' && dmarc_is_wsp(s[i + 2]))
			i += 3;
		else
			break;
	}
	return i;
}

struct dmarc_tag {
	const char *name, *val;
	size_t nlen, vlen;
};

/* dmarc_tag_next - one tag-spec at s[*i]; 1 got one, 0 end of list,
 * -1 syntax error (err set). Empty elements (";;") are skipped. */
static int dmarc_tag_next(const char *s, size_t n, size_t *i, struct dmarc_tag *t, char *err, size_t errlen)
{
	size_t p = *i;
	for (;;) {
		p = dmarc_skip_fws(s, p, n);
		if (p < n && s[p] == ';') {
			p++; /* empty element: tolerated */
			continue;
		}
		break;
	}
	if (p >= n) {
		*i = p;
		return 0;
	}
	if (!dmarc_is_alpha(s[p])) {
		snprintf(err, errlen, "bad tag name at offset %zu", p);
		return -1;
	}
	t->name = s + p;
	while (p < n && (dmarc_is_alpha(s[p]) || dmarc_is_digit(s[p]) || s[p] == '_'))
		p++;
	t->nlen = (size_t)(s + p - t->name);
	p = dmarc_skip_fws(s, p, n);
	if (p >= n || s[p] != '=') {
		snprintf(err, errlen, "tag %.*s without '='", (int)(t->nlen > 32 ? 32 : t->nlen), t->name);
		return -1;
	}
	p = dmarc_skip_fws(s, p + 1, n);
	t->val = s + p;
	size_t last = p; /* one past the last VALCHAR */
	while (p < n && s[p] != ';') {
		if (dmarc_is_valchar(s[p])) {
			last = ++p;
			continue;
		}
		size_t q = dmarc_skip_fws(s, p, n);
		if (q == p) {
			snprintf(err, errlen, "bad byte 0x%02x in the value of %.*s", (unsigned char)s[p],
				 (int)(t->nlen > 32 ? 32 : t->nlen), t->name);
			return -1;
		}
		p = q;
	}
	t->vlen = (size_t)(s + last - t->val);
	if (p < n)
		p++; /* the ';' */
	*i = p;
	return 1;
}

/* dmarc_tag_is - tag name equals word (case-insensitive) */
static int dmarc_tag_is(const struct dmarc_tag *t, const char *word)
{
	return strlen(word) == t->nlen && str_ncasecmp_ascii(t->name, word, t->nlen) == 0;
}

/* dmarc_val_is - value equals word (case-insensitive) */
static int dmarc_val_is(const char *v, size_t n, const char *word)
{
	return strlen(word) == n && str_ncasecmp_ascii(v, word, n) == 0;
}

/* dmarc_policy_word - p= / sp= value; -1 if invalid */
static int dmarc_policy_word(const char *v, size_t n, enum dmarc_p *p)
{
	if (dmarc_val_is(v, n, "none"))
		*p = DMARC_P_NONE;
	else if (dmarc_val_is(v, n, "quarantine"))
		*p = DMARC_P_QUARANTINE;
	else if (dmarc_val_is(v, n, "reject"))
		*p = DMARC_P_REJECT;
	else
		return -1;
	return 0;
}

/* dmarc_uri_list_valid - 1 if a comma-separated list holds at least one
 * URI with a scheme (RFC 3986 scheme ":" then something), as 6.6.3 needs */
static int dmarc_uri_list_valid(const char *v, size_t n)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && (dmarc_is_wsp(v[i]) || v[i] == '\r' || v[i] == '\n'))
			i++;
		size_t s = i;
		if (i < n && dmarc_is_alpha(v[i])) {
			while (i < n && (dmarc_is_alpha(v[i]) || dmarc_is_digit(v[i]) || v[i] == '+' || v[i] == '-' ||
					 v[i] == '.'))
				i++;
			if (i < n && v[i] == ':' && i + 1 < n && v[i + 1] != ',' && !dmarc_is_wsp(v[i + 1]) && i > s)
				return 1;
		}
		while (i < n && v[i] != ',')
			i++;
		if (i < n)
			i++;
	}
	return 0;
}

/* dmarc_fo_valid - fo= is a colon-separated list of 0, 1, d, s */
static int dmarc_fo_valid(const char *v, size_t n)
{
	if (n == 0 || n >= sizeof(((struct dmarc_record *)0)->fo))
		return 0;
	for (size_t i = 0; i < n; i++) {
		int opt = v[i] == '0' || v[i] == '1' || v[i] == 'd' || v[i] == 's' || v[i] == 'D' || v[i] == 'S';
		if (i % 2 == 0 ? !opt : v[i] != ':')
			return 0;
	}
	return n % 2 == 1;
}

/* dmarc_copy_text - copy a value (VALCHAR and FWS only) into out, each
 * run of white space as one space */
static void dmarc_copy_text(char *out, size_t outlen, const char *v, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n && k + 1 < outlen; i++) {
		int ws = v[i] == ' ' || v[i] == '\r' || v[i] == '\n' || v[i] == '\t';
		if (ws && k > 0 && out[k - 1] == ' ')
			continue;
		out[k++] = ws ? ' ' : v[i];
	}
	out[k] = '\0';
}

#define DMARC_TAGS_MAX 32

/* dmarc_record_parse - see dmarc.h */
enum dmarc_rec_status dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *r, char *err,
					 size_t errlen)
{
	struct dmarc_tag tags[DMARC_TAGS_MAX];
	size_t nt = 0, i = 0;
	char e[128] = "";

	memset(r, 0, sizeof(*r));
	r->pct = 100;
	r->ri = 86400;
	strcpy(r->fo, "0");
	if (errlen)
		err[0] = '\0';

	/* 6.6.3 step 2: a record must begin with v=DMARC1 to be one at all */
	int rc = dmarc_tag_next(txt, len, &i, &tags[0], e, sizeof(e));
	if (rc != 1 || !dmarc_tag_is(&tags[0], "v") || tags[0].vlen != 6 || memcmp(tags[0].val, "DMARC1", 6) != 0) {
		snprintf(err, errlen, "not a DMARC record (no leading v=DMARC1)");
		return DMARC_REC_NOT_DMARC;
	}
	nt = 1;
	while ((rc = dmarc_tag_next(txt, len, &i, &tags[nt], e, sizeof(e))) == 1) {
		for (size_t j = 0; j < nt; j++)
			if (tags[j].nlen == tags[nt].nlen && str_ncasecmp_ascii(tags[j].name, tags[nt].name, tags[nt].nlen) == 0) {
				snprintf(err, errlen, "duplicate tag %.*s", (int)(tags[nt].nlen > 32 ? 32 : tags[nt].nlen),
					 tags[nt].name);
				return DMARC_REC_INVALID;
			}
		if (++nt == DMARC_TAGS_MAX) {
			snprintf(err, errlen, "more than %d tags", DMARC_TAGS_MAX - 1);
			return DMARC_REC_INVALID;
		}
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s", e);
		return DMARC_REC_INVALID;
	}

	int have_p = 0, bad_p = 0, bad_sp = 0, rua_valid = 0;
	for (size_t k = 1; k < nt; k++) {
		const struct dmarc_tag *t = &tags[k];
		uint64_t u;
		if (dmarc_tag_is(t, "p")) {
			if (dmarc_policy_word(t->val, t->vlen, &r->p) == 0)
				have_p = 1;
			else
				bad_p = 1;
		} else if (dmarc_tag_is(t, "sp")) {
			if (dmarc_policy_word(t->val, t->vlen, &r->sp) == 0)
				r->has_sp = 1;
			else
				bad_sp = 1;
		} else if (dmarc_tag_is(t, "adkim") || dmarc_tag_is(t, "aspf")) {
			enum dmarc_align *a = dmarc_tag_is(t, "adkim") ? &r->adkim : &r->aspf;
			if (dmarc_val_is(t->val, t->vlen, "s"))
				*a = DMARC_ALIGN_STRICT;
			else if (!dmarc_val_is(t->val, t->vlen, "r"))
				r->defaulted++;
		} else if (dmarc_tag_is(t, "pct")) {
			if (t->vlen <= 10 && str_parse_u64(t->val, t->vlen, &u) == 0 && u <= 100)
				r->pct = (unsigned)u;
			else
				r->defaulted++;
		} else if (dmarc_tag_is(t, "ri")) {
			if (t->vlen <= 10 && str_parse_u64(t->val, t->vlen, &u) == 0 && u <= 0xffffffffu)
				r->ri = (unsigned long)u;
			else
				r->defaulted++;
		} else if (dmarc_tag_is(t, "fo")) {
			if (dmarc_fo_valid(t->val, t->vlen))
				dmarc_copy_text(r->fo, sizeof(r->fo), t->val, t->vlen);
			else
				r->defaulted++;
		} else if (dmarc_tag_is(t, "rua") || dmarc_tag_is(t, "ruf")) {
			int rua = dmarc_tag_is(t, "rua");
			if (rua)
				rua_valid = dmarc_uri_list_valid(t->val, t->vlen);
			if (t->vlen <= DMARC_URI_MAX)
				dmarc_copy_text(rua ? r->rua : r->ruf, DMARC_URI_MAX + 1, t->val, t->vlen);
			else
				r->defaulted++;
		}
		/* rf= and unknown tags (np=, psd=, ...) are ignored (6.3) */
	}
	if (!have_p || bad_sp) {
		/* 6.6.3 step 6 */
		if (rua_valid) {
			r->p = DMARC_P_NONE;
			r->has_sp = 0;
			r->p_fallback = 1;
		} else {
			snprintf(err, errlen, "%s", bad_sp ? "invalid sp=" : bad_p ? "invalid p=" : "no p= tag");
			return DMARC_REC_INVALID;
		}
	}
	if (!r->has_sp)
		r->sp = r->p;
	return DMARC_REC_OK;
}

/* ------------------------------------------------------------- domains */

/* dmarc_domain_normalize - see dmarc.h */
int dmarc_domain_normalize(const char *in, size_t len, char *out, size_t outlen)
{
	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len > DMARC_DOMAIN_MAX || outlen < len + 1)
		return -1;
	int eai = 0;
	size_t lab = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '.') {
			if (lab == 0)
				return -1;
			lab = 0;
			out[i] = '.';
			continue;
		}
		if (++lab > 63)
			return -1;
		if (c >= 0x80)
			eai = 1;
		else if (!(dmarc_is_alpha((char)c) || dmarc_is_digit((char)c) || c == '-' || c == '_'))
			return -1;
		out[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
	}
	if (lab == 0)
		return -1; /* "a.." : an empty last label (found by fuzz_dmarc) */
	out[len] = '\0';
	return eai;
}

static const psl_ctx_t *dmarc_psl;
static pthread_once_t dmarc_psl_once = PTHREAD_ONCE_INIT;

/* dmarc_psl_init - the newest PSL on this system (kept for the process) */
static void dmarc_psl_init(void)
{
	psl_ctx_t *l = psl_latest(NULL);
	dmarc_psl = l ? l : psl_builtin();
}

/* dmarc_org_domain - see dmarc.h */
int dmarc_org_domain(const char *domain, char *out, size_t outlen)
{
	pthread_once(&dmarc_psl_once, dmarc_psl_init);
	snprintf(out, outlen, "%s", domain);
	if (!dmarc_psl || !domain[0])
		return -1;
	const char *reg = psl_registrable_domain(dmarc_psl, domain);
	if (reg) /* NULL: the domain is a public suffix itself */
		snprintf(out, outlen, "%s", reg);
	return 0;
}

/* dmarc_aligned - see dmarc.h */
int dmarc_aligned(const char *f, const char *a, enum dmarc_align mode)
{
	if (!f || !a || !f[0] || !a[0])
		return 0;
	if (str_casecmp_ascii(f, a) == 0)
		return 1;
	if (mode == DMARC_ALIGN_STRICT)
		return 0;
	char nf[DMARC_DOMAIN_MAX + 1], na[DMARC_DOMAIN_MAX + 1];
	char of[DMARC_DOMAIN_MAX + 1], oa[DMARC_DOMAIN_MAX + 1];
	if (dmarc_domain_normalize(f, strlen(f), nf, sizeof(nf)) != 0 ||
	    dmarc_domain_normalize(a, strlen(a), na, sizeof(na)) != 0)
		return 0;
	if (dmarc_org_domain(nf, of, sizeof(of)) < 0 || dmarc_org_domain(na, oa, sizeof(oa)) < 0)
		return 0;
	return strcmp(of, oa) == 0;
}

/* ------------------------------------------------- RFC5322.From parsing */

enum dmarc_ftok { FT_END, FT_ATOM, FT_QS, FT_DLIT, FT_EW, FT_SPECIAL, FT_ERR };

struct dmarc_fparse {
	const char *s;
	size_t n, i;
	enum dmarc_ftok t;  /* current token */
	const char *tp;
	size_t tl;
	char c;             /* the special character */
	char *err;
	size_t errlen;
	char dom[DMARC_DOMAIN_MAX + 2];
	int have_dom, eai;
	size_t nmbox;
};

#define DMARC_COMMENT_DEPTH 32

/* dmarc_is_atext - RFC 5322 atext, plus '.' (dot-atom, obs-phrase) and
 * 8-bit bytes (RFC 6532 UTF-8) */
static int dmarc_is_atext(unsigned char c)
{
	if (c >= 0x80)
		return 1;
	if (dmarc_is_alpha((char)c) || dmarc_is_digit((char)c))
		return 1;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL;
}

/* dmarc_fail - set the error (first one wins) and the error token */
static void dmarc_fail(struct dmarc_fparse *f, const char *why)
{
	if (f->t != FT_ERR)
		snprintf(f->err, f->errlen, "%s", why);
	f->t = FT_ERR;
}

/* dmarc_ew_len - length of an RFC 2047 encoded word at s (=?cs?e?text?=),
 * 0 if there is none */
static size_t dmarc_ew_len(const char *s, size_t n)
{
	size_t i = 2, q = 0;
	if (n < 8 || s[0] != '=' || s[1] != '?')
		return 0;
	for (; i < n && i < 76; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c >= 0x7f)
			return 0;
		if (c == '?') {
			if (++q == 3) {
				if (i + 1 < n && s[i + 1] == '=' && s[3] != '?')
					return i + 2;
				return 0;
			}
		}
	}
	return 0;
}

/* dmarc_fnext - advance to the next token, skipping CFWS */
static void dmarc_fnext(struct dmarc_fparse *f)
{
	if (f->t == FT_ERR)
		return;
	for (;;) {
		while (f->i < f->n && (dmarc_is_wsp(f->s[f->i]) || f->s[f->i] == '\r' || f->s[f->i] == '\n'))
			f->i++;
		if (f->i >= f->n || f->s[f->i] != '(')
			break;
		int depth = 0;
		while (f->i < f->n) {
			char c = f->s[f->i++];
			if (c == '\\') {
				if (f->i >= f->n)
					break;
				f->i++;
			} else if (c == '(') {
				if (++depth > DMARC_COMMENT_DEPTH) {
					dmarc_fail(f, "From: comments nested too deep");
					return;
				}
			} else if (c == ')') {
				if (--depth == 0)
					break;
			} else if ((unsigned char)c < 0x20 && c != '\t' && c != '\r' && c != '\n') {
				dmarc_fail(f, "From: control byte in a comment");
				return;
			}
		}
		if (depth != 0) {
			dmarc_fail(f, "From: unterminated comment");
			return;
		}
	}
	if (f->i >= f->n) {
		f->t = FT_END;
		return;
	}
	const char *s = f->s;
	size_t st = f->i;
	unsigned char c = (unsigned char)s[st];
	f->tp = s + st;
	if (c == '"' || c == '[') {
		char close = c == '"' ? '"' : ']';
		size_t i = st + 1;
		while (i < f->n && s[i] != close) {
			if ((c == '"' && s[i] == '\\') && i + 1 < f->n)
				i++;
			else if (c == '[' && (s[i] == '[' || s[i] == '\\')) {
				dmarc_fail(f, "From: bad domain literal");
				return;
			} else if ((unsigned char)s[i] < 0x20 && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') {
				dmarc_fail(f, "From: control byte in a quoted string");
				return;
			}
			i++;
		}
		if (i >= f->n) {
			dmarc_fail(f, c == '"' ? "From: unterminated quoted string" : "From: unterminated domain literal");
			return;
		}
		f->t = c == '"' ? FT_QS : FT_DLIT;
		f->tl = i + 1 - st;
		f->i = i + 1;
		return;
	}
	size_t ew = dmarc_ew_len(s + st, f->n - st);
	if (ew) {
		f->t = FT_EW;
		f->tl = ew;
		f->i = st + ew;
		return;
	}
	if (dmarc_is_atext(c)) {
		size_t i = st;
		while (i < f->n && dmarc_is_atext((unsigned char)s[i]))
			i++;
		f->t = FT_ATOM;
		f->tl = i - st;
		f->i = i;
		return;
	}
	if (c && strchr("<>@,:;", c)) {
		f->t = FT_SPECIAL;
		f->c = (char)c;
		f->tl = 1;
		f->i = st + 1;
		return;
	}
	dmarc_fail(f, c == ')' ? "From: unbalanced ')'" : c == '\\' ? "From: backslash outside quotes" :
		   c == ']' ? "From: unbalanced ']'" : "From: bad byte");
}

/* dmarc_fis - current token is the special character c */
static int dmarc_fis(const struct dmarc_fparse *f, char c)
{
	return f->t == FT_SPECIAL && f->c == c;
}

/* dmarc_fdomain - parse the domain after '@' and record it */
static void dmarc_fdomain(struct dmarc_fparse *f)
{
	char d[DMARC_DOMAIN_MAX + 2];
	size_t dl = 0;
	if (f->t == FT_DLIT) {
		dmarc_fail(f, "From: address literal instead of a domain");
		return;
	}
	if (f->t != FT_ATOM) {
		dmarc_fail(f, "From: address without a domain");
		return;
	}
	/* obs-domain: atoms joined by dots, CFWS allowed around the dots */
	while (f->t == FT_ATOM) {
		if (dl > 0 && d[dl - 1] != '.' && f->tp[0] != '.') {
			dmarc_fail(f, "From: space inside the domain");
			return;
		}
		if (f->tl > sizeof(d) - 1 - dl) {
			dmarc_fail(f, "From: domain too long");
			return;
		}
		memcpy(d + dl, f->tp, f->tl);
		dl += f->tl;
		dmarc_fnext(f);
	}
	if (f->t == FT_ERR)
		return;
	char nd[DMARC_DOMAIN_MAX + 2];
	int rc = dmarc_domain_normalize(d, dl, nd, sizeof(nd));
	if (rc < 0) {
		dmarc_fail(f, "From: invalid domain");
		return;
	}
	if (++f->nmbox > DMARC_FROM_ADDRS_MAX) {
		dmarc_fail(f, "From: too many addresses");
		return;
	}
	if (!f->have_dom) {
		memcpy(f->dom, nd, strlen(nd) + 1);
		f->have_dom = 1;
		f->eai = rc;
	} else if (strcmp(f->dom, nd) != 0) {
		dmarc_fail(f, "From: addresses in more than one domain");
	}
}

/* dmarc_faddrspec - local-part tokens (atoms, quoted strings), then '@' domain */
static void dmarc_faddrspec(struct dmarc_fparse *f)
{
	size_t n = 0;
	while (f->t == FT_ATOM || f->t == FT_QS) {
		n++;
		dmarc_fnext(f);
	}
	if (f->t == FT_ERR)
		return;
	if (n == 0 || !dmarc_fis(f, '@')) {
		dmarc_fail(f, "From: bad address");
		return;
	}
	dmarc_fnext(f);
	dmarc_fdomain(f);
}

/* dmarc_fangle - after '<': [obs-route] addr-spec '>' */
static void dmarc_fangle(struct dmarc_fparse *f)
{
	dmarc_fnext(f);
	if (dmarc_fis(f, '>')) {
		dmarc_fail(f, "From: empty address <>");
		return;
	}
	if (dmarc_fis(f, '@')) { /* obs-route: @a,@b: */
		while (f->t != FT_ERR && f->t != FT_END && !dmarc_fis(f, ':')) {
			if (!(dmarc_fis(f, '@') || dmarc_fis(f, ',') || f->t == FT_ATOM)) {
				dmarc_fail(f, "From: bad source route");
				return;
			}
			dmarc_fnext(f);
		}
		if (!dmarc_fis(f, ':')) {
			dmarc_fail(f, "From: bad source route");
			return;
		}
		dmarc_fnext(f);
	}
	dmarc_faddrspec(f);
	if (f->t == FT_ERR)
		return;
	if (!dmarc_fis(f, '>')) {
		dmarc_fail(f, "From: '>' expected");
		return;
	}
	dmarc_fnext(f);
}

/* dmarc_fmailbox - name-addr or addr-spec; group when allow_group and a
 * phrase is followed by ':' */
static void dmarc_fmailbox(struct dmarc_fparse *f, int allow_group)
{
	/* collect a phrase: a display name, or the local part of an addr-spec */
	size_t words = 0, ews = 0;
	while (f->t == FT_ATOM || f->t == FT_QS || f->t == FT_EW) {
		words++;
		ews += f->t == FT_EW;
		dmarc_fnext(f);
	}
	if (f->t == FT_ERR)
		return;
	if (dmarc_fis(f, '<')) {
		dmarc_fangle(f);
		return;
	}
	if (dmarc_fis(f, '@')) {
		if (words == 0 || ews) {
			dmarc_fail(f, "From: bad local part");
			return;
		}
		dmarc_fnext(f);
		dmarc_fdomain(f);
		return;
	}
	if (dmarc_fis(f, ':') && allow_group && words > 0) {
		dmarc_fnext(f);
		for (;;) {
			if (dmarc_fis(f, ',')) {
				dmarc_fnext(f);
				continue;
			}
			if (dmarc_fis(f, ';') || f->t == FT_END || f->t == FT_ERR)
				break;
			dmarc_fmailbox(f, 0);
			if (f->t == FT_ERR)
				return;
			if (!dmarc_fis(f, ',') && !dmarc_fis(f, ';')) {
				dmarc_fail(f, "From: ',' or ';' expected in a group");
				return;
			}
		}
		if (f->t == FT_ERR)
			return;
		if (!dmarc_fis(f, ';')) {
			dmarc_fail(f, "From: unterminated group");
			return;
		}
		dmarc_fnext(f);
		return;
	}
	dmarc_fail(f, words ? "From: a name without an address" : "From: unexpected character");
}

/* dmarc_from_value - see dmarc.h */
int dmarc_from_value(const char *val, size_t len, char *dom, size_t domlen, char *err, size_t errlen)
{
	struct dmarc_fparse f;
	memset(&f, 0, sizeof(f));
	f.s = val;
	f.n = len;
	f.err = err;
	f.errlen = errlen;
	f.t = FT_END;
	dmarc_fnext(&f);
	while (f.t != FT_END && f.t != FT_ERR) {
		if (dmarc_fis(&f, ',')) { /* obs-mbox-list: empty elements */
			dmarc_fnext(&f);
			continue;
		}
		dmarc_fmailbox(&f, 1);
		if (f.t != FT_END && f.t != FT_ERR && !dmarc_fis(&f, ','))
			dmarc_fail(&f, "From: ',' expected between addresses");
	}
	if (f.t == FT_ERR)
		return -1;
	if (!f.have_dom) {
		snprintf(err, errlen, "From: no address");
		return -1;
	}
	if (strlen(f.dom) + 1 > domlen) {
		snprintf(err, errlen, "From: domain too long");
		return -1;
	}
	memcpy(dom, f.dom, strlen(f.dom) + 1);
	return f.eai;
}

/* dmarc_field_name_is - the field at p (up to its colon, obs WSP before
 * the colon allowed) is named name; sets *vstart to after the colon */
static int dmarc_field_name_is(const char *p, size_t n, const char *name, size_t *vstart)
{
	size_t i = 0, nl = strlen(name);
	while (i < n && p[i] != ':' && !dmarc_is_wsp(p[i]) && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
		i++;
	if (i != nl || str_ncasecmp_ascii(p, name, nl) != 0)
		return 0;
	while (i < n && dmarc_is_wsp(p[i]))
		i++;
	if (i >= n || p[i] != ':')
		return 0;
	*vstart = i + 1;
	return 1;
}

/* dmarc_from_domain - see dmarc.h */
int dmarc_from_domain(const char *hdr, size_t len, char *dom, size_t domlen, char *err, size_t errlen)
{
	size_t i = 0, nfrom = 0, fs = 0, fl = 0;
	while (i < len) {
		if (hdr[i] == '\n' || (hdr[i] == '\r' && i + 1 < len && hdr[i + 1] == '\n'))
			break; /* the empty line: end of the header section */
		size_t start = i;
		/* the field: this line and every continuation line (leading WSP) */
		for (;;) {
			const char *nl = memchr(hdr + i, '\n', len - i);
			i = nl ? (size_t)(nl - hdr) + 1 : len;
			if (i >= len || !dmarc_is_wsp(hdr[i]))
				break;
		}
		size_t end = i;
		while (end > start && (hdr[end - 1] == '\n' || hdr[end - 1] == '\r'))
			end--;
		size_t v;
		if (!dmarc_is_wsp(hdr[start]) && dmarc_field_name_is(hdr + start, end - start, "from", &v)) {
			if (nfrom++ == 0) {
				fs = start + v;
				fl = end - fs;
			}
		}
	}
	if (nfrom != 1) {
		if (nfrom == 0)
			snprintf(err, errlen, "no From field");
		else
			snprintf(err, errlen, "%zu From fields", nfrom);
		return -1;
	}
	return dmarc_from_value(hdr + fs, fl, dom, domlen, err, errlen);
}

/* ------------------------------------------------------ policy lookup */

struct dmarc_lookup {
	struct dmarc_fetcher f;
	dmarc_lookup_cb cb;
	void *arg;
	char from[DMARC_DOMAIN_MAX + 1];
	char org[DMARC_DOMAIN_MAX + 1];
	int stage;        /* 0: _dmarc.<From domain>, 1: _dmarc.<org domain> */
	int pending;
	unsigned gen;     /* fetch generation: a late *handle store is ignored */
	void *handle;
	struct dmarc_discovery d;
};

static void dmarc_lookup_txt_cb(const struct dns_txt_result *res, void *arg);

/* dmarc_lookup_fetch - query _dmarc.<domain>; -1 if it could not start */
static int dmarc_lookup_fetch(struct dmarc_lookup *l, const char *domain)
{
	char name[DMARC_DOMAIN_MAX + 16];
	void *h = NULL;
	snprintf(name, sizeof(name), "_dmarc.%s", domain);
	unsigned gen = ++l->gen;
	l->pending = 1;
	if (l->f.fetch(l->f.ctx, name, dmarc_lookup_txt_cb, l, &h) < 0) {
		if (l->gen == gen)
			l->pending = 0;
		return -1;
	}
	if (l->gen == gen && l->pending)
		l->handle = h;
	return 0;
}

/* dmarc_lookup_finish - report the discovery */
static void dmarc_lookup_finish(struct dmarc_lookup *l, enum dmarc_disc st)
{
	l->d.status = st;
	l->cb(l->arg, &l->d);
}

/* dmarc_lookup_txt_cb - one _dmarc answer (RFC 7489 6.6.3 steps 1-6) */
static void dmarc_lookup_txt_cb(const struct dns_txt_result *res, void *arg)
{
	struct dmarc_lookup *l = arg;
	const char *domain = l->stage == 0 ? l->from : l->org;
	l->pending = 0;
	l->handle = NULL;
	l->gen++;
	if (res->status == DNS_TEMPFAIL || res->status == DNS_BADDATA) {
		snprintf(l->d.why, sizeof(l->d.why), "_dmarc.%s: %s", domain, dns_status_str(res->status));
		dmarc_lookup_finish(l, DMARC_DISC_TEMPERROR);
		return;
	}
	size_t found = 0;
	if (res->status == DNS_OK) {
		struct dmarc_record rec;
		char err[128];
		enum dmarc_rec_status first = DMARC_REC_NOT_DMARC;
		for (size_t i = 0; i < res->ntxts; i++) {
			enum dmarc_rec_status st = dmarc_record_parse(res->txts[i].data, res->txts[i].len, &rec, err, sizeof(err));
			if (st == DMARC_REC_NOT_DMARC)
				continue;
			if (found++ == 0) {
				first = st;
				l->d.rec = rec;
				snprintf(l->d.why, sizeof(l->d.why), "_dmarc.%.200s: %.100s", domain, err);
			}
		}
		if (found > 1) {
			snprintf(l->d.why, sizeof(l->d.why), "_dmarc.%s: %zu DMARC records", domain, found);
			dmarc_lookup_finish(l, DMARC_DISC_INVALID);
			return;
		}
		if (found == 1) {
			snprintf(l->d.domain, sizeof(l->d.domain), "%s", domain);
			l->d.at_org = l->stage == 1;
			if (first == DMARC_REC_INVALID) {
				dmarc_lookup_finish(l, DMARC_DISC_INVALID);
				return;
			}
			l->d.why[0] = '\0';
			dmarc_lookup_finish(l, DMARC_DISC_FOUND);
			return;
		}
	}
	/* no DMARC record here: NXDOMAIN, NODATA, a bad name, only other TXT */
	if (l->stage == 0 && strcmp(l->from, l->org) != 0) {
		l->stage = 1;
		if (dmarc_lookup_fetch(l, l->org) < 0) {
			snprintf(l->d.why, sizeof(l->d.why), "_dmarc.%s: lookup failed to start", l->org);
			dmarc_lookup_finish(l, DMARC_DISC_TEMPERROR);
		}
		return;
	}
	snprintf(l->d.why, sizeof(l->d.why), "no DMARC record");
	dmarc_lookup_finish(l, DMARC_DISC_NONE);
}

/* dmarc_lookup_start - see dmarc.h */
struct dmarc_lookup *dmarc_lookup_start(const struct dmarc_fetcher *f, const char *from_domain,
					dmarc_lookup_cb cb, void *arg)
{
	struct dmarc_lookup *l = xcalloc(1, sizeof(*l));
	l->f = *f;
	l->cb = cb;
	l->arg = arg;
	snprintf(l->from, sizeof(l->from), "%s", from_domain);
	dmarc_org_domain(l->from, l->org, sizeof(l->org));
	if (dmarc_lookup_fetch(l, l->from) < 0) {
		free(l);
		return NULL;
	}
	return l;
}

/* dmarc_lookup_cancel - see dmarc.h */
void dmarc_lookup_cancel(struct dmarc_lookup *l)
{
	if (!l)
		return;
	if (l->pending && l->f.cancel)
		l->f.cancel(l->handle);
	free(l);
}

/* ---------------------------------------------------------- evaluation */

/* dmarc_evaluate - see dmarc.h (RFC 7489 6.6.2 and 6.6.4) */
void dmarc_evaluate(const struct dmarc_eval *in, struct dmarc_outcome *out)
{
	memset(out, 0, sizeof(*out));
	const struct dmarc_discovery *d = in->disc;
	const struct dmarc_record *r = &d->rec;
	int found = d->status == DMARC_DISC_FOUND;
	enum dmarc_align aspf = found ? r->aspf : DMARC_ALIGN_RELAXED;
	enum dmarc_align adkim = found ? r->adkim : DMARC_ALIGN_RELAXED;
	int temp = 0;

	if (in->spf_domain && dmarc_aligned(in->from_domain, in->spf_domain, aspf)) {
		if (in->spf == SPF_PASS)
			out->spf_aligned = 1;
		else if (in->spf == SPF_TEMPERROR)
			temp = 1;
	}
	for (size_t i = 0; i < in->ndkim; i++) {
		const struct dkim_sig_result *s = &in->dkim[i];
		if (!dmarc_aligned(in->from_domain, s->domain, adkim))
			continue;
		if (s->result == DKIM_PASS && !out->dkim_aligned) {
			out->dkim_aligned = 1;
			snprintf(out->dkim_domain, sizeof(out->dkim_domain), "%.253s", s->domain);
		} else if (s->result == DKIM_TEMPERROR) {
			temp = 1;
		}
	}
	out->disposition = DMARC_P_NONE;
	switch (d->status) {
	case DMARC_DISC_NONE:
		out->result = DMARC_RESULT_NONE;
		return;
	case DMARC_DISC_INVALID:
		out->result = DMARC_RESULT_PERMERROR;
		return;
	case DMARC_DISC_TEMPERROR:
		out->result = DMARC_RESULT_TEMPERROR;
		return;
	case DMARC_DISC_FOUND:
		break;
	}
	out->policy = d->at_org ? r->sp : r->p;
	if (out->spf_aligned || out->dkim_aligned) {
		out->result = DMARC_RESULT_PASS;
		return;
	}
	if (temp) {
		/* an aligned identifier could not be checked: never act on it */
		out->result = DMARC_RESULT_TEMPERROR;
		return;
	}
	out->result = DMARC_RESULT_FAIL;
	out->disposition = out->policy;
	if (out->policy != DMARC_P_NONE && in->roll % 100 >= r->pct) {
		/* 6.6.4: not sampled: the next policy down */
		out->sampled_out = 1;
		out->disposition = out->policy == DMARC_P_REJECT ? DMARC_P_QUARANTINE : DMARC_P_NONE;
	}
}

/* dmarc_log_report - see dmarc.h */
void dmarc_log_report(const char *qid, const char *source_ip, const struct dmarc_eval *in,
		      const struct dmarc_outcome *out, const char *override)
{
	struct log_line l;
	const struct dmarc_discovery *d = in->disc;
	int found = d->status == DMARC_DISC_FOUND;
	char dk[512];
	size_t dn = 0;

	dk[0] = '\0';
	for (size_t i = 0; i < in->ndkim && dn + 1 < sizeof(dk); i++) {
		int w = snprintf(dk + dn, sizeof(dk) - dn, "%s%s/%s:%s", i ? "," : "", in->dkim[i].domain,
				 in->dkim[i].selector, dkim_result_str(in->dkim[i].result));
		if (w < 0 || (size_t)w >= sizeof(dk) - dn)
			break;
		dn += (size_t)w;
	}
	log_begin(&l, LOG_LEVEL_INFO, "dmarc_report");
	if (qid && qid[0])
		log_kv(&l, "qid", qid);
	log_kv(&l, "source_ip", source_ip ? source_ip : "");
	log_kv(&l, "header_from", in->from_domain ? in->from_domain : "");
	log_kv(&l, "policy_domain", found ? d->domain : "");
	if (found) {
		log_kv(&l, "p", dmarc_p_str(d->rec.p));
		log_kv(&l, "sp", dmarc_p_str(d->rec.sp));
		log_kvi(&l, "pct", d->rec.pct);
		log_kv(&l, "adkim", dmarc_align_str(d->rec.adkim));
		log_kv(&l, "aspf", dmarc_align_str(d->rec.aspf));
		if (d->rec.rua[0])
			log_kv(&l, "rua", d->rec.rua);
	}
	log_kv(&l, "spf", spf_result_str(in->spf));
	log_kv(&l, "spf_domain", in->spf_domain ? in->spf_domain : "");
	log_kvi(&l, "spf_aligned", out->spf_aligned);
	log_kv(&l, "dkim", in->ndkim ? dk : "none");
	log_kvi(&l, "dkim_aligned", out->dkim_aligned);
	log_kv(&l, "dmarc", dmarc_result_str(out->result));
	log_kv(&l, "disposition", dmarc_p_str(out->disposition));
	if (out->sampled_out)
		log_kv(&l, "override", "sampled_out");
	else if (override && override[0])
		log_kv(&l, "override", override);
	log_end(&l);
}
