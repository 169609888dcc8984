/*
 * tests/unit/test_api.c - the control socket: api_handle_line against a fake
 * VM for every command, bad input and errno mapping; the server over a real
 * socket (split and pipelined requests, over-long lines, garbage, slow and
 * surplus clients, in-use / stale / non-socket paths); and the ctl client.
 * No sleeps: every wait is a poll with a timeout that fails the test.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/api.h"

#define WAIT_MS 5000

/* ------------------------------------------------------------------ */
/* A fake VM                                                           */
/* ------------------------------------------------------------------ */

struct fake_vm {
	atomic_int pause_calls, resume_calls, stop_calls;
	atomic_int status_calls, stats_calls;
	atomic_int pause_rc, resume_rc, stop_rc; /* forced when nonzero */
	atomic_bool paused;
	atomic_bool status_fails;
};

static int fake_pause(void *ctx)
{
	struct fake_vm *vm = ctx;

	vm->pause_calls++;
	if (vm->pause_rc)
		return vm->pause_rc;
	if (vm->paused)
		return -EALREADY;
	vm->paused = true;
	return 0;
}

static int fake_resume(void *ctx)
{
	struct fake_vm *vm = ctx;

	vm->resume_calls++;
	if (vm->resume_rc)
		return vm->resume_rc;
	if (!vm->paused)
		return -EALREADY;
	vm->paused = false;
	return 0;
}

static int fake_stop(void *ctx)
{
	struct fake_vm *vm = ctx;

	vm->stop_calls++;
	return vm->stop_rc;
}

static json_t *fake_status(void *ctx)
{
	struct fake_vm *vm = ctx;

	vm->status_calls++;
	if (vm->status_fails)
		return NULL;
	/* An "ok" of its own must not override the server's. */
	return json_pack("{s:s,s:i,s:b}", "state",
			 vm->paused ? "paused" : "running", "vcpus", 2, "ok",
			 0);
}

static json_t *fake_stats(void *ctx)
{
	struct fake_vm *vm = ctx;

	vm->stats_calls++;
	return json_pack("{s:I,s:I}", "exits", (json_int_t)42, "io_exits",
			 (json_int_t)7);
}

/* ------------------------------------------------------------------ */
/* Fixture                                                             */
/* ------------------------------------------------------------------ */

