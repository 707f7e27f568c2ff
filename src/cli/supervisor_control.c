/*
 * supervisor_control.c — the supervisor's control endpoint: HTTP/1.1 on 127.0.0.1 (a free port,
 * handed to the gateway as MICROSHOP_SUPERVISOR_URL), one request per connection:
 *   POST /scale    {"service": "order", "replicas": 1..8}
 *                  200 {"service", "instances": ["host:port", ...]} once the new instances
 *                  accept connections (504 when they have not within the start limit)
 *   POST /restart  {"service": "order"[, "instance": "host:port"]}
 *                  202 {"service", "restarting": ["host:port", ...]}
 * Bad bodies answer problem+json (400, 404 for an unknown instance, 415, 422). The gateway's
 * admin listener is the documented way in; this endpoint trusts its loopback caller.
 */
#include <arpa/inet.h>
#include <http_parser.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/supervisor.h"
#include "runtime/core/buf.h"
#include "runtime/core/error.h"
#include "runtime/core/banned.h"

enum { MAX_REQUEST = 16384 };

typedef struct control_conn {
    uv_tcp_t tcp;
    http_parser parser;
    ms_buf url, body;
    bool json;    /* Content-Type is application/json */
    bool in_type; /* the header being read is Content-Type */
    bool too_big, complete, closing, closed;
    bool waiting; /* a scale is under way: the memory stays until it answers */
    sup_service *svc;
    uv_write_t write;
    ms_buf out;
} control_conn;

static uv_tcp_t server;
static bool server_open;

static void conn_free(control_conn *c)
{
    ms_buf_release(&c->url);
    ms_buf_release(&c->body);
    ms_buf_release(&c->out);
    free(c);
}

static void on_conn_closed(uv_handle_t *h)
{
    control_conn *c = h->data;
    c->closed = true;
    if (!c->waiting)
        conn_free(c);
}

static void conn_close(control_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    conn_close(w->data);
}

static void respond(control_conn *c, int status, const char *type, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    ms_buf_printf(&c->out,
                  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                  "Connection: close\r\n\r\n%s",
                  status, status < 300 ? "OK" : "Error", type, strlen(text), text);
    free(text);
    uv_buf_t buf = uv_buf_init(c->out.p, (unsigned)c->out.n);
    c->write.data = c;
    if (c->closing || uv_write(&c->write, (uv_stream_t *)&c->tcp, &buf, 1, on_written) < 0)
        conn_close(c);
}

static void problem(control_conn *c, int status, const char *detail, const char *field,
                    const char *message)
{
    json_t *doc =
        json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "urn:microshop:problem:control-refused",
                  "title", "control request refused", "status", status, "detail", detail,
                  "instance", c->url.p && c->complete ? c->url.p : "");
    if (field)
        json_object_set_new(doc, "errors",
                            json_pack("[{s:s, s:s}]", "field", field, "message", message));
    respond(c, status, "application/problem+json", doc);
}

static json_t *instance_list(const sup_service *s)
{
    json_t *list = json_array();
    for (int i = 0; i < s->n; i++)
        json_array_append_new(list, json_string(sup_instance_addr(s->inst[i])));
    return list;
}

static void scaled(int status, void *arg)
{
    control_conn *c = arg;
    c->waiting = false;
    if (c->closed) { /* the caller left: nobody to tell */
        conn_free(c);
        return;
    }
    if (status < 0) {
        problem(c, 504, "the new instances did not accept connections in time", NULL, NULL);
        return;
    }
    respond(
        c, 200, "application/json",
        json_pack("{s:s, s:o}", "service", c->svc->svc->name, "instances", instance_list(c->svc)));
}

