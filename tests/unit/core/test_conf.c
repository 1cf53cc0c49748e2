/*
 * test_conf - the configuration parser: types, defaults, overrides, and
 * "FILE:LINE: key: what is wrong" errors for every kind of mistake.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "conf/conf.h"

/* load - parse text as file NAME; returns conf_load's result, errors in *errs */
static int load(struct conf *c, const char *text, char *const *ov, size_t nov, struct strbuf *errs)
{
	strbuf_init(errs);
	return conf_load_mem(c, "/etc/tern/t.conf", text, strlen(text), ov, nov, errs);
}

static void test_defaults_and_types(void **state)
{
	(void)state;
	struct conf c;
	struct strbuf e;
	int r = load(&c,
		     "# comment\n"
		     "hostname = mx.example.test\n"
		     "smtp_listen = 127.0.0.1:2525, [::1]:2525\n"
		     "local_domains = Example.TEST , localhost\n"
		     "max_message_size = 10m   # inline comment\n"
		     "command_timeout = 2m\n"
		     "mail_dir = var/mail\n"
		     "users_file = /abs/users\n",
		     NULL, 0, &e);
	assert_int_equal(r, 0);
	assert_string_equal(c.hostname, "mx.example.test");
	assert_int_equal(c.smtp_listen.n, 2);
	assert_string_equal(c.smtp_listen.v[1], "[::1]:2525");
	assert_int_equal(c.local_domains.n, 2);
	assert_string_equal(c.local_domains.v[0], "example.test"); /* lowercased */
	assert_true(conf_is_local_domain(&c, "EXAMPLE.test", 12));
	assert_false(conf_is_local_domain(&c, "example.tes", 11));
	assert_int_equal(c.max_message_size, 10 * 1024 * 1024);
	assert_int_equal(c.command_timeout, 120);
	assert_string_equal(c.mail_dir, "/etc/tern/var/mail"); /* relative to the file */
	assert_string_equal(c.users_file, "/abs/users");
	assert_string_equal(c.queue_dir, "/etc/tern/var/queue"); /* default, also relative */
	assert_int_equal(c.smtp_port, 25);
	assert_int_equal(c.max_recipients, 100);
	assert_string_equal(c.postmaster, "postmaster@mx.example.test");
	conf_free(&c);
	strbuf_free(&e);
}

static void test_overrides_win(void **state)
{
	(void)state;
	struct conf c;
	struct strbuf e;
	char *ov[] = {"smtp_port=2526", "hostname = other.test"};
	assert_int_equal(load(&c, "hostname = a.test\nsmtp_listen=127.0.0.1:1\n", ov, 2, &e), 0);
	assert_int_equal(c.smtp_port, 2526);
	assert_string_equal(c.hostname, "other.test");
	conf_free(&c);
	strbuf_free(&e);
}

static void expect_error(const char *text, const char *needle)
{
	struct conf c;
	struct strbuf e;
	int r = load(&c, text, NULL, 0, &e);
	if (r != -1 || e.s == NULL || strstr(e.s, needle) == NULL)
		fail_msg("config %s: expected error containing '%s', got r=%d '%s'", text, needle, r,
			 e.s ? e.s : "");
	conf_free(&c);
	strbuf_free(&e);
}

static void test_errors_name_file_line_key(void **state)
{
	(void)state;
	expect_error("hostname = a\nbogus_key = 1\n", "/etc/tern/t.conf:2: bogus_key: unknown key");
	expect_error("smtp_port = twenty\n", "/etc/tern/t.conf:1: smtp_port: expected a non-negative whole number");
	expect_error("\n\nsmtp_port = 70000\n", "/etc/tern/t.conf:3: smtp_port: must be 1 to 65535");
	expect_error("max_message_size = 5q\n", "t.conf:1: max_message_size: expected a size");
	expect_error("command_timeout = -1\n", "t.conf:1: command_timeout: expected a duration");
	expect_error("smtp_listen = localhost:25\n", "t.conf:1: smtp_listen: listen address must be a numeric");
	expect_error("smtp_listen = 127.0.0.1\n", "t.conf:1: smtp_listen: expected addr:port");
	expect_error("smtp_listen = 127.0.0.1:0\n", "smtp_listen: expected addr:port");
	expect_error("just some words\n", "t.conf:1: just some words: expected key = value");
	expect_error("tls_cert = /x.pem\n", "t.conf:0: tls_key: tls_cert and tls_key must be set together");
	expect_error("local_domains = ex ample.test\n", "t.conf:1: local_domains: a domain holds only");
	expect_error("mynetworks = 10.0.0.0/33\n", "t.conf:1: mynetworks: expected addr");
	expect_error("log_level = loud\n", "t.conf:1: log_level: expected debug");
	expect_error("retry_min = 2h\nretry_max = 1h\n", "t.conf:2: retry_max: retry_min must be positive");
	expect_error("dns_resolver = 127.0.0.1\n", "t.conf:1: dns_resolver: expected addr:port");
	expect_error("a\0b = 1\n", "expected key = value"); /* strlen stops at NUL: "a" */
	/* found by fuzz_conf: emptying a needed key used to leave a NULL behind */
	expect_error("log_level =\n", "t.conf:1: log_level: must not be empty");
	expect_error("queue_dir=\n", "t.conf:1: queue_dir: must not be empty");
	expect_error("control_socket = \n", "t.conf:1: control_socket: must not be empty");
}

static void test_missing_file(void **state)
{
	(void)state;
	struct conf c;
	struct strbuf e;
	strbuf_init(&e);
	assert_int_equal(conf_load(&c, "/nonexistent/tern.conf", NULL, 0, &e), -1);
	assert_non_null(strstr(e.s, "/nonexistent/tern.conf:0:"));
	conf_free(&c);
	strbuf_free(&e);
}

static void test_dev_null_plus_overrides(void **state)
{
	(void)state;
	struct conf c;
	struct strbuf e;
	strbuf_init(&e);
	char *ov[] = {"smtp_listen=127.0.0.1:2525", "local_domains=example.test", "mail_dir=m"};
	assert_int_equal(conf_load(&c, "/dev/null", ov, 3, &e), 0);
	assert_string_equal(c.mail_dir, "m"); /* relative to the working directory */
	assert_int_equal(c.smtp_listen.n, 1);
	conf_free(&c);
	strbuf_free(&e);
	char *bad[] = {"nonsense"};
	strbuf_init(&e);
	assert_int_equal(conf_load(&c, "/dev/null", bad, 1, &e), -1);
	assert_non_null(strstr(e.s, "-o:1: nonsense: expected key=value"));
	conf_free(&c);
	strbuf_free(&e);
}

static void test_table_is_documented(void **state)
{
	(void)state;
	size_t n;
	const struct conf_param *t = conf_param_table(&n);
	assert_true(n > 20);
	for (size_t i = 0; i < n; i++) {
		assert_non_null(t[i].doc);
		assert_true(strlen(t[i].doc) > 5);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_and_types),
		cmocka_unit_test(test_overrides_win),
		cmocka_unit_test(test_errors_name_file_line_key),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_dev_null_plus_overrides),
		cmocka_unit_test(test_table_is_documented),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
