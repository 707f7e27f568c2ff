/*
 * db_trace.c — a CLIENT span per statement, with OpenTelemetry's database attributes:
 * db.system.name, db.operation.name, db.collection.name (only when the statement names one
 * table), db.query.text (the SQL as written: values travel as parameters and never appear;
 * string literals are masked all the same), server.address/server.port (PostgreSQL), and on
 * failure status ERROR with error.type (the SQLSTATE when there is one, else the MS_E* name).
 *
 * The span's parent is the thread's current context: a request's handler on the loop thread
 * (SQLite reads run inline there), or the context the pool carried over to its worker thread.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "runtime/core/error.h"
#include "runtime/db/db_internal.h"
#include "runtime/core/banned.h"

/* Long enough for every statement of the services; a longer one is cut. It leaves room in the
 * span's text area for the other attributes and an error message. */
enum { QUERY_TEXT_MAX = 768, OP_MAX = 24, TABLE_MAX = 64 };

/* ---- reading SQL just enough ---- */

typedef enum { TOK_END, TOK_WORD, TOK_PUNCT } tok_kind;

typedef struct lexer {
    const char *p;
    tok_kind kind;
    const char *start; /* of a word (a quoted identifier without its quotes) */
    size_t len;
    char punct;
} lexer;

/* The next token, skipping blanks, comments and string literals. */
static void next_token(lexer *lx)
{
    const char *p = lx->p;
    for (;;) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            p = end ? end + 2 : p + strlen(p);
        } else if (*p == '\'') {
            for (p++; *p; p++)
                if (*p == '\'' && *++p != '\'')
                    break;
        } else {
            break;
        }
    }
    lx->kind = TOK_END;
    if (!*p) {
        lx->p = p;
        return;
    }
    if (*p == '"') {
        const char *end = strchr(p + 1, '"');
        lx->kind = TOK_WORD;
        lx->start = p + 1;
        lx->len = end ? (size_t)(end - p - 1) : strlen(p + 1);
        lx->p = end ? end + 1 : p + strlen(p);
        return;
    }
    if (isalpha((unsigned char)*p) || *p == '_') {
        const char *s = p;
        while (isalnum((unsigned char)*p) || *p == '_' || *p == '$' || *p == '.')
            p++;
        lx->kind = TOK_WORD;
        lx->start = s;
        lx->len = (size_t)(p - s);
        lx->p = p;
        return;
    }
    lx->kind = TOK_PUNCT;
    lx->punct = *p;
    lx->p = p + 1;
}

static bool word_is(const lexer *lx, const char *kw)
{
    return lx->kind == TOK_WORD && strlen(kw) == lx->len &&
           strncasecmp(lx->start, kw, lx->len) == 0;
}

/* Words that follow a table where an alias could stand: seeing one, there is no alias. */
static bool is_clause_word(const lexer *lx)
{
    static const char *const words[] = {
        "WHERE",     "JOIN",   "INNER",  "LEFT",    "RIGHT",     "FULL",  "CROSS",
        "NATURAL",   "ON",     "USING",  "GROUP",   "ORDER",     "LIMIT", "OFFSET",
        "SET",       "VALUES", "SELECT", "DEFAULT", "RETURNING", "UNION", "EXCEPT",
        "INTERSECT", "HAVING", "WINDOW", "FOR",     "DO",        "AS",    "INDEXED",
    };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (word_is(lx, words[i]))
            return true;
    return false;
}

static void copy_token(const lexer *lx, char *out, size_t size)
{
    size_t n = lx->len < size - 1 ? lx->len : size - 1;
    memcpy(out, lx->start, n);
    out[n] = '\0';
}

/*
 * A table is what follows FROM, JOIN, INTO (of an INSERT or REPLACE) or the UPDATE that starts
 * the statement. OpenTelemetry wants db.collection.name only when one table is concerned, so
 * any second name (a join, a comma list, INSERT ... SELECT from another table, a FROM inside a
 * function call such as EXTRACT) leaves it out: a wrong table in a waterfall would mislead
 * more than none.
 */
