
/*
 * MongoDB: mongo-c-driver has no asynchronous API, so its calls run in a
 * thread pool (ngx_http_chat_thread.c) with clients of one
 * mongoc_client_pool_t per worker.  Everything that talks to MongoDB, with
 * or without a request, does it through ngx_http_chat_op_mongo().
 *
 * A task function gets only its own data, allocated before the task is
 * posted: it must not allocate from nginx pools, touch requests or post
 * events.
 */


#include "ngx_http_chat_core_module.h"


#define NGX_HTTP_CHAT_MONGO_PING    10000


/* what a MongoDB task runs: the caller's function with a pooled client */

typedef struct {
    ngx_http_chat_mongo_pt          run;
    void                           *data;
} ngx_http_chat_mongo_task_t;


static ngx_int_t ngx_http_chat_mongo_run(void *data);
static void ngx_http_chat_mongo_log(mongoc_log_level_t level,
    const char *domain, const char *message, void *data);
static void ngx_http_chat_mongo_check_log(mongoc_log_level_t level,
    const char *domain, const char *message, void *data);
static void ngx_http_chat_mongo_ping_handler(ngx_event_t *ev);
static void ngx_http_chat_mongo_ping_thread(void *data, ngx_log_t *log);
static void ngx_http_chat_mongo_ping_done(ngx_event_t *ev);


static mongoc_client_pool_t  *ngx_http_chat_mongo_clients;
static const char            *ngx_http_chat_mongo_dbname;
static ngx_thread_pool_t     *ngx_http_chat_mongo_threads;
static ngx_thread_task_t     *ngx_http_chat_mongo_ping_task;
static ngx_event_t            ngx_http_chat_mongo_ping_timer;
static ngx_uint_t             ngx_http_chat_mongo_ping_busy;

/* timer events log the fd of their "connection" */
static ngx_connection_t       ngx_http_chat_mongo_dummy;

/* written by pool threads, read by the worker for readiness */
static volatile ngx_atomic_t  ngx_http_chat_mongo_status
                                  = NGX_HTTP_CHAT_CONNECTING;


ngx_int_t
ngx_http_chat_op_mongo(ngx_http_chat_op_t *op, ngx_http_chat_mongo_pt run,
    void *data)
{
    ngx_thread_pool_t           *pool;
    ngx_http_chat_mongo_task_t  *t;

    pool = ngx_http_chat_mongo_clients ? ngx_http_chat_mongo_threads : NULL;

    t = ngx_palloc(op->pool, sizeof(ngx_http_chat_mongo_task_t));
    if (t == NULL) {
        return NGX_ERROR;
    }

    t->run = run;
    t->data = data;

    if (pool && ngx_http_chat_op_admit(op, NGX_HTTP_CHAT_MONGO) != NGX_OK) {
        return NGX_OK;
    }

    return ngx_http_chat_op_thread(op, pool, ngx_http_chat_mongo_run, t);
}


/* in a pool thread */

static ngx_int_t
ngx_http_chat_mongo_run(void *data)
{
    ngx_http_chat_mongo_task_t *t = data;

    ngx_int_t           rc;
    mongoc_client_t    *client;
    mongoc_database_t  *db;

    client = mongoc_client_pool_pop(ngx_http_chat_mongo_clients);
    if (client == NULL) {
        return NGX_DECLINED;
    }

    db = mongoc_client_get_database(client, ngx_http_chat_mongo_dbname);

    rc = t->run(db, t->data);

    mongoc_database_destroy(db);
    mongoc_client_pool_push(ngx_http_chat_mongo_clients, client);

    if (rc == NGX_DECLINED) {
        ngx_http_chat_mongo_status = NGX_HTTP_CHAT_DOWN;

    } else {
        ngx_http_chat_mongo_status = NGX_HTTP_CHAT_UP;
    }

    return rc;
}


/* NGX_DECLINED: MongoDB unreachable (503), NGX_ERROR: the operation failed */

