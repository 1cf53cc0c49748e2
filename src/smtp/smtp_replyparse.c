/*
 * smtp_replyparse - pure parser of SMTP server replies. See smtp_replyparse.h
 * for the rules and the exports.
 *
 * The parser is a byte-at-a-time automaton, so a reply split at any point
 * across calls parses exactly as the whole; nothing of the input is kept
 * but the stored text of the reply being read, in a fixed-size array.
 * Trusts: nothing.
 * Implements: RFC 5321 4.2, RFC 3463, RFC 1869 / 5321 4.1.1.1 EHLO keywords.
 */
#include "smtp/smtp_replyparse.h"

#include <string.h>

#include "core/str.h"

enum {
	RP_CODE0,  /* at the start of a line */
	RP_CODE1,
	RP_CODE2,
	RP_SEP,    /* after the three digits */
	RP_TEXT,
	RP_ERROR,
};

/* smtp_replyparse_status_str - name for logs */
const char *smtp_replyparse_status_str(enum smtp_replyparse_status s)
{
	switch (s) {
	case SMTP_REPLYPARSE_NEED_MORE: return "need_more";
	case SMTP_REPLYPARSE_REPLY: return "reply";
	case SMTP_REPLYPARSE_ERROR: return "error";
	}
	return "?";
}

/* smtp_replyparse_error_str - name for logs and diagnostics */
const char *smtp_replyparse_error_str(enum smtp_replyparse_error e)
{
	switch (e) {
	case SMTP_REPLYPARSE_E_NONE: return "none";
	case SMTP_REPLYPARSE_E_CODE: return "bad reply code";
	case SMTP_REPLYPARSE_E_SEPARATOR: return "bad character after reply code";
	case SMTP_REPLYPARSE_E_CODE_MISMATCH: return "reply lines with different codes";
	case SMTP_REPLYPARSE_E_LINE_TOO_LONG: return "reply line too long";
	case SMTP_REPLYPARSE_E_TOO_MANY_LINES: return "too many reply lines";
	}
	return "?";
}

/* smtp_cap_str - EHLO keyword of one capability bit */
const char *smtp_cap_str(enum smtp_cap c)
{
	switch (c) {
	case SMTP_CAP_PIPELINING: return "PIPELINING";
	case SMTP_CAP_SIZE: return "SIZE";
	case SMTP_CAP_8BITMIME: return "8BITMIME";
	case SMTP_CAP_SMTPUTF8: return "SMTPUTF8";
	case SMTP_CAP_CHUNKING: return "CHUNKING";
	case SMTP_CAP_BINARYMIME: return "BINARYMIME";
	case SMTP_CAP_DSN: return "DSN";
	case SMTP_CAP_STARTTLS: return "STARTTLS";
	case SMTP_CAP_AUTH: return "AUTH";
	case SMTP_CAP_ENHANCEDSTATUSCODES: return "ENHANCEDSTATUSCODES";
	}
	return "?";
}

/* reply_reset - forget the reply being read, keep the error state */
static void reply_reset(struct smtp_replyparse *rp)
{
	rp->cur.code = 0;
	rp->cur.enh[0] = '\0';
	rp->cur.nlines = 0;
	rp->cur.nstored = 0;
	rp->cur.truncated = 0;
	rp->cur.text[0] = '\0';
	rp->text_len = 0;
	rp->line_len = 0;
	rp->line_start = 0;
	rp->line_dropped = 0;
	rp->pending_cr = 0;
	rp->sep = 0;
	rp->state = RP_CODE0;
}

/* smtp_replyparse_init - a fresh parser */
void smtp_replyparse_init(struct smtp_replyparse *rp)
{
	memset(rp->code, 0, sizeof(rp->code));
	rp->error = SMTP_REPLYPARSE_E_NONE;
	reply_reset(rp);
}

/* smtp_replyparse_midline - bytes of an unfinished reply are held */
int smtp_replyparse_midline(const struct smtp_replyparse *rp)
{
	return rp->state != RP_CODE0 || rp->cur.nlines > 0;
}

/* fail - enter the sticky error state */
static enum smtp_replyparse_status fail(struct smtp_replyparse *rp, enum smtp_replyparse_error e)
{
	rp->error = e;
	rp->state = RP_ERROR;
	return SMTP_REPLYPARSE_ERROR;
}

/* text_add - store one text byte of the current line (whole lines only) */
static void text_add(struct smtp_replyparse *rp, char c)
{
	if (rp->line_dropped)
		return;
	/* keep room for this line's NUL: lines are stored whole or not at all,
	 * so a "SIZE 10000000" is never cut into a smaller "SIZE 10" */
	if (rp->text_len + 2 > SMTP_REP_TEXT_MAX) {
		rp->line_dropped = 1;
		rp->text_len = rp->line_start;
		return;
	}
	rp->cur.text[rp->text_len++] = c == '\0' ? '?' : c;
}

