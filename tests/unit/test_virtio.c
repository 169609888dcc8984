/*
 * tests/unit/test_virtio.c - the transport-independent device model:
 * init argument checks, NEEDS_RESET (one log line and one configuration
 * interrupt per reset cycle, none before DRIVER_OK), and
 * virtio_queue_done notifying according to NO_INTERRUPT / EVENT_IDX,
 * without holding the virtqueue lock.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/guest_mem.h"
#include "virtio/virtio.h"

#define RAM (16ULL << 20)
#define DESC_GPA 0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA 0x30000ULL
#define BUF_GPA 0x100000ULL
#define QSIZE 8

struct env {
	struct guest_mem mem;
	struct virtio_device vd;
	int config_irqs;
	int queue_irqs[VIRTIO_MAX_QUEUES];
	int vq_locked_in_notify; /* notify_queue found vq->lock taken */
	uint16_t avail_idx;
};

static const struct virtio_device_ops no_ops;

static void fake_notify_queue(void *opaque, uint16_t q)
{
	struct env *e = opaque;
	pthread_mutex_t *lock = &e->vd.vq[q].lock;

	/* the rule: notify_queue runs with no virtqueue lock held */
	if (pthread_mutex_trylock(lock) == 0)
		pthread_mutex_unlock(lock);
	else
		e->vq_locked_in_notify++;
	e->queue_irqs[q]++;
}

static void fake_notify_config(void *opaque)
{
	struct env *e = opaque;

	e->config_irqs++;
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	assert_int_equal(guest_mem_alloc(&e->mem, RAM), 0);
	assert_int_equal(virtio_device_init(&e->vd, "virtio-blk0",
					    VIRTIO_ID_BLOCK, 2, 256, 60,
					    &no_ops, e, &e->mem),
			 0);
	e->vd.transport = (struct virtio_transport){
		.notify_queue = fake_notify_queue,
		.notify_config = fake_notify_config,
		.opaque = e,
	};
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	virtio_device_destroy(&e->vd);
	guest_mem_free(&e->mem);
	free(e);
	return 0;
}

static void test_init_checks(void **state)
{
	struct env *e = *state;
	struct virtio_device vd;

	assert_int_equal(virtio_device_init(&vd, "x", 1, 0, 256, 0, &no_ops,
					    NULL, &e->mem),
			 -EINVAL);
	assert_int_equal(virtio_device_init(&vd, "x", 1, VIRTIO_MAX_QUEUES + 1,
					    256, 0, &no_ops, NULL, &e->mem),
			 -EINVAL);
	assert_int_equal(virtio_device_init(&vd, "x", 1, 1, 100, 0, &no_ops,
					    NULL, &e->mem),
			 -EINVAL);
	assert_int_equal(virtio_device_init(&vd, "x", 1, 1, 2 * VQ_MAX_SIZE, 0,
					    &no_ops, NULL, &e->mem),
			 -EINVAL);
	assert_int_equal(
		virtio_device_init(&vd, "x", 1, 1, 256, 0, NULL, NULL, &e->mem),
		-EINVAL);
	assert_int_equal(virtio_device_init(&vd, NULL, 1, 1, 256, 0, &no_ops,
					    NULL, &e->mem),
			 -EINVAL);
	assert_int_equal(virtio_device_init(&vd, "x", 4, VIRTIO_MAX_QUEUES,
					    VQ_MAX_SIZE, 8, &no_ops, NULL,
					    &e->mem),
			 0);
	for (int i = 0; i < VIRTIO_MAX_QUEUES; i++)
		assert_false(vd.vq[i].enabled);
	assert_int_equal(vd.status, 0);
	virtio_device_destroy(&vd);
	assert_string_equal(e->vd.name, "virtio-blk0");
	assert_int_equal(e->vd.num_queues, 2);
}

/* ---- stderr capture ---- */

struct capture {
	FILE *f;
	int saved;
};

static void capture_start(struct capture *c)
{
	fflush(stderr);
	c->f = tmpfile();
	assert_non_null(c->f);
	c->saved = dup(STDERR_FILENO);
	assert_true(c->saved >= 0);
	assert_true(dup2(fileno(c->f), STDERR_FILENO) >= 0);
}

/* Stop capturing; the text goes to @buf. */
static void capture_stop(struct capture *c, char *buf, size_t size)
{
	size_t n;

	fflush(stderr);
	assert_true(dup2(c->saved, STDERR_FILENO) >= 0);
	close(c->saved);
	rewind(c->f);
	n = fread(buf, 1, size - 1, c->f);
	buf[n] = '\0';
	fclose(c->f);
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void test_needs_reset_once(void **state)
{
	struct env *e = *state;
	struct capture cap;
	char out[1024];

	e->vd.status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
		       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	assert_false(virtio_needs_reset(&e->vd));
	capture_start(&cap);
	virtio_set_needs_reset(&e->vd, "descriptor %d: next %d out of range", 5,
			       300);
	virtio_set_needs_reset(&e->vd, "second problem");
	virtio_set_needs_reset(&e->vd, "third problem");
	capture_stop(&cap, out, sizeof(out));
	assert_string_equal(out, "dvmm: virtio-blk0: descriptor 5: next 300 "
				 "out of range; device needs reset\n");
	assert_true(virtio_needs_reset(&e->vd));
	assert_true(e->vd.status & VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(e->config_irqs, 1);

	/* the driver resets the device (status 0) and brings it up again */
	e->vd.status = 0;
	assert_false(virtio_needs_reset(&e->vd));
	e->vd.status = VIRTIO_STATUS_DRIVER_OK;
	capture_start(&cap);
	virtio_set_needs_reset(&e->vd, "again");
	virtio_set_needs_reset(&e->vd, "and again");
	capture_stop(&cap, out, sizeof(out));
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, "virtio-blk0: again; device needs reset"));
	assert_int_equal(e->config_irqs, 2);
}

