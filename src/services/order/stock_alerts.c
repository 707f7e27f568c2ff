/*
 * stock_alerts.c — the order service's low-stock alerts, kept from the inventory's stock.low
 * events by a bus consumer (bus_consumer.h): the latest alert per product in low_stock_alerts
 * (write database, with the consumer's bus tables, as the user directory is) and a warning in
 * the log. An alert stays until the product's next stock.low replaces it: what it says is
 * "this product went below its threshold", for people and, later, the checkout's quote.
 */
#include <stdio.h>
#include <string.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "services/common/bus_consumer.h"
#include "services/order/order_internal.h"
#include "runtime/core/banned.h"

/* stock.low carries product_id, sku, available, threshold. */
int order_stock_alert_apply(ms_db_conn *c, const bus_event *e, void *arg)
{
    (void)arg;
    if (strcmp(e->type, "stock.low") != 0)
        return 0;
    const char *product_id = json_string_value(json_object_get(e->payload, "product_id"));
    const char *sku = json_string_value(json_object_get(e->payload, "sku"));
    json_t *available = json_object_get(e->payload, "available");
    json_t *threshold = json_object_get(e->payload, "threshold");
    if (!product_id || !sku || !json_is_integer(available) || !json_is_integer(threshold)) {
        ms_log(MS_LOG_WARN, "low stock: event without its fields, skipped", "event_id", e->id,
               NULL);
        return 0; /* nothing to apply: retrying the page would not change it */
    }
    char avail[24], thr[24];
    snprintf(avail, sizeof avail, "%lld", (long long)json_integer_value(available));
    snprintf(thr, sizeof thr, "%lld", (long long)json_integer_value(threshold));
    ms_log(MS_LOG_WARN, "low stock", "sku", sku, "product_id", product_id, "#available", avail,
           "#threshold", thr, NULL);
    const char *params[] = {product_id, sku, avail, thr, e->created_at, e->id};
    return ms_db_exec(c,
                      "INSERT INTO low_stock_alerts (product_id, sku, available, threshold,"
                      " alerted_at, event_id) VALUES ($1, $2, $3, $4, $5, $6)"
                      " ON CONFLICT (product_id) DO UPDATE SET sku = excluded.sku,"
                      " available = excluded.available, threshold = excluded.threshold,"
                      " alerted_at = excluded.alerted_at, event_id = excluded.event_id",
                      6, params, NULL);
}
