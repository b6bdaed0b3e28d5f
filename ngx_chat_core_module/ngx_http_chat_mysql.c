
/*
 * MariaDB client of the chat core: a per-worker pool of connections driven
 * by Connector/C's non-blocking API on nginx events, one query in flight per
 * connection, and a FIFO of operations waiting for a free connection.
 *
 * The library owns the sockets.  Each one is wrapped in an nginx connection
 * only to receive its events; the wrapper is released before the library
 * closes the socket, or, when the library closed it on its own, without
 * touching the descriptor again.
 *
 * A statement may run as a server-side prepared statement (binary
 * protocol): each connection prepares it on first use and keeps it in a
 * cache keyed by its text, so later executions send only the statement id
 * and the arguments, and the server neither parses nor plans it again.  The
 * cache dies with the connection: a reconnect prepares anew.
 */


#include "ngx_http_chat_core_module.h"

#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>


/* connection states */
#define NGX_HTTP_CHAT_MYSQL_CLOSED       0
#define NGX_HTTP_CHAT_MYSQL_CONNECTING   1
#define NGX_HTTP_CHAT_MYSQL_IDLE         2
#define NGX_HTTP_CHAT_MYSQL_QUERY        3
#define NGX_HTTP_CHAT_MYSQL_STORE        4
#define NGX_HTTP_CHAT_MYSQL_PREPARE      5
#define NGX_HTTP_CHAT_MYSQL_EXECUTE      6
#define NGX_HTTP_CHAT_MYSQL_STMT_STORE   7

#define NGX_HTTP_CHAT_MYSQL_BACKOFF_MIN  100
#define NGX_HTTP_CHAT_MYSQL_BACKOFF_MAX  5000

/*
 * bound on the steps of an operation being abandoned: on a socket that is
 * shut down every step fails at once, so this is never reached in practice
 */
#define NGX_HTTP_CHAT_MYSQL_ABORT_STEPS  16

/*
 * prepared statements kept per connection; the services have a few dozen
 * statement texts, a connection past the bound runs the rest as text
 */
#define NGX_HTTP_CHAT_MYSQL_STMTS        64

/*
 * bytes per column fetched in one step (a longer value takes a second):
 * room for a MYSQL_TIME too
 */
#define NGX_HTTP_CHAT_MYSQL_CELL         128

#define NGX_HTTP_CHAT_MYSQL_INIT_COMMAND                                      \
    "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', "       \
    "time_zone='+00:00'"


typedef struct ngx_http_chat_mysql_conn_s  ngx_http_chat_mysql_conn_t;


/* the MariaDB part of an operation, in the operation's pool */

typedef struct {
    ngx_http_chat_op_t            *base;

    u_char                        *sql;
    size_t                         sql_len;
    ngx_http_chat_sql_arg_t       *args;
    ngx_uint_t                     nargs;

    u_char                        *query;
    size_t                         query_len;

    ngx_http_chat_mysql_conn_t    *conn;        /* running on */
    ngx_queue_t                    queue;       /* waiting */

    ngx_event_t                    deadline;

    unsigned                       queued:1;
    unsigned                       prepared:1;  /* wants the binary path */
} ngx_http_chat_mysql_op_t;


/* a prepared statement of one connection */

typedef struct {
    MYSQL_STMT                    *stmt;
    u_char                        *sql;         /* ngx_alloc()ed */
    size_t                         sql_len;
} ngx_http_chat_mysql_stmt_t;


struct ngx_http_chat_mysql_conn_s {
    MYSQL                         *mysql;
    ngx_connection_t              *conn;        /* events of the socket */
    ngx_http_chat_mysql_op_t      *op;

    ngx_uint_t                     index;
    ngx_uint_t                     state;
    int                            wait;        /* MYSQL_WAIT_* pending */
    ngx_msec_t                     backoff;

    ngx_event_t                    timer;       /* connect timeout, retry */
    ngx_event_t                    lib_timer;   /* MYSQL_WAIT_TIMEOUT */

    /*
     * the cache: stmts[0 .. nstmts - 1] are prepared; stmts[nstmts]
     * holds the one being prepared, if any
     */
    ngx_http_chat_mysql_stmt_t    *stmts;
    ngx_uint_t                     nstmts;
    MYSQL_STMT                    *stmt;        /* in flight */

    unsigned                       failed:1;    /* since last connected */
};


/* where a prepared statement's rows are fetched to, once per worker */

typedef struct {
    MYSQL_BIND                    *binds;
    unsigned long                 *lengths;
    my_bool                       *nulls;
    u_char                        *buf;
    ngx_uint_t                     ncols;
} ngx_http_chat_mysql_fetch_t;


typedef struct {
    ngx_log_t                     *log;

    char                          *host;
    char                          *user;
    char                          *password;
    char                          *database;
    unsigned int                   port;

    ngx_msec_t                     connect_timeout;
    ngx_msec_t                     timeout;
    ngx_uint_t                     queue_size;

    ngx_http_chat_mysql_conn_t    *conns;
    ngx_uint_t                     nconns;

    ngx_queue_t                    queue;
    ngx_uint_t                     nqueued;

    ngx_http_chat_mysql_fetch_t    fetch;

    unsigned                       ever_up:1;
    unsigned                       logged:1;    /* trouble reported */
} ngx_http_chat_mysql_pool_t;


static void ngx_http_chat_mysql_free_pool(ngx_http_chat_mysql_pool_t *pool);
static char *ngx_http_chat_mysql_strdup(ngx_str_t *s, ngx_log_t *log);

static void ngx_http_chat_mysql_connect(ngx_http_chat_mysql_conn_t *mc);
static void ngx_http_chat_mysql_connected(ngx_http_chat_mysql_conn_t *mc,
    int status, MYSQL *ret);
static void ngx_http_chat_mysql_start(ngx_http_chat_mysql_conn_t *mc,
    ngx_http_chat_mysql_op_t *op);
static void ngx_http_chat_mysql_queried(ngx_http_chat_mysql_conn_t *mc,
    int status, int err);
static void ngx_http_chat_mysql_stored(ngx_http_chat_mysql_conn_t *mc,
    int status, MYSQL_RES *res);
static ngx_http_chat_mysql_stmt_t *ngx_http_chat_mysql_stmt(
    ngx_http_chat_mysql_conn_t *mc, ngx_http_chat_mysql_op_t *op);
static void ngx_http_chat_mysql_prepared(ngx_http_chat_mysql_conn_t *mc,
    int status, int err);
static void ngx_http_chat_mysql_execute(ngx_http_chat_mysql_conn_t *mc,
    ngx_http_chat_mysql_op_t *op, MYSQL_STMT *stmt);
static void ngx_http_chat_mysql_executed(ngx_http_chat_mysql_conn_t *mc,
    int status, int err);
static void ngx_http_chat_mysql_stmt_stored(ngx_http_chat_mysql_conn_t *mc,
    int status, int err);
static void ngx_http_chat_mysql_stmt_error(ngx_http_chat_mysql_conn_t *mc);
static void ngx_http_chat_mysql_free_stmts(ngx_http_chat_mysql_conn_t *mc,
    ngx_uint_t closed);
static void ngx_http_chat_mysql_error(ngx_http_chat_mysql_conn_t *mc,
    ngx_uint_t errnum, const char *err);
static void ngx_http_chat_mysql_finish(ngx_http_chat_mysql_conn_t *mc);
static void ngx_http_chat_mysql_fail(ngx_http_chat_mysql_conn_t *mc,
    ngx_uint_t backoff);
static void ngx_http_chat_mysql_retry(ngx_http_chat_mysql_conn_t *mc);
static void ngx_http_chat_mysql_close(ngx_http_chat_mysql_conn_t *mc,
    ngx_uint_t abort);

static ngx_int_t ngx_http_chat_mysql_attach(ngx_http_chat_mysql_conn_t *mc);
static void ngx_http_chat_mysql_release(ngx_http_chat_mysql_conn_t *mc,
    ngx_uint_t closed);
static ngx_uint_t ngx_http_chat_mysql_busy(ngx_http_chat_mysql_conn_t *mc,
    int status);
static ngx_int_t ngx_http_chat_mysql_wait(ngx_http_chat_mysql_conn_t *mc,
    int status);
static ngx_int_t ngx_http_chat_mysql_watch_idle(
    ngx_http_chat_mysql_conn_t *mc);
static void ngx_http_chat_mysql_resume(ngx_http_chat_mysql_conn_t *mc,
    int ready);

static void ngx_http_chat_mysql_read_handler(ngx_event_t *rev);
static void ngx_http_chat_mysql_write_handler(ngx_event_t *wev);
static void ngx_http_chat_mysql_timer_handler(ngx_event_t *ev);
static void ngx_http_chat_mysql_lib_timer_handler(ngx_event_t *ev);
static void ngx_http_chat_mysql_deadline_handler(ngx_event_t *ev);
static void ngx_http_chat_mysql_cancel(ngx_http_chat_op_t *base);

static ngx_int_t ngx_http_chat_mysql_build(ngx_http_chat_mysql_conn_t *mc,
    ngx_http_chat_mysql_op_t *op);
static ngx_int_t ngx_http_chat_mysql_copy(ngx_http_chat_mysql_op_t *op,
    MYSQL_RES *res);
