/*
 * client_table.h — a fixed-size table of small per-client records (a rate-limit bucket, a last
 * write position), shared by every loop of the process. The table is cut into stripes, each
 * under its own mutex, so loops rarely wait on each other; a key's record is found within a
 * few slots of its hash. When those slots are taken, the record used least recently gives way:
 * a table never grows, whatever the number of clients, and a forgotten client starts afresh.
 *
 * Threading: any thread. gateway_table_get locks the key's stripe and returns its record; the
 * caller reads and writes it, then calls gateway_table_put, which unlocks.
 */
#ifndef MS_GATEWAY_CLIENT_TABLE_H
#define MS_GATEWAY_CLIENT_TABLE_H

#include <stdbool.h>
#include <stdint.h>

enum { GATEWAY_TABLE_KEY_MAX = 47 };

typedef struct gateway_record {
    char key[GATEWAY_TABLE_KEY_MAX + 1]; /* "" when free */
    uint64_t used_ms;                    /* when it was last got */
    union {
        double tokens;
        int64_t position;
    } v;
} gateway_record;

typedef struct gateway_table gateway_table;

gateway_table *gateway_table_new(void);
void gateway_table_free(gateway_table *t);

/* The record of key (keys longer than the maximum are cut), locked. When it was not there:
 * with `fresh` NULL, NULL (nothing locked); else a new record, *fresh true, its v zero for the
 * caller to set. used_ms is the previous use (now_ms for a new record) and is set to now_ms by
 * gateway_table_put. */
gateway_record *gateway_table_get(gateway_table *t, const char *key, uint64_t now_ms, bool *fresh);
void gateway_table_put(gateway_table *t, gateway_record *r, uint64_t now_ms);

#endif
