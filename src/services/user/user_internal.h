/*
 * user_internal.h — shared by the user service's files only.
 * Handlers run on loop threads; *_work functions run on a pooled connection's worker thread
 * and touch only their own context, never the request's answer.
 */
#ifndef MS_USER_INTERNAL_H
#define MS_USER_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "runtime/core/id.h"
#include "runtime/db/db.h"
#include "runtime/http/http.h"

/* The head of every call's context (a struct that starts with it, in the request's arena):
 * what a handler hands to its work function and to the done callback. Everything it holds
 * is released with the request's arena, so no path of a handler frees anything. */
typedef struct user_call {
    ms_http_request *req;
    const char *id;            /* the user */
    char now[MS_TIME_LEN + 1]; /* when the call was made, for timestamps */
    ms_buf result;             /* the answer's JSON text, written by the work */
} user_call;

/* handlers (users.c, profile.c, preferences.c) */
void user_create(ms_http_request *req);
void user_get(ms_http_request *req);
void user_patch(ms_http_request *req);
void user_profile_get(ms_http_request *req);
void user_profile_put(ms_http_request *req);
void user_preferences_get(ms_http_request *req);
void user_preferences_put(ms_http_request *req);
/* auth_token.c: POST /api/v1/auth/token, and its configuration (read at start; a bad value
 * exits 2) */
void user_token(ms_http_request *req);
int user_token_start(void);
void user_token_stop(void);

/* validation (validate.c; the rules shared with other services are in services/common/rules.h):
 * each returns NULL when valid, else the message for the field */
const char *user_check_email(const char *email);
const char *user_check_name(const char *name);
const char *user_check_password(const char *password);
const char *user_check_phone(const char *phone);
const char *user_check_language(const char *language);

/* service.c: the outbox relay (kick it after a commit that wrote outbox rows) */
struct ms_relay;
extern struct ms_relay *user_relay;

/* users.c */
/* 0 when the user exists, MS_ENOTFOUND, or a database error (worker thread). */
int user_exists(ms_db_conn *c, const char *id);
/* For a route with {id}: when the caller may reach that user, zeroes `call` (`size` bytes of
 * a struct starting with user_call, in the request's arena), sets req, id and now, ties the
 * result's release to the request, and returns 0; otherwise answers 401/403/404 and returns
 * the negative code. */
int user_call_begin(ms_http_request *req, void *call, size_t size);
/* Answers a finished call: its result with `status`, or the error mapped at the edge (server
 * errors are logged). The result is released with the request. */
void user_answer(user_call *k, int rc, int status);
/* A done callback that answers 200 (see user_answer). */
void user_call_done(int rc, void *arg);

#endif
