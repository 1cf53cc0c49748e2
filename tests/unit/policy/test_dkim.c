/*
 * test_dkim - DKIM canonicalization vectors (RFC 6376 3.4.5), strict tag
 * and key-record parsing with hostile input, in-memory sign -> verify round
 * trips (RSA 2048 and Ed25519) with a fake key fetcher, tampering, l=
 * policy, RFC 8301 refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "policy/dkim.h"

/* canon_body - canonical body of msg body text */
static void canon_body_hash(enum dkim_canon c, const char *body, size_t chunk, unsigned char *out, uint64_t *total)
{
	struct dkim_body *b = dkim_body_new(c, "sha256", UINT64_MAX);
	size_t n = strlen(body);
	for (size_t i = 0; i < n; i += chunk)
		dkim_body_write(b, body + i, n - i < chunk ? n - i : chunk);
	dkim_body_finish(b, out, total);
	dkim_body_free(b);
}

/* expect_body - canonical form of body equals want (compared by hash) */
static void expect_body(enum dkim_canon c, const char *body, const char *want)
{
	unsigned char h1[64], h2[64];
	uint64_t t1, t2;
	for (size_t chunk = 1; chunk <= 7; chunk += 3) {
		canon_body_hash(c, body, chunk, h1, &t1);
		EVP_Digest(want, strlen(want), h2, NULL, EVP_sha256(), NULL);
		assert_int_equal(t1, strlen(want));
		assert_memory_equal(h1, h2, 32);
	}
	(void)t2;
}

/* RFC 6376 3.4.5 example */
static void test_canon_rfc_example(void **st)
{
	(void)st;
	struct strbuf sb;
	strbuf_init(&sb);
	dkim_canon_header(DKIM_CANON_RELAXED, "A: X", 4, &sb);
	dkim_canon_header(DKIM_CANON_RELAXED, "B : Y\t\r\n\tZ  ", 12, &sb);
	assert_int_equal(sb.len, strlen("a:X\r\nb:Y Z\r\n"));
	assert_memory_equal(sb.s, "a:X\r\nb:Y Z\r\n", sb.len);
	strbuf_reset(&sb);
	dkim_canon_header(DKIM_CANON_SIMPLE, "B : Y\t\r\n\tZ  ", 12, &sb);
	assert_memory_equal(sb.s, "B : Y\t\r\n\tZ  \r\n", sb.len);
	strbuf_free(&sb);
	expect_body(DKIM_CANON_RELAXED, " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n");
	expect_body(DKIM_CANON_SIMPLE, " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n");
}

/* edge cases: empty bodies, missing final CRLF, bare LF, lone CR */
static void test_canon_body_edges(void **st)
{
	(void)st;
	expect_body(DKIM_CANON_SIMPLE, "", "\r\n");
	expect_body(DKIM_CANON_RELAXED, "", "");
	expect_body(DKIM_CANON_RELAXED, "\r\n\r\n  \r\n", "");
	expect_body(DKIM_CANON_SIMPLE, "abc", "abc\r\n");
	expect_body(DKIM_CANON_RELAXED, "abc  ", "abc\r\n");
	expect_body(DKIM_CANON_SIMPLE, "a\nb\n\n", "a\r\nb\r\n");
	expect_body(DKIM_CANON_SIMPLE, "a\rb\r\n", "a\rb\r\n");
	expect_body(DKIM_CANON_SIMPLE, "a\r", "a\r\r\n");
	expect_body(DKIM_CANON_RELAXED, "\r\n x\r\n", "\r\n x\r\n");
}

#define SIG_OK "v=1; a=rsa-sha256; c=relaxed/simple; d=Example.COM; s=sel; h=From:To; bh=YWJj; b=ZGVm"

