/* util/parse.c - strict number parsing for the command line. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/parse.h"

static int unit_shift(const char *suffix, unsigned int *shift)
{
	static const struct {
		char c;
		unsigned int shift;
	} units[] = {{'k', 10}, {'m', 20}, {'g', 30}, {'t', 40}};
	char c = (char)tolower((unsigned char)suffix[0]);

	if (suffix[0] == '\0' || strcasecmp(suffix, "b") == 0) {
		*shift = 0;
		return 0;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (c != units[i].c)
			continue;
		if (suffix[1] == '\0' || strcasecmp(suffix + 1, "b") == 0 ||
		    strcasecmp(suffix + 1, "ib") == 0) {
			*shift = units[i].shift;
			return 0;
		}
	}
	return -EINVAL;
}

int parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	unsigned int shift;
	char *end;

	if (!s || !isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (unit_shift(end, &shift))
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

int parse_int_range(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (!s || !(isdigit((unsigned char)s[0]) || s[0] == '-'))
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end != '\0')
		return -EINVAL;
	if (v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int parse_mac(const char *s, uint8_t mac[6])
{
	uint8_t out[6];

	if (!s || strlen(s) != 17)
		return -EINVAL;
	for (int i = 0; i < 6; i++) {
		int hi = hex_digit(s[i * 3]), lo = hex_digit(s[i * 3 + 1]);

		if (hi < 0 || lo < 0 || (i < 5 && s[i * 3 + 2] != ':'))
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	memcpy(mac, out, 6);
	return 0;
}

int parse_tcp_uri(const char *uri, char *host, size_t hostlen, uint16_t *port,
		  struct err *e)
{
	const char *colon;
	char *end;
	long p;

	if (strncmp(uri, "tcp:", 4))
		return err_set(e, -EINVAL, "'%s' is not tcp:HOST:PORT", uri);
	colon = strrchr(uri + 4, ':');
	if (!colon || colon == uri + 4 ||
	    (size_t)(colon - (uri + 4)) >= hostlen)
		return err_set(e, -EINVAL, "'%s' is not tcp:HOST:PORT", uri);
	p = strtol(colon + 1, &end, 10);
	if (*end || p < 1 || p > 65535)
		return err_set(e, -EINVAL, "'%s': bad port", uri);
	memcpy(host, uri + 4, (size_t)(colon - (uri + 4)));
	host[colon - (uri + 4)] = 0;
	*port = (uint16_t)p;
	return 0;
}
