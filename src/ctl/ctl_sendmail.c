/*
 * ctl_sendmail - the sendmail(1) interface: `ternctl sendmail [options]
 * [recipients...]`, or ternctl installed as "sendmail". Programs (cron,
 * mail(1), git send-email, PHP's mail()) hand us a message on standard
 * input; we submit it through ternd like any SMTP client, so the same
 * checks, the same durable queue and the same "250 ... queued as" decide
 * whether it was accepted.
 *
 *   -t          recipients also from To:, Cc:, Bcc: (Bcc: is always removed)
 *   -i, -oi     a line with a single "." does not end the message
 *   -f SENDER   envelope sender (-r is the same); "" or "<>" = null sender;
 *               default: the invoking user @ hostname
 *   -F NAME     full name for the From: header we add when there is none
 *   -C FILE     configuration file
 *   -v          print the queue ID
 *   -bm, -oem, -oee, -oep, -oeq, -oew, -odi, -odb, -n, -U, -B TYPE,
 *   -N DSN, -R RET, -V ENVID, -h N, -L TAG: accepted and ignored
 * Missing From:, Date: and Message-ID: are added; line ends become CRLF;
 * a bare CR ends a line and lines over 998 octets are broken (ternd would
 * refuse both).
 *
 * Delivery: connect to the control socket, request "smtp", then plain
 * SMTP (one command at a time; no pipelining): 220, EHLO, MAIL, RCPT...,
 * DATA, the dot-stuffed message, ".", QUIT. Either every recipient is
 * accepted and the message is sent, or nothing is (no partial delivery
 * for a caller that will retry).
 * Exit codes (sysexits.h): 0 accepted; 64 usage; 65 message refused (5xx)
 * or malformed; 67 a recipient refused (5xx); 75 temporary failure (4xx,
 * ternd not running, connection lost): the caller must keep the message.
 *
 * Exports: ctl_sendmail_run (ternctl.h).
 * Trusts: the message and arguments are the caller's and checked (addresses
 * through the RFC 5321 path parser, -F cleaned of control characters);
 * ternd's replies are parsed by smtp_replyparse and printed escaped.
 * Implements: RFC 5321 (client side of a submission), RFC 5322 3.3, 3.4,
 * 3.6 (date, address lists, the header fields we add), RFC 2047 (a
 * non-ASCII full name), RFC 6152 (BODY=8BITMIME), RFC 6531 (SMTPUTF8).
 */
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/str.h"
#include "core/xalloc.h"
#include "ctl/ternctl.h"
#include "smtp/smtp_parse.h"
#include "smtp/smtp_replyparse.h"

#define CTL_SM_RCPT_MAX 10000
#define CTL_SM_TIMEOUT_SEC 600       /* a reply, incl. the queue's fsync after "." */
#define CTL_SM_INPUT_MIN (1L << 20)  /* input cap floor; ternd enforces the real limit */
#define CTL_SM_FULLNAME_MAX 256
#define CTL_SM_LINE_MAX 998          /* RFC 5322 2.1.1, without the CRLF */

struct ctl_sm {
	const char *prog;     /* for messages: "sendmail" or "ternctl sendmail" */
	int extract;          /* -t */
	int dot_ends;         /* no -i: a lone "." ends the input */
	int verbose;          /* -v */
	const char *sender_arg;
	const char *fullname;
	const char *hostname;
	char user_addr[SMTP_PATH_MAX + 1]; /* invoking user @ hostname */
	struct smtp_path sender;           /* is_null for <> */
	char **rcpts;                      /* canonical addresses */
	int *rcpt_utf8;
	size_t nrcpts;
	struct strbuf msg;                 /* the message, CRLF, not yet dot-stuffed */
	int eightbit;                      /* a byte >= 0x80 in the message */
};

static int ctl_sm_usage(const struct ctl_sm *sm)
{
	fprintf(stderr,
		"usage: %s [-t] [-i] [-f SENDER] [-F NAME] [-C FILE] [-v] [RECIPIENT...]\n"
		"The message is read from standard input.\n",
		sm->prog);
	return EX_USAGE;
}

/* ctl_sm_free - release what the run allocated */
static void ctl_sm_free(struct ctl_sm *sm)
{
	for (size_t i = 0; i < sm->nrcpts; i++)
		free(sm->rcpts[i]);
	free(sm->rcpts);
	free(sm->rcpt_utf8);
	strbuf_free(&sm->msg);
}

