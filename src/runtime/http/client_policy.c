/* The service client's resilience rules; see client_policy.h. */
#include "runtime/http/client_policy.h"

#include "runtime/core/banned.h"

static int popcount20(uint32_t bits)
{
    return __builtin_popcount(bits & ((1u << MS_BREAKER_WINDOW) - 1));
}

static void breaker_reset(ms_breaker *b, ms_breaker_state state)
{
    b->state = state;
    b->fail_bits = b->slow_bits = 0;
    b->n = b->pos = 0;
    b->trials = b->passed = 0;
}

static void breaker_open(ms_breaker *b, uint64_t now, uint32_t open_ms)
{
    breaker_reset(b, MS_BREAKER_OPEN);
    b->open_until = now + open_ms;
}

bool ms_breaker_admit(ms_breaker *b, uint64_t now, bool *trial)
{
    *trial = false;
    if (b->state == MS_BREAKER_OPEN) {
        if (now < b->open_until)
            return false;
        breaker_reset(b, MS_BREAKER_HALF_OPEN);
    }
    if (b->state == MS_BREAKER_CLOSED)
        return true;
    if (b->trials >= MS_BREAKER_TRIALS)
        return false;
    b->trials++;
    *trial = true;
    return true;
}

void ms_breaker_record(ms_breaker *b, bool trial, ms_outcome o, uint64_t now, uint32_t open_ms)
{
    if (b->state == MS_BREAKER_HALF_OPEN && trial) {
        if (o == MS_OUTCOME_NEUTRAL)
            b->trials--;
        else if (o != MS_OUTCOME_OK)
            breaker_open(b, now, open_ms);
        else if (++b->passed >= MS_BREAKER_TRIALS)
            breaker_reset(b, MS_BREAKER_CLOSED);
        return;
    }
    if (b->state != MS_BREAKER_CLOSED || trial || o == MS_OUTCOME_NEUTRAL)
        return;
    uint32_t bit = 1u << b->pos;
    b->fail_bits = o == MS_OUTCOME_FAIL ? b->fail_bits | bit : b->fail_bits & ~bit;
    b->slow_bits = o == MS_OUTCOME_SLOW ? b->slow_bits | bit : b->slow_bits & ~bit;
    b->pos = (b->pos + 1) % MS_BREAKER_WINDOW;
    if (b->n < MS_BREAKER_WINDOW)
        b->n++;
    if (b->n >= MS_BREAKER_WINDOW &&
        (popcount20(b->fail_bits) * 2 >= b->n || popcount20(b->slow_bits) * 2 >= b->n))
        breaker_open(b, now, open_ms);
}

uint32_t ms_eject_ms(uint32_t base_ms, uint32_t max_ms, int times)
{
    if (times < 1)
        times = 1;
    uint64_t t = (uint64_t)base_ms * (uint64_t)times;
    return t > max_ms ? max_ms : (uint32_t)t;
}

bool ms_eject_allowed(int n, int ejected, int max_percent)
{
    int cap = n * max_percent / 100;
    if (cap < 1)
        cap = 1;
    if (cap > n - 1)
        cap = n - 1;
    return ejected < cap;
}

bool ms_health_record(ms_health *h, bool pass)
{
    if (pass) {
        h->fails = 0;
        if (h->down && ++h->passes >= MS_HEALTH_RISE) {
            h->down = false;
            h->passes = 0;
            return true;
        }
        return false;
    }
    h->passes = 0;
    if (!h->down && ++h->fails >= MS_HEALTH_FALL) {
        h->down = true;
        h->fails = 0;
        return true;
    }
    return false;
}
