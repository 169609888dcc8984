/*
 * api/api.h - the control socket: a Unix stream socket taking one JSON
 * request per line ({"cmd":"status"}) and answering one JSON line
 * ({"ok":true,...} or {"ok":false,"error":"..."}). The API calls into the
 * VM through struct api_ops; nothing calls the API.
 */
#ifndef DVMM_API_API_H
#define DVMM_API_API_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>

/*
 * {"cmd":"migrate","to":...,"downtime_ms":N,"bandwidth_mbps":N,
 *  "postcopy":BOOL}
 */
struct api_migrate_req {
	const char *to;
	unsigned int downtime_ms;    /* 0: the default */
	unsigned int bandwidth_mbps; /* 0: no limit */
	bool postcopy;		     /* pages the VM still needs on demand */
};

/* What the API may do to the VM. Each returns 0 or a negative errno. */
struct api_ops {
	int (*pause)(void *ctx);
	int (*resume)(void *ctx);
	int (*stop)(void *ctx);
	/* Return a new JSON object (caller owns it), or NULL on failure. */
	json_t *(*status)(void *ctx);
	json_t *(*stats)(void *ctx);
	/*
	 * Start moving the VM to @req->to ("tcp:HOST:PORT") in the
	 * background; *out: a new object. migrate_status tells how it goes.
	 */
	int (*migrate)(void *ctx, const struct api_migrate_req *req,
		       json_t **out, char *why, size_t whylen);
	json_t *(*migrate_status)(void *ctx);
	/*
	 * {"cmd":"device-switch","device":"0","path":"/x"}: move a remote
	 * disk (@device: its index or name) onto the local file @path while
	 * the guest runs; returns when done. *out: a new object.
	 */
	int (*device_switch)(void *ctx, const char *device, const char *path,
			     json_t **out, char *why, size_t whylen);
	void *ctx;
};

#define API_MAX_CLIENTS 16
#define API_MAX_LINE 4096

struct api_server {
	int listen_fd;
	int stop_pipe[2];
	pthread_t thread;
	bool running;
	char path[108];
	const struct api_ops *ops;
};

/*
 * Handle one request line (without newline); returns a malloc'd JSON
 * response line without newline. Never NULL except on allocation failure.
 */
char *api_handle_line(const struct api_ops *ops, const char *line);

/* Bind @path (replacing a stale socket, refusing a live one) and serve. */
int api_server_start(struct api_server *s, const char *path,
		     const struct api_ops *ops, char *errbuf, size_t errlen);
void api_server_stop(struct api_server *s);

/*
 * The client: `dvmm ctl PATH COMMAND [ARGS]`. Sends one request, prints the
 * response pretty, returns the process exit status (0 when "ok" is true).
 */
int api_client_main(int argc, char **argv);

#endif
