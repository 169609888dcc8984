/*
 * migration/postcopy.c - post-copy (see postcopy.h): the authenticated
 * messages, the source's answering and pushing loop, and the destination's
 * userfaultfd registration and fault thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "migration/postcopy.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/sock.h"

#define PAGE POSTCOPY_PAGE
#define MAC_LEN crypto_auth_hmacsha256_BYTES
#define IO_TIMEOUT_MS 10000
#define RUNNING_TIMEOUT_MS 20000
#define SILENCE_MS 10000 /* nothing from the source while we wait */
#define UFFD_BATCH 32

struct wire {
	uint8_t kind, pad[7];
	uint64_t seq, off, arg;
} __attribute__((packed));

/* ---- messages ---- */

void postcopy_chan_init(struct postcopy_chan *ch, int fd, const uint8_t *key,
			size_t keylen, const uint8_t *session, bool source)
{
	memset(ch, 0, sizeof(*ch));
	ch->fd = fd;
	memcpy(ch->key, key, keylen);
	ch->keylen = keylen;
	memcpy(ch->session, session, POSTCOPY_SESSION);
	ch->self = source ? 's' : 'd';
	pthread_mutex_init(&ch->tx_lock, NULL);
}

void postcopy_chan_destroy(struct postcopy_chan *ch)
{
	pthread_mutex_destroy(&ch->tx_lock);
	sodium_memzero(ch->key, sizeof(ch->key));
}

/* The MAC of a message @from 's' or 'd': session, direction, every byte. */
static void msg_mac(const struct postcopy_chan *ch, uint8_t from,
		    const struct wire *w, const uint8_t *page, uint8_t *out)
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, ch->key, ch->keylen);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)"pcm", 3);
	crypto_auth_hmacsha256_update(&st, ch->session, POSTCOPY_SESSION);
	crypto_auth_hmacsha256_update(&st, &from, 1);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)w, sizeof(*w));
	if (page)
		crypto_auth_hmacsha256_update(&st, page, PAGE);
	crypto_auth_hmacsha256_final(&st, out);
}

int postcopy_send(struct postcopy_chan *ch, uint8_t kind, uint64_t off,
		  uint64_t arg, const void *page)
{
	struct wire w = {.kind = kind, .off = off, .arg = arg};
	/* one send for the whole message */
	uint8_t buf[sizeof(w) + PAGE + MAC_LEN];
	size_t len = sizeof(w);
	int rc;

	if ((kind == POSTCOPY_PAGE_DATA) != (page != NULL))
		return -EINVAL;
	pthread_mutex_lock(&ch->tx_lock);
	w.seq = ch->tx_seq++;
	memcpy(buf, &w, sizeof(w));
	if (page) {
		memcpy(buf + len, page, PAGE);
		len += PAGE;
	}
	msg_mac(ch, ch->self, &w, page, buf + len);
	rc = sock_send_all(ch->fd, buf, len + MAC_LEN);
	pthread_mutex_unlock(&ch->tx_lock);
	return rc;
}

static bool kind_known(uint8_t k)
{
	return k == POSTCOPY_PAGE_DATA || k == POSTCOPY_PAGE_ZERO ||
	       k == POSTCOPY_REQUEST || k == POSTCOPY_RUNNING ||
	       k == POSTCOPY_FAILED || k == POSTCOPY_DONE;
}

int postcopy_recv(struct postcopy_chan *ch, struct postcopy_msg *m,
		  uint8_t *page, unsigned int ms)
{
	uint8_t rest[PAGE + MAC_LEN], *mac = rest, want[MAC_LEN];
	uint8_t peer = ch->self == 's' ? 'd' : 's';
	bool data;
	struct wire w;
	int rc = sock_recv_all(ch->fd, &w, sizeof(w), ms);

	if (rc)
		return rc;
	if (!kind_known(w.kind))
		return -EPROTO;
	data = w.kind == POSTCOPY_PAGE_DATA;
	if (data && !page)
		return -EPROTO; /* no page data this way */
	if (data)
		mac = rest + PAGE;
	rc = sock_recv_all(ch->fd, rest, (size_t)(mac - rest) + MAC_LEN,
			   IO_TIMEOUT_MS);
	if (rc)
		return rc;
	if (data)
		memcpy(page, rest, PAGE);
	msg_mac(ch, peer, &w, data ? page : NULL, want);
	if (sodium_memcmp(mac, want, MAC_LEN) || w.seq != ch->rx_seq)
		return -EBADMSG;
	ch->rx_seq++;
	m->kind = w.kind;
	m->off = w.off;
	m->arg = w.arg;
	return 0;
}

