/*
 * test_milter_codec - the pure parts of the milter client: packet framing
 * with its length caps, option negotiation, every reply and modification
 * with hostile variants (zero/huge lengths, truncated packets, unknown
 * reply octets, reply texts with CR/LF, bad indexes, bad names and
 * addresses, modifications that were not negotiated or come too early),
 * the command encoders byte for byte, and the message framer (header
 * fields, folding, end of headers, body chunks) under any chunking.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "policy/milter_codec.h"
#include "policy/milter_frame.h"

/* ---- helpers ---- */

/* mkpkt - a packet from a command octet and data (data may hold NULs) */
static struct milter_pkt mkpkt(int cmd, const void *data, size_t len)
{
	struct milter_pkt p = {(unsigned char)cmd, data, len};
	return p;
}

/* all_neg - a milter that negotiated every action */
static struct milter_neg all_neg(int leadspc)
{
	struct milter_neg n;
	memset(&n, 0, sizeof(n));
	n.version = 6;
	n.actions = MILTER_OUR_ACTIONS;
	n.proto = leadspc ? SMFIP_HDR_LEADSPC : 0;
	return n;
}

/* decode - decode after cmd with neg; returns the rc, r filled */
static int decode(int rcmd, const void *data, size_t len, int after, const struct milter_neg *neg,
		  struct milter_reply *r)
{
	char err[200];
	struct milter_pkt p = mkpkt(rcmd, data, len);
	return milter_codec_reply_decode(&p, after, neg, r, err, sizeof(err));
}

/* decode_eom - a reply at end of message from a milter with every action */
static int decode_eom(int rcmd, const void *data, size_t len, struct milter_reply *r)
{
	struct milter_neg n = all_neg(0);
	return decode(rcmd, data, len, SMFIC_BODYEOB, &n, r);
}

/* replycode - decode an SMFIR_REPLYCODE text (with its NUL) */
static int replycode(const char *text, struct milter_reply *r)
{
	struct milter_neg n = all_neg(0);
	return decode(SMFIR_REPLYCODE, text, strlen(text) + 1, SMFIC_RCPT, &n, r);
}

/* ---- framing ---- */

static void test_packet_next(void **state)
{
	(void)state;
	struct milter_pkt p;
	char err[128];
	const unsigned char two[] = {0, 0, 0, 1, 'c', 0, 0, 0, 3, 'y', 'a', 'b'};
	assert_int_equal(milter_codec_packet_next(two, 0, 100, &p, err, sizeof(err)), 0);
	assert_int_equal(milter_codec_packet_next(two, 3, 100, &p, err, sizeof(err)), 0);
	assert_int_equal(milter_codec_packet_next(two, 4, 100, &p, err, sizeof(err)), 0);
	assert_int_equal(milter_codec_packet_next(two, 5, 100, &p, err, sizeof(err)), 5);
	assert_int_equal(p.cmd, 'c');
	assert_int_equal(p.len, 0);
	/* the second is truncated until all its octets are there */
	assert_int_equal(milter_codec_packet_next(two + 5, 6, 100, &p, err, sizeof(err)), 0);
	assert_int_equal(milter_codec_packet_next(two + 5, 7, 100, &p, err, sizeof(err)), 7);
	assert_int_equal(p.cmd, 'y');
	assert_int_equal(p.len, 2);
	assert_memory_equal(p.data, "ab", 2);
}

static void test_packet_hostile_lengths(void **state)
{
	(void)state;
	struct milter_pkt p;
	char err[128];
	const unsigned char zero[] = {0, 0, 0, 0, 'c'};
	assert_int_equal(milter_codec_packet_next(zero, sizeof(zero), MILTER_PKT_MAX, &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "length 0"));
	const unsigned char huge[] = {0xff, 0xff, 0xff, 0xff, 'b'};
	assert_int_equal(milter_codec_packet_next(huge, sizeof(huge), MILTER_PKT_MAX, &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "over limit"));
	/* just over the cap, and exactly at it (needs more data, no error) */
	unsigned char over[4] = {0, 0x10, 0, 1}; /* 1 MB + 1 */
	assert_int_equal(milter_codec_packet_next(over, 4, MILTER_PKT_MAX, &p, err, sizeof(err)), -1);
	unsigned char at[4] = {0, 0x10, 0, 0};
	assert_int_equal(milter_codec_packet_next(at, 4, MILTER_PKT_MAX, &p, err, sizeof(err)), 0);
}

/* ---- negotiation ---- */

/* optneg - build an OPTNEG reply body */
static size_t optneg(unsigned char *b, uint32_t v, uint32_t a, uint32_t pr)
{
	uint32_t w[3] = {v, a, pr};
	for (int i = 0; i < 3; i++) {
		b[4 * i] = (unsigned char)(w[i] >> 24);
		b[4 * i + 1] = (unsigned char)(w[i] >> 16);
		b[4 * i + 2] = (unsigned char)(w[i] >> 8);
		b[4 * i + 3] = (unsigned char)w[i];
	}
	return 12;
}

