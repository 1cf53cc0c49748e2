/*
 * test_dns - the asynchronous resolver against a real authoritative server:
 * nsd is started on a free loopback port with a private configuration in a
 * temporary directory, serving tests/unit/dns/test.zone, and every lookup
 * is forwarded to it (dns_resolver). Fault cases use servers forked here:
 * one that never answers, one that answers SERVFAIL, one that answers
 * garbage. Also: cancellation, dns_free with queries in flight and from
 * inside a callback, address literals that must not reach DNS.
 * Without /usr/sbin/nsd the nsd tests are skipped with a loud message.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/log.h"
#include "dns/dns.h"

#define NSD_PATH "/usr/sbin/nsd"
#define ZONE_PATH "tests/unit/dns/test.zone"

static pid_t nsd_pid = -1;
static int nsd_port;
static char nsd_dir[64];
static char nsd_resolver[64];
static pid_t fault_pid = -1; /* at most one fault server at a time */

/* fault_stop - kill the fault server, also after a failed assertion */
static void fault_stop(void)
{
	if (fault_pid > 0) {
		kill(fault_pid, SIGKILL);
		waitpid(fault_pid, NULL, 0);
		fault_pid = -1;
	}
}

/* ---- fixture: a free port, nsd, fault servers ---- */

/* free_port - a loopback port free for both UDP and TCP right now */
static int free_port(void)
{
	for (int tries = 0; tries < 20; tries++) {
		struct sockaddr_in sin = {.sin_family = AF_INET};
		socklen_t sl = sizeof(sin);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int u = socket(AF_INET, SOCK_DGRAM, 0);
		if (u < 0 || bind(u, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
		    getsockname(u, (struct sockaddr *)&sin, &sl) < 0) {
			if (u >= 0)
				close(u);
			continue;
		}
		int t = socket(AF_INET, SOCK_STREAM, 0);
		int ok = t >= 0 && bind(t, (struct sockaddr *)&sin, sizeof(sin)) == 0;
		if (t >= 0)
			close(t);
		close(u);
		if (ok)
			return ntohs(sin.sin_port);
	}
	return -1;
}

/* udp_query_soa - 1 if a server on port answers "test. SOA" within 200 ms */
static int udp_query_soa(int port)
{
	static const unsigned char q[] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
					  4, 't', 'e', 's', 't', 0, 0, 6, 0, 1};
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		return 0;
	struct timeval tv = {0, 200000};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	unsigned char buf[512];
	int ok = sendto(s, q, sizeof(q), 0, (struct sockaddr *)&sin, sizeof(sin)) == sizeof(q) &&
		 recv(s, buf, sizeof(buf), 0) >= 12 && buf[0] == 0x12 && buf[1] == 0x34;
	close(s);
	return ok;
}

/* rm_dir - remove the flat temporary directory */
static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	char p[PATH_MAX];
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

