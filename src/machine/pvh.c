/*
 * machine/pvh.c - the PVH boot path: reading kernel/initrd files, parsing
 * and validating an x86 ELF kernel (ELF64 or ELF32) with its Xen
 * XEN_ELFNOTE_PHYS32_ENTRY note, loading its PT_LOAD segments, placing the
 * initrd, and writing struct hvm_start_info with its module list, memory
 * map and command line into guest memory.
 *
 * The ELF file is hostile: every offset and size is checked against the
 * buffer with overflow-safe arithmetic before it is used, and headers are
 * copied out with memcpy so that no unaligned access happens. The host is
 * x86 (little-endian), like the ELF files accepted.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "machine/layout.h"
#include "machine/memmap.h"
#include "machine/pvh.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define PVH_FILE_MAX (1ULL << 30)
#define PAGE_SIZE 0x1000ULL
#define NOTE_HDR_SIZE 12ULL /* namesz, descsz, type: 32 bits each */

/* ---- reading files ---------------------------------------------------- */

static int read_fd(int fd, const char *path, uint8_t *buf, size_t size,
		   struct err *e)
{
	size_t got = 0;

	while (got < size) {
		ssize_t r = read(fd, buf + got, size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return err_set(e, -errno, "%s: read failed: %s", path,
				       strerror(errno));
		if (r == 0)
			return err_set(e, -EIO,
				       "%s: file shrank while being read (got "
				       "%zu of %zu bytes)",
				       path, got, size);
		got += (size_t)r;
	}
	return 0;
}

/* Only regular, non-empty files of at most 1 GiB are read. */
static int check_file_stat(const struct stat *st, const char *path,
			   struct err *e)
{
	if (S_ISDIR(st->st_mode))
		return err_set(e, -EISDIR, "%s: is a directory", path);
	if (!S_ISREG(st->st_mode))
		return err_set(e, -EINVAL, "%s: not a regular file", path);
	if (st->st_size == 0)
		return err_set(e, -EINVAL, "%s: file is empty", path);
	if ((uint64_t)st->st_size > PVH_FILE_MAX)
		return err_set(e, -EFBIG,
			       "%s: file is %jd bytes; the limit is 1 GiB",
			       path, (intmax_t)st->st_size);
	return 0;
}

int read_whole_file(const char *path, uint8_t **buf, size_t *len, struct err *e)
{
	struct stat st;
	uint8_t *p;
	int fd, rc;

	*buf = NULL;
	*len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, -errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		rc = err_set(e, -errno, "%s: %s", path, strerror(errno));
		goto out;
	}
	rc = check_file_stat(&st, path, e);
	if (rc)
		goto out;
	p = malloc((size_t)st.st_size);
	if (!p) {
		rc = err_set(e, -ENOMEM, "%s: cannot allocate %jd bytes", path,
			     (intmax_t)st.st_size);
		goto out;
	}
	rc = read_fd(fd, path, p, (size_t)st.st_size, e);
	if (rc) {
		free(p);
		goto out;
	}
	*buf = p;
	*len = (size_t)st.st_size;
out:
	close(fd);
	return rc;
}

/* ---- ELF headers ------------------------------------------------------ */

/* The header fields used, independent of the ELF class. */
struct elf_hdr {
	bool is64;
	uint64_t phoff;
	uint16_t phentsize;
	uint16_t phnum;
};

/* A program header, independent of the ELF class. */
struct elf_phdr {
	uint32_t type;
	uint64_t offset;
	uint64_t paddr;
	uint64_t filesz;
	uint64_t memsz;
	uint64_t align;
};

/* True if [off, off + size) lies inside a buffer of @len bytes. */
static bool range_in_file(uint64_t off, uint64_t size, size_t len)
{
	return off <= len && size <= len - off;
}

static int parse_error(struct err *e, const char *what)
{
	return err_set(e, -ENOEXEC, "%s", what);
}

