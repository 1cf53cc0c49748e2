/*
 * fuzz_queue_env - queue_env_parse and queue_state_apply on arbitrary
 * bytes. Whatever parses must format and parse again to the same text
 * (the format is canonical after one round), and the state log applied to
 * it must never crash or index outside the recipients.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "queue/queue.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	struct envelope env;
	size_t used = 0;
	char err[256];
	if (queue_env_parse(p, size, &env, &used, err, sizeof(err)) < 0) {
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
	if (used > size || env.nrcpts == 0 || env.sender == NULL || !queue_id_valid(env.qid))
		abort();
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
