/*
 * tests/tools/cluster_ping.c - benchmark of the cluster transport between
 * two processes (which may sit in different network namespaces or hosts):
 * round-trip latency of 64-byte messages (median, p99; driven from a
 * caller thread and from the event-loop thread), throughput of 64-byte and
 * 4 KiB messages (msgs/s) and of 1 MiB messages (MB/s). With --raw it does
 * the same over a plain TCP socket (TCP_NODELAY, blocking, the same 12-byte
 * framing): the floor the transport is measured against. Prints one line
 * per figure: "BENCH name key=value ...".
 *
 * usage:
 *   cluster_ping serve HOST:PORT [--raw] [--secret S] [--timeout SEC]
 *   cluster_ping client HOST:PORT [--raw] [--secret S] [--quick]
 *   cluster_ping local [--raw] [--quick]    (both sides, 127.0.0.1)
 * serve listens (PORT 0 picks one) and prints "READY port=N" on stdout;
 * client is node 1 dialling node 0 at HOST:PORT; serve exits when the
 * client is done, or after --timeout seconds (default 300).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster/msg.h"
#include "cluster/transport.h"

#define MSG_DATA (MSG_USER_BASE + 32) /* throughput payload, not echoed */
#define DEFAULT_SECRET "cluster_ping default secret!"
#define CLUSTER_ID "cluster_ping-v1."
#define RAW_BUF (256 * 1024)
#define SMALL 64
#define MEDIUM 4096
#define LARGE (1u << 20)

struct opts {
	bool serve, client, local, raw, quick;
	char host[64];
	uint16_t port;
	const char *secret;
	unsigned int timeout_s;
};

