/*
 * cli/run.c - `dvmm run`: options, the boot/reboot loop, signals, and the
 * control socket's view of the running VM (struct api_ops). With --nodes it
 * hands over to the cluster launcher (cli/node.c); a cluster's node 0 boots
 * its VM through the same runner.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "api/api.h"
#include "cli/node.h"
#include "cli/run.h"
#include "migration/migrate.h"
#include "util/clock.h"
#include "cluster/transport.h"
#include "core/kvm.h"
#include "machine/machine.h"
#include "util/log.h"
#include "util/parse.h"
#include "virtio/blk_remote.h"
#include "virtio/devices.h"

#define MIN_RAM (16ULL << 20)
#define DEFAULT_RAM (256ULL << 20)

/* The VM as the control socket and stop requests see it. */
struct runner {
	pthread_mutex_t lock;
	struct machine *pc; /* NULL between boots */
	struct run_options *opt;
	const struct run_hooks *hooks;
	unsigned int reboots;
	bool quit; /* a signal, "stop" or a failed node asked us to end */
	int quit_code;
	bool migrated; /* the VM moved away: end without an error */
	struct migrate_secret secret;
	bool have_secret;
	/* an outgoing migration, on its own thread */
	struct migrate_progress mig;
	struct migrate_opts mig_opts;
	pthread_t mig_thread;
	bool mig_thread_up;
	bool mig_seen;		 /* a client saw how it ended */
	pthread_cond_t mig_cond; /* mig_seen, under r->lock */
};

void run_usage(FILE *f)
{
	fprintf(f,
		"usage: dvmm run --kernel FILE [options]\n"
		"  --kernel FILE       kernel to boot (required): a PVH ELF\n"
		"                      (vmlinux, the test guest) or a bzImage\n"
		"  --cpus N            vCPUs, 1..%d (default 1)\n"
		"  --memory SIZE       guest RAM, e.g. 512M, 2G (default "
		"256M)\n"
		"  --cmdline STRING    kernel command line\n"
		"  --initrd FILE       initial ramdisk (PVH module 0)\n"
		"  --console stdio|file:PATH|none   serial console "
		"(default stdio)\n"
		"  --api PATH          control socket (see dvmm ctl)\n"
		"  --kvm PATH          KVM device (default /dev/kvm)\n"
		"  --disk PATH[,readonly]   virtio-blk on a raw image "
		"(repeatable)\n"
		"  --disk remote=tcp:HOST:PORT[,readonly]   virtio-blk on an "
		"image served by\n"
		"                      dvmm disk-serve (needs "
		"--migration-secret)\n"
		"  --net tap[=NAME][,mac=XX:XX:XX:XX:XX:XX][,queues=N][,node=K]"
		"\n"
		"                      virtio-net on a tap (repeatable); N "
		"queue pairs on one\n"
		"                      multi-queue tap; with --nodes, on node "
		"K\n"
		"  --net pairs=K[:TAP]+K[:TAP]...[,mac=MAC]   one multiqueue "
		"virtio-net whose\n"
		"                      pair p is served by node K on its own "
		"tap\n"
		"  --rng               virtio-rng fed by the host's getrandom\n"
		"  --vconsole file:PATH   virtio-console, output to PATH\n"
		"  --doorbell ioeventfd|poll   how virtqueue kicks reach dvmm "
		"(default ioeventfd)\n"
		"  --nodes N           run the VM as a cluster of N node "
		"processes on this\n"
		"                      machine (2..%d; see dvmm node)\n"
		"  --netns             with --nodes: each node in its own "
		"network namespace\n"
		"                      (needs root)\n"
		"  --irqchip kernel|user   interrupt controllers in KVM or in "
		"dvmm (default\n"
		"                      kernel on one node, user on several)\n"
		"  --dirty-ring N      track dirtied pages for a migration in "
		"KVM's dirty ring\n"
		"                      (N entries per vCPU, a power of two "
		"1024..65536)\n"
		"  --incoming tcp:HOST:PORT   wait there for a VM migrated by "
		"dvmm ctl migrate\n"
		"  --migration-secret FILE   the secret both ends of a "
		"migration share (hex)\n"
		"  -v, --verbose       more log lines (repeat for debug)\n",
		VM_MAX_CPUS, CLUSTER_MAX_NODES);
}

static int usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "dvmm: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "; see dvmm run --help\n");
	va_end(ap);
	return -EXIT_USAGE;
}

static uint64_t host_memory_bytes(void)
{
	struct sysinfo si;

	if (sysinfo(&si))
		return UINT64_MAX;
	return ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
}

static int check_memory(const char *arg, uint64_t *size)
{
	uint64_t host;

	if (parse_size(arg, size))
		return usage_error("--memory '%s' is not a size like 512M or "
				   "2G",
				   arg);
	if (*size < MIN_RAM || (*size & 0xfff))
		return usage_error("--memory '%s' must be at least 16M and a "
				   "multiple of 4K",
				   arg);
	host = host_memory_bytes();
	if (*size > host) {
		fprintf(stderr,
			"dvmm: --memory %s is more than this host can give "
			"(%llu MiB of RAM and swap)\n",
			arg, (unsigned long long)(host >> 20));
		return -EXIT_FAILURE_VMM;
	}
	return 0;
}

