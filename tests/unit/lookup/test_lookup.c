/*
 * test_lookup - users_file and aliases_file parsing, lookups, and RCPT
 * resolution (aliases, subaddresses, postmaster, relay rules, loops).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "core/log.h"
#include "lookup/lookup.h"
#include "queue/envelope.h"
#include "smtp/smtp_parse.h"

/* load - tables from two strings; NULL on error with errs filled */
static struct lookup_tables *load(const char *users, const char *aliases, struct strbuf *errs)
{
	return lookup_load_text(users, users ? strlen(users) : 0, aliases, aliases ? strlen(aliases) : 0, errs);
}

/* load_ok - tables that must load */
static struct lookup_tables *load_ok(const char *users, const char *aliases)
{
	struct strbuf errs;
	strbuf_init(&errs);
	struct lookup_tables *t = load(users, aliases, &errs);
	if (t == NULL)
		fprintf(stderr, "unexpected errors:\n%s", errs.s ? errs.s : "");
	assert_non_null(t);
	assert_true(errs.len == 0);
	strbuf_free(&errs);
	return t;
}

/* load_err - tables that must fail; the error text must contain want */
static void load_err(const char *users, const char *aliases, const char *want)
{
	struct strbuf errs;
	strbuf_init(&errs);
	struct lookup_tables *t = load(users, aliases, &errs);
	if (t != NULL || errs.s == NULL || strstr(errs.s, want) == NULL)
		fprintf(stderr, "want \"%s\", got:\n%s", want, errs.s ? errs.s : "(nothing)");
	assert_null(t);
	assert_non_null(errs.s);
	assert_non_null(strstr(errs.s, want));
	strbuf_free(&errs);
}

/* conf_make - a configuration from overrides only */
static void conf_make(struct conf *c, const char *pm)
{
	char pmo[300];
	char *ov[4] = {"local_domains=example.test, localhost", "hostname=mx.example.test", NULL, NULL};
	size_t n = 2;
	if (pm) {
		snprintf(pmo, sizeof(pmo), "postmaster=%s", pm);
		ov[n++] = pmo;
	}
	struct strbuf errs;
	strbuf_init(&errs);
	int r = conf_load(c, "/dev/null", ov, n, &errs);
	if (r != 0)
		fprintf(stderr, "conf: %s", errs.s);
	assert_int_equal(r, 0);
	strbuf_free(&errs);
}

/* path - parse "<addr>" or fail */
static struct smtp_path path(const char *s)
{
	struct smtp_path p;
	memset(&p, 0, sizeof(p));
	const char *detail = NULL;
	enum smtp_parse_error e = smtp_parse_path(s, strlen(s), 0, &p, &detail);
	if (e != SMTP_PARSE_OK)
		fprintf(stderr, "path %s: %s\n", s, detail ? detail : smtp_parse_error_str(e));
	assert_int_equal(e, SMTP_PARSE_OK);
	return p;
}

/* rcpt - resolve one path */
static enum smtp_rcpt_verdict rcpt(const struct lookup_tables *t, const struct conf *c, const char *s,
				   int relay, struct envelope *env)
{
	struct smtp_path p = path(s);
	return lookup_rcpt(t, c, &p, relay, env, NULL, 0);
}

/* has - whether the envelope lists addr */
static int has(const struct envelope *env, const char *addr)
{
	return env_rcpt_find(env, addr) >= 0;
}

/* ---- users_file ---- */

static void test_users_valid(void **state)
{
	(void)state;
	const char *u = "# accounts\n"
			"\n"
			"alice@example.test:{SHA512-CRYPT}$6$salt$hash\n"
			"   \t\n"
			"bob@example.test:$y$j9T$abc$def:1000:1000::/home/bob:/bin/false:userdb_quota=1G\r\n"
			"carol@other.test:\n"
			"dave@example.test\n"
			"  # indented comment\n"
			"erin@example.test:$2b$10$xyz::::::";
	struct lookup_tables *t = load_ok(u, NULL);
	assert_int_equal(lookup_users_count(t), 5);
	assert_string_equal(lookup_user(t, "alice", "example.test"), "alice@example.test");
	assert_string_equal(lookup_password_hash(t, "alice@example.test"), "{SHA512-CRYPT}$6$salt$hash");
	assert_string_equal(lookup_password_hash(t, "bob@example.test"), "$y$j9T$abc$def");
	assert_string_equal(lookup_password_hash(t, "carol@other.test"), "");
	assert_string_equal(lookup_password_hash(t, "dave@example.test"), "");
	assert_string_equal(lookup_password_hash(t, "erin@example.test"), "$2b$10$xyz");
	assert_null(lookup_user(t, "zed", "example.test"));
	assert_null(lookup_user(t, "alice", "other.test"));
	assert_null(lookup_password_hash(t, "nobody@example.test"));
	assert_null(lookup_password_hash(t, "alice"));
	assert_null(lookup_password_hash(t, "@example.test"));
	assert_null(lookup_password_hash(t, "alice@"));
	lookup_free(t);
}

