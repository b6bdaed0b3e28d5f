
/*
 * The event pipeline that creates notifications (ARCHITECTURE.md 6).
 *
 * Every worker of every node runs one consumer of the group
 * "notifications" (chat_notify_group) on the streams friend.events and
 * message.events (ngx_http_chat_redis.c), so Redis hands each entry to
 * one of them.  The entries of a round become one batch, done in a thread
 * of the MongoDB pool with a client of its own: the recipient of a
 * message is looked up in chat_rooms (MariaDB, blocking, in that thread),
 * then each notification is stored.  Back on the event loop, each new
 * notification goes to its recipient's streams and to
 * notification.events, and only then is its entry acknowledged.
 *
 * A notification's id is derived from its stream entry, and it is stored
 * with an upsert that only ever inserts: an entry delivered again (the
 * consumer died before XACK, or someone claimed it by hand) finds its
 * notification there and is only acknowledged.  So storage is exactly
 * once per entry, and a notification is published by whoever stored it.
 *
 * The batch's clients live no longer than its task: nothing of MongoDB or
 * MariaDB outlives the thread pools, which finish before any module's
 * exit_process runs, and before the core tears the libraries down.
 */


#include "ngx_http_chat_notify_module.h"

#include <mysql.h>


#define NGX_HTTP_CHAT_NOTIFY_PREVIEW  100

/* how long a graceful shutdown waits for the batch in the thread pool */
#define NGX_HTTP_CHAT_NOTIFY_GUARD    60000

/* what becomes of an entry */
#define NGX_HTTP_CHAT_NOTIFY_STORE    0     /* to be stored */
#define NGX_HTTP_CHAT_NOTIFY_STORED   1     /* stored now: published next */
#define NGX_HTTP_CHAT_NOTIFY_EXISTED  2     /* stored before: delivered again */
#define NGX_HTTP_CHAT_NOTIFY_SKIP     3     /* nobody to notify */
#define NGX_HTTP_CHAT_NOTIFY_RETRY    4     /* a datastore failed */


typedef struct {
    ngx_http_chat_redis_entry_t    *entry;
    ngx_uint_t                      state;

    bson_oid_t                      oid;
    int64_t                         user_id;    /* 0: the other member */
    int64_t                         room_id;
    int64_t                         sender_id;

    bson_t                         *fields;     /* all but _id, user_id */
    bson_t                         *doc;        /* stored, from the thread */
} ngx_http_chat_notify_job_t;


typedef struct {
    ngx_pool_t                     *pool;
    ngx_array_t                    *jobs;
    ngx_uint_t                      rooms;      /* jobs needing MariaDB */
    ngx_uint_t                      indexes;    /* create them first */
    ngx_uint_t                      indexed;

    /* what went wrong in the thread, logged on the loop */
    char                            error[256];
} ngx_http_chat_notify_batch_t;


typedef struct {
    ngx_http_chat_redis_consumer_t *consumer;
    ngx_log_t                      *log;
    ngx_thread_pool_t              *threads;
    ngx_uint_t                      maxlen;
    ngx_str_t                       group;

    char                           *mongo_uri;
    char                           *mongo_db;
    char                           *mysql_host;
    char                           *mysql_user;
    char                           *mysql_password;
    char                           *mysql_db;
    unsigned int                    mysql_port;
    unsigned int                    mysql_connect_timeout;  /* seconds */
    unsigned int                    mysql_timeout;

    ngx_http_chat_notify_batch_t   *collecting; /* this round's entries */
    ngx_http_chat_notify_batch_t   *running;    /* in the thread pool */
    ngx_thread_task_t              *task;
    ngx_event_t                     flush;      /* posted on an entry */
    ngx_event_t                     guard;
    ngx_uint_t                      indexed;
} ngx_http_chat_notify_consumer_t;


typedef struct {
    ngx_str_t                       name;
    u_char                          tag;        /* in the notification id */
} ngx_http_chat_notify_stream_t;


static void ngx_http_chat_notify_entry(ngx_http_chat_redis_entry_t *e,
    void *data);
static ngx_int_t ngx_http_chat_notify_job(ngx_http_chat_notify_batch_t *b,
    ngx_http_chat_notify_job_t *job, ngx_http_chat_redis_entry_t *e,
    cJSON *event);
static bson_t *ngx_http_chat_notify_begin(const char *type,
    const char *title, ngx_str_t *body, bson_t *data);
static void ngx_http_chat_notify_end(bson_t *fields, bson_t *data);
static void ngx_http_chat_notify_append_str(bson_t *doc, const char *key,
    ngx_str_t *s);
static ngx_int_t ngx_http_chat_notify_int(cJSON *event, const char *name,
    int64_t *value);
static ngx_int_t ngx_http_chat_notify_str(cJSON *event, const char *name,
    ngx_str_t *value, ngx_uint_t required);
static ngx_int_t ngx_http_chat_notify_entry_oid(ngx_str_t *stream,
    ngx_str_t *id, bson_oid_t *oid);
static void ngx_http_chat_notify_flush(ngx_event_t *ev);
static void ngx_http_chat_notify_thread(void *data, ngx_log_t *log);
static void ngx_http_chat_notify_rooms(ngx_http_chat_notify_consumer_t *nc,
    ngx_http_chat_notify_batch_t *b);
static void ngx_http_chat_notify_store(ngx_http_chat_notify_consumer_t *nc,
    ngx_http_chat_notify_batch_t *b);
static void ngx_http_chat_notify_create_indexes(
    mongoc_collection_t *coll, ngx_http_chat_notify_batch_t *b);
static ngx_uint_t ngx_http_chat_notify_upsert(mongoc_collection_t *coll,
    ngx_http_chat_notify_batch_t *b, ngx_http_chat_notify_job_t *job);
