
/*
 * The event pipeline that creates notifications (ARCHITECTURE.md 6).
 *
 * Every worker of every node runs one consumer of the group
 * "notifications" (chat_notify_group) on the streams friend.events and
 * message.events (ngx_http_chat_redis.c), so Redis hands each entry to
 * one of them.  The entries of a round become one batch, worked through
 * with the core's datastore operations, so the event loop never waits:
 * the recipient of a message is looked up in chat_rooms on the core's
 * MariaDB pool, then whether sender and recipient are blocked (API.md 12,
 * F9), then the notifications are stored by one task of the MongoDB
 * thread pool, with a client of the core's pool.  Back on the event loop,
 * each new notification goes to its recipient's streams and to
 * notification.events, and only then is its entry acknowledged.
 *
 * An entry whose datastore failed (unavailable, timed out, refused) is not
 * acknowledged: it stays pending, and the consumer reads it again after a
 * pause, as long as it takes.  Every entry needs MariaDB, for the blocks.
 *
 * Blocks.  No notification from one user to another is made while a
 * block between them lasts: the block is asked for when the notification
 * is made, not when its event was produced.  A notification's created_at
 * is fixed when its entry is read, before that question; so a
 * notification that exists was made from an event whose check came
 * before the block's row was committed: its created_at is earlier than
 * the block, and its message or request was accepted before the block
 * (C4 and F1 refuse a blocked pair in the statement that accepts them).
 * An event checked after the block's commit is acknowledged and
 * notifies nobody, even when its message was accepted before the block.
 * The one thing the check does not stop is a notification stored a few
 * milliseconds after the block's answer, from a check made just before
 * its commit; its created_at still precedes the block.
 *
 * A notification's id is derived from its stream entry, and it is stored
 * with an upsert that only ever inserts: an entry delivered again (the
 * consumer died before XACK, or someone claimed it by hand) finds its
 * notification there and is only acknowledged.  So storage is exactly
 * once per entry, and a notification is published by whoever stored it.
 *
 * One batch of a worker is in work at a time, and the next round is read
 * only when every entry of the last one is settled.  A batch's memory,
 * its operations included, is its own pool.  A graceful shutdown waits
 * for the batch: the core waits for operations in flight, and the guard
 * timer for the settling that follows them.
 *
 * The consumer reads user.online_status too; its entries are no
 * notifications, they fan out presence frames to friends and are settled
 * on their own (ngx_http_chat_notify_presence.c).
 */


#include "ngx_http_chat_notify_module.h"


#define NGX_HTTP_CHAT_NOTIFY_PREVIEW  100

/* how long a graceful shutdown waits for a batch to settle */
#define NGX_HTTP_CHAT_NOTIFY_GUARD    60000

/* rooms per lookup statement: its size stays bounded, whatever the batch */
#define NGX_HTTP_CHAT_NOTIFY_ROOMS    100

/* what becomes of an entry */
#define NGX_HTTP_CHAT_NOTIFY_STORE    0     /* to be stored */
#define NGX_HTTP_CHAT_NOTIFY_STORED   1     /* stored now: published next */
#define NGX_HTTP_CHAT_NOTIFY_EXISTED  2     /* stored before: delivered again */
#define NGX_HTTP_CHAT_NOTIFY_SKIP     3     /* nobody to notify */
#define NGX_HTTP_CHAT_NOTIFY_RETRY    4     /* a datastore failed */
#define NGX_HTTP_CHAT_NOTIFY_BLOCKED  5     /* sender and recipient blocked */

/* pairs per block statement: its size stays bounded, whatever the batch */
#define NGX_HTTP_CHAT_NOTIFY_PAIRS    100


typedef struct ngx_http_chat_notify_consumer_s  ngx_http_chat_notify_consumer_t;


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
    ngx_http_chat_notify_consumer_t *consumer;
    ngx_pool_t                     *pool;
    ngx_array_t                    *jobs;
    ngx_uint_t                      rooms;      /* jobs needing MariaDB */
    ngx_uint_t                      indexes;    /* create them first */

    ngx_http_chat_op_t              lookup;     /* the rooms: a fan-in */
    ngx_http_chat_op_t              blocks;     /* the pairs: a fan-in */
    ngx_http_chat_op_t              store;      /* the MongoDB task */

    /* written by the MongoDB task, read on the loop once it is done */
    ngx_int_t                       rc;
    ngx_uint_t                      indexed;
    char                            error[256];
} ngx_http_chat_notify_batch_t;


/* one statement of the rooms' lookup, a member of the batch's fan-in */

typedef struct {
    ngx_http_chat_notify_batch_t   *batch;
    int64_t                        *rooms;
    ngx_uint_t                      nrooms;
} ngx_http_chat_notify_lookup_t;


