/*
 * db.h — one small storage interface over SQLite (the embedded default: WAL, synchronous=FULL,
 * a file per service) and PostgreSQL (libpq, used when DATABASE_URL is set).
 *
 * SQL is written once for both: placeholders are $1..$N, values travel as text in and out
 * (NULL pointer = SQL NULL). Where the dialects differ, a migration carries two texts.
 *
 * Threading: an ms_db_conn is used by one thread at a time (blocking calls). An ms_db_pool is
 * owned by one loop thread: create, run and close it from that thread only; its work
 * functions run on libuv's thread pool, its done callbacks on the owning loop, and the single
 * reads of ms_db_pool_query on the loop itself (non-blocking, pipelined, on PostgreSQL).
 * Ownership: results are owned by the caller (ms_db_result_free); the pool owns its conns.
 *
 * Tracing: inside a sampled trace context (obs/trace.h: db sits beside obs above core, and obs
 * includes nothing of db), every statement of ms_db_exec, ms_db_each and ms_db_insert_rowid,
 * BEGIN/COMMIT/ROLLBACK included, and of ms_db_pool_query, is a CLIENT span under the thread's
 * current context (the caller's, for ms_db_pool_query), carrying
 * the SQL text but never a parameter's value. The pool carries the context of the thread that
 * queued work to the worker running it, and back to its done callback; outside a context a
 * statement costs one thread-local read more.
 */
#ifndef MS_DB_H
#define MS_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef enum { MS_DB_SQLITE, MS_DB_POSTGRES } ms_db_backend;

enum { MS_DB_PIPELINE_CONNS_DEFAULT = 2 };

typedef struct ms_db_config {
    ms_db_backend backend;
    const char *sqlite_path; /* SQLite: the database file (created if missing) */
    const char *pg_conninfo; /* PostgreSQL: a libpq URL or keyword string (DATABASE_URL) */
    int busy_timeout_ms;     /* SQLite busy timeout; PostgreSQL statement_timeout */
    int pool_size;           /* connections kept open, per process (2 x cores) */
    int pool_overflow;       /* extra connections opened under load, closed when idle (0) */
    int pool_timeout_ms;     /* longest wait for a free connection (capped by the deadline) */
    int pool_recycle_s;      /* reopen a connection older than this (3600) */
    bool pool_pre_ping;      /* check a connection before handing it out (true) */
    int pool_idle_ms;        /* an overflow connection idle this long is closed (0: 5000) */
    int pipeline_conns;      /* PostgreSQL: pipelined connections per pool for ms_db_pool_query (0:
                              * MS_DB_PIPELINE_CONNS_DEFAULT) */
    /* Commits of this connection may be lost to a power cut (never to a crash of the process,
     * and never half): for data derived from a durable source that rebuilds it — read models
     * with their checkpoint, the relay's published marks (at least once anyway). SQLite runs
     * synchronous=NORMAL (no fsync per commit in WAL mode), PostgreSQL synchronous_commit=off. */
    bool is_derived;
    /* SQLite: a commit's WAL sync is left to the connection's owner, who must fdatasync the
     * `<database>-wal` file before it counts any commit as durable, and before checkpointing
     * on this connection (the event store's writer pipelines its group commits so). */
    bool defers_wal_sync;
} ms_db_config;

typedef struct ms_db_conn ms_db_conn;
typedef struct ms_db_result ms_db_result;

/* Opens one connection (blocking). `readonly` opens SQLite read-only. 0, MS_ECONN or MS_EDB. */
int ms_db_open(const ms_db_config *cfg, bool readonly, ms_db_conn **out);
void ms_db_close(ms_db_conn *c);
ms_db_backend ms_db_backend_of(const ms_db_conn *c);

/*
 * Runs one statement with text parameters. `out` may be NULL when no rows are wanted.
 * Returns 0; MS_ECONFLICT on a unique/constraint violation; MS_EBUSY when locked past the busy
 * timeout; MS_ETIMEDOUT on a statement timeout; MS_ECONN when the connection is lost; MS_EDB
 * otherwise (ms_db_errmsg says why, never with parameter values).
 */
int ms_db_exec(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
               ms_db_result **out);
/* SQLite: runs an INSERT of one row (no RETURNING) like ms_db_exec and sets *rowid to the new
 * row's rowid, or 0 when nothing was inserted (ON CONFLICT DO NOTHING). SQLite materialises
 * RETURNING rows in a temporary table: this costs ~20% less per row. PostgreSQL: MS_EINVAL
 * (no rowids there: use RETURNING). */
int ms_db_insert_rowid(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
                       int64_t *rowid);
/* Runs a script of several statements without parameters (migrations). */
int ms_db_exec_script(ms_db_conn *c, const char *sql);
/* Transactions: SQLite BEGIN IMMEDIATE (a writer from the start), PostgreSQL BEGIN. */
int ms_db_begin(ms_db_conn *c);
int ms_db_commit(ms_db_conn *c);
int ms_db_rollback(ms_db_conn *c);
/* Ends the transaction ms_db_begin started: commits when `rc` is 0, rolls back otherwise.
 * Returns `rc`, or the commit's error. */
int ms_db_end(ms_db_conn *c, int rc);
/*
 * Sets the deadline of the work running on this connection: an absolute uv_hrtime() time in
 * ms (uv_now() of a loop is the same clock). Once it has passed, statements fail with
 * MS_ETIMEDOUT instead of starting, and lock waits (SQLite) and statements (PostgreSQL) are
 * cut short at it. 0 means none. The pool sets it from the request's deadline.
 */
