/*
 * migration/migrate.c - the migration stream (see migrate.h): handshake,
 * RAM and state records, the stream MAC, the destination's answer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/vm_io.h"
#include "migration/migrate.h"
#include "migration/vmstate.h"
#include "util/clock.h"
#include "util/log.h"

#define MAGIC "DVMM-MIG"
#define MAGIC_LEN 8
#define NONCE_LEN 32
#define MAC_LEN crypto_auth_hmacsha256_BYTES
#define PAGE 4096ULL
#define IO_TIMEOUT_MS 10000
#define RUNNING_TIMEOUT_MS 20000
#define MAX_STATE (64u << 20)

enum rec_type {
	REC_RAM_INFO = 1, /* u64 ram_size, u32 ncpus */
	REC_PAGE = 2,	  /* u64 offset, 4096 bytes */
	REC_ZERO = 3,	  /* u64 offset, u64 pages */
	REC_STATE = 4,	  /* vmstate_encode bytes */
	REC_END = 5,	  /* the stream MAC */
};

struct rec_hdr {
	uint32_t type;
	uint32_t pad;
	uint64_t len;
} __attribute__((packed));

struct conn {
	int fd;
	crypto_auth_hmacsha256_state mac; /* over every record byte */
};

/* ---- secret and address ---- */

int migrate_load_secret(const char *path, struct migrate_secret *s,
			struct err *e)
{
	char text[2 * MIGRATE_SECRET_MAX + 8];
	struct stat st;
	ssize_t n;
	size_t len = 0;
	int fd;

	if (sodium_init() < 0)
		return err_set(e, -EIO, "libsodium failed to initialise");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, -errno, "migration secret %s: %s", path,
			       strerror(errno));
	if (fstat(fd, &st) == 0 && (st.st_mode & S_IROTH)) {
		close(fd);
		return err_set(e, -EPERM,
			       "migration secret %s is readable by every user",
			       path);
	}
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n < 0)
		return err_set(e, -errno, "migration secret %s: %s", path,
			       strerror(errno));
	text[n] = 0;
	text[strcspn(text, "\r\n")] = 0;
	if (sodium_hex2bin(s->key, sizeof(s->key), text, strlen(text), NULL,
			   &len, NULL) ||
	    len < MIGRATE_SECRET_MIN)
		return err_set(e, -EINVAL,
			       "migration secret %s: must be %d to %d bytes "
			       "in hex",
			       path, MIGRATE_SECRET_MIN, MIGRATE_SECRET_MAX);
	s->len = len;
	return 0;
}

int migrate_parse_uri(const char *uri, char *host, size_t hostlen,
		      uint16_t *port, struct err *e)
{
	const char *colon;
	char *end;
	long p;

	if (strncmp(uri, "tcp:", 4))
		return err_set(e, -EINVAL, "'%s' is not tcp:HOST:PORT", uri);
	colon = strrchr(uri + 4, ':');
	if (!colon || colon == uri + 4 ||
	    (size_t)(colon - (uri + 4)) >= hostlen)
		return err_set(e, -EINVAL, "'%s' is not tcp:HOST:PORT", uri);
	p = strtol(colon + 1, &end, 10);
	if (*end || p < 1 || p > 65535)
		return err_set(e, -EINVAL, "'%s': bad port", uri);
	memcpy(host, uri + 4, (size_t)(colon - (uri + 4)));
	host[colon - (uri + 4)] = 0;
	*port = (uint16_t)p;
	return 0;
}

/* ---- bytes on the wire, with a deadline ---- */

