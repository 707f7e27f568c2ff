/* TLS 1.3 over memory BIOs for the server's connections; see http_tls.h. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "runtime/core/error.h"
#include "runtime/http/http_tls.h"
#include "runtime/core/banned.h"

struct ms_http_tls_ctx {
    SSL_CTX *ssl;
};

struct ms_http_tls {
    SSL *ssl;
    BIO *wbio;   /* records for the socket; the read BIO is the SSL's own */
    bool failed; /* after a fatal error OpenSSL forbids another call but SSL_free */
};

enum { RECORD = 16 * 1024 + 256 }; /* one TLS record's plaintext and then some */

/* The first (root) OpenSSL reason on this thread, for a start-up message (clears the queue). */
static const char *ssl_reason(void)
{
    const char *why = ERR_reason_error_string(ERR_peek_error());
    ERR_clear_error();
    return why ? why : "unknown reason";
}

/* ALPN: http/1.1 when the client offers it; without ALPN otherwise (curl without
 * --http1.1 offers h2 too and takes http/1.1). */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel = NULL, sellen = 0;
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&sel, &sellen, ours, sizeof ours - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    *outlen = sellen;
    return SSL_TLSEXT_ERR_OK;
}

/* Reads the private key by itself first, so that an unreadable key and a key that does not
 * match the certificate get different sentences. */
static EVP_PKEY *read_key(const char *key_file, char *err, size_t errn)
{
    BIO *b = BIO_new_file(key_file, "r");
    if (!b) {
        snprintf(err, errn, "the TLS key file '%s' cannot be read (%s)", key_file,
                 errno ? strerror(errno) : ssl_reason());
        ERR_clear_error();
        return NULL;
    }
    EVP_PKEY *key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    if (!key)
        snprintf(err, errn, "the TLS key file '%s' holds no PEM private key (%s)", key_file,
                 ssl_reason());
    return key;
}

int ms_http_tls_ctx_new(const char *cert_file, const char *key_file, ms_http_tls_ctx **out,
                        char *err, size_t errn)
{
    int rc = MS_EINVAL;
    EVP_PKEY *key = NULL;
    SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
    *out = NULL;
    if (!ssl) {
        snprintf(err, errn, "cannot create a TLS context (%s)", ssl_reason());
        goto out;
    }
    if (SSL_CTX_set_min_proto_version(ssl, TLS1_3_VERSION) != 1) {
        snprintf(err, errn, "this OpenSSL cannot do TLS 1.3 (%s)", ssl_reason());
        goto out;
    }
    /* a connection's buffers go back to the heap while it is idle */
    SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ssl, select_alpn, NULL);
    errno = 0;
    if (SSL_CTX_use_certificate_chain_file(ssl, cert_file) != 1) {
        int e = errno;
        snprintf(err, errn,
                 "the TLS certificate file '%s' cannot be read or holds no PEM "
                 "certificate (%s)",
                 cert_file, e ? strerror(e) : ssl_reason());
        ERR_clear_error();
        goto out;
    }
    errno = 0;
    if (!(key = read_key(key_file, err, errn)))
        goto out;
    if (SSL_CTX_use_PrivateKey(ssl, key) != 1 || SSL_CTX_check_private_key(ssl) != 1) {
        snprintf(err, errn, "the TLS key file '%s' does not match the certificate in '%s' (%s)",
                 key_file, cert_file, ssl_reason());
        goto out;
    }
    *out = ms_xmalloc(sizeof **out);
    (*out)->ssl = ssl;
    ssl = NULL;
    rc = 0;
out:
    EVP_PKEY_free(key);
    SSL_CTX_free(ssl);
    return rc;
}

void ms_http_tls_ctx_free(ms_http_tls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

ms_http_tls *ms_http_tls_new(ms_http_tls_ctx *ctx)
{
    ms_http_tls *t = ms_xcalloc(1, sizeof *t);
    BIO *rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    t->ssl = SSL_new(ctx->ssl);
    if (!rbio || !t->wbio || !t->ssl) {
        BIO_free(rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    /* an empty read BIO means "wait for the socket", not end of stream */
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(t->ssl, rbio, t->wbio); /* the SSL owns both now */
    SSL_set_accept_state(t->ssl);
    return t;
}

void ms_http_tls_free(ms_http_tls *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    free(t);
}

char *ms_http_tls_read_buf(size_t *len)
{
    static __thread char buf[RECORD];
    *len = sizeof buf;
    return buf;
}

bool ms_http_tls_established(const ms_http_tls *t)
{
    return SSL_is_init_finished(t->ssl);
}

/* Moves what the SSL wrote for the socket to `out`. */
static void drain(ms_http_tls *t, ms_buf *out)
{
    size_t pending;
    while ((pending = BIO_ctrl_pending(t->wbio)) > 0) {
        int chunk = pending > INT_MAX ? INT_MAX : (int)pending;
        int n = BIO_read(t->wbio, ms_buf_reserve(out, (size_t)chunk), chunk);
        if (n <= 0)
            break;
        out->n += (size_t)n;
    }
}

/* A fatal error: the thread's error queue is emptied so that it cannot be taken for another
 * connection's (SSL_get_error reads it). */
static int failed(ms_http_tls *t)
{
    t->failed = true;
    ERR_clear_error();
    return MS_ECONN;
}

int ms_http_tls_input(ms_http_tls *t, const char *p, size_t n, ms_buf *plain, ms_buf *out)
{
    if (t->failed)
        return MS_ECONN;
    BIO *rbio = SSL_get_rbio(t->ssl);
    for (size_t off = 0; off < n;) {
        size_t chunk = n - off > INT_MAX ? INT_MAX : n - off;
        int w = BIO_write(rbio, p + off, (int)chunk);
        if (w <= 0)
            return failed(t);
        off += (size_t)w;
    }
    int rc = 0;
    for (;;) {
        char *w = ms_buf_reserve(plain, RECORD);
        size_t room = plain->cap - plain->n;
        int r = SSL_read(t->ssl, w, room > INT_MAX ? INT_MAX : (int)room);
        if (r > 0) {
            plain->n += (size_t)r;
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            rc = MS_HTTP_TLS_CLOSED;
            break;
        }
        rc = failed(t);
        break;
    }
    drain(t, out); /* handshake, session tickets, a key update's answer, an alert */
    return rc;
}

int ms_http_tls_seal(ms_http_tls *t, ms_buf *io)
{
    ms_buf out = {0};
    if (t->failed)
        goto fail;
    for (size_t off = 0; off < io->n;) {
        size_t chunk = io->n - off > INT_MAX ? INT_MAX : io->n - off;
        int w = SSL_write(t->ssl, io->p + off, (int)chunk);
        if (w <= 0) {
            failed(t);
            goto fail;
        }
        off += (size_t)w;
        drain(t, &out);
    }
    ms_buf_release(io);
    *io = out;
    return 0;
fail:
    ms_buf_release(&out);
    ms_buf_release(io);
    return MS_ECONN;
}

void ms_http_tls_close_notify(ms_http_tls *t, ms_buf *out)
{
    if (t->failed || !SSL_is_init_finished(t->ssl) ||
        (SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN))
        return;
    if (SSL_shutdown(t->ssl) < 0)
        failed(t);
    drain(t, out);
}
