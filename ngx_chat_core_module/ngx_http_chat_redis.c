
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


/* the Redis part of an operation's command, in the operation's pool */

typedef struct {
    ngx_http_chat_op_t             *base;
    ngx_event_t                     timer;
} ngx_http_chat_redis_op_t;


typedef struct {
    ngx_str_node_t                  sn;         /* first: rbtree lookups */
    ngx_queue_t                     subscribers;
    ngx_uint_t                      dispatching;
    ngx_uint_t                      confirmed;  /* by Redis, on the pub/sub
                                                   connection of this
                                                   generation */
} ngx_http_chat_redis_channel_t;


typedef struct {
    ngx_queue_t                     queue;
    ngx_http_chat_message_pt        handler;    /* NULL: removed during
                                                   dispatch */
    ngx_http_chat_ready_pt          ready;      /* once, when confirmed */
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
static u_char *ngx_http_chat_redis_resp_len(u_char *p, u_char type,
    size_t n);
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

/* pub/sub connections made so far: a confirmation holds for one */
static ngx_uint_t                   ngx_http_chat_redis_sub_generation;

static ngx_rbtree_t                 ngx_http_chat_redis_channels;
static ngx_rbtree_node_t            ngx_http_chat_redis_sentinel;
static ngx_uint_t                   ngx_http_chat_redis_nchannels;

/* pub/sub messages dispatched so far: the number of the current one */
static ngx_uint_t                   ngx_http_chat_redis_messages;

/* set in exit_process: callbacks run by hiredis from then on only clean up */
static ngx_uint_t                   ngx_http_chat_redis_exiting;


/*
 * One command of an operation.  A command once written cannot be taken
 * back: a cancelled operation's reply is dropped when it arrives.
 */

ngx_int_t
ngx_http_chat_op_redis(ngx_http_chat_op_t *base, int argc, const char **argv,
    const size_t *argvlen)
{
    ngx_int_t                    rc;
    ngx_http_chat_redis_op_t    *op;
    ngx_http_chat_redis_conn_t  *rconn;

    op = ngx_pcalloc(base->pool, sizeof(ngx_http_chat_redis_op_t));
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->base = base;
    op->timer.data = op;
    op->timer.handler = ngx_http_chat_redis_op_timeout;
    op->timer.log = base->log;

    ngx_http_chat_op_start(base);

    rconn = ngx_http_chat_redis_cmd;
    rc = NGX_DECLINED;

    if (rconn) {
        if (ngx_http_chat_op_admit(base, NGX_HTTP_CHAT_REDIS) != NGX_OK) {
            return NGX_OK;
        }

        rc = ngx_http_chat_redis_conn_command(rconn,
                                              ngx_http_chat_redis_op_reply,
                                              op, argc, argv, argvlen);
    }

    if (rc != NGX_OK) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, base->log, 0,
                       "chat redis: unavailable, command not sent");

        ngx_http_chat_op_post(base, NGX_DECLINED);
        return NGX_OK;
    }

    if (rconn->cmcf->redis_timeout) {
        ngx_add_timer(&op->timer, rconn->cmcf->redis_timeout);
    }

    return NGX_OK;
}


static void
ngx_http_chat_redis_op_reply(redisAsyncContext *ac, void *data,
    void *privdata)
{
    ngx_http_chat_redis_op_t  *op = privdata;

    redisReply  *reply = data;
    ngx_int_t    rc;

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    /*
     * the context is freed at worker exit: other datastores may be gone
     * already, so operations are not completed, the process ends with them
     */

    if (ngx_http_chat_redis_exiting) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->base->log, 0,
                   "chat redis: reply %p", reply);

    if (reply == NULL) {
        rc = NGX_DECLINED;

    } else if (reply->type == REDIS_REPLY_ERROR) {
        rc = NGX_ERROR;

    } else {
        rc = NGX_OK;
    }

    /* the reply is the library's: valid while the handler runs */

    op->base->reply = reply;

    ngx_http_chat_op_done(op->base, rc);
}


/*
 * No reply within the timeout: the server is taken as hung.  Freeing the
 * context completes every command in flight, this one included, with a
 * NULL reply, so nothing in hiredis points into an operation afterwards.
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


/* fire and forget: nothing waits for the reply, errors are only logged */

ngx_int_t
ngx_http_chat_redis_send(int argc, const char **argv, const size_t *argvlen)
{
    u_char                      *name;
    size_t                       len;
    ngx_http_chat_redis_conn_t  *rconn;

    rconn = ngx_http_chat_redis_cmd;

    if (rconn == NULL || !rconn->open || argc < 1) {
        ngx_http_chat_metrics_forgotten();
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

        ngx_http_chat_metrics_forgotten();
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

    /* no reply: the connection was lost, which is logged once there */

    if ((reply == NULL || reply->type == REDIS_REPLY_ERROR)
        && !ngx_http_chat_redis_exiting)
    {
        ngx_http_chat_metrics_forgotten();

        if (reply) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "chat redis: %s failed: %*s",
                          name ? (char *) name : "command",
                          reply->len, reply->str);
        }
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
    sub->ready = NULL;
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
    ch->confirmed = 0;

    ngx_queue_insert_tail(&ch->subscribers, &sub->queue);

    ngx_rbtree_insert(&ngx_http_chat_redis_channels, &ch->sn.node);
    ngx_http_chat_redis_nchannels++;

    /* otherwise the channel is subscribed when the connection comes up */

    ngx_http_chat_redis_channel_command("SUBSCRIBE", ch);

    return NGX_OK;
}


/*
 * NGX_OK when Redis has confirmed the channel's subscription on the
 * current pub/sub connection: whatever is published from now on reaches
 * the subscriber.  Else NGX_AGAIN, and ready(data) runs once when Redis
 * confirms it (after a reconnection, too), unless the subscriber has left.
 */

ngx_int_t
ngx_http_chat_redis_subscribed(ngx_str_t *channel, void *data,
    ngx_http_chat_ready_pt ready)
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

    if (ngx_http_chat_redis_pubsub && ngx_http_chat_redis_pubsub->open
        && ch->confirmed == ngx_http_chat_redis_sub_generation)
    {
        return NGX_OK;
    }

    for (q = ngx_queue_head(&ch->subscribers);
         q != ngx_queue_sentinel(&ch->subscribers);
         q = ngx_queue_next(q))
    {
        sub = ngx_queue_data(q, ngx_http_chat_redis_sub_t, queue);

        if (sub->handler && sub->data == data) {
            sub->ready = ready;
            return NGX_AGAIN;
        }
    }

    return NGX_DECLINED;
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
    ngx_http_chat_redis_messages++;

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


