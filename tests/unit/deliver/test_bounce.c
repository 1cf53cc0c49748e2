/*
 * test_bounce - DSN composition: the message is parsed back here (header
 * fields, the three MIME parts, each delivery-status field), RET=FULL vs
 * HDRS and the size cap, hostile diagnostics and addresses (CRLF
 * injection, 5000-octet lines, 8-bit, xtext NUL), content with bare line
 * ends, the boundary, result-text parsing, and a cross-check with
 * Python's email parser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "deliver/bounce.h"

struct mem {
	const char *p;
	size_t n;
	int fail;
};

/* mem_read - bounce_read_fn over memory */
static ssize_t mem_read(void *arg, void *buf, size_t n, uint64_t off)
{
	struct mem *m = arg;
	if (m->fail)
		return -1;
	if (off >= m->n)
		return 0;
	size_t k = m->n - off < n ? m->n - off : n;
	memcpy(buf, m->p + off, k);
	return (ssize_t)k;
}

static const char orig_msg[] = "From: Sender <s@example.net>\r\n"
			       "To: alice@example.test\r\n"
			       "Subject: hello\r\n"
			       "\r\n"
			       "body line one\r\n"
			       "body line two\r\n";

/* check_lines - CRLF only, no line over 998 octets */
static void check_lines(const char *s, size_t n)
{
	size_t col = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\r') {
			assert_true(i + 1 < n && s[i + 1] == '\n');
			i++;
			col = 0;
			continue;
		}
		assert_true(s[i] != '\n');
		col++;
		assert_true(col <= 998);
	}
	assert_int_equal(col, 0); /* ends with CRLF */
}

/* hdr - the unfolded value of the first header field name in the header
 * section starting at s (malloc'd), NULL when absent */
static char *hdr(const char *s, const char *name)
{
	const char *end = strstr(s, "\r\n\r\n");
	if (end == NULL)
		end = s + strlen(s);
	size_t nl = strlen(name);
	const char *p = s;
	while (p < end) {
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			char *out = malloc(4096);
			size_t k = 0;
			for (; v < end + 2 && *v && k < 4095; v++) {
				if (v[0] == '\r' && v[1] == '\n') {
					if (v[2] == ' ' || v[2] == '\t') {
						v += 1;
						continue;
					}
					break;
				}
				out[k++] = *v;
			}
			out[k] = '\0';
			return out;
		}
		p = strstr(p, "\r\n");
		if (p == NULL)
			break;
		p += 2;
	}
	return NULL;
}

struct parsed {
	char *msg;
	char *boundary;
	char *part[4];
	size_t nparts;
};

/* parse - split a composed DSN into its parts (each part's headers+body) */
static void parse(const char *msg, struct parsed *ps)
{
	memset(ps, 0, sizeof(*ps));
	ps->msg = strdup(msg);
	char *ct = hdr(msg, "Content-Type");
	assert_non_null(ct);
	assert_non_null(strstr(ct, "multipart/report"));
	assert_non_null(strstr(ct, "report-type=delivery-status"));
	char *b = strstr(ct, "boundary=\"");
	assert_non_null(b);
	b += 10;
	char *q = strchr(b, '"');
	assert_non_null(q);
	ps->boundary = strndup(b, (size_t)(q - b));
	free(ct);
	char delim[128];
	snprintf(delim, sizeof(delim), "\r\n--%s", ps->boundary);
	const char *p = strstr(msg, delim);
	assert_non_null(p);
	for (;;) {
		p += strlen(delim);
		if (strncmp(p, "--", 2) == 0)
			break;
		assert_true(strncmp(p, "\r\n", 2) == 0);
		p += 2;
		const char *nx = strstr(p, delim);
		assert_non_null(nx);
		assert_true(ps->nparts < 4);
		ps->part[ps->nparts++] = strndup(p, (size_t)(nx - p));
		p = nx;
	}
	/* the boundary occurs nowhere but in delimiters */
	size_t count = 0;
	for (const char *x = msg; (x = strstr(x, ps->boundary)) != NULL; x++)
		count++;
	assert_int_equal(count, ps->nparts + 2); /* + Content-Type + close */
}

static void parsed_free(struct parsed *ps)
{
	free(ps->msg);
	free(ps->boundary);
	for (size_t i = 0; i < ps->nparts; i++)
		free(ps->part[i]);
}

