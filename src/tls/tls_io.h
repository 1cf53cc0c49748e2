/*
 * tls_io - one read/write interface for plain TCP and TLS sockets, shared by
 * the server connections (event/conn) and the outbound ones
 * (deliver/remote), so neither calls recv/send or SSL_read/SSL_write itself.
 *
 * Exports:
 *   tls_io_read    >0 bytes, 0 end of stream, -1 with errno (EAGAIN: try
 *                  later; *want_write set when TLS needs the socket
 *                  writable first)
 *   tls_io_write   bytes written, or -1 with errno (EAGAIN: try later)
 *   tls_io_handshake  one step of SSL_do_handshake, as a tls_io_step
 * ssl NULL means plain TCP on fd. Non-blocking sockets only.
 */
#ifndef TERN_TLS_TLS_IO_H
#define TERN_TLS_TLS_IO_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

ssize_t tls_io_read(SSL *ssl, int fd, char *buf, size_t n, int *want_write);
ssize_t tls_io_write(SSL *ssl, int fd, const char *p, size_t n);

enum tls_io_step {
	TLS_IO_DONE,       /* handshake complete */
	TLS_IO_WANT_READ,  /* call again when the socket is readable */
	TLS_IO_WANT_WRITE, /* call again when the socket is writable */
	TLS_IO_FAILED,     /* why holds the reason */
};

/* tls_io_handshake - one step of a non-blocking handshake (either side) */
enum tls_io_step tls_io_handshake(SSL *ssl, char *why, size_t whylen);

#endif
