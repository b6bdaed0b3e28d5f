
/*
 * U14: the profile image.  POST takes multipart/form-data with a "file"
 * field; the image type is recognised by its first bytes (PNG, JPEG, GIF,
 * WebP), never by what the client claims.  The file gets a generated name
 * under chat_user_upload_dir and nginx serves it itself; the previous one
 * is removed.  Disk work runs in the thread pool.
 */


#include "ngx_http_chat_user_module.h"

#include <openssl/rand.h>


/*
 * A file operation in the thread pool; the call that failed, its argument
 * (the first name_len bytes of path) and errno come back to the event
 * loop, which logs them on the request's log.
 */

struct ngx_http_chat_user_file_s {
    char                       *path;       /* NUL-terminated */
    u_char                     *data;
    size_t                      len;
    ngx_uint_t                  remove;

    const char                 *failed;
    size_t                      name_len;
    ngx_err_t                   err;
};


static ngx_int_t ngx_http_chat_user_image_loaded(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_user_multipart(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_str_t *file, ngx_str_t *filename,
    const char **error);
static ngx_int_t ngx_http_chat_user_bad_multipart(const char **error,
    const char *message);
static const char *ngx_http_chat_user_image_type(ngx_str_t *file);
static ngx_int_t ngx_http_chat_user_image_stored(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_user_image_set(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_str_t *url);
static ngx_int_t ngx_http_chat_user_image_updated(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_image_removed(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_chat_user_image_done(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res);
static ngx_int_t ngx_http_chat_user_image_delete_loaded(
    ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx);
static ngx_int_t ngx_http_chat_user_file(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_str_t *path, ngx_str_t *data,
    ngx_http_chat_thread_done_pt done);
static ngx_int_t ngx_http_chat_user_file_run(void *data);
static ngx_int_t ngx_http_chat_user_file_failed(ngx_http_chat_user_file_t *f,
    const char *call, size_t name_len);
static void ngx_http_chat_user_file_log(ngx_http_request_t *r,
    ngx_uint_t level, ngx_http_chat_user_file_t *f);
static void ngx_http_chat_user_image_dir(ngx_cycle_t *cycle,
    ngx_core_conf_t *ccf, ngx_str_t *dir);
static ngx_int_t ngx_http_chat_user_dir_empty(ngx_str_t *name);
static ngx_int_t ngx_http_chat_user_bad_image(ngx_http_request_t *r,
    const char *message);


ngx_int_t
ngx_http_chat_user_image_upload(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_user_load(r, ctx, ngx_http_chat_user_image_loaded);
}


static ngx_int_t
ngx_http_chat_user_bad_image(ngx_http_request_t *r, const char *message)
{
    return ngx_http_chat_send_error(r, NGX_HTTP_BAD_REQUEST, "INVALID_INPUT",
                                    message, NULL);
}


static ngx_int_t
ngx_http_chat_user_bad_multipart(const char **error, const char *message)
{
    *error = message;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_chat_user_image_loaded(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    u_char                         *p;
    u_char                          rnd[8];
    ngx_str_t                       file, filename, name;
    const char                     *ext, *error;
    ngx_http_chat_user_ctx_t       *uctx;
    ngx_http_chat_user_loc_conf_t  *ulcf;

    uctx = ctx->data;
    ulcf = ngx_http_get_module_loc_conf(r, ngx_http_chat_user_module);

    if (ngx_http_chat_user_multipart(r, ctx, &file, &filename, &error)
        != NGX_OK)
    {
        return ngx_http_chat_user_bad_image(r, error);
    }

    /* the name is never used, but a path in it is an attack: refuse it */

    for (p = filename.data; p < filename.data + filename.len; p++) {
        if (*p == '/' || *p == '\\' || *p == '\0'
            || (*p == '.' && p + 1 < filename.data + filename.len
                && p[1] == '.'))
        {
            return ngx_http_chat_user_bad_image(r, "Invalid file name");
        }
    }

    if (file.len == 0) {
        return ngx_http_chat_user_bad_image(r, "The file is empty");
    }

    if (file.len > ulcf->image_max_size) {
        return ngx_http_chat_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        "FILE_TOO_LARGE",
                                        "The image is larger than 5 MiB",
                                        NULL);
    }

    ext = ngx_http_chat_user_image_type(&file);

    if (ext == NULL) {
        return ngx_http_chat_user_bad_image(r,
                           "The file is not a PNG, JPEG, GIF or WebP image");
    }

    /* "<user id>-<random>.<ext>": nothing of the client's name is kept */

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    name.len = NGX_INT_T_LEN + 1 + 2 * sizeof(rnd) + 6;
    name.data = ngx_pnalloc(r->pool, name.len);
    if (name.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(name.data, "%i-", ctx->user_id);
    p = ngx_hex_dump(p, rnd, sizeof(rnd));
    p = ngx_sprintf(p, ".%s", ext);
    name.len = p - name.data;

    uctx->path.len = ulcf->upload_dir.len + 1 + name.len;
    uctx->path.data = ngx_pnalloc(r->pool, uctx->path.len + 1);
    uctx->url.len = ulcf->image_url.len + name.len;
    uctx->url.data = ngx_pnalloc(r->pool, uctx->url.len);

    if (uctx->path.data == NULL || uctx->url.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_sprintf(uctx->path.data, "%V/%V", &ulcf->upload_dir, &name) = '\0';
    ngx_sprintf(uctx->url.data, "%V%V", &ulcf->image_url, &name);

    return ngx_http_chat_user_file(r, ctx, &uctx->path, &file,
                                   ngx_http_chat_user_image_stored);
}


/*
 * the "file" part of a multipart/form-data body, pointing into ctx->body;
 * NGX_DECLINED with *error set when there is none
 */

static ngx_int_t
ngx_http_chat_user_multipart(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_str_t *file, ngx_str_t *filename, const char **error)
{
    u_char     *p, *last, *b, *e, *hdr, *hend, *part, *name;
    size_t      blen;
    ngx_str_t  *ct;
    u_char      boundary[80];

    ngx_str_null(file);
    ngx_str_null(filename);

    ct = r->headers_in.content_type ? &r->headers_in.content_type->value
                                    : NULL;

    if (ct == NULL
        || ct->len < sizeof("multipart/form-data") - 1
        || ngx_strncasecmp(ct->data, (u_char *) "multipart/form-data",
                           sizeof("multipart/form-data") - 1)
           != 0)
    {
        return ngx_http_chat_user_bad_multipart(error,
                   "Expected multipart/form-data with a \"file\" field");
    }

    last = ct->data + ct->len;
    b = ngx_strlcasestrn(ct->data, last, (u_char *) "boundary=", 9 - 1);

    if (b == NULL) {
        return ngx_http_chat_user_bad_multipart(error, "No multipart boundary");
    }

    b += 9;

    if (b < last && *b == '"') {
        b++;
        e = ngx_strlchr(b, last, '"');

    } else {
        for (e = b; e < last && *e != ';' && *e != ' '; e++) { /* void */ }
    }

    if (e == NULL || e == b || e - b > 70) {
        return ngx_http_chat_user_bad_multipart(error,
                   "Invalid multipart boundary");
    }

    /* the delimiter is CRLF "--" boundary; the first one may lack CRLF */

    blen = ngx_sprintf(boundary, "\r\n--%*s", (size_t) (e - b), b)
           - boundary;

    p = ctx->body.data;
    last = p + ctx->body.len;

    if ((size_t) (last - p) >= blen - 2
        && ngx_memcmp(p, boundary + 2, blen - 2) == 0)
    {
        part = p + blen - 2;

    } else {
        part = memmem(p, last - p, boundary, blen);
        if (part == NULL) {
            return ngx_http_chat_user_bad_multipart(error, "No file uploaded");
        }

        part += blen;
    }

    for ( ;; ) {
        /* "--" after a delimiter ends the body */

        if (last - part < 2 || (part[0] == '-' && part[1] == '-')) {
            break;
        }

        hdr = part;
        hend = memmem(hdr, last - hdr, "\r\n\r\n", 4);
        if (hend == NULL) {
            break;
        }

        e = memmem(hend + 4, last - (hend + 4), boundary, blen);
        if (e == NULL) {
            break;
        }

        name = ngx_strlcasestrn(hdr, hend, (u_char *) "name=\"file\"",
                                11 - 1);

        /* " filename=" also contains "name=": require a separator before */

        while (name && name > hdr && name[-1] != ' ' && name[-1] != ';') {
            name = ngx_strlcasestrn(name + 1, hend,
                                    (u_char *) "name=\"file\"", 11 - 1);
        }

        if (name) {
            filename->len = 0;
            filename->data = (u_char *) "";

            p = ngx_strlcasestrn(hdr, hend, (u_char *) "filename=\"",
                                 10 - 1);
            if (p) {
                p += 10;
                b = ngx_strlchr(p, hend, '"');
                if (b) {
                    filename->data = p;
                    filename->len = b - p;
                }
            }

            file->data = hend + 4;
            file->len = e - file->data;

            return NGX_OK;
        }

        part = e + blen;
    }

    return ngx_http_chat_user_bad_multipart(error, "No file uploaded");
}


static const char *
ngx_http_chat_user_image_type(ngx_str_t *file)
{
    u_char  *p;

    p = file->data;

    if (file->len >= 8 && ngx_memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) {
        return "png";
    }

    if (file->len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        return "jpg";
    }

    if (file->len >= 6
        && (ngx_memcmp(p, "GIF87a", 6) == 0
            || ngx_memcmp(p, "GIF89a", 6) == 0))
    {
        return "gif";
    }

    if (file->len >= 12 && ngx_memcmp(p, "RIFF", 4) == 0
        && ngx_memcmp(p + 8, "WEBP", 4) == 0)
    {
        return "webp";
    }

    return NULL;
}


static ngx_int_t
ngx_http_chat_user_image_stored(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc)
{
    ngx_http_chat_user_ctx_t  *uctx;

    uctx = ctx->data;

    if (rc != NGX_OK) {
        ngx_http_chat_user_file_log(r, NGX_LOG_CRIT, uctx->op);
        return ngx_http_chat_send_detail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         "Failed to store the image");
    }

    return ngx_http_chat_user_image_set(r, ctx, &uctx->url);
}


/* url == NULL clears the column */

static ngx_int_t
ngx_http_chat_user_image_set(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_str_t *url)
{
    ngx_http_chat_sql_arg_t  args[2];

    args[0].type = url ? NGX_HTTP_CHAT_SQL_STR : NGX_HTTP_CHAT_SQL_NULL;
    args[0].str = url ? *url : (ngx_str_t) ngx_null_string;
    args[1].type = NGX_HTTP_CHAT_SQL_INT;
    args[1].num = ctx->user_id;

    return ngx_http_chat_sql(r, "UPDATE users SET profile_image_url = ?, "
                             "updated_at = UTC_TIMESTAMP() WHERE id = ?",
                             args, 2, ngx_http_chat_user_image_updated);
}


/* then the previous file goes, if it is one of ours */

static ngx_int_t
ngx_http_chat_user_image_updated(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_http_chat_sql_res_t *res)
{
    ngx_str_t                      *old, name;
    ngx_http_chat_user_ctx_t       *uctx;
    ngx_http_chat_user_loc_conf_t  *ulcf;

    if (res->rc != NGX_OK) {
        return ngx_http_chat_send_unavailable(r);
    }

    uctx = ctx->data;
    ulcf = ngx_http_get_module_loc_conf(r, ngx_http_chat_user_module);

    old = &uctx->user[NGX_HTTP_CHAT_USER_IMAGE];

    if (old->data == NULL
        || old->len <= ulcf->image_url.len
        || ngx_strncmp(old->data, ulcf->image_url.data, ulcf->image_url.len)
        || ngx_strlchr(old->data + ulcf->image_url.len, old->data + old->len,
                       '/'))
    {
        return ngx_http_chat_user_reread(r, ctx,
                                         ngx_http_chat_user_image_done);
    }

    name.data = old->data + ulcf->image_url.len;
    name.len = old->len - ulcf->image_url.len;

    uctx->old_path.len = ulcf->upload_dir.len + 1 + name.len;
    uctx->old_path.data = ngx_pnalloc(r->pool, uctx->old_path.len + 1);
    if (uctx->old_path.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_sprintf(uctx->old_path.data, "%V/%V", &ulcf->upload_dir, &name)
        = '\0';

    return ngx_http_chat_user_file(r, ctx, &uctx->old_path, NULL,
                                   ngx_http_chat_user_image_removed);
}


static ngx_int_t
ngx_http_chat_user_image_removed(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx, ngx_int_t rc)
{
    ngx_http_chat_user_ctx_t  *uctx;

    if (rc != NGX_OK) {
        uctx = ctx->data;
        ngx_http_chat_user_file_log(r, NGX_LOG_ERR, uctx->op);
    }

    return ngx_http_chat_user_reread(r, ctx, ngx_http_chat_user_image_done);
}


static ngx_int_t
ngx_http_chat_user_image_done(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_http_chat_sql_res_t *res)
{
    if (res->rc != NGX_OK || res->nrows != 1) {
        return ngx_http_chat_send_unavailable(r);
    }

    return ngx_http_chat_user_send_profile(r, res->cells, 1);
}


ngx_int_t
ngx_http_chat_user_image_delete(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_user_load(r, ctx,
                                   ngx_http_chat_user_image_delete_loaded);
}


static ngx_int_t
ngx_http_chat_user_image_delete_loaded(ngx_http_request_t *r,
    ngx_http_chat_ctx_t *ctx)
{
    return ngx_http_chat_user_image_set(r, ctx, NULL);
}


/* write data to path (a new file), or remove path when data is NULL */

static ngx_int_t
ngx_http_chat_user_file(ngx_http_request_t *r, ngx_http_chat_ctx_t *ctx,
    ngx_str_t *path, ngx_str_t *data, ngx_http_chat_thread_done_pt done)
{
    ngx_http_chat_user_ctx_t        *uctx;
    ngx_http_chat_user_file_t       *f;
    ngx_http_chat_core_main_conf_t  *cmcf;

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_chat_core_module);
    uctx = ctx->data;

    f = ngx_pcalloc(r->pool, sizeof(ngx_http_chat_user_file_t));
    if (f == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    uctx->op = f;

    f->path = (char *) path->data;

    if (data) {
        f->data = data->data;
        f->len = data->len;

    } else {
        f->remove = 1;
    }

    return ngx_http_chat_thread(r, cmcf->cpu_pool, ngx_http_chat_user_file_run,
                                f, done);
}


/* in a pool thread */

static ngx_int_t
ngx_http_chat_user_file_run(void *data)
{
    ngx_http_chat_user_file_t *f = data;

    int       fd;
    u_char   *p;
    ssize_t   n;
    size_t    left, len;

    len = ngx_strlen(f->path);

    if (f->remove) {
        if (unlink(f->path) == -1 && errno != ENOENT) {
            return ngx_http_chat_user_file_failed(f, "unlink()", len);
        }

        return NGX_OK;
    }

    fd = open(f->path, O_WRONLY|O_CREAT|O_EXCL, 0644);

    if (fd == -1 && errno == ENOENT) {

        /*
         * the master makes the upload directory before the workers start;
         * one removed since is made again here, owned by the worker user
         */

        p = (u_char *) strrchr(f->path, '/');

        if (p) {
            *p = '\0';

            if (mkdir(f->path, 0755) == -1 && errno != EEXIST) {
                *p = '/';
                return ngx_http_chat_user_file_failed(f, "mkdir()",
                                                      p - (u_char *) f->path);
            }

            *p = '/';
            fd = open(f->path, O_WRONLY|O_CREAT|O_EXCL, 0644);
        }
    }

    if (fd == -1) {
        return ngx_http_chat_user_file_failed(f, "open()", len);
    }

    p = f->data;
    left = f->len;

    while (left) {
        n = write(fd, p, left);

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }

            (void) ngx_http_chat_user_file_failed(f, "write()", len);
            (void) close(fd);
            (void) unlink(f->path);
            return NGX_ERROR;
        }

        p += n;
        left -= n;
    }

    if (close(fd) == -1) {
        (void) ngx_http_chat_user_file_failed(f, "close()", len);
        (void) unlink(f->path);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_chat_user_file_failed(ngx_http_chat_user_file_t *f,
    const char *call, size_t name_len)
{
    f->err = errno;
    f->failed = call;
    f->name_len = name_len;

    return NGX_ERROR;
}


/* back in the event loop; nothing to log when the task could not run */

static void
ngx_http_chat_user_file_log(ngx_http_request_t *r, ngx_uint_t level,
    ngx_http_chat_user_file_t *f)
{
    if (f == NULL || f->failed == NULL) {
        return;
    }

    ngx_log_error(level, r->connection->log, f->err,
                  "chat user: %s \"%*s\" failed",
                  f->failed, f->name_len, f->path);
}


/*
 * The master prepares the upload directories after the configuration is
 * read and before the workers start: a worker runs as the "user"
 * directive's user (nginx's default "nobody" under a root master) and can
 * neither make the directory in a root-owned prefix nor write into one
 * that root made.
 *
 * The rule: a missing directory is made (0755).  When the master runs as
 * root, the directory is handed to the workers' user and group if it is
 * ours to hand over: one just made here, or an empty one owned by root
 * (made by a start script or an earlier version; nothing was ever stored
 * in it).  Any other directory was set up by the administrator and stays
 * as it is; one the workers cannot write to is reported.  Nothing happens
 * under "nginx -t": a test changes nothing on disk.
 */

ngx_int_t
ngx_http_chat_user_image_init(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i, j;
    ngx_core_conf_t                  *ccf;
    ngx_http_chat_user_loc_conf_t   **ulcfp;
    ngx_http_chat_user_main_conf_t   *umcf;

    if (ngx_test_config) {
        return NGX_OK;
    }

    umcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_chat_user_module);
    if (umcf == NULL) {
        return NGX_OK;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    ulcfp = umcf->locations.elts;

    for (i = 0; i < umcf->locations.nelts; i++) {

        /* locations usually share one directory */

        for (j = 0; j < i; j++) {
            if (ulcfp[j]->upload_dir.len == ulcfp[i]->upload_dir.len
                && ngx_strncmp(ulcfp[j]->upload_dir.data,
                               ulcfp[i]->upload_dir.data,
                               ulcfp[i]->upload_dir.len)
                   == 0)
            {
                break;
            }
        }

        if (j == i) {
            ngx_http_chat_user_image_dir(cycle, ccf, &ulcfp[i]->upload_dir);
        }
    }

    return NGX_OK;
}


/* errors are logged and the workers start anyway: an upload fails alone */

static void
ngx_http_chat_user_image_dir(ngx_cycle_t *cycle, ngx_core_conf_t *ccf,
    ngx_str_t *dir)
{
    ngx_str_t         name;
    ngx_uint_t        made;
    ngx_file_info_t   fi;

    name.len = dir->len;
    name.data = ngx_pnalloc(cycle->pool, dir->len + 1);
    if (name.data == NULL) {
        return;
    }

    *ngx_cpymem(name.data, dir->data, dir->len) = '\0';

    made = 0;

    if (ngx_create_dir(name.data, 0755) == NGX_FILE_ERROR) {
        if (ngx_errno != NGX_EEXIST) {
            ngx_log_error(NGX_LOG_CRIT, cycle->log, ngx_errno,
                          "chat user: " ngx_create_dir_n " \"%V\" failed",
                          &name);
            return;
        }

    } else {
        made = 1;
    }

    if (ngx_file_info(name.data, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_CRIT, cycle->log, ngx_errno,
                      "chat user: " ngx_file_info_n " \"%V\" failed", &name);
        return;
    }

    if (!ngx_is_dir(&fi)) {
        ngx_log_error(NGX_LOG_CRIT, cycle->log, 0,
                      "chat user: upload directory \"%V\" is not a directory",
                      &name);
        return;
    }

    /* not root: the workers run as the master's user, who made it */

    if (geteuid() != 0 || ccf->user == (ngx_uid_t) NGX_CONF_UNSET_UINT
        || fi.st_uid == ccf->user)
    {
        return;
    }

    if (made
        || (fi.st_uid == 0 && ngx_http_chat_user_dir_empty(&name) == NGX_OK))
    {
        if (chown((char *) name.data, ccf->user, ccf->group) == -1) {
            ngx_log_error(NGX_LOG_CRIT, cycle->log, ngx_errno,
                          "chat user: chown(\"%V\", \"%s\") failed",
                          &name, ccf->username);
        }

        return;
    }

    if (!(fi.st_mode & S_IWOTH)
        && !(fi.st_gid == ccf->group && (fi.st_mode & S_IWGRP)))
    {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "chat user: upload directory \"%V\" is not writable "
                      "by the worker user \"%s\"", &name, ccf->username);
    }
}


static ngx_int_t
ngx_http_chat_user_dir_empty(ngx_str_t *name)
{
    u_char     *p;
    ngx_int_t   rc;
    ngx_dir_t   dir;

    if (ngx_open_dir(name, &dir) == NGX_ERROR) {
        return NGX_ERROR;
    }

    rc = NGX_OK;

    while (ngx_read_dir(&dir) != NGX_ERROR) {
        p = ngx_de_name(&dir);

        if (p[0] == '.'
            && (p[1] == '\0' || (p[1] == '.' && p[2] == '\0')))
        {
            continue;
        }

        rc = NGX_DECLINED;
        break;
    }

    (void) ngx_close_dir(&dir);

    return rc;
}