static int check_ident(const uint8_t *img, size_t len, struct err *e)
{
	if (len < SELFMAG || memcmp(img, ELFMAG, SELFMAG) != 0)
		return parse_error(e, "not an ELF file");
	if (len < EI_NIDENT)
		return err_set(e, -ENOEXEC,
			       "ELF file is truncated (identification needs %d "
			       "bytes, file is %zu bytes)",
			       EI_NIDENT, len);
	if (img[EI_CLASS] != ELFCLASS64 && img[EI_CLASS] != ELFCLASS32)
		return err_set(e, -ENOEXEC,
			       "unsupported ELF class %u (want ELFCLASS32 or "
			       "ELFCLASS64)",
			       img[EI_CLASS]);
	if (img[EI_DATA] == ELFDATA2MSB)
		return parse_error(
			e,
			"big-endian ELF file; x86 kernels are little-endian");
	if (img[EI_DATA] != ELFDATA2LSB)
		return err_set(e, -ENOEXEC, "unknown ELF data encoding %u",
			       img[EI_DATA]);
	if (img[EI_VERSION] != EV_CURRENT)
		return err_set(e, -ENOEXEC, "unsupported ELF version %u",
			       img[EI_VERSION]);
	return 0;
}

static int check_type_machine(bool is64, uint16_t type, uint16_t machine,
			      struct err *e)
{
	uint16_t want = is64 ? EM_X86_64 : EM_386;

	if (machine != want)
		return err_set(
			e, -ENOEXEC,
			"not an x86 ELF (%s file with e_machine %u; want %s)",
			is64 ? "ELF64" : "ELF32", machine,
			is64 ? "EM_X86_64 (62)" : "EM_386 (3)");
	if (type == ET_DYN)
		return parse_error(e,
				   "ELF type ET_DYN (position-independent) is "
				   "not supported; need an ET_EXEC kernel");
	if (type != ET_EXEC)
		return err_set(
			e, -ENOEXEC,
			"ELF type %u is not an executable (need ET_EXEC)",
			type);
	return 0;
}

static int read_ehdr(const uint8_t *img, size_t len, struct elf_hdr *h,
		     struct err *e)
{
	size_t need;
	uint16_t type, machine;

	h->is64 = img[EI_CLASS] == ELFCLASS64;
	need = h->is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr);
	if (len < need)
		return err_set(e, -ENOEXEC,
			       "ELF file is truncated (header needs %zu bytes, "
			       "file is %zu bytes)",
			       need, len);
	if (h->is64) {
		Elf64_Ehdr eh;

		memcpy(&eh, img, sizeof(eh));
		type = eh.e_type;
		machine = eh.e_machine;
		h->phoff = eh.e_phoff;
		h->phentsize = eh.e_phentsize;
		h->phnum = eh.e_phnum;
	} else {
		Elf32_Ehdr eh;

		memcpy(&eh, img, sizeof(eh));
		type = eh.e_type;
		machine = eh.e_machine;
		h->phoff = eh.e_phoff;
		h->phentsize = eh.e_phentsize;
		h->phnum = eh.e_phnum;
	}
	return check_type_machine(h->is64, type, machine, e);
}

static int check_phdr_table(const struct elf_hdr *h, size_t len, struct err *e)
{
	size_t want = h->is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
	uint64_t size;

	if (h->phentsize != want)
		return err_set(e, -ENOEXEC,
			       "program header size %u is wrong (expected %zu)",
			       h->phentsize, want);
	if (h->phnum == 0)
		return parse_error(e, "ELF file has no program headers");
	if (h->phnum == PN_XNUM)
		return parse_error(e, "too many program headers (extended "
				      "numbering is not supported)");
	size = (uint64_t)h->phnum * h->phentsize; /* < 2^22: cannot wrap */
	if (h->phoff > len)
		return err_set(e, -ENOEXEC,
			       "program headers start at offset 0x%" PRIx64
			       ", past the end of the file (%zu bytes)",
			       h->phoff, len);
	if (!range_in_file(h->phoff, size, len))
		return err_set(
			e, -ENOEXEC,
			"ELF file is truncated (program headers end at %" PRIu64
			", file is %zu bytes)",
			h->phoff + size, len);
	return 0;
}

/* Program header @i; the table was checked by check_phdr_table(). */
static void read_phdr(const uint8_t *img, const struct elf_hdr *h, int i,
		      struct elf_phdr *p)
{
	const uint8_t *src = img + h->phoff + (uint64_t)i * h->phentsize;

	if (h->is64) {
		Elf64_Phdr ph;

		memcpy(&ph, src, sizeof(ph));
		*p = (struct elf_phdr){ph.p_type,   ph.p_offset, ph.p_paddr,
				       ph.p_filesz, ph.p_memsz,	 ph.p_align};
	} else {
		Elf32_Phdr ph;

		memcpy(&ph, src, sizeof(ph));
		*p = (struct elf_phdr){ph.p_type,   ph.p_offset, ph.p_paddr,
				       ph.p_filesz, ph.p_memsz,	 ph.p_align};
	}
}

