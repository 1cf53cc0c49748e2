/*
 * milter_codec - Sendmail milter protocol v6 packets, encoded and decoded
 * with no I/O. See milter_codec.h for the wire format and the exports.
 *
 * Exports: milter_codec_packet_next, milter_codec_optneg_decode,
 * milter_codec_reply_decode, milter_codec_reply_clear,
 * milter_codec_neg_clear, milter_codec_macro_wanted, milter_codec_enc_*,
 * milter_codec_cmd_str, milter_reply_kind_str.
 * Trusts: nothing in a packet. Every read is bounded by the packet length;
 * every string a milter sends is checked before it leaves this file:
 * reply texts can carry no CR/LF except as "\r\n" between lines of one
 * multi-line reply with one code; header values can hold line breaks only
 * as CRLF followed by white space (a milter cannot end the header section
 * or start a new field inside a value); header names are RFC 5322 ftext;
 * addresses and ESMTP arguments hold no control octets.
 * Implements: the milter protocol v6 as spoken by libmilter (Sendmail
 * 8.14+) and Postfix (milter8.c): option negotiation with macro lists,
 * every reply and modification; RFC 5321 4.2 / 4.2.1 for reply texts;
 * RFC 5322 2.2 / 3.6.8 for header field names and folding.
 */
#include "policy/milter_codec.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* reader over one packet's data */
struct rd {
	const unsigned char *p;
	size_t n;
	size_t off;
};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* fail - format a protocol error into err; returns -1 */
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	if (err != NULL && errlen > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* get_u32 - big-endian 32-bit integer */
static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* rd_u32 - read a 32-bit integer; -1 if the packet is too short */
static int rd_u32(struct rd *r, uint32_t *v)
{
	if (r->n - r->off < 4)
		return -1;
	*v = get_u32(r->p + r->off);
	r->off += 4;
	return 0;
}

/* rd_str - a NUL-terminated string inside the packet; -1 if unterminated */
static int rd_str(struct rd *r, const char **s, size_t *len)
{
	if (r->off >= r->n)
		return -1;
	const unsigned char *nul = memchr(r->p + r->off, 0, r->n - r->off);
	if (nul == NULL)
		return -1;
	*s = (const char *)(r->p + r->off);
	*len = (size_t)(nul - (r->p + r->off));
	r->off += *len + 1;
	return 0;
}

/* dupn - a NUL-terminated copy; NULL on out of memory */
static char *dupn(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (d == NULL)
		return NULL;
	memcpy(d, s, n);
	d[n] = 0;
	return d;
}

/* milter_reply_kind_str - name of a decoded reply, for logs */
const char *milter_reply_kind_str(enum milter_reply_kind k)
{
	static const char *const names[] = {
		[MILTER_REPLY_CONTINUE] = "continue",     [MILTER_REPLY_ACCEPT] = "accept",
		[MILTER_REPLY_REJECT] = "reject",         [MILTER_REPLY_TEMPFAIL] = "tempfail",
		[MILTER_REPLY_DISCARD] = "discard",       [MILTER_REPLY_REPLYCODE] = "replycode",
		[MILTER_REPLY_SHUTDOWN] = "shutdown",     [MILTER_REPLY_PROGRESS] = "progress",
		[MILTER_REPLY_SKIP] = "skip",             [MILTER_REPLY_ADDHEADER] = "addheader",
		[MILTER_REPLY_INSHEADER] = "insheader",   [MILTER_REPLY_CHGHEADER] = "chgheader",
		[MILTER_REPLY_REPLBODY] = "replbody",     [MILTER_REPLY_CHGFROM] = "chgfrom",
		[MILTER_REPLY_ADDRCPT] = "addrcpt",       [MILTER_REPLY_DELRCPT] = "delrcpt",
		[MILTER_REPLY_QUARANTINE] = "quarantine",
	};
	if ((unsigned)k < sizeof(names) / sizeof(names[0]) && names[k] != NULL)
		return names[k];
	return "unknown";
}

/* milter_codec_cmd_str - protocol name of a command octet */
const char *milter_codec_cmd_str(int cmd)
{
	switch (cmd) {
	case SMFIC_ABORT: return "SMFIC_ABORT";
	case SMFIC_BODY: return "SMFIC_BODY";
	case SMFIC_CONNECT: return "SMFIC_CONNECT";
	case SMFIC_MACRO: return "SMFIC_MACRO";
	case SMFIC_BODYEOB: return "SMFIC_BODYEOB";
	case SMFIC_HELO: return "SMFIC_HELO";
	case SMFIC_HEADER: return "SMFIC_HEADER";
	case SMFIC_MAIL: return "SMFIC_MAIL";
	case SMFIC_EOH: return "SMFIC_EOH";
	case SMFIC_OPTNEG: return "SMFIC_OPTNEG";
	case SMFIC_QUIT: return "SMFIC_QUIT";
	case SMFIC_RCPT: return "SMFIC_RCPT";
	case SMFIC_DATA: return "SMFIC_DATA";
	default: return "SMFIC_?";
	}
}

/* milter_codec_packet_next - length-prefixed framing with caps */
ssize_t milter_codec_packet_next(const void *p, size_t n, size_t max, struct milter_pkt *pkt,
				 char *err, size_t errlen)
{
	const unsigned char *b = p;
	if (n < 4)
		return 0;
	uint32_t len = get_u32(b);
	if (len == 0)
		return fail(err, errlen, "packet length 0");
	if (len > max)
		return fail(err, errlen, "packet length %lu over limit %lu", (unsigned long)len,
			    (unsigned long)max);
	if (n - 4 < len)
		return 0;
	pkt->cmd = b[4];
	pkt->data = b + 5;
	pkt->len = len - 1;
	return (ssize_t)(4 + (size_t)len);
}

/* milter_codec_neg_clear - release the requested macro lists */
void milter_codec_neg_clear(struct milter_neg *neg)
{
	for (int i = 0; i < MILTER_MACRO_STAGES; i++) {
		free(neg->macros[i]);
		neg->macros[i] = NULL;
	}
}

/* milter_codec_optneg_decode - check what the milter agreed to */
int milter_codec_optneg_decode(const struct milter_pkt *pkt, uint32_t our_actions,
			       uint32_t our_proto, struct milter_neg *neg, char *err, size_t errlen)
{
	struct rd r = {pkt->data, pkt->len, 0};
	memset(neg, 0, sizeof(*neg));
	if (pkt->cmd != SMFIC_OPTNEG)
		return fail(err, errlen, "expected SMFIC_OPTNEG, got 0x%02x", pkt->cmd);
	if (rd_u32(&r, &neg->version) < 0 || rd_u32(&r, &neg->actions) < 0 ||
	    rd_u32(&r, &neg->proto) < 0)
		return fail(err, errlen, "SMFIC_OPTNEG too short (%zu octets)", pkt->len);
	if (neg->version < 2 || neg->version > MILTER_PROTO_VERSION)
		return fail(err, errlen, "protocol version %lu not supported",
			    (unsigned long)neg->version);
	if ((neg->actions & ~our_actions) != 0)
		return fail(err, errlen, "actions 0x%lx beyond offered 0x%lx",
			    (unsigned long)neg->actions, (unsigned long)our_actions);
	neg->proto &= our_proto;
	if (neg->version < 6) /* these flags exist from version 6 on */
		neg->proto &= ~(uint32_t)(SMFIP_SKIP | SMFIP_RCPT_REJ | SMFIP_NR_CONN | SMFIP_NR_HELO |
					  SMFIP_NR_MAIL | SMFIP_NR_RCPT | SMFIP_NR_DATA |
					  SMFIP_NR_UNKN | SMFIP_NR_EOH | SMFIP_NR_BODY |
					  SMFIP_HDR_LEADSPC);
	while (r.off < r.n) {
		uint32_t stage;
		const char *s;
		size_t len;
		if (rd_u32(&r, &stage) < 0 || rd_str(&r, &s, &len) < 0) {
			milter_codec_neg_clear(neg);
			return fail(err, errlen, "malformed macro list in SMFIC_OPTNEG");
		}
		if (len > MILTER_MACRO_LIST_MAX) {
			milter_codec_neg_clear(neg);
			return fail(err, errlen, "macro list of %zu octets", len);
		}
		for (size_t i = 0; i < len; i++) {
			unsigned char c = (unsigned char)s[i];
			if (c < 0x20 || c > 0x7e) {
				milter_codec_neg_clear(neg);
				return fail(err, errlen, "control octet in macro list");
			}
		}
		if (stage >= MILTER_MACRO_STAGES)
			continue; /* an unknown stage is ignored, as Postfix does */
		char *copy = dupn(s, len);
		if (copy == NULL) {
			milter_codec_neg_clear(neg);
			return fail(err, errlen, "out of memory");
		}
		free(neg->macros[stage]);
		neg->macros[stage] = copy;
	}
	return 0;
}

/* strip_braces - "{name}" -> "name" as a (pointer, length) */
static void strip_braces(const char **s, size_t *n)
{
	if (*n >= 2 && (*s)[0] == '{' && (*s)[*n - 1] == '}') {
		(*s)++;
		*n -= 2;
	}
}

/* milter_codec_macro_wanted - name in a space/comma separated list */
int milter_codec_macro_wanted(const char *list, const char *name)
{
	const char *want = name;
	size_t wn = strlen(name);
	strip_braces(&want, &wn);
	for (const char *p = list; p != NULL && *p;) {
		size_t skip = strspn(p, " ,\t");
		p += skip;
		size_t len = strcspn(p, " ,\t");
		if (len == 0)
			break;
		const char *item = p;
		size_t in = len;
		strip_braces(&item, &in);
		if (in == wn && memcmp(item, want, wn) == 0)
			return 1;
		p += len;
	}
	return 0;
}

/* milter_codec_reply_clear - release the strings of a decoded reply */
void milter_codec_reply_clear(struct milter_reply *r)
{
	free(r->name);
	free(r->value);
	free(r->args);
	free(r->text);
	memset(r, 0, sizeof(*r));
}

/* check_name - RFC 5322 2.2 field name: 1*ftext, ftext = %d33-57 / %d59-126 */
static int check_name(const char *s, size_t n)
{
	if (n == 0 || n > MILTER_NAME_MAX)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 33 || c > 126 || c == ':')
			return -1;
	}
	return 0;
}

