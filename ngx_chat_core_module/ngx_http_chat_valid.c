
/*
 * Input validation with the original's (pydantic's) error items, E-C of
 * API.md 2.7: every check appends to an errors array that the handler
 * sends as one 422 once all fields are checked.
 *
 * Each function returns NGX_OK (valid, or optional and absent),
 * NGX_DECLINED (an error item was appended) or NGX_ERROR.
 */


#include "ngx_http_chat_core_module.h"


static ngx_int_t ngx_http_chat_length(ngx_http_request_t *r, cJSON **errors,
    const char *where, const char *field, ngx_str_t *value, ngx_int_t min,
    ngx_int_t max, cJSON *input);
static ngx_int_t ngx_http_chat_invalid_ctx(cJSON *errors, const char *key,
    ngx_int_t num);
static cJSON *ngx_http_chat_json_input(ngx_str_t *s);


/* "ctx" of the last error item, e.g. {"max_length":50} */

static ngx_int_t
ngx_http_chat_invalid_ctx(cJSON *errors, const char *key, ngx_int_t num)
{
    cJSON  *item, *ctx;

    item = cJSON_GetArrayItem(errors, cJSON_GetArraySize(errors) - 1);
    ctx = cJSON_AddObjectToObject(item, "ctx");

    if (ctx == NULL || cJSON_AddNumberToObject(ctx, key, num) == NULL) {
        return NGX_ERROR;
    }

    return NGX_DECLINED;
}


static cJSON *
ngx_http_chat_json_input(ngx_str_t *s)
{
    cJSON  *item, *v;

    /* bytes that are not UTF-8 cannot go into a JSON document */

    if (ngx_http_chat_utf8_length(s) == NGX_ERROR) {
        return cJSON_CreateNull();
    }

    item = cJSON_CreateObject();
    if (item == NULL) {
        return NULL;
    }

    if (ngx_http_chat_json_str(item, "v", s) == NULL) {
        cJSON_Delete(item);
        return NULL;
    }

    v = cJSON_DetachItemFromObject(item, "v");
    cJSON_Delete(item);

    return v;
}


/* code points between min and max; input is consumed */

static ngx_int_t
ngx_http_chat_length(ngx_http_request_t *r, cJSON **errors,
    const char *where, const char *field, ngx_str_t *value, ngx_int_t min,
    ngx_int_t max, cJSON *input)
{
    u_char     msg[64];
    ngx_int_t  n;

    n = ngx_http_chat_utf8_length(value);

    if (n == NGX_ERROR) {
        cJSON_Delete(input);
        *errors = ngx_http_chat_invalid(r, *errors, where, field,
                                "string_unicode",
                                "Input should be a valid string, unable to "
                                "parse raw data as a unicode string", NULL);
        return *errors ? NGX_DECLINED : NGX_ERROR;
    }

    if (n >= min && n <= max) {
        cJSON_Delete(input);
        return NGX_OK;
    }

    if (n < min) {
        *ngx_sprintf(msg, "String should have at least %i character%s",
                     min, min == 1 ? "" : "s") = '\0';
        *errors = ngx_http_chat_invalid(r, *errors, where, field,
                                        "string_too_short", (char *) msg,
                                        input);
        return *errors ? ngx_http_chat_invalid_ctx(*errors, "min_length", min)
                       : NGX_ERROR;
    }

    *ngx_sprintf(msg, "String should have at most %i character%s",
                 max, max == 1 ? "" : "s") = '\0';
    *errors = ngx_http_chat_invalid(r, *errors, where, field,
                                    "string_too_long", (char *) msg, input);

    return *errors ? ngx_http_chat_invalid_ctx(*errors, "max_length", max)
                   : NGX_ERROR;
}


/* a string field of the JSON body; absent or null leaves value->data NULL */

ngx_int_t
ngx_http_chat_body_string(ngx_http_request_t *r, cJSON **errors,
    cJSON *json, const char *field, ngx_uint_t required, ngx_int_t min,
    ngx_int_t max, ngx_str_t *value)
{
    cJSON  *item;

    value->data = NULL;
    value->len = 0;

    item = cJSON_GetObjectItemCaseSensitive(json, field);

    if (item == NULL) {
        if (!required) {
            return NGX_OK;
        }

        *errors = ngx_http_chat_invalid(r, *errors, "body", field, "missing",
                                        "Field required",
                                        cJSON_Duplicate(json, 1));
        return *errors ? NGX_DECLINED : NGX_ERROR;
    }

    if (cJSON_IsNull(item) && !required) {
        return NGX_OK;
    }

    if (!cJSON_IsString(item)) {
        *errors = ngx_http_chat_invalid(r, *errors, "body", field,
                                        "string_type",
                                        "Input should be a valid string",
                                        cJSON_Duplicate(item, 1));
        return *errors ? NGX_DECLINED : NGX_ERROR;
    }

    value->data = (u_char *) item->valuestring;
    value->len = ngx_strlen(item->valuestring);

    return ngx_http_chat_length(r, errors, "body", field, value, min, max,
                                cJSON_Duplicate(item, 1));
}


