/*
 * fuzz_lookup_aliases - aliases_file parsing from arbitrary bytes; when it
 * loads, resolve every alias named in the input (and a few fixed RCPTs)
 * through lookup_rcpt, which must terminate whatever the alias graph.
 * The input is split at the first "\n---\n": users text before it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "core/log.h"
#include "lookup/lookup.h"
#include "queue/envelope.h"
#include "smtp/smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct conf fuzz_conf;

/* fuzz_rcpt - resolve one "<...>" path if it parses */
static void fuzz_rcpt(const struct lookup_tables *t, const char *s, size_t n, struct envelope *env)
{
	struct smtp_path p;
	memset(&p, 0, sizeof(p));
	const char *detail;
	if (smtp_parse_path(s, n, 0, &p, &detail) != SMTP_PARSE_OK)
		return;
	(void)lookup_rcpt(t, &fuzz_conf, &p, 0, env, NULL, 0);
	(void)lookup_rcpt(t, &fuzz_conf, &p, 1, env, "rfc822;x@y", 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int inited;
	if (!inited) {
		log_init("fuzz", LOG_LEVEL_CRIT);
		char *ov[] = {"local_domains=example.test, localhost", "hostname=mx.example.test",
			      "postmaster=admin@example.test"};
		struct strbuf e;
		strbuf_init(&e);
		if (conf_load(&fuzz_conf, "/dev/null", ov, 3, &e) != 0)
			abort();
		strbuf_free(&e);
		inited = 1;
	}
	const char *text = (const char *)data;
	const char *users = NULL, *aliases = text;
	size_t ulen = 0, alen = size;
	const char *sep = memmem(text, size, "\n---\n", 5);
	if (sep != NULL) {
		users = text;
		ulen = (size_t)(sep - text);
		aliases = sep + 5;
		alen = size - ulen - 5;
	}
	struct strbuf errs;
	strbuf_init(&errs);
	struct lookup_tables *t = lookup_load_text(users, ulen, aliases, alen, &errs);
	if (t != NULL) {
		struct envelope env;
		env_init(&env);
		const char *p = aliases, *end = aliases + alen;
		while (p < end) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			const char *le = nl ? nl : end;
			const char *colon = memchr(p, ':', (size_t)(le - p));
			if (colon && (size_t)(colon - p) < 600) {
				char path[604];
				size_t n = (size_t)(colon - p);
				path[0] = '<';
				memcpy(path + 1, p, n);
				path[n + 1] = '>';
				fuzz_rcpt(t, path, n + 2, &env);
			}
			p = nl ? nl + 1 : end;
		}
		static const char *fixed[] = {"<Postmaster>", "<postmaster@example.test>", "<alice+x@example.test>",
					      "<a%b@example.test>", "<x@remote.test>", "<u@[127.0.0.1]>"};
		for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
			fuzz_rcpt(t, fixed[i], strlen(fixed[i]), &env);
		/* each mailbox at most once */
		for (size_t i = 0; i < env.nrcpts; i++)
			for (size_t j = i + 1; j < env.nrcpts; j++)
				if (strcmp(env.rcpts[i].addr, env.rcpts[j].addr) == 0)
					abort();
		env_free(&env);
		lookup_free(t);
	}
	strbuf_free(&errs);
	return 0;
}
