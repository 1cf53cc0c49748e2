/*
 * fuzz_authres - libFuzzer target for authres.c: the input is parsed as an
 * Authentication-Results field (authserv-id, forged-field check against a
 * fixed id and against the id parsed from the input itself), and its
 * pieces (split at NUL bytes) are used as the authserv-id, a comment and
 * property values of a composed field. Invariants: the composed field
 * ends in CRLF, every other CRLF is followed by a tab, no other control
 * byte or 8-bit byte appears; a parsed id claims itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/authres.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_check - the composed field's invariants */
static void fuzz_check(const struct strbuf *f)
{
	if (f->len < 2 || f->s[f->len - 2] != '\r' || f->s[f->len - 1] != '\n')
		abort();
	for (size_t i = 0; i < f->len; i++) {
		unsigned char c = (unsigned char)f->s[i];
		if (c == '\r') {
			if (i + 1 >= f->len || f->s[i + 1] != '\n')
				abort();
			if (i + 2 < f->len && f->s[i + 2] != '\t')
				abort();
			i++;
		} else if (c == '\n' || (c < 0x20 && c != '\t') || c >= 0x7f) {
			abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	char id[AUTHRES_ID_MAX + 1];

	authres_field_is_ours(s, size, "mx.example.org");
	if (authres_parse_id(s, size, id, sizeof(id)) == 0) {
		if (strlen(id) == 0 || strlen(id) > AUTHRES_ID_MAX)
			abort();
		/* a plain id we read is claimed by the field */
		if (strcspn(id, " \t\r\n") == strlen(id) && strspn(id, ".") < strlen(id) &&
		    !authres_field_is_ours(s, size, id))
			abort();
	}

	/* pieces split at NUL bytes (at most 6) as hostile values */
	char *copy = malloc(size + 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	const char *pc[6] = {"", "", "", "", "", ""};
	size_t np = 0, at = 0;
	while (np < 6 && at <= size) {
		pc[np++] = copy + at;
		at += strlen(copy + at) + 1;
	}
	struct strbuf out;
	struct authres a;
	strbuf_init(&out);
	authres_begin(&a, &out, pc[0]);
	authres_method(&a, "spf", pc[1]);
	authres_prop(&a, "smtp.mailfrom", pc[2]);
	authres_method(&a, pc[3], "pass");
	authres_comment(&a, pc[4]);
	authres_prop(&a, pc[5], pc[2]);
	authres_prop(&a, "header.b", pc[4]);
	authres_end(&a);
	fuzz_check(&out);
	/* our own field claims our id (when the id survives cleaning) */
	if (pc[0][0] && strspn(pc[0], "abcdefghijklmnopqrstuvwxyz0123456789.-") == strlen(pc[0]) &&
	    strlen(pc[0]) < AUTHRES_VALUE_MAX && pc[0][0] != '.' && !authres_field_is_ours(out.s, out.len, pc[0]))
		abort();
	strbuf_free(&out);
	free(copy);
	return 0;
}
