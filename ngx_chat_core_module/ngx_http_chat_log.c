
/*
 * What a request leaves behind: variables for log_format and add_header
 * that are safe to print whatever the client sent, the request's trace
 * context, and the check that keeps response bodies valid UTF-8.
 *
 * nginx's "escape=json" escapes quotes, backslashes and control
 * characters but copies bytes from 0x80 on as they are, so a URI or a
 * User-Agent that is not UTF-8 would make a log line that no JSON parser
 * takes: the variables below never yield such bytes.
 */


#include "ngx_http_chat_core_module.h"

#include <openssl/rand.h>


/* W3C Trace Context: "00-<trace id>-<parent id>-<flags>" */
#define NGX_HTTP_CHAT_TRACEPARENT_LEN  55
#define NGX_HTTP_CHAT_REQUEST_ID_MAX   128

/* how bytes that are not UTF-8 are written */
#define NGX_HTTP_CHAT_ESCAPE_URI       0    /* %HH */
#define NGX_HTTP_CHAT_ESCAPE_TEXT      1    /* \xHH */
#define NGX_HTTP_CHAT_ESCAPE_JSON      2    /* \ufffd, and JSON escapes */


typedef ngx_int_t (*ngx_http_chat_log_var_pt)(ngx_http_request_t *r,
    ngx_str_t *value);


static ngx_int_t ngx_http_chat_log_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_chat_log_request_id(ngx_http_request_t *r,
    ngx_str_t *value);
static ngx_int_t ngx_http_chat_log_traceparent(ngx_http_request_t *r,
    ngx_str_t *value);
static ngx_int_t ngx_http_chat_log_user_id(ngx_http_request_t *r,
    ngx_str_t *value);
static ngx_int_t ngx_http_chat_log_route(ngx_http_request_t *r,
    ngx_str_t *value);
static ngx_int_t ngx_http_chat_log_request_uri(ngx_http_request_t *r,
    ngx_str_t *value);
static ngx_int_t ngx_http_chat_log_method(ngx_http_request_t *r,
    ngx_str_t *value);
static ngx_int_t ngx_http_chat_log_user_agent(ngx_http_request_t *r,
    ngx_str_t *value);
static ngx_int_t ngx_http_chat_log_uri_json(ngx_http_request_t *r,
    ngx_str_t *value);

static ngx_int_t ngx_http_chat_log_random(u_char *buf, size_t n);
static ngx_uint_t ngx_http_chat_log_id_char(u_char c);
static ngx_uint_t ngx_http_chat_log_trace_valid(ngx_str_t *s);
static ngx_uint_t ngx_http_chat_log_hex(u_char *p, size_t n);
static size_t ngx_http_chat_log_utf8(u_char *p, u_char *last);
static ngx_int_t ngx_http_chat_log_escaped(ngx_http_request_t *r,
    ngx_str_t *in, ngx_uint_t how, ngx_str_t *value);
static u_char *ngx_http_chat_log_escape(u_char *dst, u_char *p, u_char *last,
    ngx_uint_t how);