/* compose - run bounce_compose; returns the malloc'd message */
static char *compose(const struct bounce_req *b, int *eightbit)
{
	struct strbuf out;
	strbuf_init(&out);
	char err[128] = "";
	int eb = 0;
	assert_int_equal(bounce_compose(b, &out, &eb, err, sizeof(err)), 0);
	if (eightbit)
		*eightbit = eb;
	check_lines(out.s, out.len);
	assert_int_equal(strlen(out.s), out.len); /* no NUL inside */
	return strbuf_detach(&out);
}

static void test_failure_hdrs(void **state)
{
	struct mem m = {orig_msg, sizeof(orig_msg) - 1, 0};
	struct bounce_rcpt r[2] = {
		{.addr = "alice@example.test",
		 .orcpt = "rfc822;Alice+2Bx@example.test",
		 .action = BOUNCE_ACTION_FAILED,
		 .status = "5.1.1",
		 .remote_mta = "mx.example.test",
		 .diag_type = "smtp",
		 .diag = "550 5.1.1 user unknown",
		 .last_attempt = 1700000000},
		{.addr = "bob@example.test", .action = BOUNCE_ACTION_FAILED, .status = NULL, .diag = NULL},
	};
	struct bounce_req b = {.hostname = "mx.example.test",
			       .to = "s@example.net",
			       .orig_qid = "0123456789ABCDEF",
			       .envid = "env+2Bid1",
			       .arrival = 1700000000,
			       .now = 1700003600,
			       .ret = ENV_RET_DEFAULT,
			       .rcpts = r,
			       .nrcpts = 2,
			       .read = mem_read,
			       .read_arg = &m,
			       .content_len = m.n};
	char *msg = compose(&b, NULL);
	char *v;
	v = hdr(msg, "From");
	assert_string_equal(v, "\"Mail Delivery System\" <MAILER-DAEMON@mx.example.test>");
	free(v);
	v = hdr(msg, "To");
	assert_string_equal(v, "<s@example.net>");
	free(v);
	v = hdr(msg, "Subject");
	assert_string_equal(v, "Undelivered Mail Returned to Sender");
	free(v);
	v = hdr(msg, "Auto-Submitted");
	assert_string_equal(v, "auto-replied");
	free(v);
	v = hdr(msg, "Date");
	assert_string_equal(v, "Tue, 14 Nov 2023 23:13:20 +0000");
	free(v);
	v = hdr(msg, "Message-ID");
	assert_non_null(v);
	assert_true(v[0] == '<' && strstr(v, "@mx.example.test>") != NULL);
	free(v);
	v = hdr(msg, "MIME-Version");
	assert_string_equal(v, "1.0");
	free(v);

	struct parsed ps;
	parse(msg, &ps);
	assert_int_equal(ps.nparts, 3);
	/* part 1: text */
	v = hdr(ps.part[0], "Content-Type");
	assert_string_equal(v, "text/plain; charset=us-ascii");
	free(v);
	assert_non_null(strstr(ps.part[0], "<alice@example.test>: failed: 550 5.1.1 user unknown"));
	assert_non_null(strstr(ps.part[0], "<bob@example.test>: failed"));
	assert_non_null(strstr(ps.part[0], "0123456789ABCDEF"));
	/* part 2: the delivery-status fields */
	v = hdr(ps.part[1], "Content-Type");
	assert_string_equal(v, "message/delivery-status");
	free(v);
	const char *st = strstr(ps.part[1], "\r\n\r\n") + 4;
	v = hdr(st, "Reporting-MTA");
	assert_string_equal(v, "dns; mx.example.test");
	free(v);
	v = hdr(st, "Original-Envelope-Id");
	assert_string_equal(v, "env+id1");
	free(v);
	v = hdr(st, "Arrival-Date");
	assert_string_equal(v, "Tue, 14 Nov 2023 22:13:20 +0000");
	free(v);
	/* first recipient block */
	const char *r1 = strstr(st, "\r\n\r\n") + 4;
	v = hdr(r1, "Original-Recipient");
	assert_string_equal(v, "rfc822;Alice+x@example.test");
	free(v);
	v = hdr(r1, "Final-Recipient");
	assert_string_equal(v, "rfc822; alice@example.test");
	free(v);
	v = hdr(r1, "Action");
	assert_string_equal(v, "failed");
	free(v);
	v = hdr(r1, "Status");
	assert_string_equal(v, "5.1.1");
	free(v);
	v = hdr(r1, "Remote-MTA");
	assert_string_equal(v, "dns; mx.example.test");
	free(v);
	v = hdr(r1, "Diagnostic-Code");
	assert_string_equal(v, "smtp; 550 5.1.1 user unknown");
	free(v);
	v = hdr(r1, "Last-Attempt-Date");
	assert_string_equal(v, "Tue, 14 Nov 2023 22:13:20 +0000");
	free(v);
	/* second block: defaults, nothing invented */
	const char *r2 = strstr(r1, "\r\n\r\n") + 4;
	v = hdr(r2, "Final-Recipient");
	assert_string_equal(v, "rfc822; bob@example.test");
	free(v);
	v = hdr(r2, "Status");
	assert_string_equal(v, "5.0.0");
	free(v);
	assert_null(hdr(r2, "Remote-MTA"));
	assert_null(hdr(r2, "Diagnostic-Code"));
	assert_null(hdr(r2, "Original-Recipient"));
	/* part 3: the header section only */
	v = hdr(ps.part[2], "Content-Type");
	assert_string_equal(v, "text/rfc822-headers");
	free(v);
	assert_non_null(strstr(ps.part[2], "Subject: hello\r\n"));
	assert_null(strstr(ps.part[2], "body line"));
	parsed_free(&ps);
	free(msg);
}

