
/*
 * nginx-chat core module: the runtime every service module stands on.
 *
 * Datastore clients (MariaDB, Redis, MongoDB) driven by nginx events or the
 * thread pool, JSON bodies and responses in the contract's shapes, request
 * routing, Bearer/JWT authentication and event publishing.
 */


#ifndef _NGX_HTTP_CHAT_CORE_MODULE_H_INCLUDED_
#define _NGX_HTTP_CHAT_CORE_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <mongoc/mongoc.h>


#define NGX_HTTP_UNPROCESSABLE_ENTITY  422


/* route flags */
#define NGX_HTTP_CHAT_AUTH          0x01    /* Bearer token required */
#define NGX_HTTP_CHAT_JSON          0x02    /* JSON body, parsed first */
#define NGX_HTTP_CHAT_BODY          0x04    /* raw body (form, multipart) */
#define NGX_HTTP_CHAT_INTERNAL      0x08    /* service listener only */
/*
 * The handler changes nothing before its first datastore step completes:
 * it runs beside the token's revocation check, and what it answers or
 * continues with meanwhile waits for the verdict.
 */
#define NGX_HTTP_CHAT_EARLY         0x10
/* with JSON: the body may be left out, the handler gets ctx->json NULL */
#define NGX_HTTP_CHAT_JSON_OPTIONAL 0x20

#define NGX_HTTP_CHAT_MAX_PARAMS    4

/* SQL argument types */
#define NGX_HTTP_CHAT_SQL_NULL      0
#define NGX_HTTP_CHAT_SQL_INT       1
#define NGX_HTTP_CHAT_SQL_STR       2

/*
 * A block between users a and b in either direction (API.md 12, F9), as
 * an SQL condition; a and b are columns or "?", bound as a, b, b, a.
 * Every service asks it the same way, so the unique key of block_users
 * and its reverse key answer it.
 */
#define NGX_HTTP_CHAT_SQL_BLOCKED(a, b)                                       \
    "EXISTS (SELECT 1 FROM block_users "                                      \
    "WHERE (user_id = " a " AND blocked_user_id = " b ") "                    \
    "OR (user_id = " b " AND blocked_user_id = " a "))"

/* datastore states reported by the readiness view */
#define NGX_HTTP_CHAT_DOWN          0
#define NGX_HTTP_CHAT_CONNECTING    1
#define NGX_HTTP_CHAT_UP            2

/* datastores, as their circuit breakers know them */
#define NGX_HTTP_CHAT_MYSQL         0
#define NGX_HTTP_CHAT_REDIS         1
#define NGX_HTTP_CHAT_MONGO         2
#define NGX_HTTP_CHAT_DATASTORES    3

/* chat_auth_error_style */
#define NGX_HTTP_CHAT_AUTH_SERVICE  0
#define NGX_HTTP_CHAT_AUTH_GATEWAY  1


typedef struct ngx_http_chat_ctx_s  ngx_http_chat_ctx_t;
typedef struct ngx_http_chat_sse_s  ngx_http_chat_sse_t;
typedef struct ngx_http_chat_op_s   ngx_http_chat_op_t;

typedef ngx_int_t (*ngx_http_chat_handler_pt)(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);


typedef struct {
    ngx_uint_t                  method;     /* NGX_HTTP_GET, ... */
    ngx_str_t                   path;   /* "/api/users/{user_id}/exists" */
    ngx_uint_t                  flags;
    ngx_http_chat_handler_pt    handler;
} ngx_http_chat_route_t;


typedef struct {
    ngx_uint_t                  type;
    int64_t                     num;
    ngx_str_t                   str;
} ngx_http_chat_sql_arg_t;


typedef struct {
    ngx_int_t                   rc;         /* NGX_OK, NGX_ERROR: SQL error,
                                               NGX_DECLINED: unavailable */
    ngx_uint_t                  errnum;     /* server error number */
    uint64_t                    insert_id;
    uint64_t                    affected;
    ngx_uint_t                  nrows;
    ngx_uint_t                  ncols;
    ngx_str_t                  *cells;      /* nrows * ncols, op->pool;
                                               data == NULL: SQL NULL */

    /* a request's step after this one, given to ngx_http_chat_sql_then() */
    ngx_http_chat_handler_pt    next;
} ngx_http_chat_sql_res_t;


