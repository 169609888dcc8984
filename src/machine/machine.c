/*
 * machine/machine.c - assembling the PC: create the VM, plug in the legacy
 * devices, write the ACPI tables into the BIOS area, load the kernel (a PVH
 * ELF or a Linux bzImage) and initrd, write hvm_start_info or boot_params
 * and point the boot vCPU at the entry.
 */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "machine/acpi.h"
#include "machine/bzimage.h"
#include "machine/layout.h"
#include "machine/machine.h"
#include "machine/pvh.h"
#include "util/log.h"
#include "virtio/devices.h"

enum machine_device_bit {
	DEV_UART = 1u << 0,
	DEV_RTC = 1u << 1,
	DEV_KBD = 1u << 2,
	DEV_DBG = 1u << 3,
	DEV_PM = 1u << 4,
	DEV_PCI = 1u << 5,
	DEV_INFO = 1u << 6,
};

/* NVRAM bytes that belong to the guest (not computed by the RTC itself). */
#define NVRAM_GUEST_FIRST 0x38
#define NVRAM_GUEST_END 0x5b

static uint64_t ram_above_4g(const struct guest_mem *m)
{
	return m->ram_size - guest_mem_low_end(m);
}

static bool is_node0(const struct machine_config *cfg)
{
	return !cfg->cluster || cfg->cluster->self == 0;
}

/* The bus, the node-info ports, and what a cluster needs of them. */
static int add_bus(struct machine *pc, const struct machine_config *cfg,
		   struct err *e)
{
	const struct machine_cluster *cl = cfg->cluster;
	struct vm *vm = &pc->vm;
	int rc;

	if (is_node0(cfg))
		rc = pci_bus_init(&pc->pci, &vm->io, acpi_pm_reset_control_io,
				  &pc->pm);
	else
		rc = pci_bus_init(&pc->pci, &vm->io, cl->cf9, cl->cf9_opaque);
	if (rc)
		return err_set(e, rc, "cannot create the PCI bus");
	pc->devices_up |= DEV_PCI;
	if (cl) {
		pci_bus_set_cluster(&pc->pci, cl->remote_cfg,
				    cl->remote_cfg_opaque);
		ioreg_set_default(&vm->io, cl->forward, cl->forward_opaque);
	}
	rc = node_info_init(&pc->info, &vm->io, cl ? cl->self : 0, cfg->ncpus,
			    cl ? cl->events : NULL,
			    cl ? cl->events_opaque : NULL);
	if (rc)
		return err_set(e, rc, "cannot create the node-info ports");
	pc->devices_up |= DEV_INFO;
	return 0;
}

static int add_devices(struct machine *pc, const struct machine_config *cfg,
		       const struct machine_persist *keep, struct err *e)
{
	struct vm *vm = &pc->vm;
	int rc;

	if (!is_node0(cfg))
		return add_bus(pc, cfg, e);

	rc = uart8250_init(&pc->uart, &vm->io, &vm->irq, PORT_COM1,
			   PORT_COM1_IRQ, cfg->console_out_fd);
	if (rc)
		return err_set(e, rc, "cannot create the serial port");
	pc->devices_up |= DEV_UART;
	rc = cmos_rtc_init(&pc->rtc, &vm->io, guest_mem_low_end(&vm->mem),
			   ram_above_4g(&vm->mem), (unsigned int)cfg->ncpus);
	if (rc)
		return err_set(e, rc, "cannot create the CMOS RTC");
	pc->devices_up |= DEV_RTC;
	if (keep && keep->valid) {
		memcpy(&pc->rtc.nvram[NVRAM_GUEST_FIRST],
		       &keep->nvram[NVRAM_GUEST_FIRST],
		       NVRAM_GUEST_END - NVRAM_GUEST_FIRST);
		pc->rtc.offset_sec = keep->rtc_offset_sec;
	}
	rc = i8042_init(&pc->kbd, &vm->io, &vm->lc);
	if (rc)
		return err_set(e, rc, "cannot create the i8042");
	pc->devices_up |= DEV_KBD;
	rc = debug_exit_init(&pc->dbg, &vm->io, &vm->lc, PORT_DEBUG_EXIT);
	if (rc)
		return err_set(e, rc, "cannot create the debug-exit port");
	pc->devices_up |= DEV_DBG;
	rc = acpi_pm_init(&pc->pm, &vm->io, &vm->lc);
	if (rc)
		return err_set(e, rc, "cannot create the ACPI PM block");
	pc->devices_up |= DEV_PM;
	rc = add_bus(pc, cfg, e);
	if (rc)
		return rc;
	if (cfg->console_in_fd >= 0) {
		rc = uart8250_start_input(&pc->uart, cfg->console_in_fd);
		if (rc)
			return err_set(e, rc, "cannot start console input");
	}
	return 0;
}

