/*
 * fuzz_smtp_session - drive one SMTP server session (src/smtp/smtp_server*)
 * with the unit tests' fake ops from the fuzz input.
 *
 * Input: byte 0 chooses the world (TLS from the start, listener kind,
 * STARTTLS available, trusted client, hidden client address, deferred
 * commits, deferred AUTH checks, an AUTH lockout); byte 1 the error limit
 * and the rate limit. The rest is client bytes, cut into separate input
 * calls by the control byte 0xFF, whose next byte is an event: a commit or
 * AUTH check completing (ok, failed, locked, temporary failure), the
 * STARTTLS handshake completing, timeout, eof, shutdown, a change of
 * mode, or an answer nobody asked for (it must be ignored). "0xFF 0xFF" is
 * a literal 0xFF.
 *
 * Checks: no crash, leak or sanitizer report; close is called at most
 * once; a closed or waiting session wants no input; every reply written
 * is a well-formed reply line ("DDD" SP or "-", no CR or LF inside, CRLF
 * at the end), so no client bytes can inject a reply; every queue file
 * ends in exactly one commit or abort.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../unit/smtp_server/fake_ops.h"
#include "core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* check_replies - take what was written; every line a reply line */
static void check_replies(struct fake *f)
{
	const char *r = fake_take(f);
	while (*r) {
		const char *e = strstr(r, "\r\n");
		if (e == NULL)
			abort(); /* unterminated reply */
		size_t n = (size_t)(e - r);
		if (n < 4 || r[0] < '2' || r[0] > '5' || r[1] < '0' || r[1] > '9' || r[2] < '0' ||
		    r[2] > '9' || (r[3] != ' ' && r[3] != '-'))
			abort();
		if (memchr(r, '\r', n) != NULL || memchr(r, '\n', n) != NULL || n > 512)
			abort();
		r = e + 2;
	}
}

/* check_state - the contract with the caller */
static void check_state(struct fake *f)
{
	if (f->nclose > 1)
		abort();
	if (smtp_session_closed(f->s) && smtp_session_wants_input(f->s))
		abort();
	const char *st = smtp_session_state_str(f->s);
	if ((strcmp(st, "commit") == 0 || strcmp(st, "auth-wait") == 0) && smtp_session_wants_input(f->s))
		abort();
	if (strcmp(st, "commit") == 0 && f->pending == NULL)
		abort(); /* waiting for a commit nobody holds */
	if (strcmp(st, "auth-wait") == 0 && !f->auth_pending)
		abort();
}

/* event - one control event */
static void event(struct fake *f, uint8_t e)
{
	switch (e % 16) {
	case 0: fake_commit_finish(f, 0, 0); break;
	case 1: fake_commit_finish(f, -1, (e & 0x10) ? ENOSPC : EIO); break;
	case 2: smtp_session_tls_done(f->s, "TLSv1.3 fuzz"); break;
	case 3: fake_auth_finish(f, -100, NULL); break; /* the fake's own verdict */
	case 4: fake_auth_finish(f, SMTP_AUTH_FAIL, NULL); break;
	case 5: fake_auth_finish(f, SMTP_AUTH_LOCKED, NULL); break;
	case 6: fake_auth_finish(f, SMTP_AUTH_TEMPFAIL, NULL); break;
	case 7: fake_auth_finish(f, SMTP_AUTH_OK, (e & 0x10) ? "x y\r\n" : "bob@example.test"); break;
	case 8: smtp_session_timeout(f->s); break;
	case 9: smtp_session_eof(f->s); break;
	case 10: smtp_session_shutdown(f->s); break;
	case 11: f->commit_deferred = !f->commit_deferred; break;
	case 12: f->auth_deferred = !f->auth_deferred; break;
	case 13:
		/* answers nobody asked for: ignored (the fake holds nothing) */
		if (f->pending == NULL)
			smtp_session_commit_done(f->s, 0, 0, NULL);
		if (!f->auth_pending)
			smtp_session_auth_done(f->s, SMTP_AUTH_OK, "alice@example.test");
		break;
	case 14: f->commit_status = f->commit_status ? 0 : -1; f->commit_errno = EIO; break;
	default: f->open_errno = f->open_errno ? 0 : ENOSPC; break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t w = data[0], lim = data[1];
	char maxerr[32];
	snprintf(maxerr, sizeof(maxerr), "max_errors=%u", (unsigned)(lim & 7) * 3);
	const char *ov[] = {maxerr, "max_message_size=4096", "max_recipients=5"};
	struct fake f;
	if (fake_init(&f, ov, 3) < 0)
		abort();
	/* quiet: the ignored answers of event 13 log at crit on purpose */
	log_init("fuzz", (enum log_level)(LOG_LEVEL_CRIT + 1));
	f.info.tls = w & 1;
	f.info.kind = (enum smtp_listener_kind)((w >> 1) % 3);
	f.info.tls_available = (w >> 3) & 1;
	f.info.trusted = (w >> 4) & 1;
	f.info.hide_client = (w >> 5) & 1;
	f.commit_deferred = (w >> 6) & 1;
	f.auth_deferred = (w >> 7) & 1;
	f.auth_lockout_after = (lim >> 3) & 3;
	f.rate_limit = (lim >> 5) & 7;
	fake_start(&f, 0);
	if (f.s == NULL)
		abort();
	check_replies(&f);

	/* client bytes between control bytes, unescaped into one chunk */
	uint8_t *chunk = malloc(size);
	if (chunk == NULL)
		abort();
	size_t i = 2;
	while (i < size) {
		size_t n = 0;
		int ev = -1;
		while (i < size) {
			if (data[i] == 0xFF && i + 1 < size && data[i + 1] == 0xFF) {
				chunk[n++] = 0xFF;
				i += 2;
				continue;
			}
			if (data[i] == 0xFF) {
				ev = i + 1 < size ? data[i + 1] : -1;
				i += 2;
				break;
			}
			chunk[n++] = data[i++];
		}
		if (n > 0)
			smtp_session_input(f.s, (const char *)chunk, n);
		check_replies(&f);
		check_state(&f);
		if (ev >= 0) {
			event(&f, (uint8_t)ev);
			check_replies(&f);
			check_state(&f);
		}
	}
	free(chunk);
	/* the end: the client goes, whatever is in flight is answered */
	smtp_session_eof(f.s);
	/* each answer may start the next pipelined wait: every round consumes
	 * at least one buffered command, so this ends */
	while (f.pending || f.auth_pending) {
		fake_commit_finish(&f, 0, 0);
		fake_auth_finish(&f, -100, NULL);
		check_replies(&f);
	}
	check_replies(&f);
	check_state(&f);
	if (!smtp_session_closed(f.s) || f.nclose != 1)
		abort(); /* eof with nothing in flight always closes */
	smtp_session_free(f.s);
	f.s = NULL;
	if (f.nopen != f.ncommit + f.nabort)
		abort();
	fake_fini(&f);
	return 0;
}
