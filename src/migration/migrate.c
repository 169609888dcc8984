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
#include <time.h>
#include <unistd.h>

#include "core/vm_io.h"
#include "migration/devstate.h"
#include "migration/migrate.h"
#include "migration/postcopy.h"
#include "migration/vmstate.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/parse.h"
#include "util/sock.h"

#define MAGIC "DVMM-MIG"
#define MAGIC_LEN 8
#define NONCE_LEN 32
#define MAC_LEN crypto_auth_hmacsha256_BYTES
#define STREAM_MAC_LEN crypto_onetimeauth_BYTES
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
	REC_DEVICES = 6,  /* devstate_save bytes */
	REC_OWED = 7,	  /* post-copy: u64 pages, a bit per page owed */
};

struct rec_hdr {
	uint32_t type;
	uint32_t pad;
	uint64_t len;
} __attribute__((packed));

struct conn {
	int fd;
	/*
	 * Poly1305 over every record byte (ten times HMAC-SHA256's speed
	 * here), keyed once per session from the secret and both nonces.
	 */
	crypto_onetimeauth_state mac;
	uint8_t key[MIGRATE_SECRET_MAX];
	size_t keylen;
	uint8_t session[2 * NONCE_LEN]; /* the destination's, the source's */
	uint8_t page[PAGE];		/* send_page's copy */
	/* the bandwidth limit (0: none) and what was sent under it */
	uint64_t bw_bytes_per_s, paced_bytes, pace_t0;
	/* destination, post-copy: past 'D', the pages follow on pc */
	bool postcopy;
	struct postcopy_chan pc;
	struct postcopy_dest *pcd;
};

/* After the handshake: the stream MAC and the acknowledgements' key. */
static void conn_keys(struct conn *c, const struct migrate_secret *s)
{
	uint8_t k[crypto_auth_hmacsha256_BYTES];
	crypto_auth_hmacsha256_state st;

	memcpy(c->key, s->key, s->len);
	c->keylen = s->len;
	crypto_auth_hmacsha256_init(&st, s->key, s->len);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)"stream", 6);
	crypto_auth_hmacsha256_update(&st, c->session, sizeof(c->session));
	crypto_auth_hmacsha256_final(&st, k);
	crypto_onetimeauth_init(&c->mac, k);
	sodium_memzero(k, sizeof(k));
}

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

/* ---- records ---- */

static int send_rec(struct conn *c, uint32_t type, const void *a, size_t alen,
		    const void *b, size_t blen)
{
	struct rec_hdr h = {.type = type, .len = alen + blen};
	int rc;

	crypto_onetimeauth_update(&c->mac, (const uint8_t *)&h, sizeof(h));
	crypto_onetimeauth_update(&c->mac, a, alen);
	if (blen)
		crypto_onetimeauth_update(&c->mac, b, blen);
	rc = sock_send_all(c->fd, &h, sizeof(h));
	if (!rc)
		rc = sock_send_all(c->fd, a, alen);
	if (!rc && blen)
		rc = sock_send_all(c->fd, b, blen);
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
	int rc = sock_recv_all(c->fd, &d, sizeof(d), IO_TIMEOUT_MS);

	if (rc)
		return err_set(e, rc, "no greeting from the destination: %s",
			       strerror(-rc));
	if ((rc = check_hello(&d, e)))
		return rc;
	memcpy(me.magic, MAGIC, MAGIC_LEN);
	randombytes_buf(me.nonce, NONCE_LEN);
	memcpy(c->session, d.nonce, NONCE_LEN);
	memcpy(c->session + NONCE_LEN, me.nonce, NONCE_LEN);
	auth_mac(s, "src", d.nonce, me.nonce, mac);
	rc = sock_send_all(c->fd, &me, sizeof(me));
	if (!rc)
		rc = sock_send_all(c->fd, mac, MAC_LEN);
	if (!rc)
		rc = sock_recv_all(c->fd, mac, MAC_LEN, IO_TIMEOUT_MS);
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
	rc = sock_send_all(c->fd, &me, sizeof(me));
	if (!rc)
		rc = sock_recv_all(c->fd, &src, sizeof(src), IO_TIMEOUT_MS);
	if (!rc)
		rc = sock_recv_all(c->fd, mac, MAC_LEN, IO_TIMEOUT_MS);
	if (rc)
		return err_set(e, rc, "migration handshake: %s", strerror(-rc));
	if ((rc = check_hello(&src, e)))
		return rc;
	memcpy(c->session, me.nonce, NONCE_LEN);
	memcpy(c->session + NONCE_LEN, src.nonce, NONCE_LEN);
	auth_mac(s, "src", me.nonce, src.nonce, want);
	if (sodium_memcmp(mac, want, MAC_LEN))
		return err_set(e, -EACCES,
			       "refused a migration source that "
			       "does not know the secret");
	auth_mac(s, "dst", src.nonce, me.nonce, mac);
	return sock_send_all(c->fd, mac, MAC_LEN);
}

