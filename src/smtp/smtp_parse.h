/*
 * smtp_parse - the pure SMTP protocol parser: bytes in, commands out. No I/O,
 * no allocation, no global state; every function is safe on any input.
 *
 * Exports:
 *   smtp_line_next        find the next CRLF-terminated command line in a
 *                         buffer: OK, NEED_MORE, BARE_LF/BARE_CR (a lone LF
 *                         or CR: refused, the SMTP-smuggling rule), TOO_LONG
 *   smtp_line_skip        discard the rest of an over-long line to its CRLF
 *   smtp_parse_command    one command line (without CRLF) into a struct
 *                         smtp_cmd: verb, argument, path and ESMTP params
 *   smtp_parse_path       an RFC 5321 Reverse-path / Forward-path, "<...>"
 *   smtp_parse_domain     a Domain or address literal (EHLO argument)
 *   smtp_parse_bdat       BDAT's "chunk-size [LAST]"
 *   smtp_param_find       ESMTP parameter by keyword
 *   smtp_utf8_valid       strict UTF-8 check
 *   smtp_data_*           the DATA stream: dot-unstuffing, end at exactly
 *                         <CRLF>.<CRLF>, bare CR/LF and long-line detection,
 *                         header-section tracking (Received: count)
 * Trusts: nothing. Input is any bytes; results are slices into it.
 * Implements: RFC 5321 2.3.8 (lines), 4.1.1-4.1.2 (command syntax, paths,
 * address literals, quoted local parts), 4.5.2 (transparency), 4.5.3.1
 * (size limits); RFC 6531 (UTF-8 in addresses); RFC 1869/5321 esmtp params.
 */
#ifndef TERN_SMTP_SMTP_PARSE_H
#define TERN_SMTP_SMTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "core/str.h"

#define SMTP_LINE_MAX 1000       /* octets including CRLF, RFC 5321 4.5.3.1.4/6 */
#define SMTP_LOCAL_MAX 64        /* RFC 5321 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX 255      /* RFC 5321 4.5.3.1.2 */
#define SMTP_PATH_MAX 256        /* RFC 5321 4.5.3.1.3, including <> */
#define SMTP_PARAMS_MAX 16

enum smtp_line_status {
	SMTP_LINE_OK,
	SMTP_LINE_NEED_MORE,
	SMTP_LINE_BARE_LF,
	SMTP_LINE_BARE_CR,
	SMTP_LINE_TOO_LONG,
};
const char *smtp_line_status_str(enum smtp_line_status s);

/*
 * smtp_line_next - look for one line at p[0..n). A line ends at the first
 * LF; only CRLF is a valid end. The caller's buffer must be able to hold
 * SMTP_LINE_MAX bytes, else a maximal line would never complete.
 * OK: *line_len is the length without CRLF (<= SMTP_LINE_MAX - 2),
 *   *consumed = *line_len + 2.
 * BARE_LF: the line ends with an LF not preceded by CR; BARE_CR: it ends with
 *   CRLF (or a lone LF) but holds a CR not followed by LF. Either way
 *   *consumed covers the bad line up to and including that first LF and
 *   *line_len is its length without the line end, so the caller can skip it
 *   and reply (or, stricter, disconnect as Postfix does).
 * TOO_LONG: over SMTP_LINE_MAX octets with no LF in the first SMTP_LINE_MAX
 *   (or 999 octets and no CR that could start a CRLF). The rest of the line
 *   is skipped up to its CRLF (bare LFs inside do not end it):
 *   - CRLF seen: *consumed ends right after it, *line_len is the (> 998)
 *     content length; the line is over;
 *   - not seen: *consumed = n, minus one when p[n-1] is CR (left in the
 *     buffer so a CRLF split across reads is still recognised), and
 *     *line_len = 0: the caller keeps discarding with smtp_line_skip().
 * NEED_MORE: no line end yet and still within the limit; *consumed = 0.
 */
enum smtp_line_status smtp_line_next(const char *p, size_t n, size_t *line_len, size_t *consumed);
/*
 * smtp_line_skip - discard the rest of an over-long line, up to its CRLF.
 * OK: *consumed ends right after the CRLF. NEED_MORE: *consumed = n, minus
 * one when p[n-1] is CR (keep it: it may pair with the next read's LF).
 */
enum smtp_line_status smtp_line_skip(const char *p, size_t n, size_t *consumed);

/* smtp_utf8_valid - 1 if p[0..n) is well-formed UTF-8 (no overlongs,
 * surrogates or code points above U+10FFFF), else 0 */
int smtp_utf8_valid(const char *p, size_t n);

enum smtp_verb {
	SMTP_VERB_UNKNOWN,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_BDAT,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_HELP,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_AUTH,
};
const char *smtp_verb_str(enum smtp_verb v);

/* a parsed mailbox; local and domain are copied, NUL-terminated */
struct smtp_path {
	int is_null;                      /* "<>" */
	int is_postmaster;                /* "<Postmaster>" without domain (RCPT only) */
	int utf8;                         /* non-ASCII seen: needs SMTPUTF8 */
	int domain_literal;               /* [1.2.3.4] or [IPv6:...] */
	int quoted;                       /* local part needs quoting to be written */
	char local[SMTP_LOCAL_MAX * 2 + 3];  /* the local part as written in the address, quotes kept only if needed */
	char domain[SMTP_DOMAIN_MAX + 1]; /* lowercased (ASCII) */
	char addr[SMTP_PATH_MAX + 1];     /* canonical "local@domain", "" for <> */
};

struct smtp_param {
	struct slice key;   /* e.g. SIZE */
	struct slice value; /* empty (not NULL) if no '=' */
	int has_value;
};

