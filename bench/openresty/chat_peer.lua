-- GET /api/profile/me as an OpenResty user would write it: the peer that
-- bench/openresty.sh measures our gateway against.  It does what the
-- gateway does for this request (ngx_http_chat_auth.c, the user module's
-- profile): the Bearer token, its HS256 signature over "header.payload"
-- with the stack's secret, the claims (exp in the future, nbf and iat
-- not beyond a minute ahead, type "access", sub a positive id), Redis
-- EXISTS of the token's revocation key, the caller's row from MariaDB by
-- id with the same SELECT, the same JSON answer, then the EXPIRE that
-- keeps the caller's presence key alive.  Connections come from the
-- cosocket pools (set_keepalive), JSON is lua-cjson, HMAC-SHA256 is
-- lua-resty-openssl, the revocation key's SHA-256 lua-resty-string.

local cjson = require "cjson.safe"
local redis = require "resty.redis"
local mysql = require "resty.mysql"
local hmac = require "resty.openssl.hmac"
local sha256 = require "resty.sha256"
local str = require "resty.string"
local b64 = require "ngx.base64"

local ngx = ngx
local ngx_var = ngx.var
local ngx_time = ngx.time
local ngx_null = ngx.null
local re_match = ngx.re.match
local decode_base64url = b64.decode_base64url
local to_hex = str.to_hex
local type = type
local tonumber = tonumber
local floor = math.floor
local random = math.random
local format = string.format
local byte = string.byte
local sub = string.sub
local find = string.find


local _M = {}

local conf

-- the header every token of ours carries, {"alg":"HS256","typ":"JWT"}:
-- compared as it is, decoded only when it differs
local HS256_HEADER = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

local SKEW = 60
local TOKEN_MAX = 4096
local ID_MAX = 2147483647

local SELECT = "SELECT id, email, username, display_name, status_message, "
               .. "is_online, last_seen_at, created_at, updated_at, "
               .. "password_hash, profile_image_url FROM users WHERE id = "

local MISSING = '{"error":"unauthorized",'
                .. '"message":"Missing authentication token"}'
local INVALID = '{"error":"unauthorized",'
                .. '"message":"Invalid or expired token"}'
local UNAVAILABLE = '{"error":"database_error",'
                    .. '"message":"Database connection or operation failed",'
                    .. '"details":null,"status_code":503}'
local NOT_FOUND = '{"detail":"User not found"}'


-- per worker: the HMAC context is reused (reset after each token)
local mac


function _M.init(c)
    conf = c
end


function _M.init_worker()
    local err

    mac, err = hmac.new(conf.secret, "sha256")
    if not mac then
        ngx.log(ngx.ERR, "peer: hmac: ", err)
    end

    -- the span ids of traceparent headers
    math.randomseed(ngx.now() * 1000 + ngx.worker.pid())
end


local function answer(status, body)
    ngx.status = status
    if status == 401 then
        ngx.header["WWW-Authenticate"] = "Bearer"
    end
    ngx.print(body)
    return ngx.exit(ngx.HTTP_OK)
end


-- a time claim later than now (with skew), or a string where a number
-- belongs; other types are let be
local function future(claims, name, now)
    local t = claims[name]

    if type(t) == "string" then
        return true
    end

    return type(t) == "number" and t > now + SKEW
end


-- the caller's id from a valid token, or nil
local function verify(token)
    if #token > TOKEN_MAX then
        return nil
    end

    local dot1 = find(token, ".", 1, true)
    local dot2 = dot1 and find(token, ".", dot1 + 1, true)

    if not dot2 or dot1 == 1 or dot2 == dot1 + 1
       or find(token, ".", dot2 + 1, true)
       or #token - dot2 > 64
    then
        return nil
    end

    local sig = decode_base64url(sub(token, dot2 + 1))
    if not sig or #sig ~= 32 then
        return nil
    end

    local expect = mac:final(sub(token, 1, dot2 - 1))
    mac:reset()

    if expect ~= sig then
        return nil
    end

    local header = sub(token, 1, dot1 - 1)

    if header ~= HS256_HEADER then
        local h = cjson.decode(decode_base64url(header) or "")
        if type(h) ~= "table" or h.alg ~= "HS256" then
            return nil
        end
    end

    local claims = cjson.decode(decode_base64url(sub(token, dot1 + 1,
                                                     dot2 - 1)) or "")
    if type(claims) ~= "table" then
        return nil
    end

    local now = ngx_time()
    local exp = claims.exp

    if type(exp) ~= "number" or exp ~= floor(exp) or exp <= now
       or future(claims, "nbf", now) or future(claims, "iat", now)
       or claims.type ~= "access"
       or type(claims.sub) ~= "string"
       or not find(claims.sub, "^%+?%d+$")
    then
        return nil
    end

    local id = tonumber(claims.sub)
    if not id or id < 1 or id > ID_MAX then
        return nil
    end

    return id
