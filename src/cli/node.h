/*
 * cli/node.h - `dvmm node --cluster FILE --id K` runs one node of a cluster;
 * `dvmm run --nodes N [--netns] ...` (node_launch) writes a cluster file for
 * N nodes on this machine and runs them as child processes.
 */
#ifndef DVMM_CLI_NODE_H
#define DVMM_CLI_NODE_H

#include <stdio.h>

struct run_options;

int node_main(int argc, char **argv);
void node_usage(FILE *f);
/* `dvmm run` with --nodes: returns the exit status (node 0's, or 1). */
int node_launch(const struct run_options *o);

#endif
