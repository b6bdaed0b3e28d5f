
/*
 * nginx-chat notification service (API.md 6): the notification list, its
 * event stream, marking as read, and the consumer of the friend and
 * message events that creates the notifications.
 */


#ifndef _NGX_HTTP_CHAT_NOTIFY_MODULE_H_INCLUDED_
#define _NGX_HTTP_CHAT_NOTIFY_MODULE_H_INCLUDED_


#include <ngx_http_chat_core_module.h>


#define NGX_HTTP_CHAT_NOTIFY_COLLECTION  "notifications"
#define NGX_HTTP_CHAT_NOTIFY_TOPIC       "notification.events"
#define NGX_HTTP_CHAT_NOTIFY_MAX_IDS     100
#define NGX_HTTP_CHAT_NOTIFY_REPLAY_MAX  100
#define NGX_HTTP_CHAT_NOTIFY_PRESENCE_TOPIC  "user.online_status"


typedef struct {
    ngx_flag_t                  consumer;
    ngx_str_t                   group;
    ngx_msec_t                  claim_idle;
    ngx_uint_t                  batch;
} ngx_http_chat_notify_main_conf_t;


extern ngx_module_t  ngx_http_chat_notify_module;


/* shared by the endpoints and the consumer */
cJSON *ngx_http_chat_notify_json(const bson_t *doc, ngx_str_t *id);
ngx_int_t ngx_http_chat_notify_channel(ngx_pool_t *pool, ngx_str_t *group,
    int64_t user_id, ngx_str_t *channel);
ngx_int_t ngx_http_chat_notify_oid(ngx_str_t *s, bson_oid_t *oid);
u_char *ngx_http_chat_notify_time(u_char *p, int64_t ms);

/* endpoints */
ngx_int_t ngx_http_chat_notify_list(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_notify_read(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_notify_stream(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);

/* the event consumer of a worker */
ngx_int_t ngx_http_chat_notify_consumer_init(ngx_cycle_t *cycle,
    ngx_http_chat_notify_main_conf_t *nmcf);
void ngx_http_chat_notify_consumer_exit(ngx_cycle_t *cycle);

/* its entries of user.online_status: presence frames to friends (N5) */
void ngx_http_chat_notify_presence(ngx_http_chat_redis_entry_t *e,
    cJSON *event, ngx_str_t *group, ngx_log_t *log);
void ngx_http_chat_notify_presence_exit(void);


#endif /* _NGX_HTTP_CHAT_NOTIFY_MODULE_H_INCLUDED_ */
