/*
 * test_smtp_reply - the reply table (every id has a well-formed row) and
 * reply formatting: %s substitution, sanitising of hostile arguments,
 * custom and multi-line replies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "smtp/smtp_reply.h"

/* reply - format id with arg into a fresh string (caller frees sb) */
static const char *reply(struct strbuf *sb, enum smtp_reply_id id, const char *arg)
{
	strbuf_init(sb);
	smtp_reply_add(sb, id, arg);
	return sb->s;
}

static void test_table(void **st)
{
	(void)st;
	for (int id = 0; id < SMTP_R_COUNT; id++) {
		const struct smtp_reply_def *d = smtp_reply_def((enum smtp_reply_id)id);
		assert_non_null(d);
		assert_true(d->code >= 200 && d->code <= 599);
		assert_non_null(d->text);
		assert_true(strlen(d->text) > 0);
		if (d->enh != NULL) {
			/* RFC 3463: the class matches the reply code's first digit */
			assert_int_equal(d->enh[0], '0' + d->code / 100);
			assert_int_equal(d->enh[1], '.');
		}
		/* at most one %s and no other conversion */
		const char *pct = strchr(d->text, '%');
		if (pct != NULL) {
			assert_int_equal(pct[1], 's');
			assert_null(strchr(pct + 1, '%'));
		}
		assert_string_not_equal(smtp_reply_id_str((enum smtp_reply_id)id), "?");
		assert_int_equal(smtp_reply_is_perm((enum smtp_reply_id)id), d->code >= 500);
		assert_int_equal(smtp_reply_is_temp((enum smtp_reply_id)id), d->code >= 400 && d->code < 500);
	}
	/* a broken id yields a sane temporary failure, not a crash */
	assert_int_equal(smtp_reply_def(SMTP_R_COUNT)->code, 451);
	assert_int_equal(smtp_reply_def((enum smtp_reply_id)-1)->code, 451);
	assert_string_equal(smtp_reply_id_str(SMTP_R_COUNT), "?");
	assert_string_equal(smtp_reply_id_str(SMTP_R_QUEUED), "queued");
}

