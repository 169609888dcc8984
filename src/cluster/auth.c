/*
 * cluster/auth.c - the handshake state machine of auth.h: HELLO parsing and
 * checks, the AUTH HMAC (libsodium's HMAC-SHA256 with a variable-length
 * key, compared in constant time) and the one-message-each ordering rules.
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "cluster/auth.h"
#include "cluster/msg.h"

#define AUTH_LABEL "dvmm-auth-v1"
#define AUTH_REASON_MAX 120

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

int auth_init(struct auth_session *s, const struct auth_cfg *cfg, int expect)
{
	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	s->expect = expect;
	s->peer = -1;
	if (sodium_init() < 0)
		return -EIO;
	randombytes_buf(s->nonce, sizeof(s->nonce));
	return 0;
}

void auth_done(struct auth_session *s)
{
	sodium_memzero(s->nonce, sizeof(s->nonce));
	sodium_memzero(s->peer_nonce, sizeof(s->peer_nonce));
}

void auth_hello(const struct auth_session *s, struct auth_out *out)
{
	uint8_t *p = out->buf;

	out->type = MSG_HELLO;
	out->len = AUTH_HELLO_LEN;
	put_le16(p, s->cfg->version);
	put_le16(p + 2, (uint16_t)s->cfg->self);
	memcpy(p + 4, s->cfg->cluster_id, CLUSTER_ID_LEN);
	memcpy(p + 4 + CLUSTER_ID_LEN, s->nonce, AUTH_NONCE_LEN);
}

/* The MAC that @sender sends to @receiver over their nonces. */
static void auth_mac(const struct auth_cfg *cfg, int sender, int receiver,
		     const uint8_t *receiver_nonce, const uint8_t *sender_nonce,
		     uint8_t mac[AUTH_MAC_LEN])
{
	crypto_auth_hmacsha256_state st;
	uint8_t ids[4];

	put_le16(ids, (uint16_t)sender);
	put_le16(ids + 2, (uint16_t)receiver);
	crypto_auth_hmacsha256_init(&st, cfg->secret, cfg->secret_len);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)AUTH_LABEL,
				      strlen(AUTH_LABEL));
	crypto_auth_hmacsha256_update(&st, cfg->cluster_id, CLUSTER_ID_LEN);
	crypto_auth_hmacsha256_update(&st, ids, sizeof(ids));
	crypto_auth_hmacsha256_update(&st, receiver_nonce, AUTH_NONCE_LEN);
	crypto_auth_hmacsha256_update(&st, sender_nonce, AUTH_NONCE_LEN);
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_memzero(&st, sizeof(st));
}

/* Who the HELLO claims to be, checked against what we know. */
static int check_peer_id(const struct auth_session *s, int id,
			 const struct auth_peers *peers, struct err *e)
{
	const struct auth_cfg *cfg = s->cfg;

	if (id >= cfg->nnodes)
		return err_set(e, -ERANGE,
			       "node id %d out of range (cluster of %d nodes)",
			       id, cfg->nnodes);
	if (id == cfg->self)
		return err_set(e, -EINVAL, "peer claims our own node id %d",
			       id);
	if (s->expect >= 0 && id != s->expect)
		return err_set(e, -EXDEV,
			       "dialled node %d but node %d answered",
			       s->expect, id);
	if (s->expect < 0 && id < cfg->self)
		return err_set(
			e, -EINVAL,
			"node %d dialled in, but lower ids are dialled by us",
			id);
	if (peers && (peers->up >> id & 1))
		return err_set(e, -EEXIST, "node %d is already connected", id);
	if (peers && (peers->gone >> id & 1))
		return err_set(e, -EEXIST,
			       "node %d has already left the cluster", id);
	return 0;
}

static int recv_hello(struct auth_session *s, const uint8_t *p, uint32_t len,
		      const struct auth_peers *peers, struct auth_out *out,
		      struct err *e)
{
	const struct auth_cfg *cfg = s->cfg;
	uint16_t version;
	int id, rc;

