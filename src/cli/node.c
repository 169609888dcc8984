/*
 * cli/node.c - `dvmm node`: load the cluster file, bring this node's
 * transport up, and on node 0 boot the VM through the same runner as
 * `dvmm run` (console, control socket with every node in status/stats).
 *
 * And the one-machine form, `dvmm run --nodes N [--netns] ...`: write a
 * cluster file (random cluster id and secret, mode 0600, in a private temp
 * directory), start N `dvmm node` processes, forward SIGINT/SIGTERM/SIGHUP
 * to node 0, wait, and exit with node 0's status. With --netns each node
 * runs in its own network namespace (dvmm-PID-K, address 10.77.0.K+1), the
 * namespaces joined by veth pairs on a bridge in one more namespace
 * (dvmm-PID-br); all of it is removed at the end, pass or fail.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/node.h"
#include "cli/run.h"
#include "cluster/config.h"
#include "cluster/node.h"
#include "cluster/vmlink.h"
#include "cluster/vtime.h"
#include "util/log.h"
#include "util/parse.h"

#define NETNS_PORT 7000
/* Once node 0 has ended, the others close at once: a little grace. */
#define PEERS_LINGER_S 2
/* Node 0 alone ends soon too, unless still connecting (10 s at most). */
#define NODE0_LINGER_S 15
#define KILL_AFTER_S 1

/* ---- dvmm node ---- */

struct node_cli {
	const char *cluster;
	int id;
	const char *console;
	const char *api;
	const char *kvm;
};

void node_usage(FILE *f)
{
	fprintf(f,
		"usage: dvmm node --cluster FILE --id K [options]\n"
		"  --cluster FILE      the cluster file (JSON, see README)\n"
		"  --id K              which of the file's nodes this is\n"
		"  --console stdio|file:PATH|none   node 0's serial console "
		"(default stdio)\n"
		"  --api PATH          node 0's control socket (see dvmm ctl)\n"
		"  --kvm PATH          KVM device (default /dev/kvm)\n"
		"  -v, --verbose       more log lines (repeat for debug)\n");
}

static int node_usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "dvmm: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "; see dvmm node --help\n");
	return -EXIT_USAGE;
}

enum { OPT_CLUSTER = 0x100, OPT_ID, OPT_CONSOLE, OPT_API, OPT_KVM, OPT_HELP };

static const struct option node_long_opts[] = {
	{"cluster", required_argument, NULL, OPT_CLUSTER},
	{"id", required_argument, NULL, OPT_ID},
	{"console", required_argument, NULL, OPT_CONSOLE},
	{"api", required_argument, NULL, OPT_API},
	{"kvm", required_argument, NULL, OPT_KVM},
	{"verbose", no_argument, NULL, 'v'},
	{"help", no_argument, NULL, OPT_HELP},
	{NULL, 0, NULL, 0},
};

static int set_node_option(int c, char *arg, struct node_cli *o)
{
	long n;

	switch (c) {
	case OPT_CLUSTER:
		o->cluster = arg;
		return 0;
	case OPT_ID:
		if (parse_int_range(arg, 0, CLUSTER_MAX_NODES - 1, &n))
			return node_usage_error("--id '%s' must be a node "
						"number from 0 to 15",
						arg);
		o->id = (int)n;
		return 0;
	case OPT_CONSOLE:
		o->console = arg;
		return 0;
	case OPT_API:
		o->api = arg;
		return 0;
	case OPT_KVM:
		o->kvm = arg;
		return 0;
	case ':':
		return node_usage_error("option %s needs a value", arg);
	default:
		return node_usage_error("unknown option '%s'", arg);
	}
}