/*
 * ctl_sm_addr - an address given by the caller, "local@domain" or a bare
 * local part (which gets "@hostname", as sendmail's myorigin), through the
 * RFC 5321 path parser. allow_null for the sender. 0, or -1 after a message.
 */
static int ctl_sm_addr(const struct ctl_sm *sm, const char *s, size_t n, int allow_null, struct smtp_path *out)
{
	/* "<addr>" as well as "addr" */
	if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
		s++;
		n -= 2;
	}
	struct strbuf b;
	strbuf_init(&b);
	strbuf_addc(&b, '<');
	strbuf_add(&b, s, n);
	int bare = n > 0 && memchr(s, '@', n) == NULL;
	if (bare)
		strbuf_addf(&b, "@%s", sm->hostname);
	strbuf_addc(&b, '>');
	const char *detail = NULL;
	memset(out, 0, sizeof(*out));
	enum smtp_parse_error e = SMTP_PARSE_PATH_SYNTAX;
	if (b.len <= SMTP_PATH_MAX + 2 && memchr(s, '\0', n) == NULL)
		e = smtp_parse_path(b.s, b.len, allow_null, out, &detail);
	strbuf_free(&b);
	if (e == SMTP_PARSE_OK && !out->is_postmaster && (out->is_null || out->domain[0] != '\0'))
		return 0;
	fprintf(stderr, "%s: invalid address \"", sm->prog);
	ternctl_print_safe(stderr, s, n > 300 ? 300 : n);
	fprintf(stderr, "\": %s\n", detail ? detail : e == SMTP_PARSE_OK ? "not local@domain" : smtp_parse_error_str(e));
	return -1;
}

/* ctl_sm_rcpt_add - one recipient (deduplicated, case-insensitively); 0 or -1 */
static int ctl_sm_rcpt_add(struct ctl_sm *sm, const char *s, size_t n)
{
	struct smtp_path p;
	if (ctl_sm_addr(sm, s, n, 0, &p) < 0)
		return -1;
	for (size_t i = 0; i < sm->nrcpts; i++)
		if (str_casecmp_ascii(sm->rcpts[i], p.addr) == 0)
			return 0;
	if (sm->nrcpts == CTL_SM_RCPT_MAX) {
		fprintf(stderr, "%s: more than %d recipients\n", sm->prog, CTL_SM_RCPT_MAX);
		return -1;
	}
	sm->rcpts = xrealloc(sm->rcpts, (sm->nrcpts + 1) * sizeof(*sm->rcpts));
	sm->rcpt_utf8 = xrealloc(sm->rcpt_utf8, (sm->nrcpts + 1) * sizeof(*sm->rcpt_utf8));
	sm->rcpt_utf8[sm->nrcpts] = p.utf8;
	sm->rcpts[sm->nrcpts++] = xstrdup(p.addr);
	return 0;
}

