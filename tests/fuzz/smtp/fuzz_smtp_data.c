/*
 * fuzz_smtp_data - the DATA stream must not depend on how the input is cut
 * into reads. The first bytes of the input choose chunk sizes; the rest is
 * the stream, fed once whole and once in those chunks (and once one byte
 * at a time): status, consumed count, unstuffed output, flaws, header
 * state and Received count must be identical. Also checks that the output
 * never holds the end marker and is never longer than the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	char *out;
	size_t len, cap;
	size_t calls;
	enum smtp_data_status st;
	size_t consumed;
	struct smtp_data d;
};

static void sink(void *arg, const char *p, size_t n)
{
	struct run *r = arg;
	if (n == 0 || r->len + n > r->cap)
		abort();
	memcpy(r->out + r->len, p, n);
	r->len += n;
	r->calls++;
}

/* feed - cut the stream by sizes[] (cycled), 0 sizes meaning 1 octet */
static void feed(struct run *r, const char *p, size_t n, const uint8_t *sizes, size_t nsizes)
{
	size_t off = 0, k = 0;
	smtp_data_init(&r->d);
	r->st = SMTP_DATA_MORE;
	do {
		size_t chunk = n - off;
		if (nsizes > 0) {
			chunk = sizes[k++ % nsizes];
			if (chunk == 0)
				chunk = 1;
			if (chunk > n - off)
				chunk = n - off;
		}
		size_t used = (size_t)-1;
		r->st = smtp_data_feed(&r->d, p + off, chunk, &used, sink, r);
		if (used > chunk)
			abort();
		if (r->st == SMTP_DATA_END) {
			off += used;
			break;
		}
		if (used != chunk)
			abort();
		off += chunk;
	} while (off < n);
	r->consumed = off;
}

static void same(const struct run *a, const struct run *b)
{
	if (a->st != b->st || a->consumed != b->consumed || a->len != b->len ||
	    (a->len && memcmp(a->out, b->out, a->len) != 0) || a->d.flaws != b->d.flaws ||
	    a->d.received_count != b->d.received_count || a->d.in_headers != b->d.in_headers ||
	    a->d.out_bytes != b->d.out_bytes || a->d.out_bytes != a->len)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t nsizes = data[0] % 16;
	if (nsizes + 1 > size)
		nsizes = size - 1;
	const uint8_t *sizes = data + 1;
	const char *p = (const char *)data + 1 + nsizes;
	size_t n = size - 1 - nsizes;
	static const uint8_t one = 1;

	struct run w = {0}, c = {0}, b = {0};
	w.cap = c.cap = b.cap = n + 1;
	w.out = malloc(w.cap);
	c.out = malloc(c.cap);
	b.out = malloc(b.cap);
	if (!w.out || !c.out || !b.out)
		abort();
	feed(&w, p, n, NULL, 0);
	feed(&c, p, n, sizes, nsizes);
	feed(&b, p, n, &one, 1);
	same(&w, &c);
	same(&w, &b);
	if (w.st == SMTP_DATA_END) {
		/* the stream ended exactly on CRLF "." CRLF at a line start */
		if (w.consumed < 3 || memcmp(p + w.consumed - 3, ".\r\n", 3) != 0)
			abort();
		if (w.consumed > 3 && memcmp(p + w.consumed - 5, "\r\n", 2) != 0)
			abort();
		if (w.len > 0 && (w.len < 2 || memcmp(w.out + w.len - 2, "\r\n", 2) != 0))
			abort();
	}
	/* a single whole-buffer feed hands over few slices: one per dropped dot */
	if (w.calls > 1 + n / 3 + 1)
		abort();
	free(w.out);
	free(c.out);
	free(b.out);
	return 0;
}
