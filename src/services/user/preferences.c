/*
 * preferences.c — GET and PUT /api/v1/users/{id}/preferences:
 * `{language, currency, marketing_emails}`. PUT replaces them all; a field left out takes
 * its default (en, USD, false), which is also what a user without stored preferences reads.
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

static const char DEFAULT_LANGUAGE[] = "en", DEFAULT_CURRENCY[] = "USD";

typedef struct {
    user_call base;
    const char *language, *currency, *marketing_emails; /* PUT: "0" or "1" */
} preferences_call;

static int load_preferences(ms_db_conn *c, const char *id, ms_buf *out)
{
    ms_db_result *r = NULL;
    const char *params[] = {id};
    int rc = ms_db_exec(c,
                        "SELECT p.language, p.currency, p.marketing_emails, p.updated_at "
                        "FROM users u LEFT JOIN user_preferences p ON p.user_id = u.id "
                        "WHERE u.id = $1",
                        1, params, &r);
    if (rc == 0 && ms_db_nrows(r) == 0)
        rc = MS_ENOTFOUND;
    if (rc == 0) {
        const char *lang = ms_db_get(r, 0, 0), *cur = ms_db_get(r, 0, 1);
        const char *mail = ms_db_get(r, 0, 2), *updated = ms_db_get(r, 0, 3);
        ms_json_put_doc(out, json_pack("{s:s, s:s, s:b, s:o}", "language",
                                       lang ? lang : DEFAULT_LANGUAGE, "currency",
                                       cur ? cur : DEFAULT_CURRENCY, "marketing_emails",
                                       mail && strcmp(mail, "0") != 0, "updated_at",
                                       updated ? json_string(updated) : json_null()));
    }
    ms_db_result_free(r);
    return rc;
}

static int get_work(ms_db_conn *c, void *arg)
{
    preferences_call *k = arg;
    return load_preferences(c, k->base.id, &k->base.result);
}

static int put_work(ms_db_conn *c, void *arg)
{
    preferences_call *k = arg;
    int rc = ms_db_begin(c);
    if (rc < 0)
        return rc;
    rc = user_exists(c, k->base.id);
    if (rc == 0) {
        const char *params[] = {k->base.id, k->language, k->currency, k->marketing_emails,
                                k->base.now};
        rc = ms_db_exec(c,
                        "INSERT INTO user_preferences (user_id, language, currency, "
                        "marketing_emails, updated_at) VALUES ($1, $2, $3, $4, $5) "
                        "ON CONFLICT (user_id) DO UPDATE SET language = excluded.language, "
                        "currency = excluded.currency, "
                        "marketing_emails = excluded.marketing_emails, "
                        "updated_at = excluded.updated_at",
                        5, params, NULL);
    }
    if (rc == 0)
        rc = load_preferences(c, k->base.id, &k->base.result);
    return ms_db_end(c, rc);
}

void user_preferences_get(ms_http_request *req)
{
    preferences_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    if (user_call_begin(req, k, sizeof *k) == 0)
        ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, get_work, user_call_done, k);
}

/* The body lives as long as the request: its strings are borrowed, not copied. */
static int read_preferences(preferences_call *k, json_t *body)
{
    static const ms_json_field fields[] = {
        {"language", MS_JSON_STRING, false, false},
        {"currency", MS_JSON_STRING, false, false},
        {"marketing_emails", MS_JSON_BOOL, false, false},
    };
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, 3, "", malformed, invalid);
    const char *lang = json_string_value(json_object_get(body, "language"));
    const char *cur = json_string_value(json_object_get(body, "currency"));
    const char *why;
    if (lang && (why = user_check_language(lang)))
        ms_field_error(invalid, "language", "%s", why);
    if (cur && (why = ms_rule_currency(cur)))
        ms_field_error(invalid, "currency", "%s", why);
    k->language = lang ? lang : DEFAULT_LANGUAGE;
    k->currency = cur ? cur : DEFAULT_CURRENCY;
    k->marketing_emails = json_is_true(json_object_get(body, "marketing_emails")) ? "1" : "0";
    return ms_http_reject_fields(k->base.req, malformed, invalid);
}

void user_preferences_put(ms_http_request *req)
{
    preferences_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    json_t *body;
    int rc = user_call_begin(req, k, sizeof *k);
    if (rc == 0)
        rc = ms_http_json_body(req, &body);
    if (rc == 0)
        rc = read_preferences(k, body);
    if (rc == 0)
        ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, put_work, user_call_done, k);
}
