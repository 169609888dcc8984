/*
 * virtio/rng.c - virtio-rng, the entropy device (virtio 1.2, 5.4): one
 * requestq whose writable buffers the device fills with bytes from the
 * host's getrandom(2), at most RNG_MAX_REQ bytes per buffer. A kick is
 * served on the spot for up to RNG_INLINE_BUDGET requests (no thread hop,
 * so a request costs one wake-up); what is left goes to a worker thread,
 * so a driver that floods the queue costs its own worker, not the
 * transport thread (which may be shared by every device in poll mode).
 *
 * Migration: quiesce sets paused under serve_lock, which every serving
 * pass (its pushes and interrupt included) holds throughout, so once it
 * has the lock nothing is in progress and nothing more is served until
 * resume. The random bytes written into guest buffers are logged with
 * guest_mem_log_write.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "util/log.h"
#include "util/thread.h"
#include "virtio/devices.h"

#define RNG_QUEUE_SIZE 256
#define RNG_MAX_REQ (64 * 1024)
#define RNG_INLINE_BUDGET 16

struct virtio_rng {
	struct virtio_device vd;
	int kick_fd; /* eventfd: the queue was kicked */
	int stop_fd; /* eventfd: worker, stop */
	pthread_t thread;
	bool started;
	bool stop;		    /* atomic */
	pthread_mutex_t serve_lock; /* one server at a time: kick or worker */
	bool broken; /* under serve_lock: asked for NEEDS_RESET */
	bool paused; /* under serve_lock: migration, serve nothing */
	struct vq_chain chain;
	uint64_t bytes; /* handed to the guest (atomic) */
};

static struct virtio_rng *to_rng(struct virtio_device *vd)
{
	return vd->priv;
}

/*
 * Fill the writable part of @c, up to RNG_MAX_REQ; returns the bytes
 * (logged in @mem's write log).
 */
static uint32_t rng_fill(const struct guest_mem *mem, const struct vq_chain *c)
{
	uint32_t done = 0;

	for (unsigned int i = c->n_out; i < c->n_out + c->n_in; i++) {
		uint8_t *p = c->iov[i].iov_base;
		size_t len = c->iov[i].iov_len;

		if (len > RNG_MAX_REQ - done)
			len = RNG_MAX_REQ - done;
		while (len) {
			ssize_t r = getrandom(p, len, 0);

			if (r < 0) {
				if (errno == EINTR)
					continue;
				return done;
			}
			guest_mem_log_write(mem, p, r);
			p += r;
			len -= r;
			done += r;
		}
		if (done >= RNG_MAX_REQ)
			break;
	}
	return done;
}

/*
 * Fill up to @budget requests, with serve_lock held. Returns true when it
 * stopped because the budget ran out (there may be more).
 */
static bool rng_serve(struct virtio_rng *r, unsigned int budget)
{
	struct virtqueue *vq = &r->vd.vq[0];
	char why[sizeof(vq->error)];
	bool pushed = false, more = false;

	while (!r->broken && !r->paused &&
	       !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		uint32_t len;
		int rc;

		pthread_mutex_lock(&vq->lock);
		rc = vq_pop(vq, &r->chain);
		if (rc < 0)
			snprintf(why, sizeof(why), "%.*s",
				 (int)sizeof(vq->error), vq->error);
		pthread_mutex_unlock(&vq->lock);
		if (rc < 0) {
			r->broken = true;
			virtio_set_needs_reset(&r->vd, "%s", why);
			break;
		}
		if (rc == 0)
			break;
		if (r->chain.in_bytes == 0) {
			r->broken = true;
			virtio_set_needs_reset(&r->vd,
					       "buffer %u has no "
					       "writable part",
					       r->chain.head);
			break;
		}
		len = rng_fill(r->vd.mem, &r->chain);
		__atomic_fetch_add(&r->bytes, len, __ATOMIC_RELAXED);
		pthread_mutex_lock(&vq->lock);
		vq_push(vq, r->chain.head, len);
		pthread_mutex_unlock(&vq->lock);
		pushed = true;
		if (--budget == 0) {
			more = true;
			break;
		}
	}
	if (pushed)
		virtio_queue_done(&r->vd, 0);
	return more;
}

static void *rng_thread(void *arg)
{
	struct virtio_rng *r = arg;

	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		struct pollfd p[2] = {
			{.fd = r->stop_fd, .events = POLLIN},
			{.fd = r->broken ? -1 : r->kick_fd, .events = POLLIN},
		};

		pthread_mutex_lock(&r->serve_lock);
		rng_serve(r, UINT32_MAX);
		p[1].fd = r->broken ? -1 : r->kick_fd;
		pthread_mutex_unlock(&r->serve_lock);
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			pr_err("%s: poll: %s", r->vd.name, strerror(errno));
			break;
		}
		if (p[0].revents)
			break;
		if (p[1].revents)
			eventfd_drain(r->kick_fd);
	}
	return NULL;
}

static uint64_t rng_features(struct virtio_device *vd)
{
	(void)vd;
	return 0;
}

