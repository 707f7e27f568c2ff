/*
 * test_db.c — the storage interface (db.h) against real SQLite and, when MS_TEST_PG_URL names a
 * PostgreSQL superuser URL, a real PostgreSQL (a fresh database per run, dropped at the end;
 * tests/lib/pg.sh starts a throwaway server). Every case runs on both backends.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixtures/pg_test_db.h"
#include "runtime/core/error.h"
#include "runtime/db/db.h"
#include "runtime/db/db_internal.h"
#include "runtime/core/banned.h"

typedef struct fixture {
    bool is_ready;
    sqlite_test_db tmp;
    ms_db_config cfg;
} fixture;

static ms_db_result *q(ms_db_conn *c, const char *sql, int n, const char *const *params)
{
    ms_db_result *r = NULL;
    int rc = ms_db_exec(c, sql, n, params, &r);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, ms_errname(rc), ms_db_errmsg(c));
    return r;
}

static long long count_rows(ms_db_conn *c, const char *table)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", table);
    ms_db_result *r = q(c, sql, 0, NULL);
    long long n = atoll(ms_db_get(r, 0, 0));
    ms_db_result_free(r);
    return n;
}

static int group_setup(void **state)
{
    return pg_test_db_create("ms_unit");
}

static int group_teardown(void **state)
{
    return pg_test_db_drop();
}

static int setup(void **state)
{
    ms_db_backend backend = *(ms_db_backend *)*state;
    fixture *f = calloc(1, sizeof *f);
    f->cfg.backend = backend;
    f->cfg.busy_timeout_ms = 5000;
    int rc = test_db_fresh(&f->cfg, &f->tmp, "/tmp/ms_test_db_XXXXXX", "test.db", NULL);
    if (rc < 0) {
        free(f);
        return -1;
    }
    f->is_ready = rc > 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    sqlite_test_db_remove(&f->tmp);
    free(f);
    return 0;
}

static fixture *ready(void **state)
{
    fixture *f = *state;
    if (!f->is_ready)
        skip(); /* PostgreSQL case without MS_TEST_PG_URL */
    return f;
}

static void test_rows_nulls_affected(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *c = open_conn(&f->cfg);
    x(c, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)");
    const char *rows[][3] = {{"1", "apple", "5"}, {"2", NULL, "7"}, {"3", "", "0"}};
    for (int i = 0; i < 3; i++) {
        ms_db_result *r = q(c, "INSERT INTO items (id, name, qty) VALUES ($1, $2, $3)", 3, rows[i]);
        assert_int_equal(ms_db_affected(r), 1);
        assert_int_equal(ms_db_nrows(r), 0);
        ms_db_result_free(r);
    }
    const char *min[] = {"1"};
    ms_db_result *r = q(c, "UPDATE items SET qty = qty + 1 WHERE qty > $1", 1, min);
    assert_int_equal(ms_db_affected(r), 2);
    ms_db_result_free(r);

    r = q(c, "SELECT id, name, qty FROM items ORDER BY id", 0, NULL);
    assert_int_equal(ms_db_nrows(r), 3);
    assert_int_equal(ms_db_ncols(r), 3);
    assert_int_equal(ms_db_affected(r), 0);
    assert_string_equal(ms_db_get(r, 0, 1), "apple");
    assert_string_equal(ms_db_get(r, 0, 2), "6");
    assert_null(ms_db_get(r, 1, 1));
    assert_string_equal(ms_db_get(r, 1, 2), "8");
    assert_non_null(ms_db_get(r, 2, 1)); /* empty text is not NULL */
    assert_string_equal(ms_db_get(r, 2, 1), "");
    assert_string_equal(ms_db_get(r, 2, 2), "0");
    ms_db_result_free(r);

    const char *missing[] = {"99"};
    r = q(c, "SELECT id, name FROM items WHERE id = $1", 1, missing);
    assert_int_equal(ms_db_nrows(r), 0);
    assert_int_equal(ms_db_ncols(r), 2);
    ms_db_result_free(r);
    r = q(c, "DELETE FROM items WHERE id = $1", 1, missing);
    assert_int_equal(ms_db_affected(r), 0);
    ms_db_result_free(r);
    const char *two[] = {"2"};
    r = q(c, "DELETE FROM items WHERE id = $1 RETURNING qty", 1, two);
    assert_int_equal(ms_db_affected(r), 1);
    assert_int_equal(ms_db_nrows(r), 1);
    assert_string_equal(ms_db_get(r, 0, 0), "8");
    ms_db_result_free(r);
    assert_int_equal(count_rows(c, "items"), 2);
    ms_db_close(c);
}

