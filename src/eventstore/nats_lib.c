/* libnats, loaded on first use; see nats_lib.h. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>

#include "eventstore/nats_lib.h"
#include "runtime/core/log.h"
#include "runtime/core/banned.h"

static ms_nats_lib nl;
static bool nl_loaded;
static pthread_once_t nl_once = PTHREAD_ONCE_INIT;

static void nl_load(void)
{
    void *h = dlopen("libnats.so.3.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        ms_log(MS_LOG_ERROR, "cannot load libnats (package libnats3.4)", "error", dlerror(), NULL);
        return;
    }
#define NATS_LOAD(f)                                                                               \
    if (!(*(void **)&nl.f = dlsym(h, #f))) {                                                       \
        ms_log(MS_LOG_ERROR, "libnats lacks a function", "function", #f, NULL);                    \
        return;                                                                                    \
    }
    MS_NATS_FUNCTIONS(NATS_LOAD)
#undef NATS_LOAD
    nl_loaded = true; /* the handle stays open for the life of the process */
}

const ms_nats_lib *ms_nats_lib_get(void)
{
    pthread_once(&nl_once, nl_load);
    return nl_loaded ? &nl : NULL;
}

const char *ms_nats_status_text(const ms_nats_lib *lib, natsStatus s)
{
    const char *t = lib ? lib->natsStatus_GetText(s) : NULL;
    return t ? t : "unknown";
}
