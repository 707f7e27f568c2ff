/*
 * payment_flags.h — the flags only `microshop serve payment` has (chaos), parsed by the CLI
 * with the common ones. Start-up only (not thread-safe).
 */
#ifndef MS_PAYMENT_FLAGS_H
#define MS_PAYMENT_FLAGS_H

#include <stddef.h>

#include "runtime/core/config.h"

extern const ms_option payment_flags[];
extern const size_t payment_nflags;

/* Checks the parsed flag values and makes them the chaos settings: 0, or MS_EINVAL with a
 * sentence in `err`. */
int payment_flags_apply(char *err, size_t errn);

#endif
