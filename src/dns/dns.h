/*
 * dns - asynchronous DNS for outbound mail routing, on libunbound, driven
 * by the libevent loop: MX resolution (RFC 5321 5.1), host addresses, TXT.
 *
 * One struct dns holds one libunbound context. Its answers come back on a
 * pipe (ub_fd) watched by a persistent EV_READ event that calls
 * ub_process, so every callback runs from the event loop, never from
 * inside the call that started the lookup. libunbound caches answers for
 * their TTL (and negative answers for the SOA minimum) itself: Tern keeps
 * no second cache. Every lookup has its own deadline (dns_set_timeout)
 * after which it completes with DNS_TEMPFAIL.
 *
 * Exports:
 *   enum dns_status, dns_status_str      lookup outcome, for logs
 *   dns_status_is_permanent              whether a status should bounce
 *   dns_status_dsn                       the RFC 3463 enhanced code for it
 *   dns_new / dns_free                   a resolver on an event base
 *   dns_set_timeout(_s)                  per-lookup deadline (ms, s)
 *   dns_mx_lookup                        domain -> ordered mail hosts with
 *                                        their addresses (RFC 5321 5.1)
 *   dns_host_lookup                      name -> A and AAAA addresses
 *   dns_txt_lookup                       name -> TXT strings (SPF/DKIM/DMARC)
 *   dns_query_raw                        name + any RR type -> unparsed rdata
 *                                        (SPF: MX counting, PTR, A-only)
 *   dns_cancel                           abandon a lookup; its callback is
 *                                        never called
 *   (dns_parse.h: the pure rdata/literal parsers these use)
 *
 * Routing rules implemented by dns_mx_lookup:
 *   - MX records sorted by preference, random order among equal
 *     preferences (RFC 5321 5.1 load spreading);
 *   - no MX records (NODATA) -> the domain itself is the implicit MX,
 *     preference 0, with its A/AAAA addresses (RFC 5321 5.1);
 *   - a null MX (RFC 7505: the single MX "0 .") -> DNS_NULLMX, permanent
 *     (5.1.10). A "." exchange mixed with real MX records is a
 *     misconfiguration: the "." ones are dropped and the real ones used;
 *   - each target's A and AAAA are both looked up; targets without any
 *     address are skipped; none left -> DNS_TEMPFAIL;
 *   - CNAMEs are followed by libunbound; the canonical name's data is used;
 *   - an address literal "[192.0.2.1]" / "[IPv6:...]" never reaches DNS;
 *   - discarding our own host and worse-preference MXes (RFC 5321 5.1 "if
 *     the SMTP client finds its own name") is the caller's job: it knows
 *     its addresses.
 * Results (strings, arrays) belong to the lookup and are valid only during
 * the callback; copy what you keep. A handle is valid until its callback
 * has returned or dns_cancel/dns_free; never use it after that.
 *
 * Trusts: the configured resolver's answers are hostile network data
 * (rdata is parsed by dns_parse.c with every length checked); names given
 * by callers are checked (DNS_BADNAME) before any query.
 * Standards: RFC 1035, RFC 3596, RFC 5321 5.1 and 4.1.3, RFC 7505.
 */
#ifndef TERN_DNS_DNS_H
#define TERN_DNS_DNS_H

#include <stddef.h>
#include <stdint.h>

#include "dns/dns_parse.h"

struct event_base;
struct dns;
struct dns_query;

enum dns_status {
	DNS_OK,       /* answer with usable data */
	DNS_NXDOMAIN, /* the name does not exist: permanent, 5.1.2 */
	DNS_NODATA,   /* the name exists without the data asked for (for MX:
		       * neither MX nor A/AAAA): permanent, 5.1.2 */
	DNS_NULLMX,   /* RFC 7505 null MX: accepts no mail, permanent 5.1.10 */
	DNS_TEMPFAIL, /* SERVFAIL, timeout, network, no usable MX host: 4.4.3 */
	DNS_BADDATA,  /* only malformed records in the answer: temporary */
	DNS_BADNAME,  /* the name asked for is not a valid domain: 5.1.2 */
};

const char *dns_status_str(enum dns_status s);
/* dns_status_is_permanent - 1 when retrying the same lookup cannot help */
int dns_status_is_permanent(enum dns_status s);
/* dns_status_dsn - "5.1.2", "5.1.10", "4.4.3"... for replies and bounces */
const char *dns_status_dsn(enum dns_status s);

