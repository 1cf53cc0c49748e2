/*
 * test_smtp_policy - the session's policy hook (ops->stage_check,
 * smtp_session_stage_done, smtp_session_commit_verdict, ops->txn_end)
 * against fake ops: every verdict at every stage, custom reply checks,
 * pipelined input and disconnects while a check is in flight, and random
 * sessions with random verdicts.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_server/fake_ops.h"

#define GREETING "220 mx.example.test ESMTP Tern\r\n"

/* world - a fake world, not started */
static struct fake *world(void)
{
	struct fake *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(fake_init(f, NULL, 0), 0);
	return f;
}

static void done(struct fake *f)
{
	fake_fini(f);
	free(f);
}

/* verdict - shorthand */
static struct smtp_verdict verdict(enum smtp_verdict_kind k, const char *reply)
{
	struct smtp_verdict v;
	smtp_verdict_set(&v, k, reply, "test");
	return v;
}

/* expect - send text, compare everything replied */
static void expect(struct fake *f, const char *send, const char *want)
{
	fake_send(f, send);
	assert_string_equal(fake_take(f), want);
}

/* up_to - drive a fresh session to just before the given stage's
 * command: HELO; MAIL; for RCPT and DATA also MAIL and RCPT alice */
static void up_to(struct fake *f, enum smtp_stage st)
{
	fake_start(f, 0);
	assert_string_equal(fake_take(f), GREETING);
	if (st == SMTP_STAGE_HELO)
		return;
	expect(f, "HELO client.example\r\n", "250 mx.example.test\r\n");
	if (st == SMTP_STAGE_MAIL)
		return;
	expect(f, "MAIL FROM:<a@remote.example>\r\n", "250 2.1.0 Ok\r\n");
	expect(f, "RCPT TO:<alice@example.test>\r\n", "250 2.1.5 Ok\r\n");
}

static const char *const stage_cmd[] = {
	[SMTP_STAGE_CONNECT] = "",
	[SMTP_STAGE_HELO] = "HELO client.example\r\n",
	[SMTP_STAGE_MAIL] = "MAIL FROM:<b@remote.example>\r\n",
	[SMTP_STAGE_RCPT] = "RCPT TO:<bob@example.test>\r\n",
	[SMTP_STAGE_DATA] = "DATA\r\n",
};

static const char *const stage_ok[] = {
	[SMTP_STAGE_CONNECT] = GREETING,
	[SMTP_STAGE_HELO] = "250 mx.example.test\r\n",
	[SMTP_STAGE_MAIL] = "250 2.1.0 Ok\r\n",
	[SMTP_STAGE_RCPT] = "250 2.1.5 Ok\r\n",
	[SMTP_STAGE_DATA] = "354 End data with <CR><LF>.<CR><LF>\r\n",
};

static const char *const stage_reject[] = {
	[SMTP_STAGE_CONNECT] = "554 5.7.1 Connection refused by policy\r\n",
	[SMTP_STAGE_HELO] = "550 5.7.1 HELO rejected by policy\r\n",
	[SMTP_STAGE_MAIL] = "550 5.7.1 Sender rejected by policy\r\n",
	[SMTP_STAGE_RCPT] = "550 5.7.1 Recipient rejected by policy\r\n",
	[SMTP_STAGE_DATA] = "550 5.7.1 Message rejected by policy\r\n",
};

static const char *const stage_tempfail[] = {
	[SMTP_STAGE_CONNECT] = "421 4.7.1 Service temporarily unavailable, closing connection\r\n",
	[SMTP_STAGE_HELO] = "451 4.7.1 HELO temporarily rejected by policy, try again later\r\n",
	[SMTP_STAGE_MAIL] = "451 4.7.1 Sender temporarily rejected by policy, try again later\r\n",
	[SMTP_STAGE_RCPT] = "451 4.7.1 Recipient temporarily rejected by policy, try again later\r\n",
	[SMTP_STAGE_DATA] = "451 4.7.1 Message temporarily rejected by policy, try again later\r\n",
};

