
/*
 * N1, the caller's notifications, newest first, and N3, marking them as
 * read.  Only the caller's own notifications are ever seen or changed:
 * every query is bound to the authenticated user id.
 */


#include "ngx_http_chat_notify_module.h"


typedef struct {
    int64_t                     user_id;
    int64_t                     limit;
    int64_t                     skip;
    ngx_uint_t                  unread_only;

    /* filled in a pool thread */
    int64_t                     total;
    int64_t                     unread;
    bson_t                    **docs;
    size_t                      ndocs;
} ngx_http_chat_notify_list_t;


typedef struct {
    int64_t                     user_id;
    ngx_uint_t                  all;
    bson_oid_t                 *oids;       /* the client's, r->pool */
    ngx_uint_t                  noids;
    int64_t                     now;        /* read_at, ms */

    /* filled in a pool thread: what this request marked, bson_malloc() */
    bson_oid_t                 *marked;
    size_t                      nmarked;
    int64_t                     unread;
} ngx_http_chat_notify_read_t;


static ngx_int_t ngx_http_chat_notify_list_run(mongoc_database_t *db,
    void *data);
static ngx_int_t ngx_http_chat_notify_list_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static void ngx_http_chat_notify_list_free(ngx_http_chat_notify_list_t *l);
static ngx_int_t ngx_http_chat_notify_read_body(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_notify_read_t *rd,
    cJSON **errors, ngx_uint_t *empty);
static ngx_int_t ngx_http_chat_notify_mark(mongoc_collection_t *coll,
    ngx_http_chat_notify_read_t *rd, bson_oid_t *oid);
static ngx_int_t ngx_http_chat_notify_read_run(mongoc_database_t *db,
    void *data);
static ngx_int_t ngx_http_chat_notify_read_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_notify_read_publish(ngx_http_request_t *r,
    ngx_http_chat_notify_read_t *rd);


/* N1: GET /api/notifications?limit=&skip=&unread_only= */

ngx_int_t
ngx_http_chat_notify_list(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    u_char                       *p;
    cJSON                        *errors, *input;
    ngx_int_t                     rc;
    ngx_str_t                     s;
    ngx_http_chat_notify_list_t  *l;

    l = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_notify_list_t));
    if (l == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    l->user_id = ctx->user_id;
    ctx->data = l;

    errors = NULL;

    if (ngx_http_chat_query_int(r, &errors, "limit", 20, 1, 100, &l->limit)
        == NGX_ERROR
        || ngx_http_chat_query_int(r, &errors, "skip", 0, 0, INT64_MAX,
                                   &l->skip)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_chat_query_arg(r, "unread_only", &s);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK
        && ngx_http_chat_parse_bool(&s, &l->unread_only) != NGX_OK)
    {
        input = NULL;

        if (ngx_http_chat_utf8_length(&s) != NGX_ERROR) {
            p = ngx_pnalloc(r->pool, s.len + 1);
            if (p == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            *ngx_cpymem(p, s.data, s.len) = '\0';
            input = cJSON_CreateString((char *) p);
        }

        errors = ngx_http_chat_invalid(r, errors, "query", "unread_only",
                                       "bool_parsing",
                                       "Input should be a valid boolean, "
                                       "unable to interpret input", input);
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    return ngx_http_chat_mongo(r, ngx_http_chat_notify_list_run, l,
                               ngx_http_chat_notify_list_done);
}


/* in a pool thread */

static ngx_int_t
ngx_http_chat_notify_list_run(mongoc_database_t *db, void *data)
{
    ngx_http_chat_notify_list_t *l = data;

    bson_t                filter, unread, opts, sort;
    int64_t               n;
    ngx_int_t             rc;
    const bson_t         *doc;
    bson_error_t          error;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *coll;

    coll = mongoc_database_get_collection(db,
                                          NGX_HTTP_CHAT_NOTIFY_COLLECTION);

    bson_init(&filter);
    BSON_APPEND_INT64(&filter, "user_id", l->user_id);

    bson_init(&unread);
    BSON_APPEND_INT64(&unread, "user_id", l->user_id);
    BSON_APPEND_BOOL(&unread, "is_read", false);

    bson_init(&opts);

    rc = NGX_OK;

    n = mongoc_collection_count_documents(coll, &unread, NULL, NULL, NULL,
                                          &error);
    if (n < 0) {
        rc = ngx_http_chat_mongo_error(&error);
        goto done;
    }

    l->unread = n;

    if (l->unread_only) {
        l->total = n;

    } else {
        n = mongoc_collection_count_documents(coll, &filter, NULL, NULL,
                                              NULL, &error);
        if (n < 0) {
            rc = ngx_http_chat_mongo_error(&error);
            goto done;
        }

        l->total = n;
    }

    if (l->skip >= l->total) {
        goto done;
    }

    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "created_at", -1);
    BSON_APPEND_INT32(&sort, "_id", -1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "skip", l->skip);
    BSON_APPEND_INT64(&opts, "limit", l->limit);

    cursor = mongoc_collection_find_with_opts(coll,
                                              l->unread_only ? &unread
                                                             : &filter,
                                              &opts, NULL);

    l->docs = bson_malloc0(l->limit * sizeof(bson_t *));

    while (l->ndocs < (size_t) l->limit && mongoc_cursor_next(cursor, &doc)) {
        l->docs[l->ndocs++] = bson_copy(doc);
    }

    if (mongoc_cursor_error(cursor, &error)) {
        rc = ngx_http_chat_mongo_error(&error);
    }

    mongoc_cursor_destroy(cursor);

done:

    bson_destroy(&opts);
    bson_destroy(&unread);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);

    return rc;
}


