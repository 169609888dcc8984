/*
 * machine/node_info.c - the node-info ports (see devices.h): the guest asks
 * which cluster node runs the asking vCPU, and how many distributed-memory
 * events this node has had for a range of its pages (the `spread` and
 * `private` tests). One instance per node; per-vCPU selection registers.
 */
#include <string.h>

#include "machine/devices.h"

#define REG_NODE 0x0
#define REG_PFN 0x4
#define REG_COUNT 0x8
#define REG_EVENTS 0xc
#define MAX_SEL (sizeof(((struct node_info *)0)->sel_pfn) / sizeof(uint32_t))

static uint32_t get_u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void put_u32le(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t read_reg(struct node_info *n, uint64_t reg, int cpu)
{
	switch (reg) {
	case REG_NODE:
		return (uint32_t)n->node;
	case REG_EVENTS:
		if (!n->events)
			return 0;
		return (uint32_t)n->events(n->opaque, n->sel_pfn[cpu],
					   n->sel_count[cpu]);
	default:
		return 0xffffffff;
	}
}

static void node_info_io(void *opaque, uint64_t offset, uint8_t *data,
			 uint32_t len, bool is_write, int vcpu_id)
{
	struct node_info *n = opaque;
	bool ok = len == 4 && !(offset & 3) && vcpu_id >= 0 &&
		  (size_t)vcpu_id < MAX_SEL;

	if (!is_write) {
		if (ok)
			put_u32le(data, read_reg(n, offset, vcpu_id));
		else
			memset(data, 0xff, len);
		return;
	}
	if (!ok)
		return;
	if (offset == REG_PFN)
		n->sel_pfn[vcpu_id] = get_u32le(data);
	else if (offset == REG_COUNT)
		n->sel_count[vcpu_id] = get_u32le(data);
}

int node_info_init(struct node_info *n, struct io_registry *io, int node,
		   int ncpus, node_info_events_fn events, void *opaque)
{
	memset(n, 0, sizeof(*n));
	n->node = node;
	n->ncpus = ncpus;
	n->events = events;
	n->opaque = opaque;
	return ioreg_register(io, IO_SPACE_PIO, NODE_INFO_PORT, NODE_INFO_PORTS,
			      node_info_io, n, "node-info");
}

void node_info_destroy(struct node_info *n, struct io_registry *io)
{
	(void)n;
	ioreg_unregister(io, IO_SPACE_PIO, NODE_INFO_PORT);
}