/* an integer field of the JSON body (JSON integers only) */

ngx_int_t
ngx_http_chat_body_int(ngx_http_request_t *r, cJSON **errors, cJSON *json,
    const char *field, ngx_uint_t required, int64_t *value)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(json, field);

    if (item == NULL || (cJSON_IsNull(item) && !required)) {
        if (item == NULL && required) {
            *errors = ngx_http_chat_invalid(r, *errors, "body", field,
                                            "missing", "Field required",
                                            cJSON_Duplicate(json, 1));
            return *errors ? NGX_DECLINED : NGX_ERROR;
        }

        return NGX_OK;
    }

    return ngx_http_chat_json_int(r, errors, item, "body", field, value);
}


/*
 * item must be a whole number within int64 (pydantic also takes numeric
 * strings in lax mode; so do we); integers are read from their digits
 * (ngx_http_chat_json_decode()), so they are exact up to 2^63-1
 */

ngx_int_t
ngx_http_chat_json_int(ngx_http_request_t *r, cJSON **errors, cJSON *item,
    const char *where, const char *field, int64_t *value)
{
    ngx_int_t  rc;
    ngx_str_t  s;

    if (cJSON_IsString(item)) {
        s.data = (u_char *) item->valuestring;
        s.len = ngx_strlen(item->valuestring);

        if (ngx_http_chat_parse_id(&s, value) == NGX_OK) {
            return NGX_OK;
        }

        *errors = ngx_http_chat_invalid(r, *errors, where, field,
                                "int_parsing",
                                "Input should be a valid integer, unable to "
                                "parse string as an integer",
                                cJSON_Duplicate(item, 1));
        return *errors ? NGX_DECLINED : NGX_ERROR;
    }

    if (cJSON_IsNumber(item)) {
        rc = ngx_http_chat_json_int64(item, value);

        if (rc == NGX_OK) {
            return NGX_OK;
        }

        if (rc == NGX_ERROR) {
            *errors = ngx_http_chat_invalid(r, *errors, where, field,
                                "int_parsing_size",
                                "Unable to parse input string as an "
                                "integer, exceeded maximum size",
                                cJSON_Duplicate(item, 1));

        } else {
            *errors = ngx_http_chat_invalid(r, *errors, where, field,
                                "int_from_float",
                                "Input should be a valid integer, got a "
                                "number with a fractional part",
                                cJSON_Duplicate(item, 1));
        }

        return *errors ? NGX_DECLINED : NGX_ERROR;
    }

    *errors = ngx_http_chat_invalid(r, *errors, where, field, "int_type",
                                    "Input should be a valid integer",
                                    cJSON_Duplicate(item, 1));

    return *errors ? NGX_DECLINED : NGX_ERROR;
}


/* a query argument of min..max code points */

ngx_int_t
ngx_http_chat_query_string(ngx_http_request_t *r, cJSON **errors,
    const char *name, ngx_uint_t required, ngx_int_t min, ngx_int_t max,
    ngx_str_t *value)
{
    ngx_int_t  rc;

    value->data = NULL;
    value->len = 0;

    rc = ngx_http_chat_query_arg(r, name, value);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        if (!required) {
            return NGX_OK;
        }

        *errors = ngx_http_chat_invalid(r, *errors, "query", name, "missing",
                                        "Field required", NULL);
        return *errors ? NGX_DECLINED : NGX_ERROR;
    }

    return ngx_http_chat_length(r, errors, "query", name, value, min, max,
                                ngx_http_chat_json_input(value));
}


/* an integer query argument in min..max, def when absent */

ngx_int_t
ngx_http_chat_query_int(ngx_http_request_t *r, cJSON **errors,
    const char *name, int64_t def, int64_t min, int64_t max, int64_t *value)
{
    ngx_int_t  rc;
    ngx_str_t  s;

    *value = def;

    rc = ngx_http_chat_query_arg(r, name, &s);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return NGX_OK;
    }

    return ngx_http_chat_check_int(r, errors, "query", name, &s, min, max,
                                   value);
}


