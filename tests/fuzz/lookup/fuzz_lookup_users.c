/*
 * fuzz_lookup_users - users_file parsing from arbitrary bytes; when the
 * table loads, look up names taken from the input and fixed ones.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "core/log.h"
#include "lookup/lookup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int inited;
	if (!inited) {
		log_init("fuzz", LOG_LEVEL_CRIT);
		inited = 1;
	}
	struct strbuf errs;
	strbuf_init(&errs);
	struct lookup_tables *t = lookup_load_text((const char *)data, size, NULL, 0, &errs);
	if (t != NULL) {
		/* every account named in the input must be found again by its own name */
		const char *p = (const char *)data, *end = p + size;
		while (p < end) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			const char *le = nl ? nl : end;
			const char *colon = memchr(p, ':', (size_t)(le - p));
			const char *ue = colon ? colon : le;
			char user[600];
			size_t n = (size_t)(ue - p);
			if (n < sizeof(user)) {
				memcpy(user, p, n);
				user[n] = '\0';
				char *at = strrchr(user, '@');
				if (at && user[0] != '#') {
					*at = '\0';
					(void)lookup_user(t, user, at + 1);
					*at = '@';
					(void)lookup_password_hash(t, user);
				}
			}
			p = nl ? nl + 1 : end;
		}
		(void)lookup_user(t, "alice+tag", "example.test");
		(void)lookup_user(t, "", "");
		(void)lookup_password_hash(t, "@");
		(void)lookup_users_count(t);
		lookup_free(t);
	}
	strbuf_free(&errs);
	return 0;
}
