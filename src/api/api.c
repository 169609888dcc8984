/*
 * api/api.c - the control socket server. Owns the translation of one request
 * line into one reply line (api_handle_line, the command table and the
 * errno-to-text mapping), the listening socket and its path (stale socket
 * reuse, refusing a live one), and the server thread: one poll loop over
 * the stop pipe, the listening socket and up to API_MAX_CLIENTS
 * non-blocking clients, each with its own partial-line buffer. The client
 * side is api/ctl.c.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/api.h"
#include "util/log.h"
#include "util/thread.h"

#define API_EXAMPLE "{\"cmd\":\"status\"}"
#define API_ERR_MAX 512

/* ------------------------------------------------------------------ */
/* Request handling                                                    */
/* ------------------------------------------------------------------ */

struct api_cmd {
	const char *name;
	/* Exactly one of action and query is set. */
	int (*action)(const struct api_ops *ops);
	int (*query)(const struct api_ops *ops, json_t **out);
	const char *what;    /* "pause the VM": completes "cannot ..." */
	const char *already; /* reply text for -EALREADY, or NULL */
};

static int do_pause(const struct api_ops *ops)
{
	return ops->pause ? ops->pause(ops->ctx) : -ENOSYS;
}

static int do_resume(const struct api_ops *ops)
{
	return ops->resume ? ops->resume(ops->ctx) : -ENOSYS;
}

static int do_stop(const struct api_ops *ops)
{
	return ops->stop ? ops->stop(ops->ctx) : -ENOSYS;
}

/* A query op's result: a new object, or -ENODATA when it gave none. */
static int query_result(json_t *obj, json_t **out)
{
	if (!json_is_object(obj)) {
		json_decref(obj);
		return -ENODATA;
	}
	*out = obj;
	return 0;
}

static int get_status(const struct api_ops *ops, json_t **out)
{
	if (!ops->status)
		return -ENOSYS;
	return query_result(ops->status(ops->ctx), out);
}

static int get_stats(const struct api_ops *ops, json_t **out)
{
	if (!ops->stats)
		return -ENOSYS;
	return query_result(ops->stats(ops->ctx), out);
}

static int get_migrate_status(const struct api_ops *ops, json_t **out)
{
	if (!ops->migrate_status)
		return -ENOSYS;
	return query_result(ops->migrate_status(ops->ctx), out);
}

static const struct api_cmd api_cmds[] = {
	{.name = "status", .query = get_status, .what = "get the VM status"},
	{.name = "pause",
	 .action = do_pause,
	 .what = "pause the VM",
	 .already = "already paused"},
	{.name = "resume",
	 .action = do_resume,
	 .what = "resume the VM",
	 .already = "already running"},
	{.name = "stop",
	 .action = do_stop,
	 .what = "stop the VM",
	 .already = "already stopping"},
	{.name = "stats", .query = get_stats, .what = "get the VM stats"},
	{.name = "migrate-status",
	 .query = get_migrate_status,
	 .what = "get the migration status"},
};

#define API_NCMDS (sizeof(api_cmds) / sizeof(api_cmds[0]))

static const struct api_cmd *find_cmd(const char *name)
{
	for (size_t i = 0; i < API_NCMDS; i++)
		if (!strcmp(api_cmds[i].name, name))
			return &api_cmds[i];
	return NULL;
}

/* strerror_r (GNU flavour), with the first letter lower-cased. */
static const char *errno_text(int err, char *buf, size_t len)
{
	const char *s = strerror_r(err, buf, len);

	if (s != buf) {
		snprintf(buf, len, "%s", s);
		s = buf;
	}
	if (isupper((unsigned char)buf[0]) && islower((unsigned char)buf[1]))
		buf[0] = (char)tolower((unsigned char)buf[0]);
	return s;
}