static void test_optneg(void **state)
{
	(void)state;
	unsigned char b[200];
	char err[128];
	struct milter_neg n;
	size_t len = optneg(b, 6, SMFIF_ADDHDRS | SMFIF_CHGBODY, SMFIP_NR_HDR | SMFIP_NOHELO | SMFIP_RCPT_REJ | 0x40000000u);
	struct milter_pkt p = mkpkt(SMFIC_OPTNEG, b, len);
	assert_int_equal(milter_codec_optneg_decode(&p, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &n, err, sizeof(err)), 0);
	assert_int_equal(n.version, 6);
	assert_int_equal(n.actions, SMFIF_ADDHDRS | SMFIF_CHGBODY);
	/* flags we did not offer (RCPT_REJ, unknown high bits) are masked */
	assert_int_equal(n.proto, SMFIP_NR_HDR | SMFIP_NOHELO);
	milter_codec_neg_clear(&n);

	/* version 2 cannot have the version-6 flags */
	len = optneg(b, 2, 0, SMFIP_NR_HDR | SMFIP_NOBODY | SMFIP_HDR_LEADSPC);
	p = mkpkt(SMFIC_OPTNEG, b, len);
	assert_int_equal(milter_codec_optneg_decode(&p, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &n, err, sizeof(err)), 0);
	assert_int_equal(n.proto, SMFIP_NR_HDR | SMFIP_NOBODY);
	milter_codec_neg_clear(&n);

	/* bad versions, actions beyond ours, short, wrong command */
	len = optneg(b, 7, 0, 0);
	p = mkpkt(SMFIC_OPTNEG, b, len);
	assert_int_equal(milter_codec_optneg_decode(&p, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &n, err, sizeof(err)), -1);
	len = optneg(b, 1, 0, 0);
	p = mkpkt(SMFIC_OPTNEG, b, len);
	assert_int_equal(milter_codec_optneg_decode(&p, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &n, err, sizeof(err)), -1);
	len = optneg(b, 6, 0x200, 0);
	p = mkpkt(SMFIC_OPTNEG, b, len);
	assert_int_equal(milter_codec_optneg_decode(&p, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "actions"));
	len = optneg(b, 6, 0, 0);
	p = mkpkt(SMFIC_OPTNEG, b, 11);
	assert_int_equal(milter_codec_optneg_decode(&p, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &n, err, sizeof(err)), -1);
	p = mkpkt('c', b, len);
	assert_int_equal(milter_codec_optneg_decode(&p, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &n, err, sizeof(err)), -1);
}

static void test_optneg_macro_lists(void **state)
{
	(void)state;
	unsigned char b[200];
	char err[128];
	struct milter_neg n;
	size_t len = optneg(b, 6, SMFIF_SETSYMLIST, 0);
	const unsigned char lists[] = {0, 0, 0, 2, 'i', ' ', '{', 'a', 'u', 't', 'h', '_', 't', 'y', 'p', 'e', '}', 0,
				       0, 0, 0, 9, 'x', 0, /* unknown stage: ignored */
				       0, 0, 0, 5, 'i', 0};
	memcpy(b + len, lists, sizeof(lists));
	struct milter_pkt p = mkpkt(SMFIC_OPTNEG, b, len + sizeof(lists));
	assert_int_equal(milter_codec_optneg_decode(&p, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &n, err, sizeof(err)), 0);
	assert_string_equal(n.macros[SMFIM_ENVFROM], "i {auth_type}");
	assert_string_equal(n.macros[SMFIM_EOM], "i");
	assert_null(n.macros[SMFIM_CONNECT]);
	assert_true(milter_codec_macro_wanted(n.macros[SMFIM_ENVFROM], "{auth_type}"));
	assert_true(milter_codec_macro_wanted(n.macros[SMFIM_ENVFROM], "auth_type"));
	assert_true(milter_codec_macro_wanted(n.macros[SMFIM_ENVFROM], "{i}"));
	assert_false(milter_codec_macro_wanted(n.macros[SMFIM_ENVFROM], "j"));
	assert_false(milter_codec_macro_wanted(NULL, "j"));
	milter_codec_neg_clear(&n);

	/* a list without its NUL, a stage without a list, a control octet */
	memcpy(b + len, "\0\0\0\2abc", 7);
	p = mkpkt(SMFIC_OPTNEG, b, len + 7);
	assert_int_equal(milter_codec_optneg_decode(&p, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &n, err, sizeof(err)), -1);
	p = mkpkt(SMFIC_OPTNEG, b, len + 3);
	assert_int_equal(milter_codec_optneg_decode(&p, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &n, err, sizeof(err)), -1);
	memcpy(b + len, "\0\0\0\2a\nb", 8);
	p = mkpkt(SMFIC_OPTNEG, b, len + 8);
	assert_int_equal(milter_codec_optneg_decode(&p, MILTER_OUR_ACTIONS, MILTER_OUR_PROTO, &n, err, sizeof(err)), -1);
}

/* ---- replies ---- */

static void test_simple_replies(void **state)
{
	(void)state;
	struct milter_neg n = all_neg(0);
	struct milter_reply r;
	static const struct {
		int cmd;
		enum milter_reply_kind kind;
	} t[] = {
		{SMFIR_CONTINUE, MILTER_REPLY_CONTINUE}, {SMFIR_ACCEPT, MILTER_REPLY_ACCEPT},
		{SMFIR_REJECT, MILTER_REPLY_REJECT},     {SMFIR_TEMPFAIL, MILTER_REPLY_TEMPFAIL},
		{SMFIR_DISCARD, MILTER_REPLY_DISCARD},   {SMFIR_SHUTDOWN, MILTER_REPLY_SHUTDOWN},
		{SMFIR_CONN_FAIL, MILTER_REPLY_SHUTDOWN}, {SMFIR_PROGRESS, MILTER_REPLY_PROGRESS},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		assert_int_equal(decode(t[i].cmd, "", 0, SMFIC_MAIL, &n, &r), 0);
		assert_int_equal(r.kind, t[i].kind);
		milter_codec_reply_clear(&r);
		/* the same with data octets that do not belong */
		assert_int_equal(decode(t[i].cmd, "x", 1, SMFIC_MAIL, &n, &r), -1);
	}
	assert_true(milter_reply_is_final(MILTER_REPLY_CONTINUE));
	assert_true(milter_reply_is_final(MILTER_REPLY_SKIP));
	assert_false(milter_reply_is_final(MILTER_REPLY_PROGRESS));
	assert_false(milter_reply_is_final(MILTER_REPLY_ADDHEADER));
	assert_string_equal(milter_reply_kind_str(MILTER_REPLY_QUARANTINE), "quarantine");
	assert_string_equal(milter_reply_kind_str((enum milter_reply_kind)99), "unknown");
}

