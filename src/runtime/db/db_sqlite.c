/*
 * db_sqlite.c — the SQLite backend: WAL + synchronous=FULL (a commit survives power loss;
 * `is_derived` connections run NORMAL, and `defers_wal_sync` ones leave the fsync to their
 * owner, see db.h), each commit's WAL writes gathered into one (db_sqlite_vfs.c), foreign
 * keys on, and a small per-connection cache of prepared statements, because preparing costs
 * more than running the short statements services issue.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/hash.h"
#include "runtime/core/log.h"
#include "runtime/db/db_internal.h"
#include "runtime/db/db_sqlite_vfs.h"
#include "runtime/core/banned.h"

#define STMT_CACHE_SIZE 32

typedef struct cached_stmt {
    uint64_t hash;
    char *sql; /* own copy: the key must not change under us */
    size_t len;
    sqlite3_stmt *stmt;
    uint64_t last_used;
    int *param_of; /* placeholder j (1-based) takes params[param_of[j - 1] - 1]; 0: not $N */
    int nslots;
} cached_stmt;

typedef struct sqlite_conn {
    ms_db_conn base;
    sqlite3 *db;
    cached_stmt cache[STMT_CACHE_SIZE];
    uint64_t clock;
    int busy_timeout_ms;
    uint64_t busy_since_ms;
    bool busy_hit_deadline;
    int wal_state; /* ms_db__sqlite_change_token: 0 unknown, 1 WAL open, -1 not in WAL mode */
} sqlite_conn;

/*
 * Waits for a lock like sqlite3_busy_timeout, but never past the work's deadline: a request
 * blocked behind another writer ends with MS_ETIMEDOUT (504) when its time is up.
 */
static int on_busy(void *arg, int count)
{
    sqlite_conn *s = arg;
    uint64_t now = ms_db__now_ms();
    if (count == 0) {
        s->busy_since_ms = now;
        s->busy_hit_deadline = false;
    }
    if (now - s->busy_since_ms >= (uint64_t)s->busy_timeout_ms)
        return 0;
    if (s->base.deadline_ms && now >= s->base.deadline_ms) {
        s->busy_hit_deadline = true;
        return 0;
    }
    uint64_t nap = count < 3 ? 1 : count < 10 ? 2 : 5; /* ms: short first, then gentler */
    if (s->base.deadline_ms && now + nap > s->base.deadline_ms)
        nap = s->base.deadline_ms - now;
    struct timespec ts = {0, (long)(nap * 1000000)};
    nanosleep(&ts, NULL);
    return 1;
}

enum { WAL_INDEX_REGION = 32768 }; /* SQLite maps the WAL index in regions of this size */

/*
 * The WAL index (the -shm file, format documented in SQLite's "WAL-mode file format") begins
 * with the WalIndexHdr: iVersion, unused, iChange (bumped by every commit), isInit/bigEndCksum/
 * szPage, mxFrame (last valid WAL frame). Writers update it under the WAL write lock; a change
 * of either word means a commit or a WAL reset happened.
 *
 * It is read through SQLite's own mapping (the VFS xShmMap of this connection), never through
 * a descriptor of ours: closing any descriptor of a file drops every POSIX lock the process
 * holds on it, SQLite's included, and another process would then reset the -shm file under
 * SQLite's feet (SIGBUS).
 *
 * That mapping must be the WAL's own: SQLite unmaps it when it closes the connection's WAL, and
 * a connection that has read nothing yet has no WAL open. Mapped then, it was never unmapped:
 * the -shm descriptor stayed open after the last close and SQLite's shared-memory node leaked.
 * So the first call reads the journal mode, which loads the schema and with it opens the WAL.
 */
static int wal_state(sqlite_conn *s)
{
    sqlite3_stmt *st = NULL;
    int state = 0; /* unknown: asked again next time */
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        state = mode && strcmp(mode, "wal") == 0 ? 1 : -1;
    }
    sqlite3_finalize(st);
    return state;
}

