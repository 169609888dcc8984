/*
 * virtio/blk_remote.h - the remote block protocol: a disk image served over
 * TCP by `dvmm disk-serve` (the server half) to a virtio-blk device whose
 * backend is on another host (the client half, used by blk.c).
 *
 * A connection starts with a mutual HMAC-SHA256 challenge-response over
 * the shared secret (as the migration's): the server sends its hello
 * ("DVMM-BLK", version, a nonce), the client its hello and a proof, the
 * server its proof. Both then derive a session key from the secret and the
 * two nonces. Every message after that is a 32-byte header, a payload and
 * an HMAC (session key) over the direction, a per-direction sequence
 * number, the header and the payload; nothing is used before its MAC and
 * its bounds are checked. Requests: READ(offset, length), WRITE(offset,
 * data), FLUSH (fdatasync), DISCARD(offset, length) (punch a hole),
 * SIZE; every request carries an id the reply repeats, so the client may
 * keep several in flight; the server answers them in order.
 */
#ifndef DVMM_VIRTIO_BLK_REMOTE_H
#define DVMM_VIRTIO_BLK_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/err.h"

#define BRP_VERSION 1
#define BRP_HDR_LEN 32
#define BRP_MAC_LEN 32
#define BRP_KEY_MIN 16
#define BRP_KEY_MAX 64
#define BRP_MAX_DATA (1u << 20) /* bytes in one READ or WRITE */
#define BRP_IO_TIMEOUT_MS 10000 /* the rest of a message once begun */

enum brp_type {
	BRP_READ = 1,
	BRP_WRITE = 2,
	BRP_FLUSH = 3,
	BRP_DISCARD = 4,
	BRP_SIZE = 5,
};

enum brp_status {
	BRP_S_OK = 0,
	BRP_S_IOERR = 1,  /* the host's I/O failed */
	BRP_S_RANGE = 2,  /* outside the image */
	BRP_S_UNSUPP = 3, /* e.g. a write to a read-only image */
};

/* Request flags. */
#define BRP_F_FUA 1u /* WRITE: durable when answered (RWF_DSYNC) */
/* SIZE reply flags. */
#define BRP_F_CAN_DISCARD 1u
#define BRP_F_READONLY 2u

/*
 * One message. Requests: READ and DISCARD use offset and length, WRITE
 * offset and its payload (length = paylen), FLUSH and SIZE nothing.
 * Replies repeat type and id, carry a status; a good READ reply carries
 * the data (paylen = the length asked), a SIZE reply the image's size in
 * bytes in length and BRP_F_* in flags.
 */
struct brp_msg {
	uint8_t type;
	uint8_t status;
	uint16_t flags;
	uint32_t paylen;
	uint64_t id;
	uint64_t offset;
	uint64_t length;
};

/* One direction's keys and counters of an authenticated connection. */
struct brp_chan {
	uint8_t key[32]; /* session key */
	uint64_t send_seq, recv_seq;
	uint8_t send_dir, recv_dir; /* 'C' client to server, 'S' back */
};

/* Header bytes of @m. */
void brp_pack_hdr(const struct brp_msg *m, uint8_t hdr[BRP_HDR_LEN]);
/*
 * Parse and check a header's structure: a known type, reserved bits zero,
 * paylen at most BRP_MAX_DATA and as the type allows (requests: WRITE's
 * paylen = length <= BRP_MAX_DATA, READ's length <= BRP_MAX_DATA; replies:
 * payload only on a READ). 0, or -EPROTO / -EMSGSIZE with a reason.
 */
int brp_parse_hdr(const uint8_t hdr[BRP_HDR_LEN], bool reply, struct brp_msg *m,
		  char *why, size_t whylen);
/* The MAC of the next message sent on @c (advances send_seq). */
void brp_seal(struct brp_chan *c, const uint8_t hdr[BRP_HDR_LEN],
	      const struct iovec *pay, unsigned int npay,
	      uint8_t mac[BRP_MAC_LEN]);
/* Check the MAC of the next message received; advances recv_seq if good,
 * -EBADMSG otherwise. */
int brp_open(struct brp_chan *c, const uint8_t hdr[BRP_HDR_LEN],
	     const uint8_t *pay, size_t len, const uint8_t mac[BRP_MAC_LEN]);
