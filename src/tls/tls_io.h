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
 * ssl NULL means plain TCP on fd. Non-blocking sockets only.
 */
#ifndef TERN_TLS_TLS_IO_H
#define TERN_TLS_TLS_IO_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

ssize_t tls_io_read(SSL *ssl, int fd, char *buf, size_t n, int *want_write);
ssize_t tls_io_write(SSL *ssl, int fd, const char *p, size_t n);

#endif
