# Friend service input: malformed bodies, wrong types, missing fields, ids
# that are not integers, negative, zero or too big, in the path and in the
# body; tokens; routing.  Always a JSON 4xx, never a 5xx.  A MariaDB that
# cannot be reached gives the JSON 503.

use strict;
use warnings;

use Test::Nginx::Chat::Blocks 'no_plan';
use Test::Nginx::Chat;
use ChatStack;

our $Secret = $ENV{TEST_NGINX_JWT_SECRET} // 'change-me-nginx-chat-secret';

sub token_for {
    my ($id, %claims) = @_;
    return make_jwt({ alg => 'HS256', typ => 'JWT' },
                    { sub => "$id", email => "u$id\@example.com",
                      type => 'access', exp => time() + 3600, %claims },
                    $Secret);
}

for my $who (qw(A B C D E F)) {
    my $id = sql_user('fi');
    $ENV{"TEST_NGINX_$who"} = $id;
    $ENV{"TEST_NGINX_${who}_TOKEN"} = token_for($id);
}

$ENV{TEST_NGINX_EXPIRED} = token_for($ENV{TEST_NGINX_A},
                                     exp => time() - 10);
$ENV{TEST_NGINX_E_ACCENTS} = "\xc3\xa9" x 500;
$ENV{TEST_NGINX_LONG} = 'm' x 501;
$ENV{TEST_NGINX_HUGE_BODY} = 'x' x 70000;


# --- MariaDB unreachable: a second nginx whose chat_mysql points at a port
# nothing listens on; the shared servers are never touched

{
    my $closed = Test::Nginx::Chat::free_port();
    (my $http = chat_http_config(mysql_timeout => '2s'))
        =~ s/chat_mysql 127\.0\.0\.1:\d+/chat_mysql 127.0.0.1:$closed/
        or die "no chat_mysql line in chat_http_config()\n";

    my $ngx = start_nginx_with(
        workers     => 1,
        master      => 1,
        main_config => chat_main_config(),
        http_config => $http,
        config      => 'location /api/friends { chat_friend; }',
    );

    my $auth = { Authorization => "Bearer $ENV{TEST_NGINX_A_TOKEN}",
                 'Content-Type' => 'application/json' };
    my $unavailable = '{"error":"database_error","message":"Database '
                    . 'connection or operation failed","details":null,'
                    . '"status_code":503}';

    my @calls = (
        [POST => '/api/friends/request', "{\"user_id_2\":$ENV{TEST_NGINX_B}}"],
        [PUT => "/api/friends/status/$ENV{TEST_NGINX_B}",
         '{"action":"accept"}'],
        [GET => '/api/friends/list'],
        [GET => '/api/friends/requests'],
        [DELETE => "/api/friends/request/$ENV{TEST_NGINX_B}"],
        [GET => '/api/friends/search?query=x'],
    );

    for my $call (@calls) {
        my ($method, $path, $body) = @$call;
        my $res = http_request($method, $ngx->url($path), $auth, $body, 10);
        is($res->{status}, 503, "MariaDB down: $method $path is a 503");
        is($res->{body}, $unavailable, "MariaDB down: $method $path body");
        cmp_ok($res->{elapsed}, '<', 3,
               "MariaDB down: $method $path answered in time");
    }

    # bad input is still the client's mistake, datastore or not
    my $res = http_request(POST => $ngx->url('/api/friends/request'), $auth,
                           '{"user_id_2":"x"}');
    is($res->{status}, 422, 'MariaDB down: validation first');

    $res = http_request(POST => $ngx->url('/api/friends/request'), $auth,
                        "{\"user_id_2\":$ENV{TEST_NGINX_A}}");
    is($res->{status}, 400, 'MariaDB down: self request needs no datastore');

    stop_nginx($ngx);
}


workers(2);
master_on();
no_shuffle();
add_block_preprocessor(\&chat_block);

run_tests();

__DATA__

