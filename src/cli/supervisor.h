/*
 * supervisor.h — the processes of `microshop run`: the gateway and every service, each with
 * its replicas, restarted with backoff when they die, scaled and restarted on request (the
 * control endpoint, supervisor_control.c), stopped gateway first.
 *
 * Every process learns where the others are from MICROSHOP_<SERVICE>_URL (every instance) at
 * its start and from the instances file (MICROSHOP_INSTANCES_FILE, DATA/instances.json,
 * replaced by rename) afterwards; the gateway reaches the control endpoint through
 * MICROSHOP_SUPERVISOR_URL. Beside the instances file, DATA/prometheus-targets.json (Prometheus
 * file_sd: every instance and the gateway's admin listener, labelled service and
 * instance_name) is replaced with it, for a Prometheus to find every process to scrape.
 *
 * Threading: everything runs on the supervisor's one libuv loop (sup_loop()).
 */
#ifndef MS_CLI_SUPERVISOR_H
#define MS_CLI_SUPERVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "services/service.h"

enum { SUP_MAX_REPLICAS = 8, SUP_MAX_SERVICES = 5, SUP_ADDR_MAX = 32 };

typedef struct sup_instance sup_instance;

/* One service (or the gateway) and its instances, the first on the service's own port. */
typedef struct sup_service {
    const ms_service *svc;
    int port;      /* the first instance's */
    bool scalable; /* not the gateway: it owns the well-known ports */
    /* The order service stays one instance: on SQLite its event store has one writing
     * process (positions, the projector and sagas rely on it); it scales on PostgreSQL. */
    int max_replicas;
    sup_instance *inst[SUP_MAX_REPLICAS];
    int n;
} sup_service;

typedef struct sup_config {
    const char *data;
    const char *admin;              /* the gateway's --admin HOST:PORT */
    int base;                       /* the gateway's port; services at their offsets from 8080 */
    int replicas[SUP_MAX_SERVICES]; /* by sup_service index (0: the gateway, always 1) */
} sup_config;

/* Starts every process and the control endpoint. 0, or MS_E* (nothing left running). */
int sup_start(uv_loop_t *loop, const sup_config *cfg);
/* Stops the gateway, then the services (SIGTERM; SIGKILL after the grace); ends the loop when
 * every process is gone. A second call kills at once. */
void sup_stop(void);
/* Frees the instances once the loop has ended. */
void sup_free(void);
/* True once sup_stop (or a child failing at every start) began the end. */
bool sup_stopping(void);
/* True once the end is complete: every child gone, the supervisor's handles closing. */
bool sup_finished(void);
/* The exit status of `microshop run`: 0, or 1 when a child kept failing at start. */
int sup_status(void);

/* The services, the gateway first; NULL past the last. */
sup_service *sup_service_at(int i);
sup_service *sup_service_find(const char *name);
/* The "HOST:PORT" of an instance. */
const char *sup_instance_addr(const sup_instance *in);
/* The control endpoint's "http://127.0.0.1:PORT". */
const char *sup_control_url(void);

/* Sets a service's replicas (1..max_replicas): new instances start on free ports, removed
 * ones leave the instances file first and stop a little later (once the gateway has read it).
 * `done(status, arg)` runs when the new instances accept connections (or have not within the
 * start limit: status MS_ETIMEDOUT); 0 when it was started, MS_EINVAL for a service that does
 * not scale. */
int sup_scale(sup_service *s, int replicas, void (*done)(int status, void *arg), void *arg);
/* Restarts every instance of a service, or the one at `addr` (MS_ENOTFOUND when none). */
int sup_restart(sup_service *s, const char *addr);

/* supervisor_control.c: the endpoint (127.0.0.1, a free port) with POST /scale and POST
 * /restart. 0, or MS_EIO. */
int sup_control_start(uv_loop_t *loop, char url[64]);
void sup_control_stop(void);

/* True when something accepts connections at "HOST:PORT" (a blocking local connect). */
bool sup_port_open(const char *addr);

#endif
