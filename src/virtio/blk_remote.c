/*
 * virtio/blk_remote.c - the remote block protocol (see blk_remote.h): the
 * message format and its checks, the handshake, the server loop that
 * `dvmm disk-serve` runs, and the client that blk.c's remote backend uses
 * (a send thread and a receive thread per connection).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/log.h"
#include "util/parse.h"
#include "util/sock.h"
#include "util/thread.h"
#include "virtio/blk_remote.h"

#define MAGIC "DVMM-BLK"
#define MAGIC_LEN 8
#define NONCE_LEN 32
#define SYNC_ID ((uint64_t)BRP_CLIENT_IDS)
#define QUEUE_CAP (BRP_CLIENT_IDS + 1)
#define SYNC_WAIT_MS 30000
#define RETRY_MS 100

/* ---- messages ---- */

static void put_le16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, 2);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint16_t get_le16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return le16toh(v);
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

void brp_pack_hdr(const struct brp_msg *m, uint8_t hdr[BRP_HDR_LEN])
{
	hdr[0] = m->type;
	hdr[1] = m->status;
	put_le16(hdr + 2, m->flags);
	put_le32(hdr + 4, m->paylen);
	put_le64(hdr + 8, m->id);
	put_le64(hdr + 16, m->offset);
	put_le64(hdr + 24, m->length);
}

static int bad(char *why, size_t whylen, int rc, const char *what)
{
	snprintf(why, whylen, "%s", what);
	return rc;
}

static int check_request_hdr(const struct brp_msg *m, char *why, size_t whylen)
{
	if (m->status)
		return bad(why, whylen, -EPROTO, "a request with a status");
	if (m->flags & ~(m->type == BRP_WRITE ? BRP_F_FUA : 0))
		return bad(why, whylen, -EPROTO, "unknown request flags");
	switch (m->type) {
	case BRP_READ:
		if (m->paylen)
			return bad(why, whylen, -EPROTO, "a READ with data");
		if (m->length > BRP_MAX_DATA)
			return bad(why, whylen, -EMSGSIZE, "a READ too long");
		if (!m->length)
			return bad(why, whylen, -EPROTO, "an empty READ");
		return 0;
	case BRP_WRITE:
		if (m->paylen != m->length)
			return bad(why, whylen, -EPROTO,
				   "a WRITE whose data is not its length");
		if (!m->length)
			return bad(why, whylen, -EPROTO, "an empty WRITE");
		return 0;
	case BRP_DISCARD:
		if (m->paylen)
			return bad(why, whylen, -EPROTO, "a DISCARD with data");
		return 0;
	default: /* FLUSH, SIZE */
		if (m->paylen || m->offset || m->length)
			return bad(why, whylen, -EPROTO,
				   "a FLUSH or SIZE with arguments");
		return 0;
	}
}

static int check_reply_hdr(const struct brp_msg *m, char *why, size_t whylen)
{
	if (m->status > BRP_S_UNSUPP)
		return bad(why, whylen, -EPROTO, "an unknown status");
	if (m->paylen && (m->type != BRP_READ || m->status != BRP_S_OK))
		return bad(why, whylen, -EPROTO,
			   "data in a reply not to a READ");
	if (m->flags && m->type != BRP_SIZE)
		return bad(why, whylen, -EPROTO, "flags in a reply");
	if (m->flags & ~(BRP_F_CAN_DISCARD | BRP_F_READONLY))
		return bad(why, whylen, -EPROTO, "unknown SIZE flags");
	return 0;
}

int brp_parse_hdr(const uint8_t hdr[BRP_HDR_LEN], bool reply, struct brp_msg *m,
		  char *why, size_t whylen)
{
	m->type = hdr[0];
	m->status = hdr[1];
	m->flags = get_le16(hdr + 2);
	m->paylen = get_le32(hdr + 4);
	m->id = get_le64(hdr + 8);
	m->offset = get_le64(hdr + 16);
	m->length = get_le64(hdr + 24);
	if (m->type < BRP_READ || m->type > BRP_SIZE) {
		snprintf(why, whylen, "unknown message type %u", m->type);
		return -EPROTO;
	}
	if (m->paylen > BRP_MAX_DATA) {
		snprintf(why, whylen, "a message of %u bytes (at most %u)",
			 m->paylen, BRP_MAX_DATA);
		return -EMSGSIZE;
	}
	return reply ? check_reply_hdr(m, why, whylen) :
		       check_request_hdr(m, why, whylen);
}

