/*
 * test_core - buffers, strings, logging escapes, address matching.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/netaddr.h"
#include "core/str.h"

static void test_buf_cap_never_grows(void **state)
{
	(void)state;
	struct buf b;
	assert_int_equal(buf_init(&b, 8), 0);
	assert_int_equal(buf_append(&b, "abcdef", 6), 0);
	assert_int_equal(buf_append(&b, "xyz", 3), -1); /* would exceed 8 */
	assert_int_equal(buf_len(&b), 6);
	buf_consume(&b, 4);
	assert_int_equal(buf_append(&b, "xyz", 3), 0); /* compacts */
	assert_int_equal(buf_len(&b), 5);
	assert_memory_equal(buf_head(&b), "efxyz", 5);
	buf_consume(&b, 100);
	assert_int_equal(buf_len(&b), 0);
	buf_free(&b);
}

static void test_strbuf(void **state)
{
	(void)state;
	struct strbuf sb;
	strbuf_init(&sb);
	for (int i = 0; i < 1000; i++)
		strbuf_addf(&sb, "%d,", i);
	assert_true(sb.len > 3000);
	assert_int_equal(strlen(sb.s), sb.len);
	assert_memory_equal(sb.s, "0,1,2,", 6);
	strbuf_reset(&sb);
	assert_int_equal(sb.len, 0);
	strbuf_add(&sb, "a\0b", 3);
	assert_int_equal(sb.len, 3);
	strbuf_free(&sb);
}

static void test_parse_u64(void **state)
{
	(void)state;
	uint64_t v;
	assert_int_equal(str_parse_u64("0", 1, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(str_parse_u64("18446744073709551615", 20, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(str_parse_u64("18446744073709551616", 20, &v), -1);
	assert_int_equal(str_parse_u64("", 0, &v), -1);
	assert_int_equal(str_parse_u64("12a", 3, &v), -1);
	assert_int_equal(str_parse_u64("-1", 2, &v), -1);
	assert_int_equal(str_parse_u64(" 1", 2, &v), -1);
}

static void test_case(void **state)
{
	(void)state;
	assert_int_equal(str_casecmp_ascii("Example.TEST", "example.test"), 0);
	assert_true(str_casecmp_ascii("a", "b") < 0);
	struct slice s = {"EHLO", 4};
	assert_true(str_slice_eq_ci(s, "ehlo"));
	assert_false(str_slice_eq_ci(s, "ehl"));
	char d[] = "MiXeD\xc3\x84";
	str_lower_ascii(d);
	assert_string_equal(d, "mixed\xc3\x84"); /* non-ASCII untouched */
}

/* log_capture - run a log line into a pipe and read it back */
static void log_capture(char *out, size_t outlen, const char *value, size_t vlen)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	int saved = dup(STDERR_FILENO);
	dup2(p[1], STDERR_FILENO);
	struct log_line l;
	log_begin(&l, LOG_LEVEL_INFO, "test");
	log_kvn(&l, "v", value, vlen);
	log_end(&l);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(p[1]);
	ssize_t n = read(p[0], out, outlen - 1);
	close(p[0]);
	assert_true(n > 0);
	out[n] = '\0';
}

static void test_log_escapes_hostile_values(void **state)
{
	(void)state;
	log_init("test", LOG_LEVEL_DEBUG);
	char out[LOG_LINE_MAX + 16];
	log_capture(out, sizeof(out), "a\r\nlevel=crit event=forged", 26);
	/* one line only, the CR LF escaped, the forged field quoted */
	assert_non_null(strstr(out, "v=\"a\\x0d\\x0alevel=crit event=forged\""));
	assert_int_equal(strchr(out, '\n') - out, (long)strlen(out) - 1);
	log_capture(out, sizeof(out), "plain", 5);
	assert_non_null(strstr(out, " v=plain\n"));
	log_capture(out, sizeof(out), "", 0);
	assert_non_null(strstr(out, " v=\"\"\n"));
	/* an oversized value is cut, but the line stays one line */
	static char big[10000];
	memset(big, 'x', sizeof(big));
	log_capture(out, sizeof(out), big, sizeof(big));
	assert_true(strlen(out) <= LOG_LINE_MAX);
	assert_int_equal(out[strlen(out) - 1], '\n');
}

static struct sockaddr_storage sa(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, ip, &s6->sin6_addr);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &s4->sin_addr);
	}
	return ss;
}

static void test_netaddr(void **state)
{
	(void)state;
	char *v[] = {"127.0.0.0/8", "::1/128", "192.0.2.17", "10.1.0.0/17", "bogus/99"};
	struct conf_list l = {v, 5};
	struct sockaddr_storage s;
	s = sa("127.5.6.7");
	assert_true(netaddr_in_list(&l, &s));
	s = sa("128.0.0.1");
	assert_false(netaddr_in_list(&l, &s));
	s = sa("::1");
	assert_true(netaddr_in_list(&l, &s));
	s = sa("::2");
	assert_false(netaddr_in_list(&l, &s));
	s = sa("::ffff:127.0.0.1"); /* v4-mapped is matched as IPv4 */
	assert_true(netaddr_in_list(&l, &s));
	s = sa("192.0.2.17");
	assert_true(netaddr_in_list(&l, &s));
	s = sa("192.0.2.18");
	assert_false(netaddr_in_list(&l, &s));
	s = sa("10.1.127.255");
	assert_true(netaddr_in_list(&l, &s));
	s = sa("10.1.128.0");
	assert_false(netaddr_in_list(&l, &s));
	char txt[64];
	s = sa("::ffff:10.0.0.1");
	netaddr_str(&s, txt, sizeof(txt));
	assert_string_equal(txt, "10.0.0.1");
	assert_int_equal(netaddr_check_cidr("1.2.3.4/33"), -1);
	assert_int_equal(netaddr_check_cidr("::/0"), 0);
	assert_int_equal(netaddr_check_cidr("1.2.3.4/"), -1);
	assert_int_equal(netaddr_check_cidr(""), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buf_cap_never_grows),
		cmocka_unit_test(test_strbuf),
		cmocka_unit_test(test_parse_u64),
		cmocka_unit_test(test_case),
		cmocka_unit_test(test_log_escapes_hostile_values),
		cmocka_unit_test(test_netaddr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
