/*
 * order_rebuild.h — replaying the whole event store into fresh order views (the read side),
 * for `microshop order rebuild-projections` and any other tool that needs it; the only part
 * of the order service callable from outside its folder besides its ms_service.
 *
 * The old views are deleted and the new ones written in ONE read-database transaction, so a
 * reader sees the old views until the commit and the new ones after it, never a half-built
 * set; the projector's checkpoint moves in the same transaction.
 * Threading: blocking, on the caller's thread, with connections of its own; safe while a
 * server runs on the same databases (its projector then carries on from the new checkpoint).
 */
#ifndef MS_ORDER_REBUILD_H
#define MS_ORDER_REBUILD_H

#include <stdint.h>

#include "runtime/db/db.h"

/* Called after each page of events: `done` is the last position replayed of `total` (the
 * store's newest position when the rebuild began). */
typedef void order_rebuild_progress(int64_t done, int64_t total, void *arg);

typedef struct order_rebuild_result {
    int64_t nevents;  /* events replayed */
    int64_t norders;  /* order views afterwards */
    char detail[256]; /* on failure: the database's message, or what could not be opened */
} order_rebuild_result;

/* Rebuilds the order views of the service whose event store is `write_db`, its read database
 * derived from it and `data_dir` as the service does (both migrated first). `progress` may be
 * NULL. Returns 0 or a negative MS_E* code (out->detail says more). */
int order_rebuild_projections(const char *data_dir, const ms_db_config *write_db,
                              order_rebuild_progress *progress, void *arg,
                              order_rebuild_result *out);

#endif
