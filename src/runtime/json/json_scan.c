/*
 * json_scan.c — the in-place JSON reader (contract in json_scan.h).
 *
 * A recursive-descent checker that records a token per value as it goes: the text is walked
 * once, and every later lookup walks tokens, skipping a whole value through `next`.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/json/json_scan.h"
#include "runtime/core/banned.h"

typedef struct scanner {
    const char *s;
    size_t len, at;
    ms_js_token *tok;
    size_t n, cap;
    int rc; /* first failure, or 0 */
} scanner;

static void skip_space(scanner *sc)
{
    while (sc->at < sc->len) {
        char c = sc->s[sc->at];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        sc->at++;
    }
}

static int fail(scanner *sc, int rc)
{
    if (!sc->rc)
        sc->rc = rc;
    return -1;
}

static int new_token(scanner *sc, ms_js_kind kind, size_t start)
{
    if (sc->n == sc->cap)
        return fail(sc, MS_ETOOBIG);
    ms_js_token *t = &sc->tok[sc->n];
    *t = (ms_js_token){.kind = kind, .start = (uint32_t)start};
    return (int)sc->n++;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Length of the well-formed UTF-8 sequence at p (first byte >= 0x80), or 0. */
static size_t utf8_sequence(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000;
    else
        return 0;
    if (left < n)
        return 0;
    unsigned cp = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* A string (a key or a value) at sc->at, its opening quote. */
static int scan_string(scanner *sc)
{
    int t = new_token(sc, MS_JS_STRING, ++sc->at);
    if (t < 0)
        return -1;
    const unsigned char *s = (const unsigned char *)sc->s;
    while (sc->at < sc->len) {
        unsigned char c = s[sc->at];
        if (c == '"') {
            sc->tok[t].end = (uint32_t)sc->at++;
            sc->tok[t].next = (uint32_t)t + 1;
            return t;
        }
        if (c < 0x20)
            return fail(sc, MS_EINVAL);
        if (c == '\\') {
            sc->tok[t].has_escape = true;
            if (sc->at + 1 >= sc->len)
                return fail(sc, MS_EINVAL);
            char e = sc->s[sc->at + 1];
            if (e != 'u') {
                if (!strchr("\"\\/bfnrt", e) || e == '\0')
                    return fail(sc, MS_EINVAL);
                sc->at += 2;
                continue;
            }
            int cp = sc->at + 6 <= sc->len ? hex4(sc->s + sc->at + 2) : -1;
            if (cp <= 0 || (cp >= 0xdc00 && cp <= 0xdfff))
                return fail(sc, MS_EINVAL); /* \u0000 ends a C string; a lone low surrogate */
            sc->at += 6;
            if (cp >= 0xd800 && cp <= 0xdbff) { /* a high surrogate wants its low half */
                int lo = sc->at + 6 <= sc->len && s[sc->at] == '\\' && s[sc->at + 1] == 'u'
                             ? hex4(sc->s + sc->at + 2)
                             : -1;
                if (lo < 0xdc00 || lo > 0xdfff)
                    return fail(sc, MS_EINVAL);
                sc->at += 6;
            }
            continue;
        }
        if (c < 0x80) {
            sc->at++;
            continue;
        }
        size_t n = utf8_sequence(s + sc->at, sc->len - sc->at);
        if (n == 0)
            return fail(sc, MS_EINVAL);
        sc->at += n;
    }
    return fail(sc, MS_EINVAL);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int scan_number(scanner *sc)
{
    size_t p = sc->at;
    const char *s = sc->s;
    if (p < sc->len && s[p] == '-')
        p++;
    if (p >= sc->len || !is_digit(s[p]))
        return fail(sc, MS_EINVAL);
    if (s[p] == '0')
        p++;
    else
        while (p < sc->len && is_digit(s[p]))
            p++;
    if (p < sc->len && s[p] == '.') {
        if (++p >= sc->len || !is_digit(s[p]))
            return fail(sc, MS_EINVAL);
        while (p < sc->len && is_digit(s[p]))
            p++;
    }
    if (p < sc->len && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < sc->len && (s[p] == '+' || s[p] == '-'))
            p++;
        if (p >= sc->len || !is_digit(s[p]))
            return fail(sc, MS_EINVAL);
        while (p < sc->len && is_digit(s[p]))
            p++;
    }
    int t = new_token(sc, MS_JS_NUMBER, sc->at);
    if (t < 0)
        return -1;
    sc->tok[t].end = (uint32_t)p;
    sc->tok[t].next = (uint32_t)t + 1;
    sc->at = p;
    return t;
}

static int scan_word(scanner *sc, const char *word, ms_js_kind kind)
{
    size_t n = strlen(word);
    if (sc->len - sc->at < n || memcmp(sc->s + sc->at, word, n) != 0)
        return fail(sc, MS_EINVAL);
    int t = new_token(sc, kind, sc->at);
    if (t < 0)
        return -1;
    sc->at += n;
    sc->tok[t].end = (uint32_t)sc->at;
    sc->tok[t].next = (uint32_t)t + 1;
    return t;
}

static int scan_value(scanner *sc, int depth);

/* An object or an array at sc->at (its opening bracket). */
static int scan_container(scanner *sc, int depth, bool is_object)
{
    if (depth >= MS_JS_MAX_DEPTH)
        return fail(sc, MS_EINVAL);
    int t = new_token(sc, is_object ? MS_JS_OBJECT : MS_JS_ARRAY, sc->at++);
    if (t < 0)
        return -1;
    char close = is_object ? '}' : ']';
    skip_space(sc);
    if (sc->at < sc->len && sc->s[sc->at] == close) {
        sc->at++;
    } else {
        for (;;) {
            if (is_object) {
                if (sc->at >= sc->len || sc->s[sc->at] != '"' || scan_string(sc) < 0)
                    return fail(sc, MS_EINVAL);
                skip_space(sc);
                if (sc->at >= sc->len || sc->s[sc->at] != ':')
                    return fail(sc, MS_EINVAL);
                sc->at++;
                skip_space(sc);
            }
            if (scan_value(sc, depth + 1) < 0)
                return -1;
            sc->tok[t].size++;
            skip_space(sc);
            if (sc->at < sc->len && sc->s[sc->at] == ',') {
                sc->at++;
                skip_space(sc);
                continue;
            }
            if (sc->at < sc->len && sc->s[sc->at] == close) {
                sc->at++;
                break;
            }
            return fail(sc, MS_EINVAL);
        }
    }
    sc->tok[t].end = (uint32_t)sc->at;
    sc->tok[t].next = (uint32_t)sc->n;
    return t;
}

static int scan_value(scanner *sc, int depth)
{
    if (sc->at >= sc->len)
        return fail(sc, MS_EINVAL);
    switch (sc->s[sc->at]) {
    case '{':
        return scan_container(sc, depth, true);
    case '[':
        return scan_container(sc, depth, false);
    case '"':
        return scan_string(sc);
    case 't':
        return scan_word(sc, "true", MS_JS_TRUE);
    case 'f':
        return scan_word(sc, "false", MS_JS_FALSE);
    case 'n':
        return scan_word(sc, "null", MS_JS_NULL);
    default:
        return scan_number(sc);
    }
}

int ms_js_scan(ms_js *js, const char *text, size_t len, ms_js_token *tok, size_t cap)
{
    *js = (ms_js){.text = text, .tok = tok};
    if (len >= UINT32_MAX)
        return MS_ETOOBIG;
    scanner sc = {.s = text, .len = len, .tok = tok, .cap = cap};
    skip_space(&sc);
    if (scan_value(&sc, 0) < 0)
        return sc.rc ? sc.rc : MS_EINVAL;
    skip_space(&sc);
    if (sc.at != len)
        return MS_EINVAL;
    js->n = (uint32_t)sc.n;
    return 0;
}

/* ---- reading ---- */

/* Is key token `k` the text `key`? */
static bool key_is(const ms_js *js, int k, const char *key, size_t key_len)
{
    const ms_js_token *t = &js->tok[k];
    if (!t->has_escape)
        return t->end - t->start == key_len && memcmp(js->text + t->start, key, key_len) == 0;
    char buf[256];
    int n = ms_js_string(js, k, buf, sizeof buf);
    return n >= 0 && (size_t)n == key_len && memcmp(buf, key, key_len) == 0;
}

int ms_js_get(const ms_js *js, int obj, const char *key)
{
    if (!ms_js_is(js, obj, MS_JS_OBJECT))
        return -1;
    size_t key_len = strlen(key);
    int found = -1;
    uint32_t k = (uint32_t)obj + 1;
    for (uint32_t i = 0; i < js->tok[obj].size; i++) {
        uint32_t v = k + 1;
        if (key_is(js, (int)k, key, key_len)) {
            if (found >= 0)
                return -1;
            found = (int)v;
        }
        k = js->tok[v].next;
    }
    return found;
}

int ms_js_first(const ms_js *js, int t)
{
    bool is_container = ms_js_is(js, t, MS_JS_ARRAY) || ms_js_is(js, t, MS_JS_OBJECT);
    return is_container && js->tok[t].size > 0 ? t + 1 : -1;
}

int ms_js_after(const ms_js *js, int parent, int t)
{
    uint32_t next = js->tok[t].next;
    return next < js->tok[parent].next ? (int)next : -1;
}

int ms_js_at(const ms_js *js, int arr, size_t i)
{
    if (!ms_js_is(js, arr, MS_JS_ARRAY) || i >= js->tok[arr].size)
        return -1;
    int t = arr + 1;
    while (i-- > 0)
        t = (int)js->tok[t].next;
    return t;
}

/* Appends code point cp as UTF-8 at out[n]; the caller has checked room for 4 bytes. */
static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

int ms_js_string(const ms_js *js, int t, char *out, size_t cap)
{
    if (!ms_js_is(js, t, MS_JS_STRING) || cap == 0)
        return -1;
    const ms_js_token *k = &js->tok[t];
    const char *p = js->text + k->start, *end = js->text + k->end;
    if (!k->has_escape) {
        size_t n = (size_t)(end - p);
        if (n >= cap)
            return -1;
        memcpy(out, p, n);
        out[n] = '\0';
        return (int)n;
    }
    size_t n = 0;
    while (p < end) {
        if (n + 4 >= cap) /* room for the longest sequence and the NUL */
            return -1;
        if (*p != '\\') {
            out[n++] = *p++;
            continue;
        }
        char e = p[1];
        p += 2;
        if (e != 'u') {
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            out[n++] = to[strchr(from, e) - from]; /* the scan let only these through */
            continue;
        }
        unsigned cp = (unsigned)hex4(p);
        p += 4;
        if (cp >= 0xd800 && cp <= 0xdbff) { /* the scan checked the low half follows */
            cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned)hex4(p + 2) - 0xdc00);
            p += 6;
        }
        n += put_utf8(out + n, cp);
    }
    out[n] = '\0';
    return (int)n;
}

