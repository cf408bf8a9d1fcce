/* LD_PRELOAD shim for benchmarks: sets TCP_NODELAY on every socket a server accepts.
 * s3s-fs (the test S3 server) leaves Nagle's algorithm on; its GET answers (headers, then body in
 * a second write) then wait out the client's 40 ms delayed ACK on loopback, which no production
 * S3 server does. benches/blobs.rs measures with and without this shim.
 *   cc -shared -fPIC -O2 -o nodelay.so bench/nodelay.c -ldl                                    */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void nodelay(int fd) {
    int one = 1;
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    int (*real)(int, struct sockaddr *, socklen_t *) = dlsym(RTLD_NEXT, "accept");
    int client = real(fd, addr, len);
    nodelay(client);
    return client;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    int (*real)(int, struct sockaddr *, socklen_t *, int) = dlsym(RTLD_NEXT, "accept4");
    int client = real(fd, addr, len, flags);
    nodelay(client);
    return client;
}
