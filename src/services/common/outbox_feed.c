/* The services' outbox relays; see outbox_feed.h. */
#include <stdio.h>
#include <stdlib.h>

#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/obs/metrics.h"
#include "services/common/outbox_feed.h"
#include "runtime/core/banned.h"

/* The publisher the environment asks for: the event bus when NATS_URL is set (serve checked
 * its form at start), else the local feed. */
static int open_publisher(const ms_service_env *env, const char *service, ms_publisher *pub)
{
    const char *nats_url = getenv("NATS_URL");
    if (nats_url && *nats_url) {
        int rc = ms_publisher_nats(nats_url, service, 0, pub);
        if (rc < 0)
            ms_log(MS_LOG_ERROR, "cannot set up the event bus publisher (NATS_URL)", "error",
                   ms_errname(rc), NULL);
        return rc;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/%s-outbox.jsonl", env->data_dir, service);
    int rc = ms_publisher_file(path, pub);
    if (rc < 0)
        ms_log(MS_LOG_ERROR, "cannot open the outbox feed", "path", path, NULL);
    return rc;
}

int outbox_feed_start(const ms_service_env *env, const char *service, ms_es *es, ms_relay **out)
{
    ms_publisher pub;
    int rc = open_publisher(env, service, &pub);
    if (rc < 0)
        return rc;
    ms_relay_options opt = {.service = service, .es = es};
    if ((rc = ms_relay_start(env->db, &pub, &opt, out)) < 0) {
        pub.close(pub.self);
        return rc;
    }
    ms_metrics_register(ms_relay_collect, *out);
    return 0;
}
