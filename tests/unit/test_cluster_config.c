/*
 * tests/unit/test_cluster_config.c - the cluster file: valid files and what
 * they mean to the machine and the transport, a save/load round trip, the
 * secret file's permissions, and one clear "FILE:FIELD: problem" message for
 * each kind of invalid file.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster/config.h"

#define ID "00112233445566778899aabbccddeeff"
#define SECRET "000102030405060708090a0b0c0d0e0f"

static const char *const valid_doc =
	"{\"cluster_id\": \"" ID "\", \"secret\": \"" SECRET "\","
	" \"memory\": \"256M\", \"kernel\": \"k.elf\", \"cmdline\": \"x=1\","
	" \"nodes\": [{\"id\": 1, \"host\": \"127.0.0.1\", \"port\": 7002},"
	"             {\"id\": 0, \"host\": \"127.0.0.1\", \"port\": 7001}],"
	" \"vcpus\": [0, 0],"
	" \"devices\": [{\"type\": \"disk\", \"path\": \"d.img\", \"node\": 0,"
	"                \"readonly\": true},"
	"               {\"type\": \"net\", \"tap\": \"tap0\", \"node\": 0,"
	"                \"mac\": \"52:54:00:12:34:56\"},"
	"               {\"type\": \"rng\", \"node\": 0},"
	"               {\"type\": \"vconsole\", \"path\": \"v.txt\","
	"                \"node\": 0}],"
	" \"doorbell\": \"poll\", \"dead_after_ms\": 1000}";

static void test_valid_file(void **state)
{
	struct cluster_config c;
	struct err e = {0};

	(void)state;
	assert_int_equal(cluster_config_parse(&c, valid_doc, "c.json", &e), 0);
	assert_int_equal(c.nnodes, 2);
	assert_string_equal(c.node[0].host, "127.0.0.1");
	assert_int_equal(c.node[0].port, 7001);
	assert_int_equal(c.node[1].port, 7002);
	assert_int_equal(c.ncpus, 2);
	assert_int_equal(c.memory, 256ULL << 20);
	assert_int_equal(c.secret_len, 16);
	assert_int_equal(c.secret[15], 0x0f);
	assert_int_equal(c.cluster_id[0], 0x00);
	assert_int_equal(c.cluster_id[15], 0xff);
	assert_string_equal(c.kernel, "k.elf");
	assert_string_equal(c.cmdline, "x=1");
	assert_null(c.initrd);
	assert_int_equal(c.ndevices, 4);
	assert_int_equal(c.doorbell, DOORBELL_POLL);
	assert_int_equal(c.dead_after_ms, 1000);
	assert_string_equal(cluster_config_vconsole(&c), "v.txt");
	cluster_config_free(&c);
}

static void test_machine_and_transport(void **state)
{
	struct transport_config tc;
	struct machine_config mc;
	struct cluster_config c;
	struct err e = {0};

	(void)state;
	assert_int_equal(cluster_config_parse(&c, valid_doc, "c.json", &e), 0);
	cluster_config_machine(&c, &mc);
	assert_int_equal(mc.ncpus, 2);
	assert_int_equal(mc.ram_size, 256ULL << 20);
	assert_string_equal(mc.kernel_path, "k.elf");
	assert_int_equal(mc.ndisks, 1);
	assert_string_equal(mc.disk[0].path, "d.img");
	assert_true(mc.disk[0].readonly);
	assert_int_equal(mc.nnics, 1);
	assert_string_equal(mc.nic[0].tap, "tap0");
	assert_true(mc.nic[0].has_mac);
	assert_int_equal(mc.nic[0].mac[5], 0x56);
	assert_true(mc.rng);
	assert_int_equal(mc.doorbell, DOORBELL_POLL);
	assert_int_equal(mc.vconsole_out_fd, -1);

	cluster_config_transport(&c, 1, &tc);
	assert_int_equal(tc.self, 1);
	assert_int_equal(tc.nnodes, 2);
	assert_int_equal(tc.node[1].port, 7002);
	assert_int_equal(tc.secret_len, 16);
	assert_memory_equal(tc.secret, c.secret, 16);
	assert_memory_equal(tc.cluster_id, c.cluster_id, CLUSTER_ID_LEN);
	assert_int_equal(tc.dead_after_ms, 1000);
	assert_int_equal(tc.heartbeat_ms, 250);
	assert_int_equal(tc.connect_timeout_ms, 10000);
	cluster_config_free(&c);
}

static char *make_tmpdir(void)
{
	char *d = strdup("/tmp/dvmm-cfgtest.XXXXXX");

	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static void remove_in(const char *dir, const char *name)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	unlink(p);
}

static void test_save_and_load(void **state)
{
	struct cluster_config c, back;
	struct err e = {0};
	char *dir = make_tmpdir(), path[256];
	struct stat st;

	(void)state;
	snprintf(path, sizeof(path), "%s/cluster.json", dir);
	assert_int_equal(cluster_config_parse(&c, valid_doc, "c.json", &e), 0);
	c.memory = 3ULL << 30;
	c.connect_timeout_ms = 2000;
	assert_int_equal(cluster_config_save(&c, path, &e), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* never overwrites */
	assert_int_not_equal(cluster_config_save(&c, path, &e), 0);
	assert_int_equal(cluster_config_load(&back, path, &e), 0);
	assert_int_equal(back.memory, 3ULL << 30);
	assert_int_equal(back.connect_timeout_ms, 2000);
	assert_int_equal(back.nnodes, 2);
	assert_int_equal(back.node[1].port, 7002);
	assert_memory_equal(back.secret, c.secret, c.secret_len);
	assert_memory_equal(back.cluster_id, c.cluster_id, CLUSTER_ID_LEN);
	assert_int_equal(back.ndevices, 4);
	assert_true(back.dev[0].readonly);
	assert_memory_equal(back.dev[1].mac, c.dev[1].mac, 6);
	assert_string_equal(back.cmdline, "x=1");
	assert_int_equal(back.doorbell, DOORBELL_POLL);
	cluster_config_free(&back);
	cluster_config_free(&c);
	remove_in(dir, "cluster.json");
	rmdir(dir);
	free(dir);
}