static void ngx_http_chat_notify_done(ngx_event_t *ev);
static void ngx_http_chat_notify_publish(ngx_http_chat_notify_consumer_t *nc,
    ngx_http_chat_notify_batch_t *b, ngx_http_chat_notify_job_t *job);
static ngx_int_t ngx_http_chat_notify_event(
    ngx_http_chat_notify_consumer_t *nc, ngx_pool_t *pool, int64_t key,
    const char *type, cJSON *fields);
static void ngx_http_chat_notify_guard(ngx_event_t *ev);
static ngx_http_chat_notify_batch_t *ngx_http_chat_notify_batch_new(
    ngx_http_chat_notify_consumer_t *nc);
static void ngx_http_chat_notify_batch_free(ngx_http_chat_notify_batch_t *b);
static char *ngx_http_chat_notify_cstr(ngx_pool_t *pool, ngx_str_t *s);


static ngx_http_chat_notify_stream_t  ngx_http_chat_notify_streams[] = {
    { ngx_string("friend.events"), 'f' },
    { ngx_string("message.events"), 'm' }
};

#define NGX_HTTP_CHAT_NOTIFY_NSTREAMS                                        \
    (sizeof(ngx_http_chat_notify_streams)                                    \
     / sizeof(ngx_http_chat_notify_streams[0]))


static ngx_http_chat_notify_consumer_t  *ngx_http_chat_notify_consumer;

/* connections of other datastores in the event log lines of timers */
static ngx_connection_t  ngx_http_chat_notify_dummy;


ngx_int_t
ngx_http_chat_notify_consumer_init(ngx_cycle_t *cycle,
    ngx_http_chat_notify_main_conf_t *nmcf)
{
    u_char                               *p;
    ngx_str_t                             streams[2];
    ngx_uint_t                            i;
    ngx_http_chat_core_main_conf_t       *cmcf;
    ngx_http_chat_notify_consumer_t      *nc;
    ngx_http_chat_redis_consumer_conf_t   conf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_chat_core_module);

    nc = ngx_pcalloc(cycle->pool, sizeof(ngx_http_chat_notify_consumer_t));
    if (nc == NULL) {
        return NGX_ERROR;
    }

    nc->log = cycle->log;
    nc->threads = cmcf->mongo_pool;
    nc->maxlen = cmcf->events_maxlen;
    nc->group = nmcf->group;

    nc->mongo_uri = ngx_http_chat_notify_cstr(cycle->pool, &cmcf->mongo_uri);
    nc->mongo_db = ngx_http_chat_notify_cstr(cycle->pool,
                                             &cmcf->mongo_database);
    nc->mysql_host = ngx_http_chat_notify_cstr(cycle->pool,
                                               &cmcf->mysql_host);
    nc->mysql_user = ngx_http_chat_notify_cstr(cycle->pool,
                                               &cmcf->mysql_user);
    nc->mysql_password = ngx_http_chat_notify_cstr(cycle->pool,
                                                   &cmcf->mysql_password);
    nc->mysql_db = ngx_http_chat_notify_cstr(cycle->pool,
                                             &cmcf->mysql_database);

    if (nc->mongo_uri == NULL || nc->mongo_db == NULL
        || nc->mysql_host == NULL || nc->mysql_user == NULL
        || nc->mysql_password == NULL || nc->mysql_db == NULL)
    {
        return NGX_ERROR;
    }

    nc->mysql_port = (unsigned int) cmcf->mysql_port;
    nc->mysql_connect_timeout = (cmcf->mysql_connect_timeout + 999) / 1000;
    nc->mysql_timeout = (cmcf->mysql_timeout + 999) / 1000;

    if (nc->mysql_connect_timeout == 0) {
        nc->mysql_connect_timeout = 1;
    }

    if (nc->mysql_timeout == 0) {
        nc->mysql_timeout = 1;
    }

    nc->task = ngx_thread_task_alloc(cycle->pool,
                                     sizeof(ngx_http_chat_notify_consumer_t *));
    if (nc->task == NULL) {
        return NGX_ERROR;
    }

    *(ngx_http_chat_notify_consumer_t **) nc->task->ctx = nc;

    nc->task->handler = ngx_http_chat_notify_thread;
    nc->task->event.handler = ngx_http_chat_notify_done;
    nc->task->event.data = nc;
    nc->task->event.log = cycle->log;

    ngx_http_chat_notify_dummy.fd = (ngx_socket_t) -1;

    nc->flush.handler = ngx_http_chat_notify_flush;
    nc->flush.data = nc;
    nc->flush.log = cycle->log;

    /* not cancelable: a graceful shutdown waits for the batch */

    nc->guard.handler = ngx_http_chat_notify_guard;
    nc->guard.data = &ngx_http_chat_notify_dummy;
    nc->guard.log = cycle->log;

    /* the consumer's name: unique per worker and node */

    p = ngx_pnalloc(cycle->pool, cycle->hostname.len + 1 + NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(&conf, sizeof(ngx_http_chat_redis_consumer_conf_t));

    conf.name.data = p;
    conf.name.len = ngx_sprintf(p, "%V/%P", &cycle->hostname, ngx_pid) - p;

    for (i = 0; i < NGX_HTTP_CHAT_NOTIFY_NSTREAMS; i++) {
        streams[i] = ngx_http_chat_notify_streams[i].name;
    }

    conf.streams = streams;
    conf.nstreams = NGX_HTTP_CHAT_NOTIFY_NSTREAMS;
    conf.group = nmcf->group;
    conf.count = nmcf->batch;
    conf.claim_idle = nmcf->claim_idle;
    conf.claim_interval = ngx_max(nmcf->claim_idle / 2, 100);
    conf.block = ngx_min(conf.claim_interval, 5000);
    conf.handler = ngx_http_chat_notify_entry;
    conf.data = nc;

    nc->consumer = ngx_http_chat_redis_consumer_create(cycle, &conf);
    if (nc->consumer == NULL) {
        return NGX_ERROR;
    }

    ngx_http_chat_notify_consumer = nc;

    return NGX_OK;
}


