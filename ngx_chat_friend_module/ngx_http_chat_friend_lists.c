
/*
 * What the friendships table says about the caller: friends (F3), pending
 * requests both ways (F4), users one could still befriend (F6), and the
 * friends who are online now (N5).
 *
 * Every list is read from the tables at the time of the request: the
 * original's cached friends list broke after its first use [DEV-6], and a
 * single indexed query is cheap enough not to need one.  Rows whose other
 * user no longer exists are left out, as the original's batch lookup did.
 */


#include "ngx_http_chat_friend_module.h"


static ngx_int_t ngx_http_chat_friend_list_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_requests_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_search_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_online_rows(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_online_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply);


/* the caller's friends' ids, for IN (...); binds the caller's id twice */

#define NGX_HTTP_CHAT_FRIEND_IDS                                              \
    "SELECT user_id_2 FROM friendships "                                      \
    "WHERE user_id_1 = ? AND status = 'accepted' AND deleted_at IS NULL "     \
    "UNION "                                                                  \
    "SELECT user_id_1 FROM friendships "                                      \
    "WHERE user_id_2 = ? AND status = 'accepted' AND deleted_at IS NULL"


/* the caller's accepted friends: id, username, last_seen_at, by id */

static ngx_int_t
ngx_http_chat_friend_accepted(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_pt done)
{
    ngx_http_chat_sql_arg_t  args[2];

    ngx_http_chat_friend_int_arg(&args[0], ctx->user_id);
    args[1] = args[0];

    return ngx_http_chat_sql(r,
                             "SELECT id, username, last_seen_at FROM users "
                             "WHERE id IN (" NGX_HTTP_CHAT_FRIEND_IDS ") "
                             "ORDER BY id",
                             args, 2, done);
}


/* F3. GET /api/friends/list */

ngx_int_t
ngx_http_chat_friend_list(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_friend_accepted(r, ctx,
                                         ngx_http_chat_friend_list_done);
}