/* ---- authenticated acknowledgements ---- */

/* One byte ('H', 'D', 'R', 'F') and a MAC binding it to this session. */
static void ack_mac(const struct conn *c, uint8_t what, uint8_t *out)
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, c->key, c->keylen);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)"ack", 3);
	crypto_auth_hmacsha256_update(&st, c->session, sizeof(c->session));
	crypto_auth_hmacsha256_update(&st, &what, 1);
	crypto_auth_hmacsha256_final(&st, out);
}

static int send_ack(struct conn *c, uint8_t what)
{
	uint8_t msg[1 + MAC_LEN];

	msg[0] = what;
	ack_mac(c, what, msg + 1);
	return sock_send_all(c->fd, msg, sizeof(msg));
}

/* The peer's next acknowledgement into *what; -EBADMSG if forged. */
static int recv_ack(struct conn *c, uint8_t *what, unsigned int ms)
{
	uint8_t msg[1 + MAC_LEN], want[MAC_LEN];
	int rc = sock_recv_all(c->fd, msg, sizeof(msg), ms);

	if (rc)
		return rc;
	ack_mac(c, msg[0], want);
	if (sodium_memcmp(msg + 1, want, MAC_LEN))
		return -EBADMSG;
	*what = msg[0];
	return 0;
}

/* ---- source ---- */

const char *const migrate_phase_names[] = {
	[MIGRATE_NONE] = "none",	  [MIGRATE_SETUP] = "setup",
	[MIGRATE_PRECOPY] = "pre-copy",	  [MIGRATE_STOPPED] = "stopped",
	[MIGRATE_POSTCOPY] = "post-copy", [MIGRATE_COMPLETED] = "completed",
	[MIGRATE_FAILED] = "failed",
};

static void progress_phase(struct migrate_progress *p, enum migrate_phase ph)
{
	pthread_mutex_lock(&p->lock);
	p->phase = ph;
	pthread_mutex_unlock(&p->lock);
}

static bool page_is_zero(const uint8_t *p)
{
	static const uint8_t zero[PAGE];

	return !memcmp(p, zero, PAGE);
}

/* With a bandwidth limit: wait until the bytes sent so far are due. */
static void pace(struct conn *c)
{
	uint64_t due, el;
	struct timespec ts;

	if (!c->bw_bytes_per_s)
		return;
	due = (uint64_t)((double)c->paced_bytes * 1e9 /
			 (double)c->bw_bytes_per_s);
	el = clock_mono_ns() - c->pace_t0;
	if (due <= el + 1000000)
		return;
	ts.tv_sec = (time_t)((due - el) / 1000000000ULL);
	ts.tv_nsec = (long)((due - el) % 1000000000ULL);
	nanosleep(&ts, NULL);
}

/*
 * One page: its bytes, or a zero marker. The guest may be writing the page
 * right now: a copy is what gets checked, MAC'd and sent, so the MAC covers
 * exactly the bytes on the wire (a later change is caught by the dirty log).
 */
static int send_page(struct conn *c, struct vm *vm, uint64_t off,
		     struct migrate_result *r)
{
	const uint8_t *p = c->page;
	uint64_t z[2] = {off, 1};

	memcpy(c->page, vm->mem.base + off, PAGE);
	pace(c);
	if (page_is_zero(p)) {
		r->zero_pages++;
		c->paced_bytes += sizeof(struct rec_hdr) + sizeof(z);
		return send_rec(c, REC_ZERO, z, sizeof(z), NULL, 0);
	}
	r->pages_sent++;
	r->bytes += PAGE;
	c->paced_bytes += sizeof(struct rec_hdr) + 8 + PAGE;
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
	int rc = parse_tcp_uri(uri, host, sizeof(host), &p, e);

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
	uint64_t *tmp; /* as large as the largest map */
};

static void dirty_free(struct dirty *d)
{
	for (int i = 0; i < GUEST_MEM_MAX_REGIONS; i++)
		free(d->map[i]);
	free(d->tmp);
}

