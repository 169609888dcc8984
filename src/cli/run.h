/*
 * cli/run.h - `dvmm run`: parse options, boot the machine, serve the control
 * socket, reboot on guest reset, and turn the way the VM ended into an exit
 * status.
 */
#ifndef DVMM_CLI_RUN_H
#define DVMM_CLI_RUN_H

#include <stdio.h>

int run_main(int argc, char **argv);
void run_usage(FILE *f);

#endif
