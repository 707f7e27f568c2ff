/*
 * users.c — register, read and rename users.
 *
 * Registration hashes the password with argon2id (OWASP: 19 MiB, 2 passes, 1 lane) on the
 * thread pool, never on a loop thread, then writes the user and its `user.created` outbox
 * row in one transaction: the event exists exactly when the user does.
 */
#include <argon2.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore/relay.h"
#include "eventstore/outbox.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/http/http_json.h"
#include "runtime/http/identity.h"
#include "runtime/http/problem.h"
#include "runtime/http/server.h"
#include "runtime/json/json.h"
#include "services/user/user_internal.h"
#include "runtime/core/banned.h"

enum { ARGON2_T = 2, ARGON2_M_KIB = 19456, ARGON2_P = 1, SALT_LEN = 16, HASH_LEN = 32 };

static const char SELECT_USER[] =
    "SELECT id, email, name, created_at, updated_at FROM users WHERE id = $1";

/* Writes the public view of a user (never the password hash) from a SELECT_USER row. Written
 * by hand: this is the hottest answer of the service. */
static void put_user(ms_buf *out, const ms_db_result *r)
{
    static const char *const keys[] = {
        "{\"id\":", ",\"email\":", ",\"name\":", ",\"created_at\":", ",\"updated_at\":"};
    for (int i = 0; i < 5; i++) {
        ms_buf_adds(out, keys[i]);
        ms_json_put_string(out, ms_db_get(r, 0, i));
    }
    ms_buf_add(out, "}", 1);
}

/* Reads one user as JSON text into `out`. */
static int load_user(ms_db_conn *c, const char *id, ms_buf *out)
{
    ms_db_result *r = NULL;
    const char *params[] = {id};
    int rc = ms_db_exec(c, SELECT_USER, 1, params, &r);
    if (rc == 0 && ms_db_nrows(r) == 0)
        rc = MS_ENOTFOUND;
    if (rc == 0)
        put_user(out, r);
    ms_db_result_free(r);
    return rc;
}

int user_exists(ms_db_conn *c, const char *id)
{
    ms_db_result *r = NULL;
    const char *params[] = {id};
    int rc = ms_db_exec(c, "SELECT 1 FROM users WHERE id = $1", 1, params, &r);
    if (rc == 0 && ms_db_nrows(r) == 0)
        rc = MS_ENOTFOUND;
    ms_db_result_free(r);
    return rc;
}

static int write_outbox(ms_db_conn *c, const char *aggregate_id, const char *type, json_t *payload,
                        const char *now)
{
    return ms_outbox_write(c, "user", aggregate_id, type, payload, now);
}

static void release_result(void *buf)
{
    ms_buf_release(buf);
}

/* The head of every call; its result is released with the request, whatever the answer. */
static void call_init(ms_http_request *req, void *call, size_t size, const char *id)
{
    user_call *k = call;
    memset(k, 0, size);
    k->req = req;
    k->id = id;
    ms_time_now(k->now);
    ms_arena_on_reset(&req->arena, release_result, &k->result);
}

int user_call_begin(ms_http_request *req, void *call, size_t size)
{
    const char *id = ms_http_param(req, "id");
    int rc = ms_identity_require_self(req, id);
    if (rc == 0 && !ms_uuid_valid(id)) {
        rc = MS_ENOTFOUND;
        ms_problem_from_error(req, rc, "no such user");
    }
    if (rc == 0)
        call_init(req, call, size, id);
    return rc;
}

void user_answer(user_call *k, int rc, int status)
{
    ms_http_request *req = k->req;
    if (rc == 0) {
        ms_http_respond(req, status, "application/json", k->result.p, k->result.n);
    } else if (rc == MS_ECONFLICT) {
        json_t *errors = json_array();
        ms_field_error(errors, "email", "is already registered");
        ms_problem_fields_from_error(req, rc, "a user with this email already exists", errors);
    } else {
        if (ms_http_status_for(rc) >= 500)
            ms_log(MS_LOG_ERROR, "user call failed", "endpoint",
                   req->route ? req->route->template : "", "error", ms_strerror(rc), NULL);
        ms_problem_from_error(req, rc, rc == MS_ENOTFOUND ? "no such user" : NULL);
    }
}

/* ---- POST /api/v1/users ---- */

typedef struct {
    user_call base; /* base.id points at new_id */
    char new_id[MS_UUID_LEN + 1];
    uv_work_t hash_job;
    char *email, *email_key, *name, *password;
    char encoded[160];
    int rc;
} create_call;

