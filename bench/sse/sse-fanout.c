/*
 * sse-fanout: Server-Sent Events fan-out benchmark client.
 *
 * Opens N event streams (GET, HTTP/1.1, non-blocking sockets on one epoll
 * loop) to one URL, waits until each has announced itself (an event named
 * "connected" by default), then publishes M messages with HTTP POSTs whose
 * bodies embed the send time (CLOCK_REALTIME, ns) and a sequence number:
 *
 *     "t=<ns> seq=<i>"
 *
 * Every stream that receives an event whose data carries that marker
 * records (receipt time - send time).  At the end it prints the latency
 * percentiles over all deliveries, deliveries received against N*M,
 * duplicates, the connect time, the publish requests' own latency, and a
 * RESULT line of key=value pairs for scripts.
 *
 * With --split-port every other stream goes to a second server (another
 * node on the same Redis) while the messages are still published to the
 * first: the report then counts the second half's deliveries apart.
 *
 * Responses may use chunked transfer encoding or none; SSE lines may end
 * in CRLF, LF or CR, and frames may be split anywhere across reads.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -o sse-fanout sse-fanout.c -lm
 * Usage: sse-fanout --help
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define SSE_HDR_MAX        16384
#define SSE_LINE_MAX       (1024 * 1024)
#define SSE_EVENT_NAME     32
#define SSE_READ_BUF       65536
#define SSE_MAX_EVENTS     512
#define SSE_PORTS_PER_ADDR 25000    /* of the 28k ephemeral ports */


enum {
    ST_CONNECTING = 0,
    ST_SENDING,
    ST_HEADERS,
    ST_BODY,
    ST_IDLE,
    ST_CLOSED
};

enum {
    CH_SIZE = 0,
    CH_EXT,
    CH_DATA,
    CH_DATA_CR,
    CH_TRAILER,
    CH_DONE
};

enum {
    PH_CONNECT = 0,
    PH_SETTLE,
    PH_WARMUP,
    PH_PUBLISH,
    PH_DRAIN
};


typedef struct {
    int            fd;
    uint8_t        pub;         /* a publisher connection */
    uint8_t        state;
    uint8_t        chunked;
    uint8_t        chunk_state;
    uint8_t        cr;          /* the last line ended with CR */
    uint8_t        ready;
    uint8_t        has_marker;
    uint8_t        close_after; /* the response said Connection: close */
    uint8_t        attempts;
    uint8_t        reused;      /* a request on a kept-alive connection */
    uint16_t       status;
    uint32_t       idx;
    uint32_t       got;         /* measured messages received */
    uint32_t       warm;        /* warm-up messages received */

    int64_t        body_left;   /* Content-Length left, -1: none */
    uint64_t       chunk_left;
    uint32_t       chunk_line;  /* bytes on the current trailer line */

    char          *hdr;
    uint32_t       hdr_len;

    char          *line;        /* a partial SSE line */
    uint32_t       line_len;
    uint32_t       line_cap;

    char           event[SSE_EVENT_NAME];

    int64_t        ev_t;
    int64_t        ev_seq;

    /* pending output (the request) */
    char          *out;
    size_t         out_len;
    size_t         out_off;

    int64_t        seq;         /* publisher: the message in flight, -1 */
} conn_t;


/* options */

static const char  *opt_host = "127.0.0.1";
static int          opt_port = 8080;
static int          opt_pub_port;
static int          opt_split_port;
static const char  *opt_path;
static const char  *opt_pub_path;
static const char  *opt_body = "{\"content\":\"t=%T seq=%S\"}";
static const char  *opt_ready = "connected";
static const char  *opt_label = "sse";
static const char  *opt_hook;
static char        *opt_headers;     /* "Name: value\r\n"... */
static char        *opt_pub_headers;
static long         opt_n = 1000;
static long         opt_m = 100;
static double       opt_rate;        /* 0: one after the other */
static int          opt_new_conn;
static long         opt_pub_conns = 64;
static long         opt_conc = 256;
static long         opt_srcs;
static long         opt_settle_ms = 300;
static long         opt_warmup = 1;
static double       opt_timeout = 10;
static double       opt_connect_timeout = 60;
static int          opt_quiet;


/* state */

static int          ep;
static conn_t      *subs;
static conn_t      *pubs;
static long         npubs;
static struct sockaddr_in  srv, srv_split, pub_srv;
static char        *sub_req;
static size_t       sub_req_len;
static char        *sub_req_split;
static size_t       sub_req_split_len;
static char         read_buf[SSE_READ_BUF];
static int64_t      now_ns;

static int          phase;
static int64_t      phase_start;
static int64_t      t_connect_start, t_connect_end;
static int64_t      t_pub_start, t_pub_end, t_last_delivery;
static int64_t      cpu_pub_start, cpu_pub_end;  /* the client's own */

static long         sub_next;        /* next subscriber to open */
static long         sub_pending;     /* opened, not ready, not failed */
static long         sub_ready;
static long         sub_failed;
static long         sub_closed;      /* ready, then closed by the server */
static long         sub_alive;
static long         sub_warm_done;   /* alive ones with every warm-up */
static long         sub_all_done;    /* alive ones with every message */
static int          fail_status;
static char         fail_text[256];

static long         warm_next;       /* next warm-up message to send */
static long         msg_next;        /* next measured message to send */
static long         pub_ok;
static long         pub_err;
static long         pub_outstanding;
static long         warm_ok;
static long         warm_err;
static int          pub_fail_status;
static char         pub_fail_text[256];

static int64_t     *pub_sent;        /* per message: send time, ns */
static int64_t     *pub_done;        /* per message: response time, ns */
static uint32_t    *msg_count;       /* per message: deliveries */
static int64_t     *msg_last;        /* per message: last receipt, ns */

static int64_t     *lat;             /* every delivery's latency, ns */
static size_t       lat_n, lat_cap;
static uint8_t     *seen;            /* N*M bits, duplicates */
static uint64_t     received, duplicates, stray, unparsed;
static long         split_ready;     /* ready streams on --split-port */
static uint64_t     split_received;


static void conn_close(conn_t *c);
static void pub_schedule(void);


/* the client's own CPU time, ns: a client that uses a whole core is
 * what the latencies measure, not the server */

