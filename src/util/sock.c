/*
 * util/sock.c - whole messages over a stream socket (see sock.h).
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>

#include "util/sock.h"

int sock_wait(int fd, short ev, int ms)
{
	struct pollfd p = {.fd = fd, .events = ev};
	int n;

	do
		n = poll(&p, 1, ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n ? 0 : -ETIMEDOUT;
}

int sock_send_iov(int fd, struct iovec *iov, int n)
{
	while (n) {
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t k = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (k < 0 && (errno == EINTR || errno == EAGAIN)) {
			int rc = sock_wait(fd, POLLOUT, SOCK_SEND_TIMEOUT_MS);

			if (rc)
				return rc;
			continue;
		}
		if (k < 0)
			return -errno;
		while (n && (size_t)k >= iov->iov_len) {
			k -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n) {
			iov->iov_base = (uint8_t *)iov->iov_base + k;
			iov->iov_len -= (size_t)k;
		}
	}
	return 0;
}

int sock_send_all(int fd, const void *buf, size_t len)
{
	struct iovec v = {.iov_base = (void *)buf, .iov_len = len};

	return sock_send_iov(fd, &v, 1);
}

int sock_recv_all(int fd, void *buf, size_t len, int ms)
{
	uint8_t *p = buf;

	while (len) {
		/* what is there already, then wait for the rest */
		ssize_t n = recv(fd, p, len, MSG_DONTWAIT);

		if (n < 0 && errno == EAGAIN) {
			int rc = sock_wait(fd, POLLIN, ms);

			if (rc)
				return rc;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
