/*
 * main.c - the dvmm command: `dvmm run ...` boots a VM, `dvmm node ...` runs
 * one node of a cluster, `dvmm ctl ...` talks to a running VM, `dvmm
 * disk-serve ...` serves a disk image to a remote VM. Everything
 * else lives in the library under src/.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "cli/disk_serve.h"
#include "cli/node.h"
#include "cli/run.h"

#define DVMM_VERSION "0.1.0"

static void usage(FILE *f)
{
	fprintf(f, "usage: dvmm run --kernel FILE [options]   boot a VM\n"
		   "       dvmm node --cluster FILE --id K      run one node "
		   "of a cluster\n"
		   "       dvmm ctl SOCKET COMMAND              control a "
		   "running VM\n"
		   "                (status, pause, resume, stop, stats)\n"
		   "       dvmm disk-serve IMAGE --listen tcp:HOST:PORT "
		   "--secret FILE\n"
		   "                                            serve a disk "
		   "to a remote VM\n"
		   "       dvmm --help | --version\n\n");
	run_usage(f);
}

int main(int argc, char **argv)
{
	/* A closed console or socket is an error to report, not a death. */
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "run") == 0)
		return run_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "node") == 0)
		return node_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "disk-serve") == 0)
		return disk_serve_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "ctl") == 0)
		return api_client_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("dvmm %s\n", DVMM_VERSION);
		return 0;
	}
	fprintf(stderr, "dvmm: unknown command '%s'; try dvmm --help\n",
		argv[1]);
	return 2;
}
