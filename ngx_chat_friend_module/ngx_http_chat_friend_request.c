
/*
 * One friend request's life (API.md 4.8): sent (F1), then accepted or
 * rejected by the addressee (F2) or cancelled by the requester (F5).
 *
 * The database keeps the state machine honest under concurrency: a unique
 * key over the unordered pair of live rows (conf/schema.sql) lets only one
 * of two crossing requests in, and every transition is an UPDATE that
 * still requires a live pending row, so of several answers to the same
 * request exactly one changes it and the others find nothing to change.
 */


#include "ngx_http_chat_friend_module.h"

#include <mysqld_error.h>


typedef struct {
    int64_t                     id;             /* friendship */
    int64_t                     requester;      /* user_id_1 */
    int64_t                     addressee;      /* user_id_2 */
    ngx_str_t                   requester_name;
    ngx_str_t                   addressee_name;
    ngx_str_t                   created_at;     /* DATETIME text */
    ngx_str_t                   now;
    ngx_uint_t                  accept;         /* F2: accept, not reject */
} ngx_http_chat_friend_t;


static ngx_http_chat_friend_t *ngx_http_chat_friend_create(
    ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_friend_send_users(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_sent(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_answer_found(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_answered(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_cancelled(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_send_friendship(ngx_http_request_t *r,
    ngx_uint_t status, ngx_http_chat_friend_t *f, const char *state);
static void ngx_http_chat_friend_event(ngx_http_request_t *r,
    ngx_http_chat_friend_t *f, const char *type, ngx_uint_t named);
static void ngx_http_chat_friend_name(ngx_str_t *name, ngx_str_t *cell);


static ngx_http_chat_friend_t *
ngx_http_chat_friend_create(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_friend_t  *f;

    f = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_friend_t));
    if (f == NULL) {
        return NULL;
    }

    if (ngx_http_chat_friend_now(r, &f->now) != NGX_OK) {
        return NULL;
    }

    /* what the original reports for a user it cannot find */
    ngx_str_set(&f->requester_name, "Unknown");
    ngx_str_set(&f->addressee_name, "Unknown");

    ctx->data = f;

    return f;
}


/* F1. POST /api/friends/request */

ngx_int_t
ngx_http_chat_friend_send(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                    *errors;
    ngx_str_t                 message;
    ngx_http_chat_friend_t   *f;
    ngx_http_chat_sql_arg_t   args[10];

    f = ngx_http_chat_friend_create(r, ctx);
    if (f == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    errors = NULL;

    /* "message" is checked as the original checks it, and never stored */

    if (ngx_http_chat_body_int(r, &errors, ctx->json, "user_id_2", 1,
                               &f->addressee)
        == NGX_ERROR
        || ngx_http_chat_body_string(r, &errors, ctx->json, "message", 0, 0,
                                     NGX_HTTP_CHAT_FRIEND_MESSAGE_MAX,
                                     &message)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    f->requester = ctx->user_id;

    if (f->addressee == f->requester) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                                   "Cannot send friend request to yourself");
    }

    /*
     * The target must exist, the pair must not be blocked either way and
     * must have no live friendship yet; both names go into the event.  The
     * check answers sequential requests even where the unique key is
     * missing; the key and the INSERT's own block check settle races.
     */

    ngx_http_chat_friend_int_arg(&args[0], f->requester);
    ngx_http_chat_friend_int_arg(&args[1], f->addressee);
    args[2] = args[1];
    args[3] = args[0];
    args[4] = args[0];
    args[5] = args[1];
    args[6] = args[1];
    args[7] = args[0];
    args[8] = args[0];
    args[9] = args[1];

    return ngx_http_chat_sql(r,
                             "SELECT id, username, EXISTS ("
                             "SELECT 1 FROM friendships "
                             "WHERE ((user_id_1 = ? AND user_id_2 = ?) "
                             "OR (user_id_1 = ? AND user_id_2 = ?)) "
                             "AND deleted_at IS NULL), "
                             NGX_HTTP_CHAT_SQL_BLOCKED("?", "?") " "
                             "FROM users WHERE id IN (?, ?)",
                             args, 10, ngx_http_chat_friend_send_users);
}


static ngx_int_t
ngx_http_chat_friend_send_users(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    int64_t                   id;
    ngx_str_t                *row;
    ngx_uint_t                i, found, live, blocked;
    ngx_http_chat_friend_t   *f;
    ngx_http_chat_sql_arg_t   args[8];

    f = ctx->data;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res,
                                           "Failed to send friend request");
    }

    found = 0;
    live = 0;
    blocked = 0;

    for (i = 0; i < res->nrows; i++) {
        row = &res->cells[i * res->ncols];
        id = ngx_http_chat_friend_cell_int(&row[0]);

        if (id == f->addressee) {
            ngx_http_chat_friend_name(&f->addressee_name, &row[1]);
            found = 1;

        } else if (id == f->requester) {
            ngx_http_chat_friend_name(&f->requester_name, &row[1]);
        }

        live = (ngx_http_chat_friend_cell_int(&row[2]) > 0);
        blocked = (ngx_http_chat_friend_cell_int(&row[3]) > 0);
    }

    if (!found) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_NOT_FOUND,
                                         "Target user not found");
    }

    if (blocked) {
        return ngx_http_chat_friend_send_blocked(r);
    }

    if (live) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                                      "Friendship already exists or pending");
    }

    /*
     * A live row of the pair made meanwhile fails on the unique key; a
     * block made meanwhile leaves nothing to insert.  The statement reads
     * block_users with locks, which is what makes a block and a request
     * racing each other safe: see ngx_http_chat_friend_block.c.
     */

    ngx_http_chat_friend_int_arg(&args[0], f->requester);
    ngx_http_chat_friend_int_arg(&args[1], f->addressee);
    ngx_http_chat_friend_str_arg(&args[2], &f->now);
    ngx_http_chat_friend_str_arg(&args[3], &f->now);
    args[4] = args[0];
    args[5] = args[1];
    args[6] = args[1];
    args[7] = args[0];

    return ngx_http_chat_sql(r,
                             "INSERT INTO friendships "
                             "(user_id_1, user_id_2, status, created_at, "
                             "updated_at, deleted_at) "
                             "SELECT ?, ?, 'pending', ?, ?, NULL FROM DUAL "
                             "WHERE NOT " NGX_HTTP_CHAT_SQL_BLOCKED("?", "?"),
                             args, 8, ngx_http_chat_friend_sent);
}


