/*
 * remote - outbound SMTP delivery on the event loop. See remote.h for the
 * routing rules, limits, result texts and logs.
 *
 * Objects:
 *   rmsg   one message handed over by sched: a copy of its envelope and
 *          (opened on first use) its content fd; shared by its jobs
 *   rjob   recipients of one message for one destination: the unit a
 *          connection carries; recipients leave it as they are settled
 *   rdest  a destination (domain or relayhost): its route from DNS, its
 *          queue of jobs, its connections
 *   rconn  one connection: walks the route's addresses for its job, holds
 *          the smtp_client session, the socket and TLS
 * Structural changes (new connections, freeing destinations) happen in one
 * place, the pump (remote_pump_cb), never deep inside a callback; a
 * connection frees itself only at the top of its own event callbacks.
 *
 * Relayhost AUTH: relayhost_auth_file ("user:password", one line, owner-
 * only) is read at remote_new and at every remote_set_conf. Credentials go
 * only to connections to the relayhost, whose TLS policy is then raised to
 * "encrypt" at least (smtp_client also refuses AUTH without TLS). A file
 * that is set but unusable defers relayhost mail (4.7.0) rather than
 * sending it unauthenticated. The password is wiped when replaced or freed
 * and never logged.
 *
 * Timeouts: smtp_connect_timeout, smtp_greeting_timeout,
 * smtp_command_timeout, smtp_data_timeout and dns_timeout are taken from
 * the configuration at remote_new and every remote_set_conf
 * (remote_timeouts_from_conf maps them onto the session's RFC 5321
 * 4.5.3.2 steps); a connection arms the value for its current step, so a
 * peer that never answers costs one timeout, then the next address.
 *
 * Trusts: DNS answers and server replies are parsed by dns.c and
 * smtp_client.c; what reaches the logs goes through log.c's escaping.
 * The auth file is trusted only after its owner-only mode is checked.
 * Implements: RFC 5321 5.1 (MX order, own-host rule), 4.5.4.1 (try the
 * other addresses), RFC 3207 / RFC 7435 (STARTTLS, opportunistic),
 * RFC 4954 (AUTH toward the relayhost, through smtp_client).
 */
#include "deliver/remote.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/str.h"
#include "core/xalloc.h"
#include "dns/dns.h"
#include "queue/queue.h"
#include "sched/sched.h"
#include "tls/tls.h"
#include "tls/tls_io.h"
#include "tls/tls_client.h"

#define REMOTE_READ_CHUNK 16384
#define REMOTE_OUT_HIGH (256 * 1024) /* pause content above this much unsent output */
#define REMOTE_TEXT_MAX 1024
#define REMOTE_RELAY_MAX 600         /* "name[addr]:port" */
#define REMOTE_AUTH_FILE_MAX 1024    /* "user:password\n": 255 + 1 + 255 + line end, with room */
#define REMOTE_AUTH_FIELD_MAX 255    /* RFC 4616 */

struct rmsg {
	struct envelope env;
	int refs;
	int fd; /* content, -1 until the first read */
	off_t off, len;
};

struct rjob {
	struct rjob *next;
	struct rmsg *msg;
	size_t *idx; /* recipients still open */
	size_t n;
	off_t pos;   /* content bytes handed to the session */
};

struct rhost {
	char *name;
	unsigned pref;
	struct dns_addr *addrs;
	size_t naddrs;
};

enum rdest_state {
	RDEST_NEW,       /* route not asked for yet */
	RDEST_RESOLVING,
	RDEST_READY,
};

struct rdest {
	struct remote *r;
	struct rdest *next, *prev;
	char *key;    /* lower-case domain, or the relayhost as configured */
	char *lookup; /* the name to resolve */
	int mx;       /* 1: MX lookup, 0: host lookup */
	int relay;    /* via the relayhost */
	unsigned port;
	enum rdest_state state;
	struct dns_query *q;
	struct rhost *hosts;
	size_t nhosts;
	struct rjob *jobs, *jobs_tail;
	size_t njobs;
	struct rconn *conns;
	size_t nconns;
};

struct rconn {
	struct remote *r;
	struct rdest *d;
	struct rconn *next, *prev;
	int fd;
	struct event *rev, *wev, *timer;
	int reading;
	int connecting;
	struct smtp_client *sc;
	struct strbuf out;
	size_t out_off;
	int paused;
	int close_requested;
	/* TLS */
	enum remote_tls_policy pol;
	SSL *ssl;
	int handshaking;
	int starttls_pending;
	int ssl_want_write;
	int tls_failed;   /* the handshake of this session failed */
	int no_tls;       /* this address again, in plain text (policy "may") */
	char tls_desc[96];
	/* where */
	size_t hi, ai;    /* host and address being tried */
	int started;      /* hi/ai point at an address already tried */
	int any_session;  /* some address got past the greeting and EHLO */
	char host[REMOTE_RELAY_MAX];  /* "name[addr]" */
	char relay[REMOTE_RELAY_MAX]; /* "name[addr]:port" */
	/* what */
	struct rjob *job;
	int retry_next;   /* the session failed; the job's open recipients go on */
	char last_err[REMOTE_TEXT_MAX];
	char last_enh[SMTP_CLIENT_ENH_MAX]; /* of last_err when AUTH failed ("4.7.8"), else "" */
};

struct remote {
	struct event_base *base;
	const struct conf *conf;
	struct queue *q;
	struct sched *s;
	struct dns *dns;
	struct dns **old_dns; /* resolvers replaced by SIGHUP, freed at the end */
	size_t nold_dns;
	struct tls_client *tls;
	remote_tls_policy_fn pol_fn;
	void *pol_arg;
	struct remote_limits lim;
	struct rdest *dests;
	size_t nconns;
	struct event *ev_pump;
	/* relayhost credentials from relayhost_auth_file */
	char *auth_user, *auth_pass; /* NULL: none (no file, or unusable) */
	char auth_err[256];          /* set: the file is configured but unusable */
};

/* ---- names ---- */

/* remote_tls_policy_str - name for logs and configuration */
const char *remote_tls_policy_str(enum remote_tls_policy p)
{
	switch (p) {
	case REMOTE_TLS_NONE: return "none";
	case REMOTE_TLS_MAY: return "may";
	case REMOTE_TLS_ENCRYPT: return "encrypt";
	case REMOTE_TLS_VERIFY: return "verify";
	}
	return "?";
}

/* remote_tls_policy_parse - configuration text to policy */
int remote_tls_policy_parse(const char *s, enum remote_tls_policy *out)
{
	for (int p = REMOTE_TLS_NONE; p <= REMOTE_TLS_VERIFY; p++) {
		if (str_casecmp_ascii(s, remote_tls_policy_str((enum remote_tls_policy)p)) == 0) {
			*out = (enum remote_tls_policy)p;
			return 0;
		}
	}
	return -1;
}

/* remote_conf_policy - smtp_tls_policy_map entry "dest:policy" for this
 * destination (domain or relayhost, case-insensitive), else smtp_tls_policy */
static enum remote_tls_policy remote_conf_policy(const struct conf *conf, const char *dest)
{
	enum remote_tls_policy p = REMOTE_TLS_MAY;
	for (size_t i = 0; i < conf->smtp_tls_policy_map.n; i++) {
		const char *e = conf->smtp_tls_policy_map.v[i];
		const char *colon = strrchr(e, ':');
		if (colon && strlen(dest) == (size_t)(colon - e) && str_ncasecmp_ascii(e, dest, (size_t)(colon - e)) == 0 &&
		    remote_tls_policy_parse(colon + 1, &p) == 0)
			return p;
	}
	if (conf->smtp_tls_policy && remote_tls_policy_parse(conf->smtp_tls_policy, &p) == 0)
		return p;
	return REMOTE_TLS_MAY;
}

