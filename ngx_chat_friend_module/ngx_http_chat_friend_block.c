
/*
 * Removing a friend (F8) and blocks (F9), API.md 12.
 *
 * A block and a friend request racing each other.  A block is two
 * statements, each committed on its own: the block_users row is inserted
 * (I), then every live friendship of the pair is soft-deleted (D).  F1
 * inserts its request with "INSERT ... SELECT ... WHERE NOT EXISTS (a
 * block of the pair)" (S).  Under REPEATABLE READ, the default of MariaDB
 * and MySQL, the SELECT of an INSERT ... SELECT is a locking read: S takes
 * shared next-key locks on the block_users index range of the pair, also
 * where no row is.  So:
 *
 *   - S reads before I: I's insert waits for S's gap lock until S has
 *     committed; D starts after I committed, and as an UPDATE it reads
 *     the latest committed rows: it finds S's request and deletes it;
 *   - I has committed before S reads: S sees the block, inserts nothing;
 *   - I is in flight when S reads: S waits for I's row lock, then sees
 *     the block, inserts nothing.
 *
 * Whatever the interleaving, no live request is left once both have
 * answered; F1 answers 403 when its INSERT inserted nothing.  An answer
 * to a request (F2 accept) is an UPDATE of a live row, and D's UPDATE of
 * the same row waits for it or makes it find nothing: after a block the
 * pair has no live friendship either.  A block that fails between I and D
 * answers an error; sending it again finds the row (200) and runs D again.
 *
 * Notifications from one to the other are held back by the notification
 * consumer, which asks for a block before it stores one (see
 * ngx_http_chat_notify_consumer.c).
 */


#include "ngx_http_chat_friend_module.h"

#include <mysqld_error.h>


/* a block sent again when its INSERT met a twin (a concurrent block) */
#define NGX_HTTP_CHAT_FRIEND_BLOCK_TRIES  3


typedef struct {
    int64_t                     id;             /* block, friendship */
    int64_t                     user_id;        /* the caller */
    int64_t                     other;          /* the other user */
    ngx_str_t                   created_at;     /* DATETIME text */
    ngx_str_t                   now;
    ngx_uint_t                  status;         /* 201 made, 200 existed */
    ngx_uint_t                  tries;
} ngx_http_chat_friend_block_t;


