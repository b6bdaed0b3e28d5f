
/*
 * Domain events (API.md 2.10, 9) published to Redis Streams named after
 * the original's Kafka topics.  An entry has two fields, "key" and
 * "value", as a Kafka message has; the value is the original's envelope
 * as Python's json.dumps() writes it: ", " and ": " separators, non-ASCII
 * escaped as \uXXXX, "timestamp" first and "__event_type__" last.
 *
 * An event published for a request carries the request's W3C traceparent
 * in a third field, "traceparent", as a Kafka record would in a header: a
 * consumer joins the event to the request's log line and response, and
 * the value stays the original's envelope byte for byte.
 *
 * Publishing never changes a response: failures are logged and counted.
 */


#include "ngx_http_chat_core_module.h"


static size_t ngx_http_chat_py_size(cJSON *v);
static u_char *ngx_http_chat_py_value(u_char *p, u_char *last, cJSON *v);
static u_char *ngx_http_chat_py_members(u_char *p, u_char *last, cJSON *v);
static u_char *ngx_http_chat_py_string(u_char *p, u_char *last,
    const char *s, size_t len);
static u_char *ngx_http_chat_py_literal(u_char *p, u_char *last,
    const char *s, size_t len);


ngx_int_t
ngx_http_chat_event_publish(ngx_http_request_t *r, const char *topic,
    int64_t key, const char *type, cJSON *fields)
{
    ngx_str_t                        trace, *tp;
    ngx_http_chat_core_main_conf_t  *cmcf;

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_core_module);

    tp = (ngx_http_chat_traceparent(r, &trace) == NGX_OK) ? &trace : NULL;

    return ngx_http_chat_event_send_trace(r->pool, r->connection->log,
                                          cmcf->events_maxlen, topic, key,
                                          type, fields, tp);
}


/* the same without a request: pool memory, the caller's log */

ngx_int_t
ngx_http_chat_event_send(ngx_pool_t *pool, ngx_log_t *log, ngx_uint_t maxlen,
    const char *topic, int64_t key, const char *type, cJSON *fields)
{
    return ngx_http_chat_event_send_trace(pool, log, maxlen, topic, key,
                                          type, fields, NULL);
}


/* trace: the traceparent of what caused it (NULL: none) */

ngx_int_t
ngx_http_chat_event_send_trace(ngx_pool_t *pool, ngx_log_t *log,
    ngx_uint_t maxlen, const char *topic, int64_t key, const char *type,
    cJSON *fields, ngx_str_t *trace)
{
    int          argc;
    u_char       keybuf[NGX_INT64_LEN];
    u_char       maxbuf[NGX_INT_T_LEN];
    u_char      *p, *last;
    size_t       size, tlen;
    ngx_str_t    now, value;
    const char  *argv[12];
    size_t       argvlen[12];

    /*
     * The envelope written at once, without a copy of the fields:
     * {"timestamp": ..., the fields..., "__event_type__": type}
     */

    if (ngx_http_chat_iso_now(pool, &now) != NGX_OK) {
        return NGX_ERROR;
    }

    tlen = ngx_strlen(type);

    size = sizeof("{\"timestamp\": , \"__event_type__\": }") + 2
           + 6 * (now.len + tlen) + 4
           + (fields ? ngx_http_chat_py_size(fields) : 0);

    p = ngx_pnalloc(pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = p + size;
    value.data = p;

    p = ngx_http_chat_py_literal(p, last, "{\"timestamp\": ",
                                 sizeof("{\"timestamp\": ") - 1);
    p = ngx_http_chat_py_string(p, last, (const char *) now.data, now.len);

    if (fields && fields->child) {
        p = ngx_http_chat_py_literal(p, last, ", ", 2);
        p = ngx_http_chat_py_members(p, last, fields);
    }

    p = ngx_http_chat_py_literal(p, last, ", \"__event_type__\": ",
                                 sizeof(", \"__event_type__\": ") - 1);
    p = ngx_http_chat_py_string(p, last, type, tlen);
    p = ngx_http_chat_py_literal(p, last, "}", 1);

    if (p == last) {
        return NGX_ERROR;
    }

    value.len = p - value.data;

    argv[0] = "XADD";
    argvlen[0] = 4;
    argv[1] = topic;
    argvlen[1] = ngx_strlen(topic);
    argv[2] = "MAXLEN";
    argvlen[2] = 6;
    argv[3] = "~";
    argvlen[3] = 1;
    argv[4] = (const char *) maxbuf;
    argvlen[4] = ngx_sprintf(maxbuf, "%ui", maxlen) - maxbuf;
    argv[5] = "*";
    argvlen[5] = 1;
    argv[6] = "key";
    argvlen[6] = 3;
    argv[7] = (const char *) keybuf;
    argvlen[7] = ngx_sprintf(keybuf, "%L", key) - keybuf;
    argv[8] = "value";
    argvlen[8] = 5;
    argv[9] = (const char *) value.data;
    argvlen[9] = value.len;
    argc = 10;

    if (trace) {
        argv[10] = "traceparent";
        argvlen[10] = 11;
        argv[11] = (const char *) trace->data;
        argvlen[11] = trace->len;
        argc = 12;
    }

    if (ngx_http_chat_redis_send(argc, argv, argvlen) != NGX_OK) {
        ngx_http_chat_metrics_event(0);
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "chat: event %s not published to \"%s\": "
                      "Redis unavailable", type, topic);
        return NGX_DECLINED;
    }

    ngx_http_chat_metrics_event(1);

    return NGX_OK;
}