/* ---- PT_LOAD segments ------------------------------------------------- */

static int check_load(const struct elf_phdr *p, int idx, size_t len,
		      struct err *e)
{
	if (p->filesz > p->memsz)
		return err_set(e, -ENOEXEC,
			       "PT_LOAD segment %d: file size 0x%" PRIx64
			       " is larger than its memory size 0x%" PRIx64,
			       idx, p->filesz, p->memsz);
	if (p->memsz > UINT64_MAX - p->paddr)
		return err_set(e, -ENOEXEC,
			       "PT_LOAD segment %d: address 0x%" PRIx64
			       " + size 0x%" PRIx64 " wraps past 2^64",
			       idx, p->paddr, p->memsz);
	if (p->filesz && !range_in_file(p->offset, p->filesz, len))
		return err_set(
			e, -ENOEXEC,
			"PT_LOAD segment %d: file bytes at offset 0x%" PRIx64
			" size 0x%" PRIx64
			" extend past the end of the file (%zu bytes)",
			idx, p->offset, p->filesz, len);
	return 0;
}

static int add_load(const struct elf_phdr *p, int idx, size_t len,
		    struct pvh_kernel *k, struct err *e)
{
	int rc = check_load(p, idx, len, e);

	if (rc)
		return rc;
	if (p->memsz == 0)
		return 0; /* occupies nothing */
	if (k->nsegs >= PVH_MAX_SEGMENTS)
		return err_set(e, -ENOEXEC,
			       "too many PT_LOAD segments (more than %d)",
			       PVH_MAX_SEGMENTS);
	k->seg[k->nsegs++] = (struct pvh_segment){.file_off = p->offset,
						  .filesz = p->filesz,
						  .paddr = p->paddr,
						  .memsz = p->memsz};
	return 0;
}

static bool segs_overlap(const struct pvh_segment *a,
			 const struct pvh_segment *b)
{
	return a->paddr < b->paddr + b->memsz && b->paddr < a->paddr + a->memsz;
}

static int check_overlaps(const struct pvh_kernel *k, struct err *e)
{
	for (int i = 0; i < k->nsegs; i++) {
		for (int j = i + 1; j < k->nsegs; j++) {
			const struct pvh_segment *a = &k->seg[i];
			const struct pvh_segment *b = &k->seg[j];

			if (segs_overlap(a, b))
				return err_set(
					e, -ENOEXEC,
					"PT_LOAD segments overlap: 0x%" PRIx64
					"-0x%" PRIx64 " and 0x%" PRIx64
					"-0x%" PRIx64,
					a->paddr, a->paddr + a->memsz, b->paddr,
					b->paddr + b->memsz);
		}
	}
	return 0;
}

static void compute_bounds(struct pvh_kernel *k)
{
	k->load_start = UINT64_MAX;
	k->load_end = 0;
	for (int i = 0; i < k->nsegs; i++) {
		const struct pvh_segment *s = &k->seg[i];

		if (s->paddr < k->load_start)
			k->load_start = s->paddr;
		if (s->paddr + s->memsz > k->load_end)
			k->load_end = s->paddr + s->memsz;
	}
}

static int collect_loads(const uint8_t *img, size_t len,
			 const struct elf_hdr *h, struct pvh_kernel *k,
			 struct err *e)
{
	struct elf_phdr p;
	int rc;

	for (int i = 0; i < h->phnum; i++) {
		read_phdr(img, h, i, &p);
		if (p.type != PT_LOAD)
			continue;
		rc = add_load(&p, i, len, k, e);
		if (rc)
			return rc;
	}
	if (k->nsegs == 0)
		return parse_error(e, "ELF file has no PT_LOAD segments");
	rc = check_overlaps(k, e);
	if (rc)
		return rc;
	compute_bounds(k);
	return 0;
}

/* ---- the PVH entry note ----------------------------------------------- */

struct note_walk {
	const uint8_t *seg; /* the PT_NOTE segment's bytes */
	uint64_t size;
	uint64_t align; /* 4, or 8 for 8-aligned ELF64 note segments */
	int idx;	/* program header index, for messages */
};

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1); /* callers keep v far below 2^64 */
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* The PVH note's descriptor: a 32-bit (or 64-bit below 4 GiB) address. */
static int pvh_note_entry(const uint8_t *desc, uint32_t descsz, uint32_t *entry,
			  struct err *e)
{
	uint64_t v;