/* Returns 0, 1 for --help, or -exit_status. */
static int parse_node_options(int argc, char **argv, struct node_cli *o)
{
	int c, verbose = 0, rc;

	memset(o, 0, sizeof(*o));
	o->id = -1;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":v", node_long_opts, NULL)) !=
	       -1) {
		if (c == 'v') {
			verbose++;
			continue;
		}
		if (c == OPT_HELP)
			return 1;
		rc = set_node_option(
			c, c == ':' || c == '?' ? argv[optind - 1] : optarg, o);
		if (rc)
			return rc;
	}
	if (optind < argc)
		return node_usage_error("unexpected argument '%s'",
					argv[optind]);
	if (!o->cluster)
		return node_usage_error("%s", "missing --cluster FILE");
	if (o->id < 0)
		return node_usage_error("%s", "missing --id K");
	if (o->id != 0 && (o->console || o->api))
		return node_usage_error("%s", "--console and --api belong to "
					      "node 0, which runs the VM");
	log_set_level(verbose >= 2 ? LOG_DEBUG :
		      verbose == 1 ? LOG_INFO :
				     LOG_WARN);
	return 0;
}

/* Node 0's view of the VM: the `dvmm run` runner. */
struct node0 {
	struct run_options ro;
	char *vconsole; /* "file:PATH" */
	struct runner *r;
	struct run_hooks hooks;
	struct node_vm vm;
};

static int node0_vm_run(void *opaque)
{
	return runner_run(opaque);
}

static void node0_vm_stop(void *opaque, enum vm_stop_reason reason, int code)
{
	runner_stop(opaque, reason, code);
}

static json_t *node0_nodes(void *opaque, bool with_stats)
{
	return cluster_node_nodes_json(opaque, with_stats);
}

#define PEERS_READY_MS 30000

/* The machine is built: link it to the other nodes' parts. */
static int node_machine_created(void *opaque, struct machine *pc, struct err *e)
{
	struct vmlink *l = cluster_node_vmlink(opaque);

	if (vmlink_attach(l, pc, e))
		return e->code;
	if (vtime_publish_base(cluster_node_vtime(opaque), &pc->vm, e))
		return e->code;
	return vmlink_wait_ready(l, PEERS_READY_MS, e);
}

static int node_pause_others(void *opaque, bool pause)
{
	return cluster_node_pause_peers(opaque, pause);
}

static void node_machine_destroying(void *opaque, struct machine *pc)
{
	(void)pc;
	vmlink_detach(cluster_node_vmlink(opaque));
}

/* ---- the other nodes' part of the VM: their vCPUs and devices ---- */

struct peer_vm {
	struct cluster_node *n;
	struct machine_cluster *mcl; /* mc.cluster, to fill in the time */
	struct machine_config mc;
	struct machine *pc;
	pthread_mutex_t lock;
	bool stop, up;
	struct node_vm vm;
};

static int peer_vm_run(void *opaque)
{
	struct peer_vm *p = opaque;
	struct vmlink *l = cluster_node_vmlink(p->n);
	struct vtime *vt = cluster_node_vtime(p->n);
	struct vm_config when = {0};
	struct err e = {0};
	int code = 0;

	if (vtime_join(vt, &when, &e)) {
		fprintf(stderr, "dvmm: %s\n", e.msg);
		return EXIT_FAILURE_VMM;
	}
	p->mcl->set_tsc_offset = when.set_tsc_offset;
	p->mcl->tsc_offset = when.tsc_offset;
	if (machine_create(p->pc, &p->mc, NULL, &e) ||
	    vtime_attach(vt, &p->pc->vm, &e) || vmlink_attach(l, p->pc, &e)) {
		fprintf(stderr, "dvmm: %s\n", e.msg);
		vmlink_detach(l);
		vtime_detach(vt);
		machine_destroy(p->pc, NULL);
		return EXIT_FAILURE_VMM;
	}
	vmlink_send_ready(l);
	if (machine_start(p->pc, &e)) {
		fprintf(stderr, "dvmm: %s\n", e.msg);
		code = EXIT_FAILURE_VMM;
	} else {
		pthread_mutex_lock(&p->lock);
		p->up = true;
		if (p->stop)
			vm_stop(&p->pc->vm, VM_STOP_POWEROFF, 0);
		pthread_mutex_unlock(&p->lock);
		if (vm_wait(&p->pc->vm, &code) == VM_STOP_POWEROFF)
			code = 0;
	}
	pthread_mutex_lock(&p->lock);
	p->up = false;
	pthread_mutex_unlock(&p->lock);
	vtime_detach(vt);
	vmlink_detach(l);
	machine_destroy(p->pc, NULL);
	return code;
}

