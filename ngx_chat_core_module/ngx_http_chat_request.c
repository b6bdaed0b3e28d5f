
/*
 * Request plumbing for the service modules: route matching, 404/405 in
 * JSON, body reading and JSON parsing, authentication, and the request
 * wrappers of datastore operations.
 *
 * The order of checks follows the original (API.md 2.4): a body that is
 * not JSON is a 422 before authentication, then 401, then the handler's
 * own validation.
 */


#include "ngx_http_chat_core_module.h"


#define NGX_HTTP_CHAT_OP_SQL     0
#define NGX_HTTP_CHAT_OP_REDIS   1
#define NGX_HTTP_CHAT_OP_THREAD  2
#define NGX_HTTP_CHAT_OP_CPU     3
#define NGX_HTTP_CHAT_OP_ALL     4


/* a request's operation: the continuation travels with it */

typedef struct {
    ngx_http_chat_op_t              op;         /* first */
    ngx_http_request_t             *request;
    ngx_uint_t                      kind;

    union {
        ngx_http_chat_sql_pt        sql;
        ngx_http_chat_redis_pt      redis;
        ngx_http_chat_thread_done_pt  thread;
        ngx_http_chat_all_pt        all;
    } handler;

    ngx_http_chat_handler_pt        next;
    void                           *data;
} ngx_http_chat_request_op_t;


/* a fire-and-forget statement: what it was, for the log */

typedef struct {
    ngx_http_chat_op_t              op;
    const char                     *what;
} ngx_http_chat_forget_t;


static ngx_int_t ngx_http_chat_route_uri(ngx_http_request_t *r,
    ngx_str_t *uri);
static ngx_http_chat_route_t *ngx_http_chat_match(ngx_http_request_t *r,
    ngx_str_t *uri, ngx_http_chat_route_t *routes, ngx_http_chat_ctx_t *ctx,
    u_char *allow, size_t *allow_len);
static ngx_int_t ngx_http_chat_match_path(ngx_str_t *pattern, ngx_str_t *uri,
    ngx_http_chat_ctx_t *ctx);
static void ngx_http_chat_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_chat_read_body(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t *rc);
static ngx_int_t ngx_http_chat_run(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_http_chat_request_op_t *ngx_http_chat_request_op(
    ngx_http_request_t *r, ngx_uint_t kind);
static ngx_int_t ngx_http_chat_request_park(ngx_http_chat_request_op_t *rop,
    ngx_int_t rc);
static void ngx_http_chat_request_op_done(ngx_http_chat_op_t *op);
static ngx_int_t ngx_http_chat_request_continue(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_op_t *op);
static void ngx_http_chat_request_cleanup(void *data);
static ngx_int_t ngx_http_chat_request_sql(ngx_http_request_t *r,
    const char *sql, ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_http_chat_sql_pt handler, ngx_http_chat_handler_pt next,
    ngx_uint_t prepared);
static void ngx_http_chat_forget(ngx_log_t *log, const char *what,
    const char *sql, ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_uint_t prepared);
static void ngx_http_chat_forgotten(ngx_http_chat_op_t *op);


ngx_http_chat_ctx_t *
ngx_http_chat_get_ctx(ngx_http_request_t *r)
{
    ngx_http_chat_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chat_core_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_queue_init(&ctx->ops);

        ngx_http_set_ctx(r, ctx, ngx_http_chat_core_module);
    }

    return ctx;
}


/*
 * A request waits for its operations parked: each holds a reference
 * (r->main->count) and keeps nginx from freeing the request ("blocked")
 * while a datastore may still use its memory.  A cleanup cancels the
 * operations when the request is terminated (the client closed the
 * connection, noticed by ngx_http_test_reading, or a send failed): what
 * has not started is withdrawn at once (a queued query, a bcrypt not yet
 * begun), what runs is left to finish and its result dropped, and the
 * continuation never runs.  The last operation to end lets nginx close
 * the request, logged as 499.  What runs is bounded by the datastores'
 * timeouts.
 */

void
ngx_http_chat_park(ngx_http_request_t *r)
{
    r->main->count++;
    r->main->blocked++;
}