/* nsd_start - group setup: run nsd in the foreground on a free port */
static int nsd_start(void **state)
{
	char zone[PATH_MAX], conf[PATH_MAX + 64];

	log_init("test_dns", getenv("TERN_DNS_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN);
	if (access(NSD_PATH, X_OK) != 0) {
		fprintf(stderr, "\n*** test_dns: %s not found: nsd tests SKIPPED ***\n\n", NSD_PATH);
		return 0;
	}
	if (!realpath(ZONE_PATH, zone)) {
		fprintf(stderr, "test_dns: %s: %s (run from the repo root)\n", ZONE_PATH, strerror(errno));
		return -1;
	}
	snprintf(nsd_dir, sizeof(nsd_dir), "/tmp/tern-dns-XXXXXX");
	if (!mkdtemp(nsd_dir))
		return -1;
	nsd_port = free_port();
	if (nsd_port < 0)
		return -1;
	snprintf(conf, sizeof(conf), "%s/nsd.conf", nsd_dir);
	FILE *f = fopen(conf, "w");
	if (!f)
		return -1;
	fprintf(f,
		"server:\n"
		"  ip-address: 127.0.0.1\n"
		"  port: %d\n"
		"  username: \"\"\n"
		"  chroot: \"\"\n"
		"  zonesdir: \"%s\"\n"
		"  pidfile: \"%s/nsd.pid\"\n"
		"  database: \"\"\n"
		"  zonelistfile: \"%s/zone.list\"\n"
		"  xfrdfile: \"%s/xfrd.state\"\n"
		"  xfrdir: \"%s\"\n"
		"  logfile: \"%s/nsd.log\"\n"
		"  server-count: 1\n"
		"  verbosity: 1\n"
		"remote-control:\n"
		"  control-enable: no\n"
		"zone:\n"
		"  name: \"test.\"\n"
		"  zonefile: \"%s\"\n",
		nsd_port, nsd_dir, nsd_dir, nsd_dir, nsd_dir, nsd_dir, nsd_dir, zone);
	fclose(f);
	nsd_pid = fork();
	if (nsd_pid < 0)
		return -1;
	if (nsd_pid == 0) {
		execl(NSD_PATH, "nsd", "-d", "-c", conf, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {
		int st;
		if (waitpid(nsd_pid, &st, WNOHANG) == nsd_pid) {
			fprintf(stderr, "test_dns: nsd exited (status %d), see %s/nsd.log\n", st, nsd_dir);
			nsd_pid = -1;
			return -1;
		}
		if (udp_query_soa(nsd_port)) {
			snprintf(nsd_resolver, sizeof(nsd_resolver), "127.0.0.1:%d", nsd_port);
			return 0;
		}
		usleep(50000);
	}
	fprintf(stderr, "test_dns: nsd does not answer on port %d\n", nsd_port);
	return -1;
}

/* nsd_stop - group teardown */
static int nsd_stop(void **state)
{
	fault_stop();
	if (nsd_pid > 0) {
		kill(nsd_pid, SIGTERM);
		waitpid(nsd_pid, NULL, 0);
		nsd_pid = -1;
	}
	if (nsd_dir[0])
		rm_dir(nsd_dir);
	return 0;
}

#define NEED_NSD()                                                         \
	do {                                                               \
		if (nsd_pid <= 0) {                                        \
			fprintf(stderr, "*** nsd missing: SKIPPED ***\n"); \
			skip();                                            \
		}                                                          \
	} while (0)

enum fault {
	FAULT_SILENT,
	FAULT_SERVFAIL,
	FAULT_GARBAGE,
};

/* fault_server - fork a UDP server on a free port; returns its pid */
static pid_t fault_server(enum fault kind, int *port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sin);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &sl), 0);
	*port = ntohs(sin.sin_port);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid > 0) {
		close(s);
		fault_pid = pid;
		return pid;
	}
	/* never outlive the test, whatever way it ends */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(0);
	for (;;) {
		unsigned char buf[1500];
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
		if (n < 12 || kind == FAULT_SILENT)
			continue;
		if (kind == FAULT_SERVFAIL) {
			buf[2] |= 0x80;              /* QR */
			buf[3] = (unsigned char)0x82; /* RA, rcode 2 = SERVFAIL */
			memset(buf + 6, 0, 6);       /* no answer/authority/additional */
			sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
		} else {
			unsigned char g[7] = {buf[0], buf[1], 0xff, 0xff, 0xff, 0xff, 0xff};
			sendto(s, g, sizeof(g), 0, (struct sockaddr *)&from, fl);
		}
	}
}

/* ---- capturing results ---- */

struct capture {
	int done;
	int calls;
	enum dns_status status;
	int implicit;
	size_t n;
	char names[DNS_MX_MAX][256];
	unsigned prefs[DNS_MX_MAX];
	char addrs[DNS_MX_MAX][512]; /* "a,b,c" per host (or all for host/txt) */
	char txt[DNS_TXT_MAX][512];
	size_t txtlen[DNS_TXT_MAX];
	char why[256];
	struct dns *free_me;          /* dns_free from inside the callback */
	struct dns *chain_dns;        /* start another lookup from inside */
	struct capture *chain;
};