static int peer_vm_pause(void *opaque, bool pause)
{
	struct peer_vm *p = opaque;
	int rc = -EAGAIN;

	pthread_mutex_lock(&p->lock);
	if (p->up)
		rc = pause ? vm_pause(&p->pc->vm) : vm_resume(&p->pc->vm);
	pthread_mutex_unlock(&p->lock);
	return rc;
}

static void peer_vm_stop(void *opaque, enum vm_stop_reason reason, int code)
{
	struct peer_vm *p = opaque;

	pthread_mutex_lock(&p->lock);
	p->stop = true;
	if (p->up)
		vm_stop(&p->pc->vm, reason, code);
	pthread_mutex_unlock(&p->lock);
}

/* A peer's machine: the cluster's, minus what lives on node 0. */
static int peer_prepare(struct peer_vm *p, const struct cluster_config *c,
			const struct node_cli *o)
{
	const char *vcon = cluster_config_vconsole(c);
	int homes[MACHINE_MAX_VIRTIO];
	int n = cluster_config_virtio_homes(c, homes);

	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	cluster_config_machine(c, &p->mc);
	p->mc.kvm_path = o->kvm;
	/* the vconsole is the last device in machine order */
	if (vcon && n > 0 && homes[n - 1] == o->id) {
		p->mc.vconsole_out_fd = open(
			vcon, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (p->mc.vconsole_out_fd < 0) {
			fprintf(stderr, "dvmm: virtio-console file %s: %s\n",
				vcon, strerror(errno));
			return -EXIT_FAILURE_VMM;
		}
	}
	p->pc = calloc(1, sizeof(*p->pc));
	if (!p->pc)
		return -EXIT_FAILURE_VMM;
	p->vm = (struct node_vm){.run = peer_vm_run,
				 .stop = peer_vm_stop,
				 .pause = peer_vm_pause,
				 .opaque = p};
	return 0;
}

static void peer_free(struct peer_vm *p)
{
	if (p->mc.vconsole_out_fd >= 0)
		close(p->mc.vconsole_out_fd);
	free(p->pc);
	pthread_mutex_destroy(&p->lock);
}

/* Everything node 0 needs before it connects; 0 or -exit_status. */
static int node0_prepare(struct node0 *z, const struct cluster_config *c,
			 const struct node_cli *o)
{
	const char *vcon = cluster_config_vconsole(c);
	int rc;

	memset(z, 0, sizeof(*z));
	cluster_config_machine(c, &z->ro.mc);
	z->ro.mc.kvm_path = o->kvm;
	z->ro.console = o->console ? o->console : "stdio";
	z->ro.api_path = o->api;
	if (vcon && asprintf(&z->vconsole, "file:%s", vcon) < 0) {
		z->vconsole = NULL;
		return -EXIT_FAILURE_VMM;
	}
	z->ro.vconsole = z->vconsole;
	rc = run_open_outputs(&z->ro);
	if (rc)
		return rc;
	z->r = runner_create(&z->ro, &z->hooks);
	if (!z->r)
		return -EXIT_FAILURE_VMM;
	z->vm = (struct node_vm){
		.run = node0_vm_run, .stop = node0_vm_stop, .opaque = z->r};
	return 0;
}

static void node0_free(struct node0 *z)
{
	runner_destroy(z->r);
	free(z->vconsole);
}

static void node_on_signal(void *opaque, int sig)
{
	if (!cluster_node_signal(opaque, sig)) {
		/* still connecting: nothing runs yet that needs stopping */
		fprintf(stderr,
			"dvmm: caught signal %d while connecting; "
			"exiting\n",
			sig);
		_exit(128 + sig);
	}
	pr_warn("caught signal %d; stopping the VM", sig);
}

/* Connect and run; the node and its signal watcher are up. */
static int node_connect_and_run(struct cluster_node *n, int id, struct node0 *z,
				struct peer_vm *p)
{
	struct err e = {0};

	if (cluster_node_connect(n, &e)) {
		fprintf(stderr, "dvmm: node %d: %s\n", id, e.msg);
		return EXIT_FAILURE_VMM;
	}
	pr_info("node %d: every node is connected", id);
	return cluster_node_run(n, id == 0 ? &z->vm : &p->vm);
}

static int node_run(const struct cluster_config *c, const struct node_cli *o)
{
	struct stop_signals sigs;
	struct cluster_node *n;
	struct err e = {0};
	struct node0 z = {0};
	struct peer_vm p = {.mc.vconsole_out_fd = -1};
	struct machine_cluster mcl;
	int rc;

	if (o->id >= c->nnodes) {
		fprintf(stderr, "dvmm: --id %d: %s has nodes 0 to %d\n", o->id,
			o->cluster, c->nnodes - 1);
		return EXIT_USAGE;
	}
	rc = o->id == 0 ? node0_prepare(&z, c, o) : peer_prepare(&p, c, o);
	if (rc < 0) {
		node0_free(&z);
		peer_free(&p);
		return -rc;
	}
	if (cluster_node_create(&n, c, o->id, &e)) {
		fprintf(stderr, "dvmm: node %d: %s\n", o->id, e.msg);
		node0_free(&z);
		peer_free(&p);
		return EXIT_FAILURE_VMM;
	}
	vmlink_machine_cluster(cluster_node_vmlink(n), &mcl);
	z.hooks = (struct run_hooks){.nodes = node0_nodes,
				     .created = node_machine_created,
				     .destroying = node_machine_destroying,
				     .pause_others = node_pause_others,
				     .opaque = n};
	z.ro.mc.ram = cluster_node_ram(n); /* guest RAM through the DSM */
	z.ro.mc.cluster = &mcl;
	p.n = n;
	p.mcl = &mcl;
	p.mc.ram = cluster_node_ram(n);
	p.mc.cluster = &mcl;
	if (stop_signals_start(&sigs, node_on_signal, n)) {
		fprintf(stderr, "dvmm: cannot start the signal thread\n");
		rc = EXIT_FAILURE_VMM;
	} else {
		rc = node_connect_and_run(n, o->id, &z, &p);
		stop_signals_end(&sigs);
	}
	cluster_node_destroy(n);
	node0_free(&z);
	if (o->id != 0)
		peer_free(&p);
	return rc;
}

int node_main(int argc, char **argv)
{
	struct cluster_config c;
	struct err e = {0};
	struct node_cli o;
	int rc;

	rc = parse_node_options(argc, argv, &o);
	if (rc == 1) {
		node_usage(stdout);
		return 0;
	}
	if (rc < 0)
		return -rc;
	if (cluster_config_load(&c, o.cluster, &e)) {
		fprintf(stderr, "dvmm: %s\n", e.msg);
		return EXIT_FAILURE_VMM;
	}
	rc = node_run(&c, &o);
	cluster_config_free(&c);
	return rc;
}

/* ---- dvmm run --nodes N: the launcher ---- */

struct launch {
	const struct run_options *o;
	sigset_t old_mask;
	char dir[64];			    /* private temp directory */
	char file[96];			    /* the cluster file in it */
	char ns[CLUSTER_MAX_NODES + 1][32]; /* namespaces made */
	int nns;
	pid_t pid[CLUSTER_MAX_NODES]; /* 0 when not running */
	int wstatus[CLUSTER_MAX_NODES];
};

/* 127.0.0.1 ports that are free now (all held open until all are found). */
static int pick_ports(int n, uint16_t *ports, struct err *e)
{
	int fd[CLUSTER_MAX_NODES], i, rc = 0;

	for (i = 0; i < n && !rc; i++) {
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_addr.s_addr =
						htonl(INADDR_LOOPBACK)};
		socklen_t len = sizeof(a);

		fd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd[i] < 0 || bind(fd[i], (struct sockaddr *)&a, len) ||
		    getsockname(fd[i], (struct sockaddr *)&a, &len))
			rc = err_set(e, -errno, "cannot find a free port: %s",
				     strerror(errno));
		ports[i] = ntohs(a.sin_port);
	}
	while (i-- > 0)
		if (fd[i] >= 0)
			close(fd[i]);
	return rc;
}

