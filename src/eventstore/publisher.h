/*
 * publisher.h — where the outbox relay hands messages: a small interface (a struct of function
 * pointers) so that each transport is a file of its own behind it. Today the local JSONL feed
 * (publisher_file.c); the event bus (NATS) comes later behind the same struct.
 *
 * Contract: `publish` returns 0 only when all n messages are durably handed over (the relay
 * then marks them published); any negative MS_E* code means none counts as delivered, and the
 * relay retries the same batch. A publisher is called on one thread at a time (the relay's).
 * Messages are borrowed for the call. `close` (may be NULL) flushes what the transport holds
 * and releases `self`; nothing is called after it.
 */
#ifndef MS_PUBLISHER_H
#define MS_PUBLISHER_H

#include <stddef.h>
#include <stdint.h>

/* One outbox row, borrowed for the duration of a publish call. */
typedef struct ms_outbox_message {
    int64_t seq;
    const char *id, *aggregate_type, *aggregate_id, *type, *payload, *created_at;
} ms_outbox_message;

/* Where messages go. `name` is for logs. */
typedef struct ms_publisher {
    int (*publish)(void *self, const ms_outbox_message *msgs, size_t n);
    void (*close)(void *self);
    void *self;
    const char *name;
} ms_publisher;

/*
 * The local feed: appends one JSON object per message and line to `path` (created if missing)
 * — {"seq","id","aggregate_type","aggregate_id","type","payload","created_at"}, the payload as
 * JSON (a payload that is not valid JSON goes as a string, with a warning) — and fsyncs before
 * publish returns 0. A failed write is cut off again, so the file holds whole lines only.
 * Returns 0 or MS_EIO (cannot open). Close it with out->close(out->self) unless a relay owns it.
 */
int ms_publisher_file(const char *path, ms_publisher *out);

#endif
