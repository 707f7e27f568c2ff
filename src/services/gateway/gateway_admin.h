/*
 * gateway_admin.h — the gateway's admin listener (admin.c): its flag, parsed by the CLI with
 * the common ones, and its start (the router handed to the runtime with ms_server_set_admin)
 * and stop. Start-up and shutdown only (not thread-safe).
 */
#ifndef MS_GATEWAY_ADMIN_H
#define MS_GATEWAY_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime/core/config.h"

extern const ms_option gateway_flags[];
extern const size_t gateway_nflags;

/* Checks --admin (HOST:PORT, loopback unless MICROSHOP_ADMIN_PUBLIC=1): 0, or MS_EINVAL with
 * a sentence in `err`. */
int gateway_flags_apply(char *err, size_t errn);

/* Builds the admin routes and adds the listener to the server (before ms_server_run): 0, or
 * MS_EINVAL when MICROSHOP_SUPERVISOR_URL is malformed (logged). */
int gateway_admin_start(void);
void gateway_admin_stop(void);

/* Turns the gateway's access line (access_log.c) on or off: --access-log, MICROSHOP_ACCESS_LOG
 * (on unless set to off). Start-up only. */
void gateway_access_log_enable(bool on);

#endif