static int dirty_alloc(struct dirty *d, struct vm *vm)
{
	uint64_t most = 1;

	memset(d, 0, sizeof(*d));
	for (int i = 0; i < vm->mem.nregions; i++) {
		d->words[i] = (vm->mem.region[i].size / PAGE + 63) / 64;
		d->map[i] = calloc(d->words[i], sizeof(uint64_t));
		if (!d->map[i])
			return -ENOMEM;
		if (d->words[i] > most)
			most = d->words[i];
	}
	d->tmp = calloc(most, sizeof(uint64_t));
	return d->tmp ? 0 : -ENOMEM;
}

static void dirty_clear(struct dirty *d)
{
	for (int i = 0; i < GUEST_MEM_MAX_REGIONS; i++)
		if (d->map[i])
			memset(d->map[i], 0, d->words[i] * sizeof(uint64_t));
}

/*
 * OR the pages dirtied since the last call into @d: by the vCPUs (KVM's
 * log) and by the devices (guest_mem's log); the count marked in all.
 */
static int64_t dirty_collect(struct dirty *d, struct vm *vm)
{
	int64_t n = 0;

	for (int i = 0; i < vm->mem.nregions; i++) {
		int rc = vm_dirty_pages(vm, i, d->tmp);

		if (rc)
			return rc;
		for (uint64_t w = 0; w < d->words[i]; w++)
			d->map[i][w] |= d->tmp[w];
		guest_mem_log_take(&vm->mem, i, d->map[i]);
		for (uint64_t w = 0; w < d->words[i]; w++)
			n += __builtin_popcountll(d->map[i][w]);
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

/* Turn both dirty logs on; false when KVM cannot log. */
static bool logs_start(struct vm *vm, struct dirty *d)
{
	if (vm_dirty_log(vm, true))
		return false;
	if (guest_mem_log_start(&vm->mem) || dirty_collect(d, vm) < 0) {
		vm_dirty_log(vm, false);
		guest_mem_log_stop(&vm->mem);
		return false;
	}
	dirty_clear(d);
	return true;
}

static void logs_stop(struct vm *vm)
{
	vm_dirty_log(vm, false);
	guest_mem_log_stop(&vm->mem);
}

/* A round's figures into the progress; the expected downtime (ms). */
static double round_report(struct migrate_progress *p, struct conn *c,
			   int64_t dirty, uint64_t round_ns, uint64_t t0)
{
	double ms = (double)(clock_mono_ns() - t0) / 1e6;
	/* bytes per ms; never trust less than 100 MB/s as the link */
	double rate = ms > 0 ? (double)c->paced_bytes / ms : 0;
	double expect;

	if (rate < 100000)
		rate = 100000;
	expect = (double)dirty * PAGE / rate;
	pthread_mutex_lock(&p->lock);
	p->pages_left = (uint64_t)dirty;
	p->link_mbps = rate / 1000;
	p->dirty_mbps =
		round_ns ? (double)dirty * PAGE * 1e3 / (double)round_ns : 0;
	p->expected_downtime_ms = expect;
	pthread_mutex_unlock(&p->lock);
	return expect;
}

/*
 * auto-converge: the guest dirtied at least half of what the round sent
 * (twice in a row): slow the vCPUs down a step (20%, then +10%, up to 90%).
 */
static void converge(struct vm *vm, struct migrate_progress *p,
		     uint64_t dirtied, uint64_t sent, int *strikes)
{
	int pct;

	if (!sent || dirtied * 2 < sent) {
		*strikes = 0;
		return;
	}
	if (++*strikes < 2)
		return;
	*strikes = 0;
	pct = p->throttle_pct ? p->throttle_pct + 10 : 20;
	if (pct > 90)
		pct = 90;
	if (pct == p->throttle_pct || vm_set_throttle(vm, pct))
		return;
	pthread_mutex_lock(&p->lock);
	p->throttle_pct = pct;
	if (pct > p->result.throttle_pct)
		p->result.throttle_pct = pct;
	pthread_mutex_unlock(&p->lock);
	pr_info("migration: the guest dirties memory faster than the link; "
		"vCPUs throttled to %d%%",
		100 - pct);
}

/*
 * Pre-copy: all of RAM, then rounds of what the vCPUs and devices dirtied,
 * until the rest would take under the downtime target at the rate seen so
 * far. Leaves the last round's pages marked in @d. Returns 0, or -ENOTSUP
 * when KVM cannot log (the caller then copies everything while paused).
 */
static int precopy(struct conn *c, struct vm *vm, const struct migrate_opts *o,
		   struct dirty *d, struct migrate_progress *p)
{
	struct migrate_result *r = &p->result;
	unsigned int target = o->downtime_ms ? o->downtime_ms : 50;
	/* post-copy: one pass, whatever it left goes after the switch */
	unsigned int max = o->max_rounds ? o->max_rounds : o->postcopy ? 0 : 30;
	uint64_t t0 = clock_mono_ns(), tr = t0, sent0 = 0;
	int strikes = 0, rc;

	if (!logs_start(vm, d))
		return -ENOTSUP;
	r->precopy = true;
	progress_phase(p, MIGRATE_PRECOPY);
	rc = send_ram(c, vm, r);
	while (!rc) {
		int64_t n = dirty_collect(d, vm);
		uint64_t now = clock_mono_ns();

		if (vm_get_state(vm) == VM_STOPPING) {
			rc = -ECANCELED; /* the guest ended, or dvmm does */
			break;
		}

		if (n < 0) {
			rc = (int)n;
			break;
		}
		if (round_report(p, c, n, now - tr, t0) <= target ||
		    r->rounds >= max)
			break;
		if (r->rounds && !o->no_auto_converge)
			converge(vm, p, (uint64_t)n * PAGE,
				 c->paced_bytes - sent0, &strikes);
		r->rounds++;
		pthread_mutex_lock(&p->lock);
		p->round = r->rounds;
		pthread_mutex_unlock(&p->lock);
		tr = now;
		sent0 = c->paced_bytes;
		rc = dirty_send(d, c, vm, r);
	}
	return rc;
}

/*
 * Post-copy: the pages still dirty become the pages owed, a bitmap over
 * all of RAM (*owed, NULL when none is owed) sent as one record.
 */
static int send_owed(struct conn *c, struct vm *vm, struct dirty *d,
		     uint64_t **owed, struct migrate_result *r)
{
	uint64_t words = postcopy_map_words(vm->mem.ram_size);
	uint64_t npages = vm->mem.ram_size / PAGE;
	int64_t n = dirty_collect(d, vm);
	uint64_t *map;
	int rc;

	r->postcopy = true;
	if (n <= 0)
		return (int)n;
	map = calloc(words, sizeof(uint64_t));
	if (!map)
		return -ENOMEM;
	for (int i = 0; i < vm->mem.nregions; i++) {
		uint64_t first =
			(uint64_t)(vm->mem.region[i].hva - vm->mem.base) / PAGE;

		for (uint64_t w = 0; w < d->words[i]; w++)
			for (uint64_t bits = d->map[i][w]; bits;
			     bits &= bits - 1) {
				uint64_t pg = first + w * 64 +
					      (uint64_t)__builtin_ctzll(bits);

				map[pg / 64] |= 1ULL << (pg % 64);
			}
	}
	dirty_clear(d);
	rc = send_rec(c, REC_OWED, &npages, sizeof(npages), map,
		      words * sizeof(uint64_t));
	r->owed_pages = (uint64_t)n;
	r->bytes += words * sizeof(uint64_t);
	*owed = map;
	return rc;
}

/*
 * Paused: the last dirty pages (or all RAM; with post-copy, the list of
 * the pages owed), then the VM and device state.
 */
static int send_final(struct conn *c, struct machine *pc, struct dirty *d,
		      const struct migrate_opts *o, uint64_t **owed,
		      struct migrate_progress *p, struct err *e)
{
	struct migrate_result *r = &p->result;
	struct vm *vm = &pc->vm;
	struct vmstate st = {0};
	uint8_t *blob = NULL;
	size_t blen = 0;
	uint64_t before = r->pages_sent + r->zero_pages;
	int rc;

	c->bw_bytes_per_s = 0; /* the final copy goes at full speed */
	if (r->precopy && o->postcopy) {
		rc = send_owed(c, vm, d, owed, r);
	} else if (r->precopy) {
		int64_t n = dirty_collect(d, vm);

		rc = n < 0 ? (int)n : dirty_send(d, c, vm, r);
	} else {
		rc = send_ram(c, vm, r);
	}
	r->final_pages = r->pages_sent + r->zero_pages - before;
	if (!rc)
		rc = vmstate_capture(vm, &st, e);
	if (!rc && (rc = vmstate_encode(&st, &blob, &blen)))
		err_set(e, rc, "cannot encode the VM state");
	vmstate_free(&st);
	if (!rc)
		rc = send_rec(c, REC_STATE, blob, blen, NULL, 0);
	r->bytes += blen;
	free(blob);
	blob = NULL;
	if (!rc)
		rc = devstate_save(pc, &blob, &blen, e);
	if (!rc)
		rc = send_rec(c, REC_DEVICES, blob, blen, NULL, 0);
	r->device_bytes = blen;
	r->bytes += blen;
	free(blob);
	if (!rc) {
		struct rec_hdr h = {.type = REC_END, .len = STREAM_MAC_LEN};
		uint8_t mac[STREAM_MAC_LEN];

		crypto_onetimeauth_final(&c->mac, mac);
		rc = sock_send_all(c->fd, &h, sizeof(h));
		if (!rc)
			rc = sock_send_all(c->fd, mac, STREAM_MAC_LEN);
	}
	return rc;
}

/*
 * Post-copy, past 'D': the destination's 'R' and its requests for the
 * @owed pages, answered at once, the rest pushed until it has them all.
 * *running: it ran (from *t_run on), so this VM is no longer the one to go
 * on when something fails.
 */
static int serve_owed(struct conn *c, struct vm *vm, uint64_t *owed,
		      uint64_t bw, struct migrate_progress *p, bool *running,
		      uint64_t *t_run, struct err *e)
{
	struct postcopy_chan pc;
	int rc;

	postcopy_chan_init(&pc, c->fd, c->key, c->keylen, c->session, true);
	rc = postcopy_serve(&pc, vm->mem.base, vm->mem.ram_size, owed, bw, p,
			    running, t_run, e);
	postcopy_chan_destroy(&pc);
	if (rc && !*running)
		return rc;
	if (rc) {
		char why[ERR_MSG_MAX];

		snprintf(why, sizeof(why), "%s", e->msg);
		err_set(e, rc,
			"the destination runs the VM but the post-copy broke "
			"(%s): this paused VM holds the only complete copy of "
			"its memory and stays paused",
			why);
		pr_err("migration: %s", e->msg);
	}
	return rc;
}

/*
 * The state is over: the destination checks it ('H': give me the
 * devices), we let the devices' host resources go ('D') and it answers
 * 'R' once its vCPUs run (with post-copy: serve_owed). On failure
 * *released says whether we must take them back, *running whether the
 * destination ran (post-copy: then we must not).
 */
static int hand_over(struct conn *c, struct machine *pc, uint64_t *owed,
		     uint64_t bw, struct migrate_progress *p, bool *released,
		     bool *running, uint64_t *t_run, struct err *e)
{
	uint8_t a = 0;
	int rc = recv_ack(c, &a, RUNNING_TIMEOUT_MS);

	if (!rc && a != 'H')
		return err_set(e, -EPROTO,
			       "the destination refused the VM's state (see "
			       "its log)");
	if (!rc)
		rc = devstate_release(pc, e);
	if (rc)
		return e->code ? rc :
				 err_set(e, rc, "no answer: %s", strerror(-rc));
	*released = true;
	rc = send_ack(c, 'D');
	if (!rc && owed)
		return serve_owed(c, &pc->vm, owed, bw, p, running, t_run, e);
	if (!rc)
		rc = recv_ack(c, &a, RUNNING_TIMEOUT_MS);
	if (rc)
		return err_set(e, rc,
			       "the destination did not confirm it runs the "
			       "VM (%s)",
			       strerror(-rc));
	if (a != 'R')
		return err_set(e, -EPROTO,
			       "the destination could not start the VM (see "
			       "its log)");
	return 0;
}

/* After a failure: the devices and the VM go on here. */
static void take_back(struct machine *pc, bool released, bool paused,
		      struct err *e)
{
	struct err e2 = {0};

	if (released && devstate_acquire(pc, &e2)) {
		pr_err("migration failed (%s) and the devices cannot be taken "
		       "back: %s; the VM stays paused",
		       e->msg, e2.msg);
		return;
	}
	devstate_resume(pc);
	if (paused)
		vm_resume(&pc->vm);
}

/* The end of a migration, for migrate-status. */
static int finish(struct migrate_progress *p, int rc, const struct err *e)
{
	pthread_mutex_lock(&p->lock);
	p->phase = rc ? MIGRATE_FAILED : MIGRATE_COMPLETED;
	p->throttle_pct = 0;
	p->pages_left = 0;
	if (rc)
		snprintf(p->error, sizeof(p->error), "%s",
			 e->code ? e->msg : strerror(-rc));
	pthread_mutex_unlock(&p->lock);
	return rc;
}

int migrate_send(struct machine *pc, const char *uri,
		 const struct migrate_secret *s, const struct migrate_opts *o,
		 struct migrate_progress *p, struct err *e)
{
	struct migrate_result *r = &p->result;
	struct vm *vm = &pc->vm;
	struct conn c = {.fd = -1};
	struct dirty d;
	uint64_t info[2] = {vm->mem.ram_size, (uint64_t)vm->ncpus};
	uint64_t t0 = clock_mono_ns(), tp = 0, t_run = 0, *owed = NULL;
	bool paused = false, released = false, running = false;
	int rc;

	pthread_mutex_lock(&p->lock);
	memset(r, 0, sizeof(*r));
	p->phase = MIGRATE_SETUP;
	p->started_ns = t0;
	p->round = 0;
	if (p->to != uri)
		snprintf(p->to, sizeof(p->to), "%s", uri);
	pthread_mutex_unlock(&p->lock);
	rc = dirty_alloc(&d, vm);
	if (rc) {
		dirty_free(&d);
		err_set(e, rc, "out of memory for the dirty bitmaps");
		return finish(p, rc, e);
	}
	c.fd = connect_to(uri, e);
	if (c.fd < 0) {
		dirty_free(&d);
		return finish(p, c.fd, e);
	}
	rc = auth_as_source(&c, s, e);
	if (!rc) {
		conn_keys(&c, s);
		c.bw_bytes_per_s = (uint64_t)o->bandwidth_mbps * 1000000;
		c.pace_t0 = clock_mono_ns();
		rc = send_rec(&c, REC_RAM_INFO, info, sizeof(info), NULL, 0);
	}
	if (!rc) {
		rc = precopy(&c, vm, o, &d, p);
		if (rc == -ENOTSUP)
			rc = 0; /* everything goes while paused */
	}
	if (!rc) {
		tp = clock_mono_ns();
		rc = vm_pause(vm);
		paused = rc == 0 || rc == -ETIMEDOUT; /* paused, if late */
		if (rc == -EALREADY)
			rc = 0; /* paused by its user: it moves paused */
		else if (rc)
			rc = err_set(e, rc, "%s",
				     rc == -ETIMEDOUT ?
					     "the vCPUs did not stop in time" :
					     "the VM stopped before it could "
					     "move");
	}
	if (!rc) {
		devstate_quiesce(pc);
		progress_phase(p, MIGRATE_STOPPED);
		rc = send_final(&c, pc, &d, o, &owed, p, e);
	}
	if (rc == -ECANCELED && !e->code)
		err_set(e, rc, "the VM stopped before it could move");
	if (rc && !e->code)
		err_set(e, rc, "sending to %s: %s", uri, strerror(-rc));
	if (!rc)
		rc = hand_over(&c, pc, owed,
			       (uint64_t)o->bandwidth_mbps * 1000000, p,
			       &released, &running, &t_run, e);
	if (!t_run)
		t_run = clock_mono_ns();
	r->downtime_ms = tp ? (double)(t_run - tp) / 1e6 : 0;
	r->total_ms = (double)(clock_mono_ns() - t0) / 1e6;
	if (r->precopy)
		logs_stop(vm);
	vm_set_throttle(vm, 0);
	if (rc && !running)
		take_back(pc, released, paused, e);
	free(owed);
	dirty_free(&d);
	close(c.fd);
	return finish(p, rc, e);
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
	int rc = sock_recv_all(c->fd, h, sizeof(*h), IO_TIMEOUT_MS);

	if (!rc && h->type != REC_END)
		crypto_onetimeauth_update(&c->mac, (const uint8_t *)h,
					  sizeof(*h));
	return rc;
}

static int recv_body(struct conn *c, void *buf, size_t len)
{
	int rc = sock_recv_all(c->fd, buf, len, IO_TIMEOUT_MS);

	if (!rc)
		crypto_onetimeauth_update(&c->mac, buf, len);
	return rc;
}

/* What the stream carries besides RAM. */
struct incoming {
	uint64_t *owed; /* post-copy: the pages the source still owes */
	/*
	 * Pages written by a REC_PAGE: the only ones a zero marker has to
	 * clear (the rest of a fresh VM's RAM is zero and untouched; writing
	 * zeroes there would fault in all of an idle guest's memory).
	 */
	uint64_t *touched;
	uint8_t *state, *devices;
	size_t state_len, devices_len;
	uint8_t mac[STREAM_MAC_LEN];
};

static void mark_touched(struct incoming *in, uint64_t page)
{
	in->touched[page / 64] |= 1ULL << (page % 64);
}

/* Pages [first, first + n) are zero now. */
static void zero_touched(struct incoming *in, struct vm *vm, uint64_t first,
			 uint64_t n)
{
	for (uint64_t p = first; p < first + n; p++) {
		if (!(p % 64) && p + 64 <= first + n && !in->touched[p / 64]) {
			p += 63;
			continue;
		}
		if (in->touched[p / 64] & (1ULL << (p % 64))) {
			memset(vm->mem.base + p * PAGE, 0, PAGE);
			in->touched[p / 64] &= ~(1ULL << (p % 64));
		}
	}
}

/* A blob record (the VM state, the device state) of @len bytes. */
static int recv_blob(struct conn *c, uint64_t len, uint8_t **blob, size_t *blen)
{
	if (*blob || !len || len > MAX_STATE)
		return -EPROTO;
	*blob = malloc(len);
	if (!*blob)
		return -ENOMEM;
	*blen = len;
	return recv_body(c, *blob, len);
}

/* The pages owed: as many bits as RAM has pages, no more, once. */
static int recv_owed(struct conn *c, struct vm *vm, uint64_t len,
		     struct incoming *in)
{
	uint64_t words = postcopy_map_words(vm->mem.ram_size), npages;
	uint64_t tail = vm->mem.ram_size / PAGE % 64;

	if (in->owed || len != 8 + words * sizeof(uint64_t) ||
	    recv_body(c, &npages, 8) || npages != vm->mem.ram_size / PAGE)
		return -EPROTO;
	in->owed = calloc(words, sizeof(uint64_t));
	if (!in->owed)
		return -ENOMEM;
	if (recv_body(c, in->owed, words * sizeof(uint64_t)))
		return -EIO;
	if (tail && (in->owed[words - 1] >> tail))
		return -EPROTO;
	return 0;
}

/* One record into RAM or a blob; 1 at the end. */
static int recv_record(struct conn *c, struct vm *vm, struct incoming *in,
		       struct err *e)
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
		mark_touched(in, v[0] / PAGE);
		return recv_body(c, vm->mem.base + v[0], PAGE) ? -EIO : 0;
	case REC_ZERO:
		if (h.len != sizeof(v) || recv_body(c, v, sizeof(v)) ||
		    v[0] % PAGE || v[0] > vm->mem.ram_size ||
		    v[1] > (vm->mem.ram_size - v[0]) / PAGE)
			break;
		zero_touched(in, vm, v[0] / PAGE, v[1]);
		return 0;
	case REC_STATE:
		if (recv_blob(c, h.len, &in->state, &in->state_len))
			break;
		return 0;
	case REC_DEVICES:
		if (recv_blob(c, h.len, &in->devices, &in->devices_len))
			break;
		return 0;
	case REC_OWED:
		if (recv_owed(c, vm, h.len, in))
			break;
		return 0;
	case REC_END:
		if (h.len != STREAM_MAC_LEN ||
		    sock_recv_all(c->fd, in->mac, STREAM_MAC_LEN,
				  IO_TIMEOUT_MS))
			break;
		return 1;
	}
	return err_set(e, -EPROTO,
		       "bad migration record (type %u, %llu "
		       "bytes)",
		       h.type, (unsigned long long)h.len);
}