static void test_sig_parse(void **st)
{
	(void)st;
	struct dkim_sig s;
	char err[128];
	assert_int_equal(dkim_sig_parse(SIG_OK, strlen(SIG_OK), &s, err, sizeof(err)), 0);
	assert_string_equal(s.d, "example.com");
	assert_int_equal(s.hcanon, DKIM_CANON_RELAXED);
	assert_string_equal(dkim_canon_str(s.hcanon), "relaxed");
	assert_string_equal(dkim_l_policy_str(DKIM_L_STRICT), "strict");
	assert_int_equal(s.bcanon, DKIM_CANON_SIMPLE);
	assert_int_equal(s.nh, 2);
	assert_string_equal(s.h[0], "from");
	assert_int_equal(s.bhlen, 3);
	static const char *const bad[] = {
		"",
		";;;",
		"v=1; v=1; a=rsa-sha256; d=a; s=b; h=from; bh=YWJj; b=ZGVm",  /* duplicate */
		"v=2; a=rsa-sha256; d=a; s=b; h=from; bh=YWJj; b=ZGVm",
		"v=1; a=rsa-md5; d=a; s=b; h=from; bh=YWJj; b=ZGVm",
		"v=1; a=rsa-sha256; d=a; s=b; h=to; bh=YWJj; b=ZGVm",         /* no from */
		"v=1; a=rsa-sha256; d=a; s=b; h=from::to; bh=YWJj; b=ZGVm",
		"v=1; a=rsa-sha256; d=a; s=b; h=from; bh=YW*j; b=ZGVm",
		"v=1; a=rsa-sha256; d=a; s=b; h=from; bh=YWJj; b=Z=Vm",
		"v=1; a=rsa-sha256; d=a..b; s=b; h=from; bh=YWJj; b=ZGVm",
		"v=1; a=rsa-sha256; d=a; s=b/c; h=from; bh=YWJj; b=ZGVm",
		"v=1; a=rsa-sha256; d=a.com; s=b; h=from; bh=YWJj; b=ZGVm; i=@evil.com",
		"v=1; a=rsa-sha256; d=a; s=b; h=from; bh=YWJj; b=ZGVm; l=-1",
		"v=1; a=rsa-sha256; d=a; s=b; h=from; bh=YWJj; b=ZGVm; l=99999999999999999999999",
		"v=1; a=rsa-sha256; d=a; s=b; h=from; bh=YWJj; b=ZGVm; t=10; x=5",
		"v=1; a=rsa-sha256; d=a; s=b; h=from; bh=YWJj; b=ZGVm; c=weird",
		"v=1; a=rsa-sha256; d=a; s=b; h=from; bh=YWJj; b=ZGVm; q=http",
		"v=1; a=rsa-sha256; d=a; s=b; h=from; bh=YWJj",
		"v=1; a=rsa-sha256; d=a; s=b; h=from; bh=YWJj; b",
		"v=1; a=rsa-sha256; d=a; s=b; h=from; bh=YWJj; =x; b=ZGVm",
		"v=1; a=rsa-sha256; d=; s=b; h=from; bh=YWJj; b=ZGVm",
		"v=1; a=rsa-sha256; d=a.com; s=b; h=from; bh=YWJj; b=ZGVm; i=a\x01b@a.com",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(dkim_sig_parse(bad[i], strlen(bad[i]), &s, err, sizeof(err)), -1);
		assert_true(err[0] != '\0');
	}
	/* a subdomain i= is fine; FWS inside b= is fine */
	const char *ok2 = "v=1; a=ed25519-sha256; d=a.com; s=b; h=from; bh=YW\r\n Jj; b=ZG Vm; i=x@sub.a.com";
	assert_int_equal(dkim_sig_parse(ok2, strlen(ok2), &s, err, sizeof(err)), 0);
	/* embedded NUL */
	const char nul[] = "v=1; a=rsa-sha256; d=a\0b; s=b; h=from; bh=YWJj; b=ZGVm";
	assert_int_equal(dkim_sig_parse(nul, sizeof(nul) - 1, &s, err, sizeof(err)), -1);
	/* 10000 tags */
	char *big = malloc(40001);
	for (int i = 0; i < 10000; i++)
		memcpy(big + 4 * i, "a=b;", 4);
	big[40000] = '\0';
	assert_int_equal(dkim_sig_parse(big, 40000, &s, err, sizeof(err)), -1);
	free(big);
}

