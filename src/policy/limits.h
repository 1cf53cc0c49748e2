/*
 * limits - abuse limits kept in memory: failed AUTH attempts per client
 * address, and message rates per account and per client address.
 *
 * AUTH: every failure from an address makes its next answer wait longer
 * (1 s per recent failure, at most 5 s); after max_failures failures within
 * the lockout period the address is refused (421 4.7.0) until the period has
 * passed. Only the address is locked, never the account, so an attacker
 * elsewhere cannot lock a user out.
 * Rates: a fixed one-hour window per key ("user:alice@example.test",
 * "ip:192.0.2.1"); over the limit, MAIL gets 450 4.7.1.
 *
 * Exports:
 *   limits_new/free             the tables (bounded: oldest entries dropped)
 *   limits_auth_locked          is this address refused right now
 *   limits_auth_failure         record a failure; returns the delay (s)
 *   limits_auth_success         forget the address's failures
 *   limits_rate_take            count one message; 1 if over the limit
 * Time is passed in, so tests need no clock. Loop thread only.
 */
#ifndef TERN_POLICY_LIMITS_H
#define TERN_POLICY_LIMITS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct limits;

struct limits *limits_new(size_t max_entries);
void limits_free(struct limits *l);
int limits_auth_locked(struct limits *l, const char *addr, time_t now, uint64_t max_failures,
		       uint64_t lockout);
unsigned limits_auth_failure(struct limits *l, const char *addr, time_t now, uint64_t lockout);
void limits_auth_success(struct limits *l, const char *addr);
int limits_rate_take(struct limits *l, const char *key, time_t now, uint64_t per_hour);

#endif
