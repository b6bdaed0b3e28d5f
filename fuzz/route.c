
/*
 * The router: a URI against every route of every module (the patterns,
 * from the modules' tables, in routes.h, made by "./build.sh fuzz"), as
 * the dispatcher matches them, the 405's Allow list included.  The
 * input's first byte picks the method.
 */


#include "fuzz.h"
#include "ngx_http_chat_request.c"


static ngx_http_chat_route_t  ngx_fuzz_routes[] = {
#include "routes.h"
    { 0, ngx_null_string, 0, NULL }
};


static ngx_int_t
ngx_fuzz_handler(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    return NGX_OK;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                 allow[64];
    size_t                 allow_len;
    ngx_str_t              uri;
    ngx_uint_t             i;
    ngx_http_request_t     r;
    ngx_http_chat_ctx_t    ctx;
    ngx_http_chat_route_t *route;

    static ngx_uint_t  methods[] = { NGX_HTTP_GET, NGX_HTTP_POST,
                                     NGX_HTTP_PUT, NGX_HTTP_DELETE,
                                     NGX_HTTP_PATCH, NGX_HTTP_HEAD };

    if (size == 0) {
        return 0;
    }

    for (route = ngx_fuzz_routes; route->path.len; route++) {
        route->handler = ngx_fuzz_handler;
    }

    ngx_memzero(&r, sizeof(ngx_http_request_t));
    ngx_memzero(&ctx, sizeof(ngx_http_chat_ctx_t));

    r.method = methods[data[0] % (sizeof(methods) / sizeof(methods[0]))];

    uri.data = (u_char *) data + 1;
    uri.len = size - 1;

    route = ngx_http_chat_match(&r, &uri, ngx_fuzz_routes, &ctx, allow,
                                &allow_len);

    /* the Allow list of a 405 fits its buffer, with room for its NUL */

    if ((route == NULL && allow_len > sizeof(allow) - 1)
        || ctx.nparams > NGX_HTTP_CHAT_MAX_PARAMS)
    {
        __builtin_trap();
    }

    for (i = 0; route && i < ctx.nparams; i++) {
        if (ctx.params[i].data < uri.data
            || ctx.params[i].data + ctx.params[i].len > uri.data + uri.len)
        {
            __builtin_trap();
        }
    }

    return 0;
}