static int email_taken_work(ms_db_conn *c, void *arg)
{
    create_call *k = arg;
    ms_db_result *r = NULL;
    const char *params[] = {k->email_key};
    int rc = ms_db_exec(c, "SELECT 1 FROM users WHERE email_key = $1", 1, params, &r);
    if (rc == 0 && ms_db_nrows(r) > 0)
        rc = MS_ECONFLICT;
    ms_db_result_free(r);
    return rc;
}

static int insert_work(ms_db_conn *c, void *arg)
{
    create_call *k = arg;
    int rc = ms_outbox_begin(c);
    if (rc < 0)
        return rc;
    const char *params[] = {k->new_id, k->email, k->email_key, k->name, k->encoded, k->base.now};
    rc = ms_db_exec(c,
                    "INSERT INTO users (id, email, email_key, name, password_hash, created_at, "
                    "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    6, params, NULL);
    if (rc == 0) {
        json_t *event = json_pack("{s:s, s:s, s:s, s:s}", "user_id", k->new_id, "email", k->email,
                                  "name", k->name, "created_at", k->base.now);
        rc = write_outbox(c, k->new_id, "user.created", event, k->base.now);
        json_decref(event);
    }
    if (rc == 0)
        rc = load_user(c, k->new_id, &k->base.result);
    return ms_db_end(c, rc);
}

static void insert_done(int rc, void *arg)
{
    create_call *k = arg;
    if (rc == 0) {
        ms_relay_kick(user_relay); /* user.created is committed: publish it now */
        char *location = ms_arena_printf(&k->base.req->arena, "/api/v1/users/%s", k->new_id);
        ms_http_set_header(k->base.req, "Location", location);
    }
    user_answer(&k->base, rc, 201);
}

static void hash_work(uv_work_t *w)
{
    create_call *k = w->data;
    unsigned char salt[SALT_LEN];
    ms_random_bytes(salt, sizeof salt);
    size_t plen = strlen(k->password);
    k->rc = argon2id_hash_encoded(ARGON2_T, ARGON2_M_KIB, ARGON2_P, k->password, plen, salt,
                                  sizeof salt, HASH_LEN, k->encoded, sizeof k->encoded);
    explicit_bzero(k->password, plen);
}

static void hash_done(uv_work_t *w, int status)
{
    create_call *k = w->data;
    ms_http_request *req = k->base.req;
    if (status < 0 || k->rc != ARGON2_OK) {
        ms_log(MS_LOG_ERROR, "password hashing failed", "error",
               status < 0 ? "cancelled" : argon2_error_message(k->rc), NULL);
        ms_problem_from_error(req, MS_EINTERNAL, "the password could not be hashed");
    } else { /* a thread-pool callback runs outside the request: its insert joins its trace */
        const ms_trace_ctx *was = ms_trace_current();
        ms_trace_set_current(req->trace.valid ? &req->trace : NULL);
        ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, insert_work, insert_done, k);
        ms_trace_set_current(was);
    }
}

static void email_taken_done(int rc, void *arg)
{
    create_call *k = arg;
    k->hash_job.data = k;
    if (rc < 0)
        user_answer(&k->base, rc, 0);
    else if (uv_queue_work(&k->base.req->loop->uv, &k->hash_job, hash_work, hash_done) < 0)
        ms_problem_from_error(k->base.req, MS_EINTERNAL, "the password could not be hashed");
}

/* The password's copy never outlives the request, however it ends (the hash wipes it sooner,
 * on the worker, once it has been used). */
static void wipe_password(void *arg)
{
    create_call *k = arg;
    explicit_bzero(k->password, strlen(k->password));
}

static int check_create(ms_http_request *req, json_t *body)
{
    static const ms_json_field fields[] = {
        {"email", MS_JSON_STRING, true, false},
        {"name", MS_JSON_STRING, true, false},
        {"password", MS_JSON_STRING, true, false},
    };
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, 3, "", malformed, invalid);
    const char *email = json_string_value(json_object_get(body, "email"));
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *password = json_string_value(json_object_get(body, "password"));
    const char *why;
    if (email && (why = user_check_email(email)))
        ms_field_error(invalid, "email", "%s", why);
    if (name && (why = user_check_name(name)))
        ms_field_error(invalid, "name", "%s", why);
    if (password && (why = user_check_password(password)))
        ms_field_error(invalid, "password", "%s", why);
    int rc = ms_http_reject_fields(req, malformed, invalid);
    if (rc == 0 && (!email || !name || !password)) /* all three are required fields */
        MS_BUG("user_create: a required field passed validation unset");
    return rc;
}