struct fixture {
	struct fake_vm vm;
	struct api_ops ops;
	struct api_server server;
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->ops = (struct api_ops){.pause = fake_pause,
				  .resume = fake_resume,
				  .stop = fake_stop,
				  .status = fake_status,
				  .stats = fake_stats,
				  .ctx = &f->vm};
	strcpy(f->dir, "/tmp/dvmm-test-api-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/ctl.sock", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char junk[192];

	api_server_stop(&f->server);
	unlink(f->path);
	snprintf(junk, sizeof(junk), "%s/out", f->dir);
	unlink(junk);
	snprintf(junk, sizeof(junk), "%s/err", f->dir);
	unlink(junk);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* ------------------------------------------------------------------ */
/* api_handle_line                                                     */
/* ------------------------------------------------------------------ */

/* The reply to @line, checked to be exactly one line of a JSON object. */
static json_t *handle(const struct api_ops *ops, const char *line)
{
	char *text = api_handle_line(ops, line);
	json_error_t jerr;
	json_t *reply;

	assert_non_null(text);
	assert_null(strchr(text, '\n'));
	reply = json_loads(text, 0, &jerr);
	free(text);
	assert_non_null(reply);
	assert_true(json_is_object(reply));
	return reply;
}

static void check_ok(json_t *reply)
{
	assert_true(json_is_true(json_object_get(reply, "ok")));
	assert_null(json_object_get(reply, "error"));
}

static void check_error(json_t *reply, const char *want)
{
	assert_true(json_is_false(json_object_get(reply, "ok")));
	assert_string_equal(json_string_value(json_object_get(reply, "error")),
			    want);
}

static void check_error_prefix(json_t *reply, const char *prefix)
{
	const char *err;

	assert_true(json_is_false(json_object_get(reply, "ok")));
	err = json_string_value(json_object_get(reply, "error"));
	assert_non_null(err);
	assert_memory_equal(err, prefix, strlen(prefix));
}

static void expect_error(const struct api_ops *ops, const char *line,
			 const char *want)
{
	json_t *reply = handle(ops, line);

	check_error(reply, want);
	json_decref(reply);
}

static void test_status_merges_fields(void **state)
{
	struct fixture *f = *state;
	json_t *reply = handle(&f->ops, "{\"cmd\":\"status\"}");

	check_ok(reply);
	assert_string_equal(json_string_value(json_object_get(reply, "state")),
			    "running");
	assert_int_equal(json_integer_value(json_object_get(reply, "vcpus")),
			 2);
	assert_int_equal(f->vm.status_calls, 1);
	json_decref(reply);
}

static void test_status_failure(void **state)
{
	struct fixture *f = *state;

	f->vm.status_fails = true;
	expect_error(&f->ops, "{\"cmd\":\"status\"}",
		     "cannot get the VM status: the VM gave no answer");
}

static void test_stats_merges_fields(void **state)
{
	struct fixture *f = *state;
	json_t *reply = handle(&f->ops, " {\"cmd\": \"stats\"} \r");

	check_ok(reply);
	assert_int_equal(json_integer_value(json_object_get(reply, "exits")),
			 42);
	assert_int_equal(json_integer_value(json_object_get(reply, "io_exits")),
			 7);
	assert_int_equal(f->vm.stats_calls, 1);
	json_decref(reply);
}

static void test_pause_resume(void **state)
{
	struct fixture *f = *state;
	json_t *reply;

	reply = handle(&f->ops, "{\"cmd\":\"pause\"}");
	check_ok(reply);
	assert_int_equal(json_object_size(reply), 1);
	json_decref(reply);
	assert_true(f->vm.paused);

	expect_error(&f->ops, "{\"cmd\":\"pause\"}", "already paused");
	assert_int_equal(f->vm.pause_calls, 2);

	reply = handle(&f->ops, "{\"cmd\":\"resume\"}");
	check_ok(reply);
	json_decref(reply);
	assert_false(f->vm.paused);

	expect_error(&f->ops, "{\"cmd\":\"resume\"}", "already running");
	assert_int_equal(f->vm.resume_calls, 2);
}

static void test_stop(void **state)
{
	struct fixture *f = *state;
	json_t *reply = handle(&f->ops, "{\"cmd\":\"stop\",\"extra\":[1]}");

	check_ok(reply);
	json_decref(reply);
	assert_int_equal(f->vm.stop_calls, 1);

	f->vm.stop_rc = -EALREADY;
	expect_error(&f->ops, "{\"cmd\":\"stop\"}", "already stopping");
	assert_int_equal(f->vm.stop_calls, 2);
}

static void test_error_text_mapping(void **state)
{
	static const struct {
		int rc;
		const char *text;
	} cases[] = {
		{-EINVAL, "cannot stop the VM in its current state"},
		{-ENOSYS, "'stop' is not supported by this VM"},
		{-EOPNOTSUPP, "'stop' is not supported by this VM"},
		{-EBUSY, "the VM is busy; try again"},
		{-EAGAIN, "the VM is busy; try again"},
		{-ESHUTDOWN, "the VM is shutting down"},
		{-ENOMEM, "out of memory"},
		{-EIO, "cannot stop the VM: input/output error"},
		{-EPERM, "cannot stop the VM: operation not permitted"},
	};
	struct fixture *f = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		f->vm.stop_rc = cases[i].rc;
		expect_error(&f->ops, "{\"cmd\":\"stop\"}", cases[i].text);
	}
	f->vm.pause_rc = -EINVAL;
	expect_error(&f->ops, "{\"cmd\":\"pause\"}",
		     "cannot pause the VM in its current state");
}

/* device-switch: what the op receives, and what the API refuses. */
struct fake_switch {
	char device[64], path[128];
	int calls, rc;
};

static int fake_device_switch(void *ctx, const char *device, const char *path,
			      json_t **out, char *why, size_t whylen)
{
	struct fake_switch *s = ctx;

	s->calls++;
	snprintf(s->device, sizeof(s->device), "%s", device);
	snprintf(s->path, sizeof(s->path), "%s", path);
	if (s->rc) {
		snprintf(why, whylen, "disk agent gone");
		return s->rc;
	}
	*out = json_pack("{s:s, s:f}", "device", "virtio-blk:x", "paused_ms",
			 1.5);
	return 0;
}

static void test_device_switch_request(void **state)
{
	struct fake_switch sw = {0};
	struct api_ops ops = {.device_switch = fake_device_switch, .ctx = &sw};
	struct api_ops none = {0};
	json_t *reply;

	(void)state;
	reply = handle(&ops, "{\"cmd\":\"device-switch\",\"device\":\"0\","
			     "\"path\":\"/srv/local.img\"}");
	check_ok(reply);
	assert_string_equal(json_string_value(json_object_get(reply, "device")),
			    "virtio-blk:x");
	json_decref(reply);
	assert_int_equal(sw.calls, 1);
	assert_string_equal(sw.device, "0");
	assert_string_equal(sw.path, "/srv/local.img");

	expect_error(&ops, "{\"cmd\":\"device-switch\",\"device\":\"0\"}",
		     "device-switch needs \"device\" (a disk's index or "
		     "name) and \"path\" (the local copy)");
	expect_error(&ops, "{\"cmd\":\"device-switch\",\"path\":\"/x\"}",
		     "device-switch needs \"device\" (a disk's index or "
		     "name) and \"path\" (the local copy)");
	expect_error(&ops,
		     "{\"cmd\":\"device-switch\",\"device\":0,\"path\":\"/x\"}",
		     "device-switch needs \"device\" (a disk's index or "
		     "name) and \"path\" (the local copy)");
	expect_error(
		&ops,
		"{\"cmd\":\"device-switch\",\"device\":\"\",\"path\":\"/x\"}",
		"device-switch needs \"device\" (a disk's index or "
		"name) and \"path\" (the local copy)");
	assert_int_equal(sw.calls, 1);
	sw.rc = -EIO;
	expect_error(&ops,
		     "{\"cmd\":\"device-switch\",\"device\":\"virtio-blk:x\","
		     "\"path\":\"/x\"}",
		     "cannot switch the device: disk agent gone");
	assert_string_equal(sw.device, "virtio-blk:x");
	expect_error(
		&none,
		"{\"cmd\":\"device-switch\",\"device\":\"0\",\"path\":\"/x\"}",
		"cannot switch the device: not supported here");
}

static void test_missing_ops(void **state)
{
	struct api_ops none = {0};

	(void)state;
	expect_error(&none, "{\"cmd\":\"pause\"}",
		     "'pause' is not supported by this VM");
	expect_error(&none, "{\"cmd\":\"stats\"}",
		     "'stats' is not supported by this VM");
	expect_error(NULL, "{\"cmd\":\"status\"}",
		     "'status' is not supported by this VM");
}

static void test_bad_input(void **state)
{
	struct fixture *f = *state;
	json_t *reply;

	reply = handle(&f->ops, "{\"cmd\":");
	check_error_prefix(reply, "invalid JSON: ");
	json_decref(reply);
	reply = handle(&f->ops, "{\"cmd\":\"pause\",\"cmd\":\"stop\"}");
	check_error_prefix(reply, "invalid JSON: ");
	json_decref(reply);
	reply = handle(&f->ops, "\xff\xfe");
	check_error_prefix(reply, "invalid JSON: ");
	json_decref(reply);

	expect_error(
		&f->ops, "[\"status\"]",
		"request must be a JSON object, e.g. {\"cmd\":\"status\"}");
	expect_error(
		&f->ops, "\"status\"",
		"request must be a JSON object, e.g. {\"cmd\":\"status\"}");
	expect_error(&f->ops, "{\"command\":\"status\"}",
		     "missing \"cmd\"; e.g. {\"cmd\":\"status\"}");
	expect_error(&f->ops, "{\"cmd\":7}",
		     "\"cmd\" must be a string, e.g. {\"cmd\":\"status\"}");
	expect_error(&f->ops, "{\"cmd\":\"x\"}",
		     "unknown command 'x'; try status, pause, resume, stop, "
		     "stats, migrate-status");
	expect_error(&f->ops, "{\"cmd\":\"Status\"}",
		     "unknown command 'Status'; try status, pause, resume, "
		     "stop, stats, migrate-status");
	expect_error(&f->ops, "",
		     "empty request; send one JSON object per line, e.g. "
		     "{\"cmd\":\"status\"}");
	expect_error(&f->ops, " \t",
		     "empty request; send one JSON object per line, e.g. "
		     "{\"cmd\":\"status\"}");
	expect_error(NULL, NULL,
		     "empty request; send one JSON object per line, e.g. "
		     "{\"cmd\":\"status\"}");

	assert_int_equal(f->vm.pause_calls + f->vm.stop_calls, 0);
	assert_int_equal(f->vm.status_calls, 0);
}

/* A long non-ASCII command name is cut, and the reply stays valid JSON. */
static void test_unknown_long_utf8_command(void **state)
{
	struct fixture *f = *state;
	char line[512] = "{\"cmd\":\"";
	json_t *reply;

	for (int i = 0; i < 60; i++)
		strcat(line, "\xc3\xa9"); /* U+00E9, two bytes */
	strcat(line, "\"}");
	reply = handle(&f->ops, line);
	check_error_prefix(reply, "unknown command '");
	json_decref(reply);
}

/* ------------------------------------------------------------------ */
/* Socket helpers                                                      */
/* ------------------------------------------------------------------ */

/* One client connection with a buffer for replies not yet consumed. */
struct conn {
	int fd;
	size_t len;
	char buf[16384];
};

static void start_server(struct fixture *f)
{
	char err[256] = "";
	int rc = api_server_start(&f->server, f->path, &f->ops, err,
				  sizeof(err));

	if (rc)
		fail_msg("api_server_start: %d %s", rc, err);
}

static int connect_path(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(addr.sun_path));
	strcpy(addr.sun_path, path);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static struct conn *conn_open(const char *path)
{
	struct conn *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->fd = connect_path(path);
	assert_true(c->fd >= 0);
	return c;
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c);
}

