/*
 * commands.c — the write side over HTTP: cancel an order, move its status; and the steps
 * every writer shares (load, answer, fill an append). Placing an order is checkout.c's.
 *
 * Every command follows the repository pattern: load the aggregate (latest snapshot + the
 * events after it), let the aggregate decide, append the decided events with the loaded
 * version as the expected one (a concurrent command loses with 409), then answer with the
 * new state, its version (ETag) and its position (X-Position, for read-your-writes). The
 * events and their outbox rows commit together (the event store's group commit).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "eventstore/relay.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/http_json.h"
#include "runtime/http/identity.h"
#include "runtime/http/problem.h"
#include "runtime/json/json.h"
#include "runtime/json/json_arena.h"
#include "services/order/order_internal.h"
#include "runtime/core/banned.h"

enum { STREAM_PAGE = 1000 };

/* One command in flight; lives in the request's arena, and what it holds on the heap is
 * released with it (call_release), so no path of a command frees anything by hand. */
typedef struct order_call {
    ms_http_request *req;
    ms_identity who;
    char id[MS_UUID_LEN + 1];
    char stream[ORDER_STREAM_LEN + 1];
    const char *command; /* ORDER_CMD_* */
    json_t *cmd;         /* the command object (the request's body, owned by its arena) */
    int64_t if_match;    /* PATCH: the version the client saw; -1 when not given */
    order_state state;
    order_decision decision;
    ms_es_event events[ORDER_MAX_DECIDED];
    ms_es_outbox_row outbox[ORDER_MAX_DECIDED];
    ms_es_append_req append;
    int64_t before;     /* version before the append */
    int64_t loaded_top; /* newest position the load saw of this process's batches */
} order_call;

/* The request's arena runs this when the request is done, whatever the answer was. */
static void call_release(void *arg)
{
    order_call *k = arg;
    order_state_release(&k->state);
    order_decision_release(&k->decision);
}

static void set_stream(order_call *k)
{
    snprintf(k->stream, sizeof k->stream, "%s%s", ORDER_STREAM_PREFIX, k->id);
}

int order_load(ms_db_conn *c, const char *stream, order_state *s, char **first_metadata,
               int64_t *top)
{
    int64_t version = 0;
    char *snap = NULL;
    int rc = first_metadata ? 0 : ms_es_snapshot_load(c, stream, &version, &snap);
    if (rc == 0 && snap && order_snapshot_read(snap, s) < 0) {
        order_state_release(s); /* an unreadable snapshot: fall back to the whole stream */
        version = 0;
    }
    free(snap);
    for (int64_t from = s->version + 1; rc == 0;) {
        ms_es_page page = {0};
        rc = ms_es_read_stream(c, stream, from, STREAM_PAGE, &page);
        for (size_t i = 0; rc == 0 && i < page.n; i++) {
            if (first_metadata && page.events[i].version == 1)
                *first_metadata = ms_xstrdup(page.events[i].metadata);
            rc = order_evolve(s, page.events[i].type, page.events[i].data);
            if (page.events[i].position > *top)
                *top = page.events[i].position;
        }
        size_t n = page.n;
        ms_es_page_release(&page);
        if (n < STREAM_PAGE)
            break;
        from = s->version + 1;
    }
    if (rc == 0 && s->status == ORDER_STATUS_NONE)
        rc = MS_ENOTFOUND;
    return rc;
}

static int load_work(ms_db_conn *c, void *arg)
{
    order_call *k = arg;
    int64_t top = 0;
    int rc = order_load(c, k->stream, &k->state, NULL, &top);
    /* what lies above the visible position read after the load was committed elsewhere */
    int64_t visible = ms_es_visible_position(order_proc.es);
    k->loaded_top = top < visible ? top : visible;
    return rc;
}

/* The caller may act on this order: its owner, or an admin. Others learn nothing of it. */
static bool may_reach(const order_call *k)
{
    return k->who.is_admin || strcasecmp(k->who.user_id, k->state.user_id) == 0;
}

void order_answer(ms_http_request *req, const order_state *s, int status, int64_t position)
{
    char etag[32], pos[32];
    snprintf(etag, sizeof etag, "\"%lld\"", (long long)s->version);
    ms_http_set_header(req, "ETag", etag);
    if (position > 0) {
        snprintf(pos, sizeof pos, "%lld", (long long)position);
        ms_http_set_header(req, "X-Position", pos);
    }
    if (status == 201 || status == 202) {
        char *location = ms_arena_printf(&req->arena, "/api/v1/orders/%s", s->id);
        ms_http_set_header(req, "Location", location);
    }
    ms_buf view;
    ms_buf_init(&view, 512);
    order_view_write(s, &view);
    ms_http_respond(req, status, "application/json", view.p, view.n);
    ms_buf_release(&view);
}

static void answer_order(order_call *k, int status)
{
    order_answer(k->req, &k->state, status, k->append.last_position);
}

