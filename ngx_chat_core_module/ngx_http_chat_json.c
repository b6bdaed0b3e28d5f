
/*
 * JSON documents tied to request pools, responses in the contract's error
 * shapes (API.md 2.7), and the small value helpers every service needs.
 */


#include "ngx_http_chat_core_module.h"


static void ngx_http_chat_json_cleanup(void *data);
static cJSON *ngx_http_chat_json_track(ngx_http_request_t *r, cJSON *json);
static cJSON *ngx_http_chat_json_string(ngx_str_t *s);
static ngx_int_t ngx_http_chat_json_digits(cJSON *item, u_char **pp,
    u_char *last);
static cJSON *ngx_http_chat_json_add(cJSON *obj, const char *name,
    cJSON *item);
static void ngx_http_chat_json_raw(cJSON *item);


static void
ngx_http_chat_json_cleanup(void *data)
{
    cJSON_Delete(data);
}


/* cJSON allocates with malloc(): the tree is freed with the request pool */

static cJSON *
ngx_http_chat_json_track(ngx_http_request_t *r, cJSON *json)
{
    ngx_pool_cleanup_t  *cln;

    if (json == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        cJSON_Delete(json);
        return NULL;
    }

    cln->handler = ngx_http_chat_json_cleanup;
    cln->data = json;

    return json;
}


cJSON *
ngx_http_chat_json_object(ngx_http_request_t *r)
{
    return ngx_http_chat_json_track(r, cJSON_CreateObject());
}


cJSON *
ngx_http_chat_json_array(ngx_http_request_t *r)
{
    return ngx_http_chat_json_track(r, cJSON_CreateArray());
}


/* one document: like json.loads(), only white space may follow it */

cJSON *
ngx_http_chat_json_parse(ngx_http_request_t *r, u_char *p, size_t len)
{
    return ngx_http_chat_json_track(r, ngx_http_chat_json_decode(p, len));
}


/*
 * cJSON keeps a number as a double, exact only up to 2^53, and ids go up
 * to 2^63-1: the digits of every integer literal are kept beside its
 * number, in the node's otherwise unused valuestring (cJSON_Delete() and
 * cJSON_Duplicate() handle it), and ngx_http_chat_json_int64() reads
 * them.  The caller frees the tree with cJSON_Delete().
 */

cJSON *
ngx_http_chat_json_decode(u_char *p, size_t len)
{
    u_char      *pos, *last;
    cJSON       *json;
    const char  *end;

    json = cJSON_ParseWithLengthOpts((char *) p, len, &end, 0);
    if (json == NULL) {
        return NULL;
    }

    /* one document and white space: "{...}xyz" is malformed JSON */

    for (last = p + len; (u_char *) end < last; end++) {
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            cJSON_Delete(json);
            return NULL;
        }
    }

    pos = p;

    if (ngx_http_chat_json_digits(json, &pos, p + len) != NGX_OK) {
        cJSON_Delete(json);
        return NULL;
    }

    return json;
}


/*
 * The tree's numbers, depth first, are the text's number tokens in their
 * order: strings are skipped, and only a number or a string may hold a
 * digit or a minus sign in valid JSON.  cJSON bounds the nesting.
 */