static void mac_of(const uint8_t key[32], uint8_t dir, uint64_t seq,
		   const uint8_t hdr[BRP_HDR_LEN], const struct iovec *pay,
		   unsigned int npay, uint8_t mac[BRP_MAC_LEN])
{
	crypto_auth_hmacsha256_state st;
	uint8_t s[8];

	put_le64(s, seq);
	crypto_auth_hmacsha256_init(&st, key, 32);
	crypto_auth_hmacsha256_update(&st, &dir, 1);
	crypto_auth_hmacsha256_update(&st, s, sizeof(s));
	crypto_auth_hmacsha256_update(&st, hdr, BRP_HDR_LEN);
	for (unsigned int i = 0; i < npay; i++)
		crypto_auth_hmacsha256_update(&st, pay[i].iov_base,
					      pay[i].iov_len);
	crypto_auth_hmacsha256_final(&st, mac);
}

void brp_seal(struct brp_chan *c, const uint8_t hdr[BRP_HDR_LEN],
	      const struct iovec *pay, unsigned int npay,
	      uint8_t mac[BRP_MAC_LEN])
{
	mac_of(c->key, c->send_dir, c->send_seq++, hdr, pay, npay, mac);
}

int brp_open(struct brp_chan *c, const uint8_t hdr[BRP_HDR_LEN],
	     const uint8_t *pay, size_t len, const uint8_t mac[BRP_MAC_LEN])
{
	struct iovec v = {.iov_base = (void *)pay, .iov_len = len};
	uint8_t want[BRP_MAC_LEN];

	mac_of(c->key, c->recv_dir, c->recv_seq, hdr, &v, len ? 1 : 0, want);
	if (sodium_memcmp(want, mac, BRP_MAC_LEN))
		return -EBADMSG;
	c->recv_seq++;
	return 0;
}

int brp_check_request(const struct brp_msg *m, uint64_t size, bool readonly,
		      bool can_discard)
{
	switch (m->type) {
	case BRP_READ:
	case BRP_WRITE:
	case BRP_DISCARD:
		if (m->type != BRP_READ && readonly)
			return BRP_S_UNSUPP;
		if (m->type == BRP_DISCARD && !can_discard)
			return BRP_S_UNSUPP;
		if (m->offset > size || m->length > size - m->offset)
			return BRP_S_RANGE;
		return BRP_S_OK;
	default: /* FLUSH, SIZE */
		return BRP_S_OK;
	}
}

size_t brp_encode(struct brp_chan *c, const struct brp_msg *m,
		  const void *payload, uint8_t *out)
{
	struct iovec v = {.iov_base = (void *)payload, .iov_len = m->paylen};

	brp_pack_hdr(m, out);
	if (m->paylen)
		memcpy(out + BRP_HDR_LEN, payload, m->paylen);
	brp_seal(c, out, &v, m->paylen ? 1 : 0, out + BRP_HDR_LEN + m->paylen);
	return BRP_HDR_LEN + (size_t)m->paylen + BRP_MAC_LEN;
}

int brp_decode(struct brp_chan *c, bool reply, const uint8_t *buf, size_t len,
	       struct brp_msg *m, const uint8_t **payload, size_t *used,
	       char *why, size_t whylen)
{
	size_t total;
	int rc;

	if (len < BRP_HDR_LEN)
		return bad(why, whylen, -EAGAIN, "a truncated header");
	rc = brp_parse_hdr(buf, reply, m, why, whylen);
	if (rc)
		return rc;
	total = BRP_HDR_LEN + (size_t)m->paylen + BRP_MAC_LEN;
	if (len < total)
		return bad(why, whylen, -EAGAIN, "a truncated message");
	if (brp_open(c, buf, buf + BRP_HDR_LEN, m->paylen,
		     buf + BRP_HDR_LEN + m->paylen))
		return bad(why, whylen, -EBADMSG, "a message with a bad MAC");
	*payload = buf + BRP_HDR_LEN;
	*used = total;
	return 0;
}

/* ---- bytes on the wire ---- */