/* How many of each: full run, divided by 10 with --quick. */
struct counts {
	int rtt, small, medium, large;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct counts get_counts(bool quick)
{
	struct counts c = {20000, 1000000, 200000, 2000};

	if (quick)
		c = (struct counts){2000, 100000, 20000, 200};
	return c;
}

/* ------------------------------------------------------------------ */
/* Reporting                                                           */
/* ------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void report_rtt(const char *name, const char *mode, uint64_t *ns, int n)
{
	uint64_t sum = 0;
	int i;

	qsort(ns, (size_t)n, sizeof(*ns), cmp_u64);
	for (i = 0; i < n; i++)
		sum += ns[i];
	printf("BENCH %s mode=%s size=%d n=%d median_us=%.1f p99_us=%.1f "
	       "mean_us=%.1f min_us=%.1f\n",
	       name, mode, SMALL, n, ns[n / 2] / 1e3,
	       ns[(size_t)n * 99 / 100] / 1e3, (double)sum / n / 1e3,
	       ns[0] / 1e3);
	fflush(stdout);
}

static void report_tput(const char *mode, uint32_t size, int n, uint64_t ns)
{
	double s = ns / 1e9;

	printf("BENCH cluster_tput mode=%s size=%u n=%d msgs_per_s=%.0f "
	       "MB_per_s=%.1f\n",
	       mode, size, n, n / s, (double)size * n / s / 1e6);
	fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* Transport mode                                                      */
/* ------------------------------------------------------------------ */

struct tside {
	struct transport *t;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t pongs;
	uint64_t expect; /* PONGs asked for (client thread only) */
	bool up, down;
	char why[ERR_MSG_MAX];
	/* Ping-pong driven by the event-loop thread. */
	int loop_left; /* atomic: set by us, counted down by loop */
	int loop_n;
	uint64_t *loop_ns, loop_t0;
	uint8_t ping[SMALL];
};

static void signal_side(struct tside *s)
{
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

/* A PONG while a loop-driven ping-pong runs: record it, send the next. */
static void loop_pong(struct tside *s, int from)
{
	uint64_t t = now_ns();

	s->loop_ns[s->loop_n++] = t - s->loop_t0;
	if (__atomic_sub_fetch(&s->loop_left, 1, __ATOMIC_ACQ_REL) > 0) {
		s->loop_t0 = now_ns();
		transport_send(s->t, from, MSG_PING, s->ping, SMALL);
		return;
	}
	pthread_mutex_lock(&s->lock);
	s->pongs++;
	signal_side(s);
}

static void on_msg(void *opaque, int from, uint16_t type, const void *buf,
		   uint32_t len)
{
	struct tside *s = opaque;

	if (type == MSG_PING) { /* the server side */
		transport_send(s->t, from, MSG_PONG, buf, len);
		return;
	}
	if (type != MSG_PONG)
		return;
	if (__atomic_load_n(&s->loop_left, __ATOMIC_ACQUIRE) > 0) {
		loop_pong(s, from);
		return;
	}
	pthread_mutex_lock(&s->lock);
	s->pongs++;
	signal_side(s);
}

static void on_peer(void *opaque, int node, enum peer_event ev, const char *why)
{
	struct tside *s = opaque;

	(void)node;
	pthread_mutex_lock(&s->lock);
	if (ev == PEER_UP)
		s->up = true;
	else
		s->down = true;
	snprintf(s->why, sizeof(s->why), "%s", why ? why : "");
	signal_side(s);
}

/* Wait until @want PONGs arrived; false if the peer went down. */
static bool wait_pongs(struct tside *s, uint64_t want)
{
	bool ok;

	pthread_mutex_lock(&s->lock);
	while (s->pongs < want && !s->down)
		pthread_cond_wait(&s->cond, &s->lock);
	ok = s->pongs >= want;
	pthread_mutex_unlock(&s->lock);
	return ok;
}

static void make_cfg(struct transport_config *c, const struct opts *o, int self)
{
	memset(c, 0, sizeof(*c));
	c->self = self;
	c->nnodes = 2;
	snprintf(c->node[0].host, sizeof(c->node[0].host), "%s", o->host);
	c->node[0].port = o->port;
	snprintf(c->node[1].host, sizeof(c->node[1].host), "%s",
		 strchr(o->host, ':') ? "::" : "0.0.0.0");
	memcpy(c->cluster_id, CLUSTER_ID, CLUSTER_ID_LEN);
	c->secret_len = strlen(o->secret);
	if (c->secret_len > CLUSTER_SECRET_MAX)
		c->secret_len = CLUSTER_SECRET_MAX;
	memcpy(c->secret, o->secret, c->secret_len);
	c->connect_timeout_ms = self == 0 ? o->timeout_s * 1000 : 10000;
}

static int side_open(struct tside *s, const struct opts *o, int self,
		     struct err *e)
{
	struct transport_config c;
	int rc;

	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	make_cfg(&c, o, self);
	rc = transport_tcp_create(&s->t, &c, on_msg, on_peer, s, e);
	if (rc)
		return rc;
	rc = transport_start(s->t, e);
	if (rc)
		return rc;
	if (self == 0) {
		printf("READY port=%u\n", s->t->cfg.node[0].port);
		fflush(stdout);
	}
	return transport_wait_connected(s->t, e);
}

static int t_serve(const struct opts *o)
{
	struct tside s;
	struct err e = {0};

	if (side_open(&s, o, 0, &e)) {
		fprintf(stderr, "cluster_ping: %s\n", e.msg);
		return 1;
	}
	pthread_mutex_lock(&s.lock);
	while (!s.down)
		pthread_cond_wait(&s.cond, &s.lock);
	pthread_mutex_unlock(&s.lock);
	fprintf(stderr, "cluster_ping: client done (%s)\n", s.why);
	transport_destroy(s.t);
	return 0;
}

static int t_rtt_caller(struct tside *s, int n)
{
	uint64_t *ns = calloc((size_t)n, sizeof(*ns)), t0;
	int i;

	for (i = -n / 10; i < n; i++) { /* the first tenth warms up */
		t0 = now_ns();
		if (transport_send(s->t, 0, MSG_PING, s->ping, SMALL) ||
		    !wait_pongs(s, ++s->expect))
			return -1;
		if (i >= 0)
			ns[i] = now_ns() - t0;
	}
	report_rtt("cluster_rtt", "transport", ns, n);
	free(ns);
	return 0;
}

static int t_rtt_loop(struct tside *s, int n)
{
	s->loop_ns = calloc((size_t)n, sizeof(*s->loop_ns));
	s->loop_n = 0;
	s->loop_t0 = now_ns();
	__atomic_store_n(&s->loop_left, n, __ATOMIC_RELEASE);
	if (transport_send(s->t, 0, MSG_PING, s->ping, SMALL) ||
	    !wait_pongs(s, ++s->expect))
		return -1;
	report_rtt("cluster_rtt_loop", "transport", s->loop_ns, n);
	free(s->loop_ns);
	return 0;
}

static int t_tput(struct tside *s, uint32_t size, int n)
{
	uint8_t *buf = calloc(1, size);
	uint64_t t0 = now_ns();
	int i;

	for (i = 0; i < n; i++)
		if (transport_send(s->t, 0, MSG_DATA, buf, size))
			return -1;
	if (transport_send(s->t, 0, MSG_PING, s->ping, SMALL) ||
	    !wait_pongs(s, ++s->expect))
		return -1;
	report_tput("transport", size, n, now_ns() - t0);
	free(buf);
	return 0;
}

static int t_client(const struct opts *o)
{
	struct counts c = get_counts(o->quick);
	struct err e = {0};
	struct tside s;
	int rc;

	if (side_open(&s, o, 1, &e)) {
		fprintf(stderr, "cluster_ping: %s\n", e.msg);
		return 1;
	}
	rc = t_rtt_caller(&s, c.rtt);
	rc = rc ? rc : t_rtt_loop(&s, c.rtt);
	rc = rc ? rc : t_tput(&s, SMALL, c.small);
	rc = rc ? rc : t_tput(&s, MEDIUM, c.medium);
	rc = rc ? rc : t_tput(&s, LARGE, c.large);
	if (rc)
		fprintf(stderr, "cluster_ping: server lost: %s\n", s.why);
	transport_destroy(s.t);
	return rc ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* Raw mode: a blocking TCP socket with the same framing               */
/* ------------------------------------------------------------------ */

struct raw {
	int fd;
	uint8_t *buf;
	size_t off, len;
};

static int write_iov(int fd, struct iovec *iov, int n)
{
	ssize_t w;

	while (n) {
		w = writev(fd, iov, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		while (n && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int raw_send(struct raw *r, uint16_t type, const void *buf, uint32_t len)
{
	uint8_t hdr[MSG_HDR_SIZE];
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)buf, len}};

	msg_encode_hdr(hdr, type, len);
	return write_iov(r->fd, iov, len ? 2 : 1);
}

/* Make @n bytes available at r->buf + r->off; -1 on EOF or error. */
static int raw_fill(struct raw *r, size_t n)
{
	ssize_t got;

	if (r->len - r->off >= n)
		return 0;
	memmove(r->buf, r->buf + r->off, r->len - r->off);
	r->len -= r->off;
	r->off = 0;
	while (r->len < n) {
		got = read(r->fd, r->buf + r->len, RAW_BUF + LARGE - r->len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return -1;
		r->len += (size_t)got;
	}
	return 0;
}

/* Next message (payload in r->buf until the next call). */
static int raw_recv(struct raw *r, uint16_t *type, uint8_t **payload,
		    uint32_t *len)
{
	uint8_t *h;

	if (raw_fill(r, MSG_HDR_SIZE))
		return -1;
	h = r->buf + r->off;
	*len = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 |
	       (uint32_t)h[7] << 24;
	*type = (uint16_t)(h[8] | h[9] << 8);
	if (*len > LARGE || raw_fill(r, MSG_HDR_SIZE + *len))
		return -1;
	*payload = r->buf + r->off + MSG_HDR_SIZE;
	r->off += MSG_HDR_SIZE + *len;
	return 0;
}

static void set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int resolve(const struct opts *o, bool passive, struct addrinfo **ai)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = passive ? AI_PASSIVE : 0};
	char port[8];
	int rc;

	snprintf(port, sizeof(port), "%u", o->port);
	rc = getaddrinfo(o->host, port, &hints, ai);
	if (rc)
		fprintf(stderr, "cluster_ping: %s: %s\n", o->host,
			gai_strerror(rc));
	return rc ? -1 : 0;
}

static int raw_listen(const struct opts *o)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);
	struct addrinfo *ai;
	int fd, one = 1;

	if (resolve(o, true, &ai))
		return -1;
	fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 1) ||
	    getsockname(fd, (struct sockaddr *)&sa, &len)) {
		perror("cluster_ping: listen");
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	printf("READY port=%u\n",
	       ntohs(sa.ss_family == AF_INET6 ?
			     ((struct sockaddr_in6 *)&sa)->sin6_port :
			     ((struct sockaddr_in *)&sa)->sin_port));
	fflush(stdout);
	return fd;
}

