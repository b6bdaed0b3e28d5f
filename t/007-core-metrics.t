# /metrics: Prometheus text, counted in shared memory across workers, per
# route pattern (never per raw URI).

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

workers(2);
master_on();
no_shuffle();
add_block_preprocessor(\&chat_block);

run_tests();

__DATA__

=== TEST 1: requests of both workers are counted per route and status
--- config
location /diag/ { chat_diagnostics; }
location = /metrics { chat_metrics; }
--- request eval
[(map { "GET /diag/mysql?value=$_" } 1 .. 6), "GET /diag/whoami",
 "GET /diag/whoami", "GET /metrics"]
--- error_code eval
[(200) x 6, 401, 401, 200]
--- response_body_like eval
[('.') x 8,
 '(?m)^chat_http_requests_total\{method="GET",route="/diag/mysql",status="2xx"\} 6$.*'
 . '^chat_http_requests_total\{method="GET",route="/diag/whoami",status="4xx"\} 2$.*'
 . '^chat_http_request_duration_seconds_bucket\{method="GET",route="/diag/mysql",le="5.000"\} 6$.*'
 . '^chat_http_request_duration_seconds_bucket\{method="GET",route="/diag/mysql",le="\+Inf"\} 6$.*'
 . '^chat_http_request_duration_seconds_sum\{method="GET",route="/diag/mysql"\} 0\.\d{3}$.*'
 . '^chat_http_request_duration_seconds_count\{method="GET",route="/diag/mysql"\} 6$']
--- response_headers eval
[("") x 8, "Content-Type: text/plain; version=0.0.4"]



=== TEST 2: datastores and streams
--- config
location = /metrics { chat_metrics; }
--- request
GET /metrics
--- error_code: 200
--- response_body_like: (?m)^chat_sse_streams 0$.*^chat_datastore_up\{datastore="mysql"\} [01]$