/* enh_len - length of an RFC 3463 code "c.sss.ddd" at s whose class is
 * want ('2', '4' or '5'), followed by a space or the end; 0 if none */
static size_t enh_len(const char *s, char want)
{
	if (s[0] != want || s[1] != '.')
		return 0;
	size_t i = 2, nd = 0;
	while (s[i] >= '0' && s[i] <= '9' && nd < 3)
		i++, nd++;
	if (nd == 0 || s[i] != '.')
		return 0;
	i++;
	nd = 0;
	while (s[i] >= '0' && s[i] <= '9' && nd < 3)
		i++, nd++;
	if (nd == 0 || (s[i] != ' ' && s[i] != '\0'))
		return 0;
	return i;
}

/* line_end - the current line is complete; 1 when it ended the reply */
static int line_end(struct smtp_replyparse *rp, enum smtp_replyparse_status *st)
{
	int code = (rp->code[0] - '0') * 100 + (rp->code[1] - '0') * 10 + (rp->code[2] - '0');
	struct smtp_rep *r = &rp->cur;

	if (r->nlines == 0) {
		r->code = code;
	} else if (r->code != code) {
		*st = fail(rp, SMTP_REPLYPARSE_E_CODE_MISMATCH);
		return 1;
	}
	if (!rp->line_dropped) {
		r->text[rp->text_len++] = '\0';
		r->line_off[r->nstored++] = (uint16_t)rp->line_start;
	} else {
		r->truncated = 1;
	}
	r->nlines++;
	rp->pending_cr = 0;
	rp->line_len = 0;
	if (rp->sep == '-') {
		if (r->nlines >= SMTP_REP_LINES_MAX) {
			*st = fail(rp, SMTP_REPLYPARSE_E_TOO_MANY_LINES);
			return 1;
		}
		rp->state = RP_CODE0;
		rp->line_start = rp->text_len;
		/* once a line is dropped the rest go too: the stored ones are the first */
		rp->line_dropped = r->truncated;
		return 0;
	}
	if (r->nstored > 0) {
		size_t k = enh_len(smtp_rep_line(r, 0), rp->code[0]);
		if (k > 0 && k < sizeof(r->enh) && rp->code[0] != '3') {
			memcpy(r->enh, smtp_rep_line(r, 0), k);
			r->enh[k] = '\0';
		}
	}
	*st = SMTP_REPLYPARSE_REPLY;
	return 1;
}

/* smtp_replyparse_feed - consume bytes until one reply is complete */
enum smtp_replyparse_status smtp_replyparse_feed(struct smtp_replyparse *rp, const char *p, size_t n,
						 size_t *consumed, struct smtp_rep *out)
{
	enum smtp_replyparse_status st = SMTP_REPLYPARSE_NEED_MORE;
	size_t i = 0;

	*consumed = 0;
	if (rp->state == RP_ERROR)
		return SMTP_REPLYPARSE_ERROR;
	for (; i < n; i++) {
		char c = p[i];
		int eol = 0;

		if (c != '\n' && c != '\r' && ++rp->line_len > SMTP_REP_LINE_MAX) {
			*consumed = i;
			return fail(rp, SMTP_REPLYPARSE_E_LINE_TOO_LONG);
		}
		switch (rp->state) {
		case RP_CODE0:
		case RP_CODE1:
		case RP_CODE2: {
			int k = rp->state - RP_CODE0;
			char lo = '0', hi = k == 0 ? '5' : k == 1 ? '5' : '9';
			if (k == 0)
				lo = '2';
			if (c < lo || c > hi) {
				*consumed = i;
				return fail(rp, SMTP_REPLYPARSE_E_CODE);
			}
			rp->code[k] = c;
			rp->state++;
			break;
		}
		case RP_SEP:
			if (c == ' ' || c == '-') {
				rp->sep = c;
				rp->state = RP_TEXT;
			} else if (c == '\r') {
				rp->sep = 0;
				rp->pending_cr = 1;
				rp->state = RP_TEXT;
			} else if (c == '\n') {
				rp->sep = 0;
				eol = 1;
			} else {
				*consumed = i;
				return fail(rp, SMTP_REPLYPARSE_E_SEPARATOR);
			}
			break;
		case RP_TEXT:
			if (c == '\n') {
				eol = 1;
			} else if (c == '\r') {
				if (rp->pending_cr) {
					if (++rp->line_len > SMTP_REP_LINE_MAX) {
						*consumed = i;
						return fail(rp, SMTP_REPLYPARSE_E_LINE_TOO_LONG);
					}
					text_add(rp, '\r');
				}
				rp->pending_cr = 1;
			} else {
				if (rp->pending_cr) {
					rp->pending_cr = 0;
					if (++rp->line_len > SMTP_REP_LINE_MAX) {
						*consumed = i;
						return fail(rp, SMTP_REPLYPARSE_E_LINE_TOO_LONG);
					}
					text_add(rp, '\r');
				}
				text_add(rp, c);
			}
			break;
		default:
			*consumed = i;
			return SMTP_REPLYPARSE_ERROR;
		}
		if (eol && line_end(rp, &st)) {
			*consumed = i + 1;
			if (st == SMTP_REPLYPARSE_REPLY) {
				*out = rp->cur;
				reply_reset(rp);
			}
			return st;
		}
	}
	*consumed = n;
	return SMTP_REPLYPARSE_NEED_MORE;
}