/*
 * norm_value - a header value as it goes after "name: " (the writer adds
 * the colon and one space, as Sendmail and Postfix do for milters that did
 * not negotiate SMFIP_HDR_LEADSPC; from one that did, the one leading
 * space it sent is taken off). Line breaks (CRLF, LF or a lone CR) become
 * CRLF, and a line that does not start with white space gets a space, so
 * the value can never end the header section or start a new field.
 * Trailing line breaks are dropped. NULL on out of memory.
 */
static char *norm_value(const char *v, size_t n, int leadspc)
{
	while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n'))
		n--;
	if (leadspc && n > 1 && v[0] == ' ') {
		v++;
		n--;
	}
	/* worst case: every octet a line break growing to CRLF + SP */
	char *out = malloc(3 * n + 1);
	if (out == NULL)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		if (c != '\r' && c != '\n') {
			out[o++] = c;
			continue;
		}
		if (c == '\r' && i + 1 < n && v[i + 1] == '\n')
			i++;
		out[o++] = '\r';
		out[o++] = '\n';
		if (i + 1 >= n || (v[i + 1] != ' ' && v[i + 1] != '\t'))
			out[o++] = ' ';
	}
	out[o] = 0;
	return out;
}

/* norm_addr - strip <...>; refuse controls, spaces, inner brackets, length */
static int norm_addr(const char *s, size_t n, int allow_empty, char **out)
{
	if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
		s++;
		n -= 2;
	}
	if (n > MILTER_ADDR_MAX || (n == 0 && !allow_empty))
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c == 0x7f || c == '<' || c == '>')
			return -1;
	}
	*out = dupn(s, n);
	return *out == NULL ? -2 : 0;
}

