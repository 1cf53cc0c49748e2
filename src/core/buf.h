/*
 * buf - byte buffers for network input and composed output.
 *
 * struct buf is a capped buffer: data[start, end) is unread, the capacity
 * never grows past cap, so network input can never make it grow without
 * bound; an overflowing append fails and the caller answers in protocol.
 * struct strbuf is a growable string for text we compose ourselves
 * (replies, headers, envelope records); it is always NUL-terminated.
 *
 * Exports:
 *   buf_init/buf_free            allocate and release a capped buffer
 *   buf_append                   append bytes, -1 when over capacity
 *   buf_consume/buf_compact      drop read bytes, move the rest to the front
 *   strbuf_*                     growable NUL-terminated string
 * Trusts: nothing; all lengths are checked.
 */
#ifndef TERN_CORE_BUF_H
#define TERN_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t start; /* first unread byte */
	size_t end;   /* one past the last byte */
	size_t cap;   /* allocated size, never exceeded */
};

int buf_init(struct buf *b, size_t cap);
void buf_free(struct buf *b);
int buf_append(struct buf *b, const void *p, size_t n);
void buf_consume(struct buf *b, size_t n);
void buf_compact(struct buf *b);
void buf_reset(struct buf *b);

static inline size_t buf_len(const struct buf *b) { return b->end - b->start; }
static inline char *buf_head(const struct buf *b) { return b->data + b->start; }
/* room at the tail, after compaction would give cap - len */
static inline size_t buf_room(const struct buf *b) { return b->cap - b->end; }
static inline char *buf_tail(const struct buf *b) { return b->data + b->end; }

struct strbuf {
	char *s;
	size_t len;
	size_t cap;
};

void strbuf_init(struct strbuf *sb);
void strbuf_free(struct strbuf *sb);
void strbuf_reset(struct strbuf *sb);
/* strbuf_add - append n bytes; aborts on out of memory (composed text is small) */
void strbuf_add(struct strbuf *sb, const void *p, size_t n);
void strbuf_adds(struct strbuf *sb, const char *s);
void strbuf_addc(struct strbuf *sb, char c);
void strbuf_addf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_vaddf(struct strbuf *sb, const char *fmt, va_list ap);
/* strbuf_detach - hand the string to the caller, leaving sb empty */
char *strbuf_detach(struct strbuf *sb);

#endif
