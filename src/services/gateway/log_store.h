/*
 * log_store.h — the gateway's OTLP/HTTP JSON log receiver and the console's memory of recent
 * log records (log_store.c), on the admin listener beside the traces:
 *   POST /v1/logs                        OTLP/HTTP JSON logs (every process's, `microshop run`)
 *   GET  /ops/api/logs?trace_id=&service=&level=&limit=   newest first
 * Handlers run on the admin loop; start and stop at the admin listener's start and stop.
 */
#ifndef MS_GATEWAY_LOG_STORE_H
#define MS_GATEWAY_LOG_STORE_H

#include "runtime/http/server.h"

void gateway_logs_receive(ms_http_request *req);
void gateway_logs_list(ms_http_request *req);
/* Registers the store's metrics; stop forgets every record. */
void gateway_logs_start(void);
void gateway_logs_stop(void);

#endif