/*
 * A datastore operation, independent of requests, in the spirit of
 * ngx_resolver_ctx_t: the owner fills pool, log, handler and data, then
 * passes it to one of ngx_http_chat_op_sql(), _redis(), _mongo(), _cpu()
 * or _thread().  The handler runs exactly once, on the event loop and
 * never before the starting call has returned, with the result in the
 * operation:
 *
 *   rc  NGX_OK        done: sql, reply or the thread function's NGX_OK
 *       NGX_ERROR     the datastore refused it (SQL error, Redis error
 *                     reply, the thread function failed)
 *       NGX_DECLINED  the datastore is unavailable or timed out
 *       NGX_BUSY      refused by admission control (CPU queue full or
 *                     not started within chat_cpu_queue_timeout)
 *       NGX_ABORT     cancelled by ngx_http_chat_op_cancel(); a Redis reply
 *                     that came all the same is still in op->reply
 *
 * The operation's memory must stay valid until its handler has run; the
 * result (SQL cells) is allocated from op->pool.
 */

typedef void (*ngx_http_chat_op_pt)(ngx_http_chat_op_t *op);

struct ngx_http_chat_op_s {
    ngx_pool_t                 *pool;
    ngx_log_t                  *log;
    ngx_http_chat_op_pt         handler;
    void                       *data;

    ngx_int_t                   rc;
    ngx_http_chat_sql_res_t     sql;
    redisReply                 *reply;      /* valid in the handler only */

    /* the datastore's, while the operation is in flight */
    void                      (*cancel)(ngx_http_chat_op_t *op);
    void                       *state;
    ngx_event_t                 event;      /* posted completion */

    ngx_queue_t                 queue;      /* the owner's list */

    /* the breaker that judges the outcome: datastore + 1, 0: none */
    ngx_uint_t                  circuit;

    unsigned                    active:1;
    unsigned                    cancelled:1;
    unsigned                    probe:1;    /* the half-open breaker's */
    unsigned                    unjudged:1; /* says nothing of the store */
};


/* completion handlers return what the request is finalized with */

typedef ngx_int_t (*ngx_http_chat_sql_pt)(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);

/* reply == NULL: Redis unavailable or timed out */
typedef ngx_int_t (*ngx_http_chat_redis_pt)(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply);

/* runs in a pool thread: library work only, no nginx pools or events */
typedef ngx_int_t (*ngx_http_chat_thread_pt)(void *data);
typedef ngx_int_t (*ngx_http_chat_mongo_pt)(mongoc_database_t *db,
    void *data);

/* rc: what the thread function returned, or NGX_DECLINED when the task
 * could not run (queue full, no MongoDB client) */
typedef ngx_int_t (*ngx_http_chat_thread_done_pt)(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);

/* pub/sub message for a subscribed channel, in the worker */
typedef void (*ngx_http_chat_message_pt)(ngx_str_t *channel,
    ngx_str_t *payload, void *data);
/* a subscription confirmed by Redis */
typedef void (*ngx_http_chat_ready_pt)(void *data);


/* per-request state shared by the core and a service module */

struct ngx_http_chat_ctx_s {
    ngx_http_chat_route_t      *route;
    ngx_str_t                   params[NGX_HTTP_CHAT_MAX_PARAMS];
    ngx_uint_t                  nparams;

    cJSON                      *json;       /* parsed JSON body */
    ngx_str_t                   body;       /* raw body (NGX_HTTP_CHAT_BODY) */

    /* the authenticated caller */
    ngx_int_t                   user_id;
    ngx_str_t                   email;
    ngx_str_t                   token;
    time_t                      token_exp;

    ngx_http_chat_sse_t        *sse;        /* an open event stream */

    /* service module's own state */
    void                       *data;

    /* the core's: operations in flight for the request */
    ngx_queue_t                 ops;
    ngx_http_chat_op_t         *gate;       /* the revocation check that
                                               runs beside an EARLY handler */
    ngx_http_chat_op_t         *held;       /* completed before it */
    ngx_str_t                   answer;     /* made before it */
    unsigned                    answered:1;
    unsigned                    watched:1;  /* cleanup registered */
    unsigned                    gone:1;     /* the client left */
};


/* where a directive was, for checks made once the http block is read */

typedef struct {
    ngx_str_t                   directive;
    ngx_str_t                   file;
    ngx_uint_t                  line;
} ngx_http_chat_conf_where_t;


