/*
 * bus_consumer_nats.c — the consumer's JetStream transport (contract in bus_consumer.h), used
 * when NATS_URL is set: a durable pull consumer on the producer's stream, fetched by the
 * consumer's own thread in batches; each batch is applied in one transaction (bus_consumer_apply:
 * the same bus_received ids as the HTTP feed's, the outbox ids the publisher sends as
 * Nats-Msg-Id, so a switch of transport applies nothing twice), and acked only after the
 * commit. A crash before the ack redelivers the batch; bus_received skips what was committed.
 * A failed transaction naks the batch: JetStream delivers a nak'ed message before newer ones,
 * so events keep their order.
 *
 * libnats runs its own threads (reading, reconnecting, forever); the only handlers set here
 * log. The connection is made on the consumer's thread, so a server that is down or slow never
 * holds up the service's start.
 */
#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventstore/nats_lib.h"
#include "eventstore/publisher.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "services/common/bus_consumer_internal.h"
#include "runtime/core/banned.h"

enum {
    CONNECT_TIMEOUT_MS = 2000,
    RECONNECT_WAIT_MS = 1000,
    API_WAIT_MS = 5000, /* a JetStream API call's (the subscribe's lookups and creation) */
};

struct bus_nats {
    const ms_nats_lib *lib;
    char *url;
    char stream[96];    /* MICROSHOP_<PRODUCER> */
    char durable[96];   /* the consumer's name, '.' as '_' */
    char filter[80];    /* <producer>.> */
    natsConnection *nc; /* set under b->mu by the thread; stop closes it to cut a fetch short */
    jsCtx *js;
    natsSubscription *sub;
    uv_cond_t cond; /* with b->mu: wakes a backoff's sleep at stop */
    bool failing;   /* a failure streak is under way: logged at its start only */
};

static void on_connected(natsConnection *nc, void *closure)
{
    ms_log(MS_LOG_INFO, "bus consumer: connected to NATS", NULL);
}

/* A failure of the bus (not of the database): counted, logged at the start of a streak. */
static void bus_failed(bus_consumer *b, const char *what, natsStatus s, jsErrCode jerr)
{
    bus_nats *n = b->nats;
    bus_consumer_note_failure(b);
    if (n->failing)
        return;
    n->failing = true;
    char code[16];
    snprintf(code, sizeof code, "%d", (int)jerr);
    const char *detail = s == NATS_OK ? NULL : n->lib->nats_GetLastError(NULL);
    ms_log(MS_LOG_WARN, "bus consumer: the event bus failed, will retry", "consumer", b->consumer,
           "stream", n->stream, "step", what, "error",
           detail && *detail ? detail : ms_nats_status_text(n->lib, s), "#js_error", code, NULL);
}

static void sleep_backoff(bus_consumer *b)
{
    uint64_t ns = (uint64_t)bus_consumer_backoff_ms(b) * 1000000u;
    uv_mutex_lock(&b->mu);
    if (!atomic_load(&b->stopping))
        uv_cond_timedwait(&b->nats->cond, &b->mu, ns); /* early on stop; spurious is harmless */
    uv_mutex_unlock(&b->mu);
}

/* The connection (retried in the background by libnats) and its JetStream context. */
static int nats_connect(bus_consumer *b)
{
    bus_nats *n = b->nats;
    const ms_nats_lib *nl = n->lib;
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    char name[128];
    snprintf(name, sizeof name, "microshop-%s", b->consumer);
    natsStatus s = nl->natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = nl->natsOptions_SetURL(opts, n->url);
    if (s == NATS_OK)
        s = nl->natsOptions_SetName(opts, name);
    if (s == NATS_OK)
        s = nl->natsOptions_SetTimeout(opts, CONNECT_TIMEOUT_MS);
    if (s == NATS_OK)
        s = nl->natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = nl->natsOptions_SetReconnectWait(opts, RECONNECT_WAIT_MS);
    if (s == NATS_OK)
        s = nl->natsOptions_SetReconnectedCB(opts, on_connected, NULL);
    if (s == NATS_OK) /* with a handler, a server down at start is retried in the background */
        s = nl->natsOptions_SetRetryOnFailedConnect(opts, true, on_connected, NULL);
    if (s == NATS_OK) {
        s = nl->natsConnection_Connect(&nc, opts);
        if (s == NATS_NOT_YET_CONNECTED)
            s = NATS_OK;
    }
    if (opts)
        nl->natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        bus_failed(b, "connect", s, 0);
        nl->natsConnection_Destroy(nc);
        return MS_EIO;
    }
    uv_mutex_lock(&b->mu);
    bool stopping = atomic_load(&b->stopping);
    if (!stopping)
        n->nc = nc;
    uv_mutex_unlock(&b->mu);
    if (stopping) {
        nl->natsConnection_Destroy(nc);
        return MS_ESHUTDOWN;
    }
    return 0;
}