static int wait_fd(int fd, short ev, unsigned int ms)
{
	struct pollfd p = {.fd = fd, .events = ev};
	int n;

	do
		n = poll(&p, 1, (int)ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n ? 0 : -ETIMEDOUT;
}

static int send_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
			int rc = wait_fd(fd, POLLOUT, IO_TIMEOUT_MS);

			if (rc)
				return rc;
			continue;
		}
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int recv_all(int fd, void *buf, size_t len, unsigned int ms)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n;
		int rc = wait_fd(fd, POLLIN, ms);

		if (rc)
			return rc;
		n = recv(fd, p, len, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_rec(struct conn *c, uint32_t type, const void *a, size_t alen,
		    const void *b, size_t blen)
{
	struct rec_hdr h = {.type = type, .len = alen + blen};
	int rc;

	crypto_auth_hmacsha256_update(&c->mac, (const uint8_t *)&h, sizeof(h));
	crypto_auth_hmacsha256_update(&c->mac, a, alen);
	if (blen)
		crypto_auth_hmacsha256_update(&c->mac, b, blen);
	rc = send_all(c->fd, &h, sizeof(h));
	if (!rc)
		rc = send_all(c->fd, a, alen);
	if (!rc && blen)
		rc = send_all(c->fd, b, blen);
	return rc;
}

/* ---- the handshake ---- */

static void auth_mac(const struct migrate_secret *s, const char *who,
		     const uint8_t *n1, const uint8_t *n2, uint8_t *out)
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, s->key, s->len);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)who, 3);
	crypto_auth_hmacsha256_update(&st, n1, NONCE_LEN);
	crypto_auth_hmacsha256_update(&st, n2, NONCE_LEN);
	crypto_auth_hmacsha256_final(&st, out);
}

struct hello {
	char magic[MAGIC_LEN];
	uint32_t version;
	uint8_t nonce[NONCE_LEN];
} __attribute__((packed));

static int check_hello(const struct hello *h, struct err *e)
{
	if (memcmp(h->magic, MAGIC, MAGIC_LEN))
		return err_set(e, -EPROTO,
			       "the peer is not a dvmm migration "
			       "endpoint");
	if (h->version != MIGRATE_VERSION)
		return err_set(e, -EPROTO,
			       "the peer speaks migration version %u, we %u",
			       h->version, MIGRATE_VERSION);
	return 0;
}

/* Source side: dest hello, our hello + proof, dest's proof. */
static int auth_as_source(struct conn *c, const struct migrate_secret *s,
			  struct err *e)
{
	struct hello d, me = {.version = MIGRATE_VERSION};
	uint8_t mac[MAC_LEN], want[MAC_LEN];
	int rc = recv_all(c->fd, &d, sizeof(d), IO_TIMEOUT_MS);

	if (rc)
		return err_set(e, rc, "no greeting from the destination: %s",
			       strerror(-rc));
	if ((rc = check_hello(&d, e)))
		return rc;
	memcpy(me.magic, MAGIC, MAGIC_LEN);
	randombytes_buf(me.nonce, NONCE_LEN);
	auth_mac(s, "src", d.nonce, me.nonce, mac);
	rc = send_all(c->fd, &me, sizeof(me));
	if (!rc)
		rc = send_all(c->fd, mac, MAC_LEN);
	if (!rc)
		rc = recv_all(c->fd, mac, MAC_LEN, IO_TIMEOUT_MS);
	if (rc)
		return err_set(e, rc,
			       "the destination refused us (wrong "
			       "secret?): %s",
			       strerror(-rc));
	auth_mac(s, "dst", me.nonce, d.nonce, want);
	if (sodium_memcmp(mac, want, MAC_LEN))
		return err_set(e, -EACCES,
			       "the destination does not know "
			       "the migration secret");
	return 0;
}

static int auth_as_dest(struct conn *c, const struct migrate_secret *s,
			struct err *e)
{
	struct hello src, me = {.version = MIGRATE_VERSION};
	uint8_t mac[MAC_LEN], want[MAC_LEN];
	int rc;

	memcpy(me.magic, MAGIC, MAGIC_LEN);
	randombytes_buf(me.nonce, NONCE_LEN);
	rc = send_all(c->fd, &me, sizeof(me));
	if (!rc)
		rc = recv_all(c->fd, &src, sizeof(src), IO_TIMEOUT_MS);
	if (!rc)
		rc = recv_all(c->fd, mac, MAC_LEN, IO_TIMEOUT_MS);
	if (rc)
		return err_set(e, rc, "migration handshake: %s", strerror(-rc));
	if ((rc = check_hello(&src, e)))
		return rc;
	auth_mac(s, "src", me.nonce, src.nonce, want);
	if (sodium_memcmp(mac, want, MAC_LEN))
		return err_set(e, -EACCES,
			       "refused a migration source that "
			       "does not know the secret");
	auth_mac(s, "dst", src.nonce, me.nonce, mac);
	return send_all(c->fd, mac, MAC_LEN);
}

