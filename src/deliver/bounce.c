/*
 * bounce - compose delivery status notifications (RFC 3464 in an RFC 6522
 * multipart/report). See bounce.h.
 *
 * The message is built in three part buffers first (text, status,
 * original), then a random boundary is drawn until it occurs in none of
 * them, then the headers and parts are joined. Every value that reaches
 * a header or a DSN field goes through b_clean (printable ASCII only) and
 * b_fold (lines folded near 78 octets, hard-split before 998), so a
 * hostile diagnostic can neither start a field of its own nor break the
 * line limit. The returned original keeps its bytes, but its line ends
 * become CRLF (a bare CR or LF would be a bare line end in our output),
 * NUL becomes a space and lines are split at 998 octets.
 *
 * Exports: bounce_action_str, bounce_compose, bounce_read_fd,
 *          bounce_diag_parse (bounce.h)
 * Trusts: nothing in the request or the content.
 * Standards: RFC 3464, RFC 6522 (RFC 3462), RFC 3461 4.3 (RET applies to
 * failures only) and 6.3 (Original-Recipient from ORCPT, xtext decoded),
 * RFC 3463, RFC 3834 (Auto-Submitted: auto-replied), RFC 5322 2.1.1.
 */
#include "deliver/bounce.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/str.h"
#include "core/xalloc.h"

#define B_SOFT_LINE 78
/* below the RFC 5322 998 so that a fold prefix always fits */
#define B_HARD_LINE 990
/* longest value we put in one field, after cleaning */
#define B_VALUE_MAX 2000
#define B_READ_CHUNK 65536

const char *bounce_action_str(enum bounce_action a)
{
	switch (a) {
	case BOUNCE_ACTION_FAILED: return "failed";
	case BOUNCE_ACTION_DELAYED: return "delayed";
	case BOUNCE_ACTION_DELIVERED: return "delivered";
	case BOUNCE_ACTION_RELAYED: return "relayed";
	case BOUNCE_ACTION_EXPANDED: return "expanded";
	}
	return "failed";
}

/* b_clean - printable ASCII copy of s[0..n): controls (CR, LF, TAB, NUL...)
 * become spaces, 8-bit octets '?', runs of spaces one space, ends trimmed,
 * at most B_VALUE_MAX octets */
static void b_clean(const char *s, size_t n, struct strbuf *out)
{
	size_t start = out->len;
	int space = 1; /* drop leading spaces */
	for (size_t i = 0; i < n && out->len - start < B_VALUE_MAX; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == ' ' || c == 0x7f) {
			if (!space)
				strbuf_addc(out, ' ');
			space = 1;
			continue;
		}
		strbuf_addc(out, c >= 0x80 ? '?' : (char)c);
		space = 0;
	}
	while (out->len > start && out->s[out->len - 1] == ' ')
		out->len--;
	if (out->s)
		out->s[out->len] = '\0';
}

/* b_fold - append first, then the value folded: a line longer than the
 * soft limit breaks at a space (continuation lines start with cont), a
 * word too long for any line is split at B_HARD_LINE; ends with CRLF.
 * value must be clean (b_clean): single spaces, no controls. */
static void b_fold(struct strbuf *out, const char *first, const char *cont, const char *value)
{
	size_t col = strlen(first);
	size_t contlen = strlen(cont);
	size_t line_start = col; /* col at which no break helps any more */
	strbuf_adds(out, first);
	const char *p = value;
	int first_word = 1;
	while (*p) {
		const char *sp = strchr(p, ' ');
		size_t wl = sp ? (size_t)(sp - p) : strlen(p);
		if (!first_word) {
			if (col + 1 + wl > B_SOFT_LINE && col > line_start) {
				strbuf_adds(out, "\r\n");
				strbuf_adds(out, cont);
				col = contlen;
				line_start = col;
			} else {
				strbuf_addc(out, ' ');
				col++;
			}
		}
		while (col + wl > B_HARD_LINE) {
			size_t take = B_HARD_LINE - col;
			strbuf_add(out, p, take);
			p += take;
			wl -= take;
			strbuf_adds(out, "\r\n");
			strbuf_adds(out, cont);
			col = contlen;
			line_start = col;
		}
		strbuf_add(out, p, wl);
		col += wl;
		p += wl;
		if (*p == ' ')
			p++;
		first_word = 0;
	}
	strbuf_adds(out, "\r\n");
}

