/*
 * util/sock.h - whole messages over a stream socket with deadlines: wait
 * for an fd, send all of a buffer (or an iovec), receive exactly so many
 * bytes. Used by the migration stream, post-copy and the remote disk.
 */
#ifndef DVMM_UTIL_SOCK_H
#define DVMM_UTIL_SOCK_H

#include <stddef.h>
#include <sys/uio.h>

/* How long a send may wait for room in the socket. */
#define SOCK_SEND_TIMEOUT_MS 10000

/* @ev (POLLIN/POLLOUT) on @fd within @ms (< 0: no deadline); -ETIMEDOUT. */
int sock_wait(int fd, short ev, int ms);
/* All of @iov[0..n) (modified as it goes); 0 or a negative errno. */
int sock_send_iov(int fd, struct iovec *iov, int n);
int sock_send_all(int fd, const void *buf, size_t len);
/*
 * Exactly @len bytes, each wait at most @ms (< 0: no deadline);
 * -ECONNRESET when the peer closed the stream.
 */
int sock_recv_all(int fd, void *buf, size_t len, int ms);

#endif
