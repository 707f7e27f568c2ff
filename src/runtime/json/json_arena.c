/* JSON trees released with an arena; see json_arena.h. */
#include "runtime/json/json_arena.h"
#include "runtime/core/banned.h"

static void drop(void *v)
{
    json_decref(v);
}

json_t *ms_json_own(ms_arena *a, json_t *v)
{
    if (v)
        ms_arena_on_reset(a, drop, v);
    return v;
}
