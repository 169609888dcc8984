/* tests/unit/test_parse.c - sizes and counts from the command line. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "util/parse.h"

static void test_sizes_with_units(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(parse_size("512M", &v), 0);
	assert_int_equal(v, 512ULL << 20);
	assert_int_equal(parse_size("2g", &v), 0);
	assert_int_equal(v, 2ULL << 30);
	assert_int_equal(parse_size("64KiB", &v), 0);
	assert_int_equal(v, 64ULL << 10);
	assert_int_equal(parse_size("1T", &v), 0);
	assert_int_equal(v, 1ULL << 40);
	assert_int_equal(parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(parse_size("100MB", &v), 0);
	assert_int_equal(v, 100ULL << 20);
}

static void test_sizes_rejected(void **state)
{
	uint64_t v = 7;

	(void)state;
	assert_int_equal(parse_size("", &v), -EINVAL);
	assert_int_equal(parse_size("M", &v), -EINVAL);
	assert_int_equal(parse_size("-1M", &v), -EINVAL);
	assert_int_equal(parse_size(" 1M", &v), -EINVAL);
	assert_int_equal(parse_size("1X", &v), -EINVAL);
	assert_int_equal(parse_size("1MM", &v), -EINVAL);
	assert_int_equal(parse_size("1.5G", &v), -EINVAL);
	assert_int_equal(parse_size("99999999999999999999", &v), -ERANGE);
	assert_int_equal(parse_size("99999999999T", &v), -ERANGE);
	assert_int_equal(parse_size(NULL, &v), -EINVAL);
	assert_int_equal(v, 7);
}

static void test_int_range(void **state)
{
	long v;

	(void)state;
	assert_int_equal(parse_int_range("4", 1, 64, &v), 0);
	assert_int_equal(v, 4);
	assert_int_equal(parse_int_range("0", 1, 64, &v), -ERANGE);
	assert_int_equal(parse_int_range("65", 1, 64, &v), -ERANGE);
	assert_int_equal(parse_int_range("4x", 1, 64, &v), -EINVAL);
	assert_int_equal(parse_int_range("", 1, 64, &v), -EINVAL);
	assert_int_equal(parse_int_range("x", 1, 64, &v), -EINVAL);
}

static void test_mac(void **state)
{
	uint8_t mac[6] = {0};
	static const uint8_t want[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};

	(void)state;
	assert_int_equal(parse_mac("52:54:00:AB:cd:ef", mac), 0);
	assert_memory_equal(mac, want, 6);
	assert_int_equal(parse_mac("52:54:00:ab:cd", mac), -EINVAL);
	assert_int_equal(parse_mac("52:54:00:ab:cd:eg", mac), -EINVAL);
	assert_int_equal(parse_mac("52-54-00-ab-cd-ef", mac), -EINVAL);
	assert_int_equal(parse_mac("52:54:00:ab:cd:ef:", mac), -EINVAL);
	assert_int_equal(parse_mac(NULL, mac), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes_with_units),
		cmocka_unit_test(test_sizes_rejected),
		cmocka_unit_test(test_int_range),
		cmocka_unit_test(test_mac),
	};

	return cmocka_run_group_tests_name("parse", tests, NULL, NULL);
}