static void test_users_bad(void **state)
{
	(void)state;
	load_err("alice@example.test:x\nnoatsign:x\n", NULL, "users:2: user must be local@domain");
	load_err(":x\n", NULL, "users:1: ");
	load_err("alice@:x\n", NULL, "users:1: ");
	load_err("@example.test:x\n", NULL, "users:1: ");
	load_err("alice@[127.0.0.1]:x\n", NULL, "users:1: user must be local@domain");
	load_err("a b@example.test:x\n", NULL, "users:1: ");
	load_err("a/b@example.test:x\n", NULL, "users:1: ");
	load_err(".a@example.test:x\n", NULL, "users:1: ");
	load_err("\"a b\"@example.test:x\n", NULL, "users:1: ");
	load_err("alice@example.test:x\nALICE@Example.Test:y\n", NULL, "users:2: duplicate user");
	load_err("alice@example.test:x\n\nalice@example.test:x\n", NULL, "first on line 1");
	load_err("alice@exa mple.test:x\n", NULL, "users:1: ");
	load_err("alice@example.test:pass\x01word\n", NULL, "users:1: password");
	static const char nul[] = "ok@example.test:x\nbad\0@example.test:x\n";
	struct strbuf errs;
	strbuf_init(&errs);
	assert_null(lookup_load_text(nul, sizeof(nul) - 1, NULL, 0, &errs));
	assert_non_null(strstr(errs.s, "users:2: NUL byte"));
	strbuf_free(&errs);
	/* every bad line is reported, one line each */
	strbuf_init(&errs);
	assert_null(load("x:1\ny:2\nok@example.test:z\nw:3\n", NULL, &errs));
	int lines = 0;
	for (const char *p = errs.s; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 3);
	strbuf_free(&errs);
	/* NULL errs is allowed */
	assert_null(load("x:1\n", NULL, NULL));
}

static void test_users_case(void **state)
{
	(void)state;
	struct lookup_tables *t = load_ok("Alice.Smith@Example.TEST:{PLAIN}x\n", NULL);
	assert_string_equal(lookup_user(t, "alice.smith", "example.test"), "Alice.Smith@example.test");
	assert_string_equal(lookup_user(t, "ALICE.SMITH", "EXAMPLE.test"), "Alice.Smith@example.test");
	assert_string_equal(lookup_password_hash(t, "alice.SMITH@example.TEST"), "{PLAIN}x");
	lookup_free(t);
}

static void test_users_subaddress(void **state)
{
	(void)state;
	struct lookup_tables *t = load_ok("alice@example.test:x\nbob+list@example.test:y\n", NULL);
	assert_string_equal(lookup_user(t, "alice+tag", "example.test"), "alice@example.test");
	assert_string_equal(lookup_user(t, "Alice+a+b", "example.test"), "alice@example.test");
	assert_string_equal(lookup_user(t, "bob+list", "example.test"), "bob+list@example.test");
	assert_null(lookup_user(t, "bob", "example.test"));
	assert_null(lookup_user(t, "bob+other", "example.test"));
	assert_null(lookup_user(t, "+alice", "example.test"));
	assert_null(lookup_user(t, "alicex+tag", "example.test"));
	/* AUTH login names are exact */
	assert_null(lookup_password_hash(t, "alice+tag@example.test"));
	/* hostile sizes never overflow */
	char big[2000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_null(lookup_user(t, big, "example.test"));
	assert_null(lookup_user(t, "alice", big));
	assert_null(lookup_user(NULL, "alice", "example.test"));
	lookup_free(t);
}

static void test_users_100k(void **state)
{
	(void)state;
	struct strbuf sb;
	strbuf_init(&sb);
	for (int i = 0; i < 100000; i++)
		strbuf_addf(&sb, "user%d@d%d.example.test:{SHA256-CRYPT}$5$s$h%d\n", i, i % 7, i);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	struct strbuf errs;
	strbuf_init(&errs);
	struct lookup_tables *t = lookup_load_text(sb.s, sb.len, NULL, 0, &errs);
	assert_non_null(t);
	assert_int_equal(lookup_users_count(t), 100000);
	char local[32], domain[32], want[64];
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < 100000; i++) {
			snprintf(local, sizeof(local), "USER%d", i);
			snprintf(domain, sizeof(domain), "d%d.example.test", i % 7);
			const char *got = lookup_user(t, local, domain);
			assert_non_null(got);
			if (round == 0) {
				snprintf(want, sizeof(want), "user%d@%s", i, domain);
				assert_string_equal(got, want);
			}
		}
	}
	assert_null(lookup_user(t, "user5", "d6.example.test"));
	clock_gettime(CLOCK_MONOTONIC, &b);
	double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	/* 100k loads + 500k lookups: linear scans would take minutes */
	assert_true(secs < 20.0);
	lookup_free(t);
	strbuf_free(&sb);
	strbuf_free(&errs);
}

