/*
 * user_internal.h — shared by the user service's files only.
 * Handlers run on loop threads; *_work functions run on a pooled connection's worker thread
 * and touch only their own context, never the request's answer.
 */
#ifndef MS_USER_INTERNAL_H
#define MS_USER_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "runtime/db.h"
#include "runtime/http.h"

/* handlers (users.c, profile.c, preferences.c) */
void user_create(ms_http_request *req);
void user_get(ms_http_request *req);
void user_patch(ms_http_request *req);
void user_profile_get(ms_http_request *req);
void user_profile_put(ms_http_request *req);
void user_preferences_get(ms_http_request *req);
void user_preferences_put(ms_http_request *req);

/* validation (validate.c): each returns NULL when valid, else the message for the field */
const char *user_check_email(const char *email);
const char *user_check_name(const char *name);
const char *user_check_password(const char *password);
const char *user_check_phone(const char *phone);
const char *user_check_country(const char *country);
const char *user_check_postal_code(const char *code);
const char *user_check_language(const char *language);
const char *user_check_currency(const char *currency);
/* A short free-text field: 1..max code points, no control characters. */
const char *user_check_text(const char *s, size_t max);

/* users.c */
/* 0 when the user exists, MS_ENOTFOUND, or a database error (worker thread). */
int user_exists(ms_db_conn *c, const char *id);
/* The {id} of the path when the caller may reach it; otherwise answers 401/403/404 and
 * returns NULL. */
const char *user_path_id(ms_http_request *req);
/* Answers a finished call: the JSON text `result` with `status` (released either way), or the
 * error mapped at the
 * edge; server errors are logged with `what`. */
void user_answer(ms_http_request *req, int rc, int status, ms_buf *result, const char *what);

#endif