static void test_failure_full_and_cap(void **state)
{
	struct mem m = {orig_msg, sizeof(orig_msg) - 1, 0};
	struct bounce_rcpt r = {.addr = "alice@example.test", .action = BOUNCE_ACTION_FAILED, .status = "5.2.2"};
	struct bounce_req b = {.hostname = "mx.example.test",
			       .to = "s@example.net",
			       .arrival = 1700000000,
			       .ret = ENV_RET_FULL,
			       .rcpts = &r,
			       .nrcpts = 1,
			       .read = mem_read,
			       .read_arg = &m,
			       .content_len = m.n};
	char *msg = compose(&b, NULL);
	struct parsed ps;
	parse(msg, &ps);
	assert_int_equal(ps.nparts, 3);
	char *v = hdr(ps.part[2], "Content-Type");
	assert_string_equal(v, "message/rfc822");
	free(v);
	assert_non_null(strstr(ps.part[2], "\r\n\r\nFrom: Sender <s@example.net>\r\n"));
	assert_non_null(strstr(ps.part[2], "body line one\r\nbody line two\r\n"));
	parsed_free(&ps);
	free(msg);

	/* over the cap: headers only, and the text says so */
	b.full_max = 40;
	msg = compose(&b, NULL);
	parse(msg, &ps);
	v = hdr(ps.part[2], "Content-Type");
	assert_string_equal(v, "text/rfc822-headers");
	free(v);
	assert_null(strstr(ps.part[2], "body line"));
	assert_non_null(strstr(ps.part[0], "larger than 40 bytes"));
	parsed_free(&ps);
	free(msg);

	/* an unreadable original: the DSN still goes, without part 3 */
	b.full_max = 0;
	m.fail = 1;
	msg = compose(&b, NULL);
	parse(msg, &ps);
	assert_int_equal(ps.nparts, 2);
	assert_non_null(strstr(ps.part[0], "could not be read"));
	parsed_free(&ps);
	free(msg);

	/* no reader at all */
	b.read = NULL;
	msg = compose(&b, NULL);
	parse(msg, &ps);
	assert_int_equal(ps.nparts, 2);
	parsed_free(&ps);
	free(msg);

	/* nothing to report */
	struct strbuf out;
	strbuf_init(&out);
	char err[64];
	b.nrcpts = 0;
	assert_int_equal(bounce_compose(&b, &out, NULL, err, sizeof(err)), -1);
	strbuf_free(&out);
}

