/*
 * service.h — what a service target contributes to `microshop serve NAME`: its routes and its
 * schema. The runtime does the rest (listeners, pool, migrations at start, metrics, drain).
 */
#ifndef MS_SERVICE_H
#define MS_SERVICE_H

#include <stddef.h>

#include "runtime/db.h"
#include "runtime/router.h"

typedef struct ms_service {
    const char *name;
    const char *summary;
    int default_port;
    const ms_migration *migrations;
    size_t nmigrations;
    /* Adds the service's routes; 0 or MS_EINVAL. */
    int (*add_routes)(ms_router *r);
} ms_service;

extern const ms_service ms_user_service;

#endif