static void send_bytes(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		assert_true(n > 0);
		buf += n;
		len -= (size_t)n;
	}
}

static void send_str(struct conn *c, const char *s)
{
	send_bytes(c->fd, s, strlen(s));
}

static void wait_in(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	int rc;

	do
		rc = poll(&pfd, 1, WAIT_MS);
	while (rc < 0 && errno == EINTR);
	if (rc != 1)
		fail_msg("no data from the server within %d ms", WAIT_MS);
}

/* Next reply line, parsed; fails the test on timeout or EOF. */
static json_t *read_reply(struct conn *c)
{
	json_error_t jerr;
	json_t *reply;
	char *nl;

	while (!(nl = memchr(c->buf, '\n', c->len))) {
		ssize_t n;

		assert_true(c->len < sizeof(c->buf));
		wait_in(c->fd);
		n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
		if (n <= 0)
			fail_msg("server closed the connection (%zd)", n);
		c->len += (size_t)n;
	}
	reply = json_loadb(c->buf, (size_t)(nl - c->buf), 0, &jerr);
	if (!reply)
		fail_msg("bad reply line: %s", jerr.text);
	c->len -= (size_t)(nl + 1 - c->buf);
	memmove(c->buf, nl + 1, c->len);
	return reply;
}

static void expect_reply_ok(struct conn *c)
{
	json_t *reply = read_reply(c);

	check_ok(reply);
	json_decref(reply);
}

