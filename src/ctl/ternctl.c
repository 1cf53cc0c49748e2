/*
 * ternctl - the administration tool: configuration check, parameter
 * documentation, the queue commands it sends to ternd over the control
 * socket, accounts (ctl_user.c) and sendmail-compatible injection
 * (ctl_sendmail.c).
 *
 *   ternctl [-c FILE] [-o key=value]... COMMAND [ARGS]
 *   sendmail [options] [recipients...]   (ternctl installed as "sendmail")
 *
 * Commands are one table (name, handler, usage).
 *
 * Exports: main; ternctl_conf_load, ternctl_connect, ternctl_send_request,
 * ternctl_print_safe for the other parts (ternctl.h).
 * Trusts: the configuration file is parsed strictly by conf_load; the
 * daemon's replies are printed with control characters escaped.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "ctl/ternctl.h"
#include "lookup/lookup.h"
#include "queue/queue.h"
#include "sched/sched.h"

#define TERNCTL_REPLY_MAX (64 * 1024 * 1024)

struct ternctl_cmd {
	const char *name;
	int (*run)(struct ternctl *t, int argc, char **argv);
	const char *usage;
};

static const char ternctl_usage_text[] =
	"usage: ternctl [-c FILE] [-o key=value]... COMMAND [ARGS]\n"
	"\n"
	"  -c FILE         configuration file (default " TERNCTL_DEFAULT_CONF ")\n"
	"  -o key=value    override one configuration key (repeatable)\n"
	"\n"
	"commands:\n";

static const struct ternctl_cmd *ternctl_commands(size_t *n);

/* ternctl_usage - the usage text on stderr; exit code 2 */
static int ternctl_usage(void)
{
	size_t n;
	const struct ternctl_cmd *cmds = ternctl_commands(&n);
	fputs(ternctl_usage_text, stderr);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "  %s\n", cmds[i].usage);
	return TERNCTL_EXIT_USAGE;
}

/* ternctl_conf_load - load the configuration, printing every error */
int ternctl_conf_load(struct ternctl *t)
{
	if (t->conf_loaded)
		return 0;
	struct strbuf errs;
	strbuf_init(&errs);
	int r = conf_load(&t->conf, t->conf_path, t->overrides, t->n_overrides, &errs);
	if (errs.len)
		fputs(errs.s, stderr);
	strbuf_free(&errs);
	if (r < 0) {
		conf_free(&t->conf);
		return -1;
	}
	t->conf_loaded = 1;
	return 0;
}

/* ternctl_check - validate the configuration and the tables it names */
static int ternctl_check(struct ternctl *t, int argc, char **argv)
{
	if (argc != 1)
		return ternctl_usage();
	if (ternctl_conf_load(t) < 0)
		return TERNCTL_EXIT_FAIL;
	struct strbuf errs;
	strbuf_init(&errs);
	struct lookup_tables *lt = lookup_load(t->conf.users_file, t->conf.aliases_file, &errs);
	if (errs.len)
		fputs(errs.s, stderr);
	strbuf_free(&errs);
	if (lt == NULL)
		return TERNCTL_EXIT_FAIL;
	lookup_free(lt);
	printf("configuration OK\n");
	return TERNCTL_EXIT_OK;
}

/* ternctl_conf - the parameter table: name, type, default, doc */
static int ternctl_conf(struct ternctl *t, int argc, char **argv)
{
	if (argc != 1)
		return ternctl_usage();
	size_t n;
	const struct conf_param *p = conf_param_table(&n);
	for (size_t i = 0; i < n; i++) {
		printf("%s = %s\n", p[i].name, p[i].def ? p[i].def : "");
		printf("    # %s (%s)\n", p[i].doc, conf_type_str(p[i].type));
	}
	return TERNCTL_EXIT_OK;
}

/* ternctl_print_safe - daemon output to the terminal, controls escaped */
void ternctl_print_safe(FILE *f, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
}