static ngx_int_t
ngx_http_chat_json_digits(cJSON *item, u_char **pp, u_char *last)
{
    u_char      *p, *start;
    ngx_uint_t   integer;

    for ( /* void */ ; item; item = item->next) {

        if (!cJSON_IsNumber(item)) {
            if (item->child
                && ngx_http_chat_json_digits(item->child, pp, last)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            continue;
        }

        for (p = *pp; p < last; p++) {

            if (*p == '"') {
                for (p++; p < last && *p != '"'; p++) {
                    if (*p == '\\') {
                        p++;
                    }
                }

                continue;
            }

            if (*p == '-' || (*p >= '0' && *p <= '9')) {
                break;
            }
        }

        if (p >= last) {
            return NGX_ERROR;
        }

        start = p;
        integer = 1;

        for (p++; p < last; p++) {
            if (*p >= '0' && *p <= '9') {
                continue;
            }

            if (*p != '.' && *p != 'e' && *p != 'E' && *p != '+'
                && *p != '-')
            {
                break;
            }

            integer = 0;
        }

        *pp = p;

        if (!integer || item->valuestring) {
            continue;
        }

        item->valuestring = cJSON_malloc(p - start + 1);
        if (item->valuestring == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(item->valuestring, start, p - start);
        item->valuestring[p - start] = '\0';
    }

    return NGX_OK;
}


/*
 * A number as int64: NGX_OK, NGX_DECLINED when it has a fractional part,
 * NGX_ERROR when it is out of range (or beyond 2^53 without its digits).
 */

ngx_int_t
ngx_http_chat_json_int64(cJSON *item, int64_t *n)
{
    double     d;
    ngx_str_t  s;

    if (item->valuestring) {
        s.data = (u_char *) item->valuestring;
        s.len = ngx_strlen(item->valuestring);

        return ngx_http_chat_parse_id(&s, n);
    }

    d = item->valuedouble;

    /* beyond 2^53 a double no longer holds every integer */

    if (d >= 9007199254740992.0 || d <= -9007199254740992.0 || d != d) {
        return NGX_ERROR;
    }

    if (d != (double) (int64_t) d) {
        return NGX_DECLINED;
    }

    *n = (int64_t) d;

    return NGX_OK;
}


/*
 * An integer printed exactly: cJSON would print its double, so the digits
 * go in as a raw value (the events' printer takes raw values as they are)
 */

cJSON *
ngx_http_chat_json_num(cJSON *obj, const char *name, int64_t n)
{
    u_char  buf[NGX_INT64_LEN + 1];

    *ngx_sprintf(buf, "%L", n) = '\0';

    return ngx_http_chat_json_add(obj, name, cJSON_CreateRaw((char *) buf));
}


/* a copy of the input echoed in an error: its integers as they came */

static void
ngx_http_chat_json_raw(cJSON *item)
{
    if (cJSON_IsNumber(item) && item->valuestring) {
        item->type = cJSON_Raw;
        return;
    }

    for (item = item->child; item; item = item->next) {
        ngx_http_chat_json_raw(item);
    }
}


/* item into an array, or into an object as name; obj NULL: item alone */

static cJSON *
ngx_http_chat_json_add(cJSON *obj, const char *name, cJSON *item)
{
    if (item == NULL || obj == NULL) {
        return item;
    }

    if (cJSON_IsArray(obj)) {
        cJSON_AddItemToArray(obj, item);

    } else {
        cJSON_AddItemToObject(obj, name, item);
    }

    return item;
}


/* a string node from a counted string (cJSON copies C strings only) */

static cJSON *
ngx_http_chat_json_string(ngx_str_t *s)
{
    char   *v;
    cJSON  *item;

    v = cJSON_malloc(s->len + 1);
    if (v == NULL) {
        return NULL;
    }

    ngx_memcpy(v, s->data, s->len);
    v[s->len] = '\0';

    item = cJSON_CreateString("");
    if (item == NULL) {
        cJSON_free(v);
        return NULL;
    }

    cJSON_free(item->valuestring);
    item->valuestring = v;

    return item;
}


cJSON *
ngx_http_chat_json_str(cJSON *obj, const char *name, ngx_str_t *s)
{
    return ngx_http_chat_json_add(obj, name, ngx_http_chat_json_string(s));
}


/* a string, or null when the value is absent (SQL NULL) */

cJSON *
ngx_http_chat_json_nstr(cJSON *obj, const char *name, ngx_str_t *s)
{
    if (s->data == NULL) {
        return cJSON_AddNullToObject(obj, name);
    }

    return ngx_http_chat_json_str(obj, name, s);
}


/* MariaDB "YYYY-MM-DD HH:MM:SS" as the contract's "YYYY-MM-DDTHH:MM:SS" */

cJSON *
ngx_http_chat_json_sql_time(cJSON *obj, const char *name, ngx_str_t *cell)
{
    u_char     buf[32];
    ngx_str_t  s;

    if (cell->data == NULL) {
        return cJSON_AddNullToObject(obj, name);
    }

    s.len = ngx_min(cell->len, sizeof(buf));
    s.data = buf;

    ngx_memcpy(buf, cell->data, s.len);

    if (s.len > 10 && buf[10] == ' ') {
        buf[10] = 'T';
    }

    return ngx_http_chat_json_str(obj, name, &s);
}


ngx_int_t
ngx_http_chat_send_raw(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *json)
{
    r->headers_out.status = status;

    /* nginx has no reason phrase of its own for 422 */

    if (status == NGX_HTTP_UNPROCESSABLE_ENTITY) {
        ngx_str_set(&r->headers_out.status_line, "422 Unprocessable Entity");
    }

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_chat_utf8_scrub(r->pool, json) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_chat_send_buffer(r, json);
}


/* a complete response whose status and type are set: headers, then body */

ngx_int_t
ngx_http_chat_send_buffer(ngx_http_request_t *r, ngx_str_t *body)
{
    ngx_int_t             rc;
    ngx_buf_t            *b;
    ngx_chain_t           out;
    ngx_http_chat_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chat_core_module);

    if (ctx && ctx->gate) {

        /* the token's verdict is not in: the answer waits for it (the
         * body lives in r->pool or is static) */

        ctx->answer = *body;
        ctx->answered = 1;

        return NGX_DONE;
    }

    r->headers_out.content_length_n = body->len;

    if (r->method == NGX_HTTP_HEAD || body->len == 0) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_chat_send_json(ngx_http_request_t *r, ngx_uint_t status,
    cJSON *json)
{
    char       *p;
    ngx_str_t   s;

    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = cJSON_PrintUnformatted(json);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s.len = ngx_strlen(p);
    s.data = ngx_pnalloc(r->pool, s.len);

    if (s.data == NULL) {
        cJSON_free(p);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(s.data, p, s.len);
    cJSON_free(p);

    return ngx_http_chat_send_raw(r, status, &s);
}


/* E-A: {"detail":"..."} */

ngx_int_t
ngx_http_chat_send_detail(ngx_http_request_t *r, ngx_uint_t status,
    const char *detail)
{
    cJSON  *json;

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || cJSON_AddStringToObject(json, "detail", detail) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, status, json);
}


/* 200 {"message":"..."}, with "<name>":<id> when a name is given */

ngx_int_t
ngx_http_chat_send_message(ngx_http_request_t *r, const char *message,
    const char *name, int64_t id)
{
    cJSON  *json;

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || cJSON_AddStringToObject(json, "message", message) == NULL
        || (name && ngx_http_chat_json_num(json, name, id) == NULL))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_OK, json);
}


