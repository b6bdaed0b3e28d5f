
/*
 * Datastore operations independent of requests (ARCHITECTURE.md 3).
 *
 * An operation is started by one call per datastore (ngx_http_chat_op_sql,
 * _redis, _mongo, _cpu, _thread) and ends by running its handler once, on
 * the event loop.  Whoever owns it (a request wrapper, the notification
 * consumer, the presence monitor, a fan-in) keeps its continuation in the
 * handler and data, never in a slot shared with other steps.
 *
 * While any operation is in flight, a timer that cannot be cancelled is
 * armed: an exiting worker (reload, graceful stop) waits for operations
 * to end, so a request whose message is stored still gets its answer.
 *
 * Each datastore admits an operation through its circuit breaker
 * (ngx_http_chat_circuit.c) and the outcome is reported to it here, when
 * the operation completes: every caller of the core gets the breakers
 * without knowing of them.
 */


#include "ngx_http_chat_core_module.h"


#define NGX_HTTP_CHAT_OP_GUARD  1000


static void ngx_http_chat_op_event(ngx_event_t *ev);
static void ngx_http_chat_op_judge(ngx_http_chat_op_t *op, ngx_int_t rc);
static void ngx_http_chat_op_guard(ngx_event_t *ev);
static void ngx_http_chat_op_member_done(ngx_http_chat_op_t *op);


ngx_uint_t                ngx_http_chat_ops_active;

static ngx_event_t        ngx_http_chat_op_guard_timer;
static ngx_connection_t   ngx_http_chat_op_dummy;


/* called by each datastore when it takes an operation */

void
ngx_http_chat_op_start(ngx_http_chat_op_t *op)
{
    ngx_event_t  *ev;

    op->rc = NGX_DECLINED;
    op->reply = NULL;
    op->cancel = NULL;
    op->state = NULL;
    op->cancelled = 0;
    op->active = 1;

    ngx_memzero(&op->event, sizeof(ngx_event_t));
    op->event.handler = ngx_http_chat_op_event;
    op->event.data = op;
    op->event.log = op->log;

    ngx_http_chat_ops_active++;

    ev = &ngx_http_chat_op_guard_timer;

    if (!ev->timer_set) {
        ngx_http_chat_op_dummy.fd = (ngx_socket_t) -1;

        ev->handler = ngx_http_chat_op_guard;
        ev->data = &ngx_http_chat_op_dummy;
        ev->log = ngx_cycle->log;
        ev->cancelable = 0;

        ngx_add_timer(ev, NGX_HTTP_CHAT_OP_GUARD);
    }
}


/* completes later, from the posted events: never on the caller's stack */

void
ngx_http_chat_op_post(ngx_http_chat_op_t *op, ngx_int_t rc)
{
    op->rc = rc;
    op->cancel = NULL;

    ngx_post_event(&op->event, &ngx_posted_events);
}


void
ngx_http_chat_op_fail(ngx_http_chat_op_t *op)
{
    if (!op->active) {
        ngx_http_chat_op_start(op);
    }

    /* never sent: nothing for a breaker to learn */
    op->unjudged = 1;

    ngx_http_chat_op_post(op, NGX_ERROR);
}


ngx_int_t
ngx_http_chat_op_admit(ngx_http_chat_op_t *op, ngx_uint_t datastore)
{
    ngx_uint_t  probe;

    if (ngx_http_chat_circuit_allow(datastore, &probe) != NGX_OK) {

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->log, 0,
                       "chat op %p: %s circuit open, refused", op,
                       ngx_http_chat_circuit_name(datastore));

        if (!op->active) {
            ngx_http_chat_op_start(op);
        }

        ngx_http_chat_op_post(op, NGX_DECLINED);
        return NGX_DECLINED;
    }

    op->circuit = datastore + 1;
    op->probe = probe;
    op->unjudged = 0;

    return NGX_OK;
}


void
ngx_http_chat_op_unjudge(ngx_http_chat_op_t *op)
{
    op->unjudged = 1;
}


static void
ngx_http_chat_op_event(ngx_event_t *ev)
{
    ngx_http_chat_op_t  *op;

    op = ev->data;

    ngx_http_chat_op_done(op, op->rc);
}


void
ngx_http_chat_op_done(ngx_http_chat_op_t *op, ngx_int_t rc)
{
    if (!op->active) {
        ngx_log_error(NGX_LOG_ALERT, op->log, 0,
                      "chat: operation completed twice");
        return;
    }

    op->active = 0;
    op->cancel = NULL;

    if (op->event.posted) {
        ngx_delete_posted_event(&op->event);
    }

    if (op->circuit) {
        ngx_http_chat_op_judge(op, rc);
    }

    /* a reply that came all the same stays readable: what the owner took
     * may need giving back (a sequence number, say) */

    if (op->cancelled) {
        rc = NGX_ABORT;
    }

    op->rc = rc;

    ngx_http_chat_ops_active--;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat op %p: done rc:%i", op, rc);

    op->handler(op);
}


/*
 * The outcome as the breaker sees it, before a cancellation hides it: any
 * answer, a refusal included, shows the datastore alive; "unavailable"
 * of an operation withdrawn before it ran, or ended by our own limits,
 * says nothing of it.
 */

