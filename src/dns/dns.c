/*
 * dns - asynchronous lookups on libunbound inside the libevent loop. See
 * dns.h for the interface and the RFC 5321 5.1 routing rules.
 *
 * Exports: dns_new, dns_free, dns_set_timeout(_s), dns_mx_lookup,
 * dns_host_lookup, dns_txt_lookup, dns_cancel, dns_status_str,
 * dns_status_is_permanent, dns_status_dsn.
 *
 * Shape: a struct dns_query is one caller-visible lookup; it owns up to
 * 1 + 2 * DNS_MX_MAX libunbound queries (struct dns_sub: the MX query,
 * then A and AAAA per target). libunbound runs its resolver in a thread
 * (ub_ctx_async(ctx, 1)) and answers through a pipe; we call ub_process
 * when that pipe is readable, which calls dns_ub_answer for each answer.
 * A cancelled libunbound query never calls back (ub_cancel marks it), so
 * a struct dns_sub may be freed as soon as it is cancelled.
 *
 * Re-entrancy: a caller's callback may start lookups, cancel others, or
 * free the whole struct dns. dns->depth counts the event handlers we are
 * inside; dns_free there only marks the resolver dying (after cancelling
 * every query, so no further callback can run) and the outermost handler
 * destroys it once ub_process has returned, because deleting the ub_ctx
 * under ub_process would be a use after free.
 *
 * Trusts: answers are hostile; rdata goes through dns_parse.c.
 */
#include "dns/dns.h"

#include <errno.h>
#include <stdarg.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unbound.h>

#include "core/log.h"
#include "core/str.h"

#define DNS_TYPE_A 1
#define DNS_TYPE_MX 15
#define DNS_TYPE_TXT 16
#define DNS_TYPE_AAAA 28
#define DNS_CLASS_IN 1
#define DNS_RCODE_NXDOMAIN 3
#define DNS_SUBS_MAX (1 + 2 * DNS_MX_MAX)

enum dns_kind {
	DNS_KIND_MX,
	DNS_KIND_HOST,
	DNS_KIND_TXT,
	DNS_KIND_RAW,
};

static const char *const dns_kind_names[] = {
	[DNS_KIND_MX] = "mx",
	[DNS_KIND_HOST] = "host",
	[DNS_KIND_TXT] = "txt",
	[DNS_KIND_RAW] = "raw",
};

struct dns {
	struct event_base *base;
	struct ub_ctx *ctx;
	struct event *ev_ub;
	unsigned timeout_ms;
	struct dns_query *queries; /* every live lookup, for dns_free */
	int depth;                 /* event handlers we are inside */
	int dying;                 /* dns_free was called at depth > 0 */
};

/* one libunbound query belonging to a lookup */
struct dns_sub {
	struct dns_query *q;
	int async_id;
	int pending;
	int rrtype;
	size_t host; /* index in q->hosts for A/AAAA */
};

/* one target host being resolved */
struct dns_work_host {
	char name[DNS_NAME_TEXT_MAX];
	unsigned pref;
	uint32_t tiebreak;
	struct dns_addr v4[DNS_ADDR_MAX], v6[DNS_ADDR_MAX];
	size_t n4, n6;
	enum dns_status st4, st6;
	struct dns_addr all[2 * DNS_ADDR_MAX];
};

struct dns_query {
	struct dns *dns;
	struct dns_query *prev, *next;
	enum dns_kind kind;
	char name[DNS_NAME_TEXT_MAX];
	union {
		dns_mx_cb mx;
		dns_host_cb host;
		dns_txt_cb txt;
		dns_raw_cb raw;
	} cb;
	int rrtype;            /* DNS_KIND_RAW: the type asked for */
	void *arg;
	struct event *timer;   /* the deadline, or 0 s for a known result */
	int have_result;       /* status/why are final, the timer delivers */
	int in_callback;
	enum dns_status status;
	char why[256];
	int implicit;
	struct timeval start;
	struct dns_sub subs[DNS_SUBS_MAX];
	size_t nsubs;
	struct dns_work_host *hosts;
	size_t nhosts;
	struct dns_txt txts[DNS_TXT_MAX];
	size_t ntxts;
};

static const char *const dns_status_names[] = {
	[DNS_OK] = "ok",
	[DNS_NXDOMAIN] = "nxdomain",
	[DNS_NODATA] = "nodata",
	[DNS_NULLMX] = "nullmx",
	[DNS_TEMPFAIL] = "tempfail",
	[DNS_BADDATA] = "baddata",
	[DNS_BADNAME] = "badname",
};

const char *dns_status_str(enum dns_status s)
{
	if ((unsigned)s < sizeof(dns_status_names) / sizeof(dns_status_names[0]))
		return dns_status_names[s];
	return "unknown";
}