static void remote_kick(struct remote *r);
static void rconn_update(struct rconn *c);
static void rconn_connect(struct rconn *c);

/* ---- messages and jobs ---- */

/* rmsg_unref - drop a reference; the last closes the content */
static void rmsg_unref(struct rmsg *m)
{
	if (--m->refs > 0)
		return;
	if (m->fd >= 0)
		close(m->fd);
	env_free(&m->env);
	free(m);
}

/* rjob_free - release a job (its recipients must have been reported) */
static void rjob_free(struct rjob *j)
{
	if (j == NULL)
		return;
	rmsg_unref(j->msg);
	free(j->idx);
	free(j);
}

/* dsn_of - the RFC 3463 code to start a result text with */
static void dsn_of(char *out, size_t outlen, const char *enh, int code, enum sched_result res)
{
	char cls = res == SCHED_RESULT_OK ? '2' : res == SCHED_RESULT_PERMFAIL ? '5' : '4';
	(void)code;
	/* the class follows the outcome: a deferred 5xx greeting is 4.x.x */
	if (enh && enh[0] >= '2' && enh[0] <= '5' && enh[1] == '.')
		snprintf(out, outlen, "%c%s", cls, enh + 1);
	else
		snprintf(out, outlen, "%c.0.0", cls);
}

/* remote_report - one recipient's outcome: relay log line, then sched */
static void remote_report(struct remote *r, const struct rmsg *m, size_t idx, enum sched_result res,
			  const char *dsn, const char *text, const char *relay, const char *tls)
{
	char full[REMOTE_TEXT_MAX + 32];
	snprintf(full, sizeof(full), "%s %s", dsn, text);
	struct log_line l;
	log_begin(&l, res == SCHED_RESULT_OK ? LOG_LEVEL_INFO : LOG_LEVEL_WARN, "smtp_result");
	log_kv(&l, "qid", m->env.qid);
	log_kv(&l, "to", idx < m->env.nrcpts ? m->env.rcpts[idx].addr : "?");
	log_kv(&l, "relay", relay ? relay : "none");
	log_kv(&l, "dsn", dsn);
	log_kv(&l, "status", res == SCHED_RESULT_OK ? "sent" : res == SCHED_RESULT_PERMFAIL ? "bounced" : "deferred");
	log_kv(&l, "tls", tls && *tls ? tls : "none");
	log_kvi(&l, "delay", (long long)(time(NULL) - m->env.arrival));
	log_kv(&l, "reply", text);
	log_end(&l);
	sched_remote_done(r->s, m->env.qid, idx, res, full);
}

/* rjob_fail - every open recipient of a job gets the same outcome */
static void rjob_fail(struct remote *r, struct rjob *j, enum sched_result res, const char *enh, const char *text,
		      const char *relay)
{
	char dsn[SMTP_CLIENT_ENH_MAX];
	dsn_of(dsn, sizeof(dsn), enh, 0, res);
	for (size_t i = 0; i < j->n; i++)
		remote_report(r, j->msg, j->idx[i], res, dsn, text, relay, NULL);
	j->n = 0;
}

/* rdest_fail_queue - a destination cannot be reached: its waiting jobs
 * get the outcome at once rather than each walking the route again */
static void rdest_fail_queue(struct rdest *d, enum sched_result res, const char *enh, const char *text)
{
	while (d->jobs) {
		struct rjob *j = d->jobs;
		d->jobs = j->next;
		d->njobs--;
		rjob_fail(d->r, j, res, enh, text, NULL);
		rjob_free(j);
	}
	d->jobs_tail = NULL;
}

/* rdest_take - the next waiting job, or NULL */
static struct rjob *rdest_take(struct rdest *d)
{
	struct rjob *j = d->jobs;
	if (j) {
		d->jobs = j->next;
		if (d->jobs == NULL)
			d->jobs_tail = NULL;
		d->njobs--;
		j->next = NULL;
	}
	return j;
}

/* ---- destinations and routes ---- */

/* rdest_free_route - forget the hosts */
static void rdest_free_route(struct rdest *d)
{
	for (size_t i = 0; i < d->nhosts; i++) {
		free(d->hosts[i].name);
		free(d->hosts[i].addrs);
	}
	free(d->hosts);
	d->hosts = NULL;
	d->nhosts = 0;
}

/* rdest_free - unlink and release (no jobs or connections left) */
static void rdest_free(struct rdest *d)
{
	struct remote *r = d->r;
	if (d->q)
		dns_cancel(d->q);
	if (d->prev)
		d->prev->next = d->next;
	else
		r->dests = d->next;
	if (d->next)
		d->next->prev = d->prev;
	rdest_free_route(d);
	free(d->key);
	free(d->lookup);
	free(d);
}

/* remote_relay_parse - relayhost "[h]:p", "[h]", "h:p" or "h" */
static int remote_relay_parse(const char *rh, unsigned defport, char *host, size_t hostlen, unsigned *port,
			      int *mx)
{
	const char *h = rh, *end, *p = NULL;
	*mx = rh[0] != '[';
	if (rh[0] == '[') {
		h = rh + 1;
		end = strchr(h, ']');
		if (end == NULL)
			return -1;
		if (end[1] == ':')
			p = end + 2;
		else if (end[1] != '\0')
			return -1;
	} else {
		end = strchr(rh, ':');
		if (end && strchr(end + 1, ':'))
			return -1; /* a bare IPv6 address needs brackets */
		if (end)
			p = end + 1;
		else
			end = rh + strlen(rh);
	}
	size_t hl = (size_t)(end - h);
	if (hl == 0 || hl >= hostlen)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = defport;
	if (p) {
		uint64_t v;
		if (str_parse_u64(p, strlen(p), &v) < 0 || v == 0 || v > 65535)
			return -1;
		*port = (unsigned)v;
	}
	return 0;
}

/* rdest_get - the destination for a domain (or the relayhost), made if new */
static struct rdest *rdest_get(struct remote *r, const char *domain)
{
	const char *rh = r->conf->relayhost && *r->conf->relayhost ? r->conf->relayhost : NULL;
	const char *key = rh ? rh : domain;
	for (struct rdest *d = r->dests; d; d = d->next)
		if (strcmp(d->key, key) == 0 && d->relay == (rh != NULL))
			return d;
	struct rdest *d = xcalloc(1, sizeof(*d));
	d->r = r;
	d->key = xstrdup(key);
	d->relay = rh != NULL;
	d->port = (unsigned)r->conf->smtp_port;
	d->mx = 1;
	if (rh) {
		char host[256];
		unsigned port;
		int mx;
		if (remote_relay_parse(rh, d->port, host, sizeof(host), &port, &mx) == 0) {
			d->lookup = xstrdup(host);
			d->port = port;
			d->mx = mx;
		} else {
			d->lookup = xstrdup(rh); /* fails in DNS as BADNAME, deferred */
		}
	} else {
		d->lookup = xstrdup(domain);
	}
	d->next = r->dests;
	if (r->dests)
		r->dests->prev = d;
	r->dests = d;
	return d;
}