/* ctl_sm_trim - strip blanks (and the CR/LF of folded lines) at both ends */
static void ctl_sm_trim(const char **p, size_t *n)
{
	while (*n > 0 && (**p == ' ' || **p == '\t' || **p == '\r' || **p == '\n')) {
		(*p)++;
		(*n)--;
	}
	while (*n > 0 && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t' || (*p)[*n - 1] == '\r' || (*p)[*n - 1] == '\n'))
		(*n)--;
}

/* ctl_sm_addrlist_elem - one element of an address list: the <addr> or the bare text */
static int ctl_sm_addrlist_elem(struct ctl_sm *sm, struct strbuf *bare, struct strbuf *angle, int *have_angle)
{
	const char *p = *have_angle ? angle->s : bare->s;
	size_t n = *have_angle ? angle->len : bare->len;
	int r = 0;
	if (p != NULL) {
		ctl_sm_trim(&p, &n);
		/* an obsolete source route "@a,@b:user@c" is dropped (RFC 5322 4.4) */
		if (*have_angle && n > 0 && p[0] == '@') {
			const char *colon = memchr(p, ':', n);
			if (colon) {
				n -= (size_t)(colon + 1 - p);
				p = colon + 1;
			}
		}
		if (n > 0)
			r = ctl_sm_rcpt_add(sm, p, n);
	}
	strbuf_reset(bare);
	strbuf_reset(angle);
	*have_angle = 0;
	return r;
}

/*
 * ctl_sm_addrlist - the addresses of an RFC 5322 address-list (To:, Cc:,
 * Bcc: value): "Name <a@b>", "a@b (comment)", "\"x, y\" <a@b>", groups
 * "team: a@b, c@d;" and "undisclosed-recipients:;". Quoted strings and
 * comments are skipped with their escapes; a comma or ';' ends an element.
 */
static int ctl_sm_addrlist(struct ctl_sm *sm, const char *v, size_t n)
{
	struct strbuf bare, angle;
	strbuf_init(&bare);
	strbuf_init(&angle);
	int have_angle = 0, r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		char c = v[i];
		if (c == '"') {
			/* a quoted string: kept (it may be a quoted local part) */
			strbuf_addc(&bare, c);
			for (i++; i < n && v[i] != '"'; i++) {
				if (v[i] == '\\' && i + 1 < n)
					strbuf_addc(&bare, v[i++]);
				strbuf_addc(&bare, v[i]);
			}
			strbuf_addc(&bare, '"');
		} else if (c == '(') {
			int depth = 1;
			for (i++; i < n && depth > 0; i++) {
				if (v[i] == '\\')
					i++;
				else if (v[i] == '(')
					depth++;
				else if (v[i] == ')')
					depth--;
			}
			i--;
			strbuf_addc(&bare, ' ');
		} else if (c == '<') {
			strbuf_reset(&angle);
			int inq = 0;
			for (i++; i < n && (inq || v[i] != '>'); i++) {
				if (v[i] == '"')
					inq = !inq;
				else if (inq && v[i] == '\\' && i + 1 < n)
					strbuf_addc(&angle, v[i++]);
				strbuf_addc(&angle, v[i]);
			}
			have_angle = 1;
		} else if (c == ',' || c == ';') {
			r = ctl_sm_addrlist_elem(sm, &bare, &angle, &have_angle);
		} else if (c == ':') {
			/* "display-name:" opens a group: the name is not an address */
			strbuf_reset(&bare);
		} else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			strbuf_addc(&bare, ' ');
		} else {
			strbuf_addc(&bare, c);
		}
	}
	if (r == 0)
		r = ctl_sm_addrlist_elem(sm, &bare, &angle, &have_angle);
	strbuf_free(&bare);
	strbuf_free(&angle);
	return r;
}

/* ctl_sm_field_name_len - length of "name" if line starts a header field "name:", else 0 */
static size_t ctl_sm_field_name_len(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && p[i] > 32 && p[i] < 127 && p[i] != ':')
		i++;
	return i > 0 && i < n && p[i] == ':' ? i : 0;
}

/* ctl_sm_field_is - is the field's name (nlen bytes at p) name, case-insensitively? */
static int ctl_sm_field_is(const char *p, size_t nlen, const char *name)
{
	return nlen == strlen(name) && str_ncasecmp_ascii(p, name, nlen) == 0;
}

/* one header field of the input: its lines, and its name */
struct ctl_sm_field {
	size_t start, len; /* in the header text: the field's lines, CRLF after each */
	size_t nlen;       /* length of its name */
};

/* ctl_sm_quote_name - a -F full name as an RFC 5322 display name */
static void ctl_sm_quote_name(const char *name, struct strbuf *out)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char clean[CTL_SM_FULLNAME_MAX + 1];
	size_t n = 0;
	int ascii = 1, special = 0;
	/* control characters (a CR/LF would inject header fields) become spaces */
	for (const char *p = name; *p && n < CTL_SM_FULLNAME_MAX; p++) {
		unsigned char c = (unsigned char)*p;
		clean[n++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
		if (c >= 0x80)
			ascii = 0;
		else if (strchr("()<>[]:;@\\,.\"", c) != NULL)
			special = 1;
	}
	clean[n] = '\0';
	if (!ascii) {
		/* RFC 2047 B encoding, in words of at most 45 input bytes */
		for (size_t i = 0; i < n;) {
			size_t take = n - i > 45 ? 45 : n - i;
			/* do not split a UTF-8 sequence */
			while (take < n - i && take > 1 && ((unsigned char)clean[i + take] & 0xc0) == 0x80)
				take--;
			strbuf_adds(out, i ? " =?UTF-8?B?" : "=?UTF-8?B?");
			for (size_t j = 0; j < take; j += 3) {
				uint32_t v = (uint32_t)(unsigned char)clean[i + j] << 16;
				if (j + 1 < take)
					v |= (uint32_t)(unsigned char)clean[i + j + 1] << 8;
				if (j + 2 < take)
					v |= (unsigned char)clean[i + j + 2];
				strbuf_addc(out, b64[(v >> 18) & 63]);
				strbuf_addc(out, b64[(v >> 12) & 63]);
				strbuf_addc(out, j + 1 < take ? b64[(v >> 6) & 63] : '=');
				strbuf_addc(out, j + 2 < take ? b64[v & 63] : '=');
			}
			strbuf_adds(out, "?=");
			i += take;
		}
	} else if (special) {
		strbuf_addc(out, '"');
		for (size_t i = 0; i < n; i++) {
			if (clean[i] == '"' || clean[i] == '\\')
				strbuf_addc(out, '\\');
			strbuf_addc(out, clean[i]);
		}
		strbuf_addc(out, '"');
	} else {
		strbuf_add(out, clean, n);
	}
}

