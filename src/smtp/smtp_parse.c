/*
 * smtp_parse - the pure SMTP protocol parser: bytes in, commands out.
 *
 * Exports (see smtp_parse.h for the exact contracts):
 *   smtp_line_next / smtp_line_skip   CRLF-only line framing with limits
 *   smtp_parse_command                one command line into struct smtp_cmd
 *   smtp_parse_path / _domain         RFC 5321 paths, domains, literals
 *   smtp_parse_bdat                   BDAT's chunk-size [LAST]
 *   smtp_param_find                   ESMTP parameter lookup
 *   smtp_utf8_valid                   strict UTF-8 check (RFC 3629)
 *   smtp_data_init / smtp_data_feed   the DATA stream: unstuffing, end marker
 *   *_str                             enum names for logs and replies
 * Trusts: nothing. Every input byte may be hostile; no function reads
 * outside p[0..n), allocates, or keeps global state. Results are slices
 * into the caller's bytes or copies into fixed-size fields.
 * Implements: RFC 5321 2.3.8, 4.1.1, 4.1.2, 4.1.3, 4.5.2, 4.5.3.1;
 * RFC 6531 3.3 (UTF-8 addresses); RFC 1869 / RFC 5321 4.1.2 esmtp-param;
 * RFC 3030 (BDAT argument).
 */
#include "smtp/smtp_parse.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "core/str.h"

/* ---- small character classes (ASCII only, never locale-dependent) ---- */

/* is_alpha - ASCII letter */
static int is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* is_digit - ASCII digit */
static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* is_alnum - RFC 5321 let-dig */
static int is_alnum(unsigned char c)
{
	return is_alpha(c) || is_digit(c);
}

/* is_atext - RFC 5322 atext as used by RFC 5321 Atom */
static int is_atext(unsigned char c)
{
	return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* is_qtext - RFC 5321 qtextSMTP: %d32-33 / %d35-91 / %d93-126 */
static int is_qtext(unsigned char c)
{
	return c >= 32 && c <= 126 && c != '"' && c != '\\';
}

/* set_detail - store the reply text when the caller asked for it */
static void set_detail(const char **detail, const char *text)
{
	if (detail != NULL)
		*detail = text;
}

/*
 * utf8_seq - length of the well-formed UTF-8 sequence at p[0..n), 0 if
 * malformed. Rejects overlongs, surrogates and code points above U+10FFFF
 * (RFC 3629 section 4), because a lax decoder elsewhere could otherwise be
 * tricked into seeing '@', '<' or a control byte that we never checked.
 */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	unsigned lo = 0x80, hi = 0xBF;
	size_t len;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c == 0xE0) {
		len = 3;
		lo = 0xA0;
	} else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
		len = 3;
	else if (c == 0xED) {
		len = 3;
		hi = 0x9F;
	} else if (c == 0xF0) {
		len = 4;
		lo = 0x90;
	} else if (c >= 0xF1 && c <= 0xF3)
		len = 4;
	else if (c == 0xF4) {
		len = 4;
		hi = 0x8F;
	} else
		return 0;
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return len;
}

/* smtp_utf8_valid - 1 if all of p[0..n) is well-formed UTF-8 */
int smtp_utf8_valid(const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(u + i, n - i);
		if (k == 0)
			return 0;
		i += k;
	}
	return 1;
}

/* ---- enum names ---- */

/* smtp_line_status_str - name for logs */
const char *smtp_line_status_str(enum smtp_line_status s)
{
	switch (s) {
	case SMTP_LINE_OK: return "ok";
	case SMTP_LINE_NEED_MORE: return "need_more";
	case SMTP_LINE_BARE_LF: return "bare_lf";
	case SMTP_LINE_BARE_CR: return "bare_cr";
	case SMTP_LINE_TOO_LONG: return "too_long";
	}
	return "?";
}

/* the verb table: name and constant, searched case-insensitively */
static const struct {
	const char *name;
	enum smtp_verb verb;
} verbs[] = {
	{"HELO", SMTP_VERB_HELO}, {"EHLO", SMTP_VERB_EHLO}, {"MAIL", SMTP_VERB_MAIL},
	{"RCPT", SMTP_VERB_RCPT}, {"DATA", SMTP_VERB_DATA}, {"BDAT", SMTP_VERB_BDAT},
	{"RSET", SMTP_VERB_RSET}, {"NOOP", SMTP_VERB_NOOP}, {"QUIT", SMTP_VERB_QUIT},
	{"VRFY", SMTP_VERB_VRFY}, {"EXPN", SMTP_VERB_EXPN}, {"HELP", SMTP_VERB_HELP},
	{"STARTTLS", SMTP_VERB_STARTTLS}, {"AUTH", SMTP_VERB_AUTH},
};

