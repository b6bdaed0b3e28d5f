
/*
 * /api/profile: the caller's profile (U5, U6), another user's (U13) and
 * the profile image (U14).
 */


#include "ngx_http_chat_user_module.h"


static ngx_int_t ngx_http_chat_user_me_loaded(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_user_update_loaded(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_user_updated(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_update_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static void ngx_http_chat_user_forget(ngx_http_request_t *r, ngx_str_t *row);


/* U5 */

ngx_int_t
ngx_http_chat_user_me(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_user_load(r, ctx, ngx_http_chat_user_me_loaded);
}


static ngx_int_t
ngx_http_chat_user_me_loaded(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ctx->data;

    return ngx_http_chat_user_send_profile(r, uctx->user, 0);
}


/*
 * U6: absent or null leaves a field as it is, "" stores "".  One statement
 * for every combination: a flag argument says whether to set a column.
 */

ngx_int_t
ngx_http_chat_user_update(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                     *errors;
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ngx_http_chat_user_ctx(r, ctx);
    if (uctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    errors = NULL;

    if (ngx_http_chat_body_string(r, &errors, ctx->json, "display_name", 0,
                                  0, 100, &uctx->display_name)
        == NGX_ERROR
        || ngx_http_chat_body_string(r, &errors, ctx->json, "status_message",
                                     0, 0, 500, &uctx->status_message)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    uctx->set_display = (uctx->display_name.data != NULL);
    uctx->set_status = (uctx->status_message.data != NULL);

    return ngx_http_chat_user_load(r, ctx, ngx_http_chat_user_update_loaded);
}


static ngx_int_t
ngx_http_chat_user_update_loaded(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_sql_arg_t    args[5];
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ctx->data;

    ngx_memzero(args, sizeof(args));

    args[0].type = NGX_HTTP_CHAT_SQL_INT;
    args[0].num = uctx->set_display;
    args[1].type = uctx->set_display ? NGX_HTTP_CHAT_SQL_STR
                                     : NGX_HTTP_CHAT_SQL_NULL;
    args[1].str = uctx->display_name;
    args[2].type = NGX_HTTP_CHAT_SQL_INT;
    args[2].num = uctx->set_status;
    args[3].type = uctx->set_status ? NGX_HTTP_CHAT_SQL_STR
                                    : NGX_HTTP_CHAT_SQL_NULL;
    args[3].str = uctx->status_message;
    args[4].type = NGX_HTTP_CHAT_SQL_INT;
    args[4].num = ctx->user_id;

    return ngx_http_chat_sql(r,
                   "UPDATE users SET "
                   "display_name = IF(? = 1, ?, display_name), "
                   "status_message = IF(? = 1, ?, status_message), "
                   "updated_at = UTC_TIMESTAMP() WHERE id = ?",
                   args, 5, ngx_http_chat_user_updated);
}


static ngx_int_t
ngx_http_chat_user_updated(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res)
{
    if (res->rc == NGX_DECLINED) {
        return ngx_http_chat_send_unavailable(r);
    }

    if (res->rc != NGX_OK) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         "Failed to update profile");
    }

    return ngx_http_chat_user_reread(r, ctx, ngx_http_chat_user_update_done);
}


/* responses show the row as stored: whole seconds, as the original */

ngx_int_t
ngx_http_chat_user_reread(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_pt handler)
{
    ngx_http_chat_sql_arg_t  arg;

    arg.type = NGX_HTTP_CHAT_SQL_INT;
    arg.num = ctx->user_id;

    return ngx_http_chat_stmt(r, NGX_HTTP_CHAT_USER_BY_ID, &arg, 1, handler);
}


static ngx_int_t
ngx_http_chat_user_update_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON      *fields;
    ngx_str_t  *row;

    if (res->rc != NGX_OK || res->nrows != 1) {
        return ngx_http_chat_send_unavailable(r);
    }

    row = res->cells;

    ngx_http_chat_user_forget(r, row);

    fields = ngx_http_chat_json_object(r);
    if (fields == NULL
        || ngx_http_chat_json_num(fields, "user_id", ctx->user_id) == NULL
        || ngx_http_chat_json_nstr(fields, "display_name",
                                   &row[NGX_HTTP_CHAT_USER_DISPLAY])
           == NULL
        || ngx_http_chat_json_nstr(fields, "status_message",
                                   &row[NGX_HTTP_CHAT_USER_STATUS])
           == NULL
        || ngx_http_chat_event_publish(r, "user.events", ctx->user_id,
                                       "UserProfileUpdated", fields)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_user_send_profile(r, row, 0);
}


/*
 * The original's cache keys of a user, dropped on every change so that a
 * component still reading them never sees a stale profile.
 */

static void
ngx_http_chat_user_forget(ngx_http_request_t *r, ngx_str_t *row)
{
    u_char      *p, *last;
    size_t       len;
    const char  *argv[5];
    size_t       argvlen[5];

    len = 4 * 32 + row[NGX_HTTP_CHAT_USER_EMAIL].len
          + row[NGX_HTTP_CHAT_USER_NAME].len;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return;
    }

    last = p + len;

    argv[0] = "DEL";
    argvlen[0] = 3;

    argv[1] = (const char *) p;
    p = ngx_slprintf(p, last, "user:profile:%V",
                     &row[NGX_HTTP_CHAT_USER_ID]);
    argvlen[1] = p - (u_char *) argv[1];

    argv[2] = (const char *) p;
    p = ngx_slprintf(p, last, "user:exists:%V", &row[NGX_HTTP_CHAT_USER_ID]);
    argvlen[2] = p - (u_char *) argv[2];

    argv[3] = (const char *) p;
    p = ngx_slprintf(p, last, "user:email:%V",
                     &row[NGX_HTTP_CHAT_USER_EMAIL]);
    argvlen[3] = p - (u_char *) argv[3];

    argv[4] = (const char *) p;
    p = ngx_slprintf(p, last, "user:username:%V",
                     &row[NGX_HTTP_CHAT_USER_NAME]);
    argvlen[4] = p - (u_char *) argv[4];

    (void) ngx_http_chat_redis_send(5, argv, argvlen);
}
