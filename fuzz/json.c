
/*
 * JSON bodies: the decoder (one document, integers kept exactly), every
 * number read as int64, and the UTF-8 scrub every response goes through.
 */


#include "fuzz.h"


static void
ngx_fuzz_numbers(cJSON *item)
{
    int64_t  n;

    for ( /* void */ ; item; item = item->next) {

        if (cJSON_IsNumber(item)) {
            (void) ngx_http_chat_json_int64(item, &n);
        }

        ngx_fuzz_numbers(item->child);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON       *json;
    ngx_str_t    s;
    ngx_pool_t  *pool;

    pool = ngx_fuzz_pool();
    if (pool == NULL) {
        return 0;
    }

    json = ngx_http_chat_json_decode((u_char *) data, size);

    if (json) {
        ngx_fuzz_numbers(json);
        cJSON_Delete(json);
    }

    s.data = ngx_pnalloc(pool, size);
    if (s.data) {
        ngx_memcpy(s.data, data, size);
        s.len = size;
        (void) ngx_http_chat_utf8_scrub(pool, &s);
    }

    ngx_destroy_pool(pool);

    return 0;
}
