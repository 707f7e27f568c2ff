/*
 * admin.c — the gateway's admin listener (127.0.0.1:9080 unless --admin says otherwise): what
 * operators may do that clients may not, on an address the public never reaches.
 *   GET  /health /ready /metrics      the runtime's (the public listener keeps only the first two)
 *   GET  /admin/instances             every upstream with its instances and breaker
 *   GET  /admin/breakers              the breakers alone
 *   POST /admin/breakers/{upstream}   {"state": "open"|"closed"|"auto"}: force or release one
 *   POST /admin/scale                 {"service", "replicas"}: asks the supervisor
 *   POST /admin/restart               {"service"[, "instance"]}: asks the supervisor
 *   POST /v1/traces                   OTLP/HTTP JSON spans for the console (trace_store.c)
 *   POST /v1/logs                     OTLP/HTTP JSON log records for the console (log_store.c)
 *   GET  /ops ...                     the ops console and its queries (console.c)
 * The supervisor is MICROSHOP_SUPERVISOR_URL (set by `microshop run`); without it the last two
 * answer 503. The listener refuses a non-loopback address unless MICROSHOP_ADMIN_PUBLIC=1: it
 * has no authentication of its own.
 *
 * Threading: the flags and the router are set at start; the handlers run on the admin loop,
 * whose service state is the client that reaches the supervisor.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/http/server.h"
#include "services/gateway/gateway_admin.h"
#include "services/gateway/gateway_internal.h"
#include "services/gateway/log_store.h"
#include "runtime/core/banned.h"

enum { SUPERVISOR_DEADLINE_MS = 20000, REPLICAS_MAX = 8 };

static const char *flag_admin = "127.0.0.1:9080";

const ms_option gateway_flags[] = {
    {"admin", "MICROSHOP_ADMIN_LISTEN", MS_OPT_STRING, &flag_admin, 0, 0,
     "HOST:PORT of the admin listener (loopback only unless MICROSHOP_ADMIN_PUBLIC=1; port 0: a "
     "free one)"},
};
const size_t gateway_nflags = sizeof gateway_flags / sizeof gateway_flags[0];

static struct {
    char host[64];
    int port;
    ms_router *router;
    ms_http_upstream_list supervisor; /* n == 0: none */
} admin;

static bool is_loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0;
}

int gateway_flags_apply(char *err, size_t errn)
{
    if (ms_config_split_listen(flag_admin, admin.host, &admin.port) < 0) {
        snprintf(err, errn,
                 "--admin must be HOST:PORT with a numeric address, like 127.0.0.1:9080, not '%s'",
                 flag_admin);
        return MS_EINVAL;
    }
    const char *public = getenv("MICROSHOP_ADMIN_PUBLIC");
    if (!is_loopback(admin.host) && !(public && strcmp(public, "1") == 0)) {
        snprintf(err, errn,
                 "--admin %s is not a loopback address: the admin listener has no "
                 "authentication (set MICROSHOP_ADMIN_PUBLIC=1 to serve it there anyway)",
                 flag_admin);
        return MS_EINVAL;
    }
    return 0;
}

/* ---- breakers and instances ---- */

static void instances(ms_http_request *req)
{
    ms_buf out;
    ms_buf_init(&out, 1024);
    ms_http_client_status_json(gateway_proc.client_metrics, &out);
    ms_http_respond(req, 200, "application/json", out.p, out.n);
    ms_buf_release(&out);
}

static void breakers(ms_http_request *req)
{
    ms_buf out;
    ms_buf_init(&out, 1024);
    ms_http_client_status_json(gateway_proc.client_metrics, &out);
    json_t *status = json_loadb(out.p, out.n, 0, NULL);
    ms_buf_release(&out);
    json_t *list = json_array();
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(status, "upstreams"), i, u)
    {
        json_t *b = json_deep_copy(json_object_get(u, "breaker"));
        if (!json_is_object(b))
            b = json_object();
        json_object_set(b, "upstream", json_object_get(u, "name"));
        json_array_append_new(list, b);
    }
    json_decref(status);
    ms_http_respond_json(req, 200, json_pack("{s:o}", "breakers", list));
}

