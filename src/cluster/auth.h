/*
 * cluster/auth.h - the handshake that turns a TCP connection into an
 * authenticated peer, as pure functions over message payloads (no sockets,
 * no clock: the caller moves the bytes and enforces the deadline).
 *
 * Both sides send HELLO {version, node id, cluster id, 32-byte nonce} at
 * once. On the peer's HELLO each side sends
 *   AUTH = HMAC-SHA256(secret, "dvmm-auth-v1" || cluster id || sender id ||
 *                      receiver id || receiver nonce || sender nonce)
 * (ids as 16-bit little-endian), and on a peer AUTH that verifies (constant
 * time) it sends AUTH_OK. The peer's AUTH_OK completes the handshake: by
 * then each side has proved knowledge of the secret over fresh nonces of
 * both sides. Node i dials every node j < i, so an incoming peer must have
 * a higher id than ours and an outgoing one must be the node we dialled;
 * this also keeps a third party from relaying two incoming handshakes into
 * each other. Each handshake message is accepted once, in order; anything
 * else ends the handshake with a one-line reason.
 *
 * Wire layouts (little-endian): HELLO = u16 version, u16 node id,
 * u8 cluster_id[16], u8 nonce[32] (52 bytes); AUTH = u8 mac[32];
 * AUTH_OK = empty. A GOODBYE before authentication carries the peer's
 * reason for refusing us.
 */
#ifndef DVMM_CLUSTER_AUTH_H
#define DVMM_CLUSTER_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster/transport.h"
#include "util/err.h"

#define AUTH_NONCE_LEN 32
#define AUTH_MAC_LEN 32
#define AUTH_HELLO_LEN (4 + CLUSTER_ID_LEN + AUTH_NONCE_LEN)
#define AUTH_MAX_PAYLOAD 128 /* largest message accepted before auth */
#define AUTH_SECRET_MIN 16
#define AUTH_TIMEOUT_MS 5000 /* default handshake deadline */

/* What a node knows about itself; shared by all its handshakes. */
struct auth_cfg {
	int self;
	int nnodes;
	uint16_t version;
	uint8_t cluster_id[CLUSTER_ID_LEN];
	uint8_t secret[CLUSTER_SECRET_MAX];
	size_t secret_len;
};

/* One handshake in progress. */
struct auth_session {
	const struct auth_cfg *cfg;
	int expect;	   /* outgoing: the node we dialled; -1 incoming */
	int peer;	   /* the id from its HELLO; -1 before */
	unsigned int seen; /* AUTH_SEEN_* */
	bool failed;	   /* sticky: refuses everything after an error */
	uint8_t nonce[AUTH_NONCE_LEN];
	uint8_t peer_nonce[AUTH_NONCE_LEN];
};

#define AUTH_SEEN_HELLO 1u
#define AUTH_SEEN_AUTH 2u
#define AUTH_SEEN_OK 4u

/* A handshake message to send; type 0 means nothing to send. */
struct auth_out {
	uint16_t type;
	uint32_t len;
	uint8_t buf[AUTH_MAX_PAYLOAD];
};

/* Nodes that may not connect now: bit j set for node j. */
struct auth_peers {
	uint32_t up;   /* connected */
	uint32_t gone; /* was connected and is lost for good */
};

/* auth_recv results besides negative errnos. */
#define AUTH_MORE 0
#define AUTH_DONE 1

/*
 * Start a handshake with a fresh random nonce; @expect is the node dialled,
 * or -1 for an incoming connection. Returns 0 or -EIO (no randomness).
 */
int auth_init(struct auth_session *s, const struct auth_cfg *cfg, int expect);

/* Our HELLO, to send first. */
void auth_hello(const struct auth_session *s, struct auth_out *out);

/*
 * Feed one message the peer sent; @peers says which nodes may not connect
 * now. Returns AUTH_MORE
 * (send @out if its type is set), AUTH_DONE (the peer is s->peer), or a
 * negative errno with the reason in @e: -EPROTO (wrong version, malformed
 * or out-of-order message), -EACCES (wrong cluster or bad HMAC), -ERANGE
 * (node id out of range), -EINVAL (our own id, or a peer dialling the
 * wrong way), -EEXIST (a node already connected or gone), -EXDEV (not the node we
 * dialled), -ECONNREFUSED (the peer refused us).
 */
int auth_recv(struct auth_session *s, uint16_t type, const void *payload,
	      uint32_t len, const struct auth_peers *peers,
	      struct auth_out *out, struct err *e);

/* Wipe a session's nonces. */
void auth_done(struct auth_session *s);

#endif
