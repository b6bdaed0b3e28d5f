
/*
 * Work that cannot be done on the event loop runs in nginx thread pools:
 * mongo-c-driver has no asynchronous API and bcrypt is CPU-bound.
 *
 * A task is the worker's memory, not its owner's: an operation cancelled
 * while its task still waits in the pool's queue is withdrawn at once,
 * and the thread that reaches the task later only frees it.  The hand-off
 * is one atomic state: the thread moves it from "queued" to "running",
 * the event loop from "queued" to "withdrawn"; whoever wins decides.  A
 * running task is never interrupted; its owner's memory (the data) is
 * kept until it returns.
 *
 * CPU work is admitted, not queued without end (ARCHITECTURE.md 3): at
 * most chat_cpu_queue_size tasks of a worker wait, none longer than
 * chat_cpu_queue_timeout; the rest are refused with NGX_BUSY, which the
 * services answer with 503 and Retry-After.  CPU threads run at a lower
 * priority than the event loops, so a storm of logins never slows the
 * requests that need no CPU work.
 */


#include "ngx_http_chat_core_module.h"

#if (NGX_LINUX)
#include <sys/resource.h>
#include <sys/syscall.h>
#endif


#define NGX_HTTP_CHAT_TASK_QUEUED     0
#define NGX_HTTP_CHAT_TASK_RUNNING    1
#define NGX_HTTP_CHAT_TASK_WITHDRAWN  2

/*
 * nice value of CPU threads: the event loops win every contest.  In the
 * login storm of t/600 (2 cores, 4 bcrypt threads) it took the p99 of
 * /health from 8.0 to 4.9 ms at the same number of logins a second.
 */
#define NGX_HTTP_CHAT_CPU_NICE        10


typedef struct {
    ngx_atomic_t                    state;
    ngx_http_chat_op_t             *op;         /* NULL once withdrawn */
    ngx_http_chat_thread_pt         run;
    void                           *data;
    ngx_int_t                       rc;

    ngx_event_t                     timer;      /* CPU: start deadline */
    ngx_msec_t                      queued;     /* CPU: monotonic, ms */
    unsigned                        cpu:1;
} ngx_http_chat_task_t;


static ngx_int_t ngx_http_chat_task_post(ngx_http_chat_op_t *op,
    ngx_thread_pool_t *pool, ngx_http_chat_thread_pt run, void *data,
    ngx_uint_t cpu);
static void ngx_http_chat_task_handler(void *data, ngx_log_t *log);
static void ngx_http_chat_task_event(ngx_event_t *ev);
static void ngx_http_chat_task_cancel(ngx_http_chat_op_t *op);
static void ngx_http_chat_task_late(ngx_event_t *ev);
static ngx_uint_t ngx_http_chat_task_withdraw(ngx_http_chat_task_t *t,
    ngx_int_t rc);
static ngx_msec_t ngx_http_chat_task_now(void);


static ngx_thread_pool_t  *ngx_http_chat_cpu_pool;
static ngx_uint_t          ngx_http_chat_cpu_queue_size;
static ngx_msec_t          ngx_http_chat_cpu_queue_timeout;

/* this worker's CPU tasks not started yet; threads decrement it */
static ngx_atomic_t        ngx_http_chat_cpu_waiting;

static ngx_connection_t    ngx_http_chat_task_dummy;


ngx_int_t
ngx_http_chat_thread_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf)
{
    ngx_http_chat_cpu_pool = cmcf->cpu_pool;
    ngx_http_chat_cpu_queue_timeout = cmcf->cpu_queue_timeout;

    /* unset: the pool is meant to have about a thread per core, and as
     * many tasks again may wait */

    ngx_http_chat_cpu_queue_size = cmcf->cpu_queue_size;

    if (ngx_http_chat_cpu_queue_size == NGX_CONF_UNSET_UINT) {
        ngx_http_chat_cpu_queue_size = 2 * ngx_max(ngx_ncpu, 1);
    }

    ngx_http_chat_task_dummy.fd = (ngx_socket_t) -1;

    return NGX_OK;
}


ngx_int_t
ngx_http_chat_op_cpu(ngx_http_chat_op_t *op, ngx_http_chat_thread_pt run,
    void *data)
{
    if (ngx_http_chat_cpu_waiting >= ngx_http_chat_cpu_queue_size) {
        ngx_log_error(NGX_LOG_WARN, op->log, 0,
                      "chat: CPU queue full (%uA tasks waiting), refused",
                      ngx_http_chat_cpu_waiting);

        ngx_http_chat_metrics_cpu(NGX_HTTP_CHAT_CPU_REJECTED);

        ngx_http_chat_op_start(op);
        ngx_http_chat_op_post(op, NGX_BUSY);
        return NGX_OK;
    }

    return ngx_http_chat_task_post(op, ngx_http_chat_cpu_pool, run, data, 1);
}


ngx_int_t
ngx_http_chat_op_thread(ngx_http_chat_op_t *op, ngx_thread_pool_t *pool,
    ngx_http_chat_thread_pt run, void *data)
{
    return ngx_http_chat_task_post(op, pool, run, data, 0);
}