/* ctl_sm_add_missing - From:, Date:, Message-ID: the message lacks */
static void ctl_sm_add_missing(const struct ctl_sm *sm, int has_from, int has_date, int has_msgid, struct strbuf *h)
{
	if (!has_from) {
		const char *mbox = sm->sender.is_null ? sm->user_addr : sm->sender.addr;
		strbuf_adds(h, "From: ");
		if (sm->fullname && sm->fullname[0]) {
			ctl_sm_quote_name(sm->fullname, h);
			strbuf_addf(h, " <%s>\r\n", mbox);
		} else {
			strbuf_addf(h, "%s\r\n", mbox);
		}
	}
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	if (!has_date) {
		char d[64];
		/* no setlocale() in ternctl: %a and %b are the C locale's English */
		strftime(d, sizeof(d), "%a, %d %b %Y %H:%M:%S %z", &tm);
		strbuf_addf(h, "Date: %s\r\n", d);
	}
	if (!has_msgid) {
		uint64_t rnd = 0;
		if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			rnd = (uint64_t)now ^ ((uint64_t)getpid() << 32);
		char stamp[32];
		strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
		strbuf_addf(h, "Message-ID: <%s.%ld.%016llx@%s>\r\n", stamp, (long)getpid(), (unsigned long long)rnd,
			    sm->hostname);
	}
}

/*
 * ctl_sm_put_line - one input line as SMTP-safe lines ending in CRLF: a CR
 * inside the line ends a line (ternd refuses a bare CR, RFC 5321 2.3.8),
 * and a line longer than 998 octets (RFC 5322 2.1.1) is broken; in the
 * header a piece continues with a space, as a folded field. Programs'
 * output (cron) is not lost for the sake of a line length.
 */
static void ctl_sm_put_line(struct strbuf *out, const char *p, size_t n, int header)
{
	size_t col = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' || col == CTL_SM_LINE_MAX) {
			strbuf_adds(out, header ? "\r\n " : "\r\n");
			col = header ? 1 : 0;
			if (p[i] == '\r')
				continue;
		}
		strbuf_addc(out, p[i]);
		col++;
	}
	strbuf_adds(out, "\r\n");
}

/*
 * ctl_sm_build - the raw input into sm->msg: line ends CRLF, Bcc: removed,
 * missing header fields added, with -t the header recipients collected;
 * without -i a lone "." line ends the input. A leading mbox "From " line
 * is dropped. 0, or an exit code.
 */
