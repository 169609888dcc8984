/*
 * tests/unit/test_virtqueue.c - the device side of a split virtqueue driven
 * by a fake driver writing rings into 16 MiB of real guest memory: simple,
 * split, indirect and mixed chains, copy helpers, EVENT_IDX interrupt and
 * kick suppression, 16-bit index wrap-around, every hostile input we know
 * of (each rejected with -EINVAL and a message), ring checks at enable
 * time, and a seeded fuzz loop over random rings that must never crash.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/guest_mem.h"
#include "virtio/virtqueue.h"

#define MiB (1ULL << 20)
#define RAM (16 * MiB)
#define DESC_GPA 0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA 0x30000ULL
#define TABLE_GPA 0x40000ULL /* indirect tables */
#define BUF_GPA 0x100000ULL  /* data buffers */
#define F_INDIRECT (1ULL << VIRTIO_F_INDIRECT_DESC)
#define F_EVENT (1ULL << VIRTIO_F_EVENT_IDX)
#define F_V1 (1ULL << VIRTIO_F_VERSION_1)
#define R 0 /* readable descriptor */
#define N VRING_DESC_F_NEXT
#define W VRING_DESC_F_WRITE
#define I VRING_DESC_F_INDIRECT

struct env {
	struct guest_mem mem;
	struct virtqueue vq;
	struct vq_chain c;
	uint16_t size;
	uint16_t avail_idx; /* the fake driver's shadow */
};

/* ---- the fake driver ---- */

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

static uint16_t get16(struct env *e, uint64_t gpa)
{
	uint16_t v;

	memcpy(&v, gp(e, gpa), 2);
	return v;
}

static uint32_t get32(struct env *e, uint64_t gpa)
{
	uint32_t v;

	memcpy(&v, gp(e, gpa), 4);
	return v;
}

static void desc_at(struct env *e, uint64_t table, uint32_t i, uint64_t addr,
		    uint32_t len, uint16_t flags, uint16_t next)
{
	struct vring_desc d = {addr, len, flags, next};

	memcpy(gp(e, table + 16ULL * i), &d, sizeof(d));
}

static void desc(struct env *e, uint16_t i, uint64_t addr, uint32_t len,
		 uint16_t flags, uint16_t next)
{
	desc_at(e, DESC_GPA, i, addr, len, flags, next);
}

static void set_avail_idx(struct env *e, uint16_t idx)
{
	put16(e, AVAIL_GPA + 2, idx);
}

static void publish(struct env *e, uint16_t head)
{
	put16(e, AVAIL_GPA + 4 + 2ULL * (e->avail_idx % e->size), head);
	e->avail_idx++;
	set_avail_idx(e, e->avail_idx);
}

static uint16_t used_idx(struct env *e)
{
	return get16(e, USED_GPA + 2);
}

static void set_used_event(struct env *e, uint16_t v)
{
	put16(e, AVAIL_GPA + 4 + 2ULL * e->size, v);
}

static uint16_t avail_event(struct env *e)
{
	return get16(e, USED_GPA + 4 + 8ULL * e->size);
}

static int enable(struct env *e, uint16_t size, uint64_t features)
{
	memset(gp(e, 0), 0, 1 * MiB); /* rings and tables */
	e->size = size;
	e->avail_idx = 0;
	return vq_enable(&e->vq, &e->mem, size, DESC_GPA, AVAIL_GPA, USED_GPA,
			 features);
}

static void expect_pop_error(struct env *e, const char *needle)
{
	int rc = vq_pop(&e->vq, &e->c);

	if (rc != -EINVAL || !strstr(e->vq.error, needle))
		print_error("pop returned %d, error \"%s\", wanted \"%s\"\n",
			    rc, e->vq.error, needle);
	assert_int_equal(rc, -EINVAL);
	assert_non_null(strstr(e->vq.error, needle));
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	assert_non_null(e);
	assert_int_equal(guest_mem_alloc(&e->mem, RAM), 0);
	assert_int_equal(vq_init(&e->vq), 0);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	vq_destroy(&e->vq);
	guest_mem_free(&e->mem);
	free(e);
	return 0;
}

/* ---- enable-time checks ---- */

static void expect_enable_error(struct env *e, uint16_t size, uint64_t d,
				uint64_t a, uint64_t u, uint64_t f,
				const char *needle)
{
	assert_int_equal(vq_enable(&e->vq, &e->mem, size, d, a, u, f), -EINVAL);
	assert_false(e->vq.enabled);
	if (!strstr(e->vq.error, needle))
		print_error("error \"%s\", wanted \"%s\"\n", e->vq.error,
			    needle);
	assert_non_null(strstr(e->vq.error, needle));
}

