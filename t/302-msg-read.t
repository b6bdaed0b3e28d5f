# Chat service: read receipts (C6, DEV-1: the route works) and unread
# counts (C7, DEV-8: always current), as in rooms (C1, C3).

use strict;
use warnings;

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

# messages of this run only: MariaDB's ids start again with every run
$ENV{TEST_NGINX_MONGO_DATABASE} = unique_name('chat_t');

env_users('rd', qw(A B C));

for my $pair (['AB', 'B'], ['AC', 'C']) {
    my $other = $ENV{"TEST_NGINX_$pair->[1]"};
    $ENV{"TEST_NGINX_$pair->[0]"} = sql("INSERT INTO chat_rooms (user_1_id, "
        . "user_2_id, created_at, updated_at) VALUES ($ENV{TEST_NGINX_A}, "
        . "$other, UTC_TIMESTAMP(), UTC_TIMESTAMP()); "
        . "SELECT LAST_INSERT_ID()");
}

$ENV{TEST_NGINX_NOROOM} = 2147483000;
$ENV{TEST_NGINX_NOMSG} = 'ffffffffffffffffffffffff';

# a message; its id in TEST_NGINX_<var>
sub send_msg {
    my ($var, $who, $room, $content) = @_;
    my ($s, $b) = api(POST => "/api/messages/$room",
                      $ENV{"TEST_NGINX_${who}_TOKEN"}, { content => $content });
    die "send: $s\n" unless $s == 201;
    $ENV{"TEST_NGINX_$var"} = $b->{id};
    return $b->{id};
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

=== TEST 1: unread counts: the other member's messages, not one's own
--- init
main::send_msg('B1', 'B', $ENV{TEST_NGINX_AB}, 'b1');
main::send_msg('B2', 'B', $ENV{TEST_NGINX_AB}, 'b2');
main::send_msg('A1', 'A', $ENV{TEST_NGINX_AB}, 'a1');
main::send_msg('B3', 'B', $ENV{TEST_NGINX_AB}, 'b3');
main::send_msg('C1', 'C', $ENV{TEST_NGINX_AC}, 'c1');
--- request eval
['GET /api/messages/room/$TEST_NGINX_AB/unread-count',
 'GET /api/messages/room/$TEST_NGINX_AC/unread-count']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[200, 200]
--- response_body eval
['{"unread_count":3}', '{"unread_count":1}']
--- no_error_log
[error]



=== TEST 2: the other member
--- request
GET /api/messages/room/$TEST_NGINX_AB/unread-count
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body chomp
{"unread_count":1}



=== TEST 3: C6 records each id once, unknown and invalid ids too
--- request
POST /api/messages/read
{"room_id":$TEST_NGINX_AB,"message_ids":["$TEST_NGINX_B1","$TEST_NGINX_B1","$TEST_NGINX_A1","not-an-id","$TEST_NGINX_NOMSG"]}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"success":true,"read_count":4,"message":"4 messages marked as read"}
--- no_error_log
[error]



=== TEST 4: the count follows at once (DEV-8); MessagesRead lists the ids as given
--- init
my ($key, $v) = main::event_with('message.events', "\"message_ids\": [\"$ENV{TEST_NGINX_B1}\"");
$key eq $ENV{TEST_NGINX_AB} or die "key: $key\n";
$v =~ /^\{"timestamp": "[^"]+", "room_id": $ENV{TEST_NGINX_AB}, "user_id": $ENV{TEST_NGINX_A}, "message_ids": \["$ENV{TEST_NGINX_B1}", "$ENV{TEST_NGINX_B1}", "$ENV{TEST_NGINX_A1}", "not-an-id", "$ENV{TEST_NGINX_NOMSG}"\], "__event_type__": "MessagesRead"\}$/
    or die "event: $v\n";
--- request
GET /api/messages/room/$TEST_NGINX_AB/unread-count
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"unread_count":2}



=== TEST 5: marking again records nothing new
--- request
POST /api/messages/read
{"room_id":$TEST_NGINX_AB,"message_ids":["not-an-id","$TEST_NGINX_B1"]}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"success":true,"read_count":0,"message":"0 messages marked as read"}



=== TEST 6: the rest, and the counts are zero everywhere
--- request eval
['POST /api/messages/read
{"room_id":"$TEST_NGINX_AB","message_ids":["$TEST_NGINX_B3","$TEST_NGINX_B2"]}',
 'GET /api/messages/room/$TEST_NGINX_AB/unread-count',
 'GET /api/chat-rooms/$TEST_NGINX_AB']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[200, 200, 200]
--- response_body_like eval
['^\{"success":true,"read_count":2,"message":"2 messages marked as read"\}$',
 '^\{"unread_count":0\}$', '"last_message":\{[^}]+"content":"b3"[^}]+\},"unread_count":0\}$']



=== TEST 7: a new message counts at once, a deleted one no more
--- init
main::send_msg('B4', 'B', $ENV{TEST_NGINX_AB}, 'b4');
my ($s, $b) = ChatStack::api(GET => "/api/messages/room/$ENV{TEST_NGINX_AB}/unread-count",
                             $ENV{TEST_NGINX_A_TOKEN});
$b->{unread_count} == 1 or die "after send: $s\n";
($s) = ChatStack::api(DELETE => "/api/messages/$ENV{TEST_NGINX_B4}",
                      $ENV{TEST_NGINX_B_TOKEN});
$s == 200 or die "delete: $s\n";
--- request
GET /api/messages/room/$TEST_NGINX_AB/unread-count
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"unread_count":0}



