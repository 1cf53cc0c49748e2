/*
 * conf - parse the configuration file and -o overrides against the table.
 * See conf.h for the syntax. Every error names FILE:LINE: key so operators
 * find it at once; start-up and `ternctl check` print the same lines.
 */
#include "conf/conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/netaddr.h"
#include "core/str.h"
#include "core/xalloc.h"

#define F(field) offsetof(struct conf, field)

static const struct conf_param conf_params[] = {
	{"hostname", CONF_TYPE_STRING, F(hostname), NULL, "our name: greeting, EHLO, Received, bounces (default: the system host name)"},
	{"smtp_listen", CONF_TYPE_LISTENERS, F(smtp_listen), "", "MX service listeners, addr:port list"},
	{"submission_listen", CONF_TYPE_LISTENERS, F(submission_listen), "", "submission listeners (STARTTLS then AUTH)"},
	{"submissions_listen", CONF_TYPE_LISTENERS, F(submissions_listen), "", "submission over implicit TLS"},
	{"local_domains", CONF_TYPE_LIST, F(local_domains), "", "domains whose mail is delivered here"},
	{"mail_dir", CONF_TYPE_PATH, F(mail_dir), "var/mail", "root of the Maildirs: <mail_dir>/<domain>/<localpart>/"},
	{"queue_dir", CONF_TYPE_PATH, F(queue_dir), "var/queue", "the durable queue"},
	{"users_file", CONF_TYPE_PATH, F(users_file), NULL, "accounts in Dovecot passwd-file format"},
	{"aliases_file", CONF_TYPE_PATH, F(aliases_file), NULL, "alias@domain: target[, target...]"},
	{"tls_cert", CONF_TYPE_PATH, F(tls_cert), NULL, "PEM certificate chain"},
	{"tls_key", CONF_TYPE_PATH, F(tls_key), NULL, "PEM private key"},
	{"dns_resolver", CONF_TYPE_ADDRPORT, F(dns_resolver), NULL, "send every DNS query to this server (addr:port)"},
	{"smtp_port", CONF_TYPE_UINT, F(smtp_port), "25", "TCP port for outbound delivery to MX hosts"},
	{"smtp_connect_timeout", CONF_TYPE_DURATION, F(smtp_connect_timeout), "30s", "outbound delivery: time allowed for the TCP connection to an MX host or the relayhost"},
	{"smtp_greeting_timeout", CONF_TYPE_DURATION, F(smtp_greeting_timeout), "5m", "outbound delivery: wait for the server's 220 greeting (RFC 5321 4.5.3.2.1)"},
	{"smtp_command_timeout", CONF_TYPE_DURATION, F(smtp_command_timeout), "5m", "outbound delivery: reply to EHLO, STARTTLS (and the TLS handshake), AUTH, MAIL, RCPT (4.5.3.2.2-3); DATA's 354 and RSET/QUIT wait at most 2m and 1m of it"},
	{"smtp_data_timeout", CONF_TYPE_DURATION, F(smtp_data_timeout), "10m", "outbound delivery: reply to the end of data (4.5.3.2.6); each block of content waits at most 3m of it"},
	{"dns_timeout", CONF_TYPE_DURATION, F(dns_timeout), "30s", "outbound delivery: deadline of one MX or address lookup; past it the recipients are deferred"},
	{"relayhost", CONF_TYPE_STRING, F(relayhost), NULL, "smarthost for all remote mail: [host]:port"},
	{"max_message_size", CONF_TYPE_SIZE, F(max_message_size), "26214400", "largest message accepted, bytes"},
	{"control_socket", CONF_TYPE_PATH, F(control_socket), "var/run/ternd.sock", "Unix socket for ternctl"},
	{"run_user", CONF_TYPE_STRING, F(run_user), "tern", "unprivileged user when started as root"},
	{"allow_root", CONF_TYPE_BOOL, F(allow_root), "no", "let run_user be root (tests, benchmarks); otherwise ternd refuses to deliver as root"},
	{"mynetworks", CONF_TYPE_LIST, F(mynetworks), "127.0.0.0/8, ::1/128", "trusted client networks allowed to relay"},
	{"max_recipients", CONF_TYPE_UINT, F(max_recipients), "100", "recipients per message (more get 452 4.5.3)"},
	{"max_connections", CONF_TYPE_UINT, F(max_connections), "1000", "concurrent SMTP sessions in total"},
	{"max_connections_per_ip", CONF_TYPE_UINT, F(max_connections_per_ip), "50", "concurrent SMTP sessions per client address"},
	{"max_errors", CONF_TYPE_UINT, F(max_errors), "10", "errors in a session before 421 and disconnect"},
	{"command_timeout", CONF_TYPE_DURATION, F(command_timeout), "5m", "idle time allowed waiting for a command (RFC 5321 4.5.3.2.7)"},
	{"data_timeout", CONF_TYPE_DURATION, F(data_timeout), "3m", "idle time allowed inside DATA/BDAT (RFC 5321 4.5.3.2.5)"},
	{"retry_min", CONF_TYPE_DURATION, F(retry_min), "5m", "first retry delay after a temporary failure"},
	{"retry_max", CONF_TYPE_DURATION, F(retry_max), "1h", "retry delay ceiling (the delay doubles up to it)"},
	{"queue_lifetime", CONF_TYPE_DURATION, F(queue_lifetime), "5d", "undelivered mail bounces after this"},
	{"delay_warning", CONF_TYPE_DURATION, F(delay_warning), "4h", "warn the sender after this delay (0 = off)"},
	{"delivery_workers", CONF_TYPE_UINT, F(delivery_workers), "4", "threads doing local delivery"},
	{"max_received_headers", CONF_TYPE_UINT, F(max_received_headers), "50", "more Received: headers is a mail loop (554 5.4.6)"},
	{"postmaster", CONF_TYPE_STRING, F(postmaster), NULL, "where failed bounces go (default postmaster@hostname)"},
	{"greet_pause", CONF_TYPE_DURATION, F(greet_pause), "0", "wait this long before the greeting; a client that talks first gets 554 (0 = off)"},
	{"auth_max_failures", CONF_TYPE_UINT, F(auth_max_failures), "10", "failed AUTH attempts from one address before it is refused (0 = never)"},
	{"auth_lockout", CONF_TYPE_DURATION, F(auth_lockout), "15m", "how long failures are remembered and an address stays refused"},
	{"rate_limit_user", CONF_TYPE_UINT, F(rate_limit_user), "0", "messages per hour per authenticated user (0 = no limit)"},
	{"rate_limit_ip", CONF_TYPE_UINT, F(rate_limit_ip), "0", "messages per hour per client address (0 = no limit)"},
	{"hide_client_address", CONF_TYPE_BOOL, F(hide_client_address), "no", "leave the client's address out of Received for authenticated submissions"},
	{"relayhost_auth_file", CONF_TYPE_PATH, F(relayhost_auth_file), NULL, "\"user:password\" for AUTH at the relayhost (one line, keep it owner-only); sent only under TLS"},
	{"smtp_tls_policy", CONF_TYPE_STRING, F(smtp_tls_policy), "may", "outbound TLS: none, may (opportunistic), encrypt (required) or verify (required, certificate checked)"},
	{"smtp_tls_policy_map", CONF_TYPE_LIST, F(smtp_tls_policy_map), "", "per-destination outbound TLS: domain:policy, ..."},
	{"smtp_tls_ca_file", CONF_TYPE_PATH, F(smtp_tls_ca_file), NULL, "CA certificates (PEM) for verify; default: the system store"},
	{"log_level", CONF_TYPE_STRING, F(log_level), "info", "debug, info, warn or err"},
	{"mail_auth", CONF_TYPE_BOOL, F(mail_auth), "yes", "verify SPF, DKIM and DMARC of mail from untrusted, unauthenticated clients and add Authentication-Results"},
	{"dmarc_enforce", CONF_TYPE_BOOL, F(dmarc_enforce), "yes", "refuse (550 5.7.1) mail failing DMARC whose domain publishes p=reject; p=quarantine holds it"},
	{"dkim_key_dir", CONF_TYPE_PATH, F(dkim_key_dir), "dkim", "DKIM signing keys: <dir>/<domain>/<selector>.rsa.pem and/or .ed25519.pem, as `ternctl dkim keygen` writes them (relative: beside the configuration file)"},
	{"dkim_selector", CONF_TYPE_STRING, F(dkim_selector), "tern", "DKIM selector used for signing"},
	{"dkim_sign", CONF_TYPE_BOOL, F(dkim_sign), "yes", "DKIM-sign mail from authenticated users, mynetworks and local submission when a key for the From domain exists"},
	{"milters", CONF_TYPE_LIST, F(milters), "", "milters run on every message, in order: unix:/path, inet:host:port, inet6:[addr]:port"},
	{"milter_connect_timeout", CONF_TYPE_DURATION, F(milter_connect_timeout), "10", "time allowed to connect to a milter"},
	{"milter_command_timeout", CONF_TYPE_DURATION, F(milter_command_timeout), "30", "time allowed for a milter's answer to a command"},
	{"milter_eom_timeout", CONF_TYPE_DURATION, F(milter_eom_timeout), "120", "time allowed for a milter's answer at the end of a message"},
	{"milter_default_action", CONF_TYPE_STRING, F(milter_default_action), "tempfail", "when a milter is down, times out or breaks the protocol: tempfail (4xx) or accept (skip it)"},
};