static void test_enable_checks(void **state)
{
	struct env *e = *state;
	uint64_t a_end = RAM - (4 + 2 * 16), u_end = RAM - (4 + 8 * 16);

	expect_enable_error(e, 0, DESC_GPA, AVAIL_GPA, USED_GPA, 0, "size");
	expect_enable_error(e, 3, DESC_GPA, AVAIL_GPA, USED_GPA, 0, "size");
	expect_enable_error(e, 2 * VQ_MAX_SIZE, DESC_GPA, AVAIL_GPA, USED_GPA,
			    0, "size");
	expect_enable_error(e, 16, DESC_GPA + 8, AVAIL_GPA, USED_GPA, 0,
			    "aligned");
	expect_enable_error(e, 16, DESC_GPA, AVAIL_GPA + 1, USED_GPA, 0,
			    "aligned");
	expect_enable_error(e, 16, DESC_GPA, AVAIL_GPA, USED_GPA + 2, 0,
			    "aligned");
	expect_enable_error(e, 16, RAM - 16 * 15, AVAIL_GPA, USED_GPA, 0,
			    "descriptor table");
	expect_enable_error(e, 16, 0xfffffffffffffff0ULL, AVAIL_GPA, USED_GPA,
			    0, "is outside guest RAM");
	expect_enable_error(e, 16, DESC_GPA, 0xfffffffffffffffeULL, USED_GPA, 0,
			    "avail ring");
	expect_enable_error(e, 16, DESC_GPA, AVAIL_GPA, RAM, 0, "used ring");
	/* The event fields count only with EVENT_IDX. */
	assert_int_equal(
		vq_enable(&e->vq, &e->mem, 16, DESC_GPA, a_end, u_end, F_V1),
		0);
	assert_true(e->vq.enabled);
	expect_enable_error(e, 16, DESC_GPA, a_end, USED_GPA, F_EVENT,
			    "avail ring");
	expect_enable_error(e, 16, DESC_GPA, AVAIL_GPA, u_end, F_EVENT,
			    "used ring");
	assert_int_equal(
		vq_enable(&e->vq, NULL, 16, DESC_GPA, AVAIL_GPA, USED_GPA, 0),
		-EINVAL);
	assert_int_equal(enable(e, VQ_MAX_SIZE, F_EVENT | F_INDIRECT), 0);
	assert_true(e->vq.event_idx && e->vq.indirect);
	assert_int_equal(enable(e, 1, 0), 0);
}

static void test_disable_resets(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 8, F_EVENT), 0);
	desc(e, 0, BUF_GPA, 8, R, 0);
	publish(e, 0);
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	vq_push(&e->vq, 0, 0);
	assert_true(vq_should_interrupt(&e->vq));
	vq_disable(&e->vq);
	assert_false(e->vq.enabled);
	assert_int_equal(e->vq.last_avail, 0);
	assert_int_equal(e->vq.used_idx, 0);
	assert_false(e->vq.signalled_valid);
	assert_int_equal(vq_pop(&e->vq, &e->c), 0);
	assert_false(vq_has_work(&e->vq));
	assert_false(vq_should_interrupt(&e->vq));
	vq_push(&e->vq, 0, 0);		   /* ignored */
	vq_set_kick_wanted(&e->vq, false); /* ignored */
	assert_int_equal(used_idx(e), 1);
}

/* ---- well-formed chains ---- */

static void test_simple_chain(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 16, F_V1), 0);
	assert_int_equal(vq_pop(&e->vq, &e->c), 0);
	assert_false(vq_has_work(&e->vq));
	desc(e, 3, BUF_GPA, 100, R | N, 7);
	desc(e, 7, BUF_GPA + 0x1000, 200, W, 0);
	publish(e, 3);
	assert_true(vq_has_work(&e->vq));
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_int_equal(e->c.head, 3);
	assert_int_equal(e->c.n_out, 1);
	assert_int_equal(e->c.n_in, 1);
	assert_int_equal(e->c.out_bytes, 100);
	assert_int_equal(e->c.in_bytes, 200);
	assert_ptr_equal(e->c.iov[0].iov_base, gp(e, BUF_GPA));
	assert_int_equal(e->c.iov[0].iov_len, 100);
	assert_ptr_equal(e->c.iov[1].iov_base, gp(e, BUF_GPA + 0x1000));
	assert_int_equal(e->c.iov[1].iov_len, 200);
	assert_int_equal(vq_pop(&e->vq, &e->c), 0);
	assert_false(vq_has_work(&e->vq));
	vq_push(&e->vq, 3, 50);
	assert_int_equal(used_idx(e), 1);
	assert_int_equal(get32(e, USED_GPA + 4), 3);
	assert_int_equal(get32(e, USED_GPA + 8), 50);
}

static void fill(struct env *e, uint64_t gpa, size_t len, uint8_t seed)
{
	uint8_t *p = gp(e, gpa);

	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i);
}

