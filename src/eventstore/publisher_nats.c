/*
 * publisher_nats.c — the event bus publisher (contract in publisher.h): NATS JetStream through
 * libnats. Called on the relay thread only; libnats runs its own threads (reading, reconnecting)
 * and calls the connection handlers below on them, which only log.
 *
 * Publishing is pipelined: a batch goes out in windows of up to WINDOW messages published
 * asynchronously, and each window's acks are all awaited before the next is sent; publish
 * returns 0 only when every message of the batch was acked. Acks are counted by libnats (its
 * pending count); the error ones reach on_ack_error, on a libnats thread, before that count
 * drops, so once js_PublishAsyncComplete returns the window's failures are all in p->failed.
 *
 * Order: with many messages in flight, one may be lost (a reconnect drops what was on the
 * wire) while a later one is stored: the stream would hold them out of seq order after the
 * retry. So each message says which message must be the stream's last before it
 * (ExpectLastMsgId, the previous message's outbox id): a message after a lost one is refused,
 * and the retry resends both in order. The server checks duplicates (Nats-Msg-Id) before that
 * expectation, so the retried messages already stored are acked as duplicates. When the
 * stream's last id is not known (the first batch, or after any failure), the batch's first
 * message goes alone, synchronously, with no expectation: every earlier row was acked, so
 * whatever the stream holds last, this one belongs after it.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore/nats_lib.h"
#include "eventstore/publisher.h"
#include "runtime/core/buf.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/core/banned.h"

enum {
    DEFAULT_TIMEOUT_MS = 5000,
    CONNECT_TIMEOUT_MS = 2000,
    RECONNECT_WAIT_MS = 1000,
    WINDOW = 100, /* messages in flight at most: a page of the batch */
};

/* The stream's duplicate window (nanoseconds): a repeat of a Msg-Id inside it is dropped. */
#define DUPLICATE_WINDOW_NS (120LL * 1000 * 1000 * 1000)

/* libnats, through the shared loader (nats_lib.h); set before any thread that uses it starts. */
static const ms_nats_lib *nl;

typedef struct nats_publisher {
    char *service;
    char stream[96];
    char subjects[80]; /* "<service>.>" */
    int timeout_ms;
    natsConnection *nc;
    jsCtx *js;
    bool has_stream; /* the stream was seen or made on this connection's server */
    ms_buf subject;
    char *last_id; /* the outbox id the stream holds last, as far as we know (NULL: unknown) */

    pthread_mutex_t mu; /* guards what on_ack_error writes on a libnats thread */
    int failed;         /* error acks of the window in flight */
    natsStatus failed_status;
    int failed_code;
    char failed_text[160];
} nats_publisher;

/* ---- configuration ---- */

static bool is_host_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '-' || c == '_';
}

/* One nats://[USER[:PASS]@]HOST[:PORT] in [p, end). */
static bool url_ok(const char *p, const char *end)
{
    static const char scheme[] = "nats://";
    if ((size_t)(end - p) <= sizeof scheme - 1 || strncmp(p, scheme, sizeof scheme - 1) != 0)
        return false;
    p += sizeof scheme - 1;
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        if (at == p)
            return false;
        p = at + 1;
    }
    const char *host = p;
    if (*p == '[') { /* [IPv6] */
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close || close == p + 1)
            return false;
        p = close + 1;
    } else {
        while (p < end && is_host_char(*p))
            p++;
        if (p == host)
            return false;
    }
    if (p == end)
        return true;
    if (*p++ != ':' || p == end || end - p > 5)
        return false;
    long port = 0;
    for (; p < end; p++) {
        if (!isdigit((unsigned char)*p))
            return false;
        port = port * 10 + (*p - '0');
    }
    return port >= 1 && port <= 65535;
}

