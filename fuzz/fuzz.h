
/*
 * What every fuzz target shares: nginx's headers and core (string, pool,
 * array, list, time functions compiled from nginx's source), a log that
 * says nothing, and one pool per input.
 *
 * A target compiles the parser it fuzzes from our sources as they are;
 * whatever else those files call (datastores, the HTTP core) is never
 * reached from the parser and stays unresolved at link time.
 */


#ifndef _NGX_HTTP_CHAT_FUZZ_H_INCLUDED_
#define _NGX_HTTP_CHAT_FUZZ_H_INCLUDED_


#include "ngx_http_chat_core_module.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_log_t  ngx_fuzz_log;


static ngx_pool_t *
ngx_fuzz_pool(void)
{
    static ngx_uint_t  initialized;

    if (!initialized) {
        ngx_pagesize = getpagesize();
        ngx_cacheline_size = NGX_CPU_CACHE_LINE;
        ngx_time_init();
        initialized = 1;
    }

    return ngx_create_pool(4096, &ngx_fuzz_log);
}


/* the input split at its first newline: e.g. a header and a body */

static void
ngx_fuzz_split(const uint8_t *data, size_t size, ngx_str_t *first,
    ngx_str_t *rest)
{
    u_char  *nl;

    nl = memchr(data, '\n', size);

    first->data = (u_char *) data;
    first->len = nl ? (size_t) (nl - data) : size;

    rest->data = nl ? nl + 1 : (u_char *) data + size;
    rest->len = nl ? size - first->len - 1 : 0;
}


#endif /* _NGX_HTTP_CHAT_FUZZ_H_INCLUDED_ */