static int nats_context(bus_consumer *b)
{
    bus_nats *n = b->nats;
    const ms_nats_lib *nl = n->lib;
    natsStatus s;
    jsOptions jo;
    nl->jsOptions_Init(&jo);
    jo.Wait = API_WAIT_MS;
    if ((s = nl->natsConnection_JetStream(&n->js, n->nc, &jo)) != NATS_OK) {
        bus_failed(b, "jetstream", s, 0);
        return MS_EIO;
    }
    return 0;
}

/*
 * Binds to the durable consumer, creating it when missing (from the stream's first message:
 * bus_received skips what the consumer has). Messages left unacked by an earlier subscriber
 * (a process killed between fetch and ack) would come back only after the ack wait, behind
 * newer ones: the durable is then made again from its ack floor, so they come first.
 */
static int nats_subscribe(bus_consumer *b)
{
    bus_nats *n = b->nats;
    const ms_nats_lib *nl = n->lib;
    jsErrCode jerr = 0;
    jsConsumerInfo *ci = NULL;
    uint64_t start_seq = 0;
    natsStatus s = nl->js_GetConsumerInfo(&ci, n->js, n->stream, n->durable, NULL, &jerr);
    if (s == NATS_OK && ci->NumAckPending > 0) {
        start_seq = ci->AckFloor.Stream + 1;
        char pending[24], from[24];
        snprintf(pending, sizeof pending, "%lld", (long long)ci->NumAckPending);
        snprintf(from, sizeof from, "%llu", (unsigned long long)start_seq);
        ms_log(MS_LOG_WARN,
               "bus consumer: unacked messages of an earlier subscriber, making the durable"
               " again from its ack floor",
               "consumer", b->consumer, "durable", n->durable, "#unacked", pending, "#from_seq",
               from, NULL);
        s = nl->js_DeleteConsumer(n->js, n->stream, n->durable, NULL, &jerr);
    } else if (s == NATS_NOT_FOUND) {
        s = NATS_OK; /* made below; a missing stream fails there */
    }
    if (ci)
        nl->jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK) {
        bus_failed(b, "consumer info", s, jerr);
        return MS_EIO;
    }
    jsSubOptions so;
    nl->jsSubOptions_Init(&so);
    so.Stream = n->stream;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.OptStartSeq = start_seq; /* 0: unset, the stream's first message */
    s = nl->js_PullSubscribe(&n->sub, n->js, n->filter, n->durable, NULL, &so, &jerr);
    if (s != NATS_OK) {
        n->sub = NULL;
        bus_failed(b, "subscribe", s, jerr);
        return MS_EIO;
    }
    ms_log(MS_LOG_INFO, "bus consumer: following the stream", "consumer", b->consumer, "stream",
           n->stream, "durable", n->durable, "filter", n->filter, NULL);
    return 0;
}

static void drop_subscription(bus_nats *n)
{
    if (n->sub)
        n->lib->natsSubscription_Destroy(n->sub); /* the durable stays (libnats >= 3.4) */
    n->sub = NULL;
}

/* JetStream's nanoseconds since the epoch as an RFC 3339 UTC time with milliseconds. */
static void format_time(int64_t ns, char out[MS_TIME_LEN + 1])
{
    time_t sec = (time_t)(ns / 1000000000);
    struct tm tm;
    if (ns <= 0 || !gmtime_r(&sec, &tm) ||
        strftime(out, MS_TIME_LEN + 1, "%Y-%m-%dT%H:%M:%S", &tm) != 19) {
        ms_time_now(out);
        return;
    }
    snprintf(out + 19, MS_TIME_LEN + 1 - 19, ".%03dZ", (int)(ns / 1000000 % 1000));
}

