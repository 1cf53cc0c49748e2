/*
 * authres - the Authentication-Results header field (RFC 8601): composing
 * ours, and recognising fields that claim to be ours (forgeries a
 * receiving MTA removes, RFC 8601 5).
 *
 * Exports:
 *   authres_begin / authres_method / authres_comment / authres_prop /
 *   authres_end                    compose one field into a strbuf
 *   authres_parse_id               the authserv-id of an existing field
 *   authres_field_is_ours          does a field claim our authserv-id
 *
 * Composed form (one resinfo a line, folded at a space before 78 columns):
 *   Authentication-Results: mx.example.org;\r\n
 *   \tspf=pass smtp.mailfrom=a@example.com;\r\n
 *   \tdkim=pass header.d=example.com header.s=sel header.b="AbCd1234";\r\n
 *   \tdmarc=pass (p=reject dis=none) header.from=example.com\r\n
 * Property values are written bare when they are an RFC 2045 token or
 * [local-part "@"] domain-name, else as a quoted-string; comments are
 * escaped. Bytes outside printable ASCII (CR, LF, NUL, controls, 8-bit)
 * in any value become '?', and values are cut at AUTHRES_VALUE_MAX, so a
 * hostile MAIL FROM, d= or selector can never break the field or add one.
 *
 * Trusts: nothing in values or in the fields it parses; the authserv-id
 * (our host name, from the configuration) is sanitised like a value.
 * Standards: RFC 8601 2.2-2.7 and 5; RFC 5322 2.2.3 (folding), 3.2.2
 * (CFWS); RFC 2045 5.1 (token).
 */
#ifndef TERN_POLICY_AUTHRES_H
#define TERN_POLICY_AUTHRES_H

#include <stddef.h>

#include "core/buf.h"

#define AUTHRES_VALUE_MAX 256 /* octets of a property value / comment kept */
#define AUTHRES_ID_MAX 255    /* authserv-id kept by authres_parse_id */
#define AUTHRES_FOLD 78       /* fold lines before this column */

struct authres {
	struct strbuf *out;
	size_t col;   /* column on the current line */
	int nres;     /* resinfos so far */
};

/* authres_begin - "Authentication-Results: <authserv-id>" */
void authres_begin(struct authres *a, struct strbuf *out, const char *authserv_id);
/* authres_method - a new resinfo "method=result" on its own line */
void authres_method(struct authres *a, const char *method, const char *result);
/* authres_comment - " (text)" after the result (text escaped, capped) */
void authres_comment(struct authres *a, const char *text);
/* authres_prop - " ptype.property=value", e.g. ("smtp.mailfrom", addr) */
void authres_prop(struct authres *a, const char *ptype_property, const char *value);
/* authres_end - "; none" when no resinfo was added, then CRLF */
void authres_end(struct authres *a);

/* authres_parse_id - the authserv-id of a whole field ("Authentication-
 * Results: id; ..."; CFWS, comments, a quoted-string id, a version after
 * it) into id (unquoted); 0, or -1 if the field is not an
 * Authentication-Results field or has no readable id */
int authres_parse_id(const char *field, size_t len, char *id, size_t idlen);

/* authres_field_is_ours - 1 when the whole field is an
 * Authentication-Results field whose authserv-id is ours (ASCII case
 * insensitive, a final dot ignored, and also when a lenient reader that
 * stops only at white space, ';' or '(' would read ours), and when its
 * authserv-id cannot be read at all (fail closed: comments nested too
 * deep or unterminated, an id too long or empty) */
int authres_field_is_ours(const char *field, size_t len, const char *authserv_id);

#endif