static void expect_reply_error(struct conn *c, const char *prefix)
{
	json_t *reply = read_reply(c);

	check_error_prefix(reply, prefix);
	json_decref(reply);
}

/* The server closed @c: nothing but EOF (or a reset) left to read. */
static void expect_eof(struct conn *c)
{
	char byte;
	ssize_t n;

	assert_int_equal(c->len, 0);
	wait_in(c->fd);
	n = recv(c->fd, &byte, 1, 0);
	assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
}

static void status_round_trip(const char *path)
{
	struct conn *c = conn_open(path);

	send_str(c, "{\"cmd\":\"status\"}\n");
	expect_reply_ok(c);
	conn_close(c);
}

static bool path_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* ------------------------------------------------------------------ */
/* Server                                                              */
/* ------------------------------------------------------------------ */

static void test_socket_round_trip(void **state)
{
	struct fixture *f = *state;
	struct conn *c;
	json_t *reply;

	start_server(f);
	c = conn_open(f->path);
	/* A whole request and the start of the next in one write... */
	send_str(c, "{\"cmd\":\"pause\"}\n{\"cmd\":\"sta");
	expect_reply_ok(c);
	assert_int_equal(f->vm.pause_calls, 1);
	/* ...and its end in another. */
	send_str(c, "tus\"}\n");
	reply = read_reply(c);
	check_ok(reply);
	assert_string_equal(json_string_value(json_object_get(reply, "state")),
			    "paused");
	json_decref(reply);

	/* Pipelined: three requests in one write, three replies in order. */
	send_str(c, "{\"cmd\":\"resume\"}\n{\"cmd\":\"resume\"}\n"
		    "{\"cmd\":\"stats\"}\n");
	expect_reply_ok(c);
	expect_reply_error(c, "already running");
	reply = read_reply(c);
	check_ok(reply);
	assert_int_equal(json_integer_value(json_object_get(reply, "exits")),
			 42);
	json_decref(reply);
	conn_close(c);
}