uint64_t postcopy_map_words(uint64_t ram_size)
{
	return (ram_size / PAGE + 63) / 64;
}

static bool bit_test(const uint64_t *map, uint64_t pg)
{
	return map[pg / 64] & (1ULL << (pg % 64));
}

static void bit_clear(uint64_t *map, uint64_t pg)
{
	map[pg / 64] &= ~(1ULL << (pg % 64));
}

static uint64_t map_count(const uint64_t *map, uint64_t words)
{
	uint64_t n = 0;

	for (uint64_t w = 0; w < words; w++)
		n += (uint64_t)__builtin_popcountll(map[w]);
	return n;
}

/* A request (or push) for @off: a page the destination may take. */
static bool off_ok(uint64_t off, uint64_t ram_size)
{
	return off % PAGE == 0 && off < ram_size;
}

/* ---- source ---- */

struct serve {
	struct postcopy_chan *ch;
	const uint8_t *ram;
	uint64_t ram_size, words, left, cursor, pushed_bytes, t_push;
	uint64_t t_wait; /* since when we wait for an answer */
	uint64_t *owed;
	uint64_t bw;
	struct migrate_progress *p;
	uint8_t page[PAGE];
};

static bool is_zero(const uint8_t *p)
{
	static const uint8_t zero[PAGE];

	return !memcmp(p, zero, PAGE);
}

/* Send the owed page at @off now and cross it off. */
static int send_owed(struct serve *s, uint64_t off)
{
	bool zero;

	/* the VM is paused here: its RAM does not change any more */
	memcpy(s->page, s->ram + off, PAGE);
	zero = is_zero(s->page);
	bit_clear(s->owed, off / PAGE);
	if (!--s->left)
		s->t_wait = clock_mono_ns();
	s->pushed_bytes += zero ? 64 : PAGE + 64;
	return postcopy_send(s->ch,
			     zero ? POSTCOPY_PAGE_ZERO : POSTCOPY_PAGE_DATA,
			     off, 0, zero ? NULL : s->page);
}

/* The next owed page from the cursor on (s->left > 0). */
static uint64_t next_owed(struct serve *s)
{
	for (;;) {
		uint64_t w = s->cursor / 64;
		uint64_t bits = s->owed[w] & (~0ULL << (s->cursor % 64));

		if (bits)
			return (w * 64 + (uint64_t)__builtin_ctzll(bits)) *
			       PAGE;
		s->cursor = (w + 1) % s->words * 64;
	}
}

/* ms until the next push is due under the limit (0: now). */
static int push_wait_ms(struct serve *s)
{
	uint64_t due, el;

	if (!s->bw)
		return 0;
	due = (uint64_t)((double)s->pushed_bytes * 1e9 / (double)s->bw);
	el = clock_mono_ns() - s->t_push;
	if (due <= el)
		return 0;
	return (int)((due - el) / 1000000) + 1;
}

static void serve_progress(struct serve *s, bool all)
{
	if (!all && s->left % 256)
		return;
	pthread_mutex_lock(&s->p->lock);
	s->p->pages_left = s->left;
	pthread_mutex_unlock(&s->p->lock);
}

