/*
 * remote - delivery to other domains over SMTP: the scheduler's remote
 * hook, tying together DNS (dns.h), the outbound session machine
 * (smtp_client.h), non-blocking sockets on the libevent loop and
 * opportunistic STARTTLS (tls_client.h).
 *
 * Routing: recipients are grouped by lower-cased domain, or all sent to
 * the relayhost when one is set ("[host]:port" / "[host]": no MX lookup,
 * host resolved with dns_host_lookup; "host" / "host:port": MX lookup of
 * host). Without a relayhost: MX lookup of the domain (address literals
 * go to that address), port smtp_port. Hosts are tried in MX order, every
 * address of each (IPv4 and IPv6), until one takes the message; a failure
 * of the connection or the session (refused, timeout, 421, 4xx/5xx
 * greeting, lost connection, TLS) moves on to the next address; only when
 * all were tried is the recipient deferred with the last error. RFC 5321
 * 5.1: an MX host that is ourselves (one of smtp_listen with the same
 * port) is dropped with every MX of equal or worse preference; if nothing
 * is left the mail would loop: TEMPFAIL 4.4.6 "mail for DOMAIN loops back
 * to myself" (temporary rather than Postfix's 5.4.6 bounce, so a DNS or
 * configuration slip costs a delay, not the mail).
 *
 * Timeouts (configuration, RFC 5321 4.5.3.2 defaults): smtp_connect_timeout
 * 30s, smtp_greeting_timeout 5m, smtp_command_timeout 5m (EHLO, STARTTLS
 * and the handshake, AUTH, MAIL, RCPT; DATA's 354 at most 2m and
 * RSET/QUIT at most 1m of it), smtp_data_timeout 10m (the reply to the
 * end of data; each block of content at most 3m of it), dns_timeout 30s
 * per lookup. Expiry is a session error: the next address, then deferral.
 *
 * Limits: at most per_dest connections per destination (domain or
 * relayhost, default 20) and total overall (default 100); work beyond
 * waits in the destination's queue. A connection that finished a message
 * takes the next waiting one for the same destination (smtp_client_next)
 * and otherwise idles for timeouts.idle seconds (default 5) before QUIT.
 * A destination none of whose addresses gave a working session defers
 * its whole queue at once ("dead" destination, like Postfix).
 *
 * Results: every recipient given to the hook gets exactly one
 * sched_remote_done, on the loop. The text starts with the RFC 3463 code,
 * then the diagnostic, e.g.
 *   "5.1.1 host mx.example.net[192.0.2.1] said: 550 5.1.1 No such user
 *    (in reply to RCPT TO command)"
 *   "4.4.1 connect to mx.example.net[192.0.2.1]:25: Connection refused"
 *   "5.1.10 nullmx.example: domain does not accept mail (null MX)"
 * so a bounce can take Status (first word), Remote-MTA (after "host ")
 * and Diagnostic-Code ("smtp; " + what follows "said: " up to " (in
 * reply"). Temporary results always start with a 4.x.x code.
 * Logs: besides sched's delivered/deferred/failed line (which has the
 * text as reason=), one relay-level line per recipient:
 *   event=smtp_result qid= to= relay=mx[addr]:port dsn= status=sent|
 *   deferred|bounced tls="TLSv1.3 ..."|none delay=SECONDS reply="..."
 * and event=tls_out (version, cipher, certificate check) per handshake.
 *
 * Shutdown: remote_free abandons what is in flight without reporting it:
 * those recipients were never recorded, so the queue delivers them at the
 * next start (a message whose end of data was already sent may then
 * arrive twice: RFC 5321 6.1 accepts duplicates over loss).
 *
 * Exports:
 *   remote_new / remote_free     create (registers with sched_set_remote) / stop
 *   remote_set_conf              SIGHUP: new configuration (pointer kept)
 *   remote_set_tls_policy        plug in a per-destination TLS policy
 *   remote_set_limits            limits and timeouts (tests, tuning; the
 *                                timeouts come back from the configuration
 *                                at the next remote_set_conf)
 *   enum remote_tls_policy, remote_tls_policy_str/_parse
 * Trusts: nothing from DNS or the remote servers (dns.c and smtp_client.c
 * parse them); envelopes come from our queue.
 * Standards: RFC 5321 (5.1 routing, 4.5.4.1 retry across MX hosts,
 * 3.8 / 4.2 greetings), RFC 3207 + RFC 7435 (opportunistic STARTTLS),
 * RFC 7505 (null MX), RFC 3463.
 */
#ifndef TERN_DELIVER_REMOTE_H
#define TERN_DELIVER_REMOTE_H

#include <stddef.h>

#include "conf/conf.h"
#include "smtp/smtp_client.h"

struct event_base;
struct queue;
struct sched;
struct remote;

/* TLS policy for one destination (the security issue's smtp_tls_policy) */
enum remote_tls_policy {
	REMOTE_TLS_NONE,    /* never STARTTLS */
	REMOTE_TLS_MAY,     /* STARTTLS when offered; handshake failure: retry in plain text once */
	REMOTE_TLS_ENCRYPT, /* TLS required (4.7.4 TEMPFAIL without), certificate not checked */
	REMOTE_TLS_VERIFY,  /* TLS required and the certificate must verify for the MX name */
};
const char *remote_tls_policy_str(enum remote_tls_policy p);
/* remote_tls_policy_parse - "none", "may", "encrypt", "verify": 0, else -1 */
int remote_tls_policy_parse(const char *s, enum remote_tls_policy *out);
/* dest: the lower-cased domain, or the relayhost string */
typedef enum remote_tls_policy (*remote_tls_policy_fn)(void *arg, const char *dest);

struct remote_limits {
	unsigned per_dest;        /* connections per destination; 0: 20 */
	unsigned total;           /* connections overall; 0: 100 */
	unsigned connect_timeout; /* seconds; 0: 30 */
	unsigned max_rcpts;       /* recipients per transaction; 0: 50 */
	struct smtp_client_timeouts timeouts; /* 0 fields: smtp_client defaults, idle 5 */
};

/* remote_new - a resolver on conf->dns_resolver, a TLS client context, and
 * the sched hook. NULL with err set. */
struct remote *remote_new(struct event_base *base, const struct conf *conf, struct queue *q, struct sched *s,
			  char *err, size_t errlen);
/* remote_set_conf - new configuration (kept until remote_free or the next
 * call; sessions in progress finish with what they started with) */
void remote_set_conf(struct remote *r, const struct conf *conf);
/* remote_set_tls_policy - NULL fn: "may" for every destination */
void remote_set_tls_policy(struct remote *r, remote_tls_policy_fn fn, void *arg);
void remote_set_limits(struct remote *r, const struct remote_limits *l);
/* remote_free - unhook from sched, close every connection, cancel lookups;
 * recipients in flight are not reported (see above). Call before sched_free. */
void remote_free(struct remote *r);

#endif