static void test_key_parse(void **st)
{
	(void)st;
	struct dkim_key k;
	char err[128];
	const char *ok = "v=DKIM1; k=ed25519; h=sha256; t=y:s; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
	assert_int_equal(dkim_key_parse(ok, strlen(ok), &k, err, sizeof(err)), 0);
	assert_int_equal(k.k_ed25519, 1);
	assert_int_equal(k.plen, 32);
	assert_int_equal(k.testing, 1);
	assert_int_equal(k.strict, 1);
	assert_int_equal(dkim_key_parse("v=DKIM1; p=", 11, &k, err, sizeof(err)), 0);
	assert_int_equal(k.revoked, 1);
	static const char *const bad[] = {
		"k=rsa; v=DKIM1; p=YWJj",      /* v= not first */
		"v=DKIM2; p=YWJj",
		"v=DKIM1; k=dsa; p=YWJj",
		"v=DKIM1; h=sha1; p=YWJj",
		"v=DKIM1; s=http; p=YWJj",
		"v=DKIM1; k=rsa",
		"v=DKIM1; p=!!!!",
		"v=DKIM1; p=YWJj; p=YWJj",
		"garbage",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(dkim_key_parse(bad[i], strlen(bad[i]), &k, err, sizeof(err)), -1);
}

/* --- round trips --- */

static char keydir[] = "/tmp/test_dkim_XXXXXX";
static char txt_rsa[4096], txt_ed[256], txt_rsa1024[1024];

/* write_key - generate a key, save PEM, return the TXT record */
static void write_key(const char *type, int bits, const char *sel, char *txt, size_t cap)
{
	EVP_PKEY *pk = bits ? EVP_RSA_gen((unsigned)bits) : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(pk);
	char path[512];
	snprintf(path, sizeof(path), "%s/example.com/%s.%s.pem", keydir, sel, type);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	unsigned char der[2048], *p = der;
	size_t len = sizeof(der);
	if (bits)
		len = (size_t)i2d_PUBKEY(pk, &p);
	else
		EVP_PKEY_get_raw_public_key(pk, der, &len);
	unsigned char b64[3000];
	EVP_EncodeBlock(b64, der, (int)len);
	snprintf(txt, cap, "v=DKIM1; k=%s; p=%s", bits ? "rsa" : "ed25519", b64);
	EVP_PKEY_free(pk);
}

static int setup_keys(void **st)
{
	(void)st;
	char path[512];
	if (!mkdtemp(keydir))
		return -1;
	snprintf(path, sizeof(path), "%s/example.com", keydir);
	mkdir(path, 0700);
	write_key("rsa", 2048, "sel", txt_rsa, sizeof(txt_rsa));
	write_key("ed25519", 0, "sel", txt_ed, sizeof(txt_ed));
	write_key("rsa", 1024, "small", txt_rsa1024, sizeof(txt_rsa1024));
	return 0;
}

static int teardown_keys(void **st)
{
	(void)st;
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", keydir);
	return system(cmd) == 0 ? 0 : -1;
}

/* fake DNS: a record per selector kind; "temp" selector -> tempfail */
static const char *fake_rsa_txt, *fake_ed_txt;
static int fake_fetch(void *ctx, const char *name, dns_txt_cb cb, void *arg, void **handle)
{
	(void)ctx;
	*handle = NULL;
	struct dns_txt t[2];
	struct dns_txt_result r = {.status = DNS_OK, .name = name, .txts = t, .ntxts = 0};
	if (strcmp(name, "brisbane._domainkey.football.example.com") == 0) {
		static const char rfc[] = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
		t[0] = (struct dns_txt){rfc, sizeof(rfc) - 1};
		r.ntxts = 1;
		cb(&r, arg);
		return 0;
	}
	if (strcmp(name, "sel._domainkey.example.com") != 0)
		r.status = strncmp(name, "temp.", 5) == 0 ? DNS_TEMPFAIL : DNS_NXDOMAIN;
	if (fake_ed_txt)
		t[r.ntxts++] = (struct dns_txt){fake_ed_txt, strlen(fake_ed_txt)};
	if (fake_rsa_txt)
		t[r.ntxts++] = (struct dns_txt){fake_rsa_txt, strlen(fake_rsa_txt)};
	cb(&r, arg);
	return 0;
}

struct vres {
	struct dkim_sig_result r[DKIM_SIGS_MAX];
	size_t n;
	int called;
};
static void vres_cb(const struct dkim_sig_result *r, size_t n, void *arg)
{
	struct vres *v = arg;
	memcpy(v->r, r, n * sizeof(*r));
	v->n = n;
	v->called++;
}

/* verify_msg - verify msg in chunks of chunk bytes */
static void verify_msg(const char *msg, size_t chunk, enum dkim_l_policy lp, struct vres *out)
{
	struct dkim_verify *v = dkim_verify_new(lp, time(NULL));
	size_t n = strlen(msg);
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < n; i += chunk)
		assert_int_equal(dkim_verify_write(v, msg + i, n - i < chunk ? n - i : chunk), 0);
	struct dkim_fetcher f = {fake_fetch, NULL, NULL};
	assert_int_equal(dkim_verify_start(v, &f, vres_cb, out), 0);
	assert_int_equal(out->called, 1);
	dkim_verify_free(v);
}

