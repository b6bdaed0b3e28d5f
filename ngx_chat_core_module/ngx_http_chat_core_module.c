
/*
 * nginx-chat core module: directives, worker start and stop of the
 * datastore clients, and the health and readiness handlers.
 */


#include "ngx_http_chat_core_module.h"


static void *ngx_http_chat_core_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_chat_core_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_chat_core_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_chat_core_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_chat_mysql_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_chat_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_chat_mongo_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_chat_jwt_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_http_chat_conf_where(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_chat_conf_where_t *where);
static ngx_int_t ngx_http_chat_conf_credential(ngx_conf_t *cf,
    const char *kind, ngx_str_t *value, ngx_http_chat_conf_where_t *where,
    size_t min);
static char *ngx_http_chat_jwt_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_chat_thread_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_chat_auth_error_style(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_chat_set_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_chat_parse_address(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_str_t *value, in_port_t default_port,
    ngx_str_t *host, ngx_uint_t *port);
static ngx_int_t ngx_http_chat_mongo_check_database(ngx_str_t *name);
static ngx_int_t ngx_http_chat_health_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_chat_info_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_chat_ready_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_chat_core_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_chat_core_init_process(ngx_cycle_t *cycle);
static void ngx_http_chat_core_exit_process(ngx_cycle_t *cycle);


ngx_conf_post_t  ngx_http_chat_conf_name_post = {
    ngx_http_chat_conf_check_name
};

static ngx_http_chat_conf_bounds_t  ngx_http_chat_cpu_queue_size_bounds = {
    ngx_http_chat_conf_check_num, 1, 0, "must be 1 or more"
};

static ngx_http_chat_conf_bounds_t  ngx_http_chat_jwt_lifetime_bounds = {
    ngx_http_chat_conf_check_sec, 1, 0, "must be 1s or more"
};

static ngx_http_chat_conf_bounds_t  ngx_http_chat_json_max_bounds = {
    ngx_http_chat_conf_check_size, 2, 0, "must be 2 bytes or more"
};

static ngx_http_chat_conf_bounds_t  ngx_http_chat_events_maxlen_bounds = {
    ngx_http_chat_conf_check_num, 1, 0, "must be 1 or more"
};

static ngx_http_chat_conf_bounds_t  ngx_http_chat_sse_keepalive_bounds = {
    ngx_http_chat_conf_check_msec, 1000, 0, "must be 1s or more"
};

static ngx_http_chat_conf_bounds_t  ngx_http_chat_sse_max_queue_bounds = {
    ngx_http_chat_conf_check_size, 4096, 0, "must be 4k or more"
};

static ngx_http_chat_conf_bounds_t  ngx_http_chat_circuit_cooldown_bounds = {
    ngx_http_chat_conf_check_msec, 100, 0, "must be 100ms or more"
};


static ngx_command_t  ngx_http_chat_core_commands[] = {

    { ngx_string("chat_mysql"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_chat_mysql_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_mysql_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, mysql_connect_timeout),
      NULL },

    { ngx_string("chat_mysql_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, mysql_timeout),
      NULL },

    { ngx_string("chat_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_chat_redis_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, redis_timeout),
      NULL },

    { ngx_string("chat_mongo"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_chat_mongo_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_mongo_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_chat_thread_pool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, mongo_pool_name),
      NULL },

    { ngx_string("chat_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_chat_thread_pool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, cpu_pool_name),
      NULL },

    { ngx_string("chat_cpu_queue_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, cpu_queue_size),
      &ngx_http_chat_cpu_queue_size_bounds },

    { ngx_string("chat_cpu_queue_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, cpu_queue_timeout),
      NULL },

    { ngx_string("chat_jwt_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_chat_jwt_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_jwt_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_chat_jwt_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_development"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, development),
      NULL },

    { ngx_string("chat_jwt_lifetime"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, jwt_lifetime),
      &ngx_http_chat_jwt_lifetime_bounds },

    { ngx_string("chat_cors_origins"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_chat_cors_origins,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_json_max_body_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, json_max_size),
      &ngx_http_chat_json_max_bounds },

    { ngx_string("chat_events_maxlen"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, events_maxlen),
      &ngx_http_chat_events_maxlen_bounds },

    { ngx_string("chat_sse_keepalive"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, sse_keepalive),
      &ngx_http_chat_sse_keepalive_bounds },

    { ngx_string("chat_sse_max_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, sse_max_queue),
      &ngx_http_chat_sse_max_queue_bounds },

    { ngx_string("chat_circuit_failures"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, circuit_failures),
      NULL },

    { ngx_string("chat_circuit_cooldown"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chat_core_main_conf_t, circuit_cooldown),
      &ngx_http_chat_circuit_cooldown_bounds },

    { ngx_string("chat_auth_error_style"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_chat_auth_error_style,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_service_name"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chat_core_loc_conf_t, service_name),
      &ngx_http_chat_conf_name_post },

    { ngx_string("chat_internal"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chat_core_loc_conf_t, internal),
      NULL },

    { ngx_string("chat_unprefixed"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chat_core_loc_conf_t, unprefixed),
      NULL },

    { ngx_string("chat_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chat_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_http_chat_health_handler },

    { ngx_string("chat_info"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chat_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_http_chat_info_handler },

    { ngx_string("chat_ready"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chat_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_http_chat_ready_handler },

    { ngx_string("chat_health_services"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_chat_health_services,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_health_circuits"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chat_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_http_chat_circuits_handler },

    { ngx_string("chat_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chat_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_http_chat_metrics_handler },

    { ngx_string("chat_diagnostics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chat_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_http_chat_diag_handler },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_chat_core_module_ctx = {
    ngx_http_chat_log_add_variables,       /* preconfiguration */
    ngx_http_chat_core_postconfiguration,  /* postconfiguration */

    ngx_http_chat_core_create_main_conf,   /* create main configuration */
    ngx_http_chat_core_init_main_conf,     /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_chat_core_create_loc_conf,    /* create location configuration */
    ngx_http_chat_core_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_chat_core_module = {
    NGX_MODULE_V1,
    &ngx_http_chat_core_module_ctx,        /* module context */
    ngx_http_chat_core_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_chat_core_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_chat_core_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_chat_core_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_chat_core_main_conf_t  *cmcf;

    cmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_chat_core_main_conf_t));
    if (cmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     cmcf->mysql_host = { 0, NULL };
     *     cmcf->redis_host = { 0, NULL };
     *     cmcf->mongo_uri = { 0, NULL };
     *     cmcf->jwt_secret = { 0, NULL };
     *     ...
     */

    cmcf->mysql_pool_size = NGX_CONF_UNSET_UINT;
    cmcf->mysql_queue_size = NGX_CONF_UNSET_UINT;
    cmcf->mysql_connect_timeout = NGX_CONF_UNSET_MSEC;
    cmcf->mysql_timeout = NGX_CONF_UNSET_MSEC;
    cmcf->redis_db = NGX_CONF_UNSET;
    cmcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    cmcf->jwt_lifetime = NGX_CONF_UNSET;
    cmcf->development = NGX_CONF_UNSET;
    cmcf->json_max_size = NGX_CONF_UNSET_SIZE;
    cmcf->events_maxlen = NGX_CONF_UNSET_UINT;
    cmcf->sse_keepalive = NGX_CONF_UNSET_MSEC;
    cmcf->sse_max_queue = NGX_CONF_UNSET_SIZE;
    cmcf->cpu_queue_size = NGX_CONF_UNSET_UINT;
    cmcf->cpu_queue_timeout = NGX_CONF_UNSET_MSEC;
    cmcf->circuit_failures = NGX_CONF_UNSET_UINT;
    cmcf->circuit_cooldown = NGX_CONF_UNSET_MSEC;

    return cmcf;
}


static char *
ngx_http_chat_core_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_chat_core_main_conf_t  *cmcf = conf;

    static ngx_str_t  default_pool = ngx_string("default");

    ngx_conf_init_uint_value(cmcf->mysql_pool_size, 8);
    ngx_conf_init_uint_value(cmcf->mysql_queue_size, 1024);
    ngx_conf_init_msec_value(cmcf->mysql_connect_timeout, 3000);
    ngx_conf_init_msec_value(cmcf->mysql_timeout, 5000);
    ngx_conf_init_value(cmcf->redis_db, 0);
    ngx_conf_init_msec_value(cmcf->redis_timeout, 3000);
    ngx_conf_init_value(cmcf->jwt_lifetime, 2 * 60 * 60);
    ngx_conf_init_size_value(cmcf->json_max_size, 64 * 1024);
    ngx_conf_init_uint_value(cmcf->events_maxlen, 100000);
    ngx_conf_init_msec_value(cmcf->sse_keepalive, 30000);
    ngx_conf_init_size_value(cmcf->sse_max_queue, 256 * 1024);
    ngx_conf_init_msec_value(cmcf->cpu_queue_timeout, 1000);
    ngx_conf_init_uint_value(cmcf->circuit_failures, 5);
    ngx_conf_init_msec_value(cmcf->circuit_cooldown, 5000);

    /* chat_cpu_queue_size stays unset for a default from the core count */

    if (cmcf->mongo_database.len == 0) {
        ngx_str_set(&cmcf->mongo_database, "bigtech_chat");
    }

    if (cmcf->mongo_pool_name.len == 0) {
        cmcf->mongo_pool_name = default_pool;
    }

    if (cmcf->cpu_pool_name.len == 0) {
        cmcf->cpu_pool_name = default_pool;
    }

    /* nginx creates a pool at configuration time if none is declared */

    cmcf->cpu_pool = ngx_thread_pool_add(cf, &cmcf->cpu_pool_name);
    if (cmcf->cpu_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    if (cmcf->mongo_uri.len) {
        cmcf->mongo_pool = ngx_thread_pool_add(cf, &cmcf->mongo_pool_name);
        if (cmcf->mongo_pool == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (cmcf->configured && cmcf->jwt_secret.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "chat: \"chat_jwt_secret\" or "
                           "\"chat_jwt_secret_file\" is required");
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_value(cmcf->development, 0);

    if (!cmcf->development
        && (ngx_http_chat_conf_credential(cf, "secret", &cmcf->jwt_secret,
                                          &cmcf->jwt_where, 32)
            != NGX_OK
            || ngx_http_chat_conf_credential(cf, "password",
                                             &cmcf->mysql_password,
                                             &cmcf->mysql_where, 0)
               != NGX_OK))
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Credentials shipped as examples (conf/nginx.conf of ./build.sh's stack,
 * the README, examples/nginx-chat.conf) are known to anyone who read them,
 * and a token secret of a few bytes is guessed: both are refused unless
 * "chat_development on" says the stack is for development.  Checked once
 * the http block is read, so the flag may come anywhere in it.
 */

static ngx_str_t  ngx_http_chat_examples[] = {
    ngx_string("change-me-nginx-chat-secret"),
    ngx_string("chatpw"),
    ngx_string("CHANGE-ME"),
    ngx_null_string
};


static ngx_int_t
ngx_http_chat_conf_credential(ngx_conf_t *cf, const char *kind,
    ngx_str_t *value, ngx_http_chat_conf_where_t *where, size_t min)
{
    ngx_str_t   *e;
    const char  *why;

    if (value->len == 0) {
        return NGX_OK;
    }

    why = NULL;

    for (e = ngx_http_chat_examples; e->len; e++) {
        if (e->len == value->len
            && ngx_strncmp(e->data, value->data, e->len) == 0)
        {
            why = "is an example shipped with nginx-chat";
            break;
        }
    }

    if (why == NULL && value->len < min) {
        why = "is shorter than 32 bytes";
    }

    if (why == NULL) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "chat: the %s of \"%V\" %s: make one with "
                  "\"openssl rand -hex 32\" (or say \"chat_development on\" "
                  "on a development stack) in %V:%ui",
                  kind, &where->directive, why, &where->file, where->line);

    return NGX_ERROR;
}


static void
ngx_http_chat_conf_where(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_chat_conf_where_t *where)
{
    where->directive = cmd->name;
    where->file = cf->conf_file->file.name;
    where->line = cf->conf_file->line;
}


static void *
ngx_http_chat_core_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_chat_core_loc_conf_t  *clcf;

    clcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_chat_core_loc_conf_t));
    if (clcf == NULL) {
        return NULL;
    }

    clcf->internal = NGX_CONF_UNSET;
    clcf->unprefixed = NGX_CONF_UNSET;
    clcf->cors_origins = NGX_CONF_UNSET_PTR;
    clcf->auth_error_style = NGX_CONF_UNSET_UINT;

    return clcf;
}


static char *
ngx_http_chat_core_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_chat_core_loc_conf_t *prev = parent;
    ngx_http_chat_core_loc_conf_t *conf = child;

    ngx_conf_merge_str_value(conf->service_name, prev->service_name,
                             "nginx-chat");
    ngx_conf_merge_value(conf->internal, prev->internal, 0);
    ngx_conf_merge_value(conf->unprefixed, prev->unprefixed, 0);
    ngx_conf_merge_ptr_value(conf->cors_origins, prev->cors_origins, NULL);
    ngx_conf_merge_uint_value(conf->auth_error_style, prev->auth_error_style,
                              NGX_HTTP_CHAT_AUTH_SERVICE);

    return NGX_CONF_OK;
}


/*
 * "host:port" resolved now, once: the client libraries resolve blocking.
 * They speak TCP only, so a "unix:" path is refused here rather than
 * failing in every worker.
 */

static ngx_int_t
ngx_http_chat_parse_address(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *value, in_port_t default_port, ngx_str_t *host,
    ngx_uint_t *port)
{
    u_char     *p;
    ngx_url_t   u;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *value;
    u.default_port = default_port;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "chat: invalid address \"%V\" in \"%V\" "
                           "directive%s%s", value, &cmd->name,
                           u.err ? ": " : "", u.err ? u.err : "");
        return NGX_ERROR;
    }

    if (u.family == AF_UNIX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "chat: invalid address \"%V\" in \"%V\" "
                           "directive: a unix socket is not supported",
                           value, &cmd->name);
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    host->len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, p,
                              NGX_SOCKADDR_STRLEN, 0);
    host->data = p;
    p[host->len] = '\0';

    *port = ngx_inet_get_port(u.addrs[0].sockaddr);

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_param(ngx_str_t *arg, const char *name, ngx_str_t *value)
{
    size_t  n;

    n = ngx_strlen(name);

    if (arg->len > n && ngx_strncmp(arg->data, name, n) == 0
        && arg->data[n] == '=')
    {
        value->data = arg->data + n + 1;
        value->len = arg->len - n - 1;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static char *
ngx_http_chat_mysql_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chat_core_main_conf_t *cmcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value, v;
    ngx_uint_t   i;

    if (cmcf->mysql_host.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_chat_parse_address(cf, cmd, &value[1], 3306,
                                    &cmcf->mysql_host, &cmcf->mysql_port)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_http_chat_param(&value[i], "user", &cmcf->mysql_user)
            == NGX_OK
            || ngx_http_chat_param(&value[i], "password",
                                   &cmcf->mysql_password)
               == NGX_OK
            || ngx_http_chat_param(&value[i], "database",
                                   &cmcf->mysql_database)
               == NGX_OK)
        {
            continue;
        }

        /* a connection per statement in flight: 1 to 1024 per worker */

        if (ngx_http_chat_param(&value[i], "pool", &v) == NGX_OK) {
            n = ngx_atoi(v.data, v.len);
            if (n <= 0 || n > 1024) {
                goto invalid;
            }
            cmcf->mysql_pool_size = n;
            continue;
        }

        if (ngx_http_chat_param(&value[i], "queue", &v) == NGX_OK) {
            n = ngx_atoi(v.data, v.len);
            if (n == NGX_ERROR) {
                goto invalid;
            }
            cmcf->mysql_queue_size = n;
            continue;
        }

        goto invalid;
    }

    if (cmcf->mysql_user.len == 0 || cmcf->mysql_database.len == 0) {
        return "needs \"user=\" and \"database=\"";
    }

    /* MariaDB's limit for a database name */

    if (cmcf->mysql_database.len > 64) {
        return "has a \"database=\" name longer than 64 characters";
    }

    ngx_http_chat_conf_where(cf, cmd, &cmcf->mysql_where);
    cmcf->configured = 1;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "chat: invalid parameter \"%V\" in \"%V\" directive",
                       &value[i], &cmd->name);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_chat_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chat_core_main_conf_t *cmcf = conf;

    ngx_str_t   *value, v;
    ngx_uint_t   i;

    if (cmcf->redis_host.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_chat_parse_address(cf, cmd, &value[1], 6379,
                                    &cmcf->redis_host, &cmcf->redis_port)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_http_chat_param(&value[i], "password", &cmcf->redis_password)
            == NGX_OK)
        {
            continue;
        }

        /* how many databases the server has is known only to the server */

        if (ngx_http_chat_param(&value[i], "db", &v) == NGX_OK) {
            cmcf->redis_db = ngx_atoi(v.data, v.len);
            if (cmcf->redis_db == NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        goto invalid;
    }

    ngx_http_chat_conf_where(cf, cmd, &cmcf->mysql_where);
    cmcf->configured = 1;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "chat: invalid parameter \"%V\" in \"%V\" directive",
                       &value[i], &cmd->name);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_chat_mongo_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chat_core_main_conf_t *cmcf = conf;

    u_char      *p;
    ngx_str_t   *value;

    if (cmcf->mongo_uri.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* mongoc wants a NUL-terminated string */

    p = ngx_pnalloc(cf->pool, value[1].len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(p, value[1].data, value[1].len);
    p[value[1].len] = '\0';

    if (ngx_http_chat_mongo_check_uri(cf, cmd, p) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cmcf->mongo_uri.data = p;
    cmcf->mongo_uri.len = value[1].len;

    if (cf->args->nelts == 3) {
        if (ngx_http_chat_param(&value[2], "database", &cmcf->mongo_database)
            != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "chat: invalid parameter \"%V\" in \"%V\" "
                               "directive", &value[2], &cmd->name);
            return NGX_CONF_ERROR;
        }

        if (ngx_http_chat_mongo_check_database(&cmcf->mongo_database)
            != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "chat: invalid database name \"%V\" in \"%V\" "
                               "directive: 1 to 63 characters, none of "
                               "/\\. \"$", &cmcf->mongo_database,
                               &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    cmcf->configured = 1;

    return NGX_CONF_OK;
}


/* MongoDB's rules for a database name on a Unix server */

static ngx_int_t
ngx_http_chat_mongo_check_database(ngx_str_t *name)
{
    u_char      c;
    ngx_uint_t  i;

    if (name->len == 0 || name->len > 63) {
        return NGX_ERROR;
    }

    for (i = 0; i < name->len; i++) {
        c = name->data[i];

        if (c < 0x20 || c == 0x7f || ngx_strchr("/\\. \"$", c) != NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A pool not declared (yet: "thread_pool" may follow "http") is added
 * here, so that nginx's "unknown thread pool" error at the end of the
 * configuration points at this directive's line, as for "aio threads=".
 */

static char *
ngx_http_chat_thread_pool(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char       *rv;
    ngx_str_t  *name;

    rv = ngx_conf_set_str_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    name = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (name->len == 0) {
        return "needs a thread pool name";
    }

    if (ngx_thread_pool_add(cf, name) == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_chat_jwt_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chat_core_main_conf_t *cmcf = conf;

    ngx_str_t  *value;

    if (cmcf->jwt_secret.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "must not be empty";
    }

    cmcf->jwt_secret = value[1];
    ngx_http_chat_conf_where(cf, cmd, &cmcf->jwt_where);

    return NGX_CONF_OK;
}


static char *
ngx_http_chat_jwt_secret_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chat_core_main_conf_t *cmcf = conf;

    u_char      *p;
    ssize_t      n;
    ngx_str_t   *value;
    ngx_file_t   file;

    if (cmcf->jwt_secret.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));

    file.name = value[1];
    file.log = cf->log;

    file.fd = ngx_open_file(value[1].data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "chat: \"%V\" directive: " ngx_open_file_n
                           " \"%V\" failed", &cmd->name, &value[1]);
        return NGX_CONF_ERROR;
    }

    /* one byte more than a secret may have, to tell a longer file */

    p = ngx_pnalloc(cf->pool, 4097);
    if (p == NULL) {
        ngx_close_file(file.fd);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_file(&file, p, 4097, 0);

    ngx_close_file(file.fd);

    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    if (n > 4096) {
        return "has a file longer than 4096 bytes";
    }

    /* a trailing newline is not part of the secret */

    while (n > 0 && (p[n - 1] == LF || p[n - 1] == CR)) {
        n--;
    }

    if (n == 0) {
        return "has an empty file";
    }

    cmcf->jwt_secret.data = p;
    cmcf->jwt_secret.len = n;
    ngx_http_chat_conf_where(cf, cmd, &cmcf->jwt_where);

    return NGX_CONF_OK;
}


/* nginx's enum setter names the value only, not the directive */

static char *
ngx_http_chat_auth_error_style(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_chat_core_loc_conf_t *clcf = conf;

    ngx_str_t  *value;

    if (clcf->auth_error_style != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "service") == 0) {
        clcf->auth_error_style = NGX_HTTP_CHAT_AUTH_SERVICE;

    } else if (ngx_strcmp(value[1].data, "gateway") == 0) {
        clcf->auth_error_style = NGX_HTTP_CHAT_AUTH_GATEWAY;

    } else {
        return "must be \"service\" or \"gateway\"";
    }

    return NGX_CONF_OK;
}


char *
ngx_http_chat_conf_check_num(ngx_conf_t *cf, void *post, void *data)
{
    ngx_http_chat_conf_bounds_t *b = post;

    ngx_int_t  *np = data;

    if (*np < (ngx_int_t) b->low || (b->high && *np > (ngx_int_t) b->high)) {
        return b->err;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_chat_conf_check_msec(ngx_conf_t *cf, void *post, void *data)
{
    ngx_http_chat_conf_bounds_t *b = post;

    ngx_msec_t  *mp = data;

    if (*mp < b->low || (b->high && *mp > b->high)) {
        return b->err;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_chat_conf_check_sec(ngx_conf_t *cf, void *post, void *data)
{
    ngx_http_chat_conf_bounds_t *b = post;

    time_t  *tp = data;

    if (*tp < (time_t) b->low || (b->high && *tp > (time_t) b->high)) {
        return b->err;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_chat_conf_check_size(ngx_conf_t *cf, void *post, void *data)
{
    ngx_http_chat_conf_bounds_t *b = post;

    size_t  *sp = data;

    if (*sp < b->low || (b->high && *sp > b->high)) {
        return b->err;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_chat_conf_check_name(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *s = data;

    u_char      c;
    ngx_uint_t  i;

    if (s->len == 0) {
        return "must not be empty";
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (c < 0x20 || c == 0x7f) {
            return "must not contain control characters";
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_chat_set_handler(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = (ngx_http_handler_pt) cmd->post;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_chat_health_handler(ngx_http_request_t *r)
{
    cJSON                          *json;
    ngx_http_chat_core_loc_conf_t  *clcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_chat_send_method_not_allowed(r, "GET");
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_chat_core_module);

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || cJSON_AddStringToObject(json, "status", "healthy") == NULL
        || ngx_http_chat_json_nstr(json, "service", &clcf->service_name)
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


static ngx_int_t
ngx_http_chat_info_handler(ngx_http_request_t *r)
{
    cJSON                          *json;
    ngx_http_chat_core_loc_conf_t  *clcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_chat_send_method_not_allowed(r, "GET");
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_chat_core_module);

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || ngx_http_chat_json_nstr(json, "service", &clcf->service_name)
           == NULL
        || cJSON_AddStringToObject(json, "version",
                                   NGX_HTTP_CHAT_VERSION) == NULL
        || cJSON_AddStringToObject(json, "status", "running") == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/* readiness: what this worker knows of each datastore, 503 unless all up */

static ngx_int_t
ngx_http_chat_ready_handler(ngx_http_request_t *r)
{
    cJSON       *json, *stores;
    ngx_uint_t   i, all;

    static const char  *names[] = { "down", "connecting", "up" };
    static const char  *stores_names[] = { "mysql", "redis", "mongo" };

    ngx_uint_t  states[3];

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_chat_send_method_not_allowed(r, "GET");
    }

    states[0] = ngx_http_chat_mysql_state();
    states[1] = ngx_http_chat_redis_state();
    states[2] = ngx_http_chat_mongo_state();

    json = ngx_http_chat_json_object(r);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    all = 1;

    for (i = 0; i < 3; i++) {
        if (states[i] != NGX_HTTP_CHAT_UP) {
            all = 0;
        }
    }

    if (cJSON_AddStringToObject(json, "status", all ? "ready" : "degraded")
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    stores = cJSON_AddObjectToObject(json, "datastores");
    if (stores == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < 3; i++) {
        if (cJSON_AddStringToObject(stores, stores_names[i],
                                    names[states[i]])
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_chat_send_json(r, all ? NGX_HTTP_OK
                                          : NGX_HTTP_SERVICE_UNAVAILABLE,
                                   json);
}


ngx_int_t
ngx_http_chat_event_interest(ngx_event_t *ev, ngx_int_t event,
    ngx_uint_t want)
{
    if (want && !ev->active) {
        return ngx_add_event(ev, event, NGX_LEVEL_EVENT);
    }

    if (!want && ev->active) {
        return ngx_del_event(ev, event, 0);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_core_postconfiguration(ngx_conf_t *cf)
{
    if (ngx_http_chat_cors_init(cf) != NGX_OK
        || ngx_http_chat_metrics_init(cf) != NGX_OK
        || ngx_http_chat_circuit_init(cf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_core_init_process(ngx_cycle_t *cycle)
{
    ngx_http_chat_core_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_chat_core_module);
    if (cmcf == NULL) {
        return NGX_OK;
    }

    ngx_http_chat_circuit_init_process(cycle, cmcf);

    if (ngx_http_chat_mysql_init_process(cycle, cmcf) != NGX_OK
        || ngx_http_chat_redis_init_process(cycle, cmcf) != NGX_OK
        || ngx_http_chat_mongo_init_process(cycle, cmcf) != NGX_OK
        || ngx_http_chat_thread_init_process(cycle, cmcf) != NGX_OK
        || ngx_http_chat_schema_init_process(cycle, cmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_chat_core_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_chat_schema_exit_process(cycle);
    ngx_http_chat_mysql_exit_process(cycle);
    ngx_http_chat_redis_exit_process(cycle);
    ngx_http_chat_mongo_exit_process(cycle);
    ngx_http_chat_sse_exit_process(cycle);
}
