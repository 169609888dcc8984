/*
 * migration/postcopy.h - the post-copy phase of a migration: the
 * destination runs the VM before all of its RAM has arrived. The pages the
 * source still owes are made missing on the destination and guest RAM is
 * registered with userfaultfd; a fault thread turns a fault on an owed page
 * into a request the source answers at once, while the source pushes every
 * other owed page in the background. Every page is placed with UFFDIO_COPY;
 * once the last one is in, the destination unregisters and says so.
 *
 * The messages of this phase travel on the migration's TCP connection after
 * the source let the devices go ('D'); each carries a sequence number and an
 * HMAC-SHA256 (the migration secret) over the session's nonces, its
 * direction, its sequence number and every byte of it, and is refused
 * unless all of them match.
 */
#ifndef DVMM_MIGRATION_POSTCOPY_H
#define DVMM_MIGRATION_POSTCOPY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migration/migrate.h"
#include "util/err.h"

#define POSTCOPY_PAGE 4096ULL
#define POSTCOPY_SESSION 64 /* the handshake's two nonces */

enum postcopy_kind {
	POSTCOPY_PAGE_DATA = 'P', /* source: off, then the page's bytes */
	POSTCOPY_PAGE_ZERO = 'Z', /* source: off is a page of zeroes */
	POSTCOPY_REQUEST = 'Q',	  /* destination: a fault wants off */
	POSTCOPY_RUNNING = 'R',	  /* destination: the vCPUs run */
	POSTCOPY_FAILED = 'F',	  /* destination: could not start */
	POSTCOPY_DONE = 'C',	  /* destination: every page is in; arg: us
				     from running to the last page */
};

/* One side of the connection in the post-copy phase. */
struct postcopy_chan {
	int fd;
	uint8_t key[MIGRATE_SECRET_MAX];
	size_t keylen;
	uint8_t session[POSTCOPY_SESSION];
	uint8_t self; /* 's' on the source, 'd' on the destination */
	uint64_t tx_seq, rx_seq;
	pthread_mutex_t tx_lock; /* sends may come from two threads */
};

struct postcopy_msg {
	uint8_t kind;
	uint64_t off, arg;
};

void postcopy_chan_init(struct postcopy_chan *ch, int fd, const uint8_t *key,
			size_t keylen, const uint8_t *session, bool source);
void postcopy_chan_destroy(struct postcopy_chan *ch);
/* One message; @page (POSTCOPY_PAGE bytes) only for POSTCOPY_PAGE_DATA. */
int postcopy_send(struct postcopy_chan *ch, uint8_t kind, uint64_t off,
		  uint64_t arg, const void *page);
/*
 * The next message into *m (and @page, POSTCOPY_PAGE bytes, for page
 * data), waiting at most @ms for each part: -EBADMSG when its MAC or
 * sequence number is wrong, -EPROTO when its kind is unknown.
 */
int postcopy_recv(struct postcopy_chan *ch, struct postcopy_msg *m,
		  uint8_t *page, unsigned int ms);

/* A bit per page of guest RAM (from its base): the pages owed. */
uint64_t postcopy_map_words(uint64_t ram_size);

/*
 * Source, once the devices are released: answer the destination's
 * requests for the @owed pages (bitmap over @ram_size bytes of @ram, the
 * paused VM's RAM) at once, push the rest after it runs (at most
 * @bw_bytes_per_s, 0: no limit), until it says every page arrived.
 * *running is set (and *t_running, clock_mono_ns) when it says it runs:
 * after that a failure leaves this VM the only complete copy. @p: the
 * phase, pages left, and the result's post-copy figures.
 */
int postcopy_serve(struct postcopy_chan *ch, const uint8_t *ram,
		   uint64_t ram_size, uint64_t *owed, uint64_t bw_bytes_per_s,
		   struct migrate_progress *p, bool *running,
		   uint64_t *t_running, struct err *e);

/*
 * Destination, before anything touches guest RAM: drop the @owed pages
 * (@owed is taken over) of @ram, register the RAM with userfaultfd and
 * start the fault thread, which serves faults and places pages arriving on
 * @ch until every owed page is in. If the source goes away or sends
 * something wrong, the VM cannot go on: the thread says so in one line
 * and ends the process (exit status 1).
 */
struct postcopy_dest;
int postcopy_dest_start(struct postcopy_dest **out, struct postcopy_chan *ch,
			uint8_t *ram, uint64_t ram_size, uint64_t *owed,
			struct err *e);
/* The vCPUs run: tell the source, and wait until every page is in. */
int postcopy_dest_run(struct postcopy_dest *d, double *postcopy_ms,
		      uint64_t *pages, struct err *e);
/* Give up before the VM ran: stop the thread, unregister, free. */
void postcopy_dest_abort(struct postcopy_dest *d);

#endif