/* norm_args - ESMTP arguments: printable ASCII, length; "" -> NULL */
static int norm_args(const char *s, size_t n, char **out)
{
	*out = NULL;
	if (n > MILTER_ARGS_MAX)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c > 0x7e)
			return -1;
	}
	while (n > 0 && s[0] == ' ') {
		s++;
		n--;
	}
	while (n > 0 && s[n - 1] == ' ')
		n--;
	if (n == 0)
		return 0;
	*out = dupn(s, n);
	return *out == NULL ? -2 : 0;
}

/* is_digit - ASCII digit */
static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * decode_replycode - SMFIR_REPLYCODE: "ddd text" or lines "ddd-a\r\nddd b".
 * '%%' becomes '%' and a lone '%' is dropped (Sendmail uses the text as a
 * format string; Postfix does the same). Every line must carry the same
 * 4xx/5xx code; separators are rewritten ('-' on all lines but the last,
 * ' ' on the last) so a milter can never make two SMTP replies of one; a
 * CR or LF other than a "\r\n" between lines, or another control octet, is
 * an error; tabs become spaces and non-ASCII octets '?'. An enhanced code
 * whose class differs from the reply code is an error. Whole lines are
 * kept while they fit MILTER_REPLY_MAX.
 */
static int decode_replycode(struct rd *rd, struct milter_reply *r, char *err, size_t errlen)
{
	size_t n = rd->n;
	const char *s = (const char *)rd->p;
	const char *nul = memchr(s, 0, n);
	if (nul != NULL) {
		if ((size_t)(nul - s) != n - 1)
			return fail(err, errlen, "octets after the NUL of SMFIR_REPLYCODE");
		n--;
	}
	if (n == 0)
		return fail(err, errlen, "empty SMFIR_REPLYCODE");
	if (n > MILTER_PKT_MAX)
		return fail(err, errlen, "SMFIR_REPLYCODE too long");
	/* un-percent into a work copy */
	char *t = malloc(n + 1);
	if (t == NULL)
		return fail(err, errlen, "out of memory");
	size_t tn = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			if (i + 1 < n && s[i + 1] == '%')
				t[tn++] = s[++i];
			continue;
		}
		t[tn++] = s[i];
	}
	while (tn >= 2 && t[tn - 2] == '\r' && t[tn - 1] == '\n')
		tn -= 2;
	t[tn] = 0;
	if (tn < 3 || (t[0] != '4' && t[0] != '5') || !is_digit(t[1]) || !is_digit(t[2])) {
		free(t);
		return fail(err, errlen, "SMFIR_REPLYCODE without a 4xx/5xx code");
	}
	char *out = malloc(MILTER_REPLY_MAX + 1);
	if (out == NULL) {
		free(t);
		return fail(err, errlen, "out of memory");
	}
	size_t on = 0, last_line = 0;
	int full = 0;
	for (size_t ls = 0; ls <= tn;) {
		/* find the end of this line: "\r\n" or the end; a lone CR or LF is an error */
		size_t le = ls;
		while (le < tn && t[le] != '\r' && t[le] != '\n')
			le++;
		if (le < tn && !(t[le] == '\r' && le + 1 < tn && t[le + 1] == '\n')) {
			free(t);
			free(out);
			return fail(err, errlen, "CR or LF inside SMFIR_REPLYCODE text");
		}
		const char *line = t + ls;
		size_t ll = le - ls;
		if (ll < 3 || memcmp(line, t, 3) != 0 ||
		    (ll > 3 && line[3] != ' ' && line[3] != '-')) {
			free(t);
			free(out);
			return fail(err, errlen, "SMFIR_REPLYCODE line without the reply code");
		}
		const char *text = ll > 4 ? line + 4 : line + ll;
		size_t textlen = ll > 4 ? ll - 4 : 0;
		if (textlen >= 2 && (text[0] == '2' || text[0] == '4' || text[0] == '5') &&
		    text[1] == '.' && text[0] != t[0]) {
			free(t);
			free(out);
			return fail(err, errlen, "enhanced status class differs from reply code");
		}
		for (size_t i = 0; i < textlen; i++) {
			unsigned char c = (unsigned char)text[i];
			if (c < 0x20 && c != '\t') {
				free(t);
				free(out);
				return fail(err, errlen, "control octet in SMFIR_REPLYCODE text");
			}
		}
		if (!full) {
			size_t need = (on ? 2 : 0) + 4 + textlen;
			if (on + need > MILTER_REPLY_MAX) {
				if (on == 0) { /* a first line too long: cut it */
					textlen = MILTER_REPLY_MAX - 4;
					need = MILTER_REPLY_MAX;
				} else {
					need = 0;
				}
				full = 1;
			}
			if (need > 0) {
				if (on) {
					out[on++] = '\r';
					out[on++] = '\n';
				}
				last_line = on;
				memcpy(out + on, t, 3);
				out[on + 3] = '-';
				on += 4;
				for (size_t i = 0; i < textlen; i++) {
					unsigned char c = (unsigned char)text[i];
					out[on++] = c == '\t' ? ' ' : c > 0x7e ? '?' : (char)c;
				}
			}
		}
		if (le >= tn)
			break;
		ls = le + 2;
	}
	out[last_line + 3] = ' ';
	/* a last line of just the code needs no trailing space */
	if (on == last_line + 4)
		on--;
	out[on] = 0;
	r->code = (t[0] - '0') * 100 + (t[1] - '0') * 10 + (t[2] - '0');
	r->text = out;
	free(t);
	return 0;
}

