/*
 * fuzz_smtp_policy - an SMTP server session (src/smtp/smtp_server*) whose
 * policy checks (ops->stage_check, the end-of-data verdict) answer what
 * the fuzz input says, with custom replies taken from the input: the
 * hostile text a milter could send back (SMFIR_REPLYCODE).
 *
 * Input: byte 0: which stages' checks are deferred (bits 0-4: CONNECT ..
 * DATA), commits deferred (bit 5), end-of-data refusals (bit 6); byte 1:
 * bits 0-4 say which stages answer the kind in bits 5-7 at once (the
 * others CONTINUE). The rest is client bytes cut by the control byte 0xFF, whose
 * next byte is an event (low 4 bits) with an argument (high 4 bits); the
 * last chunk of client bytes doubles as the custom reply of the verdicts
 * the events give. "0xFF 0xFF" is a literal 0xFF.
 *
 * Checks: no crash, leak or sanitizer report; every reply written is a
 * well-formed reply line (so no verdict text can inject a line or a
 * success); close at most once; a waiting or closed session wants no
 * input; a policy check in flight always has a holder; at the end every
 * checked transaction was told its end (txn_end), and every queue file
 * ended in a commit or an abort.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../unit/smtp_server/fake_ops.h"
#include "core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* check_replies - every line written is "DDD" SP/"-" text CRLF */
static void check_replies(struct fake *f)
{
	const char *r = fake_take(f);
	while (*r) {
		const char *e = strstr(r, "\r\n");
		if (e == NULL)
			abort();
		size_t n = (size_t)(e - r);
		if (n < 3 || r[0] < '2' || r[0] > '5' || r[1] < '0' || r[1] > '9' || r[2] < '0' ||
		    r[2] > '9' || (n > 3 && r[3] != ' ' && r[3] != '-'))
			abort();
		for (size_t i = 0; i < n; i++)
			if (r[i] == '\r' || r[i] == '\n' || r[i] == '\0')
				abort();
		if (n > 512)
			abort();
		r = e + 2;
	}
}

/* check_state - the caller contract */
static void check_state(struct fake *f)
{
	if (f->nclose > 1)
		abort();
	if (smtp_session_closed(f->s) && smtp_session_wants_input(f->s))
		abort();
	const char *st = smtp_session_state_str(f->s);
	if (strncmp(st, "check-", 6) == 0 && (!f->stage_pending || smtp_session_wants_input(f->s)))
		abort();
	if (strcmp(st, "commit") == 0 && (f->pending == NULL || smtp_session_wants_input(f->s)))
		abort();
}

/* verdict_of - kind from a number, reply from the last chunk */
static struct smtp_verdict verdict_of(unsigned k, const char *reply)
{
	struct smtp_verdict v;
	smtp_verdict_set(&v, (enum smtp_verdict_kind)(k % 5), reply, "fuzz");
	return v;
}

/* event - one control event; reply is the last chunk as text */
static void event(struct fake *f, uint8_t e, const char *reply)
{
	unsigned arg = e >> 4;
	struct smtp_verdict v;
	switch (e & 15) {
	case 0:
		v = verdict_of(arg, NULL);
		fake_stage_finish(f, &v);
		break;
	case 1:
		v = verdict_of(arg, reply);
		fake_stage_finish(f, &v);
		break;
	case 2: fake_commit_finish(f, 0, 0); break;
	case 3:
		v = verdict_of(arg, reply);
		fake_commit_verdict(f, &v);
		break;
	case 4: smtp_session_eof(f->s); break;
	case 5: smtp_session_timeout(f->s); break;
	case 6: smtp_session_shutdown(f->s); break;
	case 7: f->stage_defer[arg % 5] = !f->stage_defer[arg % 5]; break;
	case 8: f->stage_verdict[arg % 5] = verdict_of(arg / 5 + (unsigned)strlen(reply), reply); break;
	case 9: f->commit_deferred = !f->commit_deferred; break;
	case 10:
		f->eom_verdict = verdict_of(1 + arg % 4, reply);
		f->eom_refuse = !f->eom_refuse;
		break;
	case 11:
		/* answers nobody asked for: ignored */
		v = verdict_of(arg, reply);
		if (!f->stage_pending)
			smtp_session_stage_done(f->s, &v);
		if (f->pending == NULL)
			smtp_session_commit_verdict(f->s, &v);
		break;
	case 12: smtp_session_tls_done(f->s, "TLSv1.3 fuzz"); break;
	default: fake_commit_finish(f, -1, EIO); break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t w = data[0], k = data[1];
	const char *ov[] = {"max_errors=20", "max_message_size=4096", "max_recipients=5"};
	struct fake f;
	if (fake_init(&f, ov, 3) < 0)
		abort();
	log_init("fuzz", (enum log_level)(LOG_LEVEL_CRIT + 1));
	f.info.tls_available = 1;
	for (int st = 0; st < 5; st++) {
		f.stage_defer[st] = (w >> st) & 1;
		/* bit st of byte 1: this stage answers kind (k >> 5), else CONTINUE */
		f.stage_verdict[st] = verdict_of(((k >> st) & 1) ? (unsigned)(k >> 5) : 0, NULL);
	}
	f.commit_deferred = (w >> 5) & 1;
	f.eom_refuse = (w >> 6) & 1;
	f.eom_verdict = verdict_of(1 + k % 4, NULL);
	fake_start(&f, 0);
	if (f.s == NULL)
		abort();
	check_replies(&f);
	check_state(&f);

	char *chunk = malloc(size + 1);
	if (chunk == NULL)
		abort();
	chunk[0] = '\0';
	size_t i = 2;
	while (i < size) {
		size_t n = 0;
		int ev = -1;
		while (i < size) {
			if (data[i] == 0xFF && i + 1 < size && data[i + 1] == 0xFF) {
				chunk[n++] = (char)0xFF;
				i += 2;
				continue;
			}
			if (data[i] == 0xFF) {
				ev = i + 1 < size ? data[i + 1] : -1;
				i += 2;
				break;
			}
			chunk[n++] = (char)data[i++];
		}
		chunk[n] = '\0';
		if (n > 0)
			smtp_session_input(f.s, chunk, n);
		check_replies(&f);
		check_state(&f);
		if (ev >= 0) {
			event(&f, (uint8_t)ev, chunk);
			check_replies(&f);
			check_state(&f);
		}
	}
	free(chunk);
	smtp_session_eof(f.s);
	/* answer whatever is in flight; each answer consumes buffered input,
	 * so this ends */
	while (f.pending || f.stage_pending) {
		struct smtp_verdict v = verdict_of(0, NULL);
		fake_stage_finish(&f, &v);
		fake_commit_finish(&f, 0, 0);
		check_replies(&f);
	}
	check_replies(&f);
	check_state(&f);
	if (!smtp_session_closed(f.s) || f.nclose != 1)
		abort();
	if (f.ntxn_end != f.nstage_checks[SMTP_STAGE_MAIL])
		abort(); /* a checked transaction whose end was never told */
	smtp_session_free(f.s);
	f.s = NULL;
	if (f.nopen != f.ncommit + f.nabort)
		abort();
	fake_fini(&f);
	return 0;
}
