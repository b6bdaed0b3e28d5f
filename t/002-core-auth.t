# Bearer tokens: issue, verify, and every way a token must be refused.

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

our $Secret = $ENV{TEST_NGINX_JWT_SECRET} // 'change-me-nginx-chat-secret';
our $Hs = { alg => 'HS256', typ => 'JWT' };
our $Claims = { sub => '42', email => 'a@example.com', type => 'access',
                exp => time() + 3600 };

$ENV{TEST_NGINX_GOOD} = make_jwt($Hs, $Claims, $Secret);
$ENV{TEST_NGINX_OTHER_SECRET} = make_jwt($Hs, $Claims, 'another secret');
$ENV{TEST_NGINX_EXPIRED} = make_jwt($Hs, { %$Claims, exp => time() - 5 },
                                    $Secret);
$ENV{TEST_NGINX_ALG_NONE} = make_jwt({ alg => 'none', typ => 'JWT' },
                                     $Claims, $Secret);
$ENV{TEST_NGINX_REFRESH} = make_jwt($Hs, { %$Claims, type => 'refresh' },
                                    $Secret);
$ENV{TEST_NGINX_INT_SUB} = make_jwt($Hs, { %$Claims, sub => 42 }, $Secret);
$ENV{TEST_NGINX_NO_EXP} = make_jwt($Hs, { sub => '42', type => 'access' },
                                   $Secret);
# unique per run: a revoked token stays revoked until it expires
$ENV{TEST_NGINX_ONCE} = make_jwt($Hs, { %$Claims,
                                        exp => time() + 3000 + $$ % 500 },
                                 $Secret);
$ENV{TEST_NGINX_TEXT_SUB} = make_jwt($Hs, { %$Claims, sub => 'abc' },
                                     $Secret);

# the same claims signed with HS512 and the right secret
{
    use Digest::SHA qw(hmac_sha512);
    use MIME::Base64 qw(encode_base64url);
    my $h = encode_base64url('{"alg":"HS512","typ":"JWT"}');
    my $c = encode_base64url(json_encode($Claims));
    $ENV{TEST_NGINX_HS512} = "$h.$c."
        . encode_base64url(hmac_sha512("$h.$c", $Secret));
}

workers(2);
master_on();
no_shuffle();
add_block_preprocessor(\&chat_block);

run_tests();

__DATA__

=== TEST 1: a valid token
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer $TEST_NGINX_GOOD
--- error_code: 200
--- response_body chomp
{"user_id":42,"email":"a@example.com"}



=== TEST 2: the scheme is case-insensitive
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: bEaReR $TEST_NGINX_GOOD
--- error_code: 200



=== TEST 3: no Authorization header
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer
--- response_body chomp
{"detail":"Not authenticated"}



=== TEST 4: another scheme
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Basic $TEST_NGINX_GOOD
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer



=== TEST 5: three parts in the header
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer $TEST_NGINX_GOOD extra
--- error_code: 401



=== TEST 6: signed with another secret
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer $TEST_NGINX_OTHER_SECRET
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer
--- response_body chomp
{"detail":"Not authenticated"}



=== TEST 7: expired
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer $TEST_NGINX_EXPIRED
--- error_code: 401



=== TEST 8: alg none
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer $TEST_NGINX_ALG_NONE
--- error_code: 401



=== TEST 9: HS512 with the right secret: only the configured algorithm
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer $TEST_NGINX_HS512
--- error_code: 401



=== TEST 10: wrong token type
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer $TEST_NGINX_REFRESH
--- error_code: 401



=== TEST 11: sub that is not a string
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer $TEST_NGINX_INT_SUB
--- error_code: 401



=== TEST 12: sub that is not a user id
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer $TEST_NGINX_TEXT_SUB
--- error_code: 401



=== TEST 13: no exp
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer $TEST_NGINX_NO_EXP
--- error_code: 401



=== TEST 14: garbage
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer a.b.c
--- error_code: 401
--- no_error_log
[alert]



=== TEST 15: logout revokes exactly the presented token
--- config
location /diag/ { chat_diagnostics; }
--- request eval
["GET /diag/whoami", "POST /diag/logout", "GET /diag/whoami"]
--- more_headers
Authorization: Bearer $TEST_NGINX_ONCE
--- error_code eval
[200, 200, 401]
--- response_body eval
['{"user_id":42,"email":"a@example.com"}', '{"detail":"revoked"}',
 '{"detail":"Not authenticated"}']



=== TEST 16: other tokens of the same user still work
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/whoami
--- more_headers
Authorization: Bearer $TEST_NGINX_GOOD
--- error_code: 200
