
/*
 * Circuit breakers, one per datastore (ARCHITECTURE.md 3, API.md 12.1).
 *
 * After chat_circuit_failures operations in a row that found a datastore
 * unavailable or timed out, its circuit opens: operations that need it
 * are answered "unavailable" at once, so requests get their 503 (with
 * Retry-After) without each waiting for a timeout.  After
 * chat_circuit_cooldown one operation is let through as a probe
 * (half-open); its success closes the circuit, its failure opens it for
 * another cool-down.
 *
 * The state lives in shared memory, one breaker per datastore for all
 * workers: an outage is a fact about the datastore, not about a worker,
 * so what one worker learns spares the others their timeouts, one probe
 * goes out for the whole nginx, and /health/circuits and /metrics tell
 * the same from whichever worker answers.  Operations are admitted and
 * judged lock-free while the circuit is closed; state changes, rare,
 * take the zone's lock.  Times are wall-clock milliseconds, the one clock
 * every worker reads alike.
 */


#include "ngx_http_chat_core_module.h"


#define NGX_HTTP_CHAT_CIRCUIT_CLOSED     0
#define NGX_HTTP_CHAT_CIRCUIT_OPEN       1
#define NGX_HTTP_CHAT_CIRCUIT_HALF_OPEN  2


typedef struct {
    ngx_atomic_t                state;
    ngx_atomic_t                failures;   /* in a row, since a success */
    ngx_atomic_t                until;      /* open: when a probe may go */
    ngx_atomic_t                probe;      /* half-open: when the probe
                                               went, 0: none out */
    ngx_atomic_t                rejected;
    ngx_atomic_t                transitions[3];     /* by new state */
} ngx_http_chat_circuit_t;


typedef struct {
    ngx_http_chat_circuit_t     store[NGX_HTTP_CHAT_DATASTORES];
} ngx_http_chat_circuit_shm_t;


static ngx_int_t ngx_http_chat_circuit_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_msec_t ngx_http_chat_circuit_now(void);
static void ngx_http_chat_circuit_set(ngx_uint_t datastore,
    ngx_uint_t state, ngx_msec_t now);
static ngx_msec_t ngx_http_chat_circuit_left(ngx_http_chat_circuit_t *c,
    ngx_msec_t now);


static ngx_shm_zone_t               *ngx_http_chat_circuit_zone;
static ngx_http_chat_circuit_shm_t  *ngx_http_chat_circuits;

static ngx_uint_t                    ngx_http_chat_circuit_failures;
static ngx_msec_t                    ngx_http_chat_circuit_cooldown;


/* as /health/circuits (API.md 12.1) and chat_datastore_up name them */

static const char  *ngx_http_chat_circuit_names[] = {
    "mysql", "redis", "mongodb"
};

static const char  *ngx_http_chat_circuit_labels[] = {
    "mysql", "redis", "mongo"
};

static const char  *ngx_http_chat_circuit_states[] = {
    "closed", "open", "half_open"
};


ngx_int_t
ngx_http_chat_circuit_init(ngx_conf_t *cf)
{
    size_t     size;
    ngx_str_t  name;

    ngx_str_set(&name, "chat_circuits");

    /* the slab pool's own header takes a page more */
    size = ngx_align(sizeof(ngx_http_chat_circuit_shm_t), ngx_pagesize)
           + 8 * ngx_pagesize;

    ngx_http_chat_circuit_zone = ngx_shared_memory_add(cf, &name, size,
                                                &ngx_http_chat_core_module);
    if (ngx_http_chat_circuit_zone == NULL) {
        return NGX_ERROR;
    }

    ngx_http_chat_circuit_zone->init = ngx_http_chat_circuit_init_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_circuit_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        /* a reload keeps what the breakers know */
        zone->data = data;
        ngx_http_chat_circuits = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_http_chat_circuits = ngx_slab_calloc(shpool,
                                      sizeof(ngx_http_chat_circuit_shm_t));
    if (ngx_http_chat_circuits == NULL) {
        return NGX_ERROR;
    }

    zone->data = ngx_http_chat_circuits;

    return NGX_OK;
}