static int set_addresses(const struct launch *l, struct cluster_config *c,
			 struct err *e)
{
	uint16_t ports[CLUSTER_MAX_NODES];

	if (!l->o->netns && pick_ports(c->nnodes, ports, e))
		return e->code;
	for (int k = 0; k < c->nnodes; k++) {
		if (l->o->netns) {
			snprintf(c->node[k].host, sizeof(c->node[k].host),
				 "10.77.0.%d", k + 1);
			c->node[k].port = NETNS_PORT;
		} else {
			strcpy(c->node[k].host, "127.0.0.1");
			c->node[k].port = ports[k];
		}
	}
	return 0;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void add_devices(const struct run_options *o, struct cluster_config *c)
{
	const struct machine_config *mc = &o->mc;
	struct cluster_device *d;

	for (int i = 0; i < mc->ndisks; i++) {
		d = &c->dev[c->ndevices++];
		d->type = CLUSTER_DEV_DISK;
		d->path = strdup(mc->disk[i].path);
		d->readonly = mc->disk[i].readonly;
	}
	for (int i = 0; i < mc->nnics; i++) {
		d = &c->dev[c->ndevices++];
		d->type = CLUSTER_DEV_NET;
		d->tap = dup_or_null(mc->nic[i].tap);
		d->has_mac = mc->nic[i].has_mac;
		memcpy(d->mac, mc->nic[i].mac, 6);
		d->node = mc->nic[i].node;
		d->npairs = mc->nic[i].npairs;
		for (int p = 1; p < d->npairs; p++) {
			d->pair[p].node = mc->nic[i].pair[p].node;
			d->pair[p].tap = dup_or_null(mc->nic[i].pair[p].tap);
		}
	}
	if (mc->rng)
		c->dev[c->ndevices++].type = CLUSTER_DEV_RNG;
	if (o->vconsole) {
		d = &c->dev[c->ndevices++];
		d->type = CLUSTER_DEV_VCONSOLE;
		d->path = strdup(o->vconsole + 5); /* after "file:" */
	}
}

/* vCPU i on node i mod N: the boot vCPU on node 0, the rest dealt out. */
static void spread_vcpus(struct cluster_config *c)
{
	for (int i = 0; i < c->ncpus; i++)
		c->vcpu_node[i] = i % c->nnodes;
}

/* A NIC without node=K on the last node, its pairs with it. */
static void place_nic(struct cluster_device *d, int nnodes)
{
	if (d->node < 0)
		d->node = nnodes - 1;
	for (int p = 1; p < d->npairs; p++)
		if (d->pair[p].node < 0)
			d->pair[p].node = d->node;
}

/*
 * Devices away from the boot vCPU that drives them at first: disks from
 * node 1 on, the rng, the vconsole and the NICs on the last node unless
 * --net says where (a NIC's tap is opened in its node's network
 * namespace; so is each pair's).
 */
static void spread_devices(struct cluster_config *c)
{
	int disk = 0;

	for (int i = 0; i < c->ndevices; i++) {
		struct cluster_device *d = &c->dev[i];

		if (d->type == CLUSTER_DEV_DISK)
			d->node = 1 + disk++ % (c->nnodes - 1);
		else if (d->type == CLUSTER_DEV_RNG ||
			 d->type == CLUSTER_DEV_VCONSOLE)
			d->node = c->nnodes - 1;
		else if (d->type == CLUSTER_DEV_NET)
			place_nic(d, c->nnodes);
	}
}

/* The description of this run: vCPUs and devices spread over the nodes. */
static int build_config(const struct launch *l, struct cluster_config *c,
			struct err *e)
{
	const struct machine_config *mc = &l->o->mc;