void
ngx_http_chat_unpark(ngx_http_request_t *r)
{
    r->main->blocked--;
}


/* called from datastore events: finalize, then what the request posted */

void
ngx_http_chat_finish(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


ngx_int_t
ngx_http_chat_sql(ngx_http_request_t *r, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_http_chat_sql_pt handler)
{
    return ngx_http_chat_request_sql(r, sql, args, nargs, handler, NULL, 0);
}


ngx_int_t
ngx_http_chat_sql_then(ngx_http_request_t *r, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_http_chat_sql_pt handler, ngx_http_chat_handler_pt next)
{
    return ngx_http_chat_request_sql(r, sql, args, nargs, handler, next, 0);
}


ngx_int_t
ngx_http_chat_stmt(ngx_http_request_t *r, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_http_chat_sql_pt handler)
{
    return ngx_http_chat_request_sql(r, sql, args, nargs, handler, NULL, 1);
}


ngx_int_t
ngx_http_chat_stmt_then(ngx_http_request_t *r, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_http_chat_sql_pt handler, ngx_http_chat_handler_pt next)
{
    return ngx_http_chat_request_sql(r, sql, args, nargs, handler, next, 1);
}


static ngx_int_t
ngx_http_chat_request_sql(ngx_http_request_t *r, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_http_chat_sql_pt handler, ngx_http_chat_handler_pt next,
    ngx_uint_t prepared)
{
    ngx_int_t                    rc;
    ngx_http_chat_request_op_t  *rop;

    rop = ngx_http_chat_request_op(r, NGX_HTTP_CHAT_OP_SQL);
    if (rop == NULL) {
        return NGX_ERROR;
    }

    rop->handler.sql = handler;
    rop->next = next;

    rc = prepared ? ngx_http_chat_op_stmt(&rop->op, sql, args, nargs)
                  : ngx_http_chat_op_sql(&rop->op, sql, args, nargs);

    return ngx_http_chat_request_park(rop, rc);
}


ngx_int_t
ngx_http_chat_redis(ngx_http_request_t *r, ngx_http_chat_redis_pt handler,
    int argc, const char **argv, const size_t *argvlen)
{
    ngx_http_chat_request_op_t  *rop;

    rop = ngx_http_chat_request_op(r, NGX_HTTP_CHAT_OP_REDIS);
    if (rop == NULL) {
        return NGX_ERROR;
    }

    rop->handler.redis = handler;

    return ngx_http_chat_request_park(rop,
                       ngx_http_chat_op_redis(&rop->op, argc, argv, argvlen));
}


ngx_int_t
ngx_http_chat_thread(ngx_http_request_t *r, ngx_thread_pool_t *pool,
    ngx_http_chat_thread_pt run, void *data,
    ngx_http_chat_thread_done_pt done)
{
    ngx_http_chat_request_op_t  *rop;

    rop = ngx_http_chat_request_op(r, NGX_HTTP_CHAT_OP_THREAD);
    if (rop == NULL) {
        return NGX_ERROR;
    }

    rop->handler.thread = done;

    return ngx_http_chat_request_park(rop,
                       ngx_http_chat_op_thread(&rop->op, pool, run, data));
}


/* a task refused by admission control is answered here: 503 at once */

ngx_int_t
ngx_http_chat_cpu(ngx_http_request_t *r, ngx_http_chat_thread_pt run,
    void *data, ngx_http_chat_thread_done_pt done)
{
    ngx_http_chat_request_op_t  *rop;

    rop = ngx_http_chat_request_op(r, NGX_HTTP_CHAT_OP_CPU);
    if (rop == NULL) {
        return NGX_ERROR;
    }

    rop->handler.thread = done;

    return ngx_http_chat_request_park(rop,
                       ngx_http_chat_op_cpu(&rop->op, run, data));
}


ngx_int_t
ngx_http_chat_mongo(ngx_http_request_t *r, ngx_http_chat_mongo_pt run,
    void *data, ngx_http_chat_thread_done_pt done)
{
    ngx_http_chat_request_op_t  *rop;

    rop = ngx_http_chat_request_op(r, NGX_HTTP_CHAT_OP_THREAD);
    if (rop == NULL) {
        return NGX_ERROR;
    }

    rop->handler.thread = done;

    return ngx_http_chat_request_park(rop,
                       ngx_http_chat_op_mongo(&rop->op, run, data));
}


/*
 * A fan-in for a request: take members with ngx_http_chat_op_member(),
 * start each (or ngx_http_chat_op_fail() it), then return
 * ngx_http_chat_all_wait(); done() runs once, after the last member.
 */

ngx_http_chat_op_t *
ngx_http_chat_all(ngx_http_request_t *r, ngx_http_chat_all_pt done,
    void *data)
{
    ngx_http_chat_request_op_t  *rop;

    rop = ngx_http_chat_request_op(r, NGX_HTTP_CHAT_OP_ALL);
    if (rop == NULL) {
        return NULL;
    }

    rop->handler.all = done;
    rop->data = data;

    return &rop->op;
}


ngx_int_t
ngx_http_chat_all_wait(ngx_http_request_t *r, ngx_http_chat_op_t *all)
{
    ngx_http_chat_op_wait(all);

    return ngx_http_chat_request_park((ngx_http_chat_request_op_t *) all,
                                      NGX_OK);
}


/*
 * Fire and forget: a statement whose result no answer depends on.  It
 * runs on the core's pool like any other; a failure is logged and
 * counted, never reported to a client.
 */

void
ngx_http_chat_sql_forget(ngx_log_t *log, const char *what, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs)
{
    ngx_http_chat_forget(log, what, sql, args, nargs, 0);
}


void
ngx_http_chat_stmt_forget(ngx_log_t *log, const char *what, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs)
{
    ngx_http_chat_forget(log, what, sql, args, nargs, 1);
}


static void
ngx_http_chat_forget(ngx_log_t *log, const char *what, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs, ngx_uint_t prepared)
{
    ngx_int_t                rc;
    ngx_pool_t              *pool;
    ngx_http_chat_forget_t  *f;

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        ngx_http_chat_metrics_forgotten();
        return;
    }

    f = ngx_pcalloc(pool, sizeof(ngx_http_chat_forget_t));
    if (f == NULL) {
        goto failed;
    }

    f->what = what;
    f->op.pool = pool;
    f->op.log = ngx_cycle->log;
    f->op.handler = ngx_http_chat_forgotten;
    f->op.data = f;

    rc = prepared ? ngx_http_chat_op_stmt(&f->op, sql, args, nargs)
                  : ngx_http_chat_op_sql(&f->op, sql, args, nargs);

    if (rc == NGX_OK) {
        return;
    }

failed:

    ngx_log_error(NGX_LOG_ERR, log, 0, "chat: %s not started", what);
    ngx_http_chat_metrics_forgotten();
    ngx_destroy_pool(pool);
}


