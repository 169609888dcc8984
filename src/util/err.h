/*
 * util/err.h - an error travelling back to the caller: a negative errno and
 * one line for the user. Library code fills it; only main() prints it.
 */
#ifndef DVMM_UTIL_ERR_H
#define DVMM_UTIL_ERR_H

#define ERR_MSG_MAX 256

struct err {
	int code;	       /* negative errno, 0 when no error */
	char msg[ERR_MSG_MAX]; /* one line, no trailing newline */
};

/* Record @code (negative errno) and the formatted message; returns @code. */
int err_set(struct err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void err_clear(struct err *e);

#endif
