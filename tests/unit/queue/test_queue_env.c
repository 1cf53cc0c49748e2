/*
 * test_queue_env - the queue file's envelope format, the state log and
 * queue IDs: round trips, hostile headers, torn and hostile state records.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "queue/queue.h"
#include "queue/queue_int.h"

/* sample_env - an envelope using every field, with awkward values */
static void sample_env(struct envelope *e)
{
	env_init(e);
	memcpy(e->qid, "0123456789ABCDEF", 17);
	e->arrival = 1700000000;
	e->sender = strdup("bounce+x=y@example.org");
	e->body = ENV_BODY_8BITMIME;
	e->smtputf8 = 1;
	e->ret = ENV_RET_HDRS;
	e->envid = strdup("QQ+2B1");
	e->client_addr = strdup("192.0.2.1");
	e->helo = strdup("mail.example.org");
	e->auth_user = strdup("alice@example.org");
	env_rcpt_add(e, "\"john  doe\"@example.test", "rfc822;\"john  doe\"@example.test", ENV_NOTIFY_SUCCESS | ENV_NOTIFY_FAILURE);
	env_rcpt_add(e, "bob@example.test", NULL, 0);
	env_rcpt_add(e, "carol@example.test", "-", ENV_NOTIFY_NEVER);
	env_rcpt_add(e, " lead@example.test", "rfc822;100%@x", ENV_NOTIFY_DELAY);
}

/* parse_str - parse a NUL-terminated header */
static int parse_str(const char *s, struct envelope *e)
{
	size_t used;
	char err[256];
	return queue_env_parse(s, strlen(s), e, &used, err, sizeof(err));
}

static void assert_str_eq_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void test_roundtrip(void **state)
{
	(void)state;
	struct envelope e, p;
	sample_env(&e);
	char err[256];
	assert_int_equal(queue_env_check(&e, err, sizeof(err)), 0);
	struct strbuf sb;
	strbuf_init(&sb);
	queue_env_format(&e, &sb);
	/* with content and trailer after it: the parser stops at "content" */
	size_t hlen = sb.len;
	strbuf_adds(&sb, "body bytes\nTERN-END 10\n");
	size_t used = 0;
	assert_int_equal(queue_env_parse(sb.s, sb.len, &p, &used, err, sizeof(err)), 0);
	assert_int_equal(used, hlen);
	assert_string_equal(p.qid, e.qid);
	assert_int_equal(p.arrival, e.arrival);
	assert_string_equal(p.sender, e.sender);
	assert_int_equal(p.body, e.body);
	assert_int_equal(p.smtputf8, 1);
	assert_int_equal(p.ret, ENV_RET_HDRS);
	assert_string_equal(p.envid, e.envid);
	assert_string_equal(p.client_addr, e.client_addr);
	assert_string_equal(p.helo, e.helo);
	assert_string_equal(p.auth_user, e.auth_user);
	assert_int_equal(p.nrcpts, 4);
	for (size_t i = 0; i < 4; i++) {
		assert_string_equal(p.rcpts[i].addr, e.rcpts[i].addr);
		assert_str_eq_null(p.rcpts[i].orcpt, e.rcpts[i].orcpt);
		assert_int_equal(p.rcpts[i].notify, e.rcpts[i].notify);
		assert_int_equal(p.rcpts[i].state, ENV_RCPT_PENDING);
	}
	/* formatting what was parsed gives the same text */
	struct strbuf sb2;
	strbuf_init(&sb2);
	queue_env_format(&p, &sb2);
	assert_int_equal(sb2.len, hlen);
	assert_memory_equal(sb2.s, sb.s, hlen);
	strbuf_free(&sb);
	strbuf_free(&sb2);
	env_free(&e);
	env_free(&p);
}