enum {
	OPT_KERNEL = 0x100,
	OPT_CPUS,
	OPT_MEMORY,
	OPT_CMDLINE,
	OPT_INITRD,
	OPT_CONSOLE,
	OPT_API,
	OPT_KVM,
	OPT_DISK,
	OPT_NET,
	OPT_RNG,
	OPT_VCONSOLE,
	OPT_DOORBELL,
	OPT_NODES,
	OPT_NETNS,
	OPT_IRQCHIP,
	OPT_DIRTY_RING,
	OPT_INCOMING,
	OPT_MIGRATION_SECRET,
	OPT_HELP,
};

static const struct option run_long_opts[] = {
	{"kernel", required_argument, NULL, OPT_KERNEL},
	{"cpus", required_argument, NULL, OPT_CPUS},
	{"memory", required_argument, NULL, OPT_MEMORY},
	{"cmdline", required_argument, NULL, OPT_CMDLINE},
	{"initrd", required_argument, NULL, OPT_INITRD},
	{"console", required_argument, NULL, OPT_CONSOLE},
	{"api", required_argument, NULL, OPT_API},
	{"kvm", required_argument, NULL, OPT_KVM},
	{"disk", required_argument, NULL, OPT_DISK},
	{"net", required_argument, NULL, OPT_NET},
	{"rng", no_argument, NULL, OPT_RNG},
	{"vconsole", required_argument, NULL, OPT_VCONSOLE},
	{"doorbell", required_argument, NULL, OPT_DOORBELL},
	{"nodes", required_argument, NULL, OPT_NODES},
	{"netns", no_argument, NULL, OPT_NETNS},
	{"irqchip", required_argument, NULL, OPT_IRQCHIP},
	{"dirty-ring", required_argument, NULL, OPT_DIRTY_RING},
	{"incoming", required_argument, NULL, OPT_INCOMING},
	{"migration-secret", required_argument, NULL, OPT_MIGRATION_SECRET},
	{"verbose", no_argument, NULL, 'v'},
	{"help", no_argument, NULL, OPT_HELP},
	{NULL, 0, NULL, 0},
};

/* --disk PATH[,readonly] or remote=tcp:HOST:PORT[,readonly] */
static int parse_disk(char *arg, struct machine_config *mc)
{
	struct machine_disk *d;
	struct err e = {0};
	char host[256];
	uint16_t port;
	char *opt;

	if (mc->ndisks >= MACHINE_MAX_DISKS)
		return usage_error("at most %s --disk options", "8");
	d = &mc->disk[mc->ndisks];
	opt = strchr(arg, ',');
	if (opt) {
		*opt++ = '\0';
		if (strcmp(opt, "readonly") != 0)
			return usage_error("--disk option '%s' unknown; only "
					   "'readonly'",
					   opt);
		d->readonly = true;
	}
	if (!arg[0])
		return usage_error("%s", "--disk needs a PATH");
	if (!strncmp(arg, "remote=", 7)) {
		arg += 7;
		if (parse_tcp_uri(arg, host, sizeof(host), &port, &e))
			return usage_error("--disk remote=%s must be "
					   "remote=tcp:HOST:PORT",
					   arg);
		d->remote = true;
	}
	d->path = arg;
	mc->ndisks++;
	return 0;
}

static int parse_tap_name(const char *name, const char **out)
{
	if (!name[0] || strlen(name) >= 16)
		return usage_error("--net tap name '%s' must have 1 to 15 "
				   "characters",
				   name);
	*out = name;
	return 0;
}

/* A number in [min, max] for --net option @what. */
static int parse_net_num(const char *s, const char *what, long min, long max,
			 int *out)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (!*s || *end || v < min || v > max)
		return usage_error("--net %s '%s' must be %ld to %ld", what, s,
				   min, max);
	*out = (int)v;
	return 0;
}

/* pairs=K[:TAP]+K[:TAP]...: pair p served by node K on tap TAP. */
static int parse_net_pairs(char *arg, struct machine_nic *n)
{
	char *tok, *save = NULL;
	int rc = 0;

	n->npairs = 0;
	for (tok = strtok_r(arg, "+", &save); tok && !rc;
	     tok = strtok_r(NULL, "+", &save)) {
		char *colon = strchr(tok, ':');
		const char *tap = NULL;
		int node;

		if (n->npairs >= VIRTIO_NET_MAX_PAIRS)
			return usage_error("--net pairs: at most %d",
					   VIRTIO_NET_MAX_PAIRS);
		if (colon)
			*colon = '\0';
		rc = parse_net_num(tok, "pairs node", 0, CLUSTER_MAX_NODES - 1,
				   &node);
		if (!rc && colon)
			rc = parse_tap_name(colon + 1, &tap);
		if (rc)
			return rc;
		if (n->npairs == 0) {
			n->node = node;
			n->tap = tap;
		}
		n->pair[n->npairs].node = node;
		n->pair[n->npairs++].tap = tap;
	}
	if (!n->npairs)
		return usage_error("%s", "--net pairs= needs NODE[:TAP]+...");
	return 0;
}

/*
 * One --net option of a NIC; *queues, *pairs and *placed (tap or node
 * given) say what was.
 */