int postcopy_serve(struct postcopy_chan *ch, const uint8_t *ram,
		   uint64_t ram_size, uint64_t *owed, uint64_t bw_bytes_per_s,
		   struct migrate_progress *p, bool *running,
		   uint64_t *t_running, struct err *e)
{
	struct serve *s = calloc(1, sizeof(*s));
	uint64_t requested = 0;
	int rc = 0;

	*running = false;
	if (!s)
		return err_set(e, -ENOMEM, "out of memory");
	*s = (struct serve){.ch = ch,
			    .ram = ram,
			    .ram_size = ram_size,
			    .words = postcopy_map_words(ram_size),
			    .owed = owed,
			    .bw = bw_bytes_per_s,
			    .p = p};
	s->left = map_count(owed, s->words);
	s->t_wait = clock_mono_ns();
	serve_progress(s, true);
	for (;;) {
		/* pushing starts once the destination runs */
		bool push = *running && s->left;
		int wait = push ? push_wait_ms(s) : 100;
		struct postcopy_msg m;
		struct pollfd pfd = {.fd = ch->fd, .events = POLLIN};
		int n = poll(&pfd, 1, wait);

		if (n < 0 && errno != EINTR) {
			rc = -errno;
			break;
		}
		if (n <= 0) {
			if (push && !push_wait_ms(s)) {
				rc = send_owed(s, next_owed(s));
				serve_progress(s, false);
				if (rc)
					break;
				continue;
			}
			/* waiting for 'R', or for 'C' after the last push */
			if (!push && clock_mono_ns() - s->t_wait >
					     RUNNING_TIMEOUT_MS * 1000000ULL) {
				rc = -ETIMEDOUT;
				break;
			}
			continue;
		}
		rc = postcopy_recv(ch, &m, NULL, IO_TIMEOUT_MS);
		if (rc)
			break;
		if (m.kind == POSTCOPY_REQUEST) {
			/* asked again, or already on its way: nothing */
			if (!off_ok(m.off, ram_size)) {
				rc = -EPROTO;
				break;
			}
			if (bit_test(owed, m.off / PAGE)) {
				requested++;
				rc = send_owed(s, m.off);
				serve_progress(s, false);
				if (rc)
					break;
			}
		} else if (m.kind == POSTCOPY_RUNNING && !*running) {
			*running = true;
			*t_running = clock_mono_ns();
			s->t_push = s->t_wait = *t_running;
			pthread_mutex_lock(&p->lock);
			p->phase = MIGRATE_POSTCOPY;
			pthread_mutex_unlock(&p->lock);
		} else if (m.kind == POSTCOPY_FAILED && !*running) {
			rc = err_set(e, -EPROTO,
				     "the destination could not start the VM "
				     "(see its log)");
			break;
		} else if (m.kind == POSTCOPY_DONE && *running && !s->left) {
			pthread_mutex_lock(&p->lock);
			p->result.postcopy_ms = (double)m.arg / 1e3;
			p->result.requested = requested;
			pthread_mutex_unlock(&p->lock);
			break;
		} else {
			rc = -EPROTO;
			break;
		}
	}
	serve_progress(s, true);
	free(s);
	if (rc && !e->code)
		err_set(e, rc, "post-copy: %s",
			rc == -EPROTO  ? "the destination broke the protocol" :
			rc == -EBADMSG ? "a forged or corrupted message" :
					 strerror(-rc));
	return rc;
}

/* ---- destination ---- */

struct postcopy_dest {
	struct postcopy_chan *ch;
	uint8_t *ram;
	uint64_t ram_size, npages, words, left, outstanding, requests;
	uint64_t *owed, *asked;
	int uffd, stopfd;
	uint8_t *bounce; /* page-aligned: what UFFDIO_COPY copies from */
	pthread_t thread;
	bool started;

	pthread_mutex_t lock; /* resumed, t_resume, done_ns */
	pthread_cond_t cond;
	bool resumed;
	uint64_t t_resume, done_ns;
};

/*
 * The VM cannot go on without the source's pages (threads may be waiting
 * in faults nothing will resolve): one line, and the process ends.
 */
static void __attribute__((noreturn)) dest_fatal(const char *why, int rc)
{
	fflush(stdout);
	fprintf(stderr,
		"dvmm: post-copy migration failed: %s (%s); the VM cannot go "
		"on without the pages the source still holds\n",
		why, strerror(-rc));
	_exit(1);
}

static int uffd_copy(struct postcopy_dest *d, uint64_t off, bool zero)
{
	int rc;

	do {
		if (zero) {
			struct uffdio_zeropage z = {
				.range = {(uint64_t)(uintptr_t)(d->ram + off),
					  PAGE}};

			rc = ioctl(d->uffd, UFFDIO_ZEROPAGE, &z) ? -errno : 0;
		} else {
			struct uffdio_copy c = {
				.dst = (uint64_t)(uintptr_t)(d->ram + off),
				.src = (uint64_t)(uintptr_t)d->bounce,
				.len = PAGE};

			rc = ioctl(d->uffd, UFFDIO_COPY, &c) ? -errno : 0;
		}
	} while (rc == -EAGAIN);
	if (rc == -EEXIST) { /* already there: wake whoever waits on it */
		struct uffdio_range r = {(uint64_t)(uintptr_t)(d->ram + off),
					 PAGE};

		rc = ioctl(d->uffd, UFFDIO_WAKE, &r) ? -errno : 0;
	}
	return rc;
}

/* A fault: ask for an owed page (once); any other page is a zero page. */
static void on_fault(struct postcopy_dest *d, const struct uffd_msg *m)
{
	uint64_t addr = m->arg.pagefault.address & ~(PAGE - 1);
	uint64_t off = addr - (uint64_t)(uintptr_t)d->ram, pg = off / PAGE;
	int rc;

	if (addr < (uint64_t)(uintptr_t)d->ram || off >= d->ram_size)
		return;
	if (!bit_test(d->owed, pg)) {
		/* never populated here, or placed since: EEXIST then */
		if ((rc = uffd_copy(d, off, true)))
			dest_fatal("cannot place a zero page", rc);
		return;
	}
	if (bit_test(d->asked, pg))
		return;
	d->asked[pg / 64] |= 1ULL << (pg % 64);
	d->outstanding++;
	d->requests++;
	if ((rc = postcopy_send(d->ch, POSTCOPY_REQUEST, off, 0, NULL)))
		dest_fatal("cannot ask the source for a page", rc);
}

