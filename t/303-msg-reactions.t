# Chat service: message reactions ([DESIGN] C11): list, add (idempotent:
# 201 then 200), remove, with the contract's errors and events.

use strict;
use warnings;

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

# messages of this run only: MariaDB's ids start again with every run
$ENV{TEST_NGINX_MONGO_DATABASE} = unique_name('chat_t');

env_users('re', qw(A B C));

$ENV{TEST_NGINX_AB} = sql("INSERT INTO chat_rooms (user_1_id, user_2_id, "
    . "created_at, updated_at) VALUES ($ENV{TEST_NGINX_A}, "
    . "$ENV{TEST_NGINX_B}, UTC_TIMESTAMP(), UTC_TIMESTAMP()); "
    . "SELECT LAST_INSERT_ID()");

$ENV{TEST_NGINX_NOMSG} = 'ffffffffffffffffffffffff';

sub send_msg {
    my ($var, $who, $content) = @_;
    my ($s, $b) = api(POST => "/api/messages/$ENV{TEST_NGINX_AB}",
                      $ENV{"TEST_NGINX_${who}_TOKEN"}, { content => $content });
    die "send: $s\n" unless $s == 201;
    $ENV{"TEST_NGINX_$var"} = $b->{id};
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

=== TEST 1: no reactions yet
--- init
main::send_msg('M', 'A', 'react to me');
main::send_msg('D', 'A', 'to be deleted');
--- request
GET /api/messages/$TEST_NGINX_M/reactions
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body chomp
{"message_id":"$TEST_NGINX_M","reactions":[],"my_reactions":[]}
--- no_error_log
[error]



=== TEST 2: add one: 201, then the same again: 200
--- request eval
['POST /api/messages/$TEST_NGINX_M/reactions
{"emoji":"👍"}',
'POST /api/messages/$TEST_NGINX_M/reactions
{"emoji":"👍"}']
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code eval
[201, 200]
--- response_body eval
['{"message_id":"$TEST_NGINX_M","reactions":[{"emoji":"👍","count":1,"user_ids":[$TEST_NGINX_B]}],"my_reactions":["👍"]}',
 '{"message_id":"$TEST_NGINX_M","reactions":[{"emoji":"👍","count":1,"user_ids":[$TEST_NGINX_B]}],"my_reactions":["👍"]}']
--- no_error_log
[error]



=== TEST 3: one event for the one reaction, emoji escaped as json.dumps does
--- init
my ($key, $v) = main::event_with('message.events', "\"message_id\": \"$ENV{TEST_NGINX_M}\", \"room_id\": $ENV{TEST_NGINX_AB}, \"user_id\": $ENV{TEST_NGINX_B}, \"emoji\"");
$key eq $ENV{TEST_NGINX_AB} or die "key: $key\n";
$v =~ /^\{"timestamp": "[^"]+", "message_id": "$ENV{TEST_NGINX_M}", "room_id": $ENV{TEST_NGINX_AB}, "user_id": $ENV{TEST_NGINX_B}, "emoji": "\\ud83d\\udc4d", "__event_type__": "MessageReactionAdded"\}$/
    or die "event: $v\n";
my $n = () = ChatStack::redis_cmd('XREVRANGE', 'message.events', '+', '-', 'COUNT', '500')
    =~ /"message_id": "$ENV{TEST_NGINX_M}", "room_id": \d+, "user_id": $ENV{TEST_NGINX_B}, "emoji": "\\ud83d\\udc4d", "__event_type__": "MessageReactionAdded"/g;
$n == 1 or die "$n events\n";
--- request
POST /api/messages/$TEST_NGINX_M/reactions
{"emoji":"👍"}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 201
--- response_body chomp
{"message_id":"$TEST_NGINX_M","reactions":[{"emoji":"👍","count":2,"user_ids":[$TEST_NGINX_A,$TEST_NGINX_B]}],"my_reactions":["👍"]}



=== TEST 4: emojis in the order of first use, user ids ascending
--- request eval
['POST /api/messages/$TEST_NGINX_M/reactions
{"emoji":"❤️"}',
'GET /api/messages/$TEST_NGINX_M/reactions']
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code eval
[201, 200]
--- response_body eval
['{"message_id":"$TEST_NGINX_M","reactions":[{"emoji":"👍","count":2,"user_ids":[$TEST_NGINX_A,$TEST_NGINX_B]},{"emoji":"❤️","count":1,"user_ids":[$TEST_NGINX_B]}],"my_reactions":["👍","❤️"]}',
 '{"message_id":"$TEST_NGINX_M","reactions":[{"emoji":"👍","count":2,"user_ids":[$TEST_NGINX_A,$TEST_NGINX_B]},{"emoji":"❤️","count":1,"user_ids":[$TEST_NGINX_B]}],"my_reactions":["👍","❤️"]}']



=== TEST 5: my_reactions are the caller's
--- request
GET /api/messages/$TEST_NGINX_M/reactions
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"message_id":"$TEST_NGINX_M","reactions":[{"emoji":"👍","count":2,"user_ids":[$TEST_NGINX_A,$TEST_NGINX_B]},{"emoji":"❤️","count":1,"user_ids":[$TEST_NGINX_B]}],"my_reactions":["👍"]}



=== TEST 6: remove (the emoji URL-encoded), then it is not found
--- request eval
['DELETE /api/messages/$TEST_NGINX_M/reactions/%F0%9F%91%8D',
 'DELETE /api/messages/$TEST_NGINX_M/reactions/%F0%9F%91%8D']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[200, 404]
--- response_body eval
['{"message_id":"$TEST_NGINX_M","reactions":[{"emoji":"👍","count":1,"user_ids":[$TEST_NGINX_B]},{"emoji":"❤️","count":1,"user_ids":[$TEST_NGINX_B]}],"my_reactions":[]}',
 '{"detail":{"error":"resource_not_found","message":"Reaction not found","details":{"resource":"Reaction"},"status_code":404}}']



=== TEST 7: MessageReactionRemoved
--- init
my ($key, $v) = main::event_with('message.events', "\"user_id\": $ENV{TEST_NGINX_A}, \"emoji\": \"\\ud83d\\udc4d\", \"__event_type__\": \"MessageReactionRemoved\"");
$key eq $ENV{TEST_NGINX_AB} or die "key: $key\n";
$v =~ /^\{"timestamp": "[^"]+", "message_id": "$ENV{TEST_NGINX_M}", "room_id": $ENV{TEST_NGINX_AB}, / or die "event: $v\n";
--- request
DELETE /api/messages/$TEST_NGINX_M/reactions/%E2%9D%A4%EF%B8%8F
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body chomp
{"message_id":"$TEST_NGINX_M","reactions":[{"emoji":"👍","count":1,"user_ids":[$TEST_NGINX_B]}],"my_reactions":["👍"]}



=== TEST 8: emojis that are refused, before the message is looked at
--- request eval
['POST /api/messages/$TEST_NGINX_M/reactions
{"emoji":""}',
'POST /api/messages/$TEST_NGINX_M/reactions
{"emoji":"a b"}',
'POST /api/messages/$TEST_NGINX_M/reactions
{"emoji":5}',
'POST /api/messages/nope/reactions
{}',
'POST /api/messages/$TEST_NGINX_M/reactions
{"emoji":"' . ("x" x 33) . '"}',
'POST /api/messages/$TEST_NGINX_M/reactions
{"emoji":"\u00a0"}']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[422, 422, 422, 422, 422, 422]
--- response_body eval
['{"detail":[{"type":"string_too_short","loc":["body","emoji"],"msg":"String should have at least 1 character","input":"","ctx":{"min_length":1}}]}',
 '{"detail":[{"type":"value_error","loc":["body","emoji"],"msg":"Value error, Emoji must not contain whitespace","input":"a b"}]}',
 '{"detail":[{"type":"string_type","loc":["body","emoji"],"msg":"Input should be a valid string","input":5}]}',
 '{"detail":[{"type":"missing","loc":["body","emoji"],"msg":"Field required","input":{}}]}',
 '{"detail":[{"type":"string_too_long","loc":["body","emoji"],"msg":"String should have at most 32 characters","input":"' . ("x" x 33) . '","ctx":{"max_length":32}}]}',
 "{\"detail\":[{\"type\":\"value_error\",\"loc\":[\"body\",\"emoji\"],\"msg\":\"Value error, Emoji must not contain whitespace\",\"input\":\"\xc2\xa0\"}]}"]



=== TEST 9: 32 code points are fine
--- request eval
"POST /api/messages/\$TEST_NGINX_M/reactions\n{\"emoji\":\"" . ("\xe2\x98\x85" x 32) . "\"}"
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 201
--- response_body_like eval
'"my_reactions":\["' . ("\xe2\x98\x85" x 32) . '"\]\}$'



=== TEST 10: messages that do not exist
--- request eval
['GET /api/messages/$TEST_NGINX_NOMSG/reactions',
 'POST /api/messages/$TEST_NGINX_NOMSG/reactions
{"emoji":"x"}',
 'DELETE /api/messages/$TEST_NGINX_NOMSG/reactions/x',
 'GET /api/messages/nope/reactions',
 'DELETE /api/messages/nope/reactions/x']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[404, 404, 404, 404, 404]
--- response_body eval
['{"detail":{"error":"resource_not_found","message":"Message not found","details":{"resource":"Message"},"status_code":404}}',
 '{"detail":{"error":"resource_not_found","message":"Message not found","details":{"resource":"Message"},"status_code":404}}',
 '{"detail":{"error":"resource_not_found","message":"Message not found","details":{"resource":"Message"},"status_code":404}}',
 '{"detail":{"error":"resource_not_found","message":"Message not found","details":{"resource":"Message"},"status_code":404}}',
 '{"detail":{"error":"resource_not_found","message":"Message not found","details":{"resource":"Message"},"status_code":404}}']



=== TEST 11: someone outside the room
--- request eval
['GET /api/messages/$TEST_NGINX_M/reactions',
 'POST /api/messages/$TEST_NGINX_M/reactions
{"emoji":"x"}',
 'DELETE /api/messages/$TEST_NGINX_M/reactions/%F0%9F%91%8D']
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code eval
[403, 403, 403]
--- response_body eval
['{"detail":{"error":"authorization_error","message":"Access denied to this chat room","details":null,"status_code":403}}',
 '{"detail":{"error":"authorization_error","message":"Access denied to this chat room","details":null,"status_code":403}}',
 '{"detail":{"error":"authorization_error","message":"Access denied to this chat room","details":null,"status_code":403}}']



=== TEST 12: a deleted message: no new reactions, the rest still works
--- init
my ($s) = ChatStack::api(POST => "/api/messages/$ENV{TEST_NGINX_D}/reactions",
                         $ENV{TEST_NGINX_B_TOKEN}, { emoji => 'ok' });
$s == 201 or die "react: $s\n";
($s) = ChatStack::api(DELETE => "/api/messages/$ENV{TEST_NGINX_D}",
                      $ENV{TEST_NGINX_A_TOKEN});
$s == 200 or die "delete: $s\n";
--- request eval
['POST /api/messages/$TEST_NGINX_D/reactions
{"emoji":"x"}',
 'GET /api/messages/$TEST_NGINX_D/reactions',
 'DELETE /api/messages/$TEST_NGINX_D/reactions/ok']
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code eval
[400, 200, 200]
--- response_body eval
['{"detail":{"error":"MESSAGE_ALREADY_DELETED","message":"Cannot react to a deleted message","details":null,"status_code":400}}',
 '{"message_id":"$TEST_NGINX_D","reactions":[{"emoji":"ok","count":1,"user_ids":[$TEST_NGINX_B]}],"my_reactions":["ok"]}',
 '{"message_id":"$TEST_NGINX_D","reactions":[],"my_reactions":[]}']



=== TEST 13: membership is checked before deletion
--- request
POST /api/messages/$TEST_NGINX_D/reactions
{"emoji":"x"}
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code: 403



=== TEST 14: emojis in the path that no reaction can have
--- request eval
['DELETE /api/messages/$TEST_NGINX_M/reactions/a%20b',
 'DELETE /api/messages/$TEST_NGINX_M/reactions/' . ("x" x 33),
 'DELETE /api/messages/$TEST_NGINX_M/reactions/%FF%FE']
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code eval
[404, 404, 404]
--- response_body eval
['{"detail":{"error":"resource_not_found","message":"Reaction not found","details":{"resource":"Reaction"},"status_code":404}}',
 '{"detail":{"error":"resource_not_found","message":"Reaction not found","details":{"resource":"Reaction"},"status_code":404}}',
 '{"detail":{"error":"resource_not_found","message":"Reaction not found","details":{"resource":"Reaction"},"status_code":404}}']



=== TEST 15: a token is needed; wrong methods
--- request eval
['GET /api/messages/$TEST_NGINX_M/reactions',
 'PUT /api/messages/$TEST_NGINX_M/reactions',
 'GET /api/messages/$TEST_NGINX_M/reactions/x']
--- more_headers eval
['', 'Authorization: Bearer $TEST_NGINX_A_TOKEN', 'Authorization: Bearer $TEST_NGINX_A_TOKEN']
--- error_code eval
[401, 405, 405]
