/* Flag/env parsing; see config.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/config.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/core/banned.h"

static int set_value(const ms_option *o, const char *v, const char *source, char *err, size_t errn)
{
    switch (o->type) {
    case MS_OPT_STRING:
        *(const char **)o->target = v;
        return 0;
    case MS_OPT_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on")) {
            *(bool *)o->target = true;
            return 0;
        }
        if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off")) {
            *(bool *)o->target = false;
            return 0;
        }
        snprintf(err, errn, "%s must be on or off (true or false), not '%s'", source, v);
        return MS_EINVAL;
    case MS_OPT_INT: {
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < o->min || x > o->max) {
            snprintf(err, errn, "%s must be a whole number from %ld to %ld, not '%s'", source,
                     o->min, o->max, v);
            return MS_EINVAL;
        }
        *(long *)o->target = x;
        return 0;
    }
    }
    return MS_EINVAL;
}

int ms_config_parse(const ms_option *opts, size_t n, int argc, char **argv, int first, char *err,
                    size_t errn)
{
    char source[96];
    bool from_flag[n > 0 ? n : 1]; /* a flag wins: its variable is not even read */
    memset(from_flag, 0, sizeof from_flag);
    for (int a = first; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            ms_config_usage(stdout, opts, n);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errn, "unexpected argument '%s' (flags start with --)", arg);
            return MS_EINVAL;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const ms_option *o = NULL;
        for (size_t i = 0; i < n && !o; i++) {
            if (strlen(opts[i].flag) == len && !strncmp(opts[i].flag, name, len)) {
                o = &opts[i];
                from_flag[i] = true;
            }
        }
        if (!o) {
            snprintf(err, errn, "unknown flag '--%.*s' (see --help)", (int)len, name);
            return MS_EINVAL;
        }
        const char *v;
        if (eq) {
            v = eq + 1;
        } else if (o->type == MS_OPT_BOOL && (a + 1 >= argc || !strncmp(argv[a + 1], "--", 2))) {
            v = "true";
        } else if (a + 1 < argc && strncmp(argv[a + 1], "--", 2) != 0) {
            v = argv[++a];
        } else {
            snprintf(err, errn, "the flag --%s needs a value", o->flag);
            return MS_EINVAL;
        }
        snprintf(source, sizeof source, "--%s", o->flag);
        if (set_value(o, v, source, err, errn) < 0)
            return MS_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *v = opts[i].env && !from_flag[i] ? getenv(opts[i].env) : NULL;
        if (v && *v) {
            snprintf(source, sizeof source, "the environment variable %s", opts[i].env);
            if (set_value(&opts[i], v, source, err, errn) < 0)
                return MS_EINVAL;
        }
    }
    return 0;
}

void ms_config_usage(FILE *out, const ms_option *opts, size_t n)
{
    fprintf(out, "flags (environment variable in brackets):\n");
    for (size_t i = 0; i < n; i++) {
        const ms_option *o = &opts[i];
        char def[64] = "";
        if (o->type == MS_OPT_INT)
            snprintf(def, sizeof def, " (default %ld)", *(long *)o->target);
        else if (o->type == MS_OPT_BOOL)
            snprintf(def, sizeof def, " (default %s)", *(bool *)o->target ? "true" : "false");
        else if (*(const char **)o->target)
            snprintf(def, sizeof def, " (default %s)", *(const char **)o->target);
        fprintf(out, "  --%-22s %s%s%s%s%s\n", o->flag, o->help, def, o->env ? " [" : "",
                o->env ? o->env : "", o->env ? "]" : "");
    }
}

int ms_config_env_long(const char *name, long def, long min, long max, long *out, char *err,
                       size_t errn)
{
    const char *v = getenv(name);
    *out = def;
    if (!v || !*v)
        return 0;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || end == v || n < min || n > max) {
        snprintf(err, errn, "%s must be a whole number from %ld to %ld, not \"%.40s\"", name, min,
                 max, v);
        return MS_EINVAL;
    }
    *out = n;
    return 0;
}

void ms_config_refuse(const char *what, const char *why)
{
    ms_log(MS_LOG_ERROR, what, "error", why, NULL);
    exit(2);
}

int ms_config_split_listen(const char *s, char host[64], int *port)
{
    const char *colon;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return MS_EINVAL;
        hlen = (size_t)(close - s - 1);
        s++;
        colon = close + 1;
    } else {
        colon = strchr(s, ':');
        if (!colon || strchr(colon + 1, ':'))
            return MS_EINVAL; /* an IPv6 address needs its brackets */
        hlen = (size_t)(colon - s);
    }
    if (hlen == 0 || hlen >= 64)
        return MS_EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (!strcmp(host, "localhost"))
        memcpy(host, "127.0.0.1", 10);
    const char *digits = colon + 1;
    size_t nd = strspn(digits, "0123456789");
    if (nd == 0 || nd > 5 || digits[nd] != '\0')
        return MS_EINVAL;
    long p = strtol(digits, NULL, 10);
    if (p > 65535)
        return MS_EINVAL;
    unsigned char tmp[16];
    if (inet_pton(AF_INET, host, tmp) != 1 && inet_pton(AF_INET6, host, tmp) != 1)
        return MS_EINVAL;
    *port = (int)p;
    return 0;
}
