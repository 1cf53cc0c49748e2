/*
 * log - one event a line, key=value fields, to stderr.
 *
 * A line is built with log_begin, fields are added with log_kv* (values are
 * quoted when they hold spaces, quotes or '=', and every byte outside
 * printable ASCII is written as \xHH, so a hostile string can never forge a
 * second line or field), and log_end writes it with one write(2).
 * Lines about a message carry qid= (CONTRACT.md). Never log message
 * content or secrets.
 *
 * Exports:
 *   log_init             program name and minimum level
 *   log_begin/log_end    start and emit one line
 *   log_kv, log_kvn      a string field (NUL-terminated or with length)
 *   log_kvi              an integer field
 *   log_event            one line with a printf-formatted msg= field
 */
#ifndef TERN_CORE_LOG_H
#define TERN_CORE_LOG_H

#include <stddef.h>

enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERR,
	LOG_LEVEL_CRIT,
};

const char *log_level_str(enum log_level lvl);

#define LOG_LINE_MAX 4096

struct log_line {
	char buf[LOG_LINE_MAX];
	size_t len;
	int on; /* 0 when below the minimum level: fields are skipped */
};

void log_init(const char *prog, enum log_level min_level);
void log_begin(struct log_line *l, enum log_level lvl, const char *event);
void log_kv(struct log_line *l, const char *key, const char *value);
void log_kvn(struct log_line *l, const char *key, const char *value, size_t len);
void log_kvi(struct log_line *l, const char *key, long long value);
void log_end(struct log_line *l);

/* log_event - shorthand: event plus a free-text msg= field */
void log_event(enum log_level lvl, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
