/*
 * user_directory.c — the order service's local directory of users, kept from the user
 * service's user.created / user.updated events by a bus consumer (bus_consumer.h). The
 * checkout saga's validate-user step reads it first: a known user costs no call.
 *
 * The directory lives in the write database with the consumer's bus_received and
 * bus_checkpoints (one transaction for the three): it is synced at every commit, as data that
 * nothing else rebuilds must be (the read database is derived: views replayed from the event
 * store, synced lazily), and the loops' pools, on which the saga's commands run, read it
 * there. The cost on SQLite is one more writer of the store's file, one commit per page of
 * user events: rare next to the store's group commits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "services/common/bus_consumer.h"
#include "services/order/order_internal.h"
#include "runtime/core/banned.h"

const ms_migration order_directory_migrations[] = {
    {2001, "bus consumer: user directory, received events, checkpoints",
     "CREATE TABLE user_directory (user_id TEXT PRIMARY KEY, email TEXT, name TEXT NOT NULL,"
     " updated_at TEXT NOT NULL);" BUS_CONSUMER_TABLES_SQL,
     NULL},
    /* stock_alerts.c's table: the order service's bus tables share one migration list */
    {2002, "low-stock alerts",
     "CREATE TABLE low_stock_alerts (product_id TEXT PRIMARY KEY, sku TEXT NOT NULL,"
     " available INTEGER NOT NULL, threshold INTEGER NOT NULL, alerted_at TEXT NOT NULL,"
     " event_id TEXT NOT NULL);",
     NULL},
};
const size_t order_directory_nmigrations =
    sizeof order_directory_migrations / sizeof order_directory_migrations[0];

/* user.created carries user_id, email, name, created_at; user.updated user_id, name,
 * updated_at (and whatever else changed): absent fields keep their value. */
int order_directory_apply(ms_db_conn *c, const bus_event *e, void *arg)
{
    (void)arg;
    bool is_created = strcmp(e->type, "user.created") == 0;
    if (!is_created && strcmp(e->type, "user.updated") != 0)
        return 0;
    const char *user_id = json_string_value(json_object_get(e->payload, "user_id"));
    const char *email = json_string_value(json_object_get(e->payload, "email"));
    const char *name = json_string_value(json_object_get(e->payload, "name"));
    const char *at =
        json_string_value(json_object_get(e->payload, is_created ? "created_at" : "updated_at"));
    if (!user_id || (is_created && !name)) {
        ms_log(MS_LOG_WARN, "user directory: event without its fields, skipped", "event_id", e->id,
               "type", e->type, NULL);
        return 0; /* nothing to apply: retrying the page would not change it */
    }
    const char *params[] = {user_id, email, name, at ? at : e->created_at};
    /* a user.updated without a name (another field changed) needs a known row to update */
    if (!name) {
        const char *update[] = {user_id, email, params[3]};
        return ms_db_exec(c,
                          "UPDATE user_directory SET email = COALESCE($2, email), updated_at = $3"
                          " WHERE user_id = $1",
                          3, update, NULL);
    }
    return ms_db_exec(c,
                      "INSERT INTO user_directory (user_id, email, name, updated_at)"
                      " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET"
                      " email = COALESCE(excluded.email, user_directory.email),"
                      " name = excluded.name, updated_at = excluded.updated_at",
                      4, params, NULL);
}

int order_directory_lookup(ms_db_conn *c, const char *user_id, order_directory_user *out)
{
    ms_db_result *r = NULL;
    const char *params[] = {user_id};
    int rc =
        ms_db_exec(c, "SELECT email, name FROM user_directory WHERE user_id = $1", 1, params, &r);
    if (rc == 0 && ms_db_nrows(r) == 0)
        rc = MS_ENOTFOUND;
    if (rc == 0) {
        const char *email = ms_db_get(r, 0, 0);
        snprintf(out->email, sizeof out->email, "%s", email ? email : "");
        snprintf(out->name, sizeof out->name, "%s", ms_db_get(r, 0, 1));
    }
    ms_db_result_free(r);
    return rc;
}