static int64_t
cpu_ns(void)
{
    struct rusage  ru;

    getrusage(RUSAGE_SELF, &ru);

    return ((int64_t) ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000
           + ((int64_t) ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}


static int64_t
clock_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


static void
die(const char *fmt, ...)
{
    va_list  ap;

    fprintf(stderr, "sse-fanout: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(2);
}


static void
say(const char *fmt, ...)
{
    va_list  ap;

    if (opt_quiet) {
        return;
    }

    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fflush(stdout);
}


static void *
xalloc(size_t n)
{
    void  *p;

    p = calloc(1, n ? n : 1);
    if (p == NULL) {
        die("out of memory (%zu bytes)", n);
    }

    return p;
}


/* appends "Name: value\r\n" to a header block */

static char *
add_header(char *block, const char *h)
{
    size_t  old, len;
    char   *p;

    if (strchr(h, ':') == NULL || strpbrk(h, "\r\n")) {
        die("bad header \"%s\" (Name: value)", h);
    }

    old = block ? strlen(block) : 0;
    len = strlen(h);

    p = realloc(block, old + len + 3);
    if (p == NULL) {
        die("out of memory");
    }

    memcpy(p + old, h, len);
    memcpy(p + old + len, "\r\n", 3);

    return p;
}


static int
has_header(const char *block, const char *name)
{
    size_t       n;
    const char  *p;

    n = strlen(name);

    for (p = block; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            return 1;
        }
    }

    return 0;
}


static void
raise_nofile(long need)
{
    struct rlimit  rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }

    if (rl.rlim_cur >= (rlim_t) need) {
        return;
    }

    if (rl.rlim_max < (rlim_t) need) {
        rl.rlim_max = need;     /* with CAP_SYS_RESOURCE */
    }

    rl.rlim_cur = need;

    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);

        if (rl.rlim_cur < (rlim_t) need) {
            die("need %ld open files, RLIMIT_NOFILE is %llu "
                "(raise ulimit -n)", need, (unsigned long long) rl.rlim_cur);
        }
    }
}


/* ---------------------------------------------------------------- sockets */

/* with --split-port the odd streams are the second server's */

static int
sub_split(conn_t *c)
{
    return opt_split_port != 0 && (c->idx & 1);
}


static struct sockaddr_in *
sub_addr(conn_t *c)
{
    return sub_split(c) ? &srv_split : &srv;
}


static long
sub_src(conn_t *c)
{
    return opt_srcs > 1 ? (long) (c->idx % opt_srcs) + 1 : 0;
}


static int
sock_open(conn_t *c, struct sockaddr_in *to, long src)
{
    int                 fd, one;
    struct sockaddr_in  sa;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }

    one = 1;

    if (c->pub) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }

    if (src > 0) {
        /* 127.0.0.<2 + src - 1>: each source address has its own ports */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                   sizeof(one));
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(0x7f000001 + (uint32_t) src);

        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
            close(fd);
            return -1;
        }
    }

    if (connect(fd, (struct sockaddr *) to, sizeof(*to)) != 0
        && errno != EINPROGRESS)
    {
        close(fd);
        return -1;
    }

    c->fd = fd;
    c->state = ST_CONNECTING;
    c->hdr_len = 0;
    c->status = 0;
    c->chunked = 0;
    c->close_after = 0;
    c->body_left = -1;

    {
        struct epoll_event  ev;

        ev.events = EPOLLOUT;
        ev.data.ptr = c;

        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            c->fd = -1;
            return -1;
        }
    }

    return 0;
}


static void
want(conn_t *c, uint32_t events)
{
    struct epoll_event  ev;

    ev.events = events;
    ev.data.ptr = c;

    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}


static void
conn_close(conn_t *c)
{
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }

    c->state = ST_CLOSED;
    free(c->hdr);
    c->hdr = NULL;
}


/* ------------------------------------------------------------ bookkeeping */

static void
sub_failed_now(conn_t *c, const char *why)
{
    if (fail_text[0] == '\0') {
        snprintf(fail_text, sizeof(fail_text), "%s", why);
    }

    conn_close(c);

    if (c->ready) {
        sub_closed++;
        sub_alive--;

        if (c->warm >= (uint32_t) opt_warmup) {
            sub_warm_done--;
        }

        if (c->got >= (uint32_t) opt_m) {
            sub_all_done--;
        }

    } else {
        sub_pending--;
        sub_failed++;
    }
}


static void
sub_became_ready(conn_t *c)
{
    c->ready = 1;
    sub_pending--;
    sub_ready++;

    if (sub_split(c)) {
        split_ready++;
    }
    sub_alive++;

    if (opt_warmup == 0) {
        sub_warm_done++;
    }

    if (opt_m == 0) {
        sub_all_done++;
    }
}


static void
delivery(conn_t *c, int64_t t, int64_t seq)
{
    size_t  bit;

    if (seq >= opt_m && seq < opt_m + opt_warmup) {
        if (++c->warm == (uint32_t) opt_warmup && c->ready) {
            sub_warm_done++;
        }

        return;
    }

    if (seq < 0 || seq >= opt_m) {
        stray++;
        return;
    }

    if (seen) {
        bit = (size_t) c->idx * (size_t) opt_m + (size_t) seq;

        if (seen[bit >> 3] & (1u << (bit & 7))) {
            duplicates++;
            return;
        }

        seen[bit >> 3] |= (uint8_t) (1u << (bit & 7));
    }

    received++;

    if (sub_split(c)) {
        split_received++;
    }

    if (lat_n < lat_cap) {
        lat[lat_n++] = now_ns - t;
    }

    msg_count[seq]++;

    if (now_ns > msg_last[seq]) {
        msg_last[seq] = now_ns;
    }

    t_last_delivery = now_ns;

    if (++c->got == (uint32_t) opt_m && c->ready) {
        sub_all_done++;
    }
}


/* ---------------------------------------------------------------- SSE */

/* "t=<digits> seq=<digits>", t= not preceded by a word character */

static int
find_marker(const char *s, size_t n, int64_t *t, int64_t *seq)
{
    size_t       i, j;
    int64_t      a, b;
    const char  *p;

    for (i = 0; i + 2 < n; i++) {

        p = memchr(s + i, 't', n - i - 2);
        if (p == NULL) {
            return 0;
        }

        i = p - s;

        if (s[i + 1] != '=') {
            continue;
        }

        if (i > 0 && (s[i - 1] == '_' || (s[i - 1] >= '0' && s[i - 1] <= '9')
                      || ((s[i - 1] | 0x20) >= 'a'
                          && (s[i - 1] | 0x20) <= 'z')))
        {
            continue;
        }

        a = 0;
        for (j = i + 2; j < n && s[j] >= '0' && s[j] <= '9'; j++) {
            a = a * 10 + (s[j] - '0');
        }

        if (j == i + 2 || j + 5 > n || memcmp(s + j, " seq=", 5) != 0) {
            continue;
        }

        j += 5;

        if (j >= n || s[j] < '0' || s[j] > '9') {
            continue;
        }

        b = 0;
        for ( /* void */ ; j < n && s[j] >= '0' && s[j] <= '9'; j++) {
            b = b * 10 + (s[j] - '0');
        }

        *t = a;
        *seq = b;

        return 1;
    }

    return 0;
}


