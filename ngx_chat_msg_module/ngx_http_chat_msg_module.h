
/*
 * nginx-chat chat service (API.md 5): direct chat rooms in MariaDB,
 * messages, read records and reactions in MongoDB, events to Redis
 * Streams and frames to the rooms' event streams.
 *
 * Ordering.  A room's messages are ordered by created_at, then _id, in
 * pages, last_message and the stream's Last-Event-ID replay, so that
 * documents another writer (the original service) stored, which have no
 * seq, take their place by time among ours.  Our documents also carry
 * "seq" (int64): one Redis script hands out seq and created_at together
 * ("chat:room:<room_id>:seq" and "...:clock"), created_at being the Redis
 * clock in milliseconds but at least one more than the room's previous
 * one, so both strictly increase in the order the sends of a room were
 * accepted, across workers and nodes, and never disagree.  seq is never
 * below the Redis clock in microseconds: if Redis loses the key, new
 * messages still sort after the old ones, so seq is not dense.
 *
 * Live frames follow seq too, so that a Last-Event-ID is a watermark: a
 * stream that resumes after message n has seen everything before n and
 * nothing after it.  With two sends in flight the insert of n+1 may end
 * before that of n; so every number handed out stays "in flight" (the
 * room's set "chat:room:<id>:flight") until its send announces its frame
 * or gives up, and Redis publishes a frame only when no smaller number is
 * in flight (the set "...:ready" holds the others meanwhile).  The seq of
 * the last frame published is "...:released": a replay leaves our
 * messages above it to come live.  A number whose sender died is given up
 * after NGX_HTTP_CHAT_MSG_STALE seconds.
 *
 * The stream's event id is the message's _id, whoever wrote it: the
 * replay finds that message and continues after its (created_at, _id),
 * which works for documents with and without seq, and the id is the
 * "id" of the frame's data, as clients of the original already know it.
 *
 * Uniqueness.  A read record's _id is derived from (message id, user), a
 * reaction's from (message id, user, emoji): MongoDB enforces _id in every
 * deployment, so records are never doubled, whatever indexes exist.
 */


#ifndef _NGX_HTTP_CHAT_MSG_MODULE_H_INCLUDED_
#define _NGX_HTTP_CHAT_MSG_MODULE_H_INCLUDED_


#include <ngx_http_chat_core_module.h>


#define NGX_HTTP_CHAT_MSG_CONTENT_MAX   300
#define NGX_HTTP_CHAT_MSG_EMOJI_MAX     32

/* a room with its members' names: 7 columns, then a WHERE clause */
#define NGX_HTTP_CHAT_MSG_ROOMS                                              \
    NGX_HTTP_CHAT_MSG_ROOM_COLUMNS " " NGX_HTTP_CHAT_MSG_ROOM_FROM

#define NGX_HTTP_CHAT_MSG_ROOM_COLUMNS                                       \
    "SELECT r.id, r.user_1_id, r.user_2_id, r.created_at, r.updated_at, "    \
    "u1.username, u2.username"

#define NGX_HTTP_CHAT_MSG_ROOM_FROM                                          \
    "FROM chat_rooms r "                                                     \
    "LEFT JOIN users u1 ON u1.id = r.user_1_id "                             \
    "LEFT JOIN users u2 ON u2.id = r.user_2_id "

#define NGX_HTTP_CHAT_MSG_ROOM_NCOLS    7

/*
 * The same with an 8th column, whether the members are blocked either way
 * (API.md 12, F9), for what a block refuses: ngx_http_chat_msg_room_verdict()
 * answers a blocked pair's member 403
 */
#define NGX_HTTP_CHAT_MSG_ROOMS_BLOCKED                                      \
    NGX_HTTP_CHAT_MSG_ROOM_COLUMNS ", "                                      \
    NGX_HTTP_CHAT_SQL_BLOCKED("r.user_1_id", "r.user_2_id") " "              \
    NGX_HTTP_CHAT_MSG_ROOM_FROM

/* a date that is null */
#define NGX_HTTP_CHAT_MSG_NO_TIME       -1

/* what a MongoDB step found (ngx_http_chat_msg_op_t.status) */
#define NGX_HTTP_CHAT_MSG_FOUND         0
#define NGX_HTTP_CHAT_MSG_NOT_FOUND     1
#define NGX_HTTP_CHAT_MSG_FORBIDDEN     2
#define NGX_HTTP_CHAT_MSG_DELETED       3
#define NGX_HTTP_CHAT_MSG_BLANK         4
#define NGX_HTTP_CHAT_MSG_FOREIGN       5
#define NGX_HTTP_CHAT_MSG_EXISTED       6


/*
 * A room with its members' usernames (ngx_http_chat_msg_room_check()).
 * Times are MariaDB DATETIME cells, "YYYY-MM-DD HH:MM:SS"; a name's data is
 * NULL when the user has no row (ngx_http_chat_msg_username() then gives
 * "Unknown").
 */

typedef struct {
    int64_t                     id;
    int64_t                     user_1_id;
    int64_t                     user_2_id;
    ngx_str_t                   created_at;
    ngx_str_t                   updated_at;
    ngx_str_t                   user_1_name;
    ngx_str_t                   user_2_name;
} ngx_http_chat_msg_room_t;


