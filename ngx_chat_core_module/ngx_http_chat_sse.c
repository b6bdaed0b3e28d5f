
/*
 * Server-Sent Events (ARCHITECTURE.md 5).
 *
 * A stream is a request kept open with a text/event-stream response.
 * Events reach it from a Redis pub/sub channel: each worker keeps one
 * subscriber connection (ngx_http_chat_redis.c) and hands every message of
 * a channel to the streams of that channel, so a PUBLISH from any worker
 * of any node reaches every open stream.  Frames are published already
 * formatted, and a message is copied once per worker: every stream's
 * output refers to that one copy (ngx_http_chat_sse_shared_t), which is
 * freed when the last stream has sent it or gone.
 *
 * A frame is kept as a chunk of the chunked transfer coding, made with
 * it, and goes to nginx's write filter directly: the body filters would
 * only add the chunk's head and tail for every stream, and allocate them.
 * A response without chunks (HTTP/1.0) is sent the frame alone.
 *
 * An idle stream holds no output buffer: chain links and their buffers
 * come from a free list of the worker while a frame is queued and go back
 * once it is sent, so a long-lived stream does not grow its pool.  A
 * client that does not read falls behind until its unsent output passes
 * chat_sse_max_queue, and then it is cut off alone (it reconnects and
 * replays with Last-Event-ID).
 *
 * A worker that shuts down (reload, graceful stop) ends its streams as
 * streams end: the terminating chunk, an access log line.  nginx has no
 * hook for that moment, so while streams are open a timer that nginx may
 * not cancel looks at ngx_exiting every NGX_HTTP_CHAT_SSE_WATCH ms.
 *
 * A stream opened with a token ends, the same way, when the token is
 * revoked (logout), on every worker of every node: it listens on the
 * channel named by the token's revocation key, on which the logout
 * publishes.  A logout between the stream's revocation check and the
 * moment Redis serves its SUBSCRIBE would go unheard, so
 * NGX_HTTP_CHAT_SSE_RECHECK ms after opening, the stream looks at the key
 * once more: by then the subscription is long in place.
 *
 * What a stream keeps lives outside the request's pool (the stream's own
 * allocation, freed with that pool, and the recheck's pool): the pool
 * holds what nginx and the steps before the stream left in it, and an
 * idle stream should cost as few of its blocks as possible.
 */


#include "ngx_http_chat_core_module.h"


#define NGX_HTTP_CHAT_SSE_REPLAYED  64
#define NGX_HTTP_CHAT_SSE_WATCH     250
#define NGX_HTTP_CHAT_SSE_RECHECK   1000

/* free links a worker keeps for the next frames, the rest are freed */
#define NGX_HTTP_CHAT_SSE_LINKS     1024


/* a frame as a chunk, shared by the streams that have it queued:
 * "<hex length>\r\n", the frame, "\r\n" */

typedef struct {
    ngx_uint_t                  refs;
    size_t                      len;        /* of the frame */
    size_t                      head;       /* of the chunk's head */
    u_char                      data[1];
} ngx_http_chat_sse_shared_t;


struct ngx_http_chat_sse_s {
    ngx_http_request_t         *request;
    ngx_str_t                   channel;

    ngx_chain_t                *busy;       /* queued, the worker's links */

    ngx_array_t                *held;       /* of shared frames */
    ngx_array_t                *replayed;   /* the last replayed ids */
    size_t                      held_size;

    ngx_event_t                 ping;
    ngx_queue_t                 queue;      /* the worker's streams */

    ngx_str_t                   revoked;    /* the token's revocation key */
    ngx_event_t                 recheck;
    ngx_http_chat_op_t         *check;      /* the recheck in flight */

    ngx_http_chat_handler_pt    next;       /* once subscribed */

    unsigned                    subscribed:1;
    unsigned                    watching:1; /* listens on "revoked" */
    unsigned                    hold:1;
    unsigned                    closed:1;
};


static void ngx_http_chat_sse_cleanup(void *data);
static void ngx_http_chat_sse_reading(ngx_http_request_t *r);
static void ngx_http_chat_sse_writer(ngx_http_request_t *r);
static ngx_int_t ngx_http_chat_sse_output(ngx_http_chat_sse_t *s,
    ngx_chain_t *in);
static ngx_int_t ngx_http_chat_sse_queue(ngx_http_chat_sse_t *s,
    ngx_http_chat_sse_shared_t *f);
