/*
 * buf - capped network buffers and growable composition strings.
 * See buf.h. Trusts nothing: every append checks the cap.
 */
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/xalloc.h"

/* buf_init - allocate a buffer that will never hold more than cap bytes */
int buf_init(struct buf *b, size_t cap)
{
	b->data = malloc(cap ? cap : 1);
	if (b->data == NULL)
		return -1;
	b->start = b->end = 0;
	b->cap = cap;
	return 0;
}

/* buf_free - release the storage */
void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->start = b->end = b->cap = 0;
}

/* buf_compact - move unread bytes to the front to make room at the tail */
void buf_compact(struct buf *b)
{
	if (b->start == 0)
		return;
	size_t n = b->end - b->start;
	if (n)
		memmove(b->data, b->data + b->start, n);
	b->start = 0;
	b->end = n;
}

/* buf_append - append n bytes; -1 (nothing appended) if they do not fit */
int buf_append(struct buf *b, const void *p, size_t n)
{
	if (n > b->cap - (b->end - b->start))
		return -1;
	if (n > b->cap - b->end)
		buf_compact(b);
	memcpy(b->data + b->end, p, n);
	b->end += n;
	return 0;
}

/* buf_consume - mark n unread bytes as read */
void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->end - b->start) {
		b->start = b->end = 0;
		return;
	}
	b->start += n;
}

/* buf_reset - forget all content */
void buf_reset(struct buf *b)
{
	b->start = b->end = 0;
}

void strbuf_init(struct strbuf *sb)
{
	sb->s = NULL;
	sb->len = sb->cap = 0;
}

void strbuf_free(struct strbuf *sb)
{
	free(sb->s);
	strbuf_init(sb);
}

void strbuf_reset(struct strbuf *sb)
{
	sb->len = 0;
	if (sb->s)
		sb->s[0] = '\0';
}

/* strbuf_grow - make room for n more bytes plus the terminator */
static void strbuf_grow(struct strbuf *sb, size_t n)
{
	if (sb->len + n + 1 <= sb->cap)
		return;
	size_t cap = sb->cap ? sb->cap : 64;
	while (cap < sb->len + n + 1)
		cap *= 2;
	sb->s = xrealloc(sb->s, cap);
	sb->cap = cap;
}

void strbuf_add(struct strbuf *sb, const void *p, size_t n)
{
	strbuf_grow(sb, n);
	if (n)
		memcpy(sb->s + sb->len, p, n);
	sb->len += n;
	sb->s[sb->len] = '\0';
}

void strbuf_adds(struct strbuf *sb, const char *s)
{
	strbuf_add(sb, s, strlen(s));
}

void strbuf_addc(struct strbuf *sb, char c)
{
	strbuf_add(sb, &c, 1);
}

void strbuf_vaddf(struct strbuf *sb, const char *fmt, va_list ap)
{
	va_list cp;
	va_copy(cp, ap);
	int n = vsnprintf(NULL, 0, fmt, cp);
	va_end(cp);
	if (n < 0)
		return;
	strbuf_grow(sb, (size_t)n);
	vsnprintf(sb->s + sb->len, (size_t)n + 1, fmt, ap);
	sb->len += (size_t)n;
}

void strbuf_addf(struct strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	strbuf_vaddf(sb, fmt, ap);
	va_end(ap);
}

char *strbuf_detach(struct strbuf *sb)
{
	char *s = sb->s ? sb->s : xstrdup("");
	strbuf_init(sb);
	return s;
}
