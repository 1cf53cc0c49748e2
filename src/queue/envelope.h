/*
 * envelope - what the queue knows about a message besides its content:
 * sender, recipients with their DSN requests and progress, and how it
 * arrived. Shared by the session (which fills it), the queue (which stores
 * it), the scheduler and the delivery agents.
 *
 * Exports:
 *   struct envelope, struct env_rcpt   the data
 *   env_init/env_free/env_copy         lifetime
 *   env_rcpt_add                       append a recipient (copies strings)
 *   env_rcpt_state_str, env_body_str   names for logs and the queue file
 * Trusts: strings must be free of CR, LF and NUL (the SMTP parser ensures
 * it for network input; queue_env_parse checks it again when reading).
 */
#ifndef TERN_QUEUE_ENVELOPE_H
#define TERN_QUEUE_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define QUEUE_ID_MAX 32

enum env_body {
	ENV_BODY_7BIT,
	ENV_BODY_8BITMIME,
	ENV_BODY_BINARYMIME,
};
const char *env_body_str(enum env_body b);

enum env_ret {
	ENV_RET_DEFAULT,
	ENV_RET_FULL,
	ENV_RET_HDRS,
};

/* DSN NOTIFY bits (RFC 3461 4.1); 0 = not given (default: FAILURE) */
enum env_notify {
	ENV_NOTIFY_NEVER = 1,
	ENV_NOTIFY_SUCCESS = 2,
	ENV_NOTIFY_FAILURE = 4,
	ENV_NOTIFY_DELAY = 8,
};

enum env_rcpt_state {
	ENV_RCPT_PENDING,   /* not yet delivered */
	ENV_RCPT_DELIVERED, /* final: done */
	ENV_RCPT_FAILED,    /* final: bounced (or bounce suppressed) */
};
const char *env_rcpt_state_str(enum env_rcpt_state s);

struct env_rcpt {
	char *addr;       /* final recipient, canonical local@domain */
	char *orcpt;      /* the address the client gave in RCPT TO (for DSN), may be NULL */
	unsigned notify;  /* enum env_notify bits */
	enum env_rcpt_state state;
	/* progress, filled from the state log; not written in the message file */
	unsigned attempts;
	time_t next_attempt;
	char *last_error; /* last diagnostic, may be NULL */
	unsigned dsn_sent; /* ENV_DSN_* bits: notifications already queued (state log) */
};

/* which delivery status notifications a recipient has had */
enum env_dsn_sent {
	ENV_DSN_FINAL = 1, /* failure / success report */
	ENV_DSN_DELAY = 2, /* delay warning */
};

struct envelope {
	char qid[QUEUE_ID_MAX];
	time_t arrival;
	char *sender;        /* "" for the null reverse-path <> */
	enum env_body body;
	int smtputf8;
	enum env_ret ret;
	char *envid;         /* xtext as given, may be NULL */
	char *client_addr;   /* may be NULL (local submission) */
	char *helo;          /* may be NULL */
	char *auth_user;     /* may be NULL */
	struct env_rcpt *rcpts;
	size_t nrcpts;
	size_t cap_rcpts;
	uint64_t content_size; /* bytes of content, set when committed or loaded */
	int held;              /* ternctl queue hold */
};

void env_init(struct envelope *e);
void env_free(struct envelope *e);
void env_copy(struct envelope *dst, const struct envelope *src);
/* env_rcpt_add - append a copy; returns the new recipient's index */
size_t env_rcpt_add(struct envelope *e, const char *addr, const char *orcpt, unsigned notify);
/* env_rcpt_find - index of a final recipient address (exact match), or -1 */
long env_rcpt_find(const struct envelope *e, const char *addr);

#endif
