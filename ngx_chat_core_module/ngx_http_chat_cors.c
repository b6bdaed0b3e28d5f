
/*
 * CORS (API.md 7.3, DEV-11).  A preflight (OPTIONS with Origin and
 * Access-Control-Request-Method) is answered before anything else, so it
 * never needs a token; other responses to an allowed origin get the
 * allow headers from a header filter.  "*" allows every origin; with
 * credentials allowed, the origin is echoed whenever "*" cannot be used.
 */


#include "ngx_http_chat_core_module.h"


static ngx_int_t ngx_http_chat_cors_check_origin(ngx_str_t *origin);
static ngx_int_t ngx_http_chat_cors_allowed(ngx_http_request_t *r,
    ngx_str_t *origin, ngx_uint_t *any);
static ngx_table_elt_t *ngx_http_chat_cors_header(ngx_http_request_t *r,
    const char *name);
static ngx_int_t ngx_http_chat_cors_set(ngx_http_request_t *r,
    const char *name, ngx_str_t *value);
static ngx_int_t ngx_http_chat_cors_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_chat_cors_preflight_handler(ngx_http_request_t *r);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

static ngx_str_t  ngx_http_chat_cors_methods =
    ngx_string("DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT");


/*
 * An origin as a browser sends it (RFC 6454): "scheme://host" or
 * "scheme://host:port", no path, not even a trailing "/"; anything else
 * could never match.  The host is a name, an IPv4 address or an IPv6
 * address in brackets.
 */

static ngx_int_t
ngx_http_chat_cors_check_origin(ngx_str_t *origin)
{
    u_char     *p, *last, *host;
    ngx_int_t   port;

    p = origin->data;
    last = p + origin->len;

    if (origin->len == 1 && *p == '*') {
        return NGX_OK;
    }

    /* scheme */

    if (p == last || !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
    {
        return NGX_ERROR;
    }

    while (p < last && (isalnum(*p) || *p == '+' || *p == '-' || *p == '.')) {
        p++;
    }

    if (last - p < 3 || ngx_strncmp(p, "://", 3) != 0) {
        return NGX_ERROR;
    }

    p += 3;
    host = p;

    /* host */

    if (p < last && *p == '[') {
        p++;

        while (p < last && (isxdigit(*p) || *p == ':' || *p == '.')) {
            p++;
        }

        if (p == host + 1 || p == last || *p != ']') {
            return NGX_ERROR;
        }

        p++;

    } else {
        while (p < last && (isalnum(*p) || *p == '-' || *p == '.')) {
            p++;
        }

        if (p == host) {
            return NGX_ERROR;
        }
    }

    if (p == last) {
        return NGX_OK;
    }

    /* port */

    if (*p != ':' || ++p == last || last - p > 5) {
        return NGX_ERROR;
    }

    port = ngx_atoi(p, last - p);

    if (port < 1 || port > 65535) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* chat_cors_origins origin ...: every argument, in as many directives */

char *
ngx_http_chat_cors_origins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chat_core_loc_conf_t *clcf = conf;

    ngx_str_t   *value, *o;
    ngx_uint_t   i;

    if (clcf->cors_origins == NGX_CONF_UNSET_PTR) {
        clcf->cors_origins = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
        if (clcf->cors_origins == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_http_chat_cors_check_origin(&value[i]) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "chat: invalid origin \"%V\" in \"%V\" "
                               "directive: \"*\" or scheme://host[:port], "
                               "without a path", &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }

        o = ngx_array_push(clcf->cors_origins);
        if (o == NULL) {
            return NGX_CONF_ERROR;
        }

        *o = value[i];
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_chat_cors_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_chat_cors_header_filter;

    /* before access checks: a preflight carries no credentials */

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_chat_cors_preflight_handler;

    return NGX_OK;
}


static ngx_table_elt_t *
ngx_http_chat_cors_header(ngx_http_request_t *r, const char *name)
{
    size_t            n;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    n = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == n
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, n) == 0)
        {
            return &h[i];
        }
    }
}


/* NGX_OK when CORS is configured here and the origin is allowed */

