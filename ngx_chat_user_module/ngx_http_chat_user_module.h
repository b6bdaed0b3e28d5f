
/*
 * nginx-chat user service (API.md 3): registration, login, logout,
 * profiles, user lookups, profile images.
 */


#ifndef _NGX_HTTP_CHAT_USER_MODULE_H_INCLUDED_
#define _NGX_HTTP_CHAT_USER_MODULE_H_INCLUDED_


#include <ngx_http_chat_core_module.h>


/* the columns every user query selects, in this order */
#define NGX_HTTP_CHAT_USER_COLUMNS                                           \
    "id, email, username, display_name, status_message, is_online, "         \
    "last_seen_at, created_at, updated_at, password_hash, profile_image_url"

#define NGX_HTTP_CHAT_USER_NCOLS    11

/* a user's row by id: every authenticated request of the service reads it,
 * so it runs prepared (ngx_http_chat_stmt) */
#define NGX_HTTP_CHAT_USER_BY_ID                                             \
    "SELECT " NGX_HTTP_CHAT_USER_COLUMNS " FROM users WHERE id = ?"

#define NGX_HTTP_CHAT_USER_ID       0
#define NGX_HTTP_CHAT_USER_EMAIL    1
#define NGX_HTTP_CHAT_USER_NAME     2
#define NGX_HTTP_CHAT_USER_DISPLAY  3
#define NGX_HTTP_CHAT_USER_STATUS   4
#define NGX_HTTP_CHAT_USER_ONLINE   5
#define NGX_HTTP_CHAT_USER_SEEN     6
#define NGX_HTTP_CHAT_USER_CREATED  7
#define NGX_HTTP_CHAT_USER_UPDATED  8
#define NGX_HTTP_CHAT_USER_HASH     9
#define NGX_HTTP_CHAT_USER_IMAGE    10

#define NGX_HTTP_CHAT_PRESENCE_TTL  "3600"


/* the locations with "chat_user": their upload directories are prepared */

typedef struct {
    ngx_array_t                 locations;  /* of loc conf pointers */
} ngx_http_chat_user_main_conf_t;


typedef struct {
    ngx_str_t                   upload_dir;
    ngx_str_t                   image_url;
    size_t                      image_max_size;
} ngx_http_chat_user_loc_conf_t;


typedef struct ngx_http_chat_user_file_s  ngx_http_chat_user_file_t;


/* per-request state of the user service */

typedef struct {
    ngx_str_t                  *user;       /* the caller's row */

    ngx_str_t                   email;
    ngx_str_t                   username;
    ngx_str_t                   password;
    ngx_str_t                   display_name;
    ngx_str_t                   status_message;
    ngx_uint_t                  set_display;
    ngx_uint_t                  set_status;

    ngx_int_t                   id;
    ngx_str_t                   token;
    ngx_http_chat_bcrypt_t      bcrypt;

    ngx_str_t                   file;       /* image upload */
    ngx_str_t                   ext;
    ngx_str_t                   path;
    ngx_str_t                   old_path;
    ngx_str_t                   url;
    ngx_http_chat_user_file_t  *op;         /* the last file operation */
} ngx_http_chat_user_ctx_t;


extern ngx_module_t  ngx_http_chat_user_module;


ngx_http_chat_user_ctx_t *ngx_http_chat_user_ctx(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_load(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_handler_pt next);
cJSON *ngx_http_chat_user_profile(ngx_http_request_t *r, cJSON *parent,
    ngx_str_t *row, ngx_uint_t image);
ngx_int_t ngx_http_chat_user_reread(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_pt handler);
ngx_int_t ngx_http_chat_user_send_profile(ngx_http_request_t *r,
    ngx_str_t *row, ngx_uint_t image);
ngx_int_t ngx_http_chat_user_valid_email(ngx_str_t *email,
    const char **reason);
ngx_int_t ngx_http_chat_user_email_format(ngx_str_t *email);
void ngx_http_chat_user_touch(ngx_int_t id);
ngx_int_t ngx_http_chat_user_presence_init(ngx_cycle_t *cycle);
void ngx_http_chat_user_presence_exit(ngx_cycle_t *cycle);
/* UserOnlineStatusChanged on user.online_status; trace: the request's */
ngx_int_t ngx_http_chat_user_status_event(ngx_pool_t *pool, ngx_log_t *log,
    int64_t id, ngx_uint_t online, ngx_str_t *trace);
ngx_int_t ngx_http_chat_user_image_init(ngx_cycle_t *cycle);

/* endpoints */
ngx_int_t ngx_http_chat_user_register(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_login_form(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_login_json(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_logout(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_me(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_update(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_image_upload(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_image_delete(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_search(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_get(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_list(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_batch(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_user_exists(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);


#endif /* _NGX_HTTP_CHAT_USER_MODULE_H_INCLUDED_ */
