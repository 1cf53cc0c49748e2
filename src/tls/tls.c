/*
 * tls - server-side TLS contexts. See tls.h for the policy and why.
 */
#include "tls/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/xalloc.h"

/* TLS 1.2 suites: forward secrecy and AEAD only */
#define TLS_CIPHERS_12                                                                             \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                               \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256"

struct tls_ticket_key {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
	time_t created;
};

struct tls_server {
	SSL_CTX *ctx;
	int refs;
	struct tls_ticket_key cur, prev;
	int have_prev;
};

static int tls_ex_index = -1;

void tls_error_string(char *out, size_t outlen)
{
	unsigned long e = ERR_get_error();
	if (e == 0)
		snprintf(out, outlen, "unknown TLS error");
	else
		ERR_error_string_n(e, out, outlen);
	ERR_clear_error();
}

/* tls_ticket_key_new - fresh random key material for session tickets */
static int tls_ticket_key_new(struct tls_ticket_key *k)
{
	k->created = time(NULL);
	return RAND_bytes(k->name, sizeof(k->name)) == 1 && RAND_bytes(k->aes, sizeof(k->aes)) == 1 &&
	       RAND_bytes(k->hmac, sizeof(k->hmac)) == 1
		       ? 0
		       : -1;
}

/* tls_ticket_rotate - a stolen ticket key must not decrypt old sessions for
 * long: rotate hourly, keep the previous key for one more period */
static void tls_ticket_rotate(struct tls_server *t)
{
	if (time(NULL) - t->cur.created < TLS_TICKET_ROTATE)
		return;
	struct tls_ticket_key next;
	if (tls_ticket_key_new(&next) < 0)
		return;
	t->prev = t->cur;
	t->have_prev = 1;
	t->cur = next;
}

static int tls_set_mac(EVP_MAC_CTX *hctx, unsigned char *key)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	return EVP_MAC_CTX_set_params(hctx, params);
}

/* tls_ticket_cb - OpenSSL's session ticket key callback (see
 * SSL_CTX_set_tlsext_ticket_key_evp_cb(3)) */
static int tls_ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
			 EVP_CIPHER_CTX *ctx, EVP_MAC_CTX *hctx, int enc)
{
	struct tls_server *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_ex_index);
	if (t == NULL)
		return -1;
	tls_ticket_rotate(t);
	if (enc) {
		if (RAND_bytes(iv, 16) != 1)
			return -1;
		memcpy(key_name, t->cur.name, 16);
		if (EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, t->cur.aes, iv) != 1 ||
		    tls_set_mac(hctx, t->cur.hmac) != 1)
			return -1;
		return 1;
	}
	struct tls_ticket_key *k = NULL;
	int renew = 0;
	if (memcmp(key_name, t->cur.name, 16) == 0) {
		k = &t->cur;
	} else if (t->have_prev && memcmp(key_name, t->prev.name, 16) == 0) {
		k = &t->prev;
		renew = 1;
	}
	if (k == NULL)
		return 0; /* unknown key: full handshake */
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1 || tls_set_mac(hctx, k->hmac) != 1)
		return -1;
	return renew ? 2 : 1;
}

struct tls_server *tls_server_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
	if (tls_ex_index < 0)
		tls_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		tls_error_string(err, errlen);
		return NULL;
	}
	struct tls_server *t = xcalloc(1, sizeof(*t));
	t->ctx = ctx;
	t->refs = 1;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_NO_COMPRESSION | SSL_OP_SINGLE_ECDH_USE);
	/* idle sessions hold no TLS buffers: memory per connection stays small */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_ex_data(ctx, tls_ex_index, t);
	if (SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1 || SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") != 1)
		goto fail;
	SSL_CTX_set_dh_auto(ctx, 1);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		char e[256];
		tls_error_string(e, sizeof(e));
		snprintf(err, errlen, "tls_cert %s: %s", cert_file, e);
		goto fail_msg;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		char e[256];
		tls_error_string(e, sizeof(e));
		snprintf(err, errlen, "tls_key %s: %s", key_file, e);
		goto fail_msg;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "tls_key %s does not match tls_cert %s", key_file, cert_file);
		ERR_clear_error();
		goto fail_msg;
	}
	if (tls_ticket_key_new(&t->cur) < 0)
		goto fail;
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"tern", 4);
	return t;
fail:
	tls_error_string(err, errlen);
fail_msg:
	SSL_CTX_free(ctx);
	OPENSSL_cleanse(t, sizeof(*t));
	free(t);
	return NULL;
}

void tls_server_ref(struct tls_server *t)
{
	t->refs++;
}

void tls_server_unref(struct tls_server *t)
{
	if (t == NULL || --t->refs > 0)
		return;
	SSL_CTX_free(t->ctx);
	/* ticket keys are secrets: do not leave them in freed memory */
	OPENSSL_cleanse(t, sizeof(*t));
	free(t);
}

SSL *tls_server_ssl(struct tls_server *t, int fd)
{
	SSL *ssl = SSL_new(t->ctx);
	if (ssl == NULL)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

void tls_describe(SSL *ssl, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}