static ngx_int_t
ngx_http_chat_notify_list_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc)
{
    size_t                        i;
    cJSON                        *json, *list, *item;
    ngx_http_chat_notify_list_t  *l;

    l = ctx->data;

    if (rc != NGX_OK) {
        ngx_http_chat_notify_list_free(l);
        return ngx_http_chat_send_unavailable(r);
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL) {
        goto failed;
    }

    list = cJSON_AddArrayToObject(json, "notifications");
    if (list == NULL) {
        goto failed;
    }

    for (i = 0; i < l->ndocs; i++) {
        item = ngx_http_chat_notify_json(l->docs[i], NULL);
        if (item == NULL) {
            goto failed;
        }

        cJSON_AddItemToArray(list, item);
    }

    if (ngx_http_chat_json_num(json, "total_count", l->total) == NULL
        || ngx_http_chat_json_num(json, "unread_count", l->unread) == NULL
        || cJSON_AddBoolToObject(json, "has_more",
                                 l->skip + (int64_t) l->ndocs < l->total)
           == NULL)
    {
        goto failed;
    }

    ngx_http_chat_notify_list_free(l);

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);

failed:

    ngx_http_chat_notify_list_free(l);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


static void
ngx_http_chat_notify_list_free(ngx_http_chat_notify_list_t *l)
{
    size_t  i;

    for (i = 0; i < l->ndocs; i++) {
        bson_destroy(l->docs[i]);
    }

    bson_free(l->docs);

    l->docs = NULL;
    l->ndocs = 0;
}


/*
 * N3: POST /api/notifications/read
 *     {"notification_ids": [str] (0..100), "all": bool (false)}
 */

