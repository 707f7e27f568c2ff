/*
 * test_relay.c — the outbox relay (eventstore/relay.h) against real SQLite in a temporary
 * directory and, when MS_TEST_PG_URL names a PostgreSQL superuser URL, a real PostgreSQL (a
 * fresh database per run, dropped at the end; tests/lib/pg.sh starts a throwaway server).
 * The outbox table is the user service's migration 2. Publishers here record what they got;
 * the crash case kills a relay process between publish and mark; the local feed is checked
 * line by line, and its fsync through an interposed fsync(). PostgreSQL only: two relays on
 * one database (one publishes), rows held behind a seq gap of an uncommitted insert, and a
 * relay whose sessions the server ended (it reconnects and takes the lock again), and a mark
 * lost after its rows were published (retried without publishing them again).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "eventstore/relay.h"
#include "fixtures/pg_test_db.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/log.h"
#include "runtime/core/banned.h"

/* ---- fsync, interposed: which file was last made durable ---- */

static atomic_int fsync_calls;
static atomic_ullong fsync_last_ino;

int fsync(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0)
        atomic_store(&fsync_last_ino, (unsigned long long)st.st_ino);
    atomic_fetch_add(&fsync_calls, 1);
    return (int)syscall(SYS_fsync, fd);
}

/* ---- the outbox table: the user service's migration 2 ---- */

// clang-format off
static const ms_migration migrations[] = {
    {2, "outbox",
     MS_OUTBOX_TABLE_SQLITE, MS_OUTBOX_TABLE_POSTGRES},
};
// clang-format on

typedef struct fixture {
    bool is_ready;
    sqlite_test_db tmp;
    ms_db_config cfg;
    ms_db_conn *c; /* the test's own connection: inserts and checks */
} fixture;

/* ---- a recording publisher ---- */

typedef struct recorder {
    uv_mutex_t mu;
    int64_t seqs[2048];
    char ids[2048][37];
    size_t n;
    int calls, fail_first; /* the first fail_first calls fail */
} recorder;

static int rec_publish(void *self, const ms_outbox_message *msgs, size_t n)
{
    recorder *rec = self;
    int rc = 0;
    uv_mutex_lock(&rec->mu);
    if (++rec->calls <= rec->fail_first) {
        rc = MS_EIO;
        goto out;
    }
    for (size_t i = 0; i < n && rec->n < 2048; i++, rec->n++) {
        rec->seqs[rec->n] = msgs[i].seq;
        snprintf(rec->ids[rec->n], sizeof rec->ids[0], "%s", msgs[i].id);
    }
out:
    uv_mutex_unlock(&rec->mu);
    return rc;
}

static recorder *rec_new(int fail_first)
{
    recorder *rec = calloc(1, sizeof *rec);
    uv_mutex_init(&rec->mu);
    rec->fail_first = fail_first;
    return rec;
}

static void rec_free(recorder *rec)
{
    uv_mutex_destroy(&rec->mu);
    free(rec);
}

static size_t rec_count(recorder *rec)
{
    uv_mutex_lock(&rec->mu);
    size_t n = rec->n;
    uv_mutex_unlock(&rec->mu);
    return n;
}

static int rec_calls(recorder *rec)
{
    uv_mutex_lock(&rec->mu);
    int n = rec->calls;
    uv_mutex_unlock(&rec->mu);
    return n;
}

/* The recorder as a publisher the relay does not close (tests reuse it across relays). */
static ms_publisher rec_publisher(recorder *rec)
{
    return (ms_publisher){.publish = rec_publish, .self = rec, .name = "recorder"};
}

/* ---- helpers ---- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void insert_one(ms_db_conn *c, int i)
{
    char id[MS_UUID_LEN + 1], now[MS_TIME_LEN + 1], agg[32], payload[64];
    ms_uuid_new(id);
    ms_time_now(now);
    snprintf(agg, sizeof agg, "user-%d", i);
    snprintf(payload, sizeof payload, "{\"n\":%d,\"tags\":[\"a\",\"b\"]}", i);
    const char *p[] = {id, agg, payload, now};
    int rc = ms_db_exec(c,
                        "INSERT INTO outbox (id, aggregate_type, aggregate_id, type, payload,"
                        " created_at) VALUES ($1, 'user', $2, 'user.created', $3, $4)",
                        4, p, NULL);
    if (rc != 0)
        fail_msg("insert: %s (%s)", ms_errname(rc), ms_db_errmsg(c));
}

/* Inserts n rows in one transaction. */
static void insert_rows(ms_db_conn *c, int n)
{
    assert_int_equal(ms_db_begin(c), 0);
    for (int i = 0; i < n; i++)
        insert_one(c, i);
    int crc = ms_db_commit(c);
    if (crc != 0)
        fail_msg("commit: %s (%s)", ms_errname(crc), ms_db_errmsg(c));
}