void
ngx_http_chat_notify_consumer_exit(ngx_cycle_t *cycle)
{
    ngx_http_chat_notify_consumer_t  *nc;

    nc = ngx_http_chat_notify_consumer;

    if (nc == NULL) {
        return;
    }

    ngx_http_chat_notify_consumer = NULL;

    if (nc->flush.posted) {
        ngx_delete_posted_event(&nc->flush);
    }

    if (nc->guard.timer_set) {
        ngx_del_timer(&nc->guard);
    }

    /*
     * the thread pools are done: a batch there has run, but its
     * completion will not; its entries stay pending and are claimed
     */

    if (nc->running) {
        ngx_http_chat_notify_batch_free(nc->running);
        nc->running = NULL;
    }

    if (nc->collecting) {
        ngx_http_chat_notify_batch_free(nc->collecting);
        nc->collecting = NULL;
    }

    ngx_http_chat_redis_consumer_destroy(nc->consumer);
    nc->consumer = NULL;
}


/* an entry of friend.events or message.events */

static void
ngx_http_chat_notify_entry(ngx_http_chat_redis_entry_t *e, void *data)
{
    ngx_http_chat_notify_consumer_t *nc = data;

    cJSON                         *event;
    ngx_int_t                      rc;
    ngx_uint_t                     i;
    ngx_str_t                     *value;
    ngx_http_chat_notify_job_t    *job;
    ngx_http_chat_notify_batch_t  *b;

    value = NULL;

    for (i = 0; i + 1 < e->nfields; i += 2) {
        if (e->fields[i].len == sizeof("value") - 1
            && ngx_strncmp(e->fields[i].data, "value", 5) == 0)
        {
            value = &e->fields[i + 1];
            break;
        }
    }

    event = value ? cJSON_ParseWithLength((char *) value->data, value->len)
                  : NULL;

    if (event == NULL || !cJSON_IsObject(event)) {
        ngx_log_error(NGX_LOG_WARN, nc->log, 0,
                      "chat notify: entry %V of \"%V\" is not an event, "
                      "skipped", &e->id, &e->stream);
        cJSON_Delete(event);
        ngx_http_chat_redis_consumer_ack(e);
        return;
    }

    if (nc->collecting == NULL) {
        nc->collecting = ngx_http_chat_notify_batch_new(nc);
    }

    b = nc->collecting;

    if (b == NULL) {
        cJSON_Delete(event);
        ngx_http_chat_redis_consumer_retry(e);
        return;
    }

    job = ngx_array_push(b->jobs);
    if (job == NULL) {
        cJSON_Delete(event);
        ngx_http_chat_redis_consumer_retry(e);
        return;
    }

    ngx_memzero(job, sizeof(ngx_http_chat_notify_job_t));
    job->entry = e;

    rc = ngx_http_chat_notify_job(b, job, e, event);

    cJSON_Delete(event);

    if (rc != NGX_OK) {
        if (job->fields) {
            bson_destroy(job->fields);
        }

        b->jobs->nelts--;

        if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_WARN, nc->log, 0,
                          "chat notify: entry %V of \"%V\" is malformed, "
                          "skipped", &e->id, &e->stream);
        }

        if (rc == NGX_AGAIN) {
            ngx_http_chat_redis_consumer_retry(e);

        } else {
            ngx_http_chat_redis_consumer_ack(e);
        }

        return;
    }

    if (job->user_id == 0) {
        b->rooms++;
    }

    /* the round's other entries come in the same reply: then the thread */

    if (!nc->flush.posted) {
        ngx_post_event(&nc->flush, &ngx_posted_events);
    }
}


/*
 * The notification an event asks for (API.md 6): NGX_OK, NGX_DECLINED for
 * an event that notifies nobody, NGX_ERROR when it is malformed, NGX_AGAIN
 * when memory ran out
 */

