/*
 * cluster/tcp.c - the TCP engine behind transport.h.
 *
 * One event-loop thread per node runs an epoll loop over the listening
 * socket, an eventfd (wake-ups, stop) and every connection. Node i dials
 * each node j < i (retrying with backoff until connect_timeout_ms after
 * start) and accepts from j > i. A new connection is a stranger until the
 * handshake of auth.c completes within handshake_ms; before that its
 * decoder takes only handshake-sized messages, at most MAX_PENDING
 * strangers are held at once, and any failure closes it with one log line
 * and an auth_failures count, touching nothing else. An authenticated
 * connection becomes its peer's one connection for good: no reconnection.
 *
 * Sending: every peer has a byte queue of chunks under its own lock. A
 * sender whose peer has an empty queue writes straight to the socket (no
 * thread hop); what does not fit is queued and EPOLLOUT armed, and the loop
 * drains the queue with batched sendmsg. Senders other than the loop block
 * while the queue is over sendq_limit. Only the loop thread closes sockets
 * or changes a peer's state, and it calls on_msg/on_peer with no lock held.
 *
 * Liveness: any bytes received count; a peer idle for heartbeat_ms gets a
 * HEARTBEAT, one silent for dead_after_ms is declared down, once, with a
 * reason, as is one whose connection breaks or that sends garbage.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cluster/auth.h"
#include "cluster/msg.h"
#include "cluster/transport.h"
#include "util/log.h"

#define DEF_HEARTBEAT_MS 250
#define DEF_DEAD_AFTER_MS 3000
#define DEF_CONNECT_TIMEOUT_MS 10000
#define DEF_SENDQ_LIMIT (64u << 20)

#define RBUF_SIZE (256 * 1024)	  /* the loop's one receive buffer */
#define READ_BUDGET (1024 * 1024) /* per connection per wake-up */
#define DIRECT_MIN (64 * 1024)	  /* payload left to receive in place */
#define MAX_PENDING 32		  /* strangers in handshake at once */
#define MAX_EVENTS 64
#define MAX_IOV 64
#define CHUNK_MIN 16384 /* small messages share chunks */
#define HS_OUT 512	/* handshake bytes not yet written */
#define BACKOFF_MIN_MS 20
#define BACKOFF_MAX_MS 1000
#define FLUSH_MS 500	    /* destroy: how long to drain queues */
#define ACCEPT_PAUSE_MS 100 /* out of fds: stop accepting a while */
#define IDLE_WAKE_MS 1000
#define NEVER UINT64_MAX
#define ADDR_MAX 80
#define REASON_MAX 200

enum src_kind { SRC_LISTEN, SRC_WAKE, SRC_CONN };

/* What an epoll event points at. */
struct src {
	enum src_kind kind;
};

enum conn_state { CONN_DIALING, CONN_HANDSHAKE, CONN_UP };

struct conn {
	struct src src; /* first: epoll data points here */
	int fd;
	enum conn_state state;
	bool dead; /* closed; freed after the event batch */
	int dial;  /* node dialled, or -1 when incoming */
	char addr[ADDR_MAX];
	uint64_t deadline; /* handshake done by then */
	struct auth_session auth;
	struct msg_decoder dec;
	uint8_t hs_out[HS_OUT];
	size_t hs_len;
	struct conn *next_dead;
};

struct chunk {
	struct chunk *next;
	size_t off, len, cap; /* bytes [off, len) still to write */
	uint8_t data[];
};

enum peer_state { PS_WAITING, PS_UP, PS_GONE };

struct peer {
	int id;
	/* Under lock: shared with sending threads. */
	pthread_mutex_t lock;
	pthread_cond_t room; /* queue under the limit, or peer gone */
	enum peer_state state;
	bool closing; /* destroy began: senders get -ENOTCONN */
	int fd;	      /* the socket senders write, or -1 */
	struct conn *conn;
	struct chunk *head, *tail;
	size_t qbytes;
	bool out_armed;
	int wr_err; /* a write failed with this errno */
	int waiters;
	uint64_t last_tx;
	/* Atomic counters. */
	uint64_t msgs_sent, msgs_recv, bytes_sent, bytes_recv, sendq_waits;
	/* Event-loop thread only. */
	uint64_t last_rx;
	struct conn *dialing;
	uint64_t dial_at;
	unsigned int backoff;
	struct sockaddr_storage sa;
	socklen_t salen;
	/* Under tcp.lock: why it is not up (for wait_connected). */
	char why[ERR_MSG_MAX];
};

struct tcp {
	struct transport t;
	struct auth_cfg acfg;
	pthread_mutex_t lock; /* the fields below up to peer[] */
	pthread_cond_t cond;  /* a peer came up or went down */
	uint32_t up_mask, gone_mask;
	bool stopping;
	uint64_t auth_failures; /* atomic */
	pthread_t loop_self;	/* atomic; 0 until the loop runs */
	struct peer peer[CLUSTER_MAX_NODES];
	/* Event-loop thread only, once started. */
	int ep, wake_fd, listen_fd;
	struct src listen_src, wake_src;
	bool started, flushing;
	uint64_t t0, give_up, flush_deadline, accept_paused_until;
	pthread_t thread;
	struct conn *pending[MAX_PENDING];
	struct conn *graveyard;
	uint8_t *rbuf;
};

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static struct tcp *tcp_of(struct transport *t)
{
	return t->priv;
}

static void stat_add(uint64_t *ctr, uint64_t v)
{
	__atomic_fetch_add(ctr, v, __ATOMIC_RELAXED);
}

static uint64_t stat_get(const uint64_t *ctr)
{
	return __atomic_load_n(ctr, __ATOMIC_RELAXED);
}

static bool on_loop_thread(struct tcp *tt)
{
	pthread_t self = __atomic_load_n(&tt->loop_self, __ATOMIC_ACQUIRE);

	return self && pthread_equal(self, pthread_self());
}

