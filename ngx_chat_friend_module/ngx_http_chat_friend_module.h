
/*
 * nginx-chat friend service (API.md 4, 12): friend requests, their answers,
 * the lists built from them, removing a friend and blocks.  Users are read
 * from the "users" table of the same database instead of being asked of
 * the user service.
 */


#ifndef _NGX_HTTP_CHAT_FRIEND_MODULE_H_INCLUDED_
#define _NGX_HTTP_CHAT_FRIEND_MODULE_H_INCLUDED_


#include "ngx_http_chat_core_module.h"


/* input bounds of the original's schemas */
#define NGX_HTTP_CHAT_FRIEND_MESSAGE_MAX   500
#define NGX_HTTP_CHAT_FRIEND_QUERY_MAX     50
#define NGX_HTTP_CHAT_FRIEND_LIMIT_MAX     50
#define NGX_HTTP_CHAT_FRIEND_LIMIT         10
#define NGX_HTTP_CHAT_FRIEND_REASON_MAX    200

/* UserProfile (API.md 2.8) from users, 6 columns: see _friend_profile() */
#define NGX_HTTP_CHAT_FRIEND_PROFILE                                          \
    "u.id, u.username, u.display_name, u.status_message, u.is_online, "       \
    "u.last_seen_at"


/* SQL arguments, set the way ngx_str_set() sets a string */

#define ngx_http_chat_friend_int_arg(arg, v)                                  \
    (arg)->type = NGX_HTTP_CHAT_SQL_INT; (arg)->num = (v)

#define ngx_http_chat_friend_str_arg(arg, s)                                  \
    (arg)->type = NGX_HTTP_CHAT_SQL_STR; (arg)->str = *(s)


extern ngx_module_t  ngx_http_chat_friend_module;


/* F1, F2, F5: one request's life (ngx_http_chat_friend_request.c) */

ngx_int_t ngx_http_chat_friend_send(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_friend_answer(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_friend_cancel(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);

/* F3, F4, F6, N5's online friends: lists (ngx_http_chat_friend_lists.c) */

ngx_int_t ngx_http_chat_friend_list(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_friend_requests(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_friend_search(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_friend_online(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);


/* F8, F9: removing a friend, blocks (ngx_http_chat_friend_block.c) */

ngx_int_t ngx_http_chat_friend_remove(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_friend_block(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_friend_unblock(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_friend_blocked(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);


/* shared by the handlers (ngx_http_chat_friend_module.c) */

ngx_int_t ngx_http_chat_friend_failed(ngx_http_request_t *r,
    ngx_http_chat_sql_res_t *res, const char *detail);
ngx_int_t ngx_http_chat_friend_cell_int(ngx_str_t *cell);
cJSON *ngx_http_chat_friend_profile(cJSON *obj, ngx_str_t *row);
/* F1's 403 for a blocked pair (API.md 12, F9) */
ngx_int_t ngx_http_chat_friend_send_blocked(ngx_http_request_t *r);
ngx_int_t ngx_http_chat_friend_now(ngx_http_request_t *r, ngx_str_t *now);


#endif /* _NGX_HTTP_CHAT_FRIEND_MODULE_H_INCLUDED_ */