/* Header, payload and MAC of one message. */
static int send_msg(int fd, struct brp_chan *c, const struct brp_msg *m,
		    const void *payload)
{
	uint8_t hdr[BRP_HDR_LEN], mac[BRP_MAC_LEN];
	struct iovec v[3];
	int n = 0;

	brp_pack_hdr(m, hdr);
	v[n++] = (struct iovec){.iov_base = hdr, .iov_len = BRP_HDR_LEN};
	if (m->paylen)
		v[n++] = (struct iovec){.iov_base = (void *)payload,
					.iov_len = m->paylen};
	brp_seal(c, hdr, v + 1, (unsigned int)n - 1, mac);
	v[n++] = (struct iovec){.iov_base = mac, .iov_len = BRP_MAC_LEN};
	return sock_send_iov(fd, v, n);
}

/*
 * The rest of a message whose header @hdr (parsed into @m) arrived: the
 * payload into @buf (BRP_MAX_DATA bytes), the MAC, checked.
 */
static int recv_rest(int fd, struct brp_chan *c, const uint8_t *hdr,
		     const struct brp_msg *m, uint8_t *buf, char *why,
		     size_t whylen)
{
	uint8_t mac[BRP_MAC_LEN];
	int rc = 0;

	if (m->paylen)
		rc = sock_recv_all(fd, buf, m->paylen, BRP_IO_TIMEOUT_MS);
	if (!rc)
		rc = sock_recv_all(fd, mac, BRP_MAC_LEN, BRP_IO_TIMEOUT_MS);
	if (rc) {
		snprintf(why, whylen, "%s", strerror(-rc));
		return rc;
	}
	if (brp_open(c, hdr, buf, m->paylen, mac))
		return bad(why, whylen, -EBADMSG, "a message with a bad MAC");
	return 0;
}

/* ---- the handshake ---- */

struct hello {
	char magic[MAGIC_LEN];
	uint32_t version; /* little-endian */
	uint8_t nonce[NONCE_LEN];
} __attribute__((packed));

static void auth_mac(const uint8_t *secret, size_t len, const char *who,
		     const uint8_t *n1, const uint8_t *n2, uint8_t *out)
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, secret, len);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)who, 3);
	crypto_auth_hmacsha256_update(&st, n1, NONCE_LEN);
	crypto_auth_hmacsha256_update(&st, n2, NONCE_LEN);
	crypto_auth_hmacsha256_final(&st, out);
}

static void make_hello(struct hello *h)
{
	memcpy(h->magic, MAGIC, MAGIC_LEN);
	h->version = htole32(BRP_VERSION);
	randombytes_buf(h->nonce, NONCE_LEN);
}

static int check_hello(const struct hello *h, struct err *e)
{
	if (memcmp(h->magic, MAGIC, MAGIC_LEN))
		return err_set(e, -EPROTO,
			       "the peer is not a dvmm disk agent or client");
	if (le32toh(h->version) != BRP_VERSION)
		return err_set(e, -EPROTO,
			       "the peer speaks disk protocol version %u, we "
			       "%u",
			       le32toh(h->version), BRP_VERSION);
	return 0;
}

/* Session key: HMAC(secret, "key" || server nonce || client nonce). */
static void session(struct brp_chan *c, const uint8_t *secret, size_t len,
		    const uint8_t *ns, const uint8_t *nc, bool client)
{
	auth_mac(secret, len, "key", ns, nc, c->key);
	c->send_seq = c->recv_seq = 0;
	c->send_dir = client ? 'C' : 'S';
	c->recv_dir = client ? 'S' : 'C';
}

static int check_secret_len(size_t len, struct err *e)
{
	if (len < BRP_KEY_MIN || len > BRP_KEY_MAX)
		return err_set(e, -EINVAL,
			       "the disk secret must be %d to %d "
			       "bytes",
			       BRP_KEY_MIN, BRP_KEY_MAX);
	if (sodium_init() < 0)
		return err_set(e, -EIO, "libsodium failed to initialise");
	return 0;
}

int brp_handshake_client(int fd, const uint8_t *secret, size_t secret_len,
			 struct brp_chan *c, unsigned int timeout_ms,
			 struct err *e)
{
	uint8_t msg[sizeof(struct hello) + BRP_MAC_LEN], want[BRP_MAC_LEN];
	struct hello s, me;
	int rc = check_secret_len(secret_len, e);