static ngx_int_t
ngx_http_chat_friend_sent(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res)
{
    ngx_http_chat_friend_t  *f;

    f = ctx->data;

    if (res->rc == NGX_ERROR && res->errnum == ER_DUP_ENTRY) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                                      "Friendship already exists or pending");
    }

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res,
                                           "Failed to send friend request");
    }

    if (res->affected == 0) {
        return ngx_http_chat_friend_send_blocked(r);
    }

    f->id = res->insert_id;
    f->created_at = f->now;

    ngx_http_chat_friend_event(r, f, "FriendRequestSent", 1);

    return ngx_http_chat_friend_send_friendship(r, NGX_HTTP_CREATED, f,
                                                "pending");
}


/* F2. PUT /api/friends/status/{requester_user_id}: the caller answers */

ngx_int_t
ngx_http_chat_friend_answer(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                    *errors;
    ngx_str_t                 action;
    ngx_http_chat_friend_t   *f;
    ngx_http_chat_sql_arg_t   args[2];

    f = ngx_http_chat_friend_create(r, ctx);
    if (f == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    errors = NULL;

    if (ngx_http_chat_check_int(r, &errors, "path", "requester_user_id",
                                &ctx->params[0], INT64_MIN, INT64_MAX,
                                &f->requester)
        == NGX_ERROR
        || ngx_http_chat_body_string(r, &errors, ctx->json, "action", 1, 0,
                                     NGX_MAX_INT_T_VALUE, &action)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (action.len == 6 && ngx_strncmp(action.data, "accept", 6) == 0) {
        f->accept = 1;

    } else if (action.len != 6 || ngx_strncmp(action.data, "reject", 6) != 0)
    {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                          "action must be either \"accept\" or \"reject\"");
    }

    f->addressee = ctx->user_id;

    ngx_http_chat_friend_int_arg(&args[0], f->requester);
    ngx_http_chat_friend_int_arg(&args[1], f->addressee);

    return ngx_http_chat_sql(r,
                             "SELECT f.id, f.created_at, "
                             "u1.username, u2.username "
                             "FROM friendships f "
                             "LEFT JOIN users u1 ON u1.id = f.user_id_1 "
                             "LEFT JOIN users u2 ON u2.id = f.user_id_2 "
                             "WHERE f.user_id_1 = ? AND f.user_id_2 = ? "
                             "AND f.status = 'pending' "
                             "AND f.deleted_at IS NULL "
                             "ORDER BY f.id LIMIT 1",
                             args, 2, ngx_http_chat_friend_answer_found);
}


static ngx_int_t
ngx_http_chat_friend_answer_found(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    ngx_str_t                *row;
    ngx_http_chat_friend_t   *f;
    ngx_http_chat_sql_arg_t   args[3];

    f = ctx->data;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res,
                                   "Failed to update friend request status");
    }

    if (res->nrows == 0) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                              "Friend request not found or already processed");
    }

    row = res->cells;

    f->id = ngx_http_chat_friend_cell_int(&row[0]);
    f->created_at = row[1];
    ngx_http_chat_friend_name(&f->requester_name, &row[2]);
    ngx_http_chat_friend_name(&f->addressee_name, &row[3]);

    /* still pending: a concurrent answer or cancel may have come first */

    ngx_http_chat_friend_str_arg(&args[0], &f->now);
    ngx_http_chat_friend_int_arg(&args[1], f->id);

    if (f->accept) {
        return ngx_http_chat_sql(r,
                                 "UPDATE friendships "
                                 "SET status = 'accepted', updated_at = ? "
                                 "WHERE id = ? AND status = 'pending' "
                                 "AND deleted_at IS NULL",
                                 args, 2, ngx_http_chat_friend_answered);
    }

    /* a rejected request is soft-deleted and keeps its "pending" status */

    ngx_http_chat_friend_str_arg(&args[1], &f->now);
    ngx_http_chat_friend_int_arg(&args[2], f->id);

    return ngx_http_chat_sql(r,
                             "UPDATE friendships "
                             "SET updated_at = ?, deleted_at = ? "
                             "WHERE id = ? AND status = 'pending' "
                             "AND deleted_at IS NULL",
                             args, 3, ngx_http_chat_friend_answered);
}


