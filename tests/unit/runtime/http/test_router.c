/* test_router.c — router.c: {param} templates, HEAD, 405 Allow, strict segments, bad templates */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/core/error.h"
#include "runtime/http/router.h"
#include "runtime/core/banned.h"

static void h_a(ms_http_request *req)
{
    (void)req;
}

static void h_b(ms_http_request *req)
{
    (void)req;
}

/* A request as the connection code would hand it to the router. */
static void req_init(ms_http_request *req, int method, const char *path)
{
    memset(req, 0, sizeof *req);
    ms_arena_init(&req->arena);
    req->method = method;
    req->path = path;
    req->query = "";
}

/* Matches and returns the result; *route and allow are written. */
static ms_route_result match(const ms_router *r, ms_http_request *req, int method, const char *path,
                             const ms_route **route, char *allow, size_t allow_n)
{
    ms_arena_release(&req->arena);
    req_init(req, method, path);
    *route = (const ms_route *)(uintptr_t)1; /* must be overwritten */
    return ms_router_match(r, req, route, allow, allow_n);
}

static void test_literal_match(void **state)
{
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/health", h_a), 0);
    assert_int_equal(ms_router_add(r, "GET", "/api/v1/users", h_b), 0);
    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[64];

    assert_int_equal(match(r, &req, HTTP_GET, "/health", &route, allow, sizeof allow),
                     MS_ROUTE_FOUND);
    assert_non_null(route);
    assert_string_equal(route->template, "/health");
    assert_ptr_equal(route->handler, h_a);
    assert_int_equal(req.nparams, 0);

    assert_int_equal(match(r, &req, HTTP_GET, "/api/v1/users", &route, allow, sizeof allow),
                     MS_ROUTE_FOUND);
    assert_ptr_equal(route->handler, h_b);

    assert_int_equal(match(r, &req, HTTP_GET, "/api/v1/user", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_null(route);
    assert_int_equal(match(r, &req, HTTP_GET, "/healthz", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, &req, HTTP_GET, "/Health", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, &req, HTTP_GET, "/api", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

static void test_root_template(void **state)
{
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/", h_a), 0);
    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[64];
    assert_int_equal(match(r, &req, HTTP_GET, "/", &route, allow, sizeof allow), MS_ROUTE_FOUND);
    assert_string_equal(route->template, "/");
    assert_int_equal(match(r, &req, HTTP_GET, "/x", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, &req, HTTP_GET, "//", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

static void test_params_bound(void **state)
{
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/api/v1/users/{id}/orders/{order_id}", h_a), 0);
    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[64];
    assert_int_equal(
        match(r, &req, HTTP_GET, "/api/v1/users/u-42/orders/o%2F7", &route, allow, sizeof allow),
        MS_ROUTE_FOUND);
    assert_int_equal(req.nparams, 2);
    assert_string_equal(ms_http_param(&req, "id"), "u-42");
    assert_string_equal(ms_http_param(&req, "order_id"), "o%2F7");
    assert_null(ms_http_param(&req, "other"));
    assert_null(ms_http_param(&req, "{id}"));
    /* a parameter matches exactly one segment */
    assert_int_equal(
        match(r, &req, HTTP_GET, "/api/v1/users/a/b/orders/1", &route, allow, sizeof allow),
        MS_ROUTE_NOT_FOUND);
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

static void test_literal_and_param_siblings(void **state)
{
    /* the first added route wins: /users/me added before /users/{id} */
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/users/me", h_a), 0);
    assert_int_equal(ms_router_add(r, "GET", "/users/{id}", h_b), 0);
    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[64];
    assert_int_equal(match(r, &req, HTTP_GET, "/users/me", &route, allow, sizeof allow),
                     MS_ROUTE_FOUND);
    assert_ptr_equal(route->handler, h_a);
    assert_int_equal(req.nparams, 0);
    assert_int_equal(match(r, &req, HTTP_GET, "/users/you", &route, allow, sizeof allow),
                     MS_ROUTE_FOUND);
    assert_ptr_equal(route->handler, h_b);
    assert_string_equal(ms_http_param(&req, "id"), "you");
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

static void test_head_matches_get(void **state)
{
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/items/{id}", h_a), 0);
    assert_int_equal(ms_router_add(r, "POST", "/items", h_b), 0);
    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[64];
    assert_int_equal(match(r, &req, HTTP_HEAD, "/items/9", &route, allow, sizeof allow),
                     MS_ROUTE_FOUND);
    assert_ptr_equal(route->handler, h_a);
    assert_string_equal(ms_http_param(&req, "id"), "9");
    /* HEAD does not reach a POST-only route */
    assert_int_equal(match(r, &req, HTTP_HEAD, "/items", &route, allow, sizeof allow),
                     MS_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "POST");
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

static void test_bad_method_allow_list(void **state)
{
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/users/{id}", h_a), 0);
    assert_int_equal(ms_router_add(r, "PATCH", "/users/{id}", h_a), 0);
    assert_int_equal(ms_router_add(r, "DELETE", "/users/{id}", h_a), 0);
    assert_int_equal(ms_router_add(r, "POST", "/users", h_b), 0);
    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[64];
    assert_int_equal(match(r, &req, HTTP_PUT, "/users/1", &route, allow, sizeof allow),
                     MS_ROUTE_BAD_METHOD);
    assert_null(route);
    assert_string_equal(allow, "GET, HEAD, PATCH, DELETE");
    assert_int_equal(match(r, &req, HTTP_GET, "/users", &route, allow, sizeof allow),
                     MS_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "POST");
    /* an unknown path is 404, not 405, and leaves Allow empty */
    assert_int_equal(match(r, &req, HTTP_PUT, "/orders/1", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_string_equal(allow, "");
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

static void test_allow_list_no_duplicates(void **state)
{
    /* two templates matching the same path with the same method list GET once */
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/a/{x}", h_a), 0);
    assert_int_equal(ms_router_add(r, "GET", "/a/{y}", h_a), 0);
    assert_int_equal(ms_router_add(r, "PUT", "/a/{z}", h_a), 0);
    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[64];
    assert_int_equal(match(r, &req, HTTP_POST, "/a/1", &route, allow, sizeof allow),
                     MS_ROUTE_BAD_METHOD);
    assert_string_equal(allow, "GET, HEAD, PUT");
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

static void test_allow_list_truncated_safely(void **state)
{
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/a", h_a), 0);
    assert_int_equal(ms_router_add(r, "DELETE", "/a", h_a), 0);
    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[8];
    memset(allow, 'x', sizeof allow);
    assert_int_equal(match(r, &req, HTTP_POST, "/a", &route, allow, sizeof allow),
                     MS_ROUTE_BAD_METHOD);
    /* "GET, HEAD, DELETE" does not fit in 8 bytes: what is written stays NUL-terminated */
    assert_non_null(memchr(allow, '\0', sizeof allow));
    assert_string_equal(allow, "");
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

static void test_trailing_slash_no_match(void **state)
{
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/users/{id}", h_a), 0);
    assert_int_equal(ms_router_add(r, "GET", "/health", h_a), 0);
    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[64];
    assert_int_equal(match(r, &req, HTTP_GET, "/health/", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, &req, HTTP_GET, "/users/1/", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, &req, HTTP_GET, "/users/", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

static void test_extra_segments_no_match(void **state)
{
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/users/{id}", h_a), 0);
    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[64];
    assert_int_equal(match(r, &req, HTTP_GET, "/users/1/profile", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, &req, HTTP_GET, "/users", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, &req, HTTP_GET, "/x/users/1", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

static void test_empty_segments_no_match(void **state)
{
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/users/{id}/profile", h_a), 0);
    assert_int_equal(ms_router_add(r, "GET", "/a/b", h_a), 0);
    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[64];
    /* an empty segment never binds a parameter */
    assert_int_equal(match(r, &req, HTTP_GET, "/users//profile", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, &req, HTTP_GET, "//users/1/profile", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, &req, HTTP_GET, "/a//b", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, &req, HTTP_GET, "/a/b//", &route, allow, sizeof allow),
                     MS_ROUTE_NOT_FOUND);
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

static void test_malformed_templates_rejected(void **state)
{
    static const char *const bad[] = {
        "",                               /* empty */
        "users",                          /* not absolute */
        "//",                             /* empty segment */
        "/users//{id}",                   /* empty segment */
        "/users/",                        /* trailing slash */
        "/users/{id}/",                   /* trailing slash after a param */
        "/users/{}",                      /* empty parameter name */
        "/users/{id",                     /* unclosed */
        "/users/{id}x",                   /* text after a param */
        "/a/{p1}/{p2}/{p3}/{p4}/{p5}",    /* more than MS_HTTP_MAX_PARAMS */
        "/1/2/3/4/5/6/7/8/9/10/11/12/13", /* more than 12 segments */
    };
    ms_router *r = ms_router_new();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = ms_router_add(r, "GET", bad[i], h_a);
        if (rc != MS_EINVAL)
            fail_msg("template '%s': expected MS_EINVAL, got %d", bad[i], rc);
    }
    assert_int_equal(ms_router_count(r), 0);
    /* the limits themselves are fine */
    assert_int_equal(ms_router_add(r, "GET", "/a/{p1}/{p2}/{p3}/{p4}", h_a), 0);
    assert_int_equal(ms_router_add(r, "GET", "/1/2/3/4/5/6/7/8/9/10/11/12", h_a), 0);
    assert_int_equal(ms_router_count(r), 2);
    ms_router_free(r);
}

static void test_too_many_routes(void **state)
{
    ms_router *r = ms_router_new();
    char tmpl[32];
    for (int i = 0; i < MS_ROUTER_MAX_ROUTES; i++) {
        snprintf(tmpl, sizeof tmpl, "/r%d", i);
        assert_int_equal(ms_router_add(r, "GET", tmpl, h_a), 0);
    }
    assert_int_equal(ms_router_add(r, "GET", "/one-more", h_a), MS_EINVAL);
    assert_int_equal(ms_router_count(r), MS_ROUTER_MAX_ROUTES);
    ms_router_free(r);
}

static void test_route_index_dense(void **state)
{
    ms_router *r = ms_router_new();
    assert_int_equal(ms_router_add(r, "GET", "/a", h_a), 0);
    assert_int_equal(ms_router_add(r, "GET", "/bad/", h_a), MS_EINVAL); /* takes no index */
    assert_int_equal(ms_router_add(r, "POST", "/a", h_b), 0);
    assert_int_equal(ms_router_add(r, "GET", "/b/{id}", h_a), 0);
    assert_int_equal(ms_router_count(r), 3);
    for (int i = 0; i < 3; i++) {
        const ms_route *route = ms_router_route(r, i);
        assert_non_null(route);
        assert_int_equal(route->index, i);
    }
    assert_string_equal(ms_router_route(r, 1)->method, "POST");
    assert_string_equal(ms_router_route(r, 2)->template, "/b/{id}");
    assert_null(ms_router_route(r, 3));
    assert_null(ms_router_route(r, -1));

    ms_http_request req;
    req_init(&req, HTTP_GET, "/");
    const ms_route *route;
    char allow[64];
    assert_int_equal(match(r, &req, HTTP_POST, "/a", &route, allow, sizeof allow), MS_ROUTE_FOUND);
    assert_int_equal(route->index, 1);
    assert_ptr_equal(route, ms_router_route(r, 1));
    ms_arena_release(&req.arena);
    ms_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_match),
        cmocka_unit_test(test_root_template),
        cmocka_unit_test(test_params_bound),
        cmocka_unit_test(test_literal_and_param_siblings),
        cmocka_unit_test(test_head_matches_get),
        cmocka_unit_test(test_bad_method_allow_list),
        cmocka_unit_test(test_allow_list_no_duplicates),
        cmocka_unit_test(test_allow_list_truncated_safely),
        cmocka_unit_test(test_trailing_slash_no_match),
        cmocka_unit_test(test_extra_segments_no_match),
        cmocka_unit_test(test_empty_segments_no_match),
        cmocka_unit_test(test_malformed_templates_rejected),
        cmocka_unit_test(test_too_many_routes),
        cmocka_unit_test(test_route_index_dense),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