static void test_roundtrip_minimal(void **state)
{
	(void)state;
	/* null sender, no optional fields, many recipients */
	struct envelope e, p;
	env_init(&e);
	memcpy(e.qid, "00000000000000ZZ", 17);
	e.sender = strdup("");
	char a[64];
	for (int i = 0; i < 1000; i++) {
		snprintf(a, sizeof(a), "user%d@example.test", i);
		env_rcpt_add(&e, a, NULL, (unsigned)(i % 16));
	}
	struct strbuf sb;
	strbuf_init(&sb);
	queue_env_format(&e, &sb);
	assert_non_null(strstr(sb.s, "\nsender\n"));
	assert_int_equal(parse_str(sb.s, &p), 0);
	assert_string_equal(p.sender, "");
	assert_null(p.envid);
	assert_null(p.client_addr);
	assert_null(p.helo);
	assert_null(p.auth_user);
	assert_int_equal(p.ret, ENV_RET_DEFAULT);
	assert_int_equal(p.body, ENV_BODY_7BIT);
	assert_int_equal(p.nrcpts, 1000);
	assert_string_equal(p.rcpts[999].addr, "user999@example.test");
	assert_int_equal(p.rcpts[999].notify, 999 % 16);
	strbuf_free(&sb);
	env_free(&e);
	env_free(&p);
}

static const char good_hdr[] = "TERN-QUEUE 1\n"
			       "qid 0123456789ABCDEF\n"
			       "arrival 1\n"
			       "sender a@b\n"
			       "rcpt 0 - c@d\n"
			       "content\n";

/* expect_bad - a header the parser must refuse (and leave env empty) */
static void expect_bad(const char *p, size_t n)
{
	struct envelope e;
	size_t used = 12345;
	char err[256] = "";
	assert_int_equal(queue_env_parse(p, n, &e, &used, err, sizeof(err)), -1);
	assert_true(err[0] != '\0');
	assert_int_equal(e.nrcpts, 0);
	assert_null(e.sender);
	assert_null(e.rcpts);
}

/* replace - good_hdr with one line replaced (or removed when to is "") */
static char *replace(const char *from, const char *to)
{
	const char *at = strstr(good_hdr, from);
	assert_non_null(at);
	size_t n = strlen(good_hdr) - strlen(from) + strlen(to) + 1;
	char *s = malloc(n);
	snprintf(s, n, "%.*s%s%s", (int)(at - good_hdr), good_hdr, to, at + strlen(from));
	return s;
}

static void test_hostile_headers(void **state)
{
	(void)state;
	struct envelope e;
	assert_int_equal(parse_str(good_hdr, &e), 0);
	env_free(&e);

	static const char *const edits[][2] = {
		{"TERN-QUEUE 1\n", "TERN-QUEUE 3\n"},
		{"TERN-QUEUE 1\n", "TERN-QUEUE 0\n"},
		{"TERN-QUEUE 1\n", "TERN-QUEUE 10\n"},
		{"TERN-QUEUE 1\n", "TERN-QUEUE\n"},
		{"TERN-QUEUE 1\n", "XTERN 1\n"},
		{"TERN-QUEUE 1\n", ""},
		{"qid 0123456789ABCDEF\n", ""},
		{"qid 0123456789ABCDEF\n", "qid ../x\n"},
		{"qid 0123456789ABCDEF\n", "qid 0123456789abcdef\n"},
		{"qid 0123456789ABCDEF\n", "qid 0123456789ABCDE\n"},
		{"qid 0123456789ABCDEF\n", "qid 0123456789ABCDEFG\n"},
		{"qid 0123456789ABCDEF\n", "qid 0123456789ABCDEI\n"},
		{"arrival 1\n", ""},
		{"arrival 1\n", "arrival -1\n"},
		{"arrival 1\n", "arrival 99999999999999999999999\n"},
		{"arrival 1\n", "arrival 1x\n"},
		{"sender a@b\n", ""},
		{"sender a@b\n", "sender a\r@b\n"},
		{"sender a@b\n", "sender a@b\nsender c@d\n"},
		{"rcpt 0 - c@d\n", ""},
		{"rcpt 0 - c@d\n", "rcpt 0 -\n"},
		{"rcpt 0 - c@d\n", "rcpt 0 - \n"},
		{"rcpt 0 - c@d\n", "rcpt 16 - c@d\n"},
		{"rcpt 0 - c@d\n", "rcpt x - c@d\n"},
		{"rcpt 0 - c@d\n", "rcpt 0  c@d\n"},
		{"rcpt 0 - c@d\n", "rcpt 0 %ZZ c@d\n"},
		{"rcpt 0 - c@d\n", "rcpt 0 a%4 c@d\n"},
		{"rcpt 0 - c@d\n", "rcpt 0 a%0D c@d\n"},
		{"rcpt 0 - c@d\n", "rcpt 0 a%00 c@d\n"},
		{"rcpt 0 - c@d\n", "rcpt 0 - c@d\r\n"},
		{"content\n", ""},
		{"content\n", "content x\n"},
		{"content\n", "contents\n"},
		{"sender a@b\n", "sender a@b\nfuture 1\n"},
		{"sender a@b\n", "sender a@b\n\n"},
		{"sender a@b\n", "sender a@b\nbody 9BIT\n"},
		{"sender a@b\n", "sender a@b\nsmtputf8 2\n"},
		{"sender a@b\n", "sender a@b\nret NONE\n"},
		{"sender a@b\n", "sender a@b\nhelo x\nhelo y\n"},
	};
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		char *s = replace(edits[i][0], edits[i][1]);
		expect_bad(s, strlen(s));
		free(s);
	}
	/* NUL inside a value */
	char nul[sizeof(good_hdr)];
	memcpy(nul, good_hdr, sizeof(good_hdr));
	nul[strstr(good_hdr, "a@b") - good_hdr + 1] = '\0';
	expect_bad(nul, sizeof(good_hdr) - 1);
	/* every prefix of a good header is incomplete */
	for (size_t n = 0; n < sizeof(good_hdr) - 1; n++)
		expect_bad(good_hdr, n);
}