/* smtp_verb_str - the verb as written in SMTP, "UNKNOWN" otherwise */
const char *smtp_verb_str(enum smtp_verb v)
{
	for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
		if (verbs[i].verb == v)
			return verbs[i].name;
	return "UNKNOWN";
}

/* smtp_parse_error_str - name for logs */
const char *smtp_parse_error_str(enum smtp_parse_error e)
{
	switch (e) {
	case SMTP_PARSE_OK: return "ok";
	case SMTP_PARSE_UNKNOWN_VERB: return "unknown_verb";
	case SMTP_PARSE_SYNTAX: return "syntax";
	case SMTP_PARSE_PATH_SYNTAX: return "path_syntax";
	case SMTP_PARSE_LOCAL_TOO_LONG: return "local_too_long";
	case SMTP_PARSE_DOMAIN_TOO_LONG: return "domain_too_long";
	case SMTP_PARSE_PATH_TOO_LONG: return "path_too_long";
	case SMTP_PARSE_PARAM_SYNTAX: return "param_syntax";
	case SMTP_PARSE_TOO_MANY_PARAMS: return "too_many_params";
	case SMTP_PARSE_NUL: return "nul";
	}
	return "?";
}

/* smtp_data_status_str - name for logs */
const char *smtp_data_status_str(enum smtp_data_status s)
{
	switch (s) {
	case SMTP_DATA_MORE: return "more";
	case SMTP_DATA_END: return "end";
	}
	return "?";
}

/* smtp_data_flaw_str - reply text for the most serious flaw in the set */
const char *smtp_data_flaw_str(unsigned flaws)
{
	if (flaws & SMTP_DATA_FLAW_BARE_LF)
		return "bare <LF> in message (RFC 5321 2.3.8)";
	if (flaws & SMTP_DATA_FLAW_BARE_CR)
		return "bare <CR> in message (RFC 5321 2.3.8)";
	if (flaws & SMTP_DATA_FLAW_NUL)
		return "NUL byte in message";
	if (flaws & SMTP_DATA_FLAW_LONG_LINE)
		return "line longer than 1000 octets (RFC 5321 4.5.3.1.6)";
	return "";
}

/* ---- lines ---- */

/* find_crlf - index of the LF of the first CRLF in p[from..n), or n */
static size_t find_crlf(const char *p, size_t from, size_t n)
{
	for (size_t i = from; i < n; i++) {
		const char *lf = memchr(p + i, '\n', n - i);
		if (lf == NULL)
			return n;
		i = (size_t)(lf - p);
		if (i > 0 && p[i - 1] == '\r')
			return i;
	}
	return n;
}

/* smtp_line_skip - discard up to and including the next CRLF */
enum smtp_line_status smtp_line_skip(const char *p, size_t n, size_t *consumed)
{
	size_t lf = find_crlf(p, 0, n);
	if (lf < n) {
		*consumed = lf + 1;
		return SMTP_LINE_OK;
	}
	/* keep a trailing CR: with the next read's LF it ends the line */
	*consumed = (n > 0 && p[n - 1] == '\r') ? n - 1 : n;
	return SMTP_LINE_NEED_MORE;
}

/*
 * smtp_line_next - frame one command line. Only CRLF ends a line: a server
 * that also took a lone LF (or CR) as a line end would see commands the
 * client's other hops did not, which is how SMTP smuggling works
 * (CVE-2023-51764 and kin). So a bare LF or CR is reported, never accepted.
 */
enum smtp_line_status smtp_line_next(const char *p, size_t n, size_t *line_len, size_t *consumed)
{
	size_t scan = n < SMTP_LINE_MAX ? n : SMTP_LINE_MAX;
	const char *lfp = memchr(p, '\n', scan);

	*line_len = 0;
	*consumed = 0;
	if (lfp != NULL) {
		size_t lf = (size_t)(lfp - p);
		int crlf = lf > 0 && p[lf - 1] == '\r';
		size_t len = crlf ? lf - 1 : lf;
		*line_len = len;
		*consumed = lf + 1;
		if (!crlf)
			return SMTP_LINE_BARE_LF;
		if (memchr(p, '\r', len) != NULL)
			return SMTP_LINE_BARE_CR;
		return SMTP_LINE_OK;
	}
	/* no LF in the first SMTP_LINE_MAX octets, or 999 octets whose last
	 * is not a CR: over the limit whatever comes next */
	if (n >= SMTP_LINE_MAX || (n >= SMTP_LINE_MAX - 1 && p[SMTP_LINE_MAX - 2] != '\r')) {
		size_t lf = find_crlf(p, SMTP_LINE_MAX - 2, n);
		if (lf < n) {
			*line_len = lf - 1;
			*consumed = lf + 1;
		} else {
			*consumed = p[n - 1] == '\r' ? n - 1 : n;
		}
		return SMTP_LINE_TOO_LONG;
	}
	return SMTP_LINE_NEED_MORE;
}