/* Checks a request's body and does what it asks. */
static void handle(control_conn *c)
{
    const char *path = c->url.p ? c->url.p : "";
    bool scale = strcmp(path, "/scale") == 0, restart = strcmp(path, "/restart") == 0;
    if (!scale && !restart) {
        problem(c, 404, "no such control route (POST /scale, POST /restart)", NULL, NULL);
        return;
    }
    if (c->parser.method != HTTP_POST) {
        problem(c, 405, "control routes take POST", NULL, NULL);
        return;
    }
    if (!c->json) {
        problem(c, 415, "the body must be application/json", NULL, NULL);
        return;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(c->body.p ? c->body.p : "", c->body.n, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        json_decref(doc);
        problem(c, 400, "the body must be a JSON object", NULL, NULL);
        return;
    }
    json_t *service = json_object_get(doc, "service");
    json_t *replicas = json_object_get(doc, "replicas");
    json_t *instance = json_object_get(doc, "instance");
    const char *key;
    json_t *v;
    json_object_foreach(doc, key, v)
    {
        if (strcmp(key, "service") != 0 && strcmp(key, scale ? "replicas" : "instance") != 0) {
            problem(c, 400, "unknown field", key, "is not a field of this request");
            goto out;
        }
    }
    if (!json_is_string(service)) {
        problem(c, service ? 400 : 422, "service is required", "service", "must be a service name");
        goto out;
    }
    c->svc = sup_service_find(json_string_value(service));
    if (!c->svc || !c->svc->scalable) {
        problem(c, 422, "unknown service", "service", "must be user, order, inventory or payment");
        goto out;
    }
    if (scale) {
        if (!json_is_integer(replicas)) {
            problem(c, replicas ? 400 : 422, "replicas is required", "replicas",
                    "must be an integer");
            goto out;
        }
        json_int_t n = json_integer_value(replicas);
        if (n < 1 || n > SUP_MAX_REPLICAS) {
            problem(c, 422, "replicas out of range", "replicas", "must be from 1 to 8");
            goto out;
        }
        if (n > c->svc->max_replicas) {
            problem(c, 422, "the order service runs one instance here", "replicas",
                    "must be 1: on SQLite the order service's event store has one writing "
                    "process; scale it out on PostgreSQL");
            goto out;
        }
        c->waiting = true;
        if (sup_scale(c->svc, (int)n, scaled, c) < 0) {
            c->waiting = false;
            problem(c, 503, "the service cannot be scaled now", NULL, NULL);
        }
        goto out;
    }
    if (instance && !json_is_string(instance)) {
        problem(c, 400, "instance must be a string", "instance", "must be HOST:PORT");
        goto out;
    }
    json_t *restarting = json_array();
    for (int i = 0; i < c->svc->n; i++)
        if (!instance ||
            strcmp(json_string_value(instance), sup_instance_addr(c->svc->inst[i])) == 0)
            json_array_append_new(restarting, json_string(sup_instance_addr(c->svc->inst[i])));
    if (sup_restart(c->svc, instance ? json_string_value(instance) : NULL) < 0) {
        json_decref(restarting);
        problem(c, 404, "no instance of the service has that address", "instance",
                "is not one of the service's instances");
        goto out;
    }
    respond(c, 202, "application/json",
            json_pack("{s:s, s:o}", "service", c->svc->svc->name, "restarting", restarting));
out:
    json_decref(doc);
}

/* ---- parsing ---- */

static int on_url(http_parser *p, const char *at, size_t n)
{
    control_conn *c = p->data;
    ms_buf_add(&c->url, at, n);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    control_conn *c = p->data;
    c->in_type = n == 12 && strncasecmp(at, "Content-Type", 12) == 0;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    control_conn *c = p->data;
    if (c->in_type)
        c->json = n >= 16 && strncasecmp(at, "application/json", 16) == 0;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    control_conn *c = p->data;
    if (c->body.n + n > MAX_REQUEST) {
        c->too_big = true;
        return 1;
    }
    ms_buf_add(&c->body, at, n);
    return 0;
}

static int on_complete(http_parser *p)
{
    control_conn *c = p->data;
    c->complete = true;
    ms_buf_add(&c->url, "", 1);
    ms_buf_add(&c->body, "", 1);
    c->body.n--; /* the NUL stays out of the length */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char slab[4096]; /* one loop thread, and each read is parsed before the next */
    *buf = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    control_conn *c = s->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0 || c->complete)
        return;
    http_parser_execute(&c->parser, &settings, buf->base, (size_t)n);
    if (c->complete) {
        uv_read_stop(s);
        handle(c);
    } else if (c->too_big || HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
        uv_read_stop(s);
        problem(c, c->too_big ? 413 : 400, "the request cannot be read", NULL, NULL);
    }
}

static void on_connection(uv_stream_t *srv, int status)
{
    if (status < 0)
        return;
    control_conn *c = ms_xcalloc(1, sizeof *c);
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int sup_control_start(uv_loop_t *loop, char url[64])
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &server);
    server_open = true;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_bind(&server, (struct sockaddr *)&a, 0) < 0 ||
        uv_listen((uv_stream_t *)&server, 64, on_connection) < 0 ||
        uv_tcp_getsockname(&server, (struct sockaddr *)&ss, &len) < 0) {
        sup_control_stop();
        return MS_EIO;
    }
    snprintf(url, 64, "http://127.0.0.1:%d", ntohs(((struct sockaddr_in *)&ss)->sin_port));
    return 0;
}

void sup_control_stop(void)
{
    if (!server_open)
        return;
    server_open = false;
    uv_close((uv_handle_t *)&server, NULL);
}
