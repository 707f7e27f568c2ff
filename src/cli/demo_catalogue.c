/* The demo data `microshop run` adds to its services; see demo_catalogue.h. */
#include <http_parser.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/demo_catalogue.h"
#include "runtime/auth/jwt.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/http/client.h"
#include "runtime/http/identity.h"
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

static const char CUSTOMER_BODY[] =
    "{\"email\":\"" DEMO_CUSTOMER_EMAIL "\",\"name\":\"Demo Customer\","
    "\"password\":\"" DEMO_CUSTOMER_PASSWORD "\"}";
static const char SIGN_IN_BODY[] =
    "{\"email\":\"" DEMO_CUSTOMER_EMAIL "\",\"password\":\"" DEMO_CUSTOMER_PASSWORD "\"}";

static struct {
    ms_http_client *client;
    uv_timer_t reaper; /* frees the client outside its own callback */
    demo_catalogue_cb done;
    void *arg;
    demo_result result;
    uint64_t deadline;
    char admin[MS_UUID_LEN + 1];
    char sig[MS_IDENTITY_SIG_MAX];
    ms_http_header headers[3];
    char bodies[NPRODUCTS][256];
    ms_http_client_req reqs[NPRODUCTS + 1]; /* the products, then the customer */
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

static void finish(void)
{
    uv_timer_start(&demo.reaper, reap, 0, 0);
    demo.done(&demo.result, demo.arg);
}

/* The subject of the demo customer's token: its id. The key is this process's own
 * MICROSHOP_JWT_SECRET, which `run` sets for its children. */
static void on_signed_in(int err, const ms_http_client_resp *resp, void *arg)
{
    (void)arg;
    const char *secret = getenv("MICROSHOP_JWT_SECRET");
    json_t *doc = err == 0 && resp->status == 200 ? json_loads(resp->body, 0, NULL) : NULL;
    const char *token = json_string_value(json_object_get(doc, "access_token"));
    ms_jwt_keys *keys = NULL;
    ms_jwt_claims claims;
    const char *why;
    if (token && secret && ms_jwt_keys_hs256(secret, strlen(secret), &keys) == 0 &&
        ms_jwt_verify(keys, token, strlen(token), &(ms_jwt_verify_opts){0}, &claims, &why) == 0)
        memcpy(demo.result.customer_id, claims.sub, sizeof claims.sub);
    ms_jwt_keys_free(keys);
    json_decref(doc);
    finish();
}

static void on_all(const ms_http_client_result *results, int n, void *arg)
{
    (void)arg;
    for (int i = 0; i < NPRODUCTS; i++) {
        int status = results[i].err == 0 ? results[i].resp.status : 0;
        if (status == 201)
            demo.result.created++;
        else if (status == 409)
            demo.result.existing++;
        else
            demo.result.failed++;
    }
    const ms_http_client_resp *customer =
        n > NPRODUCTS && results[NPRODUCTS].err == 0 ? &results[NPRODUCTS].resp : NULL;
    if (customer && customer->status == 201) {
        json_t *doc = json_loads(customer->body, 0, NULL);
        const char *id = json_string_value(json_object_get(doc, "id"));
        if (id && ms_uuid_valid(id))
            memcpy(demo.result.customer_id, id, MS_UUID_LEN + 1);
        json_decref(doc);
    } else if (customer && customer->status == 409) {
        ms_http_client_req in = {.upstream = "user",
                                 .method = HTTP_POST,
                                 .path = "/api/v1/auth/token",
                                 .content_type = "application/json",
                                 .body = SIGN_IN_BODY,
                                 .body_len = sizeof SIGN_IN_BODY - 1,
                                 .deadline = demo.deadline,
                                 .idempotent = true};
        if (ms_http_client_request(demo.client, &in, on_signed_in, NULL) == 0)
            return;
    }
    finish();
}

/* Adds an upstream named `name` at "HOST:PORT" to the demo's client. */
static int add_upstream(const char *name, const char *listen)
{
    char spec[96];
    snprintf(spec, sizeof spec, "http://%s", listen);
    ms_http_upstream_list list;
    int rc = ms_http_upstream_parse(spec, &list);
    return rc < 0 ? rc : ms_http_client_add_upstream(demo.client, name, &list);
}

int demo_catalogue_seed(uv_loop_t *loop, const char *inventory, const char *user,
                        demo_catalogue_cb done, void *arg)
{
    ms_http_client_config cfg;
    ms_http_client_config_defaults(&cfg);
    memset(&demo.result, 0, sizeof demo.result);
    demo.client = ms_http_client_new(loop, &cfg);
    int rc = add_upstream("inventory", inventory);
    if (rc == 0)
        rc = add_upstream("user", user);
    ms_uuid_new(demo.admin);
    int nheaders = rc < 0 ? rc
                          : ms_identity_headers(demo.admin, "admin", "POST", "/api/v1/products",
                                                demo.sig, demo.headers);
    if (nheaders < 0) {
        ms_http_client_free(demo.client);
        demo.client = NULL;
        return MS_EINVAL;
    }
    uv_timer_init(loop, &demo.reaper);
    demo.done = done;
    demo.arg = arg;
    uint64_t deadline = uv_now(loop) + SEED_TIMEOUT_MS;
    demo.deadline = deadline;
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
                                            .nheaders = nheaders,
                                            .content_type = "application/json",
                                            .body = demo.bodies[i],
                                            .body_len = (size_t)len,
                                            .deadline = deadline,
                                            .idempotent = true};
    }
    /* registering is not idempotent, but a repeat is a harmless 409 */
    demo.reqs[NPRODUCTS] = (ms_http_client_req){.upstream = "user",
                                                .method = HTTP_POST,
                                                .path = "/api/v1/users",
                                                .content_type = "application/json",
                                                .body = CUSTOMER_BODY,
                                                .body_len = sizeof CUSTOMER_BODY - 1,
                                                .deadline = deadline,
                                                .idempotent = true};
    if ((rc = ms_http_client_all(demo.client, demo.reqs, NPRODUCTS + 1, on_all, NULL)) < 0) {
        ms_http_client_free(demo.client);
        demo.client = NULL;
        uv_close((uv_handle_t *)&demo.reaper, on_reaper_closed);
    }
    return rc;
}
