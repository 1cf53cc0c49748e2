/*
 * spf_driver - run one SPF check_host() through Tern's SPF module, for
 * tests/integration/test_spf_suite.py.
 * Usage: spf_driver RESOLVER IP MAILFROM HELO
 * Prints "RESULT" and, on fail with an explanation, a tab and the text.
 * Trusts its arguments (a test tool).
 */
#include <event2/event.h>
#include <stdio.h>

#include <stdlib.h>

#include "core/log.h"
#include "dns/dns.h"
#include "policy/spf.h"

struct driver {
	struct event_base *base;
	int done;
};

/* driver_done - print the result and stop the loop */
static void driver_done(void *arg, enum spf_result r, const char *expl)
{
	struct driver *d = arg;
	printf("%s", spf_result_str(r));
	if (expl)
		printf("\t%s", expl);
	printf("\n");
	d->done = 1;
	event_base_loopbreak(d->base);
}

int main(int argc, char **argv)
{
	char err[256];
	struct driver d = {0};
	if (argc != 5) {
		fprintf(stderr, "usage: spf_driver RESOLVER IP MAILFROM HELO\n");
		return 2;
	}
	/* SPF_DRIVER_DEBUG=1 logs every DNS query to stderr */
	log_init("spf_driver", getenv("SPF_DRIVER_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERR);
	d.base = event_base_new();
	struct dns *dns = dns_new(d.base, argv[1], err, sizeof(err));
	if (!dns) {
		fprintf(stderr, "dns_new: %s\n", err);
		return 2;
	}
	dns_set_timeout(dns, 5000);
	struct spf_check *c = spf_check_start(dns, argv[2], argv[3], argv[4], "receiver.example", driver_done, &d);
	if (!c) {
		fprintf(stderr, "spf_check_start failed\n");
		return 2;
	}
	event_base_dispatch(d.base);
	dns_free(dns);
	event_base_free(d.base);
	return d.done ? 0 : 1;
}