static ngx_http_variable_t  ngx_http_chat_log_vars[] = {

    /* fixed for the request: nginx caches them, also across error_page */

    { ngx_string("chat_request_id"), NULL, ngx_http_chat_log_variable,
      (uintptr_t) ngx_http_chat_log_request_id, 0, 0 },

    { ngx_string("chat_traceparent"), NULL, ngx_http_chat_log_variable,
      (uintptr_t) ngx_http_chat_log_traceparent, 0, 0 },

    { ngx_string("chat_request_uri"), NULL, ngx_http_chat_log_variable,
      (uintptr_t) ngx_http_chat_log_request_uri, 0, 0 },

    { ngx_string("chat_request_method"), NULL, ngx_http_chat_log_variable,
      (uintptr_t) ngx_http_chat_log_method, 0, 0 },

    { ngx_string("chat_user_agent"), NULL, ngx_http_chat_log_variable,
      (uintptr_t) ngx_http_chat_log_user_agent, 0, 0 },

    /* known only as the request goes on */

    { ngx_string("chat_user_id"), NULL, ngx_http_chat_log_variable,
      (uintptr_t) ngx_http_chat_log_user_id, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chat_route"), NULL, ngx_http_chat_log_variable,
      (uintptr_t) ngx_http_chat_log_route, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("chat_uri_json"), NULL, ngx_http_chat_log_variable,
      (uintptr_t) ngx_http_chat_log_uri_json, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t  ngx_http_chat_log_traceparent_index = NGX_ERROR;


ngx_int_t
ngx_http_chat_log_add_variables(ngx_conf_t *cf)
{
    ngx_str_t             name;
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_chat_log_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    ngx_str_set(&name, "chat_traceparent");

    ngx_http_chat_log_traceparent_index = ngx_http_get_variable_index(cf,
                                                                      &name);
    if (ngx_http_chat_log_traceparent_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the request's traceparent, the one its response and log carry */

ngx_int_t
ngx_http_chat_traceparent(ngx_http_request_t *r, ngx_str_t *tp)
{
    ngx_http_variable_value_t  *v;

    v = ngx_http_get_indexed_variable(r->main,
                                      ngx_http_chat_log_traceparent_index);

    if (v == NULL || v->not_found || v->len == 0) {
        return NGX_DECLINED;
    }

    tp->len = v->len;
    tp->data = v->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_log_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                  value;
    ngx_http_chat_log_var_pt   get;

    get = (ngx_http_chat_log_var_pt) data;

    ngx_str_null(&value);

    if (get(r, &value) != NGX_OK) {
        return NGX_ERROR;
    }

    v->len = value.len;
    v->data = value.data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * the client's X-Request-ID goes into logs and responses only when it
 * looks like an id: 1-128 characters of letters, digits and "-._:+/=";
 * anything else is replaced by an id of ours, 32 hexadecimal digits as
 * nginx's $request_id (which would cost a RAND_bytes() a request)
 */

static ngx_int_t
ngx_http_chat_log_request_id(ngx_http_request_t *r, ngx_str_t *value)
{
    u_char           *p, *last;
    u_char            rnd[16];
    ngx_uint_t        n;
    ngx_table_elt_t  *h;

    h = ngx_http_chat_header(r, "X-Request-ID", 12, &n);

    if (h && n == 1
        && h->value.len && h->value.len <= NGX_HTTP_CHAT_REQUEST_ID_MAX)
    {
        last = h->value.data + h->value.len;

        for (p = h->value.data; p < last; p++) {
            if (!ngx_http_chat_log_id_char(*p)) {
                break;
            }
        }

        if (p == last) {
            *value = h->value;
            return NGX_OK;
        }
    }

    p = ngx_pnalloc(r->pool, 2 * sizeof(rnd));
    if (p == NULL || ngx_http_chat_log_random(rnd, sizeof(rnd)) != NGX_OK) {
        return NGX_ERROR;
    }

    value->data = p;
    value->len = ngx_hex_dump(p, rnd, sizeof(rnd)) - p;

    return NGX_OK;
}


/*
 * Request and trace ids need to be unique, not secret: they come from
 * splitmix64, a generator of 64 bits at a time whose state is a counter,
 * seeded once per worker process by RAND_bytes() (and again should the
 * process change, as after a fork).  A RAND_bytes() per id cost about
 * 6,700 instructions, half of nginx's share of an authenticated read.
 */

static ngx_int_t
ngx_http_chat_log_random(u_char *buf, size_t n)
{
    size_t            k;
    uint64_t          z;

    static uint64_t   state;
    static ngx_pid_t  seeded;

    if (seeded != ngx_pid) {
        if (RAND_bytes((u_char *) &state, sizeof(state)) != 1) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "chat: RAND_bytes() failed for the ids' seed");
            return NGX_ERROR;
        }

        seeded = ngx_pid;
    }

    while (n) {
        z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;

        k = ngx_min(n, sizeof(z));
        ngx_memcpy(buf, &z, k);

        buf += k;
        n -= k;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_chat_log_id_char(u_char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
        || (c >= 'A' && c <= 'Z'))
    {
        return 1;
    }

    switch (c) {
    case '-': case '.': case '_': case ':': case '+': case '/': case '=':
        return 1;
    default:
        return 0;
    }
}


/*
 * W3C Trace Context: a valid traceparent keeps its trace id and flags and
 * gets a parent id of our own (this request is a span of that trace); a
 * missing or invalid one starts a new trace, sampled
 */

static ngx_int_t
ngx_http_chat_log_traceparent(ngx_http_request_t *r, ngx_str_t *value)
{
    u_char            *p;
    u_char             rnd[24];
    ngx_uint_t         n, valid;
    ngx_table_elt_t   *h;

    h = ngx_http_chat_header(r, "traceparent", 11, &n);
    valid = (h && n == 1 && ngx_http_chat_log_trace_valid(&h->value));

    if (ngx_http_chat_log_random(rnd, valid ? 8 : 24) != NGX_OK) {
        return NGX_ERROR;
    }

    /* an id of all zeros is invalid: one bit set rules it out */

    rnd[0] |= 1;
    rnd[16] |= 1;

    p = ngx_pnalloc(r->pool, NGX_HTTP_CHAT_TRACEPARENT_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    value->data = p;
    value->len = NGX_HTTP_CHAT_TRACEPARENT_LEN;

    p = ngx_cpymem(p, "00-", 3);

    if (valid) {
        p = ngx_cpymem(p, h->value.data + 3, 32);
        *p++ = '-';
        p = ngx_hex_dump(p, rnd, 8);
        *p++ = '-';
        ngx_memcpy(p, h->value.data + 53, 2);

        return NGX_OK;
    }

    p = ngx_hex_dump(p, rnd + 8, 16);
    *p++ = '-';
    p = ngx_hex_dump(p, rnd, 8);
    ngx_memcpy(p, "-01", 3);

    return NGX_OK;
}


/*
 * version (not "ff"), a non-zero trace id and parent id, flags: lower-case
 * hex; a later version may append fields after a "-"
 */

static ngx_uint_t
ngx_http_chat_log_trace_valid(ngx_str_t *s)
{
    u_char  *p;

    p = s->data;

    if (s->len < NGX_HTTP_CHAT_TRACEPARENT_LEN
        || !ngx_http_chat_log_hex(p, 2)
        || (p[0] == 'f' && p[1] == 'f')
        || p[2] != '-' || p[35] != '-' || p[52] != '-'
        || !ngx_http_chat_log_hex(p + 3, 32)
        || !ngx_http_chat_log_hex(p + 36, 16)
        || !ngx_http_chat_log_hex(p + 53, 2)
        || ngx_strncmp(p + 3, "00000000000000000000000000000000", 32) == 0
        || ngx_strncmp(p + 36, "0000000000000000", 16) == 0)
    {
        return 0;
    }

    if (p[0] == '0' && p[1] == '0') {
        return s->len == NGX_HTTP_CHAT_TRACEPARENT_LEN;
    }

    return s->len == NGX_HTTP_CHAT_TRACEPARENT_LEN
           || p[NGX_HTTP_CHAT_TRACEPARENT_LEN] == '-';
}


static ngx_uint_t
ngx_http_chat_log_hex(u_char *p, size_t n)
{
    while (n--) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
            return 0;
        }

        p++;
    }

    return 1;
}


/*
 * a request header nginx keeps no pointer to, the first of its name;
 * *n, unless n is NULL: how many there are
 */

ngx_table_elt_t *
ngx_http_chat_header(ngx_http_request_t *r, const char *name, size_t len,
    ngx_uint_t *n)
{
    ngx_uint_t        i, count;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *found;

    part = &r->headers_in.headers.part;
    h = part->elts;
    found = NULL;
    count = 0;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            if (found == NULL) {
                found = &h[i];
            }

            count++;
        }
    }

    if (n) {
        *n = count;
    }

    return found;
}


static ngx_int_t
ngx_http_chat_log_user_id(ngx_http_request_t *r, ngx_str_t *value)
{
    u_char               *p;
    ngx_http_chat_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chat_core_module);

    /* a token read but then refused (revoked, a claim checked late) has
     * no caller */

    if (ctx == NULL || ctx->user_id <= 0
        || r->headers_out.status == NGX_HTTP_UNAUTHORIZED)
    {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    value->data = p;
    value->len = ngx_sprintf(p, "%i", ctx->user_id) - p;

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_log_route(ngx_http_request_t *r, ngx_str_t *value)
{
    ngx_http_chat_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chat_core_module);

    if (ctx && ctx->route) {
        *value = ctx->route->path;
    }

    return NGX_OK;
}


/*
 * $request_uri with the values of access_token arguments (the event
 * streams' token, EventSource cannot send headers) replaced by
 * "REDACTED", and bytes that are not UTF-8 or are control characters
 * percent-encoded: the same URI to a server, printable to a log
 */

static ngx_int_t
ngx_http_chat_log_request_uri(ngx_http_request_t *r, ngx_str_t *value)
{
    u_char  *p, *last, *q, *arg, *end, *dst;
    size_t   n;

    static u_char  name[] = "access_token=";

    p = r->unparsed_uri.data;
    last = p + r->unparsed_uri.len;

    if (p == NULL) {

        /* a request line nginx gave up on (too long): what follows the
         * method */

        p = r->request_line.data;

        if (p == NULL) {
            return NGX_OK;
        }

        last = p + r->request_line.len;
        q = ngx_strlchr(p, last, ' ');
        p = q ? q + 1 : last;
    }

    /* every byte may become "%HH", every argument gains "REDACTED" */

    n = 3 * (last - p) + 8;

    for (q = p; q < last; q++) {
        if (*q == '&') {
            n += 8;
        }
    }

    dst = ngx_pnalloc(r->pool, n);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    value->data = dst;

    q = ngx_strlchr(p, last, '?');

    if (q == NULL) {
        dst = ngx_http_chat_log_escape(dst, p, last, NGX_HTTP_CHAT_ESCAPE_URI);
        value->len = dst - value->data;
        return NGX_OK;
    }

    dst = ngx_http_chat_log_escape(dst, p, q + 1, NGX_HTTP_CHAT_ESCAPE_URI);

    for (arg = q + 1; arg <= last; arg = end + 1) {
        end = ngx_strlchr(arg, last, '&');
        if (end == NULL) {
            end = last;
        }

        if (arg != q + 1) {
            *dst++ = '&';
        }

        /* the name as ngx_http_arg() finds it: raw, any case */

        if ((size_t) (end - arg) >= sizeof(name) - 1
            && ngx_strncasecmp(arg, name, sizeof(name) - 1) == 0)
        {
            dst = ngx_http_chat_log_escape(dst, arg, arg + sizeof(name) - 1,
                                           NGX_HTTP_CHAT_ESCAPE_URI);
            dst = ngx_cpymem(dst, "REDACTED", 8);
            continue;
        }

        dst = ngx_http_chat_log_escape(dst, arg, end,
                                       NGX_HTTP_CHAT_ESCAPE_URI);
    }

    value->len = dst - value->data;

    return NGX_OK;
}


/*
 * the method the client sent: an error page (error_page to a URI) turns
 * the request into a GET, and $request_method with it
 */

static ngx_int_t
ngx_http_chat_log_method(ngx_http_request_t *r, ngx_str_t *value)
{
    u_char  *p, *last, *q;

    p = r->request_line.data;

    if (p == NULL || r->method_end == NULL) {
        *value = r->method_name;
        return NGX_OK;
    }

    last = p + r->request_line.len;
    q = ngx_strlchr(p, last, ' ');

    value->data = p;
    value->len = (q ? q : last) - p;

    return NGX_OK;
}


/* bytes that are not UTF-8 as "\xHH"; escape=json does the rest */

static ngx_int_t
ngx_http_chat_log_user_agent(ngx_http_request_t *r, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = r->headers_in.user_agent;

    if (h == NULL) {
        return NGX_OK;
    }

    return ngx_http_chat_log_escaped(r, &h->value, NGX_HTTP_CHAT_ESCAPE_TEXT,
                                     value);
}


/*
 * $uri as the inside of a JSON string, for "return" bodies, which nginx
 * does not escape: the gateway's 404 names the path it did not find
 */

static ngx_int_t
ngx_http_chat_log_uri_json(ngx_http_request_t *r, ngx_str_t *value)
{
    return ngx_http_chat_log_escaped(r, &r->uri, NGX_HTTP_CHAT_ESCAPE_JSON,
                                     value);
}


/* a copy of "in" in the request's pool, escaped "how" */

static ngx_int_t
ngx_http_chat_log_escaped(ngx_http_request_t *r, ngx_str_t *in,
    ngx_uint_t how, ngx_str_t *value)
{
    u_char  *p;

    /* the most a byte becomes: "\u00XX" in JSON, "\xHH" in text */

    p = ngx_pnalloc(r->pool, (how == NGX_HTTP_CHAT_ESCAPE_JSON ? 6 : 4)
                             * in->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    value->data = p;
    value->len = ngx_http_chat_log_escape(p, in->data, in->data + in->len, how)
                 - p;

    return NGX_OK;
}


/* the length of the UTF-8 sequence at p, 0 if there is none */

static size_t
ngx_http_chat_log_utf8(u_char *p, u_char *last)
{
    u_char    *s;
    uint32_t   ch;

    s = p;
    ch = ngx_utf8_decode(&p, last - p);

    if (ch > 0x10ffff || (ch >= 0xd800 && ch <= 0xdfff)) {
        return 0;
    }

    return p - s;
}


/*
 * copies p..last to dst, valid UTF-8 as it is; dst must hold 3 (URI),
 * 4 (text) or 6 (JSON) times the input
 */

static u_char *
ngx_http_chat_log_escape(u_char *dst, u_char *p, u_char *last,
    ngx_uint_t how)
{
    size_t  n;

    static u_char  hex[] = "0123456789ABCDEF";

    while (p < last) {

        if (*p >= 0x80) {
            n = ngx_http_chat_log_utf8(p, last);

            if (n) {
                dst = ngx_cpymem(dst, p, n);
                p += n;
                continue;
            }

        } else if (how == NGX_HTTP_CHAT_ESCAPE_JSON) {

            if (*p == '"' || *p == '\\') {
                *dst++ = '\\';
                *dst++ = *p++;
                continue;
            }

            if (*p >= 0x20 && *p != 0x7f) {
                *dst++ = *p++;
                continue;
            }

            dst = ngx_sprintf(dst, "\\u%04xD", (uint32_t) *p++);
            continue;

        } else if (how == NGX_HTTP_CHAT_ESCAPE_TEXT
                   || (*p >= 0x20 && *p != 0x7f))
        {
            *dst++ = *p++;
            continue;
        }

        /* a byte that is not UTF-8 (or a control character in a URI) */

        switch (how) {

        case NGX_HTTP_CHAT_ESCAPE_URI:
            *dst++ = '%';
            break;

        case NGX_HTTP_CHAT_ESCAPE_TEXT:
            *dst++ = '\\';
            *dst++ = 'x';
            break;

        default: /* NGX_HTTP_CHAT_ESCAPE_JSON */
            dst = ngx_cpymem(dst, "\\ufffd", 6);
            p++;
            continue;
        }

        *dst++ = hex[*p >> 4];
        *dst++ = hex[*p & 0xf];
        p++;
    }

    return dst;
}


/*
 * A response body that is valid UTF-8 whatever the request held: cJSON
 * copies the bytes of strings as they are, and a 422 may echo a value the
 * client sent.  Bytes that are not UTF-8 become U+FFFD, which keeps the
 * document's structure (such bytes can only be inside strings).
 */

ngx_int_t
ngx_http_chat_utf8_scrub(ngx_pool_t *pool, ngx_str_t *s)
{
    u_char  *p, *last, *dst, *q;
    size_t   n;

    p = s->data;
    last = p + s->len;

    for ( /* void */ ; p < last; p += n) {
        if (*p < 0x80) {
            n = 1;
            continue;
        }

        n = ngx_http_chat_log_utf8(p, last);

        if (n == 0) {
            break;
        }
    }

    if (p == last) {
        return NGX_OK;
    }

    dst = ngx_pnalloc(pool, 3 * s->len);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    q = ngx_cpymem(dst, s->data, p - s->data);

    while (p < last) {
        n = (*p < 0x80) ? 1 : ngx_http_chat_log_utf8(p, last);

        if (n) {
            q = ngx_cpymem(q, p, n);
            p += n;
            continue;
        }

        q = ngx_cpymem(q, "\xef\xbf\xbd", 3);
        p++;
    }

    s->data = dst;
    s->len = q - dst;

    return NGX_OK;
}
