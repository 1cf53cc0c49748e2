/*
 * tls - TLS for the server side (STARTTLS, RFC 3207; implicit TLS, RFC 8314)
 * on OpenSSL 3.
 *
 * Policy: TLS 1.2 and 1.3 only; for TLS 1.2 only ECDHE/DHE key exchange
 * with AEAD ciphers (AES-GCM, ChaCha20-Poly1305); the server's cipher order
 * wins; no renegotiation, no compression; session tickets encrypted with
 * keys that rotate every TLS_TICKET_ROTATE seconds (the previous key is
 * still accepted for one period, and such tickets are renewed).
 *
 * Exports:
 *   tls_server_new    load the certificate chain and key, build a context
 *   tls_server_ref/unref  contexts are shared by live sessions; a reload
 *                     makes a new one and drops the old when unused
 *   tls_server_ssl    a new SSL object for an accepted socket
 *   tls_describe      "TLSv1.3 TLS_AES_256_GCM_SHA384" for logs/Received
 * Trusts: the key and certificate files are the operator's; peers are not
 * trusted at all (OpenSSL parses the handshake).
 */
#ifndef TERN_TLS_TLS_H
#define TERN_TLS_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#define TLS_TICKET_ROTATE 3600

struct tls_server;

struct tls_server *tls_server_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
void tls_server_ref(struct tls_server *t);
void tls_server_unref(struct tls_server *t);
SSL *tls_server_ssl(struct tls_server *t, int fd);
void tls_describe(SSL *ssl, char *out, size_t outlen);
/* tls_error_string - the latest OpenSSL error, for logs; clears the queue */
void tls_error_string(char *out, size_t outlen);

#endif