static const char *msg1 =
	"From: Alice <alice@example.com>\r\n"
	"To: bob@example.net\r\n"
	"Subject:  Hello\r\n\tworld\r\n"
	"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
	"Message-ID: <1@example.com>\r\n"
	"List-Id: <x.example.com>\r\n"
	"X-Other: not signed\r\n"
	"\r\n"
	"Hi Bob,\r\n\r\n  this is  a test.\r\n\r\n\r\n";

/* sign_msg - signed message (malloc'd) */
static char *sign_msg(const char *msg, size_t chunk)
{
	char err[256];
	struct dkim_signkeys *k = dkim_sign_load(keydir, "example.com", "sel", err, sizeof(err));
	assert_non_null(k);
	struct dkim_sign *s = dkim_sign_new(k, time(NULL));
	size_t n = strlen(msg);
	for (size_t i = 0; i < n; i += chunk)
		assert_int_equal(dkim_sign_write(s, msg + i, n - i < chunk ? n - i : chunk), 0);
	struct strbuf out;
	strbuf_init(&out);
	assert_int_equal(dkim_sign_finish(s, &out, err, sizeof(err)), 0);
	strbuf_adds(&out, msg);
	dkim_sign_free(s);
	dkim_signkeys_free(k);
	return strbuf_detach(&out);
}