#define DNS_MX_MAX 16       /* MX targets followed; more are ignored */
#define DNS_ADDR_MAX 16     /* addresses kept per family per host */
#define DNS_TXT_MAX 64      /* TXT records kept per name */
#define DNS_TIMEOUT_DEFAULT_MS 30000

struct dns_host {
	const char *name;             /* presentation form, no trailing dot */
	unsigned pref;                /* MX preference (0 for implicit MX) */
	const struct dns_addr *addrs; /* IPv4 first, then IPv6 */
	size_t naddrs;
};

struct dns_mx_result {
	enum dns_status status;
	const char *domain;           /* as asked */
	int implicit;                 /* 1: no MX, domain used as its own MX */
	const struct dns_host *hosts; /* in the order to try; only on DNS_OK */
	size_t nhosts;
	const char *why;              /* human text for logs and bounces */
};

struct dns_host_result {
	enum dns_status status;
	const char *name;
	const struct dns_addr *addrs; /* IPv4 first, then IPv6 */
	size_t naddrs;
	const char *why;
};

struct dns_txt {
	const char *data; /* the record's strings concatenated, NUL-ended */
	size_t len;       /* exact length (data may hold NUL bytes) */
};

struct dns_txt_result {
	enum dns_status status;
	const char *name;
	const struct dns_txt *txts;
	size_t ntxts;
	const char *why;
};

typedef void (*dns_mx_cb)(const struct dns_mx_result *res, void *arg);
typedef void (*dns_host_cb)(const struct dns_host_result *res, void *arg);
typedef void (*dns_txt_cb)(const struct dns_txt_result *res, void *arg);

#define DNS_RRTYPE_A 1
#define DNS_RRTYPE_PTR 12
#define DNS_RRTYPE_MX 15
#define DNS_RRTYPE_AAAA 28

struct dns_rr {
	const unsigned char *data; /* rdata as received (parse with dns_parse.h) */
	size_t len;
};

struct dns_raw_result {
	enum dns_status status;    /* DNS_OK even with no usable record */
	const char *name;
	int rrtype;
	const struct dns_rr *rrs;  /* at most DNS_TXT_MAX */
	size_t nrrs;
	const char *why;
};

typedef void (*dns_raw_cb)(const struct dns_raw_result *res, void *arg);

/*
 * dns_new - resolver on base. resolver is "addr:port", "[v6]:port" or a
 * bare address (port 53): every query then goes to it, loopback allowed.
 * NULL uses the servers of /etc/resolv.conf. NULL return with err set.
 */
struct dns *dns_new(struct event_base *base, const char *resolver, char *err, size_t errlen);
/* dns_free - cancel every outstanding lookup (no callback runs) and free;
 * safe to call from inside a dns callback */
void dns_free(struct dns *dns);
void dns_set_timeout(struct dns *dns, unsigned ms);
/* dns_set_timeout_s - the same in seconds (the dns_timeout setting); 0 or
 * more than an hour leaves it unchanged */
void dns_set_timeout_s(struct dns *dns, uint64_t seconds);

/*
 * The lookups: the callback runs exactly once, later, from the event loop,
 * unless the handle is cancelled or dns freed first. NULL only when out of
 * memory (the callback will not run).
 */
struct dns_query *dns_mx_lookup(struct dns *dns, const char *domain, dns_mx_cb cb, void *arg);
/* dns_host_lookup - A and AAAA of a name; a bare or bracketed address
 * literal is answered without DNS */
struct dns_query *dns_host_lookup(struct dns *dns, const char *host, dns_host_cb cb, void *arg);
struct dns_query *dns_txt_lookup(struct dns *dns, const char *name, dns_txt_cb cb, void *arg);
/* dns_query_raw - records of one type, unparsed; no implicit MX, no literals.
 * name is in presentation form: any octet may be in a label, written as
 * \DDD or \X as dns_parse_name writes it (SPF targets are arbitrary text) */
struct dns_query *dns_query_raw(struct dns *dns, const char *name, int rrtype, dns_raw_cb cb, void *arg);
/* dns_cancel - abandon a pending lookup; no-op from inside its own callback */
void dns_cancel(struct dns_query *q);

#endif