=== TEST 1: F1 malformed JSON: 422 before authentication
--- config
location /api/friends { chat_friend; }
--- request
POST /api/friends/request
{"user_id_2": 5,
--- error_code: 422
--- response_body_like: ^\{"detail":\[\{"type":"json_invalid","loc":\["body"\],"msg":"JSON decode error"



=== TEST 2: F1 well-formed JSON without a token: 401
--- request
POST /api/friends/request
{"user_id_2":5}
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer
--- response_body chomp
{"detail":"Not authenticated"}



=== TEST 3: F1 empty body, an array, a string
--- request eval
["POST /api/friends/request\n", "POST /api/friends/request\n[1]",
 "POST /api/friends/request\n\"5\""]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[422, 422, 422]
--- response_body eval
['{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}',
 qr/^\{"detail":\[\{"type":"model_attributes_type","loc":\["body"\],/,
 qr/^\{"detail":\[\{"type":"model_attributes_type","loc":\["body"\],/]



=== TEST 4: F1 user_id_2 missing: loc body/user_id_2, input the body
--- request
POST /api/friends/request
{"message":"hi"}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"missing","loc":["body","user_id_2"],"msg":"Field required","input":{"message":"hi"}}]}



=== TEST 5: F1 user_id_2 of the wrong type
--- request eval
["POST /api/friends/request\n{\"user_id_2\":\"abc\"}",
 "POST /api/friends/request\n{\"user_id_2\":1.5}",
 "POST /api/friends/request\n{\"user_id_2\":true}",
 "POST /api/friends/request\n{\"user_id_2\":null}",
 "POST /api/friends/request\n{\"user_id_2\":[1]}",
 "POST /api/friends/request\n{\"user_id_2\":{\"id\":1}}",
 "POST /api/friends/request\n{\"user_id_2\":\"\"}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[(422) x 7]
--- response_body eval
['{"detail":[{"type":"int_parsing","loc":["body","user_id_2"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"abc"}]}',
 '{"detail":[{"type":"int_from_float","loc":["body","user_id_2"],"msg":"Input should be a valid integer, got a number with a fractional part","input":1.5}]}',
 '{"detail":[{"type":"int_type","loc":["body","user_id_2"],"msg":"Input should be a valid integer","input":true}]}',
 '{"detail":[{"type":"int_type","loc":["body","user_id_2"],"msg":"Input should be a valid integer","input":null}]}',
 '{"detail":[{"type":"int_type","loc":["body","user_id_2"],"msg":"Input should be a valid integer","input":[1]}]}',
 '{"detail":[{"type":"int_type","loc":["body","user_id_2"],"msg":"Input should be a valid integer","input":{"id":1}}]}',
 '{"detail":[{"type":"int_parsing","loc":["body","user_id_2"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":""}]}']



=== TEST 6: F1 integers that name nobody: zero, negative, past INT
--- request eval
["POST /api/friends/request\n{\"user_id_2\":0}",
 "POST /api/friends/request\n{\"user_id_2\":-1}",
 "POST /api/friends/request\n{\"user_id_2\":-9223372036854775807}",
 "POST /api/friends/request\n{\"user_id_2\":2147483648}",
 "POST /api/friends/request\n{\"user_id_2\":4294967296}",
 "POST /api/friends/request\n{\"user_id_2\":\"9223372036854775807\"}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code_like eval
[qr/^404$/, qr/^404$/, qr/^4\d\d$/, qr/^404$/, qr/^404$/, qr/^404$/]
--- response_body_like eval
['^\{"detail":"Target user not found"\}$',
 '^\{"detail":"Target user not found"\}$',
 '^\{"detail":',
 '^\{"detail":"Target user not found"\}$',
 '^\{"detail":"Target user not found"\}$',
 '^\{"detail":"Target user not found"\}$']
--- no_error_log
[error]



=== TEST 7: F1 integers beyond 64 bits: a 422, not a 5xx
--- request eval
["POST /api/friends/request\n{\"user_id_2\":99999999999999999999999}",
 "POST /api/friends/request\n{\"user_id_2\":\"99999999999999999999999\"}",
 "POST /api/friends/request\n{\"user_id_2\":9223372036854775808}",
 "POST /api/friends/request\n{\"user_id_2\":1e400}",
 "POST /api/friends/request\n{\"user_id_2\":-1e30}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[(422) x 5]
--- response_body_like eval
[('^\{"detail":\[\{"type":"[a-z_]+","loc":\["body","user_id_2"\],"msg":"[^"]+"') x 5]
--- no_error_log
[alert]



=== TEST 8: F1 a numeric string and a whole float are integers (lax mode)
--- request eval
["POST /api/friends/request\n{\"user_id_2\":\"$ENV{TEST_NGINX_B}\"}",
 "POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_C}.0}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[201, 201]
--- response_body_like eval
["^\\{\"id\":\\d+,\"user_id_1\":$ENV{TEST_NGINX_A},\"user_id_2\":$ENV{TEST_NGINX_B},",
 "^\\{\"id\":\\d+,\"user_id_1\":$ENV{TEST_NGINX_A},\"user_id_2\":$ENV{TEST_NGINX_C},"]



=== TEST 9: F1 message: null and 500 code points are fine, unknown fields ignored
--- request eval
["POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_D},\"message\":null,\"extra\":[1,2]}",
 "POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_E},\"message\":\"$ENV{TEST_NGINX_E_ACCENTS}\"}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[201, 201]



=== TEST 10: F1 message: not a string, too long, not UTF-8
--- request eval
["POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_F},\"message\":5}",
 "POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_F},\"message\":\"$ENV{TEST_NGINX_LONG}\"}",
 "POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_F},\"message\":\"\xff\xfe\"}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[422, 422, 422]
--- response_body eval
['{"detail":[{"type":"string_type","loc":["body","message"],"msg":"Input should be a valid string","input":5}]}',
 "{\"detail\":[{\"type\":\"string_too_long\",\"loc\":[\"body\",\"message\"],\"msg\":\"String should have at most 500 characters\",\"input\":\"$ENV{TEST_NGINX_LONG}\",\"ctx\":{\"max_length\":500}}]}",
 qr/^\{"detail":\[\{"type":"string_unicode","loc":\["body","message"\],/]



=== TEST 11: F1 every body error in one 422; nothing was stored
--- request
POST /api/friends/request
{"user_id_2":"x","message":["no"]}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"int_parsing","loc":["body","user_id_2"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"x"},{"type":"string_type","loc":["body","message"],"msg":"Input should be a valid string","input":["no"]}]}



=== TEST 12: F1 a body over the JSON limit is a JSON 413
--- request
POST /api/friends/request
{"user_id_2":1,"message":"$TEST_NGINX_HUGE_BODY"}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 413
--- response_body chomp
{"detail":"Request body too large"}



=== TEST 13: F2 path ids that are not integers
--- request eval
["PUT /api/friends/status/abc\n{\"action\":\"accept\"}",
 "PUT /api/friends/status/1.5\n{\"action\":\"accept\"}",
 "PUT /api/friends/status/99999999999999999999999\n{\"action\":\"accept\"}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code eval
[422, 422, 422]
--- response_body eval
['{"detail":[{"type":"int_parsing","loc":["path","requester_user_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"abc"}]}',
 '{"detail":[{"type":"int_parsing","loc":["path","requester_user_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"1.5"}]}',
 qr/^\{"detail":\[\{"type":"[a-z_]+","loc":\["path","requester_user_id"\],/]



=== TEST 14: F2 path ids that name nobody: no such request
--- request eval
["PUT /api/friends/status/0\n{\"action\":\"accept\"}",
 "PUT /api/friends/status/-3\n{\"action\":\"reject\"}",
 "PUT /api/friends/status/2147483648\n{\"action\":\"accept\"}",
 "PUT /api/friends/status/9223372036854775807\n{\"action\":\"accept\"}",
 "PUT /api/friends/status/-9223372036854775808\n{\"action\":\"accept\"}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code eval
[(400) x 5]
--- response_body eval
[('{"detail":"Friend request not found or already processed"}') x 5]
--- no_error_log
[error]



=== TEST 15: F2 action missing, not a string
--- request eval
["PUT /api/friends/status/$ENV{TEST_NGINX_A}\n{}",
 "PUT /api/friends/status/$ENV{TEST_NGINX_A}\n{\"action\":1}",
 "PUT /api/friends/status/$ENV{TEST_NGINX_A}\n{\"action\":null}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code eval
[422, 422, 422]
--- response_body eval
['{"detail":[{"type":"missing","loc":["body","action"],"msg":"Field required","input":{}}]}',
 '{"detail":[{"type":"string_type","loc":["body","action"],"msg":"Input should be a valid string","input":1}]}',
 '{"detail":[{"type":"string_type","loc":["body","action"],"msg":"Input should be a valid string","input":null}]}']



=== TEST 16: F2 path and body errors together, path first
--- request
PUT /api/friends/status/x
{"action":false}
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"int_parsing","loc":["path","requester_user_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"x"},{"type":"string_type","loc":["body","action"],"msg":"Input should be a valid string","input":false}]}



=== TEST 17: F2 malformed JSON wins over a bad path and a missing token
--- request
PUT /api/friends/status/x
{action: accept}
--- error_code: 422
--- response_body_like: ^\{"detail":\[\{"type":"json_invalid","loc":\["body"\]



=== TEST 18: F2 validation comes after authentication
--- request
PUT /api/friends/status/x
{"action":"accept"}
--- error_code: 401
--- response_body chomp
{"detail":"Not authenticated"}



=== TEST 19: F5 path ids that are not integers
--- request eval
["DELETE /api/friends/request/abc", "DELETE /api/friends/request/5x",
 "DELETE /api/friends/request/99999999999999999999999"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[422, 422, 422]
--- response_body eval
['{"detail":[{"type":"int_parsing","loc":["path","target_user_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"abc"}]}',
 '{"detail":[{"type":"int_parsing","loc":["path","target_user_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"5x"}]}',
 qr/^\{"detail":\[\{"type":"[a-z_]+","loc":\["path","target_user_id"\],/]



=== TEST 20: F5 path ids that name nobody
--- request eval
["DELETE /api/friends/request/0", "DELETE /api/friends/request/-1",
 "DELETE /api/friends/request/2147483648",
 "DELETE /api/friends/request/9223372036854775807"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[400, 400, 400, 400]
--- response_body eval
[('{"detail":"Friend request not found or already processed"}') x 4]



=== TEST 21: F5 a body is ignored
--- request
DELETE /api/friends/request/$TEST_NGINX_D
{"whatever": [
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"message":"Friend request cancelled successfully","target_user_id":$TEST_NGINX_D}



=== TEST 22: every endpoint wants a token
--- request eval
["POST /api/friends/request\n{\"user_id_2\":1}",
 "PUT /api/friends/status/1\n{\"action\":\"accept\"}",
 "GET /api/friends/list", "GET /api/friends/requests",
 "DELETE /api/friends/request/1", "GET /api/friends/search?query=a"]
--- error_code eval
[(401) x 6]
--- response_body eval
[('{"detail":"Not authenticated"}') x 6]



=== TEST 23: an expired token, another scheme
--- request eval
["GET /api/friends/list", "GET /api/friends/list"]
--- more_headers eval
["Authorization: Bearer $ENV{TEST_NGINX_EXPIRED}",
 "Authorization: Basic $ENV{TEST_NGINX_A_TOKEN}"]
--- error_code eval
[401, 401]
--- response_headers eval
[("WWW-Authenticate: Bearer") x 2]



=== TEST 24: routing: unknown paths are JSON 404s
--- request eval
["GET /api/friends/nothing/here", "GET /api/friends",
 "PUT /api/friends/status/\n{}", "GET /api/friends/list/",
 "DELETE /api/friends/request/1/2"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[(404) x 5]
--- response_body eval
[('{"detail":"Not Found"}') x 5]



=== TEST 25: routing: known paths, wrong method: JSON 405 with Allow
(DELETE /api/friends/{friend_user_id} takes every one-segment path)
--- request eval
["GET /api/friends/request", "PUT /api/friends/block\n{}",
 "POST /api/friends/list", "GET /api/friends/status/1",
 "PUT /api/friends/request/1\n{}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[(405) x 5]
--- response_headers eval
["Allow: DELETE, POST", "Allow: DELETE, POST", "Allow: DELETE, GET",
 "Allow: PUT", "Allow: DELETE"]
--- response_body eval
[('{"detail":"Method Not Allowed"}') x 5]
