/*
 * log_level.c — the built-in GET/PUT /admin/log-level, served wherever /metrics is (see
 * server.h): the process's lowest log level, read and changed while it runs.
 *   GET  → 200 {"level": "info"}
 *   PUT  {"level": "debug"|"info"|"warn"|"error"} → 200 {"level": ...}; 415 when the body is
 *        not JSON, 400 when it does not parse or has other fields, 422 naming "level" when it
 *        is missing or not a level. A refused body changes nothing.
 * Loop-thread handlers; the level itself is an atomic (log.h), so a change reaches every
 * thread at once.
 */
#include "runtime/core/log.h"
#include "runtime/http/http_internal.h"
#include "runtime/http/http_json.h"
#include "runtime/core/banned.h"

void ms_server__log_level_get(ms_http_request *req)
{
    ms_http_respond_json(req, 200,
                         json_pack("{s:s}", "level", ms_log_level_name(ms_log_get_level())));
}

void ms_server__log_level_put(ms_http_request *req)
{
    static const ms_json_field fields[] = {{"level", MS_JSON_STRING, true, false}};
    json_t *body;
    if (ms_http_json_body(req, &body) < 0)
        return;
    json_t *malformed = json_array(), *invalid = json_array();
    ms_log_level level = MS_LOG_INFO;
    if (ms_json_check(body, fields, 1, "", malformed, invalid) && json_object_get(body, "level") &&
        ms_log_level_parse(json_string_value(json_object_get(body, "level")), &level) < 0)
        ms_field_error(invalid, "level", "must be debug, info, warn or error");
    if (ms_http_reject_fields(req, malformed, invalid) < 0)
        return;
    ms_log_level was = ms_log_get_level();
    ms_log_set_level(level);
    /* a warning, so that the change shows at any level it leaves */
    ms_log(MS_LOG_WARN, "log level changed", "level", ms_log_level_name(level), "was",
           ms_log_level_name(was), NULL);
    ms_http_respond_json(req, 200, json_pack("{s:s}", "level", ms_log_level_name(level)));
}