static int raw_serve(const struct opts *o)
{
	struct raw r = {.buf = malloc(RAW_BUF + LARGE)};
	int lfd = raw_listen(o);
	uint8_t *p;
	uint16_t type;
	uint32_t len;

	if (lfd < 0)
		return 1;
	r.fd = accept(lfd, NULL, NULL);
	close(lfd);
	if (r.fd < 0)
		return 1;
	set_nodelay(r.fd);
	while (!raw_recv(&r, &type, &p, &len))
		if (type == MSG_PING && raw_send(&r, MSG_PONG, p, len))
			break;
	close(r.fd);
	free(r.buf);
	fprintf(stderr, "cluster_ping: client done\n");
	return 0;
}

/* Send a PING and read up to its PONG. */
static int raw_ping(struct raw *r, const uint8_t *ping)
{
	uint8_t *p;
	uint16_t type;
	uint32_t len;

	if (raw_send(r, MSG_PING, ping, SMALL))
		return -1;
	do
		if (raw_recv(r, &type, &p, &len))
			return -1;
	while (type != MSG_PONG);
	return 0;
}

static int raw_rtt(struct raw *r, int n)
{
	uint64_t *ns = calloc((size_t)n, sizeof(*ns)), t0;
	uint8_t ping[SMALL] = {0};
	int i;

	for (i = -n / 10; i < n; i++) {
		t0 = now_ns();
		if (raw_ping(r, ping))
			return -1;
		if (i >= 0)
			ns[i] = now_ns() - t0;
	}
	report_rtt("cluster_rtt", "raw", ns, n);
	free(ns);
	return 0;
}