/* ---- source ---- */

static bool page_is_zero(const uint8_t *p)
{
	static const uint8_t zero[PAGE];

	return !memcmp(p, zero, PAGE);
}

/* One page: its bytes, or a zero marker. */
static int send_page(struct conn *c, struct vm *vm, uint64_t off,
		     struct migrate_result *r)
{
	const uint8_t *p = vm->mem.base + off;
	uint64_t z[2] = {off, 1};

	if (page_is_zero(p)) {
		r->zero_pages++;
		return send_rec(c, REC_ZERO, z, sizeof(z), NULL, 0);
	}
	r->pages_sent++;
	r->bytes += PAGE;
	return send_rec(c, REC_PAGE, &off, sizeof(off), p, PAGE);
}

/* All of RAM: runs of zero pages as one marker each, the rest as pages. */
static int send_ram(struct conn *c, struct vm *vm, struct migrate_result *r)
{
	const uint8_t *base = vm->mem.base;
	uint64_t npages = vm->mem.ram_size / PAGE;
	int rc = 0;

	for (uint64_t p = 0; p < npages && !rc;) {
		uint64_t run = 0, hdr[2];

		while (p + run < npages &&
		       page_is_zero(base + (p + run) * PAGE))
			run++;
		if (!run) {
			rc = send_page(c, vm, p++ * PAGE, r);
			continue;
		}
		hdr[0] = p * PAGE;
		hdr[1] = run;
		rc = send_rec(c, REC_ZERO, hdr, sizeof(hdr), NULL, 0);
		r->zero_pages += run;
		p += run;
	}
	return rc;
}

/* "tcp:HOST:PORT" as a socket address (@passive: to listen on). */
static int resolve(const char *uri, bool passive, struct addrinfo **ai,
		   struct err *e)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = passive ? AI_PASSIVE : 0};
	char host[256], port[8];
	uint16_t p;
	int rc = migrate_parse_uri(uri, host, sizeof(host), &p, e);

	if (rc)
		return rc;
	snprintf(port, sizeof(port), "%u", p);
	*ai = NULL;
	if (getaddrinfo(host, port, &hints, ai) || !*ai)
		return err_set(e, passive ? -EADDRNOTAVAIL : -EHOSTUNREACH,
			       "cannot resolve %s", host);
	return 0;
}

