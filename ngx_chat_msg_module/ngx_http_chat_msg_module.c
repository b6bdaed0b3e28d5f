
/*
 * nginx-chat chat service: the "chat_msg" location handler, its routes,
 * and what the endpoints and the stream share: the room checks, message
 * documents and their JSON, stream frames, MongoDB steps.
 */


#include "ngx_http_chat_msg_module.h"

#include <sys/time.h>


static char *ngx_http_chat_msg(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_chat_msg_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_chat_msg_room_query(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, int64_t room_id, const char *sql,
    ngx_http_chat_handler_pt next);
static ngx_int_t ngx_http_chat_msg_room_loaded(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static void ngx_http_chat_msg_bson_cleanup(void *data);
static ngx_int_t ngx_http_chat_msg_mongo_run(mongoc_database_t *db,
    void *data);
static ngx_int_t ngx_http_chat_msg_indexes(mongoc_database_t *db,
    bson_error_t *error);
static int64_t ngx_http_chat_msg_bson_time(bson_iter_t *it);


static ngx_command_t  ngx_http_chat_msg_commands[] = {

    { ngx_string("chat_msg"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chat_msg,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_chat_msg_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_chat_msg_module = {
    NGX_MODULE_V1,
    &ngx_http_chat_msg_module_ctx,         /* module context */
    ngx_http_chat_msg_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * The first match wins, so literal paths come before "{}" (DEV-1: the
 * original matched POST /api/messages/read as a send to room "read").
 * The stream authenticates itself: EventSource cannot send a header, so
 * it also takes ?access_token=.
 */

static ngx_http_chat_route_t  ngx_http_chat_msg_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/chat-rooms"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY, ngx_http_chat_msg_rooms },

    { NGX_HTTP_GET, ngx_string("/api/chat-rooms/check/{participant_id}"),
      NGX_HTTP_CHAT_AUTH, ngx_http_chat_msg_room_get_or_create },

    { NGX_HTTP_GET, ngx_string("/api/chat-rooms/{room_id}"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY, ngx_http_chat_msg_room },

    { NGX_HTTP_POST, ngx_string("/api/messages/read"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_JSON, ngx_http_chat_msg_read },

    { NGX_HTTP_GET, ngx_string("/api/messages/room/{room_id}/unread-count"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY, ngx_http_chat_msg_unread },

    { NGX_HTTP_GET, ngx_string("/api/messages/stream/{room_id}"),
      0, ngx_http_chat_msg_stream },

    { NGX_HTTP_GET, ngx_string("/api/messages/{message_id}/reactions"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY, ngx_http_chat_msg_reactions },

    { NGX_HTTP_POST, ngx_string("/api/messages/{message_id}/reactions"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_JSON, ngx_http_chat_msg_react },

    { NGX_HTTP_DELETE,
      ngx_string("/api/messages/{message_id}/reactions/{emoji}"),
      NGX_HTTP_CHAT_AUTH, ngx_http_chat_msg_unreact },

    { NGX_HTTP_POST, ngx_string("/api/messages/{room_id}/typing"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_JSON|NGX_HTTP_CHAT_JSON_OPTIONAL,
      ngx_http_chat_msg_typing },

    { NGX_HTTP_POST, ngx_string("/api/messages/{room_id}"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_JSON, ngx_http_chat_msg_send },

    { NGX_HTTP_GET, ngx_string("/api/messages/{room_id}"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY, ngx_http_chat_msg_page },

    { NGX_HTTP_PUT, ngx_string("/api/messages/{message_id}"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_JSON, ngx_http_chat_msg_edit },

    { NGX_HTTP_DELETE, ngx_string("/api/messages/{message_id}"),
      NGX_HTTP_CHAT_AUTH, ngx_http_chat_msg_delete },

    { 0, ngx_null_string, 0, NULL }
};


/* written by pool threads: the collections' indexes exist */
static volatile ngx_atomic_t  ngx_http_chat_msg_indexed;

static ngx_str_t  ngx_http_chat_msg_unknown = ngx_string("Unknown");


static char *
ngx_http_chat_msg(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_chat_msg_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_chat_msg_handler(ngx_http_request_t *r)
{
    return ngx_http_chat_dispatch(r, ngx_http_chat_msg_routes);
}


ngx_http_chat_msg_ctx_t *
ngx_http_chat_msg_get_ctx(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    if (ctx->data == NULL) {
        ctx->data = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_msg_ctx_t));
    }

    return ctx->data;
}


ngx_int_t
ngx_http_chat_msg_room_check(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    int64_t room_id, ngx_http_chat_handler_pt next)
{
    return ngx_http_chat_msg_room_query(r, ctx, room_id,
                                        NGX_HTTP_CHAT_MSG_ROOMS
                                        "WHERE r.id = ?", next);
}


/* what a member says to the other: the same, and 403 for a blocked pair */

ngx_int_t
ngx_http_chat_msg_room_check_open(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, int64_t room_id, ngx_http_chat_handler_pt next)
{
    return ngx_http_chat_msg_room_query(r, ctx, room_id,
                                        NGX_HTTP_CHAT_MSG_ROOMS_BLOCKED
                                        "WHERE r.id = ?", next);
}


static ngx_int_t
ngx_http_chat_msg_room_query(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    int64_t room_id, const char *sql, ngx_http_chat_handler_pt next)
{
    ngx_http_chat_sql_arg_t   arg;
    ngx_http_chat_msg_ctx_t  *mctx;

    mctx = ngx_http_chat_msg_get_ctx(r, ctx);
    if (mctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    mctx->room_id = room_id;

    arg.type = NGX_HTTP_CHAT_SQL_INT;
    arg.num = room_id;

    return ngx_http_chat_sql_then(r, sql, &arg, 1,
                                  ngx_http_chat_msg_room_loaded, next);
}


static ngx_int_t
ngx_http_chat_msg_room_loaded(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res)
{
    ngx_int_t  rc;

    if (ngx_http_chat_msg_room_verdict(r, ctx, res, &rc) != NGX_OK) {
        return rc;
    }

    return res->next(r, ctx);
}


ngx_int_t
ngx_http_chat_msg_room_verdict(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res, ngx_int_t *rc)
{
    int64_t                    blocked;
    ngx_http_chat_msg_ctx_t   *mctx;
    ngx_http_chat_msg_room_t  *room;

    if (res->rc != NGX_OK
        || (res->nrows && res->ncols != NGX_HTTP_CHAT_MSG_ROOM_NCOLS
            && res->ncols != NGX_HTTP_CHAT_MSG_ROOM_NCOLS + 1))
    {
        *rc = ngx_http_chat_msg_sql_failed(r, res);
        return NGX_DONE;
    }

    if (res->nrows == 0) {
        *rc = ngx_http_chat_msg_send_not_found(r, "Chat room");
        return NGX_DONE;
    }

    mctx = ctx->data;
    room = &mctx->room;

    if (ngx_http_chat_msg_room_row(res->cells, room) != NGX_OK) {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DONE;
    }

    if (ctx->user_id != room->user_1_id && ctx->user_id != room->user_2_id) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "chat msg: user %i is not a member of room %L",
                      ctx->user_id, room->id);

        *rc = ngx_http_chat_send_error(r, NGX_HTTP_FORBIDDEN,
                                       "authorization_error",
                                       "Access denied to this chat room",
                                       NULL);
        return NGX_DONE;
    }

    /* NGX_HTTP_CHAT_MSG_ROOMS_BLOCKED: "1" when the pair is blocked */

    if (res->ncols > NGX_HTTP_CHAT_MSG_ROOM_NCOLS
        && ngx_http_chat_parse_id(&res->cells[NGX_HTTP_CHAT_MSG_ROOM_NCOLS],
                                  &blocked)
           == NGX_OK
        && blocked)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "chat msg: the members of room %L are blocked",
                      room->id);

        *rc = ngx_http_chat_msg_send_blocked(r);
        return NGX_DONE;
    }

    return NGX_OK;
}


/* a row of NGX_HTTP_CHAT_MSG_ROOMS; the cells stay in the request pool */

ngx_int_t
ngx_http_chat_msg_room_row(ngx_str_t *c, ngx_http_chat_msg_room_t *room)
{
    if (ngx_http_chat_parse_id(&c[0], &room->id) != NGX_OK
        || ngx_http_chat_parse_id(&c[1], &room->user_1_id) != NGX_OK
        || ngx_http_chat_parse_id(&c[2], &room->user_2_id) != NGX_OK)
    {
        return NGX_ERROR;
    }

    room->created_at = c[3];
    room->updated_at = c[4];
    room->user_1_name = c[5];
    room->user_2_name = c[6];

    return NGX_OK;
}


ngx_int_t
ngx_http_chat_msg_room_path(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_str_t *param, ngx_http_chat_handler_pt next)
{
    cJSON    *errors;
    int64_t   id;

    errors = NULL;

    if (ngx_http_chat_check_int(r, &errors, "path", "room_id", param,
                                INT64_MIN, INT64_MAX, &id)
        == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (id <= 0) {
        return ngx_http_chat_send_not_positive(r, "room_id", id);
    }

    return ngx_http_chat_msg_room_check(r, ctx, id, next);
}


/* the blocked side is not told that it is, nor by whom */

ngx_int_t
ngx_http_chat_msg_send_blocked(ngx_http_request_t *r)
{
    return ngx_http_chat_send_error(r, NGX_HTTP_FORBIDDEN,
                                    "authorization_error",
                                    "Cannot chat with this user", NULL);
}


/* E-B 404 with {"resource":"<resource>"} */

ngx_int_t
ngx_http_chat_msg_send_not_found(ngx_http_request_t *r, const char *resource)
{
    u_char   msg[64];
    cJSON   *details;

    details = cJSON_CreateObject();
    if (details == NULL
        || cJSON_AddStringToObject(details, "resource", resource) == NULL)
    {
        cJSON_Delete(details);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_snprintf(msg, sizeof(msg) - 1, "%s not found", resource) = '\0';

    return ngx_http_chat_send_error(r, NGX_HTTP_NOT_FOUND,
                                    "resource_not_found", (char *) msg,
                                    details);
}


ngx_str_t *
ngx_http_chat_msg_username(ngx_http_chat_msg_room_t *room, int64_t user_id)
{
    ngx_str_t  *name;

    if (user_id == room->user_1_id) {
        name = &room->user_1_name;

    } else if (user_id == room->user_2_id) {
        name = &room->user_2_name;

    } else {
        return &ngx_http_chat_msg_unknown;
    }

    return name->data ? name : &ngx_http_chat_msg_unknown;
}


ngx_int_t
ngx_http_chat_msg_channel(ngx_pool_t *pool, int64_t room_id,
    ngx_str_t *channel)
{
    channel->data = ngx_pnalloc(pool, sizeof("chat:room:") + NGX_INT64_LEN);
    if (channel->data == NULL) {
        return NGX_ERROR;
    }

    channel->len = ngx_sprintf(channel->data, "chat:room:%L", room_id)
                   - channel->data;

    return NGX_OK;
}


/* like events, frames never change a response: failures are only logged */

ngx_int_t
ngx_http_chat_msg_publish(ngx_http_request_t *r, int64_t room_id,
    const char *event, ngx_str_t *id, cJSON *data)
{
    ngx_str_t  channel, frame;

    if (data == NULL
        || ngx_http_chat_msg_channel(r->pool, room_id, &channel) != NGX_OK
        || ngx_http_chat_sse_frame(r->pool, event, id, data, &frame)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_chat_sse_publish(&channel, &frame) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "chat msg: \"%s\" not published to \"%V\": "
                      "Redis unavailable", event, &channel);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * An action on the room: its event on message.events (fields), and the
 * same fields with "timestamp" (and "action", when given) as the stream
 * event to the room's streams
 */

ngx_int_t
ngx_http_chat_msg_announce(ngx_http_request_t *r, int64_t room_id,
    const char *type, const char *event, cJSON *fields, const char *action)
{
    cJSON      *data;
    ngx_str_t   now;

    (void) ngx_http_chat_event_publish(r, "message.events", room_id, type,
                                       fields);

    data = cJSON_Duplicate(fields, 1);

    if (data == NULL
        || (action && cJSON_AddStringToObject(data, "action", action) == NULL)
        || ngx_http_chat_iso_now(r->pool, &now) != NGX_OK
        || ngx_http_chat_json_str(data, "timestamp", &now) == NULL)
    {
        cJSON_Delete(data);
        return NGX_ERROR;
    }

    (void) ngx_http_chat_msg_publish(r, room_id, event, NULL, data);
    cJSON_Delete(data);

    return NGX_OK;
}


/*
 * in a pool thread: the documents a find returns, into op->reply as
 * {"0": doc, "1": doc, ...}; *n of them when n is not NULL
 */

ngx_int_t
ngx_http_chat_msg_collect(mongoc_collection_t *coll, const bson_t *filter,
    const bson_t *opts, ngx_http_chat_msg_op_t *op, ngx_uint_t *n)
{
    char              buf[16];
    uint32_t          i;
    ngx_int_t         rc;
    const char       *key;
    const bson_t     *doc;
    mongoc_cursor_t  *cursor;

    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    for (i = 0; mongoc_cursor_next(cursor, &doc); i++) {
        bson_uint32_to_string(i, &key, buf, sizeof(buf));
        bson_append_document(op->reply, key, -1, doc);
    }

    if (n) {
        *n = i;
    }

    rc = mongoc_cursor_error(cursor, &op->error)
         ? ngx_http_chat_mongo_error(&op->error) : NGX_OK;

    mongoc_cursor_destroy(cursor);

    return rc;
}


int64_t
ngx_http_chat_msg_now(void)
{
    struct timeval  tv;

    ngx_gettimeofday(&tv);

    return (int64_t) tv.tv_sec * 1000000 + tv.tv_usec;
}


cJSON *
ngx_http_chat_msg_json_time(cJSON *obj, const char *name, int64_t us)
{
    u_char     buf[32];
    ngx_str_t  s;

    if (us == NGX_HTTP_CHAT_MSG_NO_TIME) {
        return cJSON_AddNullToObject(obj, name);
    }

    s.data = buf;
    s.len = ngx_http_chat_iso_time(buf, (time_t) (us / 1000000),
                                   (ngx_uint_t) (us % 1000000))
            - buf;

    return ngx_http_chat_json_str(obj, name, &s);
}


/* one code point of what Python's str.isspace() calls whitespace */

static ngx_uint_t
ngx_http_chat_msg_space_char(uint32_t ch)
{
    switch (ch) {
    case ' ': case '\t': case '\n': case '\v': case '\f': case '\r':
    case 0x1c: case 0x1d: case 0x1e: case 0x1f:
    case 0x85: case 0xa0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000:
        return 1;
    }

    return (ch >= 0x2000 && ch <= 0x200a);
}


/* nothing but whitespace: what the original's content.strip() rejects */

ngx_uint_t
ngx_http_chat_msg_blank(ngx_str_t *s)
{
    u_char    *p, *last;
    uint32_t   ch;

    p = s->data;
    last = p + s->len;

    while (p < last) {
        ch = (*p < 0x80) ? *p++ : ngx_utf8_decode(&p, last - p);

        /* a truncated sequence leaves p where it was */

        if (ch > 0x10ffff || !ngx_http_chat_msg_space_char(ch)) {
            return 0;
        }
    }

    return 1;
}


/* any whitespace at all */

ngx_uint_t
ngx_http_chat_msg_space(ngx_str_t *s)
{
    u_char    *p, *last;
    uint32_t   ch;

    p = s->data;
    last = p + s->len;

    while (p < last) {
        ch = (*p < 0x80) ? *p++ : ngx_utf8_decode(&p, last - p);

        /* not UTF-8 counts as whitespace: such a value is refused too */

        if (ch > 0x10ffff || ngx_http_chat_msg_space_char(ch)) {
            return 1;
        }
    }

    return 0;
}


static int64_t
ngx_http_chat_msg_bson_time(bson_iter_t *it)
{
    if (BSON_ITER_HOLDS_DATE_TIME(it)) {
        return bson_iter_date_time(it) * 1000;
    }

    return NGX_HTTP_CHAT_MSG_NO_TIME;
}


/* a document of the original or ours; unknown fields are ignored */

ngx_int_t
ngx_http_chat_msg_parse(ngx_http_request_t *r, const bson_t *doc,
    ngx_http_chat_msg_t *m)
{
    uint32_t      len;
    const char   *key, *s;
    bson_iter_t   it;

    ngx_memzero(m, sizeof(ngx_http_chat_msg_t));

    m->created_at = NGX_HTTP_CHAT_MSG_NO_TIME;
    m->updated_at = NGX_HTTP_CHAT_MSG_NO_TIME;
    m->deleted_at = NGX_HTTP_CHAT_MSG_NO_TIME;
    m->edited_at = NGX_HTTP_CHAT_MSG_NO_TIME;
    ngx_str_set(&m->message_type, "text");

    if (!bson_iter_init(&it, doc)) {
        return NGX_ERROR;
    }

    while (bson_iter_next(&it)) {
        key = bson_iter_key(&it);

        if (ngx_strcmp(key, "_id") == 0 && BSON_ITER_HOLDS_OID(&it)) {
            m->id.data = ngx_pnalloc(r->pool, 25);
            if (m->id.data == NULL) {
                return NGX_ERROR;
            }

            bson_oid_to_string(bson_iter_oid(&it), (char *) m->id.data);
            m->id.len = 24;

        } else if (ngx_strcmp(key, "user_id") == 0
                   && BSON_ITER_HOLDS_NUMBER(&it))
        {
            m->user_id = bson_iter_as_int64(&it);

        } else if (ngx_strcmp(key, "room_id") == 0
                   && BSON_ITER_HOLDS_NUMBER(&it))
        {
            m->room_id = bson_iter_as_int64(&it);

        } else if (ngx_strcmp(key, "seq") == 0
                   && BSON_ITER_HOLDS_NUMBER(&it))
        {
            m->seq = bson_iter_as_int64(&it);

        } else if (ngx_strcmp(key, "deleted_by") == 0
                   && BSON_ITER_HOLDS_NUMBER(&it))
        {
            m->deleted_by = bson_iter_as_int64(&it);

        } else if ((ngx_strcmp(key, "content") == 0
                    || ngx_strcmp(key, "message_type") == 0)
                   && BSON_ITER_HOLDS_UTF8(&it))
        {
            s = bson_iter_utf8(&it, &len);

            if (key[0] == 'c') {
                m->content.data = ngx_pnalloc(r->pool, len);
                if (m->content.data == NULL) {
                    return NGX_ERROR;
                }

                ngx_memcpy(m->content.data, s, len);
                m->content.len = len;

            } else {
                m->message_type.data = ngx_pnalloc(r->pool, len);
                if (m->message_type.data == NULL) {
                    return NGX_ERROR;
                }

                ngx_memcpy(m->message_type.data, s, len);
                m->message_type.len = len;
            }

        } else if (ngx_strcmp(key, "is_deleted") == 0) {
            m->is_deleted = bson_iter_as_bool(&it);

        } else if (ngx_strcmp(key, "is_edited") == 0) {
            m->is_edited = bson_iter_as_bool(&it);

        } else if (ngx_strcmp(key, "created_at") == 0) {
            m->created_at = ngx_http_chat_msg_bson_time(&it);

        } else if (ngx_strcmp(key, "updated_at") == 0) {
            m->updated_at = ngx_http_chat_msg_bson_time(&it);

        } else if (ngx_strcmp(key, "deleted_at") == 0) {
            m->deleted_at = ngx_http_chat_msg_bson_time(&it);

        } else if (ngx_strcmp(key, "edited_at") == 0) {
            m->edited_at = ngx_http_chat_msg_bson_time(&it);
        }
    }

    return m->id.len ? NGX_OK : NGX_ERROR;
}


cJSON *
ngx_http_chat_msg_json(ngx_http_request_t *r, cJSON *parent,
    ngx_http_chat_msg_t *m)
{
    cJSON  *json;

    json = parent ? cJSON_CreateObject() : ngx_http_chat_json_object(r);
    if (json == NULL) {
        return NULL;
    }

    if (parent) {
        cJSON_AddItemToArray(parent, json);
    }

    if (ngx_http_chat_json_str(json, "id", &m->id) == NULL
        || ngx_http_chat_json_num(json, "user_id", m->user_id) == NULL
        || ngx_http_chat_json_num(json, "room_id", m->room_id) == NULL
        || cJSON_AddStringToObject(json, "room_type", "private") == NULL
        || ngx_http_chat_json_str(json, "content", &m->content) == NULL
        || ngx_http_chat_json_str(json, "message_type", &m->message_type)
           == NULL
        || cJSON_AddNullToObject(json, "file_url") == NULL
        || cJSON_AddNullToObject(json, "file_name") == NULL
        || cJSON_AddNullToObject(json, "file_size") == NULL
        || cJSON_AddNullToObject(json, "file_type") == NULL
        || cJSON_AddBoolToObject(json, "is_deleted", m->is_deleted) == NULL
        || ngx_http_chat_msg_json_time(json, "deleted_at", m->deleted_at)
           == NULL
        || cJSON_AddBoolToObject(json, "is_edited", m->is_edited) == NULL
        || ngx_http_chat_msg_json_time(json, "edited_at", m->edited_at)
           == NULL
        || ngx_http_chat_msg_json_time(json, "created_at", m->created_at)
           == NULL
        || ngx_http_chat_msg_json_time(json, "updated_at", m->updated_at)
           == NULL
        || cJSON_AddNullToObject(json, "read_by") == NULL
        || cJSON_AddNullToObject(json, "is_read") == NULL)
    {
        return NULL;
    }

    return json;
}


cJSON *
ngx_http_chat_msg_new_message(ngx_http_request_t *r, ngx_http_chat_msg_t *m,
    ngx_str_t *username, ngx_str_t *created_at)
{
    cJSON  *json;

    json = ngx_http_chat_json_object(r);
    if (json == NULL) {
        return NULL;
    }

    if (ngx_http_chat_json_str(json, "id", &m->id) == NULL
        || ngx_http_chat_json_num(json, "user_id", m->user_id) == NULL
        || ngx_http_chat_json_str(json, "username", username) == NULL
        || ngx_http_chat_json_num(json, "room_id", m->room_id) == NULL
        || ngx_http_chat_json_str(json, "content", &m->content) == NULL
        || ngx_http_chat_json_str(json, "message_type", &m->message_type)
           == NULL)
    {
        return NULL;
    }

    if (created_at) {
        if (ngx_http_chat_json_str(json, "created_at", created_at) == NULL) {
            return NULL;
        }

    } else if (ngx_http_chat_msg_json_time(json, "created_at", m->created_at)
               == NULL)
    {
        return NULL;
    }

    if (cJSON_AddBoolToObject(json, "is_deleted", 0) == NULL) {
        return NULL;
    }

    return json;
}


static void
ngx_http_chat_msg_bson_cleanup(void *data)
{
    bson_destroy(data);
}


/* the step's data, reused by the request's next step */

ngx_http_chat_msg_op_t *
ngx_http_chat_msg_op(ngx_http_request_t *r, ngx_http_chat_msg_ctx_t *mctx)
{
    ngx_pool_cleanup_t      *cln;
    ngx_http_chat_msg_op_t  *op;

    op = mctx->op;

    if (op) {
        bson_reinit(op->reply);
        op->status = NGX_HTTP_CHAT_MSG_FOUND;
        op->count = 0;
        return op;
    }

    op = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_msg_op_t));
    if (op == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    op->reply = bson_new();

    cln->handler = ngx_http_chat_msg_bson_cleanup;
    cln->data = op->reply;

    mctx->op = op;

    return op;
}


ngx_int_t
ngx_http_chat_msg_mongo(ngx_http_request_t *r, ngx_http_chat_msg_op_t *op,
    ngx_http_chat_msg_run_pt run, ngx_http_chat_thread_done_pt done)
{
    op->run = run;

    return ngx_http_chat_mongo(r, ngx_http_chat_msg_mongo_run, op, done);
}


/* in a pool thread */

static ngx_int_t
ngx_http_chat_msg_mongo_run(mongoc_database_t *db, void *data)
{
    ngx_http_chat_msg_op_t *op = data;

    ngx_int_t  rc;

    if (!ngx_http_chat_msg_indexed) {
        rc = ngx_http_chat_msg_indexes(db, &op->error);

        if (rc == NGX_DECLINED) {
            return rc;
        }

        /* an index that cannot be made is not retried on every request */

        ngx_http_chat_msg_indexed = 1;
    }

    return op->run(db, op);
}


/*
 * in a pool thread: the indexes of API.md 8.2 and C11, and the one the
 * page and the replay sort by; none of them is relied on for uniqueness
 */

static ngx_int_t
ngx_http_chat_msg_indexes(mongoc_database_t *db, bson_error_t *error)
{
    bson_t      *cmd;
    ngx_int_t    rc;
    ngx_uint_t   i;

    static const char  *json[] = {
        "{\"createIndexes\":\"messages\",\"indexes\":["
        "{\"key\":{\"room_id\":1,\"created_at\":-1,\"_id\":-1},"
        "\"name\":\"room_id_1_created_at_-1__id_-1\"},"
        "{\"key\":{\"room_id\":1,\"created_at\":-1},"
        "\"name\":\"room_id_1_created_at_-1\"},"
        "{\"key\":{\"user_id\":1,\"created_at\":-1},"
        "\"name\":\"user_id_1_created_at_-1\"},"
        "{\"key\":{\"room_id\":1,\"is_deleted\":1,\"created_at\":-1},"
        "\"name\":\"room_id_1_is_deleted_1_created_at_-1\"},"
        "{\"key\":{\"message_type\":1,\"created_at\":-1},"
        "\"name\":\"message_type_1_created_at_-1\"}]}",

        "{\"createIndexes\":\"messages\",\"indexes\":["
        "{\"key\":{\"content\":\"text\"},\"name\":\"content_text\"}]}",

        "{\"createIndexes\":\"message_read_status\",\"indexes\":["
        "{\"key\":{\"room_id\":1,\"user_id\":1,\"read_at\":-1},"
        "\"name\":\"room_id_1_user_id_1_read_at_-1\"},"
        "{\"key\":{\"message_id\":1,\"user_id\":1},"
        "\"name\":\"message_id_1_user_id_1\"},"
        "{\"key\":{\"user_id\":1,\"read_at\":-1},"
        "\"name\":\"user_id_1_read_at_-1\"}]}",

        "{\"createIndexes\":\"message_reactions\",\"indexes\":["
        "{\"key\":{\"message_id\":1},\"name\":\"message_id_1\"},"
        "{\"key\":{\"message_id\":1,\"user_id\":1,\"emoji\":1},"
        "\"name\":\"message_id_1_user_id_1_emoji_1\",\"unique\":true}]}"
    };

    for (i = 0; i < sizeof(json) / sizeof(json[0]); i++) {
        cmd = bson_new_from_json((const uint8_t *) json[i], -1, error);
        if (cmd == NULL) {
            return NGX_ERROR;
        }

        rc = NGX_OK;

        if (!mongoc_database_write_command_with_opts(db, cmd, NULL, NULL,
                                                     error))
        {
            rc = ngx_http_chat_mongo_error(error);
        }

        bson_destroy(cmd);

        if (rc == NGX_DECLINED) {
            return rc;
        }
    }

    return NGX_OK;
}


/* E-D as the original's middleware: 503 when MariaDB is unreachable */

ngx_int_t
ngx_http_chat_msg_sql_failed(ngx_http_request_t *r,
    ngx_http_chat_sql_res_t *res)
{
    if (res->rc == NGX_DECLINED) {
        return ngx_http_chat_send_unavailable(r);
    }

    ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                  "chat msg: unexpected SQL result, rc:%i errno:%ui",
                  res->rc, res->errnum);

    return ngx_http_chat_send_flat_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         "internal_server_error",
                                         "An unexpected error occurred");
}


/* the step failed: MongoDB is unreachable, or the operation was refused */

ngx_int_t
ngx_http_chat_msg_mongo_failed(ngx_http_request_t *r,
    ngx_http_chat_msg_op_t *op, ngx_int_t rc)
{
    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "chat msg: MongoDB operation failed: %s",
                      op->error.message);

    } else if (op->error.message[0]) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "chat msg: MongoDB unavailable: %s", op->error.message);
    }

    return ngx_http_chat_send_unavailable(r);
}


/* in a pool thread: the message op->oid appended to doc */

ngx_int_t
ngx_http_chat_msg_find(mongoc_collection_t *coll, ngx_http_chat_msg_op_t *op,
    bson_t *doc)
{
    bson_t            filter, opts;
    ngx_int_t         rc;
    const bson_t     *found;
    mongoc_cursor_t  *cursor;

    bson_init(&filter);
    BSON_APPEND_OID(&filter, "_id", &op->oid);

    bson_init(&opts);
    BSON_APPEND_INT64(&opts, "limit", 1);

    cursor = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);

    rc = NGX_OK;
    op->status = NGX_HTTP_CHAT_MSG_NOT_FOUND;

    if (mongoc_cursor_next(cursor, &found)) {
        op->status = NGX_HTTP_CHAT_MSG_FOUND;
        bson_concat(doc, found);

    } else if (mongoc_cursor_error(cursor, &op->error)) {
        rc = ngx_http_chat_mongo_error(&op->error);
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(&opts);
    bson_destroy(&filter);

    return rc;
}