ngx_int_t
ngx_http_chat_notify_read(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                        *errors;
    ngx_uint_t                    empty;
    ngx_time_t                   *tp;
    ngx_http_chat_notify_read_t  *rd;

    rd = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_notify_read_t));
    if (rd == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rd->user_id = ctx->user_id;
    ctx->data = rd;

    errors = NULL;
    empty = 1;

    if (ngx_http_chat_notify_read_body(r, ctx, rd, &errors, &empty)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (!rd->all && empty) {
        return ngx_http_chat_send_error(r, NGX_HTTP_BAD_REQUEST,
                                        "INVALID_INPUT",
                                        "Notification IDs cannot be empty",
                                        NULL);
    }

    tp = ngx_timeofday();
    rd->now = (int64_t) tp->sec * 1000 + tp->msec;

    return ngx_http_chat_mongo(r, ngx_http_chat_notify_read_run, rd,
                               ngx_http_chat_notify_read_done);
}


/*
 * The body's fields as pydantic checks them: every error is collected.
 * Ids that are not ObjectIds are valid input, they just match nothing.
 */

static ngx_int_t
ngx_http_chat_notify_read_body(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_notify_read_t *rd,
    cJSON **errors, ngx_uint_t *empty)
{
    u_char      msg[80];
    cJSON      *ids, *item, *loc, *ectx;
    ngx_int_t   n, i;
    ngx_str_t   s;
    ngx_uint_t  bad;

    if (ngx_http_chat_body_bool(r, errors, ctx->json, "all", 0, &rd->all)
        == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    ids = cJSON_GetObjectItemCaseSensitive(ctx->json, "notification_ids");

    if (ids == NULL || cJSON_IsNull(ids)) {
        return NGX_OK;
    }

    if (!cJSON_IsArray(ids)) {
        *errors = ngx_http_chat_invalid(r, *errors, "body",
                                        "notification_ids", "list_type",
                                        "Input should be a valid list",
                                        cJSON_Duplicate(ids, 1));
        return *errors ? NGX_OK : NGX_ERROR;
    }

    n = cJSON_GetArraySize(ids);

    if (n > NGX_HTTP_CHAT_NOTIFY_MAX_IDS) {
        *ngx_sprintf(msg, "List should have at most %d items after "
                     "validation, not %i", NGX_HTTP_CHAT_NOTIFY_MAX_IDS, n)
            = '\0';

        *errors = ngx_http_chat_invalid(r, *errors, "body",
                                        "notification_ids", "too_long",
                                        (char *) msg, NULL);
        if (*errors == NULL) {
            return NGX_ERROR;
        }

        item = cJSON_GetArrayItem(*errors, cJSON_GetArraySize(*errors) - 1);
        ectx = cJSON_AddObjectToObject(item, "ctx");

        if (ectx == NULL
            || cJSON_AddStringToObject(ectx, "field_type", "List") == NULL
            || ngx_http_chat_json_num(ectx, "max_length",
                                      NGX_HTTP_CHAT_NOTIFY_MAX_IDS)
               == NULL
            || ngx_http_chat_json_num(ectx, "actual_length", n) == NULL)
        {
            return NGX_ERROR;
        }

        /* the input is not echoed: it may be large */
        return NGX_OK;
    }

    *empty = (n == 0);

    rd->oids = ngx_palloc(r->pool, (n ? n : 1) * sizeof(bson_oid_t));
    if (rd->oids == NULL) {
        return NGX_ERROR;
    }

    bad = 0;
    i = 0;

    for (item = ids->child; item; item = item->next, i++) {

        if (!cJSON_IsString(item)) {
            *errors = ngx_http_chat_invalid(r, *errors, "body",
                                            "notification_ids",
                                            "string_type",
                                            "Input should be a valid string",
                                            cJSON_Duplicate(item, 1));
            if (*errors == NULL) {
                return NGX_ERROR;
            }

            /* the item's index completes the location */

            loc = cJSON_GetObjectItemCaseSensitive(
                      cJSON_GetArrayItem(*errors,
                                         cJSON_GetArraySize(*errors) - 1),
                      "loc");
            cJSON_AddItemToArray(loc, cJSON_CreateNumber((double) i));

            bad = 1;
            continue;
        }

        s.data = (u_char *) item->valuestring;
        s.len = ngx_strlen(item->valuestring);

        if (!bad
            && ngx_http_chat_notify_oid(&s, &rd->oids[rd->noids]) == NGX_OK)
        {
            rd->noids++;
        }
    }

    return NGX_OK;
}


/* one notification, if the caller's and unread; NGX_OK when it changed */

static ngx_int_t
ngx_http_chat_notify_mark(mongoc_collection_t *coll,
    ngx_http_chat_notify_read_t *rd, bson_oid_t *oid)
{
    bson_t        filter, update, set, reply;
    ngx_int_t     rc;
    bson_iter_t   it;
    bson_error_t  error;

    bson_init(&filter);
    BSON_APPEND_OID(&filter, "_id", oid);
    BSON_APPEND_INT64(&filter, "user_id", rd->user_id);
    BSON_APPEND_BOOL(&filter, "is_read", false);

    bson_init(&update);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
    BSON_APPEND_BOOL(&set, "is_read", true);
    BSON_APPEND_DATE_TIME(&set, "read_at", rd->now);
    bson_append_document_end(&update, &set);

    rc = NGX_DECLINED;

    if (!mongoc_collection_update_one(coll, &filter, &update, NULL, &reply,
                                      &error))
    {
        rc = ngx_http_chat_mongo_error(&error);

        /* nothing that makes the next one work: stop there */
        if (rc == NGX_DECLINED) {
            rc = NGX_ERROR;
        }

    } else if (bson_iter_init_find(&it, &reply, "modifiedCount")
               && BSON_ITER_HOLDS_NUMBER(&it)
               && bson_iter_as_int64(&it) > 0)
    {
        rc = NGX_OK;
    }

    bson_destroy(&reply);
    bson_destroy(&update);
    bson_destroy(&filter);

    return rc;
}


/* in a pool thread */

static ngx_int_t
ngx_http_chat_notify_read_run(mongoc_database_t *db, void *data)
{
    ngx_http_chat_notify_read_t *rd = data;

    bson_t                filter, opts, proj;
    size_t                i, n, size;
    int64_t               count;
    ngx_int_t             rc;
    bson_oid_t           *oids;
    bson_iter_t           it;
    const bson_t         *doc;
    bson_error_t          error;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *coll;

    coll = mongoc_database_get_collection(db,
                                          NGX_HTTP_CHAT_NOTIFY_COLLECTION);

    bson_init(&filter);
    BSON_APPEND_INT64(&filter, "user_id", rd->user_id);
    BSON_APPEND_BOOL(&filter, "is_read", false);

    rc = NGX_OK;
    oids = rd->oids;
    n = rd->noids;

    if (rd->all) {

        /* every unread one, one at a time: what changed is known exactly */

        bson_init(&opts);
        BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
        BSON_APPEND_INT32(&proj, "_id", 1);
        bson_append_document_end(&opts, &proj);

        cursor = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);

        size = 64;
        oids = bson_malloc(size * sizeof(bson_oid_t));
        n = 0;

        while (mongoc_cursor_next(cursor, &doc)) {
            if (!bson_iter_init_find(&it, doc, "_id")
                || !BSON_ITER_HOLDS_OID(&it))
            {
                continue;
            }

            if (n == size) {
                size *= 2;
                oids = bson_realloc(oids, size * sizeof(bson_oid_t));
            }

            bson_oid_copy(bson_iter_oid(&it), &oids[n++]);
        }

        if (mongoc_cursor_error(cursor, &error)) {
            rc = ngx_http_chat_mongo_error(&error);
        }

        mongoc_cursor_destroy(cursor);
        bson_destroy(&opts);

        if (rc != NGX_OK) {
            bson_free(oids);
            goto done;
        }

        rd->marked = oids;

    } else {
        rd->marked = bson_malloc((n ? n : 1) * sizeof(bson_oid_t));
    }

    for (i = 0; i < n; i++) {
        rc = ngx_http_chat_notify_mark(coll, rd, &oids[i]);

        if (rc == NGX_ERROR) {
            /* what was marked so far stays marked and is reported */
            break;
        }

        if (rc == NGX_OK) {
            /* in place for "all": the write index never passes the read */
            bson_oid_copy(&oids[i], &rd->marked[rd->nmarked++]);
        }

        rc = NGX_OK;
    }

    count = mongoc_collection_count_documents(coll, &filter, NULL, NULL,
                                              NULL, &error);
    if (count < 0) {
        if (rc == NGX_OK && rd->nmarked == 0) {
            rc = ngx_http_chat_mongo_error(&error);
        }

        count = 0;
    }

    rd->unread = count;

done:

    bson_destroy(&filter);
    mongoc_collection_destroy(coll);

    return rc;
}


static ngx_int_t
ngx_http_chat_notify_read_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc)
{
    u_char                       *p;
    cJSON                        *json;
    ngx_str_t                     msg;
    ngx_http_chat_notify_read_t  *rd;

    rd = ctx->data;

    if (rc != NGX_OK && rd->nmarked == 0) {
        bson_free(rd->marked);
        rd->marked = NULL;
        return ngx_http_chat_send_unavailable(r);
    }

    if (rd->nmarked
        && ngx_http_chat_notify_read_publish(r, rd) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "chat notify: \"notifications_read\" not published");
    }

    bson_free(rd->marked);
    rd->marked = NULL;

    p = ngx_pnalloc(r->pool, NGX_SIZE_T_LEN
                             + sizeof(" notifications marked as read"));
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    msg.data = p;
    msg.len = ngx_sprintf(p, "%uz notifications marked as read", rd->nmarked)
              - p;

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || cJSON_AddTrueToObject(json, "success") == NULL
        || ngx_http_chat_json_num(json, "read_count", rd->nmarked) == NULL
        || ngx_http_chat_json_str(json, "message", &msg) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/* the SSE frame to the caller's streams and the NotificationsRead event */

