/*
 * fuzz_spf_record - the SPF record parser (spf_record_parse), macro
 * expander (spf_macro_expand), target-name escaping (spf_name_escape /
 * spf_name_unescape) and the Received-SPF writer (spf_received_header) on
 * hostile bytes, as DNS or a peer would hand them.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "policy/spf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* check_field - a Received-SPF field: CRLF only before a tab or at the end */
static void check_field(const struct strbuf *sb)
{
	if (sb->len < 2 || memcmp(sb->s + sb->len - 2, "\r\n", 2) != 0)
		abort();
	for (size_t i = 0; i + 2 < sb->len; i++) {
		unsigned char ch = (unsigned char)sb->s[i];
		if (ch == '\n' && sb->s[i + 1] != '\t')
			abort();
		if (ch == '\r' && sb->s[i + 1] != '\n')
			abort();
		if (ch < 0x20 && ch != '\r' && ch != '\n' && ch != '\t')
			abort();
		if (ch > 0x7e)
			abort();
	}
}

/* LLVMFuzzerTestOneInput - parse as a record, expand as both macro kinds,
 * escape and unescape as a name, write as the identities of a field */
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

	/* the bytes as a NUL-ended string: names and identities */
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	char name[1100], back[1100];
	if (spf_name_escape(s, name, sizeof(name)) == 0) {
		/* a round trip gives the text back when it is visible ASCII */
		if (spf_name_unescape(name, back, sizeof(back)) == 0 && strcmp(back, s) != 0)
			abort();
	}
	(void)spf_name_escape(s, name, 5);
	(void)spf_name_unescape(s, back, sizeof(back));
	(void)spf_name_unescape(s, back, 3);
	/* four identities cut from the input at NULs */
	const char *id[4] = {"", "", "", ""};
	size_t k = 0;
	for (const char *p = s; k < 4 && p <= s + size; p += strlen(p) + 1)
		id[k++] = p;
	struct strbuf sb;
	strbuf_init(&sb);
	spf_received_header((enum spf_result)(size % 9), id[0], id[1], id[2], id[3], &sb);
	check_field(&sb);
	strbuf_free(&sb);
	free(s);
	return 0;
}