static const char *header(const ms_nats_lib *nl, natsMsg *m, const char *key)
{
    const char *v = NULL;
    return nl->natsMsgHeader_Get(m, key, &v) == NATS_OK && v ? v : "";
}

/* One fetched batch: applied in one transaction, then acked; or nak'ed when it failed. */
static int take_batch(bus_consumer *b, natsMsgList *list)
{
    bus_nats *n = b->nats;
    const ms_nats_lib *nl = n->lib;
    int count = list->Count;
    bus_event *ev = ms_xcalloc((size_t)count, sizeof *ev);
    char(*at)[MS_TIME_LEN + 1] = ms_xcalloc((size_t)count, sizeof *at);
    size_t k = 0;
    int64_t last = 0, head = 0;
    for (int i = 0; i < count; i++) {
        natsMsg *m = list->Msgs[i];
        jsMsgMetaData *meta = NULL;
        if (nl->natsMsg_GetMetaData(&meta, m) != NATS_OK) {
            ms_log(MS_LOG_WARN, "bus consumer: a message without JetStream metadata, skipped",
                   "consumer", b->consumer, NULL);
            continue;
        }
        int64_t seq = (int64_t)meta->Sequence.Stream;
        if (seq > last)
            last = seq;
        if (seq + (int64_t)meta->NumPending > head)
            head = seq + (int64_t)meta->NumPending;
        format_time(meta->Timestamp, at[k]);
        nl->jsMsgMetaData_Destroy(meta);
        const char *data = nl->natsMsg_GetData(m);
        int len = nl->natsMsg_GetDataLength(m);
        json_t *payload = data && len > 0 ? json_loadb(data, (size_t)len, 0, NULL) : NULL;
        const char *id = header(nl, m, "Nats-Msg-Id");
        if (!*id || !json_is_object(payload)) {
            /* nothing a retry could change: acked with the batch, never applied */
            char s[24];
            snprintf(s, sizeof s, "%lld", (long long)seq);
            ms_log(MS_LOG_WARN, "bus consumer: a message without an id or a JSON object, skipped",
                   "consumer", b->consumer, "stream", n->stream, "#seq", s, NULL);
            json_decref(payload);
            continue;
        }
        ev[k] = (bus_event){
            .seq = seq,
            .id = id,
            .aggregate_type = "", /* not carried by the message */
            .aggregate_id = header(nl, m, "Microshop-Aggregate-Id"),
            .type = header(nl, m, "Microshop-Event-Type"),
            .created_at = at[k],
            .payload = payload,
        };
        k++;
    }
    uint64_t applied = 0, dups = 0;
    int rc = last > 0 ? bus_consumer_apply(b, ev, k, last, true, &applied, &dups) : 0;
    for (size_t i = 0; i < k; i++)
        json_decref(ev[i].payload);
    free(ev);
    free(at);
    if (rc < 0) {
        bus_consumer_db_failed(b, "apply", rc);
        for (int i = 0; i < count; i++)
            nl->natsMsg_Nak(list->Msgs[i], NULL);
        return rc;
    }
    /* after the commit: a lost ack only redelivers what bus_received skips */
    for (int i = 0; i < count; i++)
        nl->natsMsg_Ack(list->Msgs[i], NULL);
    uv_mutex_lock(&b->mu);
    if (last > b->stats.position)
        b->stats.position = last;
    if (head > b->stats.head)
        b->stats.head = head;
    b->stats.applied_total += applied;
    b->stats.duplicates_total += dups;
    uv_mutex_unlock(&b->mu);
    return 0;
}