static void test_placeholders_out_of_order(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *c = open_conn(&f->cfg);
    x(c, "CREATE TABLE t (a TEXT, b TEXT)");
    const char *ba[] = {"B", "A"};
    ms_db_result *r = q(c, "INSERT INTO t (a, b) VALUES ($2, $1)", 2, ba);
    ms_db_result_free(r);
    x(c, "INSERT INTO t (a, b) VALUES ('B', 'A')");
    r = q(c, "SELECT a, b FROM t WHERE a = $2 AND b = $1", 2, ba);
    assert_int_equal(ms_db_nrows(r), 1);
    assert_string_equal(ms_db_get(r, 0, 0), "A");
    assert_string_equal(ms_db_get(r, 0, 1), "B");
    ms_db_result_free(r);
    /* One parameter used twice. */
    const char *only_a[] = {"A"};
    r = q(c, "SELECT a FROM t WHERE a = $1 OR b = $1 ORDER BY a", 1, only_a);
    assert_int_equal(ms_db_nrows(r), 2);
    ms_db_result_free(r);
    /* A placeholder without a value is an error, and the connection stays usable. */
    assert_int_equal(ms_db_exec(c, "SELECT a FROM t WHERE a = $2", 1, only_a, &r), MS_EDB);
    assert_null(r);
    assert_true(strlen(ms_db_errmsg(c)) > 0);
    assert_int_equal(ms_db_ping(c), 0);
    ms_db_close(c);
}

static void test_unique_violation_is_conflict(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *c = open_conn(&f->cfg);
    x(c, "CREATE TABLE users (email TEXT UNIQUE NOT NULL, n INTEGER)");
    const char *first[] = {"secret-a@example.com", "1"};
    ms_db_result_free(q(c, "INSERT INTO users (email, n) VALUES ($1, $2)", 2, first));
    ms_db_result *r = NULL;
    const char *dup[] = {"secret-a@example.com", "2"};
    assert_int_equal(ms_db_exec(c, "INSERT INTO users (email, n) VALUES ($1, $2)", 2, dup, &r),
                     MS_ECONFLICT);
    assert_null(r);
    assert_true(strlen(ms_db_errmsg(c)) > 0);
    assert_null(strstr(ms_db_errmsg(c), "secret")); /* never parameter values */

    /* In a transaction: the failed statement's batch leaves nothing behind. */
    assert_int_equal(ms_db_begin(c), 0);
    const char *other[] = {"b@example.com", "3"};
    ms_db_result_free(q(c, "INSERT INTO users (email, n) VALUES ($1, $2)", 2, other));
    assert_int_equal(ms_db_exec(c, "INSERT INTO users (email, n) VALUES ($1, $2)", 2, dup, NULL),
                     MS_ECONFLICT);
    assert_int_equal(ms_db_rollback(c), 0);

    r = q(c, "SELECT email, n FROM users", 0, NULL);
    assert_int_equal(ms_db_nrows(r), 1);
    assert_string_equal(ms_db_get(r, 0, 0), "secret-a@example.com");
    assert_string_equal(ms_db_get(r, 0, 1), "1");
    ms_db_result_free(r);
    /* NOT NULL and foreign keys (on by default on SQLite too) are conflicts as well. */
    const char *null_email[] = {NULL, "4"};
    assert_int_equal(
        ms_db_exec(c, "INSERT INTO users (email, n) VALUES ($1, $2)", 2, null_email, NULL),
        MS_ECONFLICT);
    x(c, "CREATE TABLE orders (id INTEGER PRIMARY KEY, email TEXT NOT NULL "
         "REFERENCES users (email))");
    const char *orphan[] = {"nobody@example.com"};
    assert_int_equal(
        ms_db_exec(c, "INSERT INTO orders (id, email) VALUES (1, $1)", 1, orphan, NULL),
        MS_ECONFLICT);
    assert_int_equal(count_rows(c, "orders"), 0);
    ms_db_close(c);
}