static void host_cb(const struct dns_host_result *r, void *arg);

/* join_addrs - "a,b" of a host's addresses */
static void join_addrs(char *out, size_t outlen, const struct dns_addr *a, size_t n)
{
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(out);
		snprintf(out + l, outlen - l, "%s%s", i ? "," : "", a[i].text);
	}
}

static void mx_cb(const struct dns_mx_result *r, void *arg)
{
	struct capture *c = arg;
	c->calls++;
	c->done = 1;
	c->status = r->status;
	c->implicit = r->implicit;
	c->n = r->nhosts;
	snprintf(c->why, sizeof(c->why), "%s", r->why ? r->why : "");
	assert_true(r->status == DNS_OK ? r->nhosts > 0 : r->nhosts == 0);
	for (size_t i = 0; i < r->nhosts && i < DNS_MX_MAX; i++) {
		snprintf(c->names[i], sizeof(c->names[i]), "%s", r->hosts[i].name);
		c->prefs[i] = r->hosts[i].pref;
		assert_true(r->hosts[i].naddrs > 0);
		join_addrs(c->addrs[i], sizeof(c->addrs[i]), r->hosts[i].addrs, r->hosts[i].naddrs);
	}
	if (c->free_me)
		dns_free(c->free_me);
	if (c->chain_dns)
		assert_non_null(dns_host_lookup(c->chain_dns, "mx-a.two.test", host_cb, c->chain));
}

static void host_cb(const struct dns_host_result *r, void *arg)
{
	struct capture *c = arg;
	c->calls++;
	c->done = 1;
	c->status = r->status;
	c->n = r->naddrs;
	snprintf(c->why, sizeof(c->why), "%s", r->why ? r->why : "");
	join_addrs(c->addrs[0], sizeof(c->addrs[0]), r->addrs, r->naddrs);
}

static void txt_cb(const struct dns_txt_result *r, void *arg)
{
	struct capture *c = arg;
	c->calls++;
	c->done = 1;
	c->status = r->status;
	c->n = r->ntxts;
	for (size_t i = 0; i < r->ntxts && i < DNS_TXT_MAX; i++) {
		assert_true(r->txts[i].len < sizeof(c->txt[i]));
		memcpy(c->txt[i], r->txts[i].data, r->txts[i].len);
		c->txt[i][r->txts[i].len] = '\0';
		assert_int_equal(r->txts[i].data[r->txts[i].len], '\0');
		c->txtlen[i] = r->txts[i].len;
	}
}

/* now_ms - monotonic milliseconds */
static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* run_until - run the loop until *done, failing after limit_ms */
static void run_until(struct event_base *base, int *done, long long limit_ms)
{
	long long end = now_ms() + limit_ms;
	struct timeval tick = {0, 50000};
	while (!*done) {
		assert_true(now_ms() < end);
		event_base_loopexit(base, &tick);
		event_base_dispatch(base);
	}
}

