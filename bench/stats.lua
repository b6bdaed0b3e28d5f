-- wrk script shared by the benchmarks.
--
-- The request is described by the environment, so one script serves
-- every endpoint:
--   BENCH_METHOD        HTTP method (GET)
--   BENCH_BODY          request body (none)
--   BENCH_CONTENT_TYPE  Content-Type of the body (application/json)
--   BENCH_TOKEN         sent as "Authorization: Bearer <token>"
--   BENCH_LABEL         name printed in the RESULT line
--
-- Every response's status is looked at: anything but 2xx counts as an
-- error (wrk itself only counts statuses above 399), and 429s, the
-- gateway's rate limit, are also counted apart.  done() prints one line:
--
--   RESULT label=... requests=N duration_s=S rps=R mean_ms=.. p50_ms=..
--          p90_ms=.. p99_ms=.. max_ms=.. non2xx=N limited=N connect=N
--          read=N write=N timeout=N errors=N
--
-- errors = non2xx + connect + read + write + timeout.

local method = os.getenv("BENCH_METHOD")
local body = os.getenv("BENCH_BODY")
local token = os.getenv("BENCH_TOKEN")

if method and method ~= "" then
    wrk.method = method
end

if body and body ~= "" then
    wrk.body = body
    wrk.headers["Content-Type"] =
        os.getenv("BENCH_CONTENT_TYPE") or "application/json"
end

if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
end

wrk.headers["User-Agent"] = "nginx-chat-bench"


-- per-thread counters, read back in done() through thread:get()

non2xx = 0
limited = 0

function response(status, headers, body)
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
        if status == 429 then
            limited = limited + 1
        end
    end
end


-- setup() and done() run in one more environment of their own

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

local function ms(us)
    return string.format("%.3f", us / 1000)
end

function done(summary, latency, requests)
    local bad, lim = 0, 0

    for _, t in ipairs(threads) do
        bad = bad + (t:get("non2xx") or 0)
        lim = lim + (t:get("limited") or 0)
    end

    local e = summary.errors
    local secs = summary.duration / 1e6
    local errors = bad + e.connect + e.read + e.write + e.timeout

    io.write(string.format(
        "RESULT label=%s requests=%d duration_s=%.3f rps=%.2f"
        .. " mean_ms=%s p50_ms=%s p90_ms=%s p99_ms=%s max_ms=%s"
        .. " non2xx=%d limited=%d connect=%d read=%d write=%d timeout=%d"
        .. " errors=%d\n",
        os.getenv("BENCH_LABEL") or "-",
        summary.requests, secs,
        secs > 0 and summary.requests / secs or 0,
        ms(latency.mean), ms(latency:percentile(50)),
        ms(latency:percentile(90)), ms(latency:percentile(99)),
        ms(latency.max),
        bad, lim, e.connect, e.read, e.write, e.timeout, errors))
end