typedef struct {
    /* MariaDB */
    ngx_str_t                   mysql_host;     /* numeric address */
    ngx_uint_t                  mysql_port;
    ngx_str_t                   mysql_user;
    ngx_str_t                   mysql_password;
    ngx_str_t                   mysql_database;
    ngx_uint_t                  mysql_pool_size;
    ngx_uint_t                  mysql_queue_size;
    ngx_msec_t                  mysql_connect_timeout;
    ngx_msec_t                  mysql_timeout;

    /* Redis */
    ngx_str_t                   redis_host;     /* numeric address */
    ngx_uint_t                  redis_port;
    ngx_str_t                   redis_password;
    ngx_int_t                   redis_db;
    ngx_msec_t                  redis_timeout;

    /* MongoDB */
    ngx_str_t                   mongo_uri;
    ngx_str_t                   mongo_database;
    ngx_str_t                   mongo_pool_name;
    ngx_thread_pool_t          *mongo_pool;

    /* CPU work (bcrypt) */
    ngx_str_t                   cpu_pool_name;
    ngx_thread_pool_t          *cpu_pool;
    ngx_uint_t                  cpu_queue_size;
    ngx_msec_t                  cpu_queue_timeout;

    /* JWT */
    ngx_str_t                   jwt_secret;
    time_t                      jwt_lifetime;

    /* credentials shipped as examples are refused outside development */
    ngx_flag_t                  development;
    ngx_http_chat_conf_where_t  jwt_where;
    ngx_http_chat_conf_where_t  mysql_where;

    size_t                      json_max_size;
    ngx_uint_t                  events_maxlen;
    ngx_msec_t                  sse_keepalive;
    size_t                      sse_max_queue;

    /* circuit breakers, one per datastore */
    ngx_uint_t                  circuit_failures;   /* 0: off */
    ngx_msec_t                  circuit_cooldown;

    ngx_uint_t                  configured;     /* any chat_* datastore */
} ngx_http_chat_core_main_conf_t;


/* a service that /health/services reports (chat_health_services) */

typedef struct {
    ngx_str_t                   name;           /* "user" */
    ngx_str_t                   url;            /* its listener */
    ngx_uint_t                  needs;          /* 1 << datastore */
} ngx_http_chat_health_service_t;


typedef struct {
    ngx_str_t                   service_name;
    ngx_flag_t                  internal;       /* service listener */
    ngx_flag_t                  unprefixed;     /* "/auth/..." too */
    ngx_array_t                *cors_origins;   /* of ngx_str_t */
    ngx_uint_t                  auth_error_style;
    ngx_array_t                *health_services;
} ngx_http_chat_core_loc_conf_t;


extern ngx_module_t  ngx_http_chat_core_module;


/* request plumbing (ngx_http_chat_request.c) */

ngx_int_t ngx_http_chat_dispatch(ngx_http_request_t *r,
    ngx_http_chat_route_t *routes);
ngx_http_chat_ctx_t *ngx_http_chat_get_ctx(ngx_http_request_t *r);
void ngx_http_chat_park(ngx_http_request_t *r);
void ngx_http_chat_unpark(ngx_http_request_t *r);
void ngx_http_chat_finish(ngx_http_request_t *r, ngx_int_t rc);
const char *ngx_http_chat_method_name(ngx_uint_t method);
ngx_int_t ngx_http_chat_form_arg(ngx_http_request_t *r, ngx_str_t *form,
    const char *name, ngx_str_t *value);
ngx_int_t ngx_http_chat_query_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *value);


/* JSON responses and error shapes (ngx_http_chat_json.c) */

cJSON *ngx_http_chat_json_object(ngx_http_request_t *r);
cJSON *ngx_http_chat_json_array(ngx_http_request_t *r);
cJSON *ngx_http_chat_json_parse(ngx_http_request_t *r, u_char *p, size_t len);
cJSON *ngx_http_chat_json_decode(u_char *p, size_t len);
ngx_int_t ngx_http_chat_json_int64(cJSON *item, int64_t *n);
cJSON *ngx_http_chat_json_num(cJSON *obj, const char *name, int64_t n);
cJSON *ngx_http_chat_json_str(cJSON *obj, const char *name, ngx_str_t *s);
cJSON *ngx_http_chat_json_nstr(cJSON *obj, const char *name, ngx_str_t *s);
ngx_int_t ngx_http_chat_send_json(ngx_http_request_t *r, ngx_uint_t status,
    cJSON *json);
ngx_int_t ngx_http_chat_send_raw(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *json);
ngx_int_t ngx_http_chat_send_buffer(ngx_http_request_t *r, ngx_str_t *body);
/* key and value must outlive the response (literals, r->pool) */
ngx_int_t ngx_http_chat_add_header(ngx_http_request_t *r, const char *key,
    const char *value);
ngx_int_t ngx_http_chat_send_detail(ngx_http_request_t *r,
    ngx_uint_t status, const char *detail);