/* a "messages" document; times in microseconds since the epoch */

typedef struct {
    ngx_str_t                   id;             /* 24 lowercase hex digits */
    int64_t                     user_id;
    int64_t                     room_id;
    ngx_str_t                   content;
    ngx_str_t                   message_type;
    int64_t                     seq;            /* 0: none */
    int64_t                     deleted_by;     /* 0: none */
    int64_t                     created_at;
    int64_t                     updated_at;
    int64_t                     deleted_at;     /* or NO_TIME */
    int64_t                     edited_at;      /* or NO_TIME */
    unsigned                    is_deleted:1;
    unsigned                    is_edited:1;
} ngx_http_chat_msg_t;


/*
 * The data of one MongoDB step.  It is allocated from the request pool
 * before the task is posted, so the pool thread only reads the inputs and
 * writes the outputs; "reply" is the library's own memory (documents the
 * thread found), destroyed with the request pool.
 */

typedef struct ngx_http_chat_msg_op_s  ngx_http_chat_msg_op_t;

typedef ngx_int_t (*ngx_http_chat_msg_run_pt)(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op);

struct ngx_http_chat_msg_op_s {
    ngx_http_chat_msg_run_pt    run;

    int64_t                     user_id;        /* the caller */
    int64_t                     room_id;
    int64_t                     now;            /* ms since the epoch */

    bson_oid_t                  oid;            /* the message */
    bson_oid_t                  key;            /* a record's own _id */

    int64_t                     skip;
    int64_t                     limit;
    int64_t                     seq;
    int64_t                     released;       /* replay: 0, no bound */

    ngx_str_t                   content;
    ngx_str_t                   message_type;
    ngx_str_t                   emoji;

    int64_t                    *rooms;          /* room summaries */
    ngx_uint_t                  nrooms;
    ngx_uint_t                  last;           /* with the last message */

    ngx_str_t                  *ids;            /* C6: sorted, unique */
    bson_oid_t                 *keys;           /* their records' _ids */
    u_char                     *seen;           /* already recorded */
    ngx_uint_t                  nids;

    unsigned                    blank:1;
    unsigned                    remove:1;
    unsigned                    deleted:1;
    unsigned                    announced:1;    /* C4: seq settled */

    /* results */
    bson_t                     *reply;
    ngx_uint_t                  status;
    int64_t                     count;
    bson_error_t                error;
};


/*
 * Per-request state of the chat service, ctx->data of the core's context.
 * "room" is valid once ngx_http_chat_msg_room_check() has called next();
 * "stream" is left to ngx_http_chat_msg_stream.c.
 */

typedef struct {
    ngx_http_chat_msg_room_t    room;
    ngx_http_chat_op_t         *room_op;        /* C4: the room's query */

    ngx_http_chat_msg_op_t     *op;
    ngx_http_chat_msg_t         msg;

    ngx_http_chat_msg_room_t   *rooms;          /* C1 */
    ngx_uint_t                  nrooms;

    int64_t                     room_id;
    int64_t                     now;            /* us since the epoch */
    ngx_array_t                *given;          /* C6: ids as given */

    void                       *stream;
} ngx_http_chat_msg_ctx_t;


extern ngx_module_t  ngx_http_chat_msg_module;


/* shared by the endpoints and the stream (ngx_http_chat_msg_module.c) */

ngx_http_chat_msg_ctx_t *ngx_http_chat_msg_get_ctx(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);

/*
 * The room checks of API.md 5: loads room room_id with its members' names,
 * answers 404 "Chat room not found", 403 "Access denied to this chat
 * room" or 503 itself, else stores it in ngx_http_chat_msg_get_ctx()->room
 * and returns next(r, ctx).  Returns what the request is finalized with.
 */
ngx_int_t ngx_http_chat_msg_room_check(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, int64_t room_id,
    ngx_http_chat_handler_pt next);
/* the same, and 403 "Cannot chat with this user" for a blocked pair */
ngx_int_t ngx_http_chat_msg_room_check_open(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, int64_t room_id,
    ngx_http_chat_handler_pt next);

/* the room checks on a result of NGX_HTTP_CHAT_MSG_ROOMS "WHERE r.id = ?":
 * NGX_OK, the room stored as above, or NGX_DONE when answered, *rc what
 * the request is finalized with */
ngx_int_t ngx_http_chat_msg_room_verdict(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res, ngx_int_t *rc);

ngx_int_t ngx_http_chat_msg_room_row(ngx_str_t *cells,
    ngx_http_chat_msg_room_t *room);

/* a path parameter "room_id": 422 E-C if not an integer, 422 E-B' if not
 * positive, then ngx_http_chat_msg_room_check() */
ngx_int_t ngx_http_chat_msg_room_path(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_str_t *param,
    ngx_http_chat_handler_pt next);

/* the member's username, "Unknown" without a users row */
ngx_str_t *ngx_http_chat_msg_username(ngx_http_chat_msg_room_t *room,
    int64_t user_id);

