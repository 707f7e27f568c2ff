/*
 * client_policy.h — the service client's resilience rules as small pure functions (no loop, no
 * clock of their own: `now` is passed in), so they can be tested alone: the circuit breaker's
 * rolling window, outlier ejection's times and cap, active health checks' thresholds.
 *
 * Threading: none; a state belongs to one client (one loop thread).
 */
#ifndef MS_HTTP_CLIENT_POLICY_H
#define MS_HTTP_CLIENT_POLICY_H

#include <stdbool.h>
#include <stdint.h>

/* ---- circuit breaker ---- */
enum {
    MS_BREAKER_WINDOW = 20, /* the last calls judged, and the fewest before it may open */
    MS_BREAKER_TRIALS = 3,  /* calls let through half-open; all must succeed to close */
};

typedef enum { MS_BREAKER_CLOSED, MS_BREAKER_OPEN, MS_BREAKER_HALF_OPEN } ms_breaker_state;

/* An attempt's outcome: NEUTRAL says nothing of the upstream (shut down, a pooled connection
 * the server closed), FAIL is a 5xx, a connect failure, a timeout or a malformed answer, SLOW a
 * success that took longer than the slow threshold. */
typedef enum { MS_OUTCOME_NEUTRAL, MS_OUTCOME_OK, MS_OUTCOME_FAIL, MS_OUTCOME_SLOW } ms_outcome;

typedef struct ms_breaker {
    ms_breaker_state state;
    uint32_t fail_bits, slow_bits; /* the window's outcomes, one bit per call */
    int n, pos;                    /* calls in the window; the next slot */
    uint64_t open_until;
    int trials, passed; /* half-open: calls let through, and how many succeeded */
} ms_breaker;

/* Whether a call may go now. Open turns half-open once its time is over; half-open lets up to
 * MS_BREAKER_TRIALS calls through, each flagged *trial (its outcome must be recorded with it). */
bool ms_breaker_admit(ms_breaker *b, uint64_t now, bool *trial);
/*
 * Records an admitted call's outcome. Closed: it enters the window, and when the window holds
 * at least MS_BREAKER_WINDOW calls of which half failed, or half were slow, the breaker opens
 * for open_ms. Half-open: a trial that fails (or is slow) opens it again; all trials succeeding
 * closes it with an empty window; a neutral trial gives its place back. Outcomes of calls
 * admitted before the breaker opened are ignored.
 */
void ms_breaker_record(ms_breaker *b, bool trial, ms_outcome o, uint64_t now, uint32_t open_ms);

/* ---- outlier ejection ---- */
/* How long an instance ejected for the `times`-th time stays out: base × times, capped. */
uint32_t ms_eject_ms(uint32_t base_ms, uint32_t max_ms, int times);
/* Whether one more of n instances may be ejected while `ejected` are: at most max_percent of
 * them, but always one, and never all. */
bool ms_eject_allowed(int n, int ejected, int max_percent);

/* ---- active health checks ---- */
enum { MS_HEALTH_FALL = 3, MS_HEALTH_RISE = 2 };
typedef struct ms_health {
    int fails, passes;
    bool down;
} ms_health;
/* Records one check: down after MS_HEALTH_FALL failures in a row, up after MS_HEALTH_RISE
 * passes in a row. Returns true when `down` changed. */
bool ms_health_record(ms_health *h, bool pass);

#endif
