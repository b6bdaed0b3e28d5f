
/*
 * The diagnostics location ("chat_diagnostics"): one round trip through
 * each part of the core, for operators and for the core's own tests.  It
 * stores nothing but a throw-away key and document, yet it issues tokens:
 * never expose it on a public listener.
 */


#include "ngx_http_chat_core_module.h"


typedef struct {
    ngx_str_t                   value;
    bson_oid_t                  oid;
    char                       *found;
    ngx_http_chat_bcrypt_t      bcrypt;
} ngx_http_chat_diag_t;


static ngx_int_t ngx_http_chat_diag_echo(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_whoami(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_token(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_logout(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_revoked(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_chat_diag_mysql(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_sleep(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_mysql_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_diag_redis(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_redis_set(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_chat_diag_redis_get(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_chat_diag_mongo(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_mongo_run(mongoc_database_t *db,
    void *data);
static ngx_int_t ngx_http_chat_diag_mongo_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_diag_bcrypt(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_hashed(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_diag_verified(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_diag_event(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_stream(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_publish(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_diag_channel(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_str_t *channel);
static ngx_http_chat_diag_t *ngx_http_chat_diag_data(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, const char *arg);


static ngx_http_chat_route_t  ngx_http_chat_diag_routes[] = {

    { NGX_HTTP_POST, ngx_string("/diag/echo"), NGX_HTTP_CHAT_JSON,
      ngx_http_chat_diag_echo },

    { NGX_HTTP_GET, ngx_string("/diag/whoami"), NGX_HTTP_CHAT_AUTH,
      ngx_http_chat_diag_whoami },

    { NGX_HTTP_POST, ngx_string("/diag/token"), NGX_HTTP_CHAT_JSON,
      ngx_http_chat_diag_token },

    { NGX_HTTP_POST, ngx_string("/diag/logout"), NGX_HTTP_CHAT_AUTH,
      ngx_http_chat_diag_logout },

    { NGX_HTTP_GET, ngx_string("/diag/mysql"), 0,
      ngx_http_chat_diag_mysql },

    { NGX_HTTP_GET, ngx_string("/diag/mysql/sleep"), 0,
      ngx_http_chat_diag_sleep },

    { NGX_HTTP_GET, ngx_string("/diag/redis"), 0,
      ngx_http_chat_diag_redis },

    { NGX_HTTP_GET, ngx_string("/diag/mongo"), 0,
      ngx_http_chat_diag_mongo },

    { NGX_HTTP_GET, ngx_string("/diag/bcrypt"), 0,
      ngx_http_chat_diag_bcrypt },

    { NGX_HTTP_POST, ngx_string("/diag/event"), NGX_HTTP_CHAT_JSON,
      ngx_http_chat_diag_event },

    { NGX_HTTP_GET, ngx_string("/diag/stream/{}"), 0,
      ngx_http_chat_diag_stream },

    { NGX_HTTP_POST, ngx_string("/diag/publish/{}"), NGX_HTTP_CHAT_JSON,
      ngx_http_chat_diag_publish },

    { 0, ngx_null_string, 0, NULL }
};


ngx_int_t
ngx_http_chat_diag_handler(ngx_http_request_t *r)
{
    return ngx_http_chat_dispatch(r, ngx_http_chat_diag_routes);
}


static ngx_http_chat_diag_t *
ngx_http_chat_diag_data(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    const char *arg)
{
    ngx_http_chat_diag_t  *d;

    d = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_diag_t));
    if (d == NULL) {
        return NULL;
    }

    if (arg && ngx_http_chat_query_arg(r, arg, &d->value) == NGX_ERROR) {
        return NULL;
    }

    ctx->data = d;

    return d;
}


static ngx_int_t
ngx_http_chat_diag_echo(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON  *json;

    json = ngx_http_chat_json_object(r);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cJSON_AddItemReferenceToObject(json, "body", ctx->json);

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


static ngx_int_t
ngx_http_chat_diag_whoami(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON  *json;

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || cJSON_AddNumberToObject(json, "user_id", ctx->user_id) == NULL
        || ngx_http_chat_json_str(json, "email", &ctx->email) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


static ngx_int_t
ngx_http_chat_diag_token(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON      *json, *id, *email;
    ngx_str_t   mail, token;

    id = cJSON_GetObjectItemCaseSensitive(ctx->json, "user_id");
    email = cJSON_GetObjectItemCaseSensitive(ctx->json, "email");

    if (!cJSON_IsNumber(id) || !cJSON_IsString(email)) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                                         "user_id and email required");
    }

    mail.data = (u_char *) email->valuestring;
    mail.len = ngx_strlen(email->valuestring);

    if (ngx_http_chat_jwt_issue(r, id->valueint, &mail, &token) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || ngx_http_chat_json_str(json, "access_token", &token) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


static ngx_int_t
ngx_http_chat_diag_logout(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_revoke(r, ctx, ngx_http_chat_diag_revoked);
}


static ngx_int_t
ngx_http_chat_diag_revoked(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    redisReply *reply)
{
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        return ngx_http_chat_send_unavailable(r);
    }

    return ngx_http_chat_send_detail(r, NGX_HTTP_OK, "revoked");
}


/* parameters go to the server escaped, never spliced as SQL */

static ngx_int_t
ngx_http_chat_diag_mysql(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_diag_t     *d;
    ngx_http_chat_sql_arg_t  *arg;

    d = ngx_http_chat_diag_data(r, ctx, "value");
    if (d == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    arg = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_sql_arg_t));
    if (arg == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    arg->type = d->value.data ? NGX_HTTP_CHAT_SQL_STR : NGX_HTTP_CHAT_SQL_NULL;
    arg->str = d->value;

    return ngx_http_chat_sql(r, "SELECT ? AS value, CONNECTION_ID()", arg, 1,
                             ngx_http_chat_diag_mysql_done);
}


static ngx_int_t
ngx_http_chat_diag_sleep(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    int64_t                   n;
    ngx_http_chat_diag_t     *d;
    ngx_http_chat_sql_arg_t  *arg;

    d = ngx_http_chat_diag_data(r, ctx, "seconds");
    if (d == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_chat_parse_id(&d->value, &n) != NGX_OK || n < 0 || n > 60) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                                         "seconds: 0..60");
    }

    arg = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_sql_arg_t));
    if (arg == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    arg->type = NGX_HTTP_CHAT_SQL_INT;
    arg->num = n;

    return ngx_http_chat_sql(r, "SELECT SLEEP(?), CONNECTION_ID()", arg, 1,
                             ngx_http_chat_diag_mysql_done);
}


static ngx_int_t
ngx_http_chat_diag_mysql_done(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res)
{
    cJSON  *json;

    if (res->rc == NGX_DECLINED) {
        return ngx_http_chat_send_unavailable(r);
    }

    if (res->rc != NGX_OK || res->nrows != 1 || res->ncols != 2) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         "unexpected result");
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || ngx_http_chat_json_nstr(json, "value", &res->cells[0]) == NULL
        || ngx_http_chat_json_nstr(json, "connection", &res->cells[1])
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/* SET then GET: two dependent operations in one request */

static ngx_int_t
ngx_http_chat_diag_redis(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_diag_t  *d;
    const char            *argv[5];
    size_t                 argvlen[5];

    d = ngx_http_chat_diag_data(r, ctx, "value");
    if (d == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = "chat:diag";
    argvlen[1] = sizeof("chat:diag") - 1;
    argv[2] = (const char *) d->value.data;
    argvlen[2] = d->value.len;
    argv[3] = "EX";
    argvlen[3] = 2;
    argv[4] = "60";
    argvlen[4] = 2;

    return ngx_http_chat_redis(r, ngx_http_chat_diag_redis_set, 5, argv,
                               argvlen);
}


static ngx_int_t
ngx_http_chat_diag_redis_set(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    redisReply *reply)
{
    const char  *argv[2];
    size_t       argvlen[2];

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        return ngx_http_chat_send_unavailable(r);
    }

    argv[0] = "GET";
    argvlen[0] = 3;
    argv[1] = "chat:diag";
    argvlen[1] = sizeof("chat:diag") - 1;

    return ngx_http_chat_redis(r, ngx_http_chat_diag_redis_get, 2, argv,
                               argvlen);
}


static ngx_int_t
ngx_http_chat_diag_redis_get(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    redisReply *reply)
{
    cJSON      *json;
    ngx_str_t   value;

    if (reply == NULL || reply->type != REDIS_REPLY_STRING) {
        return ngx_http_chat_send_unavailable(r);
    }

    value.data = (u_char *) reply->str;
    value.len = reply->len;

    json = ngx_http_chat_json_object(r);
    if (json == NULL || ngx_http_chat_json_str(json, "value", &value) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


static ngx_int_t
ngx_http_chat_diag_mongo(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_diag_t  *d;

    d = ngx_http_chat_diag_data(r, ctx, "value");
    if (d == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    bson_oid_init(&d->oid, NULL);

    return ngx_http_chat_mongo(r, ngx_http_chat_diag_mongo_run, d,
                               ngx_http_chat_diag_mongo_done);
}


/* in a pool thread: insert a document, read it back by its ObjectId */

static ngx_int_t
ngx_http_chat_diag_mongo_run(mongoc_database_t *db, void *data)
{
    ngx_http_chat_diag_t *d = data;

    bson_t                doc, filter;
    ngx_int_t             rc;
    bson_iter_t           it;
    const bson_t         *found;
    bson_error_t          error;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *coll;

    coll = mongoc_database_get_collection(db, "diag");

    bson_init(&doc);
    BSON_APPEND_OID(&doc, "_id", &d->oid);
    BSON_APPEND_UTF8(&doc, "value", d->value.data ? (char *) d->value.data
                                                  : "");

    if (!mongoc_collection_insert_one(coll, &doc, NULL, NULL, &error)) {
        rc = ngx_http_chat_mongo_error(&error);
        goto done;
    }

    bson_init(&filter);
    BSON_APPEND_OID(&filter, "_id", &d->oid);

    cursor = mongoc_collection_find_with_opts(coll, &filter, NULL, NULL);

    rc = NGX_OK;

    if (mongoc_cursor_next(cursor, &found)
        && bson_iter_init_find(&it, found, "value")
        && BSON_ITER_HOLDS_UTF8(&it))
    {
        d->found = bson_strdup(bson_iter_utf8(&it, NULL));

    } else if (mongoc_cursor_error(cursor, &error)) {
        rc = ngx_http_chat_mongo_error(&error);
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(&filter);

done:

    bson_destroy(&doc);
    mongoc_collection_destroy(coll);

    return rc;
}


static ngx_int_t
ngx_http_chat_diag_mongo_done(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc)
{
    char                   oid[25];
    cJSON                 *json;
    ngx_http_chat_diag_t  *d;

    d = ctx->data;

    if (rc != NGX_OK || d->found == NULL) {
        bson_free(d->found);
        return ngx_http_chat_send_unavailable(r);
    }

    bson_oid_to_string(&d->oid, oid);

    json = ngx_http_chat_json_object(r);

    if (json == NULL
        || cJSON_AddStringToObject(json, "id", oid) == NULL
        || cJSON_AddStringToObject(json, "value", d->found) == NULL)
    {
        bson_free(d->found);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    bson_free(d->found);

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/* hash, then verify the hash: two thread-pool round trips */

static ngx_int_t
ngx_http_chat_diag_bcrypt(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_diag_t  *d;

    d = ngx_http_chat_diag_data(r, ctx, "password");
    if (d == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (d->value.len == 0 || d->value.len >= sizeof(d->bcrypt.password)) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                                         "password: 1..79 bytes");
    }

    ngx_memcpy(d->bcrypt.password, d->value.data, d->value.len);

    return ngx_http_chat_bcrypt_hash(r, &d->bcrypt,
                                     ngx_http_chat_diag_hashed);
}


static ngx_int_t
ngx_http_chat_diag_hashed(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc)
{
    ngx_http_chat_diag_t  *d;

    d = ctx->data;

    if (rc != NGX_OK) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "bcrypt failed");
    }

    return ngx_http_chat_bcrypt_verify(r, &d->bcrypt,
                                       ngx_http_chat_diag_verified);
}


static ngx_int_t
ngx_http_chat_diag_verified(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t rc)
{
    cJSON                 *json;
    ngx_http_chat_diag_t  *d;

    d = ctx->data;

    if (rc != NGX_OK) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "bcrypt failed");
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || cJSON_AddStringToObject(json, "hash", d->bcrypt.hash) == NULL
        || cJSON_AddBoolToObject(json, "match", d->bcrypt.match) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


static ngx_int_t
ngx_http_chat_diag_event(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ngx_http_chat_event_publish(r, "diag.events", 1, "DiagEvent",
                                     ctx->json);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_detail(r, NGX_HTTP_OK,
                                     rc == NGX_OK ? "published"
                                                  : "not published");
}


static ngx_int_t
ngx_http_chat_diag_channel(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_str_t *channel)
{
    channel->len = sizeof("chat:diag:") - 1 + ctx->params[0].len;
    channel->data = ngx_pnalloc(r->pool, channel->len);
    if (channel->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(channel->data, "chat:diag:%V", &ctx->params[0]);

    return NGX_OK;
}


/* an event stream of channel "chat:diag:<name>", "connected" first */

static ngx_int_t
ngx_http_chat_diag_stream(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                *data;
    ngx_str_t             channel, frame;
    ngx_http_chat_sse_t  *s;

    data = ngx_http_chat_json_object(r);

    if (data == NULL
        || ngx_http_chat_diag_channel(r, ctx, &channel) != NGX_OK
        || ngx_http_chat_json_str(data, "channel", &channel) == NULL
        || ngx_http_chat_sse_frame(r->pool, "connected", NULL, data, &frame)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s = ngx_http_chat_sse_open(r);
    if (s == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_chat_sse_subscribe(s, &channel, 0) != NGX_OK) {
        ngx_http_chat_sse_close(s, NGX_ERROR);
        return NGX_DONE;
    }

    (void) ngx_http_chat_sse_send(s, &frame);

    return NGX_DONE;
}


/* {"event": name, "id": id or absent, "data": {...}} to the channel */

static ngx_int_t
ngx_http_chat_diag_publish(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON      *event, *id, *data;
    ngx_str_t   channel, frame, sid;

    event = cJSON_GetObjectItemCaseSensitive(ctx->json, "event");
    id = cJSON_GetObjectItemCaseSensitive(ctx->json, "id");
    data = cJSON_GetObjectItemCaseSensitive(ctx->json, "data");

    if (!cJSON_IsString(event) || data == NULL) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                                         "event and data required");
    }

    if (cJSON_IsString(id)) {
        sid.data = (u_char *) id->valuestring;
        sid.len = ngx_strlen(id->valuestring);
    }

    if (ngx_http_chat_diag_channel(r, ctx, &channel) != NGX_OK
        || ngx_http_chat_sse_frame(r->pool, event->valuestring,
                                   cJSON_IsString(id) ? &sid : NULL, data,
                                   &frame)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_chat_sse_publish(&channel, &frame) != NGX_OK) {
        return ngx_http_chat_send_unavailable(r);
    }

    return ngx_http_chat_send_detail(r, NGX_HTTP_OK, "published");
}