_Static_assert(sizeof(conf_params) / sizeof(conf_params[0]) <= 64, "struct conf_origin holds 64 keys");

const struct conf_param *conf_param_table(size_t *n)
{
	*n = sizeof(conf_params) / sizeof(conf_params[0]);
	return conf_params;
}

const char *conf_type_str(enum conf_type t)
{
	switch (t) {
	case CONF_TYPE_STRING: return "string";
	case CONF_TYPE_PATH: return "path";
	case CONF_TYPE_LIST: return "list";
	case CONF_TYPE_UINT: return "number";
	case CONF_TYPE_SIZE: return "size";
	case CONF_TYPE_DURATION: return "duration";
	case CONF_TYPE_ADDRPORT: return "addr:port";
	case CONF_TYPE_LISTENERS: return "addr:port list";
	case CONF_TYPE_BOOL: return "yes/no";
	}
	return "unknown";
}

static const struct conf_param *conf_param_find(const char *name)
{
	size_t n;
	const struct conf_param *t = conf_param_table(&n);
	for (size_t i = 0; i < n; i++)
		if (strcmp(t[i].name, name) == 0)
			return &t[i];
	return NULL;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

static void list_free(struct conf_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* parse_suffixed - a number with an optional unit suffix from units[] */
static int parse_suffixed(const char *v, const char *units, const uint64_t *mult, uint64_t *out)
{
	size_t n = strlen(v);
	uint64_t m = 1;
	if (n > 0) {
		const char *u = strchr(units, v[n - 1] | 0x20);
		if (u && v[n - 1] != '\0' && !(v[n - 1] >= '0' && v[n - 1] <= '9')) {
			m = mult[u - units];
			n--;
		}
	}
	uint64_t x;
	if (str_parse_u64(v, n, &x) < 0)
		return -1;
	if (m && x > UINT64_MAX / m)
		return -1;
	*out = x * m;
	return 0;
}

int conf_split_addrport(const char *s, char *host, size_t hostlen, unsigned *port)
{
	const char *colon;
	const char *h;
	size_t hl;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (close == NULL || close[1] != ':')
			return -1;
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
			return -1;
		h = s;
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || hl >= hostlen)
		return -1;
	uint64_t p;
	if (str_parse_u64(colon + 1, strlen(colon + 1), &p) < 0 || p == 0 || p > 65535)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (unsigned)p;
	return 0;
}

/* check_listener - a listener must be a numeric address and a port */
static const char *check_listener(const char *v)
{
	char host[256];
	unsigned port;
	if (conf_split_addrport(v, host, sizeof(host), &port) < 0)
		return "expected addr:port or [v6addr]:port";
	unsigned char a[16];
	if (inet_pton(AF_INET, host, a) != 1 && inet_pton(AF_INET6, host, a) != 1)
		return "listen address must be a numeric IPv4 or IPv6 address";
	return NULL;
}

/* conf_milter_addr_why - a milter address: unix:/absolute/path,
 * inet:host:port (host a name or IPv4 address), inet6:[addr]:port or
 * inet6:addr:port; NULL when good, else why not */
static const char *conf_milter_addr_why(const char *v)
{
	if (strncmp(v, "unix:", 5) == 0) {
		const char *path = v + 5;
		if (path[0] != '/')
			return "unix: needs an absolute socket path (unix:/run/milter.sock)";
		if (strlen(path) >= 108) /* sizeof(sun_path) */
			return "unix: socket path too long";
		return NULL;
	}
	int v6 = strncmp(v, "inet6:", 6) == 0;
	if (!v6 && strncmp(v, "inet:", 5) != 0)
		return "expected unix:/path, inet:host:port or inet6:[addr]:port";
	const char *hp = v + (v6 ? 6 : 5);
	char host[256];
	unsigned port;
	if (hp[0] != '[' && v6) {
		/* inet6:::1:port - the last colon separates the port */
		const char *colon = strrchr(hp, ':');
		if (colon == NULL || colon == hp || (size_t)(colon - hp) >= sizeof(host))
			return "expected inet6:[addr]:port";
		char buf[300];
		snprintf(buf, sizeof(buf), "[%.*s]%s", (int)(colon - hp), hp, colon);
		if (conf_split_addrport(buf, host, sizeof(host), &port) < 0)
			return "expected inet6:[addr]:port with a port 1-65535";
	} else if (conf_split_addrport(hp, host, sizeof(host), &port) < 0) {
		return v6 ? "expected inet6:[addr]:port with a port 1-65535"
			  : "expected inet:host:port with a port 1-65535";
	}
	unsigned char a[16];
	if (v6)
		return inet_pton(AF_INET6, host, a) == 1 ? NULL : "inet6: needs a numeric IPv6 address";
	if (inet_pton(AF_INET, host, a) == 1)
		return NULL;
	for (const char *q = host; *q; q++)
		if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
		      *q == '-' || *q == '.'))
			return "inet: host must be a host name or an IPv4 address";
	return NULL;
}