void
ngx_http_chat_circuit_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf)
{
    ngx_http_chat_circuit_failures = cmcf->circuit_failures;
    ngx_http_chat_circuit_cooldown = cmcf->circuit_cooldown;
}


const char *
ngx_http_chat_circuit_name(ngx_uint_t datastore)
{
    return ngx_http_chat_circuit_names[datastore];
}


static ngx_msec_t
ngx_http_chat_circuit_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (ngx_msec_t) tp->sec * 1000 + tp->msec;
}


/*
 * NGX_OK: the operation may go to the datastore, *probe set when it is
 * the half-open circuit's one probe; NGX_DECLINED: refused at once.
 */

ngx_int_t
ngx_http_chat_circuit_allow(ngx_uint_t datastore, ngx_uint_t *probe)
{
    ngx_msec_t                now;
    ngx_slab_pool_t          *shpool;
    ngx_http_chat_circuit_t  *c;

    *probe = 0;

    if (ngx_http_chat_circuits == NULL || ngx_http_chat_circuit_failures == 0)
    {
        return NGX_OK;
    }

    c = &ngx_http_chat_circuits->store[datastore];

    if (c->state == NGX_HTTP_CHAT_CIRCUIT_CLOSED) {
        return NGX_OK;
    }

    now = ngx_http_chat_circuit_now();

    /* what the cool-down or a probe out decides needs no lock */

    if ((c->state == NGX_HTTP_CHAT_CIRCUIT_OPEN
         && ngx_http_chat_circuit_left(c, now))
        || (c->state == NGX_HTTP_CHAT_CIRCUIT_HALF_OPEN && c->probe
            && now - c->probe < ngx_http_chat_circuit_cooldown))
    {
        goto refused;
    }

    shpool = (ngx_slab_pool_t *) ngx_http_chat_circuit_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    switch (c->state) {

    case NGX_HTTP_CHAT_CIRCUIT_CLOSED:
        ngx_shmtx_unlock(&shpool->mutex);
        return NGX_OK;

    case NGX_HTTP_CHAT_CIRCUIT_OPEN:
        if (ngx_http_chat_circuit_left(c, now)) {
            break;
        }

        ngx_http_chat_circuit_set(datastore,
                                  NGX_HTTP_CHAT_CIRCUIT_HALF_OPEN, now);

        /* fall through */

    default: /* NGX_HTTP_CHAT_CIRCUIT_HALF_OPEN */

        /*
         * a probe that has not reported within a cool-down (its worker
         * died, a thread pool is stuck behind a hung server) is replaced
         */

        if (c->probe && now - c->probe < ngx_http_chat_circuit_cooldown) {
            break;
        }

        c->probe = now;
        ngx_shmtx_unlock(&shpool->mutex);

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "chat: %s circuit half-open, a probe goes",
                       ngx_http_chat_circuit_names[datastore]);

        *probe = 1;
        return NGX_OK;
    }

    ngx_shmtx_unlock(&shpool->mutex);

refused:

    (void) ngx_atomic_fetch_add(&c->rejected, 1);

    return NGX_DECLINED;
}


