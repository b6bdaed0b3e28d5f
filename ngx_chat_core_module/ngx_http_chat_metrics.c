
/*
 * /metrics (ARCHITECTURE.md 8): Prometheus text exposition of counters
 * kept in shared memory, so any worker answers for all of them.
 *
 * Requests are counted per route of the service modules (method and path
 * pattern, not the raw URI, so the number of series stays fixed), by
 * status class, with a latency histogram; open event streams and the
 * streams cut off for a slow client, per route; published events, and
 * the Redis Streams consumers: entries processed per topic, the age of
 * the latest at its acknowledgement, and the group's pending entries and
 * lag as Redis last told.
 */


#include "ngx_http_chat_core_module.h"


#define NGX_HTTP_CHAT_METRICS_ROUTES   128
#define NGX_HTTP_CHAT_METRICS_BUCKETS  10
#define NGX_HTTP_CHAT_METRICS_TOPICS   8


typedef struct {
    void                       *route;      /* the route table entry */
    u_char                      path[64];
    ngx_uint_t                  method;
    ngx_atomic_t                status[5];  /* 1xx .. 5xx */
    ngx_atomic_t                bucket[NGX_HTTP_CHAT_METRICS_BUCKETS];
    ngx_atomic_t                sum_ms;
    ngx_atomic_t                streams;    /* open event streams */
    ngx_atomic_t                dropped;    /* cut off: client too slow */
} ngx_http_chat_metrics_route_t;


typedef struct {
    u_char                      name[48];   /* the Redis stream */
    ngx_atomic_t                consumed;
    ngx_atomic_t                delay_ms;   /* the latest acknowledged */
    ngx_atomic_t                pending;    /* as XINFO GROUPS last said */
    ngx_atomic_t                lag;
    ngx_atomic_t                lag_known;  /* Redis may not know it */
} ngx_http_chat_metrics_topic_t;


typedef struct {
    ngx_atomic_t                streams;
    ngx_atomic_t                events_published;
    ngx_atomic_t                events_failed;
    ngx_atomic_t                cpu[3];     /* done, cancelled, rejected */
    ngx_atomic_t                cpu_queued;
    ngx_atomic_t                cpu_wait_ms;
    ngx_atomic_t                forgotten;
    ngx_atomic_t                nroutes;
    ngx_http_chat_metrics_route_t  routes[NGX_HTTP_CHAT_METRICS_ROUTES];
    ngx_atomic_t                ntopics;
    ngx_http_chat_metrics_topic_t  topics[NGX_HTTP_CHAT_METRICS_TOPICS];
} ngx_http_chat_metrics_shm_t;


static ngx_int_t ngx_http_chat_metrics_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_int_t ngx_http_chat_metrics_log(ngx_http_request_t *r);
static ngx_http_chat_metrics_route_t *ngx_http_chat_metrics_slot(
    ngx_http_chat_route_t *route);
static ngx_http_chat_metrics_topic_t *ngx_http_chat_metrics_topic(
    ngx_str_t *name);
static u_char *ngx_http_chat_metrics_streams(u_char *p, u_char *last);


/* upper bounds of the latency buckets, milliseconds; the last is +Inf */
static ngx_msec_t  ngx_http_chat_metrics_le[NGX_HTTP_CHAT_METRICS_BUCKETS] =
    { 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 0 };

static ngx_shm_zone_t               *ngx_http_chat_metrics_zone;
static ngx_http_chat_metrics_shm_t  *ngx_http_chat_metrics;


ngx_int_t
ngx_http_chat_metrics_init(ngx_conf_t *cf)
{
    size_t                      size;
    ngx_str_t                   name;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    ngx_str_set(&name, "chat_metrics");

    /* the slab pool's own header takes a page more */
    size = ngx_align(sizeof(ngx_http_chat_metrics_shm_t), ngx_pagesize)
           + 8 * ngx_pagesize;

    ngx_http_chat_metrics_zone = ngx_shared_memory_add(cf, &name, size,
                                                &ngx_http_chat_core_module);
    if (ngx_http_chat_metrics_zone == NULL) {
        return NGX_ERROR;
    }

    ngx_http_chat_metrics_zone->init = ngx_http_chat_metrics_init_zone;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_chat_metrics_log;

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_metrics_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        /* a reload keeps the counters */
        zone->data = data;
        ngx_http_chat_metrics = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_http_chat_metrics = ngx_slab_calloc(shpool,
                                      sizeof(ngx_http_chat_metrics_shm_t));
    if (ngx_http_chat_metrics == NULL) {
        return NGX_ERROR;
    }

    zone->data = ngx_http_chat_metrics;

    return NGX_OK;
}