	memset(c, 0, sizeof(*c));
	c->secret_len = 32;
	if (getrandom(c->cluster_id, CLUSTER_ID_LEN, 0) != CLUSTER_ID_LEN ||
	    getrandom(c->secret, c->secret_len, 0) != (ssize_t)c->secret_len)
		return err_set(e, -EIO, "getrandom: %s", strerror(errno));
	c->nnodes = l->o->nodes;
	c->memory = mc->ram_size;
	c->ncpus = mc->ncpus;
	spread_vcpus(c);
	c->doorbell = mc->doorbell;
	c->kernel = strdup(mc->kernel_path);
	c->cmdline = dup_or_null(mc->cmdline);
	c->initrd = dup_or_null(mc->initrd_path);
	add_devices(l->o, c);
	spread_devices(c);
	return set_addresses(l, c, e);
}

static int write_cluster_file(struct launch *l, struct err *e)
{
	const char *tmp = getenv("TMPDIR");
	struct cluster_config c;
	int rc;

	snprintf(l->dir, sizeof(l->dir), "%s/dvmm-cluster.XXXXXX",
		 tmp && tmp[0] && strlen(tmp) < 40 ? tmp : "/tmp");
	if (!mkdtemp(l->dir)) {
		rc = err_set(e, -errno, "cannot make a directory %s: %s",
			     l->dir, strerror(errno));
		l->dir[0] = '\0';
		return rc;
	}
	snprintf(l->file, sizeof(l->file), "%s/cluster.json", l->dir);
	rc = build_config(l, &c, e);
	if (!rc)
		rc = cluster_config_save(&c, l->file, e);
	cluster_config_free(&c);
	return rc;
}

/* ---- network namespaces (--netns), made with ip(8) ---- */

static void join_argv(const char *const argv[], char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; argv[i] && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s",
					 i ? " " : "", argv[i]);
}