/* A document using secret_file=PATH, the file holding @content, @mode. */
static int parse_with_secret_file(const char *content, mode_t mode,
				  struct err *e)
{
	struct cluster_config c;
	char *dir = make_tmpdir(), path[256], doc[1024];
	int fd, rc;

	snprintf(path, sizeof(path), "%s/secret", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)),
			 (ssize_t)strlen(content));
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
	snprintf(doc, sizeof(doc),
		 "{\"cluster_id\": \"" ID "\", \"secret_file\": \"%s\","
		 " \"memory\": 268435456, \"kernel\": \"k\","
		 " \"nodes\": [{\"id\": 0, \"host\": \"h\", \"port\": 1}],"
		 " \"vcpus\": [0]}",
		 path);
	rc = cluster_config_parse(&c, doc, "c.json", e);
	if (!rc) {
		assert_int_equal(c.secret_len, 16);
		cluster_config_free(&c);
	}
	remove_in(dir, "secret");
	rmdir(dir);
	free(dir);
	return rc;
}

static void test_secret_file(void **state)
{
	struct err e = {0};

	(void)state;
	assert_int_equal(parse_with_secret_file(SECRET "\n", 0600, &e), 0);
	assert_int_equal(parse_with_secret_file(SECRET, 0640, &e), 0);
	assert_int_not_equal(parse_with_secret_file(SECRET, 0644, &e), 0);
	assert_non_null(strstr(e.msg, "c.json:secret_file: "));
	assert_non_null(strstr(e.msg, "readable by every user"));
	assert_int_not_equal(parse_with_secret_file("0011", 0600, &e), 0);
	assert_non_null(strstr(e.msg, "too short"));
	assert_int_not_equal(
		parse_with_secret_file("not hex at all!!", 0600, &e), 0);
	assert_non_null(strstr(e.msg, "hex"));
}