ngx_int_t ngx_http_chat_send_message(ngx_http_request_t *r,
    const char *message, const char *name, int64_t id);
ngx_int_t ngx_http_chat_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error, const char *message, cJSON *details);
ngx_int_t ngx_http_chat_send_flat_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *error, const char *message);
ngx_int_t ngx_http_chat_send_unauthorized(ngx_http_request_t *r);
ngx_int_t ngx_http_chat_send_unavailable(ngx_http_request_t *r);
/* 503 with Retry-After: the server is too busy right now */
ngx_int_t ngx_http_chat_send_busy(ngx_http_request_t *r);
ngx_int_t ngx_http_chat_send_method_not_allowed(ngx_http_request_t *r,
    const char *allow);

/* 422 with the application-level list (E-B') */
cJSON *ngx_http_chat_app_invalid(ngx_http_request_t *r, cJSON *errors,
    const char *field, const char *message, cJSON *value);
ngx_int_t ngx_http_chat_send_app_invalid(ngx_http_request_t *r,
    const char *message, cJSON *errors);
/* 422 E-B' "<name> must be a positive integer" */
ngx_int_t ngx_http_chat_send_not_positive(ngx_http_request_t *r,
    const char *name, int64_t value);

/* 422 with a pydantic-style detail array (E-C) */
cJSON *ngx_http_chat_invalid(ngx_http_request_t *r, cJSON *errors,
    const char *where, const char *field, const char *type, const char *msg,
    cJSON *input);
ngx_int_t ngx_http_chat_send_invalid(ngx_http_request_t *r, cJSON *errors);

/* pydantic-style checks (ngx_http_chat_valid.c): NGX_OK, NGX_DECLINED when
 * an error item was appended to *errors, NGX_ERROR */
ngx_int_t ngx_http_chat_body_string(ngx_http_request_t *r, cJSON **errors,
    cJSON *json, const char *field, ngx_uint_t required, ngx_int_t min,
    ngx_int_t max, ngx_str_t *value);
ngx_int_t ngx_http_chat_body_int(ngx_http_request_t *r, cJSON **errors,
    cJSON *json, const char *field, ngx_uint_t required, int64_t *value);
ngx_int_t ngx_http_chat_json_int(ngx_http_request_t *r, cJSON **errors,
    cJSON *item, const char *where, const char *field, int64_t *value);
ngx_int_t ngx_http_chat_query_string(ngx_http_request_t *r, cJSON **errors,
    const char *name, ngx_uint_t required, ngx_int_t min, ngx_int_t max,
    ngx_str_t *value);
ngx_int_t ngx_http_chat_query_int(ngx_http_request_t *r, cJSON **errors,
    const char *name, int64_t def, int64_t min, int64_t max, int64_t *value);
ngx_int_t ngx_http_chat_check_int(ngx_http_request_t *r, cJSON **errors,
    const char *where, const char *name, ngx_str_t *s, int64_t min,
    int64_t max, int64_t *value);
ngx_int_t ngx_http_chat_parse_bool(ngx_str_t *s, ngx_uint_t *value);
ngx_int_t ngx_http_chat_body_bool(ngx_http_request_t *r, cJSON **errors,
    cJSON *json, const char *field, ngx_uint_t def, ngx_uint_t *value);

ngx_int_t ngx_http_chat_utf8_length(ngx_str_t *s);
ngx_int_t ngx_http_chat_parse_id(ngx_str_t *s, int64_t *id);
u_char *ngx_http_chat_iso_time(u_char *p, time_t sec, ngx_uint_t usec);
ngx_int_t ngx_http_chat_iso_now(ngx_pool_t *pool, ngx_str_t *s);
cJSON *ngx_http_chat_json_sql_time(cJSON *obj, const char *name,
    ngx_str_t *cell);


/* authentication (ngx_http_chat_auth.c) */

ngx_int_t ngx_http_chat_jwt_issue(ngx_http_request_t *r, ngx_int_t user_id,
    ngx_str_t *email, ngx_str_t *token);
ngx_int_t ngx_http_chat_jwt_verify(ngx_http_request_t *r, ngx_str_t *token,
    ngx_http_chat_ctx_t *ctx);
ngx_int_t ngx_http_chat_bearer(ngx_http_request_t *r, ngx_str_t *token);
ngx_int_t ngx_http_chat_authenticate(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_str_t *token,
    ngx_http_chat_handler_pt next);
ngx_int_t ngx_http_chat_revoked_key(ngx_http_request_t *r, ngx_str_t *token,
    ngx_str_t *key);
