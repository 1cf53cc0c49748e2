/*
 * test_mailauth - mail authentication of one message without a DNS
 * server: signing (RSA + Ed25519, From / organisational / MAIL FROM
 * domain, no key), the signatures verified by dkim.c over the content as
 * stored, forged Authentication-Results detection, the callback always
 * coming later from the event loop, cancellation, re-signing from a file,
 * and the verdicts that need no DNS answer: RFC 7489 6.6.1 refusals
 * (several From fields, no From, an oversized header section) and
 * temperrors when the resolver (a closed loopback port) or the deadline
 * fails. DNS-backed results are tested by tests/integration/test_mailauth.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/log.h"
#include "dns/dns.h"
#include "policy/authres.h"
#include "policy/mailauth.h"

static char keydir[] = "/tmp/test_mailauth_XXXXXX";
static char txt_rsa[4096], txt_ed[256];
static struct event_base *base;

/* write_key - generate a key for domain, save PEM, return the TXT record */
static void write_key(const char *domain, int rsa, char *txt, size_t cap)
{
	EVP_PKEY *pk = rsa ? EVP_RSA_gen(2048) : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(pk);
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", keydir, domain);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/%s/tern.%s.pem", keydir, domain, rsa ? "rsa" : "ed25519");
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	unsigned char der[2048], *p = der;
	size_t len = sizeof(der);
	if (rsa)
		len = (size_t)i2d_PUBKEY(pk, &p);
	else
		EVP_PKEY_get_raw_public_key(pk, der, &len);
	unsigned char b64[3000];
	EVP_EncodeBlock(b64, der, (int)len);
	snprintf(txt, cap, "v=DKIM1; k=%s; p=%s", rsa ? "rsa" : "ed25519", b64);
	EVP_PKEY_free(pk);
}

static int setup(void **st)
{
	(void)st;
	log_init("test_mailauth", LOG_LEVEL_ERR);
	if (!mkdtemp(keydir))
		return -1;
	write_key("example.com", 1, txt_rsa, sizeof(txt_rsa));
	write_key("example.com", 0, txt_ed, sizeof(txt_ed));
	base = event_base_new();
	return base ? 0 : -1;
}

static int teardown(void **st)
{
	(void)st;
	char cmd[600];
	event_base_free(base);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", keydir);
	return system(cmd) == 0 ? 0 : -1;
}

/* the fake key DNS for verifying our signatures */
static int key_fetch(void *ctx, const char *name, dns_txt_cb cb, void *arg, void **handle)
{
	(void)ctx;
	*handle = NULL;
	struct dns_txt t[2] = {{txt_ed, strlen(txt_ed)}, {txt_rsa, strlen(txt_rsa)}};
	struct dns_txt_result r = {.status = DNS_OK, .name = name, .txts = t, .ntxts = 2};
	if (strcmp(name, "tern._domainkey.example.com") != 0)
		r.status = DNS_NXDOMAIN;
	cb(&r, arg);
	return 0;
}

struct vres {
	struct dkim_sig_result r[DKIM_SIGS_MAX];
	size_t n;
};

static void vres_cb(const struct dkim_sig_result *r, size_t n, void *arg)
{
	struct vres *v = arg;
	memcpy(v->r, r, n * sizeof(*r));
	v->n = n;
}

/* verify - DKIM results of a whole message */
static struct vres verify(const char *msg, size_t len)
{
	struct vres v = {.n = 99};
	struct dkim_verify *dv = dkim_verify_new(DKIM_L_STRICT, time(NULL));
	assert_int_equal(dkim_verify_write(dv, msg, len), 0);
	struct dkim_fetcher f = {key_fetch, NULL, NULL};
	assert_int_equal(dkim_verify_start(dv, &f, vres_cb, &v), 0);
	dkim_verify_free(dv);
	return v;
}

struct got {
	int called;
	struct mailauth_result r;
	char *prepend;
};

static void got_cb(void *arg, struct mailauth_result *r)
{
	struct got *g = arg;
	g->called++;
	g->r = *r;
	g->prepend = strbuf_detach(&r->prepend); /* the callee may take it */
	strbuf_init(&g->r.prepend);
}