static void test_rollback_and_commit(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *c = open_conn(&f->cfg);
    ms_db_conn *other = open_conn(&f->cfg);
    x(c, "CREATE TABLE t (n INTEGER)");
    assert_int_equal(ms_db_begin(c), 0);
    x(c, "INSERT INTO t VALUES (1)");
    x(c, "INSERT INTO t VALUES (2)");
    assert_int_equal(count_rows(c, "t"), 2);
    assert_int_equal(count_rows(other, "t"), 0); /* not visible before commit */
    assert_int_equal(ms_db_rollback(c), 0);
    assert_int_equal(count_rows(c, "t"), 0);

    assert_int_equal(ms_db_begin(c), 0);
    x(c, "INSERT INTO t VALUES (3)");
    assert_int_equal(ms_db_commit(c), 0);
    assert_int_equal(count_rows(other, "t"), 1);
    ms_db_close(other);
    ms_db_close(c);
}

static const ms_migration migrations[] = {
    {1, "create items", "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT)",
     "CREATE TABLE items (id BIGSERIAL PRIMARY KEY, name TEXT)"},
    {2, "seed",
     "INSERT INTO items (name) VALUES ('first'); CREATE INDEX items_name ON items (name)", NULL},
    {5, "add qty", "ALTER TABLE items ADD COLUMN qty INTEGER NOT NULL DEFAULT 0", NULL},
};

static void test_migrations_applied_once(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *c = open_conn(&f->cfg);
    int applied = -1;
    assert_int_equal(ms_db_migrate(c, migrations, 2, &applied), 0);
    assert_int_equal(applied, 2);
    assert_int_equal(ms_db_migrate(c, migrations, 2, &applied), 0);
    assert_int_equal(applied, 0);
    ms_db_close(c);

    c = open_conn(&f->cfg);
    assert_int_equal(ms_db_migrate(c, migrations, 3, &applied), 0);
    assert_int_equal(applied, 1); /* only the new one */
    assert_int_equal(ms_db_migrate(c, migrations, 3, NULL), 0);
    ms_db_result *r = q(c, "SELECT id, name, qty FROM items", 0, NULL);
    assert_int_equal(ms_db_nrows(r), 1); /* the seed ran once */
    assert_string_equal(ms_db_get(r, 0, 0), "1");
    assert_string_equal(ms_db_get(r, 0, 1), "first");
    assert_string_equal(ms_db_get(r, 0, 2), "0");
    ms_db_result_free(r);
    r = q(c, "SELECT version FROM schema_migrations ORDER BY version", 0, NULL);
    assert_int_equal(ms_db_nrows(r), 3);
    assert_string_equal(ms_db_get(r, 2, 0), "5");
    ms_db_result_free(r);
    ms_db_close(c);
}

static void test_failed_migration_rolls_back(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *c = open_conn(&f->cfg);
    const ms_migration bad[] = {
        migrations[0],
        {2, "half done", "CREATE TABLE extra (x INTEGER); INSERT INTO missing VALUES (1)", NULL},
        {3, "never reached", "CREATE TABLE later (x INTEGER)", NULL},
    };
    int applied = -1;
    assert_int_equal(ms_db_migrate(c, bad, 3, &applied), MS_EDB);
    assert_int_equal(applied, 1);
    assert_true(strlen(ms_db_errmsg(c)) > 0);
    assert_int_equal(count_rows(c, "schema_migrations"), 1);
    ms_db_result *r = NULL;
    assert_int_equal(ms_db_exec(c, "SELECT * FROM extra", 0, NULL, &r), MS_EDB);
    assert_int_equal(ms_db_exec(c, "SELECT * FROM later", 0, NULL, &r), MS_EDB);
    /* Versions out of order are refused before anything runs. */
    const ms_migration unordered[] = {migrations[2], migrations[1]};
    assert_int_equal(ms_db_migrate(c, unordered, 2, &applied), MS_EINVAL);
    assert_int_equal(count_rows(c, "schema_migrations"), 1);
    ms_db_close(c);
}

typedef struct migrator {
    const ms_db_config *cfg;
    uv_barrier_t *start;
    int rc, applied;
} migrator;

static void migrate_thread(void *arg)
{
    migrator *m = arg;
    ms_db_conn *c = NULL;
    m->rc = ms_db_open(m->cfg, false, &c);
    uv_barrier_wait(m->start);
    if (m->rc == 0)
        m->rc = ms_db_migrate(c, migrations, 3, &m->applied);
    ms_db_close(c);
}