static ms_relay *start(fixture *f, ms_publisher pub, int batch, int poll_ms)
{
    ms_relay_options opt = {.batch = batch, .poll_ms = poll_ms, .service = "test"};
    ms_relay *r = NULL;
    int rc = ms_relay_start(&f->cfg, &pub, &opt, &r);
    if (rc != 0)
        fail_msg("ms_relay_start: %s", ms_errname(rc));
    return r;
}

static ms_relay_stats stats(ms_relay *r)
{
    ms_relay_stats s;
    ms_relay_get_stats(r, &s);
    return s;
}

/* Waits until the relay has published and marked `n` messages in all. */
static void wait_published(ms_relay *r, uint64_t n, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    while (stats(r).published_total < n) {
        if (now_ms() > end)
            fail_msg("published %llu of %llu in %d ms",
                     (unsigned long long)stats(r).published_total, (unsigned long long)n,
                     timeout_ms);
        sleep_ms(2);
    }
}

/* rec holds exactly seqs first..last, in order, and the ids are those rows' ids. */
static void assert_recorded_range(fixture *f, recorder *rec, size_t from, int64_t first,
                                  int64_t last)
{
    assert_int_equal(rec_count(rec) - from, (size_t)(last - first + 1));
    ms_db_result *res = NULL;
    char a[24], b[24];
    snprintf(a, sizeof a, "%lld", (long long)first);
    snprintf(b, sizeof b, "%lld", (long long)last);
    const char *p[] = {a, b};
    assert_int_equal(ms_db_exec(f->c,
                                "SELECT id FROM outbox WHERE seq BETWEEN CAST($1 AS BIGINT) AND"
                                " CAST($2 AS BIGINT) ORDER BY seq",
                                2, p, &res),
                     0);
    assert_int_equal(ms_db_nrows(res), (int)(last - first + 1));
    for (int64_t s = first; s <= last; s++) {
        size_t i = from + (size_t)(s - first);
        assert_int_equal(rec->seqs[i], s);
        assert_string_equal(rec->ids[i], ms_db_get(res, (int)(s - first), 0));
    }
    ms_db_result_free(res);
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
    return pg_test_db_create("ms_relay");
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
    f->cfg.busy_timeout_ms = 10000;
    *state = f;
    int rc = test_db_fresh(&f->cfg, &f->tmp, "/tmp/ms_test_relay_XXXXXX", "outbox.db", &f->c);
    if (rc <= 0)
        return rc;
    migrate(f->c, migrations, sizeof migrations / sizeof migrations[0]);
    f->is_ready = true;
    return 0;
}

static void remove_dir(const char *dir)
{
    uv_fs_t req;
    uv_dirent_t ent;
    if (uv_fs_scandir(NULL, &req, dir, 0, NULL) >= 0) {
        while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
            char p[256];
            snprintf(p, sizeof p, "%s/%s", dir, ent.name);
            unlink(p);
        }
    }
    uv_fs_req_cleanup(&req);
    rmdir(dir);
}

