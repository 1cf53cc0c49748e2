/*
 * queue_env - the text format of a queue file's envelope and of the state
 * log, with their parsers.
 *
 * A message file (version 2, written since queue_file_prepend) is:
 *   TERN-QUEUE 2
 *   qid <QID>                    mandatory, a valid queue ID
 *   arrival <unix seconds>       mandatory
 *   sender <reverse-path>        mandatory; "sender" alone is the null <>
 *   body 7BIT|8BITMIME|BINARYMIME
 *   smtputf8 0|1
 *   ret FULL|HDRS                "ret" alone: not given
 *   envid|client|helo|auth <v>   optional; "key" alone: not given
 *   rcpt <notify> <orcpt> <addr> one a recipient, at least one; notify is
 *                                the env_notify bits in decimal; orcpt is
 *                                "-" when absent, else %-encoded ('%', ' ',
 *                                controls and a lone "-" as %XX); addr is
 *                                the rest of the line (a quoted local part
 *                                may hold spaces)
 *   content                      ends the header
 *   <gap: 0..QUEUE_RESERVE NUL bytes><content bytes>
 *   "\nTERN-END <gap> <content length>\n"
 * The gap is what is left of the space reserved at create for text
 * prepended at commit (queue_file_prepend writes it right-aligned in the
 * reserve, so it joins the content); the content starts where the end
 * marker says: header length + gap. A file whose prepend did not fit is
 * copied at commit and has gap 0.
 * Version 1 (still read) has the same header with "TERN-QUEUE 1", no gap,
 * and the marker "\nTERN-END <content length>\n".
 * A record is "key SP value LF"; values are at most QUEUE_VALUE_MAX bytes
 * and never hold CR, LF or NUL. Unknown keys, repeated keys and any other
 * version are errors: a new field means a new version, so an old ternd
 * never half-understands a newer file.
 *
 * The state log (state/QID) is append-only, one record a line:
 *   <idx> pending|delivered|failed <attempts> <next_attempt> <text>
 *   hold 0|1
 * Later records win; a last line without LF (torn by a crash) and any
 * malformed line are ignored, so the worst a crash can do is repeat one
 * delivery attempt.
 *
 * Exports: queue_env_format, queue_env_parse, queue_env_parse_hdr,
 *          queue_env_check, queue_state_apply, queue_trailer_check
 * Trusts: nothing; every byte parsed here is hostile input.
 */
#include "queue/queue_int.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/str.h"
#include "core/xalloc.h"

#define QUEUE_MAGIC "TERN-QUEUE "
#define QUEUE_VERSION "2"
/* longest state log line we look at; longer ones are hostile */
#define QUEUE_STATE_LINE_MAX (QUEUE_VALUE_MAX + 128)

/* env_value_ok - a value we can store: no CR/LF, not too long */
static int env_value_ok(const char *s)
{
	size_t n = strlen(s);
	return n <= QUEUE_VALUE_MAX && memchr(s, '\r', n) == NULL && memchr(s, '\n', n) == NULL;
}

int queue_env_check(const struct envelope *env, char *err, size_t errlen)
{
	const struct {
		const char *name;
		const char *v;
	} vals[] = {
		{"sender", env->sender},      {"envid", env->envid}, {"client", env->client_addr},
		{"helo", env->helo},          {"auth", env->auth_user},
	};
	if (env->sender == NULL) {
		snprintf(err, errlen, "envelope has no sender");
		return -1;
	}
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		if (vals[i].v && !env_value_ok(vals[i].v)) {
			snprintf(err, errlen, "envelope %s holds CR/LF or is too long", vals[i].name);
			return -1;
		}
	}
	if ((unsigned)env->body > ENV_BODY_BINARYMIME || (unsigned)env->ret > ENV_RET_HDRS) {
		snprintf(err, errlen, "envelope has a bad body or ret value");
		return -1;
	}
	if (env->nrcpts == 0) {
		snprintf(err, errlen, "envelope has no recipient");
		return -1;
	}
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct env_rcpt *r = &env->rcpts[i];
		if (r->addr == NULL || r->addr[0] == '\0' || !env_value_ok(r->addr) ||
		    (r->orcpt && !env_value_ok(r->orcpt)) || r->notify > 15) {
			snprintf(err, errlen, "recipient %zu is empty, too long or holds CR/LF", i);
			return -1;
		}
	}
	return 0;
}