int ms_db__sqlite_change_token(ms_db_conn *c, uint64_t *out)
{
    sqlite_conn *s = (sqlite_conn *)c;
    if (s->wal_state == 0)
        s->wal_state = wal_state(s);
    if (s->wal_state != 1)
        return MS_EIO;
    sqlite3_file *f = NULL;
    if (sqlite3_file_control(s->db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
        !f->pMethods || f->pMethods->iVersion < 2 || !f->pMethods->xShmMap)
        return MS_EIO;
    volatile void *region = NULL;
    if (f->pMethods->xShmMap(f, 0, WAL_INDEX_REGION, 0, &region) != SQLITE_OK || !region)
        return MS_EIO;
    const uint32_t *hdr = (const uint32_t *)region;
    uint32_t change = __atomic_load_n(&hdr[2], __ATOMIC_ACQUIRE);
    uint32_t frames = __atomic_load_n(&hdr[4], __ATOMIC_ACQUIRE);
    *out = (uint64_t)change << 32 | frames;
    return 0;
}

static int map_error(sqlite_conn *s, int rc)
{
    ms_db__set_error(&s->base, "%s", sqlite3_errmsg(s->db));
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        return MS_ECONFLICT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return s->busy_hit_deadline ? MS_ETIMEDOUT : MS_EBUSY;
    default:
        return MS_EDB;
    }
}

/* Finds or prepares the statement for `sql`. Keyed by the full text (not its address): callers
 * build SQL in reused buffers, so one address can carry different statements. */
/* SQLite reads "$1" as a named parameter: which of the caller's params each placeholder
 * takes, worked out once per prepared statement rather than at every run. */
static void map_params(cached_stmt *e)
{
    e->nslots = sqlite3_bind_parameter_count(e->stmt);
    e->param_of = ms_xcalloc(e->nslots > 0 ? (size_t)e->nslots : 1, sizeof *e->param_of);
    for (int j = 1; j <= e->nslots; j++) {
        const char *name = sqlite3_bind_parameter_name(e->stmt, j);
        char *end = NULL;
        long k = name && name[0] == '$' ? strtol(name + 1, &end, 10) : 0;
        e->param_of[j - 1] = k >= 1 && k <= 65535 && *end == '\0' ? (int)k : 0;
    }
}

static void forget_stmt(cached_stmt *e)
{
    sqlite3_finalize(e->stmt);
    free(e->sql);
    free(e->param_of);
    *e = (cached_stmt){0};
}

static int get_stmt(sqlite_conn *s, const char *sql, cached_stmt **out)
{
    size_t len = strlen(sql);
    uint64_t h = ms_hash(sql, len);
    cached_stmt *victim = &s->cache[0];
    for (int i = 0; i < STMT_CACHE_SIZE; i++) {
        cached_stmt *e = &s->cache[i];
        if (e->stmt && e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0) {
            e->last_used = ++s->clock;
            *out = e;
            return 0;
        }
        if (!e->stmt || (victim->stmt && e->last_used < victim->last_used))
            victim = e;
    }
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v3(s->db, sql, (int)len + 1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL);
    if (rc != SQLITE_OK)
        return map_error(s, rc);
    if (!stmt) { /* only whitespace or comments */
        ms_db__set_error(&s->base, "empty statement");
        return MS_EDB;
    }
    forget_stmt(victim);
    *victim = (cached_stmt){h, ms_xstrndup(sql, len), len, stmt, ++s->clock, NULL, 0};
    map_params(victim);
    *out = victim;
    return 0;
}

/* Binds the caller's params to the statement's placeholders (map_params). */
static int bind_params(sqlite_conn *s, const cached_stmt *e, int nparams, const char *const *params)
{
    for (int j = 1; j <= e->nslots; j++) {
        int k = e->param_of[j - 1];
        if (k < 1 || k > nparams) {
            const char *name = sqlite3_bind_parameter_name(e->stmt, j);
            ms_db__set_error(&s->base, "placeholder %s has no parameter (%d given)",
                             name ? name : "?", nparams);
            return MS_EDB;
        }
        const char *v = params[k - 1];
        int rc =
            v ? sqlite3_bind_text(e->stmt, j, v, -1, SQLITE_STATIC) : sqlite3_bind_null(e->stmt, j);
        if (rc != SQLITE_OK)
            return map_error(s, rc);
    }
    return 0;
}

