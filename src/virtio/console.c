/*
 * virtio/console.c - virtio-console (virtio 1.2, 5.3) with a single port
 * and no MULTIPORT: receiveq (0) carries host input to the guest,
 * transmitq (1) the guest's output. One worker thread serves both queues:
 * queue_kick only signals its eventfd, so a slow or stopped output (a
 * terminal on ^S, a full pipe) never holds up the transport thread.
 *
 * Output goes to out_fd in chunks of at most PIPE_BUF bytes, each after
 * poll() said POLLOUT, so the thread stays stoppable on blocking pipes;
 * partial writes are continued, EAGAIN waits, any other error drops the
 * rest of that buffer. Input (in_fd >= 0) is read straight into the
 * receive buffer the worker holds, only after poll() said POLLIN; at end
 * of file the input side stops.
 *
 * Migration: quiesce asks the worker to park (pause, through ctl_fd) and
 * waits until it did (parked, pcond). It finishes the output chunk it is
 * writing, then gives back (vq_unpop) the receive buffer it holds and a
 * transmit chain it has not written out completely: output may be stuck
 * for good (a full pipe, a terminal on ^S), and Linux's hvc driver spins
 * until its transmit buffer comes back, so the chain must stay the
 * driver's rather than be held across a migration. Resumed here, the
 * worker takes the same chain again and goes on where it stopped; on the
 * destination the whole chain goes to that side's output. Input bytes
 * written into guest buffers are logged with guest_mem_log_write.
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/log.h"
#include "util/thread.h"
#include "virtio/devices.h"

#define CON_QUEUE_SIZE 256
#define CON_RXQ 0
#define CON_TXQ 1

/* Device configuration layout (5.3.4), little-endian. */
struct virtio_console_config {
	uint16_t cols;
	uint16_t rows;
	uint32_t max_nr_ports;
	uint32_t emerg_wr;
} __attribute__((packed));

_Static_assert(sizeof(struct virtio_console_config) == 12,
	       "virtio_console_config layout");

struct virtio_console {
	struct virtio_device vd;
	int out_fd;
	int in_fd;   /* -1: no input */
	int kick_fd; /* eventfd: a queue was kicked */
	int ctl_fd;  /* eventfd: worker, look at stop and pause */

	pthread_t thread;
	bool started;
	bool stop;	       /* atomic */
	pthread_mutex_t plock; /* pause, parked, exited */
	pthread_cond_t pcond;
	bool pause;   /* worker: park, touch no ring */
	bool parked;  /* ... and it does */
	bool exited;  /* it ended on an error of its own */
	bool broken;  /* worker only: asked for NEEDS_RESET */
	bool in_eof;  /* input ended or failed for good */
	bool rx_have; /* worker holds rx_chain */
	bool tx_have; /* worker holds tx_chain, tx_off bytes out */
	uint64_t tx_off;
	bool tx_given_back; /* tx_back_head was given back, tx_back_off out */
	uint16_t tx_back_head;
	uint64_t tx_back_off;
	struct vq_chain rx_chain;
	struct vq_chain tx_chain;
	uint64_t tx_dropped; /* bytes that could not be written */
};

static struct virtio_console *to_con(struct virtio_device *vd)
{
	return vd->priv;
}

static bool con_stopping(struct virtio_console *c)
{
	return __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE);
}

/* Pop from @q; on a broken ring report it and return -1. */
static int con_pop(struct virtio_console *c, uint16_t q, struct vq_chain *ch)
{
	struct virtqueue *vq = &c->vd.vq[q];
	char why[sizeof(vq->error) + 16];
	int r;

	pthread_mutex_lock(&vq->lock);
	r = vq_pop(vq, ch);
	if (r < 0)
		snprintf(why, sizeof(why), "%s: %.*s",
			 q == CON_RXQ ? "receiveq" : "transmitq",
			 (int)sizeof(vq->error), vq->error);
	pthread_mutex_unlock(&vq->lock);
	if (r < 0) {
		c->broken = true;
		virtio_set_needs_reset(&c->vd, "%s", why);
	}
	return r;
}

static void con_push(struct virtio_console *c, uint16_t q, uint16_t head,
		     uint32_t len)
{
	struct virtqueue *vq = &c->vd.vq[q];

	pthread_mutex_lock(&vq->lock);
	vq_push(vq, head, len);
	pthread_mutex_unlock(&vq->lock);
}

