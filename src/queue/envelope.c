/*
 * envelope - lifetime helpers for struct envelope. See envelope.h.
 */
#include "queue/envelope.h"

#include <stdlib.h>
#include <string.h>

#include "core/xalloc.h"

const char *env_body_str(enum env_body b)
{
	switch (b) {
	case ENV_BODY_7BIT: return "7BIT";
	case ENV_BODY_8BITMIME: return "8BITMIME";
	case ENV_BODY_BINARYMIME: return "BINARYMIME";
	}
	return "7BIT";
}

const char *env_rcpt_state_str(enum env_rcpt_state s)
{
	switch (s) {
	case ENV_RCPT_PENDING: return "pending";
	case ENV_RCPT_DELIVERED: return "delivered";
	case ENV_RCPT_FAILED: return "failed";
	}
	return "unknown";
}

void env_init(struct envelope *e)
{
	memset(e, 0, sizeof(*e));
}

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

void env_free(struct envelope *e)
{
	free(e->sender);
	free(e->envid);
	free(e->client_addr);
	free(e->helo);
	free(e->auth_user);
	for (size_t i = 0; i < e->nrcpts; i++) {
		free(e->rcpts[i].addr);
		free(e->rcpts[i].orcpt);
		free(e->rcpts[i].last_error);
	}
	free(e->rcpts);
	env_init(e);
}

size_t env_rcpt_add(struct envelope *e, const char *addr, const char *orcpt, unsigned notify)
{
	if (e->nrcpts == e->cap_rcpts) {
		e->cap_rcpts = e->cap_rcpts ? e->cap_rcpts * 2 : 4;
		e->rcpts = xrealloc(e->rcpts, e->cap_rcpts * sizeof(*e->rcpts));
	}
	struct env_rcpt *r = &e->rcpts[e->nrcpts];
	memset(r, 0, sizeof(*r));
	r->addr = xstrdup(addr);
	r->orcpt = dup_or_null(orcpt);
	r->notify = notify;
	r->state = ENV_RCPT_PENDING;
	return e->nrcpts++;
}

long env_rcpt_find(const struct envelope *e, const char *addr)
{
	for (size_t i = 0; i < e->nrcpts; i++)
		if (strcmp(e->rcpts[i].addr, addr) == 0)
			return (long)i;
	return -1;
}

void env_copy(struct envelope *dst, const struct envelope *src)
{
	env_init(dst);
	memcpy(dst->qid, src->qid, sizeof(dst->qid));
	dst->arrival = src->arrival;
	dst->sender = dup_or_null(src->sender);
	dst->body = src->body;
	dst->smtputf8 = src->smtputf8;
	dst->ret = src->ret;
	dst->envid = dup_or_null(src->envid);
	dst->client_addr = dup_or_null(src->client_addr);
	dst->helo = dup_or_null(src->helo);
	dst->auth_user = dup_or_null(src->auth_user);
	dst->content_size = src->content_size;
	dst->held = src->held;
	for (size_t i = 0; i < src->nrcpts; i++) {
		const struct env_rcpt *r = &src->rcpts[i];
		size_t k = env_rcpt_add(dst, r->addr, r->orcpt, r->notify);
		dst->rcpts[k].state = r->state;
		dst->rcpts[k].attempts = r->attempts;
		dst->rcpts[k].next_attempt = r->next_attempt;
		dst->rcpts[k].last_error = dup_or_null(r->last_error);
		dst->rcpts[k].dsn_sent = r->dsn_sent;
	}
}
