/*
 * tests/unit/test_devstate.c - the device-state record of a migration
 * (migration/devstate.c) for a machine with the legacy devices only: a
 * round trip carries the UART, RTC, i8042 and PM registers; hostile
 * records (cut at every byte, wrong magic or version, a device count or
 * kind that does not match, trailing bytes, a bad bool, an absurd clock
 * offset, random mutations) are refused without crashing or leaking.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "migration/devstate.h"

/* A machine as far as devstate touches it: the legacy devices' locks. */
static struct machine *machine_new(void)
{
	struct machine *pc = calloc(1, sizeof(*pc));

	assert_non_null(pc);
	pthread_mutex_init(&pc->uart.lock, NULL);
	pthread_mutex_init(&pc->rtc.lock, NULL);
	pthread_mutex_init(&pc->kbd.lock, NULL);
	pthread_mutex_init(&pc->pm.lock, NULL);
	return pc;
}

static void machine_free(struct machine *pc)
{
	pthread_mutex_destroy(&pc->uart.lock);
	pthread_mutex_destroy(&pc->rtc.lock);
	pthread_mutex_destroy(&pc->kbd.lock);
	pthread_mutex_destroy(&pc->pm.lock);
	free(pc);
}

static void fill(struct machine *pc)
{
	pc->uart.ier = 0x05;
	pc->uart.lcr = 0x03;
	pc->uart.mcr = 0x0b;
	pc->uart.scr = 0x5a;
	pc->uart.dll = 0x01;
	pc->rtc.index = 0x0b;
	for (int i = 0; i < 128; i++)
		pc->rtc.nvram[i] = (uint8_t)(i * 7);
	pc->rtc.offset_sec = -3600;
	pc->kbd.ccb = 0x47;
	pc->kbd.out_full = true;
	pc->kbd.out_buf = 0xfa;
	pc->pm.pm1_en = 0x0100;
	pc->pm.pm1_cnt = 0x2001;
	pc->pm.cf9 = 0x02;
}

static void encode(struct machine *pc, uint8_t **buf, size_t *len)
{
	struct err e = {0};

	assert_int_equal(devstate_save(pc, buf, len, &e), 0);
	assert_true(*len > 8);
}

static void test_round_trip(void **state)
{
	struct machine *a = machine_new(), *b = machine_new();
	struct devstate *ds = NULL;
	struct err e = {0};
	uint8_t *buf;
	size_t len;

	(void)state;
	fill(a);
	encode(a, &buf, &len);
	assert_int_equal(devstate_decode(b, buf, len, &ds, &e), 0);
	assert_int_equal(ds->uart.ier, 0x05);
	assert_int_equal(ds->rtc_offset_sec, -3600);
	assert_int_equal(ds->kbd_ccb, 0x47);
	assert_true(ds->kbd_out_full);
	assert_int_equal(ds->pm1_cnt, 0x2001);
	assert_int_equal(devstate_load(b, ds, &e), 0);
	assert_int_equal(b->uart.ier, 0x05);
	assert_int_equal(b->uart.scr, 0x5a);
	assert_memory_equal(b->rtc.nvram, a->rtc.nvram, 128);
	assert_int_equal(b->rtc.index, 0x0b);
	assert_int_equal(b->rtc.offset_sec, -3600);
	assert_int_equal(b->kbd.out_buf, 0xfa);
	assert_int_equal(b->pm.pm1_en, 0x0100);
	assert_int_equal(b->pm.cf9, 0x02);
	devstate_free(ds);
	free(buf);
	machine_free(a);
	machine_free(b);
}

static void expect_refused(struct machine *pc, const uint8_t *buf, size_t len)
{
	struct devstate *ds = (struct devstate *)1;
	struct err e = {0};

	assert_int_not_equal(devstate_decode(pc, buf, len, &ds, &e), 0);
	assert_null(ds);
	assert_true(e.msg[0] != 0);
}

static void test_truncated(void **state)
{
	struct machine *pc = machine_new();
	uint8_t *buf;
	size_t len;

	(void)state;
	fill(pc);
	encode(pc, &buf, &len);
	for (size_t n = 0; n < len; n++)
		expect_refused(pc, buf, n);
	free(buf);
	machine_free(pc);
}

static void test_bad_header_and_shape(void **state)
{
	struct machine *pc = machine_new();
	uint8_t *buf, *longer;
	size_t len;

	(void)state;
	encode(pc, &buf, &len);
	buf[0] ^= 1; /* magic */
	expect_refused(pc, buf, len);
	buf[0] ^= 1;
	buf[4] = 9; /* version */
	expect_refused(pc, buf, len);
	buf[4] = 1;
	buf[len - 4] = 1; /* one virtio device; this machine has none */
	expect_refused(pc, buf, len);
	buf[len - 4] = 0;
	longer = calloc(1, len + 1); /* trailing byte */
	memcpy(longer, buf, len);
	expect_refused(pc, longer, len + 1);
	buf[8 + 9] = 2; /* thr_irq_pending is a bool */
	expect_refused(pc, buf, len);
	buf[8 + 9] = 0;
	/* the RTC offset: after 10 UART bytes, index, nmi, 128 NVRAM bytes */
	memset(buf + 8 + 10 + 2 + 128, 0x7f, 8);
	expect_refused(pc, buf, len);
	free(longer);
	free(buf);
	machine_free(pc);
}

static void test_mutations(void **state)
{
	struct machine *pc = machine_new();
	uint64_t x = 88172645463325252ULL;
	uint8_t *buf, *m;
	size_t len;

	(void)state;
	fill(pc);
	encode(pc, &buf, &len);
	m = malloc(len);
	for (int i = 0; i < 5000; i++) {
		struct devstate *ds = NULL;
		struct err e = {0};

		memcpy(m, buf, len);
		for (int k = 0; k < 4; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			m[x % len] = (uint8_t)(x >> 32);
		}
		if (!devstate_decode(pc, m, len, &ds, &e))
			assert_int_equal(devstate_load(pc, ds, &e), 0);
		devstate_free(ds);
	}
	free(m);
	free(buf);
	machine_free(pc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_bad_header_and_shape),
		cmocka_unit_test(test_mutations),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