/* one statement of the blocks' check, a member of the batch's fan-in */

typedef struct {
    ngx_http_chat_notify_batch_t   *batch;
    ngx_http_chat_notify_job_t    **jobs;
    ngx_uint_t                      njobs;
} ngx_http_chat_notify_pairs_t;


struct ngx_http_chat_notify_consumer_s {
    ngx_http_chat_redis_consumer_t *consumer;
    ngx_log_t                      *log;
    ngx_uint_t                      maxlen;
    ngx_str_t                       group;

    ngx_http_chat_notify_batch_t   *collecting; /* this round's entries */
    ngx_http_chat_notify_batch_t   *running;    /* in work */
    ngx_event_t                     flush;      /* posted on an entry */
    ngx_event_t                     guard;
    ngx_uint_t                      indexed;
};


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
static void ngx_http_chat_notify_lookup(ngx_http_chat_notify_batch_t *b);
static ngx_int_t ngx_http_chat_notify_lookup_start(
    ngx_http_chat_notify_batch_t *b, int64_t *rooms, ngx_uint_t n);
static void ngx_http_chat_notify_room_rows(ngx_http_chat_op_t *op);
static void ngx_http_chat_notify_looked_up(ngx_http_chat_op_t *op);
static void ngx_http_chat_notify_blocks(ngx_http_chat_notify_batch_t *b);
static ngx_int_t ngx_http_chat_notify_blocks_start(
    ngx_http_chat_notify_batch_t *b, ngx_http_chat_notify_job_t **jobs,
    ngx_uint_t n);
static void ngx_http_chat_notify_block_rows(ngx_http_chat_op_t *op);
static void ngx_http_chat_notify_blocks_checked(ngx_http_chat_op_t *op);
static void ngx_http_chat_notify_store(ngx_http_chat_notify_batch_t *b);
static ngx_int_t ngx_http_chat_notify_store_task(mongoc_database_t *db,
    void *data);
static void ngx_http_chat_notify_create_indexes(
    mongoc_collection_t *coll, ngx_http_chat_notify_batch_t *b);
static ngx_uint_t ngx_http_chat_notify_upsert(mongoc_collection_t *coll,
    ngx_http_chat_notify_batch_t *b, ngx_http_chat_notify_job_t *job);
static void ngx_http_chat_notify_upsert_bulk(mongoc_collection_t *coll,
    ngx_http_chat_notify_batch_t *b, ngx_uint_t n);
static void ngx_http_chat_notify_upsert_args(ngx_http_chat_notify_job_t *job,
    bson_t *filter, bson_t *update);
static bson_t *ngx_http_chat_notify_stored_doc(
    ngx_http_chat_notify_job_t *job);
static void ngx_http_chat_notify_stored(ngx_http_chat_op_t *op);
static void ngx_http_chat_notify_done(ngx_http_chat_notify_batch_t *b);
static void ngx_http_chat_notify_publish(ngx_http_chat_notify_consumer_t *nc,
    ngx_http_chat_notify_batch_t *b, ngx_http_chat_notify_job_t *job);
static ngx_int_t ngx_http_chat_notify_event(
    ngx_http_chat_notify_consumer_t *nc, ngx_pool_t *pool, int64_t key,
    const char *type, cJSON *fields, ngx_str_t *trace);
static void ngx_http_chat_notify_guard(ngx_event_t *ev);
static ngx_http_chat_notify_batch_t *ngx_http_chat_notify_batch_new(
    ngx_http_chat_notify_consumer_t *nc);
static void ngx_http_chat_notify_batch_free(ngx_http_chat_notify_batch_t *b);


static ngx_http_chat_notify_stream_t  ngx_http_chat_notify_streams[] = {
    { ngx_string("friend.events"), 'f' },
    { ngx_string("message.events"), 'm' },
    { ngx_string(NGX_HTTP_CHAT_NOTIFY_PRESENCE_TOPIC), 'u' }
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
    ngx_str_t                             streams[3];
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
    nc->maxlen = cmcf->events_maxlen;
    nc->group = nmcf->group;

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
     * Only a fast shutdown leaves a batch in work.  The core's datastores
     * have ended before this and will not complete its operations, so
     * nothing refers to its memory any more; its entries stay pending and
     * are claimed.
     */

    if (nc->running) {
        ngx_http_chat_notify_batch_free(nc->running);
        nc->running = NULL;
    }

    if (nc->collecting) {
        ngx_http_chat_notify_batch_free(nc->collecting);
        nc->collecting = NULL;
    }

    ngx_http_chat_notify_presence_exit();

    ngx_http_chat_redis_consumer_destroy(nc->consumer);
    nc->consumer = NULL;
}


/* an entry of friend.events, message.events or user.online_status */

