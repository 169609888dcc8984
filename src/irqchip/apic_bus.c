/*
 * irqchip/apic_bus.c - the APIC bus rules: decoding an MSI write into an
 * interrupt message and deciding whether a LAPIC accepts a message
 * (shorthands, physical, xAPIC flat/cluster and x2APIC cluster logical
 * destinations, broadcasts). Pure functions, no state.
 */
#include "irqchip/apic_bus.h"

#define MSI_ADDR_DEST_SHIFT 12
#define MSI_ADDR_EXT_DEST_SHIFT 5
#define MSI_ADDR_LOGICAL (1u << 2)
#define MSI_DATA_LEVEL_ASSERT (1u << 14)
#define MSI_DATA_TRIGGER_LEVEL (1u << 15)

#define XAPIC_BROADCAST 0xffu
#define X2APIC_BROADCAST 0xffffffffu

bool apic_msg_from_msi(uint64_t addr, uint32_t data, struct apic_msg *m)
{
	if ((addr >> 20) != (APIC_MSI_BASE >> 20))
		return false;

	/*
	 * Bit 3 (redirection hint) only says lowest priority may be used;
	 * the destination mode bit is honoured either way.
	 */
	m->dest = (addr >> MSI_ADDR_DEST_SHIFT) & 0xff;
	m->dest |= ((addr >> MSI_ADDR_EXT_DEST_SHIFT) & 0x7f) << 8;
	m->logical = addr & MSI_ADDR_LOGICAL;
	m->vector = data & 0xff;
	m->delivery = (data >> 8) & 7;
	m->shorthand = APIC_SH_NONE;
	m->level = data & MSI_DATA_TRIGGER_LEVEL;
	m->assert = m->level ? !!(data & MSI_DATA_LEVEL_ASSERT) : true;
	m->x2apic_dest = false;
	m->src_vcpu = -1;
	return true;
}

static bool dest_is_broadcast(const struct apic_msg *m)
{
	if (m->x2apic_dest)
		return m->dest == X2APIC_BROADCAST;
	return m->dest == XAPIC_BROADCAST;
}

static bool match_physical(const struct apic_msg *m,
			   const struct apic_target *t)
{
	return dest_is_broadcast(m) || m->dest == t->apic_id;
}

/* x2APIC logical: cluster in bits 31:16, one bit per member in 15:0. */
static bool match_x2apic_logical(uint32_t dest, uint32_t ldr)
{
	return (dest >> 16) == (ldr >> 16) && (dest & ldr & 0xffff) != 0;
}

/* xAPIC logical: 8-bit destination against LDR bits 31:24 and DFR. */
static bool match_xapic_logical(uint8_t dest, const struct apic_target *t)
{
	uint8_t logical_id = t->ldr >> 24;

	if (t->dfr_model == 0xf)
		return (dest & logical_id) != 0;
	return (dest >> 4) == (logical_id >> 4) &&
	       (dest & logical_id & 0xf) != 0;
}

static bool match_logical(const struct apic_msg *m, const struct apic_target *t)
{
	if (dest_is_broadcast(m))
		return true;
	if (t->x2apic)
		return match_x2apic_logical(m->dest, t->ldr);
	return match_xapic_logical(m->dest & 0xff, t);
}

bool apic_match(const struct apic_msg *m, const struct apic_target *t)
{
	if (!t->hw_enabled)
		return false;

	switch (m->shorthand) {
	case APIC_SH_SELF:
		return t->vcpu == m->src_vcpu;
	case APIC_SH_ALL:
		return true;
	case APIC_SH_ALL_BUT_SELF:
		return t->vcpu != m->src_vcpu;
	default:
		break;
	}

	if (m->logical)
		return match_logical(m, t);
	return match_physical(m, t);
}