static int parse_net_token(char *tok, struct machine_nic *n, int *queues,
			   bool *pairs, bool *placed)
{
	if (strncmp(tok, "tap", 3) == 0 || strncmp(tok, "node=", 5) == 0)
		*placed = true;
	if (strcmp(tok, "tap") == 0) {
		n->tap = NULL;
	} else if (strncmp(tok, "tap=", 4) == 0) {
		return parse_tap_name(tok + 4, &n->tap);
	} else if (strncmp(tok, "mac=", 4) == 0) {
		if (parse_mac(tok + 4, n->mac))
			return usage_error("--net mac '%s' is not like "
					   "52:54:00:12:34:56",
					   tok + 4);
		n->has_mac = true;
	} else if (strncmp(tok, "node=", 5) == 0) {
		return parse_net_num(tok + 5, "node", 0, CLUSTER_MAX_NODES - 1,
				     &n->node);
	} else if (strncmp(tok, "queues=", 7) == 0) {
		return parse_net_num(tok + 7, "queues", 1, VIRTIO_NET_MAX_PAIRS,
				     queues);
	} else if (strncmp(tok, "pairs=", 6) == 0) {
		*pairs = true;
		return parse_net_pairs(tok + 6, n);
	} else {
		return usage_error("--net option '%s' unknown; use tap[=NAME], "
				   "mac=MAC, node=K, queues=N or "
				   "pairs=K:TAP+K:TAP...",
				   tok);
	}
	return 0;
}

/*
 * --net tap[=NAME][,mac=MAC][,node=K][,queues=N] or
 * --net pairs=K[:TAP]+K[:TAP]...[,mac=MAC]
 */
static int parse_net(char *arg, struct machine_config *mc)
{
	struct machine_nic *n;
	char *tok, *save = NULL;
	int queues = 0, node, rc = 0;
	bool pairs = false, placed = false;

	if (mc->nnics >= MACHINE_MAX_NICS)
		return usage_error("at most %d --net options",
				   MACHINE_MAX_NICS);
	n = &mc->nic[mc->nnics];
	n->node = -1;
	for (tok = strtok_r(arg, ",", &save); tok && !rc;
	     tok = strtok_r(NULL, ",", &save))
		rc = parse_net_token(tok, n, &queues, &pairs, &placed);
	if (rc)
		return rc;
	node = n->node;
	if (pairs && (queues || placed))
		return usage_error("%s", "--net pairs= names every pair's "
					 "node and tap: no tap=, node= or "
					 "queues= with it");
	for (int p = 1; p < queues; p++) {
		n->pair[p].tap = n->tap;
		n->pair[p].node = node; /* -1: wherever the NIC goes */
		n->npairs = p + 1;
	}
	mc->nnics++;
	return 0;
}

static int parse_doorbell(const char *arg, struct machine_config *mc)
{
	if (strcmp(arg, "ioeventfd") == 0)
		mc->doorbell = DOORBELL_IOEVENTFD;
	else if (strcmp(arg, "poll") == 0)
		mc->doorbell = DOORBELL_POLL;
	else
		return usage_error("--doorbell '%s' must be ioeventfd or poll",
				   arg);
	return 0;
}

static int check_console(const char *arg)
{
	if (strcmp(arg, "stdio") && strcmp(arg, "none") &&
	    (strncmp(arg, "file:", 5) || !arg[5]))
		return usage_error("--console '%s' must be stdio, file:PATH "
				   "or none",
				   arg);
	return 0;
}

static int check_vconsole(const char *arg)
{
	if (strncmp(arg, "file:", 5) != 0 || !arg[5])
		return usage_error("--vconsole '%s' must be file:PATH", arg);
	return 0;
}

/* Options that set a field; returns 0 or -exit_status. */
static int set_option(int c, char *arg, struct run_options *o)
{
	long n;

	switch (c) {
	case OPT_KERNEL:
		o->mc.kernel_path = arg;
		return 0;
	case OPT_CPUS:
		if (parse_int_range(arg, 1, VM_MAX_CPUS, &n))
			return usage_error("--cpus '%s' must be a number from "
					   "1 to 64",
					   arg);
		o->mc.ncpus = (int)n;
		return 0;
	case OPT_MEMORY:
		return check_memory(arg, &o->mc.ram_size);
	case OPT_CMDLINE:
		o->mc.cmdline = arg;
		return 0;
	case OPT_INITRD:
		o->mc.initrd_path = arg;
		return 0;
	case OPT_CONSOLE:
		o->console = arg;
		return check_console(arg);
	case OPT_API:
		o->api_path = arg;
		return 0;
	case OPT_KVM:
		o->mc.kvm_path = arg;
		return 0;
	default:
		return 1; /* not one of these */
	}
}

/* Devices and the cluster; returns 0, 1 if not one of these, -status. */
static int set_device_option(int c, char *arg, struct run_options *o)
{
	long n;

	switch (c) {
	case OPT_DISK:
		return parse_disk(arg, &o->mc);
	case OPT_NET:
		return parse_net(arg, &o->mc);
	case OPT_RNG:
		o->mc.rng = true;
		return 0;
	case OPT_VCONSOLE:
		o->vconsole = arg;
		return check_vconsole(arg);
	case OPT_DOORBELL:
		return parse_doorbell(arg, &o->mc);
	case OPT_NODES:
		if (parse_int_range(arg, 2, CLUSTER_MAX_NODES, &n))
			return usage_error("--nodes '%s' must be a number from "
					   "2 to 16",
					   arg);
		o->nodes = (int)n;
		return 0;
	case OPT_NETNS:
		o->netns = true;
		return 0;
	case OPT_INCOMING:
		if (strncmp(arg, "tcp:", 4))
			return usage_error("--incoming '%s' must be "
					   "tcp:HOST:PORT",
					   arg);
		o->incoming = arg;
		o->mc.incoming = true;
		return 0;
	case OPT_MIGRATION_SECRET:
		o->migration_secret = arg;
		return 0;
	case OPT_DIRTY_RING: {
		long n;

		if (parse_int_range(arg, 1024, 65536, &n) || (n & (n - 1)))
			return usage_error("--dirty-ring '%s' must be a power "
					   "of two from 1024 to 65536",
					   arg);
		o->mc.dirty_ring = (uint32_t)n;
		return 0;
	}
	case OPT_IRQCHIP:
		if (strcmp(arg, "kernel") && strcmp(arg, "user"))
			return usage_error("--irqchip '%s' must be kernel or "
					   "user",
					   arg);
		o->mc.user_irqchip = strcmp(arg, "user") == 0;
		o->irqchip_set = true;
		return 0;
	default:
		return 1;
	}
}