/*
 * Route table entries live in the modules' data, at the same address in
 * every worker: the address identifies a route.  A slot is taken once,
 * under the zone's lock; counting is lock-free.
 */

static ngx_http_chat_metrics_route_t *
ngx_http_chat_metrics_slot(ngx_http_chat_route_t *route)
{
    size_t                          n;
    ngx_uint_t                      i, used;
    ngx_slab_pool_t                *shpool;
    ngx_http_chat_metrics_route_t  *slot;

    used = ngx_http_chat_metrics->nroutes;

    for (i = 0; i < used; i++) {
        if (ngx_http_chat_metrics->routes[i].route == route) {
            return &ngx_http_chat_metrics->routes[i];
        }
    }

    shpool = (ngx_slab_pool_t *) ngx_http_chat_metrics_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < ngx_http_chat_metrics->nroutes; i++) {
        if (ngx_http_chat_metrics->routes[i].route == route) {
            ngx_shmtx_unlock(&shpool->mutex);
            return &ngx_http_chat_metrics->routes[i];
        }
    }

    if (i == NGX_HTTP_CHAT_METRICS_ROUTES) {
        ngx_shmtx_unlock(&shpool->mutex);
        return NULL;
    }

    slot = &ngx_http_chat_metrics->routes[i];

    n = ngx_min(route->path.len, sizeof(slot->path) - 1);
    ngx_memcpy(slot->path, route->path.data, n);
    slot->path[n] = '\0';
    slot->method = route->method;
    slot->route = route;

    ngx_memory_barrier();
    ngx_http_chat_metrics->nroutes = i + 1;

    ngx_shmtx_unlock(&shpool->mutex);

    return slot;
}


static ngx_int_t
ngx_http_chat_metrics_log(ngx_http_request_t *r)
{
    ngx_uint_t                      i, status;
    ngx_time_t                     *tp;
    ngx_msec_int_t                  ms;
    ngx_http_chat_ctx_t            *ctx;
    ngx_http_chat_metrics_route_t  *slot;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chat_core_module);

    if (ctx == NULL || ctx->route == NULL || ngx_http_chat_metrics == NULL) {
        return NGX_OK;
    }

    slot = ngx_http_chat_metrics_slot(ctx->route);
    if (slot == NULL) {
        return NGX_OK;
    }

    status = r->headers_out.status / 100;

    if (status >= 1 && status <= 5) {
        (void) ngx_atomic_fetch_add(&slot->status[status - 1], 1);
    }

    /* as $request_time: r->start_msec is the milliseconds of start_sec */

    tp = ngx_timeofday();

    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    for (i = 0; i < NGX_HTTP_CHAT_METRICS_BUCKETS - 1; i++) {
        if ((ngx_msec_t) ms <= ngx_http_chat_metrics_le[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&slot->bucket[i], 1);
    (void) ngx_atomic_fetch_add(&slot->sum_ms, ms);

    return NGX_OK;
}


/* a stream of a route opens (1) or ends (-1) */

void
ngx_http_chat_metrics_stream(ngx_http_chat_route_t *route, ngx_int_t delta)
{
    ngx_http_chat_metrics_route_t  *slot;

    if (ngx_http_chat_metrics == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&ngx_http_chat_metrics->streams, delta);

    slot = route ? ngx_http_chat_metrics_slot(route) : NULL;

    if (slot) {
        (void) ngx_atomic_fetch_add(&slot->streams, delta);
    }
}


void
ngx_http_chat_metrics_stream_dropped(ngx_http_chat_route_t *route)
{
    ngx_http_chat_metrics_route_t  *slot;

    if (ngx_http_chat_metrics == NULL || route == NULL) {
        return;
    }

    slot = ngx_http_chat_metrics_slot(route);

    if (slot) {
        (void) ngx_atomic_fetch_add(&slot->dropped, 1);
    }
}


/* an entry of a topic is processed and acknowledged; id "<ms>-<seq>" */

void
ngx_http_chat_metrics_consumed(ngx_str_t *topic, ngx_str_t *id)
{
    u_char                         *dash;
    ngx_int_t                       ms;
    ngx_time_t                     *tp;
    ngx_msec_int_t                  delay;
    ngx_http_chat_metrics_topic_t  *t;

    if (ngx_http_chat_metrics == NULL) {
        return;
    }

    t = ngx_http_chat_metrics_topic(topic);
    if (t == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&t->consumed, 1);

    dash = ngx_strlchr(id->data, id->data + id->len, '-');
    ms = ngx_atoi(id->data, dash ? (size_t) (dash - id->data) : id->len);

    if (ms == NGX_ERROR) {
        return;
    }

    tp = ngx_timeofday();
    delay = (ngx_msec_int_t) (tp->sec * 1000 + tp->msec - ms);

    t->delay_ms = ngx_max(delay, 0);
}


/* the consumer group on a topic as Redis sees it; lag -1: not known */

void
ngx_http_chat_metrics_group(ngx_str_t *topic, ngx_uint_t pending,
    ngx_int_t lag)
{
    ngx_http_chat_metrics_topic_t  *t;

    if (ngx_http_chat_metrics == NULL) {
        return;
    }

    t = ngx_http_chat_metrics_topic(topic);
    if (t == NULL) {
        return;
    }

    t->pending = pending;
    t->lag = lag < 0 ? 0 : lag;
    t->lag_known = (lag >= 0);
}


/* a topic's slot, taken once under the zone's lock as a route's is */

static ngx_http_chat_metrics_topic_t *
ngx_http_chat_metrics_topic(ngx_str_t *name)
{
    size_t                          n;
    ngx_uint_t                      i;
    ngx_slab_pool_t                *shpool;
    ngx_http_chat_metrics_topic_t  *t;

    n = ngx_min(name->len, sizeof(t->name) - 1);

    for (i = 0; i < ngx_http_chat_metrics->ntopics; i++) {
        t = &ngx_http_chat_metrics->topics[i];

        if (ngx_strncmp(t->name, name->data, n) == 0 && t->name[n] == '\0') {
            return t;
        }
    }

    shpool = (ngx_slab_pool_t *) ngx_http_chat_metrics_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < ngx_http_chat_metrics->ntopics; i++) {
        t = &ngx_http_chat_metrics->topics[i];

        if (ngx_strncmp(t->name, name->data, n) == 0 && t->name[n] == '\0') {
            ngx_shmtx_unlock(&shpool->mutex);
            return t;
        }
    }

    if (i == NGX_HTTP_CHAT_METRICS_TOPICS) {
        ngx_shmtx_unlock(&shpool->mutex);
        return NULL;
    }

    t = &ngx_http_chat_metrics->topics[i];

    ngx_memcpy(t->name, name->data, n);
    t->name[n] = '\0';

    ngx_memory_barrier();
    ngx_http_chat_metrics->ntopics = i + 1;

    ngx_shmtx_unlock(&shpool->mutex);

    return t;
}