/* ---- domains and paths ---- */

/* parse_literal - "[1.2.3.4]" or "[IPv6:...]" at d[0..n), n >= 1, d[0]=='[' */
static enum smtp_parse_error parse_literal(const char *d, size_t n, char *out, const char **detail)
{
	char tmp[64];
	unsigned char bin[16];

	if (n < 3 || d[n - 1] != ']') {
		set_detail(detail, "address literal must end with ]");
		return SMTP_PARSE_PATH_SYNTAX;
	}
	const char *in = d + 1;
	size_t len = n - 2;
	if (str_has_prefix_ci(in, len, "IPv6:")) {
		in += 5;
		len -= 5;
		if (len == 0 || len >= sizeof tmp)
			goto bad6;
		memcpy(tmp, in, len);
		tmp[len] = '\0';
		if (strlen(tmp) != len || inet_pton(AF_INET6, tmp, bin) != 1)
			goto bad6;
		str_lower_ascii(tmp);
		snprintf(out, SMTP_DOMAIN_MAX + 1, "[IPv6:%s]", tmp);
		return SMTP_PARSE_OK;
	}
	if (memchr(in, ':', len) != NULL) {
		set_detail(detail, "unsupported address literal");
		return SMTP_PARSE_PATH_SYNTAX;
	}
	if (len == 0 || len > 15)
		goto bad4;
	memcpy(tmp, in, len);
	tmp[len] = '\0';
	if (strlen(tmp) != len || inet_pton(AF_INET, tmp, bin) != 1)
		goto bad4;
	snprintf(out, SMTP_DOMAIN_MAX + 1, "[%s]", tmp);
	return SMTP_PARSE_OK;
bad6:
	set_detail(detail, "invalid IPv6 address literal");
	return SMTP_PARSE_PATH_SYNTAX;
bad4:
	set_detail(detail, "invalid IPv4 address literal");
	return SMTP_PARSE_PATH_SYNTAX;
}

/*
 * smtp_parse_domain - Domain (sub-domain *("." sub-domain)) or literal.
 * A sub-domain is let-dig [ldh-str], at most 63 octets; RFC 6531 adds
 * U-labels, so well-formed non-ASCII UTF-8 counts as a letter.
 */
enum smtp_parse_error smtp_parse_domain(const char *p, size_t n, char out[SMTP_DOMAIN_MAX + 1],
					int *literal, int *utf8, const char **detail)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t label = 0;
	int any_utf8 = 0;
	unsigned char last = 0;

	out[0] = '\0';
	if (literal != NULL)
		*literal = 0;
	if (utf8 != NULL)
		*utf8 = 0;
	if (n == 0) {
		set_detail(detail, "domain name expected after @");
		return SMTP_PARSE_PATH_SYNTAX;
	}
	if (n > SMTP_DOMAIN_MAX) {
		set_detail(detail, "domain longer than 255 octets");
		return SMTP_PARSE_DOMAIN_TOO_LONG;
	}
	if (p[0] == '[') {
		enum smtp_parse_error e = parse_literal(p, n, out, detail);
		if (e == SMTP_PARSE_OK && literal != NULL)
			*literal = 1;
		return e;
	}
	for (size_t i = 0; i < n;) {
		unsigned char c = u[i];
		if (c == '.') {
			if (label == 0) {
				set_detail(detail, i == 0 ? "leading dot in domain" : "empty label (..) in domain");
				return SMTP_PARSE_PATH_SYNTAX;
			}
			if (last == '-')
				goto hyphen;
			label = 0;
			last = c;
			i++;
			continue;
		}
		if (c == '-') {
			if (label == 0)
				goto hyphen;
			label++;
			i++;
		} else if (is_alnum(c)) {
			label++;
			i++;
		} else if (c >= 0x80) {
			size_t k = utf8_seq(u + i, n - i);
			if (k == 0) {
				set_detail(detail, "invalid UTF-8 in domain");
				return SMTP_PARSE_PATH_SYNTAX;
			}
			any_utf8 = 1;
			label += k;
			i += k;
		} else {
			set_detail(detail, "invalid character in domain");
			return SMTP_PARSE_PATH_SYNTAX;
		}
		if (label > 63) {
			set_detail(detail, "domain label longer than 63 octets");
			return SMTP_PARSE_PATH_SYNTAX;
		}
		last = c;
	}
	if (label == 0) {
		set_detail(detail, "trailing dot in domain");
		return SMTP_PARSE_PATH_SYNTAX;
	}
	if (last == '-')
		goto hyphen;
	memcpy(out, p, n);
	out[n] = '\0';
	str_lower_ascii(out);
	if (utf8 != NULL)
		*utf8 = any_utf8;
	return SMTP_PARSE_OK;
