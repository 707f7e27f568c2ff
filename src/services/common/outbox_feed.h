/*
 * outbox_feed.h — every service's outbox relay, started the same way: the service's outbox
 * table published in order, at least once: to NATS JetStream when NATS_URL is set (stream
 * MICROSHOP_<SERVICE>, see ms_publisher_nats), else to the local feed
 * `<data>/<service>-outbox.jsonl` (one JSON object per line, fsynced). Start-up and shut-down
 * only, except ms_relay_kick (any thread).
 */
#ifndef MS_OUTBOX_FEED_H
#define MS_OUTBOX_FEED_H

#include "eventstore/relay.h"
#include "services/service.h"

/* Starts the relay and registers its metrics (outbox_*). `es`: the service's event store
 * when it writes the outbox (the relay then publishes only durable rows), or NULL. */
int outbox_feed_start(const ms_service_env *env, const char *service, ms_es *es, ms_relay **out);

#endif
