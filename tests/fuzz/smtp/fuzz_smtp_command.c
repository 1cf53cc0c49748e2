/*
 * fuzz_smtp_command - frame the input into lines with smtp_line_next (and
 * smtp_line_skip after an over-long line, as the session does), parse every
 * complete line as a command, and parse the whole input as a path. Checks
 * the framing contract (progress, bounds) and the parsed path's invariants.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* check_path - a parsed path is NUL-terminated, bounded and consistent */
static void check_path(const struct smtp_path *p)
{
	size_t al = strlen(p->addr), ll = strlen(p->local), dl = strlen(p->domain);
	if (al > SMTP_PATH_MAX - 2 || ll > SMTP_LOCAL_MAX || dl > SMTP_DOMAIN_MAX)
		abort();
	if (p->is_null) {
		if (al != 0 || p->is_postmaster)
			abort();
		return;
	}
	if (p->is_postmaster) {
		if (strcmp(p->addr, "postmaster") != 0)
			abort();
		return;
	}
	if (al != ll + 1 + dl || p->addr[ll] != '@' || ll == 0 || dl == 0)
		abort();
	if (!smtp_utf8_valid(p->addr, al))
		abort();
	for (size_t i = 0; i < al; i++)
		if ((unsigned char)p->addr[i] < 0x20 || p->addr[i] == 0x7f)
			abort();
	/* lowercased, except the "IPv6:" tag of an address literal */
	for (size_t i = p->domain_literal && dl > 6 && p->domain[1] == 'I' ? 6 : 0; i < dl; i++)
		if (p->domain[i] >= 'A' && p->domain[i] <= 'Z')
			abort();
	/* the canonical form parses again to itself */
	char buf[SMTP_PATH_MAX + 8];
	struct smtp_path again;
	buf[0] = '<';
	memcpy(buf + 1, p->addr, al);
	buf[al + 1] = '>';
	if (smtp_parse_path(buf, al + 2, 0, &again, NULL) != SMTP_PARSE_OK || strcmp(again.addr, p->addr) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	size_t off = 0;
	int skipping = 0;

	while (off < size) {
		size_t len = 0, used = 0;
		enum smtp_line_status st;
		if (skipping) {
			st = smtp_line_skip(p + off, size - off, &used);
			if (used > size - off)
				abort();
			off += used;
			if (st != SMTP_LINE_OK)
				break;
			skipping = 0;
			continue;
		}
		st = smtp_line_next(p + off, size - off, &len, &used);
		if (st == SMTP_LINE_NEED_MORE) {
			if (used != 0 || size - off >= SMTP_LINE_MAX)
				abort();
			break;
		}
		if (used == 0 || used > size - off)
			abort();
		if (st == SMTP_LINE_OK) {
			if (len > SMTP_LINE_MAX - 2 || used != len + 2 || memcmp(p + off + len, "\r\n", 2) != 0 ||
			    memchr(p + off, '\n', len) != NULL || memchr(p + off, '\r', len) != NULL)
				abort();
			struct smtp_cmd c;
			const char *detail = NULL;
			enum smtp_parse_error e = smtp_parse_command(p + off, len, &c, &detail);
			if (detail == NULL || (e != SMTP_PARSE_OK && detail[0] == '\0'))
				abort();
			if (e == SMTP_PARSE_OK) {
				if (c.verb == SMTP_VERB_UNKNOWN || c.nparams > SMTP_PARAMS_MAX)
					abort();
				if (c.arg.p < p + off || c.arg.p + c.arg.len > p + off + len)
					abort();
				if (c.verb == SMTP_VERB_MAIL || c.verb == SMTP_VERB_RCPT)
					check_path(&c.path);
				for (size_t i = 0; i < c.nparams; i++) {
					const struct smtp_param *pr = &c.params[i];
					if (pr->key.len == 0 || pr->key.p < c.arg.p || pr->value.p == NULL ||
					    pr->value.p + pr->value.len > c.arg.p + c.arg.len)
						abort();
					if (smtp_param_find(&c, "x") == NULL && pr->key.len == 1 &&
					    (pr->key.p[0] == 'x' || pr->key.p[0] == 'X'))
						abort();
				}
			}
		} else if (st == SMTP_LINE_TOO_LONG) {
			if (len == 0)
				skipping = 1;
			else if (len <= SMTP_LINE_MAX - 2 || used != len + 2)
				abort();
		} else if (p[off + used - 1] != '\n') {
			abort();
		}
		off += used;
	}

	/* the whole input as a path, both ways */
	struct smtp_path path;
	for (int allow_null = 0; allow_null < 2; allow_null++)
		if (smtp_parse_path(p, size, allow_null, &path, NULL) == SMTP_PARSE_OK)
			check_path(&path);
	char dom[SMTP_DOMAIN_MAX + 1];
	smtp_parse_domain(p, size, dom, NULL, NULL, NULL);
	return 0;
}
