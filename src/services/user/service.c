/* The user service's tables. Timestamps are RFC 3339 text on both backends so they sort and
 * read the same; email_key is the lower-cased email that makes uniqueness case-insensitive. */
#include "eventstore/relay.h"
#include "services/common/event_feed.h"
#include "services/common/outbox_feed.h"
#include "services/service.h"
#include "services/user/user_internal.h"

ms_relay *user_relay;

static int start(const ms_service_env *env)
{
    int rc = user_token_start();
    if (rc == 0)
        rc = outbox_feed_start(env, "user", NULL, &user_relay);
    return rc;
}

static void stop(void)
{
    ms_relay_stop(user_relay);
    user_relay = NULL;
    user_token_stop();
}

static const ms_migration migrations[] = {
    {1, "users, profiles, preferences",
     "CREATE TABLE users ("
     " id TEXT PRIMARY KEY,"
     " email TEXT NOT NULL,"
     " email_key TEXT NOT NULL UNIQUE,"
     " name TEXT NOT NULL,"
     " password_hash TEXT NOT NULL,"
     " created_at TEXT NOT NULL,"
     " updated_at TEXT NOT NULL);"
     "CREATE TABLE user_profiles ("
     " user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,"
     " phone TEXT, line1 TEXT, city TEXT, postal_code TEXT, country TEXT,"
     " updated_at TEXT NOT NULL);"
     "CREATE TABLE user_preferences ("
     " user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,"
     " language TEXT NOT NULL,"
     " currency TEXT NOT NULL,"
     " marketing_emails INTEGER NOT NULL,"
     " updated_at TEXT NOT NULL);",
     NULL},
    {2, "outbox",
     /* seq orders the relay; AUTOINCREMENT so a position is never reused */
     MS_OUTBOX_TABLE_SQLITE, MS_OUTBOX_TABLE_POSTGRES},
    {3, "users' role (customer | admin), the role claim of their tokens",
     "ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'customer'"
     " CHECK (role IN ('customer', 'admin'))",
     NULL},
};

static int add_routes(ms_router *r)
{
    int rc = 0;
    rc |= ms_router_add(r, "GET", "/internal/v1/events", event_feed_get);
    rc |= ms_router_add(r, "POST", "/api/v1/users", user_create);
    rc |= ms_router_add(r, "POST", "/api/v1/auth/token", user_token);
    rc |= ms_router_add(r, "GET", "/api/v1/users/{id}", user_get);
    rc |= ms_router_add(r, "PATCH", "/api/v1/users/{id}", user_patch);
    rc |= ms_router_add(r, "GET", "/api/v1/users/{id}/profile", user_profile_get);
    rc |= ms_router_add(r, "PUT", "/api/v1/users/{id}/profile", user_profile_put);
    rc |= ms_router_add(r, "GET", "/api/v1/users/{id}/preferences", user_preferences_get);
    rc |= ms_router_add(r, "PUT", "/api/v1/users/{id}/preferences", user_preferences_put);
    return rc ? -1 : 0;
}

const ms_service ms_user_service = {
    .name = "user",
    .summary = "users, profiles and preferences",
    .default_port = 8081,
    .migrations = migrations,
    .nmigrations = sizeof migrations / sizeof migrations[0],
    .add_routes = add_routes,
    .start = start,
    .stop = stop,
};