static void test_overlong(void **state)
{
	(void)state;
	char *big = malloc(QUEUE_VALUE_MAX + 2);
	memset(big, 'x', QUEUE_VALUE_MAX + 1);
	big[QUEUE_VALUE_MAX + 1] = '\0';
	struct strbuf sb;
	strbuf_init(&sb);
	/* a value of exactly the maximum is fine, one more byte is not */
	big[QUEUE_VALUE_MAX] = '\0';
	strbuf_addf(&sb, "sender %s\n", big);
	char *s = replace("sender a@b\n", sb.s);
	struct envelope e;
	assert_int_equal(parse_str(s, &e), 0);
	env_free(&e);
	free(s);
	big[QUEUE_VALUE_MAX] = 'x';
	strbuf_reset(&sb);
	strbuf_addf(&sb, "sender %s\n", big);
	s = replace("sender a@b\n", sb.s);
	expect_bad(s, strlen(s));
	free(s);
	strbuf_reset(&sb);
	strbuf_addf(&sb, "rcpt 0 - %s\n", big);
	s = replace("rcpt 0 - c@d\n", sb.s);
	expect_bad(s, strlen(s));
	free(s);
	/* a huge line without a newline */
	size_t hn = 1 << 20;
	char *huge = malloc(hn);
	memcpy(huge, good_hdr, 13);
	memset(huge + 13, 'A', hn - 13);
	expect_bad(huge, hn);
	free(huge);
	strbuf_free(&sb);
	free(big);
}

static void test_garbage(void **state)
{
	(void)state;
	unsigned seed = 12345;
	char buf[512];
	for (int round = 0; round < 2000; round++) {
		size_t n = (size_t)(rand_r(&seed) % sizeof(buf));
		for (size_t i = 0; i < n; i++)
			buf[i] = (char)(rand_r(&seed) & 0xff);
		if (round % 2)
			memcpy(buf, "TERN-QUEUE 1\n", n < 13 ? n : 13);
		struct envelope e;
		size_t used;
		char err[128];
		if (queue_env_parse(buf, n, &e, &used, err, sizeof(err)) == 0)
			env_free(&e);
	}
}