/* need_eom - a modification is only valid at end of message and when negotiated */
static int need_eom(int after, const struct milter_neg *neg, uint32_t action, const char *what,
		    char *err, size_t errlen)
{
	if (after != SMFIC_BODYEOB)
		return fail(err, errlen, "%s after %s (only at end of message)", what,
			    milter_codec_cmd_str(after));
	if ((neg->actions & action) == 0)
		return fail(err, errlen, "%s without negotiating it", what);
	return 0;
}

/* decode_header_mod - ADDHEADER (no index), INSHEADER and CHGHEADER (index) */
static int decode_header_mod(struct rd *rd, int with_index, const struct milter_neg *neg,
			     struct milter_reply *r, char *err, size_t errlen)
{
	const char *name, *value;
	size_t nlen, vlen;
	if (with_index && rd_u32(rd, &r->index) < 0)
		return fail(err, errlen, "%s without an index", milter_reply_kind_str(r->kind));
	if (rd_str(rd, &name, &nlen) < 0 || rd_str(rd, &value, &vlen) < 0)
		return fail(err, errlen, "%s: unterminated string", milter_reply_kind_str(r->kind));
	if (rd->off != rd->n)
		return fail(err, errlen, "%s: trailing octets", milter_reply_kind_str(r->kind));
	if (with_index && r->index > MILTER_INDEX_MAX)
		return fail(err, errlen, "%s: index %lu out of range", milter_reply_kind_str(r->kind),
			    (unsigned long)r->index);
	if (r->kind == MILTER_REPLY_CHGHEADER && r->index == 0)
		r->index = 1; /* Sendmail compatibility: 0 means the first */
	if (check_name(name, nlen) < 0)
		return fail(err, errlen, "%s: bad header name", milter_reply_kind_str(r->kind));
	if (vlen > MILTER_VALUE_MAX)
		return fail(err, errlen, "%s: value of %zu octets", milter_reply_kind_str(r->kind), vlen);
	r->name = dupn(name, nlen);
	if (r->kind == MILTER_REPLY_CHGHEADER && vlen == 0)
		r->value = dupn("", 0);
	else
		r->value = norm_value(value, vlen, (neg->proto & SMFIP_HDR_LEADSPC) != 0);
	if (r->name == NULL || r->value == NULL)
		return fail(err, errlen, "out of memory");
	return 0;
}