ngx_int_t
ngx_http_chat_mongo_error(bson_error_t *error)
{
    switch (error->domain) {

    case MONGOC_ERROR_STREAM:
    case MONGOC_ERROR_SERVER_SELECTION:
    case MONGOC_ERROR_CLIENT:
        return NGX_DECLINED;

    default:
        return NGX_ERROR;
    }
}


typedef struct {
    ngx_conf_t                  *cf;
    ngx_command_t               *cmd;
    ngx_uint_t                   warned;
} ngx_http_chat_mongo_check_t;


/*
 * chat_mongo's URI, parsed by the driver when the configuration is read,
 * so that a mistake fails "nginx -t" and a reload instead of every new
 * worker.  What the driver only warns about (an unknown option, a value
 * it ignores) is refused too: it is a typo more often than not.
 *
 * mongoc_init() and mongoc_cleanup() each run once per process whatever
 * the number of calls, and a cleaned-up driver cannot be initialised
 * again.  Debian's libmongoc initialises itself when the module is loaded,
 * so mongoc_init() here changes nothing; the master never calls
 * mongoc_cleanup() (its workers are forked from it and use the driver),
 * each worker still calls both, and the library's own exit handler cleans
 * up the master.
 */

ngx_int_t
ngx_http_chat_mongo_check_uri(ngx_conf_t *cf, ngx_command_t *cmd, u_char *uri)
{
    bson_error_t                  error;
    mongoc_uri_t                 *u;
    ngx_http_chat_mongo_check_t   ck;

    mongoc_init();

    ck.cf = cf;
    ck.cmd = cmd;
    ck.warned = 0;

    mongoc_log_set_handler(ngx_http_chat_mongo_check_log, &ck);

    u = mongoc_uri_new_with_error((char *) uri, &error);

    mongoc_log_set_handler(mongoc_log_default_handler, NULL);

    if (u == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "chat: invalid URI in \"%V\" directive: %s",
                           &cmd->name, error.message);
        return NGX_ERROR;
    }

    mongoc_uri_destroy(u);

    return ck.warned ? NGX_ERROR : NGX_OK;
}


static void
ngx_http_chat_mongo_check_log(mongoc_log_level_t level, const char *domain,
    const char *message, void *data)
{
    ngx_http_chat_mongo_check_t *ck = data;

    size_t  len;

    if (level > MONGOC_LOG_LEVEL_WARNING) {
        return;
    }

    len = ngx_strlen(message);

    while (len && (message[len - 1] == LF || message[len - 1] == ' ')) {
        len--;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, ck->cf, 0,
                       "chat: invalid URI in \"%V\" directive: %*s",
                       &ck->cmd->name, len, message);

    ck->warned = 1;
}


ngx_uint_t
ngx_http_chat_mongo_state(void)
{
    if (ngx_http_chat_mongo_clients == NULL) {
        return NGX_HTTP_CHAT_DOWN;
    }

    return ngx_http_chat_mongo_status;
}


