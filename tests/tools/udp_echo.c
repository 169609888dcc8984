/*
 * tests/tools/udp_echo.c - the host-side peer of the guest's `net` test:
 * echoes every UDP datagram back to its sender. Prints "ready" once bound,
 * counts what it echoed, and exits after a time limit so a test can never
 * leave it behind.
 * usage: udp_echo ADDR PORT LIMIT_SECONDS
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	unsigned long echoed = 0;
	double deadline;
	char buf[65536];
	int fd;

	if (argc != 4 || inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) {
		fprintf(stderr, "usage: udp_echo ADDR PORT LIMIT_SECONDS\n");
		return 2;
	}
	a.sin_port = htons((uint16_t)atoi(argv[2]));
	deadline = now() + atof(argv[3]);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a))) {
		fprintf(stderr, "udp_echo: %s:%s: %s\n", argv[1], argv[2],
			strerror(errno));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (now() < deadline) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n;

		if (poll(&p, 1, 200) <= 0)
			continue;
		n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from,
			     &fl);
		if (n < 0)
			continue;
		if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from,
			   fl) == n)
			echoed++;
		if (echoed % 1000 == 1) {
			printf("echoed %lu\n", echoed);
			fflush(stdout);
		}
	}
	printf("echoed %lu\n", echoed);
	return 0;
}
