
/*
 * Presence expiry (API.md 3.13): when a user's "user:online:{id}" key
 * expires, the user is offline: SREM online_users, SETEX user:last_seen,
 * MariaDB is_online = 0 and last_seen_at, and a PUBLISH on
 * "user:status:{id}", as the original's expiry monitor does.
 *
 * One worker per nginx listens (worker 0), through Redis keyspace
 * notifications; several nodes each apply the same idempotent update.
 * The statement runs in the CPU thread pool on a short-lived connection of
 * its own: expiries are rare, and the event loop never waits for them.
 */


#include "ngx_http_chat_user_module.h"

#include <mysql.h>


#define NGX_HTTP_CHAT_USER_SEEN_TTL  "604800"


typedef struct {
    int64_t                          id;
    ngx_http_chat_core_main_conf_t  *cmcf;
    ngx_int_t                        rc;
    char                             error[128];
} ngx_http_chat_user_offline_t;


static void ngx_http_chat_user_expired(ngx_str_t *channel, ngx_str_t *key,
    void *data);
static void ngx_http_chat_user_notify_config(ngx_event_t *ev);
static void ngx_http_chat_user_offline_thread(void *data, ngx_log_t *log);
static void ngx_http_chat_user_offline_done(ngx_event_t *ev);


static ngx_event_t       ngx_http_chat_user_config_timer;
static ngx_connection_t  ngx_http_chat_user_dummy;
static u_char            ngx_http_chat_user_channel[48];


ngx_int_t
ngx_http_chat_user_presence_init(ngx_cycle_t *cycle)
{
    ngx_str_t                        channel;
    ngx_http_chat_core_main_conf_t  *cmcf;

    if ((ngx_process != NGX_PROCESS_WORKER
         && ngx_process != NGX_PROCESS_SINGLE)
        || ngx_worker != 0)
    {
        return NGX_OK;
    }

    cmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_chat_core_module);

    if (cmcf == NULL || cmcf->redis_host.len == 0
        || cmcf->mysql_host.len == 0)
    {
        return NGX_OK;
    }

    channel.data = ngx_http_chat_user_channel;
    channel.len = ngx_sprintf(channel.data, "__keyevent@%i__:expired",
                              cmcf->redis_db)
                  - channel.data;

    if (ngx_http_chat_redis_subscribe(&channel, ngx_http_chat_user_expired,
                                      cmcf)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the server must send expiry events; a restarted Redis forgets it */

    ngx_http_chat_user_dummy.fd = (ngx_socket_t) -1;

    ngx_http_chat_user_config_timer.handler =
                                        ngx_http_chat_user_notify_config;
    ngx_http_chat_user_config_timer.data = &ngx_http_chat_user_dummy;
    ngx_http_chat_user_config_timer.log = cycle->log;
    ngx_http_chat_user_config_timer.cancelable = 1;

    ngx_add_timer(&ngx_http_chat_user_config_timer, 100);

    return NGX_OK;
}


static void
ngx_http_chat_user_notify_config(ngx_event_t *ev)
{
    ngx_msec_t   next;
    const char  *argv[4];
    size_t       argvlen[4];

    argv[0] = "CONFIG";
    argvlen[0] = 6;
    argv[1] = "SET";
    argvlen[1] = 3;
    argv[2] = "notify-keyspace-events";
    argvlen[2] = sizeof("notify-keyspace-events") - 1;
    argv[3] = "Ex";
    argvlen[3] = 2;

    next = (ngx_http_chat_redis_send(4, argv, argvlen) == NGX_OK) ? 30000
                                                                  : 1000;

    if (!ngx_exiting) {
        ngx_add_timer(ev, next);
    }
}