/* env_add_kv - "key value\n", or "key\n" when the value is absent or empty */
static void env_add_kv(struct strbuf *out, const char *key, const char *v)
{
	strbuf_adds(out, key);
	if (v && v[0]) {
		strbuf_addc(out, ' ');
		strbuf_adds(out, v);
	}
	strbuf_addc(out, '\n');
}

/* env_add_orcpt - "-" for none, else %-encode what would break the line */
static void env_add_orcpt(struct strbuf *out, const char *o)
{
	if (o == NULL || o[0] == '\0') {
		strbuf_addc(out, '-');
		return;
	}
	if (strcmp(o, "-") == 0) {
		strbuf_adds(out, "%2D");
		return;
	}
	for (const unsigned char *c = (const unsigned char *)o; *c; c++) {
		if (*c <= ' ' || *c == '%' || *c == 0x7f)
			strbuf_addf(out, "%%%02X", *c);
		else
			strbuf_addc(out, (char)*c);
	}
}

/* queue_env_format - the header text, "TERN-QUEUE 1" through "content\n".
 * The caller has checked env with queue_env_check. */
void queue_env_format(const struct envelope *env, struct strbuf *out)
{
	strbuf_adds(out, QUEUE_MAGIC QUEUE_VERSION "\n");
	env_add_kv(out, "qid", env->qid);
	strbuf_addf(out, "arrival %lld\n", (long long)(env->arrival < 0 ? 0 : env->arrival));
	env_add_kv(out, "sender", env->sender);
	env_add_kv(out, "body", env_body_str(env->body));
	env_add_kv(out, "smtputf8", env->smtputf8 ? "1" : "0");
	env_add_kv(out, "ret", env->ret == ENV_RET_FULL ? "FULL" : env->ret == ENV_RET_HDRS ? "HDRS" : NULL);
	env_add_kv(out, "envid", env->envid);
	env_add_kv(out, "client", env->client_addr);
	env_add_kv(out, "helo", env->helo);
	env_add_kv(out, "auth", env->auth_user);
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct env_rcpt *r = &env->rcpts[i];
		strbuf_addf(out, "rcpt %u ", r->notify & 15u);
		env_add_orcpt(out, r->orcpt);
		strbuf_addc(out, ' ');
		strbuf_adds(out, r->addr);
		strbuf_addc(out, '\n');
	}
	strbuf_adds(out, "content\n");
}

/* env_hexval - value of one hex digit, -1 if not one */
static int env_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* env_orcpt_decode - undo env_add_orcpt; NULL for "-"; -1 on bad input */
static int env_orcpt_decode(const char *p, size_t n, char **out)
{
	*out = NULL;
	if (n == 1 && p[0] == '-')
		return 0;
	if (n == 0)
		return -1;
	char *d = xmalloc(n + 1);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)p[i];
		if (c == '%') {
			int hi = i + 2 < n ? env_hexval(p[i + 1]) : -1;
			int lo = i + 2 < n ? env_hexval(p[i + 2]) : -1;
			if (hi < 0 || lo < 0) {
				free(d);
				return -1;
			}
			c = hi * 16 + lo;
			i += 2;
		}
		/* a decoded value obeys the same rules as every other value */
		if (c == '\0' || c == '\r' || c == '\n') {
			free(d);
			return -1;
		}
		d[k++] = (char)c;
	}
	d[k] = '\0';
	if (k > QUEUE_VALUE_MAX) {
		free(d);
		return -1;
	}
	*out = d;
	return 0;
}

