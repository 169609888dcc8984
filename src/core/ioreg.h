/*
 * core/ioreg.h - the address-range registry: devices register port-I/O and
 * MMIO ranges with a handler; the vCPU exit path hands each access to the
 * handler that owns the address. The core knows nothing else of devices.
 */
#ifndef DVMM_CORE_IOREG_H
#define DVMM_CORE_IOREG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum io_space { IO_SPACE_PIO = 0, IO_SPACE_MMIO = 1, IO_SPACE_COUNT };

/*
 * Called for an access of @len bytes (1, 2, 4 or 8) at @offset from the
 * start of the registered range. On a read the handler fills @data; on a
 * write it consumes it. @vcpu_id is the accessing vCPU, or -1 for host-side
 * accesses.
 */
typedef void (*io_handler_fn)(void *opaque, uint64_t offset, uint8_t *data,
			      uint32_t len, bool is_write, int vcpu_id);

struct io_range {
	uint64_t base;
	uint64_t len;
	io_handler_fn fn;
	void *opaque;
	const char *name;
};

#define IOREG_MAX_UNKNOWN_LOGGED 64

/*
 * Who takes accesses no range claims (a cluster node forwards them to the
 * node that has the device). Returns true if it took the access.
 */
typedef bool (*ioreg_default_fn)(void *opaque, enum io_space space,
				 uint64_t addr, uint8_t *data, uint32_t len,
				 bool is_write, int vcpu_id);

struct io_registry {
	pthread_rwlock_t lock;
	struct io_range *ranges[IO_SPACE_COUNT]; /* sorted by base */
	size_t count[IO_SPACE_COUNT];
	size_t cap[IO_SPACE_COUNT];
	/* addresses of unclaimed accesses already reported, to log once */
	pthread_mutex_t unknown_lock;
	uint64_t unknown_seen[IO_SPACE_COUNT][IOREG_MAX_UNKNOWN_LOGGED];
	size_t unknown_count[IO_SPACE_COUNT];
	ioreg_default_fn dflt; /* set before the vCPUs run */
	void *dflt_opaque;
};

int ioreg_init(struct io_registry *r);
void ioreg_destroy(struct io_registry *r);

/* 0 on success; -EINVAL for an empty or wrapping range, -EEXIST on overlap. */
int ioreg_register(struct io_registry *r, enum io_space space, uint64_t base,
		   uint64_t len, io_handler_fn fn, void *opaque,
		   const char *name);
/* 0 on success, -ENOENT when no range starts at @base. */
int ioreg_unregister(struct io_registry *r, enum io_space space, uint64_t base);

/*
 * Hand an access to its owner. Returns true if a handler took it. An access
 * that straddles the end of a range is not taken. On false and a read, @data
 * is filled with all-ones (what a bus returns for nothing there).
 */
bool ioreg_dispatch(struct io_registry *r, enum io_space space, uint64_t addr,
		    uint8_t *data, uint32_t len, bool is_write, int vcpu_id);

/* The same, but never handing the access to the default handler. */
bool ioreg_dispatch_local(struct io_registry *r, enum io_space space,
			  uint64_t addr, uint8_t *data, uint32_t len,
			  bool is_write, int vcpu_id);
/* Set the handler of unclaimed accesses (NULL: none). */
void ioreg_set_default(struct io_registry *r, ioreg_default_fn fn,
		       void *opaque);

/*
 * True the first time an unclaimed @addr is seen in @space (so the caller
 * logs it once); false afterwards, and false once the table is full.
 */
bool ioreg_first_unknown(struct io_registry *r, enum io_space space,
			 uint64_t addr);

#endif