static void
sse_line(conn_t *c, const char *s, size_t n)
{
    size_t       k;
    const char  *v;
    size_t       vn;

    if (n == 0) {
        /* the end of an event */

        if (!c->ready && opt_ready[0] != '\0'
            && strcmp(c->event, opt_ready) == 0)
        {
            sub_became_ready(c);

        } else if (c->has_marker) {
            delivery(c, c->ev_t, c->ev_seq);
        }

        c->event[0] = '\0';
        c->has_marker = 0;
        return;
    }

    if (s[0] == ':') {
        return;     /* a comment: keep-alive */
    }

    v = memchr(s, ':', n);
    k = v ? (size_t) (v - s) : n;

    if (v) {
        v++;
        vn = n - k - 1;

        if (vn && *v == ' ') {
            v++;
            vn--;
        }

    } else {
        v = s + n;
        vn = 0;
    }

    if (k == 5 && memcmp(s, "event", 5) == 0) {
        if (vn >= SSE_EVENT_NAME) {
            vn = SSE_EVENT_NAME - 1;
        }

        memcpy(c->event, v, vn);
        c->event[vn] = '\0';

    } else if (k == 4 && memcmp(s, "data", 4) == 0) {
        if (!c->has_marker) {
            if (find_marker(v, vn, &c->ev_t, &c->ev_seq)) {
                c->has_marker = 1;

            } else if (c->ready) {
                unparsed++;
            }
        }
    }
}


static int
sse_feed(conn_t *c, const char *p, size_t n)
{
    size_t       i;
    const char  *e;
    char        *nl;

    while (n) {

        if (c->cr) {
            c->cr = 0;

            if (*p == '\n') {
                p++;
                n--;
                continue;
            }
        }

        e = NULL;
        for (i = 0; i < n; i++) {
            if (p[i] == '\n' || p[i] == '\r') {
                e = p + i;
                break;
            }
        }

        if (e == NULL) {
            if (c->line_len + n > SSE_LINE_MAX) {
                return -1;
            }

            if (c->line_len + n > c->line_cap) {
                c->line_cap = (c->line_len + n) * 2;
                nl = realloc(c->line, c->line_cap);
                if (nl == NULL) {
                    die("out of memory");
                }

                c->line = nl;
            }

            memcpy(c->line + c->line_len, p, n);
            c->line_len += n;
            return 0;
        }

        if (c->line_len) {
            if (c->line_len + i > SSE_LINE_MAX) {
                return -1;
            }

            if (c->line_len + i > c->line_cap) {
                c->line_cap = (c->line_len + i) * 2;
                nl = realloc(c->line, c->line_cap);
                if (nl == NULL) {
                    die("out of memory");
                }

                c->line = nl;
            }

            memcpy(c->line + c->line_len, p, i);
            sse_line(c, c->line, c->line_len + i);
            c->line_len = 0;

        } else {
            sse_line(c, p, i);
        }

        c->cr = (*e == '\r');
        p = e + 1;
        n -= i + 1;
    }

    return 0;
}


/* ---------------------------------------------------------------- HTTP */

/* body bytes after the headers: de-chunked into payload; returns 1 when
 * the response is complete, 0 for more, -1 on a framing error */

static int
body_feed(conn_t *c, const char *p, size_t n)
{
    size_t  k;
    int     d;

    if (!c->chunked) {
        if (c->body_left >= 0) {
            k = (size_t) c->body_left < n ? (size_t) c->body_left : n;
            c->body_left -= k;

            if (!c->pub && sse_feed(c, p, k) != 0) {
                return -1;
            }

            return c->body_left == 0;
        }

        if (!c->pub && sse_feed(c, p, n) != 0) {
            return -1;
        }

        return 0;
    }

    while (n) {
        switch (c->chunk_state) {

        case CH_SIZE:
            if (*p == '\r') {
                break;
            }

            if (*p == '\n') {
                c->chunk_state = c->chunk_left ? CH_DATA : CH_TRAILER;
                c->chunk_line = 0;
                break;
            }

            if (*p == ';' || *p == ' ' || *p == '\t') {
                c->chunk_state = CH_EXT;
                break;
            }

            if (*p >= '0' && *p <= '9') {
                d = *p - '0';
            } else if ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'f') {
                d = (*p | 0x20) - 'a' + 10;
            } else {
                return -1;
            }

            if (c->chunk_left > (UINT64_MAX >> 5)) {
                return -1;
            }

            c->chunk_left = c->chunk_left * 16 + d;
            break;

        case CH_EXT:
            if (*p == '\n') {
                c->chunk_state = c->chunk_left ? CH_DATA : CH_TRAILER;
                c->chunk_line = 0;
            }
            break;

        case CH_DATA:
            k = c->chunk_left < n ? (size_t) c->chunk_left : n;

            if (!c->pub && sse_feed(c, p, k) != 0) {
                return -1;
            }

            c->chunk_left -= k;
            p += k;
            n -= k;

            if (c->chunk_left == 0) {
                c->chunk_state = CH_DATA_CR;
            }

            continue;

        case CH_DATA_CR:
            if (*p == '\n') {
                c->chunk_state = CH_SIZE;
            } else if (*p != '\r') {
                return -1;
            }
            break;

        case CH_TRAILER:
            if (*p == '\n') {
                if (c->chunk_line == 0) {
                    c->chunk_state = CH_DONE;
                    return 1;
                }

                c->chunk_line = 0;

            } else if (*p != '\r') {
                c->chunk_line++;
            }
            break;

        default:
            return 1;
        }

        p++;
        n--;
    }

    return 0;
}


/* "Name: value" lines of a header block */

static int
header_value(const char *hdr, const char *name, const char **v, size_t *vn)
{
    size_t       n;
    const char  *p, *e;

    n = strlen(name);
    p = strstr(hdr, "\r\n");

    while (p && p[2] != '\r') {
        p += 2;
        e = strstr(p, "\r\n");
        if (e == NULL) {
            return 0;
        }

        if ((size_t) (e - p) > n && strncasecmp(p, name, n) == 0
            && p[n] == ':')
        {
            p += n + 1;
            while (*p == ' ' || *p == '\t') {
                p++;
            }

            *v = p;
            *vn = e - p;
            return 1;
        }

        p = e;
    }

    return 0;
}


static int
value_has(const char *v, size_t vn, const char *word)
{
    size_t  n, i;

    n = strlen(word);

    for (i = 0; i + n <= vn; i++) {
        if (strncasecmp(v + i, word, n) == 0) {
            return 1;
        }
    }

    return 0;
}


/* returns the offset of the body in c->hdr, 0 for more, -1: bad */