hyphen:
	set_detail(detail, "domain label may not start or end with a hyphen");
	return SMTP_PARSE_PATH_SYNTAX;
}

/* is_dot_string - p[0..n) is Atom *("." Atom), atoms of atext or UTF-8 */
static int is_dot_string(const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t atom = 0;
	for (size_t i = 0; i < n;) {
		if (u[i] == '.') {
			if (atom == 0)
				return 0;
			atom = 0;
			i++;
		} else if (is_atext(u[i])) {
			atom++;
			i++;
		} else if (u[i] >= 0x80) {
			size_t k = utf8_seq(u + i, n - i);
			if (k == 0)
				return 0;
			atom += k;
			i += k;
		} else
			return 0;
	}
	return atom > 0;
}

/* parse_route - skip an A-d-l "@a,@b:" at s[0..n); *used gets its length */
static enum smtp_parse_error parse_route(const char *s, size_t n, size_t *used, const char **detail)
{
	char tmp[SMTP_DOMAIN_MAX + 1];
	size_t i = 0;

	for (;;) {
		if (i >= n || s[i] != '@')
			goto bad;
		size_t j = ++i;
		while (j < n && s[j] != ',' && s[j] != ':')
			j++;
		if (j >= n || smtp_parse_domain(s + i, j - i, tmp, NULL, NULL, NULL) != SMTP_PARSE_OK)
			goto bad;
		i = j + 1;
		if (s[j] == ':')
			break;
	}
	*used = i;
	return SMTP_PARSE_OK;
bad:
	set_detail(detail, "bad source route");
	return SMTP_PARSE_PATH_SYNTAX;
}

/*
 * parse_quoted - Quoted-string at s[0..n), s[0]=='"'. The unquoted content
 * goes to unq (size > SMTP_LOCAL_MAX); *used is the written length.
 */
static enum smtp_parse_error parse_quoted(const char *s, size_t n, char *unq, size_t *unq_len, size_t *used,
					  int *utf8, const char **detail)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 1, o = 0;

	for (;;) {
		if (i >= n) {
			set_detail(detail, "unbalanced quotes in local part");
			return SMTP_PARSE_PATH_SYNTAX;
		}
		if (i + 1 > SMTP_LOCAL_MAX) {
			set_detail(detail, "local part longer than 64 octets");
			return SMTP_PARSE_LOCAL_TOO_LONG;
		}
		unsigned char c = u[i];
		if (c == '"')
			break;
		if (c == '\\') {
			if (i + 1 >= n || u[i + 1] < 32 || u[i + 1] > 126) {
				set_detail(detail, "bad quoted-pair in local part");
				return SMTP_PARSE_PATH_SYNTAX;
			}
			unq[o++] = (char)u[i + 1];
			i += 2;
		} else if (is_qtext(c)) {
			unq[o++] = (char)c;
			i++;
		} else if (c >= 0x80) {
			size_t k = utf8_seq(u + i, n - i);
			if (k == 0) {
				set_detail(detail, "invalid UTF-8 in local part");
				return SMTP_PARSE_PATH_SYNTAX;
			}
			memcpy(unq + o, s + i, k);
			o += k;
			i += k;
			*utf8 = 1;
		} else {
			set_detail(detail, "invalid character in quoted local part");
			return SMTP_PARSE_PATH_SYNTAX;
		}
	}
	*used = i + 1;
	*unq_len = o;
	return SMTP_PARSE_OK;
}