/* addr_same - two addresses equal (IPv4-mapped IPv6 counts as IPv4) */
static int addr_same(const unsigned char *a, int alen, const struct dns_addr *b)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	int blen = b->family == AF_INET ? 4 : 16;
	const unsigned char *bb = b->bytes;
	if (alen == 16 && blen == 4 && memcmp(a, mapped, 12) == 0)
		return memcmp(a + 12, bb, 4) == 0;
	if (alen == 4 && blen == 16 && memcmp(bb, mapped, 12) == 0)
		return memcmp(a, bb + 12, 4) == 0;
	return alen == blen && memcmp(a, bb, (size_t)alen) == 0;
}

/* addr_is_local_iface - a wildcard listener covers every address of ours */
static int addr_is_local_iface(const struct dns_addr *a)
{
	if (a->family == AF_INET && a->bytes[0] == 127)
		return 1;
	static const unsigned char v6lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	if (a->family == AF_INET6 && memcmp(a->bytes, v6lo, 16) == 0)
		return 1;
	struct ifaddrs *ifa = NULL;
	int found = 0;
	if (getifaddrs(&ifa) < 0)
		return 0;
	for (struct ifaddrs *i = ifa; i && !found; i = i->ifa_next) {
		if (i->ifa_addr == NULL)
			continue;
		if (i->ifa_addr->sa_family == AF_INET)
			found = addr_same((const unsigned char *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4, a);
		else if (i->ifa_addr->sa_family == AF_INET6)
			found = addr_same((const unsigned char *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16,
					  a);
	}
	freeifaddrs(ifa);
	return found;
}

/* remote_is_self - would connecting to a:port reach one of our own MX
 * listeners? (the RFC 5321 5.1 "own host" check, by address) */
static int remote_is_self(const struct remote *r, const struct dns_addr *a, unsigned port)
{
	const struct conf_list *l = &r->conf->smtp_listen;
	for (size_t i = 0; i < l->n; i++) {
		char host[128];
		unsigned lport;
		unsigned char b[16];
		if (conf_split_addrport(l->v[i], host, sizeof(host), &lport) < 0 || lport != port)
			continue;
		int blen = inet_pton(AF_INET, host, b) == 1 ? 4 : inet_pton(AF_INET6, host, b) == 1 ? 16 : 0;
		if (blen == 0)
			continue;
		static const unsigned char zero[16];
		if (memcmp(b, zero, (size_t)blen) == 0) {
			if (addr_is_local_iface(a))
				return 1;
		} else if (addr_same(b, blen, a)) {
			return 1;
		}
	}
	return 0;
}

/* rdest_set_route - copy the hosts from a DNS answer, dropping ourselves
 * and every MX not better than us; 0, or -1 when nothing is left */
static int rdest_set_route(struct rdest *d, const struct dns_host *hosts, size_t n)
{
	struct remote *r = d->r;
	unsigned self_pref = 0;
	int self = 0;
	for (size_t i = 0; i < n && !self; i++)
		for (size_t k = 0; k < hosts[i].naddrs; k++)
			if (remote_is_self(r, &hosts[i].addrs[k], d->port)) {
				self = 1;
				self_pref = hosts[i].pref;
				break;
			}
	rdest_free_route(d);
	d->hosts = xcalloc(n ? n : 1, sizeof(*d->hosts));
	for (size_t i = 0; i < n; i++) {
		if (self && hosts[i].pref >= self_pref)
			continue;
		if (hosts[i].naddrs == 0)
			continue;
		struct rhost *h = &d->hosts[d->nhosts++];
		h->name = xstrdup(hosts[i].name ? hosts[i].name : d->lookup);
		h->pref = hosts[i].pref;
		h->addrs = xcalloc(hosts[i].naddrs, sizeof(*h->addrs));
		memcpy(h->addrs, hosts[i].addrs, hosts[i].naddrs * sizeof(*h->addrs));
		h->naddrs = hosts[i].naddrs;
	}
	return d->nhosts > 0 ? 0 : -1;
}

/* rdest_dns_failed - no route: the waiting jobs get the DNS verdict */
static void rdest_dns_failed(struct rdest *d, enum dns_status st, const char *why)
{
	char text[REMOTE_TEXT_MAX];
	/* a relayhost that does not resolve is our configuration's fault:
	 * keep the mail rather than bounce it */
	int perm = dns_status_is_permanent(st) && !d->relay;
	snprintf(text, sizeof(text), "%s%s: %s", d->relay ? "relayhost " : "", d->lookup,
		 why && *why ? why : dns_status_str(st));
	rdest_fail_queue(d, perm ? SCHED_RESULT_PERMFAIL : SCHED_RESULT_TEMPFAIL, perm ? dns_status_dsn(st) : "4.4.3",
			 text);
}

/* rdest_routed - a route is known (or not): go on */
static void rdest_routed(struct rdest *d, enum dns_status st, const char *why, const struct dns_host *hosts,
			 size_t n)
{
	d->q = NULL;
	d->state = RDEST_NEW; /* asked again next time, unless READY below */
	if (st != DNS_OK) {
		rdest_dns_failed(d, st, why);
	} else if (rdest_set_route(d, hosts, n) < 0) {
		char text[REMOTE_TEXT_MAX];
		snprintf(text, sizeof(text), "mail for %s loops back to myself", d->lookup);
		rdest_fail_queue(d, SCHED_RESULT_TEMPFAIL, "4.4.6", text);
	} else {
		d->state = RDEST_READY;
	}
	remote_kick(d->r);
}

static void rdest_mx_cb(const struct dns_mx_result *res, void *arg)
{
	rdest_routed(arg, res->status, res->why, res->hosts, res->nhosts);
}

static void rdest_host_cb(const struct dns_host_result *res, void *arg)
{
	struct rdest *d = arg;
	struct dns_host h = {.name = d->lookup, .pref = 0, .addrs = res->addrs, .naddrs = res->naddrs};
	rdest_routed(d, res->status, res->why, &h, res->status == DNS_OK ? 1 : 0);
}

/* rdest_resolve - ask DNS for the route */
static void rdest_resolve(struct rdest *d)
{
	d->state = RDEST_RESOLVING;
	d->q = d->mx ? dns_mx_lookup(d->r->dns, d->lookup, rdest_mx_cb, d)
		     : dns_host_lookup(d->r->dns, d->lookup, rdest_host_cb, d);
	if (d->q == NULL) {
		d->state = RDEST_NEW;
		rdest_fail_queue(d, SCHED_RESULT_TEMPFAIL, "4.3.0", "out of memory for DNS lookup");
	}
}

/* ---- connections: socket and TLS I/O ---- */

/* rconn_close_socket - stop I/O; a QUIT still buffered gets one try */
static void rconn_close_socket(struct rconn *c)
{
	if (c->fd < 0)
		return;
	if (c->out.len > c->out_off && c->ssl == NULL && !c->connecting) {
		ssize_t w = send(c->fd, c->out.s + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)w;
	}
	event_del(c->rev);
	event_del(c->wev);
	event_del(c->timer);
	event_free(c->rev);
	event_free(c->wev);
	c->rev = c->wev = NULL;
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	close(c->fd);
	c->fd = -1;
	c->reading = 0;
	c->connecting = 0;
	c->handshaking = 0;
	c->starttls_pending = 0;
	c->ssl_want_write = 0;
	strbuf_reset(&c->out);
	c->out_off = 0;
}

/* rconn_io_read - TCP or TLS: >0 bytes, 0 end, -1 with errno */
static ssize_t rconn_io_read(struct rconn *c, char *buf, size_t n)
{
	return tls_io_read(c->ssl, c->fd, buf, n, &c->ssl_want_write);
}

/* rconn_io_write - TCP or TLS: bytes written, or -1 with errno */
static ssize_t rconn_io_write(struct rconn *c, const char *p, size_t n)
{
	return tls_io_write(c->ssl, c->fd, p, n);
}

/* rconn_flush - write what the socket takes; -1 on error */
static int rconn_flush(struct rconn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t w = rconn_io_write(c, c->out.s + c->out_off, c->out.len - c->out_off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		c->out_off += (size_t)w;
	}
	strbuf_reset(&c->out);
	c->out_off = 0;
	return 0;
}

/* ---- the session's effects ---- */

static int rconn_op_write(void *ctx, const char *p, size_t n)
{
	struct rconn *c = ctx;
	if (c->fd < 0)
		return 0;
	strbuf_add(&c->out, p, n);
	if (c->out.len - c->out_off > REMOTE_OUT_HIGH) {
		c->paused = 1;
		return 1;
	}
	return 0;
}

static void rconn_op_close(void *ctx)
{
	struct rconn *c = ctx;
	c->close_requested = 1;
}

/* rconn_op_content_read - stream the queue file with pread: the message
 * is never held in memory as a whole */
static ssize_t rconn_op_content_read(void *ctx, char *buf, size_t cap)
{
	struct rconn *c = ctx;
	struct rjob *j = c->job;
	if (j == NULL)
		return -1;
	struct rmsg *m = j->msg;
	if (m->fd < 0) {
		char err[256];
		if (queue_msg_content(c->r->q, m->env.qid, &m->fd, &m->off, &m->len, err, sizeof(err)) < 0) {
			m->fd = -1;
			struct log_line l;
			log_begin(&l, LOG_LEVEL_ERR, "queue_error");
			log_kv(&l, "qid", m->env.qid);
			log_kv(&l, "error", err);
			log_end(&l);
			return -1;
		}
	}
	if (j->pos >= m->len)
		return 0;
	size_t want = cap;
	if ((off_t)want > m->len - j->pos)
		want = (size_t)(m->len - j->pos);
	for (;;) {
		ssize_t n = pread(m->fd, buf, want, m->off + j->pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1; /* a short file is a damaged file */
		j->pos += n;
		return n;
	}
}

/* rconn_result_text - the diagnostic for one recipient's result */
static void rconn_result_text(const struct rconn *c, const struct smtp_client_rcpt_result *rr, char *out,
			      size_t outlen)
{
	static const char *const phrase[] = {
		[SMTP_CLIENT_STAGE_CONNECT] = "initial greeting",
		[SMTP_CLIENT_STAGE_EHLO] = "EHLO command",
		[SMTP_CLIENT_STAGE_STARTTLS] = "STARTTLS command",
		[SMTP_CLIENT_STAGE_MAIL] = "MAIL FROM command",
		[SMTP_CLIENT_STAGE_RCPT] = "RCPT TO command",
		[SMTP_CLIENT_STAGE_DATA] = "DATA command",
		[SMTP_CLIENT_STAGE_CONTENT] = "end of DATA command",
		[SMTP_CLIENT_STAGE_LOCAL] = "local check",
		[SMTP_CLIENT_STAGE_AUTH] = "AUTH command",
	};
	if (!rr->remote) {
		snprintf(out, outlen, "%s", rr->text[0] ? rr->text : "delivery failed");
		return;
	}
	const char *ph = (unsigned)rr->stage < sizeof(phrase) / sizeof(phrase[0]) ? phrase[rr->stage] : "command";
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_addf(&sb, "host %s said: %d %s%s%s", rr->status == SMTP_CLIENT_DELIVERED ? c->relay : c->host,
		    rr->code, rr->enh, rr->enh[0] ? " " : "", rr->text);
	if (rr->status != SMTP_CLIENT_DELIVERED)
		strbuf_addf(&sb, " (in reply to %s)", ph);
	/* long texts are cut to fit: the start says the most */
	snprintf(out, outlen, "%.*s", (int)(sb.len < outlen ? sb.len : outlen - 1), sb.s ? sb.s : "");
	strbuf_free(&sb);
}

/* rconn_op_done - one message's results: settle what is final here; what
 * failed with the connection goes on to the next address (rconn_update) */
static void rconn_op_done(void *ctx, const struct smtp_client_result *res)
{
	struct rconn *c = ctx;
	struct rjob *j = c->job;
	if (j == NULL)
		return;
	size_t keep = 0;
	for (size_t i = 0; i < res->nrcpts; i++) {
		const struct smtp_client_rcpt_result *rr = &res->rcpts[i];
		char text[REMOTE_TEXT_MAX];
		rconn_result_text(c, rr, text, sizeof(text));
		/* a failure of the session, not an answer about this recipient:
		 * another MX may take it (RFC 5321 4.5.4.1) */
		int retry = res->session_error && rr->status != SMTP_CLIENT_DELIVERED &&
			    !(rr->remote && rr->stage == SMTP_CLIENT_STAGE_RCPT);
		if (retry) {
			for (size_t k = 0; k < j->n; k++)
				if (j->idx[k] == rr->index)
					j->idx[keep++] = rr->index;
			snprintf(c->last_err, sizeof(c->last_err), "%s", text);
			/* an AUTH refusal keeps its own status (5.7.8 becomes 4.7.8),
			 * not a generic "could not connect" 4.4.x */
			if (rr->stage == SMTP_CLIENT_STAGE_AUTH)
				snprintf(c->last_enh, sizeof(c->last_enh), "%s", rr->enh[0] ? rr->enh : "4.7.0");
			else
				c->last_enh[0] = '\0';
			continue;
		}
		enum sched_result sr = rr->status == SMTP_CLIENT_DELIVERED ? SCHED_RESULT_OK
				       : rr->status == SMTP_CLIENT_PERMFAIL ? SCHED_RESULT_PERMFAIL
									     : SCHED_RESULT_TEMPFAIL;
		char dsn[SMTP_CLIENT_ENH_MAX];
		dsn_of(dsn, sizeof(dsn), rr->enh, rr->code, sr);
		remote_report(c->r, j->msg, rr->index, sr, dsn, text, c->relay, res->tls ? c->tls_desc : NULL);
	}
	j->n = keep;
	if (keep > 0) {
		c->retry_next = 1;
		return;
	}
	rjob_free(j);
	c->job = NULL;
}

/* rconn_op_tls_policy - the destination's policy; plain text after a
 * failed handshake under "may" */
static enum smtp_client_tls rconn_op_tls_policy(void *ctx, int offered)
{
	struct rconn *c = ctx;
	(void)offered;
	if (c->r->tls == NULL)
		return c->pol >= REMOTE_TLS_ENCRYPT ? SMTP_CLIENT_TLS_MUST : SMTP_CLIENT_TLS_NONE;
	switch (c->pol) {
	case REMOTE_TLS_NONE: return SMTP_CLIENT_TLS_NONE;
	case REMOTE_TLS_MAY: return c->no_tls ? SMTP_CLIENT_TLS_NONE : SMTP_CLIENT_TLS_MAY;
	case REMOTE_TLS_ENCRYPT:
	case REMOTE_TLS_VERIFY: return SMTP_CLIENT_TLS_MUST;
	}
	return SMTP_CLIENT_TLS_NONE;
}

static void rconn_op_starttls(void *ctx)
{
	struct rconn *c = ctx;
	/* called from inside the session: act in rconn_update */
	c->starttls_pending = 1;
}

static const struct smtp_client_ops rconn_ops = {
	.write = rconn_op_write,
	.close = rconn_op_close,
	.content_read = rconn_op_content_read,
	.done = rconn_op_done,
	.tls_policy = rconn_op_tls_policy,
	.starttls = rconn_op_starttls,
};

/* ---- connection lifetime ---- */

/* rconn_free - unlink and release; the job must be gone */
static void rconn_free(struct rconn *c)
{
	struct rdest *d = c->d;
	struct remote *r = c->r;
	rconn_close_socket(c);
	if (c->sc)
		smtp_client_free(c->sc);
	if (c->timer)
		event_free(c->timer);
	strbuf_free(&c->out);
	if (c->job) {
		/* never reached on a normal path: report rather than lose */
		rjob_fail(r, c->job, SCHED_RESULT_TEMPFAIL, "4.3.0", "delivery abandoned", c->relay);
		rjob_free(c->job);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		d->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	d->nconns--;
	r->nconns--;
	free(c);
	remote_kick(r);
}

/* rconn_params - the session parameters for the connection's job */
static void rconn_params(struct rconn *c, struct smtp_client_params *p)
{
	memset(p, 0, sizeof(*p));
	p->helo_name = c->r->conf->hostname && *c->r->conf->hostname ? c->r->conf->hostname : "localhost";
	p->remote_host = c->host;
	p->env = &c->job->msg->env;
	p->rcpt_idx = c->job->idx;
	p->nrcpt_idx = c->job->n;
	p->size = c->job->msg->env.content_size;
	p->timeouts = c->r->lim.timeouts;
	/* the relayhost's credentials go to the relayhost only */
	if (c->d->relay && c->r->auth_user) {
		p->auth_user = c->r->auth_user;
		p->auth_pass = c->r->auth_pass;
	}
	c->job->pos = 0;
}

/* rconn_session_ended - the socket is gone: the job goes on to the next
 * address, or is deferred when every one was tried; then the conn goes */
static void rconn_session_ended(struct rconn *c)
{
	if (c->sc) {
		smtp_client_free(c->sc);
		c->sc = NULL;
	}
	c->paused = 0;
	c->close_requested = 0;
	if (c->job && c->job->n > 0) {
		c->retry_next = 0;
		rconn_connect(c); /* may free c */
		return;
	}
	rconn_free(c);
}

/* rconn_timer_arm - the session's (or connect's) deadline */
static void rconn_timer_arm(struct rconn *c, unsigned secs)
{
	struct timeval tv = {(time_t)secs, 0};
	event_del(c->timer);
	event_add(c->timer, &tv);
}

static void rconn_on_read(evutil_socket_t fd, short what, void *arg);
static void rconn_on_write(evutil_socket_t fd, short what, void *arg);

/* rconn_addr_next - advance to the next address to try; 0, or -1 when
 * every address of every host was tried */
static int rconn_addr_next(struct rconn *c)
{
	struct rdest *d = c->d;
	if (!c->started) {
		c->started = 1;
		c->hi = 0;
		c->ai = 0;
	} else if (c->no_tls == 1 && c->tls_failed) {
		/* same address again, in plain text (RFC 7435 fallback) */
		c->tls_failed = 0;
		c->no_tls = 2;
		return c->hi < d->nhosts && c->ai < d->hosts[c->hi].naddrs ? 0 : -1;
	} else {
		c->ai++;
		c->no_tls = 0;
		c->tls_failed = 0;
	}
	while (c->hi < d->nhosts && c->ai >= d->hosts[c->hi].naddrs) {
		c->hi++;
		c->ai = 0;
	}
	return c->hi < d->nhosts ? 0 : -1;
}

/* rconn_exhausted - every address failed: the job is deferred, and when
 * not one of them even held a session, the destination's queue too */
static void rconn_exhausted(struct rconn *c)
{
	const char *text = c->last_err[0] ? c->last_err : "no mail host could be reached";
	char enh[SMTP_CLIENT_ENH_MAX] = "4.4.1";
	if (c->any_session)
		snprintf(enh, sizeof(enh), "4.4.2");
	if (c->last_enh[0])
		snprintf(enh, sizeof(enh), "%s", c->last_enh);
	if (c->job) {
		rjob_fail(c->r, c->job, SCHED_RESULT_TEMPFAIL, enh, text, NULL);
		rjob_free(c->job);
		c->job = NULL;
	}
	if (!c->any_session)
		rdest_fail_queue(c->d, SCHED_RESULT_TEMPFAIL, enh, text);
	rconn_free(c);
}

/* rconn_connect - start a TCP connection to the next address; on
 * immediate failure go on; when none is left, give up (frees c) */
static void rconn_connect(struct rconn *c)
{
	struct remote *r = c->r;
	struct rdest *d = c->d;
	for (;;) {
		if (rconn_addr_next(c) < 0) {
			rconn_exhausted(c);
			return;
		}
		const struct rhost *h = &d->hosts[c->hi];
		const struct dns_addr *a = &h->addrs[c->ai];
		snprintf(c->host, sizeof(c->host), "%s[%s]", h->name, a->text);
		snprintf(c->relay, sizeof(c->relay), "%s[%s]:%u", h->name, a->text, d->port);
		c->tls_desc[0] = '\0';
		struct sockaddr_storage ss;
		socklen_t sl = dns_addr_sockaddr(a, (uint16_t)d->port, &ss);
		int fd = sl ? socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
		if (fd < 0) {
			snprintf(c->last_err, sizeof(c->last_err), "connect to %s: %s", c->relay,
				 sl ? strerror(errno) : "bad address");
			c->last_enh[0] = '\0';
			continue;
		}
		if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
			snprintf(c->last_err, sizeof(c->last_err), "connect to %s: %s", c->relay, strerror(errno));
			c->last_enh[0] = '\0';
			close(fd);
			continue;
		}
		c->fd = fd;
		c->connecting = 1;
		c->rev = event_new(r->base, fd, EV_READ | EV_PERSIST, rconn_on_read, c);
		c->wev = event_new(r->base, fd, EV_WRITE | EV_PERSIST, rconn_on_write, c);
		event_add(c->wev, NULL);
		rconn_timer_arm(c, r->lim.connect_timeout);
		return;
	}
}

/* rconn_connected - TCP is up: a session for the job */
static void rconn_connected(struct rconn *c)
{
	c->connecting = 0;
	event_del(c->wev);
	struct smtp_client_params p;
	rconn_params(c, &p);
	c->sc = smtp_client_new(&p, &rconn_ops, c);
	if (c->sc == NULL) {
		rjob_fail(c->r, c->job, SCHED_RESULT_TEMPFAIL, "4.3.0", "cannot start an SMTP session", c->relay);
		rjob_free(c->job);
		c->job = NULL;
		rconn_free(c);
		return;
	}
	struct log_line l;
	log_begin(&l, LOG_LEVEL_DEBUG, "smtp_connect");
	log_kv(&l, "relay", c->relay);
	log_kv(&l, "qid", c->job->msg->env.qid);
	log_end(&l);
	rconn_update(c);
}

/* rconn_connect_failed - the address did not take the connection */
static void rconn_connect_failed(struct rconn *c, const char *why)
{
	snprintf(c->last_err, sizeof(c->last_err), "connect to %s: %s", c->relay, why);
	c->last_enh[0] = '\0';
	struct log_line l;
	log_begin(&l, LOG_LEVEL_INFO, "smtp_connect_failed");
	log_kv(&l, "relay", c->relay);
	log_kv(&l, "reason", why);
	log_end(&l);
	rconn_close_socket(c);
	rconn_connect(c);
}

/* rconn_tls_failed - the handshake failed: the session learns it */
static void rconn_tls_failed(struct rconn *c, const char *why)
{
	struct log_line l;
	log_begin(&l, LOG_LEVEL_WARN, "tls_out_failed");
	log_kv(&l, "relay", c->relay);
	log_kv(&l, "reason", why);
	if (c->pol == REMOTE_TLS_MAY && c->no_tls == 0)
		log_kv(&l, "action", "retry in plain text");
	log_end(&l);
	c->handshaking = 0;
	c->tls_failed = 1;
	if (c->pol == REMOTE_TLS_MAY && c->no_tls == 0)
		c->no_tls = 1;
	snprintf(c->last_err, sizeof(c->last_err), "TLS handshake with %s failed: %s", c->host, why);
	c->last_enh[0] = '\0';
	smtp_client_tls_done(c->sc, 0);
	/* whatever the session queued must not go out in plain text on a
	 * socket that was half way into TLS */
	rconn_close_socket(c);
	rconn_update(c);
}

/* rconn_handshake - drive SSL_connect */
static void rconn_handshake(struct rconn *c)
{
	char why[256];
	switch (tls_io_handshake(c->ssl, why, sizeof(why))) {
	case TLS_IO_WANT_READ:
		event_del(c->wev);
		return;
	case TLS_IO_WANT_WRITE:
		event_add(c->wev, NULL);
		return;
	case TLS_IO_FAILED:
		rconn_tls_failed(c, why);
		return;
	case TLS_IO_DONE:
		break;
	}
	c->handshaking = 0;
	event_del(c->wev);
	tls_describe(c->ssl, c->tls_desc, sizeof(c->tls_desc));
	struct log_line l;
	log_begin(&l, LOG_LEVEL_INFO, "tls_out");
	log_kv(&l, "relay", c->relay);
	log_kv(&l, "tls", c->tls_desc);
	log_kv(&l, "policy", remote_tls_policy_str(c->pol));
	log_kv(&l, "verify", tls_client_verify_str(c->ssl));
	log_end(&l);
	smtp_client_tls_done(c->sc, 1);
	rconn_update(c);
}

/* rconn_tls_begin - the 220 to STARTTLS is in: wrap the socket */
static void rconn_tls_begin(struct rconn *c)
{
	const char *name = c->d->hosts[c->hi].name;
	/* an address literal has no name to send or check */
	int literal = name[0] == '[' || strchr(name, ':') != NULL ||
		      dns_parse_ip(name, &(struct dns_addr){0}) == 0;
	c->ssl = tls_client_ssl(c->r->tls, c->fd, literal ? NULL : name, c->pol == REMOTE_TLS_VERIFY);
	if (c->ssl == NULL) {
		char why[256];
		tls_error_string(why, sizeof(why));
		rconn_tls_failed(c, why);
		return;
	}
	c->handshaking = 1;
	event_add(c->rev, NULL);
	c->reading = 1;
	rconn_timer_arm(c, smtp_client_timeout_secs(c->sc));
	rconn_handshake(c);
}

/* rconn_take_next - an idle connection takes the destination's next job */
static int rconn_take_next(struct rconn *c)
{
	struct rjob *j = rdest_take(c->d);
	if (j == NULL)
		return -1;
	c->job = j;
	struct smtp_client_params p;
	rconn_params(c, &p);
	if (smtp_client_next(c->sc, &p) < 0) {
		/* put it back first in line for a fresh connection */
		j->next = c->d->jobs;
		c->d->jobs = j;
		if (c->d->jobs_tail == NULL)
			c->d->jobs_tail = j;
		c->d->njobs++;
		c->job = NULL;
		return -1;
	}
	return 0;
}

/* rconn_update - after any call into the session: flush, close, move on,
 * re-arm. May free c. */
static void rconn_update(struct rconn *c)
{
	for (int round = 0; round < 16; round++) {
		if (c->sc) {
			enum smtp_client_state st = smtp_client_state(c->sc);
			if (st >= SMTP_CLIENT_S_MAIL && st <= SMTP_CLIENT_S_IDLE)
				c->any_session = 1;
		}
		if (c->fd >= 0 && !c->connecting && !c->handshaking && rconn_flush(c) < 0) {
			rconn_close_socket(c);
			if (c->sc)
				smtp_client_eof(c->sc);
		}
		int pending = c->out.len > c->out_off;
		if (c->retry_next || (c->close_requested && !pending) ||
		    (c->sc && smtp_client_state(c->sc) == SMTP_CLIENT_S_CLOSED))
			rconn_close_socket(c);
		if (c->fd < 0) {
			rconn_session_ended(c);
			return;
		}
		if (c->starttls_pending && !pending) {
			c->starttls_pending = 0;
			rconn_tls_begin(c); /* drives the handshake; may end the session */
			return;
		}
		if (c->paused && !pending) {
			c->paused = 0;
			smtp_client_writable(c->sc);
			continue;
		}
		if (c->job == NULL && smtp_client_state(c->sc) == SMTP_CLIENT_S_IDLE && c->d->njobs > 0 &&
		    rconn_take_next(c) == 0)
			continue;
		break;
	}
	int pending = c->out.len > c->out_off;
	if (pending || c->ssl_want_write)
		event_add(c->wev, NULL);
	else
		event_del(c->wev);
	if (!c->reading) {
		event_add(c->rev, NULL);
		c->reading = 1;
	}
	/* decrypted bytes already inside OpenSSL do not make the socket readable */
	if (c->ssl && SSL_pending(c->ssl) > 0)
		event_active(c->rev, EV_READ, 0);
	rconn_timer_arm(c, smtp_client_timeout_secs(c->sc));
}

static void rconn_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct rconn *c = arg;
	char buf[REMOTE_READ_CHUNK];
	(void)fd;
	(void)what;
	if (c->connecting)
		return;
	if (c->handshaking) {
		rconn_handshake(c);
		return;
	}
	ssize_t n = rconn_io_read(c, buf, sizeof(buf));
	if (n > 0) {
		smtp_client_input(c->sc, buf, (size_t)n);
	} else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		rconn_close_socket(c);
		smtp_client_eof(c->sc);
	}
	rconn_update(c);
}

static void rconn_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct rconn *c = arg;
	(void)fd;
	(void)what;
	if (c->connecting) {
		int err = 0;
		socklen_t el = sizeof(err);
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
			err = errno;
		if (err)
			rconn_connect_failed(c, strerror(err));
		else
			rconn_connected(c);
		return;
	}
	if (c->handshaking) {
		rconn_handshake(c);
		return;
	}
	if (c->ssl_want_write) {
		c->ssl_want_write = 0;
		rconn_on_read(c->fd, EV_READ, c);
		return;
	}
	rconn_update(c);
}