	if (rc)
		return rc;
	rc = sock_recv_all(fd, &s, sizeof(s), (int)timeout_ms);
	if (rc)
		return err_set(e, rc, "no greeting from the disk agent: %s",
			       strerror(-rc));
	if ((rc = check_hello(&s, e)))
		return rc;
	make_hello(&me);
	memcpy(msg, &me, sizeof(me));
	auth_mac(secret, secret_len, "cli", s.nonce, me.nonce,
		 msg + sizeof(me));
	rc = sock_send_all(fd, msg, sizeof(msg));
	if (!rc)
		rc = sock_recv_all(fd, msg, BRP_MAC_LEN, BRP_IO_TIMEOUT_MS);
	if (rc)
		return err_set(e, -EACCES,
			       "the disk agent refused us (wrong secret?): %s",
			       strerror(-rc));
	auth_mac(secret, secret_len, "srv", me.nonce, s.nonce, want);
	if (sodium_memcmp(msg, want, BRP_MAC_LEN))
		return err_set(e, -EACCES,
			       "the disk agent does not know the secret");
	session(c, secret, secret_len, s.nonce, me.nonce, true);
	return 0;
}

int brp_handshake_server(int fd, const uint8_t *secret, size_t secret_len,
			 struct brp_chan *c, struct err *e)
{
	uint8_t msg[sizeof(struct hello) + BRP_MAC_LEN], want[BRP_MAC_LEN];
	struct hello me, cl;
	int rc = check_secret_len(secret_len, e);

	if (rc)
		return rc;
	make_hello(&me);
	rc = sock_send_all(fd, &me, sizeof(me));
	if (!rc)
		rc = sock_recv_all(fd, msg, sizeof(msg), BRP_IO_TIMEOUT_MS);
	if (rc)
		return err_set(e, rc, "handshake: %s", strerror(-rc));
	memcpy(&cl, msg, sizeof(cl));
	if ((rc = check_hello(&cl, e)))
		return rc;
	auth_mac(secret, secret_len, "cli", me.nonce, cl.nonce, want);
	if (sodium_memcmp(msg + sizeof(cl), want, BRP_MAC_LEN))
		return err_set(e, -EACCES,
			       "refused a client that does not know the "
			       "secret");
	auth_mac(secret, secret_len, "srv", cl.nonce, me.nonce, want);
	rc = sock_send_all(fd, want, BRP_MAC_LEN);
	if (rc)
		return err_set(e, rc, "handshake: %s", strerror(-rc));
	session(c, secret, secret_len, me.nonce, cl.nonce, false);
	return 0;
}

/* ---- the server ---- */

static int serve_one(const struct brp_image *img, const struct brp_msg *m,
		     const uint8_t *data, uint8_t *out, struct brp_msg *r)
{
	int st = brp_check_request(m, img->size, img->readonly,
				   img->can_discard);
	uint64_t done = 0;
	ssize_t n;

	*r = (struct brp_msg){.type = m->type, .id = m->id};
	if (st != BRP_S_OK)
		goto out;
	switch (m->type) {
	case BRP_READ:
		while (done < m->length) {
			n = pread(img->fd, out + done, m->length - done,
				  (off_t)(m->offset + done));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			done += (uint64_t)n;
		}
		if (done < m->length)
			st = BRP_S_IOERR;
		else
			r->paylen = (uint32_t)m->length;
		break;
	case BRP_WRITE:
		while (done < m->length) {
			struct iovec v = {.iov_base = (void *)(data + done),
					  .iov_len = m->length - done};

			n = pwritev2(img->fd, &v, 1, (off_t)(m->offset + done),
				     (m->flags & BRP_F_FUA) ? RWF_DSYNC : 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			done += (uint64_t)n;
		}
		if (done < m->length)
			st = BRP_S_IOERR;
		break;
	case BRP_FLUSH:
		if (!img->readonly && fdatasync(img->fd) < 0)
			st = BRP_S_IOERR;
		break;
	case BRP_DISCARD:
		if (m->length &&
		    fallocate(img->fd,
			      FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)m->offset, (off_t)m->length) < 0)
			st = BRP_S_IOERR;
		break;
	case BRP_SIZE:
		r->length = img->size;
		r->flags = (img->can_discard ? BRP_F_CAN_DISCARD : 0) |
			   (img->readonly ? BRP_F_READONLY : 0);
		break;
	}
out:
	r->status = (uint8_t)st;
	return st;
}

