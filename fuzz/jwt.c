
/*
 * Tokens: ngx_http_chat_jwt_verify() on any bytes (first byte even), and
 * on tokens signed with our secret over any claims (first byte odd), so
 * the claim checks (exp, nbf, iat, type, sub) see every shape of JSON.
 */


#include "fuzz.h"

#include <jwt.h>


#define NGX_FUZZ_SECRET  "fuzz-secret-fuzz-secret-fuzz-secret!"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                            *claims, *signed_token;
    void                            *main_conf[1];
    jwt_t                           *jwt;
    ngx_str_t                        token;
    ngx_pool_t                      *pool;
    ngx_http_request_t               r;
    ngx_http_chat_ctx_t              ctx;
    ngx_http_chat_core_main_conf_t   cmcf;

    if (size == 0) {
        return 0;
    }

    pool = ngx_fuzz_pool();
    if (pool == NULL) {
        return 0;
    }

    ngx_memzero(&cmcf, sizeof(ngx_http_chat_core_main_conf_t));
    ngx_str_set(&cmcf.jwt_secret, NGX_FUZZ_SECRET);

    ngx_http_chat_core_module.ctx_index = 0;
    main_conf[0] = &cmcf;

    ngx_memzero(&r, sizeof(ngx_http_request_t));
    ngx_memzero(&ctx, sizeof(ngx_http_chat_ctx_t));
    r.pool = pool;
    r.main_conf = main_conf;

    signed_token = NULL;

    if (data[0] & 1) {
        claims = ngx_pnalloc(pool, size);
        if (claims == NULL) {
            goto done;
        }

        ngx_memcpy(claims, data + 1, size - 1);
        claims[size - 1] = '\0';

        if (jwt_new(&jwt) != 0) {
            goto done;
        }

        if (jwt_add_grants_json(jwt, claims) == 0
            && jwt_set_alg(jwt, JWT_ALG_HS256,
                           (unsigned char *) NGX_FUZZ_SECRET,
                           sizeof(NGX_FUZZ_SECRET) - 1)
               == 0)
        {
            signed_token = jwt_encode_str(jwt);
        }

        jwt_free(jwt);

        if (signed_token == NULL) {
            goto done;
        }

        token.data = (u_char *) signed_token;
        token.len = ngx_strlen(signed_token);

    } else {
        token.data = (u_char *) data + 1;
        token.len = size - 1;
    }

    if (ngx_http_chat_jwt_verify(&r, &token, &ctx) == NGX_OK
        && (ctx.user_id <= 0 || ctx.token_exp <= 0))
    {
        __builtin_trap();
    }

done:

    free(signed_token);
    ngx_destroy_pool(pool);

    return 0;
}
