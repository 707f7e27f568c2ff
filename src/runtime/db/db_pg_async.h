/*
 * db_pg_async.h — the PostgreSQL side of ms_db_pool_query (db_pg_async.c): pipelined reads on
 * a few non-blocking connections of one loop. Include only from src/runtime/db/db_*.c.
 *
 * Threading: everything on the owning loop's thread. Ownership: the pool owns its pipe; `cfg`
 * is borrowed for the pipe's life.
 */
#ifndef MS_DB_PG_ASYNC_H
#define MS_DB_PG_ASYNC_H

#include "runtime/db/db_internal.h"

typedef struct ms_db_pipe ms_db_pipe;

/* `on_change` runs (on the loop) when the figures of ms_db__pipe_stats may have changed.
 * MS_ECONN when libpq cannot be loaded. Connections open on first use. */
int ms_db__pipe_new(uv_loop_t *loop, const ms_db_config *cfg, void (*on_change)(void *), void *arg,
                    ms_db_pipe **out);
/* ms_db_pool_query on PostgreSQL (see db.h). */
void ms_db__pipe_query(ms_db_pipe *p, uint64_t deadline, const char *sql, int nparams,
                       const char *const *params, ms_db_query_done_fn done, void *arg);
/* Answers everything in flight or waiting with MS_ESHUTDOWN (before returning), closes the
 * connections and frees the pipe; `on_closed` runs on the loop once all is gone. */
void ms_db__pipe_close(ms_db_pipe *p, void (*on_closed)(void *), void *arg);
/* Connections open or opening, those with statements in flight, the statements in flight, and
 * the totals of statements queued and connections reopened. */
void ms_db__pipe_stats(const ms_db_pipe *p, int *open, int *in_use, int *in_flight,
                       uint64_t *statements, uint64_t *reconnects);

#endif
