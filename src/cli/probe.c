/*
 * probe.c — `microshop probe [URL] [--timeout-ms N]`: one blocking GET over plain TCP, for
 * container health checks in an image that has no shell and no curl. Exit 0 when the answer's
 * status is 2xx, 1 otherwise (refused, unreachable, past the deadline, another status) with a
 * one-line reason on stderr, 2 on bad usage. The deadline covers the whole request: name
 * resolution, connect, send and the status line. URL defaults to MICROSHOP_PROBE_URL, so one
 * image-wide HEALTHCHECK serves every target (each container sets its own port there).
 * Single-threaded, process-lifetime only: nothing is kept after it returns.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "runtime/core/error.h"
#include "runtime/core/banned.h"

enum { DEFAULT_TIMEOUT_MS = 2000, MAX_TIMEOUT_MS = 600000, HOST_MAX = 256, PATH_MAX_ = 2048 };

typedef struct {
    char host[HOST_MAX];
    char port[8];
    char path[PATH_MAX_];
} probe_url;

static void usage(FILE *out)
{
    fprintf(out, "usage: microshop probe [URL] [--timeout-ms N]\n"
                 "  GETs an http:// URL (default: MICROSHOP_PROBE_URL); exit 0 on a 2xx answer,\n"
                 "  1 otherwise with the reason on stderr. --timeout-ms bounds the whole request\n"
                 "  (default 2000).\n");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* http://HOST[:PORT][/PATH], HOST a name, an IPv4 address or a bracketed IPv6 one. */
static int parse_url(const char *url, probe_url *u)
{
    static const char scheme[] = "http://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return MS_EINVAL;
    const char *h = url + sizeof scheme - 1;
    const char *slash = strchr(h, '/');
    const char *end = slash ? slash : h + strlen(h);
    const char *colon = NULL;
    const char *hb = h, *he;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            return MS_EINVAL;
        hb = h + 1;
        he = rb;
        if (rb + 1 < end) {
            if (rb[1] != ':')
                return MS_EINVAL;
            colon = rb + 1;
        }
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        he = colon ? colon : end;
    }
    size_t hl = (size_t)(he - hb);
    if (hl == 0 || hl >= sizeof u->host)
        return MS_EINVAL;
    memcpy(u->host, hb, hl);
    u->host[hl] = '\0';
    const char *pb = colon ? colon + 1 : NULL;
    size_t pl = pb ? (size_t)(end - pb) : 0;
    if (pb) {
        if (pl == 0 || pl > 5 || strspn(pb, "0123456789") < pl)
            return MS_EINVAL;
        memcpy(u->port, pb, pl);
        u->port[pl] = '\0';
        long p = strtol(u->port, NULL, 10);
        if (p < 1 || p > 65535)
            return MS_EINVAL;
    } else {
        memcpy(u->port, "80", 3);
    }
    const char *path = slash ? slash : "/";
    if (strlen(path) >= sizeof u->path || strpbrk(path, " \r\n"))
        return MS_EINVAL;
    snprintf(u->path, sizeof u->path, "%s", path);
    return 0;
}

/* Waits until fd is ready for events or the deadline passes. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return MS_ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return 0;
        if (n == 0)
            return MS_ETIMEDOUT;
        if (errno != EINTR)
            return MS_EIO;
    }
}

/* A non-blocking connect to one address, finished within the deadline. */
static int connect_one(const struct addrinfo *ai, int64_t deadline, int *fd_out, int *err)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    int rc = 0;
    if (fd < 0) {
        *err = errno;
        rc = MS_ECONN;
        goto out;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            *err = errno;
            rc = MS_ECONN;
            goto out;
        }
        rc = wait_fd(fd, POLLOUT, deadline);
        if (rc < 0)
            goto out;
        int so = 0;
        socklen_t sl = sizeof so;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) < 0 || so != 0) {
            *err = so ? so : errno;
            rc = MS_ECONN;
            goto out;
        }
    }
out:
    if (rc < 0 && fd >= 0)
        close(fd);
    else
        *fd_out = fd;
    return rc;
}

