
/*
 * /api/chat-rooms: the caller's rooms (C1), get or create the room of a
 * pair (C2), one room (C3).  Rooms live in MariaDB; each one's last
 * message and unread count come from MongoDB, so these endpoints answer
 * 503 while MongoDB is down, after their own 4xx checks.
 */


#include "ngx_http_chat_msg_module.h"


static ngx_int_t ngx_http_chat_msg_rooms_loaded(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_msg_rooms_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_msg_participant(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_msg_room_upserted(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_msg_room_found(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_msg_room_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_msg_summary_post(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_msg_room_t *rooms,
    ngx_uint_t n, ngx_http_chat_thread_done_pt done);
static ngx_int_t ngx_http_chat_msg_summary_get(ngx_http_request_t *r,
    ngx_http_chat_msg_op_t *op, ngx_uint_t i, ngx_http_chat_msg_t **last,
    int64_t *unread);
static cJSON *ngx_http_chat_msg_room_json(ngx_http_request_t *r,
    cJSON *parent, ngx_http_chat_msg_room_t *room, int64_t caller,
    ngx_http_chat_msg_t *last, int64_t unread);
static ngx_int_t ngx_http_chat_msg_last_run(mongoc_collection_t *msgs,
    int64_t room_id, bson_t *item, bson_error_t *error);
static ngx_int_t ngx_http_chat_msg_unread_run(mongoc_collection_t *msgs,
    mongoc_collection_t *reads, int64_t room_id, int64_t user_id,
    int64_t *unread, bson_error_t *error);


/* C1: newest activity first; the id breaks ties of the same second */

ngx_int_t
ngx_http_chat_msg_rooms(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                    *errors;
    int64_t                   skip, limit;
    ngx_http_chat_sql_arg_t   args[4];

    errors = NULL;

    if (ngx_http_chat_query_int(r, &errors, "skip", 0, 0, INT64_MAX, &skip)
        == NGX_ERROR
        || ngx_http_chat_query_int(r, &errors, "limit", 10, 1, 100, &limit)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (ngx_http_chat_msg_get_ctx(r, ctx) == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[0].type = NGX_HTTP_CHAT_SQL_INT;
    args[0].num = ctx->user_id;
    args[1].type = NGX_HTTP_CHAT_SQL_INT;
    args[1].num = ctx->user_id;
    args[2].type = NGX_HTTP_CHAT_SQL_INT;
    args[2].num = limit;
    args[3].type = NGX_HTTP_CHAT_SQL_INT;
    args[3].num = skip;

    return ngx_http_chat_sql(r, NGX_HTTP_CHAT_MSG_ROOMS
                             "WHERE r.user_1_id = ? OR r.user_2_id = ? "
                             "ORDER BY r.updated_at DESC, r.id DESC "
                             "LIMIT ? OFFSET ?",
                             args, 4, ngx_http_chat_msg_rooms_loaded);
}


static ngx_int_t
ngx_http_chat_msg_rooms_loaded(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON                    *json;
    ngx_uint_t                i;
    ngx_http_chat_msg_ctx_t  *mctx;

    if (res->rc != NGX_OK
        || (res->nrows && res->ncols != NGX_HTTP_CHAT_MSG_ROOM_NCOLS))
    {
        return ngx_http_chat_msg_sql_failed(r, res);
    }

    if (res->nrows == 0) {
        json = ngx_http_chat_json_array(r);
        return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
    }

    mctx = ctx->data;

    mctx->rooms = ngx_palloc(r->pool,
                             res->nrows * sizeof(ngx_http_chat_msg_room_t));
    if (mctx->rooms == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < res->nrows; i++) {
        if (ngx_http_chat_msg_room_row(&res->cells[i * res->ncols],
                                       &mctx->rooms[i])
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    mctx->nrooms = res->nrows;

    return ngx_http_chat_msg_summary_post(r, ctx, mctx->rooms, mctx->nrooms,
                                          ngx_http_chat_msg_rooms_done);
}


static ngx_int_t
ngx_http_chat_msg_rooms_done(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc)
{
    cJSON                    *json;
    int64_t                   unread;
    ngx_uint_t                i;
    ngx_http_chat_msg_t      *last;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;

    if (rc != NGX_OK) {
        return ngx_http_chat_msg_mongo_failed(r, mctx->op, rc);
    }

    json = ngx_http_chat_json_array(r);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < mctx->nrooms; i++) {
        if (ngx_http_chat_msg_summary_get(r, mctx->op, i, &last, &unread)
            != NGX_OK
            || ngx_http_chat_msg_room_json(r, json, &mctx->rooms[i],
                                           ctx->user_id, last, unread)
               == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/*
 * C2: one room per pair even when both members ask at the same moment:
 * the unique key (user_1_id, user_2_id) turns the second INSERT into an
 * update of updated_at, and LAST_INSERT_ID(id) gives the room's id either
 * way.
 */

ngx_int_t
ngx_http_chat_msg_room_get_or_create(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    cJSON                    *errors;
    int64_t                   id;
    ngx_http_chat_sql_arg_t   args[5];
    ngx_http_chat_msg_ctx_t  *mctx;

    errors = NULL;

    if (ngx_http_chat_check_int(r, &errors, "path", "participant_id",
                                &ctx->params[0], INT64_MIN, INT64_MAX, &id)
        == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (id <= 0) {
        return ngx_http_chat_send_not_positive(r, "participant_id", id);
    }

    if (id == ctx->user_id) {
        return ngx_http_chat_send_error(r, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                "CANNOT_CHAT_SELF",
                                "Cannot create chat room with yourself",
                                NULL);
    }

    mctx = ngx_http_chat_msg_get_ctx(r, ctx);
    if (mctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    mctx->room_id = id;

    /* the participant exists, and neither of the two blocks the other */

    args[0].type = NGX_HTTP_CHAT_SQL_INT;
    args[0].num = id;
    args[1].type = NGX_HTTP_CHAT_SQL_INT;
    args[1].num = ctx->user_id;
    args[2] = args[0];
    args[3] = args[0];
    args[4] = args[1];

    return ngx_http_chat_sql(r, "SELECT (SELECT COUNT(*) FROM users "
                             "WHERE id = ?), "
                             NGX_HTTP_CHAT_SQL_BLOCKED("?", "?"),
                             args, 5, ngx_http_chat_msg_participant);
}


static ngx_int_t
ngx_http_chat_msg_participant(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res)
{
    int64_t                   other;
    ngx_http_chat_sql_arg_t   args[2];
    ngx_http_chat_msg_ctx_t  *mctx;

    if (res->rc != NGX_OK || res->nrows != 1 || res->ncols != 2
        || res->cells[0].len == 0 || res->cells[1].len == 0)
    {
        return ngx_http_chat_msg_sql_failed(r, res);
    }

    if (res->cells[0].data[0] == '0') {
        return ngx_http_chat_msg_send_not_found(r, "User");
    }

    if (res->cells[1].data[0] != '0') {
        return ngx_http_chat_msg_send_blocked(r);
    }

    mctx = ctx->data;
    other = mctx->room_id;

    args[0].type = NGX_HTTP_CHAT_SQL_INT;
    args[0].num = ngx_min(other, (int64_t) ctx->user_id);
    args[1].type = NGX_HTTP_CHAT_SQL_INT;
    args[1].num = ngx_max(other, (int64_t) ctx->user_id);

    return ngx_http_chat_sql(r, "INSERT INTO chat_rooms (user_1_id, "
                             "user_2_id, created_at, updated_at) VALUES "
                             "(?, ?, UTC_TIMESTAMP(), UTC_TIMESTAMP()) "
                             "ON DUPLICATE KEY UPDATE "
                             "id = LAST_INSERT_ID(id), "
                             "updated_at = UTC_TIMESTAMP()",
                             args, 2, ngx_http_chat_msg_room_upserted);
}


static ngx_int_t
ngx_http_chat_msg_room_upserted(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    if (res->rc != NGX_OK || res->insert_id == 0) {
        return ngx_http_chat_msg_sql_failed(r, res);
    }

    return ngx_http_chat_msg_room_check(r, ctx, (int64_t) res->insert_id,
                                        ngx_http_chat_msg_room_found);
}


/* C3 */

ngx_int_t
ngx_http_chat_msg_room(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_msg_room_path(r, ctx, &ctx->params[0],
                                       ngx_http_chat_msg_room_found);
}


static ngx_int_t
ngx_http_chat_msg_room_found(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;

    return ngx_http_chat_msg_summary_post(r, ctx, &mctx->room, 1,
                                          ngx_http_chat_msg_room_done);
}


static ngx_int_t
ngx_http_chat_msg_room_done(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc)
{
    int64_t                   unread;
    ngx_http_chat_msg_t      *last;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;

    if (rc != NGX_OK) {
        return ngx_http_chat_msg_mongo_failed(r, mctx->op, rc);
    }

    if (ngx_http_chat_msg_summary_get(r, mctx->op, 0, &last, &unread)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK,
                       ngx_http_chat_msg_room_json(r, NULL, &mctx->room,
                                                   ctx->user_id, last,
                                                   unread));
}


static ngx_int_t
ngx_http_chat_msg_summary_post(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_msg_room_t *rooms, ngx_uint_t n,
    ngx_http_chat_thread_done_pt done)
{
    ngx_uint_t               i;
    ngx_http_chat_msg_op_t  *op;

    op = ngx_http_chat_msg_op(r, ctx->data);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op->rooms = ngx_palloc(r->pool, n * sizeof(int64_t));
    if (op->rooms == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        op->rooms[i] = rooms[i].id;
    }

    op->nrooms = n;
    op->last = 1;
    op->user_id = ctx->user_id;

    return ngx_http_chat_msg_mongo(r, op, ngx_http_chat_msg_summary_run,
                                   done);
}


/* room i of the summary: its newest message (NULL if none) and unread */

static ngx_int_t
ngx_http_chat_msg_summary_get(ngx_http_request_t *r,
    ngx_http_chat_msg_op_t *op, ngx_uint_t i, ngx_http_chat_msg_t **last,
    int64_t *unread)
{
    char                  buf[16];
    bson_t                doc;
    uint32_t              len;
    const char           *key;
    bson_iter_t           it, sub;
    const uint8_t        *data;
    ngx_http_chat_msg_t  *m;

    *last = NULL;
    *unread = 0;

    bson_uint32_to_string((uint32_t) i, &key, buf, sizeof(buf));

    if (!bson_iter_init_find(&it, op->reply, key)
        || !BSON_ITER_HOLDS_DOCUMENT(&it)
        || !bson_iter_recurse(&it, &sub))
    {
        return NGX_ERROR;
    }

    while (bson_iter_next(&sub)) {
        key = bson_iter_key(&sub);

        if (ngx_strcmp(key, "unread") == 0) {
            *unread = bson_iter_as_int64(&sub);
            continue;
        }

        if (ngx_strcmp(key, "last") != 0 || !BSON_ITER_HOLDS_DOCUMENT(&sub)) {
            continue;
        }

        bson_iter_document(&sub, &len, &data);

        if (!bson_init_static(&doc, data, len)) {
            return NGX_ERROR;
        }

        m = ngx_palloc(r->pool, sizeof(ngx_http_chat_msg_t));
        if (m == NULL || ngx_http_chat_msg_parse(r, &doc, m) != NGX_OK) {
            return NGX_ERROR;
        }

        *last = m;
    }

    return NGX_OK;
}


/* ChatRoomResponse (API.md 2.8): the caller is the first participant */

static cJSON *
ngx_http_chat_msg_room_json(ngx_http_request_t *r, cJSON *parent,
    ngx_http_chat_msg_room_t *room, int64_t caller, ngx_http_chat_msg_t *last,
    int64_t unread)
{
    cJSON       *json, *list, *p, *lm;
    int64_t      id[2];
    ngx_uint_t   i;

    json = parent ? cJSON_CreateObject() : ngx_http_chat_json_object(r);
    if (json == NULL) {
        return NULL;
    }

    if (parent) {
        cJSON_AddItemToArray(parent, json);
    }

    if (ngx_http_chat_json_num(json, "id", room->id) == NULL
        || ngx_http_chat_json_num(json, "user_1_id", room->user_1_id) == NULL
        || ngx_http_chat_json_num(json, "user_2_id", room->user_2_id) == NULL
        || cJSON_AddStringToObject(json, "room_type", "direct") == NULL
        || ngx_http_chat_json_sql_time(json, "created_at", &room->created_at)
           == NULL
        || ngx_http_chat_json_sql_time(json, "updated_at", &room->updated_at)
           == NULL)
    {
        return NULL;
    }

    list = cJSON_AddArrayToObject(json, "participants");
    if (list == NULL) {
        return NULL;
    }

    id[0] = caller;
    id[1] = (caller == room->user_1_id) ? room->user_2_id : room->user_1_id;

    for (i = 0; i < 2; i++) {
        p = cJSON_CreateObject();
        if (p == NULL) {
            return NULL;
        }

        cJSON_AddItemToArray(list, p);

        if (ngx_http_chat_json_num(p, "id", id[i]) == NULL
            || ngx_http_chat_json_str(p, "username",
                                   ngx_http_chat_msg_username(room, id[i]))
               == NULL)
        {
            return NULL;
        }
    }

    if (last == NULL) {
        if (cJSON_AddNullToObject(json, "last_message") == NULL) {
            return NULL;
        }

    } else {
        lm = cJSON_AddObjectToObject(json, "last_message");

        if (lm == NULL
            || ngx_http_chat_json_str(lm, "id", &last->id) == NULL
            || ngx_http_chat_json_num(lm, "user_id", last->user_id) == NULL
            || ngx_http_chat_json_str(lm, "content", &last->content) == NULL
            || ngx_http_chat_json_str(lm, "message_type",
                                      &last->message_type)
               == NULL
            || ngx_http_chat_msg_json_time(lm, "created_at", last->created_at)
               == NULL)
        {
            return NULL;
        }
    }

    if (ngx_http_chat_json_num(json, "unread_count", unread) == NULL) {
        return NULL;
    }

    return json;
}


/* in a pool thread */

ngx_int_t
ngx_http_chat_msg_summary_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op)
{
    char                  buf[16];
    bson_t                item;
    int64_t               unread;
    ngx_int_t             rc;
    ngx_uint_t            i;
    const char           *key;
    mongoc_collection_t  *msgs, *reads;

    msgs = mongoc_database_get_collection(db, "messages");
    reads = mongoc_database_get_collection(db, "message_read_status");

    rc = NGX_OK;

    for (i = 0; i < op->nrooms; i++) {
        bson_uint32_to_string((uint32_t) i, &key, buf, sizeof(buf));
        bson_init(&item);
        unread = 0;

        if (op->last) {
            rc = ngx_http_chat_msg_last_run(msgs, op->rooms[i], &item,
                                            &op->error);
        }

        if (rc == NGX_OK) {
            rc = ngx_http_chat_msg_unread_run(msgs, reads, op->rooms[i],
                                              op->user_id, &unread,
                                              &op->error);
        }

        if (rc == NGX_OK) {
            BSON_APPEND_INT64(&item, "unread", unread);
            bson_append_document(op->reply, key, -1, &item);
        }

        bson_destroy(&item);

        if (rc != NGX_OK) {
            break;
        }
    }

    mongoc_collection_destroy(reads);
    mongoc_collection_destroy(msgs);

    return rc;
}


/* in a pool thread: the newest message of the room that is not deleted */

static ngx_int_t
ngx_http_chat_msg_last_run(mongoc_collection_t *msgs, int64_t room_id,
    bson_t *item, bson_error_t *error)
{
    bson_t            filter, opts, sort;
    ngx_int_t         rc;
    const bson_t     *doc;
    mongoc_cursor_t  *cursor;

    bson_init(&filter);
    BSON_APPEND_INT32(&filter, "room_id", (int32_t) room_id);
    BSON_APPEND_BOOL(&filter, "is_deleted", false);

    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "created_at", -1);
    BSON_APPEND_INT32(&sort, "_id", -1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", 1);

    cursor = mongoc_collection_find_with_opts(msgs, &filter, &opts, NULL);

    rc = NGX_OK;

    if (mongoc_cursor_next(cursor, &doc)) {
        BSON_APPEND_DOCUMENT(item, "last", doc);

    } else if (mongoc_cursor_error(cursor, error)) {
        rc = ngx_http_chat_mongo_error(error);
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(&opts);
    bson_destroy(&filter);

    return rc;
}


/*
 * in a pool thread: the messages of others, not deleted, that the user
 * has no read record of (API.md 2.8); counted now, never cached (DEV-8).
 * Read records may name ids that are no ObjectId: they match no message.
 */

static ngx_int_t
ngx_http_chat_msg_unread_run(mongoc_collection_t *msgs,
    mongoc_collection_t *reads, int64_t room_id, int64_t user_id,
    int64_t *unread, bson_error_t *error)
{
    char              buf[16];
    bson_t            filter, opts, proj, count, ne, id, nin;
    int64_t           n;
    uint32_t          len, i;
    ngx_int_t         rc;
    const char       *key, *s;
    bson_oid_t        oid;
    bson_iter_t       it;
    const bson_t     *doc;
    mongoc_cursor_t  *cursor;

    bson_init(&filter);
    BSON_APPEND_INT32(&filter, "room_id", (int32_t) room_id);
    BSON_APPEND_INT32(&filter, "user_id", (int32_t) user_id);

    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "message_id", 1);
    BSON_APPEND_INT32(&proj, "_id", 0);
    bson_append_document_end(&opts, &proj);

    bson_init(&count);
    BSON_APPEND_INT32(&count, "room_id", (int32_t) room_id);
    BSON_APPEND_BOOL(&count, "is_deleted", false);
    BSON_APPEND_DOCUMENT_BEGIN(&count, "user_id", &ne);
    BSON_APPEND_INT32(&ne, "$ne", (int32_t) user_id);
    bson_append_document_end(&count, &ne);
    BSON_APPEND_DOCUMENT_BEGIN(&count, "_id", &id);
    BSON_APPEND_ARRAY_BEGIN(&id, "$nin", &nin);

    cursor = mongoc_collection_find_with_opts(reads, &filter, &opts, NULL);

    i = 0;

    while (mongoc_cursor_next(cursor, &doc)) {
        if (!bson_iter_init_find(&it, doc, "message_id")
            || !BSON_ITER_HOLDS_UTF8(&it))
        {
            continue;
        }

        s = bson_iter_utf8(&it, &len);

        if (len != 24 || !bson_oid_is_valid(s, len)) {
            continue;
        }

        bson_oid_init_from_string(&oid, s);
        bson_uint32_to_string(i++, &key, buf, sizeof(buf));
        bson_append_oid(&nin, key, -1, &oid);
    }

    rc = NGX_OK;

    if (mongoc_cursor_error(cursor, error)) {
        rc = ngx_http_chat_mongo_error(error);
    }

    mongoc_cursor_destroy(cursor);

    bson_append_array_end(&id, &nin);
    bson_append_document_end(&count, &id);

    if (rc == NGX_OK) {
        n = mongoc_collection_count_documents(msgs, &count, NULL, NULL, NULL,
                                              error);
        if (n < 0) {
            rc = ngx_http_chat_mongo_error(error);

        } else {
            *unread = n;
        }
    }

    bson_destroy(&count);
    bson_destroy(&opts);
    bson_destroy(&filter);

    return rc;
}
