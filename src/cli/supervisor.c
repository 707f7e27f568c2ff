/*
 * supervisor.c — the processes of `microshop run` (see supervisor.h): spawning with the
 * instance lists in the environment, restarts with backoff, scaling, the instances file, and
 * the stop in order (gateway, then services).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/supervisor.h"
#include "runtime/core/buf.h"
#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/banned.h"

enum {
    STOP_GRACE_MS = 12000,  /* a drain's limit (10 s) and some */
    STABLE_MS = 30000,      /* a child that lived this long starts its backoff afresh */
    MAX_QUICK_FAILS = 5,    /* failures within 2 s of a start in a row before giving up */
    RETIRE_DELAY_MS = 2500, /* a removed instance stops after the readers' 1 s look */
    SCALE_WAIT_MS = 20000,  /* new instances must accept by then */
    MAX_RETIRED = 256,      /* retired instances kept until the end (their handles) */
};

struct sup_instance {
    sup_service *s;
    uv_process_t proc;
    uv_timer_t restart; /* backoff before the next start */
    uv_timer_t stop;    /* retire delay, then the SIGKILL after the grace */
    char addr[SUP_ADDR_MAX];
    bool running, retired, restart_now, proc_open;
    uint64_t started_at;
    int quick_fails;
    unsigned backoff_ms;
};

static struct {
    uv_loop_t *loop;
    sup_config cfg;
    sup_service services[SUP_MAX_SERVICES];
    int nservices;
    sup_instance *retired[MAX_RETIRED];
    int nretired;
    char exe[4096];
    char control[64];
    char instances_file[4200];
    char targets_file[4200]; /* DATA/prometheus-targets.json, Prometheus file_sd */
    bool stopping, services_stopping, finished;
    int status;
    uv_timer_t kill_timer;
} sup;

static void spawn(sup_instance *in);
static void maybe_finish(void);

sup_service *sup_service_at(int i)
{
    return i >= 0 && i < sup.nservices ? &sup.services[i] : NULL;
}

sup_service *sup_service_find(const char *name)
{
    for (int i = 0; i < sup.nservices; i++)
        if (strcmp(sup.services[i].svc->name, name) == 0)
            return &sup.services[i];
    return NULL;
}

const char *sup_instance_addr(const sup_instance *in)
{
    return in->addr;
}

const char *sup_control_url(void)
{
    return sup.control;
}

bool sup_stopping(void)
{
    return sup.stopping;
}

bool sup_finished(void)
{
    return sup.finished;
}

int sup_status(void)
{
    return sup.status;
}