static void set_breaker(ms_http_request *req)
{
    static const ms_json_field fields[] = {{"state", MS_JSON_STRING, true, false}};
    json_t *body;
    if (ms_http_json_body(req, &body) < 0)
        return;
    json_t *malformed = json_array(), *invalid = json_array();
    ms_breaker_override o = MS_BREAKER_AUTO;
    if (ms_json_check(body, fields, 1, "", malformed, invalid) && json_object_get(body, "state")) {
        const char *state = json_string_value(json_object_get(body, "state"));
        if (strcmp(state, "open") == 0)
            o = MS_BREAKER_FORCE_OPEN;
        else if (strcmp(state, "closed") == 0)
            o = MS_BREAKER_FORCE_CLOSED;
        else if (strcmp(state, "auto") != 0)
            ms_field_error(invalid, "state", "must be open, closed or auto");
    }
    if (ms_http_reject_fields(req, malformed, invalid) < 0)
        return;
    const char *upstream = ms_http_param(req, "upstream");
    if (ms_http_client_breaker_override(gateway_proc.client_metrics, upstream, o) < 0) {
        ms_problem_from_error(req, MS_ENOTFOUND, "no upstream has that name");
        return;
    }
    ms_http_respond_json(
        req, 200,
        json_pack("{s:s, s:O}", "upstream", upstream, "override", json_object_get(body, "state")));
}

/* ---- the supervisor ---- */

static bool known_service(const char *name)
{
    for (int b = 0; b < GATEWAY_NBACKENDS; b++)
        if (strcmp(gateway_backend_name(b), name) == 0)
            return true;
    return false;
}

static void supervisor_answered(int err, const ms_http_client_resp *resp, void *arg)
{
    ms_http_request *req = arg;
    if (err < 0) {
        ms_problem_from_error(req, err == MS_ETIMEDOUT ? MS_ETIMEDOUT : MS_ECONN,
                              "the supervisor cannot be reached");
        return;
    }
    const char *type = ms_http_client_resp_header(resp, "Content-Type");
    ms_http_respond(req, resp->status, type ? type : "application/json", resp->body,
                    resp->body_len);
}

/* Checks a scale or restart body and hands it to the supervisor's `path`. */
static void to_supervisor(ms_http_request *req, const char *path, bool scale)
{
    static const ms_json_field scale_fields[] = {{"service", MS_JSON_STRING, true, false},
                                                 {"replicas", MS_JSON_INTEGER, true, false}};
    static const ms_json_field restart_fields[] = {{"service", MS_JSON_STRING, true, false},
                                                   {"instance", MS_JSON_STRING, false, false}};
    json_t *body;
    if (ms_http_json_body(req, &body) < 0)
        return;
    json_t *malformed = json_array(), *invalid = json_array();
    if (ms_json_check(body, scale ? scale_fields : restart_fields, 2, "", malformed, invalid)) {
        json_t *service = json_object_get(body, "service");
        json_t *replicas = json_object_get(body, "replicas");
        if (service && !known_service(json_string_value(service)))
            ms_field_error(invalid, "service", "must be user, order, inventory or payment");
        if (scale && replicas &&
            (json_integer_value(replicas) < 1 || json_integer_value(replicas) > REPLICAS_MAX))
            ms_field_error(invalid, "replicas", "must be from 1 to %d", REPLICAS_MAX);
    }
    if (ms_http_reject_fields(req, malformed, invalid) < 0)
        return;
    ms_http_client *client = req->loop->service;
    if (!client) {
        ms_problem_from_error(req, MS_ECONN,
                              "no supervisor (MICROSHOP_SUPERVISOR_URL is not set): scaling and "
                              "restarts are `microshop run`'s");
        return;
    }
    char *doc = json_dumps(body, JSON_COMPACT);
    uint64_t deadline = uv_now(&req->loop->uv) + SUPERVISOR_DEADLINE_MS;
    ms_http_client_req call = {
        .upstream = "supervisor",
        .method = HTTP_POST,
        .path = path,
        .content_type = "application/json",
        .body = doc,
        .body_len = strlen(doc),
        .deadline = deadline < req->deadline ? deadline : req->deadline,
    };
    int rc = ms_http_client_request(client, &call, supervisor_answered, req);
    free(doc);
    if (rc < 0)
        ms_problem_from_error(req, MS_ECONN, "the supervisor cannot be reached");
}