static long
headers_parse(conn_t *c)
{
    char        *e;
    const char  *v;
    size_t       vn;
    long         off;

    c->hdr[c->hdr_len] = '\0';

    e = strstr(c->hdr, "\r\n\r\n");
    if (e == NULL) {
        return c->hdr_len >= SSE_HDR_MAX - 1 ? -1 : 0;
    }

    off = e + 4 - c->hdr;

    if (strncmp(c->hdr, "HTTP/1.", 7) != 0 || c->hdr_len < 12) {
        return -1;
    }

    c->status = (uint16_t) atoi(c->hdr + 9);
    c->chunked = 0;
    c->chunk_state = CH_SIZE;
    c->chunk_left = 0;
    c->body_left = -1;

    e[2] = '\0';    /* only the header block for the lookups */

    if (header_value(c->hdr, "Transfer-Encoding", &v, &vn)
        && value_has(v, vn, "chunked"))
    {
        c->chunked = 1;

    } else if (header_value(c->hdr, "Content-Length", &v, &vn)) {
        c->body_left = strtoll(v, NULL, 10);
    }

    if (header_value(c->hdr, "Connection", &v, &vn)
        && value_has(v, vn, "close"))
    {
        c->close_after = 1;
    }

    if (c->hdr[7] == '0') {
        c->close_after = 1;     /* HTTP/1.0 */
    }

    if (c->status == 204 || c->status == 304) {
        c->body_left = 0;
        c->chunked = 0;
    }

    e[2] = '\r';

    return off;
}


static int
conn_write(conn_t *c)
{
    ssize_t  n;

    while (c->out_off < c->out_len) {
        n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);

        if (n > 0) {
            c->out_off += n;
            continue;
        }

        if (n < 0 && errno == EAGAIN) {
            return 0;
        }

        if (n < 0 && errno == EINTR) {
            continue;
        }

        return -1;
    }

    return 1;
}


/* ------------------------------------------------------------- publisher */

static void
pub_failed(int64_t seq, const char *what, int err)
{
    if (seq >= opt_m) {
        warm_err++;
    } else {
        pub_err++;
    }

    pub_outstanding--;

    if (pub_fail_text[0] == '\0') {
        snprintf(pub_fail_text, sizeof(pub_fail_text), "%s: %s", what,
                 strerror(err));
    }
}


/* the body template with %T (send time, ns) and %S (sequence) filled in */

static size_t
pub_body(char *buf, size_t size, int64_t seq)
{
    char        *b, *end;
    const char  *t;

    b = buf;
    end = buf + size - 1;

    for (t = opt_body; *t && end - b > 24; t++) {

        if (t[0] != '%' || (t[1] != 'T' && t[1] != 'S' && t[1] != '%')) {
            *b++ = *t;
            continue;
        }

        t++;

        if (*t == 'T') {
            b += snprintf(b, end - b, "%" PRId64, clock_ns());

        } else if (*t == 'S') {
            b += snprintf(b, end - b, "%" PRId64, seq);

        } else {
            *b++ = '%';
        }
    }

    *b = '\0';

    return b - buf;
}


static char *
pub_request(int64_t seq, size_t *len)
{
    char    body[8192], *req;
    size_t  n, need;

    n = pub_body(body, sizeof(body), seq);

    need = strlen(opt_pub_path) + strlen(opt_host)
           + (opt_pub_headers ? strlen(opt_pub_headers) : 0) + n + 256;
    req = xalloc(need);

    *len = snprintf(req, need,
                    "POST %s HTTP/1.1\r\n"
                    "Host: %s:%d\r\n"
                    "%s"
                    "Content-Length: %zu\r\n"
                    "%s"
                    "%s"
                    "\r\n"
                    "%s",
                    opt_pub_path, opt_host, opt_pub_port,
                    has_header(opt_pub_headers, "Content-Type")
                        ? "" : "Content-Type: application/json\r\n",
                    n,
                    opt_new_conn ? "Connection: close\r\n" : "",
                    opt_pub_headers ? opt_pub_headers : "",
                    body);

    return req;
}


static void
pub_start_request(conn_t *c)
{
    int64_t  seq;
    int      rc;

    seq = c->seq;

    free(c->out);
    c->out = pub_request(seq, &c->out_len);
    c->out_off = 0;
    c->hdr_len = 0;
    c->state = ST_SENDING;

    if (seq < opt_m) {
        pub_sent[seq] = clock_ns();
    }

    rc = conn_write(c);

    if (rc < 0) {
        if (c->reused) {
            /* closed by the server while idle: again on a new one */
            conn_close(c);
            c->reused = 0;

            if (sock_open(c, &pub_srv, 0) == 0) {
                return;
            }
        }

        pub_failed(seq, "write", errno);
        c->seq = -1;
        conn_close(c);
        return;
    }

    if (rc == 0) {
        want(c, EPOLLOUT);
        return;
    }

    c->state = ST_HEADERS;
    want(c, EPOLLIN);
}


static conn_t *
pub_conn(void)
{
    long     i;
    conn_t  *c, *free_slot;

    free_slot = NULL;

    for (i = 0; i < npubs; i++) {
        c = &pubs[i];

        if (c->state == ST_IDLE && c->fd >= 0) {
            return c;
        }

        if (c->state == ST_CLOSED && free_slot == NULL) {
            free_slot = c;
        }
    }

    return free_slot;
}


/* sends the next message if one is due and a connection is free */

static int64_t
pub_next_due(void)
{
    if (phase == PH_WARMUP) {
        return warm_next < opt_warmup && pub_outstanding == 0 ? 0 : -1;
    }

    if (phase != PH_PUBLISH || msg_next >= opt_m) {
        return -1;
    }

    if (opt_rate <= 0) {
        return pub_outstanding == 0 ? 0 : -1;
    }

    return t_pub_start + (int64_t) ((double) msg_next * 1e9 / opt_rate);
}


static void
pub_send(int64_t seq)
{
    conn_t  *c;

    c = pub_conn();
    if (c == NULL) {
        return;
    }

    c->seq = seq;
    pub_outstanding++;

    if (phase == PH_WARMUP) {
        warm_next++;
    } else {
        msg_next++;
    }

    if (c->state == ST_IDLE) {
        c->reused = 1;
        pub_start_request(c);
        return;
    }

    c->reused = 0;

    if (sock_open(c, &pub_srv, 0) != 0) {
        pub_failed(seq, "connect", errno);
        c->seq = -1;
        c->state = ST_CLOSED;
    }
}


static void
pub_schedule(void)
{
    int64_t  due;

    for ( ;; ) {
        due = pub_next_due();

        if (due < 0 || due > now_ns || pub_conn() == NULL) {
            return;
        }

        if (phase == PH_WARMUP) {
            pub_send(opt_m + warm_next);
        } else {
            pub_send(msg_next);
        }
    }
}


static void
pub_response_done(conn_t *c)
{
    int64_t  seq;

    seq = c->seq;
    c->seq = -1;
    pub_outstanding--;

    if (c->status >= 200 && c->status < 300) {
        if (seq >= opt_m) {
            warm_ok++;
        } else {
            pub_ok++;
        }

    } else {
        if (seq >= opt_m) {
            warm_err++;
        } else {
            pub_err++;
        }

        if (pub_fail_status == 0) {
            char  *b;

            pub_fail_status = c->status;
            b = strstr(c->hdr, "\r\n\r\n");
            snprintf(pub_fail_text, sizeof(pub_fail_text), "%.200s",
                     b ? b + 4 : "");
        }
    }

    if (seq >= 0 && seq < opt_m) {
        pub_done[seq] = now_ns;
        t_pub_end = now_ns;
    }

    if (c->close_after || opt_new_conn) {
        conn_close(c);
    } else {
        c->state = ST_IDLE;
        c->hdr_len = 0;
    }
}


