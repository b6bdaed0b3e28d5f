
/*
 * Typing indicators, C13 (API.md 12): POST /api/messages/{room_id}/typing.
 *
 * Nothing is stored: the indicator is a "typing" frame on the room's
 * channel, so it reaches every stream of the room on every node through
 * the core's SSE hub, without an "id:" line (a resume with Last-Event-ID
 * never replays it, and a client's last id stays a message id).
 *
 * At most one frame per user and room and second goes out.  The limit
 * lives in Redis, next to the fan-out: one script sets the key
 * "chat:room:<room_id>:typing:<user_id>" with NX and a lifetime of a
 * second and publishes the frame only if it was set.  So it holds across
 * the workers and nodes a user's calls are spread over, and it costs the
 * one round trip the publish needs anyway.  A call inside the second
 * answers 202 all the same: the client cannot tell, and need not.
 *
 * The room checks are C4's: ngx_http_chat_msg_room_check_open(), members
 * only, and not a blocked pair (API.md 12, F9).
 */


#include "ngx_http_chat_msg_module.h"


#define NGX_HTTP_CHAT_MSG_TYPING_MS     "1000"

/* KEYS[1] the user's limit, KEYS[2] the room's channel; ARGV[1] the
 * frame, ARGV[2] the limit's lifetime; -1: limited */
#define NGX_HTTP_CHAT_MSG_TYPING_SCRIPT                                      \
    "if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then "          \
    "return redis.call('PUBLISH', KEYS[2], ARGV[1]) end return -1"


static ngx_int_t ngx_http_chat_msg_typing_room(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_msg_typing_sent(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply);


/* C13 */

ngx_int_t
ngx_http_chat_msg_typing(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON       *errors;
    int64_t      room_id;
    ngx_uint_t   typing;

    errors = NULL;

    if (ngx_http_chat_check_int(r, &errors, "path", "room_id",
                                &ctx->params[0], INT64_MIN, INT64_MAX,
                                &room_id)
        == NGX_ERROR
        || ngx_http_chat_body_bool(r, &errors, ctx->json, "is_typing", 1,
                                   &typing)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (room_id <= 0) {
        return ngx_http_chat_send_not_positive(r, "room_id", room_id);
    }

    return ngx_http_chat_msg_room_check_open(r, ctx, room_id,
                                             ngx_http_chat_msg_typing_room);
}


static ngx_int_t
ngx_http_chat_msg_typing_room(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    u_char                   *key;
    cJSON                    *data, *errors;
    size_t                    argvlen[7];
    ngx_str_t                 now, channel, frame;
    ngx_uint_t                typing;
    const char               *argv[7];
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;

    /* the body passed its checks before the room's: only its value now */

    errors = NULL;

    if (ngx_http_chat_body_bool(r, &errors, ctx->json, "is_typing", 1,
                                &typing)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    data = ngx_http_chat_json_object(r);

    if (data == NULL
        || ngx_http_chat_iso_now(r->pool, &now) != NGX_OK
        || cJSON_AddNumberToObject(data, "room_id", (double) mctx->room.id)
           == NULL
        || cJSON_AddNumberToObject(data, "user_id", (double) ctx->user_id)
           == NULL
        || ngx_http_chat_json_str(data, "username",
                                  ngx_http_chat_msg_username(&mctx->room,
                                                             ctx->user_id))
           == NULL
        || cJSON_AddBoolToObject(data, "is_typing", typing) == NULL
        || ngx_http_chat_json_str(data, "timestamp", &now) == NULL
        || ngx_http_chat_sse_frame(r->pool, "typing", NULL, data, &frame)
           != NGX_OK
        || ngx_http_chat_msg_channel(r->pool, mctx->room.id, &channel)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    key = ngx_pnalloc(r->pool, sizeof("chat:room::typing:")
                               + 2 * NGX_INT64_LEN);
    if (key == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = NGX_HTTP_CHAT_MSG_TYPING_SCRIPT;
    argvlen[1] = sizeof(NGX_HTTP_CHAT_MSG_TYPING_SCRIPT) - 1;
    argv[2] = "2";
    argvlen[2] = 1;
    argv[3] = (const char *) key;
    argvlen[3] = ngx_sprintf(key, "chat:room:%L:typing:%i", mctx->room.id,
                             ctx->user_id)
                 - key;
    argv[4] = (const char *) channel.data;
    argvlen[4] = channel.len;
    argv[5] = (const char *) frame.data;
    argvlen[5] = frame.len;
    argv[6] = NGX_HTTP_CHAT_MSG_TYPING_MS;
    argvlen[6] = sizeof(NGX_HTTP_CHAT_MSG_TYPING_MS) - 1;

    return ngx_http_chat_redis(r, ngx_http_chat_msg_typing_sent, 7, argv,
                               argvlen);
}


/* the indicator is all the call does: without Redis it did not happen */

static ngx_int_t
ngx_http_chat_msg_typing_sent(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    redisReply *reply)
{
    ngx_http_chat_msg_ctx_t  *mctx;

    static ngx_str_t  ok = ngx_string("{\"status\":\"ok\"}");

    mctx = ctx->data;

    if (reply == NULL) {
        return ngx_http_chat_send_unavailable(r);
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "chat msg: typing script failed: %*s",
                      reply->type == REDIS_REPLY_ERROR ? reply->len : 0,
                      reply->str);
        return ngx_http_chat_send_unavailable(r);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "chat msg: user %i typing in room %L: %s",
                   ctx->user_id, mctx->room.id,
                   reply->integer < 0 ? "limited" : "published");

    return ngx_http_chat_send_raw(r, NGX_HTTP_ACCEPTED, &ok);
}