static void test_socket_overlong_line(void **state)
{
	struct fixture *f = *state;
	char *big = malloc(API_MAX_LINE + 1);
	struct conn *c;

	assert_non_null(big);
	memset(big, 'x', API_MAX_LINE + 1);
	start_server(f);
	c = conn_open(f->path);
	/* The error comes as soon as the limit is passed, before a newline. */
	send_bytes(c->fd, big, API_MAX_LINE + 1);
	expect_reply_error(c, "request too long (more than 4096 bytes");
	/* The rest of that line is discarded, across several writes. */
	send_bytes(c->fd, big, API_MAX_LINE + 1);
	send_str(c, "{\"cmd\":\"pause\"}\n{\"cmd\":\"status\"}\n");
	expect_reply_ok(c);
	assert_int_equal(f->vm.pause_calls, 0);
	assert_int_equal(f->vm.status_calls, 1);

	/* Over-long with its newline in the same write: one error only. */
	send_bytes(c->fd, big, API_MAX_LINE + 1);
	send_str(c, "\n{\"cmd\":\"status\"}\n");
	expect_reply_error(c, "request too long");
	expect_reply_ok(c);
	conn_close(c);
	free(big);
}

static void test_socket_max_line_accepted(void **state)
{
	static const char req[] = "{\"cmd\":\"status\"}";
	struct fixture *f = *state;
	char *line = malloc(API_MAX_LINE + 1);
	struct conn *c;

	assert_non_null(line);
	memset(line, ' ', API_MAX_LINE);
	memcpy(line, req, strlen(req));
	line[API_MAX_LINE] = '\n';
	start_server(f);
	c = conn_open(f->path);
	send_bytes(c->fd, line, API_MAX_LINE + 1);
	expect_reply_ok(c);
	conn_close(c);
	free(line);
}

