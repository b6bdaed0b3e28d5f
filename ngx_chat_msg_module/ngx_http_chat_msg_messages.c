
/*
 * /api/messages: send (C4), a page (C5), read receipts (C6), the unread
 * count (C7), edit (C8) and soft delete (C9).  Messages and read records
 * are MongoDB documents (API.md 8.2); the room checks use MariaDB.
 */


#include "ngx_http_chat_msg_module.h"

#include <ngx_md5.h>


/*
 * The room's sequence number and the message's created_at, taken in one
 * step so that the two orders never disagree.  The number is INCR, but
 * never below the Redis clock in microseconds, so a counter lost with
 * Redis's data restarts above every number handed out before; numbers
 * stay below 2^53.  created_at is the Redis clock in milliseconds (what a
 * MongoDB date holds), but at least one more than the room's previous
 * one (KEYS[3]): it strictly increases in the order sends are accepted,
 * across workers and nodes, and pages sort by it together with messages
 * that other writers stored without a number.  The number is in flight
 * (KEYS[2]) until its send settles it.  Returns {seq, created_at}.
 */

#define NGX_HTTP_CHAT_MSG_SEQ_SCRIPT                                         \
    "local n = redis.call('INCR', KEYS[1]) "                                 \
    "local t = redis.call('TIME') "                                          \
    "local f = tonumber(t[1]) * 1000000 + tonumber(t[2]) "                   \
    "if n < f then redis.call('SET', KEYS[1], f) n = f end "                 \
    "local ms = math.floor(f / 1000) "                                       \
    "local last = tonumber(redis.call('GET', KEYS[3]) or '0') or 0 "         \
    "if ms <= last then ms = last + 1 end "                                  \
    "redis.call('SET', KEYS[3], string.format('%.0f', ms)) "                 \
    "redis.call('ZADD', KEYS[2], n, n) "                                     \
    "redis.call('EXPIRE', KEYS[2], 3600) "                                   \
    "return {n, ms}"

/*
 * A send settles its number: with its frame (ARGV[3]) once stored, with
 * "" when it gives up.  Then every waiting frame below the smallest number
 * still in flight goes out, in seq order, and the last one's seq becomes
 * the room's "released" mark.  Numbers in flight for longer than ARGV[4]
 * seconds belong to senders that died: they no longer hold others back.
 * KEYS: flight, ready, released; ARGV: seq, channel, frame, stale.
 */