/* a path parameter or query value that must be an integer in min..max */

ngx_int_t
ngx_http_chat_check_int(ngx_http_request_t *r, cJSON **errors,
    const char *where, const char *name, ngx_str_t *s, int64_t min,
    int64_t max, int64_t *value)
{
    u_char  msg[80];

    if (ngx_http_chat_parse_id(s, value) != NGX_OK) {
        *errors = ngx_http_chat_invalid(r, *errors, where, name,
                                "int_parsing",
                                "Input should be a valid integer, unable to "
                                "parse string as an integer",
                                ngx_http_chat_json_input(s));
        return *errors ? NGX_DECLINED : NGX_ERROR;
    }

    if (*value < min) {
        *ngx_sprintf(msg, "Input should be greater than or equal to %L",
                     min) = '\0';
        *errors = ngx_http_chat_invalid(r, *errors, where, name,
                                        "greater_than_equal", (char *) msg,
                                        ngx_http_chat_json_input(s));
        return *errors ? ngx_http_chat_invalid_ctx(*errors, "ge", min)
                       : NGX_ERROR;
    }

    if (*value > max) {
        *ngx_sprintf(msg, "Input should be less than or equal to %L",
                     max) = '\0';
        *errors = ngx_http_chat_invalid(r, *errors, where, name,
                                        "less_than_equal", (char *) msg,
                                        ngx_http_chat_json_input(s));
        return *errors ? ngx_http_chat_invalid_ctx(*errors, "le", max)
                       : NGX_ERROR;
    }

    return NGX_OK;
}


/* pydantic's lax booleans from a string: NGX_OK or NGX_DECLINED */

ngx_int_t
ngx_http_chat_parse_bool(ngx_str_t *s, ngx_uint_t *value)
{
    ngx_uint_t  i;

    static ngx_str_t  yes[] = {
        ngx_string("1"), ngx_string("on"), ngx_string("t"),
        ngx_string("true"), ngx_string("y"), ngx_string("yes")
    };

    static ngx_str_t  no[] = {
        ngx_string("0"), ngx_string("off"), ngx_string("f"),
        ngx_string("false"), ngx_string("n"), ngx_string("no")
    };

    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (s->len == yes[i].len
            && ngx_strncasecmp(s->data, yes[i].data, s->len) == 0)
        {
            *value = 1;
            return NGX_OK;
        }

        if (s->len == no[i].len
            && ngx_strncasecmp(s->data, no[i].data, s->len) == 0)
        {
            *value = 0;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/*
 * A boolean field of the JSON body with a default: absent gives def;
 * true, false, 0, 1 and the strings of ngx_http_chat_parse_bool() are
 * taken (lax mode); null and anything else is an error, as pydantic has it
 * for a "bool = <default>" field
 */

ngx_int_t
ngx_http_chat_body_bool(ngx_http_request_t *r, cJSON **errors, cJSON *json,
    const char *field, ngx_uint_t def, ngx_uint_t *value)
{
    cJSON      *item;
    ngx_str_t   s;

    item = cJSON_GetObjectItemCaseSensitive(json, field);

    if (item == NULL) {
        *value = def;
        return NGX_OK;
    }

    if (cJSON_IsBool(item)) {
        *value = cJSON_IsTrue(item) ? 1 : 0;
        return NGX_OK;
    }

    if (cJSON_IsNumber(item)
        && (item->valuedouble == 0 || item->valuedouble == 1))
    {
        *value = (item->valuedouble == 1);
        return NGX_OK;
    }

    if (cJSON_IsString(item)) {
        s.data = (u_char *) item->valuestring;
        s.len = ngx_strlen(item->valuestring);

        if (ngx_http_chat_parse_bool(&s, value) == NGX_OK) {
            return NGX_OK;
        }
    }

    if (cJSON_IsString(item) || cJSON_IsNumber(item)) {
        *errors = ngx_http_chat_invalid(r, *errors, "body", field,
                                        "bool_parsing",
                                        "Input should be a valid boolean, "
                                        "unable to interpret input",
                                        cJSON_Duplicate(item, 1));

    } else {
        *errors = ngx_http_chat_invalid(r, *errors, "body", field,
                                        "bool_type",
                                        "Input should be a valid boolean",
                                        cJSON_Duplicate(item, 1));
    }

    return *errors ? NGX_DECLINED : NGX_ERROR;
}
