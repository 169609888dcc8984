/*
 * tests/unit/test_msg.c - cluster message framing: encode/decode round
 * trips, every split of a stream into two and three chunks and byte by
 * byte, truncated input, zero-length and maximum payloads, oversized and
 * garbage headers (sticky failure), the per-decoder limit, receiving a
 * payload in place, and a fixed-seed fuzz of random and mutated streams
 * that must never crash or yield a message the decoder should have
 * refused.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/msg.h"

#define MAX_GOT 64

/* What the decoder yielded. */
struct got {
	int n;
	uint16_t type[MAX_GOT];
	uint32_t len[MAX_GOT];
	uint8_t *payload[MAX_GOT];
};

static void got_free(struct got *g)
{
	int i;

	for (i = 0; i < g->n; i++)
		free(g->payload[i]);
	g->n = 0;
}

/* Feed one chunk; returns the first error or 0. */
static int feed(struct msg_decoder *d, const uint8_t *buf, size_t len,
		struct got *g, struct err *e)
{
	struct msg m;
	size_t used;
	int rc;

	while (len) {
		rc = msg_decode(d, buf, len, &used, &m, e);
		assert_true(used <= len);
		buf += used;
		len -= used;
		if (rc < 0)
			return rc;
		if (rc == 0) {
			assert_int_equal(len, 0);
			continue;
		}
		assert_int_equal(rc, 1);
		assert_true(g->n < MAX_GOT);
		assert_true(m.len <= d->limit);
		assert_true(msg_type_known(m.type));
		g->type[g->n] = m.type;
		g->len[g->n] = m.len;
		g->payload[g->n] = malloc(m.len ? m.len : 1);
		if (m.len)
			memcpy(g->payload[g->n], m.payload, m.len);
		g->n++;
	}
	return 0;
}

static void fill(uint8_t *p, size_t n, unsigned int seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 8));
}

/* A stream of messages of the given types and lengths. */
struct stream {
	uint8_t *buf;
	size_t len;
	int n;
	uint16_t type[8];
	uint32_t plen[8];
};

static void stream_make(struct stream *s, int n, const uint16_t *types,
			const uint32_t *lens)
{
	size_t total = 0, off = 0;
	uint8_t *pl;
	int i, rc;

	for (i = 0; i < n; i++)
		total += MSG_HDR_SIZE + lens[i];
	s->buf = malloc(total);
	s->len = total;
	s->n = n;
	for (i = 0; i < n; i++) {
		pl = malloc(lens[i] + 1);
		fill(pl, lens[i], (unsigned int)i);
		rc = msg_encode(s->buf + off, total - off, types[i], pl,
				lens[i]);
		assert_int_equal(rc, MSG_HDR_SIZE + lens[i]);
		off += (size_t)rc;
		s->type[i] = types[i];
		s->plen[i] = lens[i];
		free(pl);
	}
}

static void check_got(const struct stream *s, const struct got *g)
{
	uint8_t want[512];
	int i;

	assert_int_equal(g->n, s->n);
	for (i = 0; i < s->n; i++) {
		assert_int_equal(g->type[i], s->type[i]);
		assert_int_equal(g->len[i], s->plen[i]);
		assert_true(s->plen[i] <= sizeof(want));
		fill(want, s->plen[i], (unsigned int)i);
		assert_memory_equal(g->payload[i], want, s->plen[i]);
	}
}

static const uint16_t std_types[] = {MSG_HELLO, MSG_USER_BASE, MSG_HEARTBEAT,
				     MSG_PING, 0xffff};
static const uint32_t std_lens[] = {52, 300, 0, 7, 1};

static void test_round_trip(void **state)
{
	struct msg_decoder d;
	struct stream s;
	struct got g = {0};
	struct err e;

	(void)state;
	stream_make(&s, 5, std_types, std_lens);
	msg_decoder_init(&d, MSG_MAX_PAYLOAD);
	assert_int_equal(feed(&d, s.buf, s.len, &g, &e), 0);
	check_got(&s, &g);
	assert_int_equal(d.hdr_have, 0); /* at a message boundary */
	got_free(&g);
	msg_decoder_free(&d);
	free(s.buf);
}

