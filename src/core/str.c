/*
 * str - slices and ASCII-only case handling. See str.h.
 */
#include "core/str.h"

#include <string.h>

static inline unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

int str_casecmp_ascii(const char *a, const char *b)
{
	for (;; a++, b++) {
		int d = lower((unsigned char)*a) - lower((unsigned char)*b);
		if (d || !*a)
			return d;
	}
}

int str_ncasecmp_ascii(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int d = lower((unsigned char)a[i]) - lower((unsigned char)b[i]);
		if (d || !a[i])
			return d;
	}
	return 0;
}

int str_slice_eq_ci(struct slice s, const char *word)
{
	size_t n = strlen(word);
	return s.len == n && str_ncasecmp_ascii(s.p, word, n) == 0;
}

void str_lower_ascii(char *s)
{
	for (; *s; s++)
		*s = (char)lower((unsigned char)*s);
}

int str_has_prefix_ci(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	return len >= n && str_ncasecmp_ascii(s, prefix, n) == 0;
}

int str_parse_u64(const char *s, size_t n, uint64_t *out)
{
	if (n == 0 || n > 20)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}