static int write_acpi(struct machine *pc, int ncpus, struct err *e)
{
	struct acpi_config cfg = {
		.ncpus = (unsigned int)ncpus,
		.base = LAYOUT_ACPI_BASE,
		.ioapic_addr = (uint32_t)LAYOUT_IOAPIC_ADDR,
		.ioapic_id = (uint8_t)ncpus,
		.lapic_addr = (uint32_t)LAYOUT_LAPIC_ADDR,
		.pm1a_evt_port = PORT_ACPI_PM1A_EVT,
		.pm1a_cnt_port = PORT_ACPI_PM1A_CNT,
		.reset_port = PORT_RESET_CONTROL,
		.reset_value = 0x06,
		.sci_irq = ACPI_SCI_IRQ,
		.ecam_base = PCI_ECAM_BASE,
		.ecam_bus_end = 0,
	};
	struct acpi_layout layout;
	uint8_t *buf = calloc(1, LAYOUT_ACPI_MAX);
	ssize_t n;
	int rc;

	if (!buf)
		return err_set(e, -ENOMEM, "out of memory for ACPI tables");
	n = acpi_build(&cfg, buf, LAYOUT_ACPI_MAX, &layout);
	if (n < 0) {
		free(buf);
		return err_set(e, (int)n,
			       "cannot build ACPI tables for %d "
			       "vCPUs",
			       ncpus);
	}
	rc = guest_mem_write(&pc->vm.mem, LAYOUT_ACPI_BASE, buf, (size_t)n);
	free(buf);
	if (rc)
		return err_set(e, rc, "guest RAM too small for ACPI tables");
	return 0;
}

/* "PATH: reason" from read_whole_file becomes "WHAT PATH: reason". */
static int prefix_error(struct err *e, const char *what)
{
	char msg[ERR_MSG_MAX];

	snprintf(msg, sizeof(msg), "%s", e->msg);
	return err_set(e, e->code, "%s %s", what, msg);
}

/* Messages from the parser name no file; add it. */
static int prefix_error_path(struct err *e, const char *what, const char *path)
{
	char msg[ERR_MSG_MAX];

	snprintf(msg, sizeof(msg), "%s", e->msg);
	return err_set(e, e->code, "%s %s: %s", what, path, msg);
}

/* Where a boot path puts an initrd of @len bytes; fills *gpa. */
typedef int (*initrd_place_fn)(struct machine *pc, const void *kernel,
			       uint64_t len, uint64_t *gpa, struct err *e);

/* Read --initrd, place it with @place, copy it into guest RAM. */
static int load_initrd(struct machine *pc, const struct machine_config *cfg,
		       initrd_place_fn place, const void *kernel, uint64_t *gpa,
		       uint64_t *size, struct err *e)
{
	uint8_t *img;
	size_t len;
	int rc;

	rc = read_whole_file(cfg->initrd_path, &img, &len, e);
	if (rc)
		return prefix_error(e, "initrd");
	rc = place(pc, kernel, len, gpa, e);
	if (rc)
		rc = prefix_error_path(e, "initrd", cfg->initrd_path);
	else if (guest_mem_write(&pc->vm.mem, *gpa, img, len))
		rc = err_set(e, -ERANGE,
			     "initrd %s: cannot copy into guest RAM",
			     cfg->initrd_path);
	free(img);
	*size = rc ? 0 : len;
	return rc;
}

