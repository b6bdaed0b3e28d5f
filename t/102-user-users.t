# User service, /api/users: search (U7), lookups (U8, U9), the
# service-to-service endpoints (U10, U11) and where they answer.

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

# names that only this run's users match
our $Tag = unique_name('q');

# the images' directory (made at start) inside html/: Test::Nginx::Socket
# removes only the directories it made itself from the server root
our $Config = <<'EOF';
chat_user_upload_dir html/uploads;
location /api/ { chat_user; }
location /internal/ { chat_internal on; rewrite ^/internal(/.*)$ $1 break; chat_user; }
EOF

workers(2);
master_on();
no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;
    chat_block($block);
    $block->set_value(config => $Config) unless defined $block->config;
});

run_tests();

__DATA__

=== TEST 1: search by username or display name, caller excluded
--- init
$main::Me = ChatStack::register_user(username => "${main::Tag}me");
$main::A = ChatStack::register_user(username => "${main::Tag}a");
$main::B = ChatStack::register_user(username => "zz" . ChatStack::unique_name('b'),
                                    display_name => "The \U$main::Tag\E B");
$main::C = ChatStack::register_user(username => "${main::Tag}c");
$ENV{TEST_NGINX_TOKEN} = ChatStack::login_user($main::Me);
$ENV{TEST_NGINX_TAG} = $main::Tag;
$ENV{TEST_NGINX_A} = $main::A->{id};
$ENV{TEST_NGINX_B} = $main::B->{id};
$ENV{TEST_NGINX_C} = $main::C->{id};
--- request
GET /api/users/search?query=$TEST_NGINX_TAG
--- more_headers
Authorization: Bearer $TEST_NGINX_TOKEN
--- error_code: 200
--- response_body_like: ^\{"users":\[\{"id":$TEST_NGINX_A,"username":"\w+a",[^}]+\},\{"id":$TEST_NGINX_B,"username":"zz\w+","display_name":"The \w+ B",[^}]+\},\{"id":$TEST_NGINX_C,[^}]+\}\],"total_count":3\}$



=== TEST 2: limit cuts the list, not the total
--- request
GET /api/users/search?query=$TEST_NGINX_TAG&limit=1
--- more_headers
Authorization: Bearer $TEST_NGINX_TOKEN
--- error_code: 200
--- response_body_like: ^\{"users":\[\{"id":$TEST_NGINX_A,[^\]]+\],"total_count":3\}$



=== TEST 3: search validation
--- request eval
["GET /api/users/search", "GET /api/users/search?query=",
 "GET /api/users/search?query=" . ("x" x 51),
 "GET /api/users/search?query=a&limit=0",
 "GET /api/users/search?query=a&limit=51",
 "GET /api/users/search?query=a&limit=ten"]
--- more_headers
Authorization: Bearer $TEST_NGINX_TOKEN
--- error_code eval
[422, 422, 422, 422, 422, 422]
--- response_body eval
['{"detail":[{"type":"missing","loc":["query","query"],"msg":"Field required","input":null}]}',
 '{"detail":[{"type":"string_too_short","loc":["query","query"],"msg":"String should have at least 1 character","input":"","ctx":{"min_length":1}}]}',
 '{"detail":[{"type":"string_too_long","loc":["query","query"],"msg":"String should have at most 50 characters","input":"' . ("x" x 51) . '","ctx":{"max_length":50}}]}',
 '{"detail":[{"type":"greater_than_equal","loc":["query","limit"],"msg":"Input should be greater than or equal to 1","input":"0","ctx":{"ge":1}}]}',
 '{"detail":[{"type":"less_than_equal","loc":["query","limit"],"msg":"Input should be less than or equal to 50","input":"51","ctx":{"le":50}}]}',
 '{"detail":[{"type":"int_parsing","loc":["query","limit"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"ten"}]}']



=== TEST 4: search needs a token; injection strings are just text
--- request eval
["GET /api/users/search?query=a",
 "GET /api/users/search?query=%27%20OR%201%3D1%20--%20"]
--- more_headers eval
["", 'Authorization: Bearer $TEST_NGINX_TOKEN']
--- error_code eval
[401, 200]
--- response_body eval
['{"detail":"Not authenticated"}', '{"users":[],"total_count":0}']



=== TEST 5: several users, ascending, missing ids dropped, duplicates once
--- request
GET /api/users?user_ids=%20$TEST_NGINX_C,,$TEST_NGINX_A%20,2147483600,$TEST_NGINX_A
--- more_headers
Authorization: Bearer $TEST_NGINX_TOKEN
--- error_code: 200
--- response_body_like: ^\[\{"id":$TEST_NGINX_A,[^}]+\},\{"id":$TEST_NGINX_C,[^}]+\}\]$