/* run_until - run the loop until g is called (at most secs seconds) */
static void run_until(struct got *g, int secs)
{
	time_t end = time(NULL) + secs + 1;
	while (!g->called && time(NULL) < end) {
		struct timeval tv = {0, 20000};
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
}

/* run_msg - one message through mailauth, written in chunks */
static struct got run_msg(const struct mailauth_conf *c, const char *mail_from, const char *msg, size_t len,
			  size_t chunk)
{
	struct got g = {0};
	struct mailauth *m = mailauth_new(c, "127.0.0.1", "client.example", mail_from);
	mailauth_set_qid(m, "TESTQID1");
	for (size_t i = 0; i < len; i += chunk)
		mailauth_write(m, msg + i, len - i < chunk ? len - i : chunk);
	mailauth_finish(m, got_cb, &g);
	assert_int_equal(g.called, 0); /* never inside finish */
	run_until(&g, 15);
	assert_int_equal(g.called, 1);
	mailauth_free(m);
	return g;
}

static const char *msg_from_example =
	"Received: from client.example ([127.0.0.1]) by mx.test.example with ESMTP id TESTQID1\r\n"
	"\tfor <bob@example.net>; Mon, 23 Nov 2026 10:00:00 +0000\r\n"
	"From: Alice <alice@example.com>\r\n"
	"To: bob@example.net\r\n"
	"Subject: signed\r\n"
	"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
	"Message-ID: <1@example.com>\r\n"
	"\r\n"
	"Hello Bob,\r\n\r\nthis is signed.\r\n";

static struct mailauth_conf sign_conf(void)
{
	struct mailauth_conf c = {0};
	c.base = base;
	c.authserv_id = "mx.test.example";
	c.dkim_key_dir = keydir;
	c.dkim_selector = "tern";
	c.sign = 1;
	return c;
}

/* signed_ok - prepend + content verifies with two passing signatures */
static void signed_ok(const struct got *g, const char *msg, const char *domain)
{
	struct strbuf all;
	strbuf_init(&all);
	strbuf_adds(&all, g->prepend);
	strbuf_adds(&all, msg);
	struct vres v = verify(all.s, all.len);
	assert_int_equal(v.n, 2);
	for (size_t i = 0; i < 2; i++) {
		if (v.r[i].result != DKIM_PASS)
			fail_msg("signature %zu: %s %s", i, dkim_result_str(v.r[i].result), v.r[i].reason);
		assert_string_equal(v.r[i].domain, domain);
	}
	assert_true(v.r[0].alg != v.r[1].alg); /* one RSA, one Ed25519 */
	strbuf_free(&all);
}

static void test_sign(void **st)
{
	(void)st;
	struct mailauth_conf c = sign_conf();
	size_t len = strlen(msg_from_example);
	size_t chunks[] = {1, 7, 100, 65536};
	for (size_t k = 0; k < 4; k++) {
		struct got g = run_msg(&c, "alice@example.com", msg_from_example, len, chunks[k]);
		assert_int_equal(g.r.verdict.kind, SMTP_VERDICT_CONTINUE);
		assert_string_equal(g.r.sign_domain, "example.com");
		assert_null(strstr(g.prepend, "Authentication-Results")); /* not verified */
		assert_int_equal(strncmp(g.prepend, "DKIM-Signature: ", 16), 0);
		assert_non_null(strstr(g.prepend + 1, "\r\nDKIM-Signature: "));
		/* our Received field is not signed; From is (oversigned) */
		assert_null(strstr(g.prepend, "received"));
		assert_non_null(strstr(g.prepend, "from:"));
		signed_ok(&g, msg_from_example, "example.com");
		assert_int_equal(g.r.forged_ar, 0);
		assert_int_equal(g.r.quarantine, 0);
		assert_non_null(strstr(g.r.summary, "dkim_sign=example.com"));
		free(g.prepend);
	}
}

static void test_sign_domains(void **st)
{
	(void)st;
	struct mailauth_conf c = sign_conf();
	/* a subdomain: the organisational domain's keys */
	const char *sub = "From: a@mail.example.com\r\nSubject: x\r\n\r\nbody\r\n";
	struct got g = run_msg(&c, "a@mail.example.com", sub, strlen(sub), 5);
	assert_string_equal(g.r.sign_domain, "example.com");
	signed_ok(&g, sub, "example.com");
	free(g.prepend);
	/* no key for the From domain: the MAIL FROM domain's */
	const char *other = "From: a@other.example\r\nSubject: x\r\n\r\nbody\r\n";
	g = run_msg(&c, "bounce@example.com", other, strlen(other), 64);
	assert_string_equal(g.r.sign_domain, "example.com");
	signed_ok(&g, other, "example.com");
	free(g.prepend);
	/* a From domain of another organisation than MAIL FROM's (a user of
	 * other.example writing From: ceo@example.com): never signed for it */
	const char *foreign = "From: ceo@example.com\r\nSubject: x\r\n\r\nbody\r\n";
	g = run_msg(&c, "user@other.example", foreign, strlen(foreign), 64);
	assert_string_equal(g.r.sign_domain, "");
	assert_string_equal(g.prepend, "");
	free(g.prepend);
	/* the same organisation (a subdomain's MAIL FROM): signed */
	g = run_msg(&c, "bounce@lists.example.com", foreign, strlen(foreign), 64);
	assert_string_equal(g.r.sign_domain, "example.com");
	free(g.prepend);
	/* no key at all: unsigned, nothing to prepend */
	g = run_msg(&c, "a@other.example", other, strlen(other), 64);
	assert_string_equal(g.r.sign_domain, "");
	assert_string_equal(g.prepend, "");
	assert_non_null(strstr(g.r.summary, "dkim_sign=none"));
	free(g.prepend);
	/* From refused by the parser, MAIL FROM has keys */
	const char *two = "From: a@x.example\r\nFrom: b@y.example\r\n\r\nbody\r\n";
	g = run_msg(&c, "a@example.com", two, strlen(two), 64);
	assert_string_equal(g.r.sign_domain, "example.com");
	free(g.prepend);
	/* a message without a From field cannot be signed by dkim.c */
	const char *nofrom = "Subject: x\r\n\r\nbody\r\n";
	g = run_msg(&c, "a@example.com", nofrom, strlen(nofrom), 64);
	assert_string_equal(g.r.sign_domain, "");
	assert_string_equal(g.prepend, "");
	free(g.prepend);
	/* only a header section, no empty line, no body */
	const char *hdronly = "From: a@example.com\r\nSubject: x\r\n";
	g = run_msg(&c, "", hdronly, strlen(hdronly), 3);
	assert_string_equal(g.r.sign_domain, "example.com");
	free(g.prepend);
}

static void test_forged_ar(void **st)
{
	(void)st;
	struct mailauth_conf c = sign_conf();
	c.sign = 0;
	const char *forged = "Received: from x\r\n"
			     "Authentication-Results: other.example; dkim=pass\r\n"
			     "Authentication-Results:\r\n (looks real) MX.TEST.EXAMPLE;\r\n\tdkim=pass header.d=bank.example\r\n"
			     "From: ceo@bank.example\r\n\r\nAuthentication-Results: mx.test.example; body\r\n";
	struct got g = run_msg(&c, "", forged, strlen(forged), 3);
	assert_int_equal(g.r.forged_ar, 1);
	assert_non_null(strstr(g.r.summary, "forged_ar=1"));
	free(g.prepend);
	const char *fine = "Received: from x\r\n"
			   "Authentication-Results: other.example; dkim=pass\r\n"
			   "X-Authentication-Results: mx.test.example; dkim=pass\r\n"
			   "From: ceo@bank.example\r\n\r\nAuthentication-Results: mx.test.example; in the body\r\n";
	g = run_msg(&c, "", fine, strlen(fine), 1000);
	assert_int_equal(g.r.forged_ar, 0);
	free(g.prepend);
}

static void test_free_before_callback(void **st)
{
	(void)st;
	struct mailauth_conf c = sign_conf();
	struct got g = {0};
	struct mailauth *m = mailauth_new(&c, "127.0.0.1", "h", "a@example.com");
	mailauth_write(m, msg_from_example, strlen(msg_from_example));
	mailauth_finish(m, got_cb, &g);
	mailauth_free(m);
	struct timeval tv = {0, 100000};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	assert_int_equal(g.called, 0);
	/* freed without finishing at all */
	m = mailauth_new(&c, "127.0.0.1", "h", "a@example.com");
	mailauth_write(m, msg_from_example, 10);
	mailauth_free(m);
}

static void test_sign_content(void **st)
{
	(void)st;
	struct mailauth_conf c = sign_conf();
	char path[600], err[256];
	snprintf(path, sizeof(path), "%s/content", keydir);
	FILE *f = fopen(path, "w+");
	assert_non_null(f);
	fputs("ENVELOPE-HEADER-JUNK\n", f); /* 21 bytes before the content */
	fputs(msg_from_example, f);
	fflush(f);
	int fd = fileno(f);
	off_t len = (off_t)strlen(msg_from_example);
	struct strbuf out;
	strbuf_init(&out);
	/* the From domain of the content */
	assert_int_equal(mailauth_sign_content(&c, NULL, fd, 21, len, &out, err, sizeof(err)), 0);
	struct got g = {.prepend = out.s};
	signed_ok(&g, msg_from_example, "example.com");
	strbuf_reset(&out);
	/* an explicit domain; its organisational domain's keys */
	assert_int_equal(mailauth_sign_content(&c, "Mail.Example.COM", fd, 21, len, &out, err, sizeof(err)), 0);
	signed_ok(&g, msg_from_example, "example.com");
	strbuf_reset(&out);
	/* no key */
	assert_int_equal(mailauth_sign_content(&c, "nokey.example", fd, 21, len, &out, err, sizeof(err)), 1);
	assert_int_equal(out.len, 0);
	/* errors: a bad domain, a short file, a bad descriptor, no key dir */
	assert_int_equal(mailauth_sign_content(&c, "../../etc", fd, 21, len, &out, err, sizeof(err)), -1);
	assert_int_equal(mailauth_sign_content(&c, "example.com", fd, 21, len + 100, &out, err, sizeof(err)), -1);
	assert_int_equal(mailauth_sign_content(&c, NULL, -1, 0, len, &out, err, sizeof(err)), -1);
	assert_true(err[0] != '\0');
	struct mailauth_conf nodir = c;
	nodir.dkim_key_dir = NULL;
	assert_int_equal(mailauth_sign_content(&nodir, "example.com", fd, 21, len, &out, err, sizeof(err)), -1);
	/* content without a From: nothing to sign for (the caller may name a domain) */
	assert_int_equal(mailauth_sign_content(&c, NULL, fd, 0, 21, &out, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "no From domain"));
	assert_int_equal(out.len, 0);
	strbuf_free(&out);
	fclose(f);
}

/* verify_conf - verification against a resolver that never answers
 * (a closed loopback port): every lookup is a temperror */
static struct mailauth_conf verify_conf(struct dns **dns)
{
	char err[256];
	*dns = dns_new(base, "127.0.0.1:9", err, sizeof(err));
	assert_non_null(*dns);
	dns_set_timeout(*dns, 300);
	struct mailauth_conf c = {0};
	c.base = base;
	c.dns = *dns;
	c.authserv_id = "mx.test.example";
	c.verify = 1;
	c.dmarc_enforce = 1;
	return c;
}

static void test_verify_refusals(void **st)
{
	(void)st;
	struct dns *dns;
	struct mailauth_conf c = verify_conf(&dns);
	const char *two = "Received: x\r\nFrom: a@example.com\r\nSubject: x\r\nFROM: b@example.com\r\n\r\nbody\r\n";
	struct got g = run_msg(&c, "a@example.com", two, strlen(two), 10);
	assert_int_equal(g.r.verdict.kind, SMTP_VERDICT_REJECT);
	assert_string_equal(g.r.verdict.reply,
			    "550 5.7.1 Message refused: 2 From fields (RFC 5322 3.6, RFC 7489 6.6.1)");
	assert_string_equal(g.r.verdict.why, "dmarc");
	assert_true(smtp_verdict_reply_valid(SMTP_VERDICT_REJECT, g.r.verdict.reply));
	assert_non_null(strstr(g.prepend, "dmarc=permerror (2 From fields)"));
	assert_non_null(strstr(g.prepend, "spf=temperror smtp.mailfrom=a@example.com"));
	assert_non_null(strstr(g.prepend, "dkim=none"));
	free(g.prepend);
	/* no From */
	const char *none = "Received: x\r\nSubject: x\r\n\r\nbody\r\n";
	g = run_msg(&c, "", none, strlen(none), 10);
	assert_int_equal(g.r.verdict.kind, SMTP_VERDICT_REJECT);
	assert_non_null(strstr(g.r.verdict.reply, "no From field"));
	assert_non_null(strstr(g.prepend, "spf=temperror smtp.helo=client.example"));
	free(g.prepend);
	/* two domains in one From */
	const char *dom2 = "From: a@example.com, b@example.net\r\n\r\nbody\r\n";
	g = run_msg(&c, "", dom2, strlen(dom2), 10);
	assert_int_equal(g.r.verdict.kind, SMTP_VERDICT_REJECT);
	free(g.prepend);
	/* dmarc_enforce = no: noted, not refused */
	c.dmarc_enforce = 0;
	g = run_msg(&c, "a@example.com", two, strlen(two), 10);
	assert_int_equal(g.r.verdict.kind, SMTP_VERDICT_CONTINUE);
	assert_non_null(strstr(g.prepend, "dmarc=permerror"));
	free(g.prepend);
	c.dmarc_enforce = 1;
	/* a header section over the cap: refused, forged A-R assumed */
	struct strbuf big;
	strbuf_init(&big);
	strbuf_adds(&big, "From: a@example.com\r\n");
	while (big.len < MAILAUTH_HEADER_MAX + 1000)
		strbuf_adds(&big, "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
	strbuf_adds(&big, "\r\nbody\r\n");
	g = run_msg(&c, "a@example.com", big.s, big.len, 8192);
	assert_int_equal(g.r.verdict.kind, SMTP_VERDICT_REJECT);
	assert_non_null(strstr(g.r.verdict.reply, "header section over"));
	assert_int_equal(g.r.forged_ar, 1);
	free(g.prepend);
	strbuf_free(&big);
	dns_free(dns);
}

static void test_verify_temperror(void **st)
{
	(void)st;
	struct dns *dns;
	struct mailauth_conf c = verify_conf(&dns);
	/* DNS fails: SPF, the DKIM key and DMARC are temperrors, nothing is refused */
	struct strbuf m;
	strbuf_init(&m);
	strbuf_adds(&m, "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=YQ==; b=YQ==\r\n");
	strbuf_adds(&m, msg_from_example);
	struct got g = run_msg(&c, "alice@example.com", m.s, m.len, 50);
	assert_int_equal(g.r.verdict.kind, SMTP_VERDICT_CONTINUE);
	assert_int_equal(g.r.quarantine, 0);
	assert_non_null(strstr(g.prepend, "Authentication-Results: mx.test.example;\r\n\tspf=temperror"));
	assert_non_null(strstr(g.prepend, "dkim=temperror"));
	assert_non_null(strstr(g.prepend, "header.d=example.com"));
	assert_non_null(strstr(g.prepend, "dmarc=temperror"));
	assert_non_null(strstr(g.prepend, "header.from=example.com"));
	assert_non_null(strstr(g.r.summary, "spf=temperror dkim=temperror dmarc=temperror from=example.com"));
	free(g.prepend);
	/* the deadline: lookups still pending are cancelled as temperrors */
	dns_set_timeout(dns, 10000);
	c.timeout_ms = 200;
	time_t t0 = time(NULL);
	g = run_msg(&c, "alice@example.com", m.s, m.len, 50);
	assert_true(time(NULL) - t0 < 5);
	assert_int_equal(g.r.verdict.kind, SMTP_VERDICT_CONTINUE);
	assert_non_null(strstr(g.prepend, "spf=temperror"));
	assert_non_null(strstr(g.prepend, "dkim=temperror (key lookup timed out)"));
	assert_non_null(strstr(g.prepend, "dmarc=temperror (policy lookup timed out)"));
	free(g.prepend);
	/* freed while lookups are pending: no callback, nothing leaks */
	struct got g2 = {0};
	struct mailauth *ma = mailauth_new(&c, "127.0.0.1", "h", "alice@example.com");
	mailauth_write(ma, m.s, m.len);
	mailauth_finish(ma, got_cb, &g2);
	mailauth_free(ma);
	assert_int_equal(g2.called, 0);
	strbuf_free(&m);
	dns_free(dns);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sign),
		cmocka_unit_test(test_sign_domains),
		cmocka_unit_test(test_forged_ar),
		cmocka_unit_test(test_free_before_callback),
		cmocka_unit_test(test_sign_content),
		cmocka_unit_test(test_verify_refusals),
		cmocka_unit_test(test_verify_temperror),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