static int teardown(void **state)
{
    fixture *f = *state;
    ms_db_close(f->c);
    if (f->tmp.dir[0])
        remove_dir(f->tmp.dir);
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

/* ---- cases ---- */

static void test_publishes_all_once_in_order(void **state)
{
    fixture *f = ready(state);
    insert_rows(f->c, 1250);
    recorder *rec = rec_new(0);
    ms_relay *r = start(f, rec_publisher(rec), 0, 50); /* default batch: 500, 500, 250 */
    wait_published(r, 1250, 5000);
    assert_recorded_range(f, rec, 0, 1, 1250);
    assert_int_equal(rec_calls(rec), 3);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"), 0);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE LENGTH(published_at) = 24"),
                     1250);
    ms_relay_stats s = stats(r);
    assert_int_equal(s.failures_total, 0);
    assert_int_equal(s.last_seq, 1250);
    assert_int_equal(s.pending, 0);
    assert_true(s.has_lock);

    ms_buf out;
    ms_buf_init(&out, 1024);
    ms_relay_collect(&out, r);
    ms_buf_add(&out, "", 1);
    assert_non_null(strstr(out.p, "# TYPE outbox_published_total counter\n"));
    assert_non_null(strstr(out.p, "outbox_published_total{service=\"test\"} 1250\n"));
    assert_non_null(strstr(out.p, "outbox_publish_failures_total{service=\"test\"} 0\n"));
    assert_non_null(strstr(out.p, "# TYPE outbox_pending gauge\n"));
    assert_non_null(strstr(out.p, "outbox_lag_seconds{service=\"test\"} "));
    ms_buf_release(&out);
    ms_relay_stop(r);
    rec_free(rec);
}

static void test_failing_publisher_retried_nothing_marked(void **state)
{
    fixture *f = ready(state);
    insert_rows(f->c, 10);
    recorder *rec = rec_new(3);
    ms_relay *r = start(f, rec_publisher(rec), 0, 50);
    /* After the second failure the relay backs off >= 50 ms twice more before succeeding. */
    uint64_t end = now_ms() + 5000;
    while (rec_calls(rec) < 2 && now_ms() < end)
        sleep_ms(1);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"), 10);
    assert_int_equal(stats(r).published_total, 0);
    wait_published(r, 10, 5000);
    assert_recorded_range(f, rec, 0, 1, 10);
    assert_int_equal(rec_calls(rec), 4); /* three failures, then the same batch once */
    assert_int_equal(stats(r).failures_total, 3);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"), 0);
    ms_relay_stop(r);
    rec_free(rec);
}

static void test_new_rows_kick_and_poll(void **state)
{
    fixture *f = ready(state);
    /* A kick wakes a relay that would otherwise sleep a minute. */
    recorder *rec = rec_new(0);
    ms_relay *r = start(f, rec_publisher(rec), 0, 60000);
    sleep_ms(100); /* idle now (a kick that comes earlier is kept for its next wait) */
    insert_rows(f->c, 5);
    ms_relay_kick(r);
    wait_published(r, 5, 30000); /* well inside the minute: the kick woke it */
    assert_recorded_range(f, rec, 0, 1, 5);
    ms_relay_stop(r);
    rec_free(rec);

    /* Without a kick, the next poll finds them. */
    rec = rec_new(0);
    r = start(f, rec_publisher(rec), 0, 50);
    sleep_ms(100);
    insert_rows(f->c, 5);
    insert_one(f->c, 99); /* a second commit while it runs */
    wait_published(r, 6, 10000);
    assert_recorded_range(f, rec, 0, 6, 11);
    ms_relay_stop(r);
    rec_free(rec);
}

static void test_stop_start_resumes(void **state)
{
    fixture *f = ready(state);
    insert_rows(f->c, 50);
    recorder *rec = rec_new(0);
    ms_relay *r = start(f, rec_publisher(rec), 20, 50);
    wait_published(r, 50, 5000);
    ms_relay_stop(r);
    insert_rows(f->c, 30);
    r = start(f, rec_publisher(rec), 20, 50);
    wait_published(r, 30, 5000);
    assert_recorded_range(f, rec, 0, 1, 80); /* no repeat, no skip */
    assert_int_equal(stats(r).last_seq, 80);
    ms_relay_stop(r);
    rec_free(rec);
}

/* ---- the crash case: a child process dies after publishing its third batch, unmarked ---- */

static ms_publisher crash_feed;

static int publish_then_die(void *self, const ms_outbox_message *msgs, size_t n)
{
    int rc = crash_feed.publish(crash_feed.self, msgs, n);
    if (rc == 0 && msgs[n - 1].seq >= 30)
        _exit(0); /* published and fsynced, never marked */
    return rc;
}

/* Reads the feed: the seq of every line; checks each line is a JSON object with a payload
 * object. Returns the number of lines. */
