/* The service targets `microshop run` starts, in start order; `serve` knows the gateway too
 * (the supervisor starts it once the issue of the supervisor brings it in). */
#include <string.h>

#include "cli/cli.h"
#include "runtime/core/banned.h"

const ms_service *const ms_targets[] = {&ms_user_service, &ms_order_service, &ms_inventory_service,
                                        &ms_payment_service, NULL};

const ms_service *ms_target_find(const char *name)
{
    for (int i = 0; ms_targets[i]; i++)
        if (!strcmp(ms_targets[i]->name, name))
            return ms_targets[i];
    return strcmp(name, ms_gateway_service.name) == 0 ? &ms_gateway_service : NULL;
}
