/*
 * sse-floor: the least a fan-out of server-sent events can cost on this
 * machine, as a side of the SSE benchmark beside nginx-chat and nchan.
 *
 * A master forks W workers; each accepts streams on the same port
 * (SO_REUSEPORT), keeps one Redis connection subscribed to the channel
 * and one to publish on, and does nothing else:
 *
 *   GET <anything>    a stream: a response header without chunking, an
 *                     "event: connected" frame, then every message of the
 *                     channel as "data: <message>\n\n", one send() per
 *                     stream and message;
 *   POST <anything>   PUBLISH of the body on the channel, then 204.
 *
 * No HTTP parsing beyond the method and Content-Length, no buffering (a
 * stream that cannot take a frame at once is closed), no log, no
 * allocation per message: what remains is the kernel's work per stream
 * and message (the send() on loopback, the receiver woken), which the
 * other sides pay too.  A worker names itself "sse-floor: worker process"
 * so that bench/sse.sh finds it as it finds nginx's workers.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -o sse-floor sse-floor.c
 * Usage: sse-floor -p PORT -r REDIS_PORT -c CHANNEL [-w WORKERS] -g PIDFILE
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>


#define FLOOR_BUF      65536
#define FLOOR_EVENTS   512


typedef struct {
    int       fd;
    int       stream;           /* an open stream, not a request yet */
    size_t    len;              /* of the request read so far */
    char      buf[];            /* requests only */
} floor_conn_t;


static int       port, redis_port, nworkers = 2;
static char     *channel, *pidfile;
static int       ep, sub_fd, pub_fd;

static int      *streams;       /* the worker's open stream fds */
static size_t    nstreams, streams_cap;


static void
die(const char *what)
{
    fprintf(stderr, "sse-floor: %s: %s\n", what, strerror(errno));
    exit(1);
}


static int
redis_connect(void)
{
    int                 fd;
    struct sockaddr_in  sin;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd == -1) {
        die("socket");
    }

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(redis_port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    if (connect(fd, (struct sockaddr *) &sin, sizeof(sin)) == -1) {
        die("connect to redis");
    }

    return fd;
}


/* one command in the protocol's form, written whole (blocking) */

static void
redis_command(int fd, const char *cmd, const char *arg, size_t arglen)
{
    static char  buf[2 * FLOOR_BUF];
    size_t       len, off;
    ssize_t      n;

    if (arg == NULL) {
        len = snprintf(buf, sizeof(buf),
                       "*2\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n",
                       strlen(cmd), cmd, strlen(channel), channel);

    } else {
        if (arglen > FLOOR_BUF) {
            fprintf(stderr, "sse-floor: a message over %d bytes\n",
                    FLOOR_BUF);
            exit(1);
        }

        len = snprintf(buf, sizeof(buf),
                       "*3\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n$%zu\r\n",
                       strlen(cmd), cmd, strlen(channel), channel, arglen);
        memcpy(buf + len, arg, arglen);
        memcpy(buf + len + arglen, "\r\n", 2);
        len += arglen + 2;
    }

    for (off = 0; off < len; off += n) {
        n = write(fd, buf + off, len - off);
        if (n <= 0) {
            die("write to redis");
        }
    }
}


static void
stream_close(size_t i)
{
    close(streams[i]);
    streams[i] = streams[--nstreams];
}


static void
broadcast(const char *data, size_t len)
{
    char     frame[FLOOR_BUF];
    size_t   flen, i;
    ssize_t  n;

    if (len > sizeof(frame) - 16) {
        return;
    }

    memcpy(frame, "data: ", 6);
    memcpy(frame + 6, data, len);
    memcpy(frame + 6 + len, "\n\n", 2);
    flen = len + 8;

    for (i = 0; i < nstreams; /* void */) {
        n = send(streams[i], frame, flen, MSG_DONTWAIT | MSG_NOSIGNAL);

        if (n != (ssize_t) flen) {
            stream_close(i);
            continue;
        }

        i++;
    }
}


