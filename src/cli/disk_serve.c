/*
 * cli/disk_serve.c - `dvmm disk-serve IMAGE --listen tcp:HOST:PORT --secret
 * FILE`: the disk agent. Serves a raw image to the remote-disk backend of
 * a dvmm on another host (virtio/blk_remote.h), one authenticated client
 * at a time. It holds the image's flock while it serves (waiting for it
 * if the VM that used the image still holds it: a migrating VM lets go at
 * the hand-over) and ends on SIGINT/SIGTERM, or with --once when its
 * first client has gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "cli/disk_serve.h"
#include "cli/run.h"
#include "migration/migrate.h"
#include "util/log.h"
#include "util/parse.h"
#include "virtio/blk_remote.h"

#define LOCK_POLL_MS 50

struct serve_opts {
	const char *image;
	const char *listen;
	const char *secret;
	bool once;
	bool readonly;
};

void disk_serve_usage(FILE *f)
{
	fprintf(f,
		"usage: dvmm disk-serve IMAGE --listen tcp:HOST:PORT --secret "
		"FILE [--once]\n"
		"                       [--readonly] [-v]\n"
		"  serves the raw disk image IMAGE to a dvmm run --disk "
		"remote=tcp:HOST:PORT\n"
		"  --listen tcp:HOST:PORT   where to listen\n"
		"  --secret FILE       the shared secret (hex; the VM's "
		"--migration-secret)\n"
		"  --once              end when the first client has gone\n"
		"  --readonly          refuse writes (shared lock)\n");
}

static int usage_err(const char *fmt, const char *arg)
{
	fprintf(stderr, "dvmm: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "; see dvmm disk-serve --help\n");
	return -EXIT_USAGE;
}

enum { OPT_LISTEN = 0x100, OPT_SECRET, OPT_ONCE, OPT_READONLY, OPT_HELP };

static const struct option serve_long_opts[] = {
	{"listen", required_argument, NULL, OPT_LISTEN},
	{"secret", required_argument, NULL, OPT_SECRET},
	{"once", no_argument, NULL, OPT_ONCE},
	{"readonly", no_argument, NULL, OPT_READONLY},
	{"verbose", no_argument, NULL, 'v'},
	{"help", no_argument, NULL, OPT_HELP},
	{NULL, 0, NULL, 0},
};

/* 0, 1 for --help, or -exit status. */
static int parse(int argc, char **argv, struct serve_opts *o)
{
	int c, verbose = 0;

	memset(o, 0, sizeof(*o));
	opterr = 0;
	optind = 1;
	for (;;) {
		/* IMAGE anywhere among the options */
		if (optind < argc && argv[optind][0] != '-') {
			if (o->image)
				return usage_err("unexpected argument '%s'",
						 argv[optind]);
			o->image = argv[optind++];
			continue;
		}
		c = getopt_long(argc, argv, "+v", serve_long_opts, NULL);
		if (c == -1)
			break;
		switch (c) {
		case 'v':
			verbose++;
			break;
		case OPT_HELP:
			return 1;
		case OPT_LISTEN:
			o->listen = optarg;
			break;
		case OPT_SECRET:
			o->secret = optarg;
			break;
		case OPT_ONCE:
			o->once = true;
			break;
		case OPT_READONLY:
			o->readonly = true;
			break;
		case ':':
			return usage_err("option %s needs a value",
					 argv[optind - 1]);
		default:
			return usage_err("unknown option '%s'",
					 argv[optind - 1]);
		}
	}
	if (optind < argc && !o->image)
		o->image = argv[optind++];
	if (optind < argc)
		return usage_err("unexpected argument '%s'", argv[optind]);
	if (!o->image || !o->image[0])
		return usage_err("%s", "missing IMAGE");
	if (!o->listen)
		return usage_err("%s", "missing --listen tcp:HOST:PORT");
	if (!o->secret)
		return usage_err("%s", "missing --secret FILE");
	log_set_level(verbose >= 2 ? LOG_DEBUG :
		      verbose == 1 ? LOG_INFO :
				     LOG_WARN);
	return 0;
}

static int open_image(const struct serve_opts *o, struct brp_image *img,
		      struct err *e)
{
	struct stat st;
	uint64_t size;
	int fd = open(o->image, (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);

	img->fd = fd;
	if (fd < 0)
		return err_set(e, -errno, "disk image %s: %s", o->image,
			       strerror(errno));
	if (fstat(fd, &st) < 0)
		return err_set(e, -errno, "disk image %s: %s", o->image,
			       strerror(errno));
	if (S_ISREG(st.st_mode))
		size = (uint64_t)st.st_size;
	else if (S_ISBLK(st.st_mode) && ioctl(fd, BLKGETSIZE64, &size) == 0)
		;
	else
		return err_set(e, -EINVAL,
			       "disk image %s is not a regular file or block "
			       "device",
			       o->image);
	if (size == 0 || size % 512)
		return err_set(e, -EINVAL,
			       "disk image %s: size %llu is not a non-zero "
			       "multiple of 512 bytes",
			       o->image, (unsigned long long)size);
	img->size = size;
	img->readonly = o->readonly;
	img->can_discard =
		!o->readonly && S_ISREG(st.st_mode) &&
		fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			  (off_t)((size + 4095) & ~4095ULL), 4096) == 0;
	return 0;
}

