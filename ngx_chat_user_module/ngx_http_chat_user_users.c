
/*
 * /api/users: search (U7), one user (U8, and U13 on /api/profile/{id}),
 * several users (U9, U10), existence (U11).
 */


#include "ngx_http_chat_user_module.h"


/* a JSON array of ids becomes a table the IN () can join against */
#define NGX_HTTP_CHAT_USER_BY_IDS                                            \
    "SELECT " NGX_HTTP_CHAT_USER_COLUMNS " FROM users WHERE id IN "          \
    "(SELECT j.id FROM JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH '$')) "  \
    "AS j) ORDER BY id"


static ngx_int_t ngx_http_chat_user_search_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_get_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_by_ids(ngx_http_request_t *r,
    ngx_array_t *ids);
static ngx_int_t ngx_http_chat_user_list_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_exists_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);


/*
 * U7: case-insensitive substring of username or display name among active
 * users but the caller and those blocked by or blocking the caller (API.md
 * 12, F9); "%" and "_" in the query stay wildcards, as in the original.
 * The window count is the total before LIMIT.
 */

ngx_int_t
ngx_http_chat_user_search(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                    *errors;
    int64_t                   limit;
    ngx_str_t                 query;
    ngx_http_chat_sql_arg_t   args[6];

    errors = NULL;

    if (ngx_http_chat_query_string(r, &errors, "query", 1, 1, 50, &query)
        == NGX_ERROR
        || ngx_http_chat_query_int(r, &errors, "limit", 10, 1, 50, &limit)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    args[0].type = NGX_HTTP_CHAT_SQL_INT;
    args[0].num = ctx->user_id;
    args[1].type = NGX_HTTP_CHAT_SQL_STR;
    args[1].str = query;
    args[2].type = NGX_HTTP_CHAT_SQL_STR;
    args[2].str = query;
    args[3] = args[0];
    args[4] = args[0];
    args[5].type = NGX_HTTP_CHAT_SQL_INT;
    args[5].num = limit;

    return ngx_http_chat_sql(r,
                   "SELECT " NGX_HTTP_CHAT_USER_COLUMNS ", COUNT(*) OVER () "
                   "FROM users WHERE is_active = 1 AND id <> ? AND "
                   "(LOWER(username) LIKE CONCAT('%', LOWER(?), '%') OR "
                   "LOWER(display_name) LIKE CONCAT('%', LOWER(?), '%')) "
                   "AND NOT " NGX_HTTP_CHAT_SQL_BLOCKED("users.id", "?") " "
                   "ORDER BY id LIMIT ?",
                   args, 6, ngx_http_chat_user_search_done);
}


static ngx_int_t
ngx_http_chat_user_search_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON       *json, *users;
    int64_t      total;
    ngx_uint_t   i;

    ngx_http_chat_user_touch(ctx->user_id);

    if (res->rc == NGX_DECLINED) {
        return ngx_http_chat_send_unavailable(r);
    }

    if (res->rc != NGX_OK) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         "Failed to search users");
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
        if (ngx_http_chat_user_profile(r, users, &res->cells[i * res->ncols],
                                       0)
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (res->nrows
        && ngx_http_chat_parse_id(&res->cells[NGX_HTTP_CHAT_USER_NCOLS],
                                  &total)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_chat_json_num(json, "total_count", total) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/* U8 and U13: a path id, 422 E-C when not an integer, E-B' when <= 0 */

ngx_int_t
ngx_http_chat_user_get(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                    *errors;
    int64_t                   id;
    ngx_int_t                 rc;
    ngx_http_chat_sql_arg_t   arg;

    errors = NULL;

    rc = ngx_http_chat_check_int(r, &errors, "path", "user_id",
                                 &ctx->params[0], INT64_MIN, INT64_MAX, &id);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (id <= 0) {
        errors = ngx_http_chat_app_invalid(r, NULL, "user_id",
                                           "Must be a positive integer",
                                           ngx_http_chat_json_num(NULL, NULL,
                                                                  id));
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_chat_send_app_invalid(r,
                                        "user_id must be a positive integer",
                                        errors);
    }

    arg.type = NGX_HTTP_CHAT_SQL_INT;
    arg.num = id;

    return ngx_http_chat_stmt(r, NGX_HTTP_CHAT_USER_BY_ID, &arg, 1,
                              ngx_http_chat_user_get_done);
}


/* presence is refreshed here, once the token is known good (an early
 * route changes nothing before) */

static ngx_int_t
ngx_http_chat_user_get_done(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res)
{
    cJSON  *details;

    ngx_http_chat_user_touch(ctx->user_id);

    if (res->rc != NGX_OK) {
        return ngx_http_chat_send_unavailable(r);
    }

    if (res->nrows == 0) {
        details = cJSON_CreateObject();
        if (details == NULL
            || cJSON_AddStringToObject(details, "resource", "User") == NULL)
        {
            cJSON_Delete(details);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_chat_send_error(r, NGX_HTTP_NOT_FOUND,
                                        "resource_not_found",
                                        "User not found", details);
    }

    return ngx_http_chat_user_send_profile(r, res->cells, 0);
}


/*
 * U9: "user_ids=1, 2,,3": items trimmed, empty ones skipped, duplicates
 * collapse (IN does that), a non-integer is a 400; no ids at all is a 400
 * too (DEV-3: the original answered 500).
 */

ngx_int_t
ngx_http_chat_user_list(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    u_char       *p, *last, *s, *e;
    cJSON        *errors;
    int64_t      *id;
    ngx_int_t     rc;
    ngx_str_t     arg, item;
    ngx_array_t  *ids;

    rc = ngx_http_chat_query_arg(r, "user_ids", &arg);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        errors = ngx_http_chat_invalid(r, NULL, "query", "user_ids",
                                       "missing", "Field required", NULL);
        return ngx_http_chat_send_invalid(r, errors);
    }

    ids = ngx_array_create(r->pool, 16, sizeof(int64_t));
    if (ids == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = arg.data;
    last = p + arg.len;

    while (p <= last) {
        e = ngx_strlchr(p, last, ',');
        if (e == NULL) {
            e = last;
        }

        for (s = p; s < e && (*s == ' ' || *s == '\t'); s++) { /* void */ }

        item.data = s;

        for (s = e; s > item.data && (s[-1] == ' ' || s[-1] == '\t'); s--) {
            /* void */
        }

        item.len = s - item.data;

        if (item.len) {
            id = ngx_array_push(ids);
            if (id == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            if (ngx_http_chat_parse_id(&item, id) != NGX_OK) {
                return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                                                 "Invalid user ID format");
            }
        }

        p = e + 1;
    }

    if (ids->nelts == 0) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                                         "At least one user ID is required");
    }

    ngx_http_chat_user_touch(ctx->user_id);

    return ngx_http_chat_user_by_ids(r, ids);
}


/* U10: {"user_ids":[...]} with 1..100 integers */

ngx_int_t
ngx_http_chat_user_batch(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    u_char        msg[80], field[NGX_INT_T_LEN + 1];
    cJSON        *list, *item, *errors;
    int64_t      *id;
    ngx_int_t     n, i;
    ngx_array_t  *ids;

    errors = NULL;
    list = cJSON_GetObjectItemCaseSensitive(ctx->json, "user_ids");

    if (list == NULL) {
        errors = ngx_http_chat_invalid(r, NULL, "body", "user_ids", "missing",
                                       "Field required",
                                       cJSON_Duplicate(ctx->json, 1));
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (!cJSON_IsArray(list)) {
        errors = ngx_http_chat_invalid(r, NULL, "body", "user_ids",
                                       "list_type",
                                       "Input should be a valid list",
                                       cJSON_Duplicate(list, 1));
        return ngx_http_chat_send_invalid(r, errors);
    }

    n = cJSON_GetArraySize(list);

    if (n < 1 || n > 100) {
        *ngx_sprintf(msg, "List should have at %s %d item%s after "
                     "validation, not %i", n < 1 ? "least" : "most",
                     n < 1 ? 1 : 100, n < 1 ? "" : "s", n) = '\0';
        errors = ngx_http_chat_invalid(r, NULL, "body", "user_ids",
                                       n < 1 ? "too_short" : "too_long",
                                       (char *) msg,
                                       cJSON_Duplicate(list, 1));
        return ngx_http_chat_send_invalid(r, errors);
    }

    ids = ngx_array_create(r->pool, n, sizeof(int64_t));
    if (ids == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    i = 0;

    cJSON_ArrayForEach(item, list) {
        id = ngx_array_push(ids);
        if (id == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* the item's index is the last element of its "loc" */

        *ngx_sprintf(field, "%i", i++) = '\0';

        if (ngx_http_chat_json_int(r, &errors, item, "body", (char *) field,
                                   id)
            == NGX_ERROR)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    return ngx_http_chat_user_by_ids(r, ids);
}


static ngx_int_t
ngx_http_chat_user_by_ids(ngx_http_request_t *r, ngx_array_t *ids)
{
    u_char                   *p, *last;
    int64_t                  *id;
    ngx_uint_t                i;
    ngx_http_chat_sql_arg_t  *arg;

    arg = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_sql_arg_t));
    if (arg == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_pnalloc(r->pool, ids->nelts * (NGX_INT64_LEN + 1) + 2);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    arg->type = NGX_HTTP_CHAT_SQL_STR;
    arg->str.data = p;
    last = p + ids->nelts * (NGX_INT64_LEN + 1) + 2;

    id = ids->elts;
    *p++ = '[';

    for (i = 0; i < ids->nelts; i++) {
        p = ngx_slprintf(p, last, i ? ",%L" : "%L", id[i]);
    }

    *p++ = ']';
    arg->str.len = p - arg->str.data;

    return ngx_http_chat_sql(r, NGX_HTTP_CHAT_USER_BY_IDS, arg, 1,
                             ngx_http_chat_user_list_done);
}


static ngx_int_t
ngx_http_chat_user_list_done(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res)
{
    cJSON       *json;
    ngx_uint_t   i;

    if (res->rc == NGX_DECLINED) {
        return ngx_http_chat_send_unavailable(r);
    }

    if (res->rc != NGX_OK) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         "Failed to get users");
    }

    json = ngx_http_chat_json_array(r);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < res->nrows; i++) {
        if (ngx_http_chat_user_profile(r, json, &res->cells[i * res->ncols],
                                       0)
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/* U11: any integer; zero and negative ids simply do not exist */

ngx_int_t
ngx_http_chat_user_exists(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                     *errors;
    ngx_http_chat_sql_arg_t    arg;
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ngx_http_chat_user_ctx(r, ctx);
    if (uctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    errors = NULL;

    if (ngx_http_chat_check_int(r, &errors, "path", "user_id",
                                &ctx->params[0], INT64_MIN, INT64_MAX,
                                &arg.num)
        == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    arg.type = NGX_HTTP_CHAT_SQL_INT;
    uctx->id = arg.num;

    return ngx_http_chat_stmt(r, "SELECT COUNT(*) FROM users WHERE id = ?",
                              &arg, 1, ngx_http_chat_user_exists_done);
}


static ngx_int_t
ngx_http_chat_user_exists_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON                     *json;
    ngx_http_chat_user_ctx_t  *uctx;

    if (res->rc == NGX_DECLINED) {
        return ngx_http_chat_send_unavailable(r);
    }

    if (res->rc != NGX_OK || res->nrows != 1) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         "Failed to check user existence");
    }

    uctx = ctx->data;

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || ngx_http_chat_json_num(json, "user_id", uctx->id) == NULL
        || cJSON_AddBoolToObject(json, "exists",
                                 res->cells[0].data[0] != '0')
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}
