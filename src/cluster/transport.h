/*
 * cluster/transport.h - how dvmm nodes talk: typed, length-prefixed
 * messages between authenticated peers, one connection per pair of nodes,
 * per-peer send queues with back-pressure, heartbeats and failure
 * detection. Code that uses it sees only this interface; the TCP engine
 * (tcp.c) is one implementation, so an RDMA/shared-memory engine can be
 * added without touching the callers.
 */
#ifndef DVMM_CLUSTER_TRANSPORT_H
#define DVMM_CLUSTER_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define CLUSTER_MAX_NODES 16
#define CLUSTER_ID_LEN 16
#define CLUSTER_SECRET_MAX 64
#define CLUSTER_PROTO_VERSION 1
#define MSG_MAX_PAYLOAD (1u << 20)

/* Message types. The transport owns those below MSG_USER_BASE. */
enum msg_type {
	MSG_HELLO = 1, /* handshake: version, cluster id, node id, nonce */
	MSG_AUTH = 2,  /* handshake: HMAC over both nonces */
	MSG_AUTH_OK = 3,
	MSG_HEARTBEAT = 4,
	MSG_GOODBYE = 5, /* orderly close: payload = reason text */
	MSG_USER_BASE = 64,
	MSG_SHUTDOWN = 64,   /* node 0: the VM ended; payload = exit status */
	MSG_STATS_REQ = 65,  /* node 0 asks a peer for its stats */
	MSG_STATS_RESP = 66, /* JSON object */
	MSG_PING = 67,	     /* benchmarks: echoed back as MSG_PONG */
	MSG_PONG = 68,
	MSG_PAUSE = 69,	    /* node 0 -> peer: u8 1 pause / 0 resume */
	MSG_PAUSE_ACK = 70, /* peer -> node 0: i32 result */
	MSG_DSM = 80,	    /* 80-89: guest memory DSM (cluster/dsm.c) */
	MSG_DSM_TOOL = 81,  /* DSM test and benchmark tools' control */
	/* 90-99: the VM across nodes (cluster/vmlink.c) */
	MSG_IO_REQ = 90,      /* port/MMIO access for the device's home */
	MSG_IO_RESP = 91,     /* its answer */
	MSG_CFG_REQ = 92,     /* PCI config access for a remote slot */
	MSG_IRQ_DELIVER = 93, /* an APIC message for a vCPU there */
	MSG_IRQ_EOI = 94,     /* level EOI for node 0's IOAPIC */
	MSG_IRQ_LINE = 95,    /* a device's GSI for node 0's IOAPIC */
	MSG_APIC_TARGET = 96, /* a LAPIC's addressing changed */
	MSG_NODE_READY = 97,  /* a peer's part of the VM is built */
	/* 100-109: one guest time on every node (cluster/vtime.c) */
	MSG_TIME_REQ = 100,  /* peer -> node 0: a timestamped probe */
	MSG_TIME_RESP = 101, /* node 0's answer, with its TSC */
	MSG_TIME_BASE = 102, /* node 0 -> peers: guest TSC base, kvmclock */
	/* 110-114: the global NIC's remote queue pairs (cluster/netq.c) */
	MSG_NETQ_CMD = 110,  /* home -> server: start/stop a pair */
	MSG_NETQ_ACK = 111,  /* server -> home: its result */
	MSG_NETQ_KICK = 112, /* any node -> server: a pair's doorbell */
	MSG_NETQ_IRQ = 113,  /* server -> home: interrupt for a queue */
	MSG_NETQ_LINK = 114, /* server -> home: its tap went up/down */
};

enum peer_event {
	PEER_UP,   /* authenticated and ready */
	PEER_DOWN, /* connection lost, heartbeats missed, or it said goodbye */
};

struct transport_node_addr {
	char host[64]; /* numeric IPv4/IPv6 address or host name */
	uint16_t port;
};

