
/*
 * Redis client on nginx events.
 *
 * hiredis 0.14 async contexts are attached to nginx connections: the
 * library's read/write interest hooks become level-triggered nginx events,
 * timeouts are nginx timers (hiredis 0.14 has none).  Each worker keeps
 *
 *   - a command connection: pipelined commands of requests, each with its
 *     own timeout, and fire-and-forget commands (events, presence);
 *   - a pub/sub connection: one SUBSCRIBE per channel that has local
 *     subscribers, messages dispatched to every local subscriber.
 *
 * Both are the same connection object, which reconnects by itself with a
 * backoff; later kinds (a blocking XREADGROUP consumer) are made the same
 * way, with their own "connected" hook.
 *
 * hiredis rules this code relies on:
 *   - freeing a context runs every pending callback with a NULL reply,
 *     synchronously, then the "cleanup" hook, then closes the socket;
 *   - redisAsyncFree() called inside a reply callback is deferred until
 *     the callback returns; called from a connect callback it is not, so
 *     it is never called there;
 *   - once a context is being freed or has failed, new commands are
 *     refused (REDIS_ERR).
 */


#include "ngx_http_chat_core_module.h"

#include <hiredis/async.h>


#define NGX_HTTP_CHAT_REDIS_BACKOFF_MIN     100
#define NGX_HTTP_CHAT_REDIS_BACKOFF_MAX     5000

/* channels per SUBSCRIBE when a pub/sub connection is (re)established */
#define NGX_HTTP_CHAT_REDIS_SUBSCRIBE_BATCH 256


typedef struct ngx_http_chat_redis_conn_s  ngx_http_chat_redis_conn_t;

typedef void (*ngx_http_chat_redis_conn_pt)(ngx_http_chat_redis_conn_t *rconn);


struct ngx_http_chat_redis_conn_s {
    redisAsyncContext              *ac;
    ngx_connection_t               *c;
    ngx_log_t                      *log;
    const char                     *name;       /* "command", "pub/sub" */
    char                           *host;       /* NUL-terminated copy */
    ngx_http_chat_core_main_conf_t *cmcf;

    /* connect and handshake timeout, or the reconnect backoff */
    ngx_event_t                     timer;
    ngx_msec_t                      backoff;

    /*
     * called once the connection is established and the handshake is
     * queued: what the connection kind needs before anything else
     */
    ngx_http_chat_redis_conn_pt     connected;
    void                           *data;

    ngx_uint_t                      handshake;  /* replies still awaited */

    unsigned                        open:1;     /* accepts commands */
    unsigned                        ready:1;    /* handshake replied */
    unsigned                        dropping:1; /* freed on our request */
    unsigned                        failed:1;   /* loss logged */
    unsigned                        ever:1;     /* was ever ready */
};


/* a request's command; lives in r->pool, the request is parked meanwhile */

typedef struct {
    ngx_http_request_t             *request;
    ngx_event_t                     event;      /* timeout, or completion
                                                   when Redis is down */
} ngx_http_chat_redis_op_t;


typedef struct {
    ngx_str_node_t                  sn;         /* first: rbtree lookups */
    ngx_queue_t                     subscribers;
    ngx_uint_t                      dispatching;
} ngx_http_chat_redis_channel_t;


typedef struct {
    ngx_queue_t                     queue;
    ngx_http_chat_message_pt        handler;    /* NULL: removed during
                                                   dispatch */
    void                           *data;
} ngx_http_chat_redis_sub_t;


static ngx_http_chat_redis_conn_t *ngx_http_chat_redis_conn_create(
    ngx_cycle_t *cycle, ngx_http_chat_core_main_conf_t *cmcf,
    const char *name, ngx_http_chat_redis_conn_pt connected, void *data);
static void ngx_http_chat_redis_conn_destroy(ngx_http_chat_redis_conn_t *rconn);
static void ngx_http_chat_redis_conn_connect(ngx_http_chat_redis_conn_t *rconn);
static ngx_int_t ngx_http_chat_redis_conn_command(
    ngx_http_chat_redis_conn_t *rconn, redisCallbackFn *fn, void *privdata,
    int argc, const char **argv, const size_t *argvlen);
static void ngx_http_chat_redis_conn_drop(ngx_http_chat_redis_conn_t *rconn);
static void ngx_http_chat_redis_conn_error(ngx_http_chat_redis_conn_t *rconn,
    const char *what, const char *err, size_t len);
static void ngx_http_chat_redis_conn_retry(ngx_http_chat_redis_conn_t *rconn);
static void ngx_http_chat_redis_timer_handler(ngx_event_t *ev);
static void ngx_http_chat_redis_read_handler(ngx_event_t *ev);
static void ngx_http_chat_redis_write_handler(ngx_event_t *ev);
static void ngx_http_chat_redis_add_read(void *data);
static void ngx_http_chat_redis_del_read(void *data);
static void ngx_http_chat_redis_add_write(void *data);
static void ngx_http_chat_redis_del_write(void *data);
static void ngx_http_chat_redis_cleanup(void *data);
static void ngx_http_chat_redis_connect_handler(const redisAsyncContext *ac,
    int status);
