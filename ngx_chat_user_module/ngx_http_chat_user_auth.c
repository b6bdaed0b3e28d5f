
/*
 * /api/auth: register (U1), login as OAuth2 form and as JSON (U2, U3),
 * logout (U4).
 */


#include "ngx_http_chat_user_module.h"


#define NGX_HTTP_CHAT_SPECIALS  "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


/* verified when the e-mail is unknown, so both failures cost the same */
static char  ngx_http_chat_user_dummy_hash[] =
    "$2b$12$C6UzMDM.H6dfI/f/IKxGhuBvhJYb6nFeHBo9Ry7pFHbRXJxRjPdDa";


static ngx_int_t ngx_http_chat_user_register_checked(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_register_hashed(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_user_register_inserted(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_register_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static void ngx_http_chat_user_normalize(ngx_str_t *email);
static ngx_int_t ngx_http_chat_user_login(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_user_login_found(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_login_verified(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_user_login_online(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_chat_user_login_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_send_invalid_login(ngx_http_request_t *r);
static ngx_int_t ngx_http_chat_user_logout_user(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_user_logout_revoked(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_chat_user_logout_offline(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_chat_user_logout_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_online_event(ngx_http_request_t *r,
    ngx_int_t id, ngx_uint_t online);
static ngx_int_t ngx_http_chat_user_password_rules(ngx_http_request_t *r,
    cJSON **errors, ngx_str_t *password);


/*
 * U1.  Two layers as the original: the schema (E-C, every field's errors
 * together), then the application rules (E-B', every failing rule, always
 * "Multiple validation errors"); then the uniqueness checks, the hash and
 * the insert.
 */

ngx_int_t
ngx_http_chat_user_register(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    u_char                    *p, *last;
    cJSON                     *errors, *item, *ectx;
    ngx_int_t                  rc;
    const char                *reason;
    ngx_http_chat_sql_arg_t    args[2];
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ngx_http_chat_user_ctx(r, ctx);
    if (uctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    errors = NULL;

    rc = ngx_http_chat_body_string(r, &errors, ctx->json, "email", 1, 0,
                                   NGX_MAX_INT32_VALUE, &uctx->email);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK
        && ngx_http_chat_user_valid_email(&uctx->email, &reason) != NGX_OK)
    {
        item = cJSON_GetObjectItemCaseSensitive(ctx->json, "email");

        errors = ngx_http_chat_invalid(r, errors, "body", "email",
                                       "value_error",
                                       "value is not a valid email address",
                                       cJSON_Duplicate(item, 1));
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        item = cJSON_GetArrayItem(errors, cJSON_GetArraySize(errors) - 1);
        ectx = cJSON_AddObjectToObject(item, "ctx");

        if (ectx == NULL
            || cJSON_AddStringToObject(ectx, "reason", reason) == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_chat_body_string(r, &errors, ctx->json, "username", 1, 3, 50,
                                  &uctx->username)
        == NGX_ERROR
        || ngx_http_chat_body_string(r, &errors, ctx->json, "password", 1, 8,
                                     16, &uctx->password)
           == NGX_ERROR
        || ngx_http_chat_body_string(r, &errors, ctx->json, "display_name",
                                     0, 0, 100, &uctx->display_name)
           == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    /* the application layer */

    if (ngx_http_chat_user_email_format(&uctx->email) != NGX_OK) {
        errors = ngx_http_chat_app_invalid(r, errors, "email",
                                     "Invalid email format",
                                     cJSON_Duplicate(cJSON_GetObjectItem(
                                         ctx->json, "email"), 1));
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    p = uctx->username.data;
    last = p + uctx->username.len;

    for ( /* void */ ; p < last; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
        {
            break;
        }
    }

    if (p < last) {
        errors = ngx_http_chat_app_invalid(r, errors, "username",
                      "Username can only contain letters, numbers, "
                      "underscores, and hyphens",
                      cJSON_Duplicate(cJSON_GetObjectItem(ctx->json,
                                                          "username"), 1));
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    p = uctx->username.data;

    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
          || (*p >= '0' && *p <= '9')))
    {
        errors = ngx_http_chat_app_invalid(r, errors, "username",
                      "Username must start with a letter or number",
                      cJSON_Duplicate(cJSON_GetObjectItem(ctx->json,
                                                          "username"), 1));
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_chat_user_password_rules(r, &errors, &uctx->password)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_app_invalid(r, "Multiple validation errors",
                                              errors);
    }

    ngx_http_chat_user_normalize(&uctx->email);

    args[0].type = NGX_HTTP_CHAT_SQL_STR;
    args[0].str = uctx->email;
    args[1].type = NGX_HTTP_CHAT_SQL_STR;
    args[1].str = uctx->username;

    return ngx_http_chat_sql(r,
                   "SELECT (SELECT COUNT(*) FROM users WHERE email = ?), "
                   "(SELECT COUNT(*) FROM users WHERE username = ?)",
                   args, 2, ngx_http_chat_user_register_checked);
}


static ngx_int_t
ngx_http_chat_user_password_rules(ngx_http_request_t *r, cJSON **errors,
    ngx_str_t *password)
{
    u_char      *p, *last;
    ngx_uint_t   letter, digit, special;

    letter = 0;
    digit = 0;
    special = 0;

    last = password->data + password->len;

    for (p = password->data; p < last; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) {
            letter = 1;

        } else if (*p >= '0' && *p <= '9') {
            digit = 1;

        } else if (ngx_strlchr((u_char *) NGX_HTTP_CHAT_SPECIALS,
                               (u_char *) NGX_HTTP_CHAT_SPECIALS
                               + sizeof(NGX_HTTP_CHAT_SPECIALS) - 1, *p))
        {
            special = 1;
        }
    }

    if (!letter) {
        *errors = ngx_http_chat_app_invalid(r, *errors, "password",
                              "Password must contain at least one letter",
                              NULL);
        if (*errors == NULL) {
            return NGX_ERROR;
        }
    }

    if (!digit) {
        *errors = ngx_http_chat_app_invalid(r, *errors, "password",
                              "Password must contain at least one digit",
                              NULL);
        if (*errors == NULL) {
            return NGX_ERROR;
        }
    }

    if (!special) {
        *errors = ngx_http_chat_app_invalid(r, *errors, "password",
                    "Password must contain at least one special character",
                    NULL);
        if (*errors == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the domain part is stored lower-cased; the local part keeps its case */

static void
ngx_http_chat_user_normalize(ngx_str_t *email)
{
    u_char  *p, *last;

    last = email->data + email->len;
    p = ngx_strlchr(email->data, last, '@');

    for ( /* void */ ; p && p < last; p++) {
        *p = ngx_tolower(*p);
    }
}


static ngx_int_t
ngx_http_chat_user_register_checked(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    ngx_http_chat_user_ctx_t  *uctx;

    if (res->rc != NGX_OK || res->nrows != 1) {
        return ngx_http_chat_send_unavailable(r);
    }

    if (res->cells[0].len != 1 || res->cells[0].data[0] != '0') {
        return ngx_http_chat_send_error(r, NGX_HTTP_CONFLICT,
                                        "resource_conflict",
                                        "Email already registered", NULL);
    }

    if (res->cells[1].len != 1 || res->cells[1].data[0] != '0') {
        return ngx_http_chat_send_error(r, NGX_HTTP_CONFLICT,
                                        "resource_conflict",
                                        "Username already taken", NULL);
    }

    uctx = ctx->data;

    ngx_memcpy(uctx->bcrypt.password, uctx->password.data,
               uctx->password.len);

    if (ngx_http_chat_bcrypt_hash(r, &uctx->bcrypt,
                                  ngx_http_chat_user_register_hashed)
        != NGX_DONE)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_http_chat_user_register_hashed(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc)
{
    ngx_http_chat_sql_arg_t    args[4];
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ctx->data;

    if (rc != NGX_OK) {
        return ngx_http_chat_send_unavailable(r);
    }

    args[0].type = NGX_HTTP_CHAT_SQL_STR;
    args[0].str = uctx->email;
    args[1].type = NGX_HTTP_CHAT_SQL_STR;
    args[1].str.data = (u_char *) uctx->bcrypt.hash;
    args[1].str.len = ngx_strlen(uctx->bcrypt.hash);
    args[2].type = NGX_HTTP_CHAT_SQL_STR;
    args[2].str = uctx->username;
    args[3].type = uctx->display_name.data ? NGX_HTTP_CHAT_SQL_STR
                                           : NGX_HTTP_CHAT_SQL_NULL;
    args[3].str = uctx->display_name;

    return ngx_http_chat_sql(r,
                   "INSERT INTO users (email, password_hash, username, "
                   "display_name, status_message, is_online, last_seen_at, "
                   "is_active, created_at, updated_at) VALUES "
                   "(?, ?, ?, ?, NULL, 0, NULL, 1, UTC_TIMESTAMP(), "
                   "UTC_TIMESTAMP())",
                   args, 4, ngx_http_chat_user_register_inserted);
}


/* a concurrent registration may still win the race at the unique key */

static ngx_int_t
ngx_http_chat_user_register_inserted(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON                     *json;
    ngx_http_chat_sql_arg_t    arg;
    ngx_http_chat_user_ctx_t  *uctx;

    if (res->rc == NGX_ERROR && res->errnum == 1062) {
        json = ngx_http_chat_json_object(r);
        if (json == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* E-D, not wrapped in "detail" */

        if (cJSON_AddStringToObject(json, "error", "duplicate_entry") == NULL
            || cJSON_AddStringToObject(json, "message",
                                       "Duplicate entry detected")
               == NULL
            || cJSON_AddItemToObject(json, "details",
                                     cJSON_CreateObject()) == 0
            || cJSON_AddStringToObject(cJSON_GetObjectItem(json, "details"),
                                       "constraint", "unique")
               == NULL
            || ngx_http_chat_json_num(json, "status_code", 409) == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_chat_send_json(r, NGX_HTTP_CONFLICT, json);
    }

    if (res->rc != NGX_OK) {
        return ngx_http_chat_send_unavailable(r);
    }

    uctx = ctx->data;
    uctx->id = (ngx_int_t) res->insert_id;

    arg.type = NGX_HTTP_CHAT_SQL_INT;
    arg.num = uctx->id;

    return ngx_http_chat_sql(r, NGX_HTTP_CHAT_USER_BY_ID, &arg, 1,
                             ngx_http_chat_user_register_done);
}


static ngx_int_t
ngx_http_chat_user_register_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON                     *json, *fields;
    ngx_str_t                 *row;
    ngx_http_chat_user_ctx_t  *uctx;

    if (res->rc != NGX_OK || res->nrows != 1) {
        return ngx_http_chat_send_unavailable(r);
    }

    uctx = ctx->data;
    row = res->cells;

    /* UserResponse: the original's schema order */

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || ngx_http_chat_json_str(json, "email", &row[NGX_HTTP_CHAT_USER_EMAIL])
           == NULL
        || ngx_http_chat_json_str(json, "username",
                                  &row[NGX_HTTP_CHAT_USER_NAME])
           == NULL
        || ngx_http_chat_json_nstr(json, "display_name",
                                   &row[NGX_HTTP_CHAT_USER_DISPLAY])
           == NULL
        || ngx_http_chat_json_num(json, "id", uctx->id) == NULL
        || ngx_http_chat_json_sql_time(json, "created_at",
                                       &row[NGX_HTTP_CHAT_USER_CREATED])
           == NULL
        || ngx_http_chat_json_sql_time(json, "updated_at",
                                       &row[NGX_HTTP_CHAT_USER_UPDATED])
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fields = ngx_http_chat_json_object(r);
    if (fields == NULL
        || ngx_http_chat_json_num(fields, "user_id", uctx->id) == NULL
        || ngx_http_chat_json_str(fields, "email",
                                  &row[NGX_HTTP_CHAT_USER_EMAIL])
           == NULL
        || ngx_http_chat_json_str(fields, "username",
                                  &row[NGX_HTTP_CHAT_USER_NAME])
           == NULL
        || ngx_http_chat_json_str(fields, "display_name",
                                  uctx->display_name.len
                                  ? &uctx->display_name
                                  : &row[NGX_HTTP_CHAT_USER_NAME])
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_chat_event_publish(r, "user.events", uctx->id,
                                    "UserRegistered", fields)
        == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_CREATED, json);
}


/*
 * U2.  The form's "username" holds the e-mail.  A JSON body has no form
 * fields, hence the two "missing" errors the original gives for it.
 */

ngx_int_t
ngx_http_chat_user_login_form(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                     *errors, *item;
    ngx_int_t                  rc_user, rc_pass;
    ngx_str_t                  grant, *ct;
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ngx_http_chat_user_ctx(r, ctx);
    if (uctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ct = r->headers_in.content_type ? &r->headers_in.content_type->value
                                    : NULL;

    if (ct && ct->len >= sizeof("application/json") - 1
        && ngx_strncasecmp(ct->data, (u_char *) "application/json",
                           sizeof("application/json") - 1)
           == 0)
    {
        rc_user = NGX_DECLINED;
        rc_pass = NGX_DECLINED;

    } else {
        rc_user = ngx_http_chat_form_arg(r, &ctx->body, "username",
                                         &uctx->email);
        rc_pass = ngx_http_chat_form_arg(r, &ctx->body, "password",
                                         &uctx->password);
    }

    if (rc_user == NGX_ERROR || rc_pass == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    errors = NULL;

    if (rc_user != NGX_OK) {
        errors = ngx_http_chat_invalid(r, errors, "body", "username",
                                       "missing", "Field required", NULL);
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (rc_pass != NGX_OK) {
        errors = ngx_http_chat_invalid(r, errors, "body", "password",
                                       "missing", "Field required", NULL);
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_chat_form_arg(r, &ctx->body, "grant_type", &grant) == NGX_OK
        && (grant.len != sizeof("password") - 1
            || ngx_strncmp(grant.data, "password", grant.len) != 0))
    {
        item = cJSON_CreateString("");
        if (item) {
            cJSON_free(item->valuestring);
            item->valuestring = cJSON_malloc(grant.len + 1);
        }

        if (item == NULL || item->valuestring == NULL) {
            cJSON_Delete(item);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        *ngx_cpymem(item->valuestring, grant.data, grant.len) = '\0';

        errors = ngx_http_chat_invalid(r, errors, "body", "grant_type",
                                       "string_pattern_mismatch",
                                       "String should match pattern "
                                       "'^password$'", item);
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    return ngx_http_chat_user_login(r, ctx);
}


/* U3 */

ngx_int_t
ngx_http_chat_user_login_json(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    cJSON                     *errors;
    ngx_int_t                  rc;
    const char                *reason;
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ngx_http_chat_user_ctx(r, ctx);
    if (uctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    errors = NULL;

    rc = ngx_http_chat_body_string(r, &errors, ctx->json, "email", 1, 0,
                                   NGX_MAX_INT32_VALUE, &uctx->email);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK
        && ngx_http_chat_user_valid_email(&uctx->email, &reason) != NGX_OK)
    {
        errors = ngx_http_chat_invalid(r, errors, "body", "email",
                       "value_error", "value is not a valid email address",
                       cJSON_Duplicate(cJSON_GetObjectItem(ctx->json,
                                                           "email"), 1));
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_chat_body_string(r, &errors, ctx->json, "password", 1, 0,
                                  NGX_MAX_INT32_VALUE, &uctx->password)
        == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (errors) {
        return ngx_http_chat_send_invalid(r, errors);
    }

    ngx_http_chat_user_normalize(&uctx->email);

    return ngx_http_chat_user_login(r, ctx);
}


/* the common part of U2 and U3: a non-blank password, then the lookup */

static ngx_int_t
ngx_http_chat_user_login(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    u_char                    *p;
    cJSON                     *errors;
    ngx_http_chat_sql_arg_t    arg;
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ctx->data;
    errors = NULL;

    if (ngx_http_chat_user_email_format(&uctx->email) != NGX_OK) {
        errors = ngx_http_chat_app_invalid(r, errors,
                          ctx->route->flags & NGX_HTTP_CHAT_JSON ? "email"
                                                                 : "username",
                          "Invalid email format", NULL);
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    for (p = uctx->password.data;
         p < uctx->password.data + uctx->password.len;
         p++)
    {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            break;
        }
    }

    if (p == uctx->password.data + uctx->password.len) {
        errors = ngx_http_chat_app_invalid(r, errors, "password",
                                           "This field is required", NULL);
        if (errors == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (errors) {
        return ngx_http_chat_send_app_invalid(r, "Multiple validation errors",
                                              errors);
    }

    /*
     * longer than any stored password cannot match (bcrypt would cut it),
     * nor can one with a NUL (crypt() would stop there)
     */

    if (uctx->password.len >= sizeof(uctx->bcrypt.password) - 8
        || ngx_strlchr(uctx->password.data,
                       uctx->password.data + uctx->password.len, '\0'))
    {
        return ngx_http_chat_user_send_invalid_login(r);
    }

    ngx_memcpy(uctx->bcrypt.password, uctx->password.data,
               uctx->password.len);

    arg.type = NGX_HTTP_CHAT_SQL_STR;
    arg.str = uctx->email;

    return ngx_http_chat_sql(r, "SELECT " NGX_HTTP_CHAT_USER_COLUMNS
                             " FROM users WHERE email = ?", &arg, 1,
                             ngx_http_chat_user_login_found);
}


static ngx_int_t
ngx_http_chat_user_login_found(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    int64_t                    id;
    ngx_str_t                 *hash;
    ngx_http_chat_user_ctx_t  *uctx;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_send_unavailable(r);
    }

    uctx = ctx->data;

    if (res->nrows == 0) {
        uctx->user = NULL;
        ngx_memcpy(uctx->bcrypt.hash, ngx_http_chat_user_dummy_hash,
                   sizeof(ngx_http_chat_user_dummy_hash));

    } else {
        uctx->user = res->cells;
        hash = &res->cells[NGX_HTTP_CHAT_USER_HASH];

        if (hash->len >= sizeof(uctx->bcrypt.hash)
            || ngx_http_chat_parse_id(&res->cells[NGX_HTTP_CHAT_USER_ID], &id)
               != NGX_OK)
        {
            return ngx_http_chat_user_send_invalid_login(r);
        }

        uctx->id = id;
        ngx_memcpy(uctx->bcrypt.hash, hash->data, hash->len);
        uctx->bcrypt.hash[hash->len] = '\0';
    }

    if (ngx_http_chat_bcrypt_verify(r, &uctx->bcrypt,
                                    ngx_http_chat_user_login_verified)
        != NGX_DONE)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_http_chat_user_send_invalid_login(ngx_http_request_t *r)
{
    return ngx_http_chat_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                    "authentication_error",
                                    "Invalid email or password", NULL);
}


/* logged in: presence key "login_{id}_{first 10 of token}" for an hour */

static ngx_int_t
ngx_http_chat_user_login_verified(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc)
{
    u_char                    *key, *value;
    const char                *argv[5];
    size_t                     argvlen[5];
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ctx->data;

    if (rc == NGX_DECLINED) {
        return ngx_http_chat_send_unavailable(r);
    }

    if (rc != NGX_OK || uctx->user == NULL || !uctx->bcrypt.match) {
        return ngx_http_chat_user_send_invalid_login(r);
    }

    if (ngx_http_chat_jwt_issue(r, uctx->id,
                                &uctx->user[NGX_HTTP_CHAT_USER_EMAIL],
                                &uctx->token)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    key = ngx_pnalloc(r->pool, sizeof("user:online:") + NGX_INT_T_LEN);
    value = ngx_pnalloc(r->pool, sizeof("login__") + NGX_INT_T_LEN + 10);

    if (key == NULL || value == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "user:online:%i", uctx->id) - key;
    argv[2] = (const char *) value;
    argvlen[2] = ngx_sprintf(value, "login_%i_%*s", uctx->id,
                             ngx_min(uctx->token.len, 10), uctx->token.data)
                 - value;
    argv[3] = "EX";
    argvlen[3] = 2;
    argv[4] = NGX_HTTP_CHAT_PRESENCE_TTL;
    argvlen[4] = sizeof(NGX_HTTP_CHAT_PRESENCE_TTL) - 1;

    return ngx_http_chat_redis(r, ngx_http_chat_user_login_online, 5, argv,
                               argvlen);
}


static ngx_int_t
ngx_http_chat_user_login_online(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply)
{
    ngx_http_chat_sql_arg_t    arg;
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ctx->data;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "chat user: presence of user %i not stored", uctx->id);
    }

    arg.type = NGX_HTTP_CHAT_SQL_INT;
    arg.num = uctx->id;

    return ngx_http_chat_sql(r, "UPDATE users SET is_online = 1, "
                             "updated_at = UTC_TIMESTAMP() WHERE id = ?",
                             &arg, 1, ngx_http_chat_user_login_done);
}


static ngx_int_t
ngx_http_chat_user_login_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    cJSON                           *json;
    ngx_http_chat_user_ctx_t        *uctx;
    ngx_http_chat_core_main_conf_t  *cmcf;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_send_unavailable(r);
    }

    uctx = ctx->data;
    cmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_core_module);

    if (ngx_http_chat_user_online_event(r, uctx->id, 1) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || ngx_http_chat_json_str(json, "access_token", &uctx->token) == NULL
        || cJSON_AddStringToObject(json, "token_type", "bearer") == NULL
        || ngx_http_chat_json_num(json, "expires_in", cmcf->jwt_lifetime)
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


static ngx_int_t
ngx_http_chat_user_online_event(ngx_http_request_t *r, ngx_int_t id,
    ngx_uint_t online)
{
    ngx_str_t  trace;

    /* a login's or a logout's event carries the request's trace */

    return ngx_http_chat_user_status_event(r->pool, r->connection->log, id,
                                           online,
                                           ngx_http_chat_traceparent(r, &trace)
                                           == NGX_OK ? &trace : NULL);
}


/*
 * U4.  Beyond the original: the presented token is revoked, so it stops
 * working now instead of at its expiry.
 */

ngx_int_t
ngx_http_chat_user_logout(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_user_load(r, ctx, ngx_http_chat_user_logout_user);
}


static ngx_int_t
ngx_http_chat_user_logout_user(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_revoke(r, ctx, ngx_http_chat_user_logout_revoked);
}


static ngx_int_t
ngx_http_chat_user_logout_revoked(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply)
{
    u_char      *key;
    const char  *argv[2];
    size_t       argvlen[2];

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        return ngx_http_chat_send_unavailable(r);
    }

    key = ngx_pnalloc(r->pool, sizeof("user:online:") + NGX_INT_T_LEN);
    if (key == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "DEL";
    argvlen[0] = 3;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "user:online:%i", ctx->user_id) - key;

    return ngx_http_chat_redis(r, ngx_http_chat_user_logout_offline, 2, argv,
                               argvlen);
}


static ngx_int_t
ngx_http_chat_user_logout_offline(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, redisReply *reply)
{
    ngx_http_chat_sql_arg_t  arg;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        return ngx_http_chat_send_unavailable(r);
    }

    arg.type = NGX_HTTP_CHAT_SQL_INT;
    arg.num = ctx->user_id;

    return ngx_http_chat_sql(r, "UPDATE users SET is_online = 0, "
                             "last_seen_at = UTC_TIMESTAMP(), "
                             "updated_at = UTC_TIMESTAMP() WHERE id = ?",
                             &arg, 1, ngx_http_chat_user_logout_done);
}


static ngx_int_t
ngx_http_chat_user_logout_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    if (res->rc != NGX_OK) {
        return ngx_http_chat_send_unavailable(r);
    }

    if (ngx_http_chat_user_online_event(r, ctx->user_id, 0) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_message(r, "Successfully logged out",
                                      "user_id", ctx->user_id);
}
