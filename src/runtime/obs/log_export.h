/*
 * log_export.h — the process's log lines as OpenTelemetry log records, exported as OTLP/HTTP
 * JSON to ${OTEL_EXPORTER_OTLP_ENDPOINT}/v1/logs beside the spans (the gateway's receiver
 * keeps them for the ops console). ms_trace_init starts it and ms_trace_shutdown stops it, so a
 * process exports its logs exactly when it exports its spans, unless OTEL_LOGS_EXPORTER=none.
 *
 * Every line written (core/log.h's sink) becomes a record: its time, severity, msg as the
 * body, its fields as attributes (a '#' field as a number), and the trace and span ids of the
 * request it was written in. The writing thread only copies the line into a bounded queue
 * (batch.h) and never waits for the network; a full queue drops the record (counted). Lines
 * written by an exporter's own thread (this one's, the spans' exporter's: their failures) go to
 * stderr only, so an unreachable collector never feeds the queue with news of itself; this
 * one's thread writes only errors (a refused export): an outage of the collector, the spans'
 * too, is told once by the spans' exporter and counted in log_export_failures_total.
 *
 * Threading: init and shutdown by one owner, at start and end; the sink runs on any thread, and
 * shutdown waits for a line being queued by another before it frees the queue; collect on the
 * scraping thread.
 */
#ifndef MS_LOG_EXPORT_H
#define MS_LOG_EXPORT_H

#include <stddef.h>

#include "runtime/core/buf.h"
#include "runtime/core/log.h"

/*
 * Starts exporting for `service` to `endpoint` (http://host[:port][/path]; NULL or empty: not
 * at all). Reads OTEL_LOGS_EXPORTER (otlp, the default, or none), OTEL_BLRP_MAX_QUEUE_SIZE
 * (2048), OTEL_BLRP_MAX_EXPORT_BATCH_SIZE (512), OTEL_BLRP_SCHEDULE_DELAY (1000 ms). 0, or
 * MS_EINVAL for a bad setting (logged naming it).
 */
int ms_log_export_init(const char *service, const char *endpoint);
/* Exports what is queued (one attempt, within timeout_ms) and stops; what could not be sent
 * is dropped, counted. A later init starts again (tests). Not started: nothing. */
void ms_log_export_shutdown(int timeout_ms);
/* Lines the calling thread writes from now on are not exported: for an exporter's own thread,
 * whose lines are about the pipeline they would take. Any thread. */
void ms_log_export_ignore_thread(void);
/* Appends log_records_{exported,dropped}_total and log_export_failures_total. */
void ms_log_export_collect(ms_buf *out);

/* A queued record: a copy of one line (see ms_log_export_record). */
typedef struct ms_log_export_rec ms_log_export_rec;
/* Copies a line into a record (malloc'ed, free() it), strings capped at 1 KiB each. */
ms_log_export_rec *ms_log_export_record(const ms_log_record *r);
/* Appends an OTLP/HTTP JSON ExportLogsServiceRequest of recs[0..n) (ms_log_export_rec *). */
void ms_log_export_encode(ms_buf *out, const char *service, const char *instance, void *const *recs,
                          size_t n);

#endif