static void
ngx_http_chat_forgotten(ngx_http_chat_op_t *op)
{
    ngx_http_chat_forget_t  *f;

    f = op->data;

    if (op->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, op->log, 0,
                      "chat: %s failed (%s)", f->what,
                      op->rc == NGX_DECLINED ? "MariaDB unavailable"
                                             : "SQL error");
        ngx_http_chat_metrics_forgotten();
    }

    ngx_destroy_pool(op->pool);
}


static ngx_http_chat_request_op_t *
ngx_http_chat_request_op(ngx_http_request_t *r, ngx_uint_t kind)
{
    ngx_http_cleanup_t          *cln;
    ngx_http_chat_ctx_t         *ctx;
    ngx_http_chat_request_op_t  *rop;

    ctx = ngx_http_chat_get_ctx(r);
    if (ctx == NULL) {
        return NULL;
    }

    if (!ctx->watched) {
        cln = ngx_http_cleanup_add(r, 0);
        if (cln == NULL) {
            return NULL;
        }

        cln->handler = ngx_http_chat_request_cleanup;
        cln->data = r;

        ctx->watched = 1;

        /* a client that leaves while its request waits is noticed */

        if (r->read_event_handler == ngx_http_block_reading) {
            r->read_event_handler = ngx_http_test_reading;
        }
    }

    rop = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_request_op_t));
    if (rop == NULL) {
        return NULL;
    }

    rop->request = r;
    rop->kind = kind;

    rop->op.pool = r->pool;
    rop->op.log = r->connection->log;
    rop->op.handler = ngx_http_chat_request_op_done;
    rop->op.data = rop;

    return rop;
}


