/*
 * fake_ops - an in-memory world for smtp_server tests: a fake transport
 * (collects replies, counts write calls), a fake queue (collects content,
 * commits synchronously or on demand, fails on demand) and a fake
 * recipient check (local domains example.test and localhost, users alice,
 * bob and postmaster; tempfail@<local> gives TEMPFAIL; other domains are
 * relay-denied unless the client may relay), a fake AUTH check (accounts
 * alice@example.test / "secret" and bob@example.test / "hunter2"; the
 * domain may be left out; synchronous or deferred; per-session failure
 * count with an optional lockout), the real sender-ownership rule
 * (lookup_sender_owned over small tables: aliases sales -> alice, bob;
 * info -> sales; fwd -> carol@remote.example; loop1 <-> loop2) and a
 * message rate limit, and scripted policy checks (ops->stage_check: a
 * verdict per stage, answered at once or on demand; ops->txn_end counted;
 * msg_commit may answer a verdict instead of committing).
 *
 * Exports:
 *   fake_init/fake_fini      conf (with -o style overrides) and counters
 *   fake_start               create the session and send the greeting
 *   fake_send/fake_sendn     client bytes into the session
 *   fake_take                the replies written since the last take
 *   fake_commit_finish       complete a deferred commit
 *   fake_auth_finish         complete a deferred auth check
 *   fake_stage_finish        answer a deferred policy check
 *   fake_commit_verdict      answer a deferred commit with a verdict
 *   fake_verdict_parse       "reject 550 5.7.1 text" into a verdict
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
	int input_pending;     /* what ops->input_pending answers */
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
	/* AUTH */
	int auth_deferred;     /* auth_check returns without answering */
	int auth_pending;      /* a deferred check waits for fake_auth_finish */
	int auth_pending_ok;   /* what the fake decided for it */
	char auth_pending_account[64];
	size_t nauth_checks;
	size_t auth_failures;  /* failed checks so far */
	size_t auth_lockout_after; /* 0: never; else LOCKED once failures reach it */
	char last_auth_user[300];
	char last_auth_pass[300];
	/* sender ownership and rates */
	struct lookup_tables *tables;
	size_t nsender_checks;
	size_t rate_limit;     /* 0: none; else MAIL number rate_limit+1 is over */
	size_t nrate_checks;
	char last_rate_account[64]; /* "-" for NULL */
	/* policy checks (ops->stage_check) */
	int stage_defer[5];    /* that stage waits for fake_stage_finish */
	struct smtp_verdict stage_verdict[5]; /* answered at once (default CONTINUE) */
	int stage_pending;     /* a deferred check waits */
	size_t nstage_checks[5];
	size_t ntxn_end;
	int eom_refuse;        /* msg_commit answers eom_verdict instead */
	struct smtp_verdict eom_verdict;
	size_t ncommit_verdicts;
	/* what the last check saw */
	char check_helo[300];
	char check_rcpt[300];
	size_t check_rcpt_first, check_rcpt_n;
	char check_args[600];  /* the ESMTP arguments, space-separated */
	size_t check_env_rcpts; /* envelope recipients at the check */
	char check_sender[300];
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
/* fake_auth_finish - answer the deferred auth check: ok < -2 means what
 * the fake decided itself; account NULL means the fake's own */
void fake_auth_finish(struct fake *f, int ok, const char *account);
/* fake_stage_finish - answer the deferred policy check */
void fake_stage_finish(struct fake *f, const struct smtp_verdict *v);
/* fake_commit_verdict - answer the deferred commit with v (the file is
 * discarded, as the daemon's filter aborts it) */
void fake_commit_verdict(struct fake *f, const struct smtp_verdict *v);
/* fake_verdict_parse - "KIND [reply]" (continue, reject, tempfail,
 * discard, shutdown); the reply as given (escapes already resolved);
 * 0, or -1 for an unknown kind */
int fake_verdict_parse(const char *text, struct smtp_verdict *v);

#endif
