/*
 * api/ctl.c - the control client, `dvmm ctl SOCKET COMMAND`: connects to a
 * running dvmm's control socket, sends one request line, waits (at most
 * CTL_TIMEOUT_MS) for the one reply line, pretty-prints it on stdout and
 * turns its "ok" into the exit status. The server is api/api.c.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "util/log.h"

#define CTL_TIMEOUT_MS 10000
#define CTL_MIGRATE_TIMEOUT_MS 600000 /* a migration copies the RAM */
#define CTL_MIGRATE_POLL_MS 50
#define CTL_MAX_REPLY (1024 * 1024)

#define CTL_EXIT_OK 0
#define CTL_EXIT_FAIL 1
#define CTL_EXIT_USAGE 2

static const char ctl_usage[] =
	"usage: dvmm ctl SOCKET status|pause|resume|stop|stats\n"
	"       dvmm ctl SOCKET migrate tcp:HOST:PORT [--downtime MS] "
	"[--bandwidth MBPS] [--postcopy]\n"
	"       dvmm ctl SOCKET migrate-status\n"
	"       dvmm ctl SOCKET device-switch DEVICE PATH";

/* A received reply line, growing as bytes arrive. */
struct ctl_buf {
	char *data;
	size_t len;
	size_t cap;
};

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Connect to @path; the send timeout also bounds a connect that waits. */
static int ctl_connect(const char *path)
{
	struct timeval tv = {.tv_sec = CTL_TIMEOUT_MS / 1000};
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		pr_err("cannot connect to control socket %s: path too long "
		       "(max %zu bytes)",
		       path, sizeof(addr.sun_path) - 1);
		return -1;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		pr_err("cannot create a socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		pr_err("cannot connect to control socket %s: %s", path,
		       errno == EAGAIN ? "timed out" : strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Send @req and a newline. Returns 0 or -1 (reported). */
static int ctl_send_request(int fd, const char *path, const json_t *req)
{
	char *line = req ? json_dumps(req, JSON_COMPACT) : NULL;
	size_t len, off = 0;
	int rc = 0;

	if (!line) {
		pr_err("cannot build the request");
		return -1;
	}
	len = strlen(line);
	line[len] = '\n'; /* replaces the NUL; sent by length */
	while (off < len + 1) {
		ssize_t n = send(fd, line + off, len + 1 - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			pr_err("cannot send to control socket %s: %s", path,
			       errno == EAGAIN ? "timed out" : strerror(errno));
			rc = -1;
			break;
		}
		off += (size_t)n;
	}
	free(line);
	return rc;
}

static int buf_reserve(struct ctl_buf *b, size_t want)
{
	char *p;
	size_t cap = b->cap ? b->cap : 4096;

	while (cap < want)
		cap *= 2;
	if (cap == b->cap)
		return 0;
	p = realloc(b->data, cap);
	if (!p)
		return -1;
	b->data = p;
	b->cap = cap;
	return 0;
}

/* Wait until @fd is readable or @deadline passes. 1: readable, 0: late. */
static int wait_readable(int fd, long long deadline)
{
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		long long left = deadline - now_ms();
		int rc;

		if (left <= 0)
			return 0;
		rc = poll(&pfd, 1, (int)left);
		if (rc < 0 && errno == EINTR)
			continue;
		return rc != 0;
	}
}

/*
 * Read up to the first newline into @b (the newline becomes a NUL).
 * Returns 0 or -1 (reported).
 */
static int ctl_read_line(int fd, const char *path, struct ctl_buf *b,
			 int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	ssize_t n;

	for (;;) {
		char *nl = b->len ? memchr(b->data, '\n', b->len) : NULL;

		if (nl) {
			*nl = '\0';
			b->len = (size_t)(nl - b->data);
			return 0;
		}
		if (b->len >= CTL_MAX_REPLY) {
			pr_err("reply from control socket %s is too long",
			       path);
			return -1;
		}
		if (!wait_readable(fd, deadline)) {
			pr_err("no reply from control socket %s within %d s",
			       path, timeout_ms / 1000);
			return -1;
		}
		if (buf_reserve(b, b->len + 4096)) {
			pr_err("out of memory reading the reply");
			return -1;
		}
		n = recv(fd, b->data + b->len, b->cap - b->len, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			pr_err("cannot read from control socket %s: %s", path,
			       strerror(errno));
			return -1;
		}
		if (n == 0) {
			pr_err("control socket %s closed the connection "
			       "without a reply",
			       path);
			return -1;
		}
		b->len += (size_t)n;
	}
}

static json_t *ctl_parse_reply(const char *path, const struct ctl_buf *b)
{
	json_error_t jerr;
	json_t *reply = json_loadb(b->data, b->len, JSON_DECODE_ANY, &jerr);

	if (!reply) {
		pr_err("invalid reply from control socket %s: %s", path,
		       jerr.text);
		return NULL;
	}
	if (!json_is_object(reply)) {
		pr_err("invalid reply from control socket %s: not an object",
		       path);
		json_decref(reply);
		return NULL;
	}
	return reply;
}

/* Print @reply pretty on stdout; its "ok" decides the exit status. */
static int ctl_print_reply(const char *path, json_t *reply)
{
	char *text = json_dumps(reply, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	const json_t *ok = json_object_get(reply, "ok");
	const char *error;

	if (text) {
		printf("%s\n", text);
		free(text);
	}
	fflush(stdout);
	if (json_is_true(ok))
		return CTL_EXIT_OK;
	if (!json_is_false(ok)) {
		pr_err("invalid reply from control socket %s: no \"ok\"", path);
		return CTL_EXIT_FAIL;
	}
	error = json_string_value(json_object_get(reply, "error"));
	pr_err("%s", error ? error : "command failed (no reason given)");
	return CTL_EXIT_FAIL;
}

static bool is_help(const char *arg)
{
	return !strcmp(arg, "-h") || !strcmp(arg, "--help");
}

/* One request, one reply (NULL: reported). */
static json_t *ctl_request(const char *path, json_t *req)
{
	struct ctl_buf b = {0};
	json_t *reply = NULL;
	int fd = ctl_connect(path);

	if (fd >= 0 && !ctl_send_request(fd, path, req) &&
	    !ctl_read_line(fd, path, &b, CTL_TIMEOUT_MS))
		reply = ctl_parse_reply(path, &b);
	if (fd >= 0)
		close(fd);
	free(b.data);
	json_decref(req);
	return reply;
}

/* One request, one reply; returns the exit status. */
static int ctl_run(const char *path, const char *cmd)
{
	json_t *reply = ctl_request(path, json_pack("{s:s}", "cmd", cmd));
	int rc = CTL_EXIT_FAIL;

	if (reply) {
		rc = ctl_print_reply(path, reply);
		json_decref(reply);
	}
	return rc;
}

static bool parse_uint_opt(const char *s, unsigned int *v)
{
	char *end;
	unsigned long n = strtoul(s, &end, 10);

	if (!*s || *end || n > 1000000)
		return false;
	*v = (unsigned int)n;
	return true;
}

/* migrate URI [--downtime MS] [--bandwidth MBPS] [--postcopy] as JSON. */
static json_t *migrate_request(int argc, char **argv)
{
	unsigned int downtime = 0, bw = 0;
	bool postcopy = false;
	json_t *req;

	for (int i = 4; i < argc; i += 2) {
		bool ok = i + 1 < argc;

		if (!strcmp(argv[i], "--postcopy")) {
			if (postcopy)
				return NULL;
			postcopy = true;
			i--; /* no value */
			continue;
		}
		if (ok && !strcmp(argv[i], "--downtime"))
			ok = parse_uint_opt(argv[i + 1], &downtime) &&
			     downtime > 0;
		else if (ok && !strcmp(argv[i], "--bandwidth"))
			ok = parse_uint_opt(argv[i + 1], &bw) && bw > 0;
		else
			ok = false;
		if (!ok)
			return NULL;
	}
	req = json_pack("{s:s, s:s}", "cmd", "migrate", "to", argv[3]);
	if (req && downtime)
		json_object_set_new(req, "downtime_ms", json_integer(downtime));
	if (req && bw)
		json_object_set_new(req, "bandwidth_mbps", json_integer(bw));
	if (req && postcopy)
		json_object_set_new(req, "postcopy", json_true());
	return req;
}

/*
 * Start the migration, then follow migrate-status until it completed or
 * failed; print the last status. Exit status 0 only when the VM moved.
 */
static int ctl_migrate(const char *path, json_t *req)
{
	long long deadline = now_ms() + CTL_MIGRATE_TIMEOUT_MS;
	json_t *reply = ctl_request(path, req);
	int rc = CTL_EXIT_FAIL;

	if (!reply)
		return CTL_EXIT_FAIL;
	if (!json_is_true(json_object_get(reply, "ok"))) {
		rc = ctl_print_reply(path, reply);
		json_decref(reply);
		return rc;
	}
	for (;;) {
		struct timespec ts = {0, CTL_MIGRATE_POLL_MS * 1000000L};
		const char *st;

		json_decref(reply);
		reply = ctl_request(
			path, json_pack("{s:s}", "cmd", "migrate-status"));
		if (!reply)
			return CTL_EXIT_FAIL;
		st = json_string_value(json_object_get(reply, "status"));
		if (st && (!strcmp(st, "completed") || !strcmp(st, "failed")))
			break;
		if (now_ms() > deadline) {
			pr_err("the migration did not finish within %d s",
			       CTL_MIGRATE_TIMEOUT_MS / 1000);
			json_decref(reply);
			return CTL_EXIT_FAIL;
		}
		nanosleep(&ts, NULL);
	}
	rc = ctl_print_reply(path, reply);
	if (rc == CTL_EXIT_OK &&
	    strcmp(json_string_value(json_object_get(reply, "status")),
		   "completed")) {
		const char *why =
			json_string_value(json_object_get(reply, "error"));

		pr_err("cannot migrate the VM: %s", why ? why : "it failed");
		rc = CTL_EXIT_FAIL;
	}
	json_decref(reply);
	return rc;
}

#define CTL_SWITCH_TIMEOUT_MS 600000 /* a device-switch copies a disk */

/* device-switch DEVICE PATH: one request, answered when the copy is done. */
static int ctl_device_switch(const char *path, const char *dev,
			     const char *file)
{
	json_t *req = json_pack("{s:s, s:s, s:s}", "cmd", "device-switch",
				"device", dev, "path", file);
	struct ctl_buf b = {0};
	json_t *reply = NULL;
	int fd = ctl_connect(path), rc = CTL_EXIT_FAIL;

	if (fd >= 0 && !ctl_send_request(fd, path, req) &&
	    !ctl_read_line(fd, path, &b, CTL_SWITCH_TIMEOUT_MS))
		reply = ctl_parse_reply(path, &b);
	if (fd >= 0)
		close(fd);
	free(b.data);
	json_decref(req);
	if (reply) {
		rc = ctl_print_reply(path, reply);
		json_decref(reply);
	}
	return rc;
}

int api_client_main(int argc, char **argv)
{
	if (argc == 2 && is_help(argv[1])) {
		printf("%s\n", ctl_usage);
		return CTL_EXIT_OK;
	}
	if (argc >= 4 && !strcmp(argv[2], "migrate") && argv[3][0] &&
	    argv[1][0]) {
		json_t *req = migrate_request(argc, argv);

		if (!req) {
			fprintf(stderr, "%s\n", ctl_usage);
			return CTL_EXIT_USAGE;
		}
		return ctl_migrate(argv[1], req);
	}
	if (argc >= 3 && !strcmp(argv[2], "device-switch")) {
		if (argc != 5 || !argv[1][0] || !argv[3][0] || !argv[4][0]) {
			fprintf(stderr, "%s\n", ctl_usage);
			return CTL_EXIT_USAGE;
		}
		return ctl_device_switch(argv[1], argv[3], argv[4]);
	}
	if (argc != 3 || !argv[1][0] || !argv[2][0]) {
		fprintf(stderr, "%s\n", ctl_usage);
		return CTL_EXIT_USAGE;
	}
	return ctl_run(argv[1], argv[2]);
}