static void test_skip_and_unknown(void **state)
{
	(void)state;
	struct milter_neg n = all_neg(0);
	struct milter_reply r;
	assert_int_equal(decode(SMFIR_SKIP, "", 0, SMFIC_BODY, &n, &r), 0);
	assert_int_equal(r.kind, MILTER_REPLY_SKIP);
	assert_int_equal(decode(SMFIR_SKIP, "", 0, SMFIC_HEADER, &n, &r), 0);
	/* SKIP elsewhere is a protocol error */
	assert_int_equal(decode(SMFIR_SKIP, "", 0, SMFIC_RCPT, &n, &r), -1);
	assert_int_equal(decode(SMFIR_SKIP, "", 0, SMFIC_BODYEOB, &n, &r), -1);
	/* unknown reply octets, SETSYMLIST and OPTNEG outside negotiation */
	const char bad[] = {'Z', 0, (char)0xff, 'l', 'O', 'C'};
	for (size_t i = 0; i < sizeof(bad); i++)
		assert_int_equal(decode(bad[i], "", 0, SMFIC_MAIL, &n, &r), -1);
	/* a reply to a command that has none */
	assert_int_equal(decode(SMFIR_CONTINUE, "", 0, SMFIC_ABORT, &n, &r), -1);
	assert_int_equal(decode(SMFIR_CONTINUE, "", 0, SMFIC_MACRO, &n, &r), -1);
	assert_int_equal(decode(SMFIR_CONTINUE, "", 0, SMFIC_QUIT, &n, &r), -1);
}

static void test_replycode(void **state)
{
	(void)state;
	struct milter_reply r;
	assert_int_equal(replycode("550 5.7.1 Go away", &r), 0);
	assert_int_equal(r.code, 550);
	assert_string_equal(r.text, "550 5.7.1 Go away");
	milter_codec_reply_clear(&r);
	assert_int_equal(replycode("451 4.7.1 Later\r\n", &r), 0); /* trailing CRLF dropped */
	assert_string_equal(r.text, "451 4.7.1 Later");
	milter_codec_reply_clear(&r);
	assert_int_equal(replycode("554", &r), 0);
	assert_string_equal(r.text, "554");
	milter_codec_reply_clear(&r);
	/* Sendmail format strings: %% is %, a lone % goes */
	assert_int_equal(replycode("550 5.7.1 100%% spam %s", &r), 0);
	assert_string_equal(r.text, "550 5.7.1 100% spam s");
	milter_codec_reply_clear(&r);
	/* multi-line, separators made right (a ' ' line before the last would
	 * be a second SMTP reply) */
	assert_int_equal(replycode("550-5.7.1 first\r\n550 5.7.1 second\r\n550 5.7.1 third", &r), 0);
	assert_string_equal(r.text, "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third");
	milter_codec_reply_clear(&r);
	assert_int_equal(replycode("550-a\r\n550-b", &r), 0);
	assert_string_equal(r.text, "550-a\r\n550 b");
	milter_codec_reply_clear(&r);
	/* tabs become spaces, 8-bit octets '?' */
	assert_int_equal(replycode("550 a\tb\xc3\xa9", &r), 0);
	assert_string_equal(r.text, "550 a b??");
	milter_codec_reply_clear(&r);
	/* NUL missing at the end is tolerated */
	struct milter_neg n = all_neg(0);
	assert_int_equal(decode(SMFIR_REPLYCODE, "550 x", 5, SMFIC_MAIL, &n, &r), 0);
	assert_string_equal(r.text, "550 x");
	milter_codec_reply_clear(&r);
}

static void test_replycode_hostile(void **state)
{
	(void)state;
	struct milter_reply r;
	struct milter_neg n = all_neg(0);
	static const char *const bad[] = {
		"250 ok",                       /* not 4xx/5xx */
		"354 go ahead",
		"55",                           /* too short */
		"5x0 what",
		"",                             /* empty */
		"550 a\r\n250 b",               /* a second line with another code */
		"550 a\r\n551 b",
		"550 a\nRSET",                  /* lone LF: injection */
		"550 a\rb",                     /* lone CR */
		"550 a\r\n\r\n550 b",           /* an empty line */
		"550 a\r\nQUIT",
		"550 text\x01",                 /* control octet */
		"550 4.7.1 class differs",      /* enhanced code of another class */
		"451 5.7.1 class differs",
		"550xtext",                     /* no separator */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(replycode(bad[i], &r), -1);
		assert_null(r.text);
	}
	/* octets after the NUL */
	assert_int_equal(decode(SMFIR_REPLYCODE, "550 a\0b", 7, SMFIC_MAIL, &n, &r), -1);
	assert_int_equal(decode(SMFIR_REPLYCODE, "", 0, SMFIC_MAIL, &n, &r), -1);
}