static cJSON *
ngx_http_chat_error_body(cJSON *obj, ngx_uint_t status, const char *error,
    const char *message, const char *extra, cJSON *details)
{
    if (cJSON_AddStringToObject(obj, "error", error) == NULL
        || cJSON_AddStringToObject(obj, "message", message) == NULL)
    {
        cJSON_Delete(details);
        return NULL;
    }

    if (details) {
        cJSON_AddItemToObject(obj, extra, details);

    } else if (cJSON_AddNullToObject(obj, extra) == NULL) {
        return NULL;
    }

    return cJSON_AddNumberToObject(obj, "status_code", status);
}


/* E-B: {"detail":{"error","message","details","status_code"}};
 * details (may be NULL) becomes part of the response */

ngx_int_t
ngx_http_chat_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error, const char *message, cJSON *details)
{
    cJSON  *json, *detail;

    json = ngx_http_chat_json_object(r);
    if (json == NULL) {
        cJSON_Delete(details);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    detail = cJSON_AddObjectToObject(json, "detail");
    if (detail == NULL
        || ngx_http_chat_error_body(detail, status, error, message,
                                    "details", details)
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, status, json);
}


/* E-D: {"error","message","details":null,"status_code"} */

ngx_int_t
ngx_http_chat_send_flat_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error, const char *message)
{
    cJSON  *json;

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || ngx_http_chat_error_body(json, status, error, message,
                                    "details", NULL)
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, status, json);
}


ngx_int_t
ngx_http_chat_add_header(ngx_http_request_t *r, const char *key,
    const char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = (u_char *) value;
    h->value.len = ngx_strlen(value);

    return NGX_OK;
}


/*
 * The services' 401, or on a listener with "chat_auth_error_style
 * gateway" the original gateway's (API.md 7.2), which tells a request
 * without a token from one whose token is no good.
 */

