/*
 * str - small string helpers: (pointer, length) slices and ASCII case rules.
 *
 * Exports:
 *   struct slice                 a view into someone else's bytes
 *   str_casecmp_ascii/_n         case-insensitive compare, ASCII only (domains,
 *                                keywords; never locale-dependent)
 *   str_lower_ascii              lowercase ASCII letters in place
 *   str_has_prefix_ci            keyword prefix test
 *   str_parse_u64                strict decimal parse with overflow check
 * Trusts nothing.
 */
#ifndef TERN_CORE_STR_H
#define TERN_CORE_STR_H

#include <stddef.h>
#include <stdint.h>

struct slice {
	const char *p;
	size_t len;
};

int str_casecmp_ascii(const char *a, const char *b);
int str_ncasecmp_ascii(const char *a, const char *b, size_t n);
int str_slice_eq_ci(struct slice s, const char *word);
void str_lower_ascii(char *s);
int str_has_prefix_ci(const char *s, size_t len, const char *prefix);
/* str_parse_u64 - all n bytes must be digits; 0 ok, -1 empty/garbage/overflow */
int str_parse_u64(const char *s, size_t n, uint64_t *out);

#endif
