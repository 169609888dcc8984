/*
 * tests/unit/test_vmstate.c - the vmstate byte stream: round trips of
 * synthetic state (random bytes in every struct, several vCPUs, with and
 * without the in-kernel irqchip), and hostile streams: cut at every byte,
 * wrong magic and version, vCPU counts, MSR counts and XSAVE sizes out of
 * range, a record for a vCPU that does not exist, duplicate and missing
 * records, records that do not belong, trailing bytes, an unknown record
 * that is skipped, and random mutations that must never crash or leak.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "migration/vmstate.h"

#define HDR_LEN 20
#define REC_HDR_LEN 6

/* Record types of the stream (see migration/vmstate.c). */
#define REC_END 0
#define REC_CLOCK 1
#define REC_PIC_MASTER 2
#define REC_PIT 5
#define REC_REGS 0x100
#define REC_SREGS 0x101
#define REC_LAPIC 0x103
#define REC_TSC 0x107
#define REC_XSAVE 0x108
#define REC_MSRS 0x109

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static void fill(void *p, size_t n)
{
	uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)rnd();
}

static void make_state(struct vmstate *st, int ncpus, bool irqchip,
		       uint32_t xsave_len, uint32_t nmsrs)
{
	memset(st, 0, sizeof(*st));
	st->ncpus = ncpus;
	st->ram_size = rnd();
	st->has_irqchip = irqchip;
	fill(&st->pic_master, sizeof(st->pic_master));
	fill(&st->pic_slave, sizeof(st->pic_slave));
	fill(&st->ioapic, sizeof(st->ioapic));
	st->pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
	st->pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
	st->ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
	fill(&st->pit, sizeof(st->pit));
	fill(&st->clock, sizeof(st->clock));
	st->vcpu = calloc((size_t)ncpus, sizeof(*st->vcpu));
	assert_non_null(st->vcpu);
	for (int i = 0; i < ncpus; i++) {
		struct vmstate_vcpu *c = &st->vcpu[i];

		fill(&c->regs, sizeof(c->regs));
		fill(&c->sregs, sizeof(c->sregs));
		c->has_xcrs = i % 2 == 0;
		fill(&c->xcrs, sizeof(c->xcrs));
		fill(&c->lapic, sizeof(c->lapic));
		fill(&c->events, sizeof(c->events));
		fill(&c->mp, sizeof(c->mp));
		fill(&c->debugregs, sizeof(c->debugregs));
		c->tsc_offset = (int64_t)rnd();
		c->xsave_len = xsave_len;
		fill(c->xsave, xsave_len);
		c->nmsrs = nmsrs;
		for (uint32_t k = 0; k < nmsrs; k++) {
			c->msrs[k].index = (uint32_t)rnd();
			c->msrs[k].data = rnd();
		}
	}
}

static void assert_same(const struct vmstate *a, const struct vmstate *b)
{
	assert_int_equal(a->ncpus, b->ncpus);
	assert_true(a->ram_size == b->ram_size);
	assert_int_equal(a->has_irqchip, b->has_irqchip);
	assert_memory_equal(&a->clock, &b->clock, sizeof(a->clock));
	if (a->has_irqchip) {
		assert_memory_equal(&a->pic_master, &b->pic_master,
				    sizeof(a->pic_master));
		assert_memory_equal(&a->pic_slave, &b->pic_slave,
				    sizeof(a->pic_slave));
		assert_memory_equal(&a->ioapic, &b->ioapic, sizeof(a->ioapic));
		assert_memory_equal(&a->pit, &b->pit, sizeof(a->pit));
	}
	for (int i = 0; i < a->ncpus; i++) {
		const struct vmstate_vcpu *x = &a->vcpu[i], *y = &b->vcpu[i];

		assert_memory_equal(&x->regs, &y->regs, sizeof(x->regs));
		assert_memory_equal(&x->sregs, &y->sregs, sizeof(x->sregs));
		assert_int_equal(x->has_xcrs, y->has_xcrs);
		if (x->has_xcrs)
			assert_memory_equal(&x->xcrs, &y->xcrs,
					    sizeof(x->xcrs));
		if (a->has_irqchip) {
			assert_memory_equal(&x->lapic, &y->lapic,
					    sizeof(x->lapic));
			assert_memory_equal(&x->mp, &y->mp, sizeof(x->mp));
		}
		assert_memory_equal(&x->events, &y->events, sizeof(x->events));
		assert_memory_equal(&x->debugregs, &y->debugregs,
				    sizeof(x->debugregs));
		assert_true(x->tsc_offset == y->tsc_offset);
		assert_int_equal(x->xsave_len, y->xsave_len);
		assert_memory_equal(x->xsave, y->xsave, x->xsave_len);
		assert_int_equal(x->nmsrs, y->nmsrs);
		for (uint32_t k = 0; k < x->nmsrs; k++) {
			assert_int_equal(x->msrs[k].index, y->msrs[k].index);
			assert_true(x->msrs[k].data == y->msrs[k].data);
		}
	}
}