static ngx_int_t
ngx_http_chat_friend_answered(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    ngx_http_chat_friend_t  *f;

    f = ctx->data;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res,
                                   "Failed to update friend request status");
    }

    if (res->affected == 0) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                              "Friend request not found or already processed");
    }

    if (f->accept) {
        ngx_http_chat_friend_event(r, f, "FriendRequestAccepted", 1);

        return ngx_http_chat_friend_send_friendship(r, NGX_HTTP_OK, f,
                                                    "accepted");
    }

    ngx_http_chat_friend_event(r, f, "FriendRequestRejected", 0);

    return ngx_http_chat_send_message(r,
                                      "Friend request rejected successfully",
                                      NULL, 0);
}


/* F5. DELETE /api/friends/request/{target_user_id}: the caller withdraws */

ngx_int_t
ngx_http_chat_friend_cancel(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                    *errors;
    ngx_http_chat_friend_t   *f;
    ngx_http_chat_sql_arg_t   args[4];

    f = ngx_http_chat_friend_create(r, ctx);
    if (f == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    errors = NULL;

    if (ngx_http_chat_check_int(r, &errors, "path", "target_user_id",
                                &ctx->params[0], INT64_MIN, INT64_MAX,
                                &f->addressee)
        == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    f->requester = ctx->user_id;

    ngx_http_chat_friend_str_arg(&args[0], &f->now);
    ngx_http_chat_friend_str_arg(&args[1], &f->now);
    ngx_http_chat_friend_int_arg(&args[2], f->requester);
    ngx_http_chat_friend_int_arg(&args[3], f->addressee);

    return ngx_http_chat_sql(r,
                             "UPDATE friendships "
                             "SET updated_at = ?, deleted_at = ? "
                             "WHERE user_id_1 = ? AND user_id_2 = ? "
                             "AND status = 'pending' "
                             "AND deleted_at IS NULL",
                             args, 4, ngx_http_chat_friend_cancelled);
}


static ngx_int_t
ngx_http_chat_friend_cancelled(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    ngx_http_chat_friend_t  *f;

    f = ctx->data;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res,
                                           "Failed to cancel friend request");
    }

    if (res->affected == 0) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                              "Friend request not found or already processed");
    }

    ngx_http_chat_friend_event(r, f, "FriendRequestCancelled", 0);

    return ngx_http_chat_send_message(r,
                                      "Friend request cancelled successfully",
                                      "target_user_id", f->addressee);
}