static void test_split_and_copy(void **state)
{
	struct env *e = *state;
	uint8_t buf[64], want[64];
	static const uint32_t outl[3] = {10, 20, 30};
	uint8_t *in0, *in1;

	assert_int_equal(enable(e, 8, F_V1), 0);
	desc(e, 0, BUF_GPA, 10, R | N, 1);
	desc(e, 1, BUF_GPA + 0x100, 20, R | N, 2);
	desc(e, 2, BUF_GPA + 0x200, 30, R | N, 5);
	desc(e, 5, BUF_GPA + 0x300, 8, W | N, 6);
	desc(e, 6, BUF_GPA + 0x400, 16, W, 0);
	for (int i = 0; i < 3; i++)
		fill(e, BUF_GPA + 0x100 * i, outl[i], (uint8_t)(40 * i));
	publish(e, 0);
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_int_equal(e->c.n_out, 3);
	assert_int_equal(e->c.n_in, 2);
	assert_int_equal(e->c.out_bytes, 60);
	assert_int_equal(e->c.in_bytes, 24);

	/* read 50 bytes from offset 5: 5 of seg 0, all of 1, 25 of 2 */
	for (int i = 0; i < 5; i++)
		want[i] = (uint8_t)(5 + i);
	for (int i = 0; i < 20; i++)
		want[5 + i] = (uint8_t)(40 + i);
	for (int i = 0; i < 25; i++)
		want[25 + i] = (uint8_t)(80 + i);
	assert_int_equal(vq_chain_read(&e->c, 5, buf, 50), 50);
	assert_memory_equal(buf, want, 50);
	assert_int_equal(vq_chain_read(&e->c, 55, buf, 10), 5);
	assert_int_equal(buf[0], 80 + 25);
	assert_int_equal(vq_chain_read(&e->c, 60, buf, 10), 0);
	assert_int_equal(vq_chain_read(&e->c, ~0ULL, buf, 10), 0);

	/* write 10 bytes at offset 4: 4 into seg 0, 6 into seg 1 */
	for (int i = 0; i < 64; i++)
		buf[i] = (uint8_t)(0xa0 + i);
	assert_int_equal(vq_chain_write(&e->c, 4, buf, 10), 10);
	in0 = gp(e, BUF_GPA + 0x300);
	in1 = gp(e, BUF_GPA + 0x400);
	assert_memory_equal(in0 + 4, buf, 4);
	assert_memory_equal(in1, buf + 4, 6);
	assert_int_equal(in0[0], 0);
	assert_int_equal(vq_chain_write(&e->c, 20, buf, 10), 4);
	assert_memory_equal(in1 + 12, buf, 4);
	assert_int_equal(vq_chain_write(&e->c, 24, buf, 10), 0);
}

static void test_zero_length(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 8, F_V1), 0);
	/* zero-length descriptors produce no iovec, wherever they point */
	desc(e, 0, 0xffffffffffffffffULL, 0, R | N, 1);
	desc(e, 1, BUF_GPA, 8, W | N, 2);
	desc(e, 2, RAM, 0, W, 0);
	publish(e, 0);
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_int_equal(e->c.n_out, 0);
	assert_int_equal(e->c.n_in, 1);
	assert_int_equal(e->c.in_bytes, 8);
	assert_ptr_equal(e->c.iov[0].iov_base, gp(e, BUF_GPA));
}

static void test_last_byte_of_ram(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 8, F_V1), 0);
	desc(e, 0, RAM - 1, 1, W, 0);
	desc(e, 1, 0, (uint32_t)RAM, R, 0);
	publish(e, 0);
	publish(e, 1);
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_ptr_equal(e->c.iov[0].iov_base, gp(e, RAM - 1));
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_int_equal(e->c.out_bytes, RAM);
}

static void test_indirect(void **state)
{
	struct env *e = *state;
	uint64_t t = TABLE_GPA;

	assert_int_equal(enable(e, 8, F_INDIRECT), 0);
	/* table chain 0 -> 2 -> 1; entry 3 unused */
	desc_at(e, t, 0, BUF_GPA, 16, R | N, 2);
	desc_at(e, t, 2, BUF_GPA + 0x100, 32, W | N, 1);
	desc_at(e, t, 1, BUF_GPA + 0x200, 64, W, 0);
	desc_at(e, t, 3, 0xdead0000000ULL, 1, I, 7);
	/* the WRITE flag on an INDIRECT descriptor is ignored (2.7.5.3.2) */
	desc(e, 4, t, 4 * 16, I | W, 0);
	publish(e, 4);
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_int_equal(e->c.head, 4);
	assert_int_equal(e->c.n_out, 1);
	assert_int_equal(e->c.n_in, 2);
	assert_ptr_equal(e->c.iov[0].iov_base, gp(e, BUF_GPA));
	assert_ptr_equal(e->c.iov[1].iov_base, gp(e, BUF_GPA + 0x100));
	assert_ptr_equal(e->c.iov[2].iov_base, gp(e, BUF_GPA + 0x200));
	assert_int_equal(e->c.in_bytes, 96);
	vq_push(&e->vq, 4, 96);
	assert_int_equal(get32(e, USED_GPA + 4), 4);
}

