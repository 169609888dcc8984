/*
 * cli/disk_serve.h - `dvmm disk-serve`: the disk agent that serves an image
 * to a remote dvmm (--disk remote=tcp:HOST:PORT).
 */
#ifndef DVMM_CLI_DISK_SERVE_H
#define DVMM_CLI_DISK_SERVE_H

#include <stdio.h>

void disk_serve_usage(FILE *f);
/* Returns the process exit status. */
int disk_serve_main(int argc, char **argv);

#endif
