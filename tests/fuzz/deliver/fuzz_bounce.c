/*
 * fuzz_bounce - compose a DSN from fuzz-derived envelope fields,
 * diagnostics and original content, and check the output: CRLF line ends
 * only (no bare CR or LF), no line over 998 octets, no NUL, and no 8-bit
 * octet before the returned original. Also runs bounce_diag_parse.
 *
 * Input: fields separated by 0x00 in this order: to, envid, hostname,
 * then per recipient (up to 8) addr, orcpt, status, remote_mta, diag_type,
 * diag; the first byte picks RET and the actions; whatever follows a
 * 0x00 0x01 marker is the original content.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/bounce.h"

struct mem {
	const uint8_t *p;
	size_t n;
};

static ssize_t mem_read(void *arg, void *buf, size_t n, uint64_t off)
{
	struct mem *m = arg;
	if (off >= m->n)
		return 0;
	size_t k = m->n - off < n ? m->n - off : n;
	memcpy(buf, m->p + off, k);
	return (ssize_t)k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t sel = data[0];
	data++;
	size--;
	struct mem content = {(const uint8_t *)"", 0};
	const uint8_t *mark = NULL;
	for (size_t i = 0; i + 1 < size; i++)
		if (data[i] == 0 && data[i + 1] == 1) {
			mark = data + i;
			break;
		}
	size_t flen = size;
	if (mark) {
		flen = (size_t)(mark - data);
		content.p = mark + 2;
		content.n = size - flen - 2;
	}
	/* split the field area on NUL into C strings */
	char *buf = malloc(flen + 1);
	memcpy(buf, data, flen);
	buf[flen] = '\0';
	char *fields[3 + 8 * 6];
	size_t nf = 0;
	char *p = buf;
	while (nf < sizeof(fields) / sizeof(fields[0])) {
		fields[nf++] = p;
		char *z = memchr(p, '\0', (size_t)(buf + flen - p));
		if (z == NULL || z >= buf + flen)
			break;
		p = z + 1;
	}
	while (nf < 3)
		fields[nf++] = "";
	struct bounce_rcpt r[8];
	size_t nr = 0;
	for (size_t k = 3; k + 5 < nf + 5 && nr < 8 && k < nf; k += 6) {
		memset(&r[nr], 0, sizeof(r[nr]));
		r[nr].addr = fields[k];
		r[nr].orcpt = k + 1 < nf ? fields[k + 1] : NULL;
		r[nr].status = k + 2 < nf ? fields[k + 2] : NULL;
		r[nr].remote_mta = k + 3 < nf ? fields[k + 3] : NULL;
		r[nr].diag_type = k + 4 < nf ? fields[k + 4] : NULL;
		r[nr].diag = k + 5 < nf ? fields[k + 5] : NULL;
		r[nr].action = (enum bounce_action)((sel >> (nr % 4)) % 5);
		r[nr].last_attempt = (time_t)(sel * 1000003);
		r[nr].retry_until = (time_t)(sel * 7919);
		nr++;
	}
	if (nr == 0) {
		memset(&r[0], 0, sizeof(r[0]));
		r[0].addr = fields[0];
		nr = 1;
	}
	struct bounce_req b = {
		.hostname = fields[2],
		.to = fields[0],
		.orig_qid = "0123456789ABCDEF",
		.envid = fields[1],
		.arrival = 1700000000,
		.now = 1700000001,
		.ret = (enum env_ret)(sel % 3),
		.postmaster_copy = (sel & 0x80) != 0,
		.rcpts = r,
		.nrcpts = nr,
		.read = (sel & 0x40) ? NULL : mem_read,
		.read_arg = &content,
		.content_len = content.n,
		.full_max = (sel & 0x20) ? 64 : 0,
	};
	struct strbuf out;
	strbuf_init(&out);
	char err[128];
	if (bounce_compose(&b, &out, NULL, err, sizeof(err)) != 0)
		abort();
	size_t col = 0;
	for (size_t i = 0; i < out.len; i++) {
		unsigned char c = (unsigned char)out.s[i];
		if (c == '\0')
			abort();
		if (c == '\r') {
			if (i + 1 >= out.len || out.s[i + 1] != '\n')
				abort(); /* bare CR */
			i++;
			col = 0;
			continue;
		}
		if (c == '\n')
			abort(); /* bare LF */
		if (++col > 998)
			abort();
	}
	if (col != 0)
		abort();
	/* outside the returned original everything is 7-bit */
	/* the earlier of the two markers: the original itself may contain the
	 * other one (found by this fuzzer: a harness bug, not a bounce bug) */
	const char *orig = strstr(out.s, "Content-Type: message/rfc822\r\n");
	const char *hdrs = strstr(out.s, "Content-Type: text/rfc822-headers\r\n");
	if (orig == NULL || (hdrs != NULL && hdrs < orig))
		orig = hdrs;
	size_t lim = orig ? (size_t)(orig - out.s) : out.len;
	for (size_t i = 0; i < lim; i++)
		if ((unsigned char)out.s[i] >= 0x80)
			abort();
	strbuf_free(&out);

	char st[16], mta[64], diag[128];
	int smtp;
	bounce_diag_parse(fields[0], "5.0.0", st, sizeof(st), mta, sizeof(mta), diag, sizeof(diag), &smtp);
	if (strlen(st) >= sizeof(st) || strlen(mta) >= sizeof(mta) || strlen(diag) >= sizeof(diag))
		abort();
	free(buf);
	return 0;
}