static char *resolve_path(const char *base_dir, const char *v)
{
	if (v[0] == '/' || base_dir == NULL)
		return xstrdup(v);
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_addf(&sb, "%s/%s", base_dir, v);
	return strbuf_detach(&sb);
}

/* conf_set - check one value against its type and store it; NULL or a reason */
static const char *conf_set(struct conf *c, const struct conf_param *p, const char *v,
			    const char *base_dir)
{
	void *field = (char *)c + p->offset;
	static const uint64_t size_mult[] = {1024ULL, 1024ULL * 1024, 1024ULL * 1024 * 1024};
	static const uint64_t dur_mult[] = {1, 60, 3600, 86400, 604800};
	uint64_t x;

	switch (p->type) {
	case CONF_TYPE_STRING:
	case CONF_TYPE_PATH:
	case CONF_TYPE_ADDRPORT: {
		char **s = field;
		/* a key with a default is one the daemon needs: it may be changed,
		 * never emptied */
		if (*v == '\0' && p->def != NULL)
			return "must not be empty";
		if (p->type == CONF_TYPE_ADDRPORT && *v) {
			char host[256];
			unsigned port;
			if (conf_split_addrport(v, host, sizeof(host), &port) < 0)
				return "expected addr:port or [v6addr]:port";
		}
		free(*s);
		if (*v == '\0')
			*s = NULL;
		else
			*s = p->type == CONF_TYPE_PATH ? resolve_path(base_dir, v) : xstrdup(v);
		return NULL;
	}
	case CONF_TYPE_LIST:
	case CONF_TYPE_LISTENERS: {
		struct conf_list *l = field;
		list_free(l);
		char *copy = xstrdup(v);
		char *save = NULL;
		for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			char *t = trim(tok);
			if (*t == '\0')
				continue;
			if (p->type == CONF_TYPE_LISTENERS) {
				const char *why = check_listener(t);
				if (why) {
					free(copy);
					list_free(l);
					return why;
				}
			}
			l->v = xrealloc(l->v, (l->n + 1) * sizeof(char *));
			l->v[l->n++] = xstrdup(t);
		}
		free(copy);
		return NULL;
	}
	case CONF_TYPE_UINT:
		if (str_parse_u64(v, strlen(v), &x) < 0)
			return "expected a non-negative whole number";
		*(uint64_t *)field = x;
		return NULL;
	case CONF_TYPE_SIZE:
		if (parse_suffixed(v, "kmg", size_mult, &x) < 0)
			return "expected a size in bytes (optionally with k, m or g)";
		*(uint64_t *)field = x;
		return NULL;
	case CONF_TYPE_BOOL:
		if (str_casecmp_ascii(v, "yes") == 0 || str_casecmp_ascii(v, "true") == 0 || strcmp(v, "1") == 0)
			x = 1;
		else if (str_casecmp_ascii(v, "no") == 0 || str_casecmp_ascii(v, "false") == 0 || strcmp(v, "0") == 0)
			x = 0;
		else
			return "expected yes or no";
		*(uint64_t *)field = x;
		return NULL;
	case CONF_TYPE_DURATION:
		if (parse_suffixed(v, "smhdw", dur_mult, &x) < 0)
			return "expected a duration (number with s, m, h, d or w)";
		*(uint64_t *)field = x;
		return NULL;
	}
	return "unknown type";
}