#define CANCEL_POLL_MS 100

/* Wait for a connection: at most @timeout_ms (0: for ever), or until
 * *@cancel is set. */
static int accept_one(int lfd, unsigned int timeout_ms,
		      const volatile bool *cancel, struct err *e)
{
	uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_ms * 1000000;
	int fd, rc;

	do {
		if (cancel && *cancel)
			return err_set(e, -ECANCELED,
				       "stopped while waiting for a migration "
				       "source");
		rc = sock_wait(lfd, POLLIN, CANCEL_POLL_MS);
		if (rc == -ETIMEDOUT && timeout_ms &&
		    clock_mono_ns() >= deadline)
			break;
	} while (rc == -ETIMEDOUT);
	if (rc)
		return err_set(e, rc, "no migration source came: %s",
			       strerror(-rc));
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return err_set(e, -errno, "accept: %s", strerror(errno));
	return fd;
}

/* Wait on @uri for a source that knows the secret. */
static int accept_source(struct conn *c, const char *uri,
			 const struct migrate_secret *s,
			 unsigned int timeout_ms, const volatile bool *cancel,
			 struct err *e)
{
	int lfd = listen_on(uri, e);

	if (lfd < 0)
		return lfd;
	pr_info("waiting for a migration source on %s", uri);
	for (;;) { /* strangers are refused; we go on waiting */
		c->fd = accept_one(lfd, timeout_ms, cancel, e);
		if (c->fd < 0)
			break;
		if (!auth_as_dest(c, s, e))
			break;
		pr_warn("%s; still waiting on %s", e->msg, uri);
		err_clear(e);
		close(c->fd);
	}
	close(lfd);
	return c->fd < 0 ? c->fd : 0;
}

