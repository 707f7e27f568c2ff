/*
 * db_internal.h — what db.c shares with its backends (db_sqlite.c, db_postgres.c) and the pool.
 * Include only from src/runtime/db*.c.
 *
 * A backend embeds ms_db_conn as its first member and fills `ops`; db.c dispatches through it.
 * Results are backend-neutral copies, so a result outlives the statement that made it.
 */
#ifndef MS_DB_INTERNAL_H
#define MS_DB_INTERNAL_H

#include <stdarg.h>

#include "runtime/db/db.h"
#include "runtime/obs/trace.h"

typedef struct ms_db_ops {
    int (*exec)(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
                ms_db_result **out);
    int (*each)(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
                ms_db_row_fn fn, void *arg);
    /* NULL where the backend has no rowids */
    int (*insert_rowid)(ms_db_conn *c, const char *sql, int nparams, const char *const *params,
                        int64_t *rowid);
    int (*exec_script)(ms_db_conn *c, const char *sql);
    void (*close)(ms_db_conn *c);
    const char *begin_sql;
} ms_db_ops;

struct ms_db_conn {
    const ms_db_ops *ops;
    ms_db_backend backend;
    uint64_t deadline_ms; /* see ms_db_set_deadline; 0: none */
    char errmsg[512];
    /* PostgreSQL: the server as libpq resolved it (a host, an address or a socket directory),
     * for spans; "" and 0 when unknown, and for SQLite */
    char server_address[128];
    int server_port;
};

/* A row being walked by ms_db_each: the backend's handle and its accessors. */
struct ms_db_row {
    const char *(*text)(const ms_db_row *row, int col, size_t *len);
    int64_t (*integer)(const ms_db_row *row, int col);
    void *handle; /* sqlite3_stmt, or PGresult */
    int index, ncols;
};

/* Now, on the clock of deadlines (ms). */
uint64_t ms_db__now_ms(void);

/* Cells are NUL-terminated texts in blocks that never move once written (a full block is
 * followed by a new one, twice as large up to a cap), so a big result is built without
 * copying what it holds already; cells[i] == NULL marks SQL NULL. */
typedef struct ms_db_block {
    struct ms_db_block *next; /* the one filled before */
    size_t len, cap;
    char data[];
} ms_db_block;
struct ms_db_result {
    int ncols;
    long long affected;
    const char **cells;
    size_t ncells, cap_cells;
    ms_db_block *block; /* the one being filled */
};

ms_db_result *ms_db__result_new(int ncols);
/* Appends the next cell, row by row; v == NULL is SQL NULL. */
void ms_db__result_push(ms_db_result *r, const char *v, size_t n);
void ms_db__set_error(ms_db_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Spans (db_trace.c): a CLIENT span for one statement on `c` when the calling thread's current
 * context is sampled and spans are recorded, else NULL at the cost of a thread-local read. End
 * it with the statement's return code (0, a positive stop from ms_db_each's fn, or MS_E*). */
ms_span *ms_db__span_start(const ms_db_conn *c, const char *sql);
void ms_db__span_end(ms_span *s, const ms_db_conn *c, int rc);
/* What a span says of `sql`: its first keyword in upper case ("" when none), and the one table
 * it reads or writes ("" when it names none, or several). Tests call it directly. */
void ms_db__sql_summary(const char *sql, char *op, size_t op_size, char *table, size_t table_size);
/* `sql` as a span's db.query.text: at most `size` - 1 bytes (cut at a character boundary), with
 * every '...' string literal replaced by '?', so that a value written into the text instead of
 * passed as a parameter never leaves the process either. */
void ms_db__sql_sanitize(const char *sql, char *out, size_t size);

int ms_db__sqlite_open(const ms_db_config *cfg, bool readonly, ms_db_conn **out);
/* SQLite in WAL mode: a value that changes whenever any connection of any process commits,
 * read from the WAL index header in shared memory without a system call. MS_EIO when it cannot
 * be read (no WAL index yet): then a snapshot must not be reused. */
int ms_db__sqlite_change_token(ms_db_conn *c, uint64_t *out);
int ms_db__pg_open(const ms_db_config *cfg, ms_db_conn **out);

#endif
