/*
 * smtp_replyparse - the pure parser for replies an SMTP server sends us:
 * bytes in, whole replies out. No I/O, no allocation, no global state; the
 * mirror image of smtp_parse, used by the outbound client (smtp_client).
 *
 * A reply is zero or more "ddd-text" lines and a final "ddd text" or "ddd"
 * line (RFC 5321 4.2, 4.2.1). Rules, chosen for a hostile peer:
 *  - a line ends at CRLF; a lone LF also ends a line (leniency, as
 *    Postfix's client: it is harmless on the client side, where no line of
 *    a reply is passed on as content); a CR not before LF is text;
 *  - a line may hold up to SMTP_REP_LINE_MAX octets (RFC 5321 4.5.3.1.5
 *    says 512; we are lenient, then it is an error);
 *  - at most SMTP_REP_LINES_MAX lines a reply (an endless continuation is
 *    an error, not growth);
 *  - the code is three digits, first 2-5, second 0-5, and every line of a
 *    reply carries the same code; anything else is an error;
 *  - NUL in the text becomes '?', so each stored line is a C string.
 * Errors are sticky: after ERROR the parser returns ERROR until re-initialised
 * (the client closes the connection: the reply stream is out of step).
 *
 * Exports:
 *   struct smtp_rep                  one reply: code, enhanced code, lines
 *   smtp_replyparse_init             start (or restart) a parser
 *   smtp_replyparse_feed             bytes in: NEED_MORE, REPLY or ERROR
 *   smtp_replyparse_midline          bytes of an unfinished reply are held
 *   smtp_replyparse_text             the reply as one sanitised line of text
 *   smtp_replyparse_ehlo             EHLO reply lines into struct smtp_caps
 *   smtp_replyparse_status_str/_error_str   names for logs
 * Trusts: nothing; any bytes at any split points.
 * Implements: RFC 5321 4.2 (reply syntax), 4.5.3.1.5 (reply line length,
 * leniently); RFC 3463 / RFC 2034 (enhanced status codes in the text);
 * RFC 5321 4.1.1.1 + RFC 1869 (EHLO keywords), RFC 1870 (SIZE), RFC 6152
 * (8BITMIME), RFC 2920, RFC 3030, RFC 3461, RFC 3207, RFC 4954, RFC 6531.
 */
#ifndef TERN_SMTP_SMTP_REPLYPARSE_H
#define TERN_SMTP_SMTP_REPLYPARSE_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_REP_LINE_MAX 4096  /* octets of one line, without the line end */
#define SMTP_REP_LINES_MAX 100  /* lines of one reply */
#define SMTP_REP_TEXT_MAX 8192  /* stored text of all lines; more is dropped by whole lines */
#define SMTP_REP_ENH_MAX 12     /* "5.123.123" + NUL */

/* one complete reply */
struct smtp_rep {
	int code;                      /* 200..559 */
	char enh[SMTP_REP_ENH_MAX];    /* RFC 3463 code of the first line, "" if none */
	size_t nlines;                 /* lines seen (all of them, stored or not) */
	size_t nstored;                /* lines kept in text (the first ones) */
	int truncated;                 /* some lines did not fit in text */
	uint16_t line_off[SMTP_REP_LINES_MAX]; /* start of stored line i in text */
	char text[SMTP_REP_TEXT_MAX];  /* stored lines after "ddd-", each NUL-terminated */
};

/* smtp_rep_line - stored line i (0 <= i < nstored) as a C string */
static inline const char *smtp_rep_line(const struct smtp_rep *r, size_t i)
{
	return r->text + r->line_off[i];
}

enum smtp_replyparse_status {
	SMTP_REPLYPARSE_NEED_MORE, /* all input consumed, no complete reply */
	SMTP_REPLYPARSE_REPLY,     /* *out holds a reply; *consumed ends right after it */
	SMTP_REPLYPARSE_ERROR,     /* protocol error (sticky); see ->error */
};
const char *smtp_replyparse_status_str(enum smtp_replyparse_status s);

