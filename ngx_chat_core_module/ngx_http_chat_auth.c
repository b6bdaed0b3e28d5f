
/*
 * Authentication: Bearer parsing, HS256 tokens with the original's claims
 * (API.md 2.4, 2.5), revocation of logged-out tokens in Redis, and bcrypt
 * hashing in the CPU thread pool.
 */


#include "ngx_http_chat_core_module.h"

#include <jwt.h>
#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>


#define NGX_HTTP_CHAT_TOKEN_MAX     4096
#define NGX_HTTP_CHAT_REVOKED       "chat:revoked:"

/* the clock skew allowed to a token's "nbf" and "iat" */
#define NGX_HTTP_CHAT_JWT_SKEW      60

/* random bytes of a token's "jti" */
#define NGX_HTTP_CHAT_JTI_LEN       16

/* verified tokens a worker remembers */
#define NGX_HTTP_CHAT_TOKENS        1024

/* token bytes that choose a token's slot: the signature's last ones */
#define NGX_HTTP_CHAT_TOKEN_TAIL    16

/* an HS256 signature in base64url, without padding */
#define NGX_HTTP_CHAT_JWT_SIG_LEN   43


/*
 * A verified token as a worker remembers it.  A client sends one token
 * with all its requests, and each would cost two SHA-256 runs for the
 * HMAC, a third for the revocation key, base64 and JSON; remembered, it
 * costs a comparison of its bytes.  Only a token that passed every check
 * is kept; its expiry is checked again on every use and its revocation
 * is asked of Redis on every request, as before.  Workers begin empty,
 * so after a reload with a new secret no token of the old one is known.
 */

typedef struct {
    u_char                     *data;       /* ngx_alloc(): token, email,
                                               key */
    size_t                      len;
    int64_t                     user_id;
    time_t                      exp;
    ngx_str_t                   email;
    ngx_str_t                   key;
} ngx_http_chat_token_t;


typedef struct {
    ngx_http_chat_bcrypt_t     *bcrypt;
    struct crypt_data          *data;
    ngx_uint_t                  verify;
} ngx_http_chat_bcrypt_task_t;


static ngx_uint_t ngx_http_chat_jwt_future(cJSON *claims, const char *name);
static ngx_int_t ngx_http_chat_token_verify(ngx_http_request_t *r,
    ngx_str_t *token, ngx_http_chat_ctx_t *ctx, ngx_str_t *key);
static ngx_http_chat_token_t *ngx_http_chat_token_slot(ngx_str_t *token);
static void ngx_http_chat_revocation_reply(ngx_http_chat_op_t *op);
static ngx_int_t ngx_http_chat_revocation_checked(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc, void *data);
static ngx_int_t ngx_http_chat_bcrypt_run(void *data);
static ngx_int_t ngx_http_chat_bcrypt_post(ngx_http_request_t *r,
    ngx_http_chat_bcrypt_t *b, ngx_uint_t verify,
    ngx_http_chat_thread_done_pt done);


/* "Authorization: <scheme> <token>": two parts, scheme "bearer" in any case */