ngx_int_t ngx_http_chat_revoke(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_redis_pt handler);

/* bcrypt in the CPU thread pool */

typedef struct {
    char                        password[80];   /* NUL-terminated */
    char                        hash[128];      /* stored or computed */
    char                        setting[64];
    ngx_uint_t                  match;
} ngx_http_chat_bcrypt_t;

ngx_int_t ngx_http_chat_bcrypt_hash(ngx_http_request_t *r,
    ngx_http_chat_bcrypt_t *b, ngx_http_chat_thread_done_pt done);
ngx_int_t ngx_http_chat_bcrypt_verify(ngx_http_request_t *r,
    ngx_http_chat_bcrypt_t *b, ngx_http_chat_thread_done_pt done);


/* operations (ngx_http_chat_op.c and each datastore's file) */

ngx_int_t ngx_http_chat_op_sql(ngx_http_chat_op_t *op, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs);
/* the same as a prepared statement, cached per connection: for statements
 * run again and again; the result has the same form */
ngx_int_t ngx_http_chat_op_stmt(ngx_http_chat_op_t *op, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs);
/* placeholders for a list of n values in a prepared statement: rounded up,
 * so that lists of any length make a few statement texts, not one each */
ngx_uint_t ngx_http_chat_sql_list_size(ngx_uint_t n);
ngx_int_t ngx_http_chat_op_redis(ngx_http_chat_op_t *op, int argc,
    const char **argv, const size_t *argvlen);
/* run() gets a client of the core's pool for the configured database */
ngx_int_t ngx_http_chat_op_mongo(ngx_http_chat_op_t *op,
    ngx_http_chat_mongo_pt run, void *data);
/* CPU-bound work: bounded queue, bounded wait, lowered thread priority */
ngx_int_t ngx_http_chat_op_cpu(ngx_http_chat_op_t *op,
    ngx_http_chat_thread_pt run, void *data);
ngx_int_t ngx_http_chat_op_thread(ngx_http_chat_op_t *op,
    ngx_thread_pool_t *pool, ngx_http_chat_thread_pt run, void *data);

/* for the datastores, once they are sure to ask the datastore: NGX_OK, or
 * NGX_DECLINED when its circuit is open and the operation was answered
 * "unavailable" at once; unjudge() when what ends the operation is not
 * the datastore's doing (a full queue of ours) */
ngx_int_t ngx_http_chat_op_admit(ngx_http_chat_op_t *op,
    ngx_uint_t datastore);
void ngx_http_chat_op_unjudge(ngx_http_chat_op_t *op);

/* work not started yet is withdrawn, a late result is dropped: the
 * handler still runs once, with NGX_ABORT */
void ngx_http_chat_op_cancel(ngx_http_chat_op_t *op);
void ngx_http_chat_op_cancel_all(ngx_queue_t *ops);

/* for the datastores: start() when an operation is taken, then done() or
 * post(), which runs the handler from the posted events */
void ngx_http_chat_op_start(ngx_http_chat_op_t *op);
void ngx_http_chat_op_post(ngx_http_chat_op_t *op, ngx_int_t rc);
void ngx_http_chat_op_done(ngx_http_chat_op_t *op, ngx_int_t rc);

/* fan-in: members started on their own; "all" completes after the last */
ngx_http_chat_op_t *ngx_http_chat_op_member(ngx_http_chat_op_t *all,
    ngx_http_chat_op_pt handler, void *data);
void ngx_http_chat_op_wait(ngx_http_chat_op_t *all);
/* an operation that could not be started completes with NGX_ERROR */
void ngx_http_chat_op_fail(ngx_http_chat_op_t *op);

/* in flight anywhere in this worker: an exiting worker waits for them */
extern ngx_uint_t  ngx_http_chat_ops_active;


/* request wrappers (ngx_http_chat_request.c): the request is parked while
 * its operation runs, the continuation's result finalizes it */

ngx_int_t ngx_http_chat_sql(ngx_http_request_t *r, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_http_chat_sql_pt handler);
/* res->next is next, for the handler to continue with */
ngx_int_t ngx_http_chat_sql_then(ngx_http_request_t *r, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_http_chat_sql_pt handler, ngx_http_chat_handler_pt next);
/* the same through ngx_http_chat_op_stmt() */
ngx_int_t ngx_http_chat_stmt(ngx_http_request_t *r, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_http_chat_sql_pt handler);
ngx_int_t ngx_http_chat_stmt_then(ngx_http_request_t *r, const char *sql,
    ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs,
    ngx_http_chat_sql_pt handler, ngx_http_chat_handler_pt next);
