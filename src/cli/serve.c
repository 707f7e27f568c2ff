/* `microshop serve TARGET` and `microshop migrate TARGET`: one component, as a pod runs it. */
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/obs/trace.h"
#include "runtime/core/banned.h"

static const ms_service *target_arg(const char *cmd, int argc, char **argv)
{
    if (argc < 3 || argv[2][0] == '-') {
        fprintf(stderr, "usage: microshop %s TARGET [flags]   (targets:", cmd);
        for (int i = 0; ms_targets[i]; i++)
            fprintf(stderr, " %s", ms_targets[i]->name);
        fprintf(stderr, "; see microshop help %s)\n", cmd);
        return NULL;
    }
    const ms_service *svc = ms_target_find(argv[2]);
    if (!svc)
        fprintf(stderr, "microshop %s: unknown target '%s'\n", cmd, argv[2]);
    return svc;
}

/* Opens one connection and applies the pending migrations. */
static int migrate(const ms_service *svc, const ms_service_env *env, bool verbose)
{
    ms_db_conn *c = NULL;
    int rc = ms_db_open(env->db, false, &c);
    if (rc < 0) {
        ms_log(MS_LOG_ERROR, "cannot open the database", "error", ms_strerror(rc), NULL);
        return 1;
    }
    int applied = 0;
    rc = ms_db_migrate(c, svc->migrations, svc->nmigrations, &applied);
    if (rc < 0) {
        ms_log(MS_LOG_ERROR, "migration failed", "error", ms_db_errmsg(c), NULL);
        ms_db_close(c);
        return 1;
    }
    ms_db_close(c);
    if (svc->migrate_more && svc->migrate_more(env) < 0)
        return 1;
    char n[16], total[16];
    snprintf(n, sizeof n, "%d", applied);
    snprintf(total, sizeof total, "%zu", svc->nmigrations);
    ms_log(MS_LOG_INFO, "migrations applied", "#applied", n, "#schema_version", total, NULL);
    if (verbose)
        printf("%s: %d migration(s) applied, schema at version %zu\n", svc->name, applied,
               svc->nmigrations);
    return 0;
}

int cmd_migrate(int argc, char **argv)
{
    const ms_service *svc = target_arg("migrate", argc, argv);
    if (!svc)
        return 2;
    serve_options o;
    ms_server_config server;
    ms_db_config db;
    int rc = options_parse(&o, svc, false, argc, argv, 3, &server, &db);
    if (rc)
        return rc == 1 ? 0 : rc;
    ms_service_env env = {.db = &db, .data_dir = o.data, .server = &server};
    return migrate(svc, &env, true);
}

/* Under `microshop run` a child dies with its supervisor instead of lingering on the port. */
static void follow_supervisor(void)
{
    const char *parent = getenv("MICROSHOP_PARENT_PID");
    if (!parent)
        return;
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != (pid_t)atoi(parent))
        exit(1); /* the supervisor died before the line above */
}

int cmd_routes(int argc, char **argv)
{
    const ms_service *svc = target_arg("routes", argc, argv);
    if (!svc)
        return 2;
    ms_router *router = ms_router_new();
    if (svc->add_routes(router) < 0)
        MS_BUG("a service route template is malformed");
    for (int i = 0; i < ms_router_count(router); i++)
        printf("%s %s\n", ms_router_route(router, i)->method, ms_router_route(router, i)->template);
    /* the gateway's /metrics and /admin/log-level are on its admin listener, never the public
     * one */
    printf("GET /health\nGET /ready\n%s",
           svc == &ms_gateway_service
               ? ""
               : "GET /metrics\nGET /admin/log-level\nPUT /admin/log-level\n");
    ms_router_free(router);
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    const ms_service *svc = target_arg("serve", argc, argv);
    if (!svc)
        return 2;
    serve_options o;
    ms_server_config server;
    ms_db_config db;
    int rc = options_parse(&o, svc, true, argc, argv, 3, &server, &db);
    if (rc)
        return rc == 1 ? 0 : rc;
    follow_supervisor();
    if (ms_trace_init(svc->name) < 0)
        return 2; /* the setting was logged by name */
    /* Large blocks (a password hash takes 19 MiB) must go back to the system when freed, not
     * stay in a heap: a fixed mmap threshold stops glibc from raising it after the first one. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    /* ...but small frees must not hand pages back one by one: each trim is an madvise() with a
     * TLB shootdown on every core, which cost a fifth of the CPU of an order POST load. */
    mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
    /* An arena per thread (loops, event-store writer, projector, relay): with two shared
     * arenas, malloc's lock waits were a tenth of a loop's time under an order POST load;
     * measured, eight cost no idle memory (4.2 MB either way). */
    mallopt(M_ARENA_MAX, 8);
    ms_service_env env = {.db = &db, .data_dir = o.data, .server = &server};
    if (migrate(svc, &env, false) != 0)
        return 1;
    ms_router *router = ms_router_new();
    if (svc->add_routes(router) < 0)
        MS_BUG("a service route template is malformed");
    if (svc->start && (rc = svc->start(&env)) < 0) {
        ms_log(MS_LOG_ERROR, "cannot start the service", "error", ms_strerror(rc), NULL);
        ms_router_free(router);
        return 1;
    }
    rc = ms_server_run(&server, router, &db, &svc->loop_hooks);
    if (svc->stop)
        svc->stop();
    ms_trace_shutdown(2000); /* after every thread that ends spans */
    ms_router_free(router);
    return rc;
}