/* after_refusal - the session after a refused stage: state and envelope */
static void after_refusal(struct fake *f, enum smtp_stage st, enum smtp_verdict_kind k)
{
	const char *state = smtp_session_state_str(f->s);
	if (k == SMTP_VERDICT_SHUTDOWN || st == SMTP_STAGE_CONNECT) {
		assert_true(smtp_session_closed(f->s));
		assert_int_equal(f->nclose, 1);
		return;
	}
	assert_false(smtp_session_closed(f->s));
	switch (st) {
	case SMTP_STAGE_HELO:
		assert_string_equal(state, "greeted");
		assert_null(smtp_session_helo(f->s));
		break;
	case SMTP_STAGE_MAIL:
	case SMTP_STAGE_DATA:
		assert_string_equal(state, "ready");
		assert_null(smtp_session_envelope(f->s)->sender);
		break;
	case SMTP_STAGE_RCPT:
		/* bob was taken out again; alice stays */
		assert_string_equal(state, "rcpt");
		assert_int_equal(smtp_session_envelope(f->s)->nrcpts, 1);
		assert_string_equal(smtp_session_envelope(f->s)->rcpts[0].addr, "alice@example.test");
		break;
	default:
		break;
	}
}

/* test_every_verdict_every_stage - answered at once and deferred */
static void test_every_verdict_every_stage(void **state)
{
	(void)state;
	static const enum smtp_verdict_kind kinds[] = {SMTP_VERDICT_CONTINUE, SMTP_VERDICT_REJECT,
						       SMTP_VERDICT_TEMPFAIL, SMTP_VERDICT_DISCARD,
						       SMTP_VERDICT_SHUTDOWN};
	for (int deferred = 0; deferred < 2; deferred++) {
		for (int st = SMTP_STAGE_CONNECT; st <= SMTP_STAGE_DATA; st++) {
			for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
				struct fake *f = world();
				struct smtp_verdict v = verdict(kinds[k], NULL);
				if (st == SMTP_STAGE_CONNECT) {
					f->stage_defer[st] = deferred;
					f->stage_verdict[st] = v;
					fake_start(f, 0);
				} else {
					up_to(f, (enum smtp_stage)st);
					f->stage_defer[st] = deferred;
					f->stage_verdict[st] = v;
					fake_send(f, stage_cmd[st]);
				}
				if (deferred) {
					assert_string_equal(fake_take(f), "");
					assert_int_equal(smtp_session_wants_input(f->s), 0);
					assert_true(strncmp(smtp_session_state_str(f->s), "check-", 6) == 0);
					fake_stage_finish(f, &v);
				}
				const char *r = fake_take(f);
				switch (kinds[k]) {
				case SMTP_VERDICT_CONTINUE:
				case SMTP_VERDICT_DISCARD:
					assert_string_equal(r, stage_ok[st]);
					assert_int_equal(smtp_session_wants_input(f->s), 1);
					break;
				case SMTP_VERDICT_REJECT:
					assert_string_equal(r, stage_reject[st]);
					after_refusal(f, (enum smtp_stage)st, kinds[k]);
					break;
				case SMTP_VERDICT_TEMPFAIL:
					assert_string_equal(r, stage_tempfail[st]);
					after_refusal(f, (enum smtp_stage)st, kinds[k]);
					break;
				case SMTP_VERDICT_SHUTDOWN:
					assert_string_equal(r, "421 4.7.0 Connection closed by policy\r\n");
					after_refusal(f, (enum smtp_stage)st, kinds[k]);
					break;
				}
				/* RCPT: alice's, then bob's */
				assert_int_equal(f->nstage_checks[st], st == SMTP_STAGE_RCPT ? 2u : 1u);
				/* a transaction whose MAIL was checked always ends with txn_end */
				if (st >= SMTP_STAGE_MAIL) {
					fake_send(f, "QUIT\r\n");
					smtp_session_eof(f->s);
					assert_int_equal(f->ntxn_end, 1);
				} else {
					assert_int_equal(f->ntxn_end, 0);
				}
				done(f);
			}
		}
	}
}