static void test_replycode_long(void **state)
{
	(void)state;
	struct milter_reply r;
	/* one very long line: cut to the limit */
	char *t = malloc(5000);
	memcpy(t, "550 ", 4);
	memset(t + 4, 'x', 4000);
	t[4004] = 0;
	assert_int_equal(replycode(t, &r), 0);
	assert_int_equal(strlen(r.text), MILTER_REPLY_MAX);
	assert_memory_equal(r.text, "550 xxx", 7);
	milter_codec_reply_clear(&r);
	/* many lines: whole lines kept, the last kept one ends the reply */
	size_t o = 0;
	for (int i = 0; i < 40; i++)
		o += (size_t)sprintf(t + o, "550-5.7.1 line %02d of a long reply\r\n", i);
	sprintf(t + o, "550 5.7.1 end");
	assert_int_equal(replycode(t, &r), 0);
	assert_true(strlen(r.text) <= MILTER_REPLY_MAX);
	const char *last = strrchr(r.text, '\n');
	assert_non_null(last);
	assert_memory_equal(last + 1, "550 5.7.1 line", 14);
	assert_null(strstr(r.text, "550 5.7.1 line 00"));
	/* every line before the last continues */
	for (const char *p = r.text; p < last; p = strchr(p, '\n') + 1)
		assert_int_equal(p[3], '-');
	milter_codec_reply_clear(&r);
	free(t);
}

static void test_addheader(void **state)
{
	(void)state;
	struct milter_reply r;
	assert_int_equal(decode_eom(SMFIR_ADDHEADER, "X-Spam\0yes\0", 11, &r), 0);
	assert_int_equal(r.kind, MILTER_REPLY_ADDHEADER);
	assert_string_equal(r.name, "X-Spam");
	assert_string_equal(r.value, "yes");
	milter_codec_reply_clear(&r);
	/* folded value from a milter: LF becomes CRLF; a line that would start
	 * in column 1 (a new field, or an empty line ending the header) gets a
	 * space; trailing line breaks go */
	const char v[] = "X-F\0a\n\tb\nX-Injected: 1\n\nbody\r\nc\r\n\0";
	assert_int_equal(decode_eom(SMFIR_ADDHEADER, v, sizeof(v) - 1, &r), 0);
	assert_string_equal(r.value, "a\r\n\tb\r\n X-Injected: 1\r\n \r\n body\r\n c");
	milter_codec_reply_clear(&r);
	const char cr[] = "X-F\0a\rb\0";
	assert_int_equal(decode_eom(SMFIR_ADDHEADER, cr, sizeof(cr) - 1, &r), 0);
	assert_string_equal(r.value, "a\r\n b");
	milter_codec_reply_clear(&r);
	/* empty value */
	assert_int_equal(decode_eom(SMFIR_ADDHEADER, "X-E\0\0", 5, &r), 0);
	assert_string_equal(r.value, "");
	milter_codec_reply_clear(&r);
}

static void test_header_leadspc(void **state)
{
	(void)state;
	struct milter_reply r;
	struct milter_neg n = all_neg(1);
	/* a milter that negotiated HDR_LEADSPC sends the space itself */
	assert_int_equal(decode(SMFIR_ADDHEADER, "X-A\0 v=1;\n\tb=x\0", 15, SMFIC_BODYEOB, &n, &r), 0);
	assert_string_equal(r.value, "v=1;\r\n\tb=x");
	milter_codec_reply_clear(&r);
	assert_int_equal(decode(SMFIR_ADDHEADER, "X-A\0v\0", 6, SMFIC_BODYEOB, &n, &r), 0);
	assert_string_equal(r.value, "v");
	milter_codec_reply_clear(&r);
	/* without it the space would be the milter's own */
	n = all_neg(0);
	assert_int_equal(decode(SMFIR_ADDHEADER, "X-A\0 v\0", 7, SMFIC_BODYEOB, &n, &r), 0);
	assert_string_equal(r.value, " v");
	milter_codec_reply_clear(&r);
}

static void test_header_mods_hostile(void **state)
{
	(void)state;
	struct milter_reply r;
	struct milter_neg n = all_neg(0);
	/* names: empty, space, colon, control, 8-bit, too long */
	static const struct {
		const char *d;
		size_t len;
	} badnames[] = {
		{"\0v\0", 3}, {"X Y\0v\0", 6}, {"X:Y\0v\0", 6}, {"X\tY\0v\0", 6}, {"X\xffY\0v\0", 6},
	};
	for (size_t i = 0; i < sizeof(badnames) / sizeof(badnames[0]); i++)
		assert_int_equal(decode_eom(SMFIR_ADDHEADER, badnames[i].d, badnames[i].len, &r), -1);
	char longname[1200];
	memset(longname, 'A', MILTER_NAME_MAX + 1);
	longname[MILTER_NAME_MAX + 1] = 0;
	longname[MILTER_NAME_MAX + 2] = 0;
	assert_int_equal(decode_eom(SMFIR_ADDHEADER, longname, MILTER_NAME_MAX + 3, &r), -1);
	/* truncated: no NUL after the value, or after the name */
	assert_int_equal(decode_eom(SMFIR_ADDHEADER, "X\0v", 3, &r), -1);
	assert_int_equal(decode_eom(SMFIR_ADDHEADER, "X", 1, &r), -1);
	assert_int_equal(decode_eom(SMFIR_ADDHEADER, "", 0, &r), -1);
	/* trailing octets */
	assert_int_equal(decode_eom(SMFIR_ADDHEADER, "X\0v\0z", 5, &r), -1);
	/* not at end of message; not negotiated */
	assert_int_equal(decode(SMFIR_ADDHEADER, "X\0v\0", 4, SMFIC_EOH, &n, &r), -1);
	assert_int_equal(decode(SMFIR_ADDHEADER, "X\0v\0", 4, SMFIC_RCPT, &n, &r), -1);
	n.actions = SMFIF_CHGHDRS;
	assert_int_equal(decode(SMFIR_ADDHEADER, "X\0v\0", 4, SMFIC_BODYEOB, &n, &r), -1);
	assert_int_equal(decode(SMFIR_INSHEADER, "\0\0\0\0X\0v\0", 8, SMFIC_BODYEOB, &n, &r), -1);
	n.actions = SMFIF_ADDHDRS;
	assert_int_equal(decode(SMFIR_CHGHEADER, "\0\0\0\1X\0v\0", 8, SMFIC_BODYEOB, &n, &r), -1);
	/* a value over the limit */
	size_t big = MILTER_VALUE_MAX + 10;
	char *b = calloc(1, big + 8);
	memcpy(b, "X", 1);
	memset(b + 2, 'v', big);
	assert_int_equal(decode_eom(SMFIR_ADDHEADER, b, big + 3, &r), -1);
	free(b);
}