static void test_format(void **st)
{
	struct strbuf sb;
	(void)st;
	assert_string_equal(reply(&sb, SMTP_R_GREETING, "mx.example.test"), "220 mx.example.test ESMTP Tern\r\n");
	strbuf_free(&sb);
	assert_string_equal(reply(&sb, SMTP_R_HELO, "mx.example.test"), "250 mx.example.test\r\n");
	strbuf_free(&sb);
	assert_string_equal(reply(&sb, SMTP_R_OK, NULL), "250 2.0.0 Ok\r\n");
	strbuf_free(&sb);
	assert_string_equal(reply(&sb, SMTP_R_QUEUED, "ABC123"), "250 2.0.0 Ok: queued as ABC123\r\n");
	strbuf_free(&sb);
	assert_string_equal(reply(&sb, SMTP_R_DATA_GO, NULL), "354 End data with <CR><LF>.<CR><LF>\r\n");
	strbuf_free(&sb);
	assert_string_equal(reply(&sb, SMTP_R_BYE, NULL), "221 2.0.0 Bye\r\n");
	strbuf_free(&sb);
	assert_string_equal(reply(&sb, SMTP_R_SYNTAX, NULL), "501 5.5.4 Syntax error: \r\n");
	strbuf_free(&sb);
	assert_string_equal(reply(&sb, SMTP_R_SENDER_SYNTAX, "trailing dot in domain"),
			    "501 5.1.7 Bad sender address syntax: trailing dot in domain\r\n");
	strbuf_free(&sb);
	assert_string_equal(reply(&sb, SMTP_R_TLS_READY, NULL), "220 2.0.0 Ready to start TLS\r\n");
	strbuf_free(&sb);
	assert_string_equal(reply(&sb, SMTP_R_SIZE_EXCEEDED, NULL), "552 5.3.4 Message size exceeds fixed limit\r\n");
	strbuf_free(&sb);
	/* replies append */
	strbuf_init(&sb);
	smtp_reply_add(&sb, SMTP_R_MAIL_OK, NULL);
	smtp_reply_add(&sb, SMTP_R_RCPT_OK, NULL);
	assert_string_equal(sb.s, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	strbuf_free(&sb);
	/* "%" in the argument is not a format */
	assert_string_equal(reply(&sb, SMTP_R_PARAM_UNKNOWN, "%s%n%x"), "555 5.5.4 Unsupported parameter: %s%n%x\r\n");
	strbuf_free(&sb);
}

static void test_sanitise(void **st)
{
	struct strbuf sb;
	char big[1000];
	(void)st;
	/* a CRLF in an argument can never inject a reply line */
	assert_string_equal(reply(&sb, SMTP_R_SYNTAX, "x\r\n250 2.0.0 Ok"), "501 5.5.4 Syntax error: x??250 2.0.0 Ok\r\n");
	strbuf_free(&sb);
	assert_string_equal(reply(&sb, SMTP_R_SYNTAX, "\x01\x1f\x7f\t"), "501 5.5.4 Syntax error: ????\r\n");
	strbuf_free(&sb);
	assert_string_equal(reply(&sb, SMTP_R_SYNTAX, "\xc3\xa9\xff"), "501 5.5.4 Syntax error: ???\r\n");
	strbuf_free(&sb);
	/* the UTF-8 variant keeps well-formed sequences only */
	strbuf_init(&sb);
	smtp_reply_add_utf8(&sb, SMTP_R_SYNTAX, "\xc3\xa9|\xff|\xc3|\xed\xa0\x80|\xf0\x9f\x98\x80");
	assert_string_equal(sb.s, "501 5.5.4 Syntax error: \xc3\xa9|?|?|???|\xf0\x9f\x98\x80\r\n");
	strbuf_free(&sb);
	/* capped */
	memset(big, 'A', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	reply(&sb, SMTP_R_SYNTAX, big);
	assert_int_equal(sb.len, strlen("501 5.5.4 Syntax error: ") + SMTP_REPLY_ARG_MAX + 3 + 2);
	assert_non_null(strstr(sb.s, "A...\r\n"));
	strbuf_free(&sb);
	/* a truncated UTF-8 argument is cut at a character boundary */
	for (size_t i = 0; i + 2 < sizeof big; i += 2)
		memcpy(big + i, "\xc3\xa9", 2);
	big[sizeof big - 2] = '\0';
	strbuf_init(&sb);
	smtp_reply_add_utf8(&sb, SMTP_R_SYNTAX, big + 1); /* starts mid-character */
	assert_true(sb.len < 300);
	assert_int_equal(sb.s[strlen("501 5.5.4 Syntax error: ")], '?');
	strbuf_free(&sb);
}

static void test_custom(void **st)
{
	struct strbuf sb;
	(void)st;
	strbuf_init(&sb);
	smtp_reply_add_custom(&sb, 450, "4.2.0", "Mailbox busy");
	smtp_reply_add_custom(&sb, 550, NULL, "No");
	smtp_reply_add_custom(&sb, 550, "4.1.1", "class mismatch: enh dropped");
	smtp_reply_add_custom(&sb, 550, "5.1.1x", "malformed enh dropped");
	smtp_reply_add_custom(&sb, 550, "5.1234.1", "malformed enh dropped");
	smtp_reply_add_custom(&sb, 999, "9.9.9", "bad code");
	smtp_reply_add_custom(&sb, 421, "4.7.0", "remote\r\nsaid");
	smtp_reply_add_custom(&sb, 250, "2.0.0", NULL);
	assert_string_equal(sb.s, "450 4.2.0 Mailbox busy\r\n"
				  "550 No\r\n"
				  "550 class mismatch: enh dropped\r\n"
				  "550 malformed enh dropped\r\n"
				  "550 malformed enh dropped\r\n"
				  "451 4.3.0 bad code\r\n"
				  "421 4.7.0 remote??said\r\n"
				  "250 2.0.0 \r\n");
	strbuf_free(&sb);
}

static void test_multi(void **st)
{
	struct strbuf sb;
	const char *ehlo[] = {"mx.example.test", "PIPELINING", "SIZE 10240000", "8BITMIME"};
	const char *one[] = {"only"};
	const char *evil[] = {"a\r\n250 x", NULL};
	(void)st;
	strbuf_init(&sb);
	smtp_reply_add_multi(&sb, 250, ehlo, 4);
	assert_string_equal(sb.s, "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n");
	strbuf_free(&sb);
	strbuf_init(&sb);
	smtp_reply_add_multi(&sb, 214, one, 1);
	assert_string_equal(sb.s, "214 only\r\n");
	strbuf_free(&sb);
	strbuf_init(&sb);
	smtp_reply_add_multi(&sb, 250, one, 0);
	assert_string_equal(sb.s, "250\r\n");
	strbuf_free(&sb);
	strbuf_init(&sb);
	smtp_reply_add_multi(&sb, 250, evil, 2);
	assert_string_equal(sb.s, "250-a??250 x\r\n250 \r\n");
	strbuf_free(&sb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_sanitise),
		cmocka_unit_test(test_custom),
		cmocka_unit_test(test_multi),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
