/*
 * db_sqlite_vfs.c — a thin SQLite VFS over the default one that gathers the writes of a
 * commit to the WAL file into one pwrite.
 *
 * SQLite appends a commit to the WAL frame by frame, two writes per page (a 24-byte frame
 * header, then the page): a group commit of a few dozen appends is ~60 pwrite calls, and on a
 * virtual machine each costs ~15 µs. Here the sequential writes to a WAL file collect in a
 * buffer that goes out in one write once the commit's last frame is in it (its header carries
 * the database size, which only a commit frame does), and in any case before SQLite syncs
 * the WAL, reads it, asks its size, truncates it, closes it, or writes elsewhere in it.
 * Other connections cannot see the frames before that: SQLite publishes a commit in the WAL
 * index only after writing (and, at synchronous=FULL, syncing) all of its frames, so every
 * frame is in the file by then, at any synchronous level.
 *
 * The deferring variant (MS_DB_SQLITE_WAL_VFS_DEFERRED) writes the buffer out at a WAL sync
 * but leaves the fdatasync to the connection's owner, who makes the commits durable from
 * another thread while the next batch is built (the event store's writer: writer.c says what
 * readers must then not see). Syncs of the database file itself stay real, so a checkpoint
 * on such a connection is safe only after the owner has synced the WAL.
 *
 * A checkpoint writes pages into the database file one call each, in page order: those writes
 * gather too, and go out before the file is synced, read, unlocked or asked its size. SQLite
 * syncs the database file before it records the checkpoint's progress (at NORMAL and FULL,
 * which every connection here uses), and until then no reader takes those pages from the
 * file, so holding them back until the sync changes nothing another connection can see.
 *
 * Every other file, and every other method, goes straight to the default VFS.
 */
#include <sqlite3.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/db/db_sqlite_vfs.h"
#include "runtime/core/banned.h"

enum { MAX_BUFFER = 4 << 20 }; /* bytes held at most before they are written anyway */

typedef struct wal_file {
    sqlite3_file base;  /* our methods */
    sqlite3_file *real; /* the default VFS's file, allocated right after this struct */
    bool is_wal;
    bool is_gathered;      /* the WAL or the main database file: writes collect in buf */
    bool is_deferred;      /* a WAL sync writes the buffer out, and no more */
    bool is_commit_ending; /* the last write was a commit frame's header: its page ends it */
    char *buf;
    size_t len, cap;
    sqlite3_int64 start; /* file offset of buf[0] */
} wal_file;

static sqlite3_vfs wrapper, deferring;
static sqlite3_vfs *real_vfs;
static sqlite3_io_methods methods_v1, methods_v2, methods_v3;

/* The default VFS writes at most this much per call correctly: it masks a write's length
 * with 0x1ffff (a write of exactly 128 KiB would go out as 0 bytes, reported SQLITE_FULL). */
enum { MAX_WRITE = 0x1f000 };

enum { WAL_FRAME_HEADER = 24 };

/* Writes out what the buffer holds. */
static int flush(wal_file *f)
{
    int rc = SQLITE_OK;
    for (size_t done = 0; done < f->len && rc == SQLITE_OK;) {
        size_t n = f->len - done < MAX_WRITE ? f->len - done : MAX_WRITE;
        rc = f->real->pMethods->xWrite(f->real, f->buf + done, (int)n,
                                       f->start + (sqlite3_int64)done);
        done += n;
    }
    f->len = 0;
    return rc;
}

static int w_close(sqlite3_file *file)
{
    wal_file *f = (wal_file *)file;
    int rc = flush(f);
    int crc = f->real->pMethods->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    f->cap = 0;
    return rc != SQLITE_OK ? rc : crc;
}

static int w_read(sqlite3_file *file, void *out, int n, sqlite3_int64 off)
{
    wal_file *f = (wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, out, n, off);
}