/* `what` says why a conflict is one (the aggregate's reason, a stale version). */
static void answer_error(order_call *k, int rc, const char *what)
{
    ms_http_request *req = k->req;
    const char *detail = NULL;
    if (rc == MS_ENOTFOUND)
        detail = "no such order";
    else if (rc == MS_ECONFLICT)
        detail = what;
    else if (ms_http_status_for(rc) >= 500)
        ms_log(MS_LOG_ERROR, "order command failed", "endpoint",
               req->route ? req->route->template : "", "error", ms_strerror(rc), NULL);
    ms_problem_from_error(req, rc, detail);
}

/* Answers a header that is not what it must be (400, the header as the field). */
static int reject_header(ms_http_request *req, const char *header, const char *message,
                         const char *detail)
{
    json_t *errors = json_array();
    ms_field_error(errors, header, "%s", message);
    ms_problem_fields_from_error(req, MS_EMALFORMED, detail, errors);
    return MS_EMALFORMED;
}

static int snapshot_work(ms_db_conn *c, void *arg)
{
    char **job = arg; /* {stream, version text, snapshot} */
    return ms_es_snapshot_save(c, job[0], strtoll(job[1], NULL, 10), job[2]);
}

static void snapshot_done(int rc, void *arg)
{
    char **job = arg;
    if (rc < 0)
        ms_log(MS_LOG_WARN, "snapshot not saved (it is only a shortcut)", "stream", job[0], "error",
               ms_strerror(rc), NULL);
    for (int i = 0; i < 3; i++)
        free(job[i]);
    free(job);
}

/* Saves a snapshot when the stream crossed a snapshot boundary. Outlives the request. */
static void maybe_snapshot(order_call *k)
{
    if (!ms_es_snapshot_due(order_proc.es, k->before, k->state.version))
        return;
    char **job = ms_xcalloc(3, sizeof(char *));
    job[0] = ms_xstrdup(k->stream);
    char v[24];
    snprintf(v, sizeof v, "%lld", (long long)k->state.version);
    job[1] = ms_xstrdup(v);
    job[2] = order_snapshot_write(&k->state);
    if (!job[2]) {
        snapshot_done(0, job);
        return;
    }
    ms_http_request *req = k->req;
    ms_db_pool_run(req->loop->db, MS_DB_WRITE, uv_now(&req->loop->uv) + 10000, snapshot_work,
                   snapshot_done, job);
}

static void appended(int rc, ms_es_append_req *a, void *arg)
{
    (void)a;
    order_call *k = arg;
    if (rc < 0) {
        answer_error(k, rc, "the order changed while this request was decided; read it again");
        return;
    }
    if (order_apply_decision(&k->state, &k->decision) < 0)
        MS_BUG("an event the aggregate decided does not apply to it");
    ms_relay_kick(order_proc.relay); /* the events' outbox rows are committed */
    maybe_snapshot(k);
    /* a cancelled confirmed order still holds its payment and its stock, a shipped one its
     * reservation: the saga gives them back or commits it, answering 200 when done (202 if it
     * outlives the request) */
    if (order_saga_next(&k->state, false) == ORDER_SAGA_DONE)
        answer_order(k, 200);
    else if (order_saga_claim(k->id) < 0)
        answer_order(k, 202); /* its runner here goes on */
    else
        order_saga_start(order_loop_of(k->req), k->req, 200, &k->state, NULL,
                         k->append.last_position);
}

/* The aggregate's decision on the loaded state; answers when there is none. */
static int decide(order_call *k)
{
    ms_http_request *req = k->req;
    char now[MS_TIME_LEN + 1];
    ms_time_now(now);
    json_t *malformed = json_array(), *invalid = json_array();
    int rc = order_decide(&k->state, k->command, k->cmd, now, malformed, invalid, &k->decision);
    if (rc == MS_EINVAL) {
        /* field errors as a list, or a rule across fields said in the reason */
        rc = ms_http_reject_fields(req, malformed, invalid);
        if (rc == 0) {
            rc = MS_EVALIDATION;
            ms_problem_from_error(req, rc, k->decision.reason);
        }
    } else {
        json_decref(malformed);
        json_decref(invalid);
        if (rc < 0)
            answer_error(k, rc, k->decision.reason);
    }
    return rc;
}

void order_fill_append(const char *stream, const char *order_id, const order_decision *d,
                       const char *event_id, const char *metadata, ms_es_event *events,
                       ms_es_outbox_row *outbox, int64_t version, ms_es_append_req *out)
{
    for (size_t i = 0; i < d->nevents; i++) {
        ms_es_event *e = &events[i];
        memset(e, 0, sizeof *e);
        if (i == 0 && event_id)
            memcpy(e->event_id, event_id, sizeof e->event_id);
        else
            ms_uuid_new(e->event_id);
        e->type = d->events[i].type;
        e->data = d->events[i].data;
        e->metadata = metadata ? metadata : "{}";
        ms_es_outbox_row *o = &outbox[i];
        ms_uuid_new(o->id);
        o->aggregate_type = "order";
        o->aggregate_id = order_id;
        o->type = e->type;
        o->of_event = i + 1; /* the event itself, not a second copy of it */
    }
    *out = (ms_es_append_req){
        .stream_id = stream,
        .expected_version = version ? version : MS_ES_NO_STREAM,
        .events = events,
        .nevents = d->nevents,
        .outbox = outbox,
        .noutbox = d->nevents,
    };
}

