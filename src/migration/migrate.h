/*
 * migration/migrate.h - moving a VM to another dvmm process over TCP. The
 * stream: a mutual HMAC-SHA256 challenge-response over a shared secret,
 * then records (guest RAM pages, runs of zero pages, the KVM state from
 * vmstate.c), then an HMAC over every record byte, checked before the
 * destination restores anything; the destination answers once its vCPUs
 * run, and only then does the source stop. RAM goes first while the VM
 * runs, in rounds of the pages its vCPUs dirtied (KVM dirty logging), then
 * the rest with the VM paused (see docs/migration.md).
 */
#ifndef DVMM_MIGRATION_MIGRATE_H
#define DVMM_MIGRATION_MIGRATE_H

#include <stddef.h>
#include <stdint.h>

#include "core/vm.h"
#include "util/err.h"

#define MIGRATE_SECRET_MIN 16
#define MIGRATE_SECRET_MAX 64
#define MIGRATE_VERSION 1

struct migrate_secret {
	uint8_t key[MIGRATE_SECRET_MAX];
	size_t len;
};

struct migrate_opts {
	unsigned int downtime_ms; /* target for the final copy (0: 50) */
	unsigned int max_rounds;  /* pre-copy rounds at most (0: 30) */
};

struct migrate_result {
	uint64_t pages_sent, zero_pages, bytes;
	unsigned int rounds;  /* pre-copy rounds before the final one */
	uint64_t final_pages; /* pages sent while paused */
	double downtime_ms;   /* paused until the destination ran */
	double total_ms;
	bool precopy; /* false: dirty logging was not available */
};

/* A secret file: hex, 16 to 64 bytes, not readable by every user. */
int migrate_load_secret(const char *path, struct migrate_secret *s,
			struct err *e);
/* "tcp:HOST:PORT" into a numeric host and port. */
int migrate_parse_uri(const char *uri, char *host, size_t hostlen,
		      uint16_t *port, struct err *e);

/*
 * Source: connect to @uri, authenticate, copy the RAM while the VM runs
 * (pre-copy rounds over KVM dirty logging until the rest fits the downtime
 * target), pause it, send the rest and the state, and wait (bounded) until
 * the destination runs. On failure the VM is resumed if this call paused
 * it. 0, or a negative errno with e saying why.
 */
int migrate_send(struct vm *vm, const char *uri, const struct migrate_secret *s,
		 const struct migrate_opts *o, struct migrate_result *r,
		 struct err *e);

/*
 * Destination: listen on @uri and take one source that proves the secret
 * (a connection that does not is refused with a warning, and the wait goes
 * on; at most @timeout_ms for each, 0 = forever), receive RAM and state
 * into @vm
 * (created, not started) and restore it. Returns the connection (>= 0) for
 * migrate_confirm once the vCPUs run, or a negative errno.
 */
int migrate_receive(struct vm *vm, const char *uri,
		    const struct migrate_secret *s, unsigned int timeout_ms,
		    struct err *e);
/* Tell the source we run (@ok) or failed, and close @fd. */
void migrate_confirm(int fd, bool ok);

#endif