static ngx_int_t ngx_http_chat_mysql_shape(ngx_http_chat_sql_res_t *sql,
    ngx_uint_t nrows, ngx_uint_t ncols);
static ngx_int_t ngx_http_chat_mysql_stmt_copy(ngx_http_chat_mysql_op_t *op,
    MYSQL_STMT *stmt);
static ngx_int_t ngx_http_chat_mysql_time(ngx_pool_t *pool, MYSQL_TIME *tm,
    MYSQL_FIELD *field, ngx_str_t *cell);
static ngx_int_t ngx_http_chat_mysql_fetch_size(ngx_uint_t ncols);
static ngx_int_t ngx_http_chat_mysql_run(ngx_http_chat_op_t *base,
    const char *sql, ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_uint_t prepared);
static void ngx_http_chat_mysql_complete(ngx_http_chat_mysql_op_t *op);
static void ngx_http_chat_mysql_dispatch(void);
static void ngx_http_chat_mysql_flush(void);
static ngx_http_chat_mysql_conn_t *ngx_http_chat_mysql_idle_conn(void);
static ngx_uint_t ngx_http_chat_mysql_available(void);
static ngx_uint_t ngx_http_chat_mysql_lost(ngx_uint_t errnum);


static ngx_http_chat_mysql_pool_t  *ngx_http_chat_mysql_pool;


ngx_int_t
ngx_http_chat_mysql_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf)
{
    ngx_uint_t                   i;
    ngx_http_chat_mysql_conn_t  *mc;
    ngx_http_chat_mysql_pool_t  *pool;

    if (ngx_http_chat_mysql_pool != NULL
        || cmcf == NULL
        || cmcf->mysql_host.len == 0)
    {
        return NGX_OK;
    }

    /* cache manager and loader processes run init_process too */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    if (mysql_library_init(0, NULL, NULL) != 0) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "chat mysql: mysql_library_init() failed");
        return NGX_ERROR;
    }

    pool = ngx_calloc(sizeof(ngx_http_chat_mysql_pool_t), cycle->log);
    if (pool == NULL) {
        goto failed;
    }

    pool->log = cycle->log;
    pool->port = (unsigned int) cmcf->mysql_port;
    pool->connect_timeout = cmcf->mysql_connect_timeout;
    pool->timeout = cmcf->mysql_timeout;
    pool->queue_size = cmcf->mysql_queue_size;
    pool->nconns = cmcf->mysql_pool_size;

    ngx_queue_init(&pool->queue);

    pool->host = ngx_http_chat_mysql_strdup(&cmcf->mysql_host, cycle->log);
    pool->user = ngx_http_chat_mysql_strdup(&cmcf->mysql_user, cycle->log);
    pool->password = ngx_http_chat_mysql_strdup(&cmcf->mysql_password,
                                                cycle->log);

    if (pool->host == NULL || pool->user == NULL || pool->password == NULL) {
        goto failed;
    }

    if (cmcf->mysql_database.len) {
        pool->database = ngx_http_chat_mysql_strdup(&cmcf->mysql_database,
                                                    cycle->log);
        if (pool->database == NULL) {
            goto failed;
        }
    }

    if (pool->nconns) {
        pool->conns = ngx_calloc(pool->nconns
                                 * sizeof(ngx_http_chat_mysql_conn_t),
                                 cycle->log);
        if (pool->conns == NULL) {
            goto failed;
        }
    }

    for (i = 0; i < pool->nconns; i++) {
        mc = &pool->conns[i];

        mc->index = i;

        mc->timer.handler = ngx_http_chat_mysql_timer_handler;
        mc->timer.data = mc;
        mc->timer.log = cycle->log;
        mc->timer.cancelable = 1;

        mc->lib_timer.handler = ngx_http_chat_mysql_lib_timer_handler;
        mc->lib_timer.data = mc;
        mc->lib_timer.log = cycle->log;
        mc->lib_timer.cancelable = 1;
    }

    ngx_http_chat_mysql_pool = pool;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                   "chat mysql: %ui connections to %s:%ud",
                   pool->nconns, pool->host, pool->port);

    for (i = 0; i < pool->nconns; i++) {
        ngx_http_chat_mysql_connect(&pool->conns[i]);
    }

    return NGX_OK;

failed:

    if (pool) {
        ngx_http_chat_mysql_free_pool(pool);
    }

    mysql_library_end();

    return NGX_ERROR;
}


void
ngx_http_chat_mysql_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                   i;
    ngx_queue_t                 *q;
    ngx_http_chat_mysql_op_t    *op;
    ngx_http_chat_mysql_conn_t  *mc;
    ngx_http_chat_mysql_pool_t  *pool;

    pool = ngx_http_chat_mysql_pool;

    if (pool == NULL) {
        return;
    }

    /*
     * requests still waiting are abandoned with the process; only their
     * timers, which point into our structures' neighbourhood, are removed
     */

    while (!ngx_queue_empty(&pool->queue)) {
        q = ngx_queue_head(&pool->queue);
        ngx_queue_remove(q);

        op = ngx_queue_data(q, ngx_http_chat_mysql_op_t, queue);
        op->queued = 0;

        if (op->deadline.timer_set) {
            ngx_del_timer(&op->deadline);
        }
    }

    for (i = 0; i < pool->nconns; i++) {
        mc = &pool->conns[i];

        op = mc->op;

        if (op) {
            mc->op = NULL;
            op->conn = NULL;

            if (op->deadline.timer_set) {
                ngx_del_timer(&op->deadline);
            }
        }

        ngx_http_chat_mysql_close(mc, mc->state != NGX_HTTP_CHAT_MYSQL_IDLE);
    }

    ngx_http_chat_mysql_pool = NULL;

    ngx_http_chat_mysql_free_pool(pool);

    mysql_library_end();
}


ngx_uint_t
ngx_http_chat_mysql_state(void)
{
    ngx_uint_t                   i, connecting;
    ngx_http_chat_mysql_conn_t  *mc;
    ngx_http_chat_mysql_pool_t  *pool;

    pool = ngx_http_chat_mysql_pool;

    if (pool == NULL) {
        return NGX_HTTP_CHAT_DOWN;
    }

    connecting = 0;

    for (i = 0; i < pool->nconns; i++) {
        mc = &pool->conns[i];

        switch (mc->state) {

        case NGX_HTTP_CHAT_MYSQL_IDLE:
        case NGX_HTTP_CHAT_MYSQL_QUERY:
        case NGX_HTTP_CHAT_MYSQL_STORE:
        case NGX_HTTP_CHAT_MYSQL_PREPARE:
        case NGX_HTTP_CHAT_MYSQL_EXECUTE:
        case NGX_HTTP_CHAT_MYSQL_STMT_STORE:
            return NGX_HTTP_CHAT_UP;

        case NGX_HTTP_CHAT_MYSQL_CONNECTING:
            if (!mc->failed) {
                connecting = 1;
            }
            break;
        }
    }

    if (connecting && !pool->ever_up) {
        return NGX_HTTP_CHAT_CONNECTING;
    }

    return NGX_HTTP_CHAT_DOWN;
}


ngx_int_t
ngx_http_chat_op_sql(ngx_http_chat_op_t *base, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs)
{
    return ngx_http_chat_mysql_run(base, sql, args, nargs, 0);
}


/*
 * The same statement as a prepared one.  The result is the same too: the
 * binary protocol's values are turned into the text the text protocol
 * gives (the library's conversion of integers, DECIMAL, strings, DATE,
 * TIME, DATETIME, TIMESTAMP), so a caller switches by the name alone.  Not
 * for FLOAT and DOUBLE columns, which the library prints its own way, nor
 * ZEROFILL ones.
 */

ngx_int_t
ngx_http_chat_op_stmt(ngx_http_chat_op_t *base, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs)
{
    return ngx_http_chat_mysql_run(base, sql, args, nargs, 1);
}


/* a power of two: a list of up to 128 values takes one of 8 texts */

ngx_uint_t
ngx_http_chat_sql_list_size(ngx_uint_t n)
{
    ngx_uint_t  m;

    for (m = 1; m < n; m <<= 1) { /* void */ }

    return m;
}


