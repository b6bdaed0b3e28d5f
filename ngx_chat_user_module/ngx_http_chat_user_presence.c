
/*
 * Presence expiry (API.md 3.13): when a user's "user:online:{id}" key
 * expires, the user is offline: SREM online_users, SETEX user:last_seen,
 * MariaDB is_online = 0 and last_seen_at, and a PUBLISH on
 * "user:status:{id}", as the original's expiry monitor does.
 *
 * One worker per nginx listens (worker 0), through Redis keyspace
 * notifications; several nodes each apply the same idempotent update.
 * The update is an operation on the core's MariaDB pool, with a small pool
 * of its own for each attempt; last_seen_at is the time of the expiry, as
 * in user:last_seen, however late the statement gets through.
 *
 * An expiry is not lost to a MariaDB outage: a failed update is tried
 * again after 250 ms, then twice as long each time up to 10 s, for as
 * long as MariaDB is unavailable (a statement MariaDB refuses, three
 * times in all).  Before each retry the presence key is looked at: a user
 * who logged in again meanwhile is online and stays so.  At most
 * NGX_HTTP_CHAT_USER_OFFLINE_MAX updates wait in a worker.  What a worker
 * still holds when it exits (reload, stop) is lost with it: logged, and
 * counted with the forgotten statements.
 *
 * Once stored, the expiry is also told as UserOnlineStatusChanged on
 * user.online_status, as log in and log out are (API.md 12, N5: friends
 * learn of it from the notification consumer, which reads last_seen_at
 * then).  Every node stores the expiry; only the first to claim
 * "user:offline_event:{id}" in Redis publishes it.
 */


#include "ngx_http_chat_user_module.h"


#define NGX_HTTP_CHAT_USER_SEEN_TTL       "604800"

#define NGX_HTTP_CHAT_USER_RETRY_MIN      250
#define NGX_HTTP_CHAT_USER_RETRY_MAX      10000
#define NGX_HTTP_CHAT_USER_REFUSED_MAX    3
#define NGX_HTTP_CHAT_USER_OFFLINE_MAX    10000

/* how long the first node's claim on an expiry's event keeps the others
 * off: the nodes see one expiry within milliseconds of each other */
#define NGX_HTTP_CHAT_USER_CLAIM_MS       "2000"

#define NGX_HTTP_CHAT_USER_OFFLINE_SQL                                       \
    "UPDATE users SET is_online = 0, last_seen_at = ?, "                     \
    "updated_at = UTC_TIMESTAMP() WHERE id = ?"


/* an offline update, until it is stored or given up */

typedef struct {
    int64_t                          id;
    u_char                           seen[sizeof("1970-01-01 00:00:00")];

    ngx_uint_t                       attempts;
    ngx_uint_t                       refused;
    ngx_msec_t                       backoff;

    ngx_http_chat_op_t               update;
    ngx_http_chat_op_t               check;     /* the key, before a retry */
    ngx_event_t                      retry;

    ngx_queue_t                      queue;
} ngx_http_chat_user_offline_t;


static void ngx_http_chat_user_expired(ngx_str_t *channel, ngx_str_t *key,
    void *data);
static void ngx_http_chat_user_notify_config(ngx_event_t *ev);
static void ngx_http_chat_user_offline(int64_t id, time_t sec);
static void ngx_http_chat_user_offline_update(
    ngx_http_chat_user_offline_t *off);
static void ngx_http_chat_user_offline_done(ngx_http_chat_op_t *op);
static void ngx_http_chat_user_offline_retry(ngx_event_t *ev);
static void ngx_http_chat_user_offline_checked(ngx_http_chat_op_t *op);
static void ngx_http_chat_user_offline_free(
    ngx_http_chat_user_offline_t *off);
static void ngx_http_chat_user_offline_event(int64_t id);
static void ngx_http_chat_user_offline_claimed(ngx_http_chat_op_t *op);


static ngx_event_t       ngx_http_chat_user_config_timer;
static ngx_connection_t  ngx_http_chat_user_dummy;
static u_char            ngx_http_chat_user_channel[48];

/* the offline updates of this worker not stored yet */
static ngx_queue_t       ngx_http_chat_user_offlines;
static ngx_uint_t        ngx_http_chat_user_noffline;


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

    ngx_queue_init(&ngx_http_chat_user_offlines);

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

    ngx_http_chat_user_offline(id, tv.tv_sec);
}


/*
 * Worker memory: an update may outlive any request or pool of the moment,
 * each attempt has a small pool of its own
 */