/* One line for the user explaining why @cmd failed with @rc (-errno). */
static void describe_error(const struct api_cmd *cmd, int rc, char *buf,
			   size_t len)
{
	char reason[128];

	switch (-rc) {
	case EALREADY:
		if (cmd->already) {
			snprintf(buf, len, "%s", cmd->already);
			return;
		}
		break;
	case ENOSYS:
	case EOPNOTSUPP:
		snprintf(buf, len, "'%s' is not supported by this VM",
			 cmd->name);
		return;
	case EINVAL:
		snprintf(buf, len, "cannot %s in its current state", cmd->what);
		return;
	case EBUSY:
	case EAGAIN:
		snprintf(buf, len, "the VM is busy; try again");
		return;
	case ESHUTDOWN:
	case ECANCELED:
		snprintf(buf, len, "the VM is shutting down");
		return;
	case ENOMEM:
		snprintf(buf, len, "out of memory");
		return;
	case ENODATA:
		snprintf(buf, len, "cannot %s: the VM gave no answer",
			 cmd->what);
		return;
	}
	snprintf(buf, len, "cannot %s: %s", cmd->what,
		 errno_text(-rc, reason, sizeof(reason)));
}

/* Replace bytes that could make @s invalid UTF-8 or not one line. */
static void make_printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			*s = '?';
}

static json_t *reply_ok(void)
{
	json_t *reply = json_object();

	if (reply && json_object_set_new(reply, "ok", json_true())) {
		json_decref(reply);
		return NULL;
	}
	return reply;
}

static json_t *reply_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static json_t *reply_error(const char *fmt, ...)
{
	char text[API_ERR_MAX];
	json_t *reply, *msg;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	/* Echoed input may be cut mid-character; then fall back to ASCII. */
	msg = json_string(text);
	if (!msg) {
		make_printable(text);
		msg = json_string(text);
	}
	reply = json_object();
	if (!reply || !msg || json_object_set_new(reply, "ok", json_false()) ||
	    json_object_set(reply, "error", msg)) {
		json_decref(reply);
		reply = NULL;
	}
	json_decref(msg);
	return reply;
}

static json_t *reply_unknown(const char *name)
{
	char list[128] = "";
	size_t used = 0;

	for (size_t i = 0; i < API_NCMDS && used < sizeof(list); i++)
		used += snprintf(list + used, sizeof(list) - used, "%s%s",
				 i ? ", " : "", api_cmds[i].name);
	return reply_error("unknown command '%.64s'; try %s", name, list);
}

static json_t *reply_failure(const struct api_cmd *cmd, int rc)
{
	char text[API_ERR_MAX];

	describe_error(cmd, rc, text, sizeof(text));
	return reply_error("%s", text);
}

static json_t *run_action(const struct api_ops *ops, const struct api_cmd *c)
{
	int rc = c->action(ops);

	return rc < 0 ? reply_failure(c, rc) : reply_ok();
}

/* {"ok":true} merged with the query's object; "ok" stays first and true. */
static json_t *run_query(const struct api_ops *ops, const struct api_cmd *c)
{
	json_t *data = NULL, *reply;
	int rc = c->query(ops, &data);

	if (rc < 0)
		return reply_failure(c, rc);
	reply = reply_ok();
	if (reply && (json_object_update(reply, data) ||
		      json_object_set_new(reply, "ok", json_true()))) {
		json_decref(reply);
		reply = NULL;
	}
	json_decref(data);
	return reply;
}

/*
 * The answer to an op that returns an object (@data, consumed): ok with
 * its members, or "cannot @what: @why" (strerror when @why is empty).
 */
static json_t *reply_op(int rc, json_t *data, const char *what, const char *why)
{
	json_t *reply;

	if (rc < 0) {
		json_decref(data);
		return reply_error("cannot %s: %s", what,
				   why[0] ? why : strerror(-rc));
	}
	reply = reply_ok();
	if (reply && json_is_object(data))
		json_object_update(reply, data);
	json_decref(data);
	return reply;
}

/* An optional non-negative integer member; false if it is something else. */
static bool opt_uint(const json_t *req, const char *key, unsigned int *v)
{
	const json_t *j = json_object_get(req, key);

	*v = 0;
	if (!j)
		return true;
	if (!json_is_integer(j) || json_integer_value(j) < 0 ||
	    json_integer_value(j) > 1000000)
		return false;
	*v = (unsigned int)json_integer_value(j);
	return true;
}

/*
 * {"cmd":"migrate","to":"tcp:HOST:PORT"[,"downtime_ms":N,"bandwidth_mbps":N,
 *  "postcopy":BOOL]}
 */