bool sup_port_open(const char *addr)
{
    char host[64];
    int port;
    if (ms_config_split_listen(addr, host, &port) < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* A port nothing listens on now, for a replica (the kernel's pick; the replica binds it a
 * moment later, with SO_REUSEADDR as the kernel's own TIME_WAIT allows). */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* "http://a,http://b": a service's instances as an upstream list. */
static void upstream_list(const sup_service *s, ms_buf *out)
{
    for (int i = 0; i < s->n; i++) {
        ms_buf_adds(out, i ? ",http://" : "http://");
        ms_buf_adds(out, s->inst[i]->addr);
    }
}

/* Replaces `path` with b's bytes (temp + rename: a reader sees the old or the new one). */
static void replace_file(const char *path, const ms_buf *b)
{
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    bool ok = f && fwrite(b->p, 1, b->n, f) == b->n;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok || rename(tmp, path) < 0)
        fprintf(stderr, "microshop run: cannot write %s: %s\n", path, strerror(errno));
}

/* One Prometheus file_sd group: a process's metrics address and its labels. */
static void add_target(ms_buf *b, bool first, const char *addr, const char *service, int k)
{
    ms_buf_printf(b,
                  "%s{\"targets\":[\"%s\"],\"labels\":{\"service\":\"%s\","
                  "\"instance_name\":\"%s-%d\"}}",
                  first ? "" : ",\n ", addr, service, service, k + 1);
}

/* The Prometheus targets file: every service instance's own listener and the gateway's admin
 * listener (its /metrics is there only); a wildcard address is scraped on loopback. */
static void write_targets_file(void)
{
    ms_buf b;
    ms_buf_init(&b, 1024);
    ms_buf_adds(&b, "[");
    bool first = true;
    for (int i = 0; i < sup.nservices; i++) {
        const sup_service *s = &sup.services[i];
        if (!s->scalable) {
            char host[64], addr[96];
            int port;
            if (ms_config_split_listen(sup.cfg.admin, host, &port) < 0)
                continue;
            if (strcmp(host, "0.0.0.0") == 0)
                snprintf(host, sizeof host, "127.0.0.1");
            else if (strcmp(host, "::") == 0)
                snprintf(host, sizeof host, "::1");
            bool v6 = strchr(host, ':') != NULL;
            snprintf(addr, sizeof addr, v6 ? "[%s]:%d" : "%s:%d", host, port);
            add_target(&b, first, addr, s->svc->name, 0);
            first = false;
            continue;
        }
        for (int k = 0; k < s->n; k++, first = false)
            add_target(&b, first, s->inst[k]->addr, s->svc->name, k);
    }
    ms_buf_adds(&b, "]\n");
    replace_file(sup.targets_file, &b);
    ms_buf_release(&b);
}

/* Replaces the instances file, and the targets file beside it. */
static void write_instances_file(void)
{
    ms_buf b;
    ms_buf_init(&b, 512);
    ms_buf_adds(&b, "{\"services\":{");
    for (int i = 0, k = 0; i < sup.nservices; i++) {
        if (!sup.services[i].scalable)
            continue;
        ms_buf_adds(&b, k++ ? ",\"" : "\"");
        ms_buf_adds(&b, sup.services[i].svc->name);
        ms_buf_adds(&b, "\":\"");
        upstream_list(&sup.services[i], &b);
        ms_buf_adds(&b, "\"");
    }
    ms_buf_adds(&b, "}}\n");
    replace_file(sup.instances_file, &b);
    ms_buf_release(&b);
    write_targets_file();
}

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

/* ---- stopping ---- */

static bool any_running(bool gateway_only)
{
    for (int i = 0; i < sup.nservices; i++) {
        if (gateway_only && sup.services[i].scalable)
            continue;
        for (int k = 0; k < sup.services[i].n; k++)
            if (sup.services[i].inst[k]->running)
                return true;
    }
    for (int r = 0; !gateway_only && r < sup.nretired; r++)
        if (sup.retired[r]->running)
            return true;
    return false;
}

static void signal_all(bool services, int signum)
{
    for (int i = 0; i < sup.nservices; i++) {
        if (sup.services[i].scalable != services)
            continue;
        for (int k = 0; k < sup.services[i].n; k++)
            if (sup.services[i].inst[k]->running)
                uv_process_kill(&sup.services[i].inst[k]->proc, signum);
    }
    for (int r = 0; services && r < sup.nretired; r++)
        if (sup.retired[r]->running)
            uv_process_kill(&sup.retired[r]->proc, signum);
}

static void on_kill_timer(uv_timer_t *t)
{
    (void)t;
    signal_all(false, SIGKILL);
    signal_all(true, SIGKILL);
}

/* The gateway is gone (or was never up): the services drain next. */
static void stop_services(void)
{
    if (sup.services_stopping)
        return;
    sup.services_stopping = true;
    signal_all(true, SIGTERM);
}

static void close_instance(sup_instance *in)
{
    uv_close((uv_handle_t *)&in->restart, on_closed);
    uv_close((uv_handle_t *)&in->stop, on_closed);
}

static void maybe_finish(void)
{
    if (!sup.stopping)
        return;
    if (!any_running(true))
        stop_services();
    if (any_running(false))
        return;
    if (sup.finished)
        return;
    /* every child is gone: let the loop end */
    sup.finished = true;
    sup_control_stop();
    uv_close((uv_handle_t *)&sup.kill_timer, on_closed);
    for (int i = 0; i < sup.nservices; i++)
        for (int k = 0; k < sup.services[i].n; k++)
            close_instance(sup.services[i].inst[k]);
    for (int r = 0; r < sup.nretired; r++)
        close_instance(sup.retired[r]);
}

void sup_stop(void)
{
    if (sup.stopping) {
        on_kill_timer(NULL); /* asked twice: no more waiting */
        return;
    }
    sup.stopping = true;
    for (int i = 0; i < sup.nservices; i++)
        for (int k = 0; k < sup.services[i].n; k++)
            uv_timer_stop(&sup.services[i].inst[k]->restart);
    signal_all(false, SIGTERM);
    uv_timer_start(&sup.kill_timer, on_kill_timer, STOP_GRACE_MS, 0);
    maybe_finish();
}

/* ---- one process ---- */

static void on_restart(uv_timer_t *t)
{
    sup_instance *in = t->data;
    if (!sup.stopping && !in->retired && !in->running)
        spawn(in);
}

static void on_proc_closed(uv_handle_t *h)
{
    sup_instance *in = h->data;
    in->proc_open = false;
}

static void on_exit_cb(uv_process_t *p, int64_t status, int signum)
{
    sup_instance *in = p->data;
    in->running = false;
    uv_close((uv_handle_t *)p, on_proc_closed);
    if (sup.stopping || in->retired) {
        uv_timer_stop(&in->stop);
        maybe_finish();
        return;
    }
    uint64_t lived = uv_now(sup.loop) - in->started_at;
    if (in->restart_now) { /* asked for: no backoff, no failure counted */
        in->restart_now = false;
        uv_timer_stop(&in->stop);
        uv_timer_start(&in->restart, on_restart, 0, 0);
        return;
    }
    fprintf(stderr, "microshop run: %s at %s exited (status %lld, signal %d) after %.1f s\n",
            in->s->svc->name, in->addr, (long long)status, signum, (double)lived / 1000);
    in->quick_fails = lived < 2000 ? in->quick_fails + 1 : 0;
    if (lived > STABLE_MS)
        in->backoff_ms = 0;
    if (in->quick_fails >= MAX_QUICK_FAILS) {
        fprintf(stderr,
                "microshop run: %s keeps failing at start (is %s already in use?); stopping\n",
                in->s->svc->name, in->addr);
        sup.status = 1;
        sup_stop();
        return;
    }
    in->backoff_ms = in->backoff_ms ? in->backoff_ms * 2 : 100;
    if (in->backoff_ms > 5000)
        in->backoff_ms = 5000;
    uv_timer_start(&in->restart, on_restart, in->backoff_ms, 0);
}

static void spawn(sup_instance *in)
{
    /* Every process learns every instance (getenv takes the first match, so these go before
     * the inherited environment and win). */
    enum { NOWN = SUP_MAX_SERVICES + 3 };
    ms_buf vars[NOWN];
    int nvars = 0;
    for (int i = 0; i < sup.nservices; i++) {
        const sup_service *s = &sup.services[i];
        if (!s->scalable)
            continue;
        ms_buf *b = &vars[nvars++];
        ms_buf_init(b, 128);
        ms_buf_adds(b, "MICROSHOP_");
        for (const char *c = s->svc->name; *c; c++) {
            char upper = *c >= 'a' && *c <= 'z' ? (char)(*c - 32) : *c;
            ms_buf_add(b, &upper, 1);
        }
        ms_buf_adds(b, "_URL=");
        upstream_list(s, b);
        ms_buf_add(b, "", 1);
    }
    const char *fixed[] = {"MICROSHOP_INSTANCES_FILE=", sup.instances_file,
                           "MICROSHOP_SUPERVISOR_URL=", sup.control};
    for (int i = 0; i < 4; i += 2) {
        ms_buf *b = &vars[nvars++];
        ms_buf_init(b, 128);
        ms_buf_adds(b, fixed[i]);
        ms_buf_adds(b, fixed[i + 1]);
        ms_buf_add(b, "", 1);
    }
    ms_buf *parent = &vars[nvars++];
    ms_buf_init(parent, 48);
    ms_buf_adds(parent, "MICROSHOP_PARENT_PID=");
    ms_buf_add_int(parent, getpid());
    ms_buf_add(parent, "", 1);
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    char **env = ms_xcalloc(nenv + NOWN + 1, sizeof(char *));
    for (int i = 0; i < nvars; i++)
        env[i] = vars[i].p;
    memcpy(env + nvars, environ, nenv * sizeof(char *));

    char *args[12] = {sup.exe,  "serve",  (char *)in->s->svc->name, "--listen",
                      in->addr, "--data", (char *)sup.cfg.data};
    if (!in->s->scalable) {
        args[7] = "--admin";
        args[8] = (char *)sup.cfg.admin;
    }
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    /* Children get their own session, so a terminal's Ctrl-C reaches only the supervisor,
     * which then drains them in order; MICROSHOP_PARENT_PID makes them exit if it dies. */
    uv_process_options_t opts = {
        .exit_cb = on_exit_cb,
        .file = sup.exe,
        .args = args,
        .env = env,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };
    in->proc.data = in;
    in->started_at = uv_now(sup.loop);
    int rc = uv_spawn(sup.loop, &in->proc, &opts); /* forks now: env may go after it */
    in->proc_open = true;
    free(env);
    for (int i = 0; i < nvars; i++)
        ms_buf_release(&vars[i]);
    if (rc < 0) {
        fprintf(stderr, "microshop run: cannot start %s: %s\n", in->s->svc->name, uv_strerror(rc));
        uv_close((uv_handle_t *)&in->proc, on_proc_closed);
        in->backoff_ms = 1000;
        uv_timer_start(&in->restart, on_restart, in->backoff_ms, 0);
        return;
    }
    in->running = true;
}

static sup_instance *instance_new(sup_service *s, int port)
{
    sup_instance *in = ms_xcalloc(1, sizeof *in);
    in->s = s;
    snprintf(in->addr, sizeof in->addr, "127.0.0.1:%d", port);
    uv_timer_init(sup.loop, &in->restart);
    uv_timer_init(sup.loop, &in->stop);
    in->restart.data = in->stop.data = in;
    return in;
}

/* ---- scaling and restarts ---- */

static void on_retire_kill(uv_timer_t *t)
{
    sup_instance *in = t->data;
    if (in->running)
        uv_process_kill(&in->proc, SIGKILL);
}

/* The readers have dropped it: it may drain now. */
static void on_retire(uv_timer_t *t)
{
    sup_instance *in = t->data;
    uv_timer_stop(&in->restart);
    if (!in->running)
        return;
    uv_process_kill(&in->proc, SIGTERM);
    uv_timer_start(&in->stop, on_retire_kill, STOP_GRACE_MS, 0);
}

typedef struct scale_wait {
    uv_timer_t timer;
    sup_service *s;
    int from, to; /* the new instances: s->inst[from..to) */
    uint64_t deadline;
    void (*done)(int status, void *arg);
    void *arg;
} scale_wait;

static void on_wait_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_scale_poll(uv_timer_t *t)
{
    scale_wait *w = t->data;
    bool ready = true;
    for (int i = w->from; ready && i < w->to && i < w->s->n; i++)
        ready = sup_port_open(w->s->inst[i]->addr);
    bool late = uv_now(sup.loop) > w->deadline;
    if (!ready && !late && !sup.stopping)
        return;
    uv_timer_stop(t);
    /* only now do the readers learn of them: no request goes to a port not yet open */
    write_instances_file();
    w->done(ready ? 0 : MS_ETIMEDOUT, w->arg);
    uv_close((uv_handle_t *)t, on_wait_closed);
}

int sup_scale(sup_service *s, int replicas, void (*done)(int status, void *arg), void *arg)
{
    if (!s->scalable || replicas < 1 || replicas > s->max_replicas)
        return MS_EINVAL;
    int from = s->n;
    while (s->n > replicas) {
        if (sup.nretired == MAX_RETIRED)
            return MS_EBUSY;
        sup_instance *in = s->inst[--s->n];
        s->inst[s->n] = NULL;
        in->retired = true;
        sup.retired[sup.nretired++] = in;
        uv_timer_stop(&in->restart);
        uv_timer_start(&in->stop, on_retire, RETIRE_DELAY_MS, 0);
    }
    while (s->n < replicas) {
        int port = free_port();
        if (port < 0)
            return MS_EIO;
        sup_instance *in = instance_new(s, port);
        s->inst[s->n++] = in;
        spawn(in);
    }
    scale_wait *w = ms_xcalloc(1, sizeof *w);
    *w = (scale_wait){.s = s,
                      .from = from,
                      .to = s->n,
                      .done = done,
                      .arg = arg,
                      .deadline = uv_now(sup.loop) + SCALE_WAIT_MS};
    uv_timer_init(sup.loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_scale_poll, 0, 50);
    return 0;
}

static void on_restart_kill(uv_timer_t *t)
{
    sup_instance *in = t->data;
    if (in->running)
        uv_process_kill(&in->proc, SIGKILL);
}

int sup_restart(sup_service *s, const char *addr)
{
    int found = 0;
    for (int i = 0; i < s->n; i++) {
        sup_instance *in = s->inst[i];
        if (addr && strcmp(addr, in->addr) != 0)
            continue;
        found++;
        if (!in->running) { /* waiting out a backoff: start it now */
            uv_timer_start(&in->restart, on_restart, 0, 0);
            continue;
        }
        in->restart_now = true;
        uv_process_kill(&in->proc, SIGTERM);
        uv_timer_start(&in->stop, on_restart_kill, STOP_GRACE_MS, 0);
    }
    return found ? 0 : MS_ENOTFOUND;
}

/* ---- start ---- */

int sup_start(uv_loop_t *loop, const sup_config *cfg)
{
    sup.loop = loop;
    sup.cfg = *cfg;
    ssize_t n = readlink("/proc/self/exe", sup.exe, sizeof sup.exe - 1);
    if (n <= 0) {
        fprintf(stderr, "microshop run: cannot find my own executable\n");
        return MS_EIO;
    }
    sup.exe[n] = '\0';
    char *abs = realpath(cfg->data, NULL);
    snprintf(sup.instances_file, sizeof sup.instances_file, "%s/instances.json",
             abs ? abs : cfg->data);
    snprintf(sup.targets_file, sizeof sup.targets_file, "%s/prometheus-targets.json",
             abs ? abs : cfg->data);
    free(abs);
    uv_timer_init(loop, &sup.kill_timer);
    if (sup_control_start(loop, sup.control) < 0) {
        fprintf(stderr, "microshop run: cannot open the control endpoint\n");
        uv_close((uv_handle_t *)&sup.kill_timer, on_closed);
        return MS_EIO;
    }
    const ms_service *const all[] = {&ms_gateway_service, &ms_user_service, &ms_order_service,
                                     &ms_inventory_service, &ms_payment_service};
    for (int i = 0; i < SUP_MAX_SERVICES; i++) {
        sup_service *s = &sup.services[sup.nservices++];
        s->svc = all[i];
        s->scalable = i > 0;
        s->max_replicas = s->scalable && s->svc != &ms_order_service ? SUP_MAX_REPLICAS : 1;
        /* the embedded ports keep their offsets from 8080 (user 8081, order 8082, ...) */
        s->port = cfg->base + (s->svc->default_port - 8080);
        int replicas = cfg->replicas[i] > 0 ? cfg->replicas[i] : 1;
        if (replicas > s->max_replicas)
            replicas = s->max_replicas;
        for (int k = 0; k < replicas; k++) {
            int port = k == 0 ? s->port : free_port();
            if (port < 0)
                MS_BUG("no free port for a replica");
            s->inst[s->n++] = instance_new(s, port);
        }
    }
    write_instances_file();
    /* the services first: the gateway's first requests find them starting, not absent */
    for (int i = 1; i <= sup.nservices; i++) {
        sup_service *s = &sup.services[i % sup.nservices];
        for (int k = 0; k < s->n; k++)
            spawn(s->inst[k]);
    }
    return 0;
}

void sup_free(void)
{
    for (int i = 0; i < sup.nservices; i++)
        for (int k = 0; k < sup.services[i].n; k++)
            free(sup.services[i].inst[k]);
    for (int r = 0; r < sup.nretired; r++)
        free(sup.retired[r]);
    sup.nservices = sup.nretired = 0;
}