static void test_env_check(void **state)
{
	(void)state;
	struct envelope e;
	char err[256];
	sample_env(&e);
	assert_int_equal(queue_env_check(&e, err, sizeof(err)), 0);
	free(e.helo);
	e.helo = strdup("evil\r\nrcpt 0 - x@y");
	assert_int_equal(queue_env_check(&e, err, sizeof(err)), -1);
	env_free(&e);

	sample_env(&e);
	free(e.sender);
	e.sender = strdup("a\nb");
	assert_int_equal(queue_env_check(&e, err, sizeof(err)), -1);
	free(e.sender);
	e.sender = NULL;
	assert_int_equal(queue_env_check(&e, err, sizeof(err)), -1);
	env_free(&e);

	sample_env(&e);
	free(e.rcpts[1].addr);
	e.rcpts[1].addr = strdup("x\r@y");
	assert_int_equal(queue_env_check(&e, err, sizeof(err)), -1);
	env_free(&e);

	sample_env(&e);
	free(e.rcpts[1].orcpt);
	e.rcpts[1].orcpt = strdup("rfc822;x\n@y");
	assert_int_equal(queue_env_check(&e, err, sizeof(err)), -1);
	env_free(&e);

	env_init(&e);
	e.sender = strdup("");
	assert_int_equal(queue_env_check(&e, err, sizeof(err)), -1); /* no rcpt */
	env_free(&e);
}

static void test_state_apply(void **state)
{
	(void)state;
	struct envelope e;
	sample_env(&e);
	const char log[] = "0 pending 1 1700000100 421 try later\n"
			   "1 delivered 1 0 250 ok\n"
			   "0 failed 2 0 550 5.1.1 no such user\n"
			   "hold 1\n"
			   "9 delivered 1 0 out of range\n"
			   "2 bogus 1 0 x\n"
			   "2 delivered -1 0 x\n"
			   "2 delivered 1 99999999999999999999 x\n"
			   "2 delivered 1\n"
			   "2 delivered 1 0 bad\rcr\n"
			   "hold 2\n"
			   "\n"
			   "garbage line\n"
			   "3 pending 4 1800000000 \n"
			   "2 delivered 1 0 torn last line without newline";
	queue_state_apply(log, sizeof(log) - 1, &e);
	assert_int_equal(e.rcpts[0].state, ENV_RCPT_FAILED);
	assert_int_equal(e.rcpts[0].attempts, 2);
	assert_string_equal(e.rcpts[0].last_error, "550 5.1.1 no such user");
	assert_int_equal(e.rcpts[1].state, ENV_RCPT_DELIVERED);
	assert_string_equal(e.rcpts[1].last_error, "250 ok");
	assert_int_equal(e.rcpts[2].state, ENV_RCPT_PENDING); /* nothing valid for it */
	assert_int_equal(e.rcpts[2].attempts, 0);
	assert_int_equal(e.rcpts[3].attempts, 4);
	assert_int_equal(e.rcpts[3].next_attempt, 1800000000);
	assert_null(e.rcpts[3].last_error);
	assert_int_equal(e.held, 1);
	queue_state_apply("hold 0\n", 7, &e);
	assert_int_equal(e.held, 0);
	env_free(&e);
}

