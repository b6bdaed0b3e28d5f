
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


static u_char *ngx_http_chat_py_value(u_char *p, u_char *last, cJSON *v);
static u_char *ngx_http_chat_py_string(u_char *p, u_char *last,
    const char *s);


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
    cJSON       *envelope, *f;
    ngx_int_t    rc;
    ngx_str_t    now, value;
    const char  *argv[12];
    size_t       argvlen[12];

    envelope = cJSON_CreateObject();

    if (envelope == NULL
        || ngx_http_chat_iso_now(pool, &now) != NGX_OK
        || ngx_http_chat_json_str(envelope, "timestamp", &now) == NULL)
    {
        cJSON_Delete(envelope);
        return NGX_ERROR;
    }

    for (f = fields ? fields->child : NULL; f; f = f->next) {
        cJSON_AddItemToObject(envelope, f->string, cJSON_Duplicate(f, 1));
    }

    rc = (cJSON_AddStringToObject(envelope, "__event_type__", type) == NULL)
         ? NGX_ERROR : ngx_http_chat_py_json(pool, envelope, &value);

    cJSON_Delete(envelope);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

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
    char    *compact;
    size_t   size;

    /*
     * escaping turns a byte into at most 6 ("\u00XX"; a 4-byte sequence
     * into 12), separators add a space each: 6 times the compact form
     * bounds it
     */

    compact = cJSON_PrintUnformatted(json);
    if (compact == NULL) {
        return NGX_ERROR;
    }

    size = 6 * ngx_strlen(compact) + 16;
    cJSON_free(compact);

    p = ngx_pnalloc(pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = p + size;
    out->data = p;

    p = ngx_http_chat_py_value(p, last, json);

    if (p == last) {
        return NGX_ERROR;
    }

    out->len = p - out->data;

    return NGX_OK;
}


static u_char *
ngx_http_chat_py_value(u_char *p, u_char *last, cJSON *v)
{
    cJSON  *item;

    if (cJSON_IsString(v)) {
        return ngx_http_chat_py_string(p, last, v->valuestring);
    }

    if (cJSON_IsTrue(v)) {
        return ngx_slprintf(p, last, "true");
    }

    if (cJSON_IsFalse(v)) {
        return ngx_slprintf(p, last, "false");
    }

    if (cJSON_IsRaw(v)) {
        return ngx_slprintf(p, last, "%s", v->valuestring);
    }

    if (cJSON_IsNumber(v)) {
        if (v->valuedouble == (double) (int64_t) v->valuedouble) {
            return ngx_slprintf(p, last, "%L", (int64_t) v->valuedouble);
        }

        return ngx_slprintf(p, last, "%.6f", v->valuedouble);
    }

    if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        p = ngx_slprintf(p, last, cJSON_IsArray(v) ? "[" : "{");

        for (item = v->child; item; item = item->next) {
            if (item != v->child) {
                p = ngx_slprintf(p, last, ", ");
            }

            if (cJSON_IsObject(v)) {
                p = ngx_http_chat_py_string(p, last, item->string);
                p = ngx_slprintf(p, last, ": ");
            }

            p = ngx_http_chat_py_value(p, last, item);
        }

        return ngx_slprintf(p, last, cJSON_IsArray(v) ? "]" : "}");
    }

    return ngx_slprintf(p, last, "null");
}


/* a JSON string with json.dumps()'s ensure_ascii escaping */

static u_char *
ngx_http_chat_py_string(u_char *p, u_char *last, const char *s)
{
    u_char    *c, *end;
    uint32_t   ch;

    c = (u_char *) s;
    end = c + ngx_strlen(s);

    p = ngx_slprintf(p, last, "\"");

    while (c < end && p < last) {

        if (*c >= 0x80) {
            ch = ngx_utf8_decode(&c, end - c);

            if (ch > 0x10ffff) {
                p = ngx_slprintf(p, last, "\\ufffd");

            } else if (ch >= 0x10000) {
                ch -= 0x10000;
                p = ngx_slprintf(p, last, "\\u%04xD\\u%04xD",
                                 0xd800 + (ch >> 10), 0xdc00 + (ch & 0x3ff));

            } else {
                p = ngx_slprintf(p, last, "\\u%04xD", ch);
            }

            continue;
        }

        switch (*c) {
        case '"':
            p = ngx_slprintf(p, last, "\\\"");
            break;
        case '\\':
            p = ngx_slprintf(p, last, "\\\\");
            break;
        case '\n':
            p = ngx_slprintf(p, last, "\\n");
            break;
        case '\r':
            p = ngx_slprintf(p, last, "\\r");
            break;
        case '\t':
            p = ngx_slprintf(p, last, "\\t");
            break;
        case '\b':
            p = ngx_slprintf(p, last, "\\b");
            break;
        case '\f':
            p = ngx_slprintf(p, last, "\\f");
            break;
        default:
            if (*c < 0x20 || *c == 0x7f) {
                p = ngx_slprintf(p, last, "\\u%04xD", (uint32_t) *c);

            } else {
                *p++ = *c;
            }
        }

        c++;
    }

    return ngx_slprintf(p, last, "\"");
}