static size_t read_feed(const char *path, int64_t *seqs, size_t max)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[4096];
    size_t n = 0;
    while (fgets(line, sizeof line, fp)) {
        assert_true(strlen(line) > 0 && line[strlen(line) - 1] == '\n');
        json_error_t err;
        json_t *doc = json_loads(line, 0, &err);
        if (!doc)
            fail_msg("line %zu is not JSON: %s", n + 1, err.text);
        assert_true(json_is_object(doc));
        assert_true(json_is_integer(json_object_get(doc, "seq")));
        assert_true(json_is_object(json_object_get(doc, "payload")));
        assert_true(json_is_string(json_object_get(doc, "id")));
        if (n < max)
            seqs[n] = json_integer_value(json_object_get(doc, "seq"));
        n++;
        json_decref(doc);
    }
    fclose(fp);
    return n;
}

static void test_crash_between_publish_and_mark(void **state)
{
    fixture *f = ready(state);
    insert_rows(f->c, 40);
    char feed[256], dir[] = "/tmp/ms_test_feed_XXXXXX";
    assert_non_null(mkdtemp(dir));
    snprintf(feed, sizeof feed, "%s/outbox.jsonl", dir);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* the relay process that crashes */
        if (ms_publisher_file(feed, &crash_feed) != 0)
            _exit(2);
        ms_publisher pub = {.publish = publish_then_die, .name = "crashing"};
        ms_relay_options opt = {.batch = 10, .poll_ms = 50, .service = "test"};
        ms_relay *r = NULL;
        if (ms_relay_start(&f->cfg, &pub, &opt, &r) != 0)
            _exit(3);
        sleep(10);
        _exit(4); /* never got to seq 30 */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* 1..20 marked; 21..30 published but not marked; 31..40 untouched. */
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"), 20);
    assert_int_equal(scalar(f->c, "SELECT MIN(seq) FROM outbox WHERE published_at IS NULL"), 21);

    /* The restarted relay publishes 21..40: 21..30 a second time, in order. */
    ms_publisher pub;
    assert_int_equal(ms_publisher_file(feed, &pub), 0);
    ms_relay *r = start(f, pub, 10, 50);
    wait_published(r, 20, 5000);
    ms_relay_stop(r);
    int64_t seqs[64];
    size_t n = read_feed(feed, seqs, 64);
    assert_int_equal(n, 50);
    for (size_t i = 0; i < 30; i++)
        assert_int_equal(seqs[i], (int64_t)i + 1);
    for (size_t i = 30; i < 50; i++)
        assert_int_equal(seqs[i], (int64_t)i - 9); /* 21, 22, ... 40 */
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"), 0);
    remove_dir(dir);
}

/* ---- the local feed on its own ---- */

static void test_file_publisher_lines(void **state)
{
    char dir[] = "/tmp/ms_test_feed_XXXXXX", feed[256];
    assert_non_null(mkdtemp(dir));
    snprintf(feed, sizeof feed, "%s/feed.jsonl", dir);
    ms_publisher pub;
    assert_int_equal(ms_publisher_file(feed, &pub), 0);
    assert_string_equal(pub.name, "file");
    ms_outbox_message m[3] = {
        {1, "0190c2a4-0000-7000-8000-000000000001", "user", "u\"1\"", "user.created",
         "{\"email\":\"a@b.c\",\"n\":[1,2,{\"x\":null}]}", "2026-01-01T00:00:00.000Z"},
        {2, "0190c2a4-0000-7000-8000-000000000002", "order", "o-1", "OrderCreated",
         "{\n  \"pretty\": \"caf\xc3\xa9\\n\"\n}", "2026-01-01T00:00:00.001Z"},
        {3, "0190c2a4-0000-7000-8000-000000000003", "order", "o-1", "Odd", "not json {",
         "2026-01-01T00:00:00.002Z"},
    };
    int before = atomic_load(&fsync_calls);
    assert_int_equal(pub.publish(pub.self, m, 2), 0);
    struct stat st;
    assert_int_equal(stat(feed, &st), 0);
    assert_true(atomic_load(&fsync_calls) > before);
    assert_int_equal(atomic_load(&fsync_last_ino), (unsigned long long)st.st_ino);
    /* A payload that is not JSON still goes out, as a string. */
    assert_int_equal(pub.publish(pub.self, &m[2], 1), 0);
    pub.close(pub.self);

    FILE *fp = fopen(feed, "r");
    assert_non_null(fp);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, fp)) {
        json_error_t err;
        json_t *doc = json_loads(line, JSON_REJECT_DUPLICATES, &err);
        if (!doc)
            fail_msg("line %d: %s", n + 1, err.text);
        assert_int_equal(json_object_size(doc), 7);
        assert_int_equal(json_integer_value(json_object_get(doc, "seq")), m[n].seq);
        assert_string_equal(json_string_value(json_object_get(doc, "id")), m[n].id);
        assert_string_equal(json_string_value(json_object_get(doc, "aggregate_type")),
                            m[n].aggregate_type);
        assert_string_equal(json_string_value(json_object_get(doc, "aggregate_id")),
                            m[n].aggregate_id);
        assert_string_equal(json_string_value(json_object_get(doc, "type")), m[n].type);
        assert_string_equal(json_string_value(json_object_get(doc, "created_at")), m[n].created_at);
        json_t *payload = json_object_get(doc, "payload");
        if (n < 2) {
            json_t *want = json_loads(m[n].payload, 0, NULL);
            assert_true(json_is_object(payload));
            assert_true(json_equal(payload, want));
            json_decref(want);
        } else {
            assert_string_equal(json_string_value(payload), "not json {");
        }
        json_decref(doc);
        n++;
    }
    fclose(fp);
    assert_int_equal(n, 3);

    /* Reopening appends; a path that cannot be opened is MS_EIO. */
    assert_int_equal(ms_publisher_file(feed, &pub), 0);
    assert_int_equal(pub.publish(pub.self, m, 1), 0);
    pub.close(pub.self);
    fp = fopen(feed, "r");
    assert_non_null(fp);
    for (n = 0; fgets(line, sizeof line, fp); n++)
        ;
    fclose(fp);
    assert_int_equal(n, 4);
    assert_int_equal(ms_publisher_file("/nonexistent-dir/x/feed.jsonl", &pub), MS_EIO);
    remove_dir(dir);
}