/* Decides on the loaded state and appends. */
static void decide_and_append(order_call *k)
{
    if (decide(k) < 0)
        return;
    k->before = k->state.version;
    order_fill_append(k->stream, k->id, &k->decision, NULL, NULL, k->events, k->outbox,
                      k->state.version, &k->append);
    ms_es_append(order_loop_of(k->req)->port, &k->append, appended, k);
}

static void loaded(int rc, void *arg)
{
    order_call *k = arg;
    /* A command decides on durable events only: on SQLite a batch is visible a moment before
     * its fsync ends (eventstore/writer.c), and a 409 or a state answered on events a power
     * cut takes back would be a lie. Rare (a stream's newest event is seldom that young) and
     * short: the projector takes only durable events, so its reaching the position says the
     * fsync ended; waiting for it never blocks the loop, and the request's deadline bounds it
     * (504). */
    if (rc == 0 && k->loaded_top > ms_es_committed_position(order_proc.es)) {
        int64_t top = k->loaded_top;
        k->loaded_top = 0;
        order_wait_projected(k->req, top, loaded, k);
        return;
    }
    if (rc == 0 && !may_reach(k))
        rc = MS_ENOTFOUND;
    char why[96] = "";
    if (rc == 0 && k->if_match >= 0 && k->if_match != k->state.version) {
        rc = MS_ECONFLICT;
        snprintf(why, sizeof why, "stale version: the order is at version %lld",
                 (long long)k->state.version);
    }
    if (rc < 0)
        answer_error(k, rc, why[0] ? why : NULL);
    else
        decide_and_append(k);
}

/* The common start: a call context tied to the request's arena, the caller, the order id of
 * the path. Answers 401 or 404 and returns the code when there is no going on. */
static int begin(ms_http_request *req, const char *command, order_call **out)
{
    order_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    memset(k, 0, sizeof *k);
    k->req = req;
    k->command = command;
    k->if_match = -1;
    order_state_init(&k->state);
    order_decision_init(&k->decision);
    ms_arena_on_reset(&req->arena, call_release, k);
    *out = k;
    int rc = ms_identity_get(req, &k->who);
    const char *id = ms_http_param(req, "id");
    if (rc == 0 && id && !ms_uuid_valid(id)) {
        rc = MS_ENOTFOUND;
        ms_problem_from_error(req, rc, "no such order");
    }
    if (rc == 0 && id) {
        for (int i = 0; i < MS_UUID_LEN; i++)
            k->id[i] = (char)(id[i] >= 'A' && id[i] <= 'F' ? id[i] + 32 : id[i]);
        set_stream(k);
    }
    return rc;
}

/* ---- POST /api/v1/orders/{id}/cancel and PATCH /api/v1/orders/{id}/status ---- */

/* Reads the body into the command (validated with the aggregate's rules), then loads. */
static void load_then_decide(order_call *k)
{
    ms_http_request *req = k->req;
    json_t *body;
    int rc = ms_http_json_body(req, &body);
    if (rc == 0) {
        json_t *malformed = json_array(), *invalid = json_array();
        order_validate(k->command, body, malformed, invalid);
        rc = ms_http_reject_fields(req, malformed, invalid);
    }
    if (rc == 0) {
        k->cmd = body;
        ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, load_work, loaded, k);
    }
}

void order_cancel(ms_http_request *req)
{
    order_call *k;
    if (begin(req, ORDER_CMD_CANCEL, &k) == 0)
        load_then_decide(k);
}

/* The version of If-Match (required: a status change must not overwrite one unseen). */
static int read_if_match(order_call *k)
{
    ms_http_request *req = k->req;
    const char *tag = ms_http_header_get(req, "If-Match");
    if (!tag) {
        ms_problem_from_error(req, MS_EPRECONDITION, "If-Match with the order's ETag is required");
        return MS_EPRECONDITION;
    }
    char *end;
    const char *digits = tag[0] == '"' ? tag + 1 : tag;
    long long v = strtoll(digits, &end, 10);
    if (end == digits || v < 0 || (tag[0] == '"' ? strcmp(end, "\"") != 0 : *end != '\0'))
        return reject_header(req, "If-Match", "must be the ETag of the order, like \"3\"",
                             "the If-Match header is malformed");
    k->if_match = v;
    return 0;
}

void order_patch_status(ms_http_request *req)
{
    order_call *k;
    int rc = begin(req, ORDER_CMD_UPDATE_STATUS, &k);
    if (rc == 0 && !k->who.is_admin) {
        rc = MS_EFORBIDDEN;
        ms_problem_from_error(req, rc, "only an admin may change an order's status");
    }
    if (rc == 0)
        rc = read_if_match(k);
    if (rc == 0)
        load_then_decide(k);
}
