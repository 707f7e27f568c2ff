/*
 * pg_test_db.h — the databases of a unit-test program that runs its cases on both backends.
 * The program's PostgreSQL database is made fresh per run when MS_TEST_PG_URL names a server
 * (a superuser URL to db "postgres"); without it pg_test_url stays empty and the PostgreSQL
 * cases skip. Each case then starts on a fresh, empty database of its backend
 * (test_db_fresh), and fails at once when a statement of its own fails (open_conn, x, scalar,
 * migrate). Functions not every program calls are static inline.
 */
#ifndef MS_PG_TEST_DB_H
#define MS_PG_TEST_DB_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/db.h"
#include "runtime/error.h"
#include "sqlite_test_db.h"

/* A case's initial state: the backend it runs on (setup reads it, then replaces it). */
static ms_db_backend backend_sqlite = MS_DB_SQLITE;
static ms_db_backend backend_pg = MS_DB_POSTGRES;

static char pg_admin_url[512];
static char pg_test_url[600]; /* the program's own database, or "" */
static char pg_dbname[64];

static int pg_admin_exec(const char *sql)
{
    ms_db_config cfg = {.backend = MS_DB_POSTGRES, .pg_conninfo = pg_admin_url};
    ms_db_conn *c = NULL;
    int rc = ms_db_open(&cfg, false, &c);
    if (rc == 0) {
        rc = ms_db_exec(c, sql, 0, NULL, NULL);
        if (rc != 0)
            fprintf(stderr, "%s: %s\n", sql, ms_db_errmsg(c));
        ms_db_close(c);
    }
    return rc;
}

/* Creates <prefix>_<pid> on the server of MS_TEST_PG_URL; 0 also when there is no server. */
static int pg_test_db_create(const char *prefix)
{
    const char *url = getenv("MS_TEST_PG_URL");
    if (!url || !*url)
        return 0;
    snprintf(pg_admin_url, sizeof pg_admin_url, "%s", url);
    snprintf(pg_dbname, sizeof pg_dbname, "%s_%d", prefix, (int)getpid());
    /* Same server and user, another database: replace the URL's last path element. */
    const char *slash = strrchr(url, '/');
    const char *query = strchr(slash ? slash : url, '?');
    if (!slash || strstr(url, "://") + 2 == slash)
        return -1;
    snprintf(pg_test_url, sizeof pg_test_url, "%.*s/%s%s", (int)(slash - url), url, pg_dbname,
             query ? query : "");
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", pg_dbname);
    return pg_admin_exec(sql) == 0 ? 0 : -1;
}

static int pg_test_db_drop(void)
{
    if (!pg_dbname[0])
        return 0;
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", pg_dbname);
    return pg_admin_exec(sql) == 0 ? 0 : -1;
}

static ms_db_conn *open_conn(const ms_db_config *cfg)
{
    ms_db_conn *c = NULL;
    int rc = ms_db_open(cfg, false, &c);
    if (rc != 0)
        fail_msg("ms_db_open: %s", ms_errname(rc));
    return c;
}

static void x(ms_db_conn *c, const char *sql)
{
    int rc = ms_db_exec(c, sql, 0, NULL, NULL);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, ms_errname(rc), ms_db_errmsg(c));
}

/* The first column of the first row as a number; 0 for no row or SQL NULL. */
static inline long long scalar(ms_db_conn *c, const char *sql)
{
    ms_db_result *r = NULL;
    int rc = ms_db_exec(c, sql, 0, NULL, &r);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, ms_errname(rc), ms_db_errmsg(c));
    const char *v = ms_db_nrows(r) > 0 ? ms_db_get(r, 0, 0) : NULL;
    long long n = v ? atoll(v) : 0;
    ms_db_result_free(r);
    return n;
}

/* Brings a fresh database to the program's schema. */
static inline void migrate(ms_db_conn *c, const ms_migration *list, size_t n)
{
    int rc = ms_db_migrate(c, list, n, NULL);
    if (rc != 0)
        fail_msg("migrate: %s (%s)", ms_errname(rc), ms_db_errmsg(c));
}

/*
 * Points cfg (its backend and timeouts set by the caller) at a fresh, empty database:
 * SQLite, `file` in a new directory `tmp` made from `tmpl`; PostgreSQL, the program's database
 * with its public schema dropped and made again, since that database outlives each case.
 * With `conn`, leaves an open connection to it there. 1: ready; 0: a PostgreSQL case without
 * a server (it skips); -1: the directory could not be made.
 */
static int test_db_fresh(ms_db_config *cfg, sqlite_test_db *tmp, const char *tmpl, const char *file,
                         ms_db_conn **conn)
{
    bool is_pg = cfg->backend == MS_DB_POSTGRES;
    if (!is_pg) {
        if (sqlite_test_db_make(tmp, tmpl, file) != 0)
            return -1;
        cfg->sqlite_path = tmp->path;
    } else if (pg_test_url[0]) {
        cfg->pg_conninfo = pg_test_url;
    } else {
        return 0;
    }
    ms_db_conn *c = conn || is_pg ? open_conn(cfg) : NULL;
    if (is_pg) {
        x(c, "DROP SCHEMA public CASCADE");
        x(c, "CREATE SCHEMA public");
    }
    if (conn)
        *conn = c;
    else
        ms_db_close(c);
    return 1;
}

#endif