/* test_eom_every_verdict - the commit answered by a verdict */
static void test_eom_every_verdict(void **state)
{
	(void)state;
	struct {
		enum smtp_verdict_kind k;
		const char *reply, *want;
		int closed;
	} cases[] = {
		{SMTP_VERDICT_REJECT, NULL, "550 5.7.1 Message rejected by policy\r\n", 0},
		{SMTP_VERDICT_REJECT, "554 5.7.1 Spam", "554 5.7.1 Spam\r\n", 0},
		{SMTP_VERDICT_TEMPFAIL, NULL, "451 4.7.1 Message temporarily rejected by policy, try again later\r\n", 0},
		{SMTP_VERDICT_TEMPFAIL, "452-4.3.1 a\r\n452 4.3.1 b", "452-4.3.1 a\r\n452 4.3.1 b\r\n", 0},
		{SMTP_VERDICT_DISCARD, "550 ignored", "250 2.0.0 Ok: queued as Q0001\r\n", 0},
		{SMTP_VERDICT_SHUTDOWN, NULL, "421 4.7.0 Connection closed by policy\r\n", 1},
		/* CONTINUE is a caller bug: never a 250 without a commit */
		{SMTP_VERDICT_CONTINUE, NULL, "451 4.7.1 Message temporarily rejected by policy, try again later\r\n", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int deferred = 0; deferred < 2; deferred++) {
			struct fake *f = world();
			up_to(f, SMTP_STAGE_DATA);
			struct smtp_verdict v = verdict(cases[i].k, cases[i].reply);
			f->eom_verdict = v;
			f->eom_refuse = 1;
			f->commit_deferred = deferred;
			expect(f, "DATA\r\n", stage_ok[SMTP_STAGE_DATA]);
			fake_send(f, "Subject: x\r\n\r\nbody\r\n.\r\n");
			if (deferred) {
				assert_string_equal(smtp_session_state_str(f->s), "commit");
				assert_string_equal(fake_take(f), "");
				fake_commit_verdict(f, &v);
			}
			assert_string_equal(fake_take(f), cases[i].want);
			assert_int_equal(f->naccepted, 0);
			assert_int_equal(f->ncommit_verdicts, 1);
			assert_int_equal(f->ntxn_end, 1);
			assert_int_equal(smtp_session_closed(f->s), cases[i].closed);
			if (!cases[i].closed) {
				assert_string_equal(smtp_session_state_str(f->s), "ready");
				expect(f, "MAIL FROM:<>\r\n", "250 2.1.0 Ok\r\n");
			}
			done(f);
		}
	}
}

