/*
 * port.c — a loop's door to the store. ms_es_append queues a job for the writer; the writer
 * puts each answered job on the port's queue (a mutex-protected list) and wakes the loop with
 * uv_async_send, which coalesces: one wakeup may deliver many answers.
 *
 * The writer sends while it holds port->mu, and the loop drains under the same mutex, so the
 * loop cannot see the last answer, close the handle and free the port between the writer's
 * push and its send. A port closes once every append it queued has been answered.
 */
#include <stdlib.h>

#include "eventstore/eventstore_internal.h"
#include "runtime/core/error.h"
#include "runtime/core/banned.h"

static void close_cb(uv_handle_t *h)
{
    ms_es_port *port = h->data;
    ms_es *es = port->es;
    void (*cb)(void *) = port->on_closed;
    void *arg = port->on_closed_arg;
    uv_mutex_destroy(&port->mu);
    free(port);
    uv_mutex_lock(&es->mu);
    es->nports--;
    uv_mutex_unlock(&es->mu);
    if (cb)
        cb(arg);
}

static void maybe_close(ms_es_port *port)
{
    if (!port->is_closing || port->is_close_started || port->is_delivering || port->pending > 0)
        return;
    port->is_close_started = true;
    uv_close((uv_handle_t *)&port->async, close_cb);
}

static void async_cb(uv_async_t *h)
{
    ms_es_port *port = h->data;
    uv_mutex_lock(&port->mu);
    es_job *list = port->head;
    port->head = port->tail = NULL;
    uv_mutex_unlock(&port->mu);
    port->is_delivering = true; /* a callback may close the port: not before the list ends */
    while (list) {
        es_job *j = list;
        list = j->next;
        port->pending--;
        ms_es__finish_on_loop(j);
    }
    port->is_delivering = false;
    maybe_close(port);
}

void ms_es__port_deliver(ms_es_port *port, es_job *j)
{
    j->next = NULL;
    uv_mutex_lock(&port->mu);
    if (port->tail)
        port->tail->next = j;
    else
        port->head = j;
    port->tail = j;
    uv_async_send(&port->async);
    uv_mutex_unlock(&port->mu);
}

int ms_es_port_open(ms_es *es, uv_loop_t *loop, ms_es_port **out)
{
    ms_es_port *port = ms_xcalloc(1, sizeof *port);
    port->es = es;
    port->loop = loop;
    int rc = uv_async_init(loop, &port->async, async_cb);
    if (rc != 0) {
        free(port);
        *out = NULL;
        return MS_EIO;
    }
    port->async.data = port;
    uv_mutex_init(&port->mu);
    uv_mutex_lock(&es->mu);
    es->nports++;
    uv_mutex_unlock(&es->mu);
    *out = port;
    return 0;
}

void ms_es_port_close(ms_es_port *port, void (*on_closed)(void *arg), void *arg)
{
    if (port->is_closing)
        MS_BUG("ms_es_port_close: closed twice");
    port->is_closing = true;
    port->on_closed = on_closed;
    port->on_closed_arg = arg;
    maybe_close(port);
}

void ms_es_append(ms_es_port *port, ms_es_append_req *a, ms_es_append_cb cb, void *arg)
{
    if (port->is_close_started)
        MS_BUG("ms_es_append: the port is closed");
    es_job *j;
    int rc = ms_es__job_new(a, &j);
    if (rc < 0) { /* answered like any other, never from inside this call */
        j = ms_xcalloc(1, sizeof *j);
        j->caller = a;
        j->rc = rc;
    }
    j->port = port;
    j->cb = cb;
    j->arg = arg;
    port->pending++;
    if (rc < 0 || port->is_closing) {
        if (rc == 0)
            j->rc = MS_ESHUTDOWN;
        ms_es__port_deliver(port, j);
        return;
    }
    ms_es__submit(port->es, j);
}
