/*
 * cluster/msg.c - encoding and incremental decoding of the 12-byte framed
 * messages described in msg.h. Every header field a peer sends is checked
 * before anything is allocated for it; a payload that arrives whole inside
 * one input chunk is handed out in place, only split payloads are copied.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/msg.h"

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	put_le16(p, (uint16_t)v);
	put_le16(p + 2, (uint16_t)(v >> 16));
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_le32(const uint8_t *p)
{
	return get_le16(p) | (uint32_t)get_le16(p + 2) << 16;
}

bool msg_type_known(uint16_t type)
{
	return (type >= MSG_HELLO && type <= MSG_GOODBYE) ||
	       type >= MSG_USER_BASE;
}

void msg_encode_hdr(uint8_t out[MSG_HDR_SIZE], uint16_t type, uint32_t len)
{
	put_le32(out, MSG_MAGIC);
	put_le32(out + 4, len);
	put_le16(out + 8, type);
	put_le16(out + 10, 0);
}

int msg_encode(void *out, size_t cap, uint16_t type, const void *payload,
	       uint32_t len)
{
	if (!msg_type_known(type))
		return -EINVAL;
	if (len > MSG_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (cap < MSG_HDR_SIZE + (size_t)len)
		return -ENOBUFS;
	msg_encode_hdr(out, type, len);
	if (len)
		memcpy((uint8_t *)out + MSG_HDR_SIZE, payload, len);
	return (int)(MSG_HDR_SIZE + len);
}

char *msg_printable(char *dst, size_t cap, const void *src, uint32_t len)
{
	const uint8_t *p = src;
	size_t i, n = len < cap ? len : cap - 1;

	for (i = 0; i < n; i++)
		dst[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
	dst[n] = '\0';
	return dst;
}

void msg_decoder_init(struct msg_decoder *d, uint32_t limit)
{
	memset(d, 0, sizeof(*d));
	d->limit = limit;
}

void msg_decoder_set_limit(struct msg_decoder *d, uint32_t limit)
{
	d->limit = limit;
}

void msg_decoder_free(struct msg_decoder *d)
{
	free(d->buf);
	d->buf = NULL;
	d->buf_cap = 0;
}

/* Check the gathered header; fills d->cur. Failures are sticky. */
static int check_hdr(struct msg_decoder *d, struct err *e)
{
	uint32_t magic = get_le32(d->hdr);
	struct msg *m = &d->cur;

	m->len = get_le32(d->hdr + 4);
	m->type = get_le16(d->hdr + 8);
	m->flags = get_le16(d->hdr + 10);
	d->failed = true;
	if (magic != MSG_MAGIC)
		return err_set(e, -EPROTO,
			       "bad magic 0x%08x (not a dvmm peer?)", magic);
	if (!msg_type_known(m->type))
		return err_set(e, -EPROTO, "unknown message type %u", m->type);
	if (m->flags)
		return err_set(e, -EPROTO,
			       "unsupported flags 0x%x in a type %u message",
			       m->flags, m->type);
	if (m->len > d->limit)
		return err_set(
			e, -EMSGSIZE,
			"type %u message of %u bytes is over the %u-byte limit",
			m->type, m->len, d->limit);
	d->failed = false;
	return 0;
}

/* Gather header bytes; returns 1 once the header is complete and valid. */
static int take_hdr(struct msg_decoder *d, const uint8_t *in, size_t len,
		    size_t *used, struct err *e)
{
	size_t n = MSG_HDR_SIZE - d->hdr_have;
	int rc;

	if (n > len)
		n = len;
	memcpy(d->hdr + d->hdr_have, in, n);
	d->hdr_have += n;
	*used = n;
	if (d->hdr_have < MSG_HDR_SIZE)
		return 0;
	rc = check_hdr(d, e);
	if (rc)
		return rc;
	d->buf_have = 0;
	return 1;
}

static int reserve(struct msg_decoder *d, uint32_t len, struct err *e)
{
	uint8_t *nb;

	if (d->buf_cap >= len)
		return 0;
	nb = realloc(d->buf, len);
	if (!nb) {
		d->failed = true;
		return err_set(e, -ENOMEM,
			       "out of memory for a %u-byte message", len);
	}
	d->buf = nb;
	d->buf_cap = len;
	return 0;
}

/* The message is complete: hand it out and get ready for the next. */
static int yield(struct msg_decoder *d, const uint8_t *payload, struct msg *out)
{
	*out = d->cur;
	out->payload = payload;
	d->hdr_have = 0;
	d->buf_have = 0;
	return 1;
}

/* Gather payload bytes of the current message. */
static int take_payload(struct msg_decoder *d, const uint8_t *in, size_t len,
			size_t *used, struct msg *out, struct err *e)
{
	uint32_t want = d->cur.len - d->buf_have;
	int rc;

	if (d->buf_have == 0 && len >= want) {
		*used = want; /* whole payload in this chunk */
		return yield(d, in, out);
	}
	rc = reserve(d, d->cur.len, e);
	if (rc)
		return rc;
	if (len > want)
		len = want;
	memcpy(d->buf + d->buf_have, in, len);
	d->buf_have += (uint32_t)len;
	*used = len;
	if (d->buf_have < d->cur.len)
		return 0;
	return yield(d, d->buf, out);
}

int msg_decode(struct msg_decoder *d, const void *in, size_t len, size_t *used,
	       struct msg *out, struct err *e)
{
	const uint8_t *p = in;
	size_t n = 0;
	int rc;

	*used = 0;
	if (d->failed)
		return err_set(e, -EPROTO, "stream already failed");
	if (d->hdr_have < MSG_HDR_SIZE) {
		rc = take_hdr(d, p, len, &n, e);
		*used = n;
		if (rc <= 0)
			return rc;
		p += n;
		len -= n;
	}
	rc = take_payload(d, p, len, &n, out, e);
	*used += n;
	return rc;
}

size_t msg_decoder_direct(struct msg_decoder *d, uint8_t **dst)
{
	if (d->failed || d->hdr_have < MSG_HDR_SIZE || !d->buf_have)
		return 0;
	*dst = d->buf + d->buf_have;
	return d->cur.len - d->buf_have;
}

int msg_decoder_commit(struct msg_decoder *d, size_t n, struct msg *out)
{
	d->buf_have += (uint32_t)n;
	if (d->buf_have < d->cur.len)
		return 0;
	return yield(d, d->buf, out);
}