static ngx_int_t
ngx_http_chat_notify_job(ngx_http_chat_notify_batch_t *b,
    ngx_http_chat_notify_job_t *job, ngx_http_chat_redis_entry_t *e,
    cJSON *event)
{
    u_char       *p, *last;
    cJSON        *type;
    bson_t        data;
    int64_t       friendship, other;
    ngx_str_t     name, content, message, preview, body;
    ngx_uint_t    i;

    static ngx_str_t  unknown = ngx_string("Unknown");

    type = cJSON_GetObjectItemCaseSensitive(event, "__event_type__");
    if (!cJSON_IsString(type)) {
        return NGX_ERROR;
    }

    if (ngx_http_chat_notify_entry_oid(&e->stream, &e->id, &job->oid)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (e->stream.len == sizeof("friend.events") - 1
        && ngx_strncmp(e->stream.data, "friend.events", e->stream.len) == 0)
    {
        if (ngx_strcmp(type->valuestring, "FriendRequestSent") == 0) {

            if (ngx_http_chat_notify_int(event, "friendship_id", &friendship)
                != NGX_OK
                || ngx_http_chat_notify_int(event, "requester_id", &other)
                   != NGX_OK
                || ngx_http_chat_notify_int(event, "addressee_id",
                                            &job->user_id)
                   != NGX_OK
                || ngx_http_chat_notify_str(event, "requester_name", &name, 0)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (name.data == NULL) {
                name = unknown;
            }

            body.data = ngx_pnalloc(b->pool, name.len
                                    + sizeof(" sent you a friend request"));
            if (body.data == NULL) {
                return NGX_AGAIN;
            }

            body.len = ngx_sprintf(body.data, "%V sent you a friend request",
                                   &name)
                       - body.data;

            job->fields = ngx_http_chat_notify_begin("friend_request",
                                                     "New friend request",
                                                     &body, &data);
            if (job->fields == NULL) {
                return NGX_AGAIN;
            }

            BSON_APPEND_INT64(&data, "friendship_id", friendship);
            BSON_APPEND_INT64(&data, "requester_id", other);
            ngx_http_chat_notify_append_str(&data, "requester_username",
                                            &name);

            ngx_http_chat_notify_end(job->fields, &data);

            return NGX_OK;
        }

        if (ngx_strcmp(type->valuestring, "FriendRequestAccepted") == 0) {

            if (ngx_http_chat_notify_int(event, "friendship_id", &friendship)
                != NGX_OK
                || ngx_http_chat_notify_int(event, "requester_id",
                                            &job->user_id)
                   != NGX_OK
                || ngx_http_chat_notify_int(event, "addressee_id", &other)
                   != NGX_OK
                || ngx_http_chat_notify_str(event, "addressee_name", &name, 0)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (name.data == NULL) {
                name = unknown;
            }

            body.data = ngx_pnalloc(b->pool, name.len
                               + sizeof(" accepted your friend request"));
            if (body.data == NULL) {
                return NGX_AGAIN;
            }

            body.len = ngx_sprintf(body.data,
                                   "%V accepted your friend request", &name)
                       - body.data;

            job->fields = ngx_http_chat_notify_begin("friend_accepted",
                                                     "Friend request accepted",
                                                     &body, &data);
            if (job->fields == NULL) {
                return NGX_AGAIN;
            }

            BSON_APPEND_INT64(&data, "friendship_id", friendship);
            BSON_APPEND_INT64(&data, "addressee_id", other);
            ngx_http_chat_notify_append_str(&data, "addressee_username",
                                            &name);

            ngx_http_chat_notify_end(job->fields, &data);

            return NGX_OK;
        }

        return NGX_DECLINED;
    }

    if (!(e->stream.len == sizeof("message.events") - 1
          && ngx_strncmp(e->stream.data, "message.events", e->stream.len)
             == 0
          && ngx_strcmp(type->valuestring, "MessageSent") == 0))
    {
        return NGX_DECLINED;
    }

    /* the recipient is the room's other member, looked up in the thread */

    if (ngx_http_chat_notify_int(event, "room_id", &job->room_id) != NGX_OK
        || ngx_http_chat_notify_int(event, "user_id", &job->sender_id)
           != NGX_OK
        || ngx_http_chat_notify_str(event, "username", &name, 0) != NGX_OK
        || ngx_http_chat_notify_str(event, "content", &content, 1) != NGX_OK
        || ngx_http_chat_notify_str(event, "message_id", &message, 1)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (name.data == NULL) {
        name = unknown;
    }

    /* the first 100 characters */

    p = content.data;
    last = p + content.len;

    for (i = 0; i < NGX_HTTP_CHAT_NOTIFY_PREVIEW && p < last; i++) {
        if (*p < 0x80) {
            p++;

        } else {
            (void) ngx_utf8_decode(&p, last - p);
        }
    }

    preview.data = content.data;
    preview.len = p - content.data;

    body.data = ngx_pnalloc(b->pool, name.len + 2 + preview.len);
    if (body.data == NULL) {
        return NGX_AGAIN;
    }

    body.len = ngx_sprintf(body.data, "%V: %V", &name, &preview) - body.data;

    job->fields = ngx_http_chat_notify_begin("new_message", "New message",
                                             &body, &data);
    if (job->fields == NULL) {
        return NGX_AGAIN;
    }

    BSON_APPEND_INT64(&data, "room_id", job->room_id);
    ngx_http_chat_notify_append_str(&data, "message_id", &message);
    BSON_APPEND_INT64(&data, "sender_id", job->sender_id);
    ngx_http_chat_notify_append_str(&data, "sender_username", &name);
    ngx_http_chat_notify_append_str(&data, "preview", &preview);

    ngx_http_chat_notify_end(job->fields, &data);

    job->user_id = 0;

    return NGX_OK;
}


/* the stored fields after _id and user_id, up to "data" */

static bson_t *
ngx_http_chat_notify_begin(const char *type, const char *title,
    ngx_str_t *body, bson_t *data)
{
    bson_t  *fields;

    fields = bson_new();
    if (fields == NULL) {
        return NULL;
    }

    BSON_APPEND_UTF8(fields, "type", type);
    BSON_APPEND_UTF8(fields, "title", title);
    ngx_http_chat_notify_append_str(fields, "body", body);
    BSON_APPEND_DOCUMENT_BEGIN(fields, "data", data);

    return fields;
}


static void
ngx_http_chat_notify_end(bson_t *fields, bson_t *data)
{
    ngx_time_t  *tp;

    bson_append_document_end(fields, data);

    tp = ngx_timeofday();

    BSON_APPEND_BOOL(fields, "is_read", false);
    BSON_APPEND_NULL(fields, "read_at");
    BSON_APPEND_DATE_TIME(fields, "created_at",
                          (int64_t) tp->sec * 1000 + tp->msec);
}


static void
ngx_http_chat_notify_append_str(bson_t *doc, const char *key, ngx_str_t *s)
{
    bson_append_utf8(doc, key, -1, (const char *) s->data, (int) s->len);
}


/* a positive integer field of the event */

static ngx_int_t
ngx_http_chat_notify_int(cJSON *event, const char *name, int64_t *value)
{
    double  d;
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(event, name);

    if (!cJSON_IsNumber(item)) {
        return NGX_ERROR;
    }

    d = item->valuedouble;

    if (d < 1 || d >= 9007199254740992.0 || d != (double) (int64_t) d) {
        return NGX_ERROR;
    }

    *value = (int64_t) d;

    return NGX_OK;
}


/* a UTF-8 string field; absent or null leaves value->data NULL */

static ngx_int_t
ngx_http_chat_notify_str(cJSON *event, const char *name, ngx_str_t *value,
    ngx_uint_t required)
{
    cJSON  *item;

    ngx_str_null(value);

    item = cJSON_GetObjectItemCaseSensitive(event, name);

    if (item == NULL || cJSON_IsNull(item)) {
        return required ? NGX_ERROR : NGX_OK;
    }

    if (!cJSON_IsString(item)) {
        return NGX_ERROR;
    }

    value->data = (u_char *) item->valuestring;
    value->len = ngx_strlen(item->valuestring);

    /* MongoDB refuses what is not UTF-8: such an event could never pass */

    if (ngx_http_chat_utf8_length(value) == NGX_ERROR) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The notification id of a stream entry "<ms>-<seq>": the seconds, the
 * stream's tag, the milliseconds and the sequence number.  The same entry
 * always gives the same id, and ids still grow with time.
 */

static ngx_int_t
ngx_http_chat_notify_entry_oid(ngx_str_t *stream, ngx_str_t *id,
    bson_oid_t *oid)
{
    u_char      *dash, tag;
    uint64_t     sec;
    ngx_str_t    s;
    ngx_uint_t   i;
    int64_t      ms, seq;

    tag = 0;

    for (i = 0; i < NGX_HTTP_CHAT_NOTIFY_NSTREAMS; i++) {
        if (stream->len == ngx_http_chat_notify_streams[i].name.len
            && ngx_strncmp(stream->data,
                           ngx_http_chat_notify_streams[i].name.data,
                           stream->len)
               == 0)
        {
            tag = ngx_http_chat_notify_streams[i].tag;
        }
    }

    dash = ngx_strlchr(id->data, id->data + id->len, '-');

    if (tag == 0 || dash == NULL) {
        return NGX_ERROR;
    }

    s.data = id->data;
    s.len = dash - id->data;

    if (ngx_http_chat_parse_id(&s, &ms) != NGX_OK || ms < 0) {
        return NGX_ERROR;
    }

    s.data = dash + 1;
    s.len = id->data + id->len - s.data;

    if (ngx_http_chat_parse_id(&s, &seq) != NGX_OK || seq < 0) {
        return NGX_ERROR;
    }

    sec = (uint64_t) ms / 1000;

    oid->bytes[0] = (uint8_t) (sec >> 24);
    oid->bytes[1] = (uint8_t) (sec >> 16);
    oid->bytes[2] = (uint8_t) (sec >> 8);
    oid->bytes[3] = (uint8_t) sec;
    oid->bytes[4] = tag;
    oid->bytes[5] = (uint8_t) ((ms % 1000) >> 8);
    oid->bytes[6] = (uint8_t) (ms % 1000);
    oid->bytes[7] = (uint8_t) ((uint64_t) seq >> 32);
    oid->bytes[8] = (uint8_t) ((uint64_t) seq >> 24);
    oid->bytes[9] = (uint8_t) ((uint64_t) seq >> 16);
    oid->bytes[10] = (uint8_t) ((uint64_t) seq >> 8);
    oid->bytes[11] = (uint8_t) seq;

    return NGX_OK;
}


static ngx_http_chat_notify_batch_t *
ngx_http_chat_notify_batch_new(ngx_http_chat_notify_consumer_t *nc)
{
    ngx_pool_t                    *pool;
    ngx_http_chat_notify_batch_t  *b;

    pool = ngx_create_pool(4096, nc->log);
    if (pool == NULL) {
        return NULL;
    }

    b = ngx_pcalloc(pool, sizeof(ngx_http_chat_notify_batch_t));
    if (b == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    b->pool = pool;
    b->indexes = !nc->indexed;

    b->jobs = ngx_array_create(pool, 16, sizeof(ngx_http_chat_notify_job_t));
    if (b->jobs == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    return b;
}


/* entries not settled are the consumer's to free, or to settle */

static void
ngx_http_chat_notify_batch_free(ngx_http_chat_notify_batch_t *b)
{
    ngx_uint_t                   i;
    ngx_http_chat_notify_job_t  *job;

    job = b->jobs->elts;

    for (i = 0; i < b->jobs->nelts; i++) {
        if (job[i].fields) {
            bson_destroy(job[i].fields);
        }

        if (job[i].doc) {
            bson_destroy(job[i].doc);
        }
    }

    ngx_destroy_pool(b->pool);
}


/* the round's entries are all in: the batch goes to the thread pool */

static void
ngx_http_chat_notify_flush(ngx_event_t *ev)
{
    ngx_uint_t                        i;
    ngx_http_chat_notify_job_t       *job;
    ngx_http_chat_notify_batch_t     *b;
    ngx_http_chat_notify_consumer_t  *nc;

    nc = ev->data;

    if (nc->running || nc->collecting == NULL) {
        /* the running batch posts this again when it is done */
        return;
    }

    b = nc->collecting;
    nc->collecting = NULL;

    if (b->jobs->nelts == 0) {
        ngx_http_chat_notify_batch_free(b);
        return;
    }

    nc->running = b;

    if (ngx_thread_task_post(nc->threads, nc->task) == NGX_OK) {
        ngx_add_timer(&nc->guard, NGX_HTTP_CHAT_NOTIFY_GUARD);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, nc->log, 0,
                  "chat notify: thread task could not be queued");

    nc->running = NULL;

    job = b->jobs->elts;

    for (i = 0; i < b->jobs->nelts; i++) {
        ngx_http_chat_redis_consumer_retry(job[i].entry);
    }

    ngx_http_chat_notify_batch_free(b);
}


/* in a pool thread: no nginx pools, events or logs, only the batch */

static void
ngx_http_chat_notify_thread(void *data, ngx_log_t *log)
{
    ngx_http_chat_notify_consumer_t *nc =
                                  *(ngx_http_chat_notify_consumer_t **) data;

    if (nc->running->rooms) {
        ngx_http_chat_notify_rooms(nc, nc->running);
    }

    ngx_http_chat_notify_store(nc, nc->running);
}


/* in a pool thread: the recipients of messages, from their rooms */

static void
ngx_http_chat_notify_rooms(ngx_http_chat_notify_consumer_t *nc,
    ngx_http_chat_notify_batch_t *b)
{
    char                        *sql, *p;
    size_t                       size;
    int64_t                      room, user[2];
    MYSQL                       *mysql;
    MYSQL_RES                   *res;
    MYSQL_ROW                    row;
    ngx_str_t                    s;
    ngx_uint_t                   i, n, found;
    unsigned int                 protocol;
    unsigned long               *lengths;
    ngx_http_chat_notify_job_t  *job;

    job = b->jobs->elts;
    n = b->jobs->nelts;

    mysql = NULL;
    sql = NULL;
    res = NULL;

    /* ids are integers the code formatted: nothing to escape */

    size = sizeof("SELECT id, user_1_id, user_2_id FROM chat_rooms "
                  "WHERE id IN ()") + n * (NGX_INT64_LEN + 1);

    sql = malloc(size);
    if (sql == NULL) {
        ngx_cpystrn((u_char *) b->error, (u_char *) "out of memory",
                    sizeof(b->error));
        goto failed;
    }

    p = (char *) ngx_cpymem(sql, "SELECT id, user_1_id, user_2_id FROM "
                            "chat_rooms WHERE id IN (",
                            sizeof("SELECT id, user_1_id, user_2_id FROM "
                                   "chat_rooms WHERE id IN (") - 1);

    found = 0;

    for (i = 0; i < n; i++) {
        if (job[i].user_id == 0) {
            p = (char *) ngx_sprintf((u_char *) p, found++ ? ",%L" : "%L",
                                     job[i].room_id);
        }
    }

    *p++ = ')';

    mysql = mysql_init(NULL);
    if (mysql == NULL) {
        ngx_cpystrn((u_char *) b->error, (u_char *) "mysql_init() failed",
                    sizeof(b->error));
        goto failed;
    }

    protocol = MYSQL_PROTOCOL_TCP;

    (void) mysql_options(mysql, MYSQL_OPT_PROTOCOL, &protocol);
    (void) mysql_options(mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    (void) mysql_options(mysql, MYSQL_OPT_CONNECT_TIMEOUT,
                         &nc->mysql_connect_timeout);
    (void) mysql_options(mysql, MYSQL_OPT_READ_TIMEOUT, &nc->mysql_timeout);
    (void) mysql_options(mysql, MYSQL_OPT_WRITE_TIMEOUT, &nc->mysql_timeout);

    if (mysql_real_connect(mysql, nc->mysql_host, nc->mysql_user,
                           nc->mysql_password, nc->mysql_db, nc->mysql_port,
                           NULL, 0)
        == NULL
        || mysql_real_query(mysql, sql, p - sql) != 0
        || (res = mysql_store_result(mysql)) == NULL)
    {
        ngx_snprintf((u_char *) b->error, sizeof(b->error) - 1,
                     "MariaDB: %s%Z", mysql_error(mysql));
        goto failed;
    }

    /* a room the event names but that is gone: nobody to notify */

    for (i = 0; i < n; i++) {
        if (job[i].user_id == 0) {
            job[i].state = NGX_HTTP_CHAT_NOTIFY_SKIP;
        }
    }

    while ((row = mysql_fetch_row(res)) != NULL) {
        lengths = mysql_fetch_lengths(res);

        s.data = (u_char *) row[0];
        s.len = row[0] ? lengths[0] : 0;

        if (ngx_http_chat_parse_id(&s, &room) != NGX_OK) {
            continue;
        }

        s.data = (u_char *) row[1];
        s.len = row[1] ? lengths[1] : 0;

        if (ngx_http_chat_parse_id(&s, &user[0]) != NGX_OK) {
            continue;
        }

        s.data = (u_char *) row[2];
        s.len = row[2] ? lengths[2] : 0;

        if (ngx_http_chat_parse_id(&s, &user[1]) != NGX_OK) {
            continue;
        }

        for (i = 0; i < n; i++) {
            if (job[i].user_id != 0 || job[i].room_id != room) {
                continue;
            }

            if (job[i].sender_id == user[0] && user[1] != user[0]) {
                job[i].user_id = user[1];
                job[i].state = NGX_HTTP_CHAT_NOTIFY_STORE;

            } else if (job[i].sender_id == user[1]) {
                job[i].user_id = user[0];
                job[i].state = NGX_HTTP_CHAT_NOTIFY_STORE;
            }
        }
    }

    mysql_free_result(res);
    mysql_close(mysql);
    free(sql);

    return;

failed:

    for (i = 0; i < n; i++) {
        if (job[i].user_id == 0) {
            job[i].state = NGX_HTTP_CHAT_NOTIFY_RETRY;
        }
    }

    if (mysql) {
        mysql_close(mysql);
    }

    free(sql);
}


/* in a pool thread: each notification stored, unless it already is */

static void
ngx_http_chat_notify_store(ngx_http_chat_notify_consumer_t *nc,
    ngx_http_chat_notify_batch_t *b)
{
    ngx_uint_t                   i, n, state;
    mongoc_client_t             *client;
    mongoc_collection_t         *coll;
    ngx_http_chat_notify_job_t  *job;

    job = b->jobs->elts;

    for (n = 0, i = 0; i < b->jobs->nelts; i++) {
        if (job[i].state == NGX_HTTP_CHAT_NOTIFY_STORE) {
            n++;
        }
    }

    if (n == 0) {
        return;
    }

    client = mongoc_client_new(nc->mongo_uri);
    if (client == NULL) {
        ngx_cpystrn((u_char *) b->error,
                    (u_char *) "MongoDB: mongoc_client_new() failed",
                    sizeof(b->error));
        goto failed;
    }

    (void) mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    (void) mongoc_client_set_appname(client, "nginx-chat-notify");

    coll = mongoc_client_get_collection(client, nc->mongo_db,
                                        NGX_HTTP_CHAT_NOTIFY_COLLECTION);

    if (b->indexes) {
        ngx_http_chat_notify_create_indexes(coll, b);
    }

    for (i = 0; i < b->jobs->nelts; i++) {
        if (job[i].state != NGX_HTTP_CHAT_NOTIFY_STORE) {
            continue;
        }

        state = ngx_http_chat_notify_upsert(coll, b, &job[i]);
        job[i].state = state;

        if (state == NGX_HTTP_CHAT_NOTIFY_RETRY) {
            /* the server is unreachable: the others would wait as long */
            break;
        }
    }

    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);

failed:

    for (i = 0; i < b->jobs->nelts; i++) {
        if (job[i].state == NGX_HTTP_CHAT_NOTIFY_STORE) {
            job[i].state = NGX_HTTP_CHAT_NOTIFY_RETRY;
        }
    }
}


/* API.md 8.2: {user_id:1, created_at:-1}, {user_id:1, is_read:1, ...} */

static void
ngx_http_chat_notify_create_indexes(mongoc_collection_t *coll,
    ngx_http_chat_notify_batch_t *b)
{
    bson_t        cmd, indexes, index, key;
    bson_error_t  error;

    bson_init(&cmd);
    BSON_APPEND_UTF8(&cmd, "createIndexes", NGX_HTTP_CHAT_NOTIFY_COLLECTION);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &indexes);

    BSON_APPEND_DOCUMENT_BEGIN(&indexes, "0", &index);
    BSON_APPEND_DOCUMENT_BEGIN(&index, "key", &key);
    BSON_APPEND_INT32(&key, "user_id", 1);
    BSON_APPEND_INT32(&key, "created_at", -1);
    bson_append_document_end(&index, &key);
    BSON_APPEND_UTF8(&index, "name", "user_id_1_created_at_-1");
    bson_append_document_end(&indexes, &index);

    BSON_APPEND_DOCUMENT_BEGIN(&indexes, "1", &index);
    BSON_APPEND_DOCUMENT_BEGIN(&index, "key", &key);
    BSON_APPEND_INT32(&key, "user_id", 1);
    BSON_APPEND_INT32(&key, "is_read", 1);
    BSON_APPEND_INT32(&key, "created_at", -1);
    bson_append_document_end(&index, &key);
    BSON_APPEND_UTF8(&index, "name", "user_id_1_is_read_1_created_at_-1");
    bson_append_document_end(&indexes, &index);

    bson_append_array_end(&cmd, &indexes);

    if (mongoc_collection_write_command_with_opts(coll, &cmd, NULL, NULL,
                                                  &error))
    {
        b->indexed = 1;

    } else {
        ngx_snprintf((u_char *) b->error, sizeof(b->error) - 1,
                     "MongoDB: createIndexes: %s%Z", error.message);
    }

    bson_destroy(&cmd);
}


/*
 * Inserts the notification if its id is new: an upsert whose update is
 * all $setOnInsert.  Two consumers on the same entry at once: one inserts,
 * the other finds it or fails on the duplicate _id, and then finds it.
 */

static ngx_uint_t
ngx_http_chat_notify_upsert(mongoc_collection_t *coll,
    ngx_http_chat_notify_batch_t *b, ngx_http_chat_notify_job_t *job)
{
    bson_t            filter, update, set, opts, reply, *doc;
    int64_t           upserted;
    ngx_int_t         rc;
    ngx_uint_t        state;
    bson_iter_t       it;
    const bson_t     *found;
    bson_error_t      error;
    mongoc_cursor_t  *cursor;

    bson_init(&filter);
    BSON_APPEND_OID(&filter, "_id", &job->oid);

    bson_init(&update);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$setOnInsert", &set);
    BSON_APPEND_INT64(&set, "user_id", job->user_id);
    bson_concat(&set, job->fields);
    bson_append_document_end(&update, &set);

    bson_init(&opts);
    BSON_APPEND_BOOL(&opts, "upsert", true);

    state = NGX_HTTP_CHAT_NOTIFY_RETRY;

    if (mongoc_collection_update_one(coll, &filter, &update, &opts, &reply,
                                     &error))
    {
        upserted = 0;

        if (bson_iter_init_find(&it, &reply, "upsertedCount")
            && BSON_ITER_HOLDS_NUMBER(&it))
        {
            upserted = bson_iter_as_int64(&it);
        }

        state = upserted ? NGX_HTTP_CHAT_NOTIFY_STORED
                         : NGX_HTTP_CHAT_NOTIFY_EXISTED;

    } else {
        rc = ngx_http_chat_mongo_error(&error);

        ngx_snprintf((u_char *) b->error, sizeof(b->error) - 1,
                     "MongoDB: %s%Z", error.message);

        if (rc != NGX_DECLINED) {

            /* a write error, as a duplicate _id: is it there now? */

            cursor = mongoc_collection_find_with_opts(coll, &filter, NULL,
                                                      NULL);

            if (mongoc_cursor_next(cursor, &found)) {
                state = NGX_HTTP_CHAT_NOTIFY_EXISTED;
                b->error[0] = '\0';
            }

            mongoc_cursor_destroy(cursor);
        }
    }

    if (state == NGX_HTTP_CHAT_NOTIFY_STORED) {
        doc = bson_new();
        BSON_APPEND_OID(doc, "_id", &job->oid);
        BSON_APPEND_INT64(doc, "user_id", job->user_id);
        bson_concat(doc, job->fields);
        job->doc = doc;
    }

    bson_destroy(&reply);
    bson_destroy(&opts);
    bson_destroy(&update);
    bson_destroy(&filter);

    return state;
}


/* back on the event loop: publish what was stored, settle every entry */

static void
ngx_http_chat_notify_done(ngx_event_t *ev)
{
    ngx_uint_t                        i, stored, existed, skipped, retried;
    ngx_http_chat_notify_job_t       *job;
    ngx_http_chat_notify_batch_t     *b;
    ngx_http_chat_notify_consumer_t  *nc;

    nc = ev->data;
    b = nc->running;
    nc->running = NULL;

    if (nc->guard.timer_set) {
        ngx_del_timer(&nc->guard);
    }

    if (b == NULL) {
        return;
    }

    if (b->indexed) {
        nc->indexed = 1;
    }

    if (b->error[0]) {
        ngx_log_error(NGX_LOG_ERR, nc->log, 0, "chat notify: %s", b->error);
    }

    stored = 0;
    existed = 0;
    skipped = 0;
    retried = 0;

    job = b->jobs->elts;

    for (i = 0; i < b->jobs->nelts; i++) {

        switch (job[i].state) {

        case NGX_HTTP_CHAT_NOTIFY_STORED:
            ngx_http_chat_notify_publish(nc, b, &job[i]);
            stored++;
            break;

        case NGX_HTTP_CHAT_NOTIFY_EXISTED:
            ngx_log_error(NGX_LOG_INFO, nc->log, 0,
                          "chat notify: entry %V of \"%V\" delivered again, "
                          "its notification exists",
                          &job[i].entry->id, &job[i].entry->stream);
            existed++;
            break;

        case NGX_HTTP_CHAT_NOTIFY_SKIP:
            ngx_log_error(NGX_LOG_INFO, nc->log, 0,
                          "chat notify: entry %V of \"%V\": room %L has no "
                          "member %L, nobody to notify",
                          &job[i].entry->id, &job[i].entry->stream,
                          job[i].room_id, job[i].sender_id);
            skipped++;
            break;

        default:
            retried++;
            ngx_http_chat_redis_consumer_retry(job[i].entry);
            job[i].entry = NULL;
            continue;
        }

        ngx_http_chat_redis_consumer_ack(job[i].entry);
        job[i].entry = NULL;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, nc->log, 0,
                   "chat notify: batch done: %ui stored, %ui existed, "
                   "%ui skipped, %ui retried",
                   stored, existed, skipped, retried);

    ngx_http_chat_notify_batch_free(b);

    /* entries that came meanwhile (none should: rounds wait) */

    if (nc->collecting && !nc->flush.posted) {
        ngx_post_event(&nc->flush, &ngx_posted_events);
    }
}


/* the new notification to its recipient's streams, and NotificationCreated */

static void
ngx_http_chat_notify_publish(ngx_http_chat_notify_consumer_t *nc,
    ngx_http_chat_notify_batch_t *b, ngx_http_chat_notify_job_t *job)
{
    u_char      hex[24];
    cJSON      *data, *fields;
    ngx_str_t   id, frame, channel;

    id.data = hex;
    id.len = 0;

    data = ngx_http_chat_notify_json(job->doc, &id);

    if (data == NULL
        || ngx_http_chat_sse_frame(b->pool, "notification", &id, data, &frame)
           != NGX_OK
        || ngx_http_chat_notify_channel(b->pool, &nc->group, job->user_id,
                                        &channel)
           != NGX_OK)
    {
        cJSON_Delete(data);
        ngx_log_error(NGX_LOG_ERR, nc->log, 0,
                      "chat notify: notification of entry %V not published",
                      &job->entry->id);
        return;
    }

    if (ngx_http_chat_sse_publish(&channel, &frame) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, nc->log, 0,
                      "chat notify: notification %V not published: Redis "
                      "unavailable", &id);
    }

    fields = cJSON_CreateObject();

    if (fields == NULL
        || ngx_http_chat_json_str(fields, "notification_id", &id) == NULL
        || cJSON_AddNumberToObject(fields, "user_id", (double) job->user_id)
           == NULL
        || cJSON_AddItemReferenceToObject(fields, "type",
                                 cJSON_GetObjectItemCaseSensitive(data, "type"))
           == 0)
    {
        ngx_log_error(NGX_LOG_ERR, nc->log, 0,
                      "chat notify: NotificationCreated %V not published",
                      &id);

    } else {
        (void) ngx_http_chat_notify_event(nc, b->pool, job->user_id,
                                          "NotificationCreated", fields);
    }

    cJSON_Delete(fields);
    cJSON_Delete(data);
}


/* an event on notification.events, without a request */

static ngx_int_t
ngx_http_chat_notify_event(ngx_http_chat_notify_consumer_t *nc,
    ngx_pool_t *pool, int64_t key, const char *type, cJSON *fields)
{
    return ngx_http_chat_event_send(pool, nc->log, nc->maxlen,
                                    NGX_HTTP_CHAT_NOTIFY_TOPIC, key, type,
                                    fields);
}


static void
ngx_http_chat_notify_guard(ngx_event_t *ev)
{
    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "chat notify: a batch is taking more than %d ms",
                  NGX_HTTP_CHAT_NOTIFY_GUARD);
}


static char *
ngx_http_chat_notify_cstr(ngx_pool_t *pool, ngx_str_t *s)
{
    u_char  *p;

    p = ngx_pnalloc(pool, s->len + 1);
    if (p == NULL) {
        return NULL;
    }

    *ngx_cpymem(p, s->data, s->len) = '\0';

    return (char *) p;
}