=== TEST 6: U9 errors (DEV-3: no ids is a 400, not a 500)
--- request eval
["GET /api/users", "GET /api/users?user_ids=", "GET /api/users?user_ids=,%20,",
 "GET /api/users?user_ids=1,x", "GET /api/users?user_ids=99999999999999999999"]
--- more_headers
Authorization: Bearer $TEST_NGINX_TOKEN
--- error_code eval
[422, 400, 400, 400, 400]
--- response_body eval
['{"detail":[{"type":"missing","loc":["query","user_ids"],"msg":"Field required","input":null}]}',
 '{"detail":"At least one user ID is required"}',
 '{"detail":"At least one user ID is required"}',
 '{"detail":"Invalid user ID format"}',
 '{"detail":"Invalid user ID format"}']



=== TEST 7: one user; GET /api/users/batch falls into it (422)
--- request eval
['GET /api/users/$TEST_NGINX_A', "GET /api/users/batch",
 "GET /api/users/-5", "GET /api/users/99999999999999999999999"]
--- more_headers
Authorization: Bearer $TEST_NGINX_TOKEN
--- error_code eval
[200, 422, 422, 422]
--- response_body_like eval
['^\{"id":$TEST_NGINX_A,"username":"\w+a","display_name":null,"status_message":null,"is_online":false,"last_seen_at":null\}$',
 '"type":"int_parsing","loc":\["path","user_id"\]',
 '"message":"user_id must be a positive integer".*"value":-5',
 '"type":"int_parsing"']



=== TEST 8: batch and exists answer without a token on the service listener
--- request eval
["POST /internal/api/users/batch\n" . '{"user_ids":[$TEST_NGINX_C,$TEST_NGINX_A,2147483600]}',
 'GET /internal/api/users/$TEST_NGINX_A/exists',
 "GET /internal/api/users/-3/exists",
 "GET /internal/api/users/2147483600/exists"]
--- error_code eval
[200, 200, 200, 200]
--- response_body_like eval
['^\[\{"id":$TEST_NGINX_A,[^}]+\},\{"id":$TEST_NGINX_C,[^}]+\}\]$',
 '^\{"user_id":$TEST_NGINX_A,"exists":true\}$',
 '^\{"user_id":-3,"exists":false\}$',
 '^\{"user_id":2147483600,"exists":false\}$']



=== TEST 9: elsewhere they need a caller
--- request eval
["POST /api/users/batch\n{\"user_ids\":[1]}", "GET /api/users/1/exists"]
--- error_code eval
[401, 401]



=== TEST 10: ... and work with one
--- request eval
["POST /api/users/batch\n" . '{"user_ids":[$TEST_NGINX_A]}',
 'GET /api/users/$TEST_NGINX_A/exists']
--- more_headers
Authorization: Bearer $TEST_NGINX_TOKEN
--- error_code eval
[200, 200]



=== TEST 11: batch validation
--- request eval
["POST /internal/api/users/batch\n{}",
 "POST /internal/api/users/batch\n{\"user_ids\":[]}",
 "POST /internal/api/users/batch\n{\"user_ids\":[" . CORE::join(',', 1 .. 101) . "]}",
 "POST /internal/api/users/batch\n{\"user_ids\":[1,\"x\",2.5,null]}",
 "POST /internal/api/users/batch\n{\"user_ids\":\"1,2\"}",
 "POST /internal/api/users/batch\n{\"user_ids\":[1e300]}",
 "GET /internal/api/users/abc/exists"]
--- error_code eval
[422, 422, 422, 422, 422, 422, 422]
--- response_body eval
['{"detail":[{"type":"missing","loc":["body","user_ids"],"msg":"Field required","input":{}}]}',
 '{"detail":[{"type":"too_short","loc":["body","user_ids"],"msg":"List should have at least 1 item after validation, not 0","input":[]}]}',
 '{"detail":[{"type":"too_long","loc":["body","user_ids"],"msg":"List should have at most 100 items after validation, not 101","input":[' . CORE::join(',', 1 .. 101) . ']}]}',
 '{"detail":[{"type":"int_parsing","loc":["body","1"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"x"},{"type":"int_from_float","loc":["body","2"],"msg":"Input should be a valid integer, got a number with a fractional part","input":2.5},{"type":"int_type","loc":["body","3"],"msg":"Input should be a valid integer","input":null}]}',
 '{"detail":[{"type":"list_type","loc":["body","user_ids"],"msg":"Input should be a valid list","input":"1,2"}]}',
 '{"detail":[{"type":"int_parsing_size","loc":["body","0"],"msg":"Unable to parse input string as an integer, exceeded maximum size","input":1e+300}]}',
 '{"detail":[{"type":"int_parsing","loc":["path","user_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"abc"}]}']
