/*
 * provider_sandbox.c — the sandbox card provider: an in-process stand-in for a card processor
 * with the test cards every processor documents. 4000000000000002 is declined; any other card
 * that reached it (the service has checked the Luhn digit) is approved. Refunds always
 * succeed. References are derived from the idempotency key, so a repeated call answers the
 * same operation, as a real processor's idempotency keys do. Pure and thread-safe.
 */
#include <stdio.h>
#include <string.h>

#include "runtime/core/error.h"
#include "services/payment/payment_internal.h"
#include "runtime/core/banned.h"

static const char DECLINED_CARD[] = "4000000000000002";

static int sandbox_authorize_capture(const payment_charge *charge, payment_outcome *out)
{
    memset(out, 0, sizeof *out);
    out->is_approved = strcmp(charge->card_number, DECLINED_CARD) != 0;
    out->decline_code = out->is_approved ? NULL : "card_declined";
    snprintf(out->reference, sizeof out->reference, "sbx_ch_%s", charge->key);
    return 0;
}

static int sandbox_refund(const char *key, const char *capture_reference, int64_t amount_cents,
                          const char *currency, payment_outcome *out)
{
    (void)capture_reference, (void)amount_cents, (void)currency;
    memset(out, 0, sizeof *out);
    out->is_approved = true;
    snprintf(out->reference, sizeof out->reference, "sbx_re_%s", key);
    return 0;
}

const payment_provider payment_sandbox = {
    .name = "sandbox",
    .authorize_capture = sandbox_authorize_capture,
    .refund = sandbox_refund,
};