void
ngx_http_chat_circuit_report(ngx_uint_t datastore, ngx_int_t verdict,
    ngx_uint_t probe)
{
    ngx_uint_t                n;
    ngx_slab_pool_t          *shpool;
    ngx_http_chat_circuit_t  *c;

    if (ngx_http_chat_circuits == NULL || ngx_http_chat_circuit_failures == 0)
    {
        return;
    }

    c = &ngx_http_chat_circuits->store[datastore];
    shpool = (ngx_slab_pool_t *) ngx_http_chat_circuit_zone->shm.addr;

    if (verdict == NGX_OK) {

        /* written only when it changes: every operation passes here */

        if (c->failures) {
            c->failures = 0;
        }

        if (!probe) {
            return;
        }

        ngx_shmtx_lock(&shpool->mutex);

        if (c->state == NGX_HTTP_CHAT_CIRCUIT_HALF_OPEN) {
            ngx_http_chat_circuit_set(datastore,
                                      NGX_HTTP_CHAT_CIRCUIT_CLOSED,
                                      ngx_http_chat_circuit_now());
        }

        ngx_shmtx_unlock(&shpool->mutex);
        return;
    }

    if (verdict != NGX_DECLINED) {

        /* a probe that learnt nothing: the next operation probes */

        if (probe) {
            ngx_shmtx_lock(&shpool->mutex);

            if (c->state == NGX_HTTP_CHAT_CIRCUIT_HALF_OPEN) {
                c->probe = 0;
            }

            ngx_shmtx_unlock(&shpool->mutex);
        }

        return;
    }

    n = ngx_atomic_fetch_add(&c->failures, 1) + 1;

    if (!probe
        && (n < ngx_http_chat_circuit_failures
            || c->state != NGX_HTTP_CHAT_CIRCUIT_CLOSED))
    {
        return;
    }

    ngx_shmtx_lock(&shpool->mutex);

    if (c->state == (probe ? NGX_HTTP_CHAT_CIRCUIT_HALF_OPEN
                           : NGX_HTTP_CHAT_CIRCUIT_CLOSED))
    {
        ngx_http_chat_circuit_set(datastore, NGX_HTTP_CHAT_CIRCUIT_OPEN,
                                  ngx_http_chat_circuit_now());
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/* under the zone's lock */

static void
ngx_http_chat_circuit_set(ngx_uint_t datastore, ngx_uint_t state,
    ngx_msec_t now)
{
    ngx_http_chat_circuit_t  *c;

    c = &ngx_http_chat_circuits->store[datastore];

    switch (state) {

    case NGX_HTTP_CHAT_CIRCUIT_OPEN:

        /* read without the lock once the state says "open" */

        c->until = now + ngx_http_chat_circuit_cooldown;
        c->probe = 0;
        ngx_memory_barrier();

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "chat: %s circuit open after %uA failures in a row, "
                      "its operations refused for %M ms",
                      ngx_http_chat_circuit_names[datastore], c->failures,
                      ngx_http_chat_circuit_cooldown);
        break;

    case NGX_HTTP_CHAT_CIRCUIT_CLOSED:
        c->failures = 0;
        c->probe = 0;

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "chat: %s circuit closed, the probe succeeded",
                      ngx_http_chat_circuit_names[datastore]);
        break;

    default: /* NGX_HTTP_CHAT_CIRCUIT_HALF_OPEN */
        c->probe = 0;
    }

    c->state = state;
    (void) ngx_atomic_fetch_add(&c->transitions[state], 1);
}


/* the rest of an open circuit's cool-down, 0 once over */

static ngx_msec_t
ngx_http_chat_circuit_left(ngx_http_chat_circuit_t *c, ngx_msec_t now)
{
    ngx_msec_t  until;

    until = c->until;

    if (now >= until) {
        return 0;
    }

    /* the clock was set back: never longer than a cool-down */

    return ngx_min(until - now, ngx_http_chat_circuit_cooldown);
}


/*
 * A 503 while a circuit is open says when to come back: the longest
 * cool-down left, at least a second (RFC 9110 counts whole seconds).
 */

ngx_int_t
ngx_http_chat_circuit_retry_after(ngx_http_request_t *r)
{
    u_char                   *p;
    ngx_uint_t                i, open;
    ngx_msec_t                now, left, most;
    ngx_http_chat_circuit_t  *c;

    if (ngx_http_chat_circuits == NULL) {
        return NGX_OK;
    }

    now = ngx_http_chat_circuit_now();
    open = 0;
    most = 0;

    for (i = 0; i < NGX_HTTP_CHAT_DATASTORES; i++) {
        c = &ngx_http_chat_circuits->store[i];

        if (c->state == NGX_HTTP_CHAT_CIRCUIT_CLOSED) {
            continue;
        }

        open = 1;

        if (c->state == NGX_HTTP_CHAT_CIRCUIT_OPEN) {
            left = ngx_http_chat_circuit_left(c, now);
            most = ngx_max(most, left);
        }
    }

    if (!open) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    *ngx_sprintf(p, "%M", ngx_max((most + 999) / 1000, 1)) = '\0';

    return ngx_http_chat_add_header(r, "Retry-After", (const char *) p);
}


