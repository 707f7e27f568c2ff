/*
 * db.c — the backend-neutral half of db.h: dispatch to SQLite or PostgreSQL, the result type,
 * transactions and versioned migrations (serialized across processes, see ms_db_migrate).
 * Every statement run through ms_db_exec, ms_db_each or ms_db_insert_rowid is a span when the
 * thread's trace context is sampled (db_trace.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/db/db_internal.h"
#include "runtime/core/banned.h"

int ms_db_open(const ms_db_config *cfg, bool readonly, ms_db_conn **out)
{
    *out = NULL;
    switch (cfg->backend) {
    case MS_DB_SQLITE:
        return ms_db__sqlite_open(cfg, readonly, out);
    case MS_DB_POSTGRES:
        return ms_db__pg_open(cfg, out);
    }
    return MS_EINVAL;
}

void ms_db_close(ms_db_conn *c)
{
    if (c)
        c->ops->close(c);
}

ms_db_backend ms_db_backend_of(const ms_db_conn *c)
{
    return c->backend;
}

uint64_t ms_db__now_ms(void)
{
    return uv_hrtime() / 1000000;
}

void ms_db_set_deadline(ms_db_conn *c, uint64_t deadline_ms)
{
    c->deadline_ms = deadline_ms;
}

/* The deadline check of every statement: MS_ETIMEDOUT (with errmsg) once it has passed. */
static int check_deadline(ms_db_conn *c)
{
    if (c->deadline_ms && ms_db__now_ms() >= c->deadline_ms) {
        ms_db__set_error(c, "the request's deadline passed");
        return MS_ETIMEDOUT;
    }
    return 0;
}

/* Each statement is a span of its own (db_trace.c), one with its deadline check: a statement
 * refused because the request ran out of time shows in the waterfall as a failed one. */
int ms_db_exec(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
               ms_db_result **out)
{
    if (out)
        *out = NULL;
    c->errmsg[0] = '\0';
    ms_span *s = ms_db__span_start(c, sql);
    int rc = check_deadline(c);
    if (rc == 0)
        rc = c->ops->exec(c, sql, nparams, params, out);
    ms_db__span_end(s, c, rc);
    return rc;
}

int ms_db_each(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
               ms_db_row_fn fn, void *arg)
{
    c->errmsg[0] = '\0';
    ms_span *s = ms_db__span_start(c, sql);
    int rc = check_deadline(c);
    if (rc == 0)
        rc = c->ops->each(c, sql, nparams, params, fn, arg);
    ms_db__span_end(s, c, rc);
    return rc;
}

int ms_db_insert_rowid(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
                       int64_t *rowid)
{
    *rowid = 0;
    c->errmsg[0] = '\0';
    if (!c->ops->insert_rowid) {
        ms_db__set_error(c, "no rowids on this backend");
        return MS_EINVAL;
    }
    ms_span *s = ms_db__span_start(c, sql);
    int rc = check_deadline(c);
    if (rc == 0)
        rc = c->ops->insert_rowid(c, sql, nparams, params, rowid);
    ms_db__span_end(s, c, rc);
    return rc;
}

int ms_db_row_ncols(const ms_db_row *row)
{
    return row->ncols;
}

const char *ms_db_row_text(const ms_db_row *row, int col, size_t *len)
{
    if (col < 0 || col >= row->ncols)
        MS_BUG("ms_db_row_text: column out of range");
    return row->text(row, col, len);
}

int64_t ms_db_row_int(const ms_db_row *row, int col)
{
    if (col < 0 || col >= row->ncols)
        MS_BUG("ms_db_row_int: column out of range");
    return row->integer(row, col);
}

/* No span: scripts are migrations at start-up and the pool's own read snapshots, never a
 * request's statements. */
int ms_db_exec_script(ms_db_conn *c, const char *sql)
{
    c->errmsg[0] = '\0';
    return c->ops->exec_script(c, sql);
}

/*
 * BEGIN, COMMIT and ROLLBACK are spans of their own, like any statement, rather than one span
 * around the transaction: in a waterfall they are where the time of a write goes that no
 * statement shows (SQLite's BEGIN IMMEDIATE waits for the write lock, its COMMIT syncs the WAL;
 * PostgreSQL's COMMIT waits for the WAL flush), and a flat row of statements under the
 * request's span reads as what happened in order. A transaction span would only nest them one
 * level deeper, and would need the connection to hold a span between calls.
 */
int ms_db_begin(ms_db_conn *c)
{
    return ms_db_exec(c, c->ops->begin_sql, 0, NULL, NULL);
}

int ms_db_commit(ms_db_conn *c)
{
    return ms_db_exec(c, "COMMIT", 0, NULL, NULL);
}

int ms_db_rollback(ms_db_conn *c)
{
    return ms_db_exec(c, "ROLLBACK", 0, NULL, NULL);
}

int ms_db_end(ms_db_conn *c, int rc)
{
    if (rc == 0)
        rc = ms_db_commit(c);
    if (rc < 0)
        ms_db_rollback(c);
    return rc;
}

int ms_db_ping(ms_db_conn *c)
{
    return ms_db_exec(c, "SELECT 1", 0, NULL, NULL);
}

const char *ms_db_errmsg(const ms_db_conn *c)
{
    return c->errmsg;
}

void ms_db__set_error(ms_db_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
}

/* ---- results ---- */

