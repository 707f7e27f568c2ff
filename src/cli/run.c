/*
 * run.c — `microshop run`: the embedded default. A supervisor starts every service target as
 * its own process (`microshop serve NAME`, SQLite under --data), restarts a child that dies
 * (with backoff), stocks the inventory with a demo catalogue (demo_catalogue.c), prints where
 * everything is, and on Ctrl-C stops the children gracefully (SIGTERM, then SIGKILL after the
 * drain limit).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <uv.h>

#include "cli/cli.h"
#include "cli/demo_catalogue.h"
#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/banned.h"

enum { MAX_CHILDREN = 8, STOP_GRACE_MS = 12000, STABLE_MS = 30000, MAX_QUICK_FAILS = 5 };

typedef struct child {
    const ms_service *svc;
    uv_process_t proc;
    uv_timer_t restart;
    char listen[32];
    bool running;
    uint64_t started_at;
    int quick_fails;
    unsigned backoff_ms;
} child;

static struct {
    uv_loop_t *loop;
    child children[MAX_CHILDREN];
    int n;
    const char *data;
    char exe[4096];
    bool stopping;
    int status;
    uv_signal_t sigint, sigterm;
    uv_timer_t kill_timer, ready_timer;
    int ready_checks;
    char **env;
} sup;

static void start_child(child *c);

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

static void maybe_finish(void)
{
    for (int i = 0; i < sup.n; i++)
        if (sup.children[i].running)
            return;
    /* every child is gone: let the loop end */
    uv_close((uv_handle_t *)&sup.sigint, on_closed);
    uv_close((uv_handle_t *)&sup.sigterm, on_closed);
    uv_close((uv_handle_t *)&sup.kill_timer, on_closed);
    uv_close((uv_handle_t *)&sup.ready_timer, on_closed);
    for (int i = 0; i < sup.n; i++)
        uv_close((uv_handle_t *)&sup.children[i].restart, on_closed);
}

static void on_restart(uv_timer_t *t)
{
    child *c = t->data;
    if (!sup.stopping)
        start_child(c);
}

static void on_child_exit(uv_process_t *p, int64_t status, int signal)
{
    child *c = p->data;
    c->running = false;
    uv_close((uv_handle_t *)p, on_closed);
    if (sup.stopping) {
        maybe_finish();
        return;
    }
    uint64_t lived = uv_now(sup.loop) - c->started_at;
    fprintf(stderr, "microshop run: %s exited (status %lld, signal %d) after %.1f s\n",
            c->svc->name, (long long)status, signal, (double)lived / 1000);
    c->quick_fails = lived < 2000 ? c->quick_fails + 1 : 0;
    if (lived > STABLE_MS)
        c->backoff_ms = 0;
    if (c->quick_fails >= MAX_QUICK_FAILS) {
        fprintf(stderr,
                "microshop run: %s keeps failing at start (is %s already in use?); stopping\n",
                c->svc->name, c->listen);
        sup.status = 1;
        sup.stopping = true;
        for (int i = 0; i < sup.n; i++)
            if (sup.children[i].running)
                uv_process_kill(&sup.children[i].proc, SIGTERM);
        maybe_finish();
        return;
    }
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 100;
    if (c->backoff_ms > 5000)
        c->backoff_ms = 5000;
    uv_timer_start(&c->restart, on_restart, c->backoff_ms, 0);
}