/* Every record up to the end, and the stream's MAC checked. */
static int recv_stream(struct conn *c, struct vm *vm, struct incoming *in,
		       struct err *e)
{
	uint8_t want[STREAM_MAC_LEN];
	int rc;

	while ((rc = recv_record(c, vm, in, e)) == 0)
		;
	if (rc != 1)
		return rc;
	crypto_onetimeauth_final(&c->mac, want);
	if (sodium_memcmp(in->mac, want, STREAM_MAC_LEN))
		return err_set(e, -EBADMSG,
			       "the migration stream was corrupted (MAC "
			       "mismatch)");
	if (!in->state || !in->devices)
		return err_set(e, -EPROTO,
			       "the migration stream had no VM or device "
			       "state");
	return 0;
}

/*
 * The state is good: ask for the devices ('H'), take them once the source
 * let them go ('D'), restore the VM and the devices.
 */
static int take_over(struct conn *c, struct machine *pc, struct vmstate *st,
		     struct devstate *ds, struct incoming *in, struct err *e)
{
	uint8_t a = 0;
	int rc = send_ack(c, 'H');

	if (!rc)
		rc = recv_ack(c, &a, RUNNING_TIMEOUT_MS);
	if (rc || a != 'D')
		return err_set(e, rc ? rc : -EPROTO,
			       "the source did not let its devices go (%s)",
			       rc ? strerror(-rc) : "it gave up");
	if (in->owed) {
		/* nothing touched guest RAM yet: the owed pages go missing */
		postcopy_chan_init(&c->pc, c->fd, c->key, c->keylen, c->session,
				   false);
		c->postcopy = true;
		rc = postcopy_dest_start(&c->pcd, &c->pc, pc->vm.mem.base,
					 pc->vm.mem.ram_size, in->owed, e);
		in->owed = NULL;
		if (rc)
			return rc;
	}
	rc = devstate_acquire(pc, e);
	if (!rc)
		rc = vmstate_restore(&pc->vm, st, e);
	if (!rc)
		rc = devstate_load(pc, ds, e);
	return rc;
}