static create_call *create_call_new(ms_http_request *req, json_t *body)
{
    ms_arena *a = &req->arena;
    create_call *k = ms_arena_alloc(a, sizeof *k);
    call_init(req, k, sizeof *k, k->new_id);
    ms_uuid_new(k->new_id);
    const char *email = json_string_value(json_object_get(body, "email"));
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *password = json_string_value(json_object_get(body, "password"));
    k->email = ms_arena_strndup(a, email, strlen(email));
    k->email_key = ms_arena_strndup(a, email, strlen(email));
    for (char *p = k->email_key; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    k->name = ms_arena_strndup(a, name, strlen(name));
    k->password = ms_arena_strndup(a, password, strlen(password));
    ms_arena_on_reset(a, wipe_password, k);
    /* the body held the password too: drop the parsed copy now, not with the request, and do
     * not leave it in a buffer that outlives the request */
    json_object_del(body, "password");
    explicit_bzero((char *)req->body, req->body_len);
    return k;
}

void user_create(ms_http_request *req)
{
    json_t *body;
    int rc = ms_http_json_body(req, &body);
    if (rc == 0)
        rc = check_create(req, body);
    if (rc == 0) {
        create_call *k = create_call_new(req, body);
        /* a cheap read first spares the 19 MiB hash for the common duplicate; the unique
         * index still decides races */
        ms_db_pool_run(req->loop->db, MS_DB_READ, req->deadline, email_taken_work, email_taken_done,
                       k);
    }
}

/* ---- GET /api/v1/users/{id} ---- */

void user_call_done(int rc, void *arg)
{
    user_answer(arg, rc, 200);
}

static void get_done(int rc, ms_db_result *r, void *arg)
{
    user_call *k = arg;
    if (rc == 0 && ms_db_nrows(r) == 0)
        rc = MS_ENOTFOUND;
    if (rc == 0)
        put_user(&k->result, r);
    ms_db_result_free(r);
    user_answer(k, rc, 200);
}

/* One statement: sent without a thread (pipelined on PostgreSQL, inline on SQLite). */
void user_get(ms_http_request *req)
{
    user_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    if (user_call_begin(req, k, sizeof *k) == 0) {
        const char *params[] = {k->id};
        ms_db_pool_query(req->loop->db, req->deadline, SELECT_USER, 1, params, get_done, k);
    }
}

/* ---- PATCH /api/v1/users/{id} ---- */

typedef struct {
    user_call base;
    const char *name; /* NULL: nothing to change */
} patch_call;

static int patch_work(ms_db_conn *c, void *arg)
{
    patch_call *k = arg;
    const char *id = k->base.id, *now = k->base.now;
    if (!k->name)
        return load_user(c, id, &k->base.result);
    int rc = ms_outbox_begin(c);
    if (rc < 0)
        return rc;
    ms_db_result *r = NULL;
    const char *params[] = {id, k->name, now};
    rc = ms_db_exec(c, "UPDATE users SET name = $2, updated_at = $3 WHERE id = $1", 3, params, &r);
    if (rc == 0 && ms_db_affected(r) == 0)
        rc = MS_ENOTFOUND;
    ms_db_result_free(r);
    if (rc == 0) {
        json_t *event =
            json_pack("{s:s, s:s, s:s}", "user_id", id, "name", k->name, "updated_at", now);
        rc = write_outbox(c, id, "user.updated", event, now);
        json_decref(event);
    }
    if (rc == 0)
        rc = load_user(c, id, &k->base.result);
    return ms_db_end(c, rc);
}

static void patch_done(int rc, void *arg)
{
    patch_call *k = arg;
    if (rc == 0 && k->name)
        ms_relay_kick(user_relay); /* user.updated is committed */
    user_call_done(rc, arg);
}

/* The new name, when the body gives one, and whether the body is acceptable. */
static int read_patch(patch_call *k, json_t *body)
{
    static const ms_json_field fields[] = {{"name", MS_JSON_STRING, false, false}};
    json_t *malformed = json_array(), *invalid = json_array();
    ms_json_check(body, fields, 1, "", malformed, invalid);
    k->name = json_string_value(json_object_get(body, "name")); /* the body lives as long */
    const char *why;
    if (k->name && (why = user_check_name(k->name)))
        ms_field_error(invalid, "name", "%s", why);
    return ms_http_reject_fields(k->base.req, malformed, invalid);
}

void user_patch(ms_http_request *req)
{
    patch_call *k = ms_arena_alloc(&req->arena, sizeof *k);
    json_t *body;
    int rc = user_call_begin(req, k, sizeof *k);
    if (rc == 0)
        rc = ms_http_json_body(req, &body);
    if (rc == 0)
        rc = read_patch(k, body);
    if (rc == 0)
        ms_db_pool_run(req->loop->db, MS_DB_WRITE, req->deadline, patch_work, patch_done, k);
}
