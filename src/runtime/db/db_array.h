/*
 * db_array.h — a PostgreSQL array literal of texts ('{"a","b"}'), built element by element,
 * so a whole batch travels as one parameter ($1::text[], unnest(...)): one round trip for
 * many rows. Elements are quoted; inside quotes only backslash and double quote are escaped.
 * No NULL elements. Not thread-safe; the array owns its buffer (ms_db_array_free).
 */
#ifndef MS_DB_ARRAY_H
#define MS_DB_ARRAY_H

#include <stddef.h>
#include <stdint.h>

typedef struct ms_db_array {
    char *p;
    size_t len, cap;
} ms_db_array;

void ms_db_array_add(ms_db_array *a, const char *s);
void ms_db_array_add_int(ms_db_array *a, int64_t v);
/* Closes the literal and returns it ("{}" when empty); add nothing after, until a reset. */
const char *ms_db_array_text(ms_db_array *a);
/* Empties it for reuse, keeping the buffer. */
void ms_db_array_reset(ms_db_array *a);
void ms_db_array_free(ms_db_array *a);

#endif