int dns_status_is_permanent(enum dns_status s)
{
	return s == DNS_NXDOMAIN || s == DNS_NODATA || s == DNS_NULLMX || s == DNS_BADNAME;
}

const char *dns_status_dsn(enum dns_status s)
{
	switch (s) {
	case DNS_OK:
		return "2.0.0";
	case DNS_NXDOMAIN:
	case DNS_BADNAME:
		return "5.1.2"; /* RFC 3463: bad destination system address */
	case DNS_NODATA:
		return "5.1.2";
	case DNS_NULLMX:
		return "5.1.10"; /* RFC 7505 section 4.1 */
	case DNS_TEMPFAIL:
	case DNS_BADDATA:
		return "4.4.3"; /* RFC 3463: directory server failure */
	}
	return "4.4.3";
}

/* dns_resolver_to_ub - "addr:port" / "[v6]:port" / "addr" -> "addr@port" */
static int dns_resolver_to_ub(const char *resolver, char *out, size_t outlen)
{
	char addr[64];
	const char *port = NULL;
	size_t alen;
	struct dns_addr a;

	if (resolver[0] == '[') {
		const char *close = strchr(resolver, ']');
		if (!close)
			return -1;
		alen = (size_t)(close - resolver - 1);
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			return -1;
		resolver++;
	} else {
		const char *colon = strchr(resolver, ':');
		if (colon && strchr(colon + 1, ':'))
			colon = NULL; /* a bare IPv6 address, no port */
		alen = colon ? (size_t)(colon - resolver) : strlen(resolver);
		if (colon)
			port = colon + 1;
	}
	if (alen == 0 || alen >= sizeof(addr))
		return -1;
	memcpy(addr, resolver, alen);
	addr[alen] = '\0';
	if (dns_parse_ip(addr, &a) < 0)
		return -1;
	uint64_t p = 53;
	if (port && (str_parse_u64(port, strlen(port), &p) < 0 || p == 0 || p > 65535))
		return -1;
	int n = snprintf(out, outlen, "%s@%u", a.text, (unsigned)p);
	return n > 0 && (size_t)n < outlen ? 0 : -1;
}

static void dns_ub_event(evutil_socket_t fd, short what, void *arg);

struct dns *dns_new(struct event_base *base, const char *resolver, char *err, size_t errlen)
{
	struct dns *dns = calloc(1, sizeof(*dns));
	int r;

	if (!dns) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	dns->base = base;
	dns->timeout_ms = DNS_TIMEOUT_DEFAULT_MS;
	dns->ctx = ub_ctx_create();
	if (!dns->ctx) {
		snprintf(err, errlen, "cannot create libunbound context");
		free(dns);
		return NULL;
	}
	/* a resolver thread, not a forked process: nothing is duplicated
	 * (descriptors, keys) and the answers still come through ub_fd */
	if ((r = ub_ctx_async(dns->ctx, 1)) != 0) {
		snprintf(err, errlen, "libunbound async: %s", ub_strerror(r));
		goto fail;
	}
	if (resolver && resolver[0]) {
		char fwd[80];
		if (dns_resolver_to_ub(resolver, fwd, sizeof(fwd)) < 0) {
			snprintf(err, errlen, "dns_resolver: bad address \"%s\"", resolver);
			goto fail;
		}
		if ((r = ub_ctx_set_fwd(dns->ctx, fwd)) != 0) {
			snprintf(err, errlen, "dns_resolver %s: %s", resolver, ub_strerror(r));
			goto fail;
		}
		/* the operator named this server; by default libunbound refuses
		 * to send queries to loopback addresses */
		if ((r = ub_ctx_set_option(dns->ctx, "do-not-query-localhost:", "no")) != 0) {
			snprintf(err, errlen, "libunbound option: %s", ub_strerror(r));
			goto fail;
		}
		/* the named server may serve private and documentation reverse
		 * zones (a LAN resolver, a test DNS): SPF ptr / %{p} and the
		 * RFC 7208 test suite need them, so pass those queries through
		 * instead of libunbound's built-in NXDOMAIN (same trick as test.) */
		static const char *const fwd_zones[] = {
			"10.in-addr.arpa. transparent", "168.192.in-addr.arpa. transparent",
			"2.0.192.in-addr.arpa. transparent", "100.51.198.in-addr.arpa. transparent",
			"113.0.203.in-addr.arpa. transparent", "8.b.d.0.1.0.0.2.ip6.arpa. transparent",
		};
		for (size_t i = 0; i < sizeof(fwd_zones) / sizeof(fwd_zones[0]); i++) {
			if ((r = ub_ctx_set_option(dns->ctx, "local-zone:", fwd_zones[i])) != 0) {
				snprintf(err, errlen, "libunbound option: %s", ub_strerror(r));
				goto fail;
			}
		}
	} else if ((r = ub_ctx_resolvconf(dns->ctx, NULL)) != 0) {
		snprintf(err, errlen, "/etc/resolv.conf: %s", ub_strerror(r));
		goto fail;
	}
	/* libunbound answers the RFC 6761 name "test." itself (NXDOMAIN) by
	 * default; test setups route example.test through dns_resolver, and
	 * on the Internet the upstream answers NXDOMAIN anyway. An empty
	 * transparent zone replaces the default one ("nodefault" given
	 * through ub_ctx_set_option is not honoured by libunbound 1.17). */
	if ((r = ub_ctx_set_option(dns->ctx, "local-zone:", "test. transparent")) != 0) {
		snprintf(err, errlen, "libunbound option: %s", ub_strerror(r));
		goto fail;
	}
	dns->ev_ub = event_new(base, ub_fd(dns->ctx), EV_READ | EV_PERSIST, dns_ub_event, dns);
	if (!dns->ev_ub || event_add(dns->ev_ub, NULL) < 0) {
		snprintf(err, errlen, "cannot watch the libunbound descriptor");
		goto fail;
	}
	return dns;
fail:
	if (dns->ev_ub)
		event_free(dns->ev_ub);
	ub_ctx_delete(dns->ctx);
	free(dns);
	return NULL;
}