static void ngx_http_chat_redis_handshake_reply(redisAsyncContext *ac,
    void *data, void *privdata);

static void ngx_http_chat_redis_op_reply(redisAsyncContext *ac, void *data,
    void *privdata);
static void ngx_http_chat_redis_op_timeout(ngx_event_t *ev);
static void ngx_http_chat_redis_op_unavailable(ngx_event_t *ev);
static void ngx_http_chat_redis_op_done(ngx_http_chat_redis_op_t *op,
    redisReply *reply);
static void ngx_http_chat_redis_send_reply(redisAsyncContext *ac, void *data,
    void *privdata);

static void ngx_http_chat_redis_sub_connected(
    ngx_http_chat_redis_conn_t *rconn);
static void ngx_http_chat_redis_sub_reply(redisAsyncContext *ac, void *data,
    void *privdata);
static void ngx_http_chat_redis_dispatch(ngx_http_chat_redis_channel_t *ch,
    ngx_str_t *channel, ngx_str_t *payload);
static ngx_http_chat_redis_channel_t *ngx_http_chat_redis_channel_lookup(
    ngx_str_t *channel, uint32_t hash);
static void ngx_http_chat_redis_channel_command(const char *cmd,
    ngx_http_chat_redis_channel_t *ch);
static void ngx_http_chat_redis_channel_sweep(
    ngx_http_chat_redis_channel_t *ch);
static void ngx_http_chat_redis_channels_free(void);


static ngx_http_chat_redis_conn_t  *ngx_http_chat_redis_cmd;
static ngx_http_chat_redis_conn_t  *ngx_http_chat_redis_pubsub;

static ngx_rbtree_t                 ngx_http_chat_redis_channels;
static ngx_rbtree_node_t            ngx_http_chat_redis_sentinel;
static ngx_uint_t                   ngx_http_chat_redis_nchannels;

/* set in exit_process: callbacks run by hiredis from then on only clean up */
static ngx_uint_t                   ngx_http_chat_redis_exiting;


/* the request API: one command, completed asynchronously */

ngx_int_t
ngx_http_chat_redis(ngx_http_request_t *r, ngx_http_chat_redis_pt handler,
    int argc, const char **argv, const size_t *argvlen)
{
    ngx_int_t                    rc;
    ngx_http_chat_ctx_t         *ctx;
    ngx_http_chat_redis_op_t    *op;
    ngx_http_chat_redis_conn_t  *rconn;

    ctx = ngx_http_chat_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    op = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_redis_op_t));
    if (op == NULL) {
        return NGX_ERROR;
    }

    ctx->redis_handler = handler;

    op->request = r;
    op->event.data = op;
    op->event.log = r->connection->log;

    rconn = ngx_http_chat_redis_cmd;
    rc = NGX_DECLINED;

    if (rconn) {
        rc = ngx_http_chat_redis_conn_command(rconn,
                                              ngx_http_chat_redis_op_reply,
                                              op, argc, argv, argvlen);
    }

    if (rc == NGX_OK) {
        op->event.handler = ngx_http_chat_redis_op_timeout;

        if (rconn->cmcf->redis_timeout) {
            ngx_add_timer(&op->event, rconn->cmcf->redis_timeout);
        }

    } else {
        /* the reply is never given before this function returns */

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "chat redis: unavailable, command not sent");

        op->event.handler = ngx_http_chat_redis_op_unavailable;
        ngx_post_event(&op->event, &ngx_posted_events);
    }

    ngx_http_chat_park(r);

    return NGX_DONE;
}


static void
ngx_http_chat_redis_op_reply(redisAsyncContext *ac, void *data,
    void *privdata)
{
    ngx_http_chat_redis_op_t  *op = privdata;

    if (op->event.timer_set) {
        ngx_del_timer(&op->event);
    }

    /*
     * the context is freed at worker exit: other datastores may be gone
     * already, so requests are not resumed, the process ends with them
     */

    if (ngx_http_chat_redis_exiting) {
        return;
    }

    ngx_http_chat_redis_op_done(op, data);
}


/*
 * No reply within the timeout: the server is taken as hung.  Freeing the
 * context completes every command in flight, this one included, with a
 * NULL reply, so nothing in hiredis points into a request pool afterwards.
 */

static void
ngx_http_chat_redis_op_timeout(ngx_event_t *ev)
{
    ngx_http_chat_redis_conn_t  *rconn;

    rconn = ngx_http_chat_redis_cmd;

    if (rconn == NULL || rconn->ac == NULL || rconn->dropping) {
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "chat redis: command timed out without a connection");
        return;
    }

    ngx_http_chat_redis_conn_error(rconn, "timed out", NULL, 0);
    ngx_http_chat_redis_conn_drop(rconn);
}


