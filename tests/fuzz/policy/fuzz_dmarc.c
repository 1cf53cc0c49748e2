/*
 * fuzz_dmarc - libFuzzer target for the DMARC parsers (dmarc.c): the input
 * is parsed as a DMARC TXT record, as a header section and as one From
 * field value (RFC5322.From extraction), as a domain (normalization,
 * organisational domain, alignment), and the parsed record drives an
 * evaluation. Invariants: no crash, no overrun, no leak; an accepted From
 * domain is a normalized domain again; record values within their ranges.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/dmarc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_check_domain - d must be a normalized domain (rc 0 or 1 again) */
static void fuzz_check_domain(const char *d, int want)
{
	char again[DMARC_DOMAIN_MAX + 1];
	size_t n = strlen(d);
	if (n == 0 || n > DMARC_DOMAIN_MAX)
		abort();
	if (dmarc_domain_normalize(d, n, again, sizeof(again)) != want || strcmp(again, d) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	char err[160], dom[DMARC_DOMAIN_MAX + 1], org[DMARC_DOMAIN_MAX + 1];
	struct dmarc_discovery d;
	memset(&d, 0, sizeof(d));

	enum dmarc_rec_status st = dmarc_record_parse(s, size, &d.rec, err, sizeof(err));
	if (st == DMARC_REC_OK) {
		const struct dmarc_record *r = &d.rec;
		if (r->pct > 100 || r->p > DMARC_P_REJECT || r->sp > DMARC_P_REJECT ||
		    strlen(r->rua) > DMARC_URI_MAX || strlen(r->ruf) > DMARC_URI_MAX || strlen(r->fo) >= sizeof(r->fo))
			abort();
		if (strchr(r->rua, '\r') || strchr(r->rua, '\n') || strchr(r->ruf, '\r'))
			abort();
	}

	int rc = dmarc_from_domain(s, size, dom, sizeof(dom), err, sizeof(err));
	if (rc >= 0)
		fuzz_check_domain(dom, rc);
	rc = dmarc_from_value(s, size, dom, sizeof(dom), err, sizeof(err));
	if (rc >= 0)
		fuzz_check_domain(dom, rc);

	rc = dmarc_domain_normalize(s, size, dom, sizeof(dom));
	if (rc == 0) {
		fuzz_check_domain(dom, 0);
		if (dmarc_org_domain(dom, org, sizeof(org)) == 0) {
			/* the org domain is the domain or one of its parents */
			size_t dl = strlen(dom), ol = strlen(org);
			if (ol > dl || strcmp(dom + dl - ol, org) != 0 || (ol < dl && dom[dl - ol - 1] != '.'))
				abort();
		}
		if (!dmarc_aligned(dom, dom, DMARC_ALIGN_STRICT))
			abort();
		/* evaluate with the record (if any) at this domain */
		d.status = st == DMARC_REC_OK ? DMARC_DISC_FOUND : st == DMARC_REC_INVALID ? DMARC_DISC_INVALID
											: DMARC_DISC_NONE;
		snprintf(d.domain, sizeof(d.domain), "%s", dom);
		struct dkim_sig_result sig;
		memset(&sig, 0, sizeof(sig));
		sig.result = size % 2 ? DKIM_PASS : DKIM_FAIL;
		snprintf(sig.domain, sizeof(sig.domain), "%s", org);
		struct dmarc_eval e = {dom, SPF_FAIL, "example.invalid", &sig, 1, &d, (unsigned)size % 100};
		struct dmarc_outcome o;
		dmarc_evaluate(&e, &o);
		if (o.result == DMARC_RESULT_PASS && o.disposition != DMARC_P_NONE)
			abort();
		if (o.result != DMARC_RESULT_FAIL && o.disposition != DMARC_P_NONE)
			abort();
	}
	return 0;
}
