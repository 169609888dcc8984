/*
 * machine/aml.c - ACPI Machine Language encoder (see aml.h). Objects with a
 * PkgLength are written without it and the length is inserted in front of
 * their contents when they are closed, so at every step the buffer holds
 * no more than the finished AML will.
 */
#include <errno.h>
#include <string.h>

#include "machine/aml.h"

/* Opcodes and prefixes (ACPI 6.5, section 20). */
#define AML_ZERO_OP 0x00
#define AML_ONE_OP 0x01
#define AML_NAME_OP 0x08
#define AML_BYTE_PREFIX 0x0a
#define AML_WORD_PREFIX 0x0b
#define AML_DWORD_PREFIX 0x0c
#define AML_STRING_PREFIX 0x0d
#define AML_QWORD_PREFIX 0x0e
#define AML_SCOPE_OP 0x10
#define AML_BUFFER_OP 0x11
#define AML_PACKAGE_OP 0x12
#define AML_DUAL_NAME_PREFIX 0x2e
#define AML_MULTI_NAME_PREFIX 0x2f
#define AML_EXT_OP_PREFIX 0x5b
#define AML_DEVICE_OP 0x82 /* after AML_EXT_OP_PREFIX */
#define AML_ROOT_CHAR '\\'
#define AML_PARENT_PREFIX_CHAR '^'
#define AML_NULL_NAME 0x00
#define AML_NAMESEG_LEN 4
#define AML_MAX_NAMESEGS 255

/* PkgLength: bits 7:6 of the lead byte = number of bytes that follow. */
#define PKGLEN_1BYTE_MAX 0x3f
#define PKGLEN_2BYTE_MAX 0xfff
#define PKGLEN_3BYTE_MAX 0xfffff
#define PKGLEN_LEAD_LOW_BITS 4

/* Resource descriptors (ACPI 6.5, section 6.4). */
#define RES_IO 0x47 /* small item, type 0x08, length 7 */
#define RES_IO_DECODE16 0x01
#define RES_END_TAG 0x79    /* small item, type 0x0f, length 1 */
#define RES_DWORD_ADDR 0x87 /* large items */
#define RES_WORD_ADDR 0x88
#define RES_QWORD_ADDR 0x8a
#define RES_LARGE_HDR 3	  /* tag + 16-bit length */
#define RES_ADDR_FIXED 3  /* type, general flags, type-specific flags */
#define RES_ADDR_FIELDS 5 /* granularity, min, max, translation, length */
#define RES_SPACE_MEMORY 0
#define RES_SPACE_IO 1
#define RES_SPACE_BUS 2
/* General flags. */
#define RES_CONSUMER (1u << 0)
#define RES_MIN_FIXED (1u << 2)
#define RES_MAX_FIXED (1u << 3)
/* Type-specific flags. */
#define RES_MEM_READ_WRITE (1u << 0) /* _MEM bits 2:1 = 0: non-cacheable */
#define RES_IO_ENTIRE_RANGE 0x03

void aml_init(struct aml *a, uint8_t *buf, size_t cap)
{
	memset(a, 0, sizeof(*a));
	a->buf = buf;
	a->cap = buf ? cap : 0;
}

ssize_t aml_finish(const struct aml *a)
{
	if (a->err)
		return a->err;
	if (a->depth)
		return -EINVAL;
	return (ssize_t)a->len;
}

static void fail(struct aml *a, int err)
{
	if (!a->err)
		a->err = err;
}

/* Insert @n bytes at @pos (<= len), moving what follows. */
static void insert(struct aml *a, size_t pos, const void *p, size_t n)
{
	if (a->buf && !a->err && n > a->cap - a->len)
		fail(a, -ENOSPC);
	if (a->buf && !a->err) {
		memmove(a->buf + pos + n, a->buf + pos, a->len - pos);
		memcpy(a->buf + pos, p, n);
	}
	a->len += n;
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
	insert(a, a->len, p, n);
}

void aml_byte(struct aml *a, uint8_t v)
{
	aml_bytes(a, &v, 1);
}