static int check_run_options(int argc, char **argv, struct run_options *o)
{
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!o->mc.kernel_path)
		return usage_error("%s", "missing --kernel FILE");
	if (o->netns && !o->nodes)
		return usage_error("%s", "--netns needs --nodes N");
	if (o->incoming && !o->migration_secret)
		return usage_error("%s", "--incoming needs --migration-secret "
					 "FILE");
	if (o->incoming && (o->nodes || o->mc.user_irqchip))
		return usage_error("%s", "--incoming works for a VM on one "
					 "node with the kernel irqchip");
	for (int i = 0; i < o->mc.ndisks; i++) {
		if (o->mc.disk[i].remote && !o->migration_secret)
			return usage_error("%s", "--disk remote=... needs "
						 "--migration-secret FILE (the "
						 "disk agent's --secret)");
		if (o->mc.disk[i].remote && o->nodes)
			return usage_error("%s", "--disk remote=... works for "
						 "a VM on one node");
	}
	for (int i = 0; i < o->mc.nnics; i++) {
		const struct machine_nic *n = &o->mc.nic[i];

		for (int p = 0; p < (n->npairs > 1 ? n->npairs : 1); p++)
			if ((p ? n->pair[p].node : n->node) >=
			    (o->nodes ? o->nodes : 1))
				return usage_error(
					"--net: node %d is not one of the %d "
					"node%s",
					p ? n->pair[p].node : n->node,
					o->nodes ? o->nodes : 1,
					o->nodes > 1 ? "s" : "");
	}
	if (o->nodes && o->irqchip_set && !o->mc.user_irqchip)
		return usage_error("%s", "a VM over several nodes needs "
					 "--irqchip user (its default)");
	return 0;
}

int run_parse_options(int argc, char **argv, struct run_options *o)
{
	int c, verbose = 0, rc;

	memset(o, 0, sizeof(*o));
	o->mc.ncpus = 1;
	o->mc.ram_size = DEFAULT_RAM;
	o->console = "stdio";
	o->mc.vconsole_out_fd = -1;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "v", run_long_opts, NULL)) != -1) {
		if (c == 'v') {
			verbose++;
			continue;
		}
		if (c == OPT_HELP)
			return 1;
		if (c == ':')
			return usage_error("option %s needs a value",
					   argv[optind - 1]);
		rc = set_option(c, optarg, o);
		if (rc == 1)
			rc = set_device_option(c, optarg, o);
		if (rc == 1)
			return usage_error("unknown option '%s'",
					   argv[optind - 1]);
		if (rc)
			return rc;
	}
	rc = check_run_options(argc, argv, o);
	if (rc)
		return rc;
	log_set_level(verbose >= 2 ? LOG_DEBUG :
		      verbose == 1 ? LOG_INFO :
				     LOG_WARN);
	return 0;
}

static int open_console(struct run_options *o)
{
	int fd;

	if (strcmp(o->console, "stdio") == 0) {
		o->mc.console_out_fd = STDOUT_FILENO;
		o->mc.console_in_fd = STDIN_FILENO;
		return 0;
	}
	o->mc.console_in_fd = -1;
	if (strcmp(o->console, "none") == 0) {
		fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	} else {
		fd = open(o->console + 5,
			  O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			fprintf(stderr, "dvmm: console file %s: %s\n",
				o->console + 5, strerror(errno));
			return -EXIT_FAILURE_VMM;
		}
	}
	if (fd < 0)
		return -EXIT_FAILURE_VMM;
	o->mc.console_out_fd = fd;
	return 0;
}

static int open_vconsole(struct run_options *o)
{
	int fd;

	if (!o->vconsole)
		return 0;
	fd = open(o->vconsole + 5, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		  0644);
	if (fd < 0) {
		fprintf(stderr, "dvmm: virtio-console file %s: %s\n",
			o->vconsole + 5, strerror(errno));
		return -EXIT_FAILURE_VMM;
	}
	o->mc.vconsole_out_fd = fd;
	return 0;
}

int run_open_outputs(struct run_options *o)
{
	int rc = check_console(o->console);

	if (!rc && o->vconsole)
		rc = check_vconsole(o->vconsole);
	if (!rc)
		rc = open_console(o);
	if (!rc)
		rc = open_vconsole(o);
	return rc;
}

/* ---- the control socket's operations ---- */

typedef int (*vm_op_fn)(struct vm *vm);

static int with_live_vm(struct runner *r, vm_op_fn fn)
{
	int rc;

	pthread_mutex_lock(&r->lock);
	rc = r->pc ? fn(&r->pc->vm) : -EAGAIN;
	pthread_mutex_unlock(&r->lock);
	return rc;
}

/* A cluster pauses (resumes) the other nodes' vCPUs too, after (before)
 * its own. */
static int op_pause(void *ctx)
{
	struct runner *r = ctx;
	int rc = with_live_vm(r, vm_pause);

	if (!rc && r->hooks && r->hooks->pause_others) {
		rc = r->hooks->pause_others(r->hooks->opaque, true);
		if (rc) /* all or nothing */
			with_live_vm(r, vm_resume);
	}
	return rc;
}