void dns_set_timeout(struct dns *dns, unsigned ms)
{
	dns->timeout_ms = ms ? ms : 1;
}

/* dns_set_timeout_s - see dns.h */
void dns_set_timeout_s(struct dns *dns, uint64_t seconds)
{
	if (seconds > 0 && seconds <= 3600)
		dns_set_timeout(dns, (unsigned)seconds * 1000u);
}

/* dns_destroy - release the context; no query is left */
static void dns_destroy(struct dns *dns)
{
	event_free(dns->ev_ub);
	ub_ctx_delete(dns->ctx); /* stops and joins the resolver thread */
	free(dns);
}

/* dns_query_release - cancel the libunbound queries, unlink and free */
static void dns_query_release(struct dns_query *q)
{
	struct dns *dns = q->dns;

	for (size_t i = 0; i < q->nsubs; i++) {
		if (q->subs[i].pending) {
			/* thread mode: the answer, if it comes, is dropped by
			 * libunbound, so the sub may be freed now */
			(void)ub_cancel(dns->ctx, q->subs[i].async_id);
			q->subs[i].pending = 0;
		}
	}
	if (q->timer)
		event_free(q->timer);
	if (q->prev)
		q->prev->next = q->next;
	else
		dns->queries = q->next;
	if (q->next)
		q->next->prev = q->prev;
	for (size_t i = 0; i < q->ntxts; i++)
		free((char *)q->txts[i].data);
	free(q->hosts);
	free(q);
}

void dns_free(struct dns *dns)
{
	if (!dns)
		return;
	struct dns_query *q = dns->queries, *next;
	for (; q; q = next) {
		next = q->next;
		if (!q->in_callback) /* that one is freed when its callback returns */
			dns_query_release(q);
	}
	if (dns->depth > 0) {
		dns->dying = 1;
		return;
	}
	dns_destroy(dns);
}

void dns_cancel(struct dns_query *q)
{
	if (!q || q->in_callback)
		return;
	dns_query_release(q);
}

/* dns_leave - end of an event handler: destroy a resolver freed meanwhile */
static void dns_leave(struct dns *dns)
{
	if (--dns->depth == 0 && dns->dying)
		dns_destroy(dns);
}

/* dns_query_log - one debug line per finished lookup */
static void dns_query_log(const struct dns_query *q, size_t count)
{
	struct timeval now;
	struct log_line l;

	gettimeofday(&now, NULL);
	long long ms = (long long)(now.tv_sec - q->start.tv_sec) * 1000 +
		       (now.tv_usec - q->start.tv_usec) / 1000;
	log_begin(&l, LOG_LEVEL_DEBUG, "dns_lookup");
	log_kv(&l, "type", dns_kind_names[q->kind]);
	log_kv(&l, "name", q->name);
	log_kv(&l, "status", dns_status_str(q->status));
	log_kvi(&l, "count", (long long)count);
	log_kvi(&l, "ms", ms);
	if (q->why[0])
		log_kv(&l, "why", q->why);
	log_end(&l);
}

/* dns_host_addrs - a host's addresses, IPv4 first; returns the count */
static size_t dns_host_addrs(struct dns_work_host *h)
{
	size_t n = 0;
	for (size_t i = 0; i < h->n4; i++)
		h->all[n++] = h->v4[i];
	for (size_t i = 0; i < h->n6; i++)
		h->all[n++] = h->v6[i];
	return n;
}

