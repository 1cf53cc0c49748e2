/*
 * tls_client - TLS for outbound SMTP (STARTTLS as a client, RFC 3207) on
 * OpenSSL 3.
 *
 * Policy: TLS 1.2 and 1.3 only, no compression, no renegotiation. The
 * server's certificate is always checked (chain against the system trust
 * store, and name against the MX host name) and the outcome is kept for
 * the log; whether a bad certificate stops the handshake is the caller's
 * choice per connection (verify): opportunistic TLS (RFC 7435, policy
 * "may"/"encrypt") goes on regardless, "verify" fails the handshake.
 *
 * Exports:
 *   tls_client_new/free     one client context for all outbound sessions
 *   tls_client_ssl          an SSL object for a connected socket, with SNI
 *                           and the expected host name set
 *   tls_client_verify_str   "ok" or OpenSSL's reason for the last handshake
 * Trusts: nothing from the peer (OpenSSL parses the handshake); the host
 * name comes from DNS and is used only for SNI and the name check.
 * Standards: RFC 3207, RFC 7435 (opportunistic security), RFC 6066 (SNI).
 */
#ifndef TERN_TLS_TLS_CLIENT_H
#define TERN_TLS_TLS_CLIENT_H

#include <stddef.h>

#include <openssl/ssl.h>

struct tls_client;

/* tls_client_new - a context trusting ca_file (PEM), or the system store
 * when NULL; NULL with err set when OpenSSL fails or ca_file is unusable */
struct tls_client *tls_client_new(const char *ca_file, char *err, size_t errlen);
void tls_client_free(struct tls_client *t);
/* tls_client_ssl - an SSL in connect state on fd; servername may be NULL
 * (address literal: no SNI, no name check). verify: 1 makes a certificate
 * that does not verify fail the handshake. NULL on failure. */
SSL *tls_client_ssl(struct tls_client *t, int fd, const char *servername, int verify);
/* tls_client_verify_str - "ok", or why the server's certificate did not
 * verify ("self-signed certificate", "hostname mismatch", ...) */
const char *tls_client_verify_str(SSL *ssl);

#endif
