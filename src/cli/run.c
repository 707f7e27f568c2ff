/*
 * run.c — `microshop run`: the embedded default. A supervisor (supervisor.c) starts the gateway
 * (the API, with its admin listener) and every service as processes of their own
 * (`microshop serve NAME`, SQLite under --data), each with its replicas; restarts a child that
 * dies (with backoff); scales and restarts on the gateway's admin requests; stocks the
 * inventory with a demo catalogue and registers a demo customer (demo_catalogue.c); turns
 * auth on (below); prints where everything is, with demo tokens; and on
 * Ctrl-C stops the gateway, then the services, gracefully (SIGTERM, then SIGKILL after the
 * drain limit).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cli/cli.h"
#include "cli/demo_catalogue.h"
#include "cli/supervisor.h"
#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/auth/jwt.h"
#include "runtime/core/id.h"
#include "runtime/core/banned.h"

enum { DEMO_TOKEN_TTL_S = 24 * 3600, SECRET_BYTES = 32 };

/*
 * Auth is on in `microshop run`: unless the environment gives keys, the run makes an HS256
 * token secret and an identity secret of its own (random, for this run only) and its children
 * inherit them, so the gateway verifies tokens, the user service issues them, and every service
 * refuses an identity the gateway did not sign.
 */
static void set_secret(const char *name)
{
    const char *have = getenv(name);
    if (have && *have)
        return;
    unsigned char b[SECRET_BYTES];
    char hex[2 * SECRET_BYTES + 1];
    ms_random_bytes(b, sizeof b);
    for (int i = 0; i < SECRET_BYTES; i++)
        snprintf(hex + 2 * i, 3, "%02x", b[i]);
    setenv(name, hex, 1);
    explicit_bzero(hex, sizeof hex);
    explicit_bzero(b, sizeof b);
}

static void set_secrets(void)
{
    const char *jwks = getenv("MICROSHOP_JWKS_FILE"), *pem = getenv("MICROSHOP_JWT_PRIVATE_KEY");
    if (!(jwks && *jwks) && !(pem && *pem))
        set_secret("MICROSHOP_JWT_SECRET");
    set_secret("MICROSHOP_IDENTITY_SECRET");
}

static struct {
    uv_loop_t *loop;
    const char *data;
    char admin[80];
    uv_signal_t sigint, sigterm;
    uv_timer_t ready_timer;
    int ready_checks;
    bool closed;
} run;

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

/* The supervisor's own handles go once it is stopping and every child is gone. */
static void close_own_handles(void)
{
    if (run.closed)
        return;
    run.closed = true;
    uv_close((uv_handle_t *)&run.sigint, on_closed);
    uv_close((uv_handle_t *)&run.sigterm, on_closed);
    uv_close((uv_handle_t *)&run.ready_timer, on_closed);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    if (!sup_stopping())
        fprintf(stderr, "\nmicroshop run: stopping (signal %d)...\n", signum);
    sup_stop();
}

static const char *first_addr(const char *name)
{
    sup_service *s = sup_service_find(name);
    return s && s->n ? sup_instance_addr(s->inst[0]) : NULL;
}

/* A demo token (HS256 with this run's secret), or NULL when tokens are not minted here (the
 * signing key is RS256, set by the user). */
static const char *demo_token(const char *sub, const char *role, char *out, size_t cap)
{
    const char *secret = getenv("MICROSHOP_JWT_SECRET");
    return secret && ms_jwt_sign_hs256(secret, sub, role, DEMO_TOKEN_TTL_S, out, cap) == 0 ? out
                                                                                           : NULL;
}

