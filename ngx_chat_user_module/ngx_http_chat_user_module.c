
/*
 * nginx-chat user service: the "chat_user" location handler, its routes,
 * and what the endpoints share (the caller's row, UserProfile JSON, input
 * validation in the original's shapes).
 */


#include "ngx_http_chat_user_module.h"


static ngx_int_t ngx_http_chat_user_init_module(ngx_cycle_t *cycle);
static void *ngx_http_chat_user_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_chat_user_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_chat_user_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_chat_user(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_chat_user_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_chat_user_loaded(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_label(u_char *p, u_char *last);
static char *ngx_http_chat_user_check_dir(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_chat_user_check_url(ngx_conf_t *cf, void *post,
    void *data);


static ngx_conf_post_t  ngx_http_chat_user_dir_post = {
    ngx_http_chat_user_check_dir
};

static ngx_conf_post_t  ngx_http_chat_user_url_post = {
    ngx_http_chat_user_check_url
};

static ngx_http_chat_conf_bounds_t  ngx_http_chat_user_image_bounds = {
    ngx_http_chat_conf_check_size, 1, 0, "must be 1 byte or more"
};


static ngx_command_t  ngx_http_chat_user_commands[] = {

    { ngx_string("chat_user"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chat_user,
      0,
      0,
      NULL },

    { ngx_string("chat_user_upload_dir"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chat_user_loc_conf_t, upload_dir),
      &ngx_http_chat_user_dir_post },

    { ngx_string("chat_user_image_url"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chat_user_loc_conf_t, image_url),
      &ngx_http_chat_user_url_post },

    { ngx_string("chat_user_image_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chat_user_loc_conf_t, image_max_size),
      &ngx_http_chat_user_image_bounds },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_chat_user_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_chat_user_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_chat_user_create_loc_conf,    /* create location configuration */
    ngx_http_chat_user_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_chat_user_module = {
    NGX_MODULE_V1,
    &ngx_http_chat_user_module_ctx,        /* module context */
    ngx_http_chat_user_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_chat_user_init_module,        /* init module */
    ngx_http_chat_user_presence_init,      /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_chat_user_presence_exit,      /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* the literal "/api/profile/me" comes before "/api/profile/{user_id}" (U13) */

static ngx_http_chat_route_t  ngx_http_chat_user_routes[] = {

    { NGX_HTTP_POST, ngx_string("/api/auth/register"),
      NGX_HTTP_CHAT_JSON, ngx_http_chat_user_register },

    { NGX_HTTP_POST, ngx_string("/api/auth/login"),
      NGX_HTTP_CHAT_BODY, ngx_http_chat_user_login_form },

    { NGX_HTTP_POST, ngx_string("/api/auth/login/json"),
      NGX_HTTP_CHAT_JSON, ngx_http_chat_user_login_json },

    { NGX_HTTP_POST, ngx_string("/api/auth/logout"),
      NGX_HTTP_CHAT_AUTH, ngx_http_chat_user_logout },

    { NGX_HTTP_GET, ngx_string("/api/profile/me"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY, ngx_http_chat_user_me },

    { NGX_HTTP_PUT, ngx_string("/api/profile/me"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_JSON, ngx_http_chat_user_update },

    { NGX_HTTP_POST, ngx_string("/api/profile/me/image"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_BODY,
      ngx_http_chat_user_image_upload },

    { NGX_HTTP_DELETE, ngx_string("/api/profile/me/image"),
      NGX_HTTP_CHAT_AUTH, ngx_http_chat_user_image_delete },

    { NGX_HTTP_GET, ngx_string("/api/profile/{user_id}"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY, ngx_http_chat_user_get },

    { NGX_HTTP_GET, ngx_string("/api/users/search"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY, ngx_http_chat_user_search },

    { NGX_HTTP_GET, ngx_string("/api/users"),
      NGX_HTTP_CHAT_AUTH, ngx_http_chat_user_list },

    { NGX_HTTP_POST, ngx_string("/api/users/batch"),
      NGX_HTTP_CHAT_INTERNAL|NGX_HTTP_CHAT_JSON, ngx_http_chat_user_batch },

    { NGX_HTTP_GET, ngx_string("/api/users/{user_id}/exists"),
      NGX_HTTP_CHAT_INTERNAL, ngx_http_chat_user_exists },

    { NGX_HTTP_GET, ngx_string("/api/users/{user_id}"),
      NGX_HTTP_CHAT_AUTH|NGX_HTTP_CHAT_EARLY, ngx_http_chat_user_get },

    { 0, ngx_null_string, 0, NULL }
};


/* in the master, after the configuration is read: see the image file */

static ngx_int_t
ngx_http_chat_user_init_module(ngx_cycle_t *cycle)
{
    return ngx_http_chat_user_image_init(cycle);
}


static void *
ngx_http_chat_user_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_chat_user_main_conf_t  *umcf;

    umcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_chat_user_main_conf_t));
    if (umcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&umcf->locations, cf->pool, 4,
                       sizeof(ngx_http_chat_user_loc_conf_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return umcf;
}


static void *
ngx_http_chat_user_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_chat_user_loc_conf_t  *ulcf;

    ulcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_chat_user_loc_conf_t));
    if (ulcf == NULL) {
        return NULL;
    }

    ulcf->image_max_size = NGX_CONF_UNSET_SIZE;

    return ulcf;
}


static char *
ngx_http_chat_user_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_chat_user_loc_conf_t *prev = parent;
    ngx_http_chat_user_loc_conf_t *conf = child;

    ngx_conf_merge_str_value(conf->upload_dir, prev->upload_dir,
                             NGX_HTTP_CHAT_UPLOAD_DIR);
    ngx_conf_merge_str_value(conf->image_url, prev->image_url, "/uploads/");
    ngx_conf_merge_size_value(conf->image_max_size, prev->image_max_size,
                              5 * 1024 * 1024);

    if (ngx_conf_full_name(cf->cycle, &conf->upload_dir, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The upload directory is made by the master before the workers start
 * (ngx_http_chat_user_image_init()), one level only: it must be a
 * directory already, or its parent must be one.
 */

static char *
ngx_http_chat_user_check_dir(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *dir = data;

    u_char           *p, *last;
    ngx_str_t        *value;
    ngx_err_t         err;
    ngx_file_info_t   fi;

    if (dir->len == 0) {
        return "must not be empty";
    }

    if (ngx_conf_full_name(cf->cycle, dir, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* the full name is NUL-terminated */

    if (ngx_file_info(dir->data, &fi) != NGX_FILE_ERROR) {
        if (!ngx_is_dir(&fi)) {
            return "is not a directory";
        }

        return NGX_CONF_OK;
    }

    err = ngx_errno;

    if (err == NGX_ENOENT) {
        p = ngx_pstrdup(cf->pool, dir);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        /* the full name starts with "/"; "/a/b/" has the parent "/a" */

        last = p + dir->len;

        while (last - p > 1 && last[-1] == '/') {
            last--;
        }

        do {
            last--;
        } while (last > p && *last != '/');

        last[last == p ? 1 : 0] = '\0';

        if (ngx_file_info(p, &fi) != NGX_FILE_ERROR && ngx_is_dir(&fi)) {
            return NGX_CONF_OK;
        }

        return "needs an existing parent directory";
    }

    value = cf->args->elts;

    ngx_conf_log_error(NGX_LOG_EMERG, cf, err,
                       "chat: \"%V\" directive: " ngx_file_info_n
                       " \"%V\" failed", &value[0], dir);

    return NGX_CONF_ERROR;
}


/* an image's URL is this prefix and a file name: a path or an absolute URL */

static char *
ngx_http_chat_user_check_url(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *url = data;

    if ((url->len && url->data[0] == '/')
        || (url->len > 7 && ngx_strncasecmp(url->data, (u_char *) "http://", 7)
                            == 0)
        || (url->len > 8
            && ngx_strncasecmp(url->data, (u_char *) "https://", 8) == 0))
    {
        if (ngx_strlchr(url->data, url->data + url->len, '?') == NULL
            && ngx_strlchr(url->data, url->data + url->len, '#') == NULL
            && ngx_strlchr(url->data, url->data + url->len, ' ') == NULL)
        {
            return NGX_CONF_OK;
        }
    }

    return "must be a path (\"/...\") or an http:// or https:// URL "
           "without query";
}


/* conf is the main conf: the command's offset is 0 */

static char *
ngx_http_chat_user(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chat_user_main_conf_t *umcf = conf;

    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_chat_user_loc_conf_t  **ulcfp;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_chat_user_handler;

    /* merged later: the upload directory is read in init module */

    ulcfp = ngx_array_push(&umcf->locations);
    if (ulcfp == NULL) {
        return NGX_CONF_ERROR;
    }

    *ulcfp = ngx_http_conf_get_module_loc_conf(cf, ngx_http_chat_user_module);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_chat_user_handler(ngx_http_request_t *r)
{
    return ngx_http_chat_dispatch(r, ngx_http_chat_user_routes);
}


ngx_http_chat_user_ctx_t *
ngx_http_chat_user_ctx(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    if (ctx->data == NULL) {
        ctx->data = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_user_ctx_t));
    }

    return ctx->data;
}


/*
 * The user service loads the caller's row after authentication: a token
 * of a deleted user is a 404 here (API.md 2.4).  Authenticated activity
 * also keeps the caller's presence key alive (DEV-5).
 */

ngx_int_t
ngx_http_chat_user_load(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_handler_pt next)
{
    ngx_http_chat_sql_arg_t    arg;
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ngx_http_chat_user_ctx(r, ctx);
    if (uctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    arg.type = NGX_HTTP_CHAT_SQL_INT;
    arg.num = ctx->user_id;

    return ngx_http_chat_stmt_then(r, NGX_HTTP_CHAT_USER_BY_ID, &arg, 1,
                                   ngx_http_chat_user_loaded, next);
}


static ngx_int_t
ngx_http_chat_user_loaded(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res)
{
    ngx_http_chat_user_ctx_t  *uctx;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_send_unavailable(r);
    }

    if (res->nrows == 0) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_NOT_FOUND,
                                         "User not found");
    }

    uctx = ctx->data;
    uctx->user = res->cells;

    ngx_http_chat_user_touch(ctx->user_id);

    return res->next(r, ctx);
}


/* presence: EXPIRE refreshes the key only if the user is logged in */

void
ngx_http_chat_user_touch(ngx_int_t id)
{
    u_char       key[sizeof("user:online:") + NGX_INT_T_LEN];
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = "EXPIRE";
    argvlen[0] = sizeof("EXPIRE") - 1;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "user:online:%i", id) - key;
    argv[2] = NGX_HTTP_CHAT_PRESENCE_TTL;
    argvlen[2] = sizeof(NGX_HTTP_CHAT_PRESENCE_TTL) - 1;

    (void) ngx_http_chat_redis_send(3, argv, argvlen);
}


/* UserProfile (API.md 2.8) from a row of NGX_HTTP_CHAT_USER_COLUMNS */

cJSON *
ngx_http_chat_user_profile(ngx_http_request_t *r, cJSON *parent,
    ngx_str_t *row, ngx_uint_t image)
{
    cJSON    *json;
    int64_t   id;

    json = parent ? cJSON_CreateObject() : ngx_http_chat_json_object(r);
    if (json == NULL) {
        return NULL;
    }

    if (parent) {
        cJSON_AddItemToArray(parent, json);
    }

    if (ngx_http_chat_parse_id(&row[NGX_HTTP_CHAT_USER_ID], &id) != NGX_OK) {
        return NULL;
    }

    if (ngx_http_chat_json_num(json, "id", id) == NULL
        || ngx_http_chat_json_str(json, "username",
                                  &row[NGX_HTTP_CHAT_USER_NAME])
           == NULL
        || ngx_http_chat_json_nstr(json, "display_name",
                                   &row[NGX_HTTP_CHAT_USER_DISPLAY])
           == NULL
        || ngx_http_chat_json_nstr(json, "status_message",
                                   &row[NGX_HTTP_CHAT_USER_STATUS])
           == NULL
        || cJSON_AddBoolToObject(json, "is_online",
                                 row[NGX_HTTP_CHAT_USER_ONLINE].len
                                 && row[NGX_HTTP_CHAT_USER_ONLINE].data[0]
                                    != '0')
           == NULL
        || ngx_http_chat_json_sql_time(json, "last_seen_at",
                                       &row[NGX_HTTP_CHAT_USER_SEEN])
           == NULL)
    {
        return NULL;
    }

    if (image
        && ngx_http_chat_json_nstr(json, "profile_image_url",
                                   &row[NGX_HTTP_CHAT_USER_IMAGE])
           == NULL)
    {
        return NULL;
    }

    return json;
}


ngx_int_t
ngx_http_chat_user_send_profile(ngx_http_request_t *r, ngx_str_t *row,
    ngx_uint_t image)
{
    cJSON  *json;

    json = ngx_http_chat_user_profile(r, NULL, row, image);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


/*
 * The schema layer's e-mail check (API.md 2.9): one "@", a dot-atom local
 * part of at most 64 octets, a domain of letter-digit-hyphen labels with
 * at least one dot, at most 254 characters, no special-use domain.
 */

ngx_int_t
ngx_http_chat_user_valid_email(ngx_str_t *email, const char **reason)
{
    u_char      *p, *at, *last, *label, *tld;
    ngx_uint_t   i, n;

    static const char  *special[] = { "localhost", "local", "test",
                                      "invalid", "onion", "arpa", NULL };

    p = email->data;
    last = p + email->len;
    at = NULL;

    for (n = 0; p < last; p++) {
        if (*p == '@') {
            at = p;
            n++;
        }
    }

    if (n != 1) {
        *reason = "An email address must have an @-sign.";
        return NGX_DECLINED;
    }

    if (email->len > 254) {
        *reason = "The email address is too long.";
        return NGX_DECLINED;
    }

    /* the local part */

    p = email->data;

    if (at == p) {
        *reason = "There must be something before the @-sign.";
        return NGX_DECLINED;
    }

    if (at - p > 64) {
        *reason = "The email address is too long before the @-sign.";
        return NGX_DECLINED;
    }

    if (*p == '.' || at[-1] == '.') {
        *reason = "An email address cannot start or end with a period.";
        return NGX_DECLINED;
    }

    for ( /* void */ ; p < at; p++) {

        if (*p == '.' && p[1] == '.') {
            *reason = "An email address cannot have two periods in a row.";
            return NGX_DECLINED;
        }

        if (*p >= 0x80 || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
            || (*p >= '0' && *p <= '9')
            || ngx_strlchr((u_char *) ".!#$%&'*+-/=?^_`{|}~",
                           (u_char *) ".!#$%&'*+-/=?^_`{|}~" + 20, *p))
        {
            continue;
        }

        *reason = "The email address contains invalid characters before "
                  "the @-sign.";
        return NGX_DECLINED;
    }

    /* the domain */

    p = at + 1;

    if (p == last) {
        *reason = "There must be something after the @-sign.";
        return NGX_DECLINED;
    }

    if (ngx_strlchr(p, last, '.') == NULL) {
        *reason = "The part after the @-sign is not valid. It should have "
                  "a period.";
        return NGX_DECLINED;
    }

    tld = NULL;

    while (p < last) {
        label = p;

        while (p < last && *p != '.') {
            p++;
        }

        if (ngx_http_chat_user_label(label, p) != NGX_OK) {
            *reason = "The part after the @-sign is not valid.";
            return NGX_DECLINED;
        }

        tld = label;

        if (p < last) {
            p++;

            if (p == last) {
                *reason = "An email address cannot end with a period.";
                return NGX_DECLINED;
            }
        }
    }

    for (i = 0; special[i]; i++) {
        n = ngx_strlen(special[i]);

        if ((size_t) (last - tld) == n
            && ngx_strncasecmp(tld, (u_char *) special[i], n) == 0)
        {
            *reason = "The part after the @-sign is a special-use or "
                      "reserved name that cannot be used with email.";
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_user_label(u_char *p, u_char *last)
{
    u_char  *s;

    if (p == last || last - p > 63 || *p == '-' || last[-1] == '-') {
        return NGX_DECLINED;
    }

    for (s = p; s < last; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
            || (*s >= '0' && *s <= '9') || *s == '-')
        {
            continue;
        }

        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* the application layer: ^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$ */

ngx_int_t
ngx_http_chat_user_email_format(ngx_str_t *email)
{
    u_char  *p, *at, *last, *dot;

    p = email->data;
    last = p + email->len;

    at = ngx_strlchr(p, last, '@');

    if (at == NULL || at == p) {
        return NGX_DECLINED;
    }

    for ( /* void */ ; p < at; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '.' || *p == '_'
              || *p == '%' || *p == '+' || *p == '-'))
        {
            return NGX_DECLINED;
        }
    }

    /* the regex backtracks to the last dot followed by letters only */

    dot = NULL;

    for (p = at + 1; p < last; p++) {
        if (*p == '.') {
            dot = p;
            continue;
        }

        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '-'))
        {
            return NGX_DECLINED;
        }
    }

    if (dot == NULL || dot == at + 1 || last - dot < 3) {
        return NGX_DECLINED;
    }

    for (p = dot + 1; p < last; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}
