/*
 * sha256.h — SHA-256 (FIPS 180-4), for request fingerprints (Idempotency-Key bodies) and ids
 * derived from names. Not for passwords (see argon2id in the user service). Thread-safe: the
 * context is the caller's.
 */
#ifndef MS_SHA256_H
#define MS_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct ms_sha256 {
    uint32_t h[8];
    uint64_t len; /* bytes hashed so far */
    unsigned char block[64];
    size_t used; /* bytes waiting in block */
} ms_sha256;

void ms_sha256_init(ms_sha256 *s);
void ms_sha256_update(ms_sha256 *s, const void *data, size_t n);
void ms_sha256_final(ms_sha256 *s, unsigned char out[32]);
/* One call: the digest of `data`, as 64 lower-case hex digits and a NUL into hex[65]. */
void ms_sha256_hex(const void *data, size_t n, char hex[65]);
/* A UUID (version 8, RFC 9562) derived from a name: the same name always gives the same id.
 * For ids that must survive retries, e.g. an order keyed by its Idempotency-Key. */
void ms_uuid_from_name(const void *name, size_t n, char out[37]);

#endif
