/* base64url without padding; see base64.h. */
#include "runtime/core/base64.h"
#include "runtime/core/error.h"
#include "runtime/core/banned.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void ms_base64url_encode(ms_buf *out, const void *data, size_t n)
{
    const unsigned char *p = data;
    char *w = ms_buf_reserve(out, (n + 2) / 3 * 4);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        w[o++] = alphabet[v >> 18 & 63];
        w[o++] = alphabet[v >> 12 & 63];
        if (i + 1 < n)
            w[o++] = alphabet[v >> 6 & 63];
        if (i + 2 < n)
            w[o++] = alphabet[v & 63];
    }
    out->n += o;
}

static int value_of(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '-' ? 62 : c == '_' ? 63 : -1;
}

int ms_base64url_decode(ms_buf *out, const char *text, size_t n)
{
    if (n % 4 == 1)
        return MS_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (value_of(text[i]) < 0)
            return MS_EINVAL;
    char *w = ms_buf_reserve(out, n / 4 * 3 + 2);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        size_t k = n - i < 4 ? n - i : 4;
        unsigned v = 0;
        for (size_t j = 0; j < 4; j++)
            v = v << 6 | (j < k ? (unsigned)value_of(text[i + j]) : 0);
        w[o++] = (char)(v >> 16);
        if (k > 2)
            w[o++] = (char)(v >> 8 & 255);
        if (k > 3)
            w[o++] = (char)(v & 255);
    }
    out->n += o;
    return 0;
}
