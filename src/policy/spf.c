/*
 * spf - SPF check_host() (RFC 7208). See spf.h for the interface.
 *
 * Exports: spf_result_str, spf_mech_str, spf_check_start,
 * spf_check_cancel, spf_record_parse, spf_macro_expand, spf_name_escape,
 * spf_name_unescape, spf_received_header.
 *
 * The evaluation is a small state machine over a stack of frames (one per
 * nested include:); each DNS-using term starts one lookup and the callback
 * resumes the loop. A redirect= replaces its frame (it is a tail call).
 * %{p} (in a mechanism, redirect=, exp= or the explanation) first looks
 * up the validated client name (RFC 7208 7.3), then resumes where it was.
 * Every lookup is a raw query (dns_query_raw) of the target escaped into
 * presentation form, so a target is asked for octet for octet as the
 * record wrote it ("a:foo:bar/baz.example.com", spaces from %_).
 * Trusts nothing from DNS: every record is parsed whole before it is
 * evaluated (RFC 7208 4.6), every expansion is written into a bounded
 * buffer, and the lookup limits of RFC 7208 4.6.4 bound the work a
 * hostile domain can make us do: 10 DNS-querying terms, 2 void lookups,
 * 10 MX names per mx, 10 PTR names per ptr / %{p}.
 * Standards: RFC 7208 4-7 (check_host), 9.1 (Received-SPF), 2.3 (HELO).
 */
#include "policy/spf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "core/buf.h"
#include "dns/dns.h"

#define SPF_LOOKUP_MAX 10  /* RFC 7208 4.6.4 */
#define SPF_VOID_MAX 2     /* RFC 7208 4.6.4 */
#define SPF_MX_MAX 10      /* RFC 7208 4.6.4 */
#define SPF_DEPTH_MAX 12   /* includes nest at most SPF_LOOKUP_MAX deep */
#define SPF_ID_MAX 1024    /* sender, helo, receiver text */
#define SPF_EXPAND_MAX 8192
#define SPF_EXPLAIN_MAX 1024

static const char *const spf_result_names[] = {
	[SPF_NONE] = "none",         [SPF_NEUTRAL] = "neutral",
	[SPF_PASS] = "pass",         [SPF_FAIL] = "fail",
	[SPF_SOFTFAIL] = "softfail", [SPF_TEMPERROR] = "temperror",
	[SPF_PERMERROR] = "permerror",
};

/* spf_result_str - result name for logs and Received-SPF */
const char *spf_result_str(enum spf_result r)
{
	if ((unsigned)r >= sizeof(spf_result_names) / sizeof(spf_result_names[0]))
		return "unknown";
	return spf_result_names[r];
}

static const char *const spf_mech_names[] = {
	[SPF_MECH_ALL] = "all", [SPF_MECH_INCLUDE] = "include", [SPF_MECH_A] = "a",
	[SPF_MECH_MX] = "mx",   [SPF_MECH_PTR] = "ptr",         [SPF_MECH_IP4] = "ip4",
	[SPF_MECH_IP6] = "ip6", [SPF_MECH_EXISTS] = "exists",
};

/* spf_mech_str - mechanism name */
const char *spf_mech_str(enum spf_mech m)
{
	if ((unsigned)m >= sizeof(spf_mech_names) / sizeof(spf_mech_names[0]))
		return "unknown";
	return spf_mech_names[m];
}

/* ---------------------------------------------------------------- macros */

/* spf_put - append l bytes to out[*n], keeping room for the NUL */
static int spf_put(char *out, size_t outlen, size_t *n, const char *s, size_t l)
{
	if (outlen == 0 || l > outlen - 1 - *n)
		return -1;
	memcpy(out + *n, s, l);
	*n += l;
	out[*n] = '\0';
	return 0;
}

/* spf_put_url - append s URL-encoded (uppercase macro letters, RFC 7208 7.3) */
static int spf_put_url(char *out, size_t outlen, size_t *n, const char *s, size_t l)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < l; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
			if (spf_put(out, outlen, n, (const char *)&s[i], 1) < 0)
				return -1;
		} else {
			char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
			if (spf_put(out, outlen, n, e, 3) < 0)
				return -1;
		}
	}
	return 0;
}

/* spf_macro_value - the raw value of macro letter ch into val */
static int spf_macro_value(int ch, const struct spf_macro_ctx *ctx, int exp, char *val, size_t vallen)
{
	const char *s = NULL;
	switch (ch) {
	case 's': s = ctx->sender; break;
	case 'l': s = ctx->local; break;
	case 'o': s = ctx->sender_domain; break;
	case 'd': s = ctx->domain; break;
	case 'h': s = ctx->helo; break;
	case 'p': s = ctx->ptr_name ? ctx->ptr_name : "unknown"; break;
	case 'v': s = ctx->ipv6 ? "ip6" : "in-addr"; break;
	case 'i':
		if (!ctx->ipv6) {
			snprintf(val, vallen, "%u.%u.%u.%u", ctx->ipbytes[0], ctx->ipbytes[1],
				 ctx->ipbytes[2], ctx->ipbytes[3]);
		} else {
			/* nibbles in upper case, as the RFC 7208 test suite (and
			 * pyspf) expect in explanations; in a query the case does
			 * not matter (RFC 4343) */
			static const char hex[] = "0123456789ABCDEF";
			size_t k = 0;
			for (int b = 0; b < 16 && k + 4 < vallen; b++) {
				val[k++] = hex[ctx->ipbytes[b] >> 4];
				val[k++] = '.';
				val[k++] = hex[ctx->ipbytes[b] & 15];
				val[k++] = '.';
			}
			val[k ? k - 1 : 0] = '\0';
		}
		return 0;
	case 'c':
		if (!exp)
			return -1;
		s = ctx->ip;
		break;
	case 'r':
		if (!exp)
			return -1;
		s = ctx->receiver ? ctx->receiver : "unknown";
		break;
	case 't':
		if (!exp)
			return -1;
		snprintf(val, vallen, "%lld", ctx->timestamp);
		return 0;
	default:
		return -1;
	}
	snprintf(val, vallen, "%s", s ? s : "");
	return 0;
}