/* env_parse_rcpt - "<notify> <orcpt> <addr>" */
static int env_parse_rcpt(const char *v, size_t n, struct envelope *env)
{
	const char *sp1 = memchr(v, ' ', n);
	if (sp1 == NULL)
		return -1;
	const char *rest = sp1 + 1;
	size_t rn = n - (size_t)(rest - v);
	const char *sp2 = memchr(rest, ' ', rn);
	if (sp2 == NULL)
		return -1;
	uint64_t notify;
	if (str_parse_u64(v, (size_t)(sp1 - v), &notify) < 0 || notify > 15)
		return -1;
	const char *addr = sp2 + 1;
	size_t an = n - (size_t)(addr - v);
	if (an == 0 || an > QUEUE_VALUE_MAX)
		return -1;
	char *orcpt;
	if (env_orcpt_decode(rest, (size_t)(sp2 - rest), &orcpt) < 0)
		return -1;
	char *a = xstrndup(addr, an);
	env_rcpt_add(env, a, orcpt, (unsigned)notify);
	free(a);
	free(orcpt);
	return 0;
}

/* env_set_str - an optional string field: absent or empty means NULL */
static void env_set_str(char **dst, const char *v, size_t n)
{
	*dst = n ? xstrndup(v, n) : NULL;
}

enum env_key {
	ENV_KEY_QID,
	ENV_KEY_ARRIVAL,
	ENV_KEY_SENDER,
	ENV_KEY_BODY,
	ENV_KEY_SMTPUTF8,
	ENV_KEY_RET,
	ENV_KEY_ENVID,
	ENV_KEY_CLIENT,
	ENV_KEY_HELO,
	ENV_KEY_AUTH,
	ENV_KEY_RCPT,
	ENV_KEY_CONTENT,
};

static const char *const env_key_names[] = {
	[ENV_KEY_QID] = "qid",     [ENV_KEY_ARRIVAL] = "arrival", [ENV_KEY_SENDER] = "sender",
	[ENV_KEY_BODY] = "body",   [ENV_KEY_SMTPUTF8] = "smtputf8", [ENV_KEY_RET] = "ret",
	[ENV_KEY_ENVID] = "envid", [ENV_KEY_CLIENT] = "client",   [ENV_KEY_HELO] = "helo",
	[ENV_KEY_AUTH] = "auth",   [ENV_KEY_RCPT] = "rcpt",       [ENV_KEY_CONTENT] = "content",
};

/* env_key_lookup - the key's enum, or -1 for an unknown key */
static int env_key_lookup(const char *k, size_t n)
{
	for (size_t i = 0; i < sizeof(env_key_names) / sizeof(env_key_names[0]); i++)
		if (strlen(env_key_names[i]) == n && memcmp(env_key_names[i], k, n) == 0)
			return (int)i;
	return -1;
}