static void
ngx_http_chat_user_offline(int64_t id, time_t sec)
{
    ngx_tm_t                       tm;
    ngx_http_chat_user_offline_t  *off;

    if (ngx_http_chat_user_noffline >= NGX_HTTP_CHAT_USER_OFFLINE_MAX) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "chat user: user %L offline not stored: %ui updates "
                      "wait for MariaDB already", id,
                      ngx_http_chat_user_noffline);
        ngx_http_chat_metrics_forgotten();
        return;
    }

    off = ngx_calloc(sizeof(ngx_http_chat_user_offline_t), ngx_cycle->log);
    if (off == NULL) {
        ngx_http_chat_metrics_forgotten();
        return;
    }

    off->id = id;
    off->backoff = NGX_HTTP_CHAT_USER_RETRY_MIN;

    ngx_gmtime(sec, &tm);

    (void) ngx_sprintf(off->seen, "%4d-%02d-%02d %02d:%02d:%02d",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);

    off->retry.handler = ngx_http_chat_user_offline_retry;
    off->retry.data = &ngx_http_chat_user_dummy;
    off->retry.log = ngx_cycle->log;
    off->retry.cancelable = 1;

    ngx_queue_insert_tail(&ngx_http_chat_user_offlines, &off->queue);
    ngx_http_chat_user_noffline++;

    ngx_http_chat_user_offline_update(off);
}


static void
ngx_http_chat_user_offline_update(ngx_http_chat_user_offline_t *off)
{
    ngx_http_chat_op_t       *op;
    ngx_http_chat_sql_arg_t   args[2];

    off->attempts++;

    op = &off->update;

    op->log = ngx_cycle->log;
    op->handler = ngx_http_chat_user_offline_done;
    op->data = off;

    op->pool = ngx_create_pool(1024, ngx_cycle->log);
    if (op->pool == NULL) {
        ngx_http_chat_user_offline_free(off);
        return;
    }

    args[0].type = NGX_HTTP_CHAT_SQL_STR;
    args[0].str.data = off->seen;
    args[0].str.len = sizeof(off->seen) - 1;

    args[1].type = NGX_HTTP_CHAT_SQL_INT;
    args[1].num = off->id;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat user: user %L offline, attempt %ui",
                   off->id, off->attempts);

    if (ngx_http_chat_op_sql(op, NGX_HTTP_CHAT_USER_OFFLINE_SQL, args, 2)
        != NGX_OK)
    {
        ngx_http_chat_op_fail(op);
    }
}


static void
ngx_http_chat_user_offline_done(ngx_http_chat_op_t *op)
{
    ngx_int_t                      rc;
    ngx_http_chat_user_offline_t  *off;

    off = op->data;
    rc = op->rc;

    ngx_destroy_pool(op->pool);
    op->pool = NULL;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat user: user %L offline, attempt %ui: rc:%i",
                   off->id, off->attempts, rc);

    if (rc == NGX_OK) {
        if (off->attempts > 1) {
            ngx_log_error(NGX_LOG_NOTICE, op->log, 0,
                          "chat user: user %L offline stored at attempt %ui",
                          off->id, off->attempts);
        }

        ngx_http_chat_user_offline_event(off->id);
        ngx_http_chat_user_offline_free(off);
        return;
    }

    if (rc != NGX_DECLINED) {
        off->refused++;
    }

    if (off->refused >= NGX_HTTP_CHAT_USER_REFUSED_MAX
        || ngx_exiting || ngx_terminate)
    {
        ngx_log_error(NGX_LOG_ERR, op->log, 0,
                      "chat user: user %L offline not stored, given up "
                      "after %ui attempts", off->id, off->attempts);
        ngx_http_chat_metrics_forgotten();
        ngx_http_chat_user_offline_free(off);
        return;
    }

    if (off->attempts == 1) {
        ngx_log_error(NGX_LOG_WARN, op->log, 0,
                      "chat user: user %L offline not stored yet (%s), "
                      "retrying", off->id,
                      rc == NGX_DECLINED ? "MariaDB unavailable"
                                         : "SQL error");
    }

    ngx_add_timer(&off->retry, off->backoff);

    off->backoff = ngx_min(off->backoff * 2, NGX_HTTP_CHAT_USER_RETRY_MAX);
}


/* a user who logged in again since the expiry is not marked offline */

static void
ngx_http_chat_user_offline_retry(ngx_event_t *ev)
{
    u_char                         key[sizeof("user:online:") + NGX_INT64_LEN];
    const char                    *argv[2];
    size_t                         argvlen[2];
    ngx_http_chat_op_t            *op;
    ngx_http_chat_user_offline_t  *off;

    off = (ngx_http_chat_user_offline_t *)
              ((u_char *) ev - offsetof(ngx_http_chat_user_offline_t, retry));

    op = &off->check;

    op->log = ngx_cycle->log;
    op->handler = ngx_http_chat_user_offline_checked;
    op->data = off;

    op->pool = ngx_create_pool(1024, ngx_cycle->log);
    if (op->pool == NULL) {
        ngx_http_chat_user_offline_update(off);
        return;
    }

    argv[0] = "EXISTS";
    argvlen[0] = sizeof("EXISTS") - 1;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "user:online:%L", off->id) - key;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat user: user %L offline, presence checked first",
                   off->id);

    if (ngx_http_chat_op_redis(op, 2, argv, argvlen) != NGX_OK) {
        ngx_http_chat_op_fail(op);
    }
}


/* Redis unavailable: the update goes ahead, the expiry did happen */