static int op_resume(void *ctx)
{
	struct runner *r = ctx;
	int rc = 0;

	if (r->hooks && r->hooks->pause_others)
		rc = r->hooks->pause_others(r->hooks->opaque, false);
	if (!rc || rc == -EALREADY)
		rc = with_live_vm(r, vm_resume);
	return rc;
}

static int stop_vm(struct vm *vm)
{
	if (vm_get_state(vm) == VM_STOPPING)
		return -EALREADY;
	vm_stop(vm, VM_STOP_USER, 0);
	return 0;
}

static int op_stop(void *ctx)
{
	struct runner *r = ctx;

	pthread_mutex_lock(&r->lock);
	r->quit = true;
	pthread_mutex_unlock(&r->lock);
	return with_live_vm(r, stop_vm);
}

/* Why this VM cannot move (yet), or NULL. Locked. */
static const char *migrate_refusal(struct runner *r)
{
	if (!r->have_secret)
		return "dvmm was started without --migration-secret";
	if (r->hooks && r->hooks->created)
		return "a VM spread over several nodes does not migrate yet";
	if (r->pc->uchip)
		return "the userspace irqchip's state does not migrate yet";
	if (r->mig_thread_up)
		return "a migration is already under way";
	return NULL;
}

#define MIGRATE_SEEN_WAIT_MS 5000

/*
 * The migration thread. Once the VM moved, wait (bounded) until the
 * client that follows migrate-status saw it, then end this process's VM.
 */