static ngx_http_chat_sse_shared_t *ngx_http_chat_sse_shared(u_char *data,
    size_t len);
static void ngx_http_chat_sse_unref(ngx_http_chat_sse_shared_t *f);
static void ngx_http_chat_sse_sent(ngx_chain_t *cl);
static void ngx_http_chat_sse_ping(ngx_event_t *ev);
static void ngx_http_chat_sse_message(ngx_str_t *channel, ngx_str_t *payload,
    void *data);
static void ngx_http_chat_sse_watch(ngx_event_t *ev);
static ngx_uint_t ngx_http_chat_sse_replayed(ngx_array_t *ids,
    ngx_str_t *frame);
static ngx_int_t ngx_http_chat_sse_watch_token(ngx_http_chat_sse_t *s,
    ngx_str_t *token);
static void ngx_http_chat_sse_revoked(ngx_str_t *channel, ngx_str_t *payload,
    void *data);
static void ngx_http_chat_sse_recheck(ngx_event_t *ev);
static ngx_http_chat_route_t *ngx_http_chat_sse_route(ngx_http_chat_sse_t *s);
static void ngx_http_chat_sse_confirmed(void *data);
static void ngx_http_chat_sse_rechecked(ngx_http_chat_op_t *op);
static void ngx_http_chat_sse_free(void *data);


static ngx_uint_t        ngx_http_chat_sse_nstreams;
static ngx_queue_t       ngx_http_chat_sse_streams;
static ngx_event_t       ngx_http_chat_sse_watcher;
static ngx_connection_t  ngx_http_chat_sse_dummy;

/* chain links with their buffers, not queued anywhere */
static ngx_chain_t      *ngx_http_chat_sse_links;
static ngx_uint_t        ngx_http_chat_sse_nlinks;

/* the frame of the pub/sub message being dispatched, and its number */
static ngx_http_chat_sse_shared_t  *ngx_http_chat_sse_last;
static ngx_uint_t                   ngx_http_chat_sse_last_message;


ngx_int_t
ngx_http_chat_sse_frame(ngx_pool_t *pool, const char *event, ngx_str_t *id,
    cJSON *data, ngx_str_t *frame)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   json;

    if (ngx_http_chat_py_json(pool, data, &json) != NGX_OK) {
        return NGX_ERROR;
    }

    len = sizeof("event: \r\ndata: \r\n\r\n") - 1 + ngx_strlen(event)
          + json.len;

    if (id) {
        len += sizeof("id: \r\n") - 1 + id->len;
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    frame->data = p;

    if (id) {
        p = ngx_sprintf(p, "id: %V\r\n", id);
    }

    p = ngx_sprintf(p, "event: %s\r\ndata: %V\r\n\r\n", event, &json);

    frame->len = p - frame->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_chat_sse_publish(ngx_str_t *channel, ngx_str_t *frame)
{
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = "PUBLISH";
    argvlen[0] = sizeof("PUBLISH") - 1;
    argv[1] = (const char *) channel->data;
    argvlen[1] = channel->len;
    argv[2] = (const char *) frame->data;
    argvlen[2] = frame->len;

    return ngx_http_chat_redis_send(3, argv, argvlen);
}


ngx_http_chat_sse_t *
ngx_http_chat_sse_open(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_pool_cleanup_t              *pcln;
    ngx_http_cleanup_t              *cln;
    ngx_http_chat_ctx_t             *ctx;
    ngx_http_chat_sse_t             *s;
    ngx_http_chat_core_main_conf_t  *cmcf;

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_core_module);

    ctx = ngx_http_chat_get_ctx(r);
    if (ctx == NULL) {
        return NULL;
    }

    /* the stream outlives its end as long as the request's pool does:
     * its callers look at it after closing it */

    pcln = ngx_pool_cleanup_add(r->pool, 0);
    if (pcln == NULL) {
        return NULL;
    }

    s = ngx_calloc(sizeof(ngx_http_chat_sse_t), r->connection->log);
    if (s == NULL) {
        return NULL;
    }

    pcln->handler = ngx_http_chat_sse_free;
    pcln->data = s;

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NULL;
    }

    s->request = r;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    ngx_str_set(&r->headers_out.content_type,
                "text/event-stream; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/event-stream") - 1;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_chat_add_header(r, "Cache-Control", "no-cache") != NGX_OK
        || ngx_http_chat_add_header(r, "X-Accel-Buffering", "no") != NGX_OK)
    {
        return NULL;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        return NULL;
    }

    cln->handler = ngx_http_chat_sse_cleanup;
    cln->data = s;

    ctx->sse = s;
    ngx_http_chat_sse_nstreams++;
    ngx_http_chat_metrics_stream(ctx->route, 1);

    /* the stream holds the request until it is closed */

    r->main->count++;

    r->read_event_handler = ngx_http_chat_sse_reading;
    r->write_event_handler = ngx_http_chat_sse_writer;

    s->ping.handler = ngx_http_chat_sse_ping;
    s->ping.data = r->connection;
    s->ping.log = r->connection->log;
    s->ping.cancelable = 1;

    ngx_add_timer(&s->ping, cmcf->sse_keepalive);

    if (ngx_http_chat_sse_nstreams == 1) {
        ngx_queue_init(&ngx_http_chat_sse_streams);
    }

    ngx_queue_insert_tail(&ngx_http_chat_sse_streams, &s->queue);

    if (!ngx_http_chat_sse_watcher.timer_set) {
        ngx_http_chat_sse_dummy.fd = (ngx_socket_t) -1;

        ngx_http_chat_sse_watcher.handler = ngx_http_chat_sse_watch;
        ngx_http_chat_sse_watcher.data = &ngx_http_chat_sse_dummy;
        ngx_http_chat_sse_watcher.log = ngx_cycle->log;

        ngx_add_timer(&ngx_http_chat_sse_watcher, NGX_HTTP_CHAT_SSE_WATCH);
    }

    if (ctx->token.len && ngx_http_chat_sse_watch_token(s, &ctx->token)
                          != NGX_OK)
    {
        return NULL;
    }

    return s;
}