end


local function revoked_key(token)
    local h = sha256:new()
    h:update(token)
    return "chat:revoked:" .. to_hex(h:final())
end


local function time_of(v)
    if v == ngx_null then
        return v
    end

    -- "2026-12-06 02:23:36" -> "2026-12-06T02:23:36"
    if byte(v, 11) == 32 then
        return sub(v, 1, 10) .. "T" .. sub(v, 12)
    end

    return v
end


function _M.profile_me()
    -- the W3C trace context of the answer: the request id as trace id
    ngx_var.peer_traceparent = format("00-%s-%08x%08x-01",
                                      ngx_var.request_id,
                                      random(0, 0x7fffffff),
                                      random(0, 0x7fffffff))

    local auth = ngx_var.http_authorization
    if not auth then
        return answer(401, MISSING)
    end

    local m = re_match(auth, [[^[ \t]*bearer[ \t]+([^ \t]+)[ \t]*$]], "joi")
    if not m then
        return answer(401, INVALID)
    end

    local token = m[1]
    local id = verify(token)
    if not id then
        ngx.log(ngx.INFO, "peer: invalid or expired token")
        return answer(401, INVALID)
    end

    ngx_var.peer_user_id = id

    local red = redis:new()
    red:set_timeouts(conf.redis_timeout, conf.redis_timeout,
                     conf.redis_timeout)

    local ok, err = red:connect(conf.redis_host, conf.redis_port)
    if not ok then
        ngx.log(ngx.ERR, "peer: redis connect: ", err)
        return answer(503, UNAVAILABLE)
    end

    local n
    n, err = red:exists(revoked_key(token))
    if n == nil then
        ngx.log(ngx.ERR, "peer: redis exists: ", err)
        return answer(503, UNAVAILABLE)
    end

    if n ~= 0 then
        red:set_keepalive(conf.idle_timeout, conf.pool_size)
        ngx.log(ngx.INFO, "peer: revoked token of user ", id)
        return answer(401, INVALID)
    end

    local db = mysql:new()
    db:set_timeout(conf.mysql_timeout)

    ok, err = db:connect(conf.mysql)
    if not ok then
        ngx.log(ngx.ERR, "peer: mysql connect: ", err)
        return answer(503, UNAVAILABLE)
    end

    local rows
    rows, err = db:query(SELECT .. id)
    if not rows then
        ngx.log(ngx.ERR, "peer: mysql query: ", err)
        db:close()
        return answer(503, UNAVAILABLE)
    end

    db:set_keepalive(conf.idle_timeout, conf.pool_size)

    local row = rows[1]
    if not row then
        red:set_keepalive(conf.idle_timeout, conf.pool_size)
        return answer(404, NOT_FOUND)
    end

    -- the caller's presence key lives on while it is active
    n, err = red:expire("user:online:" .. id, 3600)
    if n == nil then
        ngx.log(ngx.WARN, "peer: redis expire: ", err)
    else
        red:set_keepalive(conf.idle_timeout, conf.pool_size)
    end

    local online = row.is_online
    if online ~= ngx_null then
        online = online ~= 0
    else
        online = false
    end

    ngx.print(cjson.encode({
        id = row.id,
        username = row.username,
        display_name = row.display_name,
        status_message = row.status_message,
        is_online = online,
        last_seen_at = time_of(row.last_seen_at),
    }))
end


return _M
