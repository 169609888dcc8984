/*
 * machine/acpi_pm.c - the fixed ACPI power-management hardware the FADT
 * points at: the PM1a event block (PM1_STS, PM1_EN), the PM1a control
 * block (SCI_EN, SLP_TYP/SLP_EN: S5 powers off) and the 0xCF9 reset
 * control register (RST_CPU resets). Port 0xCF9 lies inside the PCI bus's
 * 0xCF8-0xCFF range, so the bus owns the port and forwards byte accesses
 * to acpi_pm_reset_control_io(). No SCI is raised: nothing here produces
 * events yet.
 */
#include <errno.h>
#include <string.h>

#include "machine/devices.h"
#include "machine/layout.h"

#define PM1_EVT_LEN 4 /* PM1_STS (2 bytes), then PM1_EN (2 bytes) */
#define PM1_CNT_LEN 2

#define PM1_STS_WAK 0x8000

#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_BM_RLD 0x0002
#define PM1_CNT_SLP_TYP_SHIFT 10
#define PM1_CNT_SLP_TYP_MASK 0x1c00
#define PM1_CNT_SLP_EN 0x2000
/* Bits that keep what is written; SCI_EN is fixed, the rest write-only. */
#define PM1_CNT_KEEP (PM1_CNT_BM_RLD | PM1_CNT_SLP_TYP_MASK)

/* SLP_TYP of S5 (soft off): the value in the DSDT's \_S5_ (acpi.c). */

#define CF9_SYS_RST 0x02 /* with RST_CPU: hard rather than soft reset */
#define CF9_RST_CPU 0x04 /* 0 -> 1 starts the reset */
#define CF9_FULL_RST 0x08
#define CF9_KEEP (CF9_SYS_RST | CF9_FULL_RST)

static uint8_t byte_of(uint32_t v, uint64_t i)
{
	return (uint8_t)(v >> (8 * i));
}

static uint16_t with_byte(uint16_t v, uint64_t i, uint8_t b)
{
	unsigned int shift = 8 * (unsigned int)i;

	return (uint16_t)((v & ~(0xffu << shift)) | ((unsigned int)b << shift));
}

/* --- PM1a event block --- */

static uint32_t pm1_evt_value(const struct acpi_pm *p)
{
	return p->pm1_sts | (uint32_t)p->pm1_en << 16;
}

static void pm1_evt_write_byte(struct acpi_pm *p, uint64_t i, uint8_t b)
{
	switch (i) {
	case 0:
	case 1:
		/* PM1_STS bits are cleared by writing 1 to them. */
		p->pm1_sts &= (uint16_t) ~((unsigned int)b << (8 * i));
		break;
	case 2:
	case 3:
		p->pm1_en = with_byte(p->pm1_en, i - 2, b);
		break;
	default:
		break;
	}
}

static void pm1_evt_io(void *opaque, uint64_t offset, uint8_t *data,
		       uint32_t len, bool is_write, int vcpu_id)
{
	struct acpi_pm *p = opaque;

	(void)vcpu_id;
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < len; i++) {
		uint64_t at = offset + i;

		if (at >= PM1_EVT_LEN) {
			if (!is_write)
				data[i] = 0xff;
		} else if (is_write) {
			pm1_evt_write_byte(p, at, data[i]);
		} else {
			data[i] = byte_of(pm1_evt_value(p), at);
		}
	}
	pthread_mutex_unlock(&p->lock);
}

/* --- PM1a control block --- */

static uint16_t pm1_cnt_value(const struct acpi_pm *p)
{
	/* Always in ACPI mode: SCI_EN reads 1 (the FADT has no SMI_CMD). */
	return p->pm1_cnt | PM1_CNT_SCI_EN;
}

/* Apply a (whole or partial) write; returns the stop it asks for. */
static enum vm_stop_reason pm1_cnt_write(struct acpi_pm *p, uint16_t v)
{
	unsigned int slp_typ;

