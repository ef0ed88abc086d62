/* Loaded with LD_PRELOAD into the MicroPython process of a virtual board: the device code binds
 * port 80 (and 53) as it does on the ESP8266; ESPBLINK_PORTMAP="80=8123,53=8124" moves those binds
 * to the given ports on ESPBLINK_ADDRESS (default 127.0.0.1), so an unprivileged user can run several
 * boards at once; "80=80,53=53" with an address of its own (127.0.0.N) gives a board its own address. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static int mapped_port(int port) {
    const char *map = getenv("ESPBLINK_PORTMAP");
    while (map && *map) {
        char *end;
        long from = strtol(map, &end, 10);
        if (*end != '=') return -1;
        long to = strtol(end + 1, &end, 10);
        if (from == port) return (int)to;
        map = (*end == ',') ? end + 1 : NULL;
    }
    return -1;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn real_bind;
    if (!real_bind) real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, addr, sizeof in);
        int to = mapped_port(ntohs(in.sin_port));
        if (to >= 0) {
            const char *address = getenv("ESPBLINK_ADDRESS");
            in.sin_port = htons((unsigned short)to);
            in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (address) inet_pton(AF_INET, address, &in.sin_addr);
            return real_bind(fd, (const struct sockaddr *)&in, sizeof in);
        }
    }
    return real_bind(fd, addr, len);
}