static void test_header_layout(void **state)
{
	uint8_t h[MSG_HDR_SIZE];
	const uint8_t want[MSG_HDR_SIZE] = {'D',  'V',	'M',  '1',  0x04, 0x03,
					    0x02, 0x01, 0x43, 0x00, 0,	  0};

	(void)state;
	msg_encode_hdr(h, MSG_PING, 0x01020304);
	assert_memory_equal(h, want, sizeof(want));
}

static void test_every_split_two(void **state)
{
	struct stream s;
	size_t i;

	(void)state;
	stream_make(&s, 5, std_types, std_lens);
	for (i = 0; i <= s.len; i++) {
		struct msg_decoder d;
		struct got g = {0};
		struct err e;

		msg_decoder_init(&d, MSG_MAX_PAYLOAD);
		assert_int_equal(feed(&d, s.buf, i, &g, &e), 0);
		assert_int_equal(feed(&d, s.buf + i, s.len - i, &g, &e), 0);
		check_got(&s, &g);
		got_free(&g);
		msg_decoder_free(&d);
	}
	free(s.buf);
}

static void test_every_split_three(void **state)
{
	static const uint16_t types[] = {MSG_AUTH, MSG_USER_BASE, MSG_AUTH_OK};
	static const uint32_t lens[] = {32, 20, 0};
	struct stream s;
	size_t i, j;

	(void)state;
	stream_make(&s, 3, types, lens);
	for (i = 0; i <= s.len; i++) {
		for (j = i; j <= s.len; j++) {
			struct msg_decoder d;
			struct got g = {0};
			struct err e;

			msg_decoder_init(&d, 64);
			assert_int_equal(feed(&d, s.buf, i, &g, &e), 0);
			assert_int_equal(feed(&d, s.buf + i, j - i, &g, &e), 0);
			assert_int_equal(feed(&d, s.buf + j, s.len - j, &g, &e),
					 0);
			check_got(&s, &g);
			got_free(&g);
			msg_decoder_free(&d);
		}
	}
	free(s.buf);
}

static void test_byte_by_byte(void **state)
{
	struct msg_decoder d;
	struct stream s;
	struct got g = {0};
	struct err e;
	size_t i;

	(void)state;
	stream_make(&s, 5, std_types, std_lens);
	msg_decoder_init(&d, MSG_MAX_PAYLOAD);
	for (i = 0; i < s.len; i++)
		assert_int_equal(feed(&d, s.buf + i, 1, &g, &e), 0);
	check_got(&s, &g);
	got_free(&g);
	msg_decoder_free(&d);
	free(s.buf);
}

static void test_truncated_waits(void **state)
{
	uint8_t buf[MSG_HDR_SIZE + 10];
	struct msg_decoder d;
	struct msg m;
	struct err e;
	size_t used;

	(void)state;
	msg_encode(buf, sizeof(buf), MSG_PING, "0123456789", 10);
	msg_decoder_init(&d, 100);
	/* Half a header, then the rest of it and part of the payload. */
	assert_int_equal(msg_decode(&d, buf, 5, &used, &m, &e), 0);
	assert_int_equal(used, 5);
	assert_int_equal(msg_decode(&d, buf + 5, 10, &used, &m, &e), 0);
	assert_int_equal(used, 10);
	/* An empty chunk changes nothing. */
	assert_int_equal(msg_decode(&d, buf + 15, 0, &used, &m, &e), 0);
	assert_int_equal(used, 0);
	assert_int_equal(msg_decode(&d, buf + 15, 7, &used, &m, &e), 1);
	assert_int_equal(used, 7);
	assert_int_equal(m.type, MSG_PING);
	assert_int_equal(m.len, 10);
	assert_memory_equal(m.payload, "0123456789", 10);
	msg_decoder_free(&d);
}