static ngx_int_t
ngx_http_chat_sse_watch_token(ngx_http_chat_sse_t *s, ngx_str_t *token)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = s->request;

    if (ngx_http_chat_revoked_key(r, token, &s->revoked) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = ngx_http_chat_redis_subscribe(&s->revoked, ngx_http_chat_sse_revoked,
                                       s);

    if (rc == NGX_DECLINED) {
        return NGX_OK;      /* no Redis: no revocation either */
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    s->watching = 1;

    s->recheck.handler = ngx_http_chat_sse_recheck;
    s->recheck.data = r->connection;
    s->recheck.log = r->connection->log;
    s->recheck.cancelable = 1;

    ngx_add_timer(&s->recheck, NGX_HTTP_CHAT_SSE_RECHECK);

    return NGX_OK;
}


/* the logout of the stream's token, published by ngx_http_chat_revoke() */

static void
ngx_http_chat_sse_revoked(ngx_str_t *channel, ngx_str_t *payload, void *data)
{
    ngx_http_chat_sse_t *s = data;

    ngx_connection_t  *c;

    if (s->closed) {
        return;
    }

    c = s->request->connection;

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "chat sse: token revoked, stream ended");

    ngx_http_chat_sse_close(s, NGX_OK);
    ngx_http_run_posted_requests(c);
}


/*
 * The look at the key is an operation of its own, in a pool of its own:
 * it may outlive the stream, which then only lets go of it.
 */