/* spf_macro_one - expand the body of one %{...} (without the braces) */
static int spf_macro_one(const char *b, size_t bl, const struct spf_macro_ctx *ctx, int exp,
			 char *out, size_t outlen, size_t *n)
{
	char val[SPF_ID_MAX + 16];
	size_t i = 1;
	unsigned long digits = 0;
	int have_digits = 0, reverse = 0;
	char delims[8];
	size_t nd = 0;

	if (bl == 0 || !isalpha((unsigned char)b[0]))
		return -1;
	int upper = isupper((unsigned char)b[0]);
	if (spf_macro_value(tolower((unsigned char)b[0]), ctx, exp, val, sizeof(val)) < 0)
		return -1;
	while (i < bl && isdigit((unsigned char)b[i])) {
		have_digits = 1;
		if (digits < 1000)
			digits = digits * 10 + (unsigned long)(b[i] - '0');
		i++;
	}
	if (have_digits && digits == 0)
		return -1; /* RFC 7208 7.3: the DIGIT transformer MUST be nonzero */
	if (i < bl && (b[i] == 'r' || b[i] == 'R')) {
		reverse = 1;
		i++;
	}
	for (; i < bl; i++) {
		if (!strchr(".-+,/_=", b[i]) || b[i] == '\0')
			return -1;
		if (nd < sizeof(delims) && !memchr(delims, b[i], nd))
			delims[nd++] = b[i];
	}
	if (nd == 0)
		delims[nd++] = '.';

	/* split into parts: starts and lengths, at most strlen+1 of them */
	size_t vl = strlen(val), nparts = 1;
	for (size_t k = 0; k < vl; k++)
		if (memchr(delims, val[k], nd))
			nparts++;
	size_t *ps = malloc(nparts * 2 * sizeof(*ps));
	if (!ps)
		return -2;
	size_t *pl = ps + nparts, p = 0, start = 0;
	for (size_t k = 0; k <= vl; k++) {
		if (k == vl || memchr(delims, val[k], nd)) {
			ps[p] = start;
			pl[p] = k - start;
			p++;
			start = k + 1;
		}
	}
	size_t keep = (have_digits && digits < nparts) ? digits : nparts;
	int rc = 0;
	/* the parts in output order, after optional reversal; keep the last `keep` */
	for (size_t j = nparts - keep; j < nparts && rc == 0; j++) {
		size_t idx = reverse ? nparts - 1 - j : j;
		if (j > nparts - keep && spf_put(out, outlen, n, ".", 1) < 0)
			rc = -2;
		else if (upper ? spf_put_url(out, outlen, n, val + ps[idx], pl[idx]) < 0
			       : spf_put(out, outlen, n, val + ps[idx], pl[idx]) < 0)
			rc = -2;
	}
	free(ps);
	return rc;
}

/* spf_macro_expand - expand a macro-string (RFC 7208 7.1) */
long spf_macro_expand(const char *in, size_t len, const struct spf_macro_ctx *ctx, int exp,
		      char *out, size_t outlen)
{
	size_t n = 0;
	if (outlen == 0)
		return -2;
	out[0] = '\0';
	for (size_t i = 0; i < len;) {
		unsigned char ch = (unsigned char)in[i];
		if (ch != '%') {
			/* macro-literal is %x21-24 / %x26-7E; explanations also allow SP */
			if (ch < 0x21 || ch > 0x7e) {
				if (!(exp && ch == ' '))
					return -1;
			}
			if (spf_put(out, outlen, &n, &in[i], 1) < 0)
				return -2;
			i++;
			continue;
		}
		if (i + 1 >= len)
			return -1;
		char nx = in[i + 1];
		if (nx == '%' || nx == '_' || nx == '-') {
			const char *r = nx == '%' ? "%" : nx == '_' ? " " : "%20";
			if (spf_put(out, outlen, &n, r, strlen(r)) < 0)
				return -2;
			i += 2;
			continue;
		}
		if (nx != '{')
			return -1;
		const char *end = memchr(in + i + 2, '}', len - i - 2);
		if (!end)
			return -1;
		int rc = spf_macro_one(in + i + 2, (size_t)(end - (in + i + 2)), ctx, exp, out, outlen, &n);
		if (rc < 0)
			return rc;
		i = (size_t)(end - in) + 1;
	}
	return (long)n;
}

/* ---------------------------------------------------------------- records */

/* spf_ieq - case-insensitive compare of s[0..l) with the NUL-ended word */
static int spf_ieq(const char *s, size_t l, const char *word)
{
	size_t wl = strlen(word);
	if (l != wl)
		return 0;
	for (size_t i = 0; i < l; i++)
		if (tolower((unsigned char)s[i]) != word[i])
			return 0;
	return 1;
}

/* spf_spec_ok - syntax of a domain-spec: macro-string then domain-end */
static int spf_spec_ok(const char *s, size_t l)
{
	static const struct spf_macro_ctx dummy = {.sender = "a@b.c", .local = "a", .sender_domain = "b.c",
						   .domain = "b.c", .ip = "192.0.2.1", .helo = "b.c"};
	char tmp[SPF_EXPAND_MAX];
	if (l == 0 || spf_macro_expand(s, l, &dummy, 0, tmp, sizeof(tmp)) == -1)
		return 0;
	if (s[l - 1] == '}')
		return 1; /* domain-end = macro-expand */
	if (s[l - 1] == '.')
		l--;
	size_t dot = l;
	while (dot > 0 && s[dot - 1] != '.')
		dot--;
	if (dot == 0)
		return 0; /* domain-end needs "." toplabel */
	const char *t = s + dot;
	size_t tl = l - dot;
	int alpha = 0;
	if (tl == 0 || t[0] == '-' || t[tl - 1] == '-')
		return 0;
	for (size_t i = 0; i < tl; i++) {
		if (!isalnum((unsigned char)t[i]) && t[i] != '-')
			return 0;
		if (isalpha((unsigned char)t[i]) || t[i] == '-')
			alpha = 1;
	}
	return alpha; /* an all-numeric toplabel is not a domain */
}