static void test_roundtrip(void **st)
{
	(void)st;
	struct vres r;
	char *sm = sign_msg(msg1, 5);
	assert_non_null(strstr(sm, "h=from:to:subject:date:message-id:list-id:from;"));
	assert_null(strstr(sm, "x-other"));
	fake_rsa_txt = txt_rsa;
	fake_ed_txt = txt_ed;
	for (size_t chunk = 1; chunk < 200; chunk += 67) {
		verify_msg(sm, chunk, DKIM_L_STRICT, &r);
		assert_int_equal(r.n, 2);
		for (size_t i = 0; i < 2; i++) {
			assert_int_equal(r.r[i].result, DKIM_PASS);
			assert_string_equal(r.r[i].domain, "example.com");
			assert_string_equal(r.r[i].selector, "sel");
		}
		assert_int_equal(r.r[0].alg, DKIM_ALG_ED25519_SHA256);
		assert_int_equal(r.r[1].alg, DKIM_ALG_RSA_SHA256);
	}
	/* LF-only copy of the same message still verifies */
	char *lf = strdup(sm);
	size_t o = 0;
	for (size_t i = 0; lf[i]; i++)
		if (!(lf[i] == '\r' && lf[i + 1] == '\n'))
			lf[o++] = lf[i];
	lf[o] = '\0';
	verify_msg(lf, 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.r[0].result, DKIM_PASS);
	assert_int_equal(r.r[1].result, DKIM_PASS);
	free(lf);

	/* tampered body */
	char *t = strdup(sm);
	*strstr(t, "Bob,") = 'R';
	verify_msg(t, 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.r[0].result, DKIM_FAIL);
	assert_int_equal(r.r[1].result, DKIM_FAIL);
	assert_non_null(strstr(r.r[0].reason, "body hash"));
	{
		struct strbuf ar;
		strbuf_init(&ar);
		dkim_result_ar(&r.r[0], &ar);
		assert_non_null(strstr(ar.s, "dkim=fail (body hash mismatch) header.d=example.com"));
		strbuf_free(&ar);
	}
	free(t);
	/* tampered header */
	t = strdup(sm);
	*strstr(t, "Hello") = 'J';
	verify_msg(t, 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.r[0].result, DKIM_FAIL);
	assert_int_equal(r.r[1].result, DKIM_FAIL);
	free(t);
	/* an unsigned header change is fine; a second From is not (oversigned) */
	size_t len = strlen(sm);
	t = malloc(len + 64);
	memcpy(t, sm, len + 1);
	char *body = strstr(t, "\r\n\r\n") + 2;
	memmove(body + 23, body, strlen(body) + 1);
	memcpy(body, "From: evil@exampl.org\r\n", 23);
	verify_msg(t, 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.r[0].result, DKIM_FAIL);
	assert_int_equal(r.r[1].result, DKIM_FAIL);
	free(t);
	/* wrong key published -> fail; missing key -> permerror */
	fake_ed_txt = NULL;
	fake_rsa_txt = txt_rsa;
	verify_msg(sm, 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.r[0].result, DKIM_PERMERROR); /* k=rsa for an ed25519 sig */
	assert_int_equal(r.r[1].result, DKIM_PASS);
	fake_rsa_txt = NULL;
	verify_msg(sm, 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.r[1].result, DKIM_PERMERROR);
	free(sm);
}

/* resign_with - replace "a sig field" by one built by hand: l= tests */
static void test_l_policy(void **st)
{
	(void)st;
	/* sign a message whose body is "short\r\n" with an l=7 handmade sig by
	 * signing the short message then appending text to the body */
	char *sm = sign_msg("From: a@example.com\r\n\r\nshort\r\n", 4096);
	fake_rsa_txt = txt_rsa;
	fake_ed_txt = txt_ed;
	struct vres r;
	verify_msg(sm, 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.r[0].result, DKIM_PASS);
	assert_int_equal(r.r[0].has_l, 0);
	/* no l= in our sigs: appended content fails the body hash */
	size_t n = strlen(sm);
	char *app = malloc(n + 32);
	memcpy(app, sm, n);
	strcpy(app + n, "APPENDED\r\n");
	verify_msg(app, 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.r[0].result, DKIM_FAIL);
	free(app);
	free(sm);
}

/* test_l_body - body hasher honours the limit and counts the total */
static void test_l_body(void **st)
{
	(void)st;
	struct dkim_body *b = dkim_body_new(DKIM_CANON_SIMPLE, "sha256", 7);
	unsigned char h[64], w[64];
	uint64_t total;
	dkim_body_write(b, "short\r\nAPPENDED\r\n", 17);
	dkim_body_finish(b, h, &total);
	dkim_body_free(b);
	EVP_Digest("short\r\n", 7, w, NULL, EVP_sha256(), NULL);
	assert_memory_equal(h, w, 32);
	assert_int_equal(total, 17);
}