static void test_load_files(void **state)
{
	(void)state;
	char dir[] = "/tmp/tern-lookup-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char up[128], ap[128];
	snprintf(up, sizeof(up), "%s/users", dir);
	snprintf(ap, sizeof(ap), "%s/aliases", dir);
	FILE *f = fopen(up, "w");
	fputs("alice@example.test:{PLAIN}pw\n", f);
	fclose(f);
	f = fopen(ap, "w");
	fputs("info@example.test: alice@example.test\nbad line\n", f);
	fclose(f);

	struct strbuf errs;
	strbuf_init(&errs);
	assert_null(lookup_load(up, ap, &errs));
	char want[200];
	snprintf(want, sizeof(want), "%s:2: ", ap);
	assert_non_null(strstr(errs.s, want));
	strbuf_reset(&errs);

	f = fopen(ap, "w");
	fputs("info@example.test: alice@example.test\n", f);
	fclose(f);
	struct lookup_tables *t = lookup_load(up, ap, &errs);
	assert_non_null(t);
	assert_int_equal(lookup_aliases_count(t), 1);
	lookup_free(t);

	t = lookup_load(NULL, NULL, &errs);
	assert_non_null(t);
	assert_int_equal(lookup_users_count(t), 0);
	lookup_free(t);

	snprintf(want, sizeof(want), "%s/missing", dir);
	assert_null(lookup_load(want, NULL, &errs));
	assert_non_null(strstr(errs.s, "missing: No such file"));
	strbuf_free(&errs);
	unlink(up);
	unlink(ap);
	rmdir(dir);
}

/* ---- aliases_file ---- */

static void test_aliases_parse(void **state)
{
	(void)state;
	struct lookup_tables *t = load_ok(NULL, "# comment\n"
						"info@example.test: alice@example.test, bob@example.test\n"
						"Sales@Example.test:carol@remote.test\r\n"
						"q@example.test: \"a,b\"@remote.test , x@[192.0.2.1]\n"
						"dup@example.test: a@example.test, A@example.test, a@example.test\n");
	assert_int_equal(lookup_aliases_count(t), 4);
	lookup_free(t);

	load_err(NULL, "info@example.test alice@example.test\n", "aliases:1: ");
	load_err(NULL, "info@example.test:\n", "aliases:1: alias info@example.test: empty target");
	load_err(NULL, "info@example.test: a@example.test,\n", "aliases:1: ");
	load_err(NULL, "info@example.test: a@example.test,,b@example.test\n", "empty target");
	load_err(NULL, "info@example.test: |/bin/sh\n", "aliases:1: ");
	load_err(NULL, "info@example.test: /var/mail/x\n", "aliases:1: ");
	load_err(NULL, "info@example.test: bob\n", "aliases:1: ");
	load_err(NULL, "info@example.test: <bob@example.test>\n", "aliases:1: ");
	load_err(NULL, "info: bob@example.test\n", "aliases:1: ");
	load_err(NULL, "info@[10.0.0.1]: bob@example.test\n", "aliases:1: ");
	load_err(NULL, "a@example.test: b@example.test\nA@EXAMPLE.TEST: c@example.test\n",
		 "aliases:2: duplicate alias");
	load_err(NULL, "a@example.test: b c@example.test\n", "aliases:1: ");
	load_err(NULL, "\"unterminated@example.test: b@example.test\n", "aliases:1: ");
	char big[600];
	memset(big, 'x', sizeof(big));
	snprintf(big + 300, 300, "@example.test: b@example.test\n");
	load_err(NULL, big, "aliases:1: ");
	/* both files report, with their own names */
	struct strbuf errs;
	strbuf_init(&errs);
	assert_null(load("bad\n", "bad\n", &errs));
	assert_non_null(strstr(errs.s, "users:1: "));
	assert_non_null(strstr(errs.s, "aliases:1: "));
	strbuf_free(&errs);
}