/* parse_dot_local - Dot-string local part at s[0..n) ending at '@' or n */
static enum smtp_parse_error parse_dot_local(const char *s, size_t n, size_t *used, int *utf8, const char **detail)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, atom = 0;

	while (i < n && s[i] != '@') {
		unsigned char c = u[i];
		if (c == '.') {
			if (atom == 0) {
				set_detail(detail, i == 0 ? "local part may not start with a dot"
							  : "empty atom (..) in local part");
				return SMTP_PARSE_PATH_SYNTAX;
			}
			atom = 0;
			i++;
		} else if (is_atext(c)) {
			atom++;
			i++;
		} else if (c >= 0x80) {
			size_t k = utf8_seq(u + i, n - i);
			if (k == 0) {
				set_detail(detail, "invalid UTF-8 in local part");
				return SMTP_PARSE_PATH_SYNTAX;
			}
			atom += k;
			i += k;
			*utf8 = 1;
		} else if (c == '"') {
			set_detail(detail, "unbalanced quotes in local part");
			return SMTP_PARSE_PATH_SYNTAX;
		} else {
			set_detail(detail, "invalid character in local part");
			return SMTP_PARSE_PATH_SYNTAX;
		}
		if (i > SMTP_LOCAL_MAX) {
			set_detail(detail, "local part longer than 64 octets");
			return SMTP_PARSE_LOCAL_TOO_LONG;
		}
	}
	if (i == 0) {
		set_detail(detail, "local part expected");
		return SMTP_PARSE_PATH_SYNTAX;
	}
	if (atom == 0) {
		set_detail(detail, "local part may not end with a dot");
		return SMTP_PARSE_PATH_SYNTAX;
	}
	*used = i;
	return SMTP_PARSE_OK;
}

/*
 * smtp_parse_path - Reverse-path / Forward-path. The address is taken
 * literally: '%', '!' and a quoted '@' in the local part are just local-part
 * characters and a source route is dropped (RFC 5321 4.1.1.3, C.), so
 * <u%remote@local> or <"u@remote"@local> can never be turned into relaying.
 */
static enum smtp_parse_error parse_path(const char *p, size_t n, int allow_null, struct smtp_path *out,
				       const char **detail)
{
	char unq[SMTP_LOCAL_MAX + 8];
	size_t unq_len = 0, used = 0, i = 0;
	enum smtp_parse_error e;

	if (n < 2 || p[0] != '<' || p[n - 1] != '>') {
		set_detail(detail, "address must be enclosed in <>");
		return SMTP_PARSE_PATH_SYNTAX;
	}
	const char *s = p + 1;
	size_t len = n - 2;
	if (len == 0) {
		if (!allow_null) {
			set_detail(detail, "null address <> not allowed here");
			return SMTP_PARSE_PATH_SYNTAX;
		}
		out->is_null = 1;
		return SMTP_PARSE_OK;
	}
	if (s[0] == '@') {
		e = parse_route(s, len, &i, detail);
		if (e != SMTP_PARSE_OK)
			return e;
	}
	if (i < len && s[i] == '"') {
		e = parse_quoted(s + i, len - i, unq, &unq_len, &used, &out->utf8, detail);
		if (e != SMTP_PARSE_OK)
			return e;
		if (is_dot_string(unq, unq_len)) {
			memcpy(out->local, unq, unq_len);
			out->local[unq_len] = '\0';
		} else {
			/* minimal escaping: only '"' and '\' need a backslash */
			size_t o = 0;
			out->local[o++] = '"';
			for (size_t k = 0; k < unq_len; k++) {
				if (unq[k] == '"' || unq[k] == '\\')
					out->local[o++] = '\\';
				out->local[o++] = unq[k];
			}
			out->local[o++] = '"';
			out->local[o] = '\0';
			out->quoted = 1;
		}
	} else {
		e = parse_dot_local(s + i, len - i, &used, &out->utf8, detail);
		if (e != SMTP_PARSE_OK)
			return e;
		memcpy(out->local, s + i, used);
		out->local[used] = '\0';
	}
	i += used;
	if (i >= len) {
		/* RFC 5321 4.1.1.3: "<Postmaster>" without a domain, for RCPT */
		if (used == 10 && i == 10 && str_ncasecmp_ascii(s, "postmaster", 10) == 0) {
			out->is_postmaster = 1;
			strcpy(out->local, "postmaster");
			strcpy(out->addr, "postmaster");
			return SMTP_PARSE_OK;
		}
		set_detail(detail, "address must be local@domain");
		return SMTP_PARSE_PATH_SYNTAX;
	}
	if (s[i] != '@') {
		set_detail(detail, "@ expected after local part");
		return SMTP_PARSE_PATH_SYNTAX;
	}
	i++;
	int dom_utf8 = 0;
	e = smtp_parse_domain(s + i, len - i, out->domain, &out->domain_literal, &dom_utf8, detail);
	if (e != SMTP_PARSE_OK)
		return e;
	if (dom_utf8)
		out->utf8 = 1;
	if (n > SMTP_PATH_MAX) {
		set_detail(detail, "path longer than 256 octets");
		return SMTP_PARSE_PATH_TOO_LONG;
	}
	/* canonical forms are never longer than what was written, which fits */
	size_t ll = strlen(out->local), dl = strlen(out->domain);
	if (ll + 1 + dl >= sizeof out->addr) {
		set_detail(detail, "path longer than 256 octets");
		return SMTP_PARSE_PATH_TOO_LONG;
	}
	memcpy(out->addr, out->local, ll);
	out->addr[ll] = '@';
	memcpy(out->addr + ll + 1, out->domain, dl + 1);
	return SMTP_PARSE_OK;
}

