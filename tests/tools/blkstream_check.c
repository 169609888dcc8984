/*
 * tests/tools/blkstream_check.c - checks, from the host, a disk image the
 * guest's `blkstream` test wrote (guest/README.md): write s (0, 1, ...)
 * went to 4 KiB block s % BLOCKS and is 512 little-endian 64-bit words,
 * word 0 = 0x5254534b4c42 ^ (seed << 48), word 1 = s, word 2 = the block,
 * word j >= 3 = mix(mix(mix(seed) ^ s) ^ j) with splitmix64's finaliser.
 * Every block must hold the last write to it; blocks no write reached
 * (WRITES < BLOCKS) are not checked.
 * usage: blkstream_check IMAGE SEED BLOCKS WRITES ; exit 0 when all match,
 * 1 on a mismatch (the first one is printed), 2 on usage or I/O errors.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 4096
#define WORDS (BLOCK / 8)
#define MAGIC 0x5254534b4c42ULL

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int parse(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 0);
	return !errno && end != s && !*end && s[0] != '-';
}

int main(int argc, char **argv)
{
	uint64_t seed, blocks, writes, n;
	unsigned char buf[BLOCK];
	FILE *f;

	if (argc != 5 || !parse(argv[2], &seed) || !parse(argv[3], &blocks) ||
	    !parse(argv[4], &writes) || !blocks) {
		fprintf(stderr,
			"usage: blkstream_check IMAGE SEED BLOCKS WRITES\n");
		return 2;
	}
	f = fopen(argv[1], "rb");
	if (!f) {
		perror(argv[1]);
		return 2;
	}
	n = writes < blocks ? writes : blocks;
	for (uint64_t b = 0; b < n; b++) {
		uint64_t s = b + blocks * ((writes - 1 - b) / blocks);
		uint64_t h = mix(mix(seed) ^ s);

		if (fseeko(f, (off_t)(b * BLOCK), SEEK_SET) ||
		    fread(buf, 1, BLOCK, f) != BLOCK) {
			printf("block %llu: image too short (%s)\n",
			       (unsigned long long)b,
			       ferror(f) ? strerror(errno) : "end of file");
			fclose(f);
			return 1;
		}
		for (uint64_t j = 0; j < WORDS; j++) {
			uint64_t want = j == 0 ? MAGIC ^ seed << 48 :
					j == 1 ? s :
					j == 2 ? b :
						 mix(h ^ j);

			if (le64(buf + 8 * j) == want)
				continue;
			printf("block %llu: expected write %llu, found write "
			       "%llu (word %llu: %016llx, want %016llx)\n",
			       (unsigned long long)b, (unsigned long long)s,
			       (unsigned long long)le64(buf + 8),
			       (unsigned long long)j,
			       (unsigned long long)le64(buf + 8 * j),
			       (unsigned long long)want);
			fclose(f);
			return 1;
		}
	}
	fclose(f);
	printf("%llu blocks match (%llu writes over %llu blocks, seed %llu)\n",
	       (unsigned long long)n, (unsigned long long)writes,
	       (unsigned long long)blocks, (unsigned long long)seed);
	return 0;
}
