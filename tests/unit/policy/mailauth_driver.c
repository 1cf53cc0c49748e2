/*
 * mailauth_driver - run one message through Tern's mail authentication
 * (src/policy/mailauth.c) against a real DNS server, for
 * tests/integration/test_mailauth.py (not a unit test).
 *
 * Usage: mailauth_driver RESOLVER IP HELO MAILFROM [options] < message
 *   --authserv ID        authserv-id (default mx.tern.test)
 *   --sign KEYDIR SEL    sign (with keys KEYDIR/<domain>/SEL.*.pem)
 *   --no-verify          do not verify (SPF, DKIM, DMARC)
 *   --no-enforce         dmarc_enforce = no
 *   --roll N             the pct= random draw (0..99) instead of random
 *   --timeout MS         mailauth's deadline
 * MAILFROM "" is the null path. The message is read in 4 KB chunks.
 * Prints "verdict=", "reply=", "quarantine=", "forged_ar=", "sign_domain=",
 * "summary=" lines, then "prepend:" and the fields to prepend; then the
 * signed message when signing (after "message:").
 * Trusts its arguments (a test tool).
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "dns/dns.h"
#include "policy/mailauth.h"

struct driver {
	struct event_base *base;
	int done;
	struct strbuf msg;
};

static unsigned driver_roll;

/* driver_random - the fixed pct= draw */
static unsigned driver_random(void *ctx)
{
	(void)ctx;
	return driver_roll;
}

/* driver_done - print the result and stop the loop */
static void driver_done(void *arg, struct mailauth_result *r)
{
	struct driver *d = arg;
	printf("verdict=%s\n", smtp_verdict_kind_str(r->verdict.kind));
	printf("reply=%s\n", r->verdict.reply);
	printf("quarantine=%d\n", r->quarantine);
	printf("forged_ar=%d\n", r->forged_ar);
	printf("sign_domain=%s\n", r->sign_domain);
	printf("summary=%s\n", r->summary);
	printf("prepend:\n");
	fwrite(r->prepend.s ? r->prepend.s : "", 1, r->prepend.len, stdout);
	if (r->sign_domain[0]) {
		printf("message:\n");
		fwrite(r->prepend.s, 1, r->prepend.len, stdout);
		fwrite(d->msg.s, 1, d->msg.len, stdout);
	}
	d->done = 1;
	event_base_loopbreak(d->base);
}

int main(int argc, char **argv)
{
	char err[256], chunk[4096];
	struct driver d = {0};
	struct mailauth_conf c = {0};
	size_t n;

	if (argc < 5) {
		fprintf(stderr, "usage: mailauth_driver RESOLVER IP HELO MAILFROM [options] < message\n");
		return 2;
	}
	log_init("mailauth_driver", getenv("MAILAUTH_DRIVER_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO);
	c.authserv_id = "mx.tern.test";
	c.verify = 1;
	c.dmarc_enforce = 1;
	for (int i = 5; i < argc; i++) {
		if (strcmp(argv[i], "--authserv") == 0 && i + 1 < argc) {
			c.authserv_id = argv[++i];
		} else if (strcmp(argv[i], "--sign") == 0 && i + 2 < argc) {
			c.sign = 1;
			c.dkim_key_dir = argv[++i];
			c.dkim_selector = argv[++i];
		} else if (strcmp(argv[i], "--no-verify") == 0) {
			c.verify = 0;
		} else if (strcmp(argv[i], "--no-enforce") == 0) {
			c.dmarc_enforce = 0;
		} else if (strcmp(argv[i], "--roll") == 0 && i + 1 < argc) {
			driver_roll = (unsigned)atoi(argv[++i]);
			c.random100 = driver_random;
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			c.timeout_ms = (unsigned)atoi(argv[++i]);
		} else {
			fprintf(stderr, "mailauth_driver: bad option %s\n", argv[i]);
			return 2;
		}
	}
	d.base = event_base_new();
	struct dns *dns = dns_new(d.base, argv[1], err, sizeof(err));
	if (!dns) {
		fprintf(stderr, "dns_new: %s\n", err);
		return 2;
	}
	dns_set_timeout(dns, 5000);
	c.base = d.base;
	c.dns = dns;
	strbuf_init(&d.msg);
	struct mailauth *m = mailauth_new(&c, argv[2], argv[3], argv[4]);
	mailauth_set_qid(m, "DRIVERQID");
	while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
		mailauth_write(m, chunk, n);
		strbuf_add(&d.msg, chunk, n);
	}
	mailauth_finish(m, driver_done, &d);
	event_base_dispatch(d.base);
	mailauth_free(m);
	strbuf_free(&d.msg);
	dns_free(dns);
	event_base_free(d.base);
	return d.done ? 0 : 1;
}
