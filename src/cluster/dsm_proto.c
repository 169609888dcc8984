/*
 * cluster/dsm_proto.c - the DSM coherence protocol's state transitions
 * (see dsm_proto.h and docs/dsm.md). Pure: every function reads a state
 * and a message and writes the new state and the actions to perform.
 */
#include "cluster/dsm_proto.h"

#include <errno.h>
#include <string.h>

#define BIT(n) ((uint16_t)(1u << (n)))

static int push(struct dsm_out *out, int kind, int data, int flags, int from,
		int to, uint64_t page)
{
	struct dsm_pmsg *m;

	if (out->n >= DSM_OUT_MAX)
		return -ENOSPC;
	m = &out->msg[out->n++];
	m->kind = (uint8_t)kind;
	m->data = (uint8_t)data;
	m->flags = (uint8_t)flags;
	m->from = (int8_t)from;
	m->to = (int8_t)to;
	m->page = page;
	return 0;
}

void dsm_dir_init(struct dsm_dir *d)
{
	memset(d, 0, sizeof(*d));
	d->owner = -1;
	d->req_node = -1;
	d->dsrc = -1;
}

const char *dsm_kind_name(int kind)
{
	static const char *const names[] = {
		"?",	      "REQ_READ",  "REQ_WRITE",
		"FETCH_DOWN", "FETCH_INV", "FETCH_COPY",
		"ACK",	      "GRANT_S",   "GRANT_E",
	};

	return kind > 0 && kind <= DSM_KIND_MAX ? names[kind] : "?";
}

