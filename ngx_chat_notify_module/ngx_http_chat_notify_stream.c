
/*
 * N2: the caller's notification stream (Server-Sent Events).
 *
 * The stream subscribes to the user's channel first, holding live frames,
 * then counts the unread notifications for "connected" and, when the
 * client names the last notification it saw (Last-Event-ID header, or the
 * last_event_id argument), fetches the newer ones.  "connected" goes out,
 * then the replay, then the held frames except those replayed: nothing is
 * lost between the query and the subscription, nothing comes twice.
 *
 * The frames, their JSON and the replayed ids are made in a pool of their
 * own, destroyed once the frames are queued: the request's pool lives as
 * long as the stream.
 */


#include "ngx_http_chat_notify_module.h"


typedef struct {
    int64_t                     user_id;
    ngx_str_t                   channel;
    ngx_http_chat_sse_t        *sse;

    ngx_uint_t                  replay;
    bson_oid_t                  last;

    /* filled in a pool thread */
    int64_t                     unread;
    bson_t                    **docs;
    size_t                      ndocs;
} ngx_http_chat_notify_stream_t;


static ngx_int_t ngx_http_chat_notify_stream_auth(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_notify_stream_run(mongoc_database_t *db,
    void *data);
static ngx_int_t ngx_http_chat_notify_stream_ready(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_notify_stream_send(ngx_pool_t *pool,
    ngx_http_chat_notify_stream_t *st, const char *event, ngx_str_t *id,
    cJSON *data);
static void ngx_http_chat_notify_stream_free(
    ngx_http_chat_notify_stream_t *st);


ngx_int_t
ngx_http_chat_notify_stream(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_str_t  token;

    /* the header wins over the query argument (RFC 6750 name) */

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
                                      ngx_http_chat_notify_stream_auth);
}


static ngx_int_t
ngx_http_chat_notify_stream_auth(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    ngx_str_t                          last;
    ngx_http_chat_notify_stream_t     *st;
    ngx_http_chat_notify_main_conf_t  *nmcf;

    /* a stream that could only fail is refused as JSON while it can be */

    if (ngx_http_chat_mongo_state() == NGX_HTTP_CHAT_DOWN) {
        return ngx_http_chat_send_unavailable(r);
    }

    st = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_notify_stream_t));
    if (st == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->user_id = ctx->user_id;
    ctx->data = st;

    /* where the client left off: a notification id */

    ngx_http_chat_sse_last_event_id(r, &last);

    st->replay = (ngx_http_chat_notify_oid(&last, &st->last) == NGX_OK);

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_notify_module);

    if (ngx_http_chat_notify_channel(r->pool, &nmcf->group, st->user_id,
                                     &st->channel)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->sse = ngx_http_chat_sse_open(r);
    if (st->sse == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_chat_sse_subscribe(st->sse, &st->channel, 1) != NGX_OK) {
        ngx_http_chat_sse_close(st->sse, NGX_ERROR);
        return NGX_DONE;
    }

    if (ngx_http_chat_mongo(r, ngx_http_chat_notify_stream_run, st,
                            ngx_http_chat_notify_stream_ready)
        != NGX_DONE)
    {
        ngx_http_chat_sse_close(st->sse, NGX_ERROR);
    }

    return NGX_DONE;
}


/* in a pool thread: the unread count, and what came after the last id */

static ngx_int_t
ngx_http_chat_notify_stream_run(mongoc_database_t *db, void *data)
{
    ngx_http_chat_notify_stream_t *st = data;

    bson_t                filter, opts, sub;
    int64_t               n, since;
    ngx_int_t             rc;
    bson_iter_t           it;
    const bson_t         *doc;
    bson_error_t          error;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *coll;

    coll = mongoc_database_get_collection(db,
                                          NGX_HTTP_CHAT_NOTIFY_COLLECTION);

    bson_init(&filter);
    BSON_APPEND_INT64(&filter, "user_id", st->user_id);
    BSON_APPEND_BOOL(&filter, "is_read", false);

    n = mongoc_collection_count_documents(coll, &filter, NULL, NULL, NULL,
                                          &error);
    bson_destroy(&filter);

    if (n < 0) {
        mongoc_collection_destroy(coll);
        return ngx_http_chat_mongo_error(&error);
    }

    st->unread = n;

    if (!st->replay) {
        mongoc_collection_destroy(coll);
        return NGX_OK;
    }

    /* the last one must be the caller's: an unknown id replays nothing */

    bson_init(&filter);
    BSON_APPEND_OID(&filter, "_id", &st->last);
    BSON_APPEND_INT64(&filter, "user_id", st->user_id);

    cursor = mongoc_collection_find_with_opts(coll, &filter, NULL, NULL);

    since = -1;

    if (mongoc_cursor_next(cursor, &doc)
        && bson_iter_init_find(&it, doc, "created_at")
        && BSON_ITER_HOLDS_DATE_TIME(&it))
    {
        since = bson_iter_date_time(&it);
    }

    rc = mongoc_cursor_error(cursor, &error) ? ngx_http_chat_mongo_error(&error)
                                             : NGX_OK;

    mongoc_cursor_destroy(cursor);
    bson_destroy(&filter);

    if (rc != NGX_OK || since < 0) {
        mongoc_collection_destroy(coll);
        return rc;
    }

    /*
     * newer: a later created_at, or the same one and a greater id; those
     * of the same millisecond are sorted out here, with room to spare
     */

    bson_init(&filter);
    BSON_APPEND_INT64(&filter, "user_id", st->user_id);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "created_at", &sub);
    BSON_APPEND_DATE_TIME(&sub, "$gte", since);
    bson_append_document_end(&filter, &sub);

    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sub);
    BSON_APPEND_INT32(&sub, "created_at", 1);
    BSON_APPEND_INT32(&sub, "_id", 1);
    bson_append_document_end(&opts, &sub);
    BSON_APPEND_INT64(&opts, "limit", 2 * NGX_HTTP_CHAT_NOTIFY_REPLAY_MAX);

    cursor = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);

    st->docs = bson_malloc0(NGX_HTTP_CHAT_NOTIFY_REPLAY_MAX
                            * sizeof(bson_t *));

    while (st->ndocs < NGX_HTTP_CHAT_NOTIFY_REPLAY_MAX
           && mongoc_cursor_next(cursor, &doc))
    {
        if (!bson_iter_init_find(&it, doc, "created_at")
            || !BSON_ITER_HOLDS_DATE_TIME(&it))
        {
            continue;
        }

        if (bson_iter_date_time(&it) == since
            && bson_iter_init_find(&it, doc, "_id")
            && BSON_ITER_HOLDS_OID(&it)
            && bson_oid_compare(bson_iter_oid(&it), &st->last) <= 0)
        {
            continue;
        }

        st->docs[st->ndocs++] = bson_copy(doc);
    }

    if (mongoc_cursor_error(cursor, &error)) {
        rc = ngx_http_chat_mongo_error(&error);
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(&opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);

    return rc;
}