static json_t *run_migrate(const struct api_ops *ops, const json_t *req)
{
	struct api_migrate_req m = {
		.to = json_string_value(json_object_get(req, "to"))};
	char why[API_ERR_MAX] = "";
	json_t *data = NULL;
	int rc;

	if (!m.to || !m.to[0])
		return reply_error("migrate needs \"to\": \"tcp:HOST:PORT\"");
	if (!opt_uint(req, "downtime_ms", &m.downtime_ms) ||
	    !opt_uint(req, "bandwidth_mbps", &m.bandwidth_mbps))
		return reply_error("downtime_ms and bandwidth_mbps must be "
				   "integers from 0 to 1000000");
	if (json_object_get(req, "postcopy") &&
	    !json_is_boolean(json_object_get(req, "postcopy")))
		return reply_error("postcopy must be true or false");
	m.postcopy = json_is_true(json_object_get(req, "postcopy"));
	if (!ops->migrate)
		return reply_error("cannot migrate the VM: not supported here");
	rc = ops->migrate(ops->ctx, &m, &data, why, sizeof(why));
	return reply_op(rc, data, "migrate the VM", why);
}

/* {"cmd":"device-switch","device":"0","path":"/local/copy.img"} */
static json_t *run_device_switch(const struct api_ops *ops, const json_t *req)
{
	const char *dev = json_string_value(json_object_get(req, "device"));
	const char *path = json_string_value(json_object_get(req, "path"));
	char why[API_ERR_MAX] = "";
	json_t *data = NULL;
	int rc;

	if (!dev || !dev[0] || !path || !path[0])
		return reply_error("device-switch needs \"device\" (a disk's "
				   "index or name) and \"path\" (the local "
				   "copy)");
	if (!ops->device_switch)
		return reply_error("cannot switch the device: not supported "
				   "here");
	rc = ops->device_switch(ops->ctx, dev, path, &data, why, sizeof(why));
	return reply_op(rc, data, "switch the device", why);
}

static json_t *handle_request(const struct api_ops *ops, const json_t *req)
{
	const struct api_cmd *c;
	const json_t *cmd;

	if (!json_is_object(req))
		return reply_error(
			"request must be a JSON object, e.g. " API_EXAMPLE);
	cmd = json_object_get(req, "cmd");
	if (!cmd)
		return reply_error("missing \"cmd\"; e.g. " API_EXAMPLE);
	if (!json_is_string(cmd))
		return reply_error(
			"\"cmd\" must be a string, e.g. " API_EXAMPLE);
	if (!strcmp(json_string_value(cmd), "migrate"))
		return run_migrate(ops, req);
	if (!strcmp(json_string_value(cmd), "device-switch"))
		return run_device_switch(ops, req);
	c = find_cmd(json_string_value(cmd));
	if (!c)
		return reply_unknown(json_string_value(cmd));
	return c->action ? run_action(ops, c) : run_query(ops, c);
}

static bool is_blank(const char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!isspace((unsigned char)buf[i]))
			return false;
	return true;
}

static json_t *handle_buf(const struct api_ops *ops, const char *buf,
			  size_t len)
{
	json_error_t jerr;
	json_t *req, *reply;

	if (is_blank(buf, len))
		return reply_error("empty request; send one JSON object per "
				   "line, e.g. " API_EXAMPLE);
	req = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
			 &jerr);
	if (!req)
		return reply_error("invalid JSON: %s", jerr.text);
	reply = handle_request(ops, req);
	json_decref(req);
	return reply;
}

/* The reply to @len bytes at @buf as a malloc'd line, no newline. */
static char *answer(const struct api_ops *ops, const char *buf, size_t len)
{
	static const struct api_ops no_ops;
	json_t *reply = handle_buf(ops ? ops : &no_ops, buf, len);
	char *line;

	if (!reply)
		return NULL;
	line = json_dumps(reply, JSON_COMPACT);
	json_decref(reply);
	return line;
}

