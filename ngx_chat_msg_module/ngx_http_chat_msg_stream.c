
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
 * Messages are ordered by their per-room sequence number ("seq"), which
 * follows commit order across workers and nodes; ObjectIds do not.
 */


#include "ngx_http_chat_msg_module.h"


#define NGX_HTTP_CHAT_MSG_REPLAY_MAX  1000


typedef struct {
    int64_t                     room_id;
    int64_t                     user_id[2];
    ngx_str_t                   username[2];

    ngx_str_t                   channel;
    ngx_http_chat_sse_t        *sse;

    /* the replay, filled in a pool thread */
    bson_oid_t                  last;
    bson_t                    **docs;
    size_t                      ndocs;
} ngx_http_chat_msg_stream_t;


static ngx_int_t ngx_http_chat_msg_stream_auth(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_msg_stream_room(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_msg_stream_replay(mongoc_database_t *db,
    void *data);
static ngx_int_t ngx_http_chat_msg_stream_replayed(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_msg_stream_frame(ngx_http_request_t *r,
    ngx_http_chat_msg_stream_t *st, const bson_t *doc, ngx_str_t *id,
    ngx_str_t *frame);
static void ngx_http_chat_msg_stream_free(ngx_http_chat_msg_stream_t *st);


ngx_int_t
ngx_http_chat_msg_stream(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
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
                                      ngx_http_chat_msg_stream_auth);
}


static ngx_int_t
ngx_http_chat_msg_stream_auth(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                       *errors;
    int64_t                      id;
    ngx_http_chat_sql_arg_t      arg;
    ngx_http_chat_msg_stream_t  *st;

    errors = NULL;

    if (ngx_http_chat_check_int(r, &errors, "path", "room_id",
                                &ctx->params[0], INT64_MIN, INT64_MAX, &id)
        == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (id <= 0) {
        errors = ngx_http_chat_app_invalid(r, NULL, "room_id",
                                           "Must be a positive integer",
                                           cJSON_CreateNumber((double) id));
        return ngx_http_chat_send_app_invalid(r,
                                        "room_id must be a positive integer",
                                        errors);
    }

    st = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_msg_stream_t));
    if (st == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->room_id = id;
    ctx->data = st;

    arg.type = NGX_HTTP_CHAT_SQL_INT;
    arg.num = id;

    /* the members' names come along: replayed messages carry them */

    return ngx_http_chat_sql(r,
                   "SELECT r.user_1_id, r.user_2_id, u1.username, "
                   "u2.username FROM chat_rooms r "
                   "LEFT JOIN users u1 ON u1.id = r.user_1_id "
                   "LEFT JOIN users u2 ON u2.id = r.user_2_id "
                   "WHERE r.id = ?", &arg, 1,
                   ngx_http_chat_msg_stream_room);
}


static ngx_int_t
ngx_http_chat_msg_stream_room(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res)
{
    cJSON                       *data, *details;
    ngx_str_t                    frame, last;
    ngx_uint_t                   i, replay;
    ngx_table_elt_t             *h;
    ngx_list_part_t             *part;
    ngx_http_chat_msg_stream_t  *st;

    static ngx_str_t  unknown = ngx_string("Unknown");

    if (res->rc != NGX_OK) {
        return ngx_http_chat_send_unavailable(r);
    }

    st = ctx->data;

    if (res->nrows == 0) {
        details = cJSON_CreateObject();
        if (details == NULL
            || cJSON_AddStringToObject(details, "resource", "Chat room")
               == NULL)
        {
            cJSON_Delete(details);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_chat_send_error(r, NGX_HTTP_NOT_FOUND,
                                        "resource_not_found",
                                        "Chat room not found", details);
    }

    for (i = 0; i < 2; i++) {
        if (ngx_http_chat_parse_id(&res->cells[i], &st->user_id[i])
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        st->username[i] = res->cells[2 + i].data ? res->cells[2 + i]
                                                 : unknown;
    }

    if (st->user_id[0] != ctx->user_id && st->user_id[1] != ctx->user_id) {
        return ngx_http_chat_send_error(r, NGX_HTTP_FORBIDDEN,
                                        "authorization_error",
                                        "Access denied to this chat room",
                                        NULL);
    }

    /* where the client left off: a message id */

    ngx_str_null(&last);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Last-Event-ID") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Last-Event-ID",
                               h[i].key.len)
               == 0)
        {
            last = h[i].value;
            break;
        }
    }

    if (last.len == 0) {
        (void) ngx_http_arg(r, (u_char *) "last_event_id",
                            sizeof("last_event_id") - 1, &last);
    }

    replay = (last.len == 24
              && bson_oid_is_valid((const char *) last.data, 24));

    if (replay) {
        u_char  hex[25];

        ngx_memcpy(hex, last.data, 24);
        hex[24] = '\0';
        bson_oid_init_from_string(&st->last, (const char *) hex);
    }

    st->channel.len = sizeof("chat:room:") - 1 + NGX_INT64_LEN;
    st->channel.data = ngx_pnalloc(r->pool, st->channel.len);
    if (st->channel.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->channel.len = ngx_sprintf(st->channel.data, "chat:room:%L",
                                  st->room_id)
                      - st->channel.data;

    data = ngx_http_chat_json_object(r);
    if (data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    frame.data = ngx_pnalloc(r->pool, sizeof("Connected to room ")
                                      + NGX_INT64_LEN);
    if (frame.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    frame.len = ngx_sprintf(frame.data, "Connected to room %L", st->room_id)
                - frame.data;

    if (ngx_http_chat_json_str(data, "message", &frame) == NULL
        || cJSON_AddNumberToObject(data, "room_id", (double) st->room_id)
           == NULL
        || cJSON_AddNumberToObject(data, "user_id", ctx->user_id) == NULL
        || ngx_http_chat_sse_frame(r->pool, "connected", NULL, data, &frame)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->sse = ngx_http_chat_sse_open(r);
    if (st->sse == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_chat_sse_subscribe(st->sse, &st->channel, replay)
        != NGX_OK
        || ngx_http_chat_sse_send(st->sse, &frame) != NGX_OK)
    {
        ngx_http_chat_sse_close(st->sse, NGX_ERROR);
        return NGX_DONE;
    }

    if (!replay) {
        return NGX_DONE;
    }

    if (ngx_http_chat_mongo(r, ngx_http_chat_msg_stream_replay, st,
                            ngx_http_chat_msg_stream_replayed)
        != NGX_DONE)
    {
        ngx_http_chat_sse_close(st->sse, NGX_ERROR);
    }

    return NGX_DONE;
}


/* in a pool thread: the messages after the last one the client saw */

static ngx_int_t
ngx_http_chat_msg_stream_replay(mongoc_database_t *db, void *data)
{
    ngx_http_chat_msg_stream_t *st = data;

    bson_t                filter, opts, gt;
    int64_t               seq;
    ngx_int_t             rc;
    bson_iter_t           it;
    const bson_t         *doc;
    bson_error_t          error;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *coll;

    coll = mongoc_database_get_collection(db, "messages");

    bson_init(&filter);
    BSON_APPEND_OID(&filter, "_id", &st->last);
    BSON_APPEND_INT64(&filter, "room_id", st->room_id);

    cursor = mongoc_collection_find_with_opts(coll, &filter, NULL, NULL);

    seq = -1;

    if (mongoc_cursor_next(cursor, &doc)
        && bson_iter_init_find(&it, doc, "seq")
        && BSON_ITER_HOLDS_NUMBER(&it))
    {
        seq = bson_iter_as_int64(&it);
    }

    rc = mongoc_cursor_error(cursor, &error) ? ngx_http_chat_mongo_error(&error)
                                             : NGX_OK;

    mongoc_cursor_destroy(cursor);
    bson_destroy(&filter);

    if (rc != NGX_OK || seq < 0) {
        /* an unknown id replays nothing */
        mongoc_collection_destroy(coll);
        return rc;
    }

    bson_init(&filter);
    BSON_APPEND_INT64(&filter, "room_id", st->room_id);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "seq", &gt);
    BSON_APPEND_INT64(&gt, "$gt", seq);
    bson_append_document_end(&filter, &gt);
    BSON_APPEND_BOOL(&filter, "is_deleted", false);

    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &gt);
    BSON_APPEND_INT32(&gt, "seq", 1);
    bson_append_document_end(&opts, &gt);
    BSON_APPEND_INT64(&opts, "limit", NGX_HTTP_CHAT_MSG_REPLAY_MAX);

    cursor = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);

    st->docs = bson_malloc0(NGX_HTTP_CHAT_MSG_REPLAY_MAX * sizeof(bson_t *));

    while (st->ndocs < NGX_HTTP_CHAT_MSG_REPLAY_MAX
           && mongoc_cursor_next(cursor, &doc))
    {
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
ngx_http_chat_msg_stream_replayed(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc)
{
    size_t                       i;
    ngx_str_t                    frame, *id;
    ngx_array_t                 *ids;
    ngx_http_chat_msg_stream_t  *st;

    st = ctx->data;

    if (rc != NGX_OK) {
        /* the client reconnects and tries again */
        ngx_http_chat_msg_stream_free(st);
        ngx_http_chat_sse_close(st->sse, NGX_ERROR);
        return NGX_DONE;
    }

    ids = ngx_array_create(r->pool, st->ndocs ? st->ndocs : 1,
                           sizeof(ngx_str_t));
    if (ids == NULL) {
        ngx_http_chat_msg_stream_free(st);
        ngx_http_chat_sse_close(st->sse, NGX_ERROR);
        return NGX_DONE;
    }

    for (i = 0; i < st->ndocs; i++) {
        id = ngx_array_push(ids);

        if (id == NULL
            || ngx_http_chat_msg_stream_frame(r, st, st->docs[i], id, &frame)
               != NGX_OK
            || ngx_http_chat_sse_send(st->sse, &frame) != NGX_OK)
        {
            ngx_http_chat_msg_stream_free(st);
            ngx_http_chat_sse_close(st->sse, NGX_ERROR);
            return NGX_DONE;
        }
    }

    ngx_http_chat_msg_stream_free(st);

    if (ngx_http_chat_sse_release(st->sse, ids) != NGX_OK) {
        ngx_http_chat_sse_close(st->sse, NGX_ERROR);
    }

    return NGX_DONE;
}


/* a stored message as the live "new_message" event */

static ngx_int_t
ngx_http_chat_msg_stream_frame(ngx_http_request_t *r,
    ngx_http_chat_msg_stream_t *st, const bson_t *doc, ngx_str_t *id,
    ngx_str_t *frame)
{
    char         hex[25];
    u_char      *p;
    cJSON       *data;
    int64_t      user;
    int64_t      ms;
    uint32_t     len;
    ngx_str_t    s;
    bson_iter_t  it;
    const char  *v;

    data = ngx_http_chat_json_object(r);
    if (data == NULL) {
        return NGX_ERROR;
    }

    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_OID(&it)) {
        return NGX_ERROR;
    }

    bson_oid_to_string(bson_iter_oid(&it), hex);

    id->len = 24;
    id->data = ngx_pnalloc(r->pool, 24);
    if (id->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(id->data, hex, 24);

    user = bson_iter_init_find(&it, doc, "user_id")
           && BSON_ITER_HOLDS_NUMBER(&it) ? bson_iter_as_int64(&it) : 0;

    if (cJSON_AddStringToObject(data, "id", hex) == NULL
        || cJSON_AddNumberToObject(data, "user_id", (double) user) == NULL
        || ngx_http_chat_json_str(data, "username",
                                  user == st->user_id[0] ? &st->username[0]
                                                         : &st->username[1])
           == NULL
        || cJSON_AddNumberToObject(data, "room_id", (double) st->room_id)
           == NULL)
    {
        return NGX_ERROR;
    }

    v = "";
    len = 0;

    if (bson_iter_init_find(&it, doc, "content") && BSON_ITER_HOLDS_UTF8(&it))
    {
        v = bson_iter_utf8(&it, &len);
    }

    s.data = (u_char *) v;
    s.len = len;

    if (ngx_http_chat_json_str(data, "content", &s) == NULL) {
        return NGX_ERROR;
    }

    v = "text";

    if (bson_iter_init_find(&it, doc, "message_type")
        && BSON_ITER_HOLDS_UTF8(&it))
    {
        v = bson_iter_utf8(&it, NULL);
    }

    if (cJSON_AddStringToObject(data, "message_type", v) == NULL) {
        return NGX_ERROR;
    }

    ms = bson_iter_init_find(&it, doc, "created_at")
         && BSON_ITER_HOLDS_DATE_TIME(&it) ? bson_iter_date_time(&it) : 0;

    p = ngx_pnalloc(r->pool, sizeof("YYYY-MM-DDTHH:MM:SS.ffffff"));
    if (p == NULL) {
        return NGX_ERROR;
    }

    s.data = p;
    s.len = ngx_http_chat_iso_time(p, ms / 1000, (ms % 1000) * 1000) - p;

    if (ngx_http_chat_json_str(data, "created_at", &s) == NULL
        || cJSON_AddFalseToObject(data, "is_deleted") == NULL)
    {
        return NGX_ERROR;
    }

    return ngx_http_chat_sse_frame(r->pool, "new_message", id, data, frame);
}


static void
ngx_http_chat_msg_stream_free(ngx_http_chat_msg_stream_t *st)
{
    size_t  i;

    for (i = 0; i < st->ndocs; i++) {
        bson_destroy(st->docs[i]);
    }

    bson_free(st->docs);

    st->docs = NULL;
    st->ndocs = 0;
}
