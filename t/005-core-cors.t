# CORS: preflight answered without a token (DEV-11), allow headers on
# responses to allowed origins, nothing for other origins.

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

workers(2);
master_on();
no_shuffle();
add_block_preprocessor(\&chat_block);

run_tests();

__DATA__

=== TEST 1: preflight on a protected path, any origin allowed
--- config
location /diag/ { chat_cors_origins *; chat_diagnostics; }
--- request
OPTIONS /diag/whoami
--- more_headers
Origin: https://app.example.com
Access-Control-Request-Method: GET
Access-Control-Request-Headers: authorization, content-type
--- error_code: 200
--- response_headers
Access-Control-Allow-Origin: https://app.example.com
Access-Control-Allow-Methods: DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT
Access-Control-Allow-Headers: authorization, content-type
Access-Control-Allow-Credentials: true
Access-Control-Max-Age: 600
Vary: Origin
--- response_body chomp
OK



=== TEST 2: a simple response gets "*" and credentials
--- config
location /diag/ { chat_cors_origins *; chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Origin: https://app.example.com
--- error_code: 401
--- response_headers
Access-Control-Allow-Origin: *
Access-Control-Allow-Credentials: true



=== TEST 3: with a cookie the origin is echoed
--- config
location /diag/ { chat_cors_origins *; chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Origin: https://app.example.com
Cookie: a=b
--- error_code: 401
--- response_headers
Access-Control-Allow-Origin: https://app.example.com
Vary: Origin



=== TEST 4: no Origin, no CORS headers
--- config
location /diag/ { chat_cors_origins *; chat_diagnostics; }
--- request
GET /diag/whoami
--- error_code: 401
--- response_headers
!Access-Control-Allow-Origin



=== TEST 5: a list of origins: allowed one
--- config
location /diag/ { chat_cors_origins http://localhost:3000 https://a.example; chat_diagnostics; }
--- request
OPTIONS /diag/echo
--- more_headers
Origin: https://a.example
Access-Control-Request-Method: POST
--- error_code: 200
--- response_headers
Access-Control-Allow-Origin: https://a.example



=== TEST 6: a list of origins: another one is refused
--- config
location /diag/ { chat_cors_origins http://localhost:3000; chat_diagnostics; }
--- request eval
["OPTIONS /diag/echo", "POST /diag/echo\n{}"]
--- more_headers
Origin: https://evil.example
Access-Control-Request-Method: POST
--- error_code eval
[400, 200]
--- response_body eval
["Disallowed CORS origin", "{\"body\":{}}"]
--- response_headers eval
["!Access-Control-Allow-Origin", "!Access-Control-Allow-Origin"]



=== TEST 7: without chat_cors_origins, OPTIONS is an ordinary request
--- config
location /diag/ { chat_diagnostics; }
--- request
OPTIONS /diag/whoami
--- more_headers
Origin: https://app.example.com
Access-Control-Request-Method: GET
--- error_code: 405