static ngx_int_t
ngx_http_chat_mysql_run(ngx_http_chat_op_t *base, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs, ngx_uint_t prepared)
{
    u_char                      *p;
    size_t                       len;
    ngx_uint_t                   i, n;
    ngx_http_chat_sql_arg_t     *a;
    ngx_http_chat_mysql_op_t    *op;
    ngx_http_chat_mysql_conn_t  *mc;
    ngx_http_chat_mysql_pool_t  *pool;

    len = ngx_strlen(sql);

    /* a prepared statement's count is the server's, checked on execution */

    if (!prepared) {
        n = 0;

        for (p = (u_char *) sql; *p; p++) {
            if (*p == '?') {
                n++;
            }
        }

        if (n != nargs) {
            ngx_log_error(NGX_LOG_ALERT, base->log, 0,
                          "chat mysql: %ui arguments for %ui placeholders "
                          "in \"%s\"", nargs, n, sql);
            return NGX_ERROR;
        }
    }

    op = ngx_pcalloc(base->pool, sizeof(ngx_http_chat_mysql_op_t));
    if (op == NULL) {
        return NGX_ERROR;
    }

    /* the caller's arguments may live on its stack: keep our own copy */

    if (nargs) {
        a = ngx_palloc(base->pool, nargs * sizeof(ngx_http_chat_sql_arg_t));
        if (a == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < nargs; i++) {
            a[i] = args[i];

            if (args[i].type != NGX_HTTP_CHAT_SQL_STR || args[i].str.len == 0)
            {
                continue;
            }

            a[i].str.data = ngx_pnalloc(base->pool, args[i].str.len);
            if (a[i].str.data == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(a[i].str.data, args[i].str.data, args[i].str.len);
        }

        op->args = a;
        op->nargs = nargs;
    }

    op->base = base;
    op->sql = (u_char *) sql;
    op->sql_len = len;
    op->prepared = prepared;

    op->deadline.handler = ngx_http_chat_mysql_deadline_handler;
    op->deadline.data = op;
    op->deadline.log = base->log;

    ngx_http_chat_op_start(base);

    /* whatever ends an operation without a reply means "unavailable" */

    ngx_memzero(&base->sql, sizeof(ngx_http_chat_sql_res_t));
    base->sql.rc = NGX_DECLINED;

    base->state = op;
    base->cancel = ngx_http_chat_mysql_cancel;

    pool = ngx_http_chat_mysql_pool;

    if (pool == NULL) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, base->log, 0,
                       "chat mysql: not configured in this process");
        ngx_http_chat_mysql_complete(op);
        return NGX_OK;
    }

    if (ngx_http_chat_op_admit(base, NGX_HTTP_CHAT_MYSQL) != NGX_OK) {
        return NGX_OK;
    }

    if (pool->timeout) {
        ngx_add_timer(&op->deadline, pool->timeout);
    }

    if (ngx_queue_empty(&pool->queue)) {
        mc = ngx_http_chat_mysql_idle_conn();

        if (mc) {
            ngx_http_chat_mysql_start(mc, op);
            return NGX_OK;
        }
    }

    if (!ngx_http_chat_mysql_available()) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, base->log, 0,
                       "chat mysql: no connection up, failing fast");
        ngx_http_chat_mysql_complete(op);
        return NGX_OK;
    }

    if (pool->nqueued >= pool->queue_size) {
        ngx_log_error(NGX_LOG_WARN, base->log, 0,
                      "chat mysql: all %ui connections busy and %ui "
                      "queries waiting", pool->nconns, pool->nqueued);

        /* our queue is full, not MariaDB down: no failure of its breaker */
        ngx_http_chat_op_unjudge(base);
        ngx_http_chat_mysql_complete(op);
        return NGX_OK;
    }

    ngx_queue_insert_tail(&pool->queue, &op->queue);
    op->queued = 1;
    pool->nqueued++;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, base->log, 0,
                   "chat mysql: query queued, %ui waiting", pool->nqueued);

    return NGX_OK;
}


/* a query still waiting for a connection is withdrawn; one running is
 * left to finish, its result is dropped */

static void
ngx_http_chat_mysql_cancel(ngx_http_chat_op_t *base)
{
    ngx_http_chat_mysql_op_t  *op;

    op = base->state;

    if (!op->queued) {
        return;
    }

    ngx_queue_remove(&op->queue);
    op->queued = 0;
    ngx_http_chat_mysql_pool->nqueued--;

    ngx_http_chat_mysql_complete(op);
}


static void
ngx_http_chat_mysql_free_pool(ngx_http_chat_mysql_pool_t *pool)
{
    if (pool->fetch.binds) {
        ngx_free(pool->fetch.binds);
    }

    if (pool->conns) {
        ngx_free(pool->conns);
    }

    if (pool->host) {
        ngx_free(pool->host);
    }

    if (pool->user) {
        ngx_free(pool->user);
    }

    if (pool->password) {
        ngx_free(pool->password);
    }

    if (pool->database) {
        ngx_free(pool->database);
    }

    ngx_free(pool);
}


static char *
ngx_http_chat_mysql_strdup(ngx_str_t *s, ngx_log_t *log)
{
    char  *p;

    p = ngx_alloc(s->len + 1, log);
    if (p == NULL) {
        return NULL;
    }

    if (s->len) {
        ngx_memcpy(p, s->data, s->len);
    }

    p[s->len] = '\0';

    return p;
}


static void
ngx_http_chat_mysql_connect(ngx_http_chat_mysql_conn_t *mc)
{
    int                          status;
    MYSQL                       *mysql, *ret;
    my_bool                      reconnect;
    unsigned int                 protocol, local_infile;
    ngx_http_chat_mysql_pool_t  *pool;

    pool = ngx_http_chat_mysql_pool;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "chat mysql: connection #%ui connecting", mc->index);

    mysql = mysql_init(NULL);
    if (mysql == NULL) {
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "chat mysql: mysql_init() failed");
        mc->failed = 1;
        ngx_http_chat_mysql_retry(mc);
        ngx_http_chat_mysql_flush();
        return;
    }

    reconnect = 0;
    protocol = MYSQL_PROTOCOL_TCP;
    local_infile = 0;

    if (mysql_options(mysql, MYSQL_OPT_NONBLOCK, 0) != 0
        || mysql_options(mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4") != 0
        || mysql_options(mysql, MYSQL_INIT_COMMAND,
                         NGX_HTTP_CHAT_MYSQL_INIT_COMMAND) != 0
        || mysql_options(mysql, MYSQL_OPT_RECONNECT, &reconnect) != 0
        || mysql_options(mysql, MYSQL_OPT_PROTOCOL, &protocol) != 0
        || mysql_options(mysql, MYSQL_OPT_LOCAL_INFILE, &local_infile) != 0)
    {
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "chat mysql: mysql_options() failed: %s",
                      mysql_error(mysql));

        /* not connected: no I/O */
        mysql_close(mysql);

        mc->failed = 1;
        ngx_http_chat_mysql_retry(mc);
        ngx_http_chat_mysql_flush();
        return;
    }

    mc->mysql = mysql;
    mc->state = NGX_HTTP_CHAT_MYSQL_CONNECTING;
    mc->wait = 0;

    if (pool->connect_timeout) {
        ngx_add_timer(&mc->timer, pool->connect_timeout);
    }

    ret = NULL;

    status = mysql_real_connect_start(&ret, mysql, pool->host, pool->user,
                                      pool->password, pool->database,
                                      pool->port, NULL, 0);

    ngx_http_chat_mysql_connected(mc, status, ret);
}


static void
ngx_http_chat_mysql_connected(ngx_http_chat_mysql_conn_t *mc, int status,
    MYSQL *ret)
{
    ngx_http_chat_mysql_pool_t  *pool;

    pool = ngx_http_chat_mysql_pool;

    if (status) {
        if (ngx_http_chat_mysql_wait(mc, status) != NGX_OK) {
            ngx_http_chat_mysql_fail(mc, 1);
        }

        return;
    }

    mc->wait = 0;

    if (ret == NULL) {
        if (!pool->logged) {
            ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                          "chat mysql: connect to %s:%ud failed: %s (%ud), "
                          "retrying in the background",
                          pool->host, pool->port, mysql_error(mc->mysql),
                          mysql_errno(mc->mysql));
            pool->logged = 1;

        } else {
            ngx_log_debug3(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                           "chat mysql: connection #%ui failed: %s (%ud)",
                           mc->index, mysql_error(mc->mysql),
                           mysql_errno(mc->mysql));
        }

        ngx_http_chat_mysql_fail(mc, 1);
        return;
    }

    if (mc->timer.timer_set) {
        ngx_del_timer(&mc->timer);
    }

    mc->state = NGX_HTTP_CHAT_MYSQL_IDLE;

    if (ngx_http_chat_mysql_watch_idle(mc) != NGX_OK) {
        ngx_http_chat_mysql_fail(mc, 1);
        return;
    }

    mc->failed = 0;
    mc->backoff = 0;
    pool->ever_up = 1;

    if (pool->logged) {
        ngx_log_error(NGX_LOG_INFO, pool->log, 0,
                      "chat mysql: connected to %s:%ud again",
                      pool->host, pool->port);
        pool->logged = 0;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "chat mysql: connection #%ui up, server %s",
                   mc->index, mysql_get_server_info(mc->mysql));

    ngx_http_chat_mysql_dispatch();
}


