/*
 * tests/tools/blkcheck.c - checks, from the host, the pattern the guest's
 * `blk` test wrote over a disk image: sector s holds 64 little-endian
 * 64-bit words, word j = (seed << 48) ^ (s << 8) ^ j (guest/README.md).
 * usage: blkcheck IMAGE SEED ; exit 0 when every sector matches.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int main(int argc, char **argv)
{
	unsigned char sec[512];
	uint64_t seed, s = 0;
	FILE *f;

	if (argc != 3) {
		fprintf(stderr, "usage: blkcheck IMAGE SEED\n");
		return 2;
	}
	seed = strtoull(argv[2], NULL, 0) % 65536;
	f = fopen(argv[1], "rb");
	if (!f) {
		perror(argv[1]);
		return 2;
	}
	while (fread(sec, 1, sizeof(sec), f) == sizeof(sec)) {
		for (uint64_t j = 0; j < 64; j++) {
			uint64_t want = (seed << 48) ^ (s << 8) ^ j;

			if (le64(sec + 8 * j) != want) {
				printf("sector %llu word %llu: %016llx, want "
				       "%016llx\n",
				       (unsigned long long)s,
				       (unsigned long long)j,
				       (unsigned long long)le64(sec + 8 * j),
				       (unsigned long long)want);
				fclose(f);
				return 1;
			}
		}
		s++;
	}
	fclose(f);
	printf("%llu sectors match\n", (unsigned long long)s);
	return s ? 0 : 1;
}