static void test_concurrent_migrations(void **state)
{
    fixture *f = ready(state);
    enum { N = 4 };
    uv_barrier_t start;
    uv_barrier_init(&start, N);
    migrator m[N];
    uv_thread_t t[N];
    for (int i = 0; i < N; i++) {
        m[i] = (migrator){&f->cfg, &start, -1, 0};
        assert_int_equal(uv_thread_create(&t[i], migrate_thread, &m[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < N; i++) {
        uv_thread_join(&t[i]);
        assert_int_equal(m[i].rc, 0);
        total += m[i].applied;
    }
    uv_barrier_destroy(&start);
    assert_int_equal(total, 3); /* each migration applied by exactly one process */
    ms_db_conn *c = open_conn(&f->cfg);
    assert_int_equal(count_rows(c, "items"), 1);
    assert_int_equal(count_rows(c, "schema_migrations"), 3);
    ms_db_close(c);
}

static void test_statement_cache_keys_on_text(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *c = open_conn(&f->cfg);
    char sql[64]; /* one buffer, many statements: the cache must not go by address */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 100; i++) {
            snprintf(sql, sizeof sql, "SELECT %d", i);
            ms_db_result *r = q(c, sql, 0, NULL);
            char want[16];
            snprintf(want, sizeof want, "%d", i);
            assert_string_equal(ms_db_get(r, 0, 0), want);
            ms_db_result_free(r);
        }
    }
    /* A cached statement still sees a table created after it was first prepared. */
    x(c, "CREATE TABLE t (a INTEGER)");
    x(c, "INSERT INTO t VALUES (1)");
    ms_db_result *r = q(c, "SELECT * FROM t", 0, NULL);
    assert_int_equal(ms_db_ncols(r), 1);
    ms_db_result_free(r);
    x(c, "ALTER TABLE t ADD COLUMN b TEXT");
    r = q(c, "SELECT * FROM t", 0, NULL);
    assert_int_equal(ms_db_ncols(r), 2);
    ms_db_result_free(r);
    ms_db_close(c);
}

static void test_bad_sql_is_db_error(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *c = open_conn(&f->cfg);
    ms_db_result *r = NULL;
    assert_int_equal(ms_db_exec(c, "SELEC nothing", 0, NULL, &r), MS_EDB);
    assert_null(r);
    assert_true(strlen(ms_db_errmsg(c)) > 0);
    assert_int_equal(ms_db_exec(c, "SELECT * FROM no_such_table", 0, NULL, NULL), MS_EDB);
    assert_int_equal(ms_db_exec_script(c, "CREATE TABLE a (x INTEGER); CREATE TABLE b (y INTEGER)"),
                     0);
    assert_int_equal(count_rows(c, "b"), 0);
    assert_int_equal(ms_db_ping(c), 0);
    assert_int_equal(ms_db_backend_of(c), f->cfg.backend);
    ms_db_close(c);
}

/* ---- SQLite only ---- */

typedef struct opener {
    const ms_db_config *cfg;
    uv_barrier_t *start;
    int rc;
} opener;

static void open_thread(void *arg)
{
    opener *o = arg;
    uv_barrier_wait(o->start);
    ms_db_conn *c = NULL;
    o->rc = ms_db_open(o->cfg, false, &c);
    ms_db_close(c);
}

/* Connections opening one new file at the same moment all switch it to WAL: SQLite answers
 * the lock upgrade they race for with SQLITE_BUSY without asking the busy handler, and an
 * open must wait that out like any other lock, not fail. */
static void test_sqlite_concurrent_first_opens(void **state)
{
    fixture *f = ready(state);
    enum { N = 8, ROUNDS = 25 };
    for (int round = 0; round < ROUNDS; round++) {
        char path[200];
        snprintf(path, sizeof path, "%s/fresh-%d.db", f->tmp.dir, round);
        ms_db_config cfg = f->cfg;
        cfg.sqlite_path = path;
        uv_barrier_t start;
        uv_barrier_init(&start, N);
        opener o[N];
        uv_thread_t t[N];
        for (int i = 0; i < N; i++) {
            o[i] = (opener){&cfg, &start, -1};
            assert_int_equal(uv_thread_create(&t[i], open_thread, &o[i]), 0);
        }
        for (int i = 0; i < N; i++) {
            uv_thread_join(&t[i]);
            assert_int_equal(o[i].rc, 0);
        }
        uv_barrier_destroy(&start);
        sqlite_test_db_unlink(path);
    }
}

static void test_sqlite_busy_and_readonly(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *writer = open_conn(&f->cfg);
    x(writer, "CREATE TABLE t (n INTEGER)");
    x(writer, "INSERT INTO t VALUES (1)");
    ms_db_config quick = f->cfg;
    quick.busy_timeout_ms = 50;
    ms_db_conn *second = open_conn(&quick);
    assert_int_equal(ms_db_begin(writer), 0);
    uint64_t t0 = uv_hrtime();
    assert_int_equal(ms_db_begin(second), MS_EBUSY);
    assert_true(uv_hrtime() - t0 >= 40 * 1000000ULL); /* it did wait for the busy timeout */

    ms_db_conn *ro = NULL;
    assert_int_equal(ms_db_open(&f->cfg, true, &ro), 0);
    assert_int_equal(count_rows(ro, "t"), 1); /* WAL: reads while a writer holds the lock */
    assert_int_equal(ms_db_exec(ro, "INSERT INTO t VALUES (2)", 0, NULL, NULL), MS_EDB);
    assert_int_equal(ms_db_commit(writer), 0);
    ms_db_result *r = q(writer, "PRAGMA journal_mode", 0, NULL);
    assert_string_equal(ms_db_get(r, 0, 0), "wal");
    ms_db_result_free(r);
    r = q(writer, "PRAGMA synchronous", 0, NULL);
    assert_string_equal(ms_db_get(r, 0, 0), "2"); /* FULL */
    ms_db_result_free(r);
    ms_db_close(ro);
    ms_db_close(second);
    ms_db_close(writer);

    ms_db_config missing = f->cfg;
    missing.sqlite_path = "/nonexistent-dir/x.db";
    ms_db_conn *none = NULL;
    assert_int_equal(ms_db_open(&missing, false, &none), MS_ECONN);
    assert_null(none);
}

/* How many of this process's descriptors are open on `path`. */
static int fds_open_on(const char *path)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        char link[300], target[512];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len > 0) {
            target[len] = '\0';
            n += strcmp(target, path) == 0;
        }
    }
    closedir(d);
    return n;
}