/*
 * The subscription's replies: "*3\r\n$7\r\nmessage\r\n$<n>\r\n<channel>\r\n
 * $<n>\r\n<data>\r\n", the first one the SUBSCRIBE's own (":1" for its
 * count); parsed from a buffer that keeps what a read cut short.
 */

static char    sub_buf[4 * FLOOR_BUF];
static size_t  sub_len;


static const char *
bulk(const char *p, const char *end, const char **data, size_t *len)
{
    char  *e;

    if (p >= end || (*p != '$' && *p != ':')) {
        return NULL;
    }

    e = memchr(p, '\n', end - p);
    if (e == NULL) {
        return NULL;
    }

    if (*p == ':') {
        *data = NULL;
        *len = 0;
        return e + 1;
    }

    *len = strtoul(p + 1, NULL, 10);
    *data = e + 1;

    if (e + 1 + *len + 2 > end) {
        return NULL;
    }

    return e + 1 + *len + 2;
}


static void
subscriber_read(void)
{
    ssize_t      n;
    size_t       len, i;
    const char  *p, *end, *next, *d[3], *e;
    size_t       l[3];

    n = read(sub_fd, sub_buf + sub_len, sizeof(sub_buf) - sub_len);
    if (n <= 0) {
        fprintf(stderr, "sse-floor: redis closed the subscription\n");
        exit(1);
    }

    sub_len += n;
    p = sub_buf;
    end = sub_buf + sub_len;

    for ( ;; ) {
        if (p >= end || *p != '*') {
            break;
        }

        e = memchr(p, '\n', end - p);
        if (e == NULL) {
            break;
        }

        next = e + 1;

        for (i = 0; i < 3 && next; i++) {
            next = bulk(next, end, &d[i], &l[i]);
        }

        if (next == NULL) {
            break;
        }

        if (l[0] == 7 && memcmp(d[0], "message", 7) == 0) {
            broadcast(d[2], l[2]);
        }

        p = next;
    }

    len = end - p;
    memmove(sub_buf, p, len);
    sub_len = len;
}


static void
conn_close(floor_conn_t *c)
{
    close(c->fd);
    free(c);
}


static void
request_read(floor_conn_t *c)
{
    char        *hend, *cl, reply[64];
    size_t       body;
    ssize_t      n;
    static const char  head[] =
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n"
        "Connection: close\r\n"
        "\r\n"
        "event: connected\n"
        "data: {}\n\n";

    n = read(c->fd, c->buf + c->len, FLOOR_BUF - 1 - c->len);
    if (n <= 0) {
        conn_close(c);
        return;
    }

    c->len += n;
    c->buf[c->len] = '\0';

    hend = strstr(c->buf, "\r\n\r\n");
    if (hend == NULL) {
        if (c->len == FLOOR_BUF - 1) {
            conn_close(c);
        }
        return;
    }

    hend += 4;

    if (strncmp(c->buf, "GET ", 4) == 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);

        if (write(c->fd, head, sizeof(head) - 1) != sizeof(head) - 1) {
            conn_close(c);
            return;
        }

        if (nstreams == streams_cap) {
            streams_cap = streams_cap ? 2 * streams_cap : 1024;
            streams = realloc(streams, streams_cap * sizeof(int));
            if (streams == NULL) {
                die("realloc");
            }
        }

        /* the stream is only its descriptor from now on */

        streams[nstreams++] = c->fd;
        free(c);
        return;
    }

    cl = strcasestr(c->buf, "\r\ncontent-length:");
    body = cl ? strtoul(cl + 17, NULL, 10) : 0;

    if ((size_t) (c->buf + c->len - hend) < body) {
        return;                 /* more of the body to come */
    }

    redis_command(pub_fd, "PUBLISH", hend, body);

    /* the PUBLISH's reply, ":<receivers>\r\n", read at once */

    n = read(pub_fd, reply, sizeof(reply));
    if (n <= 0 || reply[0] != ':') {
        fprintf(stderr, "sse-floor: PUBLISH failed\n");
        exit(1);
    }

    n = snprintf(reply, sizeof(reply),
                 "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n");

    if (write(c->fd, reply, n) != n) {
        conn_close(c);
        return;
    }

    c->len = 0;
}