static void
ngx_http_chat_redis_op_unavailable(ngx_event_t *ev)
{
    ngx_http_chat_redis_op_done(ev->data, NULL);
}


static void
ngx_http_chat_redis_op_done(ngx_http_chat_redis_op_t *op, redisReply *reply)
{
    ngx_int_t             rc;
    ngx_http_request_t   *r;
    ngx_http_chat_ctx_t  *ctx;

    r = op->request;
    ctx = ngx_http_chat_get_ctx(r);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "chat redis: reply %p", reply);

    ngx_http_chat_unpark(r);
    rc = ctx->redis_handler(r, ctx, reply);
    ngx_http_chat_finish(r, rc);
}


/* fire and forget: nothing waits for the reply, errors are only logged */

ngx_int_t
ngx_http_chat_redis_send(int argc, const char **argv, const size_t *argvlen)
{
    u_char                      *name;
    size_t                       len;
    ngx_http_chat_redis_conn_t  *rconn;

    rconn = ngx_http_chat_redis_cmd;

    if (rconn == NULL || !rconn->open || argc < 1) {
        return NGX_DECLINED;
    }

    /* the command name, for the log if the command fails */

    len = ngx_min(argvlen[0], 32);

    name = ngx_alloc(len + 1, rconn->log);
    if (name) {
        ngx_memcpy(name, argv[0], len);
        name[len] = '\0';
    }

    if (ngx_http_chat_redis_conn_command(rconn, ngx_http_chat_redis_send_reply,
                                         name, argc, argv, argvlen)
        != NGX_OK)
    {
        if (name) {
            ngx_free(name);
        }

        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_chat_redis_send_reply(redisAsyncContext *ac, void *data,
    void *privdata)
{
    u_char      *name = privdata;
    redisReply  *reply = data;

    if (reply && reply->type == REDIS_REPLY_ERROR
        && !ngx_http_chat_redis_exiting)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "chat redis: %s failed: %*s",
                      name ? (char *) name : "command",
                      reply->len, reply->str);
    }

    if (name) {
        ngx_free(name);
    }
}


/* pub/sub */

ngx_int_t
ngx_http_chat_redis_subscribe(ngx_str_t *channel,
    ngx_http_chat_message_pt handler, void *data)
{
    uint32_t                        hash;
    ngx_http_chat_redis_sub_t      *sub;
    ngx_http_chat_redis_channel_t  *ch;

    if (ngx_http_chat_redis_channels.root == NULL) {
        return NGX_DECLINED;
    }

    sub = ngx_alloc(sizeof(ngx_http_chat_redis_sub_t), ngx_cycle->log);
    if (sub == NULL) {
        return NGX_ERROR;
    }

    sub->handler = handler;
    sub->data = data;

    hash = ngx_crc32_short(channel->data, channel->len);

    ch = ngx_http_chat_redis_channel_lookup(channel, hash);

    if (ch) {
        ngx_queue_insert_tail(&ch->subscribers, &sub->queue);
        return NGX_OK;
    }

    ch = ngx_alloc(sizeof(ngx_http_chat_redis_channel_t) + channel->len,
                   ngx_cycle->log);
    if (ch == NULL) {
        ngx_free(sub);
        return NGX_ERROR;
    }

    ch->sn.node.key = hash;
    ch->sn.str.len = channel->len;
    ch->sn.str.data = (u_char *) ch + sizeof(ngx_http_chat_redis_channel_t);
    ngx_memcpy(ch->sn.str.data, channel->data, channel->len);

    ngx_queue_init(&ch->subscribers);
    ch->dispatching = 0;

    ngx_queue_insert_tail(&ch->subscribers, &sub->queue);

    ngx_rbtree_insert(&ngx_http_chat_redis_channels, &ch->sn.node);
    ngx_http_chat_redis_nchannels++;

    /* otherwise the channel is subscribed when the connection comes up */

    ngx_http_chat_redis_channel_command("SUBSCRIBE", ch);

    return NGX_OK;
}


ngx_int_t
ngx_http_chat_redis_unsubscribe(ngx_str_t *channel, void *data)
{
    ngx_queue_t                    *q;
    ngx_http_chat_redis_sub_t      *sub;
    ngx_http_chat_redis_channel_t  *ch;

    if (ngx_http_chat_redis_channels.root == NULL) {
        return NGX_DECLINED;
    }

    ch = ngx_http_chat_redis_channel_lookup(channel,
                               ngx_crc32_short(channel->data, channel->len));
    if (ch == NULL) {
        return NGX_DECLINED;
    }

    for (q = ngx_queue_head(&ch->subscribers);
         q != ngx_queue_sentinel(&ch->subscribers);
         q = ngx_queue_next(q))
    {
        sub = ngx_queue_data(q, ngx_http_chat_redis_sub_t, queue);

        if (sub->handler == NULL || sub->data != data) {
            continue;
        }

        if (ch->dispatching) {
            /* the dispatch loop stands on this entry: it sweeps later */
            sub->handler = NULL;
            return NGX_OK;
        }

        ngx_queue_remove(q);
        ngx_free(sub);

        ngx_http_chat_redis_channel_sweep(ch);

        return NGX_OK;
    }

    return NGX_DECLINED;
}


