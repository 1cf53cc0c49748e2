/*
 * milter_codec - the Sendmail milter protocol (version 6) as pure functions:
 * commands the MTA sends are encoded into a strbuf, packets a milter sends
 * are cut from a byte stream and decoded into checked replies. No I/O, so
 * every rule here is unit-tested and fuzzed (tests/unit/policy/test_milter_codec.c,
 * tests/fuzz/policy/fuzz_milter.c); src/policy/milter.c drives it on sockets.
 *
 * Wire format: every packet is a 4-octet big-endian length (counting the
 * command octet and the data), one command octet, then the data. Strings
 * are NUL-terminated; integers are 32-bit big-endian.
 *
 * The protocol's own names are kept for its constants (SMFIC_* commands,
 * SMFIR_* replies, SMFIF_* actions, SMFIP_* protocol flags, SMFIM_* macro
 * stages) so they can be matched against libmilter's mfdef.h and Postfix's
 * milter8.c; nothing else here uses those prefixes.
 *
 * Exports:
 *   milter_codec_packet_next     cut one packet from a byte stream (length caps)
 *   milter_codec_optneg_decode   the milter's SMFIC_OPTNEG answer (version,
 *                                actions, protocol flags, macro lists)
 *   milter_codec_reply_decode    one reply to a command, validated against
 *                                the command it answers and the negotiation
 *   milter_codec_reply_clear     release a decoded reply's strings
 *   milter_codec_neg_clear       release a negotiation's macro lists
 *   milter_codec_enc_*           append one command packet to a strbuf
 *   milter_codec_macro_wanted    is a macro in a milter's requested list
 *   milter_codec_cmd_str / milter_reply_kind_str   names for logs
 * Trusts: nothing a milter sends. Lengths are capped (MILTER_PKT_MAX),
 * strings must be terminated inside their packet, header names and values,
 * addresses, ESMTP arguments and reply texts are checked or normalised
 * (no CR/LF can reach an SMTP reply; header line breaks become CRLF plus
 * folding white space, so no milter can end the header section), indexes
 * are bounded, and modifications are accepted only at end of message and
 * only when the milter negotiated the matching action.
 * Implements: the Sendmail 8.14 milter protocol, version 6 (libmilter's
 * mfdef.h and engine.c; Postfix's milter8.c as the reference MTA side).
 */
#ifndef TERN_POLICY_MILTER_CODEC_H
#define TERN_POLICY_MILTER_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/buf.h"

#define MILTER_PROTO_VERSION 6
#define MILTER_PKT_MAX (1024 * 1024) /* largest packet length field accepted from a milter */
#define MILTER_CHUNK_MAX 65535       /* largest data part we send (libmilter's default limit) */
#define MILTER_INDEX_MAX 100000      /* header index in INSHEADER/CHGHEADER */
#define MILTER_NAME_MAX 997          /* header field name, octets */
#define MILTER_VALUE_MAX 65536       /* header field value from a milter, octets */
#define MILTER_ADDR_MAX 998          /* address in CHGFROM/ADDRCPT/DELRCPT */
#define MILTER_ARGS_MAX 998          /* ESMTP arguments in CHGFROM/ADDRCPT_PAR */
#define MILTER_REASON_MAX 255        /* quarantine reason kept (longer is cut) */
#define MILTER_REPLY_MAX 511         /* SMFIR_REPLYCODE text kept (whole lines) */
#define MILTER_MACRO_STAGES 7        /* SMFIM_CONNECT .. SMFIM_EOH */
#define MILTER_MACRO_LIST_MAX 1024   /* a requested macro name list, octets */

/* commands, MTA to milter */
#define SMFIC_ABORT 'A'
#define SMFIC_BODY 'B'
#define SMFIC_CONNECT 'C'
#define SMFIC_MACRO 'D'
#define SMFIC_BODYEOB 'E'
#define SMFIC_HELO 'H'
#define SMFIC_HEADER 'L'
#define SMFIC_MAIL 'M'
#define SMFIC_EOH 'N'
#define SMFIC_OPTNEG 'O'
#define SMFIC_QUIT 'Q'
#define SMFIC_RCPT 'R'
#define SMFIC_DATA 'T'

/* replies, milter to MTA */
#define SMFIR_ADDRCPT '+'
#define SMFIR_DELRCPT '-'
#define SMFIR_ADDRCPT_PAR '2'
#define SMFIR_SHUTDOWN '4'
#define SMFIR_ACCEPT 'a'
#define SMFIR_REPLBODY 'b'
#define SMFIR_CONTINUE 'c'
#define SMFIR_DISCARD 'd'
#define SMFIR_CHGFROM 'e'
#define SMFIR_CONN_FAIL 'f'
#define SMFIR_ADDHEADER 'h'
#define SMFIR_INSHEADER 'i'
#define SMFIR_SETSYMLIST 'l'
#define SMFIR_CHGHEADER 'm'
#define SMFIR_PROGRESS 'p'
#define SMFIR_QUARANTINE 'q'
#define SMFIR_REJECT 'r'
#define SMFIR_SKIP 's'
#define SMFIR_TEMPFAIL 't'
#define SMFIR_REPLYCODE 'y'