static int place_pvh_initrd(struct machine *pc, const void *kernel,
			    uint64_t len, uint64_t *gpa, struct err *e)
{
	return pvh_place_initrd(&pc->vm.mem, kernel, len, gpa, e);
}

/* An ELF kernel with a PVH note: 32-bit entry, %ebx = hvm_start_info. */
static int boot_pvh(struct machine *pc, const struct machine_config *cfg,
		    const uint8_t *img, size_t len, struct err *e)
{
	struct pvh_boot_args args = {.cmdline = cfg->cmdline,
				     .rsdp_gpa = LAYOUT_ACPI_BASE};
	struct vm_boot_regs boot;
	struct pvh_kernel k;
	int rc;

	rc = pvh_parse(img, len, &k, e);
	if (!rc)
		rc = pvh_load(&pc->vm.mem, img, len, &k, e);
	if (rc)
		return prefix_error_path(e, "kernel", cfg->kernel_path);
	if (cfg->initrd_path)
		rc = load_initrd(pc, cfg, place_pvh_initrd, &k,
				 &args.initrd_gpa, &args.initrd_size, e);
	if (!rc)
		rc = pvh_write_start_info(&pc->vm.mem, &args, e);
	if (rc)
		return rc;
	pc->entry = k.entry;
	boot = (struct vm_boot_regs){.entry = pc->entry,
				     .ebx = (uint32_t)LAYOUT_START_INFO};
	return vm_set_boot_regs(&pc->vm, &boot, e);
}

/* A bzImage's initrd goes as high as the kernel allows, above its image. */
struct bz_loaded {
	const struct bzimage *bz;
	uint64_t kernel_gpa;
};

static int place_bz_initrd(struct machine *pc, const void *kernel, uint64_t len,
			   uint64_t *gpa, struct err *e)
{
	const struct bz_loaded *k = kernel;

	return bzimage_place_initrd(&pc->vm.mem, k->bz,
				    k->kernel_gpa + k->bz->init_size, len, gpa,
				    e);
}

/* A bzImage: 64-bit boot protocol, long mode, %rsi = boot_params. */
static int boot_bzimage(struct machine *pc, const struct machine_config *cfg,
			const uint8_t *img, size_t len, struct err *e)
{
	struct bzimage_boot_args args = {.cmdline = cfg->cmdline,
					 .rsdp_gpa = LAYOUT_ACPI_BASE};
	struct vm_boot_regs_long boot;
	struct bzimage bz;
	int rc;

	rc = bzimage_parse(img, len, &bz, e);
	if (!rc)
		rc = bzimage_place_kernel(&pc->vm.mem, &bz, &args.kernel_gpa,
					  e);
	if (!rc)
		rc = bzimage_load(&pc->vm.mem, img, &bz, args.kernel_gpa, e);
	if (rc)
		return prefix_error_path(e, "kernel", cfg->kernel_path);
	if (cfg->initrd_path) {
		struct bz_loaded k = {.bz = &bz, .kernel_gpa = args.kernel_gpa};

		rc = load_initrd(pc, cfg, place_bz_initrd, &k, &args.initrd_gpa,
				 &args.initrd_size, e);
	}
	if (!rc)
		rc = bzimage_write_boot_params(&pc->vm.mem, img, &bz, &args, e);
	if (!rc)
		rc = bzimage_write_boot_tables(&pc->vm.mem, e);
	if (rc)
		return rc;
	boot = (struct vm_boot_regs_long){
		.entry = args.kernel_gpa + BZ_ENTRY64_OFFSET,
		.rsi = LAYOUT_ZERO_PAGE,
		.cr3 = LAYOUT_BOOT_PML4,
		.gdt_base = LAYOUT_BOOT_GDT,
		.gdt_limit = LAYOUT_BOOT_GDT_ENTRIES * 8 - 1,
	};
	pc->entry = (uint32_t)boot.entry;
	return vm_set_boot_regs_long(&pc->vm, &boot, e);
}