/* smtp_parse_path - see parse_path; on error *out is all zero */
enum smtp_parse_error smtp_parse_path(const char *p, size_t n, int allow_null, struct smtp_path *out,
				      const char **detail)
{
	memset(out, 0, sizeof *out);
	set_detail(detail, "");
	enum smtp_parse_error e = parse_path(p, n, allow_null, out, detail);
	if (e != SMTP_PARSE_OK)
		memset(out, 0, sizeof *out);
	return e;
}

/* ---- commands ---- */

/* parse_param - one esmtp-param "keyword[=value]" at t[0..n), n > 0 */
static enum smtp_parse_error parse_param(const char *t, size_t n, struct smtp_param *out, const char **detail)
{
	const unsigned char *u = (const unsigned char *)t;
	size_t k = 0;

	if (!is_alnum(u[0])) {
		set_detail(detail, "invalid parameter keyword");
		return SMTP_PARSE_PARAM_SYNTAX;
	}
	while (k < n && (is_alnum(u[k]) || u[k] == '-'))
		k++;
	out->key.p = t;
	out->key.len = k;
	out->value.p = t + k; /* never NULL: an empty slice right after the key */
	if (k == n)
		return SMTP_PARSE_OK;
	if (u[k] != '=') {
		set_detail(detail, "invalid parameter keyword");
		return SMTP_PARSE_PARAM_SYNTAX;
	}
	out->has_value = 1;
	out->value.p = t + k + 1;
	out->value.len = n - k - 1;
	if (out->value.len == 0) {
		set_detail(detail, "empty parameter value");
		return SMTP_PARSE_PARAM_SYNTAX;
	}
	/* esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 (RFC 6531 3.3) */
	for (size_t i = k + 1; i < n;) {
		if (u[i] >= 33 && u[i] <= 126 && u[i] != '=') {
			i++;
			continue;
		}
		size_t q = u[i] >= 0x80 ? utf8_seq(u + i, n - i) : 0;
		if (q == 0) {
			set_detail(detail, "invalid character in parameter value");
			return SMTP_PARSE_PARAM_SYNTAX;
		}
		i += q;
	}
	return SMTP_PARSE_OK;
}

/* path_end - index of the '>' closing the path that starts at a[0]=='<',
 * skipping quoted strings; n if none (*in_quote says why) */
static size_t path_end(const char *a, size_t n, int *in_quote)
{
	int q = 0;
	for (size_t i = 1; i < n; i++) {
		if (q && a[i] == '\\')
			i++;
		else if (a[i] == '"')
			q = !q;
		else if (!q && a[i] == '>') {
			*in_quote = 0;
			return i;
		}
	}
	*in_quote = q;
	return n;
}

/* parse_mail_rcpt - "FROM:<path> params" / "TO:<path> params" */
static enum smtp_parse_error parse_mail_rcpt(struct smtp_cmd *cmd, const char *kw, int allow_null,
					     const char **detail)
{
	const char *a = cmd->arg.p;
	size_t n = cmd->arg.len, i = strlen(kw);
	int in_quote;

	if (!str_has_prefix_ci(a, n, kw)) {
		set_detail(detail, allow_null ? "expected MAIL FROM:<address>" : "expected RCPT TO:<address>");
		return SMTP_PARSE_SYNTAX;
	}
	if (i < n && a[i] == ' ') /* "MAIL FROM: <a@b>" is common, tolerate it */
		i++;
	if (i >= n || a[i] != '<') {
		set_detail(detail, "address must be enclosed in <>");
		return SMTP_PARSE_PATH_SYNTAX;
	}
	size_t end = i + path_end(a + i, n - i, &in_quote);
	if (end >= n) {
		set_detail(detail, in_quote ? "unbalanced quotes in local part" : "address must be enclosed in <>");
		return SMTP_PARSE_PATH_SYNTAX;
	}
	enum smtp_parse_error e = smtp_parse_path(a + i, end - i + 1, allow_null, &cmd->path, detail);
	if (e != SMTP_PARSE_OK)
		return e;
	i = end + 1;
	if (i < n && a[i] != ' ') {
		set_detail(detail, "space expected after address");
		return SMTP_PARSE_SYNTAX;
	}
	for (;;) {
		while (i < n && a[i] == ' ')
			i++;
		if (i >= n)
			return SMTP_PARSE_OK;
		size_t j = i;
		while (j < n && a[j] != ' ')
			j++;
		if (cmd->nparams >= SMTP_PARAMS_MAX) {
			set_detail(detail, "too many parameters");
			return SMTP_PARSE_TOO_MANY_PARAMS;
		}
		e = parse_param(a + i, j - i, &cmd->params[cmd->nparams], detail);
		if (e != SMTP_PARSE_OK)
			return e;
		cmd->nparams++;
		i = j;
	}
}