struct transport_config {
	int self; /* this node's id */
	int nnodes;
	struct transport_node_addr node[CLUSTER_MAX_NODES];
	uint8_t cluster_id[CLUSTER_ID_LEN];
	uint8_t secret[CLUSTER_SECRET_MAX];
	size_t secret_len;		 /* >= 16 */
	unsigned int heartbeat_ms;	 /* default 250 */
	unsigned int dead_after_ms;	 /* default 3000: no traffic -> down */
	unsigned int connect_timeout_ms; /* default 10000: give up at start */
	size_t sendq_limit;	   /* bytes queued per peer; default 64 MiB */
	unsigned int handshake_ms; /* default 5000: to authenticate in */
};

/*
 * Called on the transport's event-loop thread. Handlers must not block for
 * long; they may call transport_send (which never blocks on that thread).
 */
typedef void (*transport_msg_fn)(void *opaque, int from, uint16_t type,
				 const void *payload, uint32_t len);
typedef void (*transport_peer_fn)(void *opaque, int node, enum peer_event ev,
				  const char *reason);

struct transport;

/*
 * msgs and bytes count user messages (type >= MSG_USER_BASE) and their
 * payload bytes; handshake, heartbeat and framing overhead are not counted.
 */
struct transport_stats {
	uint64_t msgs_sent, msgs_recv, bytes_sent, bytes_recv;
	uint64_t auth_failures; /* strangers and bad peers refused */
	uint64_t sendq_waits;	/* back-pressure stalls */
};

/* The engine behind the interface. */
struct transport_engine {
	const char *name;
	int (*start)(struct transport *t, struct err *e);
	int (*send)(struct transport *t, int node, uint16_t type,
		    const void *buf, uint32_t len);
	int (*wait_connected)(struct transport *t, struct err *e);
	void (*get_stats)(struct transport *t, int node,
			  struct transport_stats *out);
	void (*destroy)(struct transport *t);
};

struct transport {
	const struct transport_engine *engine;
	struct transport_config cfg;
	transport_msg_fn on_msg;
	transport_peer_fn on_peer;
	void *opaque;
	void *priv; /* the engine's state */
};

/*
 * The TCP engine: TCP_NODELAY, epoll event loop, HMAC-SHA256 handshake.
 * Node i dials every node j < i and accepts from every j > i. A listening
 * port of 0 for this node picks a free port; transport_start writes it back
 * into t->cfg.node[cfg->self].port. Zero config fields take the defaults.
 */
int transport_tcp_create(struct transport **out,
			 const struct transport_config *cfg,
			 transport_msg_fn on_msg, transport_peer_fn on_peer,
			 void *opaque, struct err *e);

static inline int transport_start(struct transport *t, struct err *e)
{
	return t->engine->start(t, e);
}

/*
 * Queue a message for @node. Blocks while that peer's queue is over its
 * limit (back-pressure), except on the event-loop thread. Returns 0,
 * -ENOTCONN (peer not up, or the transport is being destroyed), -EMSGSIZE
 * (> MSG_MAX_PAYLOAD), -ENOMEM, or -EINVAL (bad node, or a type below
 * MSG_USER_BASE: those belong to the transport).
 */
static inline int transport_send(struct transport *t, int node, uint16_t type,
				 const void *buf, uint32_t len)
{
	return t->engine->send(t, node, type, buf, len);
}

/*
 * Wait until every peer is authenticated, up to connect_timeout_ms; on
 * failure e says which node could not be reached and why.
 */
static inline int transport_wait_connected(struct transport *t, struct err *e)
{
	return t->engine->wait_connected(t, e);
}

/*
 * Counters for peer @node, or summed over all peers when @node is not a
 * peer (e.g. -1). auth_failures is node-wide in both cases.
 */
static inline void transport_get_stats(struct transport *t, int node,
				       struct transport_stats *out)
{
	t->engine->get_stats(t, node, out);
}

/*
 * Say GOODBYE to live peers, flush for a bounded time, stop the event loop
 * and free everything. No callbacks run once it has begun; it must not be
 * called from a callback.
 */
static inline void transport_destroy(struct transport *t)
{
	if (t)
		t->engine->destroy(t);
}

#endif