/*
 * Which message the handlers are given: the subscribers of one channel
 * get the same number, so that what one of them makes of the payload
 * (a stream's frame) is made once and shared by the others.
 */

ngx_uint_t
ngx_http_chat_redis_message(void)
{
    return ngx_http_chat_redis_messages;
}


/* Redis confirmed a channel: its subscribers waiting for it go on */

static void
ngx_http_chat_redis_confirmed(ngx_http_chat_redis_channel_t *ch)
{
    ngx_queue_t                *q, *last;
    ngx_http_chat_ready_pt      ready;
    ngx_http_chat_redis_sub_t  *sub;

    ch->confirmed = ngx_http_chat_redis_sub_generation;

    if (ngx_queue_empty(&ch->subscribers)) {
        return;
    }

    ch->dispatching++;

    last = ngx_queue_last(&ch->subscribers);

    for (q = ngx_queue_head(&ch->subscribers); /* void */;
         q = ngx_queue_next(q))
    {
        sub = ngx_queue_data(q, ngx_http_chat_redis_sub_t, queue);

        if (sub->handler && sub->ready) {
            ready = sub->ready;
            sub->ready = NULL;
            ready(sub->data);
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

    if (kind.len == sizeof("subscribe") - 1
        && ngx_strncasecmp(kind.data, (u_char *) "subscribe", kind.len) == 0)
    {
        ch = ngx_http_chat_redis_channel_lookup(&channel,
                               ngx_crc32_short(channel.data, channel.len));
        if (ch) {
            ngx_http_chat_redis_confirmed(ch);
        }

        return;
    }

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

    /* what the last connection confirmed holds no more */

    ngx_http_chat_redis_sub_generation++;

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


/*
 * The command in the protocol's form, made here rather than by
 * redisAsyncCommandArgv(): hiredis grows its string argument by argument
 * through a printf of its own, which cost more than anything else of a
 * command on this side (a message's commands spent some 40000
 * instructions there).  hiredis copies it into its output buffer.
 */

static ngx_int_t
ngx_http_chat_redis_conn_command(ngx_http_chat_redis_conn_t *rconn,
    redisCallbackFn *fn, void *privdata, int argc, const char **argv,
    const size_t *argvlen)
{
    int      i, rc;
    u_char  *cmd, *p;
    size_t   len;
    u_char   buf[2048];

    if (!rconn->open) {
        return NGX_DECLINED;
    }

    /*
     * "*argc\r\n", then "$len\r\n" and the argument's bytes and "\r\n";
     * hiredis reads the names of (un)subscribed channels back with
     * strchr(): a NUL ends it, as it ends hiredis's own
     */

    len = 1 + NGX_INT_T_LEN + 2 + 1;

    for (i = 0; i < argc; i++) {
        len += 1 + NGX_SIZE_T_LEN + 2 + argvlen[i] + 2;
    }

    if (len <= sizeof(buf)) {
        cmd = buf;

    } else {
        cmd = ngx_alloc(len, rconn->log);
        if (cmd == NULL) {
            return NGX_DECLINED;
        }
    }

    p = ngx_http_chat_redis_resp_len(cmd, '*', argc);

    for (i = 0; i < argc; i++) {
        p = ngx_http_chat_redis_resp_len(p, '$', argvlen[i]);
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = CR; *p++ = LF;
    }

    *p = '\0';

    /* refused while hiredis tears the context down after an error */

    rc = redisAsyncFormattedCommand(rconn->ac, fn, privdata,
                                    (const char *) cmd, p - cmd);

    if (cmd != buf) {
        ngx_free(cmd);
    }

    return (rc == REDIS_OK) ? NGX_OK : NGX_DECLINED;
}


/* a type byte, a length in decimal, CRLF */

static u_char *
ngx_http_chat_redis_resp_len(u_char *p, u_char type, size_t n)
{
    u_char   digits[NGX_SIZE_T_LEN];
    u_char  *d;

    d = digits + NGX_SIZE_T_LEN;

    do {
        *--d = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    *p++ = type;
    p = ngx_cpymem(p, d, digits + NGX_SIZE_T_LEN - d);
    *p++ = CR; *p++ = LF;

    return p;
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


/*
 * Redis Streams consumers.
 *
 * A consumer reads a list of streams as one member of a consumer group, on
 * a connection of its own: XREADGROUP ... BLOCK holds its connection for
 * up to the block time, which the shared command connection cannot give.
 *
 * It works in rounds.  A round is one command: XREADGROUP, or XAUTOCLAIM
 * of one stream; every entry of the reply is copied and handed to the
 * handler, which settles each one later, with ack() once it is fully
 * processed (its XACK is sent with the round's others once the round is
 * settled, never before) or retry() to leave it pending for another try.
 * The next round starts when every entry of the last one is settled, so
 * at most "count" entries per stream are in flight, and the connection
 * never has an XACK waiting behind a blocked read.
 *
 *   - the group is created on every (re)connection, MKSTREAM, from "$":
 *     a new group sees what is published from then on; BUSYGROUP is fine;
 *   - after a (re)connection or a retried round, the consumer first reads
 *     its own pending entries (XREADGROUP with id 0), then new ones (">");
 *   - every claim interval it takes over entries that other consumers,
 *     presumably dead, left pending for longer than claim_idle
 *     (XAUTOCLAIM), stream by stream, before the next read;
 *   - entries deleted by trimming while pending are acknowledged alone.
 *
 * Delivery is at least once: a handler must be idempotent per entry.
 */


#define NGX_HTTP_CHAT_REDIS_ID_LEN  (2 * NGX_INT64_LEN + 2)

/* how often a consumer asks Redis about its group, for /metrics */
#define NGX_HTTP_CHAT_REDIS_STATS   5000


/* an entry acknowledged, its XACK not sent yet */

typedef struct {
    ngx_uint_t                      stream;
    size_t                          len;
    u_char                          id[NGX_HTTP_CHAT_REDIS_ID_LEN];
} ngx_http_chat_redis_ack_t;


struct ngx_http_chat_redis_consumer_s {
    ngx_http_chat_redis_conn_t     *rconn;
    ngx_log_t                      *log;

    ngx_str_t                      *streams;
    ngx_uint_t                      nstreams;
    ngx_str_t                       group;
    ngx_str_t                       name;
    ngx_uint_t                      count;
    ngx_msec_t                      block;
    ngx_msec_t                      claim_idle;
    ngx_msec_t                      claim_interval;

    ngx_http_chat_redis_entry_pt    handler;
    void                           *data;

    ngx_queue_t                     entries;    /* handed out, unsettled */
    ngx_uint_t                      inflight;
    ngx_uint_t                      replies;    /* XGROUP CREATE awaited */

    /* the round's acknowledgements, sent as one XACK a stream when the
     * round is settled (ngx_http_chat_redis_consumer_xack_all()); room
     * for a round's entries, and the command's arguments */
    ngx_http_chat_redis_ack_t      *acks;
    ngx_uint_t                      nacks;
    ngx_uint_t                      max_acks;
    const char                    **ack_argv;
    size_t                         *ack_argvlen;

    ngx_event_t                     timeout;    /* the round's reply */
    ngx_event_t                     wait;       /* backoff after trouble */
    ngx_event_t                     claim;      /* claim interval */
    ngx_event_t                     stats;      /* the group's numbers */
    ngx_http_chat_op_t             *stats_op;   /* in its own pool */
    ngx_msec_t                      backoff;

    /* where the claim cycle stands: stream, and XAUTOCLAIM's cursor */
    ngx_uint_t                      claim_stream;
    u_char                          cursor[NGX_HTTP_CHAT_REDIS_ID_LEN];
    size_t                          cursor_len;

    unsigned                        busy:1;     /* a round in flight */
    unsigned                        created:1;  /* groups exist */
    unsigned                        history:1;  /* read own pending next */
    unsigned                        claiming:1; /* a claim cycle is due */
    unsigned                        delivering:1;
    unsigned                        retried:1;  /* in the current round */
    unsigned                        failed:1;   /* XGROUP CREATE failed */
    unsigned                        destroying:1;
};


static void ngx_http_chat_redis_consumer_connected(
    ngx_http_chat_redis_conn_t *rconn);
static void ngx_http_chat_redis_consumer_next(
    ngx_http_chat_redis_consumer_t *c);
static ngx_int_t ngx_http_chat_redis_consumer_send(
    ngx_http_chat_redis_consumer_t *c, redisCallbackFn *fn, int argc,
    const char **argv, const size_t *argvlen);
static void ngx_http_chat_redis_consumer_create_groups(
    ngx_http_chat_redis_consumer_t *c);
static void ngx_http_chat_redis_consumer_created(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_chat_redis_consumer_read(
    ngx_http_chat_redis_consumer_t *c);
static void ngx_http_chat_redis_consumer_read_reply(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_chat_redis_consumer_autoclaim(
    ngx_http_chat_redis_consumer_t *c);
static void ngx_http_chat_redis_consumer_claim_reply(redisAsyncContext *ac,
    void *data, void *privdata);
static ngx_int_t ngx_http_chat_redis_consumer_round(
    ngx_http_chat_redis_consumer_t *c, redisReply *reply);
static ngx_uint_t ngx_http_chat_redis_consumer_deliver(
    ngx_http_chat_redis_consumer_t *c, ngx_str_t *stream,
    redisReply *entries);
static ngx_http_chat_redis_entry_t *ngx_http_chat_redis_consumer_copy(
    ngx_http_chat_redis_consumer_t *c, ngx_str_t *stream, redisReply *id,
    redisReply *fields);
static void ngx_http_chat_redis_consumer_xack(
    ngx_http_chat_redis_consumer_t *c, ngx_str_t *stream, ngx_str_t *id);
static void ngx_http_chat_redis_consumer_xack_all(
    ngx_http_chat_redis_consumer_t *c);
static void ngx_http_chat_redis_consumer_xack_reply(redisAsyncContext *ac,
    void *data, void *privdata);
static void ngx_http_chat_redis_consumer_settle(
    ngx_http_chat_redis_entry_t *e);
static void ngx_http_chat_redis_consumer_done(
    ngx_http_chat_redis_consumer_t *c);
static void ngx_http_chat_redis_consumer_trouble(
    ngx_http_chat_redis_consumer_t *c);
static void ngx_http_chat_redis_consumer_timeout(ngx_event_t *ev);
static void ngx_http_chat_redis_consumer_wait(ngx_event_t *ev);
static void ngx_http_chat_redis_consumer_claim(ngx_event_t *ev);
static void ngx_http_chat_redis_consumer_stats(ngx_event_t *ev);
static void ngx_http_chat_redis_consumer_stats_reply(ngx_http_chat_op_t *op);
static void ngx_http_chat_redis_consumer_group(
    ngx_http_chat_redis_consumer_t *c, ngx_str_t *stream, redisReply *groups);


ngx_http_chat_redis_consumer_t *
ngx_http_chat_redis_consumer_create(ngx_cycle_t *cycle,
    ngx_http_chat_redis_consumer_conf_t *conf)
{
    u_char                          *p;
    size_t                           size;
    ngx_uint_t                       i;
    ngx_http_chat_redis_consumer_t  *c;
    ngx_http_chat_core_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_chat_core_module);

    if (cmcf == NULL || cmcf->redis_host.len == 0 || conf->nstreams == 0
        || conf->count == 0 || conf->handler == NULL)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "chat redis: stream consumer without Redis, streams "
                      "or handler");
        return NULL;
    }

    /* the consumer and copies of its names, in one block */

    size = sizeof(ngx_http_chat_redis_consumer_t)
           + conf->count * conf->nstreams
             * (sizeof(ngx_http_chat_redis_ack_t) + sizeof(char *)
                + sizeof(size_t))
           + 3 * (sizeof(char *) + sizeof(size_t))
           + conf->nstreams * sizeof(ngx_str_t)
           + conf->group.len + conf->name.len;

    for (i = 0; i < conf->nstreams; i++) {
        size += conf->streams[i].len;
    }

    c = ngx_calloc(size, cycle->log);
    if (c == NULL) {
        return NULL;
    }

    /* a round: at most count entries of each stream */

    c->max_acks = conf->count * conf->nstreams;
    c->acks = (ngx_http_chat_redis_ack_t *) &c[1];
    c->ack_argvlen = (size_t *) &c->acks[c->max_acks];
    c->ack_argv = (const char **) &c->ack_argvlen[3 + c->max_acks];

    c->streams = (ngx_str_t *) &c->ack_argv[3 + c->max_acks];
    p = (u_char *) &c->streams[conf->nstreams];

    for (i = 0; i < conf->nstreams; i++) {
        c->streams[i].data = p;
        c->streams[i].len = conf->streams[i].len;
        p = ngx_cpymem(p, conf->streams[i].data, conf->streams[i].len);
    }

    c->group.data = p;
    c->group.len = conf->group.len;
    p = ngx_cpymem(p, conf->group.data, conf->group.len);

    c->name.data = p;
    c->name.len = conf->name.len;
    ngx_memcpy(p, conf->name.data, conf->name.len);

    c->nstreams = conf->nstreams;
    c->count = conf->count;
    c->block = conf->block;
    c->claim_idle = conf->claim_idle;
    c->claim_interval = conf->claim_interval ? conf->claim_interval
                                             : conf->claim_idle;
    c->handler = conf->handler;
    c->data = conf->data;
    c->log = cycle->log;
    c->backoff = NGX_HTTP_CHAT_REDIS_BACKOFF_MIN;
    c->history = 1;

    ngx_queue_init(&c->entries);

    c->timeout.handler = ngx_http_chat_redis_consumer_timeout;
    c->timeout.data = c;
    c->timeout.log = cycle->log;
    c->timeout.cancelable = 1;

    c->wait.handler = ngx_http_chat_redis_consumer_wait;
    c->wait.data = c;
    c->wait.log = cycle->log;
    c->wait.cancelable = 1;

    c->claim.handler = ngx_http_chat_redis_consumer_claim;
    c->claim.data = c;
    c->claim.log = cycle->log;
    c->claim.cancelable = 1;

    c->stats.handler = ngx_http_chat_redis_consumer_stats;
    c->stats.data = c;
    c->stats.log = cycle->log;
    c->stats.cancelable = 1;

    c->rconn = ngx_http_chat_redis_conn_create(cycle, cmcf, "stream consumer",
                                     ngx_http_chat_redis_consumer_connected,
                                     c);
    if (c->rconn == NULL) {
        ngx_free(c);
        return NULL;
    }

    ngx_log_error(NGX_LOG_INFO, cycle->log, 0,
                  "chat redis: consumer \"%V\" of group \"%V\" started",
                  &c->name, &c->group);

    ngx_time_update();

    ngx_http_chat_redis_conn_connect(c->rconn);

    if (c->claim_idle) {
        ngx_add_timer(&c->claim, c->claim_interval);
    }

    ngx_add_timer(&c->stats, NGX_HTTP_CHAT_REDIS_STATS);

    return c;
}


/*
 * Entries still unsettled are freed: their handler must not settle them
 * afterwards.  The server keeps them pending until another consumer claims
 * them.
 */

void
ngx_http_chat_redis_consumer_destroy(ngx_http_chat_redis_consumer_t *c)
{
    ngx_queue_t                  *q;
    ngx_http_chat_redis_entry_t  *e;

    c->destroying = 1;

    /* the round's callback runs in here, with no reply */
    ngx_http_chat_redis_conn_destroy(c->rconn);
    c->rconn = NULL;

    while (!ngx_queue_empty(&c->entries)) {
        q = ngx_queue_head(&c->entries);
        ngx_queue_remove(q);

        e = ngx_queue_data(q, ngx_http_chat_redis_entry_t, queue);
        ngx_free(e);
    }

    if (c->timeout.timer_set) {
        ngx_del_timer(&c->timeout);
    }

    if (c->wait.timer_set) {
        ngx_del_timer(&c->wait);
    }

    if (c->claim.timer_set) {
        ngx_del_timer(&c->claim);
    }

    if (c->stats.timer_set) {
        ngx_del_timer(&c->stats);
    }

    /* its handler frees the pool, and no longer knows the consumer */

    if (c->stats_op) {
        c->stats_op->data = NULL;
        ngx_http_chat_op_cancel(c->stats_op);
    }

    ngx_free(c);
}


void
ngx_http_chat_redis_consumer_ack(ngx_http_chat_redis_entry_t *e)
{
    ngx_uint_t                       i;
    ngx_http_chat_redis_ack_t       *a;
    ngx_http_chat_redis_consumer_t  *c;

    c = e->consumer;

    ngx_http_chat_metrics_consumed(&e->stream, &e->id);

    /* kept for the round's XACK */

    for (i = 0; i < c->nstreams; i++) {
        if (c->streams[i].len == e->stream.len
            && ngx_strncmp(c->streams[i].data, e->stream.data,
                           e->stream.len)
               == 0)
        {
            break;
        }
    }

    if (c->nacks == c->max_acks) {
        ngx_http_chat_redis_consumer_xack_all(c);
    }

    if (i == c->nstreams || e->id.len > NGX_HTTP_CHAT_REDIS_ID_LEN) {
        ngx_http_chat_redis_consumer_xack(c, &e->stream, &e->id);

    } else {
        a = &c->acks[c->nacks++];
        a->stream = i;
        a->len = e->id.len;
        ngx_memcpy(a->id, e->id.data, e->id.len);
    }

    ngx_http_chat_redis_consumer_settle(e);
}


/* left pending: read again from the consumer's own pending entries */

void
ngx_http_chat_redis_consumer_retry(ngx_http_chat_redis_entry_t *e)
{
    e->consumer->retried = 1;
    ngx_http_chat_redis_consumer_settle(e);
}


static void
ngx_http_chat_redis_consumer_settle(ngx_http_chat_redis_entry_t *e)
{
    ngx_http_chat_redis_consumer_t  *c;

    c = e->consumer;

    ngx_queue_remove(&e->queue);
    ngx_free(e);

    c->inflight--;

    if (c->inflight == 0 && !c->delivering) {
        ngx_http_chat_redis_consumer_done(c);
    }
}


/* every entry of the round is settled */

static void
ngx_http_chat_redis_consumer_done(ngx_http_chat_redis_consumer_t *c)
{
    /* sent before the next round's command, which follows it */

    ngx_http_chat_redis_consumer_xack_all(c);

    if (c->retried) {
        c->retried = 0;
        c->history = 1;
        ngx_http_chat_redis_consumer_trouble(c);
        return;
    }

    c->backoff = NGX_HTTP_CHAT_REDIS_BACKOFF_MIN;

    ngx_http_chat_redis_consumer_next(c);
}


/* the next round, if nothing stands in the way */

static void
ngx_http_chat_redis_consumer_next(ngx_http_chat_redis_consumer_t *c)
{
    if (c->busy || c->inflight || c->delivering || c->destroying
        || c->wait.timer_set || c->rconn == NULL || !c->rconn->open
        || ngx_http_chat_redis_exiting || ngx_exiting || ngx_terminate
        || ngx_quit)
    {
        return;
    }

    if (!c->created) {
        ngx_http_chat_redis_consumer_create_groups(c);
        return;
    }

    if (c->claiming) {
        ngx_http_chat_redis_consumer_autoclaim(c);
        return;
    }

    ngx_http_chat_redis_consumer_read(c);
}


static ngx_int_t
ngx_http_chat_redis_consumer_send(ngx_http_chat_redis_consumer_t *c,
    redisCallbackFn *fn, int argc, const char **argv, const size_t *argvlen)
{
    if (ngx_http_chat_redis_conn_command(c->rconn, fn, c, argc, argv, argvlen)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    c->busy = 1;

    return NGX_OK;
}


/* a new connection: the groups, then the consumer's own pending entries */

static void
ngx_http_chat_redis_consumer_connected(ngx_http_chat_redis_conn_t *rconn)
{
    ngx_http_chat_redis_consumer_t  *c = rconn->data;

    c->created = 0;
    c->history = 1;
    c->busy = 0;

    ngx_http_chat_redis_consumer_next(c);
}


static void
ngx_http_chat_redis_consumer_create_groups(ngx_http_chat_redis_consumer_t *c)
{
    ngx_uint_t   i;
    const char  *argv[6];
    size_t       argvlen[6];

    argv[0] = "XGROUP";
    argvlen[0] = sizeof("XGROUP") - 1;
    argv[1] = "CREATE";
    argvlen[1] = sizeof("CREATE") - 1;
    argv[3] = (const char *) c->group.data;
    argvlen[3] = c->group.len;
    argv[4] = "$";
    argvlen[4] = 1;
    argv[5] = "MKSTREAM";
    argvlen[5] = sizeof("MKSTREAM") - 1;

    c->replies = 0;
    c->failed = 0;

    for (i = 0; i < c->nstreams; i++) {
        argv[2] = (const char *) c->streams[i].data;
        argvlen[2] = c->streams[i].len;

        if (ngx_http_chat_redis_consumer_send(c,
                                        ngx_http_chat_redis_consumer_created,
                                        6, argv, argvlen)
            != NGX_OK)
        {
            /* the connection is going away; its successor starts over */
            return;
        }

        c->replies++;
    }

    ngx_add_timer(&c->timeout, c->rconn->cmcf->redis_timeout
                               ? c->rconn->cmcf->redis_timeout : 3000);
}


static void
ngx_http_chat_redis_consumer_created(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                      *reply = data;
    ngx_http_chat_redis_consumer_t  *c = privdata;

    if (c->replies) {
        c->replies--;
    }

    if (reply == NULL || ngx_http_chat_redis_exiting || c->destroying) {
        c->failed = 1;

    } else if (reply->type == REDIS_REPLY_ERROR
               && !(reply->len >= 9
                    && ngx_strncmp(reply->str, "BUSYGROUP", 9) == 0))
    {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "chat redis: consumer group \"%V\" not created: %*s",
                      &c->group, reply->len, reply->str);
        c->failed = 1;
    }

    if (c->replies) {
        return;
    }

    c->busy = 0;

    if (c->timeout.timer_set) {
        ngx_del_timer(&c->timeout);
    }

    if (reply == NULL || ngx_http_chat_redis_exiting || c->destroying) {
        return;
    }

    if (c->failed) {
        ngx_http_chat_redis_consumer_trouble(c);
        return;
    }

    c->created = 1;

    ngx_http_chat_redis_consumer_next(c);
}


/*
 * XREADGROUP GROUP <group> <name> COUNT <n> [BLOCK <ms>]
 *     STREAMS <stream>... <id>...
 */

static void
ngx_http_chat_redis_consumer_read(ngx_http_chat_redis_consumer_t *c)
{
    u_char       count[NGX_INT_T_LEN], block[NGX_INT_T_LEN];
    size_t      *argvlen;
    ngx_uint_t   i, n;
    const char **argv;
    ngx_msec_t   timeout;

    argv = ngx_alloc((9 + 2 * c->nstreams) * (sizeof(char *) + sizeof(size_t)),
                     c->log);
    if (argv == NULL) {
        ngx_http_chat_redis_consumer_trouble(c);
        return;
    }

    argvlen = (size_t *) &argv[9 + 2 * c->nstreams];

    n = 0;

    argv[n] = "XREADGROUP";
    argvlen[n++] = sizeof("XREADGROUP") - 1;
    argv[n] = "GROUP";
    argvlen[n++] = sizeof("GROUP") - 1;
    argv[n] = (const char *) c->group.data;
    argvlen[n++] = c->group.len;
    argv[n] = (const char *) c->name.data;
    argvlen[n++] = c->name.len;
    argv[n] = "COUNT";
    argvlen[n++] = sizeof("COUNT") - 1;
    argv[n] = (const char *) count;
    argvlen[n++] = ngx_sprintf(count, "%ui", c->count) - count;

    /* own pending entries are answered at once, without blocking */

    if (!c->history) {
        argv[n] = "BLOCK";
        argvlen[n++] = sizeof("BLOCK") - 1;
        argv[n] = (const char *) block;
        argvlen[n++] = ngx_sprintf(block, "%M", c->block) - block;
    }

    argv[n] = "STREAMS";
    argvlen[n++] = sizeof("STREAMS") - 1;

    for (i = 0; i < c->nstreams; i++) {
        argv[n] = (const char *) c->streams[i].data;
        argvlen[n++] = c->streams[i].len;
    }

    for (i = 0; i < c->nstreams; i++) {
        argv[n] = c->history ? "0" : ">";
        argvlen[n++] = 1;
    }

    if (ngx_http_chat_redis_consumer_send(c,
                                    ngx_http_chat_redis_consumer_read_reply,
                                    (int) n, argv, argvlen)
        == NGX_OK)
    {
        timeout = c->rconn->cmcf->redis_timeout
                  ? c->rconn->cmcf->redis_timeout : 3000;

        if (!c->history) {
            timeout += c->block;
        }

        ngx_add_timer(&c->timeout, timeout);
    }

    ngx_free(argv);
}


static void
ngx_http_chat_redis_consumer_read_reply(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                      *reply = data;
    ngx_http_chat_redis_consumer_t  *c = privdata;

    ngx_str_t    stream;
    ngx_uint_t   i, n;
    redisReply  *s;

    if (ngx_http_chat_redis_consumer_round(c, reply) != NGX_OK) {
        return;
    }

    /* nil: the block time passed without a new entry */

    n = 0;

    if (reply->type == REDIS_REPLY_ARRAY) {
        c->delivering = 1;

        for (i = 0; i < reply->elements; i++) {
            s = reply->element[i];

            if (s->type != REDIS_REPLY_ARRAY || s->elements != 2
                || s->element[0]->type != REDIS_REPLY_STRING)
            {
                continue;
            }

            stream.data = (u_char *) s->element[0]->str;
            stream.len = s->element[0]->len;

            n += ngx_http_chat_redis_consumer_deliver(c, &stream,
                                                      s->element[1]);
        }

        c->delivering = 0;
    }

    /* no entry was pending for this consumer any more */

    if (c->history && n == 0) {
        c->history = 0;
    }

    if (c->inflight == 0) {
        ngx_http_chat_redis_consumer_done(c);
    }
}


/* XAUTOCLAIM <stream> <group> <name> <min-idle> <cursor> COUNT <n> */

static void
ngx_http_chat_redis_consumer_autoclaim(ngx_http_chat_redis_consumer_t *c)
{
    u_char       count[NGX_INT_T_LEN], idle[NGX_INT_T_LEN];
    size_t       argvlen[8];
    const char  *argv[8];

    if (c->cursor_len == 0) {
        c->cursor_len = ngx_sprintf(c->cursor, "0-0") - c->cursor;
    }

    argv[0] = "XAUTOCLAIM";
    argvlen[0] = sizeof("XAUTOCLAIM") - 1;
    argv[1] = (const char *) c->streams[c->claim_stream].data;
    argvlen[1] = c->streams[c->claim_stream].len;
    argv[2] = (const char *) c->group.data;
    argvlen[2] = c->group.len;
    argv[3] = (const char *) c->name.data;
    argvlen[3] = c->name.len;
    argv[4] = (const char *) idle;
    argvlen[4] = ngx_sprintf(idle, "%M", c->claim_idle) - idle;
    argv[5] = (const char *) c->cursor;
    argvlen[5] = c->cursor_len;
    argv[6] = "COUNT";
    argvlen[6] = sizeof("COUNT") - 1;
    argv[7] = (const char *) count;
    argvlen[7] = ngx_sprintf(count, "%ui", c->count) - count;

    if (ngx_http_chat_redis_consumer_send(c,
                                    ngx_http_chat_redis_consumer_claim_reply,
                                    8, argv, argvlen)
        == NGX_OK)
    {
        ngx_add_timer(&c->timeout, c->rconn->cmcf->redis_timeout
                                   ? c->rconn->cmcf->redis_timeout : 3000);
    }
}


/* [next cursor, [entry...], [deleted id...]] */

static void
ngx_http_chat_redis_consumer_claim_reply(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                      *reply = data;
    ngx_http_chat_redis_consumer_t  *c = privdata;

    ngx_str_t    stream;
    ngx_uint_t   n;
    redisReply  *next;

    if (ngx_http_chat_redis_consumer_round(c, reply) != NGX_OK) {
        return;
    }

    stream = c->streams[c->claim_stream];

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[0]->len >= NGX_HTTP_CHAT_REDIS_ID_LEN)
    {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "chat redis: unexpected XAUTOCLAIM reply on \"%V\"",
                      &stream);
        ngx_http_chat_redis_consumer_trouble(c);
        return;
    }

    next = reply->element[0];

    c->delivering = 1;
    n = ngx_http_chat_redis_consumer_deliver(c, &stream, reply->element[1]);
    c->delivering = 0;

    if (n) {
        ngx_log_error(NGX_LOG_NOTICE, c->log, 0,
                      "chat redis: consumer \"%V\" claimed %ui entries of "
                      "\"%V\" idle for %M ms or more",
                      &c->name, n, &stream, c->claim_idle);
    }

    /* "0-0": this stream is done, the cycle goes on with the next one */

    if (next->len == 3 && ngx_strncmp(next->str, "0-0", 3) == 0) {
        c->cursor_len = 0;

        if (++c->claim_stream == c->nstreams) {
            c->claim_stream = 0;
            c->claiming = 0;
        }

    } else {
        c->cursor_len = next->len;
        ngx_memcpy(c->cursor, next->str, next->len);
    }

    if (c->inflight == 0) {
        ngx_http_chat_redis_consumer_done(c);
    }
}


/* the end of a round's command; NGX_OK: go on with the reply */

static ngx_int_t
ngx_http_chat_redis_consumer_round(ngx_http_chat_redis_consumer_t *c,
    redisReply *reply)
{
    c->busy = 0;

    if (c->timeout.timer_set) {
        ngx_del_timer(&c->timeout);
    }

    /* no reply: the connection is gone, its successor starts over */

    if (reply == NULL || ngx_http_chat_redis_exiting || c->destroying) {
        return NGX_DECLINED;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_ERR, c->log, 0,
                  "chat redis: consumer \"%V\" of group \"%V\": %*s",
                  &c->name, &c->group, reply->len, reply->str);

    /* the stream or the group was deleted meanwhile */

    if (reply->len >= 7 && ngx_strncmp(reply->str, "NOGROUP", 7) == 0) {
        c->created = 0;
    }

    ngx_http_chat_redis_consumer_trouble(c);

    return NGX_DECLINED;
}


/* hands the entries of one stream to the handler; returns how many */

static ngx_uint_t
ngx_http_chat_redis_consumer_deliver(ngx_http_chat_redis_consumer_t *c,
    ngx_str_t *stream, redisReply *entries)
{
    ngx_str_t                     id;
    ngx_uint_t                    i, n;
    redisReply                   *entry;
    ngx_http_chat_redis_entry_t  *e;

    if (entries->type != REDIS_REPLY_ARRAY) {
        return 0;
    }

    n = 0;

    for (i = 0; i < entries->elements; i++) {
        entry = entries->element[i];

        if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2
            || entry->element[0]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        n++;

        /* trimmed away while pending: nothing left to process */

        if (entry->element[1]->type != REDIS_REPLY_ARRAY) {
            id.data = (u_char *) entry->element[0]->str;
            id.len = entry->element[0]->len;

            ngx_log_error(NGX_LOG_WARN, c->log, 0,
                          "chat redis: entry %V of \"%V\" was deleted "
                          "before it was processed", &id, stream);

            ngx_http_chat_redis_consumer_xack(c, stream, &id);
            continue;
        }

        e = ngx_http_chat_redis_consumer_copy(c, stream, entry->element[0],
                                              entry->element[1]);
        if (e == NULL) {
            /* stays pending, read again later */
            c->retried = 1;
            continue;
        }

        ngx_queue_insert_tail(&c->entries, &e->queue);
        c->inflight++;

        c->handler(e, c->data);
    }

    return n;
}


/* the entry outlives the reply: one block, strings NUL-terminated */

static ngx_http_chat_redis_entry_t *
ngx_http_chat_redis_consumer_copy(ngx_http_chat_redis_consumer_t *c,
    ngx_str_t *stream, redisReply *id, redisReply *fields)
{
    u_char                       *p;
    size_t                        size;
    ngx_uint_t                    i, n;
    ngx_http_chat_redis_entry_t  *e;

    n = 0;
    size = sizeof(ngx_http_chat_redis_entry_t) + stream->len + 1
           + id->len + 1;

    for (i = 0; i < fields->elements; i++) {
        if (fields->element[i]->type == REDIS_REPLY_STRING) {
            size += sizeof(ngx_str_t) + fields->element[i]->len + 1;
            n++;
        }
    }

    if (n != fields->elements || n % 2) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "chat redis: entry %*s of \"%V\" has unexpected "
                      "fields", id->len, id->str, stream);
    }

    e = ngx_alloc(size, c->log);
    if (e == NULL) {
        return NULL;
    }

    e->consumer = c;
    e->fields = (ngx_str_t *) &e[1];
    e->nfields = 0;

    p = (u_char *) &e->fields[n];

    e->stream.data = p;
    e->stream.len = stream->len;
    p = ngx_cpymem(p, stream->data, stream->len);
    *p++ = '\0';

    e->id.data = p;
    e->id.len = id->len;
    p = ngx_cpymem(p, id->str, id->len);
    *p++ = '\0';

    for (i = 0; i < fields->elements; i++) {
        if (fields->element[i]->type != REDIS_REPLY_STRING) {
            continue;
        }

        e->fields[e->nfields].data = p;
        e->fields[e->nfields].len = fields->element[i]->len;
        p = ngx_cpymem(p, fields->element[i]->str, fields->element[i]->len);
        *p++ = '\0';

        e->nfields++;
    }

    return e;
}