/* rc: what starting the operation returned */

static ngx_int_t
ngx_http_chat_request_park(ngx_http_chat_request_op_t *rop, ngx_int_t rc)
{
    ngx_http_request_t   *r;
    ngx_http_chat_ctx_t  *ctx;

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    r = rop->request;
    ctx = ngx_http_get_module_ctx(r, ngx_http_chat_core_module);

    ngx_queue_insert_tail(&ctx->ops, &rop->op.queue);

    ngx_http_chat_park(r);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "chat: request waits for op %p, kind %ui",
                   &rop->op, rop->kind);

    return NGX_DONE;
}


static void
ngx_http_chat_request_op_done(ngx_http_chat_op_t *op)
{
    ngx_http_request_t          *r;
    ngx_http_chat_ctx_t         *ctx;
    ngx_http_chat_request_op_t  *rop;

    rop = op->data;
    r = rop->request;
    ctx = ngx_http_get_module_ctx(r, ngx_http_chat_core_module);

    ngx_queue_remove(&op->queue);
    ngx_http_chat_unpark(r);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "chat: request op %p done rc:%i gone:%ui",
                   op, op->rc, (ngx_uint_t) ctx->gone);

    if (op->rc == NGX_ABORT) {

        if (!ctx->gone) {
            /* dropped by the request itself: only its reference ends */
            ngx_http_chat_finish(r, NGX_DONE);
            return;
        }

        /* nginx closes the request once nothing of ours runs for it */

        if (r->main->blocked == 0) {
            ngx_http_chat_finish(r, NGX_HTTP_CLIENT_CLOSED_REQUEST);
        }

        return;
    }

    if (ctx->gate && op != ctx->gate) {

        /* the token is not known good yet: the continuation waits */

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "chat: op %p held for the token's verdict", op);

        ctx->held = op;
        return;
    }

    ngx_http_chat_finish(r, ngx_http_chat_request_continue(r, ctx, op));
}


static ngx_int_t
ngx_http_chat_request_continue(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_op_t *op)
{
    ngx_http_chat_request_op_t  *rop;

    rop = op->data;

    switch (rop->kind) {

    case NGX_HTTP_CHAT_OP_SQL:
        op->sql.next = rop->next;
        return rop->handler.sql(r, ctx, &op->sql);

    case NGX_HTTP_CHAT_OP_REDIS:
        return rop->handler.redis(r, ctx,
                                  op->rc == NGX_DECLINED ? NULL : op->reply);

    case NGX_HTTP_CHAT_OP_CPU:
        if (op->rc == NGX_BUSY) {
            return ngx_http_chat_send_busy(r);
        }

        /* fall through */

    case NGX_HTTP_CHAT_OP_THREAD:
        return rop->handler.thread(r, ctx, op->rc);

    default: /* NGX_HTTP_CHAT_OP_ALL */
        return rop->handler.all(r, ctx, op->rc, rop->data);
    }
}


/*
 * The verdict on the token of an EARLY route.  Each operation holds a
 * reference to the request: the check's own ends here, the held step's
 * with its continuation.
 */

ngx_int_t
ngx_http_chat_gate_open(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_http_chat_op_t  *held;

    held = ctx->held;

    ctx->gate = NULL;
    ctx->held = NULL;

    if (ctx->answered) {
        ctx->answered = 0;
        return ngx_http_chat_send_buffer(r, &ctx->answer);
    }

    if (held == NULL) {
        return NGX_DONE;
    }

    ngx_http_finalize_request(r, NGX_DONE);

    return ngx_http_chat_request_continue(r, ctx, held);
}


