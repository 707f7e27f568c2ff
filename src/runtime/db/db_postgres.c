/*
 * db_postgres.c — the PostgreSQL backend over libpq's blocking calls (they run on worker
 * threads). Statements are prepared once per connection and cached: a service repeats a few
 * dozen statements, so parse and plan are paid once per connection instead of per call.
 * Error texts keep only the primary message and SQLSTATE: libpq's DETAIL lines quote row values.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/hash.h"
#include "runtime/core/log.h"
#include "runtime/db/db_internal.h"
#include "runtime/db/db_pq.h"
#include "runtime/core/banned.h"

/*
 * libpq is loaded on first use instead of linked: the embedded default (SQLite) then never
 * maps libpq and the TLS, Kerberos and LDAP libraries it pulls in (about 4.5 MB resident).
 */
ms_db_pq ms_db__pq;
#define pq ms_db__pq
static pthread_once_t pq_once = PTHREAD_ONCE_INIT;

static void pq_load(void)
{
    void *h = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        ms_log(MS_LOG_ERROR, "cannot load libpq", "error", dlerror(), NULL);
        return;
    }
#define PQ_LOAD(f)                                                                                 \
    if (!(*(void **)&pq.f = dlsym(h, #f))) {                                                       \
        ms_log(MS_LOG_ERROR, "libpq lacks a function", "function", #f, NULL);                      \
        return;                                                                                    \
    }
    PQ_FUNCTIONS(PQ_LOAD)
#undef PQ_LOAD
    pq.loaded = true; /* the handle stays open for the life of the process */
}

bool ms_db__pq_load(void)
{
    pthread_once(&pq_once, pq_load);
    return pq.loaded;
}

#define STMT_CACHE_SIZE 64

typedef struct cached_stmt {
    uint64_t hash;
    char *sql;
    size_t len;
    char name[24];
    uint64_t last_used;
} cached_stmt;

typedef struct pg_conn {
    ms_db_conn base;
    PGconn *pg;
    int statement_timeout_ms; /* configured (busy_timeout_ms) */
    int session_timeout_ms;   /* what the session has now */
    cached_stmt cache[STMT_CACHE_SIZE];
    uint64_t clock, next_id;
} pg_conn;

ms_db_result *ms_db__pg_result_copy(PGresult *res)
{
    int nrows = pq.PQntuples(res), ncols = pq.PQnfields(res);
    ms_db_result *r = ms_db__result_new(ncols);
    for (int i = 0; i < nrows; i++)
        for (int j = 0; j < ncols; j++)
            ms_db__result_push(r, pq.PQgetisnull(res, i, j) ? NULL : pq.PQgetvalue(res, i, j),
                               (size_t)pq.PQgetlength(res, i, j));
    /* Reads report no changed rows, as on SQLite; INSERT ... RETURNING still counts. */
    if (strncmp(pq.PQcmdStatus(res), "SELECT", 6) != 0)
        r->affected = strtoll(pq.PQcmdTuples(res), NULL, 10);
    return r;
}

int ms_db__pg_check(ms_db_conn *c, const PGresult *res)
{
    pg_conn *p = (pg_conn *)c;
    ExecStatusType st = res ? pq.PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)
        return 0;
    const char *state = res ? pq.PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? pq.PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!state) /* raised by libpq itself (lost connection, protocol): no row data in it */
        ms_db__set_error(&p->base, "%s", pq.PQerrorMessage(p->pg));
    else if (strncmp(state, "22", 2) == 0) /* data exceptions quote the offending input */
        ms_db__set_error(&p->base, "invalid data (SQLSTATE %s)", state);
    else
        ms_db__set_error(&p->base, "%s (SQLSTATE %s)", primary ? primary : "error", state);
    if (pq.PQstatus(p->pg) == CONNECTION_BAD)
        return MS_ECONN;
    if (!state)
        return MS_EDB;
    if (strncmp(state, "23", 2) == 0)
        return MS_ECONFLICT;
    if (strcmp(state, "57014") == 0)
        return MS_ETIMEDOUT;
    if (strcmp(state, "55P03") == 0 || strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        return MS_EBUSY;
    /* Not all of class 08: a protocol violation (08P01, e.g. a wrong parameter count) leaves
     * the connection usable; a lost one shows up as CONNECTION_BAD above. */
    if (strncmp(state, "57P0", 4) == 0) /* the server is terminating this session */
        return MS_ECONN;
    return MS_EDB;
}

static void forget_stmt(pg_conn *p, cached_stmt *e)
{
    char sql[48];
    snprintf(sql, sizeof sql, "DEALLOCATE %s", e->name);
    /* Fails inside an aborted transaction; the name is never reused, so that only costs
     * server memory until the connection closes. */
    pq.PQclear(pq.PQexec(p->pg, sql));
    free(e->sql);
    memset(e, 0, sizeof *e);
}

static int get_stmt(pg_conn *p, const char *sql, const char **name)
{
    size_t len = strlen(sql);
    uint64_t h = ms_hash(sql, len);
    cached_stmt *victim = &p->cache[0];
    for (int i = 0; i < STMT_CACHE_SIZE; i++) {
        cached_stmt *e = &p->cache[i];
        if (e->sql && e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0) {
            e->last_used = ++p->clock;
            *name = e->name;
            return 0;
        }
        if (!e->sql || (victim->sql && e->last_used < victim->last_used))
            victim = e;
    }
    if (victim->sql)
        forget_stmt(p, victim);
    char stmt_name[24];
    snprintf(stmt_name, sizeof stmt_name, "ms_%llu", (unsigned long long)++p->next_id);
    PGresult *res = pq.PQprepare(p->pg, stmt_name, sql, 0, NULL);
    int rc = ms_db__pg_check(&p->base, res);
    pq.PQclear(res);
    if (rc < 0)
        return rc;
    victim->hash = h;
    victim->sql = ms_xstrndup(sql, len);
    victim->len = len;
    memcpy(victim->name, stmt_name, sizeof stmt_name);
    victim->last_used = ++p->clock;
    *name = victim->name;
    return 0;
}

static bool is_stale_plan(const PGresult *res)
{
    const char *state = pq.PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = pq.PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    return state && msg && strcmp(state, "0A000") == 0 && strstr(msg, "cached plan must not");
}

static int pg_exec_script(ms_db_conn *c, const char *sql);

/* Keeps statement_timeout at the configured value, or at the time left before the work's
 * deadline when that is shorter, so a statement blocked on a lock ends when the request's time
 * is up. The SET is sent only when the value changes: ordinary requests pay nothing. */
static int fit_statement_timeout(pg_conn *p)
{
    int want = p->statement_timeout_ms; /* 0: no limit */
    if (p->base.deadline_ms) {
        uint64_t now = ms_db__now_ms();
        uint64_t left = p->base.deadline_ms > now ? p->base.deadline_ms - now : 1;
        if (want == 0 || left < (uint64_t)want)
            want = (int)left;
    }
    if (want == p->session_timeout_ms)
        return 0;
    char sql[64];
    snprintf(sql, sizeof sql, "SET statement_timeout = %d", want);
    int rc = pg_exec_script(&p->base, sql);
    if (rc == 0)
        p->session_timeout_ms = want;
    return rc;
}

/* Runs a cached prepared statement; *res is the PGresult (the caller clears it). */
static int run_prepared(pg_conn *p, const char *sql, int nparams, const char *const *params,
                        PGresult **res)
{
    const char *name;
    *res = NULL;
    int rc = fit_statement_timeout(p);
    if (rc < 0)
        return rc;
    for (int attempt = 0;; attempt++) {
        if ((rc = get_stmt(p, sql, &name)) < 0)
            return rc;
        *res = pq.PQexecPrepared(p->pg, name, nparams, params, NULL, NULL, 0);
        if (!*res || !is_stale_plan(*res))
            break;
        /* Another process changed a table under a cached `SELECT *`: prepare again. Retrying
         * is only possible outside a transaction, which the error has aborted. */
        for (int i = 0; i < STMT_CACHE_SIZE; i++)
            if (p->cache[i].sql && p->cache[i].name == name)
                forget_stmt(p, &p->cache[i]);
        if (attempt > 0 || pq.PQtransactionStatus(p->pg) != PQTRANS_IDLE)
            break;
        pq.PQclear(*res);
    }
    return ms_db__pg_check(&p->base, *res);
}

static int pg_exec(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
                   ms_db_result **out)
{
    pg_conn *p = (pg_conn *)c;
    PGresult *res = NULL;
    int rc = run_prepared(p, sql, nparams, params, &res);
    if (rc < 0 || !out)
        goto out;
    *out = ms_db__pg_result_copy(res);
out:
    pq.PQclear(res);
    return rc;
}

static const char *pg_row_text(const ms_db_row *row, int col, size_t *len)
{
    const PGresult *res = row->handle;
    bool is_null = pq.PQgetisnull(res, row->index, col);
    if (len)
        *len = is_null ? 0 : (size_t)pq.PQgetlength(res, row->index, col);
    return is_null ? NULL : pq.PQgetvalue(res, row->index, col);
}

static int64_t pg_row_int(const ms_db_row *row, int col)
{
    return strtoll(pq.PQgetvalue(row->handle, row->index, col), NULL, 10); /* NULL reads "" */
}

/* The rows are walked in libpq's result: no copy of ours. */
static int pg_each(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
                   ms_db_row_fn fn, void *arg)
{
    pg_conn *p = (pg_conn *)c;
    PGresult *res = NULL;
    int rc = run_prepared(p, sql, nparams, params, &res);
    if (rc == 0) {
        ms_db_row row = {.text = pg_row_text, .integer = pg_row_int, .handle = res};
        row.ncols = pq.PQnfields(res);
        for (int n = pq.PQntuples(res); rc == 0 && row.index < n; row.index++)
            rc = fn(&row, arg);
    }
    pq.PQclear(res);
    return rc;
}

static int pg_exec_script(ms_db_conn *c, const char *sql)
{
    pg_conn *p = (pg_conn *)c;
    PGresult *res = pq.PQexec(p->pg, sql);
    int rc = ms_db__pg_check(&p->base, res);
    pq.PQclear(res);
    return rc;
}

static void pg_close(ms_db_conn *c)
{
    pg_conn *p = (pg_conn *)c;
    for (int i = 0; i < STMT_CACHE_SIZE; i++)
        free(p->cache[i].sql);
    pq.PQfinish(p->pg);
    free(p);
}

PGconn *ms_db__pg_handle(ms_db_conn *c)
{
    return ((pg_conn *)c)->pg;
}

static const ms_db_ops pg_ops = {
    .exec = pg_exec,
    .each = pg_each,
    .exec_script = pg_exec_script,
    .close = pg_close,
    .begin_sql = "BEGIN",
};

/* NOTICEs ("relation already exists, skipping") would go to stderr as raw text, breaking the
 * one-JSON-object-per-line log; none of them needs action. */
static void ignore_notice(void *arg, const PGresult *res) {}

int ms_db__pg_open(const ms_db_config *cfg, ms_db_conn **out)
{
    if (!ms_db__pq_load())
        return MS_ECONN;
    pg_conn *p = ms_xcalloc(1, sizeof *p);
    p->base.ops = &pg_ops;
    p->base.backend = MS_DB_POSTGRES;
    /* Our connect_timeout comes first so that one in the caller's conninfo wins. */
    const char *const keys[] = {"connect_timeout", "dbname", NULL};
    const char *const vals[] = {"5", cfg->pg_conninfo ? cfg->pg_conninfo : "", NULL};
    p->pg = pq.PQconnectdbParams(keys, vals, 1);
    int rc = 0;
    if (!p->pg || pq.PQstatus(p->pg) != CONNECTION_OK) {
        /* libpq's connect errors name host and user, never the password. */
        ms_log(MS_LOG_ERROR, "postgres connect failed", "error",
               p->pg ? pq.PQerrorMessage(p->pg) : "out of memory", NULL);
        rc = MS_ECONN;
        goto out;
    }
    pq.PQsetNoticeReceiver(p->pg, ignore_notice, NULL);
    /* for spans' server.address/server.port: the server libpq actually reached */
    const char *host = pq.PQhost(p->pg), *port = pq.PQport(p->pg);
    snprintf(p->base.server_address, sizeof p->base.server_address, "%s", host ? host : "");
    p->base.server_port = port ? atoi(port) : 0;
    p->statement_timeout_ms = cfg->busy_timeout_ms > 0 ? cfg->busy_timeout_ms : 0;
    p->session_timeout_ms = -1; /* unknown: the first fit sets it */
    if ((rc = fit_statement_timeout(p)) == 0 && cfg->is_derived)
        rc = pg_exec_script(&p->base, "SET synchronous_commit = off");
    if (rc < 0)
        ms_log(MS_LOG_ERROR, "postgres session setup failed", "error", p->base.errmsg, NULL);
out:
    if (rc < 0) {
        pg_close(&p->base);
        return rc;
    }
    *out = &p->base;
    return 0;
}