char *api_handle_line(const struct api_ops *ops, const char *line)
{
	return answer(ops, line ? line : "", line ? strlen(line) : 0);
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */
/* ------------------------------------------------------------------ */

struct api_conn {
	int fd;		 /* -1 when the slot is free */
	bool discarding; /* skipping the rest of an over-long line */
	size_t len;	 /* bytes of the current line in buf */
	char buf[API_MAX_LINE];
};

/* The server thread's own state; allocated by start, freed by the thread. */
struct api_loop {
	struct api_server *s;
	bool accept_paused; /* out of fds: retry accept on a timer */
	struct api_conn conns[API_MAX_CLIENTS];
};

/*
 * Write all of @buf without blocking. A client whose socket buffer is full
 * is not reading its replies: the caller drops it (returns -1).
 */
static int send_now(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_line(int fd, const char *line)
{
	size_t len = strlen(line);
	char *buf = malloc(len + 1);
	int rc;

	if (!buf)
		return send_now(fd, line, len) || send_now(fd, "\n", 1);
	memcpy(buf, line, len);
	buf[len] = '\n';
	rc = send_now(fd, buf, len + 1);
	free(buf);
	return rc;
}

static int answer_line(const struct api_ops *ops, struct api_conn *c)
{
	char *line = answer(ops, c->buf, c->len);
	int rc;

	c->len = 0;
	if (!line)
		return send_line(c->fd, "{\"ok\":false,\"error\":\"out of "
					"memory\"}");
	rc = send_line(c->fd, line);
	free(line);
	return rc;
}

static int reply_too_long(struct api_conn *c)
{
	char *line;
	json_t *reply;
	int rc = -1;

	reply = reply_error("request too long (more than %d bytes without a "
			    "newline); ignoring it up to the next newline",
			    API_MAX_LINE);
	line = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
	if (line)
		rc = send_line(c->fd, line);
	free(line);
	json_decref(reply);
	return rc;
}

/*
 * Split @n received bytes into lines and answer each complete one. Returns
 * -1 when the client must be dropped.
 */
static int feed_conn(const struct api_ops *ops, struct api_conn *c,
		     const char *data, size_t n)
{
	while (n > 0) {
		const char *nl = memchr(data, '\n', n);
		size_t seg = nl ? (size_t)(nl - data) : n;

		if (c->discarding) {
			c->discarding = !nl;
		} else if (seg > API_MAX_LINE - c->len) {
			c->len = 0;
			c->discarding = !nl;
			if (reply_too_long(c))
				return -1;
		} else {
			memcpy(c->buf + c->len, data, seg);
			c->len += seg;
			if (nl && answer_line(ops, c))
				return -1;
		}
		seg += nl ? 1 : 0;
		data += seg;
		n -= seg;
	}
	return 0;
}

static void close_conn(struct api_conn *c)
{
	close(c->fd);
	c->fd = -1;
	c->len = 0;
	c->discarding = false;
}

/* One read per wakeup, so a chatty client cannot starve the others. */
static void service_conn(struct api_loop *lp, struct api_conn *c)
{
	char chunk[API_MAX_LINE];
	ssize_t n = recv(c->fd, chunk, sizeof(chunk), MSG_DONTWAIT);

	if (n < 0 &&
	    (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	/* EOF or error: a partial line left in the buffer is dropped. */
	if (n <= 0 || feed_conn(lp->s->ops, c, chunk, (size_t)n)) {
		pr_debug("control socket: client %d gone or dropped", c->fd);
		close_conn(c);
		lp->accept_paused = false;
	}
}

static struct api_conn *free_slot(struct api_loop *lp)
{
	for (int i = 0; i < API_MAX_CLIENTS; i++)
		if (lp->conns[i].fd < 0)
			return &lp->conns[i];
	return NULL;
}

static void reject_client(int fd)
{
	char line[128];

	snprintf(line, sizeof(line),
		 "{\"ok\":false,\"error\":\"too many control clients (max "
		 "%d)\"}\n",
		 API_MAX_CLIENTS);
	send_now(fd, line, strlen(line));
	close(fd);
}

/*
 * Accept one pending client per poll round: the clients' hang-ups seen in
 * the same round are handled first, so their slots are free again.
 */
static void accept_client(struct api_loop *lp)
{
	struct api_conn *c;
	char ebuf[128];
	int fd;

	lp->accept_paused = false;
	do
		fd = accept4(lp->s->listen_fd, NULL, NULL,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK &&
		    errno != ECONNABORTED) {
			/* Out of fds or memory: retry on a timer. */
			pr_warn("control socket: accept: %s",
				errno_text(errno, ebuf, sizeof(ebuf)));
			lp->accept_paused = true;
		}
		return;
	}
	c = free_slot(lp);
	if (!c) {
		reject_client(fd);
		return;
	}
	c->fd = fd;
	c->len = 0;
	c->discarding = false;
}

/* ------------------------------------------------------------------ */
/* The server thread                                                   */
/* ------------------------------------------------------------------ */

enum { PFD_STOP, PFD_LISTEN, PFD_CONN0 };

/* Fill @pfds; @owner[i] is the conn slot behind pfds[i]. Returns count. */
static nfds_t build_pollfds(struct api_loop *lp, struct pollfd *pfds,
			    int *owner)
{
	nfds_t n = PFD_CONN0;

	pfds[PFD_STOP] = (struct pollfd){lp->s->stop_pipe[0], POLLIN, 0};
	pfds[PFD_LISTEN] = (struct pollfd){
		lp->accept_paused ? -1 : lp->s->listen_fd, POLLIN, 0};
	for (int i = 0; i < API_MAX_CLIENTS; i++) {
		if (lp->conns[i].fd < 0)
			continue;
		pfds[n] = (struct pollfd){lp->conns[i].fd, POLLIN, 0};
		owner[n++] = i;
	}
	return n;
}

static void *serve(void *arg)
{
	struct pollfd pfds[PFD_CONN0 + API_MAX_CLIENTS];
	int owner[PFD_CONN0 + API_MAX_CLIENTS];
	struct api_loop *lp = arg;
	char ebuf[128];

	for (;;) {
		nfds_t n = build_pollfds(lp, pfds, owner);
		int rc = poll(pfds, n, lp->accept_paused ? 1000 : -1);

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0) {
			pr_err("control socket: poll: %s",
			       errno_text(errno, ebuf, sizeof(ebuf)));
			break;
		}
		if (pfds[PFD_STOP].revents)
			break;
		/* Clients first, so a slot freed now is free for accept. */
		for (nfds_t i = PFD_CONN0; i < n; i++)
			if (pfds[i].revents)
				service_conn(lp, &lp->conns[owner[i]]);
		if (pfds[PFD_LISTEN].revents || lp->accept_paused)
			accept_client(lp);
	}
	for (int i = 0; i < API_MAX_CLIENTS; i++)
		if (lp->conns[i].fd >= 0)
			close_conn(&lp->conns[i]);
	free(lp);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Start and stop                                                      */
/* ------------------------------------------------------------------ */

static int fail(char *errbuf, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *errbuf, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (errbuf && errlen) {
		va_start(ap, fmt);
		vsnprintf(errbuf, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static int fill_addr(struct sockaddr_un *addr, const char *path)
{
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(addr->sun_path))
		return -ENAMETOOLONG;
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	memcpy(addr->sun_path, path, len + 1);
	return 0;
}

/*
 * Is someone listening on the socket at @path? 0: no (stale), -EADDRINUSE:
 * yes, other negative errno: cannot tell.
 */
static int probe_socket(const char *path)
{
	struct sockaddr_un addr;
	int fd, rc = 0;

	fill_addr(&addr, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
		rc = -EADDRINUSE;
	else if (errno == EAGAIN || errno == EINPROGRESS)
		rc = -EADDRINUSE; /* listening, backlog full */
	else if (errno != ECONNREFUSED && errno != ENOENT)
		rc = -errno;
	close(fd);
	return rc;
}

/* Make @path free for bind: absent, or a stale socket we remove. */
static int clear_path(const char *path, char *errbuf, size_t errlen)
{
	char ebuf[128];
	struct stat st;
	int rc;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		rc = -errno;
		return fail(errbuf, errlen, rc,
			    "cannot use control socket %s: %s", path,
			    errno_text(-rc, ebuf, sizeof(ebuf)));
	}
	if (!S_ISSOCK(st.st_mode))
		return fail(errbuf, errlen, -EEXIST,
			    "control socket %s exists and is not a socket; "
			    "leaving it alone",
			    path);
	rc = probe_socket(path);
	if (rc == -EADDRINUSE)
		return fail(errbuf, errlen, rc,
			    "control socket %s is in use by another process",
			    path);
	if (rc < 0)
		return fail(errbuf, errlen, rc,
			    "cannot check control socket %s: %s", path,
			    errno_text(-rc, ebuf, sizeof(ebuf)));
	if (unlink(path) < 0 && errno != ENOENT) {
		rc = -errno;
		return fail(errbuf, errlen, rc,
			    "cannot remove stale control socket %s: %s", path,
			    errno_text(-rc, ebuf, sizeof(ebuf)));
	}
	return 0;
}

static int open_listener(struct api_server *s, char *errbuf, size_t errlen)
{
	struct sockaddr_un addr;
	char ebuf[128];
	int fd, rc;

	fill_addr(&addr, s->path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		rc = -errno;
		return fail(errbuf, errlen, rc,
			    "cannot create control socket: %s",
			    errno_text(-rc, ebuf, sizeof(ebuf)));
	}
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		rc = -errno;
		close(fd);
		if (rc == -EADDRINUSE)
			return fail(errbuf, errlen, rc,
				    "control socket %s is in use by another "
				    "process",
				    s->path);
		return fail(errbuf, errlen, rc,
			    "cannot bind control socket %s: %s", s->path,
			    errno_text(-rc, ebuf, sizeof(ebuf)));
	}
	if (listen(fd, API_MAX_CLIENTS) < 0) {
		rc = -errno;
		close(fd);
		unlink(s->path);
		return fail(errbuf, errlen, rc,
			    "cannot listen on control socket %s: %s", s->path,
			    errno_text(-rc, ebuf, sizeof(ebuf)));
	}
	s->listen_fd = fd;
	return 0;
}

static struct api_loop *new_loop(struct api_server *s)
{
	struct api_loop *lp = calloc(1, sizeof(*lp));

	if (!lp)
		return NULL;
	lp->s = s;
	for (int i = 0; i < API_MAX_CLIENTS; i++)
		lp->conns[i].fd = -1;
	return lp;
}

/* The server thread takes no signals: they belong to the VM's threads. */
static int start_thread(struct api_server *s, char *errbuf, size_t errlen)
{
	struct api_loop *lp = new_loop(s);
	char ebuf[128];
	int rc;

	if (!lp)
		return fail(errbuf, errlen, -ENOMEM,
			    "control socket: out of memory");
	rc = -thread_start_nosignals(&s->thread, serve, lp);
	if (rc) {
		free(lp);
		return fail(errbuf, errlen, -rc,
			    "cannot start the control socket thread: %s",
			    errno_text(rc, ebuf, sizeof(ebuf)));
	}
	return 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Close what start opened; the thread is not running. */
static void release(struct api_server *s)
{
	close_fd(&s->listen_fd);
	close_fd(&s->stop_pipe[0]);
	close_fd(&s->stop_pipe[1]);
}

int api_server_start(struct api_server *s, const char *path,
		     const struct api_ops *ops, char *errbuf, size_t errlen)
{
	struct sockaddr_un addr;
	char ebuf[128];
	int rc;

	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (!s || !path || !ops)
		return fail(errbuf, errlen, -EINVAL,
			    "control socket: missing server, path or ops");
	memset(s, 0, sizeof(*s));
	s->listen_fd = s->stop_pipe[0] = s->stop_pipe[1] = -1;
	s->ops = ops;
	if (!*path)
		return fail(errbuf, errlen, -EINVAL,
			    "control socket path is empty");
	if (strlen(path) >= sizeof(s->path) || fill_addr(&addr, path))
		return fail(errbuf, errlen, -ENAMETOOLONG,
			    "control socket path %s is too long (max %zu "
			    "bytes)",
			    path, sizeof(addr.sun_path) - 1);
	memcpy(s->path, path, strlen(path) + 1);

	rc = clear_path(path, errbuf, errlen);
	if (rc)
		return rc;
	if (pipe2(s->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		rc = -errno;
		release(s);
		return fail(errbuf, errlen, rc,
			    "control socket: cannot create stop pipe: %s",
			    errno_text(-rc, ebuf, sizeof(ebuf)));
	}
	rc = open_listener(s, errbuf, errlen);
	if (!rc)
		rc = start_thread(s, errbuf, errlen);
	if (rc) {
		if (s->listen_fd >= 0)
			unlink(s->path);
		release(s);
		return rc;
	}
	s->running = true;
	return 0;
}

void api_server_stop(struct api_server *s)
{
	char byte = 1;

	if (!s || !s->running)
		return;
	while (write(s->stop_pipe[1], &byte, 1) < 0 && errno == EINTR)
		;
	pthread_join(s->thread, NULL);
	release(s);
	unlink(s->path);
	s->running = false;
}