ngx_int_t
ngx_http_chat_mongo_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf)
{
    u_char        *name;
    bson_error_t   error;
    mongoc_uri_t  *uri;

    if (cmcf->mongo_uri.len == 0) {
        return NGX_OK;
    }

    mongoc_init();
    mongoc_log_set_handler(ngx_http_chat_mongo_log, cycle->log);

    uri = mongoc_uri_new_with_error((char *) cmcf->mongo_uri.data, &error);
    if (uri == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "chat mongo: invalid URI: %s", error.message);
        return NGX_ERROR;
    }

    mongoc_uri_set_appname(uri, "nginx-chat");

    ngx_http_chat_mongo_clients = mongoc_client_pool_new(uri);
    mongoc_uri_destroy(uri);

    if (ngx_http_chat_mongo_clients == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "chat mongo: mongoc_client_pool_new() failed");
        return NGX_ERROR;
    }

    mongoc_client_pool_set_error_api(ngx_http_chat_mongo_clients,
                                     MONGOC_ERROR_API_VERSION_2);

    name = ngx_pnalloc(cycle->pool, cmcf->mongo_database.len + 1);
    if (name == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(name, cmcf->mongo_database.data, cmcf->mongo_database.len)
        = '\0';

    ngx_http_chat_mongo_dbname = (const char *) name;
    ngx_http_chat_mongo_threads = cmcf->mongo_pool;

    /* a periodic ping keeps the readiness view honest while idle */

    ngx_http_chat_mongo_ping_task = ngx_thread_task_alloc(cycle->pool, 0);
    if (ngx_http_chat_mongo_ping_task == NULL) {
        return NGX_ERROR;
    }

    ngx_http_chat_mongo_ping_task->handler = ngx_http_chat_mongo_ping_thread;
    ngx_http_chat_mongo_ping_task->event.handler =
                                              ngx_http_chat_mongo_ping_done;
    ngx_http_chat_mongo_ping_task->event.log = cycle->log;

    ngx_http_chat_mongo_dummy.fd = (ngx_socket_t) -1;

    ngx_http_chat_mongo_ping_timer.data = &ngx_http_chat_mongo_dummy;
    ngx_http_chat_mongo_ping_timer.handler = ngx_http_chat_mongo_ping_handler;
    ngx_http_chat_mongo_ping_timer.log = cycle->log;
    ngx_http_chat_mongo_ping_timer.cancelable = 1;

    ngx_add_timer(&ngx_http_chat_mongo_ping_timer, 1);

    return NGX_OK;
}


static void
ngx_http_chat_mongo_ping_handler(ngx_event_t *ev)
{
    if (ngx_exiting || ngx_http_chat_mongo_ping_busy) {
        return;
    }

    if (ngx_thread_task_post(ngx_http_chat_mongo_threads,
                             ngx_http_chat_mongo_ping_task)
        == NGX_OK)
    {
        ngx_http_chat_mongo_ping_busy = 1;
        return;
    }

    ngx_add_timer(ev, NGX_HTTP_CHAT_MONGO_PING);
}


/* in a pool thread */

static void
ngx_http_chat_mongo_ping_thread(void *data, ngx_log_t *log)
{
    bool              ok;
    bson_t            cmd;
    bson_error_t      error;
    mongoc_client_t  *client;

    client = mongoc_client_pool_pop(ngx_http_chat_mongo_clients);
    if (client == NULL) {
        return;
    }

    bson_init(&cmd);
    BSON_APPEND_INT32(&cmd, "ping", 1);

    ok = mongoc_client_command_simple(client, "admin", &cmd, NULL, NULL,
                                      &error);
    bson_destroy(&cmd);

    mongoc_client_pool_push(ngx_http_chat_mongo_clients, client);

    ngx_http_chat_mongo_status = ok ? NGX_HTTP_CHAT_UP : NGX_HTTP_CHAT_DOWN;
}


static void
ngx_http_chat_mongo_ping_done(ngx_event_t *ev)
{
    ngx_http_chat_mongo_ping_busy = 0;

    if (!ngx_exiting) {
        ngx_add_timer(&ngx_http_chat_mongo_ping_timer,
                      NGX_HTTP_CHAT_MONGO_PING);
    }
}


/* the driver's own messages, warnings and worse, into the error log */

static void
ngx_http_chat_mongo_log(mongoc_log_level_t level, const char *domain,
    const char *message, void *data)
{
    ngx_log_t  *log = data;

    ngx_uint_t  ngx_level;

    if (level > MONGOC_LOG_LEVEL_WARNING) {
        return;
    }

    ngx_level = (level <= MONGOC_LOG_LEVEL_CRITICAL) ? NGX_LOG_CRIT
                                                     : NGX_LOG_WARN;

    ngx_log_error(ngx_level, log, 0, "chat mongo: %s: %s", domain, message);
}


void
ngx_http_chat_mongo_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_chat_mongo_clients == NULL) {
        return;
    }

    /* the thread pools have finished their queues by now */

    mongoc_client_pool_destroy(ngx_http_chat_mongo_clients);
    ngx_http_chat_mongo_clients = NULL;

    mongoc_cleanup();
}