static void roundtrip(int ncpus, bool irqchip, uint32_t xsave_len,
		      uint32_t nmsrs)
{
	struct vmstate st, back;
	struct err e = {0};
	uint8_t *buf;
	size_t len;

	make_state(&st, ncpus, irqchip, xsave_len, nmsrs);
	assert_int_equal(vmstate_encode(&st, &buf, &len), 0);
	assert_int_equal(vmstate_decode(buf, len, &back, &e), 0);
	assert_same(&st, &back);
	vmstate_free(&back);
	vmstate_free(&st);
	free(buf);
}

static void test_roundtrip(void **state)
{
	(void)state;
	rng_state = 0x1234567;
	roundtrip(1, true, VMSTATE_XSAVE_MIN, 0);
	roundtrip(3, true, VMSTATE_XSAVE_MAX, VMSTATE_MAX_MSRS);
	roundtrip(4, false, 8192, 97);
	roundtrip(VM_MAX_CPUS, true, 4100, 5);
}

static void test_encode_refuses_bad_state(void **state)
{
	struct vmstate st = {0};
	uint8_t *buf = (uint8_t *)1;
	size_t len = 1;

	(void)state;
	assert_int_equal(vmstate_encode(&st, &buf, &len), -EINVAL);
	assert_null(buf);
	assert_int_equal(len, 0);
}