static void
ngx_http_chat_user_offline_checked(ngx_http_chat_op_t *op)
{
    ngx_uint_t                     online;
    ngx_http_chat_user_offline_t  *off;

    off = op->data;

    online = op->rc == NGX_OK
             && op->reply->type == REDIS_REPLY_INTEGER
             && op->reply->integer > 0;

    ngx_destroy_pool(op->pool);
    op->pool = NULL;

    if (online) {
        ngx_log_error(NGX_LOG_INFO, op->log, 0,
                      "chat user: user %L is online again, not marked "
                      "offline", off->id);
        ngx_http_chat_user_offline_free(off);
        return;
    }

    ngx_http_chat_user_offline_update(off);
}


static void
ngx_http_chat_user_offline_free(ngx_http_chat_user_offline_t *off)
{
    if (off->retry.timer_set) {
        ngx_del_timer(&off->retry);
    }

    ngx_queue_remove(&off->queue);
    ngx_http_chat_user_noffline--;

    ngx_free(off);
}


/* the claim on the expiry's event; the operation lives in its own pool */

static void
ngx_http_chat_user_offline_event(int64_t id)
{
    u_char              *key;
    int64_t             *data;
    ngx_pool_t          *pool;
    const char          *argv[6];
    size_t               argvlen[6];
    ngx_http_chat_op_t  *op;

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    op = ngx_pcalloc(pool, sizeof(ngx_http_chat_op_t));
    data = ngx_palloc(pool, sizeof(int64_t));
    key = ngx_pnalloc(pool, sizeof("user:offline_event:") + NGX_INT64_LEN);

    if (op == NULL || data == NULL || key == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    *data = id;

    op->pool = pool;
    op->log = ngx_cycle->log;
    op->handler = ngx_http_chat_user_offline_claimed;
    op->data = data;

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "user:offline_event:%L", id) - key;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = "NX";
    argvlen[3] = 2;
    argv[4] = "PX";
    argvlen[4] = 2;
    argv[5] = NGX_HTTP_CHAT_USER_CLAIM_MS;
    argvlen[5] = sizeof(NGX_HTTP_CHAT_USER_CLAIM_MS) - 1;

    if (ngx_http_chat_op_redis(op, 6, argv, argvlen) != NGX_OK) {
        ngx_http_chat_op_fail(op);
    }
}


static void
ngx_http_chat_user_offline_claimed(ngx_http_chat_op_t *op)
{
    int64_t  id;

    id = *(int64_t *) op->data;

    /* a nil reply: another node has the claim */

    if (op->rc == NGX_OK && op->reply->type == REDIS_REPLY_STATUS) {
        (void) ngx_http_chat_user_status_event(op->pool, op->log, id, 0,
                                               NULL);

    } else {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->log, 0,
                       "chat user: user %L offline, event left to another "
                       "node: rc:%i", id, op->rc);
    }

    ngx_destroy_pool(op->pool);
}


ngx_int_t
ngx_http_chat_user_status_event(ngx_pool_t *pool, ngx_log_t *log, int64_t id,
    ngx_uint_t online, ngx_str_t *trace)
{
    cJSON                           *fields;
    ngx_int_t                        rc;
    ngx_http_chat_core_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_chat_core_module);

    fields = cJSON_CreateObject();

    if (fields == NULL
        || ngx_http_chat_json_num(fields, "user_id", id) == NULL
        || cJSON_AddBoolToObject(fields, "is_online", online) == NULL)
    {
        cJSON_Delete(fields);
        return NGX_ERROR;
    }

    rc = ngx_http_chat_event_send_trace(pool, log, cmcf->events_maxlen,
                                        "user.online_status", id,
                                        "UserOnlineStatusChanged", fields,
                                        trace);

    cJSON_Delete(fields);

    return rc == NGX_ERROR ? NGX_ERROR : NGX_OK;
}


/*
 * Updates still waiting die with the worker.  The core's datastores ended
 * before this: an operation in flight will not complete.
 */

void
ngx_http_chat_user_presence_exit(ngx_cycle_t *cycle)
{
    ngx_uint_t                     i;
    ngx_queue_t                   *q;
    ngx_http_chat_op_t            *op, *ops[2];
    ngx_http_chat_user_offline_t  *off;

    if (ngx_http_chat_user_offlines.next == NULL) {
        return;
    }

    while (!ngx_queue_empty(&ngx_http_chat_user_offlines)) {
        q = ngx_queue_head(&ngx_http_chat_user_offlines);
        off = ngx_queue_data(q, ngx_http_chat_user_offline_t, queue);

        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "chat user: user %L offline not stored, the worker "
                      "exits", off->id);
        ngx_http_chat_metrics_forgotten();

        ops[0] = &off->update;
        ops[1] = &off->check;

        for (i = 0; i < 2; i++) {
            op = ops[i];

            if (op->event.posted) {
                ngx_delete_posted_event(&op->event);
            }

            if (op->pool) {
                ngx_destroy_pool(op->pool);
            }
        }

        ngx_http_chat_user_offline_free(off);
    }
}
