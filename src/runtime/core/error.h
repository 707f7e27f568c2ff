/*
 * error.h — the one error vocabulary of microshop.
 *
 * Functions return int: 0 on success or a negative MS_E* code. Codes become HTTP statuses only
 * at the edge (ms_http_status_for). Thread-safe; no allocation.
 */
#ifndef MS_ERROR_H
#define MS_ERROR_H

/* X(name, message) — the order is the code: the first is -2 (after MS_OK's slot), and so on. Codes
 * are never stored or sent (clients see statuses and problem types), but new ones go at the end all
 * the same, so a code read in an old log still names the same error. The last six are what a
 * request can be refused for; a handler answers them with ms_problem_from_error. */
#define MS_ERRNO_MAP(X)                                                                            \
    X(NOMEM, "out of memory")                                                                      \
    X(INVAL, "invalid argument")                                                                   \
    X(NOTFOUND, "not found")                                                                       \
    X(CONFLICT, "conflict")                                                                        \
    X(BUSY, "resource busy")                                                                       \
    X(TIMEDOUT, "deadline passed")                                                                 \
    X(POOLTIMEOUT, "no database connection free before the deadline")                              \
    X(DB, "database error")                                                                        \
    X(CONN, "connection failed")                                                                   \
    X(IO, "input/output error")                                                                    \
    X(TOOBIG, "too large")                                                                         \
    X(SHUTDOWN, "shutting down")                                                                   \
    X(INTERNAL, "internal error")                                                                  \
    X(MALFORMED, "the request is malformed")                                                       \
    X(UNAUTHENTICATED, "the caller is not identified")                                             \
    X(FORBIDDEN, "the caller may not do this")                                                     \
    X(MEDIATYPE, "the body's media type is not supported")                                         \
    X(VALIDATION, "the request is well-formed but breaks a rule")                                  \
    X(PRECONDITION, "a required precondition header is missing")                                   \
    X(DECLINED, "the payment was declined")

enum {
    MS_OK = 0,
#define MS_ERR_ENUM_(name, msg) MS_E##name##_IDX_,
    MS_ERRNO_MAP(MS_ERR_ENUM_)
#undef MS_ERR_ENUM_
};
enum {
#define MS_ERR_CODE_(name, msg) MS_E##name = -(MS_E##name##_IDX_ + 1),
    MS_ERRNO_MAP(MS_ERR_CODE_)
#undef MS_ERR_CODE_
};

/* The message of a MS_E* code (static string; "unknown error" for anything else). */
const char *ms_strerror(int code);
/* The symbolic name ("EBUSY"-style, without the MS_ prefix) of a code, for logs. */
const char *ms_errname(int code);

/* A broken invariant is a bug: print where, abort. Never for bad input. */
#define MS_BUG(msg) ms_bug__internal(__FILE__, __LINE__, (msg))
void ms_bug__internal(const char *file, int line, const char *msg) __attribute__((noreturn));

/* Allocation that cannot fail: out of memory aborts and the supervisor restarts the process. */
void *ms_xmalloc(size_t n);
void *ms_xcalloc(size_t count, size_t n);
void *ms_xrealloc(void *p, size_t n);
char *ms_xstrdup(const char *s);
char *ms_xstrndup(const char *s, size_t n);

#endif