int brp_serve(int fd, const struct brp_image *img, const uint8_t *secret,
	      size_t secret_len, int stop_fd, bool *authed, struct err *e)
{
	uint8_t hdr[BRP_HDR_LEN], *in = NULL, *out = NULL;
	struct brp_chan c;
	char why[128];
	int rc;

	*authed = false;
	/* Replies are small and many: no Nagle delay behind them. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	rc = brp_handshake_server(fd, secret, secret_len, &c, e);
	if (rc)
		return rc;
	*authed = true;
	in = malloc(BRP_MAX_DATA);
	out = malloc(BRP_MAX_DATA);
	if (!in || !out) {
		rc = err_set(e, -ENOMEM, "out of memory");
		goto done;
	}
	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
				      {.fd = stop_fd, .events = POLLIN}};
		struct brp_msg m, r;
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			rc = err_set(e, -errno, "poll: %s", strerror(errno));
			break;
		}
		if (p[1].revents) {
			rc = -EINTR;
			break;
		}
		/* A client that goes between messages is done, not broken. */
		n = recv(fd, hdr, 1, MSG_PEEK);
		if (n == 0 || (n < 0 && errno == ECONNRESET)) {
			rc = 0;
			break;
		}
		rc = sock_recv_all(fd, hdr, BRP_HDR_LEN, BRP_IO_TIMEOUT_MS);
		if (rc) {
			err_set(e, rc, "the client went mid-message: %s",
				strerror(-rc));
			break;
		}
		rc = brp_parse_hdr(hdr, false, &m, why, sizeof(why));
		if (!rc)
			rc = recv_rest(fd, &c, hdr, &m, in, why, sizeof(why));
		if (rc) {
			err_set(e, rc, "the client sent %s; dropping it", why);
			break;
		}
		serve_one(img, &m, in, out, &r);
		rc = send_msg(fd, &c, &r, out);
		if (rc) {
			err_set(e, rc, "cannot answer the client: %s",
				strerror(-rc));
			break;
		}
	}
done:
	free(in);
	free(out);
	sodium_memzero(&c, sizeof(c));
	return rc;
}

/* ---- the client ---- */

struct brp_out {
	uint8_t type;
	uint16_t flags;
	uint64_t id, offset, length;
	const struct iovec *iov;
	unsigned int niov;
};

struct brp_client {
	int fd;
	char uri[128];
	struct brp_chan ch;
	uint64_t size;
	unsigned int flags;

	pthread_mutex_t lock; /* all below */
	pthread_cond_t cond;  /* queue, tx_busy, sync->done, dead */
	struct brp_out q[QUEUE_CAP];
	unsigned int qhead, qn;
	struct brp_out pending[BRP_CLIENT_IDS]; /* sent or queued, by id */
	bool used[BRP_CLIENT_IDS];
	struct brp_sync *sync;
	bool stop, dead, tx_busy;
	brp_done_fn done;
	void *opaque;
	pthread_t tx, rx;
	bool threads;
	uint8_t *txbuf, *rxbuf;
};

static int connect_once(const char *host, uint16_t port, int *out,
			struct err *e)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *res, *ai;
	char ps[8];
	int fd = -1, rc, err = ECONNREFUSED, one = 1;

	snprintf(ps, sizeof(ps), "%u", port);
	rc = getaddrinfo(host, ps, &hints, &res);
	if (rc)
		return err_set(e, -EINVAL, "cannot resolve %s: %s", host,
			       gai_strerror(rc));
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return err_set(e, -err,
			       "cannot reach the disk agent at "
			       "%s:%u: %s",
			       host, port, strerror(err));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*out = fd;
	return 0;
}