/* a field of a consumed entry by name ("value", "traceparent"), or NULL */

ngx_str_t *
ngx_http_chat_event_field(ngx_http_chat_redis_entry_t *e, const char *name)
{
    size_t      len;
    ngx_uint_t  i;

    len = ngx_strlen(name);

    for (i = 0; i + 1 < e->nfields; i += 2) {
        if (e->fields[i].len == len
            && ngx_strncmp(e->fields[i].data, name, len) == 0)
        {
            return &e->fields[i + 1];
        }
    }

    return NULL;
}


/* JSON as Python's json.dumps() writes it by default, into pool memory */

ngx_int_t
ngx_http_chat_py_json(ngx_pool_t *pool, cJSON *json, ngx_str_t *out)
{
    u_char  *p, *last;
    size_t   size;

    size = ngx_http_chat_py_size(json) + 1;

    p = ngx_pnalloc(pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = p + size;
    out->data = p;

    p = ngx_http_chat_py_value(p, last, json);

    /* the size is a bound: the last byte is never written */

    if (p == last) {
        return NGX_ERROR;
    }

    out->len = p - out->data;

    return NGX_OK;
}


/*
 * At most what ngx_http_chat_py_value() writes: escaping turns a byte
 * into at most 6 ("\u00XX"; a 4-byte sequence into 12), separators add
 * a space each
 */

static size_t
ngx_http_chat_py_size(cJSON *v)
{
    size_t  size;
    cJSON  *item;

    if (cJSON_IsString(v)) {
        return 6 * ngx_strlen(v->valuestring) + 2;
    }

    if (cJSON_IsRaw(v)) {
        return ngx_strlen(v->valuestring);
    }

    if (cJSON_IsNumber(v)) {
        /* "%L", or "%.6f" of a 64-bit integral part */
        return NGX_INT64_LEN + sizeof(".000000");
    }

    if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        size = 2;

        for (item = v->child; item; item = item->next) {
            size += ngx_http_chat_py_size(item) + sizeof(", ") - 1;

            if (cJSON_IsObject(v)) {
                size += 6 * ngx_strlen(item->string) + 2 + sizeof(": ") - 1;
            }
        }

        return size;
    }

    return sizeof("false") - 1;
}


