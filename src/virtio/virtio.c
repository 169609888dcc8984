/*
 * virtio/virtio.c - the transport-independent part of a virtio device: its
 * lock and queues, the interrupt decision after used entries were pushed,
 * and NEEDS_RESET, where a device goes when the driver breaks the rules.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/log.h"
#include "virtio/virtio.h"

static bool valid_params(const char *name, uint16_t num_queues,
			 uint16_t queue_size_max,
			 const struct virtio_device_ops *ops)
{
	return name && ops && num_queues >= 1 &&
	       num_queues <= VIRTIO_MAX_QUEUES && queue_size_max >= 1 &&
	       queue_size_max <= VQ_MAX_SIZE &&
	       !(queue_size_max & (queue_size_max - 1));
}

int virtio_device_init(struct virtio_device *vd, const char *name,
		       uint16_t device_id, uint16_t num_queues,
		       uint16_t queue_size_max, uint32_t config_size,
		       const struct virtio_device_ops *ops, void *priv,
		       const struct guest_mem *mem)
{
	int rc;

	if (!valid_params(name, num_queues, queue_size_max, ops))
		return -EINVAL;
	memset(vd, 0, sizeof(*vd));
	vd->name = name;
	vd->device_id = device_id;
	vd->num_queues = num_queues;
	vd->queue_size_max = queue_size_max;
	vd->config_size = config_size;
	vd->ops = ops;
	vd->priv = priv;
	vd->mem = mem;
	rc = pthread_mutex_init(&vd->lock, NULL);
	if (rc)
		return -rc;
	for (int i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		rc = vq_init(&vd->vq[i]);
		if (rc) {
			while (i--)
				vq_destroy(&vd->vq[i]);
			pthread_mutex_destroy(&vd->lock);
			return rc;
		}
	}
	return 0;
}

void virtio_device_destroy(struct virtio_device *vd)
{
	for (int i = 0; i < VIRTIO_MAX_QUEUES; i++)
		vq_destroy(&vd->vq[i]);
	pthread_mutex_destroy(&vd->lock);
}

/*
 * Callers must not hold vq->lock (see virtio.h). The lock is
 * error-checking, so a caller that does gets EDEADLK instead of a hang:
 * the decision is then still made under its lock, and not unlocked here.
 */
void virtio_queue_done(struct virtio_device *vd, uint16_t q)
{
	struct virtqueue *vq;
	bool notify;
	int rc;

	if (q >= vd->num_queues)
		return;
	vq = &vd->vq[q];
	rc = pthread_mutex_lock(&vq->lock);
	notify = vq_should_interrupt(vq);
	if (rc == 0)
		pthread_mutex_unlock(&vq->lock);
	if (notify && vd->transport.notify_queue)
		vd->transport.notify_queue(vd->transport.opaque, q);
}

/* Sets NEEDS_RESET; returns the status before, or -1 if it was set. */
static int mark_needs_reset(struct virtio_device *vd)
{
	int old;

	pthread_mutex_lock(&vd->lock);
	old = vd->status;
	vd->status |= VIRTIO_STATUS_NEEDS_RESET;
	pthread_mutex_unlock(&vd->lock);
	return (old & VIRTIO_STATUS_NEEDS_RESET) ? -1 : old;
}

void virtio_set_needs_reset(struct virtio_device *vd, const char *fmt, ...)
{
	char reason[256];
	va_list ap;
	int old = mark_needs_reset(vd);

	if (old < 0)
		return; /* already reported since the last reset */
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	pr_err("%s: %s; device needs reset", vd->name, reason);
	if ((old & VIRTIO_STATUS_DRIVER_OK) && vd->transport.notify_config)
		vd->transport.notify_config(vd->transport.opaque);
}

bool virtio_needs_reset(struct virtio_device *vd)
{
	bool set;

	pthread_mutex_lock(&vd->lock);
	set = vd->status & VIRTIO_STATUS_NEEDS_RESET;
	pthread_mutex_unlock(&vd->lock);
	return set;
}