/* decode_addr_mod - CHGFROM / ADDRCPT(_PAR) / DELRCPT: address [args] */
static int decode_addr_mod(struct rd *rd, int args_ok, struct milter_reply *r, char *err,
			   size_t errlen)
{
	const char *a, *args = NULL;
	size_t alen, arglen = 0;
	const char *what = milter_reply_kind_str(r->kind);
	if (rd_str(rd, &a, &alen) < 0)
		return fail(err, errlen, "%s: unterminated address", what);
	if (args_ok && rd->off < rd->n && rd_str(rd, &args, &arglen) < 0)
		return fail(err, errlen, "%s: unterminated arguments", what);
	if (rd->off != rd->n)
		return fail(err, errlen, "%s: trailing octets", what);
	int rc = norm_addr(a, alen, r->kind == MILTER_REPLY_CHGFROM, &r->value);
	if (rc == -1)
		return fail(err, errlen, "%s: bad address", what);
	if (rc == 0 && args != NULL)
		rc = norm_args(args, arglen, &r->args);
	if (rc == -1)
		return fail(err, errlen, "%s: bad ESMTP arguments", what);
	if (rc < 0)
		return fail(err, errlen, "out of memory");
	return 0;
}

/* expects_reply - commands a milter answers */
static int expects_reply(int cmd)
{
	switch (cmd) {
	case SMFIC_CONNECT: case SMFIC_HELO: case SMFIC_MAIL: case SMFIC_RCPT: case SMFIC_DATA:
	case SMFIC_HEADER: case SMFIC_EOH: case SMFIC_BODY: case SMFIC_BODYEOB:
		return 1;
	default:
		return 0;
	}
}