static void test_trailer(void **state)
{
	(void)state;
	uint64_t len, gap;
	/* version 1: one number, no gap */
	const char t[] = "xyz\nTERN-END 3\n";
	/* header 10 bytes + "xyz" + trailer 12 = 25 */
	assert_int_equal(queue_trailer_check(t, sizeof(t) - 1, 25, 10, 1, &gap, &len), 0);
	assert_int_equal(len, 3);
	assert_int_equal(gap, 0);
	assert_int_equal(queue_trailer_check(t, sizeof(t) - 1, 26, 10, 1, &gap, &len), -1);
	assert_int_equal(queue_trailer_check(t, sizeof(t) - 2, 24, 10, 1, &gap, &len), -1);
	/* a version 1 marker is not a version 2 one, nor the other way */
	assert_int_equal(queue_trailer_check(t, sizeof(t) - 1, 25, 10, 2, &gap, &len), -1);
	const char z[] = "\nTERN-END 03\n";
	assert_int_equal(queue_trailer_check(z, sizeof(z) - 1, 10 + 3 + 13, 10, 1, &gap, &len), -1);
	const char big[] = "\nTERN-END 99999999999999999999\n";
	assert_int_equal(queue_trailer_check(big, sizeof(big) - 1, 100, 10, 1, &gap, &len), -1);
	assert_int_equal(queue_trailer_check("\n", 1, 1, 0, 1, &gap, &len), -1);
	assert_int_equal(queue_trailer_check("\n", 1, 1, 0, 2, &gap, &len), -1);
	assert_int_equal(queue_trailer_check(t, sizeof(t) - 1, 25, 10, 3, &gap, &len), -1);

	/* version 2: gap and length; header 10 + gap 100 + "xyz" + trailer 14 */
	const char v2[] = "xyz\nTERN-END 100 3\n";
	const uint64_t tl = sizeof(v2) - 1 - 3;
	assert_int_equal(queue_trailer_check(v2, sizeof(v2) - 1, 10 + 100 + 3 + tl, 10, 2, &gap, &len), 0);
	assert_int_equal(gap, 100);
	assert_int_equal(len, 3);
	assert_int_equal(queue_trailer_check(v2, sizeof(v2) - 1, 10 + 100 + 3 + tl + 1, 10, 2, &gap, &len), -1);
	assert_int_equal(queue_trailer_check(v2, sizeof(v2) - 1, 10 + 100 + 3 + tl - 1, 10, 2, &gap, &len), -1);
	assert_int_equal(queue_trailer_check(v2, sizeof(v2) - 1, 10 + 100 + 3 + tl, 10, 1, &gap, &len), -1);
	/* gap 0 (a copied file) and the largest gap */
	const char g0[] = "\nTERN-END 0 3\n";
	assert_int_equal(queue_trailer_check(g0, sizeof(g0) - 1, 10 + 3 + sizeof(g0) - 1, 10, 2, &gap, &len), 0);
	assert_int_equal(gap, 0);
	const char gmax[] = "\nTERN-END 4096 0\n";
	assert_int_equal(queue_trailer_check(gmax, sizeof(gmax) - 1, 10 + 4096 + sizeof(gmax) - 1, 10, 2, &gap, &len),
			 0);
	/* hostile markers: a gap beyond the reserve, non-canonical numbers,
	 * missing parts, numbers that overflow or exceed the file */
	static const char *const bad[] = {
		"\nTERN-END 4097 0\n", "\nTERN-END 01 3\n", "\nTERN-END 1 03\n",  "\nTERN-END  3\n",
		"\nTERN-END 1  3\n",   "\nTERN-END 3\n",    "\nTERN-END 1 3",      "\nTERN-END 1 3 \n",
		"\nTERN-END -1 3\n",   "TERN-END 1 3\n",    "\nTERN-END 1 99999999999999999999\n",
		"\nTERN-END 1 18446744073709551615\n",      "\nTERN-END 1\t3\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = strlen(bad[i]);
		for (uint64_t size = n; size < n + 5000; size += 7)
			assert_int_equal(queue_trailer_check(bad[i], n, size, 10 < size - n ? 10 : 0, 2, &gap, &len), -1);
	}
	/* the numbers must add up exactly, for every split of the file */
	for (uint64_t hdr = 0; hdr < 20; hdr++)
		assert_int_equal(queue_trailer_check(v2, sizeof(v2) - 1, hdr + 100 + 3 + tl, hdr, 2, &gap, &len), 0);
}

static void test_id_valid(void **state)
{
	(void)state;
	assert_true(queue_id_valid("0123456789ABCDEF"));
	assert_true(queue_id_valid("ZZZZZZZZZZZZZZZZ"));
	assert_false(queue_id_valid("../x"));
	assert_false(queue_id_valid("../../etc/passwd"));
	assert_false(queue_id_valid("0123456789ABCDE/"));
	assert_false(queue_id_valid("0123456789abcdef"));
	assert_false(queue_id_valid("0123456789ABCDE"));
	assert_false(queue_id_valid("0123456789ABCDEFG"));
	assert_false(queue_id_valid("0123456789ABCDEI"));
	assert_false(queue_id_valid("0123456789ABCDEL"));
	assert_false(queue_id_valid("0123456789ABCDEO"));
	assert_false(queue_id_valid("0123456789ABCDEU"));
	assert_false(queue_id_valid(""));
	assert_false(queue_id_valid(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),   cmocka_unit_test(test_roundtrip_minimal),
		cmocka_unit_test(test_hostile_headers), cmocka_unit_test(test_overlong),
		cmocka_unit_test(test_garbage),     cmocka_unit_test(test_env_check),
		cmocka_unit_test(test_state_apply), cmocka_unit_test(test_trailer),
		cmocka_unit_test(test_id_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