static int w_write(sqlite3_file *file, const void *p, int n, sqlite3_int64 off)
{
    wal_file *f = (wal_file *)file;
    if (!f->is_gathered)
        return f->real->pMethods->xWrite(f->real, p, n, off);
    if (f->len > 0 &&
        (off != f->start + (sqlite3_int64)f->len || f->len + (size_t)n > MAX_BUFFER)) {
        int rc = flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if ((size_t)n > MAX_WRITE) /* SQLite's own writes are a page or less: not gathered */
        return f->real->pMethods->xWrite(f->real, p, n, off);
    if (f->len + (size_t)n > f->cap) {
        size_t cap = f->cap ? f->cap : 64 * 1024;
        while (cap < f->len + (size_t)n)
            cap *= 2;
        char *grown = realloc(f->buf, cap);
        if (!grown)
            return SQLITE_NOMEM;
        f->buf = grown;
        f->cap = cap;
    }
    if (f->len == 0)
        f->start = off;
    memcpy(f->buf + f->len, p, (size_t)n);
    f->len += (size_t)n;
    /* A frame header is the only 24-byte write; bytes 4..7 (the database size in pages) are
     * non-zero only in a commit's last frame. The page after it completes the commit. */
    if (f->is_commit_ending) {
        f->is_commit_ending = false;
        return flush(f);
    }
    const unsigned char *h = p;
    f->is_commit_ending = f->is_wal && n == WAL_FRAME_HEADER && (h[4] | h[5] | h[6] | h[7]) != 0;
    return SQLITE_OK;
}

static int w_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    wal_file *f = (wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int w_sync(sqlite3_file *file, int flags)
{
    wal_file *f = (wal_file *)file;
    int rc = flush(f);
    if (rc != SQLITE_OK || (f->is_wal && f->is_deferred))
        return rc;
    return f->real->pMethods->xSync(f->real, flags);
}

static int w_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    wal_file *f = (wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int w_lock(sqlite3_file *file, int level)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xLock(f->real, level);
}

static int w_unlock(sqlite3_file *file, int level)
{
    wal_file *f = (wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xUnlock(f->real, level);
}

static int w_check_reserved_lock(sqlite3_file *file, int *out)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int w_file_control(sqlite3_file *file, int op, void *arg)
{
    wal_file *f = (wal_file *)file;
    int rc = flush(f); /* size hints, chunk sizes and the like see the file as written */
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileControl(f->real, op, arg);
}

static int w_sector_size(sqlite3_file *file)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int w_device_characteristics(sqlite3_file *file)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int w_shm_map(sqlite3_file *file, int region, int size, int extend, void volatile **out)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xShmMap(f->real, region, size, extend, out);
}

static int w_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    wal_file *f = (wal_file *)file;
    int rc = flags & SQLITE_SHM_UNLOCK ? flush(f) : SQLITE_OK; /* a checkpoint ends */
    return rc != SQLITE_OK ? rc : f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void w_shm_barrier(sqlite3_file *file)
{
    wal_file *f = (wal_file *)file;
    f->real->pMethods->xShmBarrier(f->real);
}

static int w_shm_unmap(sqlite3_file *file, int delete_flag)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xShmUnmap(f->real, delete_flag);
}

static int w_fetch(sqlite3_file *file, sqlite3_int64 off, int n, void **out)
{
    wal_file *f = (wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFetch(f->real, off, n, out);
}

static int w_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xUnfetch(f->real, off, p);
}

static int w_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                  int *out_flags)
{
    wal_file *f = (wal_file *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(f + 1);
    int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
    if (!f->real->pMethods) { /* nothing to close: SQLite will not call xClose */
        f->base.pMethods = NULL;
        return rc;
    }
    f->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
    f->is_gathered = f->is_wal || (flags & SQLITE_OPEN_MAIN_DB) != 0;
    f->is_deferred = vfs == &deferring;
    int version = f->real->pMethods->iVersion;
    f->base.pMethods = version >= 3 ? &methods_v3 : version == 2 ? &methods_v2 : &methods_v1;
    return rc;
}

static void fill_methods(sqlite3_io_methods *m, int version)
{
    *m = (sqlite3_io_methods){
        .iVersion = version,
        .xClose = w_close,
        .xRead = w_read,
        .xWrite = w_write,
        .xTruncate = w_truncate,
        .xSync = w_sync,
        .xFileSize = w_file_size,
        .xLock = w_lock,
        .xUnlock = w_unlock,
        .xCheckReservedLock = w_check_reserved_lock,
        .xFileControl = w_file_control,
        .xSectorSize = w_sector_size,
        .xDeviceCharacteristics = w_device_characteristics,
    };
    if (version >= 2) {
        m->xShmMap = w_shm_map;
        m->xShmLock = w_shm_lock;
        m->xShmBarrier = w_shm_barrier;
        m->xShmUnmap = w_shm_unmap;
    }
    if (version >= 3) {
        m->xFetch = w_fetch;
        m->xUnfetch = w_unfetch;
    }
}

static void register_once(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    if (!real_vfs)
        MS_BUG("sqlite: no default VFS");
    fill_methods(&methods_v1, 1);
    fill_methods(&methods_v2, 2);
    fill_methods(&methods_v3, 3);
    wrapper = *real_vfs; /* every other method is the default VFS's own */
    wrapper.zName = MS_DB_SQLITE_WAL_VFS;
    wrapper.pNext = NULL;
    wrapper.szOsFile = (int)sizeof(wal_file) + real_vfs->szOsFile;
    wrapper.xOpen = w_open;
    deferring = wrapper;
    deferring.zName = MS_DB_SQLITE_WAL_VFS_DEFERRED;
    if (sqlite3_vfs_register(&wrapper, 0) != SQLITE_OK ||
        sqlite3_vfs_register(&deferring, 0) != SQLITE_OK)
        MS_BUG("sqlite: cannot register the WAL-gathering VFS");
}

const char *ms_db__sqlite_wal_vfs(bool defers_sync)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_once);
    return defers_sync ? MS_DB_SQLITE_WAL_VFS_DEFERRED : MS_DB_SQLITE_WAL_VFS;
}