/* b_field - a header or DSN field "Name: value" from untrusted text */
static void b_field(struct strbuf *out, const char *name, const char *value)
{
	struct strbuf v, f;
	strbuf_init(&v);
	strbuf_init(&f);
	b_clean(value, strlen(value), &v);
	strbuf_addf(&f, "%s: ", name);
	b_fold(out, f.s, " ", v.s ? v.s : "");
	strbuf_free(&v);
	strbuf_free(&f);
}

/* b_hex - value of a hex digit, or -1 */
static int b_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* b_xtext_decode - RFC 3461 4: "+HH" is the octet HH; a malformed "+"
 * stays as it is. The result still goes through b_clean. */
static char *b_xtext_decode(const char *s, size_t n)
{
	char *o = xmalloc(n + 1);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '+' && i + 2 < n) {
			int h = b_hex(s[i + 1]), l = b_hex(s[i + 2]);
			if (h >= 0 && l >= 0) {
				char c = (char)(h * 16 + l);
				o[k++] = c == '\0' ? ' ' : c;
				i += 2;
				continue;
			}
		}
		o[k++] = s[i];
	}
	o[k] = '\0';
	return o;
}

/* b_date - RFC 5322 date-time in UTC (no locale involved) */
static void b_date(time_t t, char *buf, size_t n)
{
	static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 || tm.tm_mon > 11) {
		t = 0;
		gmtime_r(&t, &tm);
	}
	snprintf(buf, n, "%s, %02d %s %04d %02d:%02d:%02d +0000", wd[tm.tm_wday], tm.tm_mday, mo[tm.tm_mon],
		 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* b_status_ok - "x.y.z": class 2, 4 or 5, subject 1-3 digits, detail 1-3 */
static int b_status_ok(const char *s, size_t n)
{
	if (n < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return 0;
	size_t i = 2, d = 0;
	while (i < n && s[i] >= '0' && s[i] <= '9' && d < 4)
		i++, d++;
	if (d == 0 || d > 3 || i >= n || s[i] != '.')
		return 0;
	i++;
	d = 0;
	while (i < n && s[i] >= '0' && s[i] <= '9' && d < 4)
		i++, d++;
	return d >= 1 && d <= 3 && i == n;
}

/* b_status - the rcpt's status, or the default of its action's class */
static const char *b_status(const struct bounce_rcpt *r)
{
	if (r->status && b_status_ok(r->status, strlen(r->status))) {
		/* the class must agree with the action (RFC 3464 2.3.4) */
		char c = r->status[0];
		if ((r->action == BOUNCE_ACTION_FAILED && c == '5') ||
		    (r->action == BOUNCE_ACTION_DELAYED && c == '4') ||
		    (r->action != BOUNCE_ACTION_FAILED && r->action != BOUNCE_ACTION_DELAYED && c == '2'))
			return r->status;
		/* an expired temporary failure is a failure: 4.x.x is allowed
		 * for failed (Postfix reports 4.4.1 with Action: failed) */
		if (r->action == BOUNCE_ACTION_FAILED && c == '4')
			return r->status;
	}
	switch (r->action) {
	case BOUNCE_ACTION_FAILED: return "5.0.0";
	case BOUNCE_ACTION_DELAYED: return "4.0.0";
	default: return "2.0.0";
	}
}

/* b_orcpt - the Original-Recipient value "type;address" (xtext decoded
 * for rfc822) or NULL when there is none */
static void b_orcpt(const char *orcpt, struct strbuf *out)
{
	size_t n = strlen(orcpt);
	size_t i = 0;
	while (i < n && ((orcpt[i] >= 'a' && orcpt[i] <= 'z') || (orcpt[i] >= 'A' && orcpt[i] <= 'Z') ||
			 (orcpt[i] >= '0' && orcpt[i] <= '9') || orcpt[i] == '-'))
		i++;
	if (i > 0 && i < n && orcpt[i] == ';') {
		strbuf_add(out, orcpt, i);
		strbuf_adds(out, ";");
		if (i == 6 && str_ncasecmp_ascii(orcpt, "rfc822", 6) == 0) {
			char *d = b_xtext_decode(orcpt + i + 1, n - i - 1);
			strbuf_adds(out, d);
			free(d);
		} else {
			strbuf_adds(out, orcpt + i + 1);
		}
		return;
	}
	strbuf_adds(out, "rfc822;");
	strbuf_adds(out, orcpt);
}

/* b_random_hex - n random hex digits (getrandom; a weak mix as fallback) */
static void b_random_hex(char *out, size_t n)
{
	unsigned char r[32];
	size_t need = (n + 1) / 2;
	if (need > sizeof(r))
		need = sizeof(r);
	if (getrandom(r, need, GRND_NONBLOCK) != (ssize_t)need) {
		static unsigned long ctr;
		unsigned long long x = (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 32) ^ ++ctr;
		for (size_t i = 0; i < need; i++) {
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			r[i] = (unsigned char)(x >> 56);
		}
	}
	static const char hx[] = "0123456789abcdef";
	for (size_t i = 0; i < n && i / 2 < need; i++)
		out[i] = hx[(r[i / 2] >> ((i & 1) ? 0 : 4)) & 15];
	out[n] = '\0';
}

/* b_read_all - read up to max bytes of the original into raw; stop early
 * at the end of the header section when headers_only. 0 ok, -1 error. */
static int b_read(const struct bounce_req *b, uint64_t max, int headers_only, struct strbuf *raw)
{
	uint64_t off = 0;
	char *chunk = xmalloc(B_READ_CHUNK);
	int rc = 0;
	while (off < max) {
		size_t want = max - off < B_READ_CHUNK ? (size_t)(max - off) : B_READ_CHUNK;
		ssize_t got = b->read(b->read_arg, chunk, want, off);
		if (got < 0) {
			rc = -1;
			break;
		}
		if (got == 0)
			break;
		if ((size_t)got > want)
			got = (ssize_t)want; /* a callback that lies cannot overflow us */
		strbuf_add(raw, chunk, (size_t)got);
		off += (uint64_t)got;
		if (headers_only && (memmem(raw->s, raw->len, "\n\n", 2) || memmem(raw->s, raw->len, "\n\r\n", 3)))
			break;
	}
	free(chunk);
	return rc;
}

/* b_content - the original (or its header section) as CRLF lines of at
 * most B_HARD_LINE octets; *eightbit set if an octet >= 0x80 is kept */
static void b_content(const char *p, size_t n, int headers_only, struct strbuf *out, int *eightbit)
{
	size_t i = 0;
	while (i < n) {
		size_t s = i;
		while (i < n && p[i] != '\n' && p[i] != '\r')
			i++;
		size_t e = i;
		/* a line end is CRLF, LF or a bare CR: each becomes CRLF */
		if (i < n && p[i] == '\r')
			i++;
		if (i < n && p[i] == '\n')
			i++;
		if (headers_only && e == s)
			return; /* the empty line ends the header section */
		size_t col = 0;
		for (size_t k = s; k < e; k++) {
			unsigned char c = (unsigned char)p[k];
			if (col == B_HARD_LINE) {
				strbuf_adds(out, headers_only ? "\r\n " : "\r\n");
				col = headers_only ? 1 : 0;
			}
			if (c >= 0x80)
				*eightbit = 1;
			strbuf_addc(out, c == '\0' ? ' ' : (char)c);
			col++;
		}
		strbuf_adds(out, "\r\n");
	}
}

/* b_subject - by the most serious action reported */
static const char *b_subject(int kind)
{
	switch (kind) {
	case BOUNCE_ACTION_FAILED: return "Undelivered Mail Returned to Sender";
	case BOUNCE_ACTION_DELAYED: return "Delayed Mail (still being retried)";
	default: return "Successful Mail Delivery Report";
	}
}

/* b_text - part 1, the human-readable explanation */
static void b_text(const struct bounce_req *b, int kind, const char *host, const char *original_note,
		   struct strbuf *t)
{
	char d[64];
	strbuf_adds(t, "Content-Description: Notification\r\n"
		       "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
	strbuf_addf(t, "This is the mail system at host %s.\r\n\r\n", host);
	if (b->postmaster_copy)
		strbuf_adds(t, "This is a copy for the postmaster: a delivery status notification\r\n"
			       "could not be delivered. Its report follows.\r\n\r\n");
	if (kind == BOUNCE_ACTION_FAILED)
		strbuf_adds(t, "I'm sorry to have to inform you that your message could not\r\n"
			       "be delivered to one or more recipients. The report below says why.\r\n");
	else if (kind == BOUNCE_ACTION_DELAYED)
		strbuf_adds(t, "This is a warning only: your message has not yet been delivered\r\n"
			       "to one or more recipients. The mail system will keep trying;\r\n"
			       "you do not need to send it again.\r\n");
	else
		strbuf_adds(t, "Your message was delivered to the recipients listed below.\r\n");
	struct strbuf line, v;
	strbuf_init(&line);
	strbuf_init(&v);
	b_date(b->arrival, d, sizeof(d));
	strbuf_addf(&line, "The message arrived on %s", d);
	if (b->orig_qid && b->orig_qid[0]) {
		strbuf_adds(&line, " with queue ID ");
		strbuf_adds(&line, b->orig_qid);
	}
	strbuf_adds(&line, ".");
	b_clean(line.s, line.len, &v);
	strbuf_adds(t, "\r\n");
	b_fold(t, "", "", v.s);
	if (original_note) {
		strbuf_adds(t, "\r\n");
		b_fold(t, "", "", original_note);
	}
	strbuf_adds(t, "\r\n");
	for (size_t i = 0; i < b->nrcpts; i++) {
		const struct bounce_rcpt *r = &b->rcpts[i];
		strbuf_reset(&line);
		strbuf_reset(&v);
		strbuf_addf(&line, "<%s>: %s", r->addr ? r->addr : "", bounce_action_str(r->action));
		if (r->diag && r->diag[0]) {
			strbuf_adds(&line, ": ");
			strbuf_adds(&line, r->diag);
		}
		if (r->action == BOUNCE_ACTION_DELAYED && r->retry_until) {
			b_date(r->retry_until, d, sizeof(d));
			strbuf_addf(&line, " (will be retried until %s)", d);
		}
		b_clean(line.s, line.len, &v);
		b_fold(t, "", "    ", v.s ? v.s : "");
		strbuf_adds(t, "\r\n");
	}
	strbuf_free(&line);
	strbuf_free(&v);
}

/* b_status_part - part 2, the message/delivery-status body */
static void b_status_part(const struct bounce_req *b, const char *host, struct strbuf *st)
{
	char d[64];
	struct strbuf v;
	strbuf_init(&v);
	strbuf_adds(st, "Content-Description: Delivery report\r\n"
			"Content-Type: message/delivery-status\r\n\r\n");
	strbuf_addf(&v, "dns; %s", host);
	b_field(st, "Reporting-MTA", v.s);
	if (b->orig_qid && b->orig_qid[0])
		b_field(st, "X-Tern-Queue-ID", b->orig_qid);
	if (b->envid && b->envid[0]) {
		char *e = b_xtext_decode(b->envid, strlen(b->envid));
		b_field(st, "Original-Envelope-Id", e);
		free(e);
	}
	b_date(b->arrival, d, sizeof(d));
	b_field(st, "Arrival-Date", d);
	for (size_t i = 0; i < b->nrcpts; i++) {
		const struct bounce_rcpt *r = &b->rcpts[i];
		strbuf_adds(st, "\r\n");
		if (r->orcpt && r->orcpt[0]) {
			strbuf_reset(&v);
			b_orcpt(r->orcpt, &v);
			b_field(st, "Original-Recipient", v.s);
		}
		strbuf_reset(&v);
		strbuf_addf(&v, "rfc822; %s", r->addr ? r->addr : "");
		b_field(st, "Final-Recipient", v.s);
		b_field(st, "Action", bounce_action_str(r->action));
		b_field(st, "Status", b_status(r));
		if (r->remote_mta && r->remote_mta[0]) {
			strbuf_reset(&v);
			strbuf_addf(&v, "dns; %s", r->remote_mta);
			b_field(st, "Remote-MTA", v.s);
		}
		if (r->diag && r->diag[0]) {
			strbuf_reset(&v);
			const char *ty = r->diag_type && r->diag_type[0] ? r->diag_type : "smtp";
			/* the type is an atom: anything odd becomes x-unix */
			for (const char *c = ty; *c; c++)
				if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
				      *c == '-') || c - ty > 32)
					ty = "x-unix";
			strbuf_addf(&v, "%s; %s", ty, r->diag);
			b_field(st, "Diagnostic-Code", v.s);
		}
		if (r->last_attempt) {
			b_date(r->last_attempt, d, sizeof(d));
			b_field(st, "Last-Attempt-Date", d);
		}
		if (r->action == BOUNCE_ACTION_DELAYED && r->retry_until) {
			b_date(r->retry_until, d, sizeof(d));
			b_field(st, "Will-Retry-Until", d);
		}
	}
	strbuf_free(&v);
}

/* b_in - whether needle occurs in the buffer */
static int b_in(const struct strbuf *sb, const char *needle)
{
	return sb->len && memmem(sb->s, sb->len, needle, strlen(needle)) != NULL;
}

int bounce_compose(const struct bounce_req *b, struct strbuf *out, int *eightbit, char *err, size_t errlen)
{
	int eb = 0;
	if (eightbit)
		*eightbit = 0;
	if (b == NULL || b->nrcpts == 0 || b->rcpts == NULL) {
		snprintf(err, errlen, "no recipient to report on");
		return -1;
	}
	struct strbuf host, to, text, st, orig, raw;
	strbuf_init(&host);
	strbuf_init(&to);
	strbuf_init(&text);
	strbuf_init(&st);
	strbuf_init(&orig);
	strbuf_init(&raw);
	const char *hn = b->hostname && b->hostname[0] ? b->hostname : "localhost";
	b_clean(hn, strlen(hn), &host);
	for (size_t i = 0; i < host.len; i++)
		if (host.s[i] == ' ' || host.s[i] == '<' || host.s[i] == '>' || host.s[i] == '@' || host.s[i] == '"')
			host.s[i] = '-';
	if (host.len > 255)
		host.len = 255, host.s[255] = '\0';
	b_clean(b->to ? b->to : "", b->to ? strlen(b->to) : 0, &to);

	int kind = BOUNCE_ACTION_DELIVERED;
	for (size_t i = 0; i < b->nrcpts; i++) {
		if (b->rcpts[i].action == BOUNCE_ACTION_FAILED)
			kind = BOUNCE_ACTION_FAILED;
		else if (b->rcpts[i].action == BOUNCE_ACTION_DELAYED && kind != BOUNCE_ACTION_FAILED)
			kind = BOUNCE_ACTION_DELAYED;
	}
	/* RFC 3461 4.3: RET=FULL applies when a failure is reported */
	int full = b->ret == ENV_RET_FULL && kind == BOUNCE_ACTION_FAILED;
	uint64_t full_max = b->full_max ? b->full_max : BOUNCE_FULL_MAX;
	const char *note = NULL;
	char notebuf[160];
	if (full && b->content_len > full_max) {
		full = 0;
		snprintf(notebuf, sizeof(notebuf),
			 "The original message was larger than %llu bytes; only its headers are returned.",
			 (unsigned long long)full_max);
		note = notebuf;
	}
	int have_orig = 0;
	if (b->read) {
		uint64_t max = full ? b->content_len : (b->content_len < BOUNCE_HEADERS_MAX ? b->content_len
											   : BOUNCE_HEADERS_MAX);
		if (b_read(b, max, !full, &raw) < 0) {
			note = "The original message could not be read; it is not returned.";
		} else {
			have_orig = 1;
			b_content(raw.s ? raw.s : "", raw.len, !full, &orig, &eb);
		}
	}
	strbuf_free(&raw);

	b_text(b, kind, host.s, note, &text);
	b_status_part(b, host.s, &st);

	/* the boundary must occur in no part (RFC 2046 5.1.1): random, and
	 * checked; "=_" cannot occur in quoted-printable or base64 either */
	char rnd[33], bnd[64], dashed[72];
	for (int tries = 0;; tries++) {
		b_random_hex(rnd, 24);
		snprintf(bnd, sizeof(bnd), "=_tern_%s_%d", rnd, tries);
		snprintf(dashed, sizeof(dashed), "--%s", bnd);
		if (!b_in(&text, dashed + 2) && !b_in(&st, dashed + 2) && !b_in(&orig, dashed + 2))
			break;
	}

	char date[64], mid[48];
	time_t now = b->now ? b->now : time(NULL);
	b_date(now, date, sizeof(date));
	b_random_hex(mid, 24);
	strbuf_addf(out, "From: \"Mail Delivery System\" <MAILER-DAEMON@%s>\r\n", host.s);
	struct strbuf v;
	strbuf_init(&v);
	strbuf_addf(&v, "<%s>", to.s ? to.s : "");
	b_field(out, "To", v.s);
	strbuf_reset(&v);
	strbuf_addf(&v, "%s%s", b->postmaster_copy ? "Postmaster Copy: " : "", b_subject(kind));
	b_field(out, "Subject", v.s);
	strbuf_free(&v);
	strbuf_addf(out, "Date: %s\r\n", date);
	strbuf_addf(out, "Message-ID: <%lld.%s@%s>\r\n", (long long)now, mid, host.s);
	strbuf_adds(out, "Auto-Submitted: auto-replied\r\n");
	strbuf_adds(out, "MIME-Version: 1.0\r\n");
	strbuf_addf(out, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n",
		    bnd);
	strbuf_addf(out, "Content-Transfer-Encoding: %s\r\n", eb ? "8bit" : "7bit");
	strbuf_adds(out, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");
	strbuf_addf(out, "%s\r\n", dashed);
	strbuf_add(out, text.s, text.len);
	strbuf_addf(out, "%s\r\n", dashed);
	strbuf_add(out, st.s, st.len);
	if (have_orig) {
		strbuf_addf(out, "\r\n%s\r\n", dashed);
		strbuf_addf(out, "Content-Description: %s\r\n", full ? "Undelivered Message" : "Message Headers");
		strbuf_addf(out, "Content-Type: %s\r\n", full ? "message/rfc822" : "text/rfc822-headers");
		if (eb)
			strbuf_adds(out, "Content-Transfer-Encoding: 8bit\r\n");
		strbuf_adds(out, "\r\n");
		strbuf_add(out, orig.s ? orig.s : "", orig.len);
	}
	strbuf_addf(out, "\r\n%s--\r\n", dashed);
	if (eightbit)
		*eightbit = eb;
	strbuf_free(&host);
	strbuf_free(&to);
	strbuf_free(&text);
	strbuf_free(&st);
	strbuf_free(&orig);
	return 0;
}

ssize_t bounce_read_fd(void *arg, void *buf, size_t n, uint64_t off)
{
	const struct bounce_fd *f = arg;
	for (;;) {
		ssize_t r = pread(f->fd, buf, n, f->off + (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		return r;
	}
}

/* b_copy - NUL-terminated copy of s[0..n) into out[0..outlen), truncated */
static void b_copy(char *out, size_t outlen, const char *s, size_t n)
{
	if (outlen == 0)
		return;
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, s, n);
	out[n] = '\0';
}

void bounce_diag_parse(const char *text, const char *def_status, char *status, size_t slen, char *mta, size_t mlen,
		       char *diag, size_t dlen, int *is_smtp)
{
	const char *t = text ? text : "";
	*is_smtp = 0;
	b_copy(mta, mlen, "", 0);
	size_t sl = strcspn(t, " ");
	if (b_status_ok(t, sl)) {
		b_copy(status, slen, t, sl);
		t += sl;
		while (*t == ' ')
			t++;
	} else {
		b_copy(status, slen, def_status, strlen(def_status));
		/* a bare SMTP reply: "550 5.1.1 text" or "550 text" */
		if (t[0] >= '2' && t[0] <= '5' && t[1] >= '0' && t[1] <= '9' && t[2] >= '0' && t[2] <= '9' &&
		    (t[3] == ' ' || t[3] == '-' || t[3] == '\0')) {
			*is_smtp = 1;
			const char *e = t[3] ? t + 4 : t + 3;
			size_t el = strcspn(e, " ");
			if (b_status_ok(e, el) && e[0] == t[0])
				b_copy(status, slen, e, el);
			b_copy(diag, dlen, t, strlen(t));
			return;
		}
	}
	if (strncmp(t, "host ", 5) == 0) {
		const char *h = t + 5;
		size_t hl = strcspn(h, " [");
		b_copy(mta, mlen, h, hl);
		const char *said = strstr(h, " said: ");
		if (said) {
			const char *rep = said + 7;
			const char *end = strstr(rep, " (in reply");
			b_copy(diag, dlen, rep, end ? (size_t)(end - rep) : strlen(rep));
			*is_smtp = 1;
			return;
		}
	}
	b_copy(diag, dlen, t, strlen(t));
}