static int ctl_sm_build(struct ctl_sm *sm, const char *in, size_t len)
{
	struct strbuf head, body;
	strbuf_init(&head);
	strbuf_init(&body);
	struct ctl_sm_field *fields = NULL;
	size_t nfields = 0;
	int in_head = 1, first = 1;
	size_t pos = 0;
	while (pos < len) {
		const char *p = in + pos;
		const char *nl = memchr(p, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - p) : len - pos;
		pos += n + (nl ? 1 : 0);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (sm->dot_ends && n == 1 && p[0] == '.')
			break;
		if (first && n >= 5 && memcmp(p, "From ", 5) == 0) {
			first = 0;
			continue;
		}
		first = 0;
		if (in_head) {
			size_t nlen;
			if (n == 0) {
				in_head = 0;
				continue;
			}
			if ((p[0] == ' ' || p[0] == '\t') && nfields > 0) {
				size_t before = head.len;
				ctl_sm_put_line(&head, p, n, 1);
				fields[nfields - 1].len += head.len - before;
				continue;
			}
			if ((nlen = ctl_sm_field_name_len(p, n)) > 0) {
				fields = xrealloc(fields, (nfields + 1) * sizeof(*fields));
				fields[nfields].start = head.len;
				fields[nfields].nlen = nlen;
				ctl_sm_put_line(&head, p, n, 1);
				fields[nfields].len = head.len - fields[nfields].start;
				nfields++;
				continue;
			}
			in_head = 0; /* no blank line: the body starts here */
		}
		ctl_sm_put_line(&body, p, n, 0);
	}

	int has_from = 0, has_date = 0, has_msgid = 0, rc = 0;
	for (size_t i = 0; i < nfields && rc == 0; i++) {
		const char *f = head.s + fields[i].start;
		size_t nlen = fields[i].nlen;
		int bcc = ctl_sm_field_is(f, nlen, "Bcc");
		if (sm->extract && (bcc || ctl_sm_field_is(f, nlen, "To") || ctl_sm_field_is(f, nlen, "Cc")) &&
		    ctl_sm_addrlist(sm, f + nlen + 1, fields[i].len - nlen - 1) < 0)
			rc = EX_DATAERR;
		has_from |= ctl_sm_field_is(f, nlen, "From");
		has_date |= ctl_sm_field_is(f, nlen, "Date");
		has_msgid |= ctl_sm_field_is(f, nlen, "Message-ID");
		/* Bcc: recipients must not see each other: the field goes */
		if (!bcc)
			strbuf_add(&sm->msg, f, fields[i].len);
	}
	if (rc == 0) {
		ctl_sm_add_missing(sm, has_from, has_date, has_msgid, &sm->msg);
		strbuf_adds(&sm->msg, "\r\n");
		strbuf_add(&sm->msg, body.s ? body.s : "", body.len);
		for (size_t i = 0; i < sm->msg.len && !sm->eightbit; i++)
			sm->eightbit = (unsigned char)sm->msg.s[i] >= 0x80;
	}
	free(fields);
	strbuf_free(&head);
	strbuf_free(&body);
	return rc;
}

/* ctl_sm_read_input - all of standard input, capped; 0 or an exit code */
static int ctl_sm_read_input(const struct ctl_sm *sm, size_t cap, struct strbuf *in)
{
	char buf[65536];
	for (;;) {
		ssize_t r = read(STDIN_FILENO, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "%s: reading the message: %s\n", sm->prog, strerror(errno));
			return EX_IOERR;
		}
		if (r == 0)
			return 0;
		if (in->len + (size_t)r > cap) {
			fprintf(stderr, "%s: message larger than %zu bytes; not sent\n", sm->prog, cap);
			return EX_DATAERR;
		}
		strbuf_add(in, buf, (size_t)r);
	}
}

/* --- the SMTP client over the control socket --- */

struct ctl_sm_conn {
	const struct ctl_sm *sm;
	int fd;
	int greeted;
	int lost;  /* the connection failed: no QUIT */
	int quiet; /* no messages from ctl_sm_reply (QUIT) */
	struct smtp_replyparse rp;
	char buf[4096];
	size_t off, len;
	struct smtp_rep rep;
};