/* smtp_parse_bdat - "chunk-size [SP LAST]" */
int smtp_parse_bdat(struct slice arg, uint64_t *size, int *last)
{
	size_t i = 0;
	while (i < arg.len && is_digit((unsigned char)arg.p[i]))
		i++;
	if (str_parse_u64(arg.p, i, size) != 0)
		return -1;
	*last = 0;
	if (i == arg.len)
		return 0;
	if (arg.p[i] != ' ')
		return -1;
	struct slice rest = {arg.p + i + 1, arg.len - i - 1};
	if (!str_slice_eq_ci(rest, "LAST"))
		return -1;
	*last = 1;
	return 0;
}

/*
 * smtp_parse_command - verb (case-insensitive) SP argument. A NUL is
 * refused outright: C code downstream would silently truncate at it.
 */
enum smtp_parse_error smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd,
					 const char **detail)
{
	size_t v = 0;

	memset(cmd, 0, sizeof *cmd);
	set_detail(detail, "");
	if (memchr(line, '\0', len) != NULL) {
		set_detail(detail, "NUL byte in command");
		return SMTP_PARSE_NUL;
	}
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	while (v < len && line[v] != ' ')
		v++;
	for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
		if (strlen(verbs[i].name) == v && str_ncasecmp_ascii(line, verbs[i].name, v) == 0)
			cmd->verb = verbs[i].verb;
	if (cmd->verb == SMTP_VERB_UNKNOWN) {
		set_detail(detail, len == 0 ? "empty command" : "command unrecognized");
		return SMTP_PARSE_UNKNOWN_VERB;
	}
	while (v < len && line[v] == ' ')
		v++;
	cmd->arg.p = line + v;
	cmd->arg.len = len - v;

	switch (cmd->verb) {
	case SMTP_VERB_MAIL:
		return parse_mail_rcpt(cmd, "FROM:", 1, detail);
	case SMTP_VERB_RCPT:
		return parse_mail_rcpt(cmd, "TO:", 0, detail);
	case SMTP_VERB_HELO:
	case SMTP_VERB_EHLO:
		if (cmd->arg.len == 0) {
			set_detail(detail, "hostname expected");
			return SMTP_PARSE_SYNTAX;
		}
		return SMTP_PARSE_OK;
	case SMTP_VERB_DATA:
	case SMTP_VERB_RSET:
	case SMTP_VERB_QUIT:
	case SMTP_VERB_STARTTLS:
		if (cmd->arg.len != 0) {
			set_detail(detail, "no argument allowed");
			return SMTP_PARSE_SYNTAX;
		}
		return SMTP_PARSE_OK;
	case SMTP_VERB_BDAT: {
		uint64_t size;
		int last;
		if (smtp_parse_bdat(cmd->arg, &size, &last) != 0) {
			set_detail(detail, "expected BDAT chunk-size [LAST]");
			return SMTP_PARSE_SYNTAX;
		}
		return SMTP_PARSE_OK;
	}
	case SMTP_VERB_VRFY:
	case SMTP_VERB_EXPN:
	case SMTP_VERB_AUTH:
		if (cmd->arg.len == 0) {
			set_detail(detail, "argument expected");
			return SMTP_PARSE_SYNTAX;
		}
		return SMTP_PARSE_OK;
	case SMTP_VERB_NOOP:
	case SMTP_VERB_HELP:
	case SMTP_VERB_UNKNOWN:
		break;
	}
	return SMTP_PARSE_OK;
}

/* smtp_param_find - first parameter whose keyword matches, case-insensitively */
const struct smtp_param *smtp_param_find(const struct smtp_cmd *cmd, const char *key)
{
	for (size_t i = 0; i < cmd->nparams && i < SMTP_PARAMS_MAX; i++)
		if (str_slice_eq_ci(cmd->params[i].key, key))
			return &cmd->params[i];
	return NULL;
}

/* ---- the DATA stream ---- */

enum {
	DS_BOL,        /* at the beginning of a line */
	DS_BOL_DOT,    /* a '.' at the beginning of a line, dropped */
	DS_BOL_DOT_CR, /* ".\r" at the beginning of a line, CR held back */
	DS_MID,        /* inside a line, last octet not CR */
	DS_MID_CR,     /* inside a line, last octet CR */
	DS_END,        /* <CRLF>.<CRLF> seen */
};

