/*
 * test_smtp_chat - replay every transcript tests/chat/NAME.chat through an
 * in-memory smtp_session (fake ops) and compare the replies exactly.
 * The format is documented in tests/chat/README.md. Run from the repo root
 * (meson sets the workdir); TERN_CHAT_DIR overrides the directory.
 */
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_server/fake_ops.h"

#define CHAT_MAX_OVERRIDES 16

struct chat {
	const char *path;
	int lineno;
	struct fake f;
	int started;
	int pregreet;
	char *overrides[CHAT_MAX_OVERRIDES];
	size_t noverrides;
	struct strbuf pending;   /* client bytes not yet sent */
	struct strbuf replies;   /* replies written, not yet matched */
	size_t reply_off;
	size_t content_off;      /* next M: line in f.last_content */
	char content_qid[QUEUE_ID_MAX];
	char *client_name;
	int no_auth;             /* ! no_auth: ops->auth_check is NULL */
	int no_checks;           /* ! no_checks: ops->stage_check is NULL */
	size_t writes_before;    /* nwrites before the last event */
};

/* chat_fail - report with file and line */
static void chat_fail(struct chat *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void chat_fail(struct chat *c, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fail_msg("%s:%d: %s", c->path, c->lineno, msg);
}

/* chat_unescape - \r \n \t \\ \xHH and \* into out */
static void chat_unescape(struct chat *c, const char *s, struct strbuf *out)
{
	for (size_t i = 0; s[i]; i++) {
		if (s[i] != '\\') {
			strbuf_addc(out, s[i]);
			continue;
		}
		char e = s[++i];
		switch (e) {
		case 'r': strbuf_addc(out, '\r'); break;
		case 'n': strbuf_addc(out, '\n'); break;
		case 't': strbuf_addc(out, '\t'); break;
		case '\\': strbuf_addc(out, '\\'); break;
		case '0': strbuf_addc(out, '\0'); break;
		case 'x':
			if (isxdigit((unsigned char)s[i + 1]) && isxdigit((unsigned char)s[i + 2])) {
				char h[3] = {s[i + 1], s[i + 2], 0};
				strbuf_addc(out, (char)strtol(h, NULL, 16));
				i += 2;
				break;
			}
			chat_fail(c, "bad \\x escape");
			return;
		default:
			chat_fail(c, "unknown escape \\%c", e ? e : '0');
			return;
		}
	}
}

/* glob_match - '*' matches any run of octets; everything else literally */
static int glob_match(const char *pat, const char *s, size_t n)
{
	if (*pat == '\0')
		return n == 0;
	if (*pat == '*') {
		for (size_t k = 0; k <= n; k++)
			if (glob_match(pat + 1, s + k, n - k))
				return 1;
		return 0;
	}
	return n > 0 && *pat == *s && glob_match(pat + 1, s + 1, n - 1);
}

/* chat_collect - move written replies into c->replies */
static void chat_collect(struct chat *c)
{
	const char *t = fake_take(&c->f);
	strbuf_adds(&c->replies, t);
}

/* chat_start - the header directives are read: build the world with the
 * configuration they gave, create the session and send the greeting */
static void chat_start(struct chat *c)
{
	if (c->started)
		return;
	c->started = 1;
	const char *ov[CHAT_MAX_OVERRIDES];
	for (size_t i = 0; i < c->noverrides; i++)
		ov[i] = c->overrides[i];
	struct smtp_client_info keep = c->f.info;
	/* ! check / ! eom given before the start (the CONNECT stage) */
	int defer[5];
	struct smtp_verdict verdicts[5], eom = c->f.eom_verdict;
	int eom_refuse = c->f.eom_refuse;
	memcpy(defer, c->f.stage_defer, sizeof(defer));
	memcpy(verdicts, c->f.stage_verdict, sizeof(verdicts));
	fake_fini(&c->f);
	if (fake_init(&c->f, ov, c->noverrides) < 0)
		chat_fail(c, "bad ! conf");
	c->f.info = keep;
	memcpy(c->f.stage_defer, defer, sizeof(defer));
	memcpy(c->f.stage_verdict, verdicts, sizeof(verdicts));
	c->f.eom_verdict = eom;
	c->f.eom_refuse = eom_refuse;
	if (c->no_auth)
		c->f.ops.auth_check = NULL;
	if (c->no_checks)
		c->f.ops.stage_check = NULL;
	c->writes_before = 0;
	fake_start(&c->f, c->pregreet);
	assert_non_null(c->f.s);
	chat_collect(c);
}

/* chat_flush - send the pending client bytes in one input call */
static void chat_flush(struct chat *c)
{
	chat_start(c);
	if (c->pending.len == 0)
		return;
	c->writes_before = c->f.nwrites;
	fake_sendn(&c->f, c->pending.s, c->pending.len);
	strbuf_reset(&c->pending);
	chat_collect(c);
}

/* chat_expect_reply - the next reply line must match pat */
static void chat_expect_reply(struct chat *c, const char *pat)
{
	chat_flush(c);
	const char *p = c->replies.s ? c->replies.s + c->reply_off : "";
	const char *e = strstr(p, "\r\n");
	if (e == NULL)
		chat_fail(c, "expected \"%s\", got %s\"%s\"", pat, *p ? "unterminated " : "nothing ", p);
	if (!glob_match(pat, p, (size_t)(e - p)))
		chat_fail(c, "expected \"%s\", got \"%.*s\"", pat, (int)(e - p), p);
	c->reply_off += (size_t)(e - p) + 2;
}

/* chat_expect_content - the next line of the last committed message */
static void chat_expect_content(struct chat *c, const char *pat)
{
	chat_flush(c);
	if (strcmp(c->content_qid, c->f.last_qid) != 0) {
		memcpy(c->content_qid, c->f.last_qid, sizeof(c->content_qid));
		c->content_off = 0;
	}
	const char *base = c->f.last_content.s ? c->f.last_content.s : "";
	if (c->content_off > c->f.last_content.len)
		chat_fail(c, "no more message content");
	const char *p = base + c->content_off;
	size_t left = c->f.last_content.len - c->content_off;
	const char *e = memmem(p, left, "\r\n", 2);
	size_t n = e ? (size_t)(e - p) : left;
	if (!glob_match(pat, p, n))
		chat_fail(c, "message line: expected \"%s\", got \"%.*s\"", pat, (int)n, p);
	c->content_off += n + (e ? 2 : 0);
	if (!e)
		c->content_off = c->f.last_content.len + 1;
}

/* chat_errno - an errno by name or number */
static int chat_errno(struct chat *c, const char *s)
{
	if (strcmp(s, "ENOSPC") == 0)
		return ENOSPC;
	if (strcmp(s, "EDQUOT") == 0)
		return EDQUOT;
	if (strcmp(s, "EIO") == 0)
		return EIO;
	if (strcmp(s, "EACCES") == 0)
		return EACCES;
	if (strcmp(s, "0") == 0 || strcmp(s, "OK") == 0)
		return 0;
	int v = atoi(s);
	if (v <= 0)
		chat_fail(c, "unknown errno %s", s);
	return v;
}

/* chat_assert_count - "! NAME N" checks a counter */
static void chat_assert_count(struct chat *c, const char *what, size_t have, const char *arg)
{
	size_t want = (size_t)strtoul(arg, NULL, 10);
	if (have != want)
		chat_fail(c, "%s: expected %zu, have %zu", what, want, have);
}

/* chat_stage - a stage by name (connect, helo, mail, rcpt, data) */
static int chat_stage(struct chat *c, const char *name, size_t n)
{
	for (int i = 0; i < 5; i++) {
		const char *s = smtp_stage_str((enum smtp_stage)i);
		if (strlen(s) == n && strncmp(s, name, n) == 0)
			return i;
	}
	chat_fail(c, "unknown stage %.*s", (int)n, name);
	return 0;
}

/* chat_verdict - "VERDICT [reply]" with the reply's escapes resolved */
static void chat_verdict(struct chat *c, const char *text, struct smtp_verdict *v)
{
	struct strbuf t;
	strbuf_init(&t);
	chat_unescape(c, text, &t);
	if (fake_verdict_parse(t.s ? t.s : "", v) < 0)
		chat_fail(c, "verdict: continue|reject|tempfail|discard|shutdown [reply]");
	strbuf_free(&t);
}

/* chat_directive - "! word [arg]" */
static void chat_directive(struct chat *c, char *d)
{
	char *arg = strchr(d, ' ');
	if (arg) {
		*arg++ = '\0';
		while (*arg == ' ')
			arg++;
	} else {
		arg = (char *)"";
	}
	/* directives before the session starts */
	if (strcmp(d, "conf") == 0) {
		if (c->started)
			chat_fail(c, "! conf after the session started");
		if (c->noverrides == CHAT_MAX_OVERRIDES)
			chat_fail(c, "too many ! conf");
		c->overrides[c->noverrides++] = strdup(arg);
		return;
	}
	if (strcmp(d, "pregreet") == 0 || strcmp(d, "trusted") == 0 ||
	    strcmp(d, "tls_available") == 0 || strcmp(d, "client_name") == 0 ||
	    strcmp(d, "tls") == 0 || strcmp(d, "listener") == 0 || strcmp(d, "hide_client") == 0 ||
	    strcmp(d, "no_auth") == 0 || strcmp(d, "no_checks") == 0) {
		if (c->started)
			chat_fail(c, "! %s after the session started", d);
		if (strcmp(d, "pregreet") == 0)
			c->pregreet = 1;
		else if (strcmp(d, "tls") == 0)
			c->f.info.tls = 1;
		else if (strcmp(d, "hide_client") == 0)
			c->f.info.hide_client = 1;
		else if (strcmp(d, "no_auth") == 0)
			c->no_auth = 1;
		else if (strcmp(d, "no_checks") == 0)
			c->no_checks = 1;
		else if (strcmp(d, "listener") == 0) {
			if (strcmp(arg, "mx") == 0)
				c->f.info.kind = SMTP_LISTENER_MX;
			else if (strcmp(arg, "submission") == 0)
				c->f.info.kind = SMTP_LISTENER_SUBMISSION;
			else if (strcmp(arg, "submissions") == 0)
				c->f.info.kind = SMTP_LISTENER_SUBMISSIONS;
			else
				chat_fail(c, "! listener mx|submission|submissions");
		}
		else if (strcmp(d, "trusted") == 0)
			c->f.info.trusted = 1;
		else if (strcmp(d, "tls_available") == 0)
			c->f.info.tls_available = 1;
		else {
			free(c->client_name);
			c->client_name = strdup(arg);
			c->f.info.name = c->client_name;
		}
		return;
	}
	struct fake *f = &c->f;
	if (!c->started && (strcmp(d, "check") == 0 || strcmp(d, "eom") == 0)) {
		/* set up before the greeting: the CONNECT stage sees it */
		size_t n = strcspn(arg, " ");
		if (strcmp(d, "eom") == 0) {
			chat_verdict(c, arg, &f->eom_verdict);
			f->eom_refuse = f->eom_verdict.kind != SMTP_VERDICT_CONTINUE;
			return;
		}
		int st = chat_stage(c, arg, n);
		const char *rest = arg[n] ? arg + n + 1 : "";
		f->stage_defer[st] = strcmp(rest, "defer") == 0;
		if (!f->stage_defer[st])
			chat_verdict(c, rest, &f->stage_verdict[st]);
		return;
	}
	chat_flush(c);
	if (strcmp(d, "commit") == 0) {
		if (strcmp(arg, "defer") == 0) {
			f->commit_deferred = 1;
		} else if (strcmp(arg, "sync") == 0) {
			f->commit_deferred = 0;
			f->commit_status = 0;
		} else if (strncmp(arg, "fail ", 5) == 0) {
			f->commit_deferred = 0;
			f->commit_status = -1;
			f->commit_errno = chat_errno(c, arg + 5);
		} else {
			chat_fail(c, "! commit defer|sync|fail ERRNO");
		}
	} else if (strcmp(d, "commit_done") == 0) {
		if (f->pending == NULL)
			chat_fail(c, "! commit_done without a commit in flight");
		int e = chat_errno(c, arg);
		c->writes_before = f->nwrites;
		fake_commit_finish(f, e ? -1 : 0, e);
	} else if (strcmp(d, "open_fail") == 0) {
		f->open_errno = chat_errno(c, arg);
	} else if (strcmp(d, "write_fail") == 0) {
		f->write_errno = chat_errno(c, arg);
	} else if (strcmp(d, "eof") == 0) {
		c->writes_before = f->nwrites;
		smtp_session_eof(f->s);
	} else if (strcmp(d, "timeout") == 0) {
		c->writes_before = f->nwrites;
		smtp_session_timeout(f->s);
	} else if (strcmp(d, "shutdown") == 0) {
		c->writes_before = f->nwrites;
		smtp_session_shutdown(f->s);
	} else if (strcmp(d, "tls_done") == 0) {
		c->writes_before = f->nwrites;
		smtp_session_tls_done(f->s, "TLSv1.3 test");
	} else if (strcmp(d, "auth") == 0) {
		if (strcmp(arg, "defer") == 0)
			f->auth_deferred = 1;
		else if (strcmp(arg, "sync") == 0)
			f->auth_deferred = 0;
		else
			chat_fail(c, "! auth defer|sync");
	} else if (strcmp(d, "auth_done") == 0) {
		if (!f->auth_pending)
			chat_fail(c, "! auth_done without an auth check in flight");
		int ok = -100; /* the fake's own verdict */
		if (strcmp(arg, "OK") == 0)
			ok = SMTP_AUTH_OK;
		else if (strcmp(arg, "FAIL") == 0)
			ok = SMTP_AUTH_FAIL;
		else if (strcmp(arg, "LOCKED") == 0)
			ok = SMTP_AUTH_LOCKED;
		else if (strcmp(arg, "TEMPFAIL") == 0)
			ok = SMTP_AUTH_TEMPFAIL;
		else if (strcmp(arg, "") != 0)
			chat_fail(c, "! auth_done [OK|FAIL|LOCKED|TEMPFAIL]");
		c->writes_before = f->nwrites;
		fake_auth_finish(f, ok, NULL);
	} else if (strcmp(d, "check") == 0) {
		/* ! check STAGE defer | VERDICT [reply] */
		size_t n = strcspn(arg, " ");
		int st = chat_stage(c, arg, n);
		const char *rest = arg[n] ? arg + n + 1 : "";
		if (strcmp(rest, "defer") == 0) {
			f->stage_defer[st] = 1;
		} else {
			f->stage_defer[st] = 0;
			chat_verdict(c, rest, &f->stage_verdict[st]);
		}
	} else if (strcmp(d, "check_done") == 0) {
		if (!f->stage_pending)
			chat_fail(c, "! check_done without a check in flight");
		struct smtp_verdict v;
		chat_verdict(c, arg, &v);
		c->writes_before = f->nwrites;
		fake_stage_finish(f, &v);
	} else if (strcmp(d, "eom") == 0) {
		chat_verdict(c, arg, &f->eom_verdict);
		f->eom_refuse = f->eom_verdict.kind != SMTP_VERDICT_CONTINUE;
	} else if (strcmp(d, "commit_verdict") == 0) {
		if (f->pending == NULL)
			chat_fail(c, "! commit_verdict without a commit in flight");
		struct smtp_verdict v;
		chat_verdict(c, arg, &v);
		c->writes_before = f->nwrites;
		fake_commit_verdict(f, &v);
	} else if (strcmp(d, "txn_ends") == 0) {
		chat_assert_count(c, "txn_end calls", f->ntxn_end, arg);
	} else if (strcmp(d, "commit_verdicts") == 0) {
		chat_assert_count(c, "commit verdicts", f->ncommit_verdicts, arg);
	} else if (strcmp(d, "checks") == 0) {
		size_t n = strcspn(arg, " ");
		int st = chat_stage(c, arg, n);
		chat_assert_count(c, "checks of the stage", f->nstage_checks[st], arg[n] ? arg + n + 1 : "");
	} else if (strcmp(d, "check_helo") == 0) {
		if (strcmp(f->check_helo, arg) != 0)
			chat_fail(c, "check_helo: expected %s, have %s", arg, f->check_helo);
	} else if (strcmp(d, "check_sender") == 0) {
		if (strcmp(f->check_sender, strcmp(arg, "<>") == 0 ? "" : arg) != 0)
			chat_fail(c, "check_sender: expected %s, have %s", arg, f->check_sender);
	} else if (strcmp(d, "check_args") == 0) {
		if (strcmp(f->check_args, strcmp(arg, "-") == 0 ? "" : arg) != 0)
			chat_fail(c, "check_args: expected %s, have %s", arg, f->check_args);
	} else if (strcmp(d, "check_env_rcpts") == 0) {
		chat_assert_count(c, "envelope recipients at the check", f->check_env_rcpts, arg);
	} else if (strcmp(d, "check_rcpt") == 0) {
		/* ! check_rcpt ADDR FIRST N */
		char want[300];
		size_t first = 0, n = 0;
		if (sscanf(arg, "%299s %zu %zu", want, &first, &n) != 3)
			chat_fail(c, "! check_rcpt ADDR FIRST N");
		if (strcmp(want, f->check_rcpt) != 0 || first != f->check_rcpt_first || n != f->check_rcpt_n)
			chat_fail(c, "check_rcpt: expected %s %zu %zu, have %s %zu %zu", want, first, n,
				  f->check_rcpt, f->check_rcpt_first, f->check_rcpt_n);
	} else if (strcmp(d, "auth_lockout") == 0) {
		f->auth_lockout_after = (size_t)strtoul(arg, NULL, 10);
	} else if (strcmp(d, "rate_limit") == 0) {
		f->rate_limit = (size_t)strtoul(arg, NULL, 10);
	} else if (strcmp(d, "auth_user") == 0) {
		const char *have = smtp_session_auth_user(f->s);
		if (strcmp(have ? have : "-", arg) != 0)
			chat_fail(c, "auth_user: expected %s, have %s", arg, have ? have : "-");
	} else if (strcmp(d, "auth_checks") == 0) {
		chat_assert_count(c, "auth checks", f->nauth_checks, arg);
	} else if (strcmp(d, "auth_pass") == 0) {
		if (strcmp(f->last_auth_pass, arg) != 0)
			chat_fail(c, "auth_pass: expected %s, have %s", arg, f->last_auth_pass);
	} else if (strcmp(d, "env_auth_user") == 0) {
		const char *have = f->last_env.auth_user ? f->last_env.auth_user : "-";
		if (strcmp(have, arg) != 0)
			chat_fail(c, "env_auth_user: expected %s, have %s", arg, have);
	} else if (strcmp(d, "may_relay") == 0) {
		chat_assert_count(c, "may_relay of the last RCPT", (size_t)f->last_may_relay, arg);
	} else if (strcmp(d, "input_pending") == 0) {
		f->input_pending = atoi(arg);
	} else if (strcmp(d, "closes") == 0) {
		chat_assert_count(c, "close calls", f->nclose, arg);
	} else if (strcmp(d, "closed") == 0) {
		if (!smtp_session_closed(f->s))
			chat_fail(c, "session not closed");
	} else if (strcmp(d, "open") == 0) {
		if (smtp_session_closed(f->s))
			chat_fail(c, "session closed");
	} else if (strcmp(d, "wants_input") == 0) {
		chat_assert_count(c, "wants_input", (size_t)smtp_session_wants_input(f->s), arg);
	} else if (strcmp(d, "state") == 0) {
		if (strcmp(smtp_session_state_str(f->s), arg) != 0)
			chat_fail(c, "state: expected %s, have %s", arg, smtp_session_state_str(f->s));
	} else if (strcmp(d, "writes") == 0) {
		chat_assert_count(c, "writes in the last event", f->nwrites - c->writes_before, arg);
	} else if (strcmp(d, "aborts") == 0) {
		chat_assert_count(c, "aborts", f->nabort, arg);
	} else if (strcmp(d, "commits") == 0) {
		chat_assert_count(c, "commits", f->ncommit, arg);
	} else if (strcmp(d, "accepted") == 0) {
		chat_assert_count(c, "accepted", f->naccepted, arg);
	} else if (strcmp(d, "rcpts") == 0) {
		chat_assert_count(c, "envelope recipients", f->last_env.nrcpts, arg);
	} else if (strcmp(d, "sender") == 0) {
		const char *have = f->last_env.sender ? f->last_env.sender : "(none)";
		struct strbuf want;
		strbuf_init(&want);
		chat_unescape(c, strcmp(arg, "<>") == 0 ? "" : arg, &want);
		int same = strcmp(have, want.s ? want.s : "") == 0;
		strbuf_free(&want);
		if (!same)
			chat_fail(c, "sender: expected %s, have %s", arg, have);
	} else {
		chat_fail(c, "unknown directive ! %s", d);
	}
	chat_collect(c);
}

/* run_chat - one transcript */
static void run_chat(void **state)
{
	const char *path = *state;
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	struct chat *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->path = path;
	assert_int_equal(fake_init(&c->f, NULL, 0), 0);
	strbuf_init(&c->pending);
	strbuf_init(&c->replies);
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while ((len = getline(&line, &cap, fp)) >= 0) {
		c->lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0 || line[0] == '#')
			continue;
		if (line[0] == '!') {
			if (len < 3 || line[1] != ' ')
				chat_fail(c, "bad directive: %s", line);
			chat_directive(c, line + 2);
			continue;
		}
		if (len < 2 || (line[1] != ':' && line[1] != '-') || (len > 2 && line[2] != ' '))
			chat_fail(c, "bad line: %s", line);
		const char *text = len > 3 ? line + 3 : "";
		switch (line[0]) {
		case 'C':
			chat_start(c);
			chat_unescape(c, text, &c->pending);
			if (line[1] == ':')
				strbuf_adds(&c->pending, "\r\n");
			break;
		case 'S':
		case 'M': {
			struct strbuf pat;
			strbuf_init(&pat);
			chat_unescape(c, text, &pat);
			if (line[0] == 'S')
				chat_expect_reply(c, pat.s ? pat.s : "");
			else
				chat_expect_content(c, pat.s ? pat.s : "");
			strbuf_free(&pat);
			break;
		}
		default:
			chat_fail(c, "bad line: %s", line);
		}
	}
	free(line);
	fclose(fp);
	chat_flush(c);
	const char *rest = c->replies.s ? c->replies.s + c->reply_off : "";
	if (*rest)
		chat_fail(c, "unexpected replies at the end: \"%s\"", rest);
	fake_fini(&c->f);
	strbuf_free(&c->pending);
	strbuf_free(&c->replies);
	for (size_t i = 0; i < c->noverrides; i++)
		free(c->overrides[i]);
	free(c->client_name);
	free(c);
}

int main(void)
{
	const char *dir = getenv("TERN_CHAT_DIR");
	char pattern[4096];
	snprintf(pattern, sizeof(pattern), "%s/*.chat", dir ? dir : "tests/chat");
	glob_t g;
	memset(&g, 0, sizeof(g));
	if (glob(pattern, 0, NULL, &g) != 0 || g.gl_pathc == 0) {
		fprintf(stderr, "no transcripts match %s\n", pattern);
		return 1;
	}
	struct CMUnitTest *tests = calloc(g.gl_pathc, sizeof(*tests));
	if (tests == NULL)
		return 1;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		const char *slash = strrchr(g.gl_pathv[i], '/');
		tests[i].name = slash ? slash + 1 : g.gl_pathv[i];
		tests[i].test_func = run_chat;
		tests[i].initial_state = g.gl_pathv[i];
	}
	int r = _cmocka_run_group_tests("smtp_chat", tests, g.gl_pathc, NULL, NULL);
	free(tests);
	globfree(&g);
	return r;
}
