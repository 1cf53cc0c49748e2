/*
 * fuzz_conf - the configuration parser on arbitrary bytes: must return a
 * verdict with error lines, never crash or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "conf/conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf c;
	struct strbuf errs;
	strbuf_init(&errs);
	int r = conf_load_mem(&c, "fuzz.conf", (const char *)data, size, NULL, 0, &errs);
	if (r < 0 && (errs.s == NULL || strstr(errs.s, "fuzz.conf:") == NULL))
		__builtin_trap(); /* every failure must name the file */
	conf_free(&c);
	strbuf_free(&errs);
	return 0;
}