char *ms_js_strdup(const ms_js *js, int t)
{
    if (!ms_js_is(js, t, MS_JS_STRING))
        return NULL;
    /* unescaping never lengthens: "\u00e9" (6) is 2 bytes, a surrogate pair (12) 4 */
    size_t cap = js->tok[t].end - js->tok[t].start + 5;
    char *s = ms_xmalloc(cap);
    if (ms_js_string(js, t, s, cap) < 0)
        MS_BUG("a scanned string did not unescape");
    return s;
}

bool ms_js_int(const ms_js *js, int t, int64_t *out)
{
    if (!ms_js_is(js, t, MS_JS_NUMBER))
        return false;
    const char *p = js->text + js->tok[t].start, *end = js->text + js->tok[t].end;
    bool is_negative = *p == '-';
    p += is_negative;
    uint64_t v = 0, limit = is_negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; p < end; p++) {
        if (!is_digit(*p))
            return false; /* a fraction or an exponent */
        unsigned d = (unsigned)(*p - '0');
        if (v > (limit - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = is_negative ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

/* Raw-span order of two key tokens (what sorting compares). */
static int key_cmp(const ms_js *js, int a, int b)
{
    const ms_js_token *x = &js->tok[a], *y = &js->tok[b];
    size_t nx = x->end - x->start, ny = y->end - y->start;
    int c = memcmp(js->text + x->start, js->text + y->start, nx < ny ? nx : ny);
    return c ? c : (nx > ny) - (nx < ny);
}

void ms_js_write_compact(const ms_js *js, int t, ms_buf *out)
{
    const ms_js_token *k = &js->tok[t];
    switch (k->kind) {
    case MS_JS_STRING:
        ms_buf_add(out, "\"", 1);
        ms_buf_add(out, js->text + k->start, k->end - k->start);
        ms_buf_add(out, "\"", 1);
        return;
    case MS_JS_ARRAY:
        ms_buf_add(out, "[", 1);
        for (int e = ms_js_first(js, t); e >= 0; e = ms_js_after(js, t, e)) {
            if (e != t + 1)
                ms_buf_add(out, ",", 1);
            ms_js_write_compact(js, e, out);
        }
        ms_buf_add(out, "]", 1);
        return;
    case MS_JS_OBJECT: {
        /* keys in sorted order: an insertion sort of the key indexes (objects here are small) */
        int few[32], *keys = k->size <= 32 ? few : ms_xcalloc(k->size, sizeof *keys);
        uint32_t n = 0;
        for (int key = ms_js_first(js, t); key >= 0; key = ms_js_after(js, t, key + 1)) {
            uint32_t i = n++;
            while (i > 0 && key_cmp(js, keys[i - 1], key) > 0) {
                keys[i] = keys[i - 1];
                i--;
            }
            keys[i] = key;
        }
        ms_buf_add(out, "{", 1);
        for (uint32_t i = 0; i < n; i++) {
            if (i)
                ms_buf_add(out, ",", 1);
            ms_js_write_compact(js, keys[i], out);
            ms_buf_add(out, ":", 1);
            ms_js_write_compact(js, keys[i] + 1, out);
        }
        ms_buf_add(out, "}", 1);
        if (keys != few)
            free(keys);
        return;
    }
    default: /* numbers and words as written */
        ms_buf_add(out, js->text + k->start, k->end - k->start);
        return;
    }
}
