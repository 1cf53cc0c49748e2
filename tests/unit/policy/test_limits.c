/*
 * test_limits - AUTH throttling and rate limits, with a fake clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "policy/limits.h"

static void test_auth_lockout_per_address(void **state)
{
	(void)state;
	struct limits *l = limits_new(100);
	time_t t = 1000;
	assert_false(limits_auth_locked(l, "192.0.2.1", t, 3, 900));
	assert_int_equal(limits_auth_failure(l, "192.0.2.1", t, 900), 1);
	assert_int_equal(limits_auth_failure(l, "192.0.2.1", t + 1, 900), 2);
	assert_false(limits_auth_locked(l, "192.0.2.1", t + 2, 3, 900));
	assert_int_equal(limits_auth_failure(l, "192.0.2.1", t + 2, 900), 3);
	assert_true(limits_auth_locked(l, "192.0.2.1", t + 3, 3, 900));
	/* another address (the real user elsewhere) is not affected */
	assert_false(limits_auth_locked(l, "198.51.100.7", t + 3, 3, 900));
	/* the lock ends with the period */
	assert_true(limits_auth_locked(l, "192.0.2.1", t + 899, 3, 900));
	assert_false(limits_auth_locked(l, "192.0.2.1", t + 900, 3, 900));
	/* delays grow and are capped */
	for (int i = 0; i < 10; i++)
		limits_auth_failure(l, "203.0.113.9", t, 900);
	assert_int_equal(limits_auth_failure(l, "203.0.113.9", t, 900), 5);
	limits_auth_success(l, "203.0.113.9");
	assert_false(limits_auth_locked(l, "203.0.113.9", t, 3, 900));
	limits_free(l);
}

static void test_rate_window(void **state)
{
	(void)state;
	struct limits *l = limits_new(100);
	time_t t = 5000;
	for (int i = 0; i < 3; i++)
		assert_int_equal(limits_rate_take(l, "user:alice@example.test", t, 3), 0);
	assert_int_equal(limits_rate_take(l, "user:alice@example.test", t + 10, 3), 1);
	assert_int_equal(limits_rate_take(l, "user:bob@example.test", t + 10, 3), 0);
	assert_int_equal(limits_rate_take(l, "user:alice@example.test", t + 3600, 3), 0);
	assert_int_equal(limits_rate_take(l, "anything", t, 0), 0); /* 0 = no limit */
	limits_free(l);
}

static void test_bounded_memory(void **state)
{
	(void)state;
	struct limits *l = limits_new(50);
	char key[64];
	for (int i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "10.0.%d.%d", i / 256, i % 256);
		limits_auth_failure(l, key, 1, 900);
	}
	/* the newest are kept, the oldest evicted */
	assert_true(limits_auth_locked(l, "10.0.39.15", 1, 1, 900));
	assert_false(limits_auth_locked(l, "10.0.0.0", 1, 1, 900));
	limits_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auth_lockout_per_address),
		cmocka_unit_test(test_rate_window),
		cmocka_unit_test(test_bounded_memory),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
