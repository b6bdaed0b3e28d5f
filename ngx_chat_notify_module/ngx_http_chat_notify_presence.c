
/*
 * Presence of friends, N5 (API.md 12): the consumer's entries of
 * user.online_status.
 *
 * A UserOnlineStatusChanged (log in, log out, presence expiry) becomes a
 * "presence" frame on the notification streams of each accepted friend of
 * the user, through the core's SSE hub, so every stream of a friend on
 * every node gets it.  Nothing is stored and the frame has no "id:" line:
 * presence is a state, not a notification; a resume does not replay it,
 * GET /api/friends/online tells the state of the moment.
 *
 * One statement on the core's MariaDB pool reads the user's name and
 * last_seen_at and the friends at once; the frames go out, then the entry
 * is acknowledged.  A blocked pair is no friendship (a block deletes the
 * friendships of the pair), so it is skipped by the same statement.
 *
 * While MariaDB is unavailable an entry stays pending like the others,
 * but presence only matters while it is news: an entry older than
 * NGX_HTTP_CHAT_NOTIFY_PRESENCE_STALE (an outage, a consumer that died
 * with it) is acknowledged without frames.  Entries are independent: each
 * has its own pool and operation, and the consumer's next round waits for
 * them as for its batch.
 */


#include "ngx_http_chat_notify_module.h"


#define NGX_HTTP_CHAT_NOTIFY_PRESENCE_STALE  60000

/* the user (name, last_seen_at) with each friend, or one row with NULL */
#define NGX_HTTP_CHAT_NOTIFY_PRESENCE_SQL                                    \
    "SELECT u.username, u.last_seen_at, f.id FROM users u LEFT JOIN ("      \
    "SELECT user_id_2 AS id FROM friendships "                               \
    "WHERE user_id_1 = ? AND status = 'accepted' AND deleted_at IS NULL "    \
    "UNION "                                                                 \
    "SELECT user_id_1 FROM friendships "                                     \
    "WHERE user_id_2 = ? AND status = 'accepted' AND deleted_at IS NULL"     \
    ") f ON TRUE WHERE u.id = ?"


typedef struct {
    ngx_http_chat_redis_entry_t    *entry;
    ngx_str_t                       group;
    ngx_log_t                      *log;

    int64_t                         user_id;
    ngx_uint_t                      online;
    ngx_str_t                       timestamp;

    ngx_http_chat_op_t              op;         /* op.pool: everything */
    ngx_queue_t                     queue;
} ngx_http_chat_notify_presence_t;


static void ngx_http_chat_notify_presence_rows(ngx_http_chat_op_t *op);
static ngx_int_t ngx_http_chat_notify_presence_send(
    ngx_http_chat_notify_presence_t *p, ngx_http_chat_sql_res_t *res);
static void ngx_http_chat_notify_presence_settle(
    ngx_http_chat_notify_presence_t *p, ngx_uint_t ack);


/* the entries in work, for a worker that exits meanwhile */
static ngx_queue_t  ngx_http_chat_notify_presences;


/*
 * Takes over the entry: it is settled here, now or when the friends are
 * known.  event is the parsed value, not kept.
 */

