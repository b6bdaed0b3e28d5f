
/*
 * nginx-chat: the schema check at start.
 *
 * A database the original services created lacks what the modules add to
 * it (conf/schema.sql): without users.profile_image_url every user query
 * fails, without the unique key over a room's pair get-or-create makes a
 * new room on every call.  Requests would fail one by one, or worse, work
 * wrongly; so once per worker, as soon as MariaDB answers, the catalog is
 * read through the operation layer and one error names what is missing
 * and the command that adds it ("./build.sh migrate").
 *
 * Requests are served meanwhile: most of them work on such a database,
 * and refusing all of them would turn a half-migrated database into an
 * outage.  The check only reports; migrate fixes.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_chat_core_module.h"


#define NGX_HTTP_CHAT_SCHEMA_RETRY_MIN  1000
#define NGX_HTTP_CHAT_SCHEMA_RETRY_MAX  30000


typedef struct {
    char                 kind;      /* 'c': column, 'k': key */
    ngx_str_t            table;
    ngx_str_t            name;
    const char          *why;
} ngx_http_chat_schema_item_t;


typedef struct {
    ngx_http_chat_op_t   op;
    ngx_event_t          retry;
    ngx_msec_t           delay;
} ngx_http_chat_schema_check_t;


static void ngx_http_chat_schema_start(ngx_event_t *ev);
static void ngx_http_chat_schema_free(void);
static void ngx_http_chat_schema_done(ngx_http_chat_op_t *op);
static ngx_uint_t ngx_http_chat_schema_has(ngx_http_chat_sql_res_t *res,
    ngx_http_chat_schema_item_t *item);


/*
 * What the modules rely on and a database of the original lacks; a table
 * that is missing altogether shows as its "id" column
 */

static ngx_http_chat_schema_item_t  ngx_http_chat_schema_items[] = {

    { 'c', ngx_string("users"), ngx_string("id"),
      "table users" },

    { 'c', ngx_string("users"), ngx_string("profile_image_url"),
      "column users.profile_image_url (every user query reads it)" },

    { 'c', ngx_string("friendships"), ngx_string("id"),
      "table friendships" },

    { 'k', ngx_string("friendships"), ngx_string("ux_friendships_live_pair"),
      "unique key friendships.ux_friendships_live_pair (crossed requests "
      "would make two friendships of a pair)" },

    { 'c', ngx_string("chat_rooms"), ngx_string("id"),
      "table chat_rooms" },

    { 'k', ngx_string("chat_rooms"), ngx_string("ux_chat_rooms_pair"),
      "unique key chat_rooms.ux_chat_rooms_pair (get-or-create would make "
      "a new room on every call)" },

    { 0, ngx_null_string, ngx_null_string, NULL }
};


static const char  ngx_http_chat_schema_sql[] =
    "SELECT 'c', TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = DATABASE() "
    "AND TABLE_NAME IN ('users', 'friendships', 'chat_rooms') "
    "UNION ALL "
    "SELECT DISTINCT 'k', TABLE_NAME, INDEX_NAME "
    "FROM information_schema.STATISTICS "
    "WHERE TABLE_SCHEMA = DATABASE() "
    "AND TABLE_NAME IN ('users', 'friendships', 'chat_rooms')";


static ngx_http_chat_schema_check_t  *ngx_http_chat_schema_check;
static ngx_str_t                      ngx_http_chat_schema_database;


ngx_int_t
ngx_http_chat_schema_init_process(ngx_cycle_t *cycle,
    ngx_http_chat_core_main_conf_t *cmcf)
{
    ngx_http_chat_schema_check_t  *check;

    if (cmcf->mysql_host.len == 0
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    check = ngx_calloc(sizeof(ngx_http_chat_schema_check_t), cycle->log);
    if (check == NULL) {
        return NGX_ERROR;
    }

    ngx_http_chat_schema_database = cmcf->mysql_database;

    check->delay = NGX_HTTP_CHAT_SCHEMA_RETRY_MIN;
    check->retry.handler = ngx_http_chat_schema_start;
    check->retry.data = check;
    check->retry.log = cycle->log;

    /* a pending retry must not keep an exiting worker alive */
    check->retry.cancelable = 1;

    ngx_http_chat_schema_check = check;

    /* from the event loop, once every module's init_process has run */
    ngx_add_timer(&check->retry, 0);

    return NGX_OK;
}


void
ngx_http_chat_schema_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_chat_schema_free();
}