static void
ngx_http_chat_mysql_start(ngx_http_chat_mysql_conn_t *mc,
    ngx_http_chat_mysql_op_t *op)
{
    int                          status, err;
    ngx_http_chat_mysql_stmt_t  *ps;

    mc->op = op;
    op->conn = mc;

    if (op->prepared) {
        ps = ngx_http_chat_mysql_stmt(mc, op);

        if (ps && ps->stmt) {
            ngx_http_chat_mysql_execute(mc, op, ps->stmt);
            return;
        }

        if (ps) {
            ps->stmt = mysql_stmt_init(mc->mysql);

            if (ps->stmt == NULL) {
                ngx_log_error(NGX_LOG_ERR, op->base->log, 0,
                              "chat mysql: mysql_stmt_init() failed");
                goto text;
            }

            ngx_log_debug3(NGX_LOG_DEBUG_HTTP, op->base->log, 0,
                           "chat mysql: connection #%ui prepare \"%*s\"",
                           mc->index, op->sql_len, op->sql);

            mc->stmt = ps->stmt;
            mc->state = NGX_HTTP_CHAT_MYSQL_PREPARE;

            err = 0;

            status = mysql_stmt_prepare_start(&err, ps->stmt,
                                              (char *) op->sql,
                                              (unsigned long) op->sql_len);

            ngx_http_chat_mysql_prepared(mc, status, err);
            return;
        }

        /* the cache is full: this one runs as text */
    }

text:

    if (ngx_http_chat_mysql_build(mc, op) != NGX_OK) {
        mc->op = NULL;
        op->base->sql.rc = NGX_ERROR;
        ngx_http_chat_mysql_complete(op);
        return;
    }

    /* the template only: arguments may be secrets */

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, op->base->log, 0,
                   "chat mysql: connection #%ui query \"%*s\"",
                   mc->index, op->sql_len, op->sql);

    mc->state = NGX_HTTP_CHAT_MYSQL_QUERY;

    err = 0;

    status = mysql_real_query_start(&err, mc->mysql, (char *) op->query,
                                    (unsigned long) op->query_len);

    ngx_http_chat_mysql_queried(mc, status, err);
}


/*
 * The connection's statement of the operation's text: prepared, or a
 * free slot to prepare it in (stmt NULL); NULL when the cache is full
 */

static ngx_http_chat_mysql_stmt_t *
ngx_http_chat_mysql_stmt(ngx_http_chat_mysql_conn_t *mc,
    ngx_http_chat_mysql_op_t *op)
{
    ngx_uint_t                   i;
    ngx_http_chat_mysql_stmt_t  *ps;

    if (mc->stmts == NULL) {
        mc->stmts = ngx_calloc(NGX_HTTP_CHAT_MYSQL_STMTS
                               * sizeof(ngx_http_chat_mysql_stmt_t),
                               op->base->log);
        if (mc->stmts == NULL) {
            return NULL;
        }
    }

    for (i = 0; i < mc->nstmts; i++) {
        ps = &mc->stmts[i];

        if (ps->sql_len == op->sql_len
            && ngx_memcmp(ps->sql, op->sql, op->sql_len) == 0)
        {
            return ps;
        }
    }

    if (mc->nstmts == NGX_HTTP_CHAT_MYSQL_STMTS) {
        return NULL;
    }

    ps = &mc->stmts[mc->nstmts];

    /* a text left by a statement that could not be made */

    if (ps->sql) {
        ngx_free(ps->sql);
    }

    /* the text may be the caller's pool memory: the cache keeps a copy */

    ps->sql = ngx_alloc(op->sql_len, op->base->log);
    if (ps->sql == NULL) {
        return NULL;
    }

    ngx_memcpy(ps->sql, op->sql, op->sql_len);
    ps->sql_len = op->sql_len;

    return ps;
}


static void
ngx_http_chat_mysql_prepared(ngx_http_chat_mysql_conn_t *mc, int status,
    int err)
{
    MYSQL_STMT                  *stmt;
    ngx_http_chat_mysql_stmt_t  *ps;

    if (ngx_http_chat_mysql_busy(mc, status)) {
        return;
    }

    ps = &mc->stmts[mc->nstmts];

    if (err) {

        /*
         * the statement is taken out of the cache before the error is
         * handled, which may close the connection; a statement the server
         * refused holds nothing there, so closing it sends nothing
         */

        stmt = ps->stmt;
        ps->stmt = NULL;
        mc->stmt = NULL;

        ngx_free(ps->sql);
        ps->sql = NULL;
        ps->sql_len = 0;

        ngx_http_chat_mysql_error(mc, mysql_stmt_errno(stmt),
                                  mysql_stmt_error(stmt));

        (void) mysql_stmt_close(stmt);
        return;
    }

    mc->nstmts++;

    ngx_http_chat_mysql_execute(mc, mc->op, ps->stmt);
}


static void
ngx_http_chat_mysql_execute(ngx_http_chat_mysql_conn_t *mc,
    ngx_http_chat_mysql_op_t *op, MYSQL_STMT *stmt)
{
    int                       status, err;
    ngx_uint_t                i;
    MYSQL_BIND               *binds;
    ngx_http_chat_sql_arg_t  *a;

    /* the server's count: a "?" in a literal is no placeholder */

    if (mysql_stmt_param_count(stmt) != op->nargs) {
        ngx_log_error(NGX_LOG_ALERT, op->base->log, 0,
                      "chat mysql: %ui arguments for %lu parameters of "
                      "\"%*s\"", op->nargs, mysql_stmt_param_count(stmt),
                      op->sql_len, op->sql);
        goto failed;
    }

    binds = NULL;

    if (op->nargs) {
        binds = ngx_pcalloc(op->base->pool, op->nargs * sizeof(MYSQL_BIND));
        if (binds == NULL) {
            goto failed;
        }
    }

    for (i = 0; i < op->nargs; i++) {
        a = &op->args[i];

        switch (a->type) {

        case NGX_HTTP_CHAT_SQL_INT:
            binds[i].buffer_type = MYSQL_TYPE_LONGLONG;
            binds[i].buffer = &a->num;
            break;

        case NGX_HTTP_CHAT_SQL_STR:
            binds[i].buffer_type = MYSQL_TYPE_STRING;
            binds[i].buffer = a->str.len ? (char *) a->str.data : "";
            binds[i].buffer_length = (unsigned long) a->str.len;
            break;

        default:
            binds[i].buffer_type = MYSQL_TYPE_NULL;
        }
    }

    if (mysql_stmt_bind_param(stmt, binds) != 0) {
        ngx_log_error(NGX_LOG_ALERT, op->base->log, 0,
                      "chat mysql: mysql_stmt_bind_param() failed: %s",
                      mysql_stmt_error(stmt));
        goto failed;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, op->base->log, 0,
                   "chat mysql: connection #%ui execute \"%*s\"",
                   mc->index, op->sql_len, op->sql);

    mc->stmt = stmt;
    mc->state = NGX_HTTP_CHAT_MYSQL_EXECUTE;

    err = 0;

    status = mysql_stmt_execute_start(&err, stmt);

    ngx_http_chat_mysql_executed(mc, status, err);

    return;

failed:

    op->base->sql.rc = NGX_ERROR;
    ngx_http_chat_mysql_finish(mc);
}


static void
ngx_http_chat_mysql_executed(ngx_http_chat_mysql_conn_t *mc, int status,
    int err)
{
    ngx_http_chat_mysql_op_t  *op;

    if (ngx_http_chat_mysql_busy(mc, status)) {
        return;
    }

    if (err) {
        ngx_http_chat_mysql_stmt_error(mc);
        return;
    }

    op = mc->op;

    if (mysql_stmt_field_count(mc->stmt) == 0) {
        op->base->sql.rc = NGX_OK;
        op->base->sql.affected = mysql_stmt_affected_rows(mc->stmt);
        op->base->sql.insert_id = mysql_stmt_insert_id(mc->stmt);

        ngx_http_chat_mysql_finish(mc);
        return;
    }

    mc->state = NGX_HTTP_CHAT_MYSQL_STMT_STORE;

    err = 0;

    status = mysql_stmt_store_result_start(&err, mc->stmt);

    ngx_http_chat_mysql_stmt_stored(mc, status, err);
}


static void
ngx_http_chat_mysql_stmt_stored(ngx_http_chat_mysql_conn_t *mc, int status,
    int err)
{
    ngx_int_t                  rc;
    ngx_http_chat_mysql_op_t  *op;

    if (ngx_http_chat_mysql_busy(mc, status)) {
        return;
    }

    if (err) {
        ngx_http_chat_mysql_stmt_error(mc);
        return;
    }

    op = mc->op;

    rc = ngx_http_chat_mysql_stmt_copy(op, mc->stmt);

    /* the stored rows are the library's memory only: no I/O */
    (void) mysql_stmt_free_result(mc->stmt);

    if (rc == NGX_OK) {
        op->base->sql.rc = NGX_OK;
        op->base->sql.affected = op->base->sql.nrows;

    } else {
        op->base->sql.rc = NGX_ERROR;
        op->base->sql.nrows = 0;
        op->base->sql.ncols = 0;
        op->base->sql.cells = NULL;
    }

    ngx_http_chat_mysql_finish(mc);
}


static void
ngx_http_chat_mysql_stmt_error(ngx_http_chat_mysql_conn_t *mc)
{
    ngx_http_chat_mysql_error(mc, mysql_stmt_errno(mc->stmt),
                              mysql_stmt_error(mc->stmt));
}


/*
 * The connection's statements, once it is closed: the library has cut
 * them from the server then, and closing them only frees memory.  When
 * the handle could not be closed they are left with it.
 */

static void
ngx_http_chat_mysql_free_stmts(ngx_http_chat_mysql_conn_t *mc,
    ngx_uint_t closed)
{
    ngx_uint_t                   i;
    ngx_http_chat_mysql_stmt_t  *ps;

    mc->stmt = NULL;

    if (mc->stmts == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_CHAT_MYSQL_STMTS; i++) {
        ps = &mc->stmts[i];

        if (ps->stmt && closed) {
            (void) mysql_stmt_close(ps->stmt);
        }

        if (ps->sql) {
            ngx_free(ps->sql);
        }
    }

    ngx_free(mc->stmts);
    mc->stmts = NULL;
    mc->nstmts = 0;
}


