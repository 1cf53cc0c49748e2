/*
 * fuzz_smtp_reply - the SMTP reply parser on arbitrary bytes at arbitrary
 * split points. The first byte seeds the split points; the rest is what a
 * server says. Checks: the split parse gives exactly the replies and the
 * final status of the whole parse, every reply is well-formed, and the
 * text and EHLO helpers stay in bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_replyparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXREP 64

struct seen {
	int code[MAXREP];
	size_t nlines[MAXREP];
	size_t nstored[MAXREP];
	uint32_t hash[MAXREP];
	size_t n;
	enum smtp_replyparse_status last;
};

static void check(int ok)
{
	if (!ok)
		abort();
}

/* rep_check - invariants of one reply; returns a hash of its stored text */
static uint32_t rep_check(const struct smtp_rep *r)
{
	static char text[300];
	static struct smtp_caps caps;
	uint32_t h = 2166136261u;

	check(r->code >= 200 && r->code <= 559 && (r->code / 10) % 10 <= 5);
	check(r->nlines >= 1 && r->nlines <= SMTP_REP_LINES_MAX);
	check(r->nstored <= r->nlines && (r->nstored == r->nlines) == !r->truncated);
	check(r->nstored >= 1); /* the first line always fits */
	check(strlen(r->enh) < SMTP_REP_ENH_MAX);
	if (r->enh[0])
		check(r->enh[0] - '0' == r->code / 100);
	for (size_t i = 0; i < r->nstored; i++) {
		check(r->line_off[i] < SMTP_REP_TEXT_MAX);
		const char *l = smtp_rep_line(r, i);
		size_t len = strlen(l);
		check(r->line_off[i] + len < SMTP_REP_TEXT_MAX);
		for (size_t k = 0; k < len; k++)
			h = (h ^ (uint8_t)l[k]) * 16777619u;
		h = (h ^ 0xff) * 16777619u;
	}
	size_t tl = smtp_replyparse_text(r, text, sizeof(text));
	check(tl < sizeof(text) && strlen(text) == tl);
	for (size_t k = 0; k < tl; k++)
		check(text[k] >= 0x20 && text[k] < 0x7f);
	smtp_replyparse_ehlo(r, &caps);
	check(strlen(caps.auth) < sizeof(caps.auth));
	return h;
}

/* run - parse with chunk sizes from the seed (0: whole) */
static void run(const uint8_t *p, size_t n, unsigned seed, struct seen *s)
{
	static struct smtp_replyparse rp;
	static struct smtp_rep r;
	size_t pos = 0;

	smtp_replyparse_init(&rp);
	s->n = 0;
	s->last = SMTP_REPLYPARSE_NEED_MORE;
	while (pos < n) {
		size_t chunk = n - pos;
		if (seed) {
			seed = seed * 1103515245u + 12345u;
			size_t c = 1 + (seed >> 16) % 17;
			if (c < chunk)
				chunk = c;
		}
		/* feed the chunk until it is used up */
		size_t off = 0;
		while (off < chunk) {
			size_t used = 0;
			enum smtp_replyparse_status st =
				smtp_replyparse_feed(&rp, (const char *)p + pos + off, chunk - off, &used, &r);
			check(used <= chunk - off);
			s->last = st;
			if (st == SMTP_REPLYPARSE_ERROR)
				return;
			if (st == SMTP_REPLYPARSE_NEED_MORE) {
				check(used == chunk - off);
				check(smtp_replyparse_midline(&rp) || chunk - off == 0);
			} else {
				check(used > 0);
				if (s->n < MAXREP) {
					s->code[s->n] = r.code;
					s->nlines[s->n] = r.nlines;
					s->nstored[s->n] = r.nstored;
					s->hash[s->n] = rep_check(&r);
				}
				s->n++;
			}
			off += used;
		}
		pos += chunk;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct seen whole, split;

	if (size < 1)
		return 0;
	unsigned seed = data[0] | 1u;
	run(data + 1, size - 1, 0, &whole);
	run(data + 1, size - 1, seed, &split);
	check(whole.n == split.n && whole.last == split.last);
	for (size_t i = 0; i < whole.n && i < MAXREP; i++) {
		check(whole.code[i] == split.code[i] && whole.nlines[i] == split.nlines[i]);
		check(whole.nstored[i] == split.nstored[i] && whole.hash[i] == split.hash[i]);
	}
	return 0;
}