static void test_needs_reset_before_driver_ok(void **state)
{
	struct env *e = *state;
	struct capture cap;
	char out[1024];

	e->vd.status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
	capture_start(&cap);
	virtio_set_needs_reset(&e->vd, "early");
	capture_stop(&cap, out, sizeof(out));
	assert_int_equal(count_lines(out), 1);
	assert_true(virtio_needs_reset(&e->vd));
	assert_int_equal(e->config_irqs, 0); /* 2.1.2: only with DRIVER_OK */
}

/* ---- virtio_queue_done ---- */

static void *gp(struct env *e, uint64_t gpa)
{
	void *p = guest_mem_ptr(&e->mem, gpa, 1);

	assert_non_null(p);
	return p;
}

static void put16(struct env *e, uint64_t gpa, uint16_t v)
{
	memcpy(gp(e, gpa), &v, 2);
}

static struct virtqueue *start_queue(struct env *e, uint64_t features)
{
	struct virtqueue *vq = &e->vd.vq[1];
	struct vring_desc d = {BUF_GPA, 64, VRING_DESC_F_WRITE, 0};

	e->vd.guest_features = features;
	memset(gp(e, 0), 0, 0x40000);
	memcpy(gp(e, DESC_GPA), &d, sizeof(d));
	assert_int_equal(vq_enable(vq, &e->mem, QSIZE, DESC_GPA, AVAIL_GPA,
				   USED_GPA, features),
			 0);
	return vq;
}

/* The driver offers descriptor 0; the device uses it. */
static void serve_one(struct env *e, struct virtqueue *vq)
{
	struct vq_chain c;

	put16(e, AVAIL_GPA + 4 + 2 * (e->avail_idx % QSIZE), 0);
	put16(e, AVAIL_GPA + 2, ++e->avail_idx);
	pthread_mutex_lock(&vq->lock);
	assert_int_equal(vq_pop(vq, &c), 1);
	vq_push(vq, c.head, 64);
	pthread_mutex_unlock(&vq->lock);
	virtio_queue_done(&e->vd, 1);
}

static void test_queue_done_no_interrupt_flag(void **state)
{
	struct env *e = *state;
	struct virtqueue *vq = start_queue(e, 1ULL << VIRTIO_F_VERSION_1);

	serve_one(e, vq);
	assert_int_equal(e->queue_irqs[1], 1);
	put16(e, AVAIL_GPA, VRING_AVAIL_F_NO_INTERRUPT);
	serve_one(e, vq);
	serve_one(e, vq);
	assert_int_equal(e->queue_irqs[1], 1);
	put16(e, AVAIL_GPA, 0);
	serve_one(e, vq);
	assert_int_equal(e->queue_irqs[1], 2);
	assert_int_equal(e->queue_irqs[0], 0);
	assert_int_equal(e->vq_locked_in_notify, 0);
}

static void test_queue_done_event_idx(void **state)
{
	struct env *e = *state;
	struct virtqueue *vq = start_queue(e, 1ULL << VIRTIO_F_EVENT_IDX);
	uint64_t used_event = AVAIL_GPA + 4 + 2 * QSIZE;

	serve_one(e, vq); /* first one always interrupts */
	assert_int_equal(e->queue_irqs[1], 1);
	put16(e, used_event, 3); /* wake me when entry 3 is used */
	serve_one(e, vq);	 /* used idx 2 */
	serve_one(e, vq);	 /* 3 */
	assert_int_equal(e->queue_irqs[1], 1);
	serve_one(e, vq); /* 4: entry 3 used */
	assert_int_equal(e->queue_irqs[1], 2);
	serve_one(e, vq); /* 5: used_event already passed */
	assert_int_equal(e->queue_irqs[1], 2);
	virtio_queue_done(&e->vd, 1); /* nothing new: no interrupt */
	assert_int_equal(e->queue_irqs[1], 2);
	put16(e, used_event, 5); /* wake me on the next one */
	serve_one(e, vq);
	assert_int_equal(e->queue_irqs[1], 3);
	assert_int_equal(e->vq_locked_in_notify, 0);
}

static void test_queue_done_edges(void **state)
{
	struct env *e = *state;

	/* disabled queues and queues the device does not have: nothing */
	virtio_queue_done(&e->vd, 0);
	virtio_queue_done(&e->vd, 2);
	virtio_queue_done(&e->vd, VIRTIO_MAX_QUEUES + 5);
	assert_int_equal(e->queue_irqs[0], 0);
	/* no transport yet: decided, nobody to tell */
	e->vd.transport.notify_queue = NULL;
	start_queue(e, 0);
	serve_one(e, &e->vd.vq[1]);
	assert_int_equal(e->queue_irqs[1], 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(test_init_checks),
		T(test_needs_reset_once),
		T(test_needs_reset_before_driver_ok),
		T(test_queue_done_no_interrupt_flag),
		T(test_queue_done_event_idx),
		T(test_queue_done_edges),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