/* ---- lookup_rcpt ---- */

static const char *users_text = "alice@example.test:{PLAIN}a\n"
				"bob@example.test:{PLAIN}b\n"
				"Carol@example.test:{PLAIN}c\n"
				"local@localhost:{PLAIN}l\n"
				"dave+ext@example.test:{PLAIN}d\n";

static const char *aliases_text = "info@example.test: alice@example.test, bob@example.test\n"
				  "team@example.test: info@example.test, alice@example.test, friend@remote.test\n"
				  "fwd@example.test: someone@remote.test\n"
				  "sales@example.test: carol@example.test\n"
				  "postmaster@example.test: bob@example.test\n"
				  "loop1@example.test: loop2@example.test\n"
				  "loop2@example.test: loop1@example.test\n"
				  "self@example.test: self@example.test\n"
				  "mixed@example.test: bob@example.test, loop1@example.test\n"
				  "partial@example.test: nobody@example.test, bob@example.test\n"
				  "broken@example.test: nobody@example.test, ghost@example.test\n"
				  "alice@example.test: alice@example.test, alice-copy@remote.test\n"
				  "lit@example.test: root@[192.0.2.7]\n"
				  "cross@localhost: alice+x@example.test\n";

static void test_rcpt_local(void **state)
{
	(void)state;
	struct conf c;
	conf_make(&c, NULL);
	struct lookup_tables *t = load_ok(users_text, aliases_text);
	struct envelope env;
	env_init(&env);

	assert_int_equal(rcpt(t, &c, "<bob@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 1);
	assert_string_equal(env.rcpts[0].addr, "bob@example.test");
	assert_string_equal(env.rcpts[0].orcpt, "bob@example.test");

	/* case-insensitive, canonical spelling comes from the file */
	assert_int_equal(rcpt(t, &c, "<CAROL@Example.Test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_true(has(&env, "Carol@example.test"));
	assert_int_equal(env.nrcpts, 2);

	assert_int_equal(rcpt(t, &c, "<local@LOCALHOST>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_true(has(&env, "local@localhost"));

	assert_int_equal(rcpt(t, &c, "<nobody@example.test>", 0, &env), SMTP_RCPT_UNKNOWN_USER);
	assert_int_equal(rcpt(t, &c, "<bob@localhost>", 1, &env), SMTP_RCPT_UNKNOWN_USER);
	assert_int_equal(env.nrcpts, 3);

	/* orcpt and notify are passed through */
	struct smtp_path p = path("<dave+ext@example.test>");
	assert_int_equal(lookup_rcpt(t, &c, &p, 0, &env, "rfc822;Dave+Ext@example.test", 6), SMTP_RCPT_ACCEPT);
	long i = env_rcpt_find(&env, "dave+ext@example.test");
	assert_true(i >= 0);
	assert_string_equal(env.rcpts[i].orcpt, "rfc822;Dave+Ext@example.test");
	assert_int_equal(env.rcpts[i].notify, 6);

	/* NULL tables: nothing local exists, relaying still works */
	assert_int_equal(rcpt(NULL, &c, "<bob@example.test>", 1, &env), SMTP_RCPT_UNKNOWN_USER);
	assert_int_equal(rcpt(NULL, &c, "<x@remote.test>", 1, &env), SMTP_RCPT_ACCEPT);

	env_free(&env);
	lookup_free(t);
	conf_free(&c);
}

static void test_rcpt_subaddress(void **state)
{
	(void)state;
	struct conf c;
	conf_make(&c, NULL);
	struct lookup_tables *t = load_ok(users_text, aliases_text);
	struct envelope env;
	env_init(&env);

	assert_int_equal(rcpt(t, &c, "<bob+news@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 1);
	assert_string_equal(env.rcpts[0].addr, "bob@example.test");
	assert_string_equal(env.rcpts[0].orcpt, "bob+news@example.test");
	assert_int_equal(rcpt(t, &c, "<BOB@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 1);

	/* an account that has '+' in its name wins over the base */
	assert_int_equal(rcpt(t, &c, "<dave+ext@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_true(has(&env, "dave+ext@example.test"));
	assert_int_equal(rcpt(t, &c, "<dave+other@example.test>", 0, &env), SMTP_RCPT_UNKNOWN_USER);
	assert_int_equal(rcpt(t, &c, "<dave@example.test>", 0, &env), SMTP_RCPT_UNKNOWN_USER);

	/* alias of the subaddress base */
	assert_int_equal(rcpt(t, &c, "<sales+spring@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_true(has(&env, "Carol@example.test"));
	assert_int_equal(rcpt(t, &c, "<+x@example.test>", 0, &env), SMTP_RCPT_UNKNOWN_USER);

	env_free(&env);
	lookup_free(t);
	conf_free(&c);
}

static void test_rcpt_alias(void **state)
{
	(void)state;
	struct conf c;
	conf_make(&c, NULL);
	struct lookup_tables *t = load_ok(users_text, aliases_text);
	struct envelope env;
	env_init(&env);

	assert_int_equal(rcpt(t, &c, "<info@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 3);
	assert_true(has(&env, "bob@example.test"));
	/* alice is herself an alias: her mailbox plus a remote copy */
	assert_true(has(&env, "alice@example.test"));
	assert_true(has(&env, "alice-copy@remote.test"));
	env_free(&env);

	/* nested + remote target even without relay rights; each mailbox once */
	env_init(&env);
	assert_int_equal(rcpt(t, &c, "<Team@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 4);
	assert_true(has(&env, "alice@example.test"));
	assert_true(has(&env, "bob@example.test"));
	assert_true(has(&env, "alice-copy@remote.test"));
	assert_true(has(&env, "friend@remote.test"));
	for (size_t i = 0; i < env.nrcpts; i++)
		assert_string_equal(env.rcpts[i].orcpt, "Team@example.test");
	/* naming the same mailboxes again adds nothing */
	assert_int_equal(rcpt(t, &c, "<alice@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(rcpt(t, &c, "<alice+tag@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(rcpt(t, &c, "<info@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 4);
	env_free(&env);

	env_init(&env);
	assert_int_equal(rcpt(t, &c, "<fwd@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 1);
	assert_string_equal(env.rcpts[0].addr, "someone@remote.test");
	assert_int_equal(rcpt(t, &c, "<lit@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_true(has(&env, "root@[192.0.2.7]"));
	/* a target in another local domain, with a subaddress */
	assert_int_equal(rcpt(t, &c, "<cross@localhost>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_true(has(&env, "alice@example.test"));
	env_free(&env);

	/* unknown targets are skipped; all unknown = unknown user */
	env_init(&env);
	assert_int_equal(rcpt(t, &c, "<partial@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 1);
	assert_string_equal(env.rcpts[0].addr, "bob@example.test");
	assert_int_equal(rcpt(t, &c, "<broken@example.test>", 0, &env), SMTP_RCPT_UNKNOWN_USER);
	assert_int_equal(env.nrcpts, 1);
	env_free(&env);

	lookup_free(t);
	conf_free(&c);
}

static void test_rcpt_loops(void **state)
{
	(void)state;
	struct conf c;
	conf_make(&c, NULL);
	struct lookup_tables *t = load_ok(users_text, aliases_text);
	struct envelope env;
	env_init(&env);

	/* the loop is logged for the operator: event=alias_loop */
	char logpath[] = "/tmp/tern-lookup-log-XXXXXX";
	int lfd = mkstemp(logpath);
	assert_true(lfd >= 0);
	int saved = dup(2);
	dup2(lfd, 2);
	log_init("test_lookup", LOG_LEVEL_ERR);
	assert_int_equal(rcpt(t, &c, "<loop1@example.test>", 0, &env), SMTP_RCPT_TEMPFAIL);
	log_init("test_lookup", LOG_LEVEL_CRIT);
	dup2(saved, 2);
	close(saved);
	char logbuf[4096];
	ssize_t ln = pread(lfd, logbuf, sizeof(logbuf) - 1, 0);
	assert_true(ln > 0);
	logbuf[ln] = '\0';
	assert_non_null(strstr(logbuf, "event=alias_loop"));
	assert_non_null(strstr(logbuf, "rcpt=loop1@example.test"));
	close(lfd);
	unlink(logpath);
	assert_int_equal(rcpt(t, &c, "<loop2+x@example.test>", 0, &env), SMTP_RCPT_TEMPFAIL);
	assert_int_equal(rcpt(t, &c, "<self@example.test>", 0, &env), SMTP_RCPT_TEMPFAIL);
	/* the envelope is untouched when the answer is not ACCEPT */
	assert_int_equal(rcpt(t, &c, "<mixed@example.test>", 0, &env), SMTP_RCPT_TEMPFAIL);
	assert_int_equal(env.nrcpts, 0);
	env_free(&env);
	lookup_free(t);

	/* a chain of 10 aliases resolves; 11 is too deep */
	struct strbuf a;
	strbuf_init(&a);
	for (int i = 0; i < 11; i++)
		strbuf_addf(&a, "c%d@example.test: c%d@example.test\n", i, i + 1);
	t = load_ok("c11@example.test:x\n", a.s);
	env_init(&env);
	assert_int_equal(rcpt(t, &c, "<c1@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_true(has(&env, "c11@example.test"));
	assert_int_equal(rcpt(t, &c, "<c0@example.test>", 0, &env), SMTP_RCPT_TEMPFAIL);
	assert_int_equal(env.nrcpts, 1);
	env_free(&env);
	lookup_free(t);

	/* a wide lattice: every level points twice at the next. Without
	 * memoisation this is 2^10 paths per level; it must stay instant */
	strbuf_reset(&a);
	for (int i = 0; i < 10; i++) {
		strbuf_addf(&a, "l%da@example.test: l%da@example.test, l%db@example.test\n", i, i + 1, i + 1);
		strbuf_addf(&a, "l%db@example.test: l%da@example.test, l%db@example.test\n", i, i + 1, i + 1);
	}
	strbuf_addf(&a, "l10a@example.test: alice@example.test\nl10b@example.test: bob@example.test\n");
	t = load_ok(users_text, a.s);
	env_init(&env);
	assert_int_equal(rcpt(t, &c, "<l1a@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 2);
	assert_int_equal(rcpt(t, &c, "<l0a@example.test>", 0, &env), SMTP_RCPT_TEMPFAIL);
	env_free(&env);
	lookup_free(t);

	/* a big loop through many aliases: detected, not followed forever */
	strbuf_reset(&a);
	for (int i = 0; i < 5; i++)
		strbuf_addf(&a, "r%d@example.test: r%d@example.test\n", i, (i + 1) % 5);
	t = load_ok(NULL, a.s);
	env_init(&env);
	assert_int_equal(rcpt(t, &c, "<r3@example.test>", 0, &env), SMTP_RCPT_TEMPFAIL);
	env_free(&env);
	lookup_free(t);
	strbuf_free(&a);
	conf_free(&c);
}

static void test_rcpt_relay(void **state)
{
	(void)state;
	struct conf c;
	conf_make(&c, NULL);
	struct lookup_tables *t = load_ok(users_text, aliases_text);
	struct envelope env;
	env_init(&env);

	assert_int_equal(rcpt(t, &c, "<x@remote.test>", 0, &env), SMTP_RCPT_RELAY_DENIED);
	assert_int_equal(rcpt(t, &c, "<alice@[127.0.0.1]>", 0, &env), SMTP_RCPT_RELAY_DENIED);
	assert_int_equal(rcpt(t, &c, "<alice@sub.example.test>", 0, &env), SMTP_RCPT_RELAY_DENIED);
	assert_int_equal(env.nrcpts, 0);

	struct smtp_path p = path("<X.Y@Remote.Test>");
	assert_int_equal(lookup_rcpt(t, &c, &p, 1, &env, NULL, 0), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 1);
	assert_string_equal(env.rcpts[0].addr, p.addr);
	assert_int_equal(rcpt(t, &c, "<X.Y@Remote.Test>", 1, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 1);
	assert_int_equal(rcpt(t, &c, "<alice@[127.0.0.1]>", 1, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 2);

	/* relay tricks name a local part literally: never relayed */
	const char *tricks[] = {
		"<alice%remote.test@example.test>", "<remote.test!alice@example.test>",
		"<\"alice@remote.test\"@example.test>", "<@example.test:alice@remote.test>",
		"<alice%remote.test@localhost>",
	};
	for (size_t i = 0; i < sizeof(tricks) / sizeof(tricks[0]); i++) {
		struct smtp_path tp;
		memset(&tp, 0, sizeof(tp));
		const char *detail;
		if (smtp_parse_path(tricks[i], strlen(tricks[i]), 0, &tp, &detail) != SMTP_PARSE_OK)
			continue; /* the parser refusing it is just as good */
		enum smtp_rcpt_verdict v = lookup_rcpt(t, &c, &tp, 0, &env, NULL, 0);
		if (tp.domain_literal || !conf_is_local_domain(&c, tp.domain, strlen(tp.domain)))
			assert_int_equal(v, SMTP_RCPT_RELAY_DENIED); /* source route dropped */
		else
			assert_int_equal(v, SMTP_RCPT_UNKNOWN_USER);
	}
	assert_int_equal(env.nrcpts, 2);
	for (size_t i = 0; i < env.nrcpts; i++)
		assert_null(strstr(env.rcpts[i].addr, "alice@remote"));

	env_free(&env);
	lookup_free(t);
	conf_free(&c);
}

static void test_rcpt_postmaster(void **state)
{
	(void)state;
	struct conf c;
	conf_make(&c, NULL);
	struct lookup_tables *t = load_ok(users_text, aliases_text);
	struct envelope env;
	env_init(&env);

	/* bare <Postmaster>: postmaster@example.test, an alias to bob */
	struct smtp_path p = path("<Postmaster>");
	assert_true(p.is_postmaster);
	assert_int_equal(lookup_rcpt(t, &c, &p, 0, &env, NULL, 0), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 1);
	assert_string_equal(env.rcpts[0].addr, "bob@example.test");
	assert_int_equal(rcpt(t, &c, "<POSTMASTER@example.test>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_int_equal(env.nrcpts, 1);
	env_free(&env);

	/* no alias, no account: conf->postmaster when it is local */
	env_init(&env);
	assert_int_equal(rcpt(t, &c, "<postmaster@localhost>", 0, &env), SMTP_RCPT_UNKNOWN_USER);
	conf_free(&c);
	conf_make(&c, "bob@Example.Test");
	assert_int_equal(rcpt(t, &c, "<postmaster@localhost>", 0, &env), SMTP_RCPT_ACCEPT);
	assert_true(has(&env, "bob@example.test"));
	env_free(&env);
	lookup_free(t);

	/* no tables at all */
	t = load_ok(NULL, NULL);
	env_init(&env);
	p = path("<postmaster>");
	assert_int_equal(lookup_rcpt(t, &c, &p, 0, &env, NULL, 0), SMTP_RCPT_UNKNOWN_USER);
	conf_free(&c);
	/* conf->postmaster pointing at postmaster itself does not recurse */
	conf_make(&c, "postmaster@example.test");
	assert_int_equal(lookup_rcpt(t, &c, &p, 0, &env, NULL, 0), SMTP_RCPT_UNKNOWN_USER);
	conf_free(&c);
	/* a remote conf->postmaster is not used for local postmaster mail */
	conf_make(&c, "admin@remote.test");
	assert_int_equal(rcpt(t, &c, "<postmaster@example.test>", 0, &env), SMTP_RCPT_UNKNOWN_USER);
	assert_int_equal(env.nrcpts, 0);
	env_free(&env);
	lookup_free(t);
	conf_free(&c);
}

int main(void)
{
	log_init("test_lookup", LOG_LEVEL_CRIT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_users_valid),
		cmocka_unit_test(test_users_bad),
		cmocka_unit_test(test_users_case),
		cmocka_unit_test(test_users_subaddress),
		cmocka_unit_test(test_users_100k),
		cmocka_unit_test(test_load_files),
		cmocka_unit_test(test_aliases_parse),
		cmocka_unit_test(test_rcpt_local),
		cmocka_unit_test(test_rcpt_subaddress),
		cmocka_unit_test(test_rcpt_alias),
		cmocka_unit_test(test_rcpt_loops),
		cmocka_unit_test(test_rcpt_relay),
		cmocka_unit_test(test_rcpt_postmaster),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