/* never waits for a read: sent only while no round is in flight, or
 * answered before the round's command, which follows it */

static void
ngx_http_chat_redis_consumer_xack(ngx_http_chat_redis_consumer_t *c,
    ngx_str_t *stream, ngx_str_t *id)
{
    size_t       argvlen[4];
    const char  *argv[4];

    if (c->rconn == NULL || c->destroying) {
        return;
    }

    argv[0] = "XACK";
    argvlen[0] = sizeof("XACK") - 1;
    argv[1] = (const char *) stream->data;
    argvlen[1] = stream->len;
    argv[2] = (const char *) c->group.data;
    argvlen[2] = c->group.len;
    argv[3] = (const char *) id->data;
    argvlen[3] = id->len;

    /* not sent: the entry stays pending and comes back, which is allowed */

    (void) ngx_http_chat_redis_conn_command(c->rconn,
                                    ngx_http_chat_redis_consumer_xack_reply,
                                    c, 4, argv, argvlen);
}


/*
 * The round's acknowledgements, one XACK a stream: Redis and the worker
 * handle a command for a round rather than one for every entry.  An XACK
 * not sent leaves its entries pending, to be delivered again, which
 * delivery at least once allows.
 */

static void
ngx_http_chat_redis_consumer_xack_all(ngx_http_chat_redis_consumer_t *c)
{
    int          argc;
    ngx_uint_t   i, k;

    if (c->nacks == 0) {
        return;
    }

    if (c->rconn == NULL || c->destroying) {
        c->nacks = 0;
        return;
    }

    for (i = 0; i < c->nstreams; i++) {
        argc = 3;

        for (k = 0; k < c->nacks; k++) {
            if (c->acks[k].stream == i) {
                c->ack_argv[argc] = (const char *) c->acks[k].id;
                c->ack_argvlen[argc] = c->acks[k].len;
                argc++;
            }
        }

        if (argc == 3) {
            continue;
        }

        c->ack_argv[0] = "XACK";
        c->ack_argvlen[0] = sizeof("XACK") - 1;
        c->ack_argv[1] = (const char *) c->streams[i].data;
        c->ack_argvlen[1] = c->streams[i].len;
        c->ack_argv[2] = (const char *) c->group.data;
        c->ack_argvlen[2] = c->group.len;

        (void) ngx_http_chat_redis_conn_command(c->rconn,
                                    ngx_http_chat_redis_consumer_xack_reply,
                                    c, argc, c->ack_argv, c->ack_argvlen);
    }

    c->nacks = 0;
}