/* test_verify_refusals - rsa-sha1, expired, no signature, small RSA key */
static void test_verify_refusals(void **st)
{
	(void)st;
	struct vres r;
	char err[256];
	verify_msg("From: a@example.com\r\n\r\nbody\r\n", 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.n, 0);
	verify_msg("DKIM-Signature: v=1; a=rsa-sha1; d=example.com; s=sel; h=from; bh=YWJj; b=ZGVm\r\n"
		   "From: a@example.com\r\n\r\nbody\r\n", 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.r[0].result, DKIM_PERMERROR);
	verify_msg("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=YWJj; b=ZGVm; x=5\r\n"
		   "From: a@example.com\r\n\r\nbody\r\n", 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.r[0].result, DKIM_PERMERROR);
	assert_non_null(strstr(r.r[0].reason, "expired"));
	verify_msg("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=temp; h=from; bh=YWJj; b=ZGVm\r\n"
		   "DKIM-Signature: garbage\r\n"
		   "From: a@example.com\r\n\r\nbody\r\n", 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.r[0].result, DKIM_TEMPERROR);
	assert_int_equal(r.r[1].result, DKIM_PERMERROR);
	/* oversized header section: the verifier reports nothing, the signer fails */
	{
		size_t big = DKIM_HEADER_MAX + 100;
		char *m = malloc(big + 64);
		strcpy(m, "From: a@example.com\r\nX-Big: ");
		size_t o = strlen(m);
		memset(m + o, 'x', big - o);
		strcpy(m + big, "\r\n\r\nbody\r\n");
		struct dkim_verify *v = dkim_verify_new(DKIM_L_STRICT, time(NULL));
		assert_int_equal(dkim_verify_write(v, m, strlen(m)), -1);
		struct dkim_fetcher f = {fake_fetch, NULL, NULL};
		memset(&r, 0, sizeof(r));
		assert_int_equal(dkim_verify_start(v, &f, vres_cb, &r), 0);
		assert_int_equal(r.called, 1);
		assert_int_equal(r.n, 0);
		dkim_verify_free(v);
		struct dkim_signkeys *k = dkim_sign_load(keydir, "example.com", "sel", err, sizeof(err));
		struct dkim_sign *s = dkim_sign_new(k, time(NULL));
		assert_int_equal(dkim_sign_write(s, m, strlen(m)), -1);
		dkim_sign_free(s);
		dkim_signkeys_free(k);
		free(m);
	}
	/* a 1024-bit key cannot be used for signing by Tern */
	assert_null(dkim_sign_load(keydir, "example.com", "small", err, sizeof(err)));
	assert_null(dkim_sign_load(keydir, "example.com", "nokey", err, sizeof(err)));
	assert_null(dkim_sign_load(keydir, "../etc", "sel", err, sizeof(err)));
}

/* RFC 8463 Appendix A.3: the signed example (Ed25519 part; the RSA key
 * of selector "test" is not published in the RFC, so that one is a
 * permerror here) */
static const char rfc8463_msg[] =
	"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
	" d=football.example.com; i=@football.example.com;\r\n"
	" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
	" subject : date : message-id : from : subject : date;\r\n"
	" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
	" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
	" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
	"From: Joe SixPack <joe@football.example.com>\r\n"
	"To: Suzie Q <suzie@shopping.example.net>\r\n"
	"Subject: Is dinner ready?\r\n"
	"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
	"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
	"\r\n"
	"Hi.\r\n"
	"\r\n"
	"We lost the game.  Are you hungry yet?\r\n"
	"\r\n"
	"Joe.\r\n";

/* a fetcher that never answers "hang." selectors (a silent DNS server)
 * and answers the rest as fake_fetch does */
static int hang_cancelled;
static int hang_fetch(void *ctx, const char *name, dns_txt_cb cb, void *arg, void **handle)
{
	if (strncmp(name, "hang.", 5) == 0) {
		*handle = (void *)name;
		return 0;
	}
	return fake_fetch(ctx, name, cb, arg, handle);
}
static void hang_cancel(void *handle)
{
	if (handle)
		hang_cancelled++;
}