int ternctl_connect(const struct ternctl *t)
{
	const char *path = t->conf.control_socket;
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int ternctl_send_request(int fd, const char *line, struct strbuf *reply, char *err, size_t errlen)
{
	struct strbuf req;
	strbuf_init(&req);
	strbuf_addf(&req, "%s\n", line);
	size_t off = 0;
	while (off < req.len) {
		ssize_t w = send(fd, req.s + off, req.len - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			snprintf(err, errlen, "sending to ternd: %s", strerror(errno));
			strbuf_free(&req);
			return -1;
		}
		off += (size_t)w;
	}
	strbuf_free(&req);
	shutdown(fd, SHUT_WR);

	char buf[8192];
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "reading from ternd: %s", strerror(errno));
			return -1;
		}
		if (r == 0)
			return 0;
		if (reply->len + (size_t)r > TERNCTL_REPLY_MAX) {
			snprintf(err, errlen, "reply from ternd too large");
			return -1;
		}
		strbuf_add(reply, buf, (size_t)r);
	}
}

/* ternctl_request - send one line to ternd; print the body; exit code */
static int ternctl_request(struct ternctl *t, const char *line)
{
	if (ternctl_conf_load(t) < 0)
		return TERNCTL_EXIT_FAIL;
	int fd = ternctl_connect(t);
	if (fd < 0) {
		fprintf(stderr, "ternctl: cannot reach ternd at %s: %s (is ternd running?)\n",
			t->conf.control_socket ? t->conf.control_socket : "(unset)", strerror(errno));
		return TERNCTL_EXIT_FAIL;
	}
	struct strbuf reply;
	strbuf_init(&reply);
	char err[256];
	if (ternctl_send_request(fd, line, &reply, err, sizeof(err)) < 0) {
		fprintf(stderr, "ternctl: %s\n", err);
		strbuf_free(&reply);
		close(fd);
		return TERNCTL_EXIT_FAIL;
	}
	close(fd);

	int rc;
	if (reply.len >= 3 && memcmp(reply.s, "OK\n", 3) == 0) {
		ternctl_print_safe(stdout, reply.s + 3, reply.len - 3);
		rc = TERNCTL_EXIT_OK;
	} else if (reply.len >= 4 && memcmp(reply.s, "ERR ", 4) == 0) {
		fputs("ternctl: ", stderr);
		ternctl_print_safe(stderr, reply.s + 4, reply.len - 4);
		if (reply.s[reply.len - 1] != '\n')
			fputc('\n', stderr);
		rc = TERNCTL_EXIT_FAIL;
	} else {
		fprintf(stderr, "ternctl: unexpected reply from ternd\n");
		rc = TERNCTL_EXIT_FAIL;
	}
	strbuf_free(&reply);
	return rc;
}

/* ternctl_queue - "queue [list]" and "queue show|flush|delete|hold|release ID" */
static int ternctl_queue(struct ternctl *t, int argc, char **argv)
{
	static const char *const with_id[] = {"show", "flush", "delete", "hold", "release"};
	if (argc == 1 || (argc == 2 && strcmp(argv[1], "list") == 0))
		return ternctl_request(t, "queue list");
	if (argc == 2 && strcmp(argv[1], "flush") == 0)
		return ternctl_request(t, "queue flush");
	if (argc != 3)
		return ternctl_usage();
	for (size_t i = 0; i < sizeof(with_id) / sizeof(with_id[0]); i++) {
		if (strcmp(argv[1], with_id[i]) != 0)
			continue;
		if (!queue_id_valid(argv[2])) {
			fprintf(stderr, "ternctl: invalid queue ID: %s\n", argv[2]);
			return TERNCTL_EXIT_USAGE;
		}
		char line[64];
		snprintf(line, sizeof(line), "queue %s %s", argv[1], argv[2]);
		return ternctl_request(t, line);
	}
	return ternctl_usage();
}

/* ternctl_ping - is ternd answering? */
static int ternctl_ping(struct ternctl *t, int argc, char **argv)
{
	if (argc != 1)
		return ternctl_usage();
	return ternctl_request(t, "ping");
}

