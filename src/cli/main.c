/* microshop: one binary, many targets (see `microshop --help`). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "runtime/core/banned.h"

static void usage(FILE *out)
{
    fprintf(out,
            "microshop %s — a microservices e-commerce system in C\n\n"
            "usage:\n"
            "  microshop run [--data DIR] [--port-base N] [--replicas N|SVC=N,...] [--admin H:P]\n"
            "                                             start the gateway and every service\n"
            "  microshop serve TARGET [flags]             run one component\n"
            "  microshop migrate TARGET [flags]           apply database migrations\n"
            "  microshop token --sub UUID --role ROLE     mint an access token (dev, ops)\n"
            "  microshop probe [URL] [--timeout-ms N]     GET URL, exit 0 on 2xx (health checks)\n"
            "  microshop help TARGET                      flags of a target\n"
            "  microshop version\n\n"
            "targets:\n",
            MS_VERSION);
    for (int i = 0; ms_targets[i]; i++)
        fprintf(out, "  %-10s %s (port %d)\n", ms_targets[i]->name, ms_targets[i]->summary,
                ms_targets[i]->default_port);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc, argv);
    if (!strcmp(cmd, "migrate"))
        return cmd_migrate(argc, argv);
    if (!strcmp(cmd, "run"))
        return cmd_run(argc, argv);
    if (!strcmp(cmd, "routes"))
        return cmd_routes(argc, argv);
    if (!strcmp(cmd, "token"))
        return cmd_token(argc, argv);
    if (!strcmp(cmd, "probe"))
        return cmd_probe(argc, argv);
    if (!strcmp(cmd, "order"))
        return cmd_order(argc, argv);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("microshop %s\n", MS_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help")) {
        if (argc < 3) {
            usage(stdout);
            return 0;
        }
        char *args[] = {argv[0], "serve", argv[2], "--help", NULL};
        return cmd_serve(4, args);
    }
    fprintf(stderr, "microshop: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
