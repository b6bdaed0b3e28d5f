
/*
 * Message reactions, [DESIGN] C11 of API.md: list, add (idempotent) and
 * remove the caller's reaction to a message of one of the caller's rooms.
 *
 * A reaction's _id is derived from (message, user, emoji), so MongoDB's
 * own _id key keeps one document per triple even when the same reaction
 * is added twice at the same moment; the unique index of the contract is
 * created too, but not relied on.
 */


#include "ngx_http_chat_msg_module.h"

#include <ngx_md5.h>


typedef struct {
    ngx_str_t                   emoji;
    ngx_array_t                 users;      /* of int64_t */
    ngx_uint_t                  mine;
} ngx_http_chat_msg_reaction_t;


static ngx_int_t ngx_http_chat_msg_reaction_start(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_str_t *emoji);
static ngx_int_t ngx_http_chat_msg_fetch_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op);
static ngx_int_t ngx_http_chat_msg_fetched(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_msg_reaction_member(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_msg_react_run(mongoc_database_t *db,
    ngx_http_chat_msg_op_t *op);
static ngx_int_t ngx_http_chat_msg_react_change(mongoc_collection_t *coll,
    ngx_http_chat_msg_op_t *op);
static ngx_int_t ngx_http_chat_msg_reacted(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static cJSON *ngx_http_chat_msg_reactions_json(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_msg_reaction_event(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static int ngx_http_chat_msg_cmp_id(const void *one, const void *two);


ngx_int_t
ngx_http_chat_msg_reactions(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_msg_reaction_start(r, ctx, NULL);
}


/* POST: the body's schema comes first, as everywhere */

ngx_int_t
ngx_http_chat_msg_react(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON      *errors, *input;
    ngx_str_t   emoji;

    errors = NULL;

    if (ngx_http_chat_body_string(r, &errors, ctx->json, "emoji", 1, 1,
                                  NGX_HTTP_CHAT_MSG_EMOJI_MAX, &emoji)
        == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors == NULL && ngx_http_chat_msg_space(&emoji)) {
        input = cJSON_GetObjectItemCaseSensitive(ctx->json, "emoji");

        errors = ngx_http_chat_invalid(r, NULL, "body", "emoji",
                                "value_error",
                                "Value error, Emoji must not contain "
                                "whitespace", cJSON_Duplicate(input, 1));
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    return ngx_http_chat_msg_reaction_start(r, ctx, &emoji);
}


/* DELETE: an emoji that could never be stored is simply not found */

ngx_int_t
ngx_http_chat_msg_unreact(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_msg_reaction_start(r, ctx, &ctx->params[1]);
}


static ngx_int_t
ngx_http_chat_msg_reaction_start(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_str_t *emoji)
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

    if (emoji) {
        op->emoji = *emoji;
    }

    return ngx_http_chat_msg_mongo(r, op, ngx_http_chat_msg_fetch_run,
                                   ngx_http_chat_msg_fetched);
}


/* in a pool thread: the message's room and whether it is deleted */

static ngx_int_t
ngx_http_chat_msg_fetch_run(mongoc_database_t *db, ngx_http_chat_msg_op_t *op)
{
    bson_t                doc;
    ngx_int_t             rc;
    bson_iter_t           it;
    mongoc_collection_t  *msgs;

    msgs = mongoc_database_get_collection(db, "messages");

    bson_init(&doc);

    rc = ngx_http_chat_msg_find(msgs, op, &doc);

    if (rc == NGX_OK && op->status == NGX_HTTP_CHAT_MSG_FOUND) {

        if (bson_iter_init_find(&it, &doc, "room_id")
            && BSON_ITER_HOLDS_NUMBER(&it))
        {
            op->room_id = bson_iter_as_int64(&it);
        }

        if (bson_iter_init_find(&it, &doc, "is_deleted")
            && bson_iter_as_bool(&it))
        {
            op->deleted = 1;
        }
    }

    bson_destroy(&doc);
    mongoc_collection_destroy(msgs);

    return rc;
}


static ngx_int_t
ngx_http_chat_msg_fetched(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc)
{
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;
    op = mctx->op;

    if (rc != NGX_OK) {
        return ngx_http_chat_msg_mongo_failed(r, op, rc);
    }

    if (op->status != NGX_HTTP_CHAT_MSG_FOUND || op->room_id <= 0) {
        return ngx_http_chat_msg_send_not_found(r, "Message");
    }

    return ngx_http_chat_msg_room_check(r, ctx, op->room_id,
                                        ngx_http_chat_msg_reaction_member);
}


static ngx_int_t
ngx_http_chat_msg_reaction_member(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    u_char                    digest[16], uid[NGX_INT64_LEN], id[25];
    size_t                    n;
    ngx_md5_t                 md5;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;
    op = mctx->op;

    if (r->method == NGX_HTTP_POST && op->deleted) {
        return ngx_http_chat_send_error(r, NGX_HTTP_BAD_REQUEST,
                                        "MESSAGE_ALREADY_DELETED",
                                        "Cannot react to a deleted message",
                                        NULL);
    }

    op = ngx_http_chat_msg_op(r, mctx);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op->remove = (r->method == NGX_HTTP_DELETE);
    op->blank = 0;

    /* no reaction can have an emoji that is too long or not UTF-8 */

    if (op->remove
        && (op->emoji.len == 0 || ngx_http_chat_msg_space(&op->emoji)
            || ngx_http_chat_utf8_length(&op->emoji)
               > NGX_HTTP_CHAT_MSG_EMOJI_MAX))
    {
        op->blank = 1;
    }

    bson_oid_to_string(&op->oid, (char *) id);
    n = ngx_sprintf(uid, "%i", ctx->user_id) - uid;

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, "reaction\n", 9);
    ngx_md5_update(&md5, id, 24);
    ngx_md5_update(&md5, "\n", 1);
    ngx_md5_update(&md5, uid, n);
    ngx_md5_update(&md5, "\n", 1);
    ngx_md5_update(&md5, op->emoji.data, op->emoji.len);
    ngx_md5_final(digest, &md5);

    bson_oid_init_from_data(&op->key, digest);

    return ngx_http_chat_msg_mongo(r, op, ngx_http_chat_msg_react_run,
                                   ngx_http_chat_msg_reacted);
}


/* in a pool thread: the change, if any, then the message's reactions */

static ngx_int_t
ngx_http_chat_msg_react_run(mongoc_database_t *db, ngx_http_chat_msg_op_t *op)
{
    char                  id[25];
    bson_t                filter, opts, sort;
    ngx_int_t             rc;
    mongoc_collection_t  *coll;

    coll = mongoc_database_get_collection(db, "message_reactions");

    rc = NGX_OK;

    if (op->emoji.len) {
        rc = ngx_http_chat_msg_react_change(coll, op);
    }

    if (rc != NGX_OK) {
        mongoc_collection_destroy(coll);
        return rc;
    }

    bson_oid_to_string(&op->oid, id);

    bson_init(&filter);
    BSON_APPEND_UTF8(&filter, "message_id", id);

    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "created_at", 1);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bson_append_document_end(&opts, &sort);

    rc = ngx_http_chat_msg_collect(coll, &filter, &opts, op, NULL);
    bson_destroy(&opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);

    return rc;
}


/*
 * in a pool thread: op->count is 1 when a reaction was added or removed.
 * A reaction written by another writer (with an _id of its own) is found
 * by its fields before an insert is tried.
 */

static ngx_int_t
ngx_http_chat_msg_react_change(mongoc_collection_t *coll,
    ngx_http_chat_msg_op_t *op)
{
    char          id[25];
    bson_t        filter, doc, reply;
    int64_t       n;
    ngx_int_t     rc;
    bson_iter_t   it;

    op->count = 0;

    if (op->blank) {
        op->status = NGX_HTTP_CHAT_MSG_NOT_FOUND;
        return NGX_OK;
    }

    bson_oid_to_string(&op->oid, id);

    bson_init(&filter);
    BSON_APPEND_UTF8(&filter, "message_id", id);
    BSON_APPEND_INT32(&filter, "user_id", (int32_t) op->user_id);
    bson_append_utf8(&filter, "emoji", -1, (const char *) op->emoji.data,
                     (int) op->emoji.len);

    rc = NGX_OK;

    if (op->remove) {
        if (!mongoc_collection_delete_many(coll, &filter, NULL, &reply,
                                           &op->error))
        {
            rc = ngx_http_chat_mongo_error(&op->error);

        } else if (bson_iter_init_find(&it, &reply, "deletedCount")
                   && bson_iter_as_int64(&it) > 0)
        {
            op->count = 1;

        } else {
            op->status = NGX_HTTP_CHAT_MSG_NOT_FOUND;
        }

        bson_destroy(&reply);
        bson_destroy(&filter);

        return rc;
    }

    n = mongoc_collection_count_documents(coll, &filter, NULL, NULL, NULL,
                                          &op->error);

    if (n < 0) {
        bson_destroy(&filter);
        return ngx_http_chat_mongo_error(&op->error);
    }

    if (n > 0) {
        op->status = NGX_HTTP_CHAT_MSG_EXISTED;
        bson_destroy(&filter);
        return NGX_OK;
    }

    bson_init(&doc);
    BSON_APPEND_OID(&doc, "_id", &op->key);
    BSON_APPEND_UTF8(&doc, "message_id", id);
    BSON_APPEND_INT32(&doc, "room_id", (int32_t) op->room_id);
    BSON_APPEND_INT32(&doc, "user_id", (int32_t) op->user_id);
    bson_append_utf8(&doc, "emoji", -1, (const char *) op->emoji.data,
                     (int) op->emoji.len);
    BSON_APPEND_DATE_TIME(&doc, "created_at", op->now);

    if (mongoc_collection_insert_one(coll, &doc, NULL, &reply, &op->error)) {
        op->count = 1;

    } else if (op->error.code == 11000) {
        op->status = NGX_HTTP_CHAT_MSG_EXISTED;

    } else {
        rc = ngx_http_chat_mongo_error(&op->error);
    }

    bson_destroy(&reply);
    bson_destroy(&doc);
    bson_destroy(&filter);

    return rc;
}


static ngx_int_t
ngx_http_chat_msg_reacted(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc)
{
    cJSON                    *json;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;
    op = mctx->op;

    if (rc != NGX_OK) {
        return ngx_http_chat_msg_mongo_failed(r, op, rc);
    }

    if (op->remove && op->status == NGX_HTTP_CHAT_MSG_NOT_FOUND) {
        return ngx_http_chat_msg_send_not_found(r, "Reaction");
    }

    json = ngx_http_chat_msg_reactions_json(r, ctx);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (op->count && ngx_http_chat_msg_reaction_event(r, ctx) == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, (r->method == NGX_HTTP_POST
                                       && op->count)
                                      ? NGX_HTTP_CREATED : NGX_HTTP_OK,
                                   json);
}


static ngx_int_t
ngx_http_chat_msg_reaction_event(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    char                      id[25];
    cJSON                    *fields;
    ngx_http_chat_msg_op_t   *op;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ctx->data;
    op = mctx->op;

    bson_oid_to_string(&op->oid, id);

    fields = ngx_http_chat_json_object(r);

    if (fields == NULL
        || cJSON_AddStringToObject(fields, "message_id", id) == NULL
        || ngx_http_chat_json_num(fields, "room_id", op->room_id) == NULL
        || ngx_http_chat_json_num(fields, "user_id", op->user_id) == NULL
        || ngx_http_chat_json_str(fields, "emoji", &op->emoji) == NULL)
    {
        return NGX_ERROR;
    }

    return ngx_http_chat_msg_announce(r, op->room_id,
                                      op->remove ? "MessageReactionRemoved"
                                                 : "MessageReactionAdded",
                                      "reaction_updated", fields,
                                      op->remove ? "removed" : "added");
}


static int
ngx_http_chat_msg_cmp_id(const void *one, const void *two)
{
    const int64_t  *a = one;
    const int64_t  *b = two;

    return (*a > *b) - (*a < *b);
}


/*
 * {"message_id","reactions":[{"emoji","count","user_ids"}],"my_reactions"}:
 * emojis by first use (the documents come sorted by created_at), user ids
 * ascending
 */

static cJSON *
ngx_http_chat_msg_reactions_json(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    char                           id[25];
    cJSON                         *json, *list, *mine, *item, *users;
    int64_t                       *uid, user;
    uint32_t                       len;
    ngx_str_t                      emoji;
    ngx_uint_t                     i, j;
    bson_iter_t                    it, f;
    ngx_array_t                    groups;
    ngx_http_chat_msg_op_t        *op;
    ngx_http_chat_msg_ctx_t       *mctx;
    ngx_http_chat_msg_reaction_t  *g;

    mctx = ctx->data;
    op = mctx->op;

    if (ngx_array_init(&groups, r->pool, 4,
                       sizeof(ngx_http_chat_msg_reaction_t))
        != NGX_OK
        || !bson_iter_init(&it, op->reply))
    {
        return NULL;
    }

    while (bson_iter_next(&it)) {

        if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &f)) {
            continue;
        }

        emoji.data = NULL;
        emoji.len = 0;
        user = 0;

        while (bson_iter_next(&f)) {
            if (ngx_strcmp(bson_iter_key(&f), "emoji") == 0
                && BSON_ITER_HOLDS_UTF8(&f))
            {
                emoji.data = (u_char *) bson_iter_utf8(&f, &len);
                emoji.len = len;

            } else if (ngx_strcmp(bson_iter_key(&f), "user_id") == 0
                       && BSON_ITER_HOLDS_NUMBER(&f))
            {
                user = bson_iter_as_int64(&f);
            }
        }

        if (emoji.data == NULL) {
            continue;
        }

        g = groups.elts;

        for (i = 0; i < groups.nelts; i++) {
            if (g[i].emoji.len == emoji.len
                && ngx_memcmp(g[i].emoji.data, emoji.data, emoji.len) == 0)
            {
                break;
            }
        }

        if (i == groups.nelts) {
            g = ngx_array_push(&groups);
            if (g == NULL
                || ngx_array_init(&g->users, r->pool, 4, sizeof(int64_t))
                   != NGX_OK)
            {
                return NULL;
            }

            g->emoji = emoji;
            g->mine = 0;

        } else {
            g = &g[i];
        }

        uid = ngx_array_push(&g->users);
        if (uid == NULL) {
            return NULL;
        }

        *uid = user;

        if (user == ctx->user_id) {
            g->mine = 1;
        }
    }

    bson_oid_to_string(&op->oid, id);

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || cJSON_AddStringToObject(json, "message_id", id) == NULL)
    {
        return NULL;
    }

    list = cJSON_AddArrayToObject(json, "reactions");
    if (list == NULL) {
        return NULL;
    }

    g = groups.elts;

    for (i = 0; i < groups.nelts; i++) {
        item = cJSON_CreateObject();
        if (item == NULL) {
            return NULL;
        }

        cJSON_AddItemToArray(list, item);

        qsort(g[i].users.elts, g[i].users.nelts, sizeof(int64_t),
              ngx_http_chat_msg_cmp_id);

        if (ngx_http_chat_json_str(item, "emoji", &g[i].emoji) == NULL
            || ngx_http_chat_json_num(item, "count", g[i].users.nelts) == NULL)
        {
            return NULL;
        }

        users = cJSON_AddArrayToObject(item, "user_ids");
        if (users == NULL) {
            return NULL;
        }

        uid = g[i].users.elts;

        for (j = 0; j < g[i].users.nelts; j++) {
            (void) ngx_http_chat_json_num(users, NULL, uid[j]);
        }
    }

    mine = cJSON_AddArrayToObject(json, "my_reactions");
    if (mine == NULL) {
        return NULL;
    }

    for (i = 0; i < groups.nelts; i++) {
        if (g[i].mine && ngx_http_chat_json_str(mine, NULL, &g[i].emoji)
                         == NULL)
        {
            return NULL;
        }
    }

    return json;
}