static void test_zero_length(void **state)
{
	uint8_t buf[MSG_HDR_SIZE];
	struct msg_decoder d;
	struct msg m;
	struct err e;
	size_t used;

	(void)state;
	assert_int_equal(msg_encode(buf, sizeof(buf), MSG_HEARTBEAT, NULL, 0),
			 MSG_HDR_SIZE);
	msg_decoder_init(&d, 0); /* even a zero limit takes empty messages */
	assert_int_equal(msg_decode(&d, buf, sizeof(buf), &used, &m, &e), 1);
	assert_int_equal(used, MSG_HDR_SIZE);
	assert_int_equal(m.type, MSG_HEARTBEAT);
	assert_int_equal(m.len, 0);
	msg_decoder_free(&d);
}

static void put_hdr(uint8_t *h, uint32_t magic, uint32_t len, uint16_t type,
		    uint16_t flags)
{
	uint8_t tmp[MSG_HDR_SIZE];

	msg_encode_hdr(tmp, type, len);
	memcpy(h, tmp, sizeof(tmp));
	h[0] = (uint8_t)magic;
	h[1] = (uint8_t)(magic >> 8);
	h[2] = (uint8_t)(magic >> 16);
	h[3] = (uint8_t)(magic >> 24);
	h[10] = (uint8_t)flags;
	h[11] = (uint8_t)(flags >> 8);
}

/* Decode one header; expect @want and a reason containing @needle. */
static void expect_refused(uint32_t magic, uint32_t len, uint16_t type,
			   uint16_t flags, uint32_t limit, int want,
			   const char *needle)
{
	uint8_t h[MSG_HDR_SIZE];
	struct msg_decoder d;
	struct msg m;
	struct err e = {0};
	size_t used;

	put_hdr(h, magic, len, type, flags);
	msg_decoder_init(&d, limit);
	assert_int_equal(msg_decode(&d, h, sizeof(h), &used, &m, &e), want);
	assert_int_equal(e.code, want);
	if (!strstr(e.msg, needle))
		fail_msg("reason \"%s\" lacks \"%s\"", e.msg, needle);
	/* Sticky: even a valid message is refused now. */
	msg_encode_hdr(h, MSG_PING, 0);
	assert_true(msg_decode(&d, h, sizeof(h), &used, &m, &e) < 0);
	msg_decoder_free(&d);
}

static void test_oversized(void **state)
{
	uint8_t big[8];

	(void)state;
	expect_refused(MSG_MAGIC, MSG_MAX_PAYLOAD + 1, MSG_PING, 0,
		       MSG_MAX_PAYLOAD, -EMSGSIZE, "over the");
	expect_refused(MSG_MAGIC, 0xffffffffu, MSG_PING, 0, MSG_MAX_PAYLOAD,
		       -EMSGSIZE, "4294967295 bytes");
	expect_refused(MSG_MAGIC, 129, MSG_HELLO, 0, 128, -EMSGSIZE,
		       "128-byte limit");
	assert_int_equal(msg_encode(big, sizeof(big), MSG_PING, big,
				    MSG_MAX_PAYLOAD + 1),
			 -EMSGSIZE);
	assert_int_equal(msg_encode(big, sizeof(big), MSG_PING, big, 1),
			 -ENOBUFS);
	assert_int_equal(msg_encode(big, sizeof(big), 7, NULL, 0), -EINVAL);
}