static void rng_config_read(struct virtio_device *vd, uint32_t off, void *buf,
			    uint32_t len)
{
	(void)vd;
	(void)off;
	memset(buf, 0, len);
}

static void rng_config_write(struct virtio_device *vd, uint32_t off,
			     const void *buf, uint32_t len)
{
	(void)vd;
	(void)off;
	(void)buf;
	(void)len;
}

static void rng_queue_kick(struct virtio_device *vd, uint16_t q)
{
	struct virtio_rng *r = to_rng(vd);
	uint64_t one = 1;

	if (q != 0)
		return;
	/* Serve it here unless the worker is busy or there is too much. */
	if (pthread_mutex_trylock(&r->serve_lock) == 0) {
		bool more = r->started && rng_serve(r, RNG_INLINE_BUDGET);

		pthread_mutex_unlock(&r->serve_lock);
		if (!more)
			return;
	}
	if (write(r->kick_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_warn("%s: eventfd: %s", vd->name, strerror(errno));
}

static int rng_activate(struct virtio_device *vd)
{
	struct virtio_rng *r = to_rng(vd);
	int rc;

	if (r->started)
		return 0;
	r->broken = false;
	rc = thread_start_nosignals(&r->thread, rng_thread, r);
	if (rc) {
		pr_err("%s: cannot start the worker thread: %s", vd->name,
		       strerror(-rc));
		return rc;
	}
	r->started = true;
	return 0;
}

static void rng_stop(struct virtio_rng *r)
{
	uint64_t one = 1;

	if (!r->started)
		return;
	__atomic_store_n(&r->stop, true, __ATOMIC_RELEASE);
	if (write(r->stop_fd, &one, sizeof(one)) < 0)
		pr_warn("%s: eventfd: %s", r->vd.name, strerror(errno));
	pthread_join(r->thread, NULL);
	/* Wait out a kick that is serving inline right now. */
	pthread_mutex_lock(&r->serve_lock);
	r->started = false;
	pthread_mutex_unlock(&r->serve_lock);
	__atomic_store_n(&r->stop, false, __ATOMIC_RELEASE);
	eventfd_drain(r->stop_fd);
	eventfd_drain(r->kick_fd);
	r->broken = false;
}

static void rng_reset(struct virtio_device *vd)
{
	rng_stop(to_rng(vd));
}

static void rng_quiesce(struct virtio_device *vd)
{
	struct virtio_rng *r = to_rng(vd);

	/* Waits for a serving pass (kick or worker) to finish. */
	pthread_mutex_lock(&r->serve_lock);
	r->paused = true;
	pthread_mutex_unlock(&r->serve_lock);
}

static void rng_resume(struct virtio_device *vd)
{
	struct virtio_rng *r = to_rng(vd);
	uint64_t one = 1;

	pthread_mutex_lock(&r->serve_lock);
	r->paused = false;
	pthread_mutex_unlock(&r->serve_lock);
	/* Requests may have come meanwhile: the worker looks. */
	if (r->started && write(r->kick_fd, &one, sizeof(one)) < 0 &&
	    errno != EAGAIN)
		pr_warn("%s: eventfd: %s", vd->name, strerror(errno));
}

static const struct virtio_device_ops rng_ops = {
	.features = rng_features,
	.config_read = rng_config_read,
	.config_write = rng_config_write,
	.queue_kick = rng_queue_kick,
	.activate = rng_activate,
	.reset = rng_reset,
	.quiesce = rng_quiesce,
	.resume = rng_resume,
};

int virtio_rng_create(struct virtio_rng **out, const struct guest_mem *mem,
		      struct err *e)
{
	struct virtio_rng *r;
	int rc;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return err_set(e, -ENOMEM, "virtio-rng: out of memory");
	pthread_mutex_init(&r->serve_lock, NULL);
	r->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	r->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (r->kick_fd < 0 || r->stop_fd < 0) {
		rc = err_set(e, -errno, "virtio-rng: eventfd: %s",
			     strerror(errno));
		goto fail;
	}
	rc = virtio_device_init(&r->vd, "virtio-rng", VIRTIO_ID_RNG, 1,
				RNG_QUEUE_SIZE, 0, &rng_ops, r, mem);
	if (rc) {
		err_set(e, rc, "virtio-rng: device init failed: %s",
			strerror(-rc));
		goto fail;
	}
	*out = r;
	return 0;

fail:
	if (r->kick_fd >= 0)
		close(r->kick_fd);
	if (r->stop_fd >= 0)
		close(r->stop_fd);
	pthread_mutex_destroy(&r->serve_lock);
	free(r);
	return rc;
}

struct virtio_device *virtio_rng_device(struct virtio_rng *r)
{
	return &r->vd;
}

void virtio_rng_destroy(struct virtio_rng *r)
{
	if (!r)
		return;
	rng_stop(r);
	virtio_device_destroy(&r->vd);
	close(r->kick_fd);
	close(r->stop_fd);
	pthread_mutex_destroy(&r->serve_lock);
	free(r);
}