/* run_for - run the loop for ms whatever happens */
static void run_for(struct event_base *base, long long ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

struct env {
	struct event_base *base;
	struct dns *dns;
};

/* env_open - a base and a resolver forwarding to addr */
static void env_open(struct env *e, const char *resolver)
{
	char err[256] = "";
	e->base = event_base_new();
	assert_non_null(e->base);
	e->dns = dns_new(e->base, resolver, err, sizeof(err));
	if (!e->dns)
		fail_msg("dns_new: %s", err);
	dns_set_timeout(e->dns, 8000);
}

static void env_close(struct env *e)
{
	dns_free(e->dns);
	event_base_free(e->base);
}

/* mx - one MX lookup against nsd, result in c */
static void mx(const char *domain, struct capture *c)
{
	struct env e;
	env_open(&e, nsd_resolver);
	memset(c, 0, sizeof(*c));
	assert_non_null(dns_mx_lookup(e.dns, domain, mx_cb, c));
	run_until(e.base, &c->done, 10000);
	assert_int_equal(c->calls, 1);
	env_close(&e);
}

/* ---- tests against nsd ---- */

static void test_mx_two(void **state)
{
	struct capture c;
	NEED_NSD();
	mx("two.test", &c);
	assert_int_equal(c.status, DNS_OK);
	assert_false(c.implicit);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.names[0], "mx-a.two.test");
	assert_int_equal(c.prefs[0], 10);
	assert_string_equal(c.addrs[0], "192.0.2.1");
	assert_string_equal(c.names[1], "mx-b.two.test");
	assert_int_equal(c.prefs[1], 20);
	/* both families, IPv4 first */
	assert_string_equal(c.addrs[1], "192.0.2.2,2001:db8::2");
}

static void test_mx_equal_random(void **state)
{
	struct env e;
	int seen_e1_first = 0, seen_e2_first = 0;
	NEED_NSD();
	env_open(&e, nsd_resolver);
	/* libunbound answers repeats from its cache; the shuffle is ours */
	for (int i = 0; i < 40 && !(seen_e1_first && seen_e2_first); i++) {
		struct capture c;
		memset(&c, 0, sizeof(c));
		assert_non_null(dns_mx_lookup(e.dns, "equal.test", mx_cb, &c));
		run_until(e.base, &c.done, 10000);
		assert_int_equal(c.status, DNS_OK);
		assert_int_equal(c.n, 2);
		assert_int_equal(c.prefs[0], 10);
		assert_int_equal(c.prefs[1], 10);
		if (strcmp(c.names[0], "e1.equal.test") == 0) {
			assert_string_equal(c.names[1], "e2.equal.test");
			assert_string_equal(c.addrs[0], "192.0.2.11");
			seen_e1_first = 1;
		} else {
			assert_string_equal(c.names[0], "e2.equal.test");
			assert_string_equal(c.names[1], "e1.equal.test");
			assert_string_equal(c.addrs[0], "192.0.2.12");
			seen_e2_first = 1;
		}
	}
	assert_true(seen_e1_first && seen_e2_first);
	env_close(&e);
}

static void test_mx_implicit(void **state)
{
	struct capture c;
	NEED_NSD();
	mx("implicit.test", &c);
	assert_int_equal(c.status, DNS_OK);
	assert_true(c.implicit);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.names[0], "implicit.test");
	assert_int_equal(c.prefs[0], 0);
	assert_string_equal(c.addrs[0], "192.0.2.21,2001:db8::21");
}

static void test_mx_null(void **state)
{
	struct capture c;
	NEED_NSD();
	mx("nullmx.test", &c);
	assert_int_equal(c.status, DNS_NULLMX);
	assert_true(dns_status_is_permanent(c.status));
	assert_string_equal(dns_status_dsn(c.status), "5.1.10");
	assert_int_equal(c.n, 0);
}

static void test_mx_mixed_null(void **state)
{
	struct capture c;
	NEED_NSD();
	mx("mixednull.test", &c);
	assert_int_equal(c.status, DNS_OK);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.names[0], "mx-a.two.test");
}

static void test_mx_nxdomain(void **state)
{
	struct capture c;
	NEED_NSD();
	mx("missing.test", &c);
	assert_int_equal(c.status, DNS_NXDOMAIN);
	assert_string_equal(dns_status_dsn(c.status), "5.1.2");
	mx("deeper.missing.test.", &c);
	assert_int_equal(c.status, DNS_NXDOMAIN);
}

static void test_mx_noaddr(void **state)
{
	struct capture c;
	NEED_NSD();
	mx("noaddr.test", &c);
	assert_int_equal(c.status, DNS_TEMPFAIL);
	assert_int_equal(c.n, 0);
	assert_non_null(strstr(c.why, "nothing.noaddr.test"));
	/* a target without address is skipped, the other one used */
	mx("partial.test", &c);
	assert_int_equal(c.status, DNS_OK);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.names[0], "mx-a.two.test");
	assert_int_equal(c.prefs[0], 20);
}

