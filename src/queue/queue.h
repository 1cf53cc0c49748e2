/*
 * queue - the durable store. A message is acknowledged (250) only after
 * queue_file_commit has reported success: its content and envelope are
 * written, the file fsync'd, renamed into msg/, and msg/ fsync'd.
 *
 * Layout under queue_dir:
 *   tmp/QID     being received in a new file (O_EXCL); never delivered;
 *               removed at start
 *   msg/QID     committed: versioned envelope, (gap,) content, end marker;
 *               immutable (format: queue_env.c)
 *   state/QID   append-only recipient progress log (one record a line,
 *               a torn last line is ignored: at worst a delivery repeats)
 *   corrupt/    files that failed to parse, set aside, never delivered
 *   free/       finished queue files kept to be reused by new ones (no
 *               inode allocated and freed per message; a small one keeps
 *               its blocks, which the next message overwrites); a new
 *               message is written in place there and renamed to msg/QID
 *               at commit; never read
 *
 * Commits go through a few commit threads (their flushes in flight
 * together) that share one directory fsync among all messages waiting at
 * that moment (group commit); the completion callback always runs on the
 * event loop thread.
 *
 * Exports:
 *   queue_open/queue_close          the store (and its commit threads)
 *   queue_file_create               start a message: assigns env->qid,
 *                                   writes the envelope header
 *   queue_file_write                append content (buffered)
 *   queue_file_prepend              header fields to stand before the content
 *   queue_file_restart              start the content over (milter edits)
 *   queue_file_commit               make it durable, then call done()
 *   queue_file_abort                discard an unfinished message
 *   queue_msg_load                  read envelope + progress of a message
 *   queue_msg_content               open the content: fd, offset, length
 *   queue_rcpt_record               durably record a recipient's outcome
 *   queue_msg_remove                drop a finished message
 *   queue_msg_finish                the same, with or without the dir sync
 *   queue_scan                      start-up recovery: clean tmp/, list msg/
 *   queue_env_format/queue_env_parse the envelope text format (versioned)
 *   queue_env_check                 can this envelope be stored? (create checks)
 *   queue_id_valid                  syntax of a queue ID (names from outside)
 * Trusts: nothing read from disk; every file is parsed as hostile input.
 */
#ifndef TERN_QUEUE_QUEUE_H
#define TERN_QUEUE_QUEUE_H

#include <stddef.h>
#include <sys/types.h>

#include "core/buf.h"
#include "queue/envelope.h"

struct event_base;
struct queue;
struct queue_file;

/* queue_open - create the directories if needed; base may be NULL, then
 * commits are synchronous and done() runs before queue_file_commit returns */
struct queue *queue_open(const char *dir, struct event_base *base, char *err, size_t errlen);
void queue_close(struct queue *q);

/* queue_file_create - refuses (NULL, errno EINVAL) what queue_env_check
 * refuses; env must stay valid until queue_file_commit (which sets
 * env->content_size) or queue_file_abort */
struct queue_file *queue_file_create(struct queue *q, struct envelope *env, char *err, size_t errlen);
/* queue_file_write - 0 ok, -1 write error (e.g. ENOSPC: reply 452 4.3.1) */
int queue_file_write(struct queue_file *f, const void *p, size_t n);
/* queue_file_errno - errno of the first failure, for choosing the reply */
int queue_file_errno(const struct queue_file *f);

/* queue_file_prepend - text p[0..n) (complete header fields, CRLF line
 * ends) to stand before the content at commit; replaces an earlier call's
 * text (n = 0 removes it) and survives queue_file_restart. Any length: up
 * to QUEUE_RESERVE bytes it is written into the space reserved at create
 * (no copy), longer text makes the commit copy the content into a new file
 * (on the commit thread). The text is copied. 0, or -1 with errno (the
 * file already failed). Readers see prepend + content as the content. */
int queue_file_prepend(struct queue_file *f, const char *p, size_t n);
/* queue_file_restart - start the content over (same qid): the envelope
 * header is written anew from the env given at create, which the caller may
 * have changed (milter CHGFROM, ADDRCPT, DELRCPT; env->qid is kept). The
 * content written so far stays readable with pread(*old_fd, .., *old_off +
 * i), i < *old_len, until commit or abort (the queue owns and closes
 * old_fd; a second restart closes the first one's). 0, or -1 with errno:
 * EINVAL when the changed env cannot be stored (nothing changed then), else
 * the file failed (commit will report it). */