int ms_nats_url_check(const char *url)
{
    if (!url || !*url)
        return MS_EINVAL;
    for (const char *p = url;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        if (!url_ok(p, end))
            return MS_EINVAL;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static bool service_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_' || *s == '-'))
            return false;
    return true;
}

/* ---- the connection ---- */

/* The handlers get no closure: libnats may run one on its thread after close has freed the
 * publisher (the process's log lines carry the service already). */
static void on_disconnected(natsConnection *nc, void *closure)
{
    ms_log(MS_LOG_WARN, "event bus: disconnected, reconnecting", NULL);
}

static void on_connected(natsConnection *nc, void *closure)
{
    ms_log(MS_LOG_INFO, "event bus: connected", NULL);
}

static const char *status_text(natsStatus s)
{
    return ms_nats_status_text(nl, s);
}

/* Makes sure the service's stream exists (idempotent: looks first, adds when missing). */
static int ensure_stream(nats_publisher *p)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = nl->js_GetStreamInfo(&si, p->js, p->stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND) {
        const char *subjects[] = {p->subjects};
        jsStreamConfig cfg;
        nl->jsStreamConfig_Init(&cfg);
        cfg.Name = p->stream;
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Duplicates = DUPLICATE_WINDOW_NS;
        s = nl->js_AddStream(&si, p->js, &cfg, NULL, &jerr);
        if (s == NATS_OK)
            ms_log(MS_LOG_INFO, "event bus: stream created", "service", p->service, "stream",
                   p->stream, "subjects", p->subjects, NULL);
    }
    if (si)
        nl->jsStreamInfo_Destroy(si);
    if (s != NATS_OK) {
        char code[16];
        snprintf(code, sizeof code, "%d", (int)jerr);
        ms_log(MS_LOG_WARN, "event bus: cannot get or create the stream", "service", p->service,
               "stream", p->stream, "error", status_text(s), "#js_error", code, NULL);
        return s == NATS_TIMEOUT ? MS_ETIMEDOUT : MS_EIO;
    }
    p->has_stream = true;
    return 0;
}

/* `<service>.<type>`, or the type alone when it already starts with "<service>." (user.created,
 * not user.user.created); characters a subject token cannot hold become '_' (types are code's
 * own names, so this only guards the stream's subject space). */
static const char *subject_of(nats_publisher *p, const char *type)
{
    ms_buf *b = &p->subject;
    b->n = 0;
    ms_buf_adds(b, p->service);
    ms_buf_adds(b, ".");
    size_t token = b->n;
    const char *t = type && *type ? type : "unknown";
    if (strncmp(t, b->p, b->n) == 0 && t[b->n]) /* b->p is "<service>." */
        t += b->n;
    for (; *t; t++) {
        char c = *t;
        bool ok = isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.';
        if (c == '.' && (b->n == token || t[1] == '\0'))
            ok = false; /* an empty token */
        ms_buf_add(b, ok ? &c : "_", 1);
        if (ok && c == '.')
            token = b->n;
    }
    ms_buf_add(b, "", 1);
    return b->p;
}

/* A message for `m`, with its subject and headers (the caller sets the JetStream options). */
static int make_msg(nats_publisher *p, const ms_outbox_message *m, natsMsg **out)
{
    natsMsg *msg = NULL;
    const char *payload = m->payload ? m->payload : "";
    natsStatus s =
        nl->natsMsg_Create(&msg, subject_of(p, m->type), NULL, payload, (int)strlen(payload));
    if (s == NATS_OK && m->aggregate_id)
        s = nl->natsMsgHeader_Set(msg, "Microshop-Aggregate-Id", m->aggregate_id);
    if (s == NATS_OK && m->type)
        s = nl->natsMsgHeader_Set(msg, "Microshop-Event-Type", m->type);
    if (s != NATS_OK) {
        if (msg)
            nl->natsMsg_Destroy(msg);
        return MS_EIO;
    }
    *out = msg;
    return 0;
}

static void pub_options(nats_publisher *p, const ms_outbox_message *m, const char *expect_last,
                        jsPubOptions *po)
{
    nl->jsPubOptions_Init(po);
    po->MsgId = m->id; /* sets Nats-Msg-Id */
    po->ExpectStream = p->stream;
    po->ExpectLastMsgId = expect_last; /* NULL: none */
    po->MaxWait = p->timeout_ms;
}

static void not_acked(nats_publisher *p, const char *id, natsStatus s, int code, const char *text)
{
    char c[16];
    snprintf(c, sizeof c, "%d", code);
    ms_log(MS_LOG_WARN, "event bus: publish not acked", "service", p->service, "id", id ? id : "",
           "error", text && *text ? text : status_text(s), "#js_error", c, NULL);
    if (s == NATS_NO_RESPONDERS || s == NATS_NOT_FOUND)
        p->has_stream = false; /* gone (deleted, or a new server): make it again */
}