/* "chat:room:<room_id>", the pub/sub channel of the room's streams */
ngx_int_t ngx_http_chat_msg_channel(ngx_pool_t *pool, int64_t room_id,
    ngx_str_t *channel);

/* a frame to every open stream of the room; id may be NULL */
ngx_int_t ngx_http_chat_msg_publish(ngx_http_request_t *r, int64_t room_id,
    const char *event, ngx_str_t *id, cJSON *data);

/* an action's event on message.events and its frame to the room */
ngx_int_t ngx_http_chat_msg_announce(ngx_http_request_t *r, int64_t room_id,
    const char *type, const char *event, cJSON *fields, const char *action);

/* a "messages" document read back on the event loop */
ngx_int_t ngx_http_chat_msg_parse(ngx_http_request_t *r, const bson_t *doc,
    ngx_http_chat_msg_t *m);

/* MessageResponse (API.md 2.8); added to parent when it is an array */
cJSON *ngx_http_chat_msg_json(ngx_http_request_t *r, cJSON *parent,
    ngx_http_chat_msg_t *m);

/*
 * The data of the stream event "new_message" (API.md 5 C10): created_at is
 * the event's time when given, else the message's; the username is the
 * author's, from the room
 */
cJSON *ngx_http_chat_msg_new_message(ngx_http_request_t *r,
    ngx_http_chat_msg_t *m, ngx_str_t *username, ngx_str_t *created_at);

cJSON *ngx_http_chat_msg_json_time(cJSON *obj, const char *name,
    int64_t us);
int64_t ngx_http_chat_msg_now(void);
ngx_uint_t ngx_http_chat_msg_blank(ngx_str_t *s);
ngx_uint_t ngx_http_chat_msg_space(ngx_str_t *s);

/* a MongoDB step (in the chat_mongo thread pool) */
ngx_http_chat_msg_op_t *ngx_http_chat_msg_op(ngx_http_request_t *r,
    ngx_http_chat_msg_ctx_t *mctx);
ngx_int_t ngx_http_chat_msg_mongo(ngx_http_request_t *r,
    ngx_http_chat_msg_op_t *op, ngx_http_chat_msg_run_pt run,
    ngx_http_chat_thread_done_pt done);
ngx_int_t ngx_http_chat_msg_mongo_failed(ngx_http_request_t *r,
    ngx_http_chat_msg_op_t *op, ngx_int_t rc);
ngx_int_t ngx_http_chat_msg_sql_failed(ngx_http_request_t *r,
    ngx_http_chat_sql_res_t *res);
ngx_int_t ngx_http_chat_msg_send_not_found(ngx_http_request_t *r,
    const char *resource);
/* 403 E-B "Cannot chat with this user": a block between the two (F9) */
ngx_int_t ngx_http_chat_msg_send_blocked(ngx_http_request_t *r);

/* the message id of the path into a new step's op->oid; NGX_DECLINED if
 * it is no ObjectId (the contract's 404 "Message not found") */
ngx_int_t ngx_http_chat_msg_oid(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_msg_op_t **opp);

/* in a pool thread: a find's documents into op->reply, "0", "1", ... */
ngx_int_t ngx_http_chat_msg_collect(mongoc_collection_t *coll,
    const bson_t *filter, const bson_t *opts, ngx_http_chat_msg_op_t *op,
    ngx_uint_t *n);

/* in a pool thread: the message op->oid, its status and the document */
ngx_int_t ngx_http_chat_msg_find(mongoc_collection_t *coll,
    ngx_http_chat_msg_op_t *op, bson_t *doc);


/* rooms (ngx_http_chat_msg_rooms.c) */

ngx_int_t ngx_http_chat_msg_rooms(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_msg_room_get_or_create(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_msg_room(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);

/* in a pool thread: per room of op->rooms, the unread count and, with
 * op->last, the newest message, as reply {"<i>":{"unread","last"}} */
ngx_int_t ngx_http_chat_msg_summary_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op);


/* messages (ngx_http_chat_msg_messages.c) */

ngx_int_t ngx_http_chat_msg_send(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_msg_page(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_msg_read(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_msg_unread(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_msg_edit(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_msg_delete(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);


/*
 * in a pool thread, for the stream's Last-Event-ID replay: set op->oid (the
 * last id the client saw), op->room_id and op->limit; the reply holds the
 * messages after it by (created_at, _id), {"0":doc,...} (read them
 * with ngx_http_chat_msg_parse()), op->count of them; op->status is
 * NGX_HTTP_CHAT_MSG_NOT_FOUND when the id names no message of the room
 */
ngx_int_t ngx_http_chat_msg_replay_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op);


/* reactions (ngx_http_chat_msg_reactions.c) */

ngx_int_t ngx_http_chat_msg_reactions(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_msg_react(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_msg_unreact(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);


/* typing indicators, C13 (ngx_http_chat_msg_typing.c) */

ngx_int_t ngx_http_chat_msg_typing(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);


/* the room's event stream, C10 (ngx_http_chat_msg_stream.c) */

ngx_int_t ngx_http_chat_msg_stream(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);


#endif /* _NGX_HTTP_CHAT_MSG_MODULE_H_INCLUDED_ */