/* milter_codec_reply_decode - one reply packet, checked in its context */
int milter_codec_reply_decode(const struct milter_pkt *pkt, int after, const struct milter_neg *neg,
			      struct milter_reply *r, char *err, size_t errlen)
{
	struct rd rd = {pkt->data, pkt->len, 0};
	int rc = -1;
	memset(r, 0, sizeof(*r));
	if (!expects_reply(after))
		return fail(err, errlen, "reply 0x%02x to %s, which has none", pkt->cmd,
			    milter_codec_cmd_str(after));
	switch (pkt->cmd) {
	case SMFIR_CONTINUE: r->kind = MILTER_REPLY_CONTINUE; goto nodata;
	case SMFIR_ACCEPT: r->kind = MILTER_REPLY_ACCEPT; goto nodata;
	case SMFIR_REJECT: r->kind = MILTER_REPLY_REJECT; goto nodata;
	case SMFIR_TEMPFAIL: r->kind = MILTER_REPLY_TEMPFAIL; goto nodata;
	case SMFIR_DISCARD: r->kind = MILTER_REPLY_DISCARD; goto nodata;
	case SMFIR_SHUTDOWN:
	case SMFIR_CONN_FAIL: r->kind = MILTER_REPLY_SHUTDOWN; goto nodata;
	case SMFIR_PROGRESS: r->kind = MILTER_REPLY_PROGRESS; goto nodata;
	case SMFIR_SKIP:
		r->kind = MILTER_REPLY_SKIP;
		if (after != SMFIC_BODY && after != SMFIC_HEADER)
			return fail(err, errlen, "SMFIR_SKIP after %s", milter_codec_cmd_str(after));
		goto nodata;
	case SMFIR_REPLYCODE:
		r->kind = MILTER_REPLY_REPLYCODE;
		rc = decode_replycode(&rd, r, err, errlen);
		break;
	case SMFIR_ADDHEADER:
		r->kind = MILTER_REPLY_ADDHEADER;
		if (need_eom(after, neg, SMFIF_ADDHDRS, "SMFIR_ADDHEADER", err, errlen) < 0)
			return -1;
		rc = decode_header_mod(&rd, 0, neg, r, err, errlen);
		break;
	case SMFIR_INSHEADER:
		r->kind = MILTER_REPLY_INSHEADER;
		if (need_eom(after, neg, SMFIF_ADDHDRS, "SMFIR_INSHEADER", err, errlen) < 0)
			return -1;
		rc = decode_header_mod(&rd, 1, neg, r, err, errlen);
		break;
	case SMFIR_CHGHEADER:
		r->kind = MILTER_REPLY_CHGHEADER;
		if (need_eom(after, neg, SMFIF_CHGHDRS, "SMFIR_CHGHEADER", err, errlen) < 0)
			return -1;
		rc = decode_header_mod(&rd, 1, neg, r, err, errlen);
		break;
	case SMFIR_REPLBODY:
		r->kind = MILTER_REPLY_REPLBODY;
		if (need_eom(after, neg, SMFIF_CHGBODY, "SMFIR_REPLBODY", err, errlen) < 0)
			return -1;
		r->body = pkt->data;
		r->bodylen = pkt->len;
		return 0;
	case SMFIR_CHGFROM:
		r->kind = MILTER_REPLY_CHGFROM;
		if (need_eom(after, neg, SMFIF_CHGFROM, "SMFIR_CHGFROM", err, errlen) < 0)
			return -1;
		rc = decode_addr_mod(&rd, 1, r, err, errlen);
		break;
	case SMFIR_ADDRCPT:
		r->kind = MILTER_REPLY_ADDRCPT;
		if (need_eom(after, neg, SMFIF_ADDRCPT, "SMFIR_ADDRCPT", err, errlen) < 0)
			return -1;
		rc = decode_addr_mod(&rd, 0, r, err, errlen);
		break;
	case SMFIR_ADDRCPT_PAR:
		r->kind = MILTER_REPLY_ADDRCPT;
		if (need_eom(after, neg, SMFIF_ADDRCPT_PAR, "SMFIR_ADDRCPT_PAR", err, errlen) < 0)
			return -1;
		rc = decode_addr_mod(&rd, 1, r, err, errlen);
		break;
	case SMFIR_DELRCPT:
		r->kind = MILTER_REPLY_DELRCPT;
		if (need_eom(after, neg, SMFIF_DELRCPT, "SMFIR_DELRCPT", err, errlen) < 0)
			return -1;
		rc = decode_addr_mod(&rd, 0, r, err, errlen);
		break;
	case SMFIR_QUARANTINE: {
		const char *s;
		size_t len;
		r->kind = MILTER_REPLY_QUARANTINE;
		if (need_eom(after, neg, SMFIF_QUARANTINE, "SMFIR_QUARANTINE", err, errlen) < 0)
			return -1;
		if (rd_str(&rd, &s, &len) < 0 || rd.off != rd.n)
			return fail(err, errlen, "SMFIR_QUARANTINE: malformed reason");
		if (len > MILTER_REASON_MAX)
			len = MILTER_REASON_MAX;
		r->value = dupn(s, len);
		if (r->value == NULL)
			return fail(err, errlen, "out of memory");
		for (size_t i = 0; i < len; i++) /* it is logged and kept: printable only */
			if ((unsigned char)r->value[i] < 0x20 || (unsigned char)r->value[i] > 0x7e)
				r->value[i] = '?';
		rc = 0;
		break;
	}
	default:
		return fail(err, errlen, "unknown reply 0x%02x after %s", pkt->cmd,
			    milter_codec_cmd_str(after));
	}
	if (rc < 0)
		milter_codec_reply_clear(r);
	return rc;
nodata:
	if (pkt->len != 0)
		return fail(err, errlen, "reply '%c' followed by %zu data octets", pkt->cmd, pkt->len);
	return 0;
}