static void test_ins_chg_header(void **state)
{
	(void)state;
	struct milter_reply r;
	assert_int_equal(decode_eom(SMFIR_INSHEADER, "\0\0\0\0DKIM-Signature\0v=1\0", 23, &r), 0);
	assert_int_equal(r.kind, MILTER_REPLY_INSHEADER);
	assert_int_equal(r.index, 0);
	assert_string_equal(r.name, "DKIM-Signature");
	milter_codec_reply_clear(&r);
	assert_int_equal(decode_eom(SMFIR_INSHEADER, "\0\0\0\3X\0v\0", 8, &r), 0);
	assert_int_equal(r.index, 3);
	milter_codec_reply_clear(&r);
	/* CHGHEADER: index 0 is taken as 1 (Sendmail), empty value deletes */
	assert_int_equal(decode_eom(SMFIR_CHGHEADER, "\0\0\0\0Subject\0\0", 13, &r), 0);
	assert_int_equal(r.kind, MILTER_REPLY_CHGHEADER);
	assert_int_equal(r.index, 1);
	assert_string_equal(r.value, "");
	milter_codec_reply_clear(&r);
	assert_int_equal(decode_eom(SMFIR_CHGHEADER, "\0\0\0\2Subject\0new\0", 16, &r), 0);
	assert_int_equal(r.index, 2);
	assert_string_equal(r.value, "new");
	milter_codec_reply_clear(&r);
	/* bad indexes: huge, negative as unsigned, missing */
	assert_int_equal(decode_eom(SMFIR_CHGHEADER, "\xff\xff\xff\xffX\0v\0", 8, &r), -1);
	assert_int_equal(decode_eom(SMFIR_INSHEADER, "\x80\0\0\0X\0v\0", 8, &r), -1);
	assert_int_equal(decode_eom(SMFIR_INSHEADER, "\0\x01\x86\xa1X\0v\0", 8, &r), -1); /* 100001 */
	assert_int_equal(decode_eom(SMFIR_INSHEADER, "\0\x01\x86\xa0X\0v\0", 8, &r), 0);  /* 100000 */
	milter_codec_reply_clear(&r);
	assert_int_equal(decode_eom(SMFIR_CHGHEADER, "\0\0\0", 3, &r), -1);
}

static void test_replbody(void **state)
{
	(void)state;
	struct milter_reply r;
	const char body[] = "new\r\nbody\0with nul";
	assert_int_equal(decode_eom(SMFIR_REPLBODY, body, sizeof(body) - 1, &r), 0);
	assert_int_equal(r.kind, MILTER_REPLY_REPLBODY);
	assert_int_equal(r.bodylen, sizeof(body) - 1);
	assert_memory_equal(r.body, body, sizeof(body) - 1);
	milter_codec_reply_clear(&r);
	assert_int_equal(decode_eom(SMFIR_REPLBODY, "", 0, &r), 0);
	assert_int_equal(r.bodylen, 0);
	struct milter_neg n = all_neg(0);
	n.actions &= ~SMFIF_CHGBODY;
	assert_int_equal(decode(SMFIR_REPLBODY, "x", 1, SMFIC_BODYEOB, &n, &r), -1);
	n = all_neg(0);
	assert_int_equal(decode(SMFIR_REPLBODY, "x", 1, SMFIC_BODY, &n, &r), -1);
}

