/*
 * fuzz_queue_env - queue_env_parse and queue_state_apply on arbitrary
 * bytes. Whatever parses must format and parse again to the same text
 * (the format is canonical after one round), and the state log applied to
 * it must never crash or index outside the recipients. The input's tail is
 * also checked as the file's end marker (both versions): whatever passes
 * must account for every byte of the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_state - apply p as a state log and look at every recipient */
static void fuzz_state(const char *p, size_t n, struct envelope *env)
{
	queue_state_apply(p, n, env);
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct env_rcpt *r = &env->rcpts[i];
		if ((unsigned)r->state > ENV_RCPT_FAILED)
			abort();
		if (r->last_error && (strlen(r->last_error) > QUEUE_VALUE_MAX || strchr(r->last_error, '\r')))
			abort();
	}
}

/* fuzz_trailer - the input as a whole queue file of header length hdr */
static void fuzz_trailer(const char *p, size_t n, size_t hdr, int version)
{
	size_t tn = n < QUEUE_TRAILER_MAX ? n : QUEUE_TRAILER_MAX;
	uint64_t gap = 99999, len = 99999;
	if (queue_trailer_check(p + n - tn, tn, n, hdr, version, &gap, &len) < 0)
		return;
	if (gap > QUEUE_RESERVE || (version == 1 && gap != 0) || hdr + gap + len > n)
		abort();
	/* the marker is exactly what follows the content */
	size_t end = hdr + (size_t)gap + (size_t)len;
	if (end + sizeof(QUEUE_TRAILER_TAG) - 1 > n || memcmp(p + end, QUEUE_TRAILER_TAG, sizeof(QUEUE_TRAILER_TAG) - 1))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	struct envelope env;
	size_t used = 0;
	char err[256];
	int version = 0;
	for (int v = 1; v <= 2; v++)
		fuzz_trailer(p, size, size / 3, v);
	if (queue_env_parse_hdr(p, size, &env, &used, &version, err, sizeof(err)) < 0) {
		/* not a header: use the bytes as the state log of a fixed message */
		env_init(&env);
		env.sender = strdup("");
		env_rcpt_add(&env, "a@example.test", NULL, 0);
		env_rcpt_add(&env, "b@example.test", NULL, 0);
		env_rcpt_add(&env, "c@example.test", NULL, 0);
		fuzz_state(p, size, &env);
		env_free(&env);
		return 0;
	}
	if (used > size || env.nrcpts == 0 || env.sender == NULL || !queue_id_valid(env.qid) ||
	    (version != 1 && version != 2))
		abort();
	fuzz_trailer(p, size, used, version);
	if (queue_env_check(&env, err, sizeof(err)) < 0)
		abort(); /* parsed but not writable: the two disagree */
	struct strbuf a, b;
	strbuf_init(&a);
	strbuf_init(&b);
	queue_env_format(&env, &a);
	struct envelope again;
	size_t used2;
	if (queue_env_parse(a.s, a.len, &again, &used2, err, sizeof(err)) < 0 || used2 != a.len)
		abort();
	queue_env_format(&again, &b);
	if (a.len != b.len || memcmp(a.s, b.s, a.len) != 0)
		abort();
	/* what follows the header plays the state log */
	fuzz_state(p + used, size - used, &env);
	env_free(&again);
	env_free(&env);
	strbuf_free(&a);
	strbuf_free(&b);
	return 0;
}
