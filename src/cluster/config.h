/*
 * cluster/config.h - the cluster file: one JSON document describing a VM
 * spread over nodes (each node's address, the VM's vCPUs and which node runs
 * each, memory, devices and their home node, the shared secret). Loading
 * validates every field and names the one that is wrong
 * ("FILE:nodes[1].port: ..."); saving writes a file the loader accepts.
 */
#ifndef DVMM_CLUSTER_CONFIG_H
#define DVMM_CLUSTER_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster/transport.h"
#include "core/vm.h"
#include "machine/machine.h"
#include "util/err.h"

#define CLUSTER_MAX_DEVICES MACHINE_MAX_VIRTIO
#define CLUSTER_MIN_SECRET 16

enum cluster_dev_type {
	CLUSTER_DEV_DISK,
	CLUSTER_DEV_NET,
	CLUSTER_DEV_RNG,
	CLUSTER_DEV_VCONSOLE,
};

/* One device and the node it lives on (its home node). */
struct cluster_device {
	enum cluster_dev_type type;
	int node;
	char *path;    /* disk image; vconsole output file */
	bool readonly; /* disk */
	char *tap;     /* net: NULL lets dvmm create one */
	bool has_mac;  /* net */
	uint8_t mac[6];
	/*
	 * net, multiqueue: npairs queue pairs, pair 0 being node and tap
	 * above, pair p >= 1 served by pair[p].node on its tap pair[p].tap
	 * (NULL: one dvmm makes). File: "queues": N (every pair on the home
	 * node, one multi-queue tap) or "pairs": [{"node": K, "tap": T}...].
	 */
	int npairs; /* 0 or 1: one pair */
	struct {
		int node;
		char *tap;
	} pair[VIRTIO_NET_MAX_PAIRS];
};

struct cluster_config {
	uint8_t cluster_id[CLUSTER_ID_LEN];
	uint8_t secret[CLUSTER_SECRET_MAX];
	size_t secret_len;
	uint64_t memory;
	char *kernel;
	char *cmdline; /* NULL for none */
	char *initrd;  /* NULL for none */
	int nnodes;
	struct transport_node_addr node[CLUSTER_MAX_NODES]; /* by node id */
	int ncpus;
	int vcpu_node[VM_MAX_CPUS];
	int ndevices;
	struct cluster_device dev[CLUSTER_MAX_DEVICES];
	enum doorbell_mode doorbell;
	/* Transport timing; 0 means the transport's default. */
	unsigned int heartbeat_ms;
	unsigned int dead_after_ms;
	unsigned int connect_timeout_ms;
};

/*
 * Parse and validate @text; @name (the file's path) prefixes every message.
 * A "secret_file" is read here. On failure nothing needs freeing.
 */
int cluster_config_parse(struct cluster_config *c, const char *text,
			 const char *name, struct err *e);
int cluster_config_load(struct cluster_config *c, const char *path,
			struct err *e);
/* Write @c to a new file @path (mode 0600, refused if it exists). */
int cluster_config_save(const struct cluster_config *c, const char *path,
			struct err *e);
void cluster_config_free(struct cluster_config *c);

/* The machine node 0 builds: everything but the console and vconsole fds. */
void cluster_config_machine(const struct cluster_config *c,
			    struct machine_config *mc);
/* The transport configuration of node @self. */
void cluster_config_transport(const struct cluster_config *c, int self,
			      struct transport_config *tc);
/* Home node of each virtio device in machine order; returns how many. */
int cluster_config_virtio_homes(const struct cluster_config *c, int *homes);
/* The vCPUs node @self runs, a bit per vCPU id. */
uint64_t cluster_config_local_cpus(const struct cluster_config *c, int self);
/* The vconsole device's output path, or NULL. */
const char *cluster_config_vconsole(const struct cluster_config *c);

#endif