enum con_wake { CON_READY, CON_CTL, CON_FATAL };

/* ctl_fd was readable: drain it; the caller looks at stop and pause. */
static enum con_wake con_ctl(struct virtio_console *c)
{
	eventfd_drain(c->ctl_fd);
	return CON_CTL;
}

/*
 * Write the rest of the readable part of tx_chain (from tx_off) to out_fd.
 * CON_CTL: interrupted between chunks (stop or pause asked), the chain is
 * still held; CON_FATAL: the worker cannot go on.
 */
static enum con_wake con_write_chain(struct virtio_console *c)
{
	const struct vq_chain *ch = &c->tx_chain;

	while (c->tx_off < ch->out_bytes) {
		struct pollfd p[2] = {
			{.fd = c->ctl_fd, .events = POLLIN},
			{.fd = c->out_fd, .events = POLLOUT},
		};
		uint64_t skip = c->tx_off;
		const uint8_t *buf = NULL;
		size_t chunk = 0;
		ssize_t w;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			pr_err("%s: poll: %s", c->vd.name, strerror(errno));
			return CON_FATAL;
		}
		if (p[0].revents)
			return con_ctl(c);
		if (!p[1].revents)
			continue;
		for (unsigned int i = 0; i < ch->n_out; i++) {
			if (skip >= ch->iov[i].iov_len) {
				skip -= ch->iov[i].iov_len;
				continue;
			}
			buf = (const uint8_t *)ch->iov[i].iov_base + skip;
			chunk = ch->iov[i].iov_len - skip;
			break;
		}
		if (!chunk)
			break; /* out_bytes is the segments' sum: not reached */
		if (chunk > PIPE_BUF)
			chunk = PIPE_BUF;
		w = write(c->out_fd, buf, chunk);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			/* EPIPE and friends: nobody reads; drop the rest. */
			c->tx_dropped += ch->out_bytes - c->tx_off;
			c->tx_off = ch->out_bytes;
			break;
		}
		c->tx_off += w;
	}
	return CON_READY;
}

/*
 * Send everything the driver queued. CON_CTL when a stop or pause request
 * came first (a chain may still be held), CON_FATAL when the worker cannot
 * go on.
 */
static enum con_wake con_tx(struct virtio_console *c)
{
	struct vq_chain *ch = &c->tx_chain;
	enum con_wake w = CON_READY;
	bool pushed = false;

	while (!c->broken) {
		if (!c->tx_have) {
			if (con_pop(c, CON_TXQ, ch) <= 0)
				break;
			c->tx_have = true;
			c->tx_off = 0;
			/* The chain we gave back at a pause: go on. */
			if (c->tx_given_back && ch->head == c->tx_back_head)
				c->tx_off = c->tx_back_off;
			c->tx_given_back = false;
		}
		w = con_write_chain(c);
		if (w != CON_READY)
			break;
		c->tx_have = false;
		con_push(c, CON_TXQ, ch->head, 0);
		pushed = true;
	}
	if (pushed)
		virtio_queue_done(&c->vd, CON_TXQ);
	return w;
}

/* Hold a receive buffer if input is possible and the driver gave one. */
static void con_rx_get(struct virtio_console *c)
{
	if (c->in_fd < 0 || c->in_eof || c->rx_have || c->broken)
		return;
	if (con_pop(c, CON_RXQ, &c->rx_chain) <= 0)
		return;
	if (c->rx_chain.in_bytes == 0) {
		c->broken = true;
		virtio_set_needs_reset(&c->vd,
				       "receiveq: buffer %u has no "
				       "writable part",
				       c->rx_chain.head);
		return;
	}
	c->rx_have = true;
}

static void con_rx_read(struct virtio_console *c)
{
	struct vq_chain *ch = &c->rx_chain;
	ssize_t r;

	r = readv(c->in_fd, &ch->iov[ch->n_out], ch->n_in);
	if (r < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return;
		pr_warn("%s: input: %s; input stops", c->vd.name,
			strerror(errno));
		c->in_eof = true;
		return;
	}
	if (r == 0) {
		c->in_eof = true;
		return;
	}
	virtio_log_chain_write(c->vd.mem, ch, 0, (uint64_t)r);
	con_push(c, CON_RXQ, ch->head, r);
	c->rx_have = false;
	virtio_queue_done(&c->vd, CON_RXQ);
}

