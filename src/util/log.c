/* util/log.c - the process-wide log threshold and the line printer. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include "util/log.h"

/* The one piece of process-wide state: how chatty the user asked us to be. */
static atomic_int log_threshold = LOG_WARN;

void log_set_level(enum log_level level)
{
	atomic_store(&log_threshold, level);
}

enum log_level log_get_level(void)
{
	return atomic_load(&log_threshold);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if ((int)level > atomic_load(&log_threshold))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One fprintf per line so lines from several threads do not mix. */
	fprintf(stderr, "dvmm: %s\n", line);
}