/* Before the threads: one request, its reply. */
static int call_direct(struct brp_client *c, struct brp_msg *m, struct err *e)
{
	uint8_t hdr[BRP_HDR_LEN], mac[BRP_MAC_LEN];
	struct brp_msg r;
	char why[128];
	int rc = send_msg(c->fd, &c->ch, m, NULL);

	if (!rc)
		rc = sock_recv_all(c->fd, hdr, BRP_HDR_LEN, BRP_IO_TIMEOUT_MS);
	if (rc)
		return err_set(e, rc, "disk agent %s: %s", c->uri,
			       strerror(-rc));
	rc = brp_parse_hdr(hdr, true, &r, why, sizeof(why));
	if (!rc && (r.type != m->type || r.id != m->id || r.paylen))
		rc = bad(why, sizeof(why), -EPROTO, "an unexpected reply");
	if (!rc)
		rc = sock_recv_all(c->fd, mac, BRP_MAC_LEN, BRP_IO_TIMEOUT_MS);
	if (!rc && brp_open(&c->ch, hdr, NULL, 0, mac))
		rc = bad(why, sizeof(why), -EBADMSG, "a reply with a bad MAC");
	if (rc)
		return err_set(e, rc, "disk agent %s sent %s", c->uri, why);
	*m = r;
	return 0;
}

static int ask_size(struct brp_client *c, struct err *e)
{
	struct brp_msg m = {.type = BRP_SIZE, .id = 0};
	int rc = call_direct(c, &m, e);

	if (rc)
		return rc;
	if (m.status != BRP_S_OK)
		return err_set(e, -EIO, "disk agent %s: SIZE failed", c->uri);
	if (m.length == 0 || m.length % 512)
		return err_set(e, -EINVAL,
			       "disk agent %s: a disk of %llu bytes (not a "
			       "non-zero multiple of 512)",
			       c->uri, (unsigned long long)m.length);
	c->size = m.length;
	c->flags = m.flags;
	return 0;
}

static void client_free(struct brp_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c->txbuf);
	free(c->rxbuf);
	sodium_memzero(&c->ch, sizeof(c->ch));
	free(c);
}