/* dns_query_deliver - call the caller's callback once, then free q */
static void dns_query_deliver(struct dns_query *q)
{
	struct dns_host out[DNS_MX_MAX];
	size_t n = 0;

	for (size_t i = 0; i < q->nsubs; i++) {
		if (q->subs[i].pending) {
			(void)ub_cancel(q->dns->ctx, q->subs[i].async_id);
			q->subs[i].pending = 0;
		}
	}
	if (q->timer)
		event_del(q->timer);
	q->in_callback = 1;
	switch (q->kind) {
	case DNS_KIND_MX: {
		if (q->status == DNS_OK) {
			for (size_t i = 0; i < q->nhosts && n < DNS_MX_MAX; i++) {
				size_t na = dns_host_addrs(&q->hosts[i]);
				if (na == 0)
					continue;
				out[n].name = q->hosts[i].name;
				out[n].pref = q->hosts[i].pref;
				out[n].addrs = q->hosts[i].all;
				out[n].naddrs = na;
				n++;
			}
		}
		struct dns_mx_result res = {
			.status = q->status, .domain = q->name, .implicit = q->implicit,
			.hosts = n ? out : NULL, .nhosts = n, .why = q->why,
		};
		dns_query_log(q, n);
		q->cb.mx(&res, q->arg);
		break;
	}
	case DNS_KIND_HOST: {
		size_t na = q->status == DNS_OK && q->nhosts ? dns_host_addrs(&q->hosts[0]) : 0;
		struct dns_host_result res = {
			.status = q->status, .name = q->name,
			.addrs = na ? q->hosts[0].all : NULL, .naddrs = na, .why = q->why,
		};
		dns_query_log(q, na);
		q->cb.host(&res, q->arg);
		break;
	}
	case DNS_KIND_TXT: {
		struct dns_txt_result res = {
			.status = q->status, .name = q->name,
			.txts = q->ntxts ? q->txts : NULL, .ntxts = q->ntxts, .why = q->why,
		};
		dns_query_log(q, q->ntxts);
		q->cb.txt(&res, q->arg);
		break;
	}
	case DNS_KIND_RAW: {
		/* raw rdata is kept in txts[], so release frees it the same way */
		struct dns_rr rrs[DNS_TXT_MAX];
		for (size_t i = 0; i < q->ntxts; i++) {
			rrs[i].data = (const unsigned char *)q->txts[i].data;
			rrs[i].len = q->txts[i].len;
		}
		struct dns_raw_result res = {
			.status = q->status, .name = q->name, .rrtype = q->rrtype,
			.rrs = q->ntxts ? rrs : NULL, .nrrs = q->ntxts, .why = q->why,
		};
		dns_query_log(q, q->ntxts);
		q->cb.raw(&res, q->arg);
		break;
	}
	}
	dns_query_release(q);
}