void
ngx_http_chat_metrics_event(ngx_uint_t published)
{
    if (ngx_http_chat_metrics) {
        (void) ngx_atomic_fetch_add(published
                                    ? &ngx_http_chat_metrics->events_published
                                    : &ngx_http_chat_metrics->events_failed,
                                    1);
    }
}


/* called from pool threads too: atomics only */

void
ngx_http_chat_metrics_cpu(ngx_uint_t outcome)
{
    if (ngx_http_chat_metrics) {
        (void) ngx_atomic_fetch_add(&ngx_http_chat_metrics->cpu[outcome], 1);
    }
}


/* wait: how long the task that starts now waited, or NGX_TIMER_INFINITE */

void
ngx_http_chat_metrics_cpu_queue(ngx_int_t delta, ngx_msec_t wait)
{
    if (ngx_http_chat_metrics == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&ngx_http_chat_metrics->cpu_queued, delta);

    if (wait != NGX_TIMER_INFINITE) {
        ngx_http_chat_metrics->cpu_wait_ms = wait;
    }
}


void
ngx_http_chat_metrics_forgotten(void)
{
    if (ngx_http_chat_metrics) {
        (void) ngx_atomic_fetch_add(&ngx_http_chat_metrics->forgotten, 1);
    }
}


/*
 * Event streams per route, and the consumers per topic: one family of
 * series per row of the table, one series per route or topic.  A route
 * shows once it has had a stream; a value that has a "known" flag shows
 * only once it is known.
 */

typedef struct {
    const char                 *name;
    const char                 *type;
    const char                 *help;
    ngx_uint_t                  topic;      /* else a route */
    size_t                      value;      /* offset of an ngx_atomic_t */
    size_t                      known;      /* offset of one, or 0 */
    ngx_uint_t                  ms;         /* printed as seconds */
} ngx_http_chat_metrics_family_t;


#define ngx_http_chat_route_field(f)                                          \
    offsetof(ngx_http_chat_metrics_route_t, f)
#define ngx_http_chat_topic_field(f)                                          \
    offsetof(ngx_http_chat_metrics_topic_t, f)


