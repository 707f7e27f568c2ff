/* UUIDv7 (RFC 9562) and RFC 3339 timestamps. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/banned.h"

void ms_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0)
            MS_BUG("getrandom failed");
        p += got;
        n -= (size_t)got;
    }
}

/*
 * UUIDs take their random bits from a per-thread pool filled by one getrandom call for dozens
 * of ids: a syscall per id cost a measurable share of a POST. The pool is emptied in a forked
 * child (pthread_atfork), which must never hand out its parent's next ids.
 */
enum { POOL_SIZE = 640 };
static __thread unsigned char pool[POOL_SIZE];
static __thread size_t pool_left;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_forget(void)
{
    explicit_bzero(pool, sizeof pool);
    pool_left = 0;
}

static void pool_register(void)
{
    pthread_atfork(NULL, NULL, pool_forget);
}

static void pool_take(unsigned char *out, size_t n)
{
    if (pool_left < n) {
        pthread_once(&pool_once, pool_register);
        ms_random_bytes(pool, sizeof pool);
        pool_left = sizeof pool;
    }
    unsigned char *p = pool + (sizeof pool - pool_left);
    memcpy(out, p, n);
    pool_left -= n;
}

void ms_random_pooled(void *buf, size_t n)
{
    if (n > 64)
        MS_BUG("a pooled random take over 64 bytes");
    pool_take(buf, n);
}

void ms_uuid_new(char out[MS_UUID_LEN + 1])
{
    unsigned char b[16];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    pool_take(b + 6, 10);
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | (b[6] & 0x0F)); /* version 7 */
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3F)); /* variant 10 */
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
}

bool ms_uuid_valid(const char *s)
{
    for (int i = 0; i < MS_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return s[MS_UUID_LEN] == '\0';
}

/* The seconds part is formatted once a second per thread: strftime and snprintf were a few
 * per cent of the event-store writer, which stamps every append. */
static __thread time_t second_cached = -1;
static __thread char second_text[20]; /* "2026-11-25T06:15:47" */

static void format_time(time_t secs, int ms, char out[MS_TIME_LEN + 1])
{
    if (secs != second_cached) {
        struct tm tm;
        gmtime_r(&secs, &tm);
        if (strftime(second_text, sizeof second_text, "%Y-%m-%dT%H:%M:%S", &tm) != 19)
            MS_BUG("a timestamp out of range");
        second_cached = secs;
    }
    memcpy(out, second_text, 19);
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

void ms_time_now(char out[MS_TIME_LEN + 1])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    format_time(ts.tv_sec, (int)(ts.tv_nsec / 1000000) % 1000, out);
}

void ms_time_format(uint64_t ms, char out[MS_TIME_LEN + 1])
{
    format_time((time_t)(ms / 1000), (int)(ms % 1000), out);
}