/* test_reply_valid - which custom replies a policy may send */
static void test_reply_valid(void **state)
{
	(void)state;
	struct {
		enum smtp_verdict_kind k;
		const char *r;
		int ok;
	} cases[] = {
		{SMTP_VERDICT_REJECT, "550 5.7.1 No", 1},
		{SMTP_VERDICT_REJECT, "550", 1},
		{SMTP_VERDICT_REJECT, "554 text without enhanced code", 1},
		{SMTP_VERDICT_REJECT, "550-5.7.1 a\r\n550-5.7.1 b\r\n550 5.7.1 c", 1},
		{SMTP_VERDICT_TEMPFAIL, "451 4.7.1 later", 1},
		{SMTP_VERDICT_SHUTDOWN, "421 4.7.0 bye", 1},
		{SMTP_VERDICT_SHUTDOWN, "451 4.7.0 not 421", 0},
		{SMTP_VERDICT_REJECT, "450 4.7.1 wrong class", 0},
		{SMTP_VERDICT_TEMPFAIL, "550 5.7.1 wrong class", 0},
		{SMTP_VERDICT_REJECT, "250 2.0.0 success", 0},
		{SMTP_VERDICT_REJECT, "550 4.7.1 enhanced class differs", 0},
		{SMTP_VERDICT_REJECT, "560 5.7.1 second digit", 0},
		{SMTP_VERDICT_REJECT, "55 short", 0},
		{SMTP_VERDICT_REJECT, "5500 long code", 0},
		{SMTP_VERDICT_REJECT, "550x5.7.1", 0},
		{SMTP_VERDICT_REJECT, "550 5.7.1 a\r\n250 2.0.0 b", 0},
		{SMTP_VERDICT_REJECT, "550-5.7.1 a\r\n551 5.7.1 b", 0},
		{SMTP_VERDICT_REJECT, "550-5.7.1 a\r\n", 0},
		{SMTP_VERDICT_REJECT, "550-5.7.1 last line continued", 0},
		{SMTP_VERDICT_REJECT, "550 5.7.1 a\rb", 0},
		{SMTP_VERDICT_REJECT, "550 5.7.1 a\nb", 0},
		{SMTP_VERDICT_REJECT, "550 5.7.1 tab\there", 0},
		{SMTP_VERDICT_REJECT, "550 5.7.1 8bit \xc3\xa9", 0},
		{SMTP_VERDICT_REJECT, "550 5.7.1 del \x7f", 0},
		{SMTP_VERDICT_REJECT, "", 0},
		{SMTP_VERDICT_CONTINUE, "550 5.7.1 x", 0},
		{SMTP_VERDICT_DISCARD, "250 2.0.0 x", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (smtp_verdict_reply_valid(cases[i].k, cases[i].r) != cases[i].ok)
			fail_msg("case %zu \"%s\": expected %d", i, cases[i].r, cases[i].ok);
	/* too long to be one reply: refused, never cut into something else */
	char big[SMTP_VERDICT_REPLY_MAX + 10];
	memset(big, 'x', sizeof(big));
	memcpy(big, "550 ", 4);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(smtp_verdict_reply_valid(SMTP_VERDICT_REJECT, big), 0);
	/* smtp_verdict_set truncates: the stored reply is then valid */
	struct smtp_verdict v;
	smtp_verdict_set(&v, SMTP_VERDICT_REJECT, big, "a why longer than sixty-four octets is cut short, never overflowing");
	assert_int_equal(strlen(v.reply), SMTP_VERDICT_REPLY_MAX - 1);
	assert_int_equal(strlen(v.why), sizeof(v.why) - 1);
	assert_int_equal(smtp_verdict_reply_valid(SMTP_VERDICT_REJECT, v.reply), 1);
	assert_string_equal(smtp_stage_str(SMTP_STAGE_RCPT), "rcpt");
	assert_string_equal(smtp_verdict_kind_str(SMTP_VERDICT_DISCARD), "discard");
	assert_string_equal(smtp_stage_str((enum smtp_stage)99), "unknown");
}

/* test_pipelined_during_check - input waits, is answered in order; too
 * much of it ends the session after the check */
static void test_pipelined_during_check(void **state)
{
	(void)state;
	struct fake *f = world();
	up_to(f, SMTP_STAGE_MAIL);
	f->stage_defer[SMTP_STAGE_MAIL] = 1;
	fake_send(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nNO");
	assert_string_equal(fake_take(f), "");
	assert_int_equal(smtp_session_wants_input(f->s), 0);
	/* byte by byte while waiting: kept, not acted on */
	const char *rest = "OP\r\nRSET\r\n";
	for (const char *p = rest; *p; p++)
		fake_sendn(f, p, 1);
	assert_string_equal(fake_take(f), "");
	assert_int_equal(f->nrcpt_checks, 0);
	struct smtp_verdict v = verdict(SMTP_VERDICT_CONTINUE, NULL);
	size_t w = f->nwrites;
	fake_stage_finish(f, &v);
	assert_int_equal(f->nwrites, w + 1);
	assert_string_equal(fake_take(f), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
	assert_int_equal(f->ntxn_end, 1); /* the RSET */
	done(f);

	/* a client that ignores wants_input fills the buffer: 421 after */
	f = world();
	up_to(f, SMTP_STAGE_MAIL);
	f->stage_defer[SMTP_STAGE_MAIL] = 1;
	fake_send(f, "MAIL FROM:<a@remote.example>\r\n");
	char *junk = malloc(SMTP_SESSION_INPUT_MAX * 2);
	assert_non_null(junk);
	for (size_t i = 0; i < SMTP_SESSION_INPUT_MAX * 2; i += 6)
		memcpy(junk + i, "NOOP\r\n", SMTP_SESSION_INPUT_MAX * 2 - i < 6 ? SMTP_SESSION_INPUT_MAX * 2 - i : 6);
	fake_sendn(f, junk, SMTP_SESSION_INPUT_MAX * 2);
	free(junk);
	assert_false(smtp_session_closed(f->s));
	fake_stage_finish(f, &v);
	const char *r = fake_take(f);
	assert_true(strncmp(r, "250 2.1.0 Ok\r\n", 14) == 0);
	assert_non_null(strstr(r, "421 4.3.0 Out of resources, closing connection\r\n"));
	assert_true(smtp_session_closed(f->s));
	assert_int_equal(f->nclose, 1);
	assert_int_equal(f->ntxn_end, 1);
	done(f);
}

/* test_disconnect_during_check - eof, timeout and shutdown during a
 * check at each stage wait for the answer, then close */
static void test_disconnect_during_check(void **state)
{
	(void)state;
	for (int st = SMTP_STAGE_CONNECT; st <= SMTP_STAGE_DATA; st++) {
		for (int how = 0; how < 3; how++) {
			struct fake *f = world();
			if (st == SMTP_STAGE_CONNECT) {
				f->stage_defer[st] = 1;
				fake_start(f, 0);
			} else {
				up_to(f, (enum smtp_stage)st);
				f->stage_defer[st] = 1;
				fake_send(f, stage_cmd[st]);
			}
			assert_int_equal(f->stage_pending, 1);
			if (how == 0)
				smtp_session_eof(f->s);
			else if (how == 1)
				smtp_session_timeout(f->s);
			else
				smtp_session_shutdown(f->s);
			assert_false(smtp_session_closed(f->s));
			assert_string_equal(fake_take(f), "");
			struct smtp_verdict v = verdict(SMTP_VERDICT_CONTINUE, NULL);
			fake_stage_finish(f, &v);
			const char *r = fake_take(f);
			assert_true(strncmp(r, stage_ok[st], strlen(stage_ok[st])) == 0);
			const char *tail = r + strlen(stage_ok[st]);
			if (how == 0)
				assert_string_equal(tail, "");
			else if (how == 1)
				assert_string_equal(tail, "421 4.4.2 Timeout exceeded, closing connection\r\n");
			else
				assert_string_equal(tail, "421 4.3.2 Service shutting down, closing connection\r\n");
			assert_true(smtp_session_closed(f->s));
			assert_int_equal(f->nclose, 1);
			/* the open transaction (MAIL and later) was told it ended */
			assert_int_equal(f->ntxn_end, st >= SMTP_STAGE_MAIL ? 1u : 0u);
			/* a stray answer afterwards is ignored */
			fake_stage_finish(f, &v);
			smtp_session_stage_done(f->s, &v);
			assert_int_equal(f->nclose, 1);
			done(f);
		}
	}
}

/* test_unexpected_answers - stage_done / commit_verdict with nothing in
 * flight change nothing */
static void test_unexpected_answers(void **state)
{
	(void)state;
	struct fake *f = world();
	up_to(f, SMTP_STAGE_MAIL);
	struct smtp_verdict v = verdict(SMTP_VERDICT_REJECT, "550 5.7.1 stray");
	smtp_session_stage_done(f->s, &v);
	smtp_session_commit_verdict(f->s, &v);
	assert_string_equal(fake_take(f), "");
	assert_string_equal(smtp_session_state_str(f->s), "ready");
	expect(f, "MAIL FROM:<a@remote.example>\r\n", "250 2.1.0 Ok\r\n");
	/* a NULL verdict is a temporary failure, not a pass */
	f->stage_defer[SMTP_STAGE_RCPT] = 1;
	fake_send(f, "RCPT TO:<alice@example.test>\r\n");
	f->stage_pending = 0;
	smtp_session_stage_done(f->s, NULL);
	assert_string_equal(fake_take(f),
			    "451 4.7.1 Recipient temporarily rejected by policy, try again later\r\n");
	assert_int_equal(smtp_session_envelope(f->s)->nrcpts, 0);
	done(f);
}

/* test_accessors - what a check sees */
static void test_accessors(void **state)
{
	(void)state;
	struct fake *f = world();
	f->info.tls_available = 1;
	f->info.name = "client.rev.example";
	up_to(f, SMTP_STAGE_HELO);
	const struct smtp_client_info *ci = smtp_session_client(f->s);
	assert_string_equal(ci->addr, "192.0.2.1");
	assert_string_equal(ci->name, "client.rev.example");
	assert_string_equal(ci->session_id, "t1");
	assert_int_equal(ci->tls, 0);
	assert_null(smtp_session_helo(f->s));
	fake_send(f, "EHLO Client.Example\r\n");
	(void)fake_take(f);
	/* the check saw the name already stored */
	assert_string_equal(f->check_helo, "Client.Example");
	assert_string_equal(smtp_session_helo(f->s), "Client.Example");
	assert_int_equal(smtp_session_esmtp(f->s), 1);
	fake_send(f, "STARTTLS\r\n");
	(void)fake_take(f);
	smtp_session_tls_done(f->s, "TLSv1.3 test");
	assert_int_equal(smtp_session_client(f->s)->tls, 1);
	assert_null(smtp_session_helo(f->s));
	assert_string_equal(smtp_session_rcpt(f->s, NULL, NULL), "");
	assert_null(smtp_session_esmtp_args(f->s)[0]);
	done(f);
}

/* test_random_verdicts - random commands and verdicts: never a crash, at
 * most one close, every transaction told its end, nothing in flight left */
static void test_random_verdicts(void **state)
{
	(void)state;
	static const char *const cmds[] = {
		"HELO a.example\r\n", "EHLO b.example\r\n", "MAIL FROM:<x@remote.example>\r\n",
		"RCPT TO:<alice@example.test>\r\n", "RCPT TO:<bob@example.test>\r\n", "DATA\r\n",
		"hello\r\n.\r\n", "RSET\r\n", "NOOP\r\n", "BDAT 3 LAST\r\nabc", "BDAT 2\r\nxy",
		"QUIT\r\n", "MAIL FROM:<>\r\n",
	};
	unsigned seed = 12345;
	for (int round = 0; round < 300; round++) {
		struct fake *f = world();
		for (int st = 0; st < 5; st++) {
			seed = seed * 1103515245u + 12345u;
			f->stage_defer[st] = (seed >> 16) % 3 == 0;
			f->stage_verdict[st] = verdict((enum smtp_verdict_kind)((seed >> 8) % 5), NULL);
		}
		seed = seed * 1103515245u + 12345u;
		f->commit_deferred = (seed >> 16) % 2;
		f->eom_refuse = (seed >> 12) % 3 == 0;
		f->eom_verdict = verdict((enum smtp_verdict_kind)(1 + (seed >> 4) % 4), NULL);
		fake_start(f, 0);
		for (int i = 0; i < 30 && !smtp_session_closed(f->s); i++) {
			seed = seed * 1103515245u + 12345u;
			unsigned r = seed >> 16;
			if (f->stage_pending && r % 2 == 0) {
				struct smtp_verdict v = verdict((enum smtp_verdict_kind)(r % 5), NULL);
				fake_stage_finish(f, &v);
			} else if (f->pending && r % 3 == 0) {
				if (r % 2)
					fake_commit_finish(f, 0, 0);
				else {
					struct smtp_verdict v = verdict(SMTP_VERDICT_REJECT, NULL);
					fake_commit_verdict(f, &v);
				}
			} else if (r % 17 == 0) {
				smtp_session_eof(f->s);
			} else if (r % 19 == 0) {
				smtp_session_timeout(f->s);
			} else {
				fake_send(f, cmds[r % (sizeof(cmds) / sizeof(cmds[0]))]);
			}
			(void)fake_take(f);
		}
		/* settle: answer what is in flight, then the client goes */
		for (int i = 0; i < 10 && (f->stage_pending || f->pending); i++) {
			struct smtp_verdict v = verdict(SMTP_VERDICT_CONTINUE, NULL);
			if (f->stage_pending)
				fake_stage_finish(f, &v);
			if (f->pending)
				fake_commit_finish(f, 0, 0);
		}
		smtp_session_eof(f->s);
		for (int i = 0; i < 10 && (f->stage_pending || f->pending); i++) {
			struct smtp_verdict v = verdict(SMTP_VERDICT_CONTINUE, NULL);
			if (f->stage_pending)
				fake_stage_finish(f, &v);
			if (f->pending)
				fake_commit_finish(f, 0, 0);
		}
		assert_true(smtp_session_closed(f->s));
		assert_int_equal(f->nclose, 1);
		/* every MAIL that was checked ended with txn_end */
		assert_int_equal(f->ntxn_end, f->nstage_checks[SMTP_STAGE_MAIL]);
		done(f);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_verdict_every_stage),
		cmocka_unit_test(test_eom_every_verdict),
		cmocka_unit_test(test_reply_valid),
		cmocka_unit_test(test_pipelined_during_check),
		cmocka_unit_test(test_disconnect_during_check),
		cmocka_unit_test(test_unexpected_answers),
		cmocka_unit_test(test_accessors),
		cmocka_unit_test(test_random_verdicts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