ngx_int_t
ngx_http_chat_bearer(ngx_http_request_t *r, ngx_str_t *token)
{
    u_char  *p, *last, *scheme;

    if (r->headers_in.authorization == NULL) {
        return NGX_DECLINED;
    }

    p = r->headers_in.authorization->value.data;
    last = p + r->headers_in.authorization->value.len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    scheme = p;

    while (p < last && *p != ' ' && *p != '\t') {
        p++;
    }

    if (p - scheme != 6 || ngx_strncasecmp(scheme, (u_char *) "bearer", 6)) {
        return NGX_DECLINED;
    }

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    token->data = p;
    token->len = last - p;

    /*
     * one word: libc's memchr() looks through a token of a few hundred
     * bytes many times faster than a loop over its bytes
     */

    if (token->len == 0
        || memchr(p, ' ', token->len) != NULL
        || memchr(p, '\t', token->len) != NULL)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_chat_jwt_issue(ngx_http_request_t *r, ngx_int_t user_id,
    ngx_str_t *email, ngx_str_t *token)
{
    char                            *s, *mail;
    u_char                           sub[NGX_INT_T_LEN + 1];
    u_char                           id[NGX_HTTP_CHAT_JTI_LEN];
    u_char                           jti[2 * NGX_HTTP_CHAT_JTI_LEN + 1];
    jwt_t                           *jwt;
    ngx_int_t                        rc;
    ngx_http_chat_core_main_conf_t  *cmcf;

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_core_module);

    mail = ngx_pnalloc(r->pool, email->len + 1);
    if (mail == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(mail, email->data, email->len) = '\0';
    *ngx_sprintf(sub, "%i", user_id) = '\0';

    /*
     * the original's claims, and a "jti" of our own: two logins within a
     * second would get the same token otherwise, and logging out one would
     * end both (the original's verifiers ignore claims they do not know)
     */

    if (RAND_bytes(id, NGX_HTTP_CHAT_JTI_LEN) != 1) {
        return NGX_ERROR;
    }

    *ngx_hex_dump(jti, id, NGX_HTTP_CHAT_JTI_LEN) = '\0';

    if (jwt_new(&jwt) != 0) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;
    s = NULL;

    if (jwt_add_grant(jwt, "sub", (char *) sub) == 0
        && jwt_add_grant(jwt, "email", mail) == 0
        && jwt_add_grant_int(jwt, "exp", ngx_time() + cmcf->jwt_lifetime)
           == 0
        && jwt_add_grant(jwt, "type", "access") == 0
        && jwt_add_grant(jwt, "jti", (char *) jti) == 0
        && jwt_set_alg(jwt, JWT_ALG_HS256, cmcf->jwt_secret.data,
                       cmcf->jwt_secret.len)
           == 0)
    {
        s = jwt_encode_str(jwt);
    }

    if (s) {
        token->len = ngx_strlen(s);
        token->data = ngx_pnalloc(r->pool, token->len);

        if (token->data) {
            ngx_memcpy(token->data, s, token->len);
            rc = NGX_OK;
        }

        free(s);
    }

    jwt_free(jwt);

    return rc;
}


/*
 * Verification is on the path of every authenticated request, so it is
 * done here rather than by libjwt (which parses both parts with jansson,
 * allocates for each claim, and has OpenSSL look the HMAC algorithm up
 * for every token): the signature first, over "header.payload", with
 * SHA-256 states that already hold the key's padded blocks (made once
 * per worker and configuration); then the header, which must name HS256
 * and nothing else (the usual one is compared as it is); then the claims:
 * "exp" an integer in the future, "nbf" and "iat", if present, not in the
 * future (beyond NGX_HTTP_CHAT_JWT_SKEW), "type" "access", "sub" a
 * positive decimal id.
 */

#define NGX_HTTP_CHAT_JWT_HS256  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"


/*
 * SHA-256 states copied for each use, so OpenSSL looks the algorithm up
 * once per worker: a fresh one (the revocation keys), and the key's HMAC
 * blocks
 */

typedef struct {
    EVP_MD_CTX                 *plain;      /* nothing hashed yet */
    EVP_MD_CTX                 *inner;      /* after the key's ipad block */
    EVP_MD_CTX                 *outer;      /* after its opad block */
    EVP_MD_CTX                 *work;
    void                       *conf;       /* the key's configuration */
} ngx_http_chat_digests_t;


static ngx_http_chat_digests_t  ngx_http_chat_digests;


static ngx_int_t
ngx_http_chat_digests_init(void)
{
    ngx_http_chat_digests_t  *h;

    h = &ngx_http_chat_digests;

    if (h->work) {
        return NGX_OK;
    }

    h->plain = EVP_MD_CTX_new();
    h->inner = EVP_MD_CTX_new();
    h->outer = EVP_MD_CTX_new();
    h->work = EVP_MD_CTX_new();

    if (h->plain == NULL || h->inner == NULL || h->outer == NULL
        || h->work == NULL
        || EVP_DigestInit_ex(h->plain, EVP_sha256(), NULL) != 1)
    {
        EVP_MD_CTX_free(h->plain);
        EVP_MD_CTX_free(h->inner);
        EVP_MD_CTX_free(h->outer);
        EVP_MD_CTX_free(h->work);
        h->work = NULL;
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_sha256(u_char *data, size_t len, u_char *md)
{
    unsigned int              n;
    ngx_http_chat_digests_t  *h;

    h = &ngx_http_chat_digests;

    if (ngx_http_chat_digests_init() != NGX_OK
        || EVP_MD_CTX_copy_ex(h->work, h->plain) != 1
        || EVP_DigestUpdate(h->work, data, len) != 1
        || EVP_DigestFinal_ex(h->work, md, &n) != 1)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_hmac_key(ngx_http_chat_core_main_conf_t *cmcf)
{
    u_char                    block[64], key[SHA256_DIGEST_LENGTH];
    size_t                    len;
    u_char                   *k;
    ngx_uint_t                i;
    const EVP_MD             *md;
    ngx_http_chat_digests_t  *h;

    h = &ngx_http_chat_digests;

    if (h->conf == cmcf) {
        return NGX_OK;
    }

    if (ngx_http_chat_digests_init() != NGX_OK) {
        return NGX_ERROR;
    }

    /* RFC 2104: a key longer than the block is hashed first */

    k = cmcf->jwt_secret.data;
    len = cmcf->jwt_secret.len;

    if (len > sizeof(block)) {
        if (ngx_http_chat_sha256(k, len, key) != NGX_OK) {
            return NGX_ERROR;
        }

        k = key;
        len = sizeof(key);
    }

    md = EVP_sha256();

    for (i = 0; i < sizeof(block); i++) {
        block[i] = (i < len ? k[i] : 0) ^ 0x36;
    }

    if (EVP_DigestInit_ex(h->inner, md, NULL) != 1
        || EVP_DigestUpdate(h->inner, block, sizeof(block)) != 1)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < sizeof(block); i++) {
        block[i] = (i < len ? k[i] : 0) ^ 0x5c;
    }

    if (EVP_DigestInit_ex(h->outer, md, NULL) != 1
        || EVP_DigestUpdate(h->outer, block, sizeof(block)) != 1)
    {
        return NGX_ERROR;
    }

    h->conf = cmcf;

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_hmac_sha256(u_char *data, size_t len, u_char *mac)
{
    u_char                    inner[SHA256_DIGEST_LENGTH];
    unsigned int              n;
    ngx_http_chat_digests_t  *h;

    h = &ngx_http_chat_digests;

    if (EVP_MD_CTX_copy_ex(h->work, h->inner) != 1
        || EVP_DigestUpdate(h->work, data, len) != 1
        || EVP_DigestFinal_ex(h->work, inner, &n) != 1
        || EVP_MD_CTX_copy_ex(h->work, h->outer) != 1
        || EVP_DigestUpdate(h->work, inner, sizeof(inner)) != 1
        || EVP_DigestFinal_ex(h->work, mac, &n) != 1)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A base64url part of a token, decoded into buf: it is read at once, and
 * the request's pool, which an event stream keeps for hours, need not
 * hold it
 */

static ngx_int_t
ngx_http_chat_jwt_part(u_char *p, u_char *last, u_char *buf, ngx_str_t *out)
{
    ngx_str_t  src;

    src.data = p;
    src.len = last - p;

    out->data = buf;

    return ngx_decode_base64url(out, &src) == NGX_OK ? NGX_OK : NGX_DECLINED;
}


ngx_int_t
ngx_http_chat_jwt_verify(ngx_http_request_t *r, ngx_str_t *token,
    ngx_http_chat_ctx_t *ctx)
{
    u_char                          *p, *dot1, *dot2, *last;
    u_char                           mac[SHA256_DIGEST_LENGTH];
    u_char                           sig[48];
    u_char                           buf[NGX_HTTP_CHAT_TOKEN_MAX / 4 * 3
                                         + 3];
    cJSON                           *json, *item;
    int64_t                          exp, id;
    ngx_str_t                        part, src, dst;
    ngx_int_t                        rc;
    ngx_http_chat_core_main_conf_t  *cmcf;

    if (token->len == 0 || token->len > NGX_HTTP_CHAT_TOKEN_MAX) {
        return NGX_DECLINED;
    }

    p = token->data;
    last = p + token->len;

    dot1 = ngx_strlchr(p, last, '.');
    dot2 = dot1 ? ngx_strlchr(dot1 + 1, last, '.') : NULL;

    if (dot2 == NULL || dot1 == p || dot2 == dot1 + 1
        || ngx_strlchr(dot2 + 1, last, '.') != NULL
        || (size_t) (last - dot2 - 1) > 64)
    {
        return NGX_DECLINED;
    }

    /* the signature: 32 bytes, of HMAC-SHA256 over "header.payload" */

    src.data = dot2 + 1;
    src.len = last - src.data;
    dst.data = sig;

    if (ngx_decode_base64url(&dst, &src) != NGX_OK
        || dst.len != SHA256_DIGEST_LENGTH)
    {
        return NGX_DECLINED;
    }

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_core_module);

    if (ngx_http_chat_hmac_key(cmcf) != NGX_OK
        || ngx_http_chat_hmac_sha256(p, dot2 - p, mac) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (CRYPTO_memcmp(mac, sig, SHA256_DIGEST_LENGTH) != 0) {
        return NGX_DECLINED;
    }

    /* the header: HS256 only (never "none", never another key's kind) */

    if ((size_t) (dot1 - p) != sizeof(NGX_HTTP_CHAT_JWT_HS256) - 1
        || ngx_strncmp(p, NGX_HTTP_CHAT_JWT_HS256, dot1 - p) != 0)
    {
        rc = ngx_http_chat_jwt_part(p, dot1, buf, &part);
        if (rc != NGX_OK) {
            return rc;
        }

        json = ngx_http_chat_json_decode(part.data, part.len);
        item = cJSON_GetObjectItemCaseSensitive(json, "alg");

        rc = (cJSON_IsString(item)
              && ngx_strcmp(item->valuestring, "HS256") == 0)
             ? NGX_OK : NGX_DECLINED;

        cJSON_Delete(json);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    /* the claims */

    rc = ngx_http_chat_jwt_part(dot1 + 1, dot2, buf, &part);
    if (rc != NGX_OK) {
        return rc;
    }

    json = ngx_http_chat_json_decode(part.data, part.len);
    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    item = cJSON_GetObjectItemCaseSensitive(json, "exp");

    if (!cJSON_IsNumber(item)
        || ngx_http_chat_json_int64(item, &exp) != NGX_OK
        || exp <= ngx_time())
    {
        goto done;
    }

    if (ngx_http_chat_jwt_future(json, "nbf")
        || ngx_http_chat_jwt_future(json, "iat"))
    {
        goto done;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "type");

    if (!cJSON_IsString(item) || ngx_strcmp(item->valuestring, "access") != 0)
    {
        goto done;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "sub");

    if (!cJSON_IsString(item)) {
        goto done;
    }

    part.data = (u_char *) item->valuestring;
    part.len = ngx_strlen(item->valuestring);

    if (ngx_http_chat_parse_id(&part, &id) != NGX_OK
        || id <= 0 || id > NGX_MAX_INT32_VALUE)
    {
        goto done;
    }

    ctx->user_id = id;
    ctx->token = *token;
    ctx->token_exp = (time_t) exp;

    item = cJSON_GetObjectItemCaseSensitive(json, "email");

    if (cJSON_IsString(item)) {
        ctx->email.len = ngx_strlen(item->valuestring);
        ctx->email.data = ngx_pnalloc(r->pool, ctx->email.len);

        if (ctx->email.data == NULL) {
            rc = NGX_ERROR;
            goto done;
        }

        ngx_memcpy(ctx->email.data, item->valuestring, ctx->email.len);
    }

    rc = NGX_OK;

done:

    cJSON_Delete(json);

    return rc;
}


/*
 * A time claim later than now (with skew), or a string where a number
 * belongs; a fraction counts by its whole seconds (the original's
 * verifiers truncate it), other types are not times and are let be.
 */

static ngx_uint_t
ngx_http_chat_jwt_future(cJSON *claims, const char *name)
{
    double  t;
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(claims, name);

    if (cJSON_IsString(item)) {
        return 1;
    }

    if (!cJSON_IsNumber(item)) {
        return 0;
    }

    t = item->valuedouble;

    return t > (double) (ngx_time() + NGX_HTTP_CHAT_JWT_SKEW);
}


/* the Redis key of a revoked token: its SHA-256, never the token itself */

ngx_int_t
ngx_http_chat_revoked_key(ngx_http_request_t *r, ngx_str_t *token,
    ngx_str_t *key)
{
    u_char  *p;
    u_char   md[SHA256_DIGEST_LENGTH];

    if (ngx_http_chat_sha256(token->data, token->len, md) != NGX_OK) {
        return NGX_ERROR;
    }

    key->len = sizeof(NGX_HTTP_CHAT_REVOKED) - 1 + 2 * SHA256_DIGEST_LENGTH;
    key->data = ngx_pnalloc(r->pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(key->data, NGX_HTTP_CHAT_REVOKED,
                   sizeof(NGX_HTTP_CHAT_REVOKED) - 1);
    ngx_hex_dump(p, md, SHA256_DIGEST_LENGTH);

    return NGX_OK;
}


static ngx_http_chat_token_t  *ngx_http_chat_tokens;


/*
 * The token's claims into ctx and its revocation key into key, from the
 * worker's memory when the token is known, else verified and remembered
 */

static ngx_int_t
ngx_http_chat_token_verify(ngx_http_request_t *r, ngx_str_t *token,
    ngx_http_chat_ctx_t *ctx, ngx_str_t *key)
{
    u_char                 *p;
    size_t                  size, n;
    ngx_int_t               rc;
    ngx_http_chat_token_t  *t;

    t = ngx_http_chat_token_slot(token);

    /*
     * the signature in constant time: the time taken says nothing of the
     * signature of a remembered token; header and claims are no secret
     * without it
     */

    n = token->len - ngx_min(token->len, NGX_HTTP_CHAT_JWT_SIG_LEN);

    if (t && t->len == token->len
        && ngx_memcmp(t->data, token->data, n) == 0
        && CRYPTO_memcmp(t->data + n, token->data + n, token->len - n) == 0
        && t->exp > ngx_time())
    {
        ctx->user_id = t->user_id;
        ctx->token = *token;
        ctx->token_exp = t->exp;

        /* the request's own copies: the slot may be taken meanwhile */

        size = t->email.len + t->key.len;

        p = ngx_pnalloc(r->pool, size);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (t->email.len) {
            ctx->email.data = p;
            ctx->email.len = t->email.len;
            p = ngx_cpymem(p, t->email.data, t->email.len);
        }

        key->data = p;
        key->len = t->key.len;
        ngx_memcpy(p, t->key.data, t->key.len);

        return NGX_OK;
    }

    rc = ngx_http_chat_jwt_verify(r, token, ctx);

    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_chat_revoked_key(r, token, key) != NGX_OK) {
        return NGX_ERROR;
    }

    if (t == NULL) {
        return NGX_OK;
    }

    /* remembered; without the memory for it, only not remembered */

    size = token->len + ctx->email.len + key->len;

    p = ngx_alloc(size, r->connection->log);
    if (p == NULL) {
        return NGX_OK;
    }

    if (t->data) {
        ngx_free(t->data);
    }

    t->data = p;
    t->len = token->len;
    t->user_id = ctx->user_id;
    t->exp = ctx->token_exp;

    p = ngx_cpymem(p, token->data, token->len);

    t->email.data = p;
    t->email.len = ctx->email.len;

    if (ctx->email.len) {
        p = ngx_cpymem(p, ctx->email.data, ctx->email.len);
    }

    t->key.data = p;
    t->key.len = key->len;
    ngx_memcpy(p, key->data, key->len);

    return NGX_OK;
}


static ngx_http_chat_token_t *
ngx_http_chat_token_slot(ngx_str_t *token)
{
    size_t  n;

    if (ngx_http_chat_tokens == NULL) {
        ngx_http_chat_tokens = ngx_calloc(NGX_HTTP_CHAT_TOKENS
                                          * sizeof(ngx_http_chat_token_t),
                                          ngx_cycle->log);
        if (ngx_http_chat_tokens == NULL) {
            return NULL;
        }
    }

    n = ngx_min(token->len, NGX_HTTP_CHAT_TOKEN_TAIL);

    return &ngx_http_chat_tokens[ngx_hash_key(token->data + token->len - n, n)
                                 % NGX_HTTP_CHAT_TOKENS];
}


/* the revocation check of one request, and what follows it */

typedef struct {
    ngx_http_chat_handler_pt    next;
    ngx_int_t                   revoked;    /* -1: no answer */
    ngx_uint_t                  early;      /* next() ran beside it */
} ngx_http_chat_revocation_t;


/* a valid token not revoked by logout; then next(r, ctx) */

ngx_int_t
ngx_http_chat_authenticate(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_str_t *token, ngx_http_chat_handler_pt next)
{
    ngx_int_t                    rc;
    ngx_str_t                    key;
    const char                  *argv[2];
    size_t                       argvlen[2];
    ngx_http_chat_op_t          *all, *op;
    ngx_http_chat_revocation_t  *rv;

    rc = ngx_http_chat_token_verify(r, token, ctx, &key);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "chat: invalid or expired token");
        return ngx_http_chat_send_unauthorized(r);
    }

    rv = ngx_palloc(r->pool, sizeof(ngx_http_chat_revocation_t));
    if (rv == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rv->next = next;
    rv->revoked = -1;
    rv->early = 0;

    all = ngx_http_chat_all(r, ngx_http_chat_revocation_checked, rv);
    if (all == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = ngx_http_chat_op_member(all, ngx_http_chat_revocation_reply, rv);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "EXISTS";
    argvlen[0] = sizeof("EXISTS") - 1;
    argv[1] = (const char *) key.data;
    argvlen[1] = key.len;

    if (ngx_http_chat_op_redis(op, 2, argv, argvlen) != NGX_OK) {
        ngx_http_chat_op_fail(op);
    }

    rc = ngx_http_chat_all_wait(r, all);

    if (rc != NGX_DONE || ctx->route == NULL
        || !(ctx->route->flags & NGX_HTTP_CHAT_EARLY))
    {
        return rc;
    }

    /* the route's first step runs at once, its result waits for this */

    ctx->gate = all;
    rv->early = 1;

    rc = next(r, ctx);

    if (rc != NGX_DONE) {

        /* a failure nginx answers itself (500): the verdict is moot */

        ctx->gate = NULL;
    }

    return rc;
}


static void
ngx_http_chat_revocation_reply(ngx_http_chat_op_t *op)
{
    ngx_http_chat_revocation_t  *rv;

    rv = op->data;

    if (op->rc == NGX_OK && op->reply->type == REDIS_REPLY_INTEGER) {
        rv->revoked = (op->reply->integer != 0);
    }
}


/* the revocation list is in Redis: without Redis no token is accepted */

static ngx_int_t
ngx_http_chat_revocation_checked(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc, void *data)
{
    ngx_http_chat_revocation_t *rv = data;

    if (rv->early && ctx->gate == NULL) {
        return NGX_DONE;    /* the route answered already */
    }

    if (rv->revoked == -1 || rv->revoked) {

        if (rv->early) {
            ngx_http_chat_gate_shut(r, ctx);
        }

        if (rv->revoked == -1) {
            return ngx_http_chat_send_unavailable(r);
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "chat: revoked token of user %i", ctx->user_id);
        return ngx_http_chat_send_unauthorized(r);
    }

    if (rv->early) {
        return ngx_http_chat_gate_open(r, ctx);
    }

    return rv->next(r, ctx);
}


/* logout: the token is refused until it would have expired anyway */

ngx_int_t
ngx_http_chat_revoke(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_redis_pt handler)
{
    u_char       ttl[NGX_TIME_T_LEN];
    time_t       left;
    ngx_int_t    rc;
    ngx_str_t    key;
    const char  *argv[5];
    size_t       argvlen[5];

    if (ngx_http_chat_revoked_key(r, &ctx->token, &key) != NGX_OK) {
        return NGX_ERROR;
    }

    left = ctx->token_exp - ngx_time();
    if (left < 1) {
        left = 1;
    }

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (const char *) key.data;
    argvlen[1] = key.len;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = "EX";
    argvlen[3] = 2;
    argv[4] = (const char *) ttl;
    argvlen[4] = ngx_sprintf(ttl, "%T", left) - ttl;

    rc = ngx_http_chat_redis(r, handler, 5, argv, argvlen);

    if (rc != NGX_DONE) {
        return rc;
    }

    /*
     * the streams opened with the token end (ngx_http_chat_sse.c); the
     * command connection keeps the order, so a stream that looks at the
     * key after this message went out finds it set
     */

    argv[0] = "PUBLISH";
    argvlen[0] = sizeof("PUBLISH") - 1;
    argv[2] = "revoked";
    argvlen[2] = sizeof("revoked") - 1;

    if (ngx_http_chat_redis_send(3, argv, argvlen) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "chat: the revocation of a token was not published, "
                      "its streams stay open");
    }

    return NGX_DONE;
}


ngx_int_t
ngx_http_chat_bcrypt_hash(ngx_http_request_t *r, ngx_http_chat_bcrypt_t *b,
    ngx_http_chat_thread_done_pt done)
{
    u_char  rnd[16];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1
        || crypt_gensalt_rn("$2b$", 12, (const char *) rnd, sizeof(rnd),
                            b->setting, sizeof(b->setting))
           == NULL)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, ngx_errno,
                      "chat: bcrypt salt generation failed");
        return NGX_ERROR;
    }

    return ngx_http_chat_bcrypt_post(r, b, 0, done);
}


ngx_int_t
ngx_http_chat_bcrypt_verify(ngx_http_request_t *r, ngx_http_chat_bcrypt_t *b,
    ngx_http_chat_thread_done_pt done)
{
    return ngx_http_chat_bcrypt_post(r, b, 1, done);
}


static ngx_int_t
ngx_http_chat_bcrypt_post(ngx_http_request_t *r, ngx_http_chat_bcrypt_t *b,
    ngx_uint_t verify, ngx_http_chat_thread_done_pt done)
{
    ngx_http_chat_bcrypt_task_t  *t;

    t = ngx_palloc(r->pool, sizeof(ngx_http_chat_bcrypt_task_t));
    if (t == NULL) {
        return NGX_ERROR;
    }

    /* crypt_r() wants its large work area zeroed */

    t->data = ngx_pcalloc(r->pool, sizeof(struct crypt_data));
    if (t->data == NULL) {
        return NGX_ERROR;
    }

    t->bcrypt = b;
    t->verify = verify;
    b->match = 0;

    return ngx_http_chat_cpu(r, ngx_http_chat_bcrypt_run, t, done);
}


/* in a pool thread */

static ngx_int_t
ngx_http_chat_bcrypt_run(void *data)
{
    ngx_http_chat_bcrypt_task_t *t = data;

    size_t                   n;
    char                    *h;
    ngx_http_chat_bcrypt_t  *b;

    b = t->bcrypt;

    h = crypt_r(b->password, t->verify ? b->hash : b->setting, t->data);

    if (h == NULL || h[0] == '*') {
        return NGX_ERROR;
    }

    n = strlen(h);

    if (t->verify) {
        b->match = (n == strlen(b->hash)
                    && CRYPTO_memcmp(h, b->hash, n) == 0);
        return NGX_OK;
    }

    if (n >= sizeof(b->hash)) {
        return NGX_ERROR;
    }

    ngx_memcpy(b->hash, h, n + 1);

    return NGX_OK;
}
