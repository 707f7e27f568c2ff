/*
 * token.c — `microshop token --sub UUID --role admin|customer [--ttl S]`: mints an access token
 * for development and operations (an admin's, say) with the user service's key, and prints it.
 * The key comes from the environment as the user service reads it: MICROSHOP_JWT_SECRET
 * (HS256) or MICROSHOP_JWT_PRIVATE_KEY with MICROSHOP_JWT_KID (RS256); iss and aud from
 * MICROSHOP_JWT_ISSUER / MICROSHOP_JWT_AUDIENCE (default "microshop", empty: none).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "runtime/auth/jwt.h"
#include "runtime/core/error.h"
#include "runtime/core/id.h"
#include "runtime/core/banned.h"

enum { MAX_TTL = 7 * 24 * 3600 };

static void usage(FILE *out)
{
    fprintf(out, "usage: microshop token --sub UUID --role admin|customer [--ttl SECONDS]\n"
                 "  mints an access token with MICROSHOP_JWT_SECRET (HS256), or\n"
                 "  MICROSHOP_JWT_PRIVATE_KEY and MICROSHOP_JWT_KID (RS256); --ttl defaults to\n"
                 "  900 seconds, at most 604800\n");
}

/* The key set of the environment; NULL after printing why. */
static ms_jwt_keys *env_keys(void)
{
    const char *secret = getenv("MICROSHOP_JWT_SECRET");
    const char *pem = getenv("MICROSHOP_JWT_PRIVATE_KEY");
    const char *kid = getenv("MICROSHOP_JWT_KID");
    const char *why = "";
    ms_jwt_keys *k = NULL;
    if (secret && *secret) {
        if (ms_jwt_keys_hs256(secret, strlen(secret), &k) < 0)
            fprintf(stderr, "microshop token: MICROSHOP_JWT_SECRET must be at least 32 bytes\n");
    } else if (pem && *pem) {
        if (!kid || !*kid)
            fprintf(stderr, "microshop token: MICROSHOP_JWT_KID is not set\n");
        else if (ms_jwt_keys_rs256_pem_file(pem, kid, &k, &why) < 0)
            fprintf(stderr, "microshop token: MICROSHOP_JWT_PRIVATE_KEY: %s\n", why);
    } else {
        fprintf(stderr, "microshop token: set MICROSHOP_JWT_SECRET or MICROSHOP_JWT_PRIVATE_KEY\n");
    }
    return k;
}

int cmd_token(int argc, char **argv)
{
    const char *sub = NULL, *role = NULL, *ttl = "900";
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        const char **slot = !strcmp(argv[i], "--sub")    ? &sub
                            : !strcmp(argv[i], "--role") ? &role
                            : !strcmp(argv[i], "--ttl")  ? &ttl
                                                         : NULL;
        if (!slot || i + 1 >= argc) {
            fprintf(stderr, "microshop token: unexpected '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
        *slot = argv[++i];
    }
    if (!sub || !ms_uuid_valid(sub)) {
        fprintf(stderr, "microshop token: --sub must be a user id (a UUID)\n");
        return 2;
    }
    if (!role || (strcmp(role, "admin") != 0 && strcmp(role, "customer") != 0)) {
        fprintf(stderr, "microshop token: --role must be admin or customer\n");
        return 2;
    }
    char *end;
    errno = 0;
    long long ttl_s = strtoll(ttl, &end, 10);
    if (errno || *end || ttl_s < 1 || ttl_s > MAX_TTL) {
        fprintf(stderr, "microshop token: --ttl must be 1 to 604800 seconds\n");
        return 2;
    }
    ms_jwt_keys *k = env_keys();
    if (!k)
        return 2;
    static char token[MS_JWT_MAX_LEN + 1];
    ms_jwt_mint_opts o = {.sub = sub,
                          .role = role,
                          .iss = ms_jwt_claim_setting("MICROSHOP_JWT_ISSUER"),
                          .aud = ms_jwt_claim_setting("MICROSHOP_JWT_AUDIENCE"),
                          .ttl_s = ttl_s};
    int rc = ms_jwt_mint(k, &o, token, sizeof token);
    ms_jwt_keys_free(k);
    if (rc < 0) {
        fprintf(stderr, "microshop token: %s\n", ms_strerror(rc));
        return 1;
    }
    printf("%s\n", token);
    return 0;
}