/* ---- PostgreSQL only ---- */

static void test_pg_two_relays_one_publishes(void **state)
{
    fixture *f = ready(state);
    recorder *ra = rec_new(0), *rb = rec_new(0);
    ms_relay *a = start(f, rec_publisher(ra), 0, 50);
    ms_relay *b = start(f, rec_publisher(rb), 0, 50);
    uint64_t end = now_ms() + 10000;
    while (!stats(a).has_lock && !stats(b).has_lock && now_ms() < end)
        sleep_ms(2);
    if (stats(b).has_lock) { /* name the leader `a` */
        ms_relay *t = a;
        a = b;
        b = t;
        recorder *tr = ra;
        ra = rb;
        rb = tr;
    }
    assert_true(stats(a).has_lock);
    insert_rows(f->c, 100);
    ms_relay_kick(a);
    ms_relay_kick(b);
    wait_published(a, 100, 5000);
    sleep_ms(150); /* three polls of the other */
    assert_false(stats(b).has_lock);
    assert_int_equal(rec_count(rb), 0);
    assert_int_equal(stats(b).published_total, 0);
    assert_recorded_range(f, ra, 0, 1, 100);

    /* The leader goes; the other takes the lock at its next poll and carries on. */
    ms_relay_stop(a);
    insert_rows(f->c, 10);
    wait_published(b, 10, 5000);
    assert_true(stats(b).has_lock);
    assert_recorded_range(f, rb, 0, 101, 110);
    assert_int_equal(rec_count(ra), 100);
    ms_relay_stop(b);
    rec_free(ra);
    rec_free(rb);
}