static ngx_http_chat_redis_channel_t *
ngx_http_chat_redis_channel_lookup(ngx_str_t *channel, uint32_t hash)
{
    return (ngx_http_chat_redis_channel_t *)
               ngx_str_rbtree_lookup(&ngx_http_chat_redis_channels, channel,
                                     hash);
}


/* SUBSCRIBE or UNSUBSCRIBE one channel, if the connection is up */

static void
ngx_http_chat_redis_channel_command(const char *cmd,
    ngx_http_chat_redis_channel_t *ch)
{
    const char                  *argv[2];
    size_t                       argvlen[2];
    ngx_http_chat_redis_conn_t  *rconn;

    rconn = ngx_http_chat_redis_pubsub;

    if (rconn == NULL || !rconn->open) {
        return;
    }

    argv[0] = cmd;
    argvlen[0] = ngx_strlen(cmd);
    argv[1] = (const char *) ch->sn.str.data;
    argvlen[1] = ch->sn.str.len;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rconn->log, 0,
                   "chat redis: %s \"%V\"", cmd, &ch->sn.str);

    /*
     * if the command is refused, the connection is going away and the
     * next one subscribes to what is there by then
     */

    (void) ngx_http_chat_redis_conn_command(rconn,
                                            ngx_http_chat_redis_sub_reply,
                                            NULL, 2, argv, argvlen);
}


/* frees removed subscribers and the channel itself once nobody is left */

static void
ngx_http_chat_redis_channel_sweep(ngx_http_chat_redis_channel_t *ch)
{
    ngx_queue_t                *q, *next;
    ngx_http_chat_redis_sub_t  *sub;

    for (q = ngx_queue_head(&ch->subscribers);
         q != ngx_queue_sentinel(&ch->subscribers);
         q = next)
    {
        next = ngx_queue_next(q);
        sub = ngx_queue_data(q, ngx_http_chat_redis_sub_t, queue);

        if (sub->handler == NULL) {
            ngx_queue_remove(q);
            ngx_free(sub);
        }
    }

    if (!ngx_queue_empty(&ch->subscribers)) {
        return;
    }

    ngx_http_chat_redis_channel_command("UNSUBSCRIBE", ch);

    ngx_rbtree_delete(&ngx_http_chat_redis_channels, &ch->sn.node);
    ngx_http_chat_redis_nchannels--;

    ngx_free(ch);
}


/*
 * Handlers may unsubscribe themselves or others and subscribe new ones:
 * removals only mark entries while the channel is dispatched, and the
 * loop stops at the last subscriber present when the message came.
 */

static void
ngx_http_chat_redis_dispatch(ngx_http_chat_redis_channel_t *ch,
    ngx_str_t *channel, ngx_str_t *payload)
{
    ngx_queue_t                *q, *last;
    ngx_http_chat_redis_sub_t  *sub;

    if (ngx_queue_empty(&ch->subscribers)) {
        return;
    }

    ch->dispatching++;

    last = ngx_queue_last(&ch->subscribers);

    for (q = ngx_queue_head(&ch->subscribers); /* void */;
         q = ngx_queue_next(q))
    {
        sub = ngx_queue_data(q, ngx_http_chat_redis_sub_t, queue);

        if (sub->handler) {
            sub->handler(channel, payload, sub->data);
        }

        if (q == last) {
            break;
        }
    }

    if (--ch->dispatching == 0) {
        ngx_http_chat_redis_channel_sweep(ch);
    }
}


/* every reply of the pub/sub connection's channels comes here */

static void
ngx_http_chat_redis_sub_reply(redisAsyncContext *ac, void *data,
    void *privdata)
{
    ngx_str_t                       kind, channel, payload;
    redisReply                     *reply = data;
    ngx_http_chat_redis_channel_t  *ch;

    if (reply == NULL || ngx_http_chat_redis_exiting) {
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    kind.len = reply->element[0]->len;
    kind.data = (u_char *) reply->element[0]->str;

    channel.len = reply->element[1]->len;
    channel.data = (u_char *) reply->element[1]->str;

    if (kind.len != sizeof("message") - 1
        || ngx_strncasecmp(kind.data, (u_char *) "message", kind.len) != 0
        || reply->element[2]->type != REDIS_REPLY_STRING)
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "chat redis: %V \"%V\"", &kind, &channel);
        return;
    }

    payload.len = reply->element[2]->len;
    payload.data = (u_char *) reply->element[2]->str;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat redis: message on \"%V\", %uz bytes",
                   &channel, payload.len);

    /* no channel: unsubscribed here, the UNSUBSCRIBE is on its way */

    ch = ngx_http_chat_redis_channel_lookup(&channel,
                               ngx_crc32_short(channel.data, channel.len));
    if (ch == NULL) {
        return;
    }

    ngx_http_chat_redis_dispatch(ch, &channel, &payload);
}