static void test_mixed_direct_then_indirect(void **state)
{
	struct env *e = *state;
	uint64_t t = TABLE_GPA + 8; /* unaligned tables are fine */

	assert_int_equal(enable(e, 8, F_INDIRECT | F_EVENT), 0);
	desc(e, 1, BUF_GPA, 12, R | N, 6);
	desc(e, 6, t, 2 * 16, I, 0);
	desc_at(e, t, 0, BUF_GPA + 0x100, 4, R | N, 1);
	desc_at(e, t, 1, BUF_GPA + 0x200, 40, W, 0);
	publish(e, 1);
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_int_equal(e->c.head, 1);
	assert_int_equal(e->c.n_out, 2);
	assert_int_equal(e->c.n_in, 1);
	assert_int_equal(e->c.out_bytes, 16);
	assert_int_equal(e->c.in_bytes, 40);
}

static void test_max_length_chain(void **state)
{
	struct env *e = *state;

	/* 256 descriptors is the limit, and allowed */
	assert_int_equal(enable(e, 256, F_V1), 0);
	for (int i = 0; i < 256; i++)
		desc(e, (uint16_t)i, BUF_GPA + i, 1, i < 100 ? R | N : W | N,
		     (uint16_t)(i + 1));
	desc(e, 255, BUF_GPA, 1, W, 0);
	publish(e, 0);
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_int_equal(e->c.n_out, 100);
	assert_int_equal(e->c.n_in, 156);
}

/* ---- notifications ---- */

static void test_no_interrupt_flag(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 8, F_V1), 0);
	desc(e, 0, BUF_GPA, 8, W, 0);
	publish(e, 0);
	publish(e, 0);
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	vq_push(&e->vq, 0, 8);
	assert_true(vq_should_interrupt(&e->vq));
	put16(e, AVAIL_GPA, VRING_AVAIL_F_NO_INTERRUPT);
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	vq_push(&e->vq, 0, 8);
	assert_false(vq_should_interrupt(&e->vq));
	put16(e, AVAIL_GPA, 0);
	assert_true(vq_should_interrupt(&e->vq));
}

static void pop_push(struct env *e, int n)
{
	for (int i = 0; i < n; i++) {
		assert_int_equal(vq_pop(&e->vq, &e->c), 1);
		vq_push(&e->vq, e->c.head, 1);
	}
}

static void test_event_idx_interrupts(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 16, F_EVENT), 0);
	desc(e, 0, BUF_GPA, 8, W, 0);
	for (int i = 0; i < 12; i++)
		publish(e, 0);
	/* NO_INTERRUPT means nothing with EVENT_IDX */
	put16(e, AVAIL_GPA, VRING_AVAIL_F_NO_INTERRUPT);
	pop_push(e, 1);
	assert_true(vq_should_interrupt(&e->vq)); /* first: always */
	set_used_event(e, 5); /* "interrupt me when entry 5 is used" */
	pop_push(e, 1);	      /* used idx 2 */
	assert_false(vq_should_interrupt(&e->vq));
	pop_push(e, 3); /* 5 */
	assert_false(vq_should_interrupt(&e->vq));
	pop_push(e, 1); /* 6: entry 5 is used now */
	assert_true(vq_should_interrupt(&e->vq));
	assert_false(vq_should_interrupt(&e->vq)); /* nothing new */
	set_used_event(e, 7);
	pop_push(e, 3); /* 6 -> 9 in one batch crosses 7 */
	assert_true(vq_should_interrupt(&e->vq));
	set_used_event(e, 8); /* already behind */
	pop_push(e, 1);
	assert_false(vq_should_interrupt(&e->vq));
	assert_int_equal(e->vq.signalled_used, 10);
}

static void test_kick_suppression_flags(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 8, F_V1), 0);
	vq_set_kick_wanted(&e->vq, false);
	assert_int_equal(get16(e, USED_GPA), VRING_USED_F_NO_NOTIFY);
	vq_set_kick_wanted(&e->vq, true);
	assert_int_equal(get16(e, USED_GPA), 0);
	assert_false(vq_has_work(&e->vq));
	desc(e, 0, BUF_GPA, 8, W, 0);
	publish(e, 0);
	assert_true(vq_has_work(&e->vq));
	assert_int_equal(avail_event(e), 0); /* untouched without EVENT_IDX */
}