/* Set the member at @path ("nodes/1/port") to @value (JSON; NULL deletes). */
static void set_path(json_t *root, const char *path, const char *value)
{
	char buf[128], *tok, *next, *save = NULL;
	json_t *parent = root, *v = NULL;

	snprintf(buf, sizeof(buf), "%s", path);
	if (value) {
		v = json_loads(value, JSON_DECODE_ANY, NULL);
		assert_non_null(v);
	}
	tok = strtok_r(buf, "/", &save);
	while ((next = strtok_r(NULL, "/", &save))) {
		parent =
			json_is_array(parent) ?
				json_array_get(parent, strtoul(tok, NULL, 10)) :
				json_object_get(parent, tok);
		assert_non_null(parent);
		tok = next;
	}
	if (json_is_array(parent)) {
		size_t i = strtoul(tok, NULL, 10);

		assert_non_null(v);
		if (i == json_array_size(parent))
			json_array_append_new(parent, v);
		else
			json_array_set_new(parent, i, v);
	} else if (v) {
		json_object_set_new(parent, tok, v);
	} else {
		json_object_del(parent, tok);
	}
}

struct bad_case {
	const char *path;
	const char *value; /* NULL: delete the member */
	const char *msg;   /* expected in the error */
};

static const struct bad_case bad_cases[] = {
	{"cluster_id", NULL, "c.json:cluster_id: missing"},
	{"cluster_id", "\"0011\"", "c.json:cluster_id: must be 32 hex"},
	{"cluster_id", "\"zz112233445566778899aabbccddeeff\"", "hex"},
	{"secret", NULL, "c.json:secret: missing"},
	{"secret", "\"00112233\"", "c.json:secret: 4 bytes is too short"},
	{"secret", "\"0g\"", "c.json:secret: must be hex"},
	{"secret", "\"abc\"", "c.json:secret: must be hex"},
	{"secret", "12", "c.json:secret: must be a string"},
	{"secret_file", "\"/x\"", "not both"},
	{"memory", NULL, "c.json:memory: missing"},
	{"memory", "\"lots\"", "c.json:memory: must be a size"},
	{"memory", "\"1M\"", "at least 16M"},
	{"memory", "\"16777217\"", "multiple of 4K"},
	{"kernel", NULL, "c.json:kernel: missing"},
	{"kernel", "\"\"", "c.json:kernel: must not be empty"},
	{"kernel", "7", "c.json:kernel: must be a string"},
	{"cmdline", "[]", "c.json:cmdline: must be a string"},
	{"nodes", NULL, "c.json:nodes: missing"},
	{"nodes", "[]", "c.json:nodes: must be a list of 1 to 16"},
	{"nodes/0", "3", "c.json:nodes[0]: must be an object"},
	{"nodes/0/id", "0", "c.json:nodes[1].id: node 0 appears twice"},
	{"nodes/0/id", "2", "c.json:nodes[0].id: 2 is not in 0..1"},
	{"nodes/0/id", NULL, "c.json:nodes[0].id: missing"},
	{"nodes/0/port", "70000", "c.json:nodes[0].port: 70000 is not in"},
	{"nodes/0/port", "\"80\"", "c.json:nodes[0].port: must be a number"},
	{"nodes/0/port", NULL, "c.json:nodes[0].port: missing"},
	{"nodes/0/host", "\"\"", "c.json:nodes[0].host: must be an address"},
	{"nodes/0/host", NULL, "c.json:nodes[0].host: must be an address"},
	{"nodes/0/color", "1", "c.json:nodes[0]: unknown field 'color'"},
	{"nodes/0/port", "7001", "nodes 0 and 1 both have address"},
	{"vcpus", NULL, "c.json:vcpus: missing"},
	{"vcpus", "[]", "c.json:vcpus: must be a list of 1 to 64"},
	{"vcpus/0", "1",
	 "c.json:vcpus[0]: the boot vCPU must be on node 0, not 1"},
	{"vcpus/1", "5", "c.json:vcpus[1]: node 5 is not in nodes"},
	{"vcpus/0", "\"0\"", "c.json:vcpus[0]: must be a node id"},
	{"devices", "{}", "c.json:devices: must be a list"},
	{"devices/0", "\"disk\"", "c.json:devices[0]: must be an object"},
	{"devices/0/type", NULL, "c.json:devices[0].type: missing"},
	{"devices/0/type", "\"floppy\"", "'floppy' is not disk, net"},
	{"devices/0/node", NULL, "c.json:devices[0].node: missing"},
	{"devices/0/node", "9", "c.json:devices[0].node:"},
	{"devices/0/path", NULL, "c.json:devices[0].path: missing"},
	{"devices/0/readonly", "\"yes\"", "devices[0].readonly: must be true"},
	{"devices/0/size", "1", "c.json:devices[0]: unknown field 'size'"},
	{"devices/1/mac", "\"zz\"", "c.json:devices[1].mac: must be like"},
	{"devices/1/tap", "\"a-very-long-tap-name\"", "1 to 15 characters"},
	{"devices/2/path", "\"x\"", "c.json:devices[2]: unknown field 'path'"},
	{"devices/4", "{\"type\": \"rng\", \"node\": 0}",
	 "c.json:devices[4].type: at most 1 rng devices"},
	{"devices/1/queues", "0", "c.json:devices[1].queues: 0 is not in 1..7"},
	{"devices/1/queues", "8", "c.json:devices[1].queues: 8 is not in"},
	{"devices/1/pairs", "[]", "devices[1].pairs: must be a list of 1 to 7"},
	{"devices/1/pairs", "[{\"node\": 1, \"tap\": \"tap0\"}]",
	 "devices[1].pairs[0].node: pair 0 is the device: node 1"},
	{"devices/1/pairs", "[{\"node\": 0, \"tap\": \"x\"}]",
	 "devices[1].pairs[0].tap: pair 0's tap is the device's"},
	{"devices/1/pairs",
	 "[{\"node\": 0, \"tap\": \"tap0\"}, {\"tap\": \"t\"}]",
	 "devices[1].pairs[1].node: missing"},
	{"devices/1/pairs", "[{\"node\": 0, \"tap\": \"tap0\"}, {\"node\": 2}]",
	 "devices[1].pairs[1].node: 2 is not in 0..1"},
	{"devices/1/pairs",
	 "[{\"node\": 0, \"tap\": \"tap0\"}, {\"node\": 1, \"x\": 1}]",
	 "devices[1].pairs[1]: unknown field 'x'"},
	{"devices/1/pairs", "[{\"node\": 0, \"tap\": \"tap0\"}, 5]",
	 "devices[1].pairs[1]: must be an object"},
	{"devices/1/pairs",
	 "[{\"node\": 0, \"tap\": \"tap0\"}, {\"node\": 1, \"tap\": \"\"}]",
	 "devices[1].pairs[1].tap: a tap name has 1 to 15"},
	{"doorbell", "\"sometimes\"", "c.json:doorbell: must be"},
	{"heartbeat_ms", "5", "c.json:heartbeat_ms: 5 is not in"},
	{"dead_after_ms", "300", "must be at least two heartbeats"},
	{"colour", "\"blue\"", "c.json:colour: unknown field 'colour'"},
};