static ngx_int_t
ngx_http_chat_notify_read_publish(ngx_http_request_t *r,
    ngx_http_chat_notify_read_t *rd)
{
    char                               hex[25];
    size_t                             i;
    cJSON                             *data, *ids, *fields;
    ngx_str_t                          frame, channel, now;
    ngx_http_chat_notify_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_notify_module);

    data = ngx_http_chat_json_object(r);
    fields = ngx_http_chat_json_object(r);

    if (data == NULL || fields == NULL) {
        return NGX_ERROR;
    }

    ids = cJSON_AddArrayToObject(data, "notification_ids");
    if (ids == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < rd->nmarked; i++) {
        bson_oid_to_string(&rd->marked[i], hex);
        cJSON_AddItemToArray(ids, cJSON_CreateString(hex));
    }

    if (cJSON_GetArraySize(ids) != (int) rd->nmarked
        || ngx_http_chat_json_num(data, "read_count", rd->nmarked) == NULL
        || ngx_http_chat_json_num(data, "unread_count", rd->unread) == NULL
        || ngx_http_chat_iso_now(r->pool, &now) != NGX_OK
        || ngx_http_chat_json_str(data, "timestamp", &now) == NULL
        || ngx_http_chat_sse_frame(r->pool, "notifications_read", NULL, data,
                                   &frame)
           != NGX_OK
        || ngx_http_chat_notify_channel(r->pool, &nmcf->group, rd->user_id,
                                        &channel)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    (void) ngx_http_chat_sse_publish(&channel, &frame);

    if (ngx_http_chat_json_num(fields, "user_id", rd->user_id) == NULL) {
        return NGX_ERROR;
    }

    cJSON_AddItemToObject(fields, "notification_ids",
                          cJSON_Duplicate(ids, 1));

    if (ngx_http_chat_json_num(fields, "read_count", rd->nmarked) == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_http_chat_event_publish(r, NGX_HTTP_CHAT_NOTIFY_TOPIC,
                                       rd->user_id, "NotificationsRead",
                                       fields);

    return NGX_OK;
}
