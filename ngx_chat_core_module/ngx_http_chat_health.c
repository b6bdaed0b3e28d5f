
/*
 * The gateway's /health/services (API.md 7.5, 12.1).  The services run
 * inside nginx, so a service is healthy when every datastore it needs
 * answers: each datastore that some listed service needs is asked once
 * (SELECT 1, PING, ping), at once, through the operations of the core,
 * so an open circuit answers for its datastore without a wait and the
 * checks count for the breakers like any other operation.
 */


#include "ngx_http_chat_core_module.h"


#define NGX_HTTP_CHAT_NEEDS_MYSQL   (1 << NGX_HTTP_CHAT_MYSQL)
#define NGX_HTTP_CHAT_NEEDS_REDIS   (1 << NGX_HTTP_CHAT_REDIS)
#define NGX_HTTP_CHAT_NEEDS_MONGO   (1 << NGX_HTTP_CHAT_MONGO)


typedef struct {
    ngx_str_t                   name;
    ngx_uint_t                  needs;
} ngx_http_chat_health_known_t;


typedef struct {
    ngx_http_chat_op_t         *op[NGX_HTTP_CHAT_DATASTORES];
} ngx_http_chat_health_ctx_t;


static ngx_int_t ngx_http_chat_health_services_handler(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_chat_health_services_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_chat_health_mongo_ping(mongoc_database_t *db,
    void *data);
static ngx_int_t ngx_http_chat_health_check_url(ngx_str_t *url);


/* what each service needs: tokens are checked against Redis everywhere */

static ngx_http_chat_health_known_t  ngx_http_chat_health_known[] = {

    { ngx_string("user"),
      NGX_HTTP_CHAT_NEEDS_MYSQL|NGX_HTTP_CHAT_NEEDS_REDIS },

    { ngx_string("friend"),
      NGX_HTTP_CHAT_NEEDS_MYSQL|NGX_HTTP_CHAT_NEEDS_REDIS },

    { ngx_string("chat"),
      NGX_HTTP_CHAT_NEEDS_MYSQL|NGX_HTTP_CHAT_NEEDS_REDIS
      |NGX_HTTP_CHAT_NEEDS_MONGO },

    /* the consumer looks rooms up in MariaDB */
    { ngx_string("notification"),
      NGX_HTTP_CHAT_NEEDS_MYSQL|NGX_HTTP_CHAT_NEEDS_REDIS
      |NGX_HTTP_CHAT_NEEDS_MONGO },

    { ngx_null_string, 0 }
};


/* chat_health_services name=url ...: the location answers /health/services */

char *
ngx_http_chat_health_services(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chat_core_loc_conf_t *lcf = conf;

    u_char                          *eq;
    ngx_str_t                       *value, name, url;
    ngx_uint_t                       i, j;
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_chat_health_known_t    *k;
    ngx_http_chat_health_service_t  *s;

    if (lcf->health_services) {
        return "is duplicate";
    }

    lcf->health_services = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                 sizeof(ngx_http_chat_health_service_t));
    if (lcf->health_services == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        eq = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');

        if (eq == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "chat: invalid parameter \"%V\" in \"%V\" "
                               "directive: name=url expected",
                               &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }

        name.data = value[i].data;
        name.len = eq - value[i].data;
        url.data = eq + 1;
        url.len = value[i].data + value[i].len - url.data;

        for (k = ngx_http_chat_health_known; k->name.len; k++) {
            if (k->name.len == name.len
                && ngx_strncmp(k->name.data, name.data, name.len) == 0)
            {
                break;
            }
        }

        if (k->name.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "chat: unknown service \"%V\" in \"%V\" "
                               "directive: user, friend, chat or "
                               "notification", &name, &cmd->name);
            return NGX_CONF_ERROR;
        }

        s = lcf->health_services->elts;

        for (j = 0; j < lcf->health_services->nelts; j++) {
            if (s[j].name.len == name.len
                && ngx_strncmp(s[j].name.data, name.data, name.len) == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "chat: duplicate service \"%V\" in "
                                   "\"%V\" directive", &name, &cmd->name);
                return NGX_CONF_ERROR;
            }
        }

        if (ngx_http_chat_health_check_url(&url) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "chat: invalid URL \"%V\" of service \"%V\" "
                               "in \"%V\" directive: http:// or https:// "
                               "and a host expected",
                               &url, &name, &cmd->name);
            return NGX_CONF_ERROR;
        }

        s = ngx_array_push(lcf->health_services);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        /* a JSON key: NUL-terminated */

        s->name.data = ngx_pnalloc(cf->pool, name.len + 1);
        if (s->name.data == NULL) {
            return NGX_CONF_ERROR;
        }

        *ngx_cpymem(s->name.data, name.data, name.len) = '\0';
        s->name.len = name.len;
        s->url = url;
        s->needs = k->needs;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_chat_health_services_handler;

    return NGX_CONF_OK;
}


/* reported as it is written: a scheme, a host, no space or control */