static void
ngx_http_chat_schema_free(void)
{
    ngx_http_chat_schema_check_t  *check;

    check = ngx_http_chat_schema_check;

    if (check == NULL || check->op.active) {
        /* an operation in flight still runs its handler, which frees */
        return;
    }

    if (check->retry.timer_set) {
        ngx_del_timer(&check->retry);
    }

    ngx_free(check);
    ngx_http_chat_schema_check = NULL;
}


static void
ngx_http_chat_schema_start(ngx_event_t *ev)
{
    ngx_http_chat_op_t            *op;
    ngx_http_chat_schema_check_t  *check;

    check = ev->data;
    op = &check->op;

    ngx_memzero(op, sizeof(ngx_http_chat_op_t));

    op->log = ev->log;
    op->handler = ngx_http_chat_schema_done;
    op->data = check;

    op->pool = ngx_create_pool(4096, ev->log);
    if (op->pool == NULL) {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat schema: reading the catalog");

    if (ngx_http_chat_op_sql(op, ngx_http_chat_schema_sql, NULL, 0)
        != NGX_OK)
    {
        ngx_http_chat_op_fail(op);
    }
}


static void
ngx_http_chat_schema_done(ngx_http_chat_op_t *op)
{
    u_char                        *p, *last;
    u_char                         buf[NGX_MAX_ERROR_STR];
    ngx_uint_t                     missing;
    ngx_http_chat_schema_item_t   *item;
    ngx_http_chat_schema_check_t  *check;

    check = op->data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "chat schema: catalog rc:%i", op->rc);

    switch (op->rc) {

    case NGX_OK:
        break;

    case NGX_DECLINED:

        /* MariaDB is not there yet: ask again when it may be */

        ngx_destroy_pool(op->pool);
        op->pool = NULL;

        if (ngx_exiting || ngx_terminate || ngx_quit) {
            ngx_http_chat_schema_free();
            return;
        }

        ngx_add_timer(&check->retry, check->delay);
        check->delay = ngx_min(check->delay * 2,
                               NGX_HTTP_CHAT_SCHEMA_RETRY_MAX);
        return;

    default:
        ngx_log_error(NGX_LOG_ERR, op->log, 0,
                      "chat schema: the catalog of database \"%V\" could "
                      "not be read (error %ui), the schema is not checked",
                      &ngx_http_chat_schema_database, op->sql.errnum);
        goto done;
    }

    p = buf;
    last = buf + sizeof(buf);
    missing = 0;

    for (item = ngx_http_chat_schema_items; item->kind; item++) {

        if (ngx_http_chat_schema_has(&op->sql, item)) {
            continue;
        }

        p = ngx_slprintf(p, last, "%s%s", missing ? ", " : "", item->why);
        missing++;
    }

    if (missing) {
        ngx_log_error(NGX_LOG_ERR, op->log, 0,
                      "chat schema: database \"%V\" lacks %*s; "
                      "run ./build.sh migrate (conf/migrate.py)",
                      &ngx_http_chat_schema_database, p - buf, buf);

    } else {
        ngx_log_error(NGX_LOG_INFO, op->log, 0,
                      "chat schema: database \"%V\" has what the modules "
                      "need", &ngx_http_chat_schema_database);
    }

done:

    ngx_destroy_pool(op->pool);
    op->pool = NULL;

    ngx_http_chat_schema_free();
}


static ngx_uint_t
ngx_http_chat_schema_has(ngx_http_chat_sql_res_t *res,
    ngx_http_chat_schema_item_t *item)
{
    ngx_str_t   *row;
    ngx_uint_t   i;

    if (res->ncols != 3) {
        return 0;
    }

    for (i = 0; i < res->nrows; i++) {
        row = &res->cells[i * 3];

        if (row[0].len == 1 && row[0].data[0] == (u_char) item->kind
            && row[1].len == item->table.len
            && ngx_strncmp(row[1].data, item->table.data, row[1].len) == 0
            && row[2].len == item->name.len
            && ngx_strncmp(row[2].data, item->name.data, row[2].len) == 0)
        {
            return 1;
        }
    }

    return 0;
}
