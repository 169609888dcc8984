/* util/parse.h - parsing user-given numbers: sizes (512M) and counts. */
#ifndef DVMM_UTIL_PARSE_H
#define DVMM_UTIL_PARSE_H

#include <stdint.h>

/*
 * Parse "SIZE[K|M|G|T]" (binary units, suffix case-insensitive, optional
 * trailing "B" or "iB"; no suffix means bytes). Returns 0, or -EINVAL for
 * anything else, -ERANGE on overflow.
 */
int parse_size(const char *s, uint64_t *out);
/* Parse a decimal integer in [min, max]; -EINVAL or -ERANGE otherwise. */
int parse_int_range(const char *s, long min, long max, long *out);

/* Parse "xx:xx:xx:xx:xx:xx" (hex); -EINVAL otherwise. */
int parse_mac(const char *s, uint8_t mac[6]);

#endif