static void rconn_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct rconn *c = arg;
	(void)fd;
	(void)what;
	if (c->connecting) {
		rconn_connect_failed(c, "connection timed out");
		return;
	}
	if (c->handshaking) {
		rconn_tls_failed(c, "handshake timeout");
		return;
	}
	if (c->sc == NULL)
		return;
	smtp_client_timeout(c->sc);
	rconn_update(c);
}

/* rconn_new - a connection for a job, starting at the first MX */
static void rconn_new(struct rdest *d, struct rjob *j)
{
	struct remote *r = d->r;
	struct rconn *c = xcalloc(1, sizeof(*c));
	c->r = r;
	c->d = d;
	c->fd = -1;
	c->job = j;
	c->pol = r->pol_fn ? r->pol_fn(r->pol_arg, d->key) : remote_conf_policy(r->conf, d->key);
	/* a password must not depend on opportunistic TLS: at least "encrypt"
	 * (never "may", whose plain-text retry would then just defer anyway) */
	if (d->relay && r->auth_user && c->pol < REMOTE_TLS_ENCRYPT)
		c->pol = REMOTE_TLS_ENCRYPT;
	strbuf_init(&c->out);
	c->timer = evtimer_new(r->base, rconn_on_timeout, c);
	c->next = d->conns;
	if (d->conns)
		d->conns->prev = c;
	d->conns = c;
	d->nconns++;
	r->nconns++;
	rconn_connect(c); /* may free c */
}