static void test_mx_nodata(void **state)
{
	struct capture c;
	NEED_NSD();
	mx("nodata.test", &c);
	assert_int_equal(c.status, DNS_NODATA);
	assert_true(dns_status_is_permanent(c.status));
}

static void test_mx_cname(void **state)
{
	struct capture c;
	NEED_NSD();
	mx("alias.test", &c);
	assert_int_equal(c.status, DNS_OK);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.names[0], "mx-a.two.test");
	assert_string_equal(c.names[1], "mx-b.two.test");
}

static void test_host(void **state)
{
	struct env e;
	struct capture c;
	NEED_NSD();
	env_open(&e, nsd_resolver);
	struct {
		const char *name;
		enum dns_status st;
		const char *addrs;
	} cases[] = {
		{"mx-b.two.test", DNS_OK, "192.0.2.2,2001:db8::2"},
		{"mx-a.two.test.", DNS_OK, "192.0.2.1"},
		{"implicit.test", DNS_OK, "192.0.2.21,2001:db8::21"},
		{"missing.test", DNS_NXDOMAIN, ""},
		{"nothing.noaddr.test", DNS_NODATA, ""},
		{"127.0.0.1", DNS_OK, "127.0.0.1"},
		{"[192.0.2.5]", DNS_OK, "192.0.2.5"},
		{"::1", DNS_OK, "::1"},
		{"[IPv6:2001:db8::5]", DNS_OK, "2001:db8::5"},
		{"[mx-a.two.test]", DNS_BADNAME, ""},
		{"bad name.test", DNS_BADNAME, ""},
		{"", DNS_BADNAME, ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&c, 0, sizeof(c));
		assert_non_null(dns_host_lookup(e.dns, cases[i].name, host_cb, &c));
		assert_int_equal(c.calls, 0); /* never from inside the call */
		run_until(e.base, &c.done, 10000);
		if (c.status != cases[i].st)
			fail_msg("%s: %s, want %s (%s)", cases[i].name, dns_status_str(c.status),
				 dns_status_str(cases[i].st), c.why);
		assert_string_equal(c.addrs[0], cases[i].addrs);
	}
	env_close(&e);
}

static void test_txt(void **state)
{
	struct env e;
	struct capture c;
	NEED_NSD();
	env_open(&e, nsd_resolver);
	memset(&c, 0, sizeof(c));
	assert_non_null(dns_txt_lookup(e.dns, "txt.test", txt_cb, &c));
	run_until(e.base, &c.done, 10000);
	assert_int_equal(c.status, DNS_OK);
	assert_int_equal(c.n, 2);
	int spf = strcmp(c.txt[0], "v=spf1 ip4:192.0.2.0/24 -all") == 0 ? 0 : 1;
	assert_string_equal(c.txt[spf], "v=spf1 ip4:192.0.2.0/24 -all");
	assert_string_equal(c.txt[1 - spf], "second record");
	assert_int_equal(c.txtlen[1 - spf], 13);

	memset(&c, 0, sizeof(c));
	assert_non_null(dns_txt_lookup(e.dns, "two.test", txt_cb, &c));
	run_until(e.base, &c.done, 10000);
	assert_int_equal(c.status, DNS_NODATA);
	assert_int_equal(c.n, 0);

	memset(&c, 0, sizeof(c));
	assert_non_null(dns_txt_lookup(e.dns, "_dmarc.missing.test", txt_cb, &c));
	run_until(e.base, &c.done, 10000);
	assert_int_equal(c.status, DNS_NXDOMAIN);
	env_close(&e);
}

