/*
 * conf - the configuration: one table of parameters (name, type, default,
 * one-line doc) used by the parser, `ternctl check` and the documentation.
 *
 * File syntax (CONTRACT.md): `key = value` lines, `#` starts a comment,
 * lists are comma-separated, relative paths are relative to the directory
 * of the file (for /dev/null, to the working directory), unknown keys are
 * an error. `-o key=value` overrides are applied after the file.
 *
 * Exports:
 *   struct conf            the parsed values, one field per parameter
 *   conf_load              parse a file plus overrides; errors are lines
 *                          "FILE:LINE: key: what is wrong" in errs
 *   conf_free              release a loaded configuration
 *   conf_param_table       the table, for docs and `ternctl conf`
 *   conf_is_local_domain   case-insensitive membership in local_domains
 * Trusts nothing in the file: every value is checked against its type.
 */
#ifndef TERN_CONF_CONF_H
#define TERN_CONF_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct conf_list {
	char **v;
	size_t n;
};

struct conf {
	char *hostname;
	struct conf_list smtp_listen;
	struct conf_list submission_listen;
	struct conf_list submissions_listen;
	struct conf_list local_domains; /* lowercased */
	char *mail_dir;
	char *queue_dir;
	char *users_file;
	char *aliases_file;
	char *tls_cert;
	char *tls_key;
	char *dns_resolver;
	uint64_t smtp_port;
	uint64_t smtp_connect_timeout;  /* seconds: outbound TCP connect */
	uint64_t smtp_greeting_timeout; /* seconds: outbound 220 (RFC 5321 4.5.3.2.1) */
	uint64_t smtp_command_timeout;  /* seconds: outbound EHLO..RCPT replies */
	uint64_t smtp_data_timeout;     /* seconds: outbound reply to the end of data */
	uint64_t dns_timeout;           /* seconds: one outbound MX/address lookup */
	char *relayhost;
	uint64_t max_message_size;
	char *control_socket;
	char *run_user;
	struct conf_list mynetworks;
	uint64_t allow_root;       /* bool: run_user may be root */
	uint64_t max_recipients;
	uint64_t max_connections;
	uint64_t max_connections_per_ip;
	uint64_t max_errors;
	uint64_t command_timeout;  /* seconds */
	uint64_t data_timeout;     /* seconds */
	uint64_t retry_min;        /* seconds */
	uint64_t retry_max;        /* seconds */
	uint64_t queue_lifetime;   /* seconds */
	uint64_t delay_warning;    /* seconds, 0 = off */
	uint64_t delivery_workers;
	uint64_t max_received_headers;
	char *postmaster;
	uint64_t greet_pause;      /* seconds, 0 = off */
	uint64_t auth_max_failures;
	uint64_t auth_lockout;     /* seconds */
	uint64_t rate_limit_user;  /* messages per hour, 0 = off */
	uint64_t rate_limit_ip;    /* messages per hour, 0 = off */
	uint64_t hide_client_address; /* bool */
	char *smtp_tls_policy;
	struct conf_list smtp_tls_policy_map;
	char *smtp_tls_ca_file;
	char *relayhost_auth_file;
	char *log_level;
	/* mail authentication and milters (issue #5) */
	uint64_t mail_auth;        /* bool: verify SPF/DKIM/DMARC on MX mail */
	uint64_t dmarc_enforce;    /* bool: DMARC p=reject failing -> 550 */
	char *dkim_key_dir;
	char *dkim_selector;
	uint64_t dkim_sign;        /* bool: sign authenticated / trusted mail */
	struct conf_list milters;  /* unix:/path, inet:host:port, inet6:[addr]:port */
	uint64_t milter_connect_timeout; /* seconds */
	uint64_t milter_command_timeout; /* seconds */
	uint64_t milter_eom_timeout;     /* seconds */
	char *milter_default_action;     /* tempfail or accept */
};

enum conf_type {
	CONF_TYPE_STRING,
	CONF_TYPE_PATH,
	CONF_TYPE_LIST,
	CONF_TYPE_UINT,
	CONF_TYPE_SIZE,     /* bytes, with optional k/m/g suffix */
	CONF_TYPE_DURATION, /* seconds, with optional s/m/h/d suffix */
	CONF_TYPE_ADDRPORT, /* addr:port or [v6]:port */
	CONF_TYPE_LISTENERS, /* list of addr:port */
	CONF_TYPE_BOOL,     /* yes/no, stored as 0/1 in a uint64_t */
};

const char *conf_type_str(enum conf_type t);

struct conf_param {
	const char *name;
	enum conf_type type;
	size_t offset;        /* into struct conf */
	const char *def;      /* default as it would be written in the file; NULL = unset */
	const char *doc;
};

const struct conf_param *conf_param_table(size_t *n);

/* conf_load - 0 when good; -1 with one error line per problem in errs */
int conf_load(struct conf *c, const char *path, char *const *overrides, size_t n_overrides,
	      struct strbuf *errs);
/* conf_load_mem - the same from memory (tests, fuzzing); name is used in errors
 * and, like a path, for the directory of relative paths */
int conf_load_mem(struct conf *c, const char *name, const char *data, size_t len,
		  char *const *overrides, size_t n_overrides, struct strbuf *errs);
/* conf_free - release; conf_free after a failed load is allowed */
void conf_free(struct conf *c);

int conf_is_local_domain(const struct conf *c, const char *domain, size_t len);

/* conf_split_addrport - "1.2.3.4:25" / "[::1]:25" / "[host]:25" into host and port */
int conf_split_addrport(const char *s, char *host, size_t hostlen, unsigned *port);

#endif
