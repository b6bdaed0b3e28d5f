
/*
 * C10: the live event stream of a room (Server-Sent Events).
 *
 * The room checks answer as JSON before anything streams.  Then the
 * stream subscribes to the room's channel, sends "connected", and when the
 * client names the last event it saw (Last-Event-ID header, or the
 * last_event_id argument for a first EventSource connection) replays the
 * room's stored messages after it before going live.  Live frames that
 * arrive during the replay wait, and those the replay already sent are
 * dropped, so a client that reconnects gets every message exactly once.
 *
 * What is made only to be sent ("connected", the replayed messages and
 * their JSON) is made in a pool of its own, destroyed once the frames are
 * queued: the request's pool lives as long as the stream.
 */


#include "ngx_http_chat_msg_module.h"


#define NGX_HTTP_CHAT_MSG_REPLAY_MAX  1000


static ngx_int_t ngx_http_chat_msg_stream_auth(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_msg_stream_room(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_msg_stream_replay(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_msg_stream_last(ngx_http_request_t *r,
    bson_oid_t *oid);
static ngx_int_t ngx_http_chat_msg_stream_mark(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_chat_msg_stream_replayed(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_msg_stream_send(ngx_http_request_t *r,
    ngx_http_chat_msg_ctx_t *mctx, ngx_pool_t *pool, ngx_array_t *ids);


ngx_int_t
ngx_http_chat_msg_stream(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_str_t  token;

    /* EventSource cannot set headers: the token may come as access_token
     * (RFC 6750); the header wins when both are there */

    if (ngx_http_chat_bearer(r, &token) != NGX_OK) {

        if (r->headers_in.authorization
            || ngx_http_arg(r, (u_char *) "access_token",
                            sizeof("access_token") - 1, &token)
               != NGX_OK)
        {
            return ngx_http_chat_send_unauthorized(r);
        }
    }

    return ngx_http_chat_authenticate(r, ctx, &token,
                                      ngx_http_chat_msg_stream_auth);
}


static ngx_int_t
ngx_http_chat_msg_stream_auth(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_msg_room_path(r, ctx, &ctx->params[0],
                                       ngx_http_chat_msg_stream_room);
}


static ngx_int_t
ngx_http_chat_msg_stream_room(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    u_char                    text[sizeof("Connected to room ")
                                   + NGX_INT64_LEN];
    cJSON                    *data;
    ngx_int_t                 rc;
    ngx_str_t                 channel, frame, message;
    ngx_pool_t               *pool;
    bson_oid_t                last;
    ngx_uint_t                replay;
    ngx_http_chat_sse_t      *sse;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ngx_http_chat_msg_get_ctx(r, ctx);

    replay = (ngx_http_chat_msg_stream_last(r, &last) == NGX_OK);

    message.data = text;
    message.len = ngx_sprintf(text, "Connected to room %L", mctx->room.id)
                  - text;

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, r->connection->log);
    if (pool == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    data = cJSON_CreateObject();

    rc = (data == NULL
          || ngx_http_chat_json_str(data, "message", &message) == NULL
          || ngx_http_chat_json_num(data, "room_id", mctx->room.id) == NULL
          || ngx_http_chat_json_num(data, "user_id", ctx->user_id) == NULL
          || ngx_http_chat_sse_frame(pool, "connected", NULL, data, &frame)
             != NGX_OK
          || ngx_http_chat_msg_channel(pool, mctx->room.id, &channel)
             != NGX_OK)
         ? NGX_HTTP_INTERNAL_SERVER_ERROR : NGX_OK;

    cJSON_Delete(data);

    if (rc != NGX_OK) {
        ngx_destroy_pool(pool);
        return rc;
    }

    sse = ngx_http_chat_sse_open(r);
    if (sse == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    mctx->stream = sse;

    /* subscribed before the replay reads: nothing falls in between */

    rc = (ngx_http_chat_sse_subscribe(sse, &channel, replay) != NGX_OK
          || ngx_http_chat_sse_send(sse, &frame) != NGX_OK)
         ? NGX_ERROR : NGX_OK;

    ngx_destroy_pool(pool);

    if (rc != NGX_OK) {
        ngx_http_chat_sse_close(sse, NGX_ERROR);
        return NGX_DONE;
    }

    if (!replay) {
        return NGX_DONE;
    }

    if (ngx_http_chat_sse_subscribed(sse, ngx_http_chat_msg_stream_replay)
        != NGX_DONE)
    {
        ngx_http_chat_sse_close(sse, NGX_ERROR);
    }

    return NGX_DONE;
}


/* the subscription is in place in Redis: the replay may read its bound */

static ngx_int_t
ngx_http_chat_msg_stream_replay(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    u_char                    key[sizeof("chat:room::released")
                                  + NGX_INT64_LEN];
    size_t                    argvlen[2];
    const char               *argv[2];
    bson_oid_t                last;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ngx_http_chat_msg_get_ctx(r, ctx);

    if (mctx == NULL
        || ngx_http_chat_msg_stream_last(r, &last) != NGX_OK)
    {
        return NGX_ERROR;
    }

    op = ngx_http_chat_msg_op(r, mctx);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->oid = last;
    op->room_id = mctx->room.id;
    op->limit = NGX_HTTP_CHAT_MSG_REPLAY_MAX;

    /* the replay stops where the live frames begin (the room's "released"
     * mark, ngx_http_chat_msg_module.h): the rest comes live, in order */

    argv[0] = "GET";
    argvlen[0] = sizeof("GET") - 1;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "chat:room:%L:released", op->room_id)
                 - key;

    return ngx_http_chat_redis(r, ngx_http_chat_msg_stream_mark, 2, argv,
                               argvlen);
}


static ngx_int_t
ngx_http_chat_msg_stream_mark(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    redisReply *reply)
{
    ngx_int_t                 n;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ngx_http_chat_msg_get_ctx(r, ctx);

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_http_chat_sse_close(mctx->stream, NGX_ERROR);
        return NGX_DONE;
    }

    /* no mark: nothing was ever held back, the replay has no bound */

    mctx->op->released = 0;

    if (reply->type == REDIS_REPLY_STRING) {
        n = ngx_atoi((u_char *) reply->str, reply->len);

        if (n > 0) {
            mctx->op->released = n;
        }
    }

    if (ngx_http_chat_msg_mongo(r, mctx->op, ngx_http_chat_msg_replay_run,
                                ngx_http_chat_msg_stream_replayed)
        != NGX_DONE)
    {
        ngx_http_chat_sse_close(mctx->stream, NGX_ERROR);
    }

    return NGX_DONE;
}


/* where the client left off: a message id, header first */

static ngx_int_t
ngx_http_chat_msg_stream_last(ngx_http_request_t *r, bson_oid_t *oid)
{
    u_char      hex[25];
    ngx_str_t   last;

    ngx_http_chat_sse_last_event_id(r, &last);

    if (last.len != 24 || !bson_oid_is_valid((const char *) last.data, 24)) {
        return NGX_DECLINED;
    }

    ngx_memcpy(hex, last.data, 24);
    hex[24] = '\0';

    bson_oid_init_from_string(oid, (const char *) hex);

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_msg_stream_replayed(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc)
{
    ngx_pool_t               *pool;
    ngx_array_t              *ids;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ngx_http_chat_msg_get_ctx(r, ctx);

    /* on failure the client reconnects and asks again */

    if (rc != NGX_OK) {
        ngx_http_chat_sse_close(mctx->stream, NGX_ERROR);
        return NGX_DONE;
    }

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, r->connection->log);
    if (pool == NULL) {
        ngx_http_chat_sse_close(mctx->stream, NGX_ERROR);
        return NGX_DONE;
    }

    ids = ngx_array_create(pool, 16, sizeof(ngx_str_t));

    if (ids == NULL
        || ngx_http_chat_msg_stream_send(r, mctx, pool, ids) != NGX_OK
        || ngx_http_chat_sse_release(mctx->stream, ids) != NGX_OK)
    {
        ngx_http_chat_sse_close(mctx->stream, NGX_ERROR);
    }

    ngx_destroy_pool(pool);

    return NGX_DONE;
}


/*
 * The replayed messages as the live "new_message" frames.  The message,
 * its JSON and its frame are made in pool: while they are, it stands in
 * for the request's (nothing but that making runs meanwhile).
 */

static ngx_int_t
ngx_http_chat_msg_stream_send(ngx_http_request_t *r,
    ngx_http_chat_msg_ctx_t *mctx, ngx_pool_t *pool, ngx_array_t *ids)
{
    cJSON                   *data;
    bson_t                   doc;
    uint32_t                 len;
    ngx_int_t                rc;
    ngx_str_t                frame, *id;
    ngx_pool_t              *saved;
    bson_iter_t              it;
    const uint8_t           *buf;
    ngx_http_chat_msg_t      m;
    ngx_http_chat_msg_op_t  *op;

    op = mctx->op;

    if (op->status == NGX_HTTP_CHAT_MSG_NOT_FOUND || op->reply == NULL
        || !bson_iter_init(&it, op->reply))
    {
        /* an unknown id replays nothing */
        return NGX_OK;
    }

    while (bson_iter_next(&it)) {

        if (!BSON_ITER_HOLDS_DOCUMENT(&it)) {
            continue;
        }

        /* the documents stay in the reply, which lives with the request */

        bson_iter_document(&it, &len, &buf);

        if (!bson_init_static(&doc, buf, len)) {
            return NGX_ERROR;
        }

        saved = r->pool;
        r->pool = pool;

        rc = NGX_ERROR;

        if (ngx_http_chat_msg_parse(r, &doc, &m) == NGX_OK) {
            data = ngx_http_chat_msg_new_message(r, &m,
                         ngx_http_chat_msg_username(&mctx->room, m.user_id),
                         NULL);

            if (data) {
                rc = ngx_http_chat_sse_frame(pool, "new_message", &m.id,
                                             data, &frame);
            }
        }

        r->pool = saved;

        id = ngx_array_push(ids);

        if (rc != NGX_OK || id == NULL
            || ngx_http_chat_sse_send(mctx->stream, &frame) != NGX_OK)
        {
            return NGX_ERROR;
        }

        *id = m.id;
    }

    return NGX_OK;
}