static void put_le(uint8_t *p, uint64_t v, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void aml_le(struct aml *a, uint64_t v, unsigned int n)
{
	uint8_t b[8];

	put_le(b, v, n);
	aml_bytes(a, b, n);
}

unsigned int aml_pkglength_encode(uint32_t value, uint8_t out[4])
{
	unsigned int follow;

	if (value <= PKGLEN_1BYTE_MAX) {
		out[0] = (uint8_t)value;
		return 1;
	}
	if (value > AML_PKGLENGTH_MAX)
		return 0;
	if (value <= PKGLEN_2BYTE_MAX)
		follow = 1;
	else if (value <= PKGLEN_3BYTE_MAX)
		follow = 2;
	else
		follow = 3;
	/* Lead byte: count, then the low nibble; the rest follows. */
	out[0] = (uint8_t)(follow << 6 | (value & 0xf));
	put_le(out + 1, value >> PKGLEN_LEAD_LOW_BITS, follow);
	return follow + 1;
}

uint32_t aml_pkglength_for(size_t content_len)
{
	static const size_t max[] = {PKGLEN_1BYTE_MAX, PKGLEN_2BYTE_MAX,
				     PKGLEN_3BYTE_MAX, AML_PKGLENGTH_MAX};

	for (size_t n = 1; n <= 4; n++) {
		if (content_len <= max[n - 1] - n)
			return (uint32_t)(content_len + n);
	}
	return 0;
}

/* The shortest integer encoding of @v into @out; returns its length. */
static unsigned int encode_integer(uint64_t v, uint8_t out[9])
{
	unsigned int n;

	if (v == 0 || v == 1) {
		out[0] = v ? AML_ONE_OP : AML_ZERO_OP;
		return 1;
	}
	if (v <= UINT8_MAX) {
		out[0] = AML_BYTE_PREFIX;
		n = 1;
	} else if (v <= UINT16_MAX) {
		out[0] = AML_WORD_PREFIX;
		n = 2;
	} else if (v <= UINT32_MAX) {
		out[0] = AML_DWORD_PREFIX;
		n = 4;
	} else {
		out[0] = AML_QWORD_PREFIX;
		n = 8;
	}
	put_le(out + 1, v, n);
	return n + 1;
}

void aml_integer(struct aml *a, uint64_t v)
{
	uint8_t b[9];

	aml_bytes(a, b, encode_integer(v, b));
}

void aml_string(struct aml *a, const char *s)
{
	for (const char *c = s; *c; c++) {
		if ((unsigned char)*c > 0x7f) {
			fail(a, -EINVAL);
			return;
		}
	}
	aml_byte(a, AML_STRING_PREFIX);
	aml_bytes(a, s, strlen(s) + 1);
}

static bool nameseg_char(char c, bool first)
{
	return (c >= 'A' && c <= 'Z') || c == '_' ||
	       (!first && c >= '0' && c <= '9');
}

/* One NameSeg from @s (up to '.' or the end); NULL if malformed. */
static const char *parse_nameseg(const char *s, uint8_t seg[4])
{
	unsigned int n = 0;

	while (*s && *s != '.') {
		if (n == AML_NAMESEG_LEN || !nameseg_char(*s, n == 0))
			return NULL;
		seg[n++] = (uint8_t)*s++;
	}
	if (n == 0)
		return NULL;
	memset(seg + n, '_', AML_NAMESEG_LEN - n);
	return s;
}

static unsigned int count_namesegs(const char *s)
{
	unsigned int n = *s ? 1 : 0;

	for (; *s; s++)
		n += *s == '.';
	return n;
}

void aml_namestring(struct aml *a, const char *path)
{
	const char *s = path;
	unsigned int nsegs;
	uint8_t seg[AML_NAMESEG_LEN];

	if (*s == AML_ROOT_CHAR)
		aml_byte(a, (uint8_t)*s++);
	else
		while (*s == AML_PARENT_PREFIX_CHAR)
			aml_byte(a, (uint8_t)*s++);
	nsegs = count_namesegs(s);
	if (nsegs == 0) {
		aml_byte(a, AML_NULL_NAME);
		return;
	}
	if (nsegs > AML_MAX_NAMESEGS) {
		fail(a, -EINVAL);
		return;
	}
	if (nsegs == 2) {
		aml_byte(a, AML_DUAL_NAME_PREFIX);
	} else if (nsegs > 2) {
		aml_byte(a, AML_MULTI_NAME_PREFIX);
		aml_byte(a, (uint8_t)nsegs);
	}
	for (unsigned int i = 0; i < nsegs; i++) {
		s = parse_nameseg(s, seg);
		if (!s) {
			fail(a, -EINVAL);
			return;
		}
		aml_bytes(a, seg, sizeof(seg));
		if (*s == '.')
			s++;
	}
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/*
 * "PNP0A08": three letters of 5 bits each (A = 1) and four hex digits,
 * stored big-endian: 0x41 0xd0 0x0a 0x08.
 */
uint32_t aml_eisaid_value(const char *id)
{
	uint32_t mfg = 0, product = 0;

	if (strlen(id) != 7)
		return 0;
	for (int i = 0; i < 3; i++) {
		if (id[i] < 'A' || id[i] > 'Z')
			return 0;
		mfg = mfg << 5 | (uint32_t)(id[i] - 'A' + 1);
	}
	for (int i = 3; i < 7; i++) {
		int d = hex_digit(id[i]);

		if (d < 0)
			return 0;
		product = product << 4 | (uint32_t)d;
	}
	return (mfg >> 8) | (mfg & 0xff) << 8 | (product >> 8) << 16 |
	       (product & 0xff) << 24;
}

void aml_eisaid(struct aml *a, const char *id)
{
	uint32_t v = aml_eisaid_value(id);

	if (!v) {
		fail(a, -EINVAL);
		return;
	}
	aml_integer(a, v);
}

void aml_name(struct aml *a, const char *path)
{
	aml_byte(a, AML_NAME_OP);
	aml_namestring(a, path);
}

void aml_name_integer(struct aml *a, const char *path, uint64_t v)
{
	aml_name(a, path);
	aml_integer(a, v);
}

void aml_name_eisaid(struct aml *a, const char *path, const char *id)
{
	aml_name(a, path);
	aml_eisaid(a, id);
}

/* Remember where the PkgLength of the object being opened goes. */
static void open_object(struct aml *a, bool buffer)
{
	if (a->depth == AML_MAX_DEPTH) {
		fail(a, -EINVAL);
		return;
	}
	a->open[a->depth].start = a->len;
	a->open[a->depth].buffer = buffer;
	a->depth++;
}

void aml_scope_begin(struct aml *a, const char *path)
{
	aml_byte(a, AML_SCOPE_OP);
	open_object(a, false);
	aml_namestring(a, path);
}

void aml_device_begin(struct aml *a, const char *path)
{
	static const uint8_t op[] = {AML_EXT_OP_PREFIX, AML_DEVICE_OP};

	aml_bytes(a, op, sizeof(op));
	open_object(a, false);
	aml_namestring(a, path);
}

void aml_package_begin(struct aml *a, unsigned int count)
{
	if (count > AML_PACKAGE_MAX_ELEMENTS)
		fail(a, -EINVAL);
	aml_byte(a, AML_PACKAGE_OP);
	open_object(a, false);
	aml_byte(a, (uint8_t)count); /* NumElements */
}

void aml_buffer_begin(struct aml *a)
{
	aml_byte(a, AML_BUFFER_OP);
	open_object(a, true);
}

void aml_end(struct aml *a)
{
	uint8_t b[9];
	size_t start;
	uint32_t value;

	if (a->depth == 0) {
		fail(a, -EINVAL);
		return;
	}
	a->depth--;
	start = a->open[a->depth].start;
	if (a->open[a->depth].buffer) /* BufferSize, then the bytes */
		insert(a, start, b, encode_integer(a->len - start, b));
	value = aml_pkglength_for(a->len - start);
	if (!value) {
		fail(a, -EINVAL);
		return;
	}
	insert(a, start, b, aml_pkglength_encode(value, b));
}

void aml_restemplate_begin(struct aml *a)
{
	aml_buffer_begin(a);
}

void aml_restemplate_end(struct aml *a)
{
	static const uint8_t end_tag[] = {RES_END_TAG, 0x00};

	if (a->depth == 0 || !a->open[a->depth - 1].buffer) {
		fail(a, -EINVAL);
		return;
	}
	aml_bytes(a, end_tag, sizeof(end_tag));
	aml_end(a);
}

void aml_res_io(struct aml *a, uint16_t min, uint16_t max, uint8_t align,
		uint8_t len)
{
	aml_byte(a, RES_IO);
	aml_byte(a, RES_IO_DECODE16);
	aml_le(a, min, 2);
	aml_le(a, max, 2);
	aml_byte(a, align);
	aml_byte(a, len);
}

/*
 * Word/DWord/QWord Address Space Descriptor (@width 2, 4 or 8 bytes per
 * field) for [@min, @max], MinFixed and MaxFixed, positive decode.
 */
static void res_address(struct aml *a, unsigned int width, uint8_t space,
			uint8_t general, uint8_t specific, uint64_t min,
			uint64_t max)
{
	uint8_t tag = RES_QWORD_ADDR;
	uint64_t len = max - min + 1;

	if (width == 2)
		tag = RES_WORD_ADDR;
	else if (width == 4)
		tag = RES_DWORD_ADDR;
	if (max < min || (width < 8 && len >> (8 * width))) {
		fail(a, -EINVAL);
		return;
	}
	aml_byte(a, tag);
	aml_le(a, RES_ADDR_FIXED + RES_ADDR_FIELDS * width, 2);
	aml_byte(a, space);
	aml_byte(a, general | RES_MIN_FIXED | RES_MAX_FIXED);
	aml_byte(a, specific);
	aml_le(a, 0, width); /* granularity */
	aml_le(a, min, width);
	aml_le(a, max, width);
	aml_le(a, 0, width); /* translation offset */
	aml_le(a, len, width);
}

void aml_res_word_bus_number(struct aml *a, uint16_t min, uint16_t max)
{
	res_address(a, 2, RES_SPACE_BUS, 0, 0, min, max);
}

void aml_res_word_io(struct aml *a, uint16_t min, uint16_t max)
{
	res_address(a, 2, RES_SPACE_IO, 0, RES_IO_ENTIRE_RANGE, min, max);
}

void aml_res_memory(struct aml *a, bool producer, uint64_t base, uint64_t len)
{
	uint64_t max = base + len - 1;

	if (len == 0 || max < base) {
		fail(a, -EINVAL);
		return;
	}
	res_address(a, max <= UINT32_MAX ? 4 : 8, RES_SPACE_MEMORY,
		    producer ? 0 : RES_CONSUMER, RES_MEM_READ_WRITE, base, max);
}