static ngx_int_t
ngx_http_chat_friend_list_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON       *json, *item;
    ngx_str_t   *row;
    ngx_uint_t   i;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res,
                                           "Failed to get friends list");
    }

    json = ngx_http_chat_json_array(r);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < res->nrows; i++) {
        row = &res->cells[i * res->ncols];

        item = cJSON_CreateObject();
        if (item == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cJSON_AddItemToArray(json, item);

        /* the original never fills in the friend's email */

        if (ngx_http_chat_json_num(item, "user_id",
                                   ngx_http_chat_friend_cell_int(&row[0]))
            == NULL
            || ngx_http_chat_json_str(item, "username", &row[1]) == NULL
            || cJSON_AddStringToObject(item, "email", "") == NULL
            || ngx_http_chat_json_sql_time(item, "last_seen_at", &row[2])
               == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/* F4. GET /api/friends/requests */

ngx_int_t
ngx_http_chat_friend_requests(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_sql_arg_t  args[2];

    ngx_http_chat_friend_int_arg(&args[0], ctx->user_id);
    args[1] = args[0];

    /* the first column names the list a row belongs to */

    return ngx_http_chat_sql(r,
                             "SELECT 'received' AS request_type, "
                             "f.id AS friendship_id, u.id, u.username, "
                             "f.created_at "
                             "FROM friendships f "
                             "JOIN users u ON u.id = f.user_id_1 "
                             "WHERE f.user_id_2 = ? "
                             "AND f.status = 'pending' "
                             "AND f.deleted_at IS NULL "
                             "UNION ALL "
                             "SELECT 'sent', f.id, u.id, u.username, "
                             "f.created_at "
                             "FROM friendships f "
                             "JOIN users u ON u.id = f.user_id_2 "
                             "WHERE f.user_id_1 = ? "
                             "AND f.status = 'pending' "
                             "AND f.deleted_at IS NULL "
                             "ORDER BY friendship_id",
                             args, 2, ngx_http_chat_friend_requests_done);
}


static ngx_int_t
ngx_http_chat_friend_requests_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON       *json, *received, *sent, *item;
    ngx_str_t   *row;
    ngx_uint_t   i;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res,
                                           "Failed to get friend requests");
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    received = cJSON_AddArrayToObject(json, "received_requests");
    sent = cJSON_AddArrayToObject(json, "sent_requests");

    if (received == NULL || sent == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < res->nrows; i++) {
        row = &res->cells[i * res->ncols];

        item = cJSON_CreateObject();
        if (item == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (row[0].len == 4 && ngx_strncmp(row[0].data, "sent", 4) == 0) {
            cJSON_AddItemToArray(sent, item);

        } else {
            cJSON_AddItemToArray(received, item);
        }

        if (ngx_http_chat_json_num(item, "friendship_id",
                                   ngx_http_chat_friend_cell_int(&row[1]))
            == NULL
            || ngx_http_chat_json_num(item, "user_id",
                                      ngx_http_chat_friend_cell_int(&row[2]))
               == NULL
            || ngx_http_chat_json_str(item, "username", &row[3]) == NULL
            || cJSON_AddStringToObject(item, "email", "") == NULL
            || cJSON_AddStringToObject(item, "status", "pending") == NULL
            || ngx_http_chat_json_sql_time(item, "created_at", &row[4])
               == NULL
            || ngx_http_chat_json_str(item, "request_type", &row[0]) == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/*
 * F6. GET /api/friends/search [DESIGN]: active users whose username or
 * email contains "query" (case-insensitive by the columns' collation),
 * neither the caller nor a friend already, nor blocked by or blocking the
 * caller (API.md 12, F9).  LOCATE() rather than LIKE, so "%" and "_" in
 * the query are plain characters.  total_count counts every match, as U7
 * does, not only the page.
 */

ngx_int_t
ngx_http_chat_friend_search(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                    *errors;
    int64_t                   limit;
    ngx_str_t                 query;
    ngx_http_chat_sql_arg_t   args[8];

    errors = NULL;

    if (ngx_http_chat_query_string(r, &errors, "query", 1, 1,
                                   NGX_HTTP_CHAT_FRIEND_QUERY_MAX, &query)
        == NGX_ERROR
        || ngx_http_chat_query_int(r, &errors, "limit",
                                   NGX_HTTP_CHAT_FRIEND_LIMIT, 1,
                                   NGX_HTTP_CHAT_FRIEND_LIMIT_MAX, &limit)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    ngx_http_chat_friend_int_arg(&args[0], ctx->user_id);
    ngx_http_chat_friend_str_arg(&args[1], &query);
    args[2] = args[1];
    args[3] = args[0];
    args[4] = args[0];
    args[5] = args[0];
    args[6] = args[0];
    ngx_http_chat_friend_int_arg(&args[7], limit);

    return ngx_http_chat_sql(r,
                             "SELECT " NGX_HTTP_CHAT_FRIEND_PROFILE ", "
                             "COUNT(*) OVER () "
                             "FROM users u "
                             "WHERE u.is_active = 1 AND u.id <> ? "
                             "AND (LOCATE(?, u.username) > 0 "
                             "OR LOCATE(?, u.email) > 0) "
                             "AND u.id NOT IN ("
                             NGX_HTTP_CHAT_FRIEND_IDS ") "
                             "AND NOT "
                             NGX_HTTP_CHAT_SQL_BLOCKED("u.id", "?") " "
                             "ORDER BY u.id LIMIT ?",
                             args, 8, ngx_http_chat_friend_search_done);
}


static ngx_int_t
ngx_http_chat_friend_search_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON       *json, *users, *item;
    ngx_str_t   *row;
    ngx_uint_t   i, total;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res, "Failed to search users");
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    users = cJSON_AddArrayToObject(json, "users");
    if (users == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    total = 0;

    for (i = 0; i < res->nrows; i++) {
        row = &res->cells[i * res->ncols];

        item = cJSON_CreateObject();
        if (item == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cJSON_AddItemToArray(users, item);

        if (ngx_http_chat_friend_profile(item, row) == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (res->nrows) {
        total = ngx_http_chat_friend_cell_int(&res->cells[6]);
    }

    if (ngx_http_chat_json_num(json, "total_count", total) == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/*
 * GET /api/friends/online (API.md 12, N5): the accepted friends whose
 * presence key "user:online:{id}" exists, in id order.  The key, not the
 * is_online column, is what says "online" here: it is gone the moment a
 * user logs out or expires, while the column of an expiry may wait for
 * MariaDB.  One MGET asks for every friend's key at once.
 */

ngx_int_t
ngx_http_chat_friend_online(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_friend_accepted(r, ctx,
                                         ngx_http_chat_friend_online_rows);
}


static ngx_int_t
ngx_http_chat_friend_online_rows(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    u_char                   *p;
    size_t                   *argvlen;
    ngx_uint_t                i;
    const char              **argv;
    ngx_http_chat_sql_res_t  *friends;

    static ngx_str_t  none = ngx_string("[]");

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res,
                                           "Failed to get online friends");
    }

    if (res->nrows == 0) {
        return ngx_http_chat_send_raw(r, NGX_HTTP_OK, &none);
    }

    /* the rows, cells in the request pool, for the reply's turn */

    friends = ngx_palloc(r->pool, sizeof(ngx_http_chat_sql_res_t));
    argv = ngx_palloc(r->pool, (res->nrows + 1) * sizeof(char *));
    argvlen = ngx_palloc(r->pool, (res->nrows + 1) * sizeof(size_t));
    p = ngx_pnalloc(r->pool, res->nrows
                             * (sizeof("user:online:") - 1 + NGX_INT64_LEN));

    if (friends == NULL || argv == NULL || argvlen == NULL || p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *friends = *res;
    ctx->data = friends;

    argv[0] = "MGET";
    argvlen[0] = sizeof("MGET") - 1;

    for (i = 0; i < res->nrows; i++) {
        argv[i + 1] = (const char *) p;
        p = ngx_sprintf(p, "user:online:%V", &res->cells[i * res->ncols]);
        argvlen[i + 1] = (u_char *) p - (u_char *) argv[i + 1];
    }

    return ngx_http_chat_redis(r, ngx_http_chat_friend_online_done,
                               (int) res->nrows + 1, argv, argvlen);
}


static ngx_int_t
ngx_http_chat_friend_online_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply)
{
    cJSON                    *json, *item;
    ngx_str_t                *row;
    ngx_uint_t                i;
    ngx_http_chat_sql_res_t  *friends;

    friends = ctx->data;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != friends->nrows)
    {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "chat friend: presence keys not read: %*s",
                          reply->len, reply->str);
        }

        return ngx_http_chat_send_unavailable(r);
    }

    json = ngx_http_chat_json_array(r);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < friends->nrows; i++) {

        if (reply->element[i]->type == REDIS_REPLY_NIL) {
            continue;
        }

        row = &friends->cells[i * friends->ncols];

        item = cJSON_CreateObject();
        if (item == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cJSON_AddItemToArray(json, item);

        if (cJSON_AddNumberToObject(item, "user_id",
                                    ngx_http_chat_friend_cell_int(&row[0]))
            == NULL
            || ngx_http_chat_json_str(item, "username", &row[1]) == NULL
            || cJSON_AddTrueToObject(item, "is_online") == NULL
            || ngx_http_chat_json_sql_time(item, "last_seen_at", &row[2])
               == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}