static ngx_http_chat_metrics_family_t  ngx_http_chat_metrics_families[] = {

    { "chat_sse_route_streams", "gauge", "Open event streams by route.", 0,
      ngx_http_chat_route_field(streams), 0, 0 },

    { "chat_sse_dropped_total", "counter",
      "Event streams cut off because their client read too slowly.", 0,
      ngx_http_chat_route_field(dropped), 0, 0 },

    { "chat_events_consumed_total", "counter",
      "Events processed and acknowledged, by topic.", 1,
      ngx_http_chat_topic_field(consumed), 0, 0 },

    { "chat_events_consumer_delay_seconds", "gauge",
      "Age of the latest event acknowledged, by topic.", 1,
      ngx_http_chat_topic_field(delay_ms), 0, 1 },

    { "chat_events_consumer_pending", "gauge",
      "Events delivered to the group and not acknowledged.", 1,
      ngx_http_chat_topic_field(pending), 0, 0 },

    { "chat_events_consumer_lag", "gauge",
      "Events in the topic not yet delivered to the group.", 1,
      ngx_http_chat_topic_field(lag), ngx_http_chat_topic_field(lag_known),
      0 }
};


static u_char *
ngx_http_chat_metrics_streams(u_char *p, u_char *last)
{
    u_char                          *slot, *name;
    ngx_uint_t                       i, k, n;
    ngx_atomic_t                     v;
    ngx_http_chat_metrics_route_t   *route;
    ngx_http_chat_metrics_family_t  *f;

    for (k = 0; k < sizeof(ngx_http_chat_metrics_families)
                    / sizeof(ngx_http_chat_metrics_family_t); k++)
    {
        f = &ngx_http_chat_metrics_families[k];

        p = ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s %s\n",
                         f->name, f->help, f->name, f->type);

        n = f->topic ? ngx_http_chat_metrics->ntopics
                     : ngx_http_chat_metrics->nroutes;

        for (i = 0; i < n; i++) {

            if (f->topic) {
                slot = (u_char *) &ngx_http_chat_metrics->topics[i];
                name = ngx_http_chat_metrics->topics[i].name;

            } else {
                route = &ngx_http_chat_metrics->routes[i];

                if (route->streams == 0 && route->dropped == 0) {
                    continue;
                }

                slot = (u_char *) route;
                name = route->path;
            }

            if (f->known && *(ngx_atomic_t *) (slot + f->known) == 0) {
                continue;
            }

            v = *(ngx_atomic_t *) (slot + f->value);

            p = ngx_slprintf(p, last, "%s{%s=\"%s\"} ", f->name,
                             f->topic ? "topic" : "route", name);

            p = f->ms ? ngx_slprintf(p, last, "%uA.%03uA\n",
                                     v / 1000, v % 1000)
                      : ngx_slprintf(p, last, "%A\n", (ngx_atomic_int_t) v);
        }
    }

    return p;
}


