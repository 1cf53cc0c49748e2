/*
 * ternctl - what the parts of the administration tool share: the parsed
 * command line and configuration, and the connection to ternd's control
 * socket. Internal to the ternctl program (the files in src/ctl/).
 *
 * Exports:
 *   struct ternctl          the command line options and loaded configuration
 *   ternctl_conf_load       load the configuration once, errors on stderr
 *   ternctl_connect         connect to the control socket; errno on failure
 *   ternctl_send_request    send one request line, read the whole answer
 *   ternctl_print_safe      daemon/server text to a terminal, controls escaped
 *   ctl_user_run            "user add|passwd|del|list" (ctl_user.c)
 *   ctl_sendmail_run        "sendmail [options] [rcpt...]" (ctl_sendmail.c)
 * Trusts: nothing the daemon says is printed unescaped.
 */
#ifndef TERN_CTL_TERNCTL_H
#define TERN_CTL_TERNCTL_H

#include <stddef.h>
#include <stdio.h>

#include "conf/conf.h"
#include "core/buf.h"

#define TERNCTL_DEFAULT_CONF "/etc/tern/ternd.conf"
#define TERNCTL_OVERRIDES_MAX 64

enum ternctl_exit {
	TERNCTL_EXIT_OK = 0,
	TERNCTL_EXIT_FAIL = 1,
	TERNCTL_EXIT_USAGE = 2,
};

struct ternctl {
	const char *conf_path;
	char *overrides[TERNCTL_OVERRIDES_MAX];
	size_t n_overrides;
	struct conf conf;
	int conf_loaded;
};

/* ternctl_conf_load - load t->conf unless loaded; 0, or -1 after printing why */
int ternctl_conf_load(struct ternctl *t);

/*
 * ternctl_connect - a connected stream socket to the control socket of the
 * loaded configuration, or -1 with errno set (ENAMETOOLONG for a bad path;
 * ENOENT / ECONNREFUSED when ternd is not running).
 */
int ternctl_connect(const struct ternctl *t);

/*
 * ternctl_send_request - send "line\n" on fd, half-close, and read the
 * answer (capped) into reply. 0, or -1 with a reason in err.
 */
int ternctl_send_request(int fd, const char *line, struct strbuf *reply, char *err, size_t errlen);

/* ternctl_print_safe - n bytes to f, control characters as \xNN */
void ternctl_print_safe(FILE *f, const char *p, size_t n);

int ctl_user_run(struct ternctl *t, int argc, char **argv);
int ctl_dkim_run(struct ternctl *t, int argc, char **argv);
int ctl_sendmail_run(struct ternctl *t, int argc, char **argv, const char *progname);

#endif