static void
ngx_http_chat_mysql_queried(ngx_http_chat_mysql_conn_t *mc, int status,
    int err)
{
    MYSQL_RES                 *res;
    ngx_http_chat_mysql_op_t  *op;

    if (ngx_http_chat_mysql_busy(mc, status)) {
        return;
    }

    if (err) {
        ngx_http_chat_mysql_error(mc, mysql_errno(mc->mysql),
                                  mysql_error(mc->mysql));
        return;
    }

    op = mc->op;

    if (mysql_field_count(mc->mysql) == 0) {
        op->base->sql.rc = NGX_OK;
        op->base->sql.affected = mysql_affected_rows(mc->mysql);
        op->base->sql.insert_id = mysql_insert_id(mc->mysql);

        ngx_http_chat_mysql_finish(mc);
        return;
    }

    mc->state = NGX_HTTP_CHAT_MYSQL_STORE;

    res = NULL;

    status = mysql_store_result_start(&res, mc->mysql);

    ngx_http_chat_mysql_stored(mc, status, res);
}


static void
ngx_http_chat_mysql_stored(ngx_http_chat_mysql_conn_t *mc, int status,
    MYSQL_RES *res)
{
    ngx_int_t                    rc;
    ngx_http_chat_mysql_op_t    *op;
    ngx_http_chat_mysql_pool_t  *pool;

    if (ngx_http_chat_mysql_busy(mc, status)) {
        return;
    }

    if (res == NULL) {
        ngx_http_chat_mysql_error(mc, mysql_errno(mc->mysql),
                                  mysql_error(mc->mysql));
        return;
    }

    op = mc->op;

    rc = ngx_http_chat_mysql_copy(op, res);

    mysql_free_result(res);

    if (rc == NGX_OK) {
        op->base->sql.rc = NGX_OK;
        op->base->sql.affected = mysql_affected_rows(mc->mysql);

    } else {
        op->base->sql.rc = NGX_ERROR;
        op->base->sql.nrows = 0;
        op->base->sql.ncols = 0;
        op->base->sql.cells = NULL;
    }

    if (mysql_more_results(mc->mysql)) {

        /*
         * a statement with several results leaves the connection out of
         * step: the first result is the answer, the connection is redone
         */

        pool = ngx_http_chat_mysql_pool;

        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "chat mysql: unexpected further results of \"%*s\"",
                      op->sql_len, op->sql);

        ngx_http_chat_mysql_fail(mc, 0);
        return;
    }

    ngx_http_chat_mysql_finish(mc);
}


static void
ngx_http_chat_mysql_error(ngx_http_chat_mysql_conn_t *mc, ngx_uint_t errnum,
    const char *err)
{
    ngx_http_chat_mysql_op_t    *op;
    ngx_http_chat_mysql_pool_t  *pool;

    pool = ngx_http_chat_mysql_pool;
    op = mc->op;

    op->base->sql.errnum = errnum;

    if (ngx_http_chat_mysql_lost(errnum)) {
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "chat mysql: connection #%ui lost during a query: "
                      "%s (%ui)", mc->index, err, errnum);

        op->base->sql.rc = NGX_DECLINED;
        ngx_http_chat_mysql_fail(mc, 0);
        return;
    }

    switch (errnum) {

    /* refusals the services expect and turn into their own answers */
    case ER_DUP_ENTRY:
    case ER_ROW_IS_REFERENCED_2:
    case ER_NO_REFERENCED_ROW_2:
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "chat mysql: connection #%ui query error: %s (%ui)",
                       mc->index, err, errnum);
        break;

    default:
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "chat mysql: query \"%*s\" failed: %s (%ui)",
                      op->sql_len, op->sql, err, errnum);
    }

    op->base->sql.rc = NGX_ERROR;

    ngx_http_chat_mysql_finish(mc);
}


/* the operation is answered and the connection can take the next one */

static void
ngx_http_chat_mysql_finish(ngx_http_chat_mysql_conn_t *mc)
{
    ngx_http_chat_mysql_op_t  *op;

    op = mc->op;
    mc->op = NULL;

    if (op) {
        ngx_http_chat_mysql_complete(op);
    }

    mc->state = NGX_HTTP_CHAT_MYSQL_IDLE;

    if (ngx_http_chat_mysql_watch_idle(mc) != NGX_OK) {
        ngx_http_chat_mysql_fail(mc, 0);
        return;
    }

    ngx_http_chat_mysql_dispatch();
}


/*
 * the connection is unusable: answer its operation with what was set
 * (NGX_DECLINED unless said otherwise), close it and connect again, at once
 * when it was working until now, after the backoff delay when it is failing
 */

static void
ngx_http_chat_mysql_fail(ngx_http_chat_mysql_conn_t *mc, ngx_uint_t backoff)
{
    ngx_http_chat_mysql_op_t  *op;

    op = mc->op;

    if (op) {
        mc->op = NULL;
        ngx_http_chat_mysql_complete(op);
    }

    ngx_http_chat_mysql_close(mc, 1);

    if (backoff) {
        mc->failed = 1;
        ngx_http_chat_mysql_retry(mc);

    } else {
        ngx_http_chat_mysql_connect(mc);
    }

    ngx_http_chat_mysql_flush();
}


static void
ngx_http_chat_mysql_retry(ngx_http_chat_mysql_conn_t *mc)
{
    mc->state = NGX_HTTP_CHAT_MYSQL_CLOSED;

    if (mc->backoff == 0) {
        mc->backoff = NGX_HTTP_CHAT_MYSQL_BACKOFF_MIN;

    } else {
        mc->backoff *= 2;

        if (mc->backoff > NGX_HTTP_CHAT_MYSQL_BACKOFF_MAX) {
            mc->backoff = NGX_HTTP_CHAT_MYSQL_BACKOFF_MAX;
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, mc->timer.log, 0,
                   "chat mysql: connection #%ui retry in %M ms",
                   mc->index, mc->backoff);

    ngx_add_timer(&mc->timer, mc->backoff);
}


/*
 * Closes the library handle without ever blocking.  A suspended operation is
 * finished first by reporting a timeout to it; with "abort", or when the
 * goodbye to the server would have to wait, the socket is shut down so that
 * every remaining step fails at once.
 */

static void
ngx_http_chat_mysql_close(ngx_http_chat_mysql_conn_t *mc, ngx_uint_t abort)
{
    int                          status, err;
    MYSQL                       *ret;
    MYSQL_RES                   *res;
    my_socket                    fd;
    ngx_uint_t                   n, closed;
    ngx_http_chat_mysql_pool_t  *pool;

    pool = ngx_http_chat_mysql_pool;

    if (mc->timer.timer_set) {
        ngx_del_timer(&mc->timer);
    }

    if (mc->lib_timer.timer_set) {
        ngx_del_timer(&mc->lib_timer);
    }

    if (mc->mysql == NULL) {
        ngx_http_chat_mysql_release(mc, 1);
        mc->state = NGX_HTTP_CHAT_MYSQL_CLOSED;
        mc->wait = 0;
        return;
    }

    fd = mysql_get_socket(mc->mysql);

    closed = (mc->conn && mc->conn->fd != (ngx_socket_t) fd);
    ngx_http_chat_mysql_release(mc, closed);

    if ((abort || mc->wait) && fd != MARIADB_INVALID_SOCKET) {
        (void) shutdown(fd, SHUT_RDWR);
    }

    status = mc->wait;

    for (n = 0; status && n < NGX_HTTP_CHAT_MYSQL_ABORT_STEPS; n++) {

        switch (mc->state) {

        case NGX_HTTP_CHAT_MYSQL_CONNECTING:
            ret = NULL;
            status = mysql_real_connect_cont(&ret, mc->mysql,
                                             MYSQL_WAIT_TIMEOUT);
            break;

        case NGX_HTTP_CHAT_MYSQL_QUERY:
            err = 0;
            status = mysql_real_query_cont(&err, mc->mysql,
                                           MYSQL_WAIT_TIMEOUT);
            break;

        case NGX_HTTP_CHAT_MYSQL_STORE:
            res = NULL;
            status = mysql_store_result_cont(&res, mc->mysql,
                                             MYSQL_WAIT_TIMEOUT);
            if (status == 0 && res) {
                mysql_free_result(res);
            }
            break;

        case NGX_HTTP_CHAT_MYSQL_PREPARE:
            status = mysql_stmt_prepare_cont(&err, mc->stmt,
                                             MYSQL_WAIT_TIMEOUT);
            break;

        case NGX_HTTP_CHAT_MYSQL_EXECUTE:
            status = mysql_stmt_execute_cont(&err, mc->stmt,
                                             MYSQL_WAIT_TIMEOUT);
            break;

        case NGX_HTTP_CHAT_MYSQL_STMT_STORE:
            status = mysql_stmt_store_result_cont(&err, mc->stmt,
                                                  MYSQL_WAIT_TIMEOUT);
            break;

        default:
            status = 0;
        }
    }

    if (status) {
        ngx_log_error(NGX_LOG_ALERT, pool->log, 0,
                      "chat mysql: connection #%ui operation did not end",
                      mc->index);
    }

    mc->wait = 0;

    status = mysql_close_start(mc->mysql);

    for (n = 0; status && n < NGX_HTTP_CHAT_MYSQL_ABORT_STEPS; n++) {
        if (n == 0) {
            fd = mysql_get_socket(mc->mysql);

            if (fd != MARIADB_INVALID_SOCKET) {
                (void) shutdown(fd, SHUT_RDWR);
            }
        }

        status = mysql_close_cont(mc->mysql, MYSQL_WAIT_TIMEOUT);
    }

    if (status) {
        /* leaking the handle is better than blocking the worker */
        ngx_log_error(NGX_LOG_ALERT, pool->log, 0,
                      "chat mysql: connection #%ui could not be closed",
                      mc->index);
    }

    ngx_http_chat_mysql_free_stmts(mc, status == 0);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "chat mysql: connection #%ui closed", mc->index);

    mc->mysql = NULL;
    mc->state = NGX_HTTP_CHAT_MYSQL_CLOSED;
}