static ngx_http_chat_friend_block_t *ngx_http_chat_friend_block_create(
    ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_friend_path_id(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, const char *name, int64_t *id, ngx_int_t *rc);
static ngx_int_t ngx_http_chat_friend_removed(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_block_lookup(ngx_http_request_t *r,
    ngx_http_chat_friend_block_t *b);
static ngx_int_t ngx_http_chat_friend_block_found(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_block_inserted(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_block_ended(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_unblocked(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_friend_blocked_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static cJSON *ngx_http_chat_friend_block_json(cJSON *obj, int64_t id,
    int64_t user_id, int64_t blocked_user_id, ngx_str_t *created_at);
static void ngx_http_chat_friend_block_event(ngx_http_request_t *r,
    ngx_http_chat_friend_block_t *b, const char *type);


static ngx_http_chat_friend_block_t *
ngx_http_chat_friend_block_create(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_friend_block_t  *b;

    b = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_friend_block_t));
    if (b == NULL) {
        return NULL;
    }

    if (ngx_http_chat_friend_now(r, &b->now) != NGX_OK) {
        return NULL;
    }

    b->user_id = ctx->user_id;

    ctx->data = b;

    return b;
}


/*
 * The user id of the path: NGX_OK, or NGX_DONE when answered (422 E-C not
 * an integer, 422 E-B' not positive), *rc what the request is finalized
 * with
 */

static ngx_int_t
ngx_http_chat_friend_path_id(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    const char *name, int64_t *id, ngx_int_t *rc)
{
    cJSON  *errors;

    errors = NULL;

    if (ngx_http_chat_check_int(r, &errors, "path", name, &ctx->params[0],
                                INT64_MIN, INT64_MAX, id)
        == NGX_ERROR)
    {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DONE;
    }

    if (errors) {
        *rc = ngx_http_chat_send_invalid(r, errors);
        return NGX_DONE;
    }

    if (*id <= 0) {
        *rc = ngx_http_chat_send_not_positive(r, name, *id);
        return NGX_DONE;
    }

    return NGX_OK;
}


/*
 * F8. DELETE /api/friends/{friend_user_id}: the accepted friendship of
 * the pair is soft-deleted.  One UPDATE, so of two removals at once (one
 * by each side) exactly one finds the row; LAST_INSERT_ID(id) hands back
 * the id of the row it changed, for the event.
 */

ngx_int_t
ngx_http_chat_friend_remove(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_int_t                      rc;
    ngx_http_chat_sql_arg_t        args[6];
    ngx_http_chat_friend_block_t  *b;

    b = ngx_http_chat_friend_block_create(r, ctx);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_chat_friend_path_id(r, ctx, "friend_user_id", &b->other,
                                     &rc)
        != NGX_OK)
    {
        return rc;
    }

    ngx_http_chat_friend_str_arg(&args[0], &b->now);
    args[1] = args[0];
    ngx_http_chat_friend_int_arg(&args[2], b->user_id);
    ngx_http_chat_friend_int_arg(&args[3], b->other);
    args[4] = args[3];
    args[5] = args[2];

    return ngx_http_chat_sql(r,
                             "UPDATE friendships "
                             "SET updated_at = ?, deleted_at = ?, "
                             "id = LAST_INSERT_ID(id) "
                             "WHERE ((user_id_1 = ? AND user_id_2 = ?) "
                             "OR (user_id_1 = ? AND user_id_2 = ?)) "
                             "AND status = 'accepted' "
                             "AND deleted_at IS NULL",
                             args, 6, ngx_http_chat_friend_removed);
}


static ngx_int_t
ngx_http_chat_friend_removed(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res)
{
    cJSON                         *fields;
    ngx_http_chat_friend_block_t  *b;

    b = ctx->data;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res, "Failed to remove friend");
    }

    if (res->affected == 0) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_NOT_FOUND,
                                         "Friendship not found");
    }

    b->id = (int64_t) res->insert_id;

    fields = ngx_http_chat_json_object(r);

    if (fields == NULL
        || ngx_http_chat_json_num(fields, "friendship_id", b->id)
           == NULL
        || ngx_http_chat_json_num(fields, "user_id", b->user_id)
           == NULL
        || ngx_http_chat_json_num(fields, "friend_id", b->other)
           == NULL)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "chat friend: event FriendDeleted not published: "
                      "out of memory");

    } else {
        (void) ngx_http_chat_event_publish(r, "friend.events", b->id,
                                           "FriendDeleted", fields);
    }

    return ngx_http_chat_send_message(r, "Friend removed successfully",
                                      "friend_user_id", b->other);
}


/* F9. POST /api/friends/block */

ngx_int_t
ngx_http_chat_friend_block(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                         *errors;
    ngx_str_t                      reason;
    ngx_http_chat_friend_block_t  *b;

    b = ngx_http_chat_friend_block_create(r, ctx);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    errors = NULL;

    /* "reason" is checked and never stored */

    if (ngx_http_chat_body_int(r, &errors, ctx->json, "blocked_user_id", 1,
                               &b->other)
        == NGX_ERROR
        || ngx_http_chat_body_string(r, &errors, ctx->json, "reason", 0, 0,
                                     NGX_HTTP_CHAT_FRIEND_REASON_MAX,
                                     &reason)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    if (b->other == b->user_id) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_BAD_REQUEST,
                                         "Cannot block yourself");
    }

    return ngx_http_chat_friend_block_lookup(r, b);
}


/* the target user, and the caller's block of it if there is one */

static ngx_int_t
ngx_http_chat_friend_block_lookup(ngx_http_request_t *r,
    ngx_http_chat_friend_block_t *b)
{
    ngx_http_chat_sql_arg_t  args[2];

    ngx_http_chat_friend_int_arg(&args[0], b->user_id);
    ngx_http_chat_friend_int_arg(&args[1], b->other);

    return ngx_http_chat_sql(r,
                             "SELECT u.id, b.id, b.created_at "
                             "FROM users u "
                             "LEFT JOIN block_users b ON b.user_id = ? "
                             "AND b.blocked_user_id = u.id "
                             "WHERE u.id = ?",
                             args, 2, ngx_http_chat_friend_block_found);
}