/*
 * The change token (a loop's cheap "has anything committed?") reads the WAL index through
 * SQLite's own mapping of the -shm file. On a connection that had read nothing yet, it used to
 * make that mapping before SQLite had opened the connection's WAL, and SQLite unmaps only at
 * WAL close: after the last close the -shm descriptor stayed open and SQLite's shared-memory
 * node leaked (LeakSanitizer saw it at a user server's exit, when a loop's reader had served
 * only /ready).
 */
static void test_sqlite_change_token_leaves_nothing_open(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *writer = open_conn(&f->cfg);
    x(writer, "CREATE TABLE t (n INTEGER)");
    ms_db_conn *ro = NULL;
    assert_int_equal(ms_db_open(&f->cfg, true, &ro), 0);
    uint64_t before, after;
    assert_int_equal(ms_db__sqlite_change_token(ro, &before), 0); /* its first use */
    x(writer, "INSERT INTO t VALUES (1)");
    assert_int_equal(ms_db__sqlite_change_token(ro, &after), 0);
    assert_true(after != before);
    assert_int_equal(ms_db__sqlite_change_token(ro, &before), 0);
    assert_true(after == before);
    char shm[200];
    snprintf(shm, sizeof shm, "%s-shm", f->tmp.path);
    assert_true(fds_open_on(shm) > 0); /* the count below sees the descriptor when there is one */
    ms_db_close(ro);
    ms_db_close(writer);
    assert_int_equal(fds_open_on(shm), 0);
}

/* ---- PostgreSQL only ---- */

