/*
 * cluster/dsm.h - distributed shared memory for guest RAM: every node maps
 * the same guest RAM; pages move between nodes on demand through
 * userfaultfd (missing and write-protect faults) and the cluster
 * transport, under the home-based directory protocol of dsm_proto.h
 * (sequentially consistent: single writer, no stale copies).
 *
 * Memory is a memfd mapped twice: dsm_base() is registered with
 * userfaultfd and is what vCPUs, device threads and dvmm itself use; a
 * second, unregistered alias is only read by the DSM to send the contents
 * of pages this node holds. The fault thread and the transport callbacks
 * never touch the registered mapping. See docs/dsm.md.
 *
 * Use: dsm_create, then create the transport with an on_msg that passes
 * messages to dsm_handle_msg, dsm_attach it, transport_start, and
 * dsm_start (before any thread touches dsm_base()).
 */
#ifndef DVMM_CLUSTER_DSM_H
#define DVMM_CLUSTER_DSM_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster/transport.h"
#include "util/err.h"

#define DSM_LAT_BUCKETS 24 /* fault latency: bucket i = [2^i, 2^(i+1)) us */

struct dsm_config {
	int self;
	int nnodes;
	uint64_t size; /* bytes, a multiple of 4 KiB */
	/*
	 * Homes: pages are dealt to the nodes in stripes of home_chunk pages
	 * (home of page p = p / home_chunk % nnodes). 0 or 1: interleaved
	 * page by page; size / 4 KiB / nnodes (rounded up): one range each.
	 */
	uint64_t home_chunk;
};

/* Per-node counters (a snapshot). */
struct dsm_stats {
	uint64_t fault_read;	 /* missing, read access */
	uint64_t fault_write;	 /* missing, write access */
	uint64_t fault_wp;	 /* write to a read-only copy */
	uint64_t fault_spurious; /* already served when read */
	uint64_t requests;	 /* REQ sent to a home (local or remote) */
	uint64_t pages_sent, pages_recv; /* messages carrying 4 KiB */
	uint64_t zero_grants;		 /* pages granted as "all zero" */
	uint64_t inval_sent;		 /* home: FETCH_INV issued */
	uint64_t inval_recv;		 /* copies dropped here */
	uint64_t downgrades;		 /* EXCLUSIVE -> SHARED here */
	uint64_t msgs_sent, msgs_recv, bytes_sent, bytes_recv;
	uint64_t proto_errors; /* refused messages */
	uint64_t lat_count, lat_sum_ns;
	uint64_t lat_hist[DSM_LAT_BUCKETS];
};

struct dsm;

/* Map the memory, open and register userfaultfd; nothing runs yet. */
int dsm_create(struct dsm **out, const struct dsm_config *cfg, struct err *e);

/* The registered mapping (guest RAM), dsm_size() bytes. */
void *dsm_base(struct dsm *d);
uint64_t dsm_size(const struct dsm *d);

/* The transport to talk through (before it delivers MSG_DSM). */
void dsm_attach(struct dsm *d, struct transport *t);

/* Start the fault thread. */
int dsm_start(struct dsm *d, struct err *e);

/*
 * For the transport's on_msg: handles MSG_DSM (returns true) and ignores
 * other types (returns false). Bad messages are refused and counted.
 */
bool dsm_handle_msg(struct dsm *d, int from, uint16_t type, const void *payload,
		    uint32_t len);

void dsm_get_stats(struct dsm *d, struct dsm_stats *out);

/*
 * DSM events this node has had for pages [@first, @first + @n) of guest
 * RAM (by page index): faults taken here, invalidations and downgrades
 * received, and requests from other nodes served as their home.
 */
uint64_t dsm_page_events(struct dsm *d, uint64_t first, uint64_t n);

/* The stats as a JSON object (for `dvmm ctl stats`); NULL on ENOMEM. */
json_t *dsm_stats_json(struct dsm *d);

/*
 * Stop the fault thread, unmap and close. Threads must have stopped
 * touching the memory and peers must no longer need this node's pages.
 */
void dsm_destroy(struct dsm *d);

#endif
