/*
 * migration/migrate.h - moving a VM to another dvmm process over TCP. The
 * stream: a mutual HMAC-SHA256 challenge-response over a shared secret,
 * then records (guest RAM pages, runs of zero pages, the KVM state from
 * vmstate.c), then an HMAC over every record byte, checked before the
 * destination restores anything; the destination answers once its vCPUs
 * run, and only then does the source stop. This is the stop-and-copy
 * part: the source is paused for the whole copy (pre-copy rounds over
 * dirty logging come next, see docs/migration.md).
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

struct migrate_result {
	uint64_t pages_sent, zero_pages, bytes;
	double copy_ms; /* the source was paused this long, at least */
};

/* A secret file: hex, 16 to 64 bytes, not readable by every user. */
int migrate_load_secret(const char *path, struct migrate_secret *s,
			struct err *e);
/* "tcp:HOST:PORT" into a numeric host and port. */
int migrate_parse_uri(const char *uri, char *host, size_t hostlen,
		      uint16_t *port, struct err *e);

/*
 * Source: @vm paused by the caller. Connect to @uri, authenticate, send RAM
 * and state, wait (bounded) until the destination runs. 0, or a negative
 * errno with e saying why (the caller then resumes the VM).
 */
int migrate_send(struct vm *vm, const char *uri, const struct migrate_secret *s,
		 struct migrate_result *r, struct err *e);

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