	if (len < 2)
		return err_set(e, -EPROTO, "malformed HELLO (%u bytes)", len);
	version = get_le16(p);
	if (version != cfg->version)
		return err_set(e, -EPROTO,
			       "peer speaks protocol version %u, we speak %u",
			       version, cfg->version);
	if (len != AUTH_HELLO_LEN)
		return err_set(e, -EPROTO, "malformed HELLO (%u bytes)", len);
	if (memcmp(p + 4, cfg->cluster_id, CLUSTER_ID_LEN))
		return err_set(e, -EACCES, "peer belongs to another cluster");
	id = get_le16(p + 2);
	rc = check_peer_id(s, id, peers, e);
	if (rc)
		return rc;
	s->peer = id;
	memcpy(s->peer_nonce, p + 4 + CLUSTER_ID_LEN, AUTH_NONCE_LEN);
	out->type = MSG_AUTH;
	out->len = AUTH_MAC_LEN;
	auth_mac(cfg, cfg->self, id, s->peer_nonce, s->nonce, out->buf);
	return AUTH_MORE;
}

static int recv_auth(struct auth_session *s, const uint8_t *p, uint32_t len,
		     struct auth_out *out, struct err *e)
{
	uint8_t want[AUTH_MAC_LEN];
	int bad;

	if (len != AUTH_MAC_LEN)
		return err_set(e, -EPROTO, "malformed AUTH (%u bytes)", len);
	auth_mac(s->cfg, s->peer, s->cfg->self, s->nonce, s->peer_nonce, want);
	bad = sodium_memcmp(want, p, AUTH_MAC_LEN);
	sodium_memzero(want, sizeof(want));
	if (bad)
		return err_set(e, -EACCES,
			       "node %d failed authentication (wrong cluster "
			       "secret or replayed AUTH)",
			       s->peer);
	out->type = MSG_AUTH_OK;
	out->len = 0;
	return AUTH_MORE;
}

/* A GOODBYE before authentication: the peer refused us; say why. */
static int recv_refusal(const uint8_t *p, uint32_t len, struct err *e)
{
	char why[AUTH_REASON_MAX];

	msg_printable(why, sizeof(why), p, len);
	return err_set(e, -ECONNREFUSED, "peer refused us: %s",
		       len ? why : "no reason given");
}

static const char *type_name(uint16_t type)
{
	switch (type) {
	case MSG_HELLO:
		return "HELLO";
	case MSG_AUTH:
		return "AUTH";
	case MSG_AUTH_OK:
		return "AUTH_OK";
	default:
		return "message";
	}
}

/* Each handshake message once, HELLO before AUTH before AUTH_OK. */
static int check_order(const struct auth_session *s, uint16_t type,
		       struct err *e)
{
	unsigned int need, bit;

	switch (type) {
	case MSG_HELLO:
		need = 0, bit = AUTH_SEEN_HELLO;
		break;
	case MSG_AUTH:
		need = AUTH_SEEN_HELLO, bit = AUTH_SEEN_AUTH;
		break;
	case MSG_AUTH_OK:
		need = AUTH_SEEN_HELLO | AUTH_SEEN_AUTH, bit = AUTH_SEEN_OK;
		break;
	default:
		return err_set(
			e, -EPROTO,
			"unexpected message type %u before authentication",
			type);
	}
	if (s->seen & bit)
		return err_set(e, -EPROTO, "second %s in the handshake",
			       type_name(type));
	if ((s->seen & need) != need)
		return err_set(e, -EPROTO, "%s out of order in the handshake",
			       type_name(type));
	return 0;
}

static int dispatch(struct auth_session *s, uint16_t type, const uint8_t *p,
		    uint32_t len, const struct auth_peers *peers,
		    struct auth_out *out, struct err *e)
{
	int rc;

	if (type == MSG_GOODBYE)
		return recv_refusal(p, len, e);
	rc = check_order(s, type, e);
	if (rc)
		return rc;
	switch (type) {
	case MSG_HELLO:
		s->seen |= AUTH_SEEN_HELLO;
		return recv_hello(s, p, len, peers, out, e);
	case MSG_AUTH:
		s->seen |= AUTH_SEEN_AUTH;
		return recv_auth(s, p, len, out, e);
	default:
		s->seen |= AUTH_SEEN_OK;
		if (len)
			return err_set(e, -EPROTO,
				       "malformed AUTH_OK (%u bytes)", len);
		return AUTH_DONE;
	}
}

int auth_recv(struct auth_session *s, uint16_t type, const void *payload,
	      uint32_t len, const struct auth_peers *peers,
	      struct auth_out *out, struct err *e)
{
	int rc;

	out->type = 0;
	out->len = 0;
	if (s->failed)
		return err_set(e, -EPROTO, "handshake already failed");
	rc = dispatch(s, type, payload, len, peers, out, e);
	if (rc < 0) {
		s->failed = true;
		out->type = 0;
	}
	return rc;
}