static int sqlite_exec(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
                       ms_db_result **out)
{
    sqlite_conn *s = (sqlite_conn *)c;
    cached_stmt *e = NULL;
    ms_db_result *r = NULL;
    int rc = get_stmt(s, sql, &e);
    if (rc < 0)
        return rc;
    sqlite3_stmt *stmt = e->stmt;
    if ((rc = bind_params(s, e, nparams, params)) < 0)
        goto out;
    /* Columns are counted after the first step: a schema change recompiles the statement
     * there, and `SELECT *` may then have more columns than when it was cached. */
    int step = sqlite3_step(stmt);
    int ncols = sqlite3_column_count(stmt);
    if (out)
        r = ms_db__result_new(ncols);
    for (; step == SQLITE_ROW; step = sqlite3_step(stmt)) {
        if (!r)
            continue;
        for (int i = 0; i < ncols; i++) {
            if (sqlite3_column_type(stmt, i) == SQLITE_NULL) {
                ms_db__result_push(r, NULL, 0);
                continue;
            }
            const char *v = (const char *)sqlite3_column_text(stmt, i);
            if (!v && sqlite3_errcode(s->db) == SQLITE_NOMEM)
                MS_BUG("sqlite out of memory");
            ms_db__result_push(r, v ? v : "", v ? (size_t)sqlite3_column_bytes(stmt, i) : 0);
        }
    }
    if (step != SQLITE_DONE) {
        rc = map_error(s, step);
        goto out;
    }
    if (r)
        r->affected = sqlite3_stmt_readonly(stmt) ? 0 : sqlite3_changes64(s->db);
out:
    /* Reset now so a finished read does not hold its WAL snapshot; STATIC bindings are
     * cleared before the caller's parameters go away. */
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    if (rc < 0) {
        ms_db_result_free(r);
        r = NULL;
    }
    if (out)
        *out = r;
    return rc;
}

static const char *sqlite_row_text(const ms_db_row *row, int col, size_t *len)
{
    sqlite3_stmt *stmt = row->handle;
    const char *v = NULL;
    if (sqlite3_column_type(stmt, col) != SQLITE_NULL &&
        !(v = (const char *)sqlite3_column_text(stmt, col)))
        MS_BUG("sqlite out of memory");
    if (len)
        *len = v ? (size_t)sqlite3_column_bytes(stmt, col) : 0;
    return v;
}

static int64_t sqlite_row_int(const ms_db_row *row, int col)
{
    return sqlite3_column_int64(row->handle, col);
}

/* Like sqlite_exec, but each row is shown from the statement itself, converted only as the
 * caller asks (an INTEGER column read as an integer is never turned into text). */
