/*
 * test_sqlite_vfs.c — the WAL-gathering VFS (db_sqlite_vfs.c) under real SQLite: commits of
 * every size (one row, more than the default VFS's 128 KiB write limit, more than the buffer)
 * read back whole by another connection and after reopening; a rolled-back transaction leaves
 * nothing; a reader never sees part of a commit in progress. Each test runs twice: with a
 * writer that syncs every commit (synchronous=FULL) and with a derived one (NORMAL), whose
 * commits must be in the WAL file when they become visible, with no sync to push them out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixtures/sqlite_test_db.h"
#include "runtime/core/error.h"
#include "runtime/db/db.h"
#include "runtime/core/banned.h"

typedef struct fixture {
    sqlite_test_db tmp;
    ms_db_config cfg;
    ms_db_conn *w, *r; /* the writer (through the VFS), a read-only reader */
} fixture;

static void x(ms_db_conn *c, const char *sql, int n, const char *const *params)
{
    int rc = ms_db_exec(c, sql, n, params, NULL);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, ms_errname(rc), ms_db_errmsg(c));
}

static long long scalar(ms_db_conn *c, const char *sql)
{
    ms_db_result *res = NULL;
    int rc = ms_db_exec(c, sql, 0, NULL, &res);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, ms_errname(rc), ms_db_errmsg(c));
    long long v = strtoll(ms_db_get(res, 0, 0), NULL, 10);
    ms_db_result_free(res);
    return v;
}

static int setup_as(void **state, bool is_derived)
{
    fixture *f = calloc(1, sizeof *f);
    if (sqlite_test_db_make(&f->tmp, "/tmp/ms-vfs-XXXXXX", "t.db") != 0)
        return -1;
    f->cfg = (ms_db_config){.backend = MS_DB_SQLITE,
                            .sqlite_path = f->tmp.path,
                            .busy_timeout_ms = 2000,
                            .is_derived = is_derived};
    if (ms_db_open(&f->cfg, false, &f->w) != 0)
        return -1;
    x(f->w, "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)", 0, NULL);
    if (ms_db_open(&f->cfg, true, &f->r) != 0)
        return -1;
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_as(state, false);
}

static int setup_derived(void **state)
{
    return setup_as(state, true);
}

static int teardown(void **state)
{
    fixture *f = *state;
    ms_db_close(f->r);
    ms_db_close(f->w);
    if (sqlite_test_db_remove(&f->tmp) != 0)
        return -1;
    free(f);
    return 0;
}

/* Inserts `rows` rows of `size` bytes each in one transaction; commits or rolls back. */
static void write_rows(ms_db_conn *c, int rows, size_t size, bool commit)
{
    char *body = malloc(size + 1);
    memset(body, 'a', size);
    body[size] = '\0';
    assert_int_equal(ms_db_begin(c), 0);
    for (int i = 0; i < rows; i++) {
        body[i % size] = (char)('a' + i % 26);
        const char *p[] = {body};
        x(c, "INSERT INTO t (body) VALUES ($1)", 1, p);
    }
    assert_int_equal(commit ? ms_db_commit(c) : ms_db_rollback(c), 0);
    free(body);
}

static void test_commits_of_every_size_read_back(void **state)
{
    fixture *f = *state;
    long long want = 0, bytes = 0;
    /* one row; ~150 KiB (past the 128 KiB write limit); ~6 MiB (past the buffer) */
    const struct {
        int rows;
        size_t size;
    } commits[] = {{1, 10}, {1, 100}, {40, 3800}, {1500, 4000}, {3, 70000}};
    for (size_t i = 0; i < sizeof commits / sizeof commits[0]; i++) {
        write_rows(f->w, commits[i].rows, commits[i].size, true);
        want += commits[i].rows;
        bytes += (long long)commits[i].rows * (long long)commits[i].size;
        assert_int_equal(scalar(f->r, "SELECT COUNT(*) FROM t"), want);
        assert_int_equal(scalar(f->r, "SELECT SUM(LENGTH(body)) FROM t"), bytes);
    }
    ms_db_result *check = NULL;
    assert_int_equal(ms_db_exec(f->r, "PRAGMA quick_check", 0, NULL, &check), 0);
    assert_string_equal(ms_db_get(check, 0, 0), "ok");
    ms_db_result_free(check);
    /* a fresh connection (a restart) reads the same */
    ms_db_close(f->w);
    assert_int_equal(ms_db_open(&f->cfg, false, &f->w), 0);
    assert_int_equal(scalar(f->w, "SELECT COUNT(*) FROM t"), want);
    assert_int_equal(scalar(f->w, "SELECT SUM(LENGTH(body)) FROM t"), bytes);
}

static void test_rollback_leaves_nothing(void **state)
{
    fixture *f = *state;
    write_rows(f->w, 10, 100, true);
    write_rows(f->w, 200, 3000, false);
    assert_int_equal(scalar(f->r, "SELECT COUNT(*) FROM t"), 10);
    write_rows(f->w, 5, 100, true);
    assert_int_equal(scalar(f->r, "SELECT COUNT(*) FROM t"), 15);
    assert_int_equal(scalar(f->w, "SELECT COUNT(*) FROM t"), 15);
}

static void test_reader_sees_no_part_of_an_open_commit(void **state)
{
    fixture *f = *state;
    write_rows(f->w, 3, 100, true);
    assert_int_equal(ms_db_begin(f->w), 0);
    const char *p[] = {"pending"};
    for (int i = 0; i < 500; i++)
        x(f->w, "INSERT INTO t (body) VALUES ($1)", 1, p);
    /* the writer sees its own rows, the reader none of them */
    assert_int_equal(scalar(f->w, "SELECT COUNT(*) FROM t"), 503);
    assert_int_equal(scalar(f->r, "SELECT COUNT(*) FROM t"), 3);
    assert_int_equal(ms_db_commit(f->w), 0);
    assert_int_equal(scalar(f->r, "SELECT COUNT(*) FROM t"), 503);
}

static void test_checkpoint_and_restart_of_the_wal(void **state)
{
    fixture *f = *state;
    for (int round = 0; round < 5; round++) {
        write_rows(f->w, 300, 2000, true);
        x(f->w, "PRAGMA wal_checkpoint(TRUNCATE)", 0, NULL);
    }
    assert_int_equal(scalar(f->r, "SELECT COUNT(*) FROM t"), 1500);
    write_rows(f->w, 1, 10, true); /* the first commit into the truncated WAL */
    assert_int_equal(scalar(f->r, "SELECT COUNT(*) FROM t"), 1501);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commits_of_every_size_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_sees_no_part_of_an_open_commit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_and_restart_of_the_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commits_of_every_size_read_back, setup_derived,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rollback_leaves_nothing, setup_derived, teardown),
        cmocka_unit_test_setup_teardown(test_reader_sees_no_part_of_an_open_commit, setup_derived,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_and_restart_of_the_wal, setup_derived,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