static void
pub_event(conn_t *c, uint32_t events)
{
    int        err, rc;
    socklen_t  len;
    ssize_t    n;
    long       off;

    if (c->state == ST_CONNECTING) {
        err = 0;
        len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);

        if (err) {
            errno = err;
            goto failed;
        }

        pub_start_request(c);
        return;
    }

    if (c->state == ST_SENDING) {
        rc = conn_write(c);
        if (rc < 0) {
            goto failed;
        }

        if (rc > 0) {
            c->state = ST_HEADERS;
            want(c, EPOLLIN);
        }

        return;
    }

    if (c->state == ST_IDLE) {
        /* keep-alive connection closed by the server */
        n = read(c->fd, read_buf, sizeof(read_buf));
        if (n <= 0 && !(n < 0 && errno == EAGAIN)) {
            conn_close(c);
        }
        return;
    }

    (void) events;

    for ( ;; ) {
        if (c->hdr == NULL) {
            c->hdr = xalloc(SSE_HDR_MAX);
        }

        if (c->state == ST_HEADERS) {
            n = read(c->fd, c->hdr + c->hdr_len, SSE_HDR_MAX - 1 - c->hdr_len);

        } else {
            n = read(c->fd, read_buf, sizeof(read_buf));
        }

        if (n < 0 && errno == EAGAIN) {
            return;
        }

        if (n < 0 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            if (c->state == ST_BODY && !c->chunked && c->body_left < 0) {
                pub_response_done(c);   /* read until close */
                conn_close(c);
                return;
            }

            errno = n == 0 ? ECONNRESET : errno;
            goto failed;
        }

        if (c->state == ST_HEADERS) {
            c->hdr_len += n;
            off = headers_parse(c);

            if (off < 0) {
                errno = EPROTO;
                goto failed;
            }

            if (off == 0) {
                continue;
            }

            c->state = ST_BODY;
            rc = c->body_left == 0 && !c->chunked
                 ? 1 : body_feed(c, c->hdr + off, c->hdr_len - off);

        } else {
            rc = body_feed(c, read_buf, n);
        }

        if (rc < 0) {
            errno = EPROTO;
            goto failed;
        }

        if (rc > 0) {
            pub_response_done(c);
            return;
        }
    }

failed:

    /* the server closed a kept-alive connection as we reused it: the
     * request goes again on a new one */

    if (c->seq >= 0 && c->reused && c->state != ST_BODY
        && c->hdr_len == 0)
    {
        conn_close(c);
        c->reused = 0;

        if (sock_open(c, &pub_srv, 0) == 0) {
            return;
        }
    }

    if (c->seq >= 0) {
        pub_failed(c->seq, "request", errno);
        c->seq = -1;
    }

    conn_close(c);
}


/* ------------------------------------------------------------ subscriber */

static void sub_open_more(void);


static void
sub_retry_or_fail(conn_t *c, const char *why)
{
    if (c->attempts < 3 && phase == PH_CONNECT) {
        conn_close(c);
        c->attempts++;

        if (sock_open(c, sub_addr(c), sub_src(c)) == 0) {
            c->out_off = 0;
            return;
        }
    }

    sub_failed_now(c, why);
}


static void
sub_event(conn_t *c, uint32_t events)
{
    int        err, rc;
    socklen_t  len;
    ssize_t    n;
    long       off;
    char       why[160];

    if (c->state == ST_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            return;
        }

        err = 0;
        len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);

        if (err) {
            snprintf(why, sizeof(why), "connect: %s", strerror(err));
            sub_retry_or_fail(c, why);
            return;
        }

        c->state = ST_SENDING;
        c->out = sub_split(c) ? sub_req_split : sub_req;
        c->out_len = sub_split(c) ? sub_req_split_len : sub_req_len;
        c->out_off = 0;
    }

    if (c->state == ST_SENDING) {
        rc = conn_write(c);

        if (rc < 0) {
            snprintf(why, sizeof(why), "write: %s", strerror(errno));
            sub_retry_or_fail(c, why);
            return;
        }

        if (rc == 0) {
            return;
        }

        c->out = NULL;
        c->state = ST_HEADERS;
        c->hdr = xalloc(SSE_HDR_MAX);
        c->hdr_len = 0;
        want(c, EPOLLIN);
        return;
    }

    /* level-triggered: one read per wake-up keeps the loop fair */

    if (c->state == ST_HEADERS) {
        n = read(c->fd, c->hdr + c->hdr_len, SSE_HDR_MAX - 1 - c->hdr_len);
    } else {
        n = read(c->fd, read_buf, sizeof(read_buf));
    }

    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }

    if (n <= 0) {
        if (n == 0) {
            snprintf(why, sizeof(why), "%s",
                     c->ready ? "stream closed by the server"
                              : "connection closed before the stream started");
        } else {
            snprintf(why, sizeof(why), "read: %s", strerror(errno));
        }

        if (!c->ready && c->state == ST_HEADERS && c->hdr_len == 0) {
            sub_retry_or_fail(c, why);
        } else {
            sub_failed_now(c, why);
        }

        return;
    }

    now_ns = clock_ns();

    if (c->state == ST_HEADERS) {
        c->hdr_len += n;
        off = headers_parse(c);

        if (off == 0) {
            return;
        }

        if (off < 0) {
            sub_failed_now(c, "bad HTTP response header");
            return;
        }

        if (c->status != 200) {
            if (fail_status == 0) {
                fail_status = c->status;
                snprintf(why, sizeof(why), "status %d: %.120s", c->status,
                         c->hdr + off);
                snprintf(fail_text, sizeof(fail_text), "%s", why);
            }

            sub_failed_now(c, "status not 200");
            return;
        }

        c->state = ST_BODY;

        if (opt_ready[0] == '\0') {
            sub_became_ready(c);
        }

        rc = body_feed(c, c->hdr + off, c->hdr_len - off);
        free(c->hdr);
        c->hdr = NULL;

    } else {
        rc = body_feed(c, read_buf, n);
    }

    if (rc != 0) {
        sub_failed_now(c, rc < 0 ? "bad chunked or SSE framing"
                                 : "stream ended by the server");
    }
}


static void
sub_open_more(void)
{
    conn_t  *c;
    char     why[160];

    while (sub_next < opt_n && sub_pending < opt_conc) {
        c = &subs[sub_next];
        c->idx = (uint32_t) sub_next;
        c->seq = -1;
        sub_next++;
        sub_pending++;

        if (sock_open(c, sub_addr(c), sub_src(c)) != 0) {
            snprintf(why, sizeof(why), "socket/connect: %s", strerror(errno));
            c->fd = -1;
            sub_failed_now(c, why);
        }
    }
}