void
ngx_http_chat_gate_shut(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_list_t  headers;

    ctx->gate = NULL;

    if (ctx->answered) {

        /* nothing of it went out: the verdict's answer replaces it */

        ctx->answered = 0;

        r->headers_out.status = 0;
        ngx_str_null(&r->headers_out.status_line);
        r->headers_out.content_type.len = 0;
        r->headers_out.content_type_len = 0;
        r->headers_out.content_type_lowcase = NULL;
        r->headers_out.content_length_n = -1;
        r->header_only = 0;

        /* its headers too; on an allocation failure they stay */

        if (ngx_list_init(&headers, r->pool, 20, sizeof(ngx_table_elt_t))
            == NGX_OK)
        {
            r->headers_out.headers = headers;
            r->headers_out.headers.last = &r->headers_out.headers.part;
        }

        return;
    }

    if (ctx->held) {
        ctx->held = NULL;
        ngx_http_finalize_request(r, NGX_DONE);
        return;
    }

    /* what the handler started ends without its continuation */

    ngx_http_chat_op_cancel_all(&ctx->ops);
}


/* the request is terminated: its operations end without continuations */

static void
ngx_http_chat_request_cleanup(void *data)
{
    ngx_http_request_t *r = data;

    ngx_http_chat_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chat_core_module);

    ctx->gone = 1;

    ngx_http_chat_op_cancel_all(&ctx->ops);
}


ngx_int_t
ngx_http_chat_dispatch(ngx_http_request_t *r, ngx_http_chat_route_t *routes)
{
    u_char                          allow[64];
    size_t                          allow_len;
    ngx_int_t                       rc;
    ngx_str_t                       uri;
    ngx_http_chat_ctx_t            *ctx;
    ngx_http_chat_route_t          *route;
    ngx_http_chat_core_main_conf_t  *cmcf;

    ctx = ngx_http_chat_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_chat_route_uri(r, &uri) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    route = ngx_http_chat_match(r, &uri, routes, ctx, allow, &allow_len);

    if (route == NULL) {

        rc = ngx_http_discard_request_body(r);

        if (rc != NGX_OK) {
            return rc;
        }

        if (allow_len) {
            allow[allow_len] = '\0';
            return ngx_http_chat_send_method_not_allowed(r,
                                                 (const char *) allow);
        }

        return ngx_http_chat_send_detail(r, NGX_HTTP_NOT_FOUND, "Not Found");
    }

    ctx->route = route;

    if (!(route->flags & (NGX_HTTP_CHAT_JSON|NGX_HTTP_CHAT_BODY))) {

        rc = ngx_http_discard_request_body(r);

        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_chat_run(r, ctx);
    }

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_core_module);

    if ((route->flags & NGX_HTTP_CHAT_JSON)
        && r->headers_in.content_length_n > (off_t) cmcf->json_max_size)
    {
        rc = ngx_http_discard_request_body(r);

        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_chat_send_detail(r,
                                         NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                         "Request body too large");
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_chat_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * The path the route tables know: the URI, or on a listener with
 * "chat_unprefixed on" a URI without "/api" (the paths the services' README
 * lists, API.md 0) with it put back.
 */

static ngx_int_t
ngx_http_chat_route_uri(ngx_http_request_t *r, ngx_str_t *uri)
{
    ngx_http_chat_core_loc_conf_t  *clcf;

    *uri = r->uri;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_chat_core_module);

    if (!clcf->unprefixed
        || (r->uri.len >= sizeof("/api/") - 1
            && ngx_strncmp(r->uri.data, "/api/", sizeof("/api/") - 1) == 0))
    {
        return NGX_OK;
    }

    uri->len = sizeof("/api") - 1 + r->uri.len;
    uri->data = ngx_pnalloc(r->pool, uri->len);
    if (uri->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(uri->data, "/api", sizeof("/api") - 1),
               r->uri.data, r->uri.len);

    return NGX_OK;
}