ngx_int_t ngx_http_chat_redis(ngx_http_request_t *r,
    ngx_http_chat_redis_pt handler, int argc, const char **argv,
    const size_t *argvlen);
ngx_int_t ngx_http_chat_thread(ngx_http_request_t *r,
    ngx_thread_pool_t *pool, ngx_http_chat_thread_pt run, void *data,
    ngx_http_chat_thread_done_pt done);
ngx_int_t ngx_http_chat_cpu(ngx_http_request_t *r,
    ngx_http_chat_thread_pt run, void *data,
    ngx_http_chat_thread_done_pt done);
ngx_int_t ngx_http_chat_mongo(ngx_http_request_t *r,
    ngx_http_chat_mongo_pt run, void *data,
    ngx_http_chat_thread_done_pt done);

/* a request's fan-in: done(r, ctx, rc, data) after the last member, rc
 * NGX_OK or the first member's failure */
typedef ngx_int_t (*ngx_http_chat_all_pt)(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc, void *data);
ngx_http_chat_op_t *ngx_http_chat_all(ngx_http_request_t *r,
    ngx_http_chat_all_pt done, void *data);
ngx_int_t ngx_http_chat_all_wait(ngx_http_request_t *r,
    ngx_http_chat_op_t *all);
/* the verdict on the token of an EARLY route: open() runs the continuation
 * held meanwhile, if any; shut() drops or cancels what the handler started;
 * both return what the request is finalized with for the check itself */
ngx_int_t ngx_http_chat_gate_open(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
void ngx_http_chat_gate_shut(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx);

/* fire and forget: nothing waits, a failure is logged and counted */
void ngx_http_chat_sql_forget(ngx_log_t *log, const char *what,
    const char *sql, ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs);
void ngx_http_chat_stmt_forget(ngx_log_t *log, const char *what,
    const char *sql, ngx_http_chat_sql_arg_t *args, ngx_uint_t nargs);


/* MariaDB (ngx_http_chat_mysql.c) */

ngx_int_t ngx_http_chat_mysql_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf);
void ngx_http_chat_mysql_exit_process(ngx_cycle_t *cycle);
ngx_uint_t ngx_http_chat_mysql_state(void);

/* the schema the modules need, checked once per worker
 * (ngx_http_chat_schema.c) */
ngx_int_t ngx_http_chat_schema_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf);
void ngx_http_chat_schema_exit_process(ngx_cycle_t *cycle);


/* Redis (ngx_http_chat_redis.c) */

ngx_int_t ngx_http_chat_redis_send(int argc, const char **argv,
    const size_t *argvlen);
ngx_int_t ngx_http_chat_redis_subscribe(ngx_str_t *channel,
    ngx_http_chat_message_pt handler, void *data);
ngx_int_t ngx_http_chat_redis_unsubscribe(ngx_str_t *channel, void *data);
ngx_int_t ngx_http_chat_redis_subscribed(ngx_str_t *channel, void *data,
    ngx_http_chat_ready_pt ready);
/* the number of the pub/sub message being dispatched */
ngx_uint_t ngx_http_chat_redis_message(void);
ngx_int_t ngx_http_chat_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf);
void ngx_http_chat_redis_exit_process(ngx_cycle_t *cycle);
ngx_uint_t ngx_http_chat_redis_state(void);


/* thread pools: CPU work and MongoDB (ngx_http_chat_thread.c,
 * ngx_http_chat_mongo.c) */

ngx_int_t ngx_http_chat_thread_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf);
ngx_int_t ngx_http_chat_mongo_error(bson_error_t *error);
ngx_int_t ngx_http_chat_mongo_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf);
void ngx_http_chat_mongo_exit_process(ngx_cycle_t *cycle);
ngx_uint_t ngx_http_chat_mongo_state(void);


/* events to Redis Streams (ngx_http_chat_event.c) */

ngx_int_t ngx_http_chat_event_publish(ngx_http_request_t *r,
    const char *topic, int64_t key, const char *type, cJSON *fields);
ngx_int_t ngx_http_chat_event_send(ngx_pool_t *pool, ngx_log_t *log,
    ngx_uint_t maxlen, const char *topic, int64_t key, const char *type,
    cJSON *fields);
ngx_int_t ngx_http_chat_event_send_trace(ngx_pool_t *pool, ngx_log_t *log,
    ngx_uint_t maxlen, const char *topic, int64_t key, const char *type,
    cJSON *fields, ngx_str_t *trace);
ngx_int_t ngx_http_chat_py_json(ngx_pool_t *pool, cJSON *json,
    ngx_str_t *out);


