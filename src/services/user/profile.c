/*
 * profile.c — GET and PUT /api/v1/users/{id}/profile: `{phone, address}`.
 * PUT replaces the whole profile; a field left out becomes null. A user without a stored
 * profile reads as all nulls.
 */
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/http/http_json.h"
#include "runtime/http/problem.h"
#include "runtime/http/server.h"
#include "runtime/json/json.h"
#include "services/common/rules.h"
#include "services/user/user_internal.h"
#include "runtime/core/banned.h"

typedef struct {
    user_call base;
    const char *phone, *line1, *city, *postal_code, *country; /* PUT: NULL for null */
} profile_call;

static json_t *nullable(const char *s)
{
    return s ? json_string(s) : json_null();
}

static int load_profile(ms_db_conn *c, const char *id, ms_buf *out)
{
    ms_db_result *r = NULL;
    const char *params[] = {id};
    int rc = ms_db_exec(c,
                        "SELECT p.phone, p.line1, p.city, p.postal_code, p.country, p.updated_at "
                        "FROM users u LEFT JOIN user_profiles p ON p.user_id = u.id "
                        "WHERE u.id = $1",
                        1, params, &r);
    if (rc == 0 && ms_db_nrows(r) == 0)
        rc = MS_ENOTFOUND;
    if (rc == 0) {
        json_t *address = json_null();
        if (ms_db_get(r, 0, 1))
            address = json_pack("{s:s, s:s, s:s, s:s}", "line1", ms_db_get(r, 0, 1), "city",
                                ms_db_get(r, 0, 2), "postal_code", ms_db_get(r, 0, 3), "country",
                                ms_db_get(r, 0, 4));
        ms_json_put_doc(out,
                        json_pack("{s:o, s:o, s:o}", "phone", nullable(ms_db_get(r, 0, 0)),
                                  "address", address, "updated_at", nullable(ms_db_get(r, 0, 5))));
    }
    ms_db_result_free(r);
    return rc;
}

static int get_work(ms_db_conn *c, void *arg)
{
    profile_call *k = arg;
    return load_profile(c, k->base.id, &k->base.result);
}

static int put_work(ms_db_conn *c, void *arg)
{
    profile_call *k = arg;
    int rc = ms_db_begin(c);
    if (rc < 0)
        return rc;
    rc = user_exists(c, k->base.id);
    if (rc == 0) {
        const char *params[] = {k->base.id,     k->phone,   k->line1,   k->city,
                                k->postal_code, k->country, k->base.now};
        rc = ms_db_exec(c,
                        "INSERT INTO user_profiles (user_id, phone, line1, city, postal_code, "
                        "country, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                        "ON CONFLICT (user_id) DO UPDATE SET phone = excluded.phone, "
                        "line1 = excluded.line1, city = excluded.city, "
                        "postal_code = excluded.postal_code, country = excluded.country, "
                        "updated_at = excluded.updated_at",
                        7, params, NULL);
    }
    if (rc == 0)
        rc = load_profile(c, k->base.id, &k->base.result);
    return ms_db_end(c, rc);
}

void user_profile_get(ms_http_request *req)
{
    profile_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    if (user_call_begin(req, k, sizeof *k) == 0)
        ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, get_work, user_call_done, k);
}

/* The body lives as long as the request: its strings are borrowed, not copied. */
static const char *string_of(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static int read_profile(profile_call *k, json_t *body)
{
    static const ms_json_field fields[] = {
        {"phone", MS_JSON_STRING, false, true},
        {"address", MS_JSON_OBJECT, false, true},
    };
    static const ms_json_field address_fields[] = {
        {"line1", MS_JSON_STRING, true, false},
        {"city", MS_JSON_STRING, true, false},
        {"postal_code", MS_JSON_STRING, true, false},
        {"country", MS_JSON_STRING, true, false},
    };
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, 2, "", malformed, invalid);
    json_t *address = json_object_get(body, "address");
    if (json_is_object(address))
        ms_json_check(address, address_fields, 4, "address.", malformed, invalid);
    else
        address = NULL;
    k->phone = string_of(body, "phone");
    k->line1 = string_of(address, "line1");
    k->city = string_of(address, "city");
    k->postal_code = string_of(address, "postal_code");
    k->country = string_of(address, "country");
    const char *why;
    if (k->phone && (why = user_check_phone(k->phone)))
        ms_field_error(invalid, "phone", "%s", why);
    if (k->line1 && (why = ms_rule_text(k->line1, 200)))
        ms_field_error(invalid, "address.line1", "%s", why);
    if (k->city && (why = ms_rule_text(k->city, 100)))
        ms_field_error(invalid, "address.city", "%s", why);
    if (k->postal_code && (why = ms_rule_postal_code(k->postal_code)))
        ms_field_error(invalid, "address.postal_code", "%s", why);
    if (k->country && (why = ms_rule_country(k->country)))
        ms_field_error(invalid, "address.country", "%s", why);
    return ms_http_reject_fields(k->base.req, malformed, invalid);
}

void user_profile_put(ms_http_request *req)
{
    profile_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    json_t *body;
    int rc = user_call_begin(req, k, sizeof *k);
    if (rc == 0)
        rc = ms_http_json_body(req, &body);
    if (rc == 0)
        rc = read_profile(k, body);
    if (rc == 0)
        ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, put_work, user_call_done, k);
}