int migrate_receive(struct machine *pc, const char *uri,
		    const struct migrate_secret *s, unsigned int timeout_ms,
		    const volatile bool *cancel, struct migrate_link **out,
		    struct err *e)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct incoming in = {0};
	struct vmstate st = {0};
	struct devstate *ds = NULL;
	int rc;

	*out = NULL;
	if (!c)
		return err_set(e, -ENOMEM, "out of memory");
	c->fd = -1;
	rc = accept_source(c, uri, s, timeout_ms, cancel, e);
	if (rc) {
		free(c);
		return rc;
	}
	conn_keys(c, s);
	in.touched = calloc((pc->vm.mem.ram_size / PAGE + 63) / 64,
			    sizeof(uint64_t));
	rc = in.touched ? recv_stream(c, &pc->vm, &in, e) :
			  err_set(e, -ENOMEM, "out of memory");
	if (!rc)
		rc = vmstate_decode(in.state, in.state_len, &st, e);
	if (!rc)
		rc = devstate_decode(pc, in.devices, in.devices_len, &ds, e);
	if (!rc)
		rc = take_over(c, pc, &st, ds, &in, e);
	vmstate_free(&st);
	devstate_free(ds);
	free(in.state);
	free(in.devices);
	free(in.owed);
	free(in.touched);
	if (rc) {
		migrate_confirm(pc, (struct migrate_link *)c, false);
		return rc;
	}
	*out = (struct migrate_link *)c;
	return 0;
}