/* env_parse_field - one "key value" record into env; -1 with err */
static int env_parse_field(int key, const char *v, size_t vn, struct envelope *env, char *err, size_t errlen)
{
	uint64_t u;
	switch ((enum env_key)key) {
	case ENV_KEY_QID:
		if (vn != QUEUE_ID_LEN) {
			snprintf(err, errlen, "bad qid");
			return -1;
		}
		memcpy(env->qid, v, vn);
		env->qid[vn] = '\0';
		if (!queue_id_valid(env->qid)) {
			snprintf(err, errlen, "bad qid");
			return -1;
		}
		return 0;
	case ENV_KEY_ARRIVAL:
		if (str_parse_u64(v, vn, &u) < 0 || u > (uint64_t)INT64_MAX) {
			snprintf(err, errlen, "bad arrival");
			return -1;
		}
		env->arrival = (time_t)u;
		return 0;
	case ENV_KEY_SENDER:
		env->sender = xstrndup(v, vn);
		return 0;
	case ENV_KEY_BODY:
		if (vn == 4 && memcmp(v, "7BIT", 4) == 0)
			env->body = ENV_BODY_7BIT;
		else if (vn == 8 && memcmp(v, "8BITMIME", 8) == 0)
			env->body = ENV_BODY_8BITMIME;
		else if (vn == 10 && memcmp(v, "BINARYMIME", 10) == 0)
			env->body = ENV_BODY_BINARYMIME;
		else {
			snprintf(err, errlen, "bad body");
			return -1;
		}
		return 0;
	case ENV_KEY_SMTPUTF8:
		if (vn != 1 || (v[0] != '0' && v[0] != '1')) {
			snprintf(err, errlen, "bad smtputf8");
			return -1;
		}
		env->smtputf8 = v[0] == '1';
		return 0;
	case ENV_KEY_RET:
		if (vn == 0)
			env->ret = ENV_RET_DEFAULT;
		else if (vn == 4 && memcmp(v, "FULL", 4) == 0)
			env->ret = ENV_RET_FULL;
		else if (vn == 4 && memcmp(v, "HDRS", 4) == 0)
			env->ret = ENV_RET_HDRS;
		else {
			snprintf(err, errlen, "bad ret");
			return -1;
		}
		return 0;
	case ENV_KEY_ENVID: env_set_str(&env->envid, v, vn); return 0;
	case ENV_KEY_CLIENT: env_set_str(&env->client_addr, v, vn); return 0;
	case ENV_KEY_HELO: env_set_str(&env->helo, v, vn); return 0;
	case ENV_KEY_AUTH: env_set_str(&env->auth_user, v, vn); return 0;
	case ENV_KEY_RCPT:
		if (env_parse_rcpt(v, vn, env) < 0) {
			snprintf(err, errlen, "bad rcpt record %zu", env->nrcpts + 1);
			return -1;
		}
		return 0;
	case ENV_KEY_CONTENT: break;
	}
	snprintf(err, errlen, "internal: unexpected key");
	return -1;
}

/* env_parse_lines - the parser proper; -2 when the input ends too soon */
static int env_parse_lines(const char *p, size_t n, struct envelope *env, size_t *hdr_len, int *version,
			   char *err, size_t errlen)
{
	const size_t magic_len = sizeof(QUEUE_MAGIC) - 1;
	const char *nl = memchr(p, '\n', n < 64 ? n : 64);
	if (nl == NULL) {
		if (n < 64 && memcmp(p, QUEUE_MAGIC, n < magic_len ? n : magic_len) == 0)
			return -2;
		snprintf(err, errlen, "not a queue file");
		return -1;
	}
	size_t ln = (size_t)(nl - p);
	if (ln < magic_len || memcmp(p, QUEUE_MAGIC, magic_len) != 0) {
		snprintf(err, errlen, "not a queue file");
		return -1;
	}
	/* 2 is what we write; 1 (no gap, one number in the marker) is read */
	if (ln != magic_len + 1 || (p[magic_len] != QUEUE_VERSION[0] && p[magic_len] != '1')) {
		snprintf(err, errlen, "unsupported queue file version");
		return -1;
	}
	*version = p[magic_len] - '0';
	unsigned seen = 0;
	size_t pos = ln + 1;
	for (;;) {
		if (pos >= QUEUE_HDR_MAX) {
			snprintf(err, errlen, "header too long");
			return -1;
		}
		size_t lim = n - pos;
		/* a record is at most key + value (orcpt %-encoded triples) */
		const size_t line_max = 16 + 4 * QUEUE_VALUE_MAX + 32;
		nl = memchr(p + pos, '\n', lim < line_max ? lim : line_max);
		if (nl == NULL) {
			if (lim < line_max)
				return -2;
			snprintf(err, errlen, "header line too long");
			return -1;
		}
		const char *line = p + pos;
		ln = (size_t)(nl - line);
		pos += ln + 1;
		if (memchr(line, '\r', ln) || memchr(line, '\0', ln)) {
			snprintf(err, errlen, "CR or NUL in header");
			return -1;
		}
		const char *sp = memchr(line, ' ', ln);
		size_t kn = sp ? (size_t)(sp - line) : ln;
		const char *v = sp ? sp + 1 : line + ln;
		size_t vn = sp ? ln - kn - 1 : 0;
		int key = env_key_lookup(line, kn);
		if (key < 0) {
			snprintf(err, errlen, "unknown header key");
			return -1;
		}
		if (key == ENV_KEY_CONTENT) {
			if (sp) {
				snprintf(err, errlen, "bad content line");
				return -1;
			}
			break;
		}
		if (key != ENV_KEY_RCPT) {
			if (seen & (1u << key)) {
				snprintf(err, errlen, "repeated header key %s", env_key_names[key]);
				return -1;
			}
			seen |= 1u << key;
			if (vn > QUEUE_VALUE_MAX) {
				snprintf(err, errlen, "%s value too long", env_key_names[key]);
				return -1;
			}
		}
		if (env_parse_field(key, v, vn, env, err, errlen) < 0)
			return -1;
	}
	const unsigned need = (1u << ENV_KEY_QID) | (1u << ENV_KEY_ARRIVAL) | (1u << ENV_KEY_SENDER);
	if ((seen & need) != need || env->nrcpts == 0) {
		snprintf(err, errlen, "missing %s", !(seen & (1u << ENV_KEY_QID))        ? "qid"
						    : !(seen & (1u << ENV_KEY_ARRIVAL)) ? "arrival"
						    : !(seen & (1u << ENV_KEY_SENDER))  ? "sender"
											: "rcpt");
		return -1;
	}
	*hdr_len = pos;
	return 0;
}

