/*
 * xalloc - allocation for start-up and for small internal structures.
 *
 * These abort on out of memory. Use them only where failure cannot be
 * charged to one session (start-up, configuration, small composed text);
 * session code that can fail on hostile input sizes uses malloc and
 * answers 421 instead.
 */
#ifndef TERN_CORE_XALLOC_H
#define TERN_CORE_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