/* ---------------------------------------------------------------- report */

static int
cmp_i64(const void *a, const void *b)
{
    int64_t  x = *(const int64_t *) a, y = *(const int64_t *) b;

    return x < y ? -1 : x > y;
}


static double
pct(int64_t *v, size_t n, double p)
{
    size_t  k;

    if (n == 0) {
        return NAN;
    }

    k = (size_t) ceil(p * (double) n);
    k = k ? k - 1 : 0;

    if (k >= n) {
        k = n - 1;
    }

    return (double) v[k] / 1e6;
}


static void
run_hook(const char *phase_name)
{
    char  *cmd;
    size_t n;
    int    rc;

    if (opt_hook == NULL) {
        return;
    }

    fflush(stdout);

    n = strlen(opt_hook) + strlen(phase_name) + 2;
    cmd = xalloc(n);
    snprintf(cmd, n, "%s %s", opt_hook, phase_name);

    rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "sse-fanout: hook \"%s\" exited with %d\n", cmd, rc);
    }

    free(cmd);
}


static int
report(void)
{
    int       ok;
    size_t    i, nf, np, expected;
    double    mean, connect_s, pub_s, p50, p90, p99, p999, max;
    double    fp50, fp99, fmax, pp50, pp99, ccpu, cspan;
    int64_t   sum, *fan, *pl;

    qsort(lat, lat_n, sizeof(int64_t), cmp_i64);

    sum = 0;
    for (i = 0; i < lat_n; i++) {
        sum += lat[i];
    }

    mean = lat_n ? (double) sum / (double) lat_n / 1e6 : NAN;
    p50 = pct(lat, lat_n, 0.50);
    p90 = pct(lat, lat_n, 0.90);
    p99 = pct(lat, lat_n, 0.99);
    p999 = pct(lat, lat_n, 0.999);
    max = lat_n ? (double) lat[lat_n - 1] / 1e6 : NAN;

    /* per message: until the last stream had it, and the POST's own time */

    fan = xalloc(sizeof(int64_t) * (opt_m + 1));
    pl = xalloc(sizeof(int64_t) * (opt_m + 1));
    nf = 0;
    np = 0;

    for (i = 0; i < (size_t) opt_m; i++) {
        if (msg_count[i] && pub_sent[i]) {
            fan[nf++] = msg_last[i] - pub_sent[i];
        }

        if (pub_done[i] && pub_sent[i]) {
            pl[np++] = pub_done[i] - pub_sent[i];
        }
    }

    qsort(fan, nf, sizeof(int64_t), cmp_i64);
    qsort(pl, np, sizeof(int64_t), cmp_i64);

    fp50 = pct(fan, nf, 0.50);
    fp99 = pct(fan, nf, 0.99);
    fmax = nf ? (double) fan[nf - 1] / 1e6 : NAN;
    pp50 = pct(pl, np, 0.50);
    pp99 = pct(pl, np, 0.99);

    expected = (size_t) opt_n * (size_t) opt_m;
    connect_s = (double) (t_connect_end - t_connect_start) / 1e9;
    pub_s = t_pub_end > t_pub_start
            ? (double) (t_pub_end - t_pub_start) / 1e9 : 0;

    ok = received == expected && pub_err == 0 && duplicates == 0;

    /* from the first measured message to the last delivery */

    ccpu = cpu_pub_end > cpu_pub_start
           ? (double) (cpu_pub_end - cpu_pub_start) / 1e9 : 0;
    cspan = t_last_delivery > t_pub_start
            ? (double) (t_last_delivery - t_pub_start) / 1e9 : 0;

    printf("\n--- %s: %ld subscribers, %ld messages\n", opt_label,
           opt_n, opt_m);
    printf("subscribers:  %ld ready in %.3f s (%.0f/s), %ld failed, "
           "%ld closed during the run\n",
           sub_ready, connect_s,
           connect_s > 0 ? (double) sub_ready / connect_s : 0,
           sub_failed, sub_closed);

    if (fail_text[0]) {
        printf("              first failure: %s\n", fail_text);
    }

    printf("publishes:    %ld ok, %ld failed in %.3f s (%.1f/s); "
           "POST latency p50 %.3f ms, p99 %.3f ms; warm-up %ld ok, "
           "%ld failed\n",
           pub_ok, pub_err, pub_s, pub_s > 0 ? (double) opt_m / pub_s : 0,
           pp50, pp99, warm_ok, warm_err);

    if (pub_fail_status || pub_fail_text[0]) {
        printf("              first failure: %d %s\n", pub_fail_status,
               pub_fail_text);
    }

    printf("deliveries:   %" PRIu64 " of %zu expected (%.2f%%), "
           "%" PRIu64 " duplicates, %" PRIu64 " stray, "
           "%" PRIu64 " data lines without a marker\n",
           received, expected,
           expected ? 100.0 * (double) received / (double) expected : 0,
           duplicates, stray, unparsed);
    printf("latency:      p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  "
           "p99.9 %.3f ms  max %.3f ms  mean %.3f ms\n",
           p50, p90, p99, p999, max, mean);
    printf("fan-out:      send to last subscriber per message: "
           "p50 %.3f ms  p99 %.3f ms  max %.3f ms\n", fp50, fp99, fmax);

    printf("client:       %.3f s of CPU over the %.3f s from the first "
           "message to the last delivery (%.2f of a core)\n",
           ccpu, cspan, cspan > 0 ? ccpu / cspan : 0);

    if (opt_split_port) {
        printf("split:        %ld streams ready on port %d, %" PRIu64
               " deliveries of %zu expected there; %ld on port %d, %"
               PRIu64 " of %zu\n",
               split_ready, opt_split_port, split_received,
               (size_t) (opt_n / 2) * (size_t) opt_m,
               sub_ready - split_ready, opt_port, received - split_received,
               (size_t) (opt_n - opt_n / 2) * (size_t) opt_m);
    }

    printf("RESULT label=%s n=%ld m=%ld rate=%g ready=%ld failed=%ld "
           "closed=%ld connect_s=%.3f publish_ok=%ld publish_err=%ld "
           "publish_s=%.3f post_p50_ms=%.3f post_p99_ms=%.3f "
           "expected=%zu received=%" PRIu64 " duplicates=%" PRIu64 " "
           "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f "
           "max_ms=%.3f mean_ms=%.3f fanout_p50_ms=%.3f "
           "fanout_p99_ms=%.3f split_ready=%ld split_expected=%zu "
           "split_received=%" PRIu64 " client_cpu_s=%.3f "
           "client_span_s=%.3f ok=%d\n",
           opt_label, opt_n, opt_m, opt_rate, sub_ready, sub_failed,
           sub_closed, connect_s, pub_ok, pub_err, pub_s, pp50, pp99,
           expected, received, duplicates, p50, p90, p99, p999, max, mean,
           fp50, fp99, split_ready,
           opt_split_port ? (size_t) (opt_n / 2) * (size_t) opt_m : 0,
           split_received, ccpu, cspan, ok);

    fflush(stdout);
    free(fan);
    free(pl);

    return ok ? 0 : 1;
}