/* ctl_sm_send - every byte to ternd; 0 or -1 after a message */
static int ctl_sm_send(struct ctl_sm_conn *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fprintf(stderr, "%s: sending to ternd: %s; the message was NOT sent\n", c->sm->prog,
				strerror(errno));
			c->lost = 1;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* ctl_sm_print_rep - the server's reply on stderr, one line per reply line */
static void ctl_sm_print_rep(const struct ctl_sm_conn *c)
{
	for (size_t i = 0; i < c->rep.nstored; i++) {
		fprintf(stderr, "%s: ternd said: %d%c", c->sm->prog, c->rep.code, i + 1 < c->rep.nlines ? '-' : ' ');
		const char *l = smtp_rep_line(&c->rep, i);
		ternctl_print_safe(stderr, l, strlen(l));
		fputc('\n', stderr);
	}
}

/*
 * ctl_sm_reply - read one reply into c->rep; 0, or -1 after a message
 * (connection lost, timeout, garbage, or the control socket's "ERR").
 */
static int ctl_sm_reply(struct ctl_sm_conn *c)
{
	for (;;) {
		if (c->off < c->len) {
			if (!c->greeted && c->off == 0 && c->len >= 4 && memcmp(c->buf, "ERR ", 4) == 0) {
				/* the control socket refused the "smtp" request */
				size_t n = c->len - 4;
				while (n > 0 && c->buf[4 + n - 1] == '\n')
					n--;
				fprintf(stderr, "%s: ternd refused local submission: ", c->sm->prog);
				ternctl_print_safe(stderr, c->buf + 4, n);
				fputc('\n', stderr);
				c->lost = 1;
				return -1;
			}
			size_t used = 0;
			enum smtp_replyparse_status st =
				smtp_replyparse_feed(&c->rp, c->buf + c->off, c->len - c->off, &used, &c->rep);
			c->off += used;
			if (st == SMTP_REPLYPARSE_REPLY) {
				c->greeted = 1;
				return 0;
			}
			if (st == SMTP_REPLYPARSE_ERROR) {
				if (!c->quiet)
					fprintf(stderr, "%s: malformed reply from ternd (%s)\n", c->sm->prog,
						smtp_replyparse_error_str(c->rp.error));
				c->lost = 1;
				return -1;
			}
			c->off = c->len;
		}
		ssize_t r;
		do
			r = read(c->fd, c->buf, sizeof(c->buf));
		while (r < 0 && errno == EINTR);
		if (r <= 0) {
			if (!c->quiet)
				fprintf(stderr, "%s: %s ternd%s%s\n", c->sm->prog,
					r == 0 ? "connection closed by" : "reading from", r == 0 ? "" : ": ",
					r == 0 ? "" : (errno == EAGAIN || errno == EWOULDBLOCK) ? "timeout" : strerror(errno));
			c->lost = 1;
			return -1;
		}
		c->off = 0;
		c->len = (size_t)r;
	}
}

/* ctl_sm_fail_code - the exit code for a refusal at a stage */
static int ctl_sm_fail_code(int code, int rcpt_stage)
{
	if (code / 100 == 4)
		return EX_TEMPFAIL;
	return rcpt_stage ? EX_NOUSER : EX_DATAERR;
}

/*
 * ctl_sm_cmd - send one command and read its reply; 0 if the code is
 * expected, else an exit code after printing the reply (or -1 -> 75 for
 * a lost connection).
 */
static int ctl_sm_cmd(struct ctl_sm_conn *c, const char *line, int want, int rcpt_stage, const char *what)
{
	if (line) {
		struct strbuf b;
		strbuf_init(&b);
		strbuf_addf(&b, "%s\r\n", line);
		int r = ctl_sm_send(c, b.s, b.len);
		strbuf_free(&b);
		if (r < 0)
			return EX_TEMPFAIL;
	}
	if (ctl_sm_reply(c) < 0) {
		fprintf(stderr, "%s: the message was NOT sent\n", c->sm->prog);
		return EX_TEMPFAIL;
	}
	if (c->rep.code == want || (want == 250 && c->rep.code == 251))
		return 0;
	fprintf(stderr, "%s: %s refused; the message was NOT sent\n", c->sm->prog, what);
	ctl_sm_print_rep(c);
	return ctl_sm_fail_code(c->rep.code, rcpt_stage);
}

/* ctl_sm_send_data - the message, dot-stuffed (RFC 5321 4.5.2), and "." */
static int ctl_sm_send_data(struct ctl_sm_conn *c)
{
	const struct strbuf *m = &c->sm->msg;
	struct strbuf out;
	strbuf_init(&out);
	size_t pos = 0;
	int r = 0;
	while (pos < m->len && r == 0) {
		const char *p = m->s + pos;
		const char *nl = memchr(p, '\n', m->len - pos);
		size_t n = nl ? (size_t)(nl - p) + 1 : m->len - pos;
		if (p[0] == '.')
			strbuf_addc(&out, '.');
		strbuf_add(&out, p, n);
		pos += n;
		if (out.len >= 65536) {
			r = ctl_sm_send(c, out.s, out.len);
			strbuf_reset(&out);
		}
	}
	if (r == 0) {
		strbuf_adds(&out, ".\r\n");
		r = ctl_sm_send(c, out.s, out.len);
	}
	strbuf_free(&out);
	return r;
}

/* ctl_sm_submit - the SMTP dialogue with ternd; an exit code */
static int ctl_sm_submit(struct ctl_sm *sm, struct ternctl *t)
{
	int fd = ternctl_connect(t);
	if (fd < 0) {
		fprintf(stderr, "%s: cannot reach ternd at %s: %s (is ternd running?); the message was NOT sent\n",
			sm->prog, t->conf.control_socket ? t->conf.control_socket : "(unset)", strerror(errno));
		return EX_TEMPFAIL;
	}
	struct timeval tv = {.tv_sec = CTL_SM_TIMEOUT_SEC, .tv_usec = 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	struct ctl_sm_conn *c = xcalloc(1, sizeof(*c));
	c->sm = sm;
	c->fd = fd;
	smtp_replyparse_init(&c->rp);

	int rc;
	/* the request line, then nothing until the greeting: the control
	 * socket reads exactly this line and hands the rest to the session */
	if (ctl_sm_send(c, "smtp\n", 5) < 0) {
		rc = EX_TEMPFAIL;
		goto out;
	}
	if ((rc = ctl_sm_cmd(c, NULL, 220, 0, "the connection")) != 0) {
		rc = rc == EX_DATAERR ? EX_TEMPFAIL : rc; /* a 554 greeting: not the message's fault */
		goto out;
	}
	if ((rc = ctl_sm_cmd(c, "EHLO localhost", 250, 0, "EHLO")) != 0)
		goto out;
	struct smtp_caps caps;
	memset(&caps, 0, sizeof(caps));
	smtp_replyparse_ehlo(&c->rep, &caps);

	int utf8 = sm->sender.utf8;
	for (size_t i = 0; i < sm->nrcpts; i++)
		utf8 |= sm->rcpt_utf8[i];
	struct strbuf cmd;
	strbuf_init(&cmd);
	strbuf_addf(&cmd, "MAIL FROM:<%s>", sm->sender.is_null ? "" : sm->sender.addr);
	if (sm->eightbit && (caps.flags & SMTP_CAP_8BITMIME))
		strbuf_adds(&cmd, " BODY=8BITMIME");
	if (utf8 && (caps.flags & SMTP_CAP_SMTPUTF8))
		strbuf_adds(&cmd, " SMTPUTF8");
	rc = ctl_sm_cmd(c, cmd.s, 250, 0, "the sender");
	for (size_t i = 0; i < sm->nrcpts && rc == 0; i++) {
		strbuf_reset(&cmd);
		strbuf_addf(&cmd, "RCPT TO:<%s>", sm->rcpts[i]);
		char what[SMTP_PATH_MAX + 32];
		snprintf(what, sizeof(what), "recipient <%s>", sm->rcpts[i]);
		rc = ctl_sm_cmd(c, cmd.s, 250, 1, what);
	}
	strbuf_free(&cmd);
	/* all or nothing: a caller told of a failure will send again */
	if (rc == 0)
		rc = ctl_sm_cmd(c, "DATA", 354, 0, "DATA");
	if (rc == 0) {
		if (ctl_sm_send_data(c) < 0)
			rc = EX_TEMPFAIL;
		else
			rc = ctl_sm_cmd(c, NULL, 250, 0, "the message");
		if (rc == 0 && sm->verbose) {
			const char *l = c->rep.nstored ? smtp_rep_line(&c->rep, 0) : "";
			const char *q = strstr(l, "queued as ");
			printf("%s: queued as %s\n", sm->prog, q ? q + 10 : "(unknown)");
		}
	}
	if (c->greeted && !c->lost) {
		/* a polite end; its reply changes nothing, so errors stay quiet */
		static const char quit[] = "QUIT\r\n";
		c->quiet = 1;
		if (send(fd, quit, sizeof(quit) - 1, MSG_NOSIGNAL) == (ssize_t)sizeof(quit) - 1)
			(void)ctl_sm_reply(c);
	}
out:
	free(c);
	close(fd);
	return rc;
}

/* ctl_sm_options - sendmail's command line into sm; 0 or an exit code */
static int ctl_sm_options(struct ctl_sm *sm, struct ternctl *t, int argc, char **argv)
{
	int opt;
	optind = 0; /* glibc: re-initialise; argv[0] is the program */
	opterr = 0;
	while ((opt = getopt(argc, argv, ":tivnUf:r:F:o:b:B:N:R:V:C:h:L:")) != -1) {
		switch (opt) {
		case 't':
			sm->extract = 1;
			break;
		case 'i':
			sm->dot_ends = 0;
			break;
		case 'v':
			sm->verbose = 1;
			break;
		case 'f':
		case 'r':
			sm->sender_arg = optarg;
			break;
		case 'F':
			sm->fullname = optarg;
			break;
		case 'C':
			t->conf_path = optarg;
			break;
		case 'o':
			if (strcmp(optarg, "i") == 0) {
				sm->dot_ends = 0;
			} else if (strcmp(optarg, "em") != 0 && strcmp(optarg, "ee") != 0 && strcmp(optarg, "ep") != 0 &&
				   strcmp(optarg, "eq") != 0 && strcmp(optarg, "ew") != 0 && strcmp(optarg, "di") != 0 &&
				   strcmp(optarg, "db") != 0) {
				fprintf(stderr, "%s: unsupported option -o%s\n", sm->prog, optarg);
				return ctl_sm_usage(sm);
			}
			break;
		case 'b':
			if (strcmp(optarg, "m") != 0) {
				fprintf(stderr, "%s: unsupported mode -b%s (only -bm)\n", sm->prog, optarg);
				return ctl_sm_usage(sm);
			}
			break;
		case 'n': case 'U': case 'B': case 'N': case 'R': case 'V': case 'h': case 'L':
			break; /* compatibility: nothing to do */
		case ':':
			fprintf(stderr, "%s: option -%c needs an argument\n", sm->prog, optopt);
			return ctl_sm_usage(sm);
		default:
			fprintf(stderr, "%s: unknown option -%c\n", sm->prog, optopt);
			return ctl_sm_usage(sm);
		}
	}
	return 0;
}

int ctl_sendmail_run(struct ternctl *t, int argc, char **argv, const char *progname)
{
	struct ctl_sm sm;
	memset(&sm, 0, sizeof(sm));
	sm.prog = progname;
	sm.dot_ends = 1;
	strbuf_init(&sm.msg);
	int rc = ctl_sm_options(&sm, t, argc, argv);
	if (rc != 0)
		return rc;
	if (optind >= argc && !sm.extract) {
		fprintf(stderr, "%s: no recipients given (name them, or use -t)\n", sm.prog);
		return ctl_sm_usage(&sm);
	}
	if (ternctl_conf_load(t) < 0) {
		fprintf(stderr, "%s: configuration error; the message was NOT sent\n", sm.prog);
		return EX_CONFIG;
	}
	sm.hostname = t->conf.hostname;

	struct passwd *pw = getpwuid(getuid());
	if (pw && pw->pw_name && pw->pw_name[0])
		snprintf(sm.user_addr, sizeof(sm.user_addr), "%s@%s", pw->pw_name, sm.hostname);
	else
		snprintf(sm.user_addr, sizeof(sm.user_addr), "uid%lu@%s", (unsigned long)getuid(), sm.hostname);
	const char *s = sm.sender_arg ? sm.sender_arg : sm.user_addr;
	if (ctl_sm_addr(&sm, s, strlen(s), 1, &sm.sender) < 0) {
		if (!sm.sender_arg)
			fprintf(stderr, "%s: use -f to give a sender address\n", sm.prog);
		return EX_USAGE;
	}
	if (!sm.sender_arg && !sm.sender.is_null)
		snprintf(sm.user_addr, sizeof(sm.user_addr), "%s", sm.sender.addr);
	for (int i = optind; i < argc; i++) {
		/* one argument may hold a comma-separated list, as in sendmail */
		if (ctl_sm_addrlist(&sm, argv[i], strlen(argv[i])) < 0) {
			ctl_sm_free(&sm);
			return EX_USAGE;
		}
	}

	size_t cap = (size_t)t->conf.max_message_size;
	cap = cap + cap / 4 + 65536; /* LF-only input grows by its CRs; ternd checks the real size */
	if (cap < (size_t)CTL_SM_INPUT_MIN)
		cap = CTL_SM_INPUT_MIN;
	struct strbuf in;
	strbuf_init(&in);
	rc = ctl_sm_read_input(&sm, cap, &in);
	if (rc == 0)
		rc = ctl_sm_build(&sm, in.s ? in.s : "", in.len);
	strbuf_free(&in);
	if (rc == 0 && sm.nrcpts == 0) {
		fprintf(stderr, "%s: no recipient addresses found in the message header; not sent\n", sm.prog);
		rc = EX_DATAERR;
	}
	if (rc == 0)
		rc = ctl_sm_submit(&sm, t);
	ctl_sm_free(&sm);
	return rc;
}
