/*
 * authres - Authentication-Results (RFC 8601): compose ours, recognise
 * fields claiming our authserv-id. See authres.h for the interface.
 *
 * Exports: authres_begin, authres_method, authres_comment, authres_prop,
 * authres_end, authres_parse_id, authres_field_is_ours.
 *
 * Trusts nothing: every value is capped and reduced to printable ASCII
 * before it is written (never a CR, LF or NUL into a header), quoted when
 * it is not a token; parsed fields are scanned with bounds and a comment
 * nesting limit.
 * Standards: RFC 8601 2.2 (syntax), 5 (removing forged fields); RFC 5322
 * 2.2.3, 3.2.2-3.2.4; RFC 2045 5.1 (token, tspecials).
 */
#include "policy/authres.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/str.h"

#define AUTHRES_COMMENT_DEPTH 32

/* authres_is_tspecial - RFC 2045 tspecials */
static int authres_is_tspecial(char c)
{
	return c && strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

/* authres_is_token_char - RFC 2045 token octet */
static int authres_is_token_char(char c)
{
	return c > 0x20 && c < 0x7f && !authres_is_tspecial(c);
}

/* authres_clean - printable ASCII copy of s, capped; returns its length */
static size_t authres_clean(const char *s, char *out, size_t outlen)
{
	size_t n = 0;
	for (; s && *s && n + 1 < outlen && n < AUTHRES_VALUE_MAX; s++)
		out[n++] = (*s < 0x20 || *s >= 0x7f) ? '?' : *s; /* char may be signed: 8-bit < 0 */
	out[n] = '\0';
	return n;
}

/* authres_is_domain - LDH labels (and '_') joined by single dots */
static int authres_is_domain(const char *s, size_t n)
{
	size_t lab = 0;
	if (n == 0 || n > 255)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (lab == 0 || i + 1 == n)
				return 0;
			lab = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
			   c == '_') {
			if (++lab > 63)
				return 0;
		} else {
			return 0;
		}
	}
	return 1;
}

/* authres_is_dot_atom - RFC 5322 dot-atom-text */
static int authres_is_dot_atom(const char *s, size_t n)
{
	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (s[i + 1] == '.')
				return 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      (c && strchr("!#$%&'*+-/=?^_`{|}~", c))))
			return 0;
	}
	return 1;
}

/* authres_is_bare - value may be written unquoted: a token, or
 * [[local-part] "@"] domain-name (RFC 8601 2.2 pvalue) */
static int authres_is_bare(const char *v, size_t n)
{
	if (n == 0)
		return 0;
	size_t i;
	for (i = 0; i < n && authres_is_token_char(v[i]); i++)
		;
	if (i == n)
		return 1;
	const char *at = memrchr(v, '@', n);
	if (!at)
		return 0;
	size_t ll = (size_t)(at - v);
	return authres_is_domain(at + 1, n - ll - 1) && (ll == 0 || authres_is_dot_atom(v, ll));
}

/* authres_put - append one piece after a space, or on a new folded line
 * when it would pass the fold column */
static void authres_put(struct authres *a, const char *p, size_t n)
{
	if (a->col + 1 + n > AUTHRES_FOLD && a->col > 1) {
		strbuf_add(a->out, "\r\n\t", 3);
		a->col = 1;
	} else {
		strbuf_addc(a->out, ' ');
		a->col++;
	}
	strbuf_add(a->out, p, n);
	a->col += n;
}

/* authres_value - v as a bare or quoted value into out */
static void authres_value(const char *v, struct strbuf *out)
{
	char c[AUTHRES_VALUE_MAX + 1];
	size_t n = authres_clean(v, c, sizeof(c));
	if (authres_is_bare(c, n)) {
		strbuf_add(out, c, n);
		return;
	}
	strbuf_addc(out, '"');
	for (size_t i = 0; i < n; i++) {
		if (c[i] == '"' || c[i] == '\\')
			strbuf_addc(out, '\\');
		strbuf_addc(out, c[i]);
	}
	strbuf_addc(out, '"');
}