void
ngx_http_chat_notify_presence(ngx_http_chat_redis_entry_t *e, cJSON *event,
    ngx_str_t *group, ngx_log_t *log)
{
    u_char                           *dash;
    cJSON                            *type, *item;
    off_t                             ms;
    ngx_str_t                         ts;
    ngx_pool_t                       *pool;
    ngx_http_chat_sql_arg_t           args[3];
    ngx_http_chat_notify_presence_t  *p;

    type = cJSON_GetObjectItemCaseSensitive(event, "__event_type__");

    if (!cJSON_IsString(type)
        || ngx_strcmp(type->valuestring, "UserOnlineStatusChanged") != 0)
    {
        ngx_http_chat_redis_consumer_ack(e);
        return;
    }

    /* "<ms>-<seq>": the time Redis took the entry */

    dash = ngx_strlchr(e->id.data, e->id.data + e->id.len, '-');
    ms = ngx_atoof(e->id.data, (dash ? dash : e->id.data + e->id.len)
                               - e->id.data);

    if (ms != NGX_ERROR
        && (off_t) ngx_time() * 1000 - ms
           > NGX_HTTP_CHAT_NOTIFY_PRESENCE_STALE)
    {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "chat notify: presence entry %V is stale, skipped",
                      &e->id);
        ngx_http_chat_redis_consumer_ack(e);
        return;
    }

    if (ngx_queue_next(&ngx_http_chat_notify_presences) == NULL) {
        ngx_queue_init(&ngx_http_chat_notify_presences);
    }

    pool = ngx_create_pool(1024, log);
    if (pool == NULL) {
        ngx_http_chat_redis_consumer_retry(e);
        return;
    }

    p = ngx_pcalloc(pool, sizeof(ngx_http_chat_notify_presence_t));
    if (p == NULL) {
        ngx_destroy_pool(pool);
        ngx_http_chat_redis_consumer_retry(e);
        return;
    }

    p->entry = e;
    p->group = *group;
    p->log = log;
    p->op.pool = pool;
    p->op.log = log;
    p->op.handler = ngx_http_chat_notify_presence_rows;
    p->op.data = p;

    item = cJSON_GetObjectItemCaseSensitive(event, "user_id");

    if (!cJSON_IsNumber(item) || item->valuedouble < 1
        || item->valuedouble != (double) (int64_t) item->valuedouble)
    {
        goto malformed;
    }

    p->user_id = (int64_t) item->valuedouble;

    item = cJSON_GetObjectItemCaseSensitive(event, "is_online");

    if (!cJSON_IsBool(item)) {
        goto malformed;
    }

    p->online = cJSON_IsTrue(item);

    /* the time of the change; the envelope has it, else now */

    item = cJSON_GetObjectItemCaseSensitive(event, "timestamp");

    if (cJSON_IsString(item)) {
        ts.data = (u_char *) item->valuestring;
        ts.len = ngx_strlen(item->valuestring);

        p->timestamp.data = ngx_pstrdup(pool, &ts);
        p->timestamp.len = ts.len;

        if (p->timestamp.data == NULL) {
            ngx_destroy_pool(pool);
            ngx_http_chat_redis_consumer_retry(e);
            return;
        }

    } else if (ngx_http_chat_iso_now(pool, &p->timestamp) != NGX_OK) {
        ngx_destroy_pool(pool);
        ngx_http_chat_redis_consumer_retry(e);
        return;
    }

    ngx_queue_insert_tail(&ngx_http_chat_notify_presences, &p->queue);

    args[0].type = NGX_HTTP_CHAT_SQL_INT;
    args[0].num = p->user_id;
    args[1] = args[0];
    args[2] = args[0];

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "chat notify: presence entry %V: user %L %s",
                   &e->id, p->user_id, p->online ? "online" : "offline");

    if (ngx_http_chat_op_stmt(&p->op, NGX_HTTP_CHAT_NOTIFY_PRESENCE_SQL,
                              args, 3)
        != NGX_OK)
    {
        ngx_http_chat_op_fail(&p->op);
    }

    return;

malformed:

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "chat notify: entry %V of \"%V\" is malformed, skipped",
                  &e->id, &e->stream);

    ngx_destroy_pool(pool);
    ngx_http_chat_redis_consumer_ack(e);
}