void ms_db__sql_summary(const char *sql, char *op, size_t op_size, char *table, size_t table_size)
{
    op[0] = table[0] = '\0';
    lexer lx = {.p = sql ? sql : ""};
    next_token(&lx);
    if (lx.kind != TOK_WORD)
        return;
    size_t n = lx.len < op_size - 1 ? lx.len : op_size - 1;
    for (size_t i = 0; i < n; i++)
        op[i] = (char)toupper((unsigned char)lx.start[i]);
    op[n] = '\0';
    bool writes_into = strcmp(op, "INSERT") == 0 || strcmp(op, "REPLACE") == 0;
    enum {
        NONE,
        EXPECT_TABLE,
        AFTER_TABLE,
        AFTER_ALIAS
    } state = strcmp(op, "UPDATE") == 0 ? EXPECT_TABLE : NONE;
    bool several = false;
    char found[TABLE_MAX] = "";
    for (next_token(&lx); lx.kind != TOK_END && !several; next_token(&lx)) {
        if (state == EXPECT_TABLE) {
            state = NONE;
            if (lx.kind == TOK_WORD && !is_clause_word(&lx)) {
                char name[TABLE_MAX];
                copy_token(&lx, name, sizeof name);
                if (found[0] && strcmp(found, name) != 0)
                    several = true;
                memcpy(found, name, sizeof found);
                state = AFTER_TABLE;
                continue;
            }
        } else if (state == AFTER_TABLE || state == AFTER_ALIAS) {
            if (lx.kind == TOK_PUNCT && lx.punct == ',') {
                several = true;
                break;
            }
            if (state == AFTER_TABLE && word_is(&lx, "AS"))
                continue;
            bool alias = state == AFTER_TABLE && lx.kind == TOK_WORD && !is_clause_word(&lx);
            state = alias ? AFTER_ALIAS : NONE;
            if (alias)
                continue;
        }
        if (word_is(&lx, "FROM") || word_is(&lx, "JOIN") || (writes_into && word_is(&lx, "INTO")))
            state = EXPECT_TABLE;
    }
    if (!several && found[0])
        snprintf(table, table_size, "%s", found);
}

void ms_db__sql_sanitize(const char *sql, char *out, size_t size)
{
    size_t n = 0;
    const char *p = sql;
    for (; *p && n + 1 < size; p++) {
        if (*p != '\'') {
            out[n++] = *p;
            continue;
        }
        if (n + 4 > size)
            break;         /* no room for the mask: cut here */
        for (p++; *p; p++) /* to the closing quote; '' is a quote inside */
            if (*p == '\'' && p[1] != '\'')
                break;
            else if (*p == '\'')
                p++;
        memcpy(out + n, "'?'", 3);
        n += 3;
        if (!*p)
            break;
    }
    if (*p) { /* cut: drop a character cut in two (UTF-8) */
        size_t lead = n;
        while (lead > 0 && ((unsigned char)out[lead - 1] & 0xC0) == 0x80)
            lead--;
        if (lead > 0 && (unsigned char)out[lead - 1] >= 0xC0) {
            unsigned char b = (unsigned char)out[lead - 1];
            size_t want = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
            if (n - (lead - 1) < want)
                n = lead - 1;
        }
    }
    out[n] = '\0';
}

/* ---- spans ---- */

static const char *system_name(const ms_db_conn *c)
{
    return c->backend == MS_DB_POSTGRES ? "postgresql" : "sqlite";
}

ms_span *ms_db__span_start(const ms_db_conn *c, const char *sql)
{
    const ms_trace_ctx *parent = ms_trace_current();
    if (!ms_trace_sampled(parent) || !ms_trace_recording())
        return NULL;
    char op[OP_MAX], table[TABLE_MAX], name[OP_MAX + TABLE_MAX + 1];
    ms_db__sql_summary(sql, op, sizeof op, table, sizeof table);
    if (!op[0])
        snprintf(name, sizeof name, "%s", system_name(c));
    else if (table[0])
        snprintf(name, sizeof name, "%s %s", op, table);
    else
        snprintf(name, sizeof name, "%s", op);
    ms_trace_ctx ctx;
    ms_span *s = ms_span_start(name, MS_SPAN_CLIENT, parent, &ctx);
    if (!s)
        return NULL;
    ms_span_set_str(s, "db.system.name", system_name(c));
    if (op[0])
        ms_span_set_str(s, "db.operation.name", op);
    if (table[0])
        ms_span_set_str(s, "db.collection.name", table);
    if (c->server_address[0])
        ms_span_set_str(s, "server.address", c->server_address);
    if (c->server_port > 0)
        ms_span_set_int(s, "server.port", c->server_port);
    char text[QUERY_TEXT_MAX + 1];
    ms_db__sql_sanitize(sql ? sql : "", text, sizeof text);
    ms_span_set_str(s, "db.query.text", text);
    return s;
}

void ms_db__span_end(ms_span *s, const ms_db_conn *c, int rc)
{
    if (!s)
        return;
    if (rc < 0) {
        /* PostgreSQL's errors end "(SQLSTATE xxxxx)" (db_postgres.c): the code is the type */
        const char *state = strstr(c->errmsg, "SQLSTATE ");
        char code[8] = "";
        if (state && sscanf(state + 9, "%5[0-9A-Z]", code) == 1 && strlen(code) == 5) {
            ms_span_set_str(s, "db.response.status_code", code);
            ms_span_set_str(s, "error.type", code);
        } else {
            ms_span_set_str(s, "error.type", ms_errname(rc));
        }
        ms_span_error(s, c->errmsg[0] ? c->errmsg : ms_strerror(rc));
    }
    ms_span_end(s);
}
