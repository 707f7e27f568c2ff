/*
 * publisher_file.c — the file publisher (contract in publisher.h): the relay's local JSONL feed,
 * `<data>/<service>-outbox.jsonl` for the services (outbox_feed.c names it). One line per
 * message, appended with O_APPEND by one writer, fsynced before publish returns 0; a failed
 * write is cut off again, so the feed holds whole lines only. The directory entry is fsynced
 * at open, before the first line counts as published. One relay thread at a time.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "eventstore/publisher.h"
#include "runtime/core/buf.h"
#include "runtime/core/error.h"
#include "runtime/core/log.h"
#include "runtime/json/json.h"
#include "runtime/core/banned.h"

typedef struct file_publisher {
    int fd;
    char *path;
    ms_buf lines;
} file_publisher;

static void put_message(ms_buf *b, const ms_outbox_message *m)
{
    ms_buf_adds(b, "{\"seq\":");
    ms_buf_add_int(b, m->seq);
    ms_buf_adds(b, ",\"id\":");
    ms_json_put_string(b, m->id);
    ms_buf_adds(b, ",\"aggregate_type\":");
    ms_json_put_string(b, m->aggregate_type);
    ms_buf_adds(b, ",\"aggregate_id\":");
    ms_json_put_string(b, m->aggregate_id);
    ms_buf_adds(b, ",\"type\":");
    ms_json_put_string(b, m->type);
    ms_buf_adds(b, ",\"payload\":");
    /* Services write compact JSON (one line): it goes in as it is, unparsed, which was a third
     * of the relay's time. Anything else is parsed and dumped compact, so a pretty-printed
     * payload still fits on one line. */
    const char *p = m->payload;
    if ((*p == '{' || *p == '[') && !strpbrk(p, "\r\n")) {
        ms_buf_adds(b, p);
        ms_buf_adds(b, ",\"created_at\":");
        ms_json_put_string(b, m->created_at);
        ms_buf_adds(b, "}\n");
        return;
    }
    json_t *doc = json_loads(p, JSON_DECODE_ANY, NULL);
    if (doc) {
        ms_json_put_doc(b, doc);
    } else {
        ms_log(MS_LOG_WARN, "outbox feed: payload is not JSON, written as a string", "id", m->id,
               NULL);
        ms_json_put_string(b, m->payload);
    }
    ms_buf_adds(b, ",\"created_at\":");
    ms_json_put_string(b, m->created_at);
    ms_buf_adds(b, "}\n");
}

static int file_publish(void *self, const ms_outbox_message *msgs, size_t n)
{
    file_publisher *f = self;
    int rc = 0;
    struct stat st;
    bool has_size = false;
    f->lines.n = 0;
    for (size_t i = 0; i < n; i++)
        put_message(&f->lines, &msgs[i]);
    if (fstat(f->fd, &st) != 0) {
        rc = MS_EIO;
        goto out;
    }
    has_size = true;
    for (size_t off = 0; off < f->lines.n;) {
        ssize_t w = write(f->fd, f->lines.p + off, f->lines.n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = MS_EIO;
            goto out;
        }
        off += (size_t)w;
    }
    if (fsync(f->fd) != 0)
        rc = MS_EIO;
out:
    if (rc != 0) {
        ms_log(MS_LOG_WARN, "outbox feed: write failed", "path", f->path, "error", strerror(errno),
               NULL);
        /* Cut a partial write off, so the feed holds whole lines only (O_APPEND, one writer). */
        if (has_size && ftruncate(f->fd, st.st_size) != 0)
            ms_log(MS_LOG_ERROR, "outbox feed: cannot cut a partial write", "path", f->path, NULL);
    }
    return rc;
}

static void file_close(void *self)
{
    file_publisher *f = self;
    close(f->fd);
    ms_buf_release(&f->lines);
    free(f->path);
    free(f);
}

int ms_publisher_file(const char *path, ms_publisher *out)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        ms_log(MS_LOG_ERROR, "outbox feed: cannot open", "path", path, "error", strerror(errno),
               NULL);
        return MS_EIO;
    }
    /* Make the file's directory entry durable too, before the first line counts as published. */
    char *dir = ms_xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dir);
    file_publisher *f = ms_xcalloc(1, sizeof *f);
    f->fd = fd;
    f->path = ms_xstrdup(path);
    ms_buf_init(&f->lines, 4096);
    *out = (ms_publisher){.publish = file_publish, .close = file_close, .self = f, .name = "file"};
    return 0;
}