static void test_kick_suppression_event_idx(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 8, F_EVENT), 0);
	desc(e, 0, BUF_GPA, 8, W, 0);
	for (int i = 0; i < 4; i++)
		publish(e, 0);
	/* kicks wanted by default: each pop moves avail_event along */
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_int_equal(avail_event(e), 1);
	vq_set_kick_wanted(&e->vq, false);
	assert_int_equal(get16(e, USED_GPA), 0); /* no flag with EVENT_IDX */
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_int_equal(avail_event(e), 1); /* left behind */
	vq_set_kick_wanted(&e->vq, true);
	assert_int_equal(avail_event(e), 3);
	assert_true(vq_has_work(&e->vq));
	assert_int_equal(vq_pop(&e->vq, &e->c), 1);
	assert_int_equal(avail_event(e), 4);
	assert_false(vq_has_work(&e->vq));
	assert_int_equal(vq_pop(&e->vq, &e->c), 0);
	publish(e, 0);
	assert_true(vq_has_work(&e->vq));
}

static void test_wraparound(void **state)
{
	struct env *e = *state;
	const uint16_t start = 65533;

	assert_int_equal(enable(e, 8, F_EVENT), 0);
	e->vq.last_avail = e->vq.used_idx = start;
	e->avail_idx = start;
	set_avail_idx(e, start);
	put16(e, USED_GPA + 2, start);
	for (uint16_t i = 0; i < 8; i++)
		desc(e, i, BUF_GPA + 0x100 * i, 4, W, 0);
	for (uint16_t i = 0; i < 6; i++)
		publish(e, (uint16_t)(7 - i));
	assert_int_equal(e->avail_idx, 3);
	e->vq.signalled_used = 65534; /* last interrupt at 65534 */
	e->vq.signalled_valid = true;
	set_used_event(e, 65535);
	for (uint16_t i = 0; i < 6; i++) {
		uint16_t slot = (uint16_t)(start + i) % 8;

		assert_int_equal(vq_pop(&e->vq, &e->c), 1);
		assert_int_equal(e->c.head, 7 - i);
		vq_push(&e->vq, e->c.head, i);
		assert_int_equal(get32(e, USED_GPA + 4 + 8 * slot), 7 - i);
		assert_int_equal(get32(e, USED_GPA + 8 + 8 * slot), i);
	}
	assert_int_equal(vq_pop(&e->vq, &e->c), 0);
	assert_int_equal(e->vq.last_avail, 3);
	assert_int_equal(used_idx(e), 3);
	assert_int_equal(avail_event(e), 3);
	/* 65534 -> 3 crosses used_event 65535 */
	assert_true(vq_should_interrupt(&e->vq));
	/* a jump check across the wrap: 3 -> 12 is 9 > 8 */
	set_avail_idx(e, 12);
	expect_pop_error(e, "avail idx jumped from 3 to 12");
}

/* ---- hostile drivers ---- */

static void test_avail_idx_jump(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 16, F_V1), 0);
	set_avail_idx(e, 17);
	expect_pop_error(e, "avail idx jumped from 0 to 17 (queue size 16)");
	assert_int_equal(e->vq.last_avail, 0);
	set_avail_idx(e, 0xffff); /* "backwards" */
	expect_pop_error(e, "jumped");
	set_avail_idx(e, 16); /* a full ring is fine */
	assert_true(vq_has_work(&e->vq));
}

static void test_head_out_of_range(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 16, F_V1), 0);
	publish(e, 16);
	expect_pop_error(e, "avail ring entry 0: head 16 out of range "
			    "(queue size 16)");
	/* the error repeats: nothing was consumed */
	expect_pop_error(e, "head 16");
	assert_int_equal(e->vq.last_avail, 0);
}

static void test_next_out_of_range(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 256, F_V1), 0);
	desc(e, 0, BUF_GPA, 8, R | N, 5);
	desc(e, 5, BUF_GPA, 8, R | N, 300);
	publish(e, 0);
	expect_pop_error(e, "descriptor 5: next 300 out of range "
			    "(queue size 256)");
}

static void test_loop_direct(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 16, F_V1), 0);
	desc(e, 0, BUF_GPA, 8, R | N, 1);
	desc(e, 1, BUF_GPA, 8, R | N, 2);
	desc(e, 2, BUF_GPA, 8, R | N, 1);
	publish(e, 0);
	expect_pop_error(e, "loop");
	/* a self-loop of empty descriptors */
	assert_int_equal(enable(e, 16, F_V1), 0);
	desc(e, 4, 0, 0, R | N, 4);
	publish(e, 4);
	expect_pop_error(e, "descriptor 4: loop in descriptor chain (more "
			    "than 16 descriptors)");
}

static void test_loop_indirect(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, TABLE_GPA, 3 * 16, I, 0);
	desc_at(e, TABLE_GPA, 0, BUF_GPA, 8, R | N, 1);
	desc_at(e, TABLE_GPA, 1, BUF_GPA, 8, R | N, 2);
	desc_at(e, TABLE_GPA, 2, BUF_GPA, 0, R | N, 0);
	publish(e, 0);
	expect_pop_error(e, "loop in indirect table");
}