static ngx_int_t
ngx_http_chat_task_post(ngx_http_chat_op_t *op, ngx_thread_pool_t *pool,
    ngx_http_chat_thread_pt run, void *data, ngx_uint_t cpu)
{
    ngx_thread_task_t     *task;
    ngx_http_chat_task_t  *t;

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_http_chat_task_t), op->log);
    if (task == NULL) {
        return NGX_ERROR;
    }

    t = (ngx_http_chat_task_t *) (task + 1);

    t->state = NGX_HTTP_CHAT_TASK_QUEUED;
    t->op = op;
    t->run = run;
    t->data = data;
    t->rc = NGX_DECLINED;
    t->cpu = cpu;

    task->ctx = t;
    task->handler = ngx_http_chat_task_handler;
    task->event.handler = ngx_http_chat_task_event;
    task->event.data = task;
    task->event.log = ngx_cycle->log;

    ngx_http_chat_op_start(op);

    if (pool == NULL || ngx_thread_task_post(pool, task) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, op->log, 0,
                      "chat: thread task could not be queued");
        ngx_free(task);
        ngx_http_chat_op_post(op, NGX_DECLINED);
        return NGX_OK;
    }

    op->state = t;
    op->cancel = ngx_http_chat_task_cancel;

    if (cpu) {
        (void) ngx_atomic_fetch_add(&ngx_http_chat_cpu_waiting, 1);

        t->queued = ngx_http_chat_task_now();
        ngx_http_chat_metrics_cpu_queue(1, NGX_TIMER_INFINITE);

        if (ngx_http_chat_cpu_queue_timeout) {
            t->timer.handler = ngx_http_chat_task_late;
            t->timer.data = task;
            t->timer.log = op->log;
            ngx_add_timer(&t->timer, ngx_http_chat_cpu_queue_timeout);
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat op %p: thread task %p queued", op, task);

    return NGX_OK;
}


/* in a pool thread */

static void
ngx_http_chat_task_handler(void *data, ngx_log_t *log)
{
    ngx_http_chat_task_t *t = data;

#if (NGX_LINUX)
    static __thread ngx_uint_t  niced;
#endif

    if (!ngx_atomic_cmp_set(&t->state, NGX_HTTP_CHAT_TASK_QUEUED,
                            NGX_HTTP_CHAT_TASK_RUNNING))
    {
        return;     /* withdrawn: the data may be gone */
    }

    if (t->cpu) {
        (void) ngx_atomic_fetch_add(&ngx_http_chat_cpu_waiting, -1);
        ngx_http_chat_metrics_cpu_queue(-1,
                                        ngx_http_chat_task_now() - t->queued);

#if (NGX_LINUX)
        if (!niced) {
            (void) setpriority(PRIO_PROCESS, (id_t) syscall(SYS_gettid),
                               NGX_HTTP_CHAT_CPU_NICE);
            niced = 1;
        }
#endif
    }

    t->rc = t->run(t->data);
}


static void
ngx_http_chat_task_event(ngx_event_t *ev)
{
    ngx_thread_task_t     *task;
    ngx_http_chat_op_t    *op;
    ngx_http_chat_task_t  *t;

    task = ev->data;
    t = task->ctx;
    op = t->op;

    if (t->timer.timer_set) {
        ngx_del_timer(&t->timer);
    }

    if (op) {
        if (t->cpu) {
            ngx_http_chat_metrics_cpu(NGX_HTTP_CHAT_CPU_DONE);
        }

        ngx_http_chat_op_done(op, t->rc);
    }

    ngx_free(task);
}


static void
ngx_http_chat_task_cancel(ngx_http_chat_op_t *op)
{
    ngx_http_chat_task_t  *t;

    t = op->state;

    if (ngx_http_chat_task_withdraw(t, NGX_ABORT) && t->cpu) {
        ngx_http_chat_metrics_cpu(NGX_HTTP_CHAT_CPU_CANCELLED);
    }
}


/* a CPU task that did not start in time is refused: 503, not a wait */

static void
ngx_http_chat_task_late(ngx_event_t *ev)
{
    ngx_thread_task_t     *task;
    ngx_http_chat_task_t  *t;

    task = ev->data;
    t = task->ctx;

    if (ngx_http_chat_task_withdraw(t, NGX_BUSY)) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "chat: CPU task not started within %M ms, refused",
                      ngx_http_chat_cpu_queue_timeout);

        ngx_http_chat_metrics_cpu(NGX_HTTP_CHAT_CPU_REJECTED);
    }
}


static ngx_uint_t
ngx_http_chat_task_withdraw(ngx_http_chat_task_t *t, ngx_int_t rc)
{
    ngx_http_chat_op_t  *op;

    if (t->op == NULL
        || !ngx_atomic_cmp_set(&t->state, NGX_HTTP_CHAT_TASK_QUEUED,
                               NGX_HTTP_CHAT_TASK_WITHDRAWN))
    {
        return 0;
    }

    op = t->op;
    t->op = NULL;

    if (t->timer.timer_set) {
        ngx_del_timer(&t->timer);
    }

    if (t->cpu) {
        (void) ngx_atomic_fetch_add(&ngx_http_chat_cpu_waiting, -1);
        ngx_http_chat_metrics_cpu_queue(-1, NGX_TIMER_INFINITE);
    }

    ngx_http_chat_op_post(op, rc);

    return 1;
}


static ngx_msec_t
ngx_http_chat_task_now(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (ngx_msec_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