/* a new pub/sub connection subscribes to every channel wanted here */

static void
ngx_http_chat_redis_sub_connected(ngx_http_chat_redis_conn_t *rconn)
{
    size_t                         *argvlen;
    ngx_uint_t                      n, batch;
    const char                    **argv;
    ngx_rbtree_node_t              *node;
    ngx_http_chat_redis_channel_t  *ch;

    if (ngx_http_chat_redis_nchannels == 0) {
        return;
    }

    batch = ngx_min(ngx_http_chat_redis_nchannels,
                    NGX_HTTP_CHAT_REDIS_SUBSCRIBE_BATCH);

    argv = ngx_alloc((batch + 1) * (sizeof(char *) + sizeof(size_t)),
                     rconn->log);

    if (argv == NULL) {
        /* one command per channel then, needing no memory here */

        for (node = ngx_rbtree_min(ngx_http_chat_redis_channels.root,
                                   ngx_http_chat_redis_channels.sentinel);
             node;
             node = ngx_rbtree_next(&ngx_http_chat_redis_channels, node))
        {
            ngx_http_chat_redis_channel_command("SUBSCRIBE",
                                        (ngx_http_chat_redis_channel_t *) node);
        }

        return;
    }

    argvlen = (size_t *) &argv[batch + 1];

    argv[0] = "SUBSCRIBE";
    argvlen[0] = sizeof("SUBSCRIBE") - 1;
    n = 1;

    for (node = ngx_rbtree_min(ngx_http_chat_redis_channels.root,
                               ngx_http_chat_redis_channels.sentinel);
         node;
         node = ngx_rbtree_next(&ngx_http_chat_redis_channels, node))
    {
        ch = (ngx_http_chat_redis_channel_t *) node;

        argv[n] = (const char *) ch->sn.str.data;
        argvlen[n] = ch->sn.str.len;
        n++;

        if (n == batch + 1) {
            (void) ngx_http_chat_redis_conn_command(rconn,
                                                ngx_http_chat_redis_sub_reply,
                                                NULL, (int) n, argv,
                                                argvlen);
            n = 1;
        }
    }

    if (n > 1) {
        (void) ngx_http_chat_redis_conn_command(rconn,
                                                ngx_http_chat_redis_sub_reply,
                                                NULL, (int) n, argv,
                                                argvlen);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rconn->log, 0,
                   "chat redis: subscribed to %ui channels",
                   ngx_http_chat_redis_nchannels);

    ngx_free(argv);
}


static void
ngx_http_chat_redis_channels_free(void)
{
    ngx_queue_t                    *q;
    ngx_rbtree_node_t              *node;
    ngx_http_chat_redis_channel_t  *ch;

    if (ngx_http_chat_redis_channels.root == NULL) {
        return;
    }

    while (ngx_http_chat_redis_channels.root
           != ngx_http_chat_redis_channels.sentinel)
    {
        node = ngx_rbtree_min(ngx_http_chat_redis_channels.root,
                              ngx_http_chat_redis_channels.sentinel);
        ch = (ngx_http_chat_redis_channel_t *) node;

        while (!ngx_queue_empty(&ch->subscribers)) {
            q = ngx_queue_head(&ch->subscribers);
            ngx_queue_remove(q);
            ngx_free(ngx_queue_data(q, ngx_http_chat_redis_sub_t, queue));
        }

        ngx_rbtree_delete(&ngx_http_chat_redis_channels, node);
        ngx_free(ch);
    }

    ngx_http_chat_redis_nchannels = 0;
}


/* process life */

ngx_int_t
ngx_http_chat_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf)
{
    ngx_rbtree_init(&ngx_http_chat_redis_channels,
                    &ngx_http_chat_redis_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_http_chat_redis_nchannels = 0;
    ngx_http_chat_redis_exiting = 0;

    if (cmcf->redis_host.len == 0) {
        return NGX_OK;
    }

    ngx_http_chat_redis_cmd = ngx_http_chat_redis_conn_create(cycle, cmcf,
                                                        "command", NULL, NULL);
    if (ngx_http_chat_redis_cmd == NULL) {
        return NGX_ERROR;
    }

    ngx_http_chat_redis_pubsub = ngx_http_chat_redis_conn_create(cycle, cmcf,
                                     "pub/sub",
                                     ngx_http_chat_redis_sub_connected, NULL);
    if (ngx_http_chat_redis_pubsub == NULL) {
        return NGX_ERROR;
    }

    /*
     * the cached time dates from before the worker's initialization, which
     * can be slow (thread pools, other clients): the connect timers would
     * start already partly expired
     */

    ngx_time_update();

    ngx_http_chat_redis_conn_connect(ngx_http_chat_redis_cmd);
    ngx_http_chat_redis_conn_connect(ngx_http_chat_redis_pubsub);

    return NGX_OK;
}


void
ngx_http_chat_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_chat_redis_exiting = 1;

    if (ngx_http_chat_redis_pubsub) {
        ngx_http_chat_redis_conn_destroy(ngx_http_chat_redis_pubsub);
        ngx_http_chat_redis_pubsub = NULL;
    }

    if (ngx_http_chat_redis_cmd) {
        ngx_http_chat_redis_conn_destroy(ngx_http_chat_redis_cmd);
        ngx_http_chat_redis_cmd = NULL;
    }

    ngx_http_chat_redis_channels_free();
}