static void test_cancel(void **state)
{
	struct env e;
	struct capture a, b, d;
	NEED_NSD();
	env_open(&e, nsd_resolver);
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&d, 0, sizeof(d));
	struct dns_query *qa = dns_mx_lookup(e.dns, "two.test", mx_cb, &a);
	struct dns_query *qd = dns_mx_lookup(e.dns, "[192.0.2.1]", mx_cb, &d);
	assert_non_null(dns_mx_lookup(e.dns, "equal.test", mx_cb, &b));
	assert_non_null(qa);
	assert_non_null(qd);
	dns_cancel(qa);
	dns_cancel(qd); /* a literal's immediate answer is cancelled too */
	run_until(e.base, &b.done, 10000);
	run_for(e.base, 200);
	assert_int_equal(a.calls, 0);
	assert_int_equal(d.calls, 0);
	assert_int_equal(b.calls, 1);
	dns_cancel(NULL);
	/* cancel once the MX answer is in and address queries are out */
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	qa = dns_mx_lookup(e.dns, "mixednull.test", mx_cb, &a);
	assert_non_null(dns_mx_lookup(e.dns, "nullmx.test", mx_cb, &b));
	run_until(e.base, &b.done, 10000);
	if (!a.done)
		dns_cancel(qa);
	run_for(e.base, 200);
	assert_true(a.calls <= 1);
	env_close(&e);
}

static void test_free_pending(void **state)
{
	struct env e;
	struct capture a, b, c;
	NEED_NSD();
	env_open(&e, nsd_resolver);
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	assert_non_null(dns_mx_lookup(e.dns, "two.test", mx_cb, &a));
	assert_non_null(dns_txt_lookup(e.dns, "txt.test", txt_cb, &b));
	assert_non_null(dns_host_lookup(e.dns, "127.0.0.1", host_cb, &c));
	dns_free(e.dns);
	run_for(e.base, 300);
	assert_int_equal(a.calls + b.calls + c.calls, 0);
	event_base_free(e.base);
}

static void test_free_in_callback(void **state)
{
	struct env e;
	struct capture a, b;
	NEED_NSD();
	env_open(&e, nsd_resolver);
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.free_me = e.dns;
	/* the literal completes first; its callback frees the resolver while
	 * the nsd lookup is in flight */
	assert_non_null(dns_mx_lookup(e.dns, "[192.0.2.1]", mx_cb, &a));
	assert_non_null(dns_mx_lookup(e.dns, "two.test", mx_cb, &b));
	run_until(e.base, &a.done, 10000);
	run_for(e.base, 300);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 0);
	event_base_free(e.base);
}

static void test_lookup_in_callback(void **state)
{
	struct env e;
	struct capture a, b;
	NEED_NSD();
	env_open(&e, nsd_resolver);
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.chain_dns = e.dns;
	a.chain = &b;
	assert_non_null(dns_mx_lookup(e.dns, "two.test", mx_cb, &a));
	run_until(e.base, &b.done, 10000);
	assert_int_equal(a.status, DNS_OK);
	assert_int_equal(b.status, DNS_OK);
	assert_string_equal(b.addrs[0], "192.0.2.1");
	env_close(&e);
}

/* ---- tests without nsd ---- */

static void test_literal_no_dns(void **state)
{
	struct env e;
	struct capture c;
	int port;
	/* a resolver that never answers: a literal must not need it */
	fault_stop();
	(void)fault_server(FAULT_SILENT, &port);
	char res[64];
	snprintf(res, sizeof(res), "127.0.0.1:%d", port);
	env_open(&e, res);
	memset(&c, 0, sizeof(c));
	assert_non_null(dns_mx_lookup(e.dns, "[192.0.2.9]", mx_cb, &c));
	assert_int_equal(c.calls, 0);
	run_until(e.base, &c.done, 1000);
	assert_int_equal(c.status, DNS_OK);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.addrs[0], "192.0.2.9");
	memset(&c, 0, sizeof(c));
	assert_non_null(dns_mx_lookup(e.dns, "[IPv6:2001:db8::9]", mx_cb, &c));
	run_until(e.base, &c.done, 1000);
	assert_int_equal(c.status, DNS_OK);
	assert_string_equal(c.addrs[0], "2001:db8::9");
	const char *bad[] = {"[192.0.2.999]", "[]", "bad domain", "", "a..b", "[::1]"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&c, 0, sizeof(c));
		assert_non_null(dns_mx_lookup(e.dns, bad[i], mx_cb, &c));
		run_until(e.base, &c.done, 1000);
		assert_int_equal(c.status, DNS_BADNAME);
		assert_true(dns_status_is_permanent(c.status));
	}
	env_close(&e);
	fault_stop();
}

