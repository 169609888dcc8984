/*
 * cluster/msg.h - the wire framing of cluster messages: a fixed 12-byte
 * little-endian header (magic "DVM1", payload length, type, flags) followed
 * by the payload. The encoder writes headers; the decoder is incremental:
 * it is fed a byte stream in arbitrary chunks and yields whole messages,
 * refusing anything that is not a well-formed header of a known type with
 * a payload within its limit. The limit is per decoder so a connection that
 * has not authenticated yet can be held to handshake-sized messages.
 */
#ifndef DVMM_CLUSTER_MSG_H
#define DVMM_CLUSTER_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/transport.h"
#include "util/err.h"

#define MSG_HDR_SIZE 12
#define MSG_MAGIC 0x314d5644u /* "DVM1" in little-endian byte order */

/* A decoded message; payload stays valid until the next msg_decode call. */
struct msg {
	uint16_t type;
	uint16_t flags;
	uint32_t len;
	const uint8_t *payload;
};

struct msg_decoder {
	uint32_t limit;		   /* largest payload accepted */
	uint8_t hdr[MSG_HDR_SIZE]; /* the header being gathered */
	size_t hdr_have;
	struct msg cur; /* header of the message in progress */
	uint8_t *buf;	/* its payload when split across chunks */
	size_t buf_cap;
	uint32_t buf_have;
	bool failed; /* sticky: a bad header was seen */
};

/* True for the types a peer may put on the wire. */
bool msg_type_known(uint16_t type);

/* Write the header for a @len-byte payload of @type into @out. */
void msg_encode_hdr(uint8_t out[MSG_HDR_SIZE], uint16_t type, uint32_t len);

/*
 * Encode header and payload into @out (of @cap bytes). Returns the total
 * size, or -EMSGSIZE (payload over MSG_MAX_PAYLOAD), -ENOBUFS (@cap too
 * small) or -EINVAL (unknown type).
 */
int msg_encode(void *out, size_t cap, uint16_t type, const void *payload,
	       uint32_t len);

/*
 * Copy peer-supplied text into @dst (@cap bytes, NUL-terminated), with
 * anything but printable ASCII replaced by '?'; returns @dst.
 */
char *msg_printable(char *dst, size_t cap, const void *src, uint32_t len);

void msg_decoder_init(struct msg_decoder *d, uint32_t limit);
/* Raise or lower the payload limit (applies to headers not yet decoded). */
void msg_decoder_set_limit(struct msg_decoder *d, uint32_t limit);
void msg_decoder_free(struct msg_decoder *d);

/*
 * Consume bytes from @in (@len of them) until one message is complete or
 * the input is used up; *@used says how many were consumed. Returns 1 with
 * *@out filled when a message is complete, 0 when more input is needed, or
 * a negative errno (-EPROTO bad header, -EMSGSIZE over the limit, -ENOMEM)
 * with a one-line reason in @e; after an error the decoder refuses all
 * further input. The caller loops while input remains.
 */
int msg_decode(struct msg_decoder *d, const void *in, size_t len, size_t *used,
	       struct msg *out, struct err *e);

/*
 * Receiving the rest of a large payload in place, saving a copy: when a
 * payload is partly gathered, returns how many bytes it still lacks and
 * points *@dst at where they go; 0 otherwise. After writing @n (no more
 * than that) bytes there, msg_decoder_commit returns 1 with *@out filled
 * when the message is complete, else 0.
 */
size_t msg_decoder_direct(struct msg_decoder *d, uint8_t **dst);
int msg_decoder_commit(struct msg_decoder *d, size_t n, struct msg *out);

#endif