#define NGX_HTTP_CHAT_MSG_SETTLE_SCRIPT                                      \
    "redis.call('ZREM', KEYS[1], ARGV[1]) "                                  \
    "if ARGV[3] ~= '' then "                                                 \
        "redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3]) end "                 \
    "local t = redis.call('TIME') "                                          \
    "local old = (tonumber(t[1]) - tonumber(ARGV[4])) * 1000000 "            \
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', "                       \
        "string.format('(%.0f', old)) "                                      \
    "local low = redis.call('ZRANGE', KEYS[1], 0, 0) "                       \
    "local max = '+inf' "                                                    \
    "if low[1] then max = '(' .. low[1] end "                                \
    "local out = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', max, "         \
        "'WITHSCORES') "                                                     \
    "for i = 1, #out, 2 do redis.call('PUBLISH', ARGV[2], out[i]) end "      \
    "if #out > 0 then "                                                      \
        "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', max) "              \
        "redis.call('SET', KEYS[3], out[#out], 'EX', 86400) end "            \
    "redis.call('EXPIRE', KEYS[2], 3600) "                                   \
    "return #out / 2"

/* seconds after which a number in flight no longer holds frames back */
#define NGX_HTTP_CHAT_MSG_STALE         "30"


/*
 * The rooms whose updated_at this worker touched, with the second of the
 * touch, in a small table indexed by the room's id: a collision costs
 * only a touch more.  See ngx_http_chat_msg_touch_due().
 */

#define NGX_HTTP_CHAT_MSG_TOUCHED       512

typedef struct {
    int64_t                     room_id;
    time_t                      sec;
} ngx_http_chat_msg_touch_t;

static ngx_http_chat_msg_touch_t
    ngx_http_chat_msg_touched[NGX_HTTP_CHAT_MSG_TOUCHED];


/*
 * optimistic retries of an edit that raced with another one: each round
 * lets at least one of the racing edits through, so of n edits at the
 * same moment the last may need n tries
 */
#define NGX_HTTP_CHAT_MSG_EDIT_TRIES    32


static ngx_int_t ngx_http_chat_msg_type(ngx_str_t *type);
static ngx_uint_t ngx_http_chat_msg_touch_due(int64_t room_id);
static void ngx_http_chat_msg_send_seq(ngx_http_chat_op_t *op);
static void ngx_http_chat_msg_send_cleanup(void *data);
static ngx_int_t ngx_http_chat_msg_settle(ngx_http_request_t *r,
    ngx_http_chat_msg_op_t *op, ngx_str_t *frame,
    ngx_http_chat_redis_pt then);
static ngx_int_t ngx_http_chat_msg_send_ready(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_chat_msg_insert_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op);
static ngx_int_t ngx_http_chat_msg_inserted(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_msg_announced(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_chat_msg_page_room(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_msg_page_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op);
static ngx_int_t ngx_http_chat_msg_page_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_msg_ids(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, cJSON **errors);
static ngx_int_t ngx_http_chat_msg_read_room(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static int ngx_http_chat_msg_cmp_str(const void *one, const void *two);
static ngx_int_t ngx_http_chat_msg_read_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op);
static ngx_int_t ngx_http_chat_msg_read_foreign(mongoc_collection_t *msgs,
    ngx_http_chat_msg_op_t *op);
static ngx_int_t ngx_http_chat_msg_read_seen(mongoc_collection_t *reads,
    ngx_http_chat_msg_op_t *op);
static ngx_int_t ngx_http_chat_msg_read_insert(mongoc_collection_t *reads,
    ngx_http_chat_msg_op_t *op);
static ngx_int_t ngx_http_chat_msg_read_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_msg_unread_room(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_msg_unread_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_msg_edit_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op);
static ngx_int_t ngx_http_chat_msg_edit_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_msg_delete_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op);
static ngx_int_t ngx_http_chat_msg_delete_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_msg_changed(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc, ngx_uint_t edit);


static ngx_int_t
ngx_http_chat_msg_type(ngx_str_t *type)
{
    ngx_uint_t  i;

    static ngx_str_t  types[] = {
        ngx_string("text"),
        ngx_string("image"),
        ngx_string("file"),
        ngx_string("system")
    };

    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (type->len == types[i].len
            && ngx_strncmp(type->data, types[i].data, type->len) == 0)
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/* C4 */

ngx_int_t
ngx_http_chat_msg_send(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    u_char                    key[sizeof("chat:room::seq") + NGX_INT64_LEN];
    u_char                    flight[sizeof("chat:room::flight")
                                     + NGX_INT64_LEN];
    u_char                    clock[sizeof("chat:room::clock")
                                    + NGX_INT64_LEN];
    cJSON                    *errors, *input;
    size_t                    argvlen[6];
    int64_t                   room_id;
    ngx_str_t                 content, type;
    const char               *argv[6];
    ngx_pool_cleanup_t       *cln;
    ngx_http_chat_op_t       *all, *room, *seq;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_sql_arg_t   arg;
    ngx_http_chat_msg_ctx_t  *mctx;

    errors = NULL;

    if (ngx_http_chat_check_int(r, &errors, "path", "room_id",
                                &ctx->params[0], INT64_MIN, INT64_MAX,
                                &room_id)
        == NGX_ERROR
        || ngx_http_chat_body_string(r, &errors, ctx->json, "content", 1, 1,
                                     NGX_HTTP_CHAT_MSG_CONTENT_MAX, &content)
           == NGX_ERROR
        || ngx_http_chat_body_string(r, &errors, ctx->json, "message_type",
                                     0, 0, NGX_MAX_INT_T_VALUE, &type)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (type.data == NULL) {
        ngx_str_set(&type, "text");

    } else if (ngx_http_chat_msg_type(&type) != NGX_OK) {
        input = cJSON_GetObjectItemCaseSensitive(ctx->json, "message_type");

        errors = ngx_http_chat_invalid(r, errors, "body", "message_type",
                                 "value_error",
                                 "Value error, message_type must be one of: "
                                 "text, image, file, system",
                                 cJSON_Duplicate(input, 1));
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (room_id <= 0) {
        return ngx_http_chat_send_not_positive(r, "room_id", room_id);
    }

    mctx = ngx_http_chat_msg_get_ctx(r, ctx);
    if (mctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = ngx_http_chat_msg_op(r, mctx);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op->content = content;
    op->message_type = type;
    op->blank = ngx_http_chat_msg_blank(&content);
    op->room_id = room_id;

    /*
     * The room checks and the room's next sequence number at once: a send
     * the checks refuse spends a number, which is harmless, sequence
     * numbers only order a room's messages and may have gaps.
     */

    all = ngx_http_chat_all(r, ngx_http_chat_msg_send_ready, NULL);
    if (all == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    room = ngx_http_chat_op_member(all, NULL, NULL);
    seq = ngx_http_chat_op_member(all, ngx_http_chat_msg_send_seq, op);

    if (room == NULL || seq == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a number taken is settled whatever becomes of the request */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_chat_msg_send_cleanup;
    cln->data = op;

    mctx->room_op = room;

    /* from the first start on, nothing fails before the wait */

    arg.type = NGX_HTTP_CHAT_SQL_INT;
    arg.num = room_id;

    /* a send is accepted only between members that are not blocked */

    if (ngx_http_chat_op_stmt(room,
                              NGX_HTTP_CHAT_MSG_ROOMS_BLOCKED "WHERE r.id = ?",
                              &arg, 1)
        != NGX_OK)
    {
        ngx_http_chat_op_fail(room);
    }

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = NGX_HTTP_CHAT_MSG_SEQ_SCRIPT;
    argvlen[1] = sizeof(NGX_HTTP_CHAT_MSG_SEQ_SCRIPT) - 1;
    argv[2] = "3";
    argvlen[2] = 1;
    argv[3] = (const char *) key;
    argvlen[3] = ngx_sprintf(key, "chat:room:%L:seq", room_id) - key;
    argv[4] = (const char *) flight;
    argvlen[4] = ngx_sprintf(flight, "chat:room:%L:flight", room_id)
                 - flight;
    argv[5] = (const char *) clock;
    argvlen[5] = ngx_sprintf(clock, "chat:room:%L:clock", room_id) - clock;

    if (ngx_http_chat_op_redis(seq, 6, argv, argvlen) != NGX_OK) {
        ngx_http_chat_op_fail(seq);
    }

    return ngx_http_chat_all_wait(r, all);
}


/* the reply lives only while this runs: the number is taken now */

static void
ngx_http_chat_msg_send_seq(ngx_http_chat_op_t *seq)
{
    redisReply              *reply;
    ngx_http_chat_msg_op_t  *op;

    op = seq->data;
    reply = seq->reply;

    /* taken even if the request is gone: then it is given up at its end */

    if ((seq->rc == NGX_OK || seq->rc == NGX_ABORT) && reply
        && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && reply->element[1]->type == REDIS_REPLY_INTEGER)
    {
        op->seq = reply->element[0]->integer;
        op->now = reply->element[1]->integer;
        return;
    }

    if (seq->rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, seq->log, 0,
                      "chat msg: sequence script failed: %s",
                      seq->reply->str);
    }

    op->seq = 0;
}


static ngx_int_t
ngx_http_chat_msg_send_ready(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc, void *data)
{
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;
    op = mctx->op;

    if (ngx_http_chat_msg_room_verdict(r, ctx, &mctx->room_op->sql, &rc)
        != NGX_OK)
    {
        return rc;
    }

    if (op->blank) {
        return ngx_http_chat_send_error(r, NGX_HTTP_BAD_REQUEST,
                                        "INVALID_INPUT",
                                        "Message content cannot be empty",
                                        NULL);
    }

    if (op->seq == 0) {
        return ngx_http_chat_send_unavailable(r);
    }

    /* created_at came with the number (NGX_HTTP_CHAT_MSG_SEQ_SCRIPT) */

    mctx->now = op->now * 1000;
    op->user_id = ctx->user_id;

    bson_oid_init(&op->oid, NULL);

    return ngx_http_chat_msg_mongo(r, op, ngx_http_chat_msg_insert_run,
                                   ngx_http_chat_msg_inserted);
}


/* in a pool thread: the fields of API.md 8.2 in their order, then seq */

static ngx_int_t
ngx_http_chat_msg_insert_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op)
{
    bson_t                doc;
    ngx_int_t             rc;
    mongoc_collection_t  *msgs;

    bson_init(&doc);
    BSON_APPEND_OID(&doc, "_id", &op->oid);
    BSON_APPEND_INT32(&doc, "user_id", (int32_t) op->user_id);
    BSON_APPEND_INT32(&doc, "room_id", (int32_t) op->room_id);
    BSON_APPEND_UTF8(&doc, "room_type", "private");
    bson_append_utf8(&doc, "content", -1, (const char *) op->content.data,
                     (int) op->content.len);
    bson_append_utf8(&doc, "message_type", -1,
                     (const char *) op->message_type.data,
                     (int) op->message_type.len);
    BSON_APPEND_NULL(&doc, "file_url");
    BSON_APPEND_NULL(&doc, "file_name");
    BSON_APPEND_NULL(&doc, "file_size");
    BSON_APPEND_NULL(&doc, "file_type");
    BSON_APPEND_BOOL(&doc, "is_deleted", false);
    BSON_APPEND_NULL(&doc, "deleted_at");
    BSON_APPEND_NULL(&doc, "deleted_by");
    BSON_APPEND_BOOL(&doc, "is_edited", false);
    BSON_APPEND_NULL(&doc, "edited_at");
    BSON_APPEND_NULL(&doc, "original_content");
    BSON_APPEND_DATE_TIME(&doc, "created_at", op->now);
    BSON_APPEND_DATE_TIME(&doc, "updated_at", op->now);
    BSON_APPEND_INT64(&doc, "seq", op->seq);

    msgs = mongoc_database_get_collection(db, "messages");

    rc = NGX_OK;

    if (!mongoc_collection_insert_one(msgs, &doc, NULL, NULL, &op->error)) {
        rc = ngx_http_chat_mongo_error(&op->error);
    }

    mongoc_collection_destroy(msgs);
    bson_destroy(&doc);

    return rc;
}


/* stored: the room's streams and the event consumers learn of it now */

static ngx_int_t
ngx_http_chat_msg_inserted(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc)
{
    char                      id[25];
    cJSON                    *fields, *data;
    ngx_str_t                *username, now, frame;
    ngx_http_chat_msg_t      *m;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_sql_arg_t   arg;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;
    op = mctx->op;

    if (rc != NGX_OK) {
        return ngx_http_chat_msg_mongo_failed(r, op, rc);
    }

    m = &mctx->msg;

    bson_oid_to_string(&op->oid, id);

    m->id.data = ngx_pnalloc(r->pool, 24);
    if (m->id.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(m->id.data, id, 24);
    m->id.len = 24;
    m->user_id = ctx->user_id;
    m->room_id = mctx->room.id;
    m->content = op->content;
    m->message_type = op->message_type;
    m->seq = op->seq;
    m->created_at = mctx->now;
    m->updated_at = mctx->now;
    m->deleted_at = NGX_HTTP_CHAT_MSG_NO_TIME;
    m->edited_at = NGX_HTTP_CHAT_MSG_NO_TIME;

    username = ngx_http_chat_msg_username(&mctx->room, ctx->user_id);

    fields = ngx_http_chat_json_object(r);

    if (fields == NULL
        || ngx_http_chat_json_str(fields, "message_id", &m->id) == NULL
        || ngx_http_chat_json_num(fields, "room_id", m->room_id) == NULL
        || ngx_http_chat_json_num(fields, "user_id", m->user_id) == NULL
        || ngx_http_chat_json_str(fields, "username", username) == NULL
        || ngx_http_chat_json_str(fields, "content", &m->content) == NULL
        || ngx_http_chat_json_str(fields, "message_type", &m->message_type)
           == NULL
        || ngx_http_chat_iso_now(r->pool, &now) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    (void) ngx_http_chat_event_publish(r, "message.events", m->room_id,
                                       "MessageSent", fields);

    /* the room moves to the top of its members' lists (C1); the answer
     * does not wait for it, a failure is logged and counted */

    if (ngx_http_chat_msg_touch_due(m->room_id)) {
        arg.type = NGX_HTTP_CHAT_SQL_INT;
        arg.num = m->room_id;

        ngx_http_chat_stmt_forget(r->connection->log, "room updated_at touch",
                                  "UPDATE chat_rooms SET updated_at = "
                                  "UTC_TIMESTAMP() WHERE id = ?", &arg, 1);
    }

    /* the answer follows the frame: a sender's next message, to any node,
     * reaches every stream after this one */

    data = ngx_http_chat_msg_new_message(r, m, username, &now);

    if (data != NULL
        && ngx_http_chat_sse_frame(r->pool, "new_message", &m->id, data,
                                   &frame)
           == NGX_OK
        && ngx_http_chat_msg_settle(r, op, &frame,
                                    ngx_http_chat_msg_announced)
           == NGX_DONE)
    {
        return NGX_DONE;
    }

    return ngx_http_chat_msg_announced(r, ctx, NULL);
}


/*
 * Whether a send touches its room's updated_at.  The column holds whole
 * seconds of MariaDB's clock (UTC_TIMESTAMP()), so a touch of a room
 * within the second of an earlier one writes what that one wrote (or,
 * delayed past the second's end, the next): a busy room cost MariaDB a
 * statement per message, the sends of a room competing for its row's
 * lock, for nothing.  A room is touched by its first message of each
 * second of this worker's clock, the others of that second leave it
 * alone (another worker or node touches it on its own): updated_at is
 * never older than the second a message of the room was accepted in.
 */

static ngx_uint_t
ngx_http_chat_msg_touch_due(int64_t room_id)
{
    time_t                      now;
    ngx_http_chat_msg_touch_t  *t;

    now = ngx_time();
    t = &ngx_http_chat_msg_touched[(uint64_t) room_id
                                   % NGX_HTTP_CHAT_MSG_TOUCHED];

    if (t->room_id == room_id && t->sec == now) {
        return 0;
    }

    t->room_id = room_id;
    t->sec = now;

    return 1;
}


/*
 * The send's number settled: with the frame, the request continuing with
 * then() once Redis has it (NGX_DONE); with frame NULL, fire and forget.
 */

static ngx_int_t
ngx_http_chat_msg_settle(ngx_http_request_t *r, ngx_http_chat_msg_op_t *op,
    ngx_str_t *frame, ngx_http_chat_redis_pt then)
{
    u_char       flight[sizeof("chat:room::flight") + NGX_INT64_LEN];
    u_char       ready[sizeof("chat:room::ready") + NGX_INT64_LEN];
    u_char       released[sizeof("chat:room::released") + NGX_INT64_LEN];
    u_char       seq[NGX_INT64_LEN], channel[sizeof("chat:room:")
                                             + NGX_INT64_LEN];
    size_t       argvlen[10];
    const char  *argv[10];

    op->announced = 1;

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = NGX_HTTP_CHAT_MSG_SETTLE_SCRIPT;
    argvlen[1] = sizeof(NGX_HTTP_CHAT_MSG_SETTLE_SCRIPT) - 1;
    argv[2] = "3";
    argvlen[2] = 1;
    argv[3] = (const char *) flight;
    argvlen[3] = ngx_sprintf(flight, "chat:room:%L:flight", op->room_id)
                 - flight;
    argv[4] = (const char *) ready;
    argvlen[4] = ngx_sprintf(ready, "chat:room:%L:ready", op->room_id)
                 - ready;
    argv[5] = (const char *) released;
    argvlen[5] = ngx_sprintf(released, "chat:room:%L:released",
                             op->room_id)
                 - released;
    argv[6] = (const char *) seq;
    argvlen[6] = ngx_sprintf(seq, "%L", op->seq) - seq;
    argv[7] = (const char *) channel;
    argvlen[7] = ngx_sprintf(channel, "chat:room:%L", op->room_id)
                 - channel;
    argv[8] = frame ? (const char *) frame->data : "";
    argvlen[8] = frame ? frame->len : 0;
    argv[9] = NGX_HTTP_CHAT_MSG_STALE;
    argvlen[9] = sizeof(NGX_HTTP_CHAT_MSG_STALE) - 1;

    if (then) {
        return ngx_http_chat_redis(r, then, 10, argv, argvlen);
    }

    return ngx_http_chat_redis_send(10, argv, argvlen);
}


/*
 * At the end of a send's request: a number taken and not settled (the
 * room checks refused, the insert failed, the client left) is given up,
 * so the frames behind it go out now
 */

static void
ngx_http_chat_msg_send_cleanup(void *data)
{
    ngx_http_chat_msg_op_t *op = data;

    if (op->seq != 0 && !op->announced) {
        (void) ngx_http_chat_msg_settle(NULL, op, NULL, NULL);
    }
}


/* stored either way: a frame Redis did not take is only logged, the
 * streams' replay finds the message */

static ngx_int_t
ngx_http_chat_msg_announced(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    redisReply *reply)
{
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "chat msg: frame of message %V not published",
                      &mctx->msg.id);
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_CREATED,
                                   ngx_http_chat_msg_json(r, NULL,
                                                          &mctx->msg));
}


/* C5 */

ngx_int_t
ngx_http_chat_msg_page(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                    *errors;
    int64_t                   room_id, limit, skip;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    errors = NULL;

    if (ngx_http_chat_check_int(r, &errors, "path", "room_id",
                                &ctx->params[0], INT64_MIN, INT64_MAX,
                                &room_id)
        == NGX_ERROR
        || ngx_http_chat_query_int(r, &errors, "limit", 50, 1, 100, &limit)
           == NGX_ERROR
        || ngx_http_chat_query_int(r, &errors, "skip", 0, 0, INT64_MAX,
                                   &skip)
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

    mctx = ngx_http_chat_msg_get_ctx(r, ctx);
    if (mctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = ngx_http_chat_msg_op(r, mctx);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op->limit = limit;
    op->skip = skip;

    return ngx_http_chat_msg_room_check(r, ctx, room_id,
                                        ngx_http_chat_msg_page_room);
}


static ngx_int_t
ngx_http_chat_msg_page_room(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;
    mctx->op->room_id = mctx->room.id;

    return ngx_http_chat_msg_mongo(r, mctx->op, ngx_http_chat_msg_page_run,
                                   ngx_http_chat_msg_page_done);
}


/*
 * in a pool thread: the total, then the page newest first (DEV-7: no
 * cache, every skip/limit is exact).  The two reads are not one snapshot:
 * a message sent in between may be counted and not listed, or the reverse.
 */

static ngx_int_t
ngx_http_chat_msg_page_run(mongoc_database_t *db, ngx_http_chat_msg_op_t *op)
{
    bson_t                filter, opts, sort;
    ngx_int_t             rc;
    mongoc_collection_t  *msgs;

    msgs = mongoc_database_get_collection(db, "messages");

    bson_init(&filter);
    BSON_APPEND_INT32(&filter, "room_id", (int32_t) op->room_id);
    BSON_APPEND_BOOL(&filter, "is_deleted", false);
    BSON_APPEND_UTF8(&filter, "room_type", "private");

    bson_init(&opts);

    rc = NGX_OK;

    op->count = mongoc_collection_count_documents(msgs, &filter, NULL, NULL,
                                                  NULL, &op->error);
    if (op->count < 0) {
        rc = ngx_http_chat_mongo_error(&op->error);
        goto done;
    }

    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "created_at", -1);
    BSON_APPEND_INT32(&sort, "_id", -1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "skip", op->skip);
    BSON_APPEND_INT64(&opts, "limit", op->limit);

    rc = ngx_http_chat_msg_collect(msgs, &filter, &opts, op, NULL);

done:

    bson_destroy(&opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(msgs);

    return rc;
}


static ngx_int_t
ngx_http_chat_msg_page_done(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc)
{
    bson_t                    doc;
    cJSON                    *json, *list;
    uint32_t                  len;
    ngx_uint_t                n, i;
    bson_iter_t               it;
    const uint8_t            *data;
    ngx_http_chat_msg_t      *m;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;
    op = mctx->op;

    if (rc != NGX_OK) {
        return ngx_http_chat_msg_mongo_failed(r, op, rc);
    }

    n = bson_count_keys(op->reply);

    m = ngx_palloc(r->pool, (n ? n : 1) * sizeof(ngx_http_chat_msg_t));
    if (m == NULL || !bson_iter_init(&it, op->reply)) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n && bson_iter_next(&it); i++) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&it)) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        bson_iter_document(&it, &len, &data);

        if (!bson_init_static(&doc, data, len)
            || ngx_http_chat_msg_parse(r, &doc, &m[i]) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    list = cJSON_AddArrayToObject(json, "messages");
    if (list == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* oldest first within the page */

    while (n--) {
        if (ngx_http_chat_msg_json(r, list, &m[n]) == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    n = cJSON_GetArraySize(list);

    if (ngx_http_chat_json_num(json, "total_count", op->count) == NULL
        || cJSON_AddBoolToObject(json, "has_more",
                                 op->count > op->skip
                                 && (uint64_t) (op->count - op->skip) > n)
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/* C6, DEV-1: reachable, with the handler's behaviour of the original */

ngx_int_t
ngx_http_chat_msg_read(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                    *errors;
    int64_t                   room_id;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ngx_http_chat_msg_get_ctx(r, ctx);
    if (mctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    errors = NULL;
    room_id = 0;

    if (ngx_http_chat_body_int(r, &errors, ctx->json, "room_id", 1, &room_id)
        == NGX_ERROR
        || ngx_http_chat_msg_ids(r, ctx, &errors) == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (mctx->given->nelts == 0) {
        return ngx_http_chat_send_error(r, NGX_HTTP_BAD_REQUEST,
                                        "INVALID_INPUT",
                                        "Message IDs cannot be empty", NULL);
    }

    if (room_id <= 0) {
        return ngx_http_chat_send_not_positive(r, "room_id", room_id);
    }

    return ngx_http_chat_msg_room_check(r, ctx, room_id,
                                        ngx_http_chat_msg_read_room);
}


/* "message_ids": a list of strings, into mctx->given */

static ngx_int_t
ngx_http_chat_msg_ids(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    cJSON **errors)
{
    cJSON                    *list, *item, *loc, *input;
    ngx_str_t                *id;
    ngx_uint_t                i;
    const char               *type, *msg;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;

    mctx->given = ngx_array_create(r->pool, 16, sizeof(ngx_str_t));
    if (mctx->given == NULL) {
        return NGX_ERROR;
    }

    list = cJSON_GetObjectItemCaseSensitive(ctx->json, "message_ids");

    if (list == NULL) {
        *errors = ngx_http_chat_invalid(r, *errors, "body", "message_ids",
                                        "missing", "Field required",
                                        cJSON_Duplicate(ctx->json, 1));
        return *errors ? NGX_DECLINED : NGX_ERROR;
    }

    if (!cJSON_IsArray(list)) {
        *errors = ngx_http_chat_invalid(r, *errors, "body", "message_ids",
                                        "list_type",
                                        "Input should be a valid list",
                                        cJSON_Duplicate(list, 1));
        return *errors ? NGX_DECLINED : NGX_ERROR;
    }

    i = 0;

    cJSON_ArrayForEach(item, list) {

        if (cJSON_IsString(item)) {
            id = ngx_array_push(mctx->given);
            if (id == NULL) {
                return NGX_ERROR;
            }

            id->data = (u_char *) item->valuestring;
            id->len = ngx_strlen(item->valuestring);

            if (ngx_http_chat_utf8_length(id) != NGX_ERROR) {
                i++;
                continue;
            }

            /* not UTF-8: not echoed, as the core does for strings */

            type = "string_unicode";
            msg = "Input should be a valid string, unable to parse raw data "
                  "as a unicode string";
            input = NULL;

        } else {
            type = "string_type";
            msg = "Input should be a valid string";
            input = cJSON_Duplicate(item, 1);
        }

        /* the item's index is the last element of its "loc" */

        *errors = ngx_http_chat_invalid(r, *errors, "body", "message_ids",
                                        type, msg, input);
        if (*errors == NULL) {
            return NGX_ERROR;
        }

        loc = cJSON_GetObjectItemCaseSensitive(
                  cJSON_GetArrayItem(*errors, cJSON_GetArraySize(*errors) - 1),
                  "loc");

        cJSON_AddItemToArray(loc, cJSON_CreateNumber((double) i++));
    }

    return NGX_OK;
}


static int
ngx_http_chat_msg_cmp_str(const void *one, const void *two)
{
    const ngx_str_t  *a = one;
    const ngx_str_t  *b = two;

    if (a->len != b->len) {
        return a->len < b->len ? -1 : 1;
    }

    return ngx_memcmp(a->data, b->data, a->len);
}


/*
 * A read record's _id is derived from (message id, user): a second record
 * of the pair is a duplicate key, which MongoDB refuses on _id in every
 * deployment, so concurrent calls cannot both insert it.
 */

static ngx_int_t
ngx_http_chat_msg_read_room(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    u_char                    digest[16], uid[NGX_INT64_LEN];
    ngx_str_t                *ids;
    ngx_md5_t                 md5;
    ngx_uint_t                i, n;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;

    op = ngx_http_chat_msg_op(r, mctx);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = mctx->given->nelts;

    ids = ngx_palloc(r->pool, n * sizeof(ngx_str_t));
    if (ids == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(ids, mctx->given->elts, n * sizeof(ngx_str_t));
    qsort(ids, n, sizeof(ngx_str_t), ngx_http_chat_msg_cmp_str);

    /* duplicates in the list count once */

    for (i = 1, op->nids = 1; i < n; i++) {
        if (ngx_http_chat_msg_cmp_str(&ids[op->nids - 1], &ids[i]) != 0) {
            ids[op->nids++] = ids[i];
        }
    }

    op->ids = ids;
    op->keys = ngx_palloc(r->pool, op->nids * sizeof(bson_oid_t));
    op->seen = ngx_pcalloc(r->pool, op->nids);

    if (op->keys == NULL || op->seen == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = ngx_sprintf(uid, "%i", ctx->user_id) - uid;

    for (i = 0; i < op->nids; i++) {
        ngx_md5_init(&md5);
        ngx_md5_update(&md5, "read\n", 5);
        ngx_md5_update(&md5, ids[i].data, ids[i].len);
        ngx_md5_update(&md5, "\n", 1);
        ngx_md5_update(&md5, uid, n);
        ngx_md5_final(digest, &md5);

        bson_oid_init_from_data(&op->keys[i], digest);
    }

    op->room_id = mctx->room.id;
    op->user_id = ctx->user_id;
    op->now = ngx_http_chat_msg_now() / 1000;

    return ngx_http_chat_msg_mongo(r, op, ngx_http_chat_msg_read_run,
                                   ngx_http_chat_msg_read_done);
}


/* in a pool thread */

static ngx_int_t
ngx_http_chat_msg_read_run(mongoc_database_t *db, ngx_http_chat_msg_op_t *op)
{
    ngx_int_t             rc;
    mongoc_collection_t  *msgs, *reads;

    msgs = mongoc_database_get_collection(db, "messages");
    reads = mongoc_database_get_collection(db, "message_read_status");

    rc = ngx_http_chat_msg_read_foreign(msgs, op);

    if (rc == NGX_OK && op->status == NGX_HTTP_CHAT_MSG_FOUND) {
        rc = ngx_http_chat_msg_read_seen(reads, op);
    }

    if (rc == NGX_OK && op->status == NGX_HTTP_CHAT_MSG_FOUND) {
        rc = ngx_http_chat_msg_read_insert(reads, op);
    }

    mongoc_collection_destroy(reads);
    mongoc_collection_destroy(msgs);

    return rc;
}


/* in a pool thread: does any listed id name a message of another room? */

static ngx_int_t
ngx_http_chat_msg_read_foreign(mongoc_collection_t *msgs,
    ngx_http_chat_msg_op_t *op)
{
    char              buf[16];
    bson_t            filter, in, ne, list, opts, proj;
    uint32_t          n;
    ngx_int_t         rc;
    ngx_uint_t        i;
    const char       *key;
    bson_oid_t        oid;
    const bson_t     *doc;
    mongoc_cursor_t  *cursor;

    op->status = NGX_HTTP_CHAT_MSG_FOUND;

    bson_init(&filter);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &list);

    for (i = 0, n = 0; i < op->nids; i++) {
        if (op->ids[i].len != 24
            || !bson_oid_is_valid((const char *) op->ids[i].data, 24))
        {
            continue;
        }

        bson_oid_init_from_string(&oid, (const char *) op->ids[i].data);
        bson_uint32_to_string(n++, &key, buf, sizeof(buf));
        bson_append_oid(&list, key, -1, &oid);
    }

    bson_append_array_end(&in, &list);
    bson_append_document_end(&filter, &in);

    if (n == 0) {
        bson_destroy(&filter);
        return NGX_OK;
    }

    BSON_APPEND_DOCUMENT_BEGIN(&filter, "room_id", &ne);
    BSON_APPEND_INT32(&ne, "$ne", (int32_t) op->room_id);
    bson_append_document_end(&filter, &ne);

    bson_init(&opts);
    BSON_APPEND_INT64(&opts, "limit", 1);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "_id", 1);
    bson_append_document_end(&opts, &proj);

    cursor = mongoc_collection_find_with_opts(msgs, &filter, &opts, NULL);

    rc = NGX_OK;

    if (mongoc_cursor_next(cursor, &doc)) {
        op->status = NGX_HTTP_CHAT_MSG_FOREIGN;

    } else if (mongoc_cursor_error(cursor, &op->error)) {
        rc = ngx_http_chat_mongo_error(&op->error);
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(&opts);
    bson_destroy(&filter);

    return rc;
}


/* in a pool thread: the records that exist already, whoever wrote them */

static ngx_int_t
ngx_http_chat_msg_read_seen(mongoc_collection_t *reads,
    ngx_http_chat_msg_op_t *op)
{
    char              buf[16];
    bson_t            filter, in, list, opts, proj;
    uint32_t          len;
    ngx_int_t         rc;
    ngx_str_t         s, *found;
    ngx_uint_t        i;
    const char       *key;
    bson_iter_t       it;
    const bson_t     *doc;
    mongoc_cursor_t  *cursor;

    bson_init(&filter);
    BSON_APPEND_INT32(&filter, "user_id", (int32_t) op->user_id);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "message_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &list);

    for (i = 0; i < op->nids; i++) {
        bson_uint32_to_string((uint32_t) i, &key, buf, sizeof(buf));
        bson_append_utf8(&list, key, -1, (const char *) op->ids[i].data,
                         (int) op->ids[i].len);
    }

    bson_append_array_end(&in, &list);
    bson_append_document_end(&filter, &in);

    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "message_id", 1);
    BSON_APPEND_INT32(&proj, "_id", 0);
    bson_append_document_end(&opts, &proj);

    cursor = mongoc_collection_find_with_opts(reads, &filter, &opts, NULL);

    while (mongoc_cursor_next(cursor, &doc)) {
        if (!bson_iter_init_find(&it, doc, "message_id")
            || !BSON_ITER_HOLDS_UTF8(&it))
        {
            continue;
        }

        s.data = (u_char *) bson_iter_utf8(&it, &len);
        s.len = len;

        found = bsearch(&s, op->ids, op->nids, sizeof(ngx_str_t),
                        ngx_http_chat_msg_cmp_str);

        if (found) {
            op->seen[found - op->ids] = 1;
        }
    }

    rc = NGX_OK;

    if (mongoc_cursor_error(cursor, &op->error)) {
        rc = ngx_http_chat_mongo_error(&op->error);
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(&opts);
    bson_destroy(&filter);

    return rc;
}


/*
 * in a pool thread: the new records, unordered; duplicate keys are the
 * records a concurrent call inserted first and are not counted
 */

static ngx_int_t
ngx_http_chat_msg_read_insert(mongoc_collection_t *reads,
    ngx_http_chat_msg_op_t *op)
{
    bool          ok;
    bson_t        opts, reply, **docs;
    size_t        n;
    ngx_int_t     rc;
    ngx_uint_t    i;
    bson_iter_t   it, errs, item;

    docs = bson_malloc0(op->nids * sizeof(bson_t *));

    for (i = 0, n = 0; i < op->nids; i++) {
        if (op->seen[i]) {
            continue;
        }

        docs[n] = bson_new();
        BSON_APPEND_OID(docs[n], "_id", &op->keys[i]);
        bson_append_utf8(docs[n], "message_id", -1,
                         (const char *) op->ids[i].data,
                         (int) op->ids[i].len);
        BSON_APPEND_INT32(docs[n], "user_id", (int32_t) op->user_id);
        BSON_APPEND_INT32(docs[n], "room_id", (int32_t) op->room_id);
        BSON_APPEND_DATE_TIME(docs[n], "read_at", op->now);
        n++;
    }

    rc = NGX_OK;

    if (n == 0) {
        goto done;
    }

    bson_init(&opts);
    BSON_APPEND_BOOL(&opts, "ordered", false);

    ok = mongoc_collection_insert_many(reads, (const bson_t **) docs, n,
                                       &opts, &reply, &op->error);

    if (bson_iter_init_find(&it, &reply, "insertedCount")) {
        op->count = bson_iter_as_int64(&it);
    }

    if (!ok) {
        rc = ngx_http_chat_mongo_error(&op->error);

        if (rc == NGX_ERROR
            && !bson_has_field(&reply, "writeConcernErrors")
            && bson_iter_init_find(&it, &reply, "writeErrors")
            && BSON_ITER_HOLDS_ARRAY(&it)
            && bson_iter_recurse(&it, &errs))
        {
            rc = NGX_OK;

            while (bson_iter_next(&errs)) {
                if (!BSON_ITER_HOLDS_DOCUMENT(&errs)
                    || !bson_iter_recurse(&errs, &item)
                    || !bson_iter_find(&item, "code")
                    || bson_iter_as_int64(&item) != 11000)
                {
                    rc = NGX_ERROR;
                    break;
                }
            }
        }
    }

    bson_destroy(&reply);
    bson_destroy(&opts);

done:

    for (i = 0; i < n; i++) {
        bson_destroy(docs[i]);
    }

    bson_free(docs);

    return rc;
}


static ngx_int_t
ngx_http_chat_msg_read_done(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc)
{
    u_char                    msg[64];
    cJSON                    *json, *fields, *ids;
    ngx_str_t                *given;
    ngx_uint_t                i;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;
    op = mctx->op;

    if (rc != NGX_OK) {
        return ngx_http_chat_msg_mongo_failed(r, op, rc);
    }

    if (op->status == NGX_HTTP_CHAT_MSG_FOREIGN) {
        return ngx_http_chat_send_error(r, NGX_HTTP_BAD_REQUEST,
                                    "INVALID_INPUT",
                                    "All messages must be from the same room",
                                    NULL);
    }

    fields = ngx_http_chat_json_object(r);
    if (fields == NULL
        || ngx_http_chat_json_num(fields, "room_id", op->room_id) == NULL
        || ngx_http_chat_json_num(fields, "user_id", op->user_id) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ids = cJSON_AddArrayToObject(fields, "message_ids");
    if (ids == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    given = mctx->given->elts;

    for (i = 0; i < mctx->given->nelts; i++) {
        if (ngx_http_chat_json_str(ids, NULL, &given[i]) == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_chat_msg_announce(r, op->room_id, "MessagesRead",
                                   "messages_read", fields, NULL)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_sprintf(msg, "%L messages marked as read", op->count) = '\0';

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || cJSON_AddBoolToObject(json, "success", 1) == NULL
        || ngx_http_chat_json_num(json, "read_count", op->count) == NULL
        || cJSON_AddStringToObject(json, "message", (char *) msg) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/* C7 */

ngx_int_t
ngx_http_chat_msg_unread(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_msg_room_path(r, ctx, &ctx->params[0],
                                       ngx_http_chat_msg_unread_room);
}


static ngx_int_t
ngx_http_chat_msg_unread_room(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;

    op = ngx_http_chat_msg_op(r, mctx);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op->rooms = &mctx->room.id;
    op->nrooms = 1;
    op->last = 0;
    op->user_id = ctx->user_id;

    return ngx_http_chat_msg_mongo(r, op, ngx_http_chat_msg_summary_run,
                                   ngx_http_chat_msg_unread_done);
}


static ngx_int_t
ngx_http_chat_msg_unread_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc)
{
    cJSON                    *json;
    bson_iter_t               it;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;

    if (rc != NGX_OK) {
        return ngx_http_chat_msg_mongo_failed(r, mctx->op, rc);
    }

    if (!bson_iter_init(&it, mctx->op->reply)
        || !bson_iter_find_descendant(&it, "0.unread", &it))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || ngx_http_chat_json_num(json, "unread_count", bson_iter_as_int64(&it))
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/* the path's message id; NGX_DECLINED when it cannot name a message */

ngx_int_t
ngx_http_chat_msg_oid(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_msg_op_t **opp)
{
    ngx_str_t                *id;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    id = &ctx->params[0];

    if (id->len != 24 || !bson_oid_is_valid((const char *) id->data, 24)) {
        return NGX_DECLINED;
    }

    mctx = ngx_http_chat_msg_get_ctx(r, ctx);
    if (mctx == NULL) {
        return NGX_ERROR;
    }

    op = ngx_http_chat_msg_op(r, mctx);
    if (op == NULL) {
        return NGX_ERROR;
    }

    bson_oid_init_from_string(&op->oid, (const char *) id->data);

    mctx->now = ngx_http_chat_msg_now();

    op->user_id = ctx->user_id;
    op->now = mctx->now / 1000;

    *opp = op;

    return NGX_OK;
}


/*
 * in a pool thread, for the stream's Last-Event-ID replay: the messages of
 * room op->room_id that come after message op->oid in the room's order
 * (created_at, then _id: documents with and without seq alike), oldest
 * first, at most op->limit, as reply {"0":doc,...}.  With op->released
 * set, messages with a seq above it are left to come live; documents
 * without seq never come live here (another writer stored them) and are
 * replayed whatever their time.  op->status is NOT_FOUND when op->oid
 * names no message of the room.  Deleted messages are left out: a client
 * never needs to see them appear; a deleted one still marks a position.
 */

ngx_int_t
ngx_http_chat_msg_replay_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op)
{
    bson_t                doc, filter, and, clause, or, alt, cmp, opts,
                          sort;
    int64_t               at;
    ngx_int_t             rc;
    ngx_uint_t            n;
    bson_iter_t           it;
    mongoc_collection_t  *msgs;

    msgs = mongoc_database_get_collection(db, "messages");

    bson_init(&doc);

    rc = ngx_http_chat_msg_find(msgs, op, &doc);

    if (rc != NGX_OK || op->status != NGX_HTTP_CHAT_MSG_FOUND) {
        goto done;
    }

    if (!bson_iter_init_find(&it, &doc, "room_id")
        || !BSON_ITER_HOLDS_NUMBER(&it)
        || bson_iter_as_int64(&it) != op->room_id
        || !bson_iter_init_find(&it, &doc, "created_at")
        || !BSON_ITER_HOLDS_DATE_TIME(&it))
    {
        op->status = NGX_HTTP_CHAT_MSG_NOT_FOUND;
        goto done;
    }

    at = bson_iter_date_time(&it);

    /*
     * {room_id, is_deleted: false, $and: [
     *   {$or: [{created_at: {$gt: at}}, {created_at: at, _id: {$gt: oid}}]},
     *   {$or: [{seq: {$exists: false}}, {seq: {$lte: released}}]}]}
     */

    bson_init(&filter);
    BSON_APPEND_INT32(&filter, "room_id", (int32_t) op->room_id);
    BSON_APPEND_BOOL(&filter, "is_deleted", false);
    BSON_APPEND_ARRAY_BEGIN(&filter, "$and", &and);

    BSON_APPEND_DOCUMENT_BEGIN(&and, "0", &clause);
    BSON_APPEND_ARRAY_BEGIN(&clause, "$or", &or);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &alt);
    BSON_APPEND_DOCUMENT_BEGIN(&alt, "created_at", &cmp);
    BSON_APPEND_DATE_TIME(&cmp, "$gt", at);
    bson_append_document_end(&alt, &cmp);
    bson_append_document_end(&or, &alt);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &alt);
    BSON_APPEND_DATE_TIME(&alt, "created_at", at);
    BSON_APPEND_DOCUMENT_BEGIN(&alt, "_id", &cmp);
    BSON_APPEND_OID(&cmp, "$gt", &op->oid);
    bson_append_document_end(&alt, &cmp);
    bson_append_document_end(&or, &alt);
    bson_append_array_end(&clause, &or);
    bson_append_document_end(&and, &clause);

    if (op->released) {
        BSON_APPEND_DOCUMENT_BEGIN(&and, "1", &clause);
        BSON_APPEND_ARRAY_BEGIN(&clause, "$or", &or);
        BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &alt);
        BSON_APPEND_DOCUMENT_BEGIN(&alt, "seq", &cmp);
        BSON_APPEND_BOOL(&cmp, "$exists", false);
        bson_append_document_end(&alt, &cmp);
        bson_append_document_end(&or, &alt);
        BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &alt);
        BSON_APPEND_DOCUMENT_BEGIN(&alt, "seq", &cmp);
        BSON_APPEND_INT64(&cmp, "$lte", op->released);
        bson_append_document_end(&alt, &cmp);
        bson_append_document_end(&or, &alt);
        bson_append_array_end(&clause, &or);
        bson_append_document_end(&and, &clause);
    }

    bson_append_array_end(&filter, &and);

    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "created_at", 1);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", op->limit);

    rc = ngx_http_chat_msg_collect(msgs, &filter, &opts, op, &n);
    op->count = n;
    bson_destroy(&opts);
    bson_destroy(&filter);

done:

    bson_destroy(&doc);
    mongoc_collection_destroy(msgs);

    return rc;
}


/* C8: schema first, then what the stored message allows */

ngx_int_t
ngx_http_chat_msg_edit(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                   *errors;
    ngx_int_t                rc;
    ngx_str_t                content;
    ngx_http_chat_msg_op_t  *op;

    errors = NULL;

    if (ngx_http_chat_body_string(r, &errors, ctx->json, "content", 1, 1,
                                  NGX_HTTP_CHAT_MSG_CONTENT_MAX, &content)
        == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    rc = ngx_http_chat_msg_oid(r, ctx, &op);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_chat_msg_send_not_found(r, "Message");
    }

    op->content = content;
    op->blank = ngx_http_chat_msg_blank(&content);

    return ngx_http_chat_msg_mongo(r, op, ngx_http_chat_msg_edit_run,
                                   ngx_http_chat_msg_edit_done);
}


/*
 * in a pool thread.  The update is conditional on the content it replaces,
 * so of two edits at the same moment each keeps what the other wrote as
 * its "before", and original_content stays the text before the first edit.
 */

static ngx_int_t
ngx_http_chat_msg_edit_run(mongoc_database_t *db, ngx_http_chat_msg_op_t *op)
{
    bson_t                doc, filter, update, set, reply;
    ngx_int_t             rc;
    ngx_uint_t            tries;
    bson_iter_t           it, orig;
    mongoc_collection_t  *msgs;

    msgs = mongoc_database_get_collection(db, "messages");

    rc = NGX_OK;

    for (tries = 0; tries < NGX_HTTP_CHAT_MSG_EDIT_TRIES; tries++) {

        bson_init(&doc);

        rc = ngx_http_chat_msg_find(msgs, op, &doc);

        if (rc != NGX_OK || op->status != NGX_HTTP_CHAT_MSG_FOUND) {
            bson_destroy(&doc);
            break;
        }

        if (!bson_iter_init_find(&it, &doc, "user_id")
            || !BSON_ITER_HOLDS_NUMBER(&it)
            || bson_iter_as_int64(&it) != op->user_id)
        {
            op->status = NGX_HTTP_CHAT_MSG_FORBIDDEN;

        } else if (bson_iter_init_find(&it, &doc, "is_deleted")
                   && bson_iter_as_bool(&it))
        {
            op->status = NGX_HTTP_CHAT_MSG_DELETED;

        } else if (op->blank) {
            op->status = NGX_HTTP_CHAT_MSG_BLANK;
        }

        if (op->status != NGX_HTTP_CHAT_MSG_FOUND) {
            bson_destroy(&doc);
            break;
        }

        bson_init(&filter);
        BSON_APPEND_OID(&filter, "_id", &op->oid);
        BSON_APPEND_BOOL(&filter, "is_deleted", false);

        bson_init(&update);
        BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
        bson_append_utf8(&set, "content", -1, (const char *) op->content.data,
                         (int) op->content.len);
        BSON_APPEND_BOOL(&set, "is_edited", true);
        BSON_APPEND_DATE_TIME(&set, "edited_at", op->now);
        BSON_APPEND_DATE_TIME(&set, "updated_at", op->now);

        if (bson_iter_init_find(&it, &doc, "content")) {
            BSON_APPEND_VALUE(&filter, "content", bson_iter_value(&it));

            if (!bson_iter_init_find(&orig, &doc, "original_content")
                || !BSON_ITER_HOLDS_UTF8(&orig))
            {
                BSON_APPEND_VALUE(&set, "original_content",
                                  bson_iter_value(&it));
            }
        }

        bson_append_document_end(&update, &set);

        if (!mongoc_collection_update_one(msgs, &filter, &update, NULL,
                                          &reply, &op->error))
        {
            rc = ngx_http_chat_mongo_error(&op->error);

        } else if (bson_iter_init_find(&it, &reply, "matchedCount")
                   && bson_iter_as_int64(&it) == 1)
        {
            BSON_APPEND_DOCUMENT(op->reply, "doc", &doc);
            op->count = 1;
        }

        bson_destroy(&reply);
        bson_destroy(&update);
        bson_destroy(&filter);
        bson_destroy(&doc);

        if (rc != NGX_OK || op->count) {
            break;
        }
    }

    if (rc == NGX_OK && op->status == NGX_HTTP_CHAT_MSG_FOUND
        && op->count == 0)
    {
        bson_set_error(&op->error, 0, 0, "edit of a message kept racing");
        rc = NGX_ERROR;
    }

    mongoc_collection_destroy(msgs);

    return rc;
}


static ngx_int_t
ngx_http_chat_msg_edit_done(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc)
{
    cJSON                    *data;
    ngx_str_t                 now;
    ngx_http_chat_msg_t      *m;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    rc = ngx_http_chat_msg_changed(r, ctx, rc, 1);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    mctx = ctx->data;
    op = mctx->op;
    m = &mctx->msg;

    m->content = op->content;
    m->is_edited = 1;
    m->edited_at = mctx->now;
    m->updated_at = mctx->now;

    /* [DESIGN] of API.md C8: the original sends nothing here */

    data = ngx_http_chat_json_object(r);

    if (data == NULL
        || ngx_http_chat_json_str(data, "message_id", &m->id) == NULL
        || ngx_http_chat_json_num(data, "room_id", m->room_id) == NULL
        || ngx_http_chat_json_str(data, "content", &m->content) == NULL
        || ngx_http_chat_msg_json_time(data, "edited_at", m->edited_at)
           == NULL
        || ngx_http_chat_iso_now(r->pool, &now) != NGX_OK
        || ngx_http_chat_json_str(data, "timestamp", &now) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    (void) ngx_http_chat_msg_publish(r, m->room_id, "message_updated", NULL,
                                     data);

    return ngx_http_chat_send_json(r, NGX_HTTP_OK,
                                   ngx_http_chat_msg_json(r, NULL, m));
}


/* C9 */

ngx_int_t
ngx_http_chat_msg_delete(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_http_chat_msg_op_t  *op;

    rc = ngx_http_chat_msg_oid(r, ctx, &op);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_chat_msg_send_not_found(r, "Message");
    }

    return ngx_http_chat_msg_mongo(r, op, ngx_http_chat_msg_delete_run,
                                   ngx_http_chat_msg_delete_done);
}


/* in a pool thread: of two deletes at the same moment, one wins */

static ngx_int_t
ngx_http_chat_msg_delete_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op)
{
    bson_t                doc, filter, update, set, reply;
    ngx_int_t             rc;
    bson_iter_t           it;
    mongoc_collection_t  *msgs;

    msgs = mongoc_database_get_collection(db, "messages");

    bson_init(&doc);

    rc = ngx_http_chat_msg_find(msgs, op, &doc);

    if (rc != NGX_OK || op->status != NGX_HTTP_CHAT_MSG_FOUND) {
        goto done;
    }

    if (!bson_iter_init_find(&it, &doc, "user_id")
        || !BSON_ITER_HOLDS_NUMBER(&it)
        || bson_iter_as_int64(&it) != op->user_id)
    {
        op->status = NGX_HTTP_CHAT_MSG_FORBIDDEN;
        goto done;
    }

    if (bson_iter_init_find(&it, &doc, "is_deleted")
        && bson_iter_as_bool(&it))
    {
        op->status = NGX_HTTP_CHAT_MSG_DELETED;
        goto done;
    }

    bson_init(&filter);
    BSON_APPEND_OID(&filter, "_id", &op->oid);
    BSON_APPEND_BOOL(&filter, "is_deleted", false);

    bson_init(&update);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
    BSON_APPEND_BOOL(&set, "is_deleted", true);
    BSON_APPEND_DATE_TIME(&set, "deleted_at", op->now);
    BSON_APPEND_INT32(&set, "deleted_by", (int32_t) op->user_id);
    BSON_APPEND_DATE_TIME(&set, "updated_at", op->now);
    bson_append_document_end(&update, &set);

    if (!mongoc_collection_update_one(msgs, &filter, &update, NULL, &reply,
                                      &op->error))
    {
        rc = ngx_http_chat_mongo_error(&op->error);

    } else if (bson_iter_init_find(&it, &reply, "matchedCount")
               && bson_iter_as_int64(&it) == 1)
    {
        BSON_APPEND_DOCUMENT(op->reply, "doc", &doc);

    } else {
        op->status = NGX_HTTP_CHAT_MSG_DELETED;
    }

    bson_destroy(&reply);
    bson_destroy(&update);
    bson_destroy(&filter);

done:

    bson_destroy(&doc);
    mongoc_collection_destroy(msgs);

    return rc;
}


static ngx_int_t
ngx_http_chat_msg_delete_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc)
{
    cJSON                    *fields;
    ngx_http_chat_msg_t      *m;
    ngx_http_chat_msg_ctx_t  *mctx;

    rc = ngx_http_chat_msg_changed(r, ctx, rc, 0);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    mctx = ctx->data;
    m = &mctx->msg;

    fields = ngx_http_chat_json_object(r);

    if (fields == NULL
        || ngx_http_chat_json_str(fields, "message_id", &m->id) == NULL
        || ngx_http_chat_json_num(fields, "room_id", m->room_id) == NULL
        || ngx_http_chat_json_num(fields, "deleted_by", ctx->user_id) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_chat_msg_announce(r, m->room_id, "MessageDeleted",
                                   "message_deleted", fields, NULL)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_message(r, "Message deleted", NULL, 0);
}


/*
 * what C8 and C9 share after their MongoDB step: the errors of API.md in
 * the contract's order, answered here, or NGX_DECLINED with the message
 * in mctx->msg and nothing sent yet
 */

static ngx_int_t
ngx_http_chat_msg_changed(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc, ngx_uint_t edit)
{
    bson_t                    doc;
    uint32_t                  len;
    bson_iter_t               it;
    const uint8_t            *data;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;
    op = mctx->op;

    if (rc != NGX_OK) {
        return ngx_http_chat_msg_mongo_failed(r, op, rc);
    }

    switch (op->status) {

    case NGX_HTTP_CHAT_MSG_NOT_FOUND:
        return ngx_http_chat_msg_send_not_found(r, "Message");

    case NGX_HTTP_CHAT_MSG_FORBIDDEN:
        return ngx_http_chat_send_error(r, NGX_HTTP_FORBIDDEN,
                                        "authorization_error",
                                        edit
                                        ? "You can only edit your own messages"
                                        : "You can only delete your own "
                                          "messages",
                                        NULL);

    case NGX_HTTP_CHAT_MSG_DELETED:
        return ngx_http_chat_send_error(r, NGX_HTTP_BAD_REQUEST,
                                        "MESSAGE_ALREADY_DELETED",
                                        edit
                                        ? "Cannot edit a deleted message"
                                        : "Message is already deleted",
                                        NULL);

    case NGX_HTTP_CHAT_MSG_BLANK:
        return ngx_http_chat_send_error(r, NGX_HTTP_BAD_REQUEST,
                                        "INVALID_INPUT",
                                        "Message content cannot be empty",
                                        NULL);
    }

    if (!bson_iter_init_find(&it, op->reply, "doc")
        || !BSON_ITER_HOLDS_DOCUMENT(&it))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    bson_iter_document(&it, &len, &data);

    if (!bson_init_static(&doc, data, len)
        || ngx_http_chat_msg_parse(r, &doc, &mctx->msg) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DECLINED;
}