u_char *
ngx_http_chat_circuit_metrics(u_char *p, u_char *last)
{
    ngx_uint_t                i, j;
    ngx_http_chat_circuit_t  *c;

    if (ngx_http_chat_circuits == NULL) {
        return p;
    }

    p = ngx_slprintf(p, last,
            "# HELP chat_circuit_state Circuit breaker of each datastore: "
            "0 closed, 1 open, 2 half-open.\n"
            "# TYPE chat_circuit_state gauge\n");

    for (i = 0; i < NGX_HTTP_CHAT_DATASTORES; i++) {
        p = ngx_slprintf(p, last,
                         "chat_circuit_state{datastore=\"%s\"} %uA\n",
                         ngx_http_chat_circuit_labels[i],
                         ngx_http_chat_circuits->store[i].state);
    }

    p = ngx_slprintf(p, last,
            "# HELP chat_circuit_transitions_total "
            "Circuit breaker state changes, by the state entered.\n"
            "# TYPE chat_circuit_transitions_total counter\n");

    for (i = 0; i < NGX_HTTP_CHAT_DATASTORES; i++) {
        c = &ngx_http_chat_circuits->store[i];

        for (j = 0; j < 3; j++) {
            p = ngx_slprintf(p, last,
                             "chat_circuit_transitions_total{datastore=\"%s\","
                             "to=\"%s\"} %uA\n",
                             ngx_http_chat_circuit_labels[i],
                             ngx_http_chat_circuit_states[j],
                             c->transitions[j]);
        }
    }

    p = ngx_slprintf(p, last,
            "# HELP chat_circuit_rejected_total "
            "Operations refused at once by an open circuit.\n"
            "# TYPE chat_circuit_rejected_total counter\n");

    for (i = 0; i < NGX_HTTP_CHAT_DATASTORES; i++) {
        p = ngx_slprintf(p, last,
                         "chat_circuit_rejected_total{datastore=\"%s\"} "
                         "%uA\n",
                         ngx_http_chat_circuit_labels[i],
                         ngx_http_chat_circuits->store[i].rejected);
    }

    return p;
}


/* /health/circuits (API.md 12.1) */

ngx_int_t
ngx_http_chat_circuits_handler(ngx_http_request_t *r)
{
    cJSON                    *json, *obj;
    ngx_uint_t                i, state;
    ngx_msec_t                now, left;
    ngx_http_chat_circuit_t  *c;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_chat_send_method_not_allowed(r, "GET");
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    now = ngx_http_chat_circuit_now();

    for (i = 0; i < NGX_HTTP_CHAT_DATASTORES; i++) {
        state = NGX_HTTP_CHAT_CIRCUIT_CLOSED;
        left = 0;
        c = NULL;

        if (ngx_http_chat_circuits) {
            c = &ngx_http_chat_circuits->store[i];
            state = c->state;

            if (state == NGX_HTTP_CHAT_CIRCUIT_OPEN) {
                left = ngx_http_chat_circuit_left(c, now);
            }
        }

        obj = cJSON_AddObjectToObject(json, ngx_http_chat_circuit_names[i]);

        /* retry_after in seconds with one decimal, as the original's */

        if (obj == NULL
            || cJSON_AddStringToObject(obj, "state",
                                       ngx_http_chat_circuit_states[state])
               == NULL
            || cJSON_AddNumberToObject(obj, "failure_count",
                                       c ? (double) c->failures : 0)
               == NULL
            || cJSON_AddNumberToObject(obj, "retry_after",
                                       (double) ((left + 99) / 100) / 10)
               == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}