	p->pm1_cnt = v & PM1_CNT_KEEP;
	if (!(v & PM1_CNT_SLP_EN))
		return VM_STOP_NONE;
	slp_typ = (v & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT;
	if (slp_typ == ACPI_S5_SLP_TYP)
		return VM_STOP_POWEROFF;
	/* Other sleep states are not offered: wake up at once. */
	p->pm1_sts |= PM1_STS_WAK;
	return VM_STOP_NONE;
}

static void pm1_cnt_io(void *opaque, uint64_t offset, uint8_t *data,
		       uint32_t len, bool is_write, int vcpu_id)
{
	struct acpi_pm *p = opaque;
	enum vm_stop_reason stop = VM_STOP_NONE;
	uint16_t v;

	(void)vcpu_id;
	pthread_mutex_lock(&p->lock);
	v = pm1_cnt_value(p);
	for (uint32_t i = 0; i < len; i++) {
		uint64_t at = offset + i;

		if (at >= PM1_CNT_LEN) {
			if (!is_write)
				data[i] = 0xff;
		} else if (is_write) {
			v = with_byte(v, at, data[i]);
		} else {
			data[i] = byte_of(v, at);
		}
	}
	if (is_write)
		stop = pm1_cnt_write(p, v);
	pthread_mutex_unlock(&p->lock);
	if (stop != VM_STOP_NONE)
		vm_request_stop(p->lc, stop, 0);
}

/* --- 0xCF9 reset control --- */

/*
 * RST_CPU going 0 -> 1 resets. The bit is not kept: once the reset is
 * taken the register reads it as 0 again, so every write that sets it is
 * such a transition (also across resets, as this struct outlives them).
 */
static bool reset_control_write(struct acpi_pm *p, uint8_t v)
{
	p->cf9 = v & CF9_KEEP;
	return v & CF9_RST_CPU;
}

void acpi_pm_reset_control_io(void *opaque, uint64_t offset, uint8_t *data,
			      uint32_t len, bool is_write, int vcpu_id)
{
	struct acpi_pm *p = opaque;
	bool reset = false;

	(void)vcpu_id;
	if (offset != 0 || len != 1) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	pthread_mutex_lock(&p->lock);
	if (is_write)
		reset = reset_control_write(p, data[0]);
	else
		data[0] = p->cf9;
	pthread_mutex_unlock(&p->lock);
	if (reset)
		vm_request_stop(p->lc, VM_STOP_RESET, 0);
}

/* --- setup --- */

struct pm_range {
	uint16_t port;
	uint16_t len;
	io_handler_fn fn;
	const char *name;
};

static const struct pm_range pm_ranges[] = {
	{PORT_ACPI_PM1A_EVT, PM1_EVT_LEN, pm1_evt_io, "acpi-pm1a-evt"},
	{PORT_ACPI_PM1A_CNT, PM1_CNT_LEN, pm1_cnt_io, "acpi-pm1a-cnt"},
};

#define PM_NR_RANGES (sizeof(pm_ranges) / sizeof(pm_ranges[0]))

int acpi_pm_init(struct acpi_pm *p, struct io_registry *io,
		 const struct vm_lifecycle *lc)
{
	size_t i;
	int rc = 0;

	memset(p, 0, sizeof(*p));
	p->lc = lc;
	if (pthread_mutex_init(&p->lock, NULL))
		return -ENOMEM;
	for (i = 0; i < PM_NR_RANGES; i++) {
		const struct pm_range *r = &pm_ranges[i];

		rc = ioreg_register(io, IO_SPACE_PIO, r->port, r->len, r->fn, p,
				    r->name);
		if (rc)
			break;
	}
	if (!rc)
		return 0;
	while (i--)
		ioreg_unregister(io, IO_SPACE_PIO, pm_ranges[i].port);
	pthread_mutex_destroy(&p->lock);
	return rc;
}

/* Call once the vCPUs are stopped: the io registry still points here. */
void acpi_pm_destroy(struct acpi_pm *p)
{
	pthread_mutex_destroy(&p->lock);
}