static ngx_http_chat_route_t *
ngx_http_chat_match(ngx_http_request_t *r, ngx_str_t *uri,
    ngx_http_chat_route_t *routes, ngx_http_chat_ctx_t *ctx, u_char *allow,
    size_t *allow_len)
{
    u_char                 *p, *last;
    ngx_uint_t              methods, m;
    ngx_http_chat_route_t  *route;

    static ngx_uint_t  order[] = { NGX_HTTP_DELETE, NGX_HTTP_GET,
                                   NGX_HTTP_PATCH, NGX_HTTP_POST,
                                   NGX_HTTP_PUT };

    methods = 0;

    for (route = routes; route->handler; route++) {

        if (ngx_http_chat_match_path(&route->path, uri, ctx) != NGX_OK) {
            continue;
        }

        if (route->method & r->method
            || (r->method == NGX_HTTP_HEAD && route->method & NGX_HTTP_GET))
        {
            return route;
        }

        /* the path exists with another method: remember it for 405 */

        methods |= route->method;
    }

    p = allow;
    last = allow + 63;

    for (m = 0; m < sizeof(order) / sizeof(order[0]); m++) {
        if (methods & order[m]) {
            p = ngx_slprintf(p, last, p == allow ? "%s" : ", %s",
                             ngx_http_chat_method_name(order[m]));
        }
    }

    *allow_len = p - allow;
    ctx->nparams = 0;

    return NULL;
}


const char *
ngx_http_chat_method_name(ngx_uint_t method)
{
    switch (method) {
    case NGX_HTTP_GET:
        return "GET";
    case NGX_HTTP_POST:
        return "POST";
    case NGX_HTTP_PUT:
        return "PUT";
    case NGX_HTTP_DELETE:
        return "DELETE";
    case NGX_HTTP_PATCH:
        return "PATCH";
    default:
        return "OTHER";
    }
}


/*
 * "/api/users/{user_id}/exists": "{...}" takes one non-empty path segment;
 * the name is for the reader, logs ($chat_route) and metrics
 */

static ngx_int_t
ngx_http_chat_match_path(ngx_str_t *pattern, ngx_str_t *uri,
    ngx_http_chat_ctx_t *ctx)
{
    u_char  *p, *pe, *u, *ue, *s;

    p = pattern->data;
    pe = p + pattern->len;
    u = uri->data;
    ue = u + uri->len;

    ctx->nparams = 0;

    while (p < pe && u < ue) {

        if (*p == '{') {
            s = u;

            while (u < ue && *u != '/') {
                u++;
            }

            if (u == s || ctx->nparams == NGX_HTTP_CHAT_MAX_PARAMS) {
                return NGX_DECLINED;
            }

            ctx->params[ctx->nparams].data = s;
            ctx->params[ctx->nparams].len = u - s;
            ctx->nparams++;

            p = ngx_strlchr(p, pe, '}');
            if (p == NULL) {
                return NGX_DECLINED;
            }

            p++;
            continue;
        }

        if (*p != *u) {
            return NGX_DECLINED;
        }

        p++;
        u++;
    }

    return (p == pe && u == ue) ? NGX_OK : NGX_DECLINED;
}