/* ---- encoders ---- */

/* pkt_begin - reserve the length field and write the command; returns its offset */
static size_t pkt_begin(struct strbuf *sb, int cmd)
{
	size_t start = sb->len;
	char hdr[5] = {0, 0, 0, 0, (char)cmd};
	strbuf_add(sb, hdr, 5);
	return start;
}

/* pkt_end - fill in the length of the packet that began at start */
static void pkt_end(struct strbuf *sb, size_t start)
{
	size_t len = sb->len - start - 4;
	unsigned char *p = (unsigned char *)sb->s + start;
	p[0] = (unsigned char)(len >> 24);
	p[1] = (unsigned char)(len >> 16);
	p[2] = (unsigned char)(len >> 8);
	p[3] = (unsigned char)len;
}

/* add_u32 - big-endian 32-bit integer */
static void add_u32(struct strbuf *sb, uint32_t v)
{
	unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
			      (unsigned char)(v >> 8), (unsigned char)v};
	strbuf_add(sb, b, 4);
}

/* add_str - string and its NUL */
static void add_str(struct strbuf *sb, const char *s, size_t n)
{
	strbuf_add(sb, s, n);
	strbuf_addc(sb, 0);
}

/* milter_codec_enc_optneg - SMFIC_OPTNEG: version, actions, protocol flags */
void milter_codec_enc_optneg(struct strbuf *sb, uint32_t version, uint32_t actions, uint32_t proto)
{
	size_t st = pkt_begin(sb, SMFIC_OPTNEG);
	add_u32(sb, version);
	add_u32(sb, actions);
	add_u32(sb, proto);
	pkt_end(sb, st);
}

