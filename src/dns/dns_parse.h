/*
 * dns_parse - pure parsers for the DNS data Tern reads: wire-format domain
 * names, MX and TXT rdata, A/AAAA rdata, address literals, and a syntax
 * check for names we are about to query. No I/O, no allocation.
 *
 * Exports:
 *   struct dns_addr       one IPv4/IPv6 address, binary and printable
 *   dns_parse_name        wire-format name -> escaped presentation text
 *   dns_parse_mx          MX rdata -> preference + exchange name
 *   dns_parse_txt         TXT rdata -> its character-strings concatenated
 *   dns_parse_a           A / AAAA rdata -> struct dns_addr
 *   dns_parse_literal     "[1.2.3.4]" / "[IPv6:2001:db8::1]" -> address
 *   dns_parse_ip          a bare "1.2.3.4" / "2001:db8::1" -> address
 *   dns_parse_hostname_ok whether text is a name we may query / connect to
 *   dns_addr_sockaddr     struct dns_addr + port -> sockaddr for connect()
 *
 * Trusts nothing: rdata comes from the network (via libunbound) and is
 * hostile input; every length is checked against the buffer, compression
 * pointers (never legal in rdata handed out by libunbound) are rejected,
 * names are capped at 255 octets and labels at 63 (RFC 1035 2.3.4, 3.1).
 * Bytes outside [A-Za-z0-9_-] in a label are written as \DDD (and '.' and
 * '\' as \. and \\), the RFC 1035 5.1 master-file escapes libunbound
 * accepts back, so a hostile name can never smuggle a separator.
 *
 * Standards: RFC 1035 (names, MX, TXT), RFC 3596 (AAAA), RFC 5321 4.1.3
 * (address literals), RFC 7505 (null MX: the exchange ".").
 */
#ifndef TERN_DNS_DNS_PARSE_H
#define TERN_DNS_DNS_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DNS_NAME_WIRE_MAX 255
/* every octet escaped as \DDD, plus dots and the NUL: 255 * 4 + 1 fits */
#define DNS_NAME_TEXT_MAX 1025
#define DNS_ADDR_TEXT_MAX 46 /* INET6_ADDRSTRLEN */

struct dns_addr {
	int family;                   /* AF_INET or AF_INET6 */
	unsigned char bytes[16];      /* network order; 4 used for AF_INET */
	char text[DNS_ADDR_TEXT_MAX]; /* "192.0.2.1" / "2001:db8::1" */
};

/*
 * dns_parse_name - decode the wire name at p[0..len); *used gets the octets
 * consumed. out gets the text without the trailing dot ("." for the root).
 * 0 ok, -1 malformed / too long / compression pointer / out too small.
 */
int dns_parse_name(const unsigned char *p, size_t len, size_t *used, char *out, size_t outlen);

/* dns_parse_mx - MX rdata: 2-octet preference then a name filling the rest */
int dns_parse_mx(const unsigned char *p, size_t len, unsigned *pref, char *name, size_t namelen);

/*
 * dns_parse_txt - TXT rdata: one or more <len><bytes> strings, written
 * concatenated to out (NUL-terminated; may hold NULs, *outlen is exact).
 * out needs len bytes at most. 0 ok, -1 malformed or out too small.
 */
int dns_parse_txt(const unsigned char *p, size_t len, char *out, size_t outcap, size_t *outlen);

/* dns_parse_a - rdata of an A (4 octets) or AAAA (16 octets) record */
int dns_parse_a(const unsigned char *p, size_t len, int family, struct dns_addr *out);

/* dns_parse_literal - an RFC 5321 address literal, brackets required */
int dns_parse_literal(const char *s, struct dns_addr *out);

/* dns_parse_ip - a bare IPv4 or IPv6 address in text */
int dns_parse_ip(const char *s, struct dns_addr *out);

/*
 * dns_parse_hostname_ok - 1 if s is a syntactically valid host/domain name:
 * 1..63-octet labels of letters, digits, '-' and '_' (the last for
 * _dmarc/_domainkey TXT names), at most 253 octets, one optional trailing dot.
 */
int dns_parse_hostname_ok(const char *s);

/* dns_addr_sockaddr - fill ss for connect(); returns the length, 0 if bad */
socklen_t dns_addr_sockaddr(const struct dns_addr *a, uint16_t port, struct sockaddr_storage *ss);

#endif
