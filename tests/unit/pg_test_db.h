/*
 * pg_test_db.h — a fresh PostgreSQL database for one unit-test program, when MS_TEST_PG_URL
 * names a server (a superuser URL to db "postgres"); without it pg_test_url stays empty and
 * the PostgreSQL cases skip. Included by the test programs that run on both backends.
 */
#ifndef MS_PG_TEST_DB_H
#define MS_PG_TEST_DB_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/db.h"

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

#endif
