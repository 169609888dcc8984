/*
 * tests/tools/tcp_mangle.c - a one-connection TCP relay for failure tests:
 * accepts on 127.0.0.1:LISTEN, connects to 127.0.0.1:TARGET and copies
 * both ways; in the client-to-target direction, after AFTER bytes it
 * either flips one byte (corrupt) or closes both connections (cut).
 * Prints "ready" once listening; exits 0 after the connection ends.
 *
 *   tcp_mangle LISTEN TARGET corrupt|cut AFTER
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int tcp_listen(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(fd, 1))
		return -1;
	return fd;
}

static int tcp_connect(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
		return -1;
	return fd;
}

static int write_all(int fd, const char *p, ssize_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, (size_t)n);

		if (w <= 0)
			return -1;
		p += w;
		n -= w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	long long after, seen = 0;
	int lfd, cfd, tfd, cut;
	char buf[65536];

	if (argc != 5 ||
	    (strcmp(argv[3], "corrupt") && strcmp(argv[3], "cut"))) {
		fprintf(stderr,
			"usage: tcp_mangle LISTEN TARGET corrupt|cut AFTER\n");
		return 2;
	}
	cut = !strcmp(argv[3], "cut");
	after = atoll(argv[4]);
	lfd = tcp_listen(atoi(argv[1]));
	if (lfd < 0) {
		perror("listen");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	cfd = accept(lfd, NULL, NULL);
	tfd = cfd < 0 ? -1 : tcp_connect(atoi(argv[2]));
	if (tfd < 0) {
		perror("relay");
		return 1;
	}
	for (;;) {
		struct pollfd p[2] = {{.fd = cfd, .events = POLLIN},
				      {.fd = tfd, .events = POLLIN}};
		ssize_t n;

		if (poll(p, 2, 30000) <= 0)
			break;
		if (p[1].revents) { /* target to client: as is */
			n = read(tfd, buf, sizeof(buf));
			if (n <= 0 || write_all(cfd, buf, n))
				break;
		}
		if (!p[0].revents)
			continue;
		n = read(cfd, buf, sizeof(buf));
		if (n <= 0)
			break;
		if (seen <= after && seen + n > after) {
			if (cut)
				break;
			buf[after - seen] ^= 0x5a;
		}
		seen += n;
		if (write_all(tfd, buf, n))
			break;
	}
	close(cfd);
	close(tfd);
	return 0;
}