/* The first line ip(8) wrote to stderr. */
static void first_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");

	buf[0] = '\0';
	if (f && fgets(buf, (int)len, f))
		buf[strcspn(buf, "\n")] = '\0';
	if (f)
		fclose(f);
}

static void child_stdio(const char *errpath)
{
	int null = open("/dev/null", O_RDWR);
	int err = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	dup2(null, STDIN_FILENO);
	dup2(null, STDOUT_FILENO);
	if (err >= 0)
		dup2(err, STDERR_FILENO);
}

static int run_cmd(const struct launch *l, const char *const argv[],
		   struct err *e)
{
	char errpath[128], cmd[256], why[160];
	int ws = 0;
	pid_t pid;

	snprintf(errpath, sizeof(errpath), "%s/ip.err", l->dir);
	pid = fork();
	if (pid < 0)
		return err_set(e, -errno, "fork: %s", strerror(errno));
	if (pid == 0) {
		child_stdio(errpath);
		sigprocmask(SIG_SETMASK, &l->old_mask, NULL);
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "cannot run %s: %s\n", argv[0],
			strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
		return 0;
	join_argv(argv, cmd, sizeof(cmd));
	first_line(errpath, why, sizeof(why));
	return err_set(e, -EIO, "--netns: '%s' failed: %s", cmd,
		       why[0] ? why : "no reason given");
}

static int add_netns(struct launch *l, const char *name, struct err *e)
{
	const char *add[] = {"ip", "netns", "add", name, NULL};
	int rc = run_cmd(l, add, e);

	if (!rc)
		snprintf(l->ns[l->nns++], sizeof(l->ns[0]), "%s", name);
	return rc;
}

/* Node @k's namespace, joined to the bridge by a veth pair. */
static int add_node_netns(struct launch *l, int k, const char *br,
			  struct err *e)
{
	char ns[32], veth[16], addr[24];
	const char *const cmds[][14] = {
		{"ip", "-n", ns, "link", "set", "lo", "up", NULL},
		{"ip", "-n", br, "link", "add", veth, "type", "veth", "peer",
		 "name", "eth0", "netns", ns, NULL},
		{"ip", "-n", br, "link", "set", veth, "master", "br0", "up",
		 NULL},
		{"ip", "-n", ns, "addr", "add", addr, "dev", "eth0", NULL},
		{"ip", "-n", ns, "link", "set", "eth0", "up", NULL},
	};
	int rc;

