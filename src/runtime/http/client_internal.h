/*
 * client_internal.h — what client.c records into the shared client metrics (client_metrics.c).
 * Thread-safe: any loop's client may record at any time; a mutex guards the object.
 */
#ifndef MS_HTTP_CLIENT_INTERNAL_H
#define MS_HTTP_CLIENT_INTERNAL_H

#include "runtime/http/client.h"

/* One finished call: `status` is the HTTP status, or a label such as "timeout". */
void ms_http_client__observe(ms_http_client_metrics *m, const char *upstream, const char *status,
                             double seconds);
void ms_http_client__retry(ms_http_client_metrics *m, const char *upstream);
/* An instance went down (+1) or came back (-1) in one loop's view. */
void ms_http_client__down(ms_http_client_metrics *m, const char *upstream, const char *instance,
                          int delta);

#endif
