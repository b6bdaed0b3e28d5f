# Chat service, /api/chat-rooms: get or create the room of a pair (C2),
# one room (C3) and the caller's rooms (C1) with every error the contract
# lists; participants carry the real usernames (DEV-4).

use strict;
use warnings;

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

# messages of this run only: MariaDB's ids start again with every run
$ENV{TEST_NGINX_MONGO_DATABASE} = unique_name('chat_t');

# TEST_NGINX_<X>, _<X>_NAME and _<X>_TOKEN, ids ascending from A to E
env_users('cr', qw(A B C D E));

# a valid token of an id that has no users row
$ENV{TEST_NGINX_GHOST} = 2147000000 + $$ % 400000;
$ENV{TEST_NGINX_GHOST_TOKEN} = user_token($ENV{TEST_NGINX_GHOST});

# the room of a pair, into TEST_NGINX_<var>
sub room_of {
    my ($var, $x, $y) = @_;
    my ($lo, $hi) = $x < $y ? ($x, $y) : ($y, $x);
    my $id = sql("SELECT id FROM chat_rooms WHERE user_1_id = $lo "
                 . "AND user_2_id = $hi");
    die "no room $lo-$hi\n" unless $id =~ /^\d+$/;
    $ENV{"TEST_NGINX_$var"} = $id;
    return $id;
}

our $Config = <<'EOF';
location /api/ { chat_msg; }
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

=== TEST 1: C2 creates the room of a pair, the smaller id first
--- request
GET /api/chat-rooms/check/$TEST_NGINX_B
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body_like: ^\{"id":\d+,"user_1_id":$TEST_NGINX_A,"user_2_id":$TEST_NGINX_B,"room_type":"direct","created_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d","updated_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d","participants":\[\{"id":$TEST_NGINX_A,"username":"$TEST_NGINX_A_NAME"\},\{"id":$TEST_NGINX_B,"username":"$TEST_NGINX_B_NAME"\}\],"last_message":null,"unread_count":0\}$
--- no_error_log
[error]



=== TEST 2: the other member gets the same room, itself first, updated_at now
--- init
my $id = main::room_of('AB', $ENV{TEST_NGINX_A}, $ENV{TEST_NGINX_B});
main::sql("UPDATE chat_rooms SET created_at = '2020-01-02 03:04:05', "
          . "updated_at = '2020-01-02 03:04:05' WHERE id = $id");
--- request
GET /api/chat-rooms/check/$TEST_NGINX_A
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body_like: ^\{"id":$TEST_NGINX_AB,"user_1_id":$TEST_NGINX_A,"user_2_id":$TEST_NGINX_B,"room_type":"direct","created_at":"2020-01-02T03:04:05","updated_at":"(?!2020)\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d","participants":\[\{"id":$TEST_NGINX_B,"username":"$TEST_NGINX_B_NAME"\},\{"id":$TEST_NGINX_A,"username":"$TEST_NGINX_A_NAME"\}\],"last_message":null,"unread_count":0\}$



=== TEST 3: still one row for the pair
--- init
my $n = main::sql("SELECT COUNT(*) FROM chat_rooms WHERE "
    . "user_1_id = $ENV{TEST_NGINX_A} AND user_2_id = $ENV{TEST_NGINX_B}");
