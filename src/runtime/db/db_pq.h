/*
 * db_pq.h — libpq as the PostgreSQL files of src/runtime/db use it: loaded with dlopen by
 * db_postgres.c (the functions below, or none), shared with the pipelined reads of
 * db_pg_async.c. Include only from src/runtime/db/db_p*.c.
 *
 * Threading: ms_db__pq_load may be called from any thread (once); the table is read-only after.
 */
#ifndef MS_DB_PQ_H
#define MS_DB_PQ_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "runtime/db/db_internal.h"

// clang-format off
#define PQ_FUNCTIONS(X) \
    X(PQclear) \
    X(PQcmdStatus) \
    X(PQcmdTuples) \
    X(PQconnectdbParams) \
    X(PQconsumeInput) \
    X(PQenterPipelineMode) \
    X(PQerrorMessage) \
    X(PQexec) \
    X(PQexecPrepared) \
    X(PQfinish) \
    X(PQflush) \
    X(PQgetisnull) \
    X(PQgetlength) \
    X(PQgetResult) \
    X(PQgetvalue) \
    X(PQhost) \
    X(PQisBusy) \
    X(PQnfields) \
    X(PQntuples) \
    X(PQpipelineSync) \
    X(PQport) \
    X(PQprepare) \
    X(PQresultErrorField) \
    X(PQresultStatus) \
    X(PQsendPrepare) \
    X(PQsendQueryParams) \
    X(PQsendQueryPrepared) \
    X(PQsetnonblocking) \
    X(PQsetNoticeReceiver) \
    X(PQsocket) \
    X(PQstatus) \
    X(PQtransactionStatus)
// clang-format on

typedef struct ms_db_pq {
#define PQ_FIELD(f) __typeof__(f) *f;
    PQ_FUNCTIONS(PQ_FIELD)
#undef PQ_FIELD
    bool loaded;
} ms_db_pq;
extern ms_db_pq ms_db__pq;

/* Loads libpq (pipeline mode needs libpq 14 or later); false when it cannot be used. */
bool ms_db__pq_load(void);
/* The libpq connection under a connection of ms_db__pg_open. */
PGconn *ms_db__pg_handle(ms_db_conn *c);
/* Turns a finished PGresult of `c` into 0 or an MS_E* code, as ms_db_exec maps them, and sets
 * c's errmsg. Does not clear it. */
int ms_db__pg_check(ms_db_conn *c, const PGresult *res);
/* A successful result's rows as an ms_db_result (the caller frees it); `affected` set for
 * statements other than SELECT. */
ms_db_result *ms_db__pg_result_copy(PGresult *res);

#endif