static void scale(ms_http_request *req)
{
    to_supervisor(req, "/scale", true);
}

static void restart(ms_http_request *req)
{
    to_supervisor(req, "/restart", false);
}

/* ---- the admin loop ---- */

static int loop_open(ms_loop *l, void *arg)
{
    (void)arg;
    if (admin.supervisor.n == 0)
        return 0;
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    cfg.max_retries = -1; /* a scale is not to be asked twice */
    ms_http_client *c = ms_http_client_new(&l->uv, &cfg);
    if (ms_http_client_add_upstream(c, "supervisor", &admin.supervisor) < 0)
        MS_BUG("a parsed upstream list was refused");
    l->service = c;
    return 0;
}

static void loop_close(ms_loop *l, void (*done)(ms_loop *l), void *arg)
{
    (void)arg;
    ms_http_client_free(l->service);
    l->service = NULL;
    done(l);
}

static const ms_loop_hooks admin_hooks = {.open = loop_open, .close = loop_close};

int gateway_admin_start(void)
{
    const char *url = getenv("MICROSHOP_SUPERVISOR_URL");
    memset(&admin.supervisor, 0, sizeof admin.supervisor);
    if (url && *url && ms_http_upstream_parse(url, &admin.supervisor) < 0) {
        ms_log(MS_LOG_ERROR, "MICROSHOP_SUPERVISOR_URL is malformed", "error",
               admin.supervisor.error, NULL);
        return MS_EINVAL;
    }
    admin.router = ms_router_new();
    if (ms_router_add(admin.router, "GET", "/admin/instances", instances) < 0 ||
        ms_router_add(admin.router, "GET", "/admin/breakers", breakers) < 0 ||
        ms_router_add(admin.router, "POST", "/admin/breakers/{upstream}", set_breaker) < 0 ||
        ms_router_add(admin.router, "POST", "/admin/scale", scale) < 0 ||
        ms_router_add(admin.router, "POST", "/admin/restart", restart) < 0 ||
        ms_router_add(admin.router, "POST", "/v1/traces", gateway_otlp_receive) < 0 ||
        ms_router_add(admin.router, "POST", "/v1/logs", gateway_logs_receive) < 0 ||
        ms_router_add(admin.router, "GET", "/ops", gateway_console_page) < 0 ||
        ms_router_add(admin.router, "GET", "/ops/app.js", gateway_console_app_js) < 0 ||
        ms_router_add(admin.router, "GET", "/ops/app.css", gateway_console_app_css) < 0 ||
        ms_router_add(admin.router, "GET", "/ops/chart.js", gateway_console_chart_js) < 0 ||
        ms_router_add(admin.router, "GET", "/ops/api/traces", gateway_traces_list) < 0 ||
        ms_router_add(admin.router, "GET", "/ops/api/traces/{trace_id}", gateway_trace_get) < 0 ||
        ms_router_add(admin.router, "GET", "/ops/api/logs", gateway_logs_list) < 0)
        MS_BUG("an admin route template is malformed");
    gateway_traces_start();
    gateway_logs_start();
    ms_server_admin a = {
        .host = admin.host,
        .port = admin.port,
        .router = admin.router,
        .hooks = &admin_hooks,
        .hide_public_metrics = true,
    };
    ms_server_set_admin(&a);
    return 0;
}

void gateway_admin_stop(void)
{
    ms_server_set_admin(NULL);
    gateway_traces_stop();
    gateway_logs_stop();
    ms_router_free(admin.router);
    admin.router = NULL;
}
