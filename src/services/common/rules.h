/*
 * rules.h — field rules every service applies the same way, so a postal code or a free-text
 * field means one thing across the API. Each returns NULL when the value is valid, else the
 * message for the field ("must ..."). Pure and thread-safe.
 */
#ifndef MS_RULES_H
#define MS_RULES_H

#include <stddef.h>

/* Free text: 1..max code points, no control characters (C0, DEL, C1), no outer spaces. */
const char *ms_rule_text(const char *s, size_t max);
/* 1 to 12 letters, digits, spaces or hyphens. */
const char *ms_rule_postal_code(const char *s);
/* ISO 3166-1 alpha-2, upper case. */
const char *ms_rule_country(const char *s);
/* ISO 4217 (see currency.h). */
const char *ms_rule_currency(const char *s);
/* A UUID in the canonical 8-4-4-4-12 form. */
const char *ms_rule_uuid(const char *s);
/* A card number: 12 to 19 digits (no spaces) whose last is the Luhn check digit. The message
 * never quotes the number. */
const char *ms_rule_card(const char *s);

#endif