/* dns_query_set - record the final status and its explanation */
static void dns_query_set(struct dns_query *q, enum dns_status st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void dns_query_set(struct dns_query *q, enum dns_status st, const char *fmt, ...)
{
	va_list ap;
	q->status = st;
	va_start(ap, fmt);
	vsnprintf(q->why, sizeof(q->why), fmt, ap);
	va_end(ap);
}

/* dns_query_later - deliver a known result from the loop, not from the
 * caller's stack: callers never see their callback run re-entrantly */
static void dns_query_later(struct dns_query *q)
{
	static const struct timeval zero = {0, 0};
	for (size_t i = 0; i < q->nsubs; i++) {
		if (q->subs[i].pending) {
			(void)ub_cancel(q->dns->ctx, q->subs[i].async_id);
			q->subs[i].pending = 0;
		}
	}
	q->have_result = 1;
	event_del(q->timer);
	event_add(q->timer, &zero);
}

/* dns_query_timer - the deadline passed, or a known result is due */
static void dns_query_timer(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;
	struct dns *dns = q->dns;

	dns->depth++;
	if (!q->have_result)
		dns_query_set(q, DNS_TEMPFAIL, "timed out after %u ms", dns->timeout_ms);
	dns_query_deliver(q);
	dns_leave(dns);
}

/* dns_query_new - allocate and link a lookup; NULL when out of memory */
static struct dns_query *dns_query_new(struct dns *dns, enum dns_kind kind, const char *name, void *arg)
{
	if (dns->dying)
		return NULL;
	struct dns_query *q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->dns = dns;
	q->kind = kind;
	q->arg = arg;
	gettimeofday(&q->start, NULL);
	snprintf(q->name, sizeof(q->name), "%s", name);
	q->timer = evtimer_new(dns->base, dns_query_timer, q);
	if (!q->timer) {
		free(q);
		return NULL;
	}
	struct timeval tv = {dns->timeout_ms / 1000, (dns->timeout_ms % 1000) * 1000};
	event_add(q->timer, &tv);
	q->next = dns->queries;
	if (q->next)
		q->next->prev = q;
	dns->queries = q;
	return q;
}

static void dns_ub_answer(void *mydata, int err, struct ub_result *r);

/* dns_query_send - start one libunbound query; -1 when it cannot start */
static int dns_query_send(struct dns_query *q, const char *name, int rrtype, size_t host)
{
	if (q->nsubs >= DNS_SUBS_MAX)
		return -1;
	struct dns_sub *s = &q->subs[q->nsubs];
	memset(s, 0, sizeof(*s));
	s->q = q;
	s->rrtype = rrtype;
	s->host = host;
	int r = ub_resolve_async(q->dns->ctx, name, rrtype, DNS_CLASS_IN, s, dns_ub_answer, &s->async_id);
	if (r != 0) {
		struct log_line l;
		log_begin(&l, LOG_LEVEL_WARN, "dns_error");
		log_kv(&l, "name", name);
		log_kv(&l, "error", ub_strerror(r));
		log_end(&l);
		return -1;
	}
	s->pending = 1;
	q->nsubs++;
	return 0;
}

/* dns_query_pending - libunbound queries still out */
static size_t dns_query_pending(const struct dns_query *q)
{
	size_t n = 0;
	for (size_t i = 0; i < q->nsubs; i++)
		n += q->subs[i].pending != 0;
	return n;
}

/* dns_classify - the outcome of one libunbound answer */
static enum dns_status dns_classify(int err, const struct ub_result *r, char *why, size_t whylen)
{
	if (err != 0 || !r) {
		snprintf(why, whylen, "resolver error: %s", ub_strerror(err));
		return DNS_TEMPFAIL;
	}
	if (r->rcode == DNS_RCODE_NXDOMAIN || r->nxdomain) {
		snprintf(why, whylen, "host or domain name not found");
		return DNS_NXDOMAIN;
	}
	if (r->rcode != 0) {
		snprintf(why, whylen, "DNS server failure (rcode %d)", r->rcode);
		return DNS_TEMPFAIL;
	}
	if (r->bogus) {
		snprintf(why, whylen, "DNSSEC validation failed");
		return DNS_TEMPFAIL;
	}
	if (!r->havedata || !r->data || !r->data[0]) {
		snprintf(why, whylen, "no data of the requested type");
		return DNS_NODATA;
	}
	return DNS_OK;
}

/* dns_hosts_alloc - n empty target hosts */
static int dns_hosts_alloc(struct dns_query *q, size_t n)
{
	q->hosts = calloc(n, sizeof(*q->hosts));
	if (!q->hosts)
		return -1;
	q->nhosts = n;
	for (size_t i = 0; i < n; i++)
		q->hosts[i].st4 = q->hosts[i].st6 = DNS_TEMPFAIL;
	return 0;
}

/* dns_hosts_send - A and AAAA for every target host */
static void dns_hosts_send(struct dns_query *q)
{
	for (size_t i = 0; i < q->nhosts; i++) {
		if (dns_query_send(q, q->hosts[i].name, DNS_TYPE_A, i) < 0)
			q->hosts[i].st4 = DNS_TEMPFAIL;
		if (dns_query_send(q, q->hosts[i].name, DNS_TYPE_AAAA, i) < 0)
			q->hosts[i].st6 = DNS_TEMPFAIL;
	}
}

/* dns_mx_cmp - by preference, then by the random tie-break */
static int dns_mx_cmp(const void *a, const void *b)
{
	const struct dns_work_host *x = a, *y = b;
	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	if (x->tiebreak != y->tiebreak)
		return x->tiebreak < y->tiebreak ? -1 : 1;
	return 0;
}

/* dns_mx_answer - the MX answer arrived: build the target list */
static void dns_mx_answer(struct dns_query *q, int err, struct ub_result *r)
{
	char why[128];
	enum dns_status st = dns_classify(err, r, why, sizeof(why));

	if (st == DNS_NXDOMAIN || st == DNS_TEMPFAIL) {
		dns_query_set(q, st, "%s", why);
		dns_query_later(q);
		return;
	}
	if (st == DNS_NODATA) {
		/* RFC 5321 5.1: no MX -> the domain is its own, implicit MX */
		if (dns_hosts_alloc(q, 1) < 0) {
			dns_query_set(q, DNS_TEMPFAIL, "out of memory");
			dns_query_later(q);
			return;
		}
		q->implicit = 1;
		snprintf(q->hosts[0].name, sizeof(q->hosts[0].name), "%s", q->name);
		dns_hosts_send(q);
		if (dns_query_pending(q) == 0) {
			dns_query_set(q, DNS_TEMPFAIL, "cannot start address lookups");
			dns_query_later(q);
		}
		return;
	}

	size_t nrec = 0;
	while (r->data[nrec])
		nrec++;
	struct dns_work_host *h = calloc(nrec, sizeof(*h));
	if (!h) {
		dns_query_set(q, DNS_TEMPFAIL, "out of memory");
		dns_query_later(q);
		return;
	}
	size_t n = 0, nnull = 0, nbad = 0;
	for (size_t i = 0; i < nrec; i++) {
		unsigned pref;
		if (r->len[i] < 0 ||
		    dns_parse_mx((const unsigned char *)r->data[i], (size_t)r->len[i], &pref, h[n].name,
				 sizeof(h[n].name)) < 0) {
			nbad++;
			continue;
		}
		if (strcmp(h[n].name, ".") == 0) {
			nnull++; /* RFC 7505 null MX */
			continue;
		}
		if (!dns_parse_hostname_ok(h[n].name)) {
			nbad++;
			continue;
		}
		int dup = 0;
		for (size_t k = 0; k < n; k++)
			if (str_casecmp_ascii(h[k].name, h[n].name) == 0)
				dup = 1;
		if (dup)
			continue;
		h[n].pref = pref;
		/* RFC 5321 5.1: equal preferences are tried in random order to
		 * spread the load */
		h[n].tiebreak = arc4random();
		n++;
	}
	if (n == 0) {
		free(h);
		if (nnull > 0)
			dns_query_set(q, DNS_NULLMX, "domain does not accept mail (null MX)");
		else
			dns_query_set(q, DNS_BADDATA, "malformed MX records (%zu)", nbad);
		dns_query_later(q);
		return;
	}
	qsort(h, n, sizeof(*h), dns_mx_cmp);
	if (n > DNS_MX_MAX)
		n = DNS_MX_MAX;
	if (dns_hosts_alloc(q, n) < 0) {
		free(h);
		dns_query_set(q, DNS_TEMPFAIL, "out of memory");
		dns_query_later(q);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		memcpy(q->hosts[i].name, h[i].name, sizeof(h[i].name));
		q->hosts[i].pref = h[i].pref;
	}
	free(h);
	dns_hosts_send(q);
	if (dns_query_pending(q) == 0) {
		dns_query_set(q, DNS_TEMPFAIL, "cannot start address lookups");
		dns_query_later(q);
	}
}

/* dns_addr_answer - an A or AAAA answer for target host s->host */
static void dns_addr_answer(struct dns_query *q, struct dns_sub *s, int err, struct ub_result *r)
{
	char why[128];
	struct dns_work_host *h = &q->hosts[s->host];
	int v6 = s->rrtype == DNS_TYPE_AAAA;
	enum dns_status st = dns_classify(err, r, why, sizeof(why));
	size_t *n = v6 ? &h->n6 : &h->n4;
	struct dns_addr *a = v6 ? h->v6 : h->v4;

	if (st == DNS_OK) {
		for (size_t i = 0; r->data[i] && *n < DNS_ADDR_MAX; i++) {
			if (r->len[i] >= 0 &&
			    dns_parse_a((const unsigned char *)r->data[i], (size_t)r->len[i],
					v6 ? AF_INET6 : AF_INET, &a[*n]) == 0)
				(*n)++;
		}
		if (*n == 0)
			st = DNS_BADDATA;
	}
	if (v6)
		h->st6 = st;
	else
		h->st4 = st;
}

/* dns_host_status - one host's overall status from its two families */
static enum dns_status dns_host_status(const struct dns_work_host *h)
{
	if (h->n4 + h->n6 > 0)
		return DNS_OK;
	if (h->st4 == DNS_NXDOMAIN || h->st6 == DNS_NXDOMAIN)
		return DNS_NXDOMAIN;
	if (h->st4 == DNS_NODATA && h->st6 == DNS_NODATA)
		return DNS_NODATA;
	return DNS_TEMPFAIL;
}

/* dns_addrs_done - every address query of the lookup has answered */
static void dns_addrs_done(struct dns_query *q)
{
	if (q->kind == DNS_KIND_HOST || q->implicit) {
		enum dns_status st = dns_host_status(&q->hosts[0]);
		static const char *const text[] = {
			[DNS_OK] = "",
			[DNS_NXDOMAIN] = "host or domain name not found",
			[DNS_NODATA] = "no MX and no address records",
			[DNS_TEMPFAIL] = "address lookup failed",
		};
		if (q->kind == DNS_KIND_HOST && st == DNS_NODATA)
			dns_query_set(q, st, "no address records");
		else
			dns_query_set(q, st, "%s", text[st]);
		return;
	}
	size_t usable = 0;
	for (size_t i = 0; i < q->nhosts; i++)
		usable += dns_host_status(&q->hosts[i]) == DNS_OK;
	if (usable == 0)
		dns_query_set(q, DNS_TEMPFAIL, "no MX host has an address (first: %s)", q->hosts[0].name);
	else
		dns_query_set(q, DNS_OK, "%s", "");
}

/* dns_txt_answer - keep every well-formed TXT record */
static void dns_txt_answer(struct dns_query *q, int err, struct ub_result *r)
{
	char why[128];
	enum dns_status st = dns_classify(err, r, why, sizeof(why));
	size_t nbad = 0;

	if (st != DNS_OK) {
		dns_query_set(q, st, "%s", why);
		return;
	}
	for (size_t i = 0; r->data[i] && q->ntxts < DNS_TXT_MAX; i++) {
		if (r->len[i] <= 0) {
			nbad++;
			continue;
		}
		size_t cap = (size_t)r->len[i] + 1, len;
		char *buf = malloc(cap);
		if (!buf) {
			dns_query_set(q, DNS_TEMPFAIL, "out of memory");
			return;
		}
		if (dns_parse_txt((const unsigned char *)r->data[i], (size_t)r->len[i], buf, cap, &len) < 0) {
			free(buf);
			nbad++;
			continue;
		}
		q->txts[q->ntxts].data = buf;
		q->txts[q->ntxts].len = len;
		q->ntxts++;
	}
	if (q->ntxts == 0)
		dns_query_set(q, DNS_BADDATA, "malformed TXT records (%zu)", nbad);
	else
		dns_query_set(q, DNS_OK, "%s", "");
}

/* dns_raw_answer - copy each rdata of a generic lookup, unparsed */
static void dns_raw_answer(struct dns_query *q, int err, struct ub_result *r)
{
	char why[128];
	enum dns_status st = dns_classify(err, r, why, sizeof(why));

	if (st != DNS_OK) {
		dns_query_set(q, st, "%s", why);
		return;
	}
	for (size_t i = 0; r->data[i] && q->ntxts < DNS_TXT_MAX; i++) {
		size_t len = r->len[i] > 0 ? (size_t)r->len[i] : 0;
		char *buf = malloc(len + 1);
		if (!buf) {
			dns_query_set(q, DNS_TEMPFAIL, "out of memory");
			return;
		}
		if (len)
			memcpy(buf, r->data[i], len);
		buf[len] = '\0';
		q->txts[q->ntxts].data = buf;
		q->txts[q->ntxts].len = len;
		q->ntxts++;
	}
	dns_query_set(q, DNS_OK, "%s", "");
}

/* dns_ub_answer - libunbound callback, from inside ub_process */
static void dns_ub_answer(void *mydata, int err, struct ub_result *r)
{
	struct dns_sub *s = mydata;
	struct dns_query *q = s->q;

	s->pending = 0;
	if (q->have_result) {
		/* cannot happen (cancelled queries stay silent); be safe */
		ub_resolve_free(r);
		return;
	}
	if (q->kind == DNS_KIND_RAW) {
		dns_raw_answer(q, err, r);
		dns_query_later(q);
		ub_resolve_free(r);
		return;
	}
	switch (s->rrtype) {
	case DNS_TYPE_MX:
		dns_mx_answer(q, err, r);
		break;
	case DNS_TYPE_TXT:
		dns_txt_answer(q, err, r);
		dns_query_later(q);
		break;
	default:
		dns_addr_answer(q, s, err, r);
		if (dns_query_pending(q) == 0) {
			dns_addrs_done(q);
			dns_query_later(q);
		}
		break;
	}
	ub_resolve_free(r);
}

/* dns_ub_event - the libunbound pipe is readable: collect the answers */
static void dns_ub_event(evutil_socket_t fd, short what, void *arg)
{
	struct dns *dns = arg;

	dns->depth++;
	int r = ub_process(dns->ctx);
	if (r != 0) {
		struct log_line l;
		log_begin(&l, LOG_LEVEL_ERR, "dns_error");
		log_kv(&l, "error", ub_strerror(r));
		log_end(&l);
	}
	dns_leave(dns);
}

/* dns_name_text_ok - a raw lookup's name: presentation form (RFC 1035
 * 5.1) as dns_parse_name writes it, so any octet may appear in a label
 * (RFC 2181 11; SPF targets such as "foo:bar/baz.example.com"): visible
 * ASCII only, \X or \DDD (<= 255) escapes, labels of 1..63 octets,
 * at most 253 octets in all, one optional trailing dot */
static int dns_name_text_ok(const char *s)
{
	size_t label = 0, total = 0;
	for (size_t i = 0; s[i]; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x21 || c > 0x7e)
			return 0;
		if (c == '.') {
			if (label == 0)
				return 0;
			if (s[i + 1] == '\0')
				break; /* the trailing dot */
			total++;
			label = 0;
			continue;
		}
		if (c == '\\') {
			unsigned char d = (unsigned char)s[i + 1];
			if (d >= '0' && d <= '9') {
				unsigned v = 0;
				for (int k = 1; k <= 3; k++) {
					if (s[i + k] < '0' || s[i + k] > '9')
						return 0;
					v = v * 10 + (unsigned)(s[i + k] - '0');
				}
				if (v > 255)
					return 0;
				i += 3;
			} else if (d < 0x21 || d > 0x7e) {
				return 0;
			} else {
				i++;
			}
		}
		if (++label > 63 || ++total > 253)
			return 0;
	}
	return label > 0;
}

