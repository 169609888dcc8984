/*
 * cluster/dsm_proto.h - the DSM coherence protocol as pure functions: no
 * I/O, no locks, no memory. A home-based directory (pages are dealt to
 * the nodes in stripes of `chunk` pages: interleaved when chunk = 1, one
 * range per node when chunk = npages / nnodes) with per-page states
 * INVALID / SHARED / EXCLUSIVE on every node. The home serialises the
 * transactions of one page (busy + a FIFO of waiting requesters); page
 * data always travels through the home. Both the runtime (dsm.c) and the
 * randomized model checker (test_dsm_model.c) drive exactly these
 * functions. See docs/dsm.md for the message diagram and the
 * correctness argument.
 */
#ifndef DVMM_CLUSTER_DSM_PROTO_H
#define DVMM_CLUSTER_DSM_PROTO_H

#include <stdbool.h>
#include <stdint.h>

#define DSM_MAX_NODES 16
#define DSM_PAGE_SIZE 4096u

/* A page's state on one node (the cache side). */
enum dsm_state {
	DSM_INVALID = 0,   /* absent: any access raises a missing fault */
	DSM_SHARED = 1,	   /* installed write-protected */
	DSM_EXCLUSIVE = 2, /* installed writable; the only copy */
};

/* Protocol message kinds. */
enum dsm_kind {
	DSM_REQ_READ = 1,   /* cache -> home: want a readable copy */
	DSM_REQ_WRITE = 2,  /* cache -> home: want the only writable copy */
	DSM_FETCH_DOWN = 3, /* home -> owner: downgrade to SHARED, send data */
	DSM_FETCH_INV = 4,  /* home -> holder: drop (data if DSM_F_DATA) */
	DSM_FETCH_COPY = 5, /* home -> sharer: send your copy, keep it */
	DSM_ACK = 6,	    /* holder -> home: answer to a FETCH_* */
	DSM_GRANT_S = 7,    /* home -> requester: install read-only */
	DSM_GRANT_E = 8,    /* home -> requester: install writable */
	DSM_KIND_MAX = 8,
};

/* What comes with a message. */
enum dsm_data {
	DSM_D_NONE = 0, /* no contents (keep the copy you hold) */
	DSM_D_ZERO = 1, /* the page is all zero */
	DSM_D_PAGE = 2, /* DSM_PAGE_SIZE bytes follow */
};

#define DSM_F_DATA 1u /* on FETCH_INV: the home wants the contents */

struct dsm_pmsg {
	uint8_t kind;  /* enum dsm_kind */
	uint8_t data;  /* enum dsm_data */
	uint8_t flags; /* DSM_F_* */
	int8_t from;
	int8_t to;
	uint64_t page;
};

/* One page of the directory at its home. */
struct dsm_dir {
	int8_t owner;	  /* EXCLUSIVE holder, or -1 */
	uint8_t busy;	  /* a transaction is in progress */
	uint8_t req_kind; /* its request (DSM_REQ_*) */
	int8_t req_node;  /* its requester */
	uint8_t data;	  /* dsm_data gathered for the grant */
	uint8_t qlen;
	uint16_t copyset; /* SHARED holders (bit per node) */
	uint16_t acks;	  /* FETCH answers still awaited (bit per node) */
	uint16_t queued;  /* nodes in q[] (bit per node) */
	uint8_t q[DSM_MAX_NODES]; /* waiting requests: node | kind << 5 */
	int8_t dsrc;		  /* node asked for the contents, or -1 */
};

/* One page on one node. */
struct dsm_cache {
	uint8_t state;	 /* enum dsm_state */
	uint8_t pending; /* DSM_REQ_* outstanding, or 0 */
};

/* What the runtime must do to the page, in this order. */
enum dsm_op {
	DSM_OP_WP = 1u << 0,	  /* UFFDIO_WRITEPROTECT on */
	DSM_OP_READ = 1u << 1,	  /* copy the page out (into the ACK) */
	DSM_OP_DROP = 1u << 2,	  /* punch the page out */
	DSM_OP_INSTALL = 1u << 3, /* UFFDIO_COPY the grant's data */
	DSM_OP_UNWP = 1u << 4,	  /* UFFDIO_WRITEPROTECT off (wakes) */
	DSM_OP_WAKE = 1u << 5,	  /* UFFDIO_WAKE (fault already served) */
	DSM_OP_SAVE = 1u << 6,	  /* home: keep the ACK's data for the grant */
};

#define DSM_OUT_MAX (2 * DSM_MAX_NODES + 4)

/* The result of one step: page operations and messages to send. */
struct dsm_out {
	unsigned int ops; /* enum dsm_op bits */
	bool install_wp;  /* with DSM_OP_INSTALL: map write-protected */
	int n;
	struct dsm_pmsg msg[DSM_OUT_MAX];
};

/* Fault kinds as the runtime sees them. */
enum dsm_fault {
	DSM_FAULT_READ = 1,  /* missing, read access */
	DSM_FAULT_WRITE = 2, /* missing with write access, or write-protect */
};

/* Where pages live: home of page p = (p / chunk) % nnodes. */
struct dsm_layout {
	int nnodes;
	uint64_t chunk; /* pages per stripe, >= 1 */
};

static inline int dsm_home_of(uint64_t page, const struct dsm_layout *l)
{
	return (int)(page / l->chunk % (uint64_t)l->nnodes);
}

/* Index of @page among the pages its home keeps directory entries for. */
static inline uint64_t dsm_home_index(uint64_t page, const struct dsm_layout *l)
{
	return page / (l->chunk * (uint64_t)l->nnodes) * l->chunk +
	       page % l->chunk;
}

void dsm_dir_init(struct dsm_dir *d);

/*
 * A fault on @page at node @self. Fills @out (a REQ to the home, or a
 * WAKE when the page already allows the access, or nothing when a request
 * is already outstanding). Returns 0 or -EINVAL.
 */
int dsm_cache_fault(struct dsm_cache *c, int self, const struct dsm_layout *l,
		    uint64_t page, enum dsm_fault kind, struct dsm_out *out);

/*
 * A message for the cache side of node @self (FETCH_* or GRANT_*).
 * Illegal messages for the current state return -EPROTO and change nothing.
 */
int dsm_cache_msg(struct dsm_cache *c, int self, const struct dsm_layout *l,
		  const struct dsm_pmsg *m, struct dsm_out *out);

/*
 * A message for the home (REQ_* or ACK) of a page homed at @self.
 * Illegal messages return -EPROTO and change nothing.
 */
int dsm_home_msg(struct dsm_dir *d, int self, const struct dsm_layout *l,
		 const struct dsm_pmsg *m, struct dsm_out *out);

/* Basic checks of a received message: kind, data, nodes, page < npages. */
int dsm_pmsg_check(const struct dsm_pmsg *m, int nnodes, uint64_t npages);

const char *dsm_kind_name(int kind);

#endif