static void wake_loop(struct tcp *tt)
{
	uint64_t one = 1;

	if (write(tt->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_debug("cluster: cannot wake the event loop: %s",
			 strerror(errno));
}

static bool is_stopping(struct tcp *tt)
{
	bool s;

	pthread_mutex_lock(&tt->lock);
	s = tt->stopping;
	pthread_mutex_unlock(&tt->lock);
	return s;
}

static void fmt_sockaddr(const struct sockaddr *sa, socklen_t len, char *out,
			 size_t cap)
{
	char host[64], port[8];

	if (getnameinfo(sa, len, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(out, cap, "?");
		return;
	}
	snprintf(out, cap, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
		 host, port);
}

static const struct transport_node_addr *node_addr(struct tcp *tt, int id)
{
	return &tt->t.cfg.node[id];
}

/* ------------------------------------------------------------------ */
/* Send queues (peer lock held)                                        */
/* ------------------------------------------------------------------ */

static void set_events(struct tcp *tt, struct conn *c, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = &c->src};

	if (epoll_ctl(tt->ep, EPOLL_CTL_MOD, c->fd, &ev))
		pr_debug("cluster: epoll_ctl on %s: %s", c->addr,
			 strerror(errno));
}

static void arm_out(struct tcp *tt, struct peer *p, bool on)
{
	if (p->out_armed == on || !p->conn)
		return;
	p->out_armed = on;
	set_events(tt, p->conn, EPOLLIN | (on ? EPOLLOUT : 0));
}

/* Append @len bytes to the queue, sharing the tail chunk when it fits. */
static int q_append(struct peer *p, const uint8_t *a, size_t alen,
		    const uint8_t *b, size_t blen)
{
	struct chunk *c = p->tail;
	size_t need = alen + blen;

	if (!c || c->cap - c->len < need) {
		size_t cap = need < CHUNK_MIN ? CHUNK_MIN : need;

		c = malloc(sizeof(*c) + cap);
		if (!c)
			return -ENOMEM;
		c->next = NULL;
		c->off = c->len = 0;
		c->cap = cap;
		if (p->tail)
			p->tail->next = c;
		else
			p->head = c;
		p->tail = c;
	}
	memcpy(c->data + c->len, a, alen);
	if (blen)
		memcpy(c->data + c->len + alen, b, blen);
	c->len += need;
	p->qbytes += need;
	return 0;
}

static void q_free(struct peer *p)
{
	struct chunk *c, *next;

	for (c = p->head; c; c = next) {
		next = c->next;
		free(c);
	}
	p->head = p->tail = NULL;
	p->qbytes = 0;
}

static void q_consume(struct peer *p, size_t n)
{
	p->qbytes -= n;
	while (n) {
		struct chunk *c = p->head;
		size_t left = c->len - c->off;

		if (n < left) {
			c->off += n;
			return;
		}
		n -= left;
		p->head = c->next;
		if (!p->head)
			p->tail = NULL;
		free(c);
	}
}

static void write_failed(struct tcp *tt, struct peer *p, int err)
{
	if (!p->wr_err)
		p->wr_err = err;
	wake_loop(tt); /* the loop turns it into PEER_DOWN */
}

static void room_check(struct tcp *tt, struct peer *p)
{
	if (p->waiters && p->qbytes <= tt->t.cfg.sendq_limit)
		pthread_cond_broadcast(&p->room);
}

/* Write as much of the queue as the socket takes. */
static void q_flush(struct tcp *tt, struct peer *p)
{
	struct iovec iov[MAX_IOV];
	struct msghdr mh = {.msg_iov = iov};
	struct chunk *c;
	ssize_t n;

	while (p->head && p->fd >= 0 && !p->wr_err) {
		mh.msg_iovlen = 0;
		for (c = p->head; c && mh.msg_iovlen < MAX_IOV; c = c->next) {
			iov[mh.msg_iovlen].iov_base = c->data + c->off;
			iov[mh.msg_iovlen++].iov_len = c->len - c->off;
		}
		n = sendmsg(p->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			write_failed(tt, p, errno);
		if (n <= 0)
			break;
		q_consume(p, (size_t)n);
		p->last_tx = now_ms();
	}
	arm_out(tt, p, p->head && !p->wr_err);
	room_check(tt, p);
}

/* Queue (or write at once) one message; the peer lock is held. */
static int q_msg(struct tcp *tt, struct peer *p, uint16_t type, const void *buf,
		 uint32_t len)
{
	uint8_t hdr[MSG_HDR_SIZE];
	struct iovec iov[2] = {{hdr, MSG_HDR_SIZE}, {(void *)buf, len}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};
	size_t done = 0;
	ssize_t n;
	int rc;

	msg_encode_hdr(hdr, type, len);
	if (!p->head && p->fd >= 0) {
		do
			n = sendmsg(p->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN) {
			write_failed(tt, p, errno);
			return -ENOTCONN;
		}
		done = n > 0 ? (size_t)n : 0;
		p->last_tx = now_ms();
	}
	if (done == MSG_HDR_SIZE + (size_t)len)
		return 0;
	if (done < MSG_HDR_SIZE)
		rc = q_append(p, hdr + done, MSG_HDR_SIZE - done, buf, len);
	else
		rc = q_append(p, (const uint8_t *)buf + done - MSG_HDR_SIZE,
			      MSG_HDR_SIZE + len - done, NULL, 0);
	if (rc && done) /* half a message is on the wire: the stream is lost */
		write_failed(tt, p, ENOMEM);
	if (rc)
		return rc;
	arm_out(tt, p, true);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */
/* ------------------------------------------------------------------ */

static struct conn *conn_new(struct tcp *tt, int fd, int dial, const char *addr)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->src.kind = SRC_CONN;
	c->fd = fd;
	c->dial = dial;
	snprintf(c->addr, sizeof(c->addr), "%s", addr);
	c->deadline = now_ms() + tt->t.cfg.handshake_ms;
	msg_decoder_init(&c->dec, AUTH_MAX_PAYLOAD);
	if (auth_init(&c->auth, &tt->acfg, dial)) {
		free(c);
		return NULL;
	}
	return c;
}

static int conn_watch(struct tcp *tt, struct conn *c, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = &c->src};

	return epoll_ctl(tt->ep, EPOLL_CTL_ADD, c->fd, &ev) ? -errno : 0;
}

static void pending_remove(struct tcp *tt, struct conn *c)
{
	int i;

	for (i = 0; i < MAX_PENDING; i++)
		if (tt->pending[i] == c)
			tt->pending[i] = NULL;
}

static void conn_close(struct tcp *tt, struct conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	epoll_ctl(tt->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	msg_decoder_free(&c->dec);
	auth_done(&c->auth);
	pending_remove(tt, c);
	if (c->dial >= 0 && tt->peer[c->dial].dialing == c)
		tt->peer[c->dial].dialing = NULL;
	c->next_dead = tt->graveyard;
	tt->graveyard = c;
}

static void bury_dead(struct tcp *tt)
{
	struct conn *c;

	while ((c = tt->graveyard)) {
		tt->graveyard = c->next_dead;
		free(c);
	}
}

/* Write what the handshake has queued; -errno on a broken socket. */
static int hs_flush(struct tcp *tt, struct conn *c)
{
	ssize_t n;

	while (c->hs_len) {
		n = send(c->fd, c->hs_out, c->hs_len,
			 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0)
			return -errno;
		memmove(c->hs_out, c->hs_out + n, c->hs_len - (size_t)n);
		c->hs_len -= (size_t)n;
	}
	set_events(tt, c, EPOLLIN | (c->hs_len ? EPOLLOUT : 0));
	return 0;
}

static int hs_send(struct tcp *tt, struct conn *c, uint16_t type,
		   const void *buf, uint32_t len)
{
	int n = msg_encode(c->hs_out + c->hs_len, sizeof(c->hs_out) - c->hs_len,
			   type, buf, len);

	if (n < 0)
		return n;
	c->hs_len += (size_t)n;
	return hs_flush(tt, c);
}

/* Remember why @id is not up, for wait_connected. */
static void note_why(struct tcp *tt, int id, const char *why)
{
	char *dst = tt->peer[id].why;
	size_t n = min64(strlen(why), sizeof(tt->peer[id].why) - 1);

	pthread_mutex_lock(&tt->lock);
	memcpy(dst, why, n); /* truncating is fine: it is one line of text */
	dst[n] = '\0';
	pthread_mutex_unlock(&tt->lock);
}

static void dial_failed(struct tcp *tt, struct peer *p, const char *why)
{
	uint64_t now = now_ms();

	note_why(tt, p->id, why);
	p->dialing = NULL;
	p->dial_at = now + p->backoff;
	if (p->dial_at >= tt->give_up)
		p->dial_at = NEVER;
	p->backoff = p->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS :
						       p->backoff * 2;
}

/*
 * End a connection that has not authenticated. @refused: we are refusing
 * the other side (it gets a GOODBYE with the reason, the refusal is logged
 * and counted); otherwise it failed on its own (closed, timed out, or the
 * node we dialled refused us). Strangers are always logged and counted.
 */
static void hs_fail(struct tcp *tt, struct conn *c, bool refused,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void hs_fail(struct tcp *tt, struct conn *c, bool refused,
		    const char *fmt, ...)
{
	char why[REASON_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (refused) /* tell it why, within its pre-auth message limit */
		hs_send(tt, c, MSG_GOODBYE, why,
			(uint32_t)min64(strlen(why), AUTH_MAX_PAYLOAD));
	if (c->dial < 0 || refused) {
		stat_add(&tt->auth_failures, 1);
		if (c->dial < 0)
			pr_warn("refused connection from %s: %s", c->addr, why);
		else
			pr_warn("refused connection to node %d at %s: %s",
				c->dial, c->addr, why);
	}
	if (c->dial < 0 && c->auth.peer >= 0 &&
	    tt->peer[c->auth.peer].state == PS_WAITING) {
		char note[ADDR_MAX + REASON_MAX + 32];

		snprintf(note, sizeof(note), "refused a connection from %s: %s",
			 c->addr, why);
		note_why(tt, c->auth.peer, note);
	}
	if (c->dial >= 0)
		dial_failed(tt, &tt->peer[c->dial], why);
	conn_close(tt, c);
}

/* ------------------------------------------------------------------ */
/* Peers coming up and going down                                      */
/* ------------------------------------------------------------------ */

static void set_masks(struct tcp *tt, int id, bool up)
{
	pthread_mutex_lock(&tt->lock);
	if (up) {
		tt->up_mask |= 1u << id;
	} else {
		tt->up_mask &= ~(1u << id);
		tt->gone_mask |= 1u << id;
	}
	pthread_cond_broadcast(&tt->cond);
	pthread_mutex_unlock(&tt->lock);
}

static void peer_down(struct tcp *tt, struct peer *p, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void peer_down(struct tcp *tt, struct peer *p, const char *fmt, ...)
{
	char why[ERR_MSG_MAX];
	struct conn *c = p->conn;
	va_list ap;

	if (p->state != PS_UP)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&p->lock);
	p->state = PS_GONE;
	p->fd = -1;
	p->conn = NULL;
	q_free(p);
	pthread_cond_broadcast(&p->room);
	pthread_mutex_unlock(&p->lock);
	conn_close(tt, c);
	note_why(tt, p->id, why);
	set_masks(tt, p->id, false);
	pr_info("cluster: %s", why);
	if (!tt->flushing && tt->t.on_peer)
		tt->t.on_peer(tt->t.opaque, p->id, PEER_DOWN, why);
}

/* The handshake on @c completed: it becomes its peer's connection. */
static int peer_up(struct tcp *tt, struct conn *c)
{
	struct peer *p = &tt->peer[c->auth.peer];
	int rc = 0;

	if (p->state != PS_WAITING) {
		hs_fail(tt, c, true, "node %d is already connected", p->id);
		return -1;
	}
	pending_remove(tt, c);
	p->dialing = NULL;
	c->state = CONN_UP;
	msg_decoder_set_limit(&c->dec, MSG_MAX_PAYLOAD);
	set_events(tt, c, EPOLLIN); /* q_flush arms EPOLLOUT if needed */
	pthread_mutex_lock(&p->lock);
	p->state = PS_UP;
	p->fd = c->fd;
	p->conn = c;
	p->last_tx = now_ms();
	if (c->hs_len) /* the tail of our handshake, if the socket was full */
		rc = q_append(p, c->hs_out, c->hs_len, NULL, 0);
	c->hs_len = 0;
	q_flush(tt, p);
	pthread_mutex_unlock(&p->lock);
	p->last_rx = now_ms();
	set_masks(tt, p->id, true);
	if (rc) {
		peer_down(tt, p, "node %d: out of memory", p->id);
		return -1;
	}
	pr_info("cluster: node %d is up (%s)", p->id, c->addr);
	if (!tt->flushing && tt->t.on_peer)
		tt->t.on_peer(tt->t.opaque, p->id, PEER_UP, NULL);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Incoming messages                                                   */
/* ------------------------------------------------------------------ */

static struct auth_peers busy_peers(struct tcp *tt)
{
	struct auth_peers ap;

	pthread_mutex_lock(&tt->lock);
	ap.up = tt->up_mask;
	ap.gone = tt->gone_mask;
	pthread_mutex_unlock(&tt->lock);
	return ap;
}

/* One handshake message; -1 when @c is gone. */
static int hs_msg(struct tcp *tt, struct conn *c, const struct msg *m)
{
	struct auth_peers busy = busy_peers(tt);
	struct auth_out out;
	struct err e;
	int rc;

	rc = auth_recv(&c->auth, m->type, m->payload, m->len, &busy, &out, &e);
	if (rc < 0) {
		hs_fail(tt, c, rc != -ECONNREFUSED, "%s", e.msg);
		return -1;
	}
	if (out.type && hs_send(tt, c, out.type, out.buf, out.len) < 0) {
		hs_fail(tt, c, false, "cannot send the handshake");
		return -1;
	}
	return rc == AUTH_DONE ? peer_up(tt, c) : 0;
}

/* One message from an authenticated peer; -1 when it went down. */
static int up_msg(struct tcp *tt, struct peer *p, const struct msg *m)
{
	char why[REASON_MAX];

	switch (m->type) {
	case MSG_HEARTBEAT:
		return 0;
	case MSG_GOODBYE:
		peer_down(tt, p, "node %d said goodbye: %s", p->id,
			  m->len ? msg_printable(why, sizeof(why), m->payload,
						 m->len) :
				   "no reason given");
		return -1;
	case MSG_HELLO:
	case MSG_AUTH:
	case MSG_AUTH_OK:
		peer_down(tt, p,
			  "node %d sent a bad message: handshake message type "
			  "%u after authentication",
			  p->id, m->type);
		return -1;
	}
	stat_add(&p->msgs_recv, 1);
	stat_add(&p->bytes_recv, m->len);
	if (!tt->flushing && tt->t.on_msg)
		tt->t.on_msg(tt->t.opaque, p->id, m->type, m->payload, m->len);
	return 0;
}

static void bad_stream(struct tcp *tt, struct conn *c, const char *why)
{
	if (c->state == CONN_UP)
		peer_down(tt, &tt->peer[c->auth.peer],
			  "node %d sent a bad message: %s", c->auth.peer, why);
	else
		hs_fail(tt, c, true, "bad message: %s", why);
}

/* Decode and act on @n received bytes; -1 when @c is gone. */
static int conn_feed(struct tcp *tt, struct conn *c, const uint8_t *buf,
		     size_t n)
{
	struct msg m;
	struct err e;
	size_t used;
	int rc;

	while (n) {
		rc = msg_decode(&c->dec, buf, n, &used, &m, &e);
		buf += used;
		n -= used;
		if (rc < 0) {
			bad_stream(tt, c, e.msg);
			return -1;
		}
		if (rc == 0)
			continue;
		if (c->state == CONN_UP)
			rc = up_msg(tt, &tt->peer[c->auth.peer], &m);
		else
			rc = hs_msg(tt, c, &m);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* The socket reported EOF (@err 0) or an error. */
static void conn_broken(struct tcp *tt, struct conn *c, int err)
{
	const char *why = err ? strerror(err) : "connection closed by the peer";

	if (c->state == CONN_UP)
		peer_down(tt, &tt->peer[c->auth.peer],
			  "connection to node %d lost: %s", c->auth.peer, why);
	else
		hs_fail(tt, c, false, "%s during the handshake", why);
}

/* The rest of a large payload was received in place. */
static ssize_t commit_direct(struct tcp *tt, struct conn *c, ssize_t n)
{
	struct msg m;

	if (msg_decoder_commit(&c->dec, (size_t)n, &m) &&
	    up_msg(tt, &tt->peer[c->auth.peer], &m) < 0)
		return -1;
	return n;
}

/*
 * One recv: into the loop's buffer, or for the rest of a large payload
 * straight into the decoder's (a copy less). Returns the bytes read, 0
 * when there are none now, -1 when @c is gone.
 */
static ssize_t read_some(struct tcp *tt, struct conn *c)
{
	uint8_t *dst = tt->rbuf;
	size_t room = 0;
	bool direct;
	ssize_t n;

	if (c->state == CONN_UP)
		room = msg_decoder_direct(&c->dec, &dst);
	direct = room >= DIRECT_MIN;
	if (!direct) {
		dst = tt->rbuf;
		room = RBUF_SIZE;
	}
	do
		n = recv(c->fd, dst, room, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n <= 0) {
		conn_broken(tt, c, n < 0 ? errno : 0);
		return -1;
	}
	if (c->state == CONN_UP)
		tt->peer[c->auth.peer].last_rx = now_ms();
	if (direct)
		return commit_direct(tt, c, n);
	return conn_feed(tt, c, tt->rbuf, (size_t)n) < 0 ? -1 : n;
}

static void conn_read(struct tcp *tt, struct conn *c)
{
	size_t total = 0;
	ssize_t n;

	while (total < READ_BUDGET) {
		n = read_some(tt, c);
		if (n <= 0)
			return;
		total += (size_t)n;
	}
}

/* ------------------------------------------------------------------ */
/* Dialling and accepting                                              */
/* ------------------------------------------------------------------ */

static void set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* The connection is open: say HELLO and wait for the peer's. */
static int hs_start(struct tcp *tt, struct conn *c)
{
	struct auth_out out;

	c->state = CONN_HANDSHAKE;
	auth_hello(&c->auth, &out);
	return hs_send(tt, c, out.type, out.buf, out.len);
}

static void dial(struct tcp *tt, struct peer *p)
{
	const struct transport_node_addr *a = node_addr(tt, p->id);
	char addr[ADDR_MAX];
	struct conn *c;
	int fd, rc;

	snprintf(addr, sizeof(addr), "%s:%u", a->host, a->port);
	fd = socket(p->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0) {
		dial_failed(tt, p, strerror(errno));
		return;
	}
	set_nodelay(fd);
	c = conn_new(tt, fd, p->id, addr);
	if (!c) {
		close(fd);
		dial_failed(tt, p, strerror(ENOMEM));
		return;
	}
	c->state = CONN_DIALING;
	rc = connect(fd, (struct sockaddr *)&p->sa, p->salen) ? -errno : 0;
	if ((rc && rc != -EINPROGRESS) || conn_watch(tt, c, EPOLLOUT) < 0) {
		dial_failed(tt, p, strerror(rc ? -rc : errno));
		close(fd);
		free(c);
		return;
	}
	p->dialing = c;
}

static void dial_done(struct tcp *tt, struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len))
		err = errno;
	if (err) {
		hs_fail(tt, c, false, "%s", strerror(err));
		return;
	}
	if (hs_start(tt, c) < 0)
		hs_fail(tt, c, false, "cannot send HELLO");
}

static int pending_slot(struct tcp *tt)
{
	int i;

	for (i = 0; i < MAX_PENDING; i++)
		if (!tt->pending[i])
			return i;
	return -1;
}

static void refuse_fd(struct tcp *tt, int fd, const char *addr, const char *why)
{
	stat_add(&tt->auth_failures, 1);
	pr_warn("refused connection from %s: %s", addr, why);
	close(fd);
}

static void accept_one(struct tcp *tt, int fd, const char *addr)
{
	int slot = pending_slot(tt);
	struct conn *c;

	if (slot < 0) {
		refuse_fd(tt, fd, addr, "too many connections in handshake");
		return;
	}
	c = conn_new(tt, fd, -1, addr);
	if (!c) {
		refuse_fd(tt, fd, addr, "out of memory");
		return;
	}
	if (conn_watch(tt, c, EPOLLIN) < 0) {
		refuse_fd(tt, fd, addr, strerror(errno));
		free(c);
		return;
	}
	tt->pending[slot] = c;
	if (hs_start(tt, c) < 0)
		hs_fail(tt, c, false, "cannot send HELLO");
}

static void pause_accepting(struct tcp *tt, int err)
{
	struct epoll_event ev = {.events = 0, .data.ptr = &tt->listen_src};

	pr_warn("cluster: cannot accept connections: %s", strerror(err));
	epoll_ctl(tt->ep, EPOLL_CTL_MOD, tt->listen_fd, &ev);
	tt->accept_paused_until = now_ms() + ACCEPT_PAUSE_MS;
}

static void resume_accepting(struct tcp *tt)
{
	struct epoll_event ev = {.events = EPOLLIN,
				 .data.ptr = &tt->listen_src};

	tt->accept_paused_until = NEVER;
	epoll_ctl(tt->ep, EPOLL_CTL_MOD, tt->listen_fd, &ev);
}

static void on_listen(struct tcp *tt)
{
	struct sockaddr_storage sa;
	socklen_t len;
	char addr[ADDR_MAX];
	int i, fd;

	for (i = 0; i < MAX_PENDING; i++) {
		len = sizeof(sa);
		fd = accept4(tt->listen_fd, (struct sockaddr *)&sa, &len,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM)
				pause_accepting(tt, errno);
			return;
		}
		set_nodelay(fd);
		fmt_sockaddr((struct sockaddr *)&sa, len, addr, sizeof(addr));
		accept_one(tt, fd, addr);
	}
}

/* ------------------------------------------------------------------ */
/* Events and timers                                                   */
/* ------------------------------------------------------------------ */

static void on_conn(struct tcp *tt, struct conn *c, uint32_t events)
{
	struct peer *p;

	if (c->state == CONN_DIALING) {
		dial_done(tt, c);
		return;
	}
	if (events & EPOLLOUT) {
		if (c->state == CONN_UP) {
			p = &tt->peer[c->auth.peer];
			pthread_mutex_lock(&p->lock);
			q_flush(tt, p);
			pthread_mutex_unlock(&p->lock);
		} else {
			int rc = hs_flush(tt, c);

			if (rc < 0) {
				conn_broken(tt, c, -rc);
				return;
			}
		}
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		conn_read(tt, c);
}

static void on_event(struct tcp *tt, struct src *s, uint32_t events)
{
	uint64_t v;

	switch (s->kind) {
	case SRC_LISTEN:
		on_listen(tt);
		break;
	case SRC_WAKE:
		if (read(tt->wake_fd, &v, sizeof(v)) < 0)
			pr_debug("cluster: eventfd read: %s", strerror(errno));
		break;
	case SRC_CONN:
		if (!((struct conn *)s)->dead)
			on_conn(tt, (struct conn *)s, events);
		break;
	}
}

/* An idle peer gets a HEARTBEAT; a failed write takes it down. */
static void peer_tick(struct tcp *tt, struct peer *p, uint64_t now)
{
	const struct transport_config *cfg = &tt->t.cfg;
	int err;

	if (now - p->last_rx >= cfg->dead_after_ms) {
		peer_down(tt, p,
			  "node %d stopped answering (no message for %.1f s)",
			  p->id, (double)(now - p->last_rx) / 1000);
		return;
	}
	pthread_mutex_lock(&p->lock);
	if (!p->head && !p->wr_err && now - p->last_tx >= cfg->heartbeat_ms)
		q_msg(tt, p, MSG_HEARTBEAT, NULL, 0);
	err = p->wr_err;
	pthread_mutex_unlock(&p->lock);
	if (err)
		peer_down(tt, p, "connection to node %d lost: %s", p->id,
			  strerror(err));
}

static void dial_tick(struct tcp *tt, struct peer *p, uint64_t now)
{
	struct conn *c = p->dialing;

	if (c && c->state == CONN_DIALING && now >= tt->give_up)
		hs_fail(tt, c, false, "%s", strerror(ETIMEDOUT));
	else if (!c && p->state == PS_WAITING && now >= p->dial_at &&
		 !tt->flushing)
		dial(tt, p);
}

static void run_timers(struct tcp *tt, uint64_t now)
{
	int i;

	for (i = 0; i < tt->t.cfg.nnodes; i++) {
		struct peer *p = &tt->peer[i];

		if (p->state == PS_UP)
			peer_tick(tt, p, now);
		if (p->dialing && now >= p->dialing->deadline)
			hs_fail(tt, p->dialing, false,
				"no handshake within %u ms",
				tt->t.cfg.handshake_ms);
		if (i < tt->t.cfg.self)
			dial_tick(tt, p, now);
	}
	for (i = 0; i < MAX_PENDING; i++)
		if (tt->pending[i] && now >= tt->pending[i]->deadline)
			hs_fail(tt, tt->pending[i], true,
				"no handshake within %u ms",
				tt->t.cfg.handshake_ms);
	if (now >= tt->accept_paused_until)
		resume_accepting(tt);
}

static uint64_t peer_next(struct tcp *tt, struct peer *p)
{
	const struct transport_config *cfg = &tt->t.cfg;
	uint64_t next = NEVER;

	if (p->state == PS_UP) {
		next = p->last_rx + cfg->dead_after_ms;
		pthread_mutex_lock(&p->lock);
		if (!p->head)
			next = min64(next, p->last_tx + cfg->heartbeat_ms);
		pthread_mutex_unlock(&p->lock);
	}
	if (p->dialing) {
		next = min64(next, p->dialing->deadline);
		if (p->dialing->state == CONN_DIALING)
			next = min64(next, tt->give_up);
	} else if (p->state == PS_WAITING && p->id < cfg->self) {
		next = min64(next, p->dial_at);
	}
	return next;
}

/* Milliseconds until the next timer is due. */
static int next_wakeup(struct tcp *tt, uint64_t now)
{
	uint64_t next = now + IDLE_WAKE_MS;
	int i;

	for (i = 0; i < tt->t.cfg.nnodes; i++)
		next = min64(next, peer_next(tt, &tt->peer[i]));
	for (i = 0; i < MAX_PENDING; i++)
		if (tt->pending[i])
			next = min64(next, tt->pending[i]->deadline);
	next = min64(next, tt->accept_paused_until);
	if (tt->flushing)
		next = min64(next, tt->flush_deadline);
	return next <= now ? 0 : (int)(next - now);
}

/* ------------------------------------------------------------------ */
/* The loop and stopping it                                            */
/* ------------------------------------------------------------------ */

/* destroy began: say goodbye, drop everything not yet up. */
static void begin_flush(struct tcp *tt)
{
	static const char bye[] = "shutting down";
	int i;

	tt->flushing = true;
	tt->flush_deadline = now_ms() + FLUSH_MS;
	epoll_ctl(tt->ep, EPOLL_CTL_DEL, tt->listen_fd, NULL);
	tt->accept_paused_until = NEVER;
	for (i = 0; i < MAX_PENDING; i++)
		if (tt->pending[i])
			conn_close(tt, tt->pending[i]);
	for (i = 0; i < tt->t.cfg.nnodes; i++) {
		struct peer *p = &tt->peer[i];

		if (p->dialing)
			conn_close(tt, p->dialing);
		if (p->state != PS_UP)
			continue;
		pthread_mutex_lock(&p->lock);
		q_msg(tt, p, MSG_GOODBYE, bye, sizeof(bye) - 1);
		pthread_mutex_unlock(&p->lock);
	}
}

static bool flushed(struct tcp *tt)
{
	bool empty = true;
	int i;

	for (i = 0; i < tt->t.cfg.nnodes; i++) {
		struct peer *p = &tt->peer[i];

		pthread_mutex_lock(&p->lock);
		if (p->state == PS_UP && p->head && !p->wr_err)
			empty = false;
		pthread_mutex_unlock(&p->lock);
	}
	return empty || now_ms() >= tt->flush_deadline;
}

static void *loop_main(void *arg)
{
	struct tcp *tt = arg;
	struct epoll_event ev[MAX_EVENTS];
	int i, n;

	__atomic_store_n(&tt->loop_self, pthread_self(), __ATOMIC_RELEASE);
	for (;;) {
		n = epoll_wait(tt->ep, ev, MAX_EVENTS,
			       next_wakeup(tt, now_ms()));
		for (i = 0; i < n; i++)
			on_event(tt, ev[i].data.ptr, ev[i].events);
		run_timers(tt, now_ms());
		bury_dead(tt);
		if (!tt->flushing && is_stopping(tt))
			begin_flush(tt);
		if (tt->flushing && flushed(tt))
			break;
	}
	bury_dead(tt);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Start                                                               */
/* ------------------------------------------------------------------ */

static int resolve(const struct transport_node_addr *a, bool passive,
		   struct sockaddr_storage *sa, socklen_t *len)
{
	struct addrinfo hints = {
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	struct addrinfo *ai;
	char port[8];
	int rc;

	snprintf(port, sizeof(port), "%u", a->port);
	rc = getaddrinfo(a->host, port, &hints, &ai);
	if (rc)
		return rc;
	memcpy(sa, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int resolve_peers(struct tcp *tt, struct err *e)
{
	const struct transport_config *cfg = &tt->t.cfg;
	int i, rc;

	for (i = 0; i < cfg->self; i++) {
		struct peer *p = &tt->peer[i];

		rc = resolve(&cfg->node[i], false, &p->sa, &p->salen);
		if (rc)
			return err_set(e, -EHOSTUNREACH,
				       "cannot resolve node %d host %s: %s", i,
				       cfg->node[i].host, gai_strerror(rc));
	}
	return 0;
}

static int listen_fail(struct tcp *tt, int fd, struct err *e, int err)
{
	const struct transport_node_addr *a = node_addr(tt, tt->t.cfg.self);

	if (fd >= 0)
		close(fd);
	return err_set(e, -err, "cannot listen on %s:%u: %s", a->host, a->port,
		       strerror(err));
}

static int open_listener(struct tcp *tt, struct err *e)
{
	struct transport_node_addr *a = &tt->t.cfg.node[tt->t.cfg.self];
	struct sockaddr_storage sa;
	socklen_t len;
	int fd, one = 1, rc;

	rc = resolve(a, true, &sa, &len);
	if (rc)
		return err_set(e, -EADDRNOTAVAIL, "cannot resolve %s: %s",
			       a->host, gai_strerror(rc));
	fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0)
		return listen_fail(tt, -1, e, errno);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, len) || listen(fd, 64))
		return listen_fail(tt, fd, e, errno);
	len = sizeof(sa);
	if (getsockname(fd, (struct sockaddr *)&sa, &len))
		return listen_fail(tt, fd, e, errno);
	a->port = ntohs(sa.ss_family == AF_INET6 ?
				((struct sockaddr_in6 *)&sa)->sin6_port :
				((struct sockaddr_in *)&sa)->sin_port);
	tt->listen_fd = fd;
	return 0;
}

static int watch_fd(struct tcp *tt, int fd, struct src *s)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};

	return epoll_ctl(tt->ep, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

static int setup_loop(struct tcp *tt, struct err *e)
{
	tt->ep = epoll_create1(EPOLL_CLOEXEC);
	tt->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	tt->rbuf = malloc(RBUF_SIZE);
	if (tt->ep < 0 || tt->wake_fd < 0)
		return err_set(e, -errno, "cluster event loop: %s",
			       strerror(errno));
	if (!tt->rbuf)
		return err_set(e, -ENOMEM, "cluster event loop: %s",
			       strerror(ENOMEM));
	tt->listen_src.kind = SRC_LISTEN;
	tt->wake_src.kind = SRC_WAKE;
	if (watch_fd(tt, tt->listen_fd, &tt->listen_src) ||
	    watch_fd(tt, tt->wake_fd, &tt->wake_src))
		return err_set(e, -errno, "cluster event loop: %s",
			       strerror(errno));
	return 0;
}

static int tcp_start(struct transport *t, struct err *e)
{
	struct tcp *tt = tcp_of(t);
	int i, rc;

	if (tt->started)
		return err_set(e, -EALREADY,
			       "cluster transport already started");
	rc = resolve_peers(tt, e);
	if (!rc)
		rc = open_listener(tt, e);
	if (!rc)
		rc = setup_loop(tt, e);
	if (rc)
		return rc;
	tt->t0 = now_ms();
	tt->give_up = tt->t0 + t->cfg.connect_timeout_ms;
	for (i = 0; i < t->cfg.self; i++)
		tt->peer[i].dial_at = tt->t0;
	rc = pthread_create(&tt->thread, NULL, loop_main, tt);
	if (rc)
		return err_set(e, -rc, "cluster event loop thread: %s",
			       strerror(rc));
	tt->started = true;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Sending, waiting, stats                                             */
/* ------------------------------------------------------------------ */

/* Wait for room in @p's queue (peer lock held); not on the loop thread. */
static void wait_room(struct tcp *tt, struct peer *p)
{
	bool counted = false;

	while (p->state == PS_UP && !p->closing && !p->wr_err &&
	       p->qbytes > tt->t.cfg.sendq_limit) {
		if (!counted)
			stat_add(&p->sendq_waits, 1);
		counted = true;
		p->waiters++;
		pthread_cond_wait(&p->room, &p->lock);
		p->waiters--;
	}
	if (p->closing && !p->waiters)
		pthread_cond_broadcast(&p->room); /* destroy waits for us */
}

static int tcp_send(struct transport *t, int node, uint16_t type,
		    const void *buf, uint32_t len)
{
	struct tcp *tt = tcp_of(t);
	struct peer *p;
	int rc;

	if (node < 0 || node >= t->cfg.nnodes || node == t->cfg.self ||
	    type < MSG_USER_BASE || (len && !buf))
		return -EINVAL;
	if (len > MSG_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (!tt->started)
		return -ENOTCONN;
	p = &tt->peer[node];
	pthread_mutex_lock(&p->lock);
	if (!on_loop_thread(tt))
		wait_room(tt, p);
	if (p->state != PS_UP || p->closing || p->wr_err)
		rc = -ENOTCONN;
	else
		rc = q_msg(tt, p, type, buf, len);
	if (!rc) {
		stat_add(&p->msgs_sent, 1);
		stat_add(&p->bytes_sent, len);
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

static uint32_t peers_mask(const struct transport_config *cfg)
{
	uint32_t all = (cfg->nnodes >= 32 ? ~0u : (1u << cfg->nnodes) - 1);

	return all & ~(1u << cfg->self);
}

static int first_missing(const struct transport_config *cfg, uint32_t up)
{
	int i;

	for (i = 0; i < cfg->nnodes; i++)
		if (i != cfg->self && !(up >> i & 1))
			return i;
	return -1;
}

/* Say why @id is not up (tcp.lock held). */
static int not_connected(struct tcp *tt, int id, struct err *e)
{
	const struct transport_config *cfg = &tt->t.cfg;
	const struct transport_node_addr *a = &cfg->node[id];
	const char *why = tt->peer[id].why;

	if (tt->gone_mask >> id & 1)
		return err_set(e, -ENOTCONN, "node %d went down: %s", id, why);
	if (id < cfg->self)
		return err_set(e, -ETIMEDOUT,
			       "cannot reach node %d at %s:%u: %s", id, a->host,
			       a->port, why[0] ? why : "no answer");
	return err_set(e, -ETIMEDOUT,
		       "node %d (%s:%u) did not connect within %u ms%s%s", id,
		       a->host, a->port, cfg->connect_timeout_ms,
		       why[0] ? "; " : "", why);
}

static int tcp_wait_connected(struct transport *t, struct err *e)
{
	struct tcp *tt = tcp_of(t);
	uint32_t want = peers_mask(&t->cfg);
	uint64_t deadline = tt->t0 + t->cfg.connect_timeout_ms;
	struct timespec ts = {.tv_sec = (time_t)(deadline / 1000),
			      .tv_nsec = (long)(deadline % 1000) * 1000000};
	int rc = 0;

	if (!tt->started)
		return err_set(e, -EINVAL, "cluster transport not started");
	pthread_mutex_lock(&tt->lock);
	while ((tt->up_mask & want) != want && !tt->gone_mask && rc == 0)
		rc = pthread_cond_timedwait(&tt->cond, &tt->lock, &ts);
	rc = 0;
	if ((tt->up_mask & want) != want) {
		int id = tt->gone_mask ? __builtin_ctz(tt->gone_mask) :
					 first_missing(&t->cfg, tt->up_mask);

		rc = not_connected(tt, id, e);
	}
	pthread_mutex_unlock(&tt->lock);
	return rc;
}

static void add_peer_stats(struct peer *p, struct transport_stats *out)
{
	out->msgs_sent += stat_get(&p->msgs_sent);
	out->msgs_recv += stat_get(&p->msgs_recv);
	out->bytes_sent += stat_get(&p->bytes_sent);
	out->bytes_recv += stat_get(&p->bytes_recv);
	out->sendq_waits += stat_get(&p->sendq_waits);
}

static void tcp_get_stats(struct transport *t, int node,
			  struct transport_stats *out)
{
	struct tcp *tt = tcp_of(t);
	int i;

	memset(out, 0, sizeof(*out));
	out->auth_failures = stat_get(&tt->auth_failures);
	if (node >= 0 && node < t->cfg.nnodes && node != t->cfg.self) {
		add_peer_stats(&tt->peer[node], out);
		return;
	}
	for (i = 0; i < t->cfg.nnodes; i++)
		add_peer_stats(&tt->peer[i], out);
}

/* ------------------------------------------------------------------ */
/* Destroy and create                                                  */
/* ------------------------------------------------------------------ */

static void stop_loop(struct tcp *tt)
{
	int i;

	pthread_mutex_lock(&tt->lock);
	tt->stopping = true;
	pthread_mutex_unlock(&tt->lock);
	for (i = 0; i < tt->t.cfg.nnodes; i++) {
		struct peer *p = &tt->peer[i];

		pthread_mutex_lock(&p->lock);
		p->closing = true;
		pthread_cond_broadcast(&p->room);
		while (p->waiters) /* blocked senders leave first */
			pthread_cond_wait(&p->room, &p->lock);
		pthread_mutex_unlock(&p->lock);
	}
	wake_loop(tt);
	pthread_join(tt->thread, NULL);
}

static void close_all(struct tcp *tt)
{
	int i;

	for (i = 0; i < MAX_PENDING; i++)
		if (tt->pending[i])
			conn_close(tt, tt->pending[i]);
	for (i = 0; i < tt->t.cfg.nnodes; i++) {
		struct peer *p = &tt->peer[i];

		if (p->dialing)
			conn_close(tt, p->dialing);
		if (p->conn)
			conn_close(tt, p->conn);
		q_free(p);
		pthread_mutex_destroy(&p->lock);
		pthread_cond_destroy(&p->room);
	}
	bury_dead(tt);
}

static void tcp_destroy(struct transport *t)
{
	struct tcp *tt = tcp_of(t);

	if (on_loop_thread(tt)) { /* joining ourselves would hang */
		pr_err("cluster: transport_destroy called from a callback");
		return;
	}
	if (tt->started)
		stop_loop(tt);
	close_all(tt);
	if (tt->listen_fd >= 0)
		close(tt->listen_fd);
	if (tt->wake_fd >= 0)
		close(tt->wake_fd);
	if (tt->ep >= 0)
		close(tt->ep);
	free(tt->rbuf);
	pthread_mutex_destroy(&tt->lock);
	pthread_cond_destroy(&tt->cond);
	sodium_memzero(tt->acfg.secret, sizeof(tt->acfg.secret));
	sodium_memzero(tt->t.cfg.secret, sizeof(tt->t.cfg.secret));
	free(tt);
}

static const struct transport_engine tcp_engine = {
	.name = "tcp",
	.start = tcp_start,
	.send = tcp_send,
	.wait_connected = tcp_wait_connected,
	.get_stats = tcp_get_stats,
	.destroy = tcp_destroy,
};

static void set_defaults(struct transport_config *cfg)
{
	if (!cfg->heartbeat_ms)
		cfg->heartbeat_ms = DEF_HEARTBEAT_MS;
	if (!cfg->dead_after_ms)
		cfg->dead_after_ms = DEF_DEAD_AFTER_MS;
	if (!cfg->connect_timeout_ms)
		cfg->connect_timeout_ms = DEF_CONNECT_TIMEOUT_MS;
	if (!cfg->sendq_limit)
		cfg->sendq_limit = DEF_SENDQ_LIMIT;
	if (!cfg->handshake_ms)
		cfg->handshake_ms = AUTH_TIMEOUT_MS;
}

static int check_config(const struct transport_config *cfg, struct err *e)
{
	int i;

	if (cfg->nnodes < 1 || cfg->nnodes > CLUSTER_MAX_NODES)
		return err_set(e, -EINVAL, "cluster of %d nodes (1..%d)",
			       cfg->nnodes, CLUSTER_MAX_NODES);
	if (cfg->self < 0 || cfg->self >= cfg->nnodes)
		return err_set(e, -EINVAL, "node id %d out of range (0..%d)",
			       cfg->self, cfg->nnodes - 1);
	if (cfg->secret_len < AUTH_SECRET_MIN ||
	    cfg->secret_len > CLUSTER_SECRET_MAX)
		return err_set(
			e, -EINVAL, "cluster secret of %zu bytes (%d..%d)",
			cfg->secret_len, AUTH_SECRET_MIN, CLUSTER_SECRET_MAX);
	if (cfg->dead_after_ms <= cfg->heartbeat_ms)
		return err_set(
			e, -EINVAL,
			"dead_after_ms (%u) must exceed heartbeat_ms (%u)",
			cfg->dead_after_ms, cfg->heartbeat_ms);
	for (i = 0; i < cfg->nnodes; i++)
		if (!memchr(cfg->node[i].host, '\0',
			    sizeof(cfg->node[i].host)) ||
		    !cfg->node[i].host[0])
			return err_set(e, -EINVAL, "node %d has no host", i);
	return 0;
}

static void init_auth_cfg(struct tcp *tt)
{
	const struct transport_config *cfg = &tt->t.cfg;

	tt->acfg.self = cfg->self;
	tt->acfg.nnodes = cfg->nnodes;
	tt->acfg.version = CLUSTER_PROTO_VERSION;
	memcpy(tt->acfg.cluster_id, cfg->cluster_id, CLUSTER_ID_LEN);
	memcpy(tt->acfg.secret, cfg->secret, cfg->secret_len);
	tt->acfg.secret_len = cfg->secret_len;
}

static void init_peers(struct tcp *tt)
{
	pthread_condattr_t ca;
	int i;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&tt->lock, NULL);
	pthread_cond_init(&tt->cond, &ca);
	pthread_condattr_destroy(&ca);
	for (i = 0; i < tt->t.cfg.nnodes; i++) {
		struct peer *p = &tt->peer[i];

		p->id = i;
		p->fd = -1;
		p->dial_at = NEVER;
		p->backoff = BACKOFF_MIN_MS;
		pthread_mutex_init(&p->lock, NULL);
		pthread_cond_init(&p->room, NULL);
	}
}

int transport_tcp_create(struct transport **out,
			 const struct transport_config *cfg,
			 transport_msg_fn on_msg, transport_peer_fn on_peer,
			 void *opaque, struct err *e)
{
	struct transport_config c = *cfg;
	struct tcp *tt;
	int rc;

	set_defaults(&c);
	rc = check_config(&c, e);
	if (rc)
		return rc;
	if (sodium_init() < 0)
		return err_set(e, -EIO, "libsodium failed to initialise");
	tt = calloc(1, sizeof(*tt));
	if (!tt)
		return err_set(e, -ENOMEM, "out of memory");
	tt->t = (struct transport){.engine = &tcp_engine,
				   .cfg = c,
				   .on_msg = on_msg,
				   .on_peer = on_peer,
				   .opaque = opaque,
				   .priv = tt};
	tt->ep = tt->wake_fd = tt->listen_fd = -1;
	tt->accept_paused_until = NEVER;
	init_auth_cfg(tt);
	init_peers(tt);
	*out = &tt->t;
	return 0;
}
