
/*
 * The profile image upload (U14): the "file" part of a multipart body.
 * The input's first line is the Content-Type header, the rest the body.
 */


#include "fuzz.h"
#include "ngx_http_chat_user_image.c"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_str_t             file, filename;
    const char           *error;
    ngx_table_elt_t       ct;
    ngx_http_request_t    r;
    ngx_http_chat_ctx_t   ctx;

    ngx_memzero(&r, sizeof(ngx_http_request_t));
    ngx_memzero(&ctx, sizeof(ngx_http_chat_ctx_t));
    ngx_memzero(&ct, sizeof(ngx_table_elt_t));

    ngx_fuzz_split(data, size, &ct.value, &ctx.body);
    r.headers_in.content_type = &ct;

    if (ngx_http_chat_user_multipart(&r, &ctx, &file, &filename, &error)
        == NGX_OK)
    {
        /* what it found lies within the body */

        if (file.data < ctx.body.data
            || file.data + file.len > ctx.body.data + ctx.body.len)
        {
            __builtin_trap();
        }
    }

    return 0;
}
