/* Field rules of the user service. Each check returns NULL or the message for that field. */
#include <string.h>

#include "runtime/json/json.h"
#include "services/common/rules.h"
#include "services/user/user_internal.h"
#include "runtime/core/banned.h"

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

const char *user_check_email(const char *email)
{
    size_t n = strlen(email);
    const char *at = strchr(email, '@');
    if (n < 3 || n > 254 || !at || strchr(at + 1, '@'))
        return "must be an email address like name@example.com";
    size_t local = (size_t)(at - email);
    if (local == 0 || local > 64)
        return "must be an email address like name@example.com";
    static const char local_extra[] = ".!#$%&'*+/=?^_`{|}~-";
    for (size_t i = 0; i < local; i++) {
        char c = email[i];
        if (!is_alnum(c) && !strchr(local_extra, c))
            return "must be an email address like name@example.com";
        if (c == '.' && (i == 0 || i + 1 == local || email[i + 1] == '.'))
            return "must be an email address like name@example.com";
    }
    /* domain: dot-separated labels of letters, digits and inner hyphens; a letter TLD */
    const char *d = at + 1;
    int labels = 0;
    while (*d) {
        const char *dot = strchr(d, '.');
        size_t len = dot ? (size_t)(dot - d) : strlen(d);
        if (len == 0 || len > 63 || d[0] == '-' || d[len - 1] == '-')
            return "must be an email address like name@example.com";
        for (size_t i = 0; i < len; i++)
            if (!is_alnum(d[i]) && d[i] != '-')
                return "must be an email address like name@example.com";
        labels++;
        if (!dot) {
            if (len < 2)
                return "must be an email address like name@example.com";
            for (size_t i = 0; i < len; i++)
                if (d[i] >= '0' && d[i] <= '9')
                    return "must be an email address like name@example.com";
        }
        d += len + (dot ? 1 : 0);
        if (dot && !*d)
            return "must be an email address like name@example.com";
    }
    return labels >= 2 ? NULL : "must be an email address like name@example.com";
}

const char *user_check_name(const char *name)
{
    return ms_rule_text(name, 100);
}

const char *user_check_password(const char *password)
{
    /* OWASP: at least 8, allow long passphrases; argon2 has no 72-byte cut like bcrypt */
    size_t n = ms_utf8_length(password);
    if (n < 8)
        return "must be at least 8 characters";
    if (n > 128)
        return "must be at most 128 characters";
    return NULL;
}

const char *user_check_phone(const char *phone)
{
    /* E.164: '+', a non-zero country digit, 7 to 15 digits in all */
    size_t n = strlen(phone);
    if (n < 8 || n > 16 || phone[0] != '+' || phone[1] < '1' || phone[1] > '9')
        return "must be an E.164 number like +14155550100";
    for (size_t i = 1; i < n; i++)
        if (phone[i] < '0' || phone[i] > '9')
            return "must be an E.164 number like +14155550100";
    return NULL;
}

const char *user_check_language(const char *lang)
{
    /* a BCP 47 subset: ll, lll, ll-RR */
    size_t n = strlen(lang), i = 0;
    while (i < n && lang[i] >= 'a' && lang[i] <= 'z')
        i++;
    if (i < 2 || i > 3)
        return "must be a language tag like en or pt-BR";
    if (i == n)
        return NULL;
    if (n - i == 3 && lang[i] == '-' && lang[i + 1] >= 'A' && lang[i + 1] <= 'Z' &&
        lang[i + 2] >= 'A' && lang[i + 2] <= 'Z')
        return NULL;
    return "must be a language tag like en or pt-BR";
}
