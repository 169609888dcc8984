/*
 * tests/unit/test_blk_remote.c - the remote block protocol
 * (virtio/blk_remote.h): messages encoded and decoded, and hostile ones
 * refused (every truncation, oversized, malformed, out of the image, a
 * bad or replayed MAC, every single-byte change); the handshake with the
 * right and a wrong secret; the server over a socket pair on a real file;
 * the client against it (queued and synchronous requests, no agent).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <cmocka.h>
#include <sodium.h>

#include "util/clock.h"
#include "util/parse.h"
#include "virtio/blk_remote.h"

#define SIZE (4u << 20)

static const uint8_t secret[32] = "0123456789abcdef0123456789abcdef";

/* A client and a server channel sharing a session key. */
static void chans(struct brp_chan *cl, struct brp_chan *sv)
{
	memset(cl, 0, sizeof(*cl));
	memset(cl->key, 0x5a, sizeof(cl->key));
	cl->send_dir = 'C';
	cl->recv_dir = 'S';
	*sv = *cl;
	sv->send_dir = 'S';
	sv->recv_dir = 'C';
}

static uint8_t *buf_new(size_t n)
{
	uint8_t *b = calloc(1, n);

	assert_non_null(b);
	return b;
}

static void test_round_trip(void **state)
{
	struct brp_chan cl, sv;
	uint8_t *out = buf_new(BRP_HDR_LEN + 4096 + BRP_MAC_LEN);
	uint8_t data[4096];
	const struct brp_msg reqs[] = {
		{.type = BRP_READ, .id = 1, .offset = 4096, .length = 4096},
		{.type = BRP_WRITE,
		 .flags = BRP_F_FUA,
		 .paylen = 4096,
		 .id = 2,
		 .offset = 0,
		 .length = 4096},
		{.type = BRP_FLUSH, .id = 3},
		{.type = BRP_DISCARD, .id = 4, .offset = 512, .length = 1024},
		{.type = BRP_SIZE, .id = 255},
	};
	char why[128];

	(void)state;
	chans(&cl, &sv);
	for (unsigned int i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	for (unsigned int i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		const uint8_t *pay;
		struct brp_msg m;
		size_t n = brp_encode(&cl, &reqs[i], data, out), used = 0;

		assert_int_equal(n, BRP_HDR_LEN + reqs[i].paylen + BRP_MAC_LEN);
		assert_int_equal(brp_decode(&sv, false, out, n, &m, &pay, &used,
					    why, sizeof(why)),
				 0);
		assert_int_equal(used, n);
		assert_memory_equal(&m, &reqs[i], sizeof(m));
		if (m.paylen)
			assert_memory_equal(pay, data, m.paylen);
	}
	/* a reply with data, and one with SIZE's flags */
	{
		struct brp_msg r = {.type = BRP_READ,
				    .paylen = 4096,
				    .id = 1,
				    .length = 0},
			       s = {.type = BRP_SIZE,
				    .flags = BRP_F_CAN_DISCARD,
				    .id = 9,
				    .length = SIZE},
			       m;
		const uint8_t *pay;
		size_t n, used;

		n = brp_encode(&sv, &r, data, out);
		assert_int_equal(brp_decode(&cl, true, out, n, &m, &pay, &used,
					    why, sizeof(why)),
				 0);
		assert_memory_equal(pay, data, 4096);
		n = brp_encode(&sv, &s, NULL, out);
		assert_int_equal(brp_decode(&cl, true, out, n, &m, &pay, &used,
					    why, sizeof(why)),
				 0);
		assert_int_equal(m.length, SIZE);
		assert_int_equal(m.flags, BRP_F_CAN_DISCARD);
	}
	free(out);
}

/* Every prefix of a message is "not there yet", never a message. */
static void test_truncated(void **state)
{
	struct brp_chan cl, sv;
	uint8_t *out = buf_new(BRP_HDR_LEN + 1024 + BRP_MAC_LEN);
	struct brp_msg w = {.type = BRP_WRITE,
			    .paylen = 1024,
			    .id = 7,
			    .offset = 8192,
			    .length = 1024},
		       m;
	uint8_t data[1024] = {1, 2, 3};
	const uint8_t *pay;
	size_t n, used;
	char why[128];

	(void)state;
	chans(&cl, &sv);
	n = brp_encode(&cl, &w, data, out);
	for (size_t len = 0; len < n; len++)
		assert_int_equal(brp_decode(&sv, false, out, len, &m, &pay,
					    &used, why, sizeof(why)),
				 -EAGAIN);
	assert_int_equal(brp_decode(&sv, false, out, n, &m, &pay, &used, why,
				    sizeof(why)),
			 0);
	free(out);
}

static void put_hdr(uint8_t *hdr, uint8_t type, uint8_t status, uint16_t flags,
		    uint32_t paylen, uint64_t off, uint64_t len)
{
	struct brp_msg m = {.type = type,
			    .status = status,
			    .flags = flags,
			    .paylen = paylen,
			    .offset = off,
			    .length = len};

	brp_pack_hdr(&m, hdr);
}

static int parse(uint8_t type, uint8_t status, uint16_t flags, uint32_t paylen,
		 uint64_t off, uint64_t len, bool reply)
{
	uint8_t hdr[BRP_HDR_LEN];
	struct brp_msg m;
	char why[128] = "";
	int rc;

	put_hdr(hdr, type, status, flags, paylen, off, len);
	rc = brp_parse_hdr(hdr, reply, &m, why, sizeof(why));
	if (rc)
		assert_true(why[0]); /* a reason for the log line */
	return rc;
}

static void test_bad_headers(void **state)
{
	(void)state;
	/* oversized */
	assert_int_equal(parse(BRP_WRITE, 0, 0, BRP_MAX_DATA + 1, 0,
			       BRP_MAX_DATA + 1, false),
			 -EMSGSIZE);
	assert_int_equal(parse(BRP_READ, 0, 0, 0, 0, BRP_MAX_DATA + 1, false),
			 -EMSGSIZE);
	assert_int_equal(parse(BRP_READ, 0, 0, UINT32_MAX, 0, 0, true),
			 -EMSGSIZE);
	/* the largest is fine */
	assert_int_equal(
		parse(BRP_WRITE, 0, 0, BRP_MAX_DATA, 0, BRP_MAX_DATA, false),
		0);
	/* malformed requests */
	assert_int_equal(parse(0, 0, 0, 0, 0, 0, false), -EPROTO);
	assert_int_equal(parse(6, 0, 0, 0, 0, 0, false), -EPROTO);
	assert_int_equal(parse(255, 0, 0, 0, 0, 0, true), -EPROTO);
	assert_int_equal(parse(BRP_READ, 1, 0, 0, 0, 512, false), -EPROTO);
	assert_int_equal(parse(BRP_READ, 0, BRP_F_FUA, 0, 0, 512, false),
			 -EPROTO);
	assert_int_equal(parse(BRP_WRITE, 0, 4, 512, 0, 512, false), -EPROTO);
	assert_int_equal(parse(BRP_READ, 0, 0, 512, 0, 512, false), -EPROTO);
	assert_int_equal(parse(BRP_READ, 0, 0, 0, 0, 0, false), -EPROTO);
	assert_int_equal(parse(BRP_WRITE, 0, 0, 512, 0, 1024, false), -EPROTO);
	assert_int_equal(parse(BRP_WRITE, 0, 0, 0, 0, 0, false), -EPROTO);
	assert_int_equal(parse(BRP_DISCARD, 0, 0, 8, 0, 8, false), -EPROTO);
	assert_int_equal(parse(BRP_FLUSH, 0, 0, 0, 1, 0, false), -EPROTO);
	assert_int_equal(parse(BRP_SIZE, 0, 0, 0, 0, 1, false), -EPROTO);
	/* malformed replies */
	assert_int_equal(parse(BRP_READ, 4, 0, 0, 0, 0, true), -EPROTO);
	assert_int_equal(parse(BRP_WRITE, 0, 0, 512, 0, 0, true), -EPROTO);
	assert_int_equal(parse(BRP_READ, BRP_S_IOERR, 0, 512, 0, 0, true),
			 -EPROTO);
	assert_int_equal(parse(BRP_FLUSH, 0, 1, 0, 0, 0, true), -EPROTO);
	assert_int_equal(parse(BRP_SIZE, 0, 4, 0, 0, 0, true), -EPROTO);
	assert_int_equal(parse(BRP_SIZE, 0, 3, 0, 0, SIZE, true), 0);
}

static void test_out_of_range(void **state)
{
	struct brp_msg m = {.type = BRP_READ};

	(void)state;
	m.offset = 0;
	m.length = SIZE;
	assert_int_equal(brp_check_request(&m, SIZE, false, true), BRP_S_OK);
	m.offset = SIZE - 512;
	m.length = 512;
	assert_int_equal(brp_check_request(&m, SIZE, false, true), BRP_S_OK);
	m.length = 1024;
	assert_int_equal(brp_check_request(&m, SIZE, false, true), BRP_S_RANGE);
	m.offset = SIZE + 1;
	m.length = 0;
	assert_int_equal(brp_check_request(&m, SIZE, false, true), BRP_S_RANGE);
	/* offset + length wraps around */
	m.offset = UINT64_MAX - 511;
	m.length = 1024;
	assert_int_equal(brp_check_request(&m, SIZE, false, true), BRP_S_RANGE);
	m.type = BRP_DISCARD;
	m.offset = 4096;
	m.length = UINT64_MAX;
	assert_int_equal(brp_check_request(&m, SIZE, false, true), BRP_S_RANGE);
	m.length = 4096;
	assert_int_equal(brp_check_request(&m, SIZE, false, false),
			 BRP_S_UNSUPP);
	assert_int_equal(brp_check_request(&m, SIZE, true, true), BRP_S_UNSUPP);
	m.type = BRP_WRITE;
	assert_int_equal(brp_check_request(&m, SIZE, true, true), BRP_S_UNSUPP);
	assert_int_equal(brp_check_request(&m, SIZE, false, false), BRP_S_OK);
}

/* A changed byte anywhere, a replay, the other direction: refused. */
static void test_bad_mac(void **state)
{
	struct brp_chan cl, sv, s2;
	uint8_t out[BRP_HDR_LEN + 512 + BRP_MAC_LEN], copy[sizeof(out)];
	struct brp_msg w = {.type = BRP_WRITE,
			    .paylen = 512,
			    .id = 3,
			    .offset = 0,
			    .length = 512},
		       m;
	uint8_t data[512];
	const uint8_t *pay;
	size_t n, used;
	char why[128];

	(void)state;
	chans(&cl, &sv);
	memset(data, 0xab, sizeof(data));
	n = brp_encode(&cl, &w, data, out);
	for (size_t i = 0; i < n; i++) {
		for (int bit = 0; bit < 8; bit++) {
			int rc;

			memcpy(copy, out, n);
			copy[i] ^= (uint8_t)(1u << bit);
			s2 = sv;
			rc = brp_decode(&s2, false, copy, n, &m, &pay, &used,
					why, sizeof(why));
			assert_int_not_equal(rc, 0);
			assert_int_equal(s2.recv_seq, sv.recv_seq);
		}
	}
	/* the original passes once, not twice (sequence numbers) */
	assert_int_equal(brp_decode(&sv, false, out, n, &m, &pay, &used, why,
				    sizeof(why)),
			 0);
	assert_int_equal(brp_decode(&sv, false, out, n, &m, &pay, &used, why,
				    sizeof(why)),
			 -EBADMSG);
	/* a message reflected back to its sender */
	chans(&cl, &sv);
	n = brp_encode(&cl, &(struct brp_msg){.type = BRP_FLUSH}, NULL, out);
	s2 = cl;
	assert_int_equal(brp_decode(&s2, true, out, n, &m, &pay, &used, why,
				    sizeof(why)),
			 -EBADMSG);
	/* another session key */
	chans(&cl, &sv);
	sv.key[0] ^= 1;
	n = brp_encode(&cl, &(struct brp_msg){.type = BRP_FLUSH}, NULL, out);
	assert_int_equal(brp_decode(&sv, false, out, n, &m, &pay, &used, why,
				    sizeof(why)),
			 -EBADMSG);
}

static void test_parse_uri(void **state)
{
	struct err e = {0};
	char host[64];
	uint16_t port;

	(void)state;
	assert_int_equal(parse_tcp_uri("tcp:10.0.0.1:4000", host, sizeof(host),
				       &port, &e),
			 0);
	assert_string_equal(host, "10.0.0.1");
	assert_int_equal(port, 4000);
	assert_int_not_equal(
		parse_tcp_uri("udp:h:1", host, sizeof(host), &port, &e), 0);
	assert_int_not_equal(
		parse_tcp_uri("tcp:h:", host, sizeof(host), &port, &e), 0);
	assert_int_not_equal(
		parse_tcp_uri("tcp::5", host, sizeof(host), &port, &e), 0);
	assert_int_not_equal(
		parse_tcp_uri("tcp:h:70000", host, sizeof(host), &port, &e), 0);
	assert_int_not_equal(
		parse_tcp_uri("tcp:h", host, sizeof(host), &port, &e), 0);
}

/* ---- over sockets ---- */

struct server {
	int fd, stop[2];
	struct brp_image img;
	const uint8_t *key;
	size_t keylen;
	bool authed;
	int rc;
	struct err e;
	pthread_t t;
};

static void *server_thread(void *arg)
{
	struct server *s = arg;

	s->rc = brp_serve(s->fd, &s->img, s->key, s->keylen, s->stop[0],
			  &s->authed, &s->e);
	close(s->fd);
	return NULL;
}

static int tmp_image(void)
{
	char path[] = "/tmp/dvmm-brp-XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(ftruncate(fd, SIZE), 0);
	return fd;
}

static void server_start(struct server *s, int fd, const uint8_t *key)
{
	memset(s, 0, sizeof(*s));
	s->fd = fd;
	s->key = key;
	s->keylen = 32;
	s->img = (struct brp_image){.fd = tmp_image(), .size = SIZE};
	assert_int_equal(pipe(s->stop), 0);
	assert_int_equal(pthread_create(&s->t, NULL, server_thread, s), 0);
}

static void server_join(struct server *s)
{
	pthread_join(s->t, NULL);
	close(s->img.fd);
	close(s->stop[0]);
	close(s->stop[1]);
}

static void send_bytes(int fd, const void *p, size_t n)
{
	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void recv_bytes(int fd, void *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t k = recv(fd, (uint8_t *)p + got, n - got, 0);

		assert_true(k > 0);
		got += (size_t)k;
	}
}

/* One request on the raw socket, its reply decoded. */
static void call(int fd, struct brp_chan *c, const struct brp_msg *req,
		 const void *data, struct brp_msg *rep, uint8_t *rdata)
{
	static uint8_t buf[BRP_HDR_LEN + 65536 + BRP_MAC_LEN];
	const uint8_t *pay;
	size_t n = brp_encode(c, req, data, buf), used;
	char why[128];

	send_bytes(fd, buf, n);
	recv_bytes(fd, buf, BRP_HDR_LEN);
	assert_int_equal(brp_parse_hdr(buf, true, rep, why, sizeof(why)), 0);
	recv_bytes(fd, buf + BRP_HDR_LEN, rep->paylen + BRP_MAC_LEN);
	assert_int_equal(brp_decode(c, true, buf,
				    BRP_HDR_LEN + rep->paylen + BRP_MAC_LEN,
				    rep, &pay, &used, why, sizeof(why)),
			 0);
	assert_int_equal(rep->id, req->id);
	if (rdata && rep->paylen)
		memcpy(rdata, pay, rep->paylen);
}

static void test_serve(void **state)
{
	struct brp_msg rep;
	struct brp_chan c;
	struct server s;
	struct err e = {0};
	uint8_t data[4096], back[4096];
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	server_start(&s, sv[1], secret);
	assert_int_equal(brp_handshake_client(sv[0], secret, 32, &c, 5000, &e),
			 0);
	call(sv[0], &c, &(struct brp_msg){.type = BRP_SIZE, .id = 1}, NULL,
	     &rep, NULL);
	assert_int_equal(rep.status, BRP_S_OK);
	assert_int_equal(rep.length, SIZE);
	for (unsigned int i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i ^ 0x3c);
	call(sv[0], &c,
	     &(struct brp_msg){.type = BRP_WRITE,
			       .paylen = 4096,
			       .id = 2,
			       .offset = SIZE - 4096,
			       .length = 4096},
	     data, &rep, NULL);
	assert_int_equal(rep.status, BRP_S_OK);
	call(sv[0], &c, &(struct brp_msg){.type = BRP_FLUSH, .id = 3}, NULL,
	     &rep, NULL);
	assert_int_equal(rep.status, BRP_S_OK);
	call(sv[0], &c,
	     &(struct brp_msg){.type = BRP_READ,
			       .id = 4,
			       .offset = SIZE - 4096,
			       .length = 4096},
	     NULL, &rep, back);
	assert_int_equal(rep.status, BRP_S_OK);
	assert_int_equal(rep.paylen, 4096);
	assert_memory_equal(back, data, 4096);
	/* out of the image: refused with a status, the session goes on */
	call(sv[0], &c,
	     &(struct brp_msg){.type = BRP_READ,
			       .id = 5,
			       .offset = SIZE - 512,
			       .length = 1024},
	     NULL, &rep, NULL);
	assert_int_equal(rep.status, BRP_S_RANGE);
	assert_int_equal(rep.paylen, 0);
	call(sv[0], &c,
	     &(struct brp_msg){
		     .type = BRP_DISCARD, .id = 6, .offset = 0, .length = 4096},
	     NULL, &rep, NULL);
	assert_int_equal(rep.status, BRP_S_UNSUPP); /* can_discard false */
	/* the client goes between messages: done, no error */
	close(sv[0]);
	server_join(&s);
	assert_true(s.authed);
	assert_int_equal(s.rc, 0);
}

static void test_serve_hostile(void **state)
{
	uint8_t out[BRP_HDR_LEN + 512 + BRP_MAC_LEN];
	struct brp_chan c;
	struct server s;
	struct err e = {0};
	size_t n;
	int sv[2];

	(void)state;
	/* a bad MAC drops the client */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	server_start(&s, sv[1], secret);
	assert_int_equal(brp_handshake_client(sv[0], secret, 32, &c, 5000, &e),
			 0);
	n = brp_encode(&c, &(struct brp_msg){.type = BRP_FLUSH, .id = 1}, NULL,
		       out);
	out[n - 1] ^= 1;
	send_bytes(sv[0], out, n);
	server_join(&s);
	assert_int_equal(s.rc, -EBADMSG);
	assert_non_null(strstr(s.e.msg, "bad MAC"));
	close(sv[0]);

	/* an oversized header drops the client before any payload */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	server_start(&s, sv[1], secret);
	assert_int_equal(brp_handshake_client(sv[0], secret, 32, &c, 5000, &e),
			 0);
	put_hdr(out, BRP_WRITE, 0, 0, UINT32_MAX, 0, UINT32_MAX);
	send_bytes(sv[0], out, BRP_HDR_LEN);
	server_join(&s);
	assert_int_equal(s.rc, -EMSGSIZE);
	close(sv[0]);

	/* the stop fd ends an idle session */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	server_start(&s, sv[1], secret);
	assert_int_equal(brp_handshake_client(sv[0], secret, 32, &c, 5000, &e),
			 0);
	assert_int_equal(write(s.stop[1], "x", 1), 1);
	server_join(&s);
	assert_int_equal(s.rc, -EINTR);
	close(sv[0]);
}

static void test_wrong_secret(void **state)
{
	uint8_t other[32];
	struct brp_chan c;
	struct server s;
	struct err e = {0};
	int sv[2];

	(void)state;
	memset(other, 7, sizeof(other));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	server_start(&s, sv[1], other);
	assert_int_equal(brp_handshake_client(sv[0], secret, 32, &c, 5000, &e),
			 -EACCES);
	assert_non_null(strstr(e.msg, "secret"));
	server_join(&s);
	assert_false(s.authed);
	assert_int_equal(s.rc, -EACCES);
	assert_non_null(strstr(s.e.msg, "does not know the secret"));
	close(sv[0]);
	/* a peer that is no agent */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	send_bytes(sv[1], "HTTP/1.1 200 OK\r\n\r\n0123456789012345678901234",
		   44);
	assert_int_equal(brp_handshake_client(sv[0], secret, 32, &c, 5000, &e),
			 -EPROTO);
	close(sv[0]);
	close(sv[1]);
}

/* ---- the client against a server on a TCP port ---- */

struct done_log {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int n;
	int res[8];
	uint8_t data[4096];
};

static void on_done(void *opaque, uint64_t id, int res, const uint8_t *data,
		    uint32_t len)
{
	struct done_log *d = opaque;

	pthread_mutex_lock(&d->lock);
	d->res[id] = res;
	if (data && len && len <= sizeof(d->data))
		memcpy(d->data, data, len);
	d->n++;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

struct acceptor {
	int lfd;
	struct server s;
};

static void *accept_thread(void *arg)
{
	struct acceptor *a = arg;
	int fd = accept(a->lfd, NULL, NULL);

	assert_true(fd >= 0);
	a->s.rc = brp_serve(fd, &a->s.img, secret, 32, a->s.stop[0],
			    &a->s.authed, &a->s.e);
	close(fd);
	return NULL;
}

static int listener(uint16_t *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 1), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

static void test_client(void **state)
{
	struct done_log d = {.lock = PTHREAD_MUTEX_INITIALIZER,
			     .cond = PTHREAD_COND_INITIALIZER};
	struct brp_client *c;
	struct acceptor a;
	struct err e = {0};
	uint8_t data[4096], back[4096];
	struct iovec iov[2] = {{data, 1000}, {data + 1000, 3096}};
	struct brp_sync s = {
		.type = BRP_READ, .offset = 8192, .length = 4096, .buf = back};
	char uri[64];
	uint16_t port;
	pthread_t t;

	(void)state;
	memset(&a, 0, sizeof(a));
	a.lfd = listener(&port);
	a.s.img = (struct brp_image){.fd = tmp_image(), .size = SIZE};
	assert_int_equal(pipe(a.s.stop), 0);
	assert_int_equal(pthread_create(&t, NULL, accept_thread, &a), 0);
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", port);
	assert_int_equal(brp_client_connect(&c, uri, secret, 32, 5000, &e), 0);
	assert_int_equal(brp_client_size(c), SIZE);
	assert_int_equal(brp_client_start(c, on_done, &d, &e), 0);
	for (unsigned int i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 13);
	/* queued: a write from two segments, then a read of it */
	assert_int_equal(
		brp_client_submit(c, BRP_WRITE, 0, 1, 8192, 4096, iov, 2), 0);
	assert_int_equal(
		brp_client_submit(c, BRP_READ, 0, 2, 8192, 4096, NULL, 0), 0);
	assert_int_equal(brp_client_submit(c, BRP_READ, 0, 2, 0, 512, NULL, 0),
			 -EBUSY); /* id 2 is in flight */
	assert_int_equal(brp_client_submit(c, BRP_READ, 0, BRP_CLIENT_IDS, 0,
					   512, NULL, 0),
			 -EINVAL);
	assert_int_equal(
		brp_client_submit(c, BRP_READ, 0, 3, SIZE, 512, NULL, 0),
		0); /* outside: fails, the session goes on */
	pthread_mutex_lock(&d.lock);
	while (d.n < 3)
		pthread_cond_wait(&d.cond, &d.lock);
	pthread_mutex_unlock(&d.lock);
	assert_int_equal(d.res[1], 4096);
	assert_int_equal(d.res[2], 4096);
	assert_int_equal(d.res[3], -ERANGE);
	assert_memory_equal(d.data, data, 4096);
	/* synchronous, in order with the queue */
	assert_int_equal(brp_client_sync_start(c, &s), 0);
	assert_int_equal(brp_client_sync_wait(c, &s), 0);
	assert_memory_equal(back, data, 4096);
	brp_client_close(c);
	pthread_join(t, NULL);
	assert_true(a.s.authed);
	assert_int_equal(a.s.rc, 0);
	close(a.lfd);
	close(a.s.img.fd);
	close(a.s.stop[0]);
	close(a.s.stop[1]);
}

/* Nothing listens: the client gives up when its time is over. */
static void test_client_no_agent(void **state)
{
	struct brp_client *c;
	struct err e = {0};
	uint64_t t0;
	char uri[64];
	uint16_t port;
	int fd;

	(void)state;
	fd = listener(&port);
	close(fd); /* the port is free now */
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", port);
	t0 = clock_mono_ns();
	assert_int_not_equal(brp_client_connect(&c, uri, secret, 32, 400, &e),
			     0);
	assert_true(clock_mono_ns() - t0 < 3000000000ULL);
	assert_non_null(strstr(e.msg, "disk agent"));
	assert_null(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_bad_headers),
		cmocka_unit_test(test_out_of_range),
		cmocka_unit_test(test_bad_mac),
		cmocka_unit_test(test_parse_uri),
		cmocka_unit_test(test_serve),
		cmocka_unit_test(test_serve_hostile),
		cmocka_unit_test(test_wrong_secret),
		cmocka_unit_test(test_client),
		cmocka_unit_test(test_client_no_agent),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
