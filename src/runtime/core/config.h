/*
 * config.h — command-line flags with environment fallbacks, validated at start.
 * A flag wins over its environment variable, which wins over the default already in the
 * target. Problems are reported as one clear sentence; callers exit with status 2.
 * Start-up only (not thread-safe).
 */
#ifndef MS_CONFIG_H
#define MS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum { MS_OPT_STRING, MS_OPT_INT, MS_OPT_BOOL } ms_opt_type;

typedef struct ms_option {
    const char *flag; /* "listen" for --listen */
    const char *env;  /* "MICROSHOP_LISTEN", or NULL */
    ms_opt_type type;
    void *target;  /* const char ** | long * | bool * */
    long min, max; /* MS_OPT_INT range */
    const char *help;
} ms_option;

/*
 * Parses argv[first..argc) ("--flag value", "--flag=value", "--bool" alone means true).
 * Returns 0; 1 when --help was asked (usage printed); MS_EINVAL with a sentence in `err`.
 * Positional arguments are not accepted.
 */
int ms_config_parse(const ms_option *opts, size_t n, int argc, char **argv, int first, char *err,
                    size_t errn);
void ms_config_usage(FILE *out, const ms_option *opts, size_t n);

/*
 * Reads an environment variable holding a whole number in [min, max]: *out is `def` when it is
 * unset or empty. MS_EINVAL with a sentence naming the variable in `err` otherwise.
 */
int ms_config_env_long(const char *name, long def, long min, long max, long *out, char *err,
                       size_t errn);

/* A configuration error found at start: logs `what` with `why` and exits with status 2 before
 * anything runs. */
void ms_config_refuse(const char *what, const char *why) __attribute__((noreturn));

/* Splits "HOST:PORT" or "[V6]:PORT"; "localhost" means 127.0.0.1. host must hold 64 bytes. */
int ms_config_split_listen(const char *s, char host[64], int *port);

#endif