/* ---------------------------------------------------------------- main */

/* the stream request, its Host naming the port it goes to */

static char *
sub_request(int port, size_t *len)
{
    char    *req;
    size_t   need;

    need = strlen(opt_path) + strlen(opt_host)
           + (opt_headers ? strlen(opt_headers) : 0) + 256;
    req = xalloc(need);

    *len = snprintf(req, need,
                    "GET %s HTTP/1.1\r\n"
                    "Host: %s:%d\r\n"
                    "Accept: text/event-stream\r\n"
                    "Cache-Control: no-cache\r\n"
                    "%s"
                    "\r\n",
                    opt_path, opt_host, port,
                    opt_headers ? opt_headers : "");

    return req;
}


static void
usage(int rc)
{
    printf(
"usage: sse-fanout -u PATH -P PATH [options]\n"
"\n"
"  -h, --host ADDR          server address, IPv4 (127.0.0.1)\n"
"  -p, --port PORT          server port (8080)\n"
"      --pub-port PORT      port of the publish requests (--port)\n"
"      --split-port PORT    every other stream to this port (a second\n"
"                           server); deliveries there counted apart\n"
"  -u, --path PATH          stream path, e.g. /api/messages/stream/7\n"
"  -H, --header 'N: v'      extra header of the stream requests (repeat)\n"
"  -P, --pub-path PATH      publish path (POST)\n"
"  -X, --pub-header 'N: v'  extra header of the publish requests (repeat)\n"
"  -b, --body TEMPLATE      publish body; %%T: send time in ns, %%S: seq,\n"
"                           %%%%: %% (default\n"
"                           {\"content\":\"t=%%T seq=%%S\"})\n"
"  -n, --subscribers N      streams to open (1000)\n"
"  -m, --messages M         messages to publish (100)\n"
"  -r, --rate R             messages per second; 0: each one after the\n"
"                           previous POST's response (0)\n"
"      --pub-conns K        most publish requests in flight at a rate (64)\n"
"      --new-conn           a new connection for every publish request\n"
"                           (default: keep-alive)\n"
"      --ready EVENT        event a stream sends when subscribed\n"
"                           (connected); '' : the 200 response header\n"
"      --warmup W           unmeasured messages every stream must get\n"
"                           before measuring (1)\n"
"      --settle MS          wait after all streams are ready (300)\n"
"  -c, --concurrency C      connections being opened at once (256)\n"
"      --sources K          source addresses 127.0.0.2..K+1 (auto: one\n"
"                           per %d streams, 0: the kernel's choice)\n"
"  -t, --timeout S          wait for the warm-up deliveries, and for the\n"
"                           rest after the last publish (10)\n"
"      --connect-timeout S  for all streams to be ready (60)\n"
"      --hook CMD           run 'CMD connected' when all streams are ready,\n"
"                           'CMD publish' right before the first measured\n"
"                           message and 'CMD delivered' once the last\n"
"                           delivery arrived, before closing the streams\n"
"  -l, --label NAME         label of the RESULT line (sse)\n"
"  -q, --quiet              only the report\n"
"\n"
"Exit status: 0 when every stream got every message once and every\n"
"publish succeeded, 1 otherwise, 2 on a usage or set-up error.\n",
    SSE_PORTS_PER_ADDR);

    exit(rc);
}


