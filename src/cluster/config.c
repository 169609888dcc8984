/*
 * cluster/config.c - load, validate and save the cluster file (jansson).
 * Every problem is reported as "FILE:FIELD: what is wrong", e.g.
 * "c.json:nodes[1].port: 70000 is not a port (1-65535)". vCPUs and devices
 * may live on any node, except that vCPU 0 (the boot vCPU, which shares
 * node 0 with the legacy devices and the kernel) must be on node 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/config.h"
#include "util/parse.h"

#define MIN_MEMORY (16ULL << 20)
#define SECRET_FILE_MAX 1024

/* Where we are in the file, for messages. */
struct where {
	const char *file;
	struct err *e;
};

static int bad(const struct where *w, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int bad(const struct where *w, const char *field, const char *fmt, ...)
{
	char msg[ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return err_set(w->e, -EINVAL, "%s:%s: %s", w->file, field, msg);
}

/* Refuse keys of @obj not in @allowed (NULL-terminated). */
static int check_keys(const struct where *w, json_t *obj, const char *prefix,
		      const char *const *allowed)
{
	for (void *it = json_object_iter(obj); it;
	     it = json_object_iter_next(obj, it)) {
		const char *key = json_object_iter_key(it);
		int i;

		for (i = 0; allowed[i]; i++)
			if (strcmp(key, allowed[i]) == 0)
				break;
		if (!allowed[i])
			return bad(w, prefix[0] ? prefix : key,
				   "unknown field '%s'", key);
	}
	return 0;
}

/* An optional string field: copies it to *out, or leaves *out NULL. */
static int get_string(const struct where *w, json_t *obj, const char *key,
		      const char *field, bool required, char **out)
{
	json_t *v = json_object_get(obj, key);

	if (!v || json_is_null(v)) {
		if (required)
			return bad(w, field, "missing");
		return 0;
	}
	if (!json_is_string(v))
		return bad(w, field, "must be a string");
	if (required && !json_string_length(v))
		return bad(w, field, "must not be empty");
	*out = strdup(json_string_value(v));
	if (!*out)
		return err_set(w->e, -ENOMEM, "out of memory");
	return 0;
}

/* An optional integer field in [min, max]; *out keeps its value if absent. */
static int get_int(const struct where *w, json_t *obj, const char *key,
		   const char *field, long min, long max, long *out)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		return 0;
	if (!json_is_integer(v))
		return bad(w, field, "must be a number");
	if (json_integer_value(v) < min || json_integer_value(v) > max)
		return bad(w, field, "%lld is not in %ld..%ld",
			   (long long)json_integer_value(v), min, max);
	*out = (long)json_integer_value(v);
	return 0;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode @n hex digits; -EINVAL if not hex or odd, -ERANGE if over @max. */
static int hex_decode(const char *s, size_t n, uint8_t *out, size_t max,
		      size_t *len)
{
	if (n == 0 || n % 2)
		return -EINVAL;
	if (n / 2 > max)
		return -ERANGE;
	for (size_t i = 0; i < n; i += 2) {
		int hi = hex_digit(s[i]), lo = hex_digit(s[i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	*len = n / 2;
	return 0;
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int parse_cluster_id(const struct where *w, json_t *root,
			    struct cluster_config *c)
{
	json_t *v = json_object_get(root, "cluster_id");
	size_t len;

	if (!v)
		return bad(w, "cluster_id", "missing");
	if (!json_is_string(v) || json_string_length(v) != 2 * CLUSTER_ID_LEN ||
	    hex_decode(json_string_value(v), 2 * CLUSTER_ID_LEN, c->cluster_id,
		       CLUSTER_ID_LEN, &len))
		return bad(w, "cluster_id", "must be %d hex digits",
			   2 * CLUSTER_ID_LEN);
	return 0;
}

/* The secret as hex text: at least 16 bytes, at most CLUSTER_SECRET_MAX. */
static int decode_secret(const struct where *w, const char *field,
			 const char *hex, size_t n, struct cluster_config *c)
{
	int rc = hex_decode(hex, n, c->secret, CLUSTER_SECRET_MAX,
			    &c->secret_len);

	if (rc == -ERANGE)
		return bad(w, field, "longer than %d bytes",
			   CLUSTER_SECRET_MAX);
	if (rc)
		return bad(w, field, "must be hex digits (an even number)");
	if (c->secret_len < CLUSTER_MIN_SECRET)
		return bad(w, field, "%zu bytes is too short (at least %d)",
			   c->secret_len, CLUSTER_MIN_SECRET);
	return 0;
}

/* Read at most @max bytes of an open file; returns the length or -errno. */
static ssize_t read_all(int fd, char *buf, size_t max)
{
	size_t got = 0;

	while (got < max) {
		ssize_t n = read(fd, buf + got, max - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* A secret file holds the secret in hex; others must not be able to read it. */
static int read_secret_file(const struct where *w, const char *path,
			    struct cluster_config *c)
{
	char buf[SECRET_FILE_MAX + 1];
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return bad(w, "secret_file", "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return bad(w, "secret_file", "%s is not a regular file", path);
	}
	if (st.st_mode & S_IROTH) {
		close(fd);
		return bad(w, "secret_file",
			   "%s is readable by every user; chmod o-r it", path);
	}
	n = read_all(fd, buf, SECRET_FILE_MAX);
	close(fd);
	if (n < 0)
		return bad(w, "secret_file", "%s: %s", path, strerror((int)-n));
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' ||
			 buf[n - 1] == '\r' || buf[n - 1] == '\t'))
		n--;
	buf[n] = '\0';
	return decode_secret(w, "secret_file", buf, (size_t)n, c);
}

static int parse_secret(const struct where *w, json_t *root,
			struct cluster_config *c)
{
	json_t *s = json_object_get(root, "secret");
	json_t *f = json_object_get(root, "secret_file");

	if (s && f)
		return bad(w, "secret", "give secret or secret_file, not both");
	if (s) {
		if (!json_is_string(s))
			return bad(w, "secret",
				   "must be a string of hex digits");
		return decode_secret(w, "secret", json_string_value(s),
				     json_string_length(s), c);
	}
	if (f) {
		if (!json_is_string(f) || !json_string_length(f))
			return bad(w, "secret_file", "must be a path");
		return read_secret_file(w, json_string_value(f), c);
	}
	return bad(w, "secret", "missing (give secret or secret_file)");
}

static int parse_memory(const struct where *w, json_t *root,
			struct cluster_config *c)
{
	json_t *v = json_object_get(root, "memory");

	if (!v)
		return bad(w, "memory", "missing");
	if (json_is_integer(v) && json_integer_value(v) > 0)
		c->memory = (uint64_t)json_integer_value(v);
	else if (!json_is_string(v) ||
		 parse_size(json_string_value(v), &c->memory))
		return bad(w, "memory",
			   "must be a size like \"512M\" or \"2G\"");
	if (c->memory < MIN_MEMORY || (c->memory & 0xfff))
		return bad(w, "memory",
			   "must be at least 16M and a multiple of 4K");
	return 0;
}

static int parse_node(const struct where *w, json_t *n, int i,
		      struct cluster_config *c, bool *seen)
{
	static const char *const keys[] = {"id", "host", "port", NULL};
	char field[48];
	json_t *host;
	long id = -1, port = 0;
	int rc;

	snprintf(field, sizeof(field), "nodes[%d]", i);
	if (!json_is_object(n))
		return bad(w, field, "must be an object");
	rc = check_keys(w, n, field, keys);
	if (rc)
		return rc;
	snprintf(field, sizeof(field), "nodes[%d].id", i);
	if (!json_object_get(n, "id"))
		return bad(w, field, "missing");
	rc = get_int(w, n, "id", field, 0, c->nnodes - 1, &id);
	if (rc)
		return rc;
	if (seen[id])
		return bad(w, field, "node %ld appears twice", id);
	seen[id] = true;
	snprintf(field, sizeof(field), "nodes[%d].host", i);
	host = json_object_get(n, "host");
	if (!json_is_string(host) || !json_string_length(host) ||
	    json_string_length(host) >= sizeof(c->node[0].host))
		return bad(w, field,
			   "must be an address or host name "
			   "(at most 63 characters)");
	strcpy(c->node[id].host, json_string_value(host));
	snprintf(field, sizeof(field), "nodes[%d].port", i);
	if (!json_object_get(n, "port"))
		return bad(w, field, "missing");
	rc = get_int(w, n, "port", field, 1, 65535, &port);
	c->node[id].port = (uint16_t)port;
	return rc;
}

static int check_distinct_addresses(const struct where *w,
				    const struct cluster_config *c)
{
	for (int i = 0; i < c->nnodes; i++) {
		for (int j = 0; j < i; j++) {
			if (strcmp(c->node[i].host, c->node[j].host) ||
			    c->node[i].port != c->node[j].port)
				continue;
			return bad(w, "nodes",
				   "nodes %d and %d both have address %s:%u", j,
				   i, c->node[i].host, c->node[i].port);
		}
	}
	return 0;
}

static int parse_nodes(const struct where *w, json_t *root,
		       struct cluster_config *c)
{
	json_t *nodes = json_object_get(root, "nodes");
	bool seen[CLUSTER_MAX_NODES] = {false};

	if (!nodes)
		return bad(w, "nodes", "missing");
	if (!json_is_array(nodes) || json_array_size(nodes) < 1 ||
	    json_array_size(nodes) > CLUSTER_MAX_NODES)
		return bad(w, "nodes", "must be a list of 1 to %d nodes",
			   CLUSTER_MAX_NODES);
	c->nnodes = (int)json_array_size(nodes);
	for (size_t i = 0; i < json_array_size(nodes); i++) {
		int rc = parse_node(w, json_array_get(nodes, i), (int)i, c,
				    seen);

		if (rc)
			return rc;
	}
	return check_distinct_addresses(w, c);
}

static int parse_vcpus(const struct where *w, json_t *root,
		       struct cluster_config *c)
{
	json_t *vcpus = json_object_get(root, "vcpus");

	if (!vcpus)
		return bad(w, "vcpus", "missing (the node of each vCPU)");
	if (!json_is_array(vcpus) || json_array_size(vcpus) < 1 ||
	    json_array_size(vcpus) > VM_MAX_CPUS)
		return bad(w, "vcpus",
			   "must be a list of 1 to %d node ids (one per vCPU)",
			   VM_MAX_CPUS);
	c->ncpus = (int)json_array_size(vcpus);
	for (size_t i = 0; i < json_array_size(vcpus); i++) {
		json_t *v = json_array_get(vcpus, i);
		char field[24];
		json_int_t node = json_integer_value(v);

		snprintf(field, sizeof(field), "vcpus[%d]", (int)i);
		if (!json_is_integer(v))
			return bad(w, field, "must be a node id");
		if (node < 0 || node >= c->nnodes)
			return bad(w, field, "node %lld is not in nodes",
				   (long long)node);
		if (i == 0 && node != 0)
			return bad(w, field,
				   "the boot vCPU must be on node 0, not %lld",
				   (long long)node);
		c->vcpu_node[i] = (int)node;
	}
	return 0;
}

static int count_type(const struct cluster_config *c,
		      enum cluster_dev_type type)
{
	int n = 0;

	for (int i = 0; i < c->ndevices; i++)
		n += c->dev[i].type == type;
	return n;
}

static int parse_disk(const struct where *w, json_t *d, const char *prefix,
		      struct cluster_device *dev)
{
	static const char *const keys[] = {"type", "node", "path", "readonly",
					   NULL};
	char field[48];
	json_t *ro;
	int rc = check_keys(w, d, prefix, keys);

	if (rc)
		return rc;
	snprintf(field, sizeof(field), "%s.path", prefix);
	rc = get_string(w, d, "path", field, true, &dev->path);
	if (rc)
		return rc;
	snprintf(field, sizeof(field), "%s.readonly", prefix);
	ro = json_object_get(d, "readonly");
	if (ro && !json_is_boolean(ro))
		return bad(w, field, "must be true or false");
	dev->readonly = ro && json_is_true(ro);
	return 0;
}

static int parse_tap(const struct where *w, json_t *d, const char *field,
		     char **out)
{
	int rc = get_string(w, d, "tap", field, false, out);

	if (rc)
		return rc;
	if (*out && (!(*out)[0] || strlen(*out) >= 16)) {
		free(*out);
		*out = NULL;
		return bad(w, field, "a tap name has 1 to 15 characters");
	}
	return 0;
}

/* "pairs": [{"node": K, "tap": T}, ...]; pair 0 is the device's home. */
static int parse_pairs(const struct where *w, json_t *pairs, const char *prefix,
		       int nnodes, struct cluster_device *dev)
{
	static const char *const keys[] = {"node", "tap", NULL};
	char field[64];

	snprintf(field, sizeof(field), "%s.pairs", prefix);
	if (!json_is_array(pairs) || json_array_size(pairs) < 1 ||
	    json_array_size(pairs) > VIRTIO_NET_MAX_PAIRS)
		return bad(w, field, "must be a list of 1 to %d queue pairs",
			   VIRTIO_NET_MAX_PAIRS);
	for (size_t i = 0; i < json_array_size(pairs); i++) {
		json_t *p = json_array_get(pairs, i);
		char pf[48];
		char *tap = NULL;
		long node = 0;
		int rc;

		snprintf(pf, sizeof(pf), "%s.pairs[%d]", prefix, (int)i);
		if (!json_is_object(p))
			return bad(w, pf, "must be an object");
		rc = check_keys(w, p, pf, keys);
		snprintf(field, sizeof(field), "%s.node", pf);
		if (!rc && !json_object_get(p, "node"))
			return bad(w, field, "missing (the node serving it)");
		if (!rc)
			rc = get_int(w, p, "node", field, 0, nnodes - 1, &node);
		if (!rc && i == 0 && node != dev->node)
			return bad(w, field,
				   "pair 0 is the device: node %ld is not its "
				   "node %d",
				   node, dev->node);
		snprintf(field, sizeof(field), "%s.tap", pf);
		if (!rc)
			rc = parse_tap(w, p, field, &tap);
		if (rc)
			return rc;
		if (i == 0 && (tap || dev->tap) &&
		    (!tap || !dev->tap || strcmp(tap, dev->tap))) {
			free(tap);
			return bad(w, field, "pair 0's tap is the device's");
		}
		if (i == 0) {
			free(tap);
			continue;
		}
		dev->pair[i].node = (int)node;
		dev->pair[i].tap = tap;
		dev->npairs = (int)i + 1;
	}
	return 0;
}

/* "queues": N: every pair on the home node, on the device's tap. */
static int parse_queues(const struct where *w, json_t *d, const char *prefix,
			struct cluster_device *dev)
{
	char field[48];
	long n = 1;
	int rc;

	snprintf(field, sizeof(field), "%s.queues", prefix);
	rc = get_int(w, d, "queues", field, 1, VIRTIO_NET_MAX_PAIRS, &n);
	if (rc)
		return rc;
	for (long p = 1; p < n; p++) {
		dev->pair[p].node = dev->node;
		if (dev->tap && !(dev->pair[p].tap = strdup(dev->tap)))
			return bad(w, field, "out of memory");
		dev->npairs = (int)p + 1;
	}
	return 0;
}

static int parse_net(const struct where *w, json_t *d, const char *prefix,
		     int nnodes, struct cluster_device *dev)
{
	static const char *const keys[] = {"type",   "node",  "tap", "mac",
					   "queues", "pairs", NULL};
	json_t *pairs = json_object_get(d, "pairs");
	char field[48], *mac = NULL;
	int rc = check_keys(w, d, prefix, keys);

	snprintf(field, sizeof(field), "%s.tap", prefix);
	if (!rc)
		rc = parse_tap(w, d, field, &dev->tap);
	if (!rc && pairs && json_object_get(d, "queues"))
		return bad(w, prefix, "has both queues and pairs");
	if (!rc && pairs)
		rc = parse_pairs(w, pairs, prefix, nnodes, dev);
	else if (!rc && json_object_get(d, "queues"))
		rc = parse_queues(w, d, prefix, dev);
	snprintf(field, sizeof(field), "%s.mac", prefix);
	if (!rc)
		rc = get_string(w, d, "mac", field, false, &mac);
	if (rc || !mac)
		return rc;
	rc = parse_mac(mac, dev->mac);
	free(mac);
	if (rc)
		return bad(w, field, "must be like \"52:54:00:12:34:56\"");
	dev->has_mac = true;
	return 0;
}

static int parse_plain(const struct where *w, json_t *d, const char *prefix,
		       struct cluster_device *dev)
{
	static const char *const rng_keys[] = {"type", "node", NULL};
	static const char *const vcon_keys[] = {"type", "node", "path", NULL};
	char field[48];
	int rc;

	if (dev->type == CLUSTER_DEV_RNG)
		return check_keys(w, d, prefix, rng_keys);
	rc = check_keys(w, d, prefix, vcon_keys);
	if (rc)
		return rc;
	snprintf(field, sizeof(field), "%s.path", prefix);
	return get_string(w, d, "path", field, true, &dev->path);
}

static const struct {
	const char *name;
	enum cluster_dev_type type;
	int max;
} dev_types[] = {
	{"disk", CLUSTER_DEV_DISK, MACHINE_MAX_DISKS},
	{"net", CLUSTER_DEV_NET, MACHINE_MAX_NICS},
	{"rng", CLUSTER_DEV_RNG, 1},
	{"vconsole", CLUSTER_DEV_VCONSOLE, 1},
};

static int parse_dev_type(const struct where *w, json_t *d, const char *prefix,
			  const struct cluster_config *c,
			  struct cluster_device *dev)
{
	const char *type = json_string_value(json_object_get(d, "type"));
	char field[48];

	snprintf(field, sizeof(field), "%s.type", prefix);
	if (!type)
		return bad(w, field, "missing (disk, net, rng or vconsole)");
	for (size_t i = 0; i < sizeof(dev_types) / sizeof(dev_types[0]); i++) {
		if (strcmp(type, dev_types[i].name))
			continue;
		if (count_type(c, dev_types[i].type) >= dev_types[i].max)
			return bad(w, field, "at most %d %s devices",
				   dev_types[i].max, type);
		dev->type = dev_types[i].type;
		return 0;
	}
	return bad(w, field, "'%s' is not disk, net, rng or vconsole", type);
}

static int parse_device(const struct where *w, json_t *d, int i,
			struct cluster_config *c)
{
	struct cluster_device *dev = &c->dev[c->ndevices];
	char prefix[24], field[48];
	long node = -1;
	int rc;

	snprintf(prefix, sizeof(prefix), "devices[%d]", i);
	if (!json_is_object(d))
		return bad(w, prefix, "must be an object");
	rc = parse_dev_type(w, d, prefix, c, dev);
	if (rc)
		return rc;
	c->ndevices++; /* from here on its strings are ours to free */
	snprintf(field, sizeof(field), "%s.node", prefix);
	if (!json_object_get(d, "node"))
		return bad(w, field, "missing (the device's home node)");
	rc = get_int(w, d, "node", field, 0, c->nnodes - 1, &node);
	if (rc)
		return rc;
	dev->node = (int)node;
	if (dev->type == CLUSTER_DEV_DISK)
		return parse_disk(w, d, prefix, dev);
	if (dev->type == CLUSTER_DEV_NET)
		return parse_net(w, d, prefix, c->nnodes, dev);
	return parse_plain(w, d, prefix, dev);
}

static int parse_devices(const struct where *w, json_t *root,
			 struct cluster_config *c)
{
	json_t *devs = json_object_get(root, "devices");

	if (!devs)
		return 0;
	if (!json_is_array(devs) || json_array_size(devs) > CLUSTER_MAX_DEVICES)
		return bad(w, "devices", "must be a list of at most %d devices",
			   CLUSTER_MAX_DEVICES);
	for (size_t i = 0; i < json_array_size(devs); i++) {
		int rc = parse_device(w, json_array_get(devs, i), (int)i, c);

		if (rc)
			return rc;
	}
	return 0;
}

static int parse_doorbell(const struct where *w, json_t *root,
			  struct cluster_config *c)
{
	json_t *v = json_object_get(root, "doorbell");
	const char *s = json_string_value(v);

	if (!v)
		return 0;
	if (s && strcmp(s, "ioeventfd") == 0)
		c->doorbell = DOORBELL_IOEVENTFD;
	else if (s && strcmp(s, "poll") == 0)
		c->doorbell = DOORBELL_POLL;
	else
		return bad(w, "doorbell", "must be \"ioeventfd\" or \"poll\"");
	return 0;
}

static int parse_timing(const struct where *w, json_t *root,
			struct cluster_config *c)
{
	long hb = 0, dead = 0, conn = 0;
	int rc;

	rc = get_int(w, root, "heartbeat_ms", "heartbeat_ms", 10, 60000, &hb);
	if (!rc)
		rc = get_int(w, root, "dead_after_ms", "dead_after_ms", 50,
			     600000, &dead);
	if (!rc)
		rc = get_int(w, root, "connect_timeout_ms",
			     "connect_timeout_ms", 100, 600000, &conn);
	if (rc)
		return rc;
	if (dead && dead < 2 * (hb ? hb : 250))
		return bad(w, "dead_after_ms",
			   "must be at least two heartbeats (%ld ms)",
			   2 * (hb ? hb : 250));
	c->heartbeat_ms = (unsigned int)hb;
	c->dead_after_ms = (unsigned int)dead;
	c->connect_timeout_ms = (unsigned int)conn;
	return 0;
}

static int parse_root(const struct where *w, json_t *root,
		      struct cluster_config *c)
{
	static const char *const keys[] = {
		"cluster_id",
		"secret",
		"secret_file",
		"memory",
		"kernel",
		"cmdline",
		"initrd",
		"nodes",
		"vcpus",
		"devices",
		"doorbell",
		"heartbeat_ms",
		"dead_after_ms",
		"connect_timeout_ms",
		NULL,
	};
	int rc;

	if (!json_is_object(root))
		return err_set(w->e, -EINVAL, "%s: must be a JSON object",
			       w->file);
	rc = check_keys(w, root, "", keys);
	if (!rc)
		rc = parse_cluster_id(w, root, c);
	if (!rc)
		rc = parse_secret(w, root, c);
	if (!rc)
		rc = parse_memory(w, root, c);
	if (!rc)
		rc = get_string(w, root, "kernel", "kernel", true, &c->kernel);
	if (!rc)
		rc = get_string(w, root, "cmdline", "cmdline", false,
				&c->cmdline);
	if (!rc)
		rc = get_string(w, root, "initrd", "initrd", false, &c->initrd);
	if (!rc)
		rc = parse_nodes(w, root, c);
	if (!rc)
		rc = parse_vcpus(w, root, c);
	if (!rc)
		rc = parse_devices(w, root, c);
	if (!rc)
		rc = parse_doorbell(w, root, c);
	if (!rc)
		rc = parse_timing(w, root, c);
	return rc;
}

/* Validate a parsed document; frees what it filled on failure. */
static int parse_document(struct cluster_config *c, json_t *root,
			  const char *name, struct err *e)
{
	struct where w = {.file = name, .e = e};
	int rc = parse_root(&w, root, c);

	json_decref(root);
	if (rc)
		cluster_config_free(c);
	return rc;
}

int cluster_config_parse(struct cluster_config *c, const char *text,
			 const char *name, struct err *e)
{
	json_error_t je;
	json_t *root;

	memset(c, 0, sizeof(*c));
	root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return err_set(e, -EINVAL, "%s:%d:%d: %s", name, je.line,
			       je.column, je.text);
	return parse_document(c, root, name, e);
}

int cluster_config_load(struct cluster_config *c, const char *path,
			struct err *e)
{
	json_error_t je;
	json_t *root;

	memset(c, 0, sizeof(*c));
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!root && je.line < 0) /* not a JSON error: could not read it */
		return err_set(e, -EINVAL, "cluster file %s: %s", path,
			       je.text);
	if (!root)
		return err_set(e, -EINVAL, "%s:%d:%d: %s", path, je.line,
			       je.column, je.text);
	return parse_document(c, root, path, e);
}

void cluster_config_free(struct cluster_config *c)
{
	free(c->kernel);
	free(c->cmdline);
	free(c->initrd);
	for (int i = 0; i < c->ndevices; i++) {
		free(c->dev[i].path);
		free(c->dev[i].tap);
		for (int p = 1; p < c->dev[i].npairs; p++)
			free(c->dev[i].pair[p].tap);
	}
	memset(c, 0, sizeof(*c));
}

/* ---- saving ---- */

static json_t *size_json(uint64_t bytes)
{
	static const char units[] = "GMK";
	char buf[32];

	for (int i = 0; i < 3; i++) {
		unsigned int shift = 30 - 10 * i;

		if (!(bytes & ((1ULL << shift) - 1))) {
			snprintf(buf, sizeof(buf), "%llu%c",
				 (unsigned long long)(bytes >> shift),
				 units[i]);
			return json_string(buf);
		}
	}
	return json_integer((json_int_t)bytes);
}

static json_t *pair_json(int node, const char *tap)
{
	json_t *p = json_pack("{s:i}", "node", node);

	if (tap)
		json_object_set_new(p, "tap", json_string(tap));
	return p;
}

static json_t *pairs_json(const struct cluster_device *d)
{
	json_t *a = json_array();

	json_array_append_new(a, pair_json(d->node, d->tap));
	for (int p = 1; p < d->npairs; p++)
		json_array_append_new(
			a, pair_json(d->pair[p].node, d->pair[p].tap));
	return a;
}

static json_t *device_json(const struct cluster_device *d)
{
	json_t *o = json_pack("{s:s, s:i}", "type", dev_types[d->type].name,
			      "node", d->node);
	char mac[18];

	if (d->path)
		json_object_set_new(o, "path", json_string(d->path));
	if (d->type == CLUSTER_DEV_DISK && d->readonly)
		json_object_set_new(o, "readonly", json_true());
	if (d->tap)
		json_object_set_new(o, "tap", json_string(d->tap));
	if (d->has_mac) {
		snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x",
			 d->mac[0], d->mac[1], d->mac[2], d->mac[3], d->mac[4],
			 d->mac[5]);
		json_object_set_new(o, "mac", json_string(mac));
	}
	if (d->type == CLUSTER_DEV_NET && d->npairs > 1)
		json_object_set_new(o, "pairs", pairs_json(d));
	return o;
}

static void set_optional(json_t *root, const char *key, const char *s)
{
	if (s)
		json_object_set_new(root, key, json_string(s));
}

static void set_timing(json_t *root, const char *key, unsigned int ms)
{
	if (ms)
		json_object_set_new(root, key, json_integer(ms));
}

static json_t *config_json(const struct cluster_config *c)
{
	char id[2 * CLUSTER_ID_LEN + 1], secret[2 * CLUSTER_SECRET_MAX + 1];
	json_t *root, *nodes = json_array(), *vcpus = json_array(),
		      *devs = json_array();

	hex_encode(c->cluster_id, CLUSTER_ID_LEN, id);
	hex_encode(c->secret, c->secret_len, secret);
	for (int i = 0; i < c->nnodes; i++)
		json_array_append_new(nodes,
				      json_pack("{s:i, s:s, s:i}", "id", i,
						"host", c->node[i].host, "port",
						c->node[i].port));
	for (int i = 0; i < c->ncpus; i++)
		json_array_append_new(vcpus, json_integer(c->vcpu_node[i]));
	for (int i = 0; i < c->ndevices; i++)
		json_array_append_new(devs, device_json(&c->dev[i]));
	root = json_pack("{s:s, s:s, s:o, s:s, s:o, s:o, s:o, s:s}",
			 "cluster_id", id, "secret", secret, "memory",
			 size_json(c->memory), "kernel", c->kernel, "nodes",
			 nodes, "vcpus", vcpus, "devices", devs, "doorbell",
			 c->doorbell == DOORBELL_POLL ? "poll" : "ioeventfd");
	if (!root)
		return NULL;
	set_optional(root, "cmdline", c->cmdline);
	set_optional(root, "initrd", c->initrd);
	set_timing(root, "heartbeat_ms", c->heartbeat_ms);
	set_timing(root, "dead_after_ms", c->dead_after_ms);
	set_timing(root, "connect_timeout_ms", c->connect_timeout_ms);
	return root;
}

int cluster_config_save(const struct cluster_config *c, const char *path,
			struct err *e)
{
	json_t *root = config_json(c);
	int fd, rc = 0;

	if (!root)
		return err_set(e, -ENOMEM, "cannot build the cluster file");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = err_set(e, -errno, "cluster file %s: %s", path,
			     strerror(errno));
	} else {
		if (json_dumpfd(root, fd, JSON_INDENT(2) | JSON_PRESERVE_ORDER))
			rc = err_set(e, -EIO, "cannot write cluster file %s",
				     path);
		if (close(fd) && !rc)
			rc = err_set(e, -errno, "cluster file %s: %s", path,
				     strerror(errno));
	}
	json_decref(root);
	return rc;
}

/* ---- what the file means to the machine and the transport ---- */

static void add_device(const struct cluster_device *d,
		       struct machine_config *mc)
{
	struct machine_nic *nic;

	switch (d->type) {
	case CLUSTER_DEV_DISK:
		mc->disk[mc->ndisks].path = d->path;
		mc->disk[mc->ndisks++].readonly = d->readonly;
		break;
	case CLUSTER_DEV_NET:
		nic = &mc->nic[mc->nnics++];
		nic->tap = d->tap;
		nic->has_mac = d->has_mac;
		memcpy(nic->mac, d->mac, 6);
		nic->node = d->node;
		nic->npairs = d->npairs;
		for (int p = 1; p < d->npairs; p++) {
			nic->pair[p].tap = d->pair[p].tap;
			nic->pair[p].node = d->pair[p].node;
		}
		break;
	case CLUSTER_DEV_RNG:
		mc->rng = true;
		break;
	case CLUSTER_DEV_VCONSOLE:
		break; /* the caller opens the file */
	}
}

void cluster_config_machine(const struct cluster_config *c,
			    struct machine_config *mc)
{
	memset(mc, 0, sizeof(*mc));
	mc->ram_size = c->memory;
	mc->ncpus = c->ncpus;
	mc->kernel_path = c->kernel;
	mc->initrd_path = c->initrd;
	mc->cmdline = c->cmdline;
	mc->doorbell = c->doorbell;
	mc->console_out_fd = -1;
	mc->console_in_fd = -1;
	mc->vconsole_out_fd = -1;
	for (int i = 0; i < c->ndevices; i++)
		add_device(&c->dev[i], mc);
}

/* Machine order: disks, nics, rng, vconsole (see machine.c). */
static const enum cluster_dev_type machine_order[] = {
	CLUSTER_DEV_DISK, CLUSTER_DEV_NET, CLUSTER_DEV_RNG,
	CLUSTER_DEV_VCONSOLE};

int cluster_config_virtio_homes(const struct cluster_config *c, int *homes)
{
	int n = 0;

	for (size_t t = 0; t < sizeof(machine_order) / sizeof(*machine_order);
	     t++)
		for (int i = 0; i < c->ndevices; i++)
			if (c->dev[i].type == machine_order[t])
				homes[n++] = c->dev[i].node;
	return n;
}

uint64_t cluster_config_local_cpus(const struct cluster_config *c, int self)
{
	uint64_t m = 0;

	for (int i = 0; i < c->ncpus; i++)
		if (c->vcpu_node[i] == self)
			m |= 1ULL << i;
	return m;
}

const char *cluster_config_vconsole(const struct cluster_config *c)
{
	for (int i = 0; i < c->ndevices; i++)
		if (c->dev[i].type == CLUSTER_DEV_VCONSOLE)
			return c->dev[i].path;
	return NULL;
}

void cluster_config_transport(const struct cluster_config *c, int self,
			      struct transport_config *tc)
{
	memset(tc, 0, sizeof(*tc));
	tc->self = self;
	tc->nnodes = c->nnodes;
	memcpy(tc->node, c->node, sizeof(tc->node));
	memcpy(tc->cluster_id, c->cluster_id, CLUSTER_ID_LEN);
	memcpy(tc->secret, c->secret, c->secret_len);
	tc->secret_len = c->secret_len;
	tc->heartbeat_ms = c->heartbeat_ms ? c->heartbeat_ms : 250;
	tc->dead_after_ms = c->dead_after_ms ? c->dead_after_ms : 3000;
	tc->connect_timeout_ms =
		c->connect_timeout_ms ? c->connect_timeout_ms : 10000;
	tc->sendq_limit = 64ULL << 20;
}
