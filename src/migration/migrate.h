/*
 * migration/migrate.h - moving a VM to another dvmm process over TCP. The
 * stream: a mutual HMAC-SHA256 challenge-response over a shared secret,
 * then records (guest RAM pages, runs of zero pages, the KVM state from
 * vmstate.c, devices from devstate.c), then a MAC over every record byte
 * (Poly1305 under a key derived for this session), checked before the
 * destination restores anything; the destination answers once its vCPUs
 * run, and only then does the source stop. RAM goes first while the VM
 * runs, in rounds of the pages its vCPUs dirtied (KVM dirty logging), then
 * the rest with the VM paused (see docs/migration.md).
 */
#ifndef DVMM_MIGRATION_MIGRATE_H
#define DVMM_MIGRATION_MIGRATE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "machine/machine.h"
#include "util/err.h"

#define MIGRATE_SECRET_MIN 16
#define MIGRATE_SECRET_MAX 64
#define MIGRATE_VERSION 3

struct migrate_secret {
	uint8_t key[MIGRATE_SECRET_MAX];
	size_t len;
};

struct migrate_opts {
	unsigned int downtime_ms;    /* target for the final copy (0: 50) */
	unsigned int bandwidth_mbps; /* pre-copy limit, MB/s (0: none) */
	unsigned int max_rounds;     /* pre-copy rounds at most (0: 30) */
	bool no_auto_converge;	     /* never throttle the vCPUs */
	/*
	 * Post-copy: one pre-copy pass, then the state, and the destination
	 * runs at once, fetching the pages still owed on demand while the
	 * rest follows in the background (postcopy.h).
	 */
	bool postcopy;
};

struct migrate_result {
	uint64_t pages_sent, zero_pages, bytes;
	unsigned int rounds;  /* pre-copy rounds before the final one */
	uint64_t final_pages; /* pages sent while paused */
	double downtime_ms;   /* paused until the destination ran */
	double total_ms;
	bool precopy;	  /* false: dirty logging was not available */
	int throttle_pct; /* the most the vCPUs were slowed */
	uint64_t device_bytes;
	bool postcopy;	     /* the pages owed went after the switch */
	uint64_t owed_pages; /* how many */
	uint64_t requested;  /* of them, asked for by a fault */
	double postcopy_ms;  /* the destination ran until the last came */
};

enum migrate_phase {
	MIGRATE_NONE,
	MIGRATE_SETUP,	   /* connecting, authenticating */
	MIGRATE_PRECOPY,   /* RAM going over while the VM runs */
	MIGRATE_STOPPED,   /* paused: last pages, state, hand-over */
	MIGRATE_POSTCOPY,  /* the destination runs; pages follow */
	MIGRATE_COMPLETED, /* the destination runs the VM */
	MIGRATE_FAILED,	   /* the VM goes on here; error says why */
};

extern const char *const migrate_phase_names[];

/* What `migrate-status` shows; updated by migrate_send under lock. */
struct migrate_progress {
	pthread_mutex_t lock;
	enum migrate_phase phase;
	char to[128];
	unsigned int round;
	uint64_t pages_left;	     /* dirty pages not yet sent */
	double dirty_mbps;	     /* the guest's dirtying, last round */
	double link_mbps;	     /* our sending rate so far */
	double expected_downtime_ms; /* pages_left at link_mbps */
	int throttle_pct;
	uint64_t started_ns;
	struct migrate_result result;
	char error[ERR_MSG_MAX];
};

/* A secret file: hex, 16 to 64 bytes, not readable by every user. */
int migrate_load_secret(const char *path, struct migrate_secret *s,
			struct err *e);

/*
 * Source: connect to @uri, authenticate, copy the RAM while the VM runs
 * (pre-copy rounds over KVM dirty logging and the device-write log until
 * the rest fits the downtime target; the vCPUs throttled when the guest
 * dirties faster than the link), pause it, quiesce the devices, send the
 * rest and the state, hand the devices' host resources over, and wait
 * (bounded) until the destination runs. On failure the devices and the VM
 * go on here. @p (not NULL) is kept up to date. 0, or a negative errno
 * with e saying why.
 */
int migrate_send(struct machine *pc, const char *uri,
		 const struct migrate_secret *s, const struct migrate_opts *o,
		 struct migrate_progress *p, struct err *e);

/*
 * Destination: listen on @uri and take one source that proves the secret
 * (a connection that does not is refused with a warning, and the wait goes
 * on; at most @timeout_ms for each, 0 = forever; given up as soon as
 * *@cancel (may be NULL) is set), receive RAM and state
 * into @pc (created with the same devices, not started), take the devices'
 * host resources once the source let them go, and restore everything.
 * 0 with *link for migrate_confirm once the vCPUs run, or a negative
 * errno (the source has been told).
 */
struct migrate_link;
int migrate_receive(struct machine *pc, const char *uri,
		    const struct migrate_secret *s, unsigned int timeout_ms,
		    const volatile bool *cancel, struct migrate_link **link,
		    struct err *e);
/*
 * Tell the source we run (@ok), or that we failed (after letting the
 * devices' host resources go, so the source can take them back); frees
 * @link. Nothing when @link is NULL.
 */
void migrate_confirm(struct machine *pc, struct migrate_link *link, bool ok);

#endif