void migrate_confirm(struct machine *pc, struct migrate_link *l, bool ok)
{
	struct conn *c = (struct conn *)l;
	struct err e = {0};

	if (!c)
		return;
	if (c->postcopy && ok) {
		double ms = 0;
		uint64_t asked = 0;

		if (postcopy_dest_run(c->pcd, &ms, &asked, &e))
			pr_warn("%s", e.msg);
		else
			pr_info("post-copy: every page is here, %.1f ms after "
				"the VM ran (%llu asked for by faults)",
				ms, (unsigned long long)asked);
		c->pcd = NULL;
	}
	if (c->postcopy && !ok) {
		postcopy_dest_abort(c->pcd);
		c->pcd = NULL;
	}
	if (!ok)
		devstate_quiesce(pc);
	if (!ok && devstate_release(pc, &e))
		pr_warn("could not let the devices go: %s", e.msg);
	if (c->postcopy && !ok &&
	    postcopy_send(&c->pc, POSTCOPY_FAILED, 0, 0, NULL))
		pr_warn("could not tell the migration source");
	if (!c->postcopy && send_ack(c, ok ? 'R' : 'F'))
		pr_warn("could not tell the migration source: %s",
			strerror(errno));
	if (c->postcopy)
		postcopy_chan_destroy(&c->pc);
	close(c->fd);
	sodium_memzero(c, sizeof(*c));
	free(c);
}