static ngx_int_t
ngx_http_chat_friend_block_found(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    ngx_str_t                     *row;
    ngx_http_chat_sql_arg_t        args[3];
    ngx_http_chat_friend_block_t  *b;

    b = ctx->data;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res, "Failed to block user");
    }

    if (res->nrows == 0) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_NOT_FOUND,
                                         "Target user not found");
    }

    row = res->cells;

    if (row[1].data) {

        /* blocked already: the same row, and its friendships ended again */

        b->id = ngx_http_chat_friend_cell_int(&row[1]);
        b->created_at = row[2];
        b->status = NGX_HTTP_OK;

        return ngx_http_chat_friend_block_ended(r, ctx, NULL);
    }

    if (b->tries++ == NGX_HTTP_CHAT_FRIEND_BLOCK_TRIES) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "chat friend: block of user %L by %L keeps meeting "
                      "a twin that is gone again", b->other, b->user_id);
        return ngx_http_chat_send_detail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         "Failed to block user");
    }

    ngx_http_chat_friend_int_arg(&args[0], b->user_id);
    ngx_http_chat_friend_int_arg(&args[1], b->other);
    ngx_http_chat_friend_str_arg(&args[2], &b->now);

    return ngx_http_chat_sql(r,
                             "INSERT INTO block_users "
                             "(user_id, blocked_user_id, created_at) "
                             "VALUES (?, ?, ?)",
                             args, 3, ngx_http_chat_friend_block_inserted);
}


static ngx_int_t
ngx_http_chat_friend_block_inserted(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    ngx_http_chat_friend_block_t  *b;

    b = ctx->data;

    /* the same block sent twice at once: the other one made the row */

    if (res->rc == NGX_ERROR && res->errnum == ER_DUP_ENTRY) {
        return ngx_http_chat_friend_block_lookup(r, b);
    }

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res, "Failed to block user");
    }

    b->id = (int64_t) res->insert_id;
    b->created_at = b->now;
    b->status = NGX_HTTP_CREATED;

    return ngx_http_chat_friend_block_ended(r, ctx, NULL);
}


/*
 * With res NULL: the block row is committed, now every live friendship of
 * the pair, pending or accepted, either way, is soft-deleted (D above).
 * With the result of that: the answer.
 */

static ngx_int_t
ngx_http_chat_friend_block_ended(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON                         *json;
    ngx_http_chat_sql_arg_t        args[6];
    ngx_http_chat_friend_block_t  *b;

    b = ctx->data;

    if (res == NULL) {
        ngx_http_chat_friend_str_arg(&args[0], &b->now);
        args[1] = args[0];
        ngx_http_chat_friend_int_arg(&args[2], b->user_id);
        ngx_http_chat_friend_int_arg(&args[3], b->other);
        args[4] = args[3];
        args[5] = args[2];

        return ngx_http_chat_sql(r,
                                 "UPDATE friendships "
                                 "SET updated_at = ?, deleted_at = ? "
                                 "WHERE ((user_id_1 = ? AND user_id_2 = ?) "
                                 "OR (user_id_1 = ? AND user_id_2 = ?)) "
                                 "AND deleted_at IS NULL",
                                 args, 6, ngx_http_chat_friend_block_ended);
    }

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res, "Failed to block user");
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "chat friend: block %L of %L by %L, %uL friendships "
                   "ended", b->id, b->other, b->user_id, res->affected);

    if (b->status == NGX_HTTP_CREATED) {
        ngx_http_chat_friend_block_event(r, b, "UserBlocked");
    }

    json = ngx_http_chat_json_object(r);

    if (json == NULL
        || ngx_http_chat_friend_block_json(json, b->id, b->user_id, b->other,
                                           &b->created_at)
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, b->status, json);
}


/* F9. DELETE /api/friends/block/{blocked_user_id} */