static void test_delay_and_success(void **state)
{
	struct mem m = {orig_msg, sizeof(orig_msg) - 1, 0};
	struct bounce_rcpt r = {.addr = "carol@remote.test",
				.action = BOUNCE_ACTION_DELAYED,
				.status = "4.4.1",
				.diag_type = "x-unix",
				.diag = "connection refused",
				.retry_until = 1700432000};
	struct bounce_req b = {.hostname = "mx.example.test",
			       .to = "s@example.net",
			       .arrival = 1700000000,
			       .ret = ENV_RET_FULL,
			       .rcpts = &r,
			       .nrcpts = 1,
			       .read = mem_read,
			       .read_arg = &m,
			       .content_len = m.n};
	char *msg = compose(&b, NULL);
	char *v = hdr(msg, "Subject");
	assert_string_equal(v, "Delayed Mail (still being retried)");
	free(v);
	struct parsed ps;
	parse(msg, &ps);
	const char *st = strstr(ps.part[1], "\r\n\r\n") + 4;
	const char *r1 = strstr(st, "\r\n\r\n") + 4;
	v = hdr(r1, "Action");
	assert_string_equal(v, "delayed");
	free(v);
	v = hdr(r1, "Status");
	assert_string_equal(v, "4.4.1");
	free(v);
	v = hdr(r1, "Diagnostic-Code");
	assert_string_equal(v, "x-unix; connection refused");
	free(v);
	v = hdr(r1, "Will-Retry-Until");
	assert_string_equal(v, "Sun, 19 Nov 2023 22:13:20 +0000");
	free(v);
	/* RET=FULL applies to failures only (RFC 3461 4.3) */
	v = hdr(ps.part[2], "Content-Type");
	assert_string_equal(v, "text/rfc822-headers");
	free(v);
	parsed_free(&ps);
	free(msg);

	/* success; a status of the wrong class is replaced */
	r.action = BOUNCE_ACTION_DELIVERED;
	r.status = "5.1.1";
	r.diag = NULL;
	msg = compose(&b, NULL);
	v = hdr(msg, "Subject");
	assert_string_equal(v, "Successful Mail Delivery Report");
	free(v);
	parse(msg, &ps);
	st = strstr(ps.part[1], "\r\n\r\n") + 4;
	r1 = strstr(st, "\r\n\r\n") + 4;
	v = hdr(r1, "Status");
	assert_string_equal(v, "2.0.0");
	free(v);
	assert_null(hdr(r1, "Will-Retry-Until"));
	parsed_free(&ps);
	free(msg);

	/* postmaster copy */
	r.action = BOUNCE_ACTION_FAILED;
	b.postmaster_copy = 1;
	b.to = "postmaster@mx.example.test";
	msg = compose(&b, NULL);
	v = hdr(msg, "Subject");
	assert_string_equal(v, "Postmaster Copy: Undelivered Mail Returned to Sender");
	free(v);
	free(msg);
}