static void print_banner(const demo_result *seeded)
{
    char tag[MS_UUID_LEN + 1], admin_id[MS_UUID_LEN + 1];
    ms_uuid_new(tag);
    ms_uuid_new(admin_id);
    const char *api = first_addr("gateway");
    printf("\nmicroshop %s is running (data in %s)\n\n", MS_VERSION, run.data);
    printf("  API       http://%s   (every service's /api/v1 routes; bearer tokens)\n", api);
    printf("  admin     http://%s   (/ops /admin/instances /admin/breakers /admin/scale "
           "/admin/restart /metrics)\n",
           run.admin);
    for (int i = 1; sup_service_at(i); i++) {
        const sup_service *s = sup_service_at(i);
        printf("  %-10s", s->svc->name);
        for (int k = 0; k < s->n; k++)
            printf("%shttp://%s", k ? ", " : "", sup_instance_addr(s->inst[k]));
        printf("\n");
    }
    printf("  (each answers /health /ready /metrics; identities from the gateway only)\n");
    static char customer[MS_JWT_MAX_LEN + 1], admin[MS_JWT_MAX_LEN + 1];
    const char *ct = seeded && seeded->customer_id[0]
                         ? demo_token(seeded->customer_id, "customer", customer, sizeof customer)
                         : NULL;
    const char *at = demo_token(admin_id, "admin", admin, sizeof admin);
    if (ct || at) {
        printf("\nTokens (valid 24 h):\n");
        if (ct)
            printf("  CUSTOMER=%s\n    (%s, password %s)\n", ct, DEMO_CUSTOMER_EMAIL,
                   DEMO_CUSTOMER_PASSWORD);
        if (at)
            printf("  ADMIN=%s\n", at);
    }
    /* A checkout that works when pasted, through the gateway: the demo customer signs in and
     * buys two of the demo T-shirts (100 in stock, so many pastes go by before one is rejected
     * out_of_stock) with the sandbox card that is always accepted. */
    printf("\nTry a checkout (copy and paste):\n"
           "  TOKEN=$(curl -s -X POST http://%s/api/v1/auth/token -H 'Content-Type: "
           "application/json' \\\n"
           "       -d '{\"email\":\"%s\",\"password\":\"%s\"}' "
           "| sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')\n",
           api, DEMO_CUSTOMER_EMAIL, DEMO_CUSTOMER_PASSWORD);
    printf("  curl -s 'http://%s/api/v1/products?limit=3'\n"
           "  PID=$(curl -s 'http://%s/api/v1/products?limit=100' | "
           "grep -o '\"id\":\"[^\"]*\",\"sku\":\"MS-TEE-001\"' | cut -d'\"' -f4)\n"
           "  OID=$(curl -s -X POST http://%s/api/v1/orders -H \"Authorization: Bearer $TOKEN\" "
           "\\\n"
           "       -H 'Content-Type: application/json' -H \"Idempotency-Key: first-%.8s\" "
           "\\\n"
           "       -d '{\"items\":[{\"product_id\":\"'$PID'\",\"quantity\":2}],"
           "\"payment\":{\"card_number\":\"4242424242424242\"}}' "
           "| sed -E 's/.*\"id\":\"([^\"]+)\".*/\\1/')\n"
           "  curl -s http://%s/api/v1/orders/$OID -H \"Authorization: Bearer $TOKEN\"\n",
           api, api, api, tag + 28, api);
    printf("\nA customer of your own: POST http://%s/api/v1/users {email, name, password}, then "
           "POST /api/v1/auth/token {email, password}.\n",
           api);
    printf("\nScale or restart a service (admin listener):\n"
           "  curl -s -X POST http://%s/admin/scale -H 'Content-Type: application/json' "
           "-d '{\"service\":\"inventory\",\"replicas\":2}'\n"
           "  curl -s -X POST http://%s/admin/restart -H 'Content-Type: application/json' "
           "-d '{\"service\":\"order\"}'\n",
           run.admin, run.admin);
    printf("\nPress Ctrl-C to stop.\n");
    fflush(stdout);
}

static void on_seeded(const demo_result *r, void *arg)
{
    (void)arg;
    if (r->failed)
        fprintf(stderr,
                "microshop run: %d demo products could not be added (see the inventory's "
                "log)\n",
                r->failed);
    else if (r->created)
        fprintf(stderr, "microshop run: demo catalogue of %d products added (%d were there)\n",
                r->created + r->existing, r->existing);
    if (!r->customer_id[0])
        fprintf(stderr, "microshop run: the demo customer could not be registered or signed in "
                        "(see the user service's log)\n");
    if (!sup_stopping())
        print_banner(r);
}

static void on_ready_timer(uv_timer_t *t)
{
    if (sup_stopping()) {
        uv_timer_stop(t);
        return;
    }
    for (int i = 0; sup_service_at(i); i++) {
        const sup_service *s = sup_service_at(i);
        for (int k = 0; k < s->n; k++) {
            if (!sup_port_open(sup_instance_addr(s->inst[k]))) {
                if (++run.ready_checks == 100)
                    fprintf(stderr, "microshop run: still waiting for %s on %s...\n", s->svc->name,
                            sup_instance_addr(s->inst[k]));
                return;
            }
        }
    }
    if (!sup_port_open(run.admin))
        return;
    uv_timer_stop(t);
    const char *inventory = first_addr("inventory"), *user = first_addr("user");
    if (!inventory || !user || demo_catalogue_seed(run.loop, inventory, user, on_seeded, NULL) < 0)
        print_banner(NULL);
}

/* Ends the loop's own handles once the supervisor has nothing left running. */
static void on_check(uv_check_t *c)
{
    if (sup_finished()) {
        close_own_handles();
        uv_close((uv_handle_t *)c, on_closed);
    }
}