	snprintf(ns, sizeof(ns), "dvmm-%d-%d", (int)getpid(), k);
	snprintf(veth, sizeof(veth), "veth%d", k);
	snprintf(addr, sizeof(addr), "10.77.0.%d/24", k + 1);
	rc = add_netns(l, ns, e);
	for (size_t i = 0; !rc && i < sizeof(cmds) / sizeof(cmds[0]); i++)
		rc = run_cmd(l, cmds[i], e);
	return rc;
}

static int make_netns(struct launch *l, struct err *e)
{
	char br[32];
	const char *const bridge[][10] = {
		{"ip", "-n", br, "link", "add", "br0", "type", "bridge", NULL},
		{"ip", "-n", br, "link", "set", "br0", "up", NULL},
	};
	int rc;

	if (geteuid() != 0)
		return err_set(e, -EPERM,
			       "--netns needs root: it creates network "
			       "namespaces and veth pairs");
	snprintf(br, sizeof(br), "dvmm-%d-br", (int)getpid());
	rc = add_netns(l, br, e);
	for (size_t i = 0; !rc && i < 2; i++)
		rc = run_cmd(l, bridge[i], e);
	for (int k = 0; !rc && k < l->o->nodes; k++)
		rc = add_node_netns(l, k, br, e);
	return rc;
}

static void remove_netns(struct launch *l)
{
	struct err e = {0};

	while (l->nns > 0) {
		const char *del[] = {"ip", "netns", "del", l->ns[--l->nns],
				     NULL};

		if (run_cmd(l, del, &e))
			fprintf(stderr, "dvmm: %s\n", e.msg);
	}
}

/* ---- the node processes ---- */

static int node_argv(const struct launch *l, int k, char *id, size_t idlen,
		     const char **argv)
{
	const struct run_options *o = l->o;
	int n = 0, level = log_get_level();

	snprintf(id, idlen, "%d", k);
	argv[n++] = "dvmm";
	argv[n++] = "node";
	argv[n++] = "--cluster";
	argv[n++] = l->file;
	argv[n++] = "--id";
	argv[n++] = id;
	for (int v = LOG_WARN; v < level && v < LOG_DEBUG; v++)
		argv[n++] = "-v";
	if (o->mc.kvm_path) {
		argv[n++] = "--kvm";
		argv[n++] = o->mc.kvm_path;
	}
	if (k == 0) {
		argv[n++] = "--console";
		argv[n++] = o->console;
	}
	if (k == 0 && o->api_path) {
		argv[n++] = "--api";
		argv[n++] = o->api_path;
	}
	argv[n] = NULL;
	return n;
}

static int enter_netns(const char *name)
{
	char path[64];
	int fd, rc;

	snprintf(path, sizeof(path), "/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = setns(fd, CLONE_NEWNET) ? -errno : 0;
	close(fd);
	return rc;
}

/* In the child: become node @k. */
static void exec_node(const struct launch *l, int k, pid_t parent)
{
	const char *argv[20];
	char id[12];
	int rc = 0;

	/* Never outlive the launcher, even if it is killed outright. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(EXIT_FAILURE_VMM);
	if (k != 0) {
		/* keep the terminal's ^C for node 0, which ends the VM */
		int null = open("/dev/null", O_RDONLY);

		setpgid(0, 0);
		dup2(null, STDIN_FILENO);
	}
	if (l->o->netns)
		rc = enter_netns(l->ns[k + 1]);
	if (rc) {
		fprintf(stderr,
			"dvmm: node %d: cannot enter namespace %s: %s\n", k,
			l->ns[k + 1], strerror(-rc));
		_exit(EXIT_FAILURE_VMM);
	}
	node_argv(l, k, id, sizeof(id), argv);
	sigprocmask(SIG_SETMASK, &l->old_mask, NULL);
	execv("/proc/self/exe", (char *const *)argv);
	fprintf(stderr, "dvmm: cannot start node %d: %s\n", k, strerror(errno));
	_exit(127);
}

static int start_nodes(struct launch *l, struct err *e)
{
	pid_t self = getpid();

	for (int k = 0; k < l->o->nodes; k++) {
		pid_t pid = fork();

		if (pid < 0)
			return err_set(e, -errno, "cannot start node %d: %s", k,
				       strerror(errno));
		if (pid == 0)
			exec_node(l, k, self);
		l->pid[k] = pid;
		pr_info("node %d is pid %d", k, (int)pid);
	}
	return 0;
}

static void reap(struct launch *l)
{
	for (int k = 0; k < l->o->nodes; k++) {
		if (l->pid[k] &&
		    waitpid(l->pid[k], &l->wstatus[k], WNOHANG) == l->pid[k])
			l->pid[k] = 0;
	}
}

static int running(const struct launch *l)
{
	int n = 0;

	for (int k = 0; k < l->o->nodes; k++)
		n += l->pid[k] != 0;
	return n;
}

static void signal_all(const struct launch *l, int sig)
{
	for (int k = 0; k < l->o->nodes; k++)
		if (l->pid[k])
			kill(l->pid[k], sig);
}

/* A stop signal for us: node 0 ends the VM (and the cluster) cleanly. */
static void forward(const struct launch *l, int sig, const siginfo_t *si)
{
	if (!l->pid[0])
		signal_all(l, sig);
	else if (si->si_code != SI_KERNEL) /* ^C reached node 0 already */
		kill(l->pid[0], sig);
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/*
 * Wait for every node. Once node 0 has ended (or is alone), the rest get a
 * grace period, then SIGTERM, then SIGKILL: nothing outlives us.
 */
static void supervise(struct launch *l, const sigset_t *set)
{
	const struct timespec tick = {0, 100 * 1000000};
	double term_at = 0;
	int escalated = 0;

	while (running(l)) {
		siginfo_t si;
		int sig = sigtimedwait(set, &si, &tick);

		if (sig > 0 && sig != SIGCHLD)
			forward(l, sig, &si);
		reap(l);
		if (!running(l))
			break;
		if (!term_at && !l->pid[0])
			term_at = now_s() + PEERS_LINGER_S;
		else if (!term_at && running(l) == 1)
			term_at = now_s() + NODE0_LINGER_S;
		if (term_at && escalated == 0 && now_s() > term_at) {
			signal_all(l, SIGTERM);
			escalated = 1;
		} else if (escalated == 1 && now_s() > term_at + KILL_AFTER_S) {
			signal_all(l, SIGKILL);
			escalated = 2;
		}
	}
}

/* Node 0's status; 1 if it died, or if it succeeded but a node did not. */
static int launch_status(const struct launch *l)
{
	int ws = l->wstatus[0], status;

	if (!WIFEXITED(ws)) {
		pr_info("node 0 was killed by signal %d", WTERMSIG(ws));
		return EXIT_FAILURE_VMM;
	}
	status = WEXITSTATUS(ws);
	for (int k = 1; k < l->o->nodes && status == 0; k++) {
		ws = l->wstatus[k];
		if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
			continue;
		if (WIFEXITED(ws))
			fprintf(stderr, "dvmm: node %d exited with status %d\n",
				k, WEXITSTATUS(ws));
		else
			fprintf(stderr,
				"dvmm: node %d was killed by signal "
				"%d\n",
				k, WTERMSIG(ws));
		status = EXIT_FAILURE_VMM;
	}
	return status;
}

static void remove_dir(const struct launch *l)
{
	char p[128];

	if (!l->dir[0])
		return;
	unlink(l->file);
	snprintf(p, sizeof(p), "%s/ip.err", l->dir);
	unlink(p);
	rmdir(l->dir);
}

/* Whatever happened: no process, namespace or file of ours is left. */
static void launch_cleanup(struct launch *l, const sigset_t *set)
{
	if (running(l)) {
		signal_all(l, SIGKILL);
		while (running(l)) {
			const struct timespec tick = {0, 50 * 1000000};

			sigtimedwait(set, NULL, &tick);
			reap(l);
		}
	}
	remove_netns(l);
	remove_dir(l);
}

int node_launch(const struct run_options *o)
{
	struct launch *l = calloc(1, sizeof(*l));
	struct err e = {0};
	sigset_t set;
	int status = EXIT_FAILURE_VMM;

	if (!l) {
		fprintf(stderr, "dvmm: out of memory\n");
		return EXIT_FAILURE_VMM;
	}
	l->o = o;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &l->old_mask);
	if (write_cluster_file(l, &e) || (o->netns && make_netns(l, &e)) ||
	    start_nodes(l, &e)) {
		fprintf(stderr, "dvmm: %s\n", e.msg);
	} else {
		pr_info("cluster file %s", l->file);
		supervise(l, &set);
		status = launch_status(l);
	}
	launch_cleanup(l, &set);
	sigprocmask(SIG_SETMASK, &l->old_mask, NULL);
	free(l);
	return status;
}