static void test_envelope_mods(void **state)
{
	(void)state;
	struct milter_reply r;
	assert_int_equal(decode_eom(SMFIR_CHGFROM, "<new@example.org>\0SIZE=100 BODY=8BITMIME\0", 41, &r), 0);
	assert_int_equal(r.kind, MILTER_REPLY_CHGFROM);
	assert_string_equal(r.value, "new@example.org");
	assert_string_equal(r.args, "SIZE=100 BODY=8BITMIME");
	milter_codec_reply_clear(&r);
	assert_int_equal(decode_eom(SMFIR_CHGFROM, "<>\0", 3, &r), 0);
	assert_string_equal(r.value, "");
	assert_null(r.args);
	milter_codec_reply_clear(&r);
	assert_int_equal(decode_eom(SMFIR_CHGFROM, "bare@example.org\0\0", 18, &r), 0);
	assert_string_equal(r.value, "bare@example.org");
	assert_null(r.args);
	milter_codec_reply_clear(&r);
	assert_int_equal(decode_eom(SMFIR_ADDRCPT, "<rcpt@example.org>\0", 19, &r), 0);
	assert_int_equal(r.kind, MILTER_REPLY_ADDRCPT);
	assert_string_equal(r.value, "rcpt@example.org");
	milter_codec_reply_clear(&r);
	assert_int_equal(decode_eom(SMFIR_ADDRCPT_PAR, "<p@example.org>\0NOTIFY=NEVER\0", 29, &r), 0);
	assert_int_equal(r.kind, MILTER_REPLY_ADDRCPT);
	assert_string_equal(r.args, "NOTIFY=NEVER");
	milter_codec_reply_clear(&r);
	assert_int_equal(decode_eom(SMFIR_DELRCPT, "<old@example.org>\0", 18, &r), 0);
	assert_int_equal(r.kind, MILTER_REPLY_DELRCPT);
	assert_string_equal(r.value, "old@example.org");
	milter_codec_reply_clear(&r);

	/* hostile: empty recipient, spaces, controls, brackets, args on plain
	 * ADDRCPT, control in args, unterminated, not negotiated */
	assert_int_equal(decode_eom(SMFIR_ADDRCPT, "<>\0", 3, &r), -1);
	assert_int_equal(decode_eom(SMFIR_DELRCPT, "\0", 1, &r), -1);
	assert_int_equal(decode_eom(SMFIR_ADDRCPT, "a b@example.org\0", 16, &r), -1);
	assert_int_equal(decode_eom(SMFIR_ADDRCPT, "a\r\nRCPT@x\0", 10, &r), -1);
	assert_int_equal(decode_eom(SMFIR_ADDRCPT, "<a<b>\0", 6, &r), -1);
	assert_int_equal(decode_eom(SMFIR_ADDRCPT, "a@b\0X=1\0", 8, &r), -1);
	assert_int_equal(decode_eom(SMFIR_CHGFROM, "a@b\0X=\r\n\0", 9, &r), -1);
	assert_int_equal(decode_eom(SMFIR_CHGFROM, "a@b", 3, &r), -1);
	assert_int_equal(decode_eom(SMFIR_CHGFROM, "a@b\0X=1", 7, &r), -1);
	char longaddr[MILTER_ADDR_MAX + 8];
	memset(longaddr, 'a', MILTER_ADDR_MAX + 1);
	longaddr[MILTER_ADDR_MAX + 1] = 0;
	assert_int_equal(decode_eom(SMFIR_ADDRCPT, longaddr, MILTER_ADDR_MAX + 2, &r), -1);
	struct milter_neg n = all_neg(0);
	n.actions = SMFIF_ADDRCPT;
	assert_int_equal(decode(SMFIR_ADDRCPT_PAR, "a@b\0\0", 5, SMFIC_BODYEOB, &n, &r), -1);
	assert_int_equal(decode(SMFIR_CHGFROM, "a@b\0", 4, SMFIC_BODYEOB, &n, &r), -1);
	assert_int_equal(decode(SMFIR_DELRCPT, "a@b\0", 4, SMFIC_BODYEOB, &n, &r), -1);
	assert_int_equal(decode(SMFIR_ADDRCPT, "a@b\0", 4, SMFIC_BODYEOB, &n, &r), 0);
	milter_codec_reply_clear(&r);
}

static void test_quarantine(void **state)
{
	(void)state;
	struct milter_reply r;
	assert_int_equal(decode_eom(SMFIR_QUARANTINE, "virus\tfound\r\n\0", 14, &r), 0);
	assert_int_equal(r.kind, MILTER_REPLY_QUARANTINE);
	assert_string_equal(r.value, "virus?found??");
	milter_codec_reply_clear(&r);
	char big[600];
	memset(big, 'q', 599);
	big[599] = 0;
	assert_int_equal(decode_eom(SMFIR_QUARANTINE, big, 600, &r), 0);
	assert_int_equal(strlen(r.value), MILTER_REASON_MAX);
	milter_codec_reply_clear(&r);
	assert_int_equal(decode_eom(SMFIR_QUARANTINE, "abc", 3, &r), -1);
	assert_int_equal(decode_eom(SMFIR_QUARANTINE, "a\0b\0", 4, &r), -1);
	struct milter_neg n = all_neg(0);
	n.actions = 0;
	assert_int_equal(decode(SMFIR_QUARANTINE, "a\0", 2, SMFIC_BODYEOB, &n, &r), -1);
	n = all_neg(0);
	assert_int_equal(decode(SMFIR_QUARANTINE, "a\0", 2, SMFIC_DATA, &n, &r), -1);
}

/* ---- encoders ---- */