/* dns_lookup_start - common start: validate the name, send the first query */
static struct dns_query *dns_lookup_start(struct dns_query *q, const char *name, int rrtype)
{
	struct log_line l;

	log_begin(&l, LOG_LEVEL_DEBUG, "dns_query");
	log_kv(&l, "type", dns_kind_names[q->kind]);
	log_kv(&l, "name", name);
	log_end(&l);
	if (!(q->kind == DNS_KIND_RAW ? dns_name_text_ok(name) : dns_parse_hostname_ok(name))) {
		dns_query_set(q, DNS_BADNAME, "invalid domain name");
		dns_query_later(q);
		return q;
	}
	if (rrtype == DNS_TYPE_A && q->kind != DNS_KIND_RAW) {
		if (dns_hosts_alloc(q, 1) < 0) {
			dns_query_set(q, DNS_TEMPFAIL, "out of memory");
			dns_query_later(q);
			return q;
		}
		snprintf(q->hosts[0].name, sizeof(q->hosts[0].name), "%s", name);
		dns_hosts_send(q);
	} else {
		(void)dns_query_send(q, name, rrtype, 0);
	}
	if (dns_query_pending(q) == 0) {
		dns_query_set(q, DNS_TEMPFAIL, "cannot start lookup");
		dns_query_later(q);
	}
	return q;
}