/* follows the library's socket with an nginx connection for its events */

static ngx_int_t
ngx_http_chat_mysql_attach(ngx_http_chat_mysql_conn_t *mc)
{
    my_socket                    fd;
    ngx_connection_t            *c;
    ngx_http_chat_mysql_pool_t  *pool;

    pool = ngx_http_chat_mysql_pool;

    fd = mysql_get_socket(mc->mysql);

    if (mc->conn) {
        if (mc->conn->fd == (ngx_socket_t) fd) {
            return NGX_OK;
        }

        /* the library closed the socket we knew */
        ngx_http_chat_mysql_release(mc, 1);
    }

    if (fd == MARIADB_INVALID_SOCKET) {
        ngx_log_error(NGX_LOG_ALERT, pool->log, 0,
                      "chat mysql: connection #%ui has no socket", mc->index);
        return NGX_ERROR;
    }

    c = ngx_get_connection((ngx_socket_t) fd, pool->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = mc;

    c->read->handler = ngx_http_chat_mysql_read_handler;
    c->write->handler = ngx_http_chat_mysql_write_handler;
    c->read->log = pool->log;
    c->write->log = pool->log;

    mc->conn = c;

    return NGX_OK;
}


/*
 * "closed": the library has closed the descriptor already, and with it the
 * kernel dropped it from the event set; only nginx's flags are cleared
 */

static void
ngx_http_chat_mysql_release(ngx_http_chat_mysql_conn_t *mc,
    ngx_uint_t closed)
{
    ngx_connection_t  *c;

    c = mc->conn;

    if (c == NULL) {
        return;
    }

    mc->conn = NULL;

    if (closed) {
        if (c->read->active) {
            (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active) {
            (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }

    } else {
        (void) ngx_http_chat_event_interest(c->read, NGX_READ_EVENT, 0);
        (void) ngx_http_chat_event_interest(c->write, NGX_WRITE_EVENT, 0);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);

    /* the descriptor is the library's: mark the slot as not holding one */
    c->fd = (ngx_socket_t) -1;
}


/* maps the library's wait bits onto events of its socket */


/*
 * After a call of the library's non-blocking API: while the call waits
 * for the socket, the connection waits with it (1); 0 once it is done.
 */

static ngx_uint_t
ngx_http_chat_mysql_busy(ngx_http_chat_mysql_conn_t *mc, int status)
{
    if (status) {
        if (ngx_http_chat_mysql_wait(mc, status) != NGX_OK) {
            ngx_http_chat_mysql_fail(mc, 0);
        }

        return 1;
    }

    mc->wait = 0;

    return 0;
}


static ngx_int_t
ngx_http_chat_mysql_wait(ngx_http_chat_mysql_conn_t *mc, int status)
{
    ngx_uint_t         want;
    ngx_msec_t         ms;
    ngx_connection_t  *c;

    mc->wait = status;

    if (ngx_http_chat_mysql_attach(mc) != NGX_OK) {
        return NGX_ERROR;
    }

    c = mc->conn;

    want = (status & (MYSQL_WAIT_READ|MYSQL_WAIT_EXCEPT)) != 0;

    if (ngx_http_chat_event_interest(c->read, NGX_READ_EVENT, want) != NGX_OK)
    {
        return NGX_ERROR;
    }

    want = (status & MYSQL_WAIT_WRITE) != 0;

    if (ngx_http_chat_event_interest(c->write, NGX_WRITE_EVENT, want)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (status & MYSQL_WAIT_TIMEOUT) {
        ms = mysql_get_timeout_value_ms(mc->mysql);
        ngx_add_timer(&mc->lib_timer, ms ? ms : 1);
    }

    return NGX_OK;
}


/*
 * An idle connection is read-watched: the server has nothing to say between
 * queries, so readiness means it closed the connection or is about to.
 */

static ngx_int_t
ngx_http_chat_mysql_watch_idle(ngx_http_chat_mysql_conn_t *mc)
{
    ngx_connection_t  *c;

    mc->wait = 0;

    if (mc->lib_timer.timer_set) {
        ngx_del_timer(&mc->lib_timer);
    }

    if (ngx_http_chat_mysql_attach(mc) != NGX_OK) {
        return NGX_ERROR;
    }

    c = mc->conn;

    if (ngx_http_chat_event_interest(c->write, NGX_WRITE_EVENT, 0) != NGX_OK
        || ngx_http_chat_event_interest(c->read, NGX_READ_EVENT, 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_chat_mysql_resume(ngx_http_chat_mysql_conn_t *mc, int ready)
{
    int         status, err;
    MYSQL      *ret;
    MYSQL_RES  *res;

    if (mc->lib_timer.timer_set) {
        ngx_del_timer(&mc->lib_timer);
    }

    switch (mc->state) {

    case NGX_HTTP_CHAT_MYSQL_CONNECTING:
        ret = NULL;
        status = mysql_real_connect_cont(&ret, mc->mysql, ready);
        ngx_http_chat_mysql_connected(mc, status, ret);
        return;

    case NGX_HTTP_CHAT_MYSQL_QUERY:
        err = 0;
        status = mysql_real_query_cont(&err, mc->mysql, ready);
        ngx_http_chat_mysql_queried(mc, status, err);
        return;

    case NGX_HTTP_CHAT_MYSQL_STORE:
        res = NULL;
        status = mysql_store_result_cont(&res, mc->mysql, ready);
        ngx_http_chat_mysql_stored(mc, status, res);
        return;

    case NGX_HTTP_CHAT_MYSQL_PREPARE:
        err = 0;
        status = mysql_stmt_prepare_cont(&err, mc->stmt, ready);
        ngx_http_chat_mysql_prepared(mc, status, err);
        return;

    case NGX_HTTP_CHAT_MYSQL_EXECUTE:
        err = 0;
        status = mysql_stmt_execute_cont(&err, mc->stmt, ready);
        ngx_http_chat_mysql_executed(mc, status, err);
        return;

    case NGX_HTTP_CHAT_MYSQL_STMT_STORE:
        err = 0;
        status = mysql_stmt_store_result_cont(&err, mc->stmt, ready);
        ngx_http_chat_mysql_stmt_stored(mc, status, err);
        return;

    default:
        ngx_log_error(NGX_LOG_ALERT, ngx_http_chat_mysql_pool->log, 0,
                      "chat mysql: connection #%ui event in state %ui",
                      mc->index, mc->state);
    }
}


static void
ngx_http_chat_mysql_read_handler(ngx_event_t *rev)
{
    ngx_connection_t            *c;
    ngx_http_chat_mysql_conn_t  *mc;

    c = rev->data;
    mc = c->data;

    if (mc->state == NGX_HTTP_CHAT_MYSQL_IDLE) {
        ngx_log_error(NGX_LOG_INFO, rev->log, 0,
                      "chat mysql: idle connection #%ui closed by the server",
                      mc->index);

        ngx_http_chat_mysql_fail(mc, 0);
        return;
    }

    if (!(mc->wait & (MYSQL_WAIT_READ|MYSQL_WAIT_EXCEPT))) {
        if (ngx_http_chat_event_interest(rev, NGX_READ_EVENT, 0) != NGX_OK) {
            ngx_http_chat_mysql_fail(mc, 0);
        }

        return;
    }

    ngx_http_chat_mysql_resume(mc,
                               mc->wait & (MYSQL_WAIT_READ|MYSQL_WAIT_EXCEPT));
}


static void
ngx_http_chat_mysql_write_handler(ngx_event_t *wev)
{
    ngx_connection_t            *c;
    ngx_http_chat_mysql_conn_t  *mc;

    c = wev->data;
    mc = c->data;

    if (!(mc->wait & MYSQL_WAIT_WRITE)) {
        if (ngx_http_chat_event_interest(wev, NGX_WRITE_EVENT, 0) != NGX_OK) {
            ngx_http_chat_mysql_fail(mc, 0);
        }

        return;
    }

    ngx_http_chat_mysql_resume(mc, MYSQL_WAIT_WRITE);
}


/* the retry delay of a closed connection, the timeout of a connecting one */

static void
ngx_http_chat_mysql_timer_handler(ngx_event_t *ev)
{
    ngx_http_chat_mysql_conn_t  *mc;
    ngx_http_chat_mysql_pool_t  *pool;

    mc = ev->data;
    pool = ngx_http_chat_mysql_pool;

    switch (mc->state) {

    case NGX_HTTP_CHAT_MYSQL_CLOSED:
        ngx_http_chat_mysql_connect(mc);
        return;

    case NGX_HTTP_CHAT_MYSQL_CONNECTING:
        if (!pool->logged) {
            ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                          "chat mysql: connect to %s:%ud timed out after "
                          "%M ms, retrying in the background",
                          pool->host, pool->port, pool->connect_timeout);
            pool->logged = 1;

        } else {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                           "chat mysql: connection #%ui connect timed out",
                           mc->index);
        }

        ngx_http_chat_mysql_fail(mc, 1);
        return;
    }
}


static void
ngx_http_chat_mysql_lib_timer_handler(ngx_event_t *ev)
{
    ngx_http_chat_mysql_conn_t  *mc;

    mc = ev->data;

    if (mc->wait & MYSQL_WAIT_TIMEOUT) {
        ngx_http_chat_mysql_resume(mc, MYSQL_WAIT_TIMEOUT);
    }
}


static void
ngx_http_chat_mysql_deadline_handler(ngx_event_t *ev)
{
    ngx_http_chat_mysql_op_t    *op;
    ngx_http_chat_mysql_conn_t  *mc;
    ngx_http_chat_mysql_pool_t  *pool;

    op = ev->data;
    pool = ngx_http_chat_mysql_pool;

    op->base->sql.rc = NGX_DECLINED;

    mc = op->conn;

    if (mc) {

        /* a hung server cannot be asked to cancel: drop the connection */

        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "chat mysql: query timed out after %M ms on "
                      "connection #%ui", pool->timeout, mc->index);

        ngx_http_chat_mysql_fail(mc, 1);
        return;
    }

    if (op->queued) {
        ngx_queue_remove(&op->queue);
        op->queued = 0;
        pool->nqueued--;

        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "chat mysql: no free connection within %M ms",
                      pool->timeout);

        /* the queries on the connections answer for MariaDB */
        ngx_http_chat_op_unjudge(op->base);
    }

    ngx_http_chat_mysql_complete(op);
}


static ngx_int_t
ngx_http_chat_mysql_build(ngx_http_chat_mysql_conn_t *mc,
    ngx_http_chat_mysql_op_t *op)
{
    u_char                   *p, *s, *end;
    size_t                    len;
    ngx_uint_t                i;
    unsigned long             n;
    ngx_http_chat_sql_arg_t  *a;

    len = op->sql_len - op->nargs;

    for (i = 0; i < op->nargs; i++) {
        a = &op->args[i];

        switch (a->type) {

        case NGX_HTTP_CHAT_SQL_INT:
            len += NGX_INT64_LEN;
            break;

        case NGX_HTTP_CHAT_SQL_STR:
            len += 2 * a->str.len + 3;
            break;

        default:
            len += sizeof("NULL") - 1;
        }
    }

    op->query = ngx_pnalloc(op->base->pool, len + 1);
    if (op->query == NULL) {
        return NGX_ERROR;
    }

    p = op->query;
    end = op->sql + op->sql_len;
    i = 0;

    for (s = op->sql; s < end; s++) {

        if (*s != '?') {
            *p++ = *s;
            continue;
        }

        a = &op->args[i++];

        switch (a->type) {

        case NGX_HTTP_CHAT_SQL_INT:
            p = ngx_sprintf(p, "%L", a->num);
            break;

        case NGX_HTTP_CHAT_SQL_STR:
            *p++ = '\'';

            n = mysql_real_escape_string(mc->mysql, (char *) p,
                                         a->str.len ? (char *) a->str.data
                                                    : "",
                                         (unsigned long) a->str.len);

            if (n == (unsigned long) -1) {
                ngx_log_error(NGX_LOG_ALERT, op->base->log, 0,
                              "chat mysql: mysql_real_escape_string() "
                              "failed");
                return NGX_ERROR;
            }

            p += n;
            *p++ = '\'';
            break;

        default:
            p = ngx_cpymem(p, "NULL", sizeof("NULL") - 1);
        }
    }

    *p = '\0';

    op->query_len = p - op->query;

    return NGX_OK;
}


/* the result set into the operation's pool: cells[row * ncols + col] */


/* a result's rows and columns; NGX_DECLINED when it has no cells */

static ngx_int_t
ngx_http_chat_mysql_shape(ngx_http_chat_sql_res_t *sql, ngx_uint_t nrows,
    ngx_uint_t ncols)
{
    sql->nrows = nrows;
    sql->ncols = ncols;
    sql->cells = NULL;

    if (nrows == 0 || ncols == 0) {
        return NGX_DECLINED;
    }

    if (nrows > NGX_MAX_SIZE_T_VALUE / sizeof(ngx_str_t) / ncols) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_mysql_copy(ngx_http_chat_mysql_op_t *op, MYSQL_RES *res)
{
    u_char                   *buf;
    size_t                    size;
    ngx_int_t                 rc;
    ngx_str_t                *cell, *last;
    ngx_uint_t                nrows, ncols, i;
    MYSQL_ROW                 row;
    unsigned long            *lengths;
    ngx_http_chat_sql_res_t  *sql;

    sql = &op->base->sql;

    nrows = (ngx_uint_t) mysql_num_rows(res);
    ncols = mysql_num_fields(res);

    rc = ngx_http_chat_mysql_shape(sql, nrows, ncols);
    if (rc != NGX_OK) {
        return rc == NGX_DECLINED ? NGX_OK : NGX_ERROR;
    }

    sql->cells = ngx_palloc(op->base->pool,
                            nrows * ncols * sizeof(ngx_str_t));
    if (sql->cells == NULL) {
        return NGX_ERROR;
    }

    size = 0;

    while ((row = mysql_fetch_row(res)) != NULL) {
        lengths = mysql_fetch_lengths(res);

        for (i = 0; i < ncols; i++) {
            if (row[i]) {
                size += lengths[i] + 1;
            }
        }
    }

    buf = NULL;

    if (size) {
        buf = ngx_pnalloc(op->base->pool, size);
        if (buf == NULL) {
            return NGX_ERROR;
        }
    }

    mysql_data_seek(res, 0);

    cell = sql->cells;
    last = cell + nrows * ncols;

    while (cell < last && (row = mysql_fetch_row(res)) != NULL) {
        lengths = mysql_fetch_lengths(res);

        for (i = 0; i < ncols; i++, cell++) {

            if (row[i] == NULL) {
                cell->len = 0;
                cell->data = NULL;
                continue;
            }

            /* NUL-terminated as a convenience for numeric conversions */

            cell->len = lengths[i];
            cell->data = buf;
            buf = ngx_cpymem(buf, row[i], lengths[i]);
            *buf++ = '\0';
        }
    }

    while (cell < last) {
        cell->len = 0;
        cell->data = NULL;
        cell++;
    }

    return NGX_OK;
}


/*
 * A prepared statement's stored rows into the operation's pool, as the
 * text protocol's: each value is fetched as a string into a slot of the
 * worker's fetch buffer, and one longer than its slot fetched once more
 * into its cell.  Dates and times are fetched as MYSQL_TIME and printed
 * here: the library would print them with sprintf(), a tenth of a read's
 * instructions for the three datetimes of a user row.
 */

static ngx_int_t
ngx_http_chat_mysql_stmt_copy(ngx_http_chat_mysql_op_t *op,
    MYSQL_STMT *stmt)
{
    int                           rc;
    u_char                       *p;
    ngx_str_t                    *cell;
    ngx_uint_t                    nrows, ncols, i, n;
    MYSQL_BIND                    bind;
    MYSQL_TIME                   *tm;
    MYSQL_FIELD                  *fields;
    unsigned long                 len;
    ngx_http_chat_sql_res_t      *sql;
    ngx_http_chat_mysql_fetch_t  *f;

    sql = &op->base->sql;

    nrows = (ngx_uint_t) mysql_stmt_num_rows(stmt);
    ncols = mysql_stmt_field_count(stmt);

    rc = ngx_http_chat_mysql_shape(sql, nrows, ncols);
    if (rc != NGX_OK) {
        return rc == NGX_DECLINED ? NGX_OK : NGX_ERROR;
    }

    if (ngx_http_chat_mysql_fetch_size(ncols) != NGX_OK) {
        return NGX_ERROR;
    }

    f = &ngx_http_chat_mysql_pool->fetch;

    /* the metadata of this execution: a reprepared statement may differ */
    fields = stmt->fields;

    for (i = 0; i < ncols; i++) {
        switch (fields[i].type) {

        case MYSQL_TYPE_DATE:
        case MYSQL_TYPE_DATETIME:
        case MYSQL_TYPE_TIMESTAMP:
            f->binds[i].buffer_type = MYSQL_TYPE_DATETIME;
            break;

        default:
            f->binds[i].buffer_type = MYSQL_TYPE_STRING;
        }
    }

    if (mysql_stmt_bind_result(stmt, f->binds) != 0) {
        ngx_log_error(NGX_LOG_ALERT, op->base->log, 0,
                      "chat mysql: mysql_stmt_bind_result() failed: %s",
                      mysql_stmt_error(stmt));
        return NGX_ERROR;
    }

    sql->cells = ngx_palloc(op->base->pool,
                            nrows * ncols * sizeof(ngx_str_t));
    if (sql->cells == NULL) {
        return NGX_ERROR;
    }

    cell = sql->cells;

    for (n = 0; n < nrows; n++) {

        rc = mysql_stmt_fetch(stmt);

        if (rc != 0 && rc != MYSQL_DATA_TRUNCATED) {
            ngx_log_error(NGX_LOG_ERR, op->base->log, 0,
                          "chat mysql: mysql_stmt_fetch() of \"%*s\" "
                          "failed: %d %s", op->sql_len, op->sql, rc,
                          mysql_stmt_error(stmt));
            return NGX_ERROR;
        }

        for (i = 0; i < ncols; i++, cell++) {

            if (f->nulls[i]) {
                cell->len = 0;
                cell->data = NULL;
                continue;
            }

            if (f->binds[i].buffer_type == MYSQL_TYPE_DATETIME) {
                tm = f->binds[i].buffer;

                if (ngx_http_chat_mysql_time(op->base->pool, tm, &fields[i],
                                             cell)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                continue;
            }

            len = f->lengths[i];

            /* NUL-terminated as a convenience for numeric conversions */

            p = ngx_pnalloc(op->base->pool, len + 1);
            if (p == NULL) {
                return NGX_ERROR;
            }

            if (len < NGX_HTTP_CHAT_MYSQL_CELL) {
                ngx_memcpy(p, f->binds[i].buffer, len);

            } else {
                bind = f->binds[i];
                bind.buffer = p;
                bind.buffer_length = len + 1;

                if (mysql_stmt_fetch_column(stmt, &bind, (unsigned int) i, 0)
                    != 0)
                {
                    ngx_log_error(NGX_LOG_ERR, op->base->log, 0,
                                  "chat mysql: mysql_stmt_fetch_column() "
                                  "failed: %s", mysql_stmt_error(stmt));
                    return NGX_ERROR;
                }
            }

            p[len] = '\0';

            cell->len = len;
            cell->data = p;
        }
    }

    return NGX_OK;
}


/* a date or time as the text protocol writes it, NUL-terminated */

static ngx_int_t
ngx_http_chat_mysql_time(ngx_pool_t *pool, MYSQL_TIME *tm,
    MYSQL_FIELD *field, ngx_str_t *cell)
{
    u_char      *p;
    ngx_uint_t   digits;

    p = ngx_pnalloc(pool, sizeof("YYYY-MM-DD HH:MM:SS.ffffff"));
    if (p == NULL) {
        return NGX_ERROR;
    }

    cell->data = p;

    p = ngx_sprintf(p, "%04ud-%02ud-%02ud", tm->year, tm->month, tm->day);

    if (field->type != MYSQL_TYPE_DATE) {
        p = ngx_sprintf(p, " %02ud:%02ud:%02ud",
                        tm->hour, tm->minute, tm->second);

        /* the fraction has the column's digits, as the library prints it */

        digits = ngx_min(field->decimals, 6);

        if (digits) {
            (void) ngx_sprintf(p, ".%06ul", tm->second_part);
            p += 1 + digits;
        }
    }

    *p = '\0';

    cell->len = p - cell->data;

    return NGX_OK;
}


/* the worker's fetch buffer, grown to ncols columns */

static ngx_int_t
ngx_http_chat_mysql_fetch_size(ngx_uint_t ncols)
{
    u_char                       *p;
    size_t                        size;
    ngx_uint_t                    i, n;
    ngx_http_chat_mysql_fetch_t  *f;

    f = &ngx_http_chat_mysql_pool->fetch;

    if (f->ncols >= ncols) {
        return NGX_OK;
    }

    n = ngx_max(ncols, 16);

    size = n * (sizeof(MYSQL_BIND) + sizeof(unsigned long)
                + sizeof(my_bool) + NGX_HTTP_CHAT_MYSQL_CELL);

    p = ngx_alloc(size, ngx_http_chat_mysql_pool->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (f->binds) {
        ngx_free(f->binds);
    }

    ngx_memzero(p, size);

    f->binds = (MYSQL_BIND *) p;
    p += n * sizeof(MYSQL_BIND);
    f->lengths = (unsigned long *) p;
    p += n * sizeof(unsigned long);
    f->buf = p;
    p += n * NGX_HTTP_CHAT_MYSQL_CELL;
    f->nulls = (my_bool *) p;
    f->ncols = n;

    for (i = 0; i < n; i++) {
        f->binds[i].buffer_type = MYSQL_TYPE_STRING;
        f->binds[i].buffer = f->buf + i * NGX_HTTP_CHAT_MYSQL_CELL;
        f->binds[i].buffer_length = NGX_HTTP_CHAT_MYSQL_CELL;
        f->binds[i].length = &f->lengths[i];
        f->binds[i].is_null = &f->nulls[i];
    }

    return NGX_OK;
}


/* answers an operation from the event loop, never from the caller's stack */

static void
ngx_http_chat_mysql_complete(ngx_http_chat_mysql_op_t *op)
{
    if (op->deadline.timer_set) {
        ngx_del_timer(&op->deadline);
    }

    op->conn = NULL;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, op->base->log, 0,
                   "chat mysql: done rc:%i errnum:%ui rows:%ui affected:%uL",
                   op->base->sql.rc, op->base->sql.errnum,
                   op->base->sql.nrows, op->base->sql.affected);

    ngx_http_chat_op_post(op->base, op->base->sql.rc);
}


static void
ngx_http_chat_mysql_dispatch(void)
{
    ngx_queue_t                 *q;
    ngx_http_chat_mysql_op_t    *op;
    ngx_http_chat_mysql_conn_t  *mc;
    ngx_http_chat_mysql_pool_t  *pool;

    pool = ngx_http_chat_mysql_pool;

    while (!ngx_queue_empty(&pool->queue)) {

        mc = ngx_http_chat_mysql_idle_conn();
        if (mc == NULL) {
            return;
        }

        q = ngx_queue_head(&pool->queue);
        ngx_queue_remove(q);

        op = ngx_queue_data(q, ngx_http_chat_mysql_op_t, queue);
        op->queued = 0;
        pool->nqueued--;

        ngx_http_chat_mysql_start(mc, op);
    }
}


/* when nothing can serve them soon, waiting operations are answered now */

static void
ngx_http_chat_mysql_flush(void)
{
    ngx_queue_t                 *q;
    ngx_http_chat_mysql_op_t    *op;
    ngx_http_chat_mysql_pool_t  *pool;

    pool = ngx_http_chat_mysql_pool;

    if (ngx_queue_empty(&pool->queue) || ngx_http_chat_mysql_available()) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "chat mysql: no connection up, failing %ui queries",
                   pool->nqueued);

    while (!ngx_queue_empty(&pool->queue)) {
        q = ngx_queue_head(&pool->queue);
        ngx_queue_remove(q);

        op = ngx_queue_data(q, ngx_http_chat_mysql_op_t, queue);
        op->queued = 0;
        pool->nqueued--;

        ngx_http_chat_mysql_complete(op);
    }
}


static ngx_http_chat_mysql_conn_t *
ngx_http_chat_mysql_idle_conn(void)
{
    ngx_uint_t                   i;
    ngx_http_chat_mysql_pool_t  *pool;

    pool = ngx_http_chat_mysql_pool;

    for (i = 0; i < pool->nconns; i++) {
        if (pool->conns[i].state == NGX_HTTP_CHAT_MYSQL_IDLE) {
            return &pool->conns[i];
        }
    }

    return NULL;
}


/*
 * Whether an operation may wait: some connection is up, or is making its
 * first attempt since it was last up.  Otherwise MariaDB is down and callers
 * are answered at once.
 */

static ngx_uint_t
ngx_http_chat_mysql_available(void)
{
    ngx_uint_t                   i;
    ngx_http_chat_mysql_conn_t  *mc;
    ngx_http_chat_mysql_pool_t  *pool;

    pool = ngx_http_chat_mysql_pool;

    for (i = 0; i < pool->nconns; i++) {
        mc = &pool->conns[i];

        switch (mc->state) {

        case NGX_HTTP_CHAT_MYSQL_IDLE:
        case NGX_HTTP_CHAT_MYSQL_QUERY:
        case NGX_HTTP_CHAT_MYSQL_STORE:
        case NGX_HTTP_CHAT_MYSQL_PREPARE:
        case NGX_HTTP_CHAT_MYSQL_EXECUTE:
        case NGX_HTTP_CHAT_MYSQL_STMT_STORE:
            return 1;

        case NGX_HTTP_CHAT_MYSQL_CONNECTING:
            if (!mc->failed) {
                return 1;
            }
            break;
        }
    }

    return 0;
}


/* errors after which the connection is gone or going */

static ngx_uint_t
ngx_http_chat_mysql_lost(ngx_uint_t errnum)
{
    if (errnum >= CR_MIN_ERROR && errnum <= CR_MAX_ERROR) {
        return 1;
    }

    switch (errnum) {

    case 0:
    case ER_SERVER_SHUTDOWN:
    case ER_CONNECTION_KILLED:

    /* the server forgot the connection's statements: a new one prepares */
    case ER_UNKNOWN_STMT_HANDLER:
        return 1;
    }

    return 0;
}