/* test_verify_so_far - a deadline before every key answered: what was
 * decided stands, the signature still waiting is a temperror with its d=
 * (so that DMARC never refuses on a timeout of an aligned key) */
static void test_verify_so_far(void **st)
{
	(void)st;
	const char *msg = "DKIM-Signature: v=1; a=rsa-sha256; d=nokey.example; s=none; h=from; bh=YQ==; b=YQ==\r\n"
			  "DKIM-Signature: v=1; a=rsa-sha256; d=slow.example; s=hang; h=from; bh=YQ==; b=YQ==\r\n"
			  "From: a@slow.example\r\n\r\nbody\r\n";
	struct dkim_verify *v = dkim_verify_new(DKIM_L_STRICT, time(NULL));
	assert_int_equal(dkim_verify_write(v, msg, strlen(msg)), 0);
	struct vres out;
	memset(&out, 0, sizeof(out));
	struct dkim_fetcher f = {hang_fetch, hang_cancel, NULL};
	hang_cancelled = 0;
	assert_int_equal(dkim_verify_start(v, &f, vres_cb, &out), 0);
	assert_int_equal(out.called, 0); /* still waiting for slow.example */
	struct dkim_sig_result r[DKIM_SIGS_MAX];
	assert_int_equal(dkim_verify_so_far(v, r, DKIM_SIGS_MAX), 2);
	assert_int_equal(r[0].result, DKIM_PERMERROR);
	assert_string_equal(r[0].domain, "nokey.example");
	assert_int_equal(r[1].result, DKIM_TEMPERROR);
	assert_string_equal(r[1].domain, "slow.example");
	assert_string_equal(r[1].reason, "key lookup timed out");
	assert_int_equal(dkim_verify_so_far(v, r, 1), 1);
	dkim_verify_free(v);
	assert_int_equal(hang_cancelled, 1);
	assert_int_equal(out.called, 0);
}

static void test_rfc8463_vector(void **st)
{
	(void)st;
	struct vres r;
	for (size_t chunk = 1; chunk <= 4096; chunk *= 8) {
		verify_msg(rfc8463_msg, chunk, DKIM_L_STRICT, &r);
		assert_int_equal(r.n, 1);
		assert_int_equal(r.r[0].result, DKIM_PASS);
		assert_string_equal(r.r[0].domain, "football.example.com");
		assert_string_equal(r.r[0].selector, "brisbane");
		assert_string_equal(r.r[0].b_prefix, "/gCrinpc");
	}
	struct strbuf ar;
	strbuf_init(&ar);
	dkim_result_ar(&r.r[0], &ar);
	assert_string_equal(ar.s, "dkim=pass header.d=football.example.com header.s=brisbane "
				  "header.a=ed25519-sha256 header.b=\"/gCrinpc\"");
	strbuf_free(&ar);
	char *t = strdup(rfc8463_msg);
	*strstr(t, "hungry") = 'H';
	verify_msg(t, 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.r[0].result, DKIM_FAIL);
	free(t);
	t = strdup(rfc8463_msg);
	*strstr(t, "dinner") = 'D';
	verify_msg(t, 4096, DKIM_L_STRICT, &r);
	assert_int_equal(r.r[0].result, DKIM_FAIL);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_canon_rfc_example),
		cmocka_unit_test(test_canon_body_edges),
		cmocka_unit_test(test_sig_parse),
		cmocka_unit_test(test_key_parse),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_l_policy),
		cmocka_unit_test(test_l_body),
		cmocka_unit_test(test_verify_refusals),
		cmocka_unit_test(test_verify_so_far),
		cmocka_unit_test(test_rfc8463_vector),
	};
	return cmocka_run_group_tests(tests, setup_keys, teardown_keys);
}
