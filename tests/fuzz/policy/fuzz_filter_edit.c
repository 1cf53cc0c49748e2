/*
 * fuzz_filter_edit - the filter's header section editor
 * (src/policy/filter_edit.c) on hostile stored content and hostile milter
 * edits.
 *
 * Input: byte 0: how the content is given (bit 0: complete or a prefix);
 * then the content up to the first 0x00 0xFF pair; then edits, each
 * "op index name NUL value NUL" (op byte % 4: add, insert, change, drop
 * ours; index one byte).
 *
 * Checks: no crash, leak or sanitizer report; on success the fields cover
 * exactly the parsed section; the written section has CRLF line ends only
 * and never an empty line (no edit can end the header section early or
 * smuggle a body line); a refused edit changes nothing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/filter_edit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* take - a NUL-terminated string from the input (cut at the end) */
static char *take(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *z = memchr(*p, 0, (size_t)(end - *p));
	size_t n = z ? (size_t)(z - *p) : (size_t)(end - *p);
	char *s = malloc(n + 1);
	if (s == NULL)
		abort();
	memcpy(s, *p, n);
	s[n] = '\0';
	*p += n + (z ? 1 : 0);
	return s;
}

/* snapshot - the written section */
static void snapshot(const struct filter_edit *e, struct strbuf *out)
{
	strbuf_reset(out);
	filter_edit_write(e, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int at_end = data[0] & 1;
	const uint8_t *p = data + 1, *end = data + size;
	const uint8_t *sep = NULL;
	for (const uint8_t *q = p; q + 1 < end; q++)
		if (q[0] == 0 && q[1] == 0xFF) {
			sep = q;
			break;
		}
	size_t clen = sep ? (size_t)(sep - p) : (size_t)(end - p);
	struct filter_edit e;
	filter_edit_init(&e);
	size_t off = 0;
	if (filter_edit_parse(&e, (const char *)p, clen, at_end, &off) < 0) {
		filter_edit_free(&e);
		return 0;
	}
	size_t sum = 0;
	for (size_t i = 0; i < e.n; i++)
		sum += e.v[i].len;
	if (sum != off || off > clen)
		abort();
	struct strbuf before, after;
	strbuf_init(&before);
	strbuf_init(&after);
	p = sep ? sep + 2 : end;
	while (p + 2 <= end) {
		uint8_t op = p[0] % 4, idx = p[1];
		p += 2;
		char *name = take(&p, end);
		char *value = take(&p, end);
		snapshot(&e, &before);
		int r = 0;
		switch (op) {
		case 0: r = filter_edit_add(&e, name, value); break;
		case 1: r = filter_edit_insert(&e, idx, name, value); break;
		case 2: r = filter_edit_change(&e, idx, name, value); break;
		default: (void)filter_edit_drop_ours(&e, value); break;
		}
		snapshot(&e, &after);
		if (r < 0 && (before.len != after.len || (before.len && memcmp(before.s, after.s, before.len))))
			abort(); /* a refused edit changed something */
		free(name);
		free(value);
	}
	snapshot(&e, &after);
	for (size_t i = 0; i < after.len; i++)
		if (after.s[i] == '\n' && (i == 0 || after.s[i - 1] != '\r'))
			abort();
	if (after.len && memmem(after.s, after.len, "\r\n\r\n", 4) != NULL)
		abort();
	if (after.len >= 2 && after.s[0] == '\r' && after.s[1] == '\n')
		abort();
	strbuf_free(&before);
	strbuf_free(&after);
	filter_edit_free(&e);
	return 0;
}