static void test_encoders(void **state)
{
	(void)state;
	struct strbuf sb;
	strbuf_init(&sb);
	milter_codec_enc_optneg(&sb, 6, 0x1ff, 0x1fffff);
	assert_int_equal(sb.len, 17);
	assert_memory_equal(sb.s, "\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff", 17);
	strbuf_reset(&sb);

	milter_codec_enc_connect(&sb, "mail.example.org", '4', 2525, "192.0.2.1");
	const char conn[] = "\0\0\0\x1f" "Cmail.example.org\0" "4\x09\xdd" "192.0.2.1";
	assert_int_equal(sb.len, sizeof(conn));
	assert_memory_equal(sb.s, conn, sizeof(conn)); /* including the final NUL */
	strbuf_reset(&sb);
	milter_codec_enc_connect(&sb, "x", 'U', 0, NULL);
	assert_memory_equal(sb.s, "\0\0\0\x04" "Cx\0U", 8);
	strbuf_reset(&sb);

	const char *const args[] = {"SIZE=10", "BODY=8BITMIME", NULL};
	milter_codec_enc_envelope(&sb, SMFIC_MAIL, "a@b", args);
	const char env[] = "\0\0\0\x1d" "M<a@b>\0SIZE=10\0BODY=8BITMIME";
	assert_int_equal(sb.len, sizeof(env));
	assert_memory_equal(sb.s, env, sizeof(env));
	strbuf_reset(&sb);
	milter_codec_enc_envelope(&sb, SMFIC_RCPT, "", NULL);
	assert_memory_equal(sb.s, "\0\0\0\x04R<>", 8);
	assert_int_equal(sb.len, 8);
	strbuf_reset(&sb);

	const char *const kv[] = {"j", "mx.example", "{x}", NULL, "i", "ABC"};
	milter_codec_enc_macros(&sb, SMFIC_MAIL, kv, 3);
	const char mac[] = "\0\0\0\x15" "DMj\0mx.example\0i\0ABC";
	assert_int_equal(sb.len, sizeof(mac));
	assert_memory_equal(sb.s, mac, sizeof(mac));
	strbuf_reset(&sb);

	milter_codec_enc_helo(&sb, "client.example");
	assert_memory_equal(sb.s, "\0\0\0\x10Hclient.example", 20);
	strbuf_reset(&sb);
	milter_codec_enc_header(&sb, "Subject", 7, "hi", 2);
	assert_int_equal(sb.len, 16);
	assert_memory_equal(sb.s, "\0\0\0\x0cLSubject\0hi", 16);
	strbuf_reset(&sb);
	milter_codec_enc_cmd(&sb, SMFIC_BODYEOB);
	assert_memory_equal(sb.s, "\0\0\0\x01" "E", 5);
	strbuf_reset(&sb);

	/* limits: a body chunk and a header are cut to the data limit */
	char *big = malloc(200000);
	memset(big, 'b', 200000);
	milter_codec_enc_body(&sb, big, 200000);
	assert_int_equal(sb.len, 5 + MILTER_CHUNK_MAX);
	assert_memory_equal(sb.s, "\0\x01\0\0B", 5);
	strbuf_reset(&sb);
	milter_codec_enc_header(&sb, "X", 1, big, 200000);
	assert_int_equal(sb.len, 5 + MILTER_CHUNK_MAX);
	strbuf_reset(&sb);
	/* many big macros stop at the limit */
	const char *kvb[200];
	big[1023] = 0;
	for (int i = 0; i < 100; i++) {
		kvb[2 * i] = "{m}";
		kvb[2 * i + 1] = big;
	}
	milter_codec_enc_macros(&sb, SMFIC_CONNECT, kvb, 100);
	assert_true(sb.len - 4 <= MILTER_CHUNK_MAX + 1);
	free(big);
	strbuf_free(&sb);

	assert_string_equal(milter_codec_cmd_str(SMFIC_BODYEOB), "SMFIC_BODYEOB");
	assert_string_equal(milter_codec_cmd_str('z'), "SMFIC_?");
}

/* round trip: what we encode is what a packet parser reads */
static void test_encode_then_cut(void **state)
{
	(void)state;
	struct strbuf sb;
	strbuf_init(&sb);
	milter_codec_enc_cmd(&sb, SMFIC_ABORT);
	milter_codec_enc_header(&sb, "From", 4, "a@b", 3);
	milter_codec_enc_cmd(&sb, SMFIC_QUIT);
	struct milter_pkt p;
	char err[64];
	size_t off = 0;
	const char want[] = {SMFIC_ABORT, SMFIC_HEADER, SMFIC_QUIT};
	for (int i = 0; i < 3; i++) {
		ssize_t k = milter_codec_packet_next(sb.s + off, sb.len - off, MILTER_PKT_MAX, &p, err, sizeof(err));
		assert_true(k > 0);
		assert_int_equal(p.cmd, want[i]);
		off += (size_t)k;
	}
	assert_int_equal(off, sb.len);
	strbuf_free(&sb);
}

/* ---- the framer ---- */

struct events {
	struct strbuf log; /* "H<name>=<value>|" "E|" "B<n>|" */
	struct strbuf body;
	size_t max_chunk;
	int nbody;
};

static void ev_header(void *arg, const char *name, size_t nlen, const char *value, size_t vlen)
{
	struct events *e = arg;
	strbuf_addc(&e->log, 'H');
	strbuf_add(&e->log, name, nlen);
	strbuf_addc(&e->log, '=');
	strbuf_add(&e->log, value, vlen);
	strbuf_addc(&e->log, '|');
}

static void ev_eoh(void *arg)
{
	struct events *e = arg;
	strbuf_adds(&e->log, "E|");
}

static void ev_body(void *arg, const char *p, size_t n)
{
	struct events *e = arg;
	assert_true(n > 0 && n <= MILTER_CHUNK_MAX);
	if (n > e->max_chunk)
		e->max_chunk = n;
	e->nbody++;
	strbuf_add(&e->body, p, n);
}

static const struct milter_frame_ops ev_ops = {ev_header, ev_eoh, ev_body};

/* frame - run msg through the framer in chunks of step (0: at once) */
static void frame(const char *msg, size_t len, size_t step, struct events *e)
{
	struct milter_frame f;
	memset(e, 0, sizeof(*e));
	strbuf_init(&e->log);
	strbuf_init(&e->body);
	strbuf_adds(&e->log, "");
	strbuf_adds(&e->body, "");
	assert_int_equal(milter_frame_init(&f, &ev_ops, e), 0);
	if (step == 0)
		step = len ? len : 1;
	for (size_t i = 0; i < len; i += step)
		milter_frame_feed(&f, msg + i, len - i < step ? len - i : step);
	milter_frame_finish(&f);
	milter_frame_feed(&f, "ignored", 7); /* after the end: nothing */
	milter_frame_free(&f);
}

static void events_free(struct events *e)
{
	strbuf_free(&e->log);
	strbuf_free(&e->body);
}

/* check_frame - same events whatever the chunking */
static void check_frame(const char *msg, const char *want_log, const char *want_body)
{
	static const size_t steps[] = {0, 1, 2, 3, 7, 64};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct events e;
		frame(msg, strlen(msg), steps[i], &e);
		assert_string_equal(e.log.s, want_log);
		assert_string_equal(e.body.s, want_body);
		events_free(&e);
	}
}