static ngx_int_t
ngx_http_chat_health_check_url(ngx_str_t *url)
{
    size_t      n;
    ngx_uint_t  i;

    if (url->len > 7 && ngx_strncmp(url->data, "http://", 7) == 0) {
        n = 7;

    } else if (url->len > 8 && ngx_strncmp(url->data, "https://", 8) == 0) {
        n = 8;

    } else {
        return NGX_ERROR;
    }

    if (url->data[n] == '/') {
        return NGX_ERROR;
    }

    for (i = 0; i < url->len; i++) {
        if (url->data[i] <= 0x20 || url->data[i] == 0x7f) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_health_services_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_uint_t                       i, needs;
    const char                      *argv[1];
    size_t                           argvlen[1];
    ngx_http_chat_op_t              *all, *op;
    ngx_http_chat_health_ctx_t      *hc;
    ngx_http_chat_core_loc_conf_t   *lcf;
    ngx_http_chat_health_service_t  *s;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_chat_send_method_not_allowed(r, "GET");
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chat_core_module);

    s = lcf->health_services->elts;
    needs = 0;

    for (i = 0; i < lcf->health_services->nelts; i++) {
        needs |= s[i].needs;
    }

    hc = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_health_ctx_t));
    if (hc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    all = ngx_http_chat_all(r, ngx_http_chat_health_services_done, hc);
    if (all == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* every member is taken before the first starts: nothing may fail
     * between a start and the wait */

    for (i = 0; i < NGX_HTTP_CHAT_DATASTORES; i++) {
        if (needs & (1 << i)) {
            hc->op[i] = ngx_http_chat_op_member(all, NULL, hc);
            if (hc->op[i] == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }
    }

    for (i = 0; i < NGX_HTTP_CHAT_DATASTORES; i++) {
        op = hc->op[i];

        if (op == NULL) {
            continue;
        }

        switch (i) {

        case NGX_HTTP_CHAT_MYSQL:
            rc = ngx_http_chat_op_sql(op, "SELECT 1", NULL, 0);
            break;

        case NGX_HTTP_CHAT_REDIS:
            argv[0] = "PING";
            argvlen[0] = sizeof("PING") - 1;
            rc = ngx_http_chat_op_redis(op, 1, argv, argvlen);
            break;

        default: /* NGX_HTTP_CHAT_MONGO */
            rc = ngx_http_chat_op_mongo(op, ngx_http_chat_health_mongo_ping,
                                        NULL);
        }

        if (rc != NGX_OK) {
            ngx_http_chat_op_fail(op);
        }
    }

    return ngx_http_chat_all_wait(r, all);
}


/* in a pool thread */

static ngx_int_t
ngx_http_chat_health_mongo_ping(mongoc_database_t *db, void *data)
{
    bool          ok;
    bson_t        cmd;
    bson_error_t  error;

    bson_init(&cmd);
    BSON_APPEND_INT32(&cmd, "ping", 1);

    ok = mongoc_database_command_simple(db, &cmd, NULL, NULL, &error);

    bson_destroy(&cmd);

    return ok ? NGX_OK : ngx_http_chat_mongo_error(&error);
}


static ngx_int_t
ngx_http_chat_health_services_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc, void *data)
{
    ngx_http_chat_health_ctx_t *hc = data;

    u_char                          *p, *last;
    cJSON                           *json, *services, *obj;
    ngx_str_t                        error;
    ngx_uint_t                       i, j, down, healthy;
    ngx_http_chat_core_loc_conf_t   *lcf;
    ngx_http_chat_health_service_t  *s;

    down = 0;

    for (i = 0; i < NGX_HTTP_CHAT_DATASTORES; i++) {
        if (hc->op[i] && hc->op[i]->rc != NGX_OK) {
            down |= 1 << i;
        }
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || cJSON_AddStringToObject(json, "gateway", "healthy") == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    services = cJSON_AddObjectToObject(json, "services");
    if (services == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chat_core_module);

    s = lcf->health_services->elts;
    healthy = 1;

    /* "mysql, redis, mongodb unavailable" at most */
    p = ngx_pnalloc(r->pool, 64);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < lcf->health_services->nelts; i++) {

        obj = cJSON_CreateObject();
        if (obj == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (!cJSON_AddItemToObject(services, (const char *) s[i].name.data,
                                   obj))
        {
            cJSON_Delete(obj);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (cJSON_AddStringToObject(obj, "status", (s[i].needs & down)
                                                   ? "unhealthy" : "healthy")
            == NULL
            || ngx_http_chat_json_nstr(obj, "url", &s[i].url) == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (!(s[i].needs & down)) {
            continue;
        }

        healthy = 0;

        error.data = p;
        last = p + 64;

        for (j = 0; j < NGX_HTTP_CHAT_DATASTORES; j++) {
            if (s[i].needs & down & (1 << j)) {
                p = ngx_slprintf(p, last, p == error.data ? "%s" : ", %s",
                                 ngx_http_chat_circuit_name(j));
            }
        }

        p = ngx_slprintf(p, last, " unavailable");
        error.len = p - error.data;
        p = error.data;

        if (ngx_http_chat_json_nstr(obj, "error", &error) == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_chat_send_json(r, healthy ? NGX_HTTP_OK
                                              : NGX_HTTP_SERVICE_UNAVAILABLE,
                                   json);
}
