/*
 * currency.h — the ISO 4217 codes a shop may price in, one list for every service.
 * Pure and thread-safe; no allocation.
 */
#ifndef MS_CURRENCY_H
#define MS_CURRENCY_H

#include <stdbool.h>

/* True for an active ISO 4217 alphabetic code in upper case ("EUR"); false for anything else,
 * including NULL, lower case and the fund or metal codes (XAU, XTS...). */
bool ms_currency_valid(const char *code);

#endif