/* "3" (every service) or "order=2,inventory=2" into cfg->replicas; false when malformed. */
static bool parse_replicas(const char *spec, sup_config *cfg, char *err, size_t errn)
{
    char *end;
    long all = strtol(spec, &end, 10);
    if (end != spec && *end == '\0') {
        if (all < 1 || all > SUP_MAX_REPLICAS) {
            snprintf(err, errn, "--replicas must be from 1 to %d", SUP_MAX_REPLICAS);
            return false;
        }
        for (int i = 1; i < SUP_MAX_SERVICES; i++)
            cfg->replicas[i] = i == 2 ? 1 : (int)all; /* names[2], order: see below */
        if (all > 1)
            fprintf(stderr,
                    "microshop run: %ld instances of user, inventory and payment; order runs one "
                    "(on SQLite its event store has one writing process; scale it out on "
                    "PostgreSQL, as deploy/compose/docker-compose.replicas.yml does)\n",
                    all);
        return true;
    }
    static const char *const names[SUP_MAX_SERVICES] = {"gateway", "user", "order", "inventory",
                                                        "payment"};
    const char *p = spec;
    while (*p) {
        const char *eq = strchr(p, '=');
        int i = 1;
        for (; eq && i < SUP_MAX_SERVICES; i++)
            if ((size_t)(eq - p) == strlen(names[i]) && strncmp(p, names[i], (size_t)(eq - p)) == 0)
                break;
        long n = eq ? strtol(eq + 1, &end, 10) : 0;
        if (!eq || i == SUP_MAX_SERVICES || end == eq + 1 || (*end && *end != ',') || n < 1 ||
            n > SUP_MAX_REPLICAS) {
            snprintf(err, errn,
                     "--replicas must be N or SERVICE=N,... (services user, order, inventory, "
                     "payment; N from 1 to %d), not '%s'",
                     SUP_MAX_REPLICAS, spec);
            return false;
        }
        if (i == 2 && n > 1) { /* names[2]: the supervisor's max_replicas says why */
            snprintf(err, errn,
                     "--replicas: the order service runs one instance (on SQLite its event "
                     "store has one writing process; scale it out on PostgreSQL)");
            return false;
        }
        cfg->replicas[i] = (int)n;
        p = *end ? end + 1 : end;
    }
    return true;
}

int cmd_run(int argc, char **argv)
{
    const char *data = "./data", *admin = NULL, *replicas = "1";
    long base = 8080;
    const ms_option opts[] = {
        {"data", "MICROSHOP_DATA", MS_OPT_STRING, &data, 0, 0, "directory of the SQLite files"},
        {"port-base", "MICROSHOP_PORT_BASE", MS_OPT_INT, &base, 1, 64000,
         "gateway port; services take the next ones (user = base+1)"},
        {"admin", "MICROSHOP_ADMIN_LISTEN", MS_OPT_STRING, &admin, 0, 0,
         "the gateway's admin listener HOST:PORT (default 127.0.0.1:port-base+1000)"},
        {"replicas", "MICROSHOP_REPLICAS", MS_OPT_STRING, &replicas, 0, 0,
         "instances per service: N, or SERVICE=N,... (inventory=2,payment=2); more later with "
         "POST /admin/scale; the order service stays at one (its SQLite event store has one "
         "writer)"},
    };
    char err[256];
    int rc = ms_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv, 2, err, sizeof err);
    if (rc == 1)
        return 0;
    sup_config cfg = {.data = data, .base = (int)base};
    if (rc == 0 && !parse_replicas(replicas, &cfg, err, sizeof err))
        rc = MS_EINVAL;
    if (admin)
        snprintf(run.admin, sizeof run.admin, "%s", admin);
    else
        snprintf(run.admin, sizeof run.admin, "127.0.0.1:%ld", base + 1000);
    char host[64];
    int port;
    if (rc == 0 && (ms_config_split_listen(run.admin, host, &port) < 0 || port == 0)) {
        snprintf(err, sizeof err, "--admin must be HOST:PORT with a port, not '%s'", run.admin);
        rc = MS_EINVAL;
    }
    if (rc < 0) {
        fprintf(stderr, "microshop run: %s\n", err);
        return 2;
    }
    cfg.admin = run.admin;
    run.data = data;
    set_secrets();
    /* every process exports its spans to the gateway's receiver, for the ops console (/ops),
     * unless the user sends them to a collector of their own */
    const char *otlp = getenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    if (!(otlp && *otlp)) {
        char endpoint[96];
        snprintf(endpoint, sizeof endpoint, "http://%s", run.admin);
        setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint, 1);
    }
    run.loop = uv_default_loop();
    signal(SIGPIPE, SIG_IGN);
    uv_signal_init(run.loop, &run.sigint);
    uv_signal_init(run.loop, &run.sigterm);
    uv_signal_start(&run.sigint, on_signal, SIGINT);
    uv_signal_start(&run.sigterm, on_signal, SIGTERM);
    uv_timer_init(run.loop, &run.ready_timer);
    uv_check_t check;
    uv_check_init(run.loop, &check);
    uv_check_start(&check, on_check);
    uv_unref((uv_handle_t *)&check);
    if (sup_start(run.loop, &cfg) < 0) {
        close_own_handles();
        uv_close((uv_handle_t *)&check, on_closed);
        uv_run(run.loop, UV_RUN_DEFAULT);
        uv_loop_close(run.loop);
        return 1;
    }
    uv_timer_start(&run.ready_timer, on_ready_timer, 50, 100);
    uv_run(run.loop, UV_RUN_DEFAULT);
    uv_loop_close(run.loop);
    sup_free();
    return sup_status();
}