/* A page from the source: checked, placed, crossed off. */
static void on_message(struct postcopy_dest *d)
{
	struct postcopy_msg m;
	uint64_t pg;
	int rc = postcopy_recv(d->ch, &m, d->bounce, IO_TIMEOUT_MS);

	if (rc == -ECONNRESET)
		dest_fatal("the source is gone", rc);
	if (rc)
		dest_fatal("the connection to the source broke", rc);
	if ((m.kind != POSTCOPY_PAGE_DATA && m.kind != POSTCOPY_PAGE_ZERO) ||
	    !off_ok(m.off, d->ram_size) || !bit_test(d->owed, m.off / PAGE))
		dest_fatal("the source sent something it did not owe", -EPROTO);
	pg = m.off / PAGE;
	if ((rc = uffd_copy(d, m.off, m.kind == POSTCOPY_PAGE_ZERO)))
		dest_fatal("cannot place a page", rc);
	bit_clear(d->owed, pg);
	d->left--;
	if (bit_test(d->asked, pg)) {
		bit_clear(d->asked, pg);
		d->outstanding--;
	}
}

static bool is_resumed(struct postcopy_dest *d)
{
	bool r;

	pthread_mutex_lock(&d->lock);
	r = d->resumed;
	pthread_mutex_unlock(&d->lock);
	return r;
}

/*
 * The fault thread: faults into requests, pages into RAM (only through
 * UFFDIO_COPY from its own buffer: it never touches guest RAM itself, so
 * it cannot block in a fault of its own). Returns at the last page, or
 * when told to stop.
 */