static int connect_to(const char *uri, struct err *e)
{
	struct addrinfo *ai;
	int fd, rc, one = 1;

	if ((rc = resolve(uri, false, &ai, e)))
		return rc;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	rc = fd < 0 ? -errno : 0;
	if (!rc && connect(fd, ai->ai_addr, ai->ai_addrlen))
		rc = -errno;
	freeaddrinfo(ai);
	if (rc) {
		if (fd >= 0)
			close(fd);
		return err_set(e, rc, "cannot reach %s: %s", uri,
			       strerror(-rc));
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

struct dirty {
	uint64_t *map[GUEST_MEM_MAX_REGIONS];
	uint64_t words[GUEST_MEM_MAX_REGIONS];
};

static void dirty_free(struct dirty *d)
{
	for (int i = 0; i < GUEST_MEM_MAX_REGIONS; i++)
		free(d->map[i]);
}

static int dirty_alloc(struct dirty *d, struct vm *vm)
{
	memset(d, 0, sizeof(*d));
	for (int i = 0; i < vm->mem.nregions; i++) {
		d->words[i] = (vm->mem.region[i].size / PAGE + 63) / 64;
		d->map[i] = calloc(d->words[i], sizeof(uint64_t));
		if (!d->map[i])
			return -ENOMEM;
	}
	return 0;
}

/* A scratch bitmap as large as the largest region's. */
static uint64_t *dirty_scratch(const struct dirty *d)
{
	uint64_t words = 1;

	for (int i = 0; i < GUEST_MEM_MAX_REGIONS; i++)
		if (d->words[i] > words)
			words = d->words[i];
	return calloc(words, sizeof(uint64_t));
}

/* OR the pages dirtied since the last call into @d; their count. */
static int64_t dirty_collect(struct dirty *d, struct vm *vm, uint64_t *tmp)
{
	int64_t n = 0;

	for (int i = 0; i < vm->mem.nregions; i++) {
		int rc = vm_dirty_pages(vm, i, tmp);

		if (rc)
			return rc;
		for (uint64_t w = 0; w < d->words[i]; w++) {
			d->map[i][w] |= tmp[w];
			n += __builtin_popcountll(d->map[i][w]);
		}
	}
	return n;
}

/* Send the pages marked in @d and clear them. */
static int dirty_send(struct dirty *d, struct conn *c, struct vm *vm,
		      struct migrate_result *r)
{
	int rc = 0;

	for (int i = 0; i < vm->mem.nregions && !rc; i++) {
		uint64_t base =
			(uint64_t)(vm->mem.region[i].hva - vm->mem.base);

		for (uint64_t w = 0; w < d->words[i] && !rc; w++) {
			uint64_t bits = d->map[i][w];

			d->map[i][w] = 0;
			while (bits && !rc) {
				int b = __builtin_ctzll(bits);

				bits &= bits - 1;
				rc = send_page(c, vm,
					       base + (w * 64 + (uint64_t)b) *
							       PAGE,
					       r);
			}
		}
	}
	return rc;
}

/*
 * Pre-copy: all of RAM, then rounds of what the vCPUs dirtied, until the
 * rest would take under the downtime target at the rate seen so far.
 * Leaves the last round's pages marked in @d. Returns 0, or -ENOTSUP when
 * KVM cannot log (the caller then copies everything while paused).
 */
static int precopy(struct conn *c, struct vm *vm, const struct migrate_opts *o,
		   struct dirty *d, struct migrate_result *r)
{
	unsigned int target = o->downtime_ms ? o->downtime_ms : 50;
	unsigned int max = o->max_rounds ? o->max_rounds : 30;
	uint64_t *tmp = dirty_scratch(d);
	uint64_t t0 = clock_mono_ns(), bytes0 = r->bytes;
	int64_t n = 0;
	int rc;

	if (!tmp)
		return -ENOMEM;
	rc = vm_dirty_log(vm, true);
	if (!rc)
		n = dirty_collect(d, vm, tmp); /* from now on */
	if (rc || n < 0) {
		free(tmp);
		vm_dirty_log(vm, false);
		return -ENOTSUP;
	}
	for (int i = 0; i < vm->mem.nregions; i++)
		memset(d->map[i], 0, d->words[i] * sizeof(uint64_t));
	r->precopy = true;
	rc = send_ram(c, vm, r);
	while (!rc) {
		double ms = (double)(clock_mono_ns() - t0) / 1e6;
		double rate = ms > 0 ? (double)(r->bytes - bytes0) / ms : 0;

		n = dirty_collect(d, vm, tmp);
		if (n < 0) {
			rc = (int)n;
			break;
		}
		/* bytes per ms; never trust less than 100 MB/s as the link */
		if (rate < 100000)
			rate = 100000;
		if ((double)n * PAGE / rate <= target || r->rounds >= max)
			break;
		r->rounds++;
		rc = dirty_send(d, c, vm, r);
	}
	free(tmp);
	return rc;
}

int migrate_send(struct vm *vm, const char *uri, const struct migrate_secret *s,
		 const struct migrate_opts *o, struct migrate_result *r,
		 struct err *e)
{
	struct conn c = {.fd = -1};
	struct vmstate st = {0};
	struct dirty d;
	uint8_t *blob = NULL, mac[MAC_LEN], answer = 0;
	size_t blen = 0;
	uint64_t info[2] = {vm->mem.ram_size, (uint64_t)vm->ncpus};
	uint64_t t0 = clock_mono_ns(), tp = 0;
	bool paused = false;
	int rc;

	memset(r, 0, sizeof(*r));
	rc = dirty_alloc(&d, vm);
	if (rc) {
		dirty_free(&d);
		return err_set(e, rc, "out of memory for the dirty bitmaps");
	}
	c.fd = connect_to(uri, e);
	if (c.fd < 0) {
		dirty_free(&d);
		return c.fd;
	}
	rc = auth_as_source(&c, s, e);
	if (!rc) {
		crypto_auth_hmacsha256_init(&c.mac, s->key, s->len);
		rc = send_rec(&c, REC_RAM_INFO, info, sizeof(info), NULL, 0);
	}
	if (!rc) {
		rc = precopy(&c, vm, o, &d, r);
		if (rc == -ENOTSUP)
			rc = 0; /* everything goes while paused */
	}
	/* the final copy, paused */
	if (!rc) {
		tp = clock_mono_ns();
		paused = vm_pause(vm) == 0;
		if (r->precopy) {
			uint64_t before = r->pages_sent + r->zero_pages;
			uint64_t *tmp = dirty_scratch(&d);
			int64_t n = tmp ? dirty_collect(&d, vm, tmp) : -ENOMEM;

			free(tmp);
			rc = n < 0 ? (int)n : dirty_send(&d, &c, vm, r);
			r->final_pages = r->pages_sent + r->zero_pages - before;
		} else {
			rc = send_ram(&c, vm, r);
		}
	}
	if (!rc)
		rc = vmstate_capture(vm, &st, e);
	if (!rc) {
		rc = vmstate_encode(&st, &blob, &blen);
		if (rc)
			err_set(e, rc, "cannot encode the VM state");
	}
	vmstate_free(&st);
	if (!rc)
		rc = send_rec(&c, REC_STATE, blob, blen, NULL, 0);
	if (!rc) {
		struct rec_hdr h = {.type = REC_END, .len = MAC_LEN};

		crypto_auth_hmacsha256_final(&c.mac, mac);
		rc = send_all(c.fd, &h, sizeof(h));
		if (!rc)
			rc = send_all(c.fd, mac, MAC_LEN);
	}
	if (rc && !e->code)
		err_set(e, rc, "sending to %s: %s", uri, strerror(-rc));
	if (!rc) {
		rc = recv_all(c.fd, &answer, 1, RUNNING_TIMEOUT_MS);
		if (rc || answer != 'R')
			rc = err_set(e, rc ? rc : -EPROTO,
				     "the destination did not start the VM "
				     "(%s)",
				     rc ? strerror(-rc) : "it said it failed");
	}
	r->bytes += blen;
	r->downtime_ms = tp ? (double)(clock_mono_ns() - tp) / 1e6 : 0;
	r->total_ms = (double)(clock_mono_ns() - t0) / 1e6;
	if (r->precopy)
		vm_dirty_log(vm, false);
	if (rc && paused)
		vm_resume(vm);
	free(blob);
	dirty_free(&d);
	close(c.fd);
	return rc;
}

/* ---- destination ---- */

static int listen_on(const char *uri, struct err *e)
{
	struct addrinfo *ai;
	int fd, rc, one = 1;

	if ((rc = resolve(uri, true, &ai, e)))
		return rc;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	rc = fd < 0 ? -errno : 0;
	if (!rc)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (!rc && (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 1)))
		rc = -errno;
	freeaddrinfo(ai);
	if (rc) {
		if (fd >= 0)
			close(fd);
		return err_set(e, rc, "cannot listen on %s: %s", uri,
			       strerror(-rc));
	}
	return fd;
}

static int recv_rec_hdr(struct conn *c, struct rec_hdr *h)
{
	int rc = recv_all(c->fd, h, sizeof(*h), IO_TIMEOUT_MS);

	if (!rc && h->type != REC_END)
		crypto_auth_hmacsha256_update(&c->mac, (const uint8_t *)h,
					      sizeof(*h));
	return rc;
}

static int recv_body(struct conn *c, void *buf, size_t len)
{
	int rc = recv_all(c->fd, buf, len, IO_TIMEOUT_MS);

	if (!rc)
		crypto_auth_hmacsha256_update(&c->mac, buf, len);
	return rc;
}

/* One record into RAM or the state blob; 1 at the end. */
static int recv_record(struct conn *c, struct vm *vm, uint8_t **blob,
		       size_t *blen, uint8_t *mac, struct err *e)
{
	struct rec_hdr h;
	uint64_t v[2];
	int rc = recv_rec_hdr(c, &h);

	if (rc)
		return err_set(e, rc, "migration stream: %s", strerror(-rc));
	switch (h.type) {
	case REC_RAM_INFO:
		if (h.len != sizeof(v) || recv_body(c, v, sizeof(v)))
			break;
		if (v[0] != vm->mem.ram_size || v[1] != (uint64_t)vm->ncpus)
			return err_set(
				e, -EINVAL,
				"the source VM has %llu MiB and %llu "
				"vCPUs; this one %llu MiB and %d",
				(unsigned long long)(v[0] >> 20),
				(unsigned long long)v[1],
				(unsigned long long)(vm->mem.ram_size >> 20),
				vm->ncpus);
		return 0;
	case REC_PAGE:
		if (h.len != 8 + PAGE || recv_body(c, v, 8) || v[0] % PAGE ||
		    v[0] >= vm->mem.ram_size)
			break;
		return recv_body(c, vm->mem.base + v[0], PAGE) ? -EIO : 0;
	case REC_ZERO:
		if (h.len != sizeof(v) || recv_body(c, v, sizeof(v)) ||
		    v[0] % PAGE || v[0] > vm->mem.ram_size ||
		    v[1] > (vm->mem.ram_size - v[0]) / PAGE)
			break;
		memset(vm->mem.base + v[0], 0, v[1] * PAGE);
		return 0;
	case REC_STATE:
		if (*blob || !h.len || h.len > MAX_STATE)
			break;
		*blob = malloc(h.len);
		*blen = h.len;
		if (!*blob || recv_body(c, *blob, h.len))
			break;
		return 0;
	case REC_END:
		if (h.len != MAC_LEN ||
		    recv_all(c->fd, mac, MAC_LEN, IO_TIMEOUT_MS))
			break;
		return 1;
	}
	return err_set(e, -EPROTO,
		       "bad migration record (type %u, %llu "
		       "bytes)",
		       h.type, (unsigned long long)h.len);
}

static int accept_one(int lfd, unsigned int timeout_ms, struct err *e)
{
	int fd, rc = wait_fd(lfd, POLLIN, timeout_ms ? timeout_ms : -1u);

	if (rc)
		return err_set(e, rc, "no migration source came: %s",
			       strerror(-rc));
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return err_set(e, -errno, "accept: %s", strerror(errno));
	return fd;
}

int migrate_receive(struct vm *vm, const char *uri,
		    const struct migrate_secret *s, unsigned int timeout_ms,
		    struct err *e)
{
	struct conn c = {.fd = -1};
	uint8_t *blob = NULL, mac[MAC_LEN], want[MAC_LEN];
	struct vmstate st = {0};
	size_t blen = 0;
	int lfd = listen_on(uri, e), rc;

	if (lfd < 0)
		return lfd;
	pr_info("waiting for a migration source on %s", uri);
	for (;;) { /* strangers are refused; we go on waiting */
		c.fd = accept_one(lfd, timeout_ms, e);
		if (c.fd < 0)
			break;
		rc = auth_as_dest(&c, s, e);
		if (!rc)
			break;
		pr_warn("%s; still waiting on %s", e->msg, uri);
		err_clear(e);
		close(c.fd);
	}
	close(lfd);
	if (c.fd < 0)
		return c.fd;
	crypto_auth_hmacsha256_init(&c.mac, s->key, s->len);
	while ((rc = recv_record(&c, vm, &blob, &blen, mac, e)) == 0)
		;
	rc = rc == 1 ? 0 : rc;
	if (!rc) {
		crypto_auth_hmacsha256_final(&c.mac, want);
		if (sodium_memcmp(mac, want, MAC_LEN))
			rc = err_set(e, -EBADMSG,
				     "the migration stream was "
				     "corrupted (MAC mismatch)");
		else if (!blob)
			rc = err_set(e, -EPROTO,
				     "the migration stream had no "
				     "VM state");
	}
	if (!rc)
		rc = vmstate_decode(blob, blen, &st, e);
	if (!rc)
		rc = vmstate_restore(vm, &st, e);
	vmstate_free(&st);
	free(blob);
	if (rc) {
		migrate_confirm(c.fd, false);
		return rc;
	}
	return c.fd;
}

void migrate_confirm(int fd, bool ok)
{
	uint8_t a = ok ? 'R' : 'F';

	if (fd < 0)
		return;
	if (send_all(fd, &a, 1))
		pr_warn("could not tell the migration source: %s",
			strerror(errno));
	close(fd);
}
