/*
 * cli.h — the commands of the one binary (`microshop run|serve|migrate|version|help`).
 * Each returns the process exit status: 0 ok, 1 failure, 2 bad usage or configuration.
 */
#ifndef MS_CLI_H
#define MS_CLI_H

#include "services/service.h"

int cmd_serve(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_run(int argc, char **argv);
/* Prints a target's routes, one "METHOD TEMPLATE" a line (docs and the OpenAPI check). */
int cmd_routes(int argc, char **argv);
/* `microshop order rebuild-projections`: replays the event store into fresh order views. */
int cmd_order(int argc, char **argv);
/* `microshop token --sub UUID --role admin|customer [--ttl S]`: prints an access token. */
int cmd_token(int argc, char **argv);
/* `microshop probe [URL] [--timeout-ms N]`: one GET, exit 0 on 2xx (container health checks). */
int cmd_probe(int argc, char **argv);

/* The service targets, NULL-terminated, and a lookup by name (NULL when unknown). */
extern const ms_service *const ms_targets[];
const ms_service *ms_target_find(const char *name);

#endif