/* FriendshipResponse (API.md 2.8) of a live row */

static ngx_int_t
ngx_http_chat_friend_send_friendship(ngx_http_request_t *r,
    ngx_uint_t status, ngx_http_chat_friend_t *f, const char *state)
{
    cJSON  *json;

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || ngx_http_chat_json_num(json, "id", f->id) == NULL
        || ngx_http_chat_json_num(json, "user_id_1", f->requester) == NULL
        || ngx_http_chat_json_num(json, "user_id_2", f->addressee) == NULL
        || cJSON_AddStringToObject(json, "status", state) == NULL
        || ngx_http_chat_json_sql_time(json, "created_at", &f->created_at)
           == NULL
        || ngx_http_chat_json_sql_time(json, "updated_at", &f->now) == NULL
        || cJSON_AddNullToObject(json, "deleted_at") == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, status, json);
}


/*
 * "friend.events" (API.md 9).  Sent and Accepted carry both names and are
 * keyed by the friendship; Rejected and Cancelled say friendship_id 0 and
 * are keyed by the requester.  A lost event never changes the response.
 */

static void
ngx_http_chat_friend_event(ngx_http_request_t *r, ngx_http_chat_friend_t *f,
    const char *type, ngx_uint_t named)
{
    cJSON  *fields;

    fields = ngx_http_chat_json_object(r);

    if (fields == NULL
        || ngx_http_chat_json_num(fields, "friendship_id", named ? f->id : 0)
           == NULL
        || ngx_http_chat_json_num(fields, "requester_id", f->requester) == NULL
        || (named
            && ngx_http_chat_json_str(fields, "requester_name",
                                      &f->requester_name)
               == NULL)
        || ngx_http_chat_json_num(fields, "addressee_id", f->addressee) == NULL
        || (named
            && ngx_http_chat_json_str(fields, "addressee_name",
                                      &f->addressee_name)
               == NULL))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "chat friend: event %s not published: "
                      "out of memory", type);
        return;
    }

    (void) ngx_http_chat_event_publish(r, "friend.events",
                                       named ? f->id : f->requester,
                                       type, fields);
}


/*
 * The current UTC time as DATETIME text.  The application sets every
 * timestamp (no column has a default), in whole seconds as they read back.
 */

ngx_int_t
ngx_http_chat_friend_now(ngx_http_request_t *r, ngx_str_t *now)
{
    u_char    *p;
    ngx_tm_t   tm;

    p = ngx_pnalloc(r->pool, sizeof("YYYY-MM-DD HH:MM:SS") - 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_gmtime(ngx_time(), &tm);

    now->data = p;
    now->len = ngx_sprintf(p, "%4d-%02d-%02d %02d:%02d:%02d",
                           tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                           tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec)
               - p;

    return NGX_OK;
}


/* a username read through a LEFT JOIN: NULL keeps "Unknown" */

static void
ngx_http_chat_friend_name(ngx_str_t *name, ngx_str_t *cell)
{
    if (cell->data) {
        *name = *cell;
    }
}