#define MACRO_VALUE_MAX 1024 /* a macro value is cut to this */

/* milter_codec_enc_macros - SMFIC_MACRO: the command octet, then name/value pairs */
void milter_codec_enc_macros(struct strbuf *sb, int cmd, const char *const *kv, size_t npairs)
{
	size_t st = pkt_begin(sb, SMFIC_MACRO);
	strbuf_addc(sb, (char)cmd);
	for (size_t i = 0; i < npairs; i++) {
		const char *name = kv[2 * i], *value = kv[2 * i + 1];
		if (name == NULL || value == NULL)
			continue;
		size_t nl = strnlen(name, 64), vl = strnlen(value, MACRO_VALUE_MAX);
		if (sb->len - st - 5 + nl + vl + 2 > MILTER_CHUNK_MAX)
			break;
		add_str(sb, name, nl);
		add_str(sb, value, vl);
	}
	pkt_end(sb, st);
}

/* milter_codec_enc_connect - SMFIC_CONNECT: host, family, port, address */
void milter_codec_enc_connect(struct strbuf *sb, const char *host, int family, unsigned port,
			      const char *addr)
{
	size_t st = pkt_begin(sb, SMFIC_CONNECT);
	add_str(sb, host, strnlen(host, 1024));
	strbuf_addc(sb, (char)family);
	if (family != 'U') {
		unsigned char pb[2] = {(unsigned char)(port >> 8), (unsigned char)port};
		strbuf_add(sb, pb, 2);
		add_str(sb, addr, strnlen(addr, 1024));
	}
	pkt_end(sb, st);
}

/* milter_codec_enc_helo - SMFIC_HELO */
void milter_codec_enc_helo(struct strbuf *sb, const char *helo)
{
	size_t st = pkt_begin(sb, SMFIC_HELO);
	add_str(sb, helo, strnlen(helo, 1024));
	pkt_end(sb, st);
}

/* milter_codec_enc_envelope - SMFIC_MAIL / SMFIC_RCPT: "<addr>" and arguments */
void milter_codec_enc_envelope(struct strbuf *sb, int cmd, const char *addr,
			       const char *const *args)
{
	size_t st = pkt_begin(sb, cmd);
	size_t al = strnlen(addr, 4096);
	strbuf_addc(sb, '<');
	strbuf_add(sb, addr, al);
	strbuf_addc(sb, '>');
	strbuf_addc(sb, 0);
	for (size_t i = 0; args != NULL && args[i] != NULL; i++) {
		size_t l = strnlen(args[i], 4096);
		if (sb->len - st - 5 + l + 1 > MILTER_CHUNK_MAX)
			break;
		add_str(sb, args[i], l);
	}
	pkt_end(sb, st);
}

/* milter_codec_enc_header - SMFIC_HEADER: name, value (cut to the data limit) */
void milter_codec_enc_header(struct strbuf *sb, const char *name, size_t nlen, const char *value,
			     size_t vlen)
{
	if (nlen > MILTER_NAME_MAX)
		nlen = MILTER_NAME_MAX;
	/* name + NUL + value + NUL within the data limit */
	size_t room = MILTER_CHUNK_MAX - (nlen + 1) - 1;
	if (vlen > room)
		vlen = room;
	size_t st = pkt_begin(sb, SMFIC_HEADER);
	add_str(sb, name, nlen);
	add_str(sb, value, vlen);
	pkt_end(sb, st);
}

/* milter_codec_enc_body - SMFIC_BODY: one chunk */
void milter_codec_enc_body(struct strbuf *sb, const void *p, size_t n)
{
	if (n > MILTER_CHUNK_MAX)
		n = MILTER_CHUNK_MAX;
	size_t st = pkt_begin(sb, SMFIC_BODY);
	strbuf_add(sb, p, n);
	pkt_end(sb, st);
}

/* milter_codec_enc_cmd - a command without data */
void milter_codec_enc_cmd(struct strbuf *sb, int cmd)
{
	size_t st = pkt_begin(sb, cmd);
	pkt_end(sb, st);
}