static void test_max_payload(void **state)
{
	size_t total = MSG_HDR_SIZE + MSG_MAX_PAYLOAD;
	uint8_t *buf = malloc(total);
	struct msg_decoder d;
	struct got g = {0};
	struct err e;

	(void)state;
	fill(buf + MSG_HDR_SIZE, MSG_MAX_PAYLOAD, 9);
	assert_int_equal(msg_encode(buf, total, MSG_STATS_RESP,
				    buf + MSG_HDR_SIZE, MSG_MAX_PAYLOAD),
			 (int)total);
	msg_decoder_init(&d, MSG_MAX_PAYLOAD);
	/* In uneven chunks so the payload is gathered, not handed out. */
	assert_int_equal(feed(&d, buf, 1000, &g, &e), 0);
	assert_int_equal(feed(&d, buf + 1000, total - 1000, &g, &e), 0);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.len[0], MSG_MAX_PAYLOAD);
	assert_memory_equal(g.payload[0], buf + MSG_HDR_SIZE, MSG_MAX_PAYLOAD);
	got_free(&g);
	msg_decoder_free(&d);
	free(buf);
}

static void test_garbage_headers(void **state)
{
	(void)state;
	expect_refused(0x50545448, 0, MSG_PING, 0, 100, -EPROTO, "bad magic");
	expect_refused(0, 0, 0, 0, 100, -EPROTO, "bad magic");
	expect_refused(MSG_MAGIC, 0, 0, 0, 100, -EPROTO,
		       "unknown message type 0");
	expect_refused(MSG_MAGIC, 0, 6, 0, 100, -EPROTO,
		       "unknown message type 6");
	expect_refused(MSG_MAGIC, 0, MSG_USER_BASE - 1, 0, 100, -EPROTO,
		       "unknown message type 63");
	expect_refused(MSG_MAGIC, 0, MSG_PING, 1, 100, -EPROTO, "flags");
}

static void test_garbage_after_good(void **state)
{
	uint8_t buf[2 * MSG_HDR_SIZE + 4];
	struct msg_decoder d;
	struct got g = {0};
	struct err e;

	(void)state;
	msg_encode(buf, sizeof(buf), MSG_PING, "abcd", 4);
	memcpy(buf + MSG_HDR_SIZE + 4, "GET / HTTP/1", MSG_HDR_SIZE);
	msg_decoder_init(&d, 100);
	assert_int_equal(feed(&d, buf, sizeof(buf), &g, &e), -EPROTO);
	assert_int_equal(g.n, 1); /* the good message before it came out */
	assert_non_null(strstr(e.msg, "bad magic"));
	got_free(&g);
	msg_decoder_free(&d);
}

static void test_set_limit(void **state)
{
	uint8_t buf[MSG_HDR_SIZE + 200];
	struct msg_decoder d;
	struct got g = {0};
	struct err e;

	(void)state;
	memset(buf, 0, sizeof(buf));
	msg_encode(buf, sizeof(buf), MSG_PING, buf + MSG_HDR_SIZE, 200);
	msg_decoder_init(&d, 100);
	msg_decoder_set_limit(&d, 200);
	assert_int_equal(feed(&d, buf, sizeof(buf), &g, &e), 0);
	assert_int_equal(g.n, 1);
	msg_decoder_set_limit(&d, 199);
	assert_int_equal(feed(&d, buf, sizeof(buf), &g, &e), -EMSGSIZE);
	got_free(&g);
	msg_decoder_free(&d);
}