void ms_db_set_deadline(ms_db_conn *c, uint64_t deadline_ms);
/* A round trip that proves the connection works. */
int ms_db_ping(ms_db_conn *c);
/* Text of the last error on this connection (static until the next call). */
const char *ms_db_errmsg(const ms_db_conn *c);

int ms_db_nrows(const ms_db_result *r);
int ms_db_ncols(const ms_db_result *r);
/* The value at (row, col) as text, or NULL for SQL NULL. Borrowed from the result. */
const char *ms_db_get(const ms_db_result *r, int row, int col);
/* Rows changed by an INSERT/UPDATE/DELETE. */
long long ms_db_affected(const ms_db_result *r);
void ms_db_result_free(ms_db_result *r);

/*
 * Streaming reads: ms_db_each runs one statement like ms_db_exec and shows each row to `fn`
 * as it comes, without copying it into a result (SQLite: straight from the statement;
 * PostgreSQL: from libpq's result, which holds the rows of one call). A row and every pointer
 * read from it are valid only until `fn` returns.
 */
typedef struct ms_db_row ms_db_row;
/* `fn` returns 0 to go on; anything else stops the walk, and ms_db_each returns it. It must
 * not run statements on the connection being walked. */
typedef int (*ms_db_row_fn)(const ms_db_row *row, void *arg);
/* Returns 0 when every row was shown, `fn`'s nonzero return, or an error as ms_db_exec. */
int ms_db_each(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
               ms_db_row_fn fn, void *arg);
int ms_db_row_ncols(const ms_db_row *row);
/* The value as NUL-terminated text, or NULL for SQL NULL; its length in *len (may be NULL). */
const char *ms_db_row_text(const ms_db_row *row, int col, size_t *len);
/* The value as an integer (0 for SQL NULL or text that is no number). */
int64_t ms_db_row_int(const ms_db_row *row, int col);

/* Versioned migrations: applied in order, each in its own transaction, recorded in
 * schema_migrations. postgres_sql NULL means sqlite_sql serves both. */
typedef struct ms_migration {
    int version;
    const char *name;
    const char *sqlite_sql;
    const char *postgres_sql;
} ms_migration;
/* Applies the pending ones (safe when several processes start at once). `applied` may be NULL. */
int ms_db_migrate(ms_db_conn *c, const ms_migration *list, size_t n, int *applied);

/* ---- the pool (one per loop thread) ---- */
typedef struct ms_db_pool ms_db_pool;
/* Runs on a worker thread (or inline, see MS_DB_READ) with a checked-out connection. */
typedef int (*ms_db_work_fn)(ms_db_conn *c, void *arg);
/* Runs on the owning loop with the work's return code, or MS_EPOOLTIMEOUT / MS_ECONN. */
typedef void (*ms_db_done_fn)(int rc, void *arg);

enum {
    MS_DB_WRITE = 0,
    /* A short read: on SQLite it runs inline on the loop thread's own read-only connection
     * (WAL readers never block) and `done` is called before ms_db_pool_run returns. */
    MS_DB_READ = 1,
};

/* `share` is how many pools split the process-wide size/overflow (the number of loop threads);
 * each gets at least one connection. */
int ms_db_pool_new(uv_loop_t *loop, const ms_db_config *cfg, int share, ms_db_pool **out);
/* Queues `work`; `deadline` is an absolute uv_now() time in ms after which waiting for a
 * connection ends with MS_EPOOLTIMEOUT. Never blocks the loop. */
void ms_db_pool_run(ms_db_pool *p, int flags, uint64_t deadline, ms_db_work_fn work,
                    ms_db_done_fn done, void *arg);
/*
 * One read statement without a thread: `done` gets its rows (rc 0, `r` owned by `done`, to free
 * with ms_db_result_free) or an error as ms_db_exec's (`r` NULL), on the owning loop, exactly once.
 * `sql` is borrowed until `done` runs (a string literal); `params` are copied before the call
 * returns. `deadline` (uv_now() ms, 0: none) ends the statement with MS_ETIMEDOUT.
 * On SQLite it runs inline on the loop's read connection (as MS_DB_READ), and `done` is called
 * before this returns. On PostgreSQL it is sent on one of `pipeline_conns` non-blocking
 * connections of the pool, pipelined behind the statements already sent there; `done` never runs
 * inside this call (but with MS_ESHUTDOWN once the pool is closing). A lost connection fails its
 * statements with MS_ECONN and is reopened (with backoff). Only for reads: a statement may be
 * sent again when another one sent in the same batch failed, or its connection was stuck.
 */
typedef void (*ms_db_query_done_fn)(int rc, ms_db_result *r, void *arg);
void ms_db_pool_query(ms_db_pool *p, uint64_t deadline, const char *sql, int nparams,
                      const char *const *params, ms_db_query_done_fn done, void *arg);
/* Closes idle connections now and the rest as their work ends; waiters get MS_ESHUTDOWN.
 * `on_closed` runs on the loop when everything is closed (may be NULL). */
void ms_db_pool_close(ms_db_pool *p, void (*on_closed)(void *arg), void *arg);

typedef struct ms_db_pool_stats {
    int size, overflow; /* configured, for this pool */
    int open, in_use, waiting;
    uint64_t checkouts_total, timeouts_total, reconnects_total;
    double wait_seconds_sum; /* total time spent waiting for a connection */
    /* PostgreSQL's pipelined connections of ms_db_pool_query, also counted in open and (when
     * a statement is in flight on them) in_use; each statement counts as a checkout */
    int pipelined_open, pipelined_in_flight;
} ms_db_pool_stats;
/* A consistent snapshot; callable from any thread. */
void ms_db_pool_get_stats(ms_db_pool *p, ms_db_pool_stats *out);

#endif