/* One fetch: 0 (applied, or nothing new), or MS_E* after a failure (the caller backs off). */
static int nats_round(bus_consumer *b)
{
    bus_nats *n = b->nats;
    const ms_nats_lib *nl = n->lib;
    /* a fetch while reconnecting would only wait out its time: count it and back off */
    if (nl->natsConnection_Status(n->nc) != NATS_CONN_STATUS_CONNECTED) {
        bus_failed(b, "connection", NATS_CONNECTION_DISCONNECTED, 0);
        return MS_ECONN;
    }
    if (!n->sub && nats_subscribe(b) < 0)
        return MS_EIO;
    int rc = bus_consumer_prepare(b);
    if (rc < 0) {
        bus_consumer_db_failed(b, "checkpoint", rc);
        return rc;
    }
    natsMsgList list = {0};
    jsErrCode jerr = 0;
    natsStatus s = nl->natsSubscription_Fetch(&list, n->sub, b->limit, b->wait_ms, &jerr);
    if (atomic_load(&b->stopping)) { /* unacked: delivered again to the next process */
        if (s == NATS_OK)
            nl->natsMsgList_Destroy(&list);
        return 0;
    }
    if (s == NATS_TIMEOUT) { /* nothing new: caught up */
        uv_mutex_lock(&b->mu);
        b->stats.head = b->stats.position;
        uv_mutex_unlock(&b->mu);
        n->failing = false;
        b->attempt = 0;
        return 0;
    }
    if (s != NATS_OK) {
        /* the durable may be gone (a server with a new store): bind or make it again */
        bus_failed(b, "fetch", s, jerr);
        drop_subscription(n);
        return MS_EIO;
    }
    rc = take_batch(b, &list);
    nl->natsMsgList_Destroy(&list);
    if (rc == 0) {
        n->failing = false;
        b->attempt = 0;
    }
    return rc;
}

static void nats_main(void *arg)
{
    bus_consumer *b = arg;
    bus_nats *n = b->nats;
    pthread_setname_np(pthread_self(), "bus-consumer");
    while (!atomic_load(&b->stopping)) {
        int rc = n->nc ? 0 : nats_connect(b);
        if (rc == 0 && !n->js)
            rc = nats_context(b);
        if (rc == 0)
            rc = nats_round(b);
        if (rc < 0 && rc != MS_ESHUTDOWN)
            sleep_backoff(b);
    }
    drop_subscription(n);
    if (n->js)
        n->lib->jsCtx_Destroy(n->js);
    n->js = NULL;
    uv_mutex_lock(&b->mu);
    natsConnection *nc = n->nc;
    n->nc = NULL;
    uv_mutex_unlock(&b->mu);
    if (nc)
        n->lib->natsConnection_Destroy(nc);
    ms_db_close(b->conn);
    b->conn = NULL;
}

static void name_of(char *out, size_t size, const char *prefix, const char *name, bool upper)
{
    size_t k = (size_t)snprintf(out, size, "%s", prefix);
    for (const char *c = name; *c && k + 1 < size; c++) {
        char ch = upper ? (char)toupper((unsigned char)*c) : *c;
        /* a durable name cannot hold '.', ' ', '*' or '>' */
        out[k++] = ch == '.' || ch == ' ' || ch == '*' || ch == '>' ? '_' : ch;
    }
    out[k] = '\0';
}

int bus_consumer_nats_start(bus_consumer *b, const char *url)
{
    if (ms_nats_url_check(url) < 0 || strlen(b->producer) > 64 || strlen(b->consumer) > 64 ||
        strpbrk(b->producer, ".*> "))
        return MS_EINVAL;
    const ms_nats_lib *nl = ms_nats_lib_get();
    if (!nl)
        return MS_EIO;
    bus_nats *n = ms_xcalloc(1, sizeof *n);
    n->lib = nl;
    n->url = ms_xstrdup(url);
    name_of(n->stream, sizeof n->stream, "MICROSHOP_", b->producer, true);
    name_of(n->durable, sizeof n->durable, "", b->consumer, false);
    snprintf(n->filter, sizeof n->filter, "%s.>", b->producer);
    uv_cond_init(&n->cond);
    b->nats = n;
    if (uv_thread_create(&b->thread, nats_main, b) != 0) {
        uv_cond_destroy(&n->cond);
        free(n->url);
        free(n);
        b->nats = NULL;
        return MS_EINTERNAL;
    }
    ms_log(MS_LOG_INFO, "bus consumer: following the event bus", "consumer", b->consumer, "stream",
           n->stream, "durable", n->durable, NULL);
    return 0;
}

void bus_consumer_nats_stop(bus_consumer *b)
{
    bus_nats *n = b->nats;
    uv_mutex_lock(&b->mu);
    if (n->nc) /* ends a fetch under way; the thread destroys the connection */
        n->lib->natsConnection_Close(n->nc);
    uv_cond_signal(&n->cond);
    uv_mutex_unlock(&b->mu);
    uv_thread_join(&b->thread);
    uv_cond_destroy(&n->cond);
    free(n->url);
    free(n);
    b->nats = NULL;
}