ngx_int_t
ngx_http_chat_send_unauthorized(ngx_http_request_t *r)
{
    cJSON                          *json;
    ngx_str_t                       arg;
    const char                     *message;
    ngx_http_chat_core_loc_conf_t  *lcf;

    if (ngx_http_chat_add_header(r, "WWW-Authenticate", "Bearer") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chat_core_module);

    if (lcf->auth_error_style != NGX_HTTP_CHAT_AUTH_GATEWAY) {
        return ngx_http_chat_send_detail(r, NGX_HTTP_UNAUTHORIZED,
                                         "Not authenticated");
    }

    /* the event streams take a token from access_token too */

    if (r->headers_in.authorization == NULL
        && ngx_http_arg(r, (u_char *) "access_token",
                        sizeof("access_token") - 1, &arg)
           != NGX_OK)
    {
        message = "Missing authentication token";

    } else {
        message = "Invalid or expired token";
    }

    json = ngx_http_chat_json_object(r);
    if (json == NULL
        || cJSON_AddStringToObject(json, "error", "unauthorized") == NULL
        || cJSON_AddStringToObject(json, "message", message) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_UNAUTHORIZED, json);
}


/* while a circuit is open, with the Retry-After of its cool-down */

ngx_int_t
ngx_http_chat_send_unavailable(ngx_http_request_t *r)
{
    if (ngx_http_chat_circuit_retry_after(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_flat_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "database_error",
                                 "Database connection or operation failed");
}


/* overload: a fast answer the client may retry soon, never a long queue */

ngx_int_t
ngx_http_chat_send_busy(ngx_http_request_t *r)
{
    if (ngx_http_chat_add_header(r, "Retry-After", "1") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_flat_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "service_busy",
                                         "Server is busy, retry shortly");
}


ngx_int_t
ngx_http_chat_send_method_not_allowed(ngx_http_request_t *r,
    const char *allow)
{
    if (ngx_http_chat_add_header(r, "Allow", allow) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_detail(r, NGX_HTTP_NOT_ALLOWED,
                                     "Method Not Allowed");
}


/*
 * E-C: one pydantic-style item {"type","loc":[where, field],"msg","input"}
 * appended to errors (created on first use); input is consumed
 */

cJSON *
ngx_http_chat_invalid(ngx_http_request_t *r, cJSON *errors,
    const char *where, const char *field, const char *type, const char *msg,
    cJSON *input)
{
    cJSON  *item, *loc;

    if (errors == NULL) {
        errors = ngx_http_chat_json_array(r);
        if (errors == NULL) {
            cJSON_Delete(input);
            return NULL;
        }
    }

    item = cJSON_CreateObject();
    if (item == NULL) {
        cJSON_Delete(input);
        return NULL;
    }

    cJSON_AddItemToArray(errors, item);

    if (cJSON_AddStringToObject(item, "type", type) == NULL) {
        cJSON_Delete(input);
        return NULL;
    }

    loc = cJSON_AddArrayToObject(item, "loc");
    if (loc == NULL) {
        cJSON_Delete(input);
        return NULL;
    }

    cJSON_AddItemToArray(loc, cJSON_CreateString(where));

    if (field) {
        cJSON_AddItemToArray(loc, cJSON_CreateString(field));
    }

    if (cJSON_AddStringToObject(item, "msg", msg) == NULL) {
        cJSON_Delete(input);
        return NULL;
    }

    if (input == NULL) {
        input = cJSON_CreateNull();

    } else {
        ngx_http_chat_json_raw(input);
    }

    cJSON_AddItemToObject(item, "input", input);

    return errors;
}


ngx_int_t
ngx_http_chat_send_invalid(ngx_http_request_t *r, cJSON *errors)
{
    cJSON  *json;

    json = ngx_http_chat_json_object(r);
    if (json == NULL || errors == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the array now belongs to the response document */

    cJSON_AddItemReferenceToObject(json, "detail", errors);

    return ngx_http_chat_send_json(r, NGX_HTTP_UNPROCESSABLE_ENTITY, json);
}


/* E-B': {"field","message","value"} appended; value is consumed */

cJSON *
ngx_http_chat_app_invalid(ngx_http_request_t *r, cJSON *errors,
    const char *field, const char *message, cJSON *value)
{
    cJSON  *item;

    if (errors == NULL) {
        errors = ngx_http_chat_json_array(r);
        if (errors == NULL) {
            cJSON_Delete(value);
            return NULL;
        }
    }

    item = cJSON_CreateObject();
    if (item == NULL) {
        cJSON_Delete(value);
        return NULL;
    }

    cJSON_AddItemToArray(errors, item);

    if (value == NULL) {
        value = cJSON_CreateNull();
    }

    if (cJSON_AddStringToObject(item, "field", field) == NULL
        || cJSON_AddStringToObject(item, "message", message) == NULL)
    {
        cJSON_Delete(value);
        return NULL;
    }

    cJSON_AddItemToObject(item, "value", value);

    return errors;
}


ngx_int_t
ngx_http_chat_send_app_invalid(ngx_http_request_t *r, const char *message,
    cJSON *errors)
{
    cJSON  *json, *detail;

    json = ngx_http_chat_json_object(r);
    if (json == NULL || errors == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    detail = cJSON_AddObjectToObject(json, "detail");
    if (detail == NULL
        || cJSON_AddStringToObject(detail, "error", "validation_error")
           == NULL
        || cJSON_AddStringToObject(detail, "message", message) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cJSON_AddItemReferenceToObject(detail, "validation_errors", errors);

    if (cJSON_AddNumberToObject(detail, "status_code",
                                NGX_HTTP_UNPROCESSABLE_ENTITY)
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_chat_send_json(r, NGX_HTTP_UNPROCESSABLE_ENTITY, json);
}


/*
 * E-B' of an id that is an integer but not a positive one (API.md 12):
 * "<name> must be a positive integer", the value in validation_errors
 */

ngx_int_t
ngx_http_chat_send_not_positive(ngx_http_request_t *r, const char *name,
    int64_t value)
{
    u_char   msg[64];
    cJSON   *errors;

    errors = ngx_http_chat_app_invalid(r, NULL, name,
                                       "Must be a positive integer",
                                       ngx_http_chat_json_num(NULL, NULL,
                                                              value));
    if (errors == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_snprintf(msg, sizeof(msg) - 1, "%s must be a positive integer",
                  name) = '\0';

    return ngx_http_chat_send_app_invalid(r, (char *) msg, errors);
}


/* code points in a UTF-8 string, or NGX_ERROR when it is not valid UTF-8 */

ngx_int_t
ngx_http_chat_utf8_length(ngx_str_t *s)
{
    u_char     *p, *last;
    uint32_t    ch;
    ngx_int_t   n;

    p = s->data;
    last = p + s->len;

    for (n = 0; p < last; n++) {

        if (*p < 0x80) {
            p++;
            continue;
        }

        ch = ngx_utf8_decode(&p, last - p);

        if (ch > 0x10ffff || (ch >= 0xd800 && ch <= 0xdfff)) {
            return NGX_ERROR;
        }
    }

    return n;
}


/* a decimal integer with an optional sign, int64 range; NGX_ERROR if not */

ngx_int_t
ngx_http_chat_parse_id(ngx_str_t *s, int64_t *id)
{
    u_char     *p, *last;
    uint64_t    v, cutoff;
    ngx_uint_t  neg;

    p = s->data;
    last = p + s->len;

    if (p == last) {
        return NGX_ERROR;
    }

    neg = 0;

    if (*p == '-' || *p == '+') {
        neg = (*p == '-');
        p++;
    }

    if (p == last) {
        return NGX_ERROR;
    }

    cutoff = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;

    for (v = 0; p < last; p++) {
        if (*p < '0' || *p > '9') {
            return NGX_ERROR;
        }

        if (v > (cutoff - (*p - '0')) / 10) {
            return NGX_ERROR;
        }

        v = v * 10 + (*p - '0');
    }

    *id = neg ? (int64_t) (0 - v) : (int64_t) v;

    return NGX_OK;
}


/* "YYYY-MM-DDTHH:MM:SS[.ffffff]", UTC, as the original prints datetimes */

u_char *
ngx_http_chat_iso_time(u_char *p, time_t sec, ngx_uint_t usec)
{
    ngx_tm_t  tm;

    ngx_gmtime(sec, &tm);

    p = ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02d",
                    tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                    tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);

    if (usec) {
        p = ngx_sprintf(p, ".%06ui", usec);
    }

    return p;
}


ngx_int_t
ngx_http_chat_iso_now(ngx_pool_t *pool, ngx_str_t *s)
{
    u_char          *p;
    struct timeval   tv;

    p = ngx_pnalloc(pool, sizeof("YYYY-MM-DDTHH:MM:SS.ffffff") - 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_gettimeofday(&tv);

    s->data = p;
    s->len = ngx_http_chat_iso_time(p, tv.tv_sec, tv.tv_usec) - p;

    return NGX_OK;
}