static int listen_on(const char *uri, int *out, struct err *e)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE};
	struct addrinfo *res;
	char host[256], ps[8];
	uint16_t port;
	int fd, rc, one = 1;

	rc = parse_tcp_uri(uri, host, sizeof(host), &port, e);
	if (rc)
		return rc;
	snprintf(ps, sizeof(ps), "%u", port);
	rc = getaddrinfo(host, ps, &hints, &res);
	if (rc)
		return err_set(e, -EINVAL, "--listen %s: %s", uri,
			       gai_strerror(rc));
	fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		freeaddrinfo(res);
		return err_set(e, rc, "socket: %s", strerror(-rc));
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4) < 0) {
		rc = -errno;
		freeaddrinfo(res);
		close(fd);
		return err_set(e, rc, "cannot listen on %s: %s", uri,
			       strerror(-rc));
	}
	freeaddrinfo(res);
	*out = fd;
	return 0;
}

/* The lock, waiting for it as long as needed; -EINTR on a signal. */
static int take_lock(const struct serve_opts *o, int fd, int sigfd,
		     struct err *e)
{
	int op = (o->readonly ? LOCK_SH : LOCK_EX) | LOCK_NB;
	bool said = false;

	for (;;) {
		struct pollfd p = {.fd = sigfd, .events = POLLIN};

		if (flock(fd, op) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EINTR)
			return err_set(e, -errno, "disk image %s: flock: %s",
				       o->image, strerror(errno));
		if (!said) {
			fprintf(stderr,
				"dvmm: waiting for %s's lock (another process "
				"uses the image)\n",
				o->image);
			said = true;
		}
		if (poll(&p, 1, LOCK_POLL_MS) > 0)
			return -EINTR;
	}
}

static int serve_loop(const struct serve_opts *o, const struct brp_image *img,
		      const struct migrate_secret *s, int lfd, int sigfd)
{
	for (;;) {
		struct pollfd p[2] = {{.fd = lfd, .events = POLLIN},
				      {.fd = sigfd, .events = POLLIN}};
		struct err e = {0};
		bool authed;
		int fd, rc;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "dvmm: poll: %s\n", strerror(errno));
			return EXIT_FAILURE_VMM;
		}
		if (p[1].revents)
			return 0;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		rc = brp_serve(fd, img, s->key, s->len, sigfd, &authed, &e);
		close(fd);
		if (!img->readonly)
			fdatasync(img->fd);
		if (rc == -EINTR)
			return 0;
		if (rc)
			fprintf(stderr, "dvmm: disk-serve: %s\n", e.msg);
		else
			pr_info("the client has gone");
		if (o->once && authed)
			return rc ? EXIT_FAILURE_VMM : 0;
	}
}

int disk_serve_main(int argc, char **argv)
{
	struct brp_image img = {.fd = -1};
	struct migrate_secret s;
	struct serve_opts o;
	struct err e = {0};
	int rc, lfd = -1, sigfd = -1, status = EXIT_FAILURE_VMM;
	sigset_t set;

	rc = parse(argc, argv, &o);
	if (rc == 1) {
		disk_serve_usage(stdout);
		return 0;
	}
	if (rc)
		return -rc;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	sigfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sigfd < 0)
		rc = err_set(&e, -errno, "signalfd: %s", strerror(errno));
	if (!rc)
		rc = migrate_load_secret(o.secret, &s, &e);
	if (!rc)
		rc = open_image(&o, &img, &e);
	if (!rc)
		rc = listen_on(o.listen, &lfd, &e);
	if (!rc)
		rc = take_lock(&o, img.fd, sigfd, &e);
	if (rc == -EINTR) {
		status = 0;
	} else if (rc) {
		fprintf(stderr, "dvmm: %s\n", e.msg);
	} else {
		fprintf(stderr, "dvmm: serving %s (%llu bytes) on %s\n",
			o.image, (unsigned long long)img.size, o.listen);
		status = serve_loop(&o, &img, &s, lfd, sigfd);
	}
	if (img.fd >= 0)
		close(img.fd);
	if (lfd >= 0)
		close(lfd);
	if (sigfd >= 0)
		close(sigfd);
	sodium_memzero(&s, sizeof(s));
	return status;
}