ms_db_result *ms_db__result_new(int ncols)
{
    ms_db_result *r = ms_xcalloc(1, sizeof *r);
    r->ncols = ncols;
    return r;
}

enum { BLOCK_FIRST = 256, BLOCK_MAX = 1 << 20 };

void ms_db__result_push(ms_db_result *r, const char *v, size_t n)
{
    if (r->ncells == r->cap_cells) {
        r->cap_cells = r->cap_cells ? r->cap_cells * 2 : 16;
        r->cells = ms_xrealloc(r->cells, r->cap_cells * sizeof *r->cells);
    }
    if (!v) {
        r->cells[r->ncells++] = NULL;
        return;
    }
    ms_db_block *b = r->block;
    if (!b || b->len + n + 1 > b->cap) {
        size_t cap = b ? (b->cap < BLOCK_MAX ? b->cap * 2 : BLOCK_MAX) : BLOCK_FIRST;
        if (cap < n + 1)
            cap = n + 1;
        ms_db_block *nb = ms_xmalloc(sizeof *nb + cap);
        nb->len = 0;
        nb->cap = cap;
        nb->next = b;
        r->block = b = nb;
    }
    char *d = b->data + b->len;
    memcpy(d, v, n);
    d[n] = '\0';
    b->len += n + 1;
    r->cells[r->ncells++] = d;
}

int ms_db_nrows(const ms_db_result *r)
{
    return r->ncols > 0 ? (int)(r->ncells / (size_t)r->ncols) : 0;
}

int ms_db_ncols(const ms_db_result *r)
{
    return r->ncols;
}

const char *ms_db_get(const ms_db_result *r, int row, int col)
{
    if (row < 0 || col < 0 || col >= r->ncols || row >= ms_db_nrows(r))
        MS_BUG("ms_db_get: cell out of range");
    return r->cells[(size_t)row * (size_t)r->ncols + (size_t)col];
}

long long ms_db_affected(const ms_db_result *r)
{
    return r->affected;
}

void ms_db_result_free(ms_db_result *r)
{
    if (!r)
        return;
    for (ms_db_block *b = r->block, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(r->cells);
    free(r);
}

/* ---- migrations ---- */

/* Any fixed key works: it only has to be the same in every process migrating this database. */
#define MIGRATION_LOCK_KEY "7236353617836910"

static const char *const create_table_sql[] = {
    [MS_DB_SQLITE] = "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                     "name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    [MS_DB_POSTGRES] = "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                       "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
};

/* Applies one migration in its own transaction unless it is already recorded. Other processes
 * are kept out for the whole check-then-apply: SQLite's BEGIN IMMEDIATE takes the write lock,
 * on PostgreSQL a transaction-scoped advisory lock (released by COMMIT/ROLLBACK) does. */
static int migrate_one(ms_db_conn *c, const ms_migration *m, bool *was_applied)
{
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);
    const char *params[] = {version, m->name ? m->name : ""};
    const char *sql =
        c->backend == MS_DB_POSTGRES && m->postgres_sql ? m->postgres_sql : m->sqlite_sql;
    ms_db_result *r = NULL;
    *was_applied = false;
    int rc = ms_db_begin(c);
    if (rc < 0)
        return rc;
    if (c->backend == MS_DB_POSTGRES &&
        (rc = ms_db_exec(c, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK_KEY ")", 0, NULL,
                         NULL)) < 0)
        goto out;
    if ((rc = ms_db_exec(c, create_table_sql[c->backend], 0, NULL, NULL)) < 0)
        goto out;
    if ((rc = ms_db_exec(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, params, &r)) <
        0)
        goto out;
    if (ms_db_nrows(r) == 0) {
        if ((rc = ms_db_exec_script(c, sql)) < 0)
            goto out;
        if ((rc = ms_db_exec(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2,
                             params, NULL)) < 0)
            goto out;
        *was_applied = true;
    }
    rc = ms_db_commit(c);
out:
    ms_db_result_free(r);
    if (rc < 0) {
        /* Keep the first error's text: it says why, the rollback's would not. */
        char why[sizeof c->errmsg];
        memcpy(why, c->errmsg, sizeof why);
        ms_db_rollback(c);
        memcpy(c->errmsg, why, sizeof why);
        *was_applied = false;
    }
    return rc;
}

int ms_db_migrate(ms_db_conn *c, const ms_migration *list, size_t n, int *applied)
{
    int count = 0, rc = 0;
    for (size_t i = 0; i < n; i++) {
        if ((i > 0 && list[i].version <= list[i - 1].version) || !list[i].sqlite_sql) {
            ms_db__set_error(c, "migrations must have ascending versions and SQL");
            if (applied)
                *applied = 0;
            return MS_EINVAL; /* before anything runs: a broken list applies nothing */
        }
    }
    for (size_t i = 0; i < n; i++) {
        bool was_applied;
        if ((rc = migrate_one(c, &list[i], &was_applied)) < 0) {
            char v[16];
            snprintf(v, sizeof v, "%d", list[i].version);
            ms_log(MS_LOG_ERROR, "migration failed", "#version", v, "name", list[i].name, "error",
                   c->errmsg, NULL);
            break;
        }
        if (was_applied) {
            char v[16];
            snprintf(v, sizeof v, "%d", list[i].version);
            ms_log(MS_LOG_INFO, "migration applied", "#version", v, "name", list[i].name, NULL);
            count++;
        }
    }
    if (applied)
        *applied = count;
    return rc;
}