ngx_uint_t
ngx_http_chat_redis_state(void)
{
    ngx_http_chat_redis_conn_t  *rconn;

    rconn = ngx_http_chat_redis_cmd;

    if (rconn == NULL) {
        return NGX_HTTP_CHAT_DOWN;
    }

    if (rconn->ready) {
        return NGX_HTTP_CHAT_UP;
    }

    if (!rconn->ever && !rconn->failed) {
        return NGX_HTTP_CHAT_CONNECTING;
    }

    return NGX_HTTP_CHAT_DOWN;
}


/* the connection object */

static ngx_http_chat_redis_conn_t *
ngx_http_chat_redis_conn_create(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf, const char *name,
    ngx_http_chat_redis_conn_pt connected, void *data)
{
    ngx_http_chat_redis_conn_t  *rconn;

    rconn = ngx_calloc(sizeof(ngx_http_chat_redis_conn_t), cycle->log);
    if (rconn == NULL) {
        return NULL;
    }

    rconn->host = ngx_alloc(cmcf->redis_host.len + 1, cycle->log);
    if (rconn->host == NULL) {
        ngx_free(rconn);
        return NULL;
    }

    ngx_memcpy(rconn->host, cmcf->redis_host.data, cmcf->redis_host.len);
    rconn->host[cmcf->redis_host.len] = '\0';

    rconn->cmcf = cmcf;
    rconn->log = cycle->log;
    rconn->name = name;
    rconn->connected = connected;
    rconn->data = data;
    rconn->backoff = NGX_HTTP_CHAT_REDIS_BACKOFF_MIN;

    rconn->timer.handler = ngx_http_chat_redis_timer_handler;
    rconn->timer.data = rconn;
    rconn->timer.log = cycle->log;
    rconn->timer.cancelable = 1;

    return rconn;
}


/* runs every pending callback with a NULL reply, then frees the object */

static void
ngx_http_chat_redis_conn_destroy(ngx_http_chat_redis_conn_t *rconn)
{
    if (rconn->ac) {
        rconn->open = 0;
        rconn->dropping = 1;
        redisAsyncFree(rconn->ac);
    }

    if (rconn->timer.timer_set) {
        ngx_del_timer(&rconn->timer);
    }

    ngx_free(rconn->host);
    ngx_free(rconn);
}


static void
ngx_http_chat_redis_conn_connect(ngx_http_chat_redis_conn_t *rconn)
{
    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, rconn->log, 0,
                   "chat redis: connecting %s connection to %s:%ui",
                   rconn->name, rconn->host, rconn->cmcf->redis_port);

    ac = redisAsyncConnect(rconn->host, (int) rconn->cmcf->redis_port);

    if (ac == NULL) {
        ngx_http_chat_redis_conn_error(rconn, "failed", "out of memory",
                                       sizeof("out of memory") - 1);
        ngx_http_chat_redis_conn_retry(rconn);
        return;
    }

    if (ac->err) {
        ngx_http_chat_redis_conn_error(rconn, "failed", ac->errstr,
                                       ngx_strlen(ac->errstr));
        redisAsyncFree(ac);
        ngx_http_chat_redis_conn_retry(rconn);
        return;
    }

    c = ngx_get_connection(ac->c.fd, rconn->log);
    if (c == NULL) {
        ngx_http_chat_redis_conn_error(rconn, "failed", "no free connection",
                                       sizeof("no free connection") - 1);
        redisAsyncFree(ac);
        ngx_http_chat_redis_conn_retry(rconn);
        return;
    }

    c->data = rconn;
    c->read->handler = ngx_http_chat_redis_read_handler;
    c->write->handler = ngx_http_chat_redis_write_handler;
    c->read->log = rconn->log;
    c->write->log = rconn->log;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    rconn->ac = ac;
    rconn->c = c;
    rconn->open = 0;
    rconn->ready = 0;
    rconn->dropping = 0;
    rconn->handshake = 0;

    ac->data = rconn;
    ac->ev.data = rconn;
    ac->ev.addRead = ngx_http_chat_redis_add_read;
    ac->ev.delRead = ngx_http_chat_redis_del_read;
    ac->ev.addWrite = ngx_http_chat_redis_add_write;
    ac->ev.delWrite = ngx_http_chat_redis_del_write;
    ac->ev.cleanup = ngx_http_chat_redis_cleanup;

    /* this waits for the socket to become writable: connect(2) done */

    (void) redisAsyncSetConnectCallback(ac,
                                        ngx_http_chat_redis_connect_handler);

    if (rconn->cmcf->redis_timeout) {
        ngx_add_timer(&rconn->timer, rconn->cmcf->redis_timeout);
    }
}


