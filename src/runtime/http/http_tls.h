/*
 * http_tls.h — TLS 1.3 for the server's public listener: one SSL_CTX per process (built at
 * start, read-only afterwards, so every loop thread may make connections from it) and one
 * SSL per connection over memory BIOs. The connection code moves the bytes: what the socket
 * delivers goes in with ms_http_tls_input, which hands back the plaintext and the bytes the
 * socket must carry (handshake, tickets, alerts); plaintext to send is sealed in place.
 * Nothing here touches a socket or blocks. A connection's state belongs to its loop thread.
 */
#ifndef MS_HTTP_TLS_H
#define MS_HTTP_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime/core/buf.h"

typedef struct ms_http_tls_ctx ms_http_tls_ctx;
typedef struct ms_http_tls ms_http_tls;

/* Loads the PEM certificate chain and private key and checks that they match. Returns 0 or
 * MS_EINVAL with a sentence naming the file at fault in err. */
int ms_http_tls_ctx_new(const char *cert_file, const char *key_file, ms_http_tls_ctx **out,
                        char *err, size_t errn);
void ms_http_tls_ctx_free(ms_http_tls_ctx *ctx);

/* A server-side connection about to start its handshake. */
ms_http_tls *ms_http_tls_new(ms_http_tls_ctx *ctx);
void ms_http_tls_free(ms_http_tls *t);

/* Where the socket's next read goes (a per-thread buffer; consumed by ms_http_tls_input
 * before the next read). */
char *ms_http_tls_read_buf(size_t *len);

enum { MS_HTTP_TLS_CLOSED = 1 }; /* ms_http_tls_input: the peer sent close_notify */

/* Takes `n` bytes read from the socket: appends the plaintext they complete to `plain`, and
 * to `out` what the socket must send back. Returns 0, MS_HTTP_TLS_CLOSED, or MS_ECONN when
 * the session failed (out may hold an alert worth sending before closing). */
int ms_http_tls_input(ms_http_tls *t, const char *p, size_t n, ms_buf *plain, ms_buf *out);

/* Replaces the plaintext in `io` with its records. 0 or MS_ECONN. */
int ms_http_tls_seal(ms_http_tls *t, ms_buf *io);

/* Appends a close_notify to `out` once, when the session is up and has not failed. */
void ms_http_tls_close_notify(ms_http_tls *t, ms_buf *out);

/* The handshake has finished. */
bool ms_http_tls_established(const ms_http_tls *t);

#endif
