/*
 * fuzz_spf_record - the SPF record parser (spf_record_parse) and macro
 * expander (spf_macro_expand) on hostile bytes, as DNS would hand them.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "policy/spf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - parse as a record, expand as both macro kinds */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct spf_record rec;
	static const struct spf_macro_ctx ctx = {
		.sender = "strong-bad@email.example.com", .local = "strong-bad",
		.sender_domain = "email.example.com", .domain = "email.example.com",
		.ip = "2001:db8::cb01", .ipv6 = 1,
		.ipbytes = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xcb, 0x01},
		.helo = "mx.example.org", .receiver = "rx.example", .timestamp = 1234567890};
	char out[512];
	const char *txt = (const char *)data;

	(void)spf_record_parse(txt, size, &rec);
	for (size_t i = 0; i < rec.nterms && i < SPF_TERMS_MAX; i++)
		if (rec.terms[i].spec)
			(void)spf_macro_expand(rec.terms[i].spec, rec.terms[i].speclen, &ctx, 0, out, sizeof(out));
	(void)spf_macro_expand(txt, size, &ctx, 0, out, sizeof(out));
	(void)spf_macro_expand(txt, size, &ctx, 1, out, 7);
	return 0;
}