static void test_frame_basic(void **state)
{
	(void)state;
	check_frame("Received: from x\r\nFrom: a@b\r\nSubject: hi\r\n\r\nbody line\r\n.. dots\r\n",
		    "HReceived= from x|HFrom= a@b|HSubject= hi|E|", "body line\r\n.. dots\r\n");
	/* folding: the inner CRLF is given as LF, the final one goes */
	check_frame("Subject: a\r\n b\r\n\tc\r\nTo: x\r\n\r\n",
		    "HSubject= a\n b\n\tc|HTo= x|E|", "");
	/* white space before the colon (obsolete syntax), empty value */
	check_frame("X-A  : v\r\nX-B:\r\n\r\nB\r\n", "HX-A= v|HX-B=|E|", "B\r\n");
	/* no empty line: a line that is no field starts the body */
	check_frame("From: a\r\nthis is body\r\nmore\r\n", "HFrom= a|E|", "this is body\r\nmore\r\n");
	check_frame("From: a\r\n: no name\r\n", "HFrom= a|E|", ": no name\r\n");
	check_frame("From: a\r\nBad Name: x\r\n", "HFrom= a|E|", "Bad Name: x\r\n");
	/* only headers, no final CRLF */
	check_frame("From: a\r\nSubject: s", "HFrom= a|HSubject= s|E|", "");
	/* empty message, only the empty line, only body */
	check_frame("", "E|", "");
	check_frame("\r\n", "E|", "");
	check_frame("\r\nbody", "E|", "body");
	/* a first line that is a continuation is body */
	check_frame(" x\r\nFrom: a\r\n", "E|", " x\r\nFrom: a\r\n");
	/* bare LF line ends are tolerated */
	check_frame("A: 1\nB: 2\n\nbody\n", "HA= 1|HB= 2|E|", "body\n");
	/* a CR not followed by LF stays in the value */
	check_frame("A: x\ry\r\n\r\n", "HA= x\ry|E|", "");
	/* a lone CR at the start of a line starts the body */
	check_frame("A: 1\r\n\rX\r\n", "HA= 1|E|", "\rX\r\n");
	/* a name left unterminated at the end */
	check_frame("A: 1\r\nNoColon", "HA= 1|E|", "NoColon");
	check_frame("A: 1\r\nName ", "HA= 1|E|", "Name ");
	check_frame("A: 1\r\n\r", "HA= 1|E|", "\r");
	/* 8-bit in a value is kept, in a name ends the header */
	check_frame("A: \xc3\xa9\r\n\xc3: x\r\n", "HA= \xc3\xa9|E|", "\xc3: x\r\n");
}

static void test_frame_big(void **state)
{
	(void)state;
	/* a body over several chunks */
	size_t blen = 3 * MILTER_CHUNK_MAX + 17;
	char *msg = malloc(blen + 64);
	size_t hl = (size_t)sprintf(msg, "Subject: big\r\n\r\n");
	for (size_t i = 0; i < blen; i++)
		msg[hl + i] = (char)('a' + i % 26);
	struct events e;
	frame(msg, hl + blen, 1000, &e);
	assert_string_equal(e.log.s, "HSubject= big|E|");
	assert_int_equal(e.body.len, blen);
	assert_memory_equal(e.body.s, msg + hl, blen);
	assert_int_equal(e.max_chunk, MILTER_CHUNK_MAX);
	assert_int_equal(e.nbody, 4);
	events_free(&e);
	free(msg);

	/* a header field over the field limit is cut, the body is intact */
	size_t flen = MILTER_FIELD_MAX + 5000;
	msg = malloc(flen + 64);
	memcpy(msg, "X-Long: ", 8);
	memset(msg + 8, 'v', flen);
	size_t o = 8 + flen;
	memcpy(msg + o, "\r\nTo: t\r\n\r\nB", 12);
	o += 12;
	frame(msg, o, 4096, &e);
	assert_true(e.log.len < MILTER_FIELD_MAX + 64);
	assert_non_null(strstr(e.log.s, "|HTo= t|E|"));
	assert_string_equal(e.body.s, "B");
	events_free(&e);
	/* a name over the name limit ends the header section */
	o = 0;
	for (size_t i = 0; i < MILTER_NAME_MAX + 10; i++)
		msg[o++] = 'N';
	o += (size_t)sprintf(msg + o, ": v\r\n");
	frame(msg, o, 0, &e);
	assert_string_equal(e.log.s, "E|");
	assert_int_equal(e.body.len, o);
	events_free(&e);
	free(msg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_packet_next),
		cmocka_unit_test(test_packet_hostile_lengths),
		cmocka_unit_test(test_optneg),
		cmocka_unit_test(test_optneg_macro_lists),
		cmocka_unit_test(test_simple_replies),
		cmocka_unit_test(test_skip_and_unknown),
		cmocka_unit_test(test_replycode),
		cmocka_unit_test(test_replycode_hostile),
		cmocka_unit_test(test_replycode_long),
		cmocka_unit_test(test_addheader),
		cmocka_unit_test(test_header_leadspc),
		cmocka_unit_test(test_header_mods_hostile),
		cmocka_unit_test(test_ins_chg_header),
		cmocka_unit_test(test_replbody),
		cmocka_unit_test(test_envelope_mods),
		cmocka_unit_test(test_quarantine),
		cmocka_unit_test(test_encoders),
		cmocka_unit_test(test_encode_then_cut),
		cmocka_unit_test(test_frame_basic),
		cmocka_unit_test(test_frame_big),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