static ngx_int_t
ngx_http_chat_notify_stream_ready(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc)
{
    size_t                          i;
    cJSON                          *data;
    ngx_str_t                      *id, msg;
    ngx_pool_t                     *pool;
    ngx_array_t                    *ids;
    ngx_http_chat_notify_stream_t  *st;

    st = ctx->data;
    pool = NULL;

    if (rc != NGX_OK) {
        /* the client reconnects and tries again */
        goto failed;
    }

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, r->connection->log);
    if (pool == NULL) {
        goto failed;
    }

    data = cJSON_CreateObject();
    if (data == NULL) {
        goto failed;
    }

    ngx_str_set(&msg, "Connected to notification stream");

    if (ngx_http_chat_json_str(data, "message", &msg) == NULL
        || ngx_http_chat_json_num(data, "user_id", st->user_id) == NULL
        || ngx_http_chat_json_num(data, "unread_count", st->unread) == NULL
        || ngx_http_chat_notify_stream_send(pool, st, "connected", NULL, data)
           != NGX_OK)
    {
        cJSON_Delete(data);
        goto failed;
    }

    cJSON_Delete(data);

    ids = ngx_array_create(pool, st->ndocs + 1, sizeof(ngx_str_t));
    if (ids == NULL) {
        goto failed;
    }

    /* the one the client named may still come live, published late */

    if (st->replay) {
        id = ngx_array_push(ids);
        if (id == NULL) {
            goto failed;
        }

        id->data = ngx_pnalloc(pool, 25);
        if (id->data == NULL) {
            goto failed;
        }

        bson_oid_to_string(&st->last, (char *) id->data);
        id->len = 24;
    }

    for (i = 0; i < st->ndocs; i++) {
        id = ngx_array_push(ids);
        if (id == NULL) {
            goto failed;
        }

        id->data = ngx_pnalloc(pool, 24);
        if (id->data == NULL) {
            goto failed;
        }

        data = ngx_http_chat_notify_json(st->docs[i], id);

        if (data == NULL
            || ngx_http_chat_notify_stream_send(pool, st, "notification",
                                                id, data)
               != NGX_OK)
        {
            cJSON_Delete(data);
            goto failed;
        }

        cJSON_Delete(data);
    }

    ngx_http_chat_notify_stream_free(st);

    if (ngx_http_chat_sse_release(st->sse, ids) != NGX_OK) {
        ngx_http_chat_sse_close(st->sse, NGX_ERROR);
    }

    ngx_destroy_pool(pool);

    return NGX_DONE;

failed:

    if (pool) {
        ngx_destroy_pool(pool);
    }

    ngx_http_chat_notify_stream_free(st);
    ngx_http_chat_sse_close(st->sse, NGX_ERROR);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_chat_notify_stream_send(ngx_pool_t *pool,
    ngx_http_chat_notify_stream_t *st, const char *event, ngx_str_t *id,
    cJSON *data)
{
    ngx_str_t  frame;

    if (ngx_http_chat_sse_frame(pool, event, id, data, &frame) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_chat_sse_send(st->sse, &frame);
}


static void
ngx_http_chat_notify_stream_free(ngx_http_chat_notify_stream_t *st)
{
    size_t  i;

    for (i = 0; i < st->ndocs; i++) {
        bson_destroy(st->docs[i]);
    }

    bson_free(st->docs);

    st->docs = NULL;
    st->ndocs = 0;
}
