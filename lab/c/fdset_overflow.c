/* What Python's "filedescriptor out of range in select()" hides: FD_SET past FD_SETSIZE.
 *
 * Usage: fdset_overflow select|poll
 *
 * A pipe with one byte to read is moved to descriptor FD (1030, past FD_SETSIZE = 1024).
 * "select" puts FD in an fd_set that sits in a struct right before a zeroed guard array,
 * as a local variable would sit next to others, and prints how many guard bytes FD_SET
 * changed (select(2), BUGS: "the behavior of FD_CLR() and FD_SET() is undefined" for a
 * descriptor >= FD_SETSIZE), then what select reports (the kernel reads nfds bits, past
 * the set, into the guard). Built with -D_FORTIFY_SOURCE glibc checks FD_SET and aborts
 * instead. "poll" asks poll(2) about the same descriptor: no bitmap, no limit.
 * Output: key=value lines for the demo to parse.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <unistd.h>

enum { FD = 1030, GUARD_BYTES = 64 };

struct frame {
    fd_set set;
    unsigned char guard[GUARD_BYTES];
};

static int high_readable_fd(void) {
    struct rlimit lim;
    int p[2];
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return -1;
    if (lim.rlim_cur <= FD) {
        lim.rlim_cur = lim.rlim_max > FD + 1 ? FD + 1 : lim.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &lim) != 0) return -1;
    }
    if (pipe(p) != 0 || write(p[1], "x", 1) != 1) return -1;
    return dup2(p[0], FD);
}

static int run_select(int fd) {
    static struct frame f; /* static: the same layout at every optimisation level */
    struct timeval now = {0, 0};
    int changed = 0;
    memset(&f, 0, sizeof f);
    FD_ZERO(&f.set);
    FD_SET(fd, &f.set);
    for (int i = 0; i < GUARD_BYTES; i++) changed += f.guard[i] != 0;
    printf("guard_bytes_changed=%d\n", changed);
    printf("select_ready=%d\n", select(fd + 1, &f.set, NULL, NULL, &now));
    return 0;
}

static int run_poll(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    printf("guard_bytes_changed=0\n");
    printf("poll_ready=%d\n", poll(&p, 1, 0));
    return 0;
}

int main(int argc, char **argv) {
    int fd = high_readable_fd();
    if (argc != 2 || fd != FD) {
        fprintf(stderr, "usage: fdset_overflow select|poll (needs descriptor %d)\n", FD);
        return 2;
    }
    printf("fd=%d fd_setsize=%d\n", fd, FD_SETSIZE);
    fflush(stdout);
    return strcmp(argv[1], "poll") == 0 ? run_poll(fd) : run_select(fd);
}