ngx_int_t
ngx_http_chat_friend_unblock(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_int_t                      rc;
    ngx_http_chat_sql_arg_t        args[2];
    ngx_http_chat_friend_block_t  *b;

    b = ngx_http_chat_friend_block_create(r, ctx);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_chat_friend_path_id(r, ctx, "blocked_user_id", &b->other,
                                     &rc)
        != NGX_OK)
    {
        return rc;
    }

    ngx_http_chat_friend_int_arg(&args[0], b->user_id);
    ngx_http_chat_friend_int_arg(&args[1], b->other);

    return ngx_http_chat_sql(r,
                             "DELETE FROM block_users "
                             "WHERE user_id = ? AND blocked_user_id = ?",
                             args, 2, ngx_http_chat_friend_unblocked);
}


static ngx_int_t
ngx_http_chat_friend_unblocked(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    ngx_http_chat_friend_block_t  *b;

    b = ctx->data;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res, "Failed to unblock user");
    }

    if (res->affected == 0) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_NOT_FOUND,
                                         "Block not found");
    }

    ngx_http_chat_friend_block_event(r, b, "UserUnblocked");

    return ngx_http_chat_send_message(r, "User unblocked successfully",
                                      "blocked_user_id", b->other);
}


/*
 * F9. GET /api/friends/blocked: the caller's blocks, newest first (the
 * id orders blocks made within one second).  A block of a user whose row
 * is gone is left out, as the other lists leave such users out.
 */

ngx_int_t
ngx_http_chat_friend_blocked(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_sql_arg_t  arg;

    ngx_http_chat_friend_int_arg(&arg, ctx->user_id);

    return ngx_http_chat_sql(r,
                             "SELECT b.id, b.user_id, b.blocked_user_id, "
                             "b.created_at, "
                             NGX_HTTP_CHAT_FRIEND_PROFILE " "
                             "FROM block_users b "
                             "JOIN users u ON u.id = b.blocked_user_id "
                             "WHERE b.user_id = ? "
                             "ORDER BY b.created_at DESC, b.id DESC",
                             &arg, 1, ngx_http_chat_friend_blocked_done);
}


static ngx_int_t
ngx_http_chat_friend_blocked_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON       *json, *item, *profile;
    ngx_str_t   *row;
    ngx_uint_t   i;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_friend_failed(r, res,
                                           "Failed to get blocked users");
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

        if (ngx_http_chat_friend_block_json(item,
                                      ngx_http_chat_friend_cell_int(&row[0]),
                                      ngx_http_chat_friend_cell_int(&row[1]),
                                      ngx_http_chat_friend_cell_int(&row[2]),
                                      &row[3])
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        profile = cJSON_AddObjectToObject(item, "blocked_user");

        if (profile == NULL
            || ngx_http_chat_friend_profile(profile, &row[4]) == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/* F1's answer to a pair blocked either way; the sender is not told which */

ngx_int_t
ngx_http_chat_friend_send_blocked(ngx_http_request_t *r)
{
    return ngx_http_chat_send_detail(r, NGX_HTTP_FORBIDDEN,
                                     "Cannot send friend request to this user");
}


/* BlockUser (API.md 12) */

static cJSON *
ngx_http_chat_friend_block_json(cJSON *obj, int64_t id, int64_t user_id,
    int64_t blocked_user_id, ngx_str_t *created_at)
{
    if (ngx_http_chat_json_num(obj, "id", id) == NULL
        || ngx_http_chat_json_num(obj, "user_id", user_id) == NULL
        || ngx_http_chat_json_num(obj, "blocked_user_id",
                                   blocked_user_id)
           == NULL
        || ngx_http_chat_json_sql_time(obj, "created_at", created_at) == NULL)
    {
        return NULL;
    }

    return obj;
}


/* UserBlocked, UserUnblocked on "friend.events", keyed by the caller */

static void
ngx_http_chat_friend_block_event(ngx_http_request_t *r,
    ngx_http_chat_friend_block_t *b, const char *type)
{
    cJSON  *fields;

    fields = ngx_http_chat_json_object(r);

    if (fields == NULL
        || ngx_http_chat_json_num(fields, "user_id", b->user_id)
           == NULL
        || ngx_http_chat_json_num(fields, "blocked_user_id",
                                   b->other)
           == NULL)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "chat friend: event %s not published: "
                      "out of memory", type);
        return;
    }

    (void) ngx_http_chat_event_publish(r, "friend.events", b->user_id, type,
                                       fields);
}