static void
ngx_http_chat_notify_presence_rows(ngx_http_chat_op_t *op)
{
    ngx_http_chat_notify_presence_t  *p = op->data;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, p->log, 0,
                   "chat notify: presence entry %V: rc:%i, rows:%ui",
                   &p->entry->id, op->rc, op->sql.nrows);

    if (op->rc == NGX_DECLINED || op->rc == NGX_ABORT) {

        /* MariaDB unavailable: the entry stays pending, read again */

        ngx_http_chat_notify_presence_settle(p, 0);
        return;
    }

    if (op->rc != NGX_OK || (op->sql.nrows && op->sql.ncols != 3)) {
        ngx_log_error(NGX_LOG_ERR, p->log, 0,
                      "chat notify: friends of user %L not read, "
                      "presence entry %V skipped", p->user_id,
                      &p->entry->id);
        ngx_http_chat_notify_presence_settle(p, 1);
        return;
    }

    ngx_http_chat_notify_presence_settle(p,
                          ngx_http_chat_notify_presence_send(p, &op->sql)
                          == NGX_OK);
}


/* the frame to each friend's streams: NGX_ERROR when Redis failed */

static ngx_int_t
ngx_http_chat_notify_presence_send(ngx_http_chat_notify_presence_t *p,
    ngx_http_chat_sql_res_t *res)
{
    cJSON       *data;
    int64_t      friend;
    ngx_int_t    rc;
    ngx_str_t   *row, frame, channel;
    ngx_uint_t   i, n;

    if (res->nrows == 0) {
        return NGX_OK;
    }

    row = res->cells;

    data = cJSON_CreateObject();

    rc = (data == NULL
          || cJSON_AddNumberToObject(data, "user_id", (double) p->user_id)
             == NULL
          || ngx_http_chat_json_str(data, "username", &row[0]) == NULL
          || cJSON_AddBoolToObject(data, "is_online", p->online) == NULL
          || ngx_http_chat_json_sql_time(data, "last_seen_at", &row[1])
             == NULL
          || ngx_http_chat_json_str(data, "timestamp", &p->timestamp)
             == NULL)
         ? NGX_ERROR
         : ngx_http_chat_sse_frame(p->op.pool, "presence", NULL, data,
                                   &frame);

    cJSON_Delete(data);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i < res->nrows; i++) {
        row = &res->cells[i * res->ncols];

        if (row[2].data == NULL
            || ngx_http_chat_parse_id(&row[2], &friend) != NGX_OK)
        {
            continue;
        }

        if (ngx_http_chat_notify_channel(p->op.pool, &p->group, friend,
                                         &channel)
            != NGX_OK
            || ngx_http_chat_sse_publish(&channel, &frame) != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, p->log, 0,
                          "chat notify: presence of user %L not published: "
                          "Redis unavailable", p->user_id);
            return NGX_ERROR;
        }

        n++;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, p->log, 0,
                   "chat notify: presence of user %L to %ui friends",
                   p->user_id, n);

    return NGX_OK;
}


static void
ngx_http_chat_notify_presence_settle(ngx_http_chat_notify_presence_t *p,
    ngx_uint_t ack)
{
    ngx_http_chat_redis_entry_t  *e;

    e = p->entry;

    ngx_queue_remove(&p->queue);
    ngx_destroy_pool(p->op.pool);

    if (ack) {
        ngx_http_chat_redis_consumer_ack(e);

    } else {
        ngx_http_chat_redis_consumer_retry(e);
    }
}


/*
 * A worker that exits with entries in work (a fast shutdown: a graceful
 * one waits for operations in flight): the core's datastores have ended
 * and will not complete them; the entries stay pending for another
 * consumer, the consumer frees them.
 */

void
ngx_http_chat_notify_presence_exit(void)
{
    ngx_queue_t                      *q;
    ngx_http_chat_notify_presence_t  *p;

    if (ngx_queue_next(&ngx_http_chat_notify_presences) == NULL) {
        return;
    }

    while (!ngx_queue_empty(&ngx_http_chat_notify_presences)) {
        q = ngx_queue_head(&ngx_http_chat_notify_presences);
        p = ngx_queue_data(q, ngx_http_chat_notify_presence_t, queue);

        ngx_queue_remove(q);

        if (p->op.event.posted) {
            ngx_delete_posted_event(&p->op.event);
        }

        ngx_destroy_pool(p->op.pool);
    }
}