/* authres_begin - see authres.h */
void authres_begin(struct authres *a, struct strbuf *out, const char *authserv_id)
{
	a->out = out;
	a->nres = 0;
	size_t start = out->len;
	strbuf_adds(out, "Authentication-Results: ");
	authres_value(authserv_id && authserv_id[0] ? authserv_id : "localhost", out);
	a->col = out->len - start;
}

/* authres_method - see authres.h */
void authres_method(struct authres *a, const char *method, const char *result)
{
	char m[64], r[64];
	size_t mn = 0, rn = 0;
	for (; method && *method && mn + 1 < sizeof(m); method++)
		if (authres_is_token_char(*method))
			m[mn++] = *method;
	for (; result && *result && rn + 1 < sizeof(r); result++)
		if (authres_is_token_char(*result))
			r[rn++] = *result;
	m[mn] = r[rn] = '\0';
	strbuf_adds(a->out, ";\r\n\t");
	strbuf_addf(a->out, "%s=%s", mn ? m : "x-unknown", rn ? r : "none");
	a->col = 1 + (mn ? mn : 9) + 1 + (rn ? rn : 4);
	a->nres++;
}

/* authres_comment - see authres.h */
void authres_comment(struct authres *a, const char *text)
{
	char c[AUTHRES_VALUE_MAX + 1];
	size_t n = authres_clean(text, c, sizeof(c));
	struct strbuf s;
	strbuf_init(&s);
	strbuf_addc(&s, '(');
	for (size_t i = 0; i < n; i++) {
		if (c[i] == '(' || c[i] == ')' || c[i] == '\\')
			strbuf_addc(&s, '\\');
		strbuf_addc(&s, c[i]);
	}
	strbuf_addc(&s, ')');
	authres_put(a, s.s, s.len);
	strbuf_free(&s);
}

/* authres_prop - see authres.h */
void authres_prop(struct authres *a, const char *ptype_property, const char *value)
{
	struct strbuf s;
	strbuf_init(&s);
	for (const char *p = ptype_property; p && *p && s.len < 64; p++)
		if (authres_is_token_char(*p) || *p == '.')
			strbuf_addc(&s, *p);
	strbuf_addc(&s, '=');
	authres_value(value ? value : "", &s);
	authres_put(a, s.s, s.len);
	strbuf_free(&s);
}

/* authres_end - see authres.h */
void authres_end(struct authres *a)
{
	if (a->nres == 0)
		strbuf_adds(a->out, "; none");
	strbuf_add(a->out, "\r\n", 2);
}

/* ------------------------------------------------------------ parsing */

/* authres_skip_cfws - white space, line breaks and (nested) comments;
 * SIZE_MAX on an unterminated or too deep comment */
static size_t authres_skip_cfws(const char *s, size_t i, size_t n)
{
	for (;;) {
		while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
			i++;
		if (i >= n || s[i] != '(')
			return i;
		int depth = 0;
		while (i < n) {
			char c = s[i++];
			if (c == '\\' && i < n)
				i++;
			else if (c == '(' && ++depth > AUTHRES_COMMENT_DEPTH)
				return SIZE_MAX;
			else if (c == ')' && --depth == 0)
				break;
		}
		if (depth != 0)
			return SIZE_MAX;
	}
}

/* authres_value_start - offset of the value after an A-R field name and
 * its colon; SIZE_MAX when the field is not Authentication-Results */
static size_t authres_value_start(const char *f, size_t len)
{
	static const char name[] = "Authentication-Results";
	size_t nl = sizeof(name) - 1, i = nl;
	if (len < nl || str_ncasecmp_ascii(f, name, nl) != 0)
		return SIZE_MAX;
	while (i < len && (f[i] == ' ' || f[i] == '\t'))
		i++; /* obs-optional: WSP before the colon */
	if (i >= len || f[i] != ':')
		return SIZE_MAX;
	return i + 1;
}