static void test_chain_too_long(void **state)
{
	struct env *e = *state;

	/* direct: 257 descriptors in a 1024-entry ring */
	assert_int_equal(enable(e, 1024, F_V1), 0);
	for (int i = 0; i < 257; i++)
		desc(e, (uint16_t)i, BUF_GPA, 1, R | N, (uint16_t)(i + 1));
	desc(e, 256, BUF_GPA, 1, R, 0);
	publish(e, 0);
	expect_pop_error(e, "descriptor 256: chain longer than 256");

	/* indirect: 300 entries */
	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	for (int i = 0; i < 300; i++)
		desc_at(e, TABLE_GPA, (uint32_t)i, BUF_GPA, 1, W | N,
			(uint16_t)(i + 1));
	desc_at(e, TABLE_GPA, 299, BUF_GPA, 1, W, 0);
	desc(e, 0, TABLE_GPA, 300 * 16, I, 0);
	publish(e, 0);
	expect_pop_error(e, "indirect entry 256: chain longer than 256");

	/* direct and indirect together */
	assert_int_equal(enable(e, 256, F_INDIRECT), 0);
	for (int i = 0; i < 200; i++)
		desc(e, (uint16_t)i, BUF_GPA, 1, R | N, (uint16_t)(i + 1));
	desc(e, 200, TABLE_GPA, 100 * 16, I, 0);
	for (int i = 0; i < 100; i++)
		desc_at(e, TABLE_GPA, (uint32_t)i, BUF_GPA, 1, W | N,
			(uint16_t)(i + 1));
	desc_at(e, TABLE_GPA, 99, BUF_GPA, 1, W, 0);
	publish(e, 0);
	expect_pop_error(e, "indirect entry 56: chain longer than 256");
}

static void test_more_than_4g(void **state)
{
	struct env *e = *state;

	/* 256 x 16 MiB = 4 GiB: one byte too many for a 32-bit used len */
	assert_int_equal(enable(e, 256, F_V1), 0);
	for (int i = 0; i < 256; i++)
		desc(e, (uint16_t)i, 0, (uint32_t)RAM, W | N,
		     (uint16_t)(i + 1));
	desc(e, 255, 0, (uint32_t)RAM, W, 0);
	publish(e, 0);
	expect_pop_error(e, "descriptor 255: chain carries more than 4 GiB");
}

/* One descriptor at head 3 (after a good one at 2), expected to fail. */
static void bad_buffer(struct env *e, uint64_t addr, uint32_t len,
		       const char *needle)
{
	assert_int_equal(enable(e, 16, F_V1), 0);
	desc(e, 2, BUF_GPA, 8, R | N, 3);
	desc(e, 3, addr, len, W, 0);
	publish(e, 2);
	expect_pop_error(e, needle);
}

static void test_bad_addresses(void **state)
{
	struct env *e = *state;

	bad_buffer(e, RAM, 8,
		   "descriptor 3: buffer 0x1000000+0x8 is "
		   "outside guest RAM");
	bad_buffer(e, 0xfffffffffffffff0ULL, 0x100,
		   "descriptor 3: buffer 0xfffffffffffffff0+0x100 wraps "
		   "past 2^64");
	bad_buffer(e, ~0ULL, 1, "buffer 0xffffffffffffffff+0x1 is outside");
	bad_buffer(e, RAM - 10, 100,
		   "descriptor 3: buffer 0xfffff6+0x64 "
		   "runs past the end of RAM");
	bad_buffer(e, 0, (uint32_t)RAM + 1, "runs past the end");
	bad_buffer(e, GUEST_MMIO_HOLE_START, 1, "outside guest RAM");
	bad_buffer(e, GUEST_MMIO_HOLE_END, 1, "outside guest RAM");
}

static void test_readable_after_writable(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, BUF_GPA, 8, W | N, 1);
	desc(e, 1, BUF_GPA, 8, R, 0);
	publish(e, 0);
	expect_pop_error(e, "descriptor 1: readable segment after a "
			    "writable one");
	/* across the direct/indirect boundary too */
	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, BUF_GPA, 8, W | N, 1);
	desc(e, 1, TABLE_GPA, 16, I, 0);
	desc_at(e, TABLE_GPA, 0, BUF_GPA, 0, R, 0);
	publish(e, 0);
	expect_pop_error(e, "indirect entry 0: readable segment after");
}

