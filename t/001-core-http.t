# The core's request plumbing: health, readiness, routing errors, JSON
# bodies and their limits.

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

workers(2);
master_on();
no_shuffle();
add_block_preprocessor(\&chat_block);

run_tests();

__DATA__

=== TEST 1: health names the service and touches no datastore
--- config
location = /health { chat_service_name "User Service"; chat_health; }
--- request
GET /health
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body chomp
{"status":"healthy","service":"User Service"}
--- no_error_log
[error]



=== TEST 2: service info
--- config
location = / { chat_service_name "Friend Service"; chat_info; }
--- request
GET /
--- error_code: 200
--- response_body chomp
{"service":"Friend Service","version":"1.0.0","status":"running"}



=== TEST 3: health only answers GET
--- config
location = /health { chat_health; }
--- request
POST /health
--- error_code: 405
--- response_headers
Allow: GET
--- response_body chomp
{"detail":"Method Not Allowed"}



=== TEST 4: readiness reports every datastore up
--- config
location = /ready { chat_ready; }
--- init
sleep 1;
--- request
GET /ready
--- error_code: 200
--- response_body chomp
{"status":"ready","datastores":{"mysql":"up","redis":"up","mongo":"up"}}



=== TEST 5: unknown path under a routed location is a JSON 404
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/nothing
--- error_code: 404
--- response_body chomp
{"detail":"Not Found"}



=== TEST 6: known path, wrong method: JSON 405 with Allow
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/echo
--- error_code: 405
--- response_headers
Allow: POST
--- response_body chomp
{"detail":"Method Not Allowed"}



=== TEST 7: a JSON body round trip keeps non-ASCII unescaped
--- config
location /diag/ { chat_diagnostics; }
--- request
POST /diag/echo
{"name":"Zoë","n":5,"list":[1,2],"nested":{"ok":true}}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- response_body chomp
{"body":{"name":"Zoë","n":5,"list":[1,2],"nested":{"ok":true}}}



=== TEST 8: malformed JSON is a 422 with a detail array, not a 500
--- config
location /diag/ { chat_diagnostics; }
--- request
POST /diag/echo
{"name": "x",
--- error_code: 422
--- response_body_like: ^\{"detail":\[\{"type":"json_invalid","loc":\["body"\],"msg":"JSON decode error"
--- no_error_log
[alert]



=== TEST 9: an empty body is a missing body
--- config
location /diag/ { chat_diagnostics; }
--- request
POST /diag/echo
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}



=== TEST 10: a JSON body that is not an object
--- config
location /diag/ { chat_diagnostics; }
--- request
POST /diag/echo
[1,2,3]
--- error_code: 422
--- response_body_like: "type":"model_attributes_type","loc":\["body"\]



=== TEST 11: a body over the JSON limit is a JSON 413
--- http_config
chat_json_max_body_size 1k;
--- config
location /diag/ { chat_diagnostics; }
--- request eval
"POST /diag/echo\n{\"a\":\"" . ("x" x 2000) . "\"}"
--- error_code: 413
--- response_body chomp
{"detail":"Request body too large"}



=== TEST 12: the limit also holds for a chunked body
--- http_config
chat_json_max_body_size 1k;
--- config
location /diag/ { chat_diagnostics; }
--- raw_request eval
my $body = "{\"a\":\"" . ("x" x 2000) . "\"}";
"POST /diag/echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
. "Transfer-Encoding: chunked\r\n\r\n"
. sprintf("%x\r\n%s\r\n0\r\n\r\n", length($body), $body)
--- error_code: 413
--- response_body chomp
{"detail":"Request body too large"}



=== TEST 13: a chunked body under the limit is read whole
--- config
location /diag/ { chat_diagnostics; }
--- raw_request eval
my $body = "{\"a\":\"" . ("y" x 3000) . "\"}";
"POST /diag/echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
. "Transfer-Encoding: chunked\r\n\r\n"
. sprintf("%x\r\n%s\r\n0\r\n\r\n", length($body), $body)
--- error_code: 200
--- response_body eval
"{\"body\":{\"a\":\"" . ("y" x 3000) . "\"}}"



=== TEST 14: deeply nested JSON does not crash the worker
--- config
location /diag/ { chat_diagnostics; }
--- request eval
"POST /diag/echo\n" . ("[" x 5000) . ("]" x 5000)
--- error_code: 422
--- no_error_log
[alert]