=== TEST 8: ids of another room's messages are refused, nothing recorded
--- request eval
['POST /api/messages/read
{"room_id":$TEST_NGINX_AB,"message_ids":["$TEST_NGINX_B1","$TEST_NGINX_C1"]}',
 'GET /api/messages/room/$TEST_NGINX_AC/unread-count']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[400, 200]
--- response_body eval
['{"detail":{"error":"INVALID_INPUT","message":"All messages must be from the same room","details":null,"status_code":400}}',
 '{"unread_count":1}']



=== TEST 9: no ids, bad ids, no room
--- request eval
['POST /api/messages/read
{"room_id":$TEST_NGINX_AB,"message_ids":[]}',
'POST /api/messages/read
{"room_id":0,"message_ids":[]}',
'POST /api/messages/read
{"room_id":0,"message_ids":["x"]}',
'POST /api/messages/read
{"room_id":-4,"message_ids":["x"]}',
'POST /api/messages/read
{"room_id":$TEST_NGINX_NOROOM,"message_ids":["x"]}']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[400, 400, 422, 422, 404]
--- response_body eval
['{"detail":{"error":"INVALID_INPUT","message":"Message IDs cannot be empty","details":null,"status_code":400}}',
 '{"detail":{"error":"INVALID_INPUT","message":"Message IDs cannot be empty","details":null,"status_code":400}}',
 '{"detail":{"error":"validation_error","message":"room_id must be a positive integer","validation_errors":[{"field":"room_id","message":"Must be a positive integer","value":0}],"status_code":422}}',
 '{"detail":{"error":"validation_error","message":"room_id must be a positive integer","validation_errors":[{"field":"room_id","message":"Must be a positive integer","value":-4}],"status_code":422}}',
 '{"detail":{"error":"resource_not_found","message":"Chat room not found","details":{"resource":"Chat room"},"status_code":404}}']



=== TEST 10: someone else's room
--- request
POST /api/messages/read
{"room_id":$TEST_NGINX_AB,"message_ids":["$TEST_NGINX_B1"]}
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code: 403
--- response_body chomp
{"detail":{"error":"authorization_error","message":"Access denied to this chat room","details":null,"status_code":403}}



=== TEST 11: the schema: missing fields, wrong types, every item reported
--- request eval
['POST /api/messages/read
{}',
'POST /api/messages/read
{"room_id":"x","message_ids":"abc"}',
'POST /api/messages/read
{"room_id":1.5,"message_ids":[1,"a",null,{"$ne":null}]}',
"POST /api/messages/read\n{\"room_id\":1,\"message_ids\":[\"ok\",\"\xff\"]}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[422, 422, 422, 422]
--- response_body eval
['{"detail":[{"type":"missing","loc":["body","room_id"],"msg":"Field required","input":{}},{"type":"missing","loc":["body","message_ids"],"msg":"Field required","input":{}}]}',
 '{"detail":[{"type":"int_parsing","loc":["body","room_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"x"},{"type":"list_type","loc":["body","message_ids"],"msg":"Input should be a valid list","input":"abc"}]}',
 '{"detail":[{"type":"int_from_float","loc":["body","room_id"],"msg":"Input should be a valid integer, got a number with a fractional part","input":1.5},{"type":"string_type","loc":["body","message_ids",0],"msg":"Input should be a valid string","input":1},{"type":"string_type","loc":["body","message_ids",2],"msg":"Input should be a valid string","input":null},{"type":"string_type","loc":["body","message_ids",3],"msg":"Input should be a valid string","input":{"$ne":null}}]}',
 '{"detail":[{"type":"string_unicode","loc":["body","message_ids",1],"msg":"Input should be a valid string, unable to parse raw data as a unicode string","input":null}]}']



=== TEST 12: many ids at once
--- request eval
my @ids = map { sprintf('%024x', 0xabc000 + $_) } 1 .. 1000;
"POST /api/messages/read\n"
. '{"room_id":$TEST_NGINX_AC,"message_ids":[' . CORE::join(',', map { "\"$_\"" } @ids, @ids) . ']}'
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code: 200
--- response_body chomp
{"success":true,"read_count":1000,"message":"1000 messages marked as read"}



=== TEST 13: C6 wants a token; it is not C4 (DEV-1)
--- request eval
['POST /api/messages/read
{"room_id":1,"message_ids":["x"]}',
'GET /api/messages/read']
--- more_headers eval
['', 'Authorization: Bearer $TEST_NGINX_A_TOKEN']
--- error_code eval
[401, 422]



=== TEST 14: C7 errors
--- request eval
['GET /api/messages/room/$TEST_NGINX_AC/unread-count',
 'GET /api/messages/room/$TEST_NGINX_NOROOM/unread-count',
 'GET /api/messages/room/0/unread-count', 'GET /api/messages/room/x/unread-count',
 'GET /api/messages/room/1/unread-count']
--- more_headers eval
['Authorization: Bearer $TEST_NGINX_B_TOKEN', 'Authorization: Bearer $TEST_NGINX_B_TOKEN',
 'Authorization: Bearer $TEST_NGINX_B_TOKEN', 'Authorization: Bearer $TEST_NGINX_B_TOKEN', '']
--- error_code eval
[403, 404, 422, 422, 401]
--- response_body eval
['{"detail":{"error":"authorization_error","message":"Access denied to this chat room","details":null,"status_code":403}}',
 '{"detail":{"error":"resource_not_found","message":"Chat room not found","details":{"resource":"Chat room"},"status_code":404}}',
 '{"detail":{"error":"validation_error","message":"room_id must be a positive integer","validation_errors":[{"field":"room_id","message":"Must be a positive integer","value":0}],"status_code":422}}',
 '{"detail":[{"type":"int_parsing","loc":["path","room_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"x"}]}',
 '{"detail":"Not authenticated"}']