/* actions a milter may take (OPTNEG) */
#define SMFIF_ADDHDRS 0x001u
#define SMFIF_CHGBODY 0x002u
#define SMFIF_ADDRCPT 0x004u
#define SMFIF_DELRCPT 0x008u
#define SMFIF_CHGHDRS 0x010u
#define SMFIF_QUARANTINE 0x020u
#define SMFIF_CHGFROM 0x040u
#define SMFIF_ADDRCPT_PAR 0x080u
#define SMFIF_SETSYMLIST 0x100u

/* protocol flags (OPTNEG): events not sent, replies not expected */
#define SMFIP_NOCONNECT 0x000001u
#define SMFIP_NOHELO 0x000002u
#define SMFIP_NOMAIL 0x000004u
#define SMFIP_NORCPT 0x000008u
#define SMFIP_NOBODY 0x000010u
#define SMFIP_NOHDRS 0x000020u
#define SMFIP_NOEOH 0x000040u
#define SMFIP_NR_HDR 0x000080u
#define SMFIP_NOUNKNOWN 0x000100u
#define SMFIP_NODATA 0x000200u
#define SMFIP_SKIP 0x000400u
#define SMFIP_RCPT_REJ 0x000800u
#define SMFIP_NR_CONN 0x001000u
#define SMFIP_NR_HELO 0x002000u
#define SMFIP_NR_MAIL 0x004000u
#define SMFIP_NR_RCPT 0x008000u
#define SMFIP_NR_DATA 0x010000u
#define SMFIP_NR_UNKN 0x020000u
#define SMFIP_NR_EOH 0x040000u
#define SMFIP_NR_BODY 0x080000u
#define SMFIP_HDR_LEADSPC 0x100000u

/* macro stages (index of a requested list; SMFIC_MACRO names the command) */
#define SMFIM_CONNECT 0
#define SMFIM_HELO 1
#define SMFIM_ENVFROM 2
#define SMFIM_ENVRCPT 3
#define SMFIM_DATA 4
#define SMFIM_EOM 5
#define SMFIM_EOH 6

/* what Tern offers: every action, and every protocol flag but RCPT_REJ
 * (rejected recipients are never shown to milters) */
#define MILTER_OUR_ACTIONS 0x1ffu
#define MILTER_OUR_PROTO                                                                      \
	(SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT | SMFIP_NOBODY |         \
	 SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NR_HDR | SMFIP_NOUNKNOWN | SMFIP_NODATA |          \
	 SMFIP_SKIP | SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_RCPT |          \
	 SMFIP_NR_DATA | SMFIP_NR_UNKN | SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_HDR_LEADSPC)

/* one packet cut from the stream; data points into the caller's bytes */
struct milter_pkt {
	unsigned char cmd;
	const unsigned char *data;
	size_t len;
};

/* the outcome of option negotiation */
struct milter_neg {
	uint32_t version; /* 2..6 */
	uint32_t actions; /* SMFIF_*, a subset of what we offered */
	uint32_t proto;   /* SMFIP_*, masked to what we offered */
	char *macros[MILTER_MACRO_STAGES]; /* requested names ("i {auth_type}"), or NULL */
};

enum milter_reply_kind {
	MILTER_REPLY_CONTINUE,
	MILTER_REPLY_ACCEPT,
	MILTER_REPLY_REJECT,
	MILTER_REPLY_TEMPFAIL,
	MILTER_REPLY_DISCARD,
	MILTER_REPLY_REPLYCODE, /* text + code */
	MILTER_REPLY_SHUTDOWN,  /* SMFIR_SHUTDOWN or SMFIR_CONN_FAIL: 421 and close */
	MILTER_REPLY_PROGRESS,  /* still working: restart the timer, keep waiting */
	MILTER_REPLY_SKIP,      /* no more events of this kind (body, headers) */
	MILTER_REPLY_ADDHEADER, /* name, value */
	MILTER_REPLY_INSHEADER, /* index, name, value */
	MILTER_REPLY_CHGHEADER, /* index, name, value ("" = delete) */
	MILTER_REPLY_REPLBODY,  /* body, bodylen (a chunk) */
	MILTER_REPLY_CHGFROM,   /* value = address, args */
	MILTER_REPLY_ADDRCPT,   /* value = address, args (ADDRCPT_PAR) */
	MILTER_REPLY_DELRCPT,   /* value = address */
	MILTER_REPLY_QUARANTINE, /* value = reason */
};
const char *milter_reply_kind_str(enum milter_reply_kind k);

/* is the reply a final answer to the command (not progress, skip is final) */
static inline int milter_reply_is_final(enum milter_reply_kind k)
{
	return k <= MILTER_REPLY_SHUTDOWN || k == MILTER_REPLY_SKIP;
}