struct smtp_cmd {
	enum smtp_verb verb;
	struct slice arg;   /* text after the verb and one space (may be empty) */
	struct smtp_path path;                       /* MAIL / RCPT */
	struct smtp_param params[SMTP_PARAMS_MAX];   /* MAIL / RCPT */
	size_t nparams;
};

/* why a command did not parse; maps to one reply in smtp_reply */
enum smtp_parse_error {
	SMTP_PARSE_OK,
	SMTP_PARSE_UNKNOWN_VERB,      /* 500 5.5.1 */
	SMTP_PARSE_SYNTAX,            /* 501 5.5.4 generic argument syntax */
	SMTP_PARSE_PATH_SYNTAX,       /* 501 5.1.3 / 5.1.7 malformed address */
	SMTP_PARSE_LOCAL_TOO_LONG,    /* 501 5.1.3 */
	SMTP_PARSE_DOMAIN_TOO_LONG,   /* 501 5.1.3 */
	SMTP_PARSE_PATH_TOO_LONG,     /* 501 5.1.3 */
	SMTP_PARSE_PARAM_SYNTAX,      /* 501 5.5.4 */
	SMTP_PARSE_TOO_MANY_PARAMS,   /* 501 5.5.4 */
	SMTP_PARSE_NUL,               /* 500 5.5.2 NUL byte in command */
};
const char *smtp_parse_error_str(enum smtp_parse_error e);

/*
 * smtp_parse_command - parse one line (without CRLF). For MAIL and RCPT the
 * "FROM:"/"TO:" keyword, the path and the parameters are parsed; for other
 * verbs only the verb and arg. *detail (may be NULL) gets a short static
 * text for the reply, e.g. "domain name expected after @".
 */
enum smtp_parse_error smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd,
					 const char **detail);

/* smtp_parse_path - "<...>" path at p[0..n); allow_null for MAIL FROM */
enum smtp_parse_error smtp_parse_path(const char *p, size_t n, int allow_null, struct smtp_path *out,
				      const char **detail);

/*
 * smtp_parse_domain - an RFC 5321 Domain or address-literal at p[0..n)
 * (e.g. an EHLO argument). out (SMTP_DOMAIN_MAX + 1 bytes) gets it
 * NUL-terminated, ASCII-lowercased; *literal / *utf8 (may be NULL) are set.
 * Errors: PATH_SYNTAX (with *detail), DOMAIN_TOO_LONG.
 */
enum smtp_parse_error smtp_parse_domain(const char *p, size_t n, char out[SMTP_DOMAIN_MAX + 1],
					int *literal, int *utf8, const char **detail);

/* smtp_parse_bdat - "chunk-size [LAST]" (RFC 3030); 0 ok, -1 syntax */
int smtp_parse_bdat(struct slice arg, uint64_t *size, int *last);

/* smtp_param_find - case-insensitive key lookup in a parsed command */
const struct smtp_param *smtp_param_find(const struct smtp_cmd *cmd, const char *key);

/* ---- the DATA stream ---- */

enum smtp_data_status {
	SMTP_DATA_MORE,  /* all input consumed, end not seen */
	SMTP_DATA_END,   /* <CRLF>.<CRLF> seen; *consumed stops right after it */
};
const char *smtp_data_status_str(enum smtp_data_status s);

enum smtp_data_flaw {
	SMTP_DATA_FLAW_NONE = 0,
	SMTP_DATA_FLAW_BARE_LF = 1,
	SMTP_DATA_FLAW_BARE_CR = 2,
	SMTP_DATA_FLAW_LONG_LINE = 4,  /* a line over SMTP_LINE_MAX octets */
	SMTP_DATA_FLAW_NUL = 8,
};
/* smtp_data_flaw_str - short text for the most serious flaw in a bit set
 * (for SMTP_R_DATA_FLAW's %s), "" when none */
const char *smtp_data_flaw_str(unsigned flaws);

struct smtp_data {
	int state;              /* private: position in the end-of-data automaton */
	size_t line_len;        /* private: octets in the current line so far */
	int in_headers;         /* 1 until the first empty line */
	int line_start_checked; /* private */
	unsigned flaws;         /* enum smtp_data_flaw bits seen so far */
	size_t received_count;  /* "Received:" header fields in the header section */
	size_t out_bytes;       /* unstuffed bytes handed to the sink */
	size_t hdr_match;       /* private: progress matching "Received:" */
};

/* sink for unstuffed content; the end marker is never passed */
typedef void (*smtp_data_sink)(void *arg, const char *p, size_t n);

/* smtp_data_init - start a DATA stream (at the beginning of a line) */
void smtp_data_init(struct smtp_data *d);
/*
 * smtp_data_feed - consume bytes after DATA's 354. Content (with CRLF line
 * ends, leading dots removed) goes to sink in as few calls as possible. A
 * flaw never stops the scan: the stream is read to its real end so the
 * client and server stay in step, and the caller rejects it by d->flaws.
 * Only CRLF ends a line: after a bare LF a '.' is plain content, neither
 * stuffing nor the end. Works for input cut at any octet (a ".\r" at the
 * end of one feed is held back until the next shows whether LF follows).
 * MORE: *consumed = n. END: *consumed stops right after the marker (the
 * rest, e.g. a pipelined QUIT, is the caller's); later feeds return END
 * with *consumed = 0. sink may be NULL (only d->out_bytes counts).
 */
enum smtp_data_status smtp_data_feed(struct smtp_data *d, const char *p, size_t n, size_t *consumed,
				     smtp_data_sink sink, void *arg);

#endif
