/*
 * json_scan.h — reads JSON text in place: one pass checks the text and fills a caller's array
 * of tokens (no allocation, nothing copied), then values are looked up by key or index and
 * read as strings, integers or raw spans.
 *
 * For stored facts read on hot paths (events, views, snapshots): the projector parsed every
 * event with jansson, whose tree and lexer were a third of its time. Request bodies keep
 * jansson (json.h), which reports where a syntax error is.
 *
 * Strict like jansson's loader: RFC 8259 grammar, one value with only whitespace around it,
 * UTF-8 checked, \u escapes checked (no lone surrogates, no \u0000), nesting at most
 * MS_JS_MAX_DEPTH. A key that appears twice in an object is reported by the lookup of that key.
 * Thread-safe (pure); tokens borrow the text, which must outlive them.
 */
#ifndef MS_JSON_SCAN_H
#define MS_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/core/buf.h"

enum { MS_JS_MAX_DEPTH = 64 };

typedef enum ms_js_kind {
    MS_JS_OBJECT = 1,
    MS_JS_ARRAY,
    MS_JS_STRING,
    MS_JS_NUMBER,
    MS_JS_TRUE,
    MS_JS_FALSE,
    MS_JS_NULL,
} ms_js_kind;

typedef struct ms_js_token {
    ms_js_kind kind;
    uint32_t start, end; /* byte span in the text; a string's excludes its quotes */
    uint32_t size;       /* members of an object (key and value are one), elements of an array */
    uint32_t next;       /* index of the token after this value and everything inside it */
    bool has_escape;     /* a string holding a backslash escape */
} ms_js_token;

/* An object's tokens are key, value, key, value...; an array's are its elements. */
typedef struct ms_js {
    const char *text;
    ms_js_token *tok;
    uint32_t n;
} ms_js;

/* Tokens a text of `len` bytes needs at most: for sizing the array. */
static inline size_t ms_js_max_tokens(size_t len)
{
    return len / 2 + 2;
}

/*
 * Scans text[0..len) into tok[0..cap); token 0 is the whole value. Returns 0, MS_EINVAL when
 * the text is not one well-formed JSON value, MS_ETOOBIG when it needs more than cap tokens.
 */
int ms_js_scan(ms_js *js, const char *text, size_t len, ms_js_token *tok, size_t cap);

/* The value of member `key` in object `obj`: a token index; -1 when absent, when `obj` is
 * not an object or when the key appears twice (a duplicated fact is not a fact). */
int ms_js_get(const ms_js *js, int obj, const char *key);

/* Element `i` of array `arr`, or -1. Walks from the first element: for loops, prefer
 * ms_js_first and ms_js_after. */
int ms_js_at(const ms_js *js, int arr, size_t i);
/* First element of an array (or first key of an object), or -1 when empty. */
int ms_js_first(const ms_js *js, int t);
/* The element after `t` inside container `parent`, or -1 at the end. */
int ms_js_after(const ms_js *js, int parent, int t);

static inline bool ms_js_is(const ms_js *js, int t, ms_js_kind kind)
{
    return t >= 0 && (uint32_t)t < js->n && js->tok[t].kind == kind;
}

/* Copies string `t`, unescaped and NUL-terminated, into out[0..cap). Returns its length, or
 * -1 when `t` is not a string or does not fit. */
int ms_js_string(const ms_js *js, int t, char *out, size_t cap);

/* String `t` as a new heap string (the caller frees it), or NULL when `t` is not a string. */
char *ms_js_strdup(const ms_js *js, int t);

/* Integer `t` (no fraction, no exponent, within int64): true and *out, else false. */
bool ms_js_int(const ms_js *js, int t, int64_t *out);

/* Appends value `t` as compact JSON with its objects' keys in sorted order, strings as they
 * appear in the text (escapes kept): the bytes jansson's compact sorted dump gives for text
 * that dump wrote, which is what events and views hold. */
void ms_js_write_compact(const ms_js *js, int t, ms_buf *out);

#endif