static int
listener(void)
{
    int                 fd, on = 1;
    struct sockaddr_in  sin;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd == -1) {
        die("socket");
    }

    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) == -1) {
        die("bind");
    }

    if (listen(fd, 4096) == -1) {
        die("listen");
    }

    return fd;
}


static void
worker(int lfd, char *title, size_t title_len)
{
    int                  i, n, fd;
    floor_conn_t        *c;
    struct epoll_event   ev, events[FLOOR_EVENTS];

    memset(title, 0, title_len);
    snprintf(title, title_len, "sse-floor: worker process");
    prctl(PR_SET_PDEATHSIG, SIGTERM);

    ep = epoll_create1(0);
    if (ep == -1) {
        die("epoll_create1");
    }

    sub_fd = redis_connect();
    pub_fd = redis_connect();
    redis_command(sub_fd, "SUBSCRIBE", NULL, 0);

    ev.events = EPOLLIN;
    ev.data.ptr = NULL;                 /* the listener */
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

    ev.data.ptr = &sub_fd;              /* the subscription */
    epoll_ctl(ep, EPOLL_CTL_ADD, sub_fd, &ev);

    for ( ;; ) {
        n = epoll_wait(ep, events, FLOOR_EVENTS, -1);

        for (i = 0; i < n; i++) {

            if (events[i].data.ptr == &sub_fd) {
                subscriber_read();
                continue;
            }

            if (events[i].data.ptr == NULL) {
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) != -1) {
                    c = malloc(sizeof(floor_conn_t) + FLOOR_BUF);
                    if (c == NULL) {
                        die("malloc");
                    }

                    c->fd = fd;
                    c->len = 0;
                    ev.events = EPOLLIN;
                    ev.data.ptr = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }

            request_read(events[i].data.ptr);
        }
    }
}


static volatile sig_atomic_t  stop;

static void
on_signal(int signo)
{
    (void) signo;
    stop = 1;
}


int
main(int argc, char **argv)
{
    int     opt, i, lfd;
    char   *title;
    size_t  title_len;
    pid_t   pids[64];
    FILE   *f;

    while ((opt = getopt(argc, argv, "p:r:c:w:g:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'r': redis_port = atoi(optarg); break;
        case 'c': channel = optarg; break;
        case 'w': nworkers = atoi(optarg); break;
        case 'g': pidfile = optarg; break;
        default:
            fprintf(stderr, "usage: sse-floor -p PORT -r REDIS_PORT "
                            "-c CHANNEL [-w WORKERS] -g PIDFILE\n");
            return 2;
        }
    }

    if (port == 0 || redis_port == 0 || channel == NULL || pidfile == NULL
        || nworkers < 1 || nworkers > 64)
    {
        fprintf(stderr, "sse-floor: -p, -r, -c and -g are needed\n");
        return 2;
    }

    /* the workers' title goes where the arguments were */

    title = argv[0];
    title_len = argv[argc - 1] + strlen(argv[argc - 1]) - argv[0];

    signal(SIGPIPE, SIG_IGN);

    for (i = 0; i < nworkers; i++) {
        lfd = listener();

        pids[i] = fork();
        if (pids[i] == -1) {
            die("fork");
        }

        if (pids[i] == 0) {
            worker(lfd, title, title_len);
        }

        close(lfd);
    }

    f = fopen(pidfile, "w");
    if (f == NULL) {
        die(pidfile);
    }
    fprintf(f, "%d\n", (int) getpid());
    fclose(f);

    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGQUIT, on_signal);

    while (!stop) {
        pause();
    }

    for (i = 0; i < nworkers; i++) {
        kill(pids[i], SIGTERM);
    }

    while (wait(NULL) > 0) {
        /* void */
    }

    unlink(pidfile);

    return 0;
}
