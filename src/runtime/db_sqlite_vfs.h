/*
 * db_sqlite_vfs.h — the SQLite VFS that writes each commit to the WAL in one pwrite
 * (db_sqlite_vfs.c says how, and why only synchronous=FULL connections may use it).
 * Thread-safe.
 */
#ifndef MS_DB_SQLITE_VFS_H
#define MS_DB_SQLITE_VFS_H

#define MS_DB_SQLITE_WAL_VFS "microshop-wal"

/* Registers the VFS (once) and returns its name, for sqlite3_open_v2. */
const char *ms_db__sqlite_wal_vfs(void);

#endif