static void
ngx_http_chat_redis_consumer_xack_reply(redisAsyncContext *ac, void *data,
    void *privdata)
{
    redisReply                      *reply = data;
    ngx_http_chat_redis_consumer_t  *c = privdata;

    if (reply && reply->type == REDIS_REPLY_ERROR
        && !ngx_http_chat_redis_exiting && !c->destroying)
    {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "chat redis: XACK failed: %*s", reply->len, reply->str);
    }
}


/* something failed: the next round after a growing pause */

static void
ngx_http_chat_redis_consumer_trouble(ngx_http_chat_redis_consumer_t *c)
{
    if (c->destroying || ngx_http_chat_redis_exiting) {
        return;
    }

    if (c->wait.timer_set) {
        ngx_del_timer(&c->wait);
    }

    ngx_add_timer(&c->wait, c->backoff);

    c->backoff = ngx_min(c->backoff * 2, NGX_HTTP_CHAT_REDIS_BACKOFF_MAX);
}


/* no reply in time: the server is taken as hung, as for commands */

static void
ngx_http_chat_redis_consumer_timeout(ngx_event_t *ev)
{
    ngx_http_chat_redis_consumer_t  *c = ev->data;

    if (c->rconn == NULL || c->rconn->ac == NULL || c->rconn->dropping) {
        return;
    }

    ngx_http_chat_redis_conn_error(c->rconn, "timed out", NULL, 0);
    ngx_http_chat_redis_conn_drop(c->rconn);
}


