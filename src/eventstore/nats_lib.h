/*
 * nats_lib.h — libnats, loaded with dlopen() on first use instead of linked (as db_postgres.c
 * does libpq): the binary then runs without libnats wherever NATS_URL is unset. One table of
 * the functions microshop calls, shared by the event bus publisher (publisher_nats.c) and the
 * bus consumers (services/common/bus_consumer_nats.c).
 *
 * Threading: ms_nats_lib_get may be called from any thread (the load runs once); the table
 * never changes after it. Ownership: the library stays loaded for the life of the process.
 */
#ifndef MS_NATS_LIB_H
#define MS_NATS_LIB_H

#include <nats/nats.h>

// clang-format off
#define MS_NATS_FUNCTIONS(X) \
    X(jsConsumerInfo_Destroy) \
    X(jsCtx_Destroy) \
    X(jsMsgMetaData_Destroy) \
    X(jsOptions_Init) \
    X(jsPubAck_Destroy) \
    X(jsPubOptions_Init) \
    X(jsStreamConfig_Init) \
    X(jsStreamInfo_Destroy) \
    X(jsSubOptions_Init) \
    X(js_AddStream) \
    X(js_DeleteConsumer) \
    X(js_GetConsumerInfo) \
    X(js_GetStreamInfo) \
    X(js_PublishAsyncComplete) \
    X(js_PublishAsyncGetPendingList) \
    X(js_PublishMsg) \
    X(js_PublishMsgAsync) \
    X(js_PullSubscribe) \
    X(natsConnection_Close) \
    X(natsConnection_Connect) \
    X(natsConnection_Destroy) \
    X(natsConnection_JetStream) \
    X(natsConnection_Status) \
    X(natsMsgHeader_Get) \
    X(natsMsgHeader_Set) \
    X(natsMsgList_Destroy) \
    X(natsMsg_Ack) \
    X(natsMsg_Create) \
    X(natsMsg_Destroy) \
    X(natsMsg_GetData) \
    X(natsMsg_GetDataLength) \
    X(natsMsg_GetMetaData) \
    X(natsMsg_Nak) \
    X(natsOptions_Create) \
    X(natsOptions_Destroy) \
    X(natsOptions_SetDisconnectedCB) \
    X(natsOptions_SetMaxReconnect) \
    X(natsOptions_SetName) \
    X(natsOptions_SetReconnectWait) \
    X(natsOptions_SetReconnectedCB) \
    X(natsOptions_SetRetryOnFailedConnect) \
    X(natsOptions_SetTimeout) \
    X(natsOptions_SetURL) \
    X(natsStatus_GetText) \
    X(natsSubscription_Destroy) \
    X(natsSubscription_Fetch) \
    X(nats_GetLastError)
// clang-format on

typedef struct ms_nats_lib {
#define MS_NATS_FIELD(f) __typeof__(f) *f;
    MS_NATS_FUNCTIONS(MS_NATS_FIELD)
#undef MS_NATS_FIELD
} ms_nats_lib;

/* The loaded library, or NULL when libnats (package libnats3.4) cannot be loaded or lacks a
 * function (logged at the first try). */
const ms_nats_lib *ms_nats_lib_get(void);

/* natsStatus_GetText's text, never NULL (`lib` may be NULL). */
const char *ms_nats_status_text(const ms_nats_lib *lib, natsStatus s);

#endif