static int raw_tput(struct raw *r, uint32_t size, int n)
{
	uint8_t *buf = calloc(1, size), ping[SMALL] = {0};
	uint64_t t0 = now_ns();
	int i;

	for (i = 0; i < n; i++)
		if (raw_send(r, MSG_DATA, buf, size))
			return -1;
	if (raw_ping(r, ping))
		return -1;
	report_tput("raw", size, n, now_ns() - t0);
	free(buf);
	return 0;
}

static int raw_client(const struct opts *o)
{
	struct counts c = get_counts(o->quick);
	struct raw r = {.buf = malloc(RAW_BUF + LARGE)};
	struct addrinfo *ai;
	int rc;

	if (resolve(o, false, &ai))
		return 1;
	r.fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (r.fd < 0 || connect(r.fd, ai->ai_addr, ai->ai_addrlen)) {
		fprintf(stderr, "cluster_ping: cannot reach %s:%u: %s\n",
			o->host, o->port, strerror(errno));
		freeaddrinfo(ai);
		return 1;
	}
	freeaddrinfo(ai);
	set_nodelay(r.fd);
	rc = raw_rtt(&r, c.rtt);
	rc = rc ? rc : raw_tput(&r, SMALL, c.small);
	rc = rc ? rc : raw_tput(&r, MEDIUM, c.medium);
	rc = rc ? rc : raw_tput(&r, LARGE, c.large);
	if (rc)
		fprintf(stderr, "cluster_ping: server lost\n");
	close(r.fd);
	free(r.buf);
	return rc ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* Command line                                                        */
/* ------------------------------------------------------------------ */

static int usage(void)
{
	fprintf(stderr,
		"usage: cluster_ping serve HOST:PORT [--raw] [--secret S] "
		"[--timeout SEC]\n"
		"       cluster_ping client HOST:PORT [--raw] [--secret S] "
		"[--quick]\n"
		"       cluster_ping local [--raw] [--quick]\n");
	return 2;
}

/* "host:port", "[v6]:port" */
static int parse_hostport(const char *s, struct opts *o)
{
	const char *colon = strrchr(s, ':');
	size_t n;
	char *end;
	long port;

	if (!colon)
		return -1;
	n = (size_t)(colon - s);
	if (s[0] == '[' && n >= 2 && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof(o->host))
		return -1;
	memcpy(o->host, s, n);
	o->host[n] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535)
		return -1;
	o->port = (uint16_t)port;
	return 0;
}

