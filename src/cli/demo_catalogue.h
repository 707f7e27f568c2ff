/*
 * demo_catalogue.h — `microshop run` seeds its services through their public APIs so that the
 * examples it prints work: a small demo catalogue in the inventory (POST /api/v1/products as
 * an admin) and a demo customer in the user service (POST /api/v1/users). What is there
 * already (a second run on the same data) answers 409 and is left as it is; the demo customer's
 * id is then found by signing in (POST /api/v1/auth/token, the token's subject).
 * Supervisor loop thread only.
 */
#ifndef MS_DEMO_CATALOGUE_H
#define MS_DEMO_CATALOGUE_H

#include <uv.h>

#include "runtime/core/id.h"

#define DEMO_CUSTOMER_EMAIL    "demo@microshop.example"
#define DEMO_CUSTOMER_PASSWORD "microshop-demo-password"

typedef struct demo_result {
    int created, existing, failed;     /* products added, there already, not added */
    char customer_id[MS_UUID_LEN + 1]; /* "" when the demo customer is unknown */
} demo_result;

typedef void (*demo_catalogue_cb)(const demo_result *r, void *arg);

/* Starts seeding the inventory and the user service listening at `inventory` and `user`
 * ("HOST:PORT"); `done` is called once, on the loop, within about ten seconds. 0, or
 * MS_EINVAL when an address is malformed. */
int demo_catalogue_seed(uv_loop_t *loop, const char *inventory, const char *user,
                        demo_catalogue_cb done, void *arg);

#endif
