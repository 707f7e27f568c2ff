/*
 * publisher.h — where the outbox relay hands messages: a small interface (a struct of function
 * pointers) so that each transport is a file of its own behind it: the local JSONL feed
 * (publisher_file.c) and the event bus, NATS JetStream (publisher_nats.c).
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

/*
 * The event bus: NATS JetStream, libnats loaded with dlopen() on the first call (a process
 * without NATS_URL never maps it). One stream per service, `MICROSHOP_<SERVICE>` (upper case,
 * file storage, 2 min duplicate window) with subjects `<service>.>`, created when missing.
 * A message goes to `<service>.<type>` (the service not repeated when the type names it:
 * user.created, order.OrderCreated), its payload the outbox payload, with headers Nats-Msg-Id (the
 * outbox id: the stream drops a repeat inside its window), Microshop-Aggregate-Id,
 * Microshop-Event-Type. publish sends one message at a time and returns 0 only when the stream
 * acked every one; while disconnected it fails at once with MS_ECONN (libnats reconnects on its own
 * threads, forever), on a missing ack within `timeout_ms` (0: 5000) with MS_ETIMEDOUT or MS_EIO. An
 * unreachable server at start is no error: the connection keeps trying in the background. `url`:
 * checked with ms_nats_url_check; `service`: lower-case letters, digits, '_' or '-'. Returns 0,
 * MS_EINVAL (url or service) or MS_EIO (libnats cannot be loaded or set up).
 */
int ms_publisher_nats(const char *url, const char *service, int timeout_ms, ms_publisher *out);

/* Whether `url` is a NATS server list: comma-separated nats://[USER[:PASS]@]HOST[:PORT]
 * (PORT 1..65535). 0 or MS_EINVAL. No I/O, no libnats. */
int ms_nats_url_check(const char *url);

#endif
