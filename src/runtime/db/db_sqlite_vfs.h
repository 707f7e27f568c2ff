/*
 * db_sqlite_vfs.h — the SQLite VFS that writes each commit to the WAL in one pwrite
 * (db_sqlite_vfs.c says how, and why any synchronous level may use it).
 * Thread-safe.
 */
#ifndef MS_DB_SQLITE_VFS_H
#define MS_DB_SQLITE_VFS_H

#include <stdbool.h>

#define MS_DB_SQLITE_WAL_VFS          "microshop-wal"
#define MS_DB_SQLITE_WAL_VFS_DEFERRED "microshop-wal-deferred"

/* Registers the VFSes (once) and returns the name of one, for sqlite3_open_v2: with
 * `defers_sync`, the one whose WAL syncs are left to the connection's owner. */
const char *ms_db__sqlite_wal_vfs(bool defers_sync);

#endif