static void
ngx_http_chat_notify_entry(ngx_http_chat_redis_entry_t *e, void *data)
{
    ngx_http_chat_notify_consumer_t *nc = data;

    cJSON                         *event;
    ngx_int_t                      rc;
    ngx_str_t                     *value;
    ngx_http_chat_notify_job_t    *job;
    ngx_http_chat_notify_batch_t  *b;

    value = ngx_http_chat_event_field(e, "value");

    event = value ? ngx_http_chat_json_decode(value->data, value->len)
                  : NULL;

    if (event == NULL || !cJSON_IsObject(event)) {
        ngx_log_error(NGX_LOG_WARN, nc->log, 0,
                      "chat notify: entry %V of \"%V\" is not an event, "
                      "skipped", &e->id, &e->stream);
        cJSON_Delete(event);
        ngx_http_chat_redis_consumer_ack(e);
        return;
    }

    /* presence stores nothing: not a job of the batch (N5) */

    if (e->stream.len == sizeof(NGX_HTTP_CHAT_NOTIFY_PRESENCE_TOPIC) - 1
        && ngx_strncmp(e->stream.data, NGX_HTTP_CHAT_NOTIFY_PRESENCE_TOPIC,
                       e->stream.len)
           == 0)
    {
        ngx_http_chat_notify_presence(e, event, &nc->group, nc->log);
        cJSON_Delete(event);
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

            job->sender_id = other;

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

            job->sender_id = other;

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
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(event, name);

    if (!cJSON_IsNumber(item)
        || ngx_http_chat_json_int64(item, value) != NGX_OK
        || *value < 1)
    {
        return NGX_ERROR;
    }

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

    b->consumer = nc;
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


/* the round's entries are all in: the batch goes to work */

static void
ngx_http_chat_notify_flush(ngx_event_t *ev)
{
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

    ngx_add_timer(&nc->guard, NGX_HTTP_CHAT_NOTIFY_GUARD);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, nc->log, 0,
                   "chat notify: batch %p: %ui entries, %ui of messages",
                   b, b->jobs->nelts, b->rooms);

    if (b->rooms) {
        ngx_http_chat_notify_lookup(b);

    } else {
        ngx_http_chat_notify_blocks(b);
    }
}


/*
 * The recipients of messages: the rooms, each once, looked up on the
 * core's MariaDB pool, NGX_HTTP_CHAT_NOTIFY_ROOMS to a statement, all
 * statements at once.  An entry whose room could not be looked up keeps
 * user_id 0 and is retried.
 */

static void
ngx_http_chat_notify_lookup(ngx_http_chat_notify_batch_t *b)
{
    int64_t                     *rooms;
    ngx_uint_t                   i, j, n, nrooms, first;
    ngx_http_chat_notify_job_t  *job;

    b->lookup.pool = b->pool;
    b->lookup.log = b->consumer->log;
    b->lookup.handler = ngx_http_chat_notify_looked_up;
    b->lookup.data = b;

    job = b->jobs->elts;
    n = b->jobs->nelts;

    rooms = ngx_palloc(b->pool, b->rooms * sizeof(int64_t));
    if (rooms == NULL) {
        ngx_http_chat_op_wait(&b->lookup);
        return;
    }

    nrooms = 0;

    for (i = 0; i < n; i++) {
        if (job[i].user_id != 0) {
            continue;
        }

        for (j = 0; j < nrooms; j++) {
            if (rooms[j] == job[i].room_id) {
                break;
            }
        }

        if (j == nrooms) {
            rooms[nrooms++] = job[i].room_id;
        }
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, b->lookup.log, 0,
                   "chat notify: batch %p: looking up %ui rooms in %ui "
                   "statements", b, nrooms,
                   (nrooms + NGX_HTTP_CHAT_NOTIFY_ROOMS - 1)
                   / NGX_HTTP_CHAT_NOTIFY_ROOMS);

    for (first = 0; first < nrooms; first += NGX_HTTP_CHAT_NOTIFY_ROOMS) {
        if (ngx_http_chat_notify_lookup_start(b, &rooms[first],
                                   ngx_min(nrooms - first,
                                           NGX_HTTP_CHAT_NOTIFY_ROOMS))
            != NGX_OK)
        {
            break;
        }
    }

    ngx_http_chat_op_wait(&b->lookup);
}


static ngx_int_t
ngx_http_chat_notify_lookup_start(ngx_http_chat_notify_batch_t *b,
    int64_t *rooms, ngx_uint_t n)
{
    u_char                         *sql, *p;
    ngx_uint_t                      i, m;
    ngx_http_chat_op_t             *op;
    ngx_http_chat_sql_arg_t        *args;
    ngx_http_chat_notify_lookup_t  *lk;

    static u_char  head[] = "SELECT id, user_1_id, user_2_id FROM chat_rooms "
                            "WHERE id IN (?";

    /*
     * every "?" of the text is a placeholder: one per room, no other; the
     * last room fills the list up to its prepared size
     */

    m = ngx_http_chat_sql_list_size(n);

    sql = ngx_pnalloc(b->pool, sizeof(head) + (m - 1) * sizeof(", ?") + 1);
    lk = ngx_palloc(b->pool, sizeof(ngx_http_chat_notify_lookup_t));
    args = ngx_palloc(b->pool, m * sizeof(ngx_http_chat_sql_arg_t));

    if (sql == NULL || lk == NULL || args == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(sql, head, sizeof(head) - 1);

    for (i = 0; i < m; i++) {
        if (i) {
            p = ngx_cpymem(p, ", ?", sizeof(", ?") - 1);
        }

        args[i].type = NGX_HTTP_CHAT_SQL_INT;
        args[i].num = rooms[ngx_min(i, n - 1)];
    }

    *p++ = ')';
    *p = '\0';

    lk->batch = b;
    lk->rooms = rooms;
    lk->nrooms = n;

    op = ngx_http_chat_op_member(&b->lookup, ngx_http_chat_notify_room_rows,
                                 lk);
    if (op == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_chat_op_stmt(op, (const char *) sql, args, m) != NGX_OK) {
        ngx_http_chat_op_fail(op);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a statement's rows: the other member of each room is the recipient */

static void
ngx_http_chat_notify_room_rows(ngx_http_chat_op_t *op)
{
    int64_t                        *row, *rows;
    ngx_str_t                      *cell;
    ngx_uint_t                      i, j, k, nrows;
    ngx_http_chat_notify_job_t     *job;
    ngx_http_chat_notify_batch_t   *b;
    ngx_http_chat_notify_lookup_t  *lk;

    lk = op->data;
    b = lk->batch;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat notify: batch %p: %ui rooms looked up, rc:%i "
                   "rows:%ui", b, lk->nrooms, op->rc, op->sql.nrows);

    if (op->rc != NGX_OK) {
        return;
    }

    nrows = 0;
    rows = NULL;

    if (op->sql.nrows && op->sql.ncols == 3) {
        rows = ngx_palloc(b->pool, op->sql.nrows * 3 * sizeof(int64_t));
        if (rows == NULL) {
            return;
        }

        for (i = 0; i < op->sql.nrows; i++) {
            cell = &op->sql.cells[i * 3];
            row = &rows[nrows * 3];

            if (ngx_http_chat_parse_id(&cell[0], &row[0]) == NGX_OK
                && ngx_http_chat_parse_id(&cell[1], &row[1]) == NGX_OK
                && ngx_http_chat_parse_id(&cell[2], &row[2]) == NGX_OK)
            {
                nrows++;
            }
        }
    }

    job = b->jobs->elts;

    for (i = 0; i < b->jobs->nelts; i++) {

        if (job[i].user_id != 0) {
            continue;
        }

        for (j = 0; j < lk->nrooms; j++) {
            if (lk->rooms[j] == job[i].room_id) {
                break;
            }
        }

        if (j == lk->nrooms) {
            continue;       /* another statement's */
        }

        /* a room the event names but that is gone: nobody to notify */

        job[i].state = NGX_HTTP_CHAT_NOTIFY_SKIP;

        for (k = 0; k < nrows; k++) {
            row = &rows[k * 3];

            if (row[0] != job[i].room_id) {
                continue;
            }

            if (job[i].sender_id == row[1] && row[2] != row[1]) {
                job[i].user_id = row[2];
                job[i].state = NGX_HTTP_CHAT_NOTIFY_STORE;

            } else if (job[i].sender_id == row[2]) {
                job[i].user_id = row[1];
                job[i].state = NGX_HTTP_CHAT_NOTIFY_STORE;
            }

            break;
        }
    }
}


/* every statement has answered: what is known is stored next */

static void
ngx_http_chat_notify_looked_up(ngx_http_chat_op_t *op)
{
    ngx_uint_t                     i, retried;
    ngx_http_chat_notify_job_t    *job;
    ngx_http_chat_notify_batch_t  *b;

    b = op->data;

    job = b->jobs->elts;
    retried = 0;

    for (i = 0; i < b->jobs->nelts; i++) {
        if (job[i].user_id == 0
            && job[i].state == NGX_HTTP_CHAT_NOTIFY_STORE)
        {
            job[i].state = NGX_HTTP_CHAT_NOTIFY_RETRY;
            retried++;
        }
    }

    if (retried) {
        ngx_log_error(NGX_LOG_ERR, op->log, 0,
                      "chat notify: MariaDB %s: the rooms of %ui entries "
                      "not looked up, they stay pending",
                      op->rc == NGX_DECLINED ? "unavailable" : "failed",
                      retried);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat notify: batch %p: rooms done, rc:%i", b, op->rc);

    ngx_http_chat_notify_blocks(b);
}


/*
 * Is the recipient of each notification to be stored blocked by its
 * sender, or blocking it?  NGX_HTTP_CHAT_NOTIFY_PAIRS pairs a statement,
 * all statements at once, on the core's MariaDB pool.  An entry whose
 * pair could not be checked is retried: a notification is never made
 * without the check.
 */

static void
ngx_http_chat_notify_blocks(ngx_http_chat_notify_batch_t *b)
{
    ngx_uint_t                    i, n, first;
    ngx_http_chat_notify_job_t   *job, **jobs;

    job = b->jobs->elts;

    for (n = 0, i = 0; i < b->jobs->nelts; i++) {
        if (job[i].state == NGX_HTTP_CHAT_NOTIFY_STORE) {
            n++;
        }
    }

    if (n == 0) {
        ngx_http_chat_notify_store(b);
        return;
    }

    b->blocks.pool = b->pool;
    b->blocks.log = b->consumer->log;
    b->blocks.handler = ngx_http_chat_notify_blocks_checked;
    b->blocks.data = b;

    jobs = ngx_palloc(b->pool, n * sizeof(ngx_http_chat_notify_job_t *));
    if (jobs == NULL) {
        for (i = 0; i < b->jobs->nelts; i++) {
            if (job[i].state == NGX_HTTP_CHAT_NOTIFY_STORE) {
                job[i].state = NGX_HTTP_CHAT_NOTIFY_RETRY;
            }
        }

        ngx_http_chat_op_wait(&b->blocks);
        return;
    }

    for (n = 0, i = 0; i < b->jobs->nelts; i++) {
        if (job[i].state == NGX_HTTP_CHAT_NOTIFY_STORE) {
            jobs[n++] = &job[i];
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, b->blocks.log, 0,
                   "chat notify: batch %p: checking %ui pairs for blocks",
                   b, n);

    for (first = 0; first < n; first += NGX_HTTP_CHAT_NOTIFY_PAIRS) {
        if (ngx_http_chat_notify_blocks_start(b, &jobs[first],
                                   ngx_min(n - first,
                                           NGX_HTTP_CHAT_NOTIFY_PAIRS))
            != NGX_OK)
        {
            /* not asked: these wait for the next reading */

            for (i = first; i < n; i++) {
                jobs[i]->state = NGX_HTTP_CHAT_NOTIFY_RETRY;
            }

            break;
        }
    }

    ngx_http_chat_op_wait(&b->blocks);
}


static ngx_int_t
ngx_http_chat_notify_blocks_start(ngx_http_chat_notify_batch_t *b,
    ngx_http_chat_notify_job_t **jobs, ngx_uint_t n)
{
    u_char                        *sql, *p;
    ngx_uint_t                     i, m;
    ngx_http_chat_op_t            *op;
    ngx_http_chat_sql_arg_t       *args;
    ngx_http_chat_notify_pairs_t  *pairs;

    static u_char  head[] = "SELECT user_id, blocked_user_id FROM block_users "
                            "WHERE ";
    static u_char  pair[] = "(user_id = ? AND blocked_user_id = ?)";
    static u_char  sep[] = " OR ";

    /*
     * each pair both ways: two conditions, four placeholders; the last
     * pair fills the list up to its prepared size
     */

    m = ngx_http_chat_sql_list_size(n);

    sql = ngx_pnalloc(b->pool, sizeof(head)
                      + 2 * m * (sizeof(pair) - 1 + sizeof(sep) - 1));
    pairs = ngx_palloc(b->pool, sizeof(ngx_http_chat_notify_pairs_t));
    args = ngx_palloc(b->pool, 4 * m * sizeof(ngx_http_chat_sql_arg_t));

    if (sql == NULL || pairs == NULL || args == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(sql, head, sizeof(head) - 1);

    for (i = 0; i < 2 * m; i++) {
        if (i) {
            p = ngx_cpymem(p, sep, sizeof(sep) - 1);
        }

        p = ngx_cpymem(p, pair, sizeof(pair) - 1);
    }

    *p = '\0';

    for (i = 0; i < m; i++) {
        args[4 * i].type = NGX_HTTP_CHAT_SQL_INT;
        args[4 * i].num = jobs[ngx_min(i, n - 1)]->user_id;
        args[4 * i + 1].type = NGX_HTTP_CHAT_SQL_INT;
        args[4 * i + 1].num = jobs[ngx_min(i, n - 1)]->sender_id;
        args[4 * i + 2] = args[4 * i + 1];
        args[4 * i + 3] = args[4 * i];
    }

    pairs->batch = b;
    pairs->jobs = jobs;
    pairs->njobs = n;

    op = ngx_http_chat_op_member(&b->blocks, ngx_http_chat_notify_block_rows,
                                 pairs);
    if (op == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_chat_op_stmt(op, (const char *) sql, args, 4 * m) != NGX_OK)
    {
        ngx_http_chat_op_fail(op);
    }

    return NGX_OK;
}


/* a statement's rows: the blocks among its pairs */

static void
ngx_http_chat_notify_block_rows(ngx_http_chat_op_t *op)
{
    int64_t                        blocker, blocked;
    ngx_str_t                     *cell;
    ngx_uint_t                     i, k;
    ngx_http_chat_notify_job_t    *job;
    ngx_http_chat_notify_pairs_t  *pairs;

    pairs = op->data;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat notify: batch %p: %ui pairs checked, rc:%i "
                   "blocks:%ui", pairs->batch, pairs->njobs, op->rc,
                   op->sql.nrows);

    if (op->rc != NGX_OK || (op->sql.nrows && op->sql.ncols != 2)) {
        for (i = 0; i < pairs->njobs; i++) {
            pairs->jobs[i]->state = NGX_HTTP_CHAT_NOTIFY_RETRY;
        }

        return;
    }

    for (k = 0; k < op->sql.nrows; k++) {
        cell = &op->sql.cells[k * 2];

        if (ngx_http_chat_parse_id(&cell[0], &blocker) != NGX_OK
            || ngx_http_chat_parse_id(&cell[1], &blocked) != NGX_OK)
        {
            continue;
        }

        for (i = 0; i < pairs->njobs; i++) {
            job = pairs->jobs[i];

            if ((job->user_id == blocker && job->sender_id == blocked)
                || (job->user_id == blocked && job->sender_id == blocker))
            {
                job->state = NGX_HTTP_CHAT_NOTIFY_BLOCKED;
            }
        }
    }
}


/* every statement has answered: what may be stored is stored next */

static void
ngx_http_chat_notify_blocks_checked(ngx_http_chat_op_t *op)
{
    ngx_uint_t                     i, retried;
    ngx_http_chat_notify_job_t    *job;
    ngx_http_chat_notify_batch_t  *b;

    b = op->data;

    if (op->rc != NGX_OK) {
        job = b->jobs->elts;
        retried = 0;

        for (i = 0; i < b->jobs->nelts; i++) {
            if (job[i].state == NGX_HTTP_CHAT_NOTIFY_RETRY) {
                retried++;
            }
        }

        ngx_log_error(NGX_LOG_ERR, op->log, 0,
                      "chat notify: MariaDB %s: the blocks of %ui entries "
                      "not checked, they stay pending",
                      op->rc == NGX_DECLINED ? "unavailable" : "failed",
                      retried);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat notify: batch %p: blocks done, rc:%i", b, op->rc);

    ngx_http_chat_notify_store(b);
}


/* the notifications not stored yet, in one task of the MongoDB pool */

static void
ngx_http_chat_notify_store(ngx_http_chat_notify_batch_t *b)
{
    ngx_uint_t                   i, n;
    ngx_http_chat_notify_job_t  *job;

    job = b->jobs->elts;

    for (n = 0, i = 0; i < b->jobs->nelts; i++) {
        if (job[i].state == NGX_HTTP_CHAT_NOTIFY_STORE) {
            n++;
        }
    }

    if (n == 0) {
        ngx_http_chat_notify_done(b);
        return;
    }

    b->store.pool = b->pool;
    b->store.log = b->consumer->log;
    b->store.handler = ngx_http_chat_notify_stored;
    b->store.data = b;

    b->rc = NGX_OK;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, b->store.log, 0,
                   "chat notify: batch %p: storing %ui notifications", b, n);

    if (ngx_http_chat_op_mongo(&b->store, ngx_http_chat_notify_store_task, b)
        != NGX_OK)
    {
        ngx_http_chat_op_fail(&b->store);
    }
}


/* in a pool thread: no nginx pools, events or logs, only the batch */

static ngx_int_t
ngx_http_chat_notify_store_task(mongoc_database_t *db, void *data)
{
    ngx_http_chat_notify_batch_t *b = data;

    ngx_uint_t                   i, n;
    mongoc_collection_t         *coll;
    ngx_http_chat_notify_job_t  *job;

    coll = mongoc_database_get_collection(db,
                                          NGX_HTTP_CHAT_NOTIFY_COLLECTION);

    if (b->indexes) {
        ngx_http_chat_notify_create_indexes(coll, b);
    }

    job = b->jobs->elts;

    n = 0;

    for (i = 0; i < b->jobs->nelts; i++) {
        if (job[i].state == NGX_HTTP_CHAT_NOTIFY_STORE) {
            n++;
        }
    }

    if (n > 1) {
        ngx_http_chat_notify_upsert_bulk(coll, b, n);
    }

    /* one alone, or those the bulk write left undecided */

    for (i = 0; b->rc != NGX_DECLINED && i < b->jobs->nelts; i++) {
        if (job[i].state != NGX_HTTP_CHAT_NOTIFY_STORE) {
            continue;
        }

        job[i].state = ngx_http_chat_notify_upsert(coll, b, &job[i]);

        if (b->rc == NGX_DECLINED) {
            /* the server is unreachable: the others would wait as long */
            break;
        }
    }

    mongoc_collection_destroy(coll);

    /* unreachable tells the core's readiness view */

    return b->rc;
}


static void
ngx_http_chat_notify_stored(ngx_http_chat_op_t *op)
{
    ngx_http_chat_notify_batch_t  *b;

    b = op->data;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat notify: batch %p: stored, rc:%i", b, op->rc);

    if (op->rc != NGX_OK && b->error[0] == '\0') {
        ngx_snprintf((u_char *) b->error, sizeof(b->error) - 1,
                     "MongoDB %s%Z",
                     op->rc == NGX_DECLINED ? "unavailable" : "task failed");
    }

    ngx_http_chat_notify_done(b);
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
 * Not stored: the batch's rc says why (NGX_DECLINED: unreachable).
 */

static ngx_uint_t
ngx_http_chat_notify_upsert(mongoc_collection_t *coll,
    ngx_http_chat_notify_batch_t *b, ngx_http_chat_notify_job_t *job)
{
    bson_t            filter, update, opts, reply;
    int64_t           upserted;
    ngx_int_t         rc;
    ngx_uint_t        state;
    bson_iter_t       it;
    const bson_t     *found;
    bson_error_t      error;
    mongoc_cursor_t  *cursor;

    ngx_http_chat_notify_upsert_args(job, &filter, &update);

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

        if (state == NGX_HTTP_CHAT_NOTIFY_RETRY) {
            b->rc = rc;
        }
    }

    if (state == NGX_HTTP_CHAT_NOTIFY_STORED) {
        job->doc = ngx_http_chat_notify_stored_doc(job);
    }

    bson_destroy(&reply);
    bson_destroy(&opts);
    bson_destroy(&update);
    bson_destroy(&filter);

    return state;
}


/*
 * The n notifications of a batch to store in one write: the upserts as
 * one unordered bulk, one round trip and one server selection instead of
 * n.  The reply lists the upserted ones by index: stored now; the others
 * matched an _id that was there: stored before.  When the write fails,
 * the jobs not known to be upserted stay to store, one by one, as a
 * batch of one is (ngx_http_chat_notify_upsert() tells a failure of the
 * server from a job's own).
 */

static void
ngx_http_chat_notify_upsert_bulk(mongoc_collection_t *coll,
    ngx_http_chat_notify_batch_t *b, ngx_uint_t n)
{
    bool                         ok;
    bson_t                       opts, upsert, filter, update, reply;
    int64_t                      k;
    ngx_uint_t                   i, m, *index;
    bson_iter_t                  it, up, field;
    bson_error_t                 error;
    mongoc_bulk_operation_t     *bulk;
    ngx_http_chat_notify_job_t  *job;

    job = b->jobs->elts;

    /* the job of each operation of the bulk */

    index = bson_malloc(n * sizeof(ngx_uint_t));

    bson_init(&opts);
    BSON_APPEND_BOOL(&opts, "ordered", false);
    bulk = mongoc_collection_create_bulk_operation_with_opts(coll, &opts);
    bson_destroy(&opts);

    bson_init(&upsert);
    BSON_APPEND_BOOL(&upsert, "upsert", true);

    m = 0;
    ok = true;

    for (i = 0; ok && i < b->jobs->nelts; i++) {
        if (job[i].state != NGX_HTTP_CHAT_NOTIFY_STORE) {
            continue;
        }

        ngx_http_chat_notify_upsert_args(&job[i], &filter, &update);

        ok = mongoc_bulk_operation_update_one_with_opts(bulk, &filter,
                                                        &update, &upsert,
                                                        &error);
        bson_destroy(&update);
        bson_destroy(&filter);

        index[m++] = i;
    }

    bson_destroy(&upsert);

    if (!ok) {
        /* not sent: one by one */
        goto done;
    }

    ok = mongoc_bulk_operation_execute(bulk, &reply, &error);

    if (bson_iter_init_find(&it, &reply, "upserted")
        && BSON_ITER_HOLDS_ARRAY(&it)
        && bson_iter_recurse(&it, &up))
    {
        while (bson_iter_next(&up)) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&up)
                || !bson_iter_recurse(&up, &field)
                || !bson_iter_find(&field, "index")
                || !BSON_ITER_HOLDS_NUMBER(&field))
            {
                continue;
            }

            k = bson_iter_as_int64(&field);

            if (k < 0 || (ngx_uint_t) k >= m) {
                continue;
            }

            job[index[k]].state = NGX_HTTP_CHAT_NOTIFY_STORED;
            job[index[k]].doc = ngx_http_chat_notify_stored_doc(
                                                           &job[index[k]]);
        }
    }

    if (ok) {
        for (k = 0; (ngx_uint_t) k < m; k++) {
            if (job[index[k]].state == NGX_HTTP_CHAT_NOTIFY_STORE) {
                job[index[k]].state = NGX_HTTP_CHAT_NOTIFY_EXISTED;
            }
        }

    } else if (ngx_http_chat_mongo_error(&error) == NGX_DECLINED) {

        /* the server is unreachable: one by one would wait as long */

        b->rc = NGX_DECLINED;
        ngx_snprintf((u_char *) b->error, sizeof(b->error) - 1,
                     "MongoDB: %s%Z", error.message);
    }

    bson_destroy(&reply);

done:

    mongoc_bulk_operation_destroy(bulk);
    bson_free(index);
}


/* an upsert that only ever inserts: the filter by _id, $setOnInsert */

static void
ngx_http_chat_notify_upsert_args(ngx_http_chat_notify_job_t *job,
    bson_t *filter, bson_t *update)
{
    bson_t  set;

    bson_init(filter);
    BSON_APPEND_OID(filter, "_id", &job->oid);

    bson_init(update);
    BSON_APPEND_DOCUMENT_BEGIN(update, "$setOnInsert", &set);
    BSON_APPEND_INT64(&set, "user_id", job->user_id);
    bson_concat(&set, job->fields);
    bson_append_document_end(update, &set);
}


/* the document as stored, for its publication */

static bson_t *
ngx_http_chat_notify_stored_doc(ngx_http_chat_notify_job_t *job)
{
    bson_t  *doc;

    doc = bson_new();
    BSON_APPEND_OID(doc, "_id", &job->oid);
    BSON_APPEND_INT64(doc, "user_id", job->user_id);
    bson_concat(doc, job->fields);

    return doc;
}


/* back on the event loop: publish what was stored, settle every entry */

static void
ngx_http_chat_notify_done(ngx_http_chat_notify_batch_t *b)
{
    ngx_uint_t                        i, stored, existed, skipped, retried;
    ngx_http_chat_notify_job_t       *job;
    ngx_http_chat_notify_consumer_t  *nc;

    nc = b->consumer;
    nc->running = NULL;

    if (nc->guard.timer_set) {
        ngx_del_timer(&nc->guard);
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

        case NGX_HTTP_CHAT_NOTIFY_BLOCKED:
            ngx_log_error(NGX_LOG_INFO, nc->log, 0,
                          "chat notify: entry %V of \"%V\": users %L and "
                          "%L are blocked, nobody to notify",
                          &job[i].entry->id, &job[i].entry->stream,
                          job[i].sender_id, job[i].user_id);
            skipped++;
            break;

        default:

            /* a datastore failed, or the task never ran: left pending */

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
    ngx_str_t   id, frame, channel, *trace;

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
        || ngx_http_chat_json_num(fields, "user_id", job->user_id) == NULL
        || cJSON_AddItemReferenceToObject(fields, "type",
                                 cJSON_GetObjectItemCaseSensitive(data, "type"))
           == 0)
    {
        ngx_log_error(NGX_LOG_ERR, nc->log, 0,
                      "chat notify: NotificationCreated %V not published",
                      &id);

    } else {
        /* the trace of the request that sent the event, if it had one */

        trace = ngx_http_chat_event_field(job->entry, "traceparent");

        (void) ngx_http_chat_notify_event(nc, b->pool, job->user_id,
                                          "NotificationCreated", fields,
                                          trace);
    }

    cJSON_Delete(fields);
    cJSON_Delete(data);
}


/* an event on notification.events, without a request */

static ngx_int_t
ngx_http_chat_notify_event(ngx_http_chat_notify_consumer_t *nc,
    ngx_pool_t *pool, int64_t key, const char *type, cJSON *fields,
    ngx_str_t *trace)
{
    return ngx_http_chat_event_send_trace(pool, nc->log, nc->maxlen,
                                          NGX_HTTP_CHAT_NOTIFY_TOPIC, key,
                                          type, fields, trace);
}


static void
ngx_http_chat_notify_guard(ngx_event_t *ev)
{
    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "chat notify: a batch is taking more than %d ms",
                  NGX_HTTP_CHAT_NOTIFY_GUARD);
}
