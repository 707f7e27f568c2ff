/*
 * sqlite_test_db.h — a SQLite database file of one test case, in a new temporary directory of
 * its own (so cases never share a file, nor its -wal and -shm), and removing it afterwards.
 * Included by the unit-test programs that open SQLite files; the functions are static inline
 * because not every program uses each of them.
 */
#ifndef MS_SQLITE_TEST_DB_H
#define MS_SQLITE_TEST_DB_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct sqlite_test_db {
    char dir[64];   /* the temporary directory, "" until made */
    char path[128]; /* the database file in it */
} sqlite_test_db;

/* Makes the directory from `tmpl` (a path ending in XXXXXX) and names `file` in it; -1 when
 * mkdtemp fails. */
static inline int sqlite_test_db_make(sqlite_test_db *t, const char *tmpl, const char *file)
{
    snprintf(t->dir, sizeof t->dir, "%s", tmpl);
    if (!mkdtemp(t->dir)) {
        t->dir[0] = '\0'; /* nothing to remove */
        return -1;
    }
    snprintf(t->path, sizeof t->path, "%s/%s", t->dir, file);
    return 0;
}

/* Removes a database file and the WAL-mode files SQLite keeps beside it. */
static inline void sqlite_test_db_unlink(const char *path)
{
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
        unlink(p);
    }
}

/* Removes the database and its directory (nothing when none was made); -1 when the directory
 * is still there, holding a file the case left. */
static inline int sqlite_test_db_remove(sqlite_test_db *t)
{
    if (!t->dir[0])
        return 0;
    sqlite_test_db_unlink(t->path);
    return rmdir(t->dir);
}

#endif