static void test_pg_timeouts_locks_and_lost_connections(void **state)
{
    fixture *f = ready(state);
    ms_db_config quick = f->cfg;
    quick.busy_timeout_ms = 100;
    ms_db_conn *c = open_conn(&quick);
    uint64_t t0 = uv_hrtime();
    assert_int_equal(ms_db_exec(c, "SELECT pg_sleep(30)", 0, NULL, NULL), MS_ETIMEDOUT);
    assert_true(uv_hrtime() - t0 < 30000 * 1000000ULL); /* cut short, not run to its end */

    x(c, "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    x(c, "INSERT INTO t VALUES (1)");
    ms_db_conn *other = open_conn(&f->cfg);
    assert_int_equal(ms_db_begin(other), 0);
    x(other, "SELECT id FROM t WHERE id = 1 FOR UPDATE");
    assert_int_equal(
        ms_db_exec(c, "SELECT id FROM t WHERE id = 1 FOR UPDATE NOWAIT", 0, NULL, NULL), MS_EBUSY);
    assert_int_equal(ms_db_rollback(other), 0);

    /* Data errors quote the input: the message must not. */
    const char *secret[] = {"secret-42x"};
    assert_int_equal(ms_db_exec(c, "SELECT $1::integer", 1, secret, NULL), MS_EDB);
    assert_null(strstr(ms_db_errmsg(c), "secret"));

    /* A session killed by the server is a lost connection. */
    ms_db_result *r = q(c, "SELECT pg_backend_pid()", 0, NULL);
    const char *pid[] = {ms_db_get(r, 0, 0)};
    ms_db_result_free(q(other, "SELECT pg_terminate_backend($1::integer)", 1, pid));
    ms_db_result_free(r);
    assert_int_equal(ms_db_ping(c), MS_ECONN);
    ms_db_close(other);
    ms_db_close(c);

    ms_db_config nowhere = f->cfg;
    nowhere.pg_conninfo = "postgresql://postgres@127.0.0.1:1/postgres";
    ms_db_conn *none = NULL;
    assert_int_equal(ms_db_open(&nowhere, false, &none), MS_ECONN);
    assert_null(none);
}

/* ---- streaming reads and rowids ---- */

typedef struct walk {
    int rows, stop_at;
    char names[4][16];
    int64_t qty_sum;
    int nulls, ncols;
} walk;

static int on_row(const ms_db_row *row, void *arg)
{
    walk *w = arg;
    w->ncols = ms_db_row_ncols(row);
    size_t len = 99;
    const char *name = ms_db_row_text(row, 1, &len);
    if (!name) {
        w->nulls++;
        assert_int_equal(len, 0);
    } else {
        assert_int_equal(len, strlen(name));
        snprintf(w->names[w->rows % 4], sizeof w->names[0], "%s", name);
    }
    w->qty_sum += ms_db_row_int(row, 2);
    assert_int_equal(ms_db_row_int(row, 0), w->rows + 1); /* ids in order */
    if (++w->rows == w->stop_at)
        return 7; /* stops the walk, returned as is */
    return 0;
}

static int fail_on_row(const ms_db_row *row, void *arg)
{
    return MS_ECONFLICT;
}

static void test_each_streams_rows(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *c = open_conn(&f->cfg);
    x(c, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty BIGINT)");
    x(c, "INSERT INTO items (id, name, qty) VALUES (1, 'apple', 5), (2, NULL, 7), "
         "(3, '', -2), (4, 'pear', 9000000000)");
    const char *min[] = {"0"};
    const char *sql = "SELECT id, name, qty FROM items WHERE id > CAST($1 AS BIGINT) ORDER BY id";
    walk w = {0};
    assert_int_equal(ms_db_each(c, sql, 1, min, on_row, &w), 0);
    assert_int_equal(w.rows, 4);
    assert_int_equal(w.ncols, 3);
    assert_int_equal(w.nulls, 1);
    assert_string_equal(w.names[0], "apple");
    assert_string_equal(w.names[2], ""); /* empty text is not NULL */
    assert_string_equal(w.names[3], "pear");
    assert_int_equal(w.qty_sum, 5 + 7 - 2 + 9000000000LL);

    /* A nonzero return stops the walk and is returned; the statement can run again. */
    walk stop = {.stop_at = 2};
    assert_int_equal(ms_db_each(c, sql, 1, min, on_row, &stop), 7);
    assert_int_equal(stop.rows, 2);
    assert_int_equal(ms_db_each(c, sql, 1, min, fail_on_row, NULL), MS_ECONFLICT);
    walk again = {0};
    assert_int_equal(ms_db_each(c, sql, 1, min, on_row, &again), 0);
    assert_int_equal(again.rows, 4);

    /* No rows; errors as ms_db_exec's. */
    const char *all[] = {"4"};
    walk none = {0};
    assert_int_equal(ms_db_each(c, sql, 1, all, on_row, &none), 0);
    assert_int_equal(none.rows, 0);
    assert_int_equal(ms_db_each(c, "SELECT nope FROM items", 0, NULL, on_row, &none), MS_EDB);
    x(c, "CREATE TABLE u (k TEXT UNIQUE)");
    x(c, "INSERT INTO u (k) VALUES ('a')");
    assert_int_equal(
        ms_db_each(c, "INSERT INTO u (k) VALUES ('a') RETURNING k", 0, NULL, on_row, &none),
        MS_ECONFLICT);
    assert_int_equal(ms_db_ping(c), 0);

    /* A read does not keep its snapshot: a later commit is seen by the next walk. */
    x(c, "INSERT INTO items (id, name, qty) VALUES (5, 'plum', 1)");
    walk more = {0};
    assert_int_equal(ms_db_each(c, sql, 1, min, on_row, &more), 0);
    assert_int_equal(more.rows, 5);
    ms_db_close(c);
}

static void test_insert_rowid(void **state)
{
    fixture *f = ready(state);
    ms_db_conn *c = open_conn(&f->cfg);
    x(c, f->cfg.backend == MS_DB_SQLITE
             ? "CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT UNIQUE NOT NULL)"
             : "CREATE TABLE log (seq BIGSERIAL PRIMARY KEY, k TEXT UNIQUE NOT NULL)");
    const char *sql = "INSERT INTO log (k) VALUES ($1) ON CONFLICT DO NOTHING";
    const char *a[] = {"a"}, *b[] = {"b"}, *null_k[] = {NULL};
    int64_t rowid = -1;
    if (f->cfg.backend == MS_DB_POSTGRES) { /* no rowids: RETURNING is the way there */
        assert_int_equal(ms_db_insert_rowid(c, sql, 1, a, &rowid), MS_EINVAL);
        assert_int_equal(rowid, 0);
        ms_db_close(c);
        return;
    }
    assert_int_equal(ms_db_insert_rowid(c, sql, 1, a, &rowid), 0);
    assert_int_equal(rowid, 1);
    assert_int_equal(ms_db_insert_rowid(c, sql, 1, b, &rowid), 0);
    assert_int_equal(rowid, 2);
    /* Skipped by ON CONFLICT DO NOTHING: 0, not the previous insert's rowid. */
    assert_int_equal(ms_db_insert_rowid(c, sql, 1, a, &rowid), 0);
    assert_int_equal(rowid, 0);
    /* Other constraints still fail. */
    rowid = -1;
    assert_int_equal(ms_db_insert_rowid(c, sql, 1, null_k, &rowid), MS_ECONFLICT);
    assert_int_equal(rowid, 0);
    assert_int_equal(count_rows(c, "log"), 2);
    ms_db_close(c);
}

#define BOTH(f)                                                                                    \
    {#f "/sqlite", f, setup, teardown, &backend_sqlite},                                           \
    {                                                                                              \
#f "/postgres", f, setup, teardown, &backend_pg                                            \
    }

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_rows_nulls_affected),
        BOTH(test_placeholders_out_of_order),
        BOTH(test_unique_violation_is_conflict),
        BOTH(test_rollback_and_commit),
        BOTH(test_migrations_applied_once),
        BOTH(test_failed_migration_rolls_back),
        BOTH(test_concurrent_migrations),
        BOTH(test_statement_cache_keys_on_text),
        BOTH(test_bad_sql_is_db_error),
        BOTH(test_each_streams_rows),
        BOTH(test_insert_rowid),
        {"test_sqlite_busy_and_readonly", test_sqlite_busy_and_readonly, setup, teardown,
         &backend_sqlite},
        {"test_sqlite_concurrent_first_opens", test_sqlite_concurrent_first_opens, setup, teardown,
         &backend_sqlite},
        {"test_sqlite_change_token_leaves_nothing_open",
         test_sqlite_change_token_leaves_nothing_open, setup, teardown, &backend_sqlite},
        {"test_pg_timeouts_locks_and_lost_connections", test_pg_timeouts_locks_and_lost_connections,
         setup, teardown, &backend_pg},
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