/* authres_id_at - parse the id at f[i]: quoted-string (unescaped) or
 * token into id; also the lenient run (up to WSP ';' '(') into loose.
 * 0 or -1 */
static int authres_id_at(const char *f, size_t i, size_t len, char *id, size_t idlen, char *loose, size_t looselen)
{
	size_t k = 0;
	if (idlen == 0 || looselen == 0)
		return -1;
	id[0] = loose[0] = '\0';
	if (i >= len)
		return -1;
	if (f[i] == '"') {
		for (i++; i < len && f[i] != '"'; i++) {
			if (f[i] == '\\' && i + 1 < len)
				i++;
			if (f[i] == '\0')
				break; /* a C reader stops here: so does the id (found by fuzz_authres) */
			if (f[i] == '\r' || f[i] == '\n')
				continue; /* folding inside the quotes */
			if (k + 1 >= idlen)
				return -1;
			id[k++] = f[i];
		}
		if (i >= len)
			return -1;
		id[k] = '\0';
		snprintf(loose, looselen, "%s", id);
		return k ? 0 : -1;
	}
	size_t m = 0;
	for (size_t j = i; j < len && f[j] != ' ' && f[j] != '\t' && f[j] != '\r' && f[j] != '\n' && f[j] != ';' &&
			   f[j] != '(' && m + 1 < looselen;
	     j++)
		loose[m++] = f[j];
	loose[m] = '\0';
	for (size_t j = i; j < len && authres_is_token_char(f[j]); j++) {
		if (k + 1 >= idlen) {
			id[0] = '\0';
			return -1;
		}
		id[k++] = f[j];
	}
	id[k] = '\0';
	return k ? 0 : -1;
}

/* authres_parse_id - see authres.h */
int authres_parse_id(const char *field, size_t len, char *id, size_t idlen)
{
	char loose[AUTHRES_ID_MAX + 1];
	size_t i = authres_value_start(field, len);
	if (i == SIZE_MAX)
		return -1;
	i = authres_skip_cfws(field, i, len);
	if (i == SIZE_MAX)
		return -1;
	return authres_id_at(field, i, len, id, idlen, loose, sizeof(loose));
}

/* authres_same_id - a equals ours ignoring ASCII case, surrounding white
 * space and one final dot */
static int authres_same_id(const char *a, const char *ours)
{
	size_t an = strlen(a), on = strlen(ours);
	while (an && (*a == ' ' || *a == '\t'))
		a++, an--;
	while (an && (a[an - 1] == ' ' || a[an - 1] == '\t'))
		an--;
	if (an && a[an - 1] == '.')
		an--;
	if (on && ours[on - 1] == '.')
		on--;
	return an > 0 && an == on && str_ncasecmp_ascii(a, ours, an) == 0;
}

/* authres_field_is_ours - see authres.h */
int authres_field_is_ours(const char *field, size_t len, const char *authserv_id)
{
	char id[AUTHRES_ID_MAX + 1], loose[AUTHRES_ID_MAX + 1];
	if (!field || !authserv_id || !authserv_id[0])
		return 0;
	size_t i = authres_value_start(field, len);
	if (i == SIZE_MAX)
		return 0;
	/* fail closed: a field whose authserv-id we cannot read (a comment
	 * too deep or unterminated, an id too long or empty) may name us to
	 * a reader that follows other limits, so it counts as ours */
	i = authres_skip_cfws(field, i, len);
	if (i == SIZE_MAX)
		return 1;
	int rc = authres_id_at(field, i, len, id, sizeof(id), loose, sizeof(loose));
	if (rc < 0 || authres_same_id(id, authserv_id))
		return 1;
	return loose[0] && authres_same_id(loose, authserv_id);
}
