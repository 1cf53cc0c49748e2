/*
 * fake_ops - an in-memory world for smtp_server tests: a fake transport
 * (collects replies, counts write calls), a fake queue (collects content,
 * commits synchronously or on demand, fails on demand) and a fake
 * recipient check (local domains example.test and localhost, users alice,
 * bob and postmaster; tempfail@<local> gives TEMPFAIL; other domains are
 * relay-denied unless the client may relay).
 *
 * Exports:
 *   fake_init/fake_fini      conf (with -o style overrides) and counters
 *   fake_start               create the session and send the greeting
 *   fake_send/fake_sendn     client bytes into the session
 *   fake_take                the replies written since the last take
 *   fake_commit_finish       complete a deferred commit
 */
#ifndef TERN_TESTS_FAKE_OPS_H
#define TERN_TESTS_FAKE_OPS_H

#include <stddef.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "queue/envelope.h"
#include "smtp/smtp_server.h"

struct fake {
	struct conf conf;
	struct smtp_session *s;
	struct smtp_server_ops ops;
	struct smtp_client_info info;
	/* transport */
	struct strbuf out;     /* replies not yet taken */
	size_t nwrites;        /* ops->write calls in total */
	size_t nclose;         /* ops->close calls */
	size_t nstarttls;      /* ops->starttls calls */
	/* queue behaviour */
	int commit_deferred;   /* msg_commit returns without completing */
	int commit_status;     /* for synchronous commits: 0 ok, else -1 */
	int commit_errno;
	int open_errno;        /* msg_open fails with this errno */
	int write_errno;       /* msg_write fails with this errno */
	/* queue observations */
	unsigned next_qid;
	size_t nopen, nabort, ncommit, naccepted;
	struct queue_file *pending; /* a deferred commit */
	struct strbuf last_content; /* content of the last committed message */
	char last_qid[QUEUE_ID_MAX];
	struct envelope last_env;   /* copy given to msg_accepted */
	/* recipient checks seen */
	size_t nrcpt_checks;
	int last_may_relay;
	unsigned last_notify;
	char last_orcpt[600];
};

/* fake_init - conf from /dev/null plus overrides ("key=value"); 0 ok */
int fake_init(struct fake *f, const char *const *overrides, size_t n);
void fake_fini(struct fake *f);
/* fake_start - new session (with f->info as set) and smtp_session_start */
void fake_start(struct fake *f, int client_spoke_first);
void fake_send(struct fake *f, const char *text);
void fake_sendn(struct fake *f, const char *p, size_t n);
/* fake_take - replies written since the last take (valid until next call) */
const char *fake_take(struct fake *f);
/* fake_commit_finish - complete the deferred commit: status 0 or -1/errno */
void fake_commit_finish(struct fake *f, int status, int err_no);

#endif