/* Publishes one message and waits for its ack (no expectation of the stream's last id). */
static int publish_one(nats_publisher *p, const ms_outbox_message *m)
{
    natsMsg *msg = NULL;
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    int rc = make_msg(p, m, &msg);
    if (rc != 0)
        return rc;
    jsPubOptions po;
    pub_options(p, m, NULL, &po);
    natsStatus s = nl->js_PublishMsg(&ack, p->js, msg, &po, &jerr);
    if (s != NATS_OK) {
        not_acked(p, m->id, s, (int)jerr, NULL);
        rc = s == NATS_TIMEOUT ? MS_ETIMEDOUT : MS_EIO;
    }
    if (ack)
        nl->jsPubAck_Destroy(ack);
    nl->natsMsg_Destroy(msg);
    return rc;
}

/* libnats thread: an async publish was refused (or had no responders). The message is the
 * library's, destroyed after we return. */
static void on_ack_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    nats_publisher *p = closure;
    pthread_mutex_lock(&p->mu);
    if (p->failed++ == 0) {
        p->failed_status = pae->Err;
        p->failed_code = (int)pae->ErrCode;
        snprintf(p->failed_text, sizeof p->failed_text, "%s", pae->ErrText ? pae->ErrText : "");
    }
    pthread_mutex_unlock(&p->mu);
}

/*
 * Sends msgs[0..n) (n <= WINDOW) asynchronously, each expecting the one before it as the
 * stream's last (msgs[0]: `prev_id`), and waits for every ack. Whatever happens, nothing of
 * the window is pending when it returns (late acks are then ignored by libnats).
 */
static int publish_window(nats_publisher *p, const ms_outbox_message *msgs, size_t n,
                          const char *prev_id)
{
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    p->failed = 0;
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        natsMsg *msg = NULL;
        if ((rc = make_msg(p, &msgs[i], &msg)) != 0)
            break;
        jsPubOptions po;
        pub_options(p, &msgs[i], i ? msgs[i - 1].id : prev_id, &po);
        natsStatus s = nl->js_PublishMsgAsync(p->js, &msg, &po);
        if (s != NATS_OK) { /* not sent: the message is still ours */
            not_acked(p, msgs[i].id, s, 0, NULL);
            rc = MS_EIO;
        }
        if (msg)
            nl->natsMsg_Destroy(msg);
    }
    jsPubOptions wait;
    nl->jsPubOptions_Init(&wait);
    wait.MaxWait = p->timeout_ms;
    natsStatus s = nl->js_PublishAsyncComplete(p->js, &wait);
    if (s != NATS_OK) {
        natsMsgList late = {0};
        if (nl->js_PublishAsyncGetPendingList(&late, p->js) == NATS_OK)
            nl->natsMsgList_Destroy(&late); /* unacked: the relay sends them again */
        not_acked(p, NULL, s, 0, "acks missing at the deadline");
        if (rc == 0)
            rc = s == NATS_TIMEOUT ? MS_ETIMEDOUT : MS_EIO;
    }
    pthread_mutex_lock(&p->mu);
    int failed = p->failed;
    natsStatus fs = p->failed_status;
    int code = p->failed_code;
    char text[sizeof p->failed_text];
    memcpy(text, p->failed_text, sizeof text);
    pthread_mutex_unlock(&p->mu);
    if (failed > 0) {
        not_acked(p, NULL, fs, code, text);
        if (rc == 0)
            rc = fs == NATS_TIMEOUT ? MS_ETIMEDOUT : MS_EIO;
    }
    return rc;
}

static void set_last_id(nats_publisher *p, const char *id)
{
    free(p->last_id);
    p->last_id = id ? ms_xstrdup(id) : NULL;
}

static int nats_publish(void *self, const ms_outbox_message *msgs, size_t n)
{
    nats_publisher *p = self;
    /* A publish while reconnecting would wait out the whole timeout for an ack: fail now,
     * the relay retries with its backoff and the rows wait in the outbox. */
    if (nl->natsConnection_Status(p->nc) != NATS_CONN_STATUS_CONNECTED)
        return MS_ECONN;
    int rc = p->has_stream ? 0 : ensure_stream(p);
    size_t i = 0;
    if (rc == 0 && n > 0 && !p->last_id) {
        if ((rc = publish_one(p, &msgs[0])) == 0)
            set_last_id(p, msgs[0].id);
        i = 1;
    }
    while (rc == 0 && i < n) {
        size_t k = n - i < WINDOW ? n - i : WINDOW;
        if ((rc = publish_window(p, &msgs[i], k, p->last_id)) == 0)
            set_last_id(p, msgs[i + k - 1].id);
        i += k;
    }
    if (rc != 0) /* what the stream holds last is unknown now: the retry starts alone */
        set_last_id(p, NULL);
    return rc;
}

