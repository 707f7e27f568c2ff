/*
 * demo_catalogue.h — `microshop run` stocks the inventory with a small demo catalogue through
 * the service's public API (POST /api/v1/products as an admin), so that the examples it prints
 * have products to list and buy. A product whose SKU is already there (a second run on the same
 * data) answers 409 and is left as it is. Supervisor loop thread only.
 */
#ifndef MS_DEMO_CATALOGUE_H
#define MS_DEMO_CATALOGUE_H

#include <uv.h>

/* `created` products were added, `existing` were there already, `failed` could not be added. */
typedef void (*demo_catalogue_cb)(int created, int existing, int failed, void *arg);

/* Starts seeding the inventory listening at `listen` ("HOST:PORT"); `done` is called once, on
 * the loop, within about ten seconds. 0, or MS_EINVAL when `listen` is not an address. */
int demo_catalogue_seed(uv_loop_t *loop, const char *listen, demo_catalogue_cb done, void *arg);

#endif