static void test_hostile(void **state)
{
	/* an original with LF and bare CR line ends, a NUL, 8-bit, a long
	 * line and lines that look like a boundary */
	static const char evil_orig[] = "Subject: x\nX-8: caf\xc3\xa9\rX-Nul: a\0b\r\n"
					"\r\n--=_tern_0123\r\n--\r\nend";
	char *orig = malloc(sizeof(evil_orig) - 1 + 3000);
	memcpy(orig, evil_orig, sizeof(evil_orig) - 1);
	memset(orig + sizeof(evil_orig) - 1, 'L', 3000);
	struct mem m = {orig, sizeof(evil_orig) - 1 + 3000, 0};

	char *longdiag = malloc(5001);
	memset(longdiag, 'D', 5000);
	longdiag[5000] = '\0';
	char *longwords = malloc(5001);
	for (int i = 0; i < 5000; i++)
		longwords[i] = i % 7 == 6 ? ' ' : 'w';
	longwords[5000] = '\0';
	struct bounce_rcpt r[4] = {
		{.addr = "alice@example.test\r\nX-Injected: yes",
		 .orcpt = "rfc822;a+0D+0AX-Injected:+20yes+00",
		 .action = BOUNCE_ACTION_FAILED,
		 .remote_mta = "mx\r\nX-Injected: yes",
		 .diag_type = "smtp\r\nX-Injected",
		 .diag = "550 5.1.1 bad\r\nX-Injected: yes\r\n\r\n--=_tern_ \x01\x7f\xff caf\xc3\xa9"},
		{.addr = "b@example.test", .action = BOUNCE_ACTION_FAILED, .diag = longdiag},
		{.addr = "c@example.test", .action = BOUNCE_ACTION_FAILED, .diag = longwords, .status = "5.9.99999"},
		{.addr = longdiag, .orcpt = longdiag, .action = BOUNCE_ACTION_FAILED},
	};
	struct bounce_req b = {.hostname = "mx.example.test\r\nX-Injected: yes",
			       .to = "s@example.net>\r\nBcc: victim@example.org",
			       .envid = "a\r\nX-Injected: yes",
			       .arrival = 1700000000,
			       .ret = ENV_RET_FULL,
			       .rcpts = r,
			       .nrcpts = 4,
			       .read = mem_read,
			       .read_arg = &m,
			       .content_len = m.n};
	int eb = 0;
	char *msg = compose(&b, &eb);
	assert_true(eb); /* the returned original keeps its 8-bit octets */
	/* no injected field anywhere: every "X-Injected" is inside a line */
	assert_null(strstr(msg, "\r\nX-Injected"));
	assert_null(strstr(msg, "\r\nBcc:"));
	/* nothing 8-bit or control outside the returned original */
	struct parsed ps;
	parse(msg, &ps);
	assert_int_equal(ps.nparts, 3);
	const char *orig_part = strstr(msg, ps.part[2]);
	for (const unsigned char *p = (const unsigned char *)msg; (const char *)p < orig_part; p++)
		assert_true((*p >= 0x20 && *p < 0x7f) || *p == '\r' || *p == '\n' || *p == '\t');
	char *v = hdr(msg, "Content-Transfer-Encoding");
	assert_string_equal(v, "8bit");
	free(v);
	const char *st = strstr(ps.part[1], "\r\n\r\n") + 4;
	const char *r1 = strstr(st, "\r\n\r\n") + 4;
	v = hdr(r1, "Diagnostic-Code");
	assert_non_null(strstr(v, "550 5.1.1 bad X-Injected: yes --=_tern_ ? caf??"));
	assert_true(strncmp(v, "x-unix; ", 8) == 0); /* a hostile type is replaced */
	free(v);
	v = hdr(r1, "Original-Recipient");
	assert_string_equal(v, "rfc822;a X-Injected: yes");
	free(v);
	/* a bad status falls back to the class default */
	assert_non_null(strstr(ps.part[1], "Final-Recipient: rfc822; c@example.test\r\nAction: failed\r\n"
					   "Status: 5.0.0\r\n"));
	/* the original: line ends normalised, NUL gone, long line split */
	assert_non_null(strstr(ps.part[2], "Subject: x\r\nX-8: caf\xc3\xa9\r\nX-Nul: a b\r\n\r\n"));
	assert_non_null(strstr(ps.part[2], "\r\nend"));
	parsed_free(&ps);
	free(msg);
	free(longdiag);
	free(longwords);
	free(orig);
}

static void test_diag_parse(void **state)
{
	char st[16], mta[256], diag[512];
	int smtp;
	bounce_diag_parse("5.1.1 host mx.example.net[192.0.2.1] said: 550 5.1.1 No such user (in reply to RCPT TO "
			  "command)",
			  "5.0.0", st, sizeof(st), mta, sizeof(mta), diag, sizeof(diag), &smtp);
	assert_string_equal(st, "5.1.1");
	assert_string_equal(mta, "mx.example.net");
	assert_string_equal(diag, "550 5.1.1 No such user");
	assert_int_equal(smtp, 1);
	bounce_diag_parse("4.4.1 connect to mx.example.net[192.0.2.1]:25: Connection refused", "4.0.0", st,
			  sizeof(st), mta, sizeof(mta), diag, sizeof(diag), &smtp);
	assert_string_equal(st, "4.4.1");
	assert_string_equal(mta, "");
	assert_string_equal(diag, "connect to mx.example.net[192.0.2.1]:25: Connection refused");
	assert_int_equal(smtp, 0);
	bounce_diag_parse("550 5.7.1 rejected", "5.0.0", st, sizeof(st), mta, sizeof(mta), diag, sizeof(diag),
			  &smtp);
	assert_string_equal(st, "5.7.1");
	assert_string_equal(diag, "550 5.7.1 rejected");
	assert_int_equal(smtp, 1);
	bounce_diag_parse("550 rejected", "5.0.0", st, sizeof(st), mta, sizeof(mta), diag, sizeof(diag), &smtp);
	assert_string_equal(st, "5.0.0");
	assert_int_equal(smtp, 1);
	bounce_diag_parse(NULL, "5.0.0", st, sizeof(st), mta, sizeof(mta), diag, sizeof(diag), &smtp);
	assert_string_equal(st, "5.0.0");
	assert_string_equal(diag, "");
	/* hostile: over-long pieces are truncated, never overflow */
	char big[3000];
	memset(big, 'h', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "5.1.1 host ", 11);
	bounce_diag_parse(big, "5.0.0", st, 4, mta, 8, diag, 16, &smtp);
	assert_string_equal(st, "5.1");
	assert_int_equal(strlen(mta), 7);
	bounce_diag_parse("9.9.9 junk", "5.0.0", st, sizeof(st), mta, sizeof(mta), diag, sizeof(diag), &smtp);
	assert_string_equal(st, "5.0.0");
	assert_string_equal(diag, "9.9.9 junk");
}