static void
ngx_http_chat_body_handler(ngx_http_request_t *r)
{
    ngx_int_t             rc;
    ngx_http_chat_ctx_t  *ctx;

    ctx = ngx_http_chat_get_ctx(r);

    if (ngx_http_chat_read_body(r, ctx, &rc) == NGX_OK) {
        rc = ngx_http_chat_run(r, ctx);
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * the body as one string in r->pool, JSON-parsed for JSON routes;
 * NGX_DONE when a response was made instead, *rc is then its result
 */

static ngx_int_t
ngx_http_chat_read_body(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_int_t *rc)
{
    u_char                          *p;
    size_t                           len;
    ssize_t                          n;
    cJSON                           *errors;
    ngx_buf_t                       *b;
    ngx_chain_t                     *cl, *bufs;
    ngx_http_chat_core_main_conf_t  *cmcf;

    bufs = r->request_body ? r->request_body->bufs : NULL;
    len = 0;

    for (cl = bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_core_module);

    if ((ctx->route->flags & NGX_HTTP_CHAT_JSON) && len > cmcf->json_max_size)
    {
        *rc = ngx_http_chat_send_detail(r,
                                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        "Request body too large");
        return NGX_DONE;
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DONE;
    }

    ctx->body.data = p;

    for (cl = bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        /* a body larger than client_body_buffer_size was spooled */

        n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                          b->file_pos);
        if (n != b->file_last - b->file_pos) {
            *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return NGX_DONE;
        }

        p += n;
    }

    ctx->body.len = p - ctx->body.data;
    *p = '\0';

    if (!(ctx->route->flags & NGX_HTTP_CHAT_JSON)) {
        return NGX_OK;
    }

    if (ctx->body.len == 0) {
        if (ctx->route->flags & NGX_HTTP_CHAT_JSON_OPTIONAL) {
            return NGX_OK;
        }

        errors = ngx_http_chat_invalid(r, NULL, "body", NULL, "missing",
                                       "Field required", NULL);
        *rc = ngx_http_chat_send_invalid(r, errors);
        return NGX_DONE;
    }

    ctx->json = ngx_http_chat_json_parse(r, ctx->body.data, ctx->body.len);

    if (ctx->json == NULL) {
        errors = ngx_http_chat_invalid(r, NULL, "body", NULL, "json_invalid",
                                       "JSON decode error",
                                       cJSON_CreateObject());
        *rc = ngx_http_chat_send_invalid(r, errors);
        return NGX_DONE;
    }

    if (!cJSON_IsObject(ctx->json)) {
        errors = ngx_http_chat_invalid(r, NULL, "body", NULL,
                                "model_attributes_type",
                                "Input should be a valid dictionary or "
                                "object to extract fields from",
                                cJSON_Duplicate(ctx->json, 1));
        *rc = ngx_http_chat_send_invalid(r, errors);
        return NGX_DONE;
    }

    return NGX_OK;
}


/* authentication if the route needs it, then the route's handler */

static ngx_int_t
ngx_http_chat_run(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    ngx_str_t                       token;
    ngx_uint_t                      flags;
    ngx_http_chat_core_loc_conf_t  *clcf;

    flags = ctx->route->flags;

    /* internal endpoints on a public listener still need a caller */

    if (flags & NGX_HTTP_CHAT_INTERNAL) {
        clcf = ngx_http_get_module_loc_conf(r, ngx_http_chat_core_module);

        if (!clcf->internal) {
            flags |= NGX_HTTP_CHAT_AUTH;
        }
    }

    if (!(flags & NGX_HTTP_CHAT_AUTH)) {
        return ctx->route->handler(r, ctx);
    }

    if (ngx_http_chat_bearer(r, &token) != NGX_OK) {
        return ngx_http_chat_send_unauthorized(r);
    }

    return ngx_http_chat_authenticate(r, ctx, &token, ctx->route->handler);
}


/* a form or query value: "+" is a space, then percent-decoding */

static ngx_int_t
ngx_http_chat_unescape(ngx_http_request_t *r, u_char *p, u_char *last,
    ngx_str_t *value)
{
    u_char  *dst, *src;
    size_t   n;

    dst = ngx_pnalloc(r->pool, last - p + 1);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    value->data = dst;

    while (p < last) {
        *dst++ = (*p == '+') ? ' ' : *p;
        p++;
    }

    n = dst - value->data;
    src = value->data;
    dst = value->data;

    ngx_unescape_uri(&dst, &src, n, 0);

    value->len = dst - value->data;
    *dst = '\0';

    return NGX_OK;
}


ngx_int_t
ngx_http_chat_query_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_str_t  raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK) {
        return NGX_DECLINED;
    }

    return ngx_http_chat_unescape(r, raw.data, raw.data + raw.len, value);
}


/* a field of an application/x-www-form-urlencoded body */

ngx_int_t
ngx_http_chat_form_arg(ngx_http_request_t *r, ngx_str_t *form,
    const char *name, ngx_str_t *value)
{
    u_char  *p, *last, *end, *eq;
    size_t   n;

    n = ngx_strlen(name);
    p = form->data;
    last = p + form->len;

    while (p < last) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(p, end, '=');

        if (eq && (size_t) (eq - p) == n && ngx_strncmp(p, name, n) == 0) {
            return ngx_http_chat_unescape(r, eq + 1, end, value);
        }

        p = end + 1;
    }

    return NGX_DECLINED;
}
