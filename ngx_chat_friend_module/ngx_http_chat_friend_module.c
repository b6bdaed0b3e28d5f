
/*
 * nginx-chat friend service: the "chat_friend" directive, the routes of
 * /api/friends, and the little its handlers share.
 *
 * Checks follow the original's order (API.md 2.4): the core answers a
 * body that is not a JSON object and a missing or bad token; a handler
 * then collects every path, query and body error into one 422 with the
 * core's validators, and only a request that passed all of them reaches
 * the datastore.
 */


#include "ngx_http_chat_friend_module.h"


static char *ngx_http_chat_friend(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_chat_friend_handler(ngx_http_request_t *r);


static ngx_command_t  ngx_http_chat_friend_commands[] = {

    { ngx_string("chat_friend"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chat_friend,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_chat_friend_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_chat_friend_module = {
    NGX_MODULE_V1,
    &ngx_http_chat_friend_module_ctx,      /* module context */
    ngx_http_chat_friend_commands,         /* module directives */
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


static ngx_http_chat_route_t  ngx_http_chat_friend_routes[] = {

    { NGX_HTTP_POST, ngx_string("/api/friends/request"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_JSON,
      ngx_http_chat_friend_send },

    { NGX_HTTP_PUT, ngx_string("/api/friends/status/{requester_user_id}"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_JSON,
      ngx_http_chat_friend_answer },

    { NGX_HTTP_GET, ngx_string("/api/friends/list"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY,
      ngx_http_chat_friend_list },

    { NGX_HTTP_GET, ngx_string("/api/friends/requests"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY,
      ngx_http_chat_friend_requests },

    { NGX_HTTP_DELETE, ngx_string("/api/friends/request/{target_user_id}"),
      NGX_HTTP_CHAT_AUTH,
      ngx_http_chat_friend_cancel },

    { NGX_HTTP_GET, ngx_string("/api/friends/search"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY,
      ngx_http_chat_friend_search },

    { NGX_HTTP_POST, ngx_string("/api/friends/block"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_JSON,
      ngx_http_chat_friend_block },

    { NGX_HTTP_DELETE, ngx_string("/api/friends/block/{blocked_user_id}"),
      NGX_HTTP_CHAT_AUTH,
      ngx_http_chat_friend_unblock },

    { NGX_HTTP_GET, ngx_string("/api/friends/blocked"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY,
      ngx_http_chat_friend_blocked },

    { NGX_HTTP_GET, ngx_string("/api/friends/online"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY,
      ngx_http_chat_friend_online },

    /* one segment: "/api/friends/request/{target_user_id}" (F5) is another */

    { NGX_HTTP_DELETE, ngx_string("/api/friends/{friend_user_id}"),
      NGX_HTTP_CHAT_AUTH,
      ngx_http_chat_friend_remove },

    { 0, ngx_null_string, 0, NULL }
};


static char *
ngx_http_chat_friend(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_chat_friend_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_chat_friend_handler(ngx_http_request_t *r)
{
    return ngx_http_chat_dispatch(r, ngx_http_chat_friend_routes);
}


/*
 * A datastore step that did not succeed: 503 when MariaDB is unavailable,
 * otherwise the endpoint's own 500 (the core has logged the SQL error).
 */

ngx_int_t
ngx_http_chat_friend_failed(ngx_http_request_t *r,
    ngx_http_chat_sql_res_t *res, const char *detail)
{
    if (res->rc == NGX_DECLINED) {
        return ngx_http_chat_send_unavailable(r);
    }

    return ngx_http_chat_send_detail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                     detail);
}


/* an INT column's value; the queries only read non-NULL ones */

ngx_int_t
ngx_http_chat_friend_cell_int(ngx_str_t *cell)
{
    if (cell->data == NULL) {
        return 0;
    }

    return ngx_atoi(cell->data, cell->len);
}


/* UserProfile (API.md 2.8) of the NGX_HTTP_CHAT_FRIEND_PROFILE cells */

cJSON *
ngx_http_chat_friend_profile(cJSON *obj, ngx_str_t *row)
{
    if (ngx_http_chat_json_num(obj, "id",
                                ngx_http_chat_friend_cell_int(&row[0]))
        == NULL
        || ngx_http_chat_json_str(obj, "username", &row[1]) == NULL
        || ngx_http_chat_json_nstr(obj, "display_name", &row[2]) == NULL
        || ngx_http_chat_json_nstr(obj, "status_message", &row[3]) == NULL
        || cJSON_AddBoolToObject(obj, "is_online",
                                 ngx_http_chat_friend_cell_int(&row[4]) > 0)
           == NULL
        || ngx_http_chat_json_sql_time(obj, "last_seen_at", &row[5]) == NULL)
    {
        return NULL;
    }

    return obj;
}