int queue_env_parse_hdr(const char *p, size_t n, struct envelope *env, size_t *hdr_len, int *version,
			char *err, size_t errlen)
{
	int v = 0;
	env_init(env);
	int r = env_parse_lines(p, n, env, hdr_len, &v, err, errlen);
	if (r == 0 && version)
		*version = v;
	if (r < 0)
		env_free(env);
	if (r == -2)
		snprintf(err, errlen, "header ends before the content line");
	return r;
}

/* queue_env_parse - env is initialised here; on error it is left empty */
int queue_env_parse(const char *p, size_t n, struct envelope *env, size_t *hdr_len, char *err, size_t errlen)
{
	return queue_env_parse_hdr(p, n, env, hdr_len, NULL, err, errlen) < 0 ? -1 : 0;
}

/* state_split - next space-separated field of line[*pos..n) */
static int state_field(const char *line, size_t n, size_t *pos, const char **f, size_t *fn)
{
	if (*pos > n)
		return -1;
	const char *s = line + *pos;
	const char *sp = memchr(s, ' ', n - *pos);
	*f = s;
	*fn = sp ? (size_t)(sp - s) : n - *pos;
	*pos += *fn + 1;
	return *fn ? 0 : -1;
}

/* state_apply_line - one complete record; malformed ones change nothing */
static void state_apply_line(const char *line, size_t n, struct envelope *env)
{
	if (memchr(line, '\r', n) || memchr(line, '\0', n))
		return;
	if (n == 6 && memcmp(line, "hold ", 5) == 0 && (line[5] == '0' || line[5] == '1')) {
		env->held = line[5] == '1';
		return;
	}
	/* "dsn IDX final|delay": a notification for IDX was queued */
	if (n > 4 && memcmp(line, "dsn ", 4) == 0) {
		const char *sp = memchr(line + 4, ' ', n - 4);
		uint64_t di;
		if (sp == NULL || str_parse_u64(line + 4, (size_t)(sp - line - 4), &di) < 0 || di >= env->nrcpts)
			return;
		size_t kn = n - (size_t)(sp + 1 - line);
		if (kn == 5 && memcmp(sp + 1, "final", 5) == 0)
			env->rcpts[di].dsn_sent |= ENV_DSN_FINAL;
		else if (kn == 5 && memcmp(sp + 1, "delay", 5) == 0)
			env->rcpts[di].dsn_sent |= ENV_DSN_DELAY;
		return;
	}
	const char *f[4];
	size_t fn[4], pos = 0;
	for (int i = 0; i < 4; i++)
		if (state_field(line, n, &pos, &f[i], &fn[i]) < 0)
			return;
	uint64_t idx, attempts, next;
	if (str_parse_u64(f[0], fn[0], &idx) < 0 || idx >= env->nrcpts)
		return;
	enum env_rcpt_state st;
	if (fn[1] == 7 && memcmp(f[1], "pending", 7) == 0)
		st = ENV_RCPT_PENDING;
	else if (fn[1] == 9 && memcmp(f[1], "delivered", 9) == 0)
		st = ENV_RCPT_DELIVERED;
	else if (fn[1] == 6 && memcmp(f[1], "failed", 6) == 0)
		st = ENV_RCPT_FAILED;
	else
		return;
	if (str_parse_u64(f[2], fn[2], &attempts) < 0 || attempts > UINT32_MAX)
		return;
	if (str_parse_u64(f[3], fn[3], &next) < 0 || next > (uint64_t)INT64_MAX)
		return;
	size_t tn = pos < n ? n - pos : 0;
	if (tn > QUEUE_VALUE_MAX)
		return;
	struct env_rcpt *r = &env->rcpts[idx];
	r->state = st;
	r->attempts = (unsigned)attempts;
	r->next_attempt = (time_t)next;
	free(r->last_error);
	r->last_error = tn ? xstrndup(line + pos, tn) : NULL;
}