static void
ngx_http_chat_redis_connect_handler(const redisAsyncContext *ac, int status)
{
    size_t                       argvlen[2];
    u_char                       db[NGX_INT_T_LEN];
    const char                  *argv[2];
    ngx_http_chat_redis_conn_t  *rconn;

    rconn = ac->data;

    if (status != REDIS_OK) {
        /* hiredis frees the context next: the cleanup hook takes over */
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rconn->log, 0,
                   "chat redis: %s connection established", rconn->name);

    /* a failure sets the context's error: the next write then fails */
    (void) redisEnableKeepAlive((redisContext *) &ac->c);

    rconn->open = 1;

    /*
     * the handshake is pipelined before anything else; with neither AUTH
     * nor SELECT a PING proves the server answers before it counts as up
     */

    if (rconn->cmcf->redis_password.len) {
        argv[0] = "AUTH";
        argvlen[0] = sizeof("AUTH") - 1;
        argv[1] = (const char *) rconn->cmcf->redis_password.data;
        argvlen[1] = rconn->cmcf->redis_password.len;

        if (ngx_http_chat_redis_conn_command(rconn,
                                    ngx_http_chat_redis_handshake_reply,
                                    "AUTH failed", 2, argv, argvlen)
            == NGX_OK)
        {
            rconn->handshake++;
        }
    }

    if (rconn->cmcf->redis_db > 0) {
        argv[0] = "SELECT";
        argvlen[0] = sizeof("SELECT") - 1;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", rconn->cmcf->redis_db) - db;

        if (ngx_http_chat_redis_conn_command(rconn,
                                    ngx_http_chat_redis_handshake_reply,
                                    "SELECT failed", 2, argv, argvlen)
            == NGX_OK)
        {
            rconn->handshake++;
        }
    }

    if (rconn->handshake == 0) {
        argv[0] = "PING";
        argvlen[0] = sizeof("PING") - 1;

        if (ngx_http_chat_redis_conn_command(rconn,
                                    ngx_http_chat_redis_handshake_reply,
                                    "PING failed", 1, argv, argvlen)
            == NGX_OK)
        {
            rconn->handshake++;
        }
    }

    /* a handshake that could not be queued times out: tried again then */

    if (rconn->connected) {
        rconn->connected(rconn);
    }
}


static void
ngx_http_chat_redis_handshake_reply(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                  *reply = data;
    ngx_http_chat_redis_conn_t  *rconn;

    rconn = ac->data;

    if (reply == NULL || rconn->handshake == 0 || rconn->dropping) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_http_chat_redis_conn_error(rconn, (const char *) privdata,
                                       reply->str, reply->len);

        /* deferred by hiredis until this callback returns */
        ngx_http_chat_redis_conn_drop(rconn);
        return;
    }

    if (--rconn->handshake) {
        return;
    }

    if (rconn->timer.timer_set) {
        ngx_del_timer(&rconn->timer);
    }

    rconn->ready = 1;
    rconn->ever = 1;
    rconn->backoff = NGX_HTTP_CHAT_REDIS_BACKOFF_MIN;

    if (rconn->failed) {
        rconn->failed = 0;
        ngx_log_error(NGX_LOG_NOTICE, rconn->log, 0,
                      "chat redis: %s connection to %s:%ui restored",
                      rconn->name, rconn->host, rconn->cmcf->redis_port);
    }
}


