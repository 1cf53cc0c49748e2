/*
 * fuzz_dns_rdata - libFuzzer target for the pure DNS parsers (dns_parse.c):
 * the input is used as a wire name, MX, TXT, A and AAAA rdata, and (as
 * text) an address literal / bare address / host name. Invariants: no
 * crash or overrun, names come out as printable ASCII only, TXT output
 * never longer than the rdata.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dns_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_printable - abort unless s is printable ASCII without spaces */
static void fuzz_printable(const char *s)
{
	for (; *s; s++)
		if (*s <= ' ' || *s >= 0x7f)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char name[DNS_NAME_TEXT_MAX];
	size_t used = 0;
	unsigned pref;
	struct dns_addr a;

	if (dns_parse_name(data, size, &used, name, sizeof(name)) == 0) {
		if (used > size || used > DNS_NAME_WIRE_MAX)
			abort();
		fuzz_printable(name);
		(void)dns_parse_hostname_ok(name);
	}
	/* a small output buffer must be refused, never overrun */
	char small[8];
	(void)dns_parse_name(data, size, &used, small, sizeof(small));
	if (dns_parse_mx(data, size, &pref, name, sizeof(name)) == 0) {
		if (pref > 65535)
			abort();
		fuzz_printable(name);
	}
	char *txt = malloc(size + 1);
	size_t tlen = 0;
	if (txt && dns_parse_txt(data, size, txt, size + 1, &tlen) == 0 && tlen >= size)
		abort();
	free(txt);
	(void)dns_parse_a(data, size, AF_INET, &a);
	(void)dns_parse_a(data, size, AF_INET6, &a);

	char *s = malloc(size + 1);
	if (s) {
		memcpy(s, data, size);
		s[size] = '\0';
		if (dns_parse_literal(s, &a) == 0)
			fuzz_printable(a.text);
		(void)dns_parse_ip(s, &a);
		(void)dns_parse_hostname_ok(s);
		free(s);
	}
	return 0;
}