struct milter_reply {
	enum milter_reply_kind kind;
	uint32_t index; /* INSHEADER: fields before the new one (0 = top); CHGHEADER:
			   occurrence, 1-based (0 from a milter is taken as 1) */
	char *name;     /* header field name (checked ftext) */
	char *value;    /* header: what follows "name: " (the writer adds colon and
			   space; from a milter with SMFIP_HDR_LEADSPC its one
			   leading space is taken off), line breaks as CRLF + white
			   space; "" in CHGHEADER = delete. CHGFROM/ADDRCPT/DELRCPT:
			   the address without angle brackets ("" = null sender).
			   QUARANTINE: the reason (printable, cut) */
	char *args;     /* ESMTP arguments or NULL */
	char *text;     /* REPLYCODE: "550 5.7.1 text" or "550-a\r\n550 b", checked */
	int code;       /* REPLYCODE: 400..599 */
	const unsigned char *body; /* REPLBODY: the chunk, inside the packet */
	size_t bodylen;
};

/*
 * milter_codec_packet_next - cut one packet from p[0..n). Returns the octets
 * it spans (> 0) and fills pkt (pointing into p), 0 if more bytes are
 * needed, -1 on a length of 0 or above max (err says which).
 */
ssize_t milter_codec_packet_next(const void *p, size_t n, size_t max, struct milter_pkt *pkt,
				 char *err, size_t errlen);

/*
 * milter_codec_optneg_decode - the milter's answer to our SMFIC_OPTNEG:
 * version 2..6, actions a subset of ours (else error, as Postfix does),
 * protocol flags masked to ours, then optional (stage, "names") macro lists
 * (only with SMFIF_SETSYMLIST). 0 ok, -1 protocol error. neg is cleared
 * first and must be released with milter_codec_neg_clear.
 */
int milter_codec_optneg_decode(const struct milter_pkt *pkt, uint32_t our_actions,
			       uint32_t our_proto, struct milter_neg *neg, char *err, size_t errlen);
void milter_codec_neg_clear(struct milter_neg *neg);

/*
 * milter_codec_reply_decode - a reply to command `after` (SMFIC_*), from a
 * milter that negotiated neg. 0 ok (r filled; release with
 * milter_codec_reply_clear), -1 protocol error: unknown reply octet, data
 * where none belongs or missing, string not terminated, trailing octets,
 * a modification outside end of message or not negotiated, SKIP outside
 * headers/body, bad index, bad header name, bad address, malformed or
 * injected reply text.
 */
int milter_codec_reply_decode(const struct milter_pkt *pkt, int after, const struct milter_neg *neg,
			      struct milter_reply *r, char *err, size_t errlen);
void milter_codec_reply_clear(struct milter_reply *r);

/* milter_codec_macro_wanted - 1 if name ("i", "{i}", "{auth_type}") is in
 * the space-separated list (braces optional on either side) */
int milter_codec_macro_wanted(const char *list, const char *name);

/* ---- encoders: each appends one packet; strings stop at their NUL ---- */

/* milter_codec_enc_optneg - version, actions, protocol flags */
void milter_codec_enc_optneg(struct strbuf *sb, uint32_t version, uint32_t actions, uint32_t proto);
/* milter_codec_enc_macros - SMFIC_MACRO for command cmd; kv holds name,
 * value pairs (a NULL value skips the pair); values are cut so the packet
 * stays within MILTER_CHUNK_MAX */
void milter_codec_enc_macros(struct strbuf *sb, int cmd, const char *const *kv, size_t npairs);
/* milter_codec_enc_connect - host name, family ('4', '6', 'L', 'U'), port, address */
void milter_codec_enc_connect(struct strbuf *sb, const char *host, int family, unsigned port,
			      const char *addr);
/* milter_codec_enc_helo - the HELO/EHLO argument */
void milter_codec_enc_helo(struct strbuf *sb, const char *helo);
/* milter_codec_enc_envelope - SMFIC_MAIL/SMFIC_RCPT: "<addr>" then the
 * ESMTP arguments (NULL-terminated array, may be NULL) */
void milter_codec_enc_envelope(struct strbuf *sb, int cmd, const char *addr,
			       const char *const *args);
/* milter_codec_enc_header - name and value (value cut to fit the chunk limit) */
void milter_codec_enc_header(struct strbuf *sb, const char *name, size_t nlen, const char *value,
			     size_t vlen);
/* milter_codec_enc_body - one body chunk (n <= MILTER_CHUNK_MAX) */
void milter_codec_enc_body(struct strbuf *sb, const void *p, size_t n);
/* milter_codec_enc_cmd - a command without data (DATA, EOH, BODYEOB, ABORT, QUIT) */
void milter_codec_enc_cmd(struct strbuf *sb, int cmd);

/* milter_codec_cmd_str - "SMFIC_MAIL" etc. for logs ("SMFIC_?" if unknown) */
const char *milter_codec_cmd_str(int cmd);

#endif