static bool con_pause_wanted(struct virtio_console *c)
{
	bool p;

	pthread_mutex_lock(&c->plock);
	p = c->pause;
	pthread_mutex_unlock(&c->plock);
	return p;
}

/* Give back the chains held, say so, wait until resumed or stopped. */
static void con_park(struct virtio_console *c)
{
	if (c->rx_have) {
		pthread_mutex_lock(&c->vd.vq[CON_RXQ].lock);
		vq_unpop(&c->vd.vq[CON_RXQ]);
		pthread_mutex_unlock(&c->vd.vq[CON_RXQ].lock);
		c->rx_have = false;
	}
	if (c->tx_have) {
		pthread_mutex_lock(&c->vd.vq[CON_TXQ].lock);
		vq_unpop(&c->vd.vq[CON_TXQ]);
		pthread_mutex_unlock(&c->vd.vq[CON_TXQ].lock);
		c->tx_have = false;
		c->tx_given_back = true;
		c->tx_back_head = c->tx_chain.head;
		c->tx_back_off = c->tx_off;
	}
	pthread_mutex_lock(&c->plock);
	c->parked = true;
	pthread_cond_broadcast(&c->pcond);
	while (c->pause && !con_stopping(c))
		pthread_cond_wait(&c->pcond, &c->plock);
	c->parked = false;
	pthread_mutex_unlock(&c->plock);
}

static void *con_thread(void *arg)
{
	struct virtio_console *c = arg;

	while (!con_stopping(c)) {
		struct pollfd p[3] = {
			{.fd = c->ctl_fd, .events = POLLIN},
			{.fd = c->kick_fd, .events = POLLIN},
			{.fd = -1, .events = POLLIN},
		};
		enum con_wake w = CON_READY;

		if (con_pause_wanted(c)) {
			con_park(c);
			continue;
		}
		if (!c->broken)
			w = con_tx(c);
		if (w == CON_FATAL)
			break;
		if (w == CON_CTL)
			continue;
		con_rx_get(c);
		if (c->rx_have && !c->in_eof && !c->broken)
			p[2].fd = c->in_fd;
		if (c->broken)
			p[1].fd = -1;
		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			pr_err("%s: poll: %s", c->vd.name, strerror(errno));
			break;
		}
		if (p[0].revents) {
			con_ctl(c);
			continue;
		}
		if (p[1].revents)
			eventfd_drain(c->kick_fd);
		if (p[2].revents)
			con_rx_read(c);
	}
	pthread_mutex_lock(&c->plock);
	c->exited = true;
	pthread_cond_broadcast(&c->pcond);
	pthread_mutex_unlock(&c->plock);
	return NULL;
}

static uint64_t con_features(struct virtio_device *vd)
{
	(void)vd;
	return 0;
}

static void con_config_read(struct virtio_device *vd, uint32_t off, void *buf,
			    uint32_t len)
{
	struct virtio_console_config cfg;

	(void)vd;
	memset(&cfg, 0, sizeof(cfg));
	cfg.max_nr_ports = htole32(1);
	memset(buf, 0, len);
	if (off < sizeof(cfg))
		memcpy(buf, (uint8_t *)&cfg + off,
		       len < sizeof(cfg) - off ? len : sizeof(cfg) - off);
}

static void con_config_write(struct virtio_device *vd, uint32_t off,
			     const void *buf, uint32_t len)
{
	/* emerg_wr needs VIRTIO_CONSOLE_F_EMERG_WRITE, not offered. */
	(void)vd;
	(void)off;
	(void)buf;
	(void)len;
}

static void con_signal(struct virtio_console *c, int fd)
{
	uint64_t one = 1;

	if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_warn("%s: eventfd: %s", c->vd.name, strerror(errno));
}

static void con_queue_kick(struct virtio_device *vd, uint16_t q)
{
	struct virtio_console *c = to_con(vd);

	if (q > CON_TXQ)
		return;
	con_signal(c, c->kick_fd);
}