	if (descsz == 4) {
		*entry = get_u32(desc);
		return 0;
	}
	if (descsz != 8)
		return err_set(
			e, -ENOEXEC,
			"PVH entry note has a %u-byte descriptor (want 4 or 8)",
			descsz);
	memcpy(&v, desc, sizeof(v));
	if (v > UINT32_MAX)
		return err_set(e, -ENOEXEC,
			       "PVH entry point 0x%" PRIx64 " is above 4 GiB",
			       v);
	*entry = (uint32_t)v;
	return 0;
}

static bool is_pvh_note(const uint8_t *name, uint32_t namesz, uint32_t type)
{
	return type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 &&
	       memcmp(name, "Xen", 4) == 0;
}

static int malformed_note(const struct note_walk *w, uint64_t pos,
			  const char *field, uint32_t val, struct err *e)
{
	return err_set(
		e, -ENOEXEC,
		"malformed note at offset %" PRIu64
		" of PT_NOTE segment %d: %s %u exceeds the segment (%" PRIu64
		" bytes)",
		pos, w->idx, field, val, w->size);
}

/*
 * Walk the notes of one PT_NOTE segment. Returns 1 and sets @entry when
 * the PVH note is found, 0 when it is not there, or a negative error.
 */
static int walk_notes(const struct note_walk *w, uint32_t *entry, struct err *e)
{
	uint64_t pos = 0;

	while (w->size - pos >= NOTE_HDR_SIZE) {
		uint32_t namesz = get_u32(w->seg + pos);
		uint32_t descsz = get_u32(w->seg + pos + 4);
		uint32_t type = get_u32(w->seg + pos + 8);
		uint64_t name_at = pos + NOTE_HDR_SIZE;
		uint64_t desc_at, left = w->size - name_at;

		if (align_up(namesz, w->align) > left)
			return malformed_note(w, pos, "namesz", namesz, e);
		desc_at = name_at + align_up(namesz, w->align);
		if (descsz > w->size - desc_at)
			return malformed_note(w, pos, "descsz", descsz, e);
		if (is_pvh_note(w->seg + name_at, namesz, type)) {
			int rc = pvh_note_entry(w->seg + desc_at, descsz, entry,
						e);

			return rc ? rc : 1;
		}
		/* The last note's padding may be cut off by the segment. */
		pos = desc_at + align_up(descsz, w->align);
		if (pos > w->size)
			break;
	}
	return 0;
}

/* ELF64 note segments aligned to 8 pad their fields to 8, others to 4. */
static uint64_t note_align(const struct elf_hdr *h, const struct elf_phdr *p)
{
	return h->is64 && p->align == 8 ? 8 : 4;
}

static int find_pvh_entry(const uint8_t *img, size_t len,
			  const struct elf_hdr *h, uint32_t *entry,
			  struct err *e)
{
	struct elf_phdr p;

	for (int i = 0; i < h->phnum; i++) {
		struct note_walk w;
		int rc;

		read_phdr(img, h, i, &p);
		if (p.type != PT_NOTE)
			continue;
		if (!range_in_file(p.offset, p.filesz, len))
			return err_set(
				e, -ENOEXEC,
				"PT_NOTE segment %d at offset 0x%" PRIx64
				" size 0x%" PRIx64
				" extends past the end of the file (%zu bytes)",
				i, p.offset, p.filesz, len);
		w = (struct note_walk){.seg = img + p.offset,
				       .size = p.filesz,
				       .align = note_align(h, &p),
				       .idx = i};
		rc = walk_notes(&w, entry, e);
		if (rc)
			return rc < 0 ? rc : 0;
	}
	return parse_error(e, "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
			      "dvmm boots PVH ELF kernels");
}

/* The entry must be in file-backed bytes of some segment. */
static int check_entry(const struct pvh_kernel *k, struct err *e)
{
	for (int i = 0; i < k->nsegs; i++) {
		const struct pvh_segment *s = &k->seg[i];

		if (k->entry >= s->paddr && k->entry - s->paddr < s->filesz)
			return 0;
	}
	return err_set(e, -ENOEXEC,
		       "entry point 0x%" PRIx32
		       " is outside the loaded segments",
		       k->entry);
}

int pvh_parse(const uint8_t *img, size_t len, struct pvh_kernel *k,
	      struct err *e)
{
	struct elf_hdr h = {0};
	int rc;