die "rows: $n\n" unless $n == 1;
--- request
GET /api/chat-rooms/check/$TEST_NGINX_B
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body_like: ^\{"id":$TEST_NGINX_AB,



=== TEST 4: a room with oneself
--- request
GET /api/chat-rooms/check/$TEST_NGINX_A
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":{"error":"CANNOT_CHAT_SELF","message":"Cannot create chat room with yourself","details":null,"status_code":422}}



=== TEST 5: participant ids that are not positive integers
--- request eval
["GET /api/chat-rooms/check/0", "GET /api/chat-rooms/check/-7",
 "GET /api/chat-rooms/check/abc", "GET /api/chat-rooms/check/1.5",
 "GET /api/chat-rooms/check/99999999999999999999",
 "GET /api/chat-rooms/check/1%20OR%201=1"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[422, 422, 422, 422, 422, 422]
--- response_body eval
['{"detail":{"error":"validation_error","message":"participant_id must be a positive integer","validation_errors":[{"field":"participant_id","message":"Must be a positive integer","value":0}],"status_code":422}}',
 '{"detail":{"error":"validation_error","message":"participant_id must be a positive integer","validation_errors":[{"field":"participant_id","message":"Must be a positive integer","value":-7}],"status_code":422}}',
 '{"detail":[{"type":"int_parsing","loc":["path","participant_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"abc"}]}',
 '{"detail":[{"type":"int_parsing","loc":["path","participant_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"1.5"}]}',
 '{"detail":[{"type":"int_parsing","loc":["path","participant_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"99999999999999999999"}]}',
 '{"detail":[{"type":"int_parsing","loc":["path","participant_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"1 OR 1=1"}]}']



=== TEST 6: a participant without a users row
--- request
GET /api/chat-rooms/check/$TEST_NGINX_GHOST
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 404
--- response_body chomp
{"detail":{"error":"resource_not_found","message":"User not found","details":{"resource":"User"},"status_code":404}}



=== TEST 7: a caller without a users row is "Unknown" (rooms do not check it)
--- request
GET /api/chat-rooms/check/$TEST_NGINX_A
--- more_headers
Authorization: Bearer $TEST_NGINX_GHOST_TOKEN
--- error_code: 200
--- response_body_like: "participants":\[\{"id":$TEST_NGINX_GHOST,"username":"Unknown"\},\{"id":$TEST_NGINX_A,"username":"$TEST_NGINX_A_NAME"\}\]



=== TEST 8: C3 for a member
--- request
GET /api/chat-rooms/$TEST_NGINX_AB
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body_like: ^\{"id":$TEST_NGINX_AB,"user_1_id":$TEST_NGINX_A,"user_2_id":$TEST_NGINX_B,"room_type":"direct","created_at":"2020-01-02T03:04:05","updated_at":"[^"]+","participants":\[\{"id":$TEST_NGINX_B,"username":"$TEST_NGINX_B_NAME"\},\{"id":$TEST_NGINX_A,"username":"$TEST_NGINX_A_NAME"\}\],"last_message":null,"unread_count":0\}$



=== TEST 9: C3 does not touch updated_at
--- init
main::sql("UPDATE chat_rooms SET updated_at = '2020-05-06 07:08:09' "
          . "WHERE id = $ENV{TEST_NGINX_AB}");
--- request eval
['GET /api/chat-rooms/$TEST_NGINX_AB', 'GET /api/chat-rooms/$TEST_NGINX_AB']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[200, 200]
--- response_body_like eval
['"updated_at":"2020-05-06T07:08:09"', '"updated_at":"2020-05-06T07:08:09"']



=== TEST 10: C3 for someone else
--- request
GET /api/chat-rooms/$TEST_NGINX_AB
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code: 403
--- response_body chomp
{"detail":{"error":"authorization_error","message":"Access denied to this chat room","details":null,"status_code":403}}



=== TEST 11: C3 of rooms that do not exist, and ids that are none
--- request eval
["GET /api/chat-rooms/2147483647", "GET /api/chat-rooms/9223372036854775807",
 "GET /api/chat-rooms/0", "GET /api/chat-rooms/-1",
 "GET /api/chat-rooms/x1", "GET /api/chat-rooms/9223372036854775808"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[404, 404, 422, 422, 422, 422]
--- response_body eval
['{"detail":{"error":"resource_not_found","message":"Chat room not found","details":{"resource":"Chat room"},"status_code":404}}',
 '{"detail":{"error":"resource_not_found","message":"Chat room not found","details":{"resource":"Chat room"},"status_code":404}}',
 '{"detail":{"error":"validation_error","message":"room_id must be a positive integer","validation_errors":[{"field":"room_id","message":"Must be a positive integer","value":0}],"status_code":422}}',
 '{"detail":{"error":"validation_error","message":"room_id must be a positive integer","validation_errors":[{"field":"room_id","message":"Must be a positive integer","value":-1}],"status_code":422}}',
 '{"detail":[{"type":"int_parsing","loc":["path","room_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"x1"}]}',
 '{"detail":[{"type":"int_parsing","loc":["path","room_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"9223372036854775808"}]}']



=== TEST 12: C1 orders by updated_at, newest first, then by id
--- init
for my $who (qw(C D E)) {
    my ($s) = ChatStack::api(GET => "/api/chat-rooms/check/$ENV{\"TEST_NGINX_$who\"}",
                             $ENV{TEST_NGINX_A_TOKEN});
    die "C2 $who: $s\n" unless $s == 200;
    main::room_of("A$who", $ENV{TEST_NGINX_A}, $ENV{"TEST_NGINX_$who"});
}
main::room_of('AG', $ENV{TEST_NGINX_A}, $ENV{TEST_NGINX_GHOST});
my %at = (AB => '2021-01-01 00:00:00', AC => '2023-01-01 00:00:00',
          AD => '2022-01-01 00:00:00', AE => '2021-01-01 00:00:00',
          AG => '2019-01-01 00:00:00');
main::sql("UPDATE chat_rooms SET updated_at = '$at{$_}' WHERE id = "
          . $ENV{"TEST_NGINX_$_"}) for keys %at;
--- request
GET /api/chat-rooms
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body_like: ^\[\{"id":$TEST_NGINX_AC,"user_1_id":$TEST_NGINX_A,"user_2_id":$TEST_NGINX_C,"room_type":"direct","created_at":"[^"]+","updated_at":"2023-01-01T00:00:00","participants":\[\{"id":$TEST_NGINX_A,"username":"$TEST_NGINX_A_NAME"\},\{"id":$TEST_NGINX_C,"username":"$TEST_NGINX_C_NAME"\}\],"last_message":null,"unread_count":0\},\{"id":$TEST_NGINX_AD,[^{]+\{[^}]+\},\{[^}]+\}\],"last_message":null,"unread_count":0\},\{"id":$TEST_NGINX_AE,[^{]+\{[^}]+\},\{[^}]+\}\],"last_message":null,"unread_count":0\},\{"id":$TEST_NGINX_AB,[^{]+\{[^}]+\},\{[^}]+\}\],"last_message":null,"unread_count":0\},\{"id":$TEST_NGINX_AG,[^{]+\{"id":$TEST_NGINX_A,"username":"$TEST_NGINX_A_NAME"\},\{"id":$TEST_NGINX_GHOST,"username":"Unknown"\}\],"last_message":null,"unread_count":0\}\]$



=== TEST 13: C1 pages with skip and limit
--- request eval
["GET /api/chat-rooms?skip=1&limit=2", "GET /api/chat-rooms?skip=4",
 "GET /api/chat-rooms?skip=5", "GET /api/chat-rooms?limit=1",
 "GET /api/chat-rooms?skip=9223372036854775807"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[200, 200, 200, 200, 200]
--- response_body_like eval
['^\[\{"id":$TEST_NGINX_AD,"user_1_id"(?:(?!"user_1_id").)*\},\{"id":$TEST_NGINX_AE,"user_1_id"(?:(?!"user_1_id").)*\}\]$',
 '^\[\{"id":$TEST_NGINX_AG,"user_1_id"(?:(?!"user_1_id").)*\}\]$',
 '^\[\]$',
 '^\[\{"id":$TEST_NGINX_AC,"user_1_id"(?:(?!"user_1_id").)*\}\]$',
 '^\[\]$']



=== TEST 14: C1 query validation
--- request eval
["GET /api/chat-rooms?limit=0", "GET /api/chat-rooms?limit=101",
 "GET /api/chat-rooms?skip=-1", "GET /api/chat-rooms?limit=ten&skip=x"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[422, 422, 422, 422]
--- response_body eval
['{"detail":[{"type":"greater_than_equal","loc":["query","limit"],"msg":"Input should be greater than or equal to 1","input":"0","ctx":{"ge":1}}]}',
 '{"detail":[{"type":"less_than_equal","loc":["query","limit"],"msg":"Input should be less than or equal to 100","input":"101","ctx":{"le":100}}]}',
 '{"detail":[{"type":"greater_than_equal","loc":["query","skip"],"msg":"Input should be greater than or equal to 0","input":"-1","ctx":{"ge":0}}]}',
 '{"detail":[{"type":"int_parsing","loc":["query","skip"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"x"},{"type":"int_parsing","loc":["query","limit"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"ten"}]}']



=== TEST 15: C1 shows the newest message and what the caller has not read
--- init
for my $m (['C', 'first from C'], ['C', 'second from C'], ['A', 'reply from A']) {
    my ($s) = ChatStack::api(POST => "/api/messages/$ENV{TEST_NGINX_AC}",
                             $ENV{"TEST_NGINX_$m->[0]_TOKEN"},
                             { content => $m->[1] });
    die "send: $s\n" unless $s == 201;
}
--- request eval
["GET /api/chat-rooms?limit=1", "GET /api/chat-rooms?limit=1"]
--- more_headers eval
['Authorization: Bearer $TEST_NGINX_A_TOKEN',
 'Authorization: Bearer $TEST_NGINX_C_TOKEN']
--- error_code eval
[200, 200]
--- response_body_like eval
['^\[\{"id":$TEST_NGINX_AC,.*"updated_at":"(?!2023)[^"]+",.*"last_message":\{"id":"[0-9a-f]{24}","user_id":$TEST_NGINX_A,"content":"reply from A","message_type":"text","created_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?"\},"unread_count":2\}\]$',
 '^\[\{"id":$TEST_NGINX_AC,.*"participants":\[\{"id":$TEST_NGINX_C,"username":"$TEST_NGINX_C_NAME"\},\{"id":$TEST_NGINX_A,"username":"$TEST_NGINX_A_NAME"\}\],"last_message":\{[^}]+"content":"reply from A"[^}]+\},"unread_count":1\}\]$']



=== TEST 16: C3 shows them too
--- request
GET /api/chat-rooms/$TEST_NGINX_AC
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body_like: "last_message":\{"id":"[0-9a-f]{24}","user_id":$TEST_NGINX_A,"content":"reply from A","message_type":"text","created_at":"[^"]+"\},"unread_count":2\}$



=== TEST 17: every endpoint wants a token
--- request eval
["GET /api/chat-rooms", "GET /api/chat-rooms/check/1",
 "GET /api/chat-rooms/1"]
--- error_code eval
[401, 401, 401]
--- response_headers eval
[("WWW-Authenticate: Bearer") x 3]
--- response_body eval
['{"detail":"Not authenticated"}', '{"detail":"Not authenticated"}',
 '{"detail":"Not authenticated"}']



=== TEST 18: a forged token is refused too
--- request
GET /api/chat-rooms
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN.x
--- error_code: 401



=== TEST 19: wrong methods and unknown paths
--- request eval
["POST /api/chat-rooms", "DELETE /api/chat-rooms/1",
 "GET /api/chat-rooms/1/members", "GET /api/chat-rooms/check"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[405, 405, 404, 422]
--- response_body eval
['{"detail":"Method Not Allowed"}', '{"detail":"Method Not Allowed"}',
 '{"detail":"Not Found"}',
 '{"detail":[{"type":"int_parsing","loc":["path","room_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"check"}]}']



=== TEST 20: 405 says what is allowed
--- request
POST /api/chat-rooms
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 405
--- response_headers
Allow: GET