/* Dispatch by content: ELF -> PVH, bzImage -> Linux boot protocol. */
static int load_kernel(struct machine *pc, const struct machine_config *cfg,
		       struct err *e)
{
	uint8_t *img;
	size_t len;
	int rc;

	rc = read_whole_file(cfg->kernel_path, &img, &len, e);
	if (rc)
		return prefix_error(e, "kernel");
	if (len >= SELFMAG && memcmp(img, ELFMAG, SELFMAG) == 0)
		rc = boot_pvh(pc, cfg, img, len, e);
	else if (bzimage_probe(img, len))
		rc = boot_bzimage(pc, cfg, img, len, e);
	else
		rc = err_set(e, -ENOEXEC,
			     "kernel %s: neither a PVH ELF nor a bzImage",
			     cfg->kernel_path);
	free(img);
	return rc;
}

static struct virtio_device *virtio_of(struct machine_virtio *mv)
{
	switch (mv->kind) {
	case VIRTIO_KIND_BLK:
		return virtio_blk_device(mv->dev);
	case VIRTIO_KIND_NET:
		return virtio_net_device(mv->dev);
	case VIRTIO_KIND_RNG:
		return virtio_rng_device(mv->dev);
	case VIRTIO_KIND_CONSOLE:
		return virtio_console_device(mv->dev);
	}
	return NULL;
}

static void destroy_virtio_backend(struct machine_virtio *mv)
{
	switch (mv->kind) {
	case VIRTIO_KIND_BLK:
		virtio_blk_destroy(mv->dev);
		break;
	case VIRTIO_KIND_NET:
		virtio_net_destroy(mv->dev);
		break;
	case VIRTIO_KIND_RNG:
		virtio_rng_destroy(mv->dev);
		break;
	case VIRTIO_KIND_CONSOLE:
		virtio_console_destroy(mv->dev);
		break;
	}
	mv->dev = NULL;
}

/*
 * NIC @index: its pairs, those another node of the cluster serves driven
 * through the cluster's hooks.
 */
static int create_net(struct machine *pc, struct machine_virtio *mv,
		      const struct machine_config *cfg, int index,
		      struct err *e)
{
	const struct machine_nic *nic = &cfg->nic[index];
	const struct machine_cluster *cl = cfg->cluster;
	struct virtio_net_opts o = {
		.npairs = nic->npairs > 1 ? (unsigned int)nic->npairs : 1,
		.mac = nic->has_mac ? nic->mac : NULL,
		.flags = cfg->incoming ? VIRTIO_CREATE_RELEASED : 0};

	if (o.npairs > VIRTIO_NET_MAX_PAIRS)
		return err_set(e, -EINVAL, "NIC %d: at most %d queue pairs",
			       index, VIRTIO_NET_MAX_PAIRS);
	o.pair[0].tap = nic->tap;
	for (unsigned int p = 1; p < o.npairs; p++) {
		o.pair[p].tap = nic->pair[p].tap;
		o.pair[p].remote = cl && nic->pair[p].node != cl->self;
		if (o.pair[p].remote)
			o.remote = &cl->net_remote[index];
	}
	return virtio_net_create_opts((struct virtio_net **)&mv->dev,
				      &pc->vm.mem, &o, e);
}

/* Create the backend for slot @mv (kind and config already chosen). */
static int create_virtio_backend(struct machine *pc, struct machine_virtio *mv,
				 const struct machine_config *cfg, int index,
				 struct err *e)
{
	const struct guest_mem *mem = &pc->vm.mem;