static void test_socket_garbage_keeps_connection(void **state)
{
	static const char garbage[] = "\xff\x00\xfe\n";
	struct fixture *f = *state;
	struct conn *c;

	start_server(f);
	c = conn_open(f->path);
	send_bytes(c->fd, garbage, sizeof(garbage) - 1);
	send_str(c, "nonsense\n[1]\n\n{\"cmd\":7}\n{\"cmd\":\"status\"}\n");
	expect_reply_error(c, "invalid JSON: ");
	expect_reply_error(c, "invalid JSON: ");
	expect_reply_error(c, "request must be a JSON object");
	expect_reply_error(c, "empty request");
	expect_reply_error(c, "\"cmd\" must be a string");
	expect_reply_ok(c);
	conn_close(c);
}

static void test_socket_disconnect_mid_line(void **state)
{
	struct fixture *f = *state;
	struct conn *a, *b;

	start_server(f);
	a = conn_open(f->path);
	b = conn_open(f->path);
	send_str(a, "{\"cmd\":\"pau");
	conn_close(a);
	send_str(b, "{\"cmd\":\"status\"}\n");
	expect_reply_ok(b);
	conn_close(b);
	/* The half line was dropped, not run. */
	assert_int_equal(f->vm.pause_calls, 0);
}

static void test_socket_in_use(void **state)
{
	struct fixture *f = *state;
	struct api_server second;
	char err[256] = "", want[256];

	start_server(f);
	assert_true(api_server_start(&second, f->path, &f->ops, err,
				     sizeof(err)) < 0);
	snprintf(want, sizeof(want),
		 "control socket %s is in use by another process", f->path);
	assert_string_equal(err, want);
	api_server_stop(&second); /* harmless on a failed start */
	/* The failed start left the running server alone. */
	status_round_trip(f->path);
}

static void test_socket_stop_removes_path(void **state)
{
	struct fixture *f = *state;
	struct conn *idle, *partial;

	start_server(f);
	assert_true(path_exists(f->path));
	idle = conn_open(f->path);
	partial = conn_open(f->path);
	send_str(partial, "{\"cmd\":");
	status_round_trip(f->path);

	api_server_stop(&f->server);
	assert_false(path_exists(f->path));
	assert_int_equal(connect_path(f->path), -1);
	expect_eof(idle);
	expect_eof(partial);
	conn_close(idle);
	conn_close(partial);
	api_server_stop(&f->server); /* twice is fine */
}

static void test_socket_stale_reused(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	/* A socket file left behind by a dead process. */
	assert_true(fd >= 0);
	strcpy(addr.sun_path, f->path);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	close(fd);
	assert_true(path_exists(f->path));

	start_server(f);
	status_round_trip(f->path);
}

static void test_socket_not_a_socket(void **state)
{
	struct fixture *f = *state;
	char err[256] = "", want[256], content[16] = "";
	int fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep me", 7), 7);
	close(fd);

	assert_true(api_server_start(&f->server, f->path, &f->ops, err,
				     sizeof(err)) < 0);
	snprintf(want, sizeof(want),
		 "control socket %s exists and is not a socket; leaving it "
		 "alone",
		 f->path);
	assert_string_equal(err, want);

	fd = open(f->path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, content, sizeof(content) - 1), 7);
	close(fd);
	assert_string_equal(content, "keep me");
}

static void test_socket_path_too_long(void **state)
{
	struct fixture *f = *state;
	char path[200], err[512] = "";

	memset(path, 'a', sizeof(path) - 1);
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(
		api_server_start(&f->server, path, &f->ops, err, sizeof(err)),
		-ENAMETOOLONG);
	assert_non_null(strstr(err, "is too long (max 107 bytes)"));
	assert_int_equal(
		api_server_start(&f->server, "", &f->ops, err, sizeof(err)),
		-EINVAL);
	assert_string_equal(err, "control socket path is empty");
}