static void start_child(child *c)
{
    char *args[] = {sup.exe,   "serve",  (char *)c->svc->name, "--listen",
                    c->listen, "--data", (char *)sup.data,     NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    /* Children get their own session, so a terminal's Ctrl-C reaches only the supervisor,
     * which then drains them in order; MICROSHOP_PARENT_PID makes them exit if it dies. */
    uv_process_options_t opts = {
        .exit_cb = on_child_exit,
        .file = sup.exe,
        .args = args,
        .env = sup.env,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };
    c->proc.data = c;
    c->started_at = uv_now(sup.loop);
    int rc = uv_spawn(sup.loop, &c->proc, &opts);
    if (rc < 0) {
        fprintf(stderr, "microshop run: cannot start %s: %s\n", c->svc->name, uv_strerror(rc));
        uv_close((uv_handle_t *)&c->proc, on_closed);
        c->backoff_ms = 1000;
        uv_timer_start(&c->restart, on_restart, c->backoff_ms, 0);
        return;
    }
    c->running = true;
}

static void on_kill_timer(uv_timer_t *t)
{
    (void)t;
    for (int i = 0; i < sup.n; i++)
        if (sup.children[i].running)
            uv_process_kill(&sup.children[i].proc, SIGKILL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    if (sup.stopping) {
        on_kill_timer(NULL); /* a second Ctrl-C: no more waiting */
        return;
    }
    fprintf(stderr, "\nmicroshop run: stopping (signal %d)...\n", signum);
    sup.stopping = true;
    for (int i = 0; i < sup.n; i++) {
        uv_timer_stop(&sup.children[i].restart);
        if (sup.children[i].running)
            uv_process_kill(&sup.children[i].proc, SIGTERM);
    }
    uv_timer_start(&sup.kill_timer, on_kill_timer, STOP_GRACE_MS, 0);
    maybe_finish();
}

/* True when something accepts connections at "HOST:PORT". */
static bool port_open(const char *listen)
{
    char host[64];
    int port;
    if (ms_config_split_listen(listen, host, &port) < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Where the child serving `name` listens, or NULL when there is none. */
static const char *listen_of(const char *name)
{
    for (int i = 0; i < sup.n; i++)
        if (!strcmp(sup.children[i].svc->name, name))
            return sup.children[i].listen;
    return NULL;
}

static void print_banner(void)
{
    char tag[MS_UUID_LEN + 1];
    ms_uuid_new(tag);
    const char *user = sup.children[0].listen;
    printf("\nmicroshop %s is running (data in %s)\n\n", MS_VERSION, sup.data);
    for (int i = 0; i < sup.n; i++)
        printf("  %-10s http://%s   (/health /ready /metrics)\n", sup.children[i].svc->name,
               sup.children[i].listen);
    /* A checkout that works when pasted: a new customer buys two of the demo T-shirts (100 in
     * stock, so many pastes go by before one is rejected out_of_stock) with the sandbox card
     * that is always accepted. */
    printf("\nTry a checkout (copy and paste):\n"
           "  ID=$(curl -s -X POST http://%s/api/v1/users -H 'Content-Type: application/json' \\\n"
           "       -d '{\"email\":\"ada-%.8s@example.com\",\"name\":\"Ada\","
           "\"password\":\"correct horse battery\"}' | sed -E 's/.*\"id\":\"([^\"]+)\".*/\\1/')\n",
           user, tag + 28);
    const char *order = listen_of("order");
    const char *inventory = listen_of("inventory");
    if (order && inventory)
        printf("  curl -s 'http://%s/api/v1/products?limit=3'\n"
               "  PID=$(curl -s 'http://%s/api/v1/products?limit=100' | "
               "grep -o '\"id\":\"[^\"]*\",\"sku\":\"MS-TEE-001\"' | cut -d'\"' -f4)\n"
               "  OID=$(curl -s -X POST http://%s/api/v1/orders -H \"X-User-Id: $ID\" "
               "-H 'X-User-Role: customer' \\\n"
               "       -H 'Content-Type: application/json' -H \"Idempotency-Key: first-$ID\" "
               "\\\n"
               "       -d '{\"items\":[{\"product_id\":\"'$PID'\",\"quantity\":2}],"
               "\"payment\":{\"card_number\":\"4242424242424242\"}}' "
               "| sed -E 's/.*\"id\":\"([^\"]+)\".*/\\1/')\n"
               "  curl -s http://%s/api/v1/orders/$OID -H \"X-User-Id: $ID\" "
               "-H 'X-User-Role: customer'\n",
               inventory, inventory, order, order);
    printf("\nPress Ctrl-C to stop.\n");
    fflush(stdout);
}

static void on_seeded(int created, int existing, int failed, void *arg)
{
    (void)arg;
    if (failed)
        fprintf(stderr,
                "microshop run: %d demo products could not be added (see the inventory's "
                "log)\n",
                failed);
    else if (created)
        fprintf(stderr, "microshop run: demo catalogue of %d products added (%d were there)\n",
                created + existing, existing);
    if (!sup.stopping)
        print_banner();
}

static void on_ready_timer(uv_timer_t *t)
{
    for (int i = 0; i < sup.n; i++) {
        if (!port_open(sup.children[i].listen)) {
            if (++sup.ready_checks == 100)
                fprintf(stderr, "microshop run: still waiting for %s on %s...\n",
                        sup.children[i].svc->name, sup.children[i].listen);
            return;
        }
    }
    uv_timer_stop(t);
    const char *inventory = listen_of("inventory");
    if (!inventory || demo_catalogue_seed(sup.loop, inventory, on_seeded, NULL) < 0)
        print_banner();
}

int cmd_run(int argc, char **argv)
{
    const char *data = "./data";
    long base = 8080;
    const ms_option opts[] = {
        {"data", "MICROSHOP_DATA", MS_OPT_STRING, &data, 0, 0, "directory of the SQLite files"},
        {"port-base", "MICROSHOP_PORT_BASE", MS_OPT_INT, &base, 1, 65000,
         "gateway port; services take the next ones (user = base+1)"},
    };
    char err[256];
    int rc = ms_config_parse(opts, 2, argc, argv, 2, err, sizeof err);
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "microshop run: %s\n", err);
        return 2;
    }
    ssize_t n = readlink("/proc/self/exe", sup.exe, sizeof sup.exe - 1);
    if (n <= 0) {
        fprintf(stderr, "microshop run: cannot find my own executable\n");
        return 1;
    }
    sup.exe[n] = '\0';
    sup.data = data;
    sup.loop = uv_default_loop();
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    sup.env = ms_xcalloc(nenv + 2 + MAX_CHILDREN, sizeof(char *));
    memcpy(sup.env, environ, nenv * sizeof(char *));
    char parent[48];
    snprintf(parent, sizeof parent, "MICROSHOP_PARENT_PID=%d", (int)getpid());
    sup.env[nenv++] = parent;
    signal(SIGPIPE, SIG_IGN);
    uv_signal_init(sup.loop, &sup.sigint);
    uv_signal_init(sup.loop, &sup.sigterm);
    uv_signal_start(&sup.sigint, on_signal, SIGINT);
    uv_signal_start(&sup.sigterm, on_signal, SIGTERM);
    uv_timer_init(sup.loop, &sup.kill_timer);
    uv_timer_init(sup.loop, &sup.ready_timer);

    /* every child learns where the others are (MICROSHOP_USER_URL=http://127.0.0.1:8081, ...);
     * getenv takes the first match, so these go before the inherited environment and win */
    char urls[MAX_CHILDREN][96];
    for (int i = 0; i < MAX_CHILDREN && ms_targets[i]; i++, sup.n++) {
        child *c = &sup.children[i];
        c->svc = ms_targets[i];
        /* the embedded ports keep their offsets from 8080 (user 8081, order 8082, ...) */
        snprintf(c->listen, sizeof c->listen, "127.0.0.1:%ld",
                 base + (c->svc->default_port - 8080));
        int len = snprintf(urls[i], sizeof urls[i], "MICROSHOP_%s_URL=http://%s", c->svc->name,
                           c->listen);
        for (int k = 10; k < len && urls[i][k] != '_'; k++) /* the name, upper case */
            urls[i][k] =
                (char)(urls[i][k] >= 'a' && urls[i][k] <= 'z' ? urls[i][k] - 32 : urls[i][k]);
    }
    memmove(sup.env + sup.n, sup.env, nenv * sizeof(char *));
    for (int i = 0; i < sup.n; i++)
        sup.env[i] = urls[i];
    for (int i = 0; i < sup.n; i++) {
        child *c = &sup.children[i];
        uv_timer_init(sup.loop, &c->restart);
        c->restart.data = c;
        start_child(c);
    }
    uv_timer_start(&sup.ready_timer, on_ready_timer, 50, 100);
    uv_run(sup.loop, UV_RUN_DEFAULT);
    uv_loop_close(sup.loop);
    free(sup.env);
    return sup.status;
}