/* Server-Sent Events (ngx_http_chat_sse.c) */

/* "id: <id>\r\nevent: <event>\r\ndata: <json.dumps(data)>\r\n\r\n";
 * id may be NULL */
ngx_int_t ngx_http_chat_sse_frame(ngx_pool_t *pool, const char *event,
    ngx_str_t *id, cJSON *data, ngx_str_t *frame);

/* the frame reaches every open stream of the channel on every node */
ngx_int_t ngx_http_chat_sse_publish(ngx_str_t *channel, ngx_str_t *frame);

/* sends the stream's headers; the request stays open until the client
 * leaves, the stream falls too far behind, or it is closed */
ngx_http_chat_sse_t *ngx_http_chat_sse_open(ngx_http_request_t *r);
ngx_int_t ngx_http_chat_sse_send(ngx_http_chat_sse_t *s, ngx_str_t *frame);

/* live frames of a channel; with hold they wait until release(), which
 * drops those whose id is in ids (already replayed) */
ngx_int_t ngx_http_chat_sse_subscribe(ngx_http_chat_sse_t *s,
    ngx_str_t *channel, ngx_uint_t hold);
ngx_int_t ngx_http_chat_sse_release(ngx_http_chat_sse_t *s,
    ngx_array_t *ids);
void ngx_http_chat_sse_close(ngx_http_chat_sse_t *s, ngx_int_t rc);
ngx_uint_t ngx_http_chat_sse_count(void);
/* frees what the worker keeps for its streams' output */
void ngx_http_chat_sse_exit_process(ngx_cycle_t *cycle);
/* next(r, ctx) once the stream's subscription is in place in Redis */
ngx_int_t ngx_http_chat_sse_subscribed(ngx_http_chat_sse_t *s,
    ngx_http_chat_handler_pt next);
/* where a resuming client left off: Last-Event-ID, else ?last_event_id= */
void ngx_http_chat_sse_last_event_id(ngx_http_request_t *r, ngx_str_t *last);


/* circuit breakers (ngx_http_chat_circuit.c): state shared by the
 * workers; verdict NGX_OK (the datastore answered), NGX_DECLINED (it
 * failed or timed out), NGX_ABORT (nothing learnt) */

ngx_int_t ngx_http_chat_circuit_init(ngx_conf_t *cf);
void ngx_http_chat_circuit_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf);
ngx_int_t ngx_http_chat_circuit_allow(ngx_uint_t datastore,
    ngx_uint_t *probe);
void ngx_http_chat_circuit_report(ngx_uint_t datastore, ngx_int_t verdict,
    ngx_uint_t probe);
const char *ngx_http_chat_circuit_name(ngx_uint_t datastore);
/* Retry-After for a 503 while a circuit is open */
ngx_int_t ngx_http_chat_circuit_retry_after(ngx_http_request_t *r);
u_char *ngx_http_chat_circuit_metrics(u_char *p, u_char *last);
ngx_int_t ngx_http_chat_circuits_handler(ngx_http_request_t *r);

/* the gateway's /health/services (ngx_http_chat_health.c) */