static ngx_int_t
ngx_http_chat_redis_conn_command(ngx_http_chat_redis_conn_t *rconn,
    redisCallbackFn *fn, void *privdata, int argc, const char **argv,
    const size_t *argvlen)
{
    if (!rconn->open) {
        return NGX_DECLINED;
    }

    /* refused while hiredis tears the context down after an error */

    if (redisAsyncCommandArgv(rconn->ac, fn, privdata, argc, argv, argvlen)
        != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * Gives the context up: every pending callback runs with a NULL reply and
 * the cleanup hook schedules the reconnection.  Inside a reply callback
 * hiredis defers this until the callback returns.
 */

static void
ngx_http_chat_redis_conn_drop(ngx_http_chat_redis_conn_t *rconn)
{
    if (rconn->ac == NULL || rconn->dropping) {
        return;
    }

    rconn->open = 0;
    rconn->ready = 0;
    rconn->dropping = 1;

    redisAsyncFree(rconn->ac);
}


/* a connection problem is logged once, until the connection is back */

static void
ngx_http_chat_redis_conn_error(ngx_http_chat_redis_conn_t *rconn,
    const char *what, const char *err, size_t len)
{
    if (err == NULL) {
        err = "";
        len = 0;
    }

    if (rconn->failed || ngx_http_chat_redis_exiting) {
        ngx_log_debug5(NGX_LOG_DEBUG_HTTP, rconn->log, 0,
                       "chat redis: %s connection %s%s%*s", rconn->name, what,
                       len ? ": " : "", len, err);
        return;
    }

    rconn->failed = 1;

    ngx_log_error(NGX_LOG_ERR, rconn->log, 0,
                  "chat redis: %s connection to %s:%ui %s%s%*s",
                  rconn->name, rconn->host, rconn->cmcf->redis_port, what,
                  len ? ": " : "", len, err);
}


static void
ngx_http_chat_redis_conn_retry(ngx_http_chat_redis_conn_t *rconn)
{
    if (ngx_http_chat_redis_exiting) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rconn->log, 0,
                   "chat redis: %s connection retried in %M ms",
                   rconn->name, rconn->backoff);

    ngx_add_timer(&rconn->timer, rconn->backoff);

    rconn->backoff = ngx_min(rconn->backoff * 2,
                             NGX_HTTP_CHAT_REDIS_BACKOFF_MAX);
}


/* connect or handshake timeout, or the end of a backoff */

static void
ngx_http_chat_redis_timer_handler(ngx_event_t *ev)
{
    ngx_http_chat_redis_conn_t  *rconn = ev->data;

    if (rconn->ac == NULL) {
        ngx_http_chat_redis_conn_connect(rconn);
        return;
    }

    ngx_http_chat_redis_conn_error(rconn, "timed out", NULL, 0);
    ngx_http_chat_redis_conn_drop(rconn);
}


static void
ngx_http_chat_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t            *c = ev->data;
    ngx_http_chat_redis_conn_t  *rconn = c->data;

    /* the context and this connection may be freed in there */
    redisAsyncHandleRead(rconn->ac);
}


static void
ngx_http_chat_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t            *c = ev->data;
    ngx_http_chat_redis_conn_t  *rconn = c->data;

    redisAsyncHandleWrite(rconn->ac);
}


/* hiredis event hooks: level-triggered interest in each direction */

static void
ngx_http_chat_redis_add_read(void *data)
{
    ngx_http_chat_redis_conn_t  *rconn = data;

    if (rconn->c) {
        (void) ngx_http_chat_event_interest(rconn->c->read, NGX_READ_EVENT, 1);
    }
}


static void
ngx_http_chat_redis_del_read(void *data)
{
    ngx_http_chat_redis_conn_t  *rconn = data;

    if (rconn->c) {
        (void) ngx_http_chat_event_interest(rconn->c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_chat_redis_add_write(void *data)
{
    ngx_http_chat_redis_conn_t  *rconn = data;

    if (rconn->c) {
        (void) ngx_http_chat_event_interest(rconn->c->write,
                                            NGX_WRITE_EVENT, 1);
    }
}


static void
ngx_http_chat_redis_del_write(void *data)
{
    ngx_http_chat_redis_conn_t  *rconn = data;

    if (rconn->c) {
        (void) ngx_http_chat_event_interest(rconn->c->write,
                                            NGX_WRITE_EVENT, 0);
    }
}


/*
 * The context is being freed, whoever asked: pending callbacks have run,
 * hiredis closes the socket after this.  The nginx connection goes back
 * without closing the descriptor, and a new connection is scheduled.
 */

static void
ngx_http_chat_redis_cleanup(void *data)
{
    ngx_connection_t            *c;
    redisAsyncContext           *ac;
    ngx_http_chat_redis_conn_t  *rconn;

    rconn = data;
    c = rconn->c;
    ac = rconn->ac;

    if (c) {
        (void) ngx_http_chat_event_interest(c->read, NGX_READ_EVENT, 0);
        (void) ngx_http_chat_event_interest(c->write, NGX_WRITE_EVENT, 0);

        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }

        if (c->write->posted) {
            ngx_delete_posted_event(c->write);
        }

        c->read->closed = 1;
        c->write->closed = 1;

        ngx_free_connection(c);

        /* stale events of this descriptor are recognized by fd == -1 */
        c->fd = (ngx_socket_t) -1;

        rconn->c = NULL;
    }

    if (!rconn->dropping && ac) {
        /* hiredis gave up: connect(2) failed, EOF, read or write error */
        ngx_http_chat_redis_conn_error(rconn, rconn->open ? "lost" : "failed",
                                       ac->errstr,
                                       ac->errstr ? ngx_strlen(ac->errstr)
                                                  : 0);
    }

    rconn->ac = NULL;
    rconn->open = 0;
    rconn->ready = 0;
    rconn->dropping = 0;
    rconn->handshake = 0;

    if (rconn->timer.timer_set) {
        ngx_del_timer(&rconn->timer);
    }

    ngx_http_chat_redis_conn_retry(rconn);
}
