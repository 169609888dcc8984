/*
 * machine/aml.h - a small encoder for ACPI Machine Language (the bytecode in
 * the DSDT), enough to describe devices: names, integers, strings,
 * packages, buffers, scopes, devices and resource templates.
 *
 * Objects with a PkgLength (Scope, Device, Package, Buffer) are opened with
 * a *_begin call and closed with aml_end() (or aml_restemplate_end()); the
 * length is inserted when the object is closed, in its shortest encoding.
 * The builder never holds more bytes than the finished AML, so a buffer of
 * exactly the measured size is enough.
 *
 * Errors are sticky: the first one is kept in @err and later calls do
 * nothing but count bytes. With a NULL buffer the builder only measures.
 */
#ifndef DVMM_MACHINE_AML_H
#define DVMM_MACHINE_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AML_MAX_DEPTH 16
#define AML_PKGLENGTH_MAX ((1u << 28) - 1) /* 4-byte encoding */
#define AML_PACKAGE_MAX_ELEMENTS 255	   /* Package, not VarPackage */

struct aml {
	uint8_t *buf; /* NULL: measure only */
	size_t cap;
	size_t len; /* bytes of AML so far (also when not written) */
	int err;    /* 0, -ENOSPC (buffer too small), -EINVAL (misuse) */
	unsigned int depth;
	struct {
		size_t start; /* where the object's PkgLength goes */
		bool buffer;  /* a Buffer: BufferSize goes in front too */
	} open[AML_MAX_DEPTH];
};

/* Start building into @buf (@cap bytes), or measuring when @buf is NULL. */
void aml_init(struct aml *a, uint8_t *buf, size_t cap);
/* The AML's length, or the first error (-EINVAL if an object is open). */
ssize_t aml_finish(const struct aml *a);

/*
 * Encode PkgLength @value (which counts the encoding's own bytes) into
 * @out. Returns the number of bytes (1-4), or 0 when above
 * AML_PKGLENGTH_MAX.
 */
unsigned int aml_pkglength_encode(uint32_t value, uint8_t out[4]);
/*
 * The PkgLength value for @content_len bytes following it: content plus
 * the shortest encoding that can hold the sum. 0 when too large.
 */
uint32_t aml_pkglength_for(size_t content_len);

/* Raw bytes. */
void aml_bytes(struct aml *a, const void *p, size_t n);
void aml_byte(struct aml *a, uint8_t v);

/* Zero, One, BytePrefix, WordPrefix, DWordPrefix or QWordPrefix. */
void aml_integer(struct aml *a, uint64_t v);
/* String: printable ASCII, NUL-terminated in the AML. */
void aml_string(struct aml *a, const char *s);
/*
 * NameString from "PCI0", "\\_SB.PCI0", "^^FOO" or "\\" (segments of 1-4
 * characters [A-Z0-9_], not starting with a digit, padded with '_').
 */
void aml_namestring(struct aml *a, const char *path);
/* EISAID("PNP0A08"): the compressed 32-bit id as an integer. */
void aml_eisaid(struct aml *a, const char *id);
/* The 32-bit compressed form of an EISA id, or 0 if @id is malformed. */
uint32_t aml_eisaid_value(const char *id);

/* Name (@path, ...): the object that follows is its value. */
void aml_name(struct aml *a, const char *path);
void aml_name_integer(struct aml *a, const char *path, uint64_t v);
void aml_name_eisaid(struct aml *a, const char *path, const char *id);

/* Scope (@path) { ... }, Device (@path) { ... }. */
void aml_scope_begin(struct aml *a, const char *path);
void aml_device_begin(struct aml *a, const char *path);
/* Package (@count) { ... }: the caller emits exactly @count objects. */
void aml_package_begin(struct aml *a, unsigned int count);
/* Buffer () { bytes }: the size is the bytes emitted before aml_end. */
void aml_buffer_begin(struct aml *a);
/* Close the innermost open Scope, Device, Package or Buffer. */
void aml_end(struct aml *a);

/*
 * ResourceTemplate () { ... }: a Buffer of resource descriptors closed by
 * an End Tag (checksum 0: "treat as valid").
 */
void aml_restemplate_begin(struct aml *a);
void aml_restemplate_end(struct aml *a);

/* Resource descriptors, for inside a ResourceTemplate. */
/* IO (Decode16, @min, @max, @align, @len) */
void aml_res_io(struct aml *a, uint16_t min, uint16_t max, uint8_t align,
		uint8_t len);
/* WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, ...) */
void aml_res_word_bus_number(struct aml *a, uint16_t min, uint16_t max);
/* WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange) */
void aml_res_word_io(struct aml *a, uint16_t min, uint16_t max);
/*
 * [@len bytes at @base] of read-write, non-cacheable memory, MinFixed,
 * MaxFixed, PosDecode: DWordMemory when it ends below 4 GiB, else
 * QWordMemory. @producer: a bridge's window (ResourceProducer) rather than
 * a range the device itself uses (ResourceConsumer). @len must be > 0.
 */
void aml_res_memory(struct aml *a, bool producer, uint64_t base, uint64_t len);

#endif
