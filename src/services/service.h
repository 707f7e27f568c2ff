/*
 * service.h — what a service target contributes to `microshop serve NAME`: its routes and its
 * schema. The runtime does the rest (listeners, pool, migrations at start, metrics, drain).
 */
#ifndef MS_SERVICE_H
#define MS_SERVICE_H

#include <stddef.h>

#include "runtime/db/db.h"
#include "runtime/http/router.h"
#include "runtime/http/server.h"

/* What a service's process-wide start sees. */
typedef struct ms_service_env {
    const ms_db_config *db;         /* its (migrated) database */
    const char *data_dir;           /* for further SQLite files */
    const ms_server_config *server; /* threads, timeouts */
} ms_service_env;

typedef struct ms_service {
    const char *name;
    const char *summary;
    int default_port;
    const ms_migration *migrations;
    size_t nmigrations;
    /* Adds the service's routes; 0 or MS_EINVAL. */
    int (*add_routes)(ms_router *r);
    /* Optional: migrates the service's further databases (the order read model); run by
     * `serve` and `migrate` after `migrations`. 0 or MS_E* (logged). */
    int (*migrate_more)(const ms_service_env *env);
    /* Optional: process-wide state (writer threads, projectors), started after the migrations
     * and stopped after every loop has drained; 0 or MS_E* (then the process exits 1). */
    int (*start)(const ms_service_env *env);
    void (*stop)(void);
    /* Optional: per-loop state. */
    ms_loop_hooks loop_hooks;
} ms_service;

extern const ms_service ms_user_service;
extern const ms_service ms_order_service;
extern const ms_service ms_inventory_service;
extern const ms_service ms_payment_service;
extern const ms_service ms_gateway_service;

#endif