static void nats_close(void *self)
{
    nats_publisher *p = self;
    if (p->js)
        nl->jsCtx_Destroy(p->js);
    if (p->nc)
        nl->natsConnection_Destroy(p->nc); /* closes first; no handler runs after it */
    ms_buf_release(&p->subject);
    pthread_mutex_destroy(&p->mu);
    free(p->last_id);
    free(p->service);
    free(p);
}

int ms_publisher_nats(const char *url, const char *service, int timeout_ms, ms_publisher *out)
{
    if (ms_nats_url_check(url) != 0 || !service_ok(service) || timeout_ms < 0)
        return MS_EINVAL;
    if (!(nl = ms_nats_lib_get()))
        return MS_EIO;
    int rc = 0;
    natsOptions *opts = NULL;
    nats_publisher *p = ms_xcalloc(1, sizeof *p);
    p->service = ms_xstrdup(service);
    p->timeout_ms = timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS;
    size_t k = (size_t)snprintf(p->stream, sizeof p->stream, "MICROSHOP_");
    for (const char *c = service; *c && k + 1 < sizeof p->stream; c++)
        p->stream[k++] = (char)toupper((unsigned char)*c);
    p->stream[k] = '\0';
    snprintf(p->subjects, sizeof p->subjects, "%s.>", service);
    ms_buf_init(&p->subject, 128);
    pthread_mutex_init(&p->mu, NULL);

    char name[96];
    snprintf(name, sizeof name, "microshop-%s", service);
    natsStatus s = nl->natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = nl->natsOptions_SetURL(opts, url);
    if (s == NATS_OK)
        s = nl->natsOptions_SetName(opts, name);
    if (s == NATS_OK)
        s = nl->natsOptions_SetTimeout(opts, CONNECT_TIMEOUT_MS);
    if (s == NATS_OK) /* forever: the outbox holds the events meanwhile */
        s = nl->natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = nl->natsOptions_SetReconnectWait(opts, RECONNECT_WAIT_MS);
    if (s == NATS_OK)
        s = nl->natsOptions_SetDisconnectedCB(opts, on_disconnected, NULL);
    if (s == NATS_OK)
        s = nl->natsOptions_SetReconnectedCB(opts, on_connected, NULL);
    if (s == NATS_OK) /* with a handler, a server down at start is retried in the background */
        s = nl->natsOptions_SetRetryOnFailedConnect(opts, true, on_connected, NULL);
    if (s != NATS_OK) {
        ms_log(MS_LOG_ERROR, "event bus: cannot set up the connection", "error", status_text(s),
               NULL);
        rc = s == NATS_NO_MEMORY ? MS_ENOMEM : MS_EIO;
        goto out;
    }
    s = nl->natsConnection_Connect(&p->nc, opts);
    if (s == NATS_NOT_YET_CONNECTED) {
        ms_log(MS_LOG_WARN, "event bus: not reachable yet, retrying in the background", "service",
               service, "error", status_text(s), NULL);
    } else if (s != NATS_OK) {
        ms_log(MS_LOG_ERROR, "event bus: cannot connect", "service", service, "error",
               status_text(s), NULL);
        rc = MS_EIO;
        goto out;
    }
    jsOptions jo;
    nl->jsOptions_Init(&jo);
    jo.Wait = p->timeout_ms;
    jo.PublishAsync.MaxPending = WINDOW;
    jo.PublishAsync.ErrHandler = on_ack_error;
    jo.PublishAsync.ErrHandlerClosure = p;
    if ((s = nl->natsConnection_JetStream(&p->js, p->nc, &jo)) != NATS_OK) {
        ms_log(MS_LOG_ERROR, "event bus: no JetStream context", "error", status_text(s), NULL);
        rc = MS_EIO;
        goto out;
    }
    if (nl->natsConnection_Status(p->nc) == NATS_CONN_STATUS_CONNECTED)
        ensure_stream(p); /* best effort: publish tries again while it is missing */
    *out = (ms_publisher){.publish = nats_publish, .close = nats_close, .self = p, .name = "nats"};
out:
    if (opts)
        nl->natsOptions_Destroy(opts);
    if (rc != 0)
        nats_close(p);
    return rc;
}
