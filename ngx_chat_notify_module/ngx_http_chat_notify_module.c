
/*
 * nginx-chat notification service: the "chat_notify" location handler,
 * its routes, the consumer directives, and the Notification object every
 * part of the service prints.
 */


#include "ngx_http_chat_notify_module.h"


static void *ngx_http_chat_notify_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_chat_notify_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_http_chat_notify(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_chat_notify_handler(ngx_http_request_t *r);
static cJSON *ngx_http_chat_notify_value(bson_iter_t *it);
static ngx_int_t ngx_http_chat_notify_init_process(ngx_cycle_t *cycle);
static void ngx_http_chat_notify_exit_process(ngx_cycle_t *cycle);


static ngx_http_chat_conf_bounds_t  ngx_http_chat_notify_batch_bounds = {
    ngx_http_chat_conf_check_num, 1, 1000, "must be between 1 and 1000"
};

static ngx_http_chat_conf_bounds_t  ngx_http_chat_notify_claim_bounds = {
    ngx_http_chat_conf_check_msec, 100, 0, "must be 100ms or more"
};


static ngx_command_t  ngx_http_chat_notify_commands[] = {

    { ngx_string("chat_notify"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chat_notify,
      0,
      0,
      NULL },

    { ngx_string("chat_notify_consumer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_notify_main_conf_t, consumer),
      NULL },

    { ngx_string("chat_notify_group"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_notify_main_conf_t, group),
      &ngx_http_chat_conf_name_post },

    { ngx_string("chat_notify_claim_idle"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_notify_main_conf_t, claim_idle),
      &ngx_http_chat_notify_claim_bounds },

    { ngx_string("chat_notify_batch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_notify_main_conf_t, batch),
      &ngx_http_chat_notify_batch_bounds },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_chat_notify_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_chat_notify_create_main_conf, /* create main configuration */
    ngx_http_chat_notify_init_main_conf,   /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_chat_notify_module = {
    NGX_MODULE_V1,
    &ngx_http_chat_notify_module_ctx,      /* module context */
    ngx_http_chat_notify_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_chat_notify_init_process,     /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_chat_notify_exit_process,     /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_chat_route_t  ngx_http_chat_notify_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/notifications"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY, ngx_http_chat_notify_list },

    /* the token may come as a query argument: authenticated there */
    { NGX_HTTP_GET, ngx_string("/api/notifications/stream"),
      0, ngx_http_chat_notify_stream },

    { NGX_HTTP_POST, ngx_string("/api/notifications/read"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_JSON, ngx_http_chat_notify_read },

    { 0, ngx_null_string, 0, NULL }
};


static void *
ngx_http_chat_notify_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_chat_notify_main_conf_t  *nmcf;

    nmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_chat_notify_main_conf_t));
    if (nmcf == NULL) {
        return NULL;
    }

    nmcf->consumer = NGX_CONF_UNSET;
    nmcf->claim_idle = NGX_CONF_UNSET_MSEC;
    nmcf->batch = NGX_CONF_UNSET_UINT;

    return nmcf;
}


static char *
ngx_http_chat_notify_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_chat_notify_main_conf_t *nmcf = conf;

    ngx_http_chat_core_main_conf_t  *cmcf;

    ngx_conf_init_value(nmcf->consumer, 0);
    ngx_conf_init_msec_value(nmcf->claim_idle, 30000);
    ngx_conf_init_uint_value(nmcf->batch, 64);

    if (nmcf->group.len == 0) {
        ngx_str_set(&nmcf->group, "notifications");
    }

    if (!nmcf->consumer) {
        return NGX_CONF_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_chat_core_module);

    if (cmcf->redis_host.len == 0 || cmcf->mongo_uri.len == 0
        || cmcf->mysql_host.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "chat: \"chat_notify_consumer\" needs "
                           "\"chat_redis\", \"chat_mongo\" and "
                           "\"chat_mysql\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_chat_notify(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_chat_notify_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_chat_notify_handler(ngx_http_request_t *r)
{
    return ngx_http_chat_dispatch(r, ngx_http_chat_notify_routes);
}


/*
 * "chat:user:<id>:notifications": every open stream of the user.  The last
 * part is the consumer group: groups that share Redis but store elsewhere
 * (another database) never feed each other's streams.
 */

ngx_int_t
ngx_http_chat_notify_channel(ngx_pool_t *pool, ngx_str_t *group,
    int64_t user_id, ngx_str_t *channel)
{
    channel->data = ngx_pnalloc(pool, sizeof("chat:user::") + NGX_INT64_LEN
                                      + group->len);
    if (channel->data == NULL) {
        return NGX_ERROR;
    }

    channel->len = ngx_sprintf(channel->data, "chat:user:%L:%V", user_id,
                               group)
                   - channel->data;

    return NGX_OK;
}


/* a client's id: 24 hexadecimal digits, or NGX_DECLINED */

ngx_int_t
ngx_http_chat_notify_oid(ngx_str_t *s, bson_oid_t *oid)
{
    char  hex[25];

    if (s->len != 24 || !bson_oid_is_valid((const char *) s->data, 24)) {
        return NGX_DECLINED;
    }

    ngx_memcpy(hex, s->data, 24);
    hex[24] = '\0';

    bson_oid_init_from_string(oid, hex);

    return NGX_OK;
}


/* a MongoDB date: milliseconds, printed with six digits when non-zero */

u_char *
ngx_http_chat_notify_time(u_char *p, int64_t ms)
{
    return ngx_http_chat_iso_time(p, (time_t) (ms / 1000),
                                  (ngx_uint_t) (ms % 1000) * 1000);
}


/*
 * The Notification object (API.md 6) of a stored document, in the
 * contract's key order; not attached to any request: the caller owns it.
 * hex, if not NULL, receives the id (24 bytes).
 */

cJSON *
ngx_http_chat_notify_json(const bson_t *doc, ngx_str_t *hex)
{
    char          oid[25];
    u_char        buf[sizeof("YYYY-MM-DDTHH:MM:SS.ffffff")], *p;
    cJSON        *json, *v;
    bson_iter_t   it;
    ngx_uint_t    i;

    static const char  *strings[] = { "type", "title", "body" };

    json = cJSON_CreateObject();
    if (json == NULL) {
        return NULL;
    }

    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_OID(&it)) {
        goto failed;
    }

    bson_oid_to_string(bson_iter_oid(&it), oid);

    if (hex) {
        ngx_memcpy(hex->data, oid, 24);
        hex->len = 24;
    }

    if (cJSON_AddStringToObject(json, "id", oid) == NULL) {
        goto failed;
    }

    if (ngx_http_chat_json_num(json, "user_id",
                               bson_iter_init_find(&it, doc, "user_id")
                               && BSON_ITER_HOLDS_NUMBER(&it)
                               ? bson_iter_as_int64(&it) : 0)
        == NULL)
    {
        goto failed;
    }

    for (i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        if (cJSON_AddStringToObject(json, strings[i],
                                    bson_iter_init_find(&it, doc, strings[i])
                                    && BSON_ITER_HOLDS_UTF8(&it)
                                    ? bson_iter_utf8(&it, NULL) : "")
            == NULL)
        {
            goto failed;
        }
    }

    if (bson_iter_init_find(&it, doc, "data")
        && BSON_ITER_HOLDS_DOCUMENT(&it))
    {
        v = ngx_http_chat_notify_value(&it);

    } else {
        v = cJSON_CreateObject();
    }

    if (v == NULL) {
        goto failed;
    }

    cJSON_AddItemToObject(json, "data", v);

    if (cJSON_AddBoolToObject(json, "is_read",
                              bson_iter_init_find(&it, doc, "is_read")
                              && BSON_ITER_HOLDS_BOOL(&it)
                              && bson_iter_bool(&it))
        == NULL)
    {
        goto failed;
    }

    if (bson_iter_init_find(&it, doc, "read_at")
        && BSON_ITER_HOLDS_DATE_TIME(&it))
    {
        p = ngx_http_chat_notify_time(buf, bson_iter_date_time(&it));
        *p = '\0';

        if (cJSON_AddStringToObject(json, "read_at", (char *) buf) == NULL) {
            goto failed;
        }

    } else if (cJSON_AddNullToObject(json, "read_at") == NULL) {
        goto failed;
    }

    p = buf;

    if (bson_iter_init_find(&it, doc, "created_at")
        && BSON_ITER_HOLDS_DATE_TIME(&it))
    {
        p = ngx_http_chat_notify_time(buf, bson_iter_date_time(&it));
    }

    *p = '\0';

    if (cJSON_AddStringToObject(json, "created_at", (char *) buf) == NULL) {
        goto failed;
    }

    return json;

failed:

    cJSON_Delete(json);
    return NULL;
}


/* a BSON value as JSON: what "data" holds (numbers, strings, objects) */

static cJSON *
ngx_http_chat_notify_value(bson_iter_t *it)
{
    cJSON        *json, *v;
    bson_iter_t   child;

    switch (bson_iter_type(it)) {

    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY:

        json = BSON_ITER_HOLDS_ARRAY(it) ? cJSON_CreateArray()
                                         : cJSON_CreateObject();
        if (json == NULL || !bson_iter_recurse(it, &child)) {
            cJSON_Delete(json);
            return NULL;
        }

        while (bson_iter_next(&child)) {
            v = ngx_http_chat_notify_value(&child);
            if (v == NULL) {
                cJSON_Delete(json);
                return NULL;
            }

            if (cJSON_IsArray(json)) {
                cJSON_AddItemToArray(json, v);

            } else {
                cJSON_AddItemToObject(json, bson_iter_key(&child), v);
            }
        }

        return json;

    case BSON_TYPE_UTF8:
        return cJSON_CreateString(bson_iter_utf8(it, NULL));

    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        return ngx_http_chat_json_num(NULL, NULL, bson_iter_as_int64(it));

    case BSON_TYPE_DOUBLE:
        return cJSON_CreateNumber(bson_iter_as_double(it));

    case BSON_TYPE_BOOL:
        return cJSON_CreateBool(bson_iter_bool(it));

    default:
        return cJSON_CreateNull();
    }
}


static ngx_int_t
ngx_http_chat_notify_init_process(ngx_cycle_t *cycle)
{
    ngx_http_chat_notify_main_conf_t  *nmcf;

    nmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_chat_notify_module);

    if (nmcf == NULL || !nmcf->consumer) {
        return NGX_OK;
    }

    /* cache manager and loader processes run init_process too */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    return ngx_http_chat_notify_consumer_init(cycle, nmcf);
}


static void
ngx_http_chat_notify_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_chat_notify_consumer_exit(cycle);
}