static void *migrate_thread(void *arg)
{
	struct runner *r = arg;
	struct migrate_result *res = &r->mig.result;
	struct timespec until;
	struct err e = {0};
	int rc;

	pthread_setname_np(pthread_self(), "migrate");
	rc = migrate_send(r->pc, r->mig.to, &r->secret, &r->mig_opts, &r->mig,
			  &e);
	if (rc) {
		pr_warn("migration to %s failed: %s; the VM %s here", r->mig.to,
			e.code ? e.msg : strerror(-rc),
			vm_get_state(&r->pc->vm) == VM_RUNNING ?
				"goes on" :
				"stays paused");
		return NULL;
	}
	fprintf(stderr,
		"dvmm: the VM moved to %s (%.1f ms paused, %u pre-copy "
		"rounds); ending here\n",
		r->mig.to, res->downtime_ms, res->rounds);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += MIGRATE_SEEN_WAIT_MS / 1000;
	pthread_mutex_lock(&r->lock);
	while (!r->mig_seen &&
	       pthread_cond_timedwait(&r->mig_cond, &r->lock, &until) == 0)
		;
	r->quit = true;
	r->migrated = true;
	vm_stop(&r->pc->vm, VM_STOP_USER, 0);
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

static int op_migrate(void *ctx, const struct api_migrate_req *req,
		      json_t **out, char *why, size_t whylen)
{
	struct runner *r = ctx;
	const char *no;
	struct err e = {0};
	char host[256];
	uint16_t port;
	int rc;

	if (parse_tcp_uri(req->to, host, sizeof(host), &port, &e)) {
		snprintf(why, whylen, "%s", e.msg);
		return -EINVAL;
	}
	pthread_mutex_lock(&r->lock);
	no = r->pc ? migrate_refusal(r) : "the VM is not running";
	if (no) {
		snprintf(why, whylen, "%s", no);
		pthread_mutex_unlock(&r->lock);
		return -EINVAL;
	}
	r->mig_opts = (struct migrate_opts){
		.downtime_ms = req->downtime_ms,
		.bandwidth_mbps = req->bandwidth_mbps,
		.postcopy = req->postcopy,
	};
	pthread_mutex_lock(&r->mig.lock);
	r->mig.phase = MIGRATE_SETUP;
	r->mig.error[0] = 0;
	snprintf(r->mig.to, sizeof(r->mig.to), "%s", req->to);
	pthread_mutex_unlock(&r->mig.lock);
	r->mig_seen = false;
	rc = pthread_create(&r->mig_thread, NULL, migrate_thread, r);
	r->mig_thread_up = rc == 0;
	pthread_mutex_unlock(&r->lock);
	if (rc) {
		snprintf(why, whylen, "cannot start a thread: %s",
			 strerror(rc));
		return -rc;
	}
	*out = json_pack("{s:b, s:s}", "started", 1, "to", req->to);
	return 0;
}

/* The migration thread ended (pass or fail): join it. Locked or not. */
static void migrate_reap(struct runner *r)
{
	pthread_t t;
	bool up;

	pthread_mutex_lock(&r->lock);
	up = r->mig_thread_up;
	t = r->mig_thread;
	r->mig_thread_up = false;
	pthread_mutex_unlock(&r->lock);
	if (up)
		pthread_join(t, NULL);
}

static json_t *op_migrate_status(void *ctx)
{
	struct runner *r = ctx;
	struct migrate_progress *p = &r->mig;
	const struct migrate_result *res = &p->result;
	bool done;
	json_t *o;

	pthread_mutex_lock(&r->lock);
	pthread_mutex_lock(&p->lock);
	o = json_pack("{s:s, s:s, s:i, s:I, s:f, s:f, s:f, s:i, s:f}", "status",
		      migrate_phase_names[p->phase], "to", p->to, "round",
		      (int)p->round, "pages_left", (json_int_t)p->pages_left,
		      "dirty_mbps", p->dirty_mbps, "link_mbps", p->link_mbps,
		      "expected_downtime_ms", p->expected_downtime_ms,
		      "throttle_pct", p->throttle_pct, "elapsed_ms",
		      p->started_ns ?
			      (double)(clock_mono_ns() - p->started_ns) / 1e6 :
			      0.0);
	done = p->phase == MIGRATE_COMPLETED || p->phase == MIGRATE_FAILED;
	if (o && done) {
		json_t *more = json_pack(
			"{s:f, s:f, s:i, s:b, s:I, s:I, s:I, s:I, s:I, s:i}",
			"downtime_ms", res->downtime_ms, "total_ms",
			res->total_ms, "rounds", (int)res->rounds, "precopy",
			res->precopy, "final_pages",
			(json_int_t)res->final_pages, "pages_sent",
			(json_int_t)res->pages_sent, "zero_pages",
			(json_int_t)res->zero_pages, "bytes",
			(json_int_t)res->bytes, "device_bytes",
			(json_int_t)res->device_bytes, "max_throttle_pct",
			res->throttle_pct);

		json_object_update(o, more);
		json_decref(more);
		if (res->postcopy) {
			json_object_set_new(o, "postcopy", json_true());
			json_object_set_new(o, "postcopy_ms",
					    json_real(res->postcopy_ms));
			json_object_set_new(
				o, "owed_pages",
				json_integer((json_int_t)res->owed_pages));
			json_object_set_new(
				o, "requested_pages",
				json_integer((json_int_t)res->requested));
		}
		if (p->phase == MIGRATE_FAILED)
			json_object_set_new(o, "error", json_string(p->error));
	}
	pthread_mutex_unlock(&p->lock);
	if (done) {
		r->mig_seen = true;
		pthread_cond_broadcast(&r->mig_cond);
	}
	pthread_mutex_unlock(&r->lock);
	if (done && p->phase == MIGRATE_FAILED)
		migrate_reap(r);
	return o;
}

/*
 * device-switch DEVICE PATH: DEVICE is a disk's index (0: the first
 * --disk) or its name in stats' "virtio". Holds r->lock while it copies,
 * so the machine stays (the VM's vCPUs and devices go on).
 */
static int op_device_switch(void *ctx, const char *device, const char *path,
			    json_t **out, char *why, size_t whylen)
{
	struct runner *r = ctx;
	struct virtio_blk_switch_stats st;
	struct virtio_blk *b = NULL;
	char name[64] = "";
	struct err e = {0};
	bool by_index;
	long idx = -1;
	char *end;
	int rc, n = 0;

	idx = strtol(device, &end, 10);
	by_index = device[0] && !*end && idx >= 0;
	pthread_mutex_lock(&r->lock);
	if (!r->pc || r->mig_thread_up || (r->hooks && r->hooks->created)) {
		snprintf(why, whylen, "%s",
			 !r->pc		  ? "the VM is not running" :
			 r->mig_thread_up ? "a migration is under way" :
					    "not on a VM spread over nodes");
		pthread_mutex_unlock(&r->lock);
		return -EINVAL;
	}
	for (int i = 0; i < r->pc->nvirtio && !b; i++) {
		struct machine_virtio *mv = &r->pc->virtio[i];

		if (mv->kind != VIRTIO_KIND_BLK)
			continue;
		if (by_index ?
			    n == idx :
			    !strcmp(virtio_blk_device(mv->dev)->name, device)) {
			b = mv->dev;
			snprintf(name, sizeof(name), "%s",
				 virtio_blk_device(b)->name);
		}
		n++;
	}
	if (!b) {
		snprintf(why, whylen,
			 "no disk '%s' (give its index, 0 for the first, or "
			 "its name in stats)",
			 device);
		pthread_mutex_unlock(&r->lock);
		return -ENODEV;
	}
	rc = virtio_blk_switch(b, path, &st, &e);
	pthread_mutex_unlock(&r->lock);
	if (rc) {
		snprintf(why, whylen, "%s", e.msg);
		return rc;
	}
	pr_info("%s now serves from %s (%u copy passes, %.1f ms paused)", name,
		path, st.passes, st.paused_us / 1000.0);
	*out = json_pack("{s:s, s:s, s:i, s:I, s:f}", "device", name, "path",
			 path, "passes", (int)st.passes, "final_regions",
			 (json_int_t)st.final_regions, "paused_ms",
			 st.paused_us / 1000.0);
	return 0;
}

/* A cluster's "nodes" array; asked outside r->lock (it may wait on peers). */
static json_t *add_nodes(struct runner *r, json_t *o, bool with_stats)
{
	if (o && r->hooks && r->hooks->nodes) {
		json_t *nodes = r->hooks->nodes(r->hooks->opaque, with_stats);

		if (nodes)
			json_object_set_new(o, "nodes", nodes);
	}
	return o;
}

static json_t *op_status(void *ctx)
{
	struct runner *r = ctx;
	const struct machine_config *mc = &r->opt->mc;
	json_t *o;

	pthread_mutex_lock(&r->lock);
	o = json_pack(
		"{s:s, s:i, s:I, s:I, s:s, s:f, s:i, s:i}", "state",
		r->pc ? vm_state_names[vm_get_state(&r->pc->vm)] : "rebooting",
		"vcpus", mc->ncpus, "memory_bytes", (json_int_t)mc->ram_size,
		"memory_mib", (json_int_t)(mc->ram_size >> 20), "kernel",
		mc->kernel_path, "uptime_s",
		r->pc ? vm_uptime(&r->pc->vm) : 0.0, "reboots", (int)r->reboots,
		"pid", (int)getpid());
	pthread_mutex_unlock(&r->lock);
	return add_nodes(r, o, false);
}

static json_t *vcpu_stats(struct vm *vm, int cpu, uint64_t *totals)
{
	json_t *exits = json_object();
	uint64_t sum = 0;

	for (int k = 0; k < VCPU_EXIT_KINDS; k++) {
		uint64_t n = vm_exit_count(vm, cpu, k);

		json_object_set_new(exits, vcpu_exit_kind_names[k],
				    json_integer((json_int_t)n));
		totals[k] += n;
		sum += n;
	}
	return json_pack("{s:i, s:o, s:I}", "id", cpu, "exits", exits,
			 "exits_total", (json_int_t)sum);
}

static json_t *virtio_stats(struct machine *pc)
{
	json_t *devs = json_array();

	for (int i = 0; i < pc->nvirtio; i++) {
		struct virtio_pci *vp = &pc->virtio[i].vp;

		json_array_append_new(
			devs,
			json_pack("{s:s, s:i, s:I, s:I, s:b}", "name",
				  vp->vd->name, "pci_slot", vp->pci.slot,
				  "kicks",
				  (json_int_t)__atomic_load_n(&vp->kicks,
							      __ATOMIC_RELAXED),
				  "interrupts",
				  (json_int_t)__atomic_load_n(&vp->interrupts,
							      __ATOMIC_RELAXED),
				  "needs_reset", virtio_needs_reset(vp->vd)));
	}
	return devs;
}

static json_t *vm_stats(struct machine *pc)
{
	uint64_t totals[VCPU_EXIT_KINDS] = {0};
	json_t *cpus = json_array(), *sum = json_object();

	for (int i = 0; i < pc->vm.ncpus; i++)
		json_array_append_new(cpus, vcpu_stats(&pc->vm, i, totals));
	for (int k = 0; k < VCPU_EXIT_KINDS; k++)
		json_object_set_new(sum, vcpu_exit_kind_names[k],
				    json_integer((json_int_t)totals[k]));
	json_t *o = json_pack("{s:s, s:f, s:o, s:o, s:I, s:o}", "state",
			      vm_state_names[vm_get_state(&pc->vm)], "uptime_s",
			      vm_uptime(&pc->vm), "exits", sum, "vcpus", cpus,
			      "console_tx_bytes", (json_int_t)pc->uart.tx_bytes,
			      "virtio", virtio_stats(pc));

	if (o && pc->uchip) /* the userspace irqchip's counters */
		json_object_set_new(o, "irqchip",
				    userchip_stats_json(pc->uchip));
	return o;
}

static json_t *op_stats(void *ctx)
{
	struct runner *r = ctx;
	json_t *o;

	pthread_mutex_lock(&r->lock);
	o = r->pc ? vm_stats(r->pc) : json_pack("{s:s}", "state", "rebooting");
	pthread_mutex_unlock(&r->lock);
	return add_nodes(r, o, true);
}

/* ---- signals: SIGINT/SIGTERM/SIGHUP end the VM cleanly ---- */

static void block_stop_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, set, NULL);
}