int
main(int argc, char **argv)
{
    int                  i, n, ch;
    long                 timeout;
    int64_t              due, deadline;
    size_t               cells;
    struct epoll_event  *evs;
    conn_t              *c;

    static struct option  lopts[] = {
        { "host",            required_argument, NULL, 'h' },
        { "port",            required_argument, NULL, 'p' },
        { "pub-port",        required_argument, NULL, 1 },
        { "split-port",      required_argument, NULL, 11 },
        { "path",            required_argument, NULL, 'u' },
        { "header",          required_argument, NULL, 'H' },
        { "pub-path",        required_argument, NULL, 'P' },
        { "pub-header",      required_argument, NULL, 'X' },
        { "body",            required_argument, NULL, 'b' },
        { "subscribers",     required_argument, NULL, 'n' },
        { "messages",        required_argument, NULL, 'm' },
        { "rate",            required_argument, NULL, 'r' },
        { "pub-conns",       required_argument, NULL, 2 },
        { "new-conn",        no_argument,       NULL, 3 },
        { "ready",           required_argument, NULL, 4 },
        { "warmup",          required_argument, NULL, 5 },
        { "settle",          required_argument, NULL, 6 },
        { "concurrency",     required_argument, NULL, 'c' },
        { "sources",         required_argument, NULL, 7 },
        { "timeout",         required_argument, NULL, 't' },
        { "connect-timeout", required_argument, NULL, 8 },
        { "hook",            required_argument, NULL, 9 },
        { "label",           required_argument, NULL, 'l' },
        { "quiet",           no_argument,       NULL, 'q' },
        { "help",            no_argument,       NULL, 10 },
        { NULL, 0, NULL, 0 }
    };

    opt_srcs = -1;

    while ((ch = getopt_long(argc, argv, "h:p:u:H:P:X:b:n:m:r:c:t:l:q",
                             lopts, NULL))
           != -1)
    {
        switch (ch) {
        case 'h': opt_host = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 1:   opt_pub_port = atoi(optarg); break;
        case 11:  opt_split_port = atoi(optarg); break;
        case 'u': opt_path = optarg; break;
        case 'H': opt_headers = add_header(opt_headers, optarg); break;
        case 'P': opt_pub_path = optarg; break;
        case 'X': opt_pub_headers = add_header(opt_pub_headers, optarg); break;
        case 'b': opt_body = optarg; break;
        case 'n': opt_n = atol(optarg); break;
        case 'm': opt_m = atol(optarg); break;
        case 'r': opt_rate = atof(optarg); break;
        case 2:   opt_pub_conns = atol(optarg); break;
        case 3:   opt_new_conn = 1; break;
        case 4:   opt_ready = optarg; break;
        case 5:   opt_warmup = atol(optarg); break;
        case 6:   opt_settle_ms = atol(optarg); break;
        case 'c': opt_conc = atol(optarg); break;
        case 7:   opt_srcs = atol(optarg); break;
        case 't': opt_timeout = atof(optarg); break;
        case 8:   opt_connect_timeout = atof(optarg); break;
        case 9:   opt_hook = optarg; break;
        case 'l': opt_label = optarg; break;
        case 'q': opt_quiet = 1; break;
        case 10:  usage(0); break;
        default:  usage(2);
        }
    }

    if (optind != argc || opt_path == NULL || opt_pub_path == NULL
        || opt_n < 1 || opt_m < 0 || opt_warmup < 0 || opt_conc < 1
        || opt_pub_conns < 1 || opt_port <= 0 || opt_port > 65535
        || opt_split_port < 0 || opt_split_port > 65535
        || opt_n > 4000000 || opt_m > 100000000)
    {
        usage(2);
    }

    if (opt_pub_port == 0) {
        opt_pub_port = opt_port;
    }

    if (opt_srcs < 0) {
        opt_srcs = opt_n > SSE_PORTS_PER_ADDR
                   ? (opt_n + SSE_PORTS_PER_ADDR - 1) / SSE_PORTS_PER_ADDR : 0;
    }

    memset(&srv, 0, sizeof(srv));
    srv.sin_family = AF_INET;
    srv.sin_port = htons(opt_port);

    if (inet_pton(AF_INET, opt_host, &srv.sin_addr) != 1) {
        die("bad address \"%s\" (IPv4 only)", opt_host);
    }

    pub_srv = srv;
    pub_srv.sin_port = htons(opt_pub_port);
    srv_split = srv;
    srv_split.sin_port = htons(opt_split_port);

    signal(SIGPIPE, SIG_IGN);

    npubs = opt_rate > 0 ? opt_pub_conns : 1;

    raise_nofile(opt_n + npubs + 64);

    sub_req = sub_request(opt_port, &sub_req_len);

    if (opt_split_port) {
        sub_req_split = sub_request(opt_split_port, &sub_req_split_len);
    }

    subs = xalloc(sizeof(conn_t) * opt_n);
    pubs = xalloc(sizeof(conn_t) * npubs);

    for (i = 0; i < npubs; i++) {
        pubs[i].fd = -1;
        pubs[i].pub = 1;
        pubs[i].state = ST_CLOSED;
        pubs[i].seq = -1;
    }

    pub_sent = xalloc(sizeof(int64_t) * (opt_m + 1));
    pub_done = xalloc(sizeof(int64_t) * (opt_m + 1));
    msg_last = xalloc(sizeof(int64_t) * (opt_m + 1));
    msg_count = xalloc(sizeof(uint32_t) * (opt_m + 1));

    cells = (size_t) opt_n * (size_t) opt_m;
    lat_cap = cells;
    lat = xalloc(sizeof(int64_t) * (cells ? cells : 1));

    if (cells / 8 < (size_t) 512 * 1024 * 1024) {
        seen = xalloc(cells / 8 + 1);
    }

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        die("epoll_create1: %s", strerror(errno));
    }

    evs = xalloc(sizeof(struct epoll_event) * SSE_MAX_EVENTS);

    /* the query may hold a token: not for the report */

    say("%s: %ld streams to %s:%d%.*s%s, %ld messages to %s (%s%s)\n",
        opt_label, opt_n, opt_host, opt_port,
        (int) strcspn(opt_path, "?"), opt_path,
        strchr(opt_path, '?') ? "?..." : "", opt_m, opt_pub_path,
        opt_rate > 0 ? "at a rate" : "one after the other",
        opt_new_conn ? ", new connection each" : ", keep-alive");

    now_ns = clock_ns();
    t_connect_start = now_ns;
    phase = PH_CONNECT;
    phase_start = now_ns;
    deadline = now_ns + (int64_t) (opt_connect_timeout * 1e9);

    sub_open_more();

    for ( ;; ) {
        now_ns = clock_ns();

        /* phase changes */

        if (phase == PH_CONNECT) {
            if (sub_ready + sub_failed >= opt_n || now_ns >= deadline) {
                t_connect_end = now_ns;

                say("%s: %ld of %ld streams ready in %.3f s%s\n", opt_label,
                    sub_ready, opt_n,
                    (double) (now_ns - t_connect_start) / 1e9,
                    sub_failed ? " (some failed)" : "");

                if (sub_ready == 0) {
                    fprintf(stderr, "sse-fanout: no stream opened: %s\n",
                            fail_text[0] ? fail_text : "timeout");
                    report();
                    return 1;
                }

                run_hook("connected");

                now_ns = clock_ns();
                phase = PH_SETTLE;
                phase_start = now_ns;
            }
        }

        if (phase == PH_SETTLE
            && now_ns - phase_start >= opt_settle_ms * 1000000)
        {
            phase = PH_WARMUP;
            phase_start = now_ns;
            deadline = now_ns + (int64_t) (opt_timeout * 1e9);
        }

        /* every stream has the warm-up messages, or none can come */

        if (phase == PH_WARMUP
            && ((warm_next >= opt_warmup && pub_outstanding == 0
                 && (sub_warm_done >= sub_alive || warm_ok == 0))
                || now_ns >= deadline))
        {
            if (sub_warm_done < sub_alive) {
                say("%s: warm-up incomplete: %ld of %ld streams got it\n",
                    opt_label, sub_warm_done, sub_alive);
            }

            /* the hook reads what the servers spent so far: no message
             * is in flight, and the measured ones start after it */

            run_hook("publish");

            now_ns = clock_ns();
            phase = PH_PUBLISH;
            phase_start = now_ns;
            t_pub_start = now_ns;
            cpu_pub_start = cpu_ns();
        }

        if (phase == PH_PUBLISH && msg_next >= opt_m && pub_outstanding == 0) {
            phase = PH_DRAIN;
            phase_start = now_ns;

            if (t_pub_end == 0) {
                t_pub_end = now_ns;
            }

            deadline = now_ns + (int64_t) (opt_timeout * 1e9);
        }

        if (phase == PH_DRAIN
            && (sub_all_done >= sub_alive || now_ns >= deadline))
        {
            break;
        }

        if (phase == PH_WARMUP || phase == PH_PUBLISH) {
            pub_schedule();
        }

        /* how long to wait */

        timeout = 100;
        due = pub_next_due();

        if (due >= 0) {
            timeout = due <= now_ns ? 0 : (long) ((due - now_ns) / 1000000);
            if (timeout > 100) {
                timeout = 100;
            }

            if (due > now_ns && timeout == 0) {
                timeout = 1;
            }
        }

        if (phase == PH_SETTLE) {
            timeout = 10;
        }

        n = epoll_wait(ep, evs, SSE_MAX_EVENTS, (int) timeout);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            die("epoll_wait: %s", strerror(errno));
        }

        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;

            if (c->fd < 0) {
                continue;
            }

            if (c->pub) {
                now_ns = clock_ns();
                pub_event(c, evs[i].events);
            } else {
                sub_event(c, evs[i].events);
            }
        }

        if (phase == PH_CONNECT) {
            sub_open_more();
        }
    }

    now_ns = clock_ns();

    if (sub_all_done < sub_alive) {
        say("%s: stopped waiting %.1f s after the last publish\n", opt_label,
            opt_timeout);
    }

    cpu_pub_end = cpu_ns();
    free(evs);

    run_hook("delivered");

    return report();
}
