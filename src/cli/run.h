/*
 * cli/run.h - `dvmm run`: parse options, boot the machine, serve the control
 * socket, reboot on guest reset, and turn the way the VM ended into an exit
 * status. The pieces are shared with a cluster's node 0 (cli/node.c,
 * cluster/node.c), which boots its VM through the same runner.
 */
#ifndef DVMM_CLI_RUN_H
#define DVMM_CLI_RUN_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

#include "machine/machine.h"

#define EXIT_USAGE 2
#define EXIT_FAILURE_VMM 1

struct run_options {
	struct machine_config mc;
	const char *api_path;
	const char *console;  /* stdio, file:PATH or none */
	const char *vconsole; /* file:PATH or NULL */
	int nodes;	      /* --nodes N; 0 runs the VM in this process */
	bool netns;	      /* --netns: one network namespace per node */
	bool irqchip_set;     /* --irqchip given */
	const char *incoming; /* --incoming tcp:HOST:PORT */
	const char *migration_secret; /* --migration-secret FILE */
};

/* What a cluster adds to the control socket's status and stats. */
struct run_hooks {
	/* A new JSON array describing every node, or NULL. */
	json_t *(*nodes)(void *opaque, bool with_stats);
	/*
	 * The machine is built and its vCPUs not yet started: connect it
	 * to the other nodes and wait for theirs (0, or e says why not).
	 * A cluster does not reboot: a guest reset ends the VM.
	 */
	int (*created)(void *opaque, struct machine *pc, struct err *e);
	/* The machine is about to be torn down. */
	void (*destroying)(void *opaque, struct machine *pc);
	/* Pause (@pause) or resume every other node's vCPUs: 0 or -errno. */
	int (*pause_others)(void *opaque, bool pause);
	void *opaque;
};

int run_main(int argc, char **argv);
void run_usage(FILE *f);

/* Parse `dvmm run` options; returns 0, 1 for --help, or -exit_status. */
int run_parse_options(int argc, char **argv, struct run_options *o);
/* Open the console and virtio-console outputs; 0 or -exit_status. */
int run_open_outputs(struct run_options *o);

/* The VM as the control socket and the stop requests see it. */
struct runner;

/* @o and @hooks (may be NULL) must outlive the runner. */
struct runner *runner_create(struct run_options *o,
			     const struct run_hooks *hooks);
/* Serve the control socket and boot (and reboot) the VM until it ends for
 * good; returns the exit status. */
int runner_run(struct runner *r);
/*
 * End the VM from any thread (a signal, a failed cluster node): it stops
 * with @reason and @code and is not rebooted. Before runner_run or between
 * boots, the next boot stops at once; after runner_run, a no-op.
 */
void runner_stop(struct runner *r, enum vm_stop_reason reason, int code);
void runner_destroy(struct runner *r);

/*
 * SIGINT, SIGTERM and SIGHUP, blocked in every thread and taken by one
 * watcher thread that calls @fn. Start it before any other thread so that
 * threads created later inherit the mask.
 */
struct stop_signals {
	pthread_t thread;
	void (*fn)(void *opaque, int sig);
	void *opaque;
	bool ending; /* under lock: our own SIGHUP ends the thread */
	pthread_mutex_t lock;
};

int stop_signals_start(struct stop_signals *s,
		       void (*fn)(void *opaque, int sig), void *opaque);
void stop_signals_end(struct stop_signals *s);

#endif