int queue_file_restart(struct queue_file *f, int *old_fd, off_t *old_off, off_t *old_len);

/* done(arg, 0, NULL) when durable; done(arg, -1, reason) on failure (the file
 * is removed, errno holds the cause, e.g. ENOSPC). The queue_file is freed by
 * the queue after done() returns. With an event base, done() runs on the
 * loop thread and never inside queue_file_commit; queue_close runs the
 * callbacks of commits still in flight. */
typedef void (*queue_commit_done)(void *arg, int status, const char *reason);
void queue_file_commit(struct queue_file *f, queue_commit_done done, void *arg);
void queue_file_abort(struct queue_file *f);

int queue_msg_load(struct queue *q, const char *qid, struct envelope *env, char *err, size_t errlen);
/* queue_msg_content - fd positioned nowhere in particular; use pread from off */
int queue_msg_content(struct queue *q, const char *qid, int *fd, off_t *off, off_t *len, char *err,
		      size_t errlen);

/* queue_rcpt_record - append "idx state ..." to state/QID and fdatasync it
 * before returning: the outcome is durable before it is acted on */
int queue_rcpt_record(struct queue *q, const char *qid, size_t idx, enum env_rcpt_state state,
		      unsigned attempts, time_t next_attempt, const char *text, char *err, size_t errlen);
/* queue_rcpt_dsn - durably record that a notification (ENV_DSN_FINAL or
 * ENV_DSN_DELAY) for recipient idx was queued, so a restart does not send
 * it again */
int queue_rcpt_dsn(struct queue *q, const char *qid, size_t idx, unsigned kind, char *err, size_t errlen);
/* queue_msg_hold - durably record held (1) or released (0) */
int queue_msg_hold(struct queue *q, const char *qid, int held, char *err, size_t errlen);
int queue_msg_remove(struct queue *q, const char *qid);
/* queue_msg_finish - remove a message every recipient of which is final
 * (delivered, no DSN owed), recorded or not (the scheduler's fast path
 * writes no state for it). sync = 0: the removal is not made durable, so a
 * power loss may bring the message back and it is delivered again: only
 * for messages whose deliveries are idempotent (local Maildir ones, by
 * their fixed names). sync = 1 is queue_msg_remove. */
int queue_msg_finish(struct queue *q, const char *qid, int sync);

/* queue_scan - remove tmp/ leftovers (never acknowledged), set aside corrupt
 * files, and call found() for each committed message, oldest first */
/* env is valid only during the call: copy what you keep */
typedef void (*queue_scan_found)(void *arg, struct envelope *env);
int queue_scan(struct queue *q, queue_scan_found found, void *arg, char *err, size_t errlen);

/* the envelope text format, exposed for ternctl and the fuzz target */
void queue_env_format(const struct envelope *env, struct strbuf *out);
/* queue_env_parse - parse header text p[0..n) (up to and including the
 * "content" line); *hdr_len = bytes used. 0 ok, -1 with reason in err.
 * env is initialised here (and left empty on error). Unknown keys and
 * other versions are errors. */
int queue_env_parse(const char *p, size_t n, struct envelope *env, size_t *hdr_len, char *err,
		    size_t errlen);
/* queue_state_parse - apply a state log's records to env */
void queue_state_apply(const char *p, size_t n, struct envelope *env);

/* queue_env_check - 0 when env can be written (sender set, at least one
 * recipient, no CR/LF in any value, values <= QUEUE_VALUE_MAX bytes);
 * -1 with the reason in err. queue_file_create refuses what this refuses. */
int queue_env_check(const struct envelope *env, char *err, size_t errlen);

/* queue_id_valid - 1 when qid is exactly QUEUE_ID_LEN characters of
 * Crockford base32 (0-9, A-Z without I L O U, upper case); anything else
 * (a path, "../x", lower case) is 0. Check every ID that comes from outside. */
#define QUEUE_ID_LEN 16
int queue_id_valid(const char *qid);

/* the longest value (address, HELO, ...) a queue file may hold */
#define QUEUE_VALUE_MAX 1000

#endif