ngx_int_t
ngx_http_chat_metrics_handler(ngx_http_request_t *r)
{
    u_char                         *p, *last;
    size_t                          size;
    uint64_t                        cumulative;
    ngx_str_t                       out;
    ngx_uint_t                      i, j, n;
    const char                     *method;
    ngx_http_chat_metrics_route_t  *slot;

    static const char  *classes[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_chat_send_method_not_allowed(r, "GET");
    }

    if (ngx_http_chat_metrics == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    n = ngx_http_chat_metrics->nroutes;
    size = 4096 + n * (NGX_HTTP_CHAT_METRICS_BUCKETS + 10) * 200
           + NGX_HTTP_CHAT_METRICS_TOPICS * 4 * 128;

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out.data = p;
    last = p + size;

    p = ngx_http_chat_circuit_metrics(p, last);

    p = ngx_slprintf(p, last,
            "# HELP chat_sse_streams Open event streams.\n"
            "# TYPE chat_sse_streams gauge\n"
            "chat_sse_streams %uA\n"
            "# HELP chat_events_total Domain events sent to Redis Streams.\n"
            "# TYPE chat_events_total counter\n"
            "chat_events_total{result=\"published\"} %uA\n"
            "chat_events_total{result=\"failed\"} %uA\n"
            "# HELP chat_datastore_up Datastores as this worker sees them.\n"
            "# TYPE chat_datastore_up gauge\n"
            "chat_datastore_up{datastore=\"mysql\"} %d\n"
            "chat_datastore_up{datastore=\"redis\"} %d\n"
            "chat_datastore_up{datastore=\"mongo\"} %d\n"
            "# HELP chat_cpu_tasks_total CPU tasks (bcrypt) by outcome.\n"
            "# TYPE chat_cpu_tasks_total counter\n"
            "chat_cpu_tasks_total{outcome=\"done\"} %uA\n"
            "chat_cpu_tasks_total{outcome=\"cancelled\"} %uA\n"
            "chat_cpu_tasks_total{outcome=\"rejected\"} %uA\n"
            "# HELP chat_cpu_queue_length CPU tasks waiting for a thread.\n"
            "# TYPE chat_cpu_queue_length gauge\n"
            "chat_cpu_queue_length %A\n"
            "# HELP chat_cpu_queue_wait_seconds "
            "How long the latest CPU task waited to start.\n"
            "# TYPE chat_cpu_queue_wait_seconds gauge\n"
            "chat_cpu_queue_wait_seconds %uA.%03uA\n"
            "# HELP chat_background_failures_total "
            "Fire-and-forget commands and statements that failed.\n"
            "# TYPE chat_background_failures_total counter\n"
            "chat_background_failures_total %uA\n",
            ngx_http_chat_metrics->streams,
            ngx_http_chat_metrics->events_published,
            ngx_http_chat_metrics->events_failed,
            ngx_http_chat_mysql_state() == NGX_HTTP_CHAT_UP,
            ngx_http_chat_redis_state() == NGX_HTTP_CHAT_UP,
            ngx_http_chat_mongo_state() == NGX_HTTP_CHAT_UP,
            ngx_http_chat_metrics->cpu[NGX_HTTP_CHAT_CPU_DONE],
            ngx_http_chat_metrics->cpu[NGX_HTTP_CHAT_CPU_CANCELLED],
            ngx_http_chat_metrics->cpu[NGX_HTTP_CHAT_CPU_REJECTED],
            (ngx_atomic_int_t) ngx_http_chat_metrics->cpu_queued,
            ngx_http_chat_metrics->cpu_wait_ms / 1000,
            ngx_http_chat_metrics->cpu_wait_ms % 1000,
            ngx_http_chat_metrics->forgotten);

    p = ngx_http_chat_metrics_streams(p, last);

    p = ngx_slprintf(p, last,
            "# HELP chat_http_requests_total Requests by route and status.\n"
            "# TYPE chat_http_requests_total counter\n");

    for (i = 0; i < n; i++) {
        slot = &ngx_http_chat_metrics->routes[i];
        method = ngx_http_chat_method_name(slot->method);

        for (j = 0; j < 5; j++) {
            if (slot->status[j]) {
                p = ngx_slprintf(p, last,
                        "chat_http_requests_total{method=\"%s\","
                        "route=\"%s\",status=\"%s\"} %uA\n",
                        method, slot->path, classes[j], slot->status[j]);
            }
        }
    }

    p = ngx_slprintf(p, last,
            "# HELP chat_http_request_duration_seconds Request latency.\n"
            "# TYPE chat_http_request_duration_seconds histogram\n");

    for (i = 0; i < n; i++) {
        slot = &ngx_http_chat_metrics->routes[i];
        method = ngx_http_chat_method_name(slot->method);
        cumulative = 0;

        for (j = 0; j < NGX_HTTP_CHAT_METRICS_BUCKETS; j++) {
            cumulative += slot->bucket[j];

            if (j < NGX_HTTP_CHAT_METRICS_BUCKETS - 1) {
                p = ngx_slprintf(p, last,
                        "chat_http_request_duration_seconds_bucket{"
                        "method=\"%s\",route=\"%s\",le=\"%ui.%03ui\"} %uL\n",
                        method, slot->path,
                        ngx_http_chat_metrics_le[j] / 1000,
                        ngx_http_chat_metrics_le[j] % 1000, cumulative);
            } else {
                p = ngx_slprintf(p, last,
                        "chat_http_request_duration_seconds_bucket{"
                        "method=\"%s\",route=\"%s\",le=\"+Inf\"} %uL\n",
                        method, slot->path, cumulative);
            }
        }

        p = ngx_slprintf(p, last,
                "chat_http_request_duration_seconds_sum{method=\"%s\","
                "route=\"%s\"} %uA.%03uA\n"
                "chat_http_request_duration_seconds_count{method=\"%s\","
                "route=\"%s\"} %uL\n",
                method, slot->path, slot->sum_ms / 1000, slot->sum_ms % 1000,
                method, slot->path, cumulative);
    }

    out.len = p - out.data;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = out.len;
    ngx_str_set(&r->headers_out.content_type, "text/plain; version=0.0.4");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    return ngx_http_chat_send_buffer(r, &out);
}