static void test_indirect_rules(void **state)
{
	struct env *e = *state;

	assert_int_equal(enable(e, 16, F_V1), 0);
	desc(e, 0, TABLE_GPA, 16, I, 0);
	desc_at(e, TABLE_GPA, 0, BUF_GPA, 8, R, 0);
	publish(e, 0);
	expect_pop_error(e, "descriptor 0: INDIRECT without "
			    "VIRTIO_F_INDIRECT_DESC");

	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, TABLE_GPA, 16, I | N, 1);
	publish(e, 0);
	expect_pop_error(e, "both INDIRECT and NEXT set");

	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, TABLE_GPA, 32, I, 0);
	desc_at(e, TABLE_GPA, 0, BUF_GPA, 8, R | N, 1);
	desc_at(e, TABLE_GPA, 1, TABLE_GPA, 16, I, 0);
	publish(e, 0);
	expect_pop_error(e, "descriptor 0, indirect entry 1: nested INDIRECT");

	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, TABLE_GPA, 0, I, 0);
	publish(e, 0);
	expect_pop_error(e, "descriptor 0: empty indirect table");

	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, TABLE_GPA, 24, I, 0);
	publish(e, 0);
	expect_pop_error(e, "indirect table size 24 is not 16*n");

	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, RAM - 32, 64, I, 0);
	publish(e, 0);
	expect_pop_error(e, "indirect table 0xffffe0+0x40 runs past");

	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, 0x200000000ULL, 64, I, 0);
	publish(e, 0);
	expect_pop_error(e, "indirect table 0x200000000+0x40 is outside");

	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, ~0ULL - 15, 32, I, 0);
	publish(e, 0);
	expect_pop_error(e, "indirect table 0xfffffffffffffff0+0x20 wraps");

	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, TABLE_GPA, 32, I, 0);
	desc_at(e, TABLE_GPA, 0, BUF_GPA, 8, R | N, 2);
	publish(e, 0);
	expect_pop_error(e, "indirect entry 0: next 2 out of range "
			    "(table of 2)");

	/* a second INDIRECT after an indirect table cannot happen: the
	 * first must not have NEXT; so just check a bad buffer inside */
	assert_int_equal(enable(e, 16, F_INDIRECT), 0);
	desc(e, 0, TABLE_GPA, 16, I, 0);
	desc_at(e, TABLE_GPA, 0, RAM + 4096, 8, W, 0);
	publish(e, 0);
	expect_pop_error(e, "descriptor 0, indirect entry 0: buffer "
			    "0x1001000+0x8 is outside guest RAM");
}

/* ---- fuzz ---- */

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static uint64_t rnd(uint64_t *s, uint64_t n)
{
	return n ? rng_next(s) % n : 0;
}

/* Mostly plausible values, sometimes hostile ones. */
static uint64_t fuzz_addr(uint64_t *s)
{
	switch (rnd(s, 40)) {
	case 0:
		return rng_next(s);
	case 1:
		return RAM - rnd(s, 64);
	case 2:
		return ~0ULL - rnd(s, 64);
	case 3:
		return TABLE_GPA + rnd(s, 16 * 80);
	default:
		return BUF_GPA + rnd(s, 8 * MiB);
	}
}

static uint32_t fuzz_len(uint64_t *s)
{
	switch (rnd(s, 40)) {
	case 0:
		return (uint32_t)rng_next(s);
	case 1:
		return (uint32_t)RAM - (uint32_t)rnd(s, 64);
	case 2:
	case 3:
		return 0;
	default:
		return (uint32_t)rnd(s, 8192);
	}
}

static uint16_t fuzz_flags(uint64_t *s)
{
	uint16_t f = rnd(s, 2) ? N : 0;

	if (!rnd(s, 8))
		f |= W;
	if (!rnd(s, 10))
		f |= I;
	if (!rnd(s, 100))
		f = (uint16_t)rng_next(s);
	return f;
}

static uint16_t fuzz_next(uint64_t *s, uint32_t n)
{
	return rnd(s, 40) ? (uint16_t)rnd(s, n) : (uint16_t)rng_next(s);
}

static void fuzz_desc(struct env *e, uint64_t *s, uint64_t table, uint32_t i,
		      uint32_t n)
{
	uint16_t flags = fuzz_flags(s);
	uint64_t addr = fuzz_addr(s);
	uint32_t len = fuzz_len(s);

	if ((flags & I) && rnd(s, 8)) {
		addr = TABLE_GPA + 16 * rnd(s, 64) + (rnd(s, 8) ? 0 : 8);
		len = 16 * (uint32_t)(1 + rnd(s, 16));
		if (rnd(s, 4))
			flags &= ~N;
	}
	desc_at(e, table, i, addr, len, flags, fuzz_next(s, n));
}

static void fuzz_table(struct env *e, uint64_t *s, uint64_t table, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		fuzz_desc(e, s, table, i, n);
}

/* Every accepted chain must describe memory inside guest RAM only. */
static void check_chain(struct env *e, const struct vq_chain *c)
{
	const uint8_t *lo = e->mem.base, *hi = e->mem.base + RAM;
	uint64_t out = 0, in = 0;

	assert_true(c->head < e->size);
	assert_true(c->n_out + c->n_in <= VQ_MAX_SEGS);
	for (unsigned int i = 0; i < c->n_out + c->n_in; i++) {
		const uint8_t *b = c->iov[i].iov_base;

		assert_true(c->iov[i].iov_len > 0);
		assert_true(b >= lo && b < hi);
		assert_true(c->iov[i].iov_len <= (size_t)(hi - b));
		if (i < c->n_out)
			out += c->iov[i].iov_len;
		else
			in += c->iov[i].iov_len;
	}
	assert_int_equal(out, c->out_bytes);
	assert_int_equal(in, c->in_bytes);
	assert_true(out + in <= UINT32_MAX);
}