/* where each key was last set: cross-key checks report that line */
struct conf_origin {
	const char *file[64];
	size_t line[64];
};

static void conf_err(struct strbuf *errs, const char *file, size_t line, const char *key,
		     const char *why)
{
	strbuf_addf(errs, "%s:%zu: %s: %s\n", file, line, key, why);
}

/* conf_apply_line - one "key = value" line; counts errors into *nerr */
static void conf_apply_line(struct conf *c, char *line, const char *file, size_t lineno,
			    const char *base_dir, struct conf_origin *org, struct strbuf *errs, int *nerr)
{
	char *hash = strchr(line, '#');
	if (hash)
		*hash = '\0';
	char *s = trim(line);
	if (*s == '\0')
		return;
	char *eq = strchr(s, '=');
	if (eq == NULL) {
		conf_err(errs, file, lineno, trim(s), "expected key = value");
		(*nerr)++;
		return;
	}
	*eq = '\0';
	char *key = trim(s);
	char *val = trim(eq + 1);
	const struct conf_param *p = conf_param_find(key);
	if (p == NULL) {
		conf_err(errs, file, lineno, key, "unknown key");
		(*nerr)++;
		return;
	}
	size_t np;
	size_t idx = (size_t)(p - conf_param_table(&np));
	org->file[idx] = file;
	org->line[idx] = lineno;
	const char *why = conf_set(c, p, val, base_dir);
	if (why) {
		conf_err(errs, file, lineno, key, why);
		(*nerr)++;
	}
}