#define HDR_DONE ((size_t)-1) /* hdr_match: this line is decided */

/* smtp_data_init - a fresh stream starts at the beginning of a line */
void smtp_data_init(struct smtp_data *d)
{
	memset(d, 0, sizeof *d);
	d->state = DS_BOL;
	d->in_headers = 1;
}

/* emit - hand p[0..n) to the sink, skipping empty slices */
static void emit(struct smtp_data *d, const char *p, size_t n, smtp_data_sink sink, void *arg)
{
	if (n == 0)
		return;
	d->out_bytes += n;
	if (sink != NULL)
		sink(arg, p, n);
}

/* data_header_octet - track "Received:" at the start of a header line;
 * c is a content octet (after unstuffing) of the current line */
static void data_header_octet(struct smtp_data *d, unsigned char c)
{
	static const char rcvd[] = "received:";

	if (!d->in_headers || d->hdr_match == HDR_DONE)
		return;
	unsigned char l = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
	if (l != (unsigned char)rcvd[d->hdr_match]) {
		d->hdr_match = HDR_DONE;
		return;
	}
	if (++d->hdr_match == sizeof rcvd - 1) {
		d->received_count++;
		d->hdr_match = HDR_DONE;
	}
}

/* data_line_end - a CRLF just completed a line of line_len octets */
static void data_line_end(struct smtp_data *d)
{
	if (d->line_len == 2)
		d->in_headers = 0; /* the empty line ends the header section */
	d->line_len = 0;
	d->hdr_match = 0;
	d->line_start_checked = 0;
}

/*
 * smtp_data_feed - the DATA transparency automaton (RFC 5321 4.5.2). The
 * end is exactly CRLF "." CRLF where the first CRLF ends the previous line:
 * "\n.\n", "\r\n.\n" and "\n.\r\n" are content (and flaws), because
 * ending a message on any of them while another hop does not is SMTP
 * smuggling. Flaws are only recorded, never acted on here, so the stream is
 * always read to the real end and the session stays in step with the
 * client. Content reaches the sink as slices of p between dropped octets.
 */
enum smtp_data_status smtp_data_feed(struct smtp_data *d, const char *p, size_t n, size_t *consumed,
				     smtp_data_sink sink, void *arg)
{
	size_t start = 0; /* first octet of the pending slice */
	int cr_here = 0;  /* the held-back CR of DS_BOL_DOT_CR is p[start] */

	*consumed = 0;
	if (d->state == DS_END)
		return SMTP_DATA_END;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (++d->line_len > SMTP_LINE_MAX)
			d->flaws |= SMTP_DATA_FLAW_LONG_LINE;
		if (c == 0)
			d->flaws |= SMTP_DATA_FLAW_NUL;
		switch (d->state) {
		case DS_BOL:
			if (c == '.') {
				emit(d, p + start, i - start, sink, arg);
				start = i + 1;
				d->state = DS_BOL_DOT;
				continue;
			}
			break;
		case DS_BOL_DOT:
			if (c == '\r') {
				emit(d, p + start, i - start, sink, arg);
				start = i;
				cr_here = 1;
				d->state = DS_BOL_DOT_CR;
				continue;
			}
			break;
		case DS_BOL_DOT_CR:
			if (c == '\n') {
				d->state = DS_END;
				*consumed = i + 1;
				return SMTP_DATA_END;
			}
			/* ".\r" then not LF: the dot was stuffing, the CR is bare */
			if (!cr_here)
				emit(d, "\r", 1, sink, arg);
			d->flaws |= SMTP_DATA_FLAW_BARE_CR;
			data_header_octet(d, '\r');
			d->state = DS_MID;
			break;
		case DS_MID:
			break;
		case DS_MID_CR:
			if (c == '\n') {
				d->state = DS_BOL;
				data_line_end(d);
				continue;
			}
			d->flaws |= SMTP_DATA_FLAW_BARE_CR;
			data_header_octet(d, '\r');
			d->state = DS_MID;
			break;
		}
		/* an ordinary content octet in DS_MID (or starting a line) */
		if (c == '\r') {
			d->state = DS_MID_CR;
			continue;
		}
		if (c == '\n')
			d->flaws |= SMTP_DATA_FLAW_BARE_LF;
		data_header_octet(d, c);
		d->state = DS_MID;
	}
	if (d->state == DS_BOL_DOT_CR && cr_here)
		emit(d, p + start, n - 1 - start, sink, arg);
	else
		emit(d, p + start, n - start, sink, arg);
	*consumed = n;
	return SMTP_DATA_MORE;
}