enum smtp_replyparse_error {
	SMTP_REPLYPARSE_E_NONE,
	SMTP_REPLYPARSE_E_CODE,          /* not three digits 2-5, 0-5, 0-9 */
	SMTP_REPLYPARSE_E_SEPARATOR,     /* code followed by other than ' ', '-' or the line end */
	SMTP_REPLYPARSE_E_CODE_MISMATCH, /* lines of one reply with different codes */
	SMTP_REPLYPARSE_E_LINE_TOO_LONG,
	SMTP_REPLYPARSE_E_TOO_MANY_LINES,
};
const char *smtp_replyparse_error_str(enum smtp_replyparse_error e);

/* the parser; fields are private except error */
struct smtp_replyparse {
	int state;
	enum smtp_replyparse_error error;
	char code[3];       /* code of the current line */
	int sep;            /* ' ', '-' or 0 (bare code) of the current line */
	size_t line_len;    /* octets of the current line so far */
	size_t line_start;  /* offset in cur.text where the current line starts */
	size_t text_len;    /* bytes used in cur.text */
	int line_dropped;   /* current line did not fit in cur.text */
	int pending_cr;     /* a CR was seen, not yet known to end the line */
	struct smtp_rep cur;
};

void smtp_replyparse_init(struct smtp_replyparse *rp);

/*
 * smtp_replyparse_feed - consume p[0..n). Returns REPLY with *out filled and
 * *consumed the bytes up to the end of that reply (call again with the
 * rest); NEED_MORE with *consumed == n; ERROR with *consumed where it
 * stopped. A partial line is kept inside the parser between calls.
 */
enum smtp_replyparse_status smtp_replyparse_feed(struct smtp_replyparse *rp, const char *p, size_t n,
						 size_t *consumed, struct smtp_rep *out);

/* smtp_replyparse_midline - 1 when bytes of an unfinished reply are held */
int smtp_replyparse_midline(const struct smtp_replyparse *rp);

/*
 * smtp_replyparse_text - the stored lines joined by one space, without
 * the enhanced code a line starts with, bytes outside printable ASCII as
 * '?', NUL-terminated in out[0..cap) (cut to fit). Returns the length.
 */
size_t smtp_replyparse_text(const struct smtp_rep *r, char *out, size_t cap);

/* EHLO keywords we act on (RFC 5321 4.1.1.1: lines after the first) */
enum smtp_cap {
	SMTP_CAP_PIPELINING = 1 << 0,
	SMTP_CAP_SIZE = 1 << 1,
	SMTP_CAP_8BITMIME = 1 << 2,
	SMTP_CAP_SMTPUTF8 = 1 << 3,
	SMTP_CAP_CHUNKING = 1 << 4,
	SMTP_CAP_BINARYMIME = 1 << 5,
	SMTP_CAP_DSN = 1 << 6,
	SMTP_CAP_STARTTLS = 1 << 7,
	SMTP_CAP_AUTH = 1 << 8,
	SMTP_CAP_ENHANCEDSTATUSCODES = 1 << 9,
};
/* smtp_cap_str - keyword of one capability bit */
const char *smtp_cap_str(enum smtp_cap c);

#define SMTP_CAPS_AUTH_MAX 256

struct smtp_caps {
	unsigned flags;        /* enum smtp_cap bits */
	uint64_t size_max;     /* SIZE n; 0 = offered without a (valid) limit, or not offered */
	char auth[SMTP_CAPS_AUTH_MAX]; /* AUTH mechanisms, space-separated, uppercased, printable */
};

/* smtp_replyparse_ehlo - read the keywords of a 250 EHLO reply into *caps */
void smtp_replyparse_ehlo(const struct smtp_rep *r, struct smtp_caps *caps);

#endif