	switch (mv->kind) {
	case VIRTIO_KIND_BLK:
		if (cfg->disk[index].remote)
			return virtio_blk_create_remote(
				(struct virtio_blk **)&mv->dev, mem,
				cfg->disk[index].path, cfg->disk_key,
				cfg->disk_key_len, cfg->disk[index].readonly,
				cfg->incoming ? VIRTIO_CREATE_RELEASED : 0, e);
		return virtio_blk_create(
			(struct virtio_blk **)&mv->dev, mem,
			cfg->disk[index].path, cfg->disk[index].readonly,
			cfg->incoming ? VIRTIO_CREATE_RELEASED : 0, e);
	case VIRTIO_KIND_NET:
		return create_net(pc, mv, cfg, index, e);
	case VIRTIO_KIND_RNG:
		return virtio_rng_create((struct virtio_rng **)&mv->dev, mem,
					 e);
	case VIRTIO_KIND_CONSOLE:
		return virtio_console_create((struct virtio_console **)&mv->dev,
					     mem, cfg->vconsole_out_fd, -1, e);
	}
	return -EINVAL;
}

static int add_virtio(struct machine *pc, const struct machine_config *cfg,
		      enum virtio_kind kind, int index, struct err *e)
{
	struct machine_virtio *mv = &pc->virtio[pc->nvirtio];
	const struct machine_cluster *cl = cfg->cluster;
	int rc, i = pc->vindex++;

	if (cl && i < cl->nvirtio && cl->virtio_home[i] != cl->self)
		return 0; /* another node has it; its slot is reserved */
	if (pc->nvirtio >= MACHINE_MAX_VIRTIO)
		return err_set(e, -ENOSPC, "too many virtio devices");
	mv->kind = kind;
	rc = create_virtio_backend(pc, mv, cfg, index, e);
	if (rc)
		return rc;
	pc->nvirtio++;
	rc = virtio_pci_init(&mv->vp, virtio_of(mv), &pc->vm, &pc->pci,
			     cfg->doorbell, pc->poller);
	if (rc)
		return err_set(e, rc, "cannot put %s on the PCI bus: %s",
			       virtio_of(mv)->name, strerror(-rc));
	mv->transport_up = true;
	return 0;
}

/*
 * Device i (machine order) sits in slot i + 1 on every node: the slots of
 * devices homed elsewhere are reserved first so the local ones land right.
 */
static int reserve_remote_slots(struct machine *pc,
				const struct machine_config *cfg, struct err *e)
{
	const struct machine_cluster *cl = cfg->cluster;

	for (int i = 0; cl && i < cl->nvirtio; i++) {
		if (cl->virtio_home[i] == cl->self)
			continue;
		if (pci_bus_set_remote_slot(&pc->pci, i + 1,
					    cl->virtio_home[i]))
			return err_set(e, -EINVAL, "no PCI slot for device %d",
				       i);
	}
	return 0;
}

static int add_virtio_devices(struct machine *pc,
			      const struct machine_config *cfg, struct err *e)
{
	int rc = 0;

	if (cfg->doorbell == DOORBELL_POLL) {
		pc->poller = doorbell_poller_create();
		if (!pc->poller)
			return err_set(e, -ENOMEM,
				       "cannot start the doorbell poller");
	}
	rc = reserve_remote_slots(pc, cfg, e);
	for (int i = 0; !rc && i < cfg->ndisks; i++)
		rc = add_virtio(pc, cfg, VIRTIO_KIND_BLK, i, e);
	for (int i = 0; !rc && i < cfg->nnics; i++)
		rc = add_virtio(pc, cfg, VIRTIO_KIND_NET, i, e);
	if (!rc && cfg->rng)
		rc = add_virtio(pc, cfg, VIRTIO_KIND_RNG, 0, e);
	if (!rc && (cfg->vconsole_out_fd >= 0 ||
		    (cfg->cluster && pc->vindex < cfg->cluster->nvirtio)))
		rc = add_virtio(pc, cfg, VIRTIO_KIND_CONSOLE, 0, e);
	return rc;
}