static void test_socket_too_many_clients(void **state)
{
	struct fixture *f = *state;
	struct conn *c[API_MAX_CLIENTS], *extra;

	start_server(f);
	for (int i = 0; i < API_MAX_CLIENTS; i++) {
		c[i] = conn_open(f->path);
		send_str(c[i], "{\"cmd\":\"status\"}\n");
		expect_reply_ok(c[i]);
	}
	extra = conn_open(f->path);
	expect_reply_error(extra, "too many control clients (max 16)");
	expect_eof(extra);
	conn_close(extra);

	/* A freed slot can be used again. */
	conn_close(c[0]);
	c[0] = conn_open(f->path);
	send_str(c[0], "{\"cmd\":\"status\"}\n");
	expect_reply_ok(c[0]);
	for (int i = 0; i < API_MAX_CLIENTS; i++)
		conn_close(c[i]);
}

/*
 * A client that sends requests but never reads the replies is dropped once
 * its replies no longer fit; another client is served all along.
 */
static void test_socket_blocked_client_dropped(void **state)
{
	static const char req[] = "{\"cmd\":\"stats\"}\n";
	struct fixture *f = *state;
	struct conn *hog, *good;
	bool dropped = false;

	start_server(f);
	hog = conn_open(f->path);
	good = conn_open(f->path);
	for (int i = 0; i < 1000000 && !dropped; i++) {
		ssize_t n = send(hog->fd, req, sizeof(req) - 1,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
			dropped = true;
		} else if (n < 0 && errno == EAGAIN) {
			struct pollfd pfd = {.fd = hog->fd, .events = POLLOUT};

			if (poll(&pfd, 1, WAIT_MS) != 1)
				fail_msg("server stopped reading the hog");
		} else {
			/* A short write would split a request: fine too. */
			assert_true(n > 0);
		}
		if (i % 1000 == 0) {
			send_str(good, "{\"cmd\":\"status\"}\n");
			expect_reply_ok(good);
		}
	}
	assert_true(dropped);
	send_str(good, "{\"cmd\":\"status\"}\n");
	expect_reply_ok(good);
	conn_close(hog);
	conn_close(good);
}

/* ------------------------------------------------------------------ */
/* The ctl client                                                      */
/* ------------------------------------------------------------------ */

struct ctl_result {
	int rc;
	char out[4096];
	char err[1024];
};

static void slurp(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, len - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
}

static int redirect(int target, const char *path)
{
	int saved = dup(target);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(saved >= 0 && fd >= 0);
	assert_true(dup2(fd, target) >= 0);
	close(fd);
	return saved;
}

static void restore(int target, int saved)
{
	assert_true(dup2(saved, target) >= 0);
	close(saved);
}

/* Run `dvmm ctl ARGS...` with stdout and stderr captured. */
static void run_ctl(struct fixture *f, struct ctl_result *r, int argc,
		    char **argv)
{
	char out[192], err[192];
	int saved_out, saved_err;

	snprintf(out, sizeof(out), "%s/out", f->dir);
	snprintf(err, sizeof(err), "%s/err", f->dir);
	fflush(stdout);
	fflush(stderr);
	saved_out = redirect(STDOUT_FILENO, out);
	saved_err = redirect(STDERR_FILENO, err);
	r->rc = api_client_main(argc, argv);
	fflush(stdout);
	fflush(stderr);
	restore(STDOUT_FILENO, saved_out);
	restore(STDERR_FILENO, saved_err);
	slurp(out, r->out, sizeof(r->out));
	slurp(err, r->err, sizeof(r->err));
}

static void test_ctl_status(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"ctl", f->path, "status", NULL};
	struct ctl_result r;

	start_server(f);
	run_ctl(f, &r, 3, argv);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.out, "{\n  \"ok\": true,\n  \"state\": "
				   "\"running\",\n  \"vcpus\": 2\n}\n");
	assert_string_equal(r.err, "");
}

static void test_ctl_error(void **state)
{
	struct fixture *f = *state;
	char *pause[] = {"ctl", f->path, "pause", NULL};
	char *bogus[] = {"ctl", f->path, "bogus", NULL};
	struct ctl_result r;

	start_server(f);
	run_ctl(f, &r, 3, pause);
	assert_int_equal(r.rc, 0);
	run_ctl(f, &r, 3, pause);
	assert_int_equal(r.rc, 1);
	assert_string_equal(r.err, "dvmm: already paused\n");
	assert_non_null(strstr(r.out, "\"error\": \"already paused\""));

	run_ctl(f, &r, 3, bogus);
	assert_int_equal(r.rc, 1);
	assert_string_equal(r.err, "dvmm: unknown command 'bogus'; try "
				   "status, pause, resume, stop, stats, "
				   "migrate-status\n");
}

