/*
 * bounce - delivery status notifications: composes the complete RFC 5322
 * message of a DSN (multipart/report; report-type=delivery-status) from
 * the original envelope data, the recipients it reports on and the
 * original content. Pure composition: the only input besides the request
 * is the original content, read through a callback.
 *
 * Exports:
 *   enum bounce_action, bounce_action_str   the DSN Action values
 *   struct bounce_rcpt, struct bounce_req   what to report
 *   bounce_compose        the whole DSN message (CRLF line ends) into a strbuf
 *   bounce_read_fd        a ready read callback over fd + offset (pread)
 *   bounce_diag_parse     split a delivery result text into Status,
 *                         Remote-MTA and Diagnostic-Code (remote.h format)
 *   BOUNCE_FULL_MAX       largest original returned whole for RET=FULL
 * Trusts nothing it is given: addresses, ENVID, ORCPT and diagnostics may
 * come from remote clients and servers. Every header and DSN field is
 * reduced to printable ASCII (controls become spaces, 8-bit octets '?'),
 * folded, and no output line exceeds 998 octets; the boundary is random
 * and checked against the content.
 * Standards: RFC 3464 (delivery-status), RFC 3462/6522 (multipart/report),
 * RFC 3461 (RET, ENVID, ORCPT, NOTIFY), RFC 3463 (status codes),
 * RFC 3834 (Auto-Submitted), RFC 5322, RFC 2046.
 */
#ifndef TERN_DELIVER_BOUNCE_H
#define TERN_DELIVER_BOUNCE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "core/buf.h"
#include "queue/envelope.h"

#define BOUNCE_FULL_MAX (10u * 1024 * 1024)
/* the header section returned is cut at this size */
#define BOUNCE_HEADERS_MAX (256u * 1024)

enum bounce_action {
	BOUNCE_ACTION_FAILED,
	BOUNCE_ACTION_DELAYED,
	BOUNCE_ACTION_DELIVERED,
	BOUNCE_ACTION_RELAYED,
	BOUNCE_ACTION_EXPANDED,
};
const char *bounce_action_str(enum bounce_action a);

struct bounce_rcpt {
	const char *addr;       /* Final-Recipient (rfc822) */
	const char *orcpt;      /* "type;xtext" as in ORCPT, or a bare address; NULL = unknown */
	enum bounce_action action;
	const char *status;     /* "x.y.z"; NULL or malformed: 5.0.0 / 4.0.0 / 2.0.0 by action */
	const char *remote_mta; /* host name; NULL = none */
	const char *diag_type;  /* "smtp", "x-unix"...; NULL = "smtp" */
	const char *diag;       /* diagnostic text; NULL = no Diagnostic-Code */
	time_t last_attempt;    /* 0 = no Last-Attempt-Date */
	time_t retry_until;     /* delayed only; 0 = no Will-Retry-Until */
};

/* bounce_read_fn - up to n bytes of the original content at off:
 * returns the count, 0 at the end, -1 on error */
typedef ssize_t (*bounce_read_fn)(void *arg, void *buf, size_t n, uint64_t off);

struct bounce_req {
	const char *hostname;     /* Reporting-MTA and MAILER-DAEMON@ */
	const char *to;           /* who gets the DSN: the original sender (or postmaster) */
	const char *orig_qid;     /* named in the text part; may be NULL */
	const char *envid;        /* ENVID (xtext) of the original; NULL = none */
	time_t arrival;           /* Arrival-Date */
	time_t now;               /* Date; 0 = time(NULL) */
	enum env_ret ret;         /* FULL: the whole original; else headers only */
	int postmaster_copy;      /* a notice to the postmaster about a bounce that failed */
	const struct bounce_rcpt *rcpts;
	size_t nrcpts;
	bounce_read_fn read;      /* NULL: the original is not available */
	void *read_arg;
	uint64_t content_len;
	uint64_t full_max;        /* cap for RET=FULL; 0 = BOUNCE_FULL_MAX */
};

/* bounce_compose - the DSN message into out (appended). *eightbit (may be
 * NULL) is set when the returned original holds 8-bit octets, so the
 * envelope can say 8BITMIME. 0 ok; -1 when there is nothing to report.
 * A read error of the original does not stop the DSN: it says so instead. */
int bounce_compose(const struct bounce_req *b, struct strbuf *out, int *eightbit, char *err, size_t errlen);

struct bounce_fd {
	int fd;
	off_t off;
};
/* bounce_read_fd - arg is a struct bounce_fd */
ssize_t bounce_read_fd(void *arg, void *buf, size_t n, uint64_t off);

/* bounce_diag_parse - from a result text such as
 *   "5.1.1 host mx.example.net[192.0.2.1] said: 550 5.1.1 No such user (in reply to RCPT TO command)"
 * status gets the leading "x.y.z" (else def_status), mta the host after
 * "host " (else ""), diag what follows "said: " up to " (in reply"
 * (else the text after the status); *is_smtp is 1 when diag is an SMTP
 * reply. Outputs are NUL-terminated and truncated to their sizes. */
void bounce_diag_parse(const char *text, const char *def_status, char *status, size_t slen, char *mta, size_t mlen,
		       char *diag, size_t dlen, int *is_smtp);

#endif
