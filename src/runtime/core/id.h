/*
 * id.h — identifiers and timestamps. Ids are UUIDv7 (time-ordered, so new rows land at the
 * end of the primary key index); timestamps RFC 3339 UTC with milliseconds, which sort as
 * text. Thread-safe.
 */
#ifndef MS_ID_H
#define MS_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { MS_UUID_LEN = 36, MS_TIME_LEN = 24 };

/* Writes a new UUIDv7 ("0190c2a4-...") and its NUL into out[37]. */
void ms_uuid_new(char out[MS_UUID_LEN + 1]);
/* True for the canonical lower- or upper-case 8-4-4-4-12 hex form. */
bool ms_uuid_valid(const char *s);
/* Writes now as "2026-11-25T06:15:47.123Z" into out[25]. */
void ms_time_now(char out[MS_TIME_LEN + 1]);
/* The same for `ms` milliseconds since the epoch (a wall-clock time, UTC). */
void ms_time_format(uint64_t ms, char out[MS_TIME_LEN + 1]);
/* Fills buf with cryptographically random bytes (getrandom). */
void ms_random_bytes(void *buf, size_t n);
/* The same from a per-thread pool refilled by one getrandom call for many takes: for ids made
 * on hot paths (a span id per forwarded request). n <= 64. */
void ms_random_pooled(void *buf, size_t n);

#endif