static int parse_flag(int argc, char **argv, int *i, struct opts *o)
{
	const char *a = argv[*i];

	if (!strcmp(a, "--raw"))
		o->raw = true;
	else if (!strcmp(a, "--quick"))
		o->quick = true;
	else if (!strcmp(a, "--secret") && *i + 1 < argc)
		o->secret = argv[++*i];
	else if (!strcmp(a, "--timeout") && *i + 1 < argc)
		o->timeout_s = (unsigned int)atoi(argv[++*i]);
	else
		return -1;
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	int i = 2;

	if (argc < 2)
		return -1;
	o->serve = !strcmp(argv[1], "serve");
	o->client = !strcmp(argv[1], "client");
	o->local = !strcmp(argv[1], "local");
	if (o->local)
		snprintf(o->host, sizeof(o->host), "127.0.0.1");
	else if (!(o->serve || o->client) || argc < 3 ||
		 parse_hostport(argv[2], o))
		return -1;
	else
		i = 3;
	for (; i < argc; i++)
		if (parse_flag(argc, argv, &i, o))
			return -1;
	if (strlen(o->secret) < 16) {
		fprintf(stderr, "cluster_ping: the secret needs 16+ bytes\n");
		return -1;
	}
	return 0;
}

static int serve(const struct opts *o)
{
	alarm(o->timeout_s); /* never linger */
	return o->raw ? raw_serve(o) : t_serve(o);
}

static int client(const struct opts *o)
{
	return o->raw ? raw_client(o) : t_client(o);
}

/* Both sides: a child serves on a free port, we are the client. */
static int local(struct opts *o)
{
	int pfd[2], st, rc;
	unsigned int port;
	FILE *f;
	pid_t pid;

	if (pipe(pfd))
		return 1;
	pid = fork();
	if (pid == 0) {
		dup2(pfd[1], STDOUT_FILENO);
		close(pfd[0]);
		_exit(serve(o));
	}
	close(pfd[1]);
	f = fdopen(pfd[0], "r");
	if (pid < 0 || !f || fscanf(f, "READY port=%u", &port) != 1) {
		fprintf(stderr, "cluster_ping: the server did not start\n");
		return 1;
	}
	o->port = (uint16_t)port;
	rc = client(o);
	fclose(f);
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
		return 1;
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o = {.secret = DEFAULT_SECRET, .timeout_s = 300};

	signal(SIGPIPE, SIG_IGN);
	if (parse_args(argc, argv, &o))
		return usage();
	if (o.local)
		return local(&o);
	return o.serve ? serve(&o) : client(&o);
}