int brp_client_connect(struct brp_client **out, const char *uri,
		       const uint8_t *secret, size_t secret_len,
		       unsigned int timeout_ms, struct err *e)
{
	uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_ms * 1000000;
	struct brp_client *c;
	char host[256];
	uint16_t port;
	int rc;

	*out = NULL;
	rc = parse_tcp_uri(uri, host, sizeof(host), &port, e);
	if (rc)
		return rc;
	c = calloc(1, sizeof(*c));
	if (!c)
		return err_set(e, -ENOMEM, "out of memory");
	c->fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	snprintf(c->uri, sizeof(c->uri), "%s", uri);
	c->txbuf = malloc(BRP_MAX_DATA);
	c->rxbuf = malloc(BRP_MAX_DATA);
	if (!c->txbuf || !c->rxbuf) {
		client_free(c);
		return err_set(e, -ENOMEM, "out of memory");
	}
	for (;;) {
		uint64_t now = clock_mono_ns();
		int left = now < deadline ?
				   (int)((deadline - now) / 1000000) + 1 :
				   1;

		rc = connect_once(host, port, &c->fd, e);
		if (!rc) {
			/* An agent still waiting for the image's lock
			 * greets late: wait for it up to the deadline. */
			rc = brp_handshake_client(c->fd, secret, secret_len,
						  &c->ch, (unsigned int)left,
						  e);
			if (!rc)
				break;
			close(c->fd);
			c->fd = -1;
			if (rc != -ETIMEDOUT && rc != -ECONNRESET) {
				client_free(c);
				return rc;
			}
		}
		if (clock_mono_ns() + RETRY_MS * 1000000ULL >= deadline) {
			char msg[ERR_MSG_MAX];

			snprintf(msg, sizeof(msg), "%s", e->msg);
			client_free(c);
			return err_set(e, rc, "%s (waited %u s)", msg,
				       (timeout_ms + 999) / 1000);
		}
		usleep(RETRY_MS * 1000);
	}
	rc = ask_size(c, e);
	if (rc) {
		client_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

uint64_t brp_client_size(const struct brp_client *c)
{
	return c->size;
}

unsigned int brp_client_flags(const struct brp_client *c)
{
	return c->flags;
}

/* With c->lock held. */
static void enqueue(struct brp_client *c, const struct brp_out *o)
{
	c->q[(c->qhead + c->qn) % QUEUE_CAP] = *o;
	c->qn++;
	pthread_cond_broadcast(&c->cond);
}

int brp_client_submit(struct brp_client *c, uint8_t type, uint16_t flags,
		      uint64_t id, uint64_t offset, uint64_t length,
		      const struct iovec *iov, unsigned int niov)
{
	struct brp_out o = {.type = type,
			    .flags = flags,
			    .id = id,
			    .offset = offset,
			    .length = length,
			    .iov = iov,
			    .niov = niov};
	int rc = 0;

	if (id >= BRP_CLIENT_IDS ||
	    ((type == BRP_READ || type == BRP_WRITE) && length > BRP_MAX_DATA))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	if (c->dead || c->stop)
		rc = -EIO;
	else if (c->used[id] || c->qn >= QUEUE_CAP)
		rc = -EBUSY;
	if (!rc) {
		c->used[id] = true;
		c->pending[id] = o;
		enqueue(c, &o);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int brp_client_sync_start(struct brp_client *c, struct brp_sync *s)
{
	struct brp_out o = {.type = s->type,
			    .id = SYNC_ID,
			    .offset = s->offset,
			    .length = s->length};
	int rc = 0;

	if ((s->type == BRP_READ && s->length > BRP_MAX_DATA) ||
	    s->type == BRP_WRITE)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	if (c->dead || c->stop)
		rc = -EIO;
	else if (c->sync || c->qn >= QUEUE_CAP)
		rc = -EBUSY;
	if (!rc) {
		s->done = false;
		s->res = 0;
		c->sync = s;
		enqueue(c, &o);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int brp_client_sync_wait(struct brp_client *c, struct brp_sync *s)
{
	struct timespec until;
	bool late = false;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += SYNC_WAIT_MS / 1000;
	pthread_mutex_lock(&c->lock);
	while (!s->done) {
		if (!late && pthread_cond_timedwait(&c->cond, &c->lock,
						    &until) == ETIMEDOUT) {
			/* The agent hangs: break the connection; the
			 * receive thread then fails what is outstanding. */
			late = true;
			pr_err("disk agent %s: no answer within %d s", c->uri,
			       SYNC_WAIT_MS / 1000);
			shutdown(c->fd, SHUT_RDWR);
		} else if (late) {
			pthread_cond_wait(&c->cond, &c->lock);
		}
	}
	pthread_mutex_unlock(&c->lock);
	return s->res;
}

/* Copy @len bytes from the segments into @buf. */
static void gather(const struct iovec *iov, unsigned int n, uint8_t *buf,
		   uint64_t len)
{
	for (unsigned int i = 0; i < n && len; i++) {
		uint64_t k = iov[i].iov_len < len ? iov[i].iov_len : len;

		memcpy(buf, iov[i].iov_base, k);
		buf += k;
		len -= k;
	}
}

static void *tx_thread(void *arg)
{
	struct brp_client *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct brp_out o;
		struct brp_msg m;
		int rc;

		while (!c->stop && !c->dead && !c->qn)
			pthread_cond_wait(&c->cond, &c->lock);
		if (c->stop || c->dead)
			break;
		o = c->q[c->qhead];
		c->qhead = (c->qhead + 1) % QUEUE_CAP;
		c->qn--;
		c->tx_busy = true;
		pthread_mutex_unlock(&c->lock);

		m = (struct brp_msg){.type = o.type,
				     .flags = o.flags,
				     .id = o.id,
				     .offset = o.offset,
				     .length = o.length};
		if (o.type == BRP_WRITE) {
			gather(o.iov, o.niov, c->txbuf, o.length);
			m.paylen = (uint32_t)o.length;
		}
		rc = send_msg(c->fd, &c->ch, &m, c->txbuf);

		pthread_mutex_lock(&c->lock);
		c->tx_busy = false;
		pthread_cond_broadcast(&c->cond);
		if (rc && !c->stop) {
			pr_err("disk agent %s: cannot send: %s", c->uri,
			       strerror(-rc));
			c->dead = true;
			shutdown(c->fd, SHUT_RDWR);
		}
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* The connection is gone: fail everything outstanding. */
static void fail_all(struct brp_client *c)
{
	uint64_t ids[BRP_CLIENT_IDS];
	unsigned int n = 0;

	pthread_mutex_lock(&c->lock);
	c->dead = true;
	pthread_cond_broadcast(&c->cond);
	while (c->tx_busy)
		pthread_cond_wait(&c->cond, &c->lock);
	c->qn = 0;
	for (unsigned int i = 0; i < BRP_CLIENT_IDS; i++) {
		if (c->used[i]) {
			c->used[i] = false;
			ids[n++] = i;
		}
	}
	if (c->sync) {
		c->sync->res = -EIO;
		c->sync->done = true;
		c->sync = NULL;
		pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
	for (unsigned int i = 0; i < n; i++)
		c->done(c->opaque, ids[i], -EIO, NULL, 0);
}

static int status_errno(uint8_t st)
{
	switch (st) {
	case BRP_S_OK:
		return 0;
	case BRP_S_UNSUPP:
		return -EOPNOTSUPP;
	case BRP_S_RANGE:
		return -ERANGE;
	default:
		return -EIO;
	}
}

/* One reply; 0, or a negative errno with @why when the stream broke. */
static int rx_one(struct brp_client *c, char *why, size_t whylen)
{
	uint8_t hdr[BRP_HDR_LEN];
	struct brp_out want;
	struct brp_msg m;
	struct brp_sync *s = NULL;
	int rc, res;

	rc = sock_recv_all(c->fd, hdr, BRP_HDR_LEN, -1);
	if (rc)
		return bad(why, whylen, rc, strerror(-rc));
	rc = brp_parse_hdr(hdr, true, &m, why, whylen);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->lock);
	if (m.id == SYNC_ID && c->sync) {
		s = c->sync;
		want = (struct brp_out){.type = s->type, .length = s->length};
	} else if (m.id < BRP_CLIENT_IDS && c->used[m.id]) {
		want = c->pending[m.id];
	} else {
		rc = -EPROTO;
	}
	pthread_mutex_unlock(&c->lock);
	if (rc)
		return bad(why, whylen, rc, "a reply to nothing asked");
	if (m.type != want.type ||
	    (m.type == BRP_READ && m.status == BRP_S_OK &&
	     m.paylen != want.length))
		return bad(why, whylen, -EPROTO, "a reply that does not fit");
	rc = recv_rest(c->fd, &c->ch, hdr, &m, c->rxbuf, why, whylen);
	if (rc)
		return rc;
	res = status_errno(m.status);
	if (!res && (m.type == BRP_READ || m.type == BRP_WRITE))
		res = (int)want.length;
	pthread_mutex_lock(&c->lock);
	if (s) {
		if (res >= 0 && m.type == BRP_READ && s->buf)
			memcpy(s->buf, c->rxbuf, m.paylen);
		s->res = res < 0 ? res : 0;
		s->done = true;
		c->sync = NULL;
		pthread_cond_broadcast(&c->cond);
	} else {
		c->used[m.id] = false;
	}
	pthread_mutex_unlock(&c->lock);
	if (!s)
		c->done(c->opaque, m.id, res, c->rxbuf, m.paylen);
	return 0;
}

static void *rx_thread(void *arg)
{
	struct brp_client *c = arg;
	char why[128];
	bool stop;

	for (;;) {
		int rc = rx_one(c, why, sizeof(why));

		if (!rc)
			continue;
		pthread_mutex_lock(&c->lock);
		stop = c->stop;
		pthread_mutex_unlock(&c->lock);
		if (!stop)
			pr_err("disk agent %s: connection lost (%s); its "
			       "requests fail",
			       c->uri, why);
		shutdown(c->fd, SHUT_RDWR);
		fail_all(c);
		break;
	}
	return NULL;
}

int brp_client_start(struct brp_client *c, brp_done_fn done, void *opaque,
		     struct err *e)
{
	int rc;

	c->done = done;
	c->opaque = opaque;
	rc = thread_start_nosignals(&c->tx, tx_thread, c);
	if (rc)
		return err_set(e, rc, "cannot start a thread: %s",
			       strerror(-rc));
	rc = thread_start_nosignals(&c->rx, rx_thread, c);
	if (rc) {
		pthread_mutex_lock(&c->lock);
		c->stop = true;
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
		pthread_join(c->tx, NULL);
		return err_set(e, rc, "cannot start a thread: %s",
			       strerror(-rc));
	}
	c->threads = true;
	return 0;
}

void brp_client_close(struct brp_client *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
	if (c->threads) {
		pthread_join(c->tx, NULL);
		pthread_join(c->rx, NULL);
	}
	client_free(c);
}