/* queue_state_apply - every complete line of a state log, in order */
void queue_state_apply(const char *p, size_t n, struct envelope *env)
{
	size_t pos = 0;
	while (pos < n) {
		const char *nl = memchr(p + pos, '\n', n - pos);
		if (nl == NULL)
			break; /* torn last record: the write never completed */
		size_t ln = (size_t)(nl - (p + pos));
		if (ln <= QUEUE_STATE_LINE_MAX)
			state_apply_line(p + pos, ln, env);
		pos += ln + 1;
	}
}

/* trailer_number - the canonical decimal number ending at tail[end) (no
 * leading zero, at most 20 digits): 0, its value and where it starts */
static int trailer_number(const char *tail, size_t end, size_t *start, uint64_t *v)
{
	size_t d = end;
	while (d > 0 && tail[d - 1] >= '0' && tail[d - 1] <= '9')
		d--;
	size_t nd = end - d;
	if (nd == 0 || nd > 20 || (nd > 1 && tail[d] == '0'))
		return -1; /* canonical numbers only */
	if (str_parse_u64(tail + d, nd, v) < 0)
		return -1;
	*start = d;
	return 0;
}

/* queue_trailer_check - see queue_int.h. The marker is written last,
 * before the fsync, so a file cut short anywhere lacks it or has numbers
 * that do not add up to its size. (Content that itself ends in a copy of
 * the marker and is cut exactly there cannot be told apart; only a file
 * system that loses fsync'd data could produce it.) */
int queue_trailer_check(const char *tail, size_t tail_len, uint64_t file_size, uint64_t hdr_len, int version,
			uint64_t *gap, uint64_t *content_len)
{
	const size_t tag_len = sizeof(QUEUE_TRAILER_TAG) - 1;
	if (tail_len < tag_len + 2 || tail[tail_len - 1] != '\n' || (version != 1 && version != 2))
		return -1;
	uint64_t len, g = 0;
	size_t d;
	if (trailer_number(tail, tail_len - 1, &d, &len) < 0)
		return -1;
	if (version == 2) {
		if (d < 1 || tail[d - 1] != ' ' || trailer_number(tail, d - 1, &d, &g) < 0 || g > QUEUE_RESERVE)
			return -1;
	}
	if (d < tag_len || memcmp(tail + d - tag_len, QUEUE_TRAILER_TAG, tag_len) != 0)
		return -1;
	uint64_t trailer = tail_len - (d - tag_len);
	if (hdr_len > file_size || trailer > file_size - hdr_len || g > file_size - hdr_len - trailer ||
	    len != file_size - hdr_len - trailer - g)
		return -1;
	*gap = g;
	*content_len = len;
	return 0;
}
