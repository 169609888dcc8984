/*
 * util/parse.h - parsing user-given values: sizes (512M), counts, MAC
 * addresses, tcp:HOST:PORT addresses.
 */
#ifndef DVMM_UTIL_PARSE_H
#define DVMM_UTIL_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

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

/*
 * "tcp:HOST:PORT" into @host (NUL-terminated, shorter than @hostlen) and a
 * port 1..65535; -EINVAL with a reason in @e otherwise.
 */
int parse_tcp_uri(const char *uri, char *host, size_t hostlen, uint16_t *port,
		  struct err *e);

#endif