int dsm_pmsg_check(const struct dsm_pmsg *m, int nnodes, uint64_t npages)
{
	if (m->kind < DSM_REQ_READ || m->kind > DSM_KIND_MAX)
		return -EPROTO;
	if (m->data > DSM_D_PAGE || (m->flags & ~DSM_F_DATA))
		return -EPROTO;
	if (m->from < 0 || m->from >= nnodes || m->to < 0 || m->to >= nnodes)
		return -EPROTO;
	if (m->page >= npages)
		return -ERANGE;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Cache side                                                          */
/* ------------------------------------------------------------------ */

int dsm_cache_fault(struct dsm_cache *c, int self, const struct dsm_layout *l,
		    uint64_t page, enum dsm_fault kind, struct dsm_out *out)
{
	int req = kind == DSM_FAULT_WRITE ? DSM_REQ_WRITE : DSM_REQ_READ;

	if (kind != DSM_FAULT_READ && kind != DSM_FAULT_WRITE)
		return -EINVAL;
	if (c->state == DSM_EXCLUSIVE) {
		out->ops |= DSM_OP_UNWP; /* stale or spurious: let it go */
		return 0;
	}
	if (c->state == DSM_SHARED && kind == DSM_FAULT_READ) {
		out->ops |= DSM_OP_WAKE;
		return 0;
	}
	if (c->pending) /* the grant wakes it; it faults again if need be */
		return 0;
	c->pending = (uint8_t)req;
	return push(out, req, DSM_D_NONE, 0, self, dsm_home_of(page, l), page);
}

/* A FETCH_*: give up rights, answer the home. */
static int cache_fetch(struct dsm_cache *c, int self, const struct dsm_pmsg *m,
		       struct dsm_out *out)
{
	int data = DSM_D_PAGE;

	switch (m->kind) {
	case DSM_FETCH_DOWN:
		if (c->state != DSM_EXCLUSIVE)
			return -EPROTO;
		out->ops |= DSM_OP_WP | DSM_OP_READ;
		c->state = DSM_SHARED;
		break;
	case DSM_FETCH_INV:
		if (c->state == DSM_INVALID)
			return -EPROTO;
		if (c->state == DSM_EXCLUSIVE)
			out->ops |= DSM_OP_WP; /* stop writers before reading */
		if (m->flags & DSM_F_DATA)
			out->ops |= DSM_OP_READ;
		else
			data = DSM_D_NONE;
		out->ops |= DSM_OP_DROP;
		c->state = DSM_INVALID;
		break;
	default: /* DSM_FETCH_COPY */
		if (c->state != DSM_SHARED)
			return -EPROTO;
		out->ops |= DSM_OP_READ;
		break;
	}
	return push(out, DSM_ACK, data, 0, self, m->from, m->page);
}

static int cache_grant(struct dsm_cache *c, const struct dsm_pmsg *m,
		       struct dsm_out *out)
{
	if (m->kind == DSM_GRANT_S) {
		if (c->pending != DSM_REQ_READ || c->state != DSM_INVALID ||
		    m->data == DSM_D_NONE)
			return -EPROTO;
		out->ops |= DSM_OP_INSTALL;
		out->install_wp = true;
		c->state = DSM_SHARED;
	} else if (m->data == DSM_D_NONE) {
		if (c->pending != DSM_REQ_WRITE || c->state != DSM_SHARED)
			return -EPROTO;
		out->ops |= DSM_OP_UNWP;
		c->state = DSM_EXCLUSIVE;
	} else {
		if (c->pending != DSM_REQ_WRITE || c->state != DSM_INVALID)
			return -EPROTO;
		out->ops |= DSM_OP_INSTALL;
		out->install_wp = false;
		c->state = DSM_EXCLUSIVE;
	}
	c->pending = 0;
	return 0;
}

int dsm_cache_msg(struct dsm_cache *c, int self, const struct dsm_layout *l,
		  const struct dsm_pmsg *m, struct dsm_out *out)
{
	if (m->from != dsm_home_of(m->page, l) || m->to != self)
		return -EPROTO;
	switch (m->kind) {
	case DSM_FETCH_DOWN:
	case DSM_FETCH_INV:
	case DSM_FETCH_COPY:
		return cache_fetch(c, self, m, out);
	case DSM_GRANT_S:
	case DSM_GRANT_E:
		return cache_grant(c, m, out);
	default:
		return -EPROTO;
	}
}

/* ------------------------------------------------------------------ */
/* Home side                                                           */
/* ------------------------------------------------------------------ */

static int lowest(uint16_t set)
{
	return __builtin_ctz(set);
}

/* All answers are in: grant, update the directory, go idle. */
static int home_finish(struct dsm_dir *d, int self, uint64_t page,
		       struct dsm_out *out)
{
	int n = d->req_node, data = d->data;

	if (d->req_kind == DSM_REQ_READ) {
		if (d->owner >= 0)
			d->copyset = BIT(d->owner);
		d->owner = -1;
		d->copyset |= BIT(n);
	} else {
		if (d->copyset & BIT(n))
			data = DSM_D_NONE; /* it kept a valid copy */
		d->owner = (int8_t)n;
		d->copyset = 0;
	}
	d->busy = 0;
	d->req_node = -1;
	d->dsrc = -1;
	return push(out,
		    d->req_kind == DSM_REQ_READ ? DSM_GRANT_S : DSM_GRANT_E,
		    data, 0, self, n, page);
}

static int home_fetch(struct dsm_dir *d, int self, int kind, int node,
		      bool want, uint64_t page, struct dsm_out *out)
{
	d->acks |= BIT(node);
	if (want)
		d->dsrc = (int8_t)node;
	return push(out, kind, DSM_D_NONE, want ? DSM_F_DATA : 0, self, node,
		    page);
}

static int home_start_read(struct dsm_dir *d, int self, uint64_t page,
			   struct dsm_out *out)
{
	int src;

	if (d->owner >= 0)
		return home_fetch(d, self, DSM_FETCH_DOWN, d->owner, true, page,
				  out);
	if (d->copyset) {
		src = d->copyset & BIT(self) ? self : lowest(d->copyset);
		return home_fetch(d, self, DSM_FETCH_COPY, src, true, page,
				  out);
	}
	d->data = DSM_D_ZERO; /* never written: nothing to fetch */
	return home_finish(d, self, page, out);
}

static int home_start_write(struct dsm_dir *d, int self, uint64_t page,
			    struct dsm_out *out)
{
	int n = d->req_node, rc = 0, s;
	uint16_t others = d->copyset & (uint16_t)~BIT(n);
	bool want = !(d->copyset & BIT(n));

	if (d->owner >= 0)
		return home_fetch(d, self, DSM_FETCH_INV, d->owner, true, page,
				  out);
	if (!d->copyset)
		d->data = DSM_D_ZERO;
	while (others && !rc) {
		s = lowest(others);
		others &= (uint16_t)~BIT(s);
		rc = home_fetch(d, self, DSM_FETCH_INV, s, want, page, out);
		want = false;
	}
	if (rc || d->acks)
		return rc;
	return home_finish(d, self, page, out);
}

/* Begin the transaction of @node; -EPROTO if it cannot be legal. */
static int home_start(struct dsm_dir *d, int self, int node, int kind,
		      uint64_t page, struct dsm_out *out)
{
	if (d->owner == node ||
	    (kind == DSM_REQ_READ && (d->copyset & BIT(node))))
		return -EPROTO; /* it already holds what it asks for */
	d->busy = 1;
	d->req_node = (int8_t)node;
	d->req_kind = (uint8_t)kind;
	d->data = DSM_D_NONE;
	d->acks = 0;
	d->dsrc = -1;
	if (kind == DSM_REQ_READ)
		return home_start_read(d, self, page, out);
	return home_start_write(d, self, page, out);
}

/* Start queued requests until one has to wait for answers. */
static int home_next(struct dsm_dir *d, int self, uint64_t page,
		     struct dsm_out *out)
{
	int rc = 0, node, kind;

	while (!d->busy && d->qlen && !rc) {
		node = d->q[0] & 31;
		kind = d->q[0] >> 5;
		d->qlen--;
		memmove(d->q, d->q + 1, d->qlen);
		d->queued &= (uint16_t)~BIT(node);
		rc = home_start(d, self, node, kind, page, out);
		if (rc == -EPROTO) /* drop the illegal one, go on */
			rc = 0;
	}
	return rc;
}

static int home_req(struct dsm_dir *d, int self, const struct dsm_pmsg *m,
		    struct dsm_out *out)
{
	int n = m->from;

	if ((d->busy && d->req_node == n) || (d->queued & BIT(n)))
		return -EPROTO; /* one request per node and page */
	if (d->busy) {
		d->q[d->qlen++] = (uint8_t)(n | m->kind << 5);
		d->queued |= BIT(n);
		return 0;
	}
	return home_start(d, self, n, m->kind, m->page, out);
}

static int home_ack(struct dsm_dir *d, int self, const struct dsm_pmsg *m,
		    struct dsm_out *out)
{
	int n = m->from, rc;

	if (!d->busy || !(d->acks & BIT(n)))
		return -EPROTO;
	if ((n == d->dsrc) != (m->data == DSM_D_PAGE))
		return -EPROTO;
	if (m->data == DSM_D_PAGE) {
		out->ops |= DSM_OP_SAVE;
		d->data = DSM_D_PAGE;
	}
	d->acks &= (uint16_t)~BIT(n);
	if (d->acks)
		return 0;
	rc = home_finish(d, self, m->page, out);
	return rc ? rc : home_next(d, self, m->page, out);
}

int dsm_home_msg(struct dsm_dir *d, int self, const struct dsm_layout *l,
		 const struct dsm_pmsg *m, struct dsm_out *out)
{
	int rc;

	if (dsm_home_of(m->page, l) != self || m->to != self)
		return -EPROTO;
	if (m->kind == DSM_ACK)
		return home_ack(d, self, m, out);
	if (m->kind != DSM_REQ_READ && m->kind != DSM_REQ_WRITE)
		return -EPROTO;
	rc = home_req(d, self, m, out);
	if (rc)
		return rc;
	return home_next(d, self, m->page, out);
}