/* ---- the pump ---- */

/* rdest_pump - give waiting jobs to idle connections or new ones */
static void rdest_pump(struct rdest *d)
{
	struct remote *r = d->r;
	while (d->njobs > 0) {
		struct rconn *idle = NULL;
		for (struct rconn *c = d->conns; c; c = c->next)
			if (c->sc && c->job == NULL && c->fd >= 0 && !c->close_requested &&
			    smtp_client_state(c->sc) == SMTP_CLIENT_S_IDLE) {
				idle = c;
				break;
			}
		if (idle) {
			if (rconn_take_next(idle) < 0)
				break;
			rconn_update(idle);
			continue;
		}
		if (d->nconns >= r->lim.per_dest || r->nconns >= r->lim.total)
			break;
		rconn_new(d, rdest_take(d));
	}
}

/* remote_pump_cb - route, connect and clean up, for every destination */
static void remote_pump_cb(evutil_socket_t fd, short what, void *arg)
{
	struct remote *r = arg;
	(void)fd;
	(void)what;
	struct rdest *d = r->dests;
	while (d) {
		struct rdest *next = d->next;
		if (d->njobs > 0 && d->state == RDEST_NEW)
			rdest_resolve(d);
		if (d->njobs > 0 && d->state == RDEST_READY)
			rdest_pump(d);
		if (d->njobs == 0 && d->nconns == 0 && d->state != RDEST_RESOLVING)
			rdest_free(d); /* the route is asked again next time (DNS caches it) */
		d = next;
	}
}