static void test_pg_holds_rows_behind_uncommitted_seq(void **state)
{
    fixture *f = ready(state);
    /* seq 1 is taken by a transaction still open; seq 2 commits first. */
    ms_db_conn *slow = open_conn(&f->cfg);
    assert_int_equal(ms_db_begin(slow), 0);
    insert_one(slow, 1);
    insert_one(f->c, 2);
    recorder *rec = rec_new(0);
    ms_relay_options opt = {.poll_ms = 50, .gap_wait_ms = 700, .service = "test"};
    ms_relay *r = NULL;
    ms_publisher pub = rec_publisher(rec);
    assert_int_equal(ms_relay_start(&f->cfg, &pub, &opt, &r), 0);
    /* once it has seen row 2 (well inside gap_wait_ms of that, whatever the machine's speed):
     * 2 waits for 1 */
    for (uint64_t end = now_ms() + 10000; stats(r).pending < 1 && now_ms() < end;)
        sleep_ms(2);
    assert_int_equal(stats(r).pending, 1);
    assert_int_equal(rec_count(rec), 0);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"), 1);
    assert_int_equal(ms_db_commit(slow), 0);
    ms_relay_kick(r);
    wait_published(r, 2, 10000);
    assert_recorded_range(f, rec, 0, 1, 2);

    /* A rolled-back insert leaves a gap for good: after gap_wait_ms the relay goes on. */
    assert_int_equal(ms_db_begin(slow), 0);
    insert_one(slow, 3);
    assert_int_equal(ms_db_rollback(slow), 0);
    insert_one(f->c, 4);
    uint64_t t0 = now_ms();
    ms_relay_kick(r);
    wait_published(r, 3, 10000);
    assert_true(now_ms() - t0 >= 600);
    assert_int_equal(rec->seqs[2], 4);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"), 0);
    ms_relay_stop(r);
    ms_db_close(slow);
    rec_free(rec);
}

static void test_pg_reconnects_and_retakes_lock(void **state)
{
    fixture *f = ready(state);
    insert_rows(f->c, 5);
    recorder *rec = rec_new(0);
    ms_relay *r = start(f, rec_publisher(rec), 0, 50);
    wait_published(r, 5, 10000);
    /* The server ends the relay's sessions, reading (with the lock) and marking. */
    assert_int_equal(scalar(f->c,
                            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()"),
                     2);
    insert_rows(f->c, 5);
    ms_relay_kick(r);
    wait_published(r, 10, 5000);
    assert_true(stats(r).has_lock);
    assert_recorded_range(f, rec, 0, 1, 10);
    ms_relay_stop(r);
    rec_free(rec);
}

/* A publisher whose second call ends the relay's sessions once it has published: the mark of
 * those rows then fails on a dead connection. */
static ms_db_conn *killer_conn;
static int64_t killed; /* sessions ended: the reading one and the marking one */

static int publish_then_end_sessions(void *self, const ms_outbox_message *msgs, size_t n)
{
    int rc = rec_publish(self, msgs, n);
    if (rc == 0 && rec_calls(self) == 2) {
        killed =
            scalar(killer_conn, "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND pid <> pg_backend_pid()");
    }
    return rc;
}

static void test_pg_mark_lost_after_publish_is_retried_without_publishing_again(void **state)
{
    fixture *f = ready(state);
    insert_rows(f->c, 10);
    recorder *rec = rec_new(0);
    killer_conn = f->c;
    ms_publisher pub = {.publish = publish_then_end_sessions, .self = rec, .name = "killer"};
    ms_relay *r = start(f, pub, 5, 50); /* pages 1..5 and 6..10 */
    wait_published(r, 10, 20000);
    /* 6..10 went out once: the retry after the failed mark only marked them */
    assert_int_equal(killed, 2); /* the mark of 6..10 ran on a dead connection */
    assert_recorded_range(f, rec, 0, 1, 10);
    assert_int_equal(rec_calls(rec), 2);
    assert_int_equal(stats(r).failures_total, 0);
    assert_int_equal(scalar(f->c, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"), 0);
    /* and the relay goes on with the lock taken again */
    insert_rows(f->c, 3);
    ms_relay_kick(r);
    wait_published(r, 13, 20000);
    assert_recorded_range(f, rec, 0, 1, 13);
    assert_true(stats(r).has_lock);
    ms_relay_stop(r);
    rec_free(rec);
}

#define BOTH(fn)                                                                                   \
    cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &backend_sqlite),                \
        cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &backend_pg)
#define PG_ONLY(fn) cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &backend_pg)

int main(void)
{
    ms_log_init("test_relay", MS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        BOTH(test_publishes_all_once_in_order),
        BOTH(test_failing_publisher_retried_nothing_marked),
        BOTH(test_new_rows_kick_and_poll),
        BOTH(test_stop_start_resumes),
        BOTH(test_crash_between_publish_and_mark),
        cmocka_unit_test(test_file_publisher_lines),
        PG_ONLY(test_pg_two_relays_one_publishes),
        PG_ONLY(test_pg_holds_rows_behind_uncommitted_seq),
        PG_ONLY(test_pg_reconnects_and_retakes_lock),
        PG_ONLY(test_pg_mark_lost_after_publish_is_retried_without_publishing_again),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