static void *signal_thread(void *arg)
{
	struct stop_signals *s = arg;
	sigset_t set;
	int sig;

	block_stop_signals(&set);
	while (sigwait(&set, &sig) == 0) {
		bool ending;

		pthread_mutex_lock(&s->lock);
		ending = s->ending && sig == SIGHUP;
		pthread_mutex_unlock(&s->lock);
		if (ending) /* our own wake-up at exit */
			break;
		s->fn(s->opaque, sig);
	}
	return NULL;
}

int stop_signals_start(struct stop_signals *s,
		       void (*fn)(void *opaque, int sig), void *opaque)
{
	sigset_t set;

	s->fn = fn;
	s->opaque = opaque;
	s->ending = false;
	pthread_mutex_init(&s->lock, NULL);
	block_stop_signals(&set);
	if (pthread_create(&s->thread, NULL, signal_thread, s)) {
		pthread_mutex_destroy(&s->lock);
		return -EAGAIN;
	}
	return 0;
}

void stop_signals_end(struct stop_signals *s)
{
	pthread_mutex_lock(&s->lock);
	s->ending = true;
	pthread_mutex_unlock(&s->lock);
	pthread_kill(s->thread, SIGHUP);
	pthread_join(s->thread, NULL);
	pthread_mutex_destroy(&s->lock);
}

/* ---- the boot loop ---- */

static int exit_status(enum vm_stop_reason reason, int code)
{
	switch (reason) {
	case VM_STOP_GUEST_EXIT:
	case VM_STOP_USER:
	case VM_STOP_ERROR:
		return code;
	case VM_STOP_POWEROFF:
		return 0;
	default:
		return EXIT_FAILURE_VMM;
	}
}

/* Boot once; returns the stop reason, or -1 with *status set on failure. */
static int boot_once(struct runner *r, struct machine *pc,
		     struct machine_persist *keep, int *status)
{
	enum vm_stop_reason reason;
	struct err e = {0};
	int code;

	const struct run_hooks *h = r->hooks;
	bool created = false;
	struct migrate_link *mig = NULL;