/* spf_cidr - parse "0" / [1-9]DIGIT* up to max; -1 if bad */
static int spf_cidr(const char *s, size_t l, int max)
{
	int v = 0;
	if (l == 0 || l > 3 || (l > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < l; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v > max ? -1 : v;
}

/* spf_dual_cidr - "/n4", "//n6" or "/n4//n6" (the whole of s[0..l)) */
static int spf_dual_cidr(const char *s, size_t l, int *c4, int *c6, int v4, int v6)
{
	*c4 = 32;
	*c6 = 128;
	if (l == 0)
		return 0;
	if (s[0] != '/')
		return -1;
	const char *dd = NULL;
	for (size_t i = 0; i + 1 < l; i++)
		if (s[i] == '/' && s[i + 1] == '/') {
			dd = s + i;
			break;
		}
	if (dd != s) {
		if (!v4)
			return -1;
		size_t e = dd ? (size_t)(dd - s) : l;
		if ((*c4 = spf_cidr(s + 1, e - 1, 32)) < 0)
			return -1;
	}
	if (dd) {
		if (!v6)
			return -1;
		size_t off = (size_t)(dd - s) + 2;
		if ((*c6 = spf_cidr(s + off, l - off, 128)) < 0)
			return -1;
	}
	return 0;
}

/* spf_term_parse - one directive or modifier */
static int spf_term_parse(const char *s, size_t l, struct spf_record *rec)
{
	size_t i = 0;
	enum spf_result qual = SPF_PASS;

	/* modifier: name "=" macro-string, name = ALPHA *(ALPHA/DIGIT/-/_/.) */
	size_t nl = 0;
	while (nl < l && (isalnum((unsigned char)s[nl]) || s[nl] == '-' || s[nl] == '_' || s[nl] == '.'))
		nl++;
	if (nl < l && s[nl] == '=') {
		if (nl == 0 || !isalpha((unsigned char)s[0]))
			return -1;
		const char *v = s + nl + 1;
		size_t vl = l - nl - 1;
		if (spf_ieq(s, nl, "redirect") || spf_ieq(s, nl, "exp")) {
			int redir = s[0] == 'r' || s[0] == 'R';
			if (!spf_spec_ok(v, vl))
				return -1;
			if (redir ? rec->redirect != NULL : rec->exp != NULL)
				return -1; /* RFC 7208 6: each at most once */
			if (redir) {
				rec->redirect = v;
				rec->redirectlen = vl;
			} else {
				rec->exp = v;
				rec->explen = vl;
			}
			return 0;
		}
		static const struct spf_macro_ctx dummy = {.sender = "", .local = "", .sender_domain = "",
							   .domain = "", .ip = "", .helo = ""};
		char tmp[SPF_EXPAND_MAX];
		return spf_macro_expand(v, vl, &dummy, 1, tmp, sizeof(tmp)) == -1 ? -1 : 0;
	}

	if (l > 0 && strchr("+-~?", s[0])) {
		qual = s[0] == '+' ? SPF_PASS : s[0] == '-' ? SPF_FAIL : s[0] == '~' ? SPF_SOFTFAIL : SPF_NEUTRAL;
		i = 1;
	}
	size_t ne = i;
	while (ne < l && s[ne] != ':' && s[ne] != '/')
		ne++;
	const char *name = s + i;
	size_t namel = ne - i;
	const char *arg = s + ne; /* ":..." or "/..." or "" */
	size_t argl = l - ne;

	if (rec->nterms >= SPF_TERMS_MAX)
		return -1;
	struct spf_term *t = &rec->terms[rec->nterms];
	memset(t, 0, sizeof(*t));
	t->qual = qual;
	t->cidr4 = 32;
	t->cidr6 = 128;

	if (spf_ieq(name, namel, "all")) {
		if (argl)
			return -1;
		t->mech = SPF_MECH_ALL;
	} else if (spf_ieq(name, namel, "include") || spf_ieq(name, namel, "exists")) {
		t->mech = (name[0] == 'i' || name[0] == 'I') ? SPF_MECH_INCLUDE : SPF_MECH_EXISTS;
		if (argl < 2 || arg[0] != ':' || !spf_spec_ok(arg + 1, argl - 1))
			return -1;
		t->spec = arg + 1;
		t->speclen = argl - 1;
	} else if (spf_ieq(name, namel, "a") || spf_ieq(name, namel, "mx") || spf_ieq(name, namel, "ptr")) {
		t->mech = namel == 1 ? SPF_MECH_A : namel == 2 ? SPF_MECH_MX : SPF_MECH_PTR;
		size_t c = 0;
		if (argl && arg[0] == ':') {
			/* the domain-spec may itself hold '/' ("a:foo:bar/baz.example.com"):
			 * the cidr is the first '/' starting a valid dual-cidr suffix */
			int c4, c6;
			c = argl;
			for (size_t k = 1; k < argl; k++) {
				if (arg[k] == '/' && (t->mech == SPF_MECH_PTR ||
						      spf_dual_cidr(arg + k, argl - k, &c4, &c6, 1, 1) == 0)) {
					c = k;
					break;
				}
			}
			if (t->mech == SPF_MECH_PTR)
				c = argl;
			if (!spf_spec_ok(arg + 1, c - 1))
				return -1;
			t->spec = arg + 1;
			t->speclen = c - 1;
		}
		if (t->mech == SPF_MECH_PTR) {
			if (c != argl)
				return -1;
		} else if (spf_dual_cidr(arg + c, argl - c, &t->cidr4, &t->cidr6, 1, 1) < 0) {
			return -1;
		}
	} else if (spf_ieq(name, namel, "ip4") || spf_ieq(name, namel, "ip6")) {
		int v6 = name[2] == '6';
		char ip[64];
		t->mech = v6 ? SPF_MECH_IP6 : SPF_MECH_IP4;
		if (argl < 2 || arg[0] != ':')
			return -1;
		size_t c = 1;
		while (c < argl && arg[c] != '/')
			c++;
		if (c - 1 >= sizeof(ip) || c == 1)
			return -1;
		memcpy(ip, arg + 1, c - 1);
		ip[c - 1] = '\0';
		if (inet_pton(v6 ? AF_INET6 : AF_INET, ip, t->addr) != 1)
			return -1;
		if (c < argl) {
			int *p = v6 ? &t->cidr6 : &t->cidr4;
			if ((*p = spf_cidr(arg + c + 1, argl - c - 1, v6 ? 128 : 32)) < 0)
				return -1;
		}
	} else {
		return -1;
	}
	rec->nterms++;
	return 0;
}

/* spf_record_parse - a whole "v=spf1" record (RFC 7208 4.5, 12) */
int spf_record_parse(const char *txt, size_t len, struct spf_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	if (len < 6 || !spf_ieq(txt, 6, "v=spf1") || (len > 6 && txt[6] != ' '))
		return -1;
	size_t i = 6;
	while (i < len) {
		while (i < len && txt[i] == ' ')
			i++;
		size_t s = i;
		while (i < len && txt[i] != ' ') {
			unsigned char ch = (unsigned char)txt[i];
			if (ch < 0x21 || ch > 0x7e)
				return -1;
			i++;
		}
		if (i > s && spf_term_parse(txt + s, i - s, rec) < 0)
			return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------- names */

/* spf_plain - octets written as themselves in a name's presentation form */
static int spf_plain(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '-' || ch == '_';
}

/* spf_name_escape - target text into presentation form (RFC 1035 5.1) */
int spf_name_escape(const char *raw, char *out, size_t outlen)
{
	size_t o = 0;
	if (outlen == 0)
		return -1;
	out[0] = '\0';
	for (const unsigned char *p = (const unsigned char *)raw; *p; p++) {
		char e[5];
		size_t el = 1;
		e[0] = (char)*p;
		if (*p == '\\') {
			e[1] = '\\';
			el = 2;
		} else if (!spf_plain(*p) && *p != '.') {
			e[0] = '\\';
			e[1] = (char)('0' + *p / 100);
			e[2] = (char)('0' + (*p / 10) % 10);
			e[3] = (char)('0' + *p % 10);
			el = 4;
		}
		if (el > outlen - 1 - o)
			return -1;
		memcpy(out + o, e, el);
		o += el;
		out[o] = '\0';
	}
	return 0;
}

/* spf_name_unescape - a presentation-form name back into text; -1 when an
 * escape is malformed or decodes to an escaped dot or a byte outside
 * %x21-7E (such a name is not usable as %{p} text) */
int spf_name_unescape(const char *name, char *out, size_t outlen)
{
	size_t o = 0;
	if (outlen == 0)
		return -1;
	out[0] = '\0';
	for (size_t i = 0; name[i]; i++) {
		unsigned v = (unsigned char)name[i];
		if (v == '\\') {
			if (name[i + 1] >= '0' && name[i + 1] <= '9') {
				v = 0;
				for (int k = 1; k <= 3; k++) {
					if (name[i + k] < '0' || name[i + k] > '9')
						return -1;
					v = v * 10 + (unsigned)(name[i + k] - '0');
				}
				i += 3;
			} else if (name[i + 1] == '\0') {
				return -1;
			} else {
				v = (unsigned char)name[++i];
			}
			if (v == '.')
				return -1;
		}
		if (v < 0x21 || v > 0x7e || o + 1 >= outlen)
			return -1;
		out[o++] = (char)v;
		out[o] = '\0';
	}
	return 0;
}

/* ---------------------------------------------------------------- check */

#define SPF_RRTYPE_TXT 16
#define SPF_NAMES_MAX 10 /* MX targets (4.6.4), PTR names (4.6.4, 5.5, 7.3) */

struct spf_frame {
	char *text;               /* the record (owned); rec points into it */
	struct spf_record rec;
	char domain[SPF_DOMAIN_MAX + 2]; /* as text (macro %{d}), not escaped */
	size_t next;              /* term being evaluated */
	int redirected;           /* reached by redirect=: "none" is permerror */
};

enum spf_wait {
	SPF_WAIT_RECORD, SPF_WAIT_A, SPF_WAIT_EXISTS, SPF_WAIT_MX, SPF_WAIT_MX_ADDR,
	SPF_WAIT_PTR, SPF_WAIT_PTR_ADDR, SPF_WAIT_EXP, SPF_WAIT_NOW,
	SPF_WAIT_P_PTR, SPF_WAIT_P_ADDR,
};

/* where evaluation resumes once %{p} is known */
enum spf_p_resume { SPF_P_RUN, SPF_P_EXP_DOMAIN, SPF_P_EXP_TEXT };

struct spf_check {
	struct dns *dns;
	struct dns_query *q;
	spf_done_cb done;
	void *arg;
	enum spf_wait wait;
	enum spf_result now;      /* result for SPF_WAIT_NOW */
	struct spf_macro_ctx ctx;
	char ip[DNS_ADDR_TEXT_MAX];
	char sender[SPF_ID_MAX * 2 + 2];
	char local[SPF_ID_MAX];
	char sdomain[SPF_ID_MAX];
	char helo[SPF_ID_MAX];
	char receiver[SPF_ID_MAX];
	unsigned lookups, voids;
	/* MX targets / PTR names, presentation form as dns_parse_name wrote them */
	char names[SPF_NAMES_MAX][DNS_NAME_TEXT_MAX];
	size_t nnames, iname;
	char ptrtarget[DNS_NAME_TEXT_MAX]; /* ptr: target-name, presentation form */
	int p_done;               /* %{p}: the validated name was looked up */
	enum spf_p_resume p_resume;
	char *exptext;            /* the explanation TXT (owned) */
	size_t exptextlen;
	char pname[DNS_NAME_TEXT_MAX];
	size_t depth;             /* frames in use */
	struct spf_frame frames[SPF_DEPTH_MAX];
};

static void spf_run(struct spf_check *c);
static void spf_frame_result(struct spf_check *c, enum spf_result r);
static void spf_on_raw(const struct dns_raw_result *res, void *arg);
static void spf_exp_start(struct spf_check *c);
static void spf_exp_finish(struct spf_check *c);

/* spf_free - release a check and its frames */
static void spf_free(struct spf_check *c)
{
	for (size_t i = 0; i < SPF_DEPTH_MAX; i++)
		free(c->frames[i].text);
	free(c->exptext);
	free(c);
}

/* spf_finish - report and free */
static void spf_finish(struct spf_check *c, enum spf_result r, const char *expl)
{
	c->q = NULL;
	c->done(c->arg, r, expl);
	spf_free(c);
}

/* spf_target - expand a domain-spec (or the current domain) into out,
 * cut to SPF_DOMAIN_MAX by dropping leading labels (RFC 7208 7.3) */
static int spf_target(struct spf_check *c, const char *spec, size_t speclen, char *out, size_t outlen)
{
	struct spf_frame *f = &c->frames[c->depth - 1];
	char buf[SPF_EXPAND_MAX];
	if (!spec) {
		snprintf(out, outlen, "%s", f->domain);
		return 0;
	}
	c->ctx.domain = f->domain;
	long n = spf_macro_expand(spec, speclen, &c->ctx, 0, buf, sizeof(buf));
	if (n < 0)
		return -1;
	char *p = buf;
	size_t l = (size_t)n;
	if (l > 0 && p[l - 1] == '.')
		p[--l] = '\0';
	while (l > SPF_DOMAIN_MAX) {
		char *dot = strchr(p, '.');
		if (!dot)
			return -1;
		l -= (size_t)(dot + 1 - p);
		p = dot + 1;
	}
	if (l >= outlen)
		return -1;
	memcpy(out, p, l + 1);
	return 0;
}

/* spf_raw - start a lookup of an already escaped name; -1 if it cannot */
static int spf_raw(struct spf_check *c, const char *name, int rrtype, enum spf_wait w)
{
	c->wait = w;
	c->q = dns_query_raw(c->dns, name, rrtype, spf_on_raw, c);
	return c->q ? 0 : -1;
}

/* spf_query - start a lookup of a target given as text (any octets: it is
 * escaped, so "foo:bar/baz.example.com" is asked for as it is written) */
static int spf_query(struct spf_check *c, const char *text, int rrtype, enum spf_wait w)
{
	char name[DNS_NAME_TEXT_MAX];
	if (spf_name_escape(text, name, sizeof(name)) < 0)
		return -1;
	return spf_raw(c, name, rrtype, w);
}

/* spf_prefix_eq - first bits of a and b agree */
static int spf_prefix_eq(const unsigned char *a, const unsigned char *b, int bits)
{
	int full = bits / 8, rest = bits % 8;
	if (memcmp(a, b, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	unsigned char m = (unsigned char)(0xff << (8 - rest));
	return (a[full] & m) == (b[full] & m);
}

/* spf_void - count a void lookup; 1 if the limit is now exceeded */
static int spf_void(struct spf_check *c)
{
	return ++c->voids > SPF_VOID_MAX;
}

/* spf_term_done - the current term matched (1) or not (0) */
static void spf_term_done(struct spf_check *c, int match)
{
	struct spf_frame *f = &c->frames[c->depth - 1];
	if (match) {
		spf_frame_result(c, f->rec.terms[f->next].qual);
		return;
	}
	f->next++;
	spf_run(c);
}

/* spf_on_now - a result known at start, delivered from the event loop */
static void spf_on_now(const struct dns_host_result *res, void *arg)
{
	struct spf_check *c = arg;
	(void)res;
	c->q = NULL;
	spf_finish(c, c->now, NULL);
}

/* spf_rr_match - does any A/AAAA rdata match the client (prefix bits) */
static int spf_rr_match(const struct spf_check *c, const struct dns_raw_result *res, int bits)
{
	int fam = c->ctx.ipv6 ? AF_INET6 : AF_INET;
	for (size_t i = 0; res->status == DNS_OK && i < res->nrrs; i++) {
		struct dns_addr a;
		if (dns_parse_a(res->rrs[i].data, res->rrs[i].len, fam, &a) == 0 &&
		    spf_prefix_eq(a.bytes, c->ctx.ipbytes, bits))
			return 1;
	}
	return 0;
}

/* spf_addr_query - A or AAAA (the client's family) of an escaped name */
static void spf_addr_query(struct spf_check *c, const char *name, enum spf_wait w)
{
	if (spf_raw(c, name, c->ctx.ipv6 ? DNS_RRTYPE_AAAA : DNS_RRTYPE_A, w) < 0)
		spf_finish(c, SPF_TEMPERROR, NULL);
}

/* spf_name_next - next MX / PTR name's addresses, or the term's verdict */
static void spf_name_next(struct spf_check *c, enum spf_wait w)
{
	if (c->iname >= c->nnames) {
		spf_term_done(c, 0);
		return;
	}
	spf_addr_query(c, c->names[c->iname], w);
}

/* spf_ptr_rank - 0: name is target, 1: a subdomain of it, 2: neither
 * (RFC 7208 5.5, 7.3). Both in presentation form: a dot escaped as "\."
 * is inside a label, not a boundary */
static int spf_ptr_rank(const char *name, const char *target)
{
	size_t nl = strlen(name), tl = strlen(target);
	if (nl > 0 && name[nl - 1] == '.')
		nl--;
	if (tl > 0 && target[tl - 1] == '.')
		tl--;
	if (tl == 0 || nl < tl || strncasecmp(name + nl - tl, target, tl) != 0)
		return 2;
	if (nl == tl)
		return 0;
	size_t dot = nl - tl - 1, bs = 0;
	if (name[dot] != '.')
		return 2;
	while (bs < dot && name[dot - 1 - bs] == '\\')
		bs++;
	return bs % 2 == 0 ? 1 : 2;
}

/* spf_has_p - does a macro-string use %{p} */
static int spf_has_p(const char *s, size_t l)
{
	for (size_t i = 0; i + 2 < l; i++)
		if (s[i] == '%' && s[i + 1] == '{' && (s[i + 2] == 'p' || s[i + 2] == 'P'))
			return 1;
	return 0;
}

/* spf_ptr_names - the first SPF_NAMES_MAX PTR names of an answer into
 * c->names (RFC 7208 4.6.4: the rest are ignored) */
static void spf_ptr_names(struct spf_check *c, const struct dns_raw_result *res)
{
	c->nnames = c->iname = 0;
	for (size_t i = 0; res->status == DNS_OK && i < res->nrrs && i < SPF_NAMES_MAX; i++) {
		size_t used;
		if (dns_parse_name(res->rrs[i].data, res->rrs[i].len, &used, c->names[c->nnames],
				   sizeof(c->names[0])) == 0 && used == res->rrs[i].len)
			c->nnames++;
	}
}

/* spf_names_filter - rank c->names against target: ranked, all of them
 * in the order target, subdomains, others (stable; %{p}, 7.3); else only
 * the target and its subdomains, in order (ptr, 5.5) */
static void spf_names_filter(struct spf_check *c, const char *target, int ranked)
{
	size_t n = 0;
	for (int pass = 0; pass < (ranked ? 3 : 1); pass++) {
		for (size_t i = n; i < c->nnames; i++) {
			int rank = spf_ptr_rank(c->names[i], target);
			if (ranked ? rank != pass : rank == 2)
				continue;
			if (i != n) {
				char tmp[DNS_NAME_TEXT_MAX];
				memcpy(tmp, c->names[i], sizeof(tmp));
				memmove(c->names[n + 1], c->names[n], (i - n) * sizeof(c->names[0]));
				memcpy(c->names[n], tmp, sizeof(tmp));
			}
			n++;
		}
	}
	c->nnames = n;
}

static void spf_reverse_name(const struct spf_check *c, char *out, size_t outlen);

/* spf_p_start - look up the validated client name for %{p} (RFC 7208
 * 7.3); 1 when a lookup started (resumed at `resume` later) */
static int spf_p_start(struct spf_check *c, enum spf_p_resume resume)
{
	char rev[80];
	if (c->p_done)
		return 0;
	c->p_done = 1;
	c->p_resume = resume;
	/* the current domain ranks the validated names */
	if (spf_name_escape(c->frames[c->depth - 1].domain, c->ptrtarget, sizeof(c->ptrtarget)) < 0)
		c->ptrtarget[0] = '\0';
	spf_reverse_name(c, rev, sizeof(rev));
	return spf_raw(c, rev, DNS_RRTYPE_PTR, SPF_WAIT_P_PTR) == 0;
}

/* spf_p_done - %{p} is known (name NULL: "unknown"): resume */
static void spf_p_done(struct spf_check *c, const char *name)
{
	if (name && spf_name_unescape(name, c->pname, sizeof(c->pname)) == 0)
		c->ctx.ptr_name = c->pname;
	switch (c->p_resume) {
	case SPF_P_EXP_DOMAIN:
		spf_exp_start(c);
		break;
	case SPF_P_EXP_TEXT:
		spf_exp_finish(c);
		break;
	default:
		spf_run(c);
		break;
	}
}

/* spf_txt_copy - one TXT rdata's strings joined (RFC 7208 3.3), owned */
static char *spf_txt_copy(const struct dns_rr *rr, size_t *len)
{
	char *t = malloc(rr->len + 1);
	if (t && dns_parse_txt(rr->data, rr->len, t, rr->len + 1, len) < 0) {
		free(t);
		return NULL;
	}
	return t;
}

/* spf_on_record - the TXT answer for the top frame's domain: select the
 * SPF record (RFC 7208 4.4, 4.5) and evaluate it */
static void spf_on_record(struct spf_check *c, const struct dns_raw_result *res)
{
	struct spf_frame *f = &c->frames[c->depth - 1];
	switch (res->status) {
	case DNS_OK:
		break;
	case DNS_NXDOMAIN:
	case DNS_NODATA:
	case DNS_BADNAME:
		spf_frame_result(c, SPF_NONE);
		return;
	default:
		spf_finish(c, SPF_TEMPERROR, NULL);
		return;
	}
	char *found = NULL;
	size_t flen = 0;
	for (size_t i = 0; i < res->nrrs; i++) {
		size_t l;
		if (res->rrs[i].len == 0)
			continue; /* no strings at all: not a record (RFC 1035 3.3.14) */
		char *t = spf_txt_copy(&res->rrs[i], &l);
		if (!t)
			continue;
		if (l >= 6 && spf_ieq(t, 6, "v=spf1") && (l == 6 || t[6] == ' ')) {
			if (found) {
				free(t);
				free(found);
				spf_finish(c, SPF_PERMERROR, NULL); /* 4.5: more than one record */
				return;
			}
			found = t;
			flen = l;
		} else {
			free(t);
		}
	}
	if (!found) {
		spf_frame_result(c, SPF_NONE);
		return;
	}
	free(f->text);
	f->text = found;
	if (spf_record_parse(f->text, flen, &f->rec) < 0) {
		spf_finish(c, SPF_PERMERROR, NULL);
		return;
	}
	f->next = 0;
	spf_run(c);
}

/* spf_on_exp - the explanation TXT for a fail (RFC 7208 6.2): any DNS
 * error, no record or several records just mean no explanation */
static void spf_on_exp(struct spf_check *c, const struct dns_raw_result *res)
{
	size_t l = 0;
	free(c->exptext);
	c->exptext = NULL;
	if (res->status == DNS_OK && res->nrrs == 1 && res->rrs[0].len > 0)
		c->exptext = spf_txt_copy(&res->rrs[0], &l);
	if (c->exptext && strlen(c->exptext) != l) {
		free(c->exptext); /* a NUL inside: not text */
		c->exptext = NULL;
	}
	c->exptextlen = l;
	if (c->exptext && spf_has_p(c->exptext, l) && spf_p_start(c, SPF_P_EXP_TEXT))
		return;
	spf_exp_finish(c);
}

/* spf_on_mech - the answer for a mechanism's lookup (a, mx, ptr, exists) */
static void spf_on_mech(struct spf_check *c, const struct dns_raw_result *res)
{
	struct spf_frame *f = &c->frames[c->depth - 1];
	const struct spf_term *t = &f->rec.terms[f->next];
	int bits = c->ctx.ipv6 ? t->cidr6 : t->cidr4;
	int isvoid = res->status == DNS_NXDOMAIN || res->status == DNS_NODATA ||
		     (res->status == DNS_OK && res->nrrs == 0);
	int err = !isvoid && res->status != DNS_OK && res->status != DNS_BADNAME;

	switch (c->wait) {
	case SPF_WAIT_A:
	case SPF_WAIT_EXISTS:
	case SPF_WAIT_MX:
		if (res->status == DNS_BADNAME) {
			spf_term_done(c, 0); /* not a name that can exist */
			return;
		}
		if (err) {
			spf_finish(c, SPF_TEMPERROR, NULL);
			return;
		}
		if (isvoid) {
			/* RFC 7208 4.6.4: a lookup that finds nothing is void */
			if (spf_void(c))
				spf_finish(c, SPF_PERMERROR, NULL);
			else
				spf_term_done(c, 0);
			return;
		}
		if (c->wait == SPF_WAIT_A) {
			spf_term_done(c, spf_rr_match(c, res, bits));
			return;
		}
		if (c->wait == SPF_WAIT_EXISTS) {
			spf_term_done(c, 1);
			return;
		}
		if (res->nrrs > SPF_MX_MAX) {
			spf_finish(c, SPF_PERMERROR, NULL); /* RFC 7208 4.6.4 */
			return;
		}
		c->nnames = c->iname = 0;
		for (size_t i = 0; i < res->nrrs; i++) {
			unsigned pref;
			if (dns_parse_mx(res->rrs[i].data, res->rrs[i].len, &pref, c->names[c->nnames],
					 sizeof(c->names[0])) == 0 && strcmp(c->names[c->nnames], ".") != 0)
				c->nnames++;
		}
		spf_name_next(c, SPF_WAIT_MX_ADDR);
		return;
	case SPF_WAIT_PTR:
		/* RFC 7208 5.5: a PTR error just means no match; only names in
		 * the target domain are validated */
		spf_ptr_names(c, res);
		spf_names_filter(c, c->ptrtarget, 0);
		spf_name_next(c, SPF_WAIT_PTR_ADDR);
		return;
	case SPF_WAIT_MX_ADDR:
		if (err) {
			spf_finish(c, SPF_TEMPERROR, NULL);
			return;
		}
		if (spf_rr_match(c, res, bits)) {
			spf_term_done(c, 1);
			return;
		}
		c->iname++;
		spf_name_next(c, SPF_WAIT_MX_ADDR);
		return;
	case SPF_WAIT_PTR_ADDR:
		/* 5.5: an address lookup error skips that name */
		if (spf_rr_match(c, res, c->ctx.ipv6 ? 128 : 32)) {
			spf_term_done(c, 1);
			return;
		}
		c->iname++;
		spf_name_next(c, SPF_WAIT_PTR_ADDR);
		return;
	default:
		spf_finish(c, SPF_TEMPERROR, NULL);
		return;
	}
}

/* spf_on_raw - every DNS answer of a check */
static void spf_on_raw(const struct dns_raw_result *res, void *arg)
{
	struct spf_check *c = arg;
	c->q = NULL;
	switch (c->wait) {
	case SPF_WAIT_RECORD:
		spf_on_record(c, res);
		return;
	case SPF_WAIT_EXP:
		spf_on_exp(c, res);
		return;
	case SPF_WAIT_P_PTR:
		/* any error: %{p} is "unknown". Names are ranked: the current
		 * domain, then its subdomains, then any (RFC 7208 7.3) */
		spf_ptr_names(c, res);
		spf_names_filter(c, c->ptrtarget, 1);
		if (c->nnames == 0) {
			spf_p_done(c, NULL);
			return;
		}
		spf_addr_query(c, c->names[0], SPF_WAIT_P_ADDR);
		return;
	case SPF_WAIT_P_ADDR: {
		char text[DNS_NAME_TEXT_MAX];
		if (spf_rr_match(c, res, c->ctx.ipv6 ? 128 : 32) &&
		    spf_name_unescape(c->names[c->iname], text, sizeof(text)) == 0) {
			spf_p_done(c, c->names[c->iname]);
			return;
		}
		if (++c->iname >= c->nnames) {
			spf_p_done(c, NULL);
			return;
		}
		spf_addr_query(c, c->names[c->iname], SPF_WAIT_P_ADDR);
		return;
	}
	default:
		spf_on_mech(c, res);
		return;
	}
}

/* spf_exp_start - a fail at the top: fetch the exp= explanation (6.2) */
static void spf_exp_start(struct spf_check *c)
{
	struct spf_frame *f = &c->frames[c->depth - 1];
	char dom[SPF_DOMAIN_MAX + 2];
	if (spf_has_p(f->rec.exp, f->rec.explen) && spf_p_start(c, SPF_P_EXP_DOMAIN))
		return;
	if (spf_target(c, f->rec.exp, f->rec.explen, dom, sizeof(dom)) == 0 && dom[0] &&
	    spf_query(c, dom, SPF_RRTYPE_TXT, SPF_WAIT_EXP) == 0)
		return;
	spf_finish(c, SPF_FAIL, NULL);
}

/* spf_exp_finish - expand the fetched explanation and report the fail */
static void spf_exp_finish(struct spf_check *c)
{
	char expl[SPF_EXPLAIN_MAX];
	const char *e = NULL;
	c->ctx.domain = c->frames[c->depth - 1].domain;
	if (c->exptext && spf_macro_expand(c->exptext, c->exptextlen, &c->ctx, 1, expl, sizeof(expl)) >= 0)
		e = expl;
	spf_finish(c, SPF_FAIL, e);
}

/* spf_fetch - look up the record of the top frame */
static void spf_fetch(struct spf_check *c)
{
	if (spf_query(c, c->frames[c->depth - 1].domain, SPF_RRTYPE_TXT, SPF_WAIT_RECORD) < 0)
		spf_finish(c, SPF_TEMPERROR, NULL);
}

/* spf_frame_result - the top frame's check_host() result */
static void spf_frame_result(struct spf_check *c, enum spf_result r)
{
	struct spf_frame *f = &c->frames[c->depth - 1];
	if (r == SPF_NONE && f->redirected)
		r = SPF_PERMERROR; /* RFC 7208 6.1 */
	if (c->depth == 1) {
		if (r == SPF_FAIL && f->rec.exp) {
			spf_exp_start(c);
			return;
		}
		spf_finish(c, r, NULL);
		return;
	}
	/* an include: RFC 7208 5.2 table */
	free(f->text);
	f->text = NULL;
	c->depth--;
	switch (r) {
	case SPF_PASS:
		spf_term_done(c, 1);
		break;
	case SPF_FAIL:
	case SPF_SOFTFAIL:
	case SPF_NEUTRAL:
		spf_term_done(c, 0);
		break;
	case SPF_TEMPERROR:
		spf_finish(c, SPF_TEMPERROR, NULL);
		break;
	default:
		spf_finish(c, SPF_PERMERROR, NULL);
		break;
	}
}

/* spf_reverse_name - the client's in-addr.arpa / ip6.arpa name */
static void spf_reverse_name(const struct spf_check *c, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *b = c->ctx.ipbytes;
	if (!c->ctx.ipv6) {
		snprintf(out, outlen, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
		return;
	}
	size_t k = 0;
	for (int i = 15; i >= 0 && k + 4 < outlen; i--) {
		out[k++] = hex[b[i] & 15];
		out[k++] = '.';
		out[k++] = hex[b[i] >> 4];
		out[k++] = '.';
	}
	snprintf(out + k, outlen - k, "ip6.arpa");
}

/* spf_count - count a DNS-querying term; 1 if over the limit */
static int spf_count(struct spf_check *c)
{
	return ++c->lookups > SPF_LOOKUP_MAX;
}

/* spf_mech_start - start the lookup of a DNS-using mechanism at dom */
static void spf_mech_start(struct spf_check *c, const struct spf_term *t, const char *dom)
{
	int rc;
	if (t->mech == SPF_MECH_INCLUDE) {
		if (c->depth >= SPF_DEPTH_MAX) {
			spf_finish(c, SPF_PERMERROR, NULL);
			return;
		}
		struct spf_frame *nf = &c->frames[c->depth++];
		free(nf->text);
		memset(nf, 0, sizeof(*nf));
		snprintf(nf->domain, sizeof(nf->domain), "%s", dom);
		spf_fetch(c);
		return;
	}
	if (t->mech == SPF_MECH_MX) {
		rc = spf_query(c, dom, DNS_RRTYPE_MX, SPF_WAIT_MX);
	} else if (t->mech == SPF_MECH_PTR) {
		char rev[80];
		spf_reverse_name(c, rev, sizeof(rev));
		rc = spf_name_escape(dom, c->ptrtarget, sizeof(c->ptrtarget));
		if (rc == 0)
			rc = spf_raw(c, rev, DNS_RRTYPE_PTR, SPF_WAIT_PTR);
	} else if (t->mech == SPF_MECH_EXISTS) {
		rc = spf_query(c, dom, DNS_RRTYPE_A, SPF_WAIT_EXISTS); /* A even for IPv6 (5.7) */
	} else {
		rc = spf_query(c, dom, c->ctx.ipv6 ? DNS_RRTYPE_AAAA : DNS_RRTYPE_A, SPF_WAIT_A);
	}
	if (rc < 0)
		spf_finish(c, SPF_TEMPERROR, NULL);
}

/* spf_run - evaluate terms of the top frame until one needs DNS or matches */
static void spf_run(struct spf_check *c)
{
	struct spf_frame *f = &c->frames[c->depth - 1];
	char dom[SPF_DOMAIN_MAX + 2];

	for (; f->next < f->rec.nterms; f->next++) {
		const struct spf_term *t = &f->rec.terms[f->next];
		switch (t->mech) {
		case SPF_MECH_ALL:
			spf_frame_result(c, t->qual);
			return;
		case SPF_MECH_IP4:
		case SPF_MECH_IP6:
			if ((t->mech == SPF_MECH_IP6) == c->ctx.ipv6 &&
			    spf_prefix_eq(t->addr, c->ctx.ipbytes, c->ctx.ipv6 ? t->cidr6 : t->cidr4)) {
				spf_frame_result(c, t->qual);
				return;
			}
			continue;
		default:
			break;
		}
		/* %{p} needs its own lookups first; the term is then redone */
		if (t->spec && spf_has_p(t->spec, t->speclen) && spf_p_start(c, SPF_P_RUN))
			return;
		if (spf_count(c) || spf_target(c, t->spec, t->speclen, dom, sizeof(dom)) < 0) {
			spf_finish(c, SPF_PERMERROR, NULL);
			return;
		}
		spf_mech_start(c, t, dom);
		return;
	}
	if (f->rec.redirect) {
		if (spf_has_p(f->rec.redirect, f->rec.redirectlen) && spf_p_start(c, SPF_P_RUN))
			return;
		if (spf_count(c) || spf_target(c, f->rec.redirect, f->rec.redirectlen, dom, sizeof(dom)) < 0) {
			spf_finish(c, SPF_PERMERROR, NULL);
			return;
		}
		/* a tail call: the new record's result is this frame's result,
		 * and its exp= (not this one's) explains a fail (RFC 7208 6.2) */
		free(f->text);
		f->text = NULL;
		memset(&f->rec, 0, sizeof(f->rec));
		f->redirected = 1;
		f->next = 0;
		snprintf(f->domain, sizeof(f->domain), "%s", dom);
		spf_fetch(c);
		return;
	}
	spf_frame_result(c, SPF_NEUTRAL);
}

/* spf_domain_ok - RFC 7208 4.3: a multi-label name with labels of 1..63
 * octets, not an address literal and not an all-numeric top label */
static int spf_domain_ok(const char *d)
{
	size_t l = strlen(d), lab = 0, labels = 0, digits = 0;
	if (l > 0 && d[l - 1] == '.')
		l--;
	if (l == 0 || l > SPF_DOMAIN_MAX || d[0] == '[')
		return 0;
	for (size_t i = 0; i <= l; i++) {
		if (i == l || d[i] == '.') {
			if (lab == 0 || lab > 63)
				return 0;
			labels++;
			if (i == l && digits == lab)
				return 0;
			lab = digits = 0;
		} else {
			lab++;
			digits += d[i] >= '0' && d[i] <= '9';
		}
	}
	return labels >= 2;
}
/* spf_check_start - begin check_host() for a client */
struct spf_check *spf_check_start(struct dns *dns, const char *ip, const char *mailfrom,
				  const char *helo, const char *receiver, spf_done_cb done,
				  void *arg)
{
	struct spf_check *c;
	struct dns_addr a;

	if (!ip || dns_parse_ip(ip, &a) < 0 || !mailfrom || !helo)
		return NULL;
	if (strlen(mailfrom) >= SPF_ID_MAX || strlen(helo) >= SPF_ID_MAX ||
	    (receiver && strlen(receiver) >= SPF_ID_MAX))
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->dns = dns;
	c->done = done;
	c->arg = arg;
	/* an IPv4-mapped IPv6 client is an IPv4 client (RFC 7208 5) */
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (a.family == AF_INET6 && memcmp(a.bytes, mapped, 12) == 0) {
		memmove(a.bytes, a.bytes + 12, 4);
		a.family = AF_INET;
		inet_ntop(AF_INET, a.bytes, a.text, sizeof(a.text));
	}
	c->ctx.ipv6 = a.family == AF_INET6;
	memcpy(c->ctx.ipbytes, a.bytes, 16);
	snprintf(c->ip, sizeof(c->ip), "%s", a.text);
	snprintf(c->helo, sizeof(c->helo), "%s", helo);
	const char *at = strrchr(mailfrom, '@');
	if (mailfrom[0] == '\0') {
		snprintf(c->local, sizeof(c->local), "postmaster");
		snprintf(c->sdomain, sizeof(c->sdomain), "%s", helo);
	} else if (!at) {
		snprintf(c->local, sizeof(c->local), "postmaster");
		snprintf(c->sdomain, sizeof(c->sdomain), "%s", mailfrom);
	} else {
		if (at == mailfrom)
			snprintf(c->local, sizeof(c->local), "postmaster");
		else
			snprintf(c->local, sizeof(c->local), "%.*s", (int)(at - mailfrom), mailfrom);
		snprintf(c->sdomain, sizeof(c->sdomain), "%s", at + 1);
	}
	snprintf(c->sender, sizeof(c->sender), "%s@%s", c->local, c->sdomain);
	snprintf(c->receiver, sizeof(c->receiver), "%s", receiver ? receiver : "unknown");
	c->ctx.sender = c->sender;
	c->ctx.local = c->local;
	c->ctx.sender_domain = c->sdomain;
	c->ctx.ip = c->ip;
	c->ctx.helo = c->helo;
	c->ctx.receiver = c->receiver;
	c->ctx.timestamp = (long long)time(NULL);
	c->depth = 1;
	if (!spf_domain_ok(c->sdomain)) {
		/* answered "none" without DNS, but still from the event loop:
		 * an address-literal host lookup completes later, not here */
		c->wait = SPF_WAIT_NOW;
		c->now = SPF_NONE;
		c->q = dns_host_lookup(dns, "127.0.0.1", spf_on_now, c);
	} else {
		/* spf_domain_ok bounds the length to SPF_DOMAIN_MAX */
		memcpy(c->frames[0].domain, c->sdomain, strlen(c->sdomain) + 1);
		(void)spf_query(c, c->frames[0].domain, SPF_RRTYPE_TXT, SPF_WAIT_RECORD);
	}
	if (!c->q) {
		spf_free(c);
		return NULL;
	}
	return c;
}

/* spf_check_cancel - abandon a check; its callback never runs */
void spf_check_cancel(struct spf_check *c)
{
	if (!c)
		return;
	if (c->q)
		dns_cancel(c->q);
	spf_free(c);
}

/* ---------------------------------------------------------------- header */

#define SPF_HDR_VALUE_MAX 255 /* identities are cut to this in the field */

/* the comment of each result (RFC 7208 9.1): S the sender, A the client */
static const char *const spf_hdr_text[] = {
	[SPF_NONE] = "domain of S does not designate permitted sender hosts",
	[SPF_NEUTRAL] = "A is neither permitted nor denied by domain of S",
	[SPF_PASS] = "domain of S designates A as permitted sender",
	[SPF_FAIL] = "domain of S does not designate A as permitted sender",
	[SPF_SOFTFAIL] = "domain of transitioning S does not designate A as permitted sender",
	[SPF_TEMPERROR] = "temporary error in processing during lookup of S",
	[SPF_PERMERROR] = "permanent error in processing domain of S",
};

/* spf_hdr_word - a space (or a fold, past column 76) then the word */
static void spf_hdr_word(struct strbuf *out, size_t *col, const struct strbuf *w)
{
	if (*col + 1 + w->len > 76 && *col > 8) {
		strbuf_add(out, "\r\n\t", 3);
		*col = 8;
	} else {
		strbuf_addc(out, ' ');
		(*col)++;
	}
	strbuf_add(out, w->s, w->len);
	*col += w->len;
}

/* spf_hdr_clean - s cut to SPF_HDR_VALUE_MAX with every byte outside
 * %x20-7E (CR, LF, controls, 8-bit) replaced by '?' */
static void spf_hdr_clean(const char *s, char *out)
{
	size_t o = 0;
	for (; s && s[o] && o < SPF_HDR_VALUE_MAX; o++) {
		unsigned char ch = (unsigned char)s[o];
		out[o] = ch >= 0x20 && ch <= 0x7e ? (char)ch : '?';
	}
	out[o] = '\0';
}

/* spf_hdr_quoted - add s to w, each of the bytes in `special` (and '\')
 * as a quoted-pair (RFC 5322 3.2.1) */
static void spf_hdr_quoted(struct strbuf *w, const char *s, const char *special)
{
	for (; *s; s++) {
		if (*s == '\\' || strchr(special, *s))
			strbuf_addc(w, '\\');
		strbuf_addc(w, *s);
	}
}

/* spf_hdr_pair - "key=value;": a dot-atom as it is, else a quoted-string */
static void spf_hdr_pair(struct strbuf *out, size_t *col, const char *key, const char *v, int last)
{
	static const char atext[] = "!#$%&'*+-/=?^_`{|}~";
	struct strbuf w;
	size_t n = strlen(v);
	int atom = n > 0 && v[0] != '.' && v[n - 1] != '.' && !strstr(v, "..");
	for (size_t i = 0; atom && i < n; i++)
		atom = (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
		       (v[i] >= '0' && v[i] <= '9') || v[i] == '.' || strchr(atext, v[i]) != NULL;
	strbuf_init(&w);
	strbuf_addf(&w, "%s=", key);
	if (atom) {
		strbuf_add(&w, v, n);
	} else {
		strbuf_addc(&w, '"');
		spf_hdr_quoted(&w, v, "\"");
		strbuf_addc(&w, '"');
	}
	if (!last)
		strbuf_addc(&w, ';');
	spf_hdr_word(out, col, &w);
	strbuf_free(&w);
}

/* spf_received_header - a Received-SPF field (RFC 7208 9.1) */
void spf_received_header(enum spf_result r, const char *ip, const char *mailfrom, const char *helo,
			 const char *receiver, struct strbuf *out)
{
	char cip[SPF_HDR_VALUE_MAX + 1], cfrom[SPF_HDR_VALUE_MAX + 1], chelo[SPF_HDR_VALUE_MAX + 1],
	    crecv[SPF_HDR_VALUE_MAX + 1];
	struct strbuf w;
	size_t col;

	if ((unsigned)r > SPF_PERMERROR)
		r = SPF_PERMERROR;
	spf_hdr_clean(ip, cip);
	spf_hdr_clean(mailfrom, cfrom);
	spf_hdr_clean(helo, chelo);
	spf_hdr_clean(receiver, crecv);
	strbuf_addf(out, "Received-SPF: %s", spf_result_str(r));
	col = strlen("Received-SPF: ") + strlen(spf_result_str(r));
	/* the comment, word by word; in the identities '(' ')' '\' and spaces
	 * are quoted-pairs, so each stays one word of a well-formed comment */
	strbuf_init(&w);
	strbuf_addc(&w, '(');
	if (crecv[0]) {
		spf_hdr_quoted(&w, crecv, "() ");
		strbuf_addc(&w, ':');
		spf_hdr_word(out, &col, &w);
		strbuf_reset(&w);
	}
	for (const char *p = spf_hdr_text[r]; *p;) {
		size_t l = strcspn(p, " ");
		if (l == 1 && *p == 'S') {
			/* the identity checked: MAIL FROM, or postmaster@HELO for
			 * the null path (RFC 7208 2.3, 4.3) */
			if (!cfrom[0])
				strbuf_adds(&w, "postmaster@");
			spf_hdr_quoted(&w, cfrom[0] ? cfrom : chelo, "() ");
		} else if (l == 1 && *p == 'A') {
			spf_hdr_quoted(&w, cip[0] ? cip : "unknown", "() ");
		} else {
			strbuf_add(&w, p, l);
		}
		p += l;
		if (*p == '\0')
			strbuf_addc(&w, ')');
		else
			p++;
		spf_hdr_word(out, &col, &w);
		strbuf_reset(&w);
	}
	strbuf_free(&w);
	spf_hdr_pair(out, &col, "client-ip", cip, 0);
	if (cfrom[0])
		spf_hdr_pair(out, &col, "envelope-from", cfrom, 0);
	if (chelo[0])
		spf_hdr_pair(out, &col, "helo", chelo, 0);
	if (crecv[0])
		spf_hdr_pair(out, &col, "receiver", crecv, 0);
	spf_hdr_pair(out, &col, "identity", cfrom[0] ? "mailfrom" : "helo", 1);
	strbuf_add(out, "\r\n", 2);
}