static void test_ctl_usage(void **state)
{
	static const char usage[] =
		"usage: dvmm ctl SOCKET status|pause|resume|stop|stats\n"
		"       dvmm ctl SOCKET migrate tcp:HOST:PORT [--downtime MS] "
		"[--bandwidth MBPS] [--postcopy]\n"
		"       dvmm ctl SOCKET migrate-status\n"
		"       dvmm ctl SOCKET device-switch DEVICE PATH\n";
	struct fixture *f = *state;
	char *few[] = {"ctl", f->path, NULL};
	char *many[] = {"ctl", f->path, "status", "now", NULL};
	char *help[] = {"ctl", "--help", NULL};
	char *mig[] = {"ctl", f->path, "migrate", NULL};
	char *bad_opt[] = {"ctl",	 f->path, "migrate", "tcp:h:1",
			   "--downtime", "0",	  NULL};
	char *odd_opt[] = {"ctl",     f->path,	"migrate",
			   "tcp:h:1", "--fast", NULL};
	char *sw_short[] = {"ctl", f->path, "device-switch", "0", NULL};
	char *sw_long[] = {"ctl", f->path, "device-switch", "0", "/x", "y", 0};
	struct ctl_result r;

	run_ctl(f, &r, 2, few);
	assert_int_equal(r.rc, 2);
	assert_string_equal(r.err, usage);
	run_ctl(f, &r, 4, many);
	assert_int_equal(r.rc, 2);
	assert_string_equal(r.err, usage);
	run_ctl(f, &r, 2, help);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.out, usage);
	run_ctl(f, &r, 3, mig); /* migrate without a destination */
	assert_int_not_equal(r.rc, 0);
	run_ctl(f, &r, 6, bad_opt);
	assert_int_equal(r.rc, 2);
	assert_string_equal(r.err, usage);
	run_ctl(f, &r, 5, odd_opt);
	assert_int_equal(r.rc, 2);
	assert_string_equal(r.err, usage);
	run_ctl(f, &r, 4, sw_short); /* device-switch without a path */
	assert_int_equal(r.rc, 2);
	assert_string_equal(r.err, usage);
	run_ctl(f, &r, 6, sw_long);
	assert_int_equal(r.rc, 2);
	assert_string_equal(r.err, usage);
}

static void test_ctl_no_server(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"ctl", f->path, "status", NULL};
	struct ctl_result r;
	char want[256];

	run_ctl(f, &r, 3, argv);
	assert_int_equal(r.rc, 1);
	snprintf(want, sizeof(want),
		 "dvmm: cannot connect to control socket %s: No such file or "
		 "directory\n",
		 f->path);
	assert_string_equal(r.err, want);
	assert_string_equal(r.out, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_status_merges_fields),
		T(test_status_failure),
		T(test_stats_merges_fields),
		T(test_pause_resume),
		T(test_stop),
		T(test_error_text_mapping),
		T(test_missing_ops),
		T(test_device_switch_request),
		T(test_bad_input),
		T(test_unknown_long_utf8_command),
		T(test_socket_round_trip),
		T(test_socket_overlong_line),
		T(test_socket_max_line_accepted),
		T(test_socket_garbage_keeps_connection),
		T(test_socket_disconnect_mid_line),
		T(test_socket_in_use),
		T(test_socket_stop_removes_path),
		T(test_socket_stale_reused),
		T(test_socket_not_a_socket),
		T(test_socket_path_too_long),
		T(test_socket_too_many_clients),
		T(test_socket_blocked_client_dropped),
		T(test_ctl_status),
		T(test_ctl_error),
		T(test_ctl_usage),
		T(test_ctl_no_server),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