static void fuzz_ring(struct env *e, uint64_t *s)
{
	uint16_t size = (uint16_t)(1u << rnd(s, 11));
	uint64_t f = rnd(s, 4) ? F_INDIRECT : 0;
	uint8_t scratch[64] = {0};
	int rc, pops = 0;

	f |= rnd(s, 2) ? F_EVENT : 0;
	assert_int_equal(enable(e, size, f), 0);
	fuzz_table(e, s, DESC_GPA, size);
	fuzz_table(e, s, TABLE_GPA, 80); /* next fields < 80: a few loops */
	e->vq.last_avail = e->vq.used_idx = (uint16_t)rng_next(s);
	e->avail_idx = e->vq.last_avail;
	for (uint32_t i = 0, n = (uint32_t)rnd(s, size + 1u); i < n; i++)
		publish(e, (uint16_t)(rnd(s, 40) ? rnd(s, size) : rng_next(s)));
	if (!rnd(s, 40))
		set_avail_idx(e, (uint16_t)rng_next(s));
	/* bounded: chain writes may land on the rings and move avail->idx */
	while ((rc = vq_pop(&e->vq, &e->c)) == 1 && ++pops < 4 * size) {
		check_chain(e, &e->c);
		vq_chain_read(&e->c, rnd(s, 8192), scratch, sizeof(scratch));
		vq_chain_write(&e->c, rnd(s, 8192), scratch, rnd(s, 64));
		vq_push(&e->vq, e->c.head, (uint32_t)e->c.in_bytes);
		vq_should_interrupt(&e->vq);
		vq_set_kick_wanted(&e->vq, rnd(s, 2));
	}
	assert_true(rc == 1 || rc == 0 || rc == -EINVAL);
	if (rc == -EINVAL)
		assert_true(strlen(e->vq.error) > 0);
}

static void test_fuzz(void **state)
{
	struct env *e = *state;
	uint64_t seed = 0x9e3779b97f4a7c15ULL;

	for (int i = 0; i < 20000; i++)
		fuzz_ring(e, &seed);
}

/*
 * The guest changes its rings while we read them. A second thread scribbles
 * over the descriptor table, the avail ring and the indirect tables while
 * the fuzz loop pops: what we validated is what we use, so every accepted
 * chain still lies inside RAM (and ASan sees no stray access).
 */
struct scribbler {
	struct env *e;
	atomic_bool stop;
};

static void *scribble(void *arg)
{
	struct scribbler *sc = arg;
	uint8_t *base = sc->e->mem.base;
	uint64_t s = 0x243f6a8885a308d3ULL;

	while (!atomic_load(&sc->stop)) {
		uint64_t r = rng_next(&s);
		uint64_t off;

		switch (r % 3) {
		case 0:
			off = DESC_GPA + rnd(&s, 16 * VQ_MAX_SIZE);
			break;
		case 1:
			off = AVAIL_GPA + rnd(&s, 4 + 2 * VQ_MAX_SIZE);
			break;
		default:
			off = TABLE_GPA + rnd(&s, 16 * 80);
			break;
		}
		__atomic_store_n(base + off, (uint8_t)(r >> 32),
				 __ATOMIC_RELAXED);
	}
	return NULL;
}

static void test_fuzz_concurrent(void **state)
{
	struct scribbler sc = {.e = *state};
	uint64_t seed = 0x13198a2e03707344ULL;
	pthread_t t;

	atomic_init(&sc.stop, false);
	assert_int_equal(pthread_create(&t, NULL, scribble, &sc), 0);
	for (int i = 0; i < 3000; i++)
		fuzz_ring(sc.e, &seed);
	atomic_store(&sc.stop, true);
	pthread_join(t, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(test_enable_checks),
		T(test_disable_resets),
		T(test_simple_chain),
		T(test_split_and_copy),
		T(test_zero_length),
		T(test_last_byte_of_ram),
		T(test_indirect),
		T(test_mixed_direct_then_indirect),
		T(test_max_length_chain),
		T(test_no_interrupt_flag),
		T(test_event_idx_interrupts),
		T(test_kick_suppression_flags),
		T(test_kick_suppression_event_idx),
		T(test_wraparound),
		T(test_avail_idx_jump),
		T(test_head_out_of_range),
		T(test_next_out_of_range),
		T(test_loop_direct),
		T(test_loop_indirect),
		T(test_chain_too_long),
		T(test_more_than_4g),
		T(test_bad_addresses),
		T(test_readable_after_writable),
		T(test_indirect_rules),
		T(test_fuzz),
		T(test_fuzz_concurrent),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
