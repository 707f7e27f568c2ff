/*
 * banned.h — functions that invite overflows; included last by every .c file of the runtime,
 * so using one is a compile error. Use snprintf / memcpy with explicit lengths instead.
 */
#ifndef MS_BANNED_H
#define MS_BANNED_H
#define MS_BANNED_(f) sorry_##f##_is_banned
#undef strcpy
#define strcpy(a, b) MS_BANNED_(strcpy)
#undef strcat
#define strcat(a, b) MS_BANNED_(strcat)
#undef sprintf
#define sprintf(...) MS_BANNED_(sprintf)
#undef vsprintf
#define vsprintf(...) MS_BANNED_(vsprintf)
#undef gets
#define gets(a) MS_BANNED_(gets)
#undef strtok
#define strtok(a, b) MS_BANNED_(strtok)
#endif