static int con_activate(struct virtio_device *vd)
{
	struct virtio_console *c = to_con(vd);
	int rc;

	if (c->started)
		return 0;
	c->broken = false;
	c->rx_have = false;
	c->tx_have = false;
	c->tx_given_back = false;
	c->exited = false;
	rc = thread_start_nosignals(&c->thread, con_thread, c);
	if (rc) {
		pr_err("%s: cannot start the worker thread: %s", vd->name,
		       strerror(-rc));
		return rc;
	}
	c->started = true;
	return 0;
}

static void con_stop(struct virtio_console *c)
{
	if (!c->started)
		return;
	pthread_mutex_lock(&c->plock);
	__atomic_store_n(&c->stop, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&c->pcond);
	pthread_mutex_unlock(&c->plock);
	con_signal(c, c->ctl_fd);
	pthread_join(c->thread, NULL);
	c->started = false;
	__atomic_store_n(&c->stop, false, __ATOMIC_RELEASE);
	eventfd_drain(c->ctl_fd);
	eventfd_drain(c->kick_fd);
	c->rx_have = false;
	c->tx_have = false;
	c->tx_given_back = false;
	c->broken = false;
}

static void con_reset(struct virtio_device *vd)
{
	con_stop(to_con(vd));
}

/* Park the worker (or have it park as soon as it starts). */
static void con_quiesce(struct virtio_device *vd)
{
	struct virtio_console *c = to_con(vd);

	pthread_mutex_lock(&c->plock);
	c->pause = true;
	pthread_mutex_unlock(&c->plock);
	if (!c->started)
		return;
	con_signal(c, c->ctl_fd);
	pthread_mutex_lock(&c->plock);
	while (!c->parked && !c->exited)
		pthread_cond_wait(&c->pcond, &c->plock);
	pthread_mutex_unlock(&c->plock);
}

/* The worker looks at both queues again as it leaves its park. */
static void con_resume(struct virtio_device *vd)
{
	struct virtio_console *c = to_con(vd);

	pthread_mutex_lock(&c->plock);
	c->pause = false;
	pthread_cond_broadcast(&c->pcond);
	pthread_mutex_unlock(&c->plock);
}

static const struct virtio_device_ops con_ops = {
	.features = con_features,
	.config_read = con_config_read,
	.config_write = con_config_write,
	.queue_kick = con_queue_kick,
	.activate = con_activate,
	.reset = con_reset,
	.quiesce = con_quiesce,
	.resume = con_resume,
};

int virtio_console_create(struct virtio_console **out,
			  const struct guest_mem *mem, int out_fd, int in_fd,
			  struct err *e)
{
	struct virtio_console *c;
	int rc;

	*out = NULL;
	if (out_fd < 0)
		return err_set(e, -EINVAL, "virtio-console: no output fd");
	c = calloc(1, sizeof(*c));
	if (!c)
		return err_set(e, -ENOMEM, "virtio-console: out of memory");
	c->out_fd = out_fd;
	c->in_fd = in_fd < 0 ? -1 : in_fd;
	c->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	c->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_init(&c->plock, NULL);
	pthread_cond_init(&c->pcond, NULL);
	if (c->kick_fd < 0 || c->ctl_fd < 0) {
		rc = err_set(e, -errno, "virtio-console: eventfd: %s",
			     strerror(errno));
		goto fail;
	}
	rc = virtio_device_init(
		&c->vd, "virtio-console", VIRTIO_ID_CONSOLE, 2, CON_QUEUE_SIZE,
		sizeof(struct virtio_console_config), &con_ops, c, mem);
	if (rc) {
		err_set(e, rc, "virtio-console: device init failed: %s",
			strerror(-rc));
		goto fail;
	}
	*out = c;
	return 0;

fail:
	if (c->kick_fd >= 0)
		close(c->kick_fd);
	if (c->ctl_fd >= 0)
		close(c->ctl_fd);
	pthread_cond_destroy(&c->pcond);
	pthread_mutex_destroy(&c->plock);
	free(c);
	return rc;
}

struct virtio_device *virtio_console_device(struct virtio_console *c)
{
	return &c->vd;
}

void virtio_console_destroy(struct virtio_console *c)
{
	if (!c)
		return;
	con_stop(c);
	virtio_device_destroy(&c->vd);
	close(c->kick_fd);
	close(c->ctl_fd);
	pthread_cond_destroy(&c->pcond);
	pthread_mutex_destroy(&c->plock);
	free(c);
}
