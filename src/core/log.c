/*
 * log - key=value event lines on stderr. See log.h.
 * Trusts nothing it is given: every value is escaped.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_min = LOG_LEVEL_INFO;
static const char *log_prog = "tern";

static const char *const log_level_names[] = {
	[LOG_LEVEL_DEBUG] = "debug",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_ERR] = "err",
	[LOG_LEVEL_CRIT] = "crit",
};

const char *log_level_str(enum log_level lvl)
{
	if ((unsigned)lvl < sizeof(log_level_names) / sizeof(log_level_names[0]))
		return log_level_names[lvl];
	return "unknown";
}

void log_init(const char *prog, enum log_level min_level)
{
	log_prog = prog;
	log_min = min_level;
}

/* log_put - append raw bytes, keeping room for the final newline */
static void log_put(struct log_line *l, const char *p, size_t n)
{
	if (n > LOG_LINE_MAX - 1 - l->len)
		n = LOG_LINE_MAX - 1 - l->len;
	memcpy(l->buf + l->len, p, n);
	l->len += n;
}

void log_begin(struct log_line *l, enum log_level lvl, const char *event)
{
	l->len = 0;
	l->on = lvl >= log_min;
	if (!l->on)
		return;
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	gmtime_r(&tv.tv_sec, &tm);
	char ts[64];
	int n = snprintf(ts, sizeof(ts), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, (int)(tv.tv_usec / 1000));
	log_put(l, ts, (size_t)n);
	log_kv(l, "prog", log_prog);
	log_kv(l, "level", log_level_str(lvl));
	log_kv(l, "event", event);
}

/* log_needs_quotes - whether a value must be written in double quotes */
static int log_needs_quotes(const char *v, size_t n)
{
	if (n == 0)
		return 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\')
			return 1;
	}
	return 0;
}

void log_kvn(struct log_line *l, const char *key, const char *value, size_t n)
{
	if (!l->on)
		return;
	if (value == NULL) {
		value = "";
		n = 0;
	}
	if (l->len)
		log_put(l, " ", 1);
	log_put(l, key, strlen(key));
	log_put(l, "=", 1);
	if (!log_needs_quotes(value, n)) {
		log_put(l, value, n);
		return;
	}
	log_put(l, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)value[i];
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			log_put(l, e, 2);
		} else if (c < ' ' || c >= 0x7f) {
			char e[5];
			snprintf(e, sizeof(e), "\\x%02x", c);
			log_put(l, e, 4);
		} else {
			log_put(l, (const char *)&value[i], 1);
		}
	}
	log_put(l, "\"", 1);
}

void log_kv(struct log_line *l, const char *key, const char *value)
{
	log_kvn(l, key, value, value ? strlen(value) : 0);
}

void log_kvi(struct log_line *l, const char *key, long long value)
{
	char v[32];
	int n = snprintf(v, sizeof(v), "%lld", value);
	log_kvn(l, key, v, (size_t)n);
}

void log_end(struct log_line *l)
{
	if (!l->on)
		return;
	l->buf[l->len++] = '\n';
	/* one write so lines from threads never interleave */
	ssize_t r = write(STDERR_FILENO, l->buf, l->len);
	(void)r;
}

void log_event(enum log_level lvl, const char *event, const char *fmt, ...)
{
	struct log_line l;
	log_begin(&l, lvl, event);
	if (!l.on)
		return;
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	log_kvn(&l, "msg", msg, (size_t)n);
	log_end(&l);
}
