/*
 * fuzz_smtp_client - an outbound SMTP session driven by arbitrary server
 * bytes. Byte 0 picks the message and the peer's behaviour (BDAT, body
 * type, SMTPUTF8, TLS policy, paused output, DSN), byte 1 the recipient
 * count and the split points; the rest is what the server says, fed in
 * chunks, with timer, writable, TLS and next-message events in between,
 * and an EOF at the end.
 * Checks: no crash or leak; every message gets exactly one ->done; nothing
 * is written after close; and a recipient is DELIVERED only with a 2xx
 * reply from the server to the end of data (the dot or BDAT LAST), which
 * must have been written before.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	int closed;
	int eod;            /* end of data written in this transaction */
	int ndone, nstarted;
	int pause;
	int want_tls;
	int tls_pending;
	int idle_done;      /* last done said reusable */
	const char *content;
	size_t clen, cpos;
	int read_err;
	enum smtp_client_tls pol;
};

static void check(int ok)
{
	if (!ok)
		abort();
}

static int z_write(void *ctx, const char *p, size_t n)
{
	struct fz *f = ctx;
	check(!f->closed);
	check(n > 0);
	if ((n == 3 && memcmp(p, ".\r\n", 3) == 0) || (n >= 5 && memcmp(p + n - 5, "\r\n.\r\n", 5) == 0))
		f->eod = 1;
	if (n >= 12 && memcmp(p, "BDAT ", 5) == 0 && memcmp(p + n - 7, " LAST\r\n", 7) == 0)
		f->eod = 1;
	return f->pause;
}

static void z_close(void *ctx)
{
	struct fz *f = ctx;
	check(!f->closed);
	f->closed = 1;
}

static ssize_t z_read(void *ctx, char *buf, size_t cap)
{
	struct fz *f = ctx;
	if (f->read_err)
		return -1;
	size_t n = f->clen - f->cpos;
	if (n > cap)
		n = cap;
	if (n > 7)
		n = 7;
	memcpy(buf, f->content + f->cpos, n);
	f->cpos += n;
	return (ssize_t)n;
}

static void z_done(void *ctx, const struct smtp_client_result *r)
{
	struct fz *f = ctx;
	check(!f->closed);
	f->ndone++;
	check(f->ndone <= f->nstarted);
	for (size_t i = 0; i < r->nrcpts; i++) {
		const struct smtp_client_rcpt_result *x = &r->rcpts[i];
		check(strlen(x->text) < sizeof(x->text) && strlen(x->enh) < sizeof(x->enh));
		check(x->status <= SMTP_CLIENT_PERMFAIL);
		if (x->status == SMTP_CLIENT_DELIVERED) {
			check(f->eod);
			check(x->remote && x->code >= 200 && x->code < 300);
			check(x->stage == SMTP_CLIENT_STAGE_CONTENT);
		} else if (x->remote) {
			check(x->code >= 400 && x->code < 600);
			check((x->status == SMTP_CLIENT_PERMFAIL) == (x->code >= 500));
		}
	}
	f->eod = 0;
	f->idle_done = r->reusable;
}

static enum smtp_client_tls z_policy(void *ctx, int offered)
{
	struct fz *f = ctx;
	return f->pol;
}

static void z_starttls(void *ctx)
{
	struct fz *f = ctx;
	f->tls_pending = 1;
}

static const struct smtp_client_ops ops = {
	.write = z_write,
	.close = z_close,
	.content_read = z_read,
	.done = z_done,
	.tls_policy = z_policy,
	.starttls = z_starttls,
};

static const char *contents[] = {
	"Subject: x\r\n\r\nbody\r\n",
	".\r\n..\r\n.x",
	"",
	"a\rb\nc\r\n.",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t flags = data[0], b1 = data[1];
	const char *p = (const char *)data + 2;
	size_t n = size - 2;
	struct fz f = {0};
	struct envelope env;

	env_init(&env);
	env.sender = strdup((flags & 0x08) ? "s\xc3\xa9@a.test" : "s@a.test");
	env.body = (flags & 0x06) == 0x02 ? ENV_BODY_8BITMIME : (flags & 0x06) == 0x04 ? ENV_BODY_BINARYMIME : ENV_BODY_7BIT;
	env.smtputf8 = (flags & 0x08) != 0;
	if (flags & 0x80) {
		env.ret = ENV_RET_HDRS;
		env.envid = strdup("id+2B");
	}
	size_t nr = 1 + (b1 & 3);
	for (size_t i = 0; i < nr; i++) {
		char a[32] = "r0@b.test";
		a[1] = (char)('0' + i);
		env_rcpt_add(&env, a, (flags & 0x80) ? "o+=@x" : NULL, (unsigned)i);
	}
	f.content = contents[(b1 >> 2) & 3];
	f.clen = strlen(f.content);
	f.pause = (flags & 0x40) != 0;
	f.pol = (flags & 0x30) >> 4 == 1 ? SMTP_CLIENT_TLS_MAY : (flags & 0x30) >> 4 == 2 ? SMTP_CLIENT_TLS_MUST
											 : SMTP_CLIENT_TLS_NONE;
	struct smtp_client_params prm = {
		.helo_name = "client.test",
		.remote_host = "mx[192.0.2.1]",
		.env = &env,
		.size = f.clen,
		.prefer_bdat = flags & 1,
	};
	struct smtp_client *c = smtp_client_new(&prm, &ops, &f);
	check(c != NULL);
	f.nstarted = 1;
	unsigned seed = (unsigned)b1 * 2654435761u + 1;
	size_t pos = 0;
	while (pos < n) {
		seed = seed * 1103515245u + 12345u;
		size_t chunk = 1 + (seed >> 16) % 64;
		if (chunk > n - pos)
			chunk = n - pos;
		smtp_client_input(c, p + pos, chunk);
		pos += chunk;
		check(smtp_client_timeout_secs(c) > 0 || smtp_client_state(c) == SMTP_CLIENT_S_CLOSED);
		unsigned ev = (seed >> 8) & 31;
		if (f.tls_pending) {
			f.tls_pending = 0;
			smtp_client_tls_done(c, ev != 3);
		}
		if (f.pause && ev < 8)
			smtp_client_writable(c);
		if (ev == 9 && smtp_client_state(c) == SMTP_CLIENT_S_IDLE && f.nstarted < 3) {
			f.cpos = 0;
			check(f.idle_done);
			f.nstarted++; /* ->done may run inside smtp_client_next */
			if (smtp_client_next(c, &prm) != 0)
				f.nstarted--;
		}
		if (ev == 10 && (seed & 0x10000))
			smtp_client_timeout(c);
		if (ev == 11 && (seed & 0x30000) == 0x30000)
			smtp_client_quit(c);
	}
	smtp_client_eof(c);
	check(f.closed);
	check(f.ndone == f.nstarted);
	check(smtp_client_state(c) == SMTP_CLIENT_S_CLOSED);
	smtp_client_free(c);
	env_free(&env);
	return 0;
}