static void
ngx_http_chat_sse_recheck(ngx_event_t *ev)
{
    const char           *argv[2];
    size_t                argvlen[2];
    ngx_pool_t           *pool;
    ngx_http_chat_op_t   *op;
    ngx_http_chat_sse_t  *s;

    s = (ngx_http_chat_sse_t *) ((u_char *) ev
                                 - offsetof(ngx_http_chat_sse_t, recheck));

    if (s->closed) {
        return;
    }

    /* if Redis cannot take it, the subscription still listens */

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    op = ngx_pcalloc(pool, sizeof(ngx_http_chat_op_t));
    if (op == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    op->pool = pool;
    op->log = ngx_cycle->log;
    op->handler = ngx_http_chat_sse_rechecked;
    op->data = s;

    s->check = op;

    argv[0] = "EXISTS";
    argvlen[0] = sizeof("EXISTS") - 1;
    argv[1] = (const char *) s->revoked.data;
    argvlen[1] = s->revoked.len;

    if (ngx_http_chat_op_redis(op, 2, argv, argvlen) != NGX_OK) {
        ngx_http_chat_op_fail(op);
    }
}


static void
ngx_http_chat_sse_rechecked(ngx_http_chat_op_t *op)
{
    ngx_http_chat_sse_t  *s;

    s = op->data;

    if (s) {
        s->check = NULL;

        if (op->rc == NGX_OK && op->reply->type == REDIS_REPLY_INTEGER
            && op->reply->integer != 0)
        {
            ngx_http_chat_sse_revoked(&s->revoked, NULL, s);
        }
    }

    ngx_destroy_pool(op->pool);
}


/* a shutting down worker ends its streams cleanly, clients reconnect */

static void
ngx_http_chat_sse_watch(ngx_event_t *ev)
{
    ngx_queue_t          *q;
    ngx_connection_t     *c;
    ngx_http_chat_sse_t  *s;

    if (ngx_http_chat_sse_nstreams == 0) {
        return;
    }

    if (!ngx_exiting) {
        ngx_add_timer(ev, NGX_HTTP_CHAT_SSE_WATCH);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                  "chat sse: worker exiting, ending %ui streams",
                  ngx_http_chat_sse_nstreams);

    /* each close takes its stream off the list */

    while (!ngx_queue_empty(&ngx_http_chat_sse_streams)) {
        q = ngx_queue_head(&ngx_http_chat_sse_streams);
        s = ngx_queue_data(q, ngx_http_chat_sse_t, queue);

        ngx_queue_remove(q);
        ngx_queue_init(q);

        c = s->request->connection;

        ngx_http_chat_sse_close(s, NGX_OK);
        ngx_http_run_posted_requests(c);
    }
}


/* the client went away: nginx notices it while the stream waits */

static void
ngx_http_chat_sse_reading(ngx_http_request_t *r)
{
    ngx_http_test_reading(r);
}


static void
ngx_http_chat_sse_writer(ngx_http_request_t *r)
{
    ngx_http_chat_ctx_t  *ctx;

    if (r->connection->write->timedout) {
        r->connection->timedout = 1;
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_chat_core_module);

    if (ngx_http_chat_sse_output(ctx->sse, NULL) == NGX_ERROR) {
        ngx_http_chat_sse_close(ctx->sse, NGX_ERROR);
    }
}


/* out goes to the client now or as soon as it reads; past the bound the
 * stream gives up on it */

static ngx_int_t
ngx_http_chat_sse_output(ngx_http_chat_sse_t *s, ngx_chain_t *in)
{
    off_t                            queued;
    ngx_int_t                        rc;
    ngx_chain_t                     *cl;
    ngx_connection_t                *c;
    ngx_http_request_t              *r;
    ngx_chain_t                    **ll;
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_chat_core_main_conf_t  *cmcf;

    r = s->request;
    c = r->connection;

    rc = ngx_http_write_filter(r, in);

    for (ll = &s->busy; *ll; ll = &(*ll)->next) { /* void */ }

    *ll = in;

    /* what is sent goes back to the worker; frames go out in order */

    while (s->busy && ngx_buf_size(s->busy->buf) == 0) {
        cl = s->busy;
        s->busy = cl->next;
        ngx_http_chat_sse_sent(cl);
    }

    if (rc == NGX_ERROR || c->error) {
        return NGX_ERROR;
    }

    queued = 0;

    for (cl = s->busy; cl; cl = cl->next) {
        queued += ngx_buf_size(cl->buf);
    }

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_core_module);

    if (queued > (off_t) cmcf->sse_max_queue) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "chat sse: client too slow, %O bytes unsent, "
                      "closing the stream", queued);
        ngx_http_chat_metrics_stream_dropped(ngx_http_chat_sse_route(s));
        return NGX_ERROR;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (c->buffered) {
        if (!c->write->timer_set) {
            ngx_add_timer(c->write, clcf->send_timeout);
        }

        if (ngx_handle_write_event(c->write, clcf->send_lowat) != NGX_OK) {
            return NGX_ERROR;
        }

    } else if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    return NGX_OK;
}


/* a frame of this stream alone ("connected", a replay, a ping) */