static void
ngx_http_chat_op_judge(ngx_http_chat_op_t *op, ngx_int_t rc)
{
    ngx_int_t  verdict;

    if (op->unjudged) {
        verdict = NGX_ABORT;

    } else if (rc == NGX_OK || rc == NGX_ERROR) {
        verdict = NGX_OK;

    } else if (rc == NGX_DECLINED && !op->cancelled) {
        verdict = NGX_DECLINED;

    } else {
        verdict = NGX_ABORT;
    }

    ngx_http_chat_circuit_report(op->circuit - 1, verdict, op->probe);

    op->circuit = 0;
    op->probe = 0;
    op->unjudged = 0;
}


void
ngx_http_chat_op_cancel(ngx_http_chat_op_t *op)
{
    if (!op->active || op->cancelled) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat op %p: cancel", op);

    op->cancelled = 1;

    /* what has not started yet is withdrawn at once */

    if (op->cancel) {
        op->cancel(op);
    }
}


/* every operation of an owner's list (linked through op->queue) */

void
ngx_http_chat_op_cancel_all(ngx_queue_t *ops)
{
    ngx_queue_t  *q, *next;

    /* cancelling completes nothing on the spot (completions are posted),
     * so no operation leaves the list while it is walked */

    for (q = ngx_queue_head(ops); q != ngx_queue_sentinel(ops); q = next) {
        next = ngx_queue_next(q);
        ngx_http_chat_op_cancel(ngx_queue_data(q, ngx_http_chat_op_t, queue));
    }
}


static void
ngx_http_chat_op_guard(ngx_event_t *ev)
{
    if (ngx_http_chat_ops_active) {
        ngx_add_timer(ev, NGX_HTTP_CHAT_OP_GUARD);
    }
}


/*
 * Fan-in.  "all" is an operation like any other: its owner fills pool,
 * log, handler and data, takes members, starts each of them with the
 * datastore call it needs, then calls ngx_http_chat_op_wait(all); once a
 * member is started, nothing may come between it and wait().  The
 * member's own handler, if any, runs at its completion (a Redis reply is
 * valid there only); all's handler runs after the last member's, with
 * rc NGX_OK, or the first member's failure.  Cancelling all cancels every
 * member.
 */

typedef struct {
    ngx_queue_t                 members;
    ngx_uint_t                  pending;    /* members, plus one until
                                               wait() */
    ngx_int_t                   rc;
} ngx_http_chat_op_all_t;


typedef struct {
    ngx_http_chat_op_t          op;         /* first: the member */
    ngx_http_chat_op_t         *all;
    ngx_http_chat_op_pt         handler;
    void                       *data;
} ngx_http_chat_op_member_t;


static void ngx_http_chat_op_all_cancel(ngx_http_chat_op_t *all);


ngx_http_chat_op_t *
ngx_http_chat_op_member(ngx_http_chat_op_t *all, ngx_http_chat_op_pt handler,
    void *data)
{
    ngx_http_chat_op_all_t     *a;
    ngx_http_chat_op_member_t  *m;

    a = all->state;

    if (a == NULL) {
        a = ngx_pcalloc(all->pool, sizeof(ngx_http_chat_op_all_t));
        if (a == NULL) {
            return NULL;
        }

        ngx_queue_init(&a->members);
        a->pending = 1;
        a->rc = NGX_OK;

        all->state = a;
    }

    m = ngx_pcalloc(all->pool, sizeof(ngx_http_chat_op_member_t));
    if (m == NULL) {
        return NULL;
    }

    m->all = all;
    m->handler = handler;
    m->data = data;

    m->op.pool = all->pool;
    m->op.log = all->log;
    m->op.handler = ngx_http_chat_op_member_done;
    m->op.data = data;

    ngx_queue_insert_tail(&a->members, &m->op.queue);
    a->pending++;

    return &m->op;
}


void
ngx_http_chat_op_wait(ngx_http_chat_op_t *all)
{
    ngx_http_chat_op_all_t  *a;

    a = all->state;

    /* "all" starts only now: its members complete from posted events, so
     * none can have completed yet */

    ngx_http_chat_op_start(all);

    if (a == NULL) {
        ngx_http_chat_op_post(all, NGX_OK);
        return;
    }

    all->state = a;
    all->cancel = ngx_http_chat_op_all_cancel;

    if (--a->pending == 0) {
        ngx_http_chat_op_post(all, a->rc);
    }
}


static void
ngx_http_chat_op_member_done(ngx_http_chat_op_t *op)
{
    ngx_http_chat_op_t         *all;
    ngx_http_chat_op_all_t     *a;
    ngx_http_chat_op_member_t  *m;

    m = (ngx_http_chat_op_member_t *) op;
    all = m->all;
    a = all->state;

    ngx_queue_remove(&op->queue);

    if (m->handler) {
        m->handler(op);
    }

    if (op->rc != NGX_OK && a->rc == NGX_OK) {
        a->rc = op->rc;
    }

    if (--a->pending == 0) {
        ngx_http_chat_op_post(all, a->rc);
    }
}


static void
ngx_http_chat_op_all_cancel(ngx_http_chat_op_t *all)
{
    ngx_http_chat_op_all_t  *a;

    a = all->state;

    /* "all" completes after its members */

    ngx_http_chat_op_cancel_all(&a->members);
}