/* A valid encoding of a fixed state: 2 vCPUs (or @ncpus). */
static void valid(uint8_t **buf, size_t *len, int ncpus, bool irqchip)
{
	struct vmstate st;

	rng_state = 0xfeedface;
	make_state(&st, ncpus, irqchip, VMSTATE_XSAVE_MIN, 20);
	assert_int_equal(vmstate_encode(&st, buf, len), 0);
	vmstate_free(&st);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Offset of the header of record @type (for vCPU @cpu, or -1), or 0. */
static size_t find_rec(const uint8_t *buf, size_t len, uint16_t type, int cpu)
{
	size_t off = HDR_LEN;

	while (off + REC_HDR_LEN <= len) {
		uint16_t t = (uint16_t)(buf[off] | buf[off + 1] << 8);
		uint32_t l = rd32(buf + off + 2);

		if (t == type &&
		    (cpu < 0 || rd32(buf + off + REC_HDR_LEN) == (uint32_t)cpu))
			return off;
		off += REC_HDR_LEN + l;
	}
	return 0;
}

static size_t rec_total(const uint8_t *buf, size_t off)
{
	return REC_HDR_LEN + rd32(buf + off + 2);
}

/* A new buffer: @buf with [off, off+del) replaced by @ins. */
static uint8_t *splice(const uint8_t *buf, size_t len, size_t off, size_t del,
		       const void *ins, size_t ins_len, size_t *out_len)
{
	uint8_t *n = malloc(len - del + ins_len);

	assert_non_null(n);
	memcpy(n, buf, off);
	if (ins_len)
		memcpy(n + off, ins, ins_len);
	memcpy(n + off + ins_len, buf + off + del, len - off - del);
	*out_len = len - del + ins_len;
	return n;
}

static int decode_rc(const uint8_t *buf, size_t len)
{
	struct vmstate st;
	struct err e = {0};
	int rc = vmstate_decode(buf, len, &st, &e);

	if (rc) {
		assert_true(rc < 0);
		assert_true(e.msg[0] != '\0');
		assert_null(st.vcpu);
	} else {
		vmstate_free(&st);
	}
	return rc;
}

static void test_truncated_everywhere(void **state)
{
	uint8_t *buf;
	size_t len;

	(void)state;
	valid(&buf, &len, 2, true);
	assert_int_equal(decode_rc(buf, len), 0);
	for (size_t cut = 0; cut < len; cut++) {
		/* A copy of exactly @cut bytes, so ASan sees any overread. */
		uint8_t *t = malloc(cut ? cut : 1);

		assert_non_null(t);
		memcpy(t, buf, cut);
		assert_true(decode_rc(t, cut) < 0);
		free(t);
	}
	assert_true(decode_rc(NULL, 0) < 0);
	free(buf);
}

static void test_bad_header(void **state)
{
	uint8_t *buf;
	size_t len;

	(void)state;
	valid(&buf, &len, 2, true);
	buf[0] = 'X';
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	buf[0] = 'D';
	buf[4] = VMSTATE_VERSION + 1;
	assert_int_equal(decode_rc(buf, len), -EPROTONOSUPPORT);
	buf[4] = 0;
	assert_int_equal(decode_rc(buf, len), -EPROTONOSUPPORT);
	buf[4] = VMSTATE_VERSION;
	buf[6] = 2; /* irqchip flag */
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	buf[6] = 1;
	wr32(buf + 8, 0);
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	wr32(buf + 8, VM_MAX_CPUS + 1);
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	wr32(buf + 8, 0xffffffff);
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	/* More vCPUs than the records cover: a record is missing. */
	wr32(buf + 8, 3);
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	/* Fewer: vCPU 1's records name a vCPU out of range. */
	wr32(buf + 8, 1);
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	wr32(buf + 8, 2);
	assert_int_equal(decode_rc(buf, len), 0);
	free(buf);
}

static void test_oversized_counts(void **state)
{
	uint8_t *buf, *n;
	size_t len, nlen, off;
	uint8_t *rec;
	size_t rlen;

	(void)state;
	valid(&buf, &len, 2, true);

	/* MSR count one past the maximum, length consistent with it. */
	off = find_rec(buf, len, REC_MSRS, 1);
	assert_true(off > 0);
	rlen = REC_HDR_LEN + 8 + (size_t)(VMSTATE_MAX_MSRS + 1) * 12;
	rec = calloc(1, rlen);
	assert_non_null(rec);
	rec[0] = REC_MSRS & 0xff;
	rec[1] = REC_MSRS >> 8;
	wr32(rec + 2, (uint32_t)(rlen - REC_HDR_LEN));
	wr32(rec + 6, 1);
	wr32(rec + 10, VMSTATE_MAX_MSRS + 1);
	n = splice(buf, len, off, rec_total(buf, off), rec, rlen, &nlen);
	assert_int_equal(decode_rc(n, nlen), -EINVAL);
	free(n);
	/* A count that disagrees with the length, and a huge count. */
	wr32(buf + off + 10, 21);
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	wr32(buf + off + 10, 0xffffffff);
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	wr32(buf + off + 10, 20);
	assert_int_equal(decode_rc(buf, len), 0);
	free(rec);

	/* An XSAVE area one byte larger than kept, and one too small. */
	off = find_rec(buf, len, REC_XSAVE, 0);
	assert_true(off > 0);
	rlen = REC_HDR_LEN + 4 + VMSTATE_XSAVE_MAX + 1;
	rec = calloc(1, rlen);
	assert_non_null(rec);
	rec[0] = REC_XSAVE & 0xff;
	rec[1] = REC_XSAVE >> 8;
	wr32(rec + 2, (uint32_t)(rlen - REC_HDR_LEN));
	n = splice(buf, len, off, rec_total(buf, off), rec, rlen, &nlen);
	assert_int_equal(decode_rc(n, nlen), -EINVAL);
	free(n);
	wr32(rec + 2, 4 + VMSTATE_XSAVE_MIN - 1);
	n = splice(buf, len, off, rec_total(buf, off), rec,
		   REC_HDR_LEN + 4 + VMSTATE_XSAVE_MIN - 1, &nlen);
	assert_int_equal(decode_rc(n, nlen), -EINVAL);
	free(n);
	free(rec);

	/* A record length past the end of the stream. */
	off = find_rec(buf, len, REC_REGS, 0);
	wr32(buf + off + 2, 0xfffffff0);
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	free(buf);
}

static void test_vcpu_index_out_of_range(void **state)
{
	uint8_t *buf;
	size_t len, off;

	(void)state;
	valid(&buf, &len, 2, true);
	off = find_rec(buf, len, REC_TSC, 1);
	assert_true(off > 0);
	wr32(buf + off + REC_HDR_LEN, 2);
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	wr32(buf + off + REC_HDR_LEN, 0xffffffff);
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	/* vCPU 0 twice (and vCPU 1's missing). */
	wr32(buf + off + REC_HDR_LEN, 0);
	assert_int_equal(decode_rc(buf, len), -EINVAL);
	free(buf);
}

static void test_duplicate_and_missing(void **state)
{
	uint8_t *buf, *n;
	size_t len, nlen, off;
	static const uint16_t mandatory[] = {
		REC_CLOCK, REC_PIC_MASTER, REC_PIT,   REC_REGS, REC_SREGS,
		REC_LAPIC, REC_TSC,	   REC_XSAVE, REC_MSRS, 0x104,
		0x105,	   0x106,	   3,	      4};

	(void)state;
	valid(&buf, &len, 2, true);
	/* A vCPU record twice. */
	off = find_rec(buf, len, REC_REGS, 1);
	n = splice(buf, len, off, 0, buf + off, rec_total(buf, off), &nlen);
	assert_int_equal(decode_rc(n, nlen), -EINVAL);
	free(n);
	/* A VM record twice. */
	off = find_rec(buf, len, REC_CLOCK, -1);
	n = splice(buf, len, off, 0, buf + off, rec_total(buf, off), &nlen);
	assert_int_equal(decode_rc(n, nlen), -EINVAL);
	free(n);
	/* Each mandatory record left out, for vCPU 1 where it is one. */
	for (size_t i = 0; i < sizeof(mandatory) / sizeof(mandatory[0]); i++) {
		int cpu = mandatory[i] >= 0x100 ? 1 : -1;

		off = find_rec(buf, len, mandatory[i], cpu);
		assert_true(off > 0);
		n = splice(buf, len, off, rec_total(buf, off), NULL, 0, &nlen);
		assert_int_equal(decode_rc(n, nlen), -EINVAL);
		free(n);
	}
	/* The XCRS record is optional: vCPU 1 has none, vCPU 0 has one. */
	off = find_rec(buf, len, 0x102, 0);
	assert_true(off > 0);
	n = splice(buf, len, off, rec_total(buf, off), NULL, 0, &nlen);
	assert_int_equal(decode_rc(n, nlen), 0);
	free(n);
	/* No end record, and bytes after it. */
	assert_int_equal(decode_rc(buf, len - REC_HDR_LEN), -EINVAL);
	n = splice(buf, len, len, 0, "x", 1, &nlen);
	assert_int_equal(decode_rc(n, nlen), -EINVAL);
	free(n);
	free(buf);
}

static void test_records_that_do_not_belong(void **state)
{
	uint8_t *with, *without, *n;
	size_t wlen, wolen, nlen, off, at;

	(void)state;
	valid(&with, &wlen, 2, true);
	valid(&without, &wolen, 2, false);
	assert_int_equal(decode_rc(without, wolen), 0);
	/* A LAPIC record, then a PIC record, without the irqchip. */
	off = find_rec(with, wlen, REC_LAPIC, 0);
	at = find_rec(without, wolen, REC_TSC, 0);
	n = splice(without, wolen, at, 0, with + off, rec_total(with, off),
		   &nlen);
	assert_int_equal(decode_rc(n, nlen), -EINVAL);
	free(n);
	off = find_rec(with, wlen, REC_PIC_MASTER, -1);
	n = splice(without, wolen, at, 0, with + off, rec_total(with, off),
		   &nlen);
	assert_int_equal(decode_rc(n, nlen), -EINVAL);
	free(n);
	/* An irqchip record naming the wrong chip. */
	off = find_rec(with, wlen, REC_PIC_MASTER, -1);
	with[off + REC_HDR_LEN] = KVM_IRQCHIP_IOAPIC;
	assert_int_equal(decode_rc(with, wlen), -EINVAL);
	with[off + REC_HDR_LEN] = KVM_IRQCHIP_PIC_MASTER;
	/* A struct record of the wrong size. */
	off = find_rec(with, wlen, REC_REGS, 0);
	wr32(with + off + 2, rd32(with + off + 2) - 1);
	n = splice(with, wlen, off + rec_total(with, off), 1, NULL, 0, &nlen);
	assert_int_equal(decode_rc(n, nlen), -EINVAL);
	free(n);
	free(with);
	free(without);
}

static void test_unknown_record_skipped(void **state)
{
	struct vmstate st, back;
	struct err e = {0};
	uint8_t *buf, *n, *n2;
	size_t len, nlen, n2len, off;
	uint8_t unk[REC_HDR_LEN + 100];
	uint8_t empty[REC_HDR_LEN] = {0x34, 0x12, 0, 0, 0, 0};

	(void)state;
	rng_state = 99;
	make_state(&st, 3, true, 5000, 12);
	assert_int_equal(vmstate_encode(&st, &buf, &len), 0);
	memset(unk, 0xa5, sizeof(unk));
	unk[0] = 0x77; /* type 0x7777 */
	unk[1] = 0x77;
	wr32(unk + 2, 100);
	off = find_rec(buf, len, REC_SREGS, 1);
	n = splice(buf, len, off, 0, unk, sizeof(unk), &nlen);
	/* And an empty one of type 0x1234 just before the end record. */
	n2 = splice(n, nlen, nlen - REC_HDR_LEN, 0, empty, sizeof(empty),
		    &n2len);
	assert_int_equal(vmstate_decode(n2, n2len, &back, &e), 0);
	assert_same(&st, &back);
	vmstate_free(&back);
	/* An unknown record whose length runs past the end. */
	wr32(n + off + 2, 0x7fffffff);
	assert_int_equal(decode_rc(n, nlen), -EINVAL);
	free(n);
	free(n2);
	free(buf);
	vmstate_free(&st);
}

static void test_random_mutations(void **state)
{
	uint8_t *buf, *m;
	size_t len;
	int ok = 0;

	(void)state;
	valid(&buf, &len, 2, true);
	m = malloc(len);
	assert_non_null(m);
	rng_state = 0xdeadbeef;
	for (int iter = 0; iter < 10000; iter++) {
		int nmut = 1 + (int)(rnd() % 8);
		size_t mlen = len;

		memcpy(m, buf, len);
		for (int k = 0; k < nmut; k++) {
			size_t pos = rnd() % len;

			switch (rnd() % 4) {
			case 0: /* a random byte */
				m[pos] = (uint8_t)rnd();
				break;
			case 1: /* a bit */
				m[pos] ^= (uint8_t)(1u << (rnd() % 8));
				break;
			case 2: /* a random 32-bit value (lengths, counts) */
				if (pos + 4 <= len)
					wr32(m + pos, (uint32_t)rnd());
				break;
			default: /* a shorter stream */
				mlen = pos;
				break;
			}
		}
		if (decode_rc(m, mlen) == 0)
			ok++;
	}
	/* Some mutations only touch payload bytes and still decode. */
	assert_true(ok > 0);
	free(m);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_encode_refuses_bad_state),
		cmocka_unit_test(test_truncated_everywhere),
		cmocka_unit_test(test_bad_header),
		cmocka_unit_test(test_oversized_counts),
		cmocka_unit_test(test_vcpu_index_out_of_range),
		cmocka_unit_test(test_duplicate_and_missing),
		cmocka_unit_test(test_records_that_do_not_belong),
		cmocka_unit_test(test_unknown_record_skipped),
		cmocka_unit_test(test_random_mutations),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