static u_char *
ngx_http_chat_py_value(u_char *p, u_char *last, cJSON *v)
{
    cJSON  *item;

    if (cJSON_IsString(v)) {
        return ngx_http_chat_py_string(p, last, v->valuestring,
                                       ngx_strlen(v->valuestring));
    }

    if (cJSON_IsTrue(v)) {
        return ngx_http_chat_py_literal(p, last, "true", 4);
    }

    if (cJSON_IsFalse(v)) {
        return ngx_http_chat_py_literal(p, last, "false", 5);
    }

    if (cJSON_IsRaw(v)) {
        return ngx_http_chat_py_literal(p, last, v->valuestring,
                                        ngx_strlen(v->valuestring));
    }

    if (cJSON_IsNumber(v)) {
        if (v->valuedouble == (double) (int64_t) v->valuedouble) {
            return ngx_slprintf(p, last, "%L", (int64_t) v->valuedouble);
        }

        return ngx_slprintf(p, last, "%.6f", v->valuedouble);
    }

    if (cJSON_IsObject(v)) {
        p = ngx_http_chat_py_literal(p, last, "{", 1);
        p = ngx_http_chat_py_members(p, last, v);
        return ngx_http_chat_py_literal(p, last, "}", 1);
    }

    if (cJSON_IsArray(v)) {
        p = ngx_http_chat_py_literal(p, last, "[", 1);

        for (item = v->child; item; item = item->next) {
            if (item != v->child) {
                p = ngx_http_chat_py_literal(p, last, ", ", 2);
            }

            p = ngx_http_chat_py_value(p, last, item);
        }

        return ngx_http_chat_py_literal(p, last, "]", 1);
    }

    return ngx_http_chat_py_literal(p, last, "null", 4);
}


/* an object's members without its braces */

static u_char *
ngx_http_chat_py_members(u_char *p, u_char *last, cJSON *v)
{
    cJSON  *item;

    for (item = v->child; item; item = item->next) {
        if (item != v->child) {
            p = ngx_http_chat_py_literal(p, last, ", ", 2);
        }

        p = ngx_http_chat_py_string(p, last, item->string,
                                    ngx_strlen(item->string));
        p = ngx_http_chat_py_literal(p, last, ": ", 2);
        p = ngx_http_chat_py_value(p, last, item);
    }

    return p;
}


/* as ngx_slprintf() does: what does not fit is cut at last */

static u_char *
ngx_http_chat_py_literal(u_char *p, u_char *last, const char *s, size_t len)
{
    len = ngx_min((size_t) (last - p), len);

    return ngx_cpymem(p, s, len);
}


/* a JSON string with json.dumps()'s ensure_ascii escaping */

static u_char *
ngx_http_chat_py_string(u_char *p, u_char *last, const char *s, size_t len)
{
    u_char    *c, *end;
    uint32_t   ch;

    static u_char  hex[] = "0123456789abcdef";

    c = (u_char *) s;
    end = c + len;

    p = ngx_http_chat_py_literal(p, last, "\"", 1);

    /* out of room: last, as ngx_slprintf() would stop there */

    while (c < end) {

        if (*c >= 0x20 && *c < 0x7f && *c != '"' && *c != '\\') {
            if (p == last) {
                return last;
            }

            *p++ = *c++;
            continue;
        }

        if (*c >= 0x80) {

            /* a surrogate pair takes 12 bytes, from a 4-byte sequence */

            if (last - p < (end - c > 1 ? 12 : 6)) {
                return last;
            }

            ch = ngx_utf8_decode(&c, end - c);

            if (ch > 0x10ffff) {
                ch = 0xfffd;

            } else if (ch >= 0x10000) {
                ch -= 0x10000;
                p = ngx_sprintf(p, "\\u%04xD", 0xd800 + (ch >> 10));
                ch = 0xdc00 + (ch & 0x3ff);
            }

            p = ngx_sprintf(p, "\\u%04xD", ch);

            continue;
        }

        if (last - p < 6) {
            return last;
        }

        *p++ = '\\';

        switch (*c) {
        case '"':
            *p++ = '"';
            break;
        case '\\':
            *p++ = '\\';
            break;
        case '\n':
            *p++ = 'n';
            break;
        case '\r':
            *p++ = 'r';
            break;
        case '\t':
            *p++ = 't';
            break;
        case '\b':
            *p++ = 'b';
            break;
        case '\f':
            *p++ = 'f';
            break;
        default:
            /* the other control characters and DEL */
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[*c >> 4];
            *p++ = hex[*c & 0xf];
        }

        c++;
    }

    return ngx_http_chat_py_literal(p, last, "\"", 1);
}