/* remote_kick - run the pump on the next loop iteration */
static void remote_kick(struct remote *r)
{
	event_active(r->ev_pump, EV_TIMEOUT, 0);
}

/* ---- the sched hook ---- */

/* remote_enqueue - add a job to a destination */
static void remote_enqueue(struct rdest *d, struct rmsg *m, const size_t *idx, size_t n)
{
	struct rjob *j = xcalloc(1, sizeof(*j));
	j->msg = m;
	m->refs++;
	j->idx = xcalloc(n, sizeof(*j->idx));
	memcpy(j->idx, idx, n * sizeof(*idx));
	j->n = n;
	if (d->jobs_tail)
		d->jobs_tail->next = j;
	else
		d->jobs = j;
	d->jobs_tail = j;
	d->njobs++;
}

/* remote_hook - sched hands over a message's due remote recipients */
static void remote_hook(void *arg, struct sched *s, const struct envelope *env, const size_t *idx, size_t n)
{
	struct remote *r = arg;
	(void)s;
	struct rmsg *m = xcalloc(1, sizeof(*m));
	env_copy(&m->env, env);
	m->fd = -1;
	m->refs = 1;
	if (r->auth_err[0] && r->conf->relayhost && *r->conf->relayhost) {
		/* never fall back to sending without the configured AUTH */
		char text[REMOTE_TEXT_MAX];
		snprintf(text, sizeof(text), "relayhost_auth_file unusable: %s", r->auth_err);
		char dsn[] = "4.7.0";
		for (size_t i = 0; i < n; i++)
			remote_report(r, m, idx[i], SCHED_RESULT_TEMPFAIL, dsn, text, NULL, NULL);
		rmsg_unref(m);
		return;
	}
	unsigned char *done = xcalloc(n ? n : 1, 1);
	size_t *group = xcalloc(n ? n : 1, sizeof(*group));
	for (size_t i = 0; i < n; i++) {
		if (done[i])
			continue;
		const char *addr = idx[i] < env->nrcpts ? env->rcpts[idx[i]].addr : NULL;
		const char *at = addr ? strrchr(addr, '@') : NULL;
		if (at == NULL || at[1] == '\0') {
			done[i] = 1;
			char dsn[] = "5.1.3";
			remote_report(r, m, idx[i], SCHED_RESULT_PERMFAIL, dsn, "bad recipient address syntax", NULL,
				      NULL);
			continue;
		}
		char domain[256];
		snprintf(domain, sizeof(domain), "%s", at + 1);
		str_lower_ascii(domain);
		/* the same domain, at most max_rcpts recipients per job */
		size_t ng = 0;
		for (size_t k = i; k < n; k++) {
			if (done[k])
				continue;
			const char *a2 = idx[k] < env->nrcpts ? env->rcpts[idx[k]].addr : NULL;
			const char *at2 = a2 ? strrchr(a2, '@') : NULL;
			if (at2 == NULL || str_casecmp_ascii(at2 + 1, domain) != 0)
				continue;
			done[k] = 1;
			group[ng++] = idx[k];
			if (ng == r->lim.max_rcpts)
				break;
		}
		/* more of the same domain than max_rcpts: found again at their index */
		remote_enqueue(rdest_get(r, domain), m, group, ng);
	}
	free(group);
	free(done);
	rmsg_unref(m);
	remote_kick(r);
}

