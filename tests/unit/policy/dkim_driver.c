/*
 * dkim_driver - test driver for interop (not a unit test):
 *   dkim_driver sign KEYDIR DOMAIN SELECTOR < msg   -> signed message on stdout
 *   dkim_driver verify KEYFILE [lenient] < msg      -> one line per signature:
 *       "RESULT d=DOMAIN s=SELECTOR a=ALG reason=..."
 * KEYFILE lines: "<selector>._domainkey.<domain> <TXT record>" (the fake DNS).
 * Reads the message in 4 KB chunks to exercise the streaming API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy/dkim.h"

static const char *driver_keyfile;

/* driver_fetch - answer from KEYFILE synchronously */
static int driver_fetch(void *ctx, const char *name, dns_txt_cb cb, void *arg, void **handle)
{
	(void)ctx;
	*handle = NULL;
	FILE *f = fopen(driver_keyfile, "r");
	static char line[8192];
	struct dns_txt txt;
	struct dns_txt_result res = {.status = DNS_NXDOMAIN, .name = name};
	while (f && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		size_t nl = strlen(name);
		if (strncmp(line, name, nl) == 0 && line[nl] == ' ') {
			txt.data = line + nl + 1;
			txt.len = strlen(txt.data);
			res.status = DNS_OK;
			res.txts = &txt;
			res.ntxts = 1;
			break;
		}
	}
	if (f)
		fclose(f);
	cb(&res, arg);
	return 0;
}

/* driver_done - print results */
static void driver_done(const struct dkim_sig_result *r, size_t n, void *arg)
{
	(void)arg;
	if (n == 0)
		printf("none\n");
	for (size_t i = 0; i < n; i++)
		printf("%s d=%s s=%s a=%s l_partial=%d reason=%s\n", dkim_result_str(r[i].result), r[i].domain,
		       r[i].selector, dkim_alg_str(r[i].alg), r[i].l_partial, r[i].reason);
}

int main(int argc, char **argv)
{
	char chunk[4096], err[256];
	size_t n;
	if (argc == 5 && strcmp(argv[1], "sign") == 0) {
		struct dkim_signkeys *k = dkim_sign_load(argv[2], argv[3], argv[4], err, sizeof(err));
		if (!k) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		struct dkim_sign *s = dkim_sign_new(k, time(NULL));
		struct strbuf msg, out;
		strbuf_init(&msg);
		strbuf_init(&out);
		while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
			strbuf_add(&msg, chunk, n); /* kept only to print it after */
			if (dkim_sign_write(s, chunk, n) < 0)
				return 1;
		}
		if (dkim_sign_finish(s, &out, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		fwrite(out.s, 1, out.len, stdout);
		fwrite(msg.s, 1, msg.len, stdout);
		strbuf_free(&msg);
		strbuf_free(&out);
		dkim_sign_free(s);
		dkim_signkeys_free(k);
		return 0;
	}
	if ((argc == 3 || argc == 4) && strcmp(argv[1], "verify") == 0) {
		driver_keyfile = argv[2];
		int lenient = argc == 4 && strcmp(argv[3], "lenient") == 0;
		struct dkim_verify *v = dkim_verify_new(lenient ? DKIM_L_LENIENT : DKIM_L_STRICT, time(NULL));
		while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
			if (dkim_verify_write(v, chunk, n) < 0)
				return 1;
		struct dkim_fetcher f = {driver_fetch, NULL, NULL};
		dkim_verify_start(v, &f, driver_done, NULL);
		dkim_verify_free(v);
		return 0;
	}
	fprintf(stderr, "usage: dkim_driver sign KEYDIR DOMAIN SELECTOR | verify KEYFILE [lenient]\n");
	return 2;
}