static void
ngx_http_chat_user_expired(ngx_str_t *channel, ngx_str_t *key, void *data)
{
    u_char                        *p;
    u_char                         buf[NGX_INT64_LEN + 32];
    u_char                         id_s[NGX_INT64_LEN];
    u_char                         msg[160], now[32];
    int64_t                        id;
    ngx_str_t                      s;
    struct timeval                 tv;
    const char                    *argv[4];
    size_t                         argvlen[4];
    ngx_thread_task_t             *task;
    ngx_http_chat_user_offline_t  *off;
    ngx_http_chat_core_main_conf_t  *cmcf = data;

    if (key->len <= sizeof("user:online:") - 1
        || ngx_strncmp(key->data, "user:online:",
                       sizeof("user:online:") - 1)
           != 0)
    {
        return;
    }

    s.data = key->data + sizeof("user:online:") - 1;
    s.len = key->len - (sizeof("user:online:") - 1);

    if (ngx_http_chat_parse_id(&s, &id) != NGX_OK || id <= 0) {
        return;
    }

    ngx_gettimeofday(&tv);
    p = ngx_http_chat_iso_time(now, tv.tv_sec, tv.tv_usec);
    *p = '\0';

    argvlen[2] = ngx_sprintf(id_s, "%L", id) - id_s;

    argv[0] = "SREM";
    argvlen[0] = 4;
    argv[1] = "online_users";
    argvlen[1] = sizeof("online_users") - 1;
    argv[2] = (const char *) id_s;

    (void) ngx_http_chat_redis_send(3, argv, argvlen);

    argv[0] = "SETEX";
    argvlen[0] = 5;
    argv[1] = (const char *) buf;
    argvlen[1] = ngx_sprintf(buf, "user:last_seen:%L", id) - buf;
    argv[2] = NGX_HTTP_CHAT_USER_SEEN_TTL;
    argvlen[2] = sizeof(NGX_HTTP_CHAT_USER_SEEN_TTL) - 1;
    argv[3] = (const char *) now;
    argvlen[3] = p - now;

    (void) ngx_http_chat_redis_send(4, argv, argvlen);

    argv[0] = "PUBLISH";
    argvlen[0] = 7;
    argv[1] = (const char *) buf;
    argvlen[1] = ngx_sprintf(buf, "user:status:%L", id) - buf;
    argv[2] = (const char *) msg;
    argvlen[2] = ngx_sprintf(msg, "{\"user_id\": %L, \"is_online\": false, "
                             "\"last_seen\": \"%s\", \"timestamp\": \"%s\"}",
                             id, now, now)
                 - msg;

    (void) ngx_http_chat_redis_send(3, argv, argvlen);

    /* worker-lifetime memory: freed when the task comes back */

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_http_chat_user_offline_t),
                      ngx_cycle->log);
    if (task == NULL) {
        return;
    }

    off = (ngx_http_chat_user_offline_t *) (task + 1);
    off->id = id;
    off->cmcf = cmcf;

    task->ctx = off;
    task->handler = ngx_http_chat_user_offline_thread;
    task->event.handler = ngx_http_chat_user_offline_done;
    task->event.data = task;
    task->event.log = ngx_cycle->log;

    if (ngx_thread_task_post(cmcf->cpu_pool, task) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "chat user: user %L offline not stored", id);
        ngx_free(task);
    }
}


/* in a pool thread: a connection of its own, one statement */

static void
ngx_http_chat_user_offline_thread(void *data, ngx_log_t *log)
{
    ngx_http_chat_user_offline_t *off = data;

    char                            *end;
    char                             sql[160];
    MYSQL                           *m;
    unsigned int                     timeout;
    ngx_http_chat_core_main_conf_t  *cmcf;

    cmcf = off->cmcf;
    off->rc = NGX_ERROR;

    m = mysql_init(NULL);
    if (m == NULL) {
        return;
    }

    timeout = 3;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &timeout);

    /* the id is an integer parsed above: nothing of the key's text */

    end = (char *) ngx_snprintf((u_char *) sql, sizeof(sql) - 1,
                                "UPDATE users SET is_online = 0, "
                                "last_seen_at = UTC_TIMESTAMP(), "
                                "updated_at = UTC_TIMESTAMP() WHERE id = %L",
                                off->id);
    *end = '\0';

    if (mysql_real_connect(m, (char *) cmcf->mysql_host.data,
                           (char *) cmcf->mysql_user.data,
                           (char *) cmcf->mysql_password.data,
                           (char *) cmcf->mysql_database.data,
                           cmcf->mysql_port, NULL, 0)
        != NULL
        && mysql_query(m, sql) == 0)
    {
        off->rc = NGX_OK;

    } else {
        ngx_cpystrn((u_char *) off->error, (u_char *) mysql_error(m),
                    sizeof(off->error));
    }

    mysql_close(m);
}


static void
ngx_http_chat_user_offline_done(ngx_event_t *ev)
{
    ngx_thread_task_t             *task;
    ngx_http_chat_user_offline_t  *off;

    task = ev->data;
    off = task->ctx;

    if (off->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "chat user: user %L offline not stored: %s",
                      off->id, off->error);
    }

    ngx_free(task);
}