/* conf_err_at - report against the line that set key (or FILE:0 for a default) */
static void conf_err_at(struct strbuf *errs, const struct conf_origin *org, const char *deffile,
			const char *key, const char *why)
{
	const struct conf_param *p = conf_param_find(key);
	size_t np;
	size_t idx = p ? (size_t)(p - conf_param_table(&np)) : 0;
	if (p && org->file[idx])
		conf_err(errs, org->file[idx], org->line[idx], key, why);
	else
		conf_err(errs, deffile, 0, key, why);
}

/* conf_check - rules that span keys or need the whole file */
static void conf_check(struct conf *c, const struct conf_origin *org, const char *deffile,
		       struct strbuf *errs, int *nerr)
{
	if ((c->tls_cert == NULL) != (c->tls_key == NULL)) {
		conf_err_at(errs, org, deffile, c->tls_cert ? "tls_key" : "tls_cert",
			 "tls_cert and tls_key must be set together");
		(*nerr)++;
	}
	if (c->submissions_listen.n && c->tls_cert == NULL) {
		conf_err_at(errs, org, deffile, "submissions_listen", "implicit TLS needs tls_cert and tls_key");
		(*nerr)++;
	}
	if (c->smtp_port == 0 || c->smtp_port > 65535) {
		conf_err_at(errs, org, deffile, "smtp_port", "must be 1 to 65535");
		(*nerr)++;
	}
	{
		/* outbound timeouts: 0 would not mean "never" */
		static const char *const ot[] = {"smtp_connect_timeout", "smtp_greeting_timeout",
						 "smtp_command_timeout", "smtp_data_timeout", "dns_timeout"};
		const uint64_t otv[] = {c->smtp_connect_timeout, c->smtp_greeting_timeout, c->smtp_command_timeout,
					c->smtp_data_timeout, c->dns_timeout};
		for (size_t i = 0; i < sizeof(otv) / sizeof(otv[0]); i++) {
			if (otv[i] == 0 || otv[i] > 3600) {
				conf_err_at(errs, org, deffile, ot[i], "must be 1s to 1h");
				(*nerr)++;
			}
		}
	}
	if (c->max_message_size < 1024) {
		conf_err_at(errs, org, deffile, "max_message_size", "must be at least 1024");
		(*nerr)++;
	}
	if (c->max_recipients == 0) {
		conf_err_at(errs, org, deffile, "max_recipients", "must be at least 1");
		(*nerr)++;
	}
	if (c->delivery_workers == 0 || c->delivery_workers > 256) {
		conf_err_at(errs, org, deffile, "delivery_workers", "must be 1 to 256");
		(*nerr)++;
	}
	if (c->retry_min == 0 || c->retry_max < c->retry_min) {
		conf_err_at(errs, org, deffile, "retry_max", "retry_min must be positive and not above retry_max");
		(*nerr)++;
	}
	static const char *const pols[] = {"none", "may", "encrypt", "verify"};
	int polok = 0;
	for (size_t i = 0; i < 4; i++)
		polok |= strcmp(c->smtp_tls_policy, pols[i]) == 0;
	if (!polok) {
		conf_err_at(errs, org, deffile, "smtp_tls_policy", "expected none, may, encrypt or verify");
		(*nerr)++;
	}
	for (size_t i = 0; i < c->smtp_tls_policy_map.n; i++) {
		const char *e = c->smtp_tls_policy_map.v[i];
		const char *colon = strrchr(e, ':');
		int ok = colon && colon != e;
		if (ok) {
			ok = 0;
			for (size_t k = 0; k < 4; k++)
				ok |= strcmp(colon + 1, pols[k]) == 0;
		}
		if (!ok) {
			conf_err_at(errs, org, deffile, "smtp_tls_policy_map", "expected domain:policy entries (none, may, encrypt, verify)");
			(*nerr)++;
			break;
		}
	}
	const char *lv = c->log_level;
	if (strcmp(lv, "debug") && strcmp(lv, "info") && strcmp(lv, "warn") && strcmp(lv, "err")) {
		conf_err_at(errs, org, deffile, "log_level", "expected debug, info, warn or err");
		(*nerr)++;
	}
	for (size_t i = 0; i < c->milters.n; i++) {
		const char *why = conf_milter_addr_why(c->milters.v[i]);
		if (why) {
			char msg[400];
			snprintf(msg, sizeof(msg), "%.200s: %s", c->milters.v[i], why);
			conf_err_at(errs, org, deffile, "milters", msg);
			(*nerr)++;
		}
	}
	if (strcmp(c->milter_default_action, "tempfail") && strcmp(c->milter_default_action, "accept")) {
		conf_err_at(errs, org, deffile, "milter_default_action", "expected tempfail or accept");
		(*nerr)++;
	}
	static const char *const mt[] = {"milter_connect_timeout", "milter_command_timeout", "milter_eom_timeout"};
	const uint64_t mtv[] = {c->milter_connect_timeout, c->milter_command_timeout, c->milter_eom_timeout};
	for (size_t i = 0; i < 3; i++) {
		if (mtv[i] == 0 || mtv[i] > 3600) {
			conf_err_at(errs, org, deffile, mt[i], "must be 1s to 1h");
			(*nerr)++;
		}
	}
	{
		const char *sel = c->dkim_selector;
		int ok = sel[0] != '.' && sel[strlen(sel) - 1] != '.' && strstr(sel, "..") == NULL &&
			 strlen(sel) <= 63;
		for (const char *q = sel; ok && *q; q++)
			ok = (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
			     *q == '-' || *q == '.' || *q == '_';
		if (!ok) {
			conf_err_at(errs, org, deffile, "dkim_selector",
				    "letters, digits, '-', '_' and inner '.' only, at most 63 octets");
			(*nerr)++;
		}
	}
	if (c->relayhost) {
		char host[256];
		unsigned port;
		if (c->relayhost[0] == '[' ? conf_split_addrport(c->relayhost, host, sizeof(host), &port) < 0
					   : strchr(c->relayhost, ' ') != NULL) {
			conf_err_at(errs, org, deffile, "relayhost", "expected [host]:port or host");
			(*nerr)++;
		}
	}
	for (size_t i = 0; i < c->local_domains.n; i++) {
		str_lower_ascii(c->local_domains.v[i]);
		const char *d = c->local_domains.v[i];
		for (const char *q = d; *q; q++) {
			if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '-' || *q == '.')) {
				conf_err_at(errs, org, deffile, "local_domains", "a domain holds only letters, digits, '-' and '.'");
				(*nerr)++;
				break;
			}
		}
	}
	if (c->hostname == NULL) {
		char h[256];
		if (gethostname(h, sizeof(h)) < 0)
			snprintf(h, sizeof(h), "localhost");
		h[sizeof(h) - 1] = '\0';
		c->hostname = xstrdup(h);
	}
	for (const char *q = c->hostname; *q; q++) {
		if (*q <= ' ' || *q >= 0x7f) {
			conf_err_at(errs, org, deffile, "hostname", "must be a plain domain name");
			(*nerr)++;
			break;
		}
	}
	for (size_t i = 0; i < c->mynetworks.n; i++) {
		if (netaddr_check_cidr(c->mynetworks.v[i]) < 0) {
			conf_err_at(errs, org, deffile, "mynetworks", "expected addr or addr/prefixlen entries");
			(*nerr)++;
			break;
		}
	}
	if (c->postmaster == NULL) {
		struct strbuf sb;
		strbuf_init(&sb);
		strbuf_addf(&sb, "postmaster@%s", c->hostname);
		c->postmaster = strbuf_detach(&sb);
	}
}

