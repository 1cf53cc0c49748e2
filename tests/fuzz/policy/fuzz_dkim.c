/*
 * fuzz_dkim - libFuzzer target for the DKIM parsers (dkim.c): the input is
 * parsed as a DKIM-Signature value and as a key TXT record, canonicalized
 * as a header field, and fed (split at its first byte's value) through the
 * verifier with a fetcher answering the input itself as the key record.
 * Invariants: no crash, no overrun, no leak; parsed fields NUL-terminated
 * and within their caps.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/dkim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t *fz_data;
static size_t fz_size;

/* fuzz_fetch - answer with the fuzz input as the TXT record */
static int fuzz_fetch(void *ctx, const char *name, dns_txt_cb cb, void *arg, void **handle)
{
	(void)ctx;
	*handle = NULL;
	struct dns_txt t = {(const char *)fz_data, fz_size};
	struct dns_txt_result r = {.status = DNS_OK, .name = name, .txts = &t, .ntxts = 1};
	cb(&r, arg);
	return 0;
}

/* fuzz_done - results must be well-formed */
static void fuzz_done(const struct dkim_sig_result *r, size_t n, void *arg)
{
	(void)arg;
	if (n > DKIM_SIGS_MAX)
		abort();
	for (size_t i = 0; i < n; i++)
		if (strlen(r[i].domain) > DKIM_DOMAIN_MAX || r[i].result == DKIM_NONE)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dkim_sig sig;
	static struct dkim_key key;
	char err[128];
	if (dkim_sig_parse((const char *)data, size, &sig, err, sizeof(err)) == 0) {
		if (strlen(sig.d) > DKIM_DOMAIN_MAX || sig.nh > DKIM_H_MAX || sig.blen > DKIM_B_MAX)
			abort();
	}
	if (dkim_key_parse((const char *)data, size, &key, err, sizeof(err)) == 0 && key.plen > DKIM_KEY_MAX)
		abort();
	struct strbuf sb;
	strbuf_init(&sb);
	dkim_canon_header(DKIM_CANON_RELAXED, (const char *)data, size, &sb);
	strbuf_free(&sb);

	fz_data = data;
	fz_size = size;
	struct dkim_verify *v = dkim_verify_new(size && data[0] & 1 ? DKIM_L_LENIENT : DKIM_L_STRICT, 1000);
	static const char pre[] = "DKIM-Signature: ";
	size_t cut = size ? data[0] % (size + 1) : 0;
	dkim_verify_write(v, pre, sizeof(pre) - 1);
	dkim_verify_write(v, (const char *)data, cut);
	dkim_verify_write(v, (const char *)data + cut, size - cut);
	struct dkim_fetcher f = {fuzz_fetch, NULL, NULL};
	dkim_verify_start(v, &f, fuzz_done, NULL);
	dkim_verify_free(v);
	return 0;
}