static ngx_int_t
ngx_http_chat_cors_allowed(ngx_http_request_t *r, ngx_str_t *origin,
    ngx_uint_t *any)
{
    ngx_str_t                      *o;
    ngx_uint_t                      i;
    ngx_table_elt_t                *h;
    ngx_http_chat_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_chat_core_module);

    if (clcf->cors_origins == NULL || r != r->main) {
        return NGX_DECLINED;
    }

    h = ngx_http_chat_cors_header(r, "Origin");
    if (h == NULL || h->value.len == 0) {
        return NGX_DECLINED;
    }

    *origin = h->value;
    *any = 0;

    o = clcf->cors_origins->elts;

    for (i = 0; i < clcf->cors_origins->nelts; i++) {
        if (o[i].len == 1 && o[i].data[0] == '*') {
            *any = 1;
            return NGX_OK;
        }

        if (o[i].len == origin->len
            && ngx_strncasecmp(o[i].data, origin->data, o[i].len) == 0)
        {
            return NGX_OK;
        }
    }

    return NGX_ABORT;
}


static ngx_int_t
ngx_http_chat_cors_set(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_cors_preflight_handler(ngx_http_request_t *r)
{
    ngx_int_t         rc;
    ngx_str_t         origin, v;
    ngx_uint_t        any;
    ngx_table_elt_t  *method, *headers;

    if (r->method != NGX_HTTP_OPTIONS) {
        return NGX_DECLINED;
    }

    method = ngx_http_chat_cors_header(r, "Access-Control-Request-Method");
    if (method == NULL) {
        return NGX_DECLINED;
    }

    rc = ngx_http_chat_cors_allowed(r, &origin, &any);

    if (rc == NGX_DECLINED) {
        return NGX_DECLINED;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.content_type_len = sizeof("text/plain") - 1;
    ngx_str_set(&r->headers_out.content_type, "text/plain");

    if (rc == NGX_ABORT) {
        ngx_str_set(&v, "Disallowed CORS origin");
        r->headers_out.status = NGX_HTTP_BAD_REQUEST;

    } else {
        ngx_str_set(&v, "OK");
        r->headers_out.status = NGX_HTTP_OK;

        headers = ngx_http_chat_cors_header(r,
                                      "Access-Control-Request-Headers");

        if (ngx_http_chat_cors_set(r, "Access-Control-Allow-Origin", &origin)
            != NGX_OK
            || ngx_http_chat_cors_set(r, "Access-Control-Allow-Methods",
                                      &ngx_http_chat_cors_methods)
               != NGX_OK
            || (headers
                && ngx_http_chat_cors_set(r, "Access-Control-Allow-Headers",
                                          &headers->value)
                   != NGX_OK))
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_str_set(&origin, "true");

        if (ngx_http_chat_cors_set(r, "Access-Control-Allow-Credentials",
                                   &origin)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_str_set(&origin, "600");

        if (ngx_http_chat_cors_set(r, "Access-Control-Max-Age", &origin)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_str_set(&origin, "Origin");

        if (ngx_http_chat_cors_set(r, "Vary", &origin) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ngx_http_finalize_request(r, ngx_http_chat_send_buffer(r, &v));

    return NGX_DONE;
}


static ngx_int_t
ngx_http_chat_cors_header_filter(ngx_http_request_t *r)
{
    ngx_str_t   origin, v;
    ngx_uint_t  any;

    if (r->method == NGX_HTTP_OPTIONS
        && ngx_http_chat_cors_header(r, "Access-Control-Request-Method"))
    {
        return ngx_http_next_header_filter(r);
    }

    if (ngx_http_chat_cors_allowed(r, &origin, &any) != NGX_OK) {
        return ngx_http_next_header_filter(r);
    }

    /* "*" cannot be used with credentials (a request with cookies) */

    if (any && ngx_http_chat_cors_header(r, "Cookie") == NULL) {
        ngx_str_set(&origin, "*");
    }

    ngx_str_set(&v, "true");

    if (ngx_http_chat_cors_set(r, "Access-Control-Allow-Origin", &origin)
        != NGX_OK
        || ngx_http_chat_cors_set(r, "Access-Control-Allow-Credentials", &v)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!any || origin.len != 1) {
        ngx_str_set(&v, "Origin");

        if (ngx_http_chat_cors_set(r, "Vary", &v) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}