/* conf_load_stream - defaults, then the file's lines, then -o overrides */
static int conf_load_stream(struct conf *c, const char *path, FILE *f, char *const *overrides,
			    size_t n_overrides, struct strbuf *errs)
{
	memset(c, 0, sizeof(*c));
	int nerr = 0;
	struct conf_origin org;
	memset(&org, 0, sizeof(org));
	size_t np;
	const struct conf_param *t = conf_param_table(&np);

	/* relative paths in defaults and -o are relative to the file's directory,
	 * or to the working directory for /dev/null (CONTRACT.md) */
	char *base_dir = NULL;
	if (strcmp(path, "/dev/null") != 0) {
		const char *slash = strrchr(path, '/');
		base_dir = slash ? xstrndup(path, (size_t)(slash - path)) : xstrdup(".");
		if (base_dir[0] == '\0') {
			free(base_dir);
			base_dir = xstrdup("/");
		}
	}

	for (size_t i = 0; i < np; i++)
		if (t[i].def)
			(void)conf_set(c, &t[i], t[i].def, base_dir);

	char *line = NULL;
	size_t cap = 0;
	size_t lineno = 0;
	ssize_t r;
	while ((r = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (memchr(line, '\0', (size_t)r) != NULL) {
			conf_err(errs, path, lineno, "(line)", "contains a NUL byte");
			nerr++;
			continue;
		}
		conf_apply_line(c, line, path, lineno, base_dir, &org, errs, &nerr);
	}
	free(line);

	for (size_t i = 0; i < n_overrides; i++) {
		char *o = xstrdup(overrides[i]);
		if (strchr(o, '=') == NULL) {
			conf_err(errs, "-o", i + 1, o, "expected key=value");
			nerr++;
		} else {
			conf_apply_line(c, o, "-o", i + 1, base_dir, &org, errs, &nerr);
		}
		free(o);
	}
	conf_check(c, &org, path, errs, &nerr);
	free(base_dir);
	return nerr ? -1 : 0;
}

int conf_load(struct conf *c, const char *path, char *const *overrides, size_t n_overrides,
	      struct strbuf *errs)
{
	FILE *f = fopen(path, "re");
	if (f == NULL) {
		memset(c, 0, sizeof(*c));
		strbuf_addf(errs, "%s:0: (file): %s\n", path, strerror(errno));
		return -1;
	}
	int r = conf_load_stream(c, path, f, overrides, n_overrides, errs);
	fclose(f);
	return r;
}

int conf_load_mem(struct conf *c, const char *name, const char *data, size_t len,
		  char *const *overrides, size_t n_overrides, struct strbuf *errs)
{
	static const char empty[1];
	FILE *f = fmemopen(len ? (void *)data : (void *)empty, len ? len : 1, "r");
	if (f == NULL) {
		memset(c, 0, sizeof(*c));
		strbuf_addf(errs, "%s:0: (file): %s\n", name, strerror(errno));
		return -1;
	}
	if (len == 0)
		(void)fgetc(f); /* consume the placeholder byte: an empty file */
	int r = conf_load_stream(c, name, f, overrides, n_overrides, errs);
	fclose(f);
	return r;
}

void conf_free(struct conf *c)
{
	size_t np;
	const struct conf_param *t = conf_param_table(&np);
	for (size_t i = 0; i < np; i++) {
		void *field = (char *)c + t[i].offset;
		switch (t[i].type) {
		case CONF_TYPE_STRING:
		case CONF_TYPE_PATH:
		case CONF_TYPE_ADDRPORT:
			free(*(char **)field);
			*(char **)field = NULL;
			break;
		case CONF_TYPE_LIST:
		case CONF_TYPE_LISTENERS:
			list_free(field);
			break;
		default:
			break;
		}
	}
}

int conf_is_local_domain(const struct conf *c, const char *domain, size_t len)
{
	for (size_t i = 0; i < c->local_domains.n; i++) {
		const char *d = c->local_domains.v[i];
		if (strlen(d) == len && str_ncasecmp_ascii(d, domain, len) == 0)
			return 1;
	}
	return 0;
}
