/*
 * limits - AUTH failure throttling and message rate limits. See limits.h.
 * A hash table of counters with a hard cap on entries, so a flood of
 * distinct addresses cannot grow memory without bound.
 */
#include "policy/limits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/xalloc.h"

#define LIMITS_BUCKETS 4096
#define LIMITS_KEY_MAX 320

struct limits_entry {
	struct limits_entry *next;      /* bucket chain */
	struct limits_entry *older, *newer; /* age list, for eviction */
	char key[LIMITS_KEY_MAX];
	time_t window;   /* start of the current counting window */
	uint64_t count;  /* failures (auth) or messages (rate) in the window */
};

struct limits {
	struct limits_entry *b[LIMITS_BUCKETS];
	struct limits_entry *oldest, *newest;
	size_t n, max;
};

static unsigned limits_hash(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % LIMITS_BUCKETS;
}

struct limits *limits_new(size_t max_entries)
{
	struct limits *l = xcalloc(1, sizeof(*l));
	l->max = max_entries ? max_entries : 1;
	return l;
}

static void limits_unlink(struct limits *l, struct limits_entry *e)
{
	struct limits_entry **pp = &l->b[limits_hash(e->key)];
	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	if (e->older)
		e->older->newer = e->newer;
	else
		l->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		l->newest = e->older;
	l->n--;
	free(e);
}

void limits_free(struct limits *l)
{
	if (l == NULL)
		return;
	while (l->oldest)
		limits_unlink(l, l->oldest);
	free(l);
}

static struct limits_entry *limits_find(struct limits *l, const char *key)
{
	for (struct limits_entry *e = l->b[limits_hash(key)]; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

/* limits_get - find or create; the table never exceeds max entries */
static struct limits_entry *limits_get(struct limits *l, const char *key, time_t now)
{
	struct limits_entry *e = limits_find(l, key);
	if (e)
		return e;
	if (l->n >= l->max)
		limits_unlink(l, l->oldest);
	e = xcalloc(1, sizeof(*e));
	snprintf(e->key, sizeof(e->key), "%s", key);
	e->window = now;
	unsigned h = limits_hash(e->key);
	e->next = l->b[h];
	l->b[h] = e;
	e->older = l->newest;
	if (l->newest)
		l->newest->newer = e;
	else
		l->oldest = e;
	l->newest = e;
	l->n++;
	return e;
}

static void limits_window(struct limits_entry *e, time_t now, uint64_t period)
{
	if ((uint64_t)(now - e->window) >= period) {
		e->window = now;
		e->count = 0;
	}
}

int limits_auth_locked(struct limits *l, const char *addr, time_t now, uint64_t max_failures,
		       uint64_t lockout)
{
	char key[LIMITS_KEY_MAX];
	snprintf(key, sizeof(key), "auth:%s", addr);
	struct limits_entry *e = limits_find(l, key);
	if (e == NULL || max_failures == 0)
		return 0;
	limits_window(e, now, lockout);
	return e->count >= max_failures;
}

unsigned limits_auth_failure(struct limits *l, const char *addr, time_t now, uint64_t lockout)
{
	char key[LIMITS_KEY_MAX];
	snprintf(key, sizeof(key), "auth:%s", addr);
	struct limits_entry *e = limits_get(l, key, now);
	limits_window(e, now, lockout);
	e->count++;
	return e->count > 5 ? 5 : (unsigned)e->count;
}

void limits_auth_success(struct limits *l, const char *addr)
{
	char key[LIMITS_KEY_MAX];
	snprintf(key, sizeof(key), "auth:%s", addr);
	struct limits_entry *e = limits_find(l, key);
	if (e)
		limits_unlink(l, e);
}

int limits_rate_take(struct limits *l, const char *key, time_t now, uint64_t per_hour)
{
	if (per_hour == 0)
		return 0;
	char k[LIMITS_KEY_MAX];
	snprintf(k, sizeof(k), "rate:%s", key);
	struct limits_entry *e = limits_get(l, k, now);
	limits_window(e, now, 3600);
	if (e->count >= per_hour)
		return 1;
	e->count++;
	return 0;
}