/* ---- the interface ---- */

/* remote_limits_fill - defaults for zero fields */
static void remote_limits_fill(struct remote_limits *l)
{
	if (l->per_dest == 0)
		l->per_dest = 20;
	if (l->total == 0)
		l->total = 100;
	if (l->connect_timeout == 0)
		l->connect_timeout = 30;
	if (l->max_rcpts == 0)
		l->max_rcpts = 50;
	if (l->timeouts.idle == 0)
		l->timeouts.idle = 5;
}

/* umin - the smaller of two timeouts */
static unsigned umin(uint64_t a, unsigned b)
{
	return a < b ? (unsigned)a : b;
}

/* remote_timeouts_from_conf - the outbound timeouts of the configuration
 * (RFC 5321 4.5.3.2): smtp_command_timeout covers EHLO..RCPT and the TLS
 * handshake, and caps DATA's 354 (2 min) and RSET/QUIT (1 min);
 * smtp_data_timeout is the wait for the reply to the end of data and caps
 * each block of content (3 min). A zero field (a conf not loaded through
 * conf_load) keeps the default. The idle time is not touched. */
static void remote_timeouts_from_conf(struct remote_limits *l, const struct conf *conf)
{
	uint64_t cmd = conf->smtp_command_timeout, data = conf->smtp_data_timeout;
	l->connect_timeout = umin(conf->smtp_connect_timeout, 3600);
	l->timeouts.greeting = umin(conf->smtp_greeting_timeout, 3600);
	l->timeouts.helo = l->timeouts.mail = l->timeouts.rcpt = umin(cmd, 3600);
	l->timeouts.data_init = umin(cmd, 120);
	l->timeouts.rset = umin(cmd, 60);
	l->timeouts.data_end = umin(data, 3600);
	l->timeouts.data_block = umin(data, 180);
}

