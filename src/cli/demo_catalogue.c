/* The demo catalogue `microshop run` adds to the inventory; see demo_catalogue.h. */
#include <http_parser.h>
#include <stdio.h>
#include <string.h>

#include "cli/demo_catalogue.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/http/client.h"
#include "runtime/core/banned.h"

static const struct {
    const char *sku, *name;
    int price_cents, stock;
} products[] = {
    {"MS-TEE-001", "microshop T-shirt", 1999, 100},
    {"MS-MUG-001", "Event-sourced mug", 1299, 50},
    {"MS-HOOD-001", "Hoodie, CQRS edition", 4999, 25},
    {"MS-STICK-001", "Sticker pack", 499, 500},
    {"MS-CAP-001", "Circuit-breaker cap", 2499, 3}, /* starts below the low-stock threshold */
    {"MS-BOOK-001", "The saga handbook", 3999, 10},
};
enum { NPRODUCTS = sizeof products / sizeof products[0], SEED_TIMEOUT_MS = 10000 };

static struct {
    ms_http_client *client;
    uv_timer_t reaper; /* frees the client outside its own callback */
    demo_catalogue_cb done;
    void *arg;
    char admin[MS_UUID_LEN + 1];
    ms_http_header headers[2];
    char bodies[NPRODUCTS][256];
    ms_http_client_req reqs[NPRODUCTS];
} demo;

static void on_reaper_closed(uv_handle_t *h)
{
    (void)h;
}

static void reap(uv_timer_t *t)
{
    ms_http_client_free(demo.client);
    demo.client = NULL;
    uv_close((uv_handle_t *)t, on_reaper_closed);
}

static void on_all(const ms_http_client_result *results, int n, void *arg)
{
    (void)arg;
    int created = 0, existing = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        int status = results[i].err == 0 ? results[i].resp.status : 0;
        if (status == 201)
            created++;
        else if (status == 409)
            existing++;
        else
            failed++;
    }
    uv_timer_start(&demo.reaper, reap, 0, 0);
    demo.done(created, existing, failed, demo.arg);
}

int demo_catalogue_seed(uv_loop_t *loop, const char *listen, demo_catalogue_cb done, void *arg)
{
    char spec[96];
    snprintf(spec, sizeof spec, "http://%s", listen);
    ms_http_upstream_list list;
    int rc = ms_http_upstream_parse(spec, &list);
    if (rc < 0)
        return rc;
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    demo.client = ms_http_client_new(loop, &cfg);
    if ((rc = ms_http_client_add_upstream(demo.client, "inventory", &list)) < 0) {
        ms_http_client_free(demo.client);
        demo.client = NULL;
        return rc;
    }
    uv_timer_init(loop, &demo.reaper);
    demo.done = done;
    demo.arg = arg;
    ms_uuid_new(demo.admin);
    demo.headers[0] = (ms_http_header){"X-User-Id", demo.admin};
    demo.headers[1] = (ms_http_header){"X-User-Role", "admin"};
    uint64_t deadline = uv_now(loop) + SEED_TIMEOUT_MS;
    for (int i = 0; i < NPRODUCTS; i++) {
        int len =
            snprintf(demo.bodies[i], sizeof demo.bodies[i],
                     "{\"sku\":\"%s\",\"name\":\"%s\",\"price_cents\":%d,"
                     "\"currency\":\"EUR\",\"stock\":%d}",
                     products[i].sku, products[i].name, products[i].price_cents, products[i].stock);
        /* a product is keyed by its SKU: a repeat is a harmless 409, so retries are safe */
        demo.reqs[i] = (ms_http_client_req){.upstream = "inventory",
                                            .method = HTTP_POST,
                                            .path = "/api/v1/products",
                                            .headers = demo.headers,
                                            .nheaders = 2,
                                            .content_type = "application/json",
                                            .body = demo.bodies[i],
                                            .body_len = (size_t)len,
                                            .deadline = deadline,
                                            .idempotent = true};
    }
    if ((rc = ms_http_client_all(demo.client, demo.reqs, NPRODUCTS, on_all, NULL)) < 0) {
        ms_http_client_free(demo.client);
        demo.client = NULL;
        uv_close((uv_handle_t *)&demo.reaper, on_reaper_closed);
    }
    return rc;
}