static int sqlite_each(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
                       ms_db_row_fn fn, void *arg)
{
    sqlite_conn *s = (sqlite_conn *)c;
    cached_stmt *e = NULL;
    int rc = get_stmt(s, sql, &e);
    if (rc < 0)
        return rc;
    sqlite3_stmt *stmt = e->stmt;
    if ((rc = bind_params(s, e, nparams, params)) < 0)
        goto out;
    ms_db_row row = {.text = sqlite_row_text, .integer = sqlite_row_int, .handle = stmt};
    int step = sqlite3_step(stmt);
    row.ncols = sqlite3_column_count(stmt); /* after the first step, as in sqlite_exec */
    for (; step == SQLITE_ROW; step = sqlite3_step(stmt), row.index++)
        if ((rc = fn(&row, arg)) != 0)
            goto out;
    if (step != SQLITE_DONE)
        rc = map_error(s, step);
out:
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

static int ignore_row(const ms_db_row *row, void *arg)
{
    (void)row;
    (void)arg;
    return 0;
}

static int sqlite_insert_rowid(ms_db_conn *c, const char *sql, int nparams,
                               const char *const *params, int64_t *rowid)
{
    sqlite_conn *s = (sqlite_conn *)c;
    int rc = sqlite_each(c, sql, nparams, params, ignore_row, NULL);
    /* the connection's counters outlive the statement's reset */
    if (rc == 0 && sqlite3_changes64(s->db) > 0)
        *rowid = sqlite3_last_insert_rowid(s->db);
    return rc;
}

static int sqlite_exec_script(ms_db_conn *c, const char *sql)
{
    sqlite_conn *s = (sqlite_conn *)c;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : map_error(s, rc);
}

static void sqlite_close(ms_db_conn *c)
{
    sqlite_conn *s = (sqlite_conn *)c;
    for (int i = 0; i < STMT_CACHE_SIZE; i++) {
        forget_stmt(&s->cache[i]);
    }
    sqlite3_close_v2(s->db);
    free(s);
}

static const ms_db_ops sqlite_ops = {
    .exec = sqlite_exec,
    .each = sqlite_each,
    .insert_rowid = sqlite_insert_rowid,
    .exec_script = sqlite_exec_script,
    .close = sqlite_close,
    .begin_sql = "BEGIN IMMEDIATE",
};

/* Before SQLite initialises: no global allocation statistics (nobody reads them), so no
 * process-wide mutex taken around every allocation of every connection. */
static void configure_sqlite(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); /* too late if SQLite already runs: harmless */
}

int ms_db__sqlite_open(const ms_db_config *cfg, bool readonly, ms_db_conn **out)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, configure_sqlite);
    sqlite_conn *s = ms_xcalloc(1, sizeof *s);
    s->base.ops = &sqlite_ops;
    s->base.backend = MS_DB_SQLITE;
    int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                SQLITE_OPEN_NOMUTEX;
    /* Every writing connection gathers each commit's WAL writes into one write
     * (db_sqlite_vfs.c): the derived ones (projector, relay) made two writes a page too. */
    const char *vfs = readonly ? NULL : ms_db__sqlite_wal_vfs(cfg->defers_wal_sync);
    int rc = sqlite3_open_v2(cfg->sqlite_path ? cfg->sqlite_path : "", &s->db, flags, vfs);
    if (rc != SQLITE_OK) {
        rc = MS_ECONN;
        goto out;
    }
    sqlite3_extended_result_codes(s->db, 1);
    s->busy_timeout_ms = cfg->busy_timeout_ms > 0 ? cfg->busy_timeout_ms : 0;
    sqlite3_busy_handler(s->db, on_busy, s);
    /* journal_mode is stored in the file: a read-only connection only checks it. No memory
     * map: a connection to a file that another keeps growing tears the map down and makes it
     * again at each transaction after a checkpoint grew it (munmap was 6 % of the projector
     * and of the relay), and measured, neither GET nor replay ran faster with one. */
    const char *pragmas = readonly          ? "PRAGMA foreign_keys=ON;"
                          : cfg->is_derived ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                                              "PRAGMA foreign_keys=ON;"
                                            : "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                                              "PRAGMA foreign_keys=ON;";
    /* Switching a new file to WAL needs its exclusive lock, and connections opening it at the
     * same moment can each hold the shared lock the others wait on: SQLite answers that
     * deadlock with SQLITE_BUSY at once, without the busy handler. So the switch is tried
     * again, a millisecond apart, for as long as the busy timeout. */
    uint64_t since = ms_db__now_ms();
    while ((rc = sqlite_exec_script(&s->base, pragmas)) == MS_EBUSY &&
           ms_db__now_ms() - since < (uint64_t)s->busy_timeout_ms) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (rc < 0) {
        rc = MS_EDB;
        goto out;
    }
    rc = 0;
out:
    if (rc < 0) {
        /* The caller gets no connection to ask ms_db_errmsg on, so the reason is logged. */
        ms_log(MS_LOG_ERROR, "sqlite open failed", "path", cfg->sqlite_path, "error",
               s->db ? sqlite3_errmsg(s->db) : "out of memory", NULL);
        sqlite3_close_v2(s->db);
        free(s);
        return rc;
    }
    *out = &s->base;
    return 0;
}
