/*
 * utf8.h — the length of one UTF-8 sequence, for the writers that must not pass a malformed one
 * on (log.c's JSON lines, otlp_http.c's OTLP strings). Pure; any thread.
 */
#ifndef MS_CORE_UTF8_H
#define MS_CORE_UTF8_H

#include <stddef.h>

/* The length of the valid UTF-8 sequence at `c` (2 to 4), or 0 when it is not one (ASCII
 * included: the callers take those apart first). `c` is NUL-terminated: a sequence cut short
 * stops at the NUL, which is no continuation byte. Overlong forms, surrogates and code points
 * past U+10FFFF are not valid. */
static inline size_t ms_utf8_len(const unsigned char *c)
{
    size_t n = *c >= 0xc2 && *c < 0xe0   ? 2
               : *c >= 0xe0 && *c < 0xf0 ? 3
               : *c >= 0xf0 && *c < 0xf5 ? 4
                                         : 0;
    for (size_t i = 1; i < n; i++)
        if ((c[i] & 0xc0) != 0x80)
            return 0;
    if ((n == 3 && ((*c == 0xe0 && c[1] < 0xa0) || (*c == 0xed && c[1] > 0x9f))) ||
        (n == 4 && ((*c == 0xf0 && c[1] < 0x90) || (*c == 0xf4 && c[1] > 0x8f))))
        return 0;
    return n;
}

#endif