char *ngx_http_chat_health_services(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* logs and traces (ngx_http_chat_log.c): the $chat_* variables */

ngx_int_t ngx_http_chat_log_add_variables(ngx_conf_t *cf);
ngx_table_elt_t *ngx_http_chat_header(ngx_http_request_t *r,
    const char *name, size_t len, ngx_uint_t *n);
ngx_int_t ngx_http_chat_traceparent(ngx_http_request_t *r, ngx_str_t *tp);
/* bytes that are not UTF-8 replaced by U+FFFD, in a copy if any */
ngx_int_t ngx_http_chat_utf8_scrub(ngx_pool_t *pool, ngx_str_t *s);


ngx_int_t ngx_http_chat_diag_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_chat_cors_init(ngx_conf_t *cf);
ngx_int_t ngx_http_chat_metrics_init(ngx_conf_t *cf);
ngx_int_t ngx_http_chat_metrics_handler(ngx_http_request_t *r);
void ngx_http_chat_metrics_stream(ngx_http_chat_route_t *route,
    ngx_int_t delta);
void ngx_http_chat_metrics_stream_dropped(ngx_http_chat_route_t *route);
void ngx_http_chat_metrics_consumed(ngx_str_t *topic, ngx_str_t *id);
void ngx_http_chat_metrics_group(ngx_str_t *topic, ngx_uint_t pending,
    ngx_int_t lag);
void ngx_http_chat_metrics_event(ngx_uint_t published);

/* CPU tasks by outcome, the queue's length and its latest wait */
#define NGX_HTTP_CHAT_CPU_DONE       0
#define NGX_HTTP_CHAT_CPU_CANCELLED  1
#define NGX_HTTP_CHAT_CPU_REJECTED   2

void ngx_http_chat_metrics_cpu(ngx_uint_t outcome);
void ngx_http_chat_metrics_cpu_queue(ngx_int_t delta, ngx_msec_t wait);
void ngx_http_chat_metrics_forgotten(void);
char *ngx_http_chat_cors_origins(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


/*
 * Bounds of a number, time or size directive, checked by nginx -t: the
 * post handler for ngx_conf_set_num_slot (_num), _msec_slot (_msec),
 * _sec_slot (_sec) or _size_slot (_size) returns "err", which nginx prints
 * after the directive's name.  high 0 is "no upper bound".
 */

typedef struct {
    ngx_conf_post_handler_pt    post_handler;
    ngx_uint_t                  low;
    ngx_uint_t                  high;
    char                       *err;
} ngx_http_chat_conf_bounds_t;

char *ngx_http_chat_conf_check_num(ngx_conf_t *cf, void *post, void *data);
char *ngx_http_chat_conf_check_msec(ngx_conf_t *cf, void *post, void *data);
char *ngx_http_chat_conf_check_sec(ngx_conf_t *cf, void *post, void *data);
char *ngx_http_chat_conf_check_size(ngx_conf_t *cf, void *post, void *data);

/* a string directive's value: not empty, no control characters */
char *ngx_http_chat_conf_check_name(ngx_conf_t *cf, void *post, void *data);

extern ngx_conf_post_t  ngx_http_chat_conf_name_post;

ngx_int_t ngx_http_chat_mongo_check_uri(ngx_conf_t *cf, ngx_command_t *cmd,
    u_char *uri);


/* the core's datastore connection helper: level-triggered interest in one
 * direction of a connection's fd */
ngx_int_t ngx_http_chat_event_interest(ngx_event_t *ev, ngx_int_t event,
    ngx_uint_t want);


/* Redis Streams consumers (ngx_http_chat_redis.c) */

typedef struct ngx_http_chat_redis_consumer_s  ngx_http_chat_redis_consumer_t;

/* an entry handed to a consumer's handler; it stays valid until settled
 * with ack() or retry(), and is freed then */

typedef struct {
    ngx_str_t                   stream;
    ngx_str_t                   id;         /* "1700000000000-0" */
    ngx_str_t                  *fields;     /* name, value, name, value... */
    ngx_uint_t                  nfields;    /* names and values */

    ngx_http_chat_redis_consumer_t  *consumer;
    ngx_queue_t                 queue;
} ngx_http_chat_redis_entry_t;

typedef void (*ngx_http_chat_redis_entry_pt)(ngx_http_chat_redis_entry_t *e,
    void *data);

typedef struct {
    ngx_str_t                  *streams;
    ngx_uint_t                  nstreams;
    ngx_str_t                   group;
    ngx_str_t                   name;       /* unique per process and node */
    ngx_uint_t                  count;      /* entries per stream and read */
    ngx_msec_t                  block;      /* XREADGROUP BLOCK */
    ngx_msec_t                  claim_idle; /* XAUTOCLAIM min-idle, 0: off */
    ngx_msec_t                  claim_interval; /* 0: claim_idle */
    ngx_http_chat_redis_entry_pt  handler;
    void                       *data;
} ngx_http_chat_redis_consumer_conf_t;

/* a worker's consumer on a connection of its own, from init_process on;
 * the names are copied */
ngx_http_chat_redis_consumer_t *ngx_http_chat_redis_consumer_create(
    ngx_cycle_t *cycle, ngx_http_chat_redis_consumer_conf_t *conf);
/* processed: XACK now */
void ngx_http_chat_redis_consumer_ack(ngx_http_chat_redis_entry_t *e);
/* not processed: stays pending, read again after a pause */
void ngx_http_chat_redis_consumer_retry(ngx_http_chat_redis_entry_t *e);
/* at worker exit; unsettled entries are freed, and left pending */
void ngx_http_chat_redis_consumer_destroy(ngx_http_chat_redis_consumer_t *c);
/* a field of an entry by name, NULL if it has none (ngx_http_chat_event.c) */
ngx_str_t *ngx_http_chat_event_field(ngx_http_chat_redis_entry_t *e,
    const char *name);


#endif /* _NGX_HTTP_CHAT_CORE_MODULE_H_INCLUDED_ */