static void destroy_virtio_devices(struct machine *pc)
{
	/* Transports first: they own the threads that call the devices. */
	for (int i = 0; i < pc->nvirtio; i++)
		if (pc->virtio[i].transport_up)
			virtio_pci_destroy(&pc->virtio[i].vp);
	if (pc->poller)
		doorbell_poller_destroy(pc->poller);
	pc->poller = NULL;
	for (int i = 0; i < pc->nvirtio; i++)
		destroy_virtio_backend(&pc->virtio[i]);
	pc->nvirtio = 0;
}

static int add_userchip(struct machine *pc, const struct machine_config *cfg,
			struct err *e)
{
	const struct machine_cluster *cl = cfg->cluster;

	pc->uchip = calloc(1, sizeof(*pc->uchip));
	if (!pc->uchip)
		return err_set(e, -ENOMEM, "out of memory for the irqchip");
	return userchip_create(pc->uchip, &pc->vm, is_node0(cfg),
			       cl ? &cl->remote : NULL, e);
}

int machine_create(struct machine *pc, const struct machine_config *cfg,
		   const struct machine_persist *keep, struct err *e)
{
	const struct machine_cluster *cl = cfg->cluster;
	struct vm_config vcfg = {.kvm_path = cfg->kvm_path,
				 .ram_size = cfg->ram_size,
				 .ncpus = cfg->ncpus,
				 .ram = cfg->ram,
				 .user_irqchip = cfg->user_irqchip || cl,
				 .partial = cl != NULL,
				 .set_tsc_offset = cl && cl->set_tsc_offset,
				 .tsc_offset = cl ? cl->tsc_offset : 0,
				 .local_cpus = cl ? cl->local_cpus : 0,
				 .dirty_ring = cfg->dirty_ring};
	int rc;

	memset(pc, 0, sizeof(*pc));
	err_clear(e);
	rc = vm_create(&pc->vm, &vcfg, e);
	if (!rc && vcfg.user_irqchip)
		rc = add_userchip(pc, cfg, e);
	if (!rc)
		rc = add_devices(pc, cfg, keep, e);
	if (!rc)
		rc = add_virtio_devices(pc, cfg, e);
	if (!rc && is_node0(cfg) && !cfg->incoming)
		rc = write_acpi(pc, cfg->ncpus, e);
	if (!rc && is_node0(cfg) && !cfg->incoming)
		rc = load_kernel(pc, cfg, e);
	return rc;
}

int machine_start(struct machine *pc, struct err *e)
{
	return vm_start(&pc->vm, e);
}

static void save_persistent(struct machine *pc, struct machine_persist *keep)
{
	pthread_mutex_lock(&pc->rtc.lock);
	memcpy(keep->nvram, pc->rtc.nvram, sizeof(keep->nvram));
	keep->rtc_offset_sec = pc->rtc.offset_sec;
	pthread_mutex_unlock(&pc->rtc.lock);
	keep->valid = 1;
}

void machine_destroy(struct machine *pc, struct machine_persist *keep)
{
	/* Stop console input first: it may raise interrupts on the VM. */
	destroy_virtio_devices(pc);
	if (pc->devices_up & DEV_INFO)
		node_info_destroy(&pc->info, &pc->vm.io);
	if (pc->devices_up & DEV_PCI)
		pci_bus_destroy(&pc->pci);
	if (pc->devices_up & DEV_UART)
		uart8250_destroy(&pc->uart);
	if (keep && (pc->devices_up & DEV_RTC))
		save_persistent(pc, keep);
	if (pc->devices_up & DEV_RTC)
		cmos_rtc_destroy(&pc->rtc);
	if (pc->devices_up & DEV_KBD)
		i8042_destroy(&pc->kbd);
	if (pc->devices_up & DEV_PM)
		acpi_pm_destroy(&pc->pm);
	pc->devices_up = 0;
	if (pc->uchip) {
		userchip_destroy(pc->uchip);
		free(pc->uchip);
		pc->uchip = NULL;
	}
	vm_destroy(&pc->vm);
}
