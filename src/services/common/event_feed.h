/*
 * event_feed.h — the local event bus's producer side: every service serves its outbox as a
 * catch-up feed, GET /internal/v1/events?after=<seq>&limit=<n>&wait_ms=<ms> (internal: no
 * caller identity), answered {"items":[{seq, id, aggregate_type, aggregate_id, type, payload,
 * created_at}], "next_after": <last seq served, or after>, "head": <the newest seq>} (head:
 * for the consumers' lag gauge; rows up to it may not be servable yet).
 *
 * Only rows a consumer may checkpoint past are served: on SQLite every committed row (commits
 * come in seq order), but with the process's event store (the order service) only rows the
 * store has made durable; on PostgreSQL, where a higher seq can commit before a lower one,
 * rows past a seq gap only once the outbox relay has published them (it decides gaps). A long
 * poll (wait_ms > 0, at most 30000, never past the request's deadline or a drain) re-reads
 * the outbox every 50 ms on the loop's pool without blocking the loop.
 *
 * Threading: event_feed_get runs on a loop thread; event_feed_set_store at start and stop.
 */
#ifndef MS_EVENT_FEED_H
#define MS_EVENT_FEED_H

#include "eventstore/eventstore.h"
#include "runtime/http/http.h"

enum {
    EVENT_FEED_DEFAULT_LIMIT = 100,
    EVENT_FEED_MAX_LIMIT = 1000,
    EVENT_FEED_MAX_WAIT_MS = 30000
};

/* The process's event store writing the outbox (rows then come from outbox_messages and only
 * once durable), or NULL (the default). Set before the loops serve, cleared after they end. */
void event_feed_set_store(ms_es *es);

/* The handler of GET /internal/v1/events. */
void event_feed_get(ms_http_request *req);

#endif