/* tempfail_case - a lookup against a faulty server is TEMPFAIL, bounded */
static void tempfail_case(enum fault kind)
{
	struct env e;
	struct capture c, t;
	int port;
	fault_stop();
	(void)fault_server(kind, &port);
	char res[64];
	snprintf(res, sizeof(res), "127.0.0.1:%d", port);
	env_open(&e, res);
	dns_set_timeout(e.dns, 1500);
	memset(&c, 0, sizeof(c));
	memset(&t, 0, sizeof(t));
	long long t0 = now_ms();
	assert_non_null(dns_mx_lookup(e.dns, "two.test", mx_cb, &c));
	assert_non_null(dns_txt_lookup(e.dns, "txt.test", txt_cb, &t));
	run_until(e.base, &c.done, 5000);
	run_until(e.base, &t.done, 5000);
	long long took = now_ms() - t0;
	assert_int_equal(c.status, DNS_TEMPFAIL);
	assert_int_equal(t.status, DNS_TEMPFAIL);
	assert_false(dns_status_is_permanent(c.status));
	assert_true(took < 4000);
	fprintf(stderr, "fault %d: tempfail after %lld ms (%s)\n", (int)kind, took, c.why);
	env_close(&e);
	fault_stop();
}

static void test_tempfail_silent(void **state)
{
	tempfail_case(FAULT_SILENT);
}

static void test_tempfail_servfail(void **state)
{
	tempfail_case(FAULT_SERVFAIL);
}

static void test_tempfail_garbage(void **state)
{
	tempfail_case(FAULT_GARBAGE);
}

static void test_new_resolver_syntax(void **state)
{
	char err[256];
	struct event_base *base = event_base_new();
	const char *bad[] = {"nonsense", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
			     "127.0.0.1:53x", "[::1", "[::1]x", "[]:53", "host.test:53", ":53"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		struct dns *d = dns_new(base, bad[i], err, sizeof(err));
		if (d)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_true(err[0] != '\0');
	}
	const char *good[] = {"127.0.0.1:5353", "127.0.0.1", "[::1]:5353", "::1", "[::1]"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct dns *d = dns_new(base, good[i], err, sizeof(err));
		if (!d)
			fail_msg("refused \"%s\": %s", good[i], err);
		dns_free(d);
	}
	dns_free(NULL);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mx_two),
		cmocka_unit_test(test_mx_equal_random),
		cmocka_unit_test(test_mx_implicit),
		cmocka_unit_test(test_mx_null),
		cmocka_unit_test(test_mx_mixed_null),
		cmocka_unit_test(test_mx_nxdomain),
		cmocka_unit_test(test_mx_noaddr),
		cmocka_unit_test(test_mx_nodata),
		cmocka_unit_test(test_mx_cname),
		cmocka_unit_test(test_host),
		cmocka_unit_test(test_txt),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_free_pending),
		cmocka_unit_test(test_free_in_callback),
		cmocka_unit_test(test_lookup_in_callback),
		cmocka_unit_test(test_literal_no_dns),
		cmocka_unit_test(test_tempfail_silent),
		cmocka_unit_test(test_tempfail_servfail),
		cmocka_unit_test(test_tempfail_garbage),
		cmocka_unit_test(test_new_resolver_syntax),
	};
	return cmocka_run_group_tests(tests, nsd_start, nsd_stop);
}