/*
 * Server: may request @m run on an image of @size bytes? BRP_S_OK, or the
 * status to answer with (BRP_S_RANGE outside it, BRP_S_UNSUPP a write or
 * discard on a read-only image or a discard it cannot punch).
 */
int brp_check_request(const struct brp_msg *m, uint64_t size, bool readonly,
		      bool can_discard);
/*
 * Encode one whole message (header, payload, MAC) into @out (at least
 * BRP_HDR_LEN + paylen + BRP_MAC_LEN bytes); returns its length.
 */
size_t brp_encode(struct brp_chan *c, const struct brp_msg *m,
		  const void *payload, uint8_t *out);
/*
 * Decode one message at the start of @buf (@len bytes): -EAGAIN if it is
 * not all there yet, -EPROTO / -EMSGSIZE if the header is bad, -EBADMSG if
 * the MAC is. On success *used is its length and *payload points into
 * @buf.
 */
int brp_decode(struct brp_chan *c, bool reply, const uint8_t *buf, size_t len,
	       struct brp_msg *m, const uint8_t **payload, size_t *used,
	       char *why, size_t whylen);

/* Both ends of the handshake on a connected socket; fill @c. */
int brp_handshake_client(int fd, const uint8_t *secret, size_t secret_len,
			 struct brp_chan *c, unsigned int timeout_ms,
			 struct err *e);
int brp_handshake_server(int fd, const uint8_t *secret, size_t secret_len,
			 struct brp_chan *c, struct err *e);

/* ---- the server ---- */

struct brp_image {
	int fd;
	uint64_t size; /* bytes */
	bool readonly;
	bool can_discard;
};

/*
 * Serve one client on @fd until it goes (0), the handshake fails or the
 * protocol breaks (negative errno, reason in @e) or @stop_fd becomes
 * readable (-EINTR). Requests run in order. *@authed: the handshake passed.
 */
int brp_serve(int fd, const struct brp_image *img, const uint8_t *secret,
	      size_t secret_len, int stop_fd, bool *authed, struct err *e);

/* ---- the client ---- */

struct brp_client;

/*
 * A request finished: @res is the bytes moved (READ, WRITE), 0 (FLUSH,
 * DISCARD) or a negative errno (-EIO: the host failed it or the
 * connection broke). A READ's data is at @data (valid during the call).
 * Called from the client's receive thread, never under a lock of the
 * client's.
 */
typedef void (*brp_done_fn)(void *opaque, uint64_t id, int res,
			    const uint8_t *data, uint32_t len);

/*
 * Connect to @uri, authenticate and ask the size, retrying for up to
 * @timeout_ms while nothing answers (the agent may still wait for the
 * image's lock). No threads yet.
 */
int brp_client_connect(struct brp_client **out, const char *uri,
		       const uint8_t *secret, size_t secret_len,
		       unsigned int timeout_ms, struct err *e);
uint64_t brp_client_size(const struct brp_client *c);
unsigned int brp_client_flags(const struct brp_client *c);
/* Start the send and receive threads; completions go to @done. */
int brp_client_start(struct brp_client *c, brp_done_fn done, void *opaque,
		     struct err *e);
/*
 * Queue a request (@id below BRP_CLIENT_IDS, at most one request in flight
 * per id). WRITE's data is gathered from @iov (@niov segments, @length
 * bytes) when it is sent: it must stay valid until the completion. -EIO if
 * the connection is gone (no completion then).
 */
#define BRP_CLIENT_IDS 256
int brp_client_submit(struct brp_client *c, uint8_t type, uint16_t flags,
		      uint64_t id, uint64_t offset, uint64_t length,
		      const struct iovec *iov, unsigned int niov);
/*
 * One synchronous request beside the queued ones (one at a time): queued
 * by sync_start in order with the others, waited for by sync_wait (a READ
 * lands in @buf). 0 or a negative errno.
 */
struct brp_sync {
	uint8_t type;
	uint64_t offset, length;
	uint8_t *buf;
	int res;
	bool done;
};
int brp_client_sync_start(struct brp_client *c, struct brp_sync *s);
int brp_client_sync_wait(struct brp_client *c, struct brp_sync *s);
/* Stop the threads (outstanding requests complete with -EIO), close. */
void brp_client_close(struct brp_client *c);

#endif