	memset(k, 0, sizeof(*k));
	if (!img)
		len = 0;
	rc = check_ident(img, len, e);
	if (!rc)
		rc = read_ehdr(img, len, &h, e);
	if (!rc)
		rc = check_phdr_table(&h, len, e);
	if (!rc)
		rc = collect_loads(img, len, &h, k, e);
	if (!rc)
		rc = find_pvh_entry(img, len, &h, &k->entry, e);
	if (!rc)
		rc = check_entry(k, e);
	if (rc)
		memset(k, 0, sizeof(*k));
	return rc;
}

/* ---- loading ---------------------------------------------------------- */

/* "256 MiB", "640 KiB" or "4097 bytes", for messages. */
static const char *fmt_size(uint64_t bytes, char *buf, size_t n)
{
	if (bytes && !(bytes & ((1ULL << 20) - 1)))
		snprintf(buf, n, "%" PRIu64 " MiB", bytes >> 20);
	else if (bytes && !(bytes & ((1ULL << 10) - 1)))
		snprintf(buf, n, "%" PRIu64 " KiB", bytes >> 10);
	else
		snprintf(buf, n, "%" PRIu64 " bytes", bytes);
	return buf;
}

/* Segment @s must come from the file and lie in guest RAM above 1 MiB. */
static int check_segment(const struct guest_mem *m, size_t len,
			 const struct pvh_segment *s, struct err *e)
{
	char ram[32];

	if (s->memsz > UINT64_MAX - s->paddr || s->filesz > s->memsz ||
	    !range_in_file(s->file_off, s->filesz, len))
		return err_set(e, -EINVAL,
			       "kernel segment at 0x%" PRIx64
			       " does not match the file (not from pvh_parse?)",
			       s->paddr);
	if (s->paddr < LAYOUT_HIMEM)
		return err_set(e, -ERANGE,
			       "kernel segment 0x%" PRIx64 "-0x%" PRIx64
			       " starts below 1 MiB; PVH kernels load at or "
			       "above 0x%llx",
			       s->paddr, s->paddr + s->memsz, LAYOUT_HIMEM);
	if (!guest_mem_ptr(m, s->paddr, s->memsz))
		return err_set(e, -ERANGE,
			       "kernel segment 0x%" PRIx64 "-0x%" PRIx64
			       " does not fit in guest RAM (%s)",
			       s->paddr, s->paddr + s->memsz,
			       fmt_size(m->ram_size, ram, sizeof(ram)));
	return 0;
}

/* Copy the file bytes and zero the rest (bss); @s was checked. */
static void copy_segment(const struct guest_mem *m, const uint8_t *img,
			 const struct pvh_segment *s)
{
	uint8_t *dst = guest_mem_ptr(m, s->paddr, s->memsz);

	memcpy(dst, img + s->file_off, s->filesz);
	memset(dst + s->filesz, 0, s->memsz - s->filesz);
}

int pvh_load(const struct guest_mem *m, const uint8_t *img, size_t len,
	     const struct pvh_kernel *k, struct err *e)
{
	if (k->nsegs <= 0 || k->nsegs > PVH_MAX_SEGMENTS)
		return err_set(e, -EINVAL, "kernel has %d segments to load",
			       k->nsegs);
	/* Check every segment before copying any. */
	for (int i = 0; i < k->nsegs; i++) {
		int rc = check_segment(m, len, &k->seg[i], e);

		if (rc)
			return rc;
	}
	for (int i = 0; i < k->nsegs; i++)
		copy_segment(m, img, &k->seg[i]);
	return 0;
}

/* ---- initrd ----------------------------------------------------------- */

int pvh_place_initrd(const struct guest_mem *m, const struct pvh_kernel *k,
		     uint64_t size, uint64_t *gpa, struct err *e)
{
	uint64_t top = guest_mem_low_end(m);
	uint64_t bottom = k->load_end;
	uint64_t room;
	char a[32], b[32];

	*gpa = 0;
	if (size == 0)
		return err_set(e, -EINVAL, "initrd is empty");
	if (top > GUEST_MMIO_HOLE_START)
		top = GUEST_MMIO_HOLE_START;
	top &= ~(PAGE_SIZE - 1);
	if (bottom < LAYOUT_HIMEM)
		bottom = LAYOUT_HIMEM;
	bottom = bottom > UINT64_MAX - PAGE_SIZE ? UINT64_MAX :
						   align_up(bottom, PAGE_SIZE);
	room = top > bottom ? top - bottom : 0;
	if (size > room)
		return err_set(e, -ENOSPC,
			       "initrd (%s) does not fit in guest RAM: %s free "
			       "between the kernel end 0x%" PRIx64
			       " and 0x%" PRIx64,
			       fmt_size(size, a, sizeof(a)),
			       fmt_size(room, b, sizeof(b)), bottom, top);
	*gpa = (top - size) & ~(PAGE_SIZE - 1);
	return 0;
}