/* ternctl_reload - ternd re-reads its configuration and tables (as SIGHUP) */
static int ternctl_reload(struct ternctl *t, int argc, char **argv)
{
	if (argc != 1)
		return ternctl_usage();
	return ternctl_request(t, "reload");
}

/* ternctl_sendmail - "ternctl sendmail ...": the sendmail(1) interface */
static int ternctl_sendmail(struct ternctl *t, int argc, char **argv)
{
	return ctl_sendmail_run(t, argc, argv, "ternctl sendmail");
}

/* ternctl_stats - scheduler counters */
static int ternctl_stats(struct ternctl *t, int argc, char **argv)
{
	if (argc != 1)
		return ternctl_usage();
	return ternctl_request(t, "stats");
}

static const struct ternctl_cmd ternctl_cmd_table[] = {
	{"check", ternctl_check, "check                      validate the configuration and tables"},
	{"conf", ternctl_conf, "conf                       list every parameter with its default"},
	{"queue", ternctl_queue, "queue [list]               list queued messages"},
	{"queue", ternctl_queue, "queue show|flush|delete|hold|release ID"},
	{"queue", ternctl_queue, "queue flush                retry every queued message now"},
	{"ping", ternctl_ping, "ping                       check that ternd answers"},
	{"stats", ternctl_stats, "stats                      scheduler counters"},
	{"reload", ternctl_reload, "reload                     ternd re-reads configuration and tables"},
	{"user", ctl_user_run, "user add|passwd|del USER@DOMAIN   manage accounts (password on stdin)"},
	{"user", ctl_user_run, "user list                  list the accounts"},
	{"dkim", ctl_dkim_run, "dkim keygen DOMAIN SELECTOR [--type rsa|ed25519] [--dir DIR]  create a signing key, print its TXT record"},
	{"sendmail", ternctl_sendmail, "sendmail [-t] [-i] [-f SENDER] [-F NAME] [RCPT...]  submit a message"},
};

/* ternctl_commands - the command table */
static const struct ternctl_cmd *ternctl_commands(size_t *n)
{
	*n = sizeof(ternctl_cmd_table) / sizeof(ternctl_cmd_table[0]);
	return ternctl_cmd_table;
}

int main(int argc, char **argv)
{
	struct ternctl t;
	memset(&t, 0, sizeof(t));
	t.conf_path = TERNCTL_DEFAULT_CONF;
	/* installed as "sendmail" (a symlink): programs call us with
	 * sendmail(1)'s options, not ternctl's */
	char *base = argc > 0 ? strrchr(argv[0], '/') : NULL;
	base = base ? base + 1 : (argc > 0 ? argv[0] : "");
	if (strcmp(base, "sendmail") == 0) {
		int r = ctl_sendmail_run(&t, argc, argv, "sendmail");
		if (t.conf_loaded)
			conf_free(&t.conf);
		return r;
	}
	int opt;
	/* '+': stop at the command so its own arguments are not options */
	while ((opt = getopt(argc, argv, "+c:o:h")) != -1) {
		switch (opt) {
		case 'c':
			t.conf_path = optarg;
			break;
		case 'o':
			if (t.n_overrides == TERNCTL_OVERRIDES_MAX || strchr(optarg, '=') == NULL)
				return ternctl_usage();
			t.overrides[t.n_overrides++] = optarg;
			break;
		default:
			return ternctl_usage();
		}
	}
	if (optind >= argc)
		return ternctl_usage();
	size_t n;
	const struct ternctl_cmd *cmds = ternctl_commands(&n);
	int rc = -1;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(cmds[i].name, argv[optind]) == 0) {
			rc = cmds[i].run(&t, argc - optind, argv + optind);
			break;
		}
	}
	if (rc < 0) {
		fprintf(stderr, "ternctl: unknown command: %s\n", argv[optind]);
		rc = ternctl_usage();
	}
	if (t.conf_loaded)
		conf_free(&t.conf);
	return rc;
}