ngx_int_t
ngx_http_chat_sse_send(ngx_http_chat_sse_t *s, ngx_str_t *frame)
{
    ngx_int_t                    rc;
    ngx_http_chat_sse_shared_t  *f;

    if (s->closed) {
        return NGX_ERROR;
    }

    f = ngx_http_chat_sse_shared(frame->data, frame->len);
    if (f == NULL) {
        ngx_http_chat_sse_close(s, NGX_ERROR);
        return NGX_ERROR;
    }

    rc = ngx_http_chat_sse_queue(s, f);

    ngx_http_chat_sse_unref(f);

    return rc;
}


/* the frame goes to the stream's output with a link of the worker's */

static ngx_int_t
ngx_http_chat_sse_queue(ngx_http_chat_sse_t *s, ngx_http_chat_sse_shared_t *f)
{
    u_char              *pos, *last;
    ssize_t              n;
    ngx_buf_t           *b;
    ngx_chain_t         *cl;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    if (s->closed) {
        return NGX_ERROR;
    }

    r = s->request;
    c = r->connection;

    if (r->chunked) {
        pos = f->data;
        last = f->data + f->head + f->len + 2;

    } else {
        pos = f->data + f->head;
        last = pos + f->len;
    }

    /*
     * Nothing of the stream waits to be sent (the usual case): the frame
     * goes to the socket at once, with no link and none of the write
     * filter's work, which was most of a delivery's cost above the
     * send() itself; what the socket does not take is queued as below.
     * An HTTP/2 stream has no socket of its own: its frames always go
     * through the filters.
     */

    if (s->busy == NULL && r->out == NULL && !c->buffered && c->write->ready
#if (NGX_HTTP_V2)
        && r->stream == NULL
#endif
       )
    {
        n = c->send(c, pos, last - pos);

        if (n == NGX_ERROR) {
            ngx_http_chat_sse_close(s, NGX_ERROR);
            return NGX_ERROR;
        }

        if (n == last - pos) {
            return NGX_OK;
        }

        if (n > 0) {
            pos += n;
        }
    }

    cl = ngx_http_chat_sse_links;

    if (cl) {
        ngx_http_chat_sse_links = cl->next;
        ngx_http_chat_sse_nlinks--;

    } else {
        cl = ngx_alloc(sizeof(ngx_chain_t) + sizeof(ngx_buf_t), c->log);
        if (cl == NULL) {
            ngx_http_chat_sse_close(s, NGX_ERROR);
            return NGX_ERROR;
        }

        cl->buf = (ngx_buf_t *) (cl + 1);
    }

    cl->next = NULL;

    b = cl->buf;
    ngx_memzero(b, sizeof(ngx_buf_t));

    /* shared: nothing may write to it (memory, not temporary) */

    b->start = f->data;
    b->end = f->data + f->head + f->len + 2;
    b->pos = pos;
    b->last = last;

    b->memory = 1;
    b->flush = 1;
    b->tag = (ngx_buf_tag_t) &ngx_http_chat_core_module;

    f->refs++;

    if (ngx_http_chat_sse_output(s, cl) != NGX_OK) {
        ngx_http_chat_sse_close(s, NGX_ERROR);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a new frame with one reference, the caller's */

static ngx_http_chat_sse_shared_t *
ngx_http_chat_sse_shared(u_char *data, size_t len)
{
    u_char                      *p;
    ngx_http_chat_sse_shared_t  *f;

    f = ngx_alloc(offsetof(ngx_http_chat_sse_shared_t, data)
                  + NGX_SIZE_T_LEN + len + 2 * (sizeof(CRLF) - 1),
                  ngx_cycle->log);
    if (f == NULL) {
        return NULL;
    }

    f->refs = 1;
    f->len = len;

    p = ngx_sprintf(f->data, "%xz" CRLF, len);
    f->head = p - f->data;

    p = ngx_cpymem(p, data, len);
    *p++ = CR; *p = LF;

    return f;
}


static void
ngx_http_chat_sse_unref(ngx_http_chat_sse_shared_t *f)
{
    if (--f->refs == 0) {
        ngx_free(f);
    }
}


/*
 * A link whose frame is sent or dropped: the frame loses a reference and
 * the link goes back to the worker.  The write filter keeps links of its
 * own, and lets go of them once their buffers are sent: nothing refers to
 * ours by then.
 */

static void
ngx_http_chat_sse_sent(ngx_chain_t *cl)
{
    ngx_http_chat_sse_unref((ngx_http_chat_sse_shared_t *)
                 (cl->buf->start - offsetof(ngx_http_chat_sse_shared_t, data)));

    if (ngx_http_chat_sse_nlinks >= NGX_HTTP_CHAT_SSE_LINKS) {
        ngx_free(cl);
        return;
    }

    cl->next = ngx_http_chat_sse_links;
    ngx_http_chat_sse_links = cl;
    ngx_http_chat_sse_nlinks++;
}


/* ": ping - 2026-02-25 03:12:33.000412" as the original's keep-alive */

static void
ngx_http_chat_sse_ping(ngx_event_t *ev)
{
    u_char                           buf[64], *p;
    ngx_str_t                        frame;
    struct timeval                   tv;
    ngx_connection_t                *c;
    ngx_http_request_t              *r;
    ngx_http_chat_sse_t             *s;
    ngx_http_chat_core_main_conf_t  *cmcf;

    s = (ngx_http_chat_sse_t *) ((u_char *) ev
                                 - offsetof(ngx_http_chat_sse_t, ping));
    r = s->request;
    c = r->connection;

    if (s->closed) {
        return;
    }

    p = ngx_cpymem(buf, ": ping - ", sizeof(": ping - ") - 1);

    ngx_gettimeofday(&tv);
    p = ngx_http_chat_iso_time(p, tv.tv_sec, tv.tv_usec);
    p = ngx_cpymem(p, "\r\n\r\n", 4);

    /* the original prints a space between date and time here */
    buf[sizeof(": ping - ") - 1 + 10] = ' ';

    frame.data = buf;
    frame.len = p - buf;

    if (ngx_http_chat_sse_send(s, &frame) == NGX_OK) {
        cmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_core_module);
        ngx_add_timer(&s->ping, cmcf->sse_keepalive);
    }

    ngx_http_run_posted_requests(c);
}


ngx_int_t
ngx_http_chat_sse_subscribe(ngx_http_chat_sse_t *s, ngx_str_t *channel,
    ngx_uint_t hold)
{
    ngx_http_request_t  *r;

    r = s->request;

    s->channel.data = ngx_pstrdup(r->pool, channel);
    if (s->channel.data == NULL) {
        return NGX_ERROR;
    }

    s->channel.len = channel->len;
    s->hold = hold;

    if (hold) {
        s->held = ngx_array_create(r->pool, 8,
                                   sizeof(ngx_http_chat_sse_shared_t *));
        if (s->held == NULL) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_chat_redis_subscribe(&s->channel, ngx_http_chat_sse_message,
                                      s)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    s->subscribed = 1;

    return NGX_OK;
}


/*
 * What the stream reads to know where its live frames begin (a replay's
 * bound) must be read after Redis has its subscription in place: a frame
 * published between that read and the subscription would be neither read
 * nor delivered.  next(r, ctx) runs then, at once when it is already so.
 * next() returns NGX_DONE; anything else ends the stream.
 */

ngx_int_t
ngx_http_chat_sse_subscribed(ngx_http_chat_sse_t *s,
    ngx_http_chat_handler_pt next)
{
    ngx_int_t             rc;
    ngx_http_chat_ctx_t  *ctx;

    rc = ngx_http_chat_redis_subscribed(&s->channel, s,
                                        ngx_http_chat_sse_confirmed);

    if (rc == NGX_AGAIN) {
        s->next = next;
        return NGX_DONE;
    }

    /* confirmed, or no Redis to wait for */

    ctx = ngx_http_get_module_ctx(s->request, ngx_http_chat_core_module);

    return next(s->request, ctx);
}


static void
ngx_http_chat_sse_confirmed(void *data)
{
    ngx_http_chat_sse_t *s = data;

    ngx_int_t             rc;
    ngx_connection_t     *c;
    ngx_http_request_t   *r;
    ngx_http_chat_ctx_t  *ctx;

    r = s->request;
    c = r->connection;

    if (s->closed || s->next == NULL) {
        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_chat_core_module);

    rc = s->next(r, ctx);
    s->next = NULL;

    if (rc != NGX_DONE) {
        ngx_http_chat_sse_close(s, NGX_ERROR);
    }

    ngx_http_run_posted_requests(c);
}


/*
 * The streams of a channel get the message one after the other: the
 * first makes the frame, the others take a reference to it.  The worker
 * keeps one reference until the next message.
 */

static void
ngx_http_chat_sse_message(ngx_str_t *channel, ngx_str_t *payload, void *data)
{
    ngx_http_chat_sse_t *s = data;

    ngx_uint_t                       n;
    ngx_connection_t                *c;
    ngx_http_chat_sse_shared_t     **h, *f;
    ngx_http_chat_core_main_conf_t  *cmcf;

    if (s->closed) {
        return;
    }

    c = s->request->connection;

    if (!s->hold && ngx_http_chat_sse_replayed(s->replayed, payload)) {
        return;
    }

    n = ngx_http_chat_redis_message();

    if (ngx_http_chat_sse_last == NULL
        || ngx_http_chat_sse_last_message != n)
    {
        if (ngx_http_chat_sse_last) {
            ngx_http_chat_sse_unref(ngx_http_chat_sse_last);
        }

        ngx_http_chat_sse_last = ngx_http_chat_sse_shared(payload->data,
                                                          payload->len);
        ngx_http_chat_sse_last_message = n;

        if (ngx_http_chat_sse_last == NULL) {
            ngx_http_chat_sse_close(s, NGX_ERROR);
            ngx_http_run_posted_requests(c);
            return;
        }
    }

    f = ngx_http_chat_sse_last;

    if (!s->hold) {
        (void) ngx_http_chat_sse_queue(s, f);
        ngx_http_run_posted_requests(c);
        return;
    }

    /* while the stream replays, live frames wait (bounded as the output) */

    cmcf = ngx_http_get_module_main_conf(s->request, ngx_http_chat_core_module);

    s->held_size += f->len;

    h = ngx_array_push(s->held);

    if (h == NULL || s->held_size > cmcf->sse_max_queue) {
        ngx_http_chat_metrics_stream_dropped(ngx_http_chat_sse_route(s));
        ngx_http_chat_sse_close(s, NGX_ERROR);
        ngx_http_run_posted_requests(c);
        return;
    }

    f->refs++;
    *h = f;
}


/*
 * A frame already sent by the replay: an object may be stored (so the
 * replay sees it) a moment before its frame is published, so the frame can
 * come after the release too.  The last replayed ids stay as a filter.
 */

static ngx_uint_t
ngx_http_chat_sse_replayed(ngx_array_t *ids, ngx_str_t *frame)
{
    u_char      *p, *e;
    ngx_str_t   *id;
    ngx_uint_t   i;

    if (ids == NULL || frame->len <= 4
        || ngx_strncmp(frame->data, "id: ", 4) != 0)
    {
        return 0;
    }

    p = frame->data + 4;
    e = ngx_strlchr(p, frame->data + frame->len, '\r');

    if (e == NULL) {
        return 0;
    }

    id = ids->elts;

    for (i = 0; i < ids->nelts; i++) {
        if (id[i].len == (size_t) (e - p)
            && ngx_strncmp(id[i].data, p, id[i].len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* after a replay: the held frames, but not those the replay already sent */

ngx_int_t
ngx_http_chat_sse_release(ngx_http_chat_sse_t *s, ngx_array_t *ids)
{
    ngx_int_t                     rc;
    ngx_str_t                    *f, *id, frame;
    ngx_uint_t                    i, n, first;
    ngx_http_chat_sse_shared_t  **h;

    s->hold = 0;

    /* the ids in flight at the replay are among its last ones */

    if (ids && ids->nelts) {
        s->replayed = ngx_array_create(s->request->pool,
                                       NGX_HTTP_CHAT_SSE_REPLAYED,
                                       sizeof(ngx_str_t));
        if (s->replayed == NULL) {
            return NGX_ERROR;
        }

        id = ids->elts;
        first = ids->nelts > NGX_HTTP_CHAT_SSE_REPLAYED
                ? ids->nelts - NGX_HTTP_CHAT_SSE_REPLAYED : 0;

        /* the ids may be the caller's, gone after the replay */

        for (i = first; i < ids->nelts; i++) {
            f = ngx_array_push(s->replayed);
            if (f == NULL) {
                return NGX_ERROR;
            }

            f->data = ngx_pstrdup(s->request->pool, &id[i]);
            if (f->data == NULL) {
                return NGX_ERROR;
            }

            f->len = id[i].len;
        }
    }

    if (s->held == NULL) {
        return NGX_OK;
    }

    /* taken out first: a stream that ends on the way lets go of the rest
     * here, not in its cleanup */

    h = s->held->elts;
    n = s->held->nelts;

    s->held->nelts = 0;
    s->held_size = 0;

    rc = NGX_OK;

    for (i = 0; i < n; i++) {

        /* held frames are checked against every replayed id */

        frame.data = h[i]->data + h[i]->head;
        frame.len = h[i]->len;

        if (rc == NGX_OK && !ngx_http_chat_sse_replayed(ids, &frame)) {
            rc = ngx_http_chat_sse_queue(s, h[i]);
        }

        ngx_http_chat_sse_unref(h[i]);
    }

    return rc;
}


/* ends the stream: rc NGX_OK after the last frame, NGX_ERROR cuts it off */

void
ngx_http_chat_sse_close(ngx_http_chat_sse_t *s, ngx_int_t rc)
{
    if (s->closed) {
        return;
    }

    s->closed = 1;

    if (rc == NGX_OK) {
        rc = ngx_http_send_special(s->request, NGX_HTTP_LAST);
    }

    ngx_http_finalize_request(s->request, rc);
}


static void
ngx_http_chat_sse_cleanup(void *data)
{
    ngx_http_chat_sse_t *s = data;

    ngx_uint_t                    i;
    ngx_chain_t                  *cl;
    ngx_http_chat_sse_shared_t  **h;

    s->closed = 1;

    /* the connection goes: what was not sent is dropped */

    while (s->busy) {
        cl = s->busy;
        s->busy = cl->next;
        ngx_http_chat_sse_sent(cl);
    }

    if (s->held) {
        h = s->held->elts;

        for (i = 0; i < s->held->nelts; i++) {
            ngx_http_chat_sse_unref(h[i]);
        }

        s->held->nelts = 0;
    }

    if (s->subscribed) {
        s->subscribed = 0;
        (void) ngx_http_chat_redis_unsubscribe(&s->channel, s);
    }

    if (s->watching) {
        s->watching = 0;
        (void) ngx_http_chat_redis_unsubscribe(&s->revoked, s);
    }

    if (s->ping.timer_set) {
        ngx_del_timer(&s->ping);
    }

    if (s->recheck.timer_set) {
        ngx_del_timer(&s->recheck);
    }

    if (s->check) {
        s->check->data = NULL;
        s->check = NULL;
    }

    if (ngx_queue_next(&s->queue) != &s->queue) {
        ngx_queue_remove(&s->queue);
    }

    ngx_http_chat_sse_nstreams--;
    ngx_http_chat_metrics_stream(ngx_http_chat_sse_route(s), -1);
}


static void
ngx_http_chat_sse_free(void *data)
{
    ngx_free(data);
}


/* the route the stream was opened by, for the metrics */

static ngx_http_chat_route_t *
ngx_http_chat_sse_route(ngx_http_chat_sse_t *s)
{
    ngx_http_chat_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(s->request, ngx_http_chat_core_module);

    return ctx ? ctx->route : NULL;
}


/*
 * The header on a reconnection; the argument on a first connection, which
 * a browser's EventSource cannot give headers to
 */

void
ngx_http_chat_sse_last_event_id(ngx_http_request_t *r, ngx_str_t *last)
{
    ngx_table_elt_t  *h;

    h = ngx_http_chat_header(r, "Last-Event-ID", sizeof("Last-Event-ID") - 1,
                             NULL);

    if (h && h->value.len) {
        *last = h->value;
        return;
    }

    if (ngx_http_arg(r, (u_char *) "last_event_id",
                     sizeof("last_event_id") - 1, last)
        != NGX_OK)
    {
        ngx_str_null(last);
    }
}


ngx_uint_t
ngx_http_chat_sse_count(void)
{
    return ngx_http_chat_sse_nstreams;
}


/* streams still open keep the links and frames they have queued */

void
ngx_http_chat_sse_exit_process(ngx_cycle_t *cycle)
{
    ngx_chain_t  *cl;

    if (ngx_http_chat_sse_last) {
        ngx_http_chat_sse_unref(ngx_http_chat_sse_last);
        ngx_http_chat_sse_last = NULL;
    }

    while (ngx_http_chat_sse_links) {
        cl = ngx_http_chat_sse_links;
        ngx_http_chat_sse_links = cl->next;
        ngx_free(cl);
    }

    ngx_http_chat_sse_nlinks = 0;
}