static void test_invalid_files(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *b = &bad_cases[i];
		json_t *root = json_loads(valid_doc, 0, NULL);
		struct cluster_config c;
		struct err e = {0};
		char *text;
		int rc;

		assert_non_null(root);
		set_path(root, b->path, b->value);
		text = json_dumps(root, 0);
		json_decref(root);
		rc = cluster_config_parse(&c, text, "c.json", &e);
		free(text);
		if (rc == 0 || !strstr(e.msg, b->msg))
			fail_msg("case %zu (%s = %s): got \"%s\", want \"%s\"",
				 i, b->path, b->value ? b->value : "deleted",
				 rc ? e.msg : "accepted", b->msg);
		assert_int_equal(rc, -EINVAL);
		assert_null(strchr(e.msg, '\n'));
	}
}

/* A multiqueue NIC: pairs on two nodes, through the file and back. */
static void test_net_pairs(void **state)
{
	static const char *const pairs =
		"[{\"node\": 0, \"tap\": \"tap0\"}, {\"node\": 1, "
		"\"tap\": \"tapb\"}, {\"node\": 1}]";
	json_t *root = json_loads(valid_doc, 0, NULL);
	struct cluster_config c, back;
	struct machine_config mc;
	struct err e = {0};
	char *text, *dir = make_tmpdir(), path[256];

	(void)state;
	set_path(root, "devices/1/pairs", pairs);
	text = json_dumps(root, 0);
	json_decref(root);
	assert_int_equal(cluster_config_parse(&c, text, "c.json", &e), 0);
	free(text);
	assert_int_equal(c.dev[1].npairs, 3);
	assert_int_equal(c.dev[1].pair[1].node, 1);
	assert_string_equal(c.dev[1].pair[1].tap, "tapb");
	assert_null(c.dev[1].pair[2].tap);
	cluster_config_machine(&c, &mc);
	assert_int_equal(mc.nic[0].npairs, 3);
	assert_int_equal(mc.nic[0].node, 0);
	assert_string_equal(mc.nic[0].pair[1].tap, "tapb");
	assert_int_equal(mc.nic[0].pair[2].node, 1);

	snprintf(path, sizeof(path), "%s/cluster.json", dir);
	assert_int_equal(cluster_config_save(&c, path, &e), 0);
	assert_int_equal(cluster_config_load(&back, path, &e), 0);
	assert_int_equal(back.dev[1].npairs, 3);
	assert_int_equal(back.dev[1].pair[2].node, 1);
	assert_string_equal(back.dev[1].pair[1].tap, "tapb");
	cluster_config_free(&back);
	cluster_config_free(&c);
	remove_in(dir, "cluster.json");
	rmdir(dir);
	free(dir);

	/* queues: N pairs on the home node's tap */
	root = json_loads(valid_doc, 0, NULL);
	set_path(root, "devices/1/queues", "4");
	text = json_dumps(root, 0);
	json_decref(root);
	assert_int_equal(cluster_config_parse(&c, text, "c.json", &e), 0);
	free(text);
	assert_int_equal(c.dev[1].npairs, 4);
	assert_int_equal(c.dev[1].pair[3].node, 0);
	assert_string_equal(c.dev[1].pair[3].tap, "tap0");
	cluster_config_free(&c);

	/* not both */
	root = json_loads(valid_doc, 0, NULL);
	set_path(root, "devices/1/queues", "2");
	set_path(root, "devices/1/pairs", pairs);
	text = json_dumps(root, 0);
	json_decref(root);
	assert_int_not_equal(cluster_config_parse(&c, text, "c.json", &e), 0);
	assert_non_null(strstr(e.msg, "both queues and pairs"));
	free(text);
}

static void test_not_json(void **state)
{
	struct cluster_config c;
	struct err e = {0};

	(void)state;
	assert_int_equal(
		cluster_config_parse(&c, "{\"nodes\": [", "c.json", &e),
		-EINVAL);
	assert_non_null(strstr(e.msg, "c.json:1:"));
	assert_int_equal(cluster_config_parse(&c, "[1]", "c.json", &e),
			 -EINVAL);
	assert_non_null(strstr(e.msg, "must be a JSON object"));
	assert_int_equal(cluster_config_parse(&c,
					      "{\"kernel\": \"a\", "
					      "\"kernel\": \"b\"}",
					      "c.json", &e),
			 -EINVAL);
	assert_non_null(strstr(e.msg, "duplicate"));
	assert_int_equal(cluster_config_load(&c, "/nonexistent/c.json", &e),
			 -EINVAL);
	assert_non_null(strstr(e.msg, "/nonexistent/c.json"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_file),
		cmocka_unit_test(test_machine_and_transport),
		cmocka_unit_test(test_save_and_load),
		cmocka_unit_test(test_secret_file),
		cmocka_unit_test(test_invalid_files),
		cmocka_unit_test(test_net_pairs),
		cmocka_unit_test(test_not_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