	if (!machine_create(pc, &r->opt->mc, keep, &e)) {
		created = true;
		if (h && h->created && h->created(h->opaque, pc, &e) && !e.code)
			err_set(&e, -EIO, "cannot join the other nodes");
	}
	if (!e.code && r->opt->mc.incoming) {
		migrate_receive(pc, r->opt->incoming, &r->secret, 0, &r->quit,
				&mig, &e);
		r->opt->mc.incoming = false; /* a reboot boots normally */
	}
	if (e.code || machine_start(pc, &e)) {
		migrate_confirm(pc, mig, false);
		fprintf(stderr, "dvmm: %s\n", e.msg);
		if (created && h && h->destroying)
			h->destroying(h->opaque, pc);
		machine_destroy(pc, NULL);
		*status = EXIT_FAILURE_VMM;
		return -1;
	}
	if (mig) {
		migrate_confirm(pc, mig, true);
		pr_info("the migrated VM runs here");
	}
	pthread_mutex_lock(&r->lock);
	r->pc = pc;
	if (r->quit)
		vm_stop(&pc->vm, VM_STOP_USER, r->quit_code);
	pthread_mutex_unlock(&r->lock);
	reason = vm_wait(&pc->vm, &code);
	migrate_reap(r); /* it may still use the machine */
	pthread_mutex_lock(&r->lock);
	r->pc = NULL;
	pthread_mutex_unlock(&r->lock);
	if (h && h->destroying)
		h->destroying(h->opaque, pc);
	machine_destroy(pc, keep);
	*status = exit_status(reason, code);
	if (reason == VM_STOP_RESET && h && h->created) {
		pr_warn("guest reset: a VM spread over nodes does not reboot; "
			"ending it");
		*status = 0;
		return VM_STOP_POWEROFF;
	}
	return (int)reason;
}

static int boot_loop(struct runner *r)
{
	struct machine_persist keep = {0};
	struct machine *pc = calloc(1, sizeof(*pc));
	int status = EXIT_FAILURE_VMM;

	if (!pc) {
		fprintf(stderr, "dvmm: out of memory\n");
		return EXIT_FAILURE_VMM;
	}
	for (;;) {
		int reason = boot_once(r, pc, &keep, &status);
		bool quit;

		pthread_mutex_lock(&r->lock);
		quit = r->quit;
		pthread_mutex_unlock(&r->lock);
		if (reason != VM_STOP_RESET || quit)
			break;
		r->reboots++;
		pr_info("guest reset; rebooting (reboot %u)", r->reboots);
	}
	free(pc);
	return status;
}

struct runner *runner_create(struct run_options *o,
			     const struct run_hooks *hooks)
{
	struct runner *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->mig.lock, NULL);
	pthread_cond_init(&r->mig_cond, NULL);
	r->opt = o;
	r->hooks = hooks;
	return r;
}

void runner_destroy(struct runner *r)
{
	if (!r)
		return;
	migrate_reap(r);
	pthread_cond_destroy(&r->mig_cond);
	pthread_mutex_destroy(&r->mig.lock);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

void runner_stop(struct runner *r, enum vm_stop_reason reason, int code)
{
	pthread_mutex_lock(&r->lock);
	r->quit = true;
	r->quit_code = code;
	if (r->pc)
		vm_stop(&r->pc->vm, reason, code);
	pthread_mutex_unlock(&r->lock);
}

int runner_run(struct runner *r)
{
	struct api_ops ops = {.pause = op_pause,
			      .resume = op_resume,
			      .stop = op_stop,
			      .status = op_status,
			      .stats = op_stats,
			      .migrate = op_migrate,
			      .migrate_status = op_migrate_status,
			      .device_switch = op_device_switch,
			      .ctx = r};
	struct api_server api = {.listen_fd = -1};
	char errbuf[256];
	struct err e = {0};
	int status;

	if (r->opt->migration_secret) {
		if (migrate_load_secret(r->opt->migration_secret, &r->secret,
					&e)) {
			fprintf(stderr, "dvmm: %s\n", e.msg);
			return EXIT_FAILURE_VMM;
		}
		r->have_secret = true;
		r->opt->mc.disk_key = r->secret.key;
		r->opt->mc.disk_key_len = r->secret.len;
	}
	if (r->opt->api_path && api_server_start(&api, r->opt->api_path, &ops,
						 errbuf, sizeof(errbuf))) {
		fprintf(stderr, "dvmm: %s\n", errbuf);
		return EXIT_FAILURE_VMM;
	}
	status = boot_loop(r);
	if (r->opt->api_path)
		api_server_stop(&api);
	return status;
}

static void stop_on_signal(void *opaque, int sig)
{
	runner_stop(opaque, VM_STOP_USER, 128 + sig);
	pr_warn("caught signal %d; stopping the VM", sig);
}

int run_main(int argc, char **argv)
{
	struct stop_signals sigs;
	struct run_options opt;
	struct runner *r;
	int rc, status;

	rc = run_parse_options(argc, argv, &opt);
	if (rc == 1) {
		run_usage(stdout);
		return 0;
	}
	if (rc < 0)
		return -rc;
	if (opt.nodes)
		return node_launch(&opt);
	rc = run_open_outputs(&opt);
	if (rc < 0)
		return -rc;
	r = runner_create(&opt, NULL);
	if (!r) {
		fprintf(stderr, "dvmm: out of memory\n");
		return EXIT_FAILURE_VMM;
	}
	if (stop_signals_start(&sigs, stop_on_signal, r)) {
		fprintf(stderr, "dvmm: cannot start the signal thread\n");
		runner_destroy(r);
		return EXIT_FAILURE_VMM;
	}
	status = runner_run(r);
	stop_signals_end(&sigs);
	runner_destroy(r);
	return status;
}