/* dns_literal_host - answer an address literal without DNS */
static int dns_literal_host(struct dns_query *q, const char *name)
{
	struct dns_addr a;

	if (dns_parse_literal(name, &a) < 0 && (q->kind != DNS_KIND_HOST || dns_parse_ip(name, &a) < 0))
		return 0;
	if (dns_hosts_alloc(q, 1) < 0) {
		dns_query_set(q, DNS_TEMPFAIL, "out of memory");
	} else {
		struct dns_work_host *h = &q->hosts[0];
		snprintf(h->name, sizeof(h->name), "%s", name);
		if (a.family == AF_INET)
			h->v4[h->n4++] = a;
		else
			h->v6[h->n6++] = a;
		q->implicit = 1;
		dns_query_set(q, DNS_OK, "%s", "address literal");
	}
	dns_query_later(q);
	return 1;
}

struct dns_query *dns_mx_lookup(struct dns *dns, const char *domain, dns_mx_cb cb, void *arg)
{
	struct dns_query *q = dns_query_new(dns, DNS_KIND_MX, domain, arg);
	if (!q)
		return NULL;
	q->cb.mx = cb;
	if (domain[0] == '[') {
		if (!dns_literal_host(q, domain)) {
			dns_query_set(q, DNS_BADNAME, "invalid address literal");
			dns_query_later(q);
		}
		return q;
	}
	return dns_lookup_start(q, domain, DNS_TYPE_MX);
}

