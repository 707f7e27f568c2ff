/*
 * base64.h — base64url without padding (RFC 4648 section 5), for opaque cursors and, later,
 * tokens. Thread-safe; the caller owns the buffers.
 */
#ifndef MS_BASE64_H
#define MS_BASE64_H

#include <stddef.h>

#include "runtime/core/buf.h"

/* Appends the encoding of data[0..n) to out. */
void ms_base64url_encode(ms_buf *out, const void *data, size_t n);
/* Appends the decoding of text[0..n) to out. Returns 0, or MS_EINVAL for a character outside
 * the alphabet or an impossible length (out is then unchanged). */
int ms_base64url_decode(ms_buf *out, const char *text, size_t n);

#endif