static void *fault_thread(void *arg)
{
	struct postcopy_dest *d = arg;
	struct uffd_msg msg[UFFD_BATCH];
	struct pollfd p[3] = {{d->uffd, POLLIN, 0},
			      {d->ch->fd, POLLIN, 0},
			      {d->stopfd, POLLIN, 0}};
	uint64_t heard = clock_mono_ns();

	pthread_setname_np(pthread_self(), "postcopy");
	while (d->left) {
		int n = poll(p, 3, 1000);

		if (n < 0 && errno != EINTR)
			dest_fatal("poll", -errno);
		if (p[2].revents)
			return NULL;
		if (n > 0 && (p[0].revents & POLLIN)) {
			ssize_t got = read(d->uffd, msg, sizeof(msg));

			for (ssize_t i = 0;
			     got > 0 && i < got / (ssize_t)sizeof(msg[0]); i++)
				if (msg[i].event == UFFD_EVENT_PAGEFAULT)
					on_fault(d, &msg[i]);
		}
		if (n > 0 && p[1].revents) {
			on_message(d);
			heard = clock_mono_ns();
		} else if ((d->outstanding || is_resumed(d)) &&
			   clock_mono_ns() - heard > SILENCE_MS * 1000000ULL) {
			dest_fatal("the source went silent", -ETIMEDOUT);
		}
	}
	pthread_mutex_lock(&d->lock);
	d->done_ns = clock_mono_ns();
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

static int open_uffd(struct postcopy_dest *d, struct err *e)
{
	struct uffdio_api api = {.api = UFFD_API};
	struct uffdio_register reg = {
		.range = {(uint64_t)(uintptr_t)d->ram, d->ram_size},
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	uint64_t need = (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE) |
			(1ULL << _UFFDIO_WAKE);

	d->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (d->uffd < 0)
		return err_set(e, -errno,
			       "post-copy: userfaultfd: %s (vm.unprivileged_"
			       "userfaultfd=0 needs CAP_SYS_PTRACE)",
			       strerror(errno));
	if (ioctl(d->uffd, UFFDIO_API, &api))
		return err_set(e, -errno, "post-copy: UFFDIO_API: %s",
			       strerror(errno));
	if (ioctl(d->uffd, UFFDIO_REGISTER, &reg))
		return err_set(e, -errno, "post-copy: UFFDIO_REGISTER: %s",
			       strerror(errno));
	if ((reg.ioctls & need) != need)
		return err_set(e, -ENOTSUP,
			       "post-copy: userfaultfd lacks COPY/ZEROPAGE/"
			       "WAKE on guest RAM");
	return 0;
}

/* Every owed page gone (so no stale copy of it survives), in runs. */
static int drop_owed(struct postcopy_dest *d, struct err *e)
{
	for (uint64_t pg = 0; pg < d->npages;) {
		uint64_t run = 0;

		if (!bit_test(d->owed, pg)) {
			pg++;
			continue;
		}
		while (pg + run < d->npages && bit_test(d->owed, pg + run))
			run++;
		if (madvise(d->ram + pg * PAGE, run * PAGE, MADV_DONTNEED))
			return err_set(e, -errno,
				       "post-copy: MADV_DONTNEED: %s",
				       strerror(errno));
		pg += run;
	}
	return 0;
}

static void dest_free(struct postcopy_dest *d)
{
	uint64_t one = 1;

	if (d->started) {
		if (write(d->stopfd, &one, sizeof(one)) < 0)
			pr_warn("post-copy: cannot stop the fault thread");
		pthread_join(d->thread, NULL);
	}
	if (d->uffd >= 0) {
		struct uffdio_range r = {(uint64_t)(uintptr_t)d->ram,
					 d->ram_size};

		ioctl(d->uffd, UFFDIO_UNREGISTER, &r);
		close(d->uffd);
	}
	if (d->stopfd >= 0)
		close(d->stopfd);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	free(d->owed);
	free(d->asked);
	free(d->bounce);
	free(d);
}

int postcopy_dest_start(struct postcopy_dest **out, struct postcopy_chan *ch,
			uint8_t *ram, uint64_t ram_size, uint64_t *owed,
			struct err *e)
{
	struct postcopy_dest *d = calloc(1, sizeof(*d));
	int rc;

	*out = NULL;
	if (!d) {
		free(owed);
		return err_set(e, -ENOMEM, "out of memory");
	}
	d->ch = ch;
	d->ram = ram;
	d->ram_size = ram_size;
	d->npages = ram_size / PAGE;
	d->words = postcopy_map_words(ram_size);
	d->owed = owed;
	d->left = map_count(owed, d->words);
	d->uffd = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	d->stopfd = eventfd(0, EFD_CLOEXEC);
	d->asked = calloc(d->words, sizeof(uint64_t));
	d->bounce = aligned_alloc(PAGE, PAGE);
	if (d->stopfd < 0 || !d->asked || !d->bounce)
		rc = err_set(e, -ENOMEM, "post-copy: out of memory");
	else
		rc = drop_owed(d, e);
	if (!rc)
		rc = open_uffd(d, e);
	if (!rc) {
		rc = -pthread_create(&d->thread, NULL, fault_thread, d);
		if (rc)
			err_set(e, rc, "post-copy: fault thread: %s",
				strerror(-rc));
	}
	if (rc) {
		dest_free(d);
		return rc;
	}
	d->started = true;
	pr_info("post-copy: %llu pages follow on demand",
		(unsigned long long)d->left);
	*out = d;
	return 0;
}

int postcopy_dest_run(struct postcopy_dest *d, double *postcopy_ms,
		      uint64_t *pages, struct err *e)
{
	uint64_t us;
	int rc;

	pthread_mutex_lock(&d->lock);
	d->resumed = true;
	d->t_resume = clock_mono_ns();
	pthread_mutex_unlock(&d->lock);
	rc = postcopy_send(d->ch, POSTCOPY_RUNNING, 0, 0, NULL);
	if (rc)
		dest_fatal("cannot tell the source we run", rc);
	pthread_join(d->thread, NULL);
	d->started = false;
	/* every page is in: the RAM is ours again */
	us = (d->done_ns - d->t_resume) / 1000;
	if (d->done_ns < d->t_resume)
		us = 0;
	{
		struct uffdio_range r = {(uint64_t)(uintptr_t)d->ram,
					 d->ram_size};

		if (ioctl(d->uffd, UFFDIO_UNREGISTER, &r))
			pr_warn("post-copy: UFFDIO_UNREGISTER: %s",
				strerror(errno));
		close(d->uffd);
		d->uffd = -1;
	}
	rc = postcopy_send(d->ch, POSTCOPY_DONE, 0, us, NULL);
	if (rc)
		err_set(e, rc, "post-copy: cannot tell the source: %s",
			strerror(-rc));
	*postcopy_ms = (double)us / 1e3;
	*pages = d->requests;
	dest_free(d);
	return rc;
}

void postcopy_dest_abort(struct postcopy_dest *d)
{
	if (d)
		dest_free(d);
}