/* The rest of a large payload written in place, as the engine does. */
static void test_direct(void **state)
{
	const uint32_t len = 100000;
	size_t total = MSG_HDR_SIZE + len, off, room;
	uint8_t *buf = malloc(total), *dst;
	struct msg_decoder d;
	struct msg m;
	struct err e;
	size_t used;
	int rc;

	(void)state;
	fill(buf + MSG_HDR_SIZE, len, 3);
	msg_encode(buf, total, MSG_PING, buf + MSG_HDR_SIZE, len);
	msg_decoder_init(&d, MSG_MAX_PAYLOAD);
	/* Nothing to receive in place before a payload has begun. */
	assert_int_equal(msg_decoder_direct(&d, &dst), 0);
	assert_int_equal(msg_decode(&d, buf, 5, &used, &m, &e), 0);
	assert_int_equal(msg_decoder_direct(&d, &dst), 0);
	assert_int_equal(msg_decode(&d, buf + 5, 1000, &used, &m, &e), 0);
	off = 1005;
	while (off < total) {
		room = msg_decoder_direct(&d, &dst);
		assert_int_equal(room, total - off);
		if (room > 7777)
			room = 7777;
		memcpy(dst, buf + off, room);
		off += room;
		rc = msg_decoder_commit(&d, room, &m);
		assert_int_equal(rc, off == total);
	}
	assert_int_equal(m.type, MSG_PING);
	assert_int_equal(m.len, len);
	assert_memory_equal(m.payload, buf + MSG_HDR_SIZE, len);
	/* And the stream goes on with the next message. */
	assert_int_equal(msg_decoder_direct(&d, &dst), 0);
	assert_int_equal(msg_decode(&d, buf, total, &used, &m, &e), 1);
	assert_int_equal(used, total);
	msg_decoder_free(&d);
	free(buf);
}

static void test_printable(void **state)
{
	char out[8];

	(void)state;
	assert_string_equal(msg_printable(out, sizeof(out), "ab\ncd\x80", 6),
			    "ab?cd?");
	assert_string_equal(msg_printable(out, sizeof(out), "0123456789", 10),
			    "0123456");
	assert_string_equal(msg_printable(out, sizeof(out), "", 0), "");
}

static uint32_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*s >> 33);
}

/* Feed @buf in random chunks; failure must be sticky and nothing leaks. */
static void fuzz_feed(const uint8_t *buf, size_t len, uint32_t limit,
		      uint64_t *seed)
{
	struct msg_decoder d;
	struct got g = {0};
	struct err e;
	size_t off = 0;
	int rc = 0;

	msg_decoder_init(&d, limit);
	while (off < len) {
		size_t n = 1 + rnd(seed) % 300;

		if (n > len - off)
			n = len - off;
		rc = feed(&d, buf + off, n, &g, &e);
		got_free(&g);
		off += n;
		if (rc < 0)
			break;
	}
	if (rc < 0)
		assert_true(d.failed);
	msg_decoder_free(&d);
}

static void test_fuzz(void **state)
{
	uint8_t buf[4096];
	uint64_t seed = 0x5eed;
	struct stream s;
	int round;
	size_t i;

	(void)state;
	/* Pure noise, sometimes starting with a valid magic. */
	for (round = 0; round < 2000; round++) {
		for (i = 0; i < sizeof(buf); i++)
			buf[i] = (uint8_t)rnd(&seed);
		if (round & 1)
			msg_encode_hdr(buf, (uint16_t)rnd(&seed),
				       rnd(&seed) % 600);
		fuzz_feed(buf, sizeof(buf), 512, &seed);
	}
	/* Valid streams with a few bytes flipped. */
	stream_make(&s, 5, std_types, std_lens);
	for (round = 0; round < 5000; round++) {
		uint8_t *m = malloc(s.len);
		int k, flips = 1 + (int)(rnd(&seed) % 4);

		memcpy(m, s.buf, s.len);
		for (k = 0; k < flips; k++)
			m[rnd(&seed) % s.len] ^=
				(uint8_t)(1 + rnd(&seed) % 255);
		fuzz_feed(m, s.len, 400, &seed);
		free(m);
	}
	free(s.buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_header_layout),
		cmocka_unit_test(test_every_split_two),
		cmocka_unit_test(test_every_split_three),
		cmocka_unit_test(test_byte_by_byte),
		cmocka_unit_test(test_truncated_waits),
		cmocka_unit_test(test_zero_length),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_max_payload),
		cmocka_unit_test(test_garbage_headers),
		cmocka_unit_test(test_garbage_after_good),
		cmocka_unit_test(test_set_limit),
		cmocka_unit_test(test_direct),
		cmocka_unit_test(test_printable),
		cmocka_unit_test(test_fuzz),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