/* The status code of the answer's first line; *why says what went wrong otherwise. */
static int fetch_status(const probe_url *u, int64_t deadline, int *status, char *why, size_t wl)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int fd = -1, rc = 0, err = 0;
    int gai = getaddrinfo(u->host, u->port, &hints, &res);
    if (gai != 0) {
        snprintf(why, wl, "cannot resolve the host: %s", gai_strerror(gai));
        rc = MS_ECONN;
        goto out;
    }
    rc = MS_ECONN;
    for (const struct addrinfo *ai = res; ai && rc == MS_ECONN; ai = ai->ai_next)
        rc = connect_one(ai, deadline, &fd, &err);
    if (rc == MS_ETIMEDOUT) {
        snprintf(why, wl, "no connection before the deadline");
        goto out;
    }
    if (rc < 0) {
        snprintf(why, wl, "connect: %s", strerror(err));
        goto out;
    }
    char req[PATH_MAX_ + HOST_MAX + 128];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: microshop-probe\r\n"
                     "Connection: close\r\n\r\n",
                     u->path, u->host, u->port);
    size_t off = 0;
    while (off < (size_t)n) {
        if ((rc = wait_fd(fd, POLLOUT, deadline)) < 0) {
            snprintf(why, wl, "request not sent before the deadline");
            goto out;
        }
        ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(why, wl, "send: %s", strerror(errno));
            rc = MS_EIO;
            goto out;
        }
        off += w > 0 ? (size_t)w : 0;
    }
    /* Only the status line matters: read until its end, or the peer closes. */
    char line[128] = "";
    size_t got = 0;
    while (got < sizeof line - 1 && !memchr(line, '\n', got)) {
        if ((rc = wait_fd(fd, POLLIN, deadline)) < 0) {
            snprintf(why, wl, "no answer before the deadline");
            goto out;
        }
        ssize_t r = recv(fd, line + got, sizeof line - 1 - got, 0);
        if (r == 0)
            break;
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(why, wl, "recv: %s", strerror(errno));
            rc = MS_EIO;
            goto out;
        }
        got += r > 0 ? (size_t)r : 0;
    }
    line[got] = '\0';
    unsigned minor, code;
    char sp;
    if (sscanf(line, "HTTP/1.%1u %3u%c", &minor, &code, &sp) != 3 || sp != ' ' || code < 100) {
        snprintf(why, wl, "not an HTTP answer");
        rc = MS_EMALFORMED;
        goto out;
    }
    *status = (int)code;
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (res)
        freeaddrinfo(res);
    return rc;
}

int cmd_probe(int argc, char **argv)
{
    const char *url = getenv("MICROSHOP_PROBE_URL");
    const char *timeout = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) {
            timeout = argv[++i];
        } else if (argv[i][0] != '-') {
            url = argv[i];
        } else {
            fprintf(stderr, "microshop probe: unexpected '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    char *end = "";
    errno = 0;
    long t = timeout ? strtol(timeout, &end, 10) : DEFAULT_TIMEOUT_MS;
    if (errno || *end || t < 1 || t > MAX_TIMEOUT_MS) {
        fprintf(stderr, "microshop probe: --timeout-ms must be 1 to %d\n", MAX_TIMEOUT_MS);
        return 2;
    }
    probe_url u;
    if (!url || !*url || parse_url(url, &u) < 0) {
        fprintf(stderr, "microshop probe: give an http://HOST[:PORT][/PATH] URL%s\n",
                url && *url ? "" : " (or set MICROSHOP_PROBE_URL)");
        return 2;
    }
    char why[256] = "";
    int status = 0;
    if (fetch_status(&u, now_ms() + t, &status, why, sizeof why) < 0) {
        fprintf(stderr, "microshop probe: %s: %s\n", url, why);
        return 1;
    }
    if (status < 200 || status > 299) {
        fprintf(stderr, "microshop probe: %s: status %d\n", url, status);
        return 1;
    }
    return 0;
}