/* ---- hvm_start_info --------------------------------------------------- */

static int boot_write(const struct guest_mem *m, uint64_t gpa, const void *src,
		      size_t len, const char *what, struct err *e)
{
	char ram[32];

	if (guest_mem_write(m, gpa, src, len) == 0)
		return 0;
	return err_set(e, -ERANGE,
		       "cannot write the %s at 0x%" PRIx64 "-0x%" PRIx64
		       ": outside guest RAM (%s)",
		       what, gpa, gpa + len,
		       fmt_size(m->ram_size, ram, sizeof(ram)));
}

/* Command line at LAYOUT_CMDLINE; sets *paddr (0 when there is none). */
static int write_cmdline(const struct guest_mem *m, const char *cmdline,
			 uint64_t *paddr, struct err *e)
{
	size_t n;

	*paddr = 0;
	if (!cmdline)
		return 0;
	n = strnlen(cmdline, LAYOUT_CMDLINE_MAX);
	if (n >= LAYOUT_CMDLINE_MAX)
		return err_set(
			e, -E2BIG,
			"kernel command line is %zu bytes; the limit is %d",
			strlen(cmdline), LAYOUT_CMDLINE_MAX - 1);
	*paddr = LAYOUT_CMDLINE;
	return boot_write(m, LAYOUT_CMDLINE, cmdline, n + 1, "command line", e);
}

/* The initrd as module 0 at LAYOUT_MODLIST; sets *nr to the count. */
static int write_modlist(const struct guest_mem *m,
			 const struct pvh_boot_args *a, uint32_t *nr,
			 struct err *e)
{
	struct hvm_modlist_entry mod = {.paddr = a->initrd_gpa,
					.size = a->initrd_size};

	*nr = 0;
	if (a->initrd_size == 0)
		return 0;
	if (!guest_mem_ptr(m, a->initrd_gpa, a->initrd_size))
		return err_set(e, -EINVAL,
			       "initrd at 0x%" PRIx64 " size 0x%" PRIx64
			       " is not inside guest RAM",
			       a->initrd_gpa, a->initrd_size);
	*nr = 1;
	return boot_write(m, LAYOUT_MODLIST, &mod, sizeof(mod), "module list",
			  e);
}

static int write_memmap(const struct guest_mem *m, uint32_t *nr, struct err *e)
{
	struct memmap_entry map[MEMMAP_MAX];
	struct hvm_memmap_table_entry t[MEMMAP_MAX];
	int n = memmap_build(m, map);

	if (n < 0 || n > MEMMAP_MAX || n > LAYOUT_MEMMAP_MAX)
		return err_set(e, -EINVAL, "memory map has %d entries", n);
	for (int i = 0; i < n; i++)
		t[i] = (struct hvm_memmap_table_entry){.addr = map[i].addr,
						       .size = map[i].size,
						       .type = map[i].type};
	*nr = (uint32_t)n;
	return boot_write(m, LAYOUT_MEMMAP, t, (size_t)n * sizeof(t[0]),
			  "memory map", e);
}

int pvh_write_start_info(const struct guest_mem *m,
			 const struct pvh_boot_args *a, struct err *e)
{
	struct hvm_start_info si = {.magic = HVM_START_MAGIC,
				    .version = 1,
				    .rsdp_paddr = a->rsdp_gpa,
				    .memmap_paddr = LAYOUT_MEMMAP};
	uint64_t cmdline_paddr;
	uint32_t nr_modules, nr_map;
	int rc;

	/* Locals: the ABI structs are packed, so no pointers to members. */
	rc = write_cmdline(m, a->cmdline, &cmdline_paddr, e);
	if (!rc)
		rc = write_modlist(m, a, &nr_modules, e);
	if (!rc)
		rc = write_memmap(m, &nr_map, e);
	if (rc)
		return rc;
	si.cmdline_paddr = cmdline_paddr;
	si.nr_modules = nr_modules;
	si.modlist_paddr = nr_modules ? LAYOUT_MODLIST : 0;
	si.memmap_entries = nr_map;
	return boot_write(m, LAYOUT_START_INFO, &si, sizeof(si),
			  "PVH start info", e);
}