static void test_python_parses(void **state)
{
	if (access("/usr/bin/python3", X_OK) != 0) {
		skip();
		return;
	}
	struct mem m = {orig_msg, sizeof(orig_msg) - 1, 0};
	struct bounce_rcpt r[2] = {
		{.addr = "alice@example.test",
		 .orcpt = "rfc822;alice@example.test",
		 .action = BOUNCE_ACTION_FAILED,
		 .status = "5.1.1",
		 .remote_mta = "mx.example.test",
		 .diag = "550 5.1.1 user unknown\r\nX-Evil: 1"},
		{.addr = "bob@example.test", .action = BOUNCE_ACTION_FAILED, .status = "4.4.7", .diag = "expired"},
	};
	struct bounce_req b = {.hostname = "mx.example.test",
			       .to = "s@example.net",
			       .envid = "ENV1",
			       .arrival = 1700000000,
			       .ret = ENV_RET_FULL,
			       .rcpts = r,
			       .nrcpts = 2,
			       .read = mem_read,
			       .read_arg = &m,
			       .content_len = m.n};
	char *msg = compose(&b, NULL);
	char path[] = "/tmp/tern-bounce-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, msg, strlen(msg)), (ssize_t)strlen(msg));
	close(fd);
	char cmd[4096];
	snprintf(cmd, sizeof(cmd),
		 "/usr/bin/python3 -c '\n"
		 "import email, sys\n"
		 "m = email.message_from_bytes(open(sys.argv[1], \"rb\").read())\n"
		 "assert m.get_content_type() == \"multipart/report\", m.get_content_type()\n"
		 "assert m.get_param(\"report-type\") == \"delivery-status\"\n"
		 "assert m[\"Auto-Submitted\"] == \"auto-replied\"\n"
		 "assert m[\"X-Evil\"] is None\n"
		 "p = m.get_payload()\n"
		 "assert len(p) == 3, len(p)\n"
		 "assert p[0].get_content_type() == \"text/plain\"\n"
		 "assert p[1].get_content_type() == \"message/delivery-status\"\n"
		 "assert p[2].get_content_type() == \"message/rfc822\"\n"
		 "ds = p[1].get_payload()\n"
		 "assert len(ds) == 3, len(ds)\n"
		 "assert ds[0][\"Reporting-MTA\"] == \"dns; mx.example.test\"\n"
		 "assert ds[0][\"Original-Envelope-Id\"] == \"ENV1\"\n"
		 "assert ds[0][\"Arrival-Date\"]\n"
		 "assert ds[1][\"Final-Recipient\"] == \"rfc822; alice@example.test\"\n"
		 "assert ds[1][\"Original-Recipient\"] == \"rfc822;alice@example.test\"\n"
		 "assert ds[1][\"Action\"] == \"failed\"\n"
		 "assert ds[1][\"Status\"] == \"5.1.1\"\n"
		 "assert ds[1][\"Remote-MTA\"] == \"dns; mx.example.test\"\n"
		 "assert ds[1][\"Diagnostic-Code\"] == \"smtp; 550 5.1.1 user unknown X-Evil: 1\"\n"
		 "assert ds[2][\"Status\"] == \"4.4.7\"\n"
		 "o = p[2].get_payload()[0]\n"
		 "assert o[\"Subject\"] == \"hello\"\n"
		 "assert \"body line two\" in o.get_payload()\n"
		 "' %s",
		 path);
	int rc = system(cmd);
	unlink(path);
	free(msg);
	assert_int_equal(rc, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_failure_hdrs),     cmocka_unit_test(test_failure_full_and_cap),
		cmocka_unit_test(test_delay_and_success), cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_diag_parse),       cmocka_unit_test(test_python_parses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