struct dns_query *dns_host_lookup(struct dns *dns, const char *host, dns_host_cb cb, void *arg)
{
	struct dns_query *q = dns_query_new(dns, DNS_KIND_HOST, host, arg);
	if (!q)
		return NULL;
	q->cb.host = cb;
	if (dns_literal_host(q, host))
		return q;
	if (host[0] == '[') {
		dns_query_set(q, DNS_BADNAME, "invalid address literal");
		dns_query_later(q);
		return q;
	}
	return dns_lookup_start(q, host, DNS_TYPE_A);
}

struct dns_query *dns_txt_lookup(struct dns *dns, const char *name, dns_txt_cb cb, void *arg)
{
	struct dns_query *q = dns_query_new(dns, DNS_KIND_TXT, name, arg);
	if (!q)
		return NULL;
	q->cb.txt = cb;
	return dns_lookup_start(q, name, DNS_TYPE_TXT);
}

struct dns_query *dns_query_raw(struct dns *dns, const char *name, int rrtype, dns_raw_cb cb, void *arg)
{
	struct dns_query *q = dns_query_new(dns, DNS_KIND_RAW, name, arg);
	if (!q)
		return NULL;
	q->cb.raw = cb;
	q->rrtype = rrtype;
	return dns_lookup_start(q, name, rrtype);
}