/* smtp_replyparse_text - the reply text as one printable line */
size_t smtp_replyparse_text(const struct smtp_rep *r, char *out, size_t cap)
{
	size_t len = 0;
	char cls = (char)('0' + r->code / 100);

	if (cap == 0)
		return 0;
	for (size_t i = 0; i < r->nstored; i++) {
		const char *s = smtp_rep_line(r, i);
		size_t k = r->enh[0] ? enh_len(s, cls) : 0;
		if (k > 0)
			s += k;
		while (*s == ' ')
			s++;
		if (*s == '\0')
			continue;
		if (len > 0 && len + 1 < cap)
			out[len++] = ' ';
		for (; *s && len + 1 < cap; s++) {
			unsigned char b = (unsigned char)*s;
			out[len++] = (b >= 0x20 && b < 0x7f) ? (char)b : '?';
		}
	}
	out[len] = '\0';
	return len;
}

/* word_end - end of the token starting at s (space, '=' if eq, or NUL) */
static const char *word_end(const char *s, int eq)
{
	while (*s && *s != ' ' && !(eq && *s == '='))
		s++;
	return s;
}

/* auth_add - append mechanism names (uppercased, printable) by whole words */
static void auth_add(struct smtp_caps *caps, const char *s)
{
	size_t len = strlen(caps->auth);

	while (*s) {
		while (*s == ' ' || *s == '=')
			s++;
		const char *e = word_end(s, 0);
		size_t n = (size_t)(e - s);
		if (n == 0)
			break;
		if (len + (len > 0) + n + 1 <= sizeof(caps->auth)) {
			if (len > 0)
				caps->auth[len++] = ' ';
			for (size_t i = 0; i < n; i++) {
				unsigned char b = (unsigned char)s[i];
				if (b >= 'a' && b <= 'z')
					b = (unsigned char)(b - 32);
				caps->auth[len++] = (b > 0x20 && b < 0x7f) ? (char)b : '?';
			}
			caps->auth[len] = '\0';
		}
		s = e;
	}
}

/* smtp_replyparse_ehlo - EHLO keywords (lines after the greeting line) */
void smtp_replyparse_ehlo(const struct smtp_rep *r, struct smtp_caps *caps)
{
	static const unsigned simple[] = {
		SMTP_CAP_PIPELINING, SMTP_CAP_8BITMIME, SMTP_CAP_SMTPUTF8, SMTP_CAP_CHUNKING,
		SMTP_CAP_BINARYMIME, SMTP_CAP_DSN, SMTP_CAP_STARTTLS, SMTP_CAP_ENHANCEDSTATUSCODES,
	};

	memset(caps, 0, sizeof(*caps));
	for (size_t i = 1; i < r->nstored; i++) {
		const char *s = smtp_rep_line(r, i);
		while (*s == ' ')
			s++;
		const char *e = word_end(s, 1);
		struct slice kw = {s, (size_t)(e - s)};

		if (str_slice_eq_ci(kw, "SIZE") && *e != '=') {
			caps->flags |= SMTP_CAP_SIZE;
			while (*e == ' ')
				e++;
			const char *ve = word_end(e, 0);
			uint64_t v;
			/* a garbled limit counts as none: the peer answers SIZE= itself */
			caps->size_max = str_parse_u64(e, (size_t)(ve - e), &v) == 0 ? v : 0;
		} else if (str_slice_eq_ci(kw, "AUTH")) {
			/* "AUTH=LOGIN PLAIN" is the pre-RFC 4954 form some servers still send */
			caps->flags |= SMTP_CAP_AUTH;
			auth_add(caps, e);
		} else if (*e != '=') {
			for (size_t k = 0; k < sizeof(simple) / sizeof(simple[0]); k++)
				if (str_slice_eq_ci(kw, smtp_cap_str((enum smtp_cap)simple[k])))
					caps->flags |= simple[k];
		}
	}
}