/* remote_auth_clear - forget the relayhost credentials, wiping them */
static void remote_auth_clear(struct remote *r)
{
	if (r->auth_pass) {
		OPENSSL_cleanse(r->auth_pass, strlen(r->auth_pass));
		free(r->auth_pass);
	}
	if (r->auth_user) {
		OPENSSL_cleanse(r->auth_user, strlen(r->auth_user));
		free(r->auth_user);
	}
	r->auth_user = r->auth_pass = NULL;
	r->auth_err[0] = '\0';
}

/* auth_field_ok - 1..255 octets, no control characters */
static int auth_field_ok(const char *s, size_t n)
{
	if (n == 0 || n > REMOTE_AUTH_FIELD_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

/* remote_auth_read - read "user:password" from path; 0, or -1 with err
 * set (err never quotes the file's content: it holds the password) */
static int remote_auth_read(const char *path, char **user, char **pass, char *err, size_t errlen)
{
	char buf[REMOTE_AUTH_FILE_MAX + 1];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return -1;
	}
	/* a password others can read is already lost: refuse, like ssh */
	if (st.st_mode & 077) {
		snprintf(err, errlen, "%s: readable by group or others (mode %03o): must be owner-only", path,
			 (unsigned)(st.st_mode & 0777));
		close(fd);
		return -1;
	}
	size_t len = 0;
	for (;;) {
		ssize_t k = read(fd, buf + len, sizeof(buf) - len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			close(fd);
			OPENSSL_cleanse(buf, sizeof(buf));
			return -1;
		}
		if (k == 0 || (len += (size_t)k) == sizeof(buf))
			break;
	}
	close(fd);
	int rc = -1;
	size_t end = len;
	if (len > REMOTE_AUTH_FILE_MAX) {
		snprintf(err, errlen, "%s: longer than %d bytes", path, REMOTE_AUTH_FILE_MAX);
		goto out;
	}
	/* one line: an optional final LF (or CRLF), nothing after it */
	const char *nl = memchr(buf, '\n', len);
	if (nl) {
		if ((size_t)(nl - buf) != len - 1) {
			snprintf(err, errlen, "%s: more than one line", path);
			goto out;
		}
		end = (size_t)(nl - buf);
		if (end > 0 && buf[end - 1] == '\r')
			end--;
	}
	const char *colon = memchr(buf, ':', end);
	if (colon == NULL) {
		snprintf(err, errlen, "%s: expected one line \"user:password\"", path);
		goto out;
	}
	size_t ulen = (size_t)(colon - buf), plen = end - ulen - 1;
	if (!auth_field_ok(buf, ulen) || !auth_field_ok(colon + 1, plen)) {
		snprintf(err, errlen, "%s: user and password must be 1 to %d printable bytes", path,
			 REMOTE_AUTH_FIELD_MAX);
		goto out;
	}
	*user = xstrndup(buf, ulen);
	*pass = xstrndup(colon + 1, plen);
	rc = 0;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	return rc;
}

/* remote_auth_load - (re)read relayhost_auth_file; an unusable file is
 * logged once here and defers relayhost mail until it is fixed */
static void remote_auth_load(struct remote *r, const struct conf *conf)
{
	remote_auth_clear(r);
	const char *path = conf->relayhost_auth_file;
	if (path == NULL || *path == '\0')
		return;
	char err[sizeof(r->auth_err)];
	if (remote_auth_read(path, &r->auth_user, &r->auth_pass, err, sizeof(err)) < 0) {
		snprintf(r->auth_err, sizeof(r->auth_err), "%s", err);
		struct log_line l;
		log_begin(&l, LOG_LEVEL_ERR, "relayhost_auth_file");
		log_kv(&l, "error", err);
		log_kv(&l, "action", "relayhost mail deferred");
		log_end(&l);
		return;
	}
	if (conf->relayhost == NULL || *conf->relayhost == '\0')
		log_event(LOG_LEVEL_WARN, "relayhost_auth_file", "set without relayhost: not used");
}

struct remote *remote_new(struct event_base *base, const struct conf *conf, struct queue *q, struct sched *s,
			  char *err, size_t errlen)
{
	struct remote *r = xcalloc(1, sizeof(*r));
	r->base = base;
	r->conf = conf;
	r->q = q;
	r->s = s;
	r->dns = dns_new(base, conf->dns_resolver, err, errlen);
	if (r->dns == NULL) {
		free(r);
		return NULL;
	}
	char terr[256];
	r->tls = tls_client_new(conf->smtp_tls_ca_file, terr, sizeof(terr));
	if (r->tls == NULL)
		log_event(LOG_LEVEL_WARN, "tls_out", "no TLS client context (%s): delivering in plain text", terr);
	dns_set_timeout_s(r->dns, conf->dns_timeout);
	remote_timeouts_from_conf(&r->lim, conf);
	remote_limits_fill(&r->lim);
	remote_auth_load(r, conf);
	r->ev_pump = event_new(base, -1, 0, remote_pump_cb, r);
	sched_set_remote(s, remote_hook, r);
	return r;
}

void remote_set_conf(struct remote *r, const struct conf *conf)
{
	const char *a = r->conf->dns_resolver, *b = conf->dns_resolver;
	if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0)) {
		char err[256];
		struct dns *dns = dns_new(r->base, b, err, sizeof(err));
		if (dns == NULL) {
			log_event(LOG_LEVEL_ERR, "reload_failed", "dns_resolver: %s; keeping the old resolver", err);
		} else {
			/* lookups in flight still belong to the old resolver */
			r->old_dns = xrealloc(r->old_dns, (r->nold_dns + 1) * sizeof(*r->old_dns));
			r->old_dns[r->nold_dns++] = r->dns;
			r->dns = dns;
		}
	}
	dns_set_timeout_s(r->dns, conf->dns_timeout);
	remote_timeouts_from_conf(&r->lim, conf);
	remote_limits_fill(&r->lim);
	r->conf = conf;
	/* sessions in progress keep their own copy of the old credentials */
	remote_auth_load(r, conf);
	remote_kick(r);
}

void remote_set_tls_policy(struct remote *r, remote_tls_policy_fn fn, void *arg)
{
	r->pol_fn = fn;
	r->pol_arg = arg;
}

void remote_set_limits(struct remote *r, const struct remote_limits *l)
{
	r->lim = *l;
	remote_limits_fill(&r->lim);
}

void remote_free(struct remote *r)
{
	if (r == NULL)
		return;
	sched_set_remote(r->s, NULL, NULL);
	while (r->dests) {
		struct rdest *d = r->dests;
		while (d->conns) {
			struct rconn *c = d->conns;
			/* abandoned, not reported: see remote.h */
			rjob_free(c->job);
			c->job = NULL;
			rconn_free(c);
		}
		while (d->jobs) {
			struct rjob *j = rdest_take(d);
			rjob_free(j);
		}
		rdest_free(d);
	}
	event_free(r->ev_pump);
	dns_free(r->dns);
	for (size_t i = 0; i < r->nold_dns; i++)
		dns_free(r->old_dns[i]);
	free(r->old_dns);
	tls_client_free(r->tls);
	remote_auth_clear(r);
	free(r);
}