static void
ngx_http_chat_redis_consumer_wait(ngx_event_t *ev)
{
    ngx_http_chat_redis_consumer_next(ev->data);
}


/*
 * The group's pending entries and lag on each stream, from XINFO GROUPS,
 * for /metrics: on the command connection (the consumer's own waits in
 * XREADGROUP BLOCK), one script for all streams, in a pool of its own.
 */

static void
ngx_http_chat_redis_consumer_stats(ngx_event_t *ev)
{
    ngx_http_chat_redis_consumer_t *c = ev->data;

    const char          **argv;
    size_t               *argvlen;
    ngx_str_t             num;
    ngx_uint_t            i, n;
    ngx_pool_t           *pool;
    ngx_http_chat_op_t   *op;

    static const char  script[] =
        "local r = {} "
        "for i, k in ipairs(KEYS) do "
        "local ok, g = pcall(redis.call, 'XINFO', 'GROUPS', k) "
        "r[i] = ok and g or {} "
        "end "
        "return r";

    if (c->destroying || ngx_http_chat_redis_exiting) {
        return;
    }

    ngx_add_timer(&c->stats, NGX_HTTP_CHAT_REDIS_STATS);

    if (c->stats_op) {
        return;     /* the last one still runs */
    }

    pool = ngx_create_pool(1024, c->log);
    if (pool == NULL) {
        return;
    }

    n = 3 + c->nstreams;

    op = ngx_pcalloc(pool, sizeof(ngx_http_chat_op_t));
    argv = ngx_palloc(pool, n * sizeof(char *));
    argvlen = ngx_palloc(pool, n * sizeof(size_t));
    num.data = ngx_pnalloc(pool, NGX_INT_T_LEN);

    if (op == NULL || argv == NULL || argvlen == NULL || num.data == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    num.len = ngx_sprintf(num.data, "%ui", c->nstreams) - num.data;

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = script;
    argvlen[1] = sizeof(script) - 1;
    argv[2] = (const char *) num.data;
    argvlen[2] = num.len;

    for (i = 0; i < c->nstreams; i++) {
        argv[3 + i] = (const char *) c->streams[i].data;
        argvlen[3 + i] = c->streams[i].len;
    }

    op->pool = pool;
    op->log = c->log;
    op->handler = ngx_http_chat_redis_consumer_stats_reply;
    op->data = c;

    c->stats_op = op;

    if (ngx_http_chat_op_redis(op, n, argv, argvlen) != NGX_OK) {
        ngx_http_chat_op_fail(op);
    }
}


static void
ngx_http_chat_redis_consumer_stats_reply(ngx_http_chat_op_t *op)
{
    ngx_http_chat_redis_consumer_t *c = op->data;

    ngx_uint_t   i;
    redisReply  *reply;

    if (c) {
        c->stats_op = NULL;

        reply = op->reply;

        if (op->rc == NGX_OK && reply->type == REDIS_REPLY_ARRAY
            && reply->elements == c->nstreams)
        {
            for (i = 0; i < c->nstreams; i++) {
                ngx_http_chat_redis_consumer_group(c, &c->streams[i],
                                                   reply->element[i]);
            }
        }
    }

    ngx_destroy_pool(op->pool);
}


/* a group is a flat array of names and values: "pending", "lag" (Redis 7) */

static void
ngx_http_chat_redis_consumer_group(ngx_http_chat_redis_consumer_t *c,
    ngx_str_t *stream, redisReply *groups)
{
    ngx_int_t    lag;
    ngx_uint_t   i, j, found, pending;
    redisReply  *g, *k, *v;

    if (groups->type != REDIS_REPLY_ARRAY) {
        return;
    }

    for (i = 0; i < groups->elements; i++) {
        g = groups->element[i];

        if (g->type != REDIS_REPLY_ARRAY) {
            continue;
        }

        found = 0;
        pending = 0;
        lag = -1;

        for (j = 0; j + 1 < g->elements; j += 2) {
            k = g->element[j];
            v = g->element[j + 1];

            if (k->type != REDIS_REPLY_STRING) {
                continue;
            }

            if (ngx_strcmp(k->str, "name") == 0
                && v->type == REDIS_REPLY_STRING
                && v->len == c->group.len
                && ngx_strncmp(v->str, c->group.data, v->len) == 0)
            {
                found = 1;

            } else if (ngx_strcmp(k->str, "pending") == 0
                       && v->type == REDIS_REPLY_INTEGER)
            {
                pending = (ngx_uint_t) v->integer;

            } else if (ngx_strcmp(k->str, "lag") == 0
                       && v->type == REDIS_REPLY_INTEGER)
            {
                lag = (ngx_int_t) v->integer;
            }
        }

        if (found) {
            ngx_http_chat_metrics_group(stream, pending, lag);
            return;
        }
    }
}


static void
ngx_http_chat_redis_consumer_claim(ngx_event_t *ev)
{
    ngx_http_chat_redis_consumer_t  *c = ev->data;

    if (c->destroying || ngx_http_chat_redis_exiting) {
        return;
    }

    ngx_add_timer(&c->claim, c->claim_interval);

    /* a cycle still going on is not restarted */

    if (!c->claiming) {
        c->claiming = 1;
        c->claim_stream = 0;
        c->cursor_len = 0;
    }

    ngx_http_chat_redis_consumer_next(c);
}
