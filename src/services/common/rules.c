/* Shared field rules; see rules.h. */
#include <stdbool.h>
#include <string.h>

#include "runtime/core/id.h"
#include "runtime/json/json.h"
#include "services/common/currency.h"
#include "services/common/rules.h"
#include "runtime/core/banned.h"

const char *ms_rule_text(const char *s, size_t max)
{
    size_t n = ms_utf8_length(s);
    if (n == 0)
        return "must not be empty";
    if (n > max)
        return "is too long";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        /* C0, DEL, and C1 (U+0080..U+009F, encoded C2 80..C2 9F) */
        if (*p < 0x20 || *p == 0x7f || (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
            return "must not contain control characters";
    }
    if (s[0] == ' ' || s[strlen(s) - 1] == ' ')
        return "must not start or end with a space";
    return NULL;
}

const char *ms_rule_postal_code(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 12)
        return "must be 1 to 12 letters, digits, spaces or hyphens";
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == ' ' || c == '-'))
            return "must be 1 to 12 letters, digits, spaces or hyphens";
    }
    return NULL;
}

const char *ms_rule_country(const char *s)
{
    if (strlen(s) != 2 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z')
        return "must be an ISO 3166-1 alpha-2 code like DE";
    return NULL;
}

const char *ms_rule_currency(const char *s)
{
    return ms_currency_valid(s) ? NULL : "must be an ISO 4217 currency code like EUR";
}

const char *ms_rule_uuid(const char *s)
{
    return ms_uuid_valid(s) ? NULL : "must be a UUID";
}

/* The Luhn check digit: catches a mistyped digit and most swaps before the provider does. */
static bool luhn_valid(const char *digits, size_t n)
{
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        int d = digits[n - 1 - i] - '0';
        if (i % 2 == 1 && (d *= 2) > 9)
            d -= 9;
        sum += d;
    }
    return sum % 10 == 0;
}

const char *ms_rule_card(const char *s)
{
    size_t n = strlen(s);
    if (n < 12 || n > 19 || strspn(s, "0123456789") != n)
        return "must be 12 to 19 digits";
    if (!luhn_valid(s, n))
        return "fails the card number check digit";
    return NULL;
}
